//! `GET /metrics`: Prometheus' text format over the server's HTTP stack, for `runnel
//! serve` (every job it holds) and `runnel run --metrics-addr` (one engine's jobs).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;
use runnel::prometheus::Series;
use runnel::Engine;
use tokio::task::JoinHandle;

/// Lists the series to serve at each scrape.
pub type SeriesSource = Arc<dyn Fn() -> Vec<Series> + Send + Sync>;

/// The `/metrics` route.
pub fn routes<S>(source: SeriesSource) -> Router<S> {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(source)
}

async fn scrape(
    State(source): State<SeriesSource>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        runnel::prometheus::render_series(&source()),
    )
}

/// Serves `engine`'s jobs' metrics at `GET /metrics` on `addr` until the returned task is
/// aborted; returns the address bound (useful with port 0).
pub async fn serve_metrics(
    engine: Arc<Engine>,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let source: SeriesSource = Arc::new(move || engine.jobs().iter().map(Series::from).collect());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app: Router = routes(source);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics endpoint stopped");
        }
    });
    Ok((bound, task))
}
