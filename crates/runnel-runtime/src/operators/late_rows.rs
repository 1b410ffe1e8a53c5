//! [`LateRowsOutput`]: where a windowed operator sends the rows it drops as late, when the
//! job routes them to a table (`SET 'runnel.late-data.sink'`) instead of only counting them.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray};
use datafusion::arrow::compute::{cast, filter_record_batch, not};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use runnel_sql::TableDef;

use crate::error::{Result, RuntimeError};
use crate::message::Message;

/// Picks the late-data sink's columns, by name, out of the rows a windowed operator drops
/// and emits them as [`Message::Late`]. Values are unchanged (cast only where the sink
/// declares another type, as an `INSERT` would).
#[derive(Debug, Clone)]
pub struct LateRowsOutput {
    columns: Vec<usize>,
    schema: SchemaRef,
}

impl LateRowsOutput {
    /// Resolves `sink`'s columns in `input` (the operator's input rows). Fails, listing the
    /// available columns, if the sink asks for one the query does not read.
    pub fn try_new(sink: &TableDef, input: &SchemaRef, operator: &str) -> Result<Self> {
        let schema = sink.physical_schema.clone();
        let columns = schema
            .fields()
            .iter()
            .map(|field| {
                input.index_of(field.name()).map_err(|_| {
                    RuntimeError::Build(format!(
                        "late-data sink {}: column '{}' is not among the columns that reach {operator} ({}); \
                         the late-data sink may declare only those",
                        sink.name,
                        field.name(),
                        input
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { columns, schema })
    }

    /// The sink's schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Emits the rows of `batch` where `on_time` is false.
    pub fn emit_late(
        &self,
        batch: &RecordBatch,
        on_time: &BooleanArray,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        let error = |e: datafusion::arrow::error::ArrowError| RuntimeError::Operator {
            operator: "late-data sink".into(),
            source: e.into(),
        };
        let late = not(on_time).map_err(error)?;
        let rows = filter_record_batch(batch, &late).map_err(error)?;
        if rows.num_rows() == 0 {
            return Ok(());
        }
        let columns = self
            .columns
            .iter()
            .zip(self.schema.fields())
            .map(|(&i, field)| cast(rows.column(i), field.data_type()))
            .collect::<std::result::Result<Vec<ArrayRef>, _>>()
            .map_err(error)?;
        let late = RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(error)?;
        out.push(Message::Late(late));
        Ok(())
    }
}
