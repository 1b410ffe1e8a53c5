//! `'connector' = 'print'` (rows to stdout, as Flink prints them: `+I[a, b]`) and
//! `'connector' = 'blackhole'` (rows discarded; for benchmarks).

use std::io::Write;

use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use runnel_runtime::{RuntimeError, Sink};
use runnel_sql::TableDef;

use crate::error::Result;
use crate::options::TableOptions;

pub const PRINT_OPTIONS: &[&str] = &["print-identifier", "standard-error"];

pub(crate) fn print_options(table: &TableDef) -> Result<TableOptions<'_>> {
    let options = TableOptions::validate(&table.name, "print", &table.options, PRINT_OPTIONS, &[])?;
    options.parse_or("standard-error", false)?;
    Ok(options)
}

/// Prints each row on its own line.
pub struct PrintSink {
    prefix: String,
    to_stderr: bool,
}

impl PrintSink {
    pub fn new(table: &TableDef) -> Result<Self> {
        let options = print_options(table)?;
        Ok(Self {
            prefix: options
                .get("print-identifier")
                .map(|id| format!("{id}> "))
                .unwrap_or_default(),
            to_stderr: options.parse_or("standard-error", false)?,
        })
    }
}

/// Formats rows as Flink prints them: `+I[v1, v2, ...]`, or with the row's change kind
/// (`-U[...]`, `+U[...]`, `-D[...]`) for an updating stream.
pub fn format_rows(
    batch: &RecordBatch,
    prefix: &str,
) -> Result<Vec<String>, datafusion::arrow::error::ArrowError> {
    Ok(row_values(batch)?
        .into_iter()
        .map(|(kind, values)| format!("{prefix}{}[{}]", kind.short_string(), values.join(", ")))
        .collect())
}

/// Each row's change kind (`Insert` for a stream that is not updating) and its values as
/// text (`NULL` for a null), in Runnel's timestamp format.
pub fn row_values(
    batch: &RecordBatch,
) -> Result<
    Vec<(runnel_sql::changelog::ChangeKind, Vec<String>)>,
    datafusion::arrow::error::ArrowError,
> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int8Type;
    use runnel_sql::changelog::{is_changelog, ChangeKind};
    let options = FormatOptions::default()
        .with_null("NULL")
        .with_timestamp_format(Some(crate::format::TIMESTAMP_FORMAT))
        .with_timestamp_tz_format(Some(crate::format::TIMESTAMP_TZ_FORMAT));
    let (columns, kinds) = match batch.columns().split_last() {
        Some((kinds, columns)) if is_changelog(batch.schema_ref()) => {
            (columns, Some(kinds.as_primitive::<Int8Type>()))
        }
        _ => (batch.columns(), None),
    };
    let formatters = columns
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((0..batch.num_rows())
        .map(|row| {
            let values: Vec<String> = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            let kind = kinds
                .and_then(|k| ChangeKind::from_code(k.value(row)))
                .unwrap_or(ChangeKind::Insert);
            (kind, values)
        })
        .collect())
}

#[async_trait]
impl Sink for PrintSink {
    async fn write_batch(&mut self, batch: RecordBatch) -> runnel_runtime::Result<()> {
        let lines =
            format_rows(&batch, &self.prefix).map_err(|e| RuntimeError::connector("print", e))?;
        let mut text = lines.join("\n");
        text.push('\n');
        let written = if self.to_stderr {
            std::io::stderr().lock().write_all(text.as_bytes())
        } else {
            std::io::stdout().lock().write_all(text.as_bytes())
        };
        written.map_err(|e| RuntimeError::connector("print", e))
    }

    async fn finish(&mut self) -> runnel_runtime::Result<()> {
        std::io::stdout()
            .flush()
            .map_err(|e| RuntimeError::connector("print", e))
    }
}

/// Discards rows.
pub struct BlackholeSink;

#[async_trait]
impl Sink for BlackholeSink {
    async fn write_batch(&mut self, _batch: RecordBatch) -> runnel_runtime::Result<()> {
        Ok(())
    }

    async fn finish(&mut self) -> runnel_runtime::Result<()> {
        Ok(())
    }

    /// Discarding costs nothing: no task of its own.
    fn chains_into_input(&self) -> bool {
        true
    }
}

/// `'connector' = 'print'`.
pub struct PrintConnector;

#[async_trait]
impl crate::Connector for PrintConnector {
    fn name(&self) -> &'static str {
        "print"
    }

    fn validate(&self, table: &TableDef) -> Result<()> {
        print_options(table).map(drop)
    }

    async fn open_sink(
        &self,
        table: &TableDef,
        _schema: datafusion::arrow::datatypes::SchemaRef,
        _config: &runnel_runtime::JobConfig,
    ) -> Result<Box<dyn Sink>> {
        Ok(Box::new(PrintSink::new(table)?))
    }
}

/// `'connector' = 'blackhole'`.
pub struct BlackholeConnector;

#[async_trait]
impl crate::Connector for BlackholeConnector {
    fn name(&self) -> &'static str {
        "blackhole"
    }

    fn validate(&self, table: &TableDef) -> Result<()> {
        TableOptions::validate(&table.name, "blackhole", &table.options, &[], &[]).map(drop)
    }

    async fn open_sink(
        &self,
        _table: &TableDef,
        _schema: datafusion::arrow::datatypes::SchemaRef,
        _config: &runnel_runtime::JobConfig,
    ) -> Result<Box<dyn Sink>> {
        Ok(Box::new(BlackholeSink))
    }
}
