//! How a plan reads in `EXPLAIN`: one line per operator — what it computes, what it
//! emits and what it keeps as state — indented under the operator it feeds.

use std::fmt;

use datafusion::logical_expr::Expr;

use super::{OverReadiness, StreamNode, StreamPlan};
use crate::window::{format_duration, WindowKind};

impl StreamNode {
    pub(super) fn fmt_tree(&self, f: &mut fmt::Formatter<'_>, depth: usize) -> fmt::Result {
        let pad = "  ".repeat(depth);
        let list = |exprs: &[Expr]| {
            exprs
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            StreamNode::Source(s) => {
                let watermark = match &s.table.watermark {
                    _ if s.processing_time => ", watermark = processing time".to_string(),
                    Some(w) => format!(
                        ", watermark {} = max({}) per partition",
                        w.column,
                        display_expr(&w.expr)
                    ),
                    None => String::new(),
                };
                // Struct columns read in part: the fields decoded; the columns skipped.
                let (skipped, part): (Vec<_>, Vec<_>) = s
                    .table
                    .read_fields
                    .iter()
                    .partition(|(_, fields)| fields.is_empty());
                let mut reads = String::new();
                if !part.is_empty() {
                    let part: Vec<String> = part
                        .iter()
                        .map(|(column, fields)| format!("{column}.{{{}}}", fields.join(", ")))
                        .collect();
                    reads.push_str(&format!(", decodes only {}", part.join(", ")));
                }
                if !skipped.is_empty() {
                    let skipped: Vec<&str> = skipped.iter().map(|(c, _)| c.as_str()).collect();
                    reads.push_str(&format!(", skips {}", skipped.join(", ")));
                }
                writeln!(
                    f,
                    "{pad}Source: {} (connector={}){watermark}{reads}",
                    s.table.name,
                    s.table.connector().unwrap_or("?")
                )
            }
            StreamNode::Filter {
                input, predicate, ..
            } => {
                writeln!(f, "{pad}Filter: {predicate}")?;
                input.fmt_tree(f, depth + 1)
            }
            StreamNode::Projection { input, exprs, .. } => {
                writeln!(f, "{pad}Projection: {}", list(exprs))?;
                input.fmt_tree(f, depth + 1)
            }
            StreamNode::WindowAssign {
                input,
                kind,
                time_column,
                partition_keys,
                panes,
                ..
            } => {
                let time = input.schema().field(*time_column).name().clone();
                write!(f, "{pad}WindowAssign: {kind} on {time}")?;
                if let (true, WindowKind::Hop { slide_ms, .. }) = (panes, kind) {
                    write!(f, ", into panes of {}", format_duration(*slide_ms))?;
                }
                if let WindowKind::Session { .. } = kind {
                    let input_schema = input.schema();
                    let keys: Vec<&str> = partition_keys
                        .iter()
                        .map(|&i| input_schema.field(i).name().as_str())
                        .collect();
                    write!(
                        f,
                        " partition by [{}]; state: rows of open sessions (freed when the watermark passes a session's end)",
                        keys.join(", ")
                    )?;
                }
                writeln!(f)?;
                input.fmt_tree(f, depth + 1)
            }
            StreamNode::WindowAggregate(a) => {
                let state = match a.kind {
                    WindowKind::Hop { slide_ms, size_ms } if a.panes => format!(
                        "state: partial aggregates per pane of {} (each window merges its {} panes when the watermark passes its end; a pane is freed once its last window is emitted)",
                        format_duration(slide_ms),
                        size_ms / slide_ms
                    ),
                    WindowKind::Session { .. } if a.closed_sessions => {
                        "state: none (each session aggregated when the assignment below closes it)"
                            .to_string()
                    }
                    kind => format!(
                        "state: open windows (each freed when the watermark passes its end, windows of {})",
                        format_duration(kind.size_ms())
                    ),
                };
                writeln!(
                    f,
                    "{pad}WindowAggregate: {} group=[{}] aggregates=[{}]; {state}",
                    a.kind,
                    list(&a.group_exprs),
                    list(&a.aggr_exprs),
                )?;
                a.input.fmt_tree(f, depth + 1)
            }
            StreamNode::OverWindow(o) => {
                let state = match o.readiness {
                    OverReadiness::EventTime {
                        time_column,
                        range_ms,
                        rows,
                    } => {
                        let time = o.input_schema.field(time_column).name().clone();
                        let mut reach = Vec::new();
                        if let Some(ms) = range_ms {
                            reach.push(format!("rows of the last {}", format_duration(ms)));
                        }
                        if let Some(n) = rows {
                            reach.push(format!("the last {n} rows per partition"));
                        }
                        format!(
                            "rows wait until the watermark passes {time}; kept after: {}",
                            reach.join(" and ")
                        )
                    }
                    OverReadiness::WindowEnd { .. } => {
                        "rows of open windows (freed when the watermark passes window_end)"
                            .to_string()
                    }
                };
                writeln!(
                    f,
                    "{pad}OverWindow: [{}]; state: {state}",
                    list(&o.window_exprs)
                )?;
                o.input.fmt_tree(f, depth + 1)
            }
            StreamNode::Union { inputs, .. } => {
                writeln!(f, "{pad}Union: watermark = min of {} inputs", inputs.len())?;
                inputs
                    .iter()
                    .try_for_each(|input| input.fmt_tree(f, depth + 1))
            }
            StreamNode::IntervalJoin(j) => {
                let (lt, rt) = (
                    j.left_schema.field(j.left_time).name().clone(),
                    j.right_schema.field(j.right_time).name().clone(),
                );
                let keys: Vec<String> = j
                    .left_keys
                    .iter()
                    .zip(&j.right_keys)
                    .map(|(l, r)| format!("{l} = {r}"))
                    .collect();
                writeln!(
                    f,
                    "{pad}IntervalJoin: {} [{}] and {lt} - {rt} in [{}, {}]{}; state: left rows until the right watermark passes {lt} - ({}), right rows until the left watermark passes {rt} + ({})",
                    j.join_type,
                    keys.join(", "),
                    format_signed(j.lower_ms),
                    format_signed(j.upper_ms),
                    j.residual
                        .as_ref()
                        .map(|r| format!(" filter {r}"))
                        .unwrap_or_default(),
                    format_signed(j.lower_ms),
                    format_signed(j.upper_ms),
                )?;
                j.left.fmt_tree(f, depth + 1)?;
                j.right.fmt_tree(f, depth + 1)
            }
            StreamNode::WindowJoin(j) => {
                writeln!(
                    f,
                    "{pad}WindowJoin: {} {}; state: both sides' rows of open windows (freed when the watermark passes window_end)",
                    j.join_type,
                    join_condition(&j.left_keys, &j.right_keys, &j.residual),
                )?;
                j.left.fmt_tree(f, depth + 1)?;
                j.right.fmt_tree(f, depth + 1)
            }
            StreamNode::RegularJoin(j) => {
                let ttl = match j.state_ttl {
                    Some((left, right, ttl_ms)) => format!(
                        ", each dropped when the watermark passes its {} / {}{}",
                        j.left_schema.field(left).name(),
                        j.right_schema.field(right).name(),
                        if ttl_ms > 0 {
                            format!(" + {}", format_duration(ttl_ms))
                        } else {
                            String::new()
                        }
                    ),
                    None => String::new(),
                };
                writeln!(
                    f,
                    "{pad}RegularJoin: {} {}; {}; state: live rows of {} and of {}{ttl}",
                    j.join_type,
                    join_condition(&j.left_keys, &j.right_keys, &j.residual),
                    if j.emits_changes() {
                        "emits updates"
                    } else {
                        "appends"
                    },
                    live_rows(&j.left, j.state_ttl.is_some()),
                    live_rows(&j.right, j.state_ttl.is_some()),
                )?;
                j.left.fmt_tree(f, depth + 1)?;
                j.right.fmt_tree(f, depth + 1)
            }
            StreamNode::UpdatingAggregate(a) => {
                let lateness = format_duration(a.allowed_lateness_ms);
                let (emits, state) = match a.fires_at_window_end {
                    None if a.finished_after.is_some() => (
                        "emits updates".to_string(),
                        format!(
                            "one row per group, freed when the watermark passes its rows' {} (no row can join after it)",
                            finished_column(&a.input_schema, a.finished_after)
                        ),
                    ),
                    None if a.state_ttl_ms > 0 => (
                        "emits updates".to_string(),
                        format!(
                            "one row per group, freed when the watermark passes its last change's event time + {}",
                            format_duration(a.state_ttl_ms)
                        ),
                    ),
                    None => (
                        "emits updates".to_string(),
                        "one row per group, kept for the life of the job".to_string(),
                    ),
                    Some(_) if a.early_fire_delay_ms.is_some() => {
                        let every = match a.early_fire_delay_ms.unwrap_or(0) {
                            0 => "after every batch".to_string(),
                            ms => format!("every {} of processing time", format_duration(ms)),
                        };
                        let late = if a.allowed_lateness_ms > 0 {
                            format!(", then updates it for {lateness} of lateness")
                        } else {
                            String::new()
                        };
                        (
                            format!("emits each open window's changed rows {every} and at its end{late}"),
                            format!("one row per group of each window, freed when the watermark passes window_end + {lateness}"),
                        )
                    }
                    Some(_) if a.allowed_lateness_ms > 0 => (
                        format!("emits each window at its end, then updates it for {lateness} of lateness"),
                        format!("one row per group of each window, freed when the watermark passes window_end + {lateness}"),
                    ),
                    Some(_) => (
                        "retracts from open windows, emits each window once at its end".to_string(),
                        "one row per group of each open window (freed when the watermark passes window_end)".to_string(),
                    ),
                };
                writeln!(
                    f,
                    "{pad}UpdatingAggregate: group=[{}] aggregates=[{}]; {emits}; state: {state}",
                    list(&a.group_exprs),
                    list(&a.aggr_exprs),
                )?;
                a.input.fmt_tree(f, depth + 1)
            }
            StreamNode::LookupJoin(j) => {
                writeln!(
                    f,
                    "{pad}LookupJoin: {} {}; state: the table read whole at start and indexed by key, or the cache of a table asked by key",
                    j.join_type,
                    join_condition(&j.input_keys, &j.table_keys, &j.residual),
                )?;
                j.input.fmt_tree(f, depth + 1)?;
                j.table.fmt_tree(f, depth + 1)
            }
            StreamNode::TemporalJoin(j) => {
                let right = j.right.schema();
                writeln!(
                    f,
                    "{pad}TemporalJoin: {} {} as of {} (versions by {}); state: left rows until the watermark passes their time, each key's versions from the last one before the watermark",
                    j.join_type,
                    join_condition(&j.left_keys, &j.right_keys, &j.residual),
                    j.left_schema.field(j.left_time).name(),
                    right.field(j.right_time).name(),
                )?;
                j.left.fmt_tree(f, depth + 1)?;
                j.right.fmt_tree(f, depth + 1)
            }
            StreamNode::ChangelogNormalize(n) => {
                let keys: Vec<&str> = n
                    .keys
                    .iter()
                    .map(|&i| n.schema.field(i).name().as_str())
                    .collect();
                writeln!(
                    f,
                    "{pad}ChangelogNormalize: key=[{}]; emits exact updates; state: the last row of each key",
                    keys.join(", ")
                )?;
                n.input.fmt_tree(f, depth + 1)
            }
            StreamNode::UpsertMaterialize(m) => {
                let schema = m.input.schema();
                let keys: Vec<&str> = m
                    .keys
                    .iter()
                    .map(|&i| schema.field(i).name().as_str())
                    .collect();
                writeln!(
                    f,
                    "{pad}UpsertMaterialize: key=[{}]; orders each sink key's changes; state: the live rows of each key",
                    keys.join(", ")
                )?;
                m.input.fmt_tree(f, depth + 1)
            }
            StreamNode::TopN(t) => {
                let order: Vec<String> = t.order_by.iter().map(|o| o.to_string()).collect();
                writeln!(
                    f,
                    "{pad}TopN: first {} per [{}] order by [{}]; emits updates; state: at most {} rows per partition{}",
                    t.limit,
                    list(&t.partition_by),
                    order.join(", "),
                    t.limit,
                    if t.finished_after.is_some() {
                        format!(
                            ", freed when the watermark passes its rows' {} (no row can join after it)",
                            finished_column(&t.input_schema, t.finished_after)
                        )
                    } else if t.state_ttl_ms > 0 {
                        format!(
                            ", freed when the watermark passes its last row's event time + {}",
                            format_duration(t.state_ttl_ms)
                        )
                    } else {
                        String::new()
                    },
                )?;
                t.input.fmt_tree(f, depth + 1)
            }
        }
    }
}

/// The name of the column saying when a group is done (`finished_after`).
fn finished_column(schema: &datafusion::common::DFSchema, column: Option<usize>) -> String {
    column
        .and_then(|at| schema.fields().get(at))
        .map_or_else(String::new, |f| f.name().clone())
}

/// An expression for plans, with interval constants written as `INTERVAL '5s'` rather
/// than as DataFusion's interval structs.
fn display_expr(expr: &Expr) -> String {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    let readable = expr.clone().transform(|e| match &e {
        Expr::Literal(value, _) => match crate::planner::scalar_interval_ms(value) {
            Some(ms) => Ok(Transformed::yes(Expr::Column(
                datafusion::common::Column::from_name(format!(
                    "INTERVAL '{}'",
                    format_duration(ms)
                )),
            ))),
            None => Ok(Transformed::no(e)),
        },
        _ => Ok(Transformed::no(e)),
    });
    match readable {
        Ok(readable) => readable.data.to_string(),
        Err(_) => expr.to_string(),
    }
}

/// A join's condition for plans: `[l.k = r.k, ...]`, then ` filter <residual>` if any.
fn join_condition(left: &[Expr], right: &[Expr], residual: &Option<Expr>) -> String {
    let keys: Vec<String> = left
        .iter()
        .zip(right)
        .map(|(l, r)| format!("{l} = {r}"))
        .collect();
    let filter = residual
        .as_ref()
        .map(|r| format!(" filter {r}"))
        .unwrap_or_default();
    format!("[{}]{filter}", keys.join(", "))
}

/// What bounds the rows a regular join keeps of one input, for plans: a changelog
/// table's primary key, or nothing (an append-only input or an aggregate's groups).
fn live_rows(side: &StreamNode, expiring: bool) -> String {
    let mut tables = Vec::new();
    side.collect_sources(&mut tables);
    let keyed: Vec<String> = tables
        .iter()
        .filter(|t| t.is_changelog() && !t.primary_key.is_empty())
        .map(|t| format!("{} (one per {})", t.name, t.primary_key.join(", ")))
        .collect();
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    if side.is_updating() && !keyed.is_empty() && keyed.len() == tables.len() {
        keyed.join(", ")
    } else if side.is_updating() {
        format!("{} (one per group of the input's result)", names.join(", "))
    } else if expiring {
        format!("{} (append-only: every row)", names.join(", "))
    } else {
        format!(
            "{} (append-only: every row, for the life of the job)",
            names.join(", ")
        )
    }
}

/// A signed duration for plans: `-10s`, `0s`, `5m`.
fn format_signed(ms: i64) -> String {
    match ms {
        0 => "0s".to_string(),
        ms if ms < 0 => format!("-{}", format_duration(-ms)),
        ms => format_duration(ms),
    }
}

impl fmt::Display for StreamPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.sink {
            Some(sink) => {
                writeln!(
                    f,
                    "Sink: {} (connector={})",
                    sink.name,
                    sink.connector().unwrap_or("?")
                )?;
                self.root.fmt_tree(f, 1)
            }
            None => self.root.fmt_tree(f, 0),
        }
    }
}
