//! [`KafkaSink`]: produces one record per row (JSON value, optional JSON key from
//! `'key.fields'`), and waits for the broker's acknowledgement of every batch. Writable
//! `METADATA` columns (Flink's: `timestamp`, `headers`) set each record's timestamp and
//! headers instead of going into its value.
//!
//! With `'sink.delivery-guarantee' = 'exactly-once'` the producer is transactional: each
//! checkpoint epoch's records go into one transaction, committed together with the
//! source offsets of that checkpoint (`send_offsets_to_transaction`, the checkpoint id in
//! each offset's metadata) once the checkpoint is stored. A restarted job's producer
//! (same `transactional.id`) fences and aborts whatever the crashed one left open.

use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use runnel_runtime::{DeliveryGuarantee, JobConfig, Manifest, Sink};
use runnel_sql::TableDef;

use super::records::{KafkaRecordEncoder, Record, RecordExtras};
use crate::error::{ConnectorError, Result};

/// Writes rows to one topic with at-least-once delivery: a batch counts as written only
/// once the broker acknowledged all of its records.
pub struct KafkaSink {
    producer: FutureProducer,
    /// Exactly-once: the sources whose offsets commit with each transaction.
    transaction: Option<Transaction>,
    topic: String,
    table: String,
    encoder: KafkaRecordEncoder,
    /// `upsert-kafka` with `'sink.buffer-flush.*'`: the buffer that writes each key's
    /// last value only.
    buffer: Option<super::upsert::UpsertBuffer>,
}

impl KafkaSink {
    pub async fn open(table: &TableDef, schema: SchemaRef, config: &JobConfig) -> Result<Self> {
        let options = super::options(table)?;
        let exactly_once = config.delivery == DeliveryGuarantee::ExactlyOnce;
        let encoder = KafkaRecordEncoder::new(table, &schema)?;
        let topic = options.required("topic")?.to_string();
        let buffer = if encoder.is_upsert() {
            super::upsert::UpsertBuffer::from_options(&options)?
        } else {
            None
        };
        let mut defaults = vec![
            ("linger.ms", "5".to_string()),
            ("compression.type", "none".to_string()),
            ("enable.idempotence", "true".to_string()),
        ];
        if exactly_once {
            let Some(checkpoint) = &config.checkpoint else {
                return Err(ConnectorError::Other(
                    "'sink.delivery-guarantee' = 'exactly-once' commits output with each \
                     checkpoint: set SET 'execution.checkpointing.interval' = '10 s' and a \
                     checkpoint directory (--checkpoint-dir)"
                        .into(),
                ));
            };
            let prefix = options
                .get("sink.transactional-id-prefix")
                .map(str::to_string)
                .unwrap_or_else(|| format!("runnel-{}", table.name));
            recover_replaced_id(table, &checkpoint.dir, &prefix).await?;
            // A transaction stays open for a checkpoint interval, plus the time to commit.
            let timeout_ms = (checkpoint.interval.as_millis() as u64 * 2).max(60_000);
            defaults.push(("transactional.id", prefix));
            defaults.push(("transaction.timeout.ms", timeout_ms.to_string()));
        }
        let defaults: Vec<(&str, &str)> = defaults.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let client = super::client_config(&options, &defaults);
        let producer: FutureProducer = client.create().map_err(|source| ConnectorError::Kafka {
            context: format!("creating a producer for topic {topic}"),
            source,
        })?;
        let transaction = if exactly_once {
            // The producer's own timeout: Runnel's default, or the table's property.
            let timeout = client
                .get("transaction.timeout.ms")
                .and_then(|ms| ms.trim().parse().ok())
                .map_or(Duration::from_secs(60), Duration::from_millis);
            let transaction =
                Transaction::begin(&producer, &config.sources, &topic, timeout).await?;
            if let Some(own) = client.get("transactional.id") {
                // In the background: a cluster's transaction log may be long to read.
                let (table, topic, own) = (table.clone(), topic.clone(), own.to_string());
                tokio::spawn(async move {
                    warn_of_lingering_transactions(&table, &topic, &own).await;
                });
            }
            Some(transaction)
        } else {
            None
        };
        Ok(Self {
            producer,
            transaction,
            topic,
            table: table.name.clone(),
            encoder,
            buffer,
        })
    }

    /// Produces `records` (each with its `extras`, when given) and waits until the broker
    /// acknowledged every one.
    async fn send(
        &self,
        records: &[Record],
        extras: &[RecordExtras],
    ) -> runnel_runtime::Result<()> {
        let mut pending = Vec::with_capacity(records.len());
        for (i, (key, value)) in records.iter().enumerate() {
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic);
            if let Some(value) = value {
                record = record.payload(value.as_slice());
            }
            if let Some(key) = key {
                record = record.key(key.as_slice());
            }
            if let Some(extra) = extras.get(i) {
                if let Some(timestamp) = extra.timestamp {
                    record = record.timestamp(timestamp);
                }
                if let Some(headers) = &extra.headers {
                    record = record.headers(headers.clone());
                }
            }
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                        // The local queue is full: let deliveries drain, then retry.
                        record = returned;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(self.delivery_error(e)),
                }
            }
        }
        for delivery in pending {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(self.delivery_error(e)),
                Err(_) => return Err(self.delivery_error(KafkaError::Canceled)),
            }
        }
        Ok(())
    }

    /// Writes what an upsert buffer holds (when `always`, or when it is due).
    async fn flush_buffer(&mut self, always: bool) -> runnel_runtime::Result<()> {
        let Some(buffer) = &mut self.buffer else {
            return Ok(());
        };
        if !always && !buffer.due() {
            return Ok(());
        }
        let records: Vec<Record> = buffer
            .take()
            .into_iter()
            .map(|(key, value)| (Some(key), value))
            .collect();
        self.send(&records, &[]).await
    }

    fn delivery_error(&self, source: KafkaError) -> runnel_runtime::RuntimeError {
        ConnectorError::Kafka {
            context: format!("producing to topic {}", self.topic),
            source,
        }
        .at("sink", &self.table)
    }
}

#[async_trait]
impl Sink for KafkaSink {
    async fn write_batch(&mut self, batch: RecordBatch) -> runnel_runtime::Result<()> {
        let (records, extras) = self
            .encoder
            .encode(&batch)
            .map_err(|e| e.at("sink", &self.table))?;
        if let Some(buffer) = &mut self.buffer {
            // Upsert records always have a key.
            buffer.hold(
                records
                    .into_iter()
                    .filter_map(|(key, value)| Some((key?, value)))
                    .collect(),
            );
            return self.flush_buffer(false).await;
        }
        self.send(&records, &extras).await
    }

    async fn on_watermark(&mut self, _watermark: i64) -> runnel_runtime::Result<()> {
        self.flush_buffer(false).await
    }

    /// An upsert buffer's rows wait at most `sink.buffer-flush.interval`, also when no
    /// more arrive.
    fn timer_interval(&self) -> Option<Duration> {
        self.buffer.as_ref().and_then(|buffer| buffer.interval())
    }

    async fn on_timer(&mut self) -> runnel_runtime::Result<()> {
        self.flush_buffer(false).await
    }

    async fn prepare_checkpoint(
        &mut self,
        _checkpoint: runnel_runtime::CheckpointId,
    ) -> runnel_runtime::Result<()> {
        self.flush_buffer(true).await
    }

    async fn finish(&mut self) -> runnel_runtime::Result<()> {
        self.flush_buffer(true).await?;
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(30)))
            .await
            .map_err(|e| runnel_runtime::RuntimeError::Task(e.to_string()))?
            .map_err(|e| self.delivery_error(e))
    }

    async fn commit_checkpoint(&mut self, checkpoint: &Manifest) -> runnel_runtime::Result<()> {
        let Some(transaction) = &self.transaction else {
            return Ok(());
        };
        transaction
            .commit(&self.producer, checkpoint)
            .await
            .map_err(|e| e.at("sink", &self.table))
    }
}

/// The exactly-once state of a sink: for each Kafka source of the job, its topic and a
/// consumer of its group (whose group metadata offsets are committed under).
struct Transaction {
    sources: Vec<(String, String, BaseConsumer)>,
    /// The producer's `transaction.timeout.ms`: the broker aborts a transaction open
    /// longer, so no call waits longer for one (a commit that cannot complete in it fails
    /// the job, which restarts from its last checkpoint).
    timeout: Duration,
}

/// Runs a blocking producer call (transactions) off the async workers.
async fn blocking<T: Send + 'static>(
    what: String,
    call: impl FnOnce() -> rdkafka::error::KafkaResult<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| ConnectorError::Other(format!("{what}: {e}")))?
        .map_err(|source| ConnectorError::Kafka {
            context: what,
            source,
        })
}

/// Where a job's checkpoint directory records the transactional id each exactly-once
/// Kafka sink table uses.
fn recorded_id_path(dir: &std::path::Path, table: &str) -> std::path::PathBuf {
    dir.join("kafka-transactional-ids").join(table)
}

/// Recovers a transaction left open under the id this job used before for `table` (its
/// `sink.transactional-id-prefix` changed since): fences that id, which aborts whatever
/// it left open, so `read_committed` readers need not wait for its timeout. Then records
/// `id` as the table's.
async fn recover_replaced_id(table: &TableDef, dir: &std::path::Path, id: &str) -> Result<()> {
    let path = recorded_id_path(dir, &table.name);
    let recorded = std::fs::read_to_string(&path).ok();
    if let Some(old) = recorded.as_deref().map(str::trim).filter(|old| *old != id) {
        super::transactions::abort_transaction(table, old).await?;
        tracing::info!(
            table = %table.name,
            old,
            new = id,
            "the sink's transactional id changed: fenced the old one (aborting what it left open)"
        );
    }
    if recorded.as_deref().map(str::trim) != Some(id) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| ConnectorError::Io {
                path: parent.display().to_string(),
                source,
            })?;
        }
        std::fs::write(&path, id).map_err(|source| ConnectorError::Io {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

/// Warns of transactions other producers hold open on `topic`: `read_committed` readers
/// of it wait for them. Reading the cluster's transaction log may be refused (it needs
/// rights on an internal topic) or slow (a big cluster's): then nothing is said, and the
/// job does not wait for it.
async fn warn_of_lingering_transactions(table: &TableDef, topic: &str, own: &str) {
    match super::transactions::transactions(table).await {
        Ok(transactions) => {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            for t in transactions
                .iter()
                .filter(|t| t.state.is_open() && t.writes_to(topic) && t.transactional_id != own)
            {
                tracing::warn!(
                    table = %table.name,
                    topic,
                    transactional_id = %t.transactional_id,
                    open_for_s = (now_ms - t.started_ms).max(0) / 1000,
                    timeout_s = t.timeout_ms / 1000,
                    "another producer holds a transaction open on the sink's topic: read_committed \
                     readers wait for it; if its producer is gone, ABORT TRANSACTION '{}' in the \
                     shell ends it now",
                    t.transactional_id
                );
            }
        }
        Err(e) => {
            tracing::debug!(table = %table.name, error = %e, "could not read the transaction log")
        }
    }
}

impl Transaction {
    /// Fences any earlier producer with the same transactional id (aborting what it left
    /// open) and opens the first transaction.
    async fn begin(
        producer: &FutureProducer,
        sources: &[std::sync::Arc<TableDef>],
        topic: &str,
        timeout: Duration,
    ) -> Result<Self> {
        let mut groups = Vec::new();
        for table in sources {
            if !matches!(table.connector(), Some("kafka" | "upsert-kafka")) {
                return Err(ConnectorError::Other(format!(
                    "'sink.delivery-guarantee' = 'exactly-once' needs every source to be a Kafka \
                     table (its offsets commit with the output); {} is not",
                    table.name
                )));
            }
            let options = super::options(table)?;
            let group = super::group_id(table);
            let consumer: BaseConsumer =
                super::client_config(&options, &[("group.id", group.as_str())])
                    .create()
                    .map_err(|source| ConnectorError::Kafka {
                        context: format!("creating a consumer of group {group}"),
                        source,
                    })?;
            groups.push((
                table.name.clone(),
                options.required("topic")?.to_string(),
                consumer,
            ));
        }
        let init = producer.clone();
        blocking(format!("starting transactions on topic {topic}"), move || {
            init.init_transactions(timeout)
        })
        .await
        .map_err(|e| match e {
            ConnectorError::Kafka { source, .. }
                if source.rdkafka_error_code() == Some(RDKafkaErrorCode::InvalidTransactionTimeout) =>
            {
                ConnectorError::Other(
                    "the transaction timeout (twice the checkpoint interval, at least 60 s) is above \
                     the broker's transaction.max.timeout.ms: shorten the checkpoint interval or \
                     raise the broker's limit"
                        .into(),
                )
            }
            other => other,
        })?;
        producer
            .begin_transaction()
            .map_err(|source| ConnectorError::Kafka {
                context: format!("beginning a transaction on topic {topic}"),
                source,
            })?;
        Ok(Self {
            sources: groups,
            timeout,
        })
    }

    /// Commits the open transaction with `checkpoint`'s source offsets, and opens the next.
    async fn commit(&self, producer: &FutureProducer, checkpoint: &Manifest) -> Result<()> {
        let timeout = self.timeout;
        for (table, topic, consumer) in &self.sources {
            // A table read by parallel readers has one state per reader, each with the
            // offsets of its own partitions.
            let mut offsets = TopicPartitionList::new();
            let states = checkpoint.sources.iter().filter(|s| &s.table == table);
            for state in states {
                for (partition, next) in state.offsets.iter().enumerate() {
                    let Some(next) = next else { continue };
                    let place = |source| ConnectorError::Kafka {
                        context: format!("offsets of {topic}"),
                        source,
                    };
                    let mut element = offsets.add_partition(topic, partition as i32);
                    element.set_offset(Offset::Offset(*next)).map_err(place)?;
                    element.set_metadata(super::checkpoint_metadata(checkpoint.id));
                }
            }
            if offsets.count() == 0 {
                continue;
            }
            let Some(group) = consumer.group_metadata() else {
                return Err(ConnectorError::Other(format!(
                    "no consumer group metadata for the source {table}"
                )));
            };
            let send = producer.clone();
            blocking(
                format!(
                    "committing offsets of {topic} with checkpoint {}",
                    checkpoint.id
                ),
                move || send.send_offsets_to_transaction(&offsets, &group, timeout),
            )
            .await?;
        }
        let commit = producer.clone();
        blocking(
            format!("committing checkpoint {}", checkpoint.id),
            move || commit.commit_transaction(timeout),
        )
        .await?;
        producer
            .begin_transaction()
            .map_err(|source| ConnectorError::Kafka {
                context: "beginning the next transaction".into(),
                source,
            })
    }
}
