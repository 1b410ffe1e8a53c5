//! `'scan.watermark.idle-timeout'`: a Kafka partition with no data stops holding the
//! watermark back, so windows close on the partitions that do have data.

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
    let sql = format!(
        "CREATE TABLE claims (
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
    );
    let file = scratch_dir(name).join("job.sql");
    std::fs::write(&file, sql).expect("job file");
    let mut child = Command::new(runnel_binary())
        .arg("run")
        .arg(&file)
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

    // Without an idle timeout, the empty partition 1 holds the watermark: nothing closes.
    let (job, lines) = start_job("idle-off", "claims.idle", "");
    let early = lines.recv_timeout(Duration::from_secs(4));
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
