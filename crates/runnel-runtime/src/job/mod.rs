//! Running a [`StreamPlan`]: [`spawn_job`] builds its [`JobGraph`], picks the checkpoint
//! to resume from, starts the graph's tasks on the caller's tokio runtime, and returns a
//! [`JobHandle`].
//!
//! The roles, one file each: `spawn.rs` starts the tasks a graph names, `tasks.rs` holds
//! their loops (operator chains, two-input operators, the sink), `recovery.rs` selects
//! the checkpoint a restarted job resumes from. Channels between tasks hold a few batches
//! each, so a slow sink slows the sources and memory stays flat.

mod recovery;
mod spawn;
mod tasks;

pub use tasks::TwoInputTask;

use std::collections::HashMap;
use std::sync::Arc;

use runnel_sql::StreamPlan;
use tokio::task::JoinHandle;

use crate::checkpoint::{CheckpointCommit, CheckpointCoordinator, CheckpointStore};
use crate::config::{DeliveryGuarantee, JobConfig};
use crate::connector::ConnectorFactory;
use crate::error::{Result, RuntimeError};
use crate::graph::JobGraph;
use crate::metrics::{JobMetrics, MetricsSnapshot};
use crate::side_output::LateRows;
use crate::sink::Sink;

/// Batches in flight on each channel between tasks.
const CHANNEL_CAPACITY: usize = 8;

/// A running job. Await [`JobHandle::wait`] for its end; drop or [`JobHandle::abort`] to stop it.
pub struct JobHandle {
    tasks: Vec<(String, JoinHandle<Result<()>>)>,
    metrics: Arc<JobMetrics>,
    /// Triggers checkpoints; stopped when the job ends.
    checkpoint_timer: Option<JoinHandle<()>>,
    /// The job's checkpoints, when it takes them.
    checkpoints: Option<Arc<CheckpointCoordinator>>,
    /// Tells the sink to write what it holds and end (a stop without checkpoints).
    sink_stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The name of the task that ends when told on `sink_stop`.
    stopped_task: String,
}

impl Drop for JobHandle {
    fn drop(&mut self) {
        if let Some(timer) = &self.checkpoint_timer {
            timer.abort();
        }
    }
}

impl JobHandle {
    /// A job run by one task of its own, `name` (e.g. a member of a job spread over
    /// processes), counting into `metrics`. [`JobHandle::stop`] sends on `stop`, then
    /// waits for the task to end.
    pub fn from_task(
        name: impl Into<String>,
        task: JoinHandle<Result<()>>,
        metrics: Arc<JobMetrics>,
        stop: tokio::sync::oneshot::Sender<()>,
    ) -> Self {
        let name = name.into();
        Self {
            tasks: vec![(name.clone(), task)],
            metrics,
            checkpoint_timer: None,
            checkpoints: None,
            sink_stop: Some(stop),
            stopped_task: name,
        }
    }

    /// The job's live counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Shared handle to the live counters.
    pub fn metrics_handle(&self) -> Arc<JobMetrics> {
        self.metrics.clone()
    }

    /// Waits until every task ended. The first task to fail stops the others (a source
    /// waiting for new records would otherwise never notice), and its error is returned.
    pub async fn wait(mut self) -> Result<MetricsSnapshot> {
        self.wait_ref().await
    }

    /// [`JobHandle::wait`] without giving up the handle, so the job can still be stopped
    /// (e.g. on a signal) while this waits.
    pub async fn wait_ref(&mut self) -> Result<MetricsSnapshot> {
        while !self.tasks.is_empty() {
            let (outcome, finished, _) =
                futures::future::select_all(self.tasks.iter_mut().map(|(_, task)| task)).await;
            let (name, _) = self.tasks.remove(finished);
            let outcome = match outcome {
                Ok(result) => result,
                Err(join) => Err(RuntimeError::Task(format!("{name}: {join}"))),
            };
            if let Err(e) = outcome {
                self.abort();
                return Err(e);
            }
        }
        Ok(self.metrics.snapshot())
    }

    /// Stops the job cleanly: when it checkpoints, takes one more checkpoint and waits
    /// (up to `timeout`) until it is committed, so a restart resumes exactly there;
    /// without checkpoints, lets the sink write the rows it holds (a buffering sink would
    /// otherwise lose rows it already took). Then stops every task. Returns the job's
    /// counters.
    pub async fn stop(mut self, timeout: std::time::Duration) -> Result<MetricsSnapshot> {
        if self.checkpoints.is_none() {
            if let Some(stop) = self.sink_stop.take() {
                let _ = stop.send(());
                let stopped = &self.stopped_task;
                if let Some(at) = self.tasks.iter().position(|(name, _)| name == stopped) {
                    let (_, sink) = self.tasks.remove(at);
                    match tokio::time::timeout(timeout, sink).await {
                        Ok(Ok(Err(e))) => {
                            self.abort();
                            return Err(e);
                        }
                        Err(_) => {
                            tracing::warn!(?timeout, "the sink did not write what it held in time")
                        }
                        Ok(_) => {}
                    }
                }
            }
        }
        if let Some(coordinator) = &self.checkpoints {
            let before = self.metrics.snapshot().checkpoints;
            let id = coordinator.trigger();
            let deadline = tokio::time::Instant::now() + timeout;
            while self.metrics.snapshot().checkpoints == before {
                if self.is_finished() {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    self.abort();
                    return Err(RuntimeError::Checkpoint(format!(
                        "the final checkpoint {id} did not complete within {timeout:?}"
                    )));
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            tracing::info!(checkpoint = id, "stopped after a final checkpoint");
        }
        self.abort();
        Ok(self.metrics.snapshot())
    }

    /// Stops every task at once.
    pub fn abort(&self) {
        for (_, task) in &self.tasks {
            task.abort();
        }
        if let Some(timer) = &self.checkpoint_timer {
            timer.abort();
        }
    }

    /// Whether every task has ended.
    pub fn is_finished(&self) -> bool {
        self.tasks.iter().all(|(_, t)| t.is_finished())
    }
}

/// The job graph of `plan` under `config`: its parallelism, and as many readers per
/// table as the connector can split it into (at most the parallelism).
pub fn job_graph<'p>(
    plan: &'p StreamPlan,
    connectors: &dyn ConnectorFactory,
    config: &JobConfig,
) -> Result<JobGraph<'p>> {
    JobGraph::build(plan, config.parallelism(), &ConnectorLayout(connectors))
}

/// The graph's view of the tables a job reads, from their connectors.
struct ConnectorLayout<'a>(&'a dyn ConnectorFactory);

impl crate::graph::TableLayout for ConnectorLayout<'_> {
    fn readers(&self, table: &runnel_sql::TableDef) -> usize {
        self.0.max_splits(table)
    }

    fn reads_by_key(&self, table: &runnel_sql::TableDef) -> bool {
        self.0.reads_by_key(table)
    }
}

/// Starts `plan`, reading through `connectors` and writing into `sink`, with the job-wide
/// settings of `config`. With checkpointing configured, the job resumes from the
/// checkpoint its delivery guarantee selects.
pub async fn spawn_job(
    plan: &StreamPlan,
    connectors: &dyn ConnectorFactory,
    sink: Box<dyn Sink>,
    config: &JobConfig,
) -> Result<JobHandle> {
    let graph = job_graph(plan, connectors, config)?;
    let late_sink = match &config.late_data_sink {
        Some(table) => Some(
            connectors
                .create_sink(table, table.physical_schema.clone(), config)
                .await?,
        ),
        None => None,
    };
    let checkpointing = config
        .checkpoint
        .as_ref()
        .filter(|_| config.delivery != DeliveryGuarantee::AtMostOnce);
    let metrics = Arc::new(JobMetrics::default());
    metrics.add_stages(graph.describe());
    let (coordinator, restored) = match checkpointing {
        None => (None, None),
        Some(checkpoint) => {
            let store = CheckpointStore::new(&checkpoint.dir);
            let job = recovery::job_fingerprint(plan, config);
            let restored = recovery::select_checkpoint(&store, &job, connectors, config).await?;
            let last = restored.as_ref().map_or(0, |r| r.manifest.id);
            if let Some(r) = &restored {
                tracing::info!(checkpoint = r.manifest.id, dir = %store.dir().display(), "resuming from checkpoint");
                metrics
                    .restored_checkpoint
                    .store(last, std::sync::atomic::Ordering::Relaxed);
            }
            let sources = graph.checkpointed_sources();
            (
                Some(CheckpointCoordinator::new(store, job, sources, last)),
                restored.map(Arc::new),
            )
        }
    };
    let late = LateRows::default();
    let (sink_stop, stopped) = tokio::sync::oneshot::channel();
    let mut spawner = spawn::TaskSpawner {
        connectors,
        config,
        metrics: metrics.clone(),
        late: late.clone(),
        checkpoints: coordinator.clone(),
        restored,
        lookups: HashMap::new(),
        alignment_groups: HashMap::new(),
        tasks: Vec::new(),
    };
    let sink_input = spawner.spawn(&graph).await?;
    let mut tasks = spawner.tasks;
    let sink = tasks::SinkTask {
        input: sink_input,
        sink,
        late_sink,
        late,
        metrics: metrics.clone(),
        probe: metrics.stage_probe(
            graph
                .stages
                .iter()
                .position(|stage| matches!(stage.head, crate::graph::StageHead::Sink))
                .unwrap_or(usize::MAX),
            0,
        ),
        commit: coordinator.clone().map(|coordinator| CheckpointCommit {
            coordinator,
            metrics: metrics.clone(),
            faults: config.faults,
        }),
    };
    tasks.push(("sink".to_string(), tokio::spawn(sink.run(stopped))));
    let timer = match (&coordinator, checkpointing) {
        (Some(coordinator), Some(checkpoint)) => {
            let coordinator = coordinator.clone();
            let interval = checkpoint.interval;
            Some(tokio::spawn(async move {
                let mut ticks =
                    tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    coordinator.trigger_if_idle();
                }
            }))
        }
        _ => None,
    };
    Ok(JobHandle {
        tasks,
        metrics,
        checkpoint_timer: timer,
        checkpoints: coordinator,
        sink_stop: Some(sink_stop),
        stopped_task: "sink".to_string(),
    })
}
