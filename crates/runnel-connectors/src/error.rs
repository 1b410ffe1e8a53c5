//! The error type of the connectors: what failed, on which table, topic, partition, offset or file.

use runnel_runtime::RuntimeError;

/// A connector failure. Every variant says where, so the user can find the record or option.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("table {table}: unknown connector '{connector}' (valid: {valid})")]
    UnknownConnector {
        table: String,
        connector: String,
        valid: String,
    },
    #[error("table {table}: option '{option}' is required by connector '{connector}'")]
    MissingOption {
        table: String,
        connector: String,
        option: String,
    },
    #[error(
        "table {table}: unknown option '{option}' for connector '{connector}' (valid: {valid})"
    )]
    UnknownOption {
        table: String,
        connector: String,
        option: String,
        valid: String,
    },
    #[error("table {table}: option '{option}' = '{value}' is invalid: {reason}")]
    InvalidOption {
        table: String,
        option: String,
        value: String,
        reason: String,
    },
    /// A record that does not decode into the table's columns.
    #[error("cannot decode record at {place}: {reason}")]
    Decode { place: String, reason: String },
    #[error("kafka {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding rows for {table}: {source}")]
    Encode {
        table: String,
        #[source]
        source: datafusion::arrow::error::ArrowError,
    },
    #[error("{0}")]
    Other(String),
}

impl ConnectorError {
    /// As a runtime error of the table's source or sink (`role` is `source` or `sink`).
    pub fn at(self, role: &str, table: &str) -> RuntimeError {
        self.in_context(format!("{role} {table}"))
    }

    /// As a runtime error that happened in `context`: a record that cannot be decoded or
    /// encoded is a [`RuntimeError::BadRecord`] (a restart would meet it again), anything
    /// else a connector failure.
    pub fn in_context(self, context: String) -> RuntimeError {
        match self {
            ConnectorError::Decode { .. } | ConnectorError::Encode { .. } => {
                RuntimeError::BadRecord {
                    context,
                    source: Box::new(self),
                }
            }
            other => RuntimeError::connector(context, other),
        }
    }
}

/// Result type of the connectors.
pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;
