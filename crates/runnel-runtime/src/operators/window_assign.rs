//! [`WindowAssignOperator`]: the runtime side of a windowing table function; appends
//! `window_start`, `window_end` and `window_time` to every row, repeating a row once per
//! window it belongs to (HOP, CUMULATE).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, TimestampMillisecondArray, UInt32Array};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMillisecondType};
use datafusion::arrow::record_batch::RecordBatch;
use runnel_sql::WindowKind;

use crate::error::{Result, RuntimeError};
use crate::message::Message;
use crate::operator::Operator;

/// Assigns rows to windows: tumbling windows with one vectorized kernel over the time
/// column; overlapping windows by computing, per row, its windows, then one `take` of
/// every column.
pub struct WindowAssignOperator {
    kind: WindowKind,
    time_column: usize,
    time_column_name: String,
    schema: SchemaRef,
}

impl WindowAssignOperator {
    pub fn new(
        kind: WindowKind,
        time_column: usize,
        input_schema: &SchemaRef,
        schema: SchemaRef,
    ) -> Self {
        Self {
            kind,
            time_column,
            time_column_name: input_schema.field(time_column).name().clone(),
            schema,
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

impl Operator for WindowAssignOperator {
    fn name(&self) -> &str {
        "WindowAssign"
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<Message>) -> Result<()> {
        let error = |source| RuntimeError::Operator {
            operator: "WindowAssign".into(),
            source,
        };
        let time = as_millis(batch.column(self.time_column)).map_err(error)?;
        if time.null_count() > 0 {
            return Err(error(datafusion::error::DataFusionError::Execution(
                format!(
                "the event-time column '{}' is NULL in {} row(s); windowed rows need an event time",
                self.time_column_name,
                time.null_count()
            ),
            )));
        }
        let tz = match self
            .schema
            .field(self.schema.fields().len() - 1)
            .data_type()
        {
            DataType::Timestamp(_, tz) => tz.clone(),
            _ => None,
        };
        let (mut columns, start, end) = if let WindowKind::Tumble { size_ms } = self.kind {
            let start: TimestampMillisecondArray = time.unary(|t| t - t.rem_euclid(size_ms));
            let end: TimestampMillisecondArray = start.unary(|s| s + size_ms);
            (batch.columns().to_vec(), start, end)
        } else {
            let mut rows: Vec<u32> = Vec::with_capacity(time.len() * 2);
            let mut starts: Vec<i64> = Vec::with_capacity(time.len() * 2);
            let mut ends: Vec<i64> = Vec::with_capacity(time.len() * 2);
            for (row, &t) in time.values().iter().enumerate() {
                self.kind.for_each_window(t, |s, e| {
                    rows.push(row as u32);
                    starts.push(s);
                    ends.push(e);
                });
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
        let window_time: TimestampMillisecondArray = end.unary(|e| e - 1);
        for array in [start, end, window_time] {
            columns.push(Arc::new(array.with_timezone_opt(tz.clone())) as ArrayRef);
        }
        let batch =
            RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| error(e.into()))?;
        out.push(Message::Batch(batch));
        Ok(())
    }
}
