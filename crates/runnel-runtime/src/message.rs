//! What flows between tasks: [`Message`]s of batches, watermarks, idleness, barriers and
//! end-of-stream. Rows dropped as late do not travel here: they go to the job's
//! late-data side output ([`crate::side_output`]).

use datafusion::arrow::record_batch::RecordBatch;

/// Event time in milliseconds since the epoch; a watermark `w` promises that no more rows
/// with event time below `w` will arrive (rows that still do are late).
pub type Watermark = i64;

/// The watermark a finished source emits: every window is complete.
pub const WATERMARK_END: Watermark = i64::MAX;

/// One item on a channel between operators. Channels are bounded, so a slow consumer
/// slows its producers (backpressure).
#[derive(Debug, Clone)]
pub enum Message {
    /// Rows, in the schema of the producing operator.
    Batch(RecordBatch),
    /// Event time has advanced to this point; never decreases on one channel.
    Watermark(Watermark),
    /// Every partition the producer reads is idle: until its next rows or watermark, a
    /// task merging several inputs leaves it out of their minimum watermark (Flink's idle
    /// watermark status), so a parallel reader with nothing to read holds nothing back.
    Idle,
    /// Checkpoint barrier: every message before it belongs to checkpoint `n`'s epoch,
    /// every one after to the next. An operator snapshots its state when the barrier
    /// passes it (see [`crate::checkpoint`]).
    Barrier(crate::checkpoint::CheckpointId),
    /// The producer is done; nothing follows.
    End,
}
