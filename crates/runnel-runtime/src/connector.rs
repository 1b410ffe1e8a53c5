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

/// Creates the reader or writer a table's `'connector'` option names.
#[async_trait]
pub trait ConnectorFactory: Send + Sync {
    /// Checks a table's options when it is declared, so mistakes surface at `CREATE TABLE`.
    fn validate(&self, table: &TableDef) -> Result<()>;

    /// Opens a reader of `table`. `metrics` receives the counts of skipped records;
    /// `config` holds job-wide defaults (e.g. the idle timeout) for options the table omits.
    /// `start`: where a restored job resumes (each partition's next offset), instead of
    /// the table's startup mode.
    async fn create_source(
        &self,
        table: &TableDef,
        metrics: Arc<JobMetrics>,
        config: &JobConfig,
        start: Option<&crate::checkpoint::SourceState>,
    ) -> Result<Box<dyn Source>>;

    /// The checkpoint whose offsets were last committed for `table` along with the
    /// output (exactly-once), if any.
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
