//! [`TopNOperator`]: `ROW_NUMBER() ... <= N` without a window over an append-only stream.
//! Each partition keeps its first `limit` rows in order; a row entering the top moves the
//! rows below it down a rank, and every rank whose row changed is emitted as `-U` (the old
//! row at that rank) and `+U` (the new one), or `+I` for a rank filled the first time.
//!
//! Partition keys, sort keys and whole rows are kept in Arrow's row format, so comparing
//! two rows' order is comparing bytes.
//!
//! With `table.exec.state.ttl` each partition remembers the event time of its last row
//! (kept or not), indexed; once the watermark passes it by the TTL the partition is freed
//! silently (Flink's state TTL), and its next row starts a new top (`+I` at rank 1).
//! A partition whose rows can no longer arrive ([`TopNNode::finished_after`]: its rows
//! all come from one row of a join side, now dropped) is freed the same way, with a TTL
//! of 0 on the column saying when.
//!
//! A checkpoint holds each partition's top, best first, with `__top` saying where a
//! partition's rows start (1 on its first row, 2 on the others). With incremental
//! checkpoints a barrier hands over the partitions changed since the previous one (their
//! whole top, at most `limit` rows; a freed partition as one row with `__top` = 0); read
//! in order, a chain leaves each partition with its newest top.

use datafusion::common::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, Int8Array, UInt32Array, UInt64Array,
};
use datafusion::arrow::compute::{cast, concat_batches, take_record_batch, SortOptions};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Int8Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::physical_expr::PhysicalExpr;
use runnel_sql::changelog::{with_change_column, ChangeKind};
use runnel_sql::TopNNode;

use crate::error::{Result, RuntimeError};
use crate::operator::{
    CheckpointedState, Collector, OneInputOperator, OperatorState, StateIncrement, StreamOperator,
};

/// One row of a partition's top: its sort key and the row itself.
struct Ranked {
    order: Box<[u8]>,
    row: OwnedRow,
}

impl Ranked {
    /// What the row costs in state.
    fn bytes(&self) -> usize {
        self.order.len() + self.row.row().as_ref().len() + 32
    }
}

/// What a partition's entry costs in state, besides its rows.
fn partition_bytes(key: &[u8]) -> usize {
    key.len() + 48
}

/// An unwindowed Top-N, emitting rank changes as rows arrive.
pub struct TopNOperator {
    partition_exprs: Vec<Arc<dyn PhysicalExpr>>,
    order_exprs: Vec<Arc<dyn PhysicalExpr>>,
    limit: usize,
    partitions_format: RowConverter,
    order_format: RowConverter,
    rows_format: RowConverter,
    /// Each partition's top rows, best first.
    partitions: HashMap<Box<[u8]>, Vec<Ranked>>,
    output_schema: SchemaRef,
    /// With a state TTL: the input's event-time column (or the column saying when a
    /// partition is done), the TTL, each partition's last row's time and the partitions
    /// by that time.
    ttl: Option<(usize, i64)>,
    last_times: HashMap<Box<[u8]>, i64>,
    by_time: std::collections::BTreeSet<(i64, Box<[u8]>)>,
    /// The state's bytes, kept as rows come and go (measuring every partition for the
    /// state metric would cost time growing with the state).
    bytes: usize,
    /// With incremental checkpoints: the partitions changed since the last barrier, each
    /// with the best row it had when it was freed (a freed one's tombstone).
    changed: Option<HashMap<Box<[u8]>, Option<OwnedRow>>>,
}

fn operator_error(source: DataFusionError) -> RuntimeError {
    RuntimeError::Operator {
        operator: "TopN".into(),
        source,
    }
}

impl TopNOperator {
    pub fn try_new(node: &TopNNode) -> Result<Self> {
        use datafusion::logical_expr::ExprSchemable;
        let input = &node.input_schema;
        let types = |exprs: &[datafusion::logical_expr::Expr]| -> Result<Vec<_>> {
            exprs
                .iter()
                .map(|e| e.get_type(input).map_err(RuntimeError::from))
                .collect()
        };
        let partition_types = types(&node.partition_by)?;
        let order_plain: Vec<_> = node.order_by.iter().map(|o| o.expr.clone()).collect();
        let order_fields = types(&order_plain)?
            .into_iter()
            .zip(&node.order_by)
            .map(|(t, o)| {
                SortField::new_with_options(
                    t,
                    SortOptions {
                        descending: !o.asc,
                        nulls_first: o.nulls_first,
                    },
                )
            })
            .collect();
        let format = |fields: Vec<SortField>| {
            RowConverter::new(fields).map_err(|e| operator_error(e.into()))
        };
        let schema = node.schema.as_arrow();
        Ok(Self {
            partition_exprs: crate::expr::compile(&node.partition_by, input)?,
            order_exprs: crate::expr::compile(&order_plain, input)?,
            limit: node.limit,
            partitions_format: format(partition_types.into_iter().map(SortField::new).collect())?,
            order_format: format(order_fields)?,
            rows_format: format(
                input
                    .fields()
                    .iter()
                    .map(|f| SortField::new(f.data_type().clone()))
                    .collect(),
            )?,
            partitions: HashMap::new(),
            output_schema: with_change_column(schema),
            ttl: match node.finished_after {
                Some(column) => Some((column, 0)),
                None => node
                    .input_time
                    .filter(|_| node.state_ttl_ms > 0)
                    .map(|column| (column, node.state_ttl_ms)),
            },
            last_times: HashMap::new(),
            by_time: std::collections::BTreeSet::new(),
            bytes: 0,
            changed: None,
        })
    }

    /// Partition `partition` changed (a row entered its top, its last time moved, or it
    /// was freed, its best row `freed` then).
    fn mark(&mut self, partition: &[u8], freed: Option<&Ranked>) {
        if let Some(changed) = &mut self.changed {
            changed.insert(partition.into(), freed.map(|r| r.row.clone()));
        }
    }

    /// With a state TTL: partition `partition` saw a row at `time`.
    fn touch(&mut self, partition: &[u8], time: i64) {
        let last = self.last_times.entry(partition.into()).or_insert(i64::MIN);
        if time > *last {
            self.by_time.remove(&(*last, partition.into()));
            self.by_time.insert((time, partition.into()));
            *last = time;
            self.mark(partition, None);
        }
    }

    /// With a state TTL: frees the partitions whose last row is more than the TTL before
    /// `watermark`.
    fn expire(&mut self, watermark: i64) {
        let Some((_, ttl)) = self.ttl else { return };
        let cutoff = watermark.saturating_sub(ttl);
        while self.by_time.first().is_some_and(|(time, _)| *time < cutoff) {
            if let Some((_, partition)) = self.by_time.pop_first() {
                if let Some(top) = self.partitions.remove(&partition) {
                    let freed =
                        partition_bytes(&partition) + top.iter().map(Ranked::bytes).sum::<usize>();
                    self.bytes = self.bytes.saturating_sub(freed);
                    self.mark(&partition, top.first());
                }
                self.last_times.remove(&partition);
            }
        }
    }

    fn rank(&mut self, batch: &RecordBatch) -> DFResult<Option<RecordBatch>> {
        let partitions = crate::expr::evaluate(&self.partition_exprs, batch)?;
        let partitions = if partitions.is_empty() {
            None
        } else {
            Some(self.partitions_format.convert_columns(&partitions)?)
        };
        let orders = self
            .order_format
            .convert_columns(&crate::expr::evaluate(&self.order_exprs, batch)?)?;
        let rows = self.rows_format.convert_columns(batch.columns())?;
        let times = match self.ttl {
            Some((column, _)) => Some(crate::operators::as_millis(batch.column(column))?),
            None => None,
        };
        let mut changed: Vec<(OwnedRow, u64, ChangeKind)> = Vec::new();
        for i in 0..batch.num_rows() {
            let partition: &[u8] = partitions.as_ref().map_or(&[], |p| p.row(i).data());
            if let Some(times) = times.as_ref().filter(|t| t.is_valid(i)) {
                self.touch(partition, times.value(i));
            }
            let order = orders.row(i);
            let top = match self.partitions.get_mut(partition) {
                Some(top) => top,
                None => {
                    self.bytes += partition_bytes(partition);
                    self.partitions.entry(partition.into()).or_default()
                }
            };
            // After every row that sorts before or equal to it: ties keep arrival order.
            let position = top.partition_point(|r| r.order.as_ref() <= order.data());
            if position >= self.limit {
                continue;
            }
            let before = top.len();
            if let Some(changed) = &mut self.changed {
                changed.insert(partition.into(), None);
            }
            let ranked = Ranked {
                order: order.data().into(),
                row: rows.row(i).owned(),
            };
            self.bytes += ranked.bytes();
            top.insert(position, ranked);
            for rank in position..before.min(self.limit) {
                changed.push((
                    top[rank + 1].row.clone(),
                    rank as u64 + 1,
                    ChangeKind::UpdateBefore,
                ));
                changed.push((
                    top[rank].row.clone(),
                    rank as u64 + 1,
                    ChangeKind::UpdateAfter,
                ));
            }
            if before < self.limit {
                changed.push((
                    top[before].row.clone(),
                    before as u64 + 1,
                    ChangeKind::Insert,
                ));
            }
            while top.len() > self.limit {
                if let Some(dropped) = top.pop() {
                    self.bytes = self.bytes.saturating_sub(dropped.bytes());
                }
            }
        }
        if changed.is_empty() {
            return Ok(None);
        }
        let mut columns = self
            .rows_format
            .convert_rows(changed.iter().map(|(row, _, _)| row.row()))?;
        let ranks: ArrayRef = Arc::new(UInt64Array::from_iter_values(
            changed.iter().map(|(_, rank, _)| *rank),
        ));
        let rank_type = self.output_schema.field(columns.len()).data_type();
        columns.push(cast(&ranks, rank_type)?);
        columns.push(Arc::new(Int8Array::from_iter_values(
            changed.iter().map(|(_, _, kind)| *kind as i8),
        )));
        Ok(Some(RecordBatch::try_new(
            self.output_schema.clone(),
            columns,
        )?))
    }
}

impl StreamOperator for TopNOperator {
    fn name(&self) -> &str {
        "TopN"
    }

    fn state(&mut self) -> OperatorState<'_> {
        OperatorState::Checkpointed(self)
    }
}

impl TopNOperator {
    /// How this operator's state is written and merged, off its task too.
    fn state_format(&self) -> StateFormat {
        let data = self.output_schema.fields().len() - 2;
        let mut fields = self.output_schema.fields()[..data].to_vec();
        if self.ttl.is_some() {
            fields.push(Arc::new(Field::new("__last_time", DataType::Int64, false)));
        }
        fields.push(Arc::new(Field::new("__top", DataType::Int8, false)));
        StateFormat {
            schema: Arc::new(Schema::new(fields)),
            data,
            rows: self
                .output_schema
                .fields()
                .iter()
                .take(data)
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
            partition_exprs: self.partition_exprs.clone(),
            with_times: self.ttl.is_some(),
        }
    }

    /// `partition`'s top as checkpoint rows (see [`StateFormat::batch`]).
    fn push_top(&self, partition: &[u8], top: &[Ranked], rows: &mut Vec<StateRow>) {
        let time = self.last_times.get(partition).copied().unwrap_or(i64::MIN);
        rows.extend(top.iter().enumerate().map(|(i, ranked)| StateRow {
            row: ranked.row.clone(),
            time,
            top: if i == 0 { TOP_FIRST } else { TOP_NEXT },
        }));
    }
}

/// `__top` of a partition's first row, of its others, and of a freed partition's row.
const TOP_FIRST: i8 = 1;
const TOP_NEXT: i8 = 2;
const TOP_FREED: i8 = 0;

/// One checkpoint row of a Top-N: a row of a partition's top (or a freed partition's).
struct StateRow {
    row: OwnedRow,
    /// The partition's last row's time (with a state TTL).
    time: i64,
    top: i8,
}

/// A Top-N's checkpoint rows: the input's columns, `__last_time` with a state TTL, and
/// `__top` (see the module documentation).
#[derive(Clone)]
struct StateFormat {
    schema: SchemaRef,
    /// How many of the columns are the input's.
    data: usize,
    rows: Vec<SortField>,
    partition_exprs: Vec<Arc<dyn PhysicalExpr>>,
    with_times: bool,
}

impl StateFormat {
    /// `rows` (encoded by any converter of the input's columns) as a checkpoint batch.
    fn batch(&self, rows: &[StateRow]) -> DFResult<RecordBatch> {
        let converter = RowConverter::new(self.rows.clone())?;
        let parser = converter.parser();
        let mut columns =
            converter.convert_rows(rows.iter().map(|r| parser.parse(r.row.as_ref())))?;
        if self.with_times {
            columns.push(Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.time),
            )));
        }
        columns.push(Arc::new(Int8Array::from_iter_values(
            rows.iter().map(|r| r.top),
        )));
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    /// A chain of checkpoint batches read in order: each partition's newest top, best
    /// first, as one checkpoint batch.
    fn merge(&self, chain: Vec<RecordBatch>) -> DFResult<RecordBatch> {
        let Some(newest) = chain.last() else {
            return datafusion::common::internal_err!("an empty chain to merge");
        };
        let all = concat_batches(&newest.schema(), &chain)?;
        if all.num_columns() != self.schema.fields().len() {
            return datafusion::common::plan_err!("a TopN state does not match the query");
        }
        let tops = all
            .column(all.num_columns() - 1)
            .as_primitive_opt::<Int8Type>()
            .ok_or_else(|| DataFusionError::Internal("a TopN state lacks __top".into()))?;
        let partitions = crate::expr::evaluate(&self.partition_exprs, &all)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let keys = if partitions.is_empty() {
            None
        } else {
            let fields = partitions
                .iter()
                .map(|p| SortField::new(p.data_type().clone()))
                .collect();
            Some(RowConverter::new(fields)?.convert_columns(&partitions)?)
        };
        let mut newest_tops: HashMap<Box<[u8]>, Vec<u32>> = HashMap::new();
        for row in 0..all.num_rows() {
            let partition: &[u8] = keys.as_ref().map_or(&[], |k| k.row(row).data());
            match tops.value(row) {
                TOP_FIRST => {
                    newest_tops.insert(partition.into(), vec![row as u32]);
                }
                TOP_NEXT => newest_tops
                    .entry(partition.into())
                    .or_default()
                    .push(row as u32),
                _ => {
                    newest_tops.remove(partition);
                }
            }
        }
        // Each partition's rows in order: its first is 1 again, the others 2.
        let (mut order, mut starts): (Vec<u32>, Vec<i8>) = (Vec::new(), Vec::new());
        for top in newest_tops.into_values() {
            starts.extend((0..top.len()).map(|i| if i == 0 { TOP_FIRST } else { TOP_NEXT }));
            order.extend(top);
        }
        let merged = take_record_batch(&all, &UInt32Array::from(order))?;
        let mut columns = merged.columns().to_vec();
        let last = columns.len() - 1;
        columns[last] = Arc::new(Int8Array::from(starts));
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

impl CheckpointedState for TopNOperator {
    fn size(&self) -> usize {
        self.bytes
    }

    /// Every partition's top rows, best first, each with its partition's last row's time
    /// (`__last_time`, with a state TTL) and `__top`.
    fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        let mut rows = Vec::new();
        for (partition, top) in &self.partitions {
            self.push_top(partition, top, &mut rows);
        }
        self.state_format()
            .batch(&rows)
            .map(Some)
            .map_err(operator_error)
    }

    /// Ranking each partition's newest top again, best first, rebuilds it (and, with a
    /// state TTL, its last row's time).
    fn restore(&mut self, state: RecordBatch) -> Result<()> {
        self.partitions.clear();
        self.bytes = 0;
        self.last_times.clear();
        self.by_time.clear();
        let format = self.state_format();
        let state = format.merge(vec![state]).map_err(operator_error)?;
        let data = state
            .project(&(0..format.data).collect::<Vec<_>>())
            .map_err(|e| operator_error(e.into()))?;
        self.rank(&data).map_err(operator_error)?;
        if format.with_times {
            let times = state
                .column(format.data)
                .as_primitive_opt::<Int64Type>()
                .cloned()
                .ok_or_else(|| RuntimeError::Checkpoint("a TopN state lacks its times".into()))?;
            let partitions = crate::expr::evaluate(&self.partition_exprs, &data)?;
            let keys = if partitions.is_empty() {
                None
            } else {
                Some(
                    self.partitions_format
                        .convert_columns(&partitions)
                        .map_err(|e| operator_error(e.into()))?,
                )
            };
            for row in 0..data.num_rows() {
                let partition: &[u8] = keys.as_ref().map_or(&[], |k| k.row(row).data());
                self.touch(partition, times.value(row));
            }
        }
        Ok(())
    }

    fn track_increments(&mut self) -> bool {
        self.changed.get_or_insert_with(HashMap::new);
        true
    }

    /// The partitions changed since the last barrier: their tops, copied.
    fn increment(&mut self) -> Result<Option<StateIncrement>> {
        let Some(changed) = self.changed.as_mut().map(std::mem::take) else {
            return Ok(None);
        };
        let mut rows = Vec::new();
        for (partition, freed) in changed {
            match (self.partitions.get(&partition), freed) {
                (Some(top), _) => self.push_top(&partition, top, &mut rows),
                (None, Some(row)) => rows.push(StateRow {
                    row,
                    time: i64::MIN,
                    top: TOP_FREED,
                }),
                (None, None) => {}
            }
        }
        let (build, compact) = (self.state_format(), self.state_format());
        Ok(Some(StateIncrement {
            build: Box::new(move || build.batch(&rows).map_err(operator_error)),
            compact: Arc::new(move |chain| compact.merge(chain).map_err(operator_error)),
        }))
    }
}

impl OneInputOperator for TopNOperator {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        if let Some(changes) = self.rank(&batch).map_err(operator_error)? {
            out.emit(changes);
        }
        Ok(())
    }

    fn process_watermark(
        &mut self,
        watermark: crate::message::Watermark,
        _out: &mut Collector,
    ) -> Result<Option<crate::message::Watermark>> {
        self.expire(watermark);
        Ok(Some(watermark))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use runnel_sql::{PlanOptions, StreamNode};

    use super::*;

    /// The two biggest claims of each policy, with a state TTL of one minute.
    fn top_two() -> TopNOperator {
        let options = PlanOptions {
            state_ttl_ms: Some(60_000),
            ..PlanOptions::default()
        };
        let plan = crate::test_plans::plan_script_with(
            "CREATE TABLE claims (claim_id STRING, policy_id BIGINT, amount BIGINT,
                 ts TIMESTAMP(3), WATERMARK FOR ts AS ts)
             WITH ('connector' = 'filesystem', 'path' = 'x', 'format' = 'json');
             SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY policy_id
                 ORDER BY amount DESC) AS r FROM claims) WHERE r <= 2;",
            &options,
        );
        let mut nodes = vec![&plan.root];
        while let Some(node) = nodes.pop() {
            if let StreamNode::TopN(top) = node {
                return TopNOperator::try_new(top).unwrap();
            }
            nodes.extend(node.inputs());
        }
        panic!("no TopN in {:?}", plan.root)
    }

    /// Claims (id, policy, amount, time in s) as the operator's input.
    fn claims(op: &TopNOperator, rows: &[(&str, i64, i64, i64)]) -> RecordBatch {
        let data = op.output_schema.fields().len() - 2;
        let schema = Arc::new(Schema::new(op.output_schema.fields()[..data].to_vec()));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.3 * 1_000),
                )),
            ],
        )
        .unwrap()
    }

    /// Each partition's top, as (policy, [claim ids best first]), sorted.
    fn tops(op: &TopNOperator) -> Vec<(Vec<u8>, Vec<Vec<u8>>)> {
        let mut tops: Vec<_> = op
            .partitions
            .iter()
            .map(|(p, top)| {
                let rows = top.iter().map(|r| r.row.as_ref().to_vec()).collect();
                (p.to_vec(), rows)
            })
            .collect();
        tops.sort();
        tops
    }

    fn increment(op: &mut TopNOperator) -> (RecordBatch, crate::operator::CompactChain) {
        let increment = op.increment().unwrap().expect("tracked");
        ((increment.build)().unwrap(), increment.compact)
    }

    /// Increments hold the partitions that changed (their whole top; a partition freed by
    /// the TTL as one row), and a chain of them — or the chain merged — restores every
    /// partition's top and last time, so a restored operator ranks and expires alike.
    #[test]
    fn a_chain_of_increments_restores_every_partitions_top() {
        let mut op = top_two();
        assert!(op.track_increments());
        let mut out = Collector::default();
        let batch = claims(&op, &[("a", 1, 10, 0), ("b", 1, 30, 1), ("c", 2, 5, 2)]);
        op.process_batch(batch, &mut out).unwrap();
        let (first, _) = increment(&mut op);
        assert_eq!(first.num_rows(), 3);

        // Policy 1: a claim below its top moves only its last time; policy 3 is new.
        let batch = claims(&op, &[("d", 1, 1, 50), ("e", 3, 7, 50)]);
        op.process_batch(batch, &mut out).unwrap();
        let (second, _) = increment(&mut op);
        assert_eq!(second.num_rows(), 3, "policy 1's two rows and policy 3's");

        // The watermark frees policy 2 (its last row at 2 s); policy 1 gets a new best.
        op.process_watermark(70_000, &mut out).unwrap();
        let batch = claims(&op, &[("f", 1, 99, 70)]);
        op.process_batch(batch, &mut out).unwrap();
        let (third, compact) = increment(&mut op);
        assert_eq!(third.num_rows(), 3, "policy 2 freed, policy 1's two rows");
        assert_eq!(op.partitions.len(), 2);

        let chain = [first, second, third];
        let merged = compact(chain.to_vec()).unwrap();
        assert_eq!(merged.num_rows(), 3, "policy 1's top two and policy 3's");
        let mut restored: Vec<TopNOperator> =
            [concat_batches(&chain[0].schema(), &chain).unwrap(), merged]
                .into_iter()
                .map(|state| {
                    let mut restored = top_two();
                    restored.restore(state).unwrap();
                    assert_eq!(tops(&restored), tops(&op));
                    assert_eq!(restored.last_times, op.last_times);
                    assert_eq!(restored.bytes, op.bytes);
                    restored
                })
                .collect();
        // Alike from here: policy 3 expires, policy 1 ranks a new second best.
        let go_on = |op: &mut TopNOperator| {
            let mut out = Collector::default();
            op.process_watermark(115_000, &mut out).unwrap();
            let batch = claims(op, &[("g", 1, 50, 116), ("h", 3, 1, 116)]);
            op.process_batch(batch, &mut out).unwrap();
            let batches: Vec<RecordBatch> = out.take().collect();
            datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                .unwrap()
                .to_string()
        };
        let expected = go_on(&mut op);
        assert!(
            expected.contains("| h "),
            "policy 3 starts again: {expected}"
        );
        for op in &mut restored {
            assert_eq!(go_on(op), expected);
        }
    }
}
