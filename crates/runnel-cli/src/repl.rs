//! The interactive shell (`runnel` without arguments): statements end with `;` and may
//! span lines; a bare `SELECT` shows its current result as a table redrawn in place (or
//! its changes, or its rows as they come: `sql-client.execution.result-mode`) until Ctrl-C;
//! `INSERT INTO` starts a background job. History lives in `~/.runnel_history`; Tab
//! completes keywords, tables, columns and connector options.

use std::borrow::Cow;
use std::collections::BTreeMap;
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
use crate::live_result::{print_lines, LiveResult};
use crate::remote::RemoteServer;
use crate::table_view::TableView;

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
  SHOW TRANSACTIONS;                 Kafka transactions open on the declared tables' clusters
  ABORT TRANSACTION 'id';            end one left open by a producer that is gone
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
    "SHOW TRANSACTIONS",
    "ABORT TRANSACTION",
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
    /// `runnel --server URL`: queries run there; declarations are kept here too (for
    /// `DESCRIBE` and completion) and sent in front of each query.
    remote: Option<RemoteServer>,
    /// The declarations so far, as a script (for the server).
    declarations: String,
}

/// What to do after an input.
enum Flow {
    Continue,
    Quit,
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
            ["SHOW", "JOBS"] if self.remote.is_some() => self.show_remote_jobs(),
            ["SHOW", "JOBS"] => self.show_jobs(),
            ["STOP", "JOB", id] if self.remote.is_some() => self.stop_remote_job(id),
            ["DESCRIBE" | "DESC", _] => self.describe(sql.split_whitespace().nth(1).unwrap_or("")),
            ["STOP", "JOB", id] => self.stop_job(id),
            ["SHOW", "TRANSACTIONS"] => self.show_transactions(),
            ["ABORT", "TRANSACTION", _] => {
                let id = sql.split_whitespace().nth(2).unwrap_or("");
                self.abort_transaction(id.trim_end_matches(';').trim_matches(['\'', '"']))
            }
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
        if self.remote.is_some() {
            let statements = runnel::sql::parse_script(sql).map_err(|e| e.to_string())?;
            use runnel::sql::Statement;
            match statements.as_slice() {
                [Statement::Insert { .. }] => return self.submit_remote(sql),
                [Statement::Query(_)] => return self.follow_remote(sql),
                [Statement::Explain(_)] | [] => {}
                _ => {
                    self.execute_here(sql)?;
                    self.declarations.push_str(&format!("{sql};\n"));
                    return Ok(());
                }
            }
        }
        self.execute_here(sql)
    }

    /// Runs a statement in this process.
    fn execute_here(&mut self, sql: &str) -> Result<(), String> {
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

    /// The result mode the session's settings ask for.
    fn result_mode(&self) -> runnel::settings::ResultMode {
        self.engine
            .setting(runnel::settings::RESULT_MODE)
            .and_then(|value| runnel::settings::ResultMode::parse(&value))
            .unwrap_or_default()
    }

    /// Shows the batches of `rows` as they come until they end or Ctrl-C: whether Ctrl-C
    /// stopped them (or the error that did), and how many rows were shown.
    fn show_live(
        &self,
        schema: &runnel::arrow::datatypes::SchemaRef,
        rows: impl futures::Stream<Item = Result<RecordBatch, String>>,
    ) -> (Result<bool, String>, usize) {
        let mut shown = LiveResult::new(self.result_mode(), schema);
        let outcome = self.runtime.block_on(async {
            let interrupt = tokio::signal::ctrl_c();
            tokio::pin!(interrupt);
            tokio::pin!(rows);
            loop {
                tokio::select! {
                    batch = rows.next() => match batch {
                        Some(Ok(batch)) => shown.add(&batch)?,
                        Some(Err(e)) => return Err(e),
                        None => return Ok(false),
                    },
                    _ = &mut interrupt => return Ok(true),
                }
            }
        });
        shown.finish();
        (outcome, shown.rows())
    }

    /// Shows a query's rows (in the session's result mode) until it ends or Ctrl-C
    /// stops it.
    fn stream_query(&self, mut stream: runnel::QueryStream) -> JobState {
        let schema = stream.schema();
        let (outcome, rows) = self.show_live(
            &schema,
            (&mut stream).map(|batch| batch.map_err(|e| e.to_string())),
        );
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

    /// Submits an `INSERT INTO` (after the session's declarations) to the server as a job.
    fn submit_remote(&mut self, sql: &str) -> Result<(), String> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let job = remote.submit(&format!("{}{sql};", self.declarations))?;
        let id = job["id"].as_u64().unwrap_or(0);
        println!(
            "job {id} submitted to {} (SHOW JOBS lists it; STOP JOB {id} stops it)",
            remote.url()
        );
        Ok(())
    }

    /// Runs a `SELECT` on the server and shows its rows as they stream back; Ctrl-C
    /// stops it (the server stops the query when the stream closes).
    fn follow_remote(&mut self, sql: &str) -> Result<(), String> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let mut query = remote.follow(&format!("{}{sql};", self.declarations))?;
        let schema = query.schema.clone();
        // The response is read by a thread of its own, so Ctrl-C is not stuck behind a read.
        let (sender, receiver) = tokio::sync::mpsc::channel(8);
        std::thread::spawn(move || {
            while let Some(batch) = query.next_batch() {
                if sender.blocking_send(batch).is_err() {
                    break;
                }
            }
        });
        let rows = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|batch| (batch, receiver))
        });
        let (outcome, count) = self.show_live(&schema, rows);
        match outcome? {
            true => println!("\nquery stopped ({count} rows)"),
            false => println!("({count} rows)"),
        }
        Ok(())
    }

    /// `SHOW JOBS` of the server.
    fn show_remote_jobs(&self) -> Result<(), String> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        let number = |v: &serde_json::Value| crate::status::grouped(v.as_u64().unwrap_or(0));
        let rows = remote
            .jobs()?
            .iter()
            .map(|job| {
                vec![
                    job["id"].to_string(),
                    text(&job["status"]),
                    number(&job["rows_in"]),
                    number(&job["rows_out"]),
                    crate::status::watermark(job["watermark_ms"].as_i64()),
                    text(&job["name"]),
                ]
            })
            .collect();
        print_table(
            &["id", "status", "rows in", "rows out", "watermark", "name"],
            rows,
        );
        Ok(())
    }

    /// `STOP JOB n` on the server (after a final checkpoint).
    fn stop_remote_job(&self, id: &str) -> Result<(), String> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let id: u64 = id
            .trim_end_matches(';')
            .parse()
            .map_err(|_| format!("STOP JOB needs a job id (SHOW JOBS lists them), not {id}"))?;
        let job = remote.stop(id)?;
        println!("job {id} {}", job["status"].as_str().unwrap_or("stopped"));
        Ok(())
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
                    metrics.restarts.to_string(),
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
                "restarts",
                "statement",
            ],
            rows,
        );
        Ok(())
    }

    /// `SHOW TRANSACTIONS`: the Kafka transactions open on the declared tables' clusters.
    fn show_transactions(&mut self) -> Result<(), String> {
        let (headers, rows) = crate::transactions::show(self.runtime, &self.engine)?;
        print_table(&headers, rows);
        Ok(())
    }

    /// `ABORT TRANSACTION 'id'`: fences `id`, aborting its open transaction.
    fn abort_transaction(&mut self, id: &str) -> Result<(), String> {
        println!(
            "{}",
            crate::transactions::abort(self.runtime, &self.engine, id)?
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
pub fn run(runtime: &Runtime, remote: Option<RemoteServer>) -> Result<(), String> {
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
    if let Some(remote) = &remote {
        println!(
            "Connected to {}: INSERT INTO, SELECT, SHOW JOBS and STOP JOB run there.",
            remote.url()
        );
    }
    let mut session = Session {
        engine,
        runtime,
        jobs: BTreeMap::new(),
        remote,
        declarations: String::new(),
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
