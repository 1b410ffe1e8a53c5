//! The error type of the SQL layer: what went wrong while parsing or planning, and where.

use datafusion::error::DataFusionError;

/// A failure to parse, register or plan a statement. Every variant names the place
/// (SQL position, table, option) so the user can fix it.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The text is not valid SQL; `line` and `column` are 1-based.
    #[error("SQL syntax error at line {line}, column {column}: {message}")]
    Syntax {
        message: String,
        line: u64,
        column: u64,
    },
    /// A table or view that the catalog does not know.
    #[error("unknown table '{name}'{}", known_list(known))]
    UnknownTable { name: String, known: Vec<String> },
    /// A table or view is declared twice.
    #[error("table '{0}' already exists")]
    DuplicateTable(String),
    /// A `CREATE TABLE` that is well-formed SQL but not a valid table.
    #[error("in CREATE TABLE {table}: {message}")]
    InvalidTable { table: String, message: String },
    /// A query the streaming planner cannot run, with the reason.
    #[error("cannot run this query as a stream: {0}")]
    Unsupported(String),
    /// A query that does not plan (unknown column, type mismatch, ...).
    #[error("{0}")]
    Plan(String),
    /// An error from DataFusion while planning.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        " (no tables are declared yet)".to_string()
    } else {
        format!(" (known: {})", known.join(", "))
    }
}

impl SqlError {
    /// Wraps a sqlparser error, lifting the `Line: x, Column: y` that sqlparser appends
    /// to its messages into fields.
    pub(crate) fn from_parser(err: datafusion::sql::sqlparser::parser::ParserError) -> Self {
        use datafusion::sql::sqlparser::parser::ParserError;
        let text = match err {
            ParserError::ParserError(s) | ParserError::TokenizerError(s) => s,
            ParserError::RecursionLimitExceeded => "statement nests too deeply".to_string(),
        };
        match text.rfind(" at Line: ") {
            Some(at) => {
                let (message, place) = text.split_at(at);
                let mut numbers = place
                    .split(|c: char| !c.is_ascii_digit())
                    .filter(|s| !s.is_empty())
                    .filter_map(|s| s.parse::<u64>().ok());
                let line = numbers.next().unwrap_or(0);
                let column = numbers.next().unwrap_or(0);
                SqlError::Syntax {
                    message: message.to_string(),
                    line,
                    column,
                }
            }
            None => SqlError::Syntax {
                message: text,
                line: 0,
                column: 0,
            },
        }
    }
}

/// Result type of the SQL layer.
pub type Result<T, E = SqlError> = std::result::Result<T, E>;
