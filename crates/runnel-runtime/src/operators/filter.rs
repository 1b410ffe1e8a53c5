//! [`FilterOperator`]: keeps the rows for which a predicate is true.

use std::sync::Arc;

use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;

use crate::error::{Result, RuntimeError};
use crate::operator::{Collector, OneInputOperator, OperatorState, StreamOperator};
use crate::processing_time::ProcessingTime;

/// `WHERE predicate`, evaluated as one vectorized expression per batch.
pub struct FilterOperator {
    predicate: Arc<dyn PhysicalExpr>,
}

impl FilterOperator {
    /// `PROCTIME()` in the predicate reads `clock`.
    pub fn try_new(
        predicate: &Expr,
        input_schema: &DFSchema,
        clock: &ProcessingTime,
    ) -> Result<Self> {
        let predicate =
            crate::expr::compile_with_clock(std::slice::from_ref(predicate), input_schema, clock)?
                .remove(0);
        Ok(Self { predicate })
    }
}

impl StreamOperator for FilterOperator {
    fn name(&self) -> &str {
        "Filter"
    }

    fn state(&mut self) -> OperatorState<'_> {
        OperatorState::Stateless
    }
}

impl OneInputOperator for FilterOperator {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        let error = |source| RuntimeError::Operator {
            operator: "Filter".into(),
            source,
        };
        let mask = crate::expr::predicate(&self.predicate, &batch).map_err(error)?;
        let filtered = filter_record_batch(&batch, &mask).map_err(|e| error(e.into()))?;
        out.emit(filtered);
        Ok(())
    }
}
