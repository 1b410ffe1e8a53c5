//! Running a [`StreamPlan`]: builds its operators, connects them with bounded channels and
//! spawns them on the caller's tokio runtime.
//!
//! A job is a tree of tasks: one per source (decoding, computed columns, watermarks), one
//! per chain of single-input operators (filters, projections, windows), one per operator
//! with several inputs (`UNION ALL`), and the sink. Channels between them hold a few
//! batches each, so a slow sink slows the sources and memory stays flat.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use futures::future::BoxFuture;
use futures::StreamExt;
use runnel_sql::{SourceNode, StreamNode, StreamPlan, WindowKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::alignment::{Aligned, BarrierAligner};
use crate::checkpoint::{CheckpointCoordinator, CheckpointStore, RestoredCheckpoint};
use crate::config::{DeliveryGuarantee, JobConfig};
use crate::connector::ConnectorFactory;
use crate::error::{Result, RuntimeError};
use crate::message::{Message, Watermark, WATERMARK_END};
use crate::metrics::{JobMetrics, MetricsSnapshot};
use crate::operator::{ChainCheckpoints, Operator, OperatorChain, Side, TwoInputOperator};
use crate::operators::{
    FilterOperator, IntervalJoinOperator, LateRowsOutput, LookupJoinOperator, OverWindowOperator,
    ProjectionOperator, SessionWindowOperator, TopNOperator, UpdatingAggregateOperator,
    WindowAggregateOperator, WindowAssignOperator, WindowJoinOperator,
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

/// The output of a plan node while the job is being built: a channel carrying the rows of
/// the stream below it, plus the single-input operators above that still wait to be run
/// (chained in one task, Flink's operator chaining).
struct Pipeline {
    receiver: mpsc::Receiver<Message>,
    /// Pending operators, each with its id in the job (for checkpoints).
    operators: Vec<(usize, Box<dyn Operator>)>,
    /// Whether the stream's watermarks are processing time (`PROCTIME()` reads them).
    processing_time: bool,
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
    /// is the same for the same plan, so a restored job finds its states.
    operator_ids: usize,
    source_ids: usize,
}

impl JobBuilder<'_> {
    /// Where an operator with `input` rows sends its late rows, if the job routes them.
    fn late_output(&self, input: &SchemaRef, operator: &str) -> Result<Option<LateRowsOutput>> {
        self.config
            .late_data_sink
            .as_ref()
            .map(|sink| LateRowsOutput::try_new(sink, input, operator))
            .transpose()
    }

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
            let metrics = self.metrics.clone();
            let (input, operator): (&StreamNode, Box<dyn Operator>) = match node {
                StreamNode::Source(source) => return self.spawn_source(source).await,
                StreamNode::Union { inputs, .. } => {
                    let mut receivers = Vec::with_capacity(inputs.len());
                    let mut processing_time = false;
                    for input in inputs {
                        let pipeline = self.build(input).await?;
                        processing_time |= pipeline.processing_time;
                        receivers.push(self.spawn_chain(pipeline));
                    }
                    let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
                    let schema = node.arrow_schema();
                    self.tasks.push((
                        "union".to_string(),
                        tokio::spawn(run_union(receivers, schema, sender)),
                    ));
                    return Ok(Pipeline {
                        receiver,
                        operators: Vec::new(),
                        processing_time,
                    });
                }
                StreamNode::IntervalJoin(join) => {
                    let late = self.late_outputs_for_join(
                        &join.left.arrow_schema(),
                        &join.right.arrow_schema(),
                        "the join",
                    )?;
                    let operator = IntervalJoinOperator::try_new(join, metrics, late)?;
                    return self
                        .spawn_two_input(Box::new(operator), &join.left, &join.right)
                        .await;
                }
                StreamNode::WindowJoin(join) => {
                    let late = self.late_outputs_for_join(
                        &join.left.arrow_schema(),
                        &join.right.arrow_schema(),
                        "the window join",
                    )?;
                    let operator = WindowJoinOperator::try_new(join, metrics, late)?;
                    return self
                        .spawn_two_input(Box::new(operator), &join.left, &join.right)
                        .await;
                }
                StreamNode::Filter {
                    input,
                    predicate,
                    input_schema,
                } => (
                    input,
                    Box::new(FilterOperator::try_new(predicate, input_schema)?),
                ),
                StreamNode::Projection {
                    input,
                    exprs,
                    input_schema,
                    ..
                } => {
                    let schema = node.arrow_schema();
                    (
                        input,
                        Box::new(ProjectionOperator::try_new(exprs, input_schema, schema)?),
                    )
                }
                StreamNode::WindowAssign {
                    input,
                    kind,
                    time_column,
                    partition_keys,
                    schema,
                } => {
                    let input_schema = input.arrow_schema();
                    let schema = Arc::new(schema.as_arrow().clone());
                    let operator: Box<dyn Operator> = if let WindowKind::Session { gap_ms } = kind {
                        Box::new(SessionWindowOperator::try_new(
                            *gap_ms,
                            *time_column,
                            partition_keys.clone(),
                            input_schema.clone(),
                            schema,
                            metrics,
                            self.late_output(&input_schema, "the session window")?,
                        )?)
                    } else {
                        Box::new(WindowAssignOperator::new(
                            *kind,
                            *time_column,
                            &input_schema,
                            schema,
                            metrics,
                            self.late_output(&input_schema, "the window")?,
                        ))
                    };
                    (input, operator)
                }
                StreamNode::OverWindow(over) => {
                    let late = self.late_output(&over.input.arrow_schema(), "the OVER window")?;
                    (
                        &over.input,
                        Box::new(OverWindowOperator::try_new(over, metrics, late)?),
                    )
                }
                StreamNode::WindowAggregate(aggregate) => (
                    &aggregate.input,
                    Box::new(WindowAggregateOperator::try_new(aggregate, metrics)?),
                ),
                StreamNode::UpdatingAggregate(aggregate) => (
                    &aggregate.input,
                    Box::new(UpdatingAggregateOperator::try_new(
                        aggregate,
                        aggregate.input.is_updating(),
                    )?),
                ),
                StreamNode::TopN(top) => (&top.input, Box::new(TopNOperator::try_new(top)?)),
                StreamNode::LookupJoin(join) => {
                    let table = self.read_whole(&join.table).await?;
                    (
                        &join.input,
                        Box::new(LookupJoinOperator::try_new(join, table)?),
                    )
                }
            };
            let mut operator = operator;
            let (id, state) = self.next_operator(operator.name(), operator.checkpointable())?;
            if let Some(state) = state {
                operator.restore(state)?;
            }
            let mut pipeline = self.build(input).await?;
            pipeline.operators.push((id, operator));
            Ok(pipeline)
        })
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
        let mut receiver = self.spawn_chain(pipeline?);
        let mut batches = Vec::new();
        while let Some(message) = receiver.recv().await {
            match message {
                Message::Batch(batch) => batches.push(batch),
                Message::End => break,
                Message::Watermark(_) | Message::Late(_) | Message::Barrier(_) => {}
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

    /// Builds both inputs of a two-input operator and spawns its task.
    async fn spawn_two_input(
        &mut self,
        mut operator: Box<dyn TwoInputOperator>,
        left: &StreamNode,
        right: &StreamNode,
    ) -> Result<Pipeline> {
        let (id, state) = self.next_operator(operator.name(), operator.checkpointable())?;
        if let Some(state) = state {
            operator.restore(state)?;
        }
        let left = self.build(left).await?;
        let right = self.build(right).await?;
        let processing_time = left.processing_time || right.processing_time;
        let inputs = (self.spawn_chain(left), self.spawn_chain(right));
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        let checkpoints = self.checkpoints.clone().map(|c| (c, id));
        self.tasks.push((
            operator.name().to_string(),
            tokio::spawn(run_two_input(
                operator,
                inputs,
                sender,
                checkpoints,
                self.metrics.state_gauge(),
            )),
        ));
        Ok(Pipeline {
            receiver,
            operators: Vec::new(),
            processing_time,
        })
    }

    /// Opens a source and spawns its task.
    async fn spawn_source(&mut self, node: &SourceNode) -> Result<Pipeline> {
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
            format!("source {}", node.table.name),
            tokio::spawn(task.run()),
        ));
        Ok(Pipeline {
            receiver,
            operators: Vec::new(),
            processing_time: node.processing_time,
        })
    }

    /// Runs a pipeline's pending operators in one task; returns the channel of its output.
    fn spawn_chain(&mut self, pipeline: Pipeline) -> mpsc::Receiver<Message> {
        let Pipeline {
            mut receiver,
            operators,
            processing_time,
        } = pipeline;
        if operators.is_empty() {
            return receiver;
        }
        let (sender, output) = mpsc::channel(CHANNEL_CAPACITY);
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
                while let Some(message) = receiver.recv().await {
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
                        if sender.send(message).await.is_err() {
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
        output
    }
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

/// Merges the streams of a `UNION ALL`: rows as they come (re-labelled with the union's
/// schema), the minimum of the inputs' watermarks once every input has sent one, and the
/// end once every input ended. Checkpoint barriers are aligned across the inputs.
async fn run_union(
    inputs: Vec<mpsc::Receiver<Message>>,
    schema: SchemaRef,
    output: mpsc::Sender<Message>,
) -> Result<()> {
    let count = inputs.len();
    let mut merged = merge_inputs(inputs);
    let mut aligner = BarrierAligner::new(count);
    let mut watermarks: Vec<Option<Watermark>> = vec![None; count];
    let mut ended = 0;
    let mut emitted: Option<Watermark> = None;
    while let Some((index, message)) = merged.next().await {
        aligner.offer(index, message);
        while let Some(next) = aligner.next_ready() {
            let forward = match next {
                Aligned::Barrier(id) => Message::Barrier(id),
                Aligned::Message(_, Message::Batch(batch)) => Message::Batch(
                    RecordBatch::try_new(schema.clone(), batch.columns().to_vec()).map_err(
                        |e| RuntimeError::Operator {
                            operator: "Union".into(),
                            source: e.into(),
                        },
                    )?,
                ),
                Aligned::Message(_, late @ Message::Late(_)) => late,
                Aligned::Message(_, Message::Barrier(id)) => Message::Barrier(id),
                Aligned::Message(index, Message::Watermark(w)) => {
                    watermarks[index] = Some(w);
                    match watermarks.iter().copied().collect::<Option<Vec<_>>>() {
                        Some(all) => {
                            let min = all.into_iter().min().unwrap_or(w);
                            if emitted.is_some_and(|e| e >= min) {
                                continue;
                            }
                            emitted = Some(min);
                            Message::Watermark(min)
                        }
                        None => continue,
                    }
                }
                Aligned::Message(index, Message::End) => {
                    watermarks[index] = Some(WATERMARK_END);
                    ended += 1;
                    if ended < count {
                        continue;
                    }
                    Message::End
                }
            };
            if output.send(forward).await.is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The messages of several channels as they come, tagged with their channel's index.
fn merge_inputs(
    inputs: Vec<mpsc::Receiver<Message>>,
) -> futures::stream::SelectAll<futures::stream::BoxStream<'static, (usize, Message)>> {
    futures::stream::select_all(inputs.into_iter().enumerate().map(|(index, receiver)| {
        futures::stream::unfold(receiver, move |mut receiver| async move {
            let message = receiver.recv().await?;
            Some(((index, message), receiver))
        })
        .boxed()
    }))
}

/// Runs a two-input operator over its inputs' messages as they come; ends once both
/// ended. Barriers are aligned; the operator snapshots once both delivered one.
async fn run_two_input(
    mut operator: Box<dyn TwoInputOperator>,
    (left, right): (mpsc::Receiver<Message>, mpsc::Receiver<Message>),
    output: mpsc::Sender<Message>,
    checkpoints: Option<(Arc<CheckpointCoordinator>, usize)>,
    mut gauge: crate::metrics::StateGauge,
) -> Result<()> {
    let mut merged = merge_inputs(vec![left, right]);
    let mut aligner = BarrierAligner::new(2);
    let mut ended = 0;
    let mut out = Vec::new();
    let side = |index: usize| if index == 0 { Side::Left } else { Side::Right };
    while let Some((index, message)) = merged.next().await {
        aligner.offer(index, message);
        while let Some(next) = aligner.next_ready() {
            match next {
                Aligned::Barrier(id) => {
                    if let (Some((coordinator, op)), Some(state)) =
                        (&checkpoints, operator.snapshot()?)
                    {
                        coordinator.add_operator(id, *op, state);
                    }
                    out.push(Message::Barrier(id));
                }
                Aligned::Message(index, Message::Batch(batch)) => {
                    operator.process_batch(side(index), batch, &mut out)?
                }
                Aligned::Message(index, Message::Watermark(w)) => {
                    operator.process_watermark(side(index), w, &mut out)?
                }
                Aligned::Message(_, other @ (Message::Late(_) | Message::Barrier(_))) => {
                    out.push(other)
                }
                Aligned::Message(_, Message::End) => {
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
            let job = job_fingerprint(plan);
            let restored = select_checkpoint(&store, &job, connectors, config).await?;
            let last = restored.as_ref().map_or(0, |r| r.manifest.id);
            if let Some(r) = &restored {
                tracing::info!(checkpoint = r.manifest.id, dir = %store.dir().display(), "resuming from checkpoint");
            }
            let sources = count_sources(&plan.root);
            (
                Some(CheckpointCoordinator::new(store, job, sources, last)),
                restored.map(Arc::new),
            )
        }
    };
    let mut builder = JobBuilder {
        connectors,
        config,
        metrics: Arc::new(JobMetrics::default()),
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
    let mut sink_rx = builder.spawn_chain(pipeline);
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
            while let Some(message) = sink_rx.recv().await {
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
            "{} holds checkpoints of a different job (its plan changed); use another \
             checkpoint directory to start this one afresh",
            store.dir().display()
        )));
    }
    store.discard_after(id);
    Ok(Some(restored))
}

/// A stable fingerprint of a plan (FNV-1a of its text): a checkpoint restores only into
/// the job that took it.
fn job_fingerprint(plan: &StreamPlan) -> String {
    let text = plan.to_string();
    let mut hash: u64 = 0xcbf29ce484222325;
    for byte in text.bytes() {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x100000001b3);
    }
    format!("{hash:016x}")
}

/// Sources the job reads as streams (in build order; a lookup join's table is read whole
/// and is not one).
fn count_sources(node: &StreamNode) -> usize {
    match node {
        StreamNode::Source(_) => 1,
        StreamNode::LookupJoin(join) => count_sources(&join.input),
        other => other.inputs().into_iter().map(count_sources).sum(),
    }
}
