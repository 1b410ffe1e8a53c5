//! [`ConnectorFactory`]: how the runtime asks for sources and sinks without knowing any
//! connector (Kafka, files, ...). The connectors crate implements it.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
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

    /// Opens a writer into `table`, which will receive batches of `schema`.
    async fn create_sink(
        &self,
        table: &TableDef,
        schema: SchemaRef,
        config: &JobConfig,
    ) -> Result<Box<dyn Sink>>;
}
