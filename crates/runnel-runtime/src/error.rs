//! The error type of the runtime: failures while a job runs.

use datafusion::error::DataFusionError;

/// A boxed error from a connector or another crate plugged into the runtime.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a job failed or could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Evaluating an expression or aggregate failed.
    #[error("in operator {operator}: {source}")]
    Operator {
        operator: String,
        #[source]
        source: DataFusionError,
    },
    /// Turning the plan into operators failed (for example, an unsupported aggregate).
    #[error("cannot build the job: {0}")]
    Build(String),
    /// A source or sink failed; the connector's error says where (topic, partition, offset, file).
    #[error("{context}: {source}")]
    Connector {
        context: String,
        #[source]
        source: BoxError,
    },
    /// The SQL layer refused the plan.
    #[error(transparent)]
    Sql(#[from] runnel_sql::SqlError),
    /// A DataFusion error outside any operator.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    /// Storing or restoring a checkpoint failed.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A job task ended without saying why (it panicked or was cancelled).
    #[error("job task failed: {0}")]
    Task(String),
}

impl RuntimeError {
    /// Wraps a connector's error with the place it happened (`source claims`, `sink out`).
    pub fn connector(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        RuntimeError::Connector {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// Result type of the runtime.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
