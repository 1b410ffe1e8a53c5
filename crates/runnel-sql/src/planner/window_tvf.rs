//! Planning window table functions in `FROM` — `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts),
//! size))` and the short `TUMBLE(t, ts, size)` — into the [`WindowTvf`] node.

use std::sync::Arc;

use datafusion::common::DFSchema;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::logical_expr::planner::{
    PlannedRelation, RelationPlanner, RelationPlannerContext, RelationPlanning,
};
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, LogicalPlanBuilder};
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName, TableAlias,
    TableFactor,
};

use crate::window::{WindowKind, WindowTvf};

use super::rewrite::scalar_interval_ms;

/// Plans window table functions in `FROM`: `TABLE(TUMBLE(t, DESCRIPTOR(ts), size))` and
/// the short form `TUMBLE(t, ts, size)`, into a [`WindowTvf`] node.
#[derive(Debug)]
pub(super) struct WindowTvfPlanner;

impl RelationPlanner for WindowTvfPlanner {
    fn plan_relation(
        &self,
        relation: TableFactor,
        context: &mut dyn RelationPlannerContext,
    ) -> DFResult<RelationPlanning> {
        let (name, args, alias) = match &relation {
            TableFactor::TableFunction {
                expr: SqlExpr::Function(f),
                alias,
            } => match &f.args {
                FunctionArguments::List(list) => (f.name.clone(), list.args.clone(), alias.clone()),
                _ => return Ok(RelationPlanning::Original(Box::new(relation))),
            },
            TableFactor::Table {
                name,
                args: Some(args),
                alias,
                ..
            } => (name.clone(), args.args.clone(), alias.clone()),
            _ => return Ok(RelationPlanning::Original(Box::new(relation))),
        };
        let function = name.to_string().to_ascii_uppercase();
        if !WindowKind::is_window_function(&function) {
            return Ok(RelationPlanning::Original(Box::new(relation)));
        }
        let args = args
            .into_iter()
            .map(|arg| match arg {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
                other => datafusion::common::plan_err!(
                    "{function}: arguments are positional (TABLE t, DESCRIPTOR(ts), size); found {other}"
                ),
            })
            .collect::<DFResult<Vec<_>>>()?;
        let (input, time_column, kind) = match (function.as_str(), args.as_slice()) {
            ("TUMBLE", [table, time, size]) => {
                let (input, time_column) = window_input(&function, table, time, context)?;
                let size_ms = interval_ms(size, context, "TUMBLE size")?;
                (input, time_column, WindowKind::Tumble { size_ms })
            }
            ("HOP", [table, time, slide, size]) => {
                let (input, time_column) = window_input(&function, table, time, context)?;
                let slide_ms = interval_ms(slide, context, "HOP slide")?;
                let size_ms = interval_ms(size, context, "HOP size")?;
                (input, time_column, WindowKind::Hop { slide_ms, size_ms })
            }
            ("CUMULATE", [table, time, step, size]) => {
                let (input, time_column) = window_input(&function, table, time, context)?;
                let step_ms = interval_ms(step, context, "CUMULATE step")?;
                let size_ms = interval_ms(size, context, "CUMULATE size")?;
                if size_ms % step_ms != 0 {
                    return datafusion::common::plan_err!(
                        "CUMULATE size ({}) must be a multiple of its step ({})",
                        crate::window::format_duration(size_ms),
                        crate::window::format_duration(step_ms)
                    );
                }
                (
                    input,
                    time_column,
                    WindowKind::Cumulate { step_ms, size_ms },
                )
            }
            ("SESSION", [table, keys, time, gap]) if partition_keys_call(keys).is_some() => {
                let (input, time_column) = window_input(&function, table, time, context)?;
                let gap_ms = interval_ms(gap, context, "SESSION gap")?;
                let keys = partition_keys_call(keys).unwrap_or_default();
                let partition_keys = keys
                    .iter()
                    .map(|key| column_index(&input, key, context, "SESSION PARTITION BY"))
                    .collect::<DFResult<Vec<_>>>()?;
                return plan_window(
                    input,
                    WindowKind::Session { gap_ms },
                    time_column,
                    partition_keys,
                    alias,
                );
            }
            ("SESSION", [table, time, gap]) => {
                let (input, time_column) = window_input(&function, table, time, context)?;
                let gap_ms = interval_ms(gap, context, "SESSION gap")?;
                (input, time_column, WindowKind::Session { gap_ms })
            }
            (_, args) => {
                let signature = match function.as_str() {
                    "TUMBLE" => "TUMBLE(TABLE t, DESCRIPTOR(time_column), size)",
                    "HOP" => "HOP(TABLE t, DESCRIPTOR(time_column), slide, size)",
                    "SESSION" => {
                        "SESSION(TABLE t [PARTITION BY key], DESCRIPTOR(time_column), gap)"
                    }
                    _ => "CUMULATE(TABLE t, DESCRIPTOR(time_column), step, size)",
                };
                return datafusion::common::plan_err!(
                    "{function} takes {signature}; got {} arguments (the offset argument is not supported)",
                    args.len()
                );
            }
        };
        plan_window(input, kind, time_column, Vec::new(), alias)
    }
}

/// The planned window relation.
fn plan_window(
    input: LogicalPlan,
    kind: WindowKind,
    time_column: usize,
    partition_keys: Vec<usize>,
    alias: Option<TableAlias>,
) -> DFResult<RelationPlanning> {
    let node = WindowTvf::try_new(input, kind, time_column, partition_keys)?;
    let plan = LogicalPlan::Extension(Extension {
        node: Arc::new(node),
    });
    Ok(RelationPlanning::Planned(Box::new(PlannedRelation::new(
        plan, alias,
    ))))
}

/// The key expressions of `PARTITION_KEYS(...)`, which the parser writes for a session's
/// `PARTITION BY`.
fn partition_keys_call(arg: &SqlExpr) -> Option<Vec<SqlExpr>> {
    let SqlExpr::Function(f) = arg else {
        return None;
    };
    if !f.name.to_string().eq_ignore_ascii_case("PARTITION_KEYS") {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else {
        return Some(Vec::new());
    };
    Some(
        list.args
            .iter()
            .filter_map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                _ => None,
            })
            .collect(),
    )
}

/// The index in `input` of the column `arg` names.
fn column_index(
    input: &LogicalPlan,
    arg: &SqlExpr,
    context: &mut dyn RelationPlannerContext,
    what: &str,
) -> DFResult<usize> {
    let name = match arg {
        SqlExpr::Identifier(ident) => context.normalize_ident(ident.clone()),
        other => return datafusion::common::plan_err!("{what} takes column names, found {other}"),
    };
    input
        .schema()
        .index_of_column_by_name(None, &name)
        .ok_or_else(|| {
            DataFusionError::Plan(format!(
                "{what}: {name} names no column of the table (columns: {})",
                input
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// The table and time column arguments of a window function: its input plan and the
/// time column's index in it.
fn window_input(
    function: &str,
    table: &SqlExpr,
    time: &SqlExpr,
    context: &mut dyn RelationPlannerContext,
) -> DFResult<(LogicalPlan, usize)> {
    let input = plan_table_argument(table, context)?;
    let time_name = descriptor_column(time, context)?;
    let time_column =
        input
            .schema()
            .index_of_column_by_name(None, &time_name)
            .ok_or_else(|| {
                DataFusionError::Plan(format!(
            "{function}: DESCRIPTOR({time_name}) names no column of the table (columns: {})",
            input.schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
        ))
            })?;
    Ok((input, time_column))
}

/// The first argument of a window function: a table (or view) name.
fn plan_table_argument(
    arg: &SqlExpr,
    context: &mut dyn RelationPlannerContext,
) -> DFResult<LogicalPlan> {
    let idents = match arg {
        SqlExpr::Identifier(ident) => vec![ident.clone()],
        SqlExpr::CompoundIdentifier(idents) => idents.clone(),
        SqlExpr::Subquery(query) => {
            return context.plan(TableFactor::Derived {
                lateral: false,
                subquery: query.clone(),
                alias: None,
                sample: None,
            })
        }
        other => {
            return datafusion::common::plan_err!(
                "the first argument of a window function must be TABLE name, found {other}"
            )
        }
    };
    let reference = context.object_name_to_table_reference(ObjectName::from(idents))?;
    let source = context
        .context_provider()
        .get_table_source(reference.clone())?;
    LogicalPlanBuilder::scan(reference, source, None)?.build()
}

/// `DESCRIPTOR(col)` or a bare `col`.
fn descriptor_column(arg: &SqlExpr, context: &mut dyn RelationPlannerContext) -> DFResult<String> {
    match arg {
        SqlExpr::Identifier(ident) => Ok(context.normalize_ident(ident.clone())),
        SqlExpr::Function(f) if f.name.to_string().eq_ignore_ascii_case("DESCRIPTOR") => {
            match &f.args {
                FunctionArguments::List(list) if list.args.len() == 1 => match &list.args[0] {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::Identifier(ident))) => {
                        Ok(context.normalize_ident(ident.clone()))
                    }
                    other => datafusion::common::plan_err!(
                        "DESCRIPTOR takes one column name, found {other}"
                    ),
                },
                _ => datafusion::common::plan_err!("DESCRIPTOR takes one column name"),
            }
        }
        other => datafusion::common::plan_err!("expected DESCRIPTOR(time_column), found {other}"),
    }
}

/// A constant interval argument in milliseconds; must be positive and month-free.
fn interval_ms(
    arg: &SqlExpr,
    context: &mut dyn RelationPlannerContext,
    what: &str,
) -> DFResult<i64> {
    let expr = context.sql_to_expr(arg.clone(), &DFSchema::empty())?;
    let ms = match &expr {
        Expr::Literal(value, _) => scalar_interval_ms(value),
        _ => None,
    };
    match ms {
        Some(ms) if ms > 0 => Ok(ms),
        _ => datafusion::common::plan_err!(
            "{what} must be a positive constant interval of days or less, such as INTERVAL '5' MINUTES; found {arg}"
        ),
    }
}
