//! [`JoinSide`]: one input's live rows of a regular join, indexed by join key (and by
//! event time with a state TTL), and how they are checkpointed: whole, or with
//! incremental checkpoints as the slots that changed since the last barrier.
//!
//! Each live row has a slot; a checkpoint row names its slot (`__slot`), and a slot freed
//! since the previous checkpoint is written as a row without a partner count. A chain
//! (the snapshot, then its increments) restores with each slot's newest row, into the same
//! slot, so the chain can go on after a restore.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, Array, AsArray, UInt32Array, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type, UInt64Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::{DFSchema, HashMap};
use datafusion::physical_expr::PhysicalExpr;

use super::{arrow_error, operator_error};
use crate::error::{Result, RuntimeError};

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
pub(super) struct JoinSide {
    pub(super) keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The side's columns (without the change column).
    pub(super) schema: SchemaRef,
    /// Whether the side's batches carry the change column.
    pub(super) updating: bool,
    /// Outer on this side: a row without partners goes out padded with NULLs.
    pub(super) outer: bool,
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
    by_time: BTreeSet<(i64, usize)>,
    /// With incremental checkpoints: the slots changed since the last barrier (a row
    /// added or removed, or its partner count moved).
    changed: Option<HashSet<usize>>,
}

impl JoinSide {
    pub(super) fn new(
        df_schema: &DFSchema,
        keys: &[datafusion::logical_expr::Expr],
        updating: bool,
        outer: bool,
        time_column: Option<usize>,
    ) -> Result<Self> {
        let schema = Arc::new(df_schema.as_arrow().clone());
        Ok(Self {
            keys: crate::expr::compile(keys, df_schema)?,
            rows: RowConverter::new(sort_fields(&schema)).map_err(arrow_error)?,
            schema,
            updating,
            outer,
            slots: Vec::new(),
            free: Vec::new(),
            by_key: HashMap::new(),
            bytes: 0,
            time_column,
            by_time: BTreeSet::new(),
            changed: None,
        })
    }

    /// The slots of the live rows under `key` (empty when there are none).
    pub(super) fn slots_of(&self, key: &[u8]) -> &[usize] {
        self.by_key.get(key).map_or(&[], Vec::as_slice)
    }

    fn live(&self, slot: usize) -> &LiveRow {
        self.slots[slot]
            .as_ref()
            .unwrap_or_else(|| unreachable!("slot {slot} is indexed but free"))
    }

    /// Notes that `slot` changed (with incremental checkpoints).
    fn mark(&mut self, slot: usize) {
        if let Some(changed) = &mut self.changed {
            changed.insert(slot);
        }
    }

    fn live_mut(&mut self, slot: usize) -> &mut LiveRow {
        self.mark(slot);
        self.slots[slot]
            .as_mut()
            .unwrap_or_else(|| unreachable!("slot {slot} is indexed but free"))
    }

    /// One more partner for the row in `slot`; true when it is its first.
    pub(super) fn partner_joined(&mut self, slot: usize) -> bool {
        let row = self.live_mut(slot);
        row.partners += 1;
        row.partners == 1
    }

    /// One partner fewer for the row in `slot`; true when it was its last.
    pub(super) fn partner_left(&mut self, slot: usize) -> bool {
        let row = self.live_mut(slot);
        row.partners = row.partners.saturating_sub(1);
        row.partners == 0
    }

    /// Keeps a row (of event time `time`) under `key`; returns its slot.
    pub(super) fn insert(&mut self, key: &[u8], encoded: &[u8], partners: u32, time: i64) -> usize {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        self.place(slot, key, encoded, partners, time);
        slot
    }

    /// Keeps a row in the free `slot`.
    fn place(&mut self, slot: usize, key: &[u8], encoded: &[u8], partners: u32, time: i64) {
        self.bytes += encoded.len();
        self.slots[slot] = Some(LiveRow {
            encoded: encoded.into(),
            partners,
            time,
        });
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
        self.mark(slot);
    }

    /// Takes out one live row under `key` equal to `encoded`; false when there is none.
    pub(super) fn remove(&mut self, key: &[u8], encoded: &[u8]) -> bool {
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
        self.mark(slot);
        true
    }

    /// With a state TTL: drops the live rows whose event time is before `cutoff`.
    pub(super) fn expire(&mut self, cutoff: i64, keys: &RowConverter) -> Result<()> {
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
            self.mark(slot);
        }
        Ok(())
    }

    /// Each row's event time (all `i64::MIN` without a state TTL).
    pub(super) fn times(&self, rows: &RecordBatch) -> Result<Vec<i64>> {
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

    /// Encodes whole rows of this side.
    pub(super) fn encode(&self, rows: &RecordBatch) -> Result<Rows> {
        self.rows
            .convert_columns(rows.columns())
            .map_err(arrow_error)
    }

    /// The rows in `slots`, in that order, as one batch of the side's columns.
    pub(super) fn gather(&self, slots: &[usize]) -> Result<RecordBatch> {
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

    /// Every live row with its partner count and slot, for a checkpoint (see
    /// [`state_schema`]).
    pub(super) fn snapshot(&self) -> Result<RecordBatch> {
        let slots: Vec<usize> = self.by_key.values().flatten().copied().collect();
        let rows = self.gather(&slots)?;
        let partners = UInt32Array::from_iter_values(slots.iter().map(|&s| self.live(s).partners));
        let slot_ids = UInt64Array::from_iter_values(slots.iter().map(|&s| s as u64));
        let mut columns = rows.columns().to_vec();
        columns.push(Arc::new(partners));
        columns.push(Arc::new(slot_ids));
        RecordBatch::try_new(state_schema(&self.schema), columns).map_err(arrow_error)
    }

    /// Starts keeping which slots change, for [`JoinSide::take_changes`].
    pub(super) fn track_changes(&mut self) {
        self.changed.get_or_insert_with(HashSet::new);
    }

    /// The slots changed since the last call, as they are now (their encoded rows
    /// copied): an immutable view the checkpoint writer turns into a batch.
    pub(super) fn take_changes(&mut self) -> Option<SideChanges> {
        let changed = std::mem::take(self.changed.as_mut()?);
        let mut live = Vec::new();
        let mut freed = Vec::new();
        for slot in changed {
            match &self.slots[slot] {
                Some(row) => live.push((slot as u64, row.encoded.clone(), row.partners)),
                None => freed.push(slot as u64),
            }
        }
        Some(SideChanges {
            schema: self.schema.clone(),
            live,
            freed,
        })
    }

    /// Keeps checkpointed rows again (see [`JoinSide::snapshot`]; a merged chain, so one
    /// row per live slot), each in its slot.
    pub(super) fn restore(&mut self, state: &RecordBatch, keys: &RowConverter) -> Result<()> {
        if state.num_rows() == 0 {
            return Ok(());
        }
        let width = self.schema.fields().len();
        let malformed = || RuntimeError::Checkpoint("a RegularJoin state is malformed".into());
        let partners = state
            .column(width)
            .as_primitive_opt::<UInt32Type>()
            .ok_or_else(malformed)?;
        let slots = state
            .column(width + 1)
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(malformed)?;
        let rows = RecordBatch::try_new(self.schema.clone(), state.columns()[..width].to_vec())
            .map_err(arrow_error)?;
        let key_rows = self.key_rows(&rows, keys)?;
        let encoded = self.encode(&rows)?;
        let times = self.times(&rows)?;
        for (row, &time) in times.iter().enumerate() {
            let slot = usize::try_from(slots.value(row)).map_err(|_| malformed())?;
            if slot >= self.slots.len() {
                self.slots.resize_with(slot + 1, || None);
            }
            if self.slots[slot].is_some() {
                return Err(malformed());
            }
            self.place(
                slot,
                key_rows.row(row).data(),
                encoded.row(row).data(),
                partners.value(row),
                time,
            );
        }
        self.free = (0..self.slots.len())
            .rev()
            .filter(|&slot| self.slots[slot].is_none())
            .collect();
        Ok(())
    }

    /// The join keys of `rows`, encoded.
    pub(super) fn key_rows(&self, rows: &RecordBatch, keys: &RowConverter) -> Result<Rows> {
        let columns = crate::expr::evaluate(&self.keys, rows)?;
        keys.convert_columns(&columns).map_err(arrow_error)
    }

    /// About how many bytes the side holds.
    pub(super) fn size(&self) -> usize {
        self.bytes + self.live_rows() * (std::mem::size_of::<LiveRow>() + 16)
    }

    pub(super) fn live_rows(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

/// The slots of a side that changed between two barriers, as they were at the second.
pub(super) struct SideChanges {
    schema: SchemaRef,
    /// Live slots: their encoded rows and partner counts.
    live: Vec<(u64, Box<[u8]>, u32)>,
    /// Slots freed (and not used again).
    freed: Vec<u64>,
}

impl SideChanges {
    /// The changes as checkpoint rows (see [`state_schema`]): the live slots' rows, then
    /// the freed slots' (NULL columns and partner count).
    pub(super) fn build(self) -> Result<RecordBatch> {
        let converter = RowConverter::new(sort_fields(&self.schema)).map_err(arrow_error)?;
        let parser = converter.parser();
        let live_rows = converter
            .convert_rows(
                self.live
                    .iter()
                    .map(|(_, encoded, _)| parser.parse(encoded)),
            )
            .map_err(arrow_error)?;
        let state = state_schema(&self.schema);
        let mut columns = Vec::with_capacity(state.fields().len());
        for (field, live) in self.schema.fields().iter().zip(live_rows) {
            let freed = new_null_array(field.data_type(), self.freed.len());
            columns
                .push(datafusion::arrow::compute::concat(&[&live, &freed]).map_err(arrow_error)?);
        }
        let partners = self
            .live
            .iter()
            .map(|(_, _, partners)| Some(*partners))
            .chain(self.freed.iter().map(|_| None));
        columns.push(Arc::new(partners.collect::<UInt32Array>()));
        let slots = self.live.iter().map(|(slot, _, _)| *slot).chain(self.freed);
        columns.push(Arc::new(UInt64Array::from_iter_values(slots)));
        RecordBatch::try_new(state, columns).map_err(arrow_error)
    }
}

fn sort_fields(schema: &Schema) -> Vec<SortField> {
    schema
        .fields()
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect()
}

/// What a join key's index entry costs in state.
fn key_entry_bytes(key: &[u8]) -> usize {
    key.len() + 48
}

/// A side's checkpoint rows: its columns (nullable), the row's partner count `__partners`
/// (NULL for a slot freed since the previous checkpoint) and its slot `__slot`.
pub(super) fn state_schema(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    fields.push(Field::new("__partners", DataType::UInt32, true));
    fields.push(Field::new("__slot", DataType::UInt64, false));
    Arc::new(Schema::new(fields))
}

/// A chain of a join's checkpoint batches (both sides' rows, as `two_sided_state` writes
/// them: `left_width` columns of the left side's state, then `right_width` of the
/// right's, then `__side`) merged into one: each slot's newest row, without the slots
/// whose newest row says they were freed.
pub(super) fn merge_chain(
    chain: Vec<RecordBatch>,
    left_width: usize,
    right_width: usize,
) -> Result<RecordBatch> {
    let Some(newest) = chain.last() else {
        return Err(RuntimeError::Checkpoint("an empty chain to merge".into()));
    };
    let schema = newest.schema();
    let all = datafusion::arrow::compute::concat_batches(&schema, &chain).map_err(arrow_error)?;
    if all.num_columns() != left_width + right_width + 1 {
        return Err(RuntimeError::Checkpoint(
            "a join's checkpoint state does not match the join".into(),
        ));
    }
    let column = |i: usize| all.column(i);
    let malformed = || RuntimeError::Checkpoint("a RegularJoin state is malformed".into());
    let sides = column(left_width + right_width)
        .as_primitive_opt::<datafusion::arrow::datatypes::Int8Type>()
        .ok_or_else(malformed)?;
    let side_columns = |end: usize| -> Result<_> {
        Ok((
            column(end - 2)
                .as_primitive_opt::<UInt32Type>()
                .ok_or_else(malformed)?,
            column(end - 1)
                .as_primitive_opt::<UInt64Type>()
                .ok_or_else(malformed)?,
        ))
    };
    let (left_partners, left_slots) = side_columns(left_width)?;
    let (right_partners, right_slots) = side_columns(left_width + right_width)?;
    let of_side = |row: usize| match sides.value(row) {
        0 => (left_partners, left_slots),
        _ => (right_partners, right_slots),
    };
    let keep = crate::operators::newest_of_each(
        all.num_rows(),
        |row| (sides.value(row), of_side(row).1.value(row)),
        |row| of_side(row).0.is_valid(row),
    );
    datafusion::arrow::compute::take_record_batch(&all, &UInt32Array::from(keep))
        .map_err(arrow_error)
}
