//! Where a window assignment's columns are in the rows above it, followed up through the
//! filters and projections that pass them on unchanged: what the rules letting a window
//! aggregate work hand in hand with the assignment below it ([`crate::panes`],
//! [`crate::closed_sessions`]) check the aggregate's keys against.

use std::collections::HashMap;

use datafusion::common::DFSchema;
use datafusion::logical_expr::Expr;

use crate::plan::StreamNode;
use crate::window::WindowKind;

/// What a column of a stream above a window assignment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WindowColumn {
    Start,
    End,
    Time,
    /// One of the assignment's partition keys (a session's), by its index among the
    /// assignment's input columns.
    Key(usize),
}

impl WindowColumn {
    /// A window bound (`window_start`, `window_end` or `window_time`), not a key.
    fn is_bound(self) -> bool {
        !matches!(self, WindowColumn::Key(_))
    }
}

/// The window assignment below `node` through filters and projections, if `fits` its kind.
pub(crate) fn assignment(node: &StreamNode, fits: fn(&WindowKind) -> bool) -> Option<&StreamNode> {
    match node {
        StreamNode::WindowAssign { kind, .. } if fits(kind) => Some(node),
        StreamNode::Filter { input, .. } | StreamNode::Projection { input, .. } => {
            assignment(input, fits)
        }
        _ => None,
    }
}

/// The window columns of `node`'s rows (by index), if `node` is a window assignment whose
/// kind `fits`, with only filters and projections above it that compute on none of its
/// bounds (they may pass them on).
pub(crate) fn window_columns(
    node: &StreamNode,
    fits: fn(&WindowKind) -> bool,
) -> Option<HashMap<usize, WindowColumn>> {
    match node {
        StreamNode::WindowAssign {
            kind,
            schema,
            partition_keys,
            ..
        } if fits(kind) => {
            // The assignment passes its input's columns on first, then appends the bounds.
            let n = schema.fields().len();
            let mut columns: HashMap<usize, WindowColumn> = partition_keys
                .iter()
                .map(|&k| (k, WindowColumn::Key(k)))
                .collect();
            columns.extend([
                (n - 3, WindowColumn::Start),
                (n - 2, WindowColumn::End),
                (n - 1, WindowColumn::Time),
            ]);
            Some(columns)
        }
        StreamNode::Filter {
            input,
            predicate,
            input_schema,
        } => {
            let columns = window_columns(input, fits)?;
            (!reads_bounds(predicate, input_schema, &columns)).then_some(columns)
        }
        StreamNode::Projection {
            input,
            exprs,
            input_schema,
            ..
        } => {
            let columns = window_columns(input, fits)?;
            let mut out = HashMap::new();
            for (i, expr) in exprs.iter().enumerate() {
                let expr = expr.clone().unalias();
                if let Some(column) = column_of(&expr, input_schema, &columns) {
                    out.insert(i, column);
                } else if reads_bounds(&expr, input_schema, &columns) {
                    return None;
                }
            }
            Some(out)
        }
        _ => None,
    }
}

/// The window column `expr` (over `schema`) is, when it passes one on unchanged.
pub(crate) fn column_of(
    expr: &Expr,
    schema: &DFSchema,
    columns: &HashMap<usize, WindowColumn>,
) -> Option<WindowColumn> {
    match expr {
        Expr::Column(c) => schema
            .index_of_column(c)
            .ok()
            .and_then(|i| columns.get(&i))
            .copied(),
        _ => None,
    }
}

/// Whether `expr` (over `schema`) reads any window bound among `columns`.
pub(crate) fn reads_bounds(
    expr: &Expr,
    schema: &DFSchema,
    columns: &HashMap<usize, WindowColumn>,
) -> bool {
    expr.column_refs().into_iter().any(|c| {
        schema
            .index_of_column(c)
            .ok()
            .and_then(|i| columns.get(&i))
            .is_some_and(|column| column.is_bound())
    })
}
