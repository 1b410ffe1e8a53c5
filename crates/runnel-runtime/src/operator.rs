//! The operator contract: what every streaming operator does, and what only the runtime
//! does.
//!
//! An operator is synchronous and works on whole Arrow batches. The runtime calls it from
//! one task, in the order messages arrive, and owns everything that is not data:
//! - **Output**: an operator puts rows into a [`Collector`] — batches for the next
//!   operator, late rows for the job's late-data side output. It cannot send watermarks,
//!   barriers or the end of the stream.
//! - **Watermarks**: an operator gets each new watermark and *returns* the one to
//!   forward (the same, a held-back one, or none); the runtime sends it after the rows
//!   the operator emitted. For a [`TwoInputOperator`] the runtime keeps both inputs'
//!   watermarks ([`InputWatermarks`]) and calls it when either advances.
//! - **State**: [`StreamOperator::state`] has no default, so every operator says whether
//!   it keeps state and, if so, hands it out for checkpoints ([`CheckpointedState`]). A
//!   stateful operator cannot silently lose its state on restore by forgetting a method.
//! - **Barriers and the end**: the runtime snapshots an operator when a barrier passes it
//!   and calls [`StreamOperator::finish`] when its input ended.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;

use crate::error::Result;
use crate::message::Watermark;
use crate::side_output::LateRows;

/// What every operator has, whatever its inputs.
pub trait StreamOperator: Send {
    /// Short name for errors and plans, e.g. `Filter`.
    fn name(&self) -> &str;

    /// The operator's state: whether it keeps any, and the state itself for checkpoints
    /// and the state-size metric. Required, so no stateful operator forgets it.
    fn state(&mut self) -> OperatorState<'_>;

    /// The input ended (every input, for a two-input operator): emit anything still held.
    fn finish(&mut self, _out: &mut Collector) -> Result<()> {
        Ok(())
    }
}

/// A streaming operator with one input (filter, projection, windows, aggregates, ...).
pub trait OneInputOperator: StreamOperator {
    /// Handles one non-empty batch of input rows.
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()>;

    /// Handles a watermark: emits what it completes and frees that state; returns the
    /// watermark to forward (by default the same one).
    fn process_watermark(
        &mut self,
        watermark: Watermark,
        _out: &mut Collector,
    ) -> Result<Option<Watermark>> {
        Ok(Some(watermark))
    }
}

/// Which input of a [`TwoInputOperator`] a batch or watermark came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Left,
    Right,
}

/// The watermark of each input of a two-input operator, kept by the runtime (`None`
/// until that input sent one). Each only moves forward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InputWatermarks {
    pub left: Option<Watermark>,
    pub right: Option<Watermark>,
}

impl InputWatermarks {
    /// The watermark of `side`.
    pub fn of(&self, side: Side) -> Option<Watermark> {
        match side {
            Side::Left => self.left,
            Side::Right => self.right,
        }
    }

    /// The minimum of both, once both inputs sent one.
    pub fn min(&self) -> Option<Watermark> {
        Some(self.left?.min(self.right?))
    }

    /// Moves `side` to `watermark`; false (and no change) when that is no advance.
    pub fn advance(&mut self, side: Side, watermark: Watermark) -> bool {
        let slot = match side {
            Side::Left => &mut self.left,
            Side::Right => &mut self.right,
        };
        if slot.is_some_and(|w| w >= watermark) {
            return false;
        }
        *slot = Some(watermark);
        true
    }
}

/// A streaming operator with two inputs (joins).
pub trait TwoInputOperator: StreamOperator {
    /// Handles one non-empty batch of rows from `side`; `watermarks` are both inputs' now.
    fn process_batch(
        &mut self,
        side: Side,
        batch: RecordBatch,
        watermarks: &InputWatermarks,
        out: &mut Collector,
    ) -> Result<()>;

    /// The watermark of `advanced` moved forward (`watermarks` holds both inputs'):
    /// emits what that completes; returns the watermark to forward, at most the minimum
    /// of both. The runtime forwards it only when it is beyond the last one forwarded.
    fn process_watermark(
        &mut self,
        advanced: Side,
        watermarks: &InputWatermarks,
        out: &mut Collector,
    ) -> Result<Option<Watermark>>;
}

/// What an operator keeps between messages.
pub enum OperatorState<'a> {
    /// Nothing: a restarted job rebuilds the operator as it was.
    Stateless,
    /// State rebuilt when the job starts rather than checkpointed (a lookup join's table,
    /// read whole at start), of about `bytes`.
    Rebuilt { bytes: usize },
    /// State written into checkpoints and restored from them.
    Checkpointed(&'a mut dyn CheckpointedState),
}

impl OperatorState<'_> {
    /// About how many bytes of state the operator holds now.
    pub fn size(&self) -> usize {
        match self {
            OperatorState::Stateless => 0,
            OperatorState::Rebuilt { bytes } => *bytes,
            OperatorState::Checkpointed(state) => state.size(),
        }
    }
}

/// The state of a stateful operator, as checkpoints see it.
pub trait CheckpointedState {
    /// About how many bytes the state holds now (rows, keys, accumulators), for the job's
    /// state-size metric. Cheap to call.
    fn size(&self) -> usize;

    /// The state when a checkpoint barrier passes, as one batch (`None` when it holds
    /// nothing now). The operator goes on running afterwards with the same state.
    fn snapshot(&mut self) -> Result<Option<RecordBatch>>;

    /// Takes back what [`CheckpointedState::snapshot`] returned, before any message. A
    /// state that tracks increments also takes a chain — a snapshot, then the
    /// increments after it, oldest first — as their rows concatenated under the newest
    /// one's schema (metadata included).
    fn restore(&mut self, state: RecordBatch) -> Result<()>;

    /// Starts keeping what changes from now on, so that each checkpoint can take only
    /// that ([`CheckpointedState::increment`]). Called once, after any restore, when the
    /// job's checkpoints are incremental; returns whether the state supports it (the
    /// default: no, it is snapshotted whole).
    fn track_increments(&mut self) -> bool {
        false
    }

    /// What changed since the previous checkpoint (or since tracking started), handed
    /// over at a barrier as an immutable view: the operator goes on at once, and the
    /// view is turned into a batch off the task. `None` when increments are not tracked.
    fn increment(&mut self) -> Result<Option<StateIncrement>> {
        Ok(None)
    }
}

/// Builds an increment's batch, off the operator's task.
pub type BuildIncrement = Box<dyn FnOnce() -> Result<RecordBatch> + Send>;

/// Merges a chain (a snapshot then its increments, oldest first) into one snapshot.
pub type CompactChain = Arc<dyn Fn(Vec<RecordBatch>) -> Result<RecordBatch> + Send + Sync>;

/// The part of a checkpoint that changed in one operator's state.
pub struct StateIncrement {
    /// Turns the changes into the batch the checkpoint writes: for an aggregate, the
    /// partial aggregates of the keys that changed. Chained after the previous
    /// checkpoint's snapshot and increments, it restores the state as of the barrier.
    pub build: BuildIncrement,
    /// Merges a chain into one full snapshot (what `restore` would take), so that a
    /// chain can be shortened in the background without the operator.
    pub compact: CompactChain,
}

/// Where an operator puts what it produces: batches for the next operator, and late
/// rows for the job's late-data side output. Nothing else can pass through it.
#[derive(Debug, Default)]
pub struct Collector {
    batches: Vec<RecordBatch>,
    late: LateRows,
}

impl Collector {
    /// A collector whose late rows go to `late` (the job's side output).
    pub fn new(late: LateRows) -> Self {
        Self {
            batches: Vec::new(),
            late,
        }
    }

    /// Emits `batch` to the next operator (an empty batch is dropped).
    pub fn emit(&mut self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.batches.push(batch);
        }
    }

    /// Sends rows dropped as late, already in the late-data sink's columns, to the job's
    /// late-data side output.
    pub fn emit_late(&mut self, rows: RecordBatch) {
        self.late.push(rows);
    }

    /// The batches emitted since the last call, in order.
    pub fn take(&mut self) -> std::vec::Drain<'_, RecordBatch> {
        self.batches.drain(..)
    }

    /// The late-rows side output this collector writes to.
    pub fn late_rows(&self) -> &LateRows {
        &self.late
    }
}
