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

use datafusion::common::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int8Array, UInt32Array};
use datafusion::arrow::compute::{interleave_record_batch, take, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Int8Type, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
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
    CheckpointedState, Collector, InputWatermarks, OperatorState, Side, StreamOperator,
    TwoInputOperator,
};
use crate::operators::join_rows::{padded, residual_passes, split_two_sided, two_sided_state};

fn operator_error(source: DataFusionError) -> RuntimeError {
    RuntimeError::Operator {
        operator: "RegularJoin".into(),
        source,
    }
}

fn arrow_error(e: ArrowError) -> RuntimeError {
    operator_error(e.into())
}

/// One live row of a side.
struct LiveRow {
    /// The whole row in Arrow's row format: how a retraction finds it, and the row itself.
    encoded: Box<[u8]>,
    /// How many live rows of the other side it is joined with (kept for outer sides).
    partners: u32,
    /// Its event time, with a state TTL.
    time: i64,
}

/// One input's live rows.
struct JoinSide {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The side's columns (without the change column).
    schema: SchemaRef,
    /// Whether the side's batches carry the change column.
    updating: bool,
    /// Outer on this side: a row without partners goes out padded with NULLs.
    outer: bool,
    /// Encodes whole rows of this side.
    rows: RowConverter,
    /// Live rows by slot; freed slots are reused.
    slots: Vec<Option<LiveRow>>,
    free: Vec<usize>,
    /// Join key bytes → the slots of the live rows with that key.
    by_key: HashMap<Box<[u8]>, Vec<usize>>,
    /// Bytes of the live rows' encodings and of their keys' index entries, kept as rows
    /// come and go.
    bytes: usize,
    /// With a state TTL: the side's event-time column, and its live rows by time.
    time_column: Option<usize>,
    by_time: std::collections::BTreeSet<(i64, usize)>,
}

impl JoinSide {
    fn new(
        df_schema: &DFSchema,
        keys: &[datafusion::logical_expr::Expr],
        updating: bool,
        outer: bool,
        time_column: Option<usize>,
    ) -> Result<Self> {
        let schema = Arc::new(df_schema.as_arrow().clone());
        let fields = schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(Self {
            keys: crate::expr::compile(keys, df_schema)?,
            rows: RowConverter::new(fields).map_err(arrow_error)?,
            schema,
            updating,
            outer,
            slots: Vec::new(),
            free: Vec::new(),
            by_key: HashMap::new(),
            bytes: 0,
            time_column,
            by_time: std::collections::BTreeSet::new(),
        })
    }

    fn live(&self, slot: usize) -> &LiveRow {
        self.slots[slot]
            .as_ref()
            .unwrap_or_else(|| unreachable!("slot {slot} is indexed but free"))
    }

    fn live_mut(&mut self, slot: usize) -> &mut LiveRow {
        self.slots[slot]
            .as_mut()
            .unwrap_or_else(|| unreachable!("slot {slot} is indexed but free"))
    }

    /// Keeps a row (of event time `time`) under `key`; returns its slot.
    fn insert(&mut self, key: &[u8], encoded: &[u8], partners: u32, time: i64) -> usize {
        let row = LiveRow {
            encoded: encoded.into(),
            partners,
            time,
        };
        self.bytes += encoded.len();
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(row);
                slot
            }
            None => {
                self.slots.push(Some(row));
                self.slots.len() - 1
            }
        };
        match self.by_key.get_mut(key) {
            Some(slots) => slots.push(slot),
            None => {
                self.bytes += key_entry_bytes(key);
                self.by_key.insert(key.into(), vec![slot]);
            }
        }
        if self.time_column.is_some() {
            self.by_time.insert((time, slot));
        }
        slot
    }

    /// Takes out one live row under `key` equal to `encoded`; false when there is none.
    fn remove(&mut self, key: &[u8], encoded: &[u8]) -> bool {
        let Some(slots) = self.by_key.get_mut(key) else {
            return false;
        };
        let slots_ref = &self.slots;
        let Some(position) = slots.iter().position(|&slot| {
            slots_ref[slot]
                .as_ref()
                .is_some_and(|row| &*row.encoded == encoded)
        }) else {
            return false;
        };
        let slot = slots.swap_remove(position);
        if slots.is_empty() {
            self.by_key.remove(key);
            self.bytes -= key_entry_bytes(key);
        }
        if let Some(row) = self.slots[slot].take() {
            self.bytes -= row.encoded.len();
            self.by_time.remove(&(row.time, slot));
        }
        self.free.push(slot);
        true
    }

    /// With a state TTL: drops the live rows whose event time is before `cutoff`.
    fn expire(&mut self, cutoff: i64, keys: &RowConverter) -> Result<()> {
        let mut expired = Vec::new();
        while let Some(&(time, slot)) = self.by_time.first() {
            if time >= cutoff {
                break;
            }
            self.by_time.pop_first();
            expired.push(slot);
        }
        if expired.is_empty() {
            return Ok(());
        }
        let rows = self.gather(&expired)?;
        let key_rows = self.key_rows(&rows, keys)?;
        for (i, &slot) in expired.iter().enumerate() {
            let key = key_rows.row(i);
            if let Some(slots) = self.by_key.get_mut(key.data()) {
                slots.retain(|&s| s != slot);
                if slots.is_empty() {
                    self.by_key.remove(key.data());
                    self.bytes -= key_entry_bytes(key.data());
                }
            }
            if let Some(row) = self.slots[slot].take() {
                self.bytes -= row.encoded.len();
            }
            self.free.push(slot);
        }
        Ok(())
    }

    /// Each row's event time (all `i64::MIN` without a state TTL).
    fn times(&self, rows: &RecordBatch) -> Result<Vec<i64>> {
        match self.time_column {
            Some(column) => {
                let times =
                    crate::operators::as_millis(rows.column(column)).map_err(operator_error)?;
                Ok((0..rows.num_rows())
                    .map(|i| {
                        if times.is_valid(i) {
                            times.value(i)
                        } else {
                            i64::MIN
                        }
                    })
                    .collect())
            }
            None => Ok(vec![i64::MIN; rows.num_rows()]),
        }
    }

    /// The rows in `slots`, in that order, as one batch of the side's columns.
    fn gather(&self, slots: &[usize]) -> Result<RecordBatch> {
        if slots.is_empty() {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        }
        let parser = self.rows.parser();
        let columns = self
            .rows
            .convert_rows(slots.iter().map(|&s| parser.parse(&self.live(s).encoded)))
            .map_err(arrow_error)?;
        RecordBatch::try_new(self.schema.clone(), columns).map_err(arrow_error)
    }

    /// Every live row with its partner count, for a checkpoint.
    fn snapshot(&self) -> Result<RecordBatch> {
        let slots: Vec<usize> = self.by_key.values().flatten().copied().collect();
        let rows = self.gather(&slots)?;
        let partners = UInt32Array::from_iter_values(slots.iter().map(|&s| self.live(s).partners));
        let mut columns = rows.columns().to_vec();
        columns.push(Arc::new(partners));
        RecordBatch::try_new(with_partners(&self.schema), columns).map_err(arrow_error)
    }

    /// Keeps checkpointed rows again (see [`JoinSide::snapshot`]).
    fn restore(&mut self, state: &RecordBatch, keys: &RowConverter) -> Result<()> {
        let last = state.num_columns() - 1;
        let partners = state
            .column(last)
            .as_primitive_opt::<datafusion::arrow::datatypes::UInt32Type>()
            .cloned()
            .ok_or_else(|| RuntimeError::Checkpoint("RegularJoin state lacks partners".into()))?;
        let rows = RecordBatch::try_new(self.schema.clone(), state.columns()[..last].to_vec())
            .map_err(arrow_error)?;
        if rows.num_rows() == 0 {
            return Ok(());
        }
        let key_rows = self.key_rows(&rows, keys)?;
        let encoded = self
            .rows
            .convert_columns(rows.columns())
            .map_err(arrow_error)?;
        let times = self.times(&rows)?;
        for (row, &time) in times.iter().enumerate() {
            self.insert(
                key_rows.row(row).data(),
                encoded.row(row).data(),
                partners.value(row),
                time,
            );
        }
        Ok(())
    }

    /// The join keys of `rows`, encoded.
    fn key_rows(&self, rows: &RecordBatch, keys: &RowConverter) -> Result<Rows> {
        let columns = crate::expr::evaluate(&self.keys, rows)?;
        keys.convert_columns(&columns).map_err(arrow_error)
    }

    fn live_rows(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

/// What a join key's index entry costs in state.
fn key_entry_bytes(key: &[u8]) -> usize {
    key.len() + 48
}

/// `schema` with a trailing `__partners` count (a checkpointed side's rows).
fn with_partners(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new("__partners", DataType::UInt32, false)));
    Arc::new(Schema::new(fields))
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
        [&self.left, &self.right]
            .iter()
            .map(|side| side.bytes + side.live_rows() * (std::mem::size_of::<LiveRow>() + 16))
            .sum()
    }

    /// Both sides' live rows, with their partner counts.
    fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        if self.left.live_rows() + self.right.live_rows() == 0 {
            return Ok(None);
        }
        let left = self.left.snapshot()?;
        let right = self.right.snapshot()?;
        two_sided_state(&left.schema(), &[left], &right.schema(), &[right]).map(Some)
    }

    fn restore(&mut self, state: RecordBatch) -> Result<()> {
        let (left, right) = split_two_sided(
            &state,
            &with_partners(&self.left.schema),
            &with_partners(&self.right.schema),
        )?;
        self.left.restore(&left, &self.keys)?;
        self.right.restore(&right, &self.keys)?;
        Ok(())
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
        let encoded = this
            .rows
            .convert_columns(rows.columns())
            .map_err(arrow_error)?;
        let times = this.times(&rows)?;

        // The candidate pairs of the whole batch: the other side does not change meanwhile.
        let (mut probe_rows, mut partners): (Vec<u32>, Vec<usize>) = (Vec::new(), Vec::new());
        for row in 0..rows.num_rows() {
            if has_null_key(row) {
                continue;
            }
            if let Some(slots) = other.by_key.get(keys.row(row).data()) {
                probe_rows.extend(std::iter::repeat_n(row as u32, slots.len()));
                partners.extend_from_slice(slots);
            }
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
                    if other.outer {
                        let partner = other.live_mut(slot);
                        partner.partners += 1;
                        if partner.partners == 1 {
                            outputs.push((Output::PaddedOther(slot), ChangeKind::Delete));
                        }
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
                    if other.outer {
                        let partner = other.live_mut(slot);
                        partner.partners = partner.partners.saturating_sub(1);
                        if partner.partners == 0 {
                            outputs.push((Output::PaddedOther(slot), ChangeKind::Insert));
                        }
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
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use runnel_sql::{PlanOptions, StreamNode};

    use super::*;

    /// Claims joined with a changelog of policies, at `ttl_ms` (if any).
    fn join(ttl_ms: Option<i64>) -> RegularJoinOperator {
        let options = PlanOptions {
            state_ttl_ms: ttl_ms,
            ..PlanOptions::default()
        };
        let mut node = crate::test_plans::plan_script_with(
            "CREATE TABLE claims (claim_id STRING, policy_id BIGINT, ts TIMESTAMP(3),
                 WATERMARK FOR ts AS ts)
             WITH ('connector' = 'filesystem', 'path' = 'x', 'format' = 'json');
             CREATE TABLE policies (policy_id BIGINT, holder STRING, changed_at TIMESTAMP(3),
                 PRIMARY KEY (policy_id) NOT ENFORCED, WATERMARK FOR changed_at AS changed_at)
             WITH ('connector' = 'filesystem', 'path' = 'y', 'format' = 'debezium-json');
             SELECT c.claim_id, p.holder FROM claims c JOIN policies p ON c.policy_id = p.policy_id;",
            &options,
        )
        .root;
        loop {
            node = match node {
                StreamNode::RegularJoin(join) => {
                    assert_eq!(join.state_ttl.is_some(), ttl_ms.is_some());
                    return RegularJoinOperator::try_new(&join, Arc::new(JobMetrics::default()))
                        .unwrap();
                }
                StreamNode::Projection { input, .. } => *input,
                other => panic!("no join in {other:?}"),
            }
        }
    }

    /// A batch of `schema` from named columns (a column the plan pruned is left out).
    fn batch(schema: &SchemaRef, columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        let mut columns: std::collections::HashMap<&str, ArrayRef> = columns.into_iter().collect();
        let arrays = schema
            .fields()
            .iter()
            .map(|f| {
                columns
                    .remove(f.name().as_str())
                    .expect("a column for every field")
            })
            .collect();
        RecordBatch::try_new(schema.clone(), arrays).unwrap()
    }

    fn claim(op: &RegularJoinOperator, id: &str, policy: i64, ts: i64) -> RecordBatch {
        batch(
            &op.left.schema,
            vec![
                ("claim_id", Arc::new(StringArray::from(vec![id]))),
                ("policy_id", Arc::new(Int64Array::from(vec![policy]))),
                ("ts", Arc::new(TimestampMillisecondArray::from(vec![ts]))),
            ],
        )
    }

    fn policy(op: &RegularJoinOperator, kind: ChangeKind, id: i64, holder: &str) -> RecordBatch {
        let schema = runnel_sql::changelog::with_change_column(&op.right.schema);
        batch(
            &schema,
            vec![
                ("policy_id", Arc::new(Int64Array::from(vec![id]))),
                ("holder", Arc::new(StringArray::from(vec![holder]))),
                (
                    "changed_at",
                    Arc::new(TimestampMillisecondArray::from(vec![0])),
                ),
                ("__op", Arc::new(Int8Array::from(vec![kind as i8]))),
            ],
        )
    }

    fn joined(out: &mut Collector) -> usize {
        out.take().map(|b| b.num_rows()).sum()
    }

    /// With a TTL of one minute, a policy changed at 0 s and a claim at 10 s are dropped
    /// once both watermarks reach 100 s: a claim of the policy at 110 s finds nothing, and
    /// the policy's delete is a retraction of a row no longer held (ignored, counted).
    /// Without a TTL the same claim is joined.
    #[test]
    fn rows_past_the_state_ttl_are_dropped_silently() {
        for ttl in [Some(60_000), None] {
            let mut op = join(ttl);
            let mut out = Collector::default();
            let mut watermarks = InputWatermarks::default();
            let batch = policy(&op, ChangeKind::Insert, 1, "Ann");
            op.process_batch(Side::Right, batch, &watermarks, &mut out)
                .unwrap();
            let batch = claim(&op, "c1", 1, 10_000);
            op.process_batch(Side::Left, batch, &watermarks, &mut out)
                .unwrap();
            assert_eq!(joined(&mut out), 1);
            for side in [Side::Left, Side::Right] {
                watermarks.advance(side, 100_000);
                op.process_watermark(side, &watermarks, &mut out).unwrap();
            }
            assert_eq!(joined(&mut out), 0, "expiry emits nothing");
            let batch = claim(&op, "c2", 1, 110_000);
            op.process_batch(Side::Left, batch, &watermarks, &mut out)
                .unwrap();
            let batch = policy(&op, ChangeKind::Delete, 1, "Ann");
            op.process_batch(Side::Right, batch, &watermarks, &mut out)
                .unwrap();
            let ignored = op
                .metrics
                .ignored_changes
                .load(std::sync::atomic::Ordering::Relaxed);
            match ttl {
                Some(_) => {
                    assert_eq!(joined(&mut out), 0, "the policy expired");
                    assert_eq!(ignored, 1, "its delete finds nothing");
                    assert_eq!(op.left.live_rows(), 1, "only c2 is live");
                    assert_eq!(op.right.live_rows(), 0);
                }
                None => {
                    // c2 joined, then the delete takes both joined rows back.
                    assert_eq!(joined(&mut out), 3);
                    assert_eq!(ignored, 0);
                }
            }
        }
    }

    /// Nexmark q4's join, bounded row by row: an auction is dropped once both watermarks
    /// pass its `expires`, a bid once they pass the bid's time; both sides' state empties
    /// without a TTL, and the joined rows are append-only (no change column).
    #[test]
    fn rows_bounded_by_the_other_sides_columns_are_dropped_past_them() {
        let plan = crate::test_plans::plan_script(
            "CREATE TABLE auction (id BIGINT, ts TIMESTAMP(3), expires TIMESTAMP(3),
                 WATERMARK FOR ts AS ts)
             WITH ('connector' = 'filesystem', 'path' = 'x', 'format' = 'json');
             CREATE TABLE bid (auction BIGINT, price BIGINT, ts TIMESTAMP(3),
                 WATERMARK FOR ts AS ts)
             WITH ('connector' = 'filesystem', 'path' = 'y', 'format' = 'json');
             SELECT A.id, B.price FROM auction A, bid B
             WHERE A.id = B.auction AND B.ts BETWEEN A.ts AND A.expires;",
        );
        let mut node = plan.root;
        let mut op = loop {
            node = match node {
                StreamNode::RegularJoin(join) => {
                    assert_eq!(join.state_ttl.map(|(_, _, ttl)| ttl), Some(0));
                    break RegularJoinOperator::try_new(&join, Arc::new(JobMetrics::default()))
                        .unwrap();
                }
                StreamNode::Projection { input, .. } => *input,
                other => panic!("no join in {other:?}"),
            }
        };
        let ts = |ms: i64| Arc::new(TimestampMillisecondArray::from(vec![ms])) as ArrayRef;
        let mut out = Collector::default();
        let mut watermarks = InputWatermarks::default();
        let auction = batch(
            &op.left.schema,
            vec![
                ("id", Arc::new(Int64Array::from(vec![1]))),
                ("ts", ts(0)),
                ("expires", ts(10_000)),
            ],
        );
        op.process_batch(Side::Left, auction, &watermarks, &mut out)
            .unwrap();
        let bid = batch(
            &op.right.schema,
            vec![
                ("auction", Arc::new(Int64Array::from(vec![1]))),
                ("price", Arc::new(Int64Array::from(vec![5]))),
                ("ts", ts(5_000)),
            ],
        );
        op.process_batch(Side::Right, bid, &watermarks, &mut out)
            .unwrap();
        let rows: Vec<RecordBatch> = out.take().collect();
        assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
        assert_eq!(rows[0].num_columns(), op.joined_schema.fields().len());
        let mut advance = |to: i64, op: &mut RegularJoinOperator| {
            for side in [Side::Left, Side::Right] {
                watermarks.advance(side, to);
                op.process_watermark(side, &watermarks, &mut out).unwrap();
            }
        };
        advance(6_000, &mut op);
        assert_eq!(
            (op.left.live_rows(), op.right.live_rows()),
            (1, 0),
            "the bid is past"
        );
        advance(10_001, &mut op);
        assert_eq!(
            (op.left.live_rows(), op.right.live_rows()),
            (0, 0),
            "the auction expired"
        );
    }
}
