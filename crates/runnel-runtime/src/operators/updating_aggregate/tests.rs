//! Unit tests of the updating aggregate: changes, restores, freed groups, increments.

use datafusion::arrow::array::{Int64Array, StringArray};
use runnel_sql::StreamNode;

use super::*;
use crate::side_output::LateRows;

fn sum_by_key() -> UpdatingAggregateNode {
    aggregate_of(
        "CREATE TABLE t (k STRING, v BIGINT) WITH ('connector' = 'filesystem', 'path' = 'x');
         SELECT k, SUM(v) AS s FROM t GROUP BY k;",
    )
}

/// The aggregate of the query in `script`.
fn aggregate_of(script: &str) -> UpdatingAggregateNode {
    let mut node = crate::test_plans::plan_script(script).root;
    loop {
        node = match node {
            StreamNode::UpdatingAggregate(a) => return a,
            StreamNode::Projection { input, .. } => *input,
            other => panic!("no aggregate in {other:?}"),
        }
    }
}

fn rows(node: &UpdatingAggregateNode, keys: &[&str], values: &[i64]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(node.input_schema.as_arrow().clone()),
        vec![
            Arc::new(StringArray::from_iter_values(keys.iter().copied())),
            Arc::new(Int64Array::from_iter_values(values.iter().copied())),
        ],
    )
    .unwrap()
}

fn changes(op: &mut UpdatingAggregateOperator, batch: RecordBatch) -> Vec<String> {
    let mut out = Collector::new(LateRows::default());
    op.process_batch(batch, &mut out).unwrap();
    out.take()
        .flat_map(|b| {
            let keys = b.column(0).as_string::<i32>().clone();
            let sums = b
                .column(1)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .clone();
            let kinds = b.column(2).as_primitive::<Int8Type>().clone();
            (0..b.num_rows())
                .map(|i| {
                    let kind = ChangeKind::from_code(kinds.value(i)).unwrap();
                    format!(
                        "{}[{}, {}]",
                        kind.short_string(),
                        keys.value(i),
                        sums.value(i)
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// After a restore, what went out after the checkpoint is unknown: a group's next row
/// is sent even when its value did not change (a straight run sends nothing).
#[test]
fn a_restored_group_sends_its_next_row_even_if_unchanged() {
    let node = sum_by_key();
    let mut op = UpdatingAggregateOperator::try_new(&node, false).unwrap();
    assert_eq!(changes(&mut op, rows(&node, &["a"], &[5])), ["+I[a, 5]"]);
    assert!(changes(&mut op, rows(&node, &["a"], &[0])).is_empty());
    let state = CheckpointedState::snapshot(&mut op).unwrap().unwrap();
    let mut restored = UpdatingAggregateOperator::try_new(&node, false).unwrap();
    CheckpointedState::restore(&mut restored, state).unwrap();
    assert_eq!(
        changes(&mut restored, rows(&node, &["a"], &[0])),
        ["-U[a, 5]", "+U[a, 5]"]
    );
    assert!(changes(&mut restored, rows(&node, &["a"], &[0])).is_empty());
}
/// `SUM(v) GROUP BY k` over `t (k, v, done)` whose groups are done at `done`
/// (`finished_after`): freed once the watermark passes it.
fn finished_node() -> UpdatingAggregateNode {
    let mut node = aggregate_of(
        "CREATE TABLE t (k STRING, v BIGINT, done TIMESTAMP(3))
             WITH ('connector' = 'filesystem', 'path' = 'x');
         SELECT k, SUM(v) AS s FROM t GROUP BY k;",
    );
    // The optimizer prunes `done`: read the table's three columns.
    let StreamNode::Source(source) = node.input.as_mut() else {
        panic!("the aggregate reads the table")
    };
    source.projection = None;
    source.schema = Arc::new(
        datafusion::common::DFSchema::try_from_qualified_schema("t", &source.table.schema).unwrap(),
    );
    node.input_schema = node.input.schema();
    node.finished_after = Some(2);
    node
}

/// Rows of [`finished_node`]'s input: each key with value 1, done at `done`.
fn finished_rows(node: &UpdatingAggregateNode, keys: &[&str], done: &[i64]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(node.input_schema.as_arrow().clone()),
        vec![
            Arc::new(StringArray::from_iter_values(keys.iter().copied())),
            Arc::new(Int64Array::from_iter_values(done.iter().map(|_| 1))),
            Arc::new(datafusion::arrow::array::TimestampMillisecondArray::from(
                done.to_vec(),
            )),
        ],
    )
    .unwrap()
}

/// A group whose rows can no longer arrive (`finished_after`) is freed, silently, once
/// the watermark passes the latest of its rows' times; the others stay.
#[test]
fn a_finished_group_is_freed_when_the_watermark_passes_its_time() {
    let node = finished_node();
    let batch = |keys: &[&str], done: &[i64]| finished_rows(&node, keys, done);
    let mut op = UpdatingAggregateOperator::try_new(&node, false).unwrap();
    assert_eq!(
        changes(&mut op, batch(&["a", "b", "a"], &[10, 30, 20])),
        ["+I[a, 2]", "+I[b, 1]"]
    );
    let both = CheckpointedState::size(&op);
    let mut out = Collector::new(LateRows::default());
    // `a` is done at 20 (its latest row), `b` at 30.
    op.process_watermark(20, &mut out).unwrap();
    assert_eq!(CheckpointedState::size(&op), both, "20 is not past a's 20");
    op.process_watermark(21, &mut out).unwrap();
    assert!(out.take().next().is_none(), "freed without a word");
    assert!(CheckpointedState::size(&op) < both, "a's group is freed");
    // b lives on: its next row updates it.
    assert_eq!(
        changes(&mut op, batch(&["b"], &[30])),
        ["-U[b, 1]", "+U[b, 2]"]
    );
}

/// Takes an increment the way the checkpoint writer does: its batch and merge.
fn take_increment(
    op: &mut UpdatingAggregateOperator,
) -> (RecordBatch, crate::operator::CompactChain) {
    let increment = CheckpointedState::increment(op)
        .unwrap()
        .expect("an increment");
    ((increment.build)().unwrap(), increment.compact)
}

/// Restores an operator from `chain` (rows concatenated under the newest's schema).
fn restored_from(node: &UpdatingAggregateNode, chain: &[RecordBatch]) -> UpdatingAggregateOperator {
    let state =
        datafusion::arrow::compute::concat_batches(&chain.last().unwrap().schema(), chain).unwrap();
    let mut op = UpdatingAggregateOperator::try_new(node, false).unwrap();
    CheckpointedState::restore(&mut op, state).unwrap();
    op
}

#[test]
fn increments_hold_the_changed_groups_and_the_newest_row_of_a_key_wins() {
    let node = sum_by_key();
    let mut op = UpdatingAggregateOperator::try_new(&node, false).unwrap();
    assert!(CheckpointedState::track_increments(&mut op));
    let mut chain = Vec::new();
    let mut merge = None;
    for (keys, values) in [
        (&["a", "b"][..], &[5, 1][..]),
        (&[][..], &[][..]),
        (&["a", "c", "a"][..], &[2, 3, 1][..]),
        (&["b"][..], &[4][..]),
    ] {
        changes(&mut op, rows(&node, keys, values));
        let (increment, compact) = take_increment(&mut op);
        chain.push(increment);
        merge = Some(compact);
    }
    let sizes: Vec<usize> = chain.iter().map(RecordBatch::num_rows).collect();
    assert_eq!(
        sizes,
        [2, 0, 2, 1],
        "each increment holds the groups it changed"
    );
    let merged = merge.unwrap()(chain.clone()).unwrap();
    assert_eq!(merged.num_rows(), 3, "one row per key");
    let next = ["a", "b", "c"];
    let expected = [
        "-U[a, 8]", "+U[a, 9]", "-U[b, 5]", "+U[b, 6]", "-U[c, 3]", "+U[c, 4]",
    ];
    assert_eq!(changes(&mut op, rows(&node, &next, &[1, 1, 1])), expected);
    let mut restored = restored_from(&node, &chain);
    assert_eq!(
        changes(&mut restored, rows(&node, &next, &[1, 1, 1])),
        expected
    );
    let mut from_merged = restored_from(&node, &[merged]);
    assert_eq!(
        changes(&mut from_merged, rows(&node, &next, &[1, 1, 1])),
        expected
    );
}

#[test]
fn a_group_freed_after_a_checkpoint_is_a_tombstone_in_the_next_increment() {
    let node = finished_node();
    let batch = |keys: &[&str], done: &[i64]| finished_rows(&node, keys, done);
    let mut op = UpdatingAggregateOperator::try_new(&node, false).unwrap();
    assert!(CheckpointedState::track_increments(&mut op));
    changes(&mut op, batch(&["a", "b"], &[10, 30]));
    let (first, _) = take_increment(&mut op);
    // `a` is done at 10: the watermark frees it.
    op.process_watermark(21, &mut Collector::new(LateRows::default()))
        .unwrap();
    let (second, merge) = take_increment(&mut op);
    assert_eq!(second.num_rows(), 1, "a's tombstone");
    let chain = vec![first, second];
    assert_eq!(merge(chain.clone()).unwrap().num_rows(), 1, "b alone");
    let mut restored = UpdatingAggregateOperator::try_new(&node, false).unwrap();
    let state = datafusion::arrow::compute::concat_batches(&chain[1].schema(), &chain).unwrap();
    CheckpointedState::restore(&mut restored, state).unwrap();
    // `a` starts again from nothing; `b` goes on.
    assert_eq!(
        changes(&mut restored, batch(&["a", "b"], &[40, 40])),
        ["+I[a, 1]", "-U[b, 1]", "+U[b, 2]"]
    );
}
