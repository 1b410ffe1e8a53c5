//! Checkpoints: consistent snapshots of a running job, from which it resumes after a
//! crash.
//!
//! Every interval the [`CheckpointCoordinator`] triggers checkpoint `n`. Each source task
//! records its position (the next offset of every partition) and watermarks, then sends
//! `Barrier(n)` downstream after the rows it has read; each operator snapshots its state
//! when the barrier passes it. When the barrier reaches the sink, every part of
//! checkpoint `n` has been contributed, and the sink task stores it: one Arrow IPC file per
//! stateful operator and, last, `_manifest.json` — a checkpoint without its manifest is
//! ignored. Then the sink makes the epoch's output final (for exactly-once, it commits the
//! Kafka transaction carrying the epoch's output and source offsets).
//!
//! Layout: `<dir>/chk-<n>/op-<id>.arrow`, `<dir>/chk-<n>/_manifest.json`. The newest
//! [`RETAINED`] complete checkpoints are kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::{Result, RuntimeError};

/// Checkpoints are numbered from 1 in the order they are taken.
pub type CheckpointId = u64;

/// Complete checkpoints kept in the directory.
pub const RETAINED: usize = 3;

/// Where one source of the job stands in a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SourceState {
    /// The table read.
    pub table: String,
    /// Per partition, the offset of the next record to read (`None`: nothing read yet).
    pub offsets: Vec<Option<i64>>,
    /// Per partition, the watermark reached (`None`: none yet).
    pub watermarks: Vec<Option<i64>>,
    /// The source had read all its input when the checkpoint was taken (bounded reads).
    #[serde(default)]
    pub finished: bool,
}

/// What a complete checkpoint holds, written last.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub id: CheckpointId,
    /// A fingerprint of the job's plan: a checkpoint restores only into the same job.
    pub job: String,
    /// Every source, in the order the job reads them.
    pub sources: Vec<SourceState>,
    /// Operators (by id) whose state is in `op-<id>.arrow`.
    pub operators: Vec<usize>,
    /// Wall-clock time it was stored, in ms since the epoch.
    pub stored_at_ms: i64,
    /// Bytes of state written.
    pub state_bytes: u64,
}

/// A checkpoint read back: its manifest and each operator's state.
#[derive(Debug, Clone)]
pub struct RestoredCheckpoint {
    pub manifest: Manifest,
    pub operators: BTreeMap<usize, RecordBatch>,
}

impl RestoredCheckpoint {
    /// The state of source number `index` (in the job's reading order).
    pub fn source(&self, index: usize) -> Option<&SourceState> {
        self.manifest.sources.get(index)
    }
}

/// The checkpoint directory of one job.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Checkpoint(format!("{}: {e}", path.display()))
}

impl CheckpointStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn checkpoint_dir(&self, id: CheckpointId) -> PathBuf {
        self.dir.join(format!("chk-{id:06}"))
    }

    /// Ids of the complete checkpoints (those with a manifest), oldest first.
    pub fn complete(&self) -> Vec<CheckpointId> {
        self.all()
            .into_iter()
            .filter(|&id| self.checkpoint_dir(id).join("_manifest.json").exists())
            .collect()
    }

    /// Ids of every checkpoint folder, complete or not, oldest first.
    fn all(&self) -> Vec<CheckpointId> {
        let mut ids: Vec<CheckpointId> = std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()
                            .and_then(|n| n.strip_prefix("chk-"))
                            .and_then(|n| n.parse().ok())
                    })
                    .collect()
            })
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// Reads checkpoint `id` back.
    pub fn load(&self, id: CheckpointId) -> Result<RestoredCheckpoint> {
        let folder = self.checkpoint_dir(id);
        let path = folder.join("_manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| io_error(&path, e))?;
        let mut operators = BTreeMap::new();
        for &op in &manifest.operators {
            let path = folder.join(format!("op-{op}.arrow"));
            let file = std::fs::File::open(&path).map_err(|e| io_error(&path, e))?;
            let reader = FileReader::try_new(file, None).map_err(|e| io_error(&path, e))?;
            let schema = reader.schema();
            let batches = reader
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| io_error(&path, e))?;
            let batch = datafusion::arrow::compute::concat_batches(&schema, &batches)
                .map_err(|e| io_error(&path, e))?;
            operators.insert(op, batch);
        }
        Ok(RestoredCheckpoint {
            manifest,
            operators,
        })
    }

    /// Writes checkpoint `manifest.id`: operator states first (synced), the manifest
    /// last (written aside, synced, then renamed into place).
    fn store(
        &self,
        mut manifest: Manifest,
        states: &BTreeMap<usize, RecordBatch>,
    ) -> Result<Manifest> {
        let folder = self.checkpoint_dir(manifest.id);
        std::fs::create_dir_all(&folder).map_err(|e| io_error(&folder, e))?;
        let mut bytes = 0;
        for (op, batch) in states {
            let path = folder.join(format!("op-{op}.arrow"));
            let file = std::fs::File::create(&path).map_err(|e| io_error(&path, e))?;
            let mut writer =
                FileWriter::try_new(file, &batch.schema()).map_err(|e| io_error(&path, e))?;
            writer.write(batch).map_err(|e| io_error(&path, e))?;
            writer.finish().map_err(|e| io_error(&path, e))?;
            let file = writer.into_inner().map_err(|e| io_error(&path, e))?;
            file.sync_all().map_err(|e| io_error(&path, e))?;
            bytes += file.metadata().map(|m| m.len()).unwrap_or(0);
        }
        manifest.operators = states.keys().copied().collect();
        manifest.state_bytes = bytes;
        let text = serde_json::to_vec_pretty(&manifest).map_err(|e| io_error(&folder, e))?;
        let aside = folder.join("_manifest.json.tmp");
        std::fs::write(&aside, &text).map_err(|e| io_error(&aside, e))?;
        std::fs::File::open(&aside)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_error(&aside, e))?;
        let path = folder.join("_manifest.json");
        std::fs::rename(&aside, &path).map_err(|e| io_error(&path, e))?;
        if let Ok(dir) = std::fs::File::open(&folder) {
            let _ = dir.sync_all();
        }
        Ok(manifest)
    }

    /// Deletes every checkpoint folder but the newest [`RETAINED`] complete ones (and
    /// incomplete folders older than the newest complete one).
    pub fn prune(&self) {
        let complete = self.complete();
        let keep: Vec<CheckpointId> = complete.iter().rev().take(RETAINED).copied().collect();
        let newest = complete.last().copied().unwrap_or(0);
        for id in self.all() {
            if !keep.contains(&id) && id < newest {
                let _ = std::fs::remove_dir_all(self.checkpoint_dir(id));
            }
        }
    }

    /// Deletes checkpoints newer than `id` (taken but never committed, after a restart
    /// from `id`).
    pub fn discard_after(&self, id: CheckpointId) {
        for newer in self.all().into_iter().filter(|&n| n > id) {
            let _ = std::fs::remove_dir_all(self.checkpoint_dir(newer));
        }
    }
}

/// How often and where a job checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    pub dir: PathBuf,
    pub interval: Duration,
}

/// The parts of a checkpoint contributed so far.
#[derive(Default)]
struct PendingCheckpoint {
    sources: BTreeMap<usize, SourceState>,
    operators: BTreeMap<usize, RecordBatch>,
}

/// Triggers a running job's checkpoints and gathers their parts.
pub struct CheckpointCoordinator {
    store: CheckpointStore,
    job: String,
    /// The checkpoint the job resumed from (0 for a fresh start): ids after it are this
    /// run's.
    first: CheckpointId,
    source_count: usize,
    trigger: watch::Sender<CheckpointId>,
    pending: Mutex<BTreeMap<CheckpointId, PendingCheckpoint>>,
    /// Sources that ended, with their final state: they stand there in every later
    /// checkpoint.
    finished: Mutex<BTreeMap<usize, SourceState>>,
    /// Whether the injected checkpoint (see `FaultInjection`) was taken.
    injected: std::sync::atomic::AtomicBool,
    /// The newest checkpoint committed.
    completed: std::sync::atomic::AtomicU64,
}

impl CheckpointCoordinator {
    /// A coordinator for `job` (a plan fingerprint) reading `source_count` sources,
    /// numbering checkpoints after `last` (the one restored, or 0).
    pub fn new(
        store: CheckpointStore,
        job: String,
        source_count: usize,
        last: CheckpointId,
    ) -> Arc<Self> {
        let (trigger, _) = watch::channel(last);
        Arc::new(Self {
            store,
            job,
            first: last,
            source_count,
            trigger,
            pending: Mutex::new(BTreeMap::new()),
            finished: Mutex::new(BTreeMap::new()),
            injected: std::sync::atomic::AtomicBool::new(false),
            completed: std::sync::atomic::AtomicU64::new(last),
        })
    }

    /// The id before this run's first checkpoint: a source sends a barrier for every id
    /// after it, even those triggered before the source started.
    pub fn first(&self) -> CheckpointId {
        self.first
    }

    /// What source tasks watch: the id of the newest checkpoint triggered.
    pub fn subscribe(&self) -> watch::Receiver<CheckpointId> {
        self.trigger.subscribe()
    }

    /// Starts the next checkpoint; returns its id.
    pub fn trigger(&self) -> CheckpointId {
        let mut id = 0;
        self.trigger.send_modify(|last| {
            *last += 1;
            id = *last;
        });
        id
    }

    /// Triggers the next checkpoint unless one is still in flight (one at a time, so a
    /// slow sink is not flooded with barriers); returns its id.
    pub fn trigger_if_idle(&self) -> Option<CheckpointId> {
        let completed = self.completed.load(std::sync::atomic::Ordering::SeqCst);
        if *self.trigger.borrow() > completed {
            return None;
        }
        Some(self.trigger())
    }

    /// Checkpoint `id` is committed.
    pub fn committed(&self, id: CheckpointId) {
        self.completed
            .fetch_max(id, std::sync::atomic::Ordering::SeqCst);
    }

    /// Triggers a checkpoint the first time it is called (fault injection); later calls
    /// do nothing.
    pub fn trigger_once(&self) {
        if !self
            .injected
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            self.trigger();
        }
    }

    fn with_pending<T>(&self, id: CheckpointId, f: impl FnOnce(&mut PendingCheckpoint) -> T) -> T {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        f(pending.entry(id).or_default())
    }

    /// Source number `index` reached the barrier of checkpoint `id` in `state`.
    pub fn add_source(&self, id: CheckpointId, index: usize, state: SourceState) {
        self.with_pending(id, |p| {
            p.sources.insert(index, state);
        });
    }

    /// Source number `index` ended in `state`: later checkpoints take that state for it.
    pub fn source_finished(&self, index: usize, mut state: SourceState) {
        state.finished = true;
        let mut finished = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        finished.insert(index, state);
    }

    /// Operator `op` snapshotted `state` for checkpoint `id`.
    pub fn add_operator(&self, id: CheckpointId, op: usize, state: RecordBatch) {
        self.with_pending(id, |p| {
            p.operators.insert(op, state);
        });
    }

    /// Stores checkpoint `id` (its barrier reached the sink, so every part is in):
    /// blocking file I/O, run it off the async workers.
    pub fn store(&self, id: CheckpointId) -> Result<Manifest> {
        let mut pending = {
            let mut all = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            all.remove(&id).unwrap_or_default()
        };
        {
            let finished = self.finished.lock().unwrap_or_else(|p| p.into_inner());
            for (index, state) in finished.iter() {
                pending
                    .sources
                    .entry(*index)
                    .or_insert_with(|| state.clone());
            }
        }
        if pending.sources.len() != self.source_count {
            return Err(RuntimeError::Checkpoint(format!(
                "checkpoint {id} reached the sink with {} of {} sources' positions",
                pending.sources.len(),
                self.source_count
            )));
        }
        let manifest = Manifest {
            id,
            job: self.job.clone(),
            sources: pending.sources.into_values().collect(),
            operators: Vec::new(),
            stored_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            state_bytes: 0,
        };
        self.store.store(manifest, &pending.operators)
    }

    /// Deletes checkpoints beyond the retained ones.
    pub fn prune(&self) {
        self.store.prune();
    }
}

/// The sink task's part of a checkpoint. When barrier `n` reaches the sink, every
/// operator and source has contributed its part of checkpoint `n`: the sinks flush, the
/// checkpoint is stored (the manifest last), and the sink makes the epoch's output final
/// (for exactly-once, it commits the Kafka transaction carrying the epoch's output and
/// source offsets). Only then is the checkpoint counted as committed.
pub(crate) struct CheckpointCommit {
    pub coordinator: Arc<CheckpointCoordinator>,
    pub metrics: Arc<crate::metrics::JobMetrics>,
    pub faults: crate::config::FaultInjection,
}

impl CheckpointCommit {
    /// Completes checkpoint `id` with the job's `sink` and its `side_sinks` (the tables
    /// late rows and dead letters go to). The side sinks commit before the main one: a
    /// crash between the two replays the epoch, repeating side rows rather than losing
    /// them.
    pub async fn complete(
        &self,
        id: CheckpointId,
        sink: &mut Box<dyn crate::sink::Sink>,
        mut side_sinks: Vec<&mut Box<dyn crate::sink::Sink>>,
    ) -> Result<()> {
        let started = std::time::Instant::now();
        sink.prepare_checkpoint(id).await?;
        for side_sink in &mut side_sinks {
            side_sink.prepare_checkpoint(id).await?;
        }
        let stored = {
            let coordinator = self.coordinator.clone();
            tokio::task::spawn_blocking(move || coordinator.store(id))
                .await
                .map_err(|e| RuntimeError::Task(e.to_string()))??
        };
        tracing::info!(
            checkpoint = id,
            bytes = stored.state_bytes,
            "checkpoint stored"
        );
        if let Some(pause) = self.faults.pause_before_commit {
            tokio::time::sleep(pause).await;
        }
        for side_sink in &mut side_sinks {
            side_sink.commit_checkpoint(&stored).await?;
        }
        sink.commit_checkpoint(&stored).await?;
        self.metrics
            .checkpoint_committed(id, stored.state_bytes, started.elapsed());
        self.coordinator.committed(id);
        // The longest a subtask stood still at this checkpoint's barrier.
        let stall_ms = self
            .metrics
            .stages()
            .iter()
            .map(|stage| stage.checkpoint_stall_ms)
            .fold(0.0, f64::max);
        tracing::info!(
            checkpoint = id,
            bytes = stored.state_bytes,
            millis = started.elapsed().as_millis() as u64,
            stall_ms,
            "checkpoint committed"
        );
        self.coordinator.prune();
        if self.faults.crash_after_checkpoint {
            return Err(RuntimeError::Task(format!(
                "simulated crash after checkpoint {id}"
            )));
        }
        Ok(())
    }
}

/// `state` with `key = value` in its schema's metadata (an operator's scalar state, such
/// as its watermark, travels with its rows).
pub fn tag(state: RecordBatch, key: &str, value: Option<i64>) -> Result<RecordBatch> {
    let Some(value) = value else {
        return Ok(state);
    };
    let mut metadata = state.schema().metadata().clone();
    metadata.insert(key.to_string(), value.to_string());
    let schema = Arc::new(state.schema().as_ref().clone().with_metadata(metadata));
    state
        .with_schema(schema)
        .map_err(|e| RuntimeError::Checkpoint(e.to_string()))
}

/// The value [`tag`] stored under `key`.
pub fn tagged(state: &RecordBatch, key: &str) -> Option<i64> {
    state.schema().metadata().get(key)?.parse().ok()
}
