//! Unit tests of the regular join: state TTL, rows bounded by the other side, checkpoints.

use datafusion::arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
use runnel_sql::{PlanOptions, StreamNode};

use super::*;

/// Claims joined with a changelog of policies, at `ttl_ms` (if any).
fn join(ttl_ms: Option<i64>) -> RegularJoinOperator {
    join_of("JOIN", ttl_ms)
}

/// Claims `join`ed (`JOIN`, `FULL JOIN`, ...) with a changelog of policies, at `ttl_ms`.
fn join_of(join: &str, ttl_ms: Option<i64>) -> RegularJoinOperator {
    let options = PlanOptions {
        state_ttl_ms: ttl_ms,
        ..PlanOptions::default()
    };
    let mut node = crate::test_plans::plan_script_with(
        &format!(
            "CREATE TABLE claims (claim_id STRING, policy_id BIGINT, ts TIMESTAMP(3),
             WATERMARK FOR ts AS ts)
         WITH ('connector' = 'filesystem', 'path' = 'x', 'format' = 'json');
         CREATE TABLE policies (policy_id BIGINT, holder STRING, changed_at TIMESTAMP(3),
             PRIMARY KEY (policy_id) NOT ENFORCED, WATERMARK FOR changed_at AS changed_at)
         WITH ('connector' = 'filesystem', 'path' = 'y', 'format' = 'debezium-json');
         SELECT c.claim_id, p.holder FROM claims c {join} policies p ON c.policy_id = p.policy_id;"
        ),
        &options,
    )
    .root;
    loop {
        node = match node {
            StreamNode::RegularJoin(join) => {
                assert_eq!(join.state_ttl.is_some(), ttl_ms.is_some());
                return RegularJoinOperator::try_new(&join, Arc::new(JobMetrics::default()))
                    .unwrap();
            }
            StreamNode::Projection { input, .. } => *input,
            other => panic!("no join in {other:?}"),
        }
    }
}

/// A batch of `schema` from named columns (a column the plan pruned is left out).
fn batch(schema: &SchemaRef, columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let mut columns: std::collections::HashMap<&str, ArrayRef> = columns.into_iter().collect();
    let arrays = schema
        .fields()
        .iter()
        .map(|f| {
            columns
                .remove(f.name().as_str())
                .expect("a column for every field")
        })
        .collect();
    RecordBatch::try_new(schema.clone(), arrays).unwrap()
}

fn claim(op: &RegularJoinOperator, id: &str, policy: i64, ts: i64) -> RecordBatch {
    batch(
        &op.left.schema,
        vec![
            ("claim_id", Arc::new(StringArray::from(vec![id]))),
            ("policy_id", Arc::new(Int64Array::from(vec![policy]))),
            ("ts", Arc::new(TimestampMillisecondArray::from(vec![ts]))),
        ],
    )
}

fn policy(op: &RegularJoinOperator, kind: ChangeKind, id: i64, holder: &str) -> RecordBatch {
    let schema = runnel_sql::changelog::with_change_column(&op.right.schema);
    batch(
        &schema,
        vec![
            ("policy_id", Arc::new(Int64Array::from(vec![id]))),
            ("holder", Arc::new(StringArray::from(vec![holder]))),
            (
                "changed_at",
                Arc::new(TimestampMillisecondArray::from(vec![0])),
            ),
            ("__op", Arc::new(Int8Array::from(vec![kind as i8]))),
        ],
    )
}

fn joined(out: &mut Collector) -> usize {
    out.take().map(|b| b.num_rows()).sum()
}

/// With a TTL of one minute, a policy changed at 0 s and a claim at 10 s are dropped
/// once both watermarks reach 100 s: a claim of the policy at 110 s finds nothing, and
/// the policy's delete is a retraction of a row no longer held (ignored, counted).
/// Without a TTL the same claim is joined.
#[test]
fn rows_past_the_state_ttl_are_dropped_silently() {
    for ttl in [Some(60_000), None] {
        let mut op = join(ttl);
        let mut out = Collector::default();
        let mut watermarks = InputWatermarks::default();
        let batch = policy(&op, ChangeKind::Insert, 1, "Ann");
        op.process_batch(Side::Right, batch, &watermarks, &mut out)
            .unwrap();
        let batch = claim(&op, "c1", 1, 10_000);
        op.process_batch(Side::Left, batch, &watermarks, &mut out)
            .unwrap();
        assert_eq!(joined(&mut out), 1);
        for side in [Side::Left, Side::Right] {
            watermarks.advance(side, 100_000);
            op.process_watermark(side, &watermarks, &mut out).unwrap();
        }
        assert_eq!(joined(&mut out), 0, "expiry emits nothing");
        let batch = claim(&op, "c2", 1, 110_000);
        op.process_batch(Side::Left, batch, &watermarks, &mut out)
            .unwrap();
        let batch = policy(&op, ChangeKind::Delete, 1, "Ann");
        op.process_batch(Side::Right, batch, &watermarks, &mut out)
            .unwrap();
        let ignored = op
            .metrics
            .ignored_changes
            .load(std::sync::atomic::Ordering::Relaxed);
        match ttl {
            Some(_) => {
                assert_eq!(joined(&mut out), 0, "the policy expired");
                assert_eq!(ignored, 1, "its delete finds nothing");
                assert_eq!(op.left.live_rows(), 1, "only c2 is live");
                assert_eq!(op.right.live_rows(), 0);
            }
            None => {
                // c2 joined, then the delete takes both joined rows back.
                assert_eq!(joined(&mut out), 3);
                assert_eq!(ignored, 0);
            }
        }
    }
}

/// Nexmark q4's join, bounded row by row: an auction is dropped once both watermarks
/// pass its `expires`, a bid once they pass the bid's time; both sides' state empties
/// without a TTL, and the joined rows are append-only (no change column).
#[test]
fn rows_bounded_by_the_other_sides_columns_are_dropped_past_them() {
    let plan = crate::test_plans::plan_script(
        "CREATE TABLE auction (id BIGINT, ts TIMESTAMP(3), expires TIMESTAMP(3),
             WATERMARK FOR ts AS ts)
         WITH ('connector' = 'filesystem', 'path' = 'x', 'format' = 'json');
         CREATE TABLE bid (auction BIGINT, price BIGINT, ts TIMESTAMP(3),
             WATERMARK FOR ts AS ts)
         WITH ('connector' = 'filesystem', 'path' = 'y', 'format' = 'json');
         SELECT A.id, B.price FROM auction A, bid B
         WHERE A.id = B.auction AND B.ts BETWEEN A.ts AND A.expires;",
    );
    let mut node = plan.root;
    let mut op = loop {
        node = match node {
            StreamNode::RegularJoin(join) => {
                assert_eq!(join.state_ttl.map(|(_, _, ttl)| ttl), Some(0));
                break RegularJoinOperator::try_new(&join, Arc::new(JobMetrics::default()))
                    .unwrap();
            }
            StreamNode::Projection { input, .. } => *input,
            other => panic!("no join in {other:?}"),
        }
    };
    let ts = |ms: i64| Arc::new(TimestampMillisecondArray::from(vec![ms])) as ArrayRef;
    let mut out = Collector::default();
    let mut watermarks = InputWatermarks::default();
    let auction = batch(
        &op.left.schema,
        vec![
            ("id", Arc::new(Int64Array::from(vec![1]))),
            ("ts", ts(0)),
            ("expires", ts(10_000)),
        ],
    );
    op.process_batch(Side::Left, auction, &watermarks, &mut out)
        .unwrap();
    let bid = batch(
        &op.right.schema,
        vec![
            ("auction", Arc::new(Int64Array::from(vec![1]))),
            ("price", Arc::new(Int64Array::from(vec![5]))),
            ("ts", ts(5_000)),
        ],
    );
    op.process_batch(Side::Right, bid, &watermarks, &mut out)
        .unwrap();
    let rows: Vec<RecordBatch> = out.take().collect();
    assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    assert_eq!(rows[0].num_columns(), op.joined_schema.fields().len());
    let mut advance = |to: i64, op: &mut RegularJoinOperator| {
        for side in [Side::Left, Side::Right] {
            watermarks.advance(side, to);
            op.process_watermark(side, &watermarks, &mut out).unwrap();
        }
    };
    advance(6_000, &mut op);
    assert_eq!(
        (op.left.live_rows(), op.right.live_rows()),
        (1, 0),
        "the bid is past"
    );
    advance(10_001, &mut op);
    assert_eq!(
        (op.left.live_rows(), op.right.live_rows()),
        (0, 0),
        "the auction expired"
    );
}

/// Every row of `batches`, printed, sorted (to compare states and outputs whatever the
/// order of their rows).
fn sorted_rows(batches: &[RecordBatch]) -> Vec<String> {
    let table = datafusion::arrow::util::pretty::pretty_format_batches(batches)
        .unwrap()
        .to_string();
    let mut rows: Vec<String> = table
        .lines()
        .skip(3)
        .filter(|l| l.starts_with('|'))
        .map(str::to_owned)
        .collect();
    rows.sort();
    rows
}

/// One step of a join's input: a claim (id, policy) or a policy change.
enum Change<'a> {
    Claim(&'a str, i64),
    Policy(ChangeKind, i64, &'a str),
}

/// Feeds `changes` to `op`; returns what it emitted, sorted.
fn run(op: &mut RegularJoinOperator, changes: &[Change<'_>]) -> Vec<String> {
    let watermarks = InputWatermarks::default();
    let mut out = Collector::default();
    for change in changes {
        let (side, batch) = match *change {
            Change::Claim(id, policy) => (Side::Left, claim(op, id, policy, 0)),
            Change::Policy(kind, id, holder) => (Side::Right, policy(op, kind, id, holder)),
        };
        op.process_batch(side, batch, &watermarks, &mut out)
            .unwrap();
    }
    sorted_rows(&out.take().collect::<Vec<_>>())
}

/// The join's whole state, sorted (slots included).
fn state(op: &mut RegularJoinOperator) -> Vec<String> {
    sorted_rows(&op.snapshot().unwrap().into_iter().collect::<Vec<_>>())
}

fn build(increment: Option<StateIncrement>) -> (RecordBatch, crate::operator::CompactChain) {
    let increment = increment.expect("increments are tracked");
    ((increment.build)().unwrap(), increment.compact)
}

fn restored(chain: &[RecordBatch]) -> RegularJoinOperator {
    let mut op = join_of("FULL JOIN", None);
    let all = datafusion::arrow::compute::concat_batches(&chain[0].schema(), chain).unwrap();
    op.restore(all).unwrap();
    op
}

/// A full outer join checkpointed incrementally: each increment holds only the slots
/// that changed (added, retracted, or a partner count moved), and a chain of them — also
/// one resumed after a restore, also merged into one — restores the same rows in the same
/// slots as the operator that ran straight through, which then joins as it would have.
#[test]
fn a_chain_of_increments_restores_the_join_slot_for_slot() {
    use Change::{Claim, Policy};
    use ChangeKind::{Delete, Insert};
    let mut straight = join_of("FULL JOIN", None);
    assert!(straight.track_increments());

    let first = [
        Policy(Insert, 1, "Ann"),
        Policy(Insert, 2, "Bo"),
        Claim("c1", 1),
        Claim("c2", 3),
        Claim("c3", 2),
        Claim("c3", 2),
    ];
    run(&mut straight, &first);
    let (one, _) = build(straight.increment().unwrap());
    assert_eq!(one.num_rows(), 6, "everything is new");

    // Policy 2 goes (both c3 lose their partner); a claim of policy 1 joins.
    run(&mut straight, &[Policy(Delete, 2, "Bo"), Claim("c4", 1)]);
    let (two, compact) = build(straight.increment().unwrap());
    assert_eq!(
        two.num_rows(),
        5,
        "policy 2 freed, both c3 and policy 1 moved partners, c4 added"
    );
    assert!(
        build(straight.increment().unwrap()).0.num_rows() == 0,
        "nothing changed since"
    );

    // A restore from the chain holds what the straight run holds, slot for slot.
    let mut resumed = restored(&[one.clone(), two.clone()]);
    assert_eq!(state(&mut resumed), state(&mut straight));
    assert!(resumed.track_increments());

    // Both go on alike, and the resumed one's increment extends the chain.
    let third = [
        Policy(Insert, 3, "Cy"),
        Claim("c5", 4),
        Policy(Delete, 1, "Ann"),
    ];
    assert_eq!(run(&mut resumed, &third), run(&mut straight, &third));
    let (three, _) = build(resumed.increment().unwrap());
    let chain = [one, two, three];
    let mut from_chain = restored(&chain);
    assert_eq!(state(&mut from_chain), state(&mut straight));
    let merged = compact(chain.to_vec()).unwrap();
    assert!(merged.num_rows() < chain.iter().map(|b| b.num_rows()).sum::<usize>());
    let mut from_merged = restored(&[merged]);
    assert_eq!(state(&mut from_merged), state(&mut straight));

    // A restored join retracts and joins exactly like the straight one.
    let fourth = [Claim("c6", 3), Policy(Delete, 3, "Cy"), Claim("c3", 2)];
    let expected = run(&mut straight, &fourth);
    assert!(!expected.is_empty());
    assert_eq!(run(&mut from_chain, &fourth), expected);
    assert_eq!(run(&mut from_merged, &fourth), expected);
}
