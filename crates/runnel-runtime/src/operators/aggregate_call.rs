//! [`AggregateCall`]: one SQL aggregate call (`SUM(x) FILTER (WHERE ...)`) lowered to the
//! DataFusion aggregate function the windowed and updating aggregates drive.

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::error::Result as DFResult;
use datafusion::logical_expr::{Accumulator, Expr, GroupsAccumulator};
use datafusion::physical_expr::aggregate::{AggregateFunctionExpr, LoweredAggregateBuilder};
use datafusion::physical_expr::{GroupsAccumulatorAdapter, PhysicalExpr};

use crate::error::{Result, RuntimeError};

/// One aggregate call: the DataFusion function, its argument expressions and its
/// optional `FILTER (WHERE ...)` clause.
#[derive(Clone)]
pub(crate) struct AggregateCall {
    pub function: Arc<AggregateFunctionExpr>,
    pub arguments: Vec<Arc<dyn PhysicalExpr>>,
    pub filter: Option<Arc<dyn PhysicalExpr>>,
}

impl AggregateCall {
    /// Lowers `aggr_exprs`, evaluated over rows of `input_schema`.
    pub fn lower_all(aggr_exprs: &[Expr], input_schema: &DFSchema) -> Result<Vec<Self>> {
        let physical_input: Schema = input_schema.as_arrow().clone();
        let props = datafusion::logical_expr::execution_props::ExecutionProps::new();
        let mut calls = Vec::with_capacity(aggr_exprs.len());
        for expr in aggr_exprs {
            let planning = Default::default();
            let lowered = LoweredAggregateBuilder::new(
                expr,
                input_schema,
                &physical_input,
                &props,
                &planning,
            )
            .with_name(expr.schema_name().to_string())
            .build()?;
            if !lowered.order_bys.is_empty() {
                return Err(RuntimeError::Build(format!(
                    "aggregate {expr}: ORDER BY inside an aggregate call is not supported on streams"
                )));
            }
            let (function, filter) = (lowered.aggregate, lowered.filter);
            calls.push(AggregateCall {
                arguments: function.expressions(),
                function,
                filter,
            });
        }
        Ok(calls)
    }

    /// A vectorized accumulator of many groups (DataFusion's, or an adapter over its
    /// per-group accumulator).
    pub fn new_groups_accumulator(&self) -> DFResult<Box<dyn GroupsAccumulator>> {
        if self.function.groups_accumulator_supported() {
            self.function.create_groups_accumulator()
        } else {
            let function = self.function.clone();
            Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
                function.create_accumulator()
            })))
        }
    }

    /// An accumulator of one group that can also take rows back out
    /// ([`Accumulator::retract_batch`]) when `retracting`.
    pub fn new_accumulator(&self, retracting: bool) -> DFResult<Box<dyn Accumulator>> {
        if retracting {
            self.function.create_sliding_accumulator()
        } else {
            self.function.create_accumulator()
        }
    }

    /// The call's argument arrays and `FILTER` mask over `batch`.
    pub fn evaluate(&self, batch: &RecordBatch) -> DFResult<(Vec<ArrayRef>, Option<ArrayRef>)> {
        let arguments = crate::expr::evaluate(&self.arguments, batch)?;
        let filter = self
            .filter
            .as_ref()
            .map(|f| f.evaluate(batch)?.into_array(batch.num_rows()))
            .transpose()?;
        Ok((arguments, filter))
    }
}
