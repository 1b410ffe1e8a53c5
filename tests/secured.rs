//! A secured broker: a second broker of `scripts/kafka.sh` with a SASL_SSL listener (TLS
//! with a throwaway CA, SCRAM-SHA-512 user `runnel`). The claims job reads and writes
//! through it exactly-once; a wrong password is a clear error naming the table, not a
//! hang; and the password appears nowhere in what Runnel prints.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

/// The broker's plain port (the tests' own producer and reader); SASL_SSL is on + 2.
const PORT: u16 = 9196;
const SECURE_PORT: u16 = PORT + 2;
const PASSWORD: &str = "Scram-t3st-pa55word-41d7";

/// `scripts/kafka.sh COMMAND` for the secured broker.
fn secured_broker(command: &str) {
    kafka_script(PORT, command, &[("KAFKA_SCRAM_PASSWORD", PASSWORD)]);
}

/// The claims job over the secured listener, bounded, with `password`: the source gives
/// its credentials as Flink users do (`sasl.jaas.config`), the sink as librdkafka's
/// `sasl.username` and `sasl.password`.
fn job_sql(input: &str, output: &str, checkpoints: &std::path::Path, password: &str) -> String {
    let ca = format!("/var/tmp/runnel-kafka-{PORT}/tls/ca.pem");
    let secured = format!(
        "'properties.bootstrap.servers' = '127.0.0.1:{SECURE_PORT}',
        'properties.security.protocol' = 'SASL_SSL',
        'properties.sasl.mechanism' = 'SCRAM-SHA-512',
        'properties.ssl.ca.location' = '{ca}'"
    );
    format!(
        "SET 'execution.checkpointing.interval' = '200 ms';
        SET 'state.checkpoints.dir' = '{checkpoints}';
        SET 'parallelism.default' = '2';
        CREATE TABLE claims (
            claim_id STRING NOT NULL, policy_id BIGINT, amount DECIMAL(12, 2), operation STRING,
            event_time TIMESTAMP(3),
            WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
        ) WITH (
            'connector' = 'kafka', 'topic' = '{input}', {secured},
            'properties.sasl.jaas.config' = 'org.apache.kafka.common.security.scram.ScramLoginModule required username=\"runnel\" password=\"{password}\";',
            'properties.group.id' = 'runnel-{input}',
            'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
            'format' = 'json'
        );
        CREATE TABLE claims_aggregated_5min ({CLAIMS_OUTPUT_COLUMNS}) WITH (
            'connector' = 'kafka', 'topic' = '{output}', {secured},
            'properties.sasl.username' = 'runnel', 'properties.sasl.password' = '{password}',
            'format' = 'json', 'key.format' = 'json', 'key.fields' = 'policy_id',
            'sink.delivery-guarantee' = 'exactly-once',
            'sink.transactional-id-prefix' = 'runnel-{output}'
        );
        {CLAIMS_QUERY}",
        checkpoints = checkpoints.display(),
    )
}

/// Runs `runnel ARGS` with the most verbose logs; its exit status and all it printed.
fn runnel(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let output = Command::new(runnel_binary())
        .args(args)
        .env("RUNNEL_LOG", "debug")
        .output()
        .expect("runnel");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claims_job_runs_exactly_once_against_scram_over_tls() {
    secured_broker("start");
    let plain = format!("127.0.0.1:{PORT}");
    let (input, output) = ("secured.claims", "secured.claims.out");
    recreate_topic_on(&plain, input, 2).await;
    recreate_topic_on(&plain, output, 1).await;
    let claims = generate_claims(20_000, 200, 31);
    let records: Vec<Record> = claims
        .iter()
        .map(|c| (None, c.to_json().into_bytes()))
        .collect();
    produce_with(&test_producer(&plain), input, &records).await;
    produce_end_of_claims(&plain, input, 2, &claims).await;

    let dir = scratch_dir("secured");
    let job = dir.join("job.sql");
    std::fs::write(
        &job,
        job_sql(input, output, &dir.join("checkpoints"), PASSWORD),
    )
    .expect("job file");
    let (explained, explain_output) = tokio::task::spawn_blocking({
        let job = job.clone();
        move || runnel(&["explain".as_ref(), job.as_os_str()])
    })
    .await
    .expect("explain");
    assert!(explained, "{explain_output}");
    let (ran, run_output) = tokio::task::spawn_blocking({
        let job = job.clone();
        move || runnel(&["run".as_ref(), job.as_os_str()])
    })
    .await
    .expect("run");
    assert!(ran, "the job failed:\n{run_output}");
    let rows = consume_all_on(&plain, output);
    let comparison = compare_window_rows(&rows, &expected_windows(&claims));
    assert_eq!(
        (comparison.missing, comparison.duplicated, comparison.wrong),
        (0, 0, 0),
        "{comparison:?}"
    );
    assert_eq!(comparison.rows, comparison.expected);

    // A wrong password: refused at start, naming the table, soon.
    let wrong = "Wr0ng-pa55word-for-the-test";
    let bad_job = dir.join("wrong-password.sql");
    std::fs::write(
        &bad_job,
        job_sql(input, output, &dir.join("checkpoints-wrong"), wrong),
    )
    .expect("job file");
    let started = Instant::now();
    let (ran_wrong, wrong_output) = tokio::task::spawn_blocking({
        let bad_job = bad_job.clone();
        move || runnel(&["run".as_ref(), bad_job.as_os_str()])
    })
    .await
    .expect("run");
    let took = started.elapsed();
    secured_broker("stop");
    assert!(
        !ran_wrong,
        "a wrong password must fail the job:\n{wrong_output}"
    );
    assert!(
        wrong_output.contains("table claims")
            || wrong_output.contains("table claims_aggregated_5min"),
        "the error names the table:\n{wrong_output}"
    );
    assert!(
        wrong_output.to_ascii_lowercase().contains("authentication"),
        "the error says why:\n{wrong_output}"
    );
    assert!(took < Duration::from_secs(40), "it took {took:?} to fail");
    let error = wrong_output
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or("");
    eprintln!("a wrong password failed the job after {took:?}: {error}");

    // The password is in none of it (logs at debug, EXPLAIN, the summary, errors).
    for (what, printed) in [
        ("explain", &explain_output),
        ("run", &run_output),
        ("run with a wrong password", &wrong_output),
    ] {
        for secret in [PASSWORD, wrong] {
            assert!(
                !printed.contains(secret),
                "{what} printed a password:\n{printed}"
            );
        }
    }
}
