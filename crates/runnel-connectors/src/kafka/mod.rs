//! `'connector' = 'kafka'`: a source reading a topic's partitions (one watermark each) and
//! a sink producing JSON records, with Flink's option names.

mod fetch;
pub mod records;
pub mod security;
mod sink;
mod source;
pub mod transactions;
pub mod upsert;

use std::time::Duration;

use rdkafka::ClientConfig;
use runnel_sql::TableDef;

use crate::error::Result;
use crate::format::{Format, FORMAT_OPTIONS};
use crate::options::TableOptions;

pub use records::{
    KafkaRecordDecoder, KafkaRecordEncoder, PartitionRecords, PolledRecords, RecordParts,
};
pub use sink::KafkaSink;
pub use source::KafkaSource;

/// Options the Kafka connector accepts besides the format's and `'properties.*'`.
pub const OPTIONS: &[&str] = &[
    "topic",
    "scan.startup.mode",
    "scan.bounded.mode",
    "scan.watermark.idle-timeout",
    "key.format",
    "key.fields",
    "value.format",
    "sink.delivery-guarantee",
    "sink.transactional-id-prefix",
];

/// `'connector' = 'kafka'`, or with `upsert` `'connector' = 'upsert-kafka'` (see
/// [`upsert`]): the same source and sink, the upsert one keyed by the table's primary key.
pub struct KafkaConnector {
    pub upsert: bool,
}

#[async_trait::async_trait]
impl crate::Connector for KafkaConnector {
    fn name(&self) -> &'static str {
        if self.upsert {
            "upsert-kafka"
        } else {
            "kafka"
        }
    }

    fn validate(&self, table: &TableDef) -> Result<()> {
        options(table).map(drop)
    }

    fn metadata_keys(&self) -> &'static [&'static str] {
        records::METADATA_KEYS
    }

    fn is_bounded(&self, table: &TableDef) -> bool {
        table.options.contains_key("scan.bounded.mode")
    }

    /// Only when the table asks (`'scan.watermark.alignment.max-drift'`): a reader of
    /// partitions without rows would hold the others back until it is idle.
    fn watermark_alignment(&self, table: &TableDef) -> Option<runnel_runtime::WatermarkAlignment> {
        options(table).ok()?.watermark_alignment(None).ok()?
    }

    /// Partitions are shared out over readers (readers beyond the partition count end
    /// at once).
    fn max_splits(&self, _table: &TableDef) -> usize {
        usize::MAX
    }

    async fn open_source(
        &self,
        table: &TableDef,
        context: crate::SourceContext<'_>,
    ) -> Result<Box<dyn runnel_runtime::Source>> {
        check_access(table).await?;
        let source = KafkaSource::open(
            table,
            context.metrics,
            context.config,
            context.split,
            context.start,
        )
        .await?;
        Ok(Box::new(source))
    }

    async fn open_sink(
        &self,
        table: &TableDef,
        schema: datafusion::arrow::datatypes::SchemaRef,
        config: &runnel_runtime::JobConfig,
    ) -> Result<Box<dyn runnel_runtime::Sink>> {
        // An upsert table takes updates by key; a plain one needs a format that can.
        if !self.upsert {
            crate::format::check_writable(table, &schema)?;
        }
        check_access(table).await?;
        Ok(Box::new(KafkaSink::open(table, schema, config).await?))
    }

    async fn committed_checkpoint(
        &self,
        table: &TableDef,
    ) -> Result<Option<runnel_runtime::CheckpointId>> {
        committed_checkpoint(table).await
    }
}

/// How long to wait for the broker's answers at start (metadata, offsets).
pub(crate) const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

/// The options of a `kafka` or `upsert-kafka` table, checked.
pub(crate) fn options(table: &TableDef) -> Result<TableOptions<'_>> {
    let upsert = table.connector() == Some("upsert-kafka");
    let (connector, own) = if upsert {
        ("upsert-kafka", upsert::OPTIONS)
    } else {
        ("kafka", OPTIONS)
    };
    let valid: Vec<&str> = own
        .iter()
        .chain(FORMAT_OPTIONS)
        .chain(crate::options::ALIGNMENT_OPTIONS)
        .copied()
        .collect();
    let options = TableOptions::validate(
        &table.name,
        connector,
        &table.options,
        &valid,
        &["properties."],
    )?;
    if upsert {
        upsert::UpsertKey::of(table)?;
        for option in ["key.format", "value.format"] {
            let format = options.required(option)?;
            if format != "json" {
                return Err(options.invalid(option, format, "expected json"));
            }
        }
        options.choice("value.fields-include", &["ALL"], "ALL")?;
        options.parse_or::<usize>("sink.buffer-flush.max-rows", 0)?;
        options.duration("sink.buffer-flush.interval")?;
    }
    options.required("topic")?;
    options.required("properties.bootstrap.servers")?;
    security::check_java_properties(&table.name, options.get("properties.sasl.jaas.config"))?;
    options.watermark_alignment(None)?;
    options.choice(
        "scan.startup.mode",
        &["earliest-offset", "latest-offset", "group-offsets"],
        "group-offsets",
    )?;
    options.choice(
        "scan.bounded.mode",
        &["unbounded", "latest-offset"],
        "unbounded",
    )?;
    options.choice(
        "sink.delivery-guarantee",
        &["at-least-once", "exactly-once", "at-most-once", "none"],
        "at-least-once",
    )?;
    if let Some(format) = options.get("value.format") {
        if !matches!(format, "json" | "csv" | "debezium-json") {
            return Err(options.invalid(
                "value.format",
                format,
                "expected json, csv or debezium-json",
            ));
        }
    }
    if let Some(format) = options.get("key.format").filter(|_| !upsert) {
        if format != "json" {
            return Err(options.invalid("key.format", format, "expected json"));
        }
        if options.get("key.fields").is_none() {
            return Err(options.invalid(
                "key.format",
                format,
                "'key.fields' must name the key columns",
            ));
        }
    }
    value_format(&options, table)?;
    Ok(options)
}

/// The value format (`'value.format'` or `'format'`), reading the table's records.
pub(crate) fn value_format(options: &TableOptions, table: &TableDef) -> Result<Format> {
    Format::for_reading(options, table)
}

/// Runs a blocking broker request, retrying with backoff (and a warning each time) while
/// it fails, up to [`METADATA_TIMEOUT`] in all: a broker that is starting or moving its
/// coordinators answers again soon.
pub(crate) fn with_retries<T>(
    what: &str,
    mut call: impl FnMut() -> rdkafka::error::KafkaResult<T>,
) -> rdkafka::error::KafkaResult<T> {
    let deadline = std::time::Instant::now() + METADATA_TIMEOUT;
    let mut backoff = Duration::from_millis(200);
    loop {
        match call() {
            Ok(value) => return Ok(value),
            Err(e) if std::time::Instant::now() + backoff < deadline => {
                tracing::warn!(error = %e, "{what} failed; retrying in {backoff:?}");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The consumer group a source table reads in (and commits offsets to):
/// `'properties.group.id'`, or `runnel-<table>`.
pub(crate) fn group_id(table: &TableDef) -> String {
    table
        .options
        .get("properties.group.id")
        .cloned()
        .unwrap_or_else(|| format!("runnel-{}", table.name))
}

/// The metadata an exactly-once commit stores with each offset: the checkpoint it
/// belongs to (`runnel-checkpoint=<n>`).
pub(crate) fn checkpoint_metadata(id: runnel_runtime::CheckpointId) -> String {
    format!("runnel-checkpoint={id}")
}

/// The checkpoint id in offset metadata written by [`checkpoint_metadata`].
pub(crate) fn checkpoint_of_metadata(metadata: &str) -> Option<runnel_runtime::CheckpointId> {
    metadata.strip_prefix("runnel-checkpoint=")?.parse().ok()
}

/// librdkafka settings from `'properties.*'`, over Runnel's defaults.
pub(crate) fn client_config(options: &TableOptions, defaults: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in defaults {
        config.set(*key, *value);
    }
    for (key, value) in options.with_prefix("properties.") {
        config.set(key, value);
    }
    security::translate_java_properties(&mut config);
    config
}

/// For a table on a secured broker, one connection before its reader or writer starts:
/// refused credentials or certificates fail here, naming the table.
async fn check_access(table: &TableDef) -> Result<()> {
    let options = options(table)?;
    let config = client_config(&options, &[]);
    if !security::is_secured(&config) {
        return Ok(());
    }
    let topic = options.required("topic")?;
    security::check_access(&config, topic, &format!("table {}", table.name)).await
}

/// The checkpoint an exactly-once job last committed with `table`'s offsets, read from
/// the metadata of the group's committed offsets (`None`: nothing committed yet).
pub async fn committed_checkpoint(
    table: &TableDef,
) -> Result<Option<runnel_runtime::CheckpointId>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let options = options(table)?;
    let topic = options.required("topic")?.to_string();
    let group = group_id(table);
    let consumer: BaseConsumer = client_config(&options, &[("group.id", group.as_str())])
        .create()
        .map_err(|source| crate::error::ConnectorError::Kafka {
            context: format!("creating a consumer of group {group}"),
            source,
        })?;
    tokio::task::spawn_blocking(move || -> Result<Option<runnel_runtime::CheckpointId>> {
        let error =
            |context: String| move |source| crate::error::ConnectorError::Kafka { context, source };
        let metadata = with_retries("reading metadata", || {
            consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))
        })
        .map_err(error(format!("reading metadata of topic {topic}")))?;
        let mut partitions = rdkafka::TopicPartitionList::new();
        for t in metadata.topics().iter().filter(|t| t.name() == topic) {
            for p in t.partitions() {
                partitions.add_partition(&topic, p.id());
            }
        }
        // A broker that has just started answers "not coordinator" until the group's
        // coordinator is loaded: retried like the source's own read of the offsets.
        let committed = with_retries("reading committed offsets", || {
            consumer.committed_offsets(partitions.clone(), Duration::from_secs(10))
        })
        .map_err(error(format!(
            "reading the offsets group {group} committed on {topic}"
        )))?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| checkpoint_of_metadata(e.metadata()))
            .max())
    })
    .await
    .map_err(|e| crate::error::ConnectorError::Other(format!("kafka offsets task failed: {e}")))?
}
