//! [`OperatorChain`]: single-input operators run back to back in one task (Flink's
//! operator chaining), the output of each feeding the next without a channel.
//!
//! The chain is where the runtime's half of the operator contract lives for one-input
//! operators: it hands batches and watermarks to each operator, sends the watermark an
//! operator returns after the rows it emitted, snapshots each operator as a barrier
//! passes it, passes idleness on, and calls `finish` at the end.

use std::sync::Arc;

use crate::checkpoint::CheckpointCoordinator;
use crate::error::Result;
use crate::graph::OperatorId;
use crate::message::Message;
use crate::operator::{CheckpointedState, Collector, OneInputOperator, OperatorState};
use crate::side_output::LateRows;

/// One operator of a chain and the id its checkpoint state is filed under.
pub struct Chained {
    pub operator: Box<dyn OneInputOperator>,
    /// `None` for steps that keep no identity (the relabelling of a `UNION ALL`).
    pub id: Option<OperatorId>,
}

/// Operators run back to back in one task.
pub struct OperatorChain {
    operators: Vec<Chained>,
    collector: Collector,
    pending: Vec<Message>,
    next: Vec<Message>,
    /// Where snapshots go, when the job checkpoints.
    checkpoints: Option<Arc<CheckpointCoordinator>>,
}

impl OperatorChain {
    /// A chain of `operators` whose late rows go to `late`.
    pub fn new(operators: Vec<Chained>, late: LateRows) -> Self {
        Self {
            operators,
            collector: Collector::new(late),
            pending: Vec::new(),
            next: Vec::new(),
            checkpoints: None,
        }
    }

    /// Snapshots each operator into the job's checkpoints when a barrier passes it.
    /// With incremental checkpoints, the operators that can start tracking their changes.
    pub fn with_checkpoints(mut self, checkpoints: Option<Arc<CheckpointCoordinator>>) -> Self {
        if checkpoints.as_ref().is_some_and(|c| c.incremental()) {
            for chained in self.operators.iter_mut().filter(|c| c.id.is_some()) {
                if let OperatorState::Checkpointed(state) = chained.operator.state() {
                    state.track_increments();
                }
            }
        }
        self.checkpoints = checkpoints;
        self
    }

    /// About how many bytes of state the chain's operators hold.
    pub fn state_size(&mut self) -> usize {
        self.operators
            .iter_mut()
            .map(|c| c.operator.state().size())
            .sum()
    }

    /// Each operator's state now, by its place in the chain: `None` for one that keeps
    /// none or holds none now. The operators go on with the same state.
    pub fn snapshots(
        &mut self,
    ) -> Result<Vec<Option<datafusion::arrow::record_batch::RecordBatch>>> {
        self.operators
            .iter_mut()
            .map(|c| match c.operator.state() {
                OperatorState::Checkpointed(state) => state.snapshot(),
                _ => Ok(None),
            })
            .collect()
    }

    /// The checkpointed state of each operator, by its place in the chain (`None` for one
    /// that keeps none): for a runner that checkpoints the chain itself rather than
    /// through barriers, as a task run across processes does.
    pub fn states(&mut self) -> Vec<Option<&mut dyn CheckpointedState>> {
        self.operators
            .iter_mut()
            .map(|c| match c.operator.state() {
                OperatorState::Checkpointed(state) => Some(state),
                _ => None,
            })
            .collect()
    }

    /// Runs `message` through every operator; what the last one emits lands in `out`.
    pub fn process(&mut self, message: Message, out: &mut Vec<Message>) -> Result<()> {
        self.pending.push(message);
        for chained in &mut self.operators {
            for message in self.pending.drain(..) {
                let operator = chained.operator.as_mut();
                match message {
                    Message::Batch(batch) if batch.num_rows() > 0 => {
                        operator.process_batch(batch, &mut self.collector)?;
                        self.next.extend(self.collector.take().map(Message::Batch));
                    }
                    Message::Batch(_) => {}
                    Message::Watermark(w) => {
                        let forward = operator.process_watermark(w, &mut self.collector)?;
                        self.next.extend(self.collector.take().map(Message::Batch));
                        self.next.extend(forward.map(Message::Watermark));
                    }
                    Message::Barrier(id) => {
                        if let (Some(coordinator), Some(op)) = (&self.checkpoints, chained.id) {
                            if let OperatorState::Checkpointed(state) = operator.state() {
                                if let Some(increment) = state.increment()? {
                                    coordinator.add_increment(id, op, increment);
                                } else if let Some(snapshot) = state.snapshot()? {
                                    coordinator.add_operator(id, op, snapshot);
                                }
                            }
                        }
                        self.next.push(Message::Barrier(id));
                    }
                    Message::Idle => self.next.push(Message::Idle),
                    Message::End => {
                        operator.finish(&mut self.collector)?;
                        self.next.extend(self.collector.take().map(Message::Batch));
                        self.next.push(Message::End);
                    }
                }
            }
            std::mem::swap(&mut self.pending, &mut self.next);
        }
        out.append(&mut self.pending);
        Ok(())
    }
}
