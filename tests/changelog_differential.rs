//! Randomized differential test for changelogs: for seeded random Debezium change
//! streams (inserts, amount updates, moves to another policy, deletes, repeated events,
//! updates without their old row and key-only deletes as PostgreSQL's default replica
//! identity sends them), Runnel's per-policy aggregates, applied change by change, must
//! equal DataFusion's batch `GROUP BY` over the table the changes leave.
//!
//! A failure prints the seed; `RUNNEL_SEED=<seed>` replays one seed.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Decimal128Array, Int64Array, RecordBatch};
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
                let claim = (rng.below(6) as i64, rng.below(100_000) as i64);
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
                let new = (rng.below(6) as i64, old.1);
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

/// Runnel's answer: the query's changes applied in order, as `policy, claims, total` rows.
async fn streaming(name: &str, lines: &[String], parallelism: u64, rng: &mut Rng) -> Vec<String> {
    let dir = scratch_dir(name);
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
    let sql = format!(
        "SET 'parallelism.default' = '{parallelism}';
         CREATE TABLE claims (claim_id BIGINT, policy_id BIGINT, amount DECIMAL(12, 2),
             PRIMARY KEY (claim_id) NOT ENFORCED)
         WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'debezium-json');
         SELECT policy_id, COUNT(*), SUM(amount) FROM claims GROUP BY policy_id;",
        dir.display()
    );
    let mut current: BTreeMap<String, String> = BTreeMap::new();
    for result in Engine::default().execute(&sql).await.expect("plans") {
        if let Executed::Query(mut stream) = result {
            while let Some(batch) = stream.next().await {
                for line in runnel::connectors::print::format_rows(&batch.expect("batch"), "")
                    .expect("format")
                {
                    let (kind, row) = line.split_at(2);
                    let row = row.trim_matches(['[', ']']).to_string();
                    let policy = row.split(", ").next().unwrap_or_default().to_string();
                    match kind {
                        "+I" | "+U" => {
                            current.insert(policy, row);
                        }
                        "-U" | "-D" => {
                            assert_eq!(
                                current.remove(&policy).as_ref(),
                                Some(&row),
                                "{name}: {kind} of a row that is not the current one"
                            );
                        }
                        other => panic!("{name}: unexpected change kind {other} in {line}"),
                    }
                }
            }
            stream.finish().await.expect("runs");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    current.into_values().collect()
}

/// DataFusion's answer over the final table.
async fn batch(claims: &Claims) -> Vec<String> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("claim_id", DataType::Int64, false),
        Field::new("policy_id", DataType::Int64, false),
        Field::new("amount", DataType::Decimal128(12, 2), false),
    ]));
    let columns = vec![
        Arc::new(Int64Array::from_iter_values(claims.keys().copied())) as _,
        Arc::new(Int64Array::from_iter_values(claims.values().map(|c| c.0))) as _,
        Arc::new(
            Decimal128Array::from_iter_values(claims.values().map(|c| c.1 as i128))
                .with_precision_and_scale(12, 2)
                .expect("decimal"),
        ) as _,
    ];
    let table = RecordBatch::try_new(schema.clone(), columns).expect("table");
    let ctx = SessionContext::new();
    ctx.register_table(
        "claims",
        Arc::new(MemTable::try_new(schema, vec![vec![table]]).expect("mem table")),
    )
    .expect("register");
    let frame = ctx
        .sql("SELECT policy_id, COUNT(*), CAST(SUM(amount) AS DECIMAL(22, 2)) FROM claims GROUP BY policy_id ORDER BY policy_id")
        .await
        .expect("batch plans");
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
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changelog_aggregates_equal_datafusion_over_the_final_table() {
    let seeds: Vec<u64> = match std::env::var("RUNNEL_SEED") {
        Ok(seed) => vec![seed.parse().expect("RUNNEL_SEED is a number")],
        Err(_) => (0..SEEDS).collect(),
    };
    for seed in seeds {
        let mut rng = Rng::new(seed * 7919 + 3);
        let (lines, claims) = changes(&mut rng);
        let parallelism = 1 + rng.below(3);
        let mut ours = streaming(&format!("changelog-{seed}"), &lines, parallelism, &mut rng).await;
        ours.sort();
        let mut theirs = batch(&claims).await;
        theirs.sort();
        assert_eq!(
            ours, theirs,
            "seed {seed} (parallelism {parallelism}): Runnel's totals differ from DataFusion's over the final table"
        );
    }
}
