//! [`OverWindowOperator`]: SQL window functions over a stream — per-event sliding
//! aggregates (`SUM(x) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '5'
//! MINUTE PRECEDING AND CURRENT ROW)`, or `ROWS BETWEEN n PRECEDING`) and window Top-N
//! (`ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY x DESC)`).
//!
//! Rows wait until they are final — the watermark passed their time, or their window's
//! end — then DataFusion's own window function implementations run over them, sorted and
//! split by partition, each partition after its history: the earlier rows its frames can
//! still reach, kept per partition key. Each input row is emitted exactly once, with the
//! functions' values appended. A row arriving after it could have been final is late:
//! dropped and counted (or routed).

use datafusion::common::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, UInt32Array};
use datafusion::arrow::compute::kernels::cmp::{gt, lt};
use datafusion::arrow::compute::{
    concat, concat_batches, filter_record_batch, lexsort_to_indices, not, partition,
    take_record_batch, SortColumn,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::logical_expr::execution_props::ExecutionProps;
use datafusion::physical_expr::window::WindowExpr;
use datafusion::physical_planner::create_window_expr;
use runnel_sql::{OverReadiness, OverWindowNode};

use crate::error::{Result, RuntimeError};
use crate::message::Watermark;
use crate::metrics::JobMetrics;
use crate::operator::{
    CheckpointedState, Collector, OneInputOperator, OperatorState, StreamOperator,
};
use crate::operators::window_assign::{as_millis, compacted, event_times};
use crate::operators::LateRowsOutput;

/// Emissions between sweeps of idle partitions' history.
const EVICTION_EVERY: u64 = 64;

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
    /// Per partition key: rows already emitted that a later row's frame can still reach.
    history: HashMap<Box<[u8]>, RecordBatch>,
    /// Encodes partition keys as bytes; `None` without `PARTITION BY`.
    keys: Option<RowConverter>,
    /// Emissions so far (history of idle partitions is swept every [`EVICTION_EVERY`]).
    emissions: u64,
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
        let input_schema = Arc::new(node.input_schema.as_arrow().clone());
        let keys = match window_exprs.first() {
            Some(first) if !first.partition_by().is_empty() => {
                let fields = first
                    .partition_by()
                    .iter()
                    .map(|e| Ok(SortField::new(e.data_type(&input_schema)?)))
                    .collect::<DFResult<Vec<_>>>()?;
                Some(RowConverter::new(fields).map_err(|e| operator_error(e.into()))?)
            }
            _ => None,
        };
        Ok(Self {
            window_exprs,
            readiness: node.readiness,
            input_schema,
            schema: Arc::new(node.schema.as_arrow().clone()),
            pending: Vec::new(),
            history: HashMap::new(),
            keys,
            emissions: 0,
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

    /// Evaluates the window functions for the `ready` rows, partition by partition, each
    /// after its partition's history, and emits them with their values.
    fn emit(
        &mut self,
        ready: RecordBatch,
        watermark: Watermark,
        out: &mut Collector,
    ) -> DFResult<()> {
        // Sort the ready rows by partition, order, then arrival (earlier first among equals).
        let first = &self.window_exprs[0];
        let partition_columns = first
            .partition_by()
            .iter()
            .map(|e| e.evaluate(&ready)?.into_array(ready.num_rows()))
            .collect::<DFResult<Vec<ArrayRef>>>()?;
        let mut sort_columns: Vec<SortColumn> = partition_columns
            .iter()
            .map(|values| SortColumn {
                values: values.clone(),
                options: None,
            })
            .collect();
        sort_columns.extend(first.order_by_columns(&ready)?);
        sort_columns.push(SortColumn {
            values: Arc::new(UInt32Array::from_iter_values(0..ready.num_rows() as u32)),
            options: None,
        });
        let order = lexsort_to_indices(&sort_columns, None)?;
        let sorted = take_record_batch(&ready, &order)?;
        let partition_columns: Vec<ArrayRef> = partition_columns
            .iter()
            .map(|c| datafusion::arrow::compute::take(c, &order, None))
            .collect::<Result<_, _>>()?;
        let ranges = if partition_columns.is_empty() {
            std::iter::once(0..sorted.num_rows()).collect()
        } else {
            partition(&partition_columns)?.ranges()
        };
        let keys = match &self.keys {
            Some(converter) => Some(converter.convert_columns(&partition_columns)?),
            None => None,
        };

        // Per partition: its history (emitted rows still in reach, all earlier in order
        // than any ready row, which would otherwise have been late) then its ready rows.
        let mut values: Vec<Vec<ArrayRef>> =
            vec![Vec::with_capacity(ranges.len()); self.window_exprs.len()];
        for range in &ranges {
            let key: &[u8] = keys.as_ref().map_or(&[], |k| k.row(range.start).data());
            let rows = sorted.slice(range.start, range.len());
            let history = self.history.remove(key);
            let held = history.as_ref().map_or(0, |h| h.num_rows());
            let frame_input = match &history {
                Some(history) => concat_batches(&self.input_schema, [history, &rows])?,
                None => rows,
            };
            for (expr, values) in self.window_exprs.iter().zip(&mut values) {
                let all = expr.evaluate(&frame_input)?;
                values.push(all.slice(held, range.len()));
            }
            if let Some(kept) = self.reachable(&frame_input, watermark)? {
                self.history.insert(key.into(), kept);
            }
        }
        let mut columns = sorted.columns().to_vec();
        for parts in &values {
            let parts: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
            columns.push(concat(&parts)?);
        }
        out.emit(RecordBatch::try_new(self.schema.clone(), columns)?);
        self.evict_unreachable(watermark)
    }

    /// The rows of one partition (in order) that a later row's frame can still reach.
    fn reachable(&self, rows: &RecordBatch, watermark: Watermark) -> DFResult<Option<RecordBatch>> {
        let OverReadiness::EventTime {
            range_ms,
            rows: frame_rows,
            ..
        } = self.readiness
        else {
            return Ok(None);
        };
        let mut keep = vec![false; rows.num_rows()];
        if let Some(range_ms) = range_ms {
            let times = self.readiness_times(rows)?;
            let from = watermark.saturating_sub(range_ms);
            for (k, t) in keep.iter_mut().zip(times.values()) {
                *k |= *t >= from;
            }
        }
        if let Some(n) = frame_rows {
            let from = rows.num_rows().saturating_sub(n as usize);
            keep[from..].iter_mut().for_each(|k| *k = true);
        }
        let kept = filter_record_batch(rows, &BooleanArray::from(keep))?;
        Ok((kept.num_rows() > 0).then_some(kept))
    }

    /// Now and then, drops history no frame can reach any more from partitions that had
    /// no new rows (a RANGE frame's rows age out with the watermark).
    fn evict_unreachable(&mut self, watermark: Watermark) -> DFResult<()> {
        self.emissions += 1;
        if !self.emissions.is_multiple_of(EVICTION_EVERY) {
            return Ok(());
        }
        let OverReadiness::EventTime {
            range_ms: Some(_),
            rows: None,
            ..
        } = self.readiness
        else {
            return Ok(()); // ROWS frames keep the last n rows however old
        };
        let keys: Vec<Box<[u8]>> = self.history.keys().cloned().collect();
        for key in keys {
            if let Some(history) = self.history.remove(&key) {
                if let Some(kept) = self.reachable(&history, watermark)? {
                    self.history.insert(key, kept);
                }
            }
        }
        Ok(())
    }
}

impl StreamOperator for OverWindowOperator {
    fn name(&self) -> &str {
        "OverWindow"
    }

    fn state(&mut self) -> OperatorState<'_> {
        OperatorState::Checkpointed(self)
    }
}

impl CheckpointedState for OverWindowOperator {
    fn size(&self) -> usize {
        self.pending
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum::<usize>()
            + self
                .history
                .iter()
                .map(|(key, rows)| key.len() + 48 + rows.get_array_memory_size())
                .sum::<usize>()
    }

    /// Pending rows and each partition's history as one batch; a trailing `__part`
    /// column numbers the history partitions (NULL for pending rows).
    fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        let mut parts: Vec<&RecordBatch> = Vec::new();
        let mut tags: Vec<Option<u32>> = Vec::new();
        for (i, history) in self.history.values().enumerate() {
            parts.push(history);
            tags.extend(std::iter::repeat_n(Some(i as u32), history.num_rows()));
        }
        for rows in &self.pending {
            parts.push(rows);
            tags.extend(std::iter::repeat_n(None, rows.num_rows()));
        }
        let rows =
            concat_batches(&self.input_schema, parts).map_err(|e| operator_error(e.into()))?;
        let mut fields: Vec<_> = self.input_schema.fields().iter().cloned().collect();
        fields.push(Arc::new(datafusion::arrow::datatypes::Field::new(
            "__part",
            datafusion::arrow::datatypes::DataType::UInt32,
            true,
        )));
        let mut columns = rows.columns().to_vec();
        columns.push(Arc::new(UInt32Array::from(tags)));
        let state = RecordBatch::try_new(
            Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
            columns,
        )
        .map_err(|e| operator_error(e.into()))?;
        crate::checkpoint::tag(state, "watermark", self.watermark).map(Some)
    }

    fn restore(&mut self, state: RecordBatch) -> Result<()> {
        let error = |e: datafusion::arrow::error::ArrowError| operator_error(e.into());
        self.watermark = crate::checkpoint::tagged(&state, "watermark");
        let last = state.num_columns() - 1;
        let tags = state
            .column(last)
            .as_any()
            .downcast_ref::<UInt32Array>()
            .cloned()
            .ok_or_else(|| RuntimeError::Checkpoint("OverWindow state lacks __part".into()))?;
        let rows =
            RecordBatch::try_new(self.input_schema.clone(), state.columns()[..last].to_vec())
                .map_err(error)?;
        let pending_mask: BooleanArray = tags.iter().map(|t| Some(t.is_none())).collect();
        let pending = filter_record_batch(&rows, &pending_mask).map_err(error)?;
        self.pending = if pending.num_rows() > 0 {
            vec![pending]
        } else {
            Vec::new()
        };
        self.history.clear();
        let mut start = 0;
        while start < tags.len() && tags.is_valid(start) {
            let part = tags.value(start);
            let mut stop = start + 1;
            while stop < tags.len() && tags.is_valid(stop) && tags.value(stop) == part {
                stop += 1;
            }
            let history = rows.slice(start, stop - start);
            let key: Box<[u8]> = match (&self.keys, self.window_exprs.first()) {
                (Some(converter), Some(first)) => {
                    let first_row = history.slice(0, 1);
                    let columns = first
                        .partition_by()
                        .iter()
                        .map(|e| e.evaluate(&first_row)?.into_array(1))
                        .collect::<DFResult<Vec<ArrayRef>>>()?;
                    let keys = converter.convert_columns(&columns).map_err(error)?;
                    keys.row(0).data().into()
                }
                _ => Box::new([]),
            };
            self.history.insert(key, history);
            start = stop;
        }
        Ok(())
    }
}

impl OneInputOperator for OverWindowOperator {
    fn process_batch(&mut self, mut batch: RecordBatch, out: &mut Collector) -> Result<()> {
        if let OverReadiness::EventTime { time_column, .. } = self.readiness {
            // A row without a time could never become final: refuse it, naming the column.
            let name = self.input_schema.field(time_column).name().clone();
            event_times(&batch, time_column, &name, "OverWindow")?;
        }
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

    fn process_watermark(
        &mut self,
        watermark: Watermark,
        out: &mut Collector,
    ) -> Result<Option<Watermark>> {
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
        Ok(Some(watermark))
    }
}
