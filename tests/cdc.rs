//! Change data capture on real systems: upsert topics in and out of the broker, and
//! PostgreSQL → Debezium → Kafka → Runnel → a PostgreSQL warehouse.

use std::collections::BTreeMap;
use std::time::Duration;

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
    upsert_totals_end_as_the_final_claims_say("", "").await;
}

/// The same with incremental checkpoints: the second run restores the aggregate from a
/// chain of the groups each checkpoint changed, the deleted ones as tombstones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_kafka_totals_end_as_the_final_claims_say_with_incremental_checkpoints() {
    upsert_totals_end_as_the_final_claims_say(
        ".incremental",
        "SET 'execution.checkpointing.incremental' = 'true';",
    )
    .await;
}

async fn upsert_totals_end_as_the_final_claims_say(variant: &str, settings: &str) {
    let (input, output) = (
        format!("cdc.upsert.claims{variant}"),
        format!("cdc.upsert.totals{variant}"),
    );
    let (input, output) = (input.as_str(), output.as_str());
    recreate_topic(input, 3).await;
    recreate_topic(output, 1).await;
    let (records, deletes, live) = claim_changes(3_000, 11);
    produce_upserts(input, &records).await;
    let dir = scratch_dir(&format!("upsert-kafka{variant}"));
    let sql = format!(
        "SET 'execution.checkpointing.interval' = '1 s';
         {settings}
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

/// Random changes to `cdc_e2e.claims` and `cdc_e2e.policies` in small transactions, as an
/// application makes them: new claims (filed at a random minute of 2026-01-01, 00:00 to
/// 02:00), amount updates, moves to another policy, deletes; policies renamed, deleted
/// and created again — until `changes` rows changed (a statement that finds no row
/// changes nothing). Returns how many changed.
async fn change_claims(
    client: &mut tokio_postgres::Client,
    changes: usize,
    seed: u64,
    pause: Duration,
) -> usize {
    let mut rng = Rng::new(seed);
    let mut made = 0;
    while made < changes {
        let transaction = client.transaction().await.expect("begin");
        for _ in 0..1 + rng.below(5) {
            let claim = rng.below(3_000) as i64;
            let sql = match rng.below(11) {
                10 => match rng.below(4) {
                    0 => "DELETE FROM cdc_e2e.policies WHERE policy_id = $2 AND $1::bigint >= 0 AND $3::bigint >= 0",
                    _ => {
                        "INSERT INTO cdc_e2e.policies (policy_id, holder)
                         VALUES ($2, 'holder-' || $3::bigint % 1000 || '-' || $1::bigint)
                         ON CONFLICT (policy_id) DO UPDATE SET holder = EXCLUDED.holder"
                    }
                },
                0..=3 => {
                    "INSERT INTO cdc_e2e.claims (claim_id, policy_id, amount, status, filed_at)
                     VALUES ($1, $2, $3::bigint / 100.0, 'open',
                             timestamp '2026-01-01' + ($1::bigint * 7 % 7200) * interval '1 second')
                     ON CONFLICT (claim_id) DO UPDATE SET amount = EXCLUDED.amount"
                }
                4..=6 => {
                    "UPDATE cdc_e2e.claims SET amount = $3::bigint / 100.0, status = 'assessed'
                     WHERE claim_id = $1 AND $2::bigint >= 0"
                }
                7 | 8 => {
                    "UPDATE cdc_e2e.claims SET policy_id = $2 WHERE claim_id = $1 AND $3::bigint >= 0"
                }
                _ => "DELETE FROM cdc_e2e.claims WHERE claim_id = $1 AND $2::bigint >= 0 AND $3::bigint >= 0",
            };
            let policy = rng.below(50) as i64;
            let cents = rng.below(1_000_000) as i64;
            let changed = transaction
                .execute(sql, &[&claim, &policy, &cents])
                .await
                .expect("change a claim");
            made += changed as usize;
        }
        transaction.commit().await.expect("commit");
        tokio::time::sleep(pause).await;
    }
    made
}

/// `(policy, window or total, claims, amount)` rows, in key order.
type Totals = Vec<(i64, String, i64, String)>;

/// PostgreSQL's own answers and the warehouse tables Runnel loads: per-policy totals,
/// per-policy 5-minute windows by filing time (the future sentinel claim's policy, 999,
/// left out: its window never closes), and each claim with its policy's holder (as
/// `(claim, holder, policy, amount)`).
async fn totals(client: &tokio_postgres::Client) -> [(Totals, Totals); 3] {
    let rows = |sql: &'static str| async move {
        client
            .query(sql, &[])
            .await
            .expect("query")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect::<Totals>()
    };
    [
        (
            rows(
                "SELECT policy_id, '', count(*), sum(amount)::numeric(22, 2)::text
                  FROM cdc_e2e.claims WHERE policy_id <> 999 GROUP BY policy_id ORDER BY 1",
            )
            .await,
            rows(
                "SELECT policy_id, '', claims, total::text
                  FROM cdc_e2e_warehouse.policy_totals WHERE policy_id <> 999 ORDER BY 1",
            )
            .await,
        ),
        (
            rows(
                "SELECT policy_id, date_bin('5 minutes', filed_at, timestamp '2026-01-01')::text,
                         count(*), sum(amount)::numeric(22, 2)::text
                  FROM cdc_e2e.claims WHERE policy_id <> 999 GROUP BY 1, 2 ORDER BY 1, 2",
            )
            .await,
            rows(
                "SELECT policy_id, window_start::text, claims, total::text
                  FROM cdc_e2e_warehouse.policy_windows WHERE policy_id <> 999 ORDER BY 1, 2",
            )
            .await,
        ),
        (
            rows(
                "SELECT c.claim_id, p.holder, c.policy_id, c.amount::text
                  FROM cdc_e2e.claims c JOIN cdc_e2e.policies p USING (policy_id) ORDER BY 1",
            )
            .await,
            rows(
                "SELECT claim_id, holder, policy_id, amount::text
                  FROM cdc_e2e_warehouse.claim_policies ORDER BY 1",
            )
            .await,
        ),
    ]
}

/// Waits until the warehouse tables `tables` (0 totals, 1 windows, 2 claims with their
/// policy) hold PostgreSQL's own answers; fails with the first difference and the jobs'
/// logs after `within`. Returns the rows of each of the three (0 when not checked).
async fn await_warehouse_equal(
    client: &tokio_postgres::Client,
    tables: &[usize],
    within: Duration,
    running: &mut [Running],
    log: &mut String,
) -> [usize; 3] {
    let started = std::time::Instant::now();
    loop {
        let all = totals(client).await;
        let answers: Vec<&(Totals, Totals)> = tables.iter().map(|&i| &all[i]).collect();
        if answers.iter().all(|(truth, loaded)| truth == loaded) {
            return [0, 1, 2].map(|i| {
                if tables.contains(&i) {
                    all[i].0.len()
                } else {
                    0
                }
            });
        }
        if started.elapsed() > within {
            let (truth, loaded) = answers
                .iter()
                .find(|(truth, loaded)| truth != loaded)
                .expect("a difference");
            let first = truth
                .iter()
                .zip(loaded)
                .find(|(t, l)| t != l)
                .map(|(t, l)| format!("PostgreSQL says {t:?}, the warehouse holds {l:?}"))
                .unwrap_or_else(|| {
                    format!(
                        "{} rows in PostgreSQL, {} in the warehouse",
                        truth.len(),
                        loaded.len()
                    )
                });
            for job in running.iter_mut() {
                let status = job.child.try_wait().expect("wait");
                log.push_str(&format!("runnel: {status:?}\n"));
                drain(job, log);
            }
            panic!("the warehouse is not PostgreSQL's answer after {within:?}: {first}\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until `topic` holds at least `count` records (Debezium creates it with its first).
fn await_records(topic: &str, count: usize) {
    let started = std::time::Instant::now();
    loop {
        let records = consume_all(topic).len();
        if records >= count {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{topic} holds {records} records after 60 s, expected {count}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The claims table of the CDC jobs, reading Debezium's topic.
fn debezium_claims_table(topic: &str) -> String {
    format!(
        "CREATE TABLE claims (
             claim_id BIGINT, policy_id BIGINT, amount DECIMAL(12, 2), status STRING,
             filed_at TIMESTAMP(3),
             changed_at TIMESTAMP_LTZ(3) METADATA FROM 'value.source.timestamp' VIRTUAL,
             PRIMARY KEY (claim_id) NOT ENFORCED,
             WATERMARK FOR filed_at AS filed_at - INTERVAL '5' SECOND
         ) WITH (
             'connector' = 'kafka', 'topic' = '{topic}',
             'properties.bootstrap.servers' = '{servers}',
             'scan.startup.mode' = 'earliest-offset',
             'format' = 'debezium-json', 'debezium-json.schema-include' = 'true');",
        servers = bootstrap()
    )
}

/// The policies table of the CDC jobs, reading Debezium's topic.
fn debezium_policies_table(topic: &str) -> String {
    format!(
        "CREATE TABLE policies (
             policy_id BIGINT, holder STRING,
             PRIMARY KEY (policy_id) NOT ENFORCED
         ) WITH (
             'connector' = 'kafka', 'topic' = '{topic}',
             'properties.bootstrap.servers' = '{servers}',
             'scan.startup.mode' = 'earliest-offset',
             'format' = 'debezium-json', 'debezium-json.schema-include' = 'true');",
        servers = bootstrap()
    )
}

/// A warehouse table of the CDC jobs, through the `jdbc` sink with the `delivery`
/// guarantee.
fn warehouse_table(name: &str, columns: &str, delivery: &str) -> String {
    format!(
        "CREATE TABLE {name} ({columns}) WITH (
             'connector' = 'jdbc', 'url' = '{url}',
             'table-name' = 'cdc_e2e_warehouse.{name}',
             'username' = 'runnel', 'password' = 'runnel',
             'sink.buffer-flush.interval' = '200 ms',
             'sink.delivery-guarantee' = '{delivery}');",
        url = postgres_jdbc_url()
    )
}

/// Starts each job (one process each, with its own checkpoint directory).
fn start_jobs(jobs: &[(std::path::PathBuf, std::path::PathBuf)]) -> Vec<Running> {
    jobs.iter()
        .map(|(job, checkpoints)| start_with(job, checkpoints, None))
        .collect()
}

/// The whole CDC path on real systems: an application changes claims and policies in
/// PostgreSQL; Debezium (Kafka Connect) captures them into Kafka; three Runnel jobs read
/// the change events and load a PostgreSQL warehouse through the `jdbc` sink: totals per
/// policy, per-policy 5-minute windows by filing time (allowed lateness covering the run,
/// so a change to an old claim updates its window), and each claim joined with its
/// policy's holder (a regular join of the two changelogs, at parallelism 2, so a moved
/// claim's old and new joined rows come from two subtasks). After 10,000 random inserts,
/// updates, policy moves, renames and deletes (on top of a 1,000-claim, 43-policy
/// snapshot), all three warehouse tables equal PostgreSQL's own queries; then after 5,000
/// more while the jobs are killed with SIGKILL three times and restarted, all three
/// still do: the totals loaded at-least-once (idempotent upserts), the windows and the
/// join exactly-once (each checkpoint's writes in one transaction with its id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_through_debezium_and_runnel_into_a_postgres_warehouse() {
    let mut client = postgres().await;
    client
        .batch_execute(
            "DROP SCHEMA IF EXISTS cdc_e2e CASCADE;
             DROP SCHEMA IF EXISTS cdc_e2e_warehouse CASCADE;
             CREATE SCHEMA cdc_e2e;
             CREATE SCHEMA cdc_e2e_warehouse;
             CREATE TABLE cdc_e2e.claims (
                 claim_id bigint PRIMARY KEY, policy_id bigint NOT NULL,
                 amount numeric(12, 2) NOT NULL, status text NOT NULL,
                 filed_at timestamp(3) NOT NULL);
             INSERT INTO cdc_e2e.claims
             SELECT g, g % 50, (g * 37 % 100000) / 100.0, 'open',
                    timestamp '2026-01-01' + (g * 7 % 7200) * interval '1 second'
             FROM generate_series(0, 2999, 3) AS g;
             CREATE TABLE cdc_e2e.policies (policy_id bigint PRIMARY KEY, holder text NOT NULL);
             INSERT INTO cdc_e2e.policies
             SELECT g, 'holder-' || g FROM generate_series(0, 49) AS g WHERE g % 7 <> 3;
             CREATE TABLE cdc_e2e_warehouse.claim_policies (
                 claim_id bigint PRIMARY KEY, holder text NOT NULL, policy_id bigint NOT NULL,
                 amount numeric(12, 2) NOT NULL);
             CREATE TABLE cdc_e2e_warehouse.policy_totals (
                 policy_id bigint PRIMARY KEY, claims bigint NOT NULL, total numeric(22, 2));
             CREATE TABLE cdc_e2e_warehouse.policy_windows (
                 policy_id bigint, window_start timestamp(3), claims bigint NOT NULL,
                 total numeric(22, 2), PRIMARY KEY (policy_id, window_start));",
        )
        .await
        .expect("create the tables");

    // A connector, slot and topic of this run's own.
    let run = format!(
        "runnel-e2e-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let prefix = run.replace('-', "_");
    start_debezium(&run, &prefix, "cdc_e2e.claims,cdc_e2e.policies");
    let topic = format!("{prefix}.cdc_e2e.claims");

    let dir = scratch_dir("debezium-warehouse");
    let claims = debezium_claims_table(&topic);
    let policies = debezium_policies_table(&format!("{prefix}.cdc_e2e.policies"));
    let totals_job = format!(
        "SET 'execution.checkpointing.interval' = '1 s';
         {claims}
         {sink}
         INSERT INTO policy_totals
         SELECT policy_id, COUNT(*), SUM(amount) FROM claims GROUP BY policy_id;",
        sink = warehouse_table(
            "policy_totals",
            "policy_id BIGINT, claims BIGINT, total DECIMAL(22, 2), PRIMARY KEY (policy_id) NOT ENFORCED",
            "at-least-once"
        )
    );
    let windows_job = format!(
        "SET 'execution.checkpointing.interval' = '1 s';
         SET 'table.exec.emit.allow-lateness' = '1 d';
         {claims}
         {sink}
         INSERT INTO policy_windows
         SELECT policy_id, window_start, COUNT(*), SUM(amount)
         FROM TABLE(TUMBLE(TABLE claims, DESCRIPTOR(filed_at), INTERVAL '5' MINUTES))
         GROUP BY policy_id, window_start, window_end;",
        sink = warehouse_table(
            "policy_windows",
            "policy_id BIGINT, window_start TIMESTAMP(3), claims BIGINT, total DECIMAL(22, 2),
             PRIMARY KEY (policy_id, window_start) NOT ENFORCED",
            "exactly-once"
        )
    );
    // The join job checkpoints incrementally (its ChangelogNormalize, RegularJoin and
    // UpsertMaterialize write what changed; each restart reads their chains); the other
    // two take whole snapshots.
    let join_job = format!(
        "SET 'execution.checkpointing.interval' = '1 s';
         SET 'execution.checkpointing.incremental' = 'true';
         SET 'parallelism.default' = '2';
         {claims}
         {policies}
         {sink}
         INSERT INTO claim_policies
         SELECT c.claim_id, p.holder, c.policy_id, c.amount
         FROM claims c JOIN policies p ON c.policy_id = p.policy_id;",
        sink = warehouse_table(
            "claim_policies",
            "claim_id BIGINT, holder STRING, policy_id BIGINT, amount DECIMAL(12, 2),
             PRIMARY KEY (claim_id) NOT ENFORCED",
            "exactly-once"
        )
    );
    let mut jobs = Vec::new();
    for (name, sql) in [
        ("totals", totals_job),
        ("windows", windows_job),
        ("join", join_job),
    ] {
        let file = dir.join(format!("{name}.sql"));
        std::fs::write(&file, sql).expect("job file");
        jobs.push((file, dir.join(format!("checkpoints-{name}"))));
    }
    let mut log = String::new();
    // A claim filed a day later moves the watermark past every window of the run.
    let sentinel = "INSERT INTO cdc_e2e.claims VALUES (1000000, 999, 1, 'open', '2026-01-02')";

    // 1. A clean run while the application makes 10,000 changes.
    await_records(&topic, 1_000);
    let mut running = start_jobs(&jobs);
    let changes = change_claims(&mut client, 10_000, 41, Duration::ZERO).await;
    client.execute(sentinel, &[]).await.expect("sentinel");
    let [totals_rows, windows, joined] = await_warehouse_equal(
        &client,
        &[0, 1, 2],
        Duration::from_secs(120),
        &mut running,
        &mut log,
    )
    .await;
    for job in running {
        stop_cleanly(job, &mut log);
    }
    eprintln!(
        "debezium → runnel → warehouse: {changes} changes; {totals_rows} policy totals, \
         {windows} windows and {joined} claims with their policy equal PostgreSQL's"
    );

    // 2. 5,000 more changes while the jobs are killed three times.
    let writer = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let made = change_claims(&mut client, 5_000, 42, Duration::from_millis(2)).await;
        (client, made, started.elapsed())
    });
    let jobs_for_kills = jobs.clone();
    let (kills, mut log) = tokio::task::spawn_blocking(move || {
        let mut rng = Rng::new(7);
        for _ in 0..3 {
            let mut running = start_jobs(&jobs_for_kills);
            std::thread::sleep(Duration::from_millis(800 + rng.below(2_000)));
            for job in &mut running {
                if let Some(status) = job.child.try_wait().expect("wait") {
                    drain(job, &mut log);
                    panic!(
                        "runnel ended ({status}) before it was killed:\n{}",
                        log_tail(&log)
                    );
                }
                job.child.kill().expect("SIGKILL");
                let _ = job.child.wait();
                drain(job, &mut log);
            }
        }
        (3, log)
    })
    .await
    .expect("kills");
    let (client, more, writing) = writer.await.expect("writer");
    let mut running = start_jobs(&jobs);
    // The totals are loaded at-least-once: idempotent upserts of a result the replay
    // produces again. The windows and the join are loaded exactly-once: at-least-once, a
    // row written after the last checkpoint before a kill could stay behind when the
    // replay, batched or interleaved differently, never produces it again (a window
    // firing only after its claims left it; a claim's move replayed after its new
    // policy's delete).
    let [totals_rows, windows, joined] = await_warehouse_equal(
        &client,
        &[0, 1, 2],
        Duration::from_secs(120),
        &mut running,
        &mut log,
    )
    .await;
    for job in running {
        stop_cleanly(job, &mut log);
    }
    stop_debezium(&run);
    assert!(
        log.matches("resuming from checkpoint").count() >= 12,
        "every run after the first resumed from a checkpoint:\n{log}"
    );
    eprintln!(
        "debezium → runnel → warehouse: {more} more changes over {writing:?}, {kills} SIGKILLs \
         of each job; {totals_rows} policy totals (at-least-once), {windows} windows and \
         {joined} claims with their policy (exactly-once) equal PostgreSQL's"
    );
}

/// A warehouse nobody answers at fails the job at its start, after its retries, with the
/// table, the address and the cause; nothing panics.
#[test]
fn an_unreachable_warehouse_fails_the_job_with_its_address() {
    let port = free_port();
    let output = run_job(
        "jdbc-unreachable",
        &format!(
            "CREATE TABLE clicks (user_id BIGINT) WITH (
                 'connector' = 'datagen', 'number-of-rows' = '10');
             CREATE TABLE counts (user_id BIGINT, clicks BIGINT, PRIMARY KEY (user_id) NOT ENFORCED)
             WITH ('connector' = 'jdbc', 'url' = 'jdbc:postgresql://127.0.0.1:{port}/runnel',
                   'table-name' = 'counts', 'sink.max-retries' = '1');
             INSERT INTO counts SELECT user_id, COUNT(*) FROM clicks GROUP BY user_id;"
        ),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "PostgreSQL table counts at 127.0.0.1:{port}/runnel: connecting failed after 1 retries"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `sql/examples/claims_cdc.sql` over the records Debezium captured from PostgreSQL gives
/// the windows and totals the final claims table holds (worked out by hand in the file's
/// terms: c-1002 and c-1006 deleted, c-1001 and c-1005 updated, c-1003 moved to policy
/// 31), and the windows per plan with each claim under its policy's plan at its filing
/// time (policy 7 premium from 09:05, policy 12 basic from 09:10).
#[test]
fn the_cdc_example_totals_the_claims_postgres_holds() {
    let output = std::process::Command::new(runnel_binary())
        .args(["run", "sql/examples/claims_cdc.sql"])
        .output()
        .expect("run runnel");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let is_plan = |l: &&str| l.contains("basic") || l.contains("premium");
    let mut plans: Vec<&str> = stdout.lines().filter(is_plan).collect();
    plans.sort();
    assert_eq!(
        plans,
        [
            "+I[basic, 2026-01-01 09:00:00.000, 2026-01-01 09:05:00.000, 2, 1439.99]",
            "+I[basic, 2026-01-01 09:10:00.000, 2026-01-01 09:15:00.000, 1, 150.00]",
            "+I[basic, 2026-01-01 09:15:00.000, 2026-01-01 09:20:00.000, 1, 220.00]",
            "+I[premium, 2026-01-01 09:00:00.000, 2026-01-01 09:05:00.000, 1, 2400.00]",
            "+I[premium, 2026-01-01 09:05:00.000, 2026-01-01 09:10:00.000, 1, 75.00]",
            "+I[premium, 2026-01-01 09:10:00.000, 2026-01-01 09:15:00.000, 1, 980.00]",
        ]
    );
    let mut windows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(" 09:") && !is_plan(l))
        .collect();
    windows.sort();
    assert_eq!(
        windows,
        [
            "+I[12, 2026-01-01 09:00:00.000, 2026-01-01 09:05:00.000, 1, 2400.00]",
            "+I[12, 2026-01-01 09:10:00.000, 2026-01-01 09:15:00.000, 1, 150.00]",
            "+I[31, 2026-01-01 09:00:00.000, 2026-01-01 09:05:00.000, 1, 89.99]",
            "+I[31, 2026-01-01 09:15:00.000, 2026-01-01 09:20:00.000, 1, 220.00]",
            "+I[7, 2026-01-01 09:00:00.000, 2026-01-01 09:05:00.000, 1, 1350.00]",
            "+I[7, 2026-01-01 09:05:00.000, 2026-01-01 09:10:00.000, 1, 75.00]",
            "+I[7, 2026-01-01 09:10:00.000, 2026-01-01 09:15:00.000, 1, 980.00]",
        ]
    );
    // The totals' changes, applied in order, leave each policy's final total.
    let mut totals = BTreeMap::new();
    let changes = stdout.lines().filter(|l| l.starts_with(['+', '-']));
    for line in changes.filter(|l| !l.contains(" 09:")) {
        let (kind, row) = line.split_at(2);
        let fields: Vec<&str> = row.trim_matches(['[', ']']).split(", ").collect();
        match kind {
            "+I" | "+U" => totals.insert(
                fields[0].to_string(),
                (fields[1].to_string(), fields[2].to_string()),
            ),
            _ => totals.remove(fields[0]),
        };
    }
    let expected: BTreeMap<String, (String, String)> = [
        ("12", "2", "2550.00"),
        ("31", "2", "309.99"),
        ("7", "3", "2405.00"),
    ]
    .into_iter()
    .map(|(p, n, t)| (p.to_string(), (n.to_string(), t.to_string())))
    .collect();
    assert_eq!(totals, expected);
}

/// The warehouse restarts while a job writes to it: the `jdbc` sink's writes fail, it
/// retries with a new connection once the server is back, and every row arrives. (A
/// server of its own, on another port, so the other CDC tests keep theirs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warehouse_restart_mid_run_costs_a_pause_not_rows() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres.sh");
    let postgres = |command: &str| {
        let status = std::process::Command::new(&script)
            .arg(command)
            .env("PG_PORT", "5434")
            .stdout(std::process::Stdio::null())
            .status()
            .expect("scripts/postgres.sh");
        assert!(status.success(), "scripts/postgres.sh {command} failed");
    };
    postgres("start");
    let url = "postgres://runnel:runnel@127.0.0.1:5434/runnel";
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("the second server");
    tokio::spawn(connection);
    client
        .batch_execute(
            "DROP TABLE IF EXISTS doubled;
             CREATE TABLE doubled (id bigint PRIMARY KEY, twice bigint NOT NULL);",
        )
        .await
        .expect("create the table");
    drop(client);

    let dir = scratch_dir("jdbc-restart");
    let job = dir.join("job.sql");
    std::fs::write(
        &job,
        "CREATE TABLE numbers (id BIGINT) WITH (
             'connector' = 'datagen', 'rows-per-second' = '500', 'number-of-rows' = '4000',
             'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '4000');
         CREATE TABLE doubled (id BIGINT, twice BIGINT, PRIMARY KEY (id) NOT ENFORCED)
         WITH ('connector' = 'jdbc', 'url' = 'jdbc:postgresql://127.0.0.1:5434/runnel',
               'table-name' = 'doubled', 'username' = 'runnel', 'password' = 'runnel',
               'sink.buffer-flush.interval' = '100 ms', 'sink.max-retries' = '10');
         INSERT INTO doubled SELECT id, id * 2 FROM numbers;",
    )
    .expect("job file");
    let mut running = start_with(&job, &dir.join("checkpoints"), None);
    std::thread::sleep(Duration::from_secs(2));
    postgres("stop");
    std::thread::sleep(Duration::from_secs(3));
    postgres("resume");
    let status = running.child.wait().expect("wait");
    let mut log = String::new();
    drain(&running, &mut log);
    assert!(
        status.success(),
        "the job failed ({status}):\n{}",
        log_tail(&log)
    );
    assert!(
        log.contains("failed; retrying"),
        "the restart was noticed:\n{log}"
    );

    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("the second server, back");
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT count(*), sum(twice)::bigint FROM doubled", &[])
        .await
        .expect("count");
    let (rows, sum): (i64, i64) = (row.get(0), row.get(1));
    drop(client);
    postgres("stop");
    assert_eq!((rows, sum), (4_000, 4_000 * 4_001), "every row, once");
}

/// A PostgreSQL table as the table side of a lookup join (`'connector' = 'jdbc'`, asked
/// by key): each claim is enriched with its policy's holder, premium,
/// start and whether it is active — text, numeric, timestamp, timestamptz and boolean
/// columns read back as their types; a claim whose policy is not there keeps NULLs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_table_enriches_claims_as_a_lookup_table() {
    postgres_with_schema(
        "cdc_lookup",
        "CREATE TABLE cdc_lookup.policies (
                 policy_id bigint PRIMARY KEY, holder text, premium numeric(10, 2),
                 since timestamp(3), renewed timestamptz, active boolean);
             INSERT INTO cdc_lookup.policies VALUES
                 (1, 'Ann', 120.50, '2025-03-01 00:00:00', '2026-01-01 12:00:00+00', true),
                 (2, 'Bob', 80.00, '2024-07-15 08:30:00', NULL, false);",
    )
    .await;
    let dir = scratch_dir("jdbc-lookup");
    std::fs::write(
        dir.join("claims.json"),
        r#"{"claim_id": "c1", "policy_id": 1, "ts": "2026-01-01 00:00:01"}
{"claim_id": "c2", "policy_id": 2, "ts": "2026-01-01 00:00:02"}
{"claim_id": "c3", "policy_id": 3, "ts": "2026-01-01 00:00:03"}
"#,
    )
    .expect("claims");
    let sql = format!(
        "CREATE TABLE claims (claim_id STRING, policy_id BIGINT, ts TIMESTAMP(3),
             proc AS PROCTIME(), WATERMARK FOR ts AS ts)
         WITH ('connector' = 'filesystem', 'path' = '{claims}', 'format' = 'json');
         CREATE TABLE policies (policy_id BIGINT, holder STRING, premium DECIMAL(10, 2),
             since TIMESTAMP(3), renewed TIMESTAMP_LTZ(3), active BOOLEAN,
             PRIMARY KEY (policy_id) NOT ENFORCED)
         WITH ('connector' = 'jdbc', 'url' = '{url}', 'table-name' = 'cdc_lookup.policies',
             'username' = 'runnel', 'password' = 'runnel');
         SELECT c.claim_id, p.holder, p.premium, p.since, p.renewed, p.active
         FROM claims AS c LEFT JOIN policies FOR SYSTEM_TIME AS OF c.proc AS p
         ON c.policy_id = p.policy_id;",
        claims = dir.join("claims.json").display(),
        url = postgres_jdbc_url()
    );
    let rows = query_rows(&sql).await;
    assert_eq!(
        rows,
        [
            "+I[c1, Ann, 120.50, 2025-03-01 00:00:00.000, 2026-01-01T12:00:00.000Z, true]",
            "+I[c2, Bob, 80.00, 2024-07-15 08:30:00.000, NULL, false]",
            "+I[c3, NULL, NULL, NULL, NULL, NULL]",
        ]
    );
}

/// A jdbc lookup table is asked as claims arrive, so a policy changed or added in
/// PostgreSQL while the job runs is seen by the next claim; with Flink's partial cache
/// (`lookup.cache` = `PARTIAL`, an hour to expire) the first answer for a key — a row or
/// its absence — stands until it expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_lookup_table_answers_as_postgres_is_now() {
    let client = postgres_with_schema(
        "cdc_live_lookup",
        "CREATE TABLE cdc_live_lookup.policies (policy_id bigint PRIMARY KEY, holder text);
             INSERT INTO cdc_live_lookup.policies VALUES (1, 'Ann');
             CREATE TABLE cdc_live_lookup.enriched (
                 claim_id text, via text, holder text, PRIMARY KEY (claim_id, via));",
    )
    .await;
    let topic = format!("runnel-live-lookup-{}", std::process::id());
    recreate_topic(&topic, 1).await;
    let dir = scratch_dir("jdbc-live-lookup");
    let policies = |name: &str, cache: &str| {
        format!(
            "CREATE TABLE {name} (policy_id BIGINT, holder STRING) WITH (
                 'connector' = 'jdbc', 'url' = '{url}', 'table-name' = 'cdc_live_lookup.policies',
                 'username' = 'runnel', 'password' = 'runnel'{cache});",
            url = postgres_jdbc_url()
        )
    };
    let job = dir.join("job.sql");
    std::fs::write(
        &job,
        format!(
            "CREATE TABLE claims (claim_id STRING, policy_id BIGINT, proc AS PROCTIME()) WITH (
                 'connector' = 'kafka', 'topic' = '{topic}',
                 'properties.bootstrap.servers' = '{servers}',
                 'scan.startup.mode' = 'earliest-offset', 'format' = 'json');
             {fresh}
             {cached}
             CREATE TABLE enriched (claim_id STRING, via STRING, holder STRING,
                 PRIMARY KEY (claim_id, via) NOT ENFORCED) WITH (
                 'connector' = 'jdbc', 'url' = '{url}', 'table-name' = 'cdc_live_lookup.enriched',
                 'username' = 'runnel', 'password' = 'runnel',
                 'sink.buffer-flush.interval' = '100 ms');
             INSERT INTO enriched
             SELECT c.claim_id, 'fresh', p.holder FROM claims AS c
                 LEFT JOIN policies FOR SYSTEM_TIME AS OF c.proc AS p ON c.policy_id = p.policy_id
             UNION ALL
             SELECT c.claim_id, 'cached', p.holder FROM claims AS c
                 LEFT JOIN cached_policies FOR SYSTEM_TIME AS OF c.proc AS p
                 ON c.policy_id = p.policy_id;",
            servers = bootstrap(),
            url = postgres_jdbc_url(),
            fresh = policies("policies", ""),
            cached = policies(
                "cached_policies",
                ", 'lookup.cache' = 'PARTIAL', 'lookup.partial-cache.max-rows' = '100',
                 'lookup.partial-cache.expire-after-write' = '1 h'"
            ),
        ),
    )
    .expect("job file");
    let mut running = start_with(&job, &dir.join("checkpoints"), None);
    let mut log = String::new();
    let claim = |id: &str, policy: i64| {
        (
            None,
            format!(r#"{{"claim_id": "{id}", "policy_id": {policy}}}"#).into_bytes(),
        )
    };
    let enriched = |rows: usize| {
        let client = &client;
        async move {
            let started = std::time::Instant::now();
            loop {
                let held: Vec<(String, String, Option<String>)> = client
                    .query(
                        "SELECT claim_id, via, holder FROM cdc_live_lookup.enriched ORDER BY 1, 2",
                        &[],
                    )
                    .await
                    .expect("read enriched")
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2)))
                    .collect();
                if held.len() >= rows || started.elapsed() > Duration::from_secs(60) {
                    return held;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    produce(&topic, &[claim("c1", 1), claim("c2", 3)]).await;
    let first = enriched(4).await;
    client
        .batch_execute(
            "UPDATE cdc_live_lookup.policies SET holder = 'Anna' WHERE policy_id = 1;
             INSERT INTO cdc_live_lookup.policies VALUES (3, 'Cy');",
        )
        .await
        .expect("change the policies");
    produce(&topic, &[claim("c3", 1), claim("c4", 3)]).await;
    let second = enriched(8).await;
    let _ = running.child.kill();
    let _ = running.child.wait();
    drain(&running, &mut log);
    let row = |id: &str, via: &str, holder: Option<&str>| {
        (id.to_string(), via.to_string(), holder.map(str::to_string))
    };
    assert_eq!(
        first,
        [
            row("c1", "cached", Some("Ann")),
            row("c1", "fresh", Some("Ann")),
            row("c2", "cached", None),
            row("c2", "fresh", None),
        ],
        "{log}"
    );
    assert_eq!(
        second[4..],
        [
            // c3: the cache keeps the first answer; asked again, PostgreSQL says Anna now.
            row("c3", "cached", Some("Ann")),
            row("c3", "fresh", Some("Anna")),
            // c4: the cache remembers policy 3 was missing; asked again, it was added.
            row("c4", "cached", None),
            row("c4", "fresh", Some("Cy")),
        ],
        "{log}"
    );
}

/// A job stopped (SIGTERM) without checkpoints still writes the rows its jdbc sink holds
/// (here for up to an hour, `sink.buffer-flush.interval`): they were taken from Kafka and
/// would otherwise be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_without_checkpoints_writes_what_the_jdbc_sink_holds() {
    let client = postgres_with_schema(
        "cdc_stop",
        "CREATE TABLE cdc_stop.claims (claim_id text PRIMARY KEY, policy_id bigint);",
    )
    .await;
    let topic = format!("runnel-stop-held-{}", std::process::id());
    recreate_topic(&topic, 1).await;
    let records: Vec<Record> = (0..50)
        .map(|i| {
            let value = format!(r#"{{"claim_id": "c{i}", "policy_id": {}}}"#, i % 7);
            (None, value.into_bytes())
        })
        .collect();
    produce(&topic, &records).await;
    let dir = scratch_dir("jdbc-stop-held");
    let job = dir.join("job.sql");
    std::fs::write(
        &job,
        format!(
            "CREATE TABLE claims (claim_id STRING, policy_id BIGINT) WITH (
                 'connector' = 'kafka', 'topic' = '{topic}',
                 'properties.bootstrap.servers' = '{servers}',
                 'scan.startup.mode' = 'earliest-offset', 'format' = 'json');
             CREATE TABLE loaded (claim_id STRING, policy_id BIGINT,
                 PRIMARY KEY (claim_id) NOT ENFORCED) WITH (
                 'connector' = 'jdbc', 'url' = '{url}', 'table-name' = 'cdc_stop.claims',
                 'username' = 'runnel', 'password' = 'runnel',
                 'sink.buffer-flush.interval' = '1 h', 'sink.buffer-flush.max-rows' = '1000');
             INSERT INTO loaded SELECT * FROM claims;",
            servers = bootstrap(),
            url = postgres_jdbc_url(),
        ),
    )
    .expect("job file");
    let running = start_with(&job, &dir.join("checkpoints"), None);
    let mut log = String::new();
    // Time to read the 50 records (a second or two); none is written within the hour.
    std::thread::sleep(Duration::from_secs(8));
    let held: i64 = client
        .query_one("SELECT count(*) FROM cdc_stop.claims", &[])
        .await
        .expect("count")
        .get(0);
    stop_cleanly(running, &mut log);
    let written: i64 = client
        .query_one("SELECT count(*) FROM cdc_stop.claims", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!((held, written), (0, 50), "{log}");
}

/// Kafka record headers as Flink declares them, `headers MAP<STRING, BYTES> METADATA
/// VIRTUAL`: each record's headers as a map (a record without headers: an empty map; a
/// header without a value: NULL), next to a Debezium change read from the same record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_headers_are_read_as_a_map() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::FutureRecord;
    let topic = format!("runnel-headers-{}", std::process::id());
    recreate_topic(&topic, 1).await;
    let producer = test_producer(&bootstrap());
    let values = [
        r#"{"before":null,"after":{"claim_id":"c1","amount":"10.00"},"op":"c"}"#,
        r#"{"before":null,"after":{"claim_id":"c2","amount":"5.00"},"op":"c"}"#,
    ];
    let headers = [
        Some(
            OwnedHeaders::new()
                .insert(Header {
                    key: "trace",
                    value: Some("abc"),
                })
                .insert(Header::<&str> {
                    key: "empty",
                    value: None,
                }),
        ),
        None,
    ];
    for (value, headers) in values.iter().zip(headers) {
        let mut record = FutureRecord::<str, str>::to(&topic).payload(value);
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .expect("acknowledged");
    }
    let sql = format!(
        "CREATE TABLE claims (
             claim_id STRING, amount DECIMAL(12, 2),
             headers MAP<STRING, BYTES> METADATA VIRTUAL,
             PRIMARY KEY (claim_id) NOT ENFORCED
         ) WITH ('connector' = 'kafka', 'topic' = '{topic}',
             'properties.bootstrap.servers' = '{servers}',
             'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
             'format' = 'debezium-json');
         SELECT claim_id, amount, headers FROM claims;",
        servers = bootstrap()
    );
    let rows = query_rows(&sql).await;
    assert_eq!(
        rows,
        [
            "+I[c1, 10.00, {trace: 616263, empty: NULL}]",
            "+I[c2, 5.00, {}]",
        ]
    );

    // Written: a writable metadata column sets each record's headers and timestamp (the
    // source records' own, passed through), a VIRTUAL one is not written; read back, the
    // copy has the same headers and timestamps and values without those columns.
    let copy = format!("{topic}-copy");
    recreate_topic(&copy, 1).await;
    let source = |name: &str, topic: &str| {
        format!(
            "CREATE TABLE {name} (
                 claim_id STRING, amount DECIMAL(12, 2),
                 headers MAP<STRING, BYTES> METADATA VIRTUAL,
                 written_at TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,
                 PRIMARY KEY (claim_id) NOT ENFORCED
             ) WITH ('connector' = 'kafka', 'topic' = '{topic}',
                 'properties.bootstrap.servers' = '{servers}',
                 'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
                 'format' = 'debezium-json');",
            servers = bootstrap()
        )
    };
    let job = format!(
        "{claims}
         CREATE TABLE copied (
             claim_id STRING, amount DECIMAL(12, 2),
             headers MAP<STRING, BYTES> METADATA,
             written_at TIMESTAMP_LTZ(3) METADATA FROM 'timestamp',
             part INT METADATA FROM 'partition' VIRTUAL
         ) WITH ('connector' = 'kafka', 'topic' = '{copy}',
             'properties.bootstrap.servers' = '{servers}', 'format' = 'debezium-json');
         INSERT INTO copied SELECT claim_id, amount, headers, written_at FROM claims;",
        claims = source("claims", &topic),
        servers = bootstrap()
    );
    let output = run_job("kafka-headers-copy", &job);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let read = |table: &str| format!("SELECT claim_id, amount, headers, written_at FROM {table};");
    let original = query_rows(&format!("{}{}", source("claims", &topic), read("claims"))).await;
    let copied = query_rows(&format!("{}{}", source("copied", &copy), read("copied"))).await;
    assert_eq!(copied, original);
    // The values hold the data columns only.
    let values: Vec<String> = consume_all(&copy).into_iter().map(|(_, _, v)| v).collect();
    assert!(
        values
            .iter()
            .all(|v| v.contains("claim_id") && !v.contains("headers") && !v.contains("written_at")),
        "{values:?}"
    );
}
