//! [`ConnectorFactory`]: how the runtime asks for sources and sinks without knowing any
//! connector (Kafka, files, ...). The connectors crate implements it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use runnel_sql::TableDef;

use crate::config::JobConfig;
use crate::error::Result;
use crate::metrics::JobMetrics;
use crate::sink::Sink;
use crate::source::Source;

/// Which share of a table one of its parallel readers takes: reader `index` of `count`.
/// Partitions (or blocks of generated rows) `i` with `i % count == index` are its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceSplit {
    pub index: usize,
    pub count: usize,
}

impl SourceSplit {
    /// The whole table, read by one reader.
    pub const WHOLE: SourceSplit = SourceSplit { index: 0, count: 1 };

    /// Whether partition (or block) `i` is this reader's.
    pub fn owns(&self, i: usize) -> bool {
        i % self.count.max(1) == self.index
    }
}

/// Creates the reader or writer a table's `'connector'` option names.
#[async_trait]
pub trait ConnectorFactory: Send + Sync {
    /// Checks a table's options when it is declared, so mistakes surface at `CREATE TABLE`.
    fn validate(&self, table: &TableDef) -> Result<()>;

    /// Opens a reader of `table`. `metrics` receives the counts of skipped records;
    /// `config` holds job-wide defaults (e.g. the idle timeout) for options the table omits.
    /// `split`: which share of the table this reader takes (one of several parallel
    /// readers; see [`ConnectorFactory::max_splits`]). `start`: where a restored job
    /// resumes (each partition's next offset), instead of the table's startup mode.
    async fn create_source(
        &self,
        table: &TableDef,
        metrics: Arc<JobMetrics>,
        config: &JobConfig,
        split: SourceSplit,
        start: Option<&crate::checkpoint::SourceState>,
    ) -> Result<Box<dyn Source>>;

    /// How many parallel readers can share `table` (Kafka: its partitions; a generator:
    /// its rows); 1 when it is read by one. A job runs `min(parallelism, max_splits)`.
    fn max_splits(&self, _table: &TableDef) -> usize {
        1
    }

    /// How `table`'s readers keep in step in event time (Flink's
    /// `scan.watermark.alignment.*`), when they do; `None` (the default): each reads as
    /// fast as it can.
    fn watermark_alignment(&self, _table: &TableDef) -> Option<crate::WatermarkAlignment> {
        None
    }

    /// Fields whose values never repeat across `table`'s rows, NULLs aside, as paths (a
    /// column, then nested fields), as the connector guarantees them; recorded in
    /// [`TableDef::unique_fields`] when the table is declared. None by default.
    fn unique_fields(&self, _table: &TableDef) -> Vec<Vec<String>> {
        Vec::new()
    }

    /// Whether the sink writing `table` records, with its output, which checkpoint it
    /// committed last (exactly-once: a jdbc table's `runnel_checkpoints` row). If not, the
    /// sources' committed offsets say (a Kafka sink's transactions).
    fn sink_records_commits(&self, _table: &TableDef) -> bool {
        false
    }

    /// The checkpoint whose output (and offsets) were last committed for `table`, a source
    /// or a sink that records its commits (exactly-once), if any.
    async fn committed_checkpoint(
        &self,
        _table: &TableDef,
    ) -> Result<Option<crate::checkpoint::CheckpointId>> {
        Ok(None)
    }

    /// Whether reading `table` ends (a file, a bounded topic): only such a table can be
    /// read whole, as the table side of a lookup join.
    fn is_bounded(&self, _table: &TableDef) -> bool {
        false
    }

    /// Whether a lookup join reads `table` by key as stream rows arrive (a database
    /// table: each row meets the table as it is when the row is joined), rather than
    /// whole before the stream starts.
    fn reads_by_key(&self, _table: &TableDef) -> bool {
        false
    }

    /// Opens `table` for lookups by the columns `key` (names of its physical columns), for
    /// a table [`ConnectorFactory::reads_by_key`].
    async fn open_lookup(&self, table: &TableDef, _key: &[String]) -> Result<Arc<dyn KeyLookup>> {
        Err(crate::error::RuntimeError::Build(format!(
            "table {} cannot be looked up by key",
            table.name
        )))
    }

    /// Opens a writer into `table`, which will receive batches of `schema`.
    async fn create_sink(
        &self,
        table: &TableDef,
        schema: SchemaRef,
        config: &JobConfig,
    ) -> Result<Box<dyn Sink>>;
}

/// A table a lookup join reads by key while the stream runs (Flink's `LookupTableSource`):
/// each batch's keys are looked up in one request. Shared by every subtask of a job, so
/// it must be callable from several at once.
pub trait KeyLookup: Send + Sync {
    /// The table's rows (its physical columns, in declaration order) whose key columns
    /// equal one of the rows of `keys` — one array per key column, each already of that
    /// column's type, no NULLs, no key twice. Blocks until the table answers; fails only
    /// after the connector's own retries.
    fn lookup(&self, keys: &[ArrayRef]) -> Result<RecordBatch>;

    /// How the joining operator may keep rows it looked up.
    fn cache(&self) -> LookupCache;
}

/// Flink's partial lookup cache (`lookup.cache` = `PARTIAL`): rows looked up per key,
/// kept until they are too old or the cache is full. `max_keys == 0`: no cache, every
/// batch asks the table again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LookupCache {
    /// How many keys are kept (the oldest go first).
    pub max_keys: usize,
    /// How long after it was looked up a key's rows are used.
    pub expire_after_write: Option<Duration>,
    /// How long after it was last used a key's rows are kept.
    pub expire_after_access: Option<Duration>,
    /// Whether a key the table did not have is remembered as missing.
    pub cache_missing_keys: bool,
}
