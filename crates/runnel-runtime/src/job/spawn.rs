//! Starting a job's tasks from its [`JobGraph`]: one task per source reader (which runs
//! its stage's operators too), one per subtask of every other stage, channels along the
//! edges. The sink runs in the task of the one subtask feeding it when there is only one
//! (as Flink chains a sink behind a forward edge), else in a task of its own.
//!
//! Stages are spawned in the graph's order (every stage after those feeding it), so
//! when a stage starts, the channels it reads already exist. Each subtask gets its
//! operators (restored from the checkpoint the job resumes from) and an [`Exchange`]
//! that sends its output along the stage's outgoing edges (one, but several out of a
//! table read or a sub-plan run once for several uses).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use runnel_sql::{SourceNode, StreamNode};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::sink::{SinkTask, SinkWriter};
use super::tasks::{
    run_chain, ChainOutput, ChainedOperators, LaneInput, SourceOutput, TwoInputTask,
};
use super::CHANNEL_CAPACITY;
use crate::chain::{Chained, OperatorChain};
use crate::checkpoint::{CheckpointCoordinator, RestoredCheckpoint};
use crate::config::JobConfig;
use crate::connector::{ConnectorFactory, KeyLookup, SourceSplit};
use crate::error::{Result, RuntimeError};
use crate::exchange::{Exchange, MergedInputs};
use crate::graph::{Edge, EdgeKind, JobGraph, OperatorId, Stage, StageHead, StageId};
use crate::message::Message;
use crate::metrics::JobMetrics;
use crate::operator::OperatorState;
use crate::operators::{one_input_operator, two_input_operator, LookupTable, OperatorContext};
use crate::processing_time::ProcessingTime;
use crate::side_output::{LateRows, RowQueue};
use crate::source::SourceTask;
use crate::watermark_alignment::AlignmentGroup;

/// The channels each subtask of each stage reads, by input (0, or 1 for a join's right
/// side and a lookup join's table).
type Inboxes = Vec<Vec<[Vec<mpsc::Receiver<Message>>; 2]>>;

/// What a subtask of a one-input stage runs after its input.
enum SubtaskBody {
    Operators(ChainedOperators),
    /// Nothing: its input goes to this inbox (stage, subtask, input) of the next stage.
    PassThrough((StageId, usize, usize)),
}

/// Spawns a job's tasks; keeps their handles.
pub(crate) struct TaskSpawner<'a> {
    pub connectors: &'a dyn ConnectorFactory,
    pub config: &'a JobConfig,
    pub metrics: Arc<JobMetrics>,
    pub late: LateRows,
    /// Records sources could not decode, for the job's dead-letter tables.
    pub dead_letters: RowQueue,
    /// Set when the job checkpoints.
    pub checkpoints: Option<Arc<CheckpointCoordinator>>,
    /// The checkpoint the job resumes from, if any.
    pub restored: Option<Arc<RestoredCheckpoint>>,
    /// Tables lookup joins ask by key, by table name and key columns.
    pub lookups: HashMap<(String, Vec<String>), Arc<dyn KeyLookup>>,
    /// Watermark alignment groups, by name: the readers of every table in one keep in
    /// step.
    pub alignment_groups: HashMap<String, Arc<AlignmentGroup>>,
    /// The job's sink, until the task that runs it is spawned.
    pub sink: Option<Box<SinkWriter>>,
    /// The name of the task the sink runs in, once spawned.
    pub sink_task: Option<String>,
    pub tasks: Vec<(String, JoinHandle<Result<()>>)>,
}

impl TaskSpawner<'_> {
    /// Spawns every stage; returns the name of the task the sink runs in. On failure,
    /// what was spawned is stopped again.
    pub async fn spawn(&mut self, graph: &JobGraph<'_>) -> Result<String> {
        let spawned = self.spawn_stages(graph).await;
        if spawned.is_err() {
            for (_, task) in &self.tasks {
                task.abort();
            }
        }
        spawned
    }

    async fn spawn_stages(&mut self, graph: &JobGraph<'_>) -> Result<String> {
        let mut inboxes: Inboxes = graph
            .stages
            .iter()
            .map(|s| {
                (0..s.parallelism)
                    .map(|_| [Vec::new(), Vec::new()])
                    .collect()
            })
            .collect();
        // A lookup join's table, read whole once for every stage that joins it.
        let mut tables: HashMap<Vec<StageId>, LookupTable> = HashMap::new();
        for stage in &graph.stages {
            let mut inputs = std::mem::take(&mut inboxes[stage.id]);
            let table = self
                .broadcast_input(graph, stage, &mut inputs, &mut tables)
                .await?;
            match &stage.head {
                StageHead::Sink => {
                    if let Some(writer) = self.sink.take() {
                        let [channels, _] = inputs.pop().unwrap_or_default();
                        let task = SinkTask {
                            input: LaneInput::new(channels),
                            writer,
                        };
                        self.tasks
                            .push(("sink".to_string(), tokio::spawn(task.run())));
                        self.sink_task = Some("sink".to_string());
                    }
                    return self.sink_task.clone().ok_or_else(|| {
                        RuntimeError::Build("the job's sink runs in no task".into())
                    });
                }
                StageHead::Source { node, first_source } => {
                    for subtask in 0..stage.parallelism {
                        let reader = first_source.map(|first| first + subtask);
                        let output = match self.body(graph, stage, subtask, &table, &mut inboxes)? {
                            SubtaskBody::Operators(operators) => {
                                SourceOutput::Chained(Box::new(operators))
                            }
                            SubtaskBody::PassThrough((to, target, input)) => {
                                let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
                                inboxes[to][target][input].push(receiver);
                                SourceOutput::Channel(sender)
                            }
                        };
                        self.spawn_reader(node, stage, subtask, reader, output)
                            .await?;
                    }
                }
                StageHead::Exchange => {
                    for (subtask, [channels, _]) in inputs.into_iter().enumerate() {
                        self.spawn_chain(graph, stage, subtask, channels, &table, &mut inboxes)?;
                    }
                }
                StageHead::TwoInput { node, first_id } => {
                    for (subtask, [left, right]) in inputs.into_iter().enumerate() {
                        let inputs = MergedInputs::new(vec![left, right]);
                        self.spawn_two_input(
                            graph,
                            stage,
                            subtask,
                            (node, first_id + subtask),
                            inputs,
                            &table,
                            &mut inboxes,
                        )?;
                    }
                }
            }
        }
        Err(RuntimeError::Build("the job graph has no sink".into()))
    }

    /// The lookup table `stage` joins: its rows (read to their end now, once per table),
    /// the table asked by key (opened once per table and key), or none when it joins none.
    async fn broadcast_input(
        &mut self,
        graph: &JobGraph<'_>,
        stage: &Stage<'_>,
        inputs: &mut [[Vec<mpsc::Receiver<Message>>; 2]],
        tables: &mut HashMap<Vec<StageId>, LookupTable>,
    ) -> Result<LookupTable> {
        let from: Vec<StageId> = graph
            .inputs_of(stage.id)
            .filter(|e| e.kind == EdgeKind::Broadcast)
            .map(|e| e.from)
            .collect();
        if from.is_empty() {
            return self.key_lookup(stage).await;
        }
        // The table's channels were given to the stage's first subtask.
        let channels = std::mem::take(&mut inputs[0][1]);
        if let Some(rows) = tables.get(&from) {
            return Ok(rows.clone());
        }
        let mut input = LaneInput::new(channels);
        let mut rows = Vec::new();
        while let Some(message) = input.next().await {
            match message {
                Message::Batch(batch) => rows.push(batch),
                Message::End => break,
                Message::Watermark(_) | Message::Barrier(_) | Message::Idle => {}
            }
        }
        let rows = LookupTable::Rows(Arc::new(rows));
        tables.insert(from, rows.clone());
        Ok(rows)
    }

    /// The table a lookup join in `stage`'s chain asks by key (the graph gave it no
    /// stage of its own), opened once per table and key; none when the chain has no
    /// such join.
    async fn key_lookup(&mut self, stage: &Stage<'_>) -> Result<LookupTable> {
        let Some((table, key)) = stage.chain.iter().find_map(|c| match c.node {
            StreamNode::LookupJoin(join) => crate::graph::key_lookup_of(join),
            _ => None,
        }) else {
            return Ok(LookupTable::None);
        };
        let entry = (table.name.clone(), key);
        if let Some(lookup) = self.lookups.get(&entry) {
            return Ok(LookupTable::ByKey(lookup.clone()));
        }
        let lookup = self.connectors.open_lookup(table, &entry.1).await?;
        self.lookups.insert(entry, lookup.clone());
        Ok(LookupTable::ByKey(lookup))
    }

    /// Opens reader `subtask` of a source stage and spawns its task, which sends what it
    /// reads to `output`. `reader`: its place in checkpoints (none when not checkpointed).
    async fn spawn_reader(
        &mut self,
        node: &SourceNode,
        stage: &Stage<'_>,
        subtask: usize,
        reader: Option<usize>,
        output: SourceOutput,
    ) -> Result<()> {
        if !self.connectors.is_bounded(&node.table) && !stage.checkpointed {
            return Err(RuntimeError::Build(format!(
                "{} is joined FOR SYSTEM_TIME AS OF, so it is read whole before the stream \
                 starts; but reading it does not end (use a file, or a Kafka table with \
                 'scan.bounded.mode')",
                node.table.name
            )));
        }
        let restored = reader.and_then(|index| {
            self.restored
                .as_ref()
                .and_then(|r| r.source(index).cloned())
        });
        if let (Some(state), Some(index)) = (&restored, reader) {
            if state.table != node.table.name {
                return Err(RuntimeError::Checkpoint(format!(
                    "the checkpoint's source {index} is table {}, not {}: it belongs to another job",
                    state.table, node.table.name
                )));
            }
        }
        let count = stage.parallelism;
        let source = self
            .connectors
            .create_source(
                &node.table,
                self.metrics.clone(),
                self.config,
                SourceSplit {
                    index: subtask,
                    count,
                },
                restored.as_ref(),
            )
            .await?;
        // Readers of a stream (not of a table read whole) on event time keep in step when
        // their table asks for it.
        let alignment = self
            .connectors
            .watermark_alignment(&node.table)
            .filter(|_| stage.checkpointed && !node.processing_time)
            .map(|alignment| {
                self.alignment_groups
                    .entry(alignment.group)
                    .or_insert_with(|| AlignmentGroup::new(alignment.max_drift_ms))
                    .join()
            });
        let task = SourceTask {
            source,
            node: node.clone(),
            metrics: self.metrics.clone(),
            config: self.config.clone(),
            output,
            index: reader.unwrap_or(0),
            checkpoints: reader.and(self.checkpoints.clone()),
            restored,
            alignment,
            dead_letters: self.dead_letters.clone(),
        };
        let holds_sink = matches!(&task.output, SourceOutput::Chained(o) if o.output.holds_sink());
        self.push_task(
            format!("source {} ({}/{count})", node.table.name, subtask + 1),
            holds_sink,
            tokio::spawn(task.run()),
        );
        Ok(())
    }

    /// Spawns subtask `subtask` of `stage` running its chain over `channels`, or, when
    /// there is nothing to run, hands the channels straight to the next stage.
    fn spawn_chain(
        &mut self,
        graph: &JobGraph<'_>,
        stage: &Stage<'_>,
        subtask: usize,
        channels: Vec<mpsc::Receiver<Message>>,
        table: &LookupTable,
        inboxes: &mut Inboxes,
    ) -> Result<()> {
        match self.body(graph, stage, subtask, table, inboxes)? {
            SubtaskBody::PassThrough((to, target, input)) => {
                inboxes[to][target][input].extend(channels);
            }
            SubtaskBody::Operators(operators) => {
                let holds_sink = operators.output.holds_sink();
                self.push_task(
                    "operators".to_string(),
                    holds_sink,
                    tokio::spawn(run_chain(LaneInput::new(channels), operators)),
                );
            }
        }
        Ok(())
    }

    /// What subtask `subtask` of a one-input `stage` runs after its input: its chained
    /// operators and the exchange after them, or nothing when it has no operators and
    /// one next subtask to pass its input to.
    fn body(
        &mut self,
        graph: &JobGraph<'_>,
        stage: &Stage<'_>,
        subtask: usize,
        table: &LookupTable,
        inboxes: &mut Inboxes,
    ) -> Result<SubtaskBody> {
        let clock = ProcessingTime::default();
        let chain = self.chain(stage, subtask, &clock, table)?;
        let edges: Vec<&Edge> = graph.outputs_of(stage.id).collect();
        let sink = self.sink_chained_into(graph, stage);
        if let ([edge], true, None) = (&edges[..], chain.is_empty(), &sink) {
            let target = match edge.kind {
                EdgeKind::Hash { .. } => None,
                EdgeKind::Forward => Some(subtask),
                EdgeKind::Single | EdgeKind::Broadcast => Some(0),
            };
            if let Some(target) = target {
                return Ok(SubtaskBody::PassThrough((edge.to, target, edge.input)));
            }
        }
        let output = match sink {
            Some(writer) => ChainOutput::Sink(writer),
            None => ChainOutput::Exchange(self.exchange(graph, stage, subtask, inboxes)?),
        };
        let chain = self.operator_chain(stage, chain);
        Ok(SubtaskBody::Operators(ChainedOperators::new(
            chain,
            output,
            stage.processing_time.then_some(clock),
            self.metrics.stage_probe(stage.id, subtask),
        )))
    }

    /// Spawns subtask `subtask` of a two-input stage (the operator with id `id`).
    #[allow(clippy::too_many_arguments)]
    fn spawn_two_input(
        &mut self,
        graph: &JobGraph<'_>,
        stage: &Stage<'_>,
        subtask: usize,
        (node, id): (&StreamNode, OperatorId),
        inputs: MergedInputs,
        table: &LookupTable,
        inboxes: &mut Inboxes,
    ) -> Result<()> {
        let clock = ProcessingTime::default();
        let context = self.context(&clock, table);
        let operator = two_input_operator(node, &context)?;
        let restored = self.restored_state(id);
        let chain = self.chain(stage, subtask, &clock, table)?;
        let chain = self.operator_chain(stage, chain);
        let output = match self.sink_chained_into(graph, stage) {
            Some(writer) => ChainOutput::Sink(writer),
            None => ChainOutput::Exchange(self.exchange(graph, stage, subtask, inboxes)?),
        };
        let task = TwoInputTask::new(operator, id, restored)?;
        let name = task.name();
        let holds_sink = output.holds_sink();
        self.push_task(
            name,
            holds_sink,
            tokio::spawn(task.run(
                inputs,
                chain,
                output,
                self.late.clone(),
                self.checkpoints.clone(),
                stage.processing_time.then_some(clock),
                self.metrics.stage_probe(stage.id, subtask),
            )),
        );
        Ok(())
    }

    /// Keeps a spawned task's handle; `holds_sink`: the job's sink is chained into it.
    fn push_task(&mut self, name: String, holds_sink: bool, task: JoinHandle<Result<()>>) {
        let name = if holds_sink {
            let name = format!("{name} and the sink");
            self.sink_task = Some(name.clone());
            name
        } else {
            name
        };
        self.tasks.push((name, task));
    }

    /// The job's sink, when it chains into its input ([`crate::Sink::chains_into_input`])
    /// and `stage` is the one subtask feeding it: the stage runs one subtask, sends
    /// everything to the sink and nothing else does (as Flink chains a sink behind a
    /// forward edge), so its batches need cross no channel to reach it.
    fn sink_chained_into(
        &mut self,
        graph: &JobGraph<'_>,
        stage: &Stage<'_>,
    ) -> Option<Box<SinkWriter>> {
        let edges: Vec<&Edge> = graph.outputs_of(stage.id).collect();
        let [edge] = edges[..] else { return None };
        let chains = self
            .sink
            .as_ref()
            .is_some_and(|w| w.sink.chains_into_input());
        let feeds_sink_alone = chains
            && stage.parallelism == 1
            && edge.input == 0
            && !matches!(edge.kind, EdgeKind::Broadcast)
            && matches!(graph.stages[edge.to].head, StageHead::Sink)
            && graph.inputs_of(edge.to).count() == 1;
        feeds_sink_alone.then(|| self.sink.take()).flatten()
    }

    fn context(&self, clock: &ProcessingTime, table: &LookupTable) -> OperatorContext {
        OperatorContext {
            config: self.config.clone(),
            metrics: self.metrics.clone(),
            clock: clock.clone(),
            lookup: table.clone(),
        }
    }

    /// Subtask `subtask`'s instances of the stage's chained operators, restored.
    fn chain(
        &self,
        stage: &Stage<'_>,
        subtask: usize,
        clock: &ProcessingTime,
        table: &LookupTable,
    ) -> Result<Vec<Chained>> {
        let context = self.context(clock, table);
        stage
            .chain
            .iter()
            .map(|chained| {
                let mut operator = one_input_operator(chained.node, &context)?;
                let id = chained.first_id.map(|first| first + subtask);
                if let Some(state) = id.and_then(|id| self.restored_state(id)) {
                    match operator.state() {
                        OperatorState::Checkpointed(target) => target.restore(state)?,
                        _ => {
                            return Err(RuntimeError::Checkpoint(format!(
                                "the checkpoint holds state for {}, which keeps none: it belongs to another job",
                                operator.name()
                            )))
                        }
                    }
                }
                Ok(Chained { operator, id })
            })
            .collect()
    }

    fn operator_chain(&self, stage: &Stage<'_>, chain: Vec<Chained>) -> OperatorChain {
        let checkpoints = stage
            .checkpointed
            .then(|| self.checkpoints.clone())
            .flatten();
        OperatorChain::new(chain, self.late.clone()).with_checkpoints(checkpoints)
    }

    /// The state operator `id` had in the checkpoint the job resumes from.
    fn restored_state(&self, id: OperatorId) -> Option<RecordBatch> {
        self.restored
            .as_ref()
            .and_then(|r| r.operators.get(&id))
            .cloned()
    }

    /// Where subtask `subtask` of `stage` sends its output: along each edge out of the
    /// stage (one, but several out of a source read for several scans), to a channel into
    /// each subtask the edge reaches (all of them when it hashes rows, the same subtask
    /// when it forwards them, otherwise the one).
    fn exchange(
        &mut self,
        graph: &JobGraph<'_>,
        stage: &Stage<'_>,
        subtask: usize,
        inboxes: &mut Inboxes,
    ) -> Result<Exchange> {
        let mut routes = Vec::new();
        for edge in graph.outputs_of(stage.id) {
            let targets = &mut inboxes[edge.to];
            let reached = match edge.kind {
                EdgeKind::Hash { .. } => 0..targets.len(),
                EdgeKind::Forward => subtask..subtask + 1,
                EdgeKind::Single | EdgeKind::Broadcast => 0..1,
            };
            let mut senders = Vec::with_capacity(reached.len());
            for target in &mut targets[reached] {
                let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
                senders.push(sender);
                target[edge.input].push(receiver);
            }
            routes.push(match &edge.kind {
                EdgeKind::Hash { keys, schema } if senders.len() > 1 => {
                    let keys = crate::expr::compile(keys, schema)?;
                    let name = graph.stages[edge.to].operator_name();
                    Exchange::hash(senders, keys, name)
                }
                _ => Exchange::forward(senders.into_iter().next().ok_or_else(|| {
                    RuntimeError::Build(format!(
                        "stage {} has no subtask {subtask} to forward to",
                        edge.to
                    ))
                })?),
            });
        }
        match routes.len() {
            0 => Err(RuntimeError::Build(format!(
                "stage {} sends its rows nowhere",
                stage.id
            ))),
            1 => Ok(routes.remove(0)),
            _ => Ok(Exchange::fan_out(routes)),
        }
    }
}
