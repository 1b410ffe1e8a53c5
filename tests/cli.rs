//! The `runnel` command as a user meets it: the interactive shell driven through a real
//! pseudo-terminal, TOML job files, `validate`, `explain`, and the Prometheus endpoint.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// The shell in a pseudo-terminal: declare a `datagen` table, stream a windowed SELECT,
/// Ctrl-C it, list jobs, make a typo, quit — asserting on what the screen shows.
#[test]
fn the_shell_streams_a_window_stops_on_ctrl_c_and_survives_a_typo() {
    let home = scratch_dir("repl-home");
    let mut command = Command::new(runnel_binary());
    command.env("HOME", &home).env("TERM", "xterm");
    let mut shell = rexpect::session::spawn_command(command, Some(30_000)).expect("start runnel");
    shell.exp_string("runnel> ").expect("prompt");
    // A statement over two lines: the first line alone is not complete.
    shell
        .send_line("CREATE TABLE clicks (user_id INT, url STRING, ts TIMESTAMP(3),")
        .expect("type");
    shell
        .send_line(
            "  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH ('connector' = 'datagen', \
             'rows-per-second' = '200', 'fields.user_id.min' = '1', 'fields.user_id.max' = '3', \
             'fields.url.length' = '5');",
        )
        .expect("type");
    shell.exp_string("created clicks").expect("table created");
    shell
        .send_line(
            "SELECT user_id, window_start, COUNT(*) AS clicks FROM TABLE(TUMBLE(TABLE clicks, \
             DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY user_id, window_start, window_end;",
        )
        .expect("type");
    // The header (padded, so not the echo of the typed query), then closed windows.
    shell
        .exp_regex(r"user_id \| window_start +\| +clicks")
        .expect("aligned header");
    let (_, row) = shell
        .exp_regex(r"\n +[123] \| \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.000 \| +\d+")
        .expect("a closed window's row");
    assert!(row.contains(".000 |"), "{row}");
    shell.send_control('c').expect("Ctrl-C");
    shell.exp_string("query stopped").expect("query stopped");
    shell.exp_string("runnel> ").expect("back at the prompt");
    shell.send_line("SHOW JOBS;").expect("type");
    shell
        .exp_regex(r"1 +\| stopped +\|")
        .expect("the stopped query in SHOW JOBS");
    shell.send_line("SELEC user_id FROM clicks;").expect("type");
    shell
        .exp_string("error: SQL syntax error at line 1, column 1")
        .expect("the typo's error");
    shell.send_line("SHOW TABLES;").expect("type");
    shell
        .exp_regex(r"clicks +\| datagen")
        .expect("the session went on after the error");
    shell.send_line("DESCRIBE clicks;").expect("type");
    shell
        .exp_regex(r"ts +\| TIMESTAMP\(3\) +\| YES +\| WATERMARK AS")
        .expect("DESCRIBE shows the event time");
    shell.send_line("\\q").expect("type");
    shell.exp_eof().expect("the shell exits");
    let history = std::fs::read_to_string(home.join(".runnel_history")).expect("history file");
    assert!(history.contains("SHOW JOBS;"), "{history}");
}

/// The data lines (`key | count`) of one stretch of the shell's output.
fn key_counts(screen: &str) -> Vec<(u32, u64)> {
    screen
        .split('\n')
        .filter_map(|line| {
            let (key, count) = line
                .trim_matches(|c: char| c.is_whitespace())
                .split_once(" | ")?;
            Some((key.trim().parse().ok()?, count.trim().parse().ok()?))
        })
        .collect()
}

/// An updating `SELECT` in the shell's default table mode shows one line per key whose
/// count grows in place (the table is redrawn over itself); in changelog mode every
/// change is a line of its own, `-U[...]` and `+U[...]`.
#[test]
fn the_shell_shows_an_updating_result_in_place_or_as_changes() {
    let home = scratch_dir("repl-result-modes");
    let mut command = Command::new(runnel_binary());
    command.env("HOME", &home).env("TERM", "xterm");
    let mut shell = rexpect::session::spawn_command(command, Some(30_000)).expect("start runnel");
    shell.exp_string("runnel> ").expect("prompt");
    shell
        .send_line(
            "CREATE TABLE t (k INT, ts TIMESTAMP(3)) WITH ('connector' = 'datagen', \
             'rows-per-second' = '300', 'number-of-rows' = '900', \
             'fields.k.min' = '1', 'fields.k.max' = '3');",
        )
        .expect("type");
    shell.exp_string("created t").expect("table created");
    shell
        .send_line("SELECT k, COUNT(*) AS n FROM t GROUP BY k;")
        .expect("type");
    let screen = shell.exp_string("(3 rows)").expect("the query ends");
    // Each redraw moves the cursor up over the last table and clears below it.
    let draws: Vec<&str> = screen.split("\x1b[J").collect();
    assert!(
        draws.len() > 2,
        "the table was redrawn in place: {screen:?}"
    );
    let mut growth = Vec::new();
    for draw in &draws {
        let lines = key_counts(draw);
        let mut keys: Vec<u32> = lines.iter().map(|(k, _)| *k).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(
            keys.len(),
            lines.len(),
            "one line per key in each draw: {draw:?}"
        );
        growth.extend(lines.iter().filter(|(k, _)| *k == 1).map(|(_, n)| *n));
    }
    assert!(
        growth.windows(2).all(|w| w[0] <= w[1]) && growth.first() < growth.last(),
        "key 1's count grows in place: {growth:?}"
    );
    let last = key_counts(draws.last().expect("a draw"));
    assert_eq!(last.len(), 3, "{last:?}");
    assert_eq!(last.iter().map(|(_, n)| n).sum::<u64>(), 900, "{last:?}");

    shell
        .send_line("SET 'sql-client.execution.result-mode' = 'changelog';")
        .expect("type");
    shell.exp_string("set 'sql-client").expect("set");
    shell
        .send_line("SELECT k, COUNT(*) AS n FROM t GROUP BY k;")
        .expect("type");
    let (changes, _) = shell.exp_regex(r"\(\d+ rows\)").expect("the query ends");
    for kind in ["+I[", "-U[", "+U["] {
        assert!(changes.contains(kind), "{kind} in {changes:?}");
    }
    shell.send_line("\\q").expect("type");
    shell.exp_eof().expect("the shell exits");
}

/// A TOML job: SQL by path with `${VAR}`s, Kafka properties merged into every Kafka
/// table (the SQL names no broker), a checkpoint directory from the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_toml_job_takes_kafka_defaults_and_environment_variables() {
    let claims = generate_claims(2_000, 20, 7);
    let expected = expected_windows(&claims);
    recreate_topic("cli.toml.claims", 2).await;
    let records: Vec<Record> = claims
        .iter()
        .map(|c| (None, c.to_json().into_bytes()))
        .collect();
    produce("cli.toml.claims", &records).await;

    let dir = scratch_dir("toml-job");
    let output_file = dir.join("out.json");
    std::fs::write(
        dir.join("claims.sql"),
        format!(
            "CREATE TABLE claims (
                claim_id STRING NOT NULL, policy_id BIGINT, amount DECIMAL(12, 2),
                operation STRING, event_time TIMESTAMP(3),
                WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
            ) WITH (
                'connector' = 'kafka', 'topic' = '${{CLAIMS_TOPIC}}',
                'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
                'format' = 'json'
            );
            CREATE TABLE claims_aggregated_5min ({CLAIMS_OUTPUT_COLUMNS})
            WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
            {CLAIMS_QUERY}",
            output_file.display()
        ),
    )
    .expect("sql file");
    let job = dir.join("claims.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"claims-5min\"\nsql_file = \"claims.sql\"\n\
             [checkpoint]\ndir = \"{}\"\ninterval = \"1 s\"\n\
             [kafka]\n\"bootstrap.servers\" = \"${{BROKERS}}\"\n\"group.id\" = \"runnel-toml-${{RUN:-test}}\"\n",
            dir.join("checkpoints").display()
        ),
    )
    .expect("toml file");
    let output = Command::new(runnel_binary())
        .arg("run")
        .arg(&job)
        .env("CLAIMS_TOPIC", "cli.toml.claims")
        .env("BROKERS", bootstrap())
        .output()
        .expect("run runnel");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let text = std::fs::read_to_string(&output_file).expect("output file");
    assert_eq!(parse_window_rows(text.lines()), expected);
    assert!(
        dir.join("checkpoints").exists(),
        "the TOML's checkpoint directory is used"
    );

    // An unset variable is named with its line, before anything runs.
    let output = Command::new(runnel_binary())
        .arg("run")
        .arg(&job)
        .env_remove("BROKERS")
        .env("CLAIMS_TOPIC", "cli.toml.claims")
        .output()
        .expect("run runnel");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("claims.toml:7: ${BROKERS} is not set"),
        "{stderr}"
    );
}

#[test]
fn explain_prints_operators_keys_watermarks_and_state_bounds() {
    let dir = scratch_dir("explain");
    let file = dir.join("job.sql");
    std::fs::write(
        &file,
        "CREATE TABLE clicks (user_id INT, ts TIMESTAMP(3),
            WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
         WITH ('connector' = 'datagen');
         SET 'parallelism.default' = '3';
         SELECT user_id, window_end, COUNT(*) FROM TABLE(
             HOP(TABLE clicks, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '1' MINUTE))
         GROUP BY user_id, window_start, window_end;",
    )
    .expect("job file");
    let output = Command::new(runnel_binary())
        .arg("explain")
        .arg(&file)
        .output()
        .expect("run runnel");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in ["Source: clicks", "HOP", "user_id", "watermark", "state"] {
        assert!(
            stdout.to_lowercase().contains(&expected.to_lowercase()),
            "'{expected}' in:\n{stdout}"
        );
    }
    // The slide divides the size: the HOP is aggregated per pane of 5 s.
    assert!(stdout.contains("into panes of 5s"), "{stdout}");
    // The job graph: 3 generator readers, the aggregate's subtasks fed by key (the window
    // is no part of it per pane), one sink merging them.
    for expected in [
        "Job graph, parallelism 3:",
        "stage 0: Source clicks → WindowAssign → Projection, 3 readers",
        "stage 1: WindowAggregate → Projection, 3 subtasks ← stage 0, rows hashed by [clicks.user_id]",
        "stage 2: Sink, 1 subtask ← stage 1, merging 3 subtasks",
    ] {
        assert!(stdout.contains(expected), "'{expected}' in:\n{stdout}");
    }
}

/// `--metrics-addr`: scrape the running job's counters over HTTP, twice, and see them grow.
#[test]
fn prometheus_metrics_are_served_over_http() {
    let dir = scratch_dir("metrics");
    let file = dir.join("job.sql");
    std::fs::write(
        &file,
        "SET 'execution.checkpointing.interval' = '500 ms';
         CREATE TABLE clicks (user_id INT, ts TIMESTAMP(3),
            WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
         WITH ('connector' = 'datagen', 'rows-per-second' = '500', 'number-of-rows' = '2500',
               'fields.user_id.min' = '1', 'fields.user_id.max' = '50');
         CREATE TABLE counts (user_id INT, window_end TIMESTAMP(3), n BIGINT)
         WITH ('connector' = 'blackhole');
         INSERT INTO counts SELECT user_id, window_end, COUNT(*)
         FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '1' SECOND))
         GROUP BY user_id, window_start, window_end;",
    )
    .expect("job file");
    let port = free_port();
    let mut child = Command::new(runnel_binary())
        .arg("run")
        .arg(&file)
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--checkpoint-dir")
        .arg(dir.join("checkpoints"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start runnel");
    let scrape = || scrape_metrics(port);
    let value = metric_value;
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some(text) = scrape().filter(|t| value(t, "runnel_rows_in_total") > Some(0.0)) {
            break text;
        }
        assert!(Instant::now() < deadline, "no metrics within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(first.starts_with("HTTP/1.1 200 OK"), "{first}");
    assert!(first.contains("text/plain; version=0.0.4"), "{first}");
    assert!(
        first.contains("# TYPE runnel_rows_in_total counter"),
        "{first}"
    );
    // The first 1-second window closes about 2 s in (window plus watermark delay).
    let second = loop {
        if let Some(text) = scrape().filter(|t| value(t, "runnel_rows_out_total") > Some(0.0)) {
            break text;
        }
        assert!(Instant::now() < deadline, "no closed window within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    let rows = |t: &str| value(t, "runnel_rows_in_total").expect("rows in");
    assert!(rows(&second) > rows(&first), "{first}\n{second}");
    let lag = value(&second, "runnel_watermark_lag_milliseconds").expect("lag");
    assert!((0.0..10_000.0).contains(&lag), "lag {lag}: {second}");
    assert!(
        value(&second, "runnel_state_bytes") > Some(0.0),
        "open windows hold state: {second}"
    );
    assert!(second.contains("job=\"1\""), "{second}");
    // Per stage: what the window aggregate's stage wrote into the last checkpoint.
    let aggregate_checkpointed = |t: &str| {
        t.lines().any(|line| {
            line.starts_with("runnel_stage_checkpoint_bytes{")
                && line.contains("operators=\"WindowAggregate")
                && line
                    .rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| v > 0.0)
        })
    };
    let third = loop {
        if let Some(text) = scrape().filter(|t| aggregate_checkpointed(t)) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no stage checkpoint bytes within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        third.contains("# TYPE runnel_stage_checkpoint_stall_milliseconds gauge"),
        "{third}"
    );
    let status = child.wait().expect("runnel ends");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert!(status.success(), "{stderr}");
    assert_eq!(reported_count(&stderr, "rows in"), Some(2500), "{stderr}");
}
