//! Flink's group-window syntax, rewritten into windowing table functions before planning:
//!
//! ```sql
//! SELECT k, TUMBLE_START(ts, INTERVAL '5' MINUTE), COUNT(*) FROM t GROUP BY k, TUMBLE(ts, INTERVAL '5' MINUTE)
//! -- becomes
//! SELECT k, window_start, COUNT(*) FROM TUMBLE(t, ts, INTERVAL '5' MINUTE) AS t GROUP BY k, window_start, window_end
//! ```
//!
//! so both syntaxes reach the streaming planner as one [`crate::WindowTvf`] shape.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, Expr as SqlExpr, FunctionArg, FunctionArgExpr, FunctionArguments,
    GroupByExpr, Ident, Query, Select, SetExpr, TableFactor,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::error::{Result, SqlError};

/// Group-window functions and the table function each one becomes.
const GROUP_WINDOWS: [&str; 3] = ["TUMBLE", "HOP", "SESSION"];

/// Rewrites every `SELECT` of `query` (subqueries included) that groups by a group window.
pub fn rewrite_group_windows(query: &mut Query) -> Result<()> {
    rewrite_set_expr(&mut query.body)
}

fn rewrite_set_expr(body: &mut SetExpr) -> Result<()> {
    match body {
        SetExpr::Select(select) => rewrite_select(select),
        SetExpr::Query(query) => rewrite_group_windows(query),
        SetExpr::SetOperation { left, right, .. } => {
            rewrite_set_expr(left)?;
            rewrite_set_expr(right)
        }
        _ => Ok(()),
    }
}

fn function_name(expr: &SqlExpr) -> Option<String> {
    match expr {
        SqlExpr::Function(f) => Some(f.name.to_string().to_ascii_uppercase()),
        _ => None,
    }
}

fn function_args(expr: &SqlExpr) -> Vec<SqlExpr> {
    match expr {
        SqlExpr::Function(f) => match &f.args {
            FunctionArguments::List(list) => list
                .args
                .iter()
                .filter_map(|a| match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                    _ => None,
                })
                .collect(),
            _ => vec![],
        },
        _ => vec![],
    }
}

fn rewrite_select(select: &mut Select) -> Result<()> {
    for table in &mut select.from {
        if let TableFactor::Derived { subquery, .. } = &mut table.relation {
            rewrite_group_windows(subquery)?;
        }
    }
    let GroupByExpr::Expressions(group_by, _) = &mut select.group_by else {
        return Ok(());
    };
    let windows: Vec<usize> = group_by
        .iter()
        .enumerate()
        .filter(|(_, e)| function_name(e).is_some_and(|n| GROUP_WINDOWS.contains(&n.as_str())))
        .map(|(i, _)| i)
        .collect();
    let index = match windows.as_slice() {
        [] => return Ok(()),
        [index] => *index,
        _ => {
            return Err(SqlError::Plan(
                "GROUP BY may name one group window (TUMBLE, HOP or SESSION)".into(),
            ))
        }
    };
    let window = group_by.remove(index);
    let function = function_name(&window).unwrap_or_default();
    let args = function_args(&window);
    let (time, params) = match args.split_first() {
        Some((SqlExpr::Identifier(ident), params)) => (ident.clone(), params),
        Some((SqlExpr::CompoundIdentifier(idents), params)) if !idents.is_empty() => {
            (idents[idents.len() - 1].clone(), params)
        }
        _ => {
            return Err(SqlError::Plan(format!(
                "{function}(time_column, ...) in GROUP BY takes a column as its first argument"
            )))
        }
    };
    let (expected, signature) = match function.as_str() {
        "TUMBLE" => (1, "size"),
        "SESSION" => (1, "gap"),
        _ => (2, "slide, size"),
    };
    if params.len() != expected {
        return Err(SqlError::Plan(format!(
            "{function} in GROUP BY takes (time_column, {signature}); got {} arguments",
            args.len()
        )));
    }
    // A group session is per key: the other GROUP BY columns partition the sessions.
    let partition_keys = if function == "SESSION" {
        let keys = group_by
            .iter()
            .map(|key| match key {
                SqlExpr::Identifier(ident) => Ok(ident.to_string()),
                SqlExpr::CompoundIdentifier(idents) if !idents.is_empty() => {
                    Ok(idents[idents.len() - 1].to_string())
                }
                other => Err(SqlError::Unsupported(format!(
                    "GROUP BY SESSION(...) partitions sessions by the other GROUP BY columns; \
                     {other} is an expression (compute it in a view and group by its column)"
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        (!keys.is_empty()).then(|| format!("PARTITION_KEYS({}), ", keys.join(", ")))
    } else {
        None
    };

    // FROM must be one table or view; it becomes the table function's input.
    let [from] = select.from.as_mut_slice() else {
        return Err(SqlError::Unsupported(format!(
            "GROUP BY {function}(...) needs exactly one table in FROM"
        )));
    };
    if !from.joins.is_empty() {
        return Err(SqlError::Unsupported(format!(
            "GROUP BY {function}(...) over a join"
        )));
    }
    let (name, alias) = match &from.relation {
        TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } => (name.to_string(), alias.as_ref().map(|a| a.name.to_string())),
        // A subquery becomes the table function's input as is: `TUMBLE((SELECT ...), ...)`.
        TableFactor::Derived {
            subquery, alias, ..
        } => (
            format!("({subquery})"),
            alias.as_ref().map(|a| a.name.to_string()),
        ),
        _ => {
            return Err(SqlError::Unsupported(format!(
                "GROUP BY {function}(...) needs a table, view or subquery in FROM"
            )))
        }
    };
    let alias = match alias {
        Some(alias) => alias,
        None if name.starts_with('(') => {
            return Err(SqlError::Plan(format!(
                "GROUP BY {function}(...) over a subquery: give the subquery an alias"
            )))
        }
        None => name.rsplit('.').next().unwrap_or(&name).to_string(),
    };
    let params: Vec<String> = params.iter().map(|p| p.to_string()).collect();
    let text = format!(
        "{function}({name}, {}{time}, {}) AS {alias}",
        partition_keys.unwrap_or_default(),
        params.join(", ")
    );
    let mut parser = Parser::new(&GenericDialect {})
        .try_with_sql(&text)
        .map_err(SqlError::from_parser)?;
    from.relation = parser.parse_table_factor().map_err(SqlError::from_parser)?;

    group_by.push(SqlExpr::Identifier(Ident::new(crate::window::WINDOW_START)));
    group_by.push(SqlExpr::Identifier(Ident::new(crate::window::WINDOW_END)));

    // TUMBLE_START(...) → window_start, and so on, wherever they appear.
    let prefix = format!("{function}_");
    let mut bad = None;
    let mut uses_rowtime = false;
    let _ = visit_expressions_mut(select, |expr| {
        if let Some(name) = function_name(expr) {
            if let Some(suffix) = name.strip_prefix(&prefix) {
                let column = match suffix {
                    "START" => crate::window::WINDOW_START,
                    "END" => crate::window::WINDOW_END,
                    "ROWTIME" => {
                        uses_rowtime = true;
                        crate::window::WINDOW_TIME
                    }
                    _ => {
                        bad = Some(name.clone());
                        return ControlFlow::Break(());
                    }
                };
                *expr = SqlExpr::Identifier(Ident::new(column));
            }
        }
        ControlFlow::<()>::Continue(())
    });
    if let Some(name) = bad {
        return Err(SqlError::Unsupported(format!("{name} is not supported")));
    }
    if uses_rowtime {
        // window_time follows from window_end; grouping by it lets the query select it.
        if let GroupByExpr::Expressions(group_by, _) = &mut select.group_by {
            group_by.push(SqlExpr::Identifier(Ident::new(crate::window::WINDOW_TIME)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::{parse_script, Statement};

    fn rewritten(sql: &str) -> String {
        let Statement::Query(mut query) = parse_script(sql).unwrap().remove(0) else {
            panic!("query")
        };
        rewrite_group_windows(&mut query).unwrap();
        query.to_string()
    }

    #[test]
    fn group_windows_become_table_functions() {
        let sql = rewritten(
            "SELECT k, TUMBLE_START(ts, INTERVAL '5' MINUTE) AS s, TUMBLE_END(ts, INTERVAL '5' MINUTE), COUNT(*)
             FROM t GROUP BY TUMBLE(ts, INTERVAL '5' MINUTE), k",
        );
        assert_eq!(
            sql,
            "SELECT k, window_start AS s, window_end, COUNT(*) FROM TUMBLE(t, ts, INTERVAL '5' MINUTE) AS t \
             GROUP BY k, window_start, window_end"
        );
        let sql = rewritten("SELECT HOP_ROWTIME(b.ts, INTERVAL '1' SECOND, INTERVAL '3' SECOND) FROM bids AS b GROUP BY HOP(b.ts, INTERVAL '1' SECOND, INTERVAL '3' SECOND)");
        assert!(
            sql.contains("FROM HOP(bids, ts, INTERVAL '1' SECOND, INTERVAL '3' SECOND) AS b"),
            "{sql}"
        );
        assert!(sql.starts_with("SELECT window_time FROM"), "{sql}");
        assert!(
            sql.ends_with("GROUP BY window_start, window_end, window_time"),
            "{sql}"
        );
        let sql = rewritten(
            "SELECT u.`user`, SESSION_START(ts, INTERVAL '1' MINUTE), COUNT(*) FROM clicks AS u \
             GROUP BY SESSION(ts, INTERVAL '1' MINUTE), u.`user`",
        );
        assert!(
            sql.contains(
                "FROM SESSION(clicks, PARTITION_KEYS(`user`), ts, INTERVAL '1' MINUTE) AS u"
            ),
            "{sql}"
        );
    }
}
