//! [`IntervalJoinOperator`]: Flink's interval join — two streams joined on equal keys where
//! `lower <= left.time - right.time <= upper`.
//!
//! Each side keeps its rows, indexed by key, while a row of the other side can still match
//! them: a left row at `t` can only meet right rows at `t - upper ..= t - lower`, and the
//! right side promises (its watermark `Wr`) no rows before `Wr`, so the left row is kept
//! while `t >= Wr + lower`; symmetrically a right row while `t >= Wl - upper`. A row is
//! joined with the other side's kept rows as it arrives, so each pair is emitted exactly
//! once, by whichever of its rows came second. A row below its own side's watermark is
//! late (its partners may be gone): dropped and counted, or routed.
//!
//! The forwarded watermark is the inputs' minimum less the larger bound, so no joined row
//! is late downstream whichever side's time it carries.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, UInt32Array};
use datafusion::arrow::compute::kernels::cmp::gt_eq;
use datafusion::arrow::compute::{filter_record_batch, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::DFSchema;
use datafusion::error::DataFusionError;
use datafusion::physical_expr::PhysicalExpr;
use runnel_sql::IntervalJoinNode;

use crate::error::{Result, RuntimeError};
use crate::message::{Message, Watermark};
use crate::metrics::JobMetrics;
use crate::operator::{Side, TwoInputOperator};
use crate::operators::held_rows::{HeldRows, RowRef};
use crate::operators::window_assign::{compacted, event_times};
use crate::operators::LateRowsOutput;

fn operator_error(source: DataFusionError) -> RuntimeError {
    RuntimeError::Operator {
        operator: "IntervalJoin".into(),
        source,
    }
}

fn arrow_error(e: ArrowError) -> RuntimeError {
    operator_error(e.into())
}

/// The rows one side keeps, and how to find them by key.
struct JoinSide {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    time_column: usize,
    time_name: String,
    schema: SchemaRef,
    held: HeldRows,
    /// Key bytes → held rows with their times.
    index: HashMap<Box<[u8]>, Vec<(RowRef, i64)>>,
    /// Held rows now, and right after the last sweep of expired ones.
    entries: usize,
    entries_after_sweep: usize,
    watermark: Option<Watermark>,
    late_output: Option<LateRowsOutput>,
}

impl JoinSide {
    /// Drops the rows older than `keep_from` (no row of the other side can match them).
    fn sweep(&mut self, keep_from: i64) {
        let mut released = Vec::new();
        self.index.retain(|_, rows| {
            rows.retain(|&(row, t)| {
                let keep = t >= keep_from;
                if !keep {
                    released.push(row);
                }
                keep
            });
            !rows.is_empty()
        });
        self.held.release(&released);
        self.entries -= released.len();
        self.entries_after_sweep = self.entries;
    }
}

/// An inner interval join.
pub struct IntervalJoinOperator {
    left: JoinSide,
    right: JoinSide,
    /// Encodes either side's keys (the planner makes their types equal).
    converter: RowConverter,
    lower_ms: i64,
    upper_ms: i64,
    residual: Option<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
    emitted: Option<Watermark>,
    metrics: Arc<JobMetrics>,
}

impl IntervalJoinOperator {
    pub fn try_new(
        node: &IntervalJoinNode,
        metrics: Arc<JobMetrics>,
        late_outputs: (Option<LateRowsOutput>, Option<LateRowsOutput>),
    ) -> Result<Self> {
        let side = |df_schema: &DFSchema,
                    keys: &[datafusion::logical_expr::Expr],
                    time_column: usize,
                    late_output: Option<LateRowsOutput>|
         -> Result<JoinSide> {
            let schema = Arc::new(df_schema.as_arrow().clone());
            Ok(JoinSide {
                keys: crate::expr::compile(keys, df_schema)?,
                time_column,
                time_name: schema.field(time_column).name().clone(),
                schema,
                held: HeldRows::default(),
                index: HashMap::new(),
                entries: 0,
                entries_after_sweep: 0,
                watermark: None,
                late_output,
            })
        };
        let left = side(
            &node.left_schema,
            &node.left_keys,
            node.left_time,
            late_outputs.0,
        )?;
        let right = side(
            &node.right_schema,
            &node.right_keys,
            node.right_time,
            late_outputs.1,
        )?;
        let fields = left
            .keys
            .iter()
            .map(|k| Ok(SortField::new(k.data_type(&left.schema)?)))
            .collect::<std::result::Result<Vec<_>, DataFusionError>>()?;
        let converter = RowConverter::new(fields).map_err(arrow_error)?;
        let join_schema: &DFSchema = &node.schema;
        let residual = match &node.residual {
            Some(expr) => {
                Some(crate::expr::compile(std::slice::from_ref(expr), join_schema)?.remove(0))
            }
            None => None,
        };
        Ok(Self {
            left,
            right,
            converter,
            lower_ms: node.lower_ms,
            upper_ms: node.upper_ms,
            residual,
            schema: Arc::new(node.schema.as_arrow().clone()),
            emitted: None,
            metrics,
        })
    }

    /// The oldest time a kept row of `side` can have: rows before it can meet no future
    /// row of the other side.
    fn keep_from(&self, side: Side) -> Option<i64> {
        match side {
            Side::Left => self
                .right
                .watermark
                .map(|w| w.saturating_add(self.lower_ms)),
            Side::Right => self.left.watermark.map(|w| w.saturating_sub(self.upper_ms)),
        }
    }
}

impl TwoInputOperator for IntervalJoinOperator {
    fn name(&self) -> &str {
        "IntervalJoin"
    }

    fn process_batch(
        &mut self,
        side: Side,
        batch: RecordBatch,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        let keep_from = self.keep_from(side);
        let (this, other) = match side {
            Side::Left => (&mut self.left, &self.right),
            Side::Right => (&mut self.right, &self.left),
        };
        let mut batch = batch;
        let mut times = event_times(&batch, this.time_column, &this.time_name, "IntervalJoin")?;
        if let Some(watermark) = this.watermark {
            let millis: Int64Array = times.reinterpret_cast();
            let on_time =
                gt_eq(&millis, &Int64Array::new_scalar(watermark)).map_err(arrow_error)?;
            let late = on_time.len() - on_time.true_count();
            if late > 0 {
                JobMetrics::add(&self.metrics.late_rows, late);
                if let Some(output) = &this.late_output {
                    output.emit_late(&batch, &on_time, out)?;
                }
                batch = filter_record_batch(&batch, &on_time).map_err(arrow_error)?;
                times = event_times(&batch, this.time_column, &this.time_name, "IntervalJoin")?;
            }
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let key_columns = crate::expr::evaluate(&this.keys, &batch)?;
        // SQL equality: a NULL key matches nothing.
        let has_null_key = |row: usize| key_columns.iter().any(|k| k.is_null(row));
        let keys = self
            .converter
            .convert_columns(&key_columns)
            .map_err(arrow_error)?;

        // Probe the other side.
        let (mut probe_rows, mut partners): (Vec<u32>, Vec<RowRef>) = (Vec::new(), Vec::new());
        for (row, &t) in times.values().iter().enumerate() {
            if has_null_key(row) {
                continue;
            }
            let Some(candidates) = other.index.get(keys.row(row).data()) else {
                continue;
            };
            for &(partner, other_t) in candidates {
                let difference = match side {
                    Side::Left => t - other_t,
                    Side::Right => other_t - t,
                };
                if (self.lower_ms..=self.upper_ms).contains(&difference) {
                    probe_rows.push(row as u32);
                    partners.push(partner);
                }
            }
        }
        if !probe_rows.is_empty() {
            let indices = UInt32Array::from(probe_rows);
            let these: Vec<ArrayRef> = batch
                .columns()
                .iter()
                .map(|c| take(c, &indices, None))
                .collect::<std::result::Result<_, _>>()
                .map_err(arrow_error)?;
            let those = other
                .held
                .gather(&other.schema, &partners)
                .map_err(arrow_error)?;
            let columns = match side {
                Side::Left => [these, those.columns().to_vec()].concat(),
                Side::Right => [those.columns().to_vec(), these].concat(),
            };
            let mut joined =
                RecordBatch::try_new(self.schema.clone(), columns).map_err(arrow_error)?;
            if let Some(residual) = &self.residual {
                let keep = residual
                    .evaluate(&joined)
                    .and_then(|v| v.into_array(joined.num_rows()))
                    .map_err(operator_error)?;
                let keep = keep
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| RuntimeError::Build("join condition is not boolean".into()))?;
                joined = filter_record_batch(&joined, keep).map_err(arrow_error)?;
            }
            if joined.num_rows() > 0 {
                out.push(Message::Batch(joined));
            }
        }

        // Keep the rows a future row of the other side can still match.
        let kept: Vec<usize> = (0..batch.num_rows())
            .filter(|&row| {
                !has_null_key(row) && keep_from.is_none_or(|from| times.value(row) >= from)
            })
            .collect();
        if kept.is_empty() {
            return Ok(());
        }
        let batch = compacted(&batch).map_err(operator_error)?;
        let id = this.held.push(batch);
        // Rows not kept are released at once (the batch is held whole).
        let mut skipped = Vec::new();
        let mut next = kept.iter().peekable();
        for row in 0..times.len() {
            if next.peek() == Some(&&row) {
                next.next();
                this.index
                    .entry(keys.row(row).data().into())
                    .or_default()
                    .push(((id, row as u32), times.value(row)));
            } else {
                skipped.push((id, row as u32));
            }
        }
        this.held.release(&skipped);
        this.entries += kept.len();
        Ok(())
    }

    fn process_watermark(
        &mut self,
        side: Side,
        watermark: Watermark,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        let this = match side {
            Side::Left => &mut self.left,
            Side::Right => &mut self.right,
        };
        if this.watermark.is_some_and(|w| w >= watermark) {
            return Ok(());
        }
        this.watermark = Some(watermark);
        // Sweep expired rows once a side has doubled since its last sweep (amortized O(1)).
        for side in [Side::Left, Side::Right] {
            let keep_from = self.keep_from(side);
            let state = match side {
                Side::Left => &mut self.left,
                Side::Right => &mut self.right,
            };
            if let Some(from) = keep_from {
                if state.entries > 2 * state.entries_after_sweep + 1024 {
                    state.sweep(from);
                }
            }
        }
        if let (Some(l), Some(r)) = (self.left.watermark, self.right.watermark) {
            let slack = self.lower_ms.abs().max(self.upper_ms.abs());
            let output = match l.min(r) {
                crate::message::WATERMARK_END => crate::message::WATERMARK_END,
                min => min.saturating_sub(slack),
            };
            if self.emitted.is_none_or(|e| output > e) {
                self.emitted = Some(output);
                out.push(Message::Watermark(output));
            }
        }
        Ok(())
    }
}
