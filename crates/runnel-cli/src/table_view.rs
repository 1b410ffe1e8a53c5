//! Live query results as an aligned table (psql's layout), printed a batch at a time:
//! a header once, then rows as windows close. An updating query gets an `op` column
//! with each row's change (`+I`, `-U`, `+U`, `-D`).

use runnel::arrow::array::{Array, AsArray};
use runnel::arrow::datatypes::{DataType, Int8Type, SchemaRef};
use runnel::arrow::error::ArrowError;
use runnel::arrow::record_batch::RecordBatch;
use runnel::arrow::util::display::{ArrayFormatter, FormatOptions};
use runnel::sql::changelog::{is_changelog, ChangeKind};

/// Formats one query's rows under a header.
pub struct TableView {
    names: Vec<String>,
    right_aligned: Vec<bool>,
    widths: Vec<usize>,
    /// The query is updating: its last column holds change kinds.
    changes: bool,
}

/// A first guess of a column's width from its type, so early narrow values do not make
/// later rows ragged.
fn type_width(data_type: &DataType) -> usize {
    match data_type {
        DataType::Timestamp(_, _) => 23,
        DataType::Date32 | DataType::Date64 => 10,
        DataType::Float32 | DataType::Float64 | DataType::Decimal128(_, _) => 10,
        DataType::Int64 | DataType::UInt64 => 6,
        _ => 4,
    }
}

impl TableView {
    pub fn new(schema: &SchemaRef) -> Self {
        let changes = is_changelog(schema);
        let fields = schema.fields();
        let fields = if changes {
            &fields[..fields.len() - 1]
        } else {
            &fields[..]
        };
        let mut names: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
        let mut right_aligned: Vec<bool> =
            fields.iter().map(|f| f.data_type().is_numeric()).collect();
        let mut widths: Vec<usize> = fields
            .iter()
            .map(|f| f.name().chars().count().max(type_width(f.data_type())))
            .collect();
        if changes {
            names.insert(0, "op".into());
            right_aligned.insert(0, false);
            widths.insert(0, 2);
        }
        Self {
            names,
            right_aligned,
            widths,
            changes,
        }
    }

    fn line(&self, cells: &[String]) -> String {
        cells
            .iter()
            .zip(&self.widths)
            .zip(&self.right_aligned)
            .map(|((cell, &width), &right)| {
                if right {
                    format!(" {cell:>width$} ")
                } else {
                    format!(" {cell:<width$} ")
                }
            })
            .collect::<Vec<_>>()
            .join("|")
            .trim_end()
            .to_string()
    }

    /// The column names and the rule under them.
    pub fn header(&self) -> Vec<String> {
        let rule = self
            .widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+");
        vec![self.line(&self.names), rule]
    }

    /// One line per row of `batch`. Columns widen for longer values (later lines align to
    /// the new width).
    pub fn rows(&mut self, batch: &RecordBatch) -> Result<Vec<String>, ArrowError> {
        let options = FormatOptions::default()
            .with_null("NULL")
            .with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.3f"));
        let columns = batch.columns();
        let (values, kinds) = if self.changes {
            let (kinds, values) = columns
                .split_last()
                .ok_or_else(|| ArrowError::SchemaError("no change column".into()))?;
            (values, Some(kinds.as_primitive::<Int8Type>()))
        } else {
            (columns, None)
        };
        let formatters = values
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        let mut lines = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let mut cells = Vec::with_capacity(self.names.len());
            if let Some(kinds) = kinds {
                let kind = (!kinds.is_null(row))
                    .then(|| ChangeKind::from_code(kinds.value(row)))
                    .flatten();
                cells.push(kind.map_or("?", |k| k.short_string()).to_string());
            }
            for formatter in &formatters {
                cells.push(formatter.value(row).try_to_string()?);
            }
            for (width, cell) in self.widths.iter_mut().zip(&cells) {
                *width = (*width).max(cell.chars().count());
            }
            lines.push(self.line(&cells));
        }
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel::arrow::array::{Int64Array, StringArray};
    use runnel::arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    #[test]
    fn rows_line_up_under_the_header() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("policy_id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![Some(7), None])),
                Arc::new(StringArray::from(vec!["ab", "c"])),
            ],
        )
        .unwrap();
        let mut view = TableView::new(&schema);
        let mut lines = view.header();
        lines.extend(view.rows(&batch).unwrap());
        assert_eq!(
            lines,
            vec![
                " policy_id | name",
                "-----------+------",
                "         7 | ab",
                "      NULL | c",
            ]
        );
    }
}
