//! The streaming planner: resolves `CREATE TABLE` / `CREATE VIEW` against the catalog and
//! turns queries into [`StreamPlan`]s.
//!
//! A query goes SQL → DataFusion `LogicalPlan` (via `SqlToRel`, with window table functions
//! planned into [`WindowTvf`] nodes) → DataFusion's analyzer and optimizer → the streaming
//! rewrite, which maps each logical node to a streaming node or refuses the query with
//! the reason. Nothing that matches no streaming pattern is run.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, ScalarValue, TableReference};
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::builder::LogicalTableSource;
use datafusion::logical_expr::expr_rewriter::unnormalize_cols;
use datafusion::logical_expr::planner::{
    ContextProvider, ExprPlanner, PlannedRelation, RelationPlanner, RelationPlannerContext,
    RelationPlanning,
};
use datafusion::logical_expr::{
    AggregateUDF, Expr, Extension, HigherOrderUDF, LogicalPlan, LogicalPlanBuilder, ScalarUDF,
    TableSource, TableType, UserDefinedLogicalNodeCore, WindowUDF,
};
use datafusion::prelude::SessionConfig;
use datafusion::sql::planner::{PlannerContext, SqlToRel};
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName, Query,
    Statement as SqlStatement, TableAlias, TableFactor,
};

use crate::catalog::{is_timestamp, schema_of, Catalog, TableDef, ViewDef, WatermarkDef};
use crate::error::{Result, SqlError};
use crate::lineage::{event_time_column, is_proctime, is_window_bound, window_bound};
use crate::parser::{ColumnKind, CreateTable};
use crate::plan::{
    IntervalJoinNode, OverReadiness, OverWindowNode, SourceNode, StreamNode, StreamPlan,
    UpdatingAggregateNode, WindowAggregateNode, WindowJoinNode,
};
use crate::updating::{append_only, top_n};
use crate::window::{WindowKind, WindowTvf, WINDOW_END, WINDOW_START};

/// Plans statements against a [`Catalog`]. Holds DataFusion's function registry and
/// optimizer; one per engine.
#[derive(Debug, Clone)]
pub struct StreamPlanner {
    state: SessionState,
    relation_planners: Vec<Arc<dyn RelationPlanner>>,
}

impl Default for StreamPlanner {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamPlanner {
    pub fn new() -> Self {
        // Identifiers resolve as written (Flink's rule), so camelCase columns declared in
        // DDL are found by queries that spell them the same way.
        let config = SessionConfig::new()
            .set_bool("datafusion.sql_parser.enable_ident_normalization", false);
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .build();
        for function in crate::functions::flink_functions() {
            // Registering replaces nothing DataFusion has (the names are Flink's own).
            let _previous = state.register_udf(Arc::new(function));
        }
        Self {
            state,
            relation_planners: vec![Arc::new(WindowTvfPlanner)],
        }
    }

    /// DataFusion's session state: function registry, config and execution properties.
    pub fn state(&self) -> &SessionState {
        &self.state
    }

    /// Registers a scalar function (a DataFusion UDF) for later statements.
    pub fn register_udf(&mut self, udf: ScalarUDF) -> Result<()> {
        self.state.register_udf(Arc::new(udf))?;
        Ok(())
    }

    /// Registers an aggregate function (a DataFusion UDAF) for later statements.
    pub fn register_udaf(&mut self, udaf: AggregateUDF) -> Result<()> {
        self.state.register_udaf(Arc::new(udaf))?;
        Ok(())
    }

    fn context<'a>(&'a self, catalog: &'a Catalog) -> PlanningContext<'a> {
        PlanningContext {
            catalog,
            state: &self.state,
            relation_planners: &self.relation_planners,
        }
    }

    /// Resolves a parsed `CREATE TABLE` into a [`TableDef`]: types computed columns and
    /// checks the watermark clause.
    pub fn create_table(&self, catalog: &Catalog, table: CreateTable) -> Result<TableDef> {
        let invalid = |message: String| SqlError::InvalidTable {
            table: table.name.clone(),
            message,
        };
        let physical_fields: Vec<Field> = table
            .columns
            .iter()
            .filter_map(|c| match &c.kind {
                ColumnKind::Physical {
                    data_type,
                    nullable,
                } => Some(Field::new(&c.name, data_type.clone(), *nullable)),
                ColumnKind::Computed(_) => None,
            })
            .collect();
        if physical_fields.is_empty() {
            return Err(invalid("a table needs at least one physical column".into()));
        }
        let physical_schema = schema_of(physical_fields);
        let physical_df = DFSchema::try_from(physical_schema.as_ref().clone())?;

        let context = self.context(catalog);
        let sql_to_rel = SqlToRel::new(&context);
        let mut row_exprs = Vec::with_capacity(table.columns.len());
        for column in &table.columns {
            let expr = match &column.kind {
                ColumnKind::Physical { .. } => Expr::Column(Column::from_name(&column.name)),
                ColumnKind::Computed(sql) => sql_to_rel
                    .sql_to_expr(
                        sql.as_ref().clone(),
                        &physical_df,
                        &mut PlannerContext::new(),
                    )
                    .map_err(|e| invalid(format!("computed column '{}': {e}", column.name)))?
                    .alias(&column.name),
            };
            row_exprs.push(expr);
        }
        let (row_exprs, schema) = self
            .coerce(&physical_schema, row_exprs)
            .map_err(|e| invalid(format!("computed columns: {e}")))?;

        let watermark = match table.watermark {
            None => None,
            Some(spec) => {
                let column_index = schema.index_of(&spec.column).map_err(|_| {
                    invalid(format!(
                        "WATERMARK FOR names an unknown column '{}'",
                        spec.column
                    ))
                })?;
                if !is_timestamp(schema.field(column_index).data_type()) {
                    return Err(invalid(format!(
                        "WATERMARK FOR column '{}' must be TIMESTAMP(3) or TIMESTAMP_LTZ(3), not {}",
                        spec.column,
                        schema.field(column_index).data_type()
                    )));
                }
                let full_df = DFSchema::try_from(schema.as_ref().clone())?;
                let expr = sql_to_rel
                    .sql_to_expr(spec.expr, &full_df, &mut PlannerContext::new())
                    .map_err(|e| invalid(format!("watermark expression: {e}")))?;
                let (mut exprs, wm_schema) = self
                    .coerce(&schema, vec![expr])
                    .map_err(|e| invalid(format!("watermark expression: {e}")))?;
                if !is_timestamp(wm_schema.field(0).data_type()) {
                    return Err(invalid(format!(
                        "the watermark expression must give a TIMESTAMP, not {}",
                        wm_schema.field(0).data_type()
                    )));
                }
                Some(WatermarkDef {
                    column: spec.column,
                    column_index,
                    expr: exprs.remove(0),
                })
            }
        };
        if let Some(unknown) = table
            .partition_keys
            .iter()
            .find(|k| physical_schema.index_of(k).is_err())
        {
            return Err(invalid(format!(
                "PARTITIONED BY names an unknown column '{unknown}'"
            )));
        }
        Ok(TableDef {
            name: table.name,
            physical_schema,
            schema,
            row_exprs,
            watermark,
            partition_keys: table.partition_keys,
            primary_key: table.primary_key,
            options: table
                .options
                .into_iter()
                .map(|(key, value)| (modern_option_name(key), value))
                .collect::<BTreeMap<_, _>>(),
        })
    }

    /// Type-checks `exprs` over `schema` with DataFusion's analyzer (inserting casts), and
    /// returns them with their output schema.
    fn coerce(&self, schema: &SchemaRef, exprs: Vec<Expr>) -> Result<(Vec<Expr>, SchemaRef)> {
        let source = Arc::new(LogicalTableSource::new(schema.clone()));
        let plan = LogicalPlanBuilder::scan("__row", source, None)?
            .project(exprs)?
            .build()?;
        let plan = self.state.analyzer().execute_and_check(
            plan,
            self.state.config_options(),
            |_, _| {},
        )?;
        match plan {
            LogicalPlan::Projection(p) => {
                let schema = Arc::new(p.schema.as_arrow().clone());
                // The expressions run over unqualified table rows.
                Ok((unnormalize_cols(p.expr), schema))
            }
            other => Err(SqlError::Plan(format!(
                "unexpected plan while typing expressions: {other}"
            ))),
        }
    }

    /// Plans `CREATE VIEW name AS query`.
    pub fn create_view(&self, catalog: &Catalog, name: String, query: Query) -> Result<ViewDef> {
        let plan = self.logical_plan(catalog, query)?;
        Ok(ViewDef { name, plan })
    }

    /// SQL to an unoptimized DataFusion plan.
    fn logical_plan(&self, catalog: &Catalog, mut query: Query) -> Result<LogicalPlan> {
        crate::group_window::rewrite_group_windows(&mut query)?;
        crate::field_names::name_field_accesses(&mut query);
        let context = self.context(catalog);
        let plan = SqlToRel::new(&context)
            .sql_statement_to_plan(SqlStatement::Query(Box::new(query)))
            .map_err(|e| match e {
                DataFusionError::Plan(message) => SqlError::Plan(message),
                other => SqlError::from(other),
            })?;
        Ok(plan)
    }

    /// Plans a query, optionally writing into `sink` (an `INSERT INTO`).
    pub fn plan_query(
        &self,
        catalog: &Catalog,
        query: Query,
        sink: Option<Arc<TableDef>>,
    ) -> Result<StreamPlan> {
        self.plan_query_with(catalog, query, sink, &PlanOptions::default())
    }

    /// Plans a query with job-level options (see [`PlanOptions`]).
    pub fn plan_query_with(
        &self,
        catalog: &Catalog,
        query: Query,
        sink: Option<Arc<TableDef>>,
        options: &PlanOptions,
    ) -> Result<StreamPlan> {
        let mut plan = self.logical_plan(catalog, query)?;
        if let Some(sink) = &sink {
            plan = cast_to_sink(plan, sink)?;
        }
        // Analyze (views are inlined here), apply the options, then optimize.
        let mut plan = self.state.analyzer().execute_and_check(
            plan,
            self.state.config_options(),
            |_, _| {},
        )?;
        let keep = &options.keep_columns;
        if !keep.is_empty() {
            plan = plan
                .transform_up(|node| match &node {
                    LogicalPlan::Extension(Extension { node: inner }) => {
                        match inner.as_any().downcast_ref::<WindowTvf>() {
                            Some(tvf) => Ok(Transformed::yes(LogicalPlan::Extension(Extension {
                                node: Arc::new(tvf.retaining(keep)),
                            }))),
                            None => Ok(Transformed::no(node)),
                        }
                    }
                    _ => Ok(Transformed::no(node)),
                })?
                .data;
        }
        if let Some(ttl_ms) = options.state_ttl_ms {
            plan = plan
                .transform_up(|node| match &node {
                    LogicalPlan::Join(join) => match bound_by_ttl(join, ttl_ms)? {
                        Some(bounded) => Ok(Transformed::yes(LogicalPlan::Join(bounded))),
                        None => Ok(Transformed::no(node)),
                    },
                    _ => Ok(Transformed::no(node)),
                })?
                .data;
        }
        let plan = self
            .state
            .optimizer()
            .optimize(plan, &self.state, |_, _| {})?;
        let root = to_stream(&plan)?;
        Ok(StreamPlan {
            root,
            sink,
            logical: plan,
        })
    }
}

/// Flink's legacy option names (`'connector.type'`, `'connector.path'`, `'format.type'`,
/// still in published suites such as Nexmark's) as today's.
fn modern_option_name(key: String) -> String {
    match key.as_str() {
        "connector.type" => "connector".into(),
        "connector.path" => "path".into(),
        "connector.topic" => "topic".into(),
        "format.type" => "format".into(),
        _ => key,
    }
}

/// Job-level choices that shape a plan.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Columns windows keep even when the query does not read them (the late-data sink's).
    pub keep_columns: Vec<String>,
    /// `SET 'table.exec.state.ttl'`: a join of two streams with no time bound keeps each
    /// row for this much event time (it becomes an interval join of ± the TTL on the
    /// inputs' event-time columns).
    pub state_ttl_ms: Option<i64>,
}

/// A join of two streams without a time bound, bounded by `ttl_ms` on each side's
/// event-time column; `None` when the join is bounded already or a side has no event time.
fn bound_by_ttl(
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
    if bounded || windowed {
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

/// `INSERT INTO sink` writes columns by position, cast to the sink's types (Flink's rule).
fn cast_to_sink(plan: LogicalPlan, sink: &TableDef) -> Result<LogicalPlan> {
    if sink.has_computed_columns() {
        return Err(SqlError::Plan(format!(
            "cannot INSERT INTO {}: it has computed columns",
            sink.name
        )));
    }
    let query_fields = plan.schema().fields().len();
    let sink_fields = sink.physical_schema.fields();
    if query_fields != sink_fields.len() {
        return Err(SqlError::Plan(format!(
            "INSERT INTO {}: the query gives {query_fields} columns but the table has {} ({})",
            sink.name,
            sink_fields.len(),
            sink_fields
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let exprs = sink_fields
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let column = Expr::Column(Column::from(plan.schema().qualified_field(i)));
            datafusion::logical_expr::cast(column, field.data_type().clone()).alias(field.name())
        })
        .collect::<Vec<_>>();
    Ok(LogicalPlanBuilder::from(plan).project(exprs)?.build()?)
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
                Ok(StreamNode::WindowAssign {
                    input: Box::new(append_only(input, "a window")?),
                    kind: tvf.kind,
                    time_column: tvf.time_column,
                    partition_keys: tvf.partition_keys.clone(),
                    schema: tvf.schema().clone(),
                    panes: false,
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
            match (position(WINDOW_START), position(WINDOW_END)) {
                (Some((window_start, _)), Some((window_end, kind))) => {
                    let mut node = WindowAggregateNode {
                        input: Box::new(to_stream(&agg.input)?),
                        input_schema: agg.input.schema().clone(),
                        group_exprs: agg.group_expr.clone(),
                        window_end,
                        window_start,
                        kind,
                        aggr_exprs: agg.aggr_expr.clone(),
                        schema: agg.schema.clone(),
                        panes: false,
                    };
                    crate::panes::aggregate_by_panes(&mut node);
                    Ok(StreamNode::WindowAggregate(node))
                }
                // No window: the aggregate revises its groups' rows as rows arrive.
                _ => Ok(StreamNode::UpdatingAggregate(UpdatingAggregateNode {
                    input: Box::new(to_stream(&agg.input)?),
                    input_schema: agg.input.schema().clone(),
                    group_exprs: agg.group_expr.clone(),
                    aggr_exprs: agg.aggr_expr.clone(),
                    schema: agg.schema.clone(),
                })),
            }
        }
        LogicalPlan::Join(join) => {
            if let Some(node) = crate::lookup::lookup_join(join)? {
                return Ok(node);
            }
            match window_join(join)? {
                Some(node) => Ok(node),
                None => interval_join(join),
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

/// A join equating both sides' `window_start` and `window_end` is a window join; `None`
/// if the join is not one.
fn window_join(join: &datafusion::logical_expr::logical_plan::Join) -> Result<Option<StreamNode>> {
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

/// Plans a join of two streams; only joins whose time bounds keep state finite run.
fn interval_join(join: &datafusion::logical_expr::logical_plan::Join) -> Result<StreamNode> {
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
        .and_then(|f| crate::join::interval_bounds(f, join.left.schema(), join.right.schema()))
        .ok_or_else(|| {
            SqlError::Unsupported(format!(
                "a join of streams without a time bound would keep every row forever: {HINT}, \
                 or bound every such join's state with SET 'table.exec.state.ttl' = '1 h' \
                 (rows then meet only within that much event time of each other)"
            ))
        })?;
    if bounds.lower_ms > bounds.upper_ms {
        return Err(SqlError::Plan(format!(
            "the join's time bounds are empty: left - right must be >= {} ms and <= {} ms",
            bounds.lower_ms, bounds.upper_ms
        )));
    }
    let (left_keys, right_keys) = key_pairs.into_iter().unzip();
    Ok(StreamNode::IntervalJoin(IntervalJoinNode {
        left: Box::new(append_only(to_stream(&join.left)?, "a join")?),
        right: Box::new(append_only(to_stream(&join.right)?, "a join")?),
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

/// How rows of an OVER window become final on a stream (see [`OverReadiness`]); refuses
/// window specifications whose state a stream could not bound.
fn over_readiness(
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
            _ => return Err(unsupported(format!("{}", f.fun))),
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

/// A catalog table as DataFusion's planner sees it.
#[derive(Debug)]
pub struct CatalogTableSource {
    pub table: Arc<TableDef>,
    /// Read `FOR SYSTEM_TIME AS OF`: loaded whole, the other side of a lookup join.
    pub lookup: bool,
}

impl TableSource for CatalogTableSource {
    fn schema(&self) -> SchemaRef {
        self.table.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }
}

/// A view: DataFusion inlines its plan where it is scanned.
#[derive(Debug)]
struct ViewSource {
    view: Arc<ViewDef>,
}

impl TableSource for ViewSource {
    fn schema(&self) -> SchemaRef {
        Arc::new(self.view.plan.schema().as_arrow().clone())
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn get_logical_plan(&self) -> Option<Cow<'_, LogicalPlan>> {
        Some(Cow::Borrowed(&self.view.plan))
    }
}

/// What `SqlToRel` asks while planning: tables from the catalog, functions from DataFusion.
struct PlanningContext<'a> {
    catalog: &'a Catalog,
    state: &'a SessionState,
    relation_planners: &'a [Arc<dyn RelationPlanner>],
}

impl ContextProvider for PlanningContext<'_> {
    fn get_table_source(&self, name: TableReference) -> DFResult<Arc<dyn TableSource>> {
        let table = name.table();
        let lookup = name.schema() == Some(crate::parser::LOOKUP_SCHEMA);
        if let Some(def) = self.catalog.table(table) {
            return Ok(Arc::new(CatalogTableSource { table: def, lookup }));
        }
        if lookup {
            return datafusion::common::plan_err!(
                "FOR SYSTEM_TIME AS OF joins a table; '{table}' is not one"
            );
        }
        if let Some(view) = self.catalog.view(table) {
            return Ok(Arc::new(ViewSource { view }));
        }
        let known = self.catalog.names();
        datafusion::common::plan_err!(
            "unknown table '{table}'{}",
            if known.is_empty() {
                " (no tables are declared yet)".to_string()
            } else {
                format!(" (known: {})", known.join(", "))
            }
        )
    }

    fn get_expr_planners(&self) -> &[Arc<dyn ExprPlanner>] {
        self.state.expr_planners()
    }

    fn get_relation_planners(&self) -> &[Arc<dyn RelationPlanner>] {
        self.relation_planners
    }

    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.state.scalar_functions().get(name).cloned()
    }

    fn get_higher_order_meta(&self, name: &str) -> Option<Arc<HigherOrderUDF>> {
        self.state.higher_order_functions().get(name).cloned()
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        self.state
            .higher_order_functions()
            .keys()
            .cloned()
            .collect()
    }

    fn get_aggregate_meta(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.state.aggregate_functions().get(name).cloned()
    }

    fn get_window_meta(&self, name: &str) -> Option<Arc<WindowUDF>> {
        self.state.window_functions().get(name).cloned()
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn options(&self) -> &ConfigOptions {
        self.state.config_options()
    }

    fn udf_names(&self) -> Vec<String> {
        self.state.scalar_functions().keys().cloned().collect()
    }

    fn udaf_names(&self) -> Vec<String> {
        self.state.aggregate_functions().keys().cloned().collect()
    }

    fn udwf_names(&self) -> Vec<String> {
        self.state.window_functions().keys().cloned().collect()
    }
}

/// Plans window table functions in `FROM`: `TABLE(TUMBLE(t, DESCRIPTOR(ts), size))` and
/// the short form `TUMBLE(t, ts, size)`, into a [`WindowTvf`] node.
#[derive(Debug)]
struct WindowTvfPlanner;

impl RelationPlanner for WindowTvfPlanner {
    fn plan_relation(
        &self,
        relation: TableFactor,
        context: &mut dyn RelationPlannerContext,
    ) -> DFResult<RelationPlanning> {
        let (name, args, alias) = match &relation {
            TableFactor::TableFunction {
                expr: SqlExpr::Function(f),
                alias,
            } => match &f.args {
                FunctionArguments::List(list) => (f.name.clone(), list.args.clone(), alias.clone()),
                _ => return Ok(RelationPlanning::Original(Box::new(relation))),
            },
            TableFactor::Table {
                name,
                args: Some(args),
                alias,
                ..
            } => (name.clone(), args.args.clone(), alias.clone()),
            _ => return Ok(RelationPlanning::Original(Box::new(relation))),
        };
        let function = name.to_string().to_ascii_uppercase();
        if !WindowKind::is_window_function(&function) {
            return Ok(RelationPlanning::Original(Box::new(relation)));
        }
        let args = args
            .into_iter()
            .map(|arg| match arg {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
                other => datafusion::common::plan_err!(
                    "{function}: arguments are positional (TABLE t, DESCRIPTOR(ts), size); found {other}"
                ),
            })
            .collect::<DFResult<Vec<_>>>()?;
        let (input, time_column, kind) = match (function.as_str(), args.as_slice()) {
            ("TUMBLE", [table, time, size]) => {
                let (input, time_column) = window_input(&function, table, time, context)?;
                let size_ms = interval_ms(size, context, "TUMBLE size")?;
                (input, time_column, WindowKind::Tumble { size_ms })
            }
            ("HOP", [table, time, slide, size]) => {
                let (input, time_column) = window_input(&function, table, time, context)?;
                let slide_ms = interval_ms(slide, context, "HOP slide")?;
                let size_ms = interval_ms(size, context, "HOP size")?;
                (input, time_column, WindowKind::Hop { slide_ms, size_ms })
            }
            ("CUMULATE", [table, time, step, size]) => {
                let (input, time_column) = window_input(&function, table, time, context)?;
                let step_ms = interval_ms(step, context, "CUMULATE step")?;
                let size_ms = interval_ms(size, context, "CUMULATE size")?;
                if size_ms % step_ms != 0 {
                    return datafusion::common::plan_err!(
                        "CUMULATE size ({}) must be a multiple of its step ({})",
                        crate::window::format_duration(size_ms),
                        crate::window::format_duration(step_ms)
                    );
                }
                (
                    input,
                    time_column,
                    WindowKind::Cumulate { step_ms, size_ms },
                )
            }
            ("SESSION", [table, keys, time, gap]) if partition_keys_call(keys).is_some() => {
                let (input, time_column) = window_input(&function, table, time, context)?;
                let gap_ms = interval_ms(gap, context, "SESSION gap")?;
                let keys = partition_keys_call(keys).unwrap_or_default();
                let partition_keys = keys
                    .iter()
                    .map(|key| column_index(&input, key, context, "SESSION PARTITION BY"))
                    .collect::<DFResult<Vec<_>>>()?;
                return plan_window(
                    input,
                    WindowKind::Session { gap_ms },
                    time_column,
                    partition_keys,
                    alias,
                );
            }
            ("SESSION", [table, time, gap]) => {
                let (input, time_column) = window_input(&function, table, time, context)?;
                let gap_ms = interval_ms(gap, context, "SESSION gap")?;
                (input, time_column, WindowKind::Session { gap_ms })
            }
            (_, args) => {
                let signature = match function.as_str() {
                    "TUMBLE" => "TUMBLE(TABLE t, DESCRIPTOR(time_column), size)",
                    "HOP" => "HOP(TABLE t, DESCRIPTOR(time_column), slide, size)",
                    "SESSION" => {
                        "SESSION(TABLE t [PARTITION BY key], DESCRIPTOR(time_column), gap)"
                    }
                    _ => "CUMULATE(TABLE t, DESCRIPTOR(time_column), step, size)",
                };
                return datafusion::common::plan_err!(
                    "{function} takes {signature}; got {} arguments (the offset argument is not supported)",
                    args.len()
                );
            }
        };
        plan_window(input, kind, time_column, Vec::new(), alias)
    }
}

/// The planned window relation.
fn plan_window(
    input: LogicalPlan,
    kind: WindowKind,
    time_column: usize,
    partition_keys: Vec<usize>,
    alias: Option<TableAlias>,
) -> DFResult<RelationPlanning> {
    let node = WindowTvf::try_new(input, kind, time_column, partition_keys)?;
    let plan = LogicalPlan::Extension(Extension {
        node: Arc::new(node),
    });
    Ok(RelationPlanning::Planned(Box::new(PlannedRelation::new(
        plan, alias,
    ))))
}

/// The key expressions of `PARTITION_KEYS(...)`, which the parser writes for a session's
/// `PARTITION BY`.
fn partition_keys_call(arg: &SqlExpr) -> Option<Vec<SqlExpr>> {
    let SqlExpr::Function(f) = arg else {
        return None;
    };
    if !f.name.to_string().eq_ignore_ascii_case("PARTITION_KEYS") {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else {
        return Some(Vec::new());
    };
    Some(
        list.args
            .iter()
            .filter_map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                _ => None,
            })
            .collect(),
    )
}

/// The index in `input` of the column `arg` names.
fn column_index(
    input: &LogicalPlan,
    arg: &SqlExpr,
    context: &mut dyn RelationPlannerContext,
    what: &str,
) -> DFResult<usize> {
    let name = match arg {
        SqlExpr::Identifier(ident) => context.normalize_ident(ident.clone()),
        other => return datafusion::common::plan_err!("{what} takes column names, found {other}"),
    };
    input
        .schema()
        .index_of_column_by_name(None, &name)
        .ok_or_else(|| {
            DataFusionError::Plan(format!(
                "{what}: {name} names no column of the table (columns: {})",
                input
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// The table and time column arguments of a window function: its input plan and the
/// time column's index in it.
fn window_input(
    function: &str,
    table: &SqlExpr,
    time: &SqlExpr,
    context: &mut dyn RelationPlannerContext,
) -> DFResult<(LogicalPlan, usize)> {
    let input = plan_table_argument(table, context)?;
    let time_name = descriptor_column(time, context)?;
    let time_column =
        input
            .schema()
            .index_of_column_by_name(None, &time_name)
            .ok_or_else(|| {
                DataFusionError::Plan(format!(
            "{function}: DESCRIPTOR({time_name}) names no column of the table (columns: {})",
            input.schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
        ))
            })?;
    Ok((input, time_column))
}

/// The first argument of a window function: a table (or view) name.
fn plan_table_argument(
    arg: &SqlExpr,
    context: &mut dyn RelationPlannerContext,
) -> DFResult<LogicalPlan> {
    let idents = match arg {
        SqlExpr::Identifier(ident) => vec![ident.clone()],
        SqlExpr::CompoundIdentifier(idents) => idents.clone(),
        SqlExpr::Subquery(query) => {
            return context.plan(TableFactor::Derived {
                lateral: false,
                subquery: query.clone(),
                alias: None,
                sample: None,
            })
        }
        other => {
            return datafusion::common::plan_err!(
                "the first argument of a window function must be TABLE name, found {other}"
            )
        }
    };
    let reference = context.object_name_to_table_reference(ObjectName::from(idents))?;
    let source = context
        .context_provider()
        .get_table_source(reference.clone())?;
    LogicalPlanBuilder::scan(reference, source, None)?.build()
}

/// `DESCRIPTOR(col)` or a bare `col`.
fn descriptor_column(arg: &SqlExpr, context: &mut dyn RelationPlannerContext) -> DFResult<String> {
    match arg {
        SqlExpr::Identifier(ident) => Ok(context.normalize_ident(ident.clone())),
        SqlExpr::Function(f) if f.name.to_string().eq_ignore_ascii_case("DESCRIPTOR") => {
            match &f.args {
                FunctionArguments::List(list) if list.args.len() == 1 => match &list.args[0] {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::Identifier(ident))) => {
                        Ok(context.normalize_ident(ident.clone()))
                    }
                    other => datafusion::common::plan_err!(
                        "DESCRIPTOR takes one column name, found {other}"
                    ),
                },
                _ => datafusion::common::plan_err!("DESCRIPTOR takes one column name"),
            }
        }
        other => datafusion::common::plan_err!("expected DESCRIPTOR(time_column), found {other}"),
    }
}

/// A constant interval argument in milliseconds; must be positive and month-free.
fn interval_ms(
    arg: &SqlExpr,
    context: &mut dyn RelationPlannerContext,
    what: &str,
) -> DFResult<i64> {
    let expr = context.sql_to_expr(arg.clone(), &DFSchema::empty())?;
    let ms = match &expr {
        Expr::Literal(value, _) => scalar_interval_ms(value),
        _ => None,
    };
    match ms {
        Some(ms) if ms > 0 => Ok(ms),
        _ => datafusion::common::plan_err!(
            "{what} must be a positive constant interval of days or less, such as INTERVAL '5' MINUTES; found {arg}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::{parse_script, Statement};

    fn catalog_with_claims(planner: &StreamPlanner) -> Catalog {
        let mut catalog = Catalog::default();
        let sql = "CREATE TABLE claims (
                claim_id STRING, policy_id BIGINT, amount DECIMAL(12, 2), operation STRING,
                event_time TIMESTAMP(3),
                amount_x2 AS amount * 2,
                WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
            ) WITH ('connector' = 'filesystem', 'path' = 'x', 'format' = 'json')";
        let Statement::CreateTable(t) = parse_script(sql).unwrap().remove(0) else {
            panic!()
        };
        catalog
            .add_table(planner.create_table(&catalog, *t).unwrap())
            .unwrap();
        catalog
    }

    fn plan(planner: &StreamPlanner, catalog: &Catalog, sql: &str) -> Result<StreamPlan> {
        let Statement::Query(q) = parse_script(sql).unwrap().remove(0) else {
            panic!()
        };
        planner.plan_query(catalog, *q, None)
    }

    #[test]
    fn resolves_computed_columns_and_watermark() {
        let planner = StreamPlanner::new();
        let catalog = catalog_with_claims(&planner);
        let claims = catalog.table("CLAIMS").unwrap();
        assert_eq!(claims.physical_schema.fields().len(), 5);
        assert_eq!(claims.schema.fields().len(), 6);
        assert!(matches!(
            claims.schema.field(5).data_type(),
            DataType::Decimal128(_, 2)
        ));
        assert_eq!(claims.watermark.as_ref().unwrap().column_index, 4);
    }

    #[test]
    fn plans_the_claims_tumbling_aggregate() {
        let planner = StreamPlanner::new();
        let catalog = catalog_with_claims(&planner);
        let plan = plan(
            &planner,
            &catalog,
            "SELECT policy_id, window_start, window_end, COUNT(*) AS claim_count, SUM(amount) AS total_amount
             FROM TABLE(TUMBLE(TABLE claims, DESCRIPTOR(event_time), INTERVAL '5' MINUTES))
             WHERE operation = 'INSERT'
             GROUP BY policy_id, window_start, window_end",
        )
        .unwrap();
        let text = plan.to_string();
        assert!(text.contains("WindowAggregate: TUMBLE(size=5m)"), "{text}");
        assert!(text.contains("WindowAssign"), "{text}");
        let names: Vec<_> = plan
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            [
                "policy_id",
                "window_start",
                "window_end",
                "claim_count",
                "total_amount"
            ]
        );
    }

    #[test]
    fn unwindowed_aggregates_are_updating_and_feed_no_window() {
        let planner = StreamPlanner::new();
        let catalog = catalog_with_claims(&planner);
        let updating = plan(
            &planner,
            &catalog,
            "SELECT policy_id, COUNT(*) FROM claims GROUP BY policy_id",
        )
        .unwrap();
        assert!(updating.root.is_updating());
        assert!(crate::changelog::is_changelog(&updating.schema()));
        let err = plan(
            &planner,
            &catalog,
            "SELECT window_start, SUM(n) FROM TUMBLE(
               (SELECT policy_id, MAX(event_time) AS ts, COUNT(*) AS n FROM claims GROUP BY policy_id),
               ts, INTERVAL '1' MINUTE) GROUP BY window_start, window_end",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("cannot read an updating stream"),
            "{err}"
        );
        let err = plan(
            &planner,
            &catalog,
            "SELECT * FROM (SELECT policy_id, ROW_NUMBER() OVER (PARTITION BY policy_id ORDER BY amount) AS rn FROM claims) WHERE rn > 3",
        )
        .unwrap_err();
        assert!(err.to_string().contains("must be limited"), "{err}");
        let err = plan(&planner, &catalog, "SELECT * FROM nope").unwrap_err();
        assert!(err.to_string().contains("unknown table 'nope'"), "{err}");
    }
}
