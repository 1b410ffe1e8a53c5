//! The streaming operators: each turns a logical [`runnel_sql::StreamNode`] into work on
//! Arrow batches.

mod aggregate_call;
mod filter;
pub(crate) mod held_rows;
mod interval_join;
pub(crate) mod late_rows;
mod lookup_join;
mod over_window;
mod projection;
mod session_window;
mod top_n;
mod updating_aggregate;
mod window_aggregate;
mod window_assign;
mod window_join;

pub use filter::FilterOperator;
pub use interval_join::IntervalJoinOperator;
pub use late_rows::LateRowsOutput;
pub use lookup_join::LookupJoinOperator;
pub use over_window::OverWindowOperator;
pub use projection::ProjectionOperator;
pub use session_window::SessionWindowOperator;
pub use top_n::TopNOperator;
pub use updating_aggregate::UpdatingAggregateOperator;
pub use window_aggregate::WindowAggregateOperator;
pub(crate) use window_assign::as_millis;
pub use window_assign::WindowAssignOperator;
pub use window_join::WindowJoinOperator;

/// `rows` of one `side` of a join, with NULLs for the `other` side's columns, in the
/// join's output `schema` (an outer join's unmatched rows).
pub(crate) fn padded(
    schema: &datafusion::arrow::datatypes::SchemaRef,
    side: crate::operator::Side,
    rows: &datafusion::arrow::record_batch::RecordBatch,
    other: &datafusion::arrow::datatypes::SchemaRef,
) -> crate::error::Result<datafusion::arrow::record_batch::RecordBatch> {
    use datafusion::arrow::array::{new_null_array, ArrayRef};
    let nulls: Vec<ArrayRef> = other
        .fields()
        .iter()
        .map(|f| new_null_array(f.data_type(), rows.num_rows()))
        .collect();
    let columns = match side {
        crate::operator::Side::Left => [rows.columns().to_vec(), nulls].concat(),
        crate::operator::Side::Right => [nulls, rows.columns().to_vec()].concat(),
    };
    datafusion::arrow::record_batch::RecordBatch::try_new(schema.clone(), columns).map_err(|e| {
        crate::error::RuntimeError::Operator {
            operator: "join".into(),
            source: e.into(),
        }
    })
}
