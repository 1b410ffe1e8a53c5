//! [`WindowAggregateOperator`]: `GROUP BY window_start, window_end, keys...` over a stream,
//! emitting each window exactly once when the watermark reaches its end.
//!
//! State is one DataFusion [`GroupValues`] (the keys) plus one [`GroupsAccumulator`] per
//! aggregate for every open window, keyed by the window's end. Rows are routed to their
//! window with vectorized kernels (sort the window ends, take, slice), so accumulators are
//! updated batch-at-a-time exactly as in DataFusion's own hash aggregate.
//!
//! A `HOP` planned per pane ([`WindowAggregateNode::panes`]) keeps the same state per
//! *pane* (its rows carry the pane's bounds). When the watermark passes a window's end,
//! the window's panes are sealed (their partial aggregates taken out as Arrow state
//! columns, once) and merged into a fresh set of accumulators with the window's bounds
//! as keys; a pane is freed once the last window reading it is emitted. Each row is
//! aggregated once whatever `size / slide` is; each window costs a merge of its panes'
//! groups.
//!
//! Checkpoints are whole snapshots, or with incremental checkpoints, increments: the
//! rows routed since the previous checkpoint are kept (their key and argument columns,
//! shared with the batches they came from), handed over at the barrier, and aggregated
//! into partial states of just the keys they touched on the checkpoint writer's thread.
//! Partial states merge, so a snapshot followed by its increments restores the state.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use datafusion::arrow::compute::filter;
use datafusion::arrow::compute::kernels::cmp::gt;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::logical_expr::EmitTo;
use datafusion::physical_expr::PhysicalExpr;
use runnel_sql::WindowAggregateNode;

use crate::error::{Result, RuntimeError};
use crate::message::Watermark;
use crate::metrics::JobMetrics;
use crate::operator::{
    CheckpointedState, Collector, OneInputOperator, OperatorState, StateIncrement, StreamOperator,
};
use crate::operators::aggregate_call::AggregateCall;
use crate::operators::window_assign::as_millis;

mod state;

use state::{Panes, Progress, SealedPart, StateLayout, WindowRows, WindowState, Windows};

/// Input rows kept since the previous checkpoint, for the next increment.
#[derive(Default)]
struct Changes {
    rows: Vec<WindowRows>,
    buffered: usize,
    /// Rows already aggregated (on the task) because too many were waiting.
    folded: Windows,
}

/// Rows kept for an increment beyond which they are aggregated on the task, so that a
/// busy interval does not hold every row until its checkpoint.
const MAX_CHANGED_ROWS: usize = 1 << 20;

/// A tumbling-window aggregate (the window assignment happened upstream, so any kind of
/// window whose rows carry their `window_end` fits).
pub struct WindowAggregateOperator {
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    window_end: usize,
    layout: Arc<StateLayout>,
    output_schema: SchemaRef,
    windows: Windows,
    watermark: Option<Watermark>,
    metrics: Arc<JobMetrics>,
    group_indices: Vec<usize>,
    /// Set for a `HOP` aggregated per pane: then `windows` holds the panes still being
    /// filled (by pane end) and `sealed` the parts taken out for windows.
    panes: Option<Panes>,
    sealed: BTreeMap<i64, Vec<SealedPart>>,
    /// The end of the last window emitted from panes.
    last_window: Option<i64>,
    /// With incremental checkpoints: what changed since the previous one.
    changes: Option<Changes>,
    /// Set when each batch holds whole, closed sessions: aggregated and emitted on
    /// arrival, nothing kept (see [`WindowAggregateNode::closed_sessions`]).
    closed_sessions: bool,
}

/// The window's start as a column held once per window (see [`StateLayout::new`]):
/// unless a session's, a window's start follows from its end.
fn window_start_held(node: &WindowAggregateNode) -> Option<usize> {
    match node.kind {
        runnel_sql::WindowKind::Session { .. } => None,
        _ => Some(node.window_start),
    }
}

fn operator_error(source: DataFusionError) -> RuntimeError {
    RuntimeError::Operator {
        operator: "WindowAggregate".into(),
        source,
    }
}

impl WindowAggregateOperator {
    pub fn try_new(node: &WindowAggregateNode, metrics: Arc<JobMetrics>) -> Result<Self> {
        let input_schema: &DFSchema = &node.input_schema;
        let group_exprs = crate::expr::compile(&node.group_exprs, input_schema)?;
        let aggregates = AggregateCall::lower_all(&node.aggr_exprs, input_schema)?;
        let output_schema = Arc::new(node.schema.as_arrow().clone());
        let group_schema = Arc::new(Schema::new(
            output_schema.fields()[..node.group_exprs.len()].to_vec(),
        ));
        let panes = match node.kind {
            runnel_sql::WindowKind::Hop { slide_ms, size_ms } if node.panes => Some(Panes {
                slide_ms,
                size_ms,
                start_key: node.window_start,
                end_key: node.window_end,
            }),
            _ => None,
        };
        let state_widths = aggregates
            .iter()
            .map(|a| a.function.state_fields().map(|f| f.len()))
            .collect::<DFResult<Vec<_>>>()?;
        Ok(Self {
            panes,
            sealed: BTreeMap::new(),
            last_window: None,
            layout: Arc::new(StateLayout::new(
                group_schema,
                node.window_end,
                window_start_held(node),
                aggregates,
                state_widths,
                panes,
            )),
            group_exprs,
            window_end: node.window_end,
            output_schema,
            windows: BTreeMap::new(),
            watermark: None,
            metrics,
            group_indices: Vec::new(),
            changes: None,
            closed_sessions: node.closed_sessions,
        })
    }

    fn progress(&self) -> Progress {
        Progress {
            watermark: self.watermark,
            last_window: self.last_window,
        }
    }

    /// Evaluates `batch`'s window ends, keys, and each aggregate's arguments and filter.
    fn window_rows(&self, batch: &RecordBatch) -> DFResult<WindowRows> {
        let groups = crate::expr::evaluate(&self.group_exprs, batch)?;
        let (inputs, filters) = self
            .layout
            .aggregates
            .iter()
            .map(|a| a.evaluate(batch))
            .collect::<DFResult<Vec<_>>>()?
            .into_iter()
            .unzip();
        Ok(WindowRows {
            ends: as_millis(&groups[self.window_end])?.reinterpret_cast(),
            groups,
            inputs,
            filters,
        })
    }

    /// Aggregates a batch of whole, closed sessions and emits their windows at once (see
    /// [`WindowAggregateNode::closed_sessions`]): one set of groups and accumulators for
    /// the batch, every group column a key, since its sessions differ in start and end.
    fn aggregate_closed_sessions(
        &mut self,
        batch: &RecordBatch,
        out: &mut Collector,
    ) -> DFResult<()> {
        let rows = self.window_rows(batch)?;
        let columns = self
            .layout
            .aggregate_whole(&rows, &mut self.group_indices)?;
        let batch = RecordBatch::try_new(self.output_schema.clone(), columns)?;
        if batch.num_rows() > 0 {
            out.emit(batch);
        }
        Ok(())
    }

    /// Evaluates keys, arguments and filters; drops late rows; routes rows to windows.
    fn aggregate(&mut self, batch: &RecordBatch) -> DFResult<()> {
        let WindowRows {
            mut ends,
            mut groups,
            mut inputs,
            mut filters,
        } = self.window_rows(batch)?;

        // Rows whose window was already emitted are late: count and drop them. A pane is
        // read by windows up to `size - slide` after its own end.
        if let Some(watermark) = self.watermark {
            let reach = self.panes.map_or(0, |p| p.size_ms - p.slide_ms);
            let on_time = gt(
                &ends,
                &Int64Array::new_scalar(watermark.saturating_sub(reach)),
            )?;
            let late = on_time.len() - on_time.true_count();
            if late > 0 {
                JobMetrics::add(&self.metrics.late_rows, late);
                let keep = |a: &ArrayRef| filter(a, &on_time);
                groups = groups.iter().map(keep).collect::<Result<_, _>>()?;
                for args in &mut inputs {
                    *args = args.iter().map(keep).collect::<Result<_, _>>()?;
                }
                for f in filters.iter_mut().flatten() {
                    *f = keep(f)?;
                }
                ends = filter(&ends, &on_time)?.as_primitive().clone();
            }
        }
        let rows = WindowRows {
            ends,
            groups,
            inputs,
            filters,
        };
        if let Some(changes) = &mut self.changes {
            changes.buffered += rows.ends.len();
            changes.rows.push(rows.clone());
            if changes.buffered > MAX_CHANGED_ROWS {
                for kept in std::mem::take(&mut changes.rows) {
                    self.layout
                        .route(&mut changes.folded, kept, &mut self.group_indices)?;
                }
                changes.buffered = 0;
            }
        }
        self.layout
            .route(&mut self.windows, rows, &mut self.group_indices)
    }

    /// Emits (and frees) every window whose end is at or below `watermark`, oldest first.
    fn emit_until(&mut self, watermark: Watermark, out: &mut Collector) -> DFResult<()> {
        if let Some(panes) = self.panes {
            return self.emit_panes_until(panes, watermark, out);
        }
        while let Some(entry) = self.windows.first_entry() {
            if *entry.key() > watermark {
                break;
            }
            let window = entry.remove();
            self.emit_window(window, out)?;
        }
        Ok(())
    }

    /// Sends a closed window's rows on: its keys, then each aggregate's final value.
    fn emit_window(&self, mut window: WindowState, out: &mut Collector) -> DFResult<()> {
        let mut columns = self.layout.emit_groups(&mut window)?;
        for accumulator in &mut window.accumulators {
            columns.push(accumulator.evaluate(EmitTo::All)?);
        }
        let batch = RecordBatch::try_new(self.output_schema.clone(), columns)?;
        if batch.num_rows() > 0 {
            out.emit(batch);
        }
        Ok(())
    }

    /// Emits every window whose end is at or below `watermark` from its panes, oldest
    /// first, and frees the panes no later window reads.
    fn emit_panes_until(
        &mut self,
        panes: Panes,
        watermark: Watermark,
        out: &mut Collector,
    ) -> DFResult<()> {
        loop {
            let first = [self.windows.keys().next(), self.sealed.keys().next()]
                .into_iter()
                .flatten()
                .min()
                .copied();
            let Some(first) = first else { break };
            // The next window holding a pane: windows end on pane ends.
            let end = self
                .last_window
                .map_or(first, |last| first.max(last + panes.slide_ms));
            if end > watermark {
                break;
            }
            let start = end - panes.size_ms;
            let reading = (
                std::ops::Bound::Excluded(start),
                std::ops::Bound::Included(end),
            );
            let filling: Vec<i64> = self.windows.range(reading).map(|(e, _)| *e).collect();
            for pane_end in filling {
                if let Some(pane) = self.windows.remove(&pane_end) {
                    let part = self.seal(pane)?;
                    self.sealed.entry(pane_end).or_default().push(part);
                }
            }
            let mut window = self.layout.new_window()?;
            let keys = self.layout.group_schema.fields().len();
            for parts in self.sealed.range(reading).map(|(_, parts)| parts) {
                for part in parts {
                    let rows = part.first().map_or(0, |c| c.len());
                    let mut groups = part[..keys].to_vec();
                    groups[panes.start_key] = self.window_bound(panes.start_key, start, rows)?;
                    groups[panes.end_key] = self.window_bound(panes.end_key, end, rows)?;
                    self.layout.merge(
                        &mut window,
                        &groups,
                        &part[keys..],
                        &mut self.group_indices,
                    )?;
                }
            }
            self.emit_window(window, out)?;
            self.last_window = Some(end);
            // The next window starts a slide later: panes ending by then are done.
            let done = start + panes.slide_ms;
            self.sealed.retain(|pane_end, _| *pane_end > done);
            self.windows.retain(|pane_end, _| *pane_end > done);
        }
        Ok(())
    }

    /// A pane's partial aggregates taken out of its accumulators.
    fn seal(&self, mut pane: WindowState) -> DFResult<SealedPart> {
        let mut part = self.layout.emit_groups(&mut pane)?;
        for accumulator in &mut pane.accumulators {
            part.extend(accumulator.state(EmitTo::All)?);
        }
        Ok(part)
    }

    /// A window bound as `rows` values of group column `key`'s type.
    fn window_bound(&self, key: usize, value: i64, rows: usize) -> DFResult<ArrayRef> {
        let data_type = self.layout.group_schema.field(key).data_type();
        let millis = datafusion::arrow::array::TimestampMillisecondArray::from_value(value, rows);
        Ok(match data_type {
            DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Millisecond, tz) => {
                Arc::new(millis.with_timezone_opt(tz.clone()))
            }
            other => datafusion::arrow::compute::cast(&millis, other)?,
        })
    }

    /// Puts sealed pane parts back into live accumulators (keyed by pane end), so a
    /// snapshot sees every pane in one place.
    fn unseal(&mut self) -> DFResult<()> {
        let keys = self.layout.group_schema.fields().len();
        for (pane_end, parts) in std::mem::take(&mut self.sealed) {
            let pane = match self.windows.entry(pane_end) {
                Entry::Occupied(open) => open.into_mut(),
                Entry::Vacant(new) => new.insert(self.layout.new_window()?),
            };
            for part in parts {
                self.layout
                    .merge(pane, &part[..keys], &part[keys..], &mut self.group_indices)?;
            }
        }
        Ok(())
    }

    /// Every open window's keys and partial aggregates as one batch (see
    /// [`StateLayout::state_batch`]). Taking a state out of DataFusion's accumulators
    /// empties them, so the windows are rebuilt from the batch right after (as a restore
    /// would).
    fn snapshot_state(&mut self) -> DFResult<RecordBatch> {
        self.unseal()?;
        let windows = std::mem::take(&mut self.windows);
        let state = self.layout.state_batch(windows, self.progress())?;
        self.restore_state(&state)?;
        Ok(state)
    }

    /// Rebuilds the open windows from a [`Self::snapshot_state`] batch, or a chain.
    fn restore_state(&mut self, state: &RecordBatch) -> DFResult<()> {
        self.sealed.clear();
        let (windows, progress) = self.layout.read_state(state)?;
        self.windows = windows;
        self.watermark = progress.watermark;
        self.last_window = progress.last_window;
        if self.changes.is_some() {
            self.changes = Some(Changes::default());
        }
        Ok(())
    }

    /// What changed since the previous checkpoint, to be aggregated off the task.
    fn take_increment(&mut self) -> Option<StateIncrement> {
        let changes = std::mem::take(self.changes.as_mut()?);
        let (layout, progress) = (self.layout.clone(), self.progress());
        let build = move || {
            let mut windows = changes.folded;
            let mut group_indices = Vec::new();
            for rows in changes.rows {
                layout.route(&mut windows, rows, &mut group_indices)?;
            }
            layout.state_batch(windows, progress)
        };
        let layout = self.layout.clone();
        let compact = move |chain: Vec<RecordBatch>| -> Result<RecordBatch> {
            let Some(newest) = chain.last() else {
                return Err(RuntimeError::Checkpoint("an empty chain to compact".into()));
            };
            let chain = datafusion::arrow::compute::concat_batches(&newest.schema(), &chain)
                .map_err(|e| operator_error(e.into()))?;
            let (windows, progress) = layout.read_state(&chain).map_err(operator_error)?;
            layout
                .state_batch(windows, progress)
                .map_err(operator_error)
        };
        Some(StateIncrement {
            build: Box::new(move || build().map_err(operator_error)),
            compact: Arc::new(compact),
        })
    }

    /// Number of open windows (for tests and metrics).
    pub fn open_windows(&self) -> usize {
        self.windows.len()
    }
}

impl StreamOperator for WindowAggregateOperator {
    fn name(&self) -> &str {
        "WindowAggregate"
    }

    fn state(&mut self) -> OperatorState<'_> {
        if self.closed_sessions {
            OperatorState::Stateless
        } else {
            OperatorState::Checkpointed(self)
        }
    }

    fn finish(&mut self, out: &mut Collector) -> Result<()> {
        self.emit_until(Watermark::MAX, out).map_err(operator_error)
    }
}

impl CheckpointedState for WindowAggregateOperator {
    fn size(&self) -> usize {
        let live: usize = self
            .windows
            .values()
            .map(|w| w.groups.size() + w.accumulators.iter().map(|a| a.size()).sum::<usize>())
            .sum();
        let sealed: usize = self
            .sealed
            .values()
            .flatten()
            .flatten()
            .map(|a| a.get_array_memory_size())
            .sum();
        let changes = self.changes.as_ref().map_or(0, |changes| {
            let kept: usize = changes
                .rows
                .iter()
                .map(|rows| {
                    rows.groups
                        .iter()
                        .chain(rows.inputs.iter().flatten())
                        .map(|a| a.get_array_memory_size())
                        .sum::<usize>()
                })
                .sum();
            let folded: usize = changes
                .folded
                .values()
                .map(|w| w.groups.size() + w.accumulators.iter().map(|a| a.size()).sum::<usize>())
                .sum();
            kept + folded
        });
        live + sealed + changes
    }

    fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        let state = self.snapshot_state().map_err(operator_error)?;
        if self.changes.is_some() {
            // A whole snapshot starts a new chain.
            self.changes = Some(Changes::default());
        }
        Ok(Some(state))
    }

    fn restore(&mut self, state: RecordBatch) -> Result<()> {
        self.restore_state(&state).map_err(operator_error)
    }

    fn track_increments(&mut self) -> bool {
        self.changes.get_or_insert_with(Changes::default);
        true
    }

    fn increment(&mut self) -> Result<Option<StateIncrement>> {
        Ok(self.take_increment())
    }
}

impl OneInputOperator for WindowAggregateOperator {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        if self.closed_sessions {
            self.aggregate_closed_sessions(&batch, out)
        } else {
            self.aggregate(&batch)
        }
        .map_err(operator_error)
    }

    fn process_watermark(
        &mut self,
        watermark: Watermark,
        out: &mut Collector,
    ) -> Result<Option<Watermark>> {
        if self.watermark.is_some_and(|w| w >= watermark) {
            return Ok(None);
        }
        self.watermark = Some(watermark);
        self.emit_until(watermark, out).map_err(operator_error)?;
        Ok(Some(watermark))
    }
}

#[cfg(test)]
mod tests_support {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use runnel_sql::StreamNode;

    /// Plans the aggregate of a small tumbling query and returns its node.
    pub(super) fn aggregate_node() -> WindowAggregateNode {
        window_aggregate_of(
            "SELECT k, window_start, window_end, COUNT(*) AS c, SUM(v) AS s
             FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '10' SECONDS))
             GROUP BY k, window_start, window_end;",
        )
    }

    /// The window aggregate of `query` over `t (k STRING, v BIGINT, ts TIMESTAMP(3))`.
    fn window_aggregate_of(query: &str) -> WindowAggregateNode {
        let mut node = crate::test_plans::plan_script(&format!(
            "CREATE TABLE t (k STRING, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)
               WITH ('connector' = 'filesystem', 'path' = 'unused');
             {query}"
        ))
        .root;
        loop {
            node = match node {
                StreamNode::WindowAggregate(a) => return a,
                StreamNode::Projection { input, .. } | StreamNode::Filter { input, .. } => *input,
                other => panic!("no window aggregate in {other:?}"),
            }
        }
    }

    /// The aggregate of a `HOP` of 10-second slides over 20-second windows, planned per
    /// pane (panes are 10 seconds, so [`input`] fits it too).
    pub(super) fn hop_node() -> WindowAggregateNode {
        window_aggregate_of(
            "SELECT k, window_start, window_end, COUNT(*) AS c, SUM(v) AS s
             FROM TABLE(HOP(TABLE t, DESCRIPTOR(ts), INTERVAL '10' SECONDS, INTERVAL '20' SECONDS))
             GROUP BY k, window_start, window_end;",
        )
    }

    /// A batch of the aggregate's input: (key, value, event time in seconds).
    pub(super) fn input(node: &WindowAggregateNode, rows: &[(&str, i64, i64)]) -> RecordBatch {
        let schema = Arc::new(node.input_schema.as_arrow().clone());
        let millis = |f: &dyn Fn(i64) -> i64| {
            Arc::new(TimestampMillisecondArray::from_iter_values(
                rows.iter().map(|r| f(r.2 * 1000)),
            )) as ArrayRef
        };
        let columns = schema
            .fields()
            .iter()
            .map(|field| match field.name().as_str() {
                "k" => {
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef
                }
                "v" => Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))) as ArrayRef,
                "ts" => millis(&|t| t),
                "window_start" => millis(&|t| t - t % 10_000),
                "window_end" => millis(&|t| t - t % 10_000 + 10_000),
                "window_time" => millis(&|t| t - t % 10_000 + 9_999),
                other => panic!("unexpected input column {other}"),
            })
            .collect();
        RecordBatch::try_new(schema, columns).unwrap()
    }

    /// What `out` collected so far, as a table.
    pub(super) fn rows(out: &mut Collector) -> String {
        let batches: Vec<RecordBatch> = out.take().collect();
        // One space between cells, so expectations do not depend on column widths.
        let table = pretty_format_batches(&batches).unwrap().to_string();
        table
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;

    #[test]
    fn emits_each_window_once_at_its_end_counts_late_rows_and_frees_state() {
        let node = aggregate_node();
        let metrics = Arc::new(JobMetrics::default());
        let mut operator = WindowAggregateOperator::try_new(&node, metrics.clone()).unwrap();
        let mut out = Collector::default();

        // One batch spanning two windows, out of order.
        let batch = input(
            &node,
            &[("a", 1, 12), ("a", 2, 3), ("b", 4, 15), ("a", 8, 9)],
        );
        operator.process_batch(batch, &mut out).unwrap();
        assert_eq!(
            out.take().count(),
            0,
            "nothing is emitted before the watermark"
        );
        assert_eq!(operator.open_windows(), 2);

        let forwarded = operator.process_watermark(9_999, &mut out).unwrap();
        assert_eq!(forwarded, Some(9_999));
        assert_eq!(out.take().count(), 0, "window [0, 10) is not complete yet");
        operator.process_watermark(10_000, &mut out).unwrap();
        let first = rows(&mut out);
        assert!(
            first.contains("| a | 1970-01-01T00:00:00 | 1970-01-01T00:00:10 | 2 | 10 |"),
            "{first}"
        );
        assert_eq!(
            first.lines().count(),
            5,
            "one row for window [0, 10): {first}"
        );
        assert_eq!(
            operator.open_windows(),
            1,
            "the emitted window's state is freed"
        );

        // A row for the emitted window is late; one for the open window is not.
        operator
            .process_batch(input(&node, &[("a", 100, 5), ("b", 1, 19)]), &mut out)
            .unwrap();
        assert_eq!(metrics.snapshot().late_rows, 1);
        operator.finish(&mut out).unwrap();
        let second = rows(&mut out);
        assert!(
            second.contains("| a | 1970-01-01T00:00:10 | 1970-01-01T00:00:20 | 1 | 1 |"),
            "{second}"
        );
        assert!(
            second.contains("| b | 1970-01-01T00:00:10 | 1970-01-01T00:00:20 | 2 | 5 |"),
            "{second}"
        );
        assert_eq!(operator.open_windows(), 0);
    }
}

#[cfg(test)]
mod checkpoint_tests {
    use super::tests_support::*;
    use super::*;

    #[test]
    fn snapshots_taken_between_batches_restore_the_same_windows() {
        let node = aggregate_node();
        let metrics = Arc::new(JobMetrics::default());
        let mut straight = WindowAggregateOperator::try_new(&node, metrics.clone()).unwrap();
        let mut checkpointed = WindowAggregateOperator::try_new(&node, metrics.clone()).unwrap();
        let batches = [
            vec![("a", 1, 12), ("a", 2, 3), ("b", 4, 15)],
            vec![("a", 8, 9), ("b", 1, 14)],
            vec![("c", 5, 1), ("a", 7, 11)],
        ];
        let mut out = Collector::default();
        let mut state = None;
        for rows in &batches {
            straight
                .process_batch(input(&node, rows), &mut out)
                .unwrap();
            checkpointed
                .process_batch(input(&node, rows), &mut out)
                .unwrap();
            // A snapshot between every batch must leave the operator as it was.
            state = checkpointed.snapshot().unwrap();
        }
        let mut restored = WindowAggregateOperator::try_new(&node, metrics).unwrap();
        restored.restore(state.unwrap()).unwrap();
        let finished = |operator: &mut WindowAggregateOperator| {
            let mut out = Collector::default();
            operator.finish(&mut out).unwrap();
            rows(&mut out)
        };
        let (a, b, c) = (
            finished(&mut straight),
            finished(&mut checkpointed),
            finished(&mut restored),
        );
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert!(a.contains("| a | 1970-01-01T00:00:00 | 1970-01-01T00:00:10 | 2 | 10 |"));
    }

    /// Rows (key, value, event time in seconds), then a watermark.
    type Step<'a> = (&'a [(&'a str, i64, i64)], Option<i64>);

    /// Runs `steps` (rows, then a watermark) through an operator whole and one tracking
    /// increments, taking an increment after each step the way the checkpoint writer
    /// does; then restores one operator from the chain (rows concatenated under the
    /// newest link's schema) and one from the chain merged. All four must end alike.
    /// Returns the increments' row counts.
    fn check_increments(node: &WindowAggregateNode, steps: &[Step<'_>]) -> Vec<usize> {
        let metrics = Arc::new(JobMetrics::default());
        let new = || WindowAggregateOperator::try_new(node, metrics.clone()).unwrap();
        let (mut straight, mut incremental) = (new(), new());
        assert!(incremental.track_increments());
        let (mut straight_out, mut incremental_out) = (Collector::default(), Collector::default());
        let (mut links, mut compact) = (Vec::new(), None);
        for (rows, watermark) in steps {
            for (operator, out) in [
                (&mut straight, &mut straight_out),
                (&mut incremental, &mut incremental_out),
            ] {
                operator.process_batch(input(node, rows), out).unwrap();
                if let Some(watermark) = watermark {
                    operator.process_watermark(*watermark, out).unwrap();
                }
            }
            let increment = incremental.increment().unwrap().expect("an increment");
            links.push((increment.build)().unwrap());
            compact = Some(increment.compact);
        }
        let emitted = rows(&mut straight_out);
        assert_eq!(emitted, rows(&mut incremental_out));

        let chain =
            datafusion::arrow::compute::concat_batches(&links.last().unwrap().schema(), &links)
                .unwrap();
        let merged = compact.expect("a compaction")(links.clone()).unwrap();
        let (mut restored, mut from_merged) = (new(), new());
        restored.restore(chain).unwrap();
        from_merged.restore(merged).unwrap();
        let finished = |operator: &mut WindowAggregateOperator| {
            let mut out = Collector::default();
            operator.finish(&mut out).unwrap();
            rows(&mut out)
        };
        let rest = finished(&mut straight);
        assert_eq!(rest, finished(&mut incremental));
        assert_eq!(rest, finished(&mut restored), "restored from the chain");
        assert_eq!(
            rest,
            finished(&mut from_merged),
            "restored from the merged chain"
        );
        assert!(
            rest.lines().count() > 4,
            "windows left to emit: {emitted}\n{rest}"
        );
        links.iter().map(RecordBatch::num_rows).collect()
    }

    #[test]
    fn increments_hold_only_changed_keys_and_restore_without_emitted_windows() {
        // [0, 10) is emitted after the second step and [10, 20) after the fourth: older
        // links still hold them, and a restore must not bring them back.
        let steps: [Step<'_>; 5] = [
            (&[("a", 1, 12), ("a", 2, 3), ("b", 4, 15)], None),
            (&[("a", 8, 9), ("b", 1, 14)], Some(10_000)),
            (&[("c", 5, 16), ("a", 7, 11), ("c", 1, 17)], None),
            (&[("b", 2, 25)], Some(20_000)),
            (&[("d", 3, 27), ("b", 1, 21)], None),
        ];
        let sizes = check_increments(&aggregate_node(), &steps);
        // Each increment holds the (window, key) pairs its step touched, once.
        assert_eq!(sizes, vec![3, 2, 2, 1, 2]);
    }

    #[test]
    fn increments_of_panes_restore_the_windows_still_reading_them() {
        // Windows of 20 s every 10 s: the pane [10, 20) is read by [0, 20), emitted at
        // 20 s, and by [10, 30), still open then.
        let steps: [Step<'_>; 4] = [
            (&[("a", 1, 2), ("a", 2, 12), ("b", 4, 15)], None),
            (&[("a", 8, 19)], Some(20_000)),
            (&[("c", 5, 25), ("b", 1, 31)], Some(30_000)),
            (&[("d", 3, 37)], None),
        ];
        let node = hop_node();
        assert!(node.panes, "the HOP is planned per pane");
        check_increments(&node, &steps);
    }
}
