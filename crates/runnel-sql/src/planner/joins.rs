//! Planning joins of two streams: window joins (both sides' windows equated), interval
//! joins (a time bound in the `ON` clause), unbounded joins bounded by
//! `table.exec.state.ttl`, and regular joins of inputs whose rows change.

use datafusion::common::{DFSchema, ScalarValue};
use datafusion::error::Result as DFResult;
use datafusion::logical_expr::{Expr, LogicalPlan};

use crate::catalog::is_timestamp;
use crate::error::{Result, SqlError};
use crate::lineage::{event_time_column, is_window_bound, window_bound};
use crate::plan::{IntervalJoinNode, RegularJoinNode, StreamNode, WindowJoinNode};
use crate::updating::append_only;
use crate::window::{WINDOW_END, WINDOW_START};

use super::rewrite::to_stream;

/// A join of two streams without a time bound, bounded by `ttl_ms` on each side's
/// event-time column; `None` when the join is bounded already or a side has no event time.
pub(super) fn bound_by_ttl(
    join: &datafusion::logical_expr::logical_plan::Join,
    ttl_ms: i64,
) -> DFResult<Option<datafusion::logical_expr::logical_plan::Join>> {
    use datafusion::logical_expr::{lit, JoinType};
    if !matches!(
        join.join_type,
        JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full
    ) {
        return Ok(None);
    }
    let bounded = join.filter.as_ref().is_some_and(|f| {
        crate::join::interval_bounds(f, join.left.schema(), join.right.schema()).is_some()
    });
    let windowed = join
        .on
        .iter()
        .any(|(l, _)| is_window_bound(&join.left, l, WINDOW_END));
    // A changelog's rows are joined while they live, not within a time of each other.
    let updating = |plan: &LogicalPlan| to_stream(plan).is_ok_and(|node| node.is_updating());
    if bounded || windowed || updating(&join.left) || updating(&join.right) {
        return Ok(None);
    }
    let (Some(left), Some(right)) = (
        event_time_column(&join.left),
        event_time_column(&join.right),
    ) else {
        return Ok(None);
    };
    let ttl = lit(ScalarValue::new_interval_mdn(0, 0, ttl_ms * 1_000_000));
    let (l, r) = (Expr::Column(left), Expr::Column(right));
    let bound = l.clone().between(r.clone() - ttl.clone(), r + ttl);
    let filter = match &join.filter {
        Some(filter) => filter.clone().and(bound),
        None => bound,
    };
    let mut bounded = join.clone();
    bounded.filter = Some(filter);
    Ok(Some(bounded))
}

/// A join equating both sides' `window_start` and `window_end` is a window join; `None`
/// if the join is not one.
pub(super) fn window_join(
    join: &datafusion::logical_expr::logical_plan::Join,
) -> Result<Option<StreamNode>> {
    let bound = |plan: &LogicalPlan, e: &Expr| -> Option<(&'static str, usize)> {
        let Expr::Column(c) = e else { return None };
        let (_, bound) = window_bound(plan, c)?;
        let index = plan.schema().index_of_column(c).ok()?;
        Some((bound, index))
    };
    let mut ends = None;
    let mut starts = false;
    for (l, r) in &join.on {
        if let (Some((ln, li)), Some((rn, ri))) = (bound(&join.left, l), bound(&join.right, r)) {
            match (ln, rn) {
                (WINDOW_END, WINDOW_END) => ends = Some((li, ri)),
                (WINDOW_START, WINDOW_START) => starts = true,
                _ => {}
            }
        }
    }
    let Some((left_window_end, right_window_end)) = ends.filter(|_| starts) else {
        return Ok(None);
    };
    use datafusion::logical_expr::JoinType;
    // Semi and anti joins come from the optimizer (IN / EXISTS, or an inner join whose
    // other side is unique on the keys); mark joins have no streaming meaning yet.
    if matches!(join.join_type, JoinType::LeftMark | JoinType::RightMark) {
        return Err(SqlError::Unsupported(format!(
            "{} window joins",
            join.join_type
        )));
    }
    let (left_keys, right_keys) = join.on.iter().cloned().unzip();
    Ok(Some(StreamNode::WindowJoin(WindowJoinNode {
        left: Box::new(append_only(to_stream(&join.left)?, "a window join")?),
        right: Box::new(append_only(to_stream(&join.right)?, "a window join")?),
        left_schema: join.left.schema().clone(),
        right_schema: join.right.schema().clone(),
        left_keys,
        right_keys,
        left_window_end,
        right_window_end,
        join_type: join.join_type,
        residual: join.filter.clone(),
        schema: join.schema.clone(),
    })))
}

/// Plans a join of two inputs at least one of which is updating (`left`, `right`): a
/// regular join, whose state holds each side's live rows.
pub(super) fn regular_join(
    join: &datafusion::logical_expr::logical_plan::Join,
    left: StreamNode,
    right: StreamNode,
) -> Result<StreamNode> {
    use datafusion::logical_expr::JoinType;
    if !matches!(
        join.join_type,
        JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full
    ) {
        return Err(SqlError::Unsupported(format!(
            "{} joins of changing tables (inner and outer joins run)",
            join.join_type
        )));
    }
    if join.on.is_empty() {
        return Err(SqlError::Unsupported(
            "a join of changing tables needs equal keys (ON a.id = b.id): without them every \
             change would meet every row of the other side"
                .into(),
        ));
    }
    let (left_keys, right_keys) = join.on.iter().cloned().unzip();
    // Append-only inputs whose rows bound each other's time row by row free them as the
    // watermark passes those bounds.
    let state_ttl = (!left.is_updating() && !right.is_updating())
        .then(|| row_time_bounds(join))
        .flatten()
        .map(|(left, right)| (left, right, 0));
    Ok(StreamNode::RegularJoin(RegularJoinNode {
        left: Box::new(left),
        right: Box::new(right),
        left_schema: join.left.schema().clone(),
        right_schema: join.right.schema().clone(),
        left_keys,
        right_keys,
        join_type: join.join_type,
        residual: join.filter.clone(),
        schema: join.schema.clone(),
        state_ttl,
    }))
}

/// A join condition bounding one side's event time by two columns of the other side's
/// row — `b.ts BETWEEN a.ts AND a.expires` (Nexmark q4, q9), `a.ts` and `b.ts` the sides'
/// event-time columns: no row of `b` can meet an `a` row once the watermark passes its
/// `expires`, nor an `a` row arriving later (whose `ts` is past the watermark) once it
/// passes `b.ts`. Returns the column each side's rows are dropped by (the left's, the
/// right's, as indexes into their schemas); `None` when the condition bounds neither.
pub(super) fn row_time_bounds(
    join: &datafusion::logical_expr::logical_plan::Join,
) -> Option<(usize, usize)> {
    use datafusion::logical_expr::{BinaryExpr, Operator};
    let filter = join.filter.as_ref()?;
    let left_time = event_time_column(&join.left)?;
    let right_time = event_time_column(&join.right)?;
    // Each conjunct as `low <= high` over plain columns.
    let mut at_most: Vec<(datafusion::common::Column, datafusion::common::Column)> = Vec::new();
    for conjunct in datafusion::logical_expr::utils::split_conjunction(filter) {
        match conjunct {
            Expr::Between(between) if !between.negated => {
                if let (Expr::Column(value), Expr::Column(low), Expr::Column(high)) = (
                    between.expr.as_ref(),
                    between.low.as_ref(),
                    between.high.as_ref(),
                ) {
                    at_most.push((low.clone(), value.clone()));
                    at_most.push((value.clone(), high.clone()));
                }
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                if let (Expr::Column(l), Expr::Column(r)) = (left.as_ref(), right.as_ref()) {
                    match op {
                        Operator::LtEq | Operator::Lt => at_most.push((l.clone(), r.clone())),
                        Operator::GtEq | Operator::Gt => at_most.push((r.clone(), l.clone())),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let has = |low: &datafusion::common::Column, high: &datafusion::common::Column| {
        at_most.iter().any(|(l, h)| l == low && h == high)
    };
    let index = |plan: &LogicalPlan, column: &datafusion::common::Column| {
        plan.schema().index_of_column(column).ok()
    };
    // The other side's bound columns: a timestamp column of that side, not its own time.
    let upper_of = |time: &datafusion::common::Column, side: &LogicalPlan| {
        at_most.iter().find_map(|(low, high)| {
            (low == time && index(side, high).is_some() && is_timestamp_column(side, high))
                .then(|| high.clone())
        })
    };
    // Right rows bounded by left columns: right.ts >= left.ts, right.ts <= left.x.
    if has(&left_time, &right_time) {
        if let Some(upper) = upper_of(&right_time, &join.left) {
            return Some((index(&join.left, &upper)?, index(&join.right, &right_time)?));
        }
    }
    // The mirror: left.ts >= right.ts, left.ts <= right.x.
    if has(&right_time, &left_time) {
        if let Some(upper) = upper_of(&left_time, &join.right) {
            return Some((index(&join.left, &left_time)?, index(&join.right, &upper)?));
        }
    }
    None
}

/// Whether `column` of `plan` holds timestamps.
fn is_timestamp_column(plan: &LogicalPlan, column: &datafusion::common::Column) -> bool {
    use datafusion::common::ExprSchema;
    plan.schema()
        .field_from_column(column)
        .is_ok_and(|f| is_timestamp(f.data_type()))
}

/// Plans a join of two append-only streams (`left`, `right`); only joins whose time
/// bounds keep state finite run.
pub(super) fn interval_join(
    join: &datafusion::logical_expr::logical_plan::Join,
    left: StreamNode,
    right: StreamNode,
) -> Result<StreamNode> {
    use datafusion::logical_expr::JoinType;
    const HINT: &str = "a join of two streams needs equal keys and a time bound on both ends, \
        e.g. ON a.id = b.id AND a.ts BETWEEN b.ts - INTERVAL '10' SECOND AND b.ts";
    if !matches!(
        join.join_type,
        JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full
    ) {
        return Err(SqlError::Unsupported(format!(
            "{} joins of two streams (inner and outer interval joins run)",
            join.join_type
        )));
    }
    // The optimizer may turn an exact time condition (`l.ts = r.ts + INTERVAL ...`) into
    // an equi-join key: such pairs are time bounds, not keys.
    use datafusion::logical_expr::ExprSchemable;
    let is_time = |e: &Expr, schema: &DFSchema| e.get_type(schema).is_ok_and(|t| is_timestamp(&t));
    let (time_pairs, key_pairs): (Vec<_>, Vec<_>) = join
        .on
        .iter()
        .cloned()
        .partition(|(l, r)| is_time(l, join.left.schema()) && is_time(r, join.right.schema()));
    if key_pairs.is_empty() {
        return Err(SqlError::Unsupported(format!(
            "a join without equal keys: {HINT}"
        )));
    }
    let condition = datafusion::logical_expr::utils::conjunction(
        join.filter
            .iter()
            .cloned()
            .chain(time_pairs.into_iter().map(|(l, r)| l.eq(r))),
    );
    let bounds = condition
        .as_ref()
        .and_then(|f| crate::join::interval_bounds(f, join.left.schema(), join.right.schema()));
    let Some(bounds) = bounds else {
        // No time bound: a regular join keeping every row, as Flink's (the plan warns;
        // `runnel.state.unbounded` = 'refuse' refuses it).
        return regular_join(join, left, right);
    };
    if bounds.lower_ms > bounds.upper_ms {
        return Err(SqlError::Plan(format!(
            "the join's time bounds are empty: left - right must be >= {} ms and <= {} ms",
            bounds.lower_ms, bounds.upper_ms
        )));
    }
    let (left_keys, right_keys) = key_pairs.into_iter().unzip();
    Ok(StreamNode::IntervalJoin(IntervalJoinNode {
        left: Box::new(append_only(left, "a join")?),
        right: Box::new(append_only(right, "a join")?),
        left_schema: join.left.schema().clone(),
        right_schema: join.right.schema().clone(),
        left_keys,
        right_keys,
        left_time: bounds.left_time,
        right_time: bounds.right_time,
        lower_ms: bounds.lower_ms,
        upper_ms: bounds.upper_ms,
        join_type: join.join_type,
        residual: bounds.residual,
        schema: join.schema.clone(),
    }))
}
