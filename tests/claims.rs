//! The seed's example end to end: CDC claim events in Kafka → 5-minute tumbling
//! aggregate → Kafka, and the same query file → file.

use crate::common::*;

const EVENTS: usize = 30_000;
const POLICIES: i64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_tumbling_aggregate_kafka_to_kafka_and_file_to_file() {
    let claims = generate_claims(EVENTS, POLICIES, 42);
    let expected = expected_windows(&claims);

    // Kafka → Kafka: topic claims.events (3 partitions, keyed by policy_id).
    recreate_topic("claims.events", 3).await;
    recreate_topic("claims.aggregated.5min", 1).await;
    let records: Vec<Record> = claims
        .iter()
        .map(|c| {
            (
                Some(format!("{{\"policy_id\":{}}}", c.policy_id)),
                c.to_json().into_bytes(),
            )
        })
        .collect();
    produce("claims.events", &records).await;
    let sql = format!(
        "{}
        CREATE TABLE claims_aggregated_5min ({CLAIMS_OUTPUT_COLUMNS}) WITH (
            'connector' = 'kafka',
            'topic' = 'claims.aggregated.5min',
            'properties.bootstrap.servers' = '{}',
            'format' = 'json',
            'key.format' = 'json',
            'key.fields' = 'policy_id'
        );
        {CLAIMS_QUERY}",
        kafka_claims_table("claims.events", ""),
        bootstrap()
    );
    let output = run_job("claims-kafka", &sql);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "runnel failed: {stderr}");
    assert_eq!(
        reported_count(&stderr, "rows in"),
        Some(EVENTS as u64),
        "{stderr}"
    );
    assert_eq!(
        reported_count(&stderr, "late rows dropped"),
        Some(0),
        "{stderr}"
    );

    let records = consume_all("claims.aggregated.5min");
    for (_, key, value) in &records {
        let key = key.as_deref().expect("output records are keyed");
        let policy: serde_json::Value = serde_json::from_str(key).expect("JSON key");
        let row: serde_json::Value = serde_json::from_str(value).expect("JSON value");
        assert_eq!(
            policy["policy_id"], row["policy_id"],
            "key matches the row's policy"
        );
    }
    let from_kafka = parse_window_rows(records.iter().map(|(_, _, v)| v.as_str()));
    assert_eq!(
        from_kafka.len(),
        expected.len(),
        "one row per (policy, window)"
    );
    assert_eq!(from_kafka, expected);

    // File → file: the same events, the same query.
    let dir = scratch_dir("claims-file");
    let input = dir.join("claims.json");
    let lines: Vec<String> = claims.iter().map(Claim::to_json).collect();
    std::fs::write(&input, lines.join("\n")).expect("write input");
    let output_file = dir.join("out/claims_5min.json");
    let sql = format!(
        "CREATE TABLE claims (
            claim_id STRING NOT NULL, policy_id BIGINT, amount DECIMAL(12, 2), operation STRING,
            event_time TIMESTAMP(3),
            WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
        ) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
        CREATE TABLE claims_aggregated_5min ({CLAIMS_OUTPUT_COLUMNS})
        WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
        {CLAIMS_QUERY}",
        input.display(),
        output_file.display()
    );
    let output = run_job("claims-file-job", &sql);
    assert!(
        output.status.success(),
        "runnel failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&output_file).expect("output file");
    let from_file = parse_window_rows(text.lines());
    assert_eq!(from_file, from_kafka, "file and Kafka give the same rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_behind_holds_the_watermark_and_loses_nothing() {
    // Partition 1 gets all of its events late in produce order; partition 0 runs ahead.
    // The source's watermark is the minimum over partitions, so partition 1's rows are
    // on time and every window is complete.
    recreate_topic("claims.skewed", 2).await;
    recreate_topic("claims.skewed.out", 1).await;
    let claims = generate_claims(4_000, 20, 7);
    let (even, odd): (Vec<&Claim>, Vec<&Claim>) = claims.iter().partition(|c| c.policy_id % 2 == 0);
    // Even policies go to partition 0 and are produced first; odd ones to partition 1, after.
    let ordered: Vec<&Claim> = even.into_iter().chain(odd).collect();
    produce_claims_to_partitions("claims.skewed", &ordered, |c| (c.policy_id % 2) as i32).await;
    let sql = format!(
        "{}
        CREATE TABLE claims_aggregated_5min ({CLAIMS_OUTPUT_COLUMNS}) WITH (
            'connector' = 'kafka', 'topic' = 'claims.skewed.out',
            'properties.bootstrap.servers' = '{}', 'format' = 'json');
        {CLAIMS_QUERY}",
        kafka_claims_table("claims.skewed", ""),
        bootstrap()
    );
    let output = run_job("claims-skewed", &sql);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "runnel failed: {stderr}");
    assert_eq!(
        reported_count(&stderr, "late rows dropped"),
        Some(0),
        "{stderr}"
    );
    let rows = consume_all("claims.skewed.out");
    assert_eq!(
        parse_window_rows(rows.iter().map(|(_, _, v)| v.as_str())),
        expected_windows(&claims)
    );
}
