//! User mistakes get clear errors with their place, and a non-zero exit.

use crate::common::*;

fn fails_with(name: &str, sql: &str, expected: &[&str]) {
    let output = run_job(name, sql);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "expected failure for {name}");
    for text in expected {
        assert!(
            stderr.contains(text),
            "{name}: expected '{text}' in: {stderr}"
        );
    }
    assert!(!stderr.contains("panicked"), "{name} panicked: {stderr}");
}

#[test]
fn sql_errors_give_line_and_column() {
    fails_with(
        "syntax",
        "CREATE TABLE t (a INT) WITH ('connector' = 'blackhole');\nSELECT a\nFROM t WHERE a >;",
        &["line 3, column", "SQL syntax error"],
    );
    fails_with(
        "ddl-type",
        "CREATE TABLE t (\n  a INTEGR\n) WITH ('connector' = 'blackhole');",
        &["line 2, column 5", "unknown data type INTEGR"],
    );
}

#[test]
fn unknown_options_are_listed_with_the_valid_ones() {
    fails_with(
        "option",
        "CREATE TABLE t (a INT) WITH ('connector' = 'filesystem', 'path' = '/tmp/x', 'fromat' = 'json');",
        &["unknown option 'fromat'", "'path'", "'format'"],
    );
    fails_with(
        "connector",
        "CREATE TABLE t (a INT) WITH ('connector' = 'kafak');",
        &[
            "unknown connector 'kafak'",
            "kafka, filesystem, nexmark, print, blackhole",
        ],
    );
}

#[test]
fn unsupported_queries_are_refused_with_the_reason() {
    let dir = scratch_dir("unbounded");
    let input = dir.join("in.json");
    std::fs::write(&input, "{\"a\": 1}\n").expect("input");
    fails_with(
        "unbounded-aggregate",
        &format!(
            "CREATE TABLE t (a INT) WITH ('connector' = 'filesystem', 'path' = '{}');
             SELECT a, COUNT(*) FROM t GROUP BY a;",
            input.display()
        ),
        &["must be windowed"],
    );
}

#[test]
fn a_missing_file_is_reported_with_its_path() {
    fails_with(
        "missing-file",
        "CREATE TABLE t (a INT) WITH ('connector' = 'filesystem', 'path' = '/nonexistent/runnel.json');
         CREATE TABLE o (a INT) WITH ('connector' = 'blackhole');
         INSERT INTO o SELECT a FROM t;",
        &["/nonexistent/runnel.json", "No such file"],
    );
}
