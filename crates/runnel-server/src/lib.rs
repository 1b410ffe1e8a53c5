//! `runnel serve`: one long-running process that holds many jobs, with a REST API
//! ([`api`], documented in `openapi.yaml`), a web dashboard ([`dashboard`]) and Prometheus
//! metrics ([`metrics`]), all on one HTTP stack (axum). Jobs and their checkpoints live in
//! a state directory ([`store`]), so they resume when the server starts again.
//!
//! Without a bearer token the server listens on loopback only; with one, every route but
//! the dashboard's static files asks for it.

pub mod api;
pub mod dashboard;
mod error;
pub mod jobs;
pub mod metrics;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use error::{Result, ServerError};
pub use metrics::serve_metrics;

/// How a server is started.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    /// The bearer token every API call must carry; `None` allows loopback addresses only.
    pub token: Option<String>,
    /// Where submitted jobs and their checkpoints are kept.
    pub state_dir: PathBuf,
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    jobs: Arc<jobs::ServerJobs>,
    stop_http: oneshot::Sender<()>,
    http: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Binds `config.addr`, resumes the stored jobs that were running, and serves.
    pub async fn start(config: ServerConfig) -> Result<Self> {
        if config.token.is_none() && !config.addr.ip().is_loopback() {
            return Err(ServerError::Config(format!(
                "{} is not a loopback address: without a token (--token or RUNNEL_TOKEN) the \
                 server listens on loopback only",
                config.addr
            )));
        }
        let store = store::JobStore::open(&config.state_dir)?;
        let jobs = jobs::ServerJobs::restore(store)?;
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|e| ServerError::Config(format!("cannot listen on {}: {e}", config.addr)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| ServerError::Config(format!("cannot listen on {}: {e}", config.addr)))?;
        let app = router(jobs.clone(), config.token.map(Arc::from));
        let (stop_http, stopped) = oneshot::channel::<()>();
        let http = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self {
            addr,
            jobs,
            stop_http,
            http,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the HTTP server fails (it does not end by itself).
    pub async fn wait(&mut self) -> Result<()> {
        match (&mut self.http).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ServerError::Config(format!("the HTTP server failed: {e}"))),
            Err(e) => Err(ServerError::Config(format!("the HTTP server failed: {e}"))),
        }
    }

    /// Stops answering, then stops every running job after a final checkpoint; they
    /// resume when the server starts again on the same state directory.
    pub async fn shutdown(self) {
        let _ = self.stop_http.send(());
        let _ = self.http.await;
        self.jobs.shutdown().await;
    }
}

/// Every route: the dashboard's files (open), the API and `/metrics` (behind the token).
fn router(jobs: Arc<jobs::ServerJobs>, token: Option<Arc<str>>) -> Router {
    let series_jobs = jobs.clone();
    let series: metrics::SeriesSource = Arc::new(move || {
        series_jobs
            .all()
            .iter()
            .flat_map(|job| {
                let id = job.id();
                let statements = job.statements();
                let several = statements.len() > 1;
                statements.into_iter().map(move |info| {
                    let job = if several {
                        format!("{id}.{}", info.id)
                    } else {
                        id.to_string()
                    };
                    runnel::prometheus::Series::of(job, info.statement.clone(), &info.metrics)
                })
            })
            .collect()
    });
    let guarded = api::routes()
        .with_state(api::AppState { jobs })
        .merge(metrics::routes(series))
        .layer(axum::middleware::from_fn_with_state(token, require_token));
    dashboard::routes().merge(guarded)
}

/// Lets a request through when the server has no token or the request carries it.
async fn require_token(
    State(token): State<Option<Arc<str>>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = token {
        let given = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        if given != Some(&*token) {
            return ServerError::Unauthorized.into_response();
        }
    }
    next.run(request).await
}
