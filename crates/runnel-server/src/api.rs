//! The REST API under `/v1` (documented in `openapi.yaml`): submit, list, show, stop and
//! start jobs; validate, explain and preview SQL. Bodies and answers are JSON; errors
//! answer as [`ServerError`] says.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use runnel::{Engine, Executed, JobInfo};
use serde::{Deserialize, Serialize};

use crate::error::{Result, ServerError};
use crate::jobs::{ManagedJob, Phase, ServerJobs, Submission};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub jobs: Arc<ServerJobs>,
}

/// The `/v1` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", get(list_jobs).post(submit_job))
        .route("/v1/jobs/{id}", get(show_job))
        .route("/v1/jobs/{id}/stop", post(stop_job))
        .route("/v1/jobs/{id}/start", post(start_job))
        .route("/v1/validate", post(validate))
        .route("/v1/explain", post(explain))
        .route("/v1/preview", post(preview))
        .route("/v1/openapi.yaml", get(openapi))
}

async fn openapi() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    (
        [(axum::http::header::CONTENT_TYPE, "application/yaml")],
        include_str!("../openapi.yaml"),
    )
}

/// A job's counters, summed over its statements.
#[derive(Debug, Default, Serialize)]
pub struct Counters {
    rows_in: u64,
    rows_out: u64,
    late_rows: u64,
    bad_records: u64,
    checkpoints: u64,
    state_bytes: u64,
    /// The least watermark of its statements, in ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    watermark_ms: Option<i64>,
    /// How far that watermark is behind the wall clock.
    #[serde(skip_serializing_if = "Option::is_none")]
    watermark_lag_ms: Option<i64>,
    /// The checkpoint the run resumed from.
    #[serde(skip_serializing_if = "Option::is_none")]
    restored_checkpoint: Option<u64>,
}

impl Counters {
    fn add(&mut self, metrics: &runnel::MetricsSnapshot) {
        self.rows_in += metrics.rows_in;
        self.rows_out += metrics.rows_out;
        self.late_rows += metrics.late_rows;
        self.bad_records += metrics.bad_records;
        self.checkpoints += metrics.checkpoints;
        self.state_bytes += metrics.state_bytes;
        let watermark = metrics.watermark.filter(|w| *w < i64::MAX);
        self.watermark_ms = match (self.watermark_ms, watermark) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.watermark_lag_ms = self.watermark_lag_ms.max(metrics.watermark_lag_ms);
        self.restored_checkpoint = self.restored_checkpoint.max(metrics.restored_checkpoint);
    }
}

/// A job as the jobs list shows it.
#[derive(Debug, Serialize)]
pub struct JobSummary {
    id: u64,
    name: String,
    status: Phase,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    submitted_at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at_ms: Option<i64>,
    restarts: u64,
    #[serde(flatten)]
    counters: Counters,
}

impl JobSummary {
    fn of(job: &ManagedJob) -> Self {
        let record = job.record();
        let mut counters = Counters::default();
        for statement in job.statements() {
            counters.add(&statement.metrics.snapshot());
        }
        Self {
            id: record.id,
            name: record.name,
            status: job.phase(),
            error: record.error,
            submitted_at_ms: record.submitted_at_ms,
            started_at_ms: job.started_at_ms(),
            restarts: job.restarts(),
            counters,
        }
    }
}

/// One stage of a statement's job graph with its counters.
#[derive(Debug, Serialize)]
struct StageView {
    id: usize,
    operators: Vec<String>,
    parallelism: usize,
    inputs: Vec<InputView>,
    rows_in: u64,
    rows_out: u64,
    /// Time its subtasks waited for room downstream, summed.
    backpressured_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    watermark_ms: Option<i64>,
    state_bytes: u64,
    /// The longest pause of a subtask at the last checkpoint, handing over its state.
    checkpoint_stall_ms: f64,
    /// Bytes its operators wrote into the last checkpoint.
    checkpoint_bytes: u64,
}

#[derive(Debug, Serialize)]
struct InputView {
    from: usize,
    #[serde(skip_serializing_if = "str::is_empty")]
    side: &'static str,
    how: String,
}

#[derive(Debug, Serialize)]
struct CheckpointView {
    id: u64,
    bytes: u64,
    duration_ms: u64,
    committed_at_ms: i64,
}

/// One `INSERT INTO` of a job.
#[derive(Debug, Serialize)]
struct StatementView {
    statement: String,
    #[serde(flatten)]
    counters: Counters,
    /// Processes of a job spread over several: the tasks this one owns.
    #[serde(skip_serializing_if = "Option::is_none")]
    tasks_owned: Option<u64>,
    stages: Vec<StageView>,
    checkpoint_history: Vec<CheckpointView>,
}

impl StatementView {
    fn of(info: &JobInfo) -> Self {
        let snapshot = info.metrics.snapshot();
        let mut counters = Counters::default();
        counters.add(&snapshot);
        let stages = info
            .metrics
            .stages()
            .into_iter()
            .map(|stage| StageView {
                id: stage.description.id,
                operators: stage.description.operators,
                parallelism: stage.description.parallelism,
                inputs: stage
                    .description
                    .inputs
                    .into_iter()
                    .map(|input| InputView {
                        from: input.from,
                        side: input.side,
                        how: input.how,
                    })
                    .collect(),
                rows_in: stage.rows_in,
                rows_out: stage.rows_out,
                backpressured_ms: stage.backpressured_ms,
                watermark_ms: stage.watermark,
                state_bytes: stage.state_bytes,
                checkpoint_stall_ms: stage.checkpoint_stall_ms,
                checkpoint_bytes: stage.checkpoint_bytes,
            })
            .collect();
        let checkpoint_history = info
            .metrics
            .checkpoint_history()
            .into_iter()
            .map(|c| CheckpointView {
                id: c.id,
                bytes: c.bytes,
                duration_ms: c.duration_ms,
                committed_at_ms: c.committed_at_ms,
            })
            .collect();
        Self {
            statement: info.statement.clone(),
            counters,
            tasks_owned: snapshot.tasks_owned,
            stages,
            checkpoint_history,
        }
    }
}

/// One job in full.
#[derive(Debug, Serialize)]
struct JobDetail {
    #[serde(flatten)]
    summary: JobSummary,
    sql: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<String>,
    statements: Vec<StatementView>,
}

async fn list_jobs(State(state): State<AppState>) -> Json<Vec<JobSummary>> {
    Json(
        state
            .jobs
            .all()
            .iter()
            .map(|job| JobSummary::of(job))
            .collect(),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    name: Option<String>,
    sql: Option<String>,
    job_file: Option<String>,
}

/// Runs `work` off the runtime's threads: planning asks connectors about their tables
/// (a Kafka topic's partitions), which may wait on the network.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ServerError::Config(format!("planning failed: {e}")))?
}

/// Bodies that do not parse answer in the API's JSON error form.
fn body<T>(
    body: std::result::Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T> {
    body.map(|Json(body)| body)
        .map_err(|e| ServerError::BadRequest(e.body_text()))
}

async fn submit_job(
    State(state): State<AppState>,
    request: std::result::Result<Json<SubmitBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<JobSummary>)> {
    let request = body(request)?;
    let jobs = state.jobs.clone();
    let job = blocking(move || {
        jobs.submit(Submission {
            name: request.name,
            sql: request.sql,
            job_file: request.job_file,
        })
    })
    .await?;
    Ok((StatusCode::CREATED, Json(JobSummary::of(&job))))
}

async fn show_job(State(state): State<AppState>, Path(id): Path<u64>) -> Result<Json<JobDetail>> {
    let job = state.jobs.get(id)?;
    Ok(Json(JobDetail {
        summary: JobSummary::of(&job),
        sql: job.record().sql,
        plan: job.plan(),
        statements: job.statements().iter().map(StatementView::of).collect(),
    }))
}

#[derive(Debug, Deserialize)]
struct StopQuery {
    /// Take a final checkpoint first (default true).
    checkpoint: Option<bool>,
}

async fn stop_job(
    State(state): State<AppState>,
    Path(id): Path<u64>,
    Query(query): Query<StopQuery>,
) -> Result<Json<JobSummary>> {
    let job = state
        .jobs
        .stop(id, query.checkpoint.unwrap_or(true))
        .await?;
    Ok(Json(JobSummary::of(&job)))
}

async fn start_job(State(state): State<AppState>, Path(id): Path<u64>) -> Result<Json<JobSummary>> {
    let job = state.jobs.start(id)?;
    Ok(Json(JobSummary::of(&job)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlBody {
    sql: String,
}

#[derive(Debug, Serialize)]
struct ValidationView {
    errors: Vec<crate::error::LocatedError>,
    warnings: Vec<String>,
}

/// Checks a script without running it: every error with its place (200 either way; the
/// editor shows them as you type).
async fn validate(
    request: std::result::Result<Json<SqlBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<ValidationView>> {
    let request = body(request)?;
    let checked = blocking(move || Ok(Engine::default().validate(&request.sql))).await?;
    Ok(Json(ValidationView {
        errors: checked.errors.iter().map(Into::into).collect(),
        warnings: checked.warnings,
    }))
}

#[derive(Debug, Serialize)]
struct PlanView {
    plan: String,
}

async fn explain(
    request: std::result::Result<Json<SqlBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<PlanView>> {
    let request = body(request)?;
    // Each step declares the script's tables, so each gets an engine of its own.
    let plan = blocking(move || {
        let checked = Engine::default().validate(&request.sql);
        if !checked.errors.is_empty() {
            return Err(ServerError::Invalid(checked.errors));
        }
        Ok(Engine::default().explain(&request.sql)?)
    })
    .await?;
    Ok(Json(PlanView { plan }))
}

/// Rows a preview returns at most, and how long it runs at most.
const PREVIEW_MAX_ROWS: usize = 10_000;
const PREVIEW_MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// A followed preview sends a heartbeat this often, so a client that went away is noticed
/// (and its query stopped) even while the query has nothing to say.
const HEARTBEAT: Duration = Duration::from_secs(1);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewBody {
    /// Declarations, then one `SELECT`.
    sql: String,
    /// Rows to return at most (default 100).
    limit: Option<usize>,
    /// How long to wait for rows, in ms (default 5000).
    timeout_ms: Option<u64>,
    /// Stream the rows as they come (NDJSON) until the query ends or the client leaves.
    #[serde(default)]
    follow: bool,
}

#[derive(Debug, Serialize)]
struct PreviewRow {
    /// `+I`, `-U`, `+U` or `-D`.
    op: &'static str,
    values: Vec<String>,
}

#[derive(Debug, Serialize)]
struct PreviewView {
    columns: Vec<String>,
    rows: Vec<PreviewRow>,
    /// The query's sources ended: these are all its rows.
    ended: bool,
}

fn preview_rows(batch: &runnel::arrow::record_batch::RecordBatch) -> Result<Vec<PreviewRow>> {
    let values = runnel::connectors::print::row_values(batch)
        .map_err(|e| ServerError::BadRequest(e.to_string()))?;
    Ok(values
        .into_iter()
        .map(|(kind, values)| PreviewRow {
            op: kind.short_string(),
            values,
        })
        .collect())
}

/// Starts the `SELECT` at the end of a preview's script; its stream and column names.
async fn start_preview(sql: &str) -> Result<(runnel::QueryStream, Vec<String>)> {
    let script = sql.to_string();
    let checked = blocking(move || Ok(Engine::default().validate(&script))).await?;
    if !checked.errors.is_empty() {
        return Err(ServerError::Invalid(checked.errors));
    }
    let statements =
        runnel::sql::parse_script(sql).map_err(|e| ServerError::BadRequest(e.to_string()))?;
    if statements
        .iter()
        .any(|s| matches!(s, runnel::sql::Statement::Insert { .. }))
        || !matches!(statements.last(), Some(runnel::sql::Statement::Query(_)))
    {
        return Err(ServerError::BadRequest(
            "a preview runs declarations and then one SELECT; submit INSERT INTO jobs with POST /v1/jobs"
                .into(),
        ));
    }
    let engine = Engine::default();
    let mut stream = None;
    for result in engine.execute(sql).await? {
        if let Executed::Query(query) = result {
            stream = Some(query);
        }
    }
    let Some(stream) = stream else {
        return Err(ServerError::BadRequest("the script has no SELECT".into()));
    };
    let schema = stream.schema();
    let changes = usize::from(runnel::sql::changelog::is_changelog(&schema));
    let columns = schema
        .fields()
        .iter()
        .take(schema.fields().len() - changes)
        .map(|f| f.name().clone())
        .collect();
    Ok((stream, columns))
}

/// Runs a preview of a `SELECT`: its first rows (changes, for an updating query) until
/// the limit, the timeout or the end of its input; or, with `follow`, every row as it
/// comes, one JSON line per batch (see [`follow`]).
async fn preview(
    request: std::result::Result<Json<PreviewBody>, axum::extract::rejection::JsonRejection>,
) -> Result<axum::response::Response> {
    use axum::response::IntoResponse;
    let request = body(request)?;
    let (mut stream, columns) = start_preview(&request.sql).await?;
    if request.follow {
        return Ok(follow(stream, columns));
    }
    let limit = request.limit.unwrap_or(100).min(PREVIEW_MAX_ROWS);
    let timeout =
        Duration::from_millis(request.timeout_ms.unwrap_or(5000)).min(PREVIEW_MAX_TIMEOUT);
    let mut rows = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut ended = false;
    while rows.len() < limit {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => break,
            Ok(None) => {
                ended = true;
                break;
            }
            Ok(Some(batch)) => {
                let batch = batch.map_err(runnel::RunnelError::from)?;
                rows.extend(preview_rows(&batch)?);
            }
        }
    }
    rows.truncate(limit);
    if ended {
        stream.finish().await?;
    }
    Ok(Json(PreviewView {
        columns,
        rows,
        ended,
    })
    .into_response())
}

/// A followed preview as NDJSON: `{"columns": [...], "changes": bool}` first, then `{"rows": [...]}` per
/// batch, `{"heartbeat": true}` every second, and last `{"end": true}` or
/// `{"error": "..."}`. The query stops when the client goes away.
fn follow(stream: runnel::QueryStream, columns: Vec<String>) -> axum::response::Response {
    use axum::response::IntoResponse;
    struct Following {
        stream: runnel::QueryStream,
        heartbeat: tokio::time::Interval,
        header: Option<serde_json::Value>,
        done: bool,
    }
    let state = Following {
        heartbeat: tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT),
        header: Some(serde_json::json!({
            "columns": columns,
            "changes": runnel::sql::changelog::is_changelog(&stream.schema()),
        })),
        done: false,
        stream,
    };
    let lines = futures::stream::unfold(state, |mut state| async move {
        let line = if let Some(header) = state.header.take() {
            header
        } else if state.done {
            return None;
        } else {
            tokio::select! {
                batch = state.stream.next() => match batch {
                    Some(Ok(batch)) => match preview_rows(&batch) {
                        Ok(rows) => serde_json::json!({ "rows": rows }),
                        Err(e) => {
                            state.done = true;
                            serde_json::json!({ "error": e.to_string() })
                        }
                    },
                    Some(Err(e)) => {
                        state.done = true;
                        serde_json::json!({ "error": e.to_string() })
                    }
                    None => {
                        state.done = true;
                        serde_json::json!({ "end": true })
                    }
                },
                _ = state.heartbeat.tick() => serde_json::json!({ "heartbeat": true }),
            }
        };
        Some((
            Ok::<_, std::convert::Infallible>(format!("{line}\n")),
            state,
        ))
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(lines),
    )
        .into_response()
}
