//! [`TransactionWriter`]: a process's open Kafka transaction — everything its tasks write
//! (sink rows, repartition records, changelog and status records) and, at each commit,
//! the offsets they read, under the group's metadata so a fenced-out process cannot
//! commit. One transactional producer per process; its id is new at every start (a dead
//! process's open transaction is aborted by the broker after [`TRANSACTION_TIMEOUT_MS`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, TopicPartitionList};
use runnel_connectors::kafka::KafkaRecordEncoder;
use runnel_runtime::graph::StageId;
use runnel_runtime::JobMetrics;

use crate::error::{ClusterError, Result};
use crate::pipeline::TaskWriter;
use crate::wire::Envelope;

/// How long a transaction call may take.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);
/// A dead process's open transaction is aborted by the broker after this long; until
/// then its rows hold back readers of the partitions it wrote.
pub const TRANSACTION_TIMEOUT_MS: &str = "10000";

/// Writes into the process's open transaction.
pub struct TransactionWriter {
    producer: ThreadedProducer<DefaultProducerContext>,
    sink: TopicWriter,
    /// The late-data table's topic, when the job routes late rows to one.
    late: Option<TopicWriter>,
    repartition_topics: HashMap<StageId, String>,
    metrics: Arc<JobMetrics>,
}

/// A Kafka table the job writes rows to: its topic and how a row becomes a record.
pub struct TopicWriter {
    pub topic: String,
    pub encoder: KafkaRecordEncoder,
}

impl TransactionWriter {
    /// A writer with its first transaction open: rows of the sink go to `sink`, late rows
    /// to `late`, repartition records to `repartition_topics`.
    pub fn open(
        client: &ClientConfig,
        job: &str,
        sink: TopicWriter,
        late: Option<TopicWriter>,
        repartition_topics: HashMap<StageId, String>,
        metrics: Arc<JobMetrics>,
    ) -> Result<Self> {
        let transactional_id = format!(
            "{job}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        let producer: ThreadedProducer<DefaultProducerContext> = client
            .clone()
            .set("transactional.id", &transactional_id)
            .set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set(
                "message.max.bytes",
                crate::topics::MAX_RECORD_BYTES.to_string(),
            )
            .create()
            .map_err(ClusterError::kafka(
                "creating the job's transactional producer",
            ))?;
        producer
            .init_transactions(TRANSACTION_TIMEOUT)
            .map_err(ClusterError::kafka("starting transactions"))?;
        producer
            .begin_transaction()
            .map_err(ClusterError::kafka("beginning a transaction"))?;
        Ok(Self {
            producer,
            sink,
            late,
            repartition_topics,
            metrics,
        })
    }

    /// Commits the open transaction with `offsets` (the next offset of each partition its
    /// tasks read, committed for `group`), and begins the next.
    pub fn commit(
        &self,
        offsets: &TopicPartitionList,
        group: Option<ConsumerGroupMetadata>,
    ) -> Result<()> {
        if offsets.count() > 0 {
            let group = group.ok_or_else(|| {
                ClusterError::Setting("the consumer has no group metadata".into())
            })?;
            self.producer
                .send_offsets_to_transaction(offsets, &group, TRANSACTION_TIMEOUT)
                .map_err(ClusterError::kafka(
                    "committing offsets with the transaction",
                ))?;
        }
        self.producer
            .commit_transaction(TRANSACTION_TIMEOUT)
            .map_err(ClusterError::kafka("committing the transaction"))?;
        self.producer
            .begin_transaction()
            .map_err(ClusterError::kafka("beginning a transaction"))?;
        JobMetrics::add(&self.metrics.checkpoints, 1);
        Ok(())
    }

    /// Aborts the open transaction (nothing written since the last commit is ever read),
    /// and begins the next.
    pub fn abort(&self) -> Result<()> {
        self.producer
            .abort_transaction(TRANSACTION_TIMEOUT)
            .map_err(ClusterError::kafka("aborting the transaction"))?;
        self.producer
            .begin_transaction()
            .map_err(ClusterError::kafka("beginning a transaction"))
    }

    /// Produces one record into the transaction, waiting while the local queue is full.
    pub fn send(&self, mut record: BaseRecord<'_, [u8], [u8]>) -> Result<()> {
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((source, returned)) => {
                    return Err(ClusterError::Kafka {
                        context: format!("producing to topic {}", returned.topic),
                        source,
                    })
                }
            }
        }
    }

    /// Writes `batch` (in the late-data table's columns) to the late-data table, if the
    /// job routes late rows to one; false when it does not.
    pub fn late_rows(&self, batch: &RecordBatch) -> Result<bool> {
        let Some(late) = &self.late else {
            return Ok(false);
        };
        self.write_rows(late, batch)?;
        JobMetrics::add(&self.metrics.late_rows_routed, batch.num_rows());
        Ok(true)
    }

    /// Produces `batch` as records of `table`.
    fn write_rows(&self, table: &TopicWriter, batch: &RecordBatch) -> Result<()> {
        let (records, extras) = table.encoder.encode(batch)?;
        for (i, (key, value)) in records.iter().enumerate() {
            let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&table.topic);
            if let Some(key) = key {
                record = record.key(key.as_slice());
            }
            if let Some(value) = value {
                record = record.payload(value.as_slice());
            }
            if let Some(extra) = extras.get(i) {
                if let Some(timestamp) = extra.timestamp {
                    record = record.timestamp(timestamp);
                }
                if let Some(headers) = &extra.headers {
                    record = record.headers(headers.clone());
                }
            }
            self.send(record)?;
        }
        Ok(())
    }
}

impl TaskWriter for TransactionWriter {
    fn sink_rows(&mut self, batch: &RecordBatch) -> Result<()> {
        self.write_rows(&self.sink, batch)?;
        JobMetrics::add(&self.metrics.rows_out, batch.num_rows());
        Ok(())
    }

    fn repartition(
        &mut self,
        stage: StageId,
        partition: i32,
        envelope: Envelope,
        value: Option<Vec<u8>>,
    ) -> Result<()> {
        let topic = self.repartition_topics.get(&stage).ok_or_else(|| {
            ClusterError::Unsupported(format!("stage {stage} has no repartition topic"))
        })?;
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
            .partition(partition)
            .headers(envelope.headers());
        if let Some(value) = &value {
            record = record.payload(value.as_slice());
        }
        self.send(record)
    }
}

/// Whether a failed transaction call leaves the producer usable once the transaction is
/// aborted (a rebalance moved the group's generation on, a request timed out). A record
/// produced into a transaction that already failed that way is refused with librdkafka's
/// `ERR__STATE`; were the producer fenced for good, the abort then fails and says so.
pub fn abortable(error: &ClusterError) -> bool {
    match error {
        ClusterError::Kafka {
            source: KafkaError::Transaction(e),
            ..
        } => e.txn_requires_abort() && !e.is_fatal(),
        ClusterError::Kafka {
            source: KafkaError::MessageProduction(RDKafkaErrorCode::State),
            ..
        } => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_refused_by_a_failed_transaction_is_abortable() {
        let kafka = |source| ClusterError::Kafka {
            context: "producing to topic t-stage-1-changelog".into(),
            source,
        };
        assert!(abortable(&kafka(KafkaError::MessageProduction(
            RDKafkaErrorCode::State
        ))));
        // Other refusals are not the transaction's: a missing topic, an oversized record.
        for code in [
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::Fatal,
        ] {
            assert!(!abortable(&kafka(KafkaError::MessageProduction(code))));
        }
    }
}
