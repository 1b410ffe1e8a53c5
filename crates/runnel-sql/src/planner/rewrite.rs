//! The streaming rewrite: an optimized DataFusion logical plan → [`StreamNode`]s, or a
//! refusal with the reason.

use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, UserDefinedLogicalNodeCore};

use crate::error::{Result, SqlError};
use crate::lineage::{is_proctime, window_bound};
use crate::plan::{
    OverWindowNode, SourceNode, StreamNode, UpdatingAggregateNode, WindowAggregateNode,
};
use crate::updating::{append_only, top_n, window_input};
use crate::window::{WindowKind, WindowTvf, WINDOW_END, WINDOW_START};

use super::context::CatalogTableSource;
use super::joins::{interval_join, regular_join, window_join};
use super::over::over_readiness;

/// A changelog table with a primary key: every column read (qualified by `qualifier`), the
/// changes made exact per key ([`StreamNode::ChangelogNormalize`] needs the key and whole
/// rows), then the columns the query reads.
fn normalized_changelog(
    scan: &datafusion::logical_expr::TableScan,
    table: &std::sync::Arc<crate::catalog::TableDef>,
    qualifier: datafusion::common::TableReference,
) -> Result<StreamNode> {
    let full = std::sync::Arc::new(datafusion::common::DFSchema::try_from_qualified_schema(
        qualifier,
        &table.schema,
    )?);
    let source = StreamNode::Source(SourceNode {
        table: table.clone(),
        projection: None,
        schema: full.clone(),
        processing_time: false,
    });
    let normalized = StreamNode::ChangelogNormalize(crate::plan::ChangelogNormalizeNode {
        input: Box::new(source),
        keys: table.primary_key_indexes(),
        schema: full.clone(),
    });
    let Some(projection) = &scan.projection else {
        return Ok(normalized);
    };
    let columns = full.columns();
    Ok(StreamNode::Projection {
        input: Box::new(normalized),
        exprs: projection
            .iter()
            .map(|&i| Expr::Column(columns[i].clone()))
            .collect(),
        input_schema: full,
        schema: scan.projected_schema.clone(),
    })
}

/// The streaming rewrite: DataFusion logical plan → [`StreamNode`].
pub(crate) fn to_stream(plan: &LogicalPlan) -> Result<StreamNode> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let Some(table) = scan.source.downcast_ref::<CatalogTableSource>() else {
                return Err(SqlError::Unsupported(format!(
                    "cannot read '{}' as a stream",
                    scan.table_name
                )));
            };
            if table.lookup {
                return Err(SqlError::Unsupported(format!(
                    "{} FOR SYSTEM_TIME AS OF must be the right side of a JOIN with a stream",
                    table.table.name
                )));
            }
            if scan.fetch.is_some() || !scan.filters.is_empty() {
                return Err(SqlError::Unsupported("LIMIT on a stream".into()));
            }
            if table.table.is_changelog() && !table.table.primary_key.is_empty() {
                return normalized_changelog(scan, &table.table, scan.table_name.clone());
            }
            Ok(StreamNode::Source(SourceNode {
                table: table.table.clone(),
                projection: scan.projection.clone(),
                schema: scan.projected_schema.clone(),
                processing_time: false,
            }))
        }
        LogicalPlan::Projection(p) => Ok(StreamNode::Projection {
            input: Box::new(to_stream(&p.input)?),
            exprs: p.expr.clone(),
            input_schema: p.input.schema().clone(),
            schema: p.schema.clone(),
        }),
        LogicalPlan::Filter(f) => match top_n(f)? {
            Some(node) => Ok(node),
            None => Ok(StreamNode::Filter {
                input: Box::new(to_stream(&f.input)?),
                predicate: f.predicate.clone(),
                input_schema: f.input.schema().clone(),
            }),
        },
        // An alias renames qualifiers only; batches are the same.
        LogicalPlan::SubqueryAlias(a) => to_stream(&a.input),
        LogicalPlan::Extension(Extension { node }) => {
            if let Some(tvf) = node.as_any().downcast_ref::<WindowTvf>() {
                let mut input = to_stream(&tvf.input)?;
                let time = Column::from(tvf.input.schema().qualified_field(tvf.time_column));
                if is_proctime(&tvf.input, &time) {
                    input.use_processing_time();
                }
                // Tumbling, hopping and cumulating windows take a table's changes (their
                // aggregate retracts); a session's extent depends on every row: none.
                input = if matches!(tvf.kind, WindowKind::Session { .. }) {
                    append_only(input, "a session window")?
                } else {
                    window_input(input)?
                };
                Ok(StreamNode::WindowAssign {
                    input: Box::new(input),
                    kind: tvf.kind,
                    time_column: tvf.time_column,
                    partition_keys: tvf.partition_keys.clone(),
                    schema: tvf.schema().clone(),
                    panes: false,
                    allowed_lateness_ms: 0,
                })
            } else {
                Err(SqlError::Unsupported(format!(
                    "plan node {} is not supported",
                    node.name()
                )))
            }
        }
        LogicalPlan::Aggregate(agg) => {
            if agg
                .group_expr
                .iter()
                .any(|e| matches!(e, Expr::GroupingSet(_)))
            {
                return Err(SqlError::Unsupported(
                    "GROUPING SETS, ROLLUP and CUBE".into(),
                ));
            }
            let position = |bound: &str| -> Option<(usize, WindowKind)> {
                agg.group_expr
                    .iter()
                    .enumerate()
                    .find_map(|(i, e)| match e {
                        Expr::Column(c) => window_bound(&agg.input, c)
                            .filter(|(_, b)| *b == bound)
                            .map(|(kind, _)| (i, kind)),
                        _ => None,
                    })
            };
            let input = Box::new(to_stream(&agg.input)?);
            let input_time = crate::lineage::event_time_column(&agg.input)
                .and_then(|c| agg.input.schema().index_of_column(&c).ok());
            match (position(WINDOW_START), position(WINDOW_END)) {
                (Some(_), Some((window_end, _))) if input.is_updating() => {
                    // A window over changes: retract from open windows, fire at the end.
                    Ok(StreamNode::UpdatingAggregate(UpdatingAggregateNode {
                        input,
                        input_schema: agg.input.schema().clone(),
                        group_exprs: agg.group_expr.clone(),
                        aggr_exprs: agg.aggr_expr.clone(),
                        fires_at_window_end: Some(window_end),
                        allowed_lateness_ms: 0,
                        early_fire_delay_ms: None,
                        input_time,
                        state_ttl_ms: 0,
                        finished_after: None,
                        schema: agg.schema.clone(),
                    }))
                }
                (Some((window_start, _)), Some((window_end, kind))) => {
                    let mut node = WindowAggregateNode {
                        input,
                        input_schema: agg.input.schema().clone(),
                        group_exprs: agg.group_expr.clone(),
                        window_end,
                        window_start,
                        kind,
                        aggr_exprs: agg.aggr_expr.clone(),
                        schema: agg.schema.clone(),
                        panes: false,
                        closed_sessions: false,
                    };
                    crate::panes::aggregate_by_panes(&mut node);
                    crate::closed_sessions::aggregate_closed_sessions(&mut node);
                    Ok(StreamNode::WindowAggregate(node))
                }
                // No window: the aggregate revises its groups' rows as rows arrive.
                _ => Ok(StreamNode::UpdatingAggregate(UpdatingAggregateNode {
                    input,
                    input_schema: agg.input.schema().clone(),
                    group_exprs: agg.group_expr.clone(),
                    aggr_exprs: agg.aggr_expr.clone(),
                    fires_at_window_end: None,
                    allowed_lateness_ms: 0,
                    early_fire_delay_ms: None,
                    input_time,
                    state_ttl_ms: 0,
                    finished_after: None,
                    schema: agg.schema.clone(),
                })),
            }
        }
        LogicalPlan::Join(join) => {
            if let Some(node) = crate::temporal::temporal_join(join)? {
                return Ok(node);
            }
            if let Some(node) = crate::lookup::lookup_join(join)? {
                return Ok(node);
            }
            if let Some(node) = window_join(join)? {
                return Ok(node);
            }
            let (left, right) = (to_stream(&join.left)?, to_stream(&join.right)?);
            if left.is_updating() || right.is_updating() {
                regular_join(join, left, right)
            } else {
                interval_join(join, left, right)
            }
        }
        LogicalPlan::Union(union) => {
            let inputs: Vec<StreamNode> = union
                .inputs
                .iter()
                .map(|input| to_stream(input))
                .collect::<Result<_>>()?;
            if inputs.iter().any(StreamNode::is_updating)
                && !inputs.iter().all(StreamNode::is_updating)
            {
                return Err(SqlError::Unsupported(
                    "UNION ALL of an updating stream (an aggregate or Top-N without a window) \
                     and an append-only one"
                        .into(),
                ));
            }
            Ok(StreamNode::Union {
                inputs,
                schema: union.schema.clone(),
            })
        }
        LogicalPlan::Window(window) => {
            let readiness = over_readiness(window)?;
            Ok(StreamNode::OverWindow(OverWindowNode {
                input: Box::new(append_only(to_stream(&window.input)?, "an OVER window")?),
                input_schema: window.input.schema().clone(),
                window_exprs: window.window_expr.clone(),
                readiness,
                schema: window.schema.clone(),
            }))
        }
        other => Err(SqlError::Unsupported(format!(
            "{} is not supported on streams yet",
            other
                .display()
                .to_string()
                .split(':')
                .next()
                .unwrap_or("this operation")
        ))),
    }
}

/// A constant interval in milliseconds (`None` for months, NULL or non-intervals).
pub(crate) fn scalar_interval_ms(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            Some(v.days as i64 * 86_400_000 + v.nanoseconds / 1_000_000)
        }
        ScalarValue::IntervalDayTime(Some(v)) => {
            Some(v.days as i64 * 86_400_000 + v.milliseconds as i64)
        }
        _ => None,
    }
}
