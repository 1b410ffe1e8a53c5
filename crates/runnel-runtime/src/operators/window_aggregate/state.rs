//! The window aggregate's state: each open window's (or pane's) keys and partial
//! aggregates ([`WindowState`]), and [`StateLayout`], which creates, fills, writes and
//! reads them — on the operator's task, and on the threads that build and merge its
//! incremental checkpoints.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use datafusion::arrow::compute::{sort_to_indices, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result as DFResult;
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
    pub(super) groups: Box<dyn GroupValues>,
    pub(super) accumulators: Vec<Box<dyn GroupsAccumulator>>,
}

impl WindowState {
    /// Merges partial aggregates into this state: `states` holds each aggregate's state
    /// columns in turn (`widths` of them each) for the keys `groups`.
    pub(super) fn merge(
        &mut self,
        groups: &[ArrayRef],
        states: &[ArrayRef],
        widths: &[usize],
        group_indices: &mut Vec<usize>,
    ) -> DFResult<()> {
        self.groups.intern(groups, group_indices)?;
        let total = self.groups.len();
        let mut column = 0;
        for (accumulator, width) in self.accumulators.iter_mut().zip(widths) {
            accumulator.merge_batch(&states[column..column + width], group_indices, total)?;
            column += width;
        }
        Ok(())
    }
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
    pub(super) aggregates: Vec<AggregateCall>,
    /// How many state columns each aggregate has.
    pub(super) state_widths: Vec<usize>,
    pub(super) panes: Option<Panes>,
}

impl StateLayout {
    pub(super) fn new_window(&self) -> DFResult<WindowState> {
        Ok(WindowState {
            groups: new_group_values(self.group_schema.clone(), &GroupOrdering::None)?,
            accumulators: self
                .aggregates
                .iter()
                .map(AggregateCall::new_groups_accumulator)
                .collect::<DFResult<_>>()?,
        })
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
            window.groups.intern(&group_slice, group_indices)?;
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
            let mut columns = window.groups.emit(EmitTo::All)?;
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
                window.merge(
                    &columns[..keys],
                    &columns[keys..],
                    &self.state_widths,
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
