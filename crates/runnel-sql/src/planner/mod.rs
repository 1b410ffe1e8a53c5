//! The streaming planner: resolves `CREATE TABLE` / `CREATE VIEW` against the catalog and
//! turns queries into [`StreamPlan`]s. By topic: `ddl.rs` (tables), `context.rs` (what
//! DataFusion's planner sees of the catalog), `window_tvf.rs` (window table functions),
//! `rewrite.rs` (logical plan → stream nodes), `joins.rs` and `over.rs`.
//!
//! A query goes SQL → DataFusion `LogicalPlan` (via `SqlToRel`, with window table functions
//! planned into [`WindowTvf`] nodes) → DataFusion's analyzer and optimizer → the streaming
//! rewrite, which maps each logical node to a streaming node or refuses the query with
//! the reason. Nothing that matches no streaming pattern is run.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchemaRef};
use datafusion::error::DataFusionError;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::planner::RelationPlanner;
use datafusion::logical_expr::{
    AggregateUDF, Expr, Extension, LogicalPlan, LogicalPlanBuilder, ScalarUDF,
};
use datafusion::prelude::SessionConfig;
use datafusion::sql::planner::SqlToRel;
use datafusion::sql::sqlparser::ast::{Query, Statement as SqlStatement};

use crate::catalog::{Catalog, TableDef, ViewDef};
use crate::error::{Result, SqlError};
use crate::plan::{StreamNode, StreamPlan};
use crate::window::WindowTvf;

mod context;
mod ddl;
mod finished_groups;
mod joins;
mod over;
mod read_fields;
mod read_once;
mod rewrite;
mod window_tvf;

pub use context::CatalogTableSource;
use context::PlanningContext;
use joins::bound_by_ttl;
pub(crate) use rewrite::{scalar_interval_ms, to_stream};
use window_tvf::WindowTvfPlanner;

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

    /// Plans the one query of `script` over the tables the script's `CREATE TABLE`s
    /// declare (for tools and tests that hold a query and its tables as one text).
    pub fn plan_script(&self, script: &str, options: &PlanOptions) -> Result<StreamPlan> {
        let mut catalog = Catalog::default();
        let mut plan = None;
        for statement in crate::parse_script(script)? {
            match statement {
                crate::Statement::CreateTable(table) => {
                    let table = self.create_table(&catalog, *table)?;
                    catalog.add_table(table)?;
                }
                crate::Statement::Query(query) if plan.is_none() => {
                    plan = Some(self.plan_query_with(&catalog, *query, None, options)?)
                }
                _ => {
                    return Err(SqlError::Plan(
                        "a script to plan holds CREATE TABLEs and one query".into(),
                    ))
                }
            }
        }
        plan.ok_or_else(|| SqlError::Plan("the script holds no query".into()))
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
        let mut root = to_stream(&plan)?;
        let lateness_ms = options.allow_lateness_ms.filter(|&ms| ms > 0);
        if lateness_ms.is_some() || options.early_fire_ms.is_some() {
            root = crate::lateness::allow_lateness(
                root,
                lateness_ms.unwrap_or(0),
                options.early_fire_ms,
            )?;
        }
        finished_groups::free_finished_groups(&mut root);
        if let Some(ttl_ms) = options.state_ttl_ms {
            expire_idle_groups(&mut root, ttl_ms);
        }
        if let Some(sink) = &sink {
            root = upsert_materialize(root, sink, options.upsert_materialize);
        }
        if !options.separate_source_reads {
            read_once::read_each_table_once(&mut root)?;
        }
        read_fields::push_down_field_reads(&mut root);
        let planned = StreamPlan {
            root,
            sink,
            logical: plan,
            reuse_sources: !options.separate_source_reads,
            reuse_sub_plans: !options.separate_sub_plans,
        };
        if options.refuse_unbounded_state {
            if let Some(unbounded) = planned.unbounded_state().into_iter().next() {
                return Err(SqlError::Unsupported(format!(
                    "{unbounded} (refused: SET 'runnel.state.unbounded' = 'refuse')"
                )));
            }
        }
        Ok(planned)
    }
}

/// Job-level choices that shape a plan.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// `SET 'table.optimizer.reuse-source-enabled' = 'false'`: each scan of a table reads
    /// it on its own, instead of one read for every scan of it (see [`read_once`]).
    pub separate_source_reads: bool,
    /// `SET 'table.optimizer.reuse-sub-plan-enabled' = 'false'`: a subtree the plan holds
    /// more than once runs once per use (see [`StreamPlan::reuse_sub_plans`]).
    pub separate_sub_plans: bool,
    /// Columns windows keep even when the query does not read them (the late-data sink's).
    pub keep_columns: Vec<String>,
    /// `SET 'table.exec.state.ttl'`: a join of two append-only streams with no time bound
    /// keeps each row for this much event time (it becomes an interval join of ± the TTL
    /// on the inputs' event-time columns), and an aggregate without a window frees a group
    /// this much event time after its last change.
    pub state_ttl_ms: Option<i64>,
    /// `SET 'table.exec.emit.allow-lateness'`: window aggregates keep each window this
    /// long after it fired and update its rows when late rows arrive (see
    /// [`crate::lateness`]).
    pub allow_lateness_ms: Option<i64>,
    /// `SET 'table.exec.emit.early-fire.enabled' = 'true'` with its
    /// `'table.exec.emit.early-fire.delay'` (default 0: after every batch): window
    /// aggregates emit an open window's changed rows that often, as updates.
    pub early_fire_ms: Option<i64>,
    /// `SET 'table.exec.sink.upsert-materialize'`: when changes going into a sink with a
    /// primary key are first put in order per key.
    pub upsert_materialize: UpsertMaterialize,
    /// `SET 'runnel.state.unbounded' = 'refuse'`: a plan with an operator whose state
    /// grows without bound ([`StreamPlan::unbounded_state`]) is refused instead of run
    /// with a warning.
    pub refuse_unbounded_state: bool,
}

/// Flink's `table.exec.sink.upsert-materialize`: whether an updating query's changes are
/// put in order per sink key before a sink with a primary key
/// ([`StreamNode::UpsertMaterialize`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UpsertMaterialize {
    /// Never (the user knows each key's changes arrive in order).
    None,
    /// When the query can reorder a key's changes: it has a regular join.
    #[default]
    Auto,
    /// Always, for an updating query into a sink with a primary key.
    Force,
}

impl UpsertMaterialize {
    /// The mode a setting's value names (`NONE`, `AUTO`, `FORCE`, any case).
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_uppercase().as_str() {
            "NONE" => Some(Self::None),
            "AUTO" => Some(Self::Auto),
            "FORCE" => Some(Self::Force),
            _ => None,
        }
    }
}

/// `table.exec.state.ttl` for every aggregate without a window over a table with an event
/// time: its groups are freed `ttl_ms` of event time after their last change. When the
/// query does not read the event-time column, the optimizer pruned it from the
/// aggregate's input: it is read again ([`read_column_again`]).
fn expire_idle_groups(node: &mut StreamNode, ttl_ms: i64) {
    if let StreamNode::RegularJoin(_) = node {
        expire_join_rows(node, ttl_ms);
    }
    if let StreamNode::TopN(top) = node {
        if top.input_time.is_some() {
            top.state_ttl_ms = ttl_ms;
        }
    }
    if let StreamNode::UpdatingAggregate(aggregate) = node {
        if aggregate.fires_at_window_end.is_none() {
            if aggregate.input_time.is_none() {
                let mut tables = Vec::new();
                aggregate.input.collect_sources(&mut tables);
                let time = match tables.as_slice() {
                    [table] => table.watermark.as_ref().map(|w| w.column.clone()),
                    _ => None,
                };
                if let Some(time) = time {
                    aggregate.input_time = read_column_again(&mut aggregate.input, &time);
                    aggregate.input_schema = aggregate.input.schema();
                }
            }
            if aggregate.input_time.is_some() {
                aggregate.state_ttl_ms = ttl_ms;
            }
        }
    }
    for input in node.inputs_mut() {
        expire_idle_groups(input, ttl_ms);
    }
}

/// `table.exec.state.ttl` for a regular join whose sides each read one table with an
/// event time: live rows are dropped that long after the watermark passed their time.
/// Event-time columns the query pruned are read again and projected away after the join.
fn expire_join_rows(node: &mut StreamNode, ttl_ms: i64) {
    let StreamNode::RegularJoin(join) = node else {
        return;
    };
    let time_of = |side: &mut StreamNode| -> Option<usize> {
        let mut tables = Vec::new();
        side.collect_sources(&mut tables);
        let [table] = tables.as_slice() else {
            return None;
        };
        let name = table.watermark.as_ref()?.column.clone();
        read_column_again(side, &name)
    };
    let (Some(left_time), Some(right_time)) = (time_of(&mut join.left), time_of(&mut join.right))
    else {
        return;
    };
    let original = join.schema.clone();
    // A column read again comes last; the join sees it under the side's alias.
    let widen = |schema: &DFSchemaRef, side: &StreamNode, at: usize| -> Option<DFSchemaRef> {
        if at < schema.fields().len() {
            return Some(schema.clone());
        }
        let qualifier = schema.iter().next().and_then(|(q, _)| q.cloned());
        let mut fields: Vec<_> = schema
            .iter()
            .map(|(q, f)| (q.cloned(), f.clone()))
            .collect();
        fields.push((qualifier, side.schema().fields()[at].clone()));
        datafusion::common::DFSchema::new_with_metadata(fields, Default::default())
            .ok()
            .map(Arc::new)
    };
    let (Some(left_schema), Some(right_schema)) = (
        widen(&join.left_schema, &join.left, left_time),
        widen(&join.right_schema, &join.right, right_time),
    ) else {
        return;
    };
    join.left_schema = left_schema;
    join.right_schema = right_schema;
    join.state_ttl = Some((left_time, right_time, ttl_ms));
    let widened = match join.left_schema.join(&join.right_schema) {
        Ok(schema) => Arc::new(schema),
        Err(_) => return,
    };
    if widened.fields().len() == original.fields().len() {
        return;
    }
    join.schema = widened.clone();
    let placeholder = StreamNode::Union {
        inputs: Vec::new(),
        schema: original.clone(),
    };
    let join = std::mem::replace(node, placeholder);
    *node = StreamNode::Projection {
        input: Box::new(join),
        exprs: original.columns().into_iter().map(Expr::Column).collect(),
        input_schema: widened,
        schema: original,
    };
}

/// Makes the table column `name` an output column of `node` (sources, their changelog
/// normalization, filters and projections over them) and returns its index; `None` when
/// `node` is something else.
fn read_column_again(node: &mut StreamNode, name: &str) -> Option<usize> {
    let existing = |schema: &datafusion::common::DFSchema| {
        schema.fields().iter().position(|f| f.name() == name)
    };
    match node {
        StreamNode::ChangelogNormalize(n) => existing(&n.schema),
        StreamNode::Source(source) => {
            if let Some(at) = existing(&source.schema) {
                return Some(at);
            }
            let index = source.table.schema.index_of(name).ok()?;
            let projection = source.projection.as_mut()?;
            projection.push(index);
            let qualifier = source.schema.qualified_field(0).0.cloned();
            let mut fields: Vec<_> = source
                .schema
                .iter()
                .map(|(q, f)| (q.cloned(), f.clone()))
                .collect();
            fields.push((
                qualifier,
                Arc::new(source.table.schema.field(index).clone()),
            ));
            source.schema = Arc::new(
                datafusion::common::DFSchema::new_with_metadata(fields, Default::default()).ok()?,
            );
            Some(source.schema.fields().len() - 1)
        }
        StreamNode::Filter {
            input,
            input_schema,
            ..
        } => {
            let at = read_column_again(input, name)?;
            *input_schema = input.schema();
            Some(at)
        }
        StreamNode::Projection {
            input,
            exprs,
            input_schema,
            schema,
        } => {
            if let Some(at) = existing(schema) {
                return Some(at);
            }
            let inner = read_column_again(input, name)?;
            *input_schema = input.schema();
            pass_through(exprs, schema, input_schema, inner)
        }
        _ => None,
    }
}

/// The index in a projection's output (`exprs`, `schema`) of its input's column `at`:
/// the projection's own when it has the plain column already, else the column added at
/// its end. `None` (and the projection unchanged) when the widened schema is invalid.
fn pass_through(
    exprs: &mut Vec<Expr>,
    schema: &mut DFSchemaRef,
    input_schema: &datafusion::common::DFSchema,
    at: usize,
) -> Option<usize> {
    let (qualifier, field) = input_schema.qualified_field(at);
    let column = datafusion::common::Column::from((qualifier, field));
    if let Some(existing) = exprs
        .iter()
        .position(|e| matches!(e, Expr::Column(c) if *c == column))
    {
        return Some(existing);
    }
    let fields: Vec<_> = schema
        .iter()
        .map(|(q, f)| (q.cloned(), f.clone()))
        .chain([(qualifier.cloned(), field.clone())])
        .collect();
    *schema =
        Arc::new(datafusion::common::DFSchema::new_with_metadata(fields, Default::default()).ok()?);
    exprs.push(Expr::Column(column));
    Some(schema.fields().len() - 1)
}

/// `root` with its changes put in order per key of `sink`, when `mode` asks for it.
fn upsert_materialize(root: StreamNode, sink: &TableDef, mode: UpsertMaterialize) -> StreamNode {
    fn has_regular_join(node: &StreamNode) -> bool {
        matches!(node, StreamNode::RegularJoin(_))
            || node.inputs().into_iter().any(has_regular_join)
    }
    let wanted = match mode {
        UpsertMaterialize::None => false,
        UpsertMaterialize::Auto => has_regular_join(&root),
        UpsertMaterialize::Force => true,
    };
    if !wanted || !root.is_updating() || sink.primary_key.is_empty() {
        return root;
    }
    StreamNode::UpsertMaterialize(crate::plan::UpsertMaterializeNode {
        input: Box::new(root),
        keys: sink.primary_key_indexes(),
    })
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
    let written = sink.written_schema();
    let sink_fields = written.fields();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::{parse_script, Statement};
    use datafusion::arrow::datatypes::DataType;

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

    /// A query with a regular join into a sink with a primary key has its changes put in
    /// order per sink key (unless `NONE`); an aggregate keyed as its sink does not.
    #[test]
    fn upserts_of_a_regular_join_are_materialized_per_sink_key() {
        let planner = StreamPlanner::new();
        let mut catalog = Catalog::default();
        let ddl = "CREATE TABLE claims (claim_id BIGINT, policy_id BIGINT, amount DECIMAL(12, 2),
                PRIMARY KEY (claim_id) NOT ENFORCED)
                WITH ('connector' = 'filesystem', 'path' = 'x', 'format' = 'debezium-json');
            CREATE TABLE policies (policy_id BIGINT, holder STRING, PRIMARY KEY (policy_id) NOT ENFORCED)
                WITH ('connector' = 'filesystem', 'path' = 'y', 'format' = 'debezium-json');
            CREATE TABLE joined (claim_id BIGINT, holder STRING, PRIMARY KEY (claim_id) NOT ENFORCED)
                WITH ('connector' = 'jdbc', 'url' = 'jdbc:postgresql://h/db', 'table-name' = 'j');
            CREATE TABLE totals (policy_id BIGINT, total DECIMAL(22, 2), PRIMARY KEY (policy_id) NOT ENFORCED)
                WITH ('connector' = 'jdbc', 'url' = 'jdbc:postgresql://h/db', 'table-name' = 't')";
        for statement in parse_script(ddl).unwrap() {
            let Statement::CreateTable(t) = statement else {
                panic!()
            };
            catalog
                .add_table(planner.create_table(&catalog, *t).unwrap())
                .unwrap();
        }
        let planned = |sink: &str, sql: &str, mode: UpsertMaterialize| {
            let Statement::Query(q) = parse_script(sql).unwrap().remove(0) else {
                panic!()
            };
            let options = PlanOptions {
                upsert_materialize: mode,
                ..PlanOptions::default()
            };
            planner
                .plan_query_with(&catalog, *q, catalog.table(sink), &options)
                .unwrap()
                .root
        };
        let join = "SELECT c.claim_id, p.holder FROM claims c JOIN policies p ON c.policy_id = p.policy_id";
        let totals = "SELECT policy_id, SUM(amount) FROM claims GROUP BY policy_id";
        let root = planned("joined", join, UpsertMaterialize::Auto);
        let StreamNode::UpsertMaterialize(m) = &root else {
            panic!("not materialized: {}", root.name())
        };
        assert_eq!(m.keys, [0]);
        assert!(root.is_updating());
        let root = planned("joined", join, UpsertMaterialize::None);
        assert!(!matches!(root, StreamNode::UpsertMaterialize(_)));
        let root = planned("totals", totals, UpsertMaterialize::Auto);
        assert!(!matches!(root, StreamNode::UpsertMaterialize(_)));
        let root = planned("totals", totals, UpsertMaterialize::Force);
        assert!(matches!(root, StreamNode::UpsertMaterialize(_)));
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
