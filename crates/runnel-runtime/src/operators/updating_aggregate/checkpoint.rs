//! The checkpoint form of an [`UpdatingAggregateOperator`]: every live group as a row —
//! its key, its accumulators' states, what it last emitted, its last change's event time —
//! and the group table rebuilt from it (also how the table is compacted).
//!
//! An incremental checkpoint holds the rows of the groups changed since the previous one
//! in the same form; a group that is gone (every row taken back, or expired) is a row
//! with `__rows` = 0. A chain restores with the newest row of each key winning, and a
//! tombstone removing the key.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::error::Result as DFResult;

use super::UpdatingAggregateOperator;
use crate::message::Watermark;
use crate::operators::as_millis;

impl UpdatingAggregateOperator {
    /// Every group as a row: its key, `__rows`, each aggregate's accumulator state
    /// (`state_<aggregate>_<field>`), and what was last emitted (`emitted_<aggregate>`,
    /// with `__emitted` false if nothing was).
    pub(super) fn snapshot_state(&mut self) -> DFResult<RecordBatch> {
        let live: Vec<usize> = (0..self.groups.len())
            .filter(|&g| self.groups[g].rows > 0)
            .collect();
        self.state_rows(&live)
    }

    /// The checkpoint rows of groups `live` (see [`Self::snapshot_state`]); for an
    /// increment, the groups changed since the last checkpoint: one that is gone is
    /// written with `__rows` = 0 and empty accumulator states.
    pub(super) fn state_rows(&mut self, live: &[usize]) -> DFResult<RecordBatch> {
        use datafusion::arrow::array::{BooleanArray, Int64Array};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        // What a gone group's accumulators hold: a fresh group's.
        let mut blank = self.new_group()?;
        let mut fields: Vec<Field> = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        let keys = self.group_exprs.len();
        if keys > 0 {
            let key_columns = self
                .keys
                .convert_rows(live.iter().map(|&g| self.group_keys.row(g)))?;
            for (i, column) in key_columns.into_iter().enumerate() {
                fields.push(self.output_schema.field(i).clone().with_nullable(true));
                columns.push(column);
            }
        }
        fields.push(Field::new("__rows", DataType::Int64, false));
        columns.push(Arc::new(Int64Array::from_iter_values(
            live.iter().map(|&g| self.groups[g].rows.max(0)),
        )));
        fields.push(Field::new("__last_time", DataType::Int64, false));
        columns.push(Arc::new(Int64Array::from_iter_values(
            live.iter().map(|&g| self.groups[g].last_time),
        )));
        let mut widths = Vec::new();
        for a in 0..self.aggregates.len() {
            // A fresh accumulator's state gives the columns even when no group is
            // written (an increment where nothing changed keeps the chain's schema).
            let blank_state = blank.accumulators[a].state()?;
            let mut states: Vec<Vec<ScalarValue>> =
                vec![Vec::with_capacity(live.len()); blank_state.len()];
            for &g in live {
                let group = &mut self.groups[g];
                let state = if group.rows > 0 {
                    group.accumulators[a].state()?
                } else {
                    blank.accumulators[a].state()?
                };
                for (field, value) in states.iter_mut().zip(state) {
                    field.push(value);
                }
            }
            widths.push(states.len().to_string());
            for (f, values) in states.into_iter().enumerate() {
                let array = if values.is_empty() {
                    blank_state[f].to_array_of_size(0)?
                } else {
                    ScalarValue::iter_to_array(values)?
                };
                fields.push(Field::new(
                    format!("state_{a}_{f}"),
                    array.data_type().clone(),
                    true,
                ));
                columns.push(array);
            }
        }
        for a in 0..self.aggregates.len() {
            let field = self.output_schema.field(keys + a);
            let null = ScalarValue::try_from(field.data_type())?;
            let values = live.iter().map(|&g| {
                let group = &self.groups[g];
                group
                    .emitted
                    .as_ref()
                    .filter(|_| group.rows > 0)
                    .map_or(null.clone(), |e| e[a].clone())
            });
            let array = if live.is_empty() {
                datafusion::arrow::array::new_empty_array(field.data_type())
            } else {
                ScalarValue::iter_to_array(values)?
            };
            fields.push(Field::new(
                format!("emitted_{a}"),
                array.data_type().clone(),
                true,
            ));
            columns.push(array);
        }
        fields.push(Field::new("__emitted", DataType::Boolean, false));
        columns.push(Arc::new(BooleanArray::from_iter(live.iter().map(|&g| {
            let group = &self.groups[g];
            Some(group.rows > 0 && group.emitted.is_some())
        }))));
        let mut metadata: HashMap<String, String> =
            [("state_widths".to_string(), widths.join(","))].into();
        if let Some(firing) = &self.firing {
            // Which windows fired is the operator's own progress: after a restore, a
            // change to a fired window updates it at once, whatever the watermark does.
            metadata.insert("fired_through".into(), firing.fired_through.to_string());
        }
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new_with_metadata(fields, metadata)),
            columns,
        )?)
    }

    /// Frees group `id`'s slot (its key stays in `group_keys`, as for an expired group).
    fn drop_group(&mut self, id: usize) {
        let group = std::mem::replace(&mut self.groups[id], super::Group::freed());
        self.state_bytes = self.state_bytes.saturating_sub(group.bytes);
        if let Some(ttl) = &mut self.ttl {
            if ttl.by_time.remove(&(group.last_time, id)) {
                ttl.freed += 1;
            }
        }
    }

    pub(super) fn restore_state(&mut self, state: &RecordBatch) -> DFResult<()> {
        use datafusion::arrow::datatypes::Int64Type;
        self.groups.clear();
        self.state_bytes = 0;
        self.group_ids.clear();
        self.group_keys = self.keys.empty_rows(0, 0);
        if let Some(ttl) = &mut self.ttl {
            ttl.by_time.clear();
            ttl.freed = 0;
        }
        let keys = self.group_exprs.len();
        let widths: Vec<usize> = state
            .schema()
            .metadata()
            .get("state_widths")
            .map(|w| w.split(',').filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_default();
        let key_rows = self.keys.convert_columns(&state.columns()[..keys])?;
        let rows = state.column(keys).as_primitive::<Int64Type>().clone();
        let last_times = state.column(keys + 1).as_primitive::<Int64Type>().clone();
        let emitted_flags = state.column(state.num_columns() - 1).as_boolean().clone();
        let emitted_start = state.num_columns() - 1 - self.aggregates.len();
        for row in 0..state.num_rows() {
            // A chain of increments may name a key again: its newest row wins, and one
            // with no rows left removes it.
            let existing = if keys > 0 {
                self.group_ids.get(key_rows.row(row).as_ref()).copied()
            } else {
                (!self.groups.is_empty()).then_some(0)
            };
            if let Some(id) = existing {
                self.drop_group(id);
                if keys > 0 {
                    self.group_ids.remove(key_rows.row(row).as_ref());
                }
            }
            if rows.value(row) <= 0 {
                if keys == 0 {
                    self.groups.clear();
                }
                continue;
            }
            let mut group = self.new_group()?;
            group.rows = rows.value(row);
            group.last_time = last_times.value(row);
            let mut column = keys + 2;
            for (a, accumulator) in group.accumulators.iter_mut().enumerate() {
                let width = widths.get(a).copied().unwrap_or(0);
                let states: Vec<ArrayRef> = (column..column + width)
                    .map(|c| state.column(c).slice(row, 1))
                    .collect();
                if width > 0 {
                    accumulator.merge_batch(&states)?;
                }
                column += width;
            }
            if emitted_flags.value(row) {
                group.emitted = Some(
                    (0..self.aggregates.len())
                        .map(|a| ScalarValue::try_from_array(state.column(emitted_start + a), row))
                        .collect::<DFResult<_>>()?,
                );
            }
            self.state_bytes += group.measure().1;
            let id = match existing {
                Some(id) if self.firing.is_none() => {
                    self.groups[id] = group;
                    id
                }
                _ => {
                    self.groups.push(group);
                    if keys > 0 {
                        self.group_keys.push(key_rows.row(row));
                    }
                    self.groups.len() - 1
                }
            };
            if let Some(ttl) = &mut self.ttl {
                ttl.by_time.insert((self.groups[id].last_time, id));
            }
            if keys > 0 {
                self.group_ids.insert(key_rows.row(row).as_ref().into(), id);
            }
        }
        if let Some(firing) = &mut self.firing {
            let ends = as_millis(state.column(firing.end_key))?;
            firing.by_end.clear();
            firing.freed = 0;
            // Ids change here (compaction, restore): a window's changed rows not yet
            // fired early go out at the window's end at the latest.
            if let Some(early) = &mut firing.early_fire {
                early.dirty.clear();
            }
            firing.fired_through = state
                .schema()
                .metadata()
                .get("fired_through")
                .and_then(|w| w.parse().ok())
                .unwrap_or(Watermark::MIN);
            firing.group_ends = ends.values().to_vec();
            for (id, end) in ends.values().iter().enumerate() {
                firing.by_end.entry(*end).or_default().push(id);
            }
        }
        Ok(())
    }
}

/// A chain of checkpoint batches (a snapshot then increments) merged into one snapshot:
/// each key's newest row, without the keys whose newest row says they are gone.
pub(super) fn newest_rows(chain: Vec<RecordBatch>) -> DFResult<RecordBatch> {
    use datafusion::arrow::array::UInt32Array;
    use datafusion::arrow::datatypes::Int64Type;
    let Some(newest) = chain.last() else {
        return datafusion::common::internal_err!("an empty chain to merge");
    };
    let schema = newest.schema();
    let all = datafusion::arrow::compute::concat_batches(&schema, &chain)?;
    let keys = schema.index_of("__rows")?;
    let rows = all.column(keys).as_primitive::<Int64Type>();
    let alive = |row: usize| rows.value(row) > 0;
    let keep = if keys == 0 {
        crate::operators::newest_of_each(all.num_rows(), |_| (), alive)
    } else {
        let converter = datafusion::arrow::row::RowConverter::new(
            schema.fields()[..keys]
                .iter()
                .map(|f| datafusion::arrow::row::SortField::new(f.data_type().clone()))
                .collect(),
        )?;
        let key_rows = converter.convert_columns(&all.columns()[..keys])?;
        crate::operators::newest_of_each(all.num_rows(), |row| key_rows.row(row), alive)
    };
    let indices = UInt32Array::from(keep);
    let columns = all
        .columns()
        .iter()
        .map(|c| datafusion::arrow::compute::take(c, &indices, None))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema, columns)?)
}
