//! Flink's naming of selected fields: `SELECT person.id FROM t` yields a column named `id`
//! (DataFusion would name it after the whole access path). Unaliased compound
//! identifiers in a `SELECT` list get their last part as alias before planning.

use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Query, SelectItem, SetExpr, TableFactor};

/// Aliases every unaliased `a.b` select item of `query` (subqueries included) as `b`.
pub fn name_field_accesses(query: &mut Query) {
    if let Some(with) = &mut query.with {
        for cte in &mut with.cte_tables {
            name_field_accesses(&mut cte.query);
        }
    }
    name_in_set_expr(&mut query.body);
}

fn name_in_set_expr(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => {
            for table in &mut select.from {
                if let TableFactor::Derived { subquery, .. } = &mut table.relation {
                    name_field_accesses(subquery);
                }
            }
            for item in &mut select.projection {
                if let SelectItem::UnnamedExpr(SqlExpr::CompoundIdentifier(parts)) = item {
                    if let Some(last) = parts.last().cloned() {
                        let expr = SqlExpr::CompoundIdentifier(parts.clone());
                        *item = SelectItem::ExprWithAlias { expr, alias: last };
                    }
                }
            }
        }
        SetExpr::Query(query) => name_field_accesses(query),
        SetExpr::SetOperation { left, right, .. } => {
            name_in_set_expr(left);
            name_in_set_expr(right);
        }
        _ => {}
    }
}
