//! Live query results as an aligned table (psql's layout): printed a batch at a time (a
//! header once, then rows as windows close; an updating query gets an `op` column with
//! each row's change, `+I`, `-U`, `+U`, `-D`), or kept as the query's current result
//! ([`ResultTable`]) and drawn whole.

use runnel::arrow::array::{Array, AsArray};
use runnel::arrow::datatypes::{DataType, Int8Type, SchemaRef};
use runnel::arrow::error::ArrowError;
use runnel::arrow::record_batch::RecordBatch;
use runnel::arrow::util::display::{ArrayFormatter, FormatOptions};
use runnel::sql::changelog::{is_changelog, ChangeKind};

/// One row: its change kind (if known) and its values as text.
type RowCells = (Option<ChangeKind>, Vec<String>);

/// Formats one query's rows under a header.
pub struct TableView {
    names: Vec<String>,
    right_aligned: Vec<bool>,
    widths: Vec<usize>,
    /// The query is updating: its last column holds change kinds.
    changes: bool,
    /// Lines start with the row's change kind.
    show_changes: bool,
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
    /// A view of every row as it comes, with its change kind when the query is updating.
    pub fn new(schema: &SchemaRef) -> Self {
        let mut view = Self::rows_only(schema);
        if view.changes {
            view.names.insert(0, "op".into());
            view.right_aligned.insert(0, false);
            view.widths.insert(0, 2);
            view.show_changes = true;
        }
        view
    }

    /// A view of the rows without their change kinds (a materialized result).
    fn rows_only(schema: &SchemaRef) -> Self {
        let changes = is_changelog(schema);
        let fields = schema.fields();
        let fields = if changes {
            &fields[..fields.len() - 1]
        } else {
            &fields[..]
        };
        Self {
            names: fields.iter().map(|f| f.name().clone()).collect(),
            right_aligned: fields.iter().map(|f| f.data_type().is_numeric()).collect(),
            widths: fields
                .iter()
                .map(|f| f.name().chars().count().max(type_width(f.data_type())))
                .collect(),
            changes,
            show_changes: false,
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
        let mut lines = Vec::with_capacity(batch.num_rows());
        for (kind, mut cells) in self.cells(batch)? {
            if self.show_changes {
                cells.insert(0, kind.map_or("?", |k| k.short_string()).to_string());
            }
            self.widen(&cells);
            lines.push(self.line(&cells));
        }
        Ok(lines)
    }

    fn widen(&mut self, cells: &[String]) {
        for (width, cell) in self.widths.iter_mut().zip(cells) {
            *width = (*width).max(cell.chars().count());
        }
    }

    /// Each row's change kind (`None` where the query is not updating or the kind is
    /// unknown) and its values as text.
    fn cells(&self, batch: &RecordBatch) -> Result<Vec<RowCells>, ArrowError> {
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
        (0..batch.num_rows())
            .map(|row| {
                let kind = kinds
                    .filter(|kinds| !kinds.is_null(row))
                    .and_then(|kinds| ChangeKind::from_code(kinds.value(row)));
                let cells = formatters
                    .iter()
                    .map(|f| f.value(row).try_to_string())
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((kind, cells))
            })
            .collect()
    }
}

/// A query's current result, as Flink's table result mode shows it: inserts add a row,
/// an update's old row (`-U`) and a delete take the matching row out. Drawn whole.
pub struct ResultTable {
    view: TableView,
    rows: Vec<Vec<String>>,
    /// Changes applied so far.
    pub changes: u64,
}

impl ResultTable {
    /// Rows an append-only result keeps (the oldest go first).
    const MAX_ROWS: usize = 100_000;

    pub fn new(schema: &SchemaRef) -> Self {
        Self {
            view: TableView::rows_only(schema),
            rows: Vec::new(),
            changes: 0,
        }
    }

    /// How many rows the result has now.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Applies a batch of rows or changes.
    pub fn apply(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        for (kind, cells) in self.view.cells(batch)? {
            self.changes += 1;
            if kind.is_some_and(|kind| !kind.is_addition()) {
                if let Some(at) = self.rows.iter().rposition(|row| *row == cells) {
                    self.rows.remove(at);
                }
            } else {
                if self.rows.len() == Self::MAX_ROWS {
                    self.rows.remove(0);
                }
                self.rows.push(cells);
            }
        }
        Ok(())
    }

    /// The header and the last `max_rows` rows (a line says how many more there are).
    pub fn lines(&mut self, max_rows: usize) -> Vec<String> {
        let shown = &self.rows[self.rows.len().saturating_sub(max_rows)..];
        for row in shown {
            self.view.widen(row);
        }
        let mut lines = self.view.header();
        if shown.len() < self.rows.len() {
            lines.push(format!("... {} rows above", self.rows.len() - shown.len()));
        }
        lines.extend(shown.iter().map(|row| self.view.line(row)));
        lines
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

    #[test]
    fn a_result_table_applies_updates_in_place() {
        use runnel::arrow::array::Int8Array;
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("n", DataType::Int64, true),
            runnel::sql::changelog::change_field(),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 1, 1])),
                Arc::new(Int64Array::from(vec![1, 1, 1, 2])),
                Arc::new(Int8Array::from(vec![
                    ChangeKind::Insert as i8,
                    ChangeKind::Insert as i8,
                    ChangeKind::UpdateBefore as i8,
                    ChangeKind::UpdateAfter as i8,
                ])),
            ],
        )
        .unwrap();
        let mut table = ResultTable::new(&schema);
        table.apply(&batch).unwrap();
        assert_eq!((table.len(), table.changes), (2, 4));
        let lines = table.lines(10);
        assert_eq!(lines[0].split('|').count(), 2, "no op column: {lines:?}");
        assert_eq!(
            lines[2..],
            ["      2 |      1", "      1 |      2"],
            "{lines:?}"
        );
        assert_eq!(table.lines(1)[2], "... 1 rows above");
    }
}
