//! Planning event-time temporal joins: `stream JOIN t FOR SYSTEM_TIME AS OF s.event_time
//! ON s.k = t.k`, where `t` is a versioned table — a changelog with a primary key and a
//! watermark — and `s.event_time` is the stream's event-time column.

use std::sync::Arc;

use datafusion::common::Column;
use datafusion::logical_expr::logical_plan::Join;
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan};

use crate::catalog::TableDef;
use crate::error::{Result, SqlError};
use crate::lineage::event_time_column;
use crate::plan::{StreamNode, TemporalJoinNode};
use crate::planner::{to_stream, CatalogTableSource};
use crate::updating::{check_append_only, table_changes};

/// The scan of the table read `FOR SYSTEM_TIME AS OF` on a join's right side, under its
/// aliases; `None` when the side is anything else.
fn versioned_scan(
    plan: &LogicalPlan,
) -> Option<(&datafusion::logical_expr::TableScan, &CatalogTableSource)> {
    match plan {
        LogicalPlan::SubqueryAlias(alias) => versioned_scan(&alias.input),
        LogicalPlan::TableScan(scan) => {
            let table = scan.source.downcast_ref::<CatalogTableSource>()?;
            table.lookup.then_some((scan, table))
        }
        _ => None,
    }
}

/// Whether `table` is a versioned table: its changes, keyed and timed, say which row each
/// key had at any time.
pub(crate) fn is_versioned(table: &TableDef) -> bool {
    table.is_changelog() && !table.primary_key.is_empty() && table.watermark.is_some()
}

/// A join whose right side is a versioned table read `FOR SYSTEM_TIME AS OF` the left's
/// event time; `None` if the join is not one (a lookup join, or no temporal join at all).
pub(crate) fn temporal_join(join: &Join) -> Result<Option<StreamNode>> {
    let Some((scan, source)) = versioned_scan(&join.right) else {
        return Ok(None);
    };
    let table = &source.table;
    if !is_versioned(table) {
        return Ok(None);
    }
    let as_of = source.as_of.clone().unwrap_or_default();
    if !matches!(join.join_type, JoinType::Inner | JoinType::Left) {
        return Err(SqlError::Unsupported(format!(
            "{} temporal joins (inner and left temporal joins run)",
            join.join_type
        )));
    }
    // The AS OF time must be the left's event time: versions are matched on it. A query
    // that does not read it otherwise had it pruned from the left: read it again.
    let time_column = Column::from_qualified_name(&as_of);
    let widened = match join.left.schema().index_of_column(&time_column) {
        Ok(_) => None,
        Err(_) => with_column(&join.left, &time_column.name)?,
    };
    let left_plan = widened.as_ref().unwrap_or(&join.left);
    let left_schema = left_plan.schema();
    let event_time = event_time_column(left_plan);
    let left_time = left_schema
        .index_of_column(&time_column)
        .ok()
        .filter(|&i| event_time.as_ref().is_some_and(|e| left_schema.columns()[i] == *e))
        .ok_or_else(|| {
            SqlError::Unsupported(format!(
                "{} is a versioned table (a changelog with a primary key and a watermark): it \
                 is joined FOR SYSTEM_TIME AS OF the other side's event-time column{}, not '{as_of}'",
                table.name,
                event_time
                    .as_ref()
                    .map(|c| format!(" ({})", c.flat_name()))
                    .unwrap_or_default()
            ))
        })?;
    // Each equality's right side must be a column; the primary key must be among them.
    let right_plan_schema = join.right.schema();
    // The table's changes as they come, every column: each is a version with its own
    // time (a delete too — Debezium's carries its commit time in the metadata), and a
    // change repeated adds the same version again, which changes nothing.
    let full_schema = Arc::new(datafusion::common::DFSchema::try_from_qualified_schema(
        datafusion::common::TableReference::bare(table.name.clone()),
        &table.schema,
    )?);
    let full = StreamNode::Source(crate::plan::SourceNode {
        table: table.clone(),
        projection: None,
        schema: full_schema.clone(),
        processing_time: false,
    });
    let right_columns: Vec<usize> = match &scan.projection {
        Some(projection) => projection.clone(),
        None => (0..table.schema.fields().len()).collect(),
    };
    let mut left_keys = Vec::new();
    let mut right_keys = Vec::new();
    let mut keyed = Vec::new();
    for (l, r) in &join.on {
        let Expr::Column(column) = r else {
            return Err(SqlError::Unsupported(format!(
                "a temporal join equates the versioned table's columns themselves, not {r}"
            )));
        };
        let index = right_plan_schema.index_of_column(column)?;
        let full_index = right_columns[index];
        keyed.push(table.schema.field(full_index).name().clone());
        left_keys.push(l.clone());
        right_keys.push(Expr::Column(full_schema.columns()[full_index].clone()));
    }
    if !table.primary_key.iter().all(|k| keyed.contains(k)) {
        return Err(SqlError::Unsupported(format!(
            "a temporal join of {} needs its primary key ({}) in the ON clause's equalities",
            table.name,
            table.primary_key.join(", ")
        )));
    }
    let right_time = table
        .watermark
        .as_ref()
        .map(|w| w.column_index)
        .unwrap_or_default();
    let left = to_stream(left_plan)?;
    if !table_changes(&left) {
        check_append_only(&left, "a temporal join")?;
    }
    let schema = match &widened {
        Some(_) => Arc::new(left_schema.join(right_plan_schema)?),
        None => join.schema.clone(),
    };
    let node = StreamNode::TemporalJoin(TemporalJoinNode {
        left: Box::new(left),
        right: Box::new(full),
        left_schema: left_schema.clone(),
        right_schema: right_plan_schema.clone(),
        right_columns,
        left_keys,
        right_keys,
        left_time,
        right_time,
        join_type: join.join_type,
        residual: join.filter.clone(),
        schema: schema.clone(),
    });
    if widened.is_none() {
        return Ok(Some(node));
    }
    // The join's own columns, without the time column read again.
    Ok(Some(StreamNode::Projection {
        input: Box::new(node),
        exprs: join
            .schema
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect(),
        input_schema: schema,
        schema: join.schema.clone(),
    }))
}

/// `plan` with the table column `name` read again after the optimizer pruned it (aliases,
/// filters and projections over a table scan); `None` when `plan` is something else.
fn with_column(plan: &LogicalPlan, name: &str) -> Result<Option<LogicalPlan>> {
    use datafusion::logical_expr::logical_plan::{
        Filter, Projection, SubqueryAlias, TableScanBuilder,
    };
    Ok(Some(match plan {
        LogicalPlan::TableScan(scan) => {
            let Some(source) = scan.source.downcast_ref::<CatalogTableSource>() else {
                return Ok(None);
            };
            let Ok(index) = source.table.schema.index_of(name) else {
                return Ok(None);
            };
            let mut projection = scan.projection.clone().unwrap_or_default();
            projection.push(index);
            LogicalPlan::TableScan(
                TableScanBuilder::new(scan.table_name.clone(), scan.source.clone())
                    .with_projection(Some(projection))
                    .with_filters(scan.filters.clone())
                    .with_fetch(scan.fetch)
                    .build()?,
            )
        }
        LogicalPlan::SubqueryAlias(alias) => {
            let Some(input) = with_column(&alias.input, name)? else {
                return Ok(None);
            };
            LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(
                Arc::new(input),
                alias.alias.clone(),
            )?)
        }
        LogicalPlan::Filter(filter) => {
            let Some(input) = with_column(&filter.input, name)? else {
                return Ok(None);
            };
            LogicalPlan::Filter(Filter::try_new(filter.predicate.clone(), Arc::new(input))?)
        }
        LogicalPlan::Projection(projection) => {
            let Some(input) = with_column(&projection.input, name)? else {
                return Ok(None);
            };
            let added = input.schema().columns().pop().map(Expr::Column);
            let mut exprs = projection.expr.clone();
            exprs.extend(added);
            LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(input))?)
        }
        _ => return Ok(None),
    }))
}
