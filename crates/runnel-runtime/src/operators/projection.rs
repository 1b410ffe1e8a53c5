//! [`ProjectionOperator`]: computes the `SELECT` list per row, vectorized per batch.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::DFSchema;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;

use crate::error::{Result, RuntimeError};
use crate::operator::{Collector, OneInputOperator, OperatorState, StreamOperator};
use crate::processing_time::ProcessingTime;

/// Evaluates one expression per output column. On an updating stream the change column
/// passes through unchanged (see [`runnel_sql::changelog`]).
pub struct ProjectionOperator {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
    carries_changes: bool,
}

impl ProjectionOperator {
    /// `schema` is the output's as Arrow batches carry it: with the change column last
    /// when the input is an updating stream. `PROCTIME()` in `exprs` reads `clock`.
    pub fn try_new(
        exprs: &[Expr],
        input_schema: &DFSchema,
        schema: SchemaRef,
        clock: &ProcessingTime,
    ) -> Result<Self> {
        Ok(Self {
            exprs: crate::expr::compile_with_clock(exprs, input_schema, clock)?,
            carries_changes: runnel_sql::changelog::is_changelog(&schema),
            schema,
        })
    }

    /// Applies the projection to one batch.
    pub fn project(&self, batch: &RecordBatch) -> datafusion::error::Result<RecordBatch> {
        let mut columns = crate::expr::evaluate(&self.exprs, batch)?;
        if self.carries_changes {
            columns.push(batch.column(batch.num_columns() - 1).clone());
        }
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &options,
        )?)
    }
}

impl StreamOperator for ProjectionOperator {
    fn name(&self) -> &str {
        "Projection"
    }

    fn state(&mut self) -> OperatorState<'_> {
        OperatorState::Stateless
    }
}

impl OneInputOperator for ProjectionOperator {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        let projected = self
            .project(&batch)
            .map_err(|source| RuntimeError::Operator {
                operator: "Projection".into(),
                source,
            })?;
        out.emit(projected);
        Ok(())
    }
}

/// Gives an input's batches another schema with the same column types: the branches of a
/// `UNION ALL` name their columns their own way, the union's output takes its own names.
pub struct RelabelOperator {
    schema: SchemaRef,
}

impl RelabelOperator {
    pub fn new(schema: SchemaRef) -> Self {
        Self { schema }
    }
}

impl StreamOperator for RelabelOperator {
    fn name(&self) -> &str {
        "Union"
    }

    fn state(&mut self) -> OperatorState<'_> {
        OperatorState::Stateless
    }
}

impl OneInputOperator for RelabelOperator {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        let relabelled = RecordBatch::try_new_with_options(
            self.schema.clone(),
            batch.columns().to_vec(),
            &options,
        )
        .map_err(|e| RuntimeError::Operator {
            operator: "Union".into(),
            source: e.into(),
        })?;
        out.emit(relabelled);
        Ok(())
    }
}
