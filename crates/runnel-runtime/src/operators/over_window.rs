//! [`OverWindowOperator`]: SQL window functions over a stream — per-event sliding
//! aggregates (`SUM(x) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '5'
//! MINUTE PRECEDING AND CURRENT ROW)`, or `ROWS BETWEEN n PRECEDING`) and window Top-N
//! (`ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY x DESC)`).
//!
//! Rows wait until they are final — the watermark passed their time, or their window's
//! end — then DataFusion's own window function implementations run over them, sorted and
//! split by partition, together with the earlier rows their frames can still reach. Each
//! input row is emitted exactly once, with the functions' values appended. A row arriving
//! after it could have been final is late: dropped and counted (or routed).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, UInt32Array};
use datafusion::arrow::compute::kernels::cmp::{gt, gt_eq, lt};
use datafusion::arrow::compute::{
    concat, concat_batches, filter_record_batch, lexsort_to_indices, not, partition,
    take_record_batch, SortColumn,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::logical_expr::execution_props::ExecutionProps;
use datafusion::physical_expr::window::WindowExpr;
use datafusion::physical_planner::create_window_expr;
use runnel_sql::{OverReadiness, OverWindowNode};

use crate::error::{Result, RuntimeError};
use crate::message::{Message, Watermark};
use crate::metrics::JobMetrics;
use crate::operator::Operator;
use crate::operators::window_assign::{as_millis, compacted};
use crate::operators::LateRowsOutput;

fn operator_error(source: DataFusionError) -> RuntimeError {
    RuntimeError::Operator {
        operator: "OverWindow".into(),
        source,
    }
}

/// Window functions sharing one `PARTITION BY` / `ORDER BY`, evaluated as rows become final.
pub struct OverWindowOperator {
    window_exprs: Vec<Arc<dyn WindowExpr>>,
    readiness: OverReadiness,
    input_schema: SchemaRef,
    schema: SchemaRef,
    /// Rows not yet final, in arrival order.
    pending: Vec<RecordBatch>,
    /// Rows already emitted that a later row's frame can still reach.
    history: Option<RecordBatch>,
    watermark: Option<Watermark>,
    metrics: Arc<JobMetrics>,
    late_output: Option<LateRowsOutput>,
}

impl OverWindowOperator {
    pub fn try_new(
        node: &OverWindowNode,
        metrics: Arc<JobMetrics>,
        late_output: Option<LateRowsOutput>,
    ) -> Result<Self> {
        let props = ExecutionProps::new();
        let planning = Default::default();
        let window_exprs = node
            .window_exprs
            .iter()
            .map(|e| create_window_expr(e, &node.input_schema, &props, &planning))
            .collect::<DFResult<Vec<_>>>()?;
        Ok(Self {
            window_exprs,
            readiness: node.readiness,
            input_schema: Arc::new(node.input_schema.as_arrow().clone()),
            schema: Arc::new(node.schema.as_arrow().clone()),
            pending: Vec::new(),
            history: None,
            watermark: None,
            metrics,
            late_output,
        })
    }

    /// The column that decides when a row is final, in ms.
    fn readiness_times(&self, batch: &RecordBatch) -> DFResult<Int64Array> {
        let column = match self.readiness {
            OverReadiness::EventTime { time_column, .. } => time_column,
            OverReadiness::WindowEnd { window_end } => window_end,
        };
        Ok(as_millis(batch.column(column))?.reinterpret_cast())
    }

    /// Which rows are final at `watermark`.
    fn final_at(&self, batch: &RecordBatch, watermark: Watermark) -> DFResult<BooleanArray> {
        let times = self.readiness_times(batch)?;
        let watermark = Int64Array::new_scalar(watermark);
        Ok(match self.readiness {
            // Final once no row at or before its time can come.
            OverReadiness::EventTime { .. } => lt(&times, &watermark)?,
            // Final once its window has ended.
            OverReadiness::WindowEnd { .. } => not(&gt(&times, &watermark)?)?,
        })
    }

    /// Evaluates the window functions over `history` + `ready` and emits the ready rows.
    fn emit(
        &mut self,
        ready: RecordBatch,
        watermark: Watermark,
        out: &mut Vec<Message>,
    ) -> DFResult<()> {
        let history_rows = self.history.as_ref().map_or(0, |h| h.num_rows());
        let all = match self.history.take() {
            Some(history) => concat_batches(&self.input_schema, [&history, &ready])?,
            None => ready,
        };
        let is_ready =
            BooleanArray::from_iter((0..all.num_rows()).map(|i| Some(i >= history_rows)));

        // Sort by partition, order, then arrival (earlier rows first among equals).
        let first = &self.window_exprs[0];
        let partition_columns = first
            .partition_by()
            .iter()
            .map(|e| e.evaluate(&all)?.into_array(all.num_rows()))
            .collect::<DFResult<Vec<ArrayRef>>>()?;
        let mut sort_columns: Vec<SortColumn> = partition_columns
            .iter()
            .map(|values| SortColumn {
                values: values.clone(),
                options: None,
            })
            .collect();
        sort_columns.extend(first.order_by_columns(&all)?);
        sort_columns.push(SortColumn {
            values: Arc::new(UInt32Array::from_iter_values(0..all.num_rows() as u32)),
            options: None,
        });
        let order = lexsort_to_indices(&sort_columns, None)?;
        let sorted = take_record_batch(&all, &order)?;
        let is_ready = datafusion::arrow::compute::take(&is_ready, &order, None)?;
        let is_ready = is_ready
            .as_any()
            .downcast_ref::<BooleanArray>()
            .cloned()
            .unwrap_or_else(|| BooleanArray::from(vec![false; sorted.num_rows()]));
        let partition_columns: Vec<ArrayRef> = partition_columns
            .iter()
            .map(|c| datafusion::arrow::compute::take(c, &order, None))
            .collect::<Result<_, _>>()?;
        let ranges = if partition_columns.is_empty() {
            std::iter::once(0..sorted.num_rows()).collect()
        } else {
            partition(&partition_columns)?.ranges()
        };

        let mut columns = sorted.columns().to_vec();
        for expr in &self.window_exprs {
            let parts = ranges
                .iter()
                .map(|r| expr.evaluate(&sorted.slice(r.start, r.len())))
                .collect::<DFResult<Vec<ArrayRef>>>()?;
            let parts: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
            columns.push(concat(&parts)?);
        }
        let output = RecordBatch::try_new(self.schema.clone(), columns)?;
        let output = filter_record_batch(&output, &is_ready)?;
        if output.num_rows() > 0 {
            out.push(Message::Batch(output));
        }

        // Keep what later rows' frames can reach.
        if let OverReadiness::EventTime { range_ms, rows, .. } = self.readiness {
            let mut keep = vec![false; sorted.num_rows()];
            if let Some(range_ms) = range_ms {
                let times = self.readiness_times(&sorted)?;
                let reachable = gt_eq(
                    &times,
                    &Int64Array::new_scalar(watermark.saturating_sub(range_ms)),
                )?;
                for (i, k) in keep.iter_mut().enumerate() {
                    *k |= reachable.value(i);
                }
            }
            if let Some(n) = rows {
                for range in &ranges {
                    let from = range.end.saturating_sub(n as usize).max(range.start);
                    keep[from..range.end].iter_mut().for_each(|k| *k = true);
                }
            }
            let history = filter_record_batch(&sorted, &BooleanArray::from(keep))?;
            if history.num_rows() > 0 {
                self.history = Some(history);
            }
        }
        Ok(())
    }
}

impl Operator for OverWindowOperator {
    fn name(&self) -> &str {
        "OverWindow"
    }

    fn process_batch(&mut self, mut batch: RecordBatch, out: &mut Vec<Message>) -> Result<()> {
        if let Some(watermark) = self.watermark {
            // Rows that would have been final already are late.
            let late = self.final_at(&batch, watermark).map_err(operator_error)?;
            let count = late.true_count();
            if count > 0 {
                JobMetrics::add(&self.metrics.late_rows, count);
                let on_time = not(&late).map_err(|e| operator_error(e.into()))?;
                if let Some(output) = &self.late_output {
                    output.emit_late(&batch, &on_time, out)?;
                }
                batch =
                    filter_record_batch(&batch, &on_time).map_err(|e| operator_error(e.into()))?;
            }
        }
        if batch.num_rows() > 0 {
            self.pending
                .push(compacted(&batch).map_err(operator_error)?);
        }
        Ok(())
    }

    fn process_watermark(&mut self, watermark: Watermark, out: &mut Vec<Message>) -> Result<()> {
        if self.watermark.is_none_or(|w| watermark > w) {
            self.watermark = Some(watermark);
            if !self.pending.is_empty() {
                let pending = concat_batches(&self.input_schema, &self.pending)
                    .map_err(|e| operator_error(e.into()))?;
                self.pending.clear();
                let ready = self.final_at(&pending, watermark).map_err(operator_error)?;
                if ready.true_count() < pending.num_rows() {
                    let waiting = not(&ready).map_err(|e| operator_error(e.into()))?;
                    self.pending.push(
                        filter_record_batch(&pending, &waiting)
                            .map_err(|e| operator_error(e.into()))?,
                    );
                }
                if ready.true_count() > 0 {
                    let ready = filter_record_batch(&pending, &ready)
                        .map_err(|e| operator_error(e.into()))?;
                    self.emit(ready, watermark, out).map_err(operator_error)?;
                }
            }
        }
        out.push(Message::Watermark(watermark));
        Ok(())
    }
}
