//! [`Engine`]: a session that keeps a catalog and starts jobs.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use futures::Stream;
use runnel_connectors::Connectors;
use runnel_runtime::{spawn_job, ChannelSink, ConnectorFactory, JobHandle};
use runnel_sql::{parse_script, Catalog, Statement, StreamPlan, StreamPlanner};
use tokio::sync::mpsc;

use crate::error::Result;

/// What one statement did.
pub enum Executed {
    /// A table or view was declared.
    Created(String),
    /// A `SET` was recorded.
    Set { key: String, value: String },
    /// An `INSERT INTO` job started; it runs until its sources end or it is stopped.
    Job(JobHandle),
    /// A bare `SELECT` started; its rows arrive on the stream.
    Query(QueryStream),
}

/// A session: tables, views and settings, and the jobs started from them. Cheap to share
/// by reference across tasks; planning never holds a lock across an `.await`.
pub struct Engine {
    catalog: Mutex<Catalog>,
    settings: Mutex<BTreeMap<String, String>>,
    planner: StreamPlanner,
    connectors: Arc<dyn ConnectorFactory>,
    faults: Mutex<runnel_runtime::FaultInjection>,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

impl Engine {
    /// An engine with the built-in connectors.
    pub fn new() -> Self {
        Self::with_connectors(Arc::new(Connectors))
    }

    /// An engine with custom connectors (for embedding and tests).
    pub fn with_connectors(connectors: Arc<dyn ConnectorFactory>) -> Self {
        Self {
            catalog: Mutex::new(Catalog::default()),
            settings: Mutex::new(BTreeMap::new()),
            planner: StreamPlanner::new(),
            connectors,
            faults: Mutex::new(Default::default()),
        }
    }

    /// Failures to inject into jobs started from now on (recovery tests).
    pub fn inject_faults(&self, faults: runnel_runtime::FaultInjection) {
        *self.faults.lock().unwrap_or_else(|p| p.into_inner()) = faults;
    }

    fn catalog(&self) -> MutexGuard<'_, Catalog> {
        // A panic while holding the lock cannot leave the catalog half-changed: every
        // change is one insert.
        self.catalog
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The value of a `SET` key, if set.
    pub fn setting(&self, key: &str) -> Option<String> {
        self.settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// Names of the declared tables and views.
    pub fn tables(&self) -> Vec<String> {
        self.catalog().names()
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
                let table = self
                    .planner
                    .create_table(&catalog, create.as_ref().clone())?;
                self.connectors.validate(&table)?;
                catalog.add_table(table)?;
                Ok(Executed::Created(name))
            }
            Statement::CreateView { name, query } => {
                let mut catalog = self.catalog();
                let view =
                    self.planner
                        .create_view(&catalog, name.clone(), query.as_ref().clone())?;
                catalog.add_view(view)?;
                Ok(Executed::Created(name.clone()))
            }
            Statement::Set { key, value } => {
                crate::settings::check(key, value)?;
                self.settings
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key.clone(), value.clone());
                Ok(Executed::Set {
                    key: key.clone(),
                    value: value.clone(),
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
                    Some((_, builtin)) => Err(runnel_sql::SqlError::Unsupported(format!(
                        "CREATE FUNCTION {name} AS '{class}': Runnel has this function built in as {builtin}; use that name"
                    ))
                    .into()),
                    None => Err(runnel_sql::SqlError::Unsupported(format!(
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
            Statement::Query(_) => {
                Err(runnel_sql::SqlError::Plan("a SELECT is not a declaration".into()).into())
            }
        }
    }

    async fn execute_statement(&self, statement: Statement) -> Result<Executed> {
        match statement {
            Statement::Insert { table, query } => {
                let plan = self.plan(*query, Some(&table))?;
                Ok(Executed::Job(self.start(&plan).await?))
            }
            Statement::Query(query) => {
                let plan = self.plan(*query, None)?;
                let mut config = self.job_config()?;
                config.sources = plan.sources();
                let (sender, receiver) = mpsc::channel(8);
                let job = spawn_job(
                    &plan,
                    self.connectors.as_ref(),
                    Box::new(ChannelSink::new(sender)),
                    &config,
                )
                .await?;
                Ok(Executed::Query(QueryStream {
                    schema: plan.schema(),
                    receiver,
                    job: Some(job),
                }))
            }
            declaration => self.declare(&declaration),
        }
    }

    /// Starts an `INSERT INTO` plan.
    async fn start(&self, plan: &StreamPlan) -> Result<JobHandle> {
        let Some(sink_table) = &plan.sink else {
            return Err(runnel_sql::SqlError::Plan("a job needs a sink".into()).into());
        };
        let mut config = self.job_config()?;
        config.sources = plan.sources();
        if let Some(value) = sink_table.options.get("sink.delivery-guarantee") {
            config.delivery = runnel_runtime::DeliveryGuarantee::parse(value).ok_or_else(|| {
                runnel_sql::SqlError::Plan(format!(
                    "table {}: 'sink.delivery-guarantee' = '{value}' is none of at-most-once, \
                     at-least-once, exactly-once",
                    sink_table.name
                ))
            })?;
        }
        let sink = self
            .connectors
            .create_sink(sink_table, plan.schema(), &config)
            .await?;
        Ok(spawn_job(plan, self.connectors.as_ref(), sink, &config).await?)
    }

    /// Plans a query (into the table `sink` for an `INSERT INTO`) with the session's
    /// settings.
    fn plan(
        &self,
        query: datafusion::sql::sqlparser::ast::Query,
        sink: Option<&str>,
    ) -> Result<StreamPlan> {
        let settings = self
            .settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let catalog = self.catalog();
        let options = crate::settings::plan_options(&settings, &catalog);
        let sink = sink.map(|name| catalog.require_table(name)).transpose()?;
        Ok(self
            .planner
            .plan_query_with(&catalog, query, sink, &options)?)
    }

    /// The job-wide settings a job started now gets.
    fn job_config(&self) -> Result<runnel_runtime::JobConfig> {
        let settings = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        let mut config = crate::settings::job_config(&settings, &self.catalog())?;
        config.faults = *self.faults.lock().unwrap_or_else(|p| p.into_inner());
        Ok(config)
    }

    /// The streaming plans of a script's queries and `INSERT INTO`s, without running them
    /// (its declarations do take effect).
    /// Checks a script without running it: declares its tables and views and plans its
    /// queries, going on past errors, and returns every error with the number of the
    /// statement it is in (a syntax error stops the check: statements cannot be told apart
    /// after it).
    pub fn validate(&self, sql: &str) -> Vec<String> {
        let statements = match parse_script(sql) {
            Ok(statements) => statements,
            Err(e) => return vec![e.to_string()],
        };
        let mut errors = Vec::new();
        for (i, statement) in statements.into_iter().enumerate() {
            let checked = match statement {
                Statement::Insert { table, query } => self.plan(*query, Some(&table)).map(drop),
                Statement::Query(query) => self.plan(*query, None).map(drop),
                declaration => self.declare(&declaration).map(drop),
            };
            if let Err(e) = checked {
                errors.push(format!("statement {}: {e}", i + 1));
            }
        }
        errors
    }

    pub fn explain(&self, sql: &str) -> Result<String> {
        let mut out = String::new();
        for statement in parse_script(sql)? {
            let plan = match statement {
                Statement::Insert { table, query } => self.plan(*query, Some(&table))?,
                Statement::Query(query) => self.plan(*query, None)?,
                declaration => {
                    self.declare(&declaration)?;
                    continue;
                }
            };
            out.push_str(&plan.to_string());
        }
        Ok(out)
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
