//! Plans for unit tests: a script of `CREATE TABLE`s and one query, planned as a job
//! would be.

use runnel_sql::{parse_script, Catalog, PlanOptions, Statement, StreamPlan, StreamPlanner};

/// The plan of the query in `script` over the tables the script creates.
pub(crate) fn plan(script: &str) -> StreamPlan {
    let planner = StreamPlanner::new();
    let mut catalog = Catalog::default();
    let mut plan = None;
    for statement in parse_script(script).unwrap() {
        match statement {
            Statement::CreateTable(table) => catalog
                .add_table(planner.create_table(&catalog, *table).unwrap())
                .unwrap(),
            Statement::Query(query) => {
                plan = Some(
                    planner
                        .plan_query_with(&catalog, *query, None, &PlanOptions::default())
                        .unwrap(),
                )
            }
            other => panic!("unexpected statement {other:?}"),
        }
    }
    plan.expect("a query")
}
