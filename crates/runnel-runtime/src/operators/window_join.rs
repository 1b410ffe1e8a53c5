//! [`WindowJoinOperator`]: Flink's window join — two windowed streams joined on their
//! windows (`window_start`, `window_end`) and keys. Each side's rows are held per window
//! until the watermark (the minimum of both inputs') reaches the window's end; then the
//! window's rows are joined once — inner, or padded with NULLs for outer joins — and freed.

use std::collections::BTreeMap;

use datafusion::common::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, UInt32Array};
use datafusion::arrow::compute::kernels::cmp::gt;
use datafusion::arrow::compute::{concat_batches, filter_record_batch, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::DFSchema;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::JoinType;
use datafusion::physical_expr::PhysicalExpr;
use runnel_sql::WindowJoinNode;

use crate::error::{Result, RuntimeError};
use crate::message::Watermark;
use crate::metrics::JobMetrics;
use crate::operator::{
    CheckpointedState, Collector, InputWatermarks, OperatorState, Side, StreamOperator,
    TwoInputOperator,
};
use crate::operators::join_rows::{padded, split_two_sided, two_sided_state};
use crate::operators::late_rows::drop_late;
use crate::operators::window_assign::{as_millis, compacted};
use crate::operators::LateRowsOutput;

fn operator_error(source: DataFusionError) -> RuntimeError {
    RuntimeError::Operator {
        operator: "WindowJoin".into(),
        source,
    }
}

fn arrow_error(e: ArrowError) -> RuntimeError {
    operator_error(e.into())
}

/// One input's rows, per open window (keyed by its end).
struct WindowSide {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    window_end: usize,
    schema: SchemaRef,
    windows: BTreeMap<i64, Vec<RecordBatch>>,
    late_output: Option<LateRowsOutput>,
}

impl WindowSide {
    /// The rows of the window ending at `end` (possibly none), freeing them.
    fn take_window(&mut self, end: i64) -> Result<RecordBatch> {
        let batches = self.windows.remove(&end).unwrap_or_default();
        concat_batches(&self.schema, &batches).map_err(arrow_error)
    }
}

/// An inner or outer window join.
pub struct WindowJoinOperator {
    left: WindowSide,
    right: WindowSide,
    converter: RowConverter,
    join_type: JoinType,
    residual: Option<Arc<dyn PhysicalExpr>>,
    /// Left columns then right columns: candidate pairs (and the residual) use it; the
    /// output has it too except for semi and anti joins, which output one side.
    pair_schema: SchemaRef,
    schema: SchemaRef,
    metrics: Arc<JobMetrics>,
}

impl WindowJoinOperator {
    pub fn try_new(
        node: &WindowJoinNode,
        metrics: Arc<JobMetrics>,
        late_outputs: (Option<LateRowsOutput>, Option<LateRowsOutput>),
    ) -> Result<Self> {
        let side = |schema: &DFSchema,
                    keys: &[datafusion::logical_expr::Expr],
                    window_end: usize,
                    late_output: Option<LateRowsOutput>|
         -> Result<WindowSide> {
            Ok(WindowSide {
                keys: crate::expr::compile(keys, schema)?,
                window_end,
                schema: Arc::new(schema.as_arrow().clone()),
                windows: BTreeMap::new(),
                late_output,
            })
        };
        let left = side(
            &node.left_schema,
            &node.left_keys,
            node.left_window_end,
            late_outputs.0,
        )?;
        let right = side(
            &node.right_schema,
            &node.right_keys,
            node.right_window_end,
            late_outputs.1,
        )?;
        let fields = left
            .keys
            .iter()
            .map(|k| Ok(SortField::new(k.data_type(&left.schema)?)))
            .collect::<std::result::Result<Vec<_>, DataFusionError>>()?;
        let pair_schema = node
            .left_schema
            .join(&node.right_schema)
            .map_err(operator_error)?;
        let residual = match &node.residual {
            Some(expr) => {
                Some(crate::expr::compile(std::slice::from_ref(expr), &pair_schema)?.remove(0))
            }
            None => None,
        };
        Ok(Self {
            left,
            right,
            converter: RowConverter::new(fields).map_err(arrow_error)?,
            join_type: node.join_type,
            residual,
            pair_schema: Arc::new(pair_schema.as_arrow().clone()),
            schema: Arc::new(node.schema.as_arrow().clone()),
            metrics,
        })
    }

    /// Joins one window's rows of both sides.
    fn join_window(&self, left: &RecordBatch, right: &RecordBatch) -> Result<Option<RecordBatch>> {
        let keys = |side: &WindowSide, batch: &RecordBatch| -> Result<(Vec<ArrayRef>, _)> {
            let columns = crate::expr::evaluate(&side.keys, batch)?;
            let rows = self
                .converter
                .convert_columns(&columns)
                .map_err(arrow_error)?;
            Ok((columns, rows))
        };
        let (left_columns, left_keys) = keys(&self.left, left)?;
        let (right_columns, right_keys) = keys(&self.right, right)?;
        let null_key = |columns: &[ArrayRef], row: usize| columns.iter().any(|c| c.is_null(row));
        // Build on the right, probe with the left.
        let mut build: HashMap<&[u8], Vec<u32>> = HashMap::new();
        for row in 0..right.num_rows() {
            if !null_key(&right_columns, row) {
                build
                    .entry(right_keys.row(row).data())
                    .or_default()
                    .push(row as u32);
            }
        }
        let (mut left_rows, mut right_rows) = (Vec::new(), Vec::new());
        for row in 0..left.num_rows() {
            if null_key(&left_columns, row) {
                continue;
            }
            if let Some(matches) = build.get(left_keys.row(row).data()) {
                for &r in matches {
                    left_rows.push(row as u32);
                    right_rows.push(r);
                }
            }
        }
        let pick = |batch: &RecordBatch, rows: &[u32]| -> Result<Vec<ArrayRef>> {
            let indices = UInt32Array::from(rows.to_vec());
            batch
                .columns()
                .iter()
                .map(|c| take(c, &indices, None))
                .collect::<std::result::Result<_, _>>()
                .map_err(arrow_error)
        };
        let mut parts = Vec::new();
        let joined = RecordBatch::try_new(
            self.pair_schema.clone(),
            [pick(left, &left_rows)?, pick(right, &right_rows)?].concat(),
        )
        .map_err(arrow_error)?;
        // The rest of the ON clause decides which candidate pairs match.
        let matched = match &self.residual {
            Some(residual) => crate::expr::predicate(residual, &joined).map_err(operator_error)?,
            None => BooleanArray::from(vec![true; joined.num_rows()]),
        };
        let (mut left_matched, mut right_matched) =
            (vec![false; left.num_rows()], vec![false; right.num_rows()]);
        for (i, is_match) in matched.iter().enumerate() {
            if is_match == Some(true) {
                left_matched[left_rows[i] as usize] = true;
                right_matched[right_rows[i] as usize] = true;
            }
        }
        let unmatched = |matched: &[bool], wanted: bool| -> Vec<u32> {
            (0..matched.len() as u32)
                .filter(|&i| matched[i as usize] == wanted)
                .collect()
        };
        // Semi and anti joins output one side's rows, once each.
        let one_side = match self.join_type {
            JoinType::LeftSemi => Some((left, unmatched(&left_matched, true))),
            JoinType::LeftAnti => Some((left, unmatched(&left_matched, false))),
            JoinType::RightSemi => Some((right, unmatched(&right_matched, true))),
            JoinType::RightAnti => Some((right, unmatched(&right_matched, false))),
            _ => None,
        };
        if let Some((side, rows)) = one_side {
            let output = RecordBatch::try_new(self.schema.clone(), pick(side, &rows)?)
                .map_err(arrow_error)?;
            return Ok((output.num_rows() > 0).then_some(output));
        }
        parts.push(filter_record_batch(&joined, &matched).map_err(arrow_error)?);
        let pad = |side: Side, batch: &RecordBatch, rows: &[u32], other: &SchemaRef| {
            let rows =
                RecordBatch::try_new(batch.schema(), pick(batch, rows)?).map_err(arrow_error)?;
            padded(&self.schema, side, &rows, other)
        };
        if matches!(self.join_type, JoinType::Left | JoinType::Full) {
            let rows = unmatched(&left_matched, false);
            if !rows.is_empty() {
                parts.push(pad(Side::Left, left, &rows, &self.right.schema)?);
            }
        }
        if matches!(self.join_type, JoinType::Right | JoinType::Full) {
            let rows = unmatched(&right_matched, false);
            if !rows.is_empty() {
                parts.push(pad(Side::Right, right, &rows, &self.left.schema)?);
            }
        }
        let output = concat_batches(&self.schema, &parts).map_err(arrow_error)?;
        Ok((output.num_rows() > 0).then_some(output))
    }
}

impl StreamOperator for WindowJoinOperator {
    fn name(&self) -> &str {
        "WindowJoin"
    }

    fn state(&mut self) -> OperatorState<'_> {
        OperatorState::Checkpointed(self)
    }
}

impl CheckpointedState for WindowJoinOperator {
    fn size(&self) -> usize {
        [&self.left, &self.right]
            .iter()
            .flat_map(|side| side.windows.values().flatten())
            .map(RecordBatch::get_array_memory_size)
            .sum()
    }

    /// Both sides' rows of the open windows.
    fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        let rows = |side: &WindowSide| -> Vec<RecordBatch> {
            side.windows.values().flatten().cloned().collect()
        };
        two_sided_state(
            &self.left.schema,
            &rows(&self.left),
            &self.right.schema,
            &rows(&self.right),
        )
        .map(Some)
    }

    /// Holding the rows again puts them back in their windows (nothing is emitted on
    /// arrival, and no watermark makes them late).
    fn restore(&mut self, state: RecordBatch) -> Result<()> {
        let (left, right) = split_two_sided(&state, &self.left.schema, &self.right.schema)?;
        let none = InputWatermarks::default();
        let mut out = Collector::default();
        self.process_batch(Side::Left, left, &none, &mut out)?;
        self.process_batch(Side::Right, right, &none, &mut out)?;
        Ok(())
    }
}

impl TwoInputOperator for WindowJoinOperator {
    fn process_batch(
        &mut self,
        side: Side,
        batch: RecordBatch,
        watermarks: &InputWatermarks,
        out: &mut Collector,
    ) -> Result<()> {
        let this = match side {
            Side::Left => &mut self.left,
            Side::Right => &mut self.right,
        };
        let mut batch = batch;
        let mut ends: Int64Array = as_millis(batch.column(this.window_end))
            .map_err(operator_error)?
            .reinterpret_cast();
        // A row of a window already joined (ending by both inputs' watermark) is late.
        if let Some(emitted) = watermarks.min() {
            let on_time = gt(&ends, &Int64Array::new_scalar(emitted)).map_err(arrow_error)?;
            let output = this.late_output.as_ref();
            if let Some(kept) = drop_late(&batch, &on_time, &self.metrics, output, out)? {
                batch = kept;
                ends = as_millis(batch.column(this.window_end))
                    .map_err(operator_error)?
                    .reinterpret_cast();
            }
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = compacted(&batch).map_err(operator_error)?;
        let values = ends.values();
        if values.iter().all(|&e| e == values[0]) {
            this.windows.entry(values[0]).or_default().push(batch);
            return Ok(());
        }
        let mut distinct: Vec<i64> = values.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        for end in distinct {
            let mask = BooleanArray::from_iter(values.iter().map(|&e| Some(e == end)));
            let rows = filter_record_batch(&batch, &mask).map_err(arrow_error)?;
            this.windows.entry(end).or_default().push(rows);
        }
        Ok(())
    }

    /// Joins and frees every window both inputs' watermark has passed, in order.
    fn process_watermark(
        &mut self,
        _advanced: Side,
        watermarks: &InputWatermarks,
        out: &mut Collector,
    ) -> Result<Option<Watermark>> {
        let Some(watermark) = watermarks.min() else {
            return Ok(None);
        };
        // Every window either side holds that ends by the watermark, in order.
        let mut ends: Vec<i64> = self
            .left
            .windows
            .range(..=watermark)
            .chain(self.right.windows.range(..=watermark))
            .map(|(end, _)| *end)
            .collect();
        ends.sort_unstable();
        ends.dedup();
        for end in ends {
            let left = self.left.take_window(end)?;
            let right = self.right.take_window(end)?;
            if let Some(joined) = self.join_window(&left, &right)? {
                out.emit(joined);
            }
        }
        Ok(Some(watermark))
    }
}
