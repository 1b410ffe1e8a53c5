//! [`WindowAssignOperator`]: the runtime side of a windowing table function; appends
//! `window_start`, `window_end` and `window_time` to every row.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, TimestampMillisecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMillisecondType};
use datafusion::arrow::record_batch::RecordBatch;
use runnel_sql::WindowKind;

use crate::error::{Result, RuntimeError};
use crate::message::Message;
use crate::operator::Operator;

/// Assigns each row its tumbling window with vectorized arithmetic on the time column.
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
        let kind = self.kind;
        let size = kind.size_ms();
        let start: TimestampMillisecondArray = time.unary(|t| kind.window_start(t));
        let end: TimestampMillisecondArray = start.unary(|s| s + size);
        let window_time: TimestampMillisecondArray = end.unary(|e| e - 1);
        let mut columns = batch.columns().to_vec();
        for array in [start, end, window_time] {
            columns.push(Arc::new(array.with_timezone_opt(tz.clone())) as ArrayRef);
        }
        let batch =
            RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| error(e.into()))?;
        out.push(Message::Batch(batch));
        Ok(())
    }
}
