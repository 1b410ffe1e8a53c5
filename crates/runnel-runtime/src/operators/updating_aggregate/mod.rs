//! [`UpdatingAggregateOperator`]: `GROUP BY` without a window. Every group's aggregates
//! live for the life of the job; after each input batch the groups whose values changed
//! are emitted as changes (`+I`, `-U`/`+U`, `-D`; see [`runnel_sql::changelog`]).
//!
//! The same operator aggregates a window over an updating input
//! ([`UpdatingAggregateNode::fires_at_window_end`]): the groups are keyed by their window,
//! `-U`/`-D` rows retract from it while it is open (the window assignment already routed
//! changes to closed windows as late), and when the watermark reaches a window's end its
//! groups are emitted once, as appended rows, and freed.
//!
//! With `table.exec.state.ttl` ([`UpdatingAggregateNode::state_ttl_ms`]) each group
//! remembers the event time of its last change; once the watermark passes it by the TTL
//! the group is freed without a word (Flink's state TTL), and a later row starts it
//! afresh (`+I`). Groups are indexed by that time, so a watermark frees exactly the
//! groups it expires.
//! Groups whose rows can no longer arrive
//! ([`UpdatingAggregateNode::finished_after`]) are freed the same way, by that column.
//!
//! Keys are encoded with Arrow's row format and looked up in a hash map; a batch's rows
//! are sorted by group so each group's DataFusion [`Accumulator`] takes its rows as one
//! slice. Per-group accumulators (rather than DataFusion's `GroupsAccumulator`) are what
//! lets a group be read after every batch without giving up its state.

use std::collections::BTreeMap;

use datafusion::common::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int8Array, UInt32Array};
use datafusion::arrow::compute::kernels::boolean::{and, not};
use datafusion::arrow::compute::{cast, filter, sort_to_indices, take};
use datafusion::arrow::datatypes::{Int8Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use runnel_sql::changelog::{with_change_column, ChangeKind};
use runnel_sql::UpdatingAggregateNode;

use crate::error::{Result, RuntimeError};
use crate::message::Watermark;
use crate::operator::{
    CheckpointedState, Collector, OneInputOperator, OperatorState, StateIncrement, StreamOperator,
};
use crate::operators::aggregate_call::AggregateCall;
use crate::operators::as_millis;

mod checkpoint;

/// One group's running aggregates and what was last emitted for it.
struct Group {
    accumulators: Vec<Box<dyn Accumulator>>,
    /// Rows added less rows taken back: at zero the group is gone.
    rows: i64,
    emitted: Option<Vec<ScalarValue>>,
    /// Restored from a checkpoint: what was emitted after that checkpoint (before a
    /// crash) is unknown, so the group's next row goes out even if it equals `emitted`.
    resend: bool,
    /// The event time of the group's last change (with a state TTL).
    last_time: i64,
    /// The accumulators' bytes when last measured (after the group last changed).
    bytes: usize,
}

impl Group {
    /// A freed group's slot: no accumulators, no bytes.
    fn freed() -> Self {
        Group {
            accumulators: Vec::new(),
            rows: 0,
            emitted: None,
            resend: false,
            last_time: i64::MIN,
            bytes: 0,
        }
    }

    /// Measures the group's accumulators again; returns the bytes before and after.
    fn measure(&mut self) -> (usize, usize) {
        let before = self.bytes;
        self.bytes = self.accumulators.iter().map(|a| a.size()).sum::<usize>() + 64;
        (before, self.bytes)
    }
}

/// When groups of an aggregate without a window are freed: `table.exec.state.ttl` after
/// their last change, or as their rows can no longer arrive
/// ([`UpdatingAggregateNode::finished_after`], with a TTL of 0).
struct StateTtl {
    /// The input's event-time column, or the column saying when a row's group is done.
    time_column: usize,
    ttl_ms: i64,
    /// Live groups by the event time of their last change.
    by_time: std::collections::BTreeSet<(i64, usize)>,
    /// Groups freed since the group table was last compacted.
    freed: usize,
}

/// The groups of windows that fire at their end (a window over an updating input, or
/// any window with allowed lateness).
struct WindowFiring {
    /// Which group column is `window_end`.
    end_key: usize,
    /// How long after firing a window's groups are kept, updating its rows.
    allowed_lateness_ms: i64,
    /// Ids of the groups of each window still held, by the window's end.
    by_end: BTreeMap<i64, Vec<usize>>,
    /// Each group's window end, by group id.
    group_ends: Vec<i64>,
    /// Windows ending at or before this have fired.
    fired_through: Watermark,
    /// Groups freed (their slots empty) since the group table was last compacted.
    freed: usize,
    /// `table.exec.emit.early-fire.*`: open windows' rows go out before they end.
    early_fire: Option<EarlyFire>,
}

/// Emitting open windows' changed rows every `delay_ms` of processing time.
struct EarlyFire {
    delay_ms: i64,
    /// When open windows' rows last went out (ms since the epoch).
    last: i64,
    /// Groups of open windows changed since then, by id (first-seen order).
    dirty: std::collections::BTreeSet<usize>,
}

impl EarlyFire {
    /// Whether the delay passed since open windows' rows last went out; if so, starts the
    /// next one.
    fn due(&mut self) -> bool {
        if self.delay_ms == 0 {
            return true;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        if now - self.last < self.delay_ms {
            return false;
        }
        self.last = now;
        true
    }
}

/// Groups changed since the last checkpoint, for an incremental one.
#[derive(Default)]
struct ChangedGroups {
    ids: Vec<usize>,
    /// By group id: whether it is in `ids`.
    marked: Vec<bool>,
    /// The group table was compacted since (group ids changed): the next checkpoint
    /// takes the whole state.
    renumbered: bool,
}

impl ChangedGroups {
    fn mark(&mut self, id: usize) {
        if id >= self.marked.len() {
            self.marked.resize(id + 1, false);
        }
        if !self.marked[id] {
            self.marked[id] = true;
            self.ids.push(id);
        }
    }

    /// The groups changed since the last call.
    fn take(&mut self) -> Vec<usize> {
        let ids = std::mem::take(&mut self.ids);
        for &id in &ids {
            self.marked[id] = false;
        }
        ids
    }
}

/// An aggregate without a window, emitting its changes after every batch (or, for a
/// window over an updating input, each window once at its end).
pub struct UpdatingAggregateOperator {
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    aggregates: Vec<AggregateCall>,
    /// The input is itself updating: its `-U`/`-D` rows are taken back out.
    retracting: bool,
    keys: RowConverter,
    group_ids: HashMap<Box<[u8]>, usize>,
    /// Each group's key, by group id.
    group_keys: Rows,
    groups: Vec<Group>,
    /// The groups' accumulator bytes, kept as groups change (measuring every group for
    /// the state metric would cost time growing with the state).
    state_bytes: usize,
    firing: Option<WindowFiring>,
    ttl: Option<StateTtl>,
    output_schema: SchemaRef,
    /// With incremental checkpoints: the groups changed since the last one.
    changed: Option<ChangedGroups>,
}

fn operator_error(source: DataFusionError) -> RuntimeError {
    RuntimeError::Operator {
        operator: "UpdatingAggregate".into(),
        source,
    }
}

impl UpdatingAggregateOperator {
    /// `retracting`: whether the input is an updating stream.
    pub fn try_new(node: &UpdatingAggregateNode, retracting: bool) -> Result<Self> {
        let input_schema: &DFSchema = &node.input_schema;
        let group_exprs = crate::expr::compile(&node.group_exprs, input_schema)?;
        let aggregates = AggregateCall::lower_all(&node.aggr_exprs, input_schema)?;
        if retracting {
            for (call, expr) in aggregates.iter().zip(&node.aggr_exprs) {
                let supported = call
                    .new_accumulator(true)
                    .map(|a| a.supports_retract_batch())
                    .unwrap_or(false);
                // MIN and MAX retract only in arrival order (a sliding frame), not the
                // arbitrary order of an updating input.
                let name = call.function.fun().name();
                if !supported || name == "min" || name == "max" {
                    return Err(RuntimeError::Build(format!(
                        "aggregate {expr} cannot take back rows, but its input is an updating \
                         stream (an aggregate or Top-N without a window); COUNT, SUM and AVG can"
                    )));
                }
            }
        }
        let schema = node.schema.as_arrow();
        let sort_fields = schema.fields()[..node.group_exprs.len()]
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect::<Vec<_>>();
        let keys = RowConverter::new(sort_fields).map_err(|e| operator_error(e.into()))?;
        let group_keys = keys.empty_rows(0, 0);
        let firing = node.fires_at_window_end.map(|end_key| WindowFiring {
            end_key,
            allowed_lateness_ms: node.allowed_lateness_ms.max(0),
            by_end: BTreeMap::new(),
            group_ends: Vec::new(),
            fired_through: Watermark::MIN,
            freed: 0,
            early_fire: node.early_fire_delay_ms.map(|delay_ms| EarlyFire {
                delay_ms: delay_ms.max(0),
                last: 0,
                dirty: std::collections::BTreeSet::new(),
            }),
        });
        // A group whose rows can no longer arrive is freed as the watermark passes that
        // time, as one idle for the state TTL is; the first takes precedence.
        let expiry = match (node.finished_after, node.state_ttl_ms, node.input_time) {
            (Some(column), _, _) => Some((column, 0)),
            (None, ttl_ms, Some(column)) if ttl_ms > 0 => Some((column, ttl_ms)),
            _ => None,
        };
        let ttl =
            expiry
                .filter(|_| node.fires_at_window_end.is_none())
                .map(|(time_column, ttl_ms)| StateTtl {
                    time_column,
                    ttl_ms,
                    by_time: std::collections::BTreeSet::new(),
                    freed: 0,
                });
        Ok(Self {
            ttl,
            group_exprs,
            aggregates,
            retracting,
            keys,
            group_ids: HashMap::new(),
            group_keys,
            groups: Vec::new(),
            state_bytes: 0,
            output_schema: match &firing {
                Some(f) if f.allowed_lateness_ms == 0 && f.early_fire.is_none() => {
                    Arc::new(schema.clone())
                }
                _ => with_change_column(schema),
            },
            firing,
            changed: None,
        })
    }

    fn new_group(&self) -> DFResult<Group> {
        Ok(Group {
            accumulators: self
                .aggregates
                .iter()
                .map(|a| a.new_accumulator(self.retracting))
                .collect::<DFResult<_>>()?,
            rows: 0,
            emitted: None,
            resend: false,
            last_time: i64::MIN,
            bytes: 0,
        })
    }

    /// The group id of every row, creating groups as needed; returns the ids and the
    /// groups the batch touched, in first-seen order.
    fn assign_groups(&mut self, batch: &RecordBatch) -> DFResult<(Vec<u32>, Vec<usize>)> {
        let keys = crate::expr::evaluate(&self.group_exprs, batch)?;
        let mut ids = Vec::with_capacity(batch.num_rows());
        let mut touched = Vec::new();
        if keys.is_empty() {
            // A global aggregate: one group.
            if self.groups.is_empty() {
                let group = self.new_group()?;
                self.groups.push(group);
            }
            ids.resize(batch.num_rows(), 0);
            touched.push(0);
            return Ok((ids, touched));
        }
        let rows = self.keys.convert_columns(&keys)?;
        let window_ends = match &self.firing {
            Some(firing) => Some(as_millis(&keys[firing.end_key])?),
            None => None,
        };
        let mut seen = vec![false; self.groups.len()];
        for (index, row) in rows.iter().enumerate() {
            let id = match self.group_ids.get(row.as_ref()) {
                Some(&id) => id,
                None => {
                    let id = self.groups.len();
                    let group = self.new_group()?;
                    self.groups.push(group);
                    self.group_ids.insert(row.as_ref().into(), id);
                    self.group_keys.push(row);
                    seen.push(false);
                    if let (Some(firing), Some(ends)) = (&mut self.firing, &window_ends) {
                        let end = ends.value(index);
                        firing.by_end.entry(end).or_default().push(id);
                        firing.group_ends.push(end);
                    }
                    id
                }
            };
            if !seen[id] {
                seen[id] = true;
                touched.push(id);
            }
            ids.push(id as u32);
        }
        Ok((ids, touched))
    }

    /// Folds one batch into its groups and returns their changes.
    fn aggregate(&mut self, batch: &RecordBatch) -> DFResult<Option<RecordBatch>> {
        let (ids, touched) = self.assign_groups(batch)?;
        if let Some(changed) = &mut self.changed {
            for &id in &touched {
                changed.mark(id);
            }
        }
        let additions: Option<BooleanArray> = if self.retracting {
            let kinds = batch
                .column(batch.num_columns() - 1)
                .as_primitive::<Int8Type>();
            Some(
                kinds
                    .iter()
                    .map(|k| {
                        Some(
                            k.and_then(ChangeKind::from_code)
                                .is_some_and(|k| k.is_addition()),
                        )
                    })
                    .collect(),
            )
        } else {
            None
        };
        // Sort rows by group so each group's rows are one slice.
        let ids = UInt32Array::from(ids);
        let order = sort_to_indices(&ids, None, None)?;
        let reorder = |a: &ArrayRef| take(a, &order, None);
        let ids = take(&ids, &order, None)?;
        let ids = ids.as_primitive::<datafusion::arrow::datatypes::UInt32Type>();
        let additions = additions
            .map(|a| -> DFResult<BooleanArray> { Ok(take(&a, &order, None)?.as_boolean().clone()) })
            .transpose()?;
        let mut inputs = Vec::with_capacity(self.aggregates.len());
        for call in &self.aggregates {
            let (arguments, mask) = call.evaluate(batch)?;
            let arguments = arguments
                .iter()
                .map(reorder)
                .collect::<Result<Vec<_>, _>>()?;
            let mask = mask.map(|m| reorder(&m)).transpose()?;
            inputs.push((arguments, mask));
        }

        // With a state TTL: each row's event time, in group order.
        let times = match &self.ttl {
            Some(ttl) => {
                let times = as_millis(batch.column(ttl.time_column))?;
                Some(take(&times, &order, None)?)
            }
            None => None,
        };
        let values = ids.values();
        let mut start = 0;
        while start < values.len() {
            let id = values[start] as usize;
            let mut stop = start + 1;
            while stop < values.len() && values[stop] as usize == id {
                stop += 1;
            }
            let len = stop - start;
            if let (Some(ttl), Some(times)) = (&mut self.ttl, &times) {
                let times =
                    times.as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>();
                let latest = (start..stop)
                    .filter(|&i| times.is_valid(i))
                    .map(|i| times.value(i))
                    .max();
                let group = &mut self.groups[id];
                if let Some(latest) = latest.filter(|&t| t > group.last_time) {
                    ttl.by_time.remove(&(group.last_time, id));
                    ttl.by_time.insert((latest, id));
                    group.last_time = latest;
                }
            }
            let added = additions.as_ref().map(|a| a.slice(start, len));
            let group = &mut self.groups[id];
            group.rows += match &added {
                Some(added) => 2 * added.true_count() as i64 - len as i64,
                None => len as i64,
            };
            for ((arguments, mask), accumulator) in inputs.iter().zip(&mut group.accumulators) {
                let arguments: Vec<ArrayRef> =
                    arguments.iter().map(|a| a.slice(start, len)).collect();
                // `FILTER (WHERE ...)`: NULL counts as false.
                let mask = mask.as_ref().map(|m| {
                    let m = m.slice(start, len);
                    m.as_boolean()
                        .iter()
                        .map(|v| Some(v == Some(true)))
                        .collect::<BooleanArray>()
                });
                match &added {
                    None => match &mask {
                        None => accumulator.update_batch(&arguments)?,
                        Some(mask) => accumulator.update_batch(&select(&arguments, mask)?)?,
                    },
                    Some(added) => {
                        let (add, take_back) = match &mask {
                            None => (added.clone(), not(added)?),
                            Some(mask) => (and(added, mask)?, and(&not(added)?, mask)?),
                        };
                        accumulator.update_batch(&select(&arguments, &add)?)?;
                        accumulator.retract_batch(&select(&arguments, &take_back)?)?;
                    }
                }
            }
            let (before, after) = group.measure();
            self.state_bytes = (self.state_bytes + after).saturating_sub(before);
            start = stop;
        }
        if let Some(firing) = &mut self.firing {
            // Windows that fired already (allowed lateness) show their changes now; open
            // ones only when they fire early.
            let (fired, open): (Vec<usize>, Vec<usize>) = touched
                .into_iter()
                .partition(|&id| firing.group_ends[id] <= firing.fired_through);
            let mut due = fired;
            if let Some(early) = &mut firing.early_fire {
                early.dirty.extend(open);
                if early.due() {
                    due.extend(std::mem::take(&mut early.dirty));
                }
            }
            if due.is_empty() {
                return Ok(None);
            }
            return self.changes(&due);
        }
        self.changes(&touched)
    }

    /// Fires every window whose end the watermark reached: its groups with rows left are
    /// emitted (appended rows; with allowed lateness, as changes of what they last
    /// showed). Frees the windows that ended the allowed lateness before the watermark.
    fn fire_until(&mut self, watermark: Watermark) -> DFResult<Option<RecordBatch>> {
        let Some(firing) = &mut self.firing else {
            return Ok(None);
        };
        if watermark <= firing.fired_through {
            return Ok(None);
        }
        use std::ops::Bound::{Excluded, Included};
        let due: Vec<usize> = firing
            .by_end
            .range((Excluded(firing.fired_through), Included(watermark)))
            .flat_map(|(_, ids)| ids.iter().copied())
            .collect();
        firing.fired_through = watermark;
        let lateness = firing.allowed_lateness_ms;
        let early = firing.early_fire.is_some();
        if let Some(early) = &mut firing.early_fire {
            for id in &due {
                early.dirty.remove(id);
            }
        }
        let batch = if lateness > 0 || early {
            // A group may have fired before (restored from a checkpoint taken between
            // its firing and a change): changes() shows only what differs from its row.
            self.changes(&due)?
        } else {
            self.final_rows(&due)?
        };
        self.free_until(watermark.saturating_sub(lateness))?;
        Ok(batch)
    }

    /// The current rows of groups `ids` that have rows left, as appended rows.
    fn final_rows(&mut self, ids: &[usize]) -> DFResult<Option<RecordBatch>> {
        let mut key_ids = Vec::new();
        let mut values: Vec<Vec<ScalarValue>> = vec![Vec::new(); self.aggregates.len()];
        for &id in ids {
            let group = &mut self.groups[id];
            if group.rows <= 0 {
                continue;
            }
            key_ids.push(id);
            for (column, accumulator) in values.iter_mut().zip(&mut group.accumulators) {
                column.push(accumulator.evaluate()?);
            }
        }
        (!key_ids.is_empty())
            .then(|| self.rows_batch(&key_ids, values, None))
            .transpose()
    }

    /// Frees the groups of windows ending at or before `end`.
    fn free_until(&mut self, end: Watermark) -> DFResult<()> {
        let Some(firing) = &mut self.firing else {
            return Ok(());
        };
        let later = firing.by_end.split_off(&end.saturating_add(1));
        let freed: Vec<usize> = std::mem::replace(&mut firing.by_end, later)
            .into_values()
            .flatten()
            .collect();
        firing.freed += freed.len();
        for id in freed {
            self.state_bytes = self.state_bytes.saturating_sub(self.groups[id].bytes);
            self.groups[id] = Group::freed();
            self.group_ids.remove(self.group_keys.row(id).as_ref());
        }
        self.compact_if_sparse()
    }

    /// With a state TTL: frees the groups whose last change is more than the TTL before
    /// `watermark`.
    fn expire(&mut self, watermark: Watermark) -> DFResult<()> {
        let Some(ttl) = &mut self.ttl else {
            return Ok(());
        };
        let cutoff = watermark.saturating_sub(ttl.ttl_ms);
        while let Some(&(time, id)) = ttl.by_time.first() {
            if time >= cutoff {
                break;
            }
            ttl.by_time.pop_first();
            ttl.freed += 1;
            if let Some(changed) = &mut self.changed {
                changed.mark(id);
            }
            self.state_bytes = self.state_bytes.saturating_sub(self.groups[id].bytes);
            self.groups[id] = Group::freed();
            self.group_ids.remove(self.group_keys.row(id).as_ref());
        }
        self.compact_if_sparse()
    }

    /// Once most slots of the group table belong to freed groups (fired windows, expired
    /// groups), rebuilds it with the live groups only (through the checkpoint form, which
    /// holds exactly those).
    fn compact_if_sparse(&mut self) -> DFResult<()> {
        let freed =
            self.firing.as_ref().map_or(0, |f| f.freed) + self.ttl.as_ref().map_or(0, |t| t.freed);
        if freed < 1024 || freed * 2 < self.groups.len() {
            return Ok(());
        }
        let live = self.snapshot_state()?;
        self.restore_state(&live)?;
        if let Some(changed) = &mut self.changed {
            *changed = ChangedGroups {
                renumbered: true,
                ..ChangedGroups::default()
            };
        }
        Ok(())
    }

    /// The changes of `touched` groups since they were last emitted.
    fn changes(&mut self, touched: &[usize]) -> DFResult<Option<RecordBatch>> {
        let mut key_ids = Vec::new();
        let mut values: Vec<Vec<ScalarValue>> = vec![Vec::new(); self.aggregates.len()];
        let mut kinds = Vec::new();
        let mut push = |id: usize, row: &[ScalarValue], kind: ChangeKind| {
            key_ids.push(id);
            for (column, value) in values.iter_mut().zip(row) {
                column.push(value.clone());
            }
            kinds.push(kind as i8);
        };
        for &id in touched {
            if self.groups[id].rows <= 0 {
                // Every row of the group was taken back.
                if let Some(old) = self.groups[id].emitted.take() {
                    push(id, &old, ChangeKind::Delete);
                }
                // Its place in the state TTL's index stays with it.
                let last_time = self.groups[id].last_time;
                self.state_bytes = self.state_bytes.saturating_sub(self.groups[id].bytes);
                self.groups[id] = self.new_group()?;
                self.groups[id].last_time = last_time;
                continue;
            }
            let group = &mut self.groups[id];
            let new = group
                .accumulators
                .iter_mut()
                .map(|a| a.evaluate())
                .collect::<DFResult<Vec<_>>>()?;
            match group.emitted.take() {
                None => push(id, &new, ChangeKind::Insert),
                Some(old) if old == new && !group.resend => {
                    group.emitted = Some(old);
                    continue;
                }
                Some(old) => {
                    push(id, &old, ChangeKind::UpdateBefore);
                    push(id, &new, ChangeKind::UpdateAfter);
                }
            }
            group.emitted = Some(new);
            group.resend = false;
        }
        if kinds.is_empty() {
            return Ok(None);
        }
        self.rows_batch(&key_ids, values, Some(kinds)).map(Some)
    }

    /// Output rows: the keys of groups `key_ids`, each aggregate's `values`, and the change
    /// kinds when the output is updating.
    fn rows_batch(
        &self,
        key_ids: &[usize],
        values: Vec<Vec<ScalarValue>>,
        kinds: Option<Vec<i8>>,
    ) -> DFResult<RecordBatch> {
        let mut columns = if self.group_exprs.is_empty() {
            Vec::new()
        } else {
            self.keys
                .convert_rows(key_ids.iter().map(|&id| self.group_keys.row(id)))?
        };
        let fields = self.output_schema.fields();
        for (i, column) in values.into_iter().enumerate() {
            let array = ScalarValue::iter_to_array(column)?;
            let field = &fields[self.group_exprs.len() + i];
            columns.push(if array.data_type() == field.data_type() {
                array
            } else {
                cast(&array, field.data_type())?
            });
        }
        if let Some(kinds) = kinds {
            columns.push(Arc::new(Int8Array::from(kinds)));
        }
        Ok(RecordBatch::try_new(self.output_schema.clone(), columns)?)
    }
}

/// The rows of `arrays` where `mask` is true.
fn select(arrays: &[ArrayRef], mask: &BooleanArray) -> DFResult<Vec<ArrayRef>> {
    Ok(arrays
        .iter()
        .map(|a| filter(a, mask))
        .collect::<Result<_, _>>()?)
}

impl StreamOperator for UpdatingAggregateOperator {
    fn name(&self) -> &str {
        "UpdatingAggregate"
    }

    fn state(&mut self) -> OperatorState<'_> {
        OperatorState::Checkpointed(self)
    }

    fn finish(&mut self, out: &mut Collector) -> Result<()> {
        if let Some(rows) = self.fire_until(Watermark::MAX).map_err(operator_error)? {
            out.emit(rows);
        }
        Ok(())
    }
}

impl CheckpointedState for UpdatingAggregateOperator {
    fn size(&self) -> usize {
        self.state_bytes + self.group_keys.size() + self.group_ids.len() * 48
    }

    fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        self.snapshot_state().map(Some).map_err(operator_error)
    }

    fn restore(&mut self, state: RecordBatch) -> Result<()> {
        self.restore_state(&state).map_err(operator_error)?;
        for group in &mut self.groups {
            group.resend = true;
        }
        if self.changed.is_some() {
            self.changed = Some(ChangedGroups::default());
        }
        Ok(())
    }

    /// Windows that fire keep their groups by window: they snapshot whole.
    fn track_increments(&mut self) -> bool {
        if self.firing.is_some() {
            return false;
        }
        self.changed.get_or_insert_with(ChangedGroups::default);
        true
    }

    fn increment(&mut self) -> Result<Option<StateIncrement>> {
        let Some(changed) = &mut self.changed else {
            return Ok(None);
        };
        if changed.renumbered {
            // A whole snapshot (taken by the caller) starts a new chain.
            *changed = ChangedGroups::default();
            return Ok(None);
        }
        let ids = changed.take();
        let batch = self.state_rows(&ids).map_err(operator_error)?;
        Ok(Some(StateIncrement {
            build: Box::new(move || Ok(batch)),
            compact: std::sync::Arc::new(|chain: Vec<RecordBatch>| {
                checkpoint::newest_rows(chain).map_err(operator_error)
            }),
        }))
    }
}

impl OneInputOperator for UpdatingAggregateOperator {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        if let Some(changes) = self.aggregate(&batch).map_err(operator_error)? {
            out.emit(changes);
        }
        Ok(())
    }

    fn process_watermark(
        &mut self,
        watermark: Watermark,
        out: &mut Collector,
    ) -> Result<Option<Watermark>> {
        if let Some(rows) = self.fire_until(watermark).map_err(operator_error)? {
            out.emit(rows);
        }
        // Early fire between batches: open windows changed since the last time.
        let early = self.firing.as_mut().and_then(|f| f.early_fire.as_mut());
        if let Some(early) = early.filter(|e| !e.dirty.is_empty()) {
            if early.due() {
                let dirty: Vec<usize> = std::mem::take(&mut early.dirty).into_iter().collect();
                if let Some(rows) = self.changes(&dirty).map_err(operator_error)? {
                    out.emit(rows);
                }
            }
        }
        self.expire(watermark).map_err(operator_error)?;
        Ok(Some(watermark))
    }
}

#[cfg(test)]
mod tests;
