//! One job across several `runnel` processes, with Kafka as the cluster
//! (`SET 'execution.target' = 'kafka'`): the processes join one consumer group, rows
//! cross between them through repartition topics, state lives in changelog topics, and
//! every commit is one Kafka transaction. Each test starts real `runnel run` processes
//! against the real broker and reads the output `read_committed`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::*;

const EVENTS: usize = 60_000;
const POLICIES: i64 = 400;
const PARTITIONS: i32 = 6;

/// A job name no earlier run used (its internal topics are new).
fn fresh_job(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("scale-{tag}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

/// The claims job spread over processes as `job`, reading `input` to its end.
fn claims_job(job: &str, input: &str, output: &str) -> String {
    format!(
        "SET 'execution.target' = 'kafka';
        SET 'pipeline.name' = '{job}';
        SET 'pipeline.max-parallelism' = '6';
        SET 'execution.checkpointing.interval' = '300 ms';
        {}
        CREATE TABLE claims_aggregated_5min ({CLAIMS_OUTPUT_COLUMNS}) WITH (
            'connector' = 'kafka', 'topic' = '{output}',
            'properties.bootstrap.servers' = '{}',
            'format' = 'json', 'key.format' = 'json', 'key.fields' = 'policy_id',
            'sink.delivery-guarantee' = 'exactly-once'
        );
        {CLAIMS_QUERY}",
        kafka_claims_table(input, ""),
        bootstrap()
    )
}

/// How the output compares with the expected windows.
#[derive(Debug, Default, PartialEq)]
struct Comparison {
    rows: usize,
    expected: usize,
    missing: usize,
    duplicated: usize,
    wrong: usize,
}

fn compare_claims(output: &str, claims: &[Claim]) -> Comparison {
    let expected = expected_windows(claims);
    let rows = consume_all(output);
    let mut seen: BTreeMap<(i64, String, String), Vec<(i64, i64)>> = BTreeMap::new();
    for (_, _, value) in &rows {
        for (key, row) in parse_window_rows([value.as_str()]) {
            seen.entry(key).or_default().push(row);
        }
    }
    let mut comparison = Comparison {
        rows: rows.len(),
        expected: expected.len(),
        ..Comparison::default()
    };
    for (key, want) in &expected {
        match seen.get(key) {
            None => comparison.missing += 1,
            Some(got) => {
                comparison.duplicated += got.len() - 1;
                comparison.wrong += got.iter().filter(|g| *g != want).count();
            }
        }
    }
    comparison.wrong += seen.keys().filter(|k| !expected.contains_key(*k)).count();
    comparison
}

/// Writes the claims into `input` (6 partitions, events spread over them in turn).
async fn produce_claims(input: &str, claims: &[Claim]) {
    recreate_topic(input, PARTITIONS).await;
    let refs: Vec<&Claim> = claims.iter().collect();
    produce_claims_to_partitions(input, &refs, |c| {
        c.claim_id
            .trim_start_matches("c-")
            .parse::<i32>()
            .unwrap_or(0)
            % PARTITIONS
    })
    .await;
}

/// Waits (up to `timeout`) for every process to exit; returns their logs, panicking with
/// them when one fails or hangs.
fn wait_all(mut processes: Vec<Running>, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut logs = vec![String::new(); processes.len()];
    let mut done = vec![false; processes.len()];
    while done.iter().any(|d| !d) {
        for (i, running) in processes.iter_mut().enumerate() {
            if done[i] {
                continue;
            }
            drain_now(running, &mut logs[i]);
            if let Some(status) = running.child.try_wait().expect("wait") {
                drain(running, &mut logs[i]);
                assert!(status.success(), "process {i} failed ({status}):\n{}", logs[i]);
                done[i] = true;
            }
        }
        if Instant::now() > deadline {
            for running in &mut processes {
                let _ = running.child.kill();
            }
            panic!("the job did not end within {timeout:?}:\n{}", logs.join("\n----\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    logs
}

/// Moves the stderr lines already there into `log`.
fn drain_now(running: &Running, log: &mut String) {
    while let Ok(line) = running.lines.try_recv() {
        log.push_str(&line);
        log.push('\n');
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_run_one_claims_job_exactly_once() {
    let job = fresh_job("claims3");
    let (input, output) = (format!("{job}.in"), format!("{job}.out"));
    let claims = generate_claims(EVENTS, POLICIES, 17);
    produce_claims(&input, &claims).await;
    recreate_topic(&output, 3).await;
    let dir = scratch_dir(&job);
    let file = dir.join("job.sql");
    std::fs::write(&file, claims_job(&job, &input, &output)).expect("job file");
    let started = Instant::now();
    let processes: Vec<Running> = (0..3)
        .map(|i| start_with(&file, &dir.join(format!("local-{i}")), None))
        .collect();
    let logs = tokio::task::spawn_blocking(move || wait_all(processes, Duration::from_secs(180)))
        .await
        .expect("processes");
    let elapsed = started.elapsed();
    let comparison = compare_claims(&output, &claims);
    let owners = logs.iter().filter(|log| log.contains("gained tasks")).count();
    eprintln!("three processes ({owners} owned tasks), {EVENTS} events in {elapsed:?}: {comparison:?}");
    assert_eq!(
        (comparison.missing, comparison.duplicated, comparison.wrong),
        (0, 0, 0),
        "{comparison:?}\n{}",
        logs.join("\n----\n")
    );
    assert_eq!(comparison.rows, comparison.expected);
    assert_eq!(owners, 3, "not every process owned a task:\n{}", logs.join("\n----\n"));
}
