//! [`RegularJoinOperator`]: Flink's regular join of two inputs whose rows change — each
//! side's live rows, indexed by the join keys, joined with every change of the other side.
//!
//! A side's row is kept from its addition (`+I`/`+U`) to its retraction (`-U`/`-D`, which
//! finds it by its whole value), encoded in Arrow's row format: a long-lived row costs its
//! own bytes, not the batch it came in. A change is joined with the other side's live rows
//! as it arrives (the other side does not move while one batch is handled, so the pairs of
//! a whole batch are found and filtered by the residual condition in one pass), then the
//! batch's changes are applied in order. For outer sides each live row counts its
//! partners, so the first partner to arrive retracts the NULL-padded row and the last one
//! to leave brings it back.
//!
//! With `table.exec.state.ttl` each live row also keeps its event time, indexed, and is
//! dropped silently once the watermark passes it by the TTL (Flink's state TTL: a later
//! retraction of it is ignored and counted).
//!
//! Checkpoints hold each side's live rows with their slots ([`side`]): whole, or with
//! incremental checkpoints only the slots changed since the previous barrier.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int8Array, UInt32Array};
use datafusion::arrow::compute::{interleave_record_batch, take, take_record_batch};
use datafusion::arrow::datatypes::{Int8Type, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::DFSchema;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::JoinType;
use datafusion::physical_expr::PhysicalExpr;
use runnel_sql::changelog::{with_change_column, ChangeKind};
use runnel_sql::RegularJoinNode;

use crate::error::{Result, RuntimeError};
use crate::message::Watermark;
use crate::metrics::JobMetrics;
use crate::operator::{
    CheckpointedState, Collector, InputWatermarks, OperatorState, Side, StateIncrement,
    StreamOperator, TwoInputOperator,
};
use crate::operators::join_rows::{padded, residual_passes, split_two_sided, two_sided_state};
use side::{merge_chain, state_schema, JoinSide};

mod side;

fn operator_error(source: DataFusionError) -> RuntimeError {
    RuntimeError::Operator {
        operator: "RegularJoin".into(),
        source,
    }
}

fn arrow_error(e: ArrowError) -> RuntimeError {
    operator_error(e.into())
}

/// Where a row of the output comes from.
#[derive(Clone, Copy)]
enum Output {
    /// A joined pair, by its index among the batch's candidate pairs.
    Joined(usize),
    /// A row of the incoming batch, padded with NULLs for the other side.
    PaddedIncoming(usize),
    /// A live row of the other side, padded with NULLs for this side.
    PaddedOther(usize),
}

/// A regular join (see [`RegularJoinNode`]).
pub struct RegularJoinOperator {
    left: JoinSide,
    right: JoinSide,
    /// Encodes either side's join keys (the planner makes their types equal).
    keys: RowConverter,
    residual: Option<Arc<dyn PhysicalExpr>>,
    inner: bool,
    /// `table.exec.state.ttl`, in ms.
    ttl_ms: Option<i64>,
    /// The joined columns (without the change column), and the output's.
    joined_schema: SchemaRef,
    output_schema: SchemaRef,
    metrics: Arc<JobMetrics>,
}

impl RegularJoinOperator {
    pub fn try_new(node: &RegularJoinNode, metrics: Arc<JobMetrics>) -> Result<Self> {
        let left = JoinSide::new(
            &node.left_schema,
            &node.left_keys,
            node.left.is_updating(),
            matches!(node.join_type, JoinType::Left | JoinType::Full),
            node.state_ttl.map(|(left, _, _)| left),
        )?;
        let right = JoinSide::new(
            &node.right_schema,
            &node.right_keys,
            node.right.is_updating(),
            matches!(node.join_type, JoinType::Right | JoinType::Full),
            node.state_ttl.map(|(_, right, _)| right),
        )?;
        let fields = left
            .keys
            .iter()
            .map(|k| Ok(SortField::new(k.data_type(&left.schema)?)))
            .collect::<std::result::Result<Vec<_>, DataFusionError>>()?;
        let keys = RowConverter::new(fields).map_err(arrow_error)?;
        let join_schema: &DFSchema = &node.schema;
        let residual = match &node.residual {
            Some(expr) => {
                Some(crate::expr::compile(std::slice::from_ref(expr), join_schema)?.remove(0))
            }
            None => None,
        };
        let joined_schema = Arc::new(node.schema.as_arrow().clone());
        Ok(Self {
            left,
            right,
            keys,
            residual,
            inner: node.join_type == JoinType::Inner,
            ttl_ms: node.state_ttl.map(|(_, _, ttl)| ttl),
            output_schema: if node.emits_changes() {
                with_change_column(&joined_schema)
            } else {
                joined_schema.clone()
            },
            joined_schema,
            metrics,
        })
    }

    /// Each input row's change: the change column of an updating side, `+I` otherwise.
    fn changes(batch: &RecordBatch, updating: bool) -> Result<(RecordBatch, Vec<ChangeKind>)> {
        if !updating {
            return Ok((batch.clone(), vec![ChangeKind::Insert; batch.num_rows()]));
        }
        let last = batch.num_columns() - 1;
        let codes = batch
            .column(last)
            .as_primitive_opt::<Int8Type>()
            .ok_or_else(|| {
                RuntimeError::Build("RegularJoin: input lacks its change column".into())
            })?;
        let kinds = codes
            .values()
            .iter()
            .map(|&code| {
                ChangeKind::from_code(code).ok_or_else(|| {
                    RuntimeError::Build(format!("RegularJoin: unknown change code {code}"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((
            batch
                .project(&(0..last).collect::<Vec<_>>())
                .map_err(arrow_error)?,
            kinds,
        ))
    }
}

impl StreamOperator for RegularJoinOperator {
    fn name(&self) -> &str {
        "RegularJoin"
    }

    fn state(&mut self) -> OperatorState<'_> {
        OperatorState::Checkpointed(self)
    }
}

impl CheckpointedState for RegularJoinOperator {
    fn size(&self) -> usize {
        self.left.size() + self.right.size()
    }

    /// Both sides' live rows, with their partner counts and slots.
    fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        if self.left.live_rows() + self.right.live_rows() == 0 {
            return Ok(None);
        }
        let left = self.left.snapshot()?;
        let right = self.right.snapshot()?;
        two_sided_state(&left.schema(), &[left], &right.schema(), &[right]).map(Some)
    }

    fn restore(&mut self, state: RecordBatch) -> Result<()> {
        let (left_schema, right_schema) = (
            state_schema(&self.left.schema),
            state_schema(&self.right.schema),
        );
        let merged = merge_chain(
            vec![state],
            left_schema.fields().len(),
            right_schema.fields().len(),
        )?;
        let (left, right) = split_two_sided(&merged, &left_schema, &right_schema)?;
        self.left.restore(&left, &self.keys)?;
        self.right.restore(&right, &self.keys)?;
        Ok(())
    }

    fn track_increments(&mut self) -> bool {
        self.left.track_changes();
        self.right.track_changes();
        true
    }

    /// The slots of either side that changed since the last barrier.
    fn increment(&mut self) -> Result<Option<StateIncrement>> {
        let (Some(left), Some(right)) = (self.left.take_changes(), self.right.take_changes())
        else {
            return Ok(None);
        };
        let widths = (
            self.left.schema.fields().len() + 2,
            self.right.schema.fields().len() + 2,
        );
        Ok(Some(StateIncrement {
            build: Box::new(move || {
                let (left, right) = (left.build()?, right.build()?);
                two_sided_state(&left.schema(), &[left], &right.schema(), &[right])
            }),
            compact: Arc::new(move |chain| merge_chain(chain, widths.0, widths.1)),
        }))
    }
}

impl TwoInputOperator for RegularJoinOperator {
    fn process_batch(
        &mut self,
        side: Side,
        batch: RecordBatch,
        _watermarks: &InputWatermarks,
        out: &mut Collector,
    ) -> Result<()> {
        let (this, other) = match side {
            Side::Left => (&mut self.left, &mut self.right),
            Side::Right => (&mut self.right, &mut self.left),
        };
        let (rows, kinds) = Self::changes(&batch, this.updating)?;
        let key_columns = crate::expr::evaluate(&this.keys, &rows)?;
        // SQL equality: a NULL key matches nothing (and is never kept: nothing can join it).
        let has_null_key = |row: usize| key_columns.iter().any(|k| k.is_null(row));
        let keys = self
            .keys
            .convert_columns(&key_columns)
            .map_err(arrow_error)?;
        let encoded = this.encode(&rows)?;
        let times = this.times(&rows)?;

        // The candidate pairs of the whole batch: the other side does not change meanwhile.
        let (mut probe_rows, mut partners): (Vec<u32>, Vec<usize>) = (Vec::new(), Vec::new());
        for row in 0..rows.num_rows() {
            if has_null_key(row) {
                continue;
            }
            let slots = other.slots_of(keys.row(row).data());
            probe_rows.extend(std::iter::repeat_n(row as u32, slots.len()));
            partners.extend_from_slice(slots);
        }
        let indices = UInt32Array::from(probe_rows);
        let these: Vec<ArrayRef> = rows
            .columns()
            .iter()
            .map(|c| take(c, &indices, None))
            .collect::<std::result::Result<_, _>>()
            .map_err(arrow_error)?;
        let those = other.gather(&partners)?;
        let columns = match side {
            Side::Left => [these, those.columns().to_vec()].concat(),
            Side::Right => [those.columns().to_vec(), these].concat(),
        };
        let joined =
            RecordBatch::try_new(self.joined_schema.clone(), columns).map_err(arrow_error)?;
        let passed = residual_passes(self.residual.as_ref(), &joined).map_err(operator_error)?;

        // Apply the changes in order.
        let mut outputs: Vec<(Output, ChangeKind)> = Vec::new();
        let mut pair = 0;
        for (row, &kind) in kinds.iter().enumerate() {
            let first = pair;
            while pair < indices.len() && indices.value(pair) as usize == row {
                pair += 1;
            }
            // This row's pairs that passed the residual (no allocation per row).
            let matched = || (first..pair).filter(|&p| passed[p]);
            let partner_count = matched().count();
            let key = keys.row(row);
            if kind.is_addition() {
                if !has_null_key(row) {
                    this.insert(
                        key.data(),
                        encoded.row(row).data(),
                        partner_count as u32,
                        times[row],
                    );
                }
                if this.outer && partner_count == 0 {
                    outputs.push((Output::PaddedIncoming(row), ChangeKind::Insert));
                }
                let joined_kind = if self.inner && kind == ChangeKind::UpdateAfter {
                    ChangeKind::UpdateAfter
                } else {
                    ChangeKind::Insert
                };
                for p in matched() {
                    let slot = partners[p];
                    if other.outer && other.partner_joined(slot) {
                        outputs.push((Output::PaddedOther(slot), ChangeKind::Delete));
                    }
                    outputs.push((Output::Joined(p), joined_kind));
                }
            } else {
                let known = has_null_key(row) || this.remove(key.data(), encoded.row(row).data());
                if !known {
                    // Never added (or already taken out): nothing of it went out.
                    self.metrics
                        .ignored_changes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    continue;
                }
                if this.outer && partner_count == 0 {
                    outputs.push((Output::PaddedIncoming(row), ChangeKind::Delete));
                }
                for p in matched() {
                    let slot = partners[p];
                    outputs.push((Output::Joined(p), ChangeKind::Delete));
                    if other.outer && other.partner_left(slot) {
                        outputs.push((Output::PaddedOther(slot), ChangeKind::Insert));
                    }
                }
            }
        }
        if outputs.is_empty() {
            return Ok(());
        }

        // The output rows, in order, from the three places they come from.
        let incoming: Vec<u32> = outputs
            .iter()
            .filter_map(|(o, _)| match o {
                Output::PaddedIncoming(row) => Some(*row as u32),
                _ => None,
            })
            .collect();
        let others: Vec<usize> = outputs
            .iter()
            .filter_map(|(o, _)| match o {
                Output::PaddedOther(slot) => Some(*slot),
                _ => None,
            })
            .collect();
        let incoming_rows =
            take_record_batch(&rows, &UInt32Array::from(incoming)).map_err(arrow_error)?;
        let padded_incoming = padded(&self.joined_schema, side, &incoming_rows, &other.schema)?;
        let other_side = match side {
            Side::Left => Side::Right,
            Side::Right => Side::Left,
        };
        let padded_others = padded(
            &self.joined_schema,
            other_side,
            &other.gather(&others)?,
            &this.schema,
        )?;
        let (mut next_incoming, mut next_other) = (0, 0);
        let order: Vec<(usize, usize)> = outputs
            .iter()
            .map(|(o, _)| match o {
                Output::Joined(p) => (0, *p),
                Output::PaddedIncoming(_) => {
                    next_incoming += 1;
                    (1, next_incoming - 1)
                }
                Output::PaddedOther(_) => {
                    next_other += 1;
                    (2, next_other - 1)
                }
            })
            .collect();
        let sources = [&joined, &padded_incoming, &padded_others];
        let result = interleave_record_batch(&sources, &order).map_err(arrow_error)?;
        let mut columns = result.columns().to_vec();
        // An inner join of append-only inputs only ever adds rows: no change column.
        if self.output_schema.fields().len() > columns.len() {
            columns.push(Arc::new(Int8Array::from_iter_values(
                outputs.iter().map(|(_, kind)| *kind as i8),
            )));
        }
        out.emit(RecordBatch::try_new(self.output_schema.clone(), columns).map_err(arrow_error)?);
        Ok(())
    }

    /// Nothing waits for time: forwards the inputs' minimum (after dropping the rows it
    /// expires, with a state TTL).
    fn process_watermark(
        &mut self,
        _advanced: Side,
        watermarks: &InputWatermarks,
        _out: &mut Collector,
    ) -> Result<Option<Watermark>> {
        let watermark = watermarks.min();
        if let (Some(ttl), Some(watermark)) = (self.ttl_ms, watermark) {
            let cutoff = watermark.saturating_sub(ttl);
            self.left.expire(cutoff, &self.keys)?;
            self.right.expire(cutoff, &self.keys)?;
        }
        Ok(watermark)
    }
}

#[cfg(test)]
mod tests;
