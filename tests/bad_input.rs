//! Malformed messages: they fail the job with topic, partition, offset and reason, are
//! skipped and counted with `'json.ignore-parse-errors'`, or written to a dead-letter
//! table with `'json.dead-letter.table'`; no good message is lost or doubled.

use crate::common::*;

/// Good claims with bad messages mixed in: returns (records, good claims, bad count).
fn mixed_records() -> (Vec<Record>, Vec<Claim>, usize) {
    let claims = generate_claims(2_000, 30, 99);
    let bad: [&[u8]; 4] = [
        b"{not json at all",
        br#"{"policy_id": 1, "amount": 5.00, "operation": "INSERT", "event_time": "2026-01-01 00:00:01"}"#, // no claim_id (NOT NULL)
        br#"{"claim_id": "x", "policy_id": "one", "operation": "INSERT", "event_time": "2026-01-01 00:00:01"}"#,
        b"[1, 2, 3]",
    ];
    let mut records = Vec::new();
    for (i, claim) in claims.iter().enumerate() {
        records.push((None, claim.to_json().into_bytes()));
        if i % 500 == 250 {
            records.push((None, bad[i / 500].to_vec()));
        }
    }
    (records, claims, bad.len())
}

fn job(topic: &str, out_topic: &str, ignore: bool) -> String {
    let extra = if ignore {
        ", 'json.ignore-parse-errors' = 'true'"
    } else {
        ""
    };
    format!(
        "{}
        CREATE TABLE claims_aggregated_5min ({CLAIMS_OUTPUT_COLUMNS}) WITH (
            'connector' = 'kafka', 'topic' = '{out_topic}',
            'properties.bootstrap.servers' = '{}', 'format' = 'json');
        {CLAIMS_QUERY}",
        kafka_claims_table(topic, extra),
        bootstrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_fail_the_job_with_their_place_or_are_skipped_and_counted() {
    recreate_topic("claims.malformed", 1).await;
    let (records, claims, bad) = mixed_records();
    produce("claims.malformed", &records).await;

    // Default: the first bad message fails the job, naming where it is and why.
    recreate_topic("claims.malformed.out.strict", 1).await;
    let output = run_job(
        "malformed-strict",
        &job("claims.malformed", "claims.malformed.out.strict", false),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "a malformed message must fail the job"
    );
    let first_bad_offset = 251; // 251 good records come before it
    assert!(
        stderr.contains(&format!(
            "topic claims.malformed partition 0 offset {first_bad_offset}"
        )),
        "error names topic, partition and offset: {stderr}"
    );
    assert!(
        stderr.contains("{not json at all"),
        "error shows the record: {stderr}"
    );

    // Ignoring parse errors: every bad message skipped and counted, every good one counted once.
    recreate_topic("claims.malformed.out", 1).await;
    let output = run_job(
        "malformed-lenient",
        &job("claims.malformed", "claims.malformed.out", true),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "runnel failed: {stderr}");
    assert!(
        stderr.contains(&format!("{} rows in", claims.len())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{bad} bad records skipped")),
        "{stderr}"
    );
    let rows = consume_all("claims.malformed.out");
    assert_eq!(
        parse_window_rows(rows.iter().map(|(_, _, v)| v.as_str())),
        expected_windows(&claims)
    );

    // A dead-letter table: every bad message written there once, with its place and
    // reason, under exactly-once with the output; the good ones counted once.
    recreate_topic("claims.malformed.out.exact", 1).await;
    recreate_topic("claims.malformed.dead", 1).await;
    let dir = scratch_dir("malformed-dead-letters");
    let sql = format!(
        "SET 'execution.checkpointing.interval' = '200 ms';
        SET 'state.checkpoints.dir' = '{}';
        {}
        CREATE TABLE bad_claims (source_table STRING, topic STRING, `partition` INT,
            `offset` BIGINT, reason STRING, record STRING) WITH (
            'connector' = 'kafka', 'topic' = 'claims.malformed.dead',
            'properties.bootstrap.servers' = '{servers}', 'format' = 'json');
        CREATE TABLE claims_aggregated_5min ({CLAIMS_OUTPUT_COLUMNS}) WITH (
            'connector' = 'kafka', 'topic' = 'claims.malformed.out.exact',
            'properties.bootstrap.servers' = '{servers}', 'format' = 'json',
            'sink.delivery-guarantee' = 'exactly-once');
        {CLAIMS_QUERY}",
        dir.join("checkpoints").display(),
        kafka_claims_table(
            "claims.malformed",
            ", 'json.dead-letter.table' = 'bad_claims'"
        )
        .replace("runnel-claims-test", "runnel-claims-dead-letters"),
        servers = bootstrap(),
    );
    let output = run_job("malformed-dead-letters", &sql);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "runnel failed: {stderr}");
    assert!(
        stderr.contains(&format!(
            "{bad} bad records ({bad} written to dead-letter tables)"
        )),
        "{stderr}"
    );
    let rows = consume_all("claims.malformed.out.exact");
    assert_eq!(
        parse_window_rows(rows.iter().map(|(_, _, v)| v.as_str())),
        expected_windows(&claims)
    );
    let letters: Vec<serde_json::Value> = consume_all("claims.malformed.dead")
        .iter()
        .map(|(_, _, v)| serde_json::from_str(v).expect("a dead letter is JSON"))
        .collect();
    assert_eq!(letters.len(), bad, "{letters:?}");
    // The bad records sit after 251, 501, 751 and 1001 good ones (one per 500, shifted
    // by those before).
    let offsets: Vec<i64> = letters
        .iter()
        .filter_map(|l| l["offset"].as_i64())
        .collect();
    assert_eq!(offsets, [251, 752, 1253, 1754], "{letters:?}");
    let first = &letters[0];
    assert_eq!(first["source_table"], "claims");
    assert_eq!(first["topic"], "claims.malformed");
    assert_eq!(first["partition"], 0);
    assert_eq!(first["record"], "{not json at all");
    assert!(
        first["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{first}"
    );
}
