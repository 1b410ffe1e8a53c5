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

use crate::config::JobConfig;
use crate::connector::ConnectorFactory;
use crate::error::{Result, RuntimeError};
use crate::message::{Message, Watermark, WATERMARK_END};
use crate::metrics::{JobMetrics, MetricsSnapshot};
use crate::operator::{Operator, OperatorChain, Side, TwoInputOperator};
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
        let names: Vec<String> = self.tasks.iter().map(|(name, _)| name.clone()).collect();
        let mut pending: Vec<_> = self.tasks.drain(..).map(|(_, task)| task).collect();
        let mut indexes: Vec<usize> = (0..pending.len()).collect();
        while !pending.is_empty() {
            let (outcome, finished, rest) = futures::future::select_all(pending).await;
            let name = &names[indexes.remove(finished)];
            let outcome = match outcome {
                Ok(result) => result,
                Err(join) => Err(RuntimeError::Task(format!("{name}: {join}"))),
            };
            if let Err(e) = outcome {
                for task in &rest {
                    task.abort();
                }
                return Err(e);
            }
            pending = rest;
        }
        Ok(self.metrics.snapshot())
    }

    /// Stops every task at once.
    pub fn abort(&self) {
        for (_, task) in &self.tasks {
            task.abort();
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
    operators: Vec<Box<dyn Operator>>,
    /// Whether the stream's watermarks are processing time (`PROCTIME()` reads them).
    processing_time: bool,
}

/// Builds a job's tasks from its plan, bottom-up.
struct JobBuilder<'a> {
    connectors: &'a dyn ConnectorFactory,
    config: &'a JobConfig,
    metrics: Arc<JobMetrics>,
    tasks: Vec<(String, JoinHandle<Result<()>>)>,
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
            let mut pipeline = self.build(input).await?;
            pipeline.operators.push(operator);
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
        let pipeline = self.build(node).await?;
        let mut receiver = self.spawn_chain(pipeline);
        let mut batches = Vec::new();
        while let Some(message) = receiver.recv().await {
            match message {
                Message::Batch(batch) => batches.push(batch),
                Message::End => break,
                Message::Watermark(_) | Message::Late(_) => {}
            }
        }
        Ok(batches)
    }

    /// Builds both inputs of a two-input operator and spawns its task.
    async fn spawn_two_input(
        &mut self,
        operator: Box<dyn TwoInputOperator>,
        left: &StreamNode,
        right: &StreamNode,
    ) -> Result<Pipeline> {
        let left = self.build(left).await?;
        let right = self.build(right).await?;
        let processing_time = left.processing_time || right.processing_time;
        let inputs = (self.spawn_chain(left), self.spawn_chain(right));
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        self.tasks.push((
            operator.name().to_string(),
            tokio::spawn(run_two_input(operator, inputs, sender)),
        ));
        Ok(Pipeline {
            receiver,
            operators: Vec::new(),
            processing_time,
        })
    }

    /// Opens a source and spawns its task.
    async fn spawn_source(&mut self, node: &SourceNode) -> Result<Pipeline> {
        let source = self
            .connectors
            .create_source(&node.table, self.metrics.clone(), self.config)
            .await?;
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        let task = SourceTask {
            source,
            node: node.clone(),
            metrics: self.metrics.clone(),
            config: self.config.clone(),
            output: sender,
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
        let mut chain = OperatorChain::new(operators);
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
/// end once every input ended.
async fn run_union(
    inputs: Vec<mpsc::Receiver<Message>>,
    schema: SchemaRef,
    output: mpsc::Sender<Message>,
) -> Result<()> {
    let count = inputs.len();
    let mut merged =
        futures::stream::select_all(inputs.into_iter().enumerate().map(|(index, receiver)| {
            futures::stream::unfold(receiver, move |mut receiver| async move {
                let message = receiver.recv().await?;
                Some(((index, message), receiver))
            })
            .boxed()
        }));
    let mut watermarks: Vec<Option<Watermark>> = vec![None; count];
    let mut ended = 0;
    let mut emitted: Option<Watermark> = None;
    while let Some((index, message)) = merged.next().await {
        let forward = match message {
            Message::Batch(batch) => Message::Batch(
                RecordBatch::try_new(schema.clone(), batch.columns().to_vec()).map_err(|e| {
                    RuntimeError::Operator {
                        operator: "Union".into(),
                        source: e.into(),
                    }
                })?,
            ),
            late @ Message::Late(_) => late,
            Message::Watermark(w) => {
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
            Message::End => {
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
    Ok(())
}

/// Runs a two-input operator over its inputs' messages as they come; ends once both ended.
async fn run_two_input(
    mut operator: Box<dyn TwoInputOperator>,
    (left, right): (mpsc::Receiver<Message>, mpsc::Receiver<Message>),
    output: mpsc::Sender<Message>,
) -> Result<()> {
    let tagged = |side: Side, receiver: mpsc::Receiver<Message>| {
        futures::stream::unfold(receiver, move |mut receiver| async move {
            let message = receiver.recv().await?;
            Some(((side, message), receiver))
        })
        .boxed()
    };
    let mut merged = futures::stream::select(tagged(Side::Left, left), tagged(Side::Right, right));
    let mut ended = 0;
    let mut out = Vec::new();
    while let Some((side, message)) = merged.next().await {
        match message {
            Message::Batch(batch) => operator.process_batch(side, batch, &mut out)?,
            Message::Watermark(w) => operator.process_watermark(side, w, &mut out)?,
            late @ Message::Late(_) => out.push(late),
            Message::End => {
                ended += 1;
                if ended == 2 {
                    operator.finish(&mut out)?;
                    out.push(Message::End);
                }
            }
        }
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
/// settings of `config`.
pub async fn spawn_job(
    plan: &StreamPlan,
    connectors: &dyn ConnectorFactory,
    mut sink: Box<dyn Sink>,
    config: &JobConfig,
) -> Result<JobHandle> {
    let mut late_sink = match &config.late_data_sink {
        Some(table) => Some(
            connectors
                .create_sink(table, table.physical_schema.clone())
                .await?,
        ),
        None => None,
    };
    let mut builder = JobBuilder {
        connectors,
        config,
        metrics: Arc::new(JobMetrics::default()),
        tasks: Vec::new(),
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
    Ok(JobHandle { tasks, metrics })
}
