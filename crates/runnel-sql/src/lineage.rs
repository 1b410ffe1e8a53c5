//! Where a column of a logical plan comes from: followed down through projections,
//! filters, aliases, aggregates' group columns and window functions to the table column,
//! window bound or expression that made it. Streaming planning asks this to find time
//! attributes: a window's bounds (whatever the query renamed them to), a table's event
//! time, `PROCTIME()`.

use datafusion::common::Column;
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, UserDefinedLogicalNodeCore};

use crate::catalog::TableDef;
use crate::planner::CatalogTableSource;
use crate::window::{WindowKind, WindowTvf, WINDOW_END, WINDOW_START, WINDOW_TIME};

/// The origin of a column.
#[derive(Debug)]
pub enum Origin<'a> {
    /// A column of a catalog table, by index in [`TableDef::schema`].
    Table(&'a TableDef, usize),
    /// `window_start`, `window_end` or `window_time` of a window table function.
    WindowBound(WindowKind, &'static str),
    /// Computed by a projection.
    Computed(&'a Expr),
}

/// The origin of `column` in `plan`, if it can be followed.
pub fn origin<'a>(plan: &'a LogicalPlan, column: &Column) -> Option<Origin<'a>> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let table = scan.source.downcast_ref::<CatalogTableSource>()?;
            let index = table.table.schema.index_of(&column.name).ok()?;
            Some(Origin::Table(&table.table, index))
        }
        LogicalPlan::Extension(Extension { node }) => {
            let tvf = node.as_any().downcast_ref::<WindowTvf>()?;
            let index = tvf.schema().index_of_column(column).ok()?;
            if index < tvf.input.schema().fields().len() {
                // An input column passes through; an inner window's bound is not a bound
                // of this window (cascaded windows group by the outer one's).
                let inner = Column::from(tvf.input.schema().qualified_field(index));
                return match origin(&tvf.input, &inner)? {
                    Origin::WindowBound(..) => None,
                    other => Some(other),
                };
            }
            let name = tvf.schema().field(index).name();
            [WINDOW_START, WINDOW_END, WINDOW_TIME]
                .into_iter()
                .find(|bound| bound == name)
                .map(|bound| Origin::WindowBound(tvf.kind, bound))
        }
        LogicalPlan::Projection(p) => {
            let index = p.schema.index_of_column(column).ok()?;
            let expr = match &p.expr[index] {
                Expr::Alias(alias) => alias.expr.as_ref(),
                expr => expr,
            };
            match expr {
                Expr::Column(inner) => origin(&p.input, inner),
                computed => Some(Origin::Computed(computed)),
            }
        }
        LogicalPlan::Filter(f) => origin(&f.input, column),
        LogicalPlan::Aggregate(a) => {
            let index = a.schema.index_of_column(column).ok()?;
            match a.group_expr.get(index)? {
                Expr::Column(inner) => origin(&a.input, inner),
                _ => None,
            }
        }
        LogicalPlan::Window(w) => origin(&w.input, column),
        // A join passes each side's columns through (which join keeps time attributes is
        // the streaming planner's to say).
        LogicalPlan::Join(j) => {
            let (left, right) = (j.left.schema(), j.right.schema());
            if left.index_of_column(column).is_ok() {
                origin(&j.left, column)
            } else if right.index_of_column(column).is_ok() {
                origin(&j.right, column)
            } else {
                None
            }
        }
        LogicalPlan::SubqueryAlias(a) => {
            let index = a.schema.index_of_column(column).ok()?;
            let inner = Column::from(a.input.schema().qualified_field(index));
            origin(&a.input, &inner)
        }
        _ => None,
    }
}

/// `Some((kind, bound))` if `column` is a window table function's bound.
pub fn window_bound(plan: &LogicalPlan, column: &Column) -> Option<(WindowKind, &'static str)> {
    match origin(plan, column)? {
        Origin::WindowBound(kind, bound) => Some((kind, bound)),
        _ => None,
    }
}

/// Whether `e` is a column carrying the window bound `bound` of `plan`.
pub fn is_window_bound(plan: &LogicalPlan, e: &Expr, bound: &str) -> bool {
    matches!(e, Expr::Column(c) if window_bound(plan, c).is_some_and(|(_, b)| b == bound))
}

/// Whether `column` is a processing-time attribute: `PROCTIME()` in a query or a DDL.
pub fn is_proctime(plan: &LogicalPlan, column: &Column) -> bool {
    let is_call = |e: &Expr| {
        let e = match e {
            Expr::Alias(a) => a.expr.as_ref(),
            e => e,
        };
        matches!(e, Expr::ScalarFunction(f) if f.func.name() == crate::functions::PROCTIME)
    };
    match origin(plan, column) {
        Some(Origin::Computed(e)) => is_call(e),
        Some(Origin::Table(table, index)) => table.row_exprs.get(index).is_some_and(is_call),
        _ => false,
    }
}

/// A column of `plan` that is a source table's event-time (watermark) column.
pub fn event_time_column(plan: &LogicalPlan) -> Option<Column> {
    plan.schema().columns().into_iter().find(|c| {
        matches!(origin(plan, c), Some(Origin::Table(table, index))
            if table.watermark.as_ref().is_some_and(|w| w.column == *table.schema.field(index).name()))
    })
}
