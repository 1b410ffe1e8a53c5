//! Planning `OVER` windows on a stream: when a row's values are final, and what must be
//! kept to compute later rows' values.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::Expr;

use crate::catalog::is_timestamp;
use crate::error::{Result, SqlError};
use crate::lineage::is_window_bound;
use crate::plan::OverReadiness;
use crate::window::WINDOW_END;

use super::rewrite::scalar_interval_ms;

/// How rows of an OVER window become final on a stream (see [`OverReadiness`]); refuses
/// window specifications whose state a stream could not bound.
pub(super) fn over_readiness(
    window: &datafusion::logical_expr::logical_plan::Window,
) -> Result<OverReadiness> {
    use datafusion::logical_expr::expr::WindowFunction;
    use datafusion::logical_expr::{WindowFrameBound, WindowFrameUnits};
    const HINT: &str =
        "an OVER window on a stream needs ORDER BY its time attribute with a bounded frame \
        ending at the current row (RANGE BETWEEN INTERVAL '5' MINUTE PRECEDING AND CURRENT ROW, or \
        ROWS BETWEEN 10 PRECEDING AND CURRENT ROW), or PARTITION BY window_start, window_end \
        over a windowed input (window Top-N), or ROW_NUMBER() filtered by WHERE rn <= N (Top-N)";
    let unsupported = |reason: String| SqlError::Unsupported(format!("{reason}: {HINT}"));
    let input = &window.input;
    let functions: Vec<&WindowFunction> = window
        .window_expr
        .iter()
        .map(|e| {
            let inner = match e {
                Expr::Alias(a) => a.expr.as_ref(),
                other => other,
            };
            match inner {
                Expr::WindowFunction(f) => Ok(f.as_ref()),
                other => Err(unsupported(format!("window expression {other}"))),
            }
        })
        .collect::<Result<_>>()?;
    // Window Top-N: partitioned by a window's bounds, final when the window is.
    let window_end = functions.iter().find_map(|f| {
        f.params.partition_by.iter().find_map(|e| match e {
            Expr::Column(c) if is_window_bound(input, e, WINDOW_END) => {
                input.schema().index_of_column(c).ok()
            }
            _ => None,
        })
    });
    if let Some(window_end) = window_end {
        if functions.iter().all(|f| {
            f.params
                .partition_by
                .iter()
                .any(|e| is_window_bound(input, e, WINDOW_END))
        }) {
            return Ok(OverReadiness::WindowEnd { window_end });
        }
    }
    let mut time_column = None;
    let (mut range_ms, mut rows): (Option<i64>, Option<u64>) = (None, None);
    for f in &functions {
        let order = match f.params.order_by.as_slice() {
            [order] if order.asc => order,
            [] => return Err(unsupported(format!("{} without ORDER BY", f.fun))),
            [order] => {
                return Err(unsupported(format!(
                    "{} ordered by {} descending",
                    f.fun, order.expr
                )))
            }
            _ => return Err(unsupported(format!("{} ordered by several columns", f.fun))),
        };
        let Expr::Column(column) = &order.expr else {
            return Err(unsupported(format!("ORDER BY {}", order.expr)));
        };
        let index = input.schema().index_of_column(column)?;
        if !is_timestamp(input.schema().field(index).data_type()) {
            return Err(unsupported(format!(
                "ORDER BY {column} (not a time attribute)"
            )));
        }
        if time_column.is_some_and(|t| t != index) {
            return Err(unsupported(
                "OVER windows ordered by different columns".into(),
            ));
        }
        time_column = Some(index);
        let frame = &f.params.window_frame;
        if frame.end_bound != WindowFrameBound::CurrentRow {
            return Err(unsupported(format!("frame end {}", frame.end_bound)));
        }
        let WindowFrameBound::Preceding(value) = &frame.start_bound else {
            return Err(unsupported(format!("frame start {}", frame.start_bound)));
        };
        match frame.units {
            WindowFrameUnits::Rows => match value {
                ScalarValue::UInt64(Some(n)) => rows = Some(rows.unwrap_or(0).max(*n)),
                _ => return Err(unsupported("ROWS BETWEEN UNBOUNDED PRECEDING".into())),
            },
            WindowFrameUnits::Range => match scalar_interval_ms(value) {
                Some(ms) => range_ms = Some(range_ms.unwrap_or(0).max(ms)),
                None if value.is_null() => {
                    return Err(unsupported("RANGE BETWEEN UNBOUNDED PRECEDING".into()))
                }
                None => return Err(unsupported(format!("RANGE frame of {value}"))),
            },
            WindowFrameUnits::Groups => return Err(unsupported("GROUPS frames".into())),
        }
    }
    let time_column = time_column.ok_or_else(|| unsupported("no window function".into()))?;
    Ok(OverReadiness::EventTime {
        time_column,
        range_ms,
        rows,
    })
}
