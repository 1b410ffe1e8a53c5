//! Change data capture against the real broker: upsert topics in and out.

use std::collections::BTreeMap;

use crate::common::*;

/// One claim's row, by claim id.
#[derive(Debug, Clone, PartialEq)]
struct ClaimRow {
    policy_id: i64,
    amount_cents: i64,
}

/// An upsert record: key, and value (`None`: a tombstone).
type Upsert = (String, Option<String>);

/// Random inserts, amount updates, moves to another policy and deletes of claims, as
/// upsert records (key `{"claim_id": ...}`, a JSON value or a tombstone); then, apart,
/// the deletes that take every claim of policies 0 and 1 away; and the table they leave.
fn claim_changes(
    count: usize,
    seed: u64,
) -> (Vec<Upsert>, Vec<Upsert>, BTreeMap<String, ClaimRow>) {
    let mut rng = Rng::new(seed);
    let mut live: BTreeMap<String, ClaimRow> = BTreeMap::new();
    let mut records = Vec::with_capacity(count);
    let mut next_claim = 0;
    for _ in 0..count {
        let existing: Vec<String> = live.keys().cloned().collect();
        let choice = rng.below(10);
        let (claim, row) = if existing.is_empty() || choice < 4 {
            next_claim += 1;
            let row = ClaimRow {
                policy_id: rng.below(20) as i64,
                amount_cents: rng.below(100_000) as i64,
            };
            (format!("c{next_claim}"), Some(row))
        } else {
            let claim = existing[rng.below(existing.len() as u64) as usize].clone();
            let mut row = live[&claim].clone();
            match choice {
                4..=6 => row.amount_cents = rng.below(100_000) as i64,
                7 | 8 => row.policy_id = rng.below(20) as i64,
                _ => {
                    live.remove(&claim);
                    records.push((format!(r#"{{"claim_id":"{claim}"}}"#), None));
                    continue;
                }
            }
            (claim, Some(row))
        };
        let row = row.expect("a row");
        records.push((
            format!(r#"{{"claim_id":"{claim}"}}"#),
            Some(format!(
                r#"{{"claim_id":"{claim}","policy_id":{},"amount":{}.{:02}}}"#,
                row.policy_id,
                row.amount_cents / 100,
                row.amount_cents % 100
            )),
        ));
        live.insert(claim, row);
    }
    // Policies 0 and 1 lose every claim at the end: their totals must be deleted.
    let emptied: Vec<String> = live
        .iter()
        .filter(|(_, row)| row.policy_id < 2)
        .map(|(claim, _)| claim.clone())
        .collect();
    let mut deletes = Vec::new();
    for claim in emptied {
        live.remove(&claim);
        deletes.push((format!(r#"{{"claim_id":"{claim}"}}"#), None));
    }
    (records, deletes, live)
}

/// Runs `runnel run` on `sql` with the checkpoint directory `checkpoints`; fails the test
/// with its output if it fails.
fn run_to_end(file: &std::path::Path, checkpoints: &std::path::Path) {
    let run = std::process::Command::new(runnel_binary())
        .arg("run")
        .arg(file)
        .arg("--checkpoint-dir")
        .arg(checkpoints)
        .output()
        .expect("run runnel");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// Each key's last record in `topic` (read committed): `None` for a tombstone.
fn last_per_policy(topic: &str) -> BTreeMap<i64, Option<serde_json::Value>> {
    let mut last = BTreeMap::new();
    for (_, key, value) in consume_all(topic) {
        let key: serde_json::Value = serde_json::from_str(&key.expect("keyed")).expect("JSON key");
        let policy = key["policy_id"].as_i64().expect("policy_id");
        let value = (!value.is_empty()).then(|| serde_json::from_str(&value).expect("JSON value"));
        last.insert(policy, value);
    }
    last
}

/// Produces keyed records, a `None` value as a tombstone, and waits for them all.
async fn produce_upserts(topic: &str, records: &[(String, Option<String>)]) {
    use rdkafka::producer::FutureRecord;
    let producer = test_producer(&bootstrap());
    let mut pending = Vec::new();
    for (key, value) in records {
        let mut record: FutureRecord<'_, str, str> = FutureRecord::to(topic).key(key.as_str());
        if let Some(value) = value {
            record = record.payload(value.as_str());
        }
        pending.push(producer.send_result(record).expect("queued"));
    }
    for delivery in pending {
        delivery.await.expect("delivery").expect("acknowledged");
    }
}

/// Claims arrive as an upsert topic (inserts, updates, moves, deletes, tombstones); the
/// per-policy totals go to an upsert topic exactly-once. Read back committed, each
/// policy's last record is its total over the claims so far. Then the claims of two
/// policies are deleted and the job runs again from its checkpoint: their totals end in
/// tombstones, every other total is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_kafka_totals_end_as_the_final_claims_say() {
    let (input, output) = ("cdc.upsert.claims", "cdc.upsert.totals");
    recreate_topic(input, 3).await;
    recreate_topic(output, 1).await;
    let (records, deletes, live) = claim_changes(3_000, 11);
    produce_upserts(input, &records).await;
    let dir = scratch_dir("upsert-kafka");
    let sql = format!(
        "SET 'execution.checkpointing.interval' = '1 s';
         CREATE TABLE claims (
             claim_id STRING, policy_id BIGINT, amount DECIMAL(12, 2),
             PRIMARY KEY (claim_id) NOT ENFORCED
         ) WITH (
             'connector' = 'upsert-kafka', 'topic' = '{input}',
             'properties.bootstrap.servers' = '{servers}',
             'key.format' = 'json', 'value.format' = 'json',
             'scan.bounded.mode' = 'latest-offset');
         CREATE TABLE totals (
             policy_id BIGINT, claims BIGINT, total DECIMAL(22, 2),
             PRIMARY KEY (policy_id) NOT ENFORCED
         ) WITH (
             'connector' = 'upsert-kafka', 'topic' = '{output}',
             'properties.bootstrap.servers' = '{servers}',
             'key.format' = 'json', 'value.format' = 'json',
             'sink.delivery-guarantee' = 'exactly-once',
             'sink.buffer-flush.max-rows' = '50', 'sink.buffer-flush.interval' = '200 ms');
         INSERT INTO totals
         SELECT policy_id, COUNT(*), SUM(amount) FROM claims GROUP BY policy_id;",
        servers = bootstrap()
    );
    let file = dir.join("job.sql");
    std::fs::write(&file, sql).expect("job file");
    let checkpoints = dir.join("checkpoints");
    run_to_end(&file, &checkpoints);
    let first = last_per_policy(output);
    assert!(
        first.get(&0).is_some_and(Option::is_some) && first.get(&1).is_some_and(Option::is_some),
        "policies 0 and 1 have totals before their claims go: {first:?}"
    );
    produce_upserts(input, &deletes).await;
    run_to_end(&file, &checkpoints);

    // Expected: each policy with claims left, its count and total.
    let mut expected: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for row in live.values() {
        let entry = expected.entry(row.policy_id).or_default();
        entry.0 += 1;
        entry.1 += row.amount_cents;
    }
    let last = last_per_policy(output);
    for (policy, value) in &last {
        match (value, expected.get(policy)) {
            (Some(row), Some(&(claims, cents))) => {
                assert_eq!(
                    row["claims"].as_i64(),
                    Some(claims),
                    "policy {policy}: {row}"
                );
                let total = row["total"].to_string().trim_matches('"').parse::<f64>();
                assert_eq!(
                    total.map(|t| (t * 100.0).round() as i64),
                    Ok(cents),
                    "policy {policy}: {row}"
                );
            }
            (None, None) => {}
            (value, wanted) => panic!("policy {policy}: wrote {value:?}, expected {wanted:?}"),
        }
    }
    assert_eq!(last.get(&0), Some(&None), "policy 0 ends in a tombstone");
    assert_eq!(last.get(&1), Some(&None), "policy 1 ends in a tombstone");
    for policy in expected.keys() {
        assert!(last.contains_key(policy), "policy {policy} has no record");
    }
    eprintln!(
        "upsert-kafka: {} changes in, then {} deletes; {} policies out, 2 ended in a tombstone",
        records.len(),
        deletes.len(),
        last.len()
    );
}
