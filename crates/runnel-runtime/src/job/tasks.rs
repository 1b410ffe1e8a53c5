//! The loops of a job's tasks (besides the source readers, see [`crate::source`], and
//! the sink, see [`super::sink`]): a chain of one-input operators, a two-input operator
//! with its chain; and [`ChainedOperators`], the chain a source reader runs in its own
//! task.
//!
//! Each loop reads its input channels as one stream ([`LaneInput`], [`MergedInputs`]),
//! runs the operators, and sends what they emit on ([`ChainOutput`]): through an
//! [`Exchange`], or into the job's sink when the subtask alone feeds it. A send that
//! fails means the downstream task stopped: the loop ends quietly and that task reports
//! why.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use tokio::sync::mpsc;

use super::sink::{SinkSignal, SinkWriter};
use crate::chain::OperatorChain;
use crate::checkpoint::{CheckpointCoordinator, CheckpointId};
use crate::error::{Result, RuntimeError};
use crate::exchange::{Exchange, MergedInputs};
use crate::graph::OperatorId;
use crate::message::{Message, Watermark};
use crate::metrics::StageProbe;
use crate::operator::{Collector, InputWatermarks, OperatorState, Side, TwoInputOperator};
use crate::processing_time::ProcessingTime;
use crate::side_output::LateRows;

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

/// Where a subtask sends what its operators emit.
pub(crate) enum ChainOutput {
    /// To the next stage's subtasks.
    Exchange(Exchange),
    /// Into the job's sink, run in this subtask's task: it alone feeds the sink (see
    /// [`super::sink`]).
    Sink(Box<SinkWriter>),
}

impl ChainOutput {
    /// Sends `message` on; false once downstream stopped (or the sink wrote the end).
    async fn send(&mut self, message: Message) -> Result<bool> {
        match self {
            ChainOutput::Exchange(exchange) => exchange.send(message).await,
            ChainOutput::Sink(writer) => writer.write(message).await,
        }
    }

    /// Whether the job's sink runs here.
    pub fn holds_sink(&self) -> bool {
        matches!(self, ChainOutput::Sink(_))
    }

    /// The sink's next timer tick or the job's stop, when the sink runs here; otherwise
    /// never. Cancel-safe (see [`SinkWriter::signal`]).
    pub async fn signal(&mut self) -> SinkSignal {
        match self {
            ChainOutput::Sink(writer) => writer.signal().await,
            ChainOutput::Exchange(_) => std::future::pending().await,
        }
    }

    /// Acts on `signal`; true when the job stopped and the task should end.
    pub async fn on_signal(&mut self, signal: SinkSignal) -> Result<bool> {
        match self {
            ChainOutput::Sink(writer) => writer.on_signal(signal).await,
            ChainOutput::Exchange(_) => Ok(false),
        }
    }
}

/// Sends `out`'s messages on, counting them and the time spent waiting for room into
/// `probe`; false once downstream stopped.
async fn send_all(
    output: &mut ChainOutput,
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
    pub output: ChainOutput,
    /// On processing time: `PROCTIME()` reads the watermark sent before each batch.
    clock: Option<ProcessingTime>,
    probe: StageProbe,
    /// What the chain emitted, not sent yet.
    out: Vec<Message>,
}

impl ChainedOperators {
    pub fn new(
        chain: OperatorChain,
        output: ChainOutput,
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

/// Runs one subtask's chained operators over its input until the end (or until the job
/// stops, when the sink runs here).
pub(crate) async fn run_chain(mut input: LaneInput, mut operators: ChainedOperators) -> Result<()> {
    loop {
        let message = tokio::select! {
            biased;
            signal = operators.output.signal() => {
                if operators.output.on_signal(signal).await? {
                    break;
                }
                continue;
            }
            message = input.next() => message,
        };
        let Some(message) = message else { break };
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

    /// See [`ChainOutput::signal`]: never, unless the sink runs in the source's task.
    pub async fn signal(&mut self) -> SinkSignal {
        match self {
            SourceOutput::Chained(operators) => operators.output.signal().await,
            SourceOutput::Channel(_) => std::future::pending().await,
        }
    }

    /// See [`ChainOutput::on_signal`].
    pub async fn on_signal(&mut self, signal: SinkSignal) -> Result<bool> {
        match self {
            SourceOutput::Chained(operators) => operators.output.on_signal(signal).await,
            SourceOutput::Channel(_) => Ok(false),
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
    /// ended (or the job stops, when the sink runs here); what the operator emits goes through `chain` to `output`, its late rows to
    /// `late`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn run(
        mut self,
        mut inputs: MergedInputs,
        mut chain: OperatorChain,
        mut output: ChainOutput,
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
        loop {
            let next = tokio::select! {
                biased;
                signal = output.signal() => {
                    if output.on_signal(signal).await? {
                        break;
                    }
                    continue;
                }
                next = inputs.next() => next,
            };
            let Some((group, message)) = next else { break };
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
