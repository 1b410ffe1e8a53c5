//! Compiling DataFusion logical expressions into physical ones the operators evaluate.

mod zipped_case;

pub use zipped_case::ZippedCase;

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::error::Result as DFResult;
use datafusion::logical_expr::execution_props::ExecutionProps;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{create_physical_expr, PhysicalExpr};

/// Compiles `exprs` against `schema` (the schema of the batches they will see): by
/// DataFusion, each searched `CASE` that cannot fail then evaluated as a [`ZippedCase`].
pub fn compile(exprs: &[Expr], schema: &DFSchema) -> DFResult<Vec<Arc<dyn PhysicalExpr>>> {
    compile_unzipped(exprs, schema)?
        .into_iter()
        .map(|e| zipped_case::zip_cases(e, schema.as_arrow()))
        .collect()
}

/// Compiles `exprs` as DataFusion does, every `CASE` left a `CaseExpr`.
fn compile_unzipped(exprs: &[Expr], schema: &DFSchema) -> DFResult<Vec<Arc<dyn PhysicalExpr>>> {
    let props = ExecutionProps::new();
    let context = Default::default();
    exprs
        .iter()
        .map(|e| create_physical_expr(e, schema, &props, &context))
        .collect()
}

/// Compiles `exprs` as [`compile`] does, with every `PROCTIME()` reading `clock` (the
/// processing clock of the task the expressions run in).
pub fn compile_with_clock(
    exprs: &[Expr],
    schema: &DFSchema,
    clock: &crate::processing_time::ProcessingTime,
) -> DFResult<Vec<Arc<dyn PhysicalExpr>>> {
    let bound = exprs
        .iter()
        .map(|e| clock.bind(e))
        .collect::<DFResult<Vec<_>>>()?;
    compile(&bound, schema)
}

/// Evaluates each expression over `batch` into a full-length array.
pub fn evaluate(exprs: &[Arc<dyn PhysicalExpr>], batch: &RecordBatch) -> DFResult<Vec<ArrayRef>> {
    exprs
        .iter()
        .map(|e| e.evaluate(batch)?.into_array(batch.num_rows()))
        .collect()
}

/// Evaluates a boolean `predicate` over `batch`: true where it holds, false where it is
/// false or NULL (SQL's `WHERE` / `ON` rule).
pub fn predicate(
    predicate: &Arc<dyn PhysicalExpr>,
    batch: &RecordBatch,
) -> DFResult<datafusion::arrow::array::BooleanArray> {
    use datafusion::arrow::array::{Array, AsArray};
    let values = predicate.evaluate(batch)?.into_array(batch.num_rows())?;
    let Some(mask) = values.as_boolean_opt() else {
        return datafusion::common::exec_err!(
            "the condition {predicate} is {}, not BOOLEAN",
            values.data_type()
        );
    };
    Ok(match mask.nulls() {
        Some(_) => mask.iter().map(|v| Some(v == Some(true))).collect(),
        None => mask.clone(),
    })
}
