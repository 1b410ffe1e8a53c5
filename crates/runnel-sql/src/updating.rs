//! Planning updating streams: Top-N without a window, and the check that operators which
//! only take appended rows are not fed revisions (see [`crate::changelog`]).

use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::logical_plan::Filter;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};

use crate::error::{Result, SqlError};
use crate::lineage::is_window_bound;
use crate::plan::{StreamNode, TopNNode};
use crate::planner::to_stream;
use crate::window::WINDOW_END;

/// `node`, or an error if its rows can be revised: `consumer` (a window, a join, ...)
/// treats every row it reads as final.
pub(crate) fn append_only(node: StreamNode, consumer: &str) -> Result<StreamNode> {
    check_append_only(&node, consumer)?;
    Ok(node)
}

/// An error if `node`'s rows can be revised: `consumer` treats every row as final.
pub(crate) fn check_append_only(node: &StreamNode, consumer: &str) -> Result<()> {
    if node.is_updating() && table_changes(node) {
        return Err(SqlError::Unsupported(format!(
            "{consumer} cannot read the changes of a changelog table (debezium-json, \
             upsert-kafka): its rows are revised as changes arrive; aggregates (windowed or \
             not) take them"
        )));
    }
    if node.is_updating() {
        return Err(SqlError::Unsupported(format!(
            "{consumer} cannot read an updating stream: its input is an aggregate or Top-N \
             without a window, whose rows are revised as data arrives; window that aggregate \
             (GROUP BY window_start, window_end) so each row is final when emitted"
        )));
    }
    Ok(())
}

/// `node`, if a tumbling, hopping or cumulating window can read it: append-only, or the
/// changes of a changelog table (through filters and projections), whose rows carry
/// their own event time, so a `-U`/`-D` retracts from the window its row was counted in.
/// An aggregate's or Top-N's revisions have no event time of their own: refused.
pub(crate) fn window_input(node: StreamNode) -> Result<StreamNode> {
    if table_changes(&node) {
        Ok(node)
    } else {
        append_only(node, "a window")
    }
}

/// Whether every revision in `node`'s rows is a changelog table's own change (read
/// through filters and projections), not an aggregate's or Top-N's.
pub(crate) fn table_changes(node: &StreamNode) -> bool {
    match node {
        StreamNode::Source(_) | StreamNode::ChangelogNormalize(_) => true,
        StreamNode::Filter { input, .. } | StreamNode::Projection { input, .. } => {
            table_changes(input)
        }
        StreamNode::Union { inputs, .. } => inputs.iter().all(table_changes),
        // A left change joined with a version keeps its own event time.
        StreamNode::TemporalJoin(j) => table_changes(&j.left),
        other => !other.is_updating(),
    }
}

/// `WHERE rn <= N` over `ROW_NUMBER() OVER (PARTITION BY keys ORDER BY ...) AS rn` with
/// no window among the keys: an unwindowed Top-N. `None` when `filter` is not one (window
/// Top-N is an OVER window partitioned by the window's bounds, planned elsewhere).
pub(crate) fn top_n(filter: &Filter) -> Result<Option<StreamNode>> {
    // The optimizer may leave a projection pruning columns between the two.
    let (projection, window) = match filter.input.as_ref() {
        LogicalPlan::Window(window) => (None, window),
        LogicalPlan::Projection(projection) => match projection.input.as_ref() {
            LogicalPlan::Window(window) => (Some(projection), window),
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    let [expr] = window.window_expr.as_slice() else {
        return Ok(None);
    };
    let Expr::WindowFunction(function) = strip_alias(expr) else {
        return Ok(None);
    };
    let WindowFunction { fun, params } = function.as_ref();
    if fun.name() != "row_number" {
        return Ok(None);
    }
    if params
        .partition_by
        .iter()
        .any(|e| is_window_bound(&window.input, e, WINDOW_END))
    {
        return Ok(None);
    }
    // The rank is the window node's last column; the filter sees it through the projection.
    let window_schema = window.schema.clone();
    let rank_in_window =
        Column::from(window_schema.qualified_field(window_schema.fields().len() - 1));
    let rank_index = match projection {
        None => Some(window_schema.fields().len() - 1),
        Some(p) => p
            .expr
            .iter()
            .position(|e| matches!(strip_alias(e), Expr::Column(c) if *c == rank_in_window)),
    };
    let Some(rank_index) = rank_index else {
        return Ok(None);
    };
    let filter_schema = filter.input.schema();
    let rank = Column::from(filter_schema.qualified_field(rank_index));
    let mut limit = None;
    let mut rest = Vec::new();
    for conjunct in split_conjunction(&filter.predicate) {
        match rank_limit(conjunct, &rank) {
            Some(n) if limit.is_none() => limit = Some(n),
            _ => rest.push(conjunct.clone()),
        }
    }
    let Some(limit) = limit else {
        return Err(SqlError::Unsupported(
            "ROW_NUMBER() over a stream without a window must be limited to its first ranks \
             (WHERE rn <= N on the rank's column): ranking every row would keep every row"
                .into(),
        ));
    };
    if params.order_by.is_empty() {
        return Err(SqlError::Unsupported(
            "a Top-N needs ORDER BY inside its OVER (...)".into(),
        ));
    }
    let input = to_stream(&window.input)?;
    let input_time = crate::lineage::event_time_column(&window.input)
        .and_then(|c| window.input.schema().index_of_column(&c).ok());
    let mut node = StreamNode::TopN(TopNNode {
        input_time,
        state_ttl_ms: 0,
        finished_after: None,
        input: Box::new(append_only(input, "a Top-N")?),
        input_schema: window.input.schema().clone(),
        partition_by: params.partition_by.clone(),
        order_by: params.order_by.clone(),
        limit,
        schema: window_schema.clone(),
    });
    if let Some(p) = projection {
        node = StreamNode::Projection {
            input: Box::new(node),
            exprs: p.expr.clone(),
            input_schema: window_schema,
            schema: p.schema.clone(),
        };
    }
    Ok(Some(match conjunction(rest) {
        Some(predicate) => StreamNode::Filter {
            input: Box::new(node),
            predicate,
            input_schema: filter_schema.clone(),
        },
        None => node,
    }))
}

fn strip_alias(expr: &Expr) -> &Expr {
    match expr {
        Expr::Alias(alias) => strip_alias(&alias.expr),
        other => other,
    }
}

/// `N` if `expr` keeps ranks `1..=N` of `rank` (`rank <= N`, `rank < N + 1`, `rank = 1`,
/// or the same written the other way round).
fn rank_limit(expr: &Expr, rank: &Column) -> Option<usize> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = expr else {
        return None;
    };
    let is_rank = |e: &Expr| match strip_cast(e) {
        Expr::Column(c) => c == rank,
        _ => false,
    };
    let (op, value) = if is_rank(left) {
        (*op, right.as_ref())
    } else if is_rank(right) {
        (op.swap()?, left.as_ref())
    } else {
        return None;
    };
    let n = integer(strip_cast(value))?;
    let limit = match op {
        Operator::LtEq => n,
        Operator::Lt => n - 1,
        Operator::Eq if n == 1 => 1,
        _ => return None,
    };
    usize::try_from(limit).ok().filter(|&l| l > 0)
}

fn strip_cast(expr: &Expr) -> &Expr {
    match expr {
        Expr::Cast(cast) => strip_cast(&cast.expr),
        Expr::TryCast(cast) => strip_cast(&cast.expr),
        other => other,
    }
}

fn integer(expr: &Expr) -> Option<i128> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    match value {
        ScalarValue::Int8(Some(v)) => Some(*v as i128),
        ScalarValue::Int16(Some(v)) => Some(*v as i128),
        ScalarValue::Int32(Some(v)) => Some(*v as i128),
        ScalarValue::Int64(Some(v)) => Some(*v as i128),
        ScalarValue::UInt8(Some(v)) => Some(*v as i128),
        ScalarValue::UInt16(Some(v)) => Some(*v as i128),
        ScalarValue::UInt32(Some(v)) => Some(*v as i128),
        ScalarValue::UInt64(Some(v)) => Some(*v as i128),
        _ => None,
    }
}
