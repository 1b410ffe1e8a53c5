//! [`ClusterTopology`]: a job graph cut where rows change hands between processes.
//!
//! The job graph (see [`runnel_runtime::graph`]) already says where rows change hands
//! between subtasks: at every hash and single edge. Across processes the same edges
//! become Kafka topics, and every stage that starts behind one — or reads a source
//! table — is a *rooted* stage whose work is cut into **tasks**, one per partition of
//! what it reads:
//! - a source stage has a task per partition of its table's topic;
//! - a stage behind hash edges reads its **repartition topic**, `pipeline.max-parallelism`
//!   partitions, one task each (rows go to the partition of their key's hash, so a key's
//!   state lives in one task); behind single edges the topic has one partition;
//! - a two-input stage reads both sides from its one repartition topic (each record says
//!   its side), so partition `p` of both sides is one task and the group protocol can
//!   assign it whole;
//! - a stage behind a forward edge (a table or view read once for several uses) runs in
//!   the tasks of the stage it forwards from; the sink runs in every task that writes it.
//!
//! Building it needs no Kafka: the source topics' partition counts are given.

use std::fmt;

use runnel_runtime::graph::StageId;
use runnel_runtime::{EdgeKind, JobGraph, StageHead};
use runnel_sql::{SourceNode, StreamNode, TableDef};

use crate::error::{ClusterError, Result};

/// One task: partition `partition` of rooted stage `stage`'s input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    pub stage: StageId,
    pub partition: i32,
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.stage, self.partition)
    }
}

impl std::str::FromStr for TaskId {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let (stage, partition) = text
            .split_once('/')
            .ok_or_else(|| format!("'{text}' is no task id (stage/partition)"))?;
        Ok(TaskId {
            stage: stage.parse().map_err(|_| format!("'{text}': bad stage"))?,
            partition: partition
                .parse()
                .map_err(|_| format!("'{text}': bad partition"))?,
        })
    }
}

/// What a rooted stage's tasks read.
#[derive(Debug)]
pub enum StageInput<'p> {
    /// The table's topic, a task per partition.
    Source { node: &'p SourceNode, topic: String },
    /// The stage's repartition topic, written by the tasks of `writers[input]` (input 1
    /// only for a two-input stage's right side).
    Repartition { writers: [Vec<StageId>; 2] },
}

/// A stage whose work is cut into tasks.
#[derive(Debug)]
pub struct RootedStage<'p> {
    /// Its id in the job graph.
    pub id: StageId,
    pub input: StageInput<'p>,
    /// How many tasks: partitions of what it reads.
    pub tasks: usize,
}

/// A job graph cut into rooted stages, under the job's name.
#[derive(Debug)]
pub struct ClusterTopology<'p> {
    /// `pipeline.name`: names the consumer group and every internal topic.
    pub job: String,
    pub graph: JobGraph<'p>,
    /// The rooted stages, in the graph's order (writers before readers).
    pub stages: Vec<RootedStage<'p>>,
    /// For each graph stage, the rooted stage whose tasks run it (`None`: the sink).
    roots: Vec<Option<StageId>>,
}

/// Where one graph stage's output goes, seen from the task running it.
#[derive(Debug, Clone)]
pub enum StageOutput {
    /// Into the job's sink table.
    Sink,
    /// Into rooted stage `stage`'s repartition topic as its input `input`; hashed by the
    /// edge's keys (`None`: the topic has one partition).
    Repartition {
        stage: StageId,
        input: usize,
        kind: EdgeKind,
    },
    /// Into graph stage `stage`, run in the same task.
    Forward { stage: StageId },
}

/// The Kafka topic names a job's parts live under.
impl ClusterTopology<'_> {
    /// The consumer group every process of the job joins.
    pub fn group(&self) -> String {
        self.job.clone()
    }

    /// The topic carrying rows into rooted stage `stage`.
    pub fn repartition_topic(&self, stage: StageId) -> String {
        format!("{}-stage-{stage}-repartition", self.job)
    }

    /// The compacted topic holding the state of rooted stage `stage`'s tasks, a partition
    /// per task.
    pub fn changelog_topic(&self, stage: StageId) -> String {
        format!("{}-stage-{stage}-changelog", self.job)
    }

    /// The compacted topic where each task says it finished (bounded jobs).
    pub fn status_topic(&self) -> String {
        format!("{}-status", self.job)
    }
}

/// Checks a job name can name a consumer group and topics.
pub fn check_job_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(ClusterError::Setting(format!(
            "'pipeline.name' = '{name}' cannot name Kafka topics: use 1 to 200 letters, \
             digits, '.', '_' or '-'"
        )))
    }
}

impl<'p> ClusterTopology<'p> {
    /// Cuts `graph` into rooted stages; `partitions` says how many partitions a source
    /// table's topic has; stages behind hash edges get `max_parallelism` tasks.
    pub fn new(
        job: &str,
        graph: JobGraph<'p>,
        max_parallelism: usize,
        partitions: &dyn Fn(&TableDef) -> Result<usize>,
    ) -> Result<Self> {
        check_job_name(job)?;
        let mut roots: Vec<Option<StageId>> = vec![None; graph.stages.len()];
        let mut stages = Vec::new();
        for stage in &graph.stages {
            if !stage.checkpointed {
                return Err(ClusterError::Unsupported(
                    "a lookup join reading its table whole (FOR SYSTEM_TIME AS OF a table \
                     that is not looked up by key)"
                        .into(),
                ));
            }
            if stage.processing_time {
                return Err(ClusterError::Unsupported(
                    "processing time (PROCTIME()): each process has its own clock".into(),
                ));
            }
            if let Some(node) = stage
                .chain
                .iter()
                .map(|c| c.node)
                .find(|n| matches!(n, StreamNode::LookupJoin(_)))
            {
                return Err(ClusterError::Unsupported(format!(
                    "{}: lookup joins",
                    node.name()
                )));
            }
            let inputs: Vec<_> = graph.inputs_of(stage.id).collect();
            let rooted = match &stage.head {
                StageHead::Sink => continue,
                StageHead::Source { node, .. } => {
                    let table = &node.table;
                    if !matches!(table.connector(), Some("kafka" | "upsert-kafka")) {
                        return Err(ClusterError::Unsupported(format!(
                            "table {} reads connector '{}'; every source of a job spread over \
                             processes is a Kafka topic",
                            table.name,
                            table.connector().unwrap_or("?")
                        )));
                    }
                    let topic = table.options.get("topic").cloned().ok_or_else(|| {
                        ClusterError::Setting(format!("table {} has no 'topic'", table.name))
                    })?;
                    Some(RootedStage {
                        id: stage.id,
                        input: StageInput::Source { node, topic },
                        tasks: partitions(table)?,
                    })
                }
                StageHead::Exchange if inputs.iter().all(|e| e.kind == EdgeKind::Forward) => {
                    let [edge] = inputs[..] else {
                        return Err(ClusterError::Unsupported(format!(
                            "stage {} forwards from several stages",
                            stage.id
                        )));
                    };
                    roots[stage.id] = roots[edge.from];
                    None
                }
                StageHead::Exchange | StageHead::TwoInput { .. } => {
                    let mut writers: [Vec<StageId>; 2] = [Vec::new(), Vec::new()];
                    let mut hashed = false;
                    for edge in &inputs {
                        match edge.kind {
                            EdgeKind::Hash { .. } => hashed = true,
                            EdgeKind::Single => {}
                            EdgeKind::Broadcast | EdgeKind::Forward => {
                                return Err(ClusterError::Unsupported(format!(
                                    "stage {} mixes a forward or broadcast input with others",
                                    stage.id
                                )))
                            }
                        }
                        let writer = roots[edge.from].ok_or_else(|| {
                            ClusterError::Unsupported(format!(
                                "stage {} reads the sink's stage",
                                stage.id
                            ))
                        })?;
                        let side = &mut writers[edge.input.min(1)];
                        if !side.contains(&writer) {
                            side.push(writer);
                        }
                    }
                    Some(RootedStage {
                        id: stage.id,
                        input: StageInput::Repartition { writers },
                        tasks: if hashed { max_parallelism.max(1) } else { 1 },
                    })
                }
            };
            if let Some(rooted) = rooted {
                roots[stage.id] = Some(rooted.id);
                stages.push(rooted);
            }
        }
        Ok(Self {
            job: job.to_string(),
            graph,
            stages,
            roots,
        })
    }

    /// The rooted stage `id`.
    pub fn stage(&self, id: StageId) -> Option<&RootedStage<'p>> {
        self.stages.iter().find(|s| s.id == id)
    }

    /// How many tasks the job has, over every rooted stage.
    pub fn task_count(&self) -> usize {
        self.stages.iter().map(|s| s.tasks).sum()
    }

    /// Every task of the job.
    pub fn tasks(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.stages.iter().flat_map(|s| {
            (0..s.tasks as i32).map(move |partition| TaskId {
                stage: s.id,
                partition,
            })
        })
    }

    /// Where graph stage `stage`'s rows go.
    pub fn outputs(&self, stage: StageId) -> Vec<StageOutput> {
        self.graph
            .outputs_of(stage)
            .map(|edge| {
                if matches!(self.graph.stages[edge.to].head, StageHead::Sink) {
                    StageOutput::Sink
                } else if edge.kind == EdgeKind::Forward {
                    StageOutput::Forward { stage: edge.to }
                } else {
                    StageOutput::Repartition {
                        stage: edge.to,
                        input: edge.input.min(1),
                        kind: edge.kind.clone(),
                    }
                }
            })
            .collect()
    }

    /// The rooted stage whose tasks run graph stage `stage`.
    pub fn root_of(&self, stage: StageId) -> Option<StageId> {
        self.roots.get(stage).copied().flatten()
    }

    /// The writers of input `input` of rooted stage `stage`: each writing task's place
    /// among them (writers of the first stage first), and how many there are.
    pub fn writer_index(&self, stage: StageId, input: usize, writer: TaskId) -> Option<usize> {
        let StageInput::Repartition { writers } = &self.stage(stage)?.input else {
            return None;
        };
        let mut offset = 0;
        for &w in &writers[input.min(1)] {
            let tasks = self.stage(w)?.tasks;
            if w == writer.stage {
                return ((writer.partition as usize) < tasks)
                    .then_some(offset + writer.partition as usize);
            }
            offset += tasks;
        }
        None
    }

    /// How many tasks write input `input` of rooted stage `stage`.
    pub fn writer_count(&self, stage: StageId, input: usize) -> usize {
        match self.stage(stage).map(|s| &s.input) {
            Some(StageInput::Repartition { writers }) => writers[input.min(1)]
                .iter()
                .filter_map(|&w| self.stage(w))
                .map(|s| s.tasks)
                .sum(),
            _ => 0,
        }
    }

    /// The graph stages a task of rooted stage `root` runs: the root, then those it
    /// forwards to, in graph order.
    pub fn stages_run_by(&self, root: StageId) -> Vec<StageId> {
        (0..self.graph.stages.len())
            .filter(|&s| self.root_of(s) == Some(root))
            .collect()
    }
}

/// What `EXPLAIN` shows of a job spread over processes: its rooted stages, their tasks
/// and the topics between them.
impl fmt::Display for ClusterTopology<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Across processes: consumer group {}, {} tasks",
            self.group(),
            self.task_count()
        )?;
        for stage in &self.stages {
            let reads = match &stage.input {
                StageInput::Source { topic, .. } => format!("topic {topic}"),
                StageInput::Repartition { .. } => self.repartition_topic(stage.id),
            };
            writeln!(
                f,
                "  stage {}: {} tasks reading {reads}; state in {}",
                stage.id,
                stage.tasks,
                self.changelog_topic(stage.id)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use runnel_sql::StreamPlan;

    use super::*;
    use crate::test_plans::plan;

    fn kafka_table(name: &str, connector: &str) -> String {
        format!(
            "CREATE TABLE {name} (policy_id BIGINT, amount BIGINT, ts TIMESTAMP(3),
                WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
             WITH ('connector' = '{connector}', 'topic' = '{name}.topic', 'format' = 'json');"
        )
    }

    fn cut<'p>(plan: &'p StreamPlan, max_parallelism: usize) -> Result<ClusterTopology<'p>> {
        let graph = JobGraph::build(plan, 2, &|_: &TableDef| 1usize).unwrap();
        ClusterTopology::new("claims-job", graph, max_parallelism, &|table| {
            Ok(if table.name == "claims" { 6 } else { 3 })
        })
    }

    #[test]
    fn a_keyed_window_reads_a_repartition_topic_written_by_every_source_task() {
        let plan = plan(&format!(
            "{} SELECT policy_id, window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE claims, \
             DESCRIPTOR(ts), INTERVAL '5' MINUTES)) GROUP BY policy_id, window_start, window_end",
            kafka_table("claims", "kafka")
        ));
        let topology = cut(&plan, 4).unwrap();
        let [source, window] = &topology.stages[..] else {
            panic!("{topology}");
        };
        assert!(
            matches!(source.input, StageInput::Source { ref topic, .. } if topic == "claims.topic")
        );
        assert_eq!((source.tasks, window.tasks), (6, 4));
        assert!(
            matches!(&window.input, StageInput::Repartition { writers } if writers[0] == vec![source.id] && writers[1].is_empty())
        );
        assert_eq!(topology.task_count(), 10);
        assert_eq!(topology.writer_count(window.id, 0), 6);
        let writer = TaskId {
            stage: source.id,
            partition: 5,
        };
        assert_eq!(topology.writer_index(window.id, 0, writer), Some(5));
        assert_eq!(topology.writer_index(window.id, 1, writer), None);
        assert!(matches!(
            topology.outputs(source.id)[..],
            [StageOutput::Repartition {
                kind: EdgeKind::Hash { .. },
                ..
            }]
        ));
        assert!(matches!(
            topology.outputs(window.id)[..],
            [StageOutput::Sink]
        ));
        assert_eq!(
            topology.repartition_topic(window.id),
            format!("claims-job-stage-{}-repartition", window.id)
        );
        let text = topology.to_string();
        assert!(
            text.contains("consumer group claims-job, 10 tasks"),
            "{text}"
        );
    }

    #[test]
    fn a_join_reads_both_sides_from_one_topic_and_a_global_aggregate_has_one_task() {
        let plan = plan(&format!(
            "{} {} SELECT COUNT(*) FROM claims c JOIN policies p ON c.policy_id = p.policy_id \
             AND c.ts BETWEEN p.ts AND p.ts + INTERVAL '1' MINUTE",
            kafka_table("claims", "kafka"),
            kafka_table("policies", "upsert-kafka").replace(
                "WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)",
                "WATERMARK FOR ts AS ts - INTERVAL '1' SECOND, PRIMARY KEY (policy_id) NOT ENFORCED)"
            )
        ));
        let topology = cut(&plan, 8).unwrap();
        let join = topology
            .stages
            .iter()
            .find(|s| matches!(s.input, StageInput::Repartition { ref writers } if !writers[1].is_empty()))
            .unwrap_or_else(|| panic!("no two-sided stage in {topology}"));
        assert_eq!(join.tasks, 8);
        // The left side comes straight from the 6 source tasks; the upsert table's
        // changes are first kept per key, in a keyed stage of 8 tasks.
        assert_eq!(
            (
                topology.writer_count(join.id, 0),
                topology.writer_count(join.id, 1)
            ),
            (6, 8),
            "{topology}"
        );
        let last = topology.stages.last().expect("stages");
        assert_eq!(
            last.tasks, 1,
            "the global COUNT(*) runs in one task: {topology}"
        );
    }

    #[test]
    fn what_cannot_run_across_processes_is_refused_with_the_reason() {
        let file = plan(
            "CREATE TABLE files (a BIGINT) WITH ('connector' = 'filesystem', 'path' = '/x', \
             'format' = 'json'); SELECT a FROM files",
        );
        let error = cut(&file, 4).unwrap_err().to_string();
        assert!(
            error.contains("table files reads connector 'filesystem'"),
            "{error}"
        );

        let clock = plan(&format!(
            "{} SELECT COUNT(*) FROM TABLE(TUMBLE(TABLE claims, DESCRIPTOR(pt), INTERVAL '1' MINUTE)) \
             GROUP BY window_start, window_end",
            kafka_table("claims", "kafka").replace("ts TIMESTAMP(3),", "ts TIMESTAMP(3), pt AS PROCTIME(),")
        ));
        let error = cut(&clock, 4).unwrap_err().to_string();
        assert!(error.contains("processing time"), "{error}");
    }

    #[test]
    fn a_job_name_must_be_able_to_name_topics() {
        assert!(check_job_name("claims-5min.v2_x").is_ok());
        for bad in ["", "claims 5min", "claims/5", &"x".repeat(201)] {
            let error = check_job_name(bad).unwrap_err().to_string();
            assert!(error.contains("cannot name Kafka topics"), "{error}");
        }
    }

    #[test]
    fn task_ids_read_back() {
        let id = TaskId {
            stage: 4,
            partition: 17,
        };
        assert_eq!(id.to_string().parse::<TaskId>(), Ok(id));
        assert!("4-17".parse::<TaskId>().is_err());
    }
}
