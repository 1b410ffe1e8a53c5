//! The [`Sink`] trait that connectors implement, a sink that hands batches to the caller,
//! and the [`SinkFactory`] a job makes its sink with (again at each restart).

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use tokio::sync::mpsc;

use crate::config::JobConfig;
use crate::connector::ConnectorFactory;
use crate::error::{Result, RuntimeError};

/// A connector's writer. Receives result batches in order; `finish` is called once when
/// the job's input ends, and must flush everything (a job is done only when it returns).
#[async_trait]
pub trait Sink: Send {
    async fn write_batch(&mut self, batch: RecordBatch) -> Result<()>;

    /// The job's output watermark advanced to `watermark` (ms): rows written later are
    /// not earlier than it (late rows aside). Sinks that finalize output by event time
    /// (partition commits) act on it; by default nothing happens.
    async fn on_watermark(&mut self, _watermark: i64) -> Result<()> {
        Ok(())
    }

    async fn finish(&mut self) -> Result<()>;

    /// How often a sink that buffers rows (`'sink.buffer-flush.interval'`) wants
    /// [`Sink::on_timer`] called, also while no rows arrive; `None` (the default): never.
    fn timer_interval(&self) -> Option<std::time::Duration> {
        None
    }

    /// Called every [`Sink::timer_interval`]: write what has waited long enough.
    async fn on_timer(&mut self) -> Result<()> {
        Ok(())
    }

    /// A checkpoint's barrier reached the sink: what was written before it must be
    /// durable (at-least-once: acknowledged by the broker), or held in the open
    /// transaction (exactly-once), when this returns. By default nothing is buffered.
    async fn prepare_checkpoint(&mut self, _id: crate::checkpoint::CheckpointId) -> Result<()> {
        Ok(())
    }

    /// The checkpoint is stored: make its epoch's output final (exactly-once: commit the
    /// transaction with the sources' offsets from `checkpoint`).
    async fn commit_checkpoint(&mut self, _checkpoint: &crate::checkpoint::Manifest) -> Result<()> {
        Ok(())
    }
}

/// Sends result batches into a channel: how a bare `SELECT` streams rows to its caller.
#[derive(Clone)]
pub struct ChannelSink {
    sender: mpsc::Sender<datafusion::error::Result<RecordBatch>>,
}

impl ChannelSink {
    pub fn new(sender: mpsc::Sender<datafusion::error::Result<RecordBatch>>) -> Self {
        Self { sender }
    }
}

#[async_trait]
impl Sink for ChannelSink {
    async fn write_batch(&mut self, batch: RecordBatch) -> Result<()> {
        self.sender
            .send(Ok(batch))
            .await
            .map_err(|_| RuntimeError::QueryClosed)
    }

    async fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Makes the sink each run of a job writes to: the first, and a new one for every
/// restart (the failed run's sink is gone with its task).
#[async_trait]
pub trait SinkFactory: Send + Sync {
    /// A sink for rows of `schema`.
    async fn create_sink(
        &self,
        connectors: &dyn ConnectorFactory,
        schema: SchemaRef,
        config: &JobConfig,
    ) -> Result<Box<dyn Sink>>;
}

/// The writer of the table a job inserts into ([`JobConfig::sink`]), from its connector.
#[derive(Debug, Clone, Copy, Default)]
pub struct TableSink;

#[async_trait]
impl SinkFactory for TableSink {
    async fn create_sink(
        &self,
        connectors: &dyn ConnectorFactory,
        schema: SchemaRef,
        config: &JobConfig,
    ) -> Result<Box<dyn Sink>> {
        let table = config
            .sink
            .as_ref()
            .ok_or_else(|| RuntimeError::Build("a job needs a table to write to".into()))?;
        connectors.create_sink(table, schema, config).await
    }
}

/// Every run of a query sends its rows to the same caller.
#[async_trait]
impl SinkFactory for ChannelSink {
    async fn create_sink(
        &self,
        _connectors: &dyn ConnectorFactory,
        _schema: SchemaRef,
        _config: &JobConfig,
    ) -> Result<Box<dyn Sink>> {
        Ok(Box::new(self.clone()))
    }
}
