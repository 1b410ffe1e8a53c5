//! The server's error type, and how each error answers over HTTP: a status and a JSON
//! body `{"error": "...", "errors": [{"message", "line", "column", "statement"}]}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// What a request or the server itself could not do.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The submitted SQL or job file does not plan; each error has its place.
    #[error("the job does not plan: {}", list(.0))]
    Invalid(Vec<runnel::ScriptError>),
    /// The request itself is wrong (a missing field, a job file that does not parse).
    #[error("{0}")]
    BadRequest(String),
    #[error("no job {0}")]
    NoSuchJob(u64),
    /// The job is not in a state the request needs (e.g. starting a running job).
    #[error("job {id}: {reason}")]
    Conflict { id: u64, reason: String },
    #[error("a bearer token is required (Authorization: Bearer ...)")]
    Unauthorized,
    /// A statement failed to start or run.
    #[error(transparent)]
    Runnel(#[from] runnel::RunnelError),
    /// The server's own files (its state directory).
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// A stored job that cannot be read back.
    #[error("{path}: {reason}")]
    Store {
        path: std::path::PathBuf,
        reason: String,
    },
    /// The server refuses to start as configured.
    #[error("{0}")]
    Config(String),
}

fn list(errors: &[runnel::ScriptError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

pub type Result<T, E = ServerError> = std::result::Result<T, E>;

/// One error with its place in the submitted text.
#[derive(Debug, Serialize)]
pub(crate) struct LocatedError {
    message: String,
    /// From 1; absent when the error has no place (a setting).
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    column: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    statement: Option<usize>,
}

impl From<&runnel::ScriptError> for LocatedError {
    fn from(error: &runnel::ScriptError) -> Self {
        Self {
            message: error.message.clone(),
            line: Some(error.line).filter(|l| *l > 0),
            column: error.column,
            statement: error.statement,
        }
    }
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    error: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<LocatedError>,
}

impl ServerError {
    fn status(&self) -> StatusCode {
        match self {
            ServerError::Invalid(_) | ServerError::BadRequest(_) | ServerError::Runnel(_) => {
                StatusCode::BAD_REQUEST
            }
            ServerError::NoSuchJob(_) => StatusCode::NOT_FOUND,
            ServerError::Conflict { .. } => StatusCode::CONFLICT,
            ServerError::Unauthorized => StatusCode::UNAUTHORIZED,
            ServerError::Io { .. } | ServerError::Store { .. } | ServerError::Config(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let errors = match &self {
            ServerError::Invalid(errors) => errors.iter().map(LocatedError::from).collect(),
            _ => Vec::new(),
        };
        let body = ErrorBody {
            error: self.to_string(),
            errors,
        };
        (self.status(), axum::Json(body)).into_response()
    }
}
