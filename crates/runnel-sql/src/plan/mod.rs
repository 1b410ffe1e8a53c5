//! [`StreamPlan`]: what the streaming planner hands the runtime — a tree of streaming
//! nodes, each carrying the DataFusion logical expressions it evaluates and the schema
//! they are evaluated against.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::DFSchemaRef;
use datafusion::logical_expr::{Expr, LogicalPlan};

use crate::catalog::TableDef;
use crate::window::WindowKind;

mod explain;

/// A planned continuous query: its operators, and where its rows go.
#[derive(Debug, Clone)]
pub struct StreamPlan {
    pub root: StreamNode,
    /// The table an `INSERT INTO` writes to; `None` for a bare query.
    pub sink: Option<Arc<TableDef>>,
    /// The optimized DataFusion plan it came from (for `EXPLAIN`).
    pub logical: LogicalPlan,
    /// Whether a table the plan scans more than once is read once for every scan
    /// (Flink's `table.optimizer.reuse-source-enabled`, on by default).
    pub reuse_sources: bool,
    /// Whether a larger subtree the plan holds more than once (a view used twice) runs
    /// once for all its uses (Flink's `table.optimizer.reuse-sub-plan-enabled`, on by
    /// default).
    pub reuse_sub_plans: bool,
}

impl StreamPlan {
    /// Schema of the rows the query produces.
    pub fn schema(&self) -> SchemaRef {
        self.root.arrow_schema()
    }

    /// Every source table the plan reads.
    pub fn sources(&self) -> Vec<Arc<TableDef>> {
        let mut out = Vec::new();
        self.root.collect_sources(&mut out);
        out
    }

    /// The operators whose state grows without bound as rows arrive, each said plainly
    /// with what would bound it: a regular join keeping every row of an append-only
    /// input (Flink runs these too; `EXPLAIN`, `validate` and the job's start warn).
    pub fn unbounded_state(&self) -> Vec<String> {
        fn visit(node: &StreamNode, out: &mut Vec<String>) {
            if let StreamNode::RegularJoin(join) = node {
                // Each side by the name its keys carry in the query (`A` of `A.id`), and
                // the tables it reads.
                let sides = [
                    (&join.left, join.left_keys.first()),
                    (&join.right, join.right_keys.first()),
                ];
                let unbounded: Vec<String> = sides
                    .into_iter()
                    .filter(|(side, _)| !side.is_updating())
                    .map(|(side, key)| {
                        let mut tables = Vec::new();
                        side.collect_sources(&mut tables);
                        let mut names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
                        names.dedup();
                        let key = key.map(ToString::to_string).unwrap_or_default();
                        match key.split_once('.') {
                            Some((alias, _)) if names != [alias] => {
                                format!("{alias} (read from {})", names.join(", "))
                            }
                            _ => names.join(", "),
                        }
                    })
                    .collect();
                if join.state_ttl.is_none() && !unbounded.is_empty() {
                    out.push(format!(
                        "the join on [{}] (RegularJoin) keeps every row of {} without bound: \
                         its ON clause has no time bound; add one (AND a.ts BETWEEN b.ts - \
                         INTERVAL '1' HOUR AND b.ts) or SET 'table.exec.state.ttl' = '1 h' \
                         (both inputs need an event-time column)",
                        join.left_keys
                            .iter()
                            .zip(&join.right_keys)
                            .map(|(l, r)| format!("{l} = {r}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        unbounded.join(" and of ")
                    ));
                }
            }
            for input in node.inputs() {
                visit(input, out);
            }
        }
        let mut out = Vec::new();
        visit(&self.root, &mut out);
        out
    }
}

/// One streaming operator and its input.
#[derive(Debug, Clone)]
pub enum StreamNode {
    /// Rows of a table read by its connector, with computed columns and watermarks.
    Source(SourceNode),
    /// Keeps rows where `predicate` is true.
    Filter {
        input: Box<StreamNode>,
        predicate: Expr,
        input_schema: DFSchemaRef,
    },
    /// Computes `exprs` per row.
    Projection {
        input: Box<StreamNode>,
        exprs: Vec<Expr>,
        input_schema: DFSchemaRef,
        schema: DFSchemaRef,
    },
    /// Appends `window_start`, `window_end`, `window_time` to each row. Session windows
    /// hold rows until their session closes (per `partition_keys`, indexes into the input).
    /// With `panes`, a `HOP` row goes to its pane only (the tumbling window of the slide
    /// it falls in; the columns hold the pane's bounds) and the window aggregate above
    /// merges panes into windows.
    WindowAssign {
        input: Box<StreamNode>,
        kind: WindowKind,
        time_column: usize,
        partition_keys: Vec<usize>,
        schema: DFSchemaRef,
        panes: bool,
        /// `table.exec.emit.allow-lateness`: a row is late only once every window it
        /// belongs to ended this long before the watermark.
        allowed_lateness_ms: i64,
    },
    /// Aggregates per window and key; emits each window once the watermark passes its end.
    WindowAggregate(WindowAggregateNode),
    /// SQL window functions (`agg(x) OVER (...)`, `ROW_NUMBER() OVER (...)`) evaluated
    /// once the rows they see are final.
    OverWindow(OverWindowNode),
    /// `UNION ALL`: the rows of every input; the watermark is the minimum of the inputs'.
    Union {
        inputs: Vec<StreamNode>,
        schema: DFSchemaRef,
    },
    /// A stream-stream equi-join bounded in time: rows match when their keys are equal
    /// and `lower <= left.time - right.time <= upper`.
    IntervalJoin(IntervalJoinNode),
    /// A join of two windowed streams on their windows (and keys), emitted when the
    /// watermark closes each window.
    WindowJoin(WindowJoinNode),
    /// A join without a time bound where an input's rows can change (a changelog table,
    /// an unwindowed aggregate): an updating stream of the joined rows.
    RegularJoin(RegularJoinNode),
    /// `GROUP BY keys` without a window: an updating stream, revising a group's row each
    /// time its aggregates change.
    UpdatingAggregate(UpdatingAggregateNode),
    /// A stream joined with a table read whole (`JOIN t FOR SYSTEM_TIME AS OF ...`).
    LookupJoin(LookupJoinNode),
    /// A stream joined with a versioned table's version valid at each row's event time
    /// (`JOIN t FOR SYSTEM_TIME AS OF s.event_time`).
    TemporalJoin(TemporalJoinNode),
    /// `ROW_NUMBER() OVER (PARTITION BY keys ORDER BY ...)` kept to its first `limit`
    /// ranks without a window: an updating stream of each partition's top rows.
    TopN(TopNNode),
    /// The changes of a changelog table with a primary key, made exact (Flink's
    /// `ChangelogNormalize`): the last row of each key is kept, so a change that repeats
    /// it is dropped, an update without its old row gets it (`-U`/`+U`), and a delete
    /// carries the deleted row.
    ChangelogNormalize(ChangelogNormalizeNode),
    /// The changes going into a sink with a primary key, put in order per key (Flink's
    /// `SinkUpsertMaterializer`), for inputs whose changes of one sink key can arrive out
    /// of order (a regular join's subtasks each emit part of them).
    UpsertMaterialize(UpsertMaterializeNode),
}

/// See [`StreamNode::UpsertMaterialize`]. Per sink key it keeps the key's live rows in
/// the order they were added: an addition becomes the key's row (`+I`, or `+U` over the
/// one before); a retraction takes out its own row wherever it is, and only when that was
/// the key's row does anything go out — `+U` of the row added before it, or `-D` when
/// none is left. So a `-D` of a claim's old joined row that arrives after the `+I` of its
/// new one does not delete the claim from the sink.
#[derive(Debug, Clone)]
pub struct UpsertMaterializeNode {
    pub input: Box<StreamNode>,
    /// The sink's primary key, as indexes into the input's (and output's) columns.
    pub keys: Vec<usize>,
}

/// See [`StreamNode::ChangelogNormalize`].
#[derive(Debug, Clone)]
pub struct ChangelogNormalizeNode {
    pub input: Box<StreamNode>,
    /// The primary key's columns, as indexes into the input's (and output's) schema.
    pub keys: Vec<usize>,
    pub schema: DFSchemaRef,
}

/// A lookup join (Flink's `JOIN t FOR SYSTEM_TIME AS OF s.proc_time`): the `table` side
/// is a bounded table, read whole before the stream starts and kept as a hash index on
/// its keys; each stream row is joined with the rows its keys find (inner), or padded
/// with NULLs when none do (left). The output's watermark is the stream's.
#[derive(Debug, Clone)]
pub struct LookupJoinNode {
    pub input: Box<StreamNode>,
    pub table: Box<StreamNode>,
    pub input_schema: DFSchemaRef,
    pub table_schema: DFSchemaRef,
    pub input_keys: Vec<Expr>,
    pub table_keys: Vec<Expr>,
    /// Inner or left.
    pub join_type: datafusion::logical_expr::JoinType,
    /// Other conditions of the `ON` clause, over the joined row.
    pub residual: Option<Expr>,
    pub schema: DFSchemaRef,
}

/// An event-time temporal join (Flink's): each row of the `left` stream meets the
/// version of the versioned table (`right`: a changelog with a primary key and a
/// watermark) valid at the row's event time — the last change of its key at or before
/// that time. A left row waits until both watermarks pass its time, so every version
/// that can apply has arrived; then it is joined (inner: dropped when its key had no
/// live version; left: padded with NULLs) and goes out with its own change kind. Each
/// key's versions are kept from the last one at or before the watermark on.
#[derive(Debug, Clone)]
pub struct TemporalJoinNode {
    pub left: Box<StreamNode>,
    /// The versioned table's changes as they come: every column.
    pub right: Box<StreamNode>,
    pub left_schema: DFSchemaRef,
    /// The versioned table's columns as the join sees (and emits) them.
    pub right_schema: DFSchemaRef,
    /// `right_schema`'s columns, as indexes into `right`'s.
    pub right_columns: Vec<usize>,
    /// Equi-join keys: over `left_schema`, and the versioned table's primary key over
    /// `right`'s schema.
    pub left_keys: Vec<Expr>,
    pub right_keys: Vec<Expr>,
    /// The left's event-time column (the `AS OF` time), in `left_schema`.
    pub left_time: usize,
    /// The versioned table's event-time column, in `right`'s schema.
    pub right_time: usize,
    /// Inner or left.
    pub join_type: datafusion::logical_expr::JoinType,
    /// Other conditions of the `ON` clause, over the joined row.
    pub residual: Option<Expr>,
    pub schema: DFSchemaRef,
}

/// An aggregate without a window. Keeps one row of partial aggregates per group for as
/// long as the job runs; after each input batch, emits the groups whose values changed
/// (`+I` for a new group, `-U`/`+U` for a changed one, `-D` for one whose rows were all
/// retracted). Reads append-only or updating input (then every aggregate must retract).
///
/// With [`fires_at_window_end`](Self::fires_at_window_end) it is the aggregate of a window
/// over an updating input: `-U`/`-D` rows retract from their still-open window, and each
/// window's groups are emitted once (`+I`, append-only) when the watermark reaches the
/// window's end, then freed.
#[derive(Debug, Clone)]
pub struct UpdatingAggregateNode {
    pub input: Box<StreamNode>,
    pub input_schema: DFSchemaRef,
    /// Grouping expressions, in output order.
    pub group_exprs: Vec<Expr>,
    /// DataFusion aggregate function calls, in output order after the groups.
    pub aggr_exprs: Vec<Expr>,
    /// Which of `group_exprs` is `window_end`, when the groups are windows that fire at
    /// their end (see above).
    pub fires_at_window_end: Option<usize>,
    /// With `fires_at_window_end`: how long after firing a window's groups are kept
    /// (`table.exec.emit.allow-lateness`). Above zero, a change arriving for a fired
    /// window updates its rows (`-U`/`+U`, `-D`), so the output is updating.
    pub allowed_lateness_ms: i64,
    /// With `fires_at_window_end`: `table.exec.emit.early-fire.*` — an open window's
    /// changed rows are emitted this often (processing time; 0: after every batch) as
    /// updates (`+I`, then `-U`/`+U`), so the output is updating.
    pub early_fire_delay_ms: Option<i64>,
    /// The input's event-time column, when it has one: what `state_ttl_ms` counts by.
    pub input_time: Option<usize>,
    /// `table.exec.state.ttl`, without a window: a group is freed (silently, as Flink's
    /// state TTL) once the watermark passes the event time of its last change by this
    /// much; a later row starts it afresh. 0: groups live for the life of the job.
    pub state_ttl_ms: i64,
    /// A column of the input holding, in each row, the event time after which no
    /// further row of its group can arrive: the group is freed (silently) once the
    /// watermark passes the largest such time among its rows. Set where a group's rows
    /// all come from one row of a join side that is dropped at that time
    /// ([`crate::planner`]'s `finished_groups`).
    pub finished_after: Option<usize>,
    pub schema: DFSchemaRef,
}

/// Top-N without a window, over an append-only input: per partition the first `limit`
/// rows in `order_by` order (ties: the earlier row first), each with its rank. A row
/// entering the top moves the rows below it down one rank (`-U`/`+U` per moved rank, `+I`
/// for a rank filled for the first time); a row that can no longer enter is dropped at
/// once, so state is at most `limit` rows per partition.
#[derive(Debug, Clone)]
pub struct TopNNode {
    pub input: Box<StreamNode>,
    pub input_schema: DFSchemaRef,
    pub partition_by: Vec<Expr>,
    pub order_by: Vec<datafusion::logical_expr::SortExpr>,
    pub limit: usize,
    /// The input's columns and the rank.
    /// The input's event-time column, when the query reads it: what `state_ttl_ms`
    /// counts by.
    pub input_time: Option<usize>,
    /// `table.exec.state.ttl`: a partition is freed (silently) once the watermark passes
    /// the event time of its last row by this much. 0: partitions live for the job.
    pub state_ttl_ms: i64,
    /// As [`UpdatingAggregateNode::finished_after`], for partitions.
    pub finished_after: Option<usize>,
    pub schema: DFSchemaRef,
}

/// A window join (Flink's): both inputs carry `window_start`/`window_end`, the `ON` clause
/// equates them; a window's rows of both sides are joined once the watermark reaches its
/// end, then freed. Inner, left, right and full outer joins.
#[derive(Debug, Clone)]
pub struct WindowJoinNode {
    pub left: Box<StreamNode>,
    pub right: Box<StreamNode>,
    pub left_schema: DFSchemaRef,
    pub right_schema: DFSchemaRef,
    /// Equi-join keys (the window bounds among them), evaluated on each side's rows.
    pub left_keys: Vec<Expr>,
    pub right_keys: Vec<Expr>,
    /// Index of each side's `window_end` column.
    pub left_window_end: usize,
    pub right_window_end: usize,
    pub join_type: datafusion::logical_expr::JoinType,
    /// Other conditions of the `ON` clause, over the joined row.
    pub residual: Option<Expr>,
    pub schema: DFSchemaRef,
}

/// A regular join (Flink's): each side keeps its live rows (added, not yet retracted)
/// indexed by the join keys, and a change arriving on one side is joined with the other
/// side's live rows at once. Planned when an input is updating, and for a join of two
/// append-only streams without a time bound (whose state then grows without bound, as
/// Flink's: [`StreamPlan::unbounded_state`] says so).
///
/// What goes out: an addition (`+I`/`+U`) emits its joined rows as `+I` (`+U` for an
/// inner join's `+U`); a retraction (`-U`/`-D`) emits `-D` for each joined row it takes
/// away, so an upsert sink deletes the old joined row even when no new one follows. An
/// outer side's row without partners goes out padded with NULLs (`+I`), is retracted
/// (`-D`) when its first partner arrives and comes back when its last one leaves.
/// State: each side's live rows — one per primary key of a changelog table, every row of
/// an append-only input.
#[derive(Debug, Clone)]
pub struct RegularJoinNode {
    pub left: Box<StreamNode>,
    pub right: Box<StreamNode>,
    pub left_schema: DFSchemaRef,
    pub right_schema: DFSchemaRef,
    /// Equi-join keys, evaluated on each side's rows.
    pub left_keys: Vec<Expr>,
    pub right_keys: Vec<Expr>,
    /// Inner, left, right or full outer.
    pub join_type: datafusion::logical_expr::JoinType,
    /// Other conditions of the `ON` clause, over the joined row.
    pub residual: Option<Expr>,
    pub schema: DFSchemaRef,
    /// `table.exec.state.ttl`: each side's event-time column (in its schema), and how long
    /// a live row is kept once the watermark passes its time (0: for as long as it lives).
    /// An expired row is dropped silently, as Flink's state TTL.
    pub state_ttl: Option<(usize, usize, i64)>,
}

impl RegularJoinNode {
    /// Whether the join's rows can change: an input's do, or an outer side's padded rows
    /// are retracted when a partner arrives. An inner join of append-only inputs only
    /// adds rows.
    pub fn emits_changes(&self) -> bool {
        self.left.is_updating()
            || self.right.is_updating()
            || self.join_type != datafusion::logical_expr::JoinType::Inner
    }
}

/// An interval join (Flink's): each side's rows are kept only while a row of the other
/// side can still fall within the bound.
#[derive(Debug, Clone)]
pub struct IntervalJoinNode {
    pub left: Box<StreamNode>,
    pub right: Box<StreamNode>,
    /// Each side's schema as the join sees it (qualified by the query's aliases).
    pub left_schema: DFSchemaRef,
    pub right_schema: DFSchemaRef,
    /// Equi-join keys, evaluated on each side's rows.
    pub left_keys: Vec<Expr>,
    pub right_keys: Vec<Expr>,
    /// Index of each side's time column in its schema.
    pub left_time: usize,
    pub right_time: usize,
    /// Bounds of `left.time - right.time`, in ms, inclusive.
    pub lower_ms: i64,
    pub upper_ms: i64,
    /// Inner, left, right or full outer.
    pub join_type: datafusion::logical_expr::JoinType,
    /// Other conditions of the `ON` clause, over the joined row.
    pub residual: Option<Expr>,
    pub schema: DFSchemaRef,
}

/// `window_function(...) OVER (PARTITION BY ... ORDER BY ...)` on a stream: every input
/// row is emitted once, with the window functions' values appended.
#[derive(Debug, Clone)]
pub struct OverWindowNode {
    pub input: Box<StreamNode>,
    pub input_schema: DFSchemaRef,
    /// DataFusion window function calls, in output order after the input columns.
    pub window_exprs: Vec<Expr>,
    pub readiness: OverReadiness,
    pub schema: DFSchemaRef,
}

/// When a row's window function values are final, and what must be kept to compute
/// later rows' values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverReadiness {
    /// `ORDER BY <time> RANGE|ROWS BETWEEN ... PRECEDING AND CURRENT ROW`: a row is final
    /// once the watermark passes its time; earlier rows are kept while a later row's frame
    /// can still reach them.
    EventTime {
        time_column: usize,
        /// `RANGE BETWEEN INTERVAL ... PRECEDING`: the longest interval, in ms.
        range_ms: Option<i64>,
        /// `ROWS BETWEEN n PRECEDING`: the largest `n`.
        rows: Option<u64>,
    },
    /// `PARTITION BY window_start, window_end` (window Top-N): a window's rows are final
    /// once the watermark reaches its end; nothing is kept after.
    WindowEnd { window_end: usize },
}

/// Reading one table.
#[derive(Debug, Clone)]
pub struct SourceNode {
    pub table: Arc<TableDef>,
    /// Indexes into [`TableDef::schema`] the query uses; `None` for all.
    pub projection: Option<Vec<usize>>,
    pub schema: DFSchemaRef,
    /// The query windows on processing time (`PROCTIME()`): the source's watermarks
    /// follow the processing clock instead of the table's event time.
    pub processing_time: bool,
}

/// A window aggregate: `GROUP BY window_start, window_end, keys...`.
#[derive(Debug, Clone)]
pub struct WindowAggregateNode {
    pub input: Box<StreamNode>,
    pub input_schema: DFSchemaRef,
    /// Grouping expressions, window bounds included, in output order.
    pub group_exprs: Vec<Expr>,
    /// Which of `group_exprs` is the window's end: a window is complete when the
    /// watermark reaches it.
    pub window_end: usize,
    /// Which of `group_exprs` is the window's start.
    pub window_start: usize,
    /// A `HOP` aggregated per pane (see [`StreamNode::WindowAssign`]): each row is
    /// aggregated once, into the pane of the slide it falls in, and each window merges
    /// its `size / slide` panes' partial aggregates when it closes, so the cost per row
    /// does not grow with `size / slide`. Set when the slide divides the size and
    /// nothing between the assignment and the aggregate reads the window columns.
    pub panes: bool,
    /// A `SESSION` aggregated as its sessions close ([`crate::closed_sessions`]): the
    /// assignment below runs in this node's subtask and emits each closed session's rows
    /// in one batch, so each batch is aggregated on arrival and its windows emitted then,
    /// with no window state kept. Set when the keys are exactly the session's partition
    /// keys and bounds, passed on unchanged.
    pub closed_sessions: bool,
    pub kind: WindowKind,
    /// DataFusion aggregate function calls, in output order after the groups.
    pub aggr_exprs: Vec<Expr>,
    pub schema: DFSchemaRef,
}

impl StreamNode {
    /// The node's output schema, as DataFusion sees it.
    pub fn schema(&self) -> DFSchemaRef {
        match self {
            StreamNode::Source(s) => s.schema.clone(),
            StreamNode::Filter { input, .. } => input.schema(),
            StreamNode::Projection { schema, .. } | StreamNode::WindowAssign { schema, .. } => {
                schema.clone()
            }
            StreamNode::WindowAggregate(a) => a.schema.clone(),
            StreamNode::OverWindow(o) => o.schema.clone(),
            StreamNode::Union { schema, .. } => schema.clone(),
            StreamNode::IntervalJoin(j) => j.schema.clone(),
            StreamNode::WindowJoin(j) => j.schema.clone(),
            StreamNode::RegularJoin(j) => j.schema.clone(),
            StreamNode::UpdatingAggregate(a) => a.schema.clone(),
            StreamNode::TopN(t) => t.schema.clone(),
            StreamNode::LookupJoin(j) => j.schema.clone(),
            StreamNode::TemporalJoin(j) => j.schema.clone(),
            StreamNode::ChangelogNormalize(n) => n.schema.clone(),
            StreamNode::UpsertMaterialize(m) => m.input.schema(),
        }
    }

    /// The node's output schema as Arrow batches carry it: for an updating stream, with
    /// the change column last (see [`crate::changelog`]).
    pub fn arrow_schema(&self) -> SchemaRef {
        let schema = self.schema().as_arrow().clone();
        if self.is_updating() {
            crate::changelog::with_change_column(&schema)
        } else {
            Arc::new(schema)
        }
    }

    /// Whether the node's rows can be revised later (an updating stream), rather than
    /// only appended.
    pub fn is_updating(&self) -> bool {
        match self {
            StreamNode::UpdatingAggregate(a) => {
                a.fires_at_window_end.is_none()
                    || a.allowed_lateness_ms > 0
                    || a.early_fire_delay_ms.is_some()
            }
            StreamNode::RegularJoin(j) => j.emits_changes(),
            StreamNode::TopN(_)
            | StreamNode::ChangelogNormalize(_)
            | StreamNode::UpsertMaterialize(_) => true,
            StreamNode::Source(s) => s.table.is_changelog(),
            StreamNode::Filter { input, .. }
            | StreamNode::Projection { input, .. }
            | StreamNode::WindowAssign { input, .. } => input.is_updating(),
            StreamNode::TemporalJoin(j) => j.left.is_updating(),
            StreamNode::Union { inputs, .. } => inputs.iter().any(StreamNode::is_updating),
            StreamNode::WindowAggregate(_)
            | StreamNode::OverWindow(_)
            | StreamNode::IntervalJoin(_)
            | StreamNode::WindowJoin(_)
            | StreamNode::LookupJoin(_) => false,
        }
    }

    /// The node's inputs.
    /// The operator's name, as `EXPLAIN` and errors call it.
    pub fn name(&self) -> &'static str {
        match self {
            StreamNode::Source(_) => "Source",
            StreamNode::Filter { .. } => "Filter",
            StreamNode::Projection { .. } => "Projection",
            StreamNode::WindowAssign { .. } => "WindowAssign",
            StreamNode::WindowAggregate(_) => "WindowAggregate",
            StreamNode::OverWindow(_) => "OverWindow",
            StreamNode::Union { .. } => "Union",
            StreamNode::IntervalJoin(_) => "IntervalJoin",
            StreamNode::WindowJoin(_) => "WindowJoin",
            StreamNode::RegularJoin(_) => "RegularJoin",
            StreamNode::UpdatingAggregate(_) => "UpdatingAggregate",
            StreamNode::LookupJoin(_) => "LookupJoin",
            StreamNode::TemporalJoin(_) => "TemporalJoin",
            StreamNode::TopN(_) => "TopN",
            StreamNode::ChangelogNormalize(_) => "ChangelogNormalize",
            StreamNode::UpsertMaterialize(_) => "UpsertMaterialize",
        }
    }

    pub fn inputs(&self) -> Vec<&StreamNode> {
        match self {
            StreamNode::Source(_) => vec![],
            StreamNode::Filter { input, .. }
            | StreamNode::Projection { input, .. }
            | StreamNode::WindowAssign { input, .. } => vec![input],
            StreamNode::WindowAggregate(a) => vec![&a.input],
            StreamNode::OverWindow(o) => vec![&o.input],
            StreamNode::UpdatingAggregate(a) => vec![&a.input],
            StreamNode::TopN(t) => vec![&t.input],
            StreamNode::ChangelogNormalize(n) => vec![&n.input],
            StreamNode::UpsertMaterialize(m) => vec![&m.input],
            StreamNode::LookupJoin(j) => vec![&j.input, &j.table],
            StreamNode::TemporalJoin(j) => vec![&j.left, &j.right],
            StreamNode::Union { inputs, .. } => inputs.iter().collect(),
            StreamNode::IntervalJoin(j) => vec![&j.left, &j.right],
            StreamNode::WindowJoin(j) => vec![&j.left, &j.right],
            StreamNode::RegularJoin(j) => vec![&j.left, &j.right],
        }
    }

    pub(crate) fn inputs_mut(&mut self) -> Vec<&mut StreamNode> {
        match self {
            StreamNode::Source(_) => vec![],
            StreamNode::Filter { input, .. }
            | StreamNode::Projection { input, .. }
            | StreamNode::WindowAssign { input, .. } => vec![input],
            StreamNode::WindowAggregate(a) => vec![&mut a.input],
            StreamNode::OverWindow(o) => vec![&mut o.input],
            StreamNode::UpdatingAggregate(a) => vec![&mut a.input],
            StreamNode::TopN(t) => vec![&mut t.input],
            StreamNode::ChangelogNormalize(n) => vec![&mut n.input],
            StreamNode::UpsertMaterialize(m) => vec![&mut m.input],
            StreamNode::LookupJoin(j) => vec![&mut j.input],
            StreamNode::TemporalJoin(j) => vec![&mut j.left, &mut j.right],
            StreamNode::Union { inputs, .. } => inputs.iter_mut().collect(),
            StreamNode::IntervalJoin(j) => vec![&mut j.left, &mut j.right],
            StreamNode::WindowJoin(j) => vec![&mut j.left, &mut j.right],
            StreamNode::RegularJoin(j) => vec![&mut j.left, &mut j.right],
        }
    }

    /// Marks the source below this node as read on processing time.
    pub fn use_processing_time(&mut self) {
        match self {
            StreamNode::Source(s) => s.processing_time = true,
            other => other
                .inputs_mut()
                .into_iter()
                .for_each(StreamNode::use_processing_time),
        }
    }

    pub(crate) fn collect_sources(&self, out: &mut Vec<Arc<TableDef>>) {
        match self {
            StreamNode::Source(s) => out.push(s.table.clone()),
            other => other
                .inputs()
                .into_iter()
                .for_each(|input| input.collect_sources(out)),
        }
    }
}
