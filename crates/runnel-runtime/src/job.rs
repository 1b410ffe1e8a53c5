//! Running a [`StreamPlan`]: builds its operators, connects them with bounded channels and
//! spawns them on the caller's tokio runtime.
//!
//! A job is three tasks: the source (decoding, computed columns, watermarks), the operator
//! chain (filters, projections, windows) and the sink. Channels between them hold a few
//! batches each, so a slow sink slows the source and memory stays flat.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use runnel_sql::{SourceNode, StreamNode, StreamPlan, WindowKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::JobConfig;
use crate::connector::ConnectorFactory;
use crate::error::{Result, RuntimeError};
use crate::message::Message;
use crate::metrics::{JobMetrics, MetricsSnapshot};
use crate::operator::{Operator, OperatorChain};
use crate::operators::{
    FilterOperator, LateRowsOutput, OverWindowOperator, ProjectionOperator, SessionWindowOperator,
    WindowAggregateOperator, WindowAssignOperator,
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

/// What building a job's operators needs besides the plan.
struct BuildContext<'a> {
    metrics: &'a Arc<JobMetrics>,
    config: &'a JobConfig,
}

impl BuildContext<'_> {
    /// Where an operator with `input` rows sends its late rows, if the job routes them.
    fn late_output(&self, input: &SchemaRef, operator: &str) -> Result<Option<LateRowsOutput>> {
        self.config
            .late_data_sink
            .as_ref()
            .map(|sink| LateRowsOutput::try_new(sink, input, operator))
            .transpose()
    }
}

/// Flattens a single-input plan into its source and the operators above it, bottom-up.
fn build_operators(
    node: &StreamNode,
    context: &BuildContext<'_>,
    operators: &mut Vec<Box<dyn Operator>>,
) -> Result<SourceNode> {
    let metrics = context.metrics;
    match node {
        StreamNode::Source(source) => Ok(source.clone()),
        StreamNode::Filter {
            input,
            predicate,
            input_schema,
        } => {
            let source = build_operators(input, context, operators)?;
            operators.push(Box::new(FilterOperator::try_new(predicate, input_schema)?));
            Ok(source)
        }
        StreamNode::Projection {
            input,
            exprs,
            input_schema,
            schema,
        } => {
            let source = build_operators(input, context, operators)?;
            let schema = Arc::new(schema.as_arrow().clone());
            operators.push(Box::new(ProjectionOperator::try_new(
                exprs,
                input_schema,
                schema,
            )?));
            Ok(source)
        }
        StreamNode::WindowAssign {
            input,
            kind,
            time_column,
            partition_keys,
            schema,
        } => {
            let source = build_operators(input, context, operators)?;
            let input_schema = input.arrow_schema();
            let schema = Arc::new(schema.as_arrow().clone());
            if let WindowKind::Session { gap_ms } = kind {
                operators.push(Box::new(SessionWindowOperator::try_new(
                    *gap_ms,
                    *time_column,
                    partition_keys.clone(),
                    input_schema.clone(),
                    schema,
                    metrics.clone(),
                    context.late_output(&input_schema, "the session window")?,
                )?));
                return Ok(source);
            }
            operators.push(Box::new(WindowAssignOperator::new(
                *kind,
                *time_column,
                &input_schema,
                schema,
                metrics.clone(),
                context.late_output(&input_schema, "the window")?,
            )));
            Ok(source)
        }
        StreamNode::OverWindow(over) => {
            let source = build_operators(&over.input, context, operators)?;
            let input_schema = over.input.arrow_schema();
            operators.push(Box::new(OverWindowOperator::try_new(
                over,
                metrics.clone(),
                context.late_output(&input_schema, "the OVER window")?,
            )?));
            Ok(source)
        }
        StreamNode::WindowAggregate(aggregate) => {
            let source = build_operators(&aggregate.input, context, operators)?;
            operators.push(Box::new(WindowAggregateOperator::try_new(
                aggregate,
                metrics.clone(),
            )?));
            Ok(source)
        }
    }
}

/// Starts `plan`, reading through `connectors` and writing into `sink`, with the job-wide
/// settings of `config`.
pub async fn spawn_job(
    plan: &StreamPlan,
    connectors: &dyn ConnectorFactory,
    mut sink: Box<dyn Sink>,
    config: &JobConfig,
) -> Result<JobHandle> {
    let metrics = Arc::new(JobMetrics::default());
    let mut operators = Vec::new();
    let context = BuildContext {
        metrics: &metrics,
        config,
    };
    let source_node = build_operators(&plan.root, &context, &mut operators)?;
    let mut late_sink = match &config.late_data_sink {
        Some(table) => Some(
            connectors
                .create_sink(table, table.physical_schema.clone())
                .await?,
        ),
        None => None,
    };
    let source = connectors
        .create_source(&source_node.table, metrics.clone(), config)
        .await?;

    let (source_tx, mut chain_rx) = mpsc::channel::<Message>(CHANNEL_CAPACITY);
    let (chain_tx, mut sink_rx) = mpsc::channel::<Message>(CHANNEL_CAPACITY);
    let mut tasks = Vec::new();

    let processing = source_node.processing_time;
    let source_task = SourceTask {
        source,
        node: source_node,
        metrics: metrics.clone(),
        config: config.clone(),
        output: source_tx,
    };
    tasks.push(("source".to_string(), tokio::spawn(source_task.run())));

    let mut chain = OperatorChain::new(operators);
    tasks.push((
        "operators".to_string(),
        tokio::spawn(async move {
            let mut out = Vec::new();
            // On processing time, `PROCTIME()` reads the watermark the source sent before the batch.
            let mut processing_time = None;
            while let Some(message) = chain_rx.recv().await {
                let last = matches!(message, Message::End);
                if let (true, Message::Watermark(w)) = (processing, &message) {
                    processing_time = Some(*w);
                }
                match processing_time {
                    Some(now) => runnel_sql::functions::with_processing_time(now, || {
                        chain.process(message, &mut out)
                    })?,
                    None => chain.process(message, &mut out)?,
                }
                for message in out.drain(..) {
                    if chain_tx.send(message).await.is_err() {
                        return Ok(()); // the sink stopped; it reports why
                    }
                }
                if last {
                    break;
                }
            }
            Ok(())
        }),
    ));

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
                    Message::Watermark(_) => {}
                    Message::Late(batch) => {
                        if let Some(late_sink) = &mut late_sink {
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
