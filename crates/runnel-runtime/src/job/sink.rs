//! The end of a job: [`SinkWriter`] writes rows, late rows, dead letters and watermarks
//! to the job's sinks and completes checkpoints at barriers; it runs in a [`SinkTask`] of
//! its own, or chained into the task of the one subtask that feeds it (as Flink chains a
//! sink behind a forward edge), so that a batch crosses no channel to reach it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::datatypes::SchemaRef;
use tokio::sync::oneshot;
use tokio::time::{Interval, MissedTickBehavior};

use super::tasks::LaneInput;
use crate::checkpoint::CheckpointCommit;
use crate::dead_letter;
use crate::error::{Result, RuntimeError};
use crate::message::{Message, WATERMARK_END};
use crate::metrics::{JobMetrics, StageProbe};
use crate::side_output::{LateRows, RowQueue};
use crate::sink::Sink;

/// What a sink waits for besides its input (see [`SinkWriter::signal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SinkSignal {
    /// The sink's flush interval passed ([`Sink::timer_interval`]).
    Timer,
    /// The job stops without a checkpoint: write what the sink holds and end.
    Stop,
    /// Nothing can tell the sink to stop any more (the job's handle let go).
    StopGone,
}

/// Writes what reaches the end of a job to its sinks: result rows to the job's sink, late
/// rows and dead letters to their tables, and, when a barrier arrives, completes the
/// checkpoint (see [`CheckpointCommit`]).
pub(crate) struct SinkWriter {
    pub sink: Box<dyn Sink>,
    /// Where late rows go, when the job routes them to a table.
    pub late_sink: Option<Box<dyn Sink>>,
    pub late: LateRows,
    /// Dead-letter tables' sinks, by the source table whose records they take, with the
    /// columns they take.
    pub dead_letter_sinks: BTreeMap<String, (Box<dyn Sink>, SchemaRef)>,
    pub dead_letters: RowQueue,
    pub metrics: Arc<JobMetrics>,
    /// The sink stage's counters.
    pub probe: StageProbe,
    /// Set when the job checkpoints.
    pub commit: Option<CheckpointCommit>,
    /// Tells the sink to write what it holds and end (a stop without checkpoints); none
    /// once it fired or its sender is gone.
    pub stop: Option<oneshot::Receiver<()>>,
    /// Ticks every [`Sink::timer_interval`], made on the first [`SinkWriter::signal`].
    timer: Option<Interval>,
}

impl SinkWriter {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        sink: Box<dyn Sink>,
        late_sink: Option<Box<dyn Sink>>,
        late: LateRows,
        dead_letter_sinks: BTreeMap<String, (Box<dyn Sink>, SchemaRef)>,
        dead_letters: RowQueue,
        metrics: Arc<JobMetrics>,
        probe: StageProbe,
        commit: Option<CheckpointCommit>,
        stop: oneshot::Receiver<()>,
    ) -> Self {
        Self {
            sink,
            late_sink,
            late,
            dead_letter_sinks,
            dead_letters,
            metrics,
            probe,
            commit,
            stop: Some(stop),
            timer: None,
        }
    }

    /// Waits for the sink's next timer tick or the job's stop; forever when neither can
    /// come. Cancel-safe: nothing is done until [`SinkWriter::on_signal`] is called with
    /// the answer, so a task may wait for it beside its input.
    pub async fn signal(&mut self) -> SinkSignal {
        if self.timer.is_none() {
            self.timer = self.sink.timer_interval().map(|period| {
                let mut timer = tokio::time::interval(period.max(Duration::from_millis(1)));
                timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
                timer
            });
        }
        let (timer, stop) = (&mut self.timer, &mut self.stop);
        tokio::select! {
            biased;
            () = async {
                match timer {
                    Some(timer) => {
                        timer.tick().await;
                    }
                    None => std::future::pending().await,
                }
            } => SinkSignal::Timer,
            stopped = async {
                match stop {
                    Some(stop) => stop.await.is_ok(),
                    None => std::future::pending().await,
                }
            } => if stopped { SinkSignal::Stop } else { SinkSignal::StopGone },
        }
    }

    /// Acts on `signal`; true when the job stopped (what the sinks held is written, and
    /// the task holding the sink ends).
    pub async fn on_signal(&mut self, signal: SinkSignal) -> Result<bool> {
        match signal {
            SinkSignal::Timer => {
                self.sink.on_timer().await?;
                Ok(false)
            }
            SinkSignal::Stop => {
                self.stop = None;
                self.write_set_aside_rows().await?;
                self.finish().await?;
                Ok(true)
            }
            SinkSignal::StopGone => {
                self.stop = None;
                Ok(false)
            }
        }
    }

    /// Writes `message`; false once it was the end (every sink has written what it held).
    pub async fn write(&mut self, message: Message) -> Result<bool> {
        // Late rows and dead letters set aside before this message (a barrier's epoch
        // included) first.
        self.write_set_aside_rows().await?;
        self.probe.received(&message);
        match message {
            Message::Batch(batch) => {
                JobMetrics::add(&self.metrics.rows_out, batch.num_rows());
                self.sink.write_batch(batch).await?;
            }
            // The final watermark of a finished source is not a time.
            Message::Watermark(WATERMARK_END) => {}
            Message::Watermark(w) => {
                self.probe.watermark(w);
                self.metrics
                    .watermark
                    .store(w, std::sync::atomic::Ordering::Relaxed);
                self.sink.on_watermark(w).await?;
            }
            Message::Idle => {}
            Message::Barrier(id) => {
                if let Some(commit) = &self.commit {
                    let side_sinks = self
                        .late_sink
                        .iter_mut()
                        .chain(self.dead_letter_sinks.values_mut().map(|(sink, _)| sink))
                        .collect();
                    commit.complete(id, &mut self.sink, side_sinks).await?;
                }
            }
            Message::End => {
                self.finish().await?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Writes the late rows and dead letters set aside so far to their tables.
    async fn write_set_aside_rows(&mut self) -> Result<()> {
        if let Some(late_sink) = &mut self.late_sink {
            for batch in self.late.drain() {
                JobMetrics::add(&self.metrics.late_rows_routed, batch.num_rows());
                late_sink.write_batch(batch).await?;
            }
        }
        for letters in self.dead_letters.drain() {
            let source = letters
                .column_by_name("source_table")
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .filter(|c| !c.is_empty())
                .map(|c| c.value(0).to_string())
                .unwrap_or_default();
            let Some((sink, schema)) = self.dead_letter_sinks.get_mut(&source) else {
                return Err(RuntimeError::Build(format!(
                    "dead letters of {source}, which has no dead-letter table"
                )));
            };
            sink.write_batch(dead_letter::conform(&letters, schema)?)
                .await?;
        }
        Ok(())
    }

    /// The input ended (or the job stops): every sink writes what it holds.
    async fn finish(&mut self) -> Result<()> {
        self.sink.finish().await?;
        if let Some(late_sink) = &mut self.late_sink {
            late_sink.finish().await?;
        }
        for (sink, _) in self.dead_letter_sinks.values_mut() {
            sink.finish().await?;
        }
        Ok(())
    }
}

/// The sink in a task of its own: writes its input until it ends, or until the job stops
/// (a stop without checkpoints: what the sink holds is written first).
pub(crate) struct SinkTask {
    pub input: LaneInput,
    pub writer: Box<SinkWriter>,
}

impl SinkTask {
    pub async fn run(mut self) -> Result<()> {
        loop {
            let message = tokio::select! {
                biased;
                signal = self.writer.signal() => {
                    if self.writer.on_signal(signal).await? {
                        break;
                    }
                    continue;
                }
                message = self.input.next() => message,
            };
            let Some(message) = message else { break };
            if !self.writer.write(message).await? {
                break;
            }
        }
        Ok(())
    }
}
