//! The Kafka topics of a job spread over processes: the source topics' partition counts,
//! the internal topics Runnel creates (repartition, changelog, status), reading a
//! changelog partition back, following the status topic, and deleting the repartition
//! records the job has committed past.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::error::{ClusterError, Result};
use crate::topology::{ClusterTopology, StageInput};
use crate::wire::{LatestRecords, STATE_PART_BYTES};

/// How long a metadata or offsets request may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest record an internal topic takes: a batch of rows, or one operator's state.
pub const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;

/// How many partitions `topic` has (0 when it does not exist).
pub fn partition_count(config: &ClientConfig, topic: &str) -> Result<usize> {
    let consumer: BaseConsumer = config
        .create()
        .map_err(ClusterError::kafka("creating a metadata client"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(ClusterError::kafka(format!(
            "reading metadata of topic {topic}"
        )))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .sum())
}

/// The internal topics of `topology`: each name, its partitions, and whether it is
/// compacted.
fn internal_topics(topology: &ClusterTopology<'_>) -> Vec<(String, usize, bool)> {
    let mut topics = Vec::new();
    for stage in &topology.stages {
        if let StageInput::Repartition { .. } = stage.input {
            topics.push((topology.repartition_topic(stage.id), stage.tasks, false));
        }
        topics.push((topology.changelog_topic(stage.id), stage.tasks, true));
    }
    topics.push((topology.status_topic(), 1, true));
    topics
}

/// Creates the internal topics that do not exist yet; refuses to go on when one exists
/// with another partition count (the job's `pipeline.max-parallelism` changed, or its
/// source topics gained partitions: its keyed state would no longer be where its keys go).
pub async fn create_internal_topics(
    config: &ClientConfig,
    topology: &ClusterTopology<'_>,
) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = config
        .create()
        .map_err(ClusterError::kafka("creating an admin client"))?;
    let topics = internal_topics(topology);
    let max_bytes = MAX_RECORD_BYTES.to_string();
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions, compacted)| {
            let topic = NewTopic::new(name, *partitions as i32, TopicReplication::Fixed(1))
                .set("max.message.bytes", &max_bytes);
            if *compacted {
                topic
                    .set("cleanup.policy", "compact")
                    .set("segment.ms", "600000")
                    .set("min.cleanable.dirty.ratio", "0.1")
            } else {
                topic
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
    let results = admin
        .create_topics(&new, &options)
        .await
        .map_err(ClusterError::kafka("creating the job's internal topics"))?;
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = %name, "created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(ClusterError::Kafka {
                    context: format!("creating topic {name}"),
                    source: KafkaError::AdminOp(code),
                })
            }
        }
    }
    let config = config.clone();
    tokio::task::spawn_blocking(move || {
        // A topic just created may take a moment to show in the metadata.
        let deadline = Instant::now() + METADATA_TIMEOUT;
        for (name, partitions, _) in topics {
            loop {
                let found = partition_count(&config, &name)?;
                if found == partitions {
                    break;
                }
                if found != 0 {
                    return Err(ClusterError::Setting(format!(
                        "topic {name} has {found} partitions, but this job needs {partitions}: \
                         'pipeline.max-parallelism' (or a source topic's partitions) changed \
                         since the job first ran, and its keyed state cannot move to other \
                         partitions; run it under a new 'pipeline.name' (or delete the job's \
                         internal topics to start it afresh)"
                    )));
                }
                if Instant::now() > deadline {
                    return Err(ClusterError::Setting(format!(
                        "topic {name} was created but does not show in the metadata"
                    )));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| ClusterError::Setting(format!("checking the internal topics: {e}")))?
}

/// The (low, high) offsets of partition `partition` of `topic`.
pub fn offsets(config: &ClientConfig, topic: &str, partition: i32) -> Result<(i64, i64)> {
    let consumer: BaseConsumer = config
        .create()
        .map_err(ClusterError::kafka("creating an offsets client"))?;
    consumer
        .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
        .map_err(ClusterError::kafka(format!(
            "reading the offsets of {topic} partition {partition}"
        )))
}

/// The offset `consumer`'s group committed for partition `partition` of `topic`, if any.
pub fn committed_offset<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Result<Option<i64>> {
    let mut query = TopicPartitionList::new();
    query.add_partition(topic, partition);
    let committed = consumer
        .committed_offsets(query, METADATA_TIMEOUT)
        .map_err(ClusterError::kafka(format!(
            "reading the committed offset of {topic} partition {partition}"
        )))?;
    Ok(committed.elements().first().and_then(|e| match e.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }))
}

/// The context of a partition reader: reaching a partition's end is what it waits for,
/// not an error to log (librdkafka also reports it as a client error).
pub struct PartitionReaderContext;

impl rdkafka::ClientContext for PartitionReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::PartitionEOF(_)) {
            tracing::warn!(%error, reason, "kafka client error");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for PartitionReaderContext {}

/// A reader of one partition outside any group.
pub type PartitionReader = BaseConsumer<PartitionReaderContext>;

/// A consumer of `topic`, committed records only, outside any group (`eof`: it reports
/// reaching a partition's end), reading partition `partition` from its beginning when
/// one is given (else the caller assigns).
fn partition_reader(
    config: &ClientConfig,
    topic: &str,
    partition: Option<i32>,
    eof: bool,
) -> Result<PartitionReader> {
    let consumer: PartitionReader = config
        .clone()
        // librdkafka assigns partitions only to a consumer with a group; this one never
        // joins it.
        .set("group.id", format!("{topic}-reader"))
        .set("enable.partition.eof", eof.to_string())
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create_with_context(PartitionReaderContext)
        .map_err(ClusterError::kafka(format!("creating a reader of {topic}")))?;
    let Some(partition) = partition else {
        return Ok(consumer);
    };
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Beginning)
        .and_then(|()| consumer.assign(&assignment))
        .map_err(ClusterError::kafka(format!(
            "assigning {topic} partition {partition}"
        )))?;
    Ok(consumer)
}

/// How long reading a changelog partition may go without reaching its end.
const CHANGELOG_READ_TIMEOUT: Duration = Duration::from_secs(120);

/// A changelog partition to read: from its start, or from an offset on.
pub struct ChangelogRead<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub from: Option<i64>,
}

/// What was read of a changelog partition.
#[derive(Debug, Default)]
pub struct ChangelogTail {
    /// The latest committed record of each key read (a value of `None`: a tombstone).
    pub records: LatestRecords,
    /// It was read from its start: the offset asked for lay outside the partition (a
    /// changelog made again, since).
    pub from_start: bool,
    /// The offset the read stopped at: every committed record before it was read.
    pub end: i64,
}

/// Reads `partitions`, in their order. One reader reads all partitions of a topic:
/// starting a reader of Kafka takes longer than reading a few megabytes.
pub fn read_changelogs(
    config: &ClientConfig,
    partitions: &[ChangelogRead<'_>],
) -> Result<Vec<ChangelogTail>> {
    let mut tails: Vec<ChangelogTail> = partitions
        .iter()
        .map(|_| ChangelogTail::default())
        .collect();
    let mut by_topic: HashMap<&str, HashMap<i32, (usize, Option<i64>)>> = HashMap::new();
    for (index, read) in partitions.iter().enumerate() {
        by_topic
            .entry(read.topic)
            .or_default()
            .insert(read.partition, (index, read.from));
    }
    for (topic, places) in by_topic {
        read_changelog_partitions(config, topic, &places, &mut tails)?;
    }
    Ok(tails)
}

/// Reads partitions `places` of changelog `topic` (each with its index in `tails` and
/// where to start) into `tails`.
fn read_changelog_partitions(
    config: &ClientConfig,
    topic: &str,
    places: &HashMap<i32, (usize, Option<i64>)>,
    tails: &mut [ChangelogTail],
) -> Result<()> {
    // Fetches big enough for a whole state part each, so that a large state takes a
    // few round trips rather than one per megabyte.
    let mut config = config.clone();
    config
        .set(
            "max.partition.fetch.bytes",
            (4 * STATE_PART_BYTES).to_string(),
        )
        .set("fetch.max.bytes", (8 * STATE_PART_BYTES).to_string());
    let consumer = partition_reader(&config, topic, None, true)?;
    let mut unread = BTreeSet::new();
    let mut assignment = TopicPartitionList::new();
    for (&partition, &(index, from)) in places {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
            .map_err(ClusterError::kafka(format!(
                "reading the offsets of {topic} partition {partition}"
            )))?;
        let tail = &mut tails[index];
        let start = match from {
            Some(from) if (low..=high).contains(&from) => from,
            Some(_) => {
                tail.from_start = true;
                low
            }
            None => low,
        };
        tail.end = start;
        if high > start {
            unread.insert(partition);
            assignment
                .add_partition_offset(topic, partition, Offset::Offset(start))
                .map_err(ClusterError::kafka(format!(
                    "assigning {topic} partition {partition}"
                )))?;
        }
    }
    if unread.is_empty() {
        return Ok(());
    }
    consumer
        .assign(&assignment)
        .map_err(ClusterError::kafka(format!(
            "assigning partitions of {topic}"
        )))?;
    let deadline = Instant::now() + CHANGELOG_READ_TIMEOUT;
    while !unread.is_empty() {
        match consumer.poll(Duration::from_secs(1)) {
            Some(Ok(message)) => {
                let (Some(key), Some(&(index, _))) =
                    (message.key(), places.get(&message.partition()))
                else {
                    continue;
                };
                tails[index].records.insert(
                    String::from_utf8_lossy(key).into_owned(),
                    message.payload().map(<[u8]>::to_vec),
                );
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                unread.remove(&partition);
            }
            Some(Err(e)) => {
                return Err(ClusterError::Kafka {
                    context: format!("reading {topic} partitions {unread:?}"),
                    source: e,
                })
            }
            None if Instant::now() > deadline => {
                return Err(ClusterError::Setting(format!(
                    "reading {topic} partitions {unread:?} did not reach their end within \
                     {CHANGELOG_READ_TIMEOUT:?}"
                )))
            }
            None => {}
        }
    }
    let positions = consumer.position().map_err(ClusterError::kafka(format!(
        "reading where {topic}'s reader stands"
    )))?;
    for element in positions.elements() {
        if let (Offset::Offset(end), Some(&(index, _))) =
            (element.offset(), places.get(&element.partition()))
        {
            tails[index].end = end;
        }
    }
    Ok(())
}

/// Reads the job's status topic: which tasks finished.
pub struct StatusReader {
    consumer: PartitionReader,
    finished: BTreeSet<String>,
}

impl StatusReader {
    pub fn new(client: &ClientConfig, topic: &str) -> Result<Self> {
        let consumer = partition_reader(client, topic, Some(0), false)?;
        Ok(Self {
            consumer,
            finished: BTreeSet::new(),
        })
    }

    /// How many tasks of the job have finished, as far as read so far.
    pub fn read(&mut self) -> Result<usize> {
        while let Some(message) = self.consumer.poll(Duration::ZERO) {
            match message {
                Ok(message) => {
                    if let Some(key) = message.key() {
                        self.finished
                            .insert(String::from_utf8_lossy(key).into_owned());
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading the job's status"),
            }
        }
        Ok(self.finished.len())
    }
}

/// How often a process deletes the repartition records its tasks committed past (Kafka
/// Streams' `repartition.purge.interval.ms`).
pub const PURGE_INTERVAL: Duration = Duration::from_secs(30);

/// Deletes the records of the job's repartition topics below the offsets its tasks
/// committed (Kafka's `DeleteRecords`): once committed, no task reads them again — a task
/// that moves resumes at the committed offset, its state from its changelog — so a
/// repartition topic holds what is in flight, not the job's history.
pub struct RepartitionPurge {
    admin: AdminClient<DefaultClientContext>,
    topics: BTreeSet<String>,
    /// The newest committed offset of each repartition partition not purged up to yet.
    committed: HashMap<(String, i32), i64>,
    last: Instant,
}

impl RepartitionPurge {
    /// A purge of `topics` (the job's repartition topics) through the cluster `config`.
    pub fn new(config: &ClientConfig, topics: impl IntoIterator<Item = String>) -> Result<Self> {
        Ok(Self {
            admin: config
                .create()
                .map_err(ClusterError::kafka("creating an admin client"))?,
            topics: topics.into_iter().collect(),
            committed: HashMap::new(),
            last: Instant::now(),
        })
    }

    /// Notes the offsets of a transaction that committed (those of repartition topics).
    pub fn committed(&mut self, offsets: &TopicPartitionList) {
        for element in offsets.elements() {
            if let (true, Offset::Offset(offset)) =
                (self.topics.contains(element.topic()), element.offset())
            {
                self.committed
                    .insert((element.topic().to_string(), element.partition()), offset);
            }
        }
    }

    /// Deletes the records below the offsets noted, if [`PURGE_INTERVAL`] passed since the
    /// last purge or `now`. Waits for the broker (from the process's thread, outside the
    /// async runtime); a failure is logged and the records stay for the broker's
    /// retention — nothing of the job depends on them being gone.
    pub fn purge(&mut self, now: bool) {
        if self.committed.is_empty() || !(now || self.last.elapsed() >= PURGE_INTERVAL) {
            return;
        }
        self.last = Instant::now();
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in self.committed.drain() {
            if let Err(e) = offsets.add_partition_offset(&topic, partition, Offset::Offset(offset))
            {
                tracing::warn!(topic, partition, error = %e, "not purging a repartition partition");
            }
        }
        let options = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
        let deleted = tokio::runtime::Handle::try_current()
            .map_err(|e| e.to_string())
            .and_then(|runtime| {
                runtime
                    .block_on(self.admin.delete_records(&offsets, &options))
                    .map_err(|e| e.to_string())
            });
        match deleted {
            Ok(results) => {
                let failed: Vec<String> = results
                    .elements()
                    .iter()
                    .filter_map(|e| {
                        e.error()
                            .err()
                            .map(|error| format!("{} [{}]: {error}", e.topic(), e.partition()))
                    })
                    .collect();
                if failed.is_empty() {
                    tracing::debug!(partitions = results.count(), "purged repartition records");
                } else {
                    tracing::warn!(failed = %failed.join("; "), "purging repartition records");
                }
            }
            Err(error) => tracing::warn!(%error, "purging repartition records"),
        }
    }
}
