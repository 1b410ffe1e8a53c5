//! Runnel's connectors: where streams come from and go to.
//!
//! The entry point is [`Connectors`], the [`ConnectorFactory`] the engine hands the
//! runtime. Each connector lives in its own module and takes Flink's option names:
//! `kafka` (source and sink), `filesystem` (bounded source and sink), `nexmark` (the
//! benchmark's generator), `datagen` (random or sequential rows at a steady rate), `memory` (batches pushed by an embedding service), `script` (replays rows, watermarks and clock ticks for tests), `print` and `blackhole` (sinks). Record formats (`json`, `csv`) live in [`format`].

pub mod datagen;
pub mod error;
pub mod filesystem;
pub mod format;
pub mod kafka;
pub mod memory;
pub mod nexmark;
pub mod options;
pub mod partitioned_files;
pub mod print;
mod random;
pub mod script;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use runnel_runtime::{ConnectorFactory, JobConfig, JobMetrics, Sink, Source, SourceSplit};
use runnel_sql::TableDef;

pub use error::ConnectorError;

/// Names of the built-in connectors.
pub const CONNECTORS: &[&str] = &[
    "kafka",
    "filesystem",
    "nexmark",
    "datagen",
    "memory",
    "script",
    "print",
    "blackhole",
];

/// The built-in connectors.
#[derive(Debug, Default, Clone)]
pub struct Connectors {
    /// The engine's memory tables (`'connector' = 'memory'`).
    pub memory: memory::MemoryTables,
}

fn connector_of(table: &TableDef) -> Result<&str, ConnectorError> {
    let connector = table
        .connector()
        .ok_or_else(|| ConnectorError::MissingOption {
            table: table.name.clone(),
            connector: "?".into(),
            option: "connector".into(),
        })?;
    if CONNECTORS.contains(&connector) {
        Ok(connector)
    } else {
        Err(ConnectorError::UnknownConnector {
            table: table.name.clone(),
            connector: connector.into(),
            valid: CONNECTORS.join(", "),
        })
    }
}

/// A table of plain columns with `options` (for connector unit tests).
#[cfg(test)]
pub(crate) fn test_table(
    name: &str,
    columns: Vec<datafusion::arrow::datatypes::Field>,
    options: &[(&str, &str)],
) -> TableDef {
    let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(columns));
    TableDef {
        name: name.into(),
        physical_schema: schema.clone(),
        schema,
        row_exprs: vec![],
        watermark: None,
        primary_key: vec![],
        partition_keys: vec![],
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// Wraps a connector error with the table it concerns.
fn at_table(
    table: &TableDef,
    role: &str,
) -> impl Fn(ConnectorError) -> runnel_runtime::RuntimeError {
    let context = format!("{role} {}", table.name);
    move |e| runnel_runtime::RuntimeError::connector(context.clone(), e)
}

#[async_trait]
impl ConnectorFactory for Connectors {
    fn validate(&self, table: &TableDef) -> runnel_runtime::Result<()> {
        let check = || -> Result<(), ConnectorError> {
            match connector_of(table)? {
                "kafka" => kafka::options(table).map(drop),
                "filesystem" => filesystem::options(table).map(drop),
                "nexmark" => nexmark::options(table).map(drop),
                "datagen" => datagen::options(table).map(drop),
                "memory" => {
                    options::TableOptions::validate(&table.name, "memory", &table.options, &[], &[])
                        .map(drop)
                }
                "script" => script::options(table).map(drop),
                "print" => print::print_options(table).map(drop),
                _ => options::TableOptions::validate(
                    &table.name,
                    "blackhole",
                    &table.options,
                    &[],
                    &[],
                )
                .map(drop),
            }
        };
        check().map_err(|e| runnel_runtime::RuntimeError::connector("CREATE TABLE", e))
    }

    fn is_bounded(&self, table: &TableDef) -> bool {
        match connector_of(table) {
            Ok("filesystem" | "script") => true,
            Ok("kafka") => table.options.contains_key("scan.bounded.mode"),
            Ok("datagen") => datagen::is_bounded(table),
            Ok("nexmark") => table
                .options
                .get("events.num")
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n > 0),
            _ => false,
        }
    }

    async fn create_source(
        &self,
        table: &TableDef,
        metrics: Arc<JobMetrics>,
        config: &JobConfig,
        split: SourceSplit,
        start: Option<&runnel_runtime::SourceState>,
    ) -> runnel_runtime::Result<Box<dyn Source>> {
        let error = at_table(table, "source");
        if table.options.get("format").map(String::as_str) == Some("debezium-json") {
            return Err(error(ConnectorError::Other(
                "reading 'format' = 'debezium-json' is not supported yet (it is written only)"
                    .into(),
            )));
        }
        match connector_of(table).map_err(&error)? {
            "kafka" => Ok(Box::new(
                kafka::KafkaSource::open(table, metrics, config, split, start)
                    .await
                    .map_err(&error)?,
            )),
            "filesystem" => Ok(Box::new(
                filesystem::FileSource::open(table, metrics, start).map_err(&error)?,
            )),
            "nexmark" => Ok(Box::new(
                nexmark::NexmarkSource::open(table, split, start).map_err(&error)?,
            )),
            "datagen" => Ok(Box::new(
                datagen::DatagenSource::open(table, split, start).map_err(&error)?,
            )),
            "memory" => Ok(Box::new(
                memory::MemorySource::open(&self.memory, table).map_err(&error)?,
            )),
            "script" => Ok(Box::new(
                script::ScriptSource::open(table, metrics, start).map_err(&error)?,
            )),
            other => Err(error(ConnectorError::Other(format!(
                "connector '{other}' can only be written to, not read"
            )))),
        }
    }

    /// Kafka tables are shared by partition (readers beyond the partition count end at
    /// once); the generators by blocks of rows; files, memory tables and scripts are read
    /// by one reader (a script's order and watermarks are the test).
    fn max_splits(&self, table: &TableDef) -> usize {
        match connector_of(table) {
            Ok("kafka" | "nexmark" | "datagen") => usize::MAX,
            _ => 1,
        }
    }

    async fn committed_checkpoint(
        &self,
        table: &TableDef,
    ) -> runnel_runtime::Result<Option<runnel_runtime::CheckpointId>> {
        match connector_of(table) {
            Ok("kafka") => kafka::committed_checkpoint(table)
                .await
                .map_err(at_table(table, "source")),
            _ => Ok(None),
        }
    }

    async fn create_sink(
        &self,
        table: &TableDef,
        schema: SchemaRef,
        config: &JobConfig,
    ) -> runnel_runtime::Result<Box<dyn Sink>> {
        let error = at_table(table, "sink");
        let connector = connector_of(table).map_err(&error)?;
        if runnel_sql::changelog::is_changelog(&schema)
            && matches!(connector, "kafka" | "filesystem")
            && !table
                .options
                .get("format")
                .is_some_and(|f| format::CHANGELOG_FORMATS.contains(&f.as_str()))
        {
            return Err(error(ConnectorError::Other(format!(
                "the query produces an updating stream (an aggregate or Top-N without a \
                 window revises rows it wrote), which 'format' = '{}' cannot express: \
                 use 'format' = 'debezium-json', or window the aggregate",
                table.options.get("format").map_or("json", String::as_str)
            ))));
        }
        match connector {
            "kafka" => Ok(Box::new(
                kafka::KafkaSink::open(table, schema, config)
                    .await
                    .map_err(&error)?,
            )),
            "filesystem" if !table.partition_keys.is_empty() => Ok(Box::new(
                partitioned_files::PartitionedFileSink::open(table)
                    .await
                    .map_err(&error)?,
            )),
            "filesystem" => Ok(Box::new(
                filesystem::FileSink::open(table).await.map_err(&error)?,
            )),
            "print" => Ok(Box::new(print::PrintSink::new(table).map_err(&error)?)),
            "blackhole" => Ok(Box::new(print::BlackholeSink)),
            other => Err(error(ConnectorError::Other(format!(
                "connector '{other}' can only be read, not written to"
            )))),
        }
    }
}
