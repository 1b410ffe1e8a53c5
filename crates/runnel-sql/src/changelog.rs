//! Updating streams: how a stream whose rows can be revised (an aggregate without a
//! window, an unwindowed Top-N) says what each row does to the result.
//!
//! An append-only stream's batches hold the query's columns. An updating stream's batches
//! hold one more column at the end, [`CHANGE_COLUMN`], with each row's [`ChangeKind`] —
//! Flink's `RowKind`: `+I` insert, `-U` the old value of an updated row, `+U` its new
//! value, `-D` delete. Applying the changes in order to an empty table gives the result.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

/// Name of the column an updating stream's batches carry last.
pub const CHANGE_COLUMN: &str = "__op";

/// What one row of an updating stream does to the result (Flink's `RowKind`, with the
/// same byte values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i8)]
pub enum ChangeKind {
    Insert = 0,
    UpdateBefore = 1,
    UpdateAfter = 2,
    Delete = 3,
}

impl ChangeKind {
    /// The kind a [`CHANGE_COLUMN`] value stands for; `None` for a value that is none.
    pub fn from_code(code: i8) -> Option<Self> {
        match code {
            0 => Some(ChangeKind::Insert),
            1 => Some(ChangeKind::UpdateBefore),
            2 => Some(ChangeKind::UpdateAfter),
            3 => Some(ChangeKind::Delete),
            _ => None,
        }
    }

    /// Flink's short form: `+I`, `-U`, `+U`, `-D`.
    pub fn short_string(self) -> &'static str {
        match self {
            ChangeKind::Insert => "+I",
            ChangeKind::UpdateBefore => "-U",
            ChangeKind::UpdateAfter => "+U",
            ChangeKind::Delete => "-D",
        }
    }

    /// Whether the row is added to the result (`+I`, `+U`) rather than taken out of it.
    pub fn is_addition(self) -> bool {
        matches!(self, ChangeKind::Insert | ChangeKind::UpdateAfter)
    }
}

/// The field of the change column.
pub fn change_field() -> Field {
    Field::new(CHANGE_COLUMN, DataType::Int8, false)
}

/// `schema` with the change column appended: the batches of an updating stream.
pub fn with_change_column(schema: &Schema) -> SchemaRef {
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(change_field()));
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Whether batches of `schema` are an updating stream's (their last column is the change
/// column).
pub fn is_changelog(schema: &Schema) -> bool {
    schema
        .fields()
        .last()
        .is_some_and(|f| f.name() == CHANGE_COLUMN && f.data_type() == &DataType::Int8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_kinds_round_trip_through_their_codes() {
        for kind in [
            ChangeKind::Insert,
            ChangeKind::UpdateBefore,
            ChangeKind::UpdateAfter,
            ChangeKind::Delete,
        ] {
            assert_eq!(ChangeKind::from_code(kind as i8), Some(kind));
        }
        assert_eq!(ChangeKind::from_code(7), None);
        let schema = Schema::new(vec![Field::new("a", DataType::Int64, true)]);
        assert!(!is_changelog(&schema));
        assert!(is_changelog(&with_change_column(&schema)));
    }
}
