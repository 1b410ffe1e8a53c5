//! [`IntervalJoinOperator`]: Flink's interval join — two streams joined on equal keys where
//! `lower <= left.time - right.time <= upper`.
//!
//! Each side keeps its rows, indexed by key, while a row of the other side can still match
//! them: a left row at `t` can only meet right rows at `t - upper ..= t - lower`, and the
//! right side promises (its watermark `Wr`) no rows before `Wr`, so the left row is kept
//! while `t >= Wr + lower`; symmetrically a right row while `t >= Wl - upper`. A row is
//! joined with the other side's kept rows as it arrives, so each pair is emitted exactly
//! once, by whichever of its rows came second. A row below its own side's watermark is
//! late (its partners may be gone): dropped and counted, or routed. A side's rows are held
//! in a [`KeyedRowLog`] (arrival order, chained by key), so dropping the rows out of reach
//! at each watermark costs the rows dropped.
//!
//! The forwarded watermark is the inputs' minimum less the larger bound, so no joined row
//! is late downstream whichever side's time it carries.

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
use crate::message::Watermark;
use crate::metrics::JobMetrics;
use crate::operator::{
    CheckpointedState, Collector, InputWatermarks, OperatorState, Side, StreamOperator,
    TwoInputOperator,
};
use crate::operators::join_rows::{padded, split_two_sided, two_sided_state};
use crate::operators::keyed_row_log::{key_hash, KeyedRowLog, RowNumber};
use crate::operators::late_rows::drop_late;
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
    log: KeyedRowLog,
    late_output: Option<LateRowsOutput>,
    /// Outer on this side: rows that never matched are emitted padded with NULLs once no
    /// partner can come any more.
    outer: bool,
}

impl JoinSide {
    /// Every held row and whether it is still unmatched (an outer side's), for a checkpoint.
    fn held_rows(&self) -> std::result::Result<RecordBatch, ArrowError> {
        let (numbers, flags): (Vec<RowNumber>, Vec<bool>) = self.log.held().unzip();
        let rows = self.log.gather(&self.schema, &numbers)?;
        let mut columns = rows.columns().to_vec();
        columns.push(Arc::new(BooleanArray::from(flags)));
        RecordBatch::try_new(with_flag(&self.schema), columns)
    }

    /// Holds checkpointed rows again (see [`JoinSide::held_rows`]), without probing.
    fn hold_again(&mut self, state: &RecordBatch, converter: &RowConverter) -> Result<()> {
        let last = state.num_columns() - 1;
        let flags = state
            .column(last)
            .as_any()
            .downcast_ref::<BooleanArray>()
            .cloned()
            .ok_or_else(|| RuntimeError::Checkpoint("IntervalJoin state lacks flags".into()))?;
        let rows = RecordBatch::try_new(self.schema.clone(), state.columns()[..last].to_vec())
            .map_err(arrow_error)?;
        if rows.num_rows() == 0 {
            return Ok(());
        }
        let times = event_times(&rows, self.time_column, &self.time_name, "IntervalJoin")?;
        let key_columns = crate::expr::evaluate(&self.keys, &rows)?;
        let keys = converter
            .convert_columns(&key_columns)
            .map_err(arrow_error)?;
        let hashes: Vec<u64> = keys.iter().map(key_hash).collect();
        let rows = compacted(&rows).map_err(operator_error)?;
        let first = self.log.push(rows, keys, &hashes, times.values());
        for (i, &time) in times.values().iter().enumerate() {
            if self.outer && flags.value(i) {
                self.log.unmatched(first + i as RowNumber, time);
            }
        }
        Ok(())
    }
}

/// `schema` with a trailing `__unmatched` flag (a checkpointed side's rows).
fn with_flag(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(datafusion::arrow::datatypes::Field::new(
        "__unmatched",
        datafusion::arrow::datatypes::DataType::Boolean,
        false,
    )));
    Arc::new(datafusion::arrow::datatypes::Schema::new(fields))
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
                log: KeyedRowLog::default(),
                late_output,
                outer: false,
            })
        };
        let mut left = side(
            &node.left_schema,
            &node.left_keys,
            node.left_time,
            late_outputs.0,
        )?;
        let mut right = side(
            &node.right_schema,
            &node.right_keys,
            node.right_time,
            late_outputs.1,
        )?;
        use datafusion::logical_expr::JoinType;
        left.outer = matches!(node.join_type, JoinType::Left | JoinType::Full);
        right.outer = matches!(node.join_type, JoinType::Right | JoinType::Full);
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
            metrics,
        })
    }

    /// The oldest time a kept row of `side` can have: rows before it can meet no future
    /// row of the other side (whose watermark `watermarks` holds).
    fn keep_from(&self, side: Side, watermarks: &InputWatermarks) -> Option<i64> {
        match side {
            Side::Left => watermarks.right.map(|w| w.saturating_add(self.lower_ms)),
            Side::Right => watermarks.left.map(|w| w.saturating_sub(self.upper_ms)),
        }
    }
}

impl StreamOperator for IntervalJoinOperator {
    fn name(&self) -> &str {
        "IntervalJoin"
    }

    fn state(&mut self) -> OperatorState<'_> {
        OperatorState::Checkpointed(self)
    }
}

impl CheckpointedState for IntervalJoinOperator {
    fn size(&self) -> usize {
        self.left.log.size() + self.right.log.size()
    }

    /// Both sides' held rows, with whether each is still unmatched.
    fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        let left = self.left.held_rows().map_err(arrow_error)?;
        let right = self.right.held_rows().map_err(arrow_error)?;
        two_sided_state(&left.schema(), &[left], &right.schema(), &[right]).map(Some)
    }

    fn restore(&mut self, state: RecordBatch) -> Result<()> {
        let (left, right) = split_two_sided(
            &state,
            &with_flag(&self.left.schema),
            &with_flag(&self.right.schema),
        )?;
        self.left.hold_again(&left, &self.converter)?;
        self.right.hold_again(&right, &self.converter)?;
        Ok(())
    }
}

impl TwoInputOperator for IntervalJoinOperator {
    fn process_batch(
        &mut self,
        side: Side,
        batch: RecordBatch,
        watermarks: &InputWatermarks,
        out: &mut Collector,
    ) -> Result<()> {
        let keep_from = self.keep_from(side, watermarks);
        let (this, other) = match side {
            Side::Left => (&mut self.left, &mut self.right),
            Side::Right => (&mut self.right, &mut self.left),
        };
        let mut batch = batch;
        let mut times = event_times(&batch, this.time_column, &this.time_name, "IntervalJoin")?;
        // A row below its own side's watermark is late.
        if let Some(watermark) = watermarks.of(side) {
            let millis: Int64Array = times.reinterpret_cast();
            let on_time =
                gt_eq(&millis, &Int64Array::new_scalar(watermark)).map_err(arrow_error)?;
            let output = this.late_output.as_ref();
            if let Some(kept) = drop_late(&batch, &on_time, &self.metrics, output, out)? {
                batch = kept;
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
        let hashes: Vec<u64> = keys.iter().map(key_hash).collect();

        // Probe the other side.
        let mut matched = vec![false; batch.num_rows()];
        let (mut probe_rows, mut partners): (Vec<u32>, Vec<RowNumber>) = (Vec::new(), Vec::new());
        let mut partner_times: Vec<i64> = Vec::new();
        let bound = self.lower_ms..=self.upper_ms;
        for (row, &t) in times.values().iter().enumerate() {
            if has_null_key(row) {
                continue;
            }
            other
                .log
                .for_each_match(keys.row(row), hashes[row], |partner, other_t| {
                    let difference = match side {
                        Side::Left => t - other_t,
                        Side::Right => other_t - t,
                    };
                    if bound.contains(&difference) {
                        probe_rows.push(row as u32);
                        partners.push(partner);
                        partner_times.push(other_t);
                    }
                });
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
                .log
                .gather(&other.schema, &partners)
                .map_err(arrow_error)?;
            let columns = match side {
                Side::Left => [these, those.columns().to_vec()].concat(),
                Side::Right => [those.columns().to_vec(), these].concat(),
            };
            let mut joined =
                RecordBatch::try_new(self.schema.clone(), columns).map_err(arrow_error)?;
            let passed = match &self.residual {
                Some(residual) => {
                    let keep = crate::expr::predicate(residual, &joined).map_err(operator_error)?;
                    joined = filter_record_batch(&joined, &keep).map_err(arrow_error)?;
                    keep.values().iter().collect()
                }
                None => vec![true; partners.len()],
            };
            // Outer joins remember who matched.
            let pairs = indices.values().iter().zip(&partners).zip(&partner_times);
            for (((&row, partner), &partner_time), passed) in pairs.zip(passed) {
                if passed {
                    matched[row as usize] = true;
                    if other.outer {
                        other.log.matched(*partner, partner_time);
                    }
                }
            }
            if joined.num_rows() > 0 {
                out.emit(joined);
            }
        }
        // Keep the rows a future row of the other side can still match.
        let kept: Vec<usize> = (0..batch.num_rows())
            .filter(|&row| {
                !has_null_key(row) && keep_from.is_none_or(|from| times.value(row) >= from)
            })
            .collect();
        if this.outer {
            // Rows no partner can reach any more, never matched: padded now.
            let mut is_kept = vec![false; batch.num_rows()];
            kept.iter().for_each(|&row| is_kept[row] = true);
            let lonely: Vec<u32> = (0..batch.num_rows() as u32)
                .filter(|&row| !matched[row as usize] && !is_kept[row as usize])
                .collect();
            if !lonely.is_empty() {
                let indices = UInt32Array::from(lonely);
                let rows = datafusion::arrow::compute::take_record_batch(&batch, &indices)
                    .map_err(arrow_error)?;
                out.emit(padded(&self.schema, side, &rows, &other.schema)?);
            }
        }
        if kept.is_empty() {
            return Ok(());
        }
        // Hold copies of the kept rows (all of them, usually) and their keys.
        let (rows, keys, hashes, kept_times) = if kept.len() == batch.num_rows() {
            let rows = compacted(&batch).map_err(operator_error)?;
            (rows, keys, hashes, times.values().to_vec())
        } else {
            let indices = UInt32Array::from_iter_values(kept.iter().map(|&row| row as u32));
            let rows = datafusion::arrow::compute::take_record_batch(&batch, &indices)
                .map_err(arrow_error)?;
            let mut kept_keys = self.converter.empty_rows(kept.len(), 0);
            kept.iter().for_each(|&row| kept_keys.push(keys.row(row)));
            let kept_hashes = kept.iter().map(|&row| hashes[row]).collect();
            let kept_times = kept.iter().map(|&row| times.value(row)).collect();
            (rows, kept_keys, kept_hashes, kept_times)
        };
        let first = this.log.push(rows, keys, &hashes, &kept_times);
        if this.outer {
            for (i, &row) in kept.iter().enumerate() {
                if !matched[row] {
                    this.log.unmatched(first + i as RowNumber, kept_times[i]);
                }
            }
        }
        Ok(())
    }

    /// Pads an outer side's rows that can no longer match, sweeps rows out of reach, and
    /// forwards the inputs' minimum less the larger bound (so no joined row is late).
    fn process_watermark(
        &mut self,
        _advanced: Side,
        watermarks: &InputWatermarks,
        out: &mut Collector,
    ) -> Result<Option<Watermark>> {
        // Outer sides: rows that can no longer match, never matched, padded with NULLs
        // before the watermark passes them.
        for side in [Side::Left, Side::Right] {
            let Some(from) = self.keep_from(side, watermarks) else {
                continue;
            };
            let (this, other) = match side {
                Side::Left => (&mut self.left, &self.right),
                Side::Right => (&mut self.right, &self.left),
            };
            if !this.outer {
                continue;
            }
            let expired = this.log.take_unmatched_before(from);
            if !expired.is_empty() {
                let rows = this
                    .log
                    .gather(&this.schema, &expired)
                    .map_err(arrow_error)?;
                out.emit(padded(&self.schema, side, &rows, &other.schema)?);
            }
        }
        // Drop the rows out of reach (the oldest ones: this costs what is dropped).
        for side in [Side::Left, Side::Right] {
            let keep_from = self.keep_from(side, watermarks);
            let state = match side {
                Side::Left => &mut self.left,
                Side::Right => &mut self.right,
            };
            if let Some(from) = keep_from {
                state
                    .log
                    .expire(from, &self.converter)
                    .map_err(arrow_error)?;
            }
        }
        let slack = self.lower_ms.abs().max(self.upper_ms.abs());
        Ok(watermarks.min().map(|min| match min {
            crate::message::WATERMARK_END => crate::message::WATERMARK_END,
            min => min.saturating_sub(slack),
        }))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::TimestampMillisecondArray;
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::logical_expr::col;
    use runnel_sql::StreamNode;

    use super::*;

    use crate::test_random::Random;

    fn side_schema(qualifier: &str) -> Arc<DFSchema> {
        let schema = Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]);
        Arc::new(DFSchema::try_from_qualified_schema(qualifier, &schema).unwrap())
    }

    fn operator(
        lower_ms: i64,
        upper_ms: i64,
        join_type: datafusion::logical_expr::JoinType,
    ) -> IntervalJoinOperator {
        let (left, right) = (side_schema("l"), side_schema("r"));
        let schema = Arc::new(left.join(&right).unwrap());
        let placeholder = |schema: &Arc<DFSchema>| {
            Box::new(StreamNode::Union {
                inputs: vec![],
                schema: schema.clone(),
            })
        };
        let node = IntervalJoinNode {
            left: placeholder(&left),
            right: placeholder(&right),
            left_schema: left,
            right_schema: right,
            left_keys: vec![col("l.k")],
            right_keys: vec![col("r.k")],
            left_time: 2,
            right_time: 2,
            lower_ms,
            upper_ms,
            join_type,
            residual: None,
            schema,
        };
        IntervalJoinOperator::try_new(&node, Arc::new(JobMetrics::default()), (None, None)).unwrap()
    }

    fn batch(rows: &[(Option<i64>, i64, i64)], schema: &SchemaRef) -> RecordBatch {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.2),
                )),
            ],
        )
        .unwrap()
    }

    /// Random interleavings of the two inputs, with watermarks trailing each side's
    /// maximum and checkpoints restored along the way, against a nested-loop join of the
    /// rows that were not late.
    #[test]
    fn any_interleaving_joins_exactly_the_pairs_in_the_bound() {
        use std::sync::atomic::Ordering::Relaxed;
        for seed in 1..=300u64 {
            let mut rng = Random(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let lower = rng.below(20) as i64 - 15;
            let upper = lower + rng.below(12) as i64;
            let join_type = [
                datafusion::logical_expr::JoinType::Inner,
                datafusion::logical_expr::JoinType::Left,
                datafusion::logical_expr::JoinType::Right,
                datafusion::logical_expr::JoinType::Full,
            ][rng.below(4) as usize];
            let mut join = operator(lower, upper, join_type);
            let schemas = [join.left.schema.clone(), join.right.schema.clone()];
            // Each side: times rising ~2 per row with disorder up to 6 (dense, so rows land
            // exactly on watermarks and bounds), some NULL keys, some rows far behind and
            // some far ahead (left out of the watermark, they hold up the rows behind them).
            let mut rows: [Vec<(Option<i64>, i64, i64)>; 2] = [vec![], vec![]];
            let mut ahead: [Vec<bool>; 2] = [vec![], vec![]];
            for (s, side_rows) in rows.iter_mut().enumerate() {
                for i in 0..120i64 {
                    let key = (rng.below(8) != 0).then(|| rng.below(3) as i64);
                    let late = if rng.below(15) == 0 { 40 } else { 0 };
                    let early = if rng.below(20) == 0 {
                        30 + rng.below(40) as i64
                    } else {
                        0
                    };
                    let t = i * 2 - rng.below(6) as i64 - late + early;
                    side_rows.push((key, i + 1000 * s as i64, t));
                    ahead[s].push(early > 0);
                }
            }
            let (mut next, mut max, mut watermark) = ([0usize; 2], [i64::MIN; 2], [None::<i64>; 2]);
            let mut on_time: [Vec<(Option<i64>, i64, i64)>; 2] = [vec![], vec![]];
            let mut out = Collector::default();
            let mut emitted = Vec::new();
            let mut watermarks = InputWatermarks::default();
            let mut late_before_restores = 0;
            while next[0] < 120 || next[1] < 120 {
                let s = if next[0] >= 120 {
                    1
                } else if next[1] >= 120 {
                    0
                } else {
                    rng.below(2) as usize
                };
                let n = (1 + rng.below(12) as usize).min(120 - next[s]);
                let chunk = &rows[s][next[s]..next[s] + n];
                for (row, &ahead) in chunk.iter().zip(&ahead[s][next[s]..]) {
                    if watermark[s].is_none_or(|w| row.2 >= w) {
                        on_time[s].push(*row);
                    }
                    if !ahead {
                        max[s] = max[s].max(row.2);
                    }
                }
                next[s] += n;
                let side = if s == 0 { Side::Left } else { Side::Right };
                // Now and then a checkpoint, restored into a new operator.
                if rng.below(10) == 0 {
                    late_before_restores += join.metrics.late_rows.load(Relaxed) as usize;
                    let state = join.snapshot().unwrap();
                    join = operator(lower, upper, join_type);
                    if let Some(state) = state {
                        join.restore(state).unwrap();
                    }
                }
                join.process_batch(side, batch(chunk, &schemas[s]), &watermarks, &mut out)
                    .unwrap();
                emitted.extend(out.take());
                let w = max[s].saturating_sub(3);
                if max[s] > i64::MIN && watermark[s].is_none_or(|old| w > old) {
                    watermark[s] = Some(w);
                    watermarks.advance(side, w);
                    join.process_watermark(side, &watermarks, &mut out).unwrap();
                    emitted.extend(out.take());
                }
            }
            // The inputs end: every row expires, outer rows left alone are padded.
            for side in [Side::Left, Side::Right] {
                watermarks.advance(side, crate::message::WATERMARK_END);
                join.process_watermark(side, &watermarks, &mut out).unwrap();
                emitted.extend(out.take());
            }
            let mut actual: Vec<(Option<i64>, Option<i64>)> = Vec::new();
            for b in &emitted {
                let lv = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
                let rv = b.column(4).as_any().downcast_ref::<Int64Array>().unwrap();
                let value = |a: &Int64Array, i: usize| a.is_valid(i).then(|| a.value(i));
                actual.extend((0..b.num_rows()).map(|i| (value(lv, i), value(rv, i))));
            }
            actual.sort();
            let mut expected: Vec<(Option<i64>, Option<i64>)> = Vec::new();
            let (mut left_matched, mut right_matched) =
                (vec![false; on_time[0].len()], vec![false; on_time[1].len()]);
            for (li, l) in on_time[0].iter().enumerate() {
                for (ri, r) in on_time[1].iter().enumerate() {
                    let difference = l.2 - r.2;
                    if l.0.is_some() && l.0 == r.0 && (lower..=upper).contains(&difference) {
                        expected.push((Some(l.1), Some(r.1)));
                        left_matched[li] = true;
                        right_matched[ri] = true;
                    }
                }
            }
            use datafusion::logical_expr::JoinType;
            if matches!(join_type, JoinType::Left | JoinType::Full) {
                for (l, matched) in on_time[0].iter().zip(&left_matched) {
                    if !matched {
                        expected.push((Some(l.1), None));
                    }
                }
            }
            if matches!(join_type, JoinType::Right | JoinType::Full) {
                for (r, matched) in on_time[1].iter().zip(&right_matched) {
                    if !matched {
                        expected.push((None, Some(r.1)));
                    }
                }
            }
            expected.sort();
            assert_eq!(
                actual, expected,
                "seed {seed}, {join_type} join, bound [{lower}, {upper}]"
            );
            let late = 240 - on_time[0].len() - on_time[1].len();
            let late_counted = late_before_restores + join.metrics.late_rows.load(Relaxed) as usize;
            assert_eq!(late_counted, late);
        }
    }
}
