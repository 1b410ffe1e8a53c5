//! The web dashboard: one page and its script and style, built into the binary (no
//! Node toolchain); the page reads everything it shows from the REST API.

use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderName;
use axum::routing::get;
use axum::Router;

type Asset = ([(HeaderName, &'static str); 1], &'static str);

fn asset(content_type: &'static str, body: &'static str) -> Asset {
    ([(CONTENT_TYPE, content_type)], body)
}

/// `/` and `/assets/...`.
pub fn routes() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async {
                asset(
                    "text/html; charset=utf-8",
                    include_str!("../assets/index.html"),
                )
            }),
        )
        .route(
            "/assets/app.js",
            get(|| async {
                asset(
                    "text/javascript; charset=utf-8",
                    include_str!("../assets/app.js"),
                )
            }),
        )
        .route(
            "/assets/style.css",
            get(|| async {
                asset(
                    "text/css; charset=utf-8",
                    include_str!("../assets/style.css"),
                )
            }),
        )
}
