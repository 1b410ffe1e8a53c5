//! Planning lookup joins: `stream JOIN t FOR SYSTEM_TIME AS OF stream.proc_time ON ...`,
//! where `t` is a bounded table the runtime reads whole and indexes by key.

use datafusion::logical_expr::logical_plan::Join;
use datafusion::logical_expr::{JoinType, LogicalPlan};

use crate::error::{Result, SqlError};
use crate::plan::{LookupJoinNode, SourceNode, StreamNode};
use crate::planner::{to_stream, CatalogTableSource};
use crate::updating::append_only;

/// Whether `plan` reads a table `FOR SYSTEM_TIME AS OF`.
fn reads_lookup_table(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::TableScan(scan) => scan
            .source
            .downcast_ref::<CatalogTableSource>()
            .is_some_and(|t| t.lookup),
        other => other.inputs().into_iter().any(reads_lookup_table),
    }
}

/// A join whose right side is a table read `FOR SYSTEM_TIME AS OF`; `None` if the join
/// is not one.
pub(crate) fn lookup_join(join: &Join) -> Result<Option<StreamNode>> {
    if !reads_lookup_table(&join.right) {
        return Ok(None);
    }
    if !matches!(join.join_type, JoinType::Inner | JoinType::Left) {
        return Err(SqlError::Unsupported(format!(
            "{} lookup joins (inner and left lookup joins run)",
            join.join_type
        )));
    }
    if join.on.is_empty() {
        return Err(SqlError::Unsupported(
            "a lookup join needs an equality on the table's columns, e.g. ON s.id = t.id".into(),
        ));
    }
    let (input_keys, table_keys) = join.on.iter().cloned().unzip();
    Ok(Some(StreamNode::LookupJoin(LookupJoinNode {
        input: Box::new(append_only(to_stream(&join.left)?, "a lookup join")?),
        table: Box::new(table_side(&join.right)?),
        input_schema: join.left.schema().clone(),
        table_schema: join.right.schema().clone(),
        input_keys,
        table_keys,
        join_type: join.join_type,
        residual: join.filter.clone(),
        schema: join.schema.clone(),
    })))
}

/// The table side of a lookup join: the table and the filters and projections over it.
fn table_side(plan: &LogicalPlan) -> Result<StreamNode> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let Some(table) = scan.source.downcast_ref::<CatalogTableSource>() else {
                return Err(SqlError::Unsupported(format!(
                    "cannot look up '{}'",
                    scan.table_name
                )));
            };
            Ok(StreamNode::Source(SourceNode {
                table: table.table.clone(),
                projection: scan.projection.clone(),
                schema: scan.projected_schema.clone(),
                processing_time: false,
            }))
        }
        LogicalPlan::SubqueryAlias(a) => table_side(&a.input),
        LogicalPlan::Filter(f) => Ok(StreamNode::Filter {
            input: Box::new(table_side(&f.input)?),
            predicate: f.predicate.clone(),
            input_schema: f.input.schema().clone(),
        }),
        LogicalPlan::Projection(p) => Ok(StreamNode::Projection {
            input: Box::new(table_side(&p.input)?),
            exprs: p.expr.clone(),
            input_schema: p.input.schema().clone(),
            schema: p.schema.clone(),
        }),
        other => Err(SqlError::Unsupported(format!(
            "the table side of a lookup join may filter and project, not {}",
            other.display()
        ))),
    }
}
