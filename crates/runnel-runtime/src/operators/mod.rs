//! The streaming operators, one file each, and the one place that turns a plan node into
//! its operator: [`one_input_operator`] and [`two_input_operator`].

mod aggregate_call;
mod change_rows;
mod changelog_normalize;
mod filter;
pub(crate) mod held_rows;
mod interval_join;
pub(crate) mod join_rows;
mod keyed_row_log;
pub(crate) mod late_rows;
mod lookup_join;
mod over_window;
mod projection;
mod regular_join;
mod session_window;
mod temporal_join;
mod top_n;
mod updating_aggregate;
mod upsert_materialize;
mod window_aggregate;
mod window_assign;
mod window_join;

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use runnel_sql::{StreamNode, WindowKind};

pub use changelog_normalize::ChangelogNormalizeOperator;
pub use filter::FilterOperator;
pub use interval_join::IntervalJoinOperator;
pub use late_rows::LateRowsOutput;
pub use lookup_join::LookupJoinOperator;
pub use over_window::OverWindowOperator;
pub use projection::{ProjectionOperator, RelabelOperator};
pub use regular_join::RegularJoinOperator;
pub use session_window::SessionWindowOperator;
pub use temporal_join::TemporalJoinOperator;
pub use top_n::TopNOperator;
pub use updating_aggregate::UpdatingAggregateOperator;
pub use upsert_materialize::UpsertMaterializeOperator;
pub use window_aggregate::WindowAggregateOperator;
pub(crate) use window_assign::as_millis;
pub use window_assign::WindowAssignOperator;
pub use window_join::WindowJoinOperator;

use crate::config::JobConfig;
use crate::error::{Result, RuntimeError};
use crate::metrics::JobMetrics;
use crate::operator::{OneInputOperator, TwoInputOperator};
use crate::processing_time::ProcessingTime;

/// Of rows `0..rows` (the rows of a chain of checkpoint batches, oldest first), the
/// newest of each `identity`, in row order, without those whose newest row is not `alive`:
/// how a snapshot followed by increments (each the newest state of what changed, a
/// tombstone for what is gone) merges into one snapshot.
pub(crate) fn newest_of_each<K: std::hash::Hash + Eq>(
    rows: usize,
    identity: impl Fn(usize) -> K,
    alive: impl Fn(usize) -> bool,
) -> Vec<u32> {
    let mut seen = std::collections::HashSet::with_capacity(rows);
    let mut keep: Vec<u32> = (0..rows)
        .rev()
        .filter(|&row| seen.insert(identity(row)) && alive(row))
        .map(|row| row as u32)
        .collect();
    keep.reverse();
    keep
}

/// What a new operator instance gets from the job it runs in.
#[derive(Clone)]
pub struct OperatorContext {
    /// The job's settings (the late-data sink among them).
    pub config: JobConfig,
    /// Where it counts late rows.
    pub metrics: Arc<JobMetrics>,
    /// The processing clock of its task, which `PROCTIME()` reads.
    pub clock: ProcessingTime,
    /// A lookup join's table (none for other operators).
    pub lookup: LookupTable,
}

/// The table side of a lookup join, as the job provides it.
#[derive(Clone, Default)]
pub enum LookupTable {
    /// The operator joins no table.
    #[default]
    None,
    /// Every row, read before the stream started.
    Rows(Arc<Vec<RecordBatch>>),
    /// Asked by key as batches arrive.
    ByKey(Arc<dyn crate::connector::KeyLookup>),
}

impl OperatorContext {
    /// Where the operator sends rows it drops as late, when the job routes them to a
    /// table; `input` is the schema of the rows it drops.
    fn late_output(&self, input: &SchemaRef, operator: &str) -> Result<Option<LateRowsOutput>> {
        self.config
            .late_data_sink
            .as_ref()
            .map(|sink| LateRowsOutput::try_new(sink, input, operator))
            .transpose()
    }

    /// The late-row outputs of a join's two sides.
    fn late_outputs_for_join(
        &self,
        left: &SchemaRef,
        right: &SchemaRef,
        operator: &str,
    ) -> Result<(Option<LateRowsOutput>, Option<LateRowsOutput>)> {
        match &self.config.late_data_sink {
            Some(sink) => {
                let (l, r) = LateRowsOutput::for_join(sink, left, right, operator)?;
                Ok((Some(l), Some(r)))
            }
            None => Ok((None, None)),
        }
    }
}

/// A new instance (for one subtask) of the one-input operator running `node`: filter,
/// projection, window assignment, window or unwindowed aggregate, `OVER`, Top-N, lookup
/// join, or a `UNION ALL`'s relabelling. Public so benchmarks can drive one operator.
pub fn one_input_operator(
    node: &StreamNode,
    context: &OperatorContext,
) -> Result<Box<dyn OneInputOperator>> {
    let metrics = context.metrics.clone();
    Ok(match node {
        StreamNode::Filter {
            predicate,
            input_schema,
            ..
        } => Box::new(FilterOperator::try_new(
            predicate,
            input_schema,
            &context.clock,
        )?),
        StreamNode::Projection {
            exprs,
            input_schema,
            ..
        } => Box::new(ProjectionOperator::try_new(
            exprs,
            input_schema,
            node.arrow_schema(),
            &context.clock,
        )?),
        StreamNode::Union { .. } => Box::new(RelabelOperator::new(node.arrow_schema())),
        StreamNode::WindowAssign {
            input,
            kind,
            time_column,
            partition_keys,
            schema,
            panes,
            allowed_lateness_ms,
        } => {
            let input_schema = input.arrow_schema();
            let schema = if let WindowKind::Session { .. } = kind {
                Arc::new(schema.as_arrow().clone())
            } else {
                node.arrow_schema()
            };
            if let WindowKind::Session { gap_ms } = kind {
                Box::new(SessionWindowOperator::try_new(
                    *gap_ms,
                    *time_column,
                    partition_keys.clone(),
                    input_schema.clone(),
                    schema,
                    metrics,
                    context.late_output(&input_schema, "the session window")?,
                )?)
            } else {
                Box::new(
                    WindowAssignOperator::new(
                        *kind,
                        *time_column,
                        &input_schema,
                        schema,
                        metrics,
                        context.late_output(&input_schema, "the window")?,
                    )
                    .into_panes(*panes)
                    .with_allowed_lateness(*allowed_lateness_ms),
                )
            }
        }
        StreamNode::OverWindow(over) => {
            let late = context.late_output(&over.input.arrow_schema(), "the OVER window")?;
            Box::new(OverWindowOperator::try_new(over, metrics, late)?)
        }
        StreamNode::WindowAggregate(aggregate) => {
            Box::new(WindowAggregateOperator::try_new(aggregate, metrics)?)
        }
        StreamNode::UpdatingAggregate(aggregate) => Box::new(UpdatingAggregateOperator::try_new(
            aggregate,
            aggregate.input.is_updating(),
        )?),
        StreamNode::TopN(top) => Box::new(TopNOperator::try_new(top)?),
        StreamNode::ChangelogNormalize(normalize) => {
            Box::new(ChangelogNormalizeOperator::try_new(normalize, metrics)?)
        }
        StreamNode::UpsertMaterialize(materialize) => {
            Box::new(UpsertMaterializeOperator::try_new(materialize, metrics)?)
        }
        StreamNode::LookupJoin(join) => Box::new(match &context.lookup {
            LookupTable::ByKey(table) => LookupJoinOperator::by_key(join, table.clone())?,
            LookupTable::Rows(rows) => LookupJoinOperator::try_new(join, rows.to_vec())?,
            LookupTable::None => LookupJoinOperator::try_new(join, Vec::new())?,
        }),
        other => {
            return Err(RuntimeError::Build(format!(
                "{} is not a one-input operator",
                other.name()
            )))
        }
    })
}

/// A new instance (for one subtask) of the two-input operator running `node`: an
/// interval or a window join.
pub fn two_input_operator(
    node: &StreamNode,
    context: &OperatorContext,
) -> Result<Box<dyn TwoInputOperator>> {
    let metrics = context.metrics.clone();
    Ok(match node {
        StreamNode::IntervalJoin(join) => {
            let late = context.late_outputs_for_join(
                &join.left.arrow_schema(),
                &join.right.arrow_schema(),
                "the join",
            )?;
            Box::new(IntervalJoinOperator::try_new(join, metrics, late)?)
        }
        StreamNode::WindowJoin(join) => {
            let late = context.late_outputs_for_join(
                &join.left.arrow_schema(),
                &join.right.arrow_schema(),
                "the window join",
            )?;
            Box::new(WindowJoinOperator::try_new(join, metrics, late)?)
        }
        StreamNode::RegularJoin(join) => Box::new(RegularJoinOperator::try_new(join, metrics)?),
        StreamNode::TemporalJoin(join) => {
            let (late, _) = context.late_outputs_for_join(
                &join.left.arrow_schema(),
                &join.right.arrow_schema(),
                "the temporal join",
            )?;
            Box::new(TemporalJoinOperator::try_new(join, metrics, late)?)
        }
        other => {
            return Err(RuntimeError::Build(format!(
                "{} is not a two-input operator",
                other.name()
            )))
        }
    })
}
