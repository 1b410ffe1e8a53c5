//! Running a [`StreamPlan`]: [`spawn_job`] builds its [`JobGraph`], picks the checkpoint
//! to resume from, starts the graph's tasks on the caller's tokio runtime, and returns a
//! [`JobHandle`].
//!
//! The roles, one file each: `handle.rs` watches a running job and restarts it after a
//! failure, `spawn.rs` starts the tasks a graph names, `tasks.rs` holds
//! their loops (operator chains, two-input operators), `sink.rs` the job's end (in a task
//! of its own, or chained into the one subtask feeding it), `recovery.rs` selects
//! the checkpoint a restarted job resumes from. Channels between tasks hold a few batches
//! each, so a slow sink slows the sources and memory stays flat.

mod handle;
mod recovery;
mod sink;
mod spawn;
mod tasks;

pub use handle::JobHandle;
pub(crate) use sink::SinkSignal;
pub(crate) use tasks::SourceOutput;
pub use tasks::TwoInputTask;

use std::collections::HashMap;
use std::sync::Arc;

use runnel_sql::StreamPlan;

use crate::checkpoint::{CheckpointCommit, CheckpointCoordinator, CheckpointStore};
use crate::config::{DeliveryGuarantee, JobConfig};
use crate::connector::ConnectorFactory;
use crate::error::Result;
use crate::graph::JobGraph;
use crate::metrics::JobMetrics;
use crate::side_output::LateRows;
use crate::sink::SinkFactory;
use handle::{Attempt, Restarts};

/// Batches in flight on each channel between tasks.
const CHANNEL_CAPACITY: usize = 8;

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

/// Starts `plan`, reading through `connectors` and writing into the sink `sinks` makes,
/// with the job-wide settings of `config`. With checkpointing configured, the job resumes
/// from the checkpoint its delivery guarantee selects. A failure while starting is
/// returned; one after, restarts the job as its [`crate::restart::RestartStrategy`] says (see
/// [`JobHandle::wait`]).
pub async fn spawn_job(
    plan: &StreamPlan,
    connectors: Arc<dyn ConnectorFactory>,
    sinks: Arc<dyn SinkFactory>,
    config: &JobConfig,
) -> Result<JobHandle> {
    let metrics = Arc::new(JobMetrics::default());
    metrics.memory.set_limit(config.memory_limit);
    let attempt =
        start_attempt(plan, connectors.as_ref(), sinks.as_ref(), config, &metrics).await?;
    let restarts = Restarts::new(plan, connectors, sinks, config);
    Ok(JobHandle::supervise(attempt, restarts, metrics))
}

/// Starts one run of `plan`'s tasks (the first, or a restart), counting into `metrics`.
async fn start_attempt(
    plan: &StreamPlan,
    connectors: &dyn ConnectorFactory,
    sinks: &dyn SinkFactory,
    config: &JobConfig,
    metrics: &Arc<JobMetrics>,
) -> Result<Attempt> {
    let graph = job_graph(plan, connectors, config)?;
    let sink = sinks.create_sink(connectors, plan.schema(), config).await?;
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
    if metrics.stages().is_empty() {
        metrics.add_stages(graph.describe());
    }
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
                Some(CheckpointCoordinator::new(
                    store,
                    job,
                    sources,
                    restored.as_ref().map(|r| &r.manifest),
                    checkpoint.incremental,
                )),
                restored.map(Arc::new),
            )
        }
    };
    let mut dead_letter_sinks = std::collections::BTreeMap::new();
    for (source, table) in &config.dead_letter_tables {
        crate::dead_letter::check_table(table, source)?;
        let schema = table.physical_schema.clone();
        let sink = connectors
            .create_sink(table, schema.clone(), config)
            .await?;
        dead_letter_sinks.insert(source.clone(), (sink, schema));
    }
    let late = LateRows::default();
    let dead_letters = crate::side_output::RowQueue::default();
    let (sink_stop, stopped) = tokio::sync::oneshot::channel();
    let sink_stage = graph
        .stages
        .iter()
        .position(|stage| matches!(stage.head, crate::graph::StageHead::Sink))
        .unwrap_or(usize::MAX);
    let writer = sink::SinkWriter::new(
        sink,
        late_sink,
        late.clone(),
        dead_letter_sinks,
        dead_letters.clone(),
        metrics.clone(),
        metrics.stage_probe(sink_stage, 0),
        coordinator.clone().map(|coordinator| CheckpointCommit {
            coordinator,
            metrics: metrics.clone(),
            faults: config.faults,
        }),
        stopped,
    );
    let mut spawner = spawn::TaskSpawner {
        connectors,
        config,
        metrics: metrics.clone(),
        late,
        dead_letters,
        checkpoints: coordinator.clone(),
        restored,
        lookups: HashMap::new(),
        alignment_groups: HashMap::new(),
        sink: Some(Box::new(writer)),
        sink_task: None,
        tasks: Vec::new(),
    };
    let sink_task = spawner.spawn(&graph).await?;
    let tasks = spawner.tasks;
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
    Ok(Attempt {
        tasks,
        checkpoint_timer: timer,
        checkpoints: coordinator,
        sink_stop: Some(sink_stop),
        stopped_task: sink_task,
    })
}
