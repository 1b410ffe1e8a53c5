//! Plans for unit tests: a script of `CREATE TABLE`s and one query, planned as a job would.

use runnel_sql::{PlanOptions, StreamPlan, StreamPlanner};

/// The plan of the query in `script` over the tables the script creates.
pub(crate) fn plan_script(script: &str) -> StreamPlan {
    plan_script_with(script, &PlanOptions::default())
}

/// [`plan_script`] with job-level planning options.
pub(crate) fn plan_script_with(script: &str, options: &PlanOptions) -> StreamPlan {
    StreamPlanner::new().plan_script(script, options).unwrap()
}
