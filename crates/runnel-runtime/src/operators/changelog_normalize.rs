//! [`ChangelogNormalizeOperator`]: the changes of a table with a primary key, made exact
//! by keeping each key's last row (Flink's `ChangelogNormalize`).
//!
//! Change sources do not always say everything: Debezium re-sends events after a
//! connector restart, an at-least-once replay repeats them, PostgreSQL's default replica
//! identity sends an update without its old row, an upsert topic sends only new values
//! and bare keys for deletes. Per key, with the last row kept:
//! - `+I`/`+U` of a row equal to the kept one is a duplicate: dropped;
//! - `+I`/`+U` of another row becomes `-U` of the kept row and `+U` of the new one (or
//!   `+I` when the key has none);
//! - `-D` becomes `-D` of the kept row (whatever the delete carried), and frees the key; a
//!   delete of a key never seen is dropped;
//! - `-U` is dropped: the `+U` that follows it says the same, exactly.
//!
//! State: one row per live key (Arrow's row format), checkpointed whole or, with
//! incremental checkpoints, as the keys changed since the previous barrier (see
//! [`ChangeRows`]).

use datafusion::common::HashMap;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::OwnedRow;
use runnel_sql::changelog::ChangeKind;
use runnel_sql::ChangelogNormalizeNode;

use crate::error::Result;
use crate::metrics::JobMetrics;
use crate::operator::StateIncrement;
use crate::operator::{
    CheckpointedState, Collector, OneInputOperator, OperatorState, StreamOperator,
};
use crate::operators::change_rows::{ChangeRows, ChangedKeys};

/// See the module documentation.
pub struct ChangelogNormalizeOperator {
    /// The input's (and output's) batches: the table's columns, then the change column.
    format: ChangeRows,
    /// Each live key's last row.
    rows: HashMap<OwnedRow, OwnedRow>,
    /// Bytes of the rows and keys held.
    bytes: usize,
    /// With incremental checkpoints: the keys changed since the last barrier.
    changed: ChangedKeys,
    metrics: Arc<JobMetrics>,
}

impl ChangelogNormalizeOperator {
    pub fn try_new(node: &ChangelogNormalizeNode, metrics: Arc<JobMetrics>) -> Result<Self> {
        Ok(Self {
            format: ChangeRows::try_new(
                node.input.arrow_schema(),
                &node.keys,
                "ChangelogNormalize",
            )?,
            rows: HashMap::new(),
            bytes: 0,
            changed: ChangedKeys::default(),
            metrics,
        })
    }

    fn held(key: &OwnedRow, row: &OwnedRow) -> usize {
        key.as_ref().len() + row.as_ref().len() + 64
    }
}

impl StreamOperator for ChangelogNormalizeOperator {
    fn name(&self) -> &str {
        "ChangelogNormalize"
    }

    fn state(&mut self) -> OperatorState<'_> {
        OperatorState::Checkpointed(self)
    }
}

impl OneInputOperator for ChangelogNormalizeOperator {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        let changes = self.format.encode(&batch)?;
        let (mut emitted, mut emitted_kinds) = (Vec::new(), Vec::new());
        let mut ignored = 0;
        for (i, &kind) in changes.kinds.iter().enumerate() {
            let key = changes.keys.row(i).owned();
            match kind {
                ChangeKind::Insert | ChangeKind::UpdateAfter => {
                    let row = changes.rows.row(i).owned();
                    match self.rows.get(&key) {
                        Some(kept) if *kept == row => {
                            ignored += 1;
                            continue;
                        }
                        Some(kept) => {
                            emitted.push(kept.clone());
                            emitted_kinds.push(ChangeKind::UpdateBefore);
                            emitted.push(row.clone());
                            emitted_kinds.push(ChangeKind::UpdateAfter);
                        }
                        None => {
                            emitted.push(row.clone());
                            emitted_kinds.push(ChangeKind::Insert);
                        }
                    }
                    let added = Self::held(&key, &row);
                    self.changed.note(&key, &row);
                    if let Some(old) = self.rows.insert(key.clone(), row) {
                        self.bytes -= Self::held(&key, &old);
                    }
                    self.bytes += added;
                }
                ChangeKind::Delete => match self.rows.remove(&key) {
                    Some(kept) => {
                        self.bytes -= Self::held(&key, &kept);
                        self.changed.note(&key, &kept);
                        emitted.push(kept);
                        emitted_kinds.push(ChangeKind::Delete);
                    }
                    None => ignored += 1,
                },
                ChangeKind::UpdateBefore => {}
            }
        }
        JobMetrics::add(&self.metrics.ignored_changes, ignored);
        if !emitted.is_empty() {
            out.emit(self.format.to_batch(&emitted, &emitted_kinds)?);
        }
        Ok(())
    }
}

impl CheckpointedState for ChangelogNormalizeOperator {
    fn size(&self) -> usize {
        self.bytes
    }

    /// Every live key's row (the change column says `+I`).
    fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        self.format
            .snapshot(self.rows.values().map(std::slice::from_ref))
            .map(Some)
    }

    fn restore(&mut self, state: RecordBatch) -> Result<()> {
        self.rows.clear();
        self.bytes = 0;
        for (key, mut held) in self.format.read_snapshot(&state)? {
            if let Some(row) = held.pop() {
                self.bytes += Self::held(&key, &row);
                self.rows.insert(key, row);
            }
        }
        Ok(())
    }

    fn track_increments(&mut self) -> bool {
        self.changed.track()
    }

    fn increment(&mut self) -> Result<Option<StateIncrement>> {
        let rows = &self.rows;
        self.changed
            .increment(&self.format, |key| rows.get(key).map(std::slice::from_ref))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray, Int64Array, Int8Array, StringArray};
    use datafusion::arrow::datatypes::Int8Type;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::DFSchema;
    use runnel_sql::{SourceNode, StreamNode, TableDef};

    fn operator() -> ChangelogNormalizeOperator {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Utf8, true),
        ]));
        let table = TableDef {
            name: "t".into(),
            physical_schema: schema.clone(),
            schema: schema.clone(),
            row_exprs: vec![],
            watermark: None,
            primary_key: vec!["id".into()],
            metadata: vec![],
            partition_keys: vec![],
            options: [("format".to_string(), "debezium-json".to_string())].into(),
            unique_fields: vec![],
            read_fields: Default::default(),
        };
        let df = Arc::new(DFSchema::try_from(schema.as_ref().clone()).unwrap());
        let node = ChangelogNormalizeNode {
            input: Box::new(StreamNode::Source(SourceNode {
                table: Arc::new(table),
                projection: None,
                schema: df.clone(),
                processing_time: false,
            })),
            keys: vec![0],
            schema: df,
        };
        ChangelogNormalizeOperator::try_new(&node, Arc::new(JobMetrics::default())).unwrap()
    }

    fn changes(rows: &[(ChangeKind, i64, Option<&str>)]) -> RecordBatch {
        let schema = runnel_sql::changelog::with_change_column(&Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.2))),
                Arc::new(Int8Array::from_iter_values(rows.iter().map(|r| r.0 as i8))),
            ],
        )
        .unwrap()
    }

    fn run(
        op: &mut ChangelogNormalizeOperator,
        rows: &[(ChangeKind, i64, Option<&str>)],
    ) -> Vec<String> {
        let mut out = Collector::default();
        op.process_batch(changes(rows), &mut out).unwrap();
        let batches: Vec<RecordBatch> = out.take().collect();
        batches
            .iter()
            .flat_map(|b| {
                let ids = b
                    .column(0)
                    .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                let vs = b.column(1).as_string::<i32>();
                let kinds = b.column(2).as_primitive::<Int8Type>();
                (0..b.num_rows())
                    .map(|i| {
                        let kind = ChangeKind::from_code(kinds.value(i))
                            .unwrap()
                            .short_string();
                        let v = if vs.is_null(i) { "NULL" } else { vs.value(i) };
                        format!("{kind}[{}, {v}]", ids.value(i))
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn duplicates_are_dropped_updates_get_their_old_row_deletes_their_row() {
        use ChangeKind::*;
        let mut op = operator();
        assert_eq!(
            run(
                &mut op,
                &[
                    (Insert, 1, Some("a")),
                    (Insert, 1, Some("a")),      // re-sent: dropped
                    (UpdateAfter, 1, Some("b")), // no old row in the event
                    (UpdateBefore, 1, Some("b")),
                    (UpdateAfter, 1, Some("c")),
                    (Delete, 1, None),           // a delete with only the key
                    (Delete, 2, None),           // never seen: dropped
                    (UpdateAfter, 3, Some("x")), // an upsert of a new key
                ]
            ),
            ["+I[1, a]", "-U[1, a]", "+U[1, b]", "-U[1, b]", "+U[1, c]", "-D[1, c]", "+I[3, x]"]
        );
        assert_eq!(op.metrics.snapshot().ignored_changes, 2);
        // A snapshot restores the same state: the kept row is known after a restart.
        let state = op.snapshot().unwrap().unwrap();
        let mut restored = operator();
        restored.restore(state).unwrap();
        assert_eq!(
            run(&mut restored, &[(UpdateAfter, 3, Some("y"))]),
            ["-U[3, x]", "+U[3, y]"]
        );
        assert!(restored.size() > 0);
    }

    /// With incremental checkpoints an increment holds the keys changed since the last
    /// barrier (a gone key as `-D`); a chain of them, or the chain merged, restores the
    /// same kept rows.
    #[test]
    fn a_chain_of_increments_restores_each_keys_last_row() {
        use ChangeKind::*;
        let mut op = operator();
        assert!(op.track_increments());
        let increment = |op: &mut ChangelogNormalizeOperator| {
            let increment = op.increment().unwrap().expect("tracked");
            ((increment.build)().unwrap(), increment.compact)
        };
        run(
            &mut op,
            &[
                (Insert, 1, Some("a")),
                (Insert, 2, Some("b")),
                (Insert, 3, Some("c")),
            ],
        );
        let (first, _) = increment(&mut op);
        assert_eq!(first.num_rows(), 3);
        run(
            &mut op,
            &[
                (UpdateAfter, 1, Some("a2")),
                (Delete, 2, None),
                (Insert, 3, Some("c")), // a duplicate: nothing changes
            ],
        );
        let (second, compact) = increment(&mut op);
        assert_eq!(second.num_rows(), 2, "+I[1, a2] and -D[2, b]");
        let chain = [first, second];
        let merged = compact(chain.to_vec()).unwrap();
        assert_eq!(merged.num_rows(), 2);
        for state in [
            datafusion::arrow::compute::concat_batches(&chain[0].schema(), &chain).unwrap(),
            merged,
        ] {
            let mut restored = operator();
            restored.restore(state).unwrap();
            assert_eq!(restored.rows, op.rows);
            assert_eq!(restored.bytes, op.bytes);
            assert_eq!(
                run(
                    &mut restored,
                    &[(UpdateAfter, 1, Some("a3")), (Delete, 2, None)]
                ),
                ["-U[1, a2]", "+U[1, a3]"]
            );
        }
    }
}
