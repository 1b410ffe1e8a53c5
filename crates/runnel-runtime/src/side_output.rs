//! [`LateRows`]: the job's late-data side output. Operators that drop rows as late put
//! them here (through their [`crate::Collector`]) when the job routes late rows to a
//! table (`SET 'runnel.late-data.sink'`); the sink task writes them to that table.
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

/// A queue of late rows shared by a job's operators and its sink task. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct LateRows {
    queue: Arc<LateQueue>,
}

#[derive(Debug, Default)]
struct LateQueue {
    batches: Mutex<VecDeque<RecordBatch>>,
    /// Whether `batches` may hold something (saves the lock when it does not).
    filled: AtomicBool,
}

impl LateRows {
    /// Adds rows dropped as late.
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
