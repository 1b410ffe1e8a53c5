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

/// How rows are assigned to windows. Windows are `[start, end)` in event time, aligned
/// to the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WindowKind {
    /// Fixed-size, non-overlapping windows: each row is in exactly one.
    Tumble { size_ms: i64 },
    /// Windows of `size_ms` starting every `slide_ms` (Flink's `HOP(..., slide, size)`):
    /// each row is in about `size / slide` of them. The size need not be a multiple of the slide.
    Hop { slide_ms: i64, size_ms: i64 },
    /// Windows growing by `step_ms` from the start of each `size_ms` period
    /// (Flink's `CUMULATE(..., step, size)`): `[s, s + step)`, `[s, s + 2 step)`, ... `[s, s + size)`.
    Cumulate { step_ms: i64, size_ms: i64 },
    /// Sessions per partition key (Flink's `SESSION(TABLE t PARTITION BY k, ..., gap)`):
    /// rows less than `gap_ms` apart are in one session `[first row, last row + gap)`.
    /// Sessions merge when a row bridges two, so they are known only when they close.
    Session { gap_ms: i64 },
}

impl WindowKind {
    /// Whether `name` is a windowing table function's name (of any kind, built or not).
    pub fn is_window_function(name: &str) -> bool {
        ["TUMBLE", "HOP", "CUMULATE", "SESSION"]
            .iter()
            .any(|f| f.eq_ignore_ascii_case(name))
    }

    /// Calls `f(start, end)` for every window holding an event at `ts_ms`. For a session
    /// that is the row's own session `[ts, ts + gap)`, before any merging.
    pub fn for_each_window(&self, ts_ms: i64, mut f: impl FnMut(i64, i64)) {
        match *self {
            WindowKind::Tumble { size_ms } => {
                let start = ts_ms - ts_ms.rem_euclid(size_ms);
                f(start, start + size_ms)
            }
            WindowKind::Hop { slide_ms, size_ms } => {
                let mut start = ts_ms - ts_ms.rem_euclid(slide_ms);
                while start + size_ms > ts_ms {
                    f(start, start + size_ms);
                    start -= slide_ms;
                }
            }
            WindowKind::Cumulate { step_ms, size_ms } => {
                let start = ts_ms - ts_ms.rem_euclid(size_ms);
                let mut end = ts_ms - ts_ms.rem_euclid(step_ms) + step_ms;
                while end <= start + size_ms {
                    f(start, end);
                    end += step_ms;
                }
            }
            WindowKind::Session { gap_ms } => f(ts_ms, ts_ms + gap_ms),
        }
    }

    /// Whether each row belongs to exactly one window.
    pub fn is_tumbling(&self) -> bool {
        matches!(self, WindowKind::Tumble { .. })
    }

    /// The largest window size in milliseconds (a session's gap: sessions have no bound).
    pub fn size_ms(&self) -> i64 {
        match *self {
            WindowKind::Tumble { size_ms }
            | WindowKind::Hop { size_ms, .. }
            | WindowKind::Cumulate { size_ms, .. } => size_ms,
            WindowKind::Session { gap_ms } => gap_ms,
        }
    }
}

impl fmt::Display for WindowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WindowKind::Tumble { size_ms } => {
                write!(f, "TUMBLE(size={})", format_duration(size_ms))
            }
            WindowKind::Hop { slide_ms, size_ms } => write!(
                f,
                "HOP(slide={}, size={})",
                format_duration(slide_ms),
                format_duration(size_ms)
            ),
            WindowKind::Cumulate { step_ms, size_ms } => write!(
                f,
                "CUMULATE(step={}, size={})",
                format_duration(step_ms),
                format_duration(size_ms)
            ),
            WindowKind::Session { gap_ms } => {
                write!(f, "SESSION(gap={})", format_duration(gap_ms))
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
    /// Indexes in `input`'s schema of a session window's `PARTITION BY` columns (empty:
    /// one session stream for all rows; always empty for other kinds).
    pub partition_keys: Vec<usize>,
    /// Indexes in `input`'s schema of columns kept even if no consumer reads them (the
    /// late-data sink's columns: late rows leave the plan here).
    pub retained: Vec<usize>,
    schema: DFSchemaRef,
}

impl WindowTvf {
    /// Builds the node; `time_column` must be a TIMESTAMP or TIMESTAMP_LTZ column of `input`.
    pub fn try_new(
        input: LogicalPlan,
        kind: WindowKind,
        time_column: usize,
        partition_keys: Vec<usize>,
    ) -> DFResult<Self> {
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
        for name in [WINDOW_START, WINDOW_END, WINDOW_TIME] {
            if input_schema.fields().iter().any(|f| f.name() == name) {
                return datafusion::common::plan_err!(
                    "the window function's input already has a column named {name}; rename it \
                     (for cascading windows: SELECT window_start AS inner_start, window_time AS rowtime, ...)"
                );
            }
        }
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
            partition_keys,
            retained: Vec::new(),
            schema: Arc::new(schema),
        })
    }

    /// The same node, also keeping the input columns named in `names`.
    pub fn retaining(&self, names: &[String]) -> Self {
        let mut node = self.clone();
        node.retained = self
            .input
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| names.contains(f.name()))
            .map(|(i, _)| i)
            .collect();
        node
    }
}

impl PartialOrd for WindowTvf {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        let key = |t: &Self| {
            (
                t.kind,
                t.time_column,
                t.partition_keys.clone(),
                t.retained.clone(),
            )
        };
        match key(self).cmp(&key(other)) {
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
        )?;
        if !self.partition_keys.is_empty() {
            let names: Vec<&str> = self
                .partition_keys
                .iter()
                .map(|&i| self.input.schema().field(i).name().as_str())
                .collect();
            write!(f, " partition by {}", names.join(", "))?;
        }
        Ok(())
    }

    /// The input columns the node needs: the ones its consumers use, plus the time
    /// column and session keys. Lets DataFusion prune what no operator reads, so windowed
    /// operators (which may hold rows) carry only the columns that matter.
    fn necessary_children_exprs(&self, output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        let inputs = self.input.schema().fields().len();
        let mut needed: Vec<usize> = output_columns
            .iter()
            .copied()
            .filter(|&i| i < inputs)
            .chain(std::iter::once(self.time_column))
            .chain(self.partition_keys.iter().copied())
            .chain(self.retained.iter().copied())
            .collect();
        needed.sort_unstable();
        needed.dedup();
        Some(vec![needed])
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> DFResult<Self> {
        let input = inputs.swap_remove(0);
        // The new input may have fewer columns (pruned): find ours again by name.
        let old = self.input.schema();
        let locate = |index: usize| {
            let (qualifier, field) = old.qualified_field(index);
            input
                .schema()
                .index_of_column_by_name(qualifier, field.name())
                .ok_or_else(|| {
                    datafusion::error::DataFusionError::Plan(format!(
                        "window input lost its column {}",
                        field.name()
                    ))
                })
        };
        let time_column = locate(self.time_column)?;
        let partition_keys = self
            .partition_keys
            .iter()
            .map(|&k| locate(k))
            .collect::<DFResult<Vec<_>>>()?;
        let retained = self
            .retained
            .iter()
            .map(|&k| locate(k))
            .collect::<DFResult<Vec<_>>>()?;
        let mut node = WindowTvf::try_new(input, self.kind, time_column, partition_keys)?;
        node.retained = retained;
        Ok(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(kind: WindowKind, ts: i64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        kind.for_each_window(ts, |s, e| out.push((s, e)));
        out.sort();
        out
    }

    #[test]
    fn tumbling_windows_are_aligned_and_handle_negative_times() {
        let w = WindowKind::Tumble { size_ms: 300_000 };
        assert_eq!(windows(w, 0), [(0, 300_000)]);
        assert_eq!(windows(w, 299_999), [(0, 300_000)]);
        assert_eq!(windows(w, 300_000), [(300_000, 600_000)]);
        assert_eq!(windows(w, -1), [(-300_000, 0)]);
        assert_eq!(format_duration(300_000), "5m");
        assert_eq!(format_duration(1_500), "1500ms");
    }

    #[test]
    fn hopping_windows_cover_every_overlap_even_when_size_is_not_a_multiple_of_slide() {
        let w = WindowKind::Hop {
            slide_ms: 4,
            size_ms: 10,
        };
        assert_eq!(windows(w, 9), [(0, 10), (4, 14), (8, 18)]);
        assert_eq!(windows(w, 10), [(4, 14), (8, 18)]);
        assert_eq!(windows(w, 12), [(4, 14), (8, 18), (12, 22)]);
        let w = WindowKind::Hop {
            slide_ms: 5,
            size_ms: 10,
        };
        assert_eq!(windows(w, 5), [(0, 10), (5, 15)]);
    }

    #[test]
    fn cumulating_windows_grow_by_step_within_their_period() {
        let w = WindowKind::Cumulate {
            step_ms: 2,
            size_ms: 6,
        };
        assert_eq!(windows(w, 0), [(0, 2), (0, 4), (0, 6)]);
        assert_eq!(windows(w, 3), [(0, 4), (0, 6)]);
        assert_eq!(windows(w, 5), [(0, 6)]);
        assert_eq!(windows(w, 6), [(6, 8), (6, 10), (6, 12)]);
    }
}
