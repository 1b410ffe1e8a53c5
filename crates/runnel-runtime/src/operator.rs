//! The [`Operator`] trait: a synchronous, batch-at-a-time step of a streaming pipeline.

use datafusion::arrow::record_batch::RecordBatch;

use crate::error::Result;
use crate::message::{Message, Watermark};

/// A streaming operator with one input. The runtime calls it from one task, in the order
/// messages arrive; it pushes what it produces into `out`.
///
/// Only [`Operator::process_batch`] is required. By default a watermark is forwarded
/// unchanged and the end of the input produces nothing more. Operators that hold state
/// keyed by event time (windows) override [`Operator::process_watermark`] to emit what
/// the watermark completes and free its state, then forward the watermark.
pub trait Operator: Send {
    /// Short name for errors and plans, e.g. `Filter`.
    fn name(&self) -> &str;

    /// Handles one batch of input rows.
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<Message>) -> Result<()>;

    /// Handles a watermark; must forward it (after any output it triggers).
    fn process_watermark(&mut self, watermark: Watermark, out: &mut Vec<Message>) -> Result<()> {
        out.push(Message::Watermark(watermark));
        Ok(())
    }

    /// The input ended: emit anything still held. `End` itself is sent by the runtime.
    fn finish(&mut self, _out: &mut Vec<Message>) -> Result<()> {
        Ok(())
    }

    /// About how many bytes of state the operator holds now (rows, keys, accumulators),
    /// for the job's state-size metric. Cheap to call; 0 for stateless operators.
    fn state_size(&self) -> usize {
        0
    }

    /// Whether the operator's state can be checkpointed (by [`Operator::snapshot`] and
    /// [`Operator::restore`]). Stateless operators can; a stateful operator says `false`
    /// until it implements both.
    fn checkpointable(&self) -> bool {
        true
    }

    /// The operator's state when a checkpoint barrier passes it, as one batch (`None`
    /// when it keeps none). The operator goes on running afterwards with the same state.
    fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        Ok(None)
    }

    /// Takes back the state [`Operator::snapshot`] returned, before any message arrives.
    fn restore(&mut self, _state: RecordBatch) -> Result<()> {
        Err(crate::error::RuntimeError::Checkpoint(format!(
            "{} keeps no state to restore",
            self.name()
        )))
    }
}

/// Where a chain's operators put their snapshots: the job's coordinator and each
/// operator's id in the job.
pub struct ChainCheckpoints {
    pub coordinator: std::sync::Arc<crate::checkpoint::CheckpointCoordinator>,
    pub operator_ids: Vec<usize>,
}

/// Operators run back to back in one task (Flink's operator chaining): the output of
/// each feeds the next without a channel in between.
pub struct OperatorChain {
    operators: Vec<Box<dyn Operator>>,
    scratch: Vec<Message>,
    checkpoints: Option<ChainCheckpoints>,
}

impl OperatorChain {
    pub fn new(operators: Vec<Box<dyn Operator>>) -> Self {
        Self {
            operators,
            scratch: Vec::new(),
            checkpoints: None,
        }
    }

    /// Snapshots each operator into the job's checkpoints when a barrier passes it.
    pub fn with_checkpoints(mut self, checkpoints: Option<ChainCheckpoints>) -> Self {
        self.checkpoints = checkpoints;
        self
    }

    /// About how many bytes of state the chain's operators hold.
    pub fn state_size(&self) -> usize {
        self.operators.iter().map(|o| o.state_size()).sum()
    }

    /// Runs `message` through every operator; what the last one emits lands in `out`.
    pub fn process(&mut self, message: Message, out: &mut Vec<Message>) -> Result<()> {
        let mut pending = vec![message];
        for (index, operator) in self.operators.iter_mut().enumerate() {
            for message in pending.drain(..) {
                match message {
                    Message::Batch(batch) if batch.num_rows() > 0 => {
                        operator.process_batch(batch, &mut self.scratch)?
                    }
                    Message::Batch(_) => {}
                    pass @ (Message::Late(_) | Message::Idle) => self.scratch.push(pass),
                    Message::Barrier(id) => {
                        if let (Some(checkpoints), Some(state)) =
                            (&self.checkpoints, operator.snapshot()?)
                        {
                            let op = checkpoints.operator_ids[index];
                            checkpoints.coordinator.add_operator(id, op, state);
                        }
                        self.scratch.push(Message::Barrier(id));
                    }
                    Message::Watermark(w) => operator.process_watermark(w, &mut self.scratch)?,
                    Message::End => {
                        operator.finish(&mut self.scratch)?;
                        self.scratch.push(Message::End);
                    }
                }
            }
            std::mem::swap(&mut pending, &mut self.scratch);
        }
        out.append(&mut pending);
        Ok(())
    }
}

/// Which input of a [`TwoInputOperator`] a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Left,
    Right,
}

/// A streaming operator with two inputs (joins). The runtime calls it from one task with
/// each input's messages as they arrive, tagged with their side; the operator decides
/// which watermark to forward (at most the minimum of the two inputs').
pub trait TwoInputOperator: Send {
    /// Short name for errors and plans, e.g. `IntervalJoin`.
    fn name(&self) -> &str;

    /// Handles one batch of rows from `side`.
    fn process_batch(
        &mut self,
        side: Side,
        batch: RecordBatch,
        out: &mut Vec<Message>,
    ) -> Result<()>;

    /// Handles a watermark of `side`; forwards a watermark when the output's advances.
    fn process_watermark(
        &mut self,
        side: Side,
        watermark: Watermark,
        out: &mut Vec<Message>,
    ) -> Result<()>;

    /// Both inputs ended: emit anything still held. `End` itself is sent by the runtime.
    fn finish(&mut self, _out: &mut Vec<Message>) -> Result<()> {
        Ok(())
    }

    /// As [`Operator::state_size`].
    fn state_size(&self) -> usize {
        0
    }

    /// As [`Operator::checkpointable`].
    fn checkpointable(&self) -> bool {
        false
    }

    /// As [`Operator::snapshot`]; called once both inputs delivered the barrier.
    fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        Ok(None)
    }

    /// As [`Operator::restore`].
    fn restore(&mut self, _state: RecordBatch) -> Result<()> {
        Err(crate::error::RuntimeError::Checkpoint(format!(
            "{} keeps no state to restore",
            self.name()
        )))
    }
}
