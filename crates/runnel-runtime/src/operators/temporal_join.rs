//! [`TemporalJoinOperator`]: Flink's event-time temporal join — each row of a stream
//! meets the version of a versioned table valid at the row's event time.
//!
//! The versioned table's changes build, per primary key, a history of versions ordered
//! by their event time (a `-D` is a version too: "no row from here on"). A stream row
//! waits until the watermark of both inputs passes its time: then no version at or
//! before it can still arrive, and the version it meets is the key's last at or before
//! its time. Waiting rows are joined in time order, so a changelog stream's changes keep
//! their order. A stream row behind the watermark already joined is late: counted,
//! dropped or routed. A version behind it takes effect just after it (history already
//! joined is not revised). A delete takes effect at its own time (Debezium's commit
//! time, read as metadata), and never before the versioned table's watermark (a delete
//! with no time, or the old row's, takes effect from there). The versioned table's changes
//! are read as they come, not normalized per key: a repeated change adds the same version
//! again, which changes nothing. Once joined through the watermark, a key keeps only its last
//! version at or before the watermark and those after.

use datafusion::common::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, Int8Array, UInt32Array,
};
use datafusion::arrow::compute::{concat_batches, filter_record_batch, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Int8Type, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::DFSchema;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::JoinType;
use datafusion::physical_expr::PhysicalExpr;
use runnel_sql::changelog::ChangeKind;
use runnel_sql::TemporalJoinNode;

use crate::error::{Result, RuntimeError};
use crate::message::{Watermark, WATERMARK_END};
use crate::metrics::JobMetrics;
use crate::operator::{
    CheckpointedState, Collector, InputWatermarks, OperatorState, Side, StreamOperator,
    TwoInputOperator,
};
use crate::operators::join_rows::{padded, residual_passes, split_two_sided, two_sided_state};
use crate::operators::late_rows::drop_late;
use crate::operators::window_assign::event_times;
use crate::operators::LateRowsOutput;

const NAME: &str = "TemporalJoin";

/// The schema metadata key a snapshot keeps the watermark joined through under.
const JOINED_THROUGH: &str = "runnel.joined_through";

fn operator_error(source: DataFusionError) -> RuntimeError {
    RuntimeError::Operator {
        operator: NAME.into(),
        source,
    }
}

fn arrow_error(e: ArrowError) -> RuntimeError {
    operator_error(e.into())
}

/// One version of a key: from `time` on, the key's row is `row` (none if `deleted`).
struct Version {
    time: i64,
    row: OwnedRow,
    deleted: bool,
}

/// See the module documentation.
pub struct TemporalJoinOperator {
    left_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The left's batches (with the change column when it is updating).
    left_schema: SchemaRef,
    /// The left's columns without the change column.
    left_data: usize,
    left_updating: bool,
    left_time: usize,
    left_time_name: String,
    right_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Each right key's column in the versioned table's changes (keys are columns).
    right_key_columns: Vec<Option<usize>>,
    right_time: usize,
    right_time_name: String,
    /// The versioned table's columns the join emits, as indexes into its changes.
    right_columns: Vec<usize>,
    /// The emitted right columns' schema.
    right_schema: SchemaRef,
    /// Encodes either side's keys, and the emitted right columns.
    keys: RowConverter,
    rows: RowConverter,
    /// Left rows waiting for the watermark.
    waiting: Vec<RecordBatch>,
    /// Each key's versions, by time (equal times: in arrival order).
    versions: HashMap<Vec<u8>, Vec<Version>>,
    version_count: usize,
    count_after_cleanup: usize,
    /// Left rows at or before this were joined.
    joined_through: Option<i64>,
    outer: bool,
    residual: Option<Arc<dyn PhysicalExpr>>,
    /// The joined columns, and the output's (with the change column when updating).
    joined_schema: SchemaRef,
    output_schema: SchemaRef,
    late_output: Option<LateRowsOutput>,
    metrics: Arc<JobMetrics>,
}

impl TemporalJoinOperator {
    pub fn try_new(
        node: &TemporalJoinNode,
        metrics: Arc<JobMetrics>,
        late_output: Option<LateRowsOutput>,
    ) -> Result<Self> {
        let left_df: &DFSchema = &node.left_schema;
        let right_full = node.right.schema();
        let left_keys = crate::expr::compile(&node.left_keys, left_df)?;
        let right_keys = crate::expr::compile(&node.right_keys, &right_full)?;
        let left_arrow = Arc::new(left_df.as_arrow().clone());
        let key_fields = left_keys
            .iter()
            .map(|k| Ok(SortField::new(k.data_type(&left_arrow)?)))
            .collect::<std::result::Result<Vec<_>, DataFusionError>>()?;
        let right_schema = Arc::new(node.right_schema.as_arrow().clone());
        let row_fields = right_schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        let residual = match &node.residual {
            Some(expr) => {
                Some(crate::expr::compile(std::slice::from_ref(expr), &node.schema)?.remove(0))
            }
            None => None,
        };
        let joined_schema = Arc::new(node.schema.as_arrow().clone());
        let left_updating = node.left.is_updating();
        let output_schema = if left_updating {
            runnel_sql::changelog::with_change_column(&joined_schema)
        } else {
            joined_schema.clone()
        };
        Ok(Self {
            left_keys,
            left_schema: node.left.arrow_schema(),
            left_data: left_arrow.fields().len(),
            left_updating,
            left_time: node.left_time,
            left_time_name: left_arrow.field(node.left_time).name().clone(),
            right_keys,
            right_key_columns: node
                .right_keys
                .iter()
                .map(|k| match k {
                    datafusion::logical_expr::Expr::Column(c) => right_full.index_of_column(c).ok(),
                    _ => None,
                })
                .collect(),
            right_time: node.right_time,
            right_time_name: right_full.field(node.right_time).name().clone(),
            right_columns: node.right_columns.clone(),
            right_schema,
            keys: RowConverter::new(key_fields).map_err(arrow_error)?,
            rows: RowConverter::new(row_fields).map_err(arrow_error)?,
            waiting: Vec::new(),
            versions: HashMap::new(),
            version_count: 0,
            count_after_cleanup: 0,
            joined_through: None,
            outer: node.join_type == JoinType::Left,
            residual,
            joined_schema,
            output_schema,
            late_output,
            metrics,
        })
    }

    /// Adds the versioned table's changes to its keys' histories; `watermark` is the
    /// versioned table's own.
    fn add_versions(&mut self, batch: &RecordBatch, watermark: Option<i64>) -> Result<()> {
        let last = batch.num_columns() - 1;
        let kinds = batch
            .column(last)
            .as_primitive_opt::<Int8Type>()
            .ok_or_else(|| RuntimeError::Build(format!("{NAME}: versions lack a change column")))?
            .clone();
        // A key-only delete may have no time of its own.
        let times =
            crate::operators::as_millis(batch.column(self.right_time)).map_err(operator_error)?;
        let key_columns = crate::expr::evaluate(&self.right_keys, batch)?;
        let keys = self
            .keys
            .convert_columns(&key_columns)
            .map_err(arrow_error)?;
        let emitted: Vec<ArrayRef> = self
            .right_columns
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let rows = self.rows.convert_columns(&emitted).map_err(arrow_error)?;
        for row in 0..batch.num_rows() {
            let kind = ChangeKind::from_code(kinds.value(row)).unwrap_or(ChangeKind::Insert);
            if kind == ChangeKind::UpdateBefore {
                continue; // The `+U` after it is the new version.
            }
            let deleted = kind == ChangeKind::Delete;
            if !deleted && times.is_null(row) {
                return Err(operator_error(DataFusionError::Execution(format!(
                    "the event-time column '{}' of a versioned table is NULL in a change",
                    self.right_time_name
                ))));
            }
            let history = self.versions.entry_ref(keys.row(row).data()).or_default();
            // A delete's time is its own (Debezium's commit time, as metadata); when it
            // carries none, or an old one (the row's last version), it is the versioned
            // table's watermark — and always after the key's last version.
            let mut time = if times.is_null(row) {
                i64::MIN
            } else {
                times.value(row)
            };
            if deleted {
                if let Some(watermark) = watermark {
                    time = time.max(watermark);
                }
                if let Some(last) = history.last().filter(|last| time <= last.time) {
                    time = last.time.saturating_add(1);
                }
            }
            // History already joined stays as it was joined.
            if let Some(through) = self.joined_through.filter(|&t| time <= t) {
                time = through.saturating_add(1);
            }
            let at = history.partition_point(|v| v.time <= time);
            history.insert(
                at,
                Version {
                    time,
                    row: rows.row(row).owned(),
                    deleted,
                },
            );
            self.version_count += 1;
        }
        Ok(())
    }

    /// Joins the waiting left rows at or before `watermark`, in time order.
    fn join_through(&mut self, watermark: i64, out: &mut Collector) -> Result<()> {
        if self.waiting.is_empty() {
            return Ok(());
        }
        let waiting = concat_batches(&self.left_schema, &self.waiting).map_err(arrow_error)?;
        self.waiting.clear();
        let times = event_times(&waiting, self.left_time, &self.left_time_name, NAME)?;
        let ready_mask: BooleanArray = times
            .values()
            .iter()
            .map(|&t| Some(t <= watermark))
            .collect();
        let later = filter_record_batch(
            &waiting,
            &datafusion::arrow::compute::not(&ready_mask).map_err(arrow_error)?,
        )
        .map_err(arrow_error)?;
        if later.num_rows() > 0 {
            self.waiting.push(later);
        }
        let mut order: Vec<u32> = (0..waiting.num_rows() as u32)
            .filter(|&i| ready_mask.value(i as usize))
            .collect();
        if order.is_empty() {
            return Ok(());
        }
        order.sort_by_key(|&i| (times.value(i as usize), i));
        let ready = take_record_batch(&waiting, &UInt32Array::from(order)).map_err(arrow_error)?;
        let times = event_times(&ready, self.left_time, &self.left_time_name, NAME)?;
        let key_columns = crate::expr::evaluate(&self.left_keys, &ready)?;
        let keys = self
            .keys
            .convert_columns(&key_columns)
            .map_err(arrow_error)?;
        // Each ready row's version, if it has a live one.
        let (mut matched, mut versions): (Vec<u32>, Vec<&OwnedRow>) = (Vec::new(), Vec::new());
        for row in 0..ready.num_rows() {
            if key_columns.iter().any(|k| k.is_null(row)) {
                continue;
            }
            let Some(history) = self.versions.get(keys.row(row).data()) else {
                continue;
            };
            let at = history.partition_point(|v| v.time <= times.value(row));
            if let Some(version) = at.checked_sub(1).map(|i| &history[i]) {
                if !version.deleted {
                    matched.push(row as u32);
                    versions.push(&version.row);
                }
            }
        }
        let data: Vec<usize> = (0..self.left_data).collect();
        let left_rows = ready.project(&data).map_err(arrow_error)?;
        let matched = UInt32Array::from(matched);
        let these = take_record_batch(&left_rows, &matched).map_err(arrow_error)?;
        let those = self
            .rows
            .convert_rows(versions.iter().map(|r| r.row()))
            .map_err(arrow_error)?;
        let joined = RecordBatch::try_new(
            self.joined_schema.clone(),
            [these.columns().to_vec(), those].concat(),
        )
        .map_err(arrow_error)?;
        let passed = residual_passes(self.residual.as_ref(), &joined).map_err(operator_error)?;
        // The output in the ready rows' order: each row joined, padded (left join), or
        // dropped (inner join without a version).
        let mut joined_at = vec![None; ready.num_rows()];
        for (pair, &row) in matched.values().iter().enumerate() {
            if passed[pair] {
                joined_at[row as usize] = Some(pair);
            }
        }
        let mut sources: Vec<(usize, usize)> = Vec::new();
        let mut kept: Vec<u32> = Vec::new();
        let mut lonely: Vec<u32> = Vec::new();
        for (row, pair) in joined_at.iter().enumerate() {
            match pair {
                Some(pair) => sources.push((0, *pair)),
                None if self.outer => {
                    sources.push((1, lonely.len()));
                    lonely.push(row as u32);
                }
                None => continue,
            }
            kept.push(row as u32);
        }
        if sources.is_empty() {
            return Ok(());
        }
        let lonely_rows =
            take_record_batch(&left_rows, &UInt32Array::from(lonely)).map_err(arrow_error)?;
        let padded_rows = padded(
            &self.joined_schema,
            Side::Left,
            &lonely_rows,
            &self.right_schema,
        )?;
        let result =
            datafusion::arrow::compute::interleave_record_batch(&[&joined, &padded_rows], &sources)
                .map_err(arrow_error)?;
        let mut columns = result.columns().to_vec();
        if self.left_updating {
            let kinds = ready.column(self.left_data).as_primitive::<Int8Type>();
            columns.push(Arc::new(Int8Array::from_iter_values(
                kept.iter().map(|&row| kinds.value(row as usize)),
            )));
        }
        out.emit(RecordBatch::try_new(self.output_schema.clone(), columns).map_err(arrow_error)?);
        Ok(())
    }

    /// Drops the versions no row can meet any more: those before each key's last one at
    /// or before `watermark` (and a key whose last version is a delete).
    fn clean_up(&mut self, watermark: i64) {
        let mut count = 0;
        self.versions.retain(|_, history| {
            let at = history.partition_point(|v| v.time <= watermark);
            if at > 1 {
                history.drain(..at - 1);
            }
            let gone = history.len() == 1 && history[0].deleted && history[0].time <= watermark;
            if !gone {
                count += history.len();
            }
            !gone
        });
        self.version_count = count;
        self.count_after_cleanup = count;
    }

    /// The versions as one batch: the emitted right columns, `__time`, `__deleted`.
    fn versions_batch(&self) -> Result<RecordBatch> {
        let all: Vec<&Version> = self.versions.values().flatten().collect();
        let mut columns = self
            .rows
            .convert_rows(all.iter().map(|v| v.row.row()))
            .map_err(arrow_error)?;
        columns.push(Arc::new(Int64Array::from_iter_values(
            all.iter().map(|v| v.time),
        )));
        columns.push(Arc::new(BooleanArray::from_iter(
            all.iter().map(|v| Some(v.deleted)),
        )));
        RecordBatch::try_new(self.versions_schema(), columns).map_err(arrow_error)
    }

    fn versions_schema(&self) -> SchemaRef {
        let mut fields: Vec<_> = self.right_schema.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new("__time", DataType::Int64, false)));
        fields.push(Arc::new(Field::new("__deleted", DataType::Boolean, false)));
        Arc::new(Schema::new(fields))
    }

    /// The keys of checkpointed versions are the right keys over emitted columns: the
    /// primary key is among them, so it is found by name.
    fn restore_versions(&mut self, state: &RecordBatch) -> Result<()> {
        let n = self.right_schema.fields().len();
        let times = state
            .column(n)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let deleted = state.column(n + 1).as_boolean();
        let emitted =
            RecordBatch::try_new(self.right_schema.clone(), state.columns()[..n].to_vec())
                .map_err(arrow_error)?;
        let rows = self
            .rows
            .convert_columns(emitted.columns())
            .map_err(arrow_error)?;
        let key_columns = self.restored_key_columns(&emitted)?;
        let keys = self
            .keys
            .convert_columns(&key_columns)
            .map_err(arrow_error)?;
        for row in 0..state.num_rows() {
            let history = self.versions.entry_ref(keys.row(row).data()).or_default();
            let time = times.value(row);
            let at = history.partition_point(|v| v.time <= time);
            history.insert(
                at,
                Version {
                    time,
                    row: rows.row(row).owned(),
                    deleted: deleted.value(row),
                },
            );
        }
        self.version_count = state.num_rows();
        self.count_after_cleanup = state.num_rows();
        Ok(())
    }

    /// The right keys of emitted rows: each key column's position among the emitted ones.
    fn restored_key_columns(&self, emitted: &RecordBatch) -> Result<Vec<ArrayRef>> {
        self.right_key_columns
            .iter()
            .map(|key| {
                let column = key
                    .and_then(|k| self.right_columns.iter().position(|&i| i == k))
                    .ok_or_else(|| {
                        RuntimeError::Checkpoint(format!(
                            "{NAME}: a key of the versioned table is not among the joined columns"
                        ))
                    })?;
                Ok(emitted.column(column).clone())
            })
            .collect()
    }
}

impl StreamOperator for TemporalJoinOperator {
    fn name(&self) -> &str {
        NAME
    }

    fn state(&mut self) -> OperatorState<'_> {
        OperatorState::Checkpointed(self)
    }
}

impl CheckpointedState for TemporalJoinOperator {
    fn size(&self) -> usize {
        let waiting: usize = self
            .waiting
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum();
        let versions: usize = self
            .versions
            .iter()
            .map(|(key, history)| {
                key.len()
                    + 48
                    + history
                        .iter()
                        .map(|v| v.row.as_ref().len() + std::mem::size_of::<Version>())
                        .sum::<usize>()
            })
            .sum();
        waiting + versions
    }

    /// The waiting left rows and every version; the watermark joined through in the
    /// schema's metadata.
    fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        let waiting = concat_batches(&self.left_schema, &self.waiting).map_err(arrow_error)?;
        let versions = self.versions_batch()?;
        let state = two_sided_state(
            &self.left_schema,
            &[waiting],
            &versions.schema(),
            &[versions],
        )?;
        let mut metadata = std::collections::HashMap::new();
        if let Some(through) = self.joined_through {
            metadata.insert(JOINED_THROUGH.to_string(), through.to_string());
        }
        let schema = Arc::new(state.schema().as_ref().clone().with_metadata(metadata));
        state.with_schema(schema).map(Some).map_err(arrow_error)
    }

    fn restore(&mut self, state: RecordBatch) -> Result<()> {
        self.joined_through = state
            .schema()
            .metadata()
            .get(JOINED_THROUGH)
            .and_then(|v| v.parse().ok());
        let (waiting, versions) =
            split_two_sided(&state, &self.left_schema, &self.versions_schema())?;
        if waiting.num_rows() > 0 {
            self.waiting.push(waiting);
        }
        self.restore_versions(&versions)
    }
}

impl TwoInputOperator for TemporalJoinOperator {
    fn process_batch(
        &mut self,
        side: Side,
        batch: RecordBatch,
        watermarks: &InputWatermarks,
        out: &mut Collector,
    ) -> Result<()> {
        if side == Side::Right {
            return self.add_versions(&batch, watermarks.right);
        }
        let mut batch = batch;
        if let Some(through) = self.joined_through {
            let times = event_times(&batch, self.left_time, &self.left_time_name, NAME)?;
            let on_time: BooleanArray = times.values().iter().map(|&t| Some(t > through)).collect();
            let output = self.late_output.as_ref();
            if let Some(kept) = drop_late(&batch, &on_time, &self.metrics, output, out)? {
                batch = kept;
            }
        }
        if batch.num_rows() > 0 {
            self.waiting.push(batch);
        }
        Ok(())
    }

    /// Joins the left rows the watermark of both inputs passed, and forwards it.
    fn process_watermark(
        &mut self,
        _advanced: Side,
        watermarks: &InputWatermarks,
        out: &mut Collector,
    ) -> Result<Option<Watermark>> {
        let Some(watermark) = watermarks.min() else {
            return Ok(None);
        };
        if self
            .joined_through
            .is_some_and(|through| through >= watermark)
        {
            return Ok(Some(watermark));
        }
        let through = if watermark == WATERMARK_END {
            i64::MAX
        } else {
            watermark
        };
        self.join_through(through, out)?;
        self.joined_through = Some(watermark);
        if self.version_count > 2 * self.count_after_cleanup + 64 {
            self.clean_up(watermark);
        }
        Ok(Some(watermark))
    }
}
