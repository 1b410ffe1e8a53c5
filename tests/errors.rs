//! User mistakes get clear errors with their place, and a non-zero exit.

use std::process::Command;

use crate::common::*;

pub fn fails_with(name: &str, sql: &str, expected: &[&str]) {
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
            "kafka, upsert-kafka, filesystem, nexmark, datagen, memory, script, jdbc, print, blackhole",
        ],
    );
}

#[test]
fn unsupported_queries_are_refused_with_the_reason() {
    let dir = scratch_dir("unbounded");
    let input = dir.join("in.json");
    std::fs::write(&input, "{\"a\": 1}\n").expect("input");
    // An unwindowed aggregate revises its rows: a plain JSON file cannot say so.
    fails_with(
        "updating-into-json",
        &format!(
            "CREATE TABLE t (a INT) WITH ('connector' = 'filesystem', 'path' = '{}');
             CREATE TABLE out (a INT, n BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}');
             INSERT INTO out SELECT a, COUNT(*) FROM t GROUP BY a;",
            input.display(),
            dir.join("out.json").display()
        ),
        &[
            "sink out",
            "produces an updating stream",
            "'format' = 'debezium-json'",
        ],
    );
    let events = dir.join("events.json");
    std::fs::write(
        &events,
        "{\"k\": 1, \"v\": 1, \"ts\": \"2026-01-01 00:00:00\"}\n{\"k\": 1, \"v\": 2}\n",
    )
    .expect("input");
    let table = format!(
        "CREATE TABLE e (k INT, v INT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)
           WITH ('connector' = 'filesystem', 'path' = '{}');",
        events.display()
    );
    fails_with(
        "unbounded-over",
        &format!("{table}\nSELECT k, SUM(v) OVER (PARTITION BY k ORDER BY ts) FROM e;"),
        &["RANGE BETWEEN UNBOUNDED PRECEDING", "bounded frame"],
    );
    fails_with(
        "over-without-time",
        &format!(
            "{table}\nSELECT k, SUM(v) OVER (PARTITION BY k ORDER BY v ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM e;"
        ),
        &["ORDER BY e.v (not a time attribute)"],
    );
    fails_with(
        "over-null-time",
        &format!(
            "{table}\nSELECT k, SUM(v) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM e;"
        ),
        &["event-time column 'ts' is NULL in 1 row(s)"],
    );
    // Runs as Flink's regular join by default (with a warning); refused on request.
    fails_with(
        "unbounded-join",
        &format!(
            "SET 'runnel.state.unbounded' = 'refuse';\n{table}\n\
             SELECT a.v, b.v FROM e a JOIN e b ON a.k = b.k;"
        ),
        &[
            "no time bound",
            "table.exec.state.ttl",
            "runnel.state.unbounded",
        ],
    );
    let lookup = format!(
        "{table}\nCREATE TABLE topic (k INT, name STRING) WITH ('connector' = 'kafka', 'topic' = 'names', 'properties.bootstrap.servers' = '127.0.0.1:1');"
    );
    fails_with(
        "lookup-of-an-endless-table",
        &format!(
            "{lookup}\nSELECT e.v, t.name FROM (SELECT *, PROCTIME() AS p FROM e) e JOIN topic FOR SYSTEM_TIME AS OF e.p AS t ON e.k = t.k;"
        ),
        &["topic is joined FOR SYSTEM_TIME AS OF", "does not end", "scan.bounded.mode"],
    );
    fails_with(
        "right-lookup-join",
        &format!(
            "{lookup}\nSELECT e.v, t.name FROM (SELECT *, PROCTIME() AS p FROM e) e RIGHT JOIN topic FOR SYSTEM_TIME AS OF e.p AS t ON e.k = t.k;"
        ),
        &["Right lookup joins (inner and left lookup joins run)"],
    );
    fails_with(
        "write-to-a-generator",
        &format!(
            "{table}\nCREATE TABLE g (k INT) WITH ('connector' = 'nexmark');\nINSERT INTO g SELECT k FROM e;"
        ),
        &["connector 'nexmark' can only be read"],
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

#[test]
fn bad_settings_and_late_data_sinks_are_explained() {
    fails_with(
        "setting-typo",
        "SET 'runnel.late-data.snk' = 'x';",
        &[
            "runnel.late-data.snk",
            "unknown Runnel setting",
            "runnel.late-data.sink",
        ],
    );
    fails_with(
        "setting-value",
        "SET 'table.exec.source.idle-timeout' = 'soon';",
        &["table.exec.source.idle-timeout", "expected a duration"],
    );
    fails_with(
        "late-sink-unknown",
        "CREATE TABLE t (a INT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts) WITH ('connector' = 'nexmark', 'events.num' = '10');\n\
         SET 'runnel.late-data.sink' = 'nowhere';\n\
         INSERT INTO t SELECT * FROM t;",
        &["runnel.late-data.sink", "nowhere"],
    );
    let dir = scratch_dir("late-sink-columns-input");
    std::fs::write(dir.join("in.json"), "{\"a\": 1, \"ts\": 0}\n").unwrap();
    fails_with(
        "late-sink-columns",
        &format!(
            "CREATE TABLE t (a INT, b INT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)\n\
               WITH ('connector' = 'filesystem', 'path' = '{}/in.json');\n\
             CREATE TABLE late (c INT) WITH ('connector' = 'blackhole');\n\
             CREATE TABLE out (a INT, n BIGINT) WITH ('connector' = 'blackhole');\n\
             SET 'runnel.late-data.sink' = 'late';\n\
             INSERT INTO out SELECT a, COUNT(*) FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' MINUTE)) GROUP BY a, window_start, window_end;",
            dir.display()
        ),
        &["late-data sink late", "column 'c'", "(a, ts)"],
    );
}

#[test]
fn java_functions_are_refused_unless_built_in() {
    fails_with(
        "java-udf",
        "CREATE FUNCTION my_fn AS 'com.example.MyFunction';",
        &["my_fn", "Java classes cannot run in Runnel"],
    );
    fails_with(
        "java-udf-renamed",
        "CREATE FUNCTION cc AS 'com.github.nexmark.flink.udf.CountChar';",
        &["built in as count_char"],
    );
}

#[test]
fn validate_reports_every_error_without_running() {
    let dir = scratch_dir("validate");
    let file = dir.join("job.sql");
    std::fs::write(
        &file,
        "CREATE TABLE t (a INT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)
           WITH ('connector' = 'filesystem', 'path' = '/nonexistent/never-read.json');
         CREATE TABLE bad (a INT) WITH ('connector' = 'kafak');
         SELECT nope FROM t;
         SELECT a FROM missing;
         SELEC a FROM t;
         SELECT a FROM t;",
    )
    .expect("job file");
    let output = Command::new(runnel_binary())
        .arg("validate")
        .arg(&file)
        .output()
        .expect("run runnel");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    // Each error with its statement and the line it starts on; a syntax error does not
    // stop the check of the statements after it.
    for expected in [
        "4 errors",
        "statement 2 (line 3):",
        "unknown connector 'kafak'",
        "statement 3 (line 4):",
        "nope",
        "statement 4 (line 5):",
        "unknown table 'missing'",
        "statement 5 (line 6):",
        "found: SELEC",
    ] {
        assert!(stderr.contains(expected), "'{expected}' in: {stderr}");
    }
    assert!(!stderr.contains("statement 6"), "{stderr}");
    std::fs::write(
        &file,
        "CREATE TABLE t (a INT) WITH ('connector' = 'blackhole');",
    )
    .expect("job file");
    let output = Command::new(runnel_binary())
        .arg("validate")
        .arg(&file)
        .output()
        .expect("run runnel");
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains(": ok"));
}
