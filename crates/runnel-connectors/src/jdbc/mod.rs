//! `'connector' = 'jdbc'`: a PostgreSQL table, through `tokio-postgres`, with Flink's
//! options (`url`, `table-name`, `username`, `password`, `sink.*`, `lookup.*`):
//! - as a sink ([`sink`]): upserts by primary key, deletes, appends; at-least-once or
//!   exactly-once;
//! - as the table side of a lookup join ([`read`]): asked by key as stream rows arrive
//!   (`JOIN policies FOR SYSTEM_TIME AS OF c.proc_time`), with Flink's partial cache; and
//!   as a bounded source, read whole (`SELECT * FROM policies`).
//!
//! Values travel as PostgreSQL's text both ways: written rows as text parameters cast in
//! SQL to the column's type (`$1::text::numeric`), so any column type that reads its text
//! form works; read rows as text cast to the columns' Arrow types with Arrow's kernels.

use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use runnel_runtime::{CheckpointId, DeliveryGuarantee, JobConfig, KeyLookup, LookupCache, Sink};
use runnel_sql::TableDef;

use crate::error::{ConnectorError, Result};
use crate::options::TableOptions;

mod read;
mod sink;

pub use sink::JdbcSink;

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
    "lookup.cache",
    "lookup.partial-cache.max-rows",
    "lookup.partial-cache.expire-after-write",
    "lookup.partial-cache.expire-after-access",
    "lookup.partial-cache.cache-missing-key",
    // Flink's older names for the partial cache.
    "lookup.cache.max-rows",
    "lookup.cache.ttl",
    "lookup.cache.caching-missing-key",
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
    options.parse_or::<u32>("lookup.max-retries", 3)?;
    lookup_cache(&options)?;
    Ok(options)
}

/// The lookup cache a table's options ask for (Flink's `lookup.cache` = `NONE` |
/// `PARTIAL` with `lookup.partial-cache.*`, or the older `lookup.cache.max-rows` +
/// `lookup.cache.ttl`, which must come together).
fn lookup_cache(options: &TableOptions) -> Result<LookupCache> {
    let bool_option = |key: &str| options.parse_or::<bool>(key, true);
    let legacy = (
        options.parse::<usize>("lookup.cache.max-rows")?,
        options.duration("lookup.cache.ttl")?,
    );
    let mode = options.get("lookup.cache").map(str::to_ascii_uppercase);
    match (mode.as_deref(), legacy) {
        (None | Some("NONE"), (None, None)) => Ok(LookupCache::default()),
        (None, (Some(max_keys), Some(ttl))) => Ok(LookupCache {
            max_keys,
            expire_after_write: Some(ttl),
            expire_after_access: None,
            cache_missing_keys: bool_option("lookup.cache.caching-missing-key")?,
        }),
        (None, _) => Err(options.invalid(
            "lookup.cache.max-rows",
            options.get("lookup.cache.max-rows").unwrap_or("(not set)"),
            "the older cache options come together: set both lookup.cache.max-rows and \
             lookup.cache.ttl (or 'lookup.cache' = 'PARTIAL' with lookup.partial-cache.*)",
        )),
        (Some("PARTIAL"), _) => {
            let max_keys = options.parse::<usize>("lookup.partial-cache.max-rows")?;
            let expire_after_write = options.duration("lookup.partial-cache.expire-after-write")?;
            let expire_after_access =
                options.duration("lookup.partial-cache.expire-after-access")?;
            if max_keys.is_none() && expire_after_write.is_none() && expire_after_access.is_none() {
                return Err(options.invalid(
                    "lookup.cache",
                    "PARTIAL",
                    "a partial cache needs a bound: lookup.partial-cache.max-rows, \
                     .expire-after-write or .expire-after-access",
                ));
            }
            Ok(LookupCache {
                max_keys: max_keys.unwrap_or(usize::MAX),
                expire_after_write,
                expire_after_access,
                cache_missing_keys: bool_option("lookup.partial-cache.cache-missing-key")?,
            })
        }
        (Some(other), _) => Err(options.invalid(
            "lookup.cache",
            other,
            "expected NONE or PARTIAL (a jdbc table is asked by key; FULL is not offered)",
        )),
    }
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

    /// Read whole, the table ends.
    fn is_bounded(&self, _table: &TableDef) -> bool {
        true
    }

    async fn open_source(
        &self,
        table: &TableDef,
        _context: crate::SourceContext<'_>,
    ) -> Result<Box<dyn runnel_runtime::Source>> {
        Ok(Box::new(read::JdbcSource::read(table).await?))
    }

    /// A lookup join asks the database for each batch's keys.
    fn reads_by_key(&self, _table: &TableDef) -> bool {
        true
    }

    async fn open_lookup(
        &self,
        table: &TableDef,
        key: &[String],
    ) -> Result<std::sync::Arc<dyn KeyLookup>> {
        let options = options(table)?;
        let lookup = read::JdbcLookup::open(
            table,
            key,
            lookup_cache(&options)?,
            options.parse_or("lookup.max-retries", 3)?,
        )
        .await?;
        Ok(std::sync::Arc::new(lookup))
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

/// Each row of `columns` as text, the way PostgreSQL reads each type back (`None` for
/// NULL).
fn text_rows(columns: &[datafusion::arrow::array::ArrayRef]) -> Result<Vec<Values>> {
    use datafusion::arrow::array::Array;
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default()
        .with_null("")
        .with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.f"))
        .with_timestamp_tz_format(Some("%Y-%m-%d %H:%M:%S%.f%:z"));
    let formatters = columns
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| ConnectorError::Other(e.to_string()))?;
    let rows = columns.first().map_or(0, |c| c.len());
    Ok((0..rows)
        .map(|row| {
            formatters
                .iter()
                .zip(columns)
                .map(|(f, c)| (!c.is_null(row)).then(|| f.value(row).to_string()))
                .collect()
        })
        .collect())
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

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::Field;

    use super::*;

    fn cache_of(extra: &[(&str, &str)]) -> Result<LookupCache> {
        let mut options = vec![
            ("url", "jdbc:postgresql://127.0.0.1:5433/runnel"),
            ("table-name", "policies"),
        ];
        options.extend_from_slice(extra);
        let table = crate::test_table(
            "policies",
            vec![Field::new("policy_id", DataType::Int64, true)],
            &options,
        );
        lookup_cache(&super::options(&table)?)
    }

    #[test]
    fn the_lookup_cache_follows_flinks_options() {
        assert_eq!(cache_of(&[]).unwrap(), LookupCache::default());
        let partial = cache_of(&[
            ("lookup.cache", "partial"),
            ("lookup.partial-cache.max-rows", "500"),
            ("lookup.partial-cache.expire-after-access", "10 min"),
            ("lookup.partial-cache.cache-missing-key", "false"),
        ])
        .unwrap();
        assert_eq!(
            partial,
            LookupCache {
                max_keys: 500,
                expire_after_write: None,
                expire_after_access: Some(Duration::from_secs(600)),
                cache_missing_keys: false,
            }
        );
        let legacy = cache_of(&[
            ("lookup.cache.max-rows", "100"),
            ("lookup.cache.ttl", "1 h"),
        ])
        .unwrap();
        assert_eq!(
            (
                legacy.max_keys,
                legacy.expire_after_write,
                legacy.cache_missing_keys
            ),
            (100, Some(Duration::from_secs(3600)), true)
        );
        for (bad, says) in [
            (vec![("lookup.cache.max-rows", "100")], "come together"),
            (vec![("lookup.cache", "PARTIAL")], "needs a bound"),
            (vec![("lookup.cache", "FULL")], "NONE or PARTIAL"),
            (
                vec![
                    ("lookup.cache", "PARTIAL"),
                    ("lookup.partial-cache.max-rows", "x"),
                ],
                "lookup.partial-cache.max-rows",
            ),
        ] {
            let error = cache_of(&bad).unwrap_err().to_string();
            assert!(error.contains(says), "{bad:?}: {error}");
        }
    }
}
