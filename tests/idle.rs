//! Time that moves without data, against the real broker: `'scan.watermark.idle-timeout'`
//! (a Kafka partition with no data stops holding the watermark back, so windows close on
//! the partitions that do have data), the all-idle wall-clock advance, and
//! processing-time windows closing as the system clock passes them.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::*;

/// Kills the job when the test ends, however it ends.
struct Job(Child);

impl Drop for Job {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts an unbounded `runnel run` printing the claims aggregate; returns its stdout lines.
fn start_job(name: &str, topic: &str, extra: &str) -> (Job, mpsc::Receiver<String>) {
    start_sql(name, &claims_job(topic, extra, ""), None)
}

/// The claims job over `topic` (table options `extra`), after the statements `prefix`.
fn claims_job(topic: &str, extra: &str, prefix: &str) -> String {
    format!(
        "{prefix}
        CREATE TABLE claims (
            claim_id STRING, policy_id BIGINT, amount DECIMAL(12, 2), operation STRING,
            event_time TIMESTAMP(3),
            WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
        ) WITH (
            'connector' = 'kafka', 'topic' = '{topic}',
            'properties.bootstrap.servers' = '{}',
            'scan.startup.mode' = 'earliest-offset', 'format' = 'json'{extra});
        CREATE TABLE claims_aggregated_5min ({CLAIMS_OUTPUT_COLUMNS}) WITH ('connector' = 'print');
        {CLAIMS_QUERY}",
        bootstrap()
    )
}

/// Starts `runnel run` on `sql` (serving its metrics on `metrics_port`, if given);
/// returns its stdout lines.
fn start_sql(name: &str, sql: &str, metrics_port: Option<u16>) -> (Job, mpsc::Receiver<String>) {
    let file = scratch_dir(name).join("job.sql");
    std::fs::write(&file, sql).expect("job file");
    let mut command = Command::new(runnel_binary());
    command.arg("run").arg(&file);
    if let Some(port) = metrics_port {
        command
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{port}"));
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start runnel");
    let stdout = child.stdout.take().expect("stdout");
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    (Job(child), lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_partition_no_longer_holds_the_watermark_back() {
    // Ten minutes of events, all in partition 0 of a 2-partition topic.
    recreate_topic("claims.idle", 2).await;
    let claims = generate_claims(600, 10, 3);
    let all: Vec<&Claim> = claims.iter().collect();
    produce_claims_to_partitions("claims.idle", &all, |_| 0).await;

    // Windows up to 00:05 are complete in partition 0 (its watermark reaches ~00:09:54);
    // a few early events fall in the window before 00:00.
    let first_end = format_ts(1_767_225_600_000 + 300_000);
    let expected: Vec<String> = expected_windows(&claims)
        .into_iter()
        .filter(|((_, _, end), _)| *end <= first_end)
        .map(|((policy, start, end), (count, cents))| {
            format!(
                "+I[{policy}, {start}, {end}, {count}, {}.{:02}]",
                cents / 100,
                cents % 100
            )
        })
        .collect();
    assert!(!expected.is_empty());

    // Without an idle timeout, the empty partition 1 holds the watermark: nothing closes,
    // even once every event has been read (the job's metrics say when).
    let port = free_port();
    let (job, lines) = start_sql("idle-off", &claims_job("claims.idle", "", ""), Some(port));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let read = scrape_metrics(port).and_then(|t| metric_value(&t, "runnel_rows_in_total"));
        if read == Some(claims.len() as f64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job read {read:?} of {} events within 30 s",
            claims.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let early = lines.recv_timeout(Duration::from_secs(2));
    assert!(
        early.is_err(),
        "no window may close while partition 1 holds the watermark: {early:?}"
    );
    drop(job);

    // With it, partition 1 turns idle after 1 s and the first window is emitted, complete.
    let (_job, lines) = start_job(
        "idle-on",
        "claims.idle",
        ", 'scan.watermark.idle-timeout' = '1 s'",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "only {} of {} rows of the first window within 30 s: {seen:?}",
                seen.len(),
                expected.len()
            ),
        }
    }
    seen.sort();
    let mut expected = expected;
    expected.sort();
    assert_eq!(seen, expected);
}

/// Collects `count` lines within `seconds`, or fails naming what arrived.
fn collect_lines(lines: &mpsc::Receiver<String>, count: usize, seconds: u64) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut seen = Vec::new();
    while seen.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "only {} of {count} rows within {seconds} s: {seen:?}",
                seen.len()
            ),
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_partition_idle_the_wall_clock_closes_the_last_windows() {
    // Ten minutes of events in one partition, then silence: the last window [00:05, 00:10)
    // stays open without the advance, since no later row moves the watermark past 00:10.
    recreate_topic("claims.quiet", 1).await;
    let claims = generate_claims(600, 10, 5);
    let all: Vec<&Claim> = claims.iter().collect();
    produce_claims_to_partitions("claims.quiet", &all, |_| 0).await;
    let mut expected: Vec<String> = expected_windows(&claims)
        .into_iter()
        .map(|((policy, start, end), (count, cents))| {
            format!(
                "+I[{policy}, {start}, {end}, {count}, {}.{:02}]",
                cents / 100,
                cents % 100
            )
        })
        .collect();
    expected.sort();

    // The job-wide default idle timeout (Flink's key) and the opt-in advance.
    let sql = claims_job(
        "claims.quiet",
        "",
        "SET 'table.exec.source.idle-timeout' = '1 s';\n\
         SET 'runnel.watermark.idle-advance' = 'true';",
    );
    let started = Instant::now();
    let (_job, lines) = start_sql("idle-advance", &sql, None);
    let mut seen = collect_lines(&lines, expected.len(), 60);
    seen.sort();
    assert_eq!(seen, expected, "every window, the last included, complete");
    eprintln!(
        "all {} windows closed {:.1} s after the job started",
        expected.len(),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processing_time_windows_close_as_the_clock_passes() {
    recreate_topic("clicks.proctime", 1).await;
    let records: Vec<Record> = (0..200)
        .map(|i| (None, format!(r#"{{"user": "u{}"}}"#, i % 4).into_bytes()))
        .collect();
    produce("clicks.proctime", &records).await;
    let sql = format!(
        "CREATE TABLE clicks (`user` STRING, pt AS PROCTIME()) WITH (
            'connector' = 'kafka', 'topic' = 'clicks.proctime',
            'properties.bootstrap.servers' = '{}',
            'scan.startup.mode' = 'earliest-offset', 'format' = 'json');
         CREATE TABLE counts (`user` STRING, window_end TIMESTAMP_LTZ(3), clicks BIGINT)
            WITH ('connector' = 'print');
         INSERT INTO counts
         SELECT `user`, window_end, COUNT(*) FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(pt), INTERVAL '1' SECOND))
         GROUP BY `user`, window_start, window_end;",
        bootstrap()
    );
    // The source never ends: only the processing clock can close the windows.
    let (_job, lines) = start_sql("proctime", &sql, None);
    let mut total = 0;
    let mut rows = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while total < 200 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("only {total} of 200 clicks counted within 30 s"));
        let count: u64 = line
            .trim_end_matches(']')
            .rsplit(", ")
            .next()
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("a count in {line}"));
        total += count;
        rows += 1;
    }
    assert_eq!(total, 200, "every click counted once");
    assert!(rows >= 4, "one row per user and window");
}
