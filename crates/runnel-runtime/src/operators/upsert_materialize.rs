//! [`UpsertMaterializeOperator`]: the changes going into a sink with a primary key, put
//! in order per sink key (Flink's `SinkUpsertMaterializer`).
//!
//! An upsert sink writes `+I`/`+U` as the key's row and deletes the key on `-D`. That is
//! right only if each key's changes arrive in order, and a regular join does not keep
//! them so: a claim moved to another policy leaves the join as `-D` of its old joined row
//! (from the subtask of the old policy) and `+I` of the new one (from another subtask),
//! which may arrive either way round. Per key this operator keeps the live rows in the
//! order they were added; the key's row is the last of them:
//! - an addition is appended and goes out (`+I` for a key without rows, `+U` otherwise);
//! - a retraction takes out the last equal row; if that was the key's row, the row before
//!   it goes out as `+U`, or `-D` when none is left; otherwise nothing goes out;
//! - a retraction of a row the key does not hold is dropped and counted.
//!
//! State: the live rows of each key (Arrow's row format), usually one; checkpointed whole
//! or, with incremental checkpoints, as the keys changed since the previous barrier (see
//! [`ChangeRows`]).

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use runnel_sql::changelog::ChangeKind;
use runnel_sql::UpsertMaterializeNode;

use crate::error::Result;
use crate::metrics::JobMetrics;
use crate::operator::StateIncrement;
use crate::operator::{
    CheckpointedState, Collector, OneInputOperator, OperatorState, StreamOperator,
};
use crate::operators::change_rows::{ChangeRows, ChangedKeys, KeyedRows};

/// See the module documentation.
pub struct UpsertMaterializeOperator {
    /// The input's (and output's) batches: the sink's columns, then the change column.
    format: ChangeRows,
    /// Each key's live rows, oldest first; the last is the row the sink holds.
    rows: KeyedRows,
    /// Bytes of the rows and keys held.
    bytes: usize,
    /// With incremental checkpoints: the keys changed since the last barrier.
    changed: ChangedKeys,
    metrics: Arc<JobMetrics>,
}

impl UpsertMaterializeOperator {
    pub fn try_new(node: &UpsertMaterializeNode, metrics: Arc<JobMetrics>) -> Result<Self> {
        Ok(Self {
            format: ChangeRows::try_new(
                node.input.arrow_schema(),
                &node.keys,
                "UpsertMaterialize",
            )?,
            rows: KeyedRows::default(),
            bytes: 0,
            changed: ChangedKeys::default(),
            metrics,
        })
    }
}

impl StreamOperator for UpsertMaterializeOperator {
    fn name(&self) -> &str {
        "UpsertMaterialize"
    }

    fn state(&mut self) -> OperatorState<'_> {
        OperatorState::Checkpointed(self)
    }
}

impl OneInputOperator for UpsertMaterializeOperator {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        let changes = self.format.encode(&batch)?;
        let (mut emitted, mut emitted_kinds) = (Vec::new(), Vec::new());
        let mut ignored = 0;
        for (i, &kind) in changes.kinds.iter().enumerate() {
            let row = changes.rows.row(i).owned();
            let key = changes.keys.row(i).owned();
            if kind.is_addition() || self.rows.contains_key(&key) {
                self.changed.note(&key, &row);
            }
            if kind.is_addition() {
                let key_bytes = key.as_ref().len();
                let held = self.rows.entry(key).or_default();
                let kind = if held.is_empty() {
                    self.bytes += key_bytes + 64;
                    ChangeKind::Insert
                } else {
                    ChangeKind::UpdateAfter
                };
                self.bytes += row.as_ref().len();
                held.push(row.clone());
                emitted.push(row);
                emitted_kinds.push(kind);
                continue;
            }
            let Some(held) = self.rows.get_mut(&key) else {
                ignored += 1;
                continue;
            };
            let Some(at) = held.iter().rposition(|r| *r == row) else {
                ignored += 1;
                continue;
            };
            held.remove(at);
            self.bytes -= row.as_ref().len();
            if at < held.len() {
                continue; // An older row: the key's row stays.
            }
            match held.last() {
                Some(previous) => {
                    emitted.push(previous.clone());
                    emitted_kinds.push(ChangeKind::UpdateAfter);
                }
                None => {
                    self.rows.remove(&key);
                    self.bytes -= key.as_ref().len() + 64;
                    emitted.push(row);
                    emitted_kinds.push(ChangeKind::Delete);
                }
            }
        }
        JobMetrics::add(&self.metrics.ignored_changes, ignored);
        if !emitted.is_empty() {
            out.emit(self.format.to_batch(&emitted, &emitted_kinds)?);
        }
        Ok(())
    }
}

impl CheckpointedState for UpsertMaterializeOperator {
    fn size(&self) -> usize {
        self.bytes
    }

    /// Every key's live rows, oldest first.
    fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        self.format
            .snapshot(self.rows.values().map(Vec::as_slice))
            .map(Some)
    }

    fn restore(&mut self, state: RecordBatch) -> Result<()> {
        self.rows = self.format.read_snapshot(&state)?;
        self.bytes = self
            .rows
            .iter()
            .map(|(key, held)| {
                key.as_ref().len() + 64 + held.iter().map(|r| r.as_ref().len()).sum::<usize>()
            })
            .sum();
        Ok(())
    }

    fn track_increments(&mut self) -> bool {
        self.changed.track()
    }

    fn increment(&mut self) -> Result<Option<StateIncrement>> {
        let rows = &self.rows;
        self.changed
            .increment(&self.format, |key| rows.get(key).map(Vec::as_slice))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray, Int64Array, Int8Array};
    use datafusion::arrow::datatypes::Int8Type;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::DFSchema;
    use runnel_sql::StreamNode;

    fn operator() -> UpsertMaterializeOperator {
        let schema = Schema::new(vec![
            Field::new("claim", DataType::Int64, false),
            Field::new("policy", DataType::Int64, true),
        ]);
        let df = Arc::new(DFSchema::try_from(schema).unwrap());
        // Any updating input will do: only its schema is read.
        let input = StreamNode::UpsertMaterialize(UpsertMaterializeNode {
            input: Box::new(StreamNode::Union {
                inputs: vec![],
                schema: df,
            }),
            keys: vec![0],
        });
        let node = UpsertMaterializeNode {
            input: Box::new(input),
            keys: vec![0],
        };
        UpsertMaterializeOperator::try_new(&node, Arc::new(JobMetrics::default())).unwrap()
    }

    fn changes(op: &UpsertMaterializeOperator, rows: &[(ChangeKind, i64, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            op.format.schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
                Arc::new(Int8Array::from_iter_values(rows.iter().map(|r| r.0 as i8))),
            ],
        )
        .unwrap()
    }

    fn run(op: &mut UpsertMaterializeOperator, rows: &[(ChangeKind, i64, i64)]) -> Vec<String> {
        let mut out = Collector::default();
        op.process_batch(changes(op, rows), &mut out).unwrap();
        out.take()
            .flat_map(|b| {
                let claim = b
                    .column(0)
                    .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                    .clone();
                let policy = b
                    .column(1)
                    .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                    .clone();
                let kind = b.column(2).as_primitive::<Int8Type>().clone();
                (0..b.num_rows())
                    .map(|i| {
                        let kind = ChangeKind::from_code(kind.value(i)).unwrap();
                        format!(
                            "{}[{}, {}]",
                            kind.short_string(),
                            claim.value(i),
                            policy.value(i)
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    use ChangeKind::{Delete, Insert};

    #[test]
    fn a_retraction_arriving_after_the_new_row_keeps_the_new_row() {
        let mut op = operator();
        assert_eq!(run(&mut op, &[(Insert, 1, 10)]), ["+I[1, 10]"]);
        // The claim moved to policy 20: its new joined row came first.
        assert_eq!(run(&mut op, &[(Insert, 1, 20)]), ["+U[1, 20]"]);
        assert_eq!(run(&mut op, &[(Delete, 1, 10)]), Vec::<String>::new());
        // Deleted for good.
        assert_eq!(run(&mut op, &[(Delete, 1, 20)]), ["-D[1, 20]"]);
        assert!(op.rows.is_empty());
        assert_eq!(op.bytes, 0);
    }

    #[test]
    fn retracting_the_current_row_brings_back_the_one_before() {
        let mut op = operator();
        run(&mut op, &[(Insert, 1, 10), (Insert, 1, 20)]);
        assert_eq!(run(&mut op, &[(Delete, 1, 20)]), ["+U[1, 10]"]);
        // A retraction of a row the key does not hold is dropped and counted.
        assert_eq!(
            run(&mut op, &[(Delete, 1, 99), (Delete, 2, 1)]),
            Vec::<String>::new()
        );
        assert_eq!(
            op.metrics
                .ignored_changes
                .load(std::sync::atomic::Ordering::Relaxed),
            2
        );
    }

    #[test]
    fn a_restored_operator_holds_the_same_rows_in_the_same_order() {
        let mut op = operator();
        run(&mut op, &[(Insert, 1, 10), (Insert, 1, 20), (Insert, 2, 5)]);
        let state = op.snapshot().unwrap().unwrap();
        let mut restored = operator();
        restored.restore(state).unwrap();
        assert_eq!(restored.bytes, op.bytes);
        assert_eq!(run(&mut restored, &[(Delete, 1, 20)]), ["+U[1, 10]"]);
        assert_eq!(run(&mut restored, &[(Delete, 2, 5)]), ["-D[2, 5]"]);
        assert_eq!(restored.rows.len(), 1);
    }

    #[test]
    fn empty_state_snapshots_as_no_rows() {
        let mut op = operator();
        let state = op.snapshot().unwrap().unwrap();
        assert_eq!(state.num_rows(), 0);
        assert!(state.column(0).is_empty());
    }

    /// With incremental checkpoints an increment holds the keys that changed — each
    /// key's rows in order, a gone key as `-D` — and a chain of them, or the chain merged,
    /// restores every key's rows in the same order.
    #[test]
    fn a_chain_of_increments_restores_each_keys_rows_in_order() {
        let mut op = operator();
        assert!(op.track_increments());
        let increment = |op: &mut UpsertMaterializeOperator| {
            let increment = op.increment().unwrap().expect("tracked");
            ((increment.build)().unwrap(), increment.compact)
        };
        run(
            &mut op,
            &[
                (Insert, 1, 10),
                (Insert, 1, 20),
                (Insert, 2, 5),
                (Insert, 3, 7),
            ],
        );
        let (first, _) = increment(&mut op);
        assert_eq!(first.num_rows(), 4);
        // Key 1 is back to its first row, key 2 is gone, key 9 was never held.
        run(&mut op, &[(Delete, 1, 20), (Delete, 2, 5), (Delete, 9, 9)]);
        let (second, _) = increment(&mut op);
        assert_eq!(second.num_rows(), 2, "+I[1, 10] and -D[2, 5]");
        run(&mut op, &[(Insert, 1, 30)]);
        let (third, compact) = increment(&mut op);
        assert_eq!(third.num_rows(), 2, "+I[1, 10] and +U[1, 30]");

        let chain = [first, second, third];
        let merged = compact(chain.to_vec()).unwrap();
        assert_eq!(merged.num_rows(), 3, "key 1's two rows and key 3's");
        for state in [
            datafusion::arrow::compute::concat_batches(&chain[0].schema(), &chain).unwrap(),
            merged,
        ] {
            let mut restored = operator();
            restored.restore(state).unwrap();
            assert_eq!(restored.rows, op.rows);
            assert_eq!(restored.bytes, op.bytes);
            assert_eq!(run(&mut restored, &[(Delete, 1, 30)]), ["+U[1, 10]"]);
        }
    }
}
