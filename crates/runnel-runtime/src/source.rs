//! The [`Source`] trait that connectors implement, and the task that turns a source's
//! records into a stream of batches and watermarks.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::compute::kernels::aggregate::max;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;
use runnel_sql::SourceNode;
use tokio::sync::mpsc;

use crate::error::{Result, RuntimeError};
use crate::message::{Message, WATERMARK_END};
use crate::metrics::JobMetrics;
use crate::operators::ProjectionOperator;
use crate::watermark::WatermarkTracker;

/// Rows a source read from one of its partitions, in the table's physical schema.
#[derive(Debug, Clone)]
pub struct SourceBatch {
    pub partition: usize,
    pub batch: RecordBatch,
}

/// What a source reports.
#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// Rows from one partition.
    Batch(SourceBatch),
    /// A partition has no more rows (bounded reads); it stops holding the watermark back.
    PartitionFinished(usize),
    /// A partition had no rows for the table's idle timeout; it stops holding the
    /// watermark back until its next rows.
    PartitionIdle(usize),
}

/// A connector's reader: yields decoded rows, one partition at a time.
///
/// Rows of one partition arrive in order. A bounded source returns `Ok(None)` once every
/// partition is exhausted; an unbounded one never does. Records that cannot be decoded
/// are either an error (naming topic/file, partition, offset/line and reason) or, when the
/// table allows it, skipped and counted in [`JobMetrics::bad_records`].
#[async_trait]
pub trait Source: Send {
    /// How many partitions this source reads; the watermark waits for all of them.
    fn partitions(&self) -> usize;

    /// The next event, or `None` when a bounded source is done.
    async fn next_event(&mut self) -> Result<Option<SourceEvent>>;
}

/// Runs a [`Source`]: computes computed columns, projects, derives watermarks per
/// partition, and sends everything downstream.
pub(crate) struct SourceTask {
    pub source: Box<dyn Source>,
    pub node: SourceNode,
    pub metrics: Arc<JobMetrics>,
    pub output: mpsc::Sender<Message>,
}

impl SourceTask {
    pub async fn run(mut self) -> Result<()> {
        let table = self.node.table.clone();
        let context = format!("source {}", table.name);
        let error = |source| RuntimeError::Operator {
            operator: context.clone(),
            source,
        };
        // Computed columns: only needed when the table declares some.
        let row_projection = if table.has_computed_columns() {
            Some(ProjectionOperator::try_new(
                &table.row_exprs,
                &table.physical_df_schema(),
                table.schema.clone(),
            )?)
        } else {
            None
        };
        let watermark_expr: Option<Arc<dyn PhysicalExpr>> = match &table.watermark {
            Some(w) => Some(
                crate::expr::compile(std::slice::from_ref::<Expr>(&w.expr), &table.df_schema())?
                    .remove(0),
            ),
            None => None,
        };
        let mut tracker = WatermarkTracker::new(self.source.partitions());
        loop {
            let event = self.source.next_event().await?;
            let advanced = match event {
                None => break,
                Some(SourceEvent::PartitionFinished(p)) => tracker.finish_partition(p),
                Some(SourceEvent::PartitionIdle(p)) => tracker.mark_idle(p),
                Some(SourceEvent::Batch(SourceBatch { partition, batch })) => {
                    if batch.num_rows() == 0 {
                        continue;
                    }
                    JobMetrics::add(&self.metrics.rows_in, batch.num_rows());
                    let full = match &row_projection {
                        Some(p) => p.project(&batch).map_err(error)?,
                        None => batch,
                    };
                    let candidate = match &watermark_expr {
                        Some(expr) => {
                            let values = expr
                                .evaluate(&full)
                                .and_then(|v| v.into_array(full.num_rows()))
                                .map_err(error)?;
                            let millis = crate::operators::as_millis(&values).map_err(error)?;
                            max(&millis)
                        }
                        None => None,
                    };
                    let rows = match &self.node.projection {
                        Some(indices) => full.project(indices).map_err(|e| error(e.into()))?,
                        None => full,
                    };
                    if self.output.send(Message::Batch(rows)).await.is_err() {
                        return Ok(()); // downstream stopped; it reports why
                    }
                    candidate.and_then(|w| tracker.update(partition, w))
                }
            };
            if let Some(watermark) = advanced {
                self.metrics
                    .watermark
                    .store(watermark, std::sync::atomic::Ordering::Relaxed);
                if self
                    .output
                    .send(Message::Watermark(watermark))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
        }
        // A finished bounded source completes every window.
        let _ = self.output.send(Message::Watermark(WATERMARK_END)).await;
        let _ = self.output.send(Message::End).await;
        Ok(())
    }
}
