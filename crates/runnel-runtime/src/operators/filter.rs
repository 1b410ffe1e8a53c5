//! [`FilterOperator`]: keeps the rows for which a predicate is true.

use std::sync::Arc;

use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;

use crate::error::{Result, RuntimeError};
use crate::message::Message;
use crate::operator::Operator;

/// `WHERE predicate`, evaluated as one vectorized expression per batch.
pub struct FilterOperator {
    predicate: Arc<dyn PhysicalExpr>,
}

impl FilterOperator {
    pub fn try_new(predicate: &Expr, input_schema: &DFSchema) -> Result<Self> {
        let predicate =
            crate::expr::compile(std::slice::from_ref(predicate), input_schema)?.remove(0);
        Ok(Self { predicate })
    }
}

impl Operator for FilterOperator {
    fn name(&self) -> &str {
        "Filter"
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<Message>) -> Result<()> {
        let error = |source| RuntimeError::Operator {
            operator: "Filter".into(),
            source,
        };
        let mask = crate::expr::predicate(&self.predicate, &batch).map_err(error)?;
        let filtered = filter_record_batch(&batch, &mask).map_err(|e| error(e.into()))?;
        if filtered.num_rows() > 0 {
            out.push(Message::Batch(filtered));
        }
        Ok(())
    }
}
