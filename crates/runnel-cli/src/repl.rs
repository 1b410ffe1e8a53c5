//! The interactive shell (`runnel` without arguments): statements end with `;` and may
//! span lines; a bare `SELECT` shows its current result as a table redrawn in place (or
//! its changes, or its rows as they come: `sql-client.execution.result-mode`) until Ctrl-C;
//! `INSERT INTO` starts a background job. History lives in `~/.runnel_history`; Tab
//! completes keywords, tables, columns and connector options.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use runnel::arrow::array::{ArrayRef, StringArray};
use runnel::arrow::datatypes::{DataType, Field, Schema};
use runnel::arrow::record_batch::RecordBatch;
use runnel::{Engine, Executed, JobHandle};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Editor, Helper};
use tokio::runtime::Runtime;

use crate::describe;
use crate::table_view::{ResultTable, TableView};

const HELP: &str = "\
Statements end with ';' and may span lines. Tab completes keywords, tables, columns and options.

  CREATE TABLE t (...) WITH (...);   declare a table (connectors: datagen, nexmark, filesystem,
                                     kafka, memory, print, blackhole; see docs/sql-reference.md)
  CREATE VIEW v AS SELECT ...;       declare a view
  SELECT ...;                        show the query's result here, updated as it changes; Ctrl-C
                                     stops it ('sql-client.execution.result-mode': 'table',
                                     'changelog' for every change, 'tableau' for rows as they come)
  INSERT INTO t SELECT ...;          start a background job
  SHOW TABLES;  DESCRIBE t;          what is declared
  SHOW JOBS;    STOP JOB n;          background jobs (STOP takes a final checkpoint if it checkpoints)
  EXPLAIN SELECT ...;                the streaming plan
  SET 'key' = 'value';   SET;        job settings (e.g. 'execution.checkpointing.interval')
  \\i file.sql                        run a file's statements
  \\q  (or Ctrl-D)                    quit
";

const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP BY",
    "HAVING",
    "ORDER BY",
    "INSERT INTO",
    "CREATE TABLE",
    "CREATE VIEW",
    "WITH",
    "WATERMARK FOR",
    "AS",
    "INTERVAL",
    "SECOND",
    "SECONDS",
    "MINUTE",
    "MINUTES",
    "HOUR",
    "TABLE",
    "DESCRIPTOR",
    "TUMBLE",
    "HOP",
    "CUMULATE",
    "SESSION",
    "OVER",
    "PARTITION BY",
    "RANGE BETWEEN",
    "ROWS BETWEEN",
    "PRECEDING",
    "CURRENT ROW",
    "JOIN",
    "LEFT JOIN",
    "ON",
    "UNION ALL",
    "COUNT",
    "SUM",
    "AVG",
    "MIN",
    "MAX",
    "ROW_NUMBER",
    "window_start",
    "window_end",
    "window_time",
    "PROCTIME()",
    "TIMESTAMP(3)",
    "BIGINT",
    "INT",
    "STRING",
    "DOUBLE",
    "DECIMAL",
    "BOOLEAN",
    "SHOW TABLES",
    "SHOW JOBS",
    "DESCRIBE",
    "EXPLAIN",
    "STOP JOB",
    "SET",
];

const OPTIONS: &[&str] = &[
    "connector",
    "format",
    "topic",
    "properties.bootstrap.servers",
    "properties.group.id",
    "scan.startup.mode",
    "path",
    "rows-per-second",
    "number-of-rows",
    "fields.",
    "kind",
    "random",
    "sequence",
    "datagen",
    "nexmark",
    "filesystem",
    "kafka",
    "memory",
    "print",
    "blackhole",
    "json",
    "csv",
    "debezium-json",
    "earliest-offset",
    "latest-offset",
    "group-offsets",
    "sink.delivery-guarantee",
    "exactly-once",
    "at-least-once",
    "sink.transactional-id-prefix",
    "scan.watermark.idle-timeout",
    "scan.watermark.alignment.group",
    "scan.watermark.alignment.max-drift",
    "events.num",
    "first-event.rate",
    "execution.checkpointing.interval",
    "state.checkpoints.dir",
    "table.exec.state.ttl",
    "table.exec.source.idle-timeout",
    "json.ignore-parse-errors",
];

/// Line editing: completion and the "statement not finished yet" rule.
struct ReplHelper {
    engine: Arc<Engine>,
}

/// Whether `text` is a whole input: statements end with `;`; shell commands (`\q`,
/// `\i f`, `help`, `quit`, `exit`) need none.
fn is_complete(text: &str) -> bool {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.starts_with('\\') {
        return true;
    }
    if ["help", "quit", "exit"].contains(&trimmed.to_ascii_lowercase().as_str()) {
        return true;
    }
    // The last line may end with a `--` comment after the `;`.
    let code: String = trimmed
        .lines()
        .map(|line| strip_comment(line).trim_end())
        .collect::<Vec<_>>()
        .join("\n");
    code.trim_end().ends_with(';') && split_statements(&code).1.trim().is_empty()
}

/// A line without its `--` comment (outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match (quote, b) {
            (None, b'\'' | b'"' | b'`') => quote = Some(b),
            (Some(q), _) if q == b => quote = None,
            (None, b'-') if bytes.get(i + 1) == Some(&b'-') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// Splits text into `;`-terminated statements (outside quotes and parentheses); returns
/// them and what remains after the last `;`.
fn split_statements(text: &str) -> (Vec<String>, String) {
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut quote = None;
    let mut depth = 0i32;
    for line in text.lines() {
        for c in strip_comment(line).chars() {
            match (quote, c) {
                (None, '\'' | '"' | '`') => quote = Some(c),
                (Some(q), _) if q == c => quote = None,
                (None, '(') => depth += 1,
                (None, ')') => depth -= 1,
                (None, ';') if depth <= 0 => {
                    statements.push(std::mem::take(&mut current).trim().to_string());
                    continue;
                }
                _ => {}
            }
            current.push(c);
        }
        current.push('\n');
    }
    statements.retain(|s| !s.is_empty());
    (statements, current)
}

impl Validator for ReplHelper {
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        Ok(if is_complete(ctx.input()) {
            ValidationResult::Valid(None)
        } else {
            ValidationResult::Incomplete
        })
    }
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start = line[..pos]
            .rfind(|c: char| !(c.is_alphanumeric() || "_.-'".contains(c)))
            .map_or(0, |i| i + 1);
        let word = &line[start..pos];
        let mut candidates: Vec<String> = Vec::new();
        if let Some(option) = word.strip_prefix('\'') {
            candidates.extend(
                OPTIONS
                    .iter()
                    .filter(|o| o.starts_with(option))
                    .map(|o| format!("'{o}'")),
            );
        } else if !word.is_empty() {
            let upper = word.to_ascii_uppercase();
            candidates.extend(
                KEYWORDS
                    .iter()
                    .filter(|k| k.to_ascii_uppercase().starts_with(&upper))
                    .map(|k| k.to_string()),
            );
            for table in self.engine.tables() {
                if table.starts_with(word) {
                    candidates.push(table.clone());
                }
                if let Some(schema) = self.engine.schema_of(&table) {
                    candidates.extend(
                        schema
                            .fields()
                            .iter()
                            .map(|f| f.name())
                            .filter(|name| name.starts_with(word) && !name.starts_with("__"))
                            .cloned(),
                    );
                }
            }
        }
        candidates.sort();
        candidates.dedup();
        Ok((
            start,
            candidates
                .into_iter()
                .map(|c| Pair {
                    display: c.clone(),
                    replacement: c,
                })
                .collect(),
        ))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;
}

impl Highlighter for ReplHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        _default: bool,
    ) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }
}

impl Helper for ReplHelper {}

/// A job the shell started, and how it ended.
enum JobState {
    Running(JobHandle),
    Finished,
    Failed(String),
    Stopped,
}

/// The shell's session: the engine, and the jobs it started by id.
struct Session<'a> {
    engine: Arc<Engine>,
    runtime: &'a Runtime,
    jobs: BTreeMap<u64, JobState>,
}

/// What to do after an input.
enum Flow {
    Continue,
    Quit,
}

fn print_lines(lines: &[String]) {
    let mut out = std::io::stdout().lock();
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
}

/// Prints string rows as an aligned table.
fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    let schema = Arc::new(Schema::new(
        headers
            .iter()
            .map(|h| Field::new(*h, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let columns: Vec<ArrayRef> = (0..headers.len())
        .map(|i| {
            Arc::new(StringArray::from(
                rows.iter().map(|r| r[i].clone()).collect::<Vec<_>>(),
            )) as ArrayRef
        })
        .collect();
    let mut view = TableView::new(&schema);
    // Formatted twice: the first pass widens the columns to the widest value.
    let lines = RecordBatch::try_new(schema, columns)
        .map_err(|e| e.to_string())
        .and_then(|batch| {
            view.rows(&batch).map_err(|e| e.to_string())?;
            view.rows(&batch).map_err(|e| e.to_string())
        });
    match lines {
        Ok(lines) => {
            print_lines(&view.header());
            print_lines(&lines);
        }
        Err(e) => eprintln!("error: {e}"),
    }
}

/// A query's rows on the terminal, as `sql-client.execution.result-mode` says.
enum LiveResult {
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

    fn new(
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

    fn add(&mut self, batch: &RecordBatch) -> Result<(), String> {
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
    fn finish(&mut self) {
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
    fn rows(&self) -> usize {
        match self {
            LiveResult::Table { table, .. } => table.len(),
            LiveResult::Changelog { rows } | LiveResult::Tableau { rows, .. } => *rows,
        }
    }
}

impl Session<'_> {
    /// Runs one input: its statements and shell commands in order; stops at an error.
    fn handle(&mut self, input: &str) -> Flow {
        let trimmed = input.trim();
        let lower = trimmed.trim_end_matches(';').trim().to_ascii_lowercase();
        if lower == "\\q" || lower == "quit" || lower == "exit" {
            return Flow::Quit;
        }
        if lower == "help" || lower == "\\?" || lower == "\\h" {
            print!("{HELP}");
            return Flow::Continue;
        }
        if let Some(file) = trimmed.strip_prefix("\\i") {
            let file = file.trim().trim_end_matches(';');
            match std::fs::read_to_string(file) {
                Ok(text) => return self.handle(&text),
                Err(e) => {
                    eprintln!("error: cannot read {file}: {e}");
                    return Flow::Continue;
                }
            }
        }
        if trimmed.starts_with('\\') {
            eprintln!("error: unknown command {trimmed} (type help)");
            return Flow::Continue;
        }
        let (statements, rest) = split_statements(input);
        for statement in statements
            .iter()
            .map(String::as_str)
            .chain(Some(rest.trim()).filter(|r| !r.is_empty()))
        {
            if let Err(message) = self.statement(statement) {
                eprintln!("error: {message}");
                break;
            }
        }
        Flow::Continue
    }

    fn statement(&mut self, sql: &str) -> Result<(), String> {
        let words: Vec<String> = sql
            .split_whitespace()
            .map(|w| w.to_ascii_uppercase())
            .collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["SHOW", "TABLES"] => self.show_tables(),
            ["SHOW", "JOBS"] => self.show_jobs(),
            ["DESCRIBE" | "DESC", _] => self.describe(sql.split_whitespace().nth(1).unwrap_or("")),
            ["STOP", "JOB", id] => self.stop_job(id),
            ["SET"] => {
                let rows = self
                    .engine
                    .settings()
                    .into_iter()
                    .map(|(k, v)| vec![k, v])
                    .collect();
                print_table(&["key", "value"], rows);
                Ok(())
            }
            _ => self.execute(sql),
        }
    }

    fn execute(&mut self, sql: &str) -> Result<(), String> {
        let results = self
            .runtime
            .block_on(self.engine.execute(&format!("{sql};")))
            .map_err(|e| describe(&e))?;
        for result in results {
            match result {
                Executed::Created(name) => println!("created {name}"),
                Executed::Explained(plan) => print!("{plan}"),
                Executed::Set {
                    key,
                    value,
                    warning,
                } => {
                    println!("set '{key}' = '{value}'");
                    if let Some(warning) = warning {
                        eprintln!("warning: {warning}");
                    }
                }
                Executed::Job(job) => {
                    let id = self.engine.jobs().last().map_or(0, |j| j.id);
                    self.jobs.insert(id, JobState::Running(job));
                    println!("job {id} started (SHOW JOBS lists it; STOP JOB {id} stops it)");
                }
                Executed::Query(stream) => {
                    let id = self.engine.jobs().last().map_or(0, |j| j.id);
                    let state = self.stream_query(stream);
                    self.jobs.insert(id, state);
                }
            }
        }
        Ok(())
    }

    /// Shows a query's rows as they come (in the session's result mode) until it ends
    /// or Ctrl-C stops it.
    fn stream_query(&self, mut stream: runnel::QueryStream) -> JobState {
        let mode = self
            .engine
            .setting(runnel::settings::RESULT_MODE)
            .and_then(|value| runnel::settings::ResultMode::parse(&value))
            .unwrap_or_default();
        let mut shown = LiveResult::new(mode, &stream.schema());
        let outcome = self.runtime.block_on(async {
            let interrupt = tokio::signal::ctrl_c();
            tokio::pin!(interrupt);
            loop {
                tokio::select! {
                    batch = stream.next() => match batch {
                        Some(Ok(batch)) => shown.add(&batch)?,
                        Some(Err(e)) => return Err(e.to_string()),
                        None => return Ok(false),
                    },
                    _ = &mut interrupt => return Ok(true),
                }
            }
        });
        shown.finish();
        let rows = shown.rows();
        match outcome {
            Ok(true) => {
                drop(stream); // stops the query's job
                println!("\nquery stopped ({rows} rows)");
                JobState::Stopped
            }
            Ok(false) => match self.runtime.block_on(stream.finish()) {
                Ok(_) => {
                    println!("({rows} rows)");
                    JobState::Finished
                }
                Err(e) => {
                    let message = describe(&e);
                    eprintln!("error: {message}");
                    JobState::Failed(message)
                }
            },
            Err(message) => {
                eprintln!("error: {message}");
                JobState::Failed(message)
            }
        }
    }

    fn show_tables(&self) -> Result<(), String> {
        let rows = self
            .engine
            .tables()
            .into_iter()
            .map(|name| {
                let kind = match self.engine.table(&name) {
                    Some(table) => table.connector().unwrap_or("?").to_string(),
                    None => "view".to_string(),
                };
                vec![name, kind]
            })
            .collect();
        print_table(&["name", "connector"], rows);
        Ok(())
    }

    fn describe(&self, name: &str) -> Result<(), String> {
        let name = name.trim_end_matches(';');
        let schema = self
            .engine
            .schema_of(name)
            .ok_or_else(|| format!("no table or view named {name} (SHOW TABLES lists them)"))?;
        let table = self.engine.table(name);
        let watermark = table.as_ref().and_then(|t| t.watermark.clone());
        let rows = schema
            .fields()
            .iter()
            .map(|f| {
                let note = match &watermark {
                    Some(w) if &w.column == f.name() => format!("WATERMARK AS {}", w.expr_sql()),
                    _ => String::new(),
                };
                vec![
                    f.name().clone(),
                    runnel::sql::catalog::sql_type_name(f.data_type()),
                    if f.is_nullable() { "YES" } else { "NO" }.to_string(),
                    note,
                ]
            })
            .collect();
        print_table(&["column", "type", "nullable", "event time"], rows);
        if let Some(table) = table {
            let options: Vec<String> = table
                .options
                .iter()
                .map(|(k, v)| format!("'{k}' = '{v}'"))
                .collect();
            println!("WITH ({})", options.join(", "));
        }
        Ok(())
    }

    fn show_jobs(&mut self) -> Result<(), String> {
        self.reap();
        let rows = self
            .engine
            .jobs()
            .into_iter()
            .map(|job| {
                let metrics = job.metrics.snapshot();
                let status = match self.jobs.get(&job.id) {
                    Some(JobState::Running(_)) => "running".to_string(),
                    Some(JobState::Finished) => "finished".to_string(),
                    Some(JobState::Stopped) => "stopped".to_string(),
                    Some(JobState::Failed(e)) => {
                        format!("failed: {}", e.lines().next().unwrap_or(""))
                    }
                    None => "?".to_string(),
                };
                let statement: String = job.statement.chars().take(60).collect();
                vec![
                    job.id.to_string(),
                    status,
                    crate::status::grouped(metrics.rows_in),
                    crate::status::grouped(metrics.rows_out),
                    crate::status::watermark(metrics.watermark),
                    metrics
                        .tasks_owned
                        .map_or_else(|| "-".to_string(), |t| t.to_string()),
                    statement,
                ]
            })
            .collect();
        print_table(
            &[
                "id",
                "status",
                "rows in",
                "rows out",
                "watermark",
                "tasks here",
                "statement",
            ],
            rows,
        );
        Ok(())
    }

    fn stop_job(&mut self, id: &str) -> Result<(), String> {
        let id: u64 = id
            .trim_end_matches(';')
            .parse()
            .map_err(|_| format!("STOP JOB needs a job id (SHOW JOBS lists them), not {id}"))?;
        match self.jobs.remove(&id) {
            Some(JobState::Running(job)) => {
                let outcome = self.runtime.block_on(job.stop(Duration::from_secs(60)));
                self.jobs.insert(id, JobState::Stopped);
                outcome.map_err(|e| describe(&e))?;
                println!("job {id} stopped");
                Ok(())
            }
            Some(other) => {
                self.jobs.insert(id, other);
                Err(format!("job {id} is not running"))
            }
            None => Err(format!("no job {id} (SHOW JOBS lists them)")),
        }
    }

    /// Notes background jobs that ended since the last prompt, and says so.
    fn reap(&mut self) {
        let ended: Vec<u64> = self
            .jobs
            .iter()
            .filter_map(|(id, state)| match state {
                JobState::Running(job) if job.is_finished() => Some(*id),
                _ => None,
            })
            .collect();
        for id in ended {
            if let Some(JobState::Running(mut job)) = self.jobs.remove(&id) {
                let state = match self.runtime.block_on(job.wait_ref()) {
                    Ok(metrics) => {
                        println!(
                            "job {id} finished: {} rows in, {} rows out",
                            metrics.rows_in, metrics.rows_out
                        );
                        JobState::Finished
                    }
                    Err(e) => {
                        let message = describe(&e);
                        eprintln!("job {id} failed: {message}");
                        JobState::Failed(message)
                    }
                };
                self.jobs.insert(id, state);
            }
        }
    }
}

fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".runnel_history"))
}

/// Runs the shell until `\q` or end of input.
pub fn run(runtime: &Runtime) -> Result<(), String> {
    let engine = Arc::new(Engine::default());
    let mut editor: Editor<ReplHelper, rustyline::history::DefaultHistory> =
        Editor::new().map_err(|e| format!("cannot start the line editor: {e}"))?;
    editor.set_helper(Some(ReplHelper {
        engine: engine.clone(),
    }));
    let history = history_path();
    if let Some(path) = &history {
        let _ = editor.load_history(path); // none yet on a first run
    }
    println!(
        "Runnel {} — streaming SQL. Statements end with ';'. Type help for commands, \\q to quit.",
        env!("CARGO_PKG_VERSION")
    );
    let mut session = Session {
        engine,
        runtime,
        jobs: BTreeMap::new(),
    };
    loop {
        session.reap();
        match editor.readline("runnel> ") {
            Ok(input) => {
                if input.trim().is_empty() {
                    continue;
                }
                let _ = editor.add_history_entry(input.as_str());
                if let Some(path) = &history {
                    let _ = editor.save_history(path);
                }
                if let Flow::Quit = session.handle(&input) {
                    break;
                }
            }
            // Ctrl-C at the prompt clears the line, as in psql.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(format!("reading input: {e}")),
        }
    }
    // Background jobs end with the shell; those that checkpoint take a final checkpoint.
    for (id, state) in std::mem::take(&mut session.jobs) {
        if let JobState::Running(job) = state {
            if let Err(e) = runtime.block_on(job.stop(Duration::from_secs(60))) {
                eprintln!("job {id}: {}", describe(&e));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_end_at_top_level_semicolons() {
        assert!(is_complete("SELECT 1;"));
        assert!(!is_complete("SELECT 1"));
        assert!(!is_complete("CREATE TABLE t (a INT) WITH ('x' = ';'"));
        assert!(is_complete("SELECT ';' ; -- done"));
        assert!(is_complete("\\q"));
        assert!(is_complete("help"));
        let (statements, rest) = split_statements("SET 'a' = 'b;c';\nSHOW TABLES; SELECT (1;");
        assert_eq!(statements, vec!["SET 'a' = 'b;c'", "SHOW TABLES"]);
        assert_eq!(rest.trim(), "SELECT (1;");
    }
}
