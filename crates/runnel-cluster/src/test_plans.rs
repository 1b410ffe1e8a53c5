//! Plans for unit tests: a script of `CREATE TABLE`s and one query, planned as a job
//! would be.

use runnel_sql::{PlanOptions, StreamPlan, StreamPlanner};

/// The plan of the query in `script` over the tables the script creates.
pub(crate) fn plan(script: &str) -> StreamPlan {
    StreamPlanner::new()
        .plan_script(script, &PlanOptions::default())
        .unwrap()
}
