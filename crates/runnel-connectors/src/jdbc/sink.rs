//! [`JdbcSink`]: writes a query's rows into a PostgreSQL table.
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
//! A failed flush is retried (`sink.max-retries`, with backoff), reconnecting when the
//! connection was lost: a database restart mid-run costs a pause, not the job.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{Int8Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use runnel_runtime::{CheckpointId, Manifest, Sink};
use runnel_sql::changelog::ChangeKind;
use runnel_sql::TableDef;
use tokio_postgres::types::ToSql;

use super::{
    checkpoints_table, connection, describe, options, parameter_tuples, quote_path, sql_type,
    text_rows, Values,
};
use crate::error::{ConnectorError, Result};

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
        let data = self.columns.len();
        let kinds = (batch.num_columns() > data)
            .then(|| batch.column(data).as_primitive::<Int8Type>().clone());
        for (row, values) in text_rows(&batch.columns()[..data])?.into_iter().enumerate() {
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
        self.on_timer().await
    }

    /// At-least-once: rows wait at most `sink.buffer-flush.interval`, also when no more
    /// arrive.
    fn timer_interval(&self) -> Option<Duration> {
        (!self.exactly_once).then_some(self.interval)
    }

    async fn on_timer(&mut self) -> runnel_runtime::Result<()> {
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
    use datafusion::arrow::datatypes::DataType;

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
