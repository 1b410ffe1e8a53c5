//! Runnel's connectors: where streams come from and go to.
//!
//! The entry point is [`Connectors`], the [`ConnectorFactory`] the engine hands the
//! runtime: a registry of [`Connector`]s found by the table's `'connector'` option. Each
//! connector lives in its own module, implements [`Connector`] once and takes Flink's
//! option names: `kafka` (source and sink), `filesystem` (bounded source and sink),
//! `nexmark` (the benchmark's generator), `datagen` (random or sequential rows at a
//! steady rate), `memory` (batches pushed by an embedding service), `script` (replays
//! rows, watermarks and clock ticks for tests), `jdbc` (PostgreSQL tables, upserted by
//! key), `print` and `blackhole` (sinks). Record
//! formats (`json`, `csv`, `debezium-json`) live in [`format`]. A new connector is a new
//! module and one line in [`Connectors::new`].

pub mod connector;
pub mod datagen;
pub mod error;
pub mod filesystem;
pub mod format;
pub mod jdbc;
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

pub use connector::{Connector, SourceContext};
pub use error::ConnectorError;

/// The built-in connectors, found by name.
#[derive(Clone)]
pub struct Connectors {
    /// The engine's memory tables (`'connector' = 'memory'`).
    pub memory: memory::MemoryTables,
    registry: Vec<Arc<dyn Connector>>,
}

impl Default for Connectors {
    fn default() -> Self {
        Self::new(memory::MemoryTables::default())
    }
}

impl std::fmt::Debug for Connectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Connectors {
    /// Every built-in connector; `memory` holds the memory tables' batches.
    pub fn new(memory: memory::MemoryTables) -> Self {
        let registry: Vec<Arc<dyn Connector>> = vec![
            Arc::new(kafka::KafkaConnector { upsert: false }),
            Arc::new(kafka::KafkaConnector { upsert: true }),
            Arc::new(filesystem::FilesystemConnector),
            Arc::new(nexmark::NexmarkConnector),
            Arc::new(datagen::DatagenConnector),
            Arc::new(memory::MemoryConnector {
                tables: memory.clone(),
            }),
            Arc::new(script::ScriptConnector),
            Arc::new(jdbc::JdbcConnector),
            Arc::new(print::PrintConnector),
            Arc::new(print::BlackholeConnector),
        ];
        Self { memory, registry }
    }

    /// The names of the connectors, as `'connector'` takes them.
    pub fn names(&self) -> Vec<&'static str> {
        self.registry.iter().map(|c| c.name()).collect()
    }

    /// The connector `table` names.
    pub fn connector_of(&self, table: &TableDef) -> Result<&dyn Connector, ConnectorError> {
        let name = table
            .connector()
            .ok_or_else(|| ConnectorError::MissingOption {
                table: table.name.clone(),
                connector: "?".into(),
                option: "connector".into(),
            })?;
        self.registry
            .iter()
            .find(|c| c.name() == name)
            .map(|c| c.as_ref())
            .ok_or_else(|| ConnectorError::UnknownConnector {
                table: table.name.clone(),
                connector: name.into(),
                valid: self.names().join(", "),
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
        metadata: vec![],
        partition_keys: vec![],
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        unique_fields: vec![],
        read_fields: Default::default(),
    }
}

/// Fails for a `METADATA` key neither the table's connector nor its format provides,
/// naming the valid ones.
fn check_metadata(table: &TableDef, connector: &dyn Connector) -> Result<(), ConnectorError> {
    let mut valid: Vec<&str> = connector.metadata_keys().to_vec();
    if table.is_changelog() && connector.name() != "upsert-kafka" {
        valid.extend(format::debezium::METADATA_KEYS);
    }
    match table.metadata.iter().find(|m| !valid.contains(&m.key.as_str())) {
        None => Ok(()),
        Some(unknown) => Err(ConnectorError::Other(format!(
            "table {}: column {} reads metadata '{}', which connector '{}' does not provide (valid: {})",
            table.name,
            unknown.column,
            unknown.key,
            connector.name(),
            if valid.is_empty() {
                "none".to_string()
            } else {
                valid.join(", ")
            }
        ))),
    }
}

/// Wraps a connector error with the table it concerns.
fn at_table(
    table: &TableDef,
    role: &str,
) -> impl Fn(ConnectorError) -> runnel_runtime::RuntimeError {
    let context = format!("{role} {}", table.name);
    move |e| e.in_context(context.clone())
}

#[async_trait]
impl ConnectorFactory for Connectors {
    fn validate(&self, table: &TableDef) -> runnel_runtime::Result<()> {
        let check = || -> Result<(), ConnectorError> {
            let connector = self.connector_of(table)?;
            connector.validate(table)?;
            check_metadata(table, connector)
        };
        check().map_err(|e| runnel_runtime::RuntimeError::connector("CREATE TABLE", e))
    }

    fn is_bounded(&self, table: &TableDef) -> bool {
        self.connector_of(table).is_ok_and(|c| c.is_bounded(table))
    }

    fn watermark_alignment(&self, table: &TableDef) -> Option<runnel_runtime::WatermarkAlignment> {
        self.connector_of(table)
            .ok()
            .and_then(|c| c.watermark_alignment(table))
    }

    fn unique_fields(&self, table: &TableDef) -> Vec<Vec<String>> {
        self.connector_of(table)
            .map(|c| c.unique_fields(table))
            .unwrap_or_default()
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
        let context = SourceContext {
            metrics,
            config,
            split,
            start,
        };
        let connector = self.connector_of(table).map_err(&error)?;
        connector.open_source(table, context).await.map_err(&error)
    }

    fn max_splits(&self, table: &TableDef) -> usize {
        self.connector_of(table).map_or(1, |c| c.max_splits(table))
    }

    fn reads_by_key(&self, table: &TableDef) -> bool {
        self.connector_of(table)
            .is_ok_and(|c| c.reads_by_key(table))
    }

    async fn open_lookup(
        &self,
        table: &TableDef,
        key: &[String],
    ) -> runnel_runtime::Result<Arc<dyn runnel_runtime::KeyLookup>> {
        let error = at_table(table, "lookup");
        let connector = self.connector_of(table).map_err(&error)?;
        connector.open_lookup(table, key).await.map_err(&error)
    }

    fn sink_records_commits(&self, table: &TableDef) -> bool {
        self.connector_of(table)
            .is_ok_and(|c| c.sink_records_commits(table))
    }

    async fn committed_checkpoint(
        &self,
        table: &TableDef,
    ) -> runnel_runtime::Result<Option<runnel_runtime::CheckpointId>> {
        let error = at_table(table, "source");
        let connector = self.connector_of(table).map_err(&error)?;
        connector.committed_checkpoint(table).await.map_err(&error)
    }

    async fn create_sink(
        &self,
        table: &TableDef,
        schema: SchemaRef,
        config: &JobConfig,
    ) -> runnel_runtime::Result<Box<dyn Sink>> {
        let error = at_table(table, "sink");
        let connector = self.connector_of(table).map_err(&error)?;
        connector
            .open_sink(table, schema, config)
            .await
            .map_err(&error)
    }
}
