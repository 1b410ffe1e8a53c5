//! When a `HOP` aggregate runs per pane: each row is aggregated once, into the pane of
//! the slide it falls in, and each window merges its `size / slide` panes when it closes
//! (Flink's window slicing), instead of each row being repeated into every window it
//! belongs to. That needs the slide to divide the size, and nothing between the window
//! assignment and the aggregate may read the window columns (they hold the pane's bounds
//! there) other than passing `window_start` and `window_end` on as the aggregate's keys.

use std::collections::HashMap;

use datafusion::common::DFSchema;
use datafusion::logical_expr::Expr;

use crate::plan::{StreamNode, WindowAggregateNode};
use crate::window::WindowKind;

/// Which window column a column of a stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Start,
    End,
    Time,
}

/// Turns `node` (and the window assignment below it) to panes when that gives the same
/// results.
pub fn aggregate_by_panes(node: &mut WindowAggregateNode) {
    let WindowKind::Hop { slide_ms, size_ms } = node.kind else {
        return;
    };
    if slide_ms <= 0 || size_ms <= slide_ms || size_ms % slide_ms != 0 {
        return;
    }
    let Some(columns) = window_columns(&node.input) else {
        return;
    };
    let schema: &DFSchema = &node.input_schema;
    let key_is = |expr: &Expr, bound: Bound| match expr {
        Expr::Column(c) => schema
            .index_of_column(c)
            .ok()
            .and_then(|i| columns.get(&i))
            .is_some_and(|b| *b == bound),
        _ => false,
    };
    for (i, expr) in node.group_exprs.iter().enumerate() {
        let fits = if i == node.window_start {
            key_is(expr, Bound::Start)
        } else if i == node.window_end {
            key_is(expr, Bound::End)
        } else {
            !reads(expr, schema, &columns)
        };
        if !fits {
            return;
        }
    }
    if node.aggr_exprs.iter().any(|e| reads(e, schema, &columns)) {
        return;
    }
    node.panes = true;
    assign_panes(&mut node.input);
}

/// The window columns of `node`'s rows (by index), if `node` is a `HOP` assignment with
/// only filters and projections above it that do not compute on them.
fn window_columns(node: &StreamNode) -> Option<HashMap<usize, Bound>> {
    match node {
        StreamNode::WindowAssign {
            kind: WindowKind::Hop { .. },
            schema,
            ..
        } => {
            let n = schema.fields().len();
            Some(HashMap::from([
                (n - 3, Bound::Start),
                (n - 2, Bound::End),
                (n - 1, Bound::Time),
            ]))
        }
        StreamNode::Filter {
            input,
            predicate,
            input_schema,
        } => {
            let columns = window_columns(input)?;
            (!reads(predicate, input_schema, &columns)).then_some(columns)
        }
        StreamNode::Projection {
            input,
            exprs,
            input_schema,
            ..
        } => {
            let columns = window_columns(input)?;
            let mut out = HashMap::new();
            for (i, expr) in exprs.iter().enumerate() {
                match expr.clone().unalias() {
                    Expr::Column(c) => {
                        if let Some(bound) = input_schema
                            .index_of_column(&c)
                            .ok()
                            .and_then(|j| columns.get(&j))
                        {
                            out.insert(i, *bound);
                        }
                    }
                    other if reads(&other, input_schema, &columns) => return None,
                    _ => {}
                }
            }
            Some(out)
        }
        _ => None,
    }
}

/// Whether `expr` (over `schema`) reads any of the window `columns`.
fn reads(expr: &Expr, schema: &DFSchema, columns: &HashMap<usize, Bound>) -> bool {
    expr.column_refs().into_iter().any(|c| {
        schema
            .index_of_column(c)
            .is_ok_and(|i| columns.contains_key(&i))
    })
}

/// Marks the window assignment below (through filters and projections) as assigning panes.
fn assign_panes(node: &mut StreamNode) {
    match node {
        StreamNode::WindowAssign { panes, .. } => *panes = true,
        StreamNode::Filter { input, .. } | StreamNode::Projection { input, .. } => {
            assign_panes(input)
        }
        _ => {}
    }
}
