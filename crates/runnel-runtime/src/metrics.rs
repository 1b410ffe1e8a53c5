//! Per-job counters, shared by the job's tasks and readable while it runs.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// Changes of a keyed changelog that said nothing new and were dropped: a repeat of
    /// the key's current row, or a delete of a key never seen.
    pub ignored_changes: AtomicU64,
    /// The job's watermark as it reached the sink (ms since epoch; `i64::MIN` before the first).
    pub watermark: AtomicI64,
    /// Checkpoints stored and committed.
    pub checkpoints: AtomicU64,
    /// The checkpoint the job resumed from (0: it started afresh).
    pub restored_checkpoint: AtomicU64,
    /// A job spread over processes: how many of its tasks this process owns now (-1: the
    /// job runs in this process alone).
    pub tasks_owned: AtomicI64,
    /// Each operator task's state size in bytes, as it last measured it.
    state_gauges: Mutex<Vec<Arc<AtomicU64>>>,
}

impl Default for JobMetrics {
    fn default() -> Self {
        Self {
            rows_in: AtomicU64::new(0),
            rows_out: AtomicU64::new(0),
            late_rows: AtomicU64::new(0),
            late_rows_routed: AtomicU64::new(0),
            bad_records: AtomicU64::new(0),
            ignored_changes: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
            checkpoints: AtomicU64::new(0),
            restored_checkpoint: AtomicU64::new(0),
            tasks_owned: AtomicI64::new(-1),
            state_gauges: Mutex::new(Vec::new()),
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
    pub ignored_changes: u64,
    pub watermark: Option<i64>,
    /// How far the watermark is behind the wall clock, in ms, when the snapshot was taken.
    pub watermark_lag_ms: Option<i64>,
    pub checkpoints: u64,
    /// The checkpoint the job resumed from, if it did not start afresh.
    pub restored_checkpoint: Option<u64>,
    /// About how many bytes of state the job's operators hold.
    pub state_bytes: u64,
    /// A job spread over processes: the tasks this process owns.
    pub tasks_owned: Option<u64>,
}

impl JobMetrics {
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A gauge one operator task reports its state size through.
    pub fn state_gauge(&self) -> StateGauge {
        let bytes = Arc::new(AtomicU64::new(0));
        self.state_gauges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(bytes.clone());
        StateGauge {
            bytes,
            measured: None,
        }
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let watermark = self.watermark.load(Ordering::Relaxed);
        let watermark = (watermark != i64::MIN).then_some(watermark);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let state_bytes = self
            .state_gauges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|g| g.load(Ordering::Relaxed))
            .sum();
        MetricsSnapshot {
            rows_in: self.rows_in.load(Ordering::Relaxed),
            rows_out: self.rows_out.load(Ordering::Relaxed),
            late_rows: self.late_rows.load(Ordering::Relaxed),
            late_rows_routed: self.late_rows_routed.load(Ordering::Relaxed),
            bad_records: self.bad_records.load(Ordering::Relaxed),
            ignored_changes: self.ignored_changes.load(Ordering::Relaxed),
            watermark,
            // The end-of-input watermark (i64::MAX) is no lag.
            watermark_lag_ms: watermark
                .filter(|w| *w < i64::MAX)
                .map(|w| now_ms.saturating_sub(w).max(0)),
            checkpoints: self.checkpoints.load(Ordering::Relaxed),
            restored_checkpoint: Some(self.restored_checkpoint.load(Ordering::Relaxed))
                .filter(|&id| id > 0),
            state_bytes,
            tasks_owned: u64::try_from(self.tasks_owned.load(Ordering::Relaxed)).ok(),
        }
    }
}

/// One operator task's state size, measured at most every [`StateGauge::EVERY`] (operators
/// sum their maps to answer, so not after every batch).
#[derive(Debug)]
pub struct StateGauge {
    bytes: Arc<AtomicU64>,
    measured: Option<Instant>,
}

impl StateGauge {
    pub const EVERY: Duration = Duration::from_millis(200);

    /// Records `measure()` if the last measurement is older than [`StateGauge::EVERY`].
    pub fn update(&mut self, measure: impl FnOnce() -> usize) {
        if self.measured.is_some_and(|at| at.elapsed() < Self::EVERY) {
            return;
        }
        self.measured = Some(Instant::now());
        self.bytes.store(measure() as u64, Ordering::Relaxed);
    }
}
