//! The error type of the facade: any failure of a statement, from parsing to running.

/// A statement failed to parse, plan, start or run.
#[derive(Debug, thiserror::Error)]
pub enum RunnelError {
    #[error(transparent)]
    Sql(#[from] runnel_sql::SqlError),
    #[error(transparent)]
    Runtime(#[from] runnel_runtime::RuntimeError),
    /// A connector refused a call (e.g. a batch pushed into a memory table that does not fit).
    #[error(transparent)]
    Connector(#[from] runnel_connectors::ConnectorError),
    /// A job spread over processes could not start.
    #[error(transparent)]
    Cluster(#[from] runnel_cluster::ClusterError),
    /// A query's result stream reported a failure.
    #[error(transparent)]
    Query(#[from] datafusion::error::DataFusionError),
    /// The library was called in a way that cannot work (e.g. a memory table that is not one).
    #[error("{0}")]
    Usage(String),
    #[error("SET '{key}' = '{value}': {reason}")]
    Setting {
        key: String,
        value: String,
        reason: String,
    },
}

/// Result type of the facade.
pub type Result<T, E = RunnelError> = std::result::Result<T, E>;

/// An error's message and those of its causes, each once: a cause whose text the messages
/// before it already hold is left out.
pub fn error_chain(error: &dyn std::error::Error) -> Vec<String> {
    let mut messages = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !messages.iter().any(|m| m.contains(&text)) {
            messages.push(text);
        }
        source = cause.source();
    }
    messages
}
