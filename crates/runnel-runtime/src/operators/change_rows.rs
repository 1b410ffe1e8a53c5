//! [`ChangeRows`]: an updating stream's batches as keys and whole rows in Arrow's row
//! format, and back — for operators that keep rows per key (`ChangelogNormalize`,
//! `UpsertMaterialize`).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Int8Array};
use datafusion::arrow::datatypes::{Int8Type, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use runnel_sql::changelog::ChangeKind;

use crate::error::{Result, RuntimeError};

/// Encodes the batches of an updating stream (its columns, then the change column): each
/// row's key (the columns `keys`) and the whole row.
pub(crate) struct ChangeRows {
    /// The batches' schema, change column last.
    pub schema: SchemaRef,
    keys: Vec<usize>,
    key_converter: RowConverter,
    row_converter: RowConverter,
    /// The operator, for errors.
    operator: &'static str,
}

/// A batch of changes, encoded.
pub(crate) struct EncodedChanges {
    pub keys: Rows,
    pub rows: Rows,
    pub kinds: Vec<ChangeKind>,
}

impl ChangeRows {
    pub fn try_new(schema: SchemaRef, keys: &[usize], operator: &'static str) -> Result<Self> {
        let data_fields = &schema.fields()[..schema.fields().len() - 1];
        let sort_field = |i: usize| SortField::new(data_fields[i].data_type().clone());
        let error = |e: ArrowError| Self::error(operator, e);
        Ok(Self {
            key_converter: RowConverter::new(keys.iter().map(|&i| sort_field(i)).collect())
                .map_err(error)?,
            row_converter: RowConverter::new((0..data_fields.len()).map(sort_field).collect())
                .map_err(error)?,
            keys: keys.to_vec(),
            schema,
            operator,
        })
    }

    fn error(operator: &str, e: ArrowError) -> RuntimeError {
        RuntimeError::Operator {
            operator: operator.into(),
            source: e.into(),
        }
    }

    /// Each row's key, the row, and its change (an unknown code reads as `+I`).
    pub fn encode(&self, batch: &RecordBatch) -> Result<EncodedChanges> {
        let error = |e: ArrowError| Self::error(self.operator, e);
        let data = &batch.columns()[..batch.num_columns() - 1];
        let key_columns: Vec<ArrayRef> = self.keys.iter().map(|&i| data[i].clone()).collect();
        let kinds = batch
            .column(batch.num_columns() - 1)
            .as_primitive::<Int8Type>()
            .values()
            .iter()
            .map(|&code| ChangeKind::from_code(code).unwrap_or(ChangeKind::Insert))
            .collect();
        Ok(EncodedChanges {
            keys: self
                .key_converter
                .convert_columns(&key_columns)
                .map_err(error)?,
            rows: self.row_converter.convert_columns(data).map_err(error)?,
            kinds,
        })
    }

    /// Rows (in the row format) with their changes, as a batch.
    pub fn to_batch(&self, rows: &[OwnedRow], kinds: &[ChangeKind]) -> Result<RecordBatch> {
        let error = |e: ArrowError| Self::error(self.operator, e);
        let mut columns = self
            .row_converter
            .convert_rows(rows.iter().map(|r| r.row()))
            .map_err(error)?;
        columns.push(Arc::new(Int8Array::from_iter_values(
            kinds.iter().map(|&k| k as i8),
        )));
        RecordBatch::try_new(self.schema.clone(), columns).map_err(error)
    }
}
