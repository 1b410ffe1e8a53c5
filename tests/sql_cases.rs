//! Runs the streaming SQL cases in `sql/cases/*.test`: each file holds input rows, the
//! SQL, and the expected output, so adding a case needs no Rust.
//!
//! A case file has sections, each starting with a `-- <name>` line:
//! - `-- input <table>`: JSON lines; the SQL refers to them as `${input:<table>}` (a folder
//!   for the `filesystem` connector: a `---` line ends a batch, read whole, after which
//!   the watermark advances) or as `${script:<table>}` (one file for the `script`
//!   connector, which also takes `@partition`, `@watermark`, `@idle`, `@finish` and
//!   `@clock` markers);
//! - `-- sql`: the statements; the last one is the query whose rows are checked;
//! - `-- expected`: the query's rows as `+I[...]` lines (compared in any order); for an
//!   updating query, its changes (`+I`, `-U`, `+U`, `-D`), compared in order;
//! - `-- expected final` (instead): an updating query's result as the table its changes
//!   leave behind, `+I` lines in any order — for queries whose inputs may interleave in
//!   any order (a join of two changelog tables read from two sources), so that only the
//!   result, not the order of its changes, is fixed;
//! - `-- late rows` (optional): how many rows the job must count as late;
//! - `-- output <name>` (optional): the lines a sink wrote into `${output:<name>}`, in
//!   any order (e.g. the late-data sink's rows);
//! - `-- plan` (optional): the last query's `EXPLAIN` at parallelism 3 (the streaming plan
//!   and the job graph), compared line by line;
//! - `-- error` (instead of `-- expected`): the script must be refused with exactly this
//!   message (planning errors, and errors of the job once it runs; the case's scratch
//!   folder is written `${dir}`).
//!
//! `RUNNEL_COMPLETE=1` rewrites each `-- expected` (and `-- late rows`, `-- plan`,
//! `-- error`) from what Runnel produced.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use runnel::{Engine, Executed};

use crate::common::scratch_dir;

struct Case {
    inputs: BTreeMap<String, String>,
    sql: String,
    expected: Vec<String>,
    late_rows: Option<u64>,
    /// Expected lines of each `${output:<name>}` file.
    outputs: BTreeMap<String, Vec<String>>,
    /// The expected `EXPLAIN` lines, when the case pins its plan.
    plan: Option<Vec<String>>,
    /// The message the script must be refused with, when it is a refusal case.
    error: Option<String>,
    /// `-- expected final`: the changes are compared by the table they leave behind.
    final_table: bool,
    /// Everything before the first result section, kept verbatim when completing.
    head: String,
}

/// The sections after `-- sql` that hold what a case must produce.
const RESULT_SECTIONS: &[&str] = &["expected", "expected final", "late rows", "plan", "error"];

/// The parallelism a case's `-- plan` is explained at.
const PLAN_PARALLELISM: usize = 3;

fn parse_case(text: &str) -> Case {
    let mut case = Case {
        inputs: BTreeMap::new(),
        sql: String::new(),
        expected: Vec::new(),
        late_rows: None,
        outputs: BTreeMap::new(),
        plan: None,
        error: None,
        final_table: false,
        head: String::new(),
    };
    let mut section = String::new();
    let mut in_head = true;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("-- ") {
            section = name.trim().to_string();
            if let Some(table) = section.strip_prefix("input ") {
                // An input section may be empty: the table then has no rows.
                case.inputs.entry(table.trim().to_string()).or_default();
            }
            if let Some(name) = section.strip_prefix("output ") {
                case.outputs.entry(name.trim().to_string()).or_default();
            }
            if section == "plan" {
                case.plan.get_or_insert_with(Vec::new);
            }
            if section == "expected final" {
                case.final_table = true;
                section = "expected".into();
            }
            if RESULT_SECTIONS.contains(&section.as_str()) || section.starts_with("output ") {
                in_head = false;
            }
        } else if !line.trim_start().starts_with('#') {
            match section.as_str() {
                "sql" => {
                    case.sql.push_str(line);
                    case.sql.push('\n');
                }
                "expected" if !line.trim().is_empty() => {
                    case.expected.push(line.trim().to_string())
                }
                "late rows" if !line.trim().is_empty() => {
                    case.late_rows = Some(line.trim().parse().expect("late rows is a number"))
                }
                "plan" if !line.trim().is_empty() => {
                    if let Some(plan) = &mut case.plan {
                        plan.push(line.trim_end().to_string());
                    }
                }
                "error" if !line.trim().is_empty() => {
                    let error = case.error.get_or_insert_with(String::new);
                    if !error.is_empty() {
                        error.push('\n');
                    }
                    error.push_str(line.trim_end());
                }
                s if s.starts_with("output ") && !line.trim().is_empty() => {
                    let name = s["output ".len()..].trim().to_string();
                    let lines = case.outputs.entry(name).or_default();
                    lines.push(line.trim().to_string());
                }
                s if s.starts_with("input ") && !line.trim().is_empty() => {
                    let table = s["input ".len()..].trim().to_string();
                    let rows = case.inputs.entry(table).or_default();
                    rows.push_str(line);
                    rows.push('\n');
                }
                _ => {}
            }
        }
        if in_head {
            case.head.push_str(line);
            case.head.push('\n');
        }
    }
    case
}

/// What a case produced: the query's rows and each output file's lines (both sorted),
/// and the late-row count.
struct Outcome {
    rows: Vec<String>,
    outputs: BTreeMap<String, Vec<String>>,
    late: u64,
}

/// Runs a case (in a scratch folder named after it and `purpose`) with each operator as
/// `parallelism` subtasks.
async fn run_case(
    purpose: &str,
    name: &str,
    case: &Case,
    parallelism: usize,
) -> Result<Outcome, String> {
    let folder = format!("{purpose}-{parallelism}-{name}");
    let (_, sql) = prepare(&folder, case)?;
    let sql = format!("SET 'parallelism.default' = '{parallelism}';\n{sql}");
    let engine = Engine::default();
    let mut rows = Vec::new();
    let mut late = 0;
    for result in engine.execute(&sql).await.map_err(|e| e.to_string())? {
        match result {
            Executed::Query(mut stream) => {
                while let Some(batch) = stream.next().await {
                    let batch = batch.map_err(|e| e.to_string())?;
                    rows.extend(
                        runnel::connectors::print::format_rows(&batch, "")
                            .map_err(|e| e.to_string())?,
                    );
                }
                late += stream.finish().await.map_err(|e| e.to_string())?.late_rows;
            }
            Executed::Job(job) => late += job.wait().await.map_err(|e| e.to_string())?.late_rows,
            _ => {}
        }
    }
    let dir = scratch_dir_path(&folder);
    let rows = comparable(rows, parallelism, case.final_table);
    let mut outputs = BTreeMap::new();
    for output in case.outputs.keys() {
        let path = dir.join(format!("output-{output}"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        outputs.insert(output.clone(), lines);
    }
    Ok(Outcome {
        rows,
        outputs,
        late,
    })
}

/// A query's rows as they are compared: an append query's in any order; an updating
/// query's changes in order when one subtask made them all. With several subtasks only
/// each key's changes keep their order (keys are spread over subtasks, and an aggregate
/// of an aggregate sees its input's keys interleave differently, as in Flink), so an
/// updating query is compared by the table its changes leave behind.
fn comparable(rows: Vec<String>, parallelism: usize, final_table: bool) -> Vec<String> {
    // `-U[v]` right before `+U[v]` changes nothing: a group restored from a checkpoint
    // re-sends its row on its next change, equal or not.
    let mut kept: Vec<String> = Vec::with_capacity(rows.len());
    for row in rows {
        let repeats = kept.last().is_some_and(|last| {
            last.strip_prefix("-U") == row.strip_prefix("+U") && row.starts_with("+U")
        });
        if repeats {
            kept.pop();
        } else {
            kept.push(row);
        }
    }
    let mut rows = kept;
    if rows.iter().all(|r| r.starts_with("+I[")) {
        rows.sort();
        return rows;
    }
    if parallelism == 1 && !final_table {
        return rows;
    }
    let mut table: Vec<String> = Vec::new();
    for row in rows {
        let (change, values) = row.split_at(2);
        match change {
            "-U" | "-D" => match table.iter().position(|r| r[2..] == *values) {
                Some(at) => {
                    table.swap_remove(at);
                }
                // A retraction of a row never added: kept, so the comparison shows it.
                None => table.push(row),
            },
            _ => table.push(format!("+I{values}")),
        }
    }
    table.sort();
    table
}

/// Writes a case's inputs into a fresh folder named `name` and returns the folder and
/// the case's SQL with its placeholders replaced.
fn prepare(name: &str, case: &Case) -> Result<(PathBuf, String), String> {
    let dir = scratch_dir(name);
    let mut sql = case.sql.clone();
    for output in case.outputs.keys() {
        let path = dir.join(format!("output-{output}"));
        sql = sql.replace(
            &format!("${{output:{output}}}"),
            &path.display().to_string(),
        );
    }
    for (table, rows) in &case.inputs {
        let script = dir.join(format!("{table}.script"));
        std::fs::write(&script, rows).map_err(|e| e.to_string())?;
        sql = sql.replace(
            &format!("${{script:{table}}}"),
            &script.display().to_string(),
        );
        // One file per batch, read in name order.
        let folder = dir.join(table);
        std::fs::create_dir_all(&folder).map_err(|e| e.to_string())?;
        for (i, batch) in rows.split("---\n").enumerate() {
            let path = folder.join(format!("batch-{i:04}.json"));
            std::fs::write(&path, batch).map_err(|e| e.to_string())?;
        }
        sql = sql.replace(
            &format!("${{input:{table}}}"),
            &folder.display().to_string(),
        );
    }
    Ok((dir, sql))
}

/// The folder [`prepare`] made for `name` (without clearing it).
fn scratch_dir_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("runnel-test-{}-{name}", std::process::id()))
}

/// What one run of a script gave: its bare query's rows, the error its job ended with
/// (if any), and the checkpoint it resumed from (if it did).
struct Run {
    rows: Vec<String>,
    failure: Option<String>,
    restored_checkpoint: Option<u64>,
}

async fn collect(engine: &Engine, sql: &str) -> Run {
    let mut run = Run {
        rows: Vec::new(),
        failure: None,
        restored_checkpoint: None,
    };
    let results = match engine.execute(sql).await {
        Ok(results) => results,
        Err(e) => {
            run.failure = Some(e.to_string());
            return run;
        }
    };
    for result in results {
        let ended = match result {
            Executed::Query(mut stream) => {
                while let Some(batch) = stream.next().await {
                    match batch {
                        Ok(batch) => run.rows.extend(
                            runnel::connectors::print::format_rows(&batch, "").unwrap_or_default(),
                        ),
                        Err(e) => run.failure = Some(e.to_string()),
                    }
                }
                stream.finish().await.map_err(|e| e.to_string())
            }
            Executed::Job(job) => job.wait().await.map_err(|e| e.to_string()),
            _ => continue,
        };
        match ended {
            Ok(metrics) => run.restored_checkpoint = metrics.restored_checkpoint,
            Err(e) => run.failure = Some(e),
        }
    }
    run
}

/// Runs `case` with `faults` (a crash right after a checkpoint) under a restart strategy
/// without delay: the job must restart from that checkpoint by itself, and its rows
/// equal `straight`.
async fn restart_in_process(
    name: &str,
    case: &Case,
    parallelism: usize,
    faults: runnel::runtime::FaultInjection,
    crashes: bool,
    straight: &[String],
) -> Result<(), String> {
    let (dir, sql) = prepare(&format!("restart-{parallelism}-{name}"), case)?;
    let sql = format!(
        "SET 'parallelism.default' = '{parallelism}';\nSET 'execution.checkpointing.interval' = '1 h';\nSET 'state.checkpoints.dir' = '{}';\nSET 'restart-strategy.type' = 'fixed-delay';\nSET 'restart-strategy.fixed-delay.delay' = '0 ms';\n{sql}",
        dir.join("checkpoints").display()
    );
    let engine = Engine::default();
    engine.inject_faults(faults);
    let run = collect(&engine, &sql).await;
    if let Some(e) = run.failure {
        return Err(format!("failed: {e}"));
    }
    let restarts: u64 = engine
        .jobs()
        .iter()
        .map(|j| j.metrics.snapshot().restarts)
        .sum();
    // Without input rows the checkpoint (and the crash) may come at the end or not at all.
    if restarts > 1 || (crashes && restarts == 0) {
        return Err(format!("{restarts} restarts, expected 1"));
    }
    let rows = comparable(run.rows, parallelism, case.final_table);
    if rows != straight {
        return Err(format!(
            "rows differ from the straight run\n  straight:\n    {}\n  restarted:\n    {}",
            straight.join("\n    "),
            rows.join("\n    ")
        ));
    }
    Ok(())
}

/// Whether the sources of `checkpoints`' only complete checkpoint had input left to read
/// when it was taken (so resuming from it continues mid-stream); with its id.
fn mid_stream_checkpoint(checkpoints: &Path) -> Result<(u64, bool), String> {
    let manifests: Vec<PathBuf> = std::fs::read_dir(checkpoints)
        .map_err(|e| format!("{}: {e}", checkpoints.display()))?
        .flatten()
        .map(|e| e.path().join("_manifest.json"))
        .filter(|m| m.exists())
        .collect();
    let [manifest] = &manifests[..] else {
        return Err(format!(
            "{} complete checkpoints after the crash, expected one",
            manifests.len()
        ));
    };
    let text = std::fs::read_to_string(manifest).map_err(|e| e.to_string())?;
    let manifest: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let id = manifest["id"].as_u64().ok_or("a manifest without an id")?;
    let sources = manifest["sources"]
        .as_array()
        .ok_or("a manifest without sources")?;
    let unfinished = sources
        .iter()
        .any(|s| s["finished"] != serde_json::Value::Bool(true));
    Ok((id, unfinished))
}

/// Every case: its file, its name and its parsed sections.
fn load_cases() -> Vec<(PathBuf, String, Case)> {
    case_files()
        .into_iter()
        .map(|file| {
            let name = file
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&file).expect("case file");
            let case = parse_case(&text);
            (file, name, case)
        })
        .collect()
}

/// The case files, or only those whose name contains `RUNNEL_CASE` when it is set.
fn case_files() -> Vec<PathBuf> {
    let only = std::env::var("RUNNEL_CASE").ok();
    let mut files = all_case_files();
    if let Some(only) = only {
        files.retain(|f| {
            f.file_stem()
                .is_some_and(|s| s.to_string_lossy().contains(&only))
        });
    }
    files
}

fn all_case_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/cases");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    files
}

/// The last query's `EXPLAIN` (streaming plan and job graph) at [`PLAN_PARALLELISM`].
fn explain(name: &str, case: &Case) -> Result<Vec<String>, String> {
    let (_, sql) = prepare(&format!("plan-{name}"), case)?;
    let sql = format!("SET 'parallelism.default' = '{PLAN_PARALLELISM}';\n{sql}");
    let text = Engine::default().explain(&sql).map_err(|e| e.to_string())?;
    Ok(text.lines().map(|l| l.trim_end().to_string()).collect())
}

/// What a refusal case's script failed with (`Ok(None)` if it did not fail), its scratch
/// folder written `${dir}`.
async fn refusal(name: &str, case: &Case) -> Result<Option<String>, String> {
    let (dir, sql) = prepare(&format!("error-{name}"), case)?;
    let failure = collect(&Engine::default(), &sql).await.failure;
    Ok(failure.map(|f| f.replace(&dir.display().to_string(), "${dir}")))
}

/// A case file rewritten with what Runnel produced (`RUNNEL_COMPLETE=1`).
async fn completed(name: &str, case: &Case) -> Result<String, String> {
    let mut text = case.head.clone();
    if case.plan.is_some() {
        text.push_str("-- plan\n");
        for line in explain(name, case)? {
            text.push_str(&line);
            text.push('\n');
        }
    }
    if case.error.is_some() {
        let failure = refusal(name, case).await?.unwrap_or_default();
        text.push_str(&format!("-- error\n{failure}\n"));
        return Ok(text);
    }
    let outcome = run_case("case", name, case, 1).await?;
    text.push_str(if case.final_table {
        "-- expected final\n"
    } else {
        "-- expected\n"
    });
    for row in &outcome.rows {
        text.push_str(row);
        text.push('\n');
    }
    if case.late_rows.is_some() || outcome.late > 0 {
        text.push_str(&format!("-- late rows\n{}\n", outcome.late));
    }
    for (name, lines) in &outcome.outputs {
        text.push_str(&format!("-- output {name}\n"));
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
    }
    Ok(text)
}

/// Where the case's pinned plan and refusal differ from what Runnel does now.
async fn check_plan_and_refusal(name: &str, case: &Case, failures: &mut Vec<String>) {
    if let Some(expected) = &case.plan {
        match explain(name, case) {
            Ok(plan) if plan == *expected => {}
            Ok(plan) => failures.push(format!(
                "{name}: plan differs\n  expected:\n    {}\n  got:\n    {}",
                expected.join("\n    "),
                plan.join("\n    ")
            )),
            Err(e) => failures.push(format!("{name}: EXPLAIN failed: {e}")),
        }
    }
    if let Some(expected) = &case.error {
        match refusal(name, case).await {
            Ok(Some(error)) if error == *expected => {}
            Ok(Some(error)) => failures.push(format!(
                "{name}: refused otherwise\n  expected: {expected}\n  got:      {error}"
            )),
            Ok(None) => failures.push(format!("{name}: ran, but must be refused with: {expected}")),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_cases() {
    let complete = std::env::var("RUNNEL_COMPLETE").is_ok_and(|v| v == "1");
    let cases = load_cases();
    assert!(!cases.is_empty(), "no cases found in sql/cases");
    let mut failures = Vec::new();
    for (file, name, case) in &cases {
        if complete {
            match completed(name, case).await {
                Ok(text) => std::fs::write(file, text).expect("rewrite case"),
                Err(e) => failures.push(format!("{name}: failed to run: {e}")),
            }
            continue;
        }
        check_plan_and_refusal(name, case, &mut failures).await;
        if case.error.is_some() {
            continue;
        }
        for parallelism in [1, 3] {
            let name = &format!("{name} (parallelism {parallelism})");
            match run_case("case", name, case, parallelism).await {
                Err(e) => failures.push(format!("{name}: failed to run: {e}")),
                Ok(Outcome {
                    rows,
                    outputs,
                    late,
                }) => {
                    for (output, lines) in &outputs {
                        let mut expected = case.outputs[output].clone();
                        expected.sort();
                        if *lines != expected {
                            failures.push(format!(
                            "{name}: output {output} differs\n  expected:\n    {}\n  got:\n    {}",
                            expected.join("\n    "),
                            lines.join("\n    ")
                        ));
                        }
                    }
                    let expected = comparable(case.expected.clone(), parallelism, case.final_table);
                    if rows != expected {
                        failures.push(format!(
                            "{name}: rows differ\n  expected:\n    {}\n  got:\n    {}",
                            expected.join("\n    "),
                            rows.join("\n    ")
                        ));
                    }
                    if late != case.late_rows.unwrap_or(0) {
                        failures.push(format!(
                            "{name}: {late} late rows, expected {}",
                            case.late_rows.unwrap_or(0)
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    let refusals = cases.iter().filter(|(_, _, c)| c.error.is_some()).count();
    let plans = cases.iter().filter(|(_, _, c)| c.plan.is_some()).count();
    eprintln!(
        "{} SQL cases passed at parallelism 1 and 3 ({refusals} refusals, {plans} plans)",
        cases.len()
    );
}

/// Every case runs a second way: checkpointed once half its input rows are read (a whole
/// snapshot at parallelism 1, an incremental checkpoint at 3), the job "crashes" right
/// after that checkpoint commits, and a new engine with the same checkpoint directory
/// resumes it. The rows before the crash and after the restart
/// together must equal the straight run (in order, for updating queries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_cases_resume_from_a_checkpoint_after_a_crash() {
    let mut failures = Vec::new();
    let mut resumed_mid_stream = 0;
    let cases = load_cases();
    for (_, name, case) in cases.iter().filter(|(_, _, c)| c.error.is_none()) {
        for parallelism in [1, 3] {
            let straight = match run_case("straight", name, case, parallelism).await {
                Ok(outcome) => outcome.rows,
                Err(e) => {
                    failures.push(format!("{name}: straight run failed: {e}"));
                    continue;
                }
            };
            let name = &format!("{name} (parallelism {parallelism})");
            let (dir, sql) = match prepare(&format!("resume-{parallelism}-{name}"), case) {
                Ok(prepared) => prepared,
                Err(e) => {
                    failures.push(format!("{name}: {e}"));
                    continue;
                }
            };
            // At parallelism 3 the checkpoint is incremental: each operator that tracks its
            // changes writes them since the start, and the resumed job reads that chain.
            let incremental = parallelism > 1;
            let sql = format!(
            "SET 'parallelism.default' = '{parallelism}';\nSET 'execution.checkpointing.interval' = '1 h';\nSET 'execution.checkpointing.incremental' = '{incremental}';\nSET 'state.checkpoints.dir' = '{}';\nSET 'restart-strategy.type' = 'none';\n{sql}",
            dir.join("checkpoints").display()
        );
            let input_rows = case
                .inputs
                .values()
                .flat_map(|rows| rows.lines())
                .map(str::trim)
                .filter(|l| !l.is_empty() && *l != "---" && !l.starts_with('@'))
                .filter(|l| !l.starts_with('#'))
                .count() as u64;
            let faults = runnel::runtime::FaultInjection {
                checkpoint_after_rows: Some((input_rows / 2).max(1)),
                crash_after_checkpoint: true,
                ..Default::default()
            };
            // The same crash under a restart strategy: the job restarts itself from the
            // checkpoint, and its one run's rows equal the straight run's.
            let crashes = input_rows > 0;
            if let Err(e) =
                restart_in_process(name, case, parallelism, faults, crashes, &straight).await
            {
                failures.push(format!("{name}: restarted in the process: {e}"));
            }
            let crashing = Engine::default();
            crashing.inject_faults(faults);
            let Run {
                mut rows,
                failure: crash,
                ..
            } = collect(&crashing, &sql).await;
            let crashed = crash
                .as_deref()
                .is_some_and(|e| e.contains("simulated crash"));
            if let Some(e) = crash.as_ref().filter(|_| !crashed) {
                failures.push(format!("{name}: the run to crash failed otherwise: {e}"));
                continue;
            }
            // With input to read, the fault hooks must fire: a checkpoint once half the
            // rows are read, taken before the input ended, then the crash.
            let mut taken = None;
            if input_rows > 0 {
                if !crashed {
                    failures.push(format!("{name}: the injected crash did not happen"));
                    continue;
                }
                match mid_stream_checkpoint(&dir.join("checkpoints")) {
                    Ok((id, true)) => taken = Some(id),
                    Ok((id, false)) => {
                        failures.push(format!(
                            "{name}: checkpoint {id} was taken after the input ended, not mid-stream"
                        ));
                        continue;
                    }
                    Err(e) => {
                        failures.push(format!("{name}: {e}"));
                        continue;
                    }
                }
            }
            let after = collect(&Engine::default(), &sql).await;
            if let Some(e) = after.failure {
                failures.push(format!("{name}: resuming failed: {e}"));
                continue;
            }
            if taken.is_some() && after.restored_checkpoint != taken {
                failures.push(format!(
                    "{name}: resumed from checkpoint {:?}, expected {taken:?}",
                    after.restored_checkpoint
                ));
                continue;
            }
            if taken.is_some() {
                resumed_mid_stream += 1;
            }
            rows.extend(after.rows);
            let rows = comparable(rows, parallelism, case.final_table);
            if rows != straight {
                let manifests: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|e| std::fs::read_to_string(e.path().join("_manifest.json")).ok())
                    .collect();
                failures.push(format!(
                    "{name}: checkpoints: {}; crash: {crash:?}",
                    manifests.join(" ")
                ));
                failures.push(format!(
                "{name}: crash and resume differ from the straight run\n  straight:\n    {}\n  resumed:\n    {}",
                straight.join("\n    "),
                rows.join("\n    ")
            ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} SQL cases resumed from a checkpoint at parallelism 1 and 3 ({resumed_mid_stream} runs resumed mid-stream)",
        cases.iter().filter(|(_, _, c)| c.error.is_none()).count()
    );
}
