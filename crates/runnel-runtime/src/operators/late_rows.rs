//! [`LateRowsOutput`]: how a windowed operator sends the rows it drops as late to the
//! job's late-data side output, when the job routes them to a table
//! (`SET 'runnel.late-data.sink'`) instead of only counting them.

use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, ArrayRef, BooleanArray};
use datafusion::arrow::compute::{cast, filter_record_batch, not};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use runnel_sql::TableDef;

use crate::error::{Result, RuntimeError};
use crate::operator::Collector;

/// Picks the late-data sink's columns, by name, out of the rows a windowed operator drops
/// and emits them to the late-data side output ([`Collector::emit_late`]). Values are unchanged (cast only where the sink
/// declares another type, as an `INSERT` would).
#[derive(Debug, Clone)]
pub struct LateRowsOutput {
    /// Per sink column, the input column it comes from (`None`: NULL, for a join side
    /// that lacks it).
    columns: Vec<Option<usize>>,
    schema: SchemaRef,
}

/// A schema's column names, for messages.
fn names(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
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
                        names(input)
                    ))
                })
            })
            .map(|index| index.map(Some))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { columns, schema })
    }

    /// The outputs of a join's two sides. Each sink column must come from at least one
    /// side; a side without it writes NULL there (the column must then be nullable).
    pub fn for_join(
        sink: &TableDef,
        left: &SchemaRef,
        right: &SchemaRef,
        operator: &str,
    ) -> Result<(Self, Self)> {
        let schema = sink.physical_schema.clone();
        for field in schema.fields() {
            let found = [left, right]
                .iter()
                .filter(|side| side.index_of(field.name()).is_ok())
                .count();
            if found == 0 || (found == 1 && !field.is_nullable()) {
                return Err(RuntimeError::Build(format!(
                    "late-data sink {}: column '{}' must come from {} input of {operator} \
                     (left: {}; right: {})",
                    sink.name,
                    field.name(),
                    if found == 0 {
                        "an"
                    } else {
                        "both (it is NOT NULL)"
                    },
                    names(left),
                    names(right)
                )));
            }
        }
        let side = |input: &SchemaRef| Self {
            columns: schema
                .fields()
                .iter()
                .map(|f| input.index_of(f.name()).ok())
                .collect(),
            schema: schema.clone(),
        };
        Ok((side(left), side(right)))
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
        out: &mut Collector,
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
            .map(|(i, field)| match i {
                Some(i) => cast(rows.column(*i), field.data_type()),
                None => Ok(new_null_array(field.data_type(), rows.num_rows())),
            })
            .collect::<std::result::Result<Vec<ArrayRef>, _>>()
            .map_err(error)?;
        let late = RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(error)?;
        out.emit_late(late);
        Ok(())
    }
}

/// Drops the rows of `batch` that are not `on_time`: counts them as late and, when the
/// job routes late rows, emits them through `output`. Returns the on-time rows, or `None`
/// when no row was late (the batch stands as it is).
pub(crate) fn drop_late(
    batch: &RecordBatch,
    on_time: &BooleanArray,
    metrics: &crate::metrics::JobMetrics,
    output: Option<&LateRowsOutput>,
    out: &mut Collector,
) -> Result<Option<RecordBatch>> {
    let late = on_time.len() - on_time.true_count();
    if late == 0 {
        return Ok(None);
    }
    crate::metrics::JobMetrics::add(&metrics.late_rows, late);
    if let Some(output) = output {
        output.emit_late(batch, on_time, out)?;
    }
    let kept = filter_record_batch(batch, on_time).map_err(|e| RuntimeError::Operator {
        operator: "late rows".into(),
        source: e.into(),
    })?;
    Ok(Some(kept))
}
