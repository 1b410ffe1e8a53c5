//! A query's rows on the terminal, shown as `sql-client.execution.result-mode` says: the
//! current result redrawn in place, every change, or rows as they come.

use std::io::Write;
use std::time::Duration;

use runnel::arrow::record_batch::RecordBatch;

use crate::table_view::{ResultTable, TableView};

/// Prints lines to stdout at once.
pub fn print_lines(lines: &[String]) {
    let mut out = std::io::stdout().lock();
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
}

/// A query's rows on the terminal, as `sql-client.execution.result-mode` says.
pub enum LiveResult {
    /// The current result, redrawn in place; `drawn` lines are on the screen now.
    Table {
        table: ResultTable,
        drawn: usize,
        last_draw: Option<std::time::Instant>,
        terminal: bool,
    },
    /// Every change as Flink prints it (`+I[...]`, `-U[...]`, `+U[...]`); `rows` so far.
    Changelog { rows: usize },
    /// An aligned table growing as rows come; `rows` so far.
    Tableau { view: TableView, rows: usize },
}

impl LiveResult {
    /// Result rows shown at most in table mode (the newest).
    const TABLE_ROWS: usize = 40;
    /// Redraws of the table at most this often (and once at the end).
    const REDRAW_EVERY: Duration = Duration::from_millis(100);

    pub fn new(
        mode: runnel::settings::ResultMode,
        schema: &runnel::arrow::datatypes::SchemaRef,
    ) -> Self {
        use runnel::settings::ResultMode;
        match mode {
            ResultMode::Table => LiveResult::Table {
                table: ResultTable::new(schema),
                drawn: 0,
                last_draw: None,
                terminal: std::io::IsTerminal::is_terminal(&std::io::stdout()),
            },
            ResultMode::Changelog => LiveResult::Changelog { rows: 0 },
            ResultMode::Tableau => {
                let view = TableView::new(schema);
                print_lines(&view.header());
                LiveResult::Tableau { view, rows: 0 }
            }
        }
    }

    pub fn add(&mut self, batch: &RecordBatch) -> Result<(), String> {
        match self {
            LiveResult::Table {
                table, last_draw, ..
            } => {
                table.apply(batch).map_err(|e| e.to_string())?;
                if last_draw.is_none_or(|at| at.elapsed() >= Self::REDRAW_EVERY) {
                    self.draw();
                }
            }
            LiveResult::Changelog { rows } => {
                *rows += batch.num_rows();
                let lines =
                    runnel::connectors::print::format_rows(batch, "").map_err(|e| e.to_string())?;
                print_lines(&lines);
            }
            LiveResult::Tableau { view, rows } => {
                *rows += batch.num_rows();
                print_lines(&view.rows(batch).map_err(|e| e.to_string())?);
            }
        }
        Ok(())
    }

    /// Redraws the table over the one drawn before (on a terminal).
    fn draw(&mut self) {
        let LiveResult::Table {
            table,
            drawn,
            last_draw,
            terminal,
        } = self
        else {
            return;
        };
        *last_draw = Some(std::time::Instant::now());
        if !*terminal {
            return;
        }
        let lines = table.lines(Self::TABLE_ROWS);
        let mut out = std::io::stdout().lock();
        if *drawn > 0 {
            // Up to the first line drawn, and clear from there down.
            let _ = write!(out, "\x1b[{drawn}F\x1b[J");
        }
        for line in &lines {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
        *drawn = lines.len();
    }

    /// The last draw: the final table (printed once when the output is not a terminal).
    pub fn finish(&mut self) {
        if let LiveResult::Table {
            table,
            terminal: false,
            ..
        } = self
        {
            print_lines(&table.lines(usize::MAX));
            return;
        }
        self.draw();
    }

    /// Rows shown: the result's rows in table mode, else the rows and changes printed.
    pub fn rows(&self) -> usize {
        match self {
            LiveResult::Table { table, .. } => table.len(),
            LiveResult::Changelog { rows } | LiveResult::Tableau { rows, .. } => *rows,
        }
    }
}
