//! Reading a PostgreSQL table: whole ([`JdbcSource`], a bounded source) or by key
//! ([`JdbcLookup`], the table side of a lookup join).
//!
//! Columns are selected as text (`timestamptz` as ISO 8601, which Arrow parses with its
//! offset) and cast to the columns' Arrow types, so both read any column type whose text
//! form the declared type parses.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::compute::{cast_with_options, CastOptions};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use runnel_runtime::{KeyLookup, LookupCache, RuntimeError};
use runnel_sql::TableDef;

use super::{connection, describe, options, parameter_tuples, quote_path, sql_type, text_rows};
use crate::error::{ConnectorError, Result};

/// `SELECT`'s column list reading each of `schema`'s columns as text.
fn select_list(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| {
            let column = quote_path(f.name());
            match f.data_type() {
                DataType::Timestamp(_, Some(_)) => format!("to_json({column}) #>> '{{}}'"),
                _ => format!("{column}::text"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `rows` (read with [`select_list`]) as a batch of `schema`.
fn batch_of(rows: &[tokio_postgres::Row], schema: &SchemaRef, target: &str) -> Result<RecordBatch> {
    let strict = CastOptions {
        safe: false,
        ..Default::default()
    };
    let arrays = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let text =
                StringArray::from_iter(rows.iter().map(|row| row.get::<_, Option<String>>(i)));
            cast_with_options(&text, field.data_type(), &strict).map_err(|e| {
                ConnectorError::Other(format!(
                    "PostgreSQL table {target}: column {} does not read as {}: {e}",
                    field.name(),
                    field.data_type()
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(schema.clone(), arrays)
        .map_err(|e| ConnectorError::Other(format!("PostgreSQL table {target}: {e}")))
}

/// A PostgreSQL table read whole: its rows, in batches, then the end.
pub(super) struct JdbcSource {
    batches: VecDeque<RecordBatch>,
}

impl JdbcSource {
    /// Reads every row of `table`'s PostgreSQL table (its physical columns, by name).
    pub(super) async fn read(table: &TableDef) -> Result<Self> {
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
        let sql = format!(
            "SELECT {} FROM {}",
            select_list(&schema),
            quote_path(&target)
        );
        let rows = client
            .query(sql.as_str(), &[])
            .await
            .map_err(|e| failed("reading", &e))?;
        let batches = rows
            .chunks(8192)
            .map(|chunk| batch_of(chunk, &schema, &target))
            .collect::<Result<_>>()?;
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
                dead_letters: None,
            })
        }))
    }
}

/// A PostgreSQL table asked by key. Its queries run on a thread of their own (with a
/// one-thread tokio runtime driving the connection), so a join blocked on an answer
/// never holds up the runtime that would deliver it.
pub(super) struct JdbcLookup {
    requests: mpsc::Sender<Request>,
    cache: LookupCache,
}

/// Keys to look up, and where their rows go.
struct Request {
    keys: Vec<ArrayRef>,
    reply: mpsc::SyncSender<Result<RecordBatch>>,
}

/// What the lookup thread works with.
struct LookupQuery {
    target: String,
    url: String,
    config: tokio_postgres::Config,
    schema: SchemaRef,
    /// `SELECT ... FROM table WHERE (key columns) IN `, the key tuples to follow.
    prefix: String,
    /// Each key column's SQL type for the cast from text.
    key_casts: Vec<&'static str>,
    max_retries: u32,
}

impl JdbcLookup {
    /// Starts the lookup thread for `table` by its columns `key` and connects once, so an
    /// unreachable database fails the job at its start.
    pub(super) async fn open(
        table: &TableDef,
        key: &[String],
        cache: LookupCache,
        max_retries: u32,
    ) -> Result<Self> {
        let options = options(table)?;
        let target = options.required("table-name")?.to_string();
        let schema = table.physical_schema.clone();
        let key_casts = key
            .iter()
            .map(|k| {
                let field = schema.field_with_name(k).map_err(|_| {
                    ConnectorError::Other(format!("table {}: no key column {k}", table.name))
                })?;
                sql_type(field.data_type())
            })
            .collect::<Result<Vec<_>>>()?;
        let key_list: Vec<String> = key.iter().map(|k| quote_path(k)).collect();
        let query = LookupQuery {
            prefix: format!(
                "SELECT {} FROM {} WHERE ({}) IN ",
                select_list(&schema),
                quote_path(&target),
                key_list.join(", ")
            ),
            url: options.get("url").unwrap_or_default().to_string(),
            config: connection(&options)?,
            target,
            schema,
            key_casts,
            max_retries,
        };
        let (requests, receiver) = mpsc::channel::<Request>();
        let (ready, connected) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("jdbc lookup {}", table.name))
            .spawn(move || query.serve(receiver, ready))
            .map_err(|e| ConnectorError::Other(format!("starting a lookup thread: {e}")))?;
        connected.await.map_err(|_| {
            ConnectorError::Other("the lookup thread ended before connecting".into())
        })??;
        Ok(Self { requests, cache })
    }
}

impl KeyLookup for JdbcLookup {
    fn lookup(&self, keys: &[ArrayRef]) -> runnel_runtime::Result<RecordBatch> {
        let failed = |e: ConnectorError| RuntimeError::connector("lookup", e);
        let (reply, answer) = mpsc::sync_channel(1);
        self.requests
            .send(Request {
                keys: keys.to_vec(),
                reply,
            })
            .map_err(|_| failed(ConnectorError::Other("the lookup thread ended".into())))?;
        answer
            .recv()
            .map_err(|_| failed(ConnectorError::Other("the lookup thread ended".into())))?
            .map_err(failed)
    }

    fn cache(&self) -> LookupCache {
        self.cache
    }
}

impl LookupQuery {
    /// The lookup thread: connects (telling `ready` how that went), then answers requests
    /// until every sender is gone.
    fn serve(
        self,
        requests: mpsc::Receiver<Request>,
        ready: tokio::sync::oneshot::Sender<Result<()>>,
    ) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                let _ = ready.send(Err(ConnectorError::Other(format!(
                    "starting the lookup runtime: {e}"
                ))));
                return;
            }
        };
        runtime.block_on(async move {
            let mut client = match self.connect().await {
                Ok(client) => {
                    let _ = ready.send(Ok(()));
                    Some(client)
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            while let Ok(request) = requests.recv() {
                let answer = self.answer(&mut client, &request.keys).await;
                let _ = request.reply.send(answer);
            }
        });
    }

    async fn connect(&self) -> Result<tokio_postgres::Client> {
        let (client, connection) = self
            .config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| self.failed("connecting", &e))?;
        tokio::spawn(connection);
        Ok(client)
    }

    fn failed(&self, what: &str, e: &tokio_postgres::Error) -> ConnectorError {
        ConnectorError::Other(format!(
            "PostgreSQL table {} at {}: {what} failed: {}",
            self.target,
            self.url,
            describe(e)
        ))
    }

    /// The rows of `keys`, asked again (reconnecting, with backoff) while the database
    /// fails, up to `lookup.max-retries` times.
    async fn answer(
        &self,
        client: &mut Option<tokio_postgres::Client>,
        keys: &[ArrayRef],
    ) -> Result<RecordBatch> {
        let keys = text_rows(keys)?;
        let mut attempt = 0;
        loop {
            let result = match client {
                Some(connected) if !connected.is_closed() => self.query(connected, &keys).await,
                _ => match self.connect().await {
                    Ok(connected) => {
                        let answer = self.query(&connected, &keys).await;
                        *client = Some(connected);
                        answer
                    }
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(batch) => return Ok(batch),
                Err(e) if attempt >= self.max_retries => return Err(e),
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(table = %self.target, attempt, error = %e, "lookup failed; retrying");
                    *client = None;
                    tokio::time::sleep(Duration::from_millis(100 << attempt.min(6))).await;
                }
            }
        }
    }

    /// One query per chunk of keys (within PostgreSQL's parameter limit).
    async fn query(
        &self,
        client: &tokio_postgres::Client,
        keys: &[super::Values],
    ) -> Result<RecordBatch> {
        let mut batches = Vec::new();
        for chunk in keys.chunks((30_000 / self.key_casts.len().max(1)).max(1)) {
            let (tuples, values) = parameter_tuples(chunk, &self.key_casts);
            let sql = format!("{}({tuples})", self.prefix);
            let parameters: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = values
                .iter()
                .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            let rows = client
                .query(sql.as_str(), &parameters)
                .await
                .map_err(|e| self.failed("looking up keys", &e))?;
            batches.push(batch_of(&rows, &self.schema, &self.target)?);
        }
        datafusion::arrow::compute::concat_batches(&self.schema, &batches)
            .map_err(|e| ConnectorError::Other(format!("PostgreSQL table {}: {e}", self.target)))
    }
}
