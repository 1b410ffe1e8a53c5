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
    /// A record the job cannot take: it does not decode into its table's columns, or its
    /// row cannot be encoded for the sink. Replaying it fails the same way, so a job is
    /// not restarted for it.
    #[error("{context}: {source}")]
    BadRecord {
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
    /// The job's state outgrew its memory limit (`runnel.memory.limit`).
    #[error("{0}")]
    MemoryLimit(String),
    /// The caller reading a query's rows went away, so the query ends.
    #[error("the query's reader went away")]
    QueryClosed,
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

impl RuntimeError {
    /// Whether a restart may get past this failure: a broker, database or disk that failed
    /// for a while, a commit that timed out, a task that died. Errors a replay meets again
    /// (a bad record, an expression that cannot be evaluated, a plan that cannot run) are
    /// not.
    pub fn is_recoverable(&self) -> bool {
        match self {
            RuntimeError::Connector { .. }
            | RuntimeError::Checkpoint(_)
            | RuntimeError::Task(_) => true,
            RuntimeError::Operator { .. }
            | RuntimeError::Build(_)
            | RuntimeError::BadRecord { .. }
            | RuntimeError::Sql(_)
            | RuntimeError::DataFusion(_)
            | RuntimeError::MemoryLimit(_)
            | RuntimeError::QueryClosed => false,
        }
    }
}

/// Result type of the runtime.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
