//! [`WindowAssignOperator`]: the runtime side of a windowing table function; appends
//! `window_start`, `window_end` and `window_time` to every row, repeating a row once per
//! window it belongs to (HOP, CUMULATE). It is the first windowed operator a row meets,
//! so it is where late rows are dropped and counted: a row is late when every window it
//! belongs to has ended at the current watermark (that window was already emitted).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, TimestampMillisecondArray, UInt32Array,
};
use datafusion::arrow::compute::kernels::cmp::gt;
use datafusion::arrow::compute::{cast, filter, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMillisecondType};
use datafusion::arrow::record_batch::RecordBatch;
use runnel_sql::WindowKind;

use crate::error::{Result, RuntimeError};
use crate::message::Watermark;
use crate::metrics::JobMetrics;
use crate::operator::{Collector, OneInputOperator, OperatorState, StreamOperator};
use crate::operators::LateRowsOutput;

/// Assigns rows to windows: tumbling windows with one vectorized kernel over the time
/// column; overlapping windows by computing, per row, its windows, then one `take` of
/// every column.
pub struct WindowAssignOperator {
    kind: WindowKind,
    time_column: usize,
    time_column_name: String,
    schema: SchemaRef,
    watermark: Option<Watermark>,
    metrics: Arc<JobMetrics>,
    late_output: Option<LateRowsOutput>,
    /// `HOP` rows go to their pane only (see [`runnel_sql::StreamNode::WindowAssign`]).
    panes: bool,
    /// `table.exec.emit.allow-lateness`: a row is late only once its windows ended this
    /// long before the watermark.
    allowed_lateness_ms: i64,
}

impl WindowAssignOperator {
    /// With `panes` (a `HOP` whose aggregate merges panes), each row goes to the pane of
    /// the slide it falls in, and is late only once the last window holding it ended.
    pub fn into_panes(mut self, panes: bool) -> Self {
        self.panes = panes && matches!(self.kind, WindowKind::Hop { .. });
        self
    }

    /// Lets rows through whose windows ended less than `lateness_ms` ago (their aggregate
    /// keeps fired windows that long).
    pub fn with_allowed_lateness(mut self, lateness_ms: i64) -> Self {
        self.allowed_lateness_ms = lateness_ms.max(0);
        self
    }

    pub fn new(
        kind: WindowKind,
        time_column: usize,
        input_schema: &SchemaRef,
        schema: SchemaRef,
        metrics: Arc<JobMetrics>,
        late_output: Option<LateRowsOutput>,
    ) -> Self {
        Self {
            kind,
            time_column,
            time_column_name: input_schema.field(time_column).name().clone(),
            schema,
            watermark: None,
            metrics,
            late_output,
            panes: false,
            allowed_lateness_ms: 0,
        }
    }
}

/// A timestamp column of any unit as milliseconds.
pub(crate) fn as_millis(array: &ArrayRef) -> datafusion::error::Result<TimestampMillisecondArray> {
    let tz = match array.data_type() {
        DataType::Timestamp(_, tz) => tz.clone(),
        other => {
            return datafusion::common::exec_err!("expected a timestamp column, found {other}");
        }
    };
    let millis = cast(array, &DataType::Timestamp(TimeUnit::Millisecond, tz))?;
    Ok(millis.as_primitive::<TimestampMillisecondType>().clone())
}

/// A batch of `schema` from the input `columns` plus `window_start`, `window_end` and
/// `window_time` (= end − 1 ms), typed like the schema's window columns. Over an updating
/// input the change column stays last.
pub(crate) fn with_window_columns(
    schema: &SchemaRef,
    mut columns: Vec<ArrayRef>,
    start: TimestampMillisecondArray,
    end: TimestampMillisecondArray,
) -> std::result::Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    let changes = runnel_sql::changelog::is_changelog(schema)
        .then(|| columns.pop())
        .flatten();
    let window_time_field = schema.fields().len() - 1 - usize::from(changes.is_some());
    let tz = match schema.field(window_time_field).data_type() {
        DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    };
    let window_time: TimestampMillisecondArray = end.unary(|e| e - 1);
    for array in [start, end, window_time] {
        columns.push(Arc::new(array.with_timezone_opt(tz.clone())) as ArrayRef);
    }
    columns.extend(changes);
    RecordBatch::try_new(schema.clone(), columns)
}

/// A copy of `batch` in buffers of its own. Operators that hold rows for a while store
/// copies: the arrays they receive may be slices of much larger buffers (a field taken
/// out of a wide struct, a filtered batch), which holding would keep whole.
pub(crate) fn compacted(batch: &RecordBatch) -> datafusion::error::Result<RecordBatch> {
    let all = UInt32Array::from_iter_values(0..batch.num_rows() as u32);
    Ok(datafusion::arrow::compute::take_record_batch(batch, &all)?)
}

/// The event times of `batch` (column `column`, named `name`) in milliseconds; a NULL
/// event time is an error naming the column.
pub(crate) fn event_times(
    batch: &RecordBatch,
    column: usize,
    name: &str,
    operator: &str,
) -> Result<TimestampMillisecondArray> {
    let error = |source| RuntimeError::Operator {
        operator: operator.into(),
        source,
    };
    let time = as_millis(batch.column(column)).map_err(error)?;
    if time.null_count() > 0 {
        return Err(error(datafusion::error::DataFusionError::Execution(
            format!(
                "the event-time column '{name}' is NULL in {} row(s); windowed rows need an event time",
                time.null_count()
            ),
        )));
    }
    Ok(time)
}

impl StreamOperator for WindowAssignOperator {
    fn name(&self) -> &str {
        "WindowAssign"
    }

    fn state(&mut self) -> OperatorState<'_> {
        OperatorState::Stateless
    }
}

impl OneInputOperator for WindowAssignOperator {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        let error = |source| RuntimeError::Operator {
            operator: "WindowAssign".into(),
            source,
        };
        let time = event_times(
            &batch,
            self.time_column,
            &self.time_column_name,
            "WindowAssign",
        )?;
        let watermark = self
            .watermark
            .unwrap_or(Watermark::MIN)
            .saturating_sub(self.allowed_lateness_ms);
        // One window (or pane) per row: its bounds with one kernel each; a row is late
        // once its window's end, plus what later windows holding its pane still need,
        // is at or below the watermark.
        let single = match self.kind {
            WindowKind::Tumble { size_ms } => Some((size_ms, 0)),
            WindowKind::Hop { slide_ms, size_ms } if self.panes => {
                Some((slide_ms, size_ms - slide_ms))
            }
            _ => None,
        };
        let (mut columns, mut start, mut end) = if let Some((size_ms, _)) = single {
            let start: TimestampMillisecondArray = time.unary(|t| t - t.rem_euclid(size_ms));
            let end: TimestampMillisecondArray = start.unary(|s| s + size_ms);
            (batch.columns().to_vec(), start, end)
        } else {
            let mut rows: Vec<u32> = Vec::with_capacity(time.len() * 2);
            let mut starts: Vec<i64> = Vec::with_capacity(time.len() * 2);
            let mut ends: Vec<i64> = Vec::with_capacity(time.len() * 2);
            let mut late = 0;
            let mut on_time = Vec::with_capacity(time.len());
            for (row, &t) in time.values().iter().enumerate() {
                let before = rows.len();
                self.kind.for_each_window(t, |s, e| {
                    // Windows already emitted are skipped; the row counts as late only
                    // if that leaves it in none.
                    if e > watermark {
                        rows.push(row as u32);
                        starts.push(s);
                        ends.push(e);
                    }
                });
                late += usize::from(rows.len() == before);
                on_time.push(rows.len() > before);
            }
            JobMetrics::add(&self.metrics.late_rows, late);
            if let Some(output) = self.late_output.as_ref().filter(|_| late > 0) {
                output.emit_late(&batch, &BooleanArray::from(on_time), out)?;
            }
            let rows = UInt32Array::from(rows);
            let columns = batch
                .columns()
                .iter()
                .map(|c| take(c, &rows, None))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| error(e.into()))?;
            (
                columns,
                TimestampMillisecondArray::from(starts),
                TimestampMillisecondArray::from(ends),
            )
        };
        if let (Some((_, reach)), Some(_)) = (single, self.watermark) {
            let ends: Int64Array = end.reinterpret_cast();
            let on_time = gt(
                &ends,
                &Int64Array::new_scalar(watermark.saturating_sub(reach)),
            )
            .map_err(|e| error(e.into()))?;
            let late = on_time.len() - on_time.true_count();
            if late > 0 {
                JobMetrics::add(&self.metrics.late_rows, late);
                if let Some(output) = &self.late_output {
                    output.emit_late(&batch, &on_time, out)?;
                }
                let keep = |a: &ArrayRef| filter(a, &on_time);
                columns = columns
                    .iter()
                    .map(keep)
                    .collect::<Result<_, _>>()
                    .map_err(|e| error(e.into()))?;
                start = filter(&start, &on_time)
                    .map_err(|e| error(e.into()))?
                    .as_primitive()
                    .clone();
                end = filter(&end, &on_time)
                    .map_err(|e| error(e.into()))?
                    .as_primitive()
                    .clone();
            }
        }
        if end.is_empty() {
            return Ok(());
        }
        let batch =
            with_window_columns(&self.schema, columns, start, end).map_err(|e| error(e.into()))?;
        out.emit(batch);
        Ok(())
    }

    fn process_watermark(
        &mut self,
        watermark: Watermark,
        _out: &mut Collector,
    ) -> Result<Option<Watermark>> {
        if self.watermark.is_none_or(|w| watermark > w) {
            self.watermark = Some(watermark);
        }
        Ok(Some(watermark))
    }
}
