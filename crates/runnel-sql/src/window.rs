//! Windowing table functions in the logical plan: the [`WindowTvf`] extension node and the
//! [`WindowKind`]s it can assign.
//!
//! Every window syntax (Flink's `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), size))`, the short
//! `FROM TUMBLE(t, ts, size)`) is planned into this one node, so the streaming rewrite has
//! one shape to match: an `Aggregate` grouping by a `WindowTvf`'s bounds is a window aggregate.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::error::Result as DFResult;
use datafusion::logical_expr::{Expr, LogicalPlan, UserDefinedLogicalNodeCore};

/// Name of the column holding a window's inclusive start.
pub const WINDOW_START: &str = "window_start";
/// Name of the column holding a window's exclusive end.
pub const WINDOW_END: &str = "window_end";
/// Name of the column holding a window's time attribute (`window_end - 1ms`).
pub const WINDOW_TIME: &str = "window_time";

/// How rows are assigned to windows. Windows are `[start, end)` in event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WindowKind {
    /// Fixed-size, non-overlapping windows aligned to the epoch: each row is in exactly one.
    Tumble { size_ms: i64 },
}

impl WindowKind {
    /// Whether `name` is a windowing table function's name (of any kind, built or not).
    pub fn is_window_function(name: &str) -> bool {
        ["TUMBLE", "HOP", "CUMULATE", "SESSION"]
            .iter()
            .any(|f| f.eq_ignore_ascii_case(name))
    }

    /// Start of the window holding an event at `ts_ms` (tumbling windows).
    pub fn window_start(&self, ts_ms: i64) -> i64 {
        match self {
            WindowKind::Tumble { size_ms } => ts_ms - ts_ms.rem_euclid(*size_ms),
        }
    }

    /// Size of each window in milliseconds.
    pub fn size_ms(&self) -> i64 {
        match self {
            WindowKind::Tumble { size_ms } => *size_ms,
        }
    }
}

impl fmt::Display for WindowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WindowKind::Tumble { size_ms } => {
                write!(f, "TUMBLE(size={})", format_duration(*size_ms))
            }
        }
    }
}

/// `300000` → `5m`, for plans and messages.
pub fn format_duration(ms: i64) -> String {
    const UNITS: [(i64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ];
    for (unit, suffix) in UNITS {
        if ms != 0 && ms % unit == 0 {
            return format!("{}{suffix}", ms / unit);
        }
    }
    format!("{ms}ms")
}

/// A windowing table function applied to `input`: its output is every input column plus
/// `window_start`, `window_end` and `window_time`, typed like the time column.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WindowTvf {
    pub input: LogicalPlan,
    pub kind: WindowKind,
    /// Index of the event-time column in `input`'s schema.
    pub time_column: usize,
    schema: DFSchemaRef,
}

impl WindowTvf {
    /// Builds the node; `time_column` must be a TIMESTAMP or TIMESTAMP_LTZ column of `input`.
    pub fn try_new(input: LogicalPlan, kind: WindowKind, time_column: usize) -> DFResult<Self> {
        let input_schema = input.schema();
        let time_field = input_schema.field(time_column);
        let tz = match time_field.data_type() {
            DataType::Timestamp(_, tz) => tz.clone(),
            other => {
                return datafusion::common::plan_err!(
                    "the window time column '{}' must be a TIMESTAMP or TIMESTAMP_LTZ, not {other}",
                    time_field.name()
                )
            }
        };
        let bound = DataType::Timestamp(TimeUnit::Millisecond, tz);
        let window_fields = DFSchema::from_unqualified_fields(
            vec![
                Field::new(WINDOW_START, bound.clone(), false),
                Field::new(WINDOW_END, bound.clone(), false),
                Field::new(WINDOW_TIME, bound, false),
            ]
            .into(),
            Default::default(),
        )?;
        let mut schema = input_schema.as_ref().clone();
        schema.merge(&window_fields);
        Ok(Self {
            input,
            kind,
            time_column,
            schema: Arc::new(schema),
        })
    }
}

impl PartialOrd for WindowTvf {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match (self.kind, self.time_column).cmp(&(other.kind, other.time_column)) {
            Ordering::Equal => self.input.partial_cmp(&other.input),
            ord => Some(ord),
        }
    }
}

impl UserDefinedLogicalNodeCore for WindowTvf {
    fn name(&self) -> &str {
        "WindowTvf"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    /// Filters on the input's columns may move below the window; filters on the window
    /// bounds may not.
    fn prevent_predicate_push_down_columns(&self) -> std::collections::HashSet<String> {
        [WINDOW_START, WINDOW_END, WINDOW_TIME]
            .into_iter()
            .map(String::from)
            .collect()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "WindowTvf: {} on {}",
            self.kind,
            self.input.schema().field(self.time_column).name()
        )
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> DFResult<Self> {
        let input = inputs.swap_remove(0);
        WindowTvf::try_new(input, self.kind, self.time_column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tumbling_start_is_aligned_and_handles_negative_times() {
        let w = WindowKind::Tumble { size_ms: 300_000 };
        assert_eq!(w.window_start(0), 0);
        assert_eq!(w.window_start(299_999), 0);
        assert_eq!(w.window_start(300_000), 300_000);
        assert_eq!(w.window_start(-1), -300_000);
        assert_eq!(format_duration(300_000), "5m");
        assert_eq!(format_duration(1_500), "1500ms");
    }
}
