//! [`Task`]: one partition of a rooted stage — its operators, where its input stands, and
//! what it writes — run synchronously by the process that owns it.
//!
//! A task is fed the records of its one input partition in offset order and writes
//! through a [`TaskWriter`]: rows for the sink, rows and markers for the repartition
//! topics of the stages it feeds. Its watermarks and its end leave as markers when the
//! process commits ([`Task::flush_markers`]), so a reading task sees them after the rows
//! they cover. Its state (operator snapshots and [`TaskProgress`]) is taken at every
//! commit that follows a change ([`Task::snapshot`]), and a task that moves to another
//! process is rebuilt from it ([`Task::new`] with the restored records).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runnel_connectors::kafka::{KafkaRecordDecoder, PartitionRecords};
use runnel_runtime::{
    Collector, JobMetrics, LateRows, Message, OperatorContext, Side, SourceRows, StageHead,
    TwoInputTask, WatermarkExpr, WatermarkTracker, WATERMARK_END,
};

use crate::changelog::StateChains;
use crate::error::{ClusterError, Result};
use crate::pipeline::{Pipeline, TaskWriter};
use crate::topology::{ClusterTopology, StageInput, TaskId};
use crate::wire::{self, Envelope, RecordKind, TaskProgress};

pub use crate::wire::ChangelogRecord;

/// How a task reads its input partition.
enum TaskInput {
    /// A partition of a source table's topic.
    Source {
        topic: String,
        decoder: Box<KafkaRecordDecoder>,
        rows: SourceRows,
        watermark: Option<WatermarkExpr>,
        idle_timeout: Option<Duration>,
        last_rows: Instant,
        idle: bool,
    },
    /// A partition of the stage's repartition topic: each input's writers' watermarks.
    Repartition {
        topic: String,
        trackers: [WatermarkTracker; 2],
        /// Each writing task's place among the writers of its input, by input.
        writers: HashMap<(usize, TaskId), usize>,
    },
}

/// One partition of a rooted stage, run by the process that owns it.
pub struct Task {
    pub id: TaskId,
    input: TaskInput,
    /// A two-input stage's join, ahead of the stage's chain.
    join: Option<(TwoInputTask, Collector)>,
    pipeline: Pipeline,
    progress: TaskProgress,
    /// Something changed since the last commit: its state is written at the next.
    dirty: bool,
    /// Where each operator's state stands in the changelog.
    chains: StateChains,
    /// It read input since it was made.
    read_input: bool,
    metrics: Arc<JobMetrics>,
}

/// What a task is built with besides its id.
pub struct TaskSetup<'a> {
    pub topology: &'a ClusterTopology<'a>,
    pub context: OperatorContext,
    pub late: LateRows,
    /// The latest changelog record of each key of the task's partition.
    pub restored: HashMap<String, Option<Vec<u8>>>,
    /// A bounded source task's end offset, when it starts for the first time.
    pub end_offset: Option<i64>,
}

impl Task {
    /// The task `id`, restored from its changelog records.
    pub fn new(id: TaskId, setup: TaskSetup<'_>) -> Result<Self> {
        let TaskSetup {
            topology,
            context,
            late,
            restored,
            end_offset,
        } = setup;
        let stage = topology
            .stage(id.stage)
            .ok_or_else(|| ClusterError::Unsupported(format!("task {id}: no such stage")))?;
        let (restored, state_parts) = wire::join_parts(restored).map_err(|e| {
            ClusterError::Setting(format!("task {id}: its changelog cannot be read: {e}"))
        })?;
        let mut progress = TaskProgress::restored(&restored).map_err(|e| {
            ClusterError::Setting(format!(
                "task {id}: its changelog's progress record cannot be read ({e}): another \
                 job of the same name, or another Runnel"
            ))
        })?;
        if progress.end_offset.is_none() {
            progress.end_offset = end_offset;
        }
        let (chains, states) = StateChains::restore(&restored, state_parts, wire::STATE_PART_BYTES)
            .map_err(|e| {
                ClusterError::Setting(format!("task {id}: its state cannot be read: {e}"))
            })?;
        let input = match &stage.input {
            StageInput::Source { node, topic } => {
                let table = &node.table;
                let idle_timeout = table
                    .options
                    .get("scan.watermark.idle-timeout")
                    .and_then(|t| runnel_connectors::options::parse_duration(t))
                    .or(context.config.source_idle_timeout);
                TaskInput::Source {
                    topic: topic.clone(),
                    decoder: Box::new(KafkaRecordDecoder::new(table)?),
                    rows: SourceRows::new(node)?,
                    watermark: table
                        .watermark
                        .as_ref()
                        .map(|w| WatermarkExpr::new(w, table))
                        .transpose()?,
                    idle_timeout,
                    last_rows: Instant::now(),
                    idle: false,
                }
            }
            StageInput::Repartition { .. } => {
                let mut trackers = [0, 1]
                    .map(|input| WatermarkTracker::new(topology.writer_count(id.stage, input)));
                for (input, tracker) in trackers.iter_mut().enumerate() {
                    let count = topology.writer_count(id.stage, input);
                    progress.writer_watermarks[input].resize(count, None);
                    progress.writer_ended[input].resize(count, false);
                    for (writer, w) in progress.writer_watermarks[input].iter().enumerate() {
                        if let Some(w) = w {
                            tracker.update(writer, *w);
                        }
                    }
                    for (writer, ended) in progress.writer_ended[input].iter().enumerate() {
                        if *ended {
                            tracker.finish_partition(writer);
                        }
                    }
                }
                let mut writers = HashMap::new();
                for input in 0..2 {
                    for writer in topology.tasks() {
                        if let Some(index) = topology.writer_index(id.stage, input, writer) {
                            writers.insert((input, writer), index);
                        }
                    }
                }
                TaskInput::Repartition {
                    topic: topology.repartition_topic(id.stage),
                    trackers,
                    writers,
                }
            }
        };
        let join = match &topology.graph.stages[id.stage].head {
            StageHead::TwoInput { node, first_id } => {
                let operator = runnel_runtime::two_input_operator(node, &context)?;
                let key = wire::state_key(id.stage, "head");
                let task = TwoInputTask::new(operator, *first_id, states.get(&key).cloned())?;
                Some((task, Collector::new(late.clone())))
            }
            _ => None,
        };
        let metrics = context.metrics.clone();
        let mut pipeline = Pipeline::build(topology, id.stage, &context, &states, &late)?;
        pipeline.track_increments();
        let join = join.map(|(mut task, collector)| {
            task.track_increments();
            (task, collector)
        });
        Ok(Self {
            id,
            input,
            join,
            pipeline,
            progress,
            dirty: false,
            chains,
            read_input: false,
            metrics,
        })
    }

    /// Whether the task read its whole input and wrote its end.
    pub fn finished(&self) -> bool {
        self.progress.finished
    }

    /// The next offset of its input partition: where its state stands.
    pub fn next_offset(&self) -> Option<i64> {
        self.progress.next_offset
    }

    /// Whether it read input since it was made (restored or new).
    pub fn read_input(&self) -> bool {
        self.read_input
    }

    /// A bounded source task's end offset.
    pub fn end_offset(&self) -> Option<i64> {
        self.progress.end_offset
    }

    /// About how many bytes of state its operators hold.
    pub fn state_size(&mut self) -> usize {
        let join = match &mut self.join {
            Some((join, _)) => join.state_size(),
            None => 0,
        };
        join + self.pipeline.state_size()
    }

    /// Handles one poll's records of the task's partition, in offset order.
    pub fn process(
        &mut self,
        records: &PartitionRecords<'_>,
        writer: &mut dyn TaskWriter,
    ) -> Result<()> {
        let Some(&last) = records.offsets.last() else {
            return Ok(());
        };
        self.progress.next_offset = Some(last + 1);
        self.dirty = true;
        self.read_input = true;
        if self.progress.finished {
            return Ok(());
        }
        match &self.input {
            TaskInput::Source { .. } => self.process_source(records, writer),
            TaskInput::Repartition { .. } => self.process_repartition(records, writer),
        }
    }

    fn process_source(
        &mut self,
        records: &PartitionRecords<'_>,
        writer: &mut dyn TaskWriter,
    ) -> Result<()> {
        let TaskInput::Source {
            topic,
            decoder,
            rows,
            watermark,
            last_rows,
            idle,
            ..
        } = &mut self.input
        else {
            return Ok(());
        };
        // Past a bounded read's end offset nothing counts.
        let end = self.progress.end_offset.unwrap_or(i64::MAX);
        let take = records.offsets.partition_point(|&o| o < end);
        let reached_end = records.offsets.last().is_some_and(|&o| o + 1 >= end);
        let kept = PartitionRecords {
            offsets: records.offsets[..take].to_vec(),
            timestamps: records.timestamps[..take].to_vec(),
            payloads: records.payloads[..take].to_vec(),
            keys: records.keys[..take].to_vec(),
            headers: records.headers[..take.min(records.headers.len())].to_vec(),
        };
        *last_rows = Instant::now();
        let was_idle = std::mem::replace(idle, false);
        if !kept.offsets.is_empty() {
            let decoded = decoder.decode(topic, self.id.partition, &kept)?;
            if let Some((k, reason)) = decoded.rejected.first() {
                return Err(ClusterError::Record {
                    topic: topic.to_string(),
                    partition: self.id.partition,
                    offset: kept.offsets.get(*k).copied().unwrap_or(-1),
                    message: format!(
                        "cannot be decoded ({reason}), and a job spread over processes \
                         cannot write dead letters yet"
                    ),
                });
            }
            JobMetrics::add(&self.metrics.bad_records, decoded.skipped);
            JobMetrics::add(&self.metrics.rows_in, decoded.batch.num_rows());
            let full = rows
                .full(decoded.batch, runnel_runtime::processing_time::system_now())
                .map_err(runnel_runtime::RuntimeError::from)?;
            let candidate = match watermark {
                Some(expr) => expr
                    .candidate(&full)
                    .map_err(runnel_runtime::RuntimeError::from)?,
                None => None,
            };
            let projected = rows
                .project(full)
                .map_err(runnel_runtime::RuntimeError::from)?;
            self.pipeline
                .push(Message::Batch(projected), self.id, writer)?;
            let current = self.progress.source_watermark;
            if let Some(candidate) = candidate.filter(|c| current.is_none_or(|w| *c > w)) {
                self.progress.source_watermark = Some(candidate);
                self.pipeline
                    .push(Message::Watermark(candidate), self.id, writer)?;
            } else if let (true, Some(w)) = (was_idle, current) {
                // Back from idle: the readers count this partition again.
                self.pipeline.push(Message::Watermark(w), self.id, writer)?;
            }
        }
        if reached_end {
            self.finish(writer)?;
        }
        Ok(())
    }

    /// Ends a source task: every window closes, the end goes downstream.
    pub fn finish(&mut self, writer: &mut dyn TaskWriter) -> Result<()> {
        if self.progress.finished {
            return Ok(());
        }
        self.dirty = true;
        self.pipeline
            .push(Message::Watermark(WATERMARK_END), self.id, writer)?;
        self.pipeline.push(Message::End, self.id, writer)?;
        self.progress.finished = true;
        Ok(())
    }

    fn process_repartition(
        &mut self,
        records: &PartitionRecords<'_>,
        writer: &mut dyn TaskWriter,
    ) -> Result<()> {
        let topic = match &self.input {
            TaskInput::Repartition { topic, .. } => topic.clone(),
            TaskInput::Source { .. } => return Ok(()),
        };
        let partition = self.id.partition;
        for k in 0..records.offsets.len() {
            let offset = records.offsets[k];
            let bad = |message: String| ClusterError::Record {
                topic: topic.clone(),
                partition,
                offset,
                message,
            };
            let headers = records.headers.get(k).map(Vec::as_slice).unwrap_or(&[]);
            let envelope = Envelope::read(headers).map_err(bad)?;
            let input = envelope.input.min(1);
            let TaskInput::Repartition {
                trackers, writers, ..
            } = &mut self.input
            else {
                return Ok(());
            };
            let index = writers
                .get(&(input, envelope.writer))
                .copied()
                .ok_or_else(|| {
                    bad(format!(
                        "written by task {} of a stage that does not write here: another job \
                     of the same name",
                        envelope.writer
                    ))
                })?;
            let tracker = &mut trackers[input];
            let mut messages = Vec::new();
            match envelope.kind {
                RecordKind::Rows => {
                    let bytes = records.payloads[k].unwrap_or_default();
                    messages.push(Message::Batch(wire::decode_batch(bytes).map_err(bad)?));
                }
                RecordKind::Watermark(w) => {
                    messages.extend(tracker.update(index, w).map(Message::Watermark));
                }
                RecordKind::Idle => {
                    messages.extend(tracker.mark_idle(index).map(Message::Watermark));
                    if tracker.all_idle() {
                        messages.push(Message::Idle);
                    }
                }
                RecordKind::End => {
                    self.progress.writer_ended[input][index] = true;
                    messages.extend(tracker.finish_partition(index).map(Message::Watermark));
                    if self.progress.writer_ended[input].iter().all(|&e| e) {
                        messages.push(Message::End);
                    }
                }
            }
            self.progress.writer_watermarks[input] = tracker.partition_watermarks();
            for message in messages {
                self.deliver(input, message, writer)?;
            }
            if self.progress.finished {
                break;
            }
        }
        Ok(())
    }

    /// Hands a message of input `input` to the stage's head.
    fn deliver(
        &mut self,
        input: usize,
        message: Message,
        writer: &mut dyn TaskWriter,
    ) -> Result<()> {
        let Some((join, collector)) = &mut self.join else {
            let end = matches!(message, Message::End);
            self.pipeline.push(message, self.id, writer)?;
            if end {
                self.progress.finished = true;
            }
            return Ok(());
        };
        let side = if input == 0 { Side::Left } else { Side::Right };
        let mut messages = Vec::new();
        join.handle(side, message, collector, &mut messages)?;
        for message in messages {
            let end = matches!(message, Message::End);
            self.pipeline.push(message, self.id, writer)?;
            if end {
                self.progress.finished = true;
            }
        }
        Ok(())
    }

    /// A source partition without rows for its idle timeout stops holding the readers'
    /// watermark back until its next rows.
    pub fn check_idle(&mut self, writer: &mut dyn TaskWriter) -> Result<()> {
        let TaskInput::Source {
            idle_timeout: Some(timeout),
            last_rows,
            idle,
            ..
        } = &mut self.input
        else {
            return Ok(());
        };
        if *idle || self.progress.finished || last_rows.elapsed() < *timeout {
            return Ok(());
        }
        *idle = true;
        self.pipeline.push(Message::Idle, self.id, writer)
    }

    /// Sends the task's watermarks and idleness downstream.
    pub fn flush_markers(&mut self, writer: &mut dyn TaskWriter) -> Result<()> {
        self.pipeline.flush_markers(self.id, writer)
    }

    /// The task's changelog records when something changed since the last call: its
    /// progress, and each operator's state as the next link of its chain (see
    /// [`StateChains`]).
    pub fn snapshot(&mut self) -> Result<Option<Vec<ChangelogRecord>>> {
        if !std::mem::replace(&mut self.dirty, false) {
            return Ok(None);
        }
        let progress = serde_json::to_vec(&self.progress)
            .map_err(|e| ClusterError::Setting(format!("task {}: {e}", self.id)))?;
        let mut records = vec![(wire::PROGRESS_KEY.to_string(), Some(progress))];
        if let Some((join, _)) = &mut self.join {
            let key = wire::state_key(self.id.stage, "head");
            let increment = join.increment()?.map(|i| (i.build)()).transpose()?;
            self.chains
                .write(&key, increment, || Ok(join.snapshot()?), &mut records)?;
        }
        self.pipeline.write_states(&mut self.chains, &mut records)?;
        Ok(Some(records))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, RecordBatch};
    use datafusion::arrow::datatypes::Int64Type;
    use runnel_runtime::graph::StageId;
    use runnel_runtime::{JobConfig, JobGraph, ProcessingTime};
    use runnel_sql::StreamPlan;

    use super::*;

    /// The claims count per policy over 1-minute windows, from a 2-partition topic into
    /// one keyed task.
    fn claims_plan() -> StreamPlan {
        crate::test_plans::plan(
            "CREATE TABLE claims (policy_id BIGINT, ts TIMESTAMP(3),
                WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
            WITH ('connector' = 'kafka', 'topic' = 'claims', 'format' = 'json',
                'properties.bootstrap.servers' = '127.0.0.1:1');
            SELECT policy_id, COUNT(*) AS n FROM TABLE(TUMBLE(TABLE claims, DESCRIPTOR(ts),
                INTERVAL '1' MINUTE)) GROUP BY policy_id, window_start, window_end",
        )
    }

    /// What tasks wrote: sink rows, and repartition records as (partition, envelope, value).
    #[derive(Default)]
    struct Recorded {
        sink: Vec<RecordBatch>,
        repartition: Vec<(i32, Envelope, Option<Vec<u8>>)>,
    }

    impl TaskWriter for Recorded {
        fn sink_rows(&mut self, batch: &RecordBatch) -> Result<()> {
            self.sink.push(batch.clone());
            Ok(())
        }

        fn repartition(
            &mut self,
            _stage: StageId,
            partition: i32,
            envelope: Envelope,
            value: Option<Vec<u8>>,
        ) -> Result<()> {
            self.repartition.push((partition, envelope, value));
            Ok(())
        }
    }

    fn setup<'a>(
        topology: &'a ClusterTopology<'a>,
        restored: HashMap<String, Option<Vec<u8>>>,
    ) -> TaskSetup<'a> {
        TaskSetup {
            topology,
            context: OperatorContext {
                config: JobConfig::default(),
                metrics: Arc::new(JobMetrics::default()),
                clock: ProcessingTime::default(),
                lookup: runnel_runtime::LookupTable::None,
            },
            late: LateRows::default(),
            restored,
            end_offset: None,
        }
    }

    /// A header as the test keeps it: key and value.
    type OwnedHeader = (Vec<u8>, Option<Vec<u8>>);

    /// `envelope`'s headers, owned.
    fn owned_headers(envelope: &Envelope) -> Vec<OwnedHeader> {
        use rdkafka::message::Headers;
        envelope
            .headers()
            .iter()
            .map(|h| (h.key.as_bytes().to_vec(), h.value.map(<[u8]>::to_vec)))
            .collect()
    }

    /// Hands `records` (as a repartition partition holds them) to `task`.
    fn feed(task: &mut Task, records: &[(i32, Envelope, Option<Vec<u8>>)], out: &mut Recorded) {
        let headers: Vec<Vec<OwnedHeader>> = records
            .iter()
            .map(|(_, envelope, _)| owned_headers(envelope))
            .collect();
        let batch = PartitionRecords {
            offsets: (0..records.len() as i64).collect(),
            timestamps: vec![None; records.len()],
            payloads: records.iter().map(|(_, _, v)| v.as_deref()).collect(),
            keys: vec![None; records.len()],
            headers: headers
                .iter()
                .map(|h| {
                    h.iter()
                        .map(|(k, v)| (k.as_slice(), v.as_deref()))
                        .collect()
                })
                .collect(),
        };
        task.process(&batch, out).unwrap();
    }

    /// JSON claims of `policy` at `seconds` into the day, as a source partition holds them.
    fn claims(events: &[(i64, u32)]) -> Vec<Vec<u8>> {
        events
            .iter()
            .map(|(policy, s)| {
                format!(
                    r#"{{"policy_id": {policy}, "ts": "2026-01-01 00:{:02}:{:02}.000"}}"#,
                    s / 60,
                    s % 60
                )
                .into_bytes()
            })
            .collect()
    }

    fn source_records(values: &[Vec<u8>]) -> PartitionRecords<'_> {
        PartitionRecords {
            offsets: (0..values.len() as i64).collect(),
            timestamps: vec![None; values.len()],
            payloads: values.iter().map(|v| Some(v.as_slice())).collect(),
            keys: vec![None; values.len()],
            headers: Vec::new(),
        }
    }

    fn counts(batches: &[RecordBatch]) -> Vec<(i64, i64)> {
        let mut rows: Vec<(i64, i64)> = batches
            .iter()
            .flat_map(|b| {
                let policy = b.column(0).as_primitive::<Int64Type>().clone();
                let n = b.column(1).as_primitive::<Int64Type>().clone();
                (0..b.num_rows())
                    .map(move |i| (policy.value(i), n.value(i)))
                    .collect::<Vec<_>>()
            })
            .collect();
        rows.sort_unstable();
        rows
    }

    #[test]
    fn a_keyed_task_waits_for_every_writer_s_watermark_and_resumes_from_its_snapshot() {
        let plan = claims_plan();
        let graph = JobGraph::build(&plan, 2, &|_: &runnel_sql::TableDef| 1usize).unwrap();
        let topology = ClusterTopology::new("t", graph, 1, &|_| Ok(2)).unwrap();
        let (source, window) = (topology.stages[0].id, topology.stages[1].id);
        let task = |stage, partition| TaskId { stage, partition };

        // Two source partitions: the first reaches minute 2, the second stays in minute 0.
        let mut out = Recorded::default();
        let mut first = Task::new(task(source, 0), setup(&topology, HashMap::new())).unwrap();
        let mut second = Task::new(task(source, 1), setup(&topology, HashMap::new())).unwrap();
        let early = claims(&[(1, 5), (2, 10), (1, 70), (1, 130)]);
        first.process(&source_records(&early), &mut out).unwrap();
        let late = claims(&[(1, 20), (2, 30)]);
        second.process(&source_records(&late), &mut out).unwrap();
        first.flush_markers(&mut out).unwrap();
        second.flush_markers(&mut out).unwrap();
        let written = std::mem::take(&mut out.repartition);
        assert!(written.iter().all(|(p, _, _)| *p == 0), "one keyed task");
        let markers = written
            .iter()
            .filter(|(_, e, _)| matches!(e.kind, RecordKind::Watermark(_)))
            .count();
        assert_eq!(markers, 2, "one watermark per writer");

        // Minute 0 closes only once the slower writer's watermark (00:00:29) passes it:
        // not yet — nothing is emitted.
        let mut keyed = Task::new(task(window, 0), setup(&topology, HashMap::new())).unwrap();
        feed(&mut keyed, &written, &mut out);
        assert!(out.sink.is_empty());

        // The task moves: its snapshot restores a task that goes on where it was. (Its
        // state is written in 64-byte parts here, as a state over 8 MB is.)
        keyed.chains = StateChains::new(64);
        let snapshot: HashMap<String, Option<Vec<u8>>> = keyed
            .snapshot()
            .unwrap()
            .expect("changed")
            .into_iter()
            .collect();
        assert!(
            snapshot.keys().any(|key| key.contains("#part")),
            "{:?}",
            snapshot.keys()
        );
        assert!(keyed.snapshot().unwrap().is_none(), "nothing changed since");
        let mut moved = Task::new(task(window, 0), setup(&topology, snapshot)).unwrap();

        // The second partition moves to minute 1: minute 0 closes.
        let more = claims(&[(2, 65)]);
        second.process(&source_records(&more), &mut out).unwrap();
        second.flush_markers(&mut out).unwrap();
        let written = std::mem::take(&mut out.repartition);
        feed(&mut moved, &written, &mut out);
        assert_eq!(counts(&out.sink), vec![(1, 2), (2, 2)]);

        // Both end: every window closes, and the task is finished.
        out.sink.clear();
        first.finish(&mut out).unwrap();
        second.finish(&mut out).unwrap();
        let written = std::mem::take(&mut out.repartition);
        feed(&mut moved, &written, &mut out);
        assert_eq!(counts(&out.sink), vec![(1, 1), (1, 1), (2, 1)]);
        assert!(moved.finished());
    }

    #[test]
    fn a_keyed_task_writes_what_changed_after_its_base_and_its_chain_restores_it() {
        let plan = claims_plan();
        let graph = JobGraph::build(&plan, 2, &|_: &runnel_sql::TableDef| 1usize).unwrap();
        let topology = ClusterTopology::new("t", graph, 1, &|_| Ok(2)).unwrap();
        let (source, window) = (topology.stages[0].id, topology.stages[1].id);
        let task = |stage, partition| TaskId { stage, partition };
        let mut out = Recorded::default();
        let mut first = Task::new(task(source, 0), setup(&topology, HashMap::new())).unwrap();
        let mut second = Task::new(task(source, 1), setup(&topology, HashMap::new())).unwrap();
        second.finish(&mut out).unwrap();
        let mut keyed = Task::new(task(window, 0), setup(&topology, HashMap::new())).unwrap();
        let mut changelog = HashMap::new();

        // 300 policies, then two commits that change a few of them.
        let rounds: [Vec<(i64, u32)>; 3] = [
            (1..=300).map(|policy| (policy, 5)).collect(),
            vec![(1, 10), (2, 11)],
            vec![(3, 12)],
        ];
        let mut written_per_round = Vec::new();
        for events in &rounds {
            first
                .process(&source_records(&claims(events)), &mut out)
                .unwrap();
            first.flush_markers(&mut out).unwrap();
            let written = std::mem::take(&mut out.repartition);
            feed(&mut keyed, &written, &mut out);
            let records = keyed.snapshot().unwrap().expect("changed");
            written_per_round.push(
                records
                    .iter()
                    .map(|(_, v)| v.as_ref().map_or(0, Vec::len))
                    .sum::<usize>(),
            );
            changelog.extend(records);
        }
        let increments = changelog.keys().filter(|k| k.contains("/inc/")).count();
        assert_eq!(increments, 2, "{:?}", changelog.keys());
        assert!(
            written_per_round[1] * 5 < written_per_round[0],
            "a commit writes what changed: {written_per_round:?}"
        );

        // Restored from base and increments, the task goes on as the first would have.
        let mut moved = Task::new(task(window, 0), setup(&topology, changelog)).unwrap();
        first.finish(&mut out).unwrap();
        let written = std::mem::take(&mut out.repartition);
        assert!(out.sink.is_empty());
        feed(&mut moved, &written, &mut out);
        let mut expected: Vec<(i64, i64)> = (1..=300).map(|p| (p, 1)).collect();
        for entry in expected.iter_mut().take(3) {
            entry.1 = 2;
        }
        assert_eq!(counts(&out.sink), expected);
    }

    #[test]
    fn a_record_from_an_unknown_writer_is_an_error_naming_its_place() {
        let plan = claims_plan();
        let graph = JobGraph::build(&plan, 2, &|_: &runnel_sql::TableDef| 1usize).unwrap();
        let topology = ClusterTopology::new("t", graph, 1, &|_| Ok(2)).unwrap();
        let window = topology.stages[1].id;
        let mut keyed = Task::new(
            TaskId {
                stage: window,
                partition: 0,
            },
            setup(&topology, HashMap::new()),
        )
        .unwrap();
        let stranger = Envelope {
            kind: RecordKind::Watermark(5),
            writer: TaskId {
                stage: 0,
                partition: 9,
            },
            input: 0,
        };
        let headers = owned_headers(&stranger);
        let records = PartitionRecords {
            offsets: vec![41],
            timestamps: vec![None],
            payloads: vec![None],
            keys: vec![None],
            headers: vec![headers
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_deref()))
                .collect()],
        };
        let error = keyed
            .process(&records, &mut Recorded::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("t-stage-") && error.contains("offset 41") && error.contains("task 0/9"),
            "{error}"
        );
    }
}
