//! When a `SESSION` aggregate runs hand in hand with its assignment: the assignment holds
//! each key's rows until the watermark closes the session, then emits the session's rows
//! together in one batch. An aggregate grouped by exactly the session's partition keys
//! and bounds can then aggregate each batch as it arrives, in the assignment's own
//! subtask, and emit its windows at once: no exchange between the two, and no window
//! state opened per session (a session is a window of its own, so an aggregate waiting
//! for the watermark keeps one per session). Flink's session window operator aggregates
//! in place the same way.

use std::collections::BTreeSet;

use datafusion::common::DFSchema;

use crate::plan::{StreamNode, WindowAggregateNode};
use crate::window::WindowKind;
use crate::window_columns::{assignment, column_of, window_columns, WindowColumn};

/// Marks `node` as aggregating closed sessions when its keys are the session's partition
/// keys and bounds, passed on unchanged from the assignment below.
pub fn aggregate_closed_sessions(node: &mut WindowAggregateNode) {
    if !matches!(node.kind, WindowKind::Session { .. }) {
        return;
    }
    let is_session = |kind: &WindowKind| matches!(kind, WindowKind::Session { .. });
    let Some(StreamNode::WindowAssign { partition_keys, .. }) = assignment(&node.input, is_session)
    else {
        return;
    };
    let Some(columns) = window_columns(&node.input, is_session) else {
        return;
    };
    let schema: &DFSchema = &node.input_schema;
    let mut keys = BTreeSet::new();
    for (i, expr) in node.group_exprs.iter().enumerate() {
        let fits = match column_of(expr, schema, &columns) {
            Some(WindowColumn::Start) => i == node.window_start,
            Some(WindowColumn::End) => i == node.window_end,
            Some(WindowColumn::Key(key)) => keys.insert(key),
            Some(WindowColumn::Time) | None => false,
        };
        if !fits {
            return;
        }
    }
    if keys == partition_keys.iter().copied().collect::<BTreeSet<_>>() {
        node.closed_sessions = true;
    }
}
