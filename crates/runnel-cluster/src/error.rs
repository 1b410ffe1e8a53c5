//! The error type of a job spread over processes.

use runnel_connectors::ConnectorError;
use runnel_runtime::RuntimeError;

/// Why a member of a job spread over processes could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The job has a part that cannot run across processes (yet); says which and why.
    #[error("cannot run this job across processes: {0}")]
    Unsupported(String),
    /// A setting of the job is missing or wrong (its name, its maximum parallelism).
    #[error("{0}")]
    Setting(String),
    /// Talking to Kafka failed: `context` says what was being done (which topic, which
    /// partition, which transaction).
    #[error("{context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A record of an internal topic could not be read back (another job's topic, or a
    /// newer Runnel's records).
    #[error("{topic} partition {partition} offset {offset}: {message}")]
    Record {
        topic: String,
        partition: i32,
        offset: i64,
        message: String,
    },
    /// Encoding or decoding rows as Arrow IPC failed.
    #[error("{context}: {source}")]
    Arrow {
        context: String,
        #[source]
        source: datafusion::arrow::error::ArrowError,
    },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Connector(#[from] ConnectorError),
}

impl ClusterError {
    /// A Kafka error while doing `context`.
    pub fn kafka(context: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        let context = context.into();
        move |source| ClusterError::Kafka { context, source }
    }
}

impl From<ClusterError> for RuntimeError {
    fn from(error: ClusterError) -> Self {
        match error {
            ClusterError::Runtime(e) => e,
            other => RuntimeError::connector("scale-out", other),
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = ClusterError> = std::result::Result<T, E>;
