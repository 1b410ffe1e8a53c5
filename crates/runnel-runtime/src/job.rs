//! Running a [`StreamPlan`]: builds its operators, connects them with bounded channels and
//! spawns them on the caller's tokio runtime.
//!
//! Each operator runs as up to `parallelism.default` subtasks. A job is a tree of tasks:
//! source readers (decoding, computed columns, watermarks), chains of single-input
//! operators run back to back in one task, one task per join subtask, and the sink. Rows
//! reach a keyed operator's subtasks through an [`Exchange`] (by the hash of the key);
//! stateless operators run in the task of the subtask feeding them. Channels hold a few
//! batches each, so a slow sink slows the sources and memory stays flat.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchemaRef;
use datafusion::logical_expr::Expr;
use futures::future::BoxFuture;
use runnel_sql::{SourceNode, StreamNode, StreamPlan, TableDef, WindowKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::checkpoint::{CheckpointCoordinator, CheckpointStore, RestoredCheckpoint};
use crate::config::{DeliveryGuarantee, JobConfig};
use crate::connector::{ConnectorFactory, SourceSplit};
use crate::error::{Result, RuntimeError};
use crate::exchange::{Exchange, MergedInputs};
use crate::message::{Message, WATERMARK_END};
use crate::metrics::{JobMetrics, MetricsSnapshot};
use crate::operator::{ChainCheckpoints, Operator, OperatorChain, Side, TwoInputOperator};
use crate::operators::{
    FilterOperator, IntervalJoinOperator, LateRowsOutput, LookupJoinOperator, OverWindowOperator,
    ProjectionOperator, RelabelOperator, SessionWindowOperator, TopNOperator,
    UpdatingAggregateOperator, WindowAggregateOperator, WindowAssignOperator, WindowJoinOperator,
};
use crate::sink::Sink;
use crate::source::SourceTask;

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
}

impl Drop for JobHandle {
    fn drop(&mut self) {
        if let Some(timer) = &self.checkpoint_timer {
            timer.abort();
        }
    }
}

impl JobHandle {
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
    /// (up to `timeout`) until it is committed, so a restart resumes exactly there; then
    /// stops every task. Returns the job's counters.
    pub async fn stop(self, timeout: std::time::Duration) -> Result<MetricsSnapshot> {
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

/// Where one subtask reads its input: the channels of the upstream subtasks that feed it.
/// Several are merged (watermarks as their minimum, barriers aligned; see
/// [`MergedInputs`]).
enum LaneInput {
    Channel(mpsc::Receiver<Message>),
    Merged(Box<MergedInputs>),
}

impl LaneInput {
    fn new(mut channels: Vec<mpsc::Receiver<Message>>) -> Self {
        if channels.len() == 1 {
            LaneInput::Channel(channels.remove(0))
        } else {
            LaneInput::Merged(Box::new(MergedInputs::new(vec![channels])))
        }
    }

    async fn next(&mut self) -> Option<Message> {
        match self {
            LaneInput::Channel(receiver) => receiver.recv().await,
            LaneInput::Merged(merged) => merged.next().await.map(|(_, message)| message),
        }
    }
}

/// One subtask of a stage while the job is being built: the channels it reads, plus the
/// single-input operators that still wait to be run on them (chained in one task,
/// Flink's operator chaining), each with its id in the job (for checkpoints).
struct Lane {
    inputs: Vec<mpsc::Receiver<Message>>,
    operators: Vec<(usize, Box<dyn Operator>)>,
}

impl Lane {
    fn reading(inputs: Vec<mpsc::Receiver<Message>>) -> Self {
        Self {
            inputs,
            operators: Vec::new(),
        }
    }
}

/// The output of a plan node while the job is being built: its parallel subtasks.
struct Pipeline {
    lanes: Vec<Lane>,
    /// Whether the stream's watermarks are processing time (`PROCTIME()` reads them).
    processing_time: bool,
}

/// How an operator's input rows must be spread over its subtasks.
enum Routing {
    /// Each subtask works on whatever rows its input subtask sends (stateless operators).
    AsTheyCome,
    /// All rows to one subtask (state without a key: a global Top-N, a join on no key).
    Single,
    /// Rows with equal `keys` (over `schema`) to the same subtask, one of `parallelism`.
    Hash(Vec<Expr>, DFSchemaRef),
}

/// Builds a job's tasks from its plan, bottom-up.
struct JobBuilder<'a> {
    connectors: &'a dyn ConnectorFactory,
    config: &'a JobConfig,
    metrics: Arc<JobMetrics>,
    tasks: Vec<(String, JoinHandle<Result<()>>)>,
    /// Set when the job checkpoints.
    checkpoints: Option<Arc<CheckpointCoordinator>>,
    /// The checkpoint the job resumes from, if any.
    restored: Option<Arc<RestoredCheckpoint>>,
    /// Ids handed out so far: operators and sources are numbered in build order, which
    /// is the same for the same plan and parallelism, so a restored job finds its states.
    operator_ids: usize,
    source_ids: usize,
}

/// The id of an operator that keeps no state.
const STATELESS: usize = usize::MAX;

impl JobBuilder<'_> {
    /// Where a join's two inputs send their late rows, if the job routes them.
    fn late_outputs_for_join(
        &self,
        left: &SchemaRef,
        right: &SchemaRef,
        operator: &str,
    ) -> Result<(Option<LateRowsOutput>, Option<LateRowsOutput>)> {
        match &self.config.late_data_sink {
            Some(sink) => {
                let (l, r) = LateRowsOutput::for_join(sink, left, right, operator)?;
                Ok((Some(l), Some(r)))
            }
            None => Ok((None, None)),
        }
    }

    /// The pipeline producing `node`'s rows.
    fn build<'b>(&'b mut self, node: &'b StreamNode) -> BoxFuture<'b, Result<Pipeline>> {
        Box::pin(async move {
            match node {
                StreamNode::Source(source) => self.spawn_source(source).await,
                StreamNode::Union { inputs, .. } => {
                    // The union's subtasks are its inputs' subtasks: the stage after it
                    // reads them all.
                    let schema = node.arrow_schema();
                    let mut lanes = Vec::new();
                    let mut processing_time = false;
                    for input in inputs {
                        let pipeline = self.build(input).await?;
                        processing_time |= pipeline.processing_time;
                        for mut lane in pipeline.lanes {
                            let relabel = RelabelOperator::new(schema.clone());
                            lane.operators.push((STATELESS, Box::new(relabel)));
                            lanes.push(lane);
                        }
                    }
                    Ok(Pipeline {
                        lanes,
                        processing_time,
                    })
                }
                StreamNode::IntervalJoin(join) => {
                    let keys = join_keys(node);
                    self.spawn_two_input(node, &join.left, &join.right, keys)
                        .await
                }
                StreamNode::WindowJoin(join) => {
                    let keys = join_keys(node);
                    self.spawn_two_input(node, &join.left, &join.right, keys)
                        .await
                }
                StreamNode::LookupJoin(join) => {
                    let table = self.read_whole(&join.table).await?;
                    let mut pipeline = self.build(&join.input).await?;
                    for lane in &mut pipeline.lanes {
                        let operator = LookupJoinOperator::try_new(join, table.clone())?;
                        self.chain(lane, Box::new(operator))?;
                    }
                    Ok(pipeline)
                }
                _ => {
                    let [input] = node.inputs()[..] else {
                        return Err(RuntimeError::Build(format!(
                            "{} was expected to have one input",
                            node.name()
                        )));
                    };
                    let pipeline = self.build(input).await?;
                    let mut pipeline = self.route(pipeline, routing(node), node.name())?;
                    for lane in &mut pipeline.lanes {
                        let operator =
                            single_input_operator(node, self.config, self.metrics.clone())?;
                        self.chain(lane, operator)?;
                    }
                    Ok(pipeline)
                }
            }
        })
    }

    /// Chains `operator` onto `lane`, restoring its state when the job resumes.
    fn chain(&mut self, lane: &mut Lane, mut operator: Box<dyn Operator>) -> Result<()> {
        let (id, state) = self.next_operator(operator.name(), operator.checkpointable())?;
        if let Some(state) = state {
            operator.restore(state)?;
        }
        lane.operators.push((id, operator));
        Ok(())
    }

    /// Spreads `pipeline`'s rows over the subtasks of the operator `name` as `routing`
    /// says. Without a change (rows as they come, or one subtask feeding one), the
    /// operator is chained onto the same task.
    fn route(&mut self, pipeline: Pipeline, routing: Routing, name: &str) -> Result<Pipeline> {
        let single_lane = pipeline.lanes.len() == 1;
        let unchanged = match &routing {
            Routing::AsTheyCome => true,
            Routing::Single => single_lane,
            Routing::Hash(..) => single_lane && self.config.parallelism() == 1,
        };
        if unchanged {
            return Ok(pipeline);
        }
        let processing_time = pipeline.processing_time;
        let lanes = self
            .exchange(pipeline, routing, name)?
            .into_iter()
            .map(Lane::reading)
            .collect();
        Ok(Pipeline {
            lanes,
            processing_time,
        })
    }

    /// Runs each of `pipeline`'s subtasks, sending its output to the next stage's
    /// subtasks as `routing` says; returns, per next subtask, the channels it reads.
    fn exchange(
        &mut self,
        pipeline: Pipeline,
        routing: Routing,
        name: &str,
    ) -> Result<Vec<Vec<mpsc::Receiver<Message>>>> {
        let (targets, keys) = match routing {
            Routing::Hash(keys, schema) if self.config.parallelism() > 1 => {
                let keys = crate::expr::compile(&keys, &schema)?;
                (self.config.parallelism(), keys)
            }
            _ => (1, Vec::new()),
        };
        let mut inboxes: Vec<Vec<mpsc::Receiver<Message>>> =
            (0..targets).map(|_| Vec::new()).collect();
        for lane in pipeline.lanes {
            if targets == 1 && lane.operators.is_empty() {
                // Nothing to run: the next subtask reads these channels itself.
                inboxes[0].extend(lane.inputs);
                continue;
            }
            let mut senders = Vec::with_capacity(targets);
            for inbox in &mut inboxes {
                let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
                senders.push(sender);
                inbox.push(receiver);
            }
            let exchange = if targets == 1 {
                Exchange::forward(senders.remove(0))
            } else {
                Exchange::hash(senders, keys.clone(), name)
            };
            self.spawn_lane(lane, exchange, pipeline.processing_time);
        }
        Ok(inboxes)
    }

    /// Every row of a bounded stream (the table side of a lookup join), read to its end
    /// before the job's streams start.
    async fn read_whole(&mut self, node: &StreamNode) -> Result<Vec<RecordBatch>> {
        let mut sources = Vec::new();
        collect_sources(node, &mut sources);
        if let Some(unbounded) = sources.iter().find(|t| !self.connectors.is_bounded(t)) {
            return Err(RuntimeError::Build(format!(
                "{} is joined FOR SYSTEM_TIME AS OF, so it is read whole before the stream \
                 starts; but reading it does not end (use a file, or a Kafka table with \
                 'scan.bounded.mode')",
                unbounded.name
            )));
        }
        // The table is read again in full when a job restarts: it takes no part in
        // checkpoints.
        let checkpoints = self.checkpoints.take();
        let restored = self.restored.take();
        let source_ids = self.source_ids;
        let pipeline = self.build(node).await;
        self.checkpoints = checkpoints;
        self.restored = restored;
        self.source_ids = source_ids;
        let inputs = self.exchange(pipeline?, Routing::Single, "the lookup join")?;
        let mut input = LaneInput::new(inputs.into_iter().flatten().collect());
        let mut batches = Vec::new();
        while let Some(message) = input.next().await {
            match message {
                Message::Batch(batch) => batches.push(batch),
                Message::End => break,
                Message::Watermark(_) | Message::Late(_) | Message::Barrier(_) | Message::Idle => {}
            }
        }
        Ok(batches)
    }

    /// The id of the operator being built (ids follow build order, the same for the same
    /// plan), after checking it can take part in the job's checkpoints; with the state to
    /// restore it from when the job resumes.
    fn next_operator(
        &mut self,
        name: &str,
        checkpointable: bool,
    ) -> Result<(usize, Option<RecordBatch>)> {
        let id = self.operator_ids;
        self.operator_ids += 1;
        if self.checkpoints.is_some() && !checkpointable {
            return Err(RuntimeError::Build(format!(
                "checkpointing does not support the {name} operator yet; run this job \
                 without 'execution.checkpointing.interval'"
            )));
        }
        let state = self
            .restored
            .as_ref()
            .and_then(|r| r.operators.get(&id))
            .cloned();
        Ok((id, state))
    }

    /// Builds both inputs of the two-input operator `node`, routes each side's rows by
    /// its `keys` and spawns the operator's subtasks.
    async fn spawn_two_input(
        &mut self,
        node: &StreamNode,
        left: &StreamNode,
        right: &StreamNode,
        keys: Option<[(Vec<Expr>, DFSchemaRef); 2]>,
    ) -> Result<Pipeline> {
        let left = self.build(left).await?;
        let right = self.build(right).await?;
        let processing_time = left.processing_time || right.processing_time;
        let (left_routing, right_routing) = match keys {
            Some([(left_keys, left_schema), (right_keys, right_schema)]) => (
                Routing::Hash(left_keys, left_schema),
                Routing::Hash(right_keys, right_schema),
            ),
            None => (Routing::Single, Routing::Single),
        };
        let name = node.name();
        let left = self.exchange(left, left_routing, name)?;
        let right = self.exchange(right, right_routing, name)?;
        let mut lanes = Vec::with_capacity(left.len());
        for (left, right) in left.into_iter().zip(right) {
            let mut operator = self.two_input_operator(node)?;
            let (id, state) = self.next_operator(operator.name(), operator.checkpointable())?;
            if let Some(state) = state {
                operator.restore(state)?;
            }
            let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
            let checkpoints = self.checkpoints.clone().map(|c| (c, id));
            self.tasks.push((
                operator.name().to_string(),
                tokio::spawn(run_two_input(
                    operator,
                    MergedInputs::new(vec![left, right]),
                    sender,
                    checkpoints,
                    self.metrics.state_gauge(),
                )),
            ));
            lanes.push(Lane::reading(vec![receiver]));
        }
        Ok(Pipeline {
            lanes,
            processing_time,
        })
    }

    /// A new instance (for one subtask) of the two-input operator `node` runs.
    fn two_input_operator(&self, node: &StreamNode) -> Result<Box<dyn TwoInputOperator>> {
        let metrics = self.metrics.clone();
        Ok(match node {
            StreamNode::IntervalJoin(join) => {
                let late = self.late_outputs_for_join(
                    &join.left.arrow_schema(),
                    &join.right.arrow_schema(),
                    "the join",
                )?;
                Box::new(IntervalJoinOperator::try_new(join, metrics, late)?)
            }
            StreamNode::WindowJoin(join) => {
                let late = self.late_outputs_for_join(
                    &join.left.arrow_schema(),
                    &join.right.arrow_schema(),
                    "the window join",
                )?;
                Box::new(WindowJoinOperator::try_new(join, metrics, late)?)
            }
            other => {
                return Err(RuntimeError::Build(format!(
                    "{} is not a two-input operator",
                    other.name()
                )))
            }
        })
    }

    /// Opens a source's readers (one per split, see [`ConnectorFactory::max_splits`])
    /// and spawns their tasks.
    async fn spawn_source(&mut self, node: &SourceNode) -> Result<Pipeline> {
        let count = source_subtasks(self.connectors, self.config, &node.table);
        let mut lanes = Vec::with_capacity(count);
        for split in 0..count {
            let index = self.source_ids;
            self.source_ids += 1;
            let restored = self
                .restored
                .as_ref()
                .and_then(|r| r.source(index).cloned());
            if let Some(state) = &restored {
                if state.table != node.table.name {
                    return Err(RuntimeError::Checkpoint(format!(
                        "the checkpoint's source {index} is table {}, not {}: it belongs to another job",
                        state.table, node.table.name
                    )));
                }
            }
            let source = self
                .connectors
                .create_source(
                    &node.table,
                    self.metrics.clone(),
                    self.config,
                    SourceSplit {
                        index: split,
                        count,
                    },
                    restored.as_ref(),
                )
                .await?;
            let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
            let task = SourceTask {
                source,
                node: node.clone(),
                metrics: self.metrics.clone(),
                config: self.config.clone(),
                output: sender,
                index,
                checkpoints: self.checkpoints.clone(),
                restored,
            };
            self.tasks.push((
                format!("source {} ({}/{count})", node.table.name, split + 1),
                tokio::spawn(task.run()),
            ));
            lanes.push(Lane::reading(vec![receiver]));
        }
        Ok(Pipeline {
            lanes,
            processing_time: node.processing_time,
        })
    }

    /// Runs one subtask's chained operators in a task, sending their output through
    /// `output`.
    fn spawn_lane(&mut self, lane: Lane, mut output: Exchange, processing_time: bool) {
        let Lane { inputs, operators } = lane;
        let mut input = LaneInput::new(inputs);
        let (ids, operators): (Vec<usize>, Vec<Box<dyn Operator>>) = operators.into_iter().unzip();
        let mut chain =
            OperatorChain::new(operators).with_checkpoints(self.checkpoints.clone().map(
                |coordinator| ChainCheckpoints {
                    coordinator,
                    operator_ids: ids,
                },
            ));
        let mut gauge = self.metrics.state_gauge();
        self.tasks.push((
            "operators".to_string(),
            tokio::spawn(async move {
                let mut out = Vec::new();
                // On processing time, `PROCTIME()` reads the watermark sent before the batch.
                let mut now = None;
                while let Some(message) = input.next().await {
                    let last = matches!(message, Message::End);
                    if let (true, Message::Watermark(w)) = (processing_time, &message) {
                        now = Some(*w);
                    }
                    match now {
                        Some(now) => runnel_sql::functions::with_processing_time(now, || {
                            chain.process(message, &mut out)
                        })?,
                        None => chain.process(message, &mut out)?,
                    }
                    gauge.update(|| chain.state_size());
                    for message in out.drain(..) {
                        if !output.send(message).await? {
                            return Ok(()); // downstream stopped; it reports why
                        }
                    }
                    if last {
                        break;
                    }
                }
                Ok(())
            }),
        ));
    }
}

/// A new instance (for one subtask) of the single-input operator `node` runs (filter,
/// projection, window assignment, window or unwindowed aggregate, `OVER`, Top-N), with
/// `config`'s late-data sink; `metrics` receives its counts. Public so benchmarks can
/// drive one operator by itself.
pub fn single_input_operator(
    node: &StreamNode,
    config: &JobConfig,
    metrics: Arc<JobMetrics>,
) -> Result<Box<dyn Operator>> {
    let late_output = |input: &SchemaRef, operator: &str| -> Result<Option<LateRowsOutput>> {
        config
            .late_data_sink
            .as_ref()
            .map(|sink| LateRowsOutput::try_new(sink, input, operator))
            .transpose()
    };
    Ok(match node {
        StreamNode::Filter {
            predicate,
            input_schema,
            ..
        } => Box::new(FilterOperator::try_new(predicate, input_schema)?),
        StreamNode::Projection {
            exprs,
            input_schema,
            ..
        } => Box::new(ProjectionOperator::try_new(
            exprs,
            input_schema,
            node.arrow_schema(),
        )?),
        StreamNode::WindowAssign {
            input,
            kind,
            time_column,
            partition_keys,
            schema,
            panes,
        } => {
            let input_schema = input.arrow_schema();
            let schema = Arc::new(schema.as_arrow().clone());
            if let WindowKind::Session { gap_ms } = kind {
                Box::new(SessionWindowOperator::try_new(
                    *gap_ms,
                    *time_column,
                    partition_keys.clone(),
                    input_schema.clone(),
                    schema,
                    metrics,
                    late_output(&input_schema, "the session window")?,
                )?)
            } else {
                Box::new(
                    WindowAssignOperator::new(
                        *kind,
                        *time_column,
                        &input_schema,
                        schema,
                        metrics,
                        late_output(&input_schema, "the window")?,
                    )
                    .into_panes(*panes),
                )
            }
        }
        StreamNode::OverWindow(over) => {
            let late = late_output(&over.input.arrow_schema(), "the OVER window")?;
            Box::new(OverWindowOperator::try_new(over, metrics, late)?)
        }
        StreamNode::WindowAggregate(aggregate) => {
            Box::new(WindowAggregateOperator::try_new(aggregate, metrics)?)
        }
        StreamNode::UpdatingAggregate(aggregate) => Box::new(UpdatingAggregateOperator::try_new(
            aggregate,
            aggregate.input.is_updating(),
        )?),
        StreamNode::TopN(top) => Box::new(TopNOperator::try_new(top)?),
        other => {
            return Err(RuntimeError::Build(format!(
                "{} is not a single-input operator",
                other.name()
            )))
        }
    })
}

/// The keys a join's two sides are hashed by (left, right, each over its side's schema),
/// or `None` when the join has no key and runs as one subtask. A window join's rows meet
/// only within one window, so the window's end is part of its key.
fn join_keys(node: &StreamNode) -> Option<[(Vec<Expr>, DFSchemaRef); 2]> {
    let side = |keys: &[Expr], schema: &DFSchemaRef, window_end: Option<usize>| {
        let mut keys = keys.to_vec();
        if let Some(end) = window_end {
            keys.push(Expr::Column(schema.columns()[end].clone()));
        }
        (keys, schema.clone())
    };
    let keys = match node {
        StreamNode::IntervalJoin(j) => [
            side(&j.left_keys, &j.left_schema, None),
            side(&j.right_keys, &j.right_schema, None),
        ],
        StreamNode::WindowJoin(j) => [
            side(&j.left_keys, &j.left_schema, Some(j.left_window_end)),
            side(&j.right_keys, &j.right_schema, Some(j.right_window_end)),
        ],
        _ => return None,
    };
    (!keys[0].0.is_empty()).then_some(keys)
}

/// How `node`'s input rows must be spread over its subtasks: by the key its state is
/// kept under, so each key's rows meet in one subtask.
fn routing(node: &StreamNode) -> Routing {
    let hash = |keys: Vec<Expr>, schema: &DFSchemaRef| {
        if keys.is_empty() {
            Routing::Single
        } else {
            Routing::Hash(keys, schema.clone())
        }
    };
    match node {
        StreamNode::WindowAssign {
            input,
            kind: WindowKind::Session { .. },
            partition_keys,
            ..
        } => {
            let schema = input.schema();
            let columns = schema.columns();
            hash(
                partition_keys
                    .iter()
                    .map(|&i| Expr::Column(columns[i].clone()))
                    .collect(),
                &schema,
            )
        }
        // Each window's groups: the window's end follows from its start. Per pane, a
        // key's panes must meet in one subtask: the window is no part of the key.
        StreamNode::WindowAggregate(aggregate) => hash(
            aggregate
                .group_exprs
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != aggregate.window_end)
                .filter(|(i, _)| !aggregate.panes || *i != aggregate.window_start)
                .map(|(_, e)| e.clone())
                .collect(),
            &aggregate.input_schema,
        ),
        StreamNode::UpdatingAggregate(aggregate) => {
            hash(aggregate.group_exprs.clone(), &aggregate.input_schema)
        }
        StreamNode::TopN(top) => hash(top.partition_by.clone(), &top.input_schema),
        StreamNode::OverWindow(over) => {
            hash(over_partition_keys(&over.window_exprs), &over.input_schema)
        }
        _ => Routing::AsTheyCome,
    }
}

/// The `PARTITION BY` keys shared by every function of an `OVER` node (none when they
/// differ: then one subtask sees all rows).
fn over_partition_keys(exprs: &[Expr]) -> Vec<Expr> {
    let partition_of = |expr: &Expr| match expr.clone().unalias() {
        Expr::WindowFunction(function) => Some(function.params.partition_by.clone()),
        _ => None,
    };
    let mut keys = exprs.iter().map(partition_of);
    let Some(Some(first)) = keys.next() else {
        return Vec::new();
    };
    if keys.all(|k| k.as_ref() == Some(&first)) {
        first
    } else {
        Vec::new()
    }
}

/// How many parallel readers `table` gets.
fn source_subtasks(
    connectors: &dyn ConnectorFactory,
    config: &JobConfig,
    table: &TableDef,
) -> usize {
    config
        .parallelism()
        .min(connectors.max_splits(table))
        .max(1)
}

/// The tables `node` reads.
fn collect_sources(node: &StreamNode, out: &mut Vec<Arc<runnel_sql::TableDef>>) {
    match node {
        StreamNode::Source(source) => out.push(source.table.clone()),
        other => other
            .inputs()
            .into_iter()
            .for_each(|input| collect_sources(input, out)),
    }
}

/// Runs a two-input operator over its inputs' messages as they come (group 0 is the left
/// input, 1 the right); ends once both ended. The operator snapshots once both sides
/// delivered a barrier.
async fn run_two_input(
    mut operator: Box<dyn TwoInputOperator>,
    mut inputs: MergedInputs,
    output: mpsc::Sender<Message>,
    checkpoints: Option<(Arc<CheckpointCoordinator>, usize)>,
    mut gauge: crate::metrics::StateGauge,
) -> Result<()> {
    let mut ended = 0;
    let mut out = Vec::new();
    let side = |group: usize| if group == 0 { Side::Left } else { Side::Right };
    while let Some((group, message)) = inputs.next().await {
        match message {
            Message::Barrier(id) => {
                if let (Some((coordinator, op)), Some(state)) = (&checkpoints, operator.snapshot()?)
                {
                    coordinator.add_operator(id, *op, state);
                }
                out.push(Message::Barrier(id));
            }
            Message::Batch(batch) => operator.process_batch(side(group), batch, &mut out)?,
            Message::Watermark(w) => operator.process_watermark(side(group), w, &mut out)?,
            late @ Message::Late(_) => out.push(late),
            // A join waits for both sides' watermarks, idle or not (as before parallelism).
            Message::Idle => {}
            Message::End => {
                ended += 1;
                if ended == 2 {
                    operator.finish(&mut out)?;
                    out.push(Message::End);
                }
            }
        }
        gauge.update(|| operator.state_size());
        for message in out.drain(..) {
            if output.send(message).await.is_err() {
                return Ok(()); // downstream stopped; it reports why
            }
        }
        if ended == 2 {
            break;
        }
    }
    Ok(())
}

/// Starts `plan`, reading through `connectors` and writing into `sink`, with the job-wide
/// settings of `config`. With checkpointing configured, the job resumes from the
/// checkpoint its delivery guarantee selects (see [`select_checkpoint`]).
pub async fn spawn_job(
    plan: &StreamPlan,
    connectors: &dyn ConnectorFactory,
    mut sink: Box<dyn Sink>,
    config: &JobConfig,
) -> Result<JobHandle> {
    let mut late_sink = match &config.late_data_sink {
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
    let (coordinator, restored) = match checkpointing {
        None => (None, None),
        Some(checkpoint) => {
            let store = CheckpointStore::new(&checkpoint.dir);
            let job = job_fingerprint(plan, config);
            let restored = select_checkpoint(&store, &job, connectors, config).await?;
            let last = restored.as_ref().map_or(0, |r| r.manifest.id);
            if let Some(r) = &restored {
                tracing::info!(checkpoint = r.manifest.id, dir = %store.dir().display(), "resuming from checkpoint");
            }
            let sources = count_sources(&plan.root, &|table| {
                source_subtasks(connectors, config, table)
            });
            (
                Some(CheckpointCoordinator::new(store, job, sources, last)),
                restored.map(Arc::new),
            )
        }
    };
    let metrics = Arc::new(JobMetrics::default());
    if let Some(restored) = &restored {
        metrics.restored_checkpoint.store(
            restored.manifest.id,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
    let mut builder = JobBuilder {
        connectors,
        config,
        metrics,
        tasks: Vec::new(),
        checkpoints: coordinator.clone(),
        restored,
        operator_ids: 0,
        source_ids: 0,
    };
    let pipeline = match builder.build(&plan.root).await {
        Ok(pipeline) => pipeline,
        Err(e) => {
            // Sources already started must not outlive a job that failed to build.
            for (_, task) in &builder.tasks {
                task.abort();
            }
            return Err(e);
        }
    };
    let mut sink_input = match builder.exchange(pipeline, Routing::Single, "the sink") {
        Ok(inputs) => LaneInput::new(inputs.into_iter().flatten().collect()),
        Err(e) => {
            for (_, task) in &builder.tasks {
                task.abort();
            }
            return Err(e);
        }
    };
    let JobBuilder {
        metrics, mut tasks, ..
    } = builder;

    let sink_metrics = metrics.clone();
    let sink_coordinator = coordinator.clone();
    // Test hook: a pause between storing a checkpoint and committing it, so crash tests
    // can kill the process exactly there.
    let crash_after_checkpoint = config.faults.crash_after_checkpoint;
    let pause_before_commit = std::env::var("RUNNEL_TEST_PAUSE_BEFORE_COMMIT_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(std::time::Duration::from_millis);
    tasks.push((
        "sink".to_string(),
        tokio::spawn(async move {
            while let Some(message) = sink_input.next().await {
                match message {
                    Message::Batch(batch) => {
                        JobMetrics::add(&sink_metrics.rows_out, batch.num_rows());
                        sink.write_batch(batch).await?;
                    }
                    // The final watermark of a finished source is not a time.
                    Message::Watermark(WATERMARK_END) => {}
                    Message::Watermark(w) => {
                        sink_metrics
                            .watermark
                            .store(w, std::sync::atomic::Ordering::Relaxed);
                        sink.on_watermark(w).await?;
                    }
                    Message::Idle => {}
                    Message::Late(batch) => {
                        if let Some(late_sink) = &mut late_sink {
                            JobMetrics::add(&sink_metrics.late_rows_routed, batch.num_rows());
                            late_sink.write_batch(batch).await?;
                        }
                    }
                    Message::Barrier(id) => {
                        let Some(coordinator) = &sink_coordinator else {
                            continue;
                        };
                        let started = std::time::Instant::now();
                        sink.prepare_checkpoint(id).await?;
                        if let Some(late_sink) = &mut late_sink {
                            late_sink.prepare_checkpoint(id).await?;
                        }
                        let stored = {
                            let coordinator = coordinator.clone();
                            tokio::task::spawn_blocking(move || coordinator.store(id))
                                .await
                                .map_err(|e| RuntimeError::Task(e.to_string()))??
                        };
                        tracing::info!(
                            checkpoint = id,
                            bytes = stored.state_bytes,
                            "checkpoint stored"
                        );
                        if let Some(pause) = pause_before_commit {
                            tokio::time::sleep(pause).await;
                        }
                        sink.commit_checkpoint(&stored).await?;
                        JobMetrics::add(&sink_metrics.checkpoints, 1);
                        coordinator.committed(id);
                        tracing::info!(
                            checkpoint = id,
                            bytes = stored.state_bytes,
                            millis = started.elapsed().as_millis() as u64,
                            "checkpoint committed"
                        );
                        coordinator.prune();
                        if crash_after_checkpoint {
                            return Err(RuntimeError::Task(format!(
                                "simulated crash after checkpoint {id}"
                            )));
                        }
                    }
                    Message::End => {
                        sink.finish().await?;
                        if let Some(late_sink) = &mut late_sink {
                            late_sink.finish().await?;
                        }
                        break;
                    }
                }
            }
            Ok(())
        }),
    ));
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
    })
}

/// The checkpoint a restarting job resumes from, by its delivery guarantee:
/// - exactly-once: the one whose transaction committed, as the offsets committed to
///   Kafka with the output say (none committed yet: a fresh start). Checkpoints stored
///   after it never committed and are discarded.
/// - at-least-once: the newest complete one.
async fn select_checkpoint(
    store: &CheckpointStore,
    job: &str,
    connectors: &dyn ConnectorFactory,
    config: &JobConfig,
) -> Result<Option<RestoredCheckpoint>> {
    let id = match config.delivery {
        DeliveryGuarantee::ExactlyOnce => {
            let mut committed = None;
            for table in &config.sources {
                let id = connectors.committed_checkpoint(table).await?;
                if committed.is_some() && id != committed {
                    return Err(RuntimeError::Checkpoint(format!(
                        "the sources' committed offsets name different checkpoints ({committed:?} and {id:?})"
                    )));
                }
                committed = id;
            }
            committed
        }
        DeliveryGuarantee::AtLeastOnce => store.complete().last().copied(),
        DeliveryGuarantee::AtMostOnce => None,
    };
    let Some(id) = id else {
        // Nothing committed: whatever is in the directory never took effect.
        store.discard_after(0);
        return Ok(None);
    };
    // Reading the state files is blocking I/O: off the async workers.
    let reader = store.clone();
    let restored = tokio::task::spawn_blocking(move || reader.load(id))
        .await
        .map_err(|e| RuntimeError::Task(e.to_string()))?;
    let restored = restored.map_err(|e| {
        RuntimeError::Checkpoint(format!(
            "checkpoint {id} is the last one committed, but it cannot be read from {}: {e}",
            store.dir().display()
        ))
    })?;
    if restored.manifest.job != job {
        return Err(RuntimeError::Checkpoint(format!(
            "{} holds checkpoints of a different job (its plan or parallelism changed); use another \
             checkpoint directory to start this one afresh",
            store.dir().display()
        )));
    }
    store.discard_after(id);
    Ok(Some(restored))
}

/// A stable fingerprint of a plan and its parallelism (FNV-1a of their text): a
/// checkpoint restores only into the job that took it, since state is kept per subtask.
fn job_fingerprint(plan: &StreamPlan, config: &JobConfig) -> String {
    let text = format!("{plan}parallelism {}\n", config.parallelism());
    let mut hash: u64 = 0xcbf29ce484222325;
    for byte in text.bytes() {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x100000001b3);
    }
    format!("{hash:016x}")
}

/// Sources the job reads as streams (in build order; a lookup join's table is read whole
/// and is not one).
fn count_sources(node: &StreamNode, subtasks: &dyn Fn(&TableDef) -> usize) -> usize {
    match node {
        StreamNode::Source(source) => subtasks(&source.table),
        StreamNode::LookupJoin(join) => count_sources(&join.input, subtasks),
        other => other
            .inputs()
            .into_iter()
            .map(|input| count_sources(input, subtasks))
            .sum(),
    }
}

/// How `plan` runs in parallel under `config`, for `EXPLAIN`: each operator's subtasks
/// and how rows reach them (mirroring how [`spawn_job`] builds the job).
pub fn parallel_layout(
    plan: &StreamPlan,
    connectors: &dyn ConnectorFactory,
    config: &JobConfig,
) -> String {
    let mut lines = Vec::new();
    let lanes = layout_of(&plan.root, connectors, config, 1, &mut lines);
    let mut out = format!("Parallelism {}:\n", config.parallelism());
    let merge = if lanes > 1 {
        format!(", merging {lanes} subtasks")
    } else {
        String::new()
    };
    out.push_str(&format!("  Sink: 1 task{merge}\n"));
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Appends the layout lines of `node` (at `depth`) and its inputs; returns its subtasks.
fn layout_of(
    node: &StreamNode,
    connectors: &dyn ConnectorFactory,
    config: &JobConfig,
    depth: usize,
    lines: &mut Vec<String>,
) -> usize {
    let pad = "  ".repeat(depth + 1);
    let at = lines.len();
    let subtasks = |n: usize| {
        if n == 1 {
            "1 subtask".to_string()
        } else {
            format!("{n} subtasks")
        }
    };
    let keys = |exprs: &[Expr]| {
        exprs
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (lanes, line) = match node {
        StreamNode::Source(source) => {
            let n = source_subtasks(connectors, config, &source.table);
            let readers = if n == 1 {
                "1 reader".into()
            } else {
                format!("{n} readers")
            };
            (n, format!("Source {}: {readers}", source.table.name))
        }
        StreamNode::Union { inputs, .. } => {
            let n = inputs
                .iter()
                .map(|input| layout_of(input, connectors, config, depth + 1, lines))
                .sum();
            (n, format!("Union: {} (its inputs' own)", subtasks(n)))
        }
        StreamNode::IntervalJoin(_) | StreamNode::WindowJoin(_) => {
            for input in node.inputs() {
                layout_of(input, connectors, config, depth + 1, lines);
            }
            match join_keys(node) {
                None => (
                    1,
                    format!("{}: 1 subtask (no key: every row to one)", node.name()),
                ),
                Some([(left_keys, _), (right_keys, _)]) => {
                    let n = config.parallelism();
                    (
                        n,
                        format!(
                            "{}: {}, left rows hashed by [{}], right rows by [{}]",
                            node.name(),
                            subtasks(n),
                            keys(&left_keys),
                            keys(&right_keys)
                        ),
                    )
                }
            }
        }
        StreamNode::LookupJoin(join) => {
            let n = layout_of(&join.input, connectors, config, depth + 1, lines);
            (n, format!("LookupJoin: {}, chained", subtasks(n)))
        }
        other => {
            let input = other.inputs()[0];
            let before = layout_of(input, connectors, config, depth + 1, lines);
            match routing(other) {
                Routing::AsTheyCome => (
                    before,
                    format!("{}: {}, chained", other.name(), subtasks(before)),
                ),
                Routing::Single if before == 1 => {
                    (1, format!("{}: 1 subtask, chained", other.name()))
                }
                Routing::Single => (
                    1,
                    format!("{}: 1 subtask (no key: every row to one)", other.name()),
                ),
                Routing::Hash(..) if before == 1 && config.parallelism() == 1 => {
                    (1, format!("{}: 1 subtask, chained", other.name()))
                }
                Routing::Hash(exprs, _) => {
                    let n = config.parallelism();
                    (
                        n,
                        format!(
                            "{}: {}, rows hashed by [{}]",
                            other.name(),
                            subtasks(n),
                            keys(&exprs)
                        ),
                    )
                }
            }
        }
    };
    lines.insert(at, format!("{pad}{line}"));
    lanes
}
