//! The [`Sink`] trait that connectors implement, a sink that hands batches to the caller,
//! and the [`SinkFactory`] a job makes its sink with (again at each restart).

use async_trait::async_trait;
use datafusion::arrow::compute::BatchCoalescer;
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

    /// Whether the sink may run in the task of the one subtask feeding it (as Flink
    /// chains a sink behind a forward edge), so batches reach it without crossing a
    /// channel: true for a sink whose writes cost little next to that hand-off (handing
    /// batches to a caller, discarding them). A sink that encodes and sends rows keeps a
    /// task of its own (the default), so that its work and its input's overlap on two
    /// cores: a Kafka-to-Kafka job at parallelism 1 took 14 % longer chained.
    fn chains_into_input(&self) -> bool {
        false
    }

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
///
/// Waking the caller costs about as much as filtering a few thousand rows, so rows are
/// handed over in bursts, as Flink fills a network buffer until it is full or its
/// timeout passes: small batches (a selective filter's, say) are gathered into batches
/// of [`CALLER_BATCH_ROWS`] rows (batches of half that or more are kept as they are), and
/// they go to the caller once [`CALLER_BURST_ROWS`] rows are ready, when the input ends,
/// or at the latest [`CALLER_FLUSH_INTERVAL`] after they arrived. The caller, woken by
/// the first of a burst, finds the rest waiting.
#[derive(Clone)]
pub struct ChannelSink {
    sender: mpsc::Sender<datafusion::error::Result<RecordBatch>>,
}

/// The rows of a batch [`ChannelSink`] gathers small batches into.
pub const CALLER_BATCH_ROWS: usize = 8192;

/// The rows [`ChannelSink`] hands over at once, when no timer or end comes first.
pub const CALLER_BURST_ROWS: usize = 4 * CALLER_BATCH_ROWS;

/// The longest rows wait before [`ChannelSink`] hands them to the caller.
pub const CALLER_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

impl ChannelSink {
    pub fn new(sender: mpsc::Sender<datafusion::error::Result<RecordBatch>>) -> Self {
        Self { sender }
    }
}

/// One run's writer of a [`ChannelSink`].
struct CallerWriter {
    sender: mpsc::Sender<datafusion::error::Result<RecordBatch>>,
    /// Gathers small batches; made for the schema of the batches that arrive.
    gathered: Option<BatchCoalescer>,
    /// Batches ready for the caller, not handed over yet, and their rows.
    ready: Vec<RecordBatch>,
    ready_rows: usize,
}

impl CallerWriter {
    fn new(sender: mpsc::Sender<datafusion::error::Result<RecordBatch>>) -> Self {
        Self {
            sender,
            gathered: None,
            ready: Vec::new(),
            ready_rows: 0,
        }
    }

    /// Moves the batches the gatherer completed (with its partial one when `all`) to the
    /// ready ones.
    fn take_gathered(&mut self, all: bool) -> Result<()> {
        let Some(gathered) = &mut self.gathered else {
            return Ok(());
        };
        if all {
            gathered.finish_buffered_batch().map_err(gather_error)?;
        }
        while let Some(batch) = gathered.next_completed_batch() {
            self.ready_rows += batch.num_rows();
            self.ready.push(batch);
        }
        Ok(())
    }

    /// Hands the ready batches to the caller.
    async fn hand_over(&mut self) -> Result<()> {
        self.ready_rows = 0;
        for batch in std::mem::take(&mut self.ready) {
            self.sender
                .send(Ok(batch))
                .await
                .map_err(|_| RuntimeError::QueryClosed)?;
        }
        Ok(())
    }

    /// Hands over everything held, the partial gathered batch too.
    async fn flush(&mut self) -> Result<()> {
        self.take_gathered(true)?;
        self.hand_over().await
    }
}

fn gather_error(error: datafusion::arrow::error::ArrowError) -> RuntimeError {
    RuntimeError::Operator {
        operator: "the query's result stream".into(),
        source: error.into(),
    }
}

#[async_trait]
impl Sink for CallerWriter {
    async fn write_batch(&mut self, batch: RecordBatch) -> Result<()> {
        if self
            .gathered
            .as_ref()
            .is_some_and(|g| g.schema() != batch.schema())
        {
            self.take_gathered(true)?;
            self.gathered = None;
        }
        self.gathered
            .get_or_insert_with(|| {
                BatchCoalescer::new(batch.schema(), CALLER_BATCH_ROWS)
                    .with_biggest_coalesce_batch_size(Some(CALLER_BATCH_ROWS / 2))
            })
            .push_batch(batch)
            .map_err(gather_error)?;
        self.take_gathered(false)?;
        if self.ready_rows >= CALLER_BURST_ROWS {
            self.hand_over().await?;
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        self.flush().await
    }

    /// Handing batches over costs little; the caller's thread does the rest.
    fn chains_into_input(&self) -> bool {
        true
    }

    fn timer_interval(&self) -> Option<std::time::Duration> {
        Some(CALLER_FLUSH_INTERVAL)
    }

    async fn on_timer(&mut self) -> Result<()> {
        self.flush().await
    }

    /// What came before the barrier reaches the caller before the checkpoint completes.
    async fn prepare_checkpoint(&mut self, _id: crate::checkpoint::CheckpointId) -> Result<()> {
        self.flush().await
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
        Ok(Box::new(CallerWriter::new(self.sender.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn rows(from: i64, count: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let values = Int64Array::from_iter_values(from..from + count);
        RecordBatch::try_new(schema, vec![Arc::new(values)]).expect("a batch")
    }

    fn values(batch: &RecordBatch) -> Vec<i64> {
        let column = batch.column(0).as_any().downcast_ref::<Int64Array>();
        column.expect("BIGINT").values().to_vec()
    }

    /// Small batches wait, gathered, for the timer (or the end); batches of half the
    /// gathering size or more are kept whole, and go to the caller in a burst once
    /// [`CALLER_BURST_ROWS`] rows are ready; rows keep their order.
    #[tokio::test]
    async fn the_callers_sink_hands_over_gathered_rows_in_bursts() {
        let (sender, mut receiver) = mpsc::channel(8);
        let mut sink = CallerWriter::new(sender);
        assert_eq!(sink.timer_interval(), Some(CALLER_FLUSH_INTERVAL));
        for from in [0, 10, 20] {
            sink.write_batch(rows(from, 10)).await.expect("written");
        }
        assert!(receiver.try_recv().is_err(), "small batches wait");
        sink.on_timer().await.expect("flushed");
        let gathered = receiver.try_recv().expect("sent").expect("rows");
        assert_eq!(values(&gathered), (0..30).collect::<Vec<_>>());

        let large = CALLER_BATCH_ROWS as i64;
        let bursts = (CALLER_BURST_ROWS / CALLER_BATCH_ROWS) as i64;
        for i in 0..bursts {
            assert!(receiver.try_recv().is_err(), "no burst before {i} batches");
            sink.write_batch(rows(30 + i * large, large))
                .await
                .expect("written");
        }
        for i in 0..bursts {
            let whole = receiver.try_recv().expect("the burst").expect("rows");
            let from = 30 + i * large;
            assert_eq!(values(&whole), (from..from + large).collect::<Vec<_>>());
        }
        assert!(receiver.try_recv().is_err(), "one burst");

        sink.write_batch(rows(-5, 5)).await.expect("written");
        assert!(receiver.try_recv().is_err(), "small batches wait");
        sink.finish().await.expect("finished");
        let last = receiver.try_recv().expect("sent at the end").expect("rows");
        assert_eq!(values(&last), vec![-5, -4, -3, -2, -1]);
    }
}
