//! Randomized differential test for changelogs: for seeded random Debezium change
//! streams of `claims` (inserts, amount updates, moves to another policy, deletes,
//! repeated events, updates without their old row and key-only deletes as PostgreSQL's
//! default replica identity sends them) and of `policies` (inserts, renames, deletes),
//! Runnel's per-policy aggregates, its joins of claims with policies (inner, left, right,
//! full) and an aggregate over such a join, applied change by change, must each equal
//! DataFusion's batch query over the tables the changes leave. Event-time temporal joins
//! against random policy versions must give each claim the version valid at its time.
//!
//! A failure prints the seed; `RUNNEL_SEED=<seed>` replays one seed.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Decimal128Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use runnel::{Engine, Executed};

use crate::common::{scratch_dir, Rng};

const SEEDS: u64 = 200;
const CHANGES: usize = 120;

/// One claim: policy and amount in cents.
type Claims = BTreeMap<i64, (i64, i64)>;

/// Each policy's holder.
type Policies = BTreeMap<i64, String>;

/// Policy ids claims refer to: 0..6; policies exist for some of them.
const POLICY_IDS: u64 = 6;

/// A random change stream as Debezium JSON lines, and the table it leaves.
fn changes(rng: &mut Rng) -> (Vec<String>, Claims) {
    let mut claims = Claims::new();
    let mut lines = Vec::new();
    let row = |id: i64, (policy, cents): (i64, i64)| {
        format!(
            r#"{{"claim_id":{id},"policy_id":{policy},"amount":"{}.{:02}"}}"#,
            cents / 100,
            cents % 100
        )
    };
    for _ in 0..CHANGES {
        let id = rng.below(25) as i64;
        let existing = claims.get(&id).copied();
        let choice = rng.below(10);
        match (existing, choice) {
            (None, _) | (Some(_), 0..=1) => {
                let claim = (rng.below(POLICY_IDS) as i64, rng.below(100_000) as i64);
                let op = if existing.is_some() { "u" } else { "c" };
                lines.push(format!(
                    r#"{{"before":null,"after":{},"op":"{op}"}}"#,
                    row(id, claim)
                ));
                claims.insert(id, claim);
            }
            (Some(old), 2..=4) => {
                // An amount update, with its old row half the time (REPLICA IDENTITY FULL).
                let new = (old.0, rng.below(100_000) as i64);
                let before = if rng.below(2) == 0 {
                    row(id, old)
                } else {
                    "null".into()
                };
                lines.push(format!(
                    r#"{{"before":{before},"after":{},"op":"u"}}"#,
                    row(id, new)
                ));
                claims.insert(id, new);
            }
            (Some(old), 5..=6) => {
                let new = (rng.below(POLICY_IDS) as i64, old.1);
                lines.push(format!(
                    r#"{{"before":null,"after":{},"op":"u"}}"#,
                    row(id, new)
                ));
                claims.insert(id, new);
            }
            (Some(old), 7) => {
                // A repeated event (a connector restart re-sends it).
                lines.push(format!(
                    r#"{{"before":null,"after":{},"op":"r"}}"#,
                    row(id, old)
                ));
            }
            (Some(_), _) => {
                lines.push(format!(
                    r#"{{"before":{{"claim_id":{id},"policy_id":null,"amount":null}},"after":null,"op":"d"}}"#
                ));
                claims.remove(&id);
            }
        }
    }
    (lines, claims)
}

/// A random change stream of `policies` as Debezium JSON lines, and the table it leaves.
fn policy_changes(rng: &mut Rng) -> (Vec<String>, Policies) {
    let mut policies = Policies::new();
    let mut lines = Vec::new();
    let holders = ["Ann", "Bob", "Cy", "Dee"];
    for _ in 0..CHANGES / 4 {
        let id = rng.below(POLICY_IDS) as i64;
        let holder = holders[rng.below(holders.len() as u64) as usize].to_string();
        let row = |holder: &str| format!(r#"{{"policy_id":{id},"holder":"{holder}"}}"#);
        match (policies.get(&id).cloned(), rng.below(4)) {
            (Some(_), 0) => {
                lines.push(format!(
                    r#"{{"before":{{"policy_id":{id},"holder":null}},"after":null,"op":"d"}}"#
                ));
                policies.remove(&id);
            }
            (existing, _) => {
                let op = if existing.is_some() { "u" } else { "c" };
                lines.push(format!(
                    r#"{{"before":null,"after":{},"op":"{op}"}}"#,
                    row(&holder)
                ));
                policies.insert(id, holder);
            }
        }
    }
    (lines, policies)
}

const CREATE_TABLES: &str = "
    CREATE TABLE claims (claim_id BIGINT, policy_id BIGINT, amount DECIMAL(12, 2),
        PRIMARY KEY (claim_id) NOT ENFORCED)
    WITH ('connector' = 'filesystem', 'path' = '${claims}', 'format' = 'debezium-json');
    CREATE TABLE policies (policy_id BIGINT, holder STRING,
        PRIMARY KEY (policy_id) NOT ENFORCED)
    WITH ('connector' = 'filesystem', 'path' = '${policies}', 'format' = 'debezium-json');";

/// Writes `lines` as a folder of files of random sizes (each read as one batch).
fn write_parts(dir: &std::path::Path, lines: &[String], rng: &mut Rng) {
    std::fs::create_dir_all(dir).expect("create input folder");
    let mut start = 0;
    let mut part = 0;
    while start < lines.len() {
        let len = (1 + rng.below(40) as usize).min(lines.len() - start);
        std::fs::write(
            dir.join(format!("part-{part:04}.json")),
            lines[start..start + len].join("\n"),
        )
        .expect("write changes");
        start += len;
        part += 1;
    }
}

/// Runnel's answer: the query's changes applied in order to a multiset of rows. A
/// retraction must take out a row that is there.
async fn streaming(
    name: &str,
    (claims, policies): (&[String], &[String]),
    query: &str,
    parallelism: u64,
    rng: &mut Rng,
) -> Vec<String> {
    let dir = scratch_dir(name);
    write_parts(&dir.join("claims"), claims, rng);
    write_parts(&dir.join("policies"), policies, rng);
    let tables = CREATE_TABLES
        .replace("${claims}", &dir.join("claims").display().to_string())
        .replace("${policies}", &dir.join("policies").display().to_string());
    let sql = format!("SET 'parallelism.default' = '{parallelism}';\n{tables}\n{query};");
    let mut current: BTreeMap<String, usize> = BTreeMap::new();
    for result in Engine::default().execute(&sql).await.expect("plans") {
        if let Executed::Query(mut stream) = result {
            while let Some(batch) = stream.next().await {
                for line in runnel::connectors::print::format_rows(&batch.expect("batch"), "")
                    .expect("format")
                {
                    let (kind, row) = line.split_at(2);
                    let row = row.trim_matches(['[', ']']).to_string();
                    match kind {
                        "+I" | "+U" => *current.entry(row).or_default() += 1,
                        "-U" | "-D" => match current.get_mut(&row) {
                            Some(count) if *count > 1 => *count -= 1,
                            Some(_) => {
                                current.remove(&row);
                            }
                            None => panic!("{name}: {kind} of a row that is not there: {row}"),
                        },
                        other => panic!("{name}: unexpected change kind {other} in {line}"),
                    }
                }
            }
            stream.finish().await.expect("runs");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    let mut rows: Vec<String> = current
        .into_iter()
        .flat_map(|(row, count)| std::iter::repeat_n(row, count))
        .collect();
    rows.sort();
    rows
}

/// DataFusion's answer over the final tables.
async fn batch(claims: &Claims, policies: &Policies, query: &str) -> Vec<String> {
    let claims_schema = Arc::new(Schema::new(vec![
        Field::new("claim_id", DataType::Int64, false),
        Field::new("policy_id", DataType::Int64, false),
        Field::new("amount", DataType::Decimal128(12, 2), false),
    ]));
    let claims_table = RecordBatch::try_new(
        claims_schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(claims.keys().copied())) as _,
            Arc::new(Int64Array::from_iter_values(claims.values().map(|c| c.0))) as _,
            Arc::new(
                Decimal128Array::from_iter_values(claims.values().map(|c| c.1 as i128))
                    .with_precision_and_scale(12, 2)
                    .expect("decimal"),
            ) as _,
        ],
    )
    .expect("claims");
    let policies_schema = Arc::new(Schema::new(vec![
        Field::new("policy_id", DataType::Int64, false),
        Field::new("holder", DataType::Utf8, false),
    ]));
    let policies_table = RecordBatch::try_new(
        policies_schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(policies.keys().copied())) as _,
            Arc::new(StringArray::from_iter_values(policies.values())) as _,
        ],
    )
    .expect("policies");
    let ctx = SessionContext::new();
    for (name, schema, table) in [
        ("claims", claims_schema, claims_table),
        ("policies", policies_schema, policies_table),
    ] {
        ctx.register_table(
            name,
            Arc::new(MemTable::try_new(schema, vec![vec![table]]).expect("mem table")),
        )
        .expect("register");
    }
    let frame = ctx.sql(query).await.expect("batch plans");
    let mut rows = Vec::new();
    for batch in frame.collect().await.expect("batch runs") {
        rows.extend(
            runnel::connectors::print::format_rows(&batch, "")
                .expect("format")
                .into_iter()
                .map(|line| {
                    line.trim_start_matches("+I")
                        .trim_matches(['[', ']'])
                        .to_string()
                }),
        );
    }
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changelog_aggregates_and_joins_equal_datafusion_over_the_final_tables() {
    let seeds: Vec<u64> = match std::env::var("RUNNEL_SEED") {
        Ok(seed) => vec![seed.parse().expect("RUNNEL_SEED is a number")],
        Err(_) => (0..SEEDS).collect(),
    };
    for seed in seeds {
        let mut rng = Rng::new(seed * 7919 + 3);
        let (claim_lines, claims) = changes(&mut rng);
        let (policy_lines, policies) = policy_changes(&mut rng);
        let parallelism = 1 + rng.below(3);
        let join = ["JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN"][rng.below(4) as usize];
        // Runnel's SUM of DECIMAL(12, 2) is DECIMAL(22, 2), as Flink's; DataFusion's is
        // cast to match.
        let queries = [
            (
                "totals".to_string(),
                "SELECT policy_id, COUNT(*), SUM(amount) FROM claims GROUP BY policy_id"
                    .to_string(),
                "SELECT policy_id, COUNT(*), CAST(SUM(amount) AS DECIMAL(22, 2)) FROM claims \
                 GROUP BY policy_id"
                    .to_string(),
            ),
            (
                join.to_string(),
                format!(
                    "SELECT c.claim_id, c.amount, p.policy_id, p.holder \
                     FROM claims c {join} policies p ON c.policy_id = p.policy_id"
                ),
                format!(
                    "SELECT c.claim_id, c.amount, p.policy_id, p.holder \
                     FROM claims c {join} policies p ON c.policy_id = p.policy_id"
                ),
            ),
            (
                "totals per holder".to_string(),
                "SELECT p.holder, COUNT(*), SUM(c.amount) FROM claims c \
                 JOIN policies p ON c.policy_id = p.policy_id AND c.amount > 100 \
                 GROUP BY p.holder"
                    .to_string(),
                "SELECT p.holder, COUNT(*), CAST(SUM(c.amount) AS DECIMAL(22, 2)) FROM claims c \
                 JOIN policies p ON c.policy_id = p.policy_id AND c.amount > 100 \
                 GROUP BY p.holder"
                    .to_string(),
            ),
        ];
        for (what, ours, theirs) in queries {
            let name = format!("changelog-{seed}-{}", what.replace(' ', "-"));
            let lines = (claim_lines.as_slice(), policy_lines.as_slice());
            let ours = streaming(&name, lines, &ours, parallelism, &mut rng).await;
            let theirs = batch(&claims, &policies, &theirs).await;
            assert_eq!(
                ours, theirs,
                "seed {seed} (parallelism {parallelism}), {what}: Runnel's rows differ from \
                 DataFusion's over the final tables"
            );
        }
    }
}

/// One policy version: (policy, valid from in ms, holder).
type Version = (i64, i64, String);

/// One claim of the temporal join test: (claim, policy, time in ms).
type TimedClaim = (i64, i64, i64);

/// Versions and claims, each as the input's lines and as values.
struct TemporalInput {
    version_lines: Vec<String>,
    versions: Vec<Version>,
    claim_lines: Vec<String>,
    claims: Vec<TimedClaim>,
}

/// Random policy versions in time order (renames of 6 policies, one every ~10 s), as
/// Debezium changes with the version's start in `valid_from`; and random claims (append
/// only), their times out of order by up to 3 s. Times are whole seconds, so claims often
/// fall exactly on a version's start.
fn versions_and_claims(rng: &mut Rng) -> TemporalInput {
    const START: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let holders = ["Ann", "Bob", "Cy", "Dee", "Eve"];
    let (mut lines, mut versions) = (Vec::new(), Vec::new());
    let mut seen = std::collections::BTreeSet::new();
    let mut time = START;
    for _ in 0..40 {
        // Whole seconds, as claims: a claim at a version's very start meets it.
        time += 1_000 * rng.below(20) as i64;
        let policy = rng.below(POLICY_IDS) as i64;
        let holder = holders[rng.below(holders.len() as u64) as usize];
        let op = if seen.insert(policy) { "c" } else { "u" };
        lines.push(format!(
            r#"{{"before":null,"after":{{"policy_id":{policy},"holder":"{holder}","valid_from":{time}}},"op":"{op}"}}"#
        ));
        versions.push((policy, time, holder.to_string()));
    }
    let (mut claim_lines, mut claims) = (Vec::new(), Vec::new());
    for id in 0..150i64 {
        let time = START - 60_000 + id * 6_000 - 1_000 * rng.below(4) as i64;
        let policy = rng.below(POLICY_IDS) as i64;
        let ts = chrono::DateTime::from_timestamp_millis(time)
            .expect("a time")
            .format("%Y-%m-%d %H:%M:%S%.3f");
        claim_lines.push(format!(
            r#"{{"claim_id":{id},"policy_id":{policy},"ts":"{ts}"}}"#
        ));
        claims.push((id, policy, time));
    }
    TemporalInput {
        version_lines: lines,
        versions,
        claim_lines,
        claims,
    }
}

/// Event-time temporal joins against random policy versions: every claim meets the
/// version of its policy valid at the claim's time — the last one starting at or before
/// it — worked out directly from the versions (inner: claims with a version; left: every
/// claim, NULL without one), over ≥ 200 seeds at parallelism 1–3 with random batching.
/// (Versions arrive in time order and claims within the watermark delay, so no version
/// or claim is late: the answer is fixed whatever the interleaving.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporal_joins_meet_the_version_valid_at_each_claims_time() {
    let seeds: Vec<u64> = match std::env::var("RUNNEL_SEED") {
        Ok(seed) => vec![seed.parse().expect("RUNNEL_SEED is a number")],
        Err(_) => (0..SEEDS).collect(),
    };
    for seed in seeds {
        let mut rng = Rng::new(seed * 104_729 + 11);
        let TemporalInput {
            version_lines,
            versions,
            claim_lines,
            claims,
        } = versions_and_claims(&mut rng);
        let parallelism = 1 + rng.below(3);
        let left = rng.below(2) == 0;
        let dir = scratch_dir(&format!("temporal-{seed}"));
        write_parts(&dir.join("claims"), &claim_lines, &mut rng);
        write_parts(&dir.join("policies"), &version_lines, &mut rng);
        let sql = format!(
            "SET 'parallelism.default' = '{parallelism}';
             CREATE TABLE claims (claim_id BIGINT, policy_id BIGINT, ts TIMESTAMP(3),
                 WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
             WITH ('connector' = 'filesystem', 'path' = '{claims}', 'format' = 'json');
             CREATE TABLE policies (policy_id BIGINT, holder STRING, valid_from TIMESTAMP(3),
                 PRIMARY KEY (policy_id) NOT ENFORCED,
                 WATERMARK FOR valid_from AS valid_from - INTERVAL '1' SECOND)
             WITH ('connector' = 'filesystem', 'path' = '{policies}', 'format' = 'debezium-json');
             SELECT c.claim_id, p.holder FROM claims c {join} policies
             FOR SYSTEM_TIME AS OF c.ts AS p ON c.policy_id = p.policy_id;",
            claims = dir.join("claims").display(),
            policies = dir.join("policies").display(),
            join = if left { "LEFT JOIN" } else { "JOIN" },
        );
        let mut ours = Vec::new();
        for result in Engine::default().execute(&sql).await.expect("plans") {
            if let Executed::Query(mut stream) = result {
                while let Some(batch) = stream.next().await {
                    ours.extend(
                        runnel::connectors::print::format_rows(&batch.expect("batch"), "")
                            .expect("format"),
                    );
                }
                let metrics = stream.finish().await.expect("runs");
                assert_eq!(metrics.late_rows, 0, "seed {seed}: nothing is late");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        ours.sort();
        let mut expected: Vec<String> = claims
            .iter()
            .filter_map(|&(id, policy, time)| {
                let version = versions
                    .iter()
                    .filter(|(p, from, _)| *p == policy && *from <= time)
                    .max_by_key(|(_, from, _)| *from);
                match version {
                    Some((_, _, holder)) => Some(format!("+I[{id}, {holder}]")),
                    None if left => Some(format!("+I[{id}, NULL]")),
                    None => None,
                }
            })
            .collect();
        expected.sort();
        assert_eq!(
            ours,
            expected,
            "seed {seed} (parallelism {parallelism}, {}): the temporal join differs from the \
             versions valid at each claim's time",
            if left { "left" } else { "inner" }
        );
    }
}
