//! [`LookupJoinOperator`]: joins each stream row with the rows of a table read whole
//! before the stream started (`JOIN t FOR SYSTEM_TIME AS OF ...`).
//!
//! The table's keys are encoded in Arrow's row format into a hash index once; a stream
//! batch is joined by encoding its keys the same way, collecting (stream row, table row)
//! index pairs and taking both sides' columns with Arrow's `take`.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, UInt32Array};
use datafusion::arrow::compute::{cast, concat_batches, filter_record_batch, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::logical_expr::JoinType;
use datafusion::physical_expr::PhysicalExpr;
use runnel_sql::LookupJoinNode;

use crate::error::{Result, RuntimeError};
use crate::operator::{Collector, OneInputOperator, OperatorState, StreamOperator};

/// A lookup join of a stream against a loaded table.
pub struct LookupJoinOperator {
    input_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The key types both sides are compared in (the table's).
    key_types: Vec<DataType>,
    keys: RowConverter,
    table: RecordBatch,
    /// Table rows by encoded key (rows with a NULL key are not indexed: they never match).
    index: HashMap<Box<[u8]>, Vec<u32>>,
    left_outer: bool,
    residual: Option<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
}

fn operator_error(source: DataFusionError) -> RuntimeError {
    RuntimeError::Operator {
        operator: "LookupJoin".into(),
        source,
    }
}

/// Whether row `i` has a NULL in any of `keys`.
fn has_null(keys: &[ArrayRef], i: usize) -> bool {
    keys.iter().any(|k| k.is_null(i))
}

impl LookupJoinOperator {
    /// `table` holds every row of the table side, as its plan node produces them.
    pub fn try_new(node: &LookupJoinNode, table: Vec<RecordBatch>) -> Result<Self> {
        let table_schema = node.table.arrow_schema();
        let table = concat_batches(&table_schema, &table).map_err(|e| operator_error(e.into()))?;
        let table_keys = crate::expr::compile(&node.table_keys, &node.table_schema)?;
        let table_key_arrays = crate::expr::evaluate(&table_keys, &table)?;
        let key_types: Vec<DataType> = table_key_arrays
            .iter()
            .map(|a| a.data_type().clone())
            .collect();
        let keys = RowConverter::new(key_types.iter().cloned().map(SortField::new).collect())
            .map_err(|e| operator_error(e.into()))?;
        let rows = keys
            .convert_columns(&table_key_arrays)
            .map_err(|e| operator_error(e.into()))?;
        let mut index: HashMap<Box<[u8]>, Vec<u32>> = HashMap::new();
        for (i, row) in rows.iter().enumerate() {
            if !has_null(&table_key_arrays, i) {
                index.entry(row.as_ref().into()).or_default().push(i as u32);
            }
        }
        let residual = node
            .residual
            .as_ref()
            .map(|r| crate::expr::compile(std::slice::from_ref(r), &node.schema))
            .transpose()?
            .map(|mut compiled| compiled.remove(0));
        Ok(Self {
            input_keys: crate::expr::compile(&node.input_keys, &node.input_schema)?,
            key_types,
            keys,
            table,
            index,
            left_outer: node.join_type == JoinType::Left,
            residual,
            schema: Arc::new(node.schema.as_arrow().clone()),
        })
    }

    /// Rows of the table (for tests and metrics).
    pub fn table_rows(&self) -> usize {
        self.table.num_rows()
    }

    fn join(&self, batch: &RecordBatch) -> DFResult<Option<RecordBatch>> {
        let keys = crate::expr::evaluate(&self.input_keys, batch)?
            .iter()
            .zip(&self.key_types)
            .map(|(k, t)| cast(k, t))
            .collect::<Result<Vec<_>, _>>()?;
        let rows = self.keys.convert_columns(&keys)?;
        let (mut stream_rows, mut table_rows) = (Vec::new(), Vec::new());
        for (i, row) in rows.iter().enumerate() {
            if has_null(&keys, i) {
                continue;
            }
            if let Some(matches) = self.index.get(row.as_ref()) {
                for &m in matches {
                    stream_rows.push(i as u32);
                    table_rows.push(Some(m));
                }
            }
        }
        let mut joined = self.assemble(batch, &stream_rows, &table_rows)?;
        if let Some(residual) = &self.residual {
            let keep = crate::expr::predicate(residual, &joined)?;
            joined = filter_record_batch(&joined, &keep)?;
            stream_rows = take(&UInt32Array::from(stream_rows), &keep_indices(&keep), None)?
                .as_any()
                .downcast_ref::<UInt32Array>()
                .map(|a| a.values().to_vec())
                .unwrap_or_default();
        }
        if self.left_outer {
            // Stream rows left without a match are padded with NULLs.
            let mut matched = vec![false; batch.num_rows()];
            for &i in &stream_rows {
                matched[i as usize] = true;
            }
            let unmatched: Vec<u32> = (0..batch.num_rows() as u32)
                .filter(|&i| !matched[i as usize])
                .collect();
            if !unmatched.is_empty() {
                let nulls = vec![None; unmatched.len()];
                let padded = self.assemble(batch, &unmatched, &nulls)?;
                joined = concat_batches(&self.schema, [&joined, &padded])?;
            }
        }
        Ok((joined.num_rows() > 0).then_some(joined))
    }

    /// The joined rows: `stream_rows[i]` of `batch` beside `table_rows[i]` of the table
    /// (NULLs where that is `None`).
    fn assemble(
        &self,
        batch: &RecordBatch,
        stream_rows: &[u32],
        table_rows: &[Option<u32>],
    ) -> DFResult<RecordBatch> {
        let stream_rows = UInt32Array::from(stream_rows.to_vec());
        let table_rows = UInt32Array::from(table_rows.to_vec());
        let mut columns: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .map(|c| take(c, &stream_rows, None))
            .collect::<Result<_, _>>()?;
        for column in self.table.columns() {
            columns.push(take(column, &table_rows, None)?);
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// Positions where `mask` is true.
fn keep_indices(mask: &datafusion::arrow::array::BooleanArray) -> UInt32Array {
    (0..mask.len() as u32)
        .filter(|&i| mask.value(i as usize))
        .collect()
}

impl StreamOperator for LookupJoinOperator {
    fn name(&self) -> &str {
        "LookupJoin"
    }

    /// The table and its index, read again in full when the job restarts.
    fn state(&mut self) -> OperatorState<'_> {
        let bytes = self.table.get_array_memory_size()
            + self
                .index
                .iter()
                .map(|(key, rows)| key.len() + 48 + rows.len() * 4)
                .sum::<usize>();
        OperatorState::Rebuilt { bytes }
    }
}

impl OneInputOperator for LookupJoinOperator {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        if let Some(joined) = self.join(&batch).map_err(operator_error)? {
            out.emit(joined);
        }
        Ok(())
    }
}
