//! Per-job counters, shared by the job's tasks and readable while it runs.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::graph::StageDescription;
use crate::memory::MemoryBudget;
use crate::message::{Message, WATERMARK_END};

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
    /// Records that could not be decoded and were skipped (`'json.ignore-parse-errors'`)
    /// or set aside as dead letters.
    pub bad_records: AtomicU64,
    /// Of the bad records, those written to a dead-letter table.
    pub dead_letters: AtomicU64,
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
    /// Times the job failed and was started again (its restart strategy).
    pub restarts: AtomicU64,
    /// The job's memory limit, and its state against it.
    pub memory: MemoryBudget,
    /// Each operator task's state size in bytes, as it last measured it.
    state_gauges: Mutex<Vec<Arc<AtomicU64>>>,
    /// The job graph's stages with their counters (empty for a job run across processes).
    stages: Mutex<Vec<Arc<StageMetrics>>>,
    /// The last [`CHECKPOINT_HISTORY`] checkpoints committed, oldest first.
    checkpoint_history: Mutex<std::collections::VecDeque<CheckpointRecord>>,
}

/// How many committed checkpoints [`JobMetrics::checkpoint_history`] keeps.
pub const CHECKPOINT_HISTORY: usize = 20;

/// One committed checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointRecord {
    pub id: u64,
    /// Bytes of state it stored.
    pub bytes: u64,
    /// From the barrier reaching the sink to the commit, in ms.
    pub duration_ms: u64,
    /// When it was committed, in ms since the epoch.
    pub committed_at_ms: i64,
}

impl Default for JobMetrics {
    fn default() -> Self {
        Self {
            rows_in: AtomicU64::new(0),
            rows_out: AtomicU64::new(0),
            late_rows: AtomicU64::new(0),
            late_rows_routed: AtomicU64::new(0),
            bad_records: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            ignored_changes: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
            checkpoints: AtomicU64::new(0),
            restored_checkpoint: AtomicU64::new(0),
            tasks_owned: AtomicI64::new(-1),
            restarts: AtomicU64::new(0),
            memory: MemoryBudget::default(),
            state_gauges: Mutex::new(Vec::new()),
            stages: Mutex::new(Vec::new()),
            checkpoint_history: Mutex::new(std::collections::VecDeque::new()),
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
    pub dead_letters: u64,
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
    /// Times the job failed and was started again.
    pub restarts: u64,
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

    /// Drops the state gauges of operator tasks that ended (a failed run's, before a
    /// restart), so their last sizes stop counting.
    pub fn forget_ended_tasks(&self) {
        self.state_gauges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|gauge| Arc::strong_count(gauge) > 1);
    }

    /// Counts a committed checkpoint.
    pub fn checkpoint_committed(&self, id: u64, bytes: u64, duration: Duration) {
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        let mut history = self
            .checkpoint_history
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if history.len() == CHECKPOINT_HISTORY {
            history.pop_front();
        }
        history.push_back(CheckpointRecord {
            id,
            bytes,
            duration_ms: duration.as_millis() as u64,
            committed_at_ms: now_ms(),
        });
    }

    /// What each operator (by checkpoint id) wrote into the last checkpoint, summed per
    /// stage.
    pub fn checkpoint_operator_bytes(&self, bytes: &std::collections::BTreeMap<usize, u64>) {
        let stages = self.stages.lock().unwrap_or_else(|p| p.into_inner());
        for stage in stages.iter() {
            let total = stage
                .description
                .operator_ids
                .iter()
                .filter_map(|op| bytes.get(op))
                .sum();
            stage.checkpoint_bytes.store(total, Ordering::Relaxed);
        }
    }

    /// The last committed checkpoints, oldest first.
    pub fn checkpoint_history(&self) -> Vec<CheckpointRecord> {
        self.checkpoint_history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }

    /// Counts the stages of `graph` from now on (called once, as the job starts).
    pub fn add_stages(&self, stages: Vec<StageDescription>) {
        let stages = stages
            .into_iter()
            .map(|description| Arc::new(StageMetrics::new(description)))
            .collect();
        *self.stages.lock().unwrap_or_else(|p| p.into_inner()) = stages;
    }

    /// A probe subtask `subtask` of stage `stage` counts through (one that counts nothing
    /// when the job has no such stage).
    pub fn stage_probe(self: &Arc<Self>, stage: usize, subtask: usize) -> StageProbe {
        let stage = self
            .stages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(stage)
            .cloned();
        StageProbe {
            stage,
            subtask,
            gauge: self.state_gauge(),
            job: self.clone(),
        }
    }

    /// Bytes of state the job's operators hold, as each last measured it.
    pub fn state_bytes(&self) -> u64 {
        self.state_gauges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|g| g.load(Ordering::Relaxed))
            .sum()
    }

    /// Each stage, named with its operators, and the state it holds.
    fn stage_states(&self) -> Vec<(String, u64)> {
        self.stages()
            .into_iter()
            .map(|stage| {
                let name = format!(
                    "stage {} ({})",
                    stage.description.id,
                    stage.description.operators.join(" → ")
                );
                (name, stage.state_bytes)
            })
            .collect()
    }

    /// Every stage with its counters now.
    pub fn stages(&self) -> Vec<StageSnapshot> {
        self.stages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|stage| stage.snapshot())
            .collect()
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let watermark = self.watermark.load(Ordering::Relaxed);
        let watermark = (watermark != i64::MIN).then_some(watermark);
        let now_ms = now_ms();
        let state_bytes = self.state_bytes();
        MetricsSnapshot {
            rows_in: self.rows_in.load(Ordering::Relaxed),
            rows_out: self.rows_out.load(Ordering::Relaxed),
            late_rows: self.late_rows.load(Ordering::Relaxed),
            late_rows_routed: self.late_rows_routed.load(Ordering::Relaxed),
            bad_records: self.bad_records.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
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
            restarts: self.restarts.load(Ordering::Relaxed),
        }
    }
}

/// The wall clock in ms since the epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
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

    /// Records `measure()` if the last measurement is older than [`StateGauge::EVERY`];
    /// returns what it recorded.
    pub fn update(&mut self, measure: impl FnOnce() -> usize) -> Option<u64> {
        if self.measured.is_some_and(|at| at.elapsed() < Self::EVERY) {
            return None;
        }
        self.measured = Some(Instant::now());
        let bytes = measure() as u64;
        self.bytes.store(bytes, Ordering::Relaxed);
        Some(bytes)
    }
}

/// One stage of a running job: what it runs (from the job graph) and what its subtasks
/// counted so far. Read while the job runs (the dashboard, `GET /v1/jobs/{id}`).
#[derive(Debug)]
pub struct StageMetrics {
    description: StageDescription,
    rows_in: AtomicU64,
    rows_out: AtomicU64,
    /// Time the subtasks waited for room downstream, summed over subtasks (ns): Flink's
    /// backpressure, as the share of time a task could not hand on its output.
    backpressured_ns: AtomicU64,
    /// Each subtask's last watermark out (`i64::MIN`: none yet).
    watermarks: Vec<AtomicI64>,
    /// Each subtask's state size in bytes, as last measured.
    state_bytes: Vec<AtomicU64>,
    /// Each subtask's pause at its last checkpoint barrier: the time it took to hand
    /// over its operators' state, while it processed nothing (ns).
    checkpoint_stall_ns: Vec<AtomicU64>,
    /// Bytes the stage's operators wrote into the last checkpoint.
    checkpoint_bytes: AtomicU64,
}

/// A point-in-time copy of [`StageMetrics`].
#[derive(Debug, Clone, PartialEq)]
pub struct StageSnapshot {
    pub description: StageDescription,
    pub rows_in: u64,
    pub rows_out: u64,
    pub backpressured_ms: u64,
    /// The stage's watermark: the least over its subtasks, once each has sent one.
    pub watermark: Option<i64>,
    pub state_bytes: u64,
    /// The longest pause of a subtask at the last checkpoint (its state's snapshot).
    pub checkpoint_stall_ms: f64,
    /// Bytes its operators wrote into the last checkpoint (an increment, when
    /// checkpoints are incremental).
    pub checkpoint_bytes: u64,
}

impl StageMetrics {
    fn new(description: StageDescription) -> Self {
        let subtasks = description.parallelism.max(1);
        Self {
            description,
            rows_in: AtomicU64::new(0),
            rows_out: AtomicU64::new(0),
            backpressured_ns: AtomicU64::new(0),
            watermarks: (0..subtasks).map(|_| AtomicI64::new(i64::MIN)).collect(),
            state_bytes: (0..subtasks).map(|_| AtomicU64::new(0)).collect(),
            checkpoint_stall_ns: (0..subtasks).map(|_| AtomicU64::new(0)).collect(),
            checkpoint_bytes: AtomicU64::new(0),
        }
    }

    fn snapshot(&self) -> StageSnapshot {
        let watermarks: Vec<i64> = self
            .watermarks
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .collect();
        StageSnapshot {
            description: self.description.clone(),
            rows_in: self.rows_in.load(Ordering::Relaxed),
            rows_out: self.rows_out.load(Ordering::Relaxed),
            checkpoint_bytes: self.checkpoint_bytes.load(Ordering::Relaxed),
            backpressured_ms: self.backpressured_ns.load(Ordering::Relaxed) / 1_000_000,
            checkpoint_stall_ms: self
                .checkpoint_stall_ns
                .iter()
                .map(|s| s.load(Ordering::Relaxed))
                .max()
                .unwrap_or(0) as f64
                / 1e6,
            watermark: watermarks
                .iter()
                .min()
                .copied()
                .filter(|w| *w != i64::MIN && *w != WATERMARK_END),
            state_bytes: self
                .state_bytes
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .sum(),
        }
    }
}

/// What one subtask counts into its stage's [`StageMetrics`] (and the job's state gauge).
#[derive(Debug)]
pub struct StageProbe {
    stage: Option<Arc<StageMetrics>>,
    subtask: usize,
    gauge: StateGauge,
    /// The job's counters, for its memory budget.
    job: Arc<JobMetrics>,
}

impl StageProbe {
    /// A message arrived.
    pub fn received(&self, message: &Message) {
        if let (Some(stage), Message::Batch(batch)) = (&self.stage, message) {
            stage
                .rows_in
                .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        }
    }

    /// The subtask is about to send `out` downstream.
    pub fn sending(&self, out: &[Message]) {
        let Some(stage) = &self.stage else { return };
        for message in out {
            match message {
                Message::Batch(batch) => {
                    stage
                        .rows_out
                        .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                }
                Message::Watermark(w) => self.watermark(*w),
                _ => {}
            }
        }
    }

    /// The subtask's watermark moved to `w` (a sink's, which sends nothing on).
    pub fn watermark(&self, w: i64) {
        if let Some(slot) = self
            .stage
            .as_ref()
            .and_then(|stage| stage.watermarks.get(self.subtask))
        {
            slot.store(w, Ordering::Relaxed);
        }
    }

    /// The subtask paused `stall` at a checkpoint barrier, handing over its state.
    pub fn checkpoint_stall(&self, stall: Duration) {
        if let Some(slot) = self
            .stage
            .as_ref()
            .and_then(|stage| stage.checkpoint_stall_ns.get(self.subtask))
        {
            slot.store(stall.as_nanos() as u64, Ordering::Relaxed);
        }
    }

    /// The subtask waited `waited` for room downstream.
    pub fn backpressured(&self, waited: Duration) {
        if let Some(stage) = &self.stage {
            stage
                .backpressured_ns
                .fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
        }
    }

    /// Records the subtask's state size now and then (see [`StateGauge::update`]).
    /// Measures the subtask's state (at most every [`StateGauge::EVERY`]) and checks the
    /// job's against its memory budget: over it, the error that fails the job.
    pub fn state(&mut self, measure: impl FnOnce() -> usize) -> Result<()> {
        let Some(bytes) = self.gauge.update(measure) else {
            return Ok(());
        };
        if let Some(slot) = self
            .stage
            .as_ref()
            .and_then(|stage| stage.state_bytes.get(self.subtask))
        {
            slot.store(bytes, Ordering::Relaxed);
        }
        let job = &self.job;
        job.memory.check(job.state_bytes(), || job.stage_states())
    }
}
