//! [`InputDistribution`]: how a plan node needs each input's rows spread over its parallel
//! subtasks (DataFusion's `required_input_distribution`, for streams).
//!
//! Each [`StreamNode`] says it once, in [`StreamNode::required_input_distribution`]; the
//! runtime's job graph turns it into edges (chained, hashed by key, gathered into one
//! subtask, broadcast) and nothing else re-derives it. The rule behind every answer: a
//! stateful operator keeps its state per key, so all rows of one key must meet in one
//! subtask; an operator without a key keeps one state, so all rows meet in one subtask;
//! a stateless operator works on rows wherever they are.

use datafusion::common::DFSchemaRef;
use datafusion::logical_expr::Expr;

use crate::plan::StreamNode;
use crate::window::WindowKind;

/// How one input's rows must be spread over a node's subtasks.
#[derive(Debug, Clone, PartialEq)]
pub enum InputDistribution {
    /// Any spread: each subtask takes the rows the subtask feeding it sends (stateless
    /// operators, which run chained in the task of their input).
    Any,
    /// Every row to one subtask: state without a key (a global Top-N, a join on no key).
    Single,
    /// Rows with equal values of `keys` (evaluated over `schema`, the input's) to the
    /// same subtask.
    Hash {
        keys: Vec<Expr>,
        schema: DFSchemaRef,
    },
    /// Every row to every subtask, read to its end before the stream starts: the table
    /// side of a lookup join.
    Broadcast,
}

impl InputDistribution {
    /// Hash by `keys`, or one subtask when there are none.
    fn hash_or_single(keys: Vec<Expr>, schema: &DFSchemaRef) -> Self {
        if keys.is_empty() {
            InputDistribution::Single
        } else {
            InputDistribution::Hash {
                keys,
                schema: schema.clone(),
            }
        }
    }
}

impl StreamNode {
    /// What each input (in [`StreamNode::inputs`] order) needs: rows keyed the way the
    /// node keeps its state.
    pub fn required_input_distribution(&self) -> Vec<InputDistribution> {
        use InputDistribution::{Any, Broadcast};
        let hash = InputDistribution::hash_or_single;
        match self {
            StreamNode::Source(_) => vec![],
            StreamNode::Filter { .. }
            | StreamNode::Projection { .. }
            | StreamNode::WindowAssign {
                kind:
                    WindowKind::Tumble { .. } | WindowKind::Hop { .. } | WindowKind::Cumulate { .. },
                ..
            } => vec![Any],
            StreamNode::Union { inputs, .. } => vec![Any; inputs.len()],
            // A session holds its rows per partition key until the session closes.
            StreamNode::WindowAssign {
                input,
                kind: WindowKind::Session { .. },
                partition_keys,
                ..
            } => {
                let schema = input.schema();
                let columns = schema.columns();
                let keys = partition_keys
                    .iter()
                    .map(|&i| Expr::Column(columns[i].clone()))
                    .collect();
                vec![hash(keys, &schema)]
            }
            // Closed sessions arrive whole from the assignment below, hashed by their keys.
            StreamNode::WindowAggregate(aggregate) if aggregate.closed_sessions => vec![Any],
            // Each window's groups: the window's end follows from its start. Per pane, a
            // key's panes must meet in one subtask, so the window is no part of the key.
            StreamNode::WindowAggregate(aggregate) => {
                let keys = aggregate
                    .group_exprs
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != aggregate.window_end)
                    .filter(|(i, _)| !aggregate.panes || *i != aggregate.window_start)
                    .map(|(_, e)| e.clone())
                    .collect();
                vec![hash(keys, &aggregate.input_schema)]
            }
            StreamNode::UpdatingAggregate(aggregate) => {
                vec![hash(aggregate.group_exprs.clone(), &aggregate.input_schema)]
            }
            StreamNode::TopN(top) => vec![hash(top.partition_by.clone(), &top.input_schema)],
            StreamNode::ChangelogNormalize(n) => {
                let schema = n.input.schema();
                let columns = schema.columns();
                let keys = n
                    .keys
                    .iter()
                    .map(|&i| Expr::Column(columns[i].clone()))
                    .collect();
                vec![hash(keys, &schema)]
            }
            StreamNode::UpsertMaterialize(m) => {
                let schema = m.input.schema();
                let columns = schema.columns();
                let keys = m
                    .keys
                    .iter()
                    .map(|&i| Expr::Column(columns[i].clone()))
                    .collect();
                vec![hash(keys, &schema)]
            }
            StreamNode::OverWindow(over) => vec![hash(
                over_partition_keys(&over.window_exprs),
                &over.input_schema,
            )],
            StreamNode::IntervalJoin(j) => join_sides(
                (j.left_keys.clone(), &j.left_schema),
                (j.right_keys.clone(), &j.right_schema),
            ),
            StreamNode::TemporalJoin(j) => join_sides(
                (j.left_keys.clone(), &j.left_schema),
                (j.right_keys.clone(), &j.right.schema()),
            ),
            StreamNode::RegularJoin(j) => join_sides(
                (j.left_keys.clone(), &j.left_schema),
                (j.right_keys.clone(), &j.right_schema),
            ),
            // A window join's rows meet only within one window: its end is part of the key.
            StreamNode::WindowJoin(j) => {
                let with_end = |keys: &[Expr], schema: &DFSchemaRef, end: usize| {
                    let mut keys = keys.to_vec();
                    keys.push(Expr::Column(schema.columns()[end].clone()));
                    keys
                };
                join_sides(
                    (
                        with_end(&j.left_keys, &j.left_schema, j.left_window_end),
                        &j.left_schema,
                    ),
                    (
                        with_end(&j.right_keys, &j.right_schema, j.right_window_end),
                        &j.right_schema,
                    ),
                )
            }
            // The stream side is probed where it is; the table goes to every subtask.
            StreamNode::LookupJoin(_) => vec![Any, Broadcast],
        }
    }
}

/// A join's two sides hashed by their equi-keys, or both to one subtask without keys.
fn join_sides(
    (left_keys, left): (Vec<Expr>, &DFSchemaRef),
    (right_keys, right): (Vec<Expr>, &DFSchemaRef),
) -> Vec<InputDistribution> {
    if left_keys.is_empty() {
        return vec![InputDistribution::Single, InputDistribution::Single];
    }
    vec![
        InputDistribution::Hash {
            keys: left_keys,
            schema: left.clone(),
        },
        InputDistribution::Hash {
            keys: right_keys,
            schema: right.clone(),
        },
    ]
}

/// The `PARTITION BY` keys shared by every function of an `OVER` node (none when they
/// differ: then one subtask sees all rows).
fn over_partition_keys(exprs: &[Expr]) -> Vec<Expr> {
    let partition_of = |expr: &Expr| match expr.clone().unalias() {
        Expr::WindowFunction(function) => Some(function.params.partition_by.clone()),
        _ => None,
    };
    let mut keys = exprs.iter().map(partition_of);
    let Some(Some(first)) = keys.next() else {
        return Vec::new();
    };
    if keys.all(|k| k.as_ref() == Some(&first)) {
        first
    } else {
        Vec::new()
    }
}
