//! Per-job counters, shared by the job's tasks and readable while it runs.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Counters of one running job. Everything dropped is counted here: nothing is lost silently.
#[derive(Debug)]
pub struct JobMetrics {
    /// Rows the sources produced.
    pub rows_in: AtomicU64,
    /// Rows the sink received.
    pub rows_out: AtomicU64,
    /// Rows that arrived after their window (or frame, or session) was final: dropped, or
    /// written to the late-data sink.
    pub late_rows: AtomicU64,
    /// Of the late rows, those written to the late-data sink.
    pub late_rows_routed: AtomicU64,
    /// Records that could not be decoded and were skipped (`'json.ignore-parse-errors'`).
    pub bad_records: AtomicU64,
    /// The job's watermark as it reached the sink (ms since epoch; `i64::MIN` before the first).
    pub watermark: AtomicI64,
    /// Checkpoints stored and committed.
    pub checkpoints: AtomicU64,
}

impl Default for JobMetrics {
    fn default() -> Self {
        Self {
            rows_in: AtomicU64::new(0),
            rows_out: AtomicU64::new(0),
            late_rows: AtomicU64::new(0),
            late_rows_routed: AtomicU64::new(0),
            bad_records: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
            checkpoints: AtomicU64::new(0),
        }
    }
}

/// A point-in-time copy of [`JobMetrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsSnapshot {
    pub rows_in: u64,
    pub rows_out: u64,
    pub late_rows: u64,
    pub late_rows_routed: u64,
    pub bad_records: u64,
    pub watermark: Option<i64>,
    pub checkpoints: u64,
}

impl JobMetrics {
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let watermark = self.watermark.load(Ordering::Relaxed);
        MetricsSnapshot {
            rows_in: self.rows_in.load(Ordering::Relaxed),
            rows_out: self.rows_out.load(Ordering::Relaxed),
            late_rows: self.late_rows.load(Ordering::Relaxed),
            late_rows_routed: self.late_rows_routed.load(Ordering::Relaxed),
            bad_records: self.bad_records.load(Ordering::Relaxed),
            watermark: (watermark != i64::MIN).then_some(watermark),
            checkpoints: self.checkpoints.load(Ordering::Relaxed),
        }
    }
}
