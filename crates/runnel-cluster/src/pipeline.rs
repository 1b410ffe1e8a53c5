//! [`Pipeline`]: a graph stage's operators as a task runs them — the stage's chain, then
//! each of its outputs: the sink, a repartition topic (rows hashed to partitions; the
//! watermark and idleness held until the next commit, the end sent at once), or a stage
//! it forwards to, run in the same task.

use std::collections::HashMap;

use datafusion::arrow::record_batch::RecordBatch;
use runnel_runtime::graph::StageId;
use runnel_runtime::{
    Chained, EdgeKind, KeyPartitioner, LateRows, Message, OperatorChain, OperatorContext,
    OperatorState,
};

use crate::error::{ClusterError, Result};
use crate::topology::{ClusterTopology, StageOutput, TaskId};
use crate::wire::{self, Envelope, RecordKind};

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
    Repartition {
        stage: StageId,
        input: usize,
        partitioner: KeyPartitioner,
        /// The marker to send at the next flush: the last watermark or idleness.
        pending: Option<RecordKind>,
    },
    Forward(Box<Pipeline>),
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
                    PipelineOutput::Repartition {
                        stage,
                        input,
                        partitioner,
                        pending: None,
                    }
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
                    PipelineOutput::Repartition {
                        stage,
                        input,
                        partitioner,
                        pending,
                    } => match &message {
                        Message::Batch(batch) => {
                            for (partition, rows) in partitioner.partition(batch)? {
                                let envelope = Envelope {
                                    kind: RecordKind::Rows,
                                    writer: me,
                                    input: *input,
                                };
                                let bytes = wire::encode_batch(&rows)?;
                                writer.repartition(
                                    *stage,
                                    partition as i32,
                                    envelope,
                                    Some(bytes),
                                )?;
                            }
                        }
                        Message::Watermark(w) => *pending = Some(RecordKind::Watermark(*w)),
                        Message::Idle => *pending = Some(RecordKind::Idle),
                        Message::Barrier(_) => {}
                        Message::End => {
                            *pending = None;
                            let envelope = Envelope {
                                kind: RecordKind::End,
                                writer: me,
                                input: *input,
                            };
                            for partition in 0..partitioner.count() {
                                writer.repartition(*stage, partition as i32, envelope, None)?;
                            }
                        }
                    },
                }
            }
        }
        Ok(())
    }

    /// Sends each output's pending marker to every partition of its topic.
    pub fn flush_markers(&mut self, me: TaskId, writer: &mut dyn TaskWriter) -> Result<()> {
        for output in &mut self.outputs {
            match output {
                PipelineOutput::Sink => {}
                PipelineOutput::Forward(next) => next.flush_markers(me, writer)?,
                PipelineOutput::Repartition {
                    stage,
                    input,
                    partitioner,
                    pending,
                } => {
                    if let Some(kind) = pending.take() {
                        let envelope = Envelope {
                            kind,
                            writer: me,
                            input: *input,
                        };
                        for partition in 0..partitioner.count() {
                            writer.repartition(*stage, partition as i32, envelope, None)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    pub fn snapshot(&mut self, out: &mut Vec<(String, Option<RecordBatch>)>) -> Result<()> {
        for (i, state) in self.chain.snapshots()?.into_iter().enumerate() {
            out.push((wire::state_key(self.stage, &i.to_string()), state));
        }
        for output in &mut self.outputs {
            if let PipelineOutput::Forward(next) = output {
                next.snapshot(out)?;
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
