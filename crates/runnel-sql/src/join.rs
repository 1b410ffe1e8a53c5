//! Stream-stream joins: finding what bounds a join's state in its `ON` clause.
//!
//! An interval join's condition relates the two sides' time columns, in any of the forms
//! users write (`l.ts BETWEEN r.ts - INTERVAL '10' SECOND AND r.ts`, `l.ts >= r.ts - ...
//! AND l.ts <= r.ts + ...`, `>`/`<`, either side first). Each such comparison is reduced
//! to a bound on `left.time - right.time`; the rest of the condition stays a filter.

use datafusion::common::{Column, DFSchema};
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};

use crate::catalog::is_timestamp;

/// What an interval join's `ON` filter bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct IntervalBounds {
    /// Index of the time column in the left / right schema.
    pub left_time: usize,
    pub right_time: usize,
    /// `lower <= left.time - right.time <= upper`, in ms.
    pub lower_ms: i64,
    pub upper_ms: i64,
    /// The conditions that are not time bounds.
    pub residual: Option<Expr>,
}

/// A time column of one side plus a constant offset: `ts`, `ts + INTERVAL ..`, `ts - ..`.
fn column_plus_offset(expr: &Expr) -> Option<(&Column, i64)> {
    match expr {
        Expr::Column(c) => Some((c, 0)),
        Expr::Cast(cast) => column_plus_offset(&cast.expr),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (column, offset) = column_plus_offset(left)?;
            let ms = match right.as_ref() {
                Expr::Literal(value, _) => crate::planner::scalar_interval_ms(value)?,
                _ => return None,
            };
            match op {
                Operator::Plus => Some((column, offset + ms)),
                Operator::Minus => Some((column, offset - ms)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Which side a time column belongs to, and its index there.
fn side_of(column: &Column, left: &DFSchema, right: &DFSchema) -> Option<(bool, usize)> {
    let timestamp = |schema: &DFSchema, i: usize| is_timestamp(schema.field(i).data_type());
    if let Ok(i) = left.index_of_column(column) {
        return timestamp(left, i).then_some((true, i));
    }
    if let Ok(i) = right.index_of_column(column) {
        return timestamp(right, i).then_some((false, i));
    }
    None
}

/// Reads the time bounds of a join filter over `left` and `right`. `None` when the filter
/// bounds `left.time - right.time` on one end or none.
pub fn interval_bounds(filter: &Expr, left: &DFSchema, right: &DFSchema) -> Option<IntervalBounds> {
    let mut time: Option<(usize, usize)> = None;
    let (mut lower, mut upper): (Option<i64>, Option<i64>) = (None, None);
    let mut residual = Vec::new();
    // `a op b` as a bound on left.time - right.time, if it is one.
    let mut bound = |a: &Expr, op: Operator, b: &Expr| -> bool {
        let (Some((ca, oa)), Some((cb, ob))) = (column_plus_offset(a), column_plus_offset(b))
        else {
            return false;
        };
        let (Some((a_left, ia)), Some((b_left, ib))) =
            (side_of(ca, left, right), side_of(cb, left, right))
        else {
            return false;
        };
        if a_left == b_left {
            return false;
        }
        // Normalize to `left + l_off op right + r_off`.
        let (li, ri, l_off, r_off, op) = if a_left {
            (ia, ib, oa, ob, op)
        } else {
            let flipped = match op {
                Operator::Gt => Operator::Lt,
                Operator::GtEq => Operator::LtEq,
                Operator::Lt => Operator::Gt,
                Operator::LtEq => Operator::GtEq,
                other => other,
            };
            (ib, ia, ob, oa, flipped)
        };
        if time.is_some_and(|t| t != (li, ri)) {
            return false; // bounds on another pair of columns: leave them as a filter
        }
        time = Some((li, ri));
        // left - right op r_off - l_off
        let c = r_off - l_off;
        let mut tighten_lower = |v: i64| lower = Some(lower.map_or(v, |l: i64| l.max(v)));
        match op {
            Operator::GtEq => tighten_lower(c),
            Operator::Gt => tighten_lower(c + 1),
            Operator::Eq => {
                tighten_lower(c);
                upper = Some(upper.map_or(c, |u| u.min(c)));
            }
            Operator::LtEq => upper = Some(upper.map_or(c, |u| u.min(c))),
            Operator::Lt => upper = Some(upper.map_or(c - 1, |u| u.min(c - 1))),
            _ => return false,
        }
        true
    };
    for conjunct in split_conjunction(filter) {
        let taken = match conjunct {
            Expr::BinaryExpr(BinaryExpr {
                left: a,
                op,
                right: b,
            }) => bound(a, *op, b),
            Expr::Between(between) if !between.negated => {
                let low = bound(&between.expr, Operator::GtEq, &between.low);
                let high = bound(&between.expr, Operator::LtEq, &between.high);
                low && high
            }
            _ => false,
        };
        if !taken {
            residual.push(conjunct.clone());
        }
    }
    let (left_time, right_time) = time?;
    Some(IntervalBounds {
        left_time,
        right_time,
        lower_ms: lower?,
        upper_ms: upper?,
        residual: conjunction(residual),
    })
}
