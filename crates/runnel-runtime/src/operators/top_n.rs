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

use datafusion::common::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int8Array, UInt64Array};
use datafusion::arrow::compute::{cast, SortOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::physical_expr::PhysicalExpr;
use runnel_sql::changelog::{with_change_column, ChangeKind};
use runnel_sql::TopNNode;

use crate::error::{Result, RuntimeError};
use crate::operator::{
    CheckpointedState, Collector, OneInputOperator, OperatorState, StreamOperator,
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
        })
    }

    /// With a state TTL: partition `partition` saw a row at `time`.
    fn touch(&mut self, partition: &[u8], time: i64) {
        let last = self.last_times.entry(partition.into()).or_insert(i64::MIN);
        if time > *last {
            self.by_time.remove(&(*last, partition.into()));
            self.by_time.insert((time, partition.into()));
            *last = time;
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

impl CheckpointedState for TopNOperator {
    fn size(&self) -> usize {
        self.bytes
    }

    /// Every partition's top rows, best first, each with its partition's last row's time
    /// (`__last_time`, with a state TTL).
    fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        let ranked: Vec<(&Box<[u8]>, &Ranked)> = self
            .partitions
            .iter()
            .flat_map(|(partition, top)| top.iter().map(move |r| (partition, r)))
            .collect();
        let mut columns = self
            .rows_format
            .convert_rows(ranked.iter().map(|(_, r)| r.row.row()))
            .map_err(|e| operator_error(e.into()))?;
        let mut fields = self.output_schema.fields()[..columns.len()].to_vec();
        if self.ttl.is_some() {
            let times = ranked
                .iter()
                .map(|(partition, _)| self.last_times.get(*partition).copied().unwrap_or(i64::MIN));
            columns.push(Arc::new(
                datafusion::arrow::array::Int64Array::from_iter_values(times),
            ));
            fields.push(Arc::new(datafusion::arrow::datatypes::Field::new(
                "__last_time",
                datafusion::arrow::datatypes::DataType::Int64,
                false,
            )));
        }
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
        RecordBatch::try_new(schema, columns)
            .map(Some)
            .map_err(|e| operator_error(e.into()))
    }

    /// Ranking the rows again, best first, rebuilds each partition's top (and, with a
    /// state TTL, its last row's time).
    fn restore(&mut self, state: RecordBatch) -> Result<()> {
        self.partitions.clear();
        self.bytes = 0;
        self.last_times.clear();
        self.by_time.clear();
        let data = self.output_schema.fields().len() - 2;
        let last_times = (state.num_columns() > data).then(|| {
            state
                .column(data)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .cloned()
        });
        let state = state
            .project(&(0..data).collect::<Vec<_>>())
            .map_err(|e| operator_error(e.into()))?;
        self.rank(&state).map_err(operator_error)?;
        if let Some(Some(times)) = last_times {
            let partitions = crate::expr::evaluate(&self.partition_exprs, &state)?;
            let keys = if partitions.is_empty() {
                None
            } else {
                Some(
                    self.partitions_format
                        .convert_columns(&partitions)
                        .map_err(|e| operator_error(e.into()))?,
                )
            };
            for row in 0..state.num_rows() {
                let partition: &[u8] = keys.as_ref().map_or(&[], |k| k.row(row).data());
                self.touch(partition, times.value(row));
            }
        }
        Ok(())
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
