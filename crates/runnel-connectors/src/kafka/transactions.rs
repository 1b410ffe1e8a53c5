//! Kafka transactions left open by producers that are gone: listed from the cluster's
//! transaction log and aborted by fencing their transactional id.
//!
//! Each transaction coordinator keeps the state of its transactional ids in the compacted
//! internal topic `__transaction_state` (key: the id; value: producer, state, partitions,
//! times). librdkafka has no `ListTransactions` call, so [`transactions`] reads that topic
//! from its start to its end and keeps the newest state of each id. Reading it needs
//! `Describe` and `Read` on the topic on a secured cluster.
//!
//! An open transaction holds back every `read_committed` reader of the partitions it
//! wrote until it ends: the broker aborts it after its timeout, or a producer started
//! with the same transactional id fences it ([`abort_transaction`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use runnel_sql::TableDef;

use crate::error::{ConnectorError, Result};

/// The internal topic of the transaction coordinators.
const TRANSACTION_LOG: &str = "__transaction_state";

/// How long reading the transaction log may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A transaction's state, as its coordinator logs it (Kafka's `TransactionState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
    Unknown(i8),
}

impl TransactionState {
    fn from_code(code: i8) -> Self {
        match code {
            0 => Self::Empty,
            1 => Self::Ongoing,
            2 => Self::PrepareCommit,
            3 => Self::PrepareAbort,
            4 => Self::CompleteCommit,
            5 => Self::CompleteAbort,
            6 => Self::Dead,
            7 => Self::PrepareEpochFence,
            other => Self::Unknown(other),
        }
    }

    /// Whether a transaction in this state still holds back `read_committed` readers.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            Self::Ongoing | Self::PrepareCommit | Self::PrepareAbort | Self::PrepareEpochFence
        )
    }

    /// Kafka's name of the state.
    pub fn name(self) -> String {
        match self {
            Self::Empty => "Empty".into(),
            Self::Ongoing => "Ongoing".into(),
            Self::PrepareCommit => "PrepareCommit".into(),
            Self::PrepareAbort => "PrepareAbort".into(),
            Self::CompleteCommit => "CompleteCommit".into(),
            Self::CompleteAbort => "CompleteAbort".into(),
            Self::Dead => "Dead".into(),
            Self::PrepareEpochFence => "PrepareEpochFence".into(),
            Self::Unknown(code) => format!("Unknown({code})"),
        }
    }
}

/// One transactional id's newest state in the transaction log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaTransaction {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub state: TransactionState,
    pub timeout_ms: i32,
    /// The partitions written in the transaction, by topic.
    pub partitions: Vec<(String, Vec<i32>)>,
    /// When the transaction started (ms since the epoch; -1 when none is open).
    pub started_ms: i64,
    /// When its state last changed.
    pub updated_ms: i64,
}

impl KafkaTransaction {
    /// Whether the transaction wrote to `topic`.
    pub fn writes_to(&self, topic: &str) -> bool {
        self.partitions.iter().any(|(t, _)| t == topic)
    }
}

/// Reads big-endian fields of a transaction log record.
struct Fields<'a> {
    bytes: &'a [u8],
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn i8(&mut self) -> Option<i8> {
        Some(self.take(1)?[0] as i8)
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    /// An unsigned varint (the lengths of flexible versions).
    fn uvarint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// A string: an int16 length (version 0) or a compact uvarint length + 1 (flexible).
    fn string(&mut self, flexible: bool) -> Option<String> {
        let len = if flexible {
            usize::try_from(self.uvarint()?.checked_sub(1)?).ok()?
        } else {
            usize::try_from(self.i16()?).ok()?
        };
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }

    /// An array length: int32 (version 0) or compact uvarint + 1 (flexible); `None`
    /// inside for a null array.
    fn array_len(&mut self, flexible: bool) -> Option<Option<usize>> {
        if flexible {
            let n = self.uvarint()?;
            Some(n.checked_sub(1).and_then(|n| usize::try_from(n).ok()))
        } else {
            let n = self.i32()?;
            Some(usize::try_from(n).ok())
        }
    }

    /// Skips a flexible version's tagged fields.
    fn skip_tagged_fields(&mut self) -> Option<()> {
        for _ in 0..self.uvarint()? {
            self.uvarint()?;
            let size = usize::try_from(self.uvarint()?).ok()?;
            self.take(size)?;
        }
        Some(())
    }
}

/// The transactional id of a transaction log key (`None`: another kind of record).
fn parse_key(key: &[u8]) -> Option<String> {
    let mut fields = Fields { bytes: key };
    if fields.i16()? != 0 {
        return None;
    }
    fields.string(false)
}

/// A transaction log value (versions 0 and 1) for `transactional_id`.
fn parse_value(transactional_id: String, value: &[u8]) -> Option<KafkaTransaction> {
    let mut fields = Fields { bytes: value };
    let flexible = match fields.i16()? {
        0 => false,
        1 => true,
        _ => return None,
    };
    let producer_id = fields.i64()?;
    let producer_epoch = fields.i16()?;
    let timeout_ms = fields.i32()?;
    let state = TransactionState::from_code(fields.i8()?);
    let mut partitions = Vec::new();
    if let Some(topics) = fields.array_len(flexible)? {
        for _ in 0..topics {
            let topic = fields.string(flexible)?;
            let ids = fields.array_len(flexible)?.unwrap_or(0);
            let ids = (0..ids)
                .map(|_| fields.i32())
                .collect::<Option<Vec<i32>>>()?;
            if flexible {
                fields.skip_tagged_fields()?;
            }
            partitions.push((topic, ids));
        }
    }
    let updated_ms = fields.i64()?;
    let started_ms = fields.i64()?;
    if flexible {
        fields.skip_tagged_fields()?;
    }
    Some(KafkaTransaction {
        transactional_id,
        producer_id,
        producer_epoch,
        state,
        timeout_ms,
        partitions,
        started_ms,
        updated_ms,
    })
}

/// Every transactional id known to the cluster `table` is on, with its newest state,
/// by id.
pub async fn transactions(table: &TableDef) -> Result<Vec<KafkaTransaction>> {
    let options = super::options(table)?;
    let config = super::client_config(
        &options,
        &[
            ("group.id", "runnel-transaction-log-reader"),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "false"),
        ],
    );
    let consumer: BaseConsumer = config.create().map_err(|source| ConnectorError::Kafka {
        context: format!(
            "creating a reader of {TRANSACTION_LOG} (table {})",
            table.name
        ),
        source,
    })?;
    let name = table.name.clone();
    tokio::task::spawn_blocking(move || read_log(&consumer, &name))
        .await
        .map_err(|e| ConnectorError::Other(format!("reading {TRANSACTION_LOG}: {e}")))?
}

fn read_log(consumer: &BaseConsumer, table: &str) -> Result<Vec<KafkaTransaction>> {
    let error = |context: String| move |source| ConnectorError::Kafka { context, source };
    let metadata = super::with_retries("reading metadata", || {
        consumer.fetch_metadata(Some(TRANSACTION_LOG), Duration::from_secs(10))
    })
    .map_err(error(format!(
        "reading metadata of {TRANSACTION_LOG} (table {table})"
    )))?;
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for topic in metadata.topics().iter().filter(|t| t.error().is_none()) {
        for partition in topic.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(TRANSACTION_LOG, partition.id(), Duration::from_secs(10))
                .map_err(error(format!(
                    "reading the offsets of {TRANSACTION_LOG} (table {table})"
                )))?;
            if high > low {
                ends.insert(partition.id(), high);
                assignment
                    .add_partition_offset(TRANSACTION_LOG, partition.id(), Offset::Offset(low))
                    .map_err(error(format!("assigning {TRANSACTION_LOG}")))?;
            }
        }
    }
    let mut newest: BTreeMap<String, KafkaTransaction> = BTreeMap::new();
    if ends.is_empty() {
        return Ok(Vec::new());
    }
    consumer
        .assign(&assignment)
        .map_err(error(format!("assigning {TRANSACTION_LOG}")))?;
    let deadline = Instant::now() + READ_TIMEOUT;
    while !ends.is_empty() {
        if Instant::now() > deadline {
            return Err(ConnectorError::Other(format!(
                "reading {TRANSACTION_LOG} (table {table}) took longer than {READ_TIMEOUT:?}"
            )));
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message =
            message.map_err(error(format!("reading {TRANSACTION_LOG} (table {table})")))?;
        if ends
            .get(&message.partition())
            .is_some_and(|end| message.offset() + 1 >= *end)
        {
            ends.remove(&message.partition());
        }
        let Some(id) = message.key().and_then(parse_key) else {
            continue;
        };
        match message.payload() {
            None => {
                newest.remove(&id);
            }
            Some(value) => match parse_value(id.clone(), value) {
                Some(transaction) => {
                    newest.insert(id, transaction);
                }
                None => tracing::debug!(
                    transactional_id = %id,
                    "a transaction log record of an unknown version: skipped"
                ),
            },
        }
    }
    Ok(newest.into_values().collect())
}

/// Aborts whatever transaction `transactional_id` left open on the cluster `table` is
/// on: a producer started with that id bumps its epoch, which fences the old producer and
/// makes the coordinator abort its open transaction.
pub async fn abort_transaction(table: &TableDef, transactional_id: &str) -> Result<()> {
    let options = super::options(table)?;
    let producer: BaseProducer = super::client_config(
        &options,
        &[
            ("transactional.id", transactional_id),
            ("enable.idempotence", "true"),
        ],
    )
    .create()
    .map_err(|source| ConnectorError::Kafka {
        context: format!("creating a producer to abort transaction '{transactional_id}'"),
        source,
    })?;
    let id = transactional_id.to_string();
    tokio::task::spawn_blocking(move || {
        producer
            .init_transactions(super::METADATA_TIMEOUT)
            .map_err(|source| ConnectorError::Kafka {
                context: format!("fencing transactional id '{id}'"),
                source,
            })
    })
    .await
    .map_err(|e| ConnectorError::Other(format!("aborting a transaction: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> Vec<u8> {
        let mut bytes = 0i16.to_be_bytes().to_vec();
        bytes.extend((id.len() as i16).to_be_bytes());
        bytes.extend(id.as_bytes());
        bytes
    }

    /// A value as the coordinator writes it: version 0 (classic) or 1 (flexible, with a
    /// tagged field), one topic of two partitions.
    fn value(version: i16) -> Vec<u8> {
        let flexible = version == 1;
        let mut bytes = version.to_be_bytes().to_vec();
        bytes.extend(42i64.to_be_bytes());
        bytes.extend(3i16.to_be_bytes());
        bytes.extend(60_000i32.to_be_bytes());
        bytes.push(1); // Ongoing
        let topic = b"claims.out";
        if flexible {
            bytes.push(2); // one topic
            bytes.push(topic.len() as u8 + 1);
            bytes.extend(topic);
            bytes.push(3); // two partitions
        } else {
            bytes.extend(1i32.to_be_bytes());
            bytes.extend((topic.len() as i16).to_be_bytes());
            bytes.extend(topic);
            bytes.extend(2i32.to_be_bytes());
        }
        bytes.extend(0i32.to_be_bytes());
        bytes.extend(5i32.to_be_bytes());
        if flexible {
            bytes.push(0); // the topic's tagged fields
        }
        bytes.extend(1_700_000_001_000i64.to_be_bytes());
        bytes.extend(1_700_000_000_000i64.to_be_bytes());
        if flexible {
            // One tagged field (PreviousProducerId, 8 bytes).
            bytes.extend([1, 0, 8]);
            bytes.extend((-1i64).to_be_bytes());
        }
        bytes
    }

    #[test]
    fn reads_both_versions_of_the_transaction_log() {
        assert_eq!(parse_key(&key("runnel-out")).as_deref(), Some("runnel-out"));
        for version in [0, 1] {
            let transaction = parse_value("runnel-out".into(), &value(version)).unwrap();
            assert_eq!(
                transaction,
                KafkaTransaction {
                    transactional_id: "runnel-out".into(),
                    producer_id: 42,
                    producer_epoch: 3,
                    state: TransactionState::Ongoing,
                    timeout_ms: 60_000,
                    partitions: vec![("claims.out".into(), vec![0, 5])],
                    started_ms: 1_700_000_000_000,
                    updated_ms: 1_700_000_001_000,
                },
                "version {version}"
            );
            assert!(transaction.state.is_open() && transaction.writes_to("claims.out"));
        }
    }

    #[test]
    fn cut_or_unknown_records_are_skipped_not_misread() {
        let whole = value(1);
        for cut in 0..whole.len() {
            assert_eq!(parse_value("x".into(), &whole[..cut]), None, "cut at {cut}");
        }
        let mut later = value(1);
        later[1] = 2; // version 2
        assert_eq!(parse_value("x".into(), &later), None);
        assert_eq!(
            parse_key(&[0, 1, 0, 0]),
            None,
            "a key of another record type"
        );
    }
}
