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
//! [`RETAINED`] complete checkpoints are kept, and every older folder a kept checkpoint
//! still reads from.
//!
//! **Incremental checkpoints** (`execution.checkpointing.incremental`): an operator that
//! tracks its changes hands over a [`StateIncrement`] at the barrier instead of its
//! state; the sink task's writer builds it (off the operator's task) into
//! `chk-<n>/op-<id>.delta.arrow`. The manifest names the operator's *chain*: the files a
//! restore reads, a full snapshot then increments, oldest first, possibly in older
//! checkpoints' folders. When a chain's increments outweigh its snapshot (or it grows
//! past [`MAX_CHAIN`] links), a background thread merges it into one full snapshot
//! (`op-<id>.compacted.arrow`), which the next checkpoint's chain starts from: the
//! periodic full checkpoint, taken without the operator.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::{Result, RuntimeError};
use crate::operator::{CompactChain, StateIncrement};

/// Checkpoints are numbered from 1 in the order they are taken.
pub type CheckpointId = u64;

/// Complete checkpoints kept in the directory.
pub const RETAINED: usize = 3;

/// Links (a snapshot and its increments) after which an operator's chain is merged in
/// the background whatever their sizes.
pub const MAX_CHAIN: usize = 10;

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
    /// Bytes of state written by this checkpoint (for an incremental operator, its
    /// increment).
    pub state_bytes: u64,
    /// Operators checkpointed incrementally (by id): their chain's files, a full
    /// snapshot then increments, oldest first, as paths under the checkpoint directory.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub chains: BTreeMap<usize, Vec<String>>,
    /// Bytes a restore from this checkpoint reads (the chains' older links included).
    #[serde(default)]
    pub restore_bytes: u64,
    /// Bytes each operator wrote into this checkpoint, by operator id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub operator_bytes: BTreeMap<usize, u64>,
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
            operators.insert(op, read_state(&path)?);
        }
        for (&op, links) in &manifest.chains {
            let batches = links
                .iter()
                .map(|link| read_state(&self.dir.join(link)))
                .collect::<Result<Vec<_>>>()?;
            // The newest link's schema carries the operator's progress (its metadata).
            let Some(newest) = batches.last() else {
                continue;
            };
            let chain = datafusion::arrow::compute::concat_batches(&newest.schema(), &batches)
                .map_err(|e| io_error(&folder, format!("operator {op}'s chain: {e}")))?;
            operators.insert(op, chain);
        }
        Ok(RestoredCheckpoint {
            manifest,
            operators,
        })
    }

    /// Reads the manifest of checkpoint `id`.
    fn manifest(&self, id: CheckpointId) -> Result<Manifest> {
        let path = self.checkpoint_dir(id).join("_manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
        serde_json::from_str(&text).map_err(|e| io_error(&path, e))
    }

    /// Writes checkpoint `manifest.id`: operator states first (synced), the manifest
    /// last (written aside, synced, then renamed into place). The manifest's `chains`,
    /// `state_bytes` and `restore_bytes` already count the increments written.
    fn store(
        &self,
        mut manifest: Manifest,
        states: &BTreeMap<usize, RecordBatch>,
    ) -> Result<Manifest> {
        let folder = self.checkpoint_dir(manifest.id);
        std::fs::create_dir_all(&folder).map_err(|e| io_error(&folder, e))?;
        let mut bytes = 0;
        for (op, batch) in states {
            let written = write_state(&folder.join(format!("op-{op}.arrow")), batch)?;
            manifest.operator_bytes.insert(*op, written);
            bytes += written;
        }
        manifest.operators = states.keys().copied().collect();
        manifest.state_bytes += bytes;
        manifest.restore_bytes += bytes;
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

    /// Deletes every checkpoint folder older than the newest complete checkpoint but
    /// those of the newest [`RETAINED`] complete ones and those their chains read from.
    pub fn prune(&self) {
        let complete = self.complete();
        let keep: Vec<CheckpointId> = complete.iter().rev().take(RETAINED).copied().collect();
        let newest = complete.last().copied().unwrap_or(0);
        let read_from: BTreeSet<PathBuf> = keep
            .iter()
            .filter_map(|&id| self.manifest(id).ok())
            .flat_map(|manifest| manifest.chains.into_values().flatten())
            .filter_map(|link| {
                let folder = Path::new(&link).parent()?;
                Some(self.dir.join(folder))
            })
            .collect();
        for id in self.all() {
            let folder = self.checkpoint_dir(id);
            if !keep.contains(&id) && id < newest && !read_from.contains(&folder) {
                let _ = std::fs::remove_dir_all(folder);
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

/// An operator's state written to `path` (one Arrow IPC file), synced; returns its size.
fn write_state(path: &Path, batch: &RecordBatch) -> Result<u64> {
    let file = std::fs::File::create(path).map_err(|e| io_error(path, e))?;
    let mut writer = FileWriter::try_new(file, &batch.schema()).map_err(|e| io_error(path, e))?;
    writer.write(batch).map_err(|e| io_error(path, e))?;
    writer.finish().map_err(|e| io_error(path, e))?;
    let file = writer.into_inner().map_err(|e| io_error(path, e))?;
    file.sync_all().map_err(|e| io_error(path, e))?;
    Ok(file.metadata().map(|m| m.len()).unwrap_or(0))
}

/// An operator's state read back from one Arrow IPC file.
fn read_state(path: &Path) -> Result<RecordBatch> {
    let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    let reader = FileReader::try_new(file, None).map_err(|e| io_error(path, e))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| io_error(path, e))?;
    datafusion::arrow::compute::concat_batches(&schema, &batches).map_err(|e| io_error(path, e))
}

/// How often and where a job checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    pub dir: PathBuf,
    pub interval: Duration,
    /// Operators that can write only what changed since the previous checkpoint do
    /// (`execution.checkpointing.incremental`).
    pub incremental: bool,
}

/// The parts of a checkpoint contributed so far.
#[derive(Default)]
struct PendingCheckpoint {
    sources: BTreeMap<usize, SourceState>,
    operators: BTreeMap<usize, RecordBatch>,
    increments: BTreeMap<usize, StateIncrement>,
}

/// One file of a chain, by its path under the checkpoint directory.
#[derive(Debug, Clone)]
struct Link {
    path: String,
    bytes: u64,
}

/// A background merge of a chain's first `covers` links into one snapshot.
struct Compaction {
    covers: usize,
    merged: std::thread::JoinHandle<Result<Link>>,
}

/// One incremental operator's chain as the next checkpoint continues it.
#[derive(Default)]
struct Chain {
    links: Vec<Link>,
    /// How to merge it (from the operator's latest increment).
    compact: Option<CompactChain>,
    compaction: Option<Compaction>,
}

impl Chain {
    /// Starts the chain with the merged snapshot of a finished background merge.
    fn adopt_compaction(&mut self, op: usize) {
        if !self
            .compaction
            .as_ref()
            .is_some_and(|c| c.merged.is_finished())
        {
            return;
        }
        let Some(compaction) = self.compaction.take() else {
            return;
        };
        match compaction.merged.join() {
            Ok(Ok(link)) if compaction.covers <= self.links.len() => {
                tracing::debug!(operator = op, links = compaction.covers, path = %link.path, "chain merged");
                self.links.splice(..compaction.covers, [link]);
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(operator = op, error = %e, "merging a checkpoint chain failed; the chain stays as it was")
            }
            Err(_) => tracing::warn!(
                operator = op,
                "merging a checkpoint chain panicked; the chain stays as it was"
            ),
        }
    }

    /// Merges the chain in the background, into `target` (under `store`'s directory),
    /// when its increments outweigh its snapshot or it is long.
    fn compact_if_due(&mut self, store: &CheckpointStore, target: String) {
        let increments: u64 = self.links.iter().skip(1).map(|l| l.bytes).sum();
        let base = self.links.first().map_or(0, |l| l.bytes);
        let due = self.links.len() >= 2 && (increments > base || self.links.len() >= MAX_CHAIN);
        let Some(compact) = self
            .compact
            .clone()
            .filter(|_| due && self.compaction.is_none())
        else {
            return;
        };
        let files: Vec<PathBuf> = self.links.iter().map(|l| store.dir.join(&l.path)).collect();
        let path = store.dir.join(&target);
        let merge = move || -> Result<Link> {
            let chain = files
                .iter()
                .map(|file| read_state(file))
                .collect::<Result<Vec<_>>>()?;
            let merged = compact(chain)?;
            let bytes = write_state(&path, &merged)?;
            Ok(Link {
                path: target,
                bytes,
            })
        };
        match std::thread::Builder::new()
            .name("runnel-chain-merge".into())
            .spawn(merge)
        {
            Ok(merged) => {
                self.compaction = Some(Compaction {
                    covers: self.links.len(),
                    merged,
                })
            }
            Err(e) => tracing::warn!(error = %e, "could not start merging a checkpoint chain"),
        }
    }
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
    /// Whether operators that can checkpoint incrementally do.
    incremental: bool,
    /// The chains of the operators checkpointed incrementally, by operator id.
    chains: Mutex<BTreeMap<usize, Chain>>,
}

impl CheckpointCoordinator {
    /// A coordinator for `job` (a plan fingerprint) reading `source_count` sources,
    /// numbering checkpoints after `restored` (the checkpoint the job resumes from, if
    /// any: the chains of incremental operators continue from its files).
    pub fn new(
        store: CheckpointStore,
        job: String,
        source_count: usize,
        restored: Option<&Manifest>,
        incremental: bool,
    ) -> Arc<Self> {
        let last = restored.map_or(0, |m| m.id);
        let mut chains = BTreeMap::new();
        if let Some(manifest) = restored {
            let folder = format!("chk-{last:06}");
            let size = |path: &str| std::fs::metadata(store.dir.join(path)).map_or(0, |m| m.len());
            for &op in &manifest.operators {
                let path = format!("{folder}/op-{op}.arrow");
                let bytes = size(&path);
                chains.insert(op, vec![Link { path, bytes }]);
            }
            for (&op, paths) in &manifest.chains {
                let links = paths
                    .iter()
                    .map(|path| Link {
                        path: path.clone(),
                        bytes: size(path),
                    })
                    .collect();
                chains.insert(op, links);
            }
        }
        let chains = chains
            .into_iter()
            .map(|(op, links)| {
                (
                    op,
                    Chain {
                        links,
                        ..Chain::default()
                    },
                )
            })
            .collect();
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
            incremental,
            chains: Mutex::new(chains),
        })
    }

    /// Whether operators that can checkpoint incrementally should.
    pub fn incremental(&self) -> bool {
        self.incremental
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

    /// Operator `op` handed over what changed in its state for checkpoint `id`.
    pub fn add_increment(&self, id: CheckpointId, op: usize, increment: StateIncrement) {
        self.with_pending(id, |p| {
            p.increments.insert(op, increment);
        });
    }

    /// Builds and writes the increments of checkpoint `id`, extending each operator's
    /// chain; fills the manifest's `chains` and byte counts. Operators that sent a whole
    /// snapshot (`full`) end their chain.
    fn store_increments(
        &self,
        manifest: &mut Manifest,
        increments: BTreeMap<usize, StateIncrement>,
        full: &BTreeMap<usize, RecordBatch>,
    ) -> Result<()> {
        let folder = format!("chk-{:06}", manifest.id);
        let dir = self.store.dir.join(&folder);
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        let mut chains = self.chains.lock().unwrap_or_else(|p| p.into_inner());
        chains.retain(|op, _| increments.contains_key(op) && !full.contains_key(op));
        for (op, increment) in increments {
            let batch = (increment.build)()?;
            let path = format!("{folder}/op-{op}.delta.arrow");
            let bytes = write_state(&self.store.dir.join(&path), &batch)?;
            let chain = chains.entry(op).or_default();
            chain.adopt_compaction(op);
            chain.links.push(Link { path, bytes });
            chain.compact = Some(increment.compact);
            manifest.state_bytes += bytes;
            manifest.operator_bytes.insert(op, bytes);
            manifest.restore_bytes += chain.links.iter().map(|l| l.bytes).sum::<u64>();
            manifest
                .chains
                .insert(op, chain.links.iter().map(|l| l.path.clone()).collect());
            chain.compact_if_due(&self.store, format!("{folder}/op-{op}.compacted.arrow"));
        }
        Ok(())
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
        let mut manifest = Manifest {
            id,
            job: self.job.clone(),
            sources: pending.sources.into_values().collect(),
            operators: Vec::new(),
            stored_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            state_bytes: 0,
            chains: BTreeMap::new(),
            restore_bytes: 0,
            operator_bytes: BTreeMap::new(),
        };
        self.store_increments(&mut manifest, pending.increments, &pending.operators)?;
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
        if self.faults.fail_commits {
            return Err(RuntimeError::Task(format!(
                "simulated failure to commit checkpoint {id}"
            )));
        }
        for side_sink in &mut side_sinks {
            side_sink.commit_checkpoint(&stored).await?;
        }
        sink.commit_checkpoint(&stored).await?;
        self.metrics
            .checkpoint_committed(id, stored.state_bytes, started.elapsed());
        self.metrics
            .checkpoint_operator_bytes(&stored.operator_bytes);
        self.coordinator.committed(id);
        // The longest a subtask stood still at this checkpoint's barrier.
        let stall_ms = self
            .metrics
            .stages()
            .iter()
            .map(|stage| stage.checkpoint_stall_ms)
            .fold(0.0, f64::max);
        // The sink's watermark at the barrier: the rows of every window it passed are
        // final with this checkpoint.
        let watermark = self
            .metrics
            .watermark
            .load(std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            checkpoint = id,
            bytes = stored.state_bytes,
            restore_bytes = stored.restore_bytes,
            millis = started.elapsed().as_millis() as u64,
            stall_ms,
            watermark,
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, RecordBatchOptions};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    /// An increment of one row holding `value`; its chain merges by concatenation, so a
    /// restore sees every value once whatever was merged.
    fn increment(value: i64) -> StateIncrement {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batch = RecordBatch::try_new_with_options(
            schema,
            vec![Arc::new(Int64Array::from(vec![value]))],
            &RecordBatchOptions::default(),
        );
        StateIncrement {
            build: Box::new(move || batch.map_err(|e| RuntimeError::Checkpoint(e.to_string()))),
            compact: Arc::new(|chain: Vec<RecordBatch>| {
                let schema = chain[0].schema();
                datafusion::arrow::compute::concat_batches(&schema, &chain)
                    .map_err(|e| RuntimeError::Checkpoint(e.to_string()))
            }),
        }
    }

    fn values(restored: &RestoredCheckpoint, op: usize) -> Vec<i64> {
        let state = &restored.operators[&op];
        let column: &Int64Array = state.column(0).as_any().downcast_ref().unwrap();
        let mut values: Vec<i64> = column.values().to_vec();
        values.sort_unstable();
        values
    }

    #[test]
    fn chains_of_increments_restore_merge_in_the_background_and_keep_their_folders() {
        let dir = std::env::temp_dir().join(format!("runnel-chains-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = CheckpointStore::new(&dir);
        let coordinator = CheckpointCoordinator::new(store.clone(), "job".into(), 0, None, true);
        let mut merged_at = None;
        for id in 1..=12u64 {
            coordinator.add_increment(id, 7, increment(id as i64));
            let manifest = coordinator.store(id).unwrap();
            coordinator.prune();
            let chain = &manifest.chains[&7];
            if merged_at.is_none() && chain[0].ends_with("op-7.compacted.arrow") {
                merged_at = Some(id);
            }
            // A restore sees every increment so far, once.
            let restored = store.load(id).unwrap();
            assert_eq!(values(&restored, 7), (1..=id as i64).collect::<Vec<_>>());
            // Every folder a kept chain reads from is still there.
            for link in chain {
                assert!(dir.join(link).exists(), "{link} of checkpoint {id}");
            }
            // Give the background merge time to finish before the next checkpoint.
            std::thread::sleep(Duration::from_millis(50));
        }
        let merged_at = merged_at.expect("the chain was merged in the background");
        let newest = store.load(12).unwrap().manifest;
        assert!(
            newest.chains[&7].len() < 12,
            "merged chains stay short: {:?} (first merged at {merged_at})",
            newest.chains[&7]
        );
        assert!(newest.restore_bytes > newest.state_bytes);
        // Folders no kept chain reads from are gone.
        assert!(
            store.all().len() < 12,
            "old folders pruned: {:?}",
            store.all()
        );

        // A coordinator resuming from the newest checkpoint continues its chain.
        let resumed =
            CheckpointCoordinator::new(store.clone(), "job".into(), 0, Some(&newest), true);
        resumed.add_increment(13, 7, increment(13));
        resumed.store(13).unwrap();
        assert_eq!(
            values(&store.load(13).unwrap(), 7),
            (1..=13).collect::<Vec<_>>()
        );
        // A whole snapshot ends the chain.
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let whole = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![99]))]);
        resumed.add_operator(14, 7, whole.unwrap());
        let manifest = resumed.store(14).unwrap();
        assert!(manifest.chains.is_empty());
        assert_eq!(values(&store.load(14).unwrap(), 7), vec![99]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
