//! [`KafkaSource`]: reads every partition of a topic, decoding each poll's messages per
//! partition into one Arrow batch.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use runnel_runtime::{
    DeliveryGuarantee, JobConfig, JobMetrics, Source, SourceBatch, SourceEvent, SourceSplit,
    SourceState,
};
use runnel_sql::TableDef;

use super::fetch::BatchFetcher;
use super::records::{KafkaRecordDecoder, PartitionRecords, PolledRecords};
use crate::error::{ConnectorError, Result};

/// A topic's partition ids, each one's (low, high) offsets, and the group's committed
/// offset of each (when asked for).
type TopicLayout = (Vec<i32>, Vec<(i64, i64)>, Vec<Option<i64>>);

/// Records taken from librdkafka at once, at most.
const MAX_POLL_RECORDS: usize = 8192;
/// How long a bounded read waits for messages before checking whether it is done.
const IDLE_CHECK: Duration = Duration::from_millis(500);

/// Reads one topic. With `'scan.bounded.mode' = 'latest-offset'` it stops at the end
/// offsets found at start; otherwise it reads forever.
pub struct KafkaSource {
    table: String,
    /// Turns the table's records into its rows.
    decoder: KafkaRecordDecoder,
    consumer: Arc<BaseConsumer>,
    /// What the polling thread read: messages of one poll, or a consumer error.
    polled: tokio::sync::mpsc::Receiver<std::result::Result<PolledRecords, String>>,
    /// Stops the polling thread when the source is dropped.
    stop: Arc<std::sync::atomic::AtomicBool>,
    topic: String,
    /// Kafka partition ids; our partition index is the position in this list.
    partitions: Vec<i32>,
    /// Which of them this reader reads (see [`SourceSplit`]).
    owned: Vec<bool>,
    /// Exclusive end offset per partition, in bounded mode.
    end_offsets: Option<Vec<i64>>,
    finished: Vec<bool>,
    /// `'scan.watermark.idle-timeout'`: a partition without rows for this long is idle.
    idle_timeout: Option<Duration>,
    last_rows: Vec<Instant>,
    idle: Vec<bool>,
    metrics: Arc<JobMetrics>,
    ready: VecDeque<SourceEvent>,
    /// At-most-once: offsets are committed to the group as records are read.
    commit_as_read: bool,
    /// The consumer's settings and first offsets, and the next offset of each partition
    /// read since: enough to start a fresh consumer where this one stands.
    config: rdkafka::ClientConfig,
    start_offsets: Vec<Offset>,
    next_offsets: Vec<Option<i64>>,
    /// When the last message arrived, or the consumer was last checked for a stall.
    last_progress: Instant,
}

/// How long a consumer may deliver nothing while its partitions have records waiting
/// before it is replaced (librdkafka can stay stuck after a broker restart).
const STALL_TIMEOUT: Duration = Duration::from_secs(10);

fn kafka_error(
    context: impl Into<String>,
) -> impl FnOnce(rdkafka::error::KafkaError) -> ConnectorError {
    let context = context.into();
    move |source| ConnectorError::Kafka { context, source }
}

impl KafkaSource {
    /// Opens the topic at `start` (a restored checkpoint's next offsets) when given,
    /// else at the table's `'scan.startup.mode'`.
    pub async fn open(
        table: &TableDef,
        metrics: Arc<JobMetrics>,
        defaults: &JobConfig,
        split: SourceSplit,
        start: Option<&SourceState>,
    ) -> Result<Self> {
        let options = super::options(table)?;
        let decoder = KafkaRecordDecoder::new(table)?;
        let topic = options.required("topic")?.to_string();
        let servers = options
            .required("properties.bootstrap.servers")?
            .to_string();
        let group = super::group_id(table);
        let startup = options.get("scan.startup.mode").unwrap_or("group-offsets");
        let bounded = options.get("scan.bounded.mode") == Some("latest-offset");
        let idle_timeout = options
            .duration("scan.watermark.idle-timeout")?
            .or(defaults.source_idle_timeout);
        let isolation = match defaults.delivery {
            // Read only committed output of transactional upstream jobs.
            DeliveryGuarantee::ExactlyOnce => "read_committed",
            _ => "read_uncommitted",
        };
        let config = super::client_config(
            &options,
            &[
                ("group.id", group.as_str()),
                ("enable.auto.commit", "false"),
                ("auto.offset.reset", "earliest"),
                ("fetch.wait.max.ms", "100"),
                // librdkafka stops fetching a partition for a whole second (its default)
                // once its queue holds enough; readers then waited with idle cores.
                ("fetch.queue.backoff.ms", "10"),
                ("isolation.level", isolation),
            ],
        );
        let consumer: BaseConsumer = config
            .clone()
            .create()
            .map_err(kafka_error(format!("creating a consumer for {servers}")))?;
        let consumer = Arc::new(consumer);

        // Metadata and offsets are blocking calls: keep them off the async workers.
        let group_offsets = startup == "group-offsets";
        let (partitions, ends, committed) = {
            let consumer = consumer.clone();
            let topic = topic.clone();
            tokio::task::spawn_blocking(move || -> Result<TopicLayout> {
                let metadata = consumer
                    .fetch_metadata(Some(&topic), super::METADATA_TIMEOUT)
                    .map_err(kafka_error(format!(
                        "reading metadata of topic {topic} from {servers}"
                    )))?;
                let mut partitions: Vec<i32> = metadata
                    .topics()
                    .iter()
                    .filter(|t| t.name() == topic && t.error().is_none())
                    .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                    .collect();
                // Partition index i is the i-th partition id (checkpoints rely on it).
                partitions.sort_unstable();
                if partitions.is_empty() {
                    return Err(ConnectorError::Other(format!(
                        "kafka topic '{topic}' does not exist on {servers} (or has no partitions)"
                    )));
                }
                let mut watermarks = Vec::with_capacity(partitions.len());
                for &p in &partitions {
                    watermarks.push(
                        consumer
                            .fetch_watermarks(&topic, p, super::METADATA_TIMEOUT)
                            .map_err(kafka_error(format!(
                                "reading offsets of {topic} partition {p}"
                            )))?,
                    );
                }
                // The group's committed offsets are read here, once, rather than left to
                // librdkafka's stored-offset lookup (which a broker restart can leave stuck).
                let mut committed = vec![None; partitions.len()];
                if group_offsets {
                    let mut query = TopicPartitionList::new();
                    for &p in &partitions {
                        query.add_partition(&topic, p);
                    }
                    let offsets = super::with_retries("reading committed offsets", || {
                        consumer.committed_offsets(query.clone(), Duration::from_secs(10))
                    })
                    .map_err(kafka_error(format!(
                        "reading the offsets committed on {topic} by its consumer group"
                    )))?;
                    for element in offsets.elements() {
                        if let (Some(i), Offset::Offset(o)) = (
                            partitions.iter().position(|&p| p == element.partition()),
                            element.offset(),
                        ) {
                            committed[i] = Some(o);
                        }
                    }
                }
                Ok((partitions, watermarks, committed))
            })
            .await
            .map_err(|e| ConnectorError::Other(format!("kafka metadata task failed: {e}")))??
        };

        // A parallel reader takes every `split.count`-th partition; the others count as
        // finished here (their own reader holds their watermark back).
        let owned: Vec<bool> = (0..partitions.len()).map(|i| split.owns(i)).collect();
        let mut assignment = TopicPartitionList::new();
        let mut start_offsets = Vec::with_capacity(partitions.len());
        for (i, &p) in partitions.iter().enumerate() {
            // A restored job resumes at the checkpoint's offset of each partition it had read.
            let offset = match start.and_then(|s| s.offsets.get(i).copied().flatten()) {
                Some(next) => Offset::Offset(next),
                None => match startup {
                    "latest-offset" => Offset::End,
                    "earliest-offset" => Offset::Beginning,
                    // group-offsets: the committed offset, else the beginning.
                    _ => committed[i].map_or(Offset::Beginning, Offset::Offset),
                },
            };
            start_offsets.push(offset);
            if owned[i] {
                assignment
                    .add_partition_offset(&topic, p, offset)
                    .map_err(kafka_error(format!("assigning {topic} partition {p}")))?;
            }
        }
        consumer
            .assign(&assignment)
            .map_err(kafka_error(format!("assigning partitions of {topic}")))?;

        let mut finished = vec![false; partitions.len()];
        let mut ready = VecDeque::new();
        for (i, _) in owned.iter().enumerate().filter(|(_, &owned)| !owned) {
            finished[i] = true;
            ready.push_back(SourceEvent::PartitionFinished(i));
        }
        let end_offsets = bounded.then(|| ends.iter().map(|&(_, high)| high).collect::<Vec<_>>());
        if bounded {
            for (i, &(low, high)) in ends.iter().enumerate() {
                // Starting at (or past) the end offset: from a checkpoint, or from offsets
                // the group committed (a bounded job run again) — nothing left to read.
                let starts_at_end = match start_offsets[i] {
                    Offset::Offset(next) => next >= high,
                    _ => false,
                };
                if finished[i] {
                    continue;
                }
                if high <= low || startup == "latest-offset" || starts_at_end {
                    finished[i] = true;
                    ready.push_back(SourceEvent::PartitionFinished(i));
                }
            }
        }
        tracing::info!(table = %table.name, %topic, partitions = partitions.len(), reader = split.index, readers = split.count, bounded, "kafka source assigned");
        let (polled, stop) = spawn_poller(consumer.clone(), &table.name, decoder.reads_headers())?;
        let count = partitions.len();
        Ok(Self {
            table: table.name.clone(),
            decoder,
            consumer,
            polled,
            stop,
            topic,
            partitions,
            owned,
            end_offsets,
            finished,
            idle_timeout,
            last_rows: vec![Instant::now(); count],
            idle: vec![false; count],
            metrics,
            ready,
            commit_as_read: defaults.delivery == DeliveryGuarantee::AtMostOnce,
            config,
            next_offsets: vec![None; start_offsets.len()],
            start_offsets,
            last_progress: Instant::now(),
        })
    }

    /// Replaces the consumer with a fresh one at the same offsets when it has delivered
    /// nothing for [`STALL_TIMEOUT`] although a partition has records past them.
    async fn replace_if_stalled(&mut self) -> Result<()> {
        if self.last_progress.elapsed() < STALL_TIMEOUT {
            return Ok(());
        }
        self.last_progress = Instant::now();
        // Asked of a fresh client: the stuck one may not answer at all.
        let (config, topic, partitions) = (
            self.config.clone(),
            self.topic.clone(),
            self.partitions.clone(),
        );
        let highs = tokio::task::spawn_blocking(move || {
            let Ok(consumer) = config.create::<BaseConsumer>() else {
                return vec![None; partitions.len()];
            };
            partitions
                .iter()
                .map(|&p| {
                    consumer
                        .fetch_watermarks(&topic, p, Duration::from_secs(5))
                        .map(|(_, high)| high)
                        .ok()
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| ConnectorError::Other(format!("kafka offsets task failed: {e}")))?;
        // A consumer that cannot even tell its partitions' end offsets is stuck too.
        let waiting = highs.iter().enumerate().any(|(i, high)| {
            if !self.owned[i] {
                return false;
            }
            let Some(high) = high else { return true };
            match (self.next_offsets[i], self.start_offsets[i]) {
                (Some(next), _) | (None, Offset::Offset(next)) => *high > next,
                _ => false,
            }
        });
        if !waiting || self.finished.iter().all(|&f| f) {
            return Ok(());
        }
        tracing::warn!(topic = %self.topic, "kafka consumer stalled with records waiting; starting a new one at the same offsets");
        let consumer: BaseConsumer = self.config.create().map_err(kafka_error(format!(
            "recreating the consumer of {}",
            self.topic
        )))?;
        let mut assignment = TopicPartitionList::new();
        for (i, &p) in self.partitions.iter().enumerate() {
            if !self.owned[i] {
                continue;
            }
            let offset = self.next_offsets[i].map_or(self.start_offsets[i], Offset::Offset);
            assignment
                .add_partition_offset(&self.topic, p, offset)
                .map_err(kafka_error(format!(
                    "assigning {} partition {p}",
                    self.topic
                )))?;
        }
        consumer.assign(&assignment).map_err(kafka_error(format!(
            "assigning partitions of {}",
            self.topic
        )))?;
        let consumer = Arc::new(consumer);
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (polled, stop) =
            spawn_poller(consumer.clone(), &self.table, self.decoder.reads_headers())?;
        self.consumer = consumer;
        self.polled = polled;
        self.stop = stop;
        Ok(())
    }

    fn index_of(&self, partition: i32) -> Option<usize> {
        self.partitions.iter().position(|&p| p == partition)
    }

    /// In bounded mode: marks partitions whose position reached their end offset.
    fn check_positions(&mut self) -> Result<()> {
        let Some(ends) = &self.end_offsets else {
            return Ok(());
        };
        let positions = self
            .consumer
            .position()
            .map_err(kafka_error(format!("reading positions on {}", self.topic)))?;
        for element in positions.elements() {
            let Some(i) = self.index_of(element.partition()) else {
                continue;
            };
            if let Offset::Offset(position) = element.offset() {
                if !self.finished[i] && position >= ends[i] {
                    self.finished[i] = true;
                    self.ready.push_back(SourceEvent::PartitionFinished(i));
                }
            }
        }
        Ok(())
    }

    /// Waits for at least one message, then takes whatever else is ready (up to a limit),
    /// and decodes it into one batch per partition.
    /// Marks partitions idle that had no rows for the idle timeout, the longest-quiet
    /// first: a partition that went quiet earlier became idle earlier, so the watermark of
    /// one that went quiet later still counts until its own turn.
    fn check_idle(&mut self) {
        let Some(timeout) = self.idle_timeout else {
            return;
        };
        let now = Instant::now();
        let mut newly_idle: Vec<usize> = (0..self.partitions.len())
            .filter(|&i| !self.idle[i] && !self.finished[i])
            .filter(|&i| now.duration_since(self.last_rows[i]) >= timeout)
            .collect();
        newly_idle.sort_by_key(|&i| self.last_rows[i]);
        for i in newly_idle {
            self.idle[i] = true;
            tracing::debug!(topic = %self.topic, partition = self.partitions[i], "partition idle");
            self.ready.push_back(SourceEvent::PartitionIdle(i));
        }
    }

    async fn poll(&mut self) -> Result<()> {
        self.check_idle();
        self.replace_if_stalled().await?;
        let messages = match tokio::time::timeout(IDLE_CHECK, self.polled.recv()).await {
            Err(_) => return self.check_positions(),
            Ok(None) => {
                return Err(ConnectorError::Other(format!(
                    "the consumer of {} stopped polling",
                    self.topic
                )))
            }
            Ok(Some(Err(e))) => {
                // librdkafka reconnects by itself (with backoff); the error is reported.
                tracing::warn!(topic = %self.topic, error = %e, "kafka consumer error; retrying");
                return Ok(());
            }
            Ok(Some(Ok(messages))) => messages,
        };
        tracing::trace!(topic = %self.topic, messages = messages.len(), "polled");
        let now = Instant::now();
        self.last_progress = now;
        let mut per_partition: BTreeMap<usize, PartitionRecords<'_>> = BTreeMap::new();
        let mut reached_end = Vec::new();
        for record in 0..messages.len() {
            let (partition, offset) = (messages.partitions[record], messages.offsets[record]);
            let Some(i) = self.index_of(partition) else {
                continue;
            };
            let next = &mut self.next_offsets[i];
            *next = Some(next.unwrap_or(0).max(offset + 1));
            self.last_rows[i] = now;
            self.idle[i] = false;
            if let Some(ends) = &self.end_offsets {
                if self.finished[i] || offset >= ends[i] {
                    continue; // past the bounded range
                }
                if offset + 1 >= ends[i] {
                    reached_end.push(i);
                }
            }
            // A tombstone (no payload) deletes a key: a row of an upsert table, nothing
            // of a plain one.
            if messages.payload(record).is_none() && !self.decoder.keeps_tombstones() {
                continue;
            }
            let headers = self.decoder.reads_headers();
            per_partition
                .entry(i)
                .or_default()
                .push(&messages, record, headers);
        }
        for (i, records) in per_partition {
            let decoded = self
                .decoder
                .decode(&self.topic, self.partitions[i], &records)?;
            JobMetrics::add(&self.metrics.bad_records, decoded.skipped);
            let dead_letters = match decoded.rejected.is_empty() {
                true => None,
                false => {
                    let values: Vec<&[u8]> = records
                        .payloads
                        .iter()
                        .map(|v| v.unwrap_or_default())
                        .collect();
                    let partition = self.partitions[i];
                    decoded.dead_letters(&self.table, &values, |k| {
                        (
                            Some(&self.topic),
                            Some(partition),
                            records.offsets.get(k).copied(),
                        )
                    })?
                }
            };
            self.ready.push_back(SourceEvent::Batch(SourceBatch {
                partition: i,
                batch: decoded.batch,
                next_offset: records.offsets.last().map(|o| o + 1),
                dead_letters,
            }));
        }
        if self.commit_as_read {
            // At-most-once: the group's offsets move past what was read before any of it
            // is processed; a crash now loses these rows, a restart never repeats them.
            let mut next: BTreeMap<i32, i64> = BTreeMap::new();
            for (&partition, &offset) in messages.partitions.iter().zip(&messages.offsets) {
                let slot = next.entry(partition).or_default();
                *slot = (*slot).max(offset + 1);
            }
            let mut read = TopicPartitionList::new();
            for (partition, offset) in next {
                read.add_partition_offset(&self.topic, partition, Offset::Offset(offset))
                    .map_err(kafka_error(format!("committing offsets of {}", self.topic)))?;
            }
            let consumer = self.consumer.clone();
            tokio::task::spawn_blocking(move || {
                consumer.commit(&read, rdkafka::consumer::CommitMode::Sync)
            })
            .await
            .map_err(|e| ConnectorError::Other(format!("kafka commit task failed: {e}")))?
            .map_err(kafka_error(format!("committing offsets of {}", self.topic)))?;
        }
        for i in reached_end {
            if !self.finished[i] {
                self.finished[i] = true;
                self.ready.push_back(SourceEvent::PartitionFinished(i));
            }
        }
        Ok(())
    }
}

/// Fetches `consumer`'s records on its own thread (librdkafka's calls block), handing
/// each batch — up to [`MAX_POLL_RECORDS`] — or an error to the source through a small
/// channel, so reading pauses when the job is busy.
#[allow(clippy::type_complexity)]
fn spawn_poller(
    consumer: Arc<BaseConsumer>,
    table: &str,
    headers: bool,
) -> Result<(
    tokio::sync::mpsc::Receiver<std::result::Result<PolledRecords, String>>,
    Arc<std::sync::atomic::AtomicBool>,
)> {
    use std::sync::atomic::Ordering;
    let mut fetcher = BatchFetcher::new(consumer, MAX_POLL_RECORDS, headers).ok_or_else(|| {
        ConnectorError::Other(format!(
            "the kafka consumer of {table} has no message queue"
        ))
    })?;
    let (sender, receiver) = tokio::sync::mpsc::channel(2);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::Builder::new()
        .name(format!("runnel-kafka-{table}"))
        .spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let mut records = PolledRecords::default();
                let error = fetcher.fetch(Duration::from_millis(100), &mut records);
                if !records.is_empty() && sender.blocking_send(Ok(records)).is_err() {
                    break;
                }
                if let Some(e) = error {
                    if sender.blocking_send(Err(e)).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        })
        .map_err(|e| ConnectorError::Other(format!("cannot start the kafka poller: {e}")))?;
    Ok((receiver, stop))
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[async_trait]
impl Source for KafkaSource {
    fn partitions(&self) -> usize {
        self.partitions.len()
    }

    async fn next_event(&mut self) -> runnel_runtime::Result<Option<SourceEvent>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(Some(event));
            }
            // Bounded and done, or a parallel reader left without partitions.
            let nothing_to_read = self.end_offsets.is_some() || !self.owned.contains(&true);
            if nothing_to_read && self.finished.iter().all(|&f| f) {
                return Ok(None);
            }
            self.poll().await.map_err(|e| e.at("source", &self.table))?;
        }
    }
}
