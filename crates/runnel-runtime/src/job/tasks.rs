//! The loops of a job's tasks (besides the source readers, see [`crate::source`]): a
//! chain of one-input operators, a two-input operator with its chain, and the sink; and
//! [`ChainedOperators`], the chain a source reader runs in its own task.
//!
//! Each loop reads its input channels as one stream ([`LaneInput`], [`MergedInputs`]),
//! runs the operators, and sends what they emit on through an [`Exchange`]. A send that
//! fails means the downstream task stopped: the loop ends quietly and that task reports
//! why.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use tokio::sync::mpsc;

use crate::chain::OperatorChain;
use crate::checkpoint::{CheckpointCommit, CheckpointCoordinator, CheckpointId};
use crate::dead_letter;
use crate::error::{Result, RuntimeError};
use crate::exchange::{Exchange, MergedInputs};
use crate::graph::OperatorId;
use crate::message::{Message, Watermark, WATERMARK_END};
use crate::metrics::{JobMetrics, StageProbe};
use crate::operator::{Collector, InputWatermarks, OperatorState, Side, TwoInputOperator};
use crate::processing_time::ProcessingTime;
use crate::side_output::{LateRows, RowQueue};
use crate::sink::Sink;

/// Where one subtask reads its input: the channels of the upstream subtasks that feed
/// it. Several are merged (watermarks as their minimum, barriers aligned; see
/// [`MergedInputs`]).
pub(crate) enum LaneInput {
    Channel(mpsc::Receiver<Message>),
    Merged(Box<MergedInputs>),
}

impl LaneInput {
    pub fn new(mut channels: Vec<mpsc::Receiver<Message>>) -> Self {
        if channels.len() == 1 {
            LaneInput::Channel(channels.remove(0))
        } else {
            LaneInput::Merged(Box::new(MergedInputs::new(vec![channels])))
        }
    }

    pub async fn next(&mut self) -> Option<Message> {
        match self {
            LaneInput::Channel(receiver) => receiver.recv().await,
            LaneInput::Merged(merged) => merged.next().await.map(|(_, message)| message),
        }
    }
}

/// Sends `out`'s messages on, counting them and the time spent waiting for room into
/// `probe`; false once downstream stopped.
async fn send_all(
    output: &mut Exchange,
    out: &mut Vec<Message>,
    probe: &StageProbe,
) -> Result<bool> {
    if out.is_empty() {
        return Ok(true);
    }
    probe.sending(out);
    let started = std::time::Instant::now();
    for message in out.drain(..) {
        if !output.send(message).await? {
            return Ok(false);
        }
    }
    probe.backpressured(started.elapsed());
    Ok(true)
}

/// One subtask's chained operators and where their output goes: what a chain task runs
/// over its input channels, and what a source task runs itself when its stage has
/// operators (as Flink chains a source with the operators after it), so that a batch
/// crosses no channel between the source and them.
pub(crate) struct ChainedOperators {
    chain: OperatorChain,
    output: Exchange,
    /// On processing time: `PROCTIME()` reads the watermark sent before each batch.
    clock: Option<ProcessingTime>,
    probe: StageProbe,
    /// What the chain emitted, not sent yet.
    out: Vec<Message>,
}

impl ChainedOperators {
    pub fn new(
        chain: OperatorChain,
        output: Exchange,
        clock: Option<ProcessingTime>,
        probe: StageProbe,
    ) -> Self {
        Self {
            chain,
            output,
            clock,
            probe,
            out: Vec::new(),
        }
    }

    /// Runs `message` through the operators and sends what they emit on; false once
    /// downstream stopped.
    pub async fn push(&mut self, message: Message) -> Result<bool> {
        if let (Some(clock), Message::Watermark(w)) = (&self.clock, &message) {
            clock.set(*w);
        }
        self.probe.received(&message);
        let barrier = matches!(message, Message::Barrier(_)).then(std::time::Instant::now);
        self.chain.process(message, &mut self.out)?;
        if let Some(started) = barrier {
            self.probe.checkpoint_stall(started.elapsed());
        }
        let chain = &mut self.chain;
        self.probe.state(|| chain.state_size())?;
        send_all(&mut self.output, &mut self.out, &self.probe).await
    }
}

/// Runs one subtask's chained operators over its input until the end.
pub(crate) async fn run_chain(mut input: LaneInput, mut operators: ChainedOperators) -> Result<()> {
    while let Some(message) = input.next().await {
        let last = matches!(message, Message::End);
        if !operators.push(message).await? || last {
            break;
        }
    }
    Ok(())
}

/// Where a source task sends what it reads.
pub(crate) enum SourceOutput {
    /// A channel the next stage's subtask reads.
    Channel(mpsc::Sender<Message>),
    /// The operators of the source's own stage, run in the source's task.
    Chained(Box<ChainedOperators>),
}

impl SourceOutput {
    /// Sends `message` on; false once downstream stopped.
    pub async fn send(&mut self, message: Message) -> Result<bool> {
        match self {
            SourceOutput::Channel(sender) => Ok(sender.send(message).await.is_ok()),
            SourceOutput::Chained(operators) => operators.push(message).await,
        }
    }
}

/// One subtask of a two-input operator: the operator, the watermarks of its inputs
/// (kept here, not by the operator), and the chain after it.
pub struct TwoInputTask {
    operator: Box<dyn TwoInputOperator>,
    id: OperatorId,
    watermarks: InputWatermarks,
    /// The last watermark forwarded.
    emitted: Option<Watermark>,
    /// Which sides ended (left, right).
    ended: [bool; 2],
}

/// `state` with a two-input task's watermarks in its metadata.
fn tag_watermarks(
    state: RecordBatch,
    watermarks: &InputWatermarks,
    emitted: Option<Watermark>,
) -> Result<RecordBatch> {
    let state = crate::checkpoint::tag(state, LEFT_WATERMARK, watermarks.left)?;
    let state = crate::checkpoint::tag(state, RIGHT_WATERMARK, watermarks.right)?;
    crate::checkpoint::tag(state, EMITTED_WATERMARK, emitted)
}

/// Checkpoint metadata keys of the watermarks a two-input task keeps.
const LEFT_WATERMARK: &str = "left_watermark";
const RIGHT_WATERMARK: &str = "right_watermark";
const EMITTED_WATERMARK: &str = "emitted";

impl TwoInputTask {
    /// The task of `operator` (id `id`), restored from `restored` when the job resumes.
    pub fn new(
        mut operator: Box<dyn TwoInputOperator>,
        id: OperatorId,
        restored: Option<RecordBatch>,
    ) -> Result<Self> {
        let (mut watermarks, mut emitted) = (InputWatermarks::default(), None);
        if let Some(state) = restored {
            watermarks = InputWatermarks {
                left: crate::checkpoint::tagged(&state, LEFT_WATERMARK),
                right: crate::checkpoint::tagged(&state, RIGHT_WATERMARK),
            };
            emitted = crate::checkpoint::tagged(&state, EMITTED_WATERMARK);
            if state.num_columns() > 0 {
                let name = operator.name().to_string();
                match operator.state() {
                    OperatorState::Checkpointed(target) => target.restore(state)?,
                    _ => {
                        return Err(RuntimeError::Checkpoint(format!(
                            "the checkpoint holds state for {name}, which keeps none: it belongs to another job"
                        )))
                    }
                }
            }
        }
        Ok(Self {
            operator,
            id,
            watermarks,
            emitted,
            ended: [false, false],
        })
    }

    pub fn name(&self) -> String {
        self.operator.name().to_string()
    }

    /// About how many bytes of state the operator holds.
    pub fn state_size(&mut self) -> usize {
        self.operator.state().size()
    }

    /// The operator's state and the input watermarks, as one checkpoint batch.
    pub fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        let state = match self.operator.state() {
            OperatorState::Checkpointed(state) => state.snapshot()?,
            _ => None,
        };
        let state = state.unwrap_or_else(|| {
            RecordBatch::new_empty(Arc::new(datafusion::arrow::datatypes::Schema::empty()))
        });
        tag_watermarks(state, &self.watermarks, self.emitted).map(Some)
    }

    /// The operator starts tracking its changes, if it can, so that each checkpoint takes
    /// only them ([`TwoInputTask::increment`]). Called once, after any restore.
    pub fn track_increments(&mut self) {
        if let OperatorState::Checkpointed(state) = self.operator.state() {
            state.track_increments();
        }
    }

    /// What changed since the previous call, when the operator tracks its changes; its
    /// batch carries the input watermarks, as the newest link of a chain must.
    pub fn increment(&mut self) -> Result<Option<crate::operator::StateIncrement>> {
        let increment = match self.operator.state() {
            OperatorState::Checkpointed(state) => state.increment()?,
            _ => None,
        };
        let (watermarks, emitted) = (self.watermarks, self.emitted);
        Ok(increment.map(|increment| {
            let build = increment.build;
            crate::operator::StateIncrement {
                build: Box::new(move || tag_watermarks(build()?, &watermarks, emitted)),
                compact: increment.compact,
            }
        }))
    }

    /// Hands the operator's part of checkpoint `id` to `coordinator`: what changed since
    /// the previous barrier when it tracks that, else its whole state.
    fn checkpoint(&mut self, coordinator: &CheckpointCoordinator, id: CheckpointId) -> Result<()> {
        match self.increment()? {
            Some(increment) => coordinator.add_increment(id, self.id, increment),
            None => {
                if let Some(state) = self.snapshot()? {
                    coordinator.add_operator(id, self.id, state);
                }
            }
        }
        Ok(())
    }

    /// Handles a watermark of `side`; returns the one to forward, if it advances.
    fn watermark(
        &mut self,
        side: Side,
        watermark: Watermark,
        out: &mut Collector,
    ) -> Result<Option<Watermark>> {
        if !self.watermarks.advance(side, watermark) {
            return Ok(None);
        }
        let forward = self
            .operator
            .process_watermark(side, &self.watermarks, out)?
            .filter(|w| self.emitted.is_none_or(|e| *w > e));
        if forward.is_some() {
            self.emitted = forward;
        }
        Ok(forward)
    }

    /// Handles one message of `side` (not a barrier: the caller snapshots); what it
    /// emits, and the watermark to forward, go into `messages`. Returns whether the
    /// message was that side's end; after both sides ended, the operator has finished and
    /// `messages` ends with [`Message::End`].
    pub fn handle(
        &mut self,
        side: Side,
        message: Message,
        collector: &mut Collector,
        messages: &mut Vec<Message>,
    ) -> Result<bool> {
        match message {
            Message::Batch(batch) if batch.num_rows() > 0 => {
                self.operator
                    .process_batch(side, batch, &self.watermarks, collector)?;
                messages.extend(collector.take().map(Message::Batch));
            }
            Message::Batch(_) | Message::Barrier(_) => {}
            Message::Watermark(w) => {
                let forward = self.watermark(side, w, collector)?;
                messages.extend(collector.take().map(Message::Batch));
                messages.extend(forward.map(Message::Watermark));
            }
            // A join waits for both sides' watermarks, idle or not.
            Message::Idle => {}
            Message::End => {
                self.ended[side as usize] = true;
                if self.ended == [true, true] {
                    self.operator.finish(collector)?;
                    messages.extend(collector.take().map(Message::Batch));
                    messages.push(Message::End);
                }
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Runs over both inputs (group 0 of `inputs` the left, 1 the right) until both
    /// ended; what the operator emits goes through `chain` to `output`, its late rows to
    /// `late`.
    #[allow(clippy::too_many_arguments)]
    pub async fn run(
        mut self,
        mut inputs: MergedInputs,
        mut chain: OperatorChain,
        mut output: Exchange,
        late: LateRows,
        checkpoints: Option<Arc<CheckpointCoordinator>>,
        clock: Option<ProcessingTime>,
        mut probe: StageProbe,
    ) -> Result<()> {
        let mut ended = 0;
        let mut collector = Collector::new(late);
        let mut messages = Vec::new();
        let mut out = Vec::new();
        if checkpoints.as_ref().is_some_and(|c| c.incremental()) {
            self.track_increments();
        }
        while let Some((group, message)) = inputs.next().await {
            if let Message::Barrier(id) = message {
                if let Some(coordinator) = &checkpoints {
                    let started = std::time::Instant::now();
                    self.checkpoint(coordinator, id)?;
                    probe.checkpoint_stall(started.elapsed());
                }
                messages.push(Message::Barrier(id));
            } else {
                probe.received(&message);
                let side = if group == 0 { Side::Left } else { Side::Right };
                if self.handle(side, message, &mut collector, &mut messages)? {
                    ended += 1;
                }
            }
            for message in messages.drain(..) {
                if let (Some(clock), Message::Watermark(w)) = (&clock, &message) {
                    clock.set(*w);
                }
                chain.process(message, &mut out)?;
            }
            probe.state(|| self.operator.state().size() + chain.state_size())?;
            if !send_all(&mut output, &mut out, &probe).await? || ended == 2 {
                break;
            }
        }
        Ok(())
    }
}

/// The sink's task: writes rows, late rows and watermarks to the job's sinks and, when a
/// barrier arrives, completes the checkpoint (see [`CheckpointCommit`]).
pub(crate) struct SinkTask {
    pub input: LaneInput,
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
}

impl SinkTask {
    /// Writes until the input ends, or until `stop` says so (a stop without checkpoints:
    /// what the sink holds is written first).
    pub async fn run(mut self, mut stop: tokio::sync::oneshot::Receiver<()>) -> Result<()> {
        let mut stopping = false;
        let timer_interval = self.sink.timer_interval();
        let mut timer = tokio::time::interval(timer_interval.unwrap_or(Duration::from_secs(3600)));
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let message = tokio::select! {
                biased;
                _ = timer.tick(), if timer_interval.is_some() => {
                    self.sink.on_timer().await?;
                    continue;
                }
                signal = &mut stop, if !stopping => {
                    stopping = true;
                    if signal.is_ok() {
                        self.write_set_aside_rows().await?;
                        self.finish().await?;
                        break;
                    }
                    continue;
                }
                message = self.input.next() => message,
            };
            let Some(message) = message else { break };
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
                    break;
                }
            }
        }
        Ok(())
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
