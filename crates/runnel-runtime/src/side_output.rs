//! [`RowQueue`]: rows set aside from the data channels for the sink task to write to a
//! table of their own: late rows ([`LateRows`]: operators that drop rows as late put them
//! here through their [`crate::Collector`] when the job routes late rows to a table,
//! `SET 'runnel.late-data.sink'`) and dead letters (records a source could not decode,
//! see [`crate::dead_letter`]).
//!
//! Late rows do not travel on the data channels, so no operator and no exchange handles
//! them. They still belong to the checkpoint epoch they were dropped in: an operator puts
//! them here before it forwards the next barrier, and the sink task drains the queue
//! before it handles any message (the barrier included), so every late row of an epoch
//! reaches the late-data sink before the checkpoint is stored.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::record_batch::RecordBatch;

/// A queue of rows shared by the tasks that set them aside and the sink task. Clones
/// share it.
#[derive(Debug, Clone, Default)]
pub struct RowQueue {
    queue: Arc<QueuedRows>,
}

/// The job's queue of late rows.
pub type LateRows = RowQueue;

#[derive(Debug, Default)]
struct QueuedRows {
    batches: Mutex<VecDeque<RecordBatch>>,
    /// Whether `batches` may hold something (saves the lock when it does not).
    filled: AtomicBool,
}

impl RowQueue {
    /// Adds rows (dropped as late, or dead letters).
    pub fn push(&self, rows: RecordBatch) {
        if rows.num_rows() == 0 {
            return;
        }
        let mut batches = self.queue.batches.lock().unwrap_or_else(|p| p.into_inner());
        batches.push_back(rows);
        self.queue.filled.store(true, Ordering::Release);
    }

    /// Every batch queued so far, oldest first.
    pub fn drain(&self) -> Vec<RecordBatch> {
        if !self.queue.filled.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut batches = self.queue.batches.lock().unwrap_or_else(|p| p.into_inner());
        self.queue.filled.store(false, Ordering::Release);
        batches.drain(..).collect()
    }
}
