//! The window aggregate's state: each open window's (or pane's) keys and partial
//! aggregates ([`WindowState`]), and [`StateLayout`], which creates, fills, writes and
//! reads them — on the operator's task, and on the threads that build and merge its
//! incremental checkpoints.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{new_empty_array, Array, ArrayRef, AsArray, Int64Array, Scalar};
use datafusion::arrow::compute::kernels::cmp::not_distinct;
use datafusion::arrow::compute::{sort_to_indices, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_plan::aggregates::group_values::{new_group_values, GroupValues};
use datafusion::physical_plan::aggregates::order::GroupOrdering;

use crate::message::Watermark;
use crate::operators::aggregate_call::AggregateCall;

/// How a `HOP` aggregated per pane turns panes into windows.
#[derive(Debug, Clone, Copy)]
pub(super) struct Panes {
    pub(super) slide_ms: i64,
    pub(super) size_ms: i64,
    /// Which group columns are the window's start and end.
    pub(super) start_key: usize,
    pub(super) end_key: usize,
}

/// A pane's partial aggregates taken out of their accumulators: the group columns, then
/// each aggregate's state columns.
pub(super) type SealedPart = Vec<ArrayRef>;

/// The keys and partial aggregates of one open window.
pub(super) struct WindowState {
    /// The group columns of [`StateLayout::keys`].
    pub(super) groups: Box<dyn GroupValues>,
    /// The window's value of each column of [`StateLayout::bounds`] (one row each, copied
    /// from the first rows it took).
    bounds: Vec<ArrayRef>,
    pub(super) accumulators: Vec<Box<dyn GroupsAccumulator>>,
}

/// Open windows (or panes) by their end.
pub(super) type Windows = BTreeMap<i64, WindowState>;

/// Rows of one input batch on their way into windows (late rows already dropped): each
/// row's window end, group keys, and each aggregate's arguments and filter.
#[derive(Clone)]
pub(super) struct WindowRows {
    pub(super) ends: Int64Array,
    pub(super) groups: Vec<ArrayRef>,
    pub(super) inputs: Vec<Vec<ArrayRef>>,
    pub(super) filters: Vec<Option<ArrayRef>>,
}

/// The operator's scalar state, kept in a state batch's schema metadata.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Progress {
    pub(super) watermark: Option<Watermark>,
    /// The end of the last window emitted from panes.
    pub(super) last_window: Option<i64>,
}

/// What a window state is made of: how to create, fill, write and read it. Shared with
/// the threads that build and merge the operator's checkpoints.
pub(super) struct StateLayout {
    pub(super) group_schema: SchemaRef,
    /// The group columns hashed per row, by index in `group_schema`.
    keys: Vec<usize>,
    /// Their schema: a window's `GroupValues`.
    key_schema: SchemaRef,
    /// The group columns that hold one value per window (its bounds), by index: kept
    /// once per window instead of hashed with every row. A window of one end has one
    /// start when the window kind sets the start from the end (all but sessions).
    bounds: Vec<usize>,
    /// Which of `bounds` is checked row by row: the start. (The end is what rows are
    /// routed to their window by.)
    checked: Option<usize>,
    pub(super) aggregates: Vec<AggregateCall>,
    /// How many state columns each aggregate has.
    pub(super) state_widths: Vec<usize>,
    pub(super) panes: Option<Panes>,
}

impl StateLayout {
    /// The layout of a window aggregate grouping by `group_schema`'s columns: `end`
    /// routes rows to their window, and `start` (when given) is the same in every row
    /// of a window. Both are kept once per window while another column is left to hash;
    /// grouped by the bounds alone, the end is the key.
    pub(super) fn new(
        group_schema: SchemaRef,
        end: usize,
        start: Option<usize>,
        aggregates: Vec<AggregateCall>,
        state_widths: Vec<usize>,
        panes: Option<Panes>,
    ) -> Self {
        let columns = group_schema.fields().len();
        let mut bounds: Vec<usize> = [Some(end), start]
            .into_iter()
            .flatten()
            .filter(|&c| c < columns)
            .collect();
        bounds.dedup();
        if bounds.len() == columns {
            bounds.retain(|&c| c != end);
        }
        let keys: Vec<usize> = (0..columns).filter(|c| !bounds.contains(c)).collect();
        Self {
            key_schema: Arc::new(Schema::new(
                keys.iter()
                    .map(|&c| group_schema.field(c).clone())
                    .collect::<Vec<_>>(),
            )),
            keys,
            checked: bounds.iter().position(|&c| c != end),
            bounds,
            group_schema,
            aggregates,
            state_widths,
            panes,
        }
    }

    pub(super) fn new_window(&self) -> DFResult<WindowState> {
        Ok(WindowState {
            groups: new_group_values(self.key_schema.clone(), &GroupOrdering::None)?,
            bounds: Vec::with_capacity(self.bounds.len()),
            accumulators: self
                .aggregates
                .iter()
                .map(AggregateCall::new_groups_accumulator)
                .collect::<DFResult<_>>()?,
        })
    }

    /// Interns the rows of `groups` (every group column) into `window`'s keys, filling
    /// `group_indices`: its bound columns are checked against the window's values, the
    /// others hashed.
    fn intern(
        &self,
        window: &mut WindowState,
        groups: &[ArrayRef],
        group_indices: &mut Vec<usize>,
    ) -> DFResult<()> {
        if self.bounds.is_empty() {
            return window.groups.intern(groups, group_indices);
        }
        let rows = groups.first().map_or(0, |c| c.len());
        if rows > 0 {
            if window.bounds.is_empty() {
                // Copied out, not sliced: a slice would keep the batch's whole column.
                window.bounds = self
                    .bounds
                    .iter()
                    .map(|&c| ScalarValue::try_from_array(&groups[c], 0)?.to_array_of_size(1))
                    .collect::<DFResult<_>>()?;
            }
            if let Some(at) = self.checked {
                let column = self.bounds[at];
                let held = Scalar::new(window.bounds[at].clone());
                if not_distinct(&groups[column], &held)?.true_count() != rows {
                    return Err(DataFusionError::Internal(format!(
                        "window aggregate: rows of one window differ in {}",
                        self.group_schema.field(column).name()
                    )));
                }
            }
        }
        let keys: Vec<ArrayRef> = self.keys.iter().map(|&c| groups[c].clone()).collect();
        window.groups.intern(&keys, group_indices)
    }

    /// Merges partial aggregates into `window`: `states` holds each aggregate's state
    /// columns in turn for the keys `groups` (every group column).
    pub(super) fn merge(
        &self,
        window: &mut WindowState,
        groups: &[ArrayRef],
        states: &[ArrayRef],
        group_indices: &mut Vec<usize>,
    ) -> DFResult<()> {
        self.intern(window, groups, group_indices)?;
        let total = window.groups.len();
        let mut column = 0;
        for (accumulator, width) in window.accumulators.iter_mut().zip(&self.state_widths) {
            accumulator.merge_batch(&states[column..column + width], group_indices, total)?;
            column += width;
        }
        Ok(())
    }

    /// Takes `window`'s keys out, as every group column (its bounds repeated).
    pub(super) fn emit_groups(&self, window: &mut WindowState) -> DFResult<Vec<ArrayRef>> {
        let keys = window.groups.emit(EmitTo::All)?;
        if self.bounds.is_empty() {
            return Ok(keys);
        }
        let rows = keys.first().map_or(0, |c| c.len());
        let mut keys = keys.into_iter();
        let mut columns = Vec::with_capacity(self.group_schema.fields().len());
        for (column, field) in self.group_schema.fields().iter().enumerate() {
            let array = match self.bounds.iter().position(|&b| b == column) {
                None => keys.next().ok_or_else(|| {
                    DataFusionError::Internal("window aggregate: a key column missing".into())
                })?,
                Some(at) => match window.bounds.get(at) {
                    Some(value) => ScalarValue::try_from_array(value, 0)?.to_array_of_size(rows)?,
                    None if rows == 0 => new_empty_array(field.data_type()),
                    None => {
                        return Err(DataFusionError::Internal(format!(
                            "window aggregate: no value of {} held",
                            field.name()
                        )))
                    }
                },
            };
            columns.push(array);
        }
        Ok(columns)
    }

    /// Aggregates rows as one window whose keys are every group column, and takes the
    /// result out: the group columns, then each aggregate's final value. For rows of
    /// whole windows that differ in their bounds (closed sessions); `rows.ends` is not
    /// read.
    pub(super) fn aggregate_whole(
        &self,
        rows: &WindowRows,
        group_indices: &mut Vec<usize>,
    ) -> DFResult<Vec<ArrayRef>> {
        let mut values = new_group_values(self.group_schema.clone(), &GroupOrdering::None)?;
        values.intern(&rows.groups, group_indices)?;
        let total = values.len();
        let mut columns = values.emit(EmitTo::All)?;
        let arguments = rows.inputs.iter().zip(&rows.filters);
        for (aggregate, (args, filter)) in self.aggregates.iter().zip(arguments) {
            let mut accumulator = aggregate.new_groups_accumulator()?;
            let filter = filter.as_ref().map(|f| f.as_boolean());
            accumulator.update_batch(args, group_indices, filter, total)?;
            columns.push(accumulator.evaluate(EmitTo::All)?);
        }
        Ok(columns)
    }

    /// Aggregates `rows` into their windows. Most batches fall in one window; otherwise
    /// the rows are sorted by window end and each run is sliced off.
    pub(super) fn route(
        &self,
        windows: &mut Windows,
        rows: WindowRows,
        group_indices: &mut Vec<usize>,
    ) -> DFResult<()> {
        let WindowRows {
            mut ends,
            mut groups,
            mut inputs,
            mut filters,
        } = rows;
        if ends.is_empty() {
            return Ok(());
        }
        let values = ends.values();
        let single_window = values.iter().all(|&e| e == values[0]);
        if !single_window {
            let order = sort_to_indices(&ends, None, None)?;
            let reorder = |a: &ArrayRef| take(a, &order, None);
            groups = groups.iter().map(reorder).collect::<Result<_, _>>()?;
            for args in &mut inputs {
                *args = args.iter().map(reorder).collect::<Result<_, _>>()?;
            }
            for f in filters.iter_mut().flatten() {
                *f = reorder(f)?;
            }
            ends = take(&ends, &order, None)?.as_primitive().clone();
        }
        let values = ends.values().clone();
        let mut start = 0;
        while start < values.len() {
            let end_value = values[start];
            let mut stop = start + 1;
            while stop < values.len() && values[stop] == end_value {
                stop += 1;
            }
            let len = stop - start;
            let slice = |a: &ArrayRef| a.slice(start, len);
            let group_slice: Vec<ArrayRef> = groups.iter().map(slice).collect();
            let window = match windows.entry(end_value) {
                Entry::Occupied(open) => open.into_mut(),
                Entry::Vacant(new) => new.insert(self.new_window()?),
            };
            self.intern(window, &group_slice, group_indices)?;
            let total_groups = window.groups.len();
            for (i, accumulator) in window.accumulators.iter_mut().enumerate() {
                let args: Vec<ArrayRef> = inputs[i].iter().map(slice).collect();
                let filter_slice = filters[i].as_ref().map(slice);
                accumulator.update_batch(
                    &args,
                    group_indices,
                    filter_slice.as_ref().map(|f| f.as_boolean()),
                    total_groups,
                )?;
            }
            start = stop;
        }
        Ok(())
    }

    /// `windows`' keys and partial aggregates as one batch: `window_end`, the group
    /// keys, then each accumulator's state columns; `progress` in the schema's metadata.
    /// Taking a state out of DataFusion's accumulators empties them: `windows` is used up.
    pub(super) fn state_batch(
        &self,
        windows: Windows,
        progress: Progress,
    ) -> DFResult<RecordBatch> {
        let mut parts: Vec<Vec<ArrayRef>> = Vec::with_capacity(windows.len());
        for (end, mut window) in windows {
            let mut columns = self.emit_groups(&mut window)?;
            let rows = columns.first().map_or(0, |c| c.len());
            columns.insert(0, Arc::new(Int64Array::from(vec![end; rows])));
            for accumulator in &mut window.accumulators {
                columns.extend(accumulator.state(EmitTo::All)?);
            }
            parts.push(columns);
        }
        let state_types: Vec<DataType> = self
            .aggregates
            .iter()
            .map(|a| a.function.state_fields())
            .collect::<DFResult<Vec<_>>>()?
            .into_iter()
            .flatten()
            .map(|f| f.data_type().clone())
            .collect();
        let mut fields = vec![Field::new("window_end", DataType::Int64, false)];
        fields.extend(
            self.group_schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true)),
        );
        fields.extend(
            state_types
                .iter()
                .enumerate()
                .map(|(i, t)| Field::new(format!("state_{i}"), t.clone(), true)),
        );
        let mut metadata = std::collections::HashMap::new();
        if let Some(watermark) = progress.watermark {
            metadata.insert("watermark".to_string(), watermark.to_string());
        }
        if let Some(last) = progress.last_window {
            metadata.insert("last_window".to_string(), last.to_string());
        }
        let schema = Arc::new(Schema::new_with_metadata(fields, metadata));
        let columns: Vec<ArrayRef> = (0..schema.fields().len())
            .map(|c| {
                let pieces: Vec<&dyn Array> = parts.iter().map(|p| p[c].as_ref()).collect();
                if pieces.is_empty() {
                    Ok(datafusion::arrow::array::new_empty_array(
                        schema.field(c).data_type(),
                    ))
                } else {
                    datafusion::arrow::compute::concat(&pieces)
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    /// The windows a [`Self::state_batch`] batch holds — or a chain of them concatenated
    /// (a key may then appear once per link: its partial aggregates merge) — and the
    /// progress of the newest. Windows the operator had already emitted by then (an
    /// older link may still hold them) are left out.
    pub(super) fn read_state(&self, state: &RecordBatch) -> DFResult<(Windows, Progress)> {
        let metadata = state.schema().metadata().clone();
        let progress = Progress {
            watermark: metadata.get("watermark").and_then(|w| w.parse().ok()),
            last_window: metadata.get("last_window").and_then(|w| w.parse().ok()),
        };
        let keys = self.group_schema.fields().len();
        let mut windows = Windows::new();
        let mut group_indices = Vec::new();
        let ends: Int64Array = state.column(0).as_primitive().clone();
        let values = ends.values();
        let mut start = 0;
        while start < values.len() {
            let end = values[start];
            let mut stop = start + 1;
            while stop < values.len() && values[stop] == end {
                stop += 1;
            }
            if self.is_open(end, progress) {
                let len = stop - start;
                let window = match windows.entry(end) {
                    Entry::Occupied(open) => open.into_mut(),
                    Entry::Vacant(new) => new.insert(self.new_window()?),
                };
                let columns: Vec<ArrayRef> = (1..state.num_columns())
                    .map(|c| state.column(c).slice(start, len))
                    .collect();
                self.merge(
                    window,
                    &columns[..keys],
                    &columns[keys..],
                    &mut group_indices,
                )?;
            }
            start = stop;
        }
        Ok((windows, progress))
    }

    /// Whether the window (or pane) ending at `end` is still held at `progress`: a
    /// window until the watermark reaches its end, a pane until the last window reading
    /// it was emitted.
    fn is_open(&self, end: i64, progress: Progress) -> bool {
        match self.panes {
            Some(panes) => progress
                .last_window
                .is_none_or(|last| end > last - panes.size_ms + panes.slide_ms),
            None => progress.watermark.is_none_or(|watermark| end > watermark),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{StringArray, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::TimeUnit;

    /// Groups `(policy, window_start, window_end)` with no aggregate.
    fn layout() -> StateLayout {
        let time = DataType::Timestamp(TimeUnit::Millisecond, None);
        let schema = Arc::new(Schema::new(vec![
            Field::new("policy", DataType::Utf8, true),
            Field::new("window_start", time.clone(), false),
            Field::new("window_end", time, false),
        ]));
        StateLayout::new(schema, 2, Some(1), Vec::new(), Vec::new(), None)
    }

    fn rows(policies: &[&str], start: &[i64], end: i64) -> WindowRows {
        WindowRows {
            ends: Int64Array::from(vec![end; policies.len()]),
            groups: vec![
                Arc::new(StringArray::from(policies.to_vec())),
                Arc::new(TimestampMillisecondArray::from(start.to_vec())),
                Arc::new(TimestampMillisecondArray::from(vec![end; policies.len()])),
            ],
            inputs: Vec::new(),
            filters: Vec::new(),
        }
    }

    #[test]
    fn a_window_hashes_its_keys_and_holds_its_bounds_once() {
        let layout = layout();
        assert_eq!(
            (layout.keys.as_slice(), layout.bounds.as_slice()),
            (&[0][..], &[2, 1][..])
        );
        let (mut windows, mut indices) = (Windows::new(), Vec::new());
        layout
            .route(
                &mut windows,
                rows(&["a", "b", "a"], &[0, 0, 0], 10),
                &mut indices,
            )
            .unwrap();
        layout
            .route(&mut windows, rows(&["c", "a"], &[10, 10], 20), &mut indices)
            .unwrap();
        let mut emitted = Vec::new();
        for (_, mut window) in windows {
            let columns = layout.emit_groups(&mut window).unwrap();
            let batch = RecordBatch::try_new(layout.group_schema.clone(), columns).unwrap();
            emitted.push(
                datafusion::arrow::util::pretty::pretty_format_batches(&[batch])
                    .unwrap()
                    .to_string(),
            );
        }
        assert!(emitted[0].contains("| a      | 1970-01-01T00:00:00 | 1970-01-01T00:00:00.010 |"));
        assert!(emitted[0].contains("| b      |"));
        assert_eq!(
            emitted[0].matches("1970-01-01T00:00:00.010").count(),
            2,
            "{}",
            emitted[0]
        );
        assert!(
            emitted[1].contains("| c      | 1970-01-01T00:00:00.010 | 1970-01-01T00:00:00.020 |")
        );
    }

    #[test]
    fn rows_of_one_window_with_two_starts_are_an_error_not_a_merge() {
        let layout = layout();
        let (mut windows, mut indices) = (Windows::new(), Vec::new());
        let error = layout
            .route(&mut windows, rows(&["a", "b"], &[0, 5], 10), &mut indices)
            .unwrap_err();
        assert!(
            error.to_string().contains("differ in window_start"),
            "{error}"
        );
    }

    #[test]
    fn grouped_by_its_bounds_alone_a_window_keys_on_its_end() {
        let time = DataType::Timestamp(TimeUnit::Millisecond, None);
        let schema = Arc::new(Schema::new(vec![
            Field::new("window_start", time.clone(), false),
            Field::new("window_end", time, false),
        ]));
        let layout = StateLayout::new(schema, 1, Some(0), Vec::new(), Vec::new(), None);
        assert_eq!(
            (layout.keys.as_slice(), layout.bounds.as_slice()),
            (&[1][..], &[0][..])
        );
    }
}
