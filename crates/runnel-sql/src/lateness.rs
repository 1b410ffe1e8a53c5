//! `SET 'table.exec.emit.allow-lateness'`: windows that keep their state after they fired
//! and update their rows when a late change arrives (Flink's allowed lateness); and
//! `SET 'table.exec.emit.early-fire.*'`: windows that emit their running rows before they
//! end (Flink's early fire).
//!
//! Every tumbling, hopping and cumulating window aggregate becomes an
//! [`UpdatingAggregateNode`] that fires at the window's end and keeps the window's
//! groups for the allowed lateness: a row (or a changelog table's change) arriving in
//! that time updates the window's rows (`-U`/`+U`, `-D`), so the query is updating and
//! needs a sink that takes updates. The window assignment below it lets such rows
//! through; later ones stay late. Panes are not used (a late row must reach its windows).

use std::sync::Arc;

use datafusion::common::DFSchema;

use crate::error::{Result, SqlError};
use crate::plan::{StreamNode, UpdatingAggregateNode};
use crate::updating::{check_append_only, table_changes};
use crate::window::WindowKind;

/// `root` with every window aggregate keeping its windows `lateness_ms` after they fire,
/// and, with `early_fire_ms`, emitting an open window's changed rows that often.
pub(crate) fn allow_lateness(
    mut root: StreamNode,
    lateness_ms: i64,
    early_fire_ms: Option<i64>,
) -> Result<StreamNode> {
    with_lateness(&mut root, lateness_ms, early_fire_ms)?;
    check_inputs(&root)?;
    Ok(root)
}

fn with_lateness(
    node: &mut StreamNode,
    lateness_ms: i64,
    early_fire_ms: Option<i64>,
) -> Result<()> {
    for input in node.inputs_mut() {
        with_lateness(input, lateness_ms, early_fire_ms)?;
    }
    let placeholder = StreamNode::Union {
        inputs: Vec::new(),
        schema: Arc::new(DFSchema::empty()),
    };
    *node = match std::mem::replace(node, placeholder) {
        StreamNode::WindowAggregate(window) => {
            if let WindowKind::Session { .. } = window.kind {
                return Err(SqlError::Unsupported(
                    "'table.exec.emit.allow-lateness' with a SESSION window (sessions that \
                     update after they closed)"
                        .into(),
                ));
            }
            let mut input = window.input;
            let_rows_through(&mut input, lateness_ms);
            StreamNode::UpdatingAggregate(UpdatingAggregateNode {
                input,
                input_schema: window.input_schema,
                group_exprs: window.group_exprs,
                aggr_exprs: window.aggr_exprs,
                fires_at_window_end: Some(window.window_end),
                allowed_lateness_ms: lateness_ms,
                early_fire_delay_ms: early_fire_ms,
                input_time: None,
                state_ttl_ms: 0,
                finished_after: None,
                schema: window.schema,
            })
        }
        StreamNode::UpdatingAggregate(mut aggregate) if aggregate.fires_at_window_end.is_some() => {
            aggregate.allowed_lateness_ms = lateness_ms;
            aggregate.early_fire_delay_ms = early_fire_ms;
            let_rows_through(&mut aggregate.input, lateness_ms);
            StreamNode::UpdatingAggregate(aggregate)
        }
        other => other,
    };
    Ok(())
}

/// Sets the lateness on the window assignment feeding an aggregate (through filters and
/// projections), and assigns whole windows rather than panes.
fn let_rows_through(node: &mut StreamNode, lateness_ms: i64) {
    match node {
        StreamNode::WindowAssign {
            allowed_lateness_ms,
            panes,
            ..
        } => {
            *allowed_lateness_ms = lateness_ms;
            *panes = false;
        }
        StreamNode::Filter { input, .. } | StreamNode::Projection { input, .. } => {
            let_rows_through(input, lateness_ms)
        }
        _ => {}
    }
}

/// Refuses a plan where an operator that treats rows as final reads the updates of a
/// window that allows lateness.
fn check_inputs(node: &StreamNode) -> Result<()> {
    for input in node.inputs() {
        check_inputs(input)?;
    }
    let reads_updates = |consumer: &str| -> Result<()> {
        for input in node.inputs() {
            if input.is_updating() && !table_changes(input) && updates_of_late_windows(input) {
                return Err(SqlError::Unsupported(format!(
                    "{consumer} cannot read the updates of a window that allows lateness \
                     or fires early ('table.exec.emit.allow-lateness', \
                     'table.exec.emit.early-fire.enabled'): its rows are revised after they \
                     are emitted"
                )));
            }
            check_append_only(input, consumer)?;
        }
        Ok(())
    };
    match node {
        StreamNode::Source(_)
        | StreamNode::Filter { .. }
        | StreamNode::Projection { .. }
        | StreamNode::Union { .. }
        | StreamNode::UpdatingAggregate(_)
        | StreamNode::RegularJoin(_)
        | StreamNode::UpsertMaterialize(_)
        | StreamNode::ChangelogNormalize(_) => Ok(()),
        StreamNode::WindowAssign { input, .. } if table_changes(input) => Ok(()),
        StreamNode::WindowAssign { .. } | StreamNode::WindowAggregate(_) => {
            reads_updates("a window")
        }
        StreamNode::OverWindow(_) => reads_updates("an OVER window"),
        StreamNode::TopN(_) => reads_updates("a Top-N"),
        StreamNode::LookupJoin(_) => reads_updates("a lookup join"),
        StreamNode::TemporalJoin(j) if table_changes(&j.left) => Ok(()),
        StreamNode::TemporalJoin(_) => reads_updates("a temporal join"),
        StreamNode::IntervalJoin(_) | StreamNode::WindowJoin(_) => reads_updates("a join"),
    }
}

/// Whether `node`'s updates come from a window aggregate that allows lateness.
fn updates_of_late_windows(node: &StreamNode) -> bool {
    match node {
        StreamNode::UpdatingAggregate(a) => {
            a.allowed_lateness_ms > 0 || a.early_fire_delay_ms.is_some()
        }
        other => other.inputs().into_iter().any(updates_of_late_windows),
    }
}
