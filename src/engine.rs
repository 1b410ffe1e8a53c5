//! [`Engine`]: a session that keeps a catalog and starts jobs.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
use futures::Stream;
use runnel_connectors::memory::{MemoryTable, MemoryTables};
use runnel_connectors::Connectors;
use runnel_runtime::{spawn_job, ChannelSink, ConnectorFactory, JobHandle, JobMetrics, TableSink};
use runnel_sql::{parse_script, Catalog, Statement, StreamPlan, StreamPlanner, TableDef};
use tokio::sync::mpsc;

use crate::config::EngineConfig;
use crate::error::{Result, RunnelError};

/// What one statement did.
pub enum Executed {
    /// A table or view was declared.
    Created(String),
    /// A `SET` was recorded; `warning` says when Runnel does not act on the key.
    Set {
        key: String,
        value: String,
        warning: Option<String>,
    },
    /// An `INSERT INTO` job started; it runs until its sources end or it is stopped.
    Job(JobHandle),
    /// A bare `SELECT` started; its rows arrive on the stream.
    Query(QueryStream),
    /// `EXPLAIN`: the statement's plan, as [`Engine::explain`] prints it.
    Explained(String),
}

/// A job the engine started, as [`Engine::jobs`] lists it.
#[derive(Debug, Clone)]
pub struct JobInfo {
    /// Numbered from 1 in start order.
    pub id: u64,
    /// The statement that started it.
    pub statement: String,
    pub started: Instant,
    pub metrics: Arc<JobMetrics>,
}

/// A session: tables, views and settings, and the jobs started from them. Cheap to share
/// by reference across tasks; planning never holds a lock across an `.await`.
pub struct Engine {
    catalog: Mutex<Catalog>,
    settings: Mutex<BTreeMap<String, String>>,
    planner: RwLock<StreamPlanner>,
    connectors: Arc<dyn ConnectorFactory>,
    memory: Option<MemoryTables>,
    /// Kafka client properties every Kafka table gets unless it sets them itself.
    kafka_properties: BTreeMap<String, String>,
    jobs: Mutex<Vec<JobInfo>>,
    faults: Mutex<runnel_runtime::FaultInjection>,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new(EngineConfig::default())
    }
}

/// A poisoned lock still holds consistent data here: every change under these locks is
/// a single insert or replace.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Engine {
    /// An engine with the built-in connectors and `config`'s settings.
    pub fn new(config: EngineConfig) -> Self {
        let connectors = Connectors::default();
        let memory = connectors.memory.clone();
        let mut engine = Self::with_connectors(Arc::new(connectors));
        engine.memory = Some(memory);
        // `properties.bootstrap.servers` and `bootstrap.servers` mean the same here.
        engine.kafka_properties = config
            .kafka_properties
            .into_iter()
            .map(|(key, value)| match key.strip_prefix("properties.") {
                Some(key) => (key.to_string(), value),
                None => (key, value),
            })
            .collect();
        *lock(&engine.settings) = config.settings;
        engine
    }

    /// An engine with custom connectors (for embedding and tests); memory tables are
    /// part of the built-in connectors and not available here.
    pub fn with_connectors(connectors: Arc<dyn ConnectorFactory>) -> Self {
        Self {
            catalog: Mutex::new(Catalog::default()),
            settings: Mutex::new(BTreeMap::new()),
            planner: RwLock::new(StreamPlanner::new()),
            connectors,
            memory: None,
            kafka_properties: BTreeMap::new(),
            jobs: Mutex::new(Vec::new()),
            faults: Mutex::new(Default::default()),
        }
    }

    fn planner(&self) -> std::sync::RwLockReadGuard<'_, StreamPlanner> {
        self.planner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a Rust scalar function (a DataFusion [`ScalarUDF`]) for the statements
    /// that follow.
    pub fn register_udf(&self, udf: ScalarUDF) -> Result<()> {
        let mut planner = self.planner.write().unwrap_or_else(|p| p.into_inner());
        Ok(planner.register_udf(udf)?)
    }

    /// Registers a Rust aggregate function (a DataFusion [`AggregateUDF`]) for the
    /// statements that follow; windows and `GROUP BY` use it like a built-in aggregate.
    pub fn register_udaf(&self, udaf: AggregateUDF) -> Result<()> {
        let mut planner = self.planner.write().unwrap_or_else(|p| p.into_inner());
        Ok(planner.register_udaf(udaf)?)
    }

    /// The writing end of the memory table `name` (declared with
    /// `'connector' = 'memory'`): push Arrow batches into it; queries reading it see them.
    pub fn memory_table(&self, name: &str) -> Result<MemoryTable> {
        let table = self.catalog().require_table(name)?;
        let Some(memory) = &self.memory else {
            return Err(RunnelError::Usage(
                "this engine was built with custom connectors, which have no memory tables".into(),
            ));
        };
        Ok(memory.table(&table)?)
    }

    /// A declared table, as the catalog resolved it.
    pub fn table(&self, name: &str) -> Option<Arc<TableDef>> {
        self.catalog().table(name)
    }

    /// The columns of a table or view (`DESCRIBE`).
    pub fn schema_of(&self, name: &str) -> Option<SchemaRef> {
        let catalog = self.catalog();
        if let Some(table) = catalog.table(name) {
            return Some(table.schema.clone());
        }
        catalog
            .view(name)
            .map(|view| Arc::new(view.plan.schema().as_arrow().clone()))
    }

    /// Every job started so far, running or ended, with its live counters.
    pub fn jobs(&self) -> Vec<JobInfo> {
        lock(&self.jobs).clone()
    }

    fn register_job(&self, statement: String, job: &JobHandle) -> u64 {
        let mut jobs = lock(&self.jobs);
        let id = jobs.len() as u64 + 1;
        jobs.push(JobInfo {
            id,
            statement,
            started: Instant::now(),
            metrics: job.metrics_handle(),
        });
        id
    }

    /// Failures to inject into jobs started from now on (recovery tests).
    pub fn inject_faults(&self, faults: runnel_runtime::FaultInjection) {
        *lock(&self.faults) = faults;
    }

    fn catalog(&self) -> MutexGuard<'_, Catalog> {
        lock(&self.catalog)
    }

    /// The value of a `SET` key, if set.
    pub fn setting(&self, key: &str) -> Option<String> {
        lock(&self.settings).get(key).cloned()
    }

    /// Every `SET` key and its value.
    pub fn settings(&self) -> BTreeMap<String, String> {
        lock(&self.settings).clone()
    }

    /// Names of the declared tables and views.
    pub fn tables(&self) -> Vec<String> {
        self.catalog().names()
    }

    /// One declared Kafka table per cluster (by `properties.bootstrap.servers`): what the
    /// shell reaches a cluster through, with the table's security settings.
    fn kafka_clusters(&self) -> Vec<(String, Arc<TableDef>)> {
        let catalog = self.catalog();
        let mut clusters: BTreeMap<String, Arc<TableDef>> = BTreeMap::new();
        for name in catalog.names() {
            let Some(table) = catalog.table(&name) else {
                continue;
            };
            if !matches!(table.connector(), Some("kafka" | "upsert-kafka")) {
                continue;
            }
            if let Some(servers) = table.options.get("properties.bootstrap.servers") {
                clusters.entry(servers.clone()).or_insert(table);
            }
        }
        clusters.into_iter().collect()
    }

    /// The Kafka transactions open on the clusters of the declared Kafka tables (`SHOW
    /// TRANSACTIONS`), each with its cluster's bootstrap servers, oldest first. A
    /// transaction left open by a producer that is gone holds back `read_committed`
    /// readers until its timeout; [`Engine::abort_kafka_transaction`] ends it at once.
    pub async fn kafka_transactions(
        &self,
    ) -> Result<
        Vec<(
            String,
            runnel_connectors::kafka::transactions::KafkaTransaction,
        )>,
    > {
        let clusters = self.kafka_clusters();
        if clusters.is_empty() {
            return Err(RunnelError::Usage(
                "SHOW TRANSACTIONS reads the clusters of the declared Kafka tables: declare \
                 one first (CREATE TABLE ... WITH ('connector' = 'kafka', ...))"
                    .into(),
            ));
        }
        let mut open = Vec::new();
        for (servers, table) in clusters {
            let transactions = runnel_connectors::kafka::transactions::transactions(&table).await?;
            open.extend(
                transactions
                    .into_iter()
                    .filter(|t| t.state.is_open())
                    .map(|t| (servers.clone(), t)),
            );
        }
        open.sort_by_key(|(_, t)| t.started_ms);
        Ok(open)
    }

    /// Aborts the open Kafka transaction of `transactional_id` (`ABORT TRANSACTION
    /// 'id'`), found on the clusters of the declared Kafka tables, by fencing its id:
    /// a producer still using it fails on its next write.
    pub async fn abort_kafka_transaction(
        &self,
        transactional_id: &str,
    ) -> Result<runnel_connectors::kafka::transactions::KafkaTransaction> {
        for (_, table) in self.kafka_clusters() {
            let transactions = runnel_connectors::kafka::transactions::transactions(&table).await?;
            if let Some(open) = transactions
                .into_iter()
                .find(|t| t.transactional_id == transactional_id && t.state.is_open())
            {
                runnel_connectors::kafka::transactions::abort_transaction(&table, transactional_id)
                    .await?;
                return Ok(open);
            }
        }
        Err(RunnelError::Usage(format!(
            "no open transaction with transactional id '{transactional_id}' on the clusters \
             of the declared Kafka tables (SHOW TRANSACTIONS lists them)"
        )))
    }

    /// Runs a script of `;`-separated statements in order. DDL and `SET` take effect at
    /// once; each `INSERT INTO` and `SELECT` starts a job. Stops at the first error.
    pub async fn execute(&self, sql: &str) -> Result<Vec<Executed>> {
        let mut results = Vec::new();
        for statement in parse_script(sql)? {
            results.push(self.execute_statement(statement).await?);
        }
        Ok(results)
    }

    /// Applies a declaration (`CREATE TABLE`, `CREATE VIEW`, `SET`); queries are not declarations.
    fn declare(&self, statement: &Statement) -> Result<Executed> {
        match statement {
            Statement::CreateTable(create) => {
                let name = create.name.clone();
                let mut catalog = self.catalog();
                if create.if_not_exists && catalog.contains(&name) {
                    return Ok(Executed::Created(name));
                }
                let mut table = self
                    .planner()
                    .create_table(&catalog, create.as_ref().clone())?;
                if matches!(table.connector(), Some("kafka" | "upsert-kafka")) {
                    for (key, value) in &self.kafka_properties {
                        table
                            .options
                            .entry(format!("properties.{key}"))
                            .or_insert_with(|| value.clone());
                    }
                }
                self.connectors.validate(&table)?;
                table.unique_fields = self.connectors.unique_fields(&table);
                catalog.add_table(table)?;
                Ok(Executed::Created(name))
            }
            Statement::CreateView { name, query } => {
                let mut catalog = self.catalog();
                let view =
                    self.planner()
                        .create_view(&catalog, name.clone(), query.as_ref().clone())?;
                catalog.add_view(view)?;
                Ok(Executed::Created(name.clone()))
            }
            Statement::Set { key, value } => {
                crate::settings::check(key, value)?;
                lock(&self.settings).insert(key.clone(), value.clone());
                Ok(Executed::Set {
                    key: key.clone(),
                    value: value.clone(),
                    warning: crate::settings::warning(key),
                })
            }
            Statement::CreateFunction { name, class } => {
                let known = runnel_sql::functions::KNOWN_JAVA_FUNCTIONS
                    .iter()
                    .find(|(known_class, _)| *known_class == class);
                match known {
                    Some((_, builtin)) if builtin.eq_ignore_ascii_case(name) => {
                        Ok(Executed::Created(name.clone()))
                    }
                    Some((_, builtin)) => Err(runnel_sql::SqlError::Plan(format!(
                        "CREATE FUNCTION {name} AS '{class}': Runnel has this function built in as {builtin}; use that name"
                    ))
                    .into()),
                    None => Err(runnel_sql::SqlError::Plan(format!(
                        "CREATE FUNCTION {name} AS '{class}': Java classes cannot run in Runnel; \
                         register a Rust function through the runnel library instead"
                    ))
                    .into()),
                }
            }
            Statement::Insert { table, .. } => Err(runnel_sql::SqlError::Plan(format!(
                "INSERT INTO {table} is a query, not a declaration"
            ))
            .into()),
            Statement::Explain(_) => {
                Err(runnel_sql::SqlError::Plan("an EXPLAIN is not a declaration".into()).into())
            }
            Statement::Query(_) => {
                Err(runnel_sql::SqlError::Plan("a SELECT is not a declaration".into()).into())
            }
        }
    }

    async fn execute_statement(&self, statement: Statement) -> Result<Executed> {
        match statement {
            Statement::Explain(explained) => {
                Ok(Executed::Explained(self.explain_statement(*explained)?))
            }
            Statement::Insert { table, query } => {
                let text = format!("INSERT INTO {table} {query}");
                let plan = self.plan(*query, Some(&table))?;
                self.log_warnings(&plan);
                let job = self.start(&plan).await?;
                self.register_job(text, &job);
                Ok(Executed::Job(job))
            }
            Statement::Query(query) => {
                let text = query.to_string();
                let plan = self.plan(*query, None)?;
                self.log_warnings(&plan);
                let config = self.job_config_for(&plan)?;
                let (sender, receiver) = mpsc::channel(8);
                let job = spawn_job(
                    &plan,
                    self.connectors.clone(),
                    Arc::new(ChannelSink::new(sender)),
                    &config,
                )
                .await?;
                self.register_job(text, &job);
                Ok(Executed::Query(QueryStream {
                    schema: plan.schema(),
                    receiver,
                    job: Some(job),
                }))
            }
            declaration => self.declare(&declaration),
        }
    }

    /// What a job of `plan` should be told before it starts: settings Runnel does not act
    /// on, and operators whose state grows without bound.
    pub fn warnings(&self, plan: &StreamPlan) -> Vec<String> {
        self.settings()
            .keys()
            .filter_map(|key| crate::settings::warning(key))
            .chain(plan.unbounded_state())
            .collect()
    }

    fn log_warnings(&self, plan: &StreamPlan) {
        for warning in self.warnings(plan) {
            tracing::warn!("{warning}");
        }
    }

    /// Starts an `INSERT INTO` plan.
    async fn start(&self, plan: &StreamPlan) -> Result<JobHandle> {
        let Some(sink_table) = &plan.sink else {
            return Err(runnel_sql::SqlError::Plan("a job needs a sink".into()).into());
        };
        let mut config = self.job_config_for(plan)?;
        config.sink = Some(sink_table.clone());
        if let Some(value) = sink_table.options.get("sink.delivery-guarantee") {
            config.delivery = runnel_runtime::DeliveryGuarantee::parse(value).ok_or_else(|| {
                runnel_sql::SqlError::Plan(format!(
                    "table {}: 'sink.delivery-guarantee' = '{value}' is none of at-most-once, \
                     at-least-once, exactly-once",
                    sink_table.name
                ))
            })?;
        }
        if let Some(scale) = crate::settings::scale_out(&self.settings())? {
            return Ok(runnel_cluster::spawn_member(plan.clone(), config, scale).await?);
        }
        Ok(spawn_job(plan, self.connectors.clone(), Arc::new(TableSink), &config).await?)
    }

    /// Plans a query (into the table `sink` for an `INSERT INTO`) with the session's
    /// settings.
    fn plan(
        &self,
        query: datafusion::sql::sqlparser::ast::Query,
        sink: Option<&str>,
    ) -> Result<StreamPlan> {
        let settings = self.settings();
        let catalog = self.catalog();
        let options = crate::settings::plan_options(&settings, &catalog);
        let sink = sink.map(|name| catalog.require_table(name)).transpose()?;
        Ok(self
            .planner()
            .plan_query_with(&catalog, query, sink, &options)?)
    }

    /// The job-wide settings a job started now gets.
    fn job_config(&self) -> Result<runnel_runtime::JobConfig> {
        let settings = self.settings();
        // Settings given to `Engine::new` were not checked by a SET statement.
        for (key, value) in &settings {
            crate::settings::check(key, value)?;
        }
        let mut config = crate::settings::job_config(&settings, &self.catalog())?;
        config.faults = *lock(&self.faults);
        Ok(config)
    }

    /// The settings a job of `plan` gets: the session's, the tables it reads, and the
    /// dead-letter tables they name.
    fn job_config_for(&self, plan: &StreamPlan) -> Result<runnel_runtime::JobConfig> {
        let mut config = self.job_config()?;
        config.sources = plan.sources();
        let catalog = self.catalog();
        for source in &config.sources {
            let Some(name) = runnel_connectors::format::dead_letter_table(source) else {
                continue;
            };
            let table = catalog.require_table(name).map_err(|e| {
                runnel_sql::SqlError::Plan(format!(
                    "table {}: its dead-letter table: {e}; declare it with CREATE TABLE first",
                    source.name
                ))
            })?;
            config.dead_letter_tables.insert(source.name.clone(), table);
        }
        Ok(config)
    }

    /// Checks a script without running it: declares its tables and views and plans its
    /// queries, going on past errors (a statement that does not parse is reported and
    /// skipped), and returns every error with the number of the statement and the line it
    /// starts on. Only text that cannot be split into statements (an unterminated string
    /// or comment) stops the check early.
    pub fn validate(&self, sql: &str) -> Validation {
        let statements = match runnel_sql::parse_script_each(sql) {
            Ok(statements) => statements,
            Err(e) => {
                return Validation {
                    errors: vec![ScriptError::new(None, 0, &e.into())],
                    warnings: Vec::new(),
                }
            }
        };
        let mut warnings = Vec::new();
        let mut errors: Vec<ScriptError> = self
            .settings()
            .iter()
            .filter_map(|(key, value)| crate::settings::check(key, value).err())
            .map(|e| ScriptError::new(None, 0, &e))
            .collect();
        for (i, located) in statements.into_iter().enumerate() {
            let checked = located
                .statement
                .map_err(RunnelError::from)
                .and_then(|statement| self.plan_statement(statement));
            let place = format!("statement {} (line {})", i + 1, located.line);
            match checked {
                Err(e) => errors.push(ScriptError::new(Some(i + 1), located.line, &e)),
                Ok(Some(plan)) => warnings.extend(
                    plan.unbounded_state()
                        .into_iter()
                        .map(|warning| format!("{place}: {warning}")),
                ),
                Ok(None) => {}
            }
        }
        warnings.extend(
            self.settings()
                .keys()
                .filter_map(|key| crate::settings::warning(key)),
        );
        Validation { errors, warnings }
    }

    /// The streaming plans of a script's queries and `INSERT INTO`s as data, without
    /// running them (its declarations do take effect): for tools, and for benchmarks
    /// that drive one operator by itself.
    pub fn stream_plans(&self, sql: &str) -> Result<Vec<StreamPlan>> {
        let mut plans = Vec::new();
        for statement in parse_script(sql)? {
            plans.extend(self.plan_statement(statement)?);
        }
        Ok(plans)
    }

    /// The streaming plans of a script's queries and `INSERT INTO`s, without running them
    /// (its declarations do take effect).
    pub fn explain(&self, sql: &str) -> Result<String> {
        let mut out = String::new();
        for statement in parse_script(sql)? {
            out.push_str(&self.explain_statement(statement)?);
        }
        Ok(out)
    }

    /// The plan of a query or an `INSERT INTO` (of what an `EXPLAIN` holds); a declaration
    /// takes effect and has none.
    fn plan_statement(&self, statement: Statement) -> Result<Option<StreamPlan>> {
        match statement {
            Statement::Insert { table, query } => self.plan(*query, Some(&table)).map(Some),
            Statement::Query(query) => self.plan(*query, None).map(Some),
            Statement::Explain(explained) => self.plan_statement(*explained),
            declaration => self.declare(&declaration).map(|_| None),
        }
    }

    /// `EXPLAIN`'s text for one statement: its streaming plan, its job graph and its
    /// warnings; nothing for a declaration (which takes effect).
    fn explain_statement(&self, statement: Statement) -> Result<String> {
        let Some(plan) = self.plan_statement(statement)? else {
            return Ok(String::new());
        };
        let mut out = plan.to_string();
        let config = self.job_config()?;
        if let Some(scale) = crate::settings::scale_out(&self.settings())? {
            // Spread over processes, the job is cut into tasks instead of subtasks.
            out.push_str(&runnel_cluster::describe_cut(&plan, &scale)?);
        } else {
            let graph = runnel_runtime::job_graph(&plan, self.connectors.as_ref(), &config)?;
            out.push_str(&graph.to_string());
        }
        for warning in self.warnings(&plan) {
            out.push_str(&format!("Warning: {warning}\n"));
        }
        Ok(out)
    }
}

/// What [`Engine::validate`] found: errors (the script would not run) and warnings (it
/// would, but not all as written: settings ignored, state without bound).
#[derive(Debug, Default)]
pub struct Validation {
    pub errors: Vec<ScriptError>,
    pub warnings: Vec<String>,
}

/// One error [`Engine::validate`] found, with its place in the script. Displayed as
/// `statement 2 (line 5): ...`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptError {
    /// The statement's number (from 1); `None` for an error of the whole script (a
    /// setting, or text that cannot be split into statements).
    pub statement: Option<usize>,
    /// The line the error is on (from 1): a syntax error's own, else the line its
    /// statement starts on; 0 when unknown.
    pub line: u64,
    /// The column (from 1), known for syntax errors.
    pub column: Option<u64>,
    pub message: String,
}

impl ScriptError {
    fn new(statement: Option<usize>, statement_line: u64, error: &RunnelError) -> Self {
        let syntax = match error {
            RunnelError::Sql(runnel_sql::SqlError::Syntax { line, column, .. }) => {
                Some((*line, *column))
            }
            _ => None,
        };
        Self {
            statement,
            line: syntax.map_or(statement_line, |(line, _)| line),
            column: syntax.map(|(_, column)| column),
            message: error.to_string(),
        }
    }
}

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.statement {
            Some(n) => write!(f, "statement {n} (line {}): {}", self.line, self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The live rows of a bare `SELECT`. Ends when the query's sources end; dropping it
/// stops the query.
pub struct QueryStream {
    schema: SchemaRef,
    receiver: mpsc::Receiver<datafusion::error::Result<RecordBatch>>,
    job: Option<JobHandle>,
}

impl QueryStream {
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Waits for the query's job after the stream ended, to learn whether it failed.
    pub async fn finish(mut self) -> Result<runnel_runtime::MetricsSnapshot> {
        self.receiver.close();
        match self.job.take() {
            Some(job) => Ok(job.wait().await?),
            None => Ok(Default::default()),
        }
    }
}

impl Stream for QueryStream {
    type Item = datafusion::error::Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
    }
}

impl Drop for QueryStream {
    fn drop(&mut self) {
        if let Some(job) = &self.job {
            job.abort();
        }
    }
}
