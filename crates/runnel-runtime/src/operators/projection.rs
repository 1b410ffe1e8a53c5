//! [`ProjectionOperator`]: computes the `SELECT` list per row, vectorized per batch.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::DFSchema;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;

use crate::error::{Result, RuntimeError};
use crate::message::Message;
use crate::operator::Operator;

/// Evaluates one expression per output column.
pub struct ProjectionOperator {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
}

impl ProjectionOperator {
    pub fn try_new(exprs: &[Expr], input_schema: &DFSchema, schema: SchemaRef) -> Result<Self> {
        Ok(Self {
            exprs: crate::expr::compile(exprs, input_schema)?,
            schema,
        })
    }

    /// Applies the projection to one batch.
    pub fn project(&self, batch: &RecordBatch) -> datafusion::error::Result<RecordBatch> {
        let columns = crate::expr::evaluate(&self.exprs, batch)?;
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &options,
        )?)
    }
}

impl Operator for ProjectionOperator {
    fn name(&self) -> &str {
        "Projection"
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<Message>) -> Result<()> {
        let projected = self
            .project(&batch)
            .map_err(|source| RuntimeError::Operator {
                operator: "Projection".into(),
                source,
            })?;
        out.push(Message::Batch(projected));
        Ok(())
    }
}
