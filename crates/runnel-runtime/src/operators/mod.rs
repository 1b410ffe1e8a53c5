//! The streaming operators: each turns a logical [`runnel_sql::StreamNode`] into work on
//! Arrow batches.

mod filter;
pub(crate) mod held_rows;
mod interval_join;
pub(crate) mod late_rows;
mod over_window;
mod projection;
mod session_window;
mod window_aggregate;
mod window_assign;
mod window_join;

pub use filter::FilterOperator;
pub use interval_join::IntervalJoinOperator;
pub use late_rows::LateRowsOutput;
pub use over_window::OverWindowOperator;
pub use projection::ProjectionOperator;
pub use session_window::SessionWindowOperator;
pub use window_aggregate::WindowAggregateOperator;
pub(crate) use window_assign::as_millis;
pub use window_assign::WindowAssignOperator;
pub use window_join::WindowJoinOperator;
