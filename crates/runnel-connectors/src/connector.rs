//! [`Connector`]: one kind of external system a table can live in, selected by the
//! table's `'connector'` option. Each module of this crate implements it once;
//! [`crate::Connectors`] finds them by name.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use runnel_runtime::{CheckpointId, JobConfig, JobMetrics, Sink, Source, SourceSplit, SourceState};
use runnel_sql::TableDef;

use crate::error::{ConnectorError, Result};

/// What a reader is opened with.
pub struct SourceContext<'a> {
    /// Where it counts records it skips as undecodable.
    pub metrics: Arc<JobMetrics>,
    /// Job-wide defaults for options the table leaves out (e.g. the idle timeout).
    pub config: &'a JobConfig,
    /// Which share of the table this reader takes (one of several parallel readers).
    pub split: SourceSplit,
    /// Where a restored job resumes, instead of the table's startup mode.
    pub start: Option<&'a SourceState>,
}

/// A connector: checks a table's options and opens readers and writers of it. Only
/// [`Connector::name`] and [`Connector::validate`] are required; a connector that only
/// reads or only writes leaves the other side's method to say so.
#[async_trait]
pub trait Connector: Send + Sync {
    /// The `'connector'` value that selects it, e.g. `kafka`.
    fn name(&self) -> &'static str;

    /// Checks a table's options when it is declared, so mistakes surface at `CREATE TABLE`.
    fn validate(&self, table: &TableDef) -> Result<()>;

    /// The `METADATA` keys the connector fills in (its format may add its own).
    fn metadata_keys(&self) -> &'static [&'static str] {
        &[]
    }

    /// Whether reading the table ends (a file, a bounded topic): only such a table can be
    /// read whole, as the table side of a lookup join.
    fn is_bounded(&self, _table: &TableDef) -> bool {
        false
    }

    /// How the table's readers keep in step in event time (Flink's
    /// `scan.watermark.alignment.*`), when they do. None by default.
    fn watermark_alignment(&self, _table: &TableDef) -> Option<runnel_runtime::WatermarkAlignment> {
        None
    }

    /// Fields whose values never repeat across the table's rows, NULLs aside, as paths
    /// (a column, then nested fields): what the connector guarantees by how it makes or
    /// reads the rows (a generator's ids), not what the DDL declares. None by default.
    fn unique_fields(&self, _table: &TableDef) -> Vec<Vec<String>> {
        Vec::new()
    }

    /// How many parallel readers can share the table (partitions, blocks of generated
    /// rows); 1 when one reader reads it all.
    fn max_splits(&self, _table: &TableDef) -> usize {
        1
    }

    /// Opens a reader of the table.
    async fn open_source(
        &self,
        _table: &TableDef,
        _context: SourceContext<'_>,
    ) -> Result<Box<dyn Source>> {
        Err(ConnectorError::Other(format!(
            "connector '{}' can only be written to, not read",
            self.name()
        )))
    }

    /// Whether a lookup join asks the table by key (see
    /// [`runnel_runtime::ConnectorFactory::reads_by_key`]) instead of reading it whole.
    fn reads_by_key(&self, _table: &TableDef) -> bool {
        false
    }

    /// Opens the table for lookups by the columns `key`.
    async fn open_lookup(
        &self,
        _table: &TableDef,
        _key: &[String],
    ) -> Result<Arc<dyn runnel_runtime::KeyLookup>> {
        Err(ConnectorError::Other(format!(
            "connector '{}' cannot be looked up by key",
            self.name()
        )))
    }

    /// Opens a writer into the table, which will receive batches of `schema`.
    async fn open_sink(
        &self,
        _table: &TableDef,
        _schema: SchemaRef,
        _config: &JobConfig,
    ) -> Result<Box<dyn Sink>> {
        Err(ConnectorError::Other(format!(
            "connector '{}' can only be read, not written to",
            self.name()
        )))
    }

    /// Whether a sink into the table records which checkpoint its output last committed
    /// (see [`runnel_runtime::ConnectorFactory::sink_records_commits`]).
    fn sink_records_commits(&self, _table: &TableDef) -> bool {
        false
    }

    /// The checkpoint whose offsets (or, for a sink that records its commits, output) were
    /// last committed for the table (exactly-once), if the connector commits any.
    async fn committed_checkpoint(&self, _table: &TableDef) -> Result<Option<CheckpointId>> {
        Ok(None)
    }
}
