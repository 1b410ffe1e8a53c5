//! Runs the streaming SQL cases in `sql/cases/*.test`: each file holds input rows, the
//! SQL, and the expected output, so adding a case needs no Rust.
//!
//! A case file has sections, each starting with a `-- <name>` line:
//! - `-- input <table>`: JSON lines; the SQL refers to them as `${input:<table>}`. A `---`
//!   line ends a batch: the source reads each batch whole and advances its watermark
//!   after it, so rows after a `---` can be late;
//! - `-- sql`: the statements; the last one is the query whose rows are checked;
//! - `-- expected`: the query's rows as `+I[...]` lines (compared in any order);
//! - `-- late rows` (optional): how many rows the job must count as late.
//!
//! `RUNNEL_COMPLETE=1` rewrites each `-- expected` (and `-- late rows`) from what Runnel produced.

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
    /// Everything before `-- expected`, kept verbatim when completing.
    head: String,
}

fn parse_case(text: &str) -> Case {
    let mut case = Case {
        inputs: BTreeMap::new(),
        sql: String::new(),
        expected: Vec::new(),
        late_rows: None,
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
            if section == "expected" || section == "late rows" {
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

/// Runs a case; returns its rows (formatted, sorted) and its late-row count.
async fn run_case(name: &str, case: &Case) -> Result<(Vec<String>, u64), String> {
    let dir = scratch_dir(&format!("case-{name}"));
    let mut sql = case.sql.clone();
    for (table, rows) in &case.inputs {
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
    let engine = Engine::new();
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
    rows.sort();
    Ok((rows, late))
}

fn case_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/cases");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_cases() {
    let complete = std::env::var("RUNNEL_COMPLETE").is_ok_and(|v| v == "1");
    let files = case_files();
    assert!(!files.is_empty(), "no cases found in sql/cases");
    let mut failures = Vec::new();
    for file in &files {
        let name = file
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(file).expect("case file");
        let case = parse_case(&text);
        let outcome = run_case(&name, &case).await;
        match outcome {
            Err(e) => failures.push(format!("{name}: failed to run: {e}")),
            Ok((rows, late)) if complete => {
                let mut text = case.head.clone();
                text.push_str("-- expected\n");
                for row in &rows {
                    text.push_str(row);
                    text.push('\n');
                }
                if case.late_rows.is_some() || late > 0 {
                    text.push_str(&format!("-- late rows\n{late}\n"));
                }
                std::fs::write(file, text).expect("rewrite case");
            }
            Ok((rows, late)) => {
                let mut expected = case.expected.clone();
                expected.sort();
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
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
    eprintln!("{} SQL cases passed", files.len());
}
