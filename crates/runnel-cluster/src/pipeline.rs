//! [`Pipeline`]: a graph stage's operators as a task runs them — the stage's chain, then
//! each of its outputs: the sink, a repartition topic (rows hashed to partitions and
//! gathered into records of up to 8192 rows; the watermark and idleness held until the
//! next commit, after the rows; the end after everything), or a stage it forwards to, run
//! in the same task.

use std::collections::HashMap;

use datafusion::arrow::record_batch::RecordBatch;
use runnel_runtime::graph::StageId;
use runnel_runtime::{
    Chained, EdgeKind, KeyPartitioner, LateRows, Message, OperatorChain, OperatorContext,
    OperatorState,
};

use crate::changelog::StateChains;
use crate::error::{ClusterError, Result};
use crate::topology::{ClusterTopology, StageOutput, TaskId};
use crate::wire::{self, ChangelogRecord, Envelope, RecordKind};

/// Where a task's output goes; the process writes it into its open transaction.
pub trait TaskWriter {
    /// Rows for the job's sink table.
    fn sink_rows(&mut self, batch: &RecordBatch) -> Result<()>;

    /// A record for partition `partition` of rooted stage `stage`'s repartition topic
    /// (`value`: the rows, for [`RecordKind::Rows`]).
    fn repartition(
        &mut self,
        stage: StageId,
        partition: i32,
        envelope: Envelope,
        value: Option<Vec<u8>>,
    ) -> Result<()>;
}

/// A graph stage's operators as one task runs them, and where their output goes.
pub struct Pipeline {
    stage: StageId,
    chain: OperatorChain,
    outputs: Vec<PipelineOutput>,
}

enum PipelineOutput {
    Sink,
    Repartition(RepartitionOutput),
    Forward(Box<Pipeline>),
}

/// Rows a repartition record holds at most: a task's output for one partition is gathered
/// up to this many rows (or until the next commit) before it is written, so the topic
/// carries few large batches rather than a small one per poll and partition.
const RECORD_ROWS: usize = 8192;

/// Input `input` of rooted stage `stage`, through its repartition topic.
struct RepartitionOutput {
    stage: StageId,
    input: usize,
    partitioner: KeyPartitioner,
    /// Rows gathered for each partition, not written yet.
    gathered: Vec<Vec<RecordBatch>>,
    /// The marker to send at the next flush: the last watermark or idleness.
    pending: Option<RecordKind>,
}

impl RepartitionOutput {
    fn envelope(&self, kind: RecordKind, me: TaskId) -> Envelope {
        Envelope {
            kind,
            writer: me,
            input: self.input,
        }
    }

    /// Hashes `batch`'s rows to their partitions; writes a partition's rows once it
    /// gathered [`RECORD_ROWS`].
    fn rows(&mut self, batch: &RecordBatch, me: TaskId, writer: &mut dyn TaskWriter) -> Result<()> {
        for (partition, rows) in self.partitioner.partition(batch)? {
            self.gathered[partition].push(rows);
            let gathered: usize = self.gathered[partition]
                .iter()
                .map(RecordBatch::num_rows)
                .sum();
            if gathered >= RECORD_ROWS {
                self.write_gathered(partition, me, writer)?;
            }
        }
        Ok(())
    }

    /// Writes the rows gathered for `partition` as one record.
    fn write_gathered(
        &mut self,
        partition: usize,
        me: TaskId,
        writer: &mut dyn TaskWriter,
    ) -> Result<()> {
        let batches = std::mem::take(&mut self.gathered[partition]);
        let Some(first) = batches.first() else {
            return Ok(());
        };
        let rows = datafusion::arrow::compute::concat_batches(first.schema_ref(), &batches)
            .map_err(|source| ClusterError::Arrow {
                context: "gathering rows for a repartition topic".into(),
                source,
            })?;
        let envelope = self.envelope(RecordKind::Rows, me);
        let bytes = wire::encode_batch(&rows)?;
        writer.repartition(self.stage, partition as i32, envelope, Some(bytes))
    }

    /// Writes every partition's gathered rows, then the pending marker to every partition.
    fn flush(&mut self, me: TaskId, writer: &mut dyn TaskWriter) -> Result<()> {
        for partition in 0..self.gathered.len() {
            self.write_gathered(partition, me, writer)?;
        }
        if let Some(kind) = self.pending.take() {
            self.to_every_partition(kind, me, writer)?;
        }
        Ok(())
    }

    /// Writes the gathered rows, then the end to every partition.
    fn end(&mut self, me: TaskId, writer: &mut dyn TaskWriter) -> Result<()> {
        self.pending = None;
        self.flush(me, writer)?;
        self.to_every_partition(RecordKind::End, me, writer)
    }

    fn to_every_partition(
        &self,
        kind: RecordKind,
        me: TaskId,
        writer: &mut dyn TaskWriter,
    ) -> Result<()> {
        let envelope = self.envelope(kind, me);
        for partition in 0..self.partitioner.count() {
            writer.repartition(self.stage, partition as i32, envelope, None)?;
        }
        Ok(())
    }
}

impl Pipeline {
    pub fn build(
        topology: &ClusterTopology<'_>,
        stage: StageId,
        context: &OperatorContext,
        restored: &HashMap<String, RecordBatch>,
        late: &LateRows,
    ) -> Result<Self> {
        let graph_stage = &topology.graph.stages[stage];
        let mut chain = Vec::with_capacity(graph_stage.chain.len());
        for (i, chained) in graph_stage.chain.iter().enumerate() {
            let mut operator = runnel_runtime::one_input_operator(chained.node, context)?;
            if let Some(state) = restored.get(&wire::state_key(stage, &i.to_string())) {
                match operator.state() {
                    OperatorState::Checkpointed(target) => target.restore(state.clone())?,
                    _ => {
                        return Err(ClusterError::Setting(format!(
                            "the changelog holds state for {} of stage {stage}, which keeps \
                             none: it belongs to another job of the same name",
                            operator.name()
                        )))
                    }
                }
            }
            chain.push(Chained {
                operator,
                id: chained.first_id,
            });
        }
        let mut outputs = Vec::new();
        for output in topology.outputs(stage) {
            outputs.push(match output {
                StageOutput::Sink => PipelineOutput::Sink,
                StageOutput::Forward { stage } => PipelineOutput::Forward(Box::new(
                    Pipeline::build(topology, stage, context, restored, late)?,
                )),
                StageOutput::Repartition { stage, input, kind } => {
                    let target = topology.stage(stage).ok_or_else(|| {
                        ClusterError::Unsupported(format!("stage {stage} has no tasks"))
                    })?;
                    let name = topology.graph.stages[stage].operator_name();
                    let partitioner = match kind {
                        EdgeKind::Hash { keys, schema } => KeyPartitioner::new(
                            runnel_runtime::expr::compile(&keys, &schema)
                                .map_err(runnel_runtime::RuntimeError::from)?,
                            target.tasks,
                            name,
                        ),
                        _ => KeyPartitioner::new(Vec::new(), 1, name),
                    };
                    PipelineOutput::Repartition(RepartitionOutput {
                        stage,
                        input,
                        gathered: vec![Vec::new(); partitioner.count()],
                        partitioner,
                        pending: None,
                    })
                }
            });
        }
        Ok(Self {
            stage,
            chain: OperatorChain::new(chain, late.clone()),
            outputs,
        })
    }

    /// Runs `message` through the chain and sends what comes out along every output.
    pub fn push(
        &mut self,
        message: Message,
        me: TaskId,
        writer: &mut dyn TaskWriter,
    ) -> Result<()> {
        let mut out = Vec::new();
        self.chain.process(message, &mut out)?;
        for message in out {
            for output in &mut self.outputs {
                match output {
                    PipelineOutput::Sink => {
                        if let Message::Batch(batch) = &message {
                            writer.sink_rows(batch)?;
                        }
                    }
                    PipelineOutput::Forward(next) => next.push(message.clone(), me, writer)?,
                    PipelineOutput::Repartition(output) => match &message {
                        Message::Batch(batch) => output.rows(batch, me, writer)?,
                        Message::Watermark(w) => output.pending = Some(RecordKind::Watermark(*w)),
                        Message::Idle => output.pending = Some(RecordKind::Idle),
                        Message::Barrier(_) => {}
                        Message::End => output.end(me, writer)?,
                    },
                }
            }
        }
        Ok(())
    }

    /// Writes each repartition output's gathered rows, then its pending marker to every
    /// partition of its topic (at a commit, so a reading task sees the marker after the
    /// rows it covers).
    pub fn flush_markers(&mut self, me: TaskId, writer: &mut dyn TaskWriter) -> Result<()> {
        for output in &mut self.outputs {
            match output {
                PipelineOutput::Sink => {}
                PipelineOutput::Forward(next) => next.flush_markers(me, writer)?,
                PipelineOutput::Repartition(output) => output.flush(me, writer)?,
            }
        }
        Ok(())
    }

    /// Every operator that keeps state starts tracking its changes, so that each commit
    /// writes only them. Called once, after the restore.
    pub fn track_increments(&mut self) {
        for state in self.chain.states().into_iter().flatten() {
            state.track_increments();
        }
        for output in &mut self.outputs {
            if let PipelineOutput::Forward(next) = output {
                next.track_increments();
            }
        }
    }

    /// Writes each operator's state into `out` as a link of its chain in the changelog:
    /// what changed since the last commit, or the whole state.
    pub fn write_states(
        &mut self,
        chains: &mut StateChains,
        out: &mut Vec<ChangelogRecord>,
    ) -> Result<()> {
        for (i, state) in self.chain.states().into_iter().enumerate() {
            let Some(state) = state else { continue };
            let key = wire::state_key(self.stage, &i.to_string());
            let increment = state.increment()?.map(|i| (i.build)()).transpose()?;
            chains.write(&key, increment, || Ok(state.snapshot()?), out)?;
        }
        for output in &mut self.outputs {
            if let PipelineOutput::Forward(next) = output {
                next.write_states(chains, out)?;
            }
        }
        Ok(())
    }

    pub fn state_size(&mut self) -> usize {
        let mut size = self.chain.state_size();
        for output in &mut self.outputs {
            if let PipelineOutput::Forward(next) = output {
                size += next.state_size();
            }
        }
        size
    }
}
