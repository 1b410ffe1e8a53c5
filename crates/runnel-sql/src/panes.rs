//! When a `HOP` aggregate runs per pane: each row is aggregated once, into the pane of
//! the slide it falls in, and each window merges its `size / slide` panes when it closes
//! (Flink's window slicing), instead of each row being repeated into every window it
//! belongs to. That needs the slide to divide the size, and nothing between the window
//! assignment and the aggregate may read the window columns (they hold the pane's bounds
//! there) other than passing `window_start` and `window_end` on as the aggregate's keys.

use datafusion::common::DFSchema;

use crate::plan::{StreamNode, WindowAggregateNode};
use crate::window::WindowKind;
use crate::window_columns::{column_of, reads_bounds, window_columns, WindowColumn};

/// Turns `node` (and the window assignment below it) to panes when that gives the same
/// results.
pub fn aggregate_by_panes(node: &mut WindowAggregateNode) {
    let WindowKind::Hop { slide_ms, size_ms } = node.kind else {
        return;
    };
    if slide_ms <= 0 || size_ms <= slide_ms || size_ms % slide_ms != 0 {
        return;
    }
    let is_hop = |kind: &WindowKind| matches!(kind, WindowKind::Hop { .. });
    let Some(columns) = window_columns(&node.input, is_hop) else {
        return;
    };
    let schema: &DFSchema = &node.input_schema;
    for (i, expr) in node.group_exprs.iter().enumerate() {
        let fits = if i == node.window_start {
            column_of(expr, schema, &columns) == Some(WindowColumn::Start)
        } else if i == node.window_end {
            column_of(expr, schema, &columns) == Some(WindowColumn::End)
        } else {
            !reads_bounds(expr, schema, &columns)
        };
        if !fits {
            return;
        }
    }
    if node
        .aggr_exprs
        .iter()
        .any(|e| reads_bounds(e, schema, &columns))
    {
        return;
    }
    node.panes = true;
    assign_panes(&mut node.input);
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
