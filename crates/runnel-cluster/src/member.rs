//! [`spawn_member`]: one process's share of a job spread over processes.
//!
//! Every process of the job runs the same plan and joins the job's consumer group,
//! subscribed to the source topics and the job's repartition topics; the group protocol
//! (cooperative, sticky) spreads their partitions — the tasks — over the members of every
//! process (`parallelism.default` per process, default 1). A member runs its tasks on one
//! thread, Kafka Streams' way:
//! - **poll** a batch of records, hand each partition's records to its task in order;
//! - **commit** every `execution.checkpointing.interval` (1 s by default): each task's
//!   pending watermark markers, its changelog records when it changed, the status of a
//!   task that finished, and the offsets it read go into the process's open Kafka
//!   transaction together with everything it produced since the last commit
//!   (`send_offsets_to_transaction` under the group's metadata, so a process the group
//!   fenced out cannot commit); then the next transaction begins. Exactly-once: a crash
//!   aborts the open transaction, and whoever takes the tasks over restores the state
//!   committed with the offsets it resumes from.
//! - **rebalance**: before partitions are revoked, the process commits (inside the
//!   callback, so the next owner finds everything it did) and drops those tasks; newly
//!   assigned partitions become tasks, restored from their changelog partition, before
//!   any of their records is handled. Tasks that stay are not paused.
//! - **purge**: every 30 s, and when the process stops, the repartition records its
//!   tasks committed past are deleted (`DeleteRecords`).
//! - **end** (bounded jobs): a task that read its input to the end writes its end
//!   downstream and its status; every process exits once the status topic lists every
//!   task of the job.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::producer::BaseRecord;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use runnel_connectors::kafka::{KafkaRecordEncoder, PartitionRecords, PolledRecords};
use runnel_runtime::graph::StageId;
use runnel_runtime::{
    JobConfig, JobGraph, JobHandle, JobMetrics, LateRows, LookupTable, OperatorContext,
    ProcessingTime,
};
use runnel_sql::{StreamPlan, TableDef};

use crate::error::{ClusterError, Result};
use crate::kafka_cluster::{cluster_config, same_cluster};
use crate::local::LocalSnapshots;
use crate::restore::{restore, Restored, TaskPlace};
use crate::task::{ChangelogRecord, Task, TaskSetup};
use crate::topics::{self, StatusReader};
use crate::topology::{ClusterTopology, StageInput, TaskId};
use crate::transaction::{abortable, TopicWriter, TransactionWriter};

/// How a job is spread over processes: its name and the settings that shape its tasks.
#[derive(Debug, Clone)]
pub struct ScaleOut {
    /// `pipeline.name`: the consumer group, and the prefix of every internal topic.
    pub job: String,
    /// `pipeline.max-parallelism`: partitions of each repartition topic (tasks of each
    /// keyed stage); by default the largest source topic's partition count.
    pub max_parallelism: Option<usize>,
    /// How often a process commits its transaction (`execution.checkpointing.interval`).
    pub commit_interval: Duration,
    /// The process's checkpoint directory, where it keeps local copies of its tasks'
    /// changelogs (`None`: a restore reads the whole changelog).
    pub local_dir: Option<std::path::PathBuf>,
    /// Members this process runs, each on its own thread (`parallelism.default`): the
    /// group spreads the tasks over every member of every process.
    pub threads: usize,
}

/// Records gathered into one poll.
const MAX_POLL_RECORDS: usize = 8192;

/// The job graph a process runs: the plan at parallelism 2, so every keyed stage starts
/// behind a hash edge (its repartition topic); one reader per source (each of its
/// partitions is a task anyway).
fn graph(plan: &StreamPlan) -> Result<JobGraph<'_>> {
    Ok(JobGraph::build(plan, 2, &|_: &TableDef| 1usize)?)
}

/// The tasks of `plan` under `scale`, with `partitions` of each source table.
fn topology<'p>(
    plan: &'p StreamPlan,
    scale: &ScaleOut,
    partitions: &HashMap<String, usize>,
) -> Result<ClusterTopology<'p>> {
    let max_parallelism = scale
        .max_parallelism
        .unwrap_or_else(|| partitions.values().copied().max().unwrap_or(1));
    ClusterTopology::new(&scale.job, graph(plan)?, max_parallelism, &|table| {
        partitions.get(&table.name).copied().ok_or_else(|| {
            ClusterError::Setting(format!("table {}: its topic has no partitions", table.name))
        })
    })
}

/// The partition count of each source table's topic, by table (blocking: asks Kafka).
fn source_partitions(
    client: &ClientConfig,
    sources: &[Arc<TableDef>],
) -> Result<HashMap<String, usize>> {
    let mut partitions = HashMap::new();
    for table in sources {
        let topic = table.options.get("topic").cloned().unwrap_or_default();
        let count = topics::partition_count(client, &topic)?;
        if count == 0 {
            return Err(ClusterError::Setting(format!(
                "table {}: kafka topic '{topic}' does not exist",
                table.name
            )));
        }
        partitions.insert(table.name.clone(), count);
    }
    Ok(partitions)
}

/// What `EXPLAIN` shows of `plan` spread over processes as `scale` says: its cut into
/// stages and tasks, and the topics each stage reads and keeps its state in — what each
/// process logs when it joins. Blocks while it asks Kafka for the source topics'
/// partitions (they decide the source stages' tasks).
pub fn describe_cut(plan: &StreamPlan, scale: &ScaleOut) -> Result<String> {
    crate::topology::check_job_name(&scale.job)?;
    let (client, _) = cluster_config(plan)?;
    let partitions = source_partitions(&client, &plan.sources())?;
    Ok(topology(plan, scale, &partitions)?.to_string())
}

/// Starts this process's share of `plan` in the job `scale` names: creates the job's
/// internal topics if it is the first, then joins the group with `scale.threads`
/// members, each on a thread of its own. The handle's stop makes every member commit
/// what it did and leave the group.
pub async fn spawn_member(
    plan: StreamPlan,
    config: JobConfig,
    scale: ScaleOut,
) -> Result<JobHandle> {
    crate::topology::check_job_name(&scale.job)?;
    let (client, sink) = cluster_config(&plan)?;
    if let Some(table) = &config.late_data_sink {
        same_cluster(table, &sink, "late-data table")?;
    }
    let partitions = {
        let (client, sources) = (client.clone(), plan.sources());
        tokio::task::spawn_blocking(move || source_partitions(&client, &sources))
            .await
            .map_err(|e| ClusterError::Setting(format!("reading the source topics: {e}")))??
    };
    {
        let topology = topology(&plan, &scale, &partitions)?;
        topics::create_internal_topics(&client, &topology).await?;
        tracing::info!(job = %scale.job, tasks = topology.task_count(), "joining the job's group\n{topology}");
    }
    let metrics = Arc::new(JobMetrics::default());
    metrics.tasks_owned.store(0, Ordering::Relaxed);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopping = Arc::new(AtomicBool::new(false));
    let (done, mut results) = tokio::sync::mpsc::unbounded_channel();
    let threads = scale.threads.max(1);
    for thread in 0..threads {
        let (plan, scale, partitions) = (plan.clone(), scale.clone(), partitions.clone());
        let (client, sink, config) = (client.clone(), sink.clone(), config.clone());
        let (metrics, stopping, done) = (metrics.clone(), stopping.clone(), done.clone());
        tokio::task::spawn_blocking(move || {
            let _span = tracing::info_span!("member", thread).entered();
            let setup = MemberSetup {
                plan: &plan,
                scale: &scale,
                partitions: &partitions,
                client,
                sink,
                config,
                metrics,
            };
            let _ = done.send(run(setup, &stopping));
        });
    }
    drop(done);
    // A stop of the handle stops every member; so does the first member that fails.
    let stop_all = stopping.clone();
    tokio::spawn(async move {
        if stopped.await.is_ok() {
            stop_all.store(true, Ordering::Relaxed);
        }
    });
    let task = tokio::spawn(async move {
        let mut outcome = Ok(());
        while let Some(result) = results.recv().await {
            if let (Err(e), Ok(())) = (result, &outcome) {
                stopping.store(true, Ordering::Relaxed);
                outcome = Err(runnel_runtime::RuntimeError::from(e));
            }
        }
        outcome
    });
    Ok(JobHandle::from_task("member", task, metrics, stop))
}

struct MemberSetup<'a> {
    plan: &'a StreamPlan,
    scale: &'a ScaleOut,
    partitions: &'a HashMap<String, usize>,
    client: ClientConfig,
    sink: Arc<TableDef>,
    config: JobConfig,
    metrics: Arc<JobMetrics>,
}

/// What the process owns, shared with the consumer's rebalance callbacks.
struct Member {
    tasks: BTreeMap<TaskId, Task>,
    /// Newly assigned partitions, made tasks before their records are handled.
    assigned: Vec<TaskId>,
    /// When each task was gained, until its first commit with input read (logged: how
    /// long a takeover took).
    gained_at: HashMap<TaskId, Instant>,
    /// Tasks whose finish this process announced (or found announced).
    announced: BTreeSet<TaskId>,
    writer: TransactionWriter,
    /// Deletes the repartition records committed past.
    purge: topics::RepartitionPurge,
    /// The input topic of each rooted stage.
    input_topics: HashMap<StageId, String>,
    /// The changelog topic of each rooted stage.
    changelog_topics: HashMap<StageId, String>,
    status_topic: String,
    /// An error a rebalance callback met; the loop stops with it.
    fatal: Option<ClusterError>,
    /// A commit failed in a way the transaction survives only by aborting (a rebalance
    /// moved the group on): the loop goes back to the last commit.
    rewind: bool,
    /// The process stopped on an error: its open transaction is aborted, never committed.
    failed: bool,
    /// Copies of the changelogs of its tasks, when the process has a checkpoint directory.
    local: Option<LocalSnapshots>,
    /// When the copies' offsets were last brought up to date.
    local_offsets_at: Instant,
    /// The next commit brings the copies' offsets up to date (tasks are about to move).
    refresh_local: bool,
}

impl Member {
    /// Commits everything the process's tasks did: their markers, changed state, finish
    /// statuses and input offsets, in the open transaction; then begins the next.
    fn commit<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> Result<()> {
        let mut offsets = TopicPartitionList::new();
        // Statuses count as announced, and gained tasks as taken over, once their
        // transaction committed.
        let mut finished = Vec::new();
        let mut first_commits = Vec::new();
        // Changelog records to copy locally once they committed.
        let mut changed = Vec::new();
        for (id, task) in &mut self.tasks {
            task.flush_markers(&mut self.writer)?;
            if let Some(records) = task.snapshot()? {
                let topic = &self.changelog_topics[&id.stage];
                for (key, value) in &records {
                    let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
                        .partition(id.partition)
                        .key(key.as_bytes());
                    if let Some(value) = value {
                        record = record.payload(value.as_slice());
                    }
                    self.writer.send(record)?;
                }
                if self.local.is_some() {
                    changed.push((*id, records));
                }
            }
            if task.finished() && !self.announced.contains(id) {
                finished.push(*id);
                let key = id.to_string();
                let record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.status_topic)
                    .partition(0)
                    .key(key.as_bytes())
                    .payload(b"finished".as_slice());
                self.writer.send(record)?;
            }
            if let Some(next) = task.next_offset() {
                if let (Some(gained), true) = (self.gained_at.get(id), task.read_input()) {
                    first_commits.push((*id, gained.elapsed().as_millis() as u64));
                }
                offsets
                    .add_partition_offset(
                        &self.input_topics[&id.stage],
                        id.partition,
                        Offset::Offset(next),
                    )
                    .map_err(ClusterError::kafka("listing offsets to commit"))?;
            }
        }
        self.writer.commit(&offsets, consumer.group_metadata())?;
        self.purge.committed(&offsets);
        self.copy_locally(consumer, changed);
        for id in &finished {
            tracing::info!(task = %id, "task finished");
        }
        self.announced.extend(finished);
        for (id, after_ms) in first_commits {
            self.gained_at.remove(&id);
            tracing::info!(task = %id, after_ms, "first commit of a gained task");
        }
        Ok(())
    }
}

impl Member {
    /// Copies a committed transaction's changelog records into the local copies; every
    /// [`LOCAL_OFFSET_INTERVAL`], or when tasks are about to move, notes where each
    /// owned task's changelog ends now (just past this commit: changelog records are
    /// written only by commits), so that a later restore reads from there.
    fn copy_locally<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        changed: Vec<(TaskId, Vec<ChangelogRecord>)>,
    ) {
        let Some(local) = &self.local else { return };
        for (id, records) in &changed {
            local.write(*id, records.iter().map(|(k, v)| (k, v)), None);
        }
        let refresh = std::mem::take(&mut self.refresh_local);
        if !refresh && self.local_offsets_at.elapsed() < LOCAL_OFFSET_INTERVAL {
            return;
        }
        self.local_offsets_at = Instant::now();
        for id in self.tasks.keys() {
            let topic = &self.changelog_topics[&id.stage];
            match consumer.fetch_watermarks(topic, id.partition, Duration::from_secs(10)) {
                Ok((_, end)) => local.write(*id, std::iter::empty(), Some(end)),
                Err(e) => {
                    tracing::debug!(task = %id, error = %e, "the end of a changelog is unknown; its local copy keeps its offset");
                }
            }
        }
    }
}

impl Member {
    /// Goes back to the last commit: aborts the open transaction, drops every task (their
    /// state moved on past what is committed) and makes each partition still assigned a
    /// task again, restored from its changelog and read from its committed offset.
    fn rewind<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> Result<()> {
        self.writer.abort()?;
        self.tasks.clear();
        self.assigned.clear();
        // Restored tasks say again whether their finish was committed.
        self.announced.clear();
        self.rewind = false;
        let assignment = consumer
            .assignment()
            .map_err(ClusterError::kafka("reading the assignment"))?;
        if assignment.count() == 0 {
            return Ok(());
        }
        let committed = consumer
            .committed_offsets(assignment, Duration::from_secs(30))
            .map_err(ClusterError::kafka("reading the committed offsets"))?;
        for element in committed.elements() {
            let offset = match element.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            consumer
                .seek(
                    element.topic(),
                    element.partition(),
                    offset,
                    Duration::from_secs(10),
                )
                .map_err(ClusterError::kafka(format!(
                    "going back to the committed offset of {} partition {}",
                    element.topic(),
                    element.partition()
                )))?;
            if let Some(&stage) = self
                .input_topics
                .iter()
                .find(|(_, topic)| topic.as_str() == element.topic())
                .map(|(stage, _)| stage)
            {
                self.assigned.push(TaskId {
                    stage,
                    partition: element.partition(),
                });
            }
        }
        Ok(())
    }

    /// [`Member::commit`], going back to the last commit when a rebalance got in the way.
    fn commit_or_rewind<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> Result<()> {
        match self.commit(consumer) {
            Err(e) if abortable(&e) => {
                tracing::info!(error = %e, "a commit failed; going back to the last commit");
                self.rewind(consumer)
            }
            other => other,
        }
    }
}

/// The consumer's view of the member: commits and drops tasks before their partitions
/// are revoked, notes partitions assigned.
struct MemberContext {
    member: Arc<Mutex<Member>>,
    /// The rooted stage reading each input topic.
    stages_by_topic: HashMap<String, StageId>,
}

impl ClientContext for MemberContext {}

fn lock(member: &Mutex<Member>) -> MutexGuard<'_, Member> {
    member
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemberContext {
    fn tasks_of(&self, partitions: &TopicPartitionList) -> Vec<TaskId> {
        partitions
            .elements()
            .iter()
            .filter_map(|e| {
                let stage = *self.stages_by_topic.get(e.topic())?;
                Some(TaskId {
                    stage,
                    partition: e.partition(),
                })
            })
            .collect()
    }
}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(partitions) = rebalance else {
            return;
        };
        let lost = self.tasks_of(partitions);
        let mut member = lock(&self.member);
        if consumer.assignment_lost() {
            member.fatal = Some(ClusterError::Setting(format!(
                "this process lost tasks {lost:?} to the group (it was too slow to poll, or \
                 cut off): its open transaction cannot commit"
            )));
            return;
        }
        if member.fatal.is_none() && !member.rewind && !member.failed {
            member.refresh_local = true;
            match member.commit(consumer) {
                Ok(()) => {}
                Err(e) if abortable(&e) => {
                    tracing::info!(error = %e, "the commit before a rebalance failed; going back to the last commit");
                    member.rewind = true;
                }
                Err(e) => member.fatal = Some(e),
            }
        }
        for id in &lost {
            member.tasks.remove(id);
            member.gained_at.remove(id);
            member.assigned.retain(|a| a != id);
        }
        if !lost.is_empty() {
            let names: Vec<String> = lost.iter().map(ToString::to_string).collect();
            tracing::info!(tasks = %names.join(" "), "lost tasks");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                let gained = self.tasks_of(partitions);
                lock(&self.member).assigned.extend(gained);
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// Leaves the group before the consumer is dropped: unsubscribes and polls until the
/// revocation ran (committing what the tasks did, unless the process failed). Dropping a
/// cooperative consumer that still owns partitions can hang in librdkafka's close, so
/// one that could not give them up is left undropped (the process exits anyway; the group
/// drops it after its session timeout).
fn leave<C: ConsumerContext>(consumer: BaseConsumer<C>) {
    consumer.unsubscribe();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let owned = consumer.assignment().map_or(0, |a| a.count());
        if owned == 0 {
            return;
        }
        let _ = consumer.poll(Duration::from_millis(100));
    }
    tracing::warn!("the consumer still owned partitions when the process left the group");
    std::mem::forget(consumer);
}

/// What a process needs to make a task of a partition it gained.
struct TaskMaker<'a> {
    topology: &'a ClusterTopology<'a>,
    client: &'a ClientConfig,
    context: OperatorContext,
    late: LateRows,
}

impl TaskMaker<'_> {
    /// Makes the tasks `gained` of `member`, each restored from its changelog partition
    /// (all read together: a reader of Kafka takes a while to start).
    fn gain_all<C: ConsumerContext>(
        &self,
        gained: Vec<TaskId>,
        member: &mut Member,
        consumer: &BaseConsumer<C>,
    ) -> Result<()> {
        let started = Instant::now();
        let places: Vec<TaskPlace<'_>> = gained
            .iter()
            .map(|&id| TaskPlace {
                id,
                changelog: &member.changelog_topics[&id.stage],
                input: &member.input_topics[&id.stage],
            })
            .collect();
        let local = member.local.clone();
        let restored = restore(self.client, consumer, &places, local.as_ref())?;
        let read_ms = started.elapsed().as_millis() as u64;
        for (id, restored) in gained.into_iter().zip(restored) {
            let Restored { records, tail, end } = restored;
            tracing::info!(
                task = %id,
                from_local_copy = tail.is_some(),
                tail_records = tail.as_ref().unwrap_or(&records).len(),
                "read the task's changelog"
            );
            // The copy takes what was read from the changelog: the tail over it, or all.
            if let Some(local) = &local {
                if tail.is_none() {
                    local.forget(id);
                }
                local.write(id, tail.as_ref().unwrap_or(&records), Some(end));
            }
            self.gain(id, records, read_ms, member, consumer)?;
        }
        Ok(())
    }

    /// Makes task `id` of `member` from its `restored` changelog records (read in
    /// `read_ms`). A bounded source task that starts for the first time reads up to its
    /// partition's end offset now; if its committed offset already stands there, it
    /// finishes at once.
    fn gain<C: ConsumerContext>(
        &self,
        id: TaskId,
        restored: crate::wire::LatestRecords,
        read_ms: u64,
        member: &mut Member,
        consumer: &BaseConsumer<C>,
    ) -> Result<()> {
        member.gained_at.insert(id, Instant::now());
        let input = &member.input_topics[&id.stage];
        let started = Instant::now();
        let (records, bytes) = (
            restored.len(),
            restored.values().flatten().map(Vec::len).sum::<usize>(),
        );
        let bounded = match self.topology.stage(id.stage).map(|s| &s.input) {
            Some(StageInput::Source { node, .. }) => {
                node.table
                    .options
                    .get("scan.bounded.mode")
                    .map(String::as_str)
                    == Some("latest-offset")
            }
            _ => false,
        };
        let end_offset = if bounded {
            Some(topics::offsets(self.client, input, id.partition)?.1)
        } else {
            None
        };
        let setup = TaskSetup {
            topology: self.topology,
            context: self.context.clone(),
            late: self.late.clone(),
            restored,
            end_offset,
        };
        let mut task = Task::new(id, setup)?;
        tracing::info!(
            task = %id,
            records,
            bytes,
            read_ms,
            build_ms = started.elapsed().as_millis() as u64,
            state_bytes = task.state_size(),
            "task restored from its changelog"
        );
        if task.finished() {
            member.announced.insert(id);
        } else if let Some(end) = task.end_offset() {
            let start = match topics::committed_offset(consumer, input, id.partition)? {
                Some(offset) => offset,
                None => topics::offsets(self.client, input, id.partition)?.0,
            };
            if start >= end {
                task.finish(&mut member.writer)?;
            }
        }
        member.tasks.insert(id, task);
        Ok(())
    }
}

/// How often the local copies of the tasks' changelogs note where the changelogs end.
const LOCAL_OFFSET_INTERVAL: Duration = Duration::from_secs(30);

/// The process's loop: poll, hand records to tasks, commit, until stopped or, for a
/// bounded job, until every task of the job finished.
fn run(setup: MemberSetup<'_>, stop: &AtomicBool) -> Result<()> {
    let topology = topology(setup.plan, setup.scale, setup.partitions)?;
    let job = &setup.scale.job;
    let client = &setup.client;
    let mut input_topics = HashMap::new();
    let mut stages_by_topic = HashMap::new();
    let mut repartition_topics = HashMap::new();
    let mut changelog_topics = HashMap::new();
    for stage in &topology.stages {
        let topic = match &stage.input {
            StageInput::Source { topic, .. } => topic.clone(),
            StageInput::Repartition { .. } => {
                let topic = topology.repartition_topic(stage.id);
                repartition_topics.insert(stage.id, topic.clone());
                topic
            }
        };
        if let Some(other) = stages_by_topic.insert(topic.clone(), stage.id) {
            return Err(ClusterError::Unsupported(format!(
                "topic {topic} is read by stages {other} and {}",
                stage.id
            )));
        }
        input_topics.insert(stage.id, topic);
        changelog_topics.insert(stage.id, topology.changelog_topic(stage.id));
    }
    let topic_writer = |table: &TableDef,
                        schema: &datafusion::arrow::datatypes::SchemaRef|
     -> Result<TopicWriter> {
        Ok(TopicWriter {
            topic: table.options.get("topic").cloned().ok_or_else(|| {
                ClusterError::Setting(format!("table {} has no 'topic'", table.name))
            })?,
            encoder: KafkaRecordEncoder::new(table, schema)?,
        })
    };
    let sink = topic_writer(&setup.sink, &setup.plan.schema())?;
    let late = match &setup.config.late_data_sink {
        Some(table) => Some(topic_writer(table, &table.physical_schema)?),
        None => None,
    };
    let member = Arc::new(Mutex::new(Member {
        tasks: BTreeMap::new(),
        assigned: Vec::new(),
        gained_at: HashMap::new(),
        announced: BTreeSet::new(),
        purge: topics::RepartitionPurge::new(client, repartition_topics.values().cloned())?,
        writer: TransactionWriter::open(
            client,
            job,
            sink,
            late,
            repartition_topics,
            setup.metrics.clone(),
        )?,
        input_topics,
        changelog_topics,
        status_topic: topology.status_topic(),
        fatal: None,
        rewind: false,
        failed: false,
        local: setup
            .scale
            .local_dir
            .as_ref()
            .map(|dir| LocalSnapshots::new(dir.join("tasks").join(job))),
        local_offsets_at: Instant::now(),
        refresh_local: false,
    }));
    let context = MemberContext {
        member: member.clone(),
        stages_by_topic: stages_by_topic.clone(),
    };
    let consumer: BaseConsumer<MemberContext> = client
        .clone()
        .set("group.id", topology.group())
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("fetch.wait.max.ms", "100")
        // Not librdkafka's default of a second without fetching once a partition's queue
        // holds enough: the process would wait with idle cores.
        .set("fetch.queue.backoff.ms", "10")
        .create_with_context(context)
        .map_err(ClusterError::kafka("creating the job's consumer"))?;
    let subscribed: Vec<&str> = stages_by_topic.keys().map(String::as_str).collect();
    consumer
        .subscribe(&subscribed)
        .map_err(ClusterError::kafka("subscribing to the job's topics"))?;
    let status = StatusReader::new(client, &topology.status_topic())?;
    let mut status = status;

    let maker = TaskMaker {
        topology: &topology,
        client,
        context: OperatorContext {
            config: setup.config.clone(),
            metrics: setup.metrics.clone(),
            clock: ProcessingTime::default(),
            lookup: LookupTable::None,
        },
        late: LateRows::default(),
    };
    let total = topology.task_count();
    let interval = setup.scale.commit_interval;
    let mut last_commit = Instant::now();
    let mut announced_idle = false;
    // Tasks this member counts in the process's `tasks_owned`.
    let mut owned = 0i64;
    let mut gauge = setup.metrics.state_gauge();
    // The loop returns on a stop, at the job's end, or on an error; either way the
    // process then leaves the group itself (see `leave`).
    let outcome = (|| -> Result<()> {
        loop {
            if stop.load(Ordering::Relaxed) {
                let mut member = lock(&member);
                member.refresh_local = true;
                member.commit_or_rewind(&consumer)?;
                member.purge.purge(true);
                tracing::info!(job = %job, "stopped; leaving the group");
                return Ok(());
            }
            let mut polled = PolledRecords::default();
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => polled.push(&message),
                Some(Err(e)) => tracing::warn!(error = %e, "kafka consumer error; retrying"),
                None => {}
            }
            while polled.len() < MAX_POLL_RECORDS {
                match consumer.poll(Duration::ZERO) {
                    Some(Ok(message)) => polled.push(&message),
                    _ => break,
                }
            }
            let mut guard = lock(&member);
            let state = &mut *guard;
            if let Some(e) = state.fatal.take() {
                return Err(e);
            }
            if state.rewind {
                state.rewind(&consumer)?;
                // What was polled lies past the committed offsets the partitions went back to.
                polled = PolledRecords::default();
            }
            // Newly assigned partitions become tasks, restored, before their records.
            let gained = std::mem::take(&mut state.assigned);
            if !gained.is_empty() {
                let names: Vec<String> = gained.iter().map(ToString::to_string).collect();
                tracing::info!(tasks = %names.join(" "), "gained tasks; restoring their state");
            }
            if !gained.is_empty() {
                maker.gain_all(gained, state, &consumer)?;
            }
            // The process's count is the sum over its members.
            let now = state.tasks.len() as i64;
            setup
                .metrics
                .tasks_owned
                .fetch_add(now - owned, Ordering::Relaxed);
            owned = now;
            if state.tasks.is_empty() && !announced_idle && total > 0 {
                announced_idle = true;
                tracing::info!(
                    tasks = total,
                    "this member owns no task now (more members, processes times threads, \
                     than the job's {total} tasks, or waiting for the group)"
                );
            } else if !state.tasks.is_empty() {
                announced_idle = false;
            }
            // Each partition's records, in order, to its task.
            let mut by_task: BTreeMap<TaskId, PartitionRecords<'_>> = BTreeMap::new();
            for record in 0..polled.len() {
                let Some(&stage) = stages_by_topic.get(polled.topics[record].as_ref()) else {
                    continue;
                };
                let id = TaskId {
                    stage,
                    partition: polled.partitions[record],
                };
                if !state.tasks.contains_key(&id) {
                    continue;
                }
                by_task.entry(id).or_default().push(&polled, record, true);
            }
            let processed = (|| -> Result<()> {
                for (id, records) in by_task {
                    let Some(task) = state.tasks.get_mut(&id) else {
                        continue;
                    };
                    task.process(&records, &mut state.writer)?;
                }
                // Late rows go to the late-data table in the same transaction (else they
                // are only counted, by the operators).
                for rows in maker.late.drain() {
                    state.writer.late_rows(&rows)?;
                }
                for task in state.tasks.values_mut() {
                    task.check_idle(&mut state.writer)?;
                }
                Ok(())
            })();
            match processed {
                // The open transaction failed under the records (a rebalance fenced it):
                // none of them commits; the tasks start again from the last commit.
                Err(e) if abortable(&e) => {
                    tracing::info!(error = %e, "a record was refused by a failed transaction; going back to the last commit");
                    state.rewind = true;
                    continue;
                }
                other => other?,
            }
            let newly_finished = state
                .tasks
                .iter()
                .any(|(id, t)| t.finished() && !state.announced.contains(id));
            if newly_finished || last_commit.elapsed() >= interval {
                state.commit_or_rewind(&consumer)?;
                state.purge.purge(false);
                last_commit = Instant::now();
                let size: usize = state.tasks.values_mut().map(Task::state_size).sum();
                gauge.update(|| size);
            }
            drop(guard);
            if status.read()? >= total {
                let mut member = lock(&member);
                member.refresh_local = true;
                member.commit_or_rewind(&consumer)?;
                member.purge.purge(true);
                tracing::info!(job = %job, tasks = total, "every task of the job finished");
                return Ok(());
            }
        }
    })();
    if outcome.is_err() {
        // Nothing of the failed transaction may commit, not even at the revocation.
        let mut member = lock(&member);
        member.failed = true;
        if let Err(e) = member.writer.abort() {
            tracing::warn!(error = %e, "aborting the transaction after a failure");
        }
    }
    leave(consumer);
    setup
        .metrics
        .tasks_owned
        .fetch_sub(owned, Ordering::Relaxed);
    outcome
}
