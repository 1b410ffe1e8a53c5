//! `'connector' = 'jdbc'`: a PostgreSQL table as a sink (Flink's options: `url`,
//! `table-name`, `username`, `password`, `sink.buffer-flush.max-rows`,
//! `sink.buffer-flush.interval`, `sink.max-retries`), through `tokio-postgres`; and as a
//! bounded source, read whole when the job starts — the table side of a lookup join
//! (`JOIN policies FOR SYSTEM_TIME AS OF c.proc_time`). Values are read as PostgreSQL's
//! text and cast to the columns' types with Arrow's kernels.
//!
//! With a `PRIMARY KEY` the sink upserts: `+I`/`+U` rows become
//! `INSERT ... ON CONFLICT (key) DO UPDATE`, `-D` rows `DELETE ... WHERE key = ...`, `-U`
//! rows are dropped. Rows are held per key until a flush (the buffer is full, its interval
//! passed, a checkpoint is taken, or the input ends), so a key changed many times is
//! written once, and each flush is one transaction. Upserts are idempotent, so replaying
//! after a crash (at-least-once) leaves the table exact. Without a primary key the sink
//! appends, and refuses an updating stream.
//!
//! With `'sink.delivery-guarantee' = 'exactly-once'` nothing is written between
//! checkpoints: a checkpoint's barrier closes the epoch's writes, and once the checkpoint
//! is stored they are written in one transaction together with the checkpoint's id in
//! `runnel_checkpoints` (a table the sink creates in the target table's schema, one row
//! per target table). A restarted job resumes from the checkpoint that row names, so a
//! crash anywhere leaves the table as if each change was written once — also for
//! results a replay would not produce again (a window fired from differently batched
//! input, a join whose inputs interleave differently).
//!
//! Values travel as text and are cast in SQL to the column's type (`$1::text::numeric`),
//! so any PostgreSQL column type that reads its text form works. A failed flush is retried
//! (`sink.max-retries`, with backoff), reconnecting when the connection was lost: a
//! database restart mid-run costs a pause, not the job.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Int8Type, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use runnel_runtime::{CheckpointId, DeliveryGuarantee, JobConfig, Manifest, Sink};
use runnel_sql::changelog::ChangeKind;
use runnel_sql::TableDef;
use tokio_postgres::types::ToSql;

use crate::error::{ConnectorError, Result};
use crate::options::TableOptions;

/// Options the jdbc connector takes.
pub const OPTIONS: &[&str] = &[
    "url",
    "table-name",
    "username",
    "password",
    "driver",
    "sink.buffer-flush.max-rows",
    "sink.buffer-flush.interval",
    "sink.max-retries",
    "sink.parallelism",
    "sink.delivery-guarantee",
    // Lookups read the table whole at the job's start: the whole table is the cache.
    "lookup.cache",
    "lookup.cache.max-rows",
    "lookup.cache.ttl",
    "lookup.max-retries",
    "scan.fetch-size",
];

pub(crate) fn options(table: &TableDef) -> Result<TableOptions<'_>> {
    let options = TableOptions::validate(&table.name, "jdbc", &table.options, OPTIONS, &[])?;
    connection(&options)?;
    options.required("table-name")?;
    options.parse_or::<usize>("sink.buffer-flush.max-rows", 100)?;
    options.duration("sink.buffer-flush.interval")?;
    options.parse_or::<u32>("sink.max-retries", 3)?;
    Ok(options)
}

/// The database a table's `url` (`jdbc:postgresql://host:port/database`) and credentials
/// name.
fn connection(options: &TableOptions) -> Result<tokio_postgres::Config> {
    let url = options.required("url")?;
    let rest = url.strip_prefix("jdbc:postgresql://").ok_or_else(|| {
        options.invalid(
            "url",
            url,
            "expected jdbc:postgresql://host[:port]/database",
        )
    })?;
    let (address, database) = rest.split_once('/').ok_or_else(|| {
        options.invalid(
            "url",
            url,
            "expected jdbc:postgresql://host[:port]/database",
        )
    })?;
    let database = database.split('?').next().unwrap_or(database);
    let (host, port) = match address.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse::<u16>()
                .map_err(|_| options.invalid("url", url, format!("port '{port}' is no number")))?,
        ),
        None => (address, 5432),
    };
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(port)
        .dbname(database)
        .connect_timeout(Duration::from_secs(10))
        .application_name("runnel");
    if let Some(user) = options.get("username") {
        config.user(user);
    }
    if let Some(password) = options.get("password") {
        config.password(password);
    }
    Ok(config)
}

/// `'connector' = 'jdbc'`.
pub struct JdbcConnector;

#[async_trait]
impl crate::Connector for JdbcConnector {
    fn name(&self) -> &'static str {
        "jdbc"
    }

    fn validate(&self, table: &TableDef) -> Result<()> {
        options(table).map(drop)
    }

    async fn open_sink(
        &self,
        table: &TableDef,
        schema: SchemaRef,
        config: &JobConfig,
    ) -> Result<Box<dyn Sink>> {
        let exactly_once = config.delivery == DeliveryGuarantee::ExactlyOnce;
        Ok(Box::new(JdbcSink::open(table, schema, exactly_once).await?))
    }

    /// Read whole at the job's start, the table ends.
    fn is_bounded(&self, _table: &TableDef) -> bool {
        true
    }

    async fn open_source(
        &self,
        table: &TableDef,
        _context: crate::SourceContext<'_>,
    ) -> Result<Box<dyn runnel_runtime::Source>> {
        Ok(Box::new(JdbcSource::read(table).await?))
    }

    fn sink_records_commits(&self, table: &TableDef) -> bool {
        table
            .options
            .get("sink.delivery-guarantee")
            .and_then(|value| DeliveryGuarantee::parse(value))
            == Some(DeliveryGuarantee::ExactlyOnce)
    }

    /// The checkpoint the table's `runnel_checkpoints` row names (none: no row, or no
    /// such table yet).
    async fn committed_checkpoint(&self, table: &TableDef) -> Result<Option<CheckpointId>> {
        let options = options(table)?;
        let target = options.required("table-name")?.to_string();
        let config = connection(&options)?;
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(|e| {
            ConnectorError::Other(format!(
                "PostgreSQL table {target}: reading its last committed checkpoint: {}",
                describe(&e)
            ))
        })?;
        tokio::spawn(connection);
        let sql = format!(
            "SELECT checkpoint_id FROM {} WHERE sink = $1",
            checkpoints_table(&target)
        );
        match client.query_opt(sql.as_str(), &[&target]).await {
            Ok(row) => Ok(row.map(|r| r.get::<_, i64>(0) as CheckpointId)),
            // No table yet: nothing was ever committed.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                Ok(None)
            }
            Err(e) => Err(ConnectorError::Other(format!(
                "PostgreSQL table {target}: reading its last committed checkpoint: {}",
                describe(&e)
            ))),
        }
    }
}

/// A PostgreSQL table read whole: its rows, in batches, then the end.
struct JdbcSource {
    batches: std::collections::VecDeque<RecordBatch>,
}

impl JdbcSource {
    /// Reads every row of `table`'s PostgreSQL table (its physical columns, by name).
    async fn read(table: &TableDef) -> Result<Self> {
        let options = options(table)?;
        let target = options.required("table-name")?.to_string();
        let config = connection(&options)?;
        let failed = |what: &str, e: &tokio_postgres::Error| {
            ConnectorError::Other(format!(
                "PostgreSQL table {target} at {}: {what} failed: {}",
                options.get("url").unwrap_or_default(),
                describe(e)
            ))
        };
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| failed("connecting", &e))?;
        tokio::spawn(connection);
        let schema = table.physical_schema.clone();
        // Each column as text; `timestamptz` as ISO 8601, which Arrow parses with its offset.
        let columns: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| {
                let column = quote_path(f.name());
                match f.data_type() {
                    DataType::Timestamp(_, Some(_)) => format!("to_json({column}) #>> '{{}}'"),
                    _ => format!("{column}::text"),
                }
            })
            .collect();
        let sql = format!("SELECT {} FROM {}", columns.join(", "), quote_path(&target));
        let rows = client
            .query(sql.as_str(), &[])
            .await
            .map_err(|e| failed("reading", &e))?;
        let mut batches = std::collections::VecDeque::new();
        for chunk in rows.chunks(8192) {
            let mut arrays = Vec::with_capacity(schema.fields().len());
            for (i, field) in schema.fields().iter().enumerate() {
                let text = datafusion::arrow::array::StringArray::from_iter(
                    chunk.iter().map(|row| row.get::<_, Option<String>>(i)),
                );
                let options = datafusion::arrow::compute::CastOptions {
                    safe: false,
                    ..Default::default()
                };
                let array = datafusion::arrow::compute::cast_with_options(
                    &text,
                    field.data_type(),
                    &options,
                )
                .map_err(|e| {
                    ConnectorError::Other(format!(
                        "PostgreSQL table {target}: column {} does not read as {}: {e}",
                        field.name(),
                        field.data_type()
                    ))
                })?;
                arrays.push(array);
            }
            let batch = RecordBatch::try_new(schema.clone(), arrays)
                .map_err(|e| ConnectorError::Other(format!("PostgreSQL table {target}: {e}")))?;
            batches.push_back(batch);
        }
        Ok(Self { batches })
    }
}

#[async_trait]
impl runnel_runtime::Source for JdbcSource {
    fn partitions(&self) -> usize {
        1
    }

    async fn next_event(&mut self) -> runnel_runtime::Result<Option<runnel_runtime::SourceEvent>> {
        Ok(self.batches.pop_front().map(|batch| {
            runnel_runtime::SourceEvent::Batch(runnel_runtime::SourceBatch {
                partition: 0,
                batch,
                next_offset: None,
            })
        }))
    }
}

/// Where the exactly-once commits into `target` (a `table-name`) are recorded: the
/// `runnel_checkpoints` table of its schema, quoted.
fn checkpoints_table(target: &str) -> String {
    match target.rsplit_once('.') {
        Some((schema, _)) => format!("{}.runnel_checkpoints", quote_path(schema)),
        None => "runnel_checkpoints".to_string(),
    }
}

/// A dotted name with each part quoted: `"dw"."totals"`.
fn quote_path(name: &str) -> String {
    name.split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// A row's (or a key's) values as text, `None` for NULL.
type Values = Vec<Option<String>>;

/// What a flush does to one key (or, without a key, one appended row): the row's values
/// as text, or a delete.
#[derive(Debug, Clone)]
enum Write {
    Upsert(Values),
    Delete(Values),
}

/// Writes into one PostgreSQL table; see the module documentation.
pub struct JdbcSink {
    table: String,
    /// `host:port/database`, for messages.
    address: String,
    config: tokio_postgres::Config,
    client: Option<tokio_postgres::Client>,
    columns: Vec<String>,
    /// Each column's SQL type for the cast from text.
    casts: Vec<&'static str>,
    /// Indexes of the primary key's columns; empty: append.
    key: Vec<usize>,
    /// Keyed: each key's last write, in the order keys were first held.
    order: Vec<Values>,
    latest: HashMap<Values, Write>,
    /// Without a key: rows to append.
    appended: Vec<Values>,
    max_rows: usize,
    interval: Duration,
    last_flush: Instant,
    max_retries: u32,
    /// Exactly-once: writes wait for their checkpoint to be stored.
    exactly_once: bool,
    /// Exactly-once: each checkpoint's epoch of writes (upserts, deletes), until it commits.
    epochs: Vec<(CheckpointId, Vec<Values>, Vec<Values>)>,
}

impl JdbcSink {
    /// Opens the sink and connects (retrying like a flush), so an unreachable database
    /// fails the job at its start with a clear error.
    pub async fn open(table: &TableDef, schema: SchemaRef, exactly_once: bool) -> Result<Self> {
        let mut sink = Self::new(table, schema)?;
        sink.exactly_once = exactly_once;
        if exactly_once {
            let ddl = format!(
                "CREATE TABLE IF NOT EXISTS {} (sink text PRIMARY KEY, checkpoint_id bigint NOT NULL,
                     committed_at timestamptz NOT NULL DEFAULT now())",
                checkpoints_table(&sink.table)
            );
            sink.with_retries("creating runnel_checkpoints", move |client| {
                let ddl = ddl.clone();
                Box::pin(async move { client.batch_execute(&ddl).await })
            })
            .await?;
        } else {
            sink.with_retries("connecting", |_| Box::pin(async { Ok(()) }))
                .await?;
        }
        Ok(sink)
    }

    /// The sink for `table`, not yet connected.
    fn new(table: &TableDef, schema: SchemaRef) -> Result<Self> {
        let options = options(table)?;
        let changelog = runnel_sql::changelog::is_changelog(&schema);
        if changelog && table.primary_key.is_empty() {
            return Err(ConnectorError::Other(format!(
                "table {}: the query produces an updating stream, which a jdbc table without a \
                 PRIMARY KEY cannot take (declare the key the rows are upserted by)",
                table.name
            )));
        }
        let columns: Vec<String> = table
            .physical_schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let casts = table
            .physical_schema
            .fields()
            .iter()
            .map(|f| sql_type(f.data_type()))
            .collect::<Result<Vec<_>>>()?;
        let key = table
            .primary_key
            .iter()
            .map(|k| {
                columns.iter().position(|c| c == k).ok_or_else(|| {
                    ConnectorError::Other(format!("table {}: no key column {k}", table.name))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let url = options.required("url")?;
        Ok(Self {
            table: options.required("table-name")?.to_string(),
            address: url.trim_start_matches("jdbc:postgresql://").to_string(),
            config: connection(&options)?,
            client: None,
            columns,
            casts,
            key,
            order: Vec::new(),
            latest: HashMap::new(),
            appended: Vec::new(),
            max_rows: options.parse_or("sink.buffer-flush.max-rows", 100)?.max(1),
            interval: options
                .duration("sink.buffer-flush.interval")?
                .unwrap_or(Duration::from_secs(1)),
            last_flush: Instant::now(),
            max_retries: options.parse_or("sink.max-retries", 3)?,
            exactly_once: false,
            epochs: Vec::new(),
        })
    }

    fn held(&self) -> usize {
        self.latest.len() + self.appended.len()
    }

    /// Holds `batch`'s rows for the next flush.
    fn hold(&mut self, batch: &RecordBatch) -> Result<()> {
        let options = FormatOptions::default()
            .with_null("")
            .with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.f"))
            .with_timestamp_tz_format(Some("%Y-%m-%d %H:%M:%S%.f%:z"));
        let data = self.columns.len();
        let formatters = batch.columns()[..data]
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| ConnectorError::Other(e.to_string()))?;
        let kinds = (batch.num_columns() > data)
            .then(|| batch.column(data).as_primitive::<Int8Type>().clone());
        for row in 0..batch.num_rows() {
            let values: Values = formatters
                .iter()
                .zip(&batch.columns()[..data])
                .map(|(f, c)| (!c.is_null(row)).then(|| f.value(row).to_string()))
                .collect();
            let kind = kinds
                .as_ref()
                .and_then(|k| ChangeKind::from_code(k.value(row)))
                .unwrap_or(ChangeKind::Insert);
            if self.key.is_empty() {
                self.appended.push(values);
                continue;
            }
            let key: Values = self.key.iter().map(|&i| values[i].clone()).collect();
            let write = match kind {
                ChangeKind::Insert | ChangeKind::UpdateAfter => Write::Upsert(values),
                ChangeKind::Delete => Write::Delete(key.clone()),
                ChangeKind::UpdateBefore => continue,
            };
            if self.latest.insert(key.clone(), write).is_none() {
                self.order.push(key);
            }
        }
        Ok(())
    }

    /// Runs `work` on a connected client, reconnecting and retrying (with backoff) while
    /// it fails, up to `sink.max-retries` times.
    async fn with_retries<F>(&mut self, what: &str, work: F) -> Result<()>
    where
        F: for<'c> Fn(
            &'c mut tokio_postgres::Client,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<Output = std::result::Result<(), tokio_postgres::Error>>
                    + Send
                    + 'c,
            >,
        >,
    {
        let mut backoff = Duration::from_millis(200);
        let mut attempt = 0;
        loop {
            let outcome = match self.client.as_mut().filter(|c| !c.is_closed()) {
                Some(client) => work(client).await,
                None => match self.config.connect(tokio_postgres::NoTls).await {
                    Ok((client, connection)) => {
                        tokio::spawn(async move {
                            if let Err(e) = connection.await {
                                tracing::warn!(error = %e, "PostgreSQL connection closed");
                            }
                        });
                        let client = self.client.insert(client);
                        work(client).await
                    }
                    Err(e) => Err(e),
                },
            };
            match outcome {
                Ok(()) => return Ok(()),
                Err(e) if attempt < self.max_retries => {
                    attempt += 1;
                    tracing::warn!(table = %self.table, error = %e, attempt, "{what} failed; retrying in {backoff:?}");
                    if e.is_closed() || self.client.as_ref().is_some_and(|c| c.is_closed()) {
                        self.client = None;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                Err(e) => {
                    return Err(ConnectorError::Other(format!(
                        "PostgreSQL table {} at {}: {what} failed after {attempt} retries: {}",
                        self.table,
                        self.address,
                        describe(&e)
                    )))
                }
            }
        }
    }

    /// Takes everything held: the rows to upsert (or append) and the keys to delete, each
    /// key once, in the order keys were first held.
    fn take_held(&mut self) -> (Vec<Values>, Vec<Values>) {
        let mut upserts = Vec::new();
        let mut deletes = Vec::new();
        let mut latest = std::mem::take(&mut self.latest);
        for key in std::mem::take(&mut self.order) {
            match latest.remove(&key) {
                Some(Write::Upsert(row)) => upserts.push(row),
                Some(Write::Delete(key)) => deletes.push(key),
                None => {}
            }
        }
        upserts.extend(std::mem::take(&mut self.appended));
        (upserts, deletes)
    }

    /// Writes everything held (and, exactly-once, every epoch not yet committed), in one
    /// transaction.
    async fn flush(&mut self) -> Result<()> {
        self.last_flush = Instant::now();
        if self.held() == 0 && self.epochs.is_empty() {
            return Ok(());
        }
        let (upserts, deletes) = self.take_held();
        let mut statements = Vec::new();
        for (_, upserts, deletes) in std::mem::take(&mut self.epochs) {
            statements.extend(self.statements(&upserts, &deletes));
        }
        statements.extend(self.statements(&upserts, &deletes));
        self.write(statements).await
    }

    /// Exactly-once: writes the epochs of checkpoints up to `id`, and records `id` as
    /// committed, in one transaction.
    async fn commit_epochs(&mut self, id: CheckpointId) -> Result<()> {
        let mut statements = Vec::new();
        let (done, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.epochs)
            .into_iter()
            .partition(|(epoch, _, _)| *epoch <= id);
        self.epochs = later;
        for (_, upserts, deletes) in done {
            statements.extend(self.statements(&upserts, &deletes));
        }
        statements.push((
            format!(
                "INSERT INTO {} (sink, checkpoint_id) VALUES ($1, $2::text::bigint)
                 ON CONFLICT (sink) DO UPDATE
                 SET checkpoint_id = EXCLUDED.checkpoint_id, committed_at = now()",
                checkpoints_table(&self.table)
            ),
            vec![Some(self.table.clone()), Some(id.to_string())],
        ));
        self.write(statements).await
    }

    /// Runs `statements` in one transaction (retried whole).
    async fn write(&mut self, statements: Vec<(String, Values)>) -> Result<()> {
        let count = statements.len();
        self.with_retries("writing", move |client| {
            let statements = statements.clone();
            Box::pin(async move {
                let transaction = client.transaction().await?;
                for (sql, values) in &statements {
                    let params: Vec<&(dyn ToSql + Sync)> =
                        values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
                    transaction.execute(sql.as_str(), &params).await?;
                }
                transaction.commit().await
            })
        })
        .await?;
        tracing::debug!(table = %self.table, statements = count, "written");
        Ok(())
    }

    /// The SQL statements (with their text parameters) that write `upserts` and `deletes`:
    /// a few rows per statement, within PostgreSQL's parameter limit.
    fn statements(&self, upserts: &[Values], deletes: &[Values]) -> Vec<(String, Values)> {
        let quote = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
        let table = quote_path(&self.table);
        let columns: Vec<String> = self.columns.iter().map(|c| quote(c)).collect();
        let mut statements = Vec::new();
        let per_statement = (60_000 / self.columns.len().max(1)).max(1);
        for rows in upserts.chunks(per_statement) {
            let (tuples, values) = parameter_tuples(rows, &self.casts);
            let mut sql = format!(
                "INSERT INTO {table} ({}) VALUES {tuples}",
                columns.join(", ")
            );
            if !self.key.is_empty() {
                let keys: Vec<&str> = self.key.iter().map(|&i| columns[i].as_str()).collect();
                let others: Vec<String> = (0..columns.len())
                    .filter(|i| !self.key.contains(i))
                    .map(|i| format!("{0} = EXCLUDED.{0}", columns[i]))
                    .collect();
                sql.push_str(&format!(" ON CONFLICT ({}) DO ", keys.join(", ")));
                if others.is_empty() {
                    sql.push_str("NOTHING");
                } else {
                    sql.push_str(&format!("UPDATE SET {}", others.join(", ")));
                }
            }
            statements.push((sql, values));
        }
        let key_columns: Vec<&str> = self.key.iter().map(|&i| columns[i].as_str()).collect();
        let key_casts: Vec<&'static str> = self.key.iter().map(|&i| self.casts[i]).collect();
        for keys in deletes.chunks((60_000 / self.key.len().max(1)).max(1)) {
            let (tuples, values) = parameter_tuples(keys, &key_casts);
            statements.push((
                format!(
                    "DELETE FROM {table} WHERE ({}) IN ({tuples})",
                    key_columns.join(", "),
                ),
                values,
            ));
        }
        statements
    }
}

/// `rows` as SQL value tuples of text parameters, each cast to its column's type
/// (`($1::text::bigint, $2::text::numeric), (...)`), and the parameters in order.
fn parameter_tuples(rows: &[Values], casts: &[&'static str]) -> (String, Values) {
    let mut values = Vec::with_capacity(rows.len() * casts.len());
    let tuples: Vec<String> = rows
        .iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(casts)
                .map(|(value, cast)| {
                    values.push(value.clone());
                    format!("${}::text::{cast}", values.len())
                })
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect();
    (tuples.join(", "), values)
}

/// A database error with the server's message when it sent one.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        }
    }
}

/// The PostgreSQL type a column's text is cast to.
fn sql_type(data_type: &DataType) -> Result<&'static str> {
    Ok(match data_type {
        DataType::Boolean => "boolean",
        DataType::Int8 | DataType::Int16 => "smallint",
        DataType::Int32 => "integer",
        DataType::Int64 => "bigint",
        DataType::Float32 => "real",
        DataType::Float64 => "double precision",
        DataType::Decimal128(..) => "numeric",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text",
        DataType::Date32 => "date",
        DataType::Timestamp(
            TimeUnit::Millisecond | TimeUnit::Microsecond | TimeUnit::Second | TimeUnit::Nanosecond,
            None,
        ) => "timestamp",
        DataType::Timestamp(_, Some(_)) => "timestamptz",
        other => {
            return Err(ConnectorError::Other(format!(
                "a jdbc table cannot hold a column of type {other}"
            )))
        }
    })
}

#[async_trait]
impl Sink for JdbcSink {
    async fn write_batch(&mut self, batch: RecordBatch) -> runnel_runtime::Result<()> {
        self.hold(&batch).map_err(|e| e.at("sink", &self.table))?;
        let due = self.held() >= self.max_rows || self.last_flush.elapsed() >= self.interval;
        if due && !self.exactly_once {
            self.flush().await.map_err(|e| e.at("sink", &self.table))?;
        }
        Ok(())
    }

    async fn on_watermark(&mut self, _watermark: i64) -> runnel_runtime::Result<()> {
        if self.last_flush.elapsed() >= self.interval && !self.exactly_once {
            self.flush().await.map_err(|e| e.at("sink", &self.table))?;
        }
        Ok(())
    }

    /// At-least-once: writes what is held. Exactly-once: closes the checkpoint's epoch,
    /// written when the checkpoint is stored.
    async fn prepare_checkpoint(&mut self, id: CheckpointId) -> runnel_runtime::Result<()> {
        if self.exactly_once {
            let (upserts, deletes) = self.take_held();
            self.epochs.push((id, upserts, deletes));
            return Ok(());
        }
        self.flush().await.map_err(|e| e.at("sink", &self.table))
    }

    async fn commit_checkpoint(&mut self, checkpoint: &Manifest) -> runnel_runtime::Result<()> {
        if !self.exactly_once {
            return Ok(());
        }
        self.commit_epochs(checkpoint.id)
            .await
            .map_err(|e| e.at("sink", &self.table))
    }

    async fn finish(&mut self) -> runnel_runtime::Result<()> {
        self.flush().await.map_err(|e| e.at("sink", &self.table))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Decimal128Array, Int64Array, Int8Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use runnel_sql::changelog::with_change_column;

    use super::*;
    use crate::test_table;

    fn totals_table(key: bool) -> TableDef {
        let mut table = test_table(
            "totals",
            vec![
                Field::new("policy_id", DataType::Int64, false),
                Field::new("region", DataType::Utf8, true),
                Field::new("total", DataType::Decimal128(22, 2), true),
            ],
            &[
                ("connector", "jdbc"),
                ("url", "jdbc:postgresql://127.0.0.1:5433/warehouse"),
                ("table-name", "dw.policy_totals"),
            ],
        );
        if key {
            table.primary_key = vec!["policy_id".into()];
        }
        table
    }

    fn changes(rows: &[(i8, i64, Option<&str>, i128)]) -> RecordBatch {
        let table = totals_table(true);
        RecordBatch::try_new(
            with_change_column(&table.physical_schema),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.2))),
                Arc::new(
                    Decimal128Array::from_iter_values(rows.iter().map(|r| r.3))
                        .with_precision_and_scale(22, 2)
                        .unwrap(),
                ),
                Arc::new(Int8Array::from_iter_values(rows.iter().map(|r| r.0))),
            ],
        )
        .unwrap()
    }

    fn text(values: &[Option<&str>]) -> Vec<Option<String>> {
        values.iter().map(|v| v.map(str::to_string)).collect()
    }

    #[test]
    fn each_key_is_written_once_with_its_last_change() {
        let table = totals_table(true);
        let batch = changes(&[
            (0, 1, Some("north"), 1050), // +I policy 1
            (1, 1, Some("north"), 1050), // -U: dropped
            (2, 1, Some("south"), 2000), // +U policy 1
            (0, 2, None, 500),           // +I policy 2
            (3, 2, None, 500),           // -D policy 2
            (3, 3, Some("east"), 700),   // -D policy 3
            (0, 3, Some("east"), 800),   // +I policy 3 again
        ]);
        let mut sink = JdbcSink::new(&table, batch.schema()).unwrap();
        sink.hold(&batch).unwrap();
        assert_eq!(sink.held(), 3);
        let (upserts, deletes) = sink.take_held();
        assert_eq!(
            upserts,
            vec![
                text(&[Some("1"), Some("south"), Some("20.00")]),
                text(&[Some("3"), Some("east"), Some("8.00")]),
            ]
        );
        assert_eq!(deletes, vec![text(&[Some("2")])]);
        assert_eq!(sink.held(), 0);
    }

    #[test]
    fn upserts_conflict_on_the_key_and_deletes_match_it() {
        let table = totals_table(true);
        let sink = JdbcSink::new(&table, with_change_column(&table.physical_schema)).unwrap();
        let statements = sink.statements(
            &[
                text(&[Some("1"), None, Some("20.00")]),
                text(&[Some("3"), Some("east"), Some("8.00")]),
            ],
            &[text(&[Some("2")])],
        );
        assert_eq!(statements.len(), 2);
        assert_eq!(
            statements[0].0,
            "INSERT INTO \"dw\".\"policy_totals\" (\"policy_id\", \"region\", \"total\") VALUES \
             ($1::text::bigint, $2::text::text, $3::text::numeric), \
             ($4::text::bigint, $5::text::text, $6::text::numeric) \
             ON CONFLICT (\"policy_id\") DO UPDATE SET \"region\" = EXCLUDED.\"region\", \
             \"total\" = EXCLUDED.\"total\""
        );
        assert_eq!(statements[0].1.len(), 6);
        assert_eq!(statements[0].1[1], None, "a NULL stays NULL");
        assert_eq!(
            statements[1].0,
            "DELETE FROM \"dw\".\"policy_totals\" WHERE (\"policy_id\") IN (($1::text::bigint))"
        );
    }

    #[test]
    fn without_a_key_rows_are_appended_and_an_updating_stream_is_refused() {
        let table = totals_table(false);
        let sink = JdbcSink::new(&table, table.physical_schema.clone()).unwrap();
        let statements = sink.statements(&[text(&[Some("1"), None, Some("1.00")])], &[]);
        assert!(
            !statements[0].0.contains("ON CONFLICT"),
            "{}",
            statements[0].0
        );
        let refused = JdbcSink::new(&table, with_change_column(&table.physical_schema))
            .err()
            .unwrap()
            .to_string();
        assert!(refused.contains("without a PRIMARY KEY"), "{refused}");
    }

    #[test]
    fn bad_options_name_the_option() {
        let mut table = totals_table(true);
        table
            .options
            .insert("url".into(), "postgresql://127.0.0.1/warehouse".into());
        let error = options(&table).err().unwrap().to_string();
        assert!(
            error.contains("url") && error.contains("jdbc:postgresql://"),
            "{error}"
        );
        let mut table = totals_table(true);
        table.options.remove("table-name");
        let error = options(&table).err().unwrap().to_string();
        assert!(error.contains("table-name"), "{error}");
        let columns = Schema::new(vec![Field::new(
            "tags",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        )]);
        let mut table = totals_table(false);
        table.physical_schema = Arc::new(columns);
        let error = JdbcSink::new(&table, table.physical_schema.clone())
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("cannot hold a column of type"), "{error}");
    }
}
