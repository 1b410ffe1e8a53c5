//! [`JobGraph`]: how a [`StreamPlan`] runs in parallel, as plain data — stages of chained
//! operators and the edges between them.
//!
//! The graph is built from what each plan node declares about its inputs
//! ([`StreamNode::required_input_distribution`]) and the job's parallelism, and from
//! nothing else: [`crate::spawn_job`] walks it to start tasks, `EXPLAIN` prints it, and
//! the checkpoint ids of operators and sources are assigned here, once. Building it needs
//! no tokio, so every node kind's layout is unit-tested below.
//!
//! The rules:
//! - A **stage** runs as `parallelism` subtasks, each one task: a head (the readers of a
//!   source table, the rows arriving over its input edges, or a two-input operator) and
//!   then a chain of single-input operators run back to back (Flink's operator chaining).
//! - An operator whose input distribution is [`InputDistribution::Any`] is chained onto
//!   the stage(s) producing its input. One that needs its rows keyed starts a new stage
//!   of `parallelism` subtasks behind a [`EdgeKind::Hash`] edge — unless its input is a
//!   single subtask and the job runs at parallelism 1, when it is chained too. One that
//!   needs every row in one place starts a one-subtask stage behind an
//!   [`EdgeKind::Single`] edge, unless its input already is one subtask.
//! - `UNION ALL` starts no stage: its inputs' stages each chain a relabelling step, and
//!   the next operator reads them all.
//! - A subtree the plan holds more than once (a table scanned twice — the planner makes
//!   every scan of a table read the same columns, see `read_once` in the planner — or a
//!   view used twice) is built once; each use starts a stage of its own behind a
//!   [`EdgeKind::Forward`] edge from its stages, so its rows go to every use.
//! - A lookup join's table is read whole, over a [`EdgeKind::Broadcast`] edge, before
//!   the stream starts; its stages take no part in checkpoints. A table read by key (a
//!   database table, see [`TableLayout::reads_by_key`]) has no stage: the join asks it.
//! - The sink is a stage of one subtask behind an [`EdgeKind::Single`] edge from every
//!   last stage. When one subtask feeds it and its writes cost little
//!   ([`crate::Sink::chains_into_input`]), [`crate::spawn_job`] runs it in that subtask's
//!   task; the graph does not know the sink's connector, so it shows the stage either way.
//! - Operator ids follow build order (inputs first, left to right; a lookup join's table
//!   before its stream), one per subtask, so the same plan at the same parallelism
//!   numbers its operators the same way and a restored job finds its states.

use std::collections::HashMap;
use std::fmt;

use datafusion::common::DFSchemaRef;
use datafusion::logical_expr::Expr;
use runnel_sql::{InputDistribution, LookupJoinNode, SourceNode, StreamNode, StreamPlan, TableDef};

use crate::error::{Result, RuntimeError};

mod reuse;

use reuse::{count_sub_plans, sub_plan_key, SubPlanKey};

/// The table a lookup join could ask by key, and the key's column names: when its table
/// side is a plain scan (no computed columns) and each key is one of its columns.
pub fn key_lookup_of(join: &LookupJoinNode) -> Option<(&TableDef, Vec<String>)> {
    let StreamNode::Source(source) = join.table.as_ref() else {
        return None;
    };
    if source.table.has_computed_columns() {
        return None;
    }
    let key = join
        .table_keys
        .iter()
        .map(|k| match k {
            Expr::Column(column) => Some(column.name.clone()),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some((&source.table, key))
}

/// A stage's place in [`JobGraph::stages`].
pub type StageId = usize;

/// An operator instance's number in the job: its checkpoint state is filed under it.
pub type OperatorId = usize;

/// A job's stages and edges. Stages are listed in build order: every stage comes after
/// the stages feeding it.
#[derive(Debug)]
pub struct JobGraph<'p> {
    pub parallelism: usize,
    pub stages: Vec<Stage<'p>>,
    pub edges: Vec<Edge>,
}

/// Operators that run together, as `parallelism` subtasks of one task each.
#[derive(Debug)]
pub struct Stage<'p> {
    pub id: StageId,
    pub head: StageHead<'p>,
    pub parallelism: usize,
    /// Single-input operators run after the head, in order, in the same task.
    pub chain: Vec<ChainedOperator<'p>>,
    /// Whether the stage's watermarks are the processing clock (`PROCTIME()` reads them).
    pub processing_time: bool,
    /// Whether the stage takes part in checkpoints (not a lookup join's table, which is
    /// read whole again when a job restarts).
    pub checkpointed: bool,
}

impl Stage<'_> {
    /// The name of the stage's first operator (for errors): its head's, or its chain's
    /// first.
    pub fn operator_name(&self) -> &'static str {
        match &self.head {
            StageHead::Source { .. } => "Source",
            StageHead::TwoInput { node, .. } => node.name(),
            StageHead::Sink => "the sink",
            StageHead::Exchange => self.chain.first().map_or("the exchange", |c| c.node.name()),
        }
    }
}

/// What a stage's subtasks start with.
#[derive(Debug)]
pub enum StageHead<'p> {
    /// One reader per subtask, of the table's share [`crate::SourceSplit`] gives it.
    /// `first_source` is the checkpoint index of reader 0 (reader `i` has
    /// `first_source + i`); `None` when the stage is not checkpointed.
    Source {
        node: &'p SourceNode,
        first_source: Option<usize>,
    },
    /// The rows arriving over the stage's input edge (after a hash or gather exchange).
    Exchange,
    /// A two-input operator: input 0 is its left side, input 1 its right.
    TwoInput {
        node: &'p StreamNode,
        first_id: OperatorId,
    },
    /// The job's sink (one task).
    Sink,
}

/// One plan node chained in a stage.
#[derive(Debug)]
pub struct ChainedOperator<'p> {
    pub node: &'p StreamNode,
    /// The id of subtask 0's instance; subtask `i` has `first_id + i`. `None` for the
    /// relabelling step of a `UNION ALL`, which is no operator of its own.
    pub first_id: Option<OperatorId>,
}

/// Rows flowing from every subtask of `from` into `to`.
#[derive(Debug, Clone)]
pub struct Edge {
    pub from: StageId,
    pub to: StageId,
    /// Which input of `to`: 0, or 1 for a join's right side and a lookup join's table.
    pub input: usize,
    pub kind: EdgeKind,
}

/// How an edge spreads rows over the subtasks of the stage it feeds.
#[derive(Debug, Clone, PartialEq)]
pub enum EdgeKind {
    /// Each row to subtask `hash(keys) % parallelism` (keys evaluated over `schema`).
    Hash {
        keys: Vec<Expr>,
        schema: DFSchemaRef,
    },
    /// Every row to the one subtask.
    Single,
    /// Every row to every subtask, read to the end before the stream starts.
    Broadcast,
    /// Subtask `i`'s rows to subtask `i` of a stage of the same parallelism: a shared
    /// source's readers feeding each scan of it.
    Forward,
}

/// The stages a plan node's rows come out of while the graph is built (several after a
/// `UNION ALL`).
struct Open {
    stages: Vec<StageId>,
}

/// What the graph needs to know of the tables a plan reads, from their connectors.
pub trait TableLayout {
    /// How many parallel readers `table` gets at most (at least 1 is used).
    fn readers(&self, table: &TableDef) -> usize;

    /// Whether a lookup join asks `table` by key instead of reading it whole.
    fn reads_by_key(&self, _table: &TableDef) -> bool {
        false
    }
}

/// A function from table to readers: no table is read by key.
impl<F: Fn(&TableDef) -> usize> TableLayout for F {
    fn readers(&self, table: &TableDef) -> usize {
        self(table)
    }
}

struct GraphBuilder<'p, 'r> {
    parallelism: usize,
    /// Occurrences of each subtree; one occurring more than once is built once.
    sub_plans: HashMap<SubPlanKey, usize>,
    /// The stages producing each shared subtree's rows, once built.
    shared: HashMap<SubPlanKey, Vec<StageId>>,
    tables: &'r dyn TableLayout,
    stages: Vec<Stage<'p>>,
    edges: Vec<Edge>,
    next_operator: OperatorId,
    next_source: usize,
    /// False while a lookup join's table is built.
    checkpointed: bool,
}

impl<'p> JobGraph<'p> {
    /// The graph of `plan` at `parallelism` (0 is taken as 1); `tables` says how many
    /// parallel readers a table gets (at most `parallelism`, at least 1) and which are
    /// looked up by key.
    pub fn build(
        plan: &'p StreamPlan,
        parallelism: usize,
        tables: &dyn TableLayout,
    ) -> Result<JobGraph<'p>> {
        let sub_plans = count_sub_plans(plan);
        let mut builder = GraphBuilder {
            parallelism: parallelism.max(1),
            sub_plans,
            shared: HashMap::new(),
            tables,
            stages: Vec::new(),
            edges: Vec::new(),
            next_operator: 0,
            next_source: 0,
            checkpointed: true,
        };
        let open = builder.build(&plan.root)?;
        let sink = builder.new_stage(StageHead::Sink, 1, false);
        builder.connect(open, sink, 0, EdgeKind::Single);
        Ok(JobGraph {
            parallelism: builder.parallelism,
            stages: builder.stages,
            edges: builder.edges,
        })
    }

    /// The edges into `stage`, by input.
    pub fn inputs_of(&self, stage: StageId) -> impl Iterator<Item = &Edge> {
        self.edges.iter().filter(move |e| e.to == stage)
    }

    /// The edges out of `stage`: one, but several out of a source read for several
    /// scans; none out of the sink.
    pub fn outputs_of(&self, stage: StageId) -> impl Iterator<Item = &Edge> {
        self.edges.iter().filter(move |e| e.from == stage)
    }

    /// Source readers that take part in checkpoints, over all source stages.
    pub fn checkpointed_sources(&self) -> usize {
        self.stages
            .iter()
            .filter(|s| {
                matches!(
                    s.head,
                    StageHead::Source {
                        first_source: Some(_),
                        ..
                    }
                )
            })
            .map(|s| s.parallelism)
            .sum()
    }
}

impl<'p> GraphBuilder<'p, '_> {
    /// Whether a lookup join asks its table side by key (see [`key_lookup_of`]) of a
    /// table its connector looks up.
    fn reads_by_key(&self, join: &LookupJoinNode) -> bool {
        key_lookup_of(join).is_some_and(|(table, _)| self.tables.reads_by_key(table))
    }

    fn new_stage(&mut self, head: StageHead<'p>, parallelism: usize, time: bool) -> StageId {
        let id = self.stages.len();
        self.stages.push(Stage {
            id,
            head,
            parallelism,
            chain: Vec::new(),
            processing_time: time,
            checkpointed: self.checkpointed,
        });
        id
    }

    fn connect(&mut self, from: Open, to: StageId, input: usize, kind: EdgeKind) {
        for stage in from.stages {
            self.edges.push(Edge {
                from: stage,
                to,
                input,
                kind: kind.clone(),
            });
        }
    }

    fn subtasks(&self, open: &Open) -> usize {
        open.stages
            .iter()
            .map(|&s| self.stages[s].parallelism)
            .sum()
    }

    fn processing_time(&self, open: &Open) -> bool {
        open.stages.iter().any(|&s| self.stages[s].processing_time)
    }

    /// `count` consecutive operator ids; the first.
    fn operator_ids(&mut self, count: usize) -> OperatorId {
        let first = self.next_operator;
        self.next_operator += count;
        first
    }

    /// Chains `node` onto every open stage (ids consecutive over their subtasks).
    fn chain(&mut self, open: &Open, node: &'p StreamNode, stateful_id: bool) {
        for &stage in &open.stages {
            let first_id = stateful_id.then(|| self.operator_ids(self.stages[stage].parallelism));
            self.stages[stage]
                .chain
                .push(ChainedOperator { node, first_id });
        }
    }

    /// A stage of readers of `source`'s table.
    fn source_stage(&mut self, source: &'p SourceNode) -> Open {
        let readers = self
            .tables
            .readers(&source.table)
            .clamp(1, self.parallelism);
        let first_source = self.checkpointed.then(|| {
            let first = self.next_source;
            self.next_source += readers;
            first
        });
        let head = StageHead::Source {
            node: source,
            first_source,
        };
        let stage = self.new_stage(head, readers, source.processing_time);
        Open {
            stages: vec![stage],
        }
    }

    /// The open stages producing `node`'s rows: for a subtree the plan holds more than
    /// once, a stage per stage of its one build, forwarding its rows (so what is chained
    /// next runs there, not in the shared stage).
    fn build(&mut self, node: &'p StreamNode) -> Result<Open> {
        let key = sub_plan_key(node);
        if !self.checkpointed || self.sub_plans.get(&key).is_none_or(|&n| n < 2) {
            return self.build_once(node);
        }
        let stages = match self.shared.get(&key) {
            Some(stages) => stages.clone(),
            None => {
                let stages = self.build_once(node)?.stages;
                self.shared.insert(key, stages.clone());
                stages
            }
        };
        let mut scans = Vec::with_capacity(stages.len());
        for stage in stages {
            let (subtasks, time) = (
                self.stages[stage].parallelism,
                self.stages[stage].processing_time,
            );
            let scan = self.new_stage(StageHead::Exchange, subtasks, time);
            let from = Open {
                stages: vec![stage],
            };
            self.connect(from, scan, 0, EdgeKind::Forward);
            scans.push(scan);
        }
        Ok(Open { stages: scans })
    }

    /// [`GraphBuilder::build`] without sharing `node` itself.
    fn build_once(&mut self, node: &'p StreamNode) -> Result<Open> {
        match node {
            StreamNode::Source(source) => Ok(self.source_stage(source)),
            StreamNode::Union { inputs, .. } => {
                let mut stages = Vec::new();
                for input in inputs {
                    let open = self.build(input)?;
                    self.chain(&open, node, false);
                    stages.extend(open.stages);
                }
                Ok(Open { stages })
            }
            StreamNode::LookupJoin(join) if self.reads_by_key(join) => {
                let open = self.build(&join.input)?;
                self.chain(&open, node, true);
                Ok(open)
            }
            StreamNode::LookupJoin(join) => {
                // The table first (read whole, outside checkpoints), then the stream.
                let checkpointed = std::mem::replace(&mut self.checkpointed, false);
                let table = self.build(&join.table);
                self.checkpointed = checkpointed;
                let table = table?;
                let open = self.build(&join.input)?;
                for &stage in &open.stages {
                    self.connect(
                        Open {
                            stages: table.stages.clone(),
                        },
                        stage,
                        1,
                        EdgeKind::Broadcast,
                    );
                }
                self.chain(&open, node, true);
                Ok(open)
            }
            StreamNode::IntervalJoin(_)
            | StreamNode::WindowJoin(_)
            | StreamNode::RegularJoin(_)
            | StreamNode::TemporalJoin(_) => {
                let inputs = node.inputs();
                let distributions = node.required_input_distribution();
                let left = self.build(inputs[0])?;
                let right = self.build(inputs[1])?;
                let time = self.processing_time(&left) || self.processing_time(&right);
                let parallelism = match distributions[0] {
                    InputDistribution::Hash { .. } => self.parallelism,
                    _ => 1,
                };
                let first_id = self.operator_ids(parallelism);
                let stage =
                    self.new_stage(StageHead::TwoInput { node, first_id }, parallelism, time);
                for (input, (open, distribution)) in
                    [left, right].into_iter().zip(distributions).enumerate()
                {
                    let kind = edge_kind(distribution);
                    self.connect(open, stage, input, kind);
                }
                Ok(Open {
                    stages: vec![stage],
                })
            }
            _ => {
                let [input] = node.inputs()[..] else {
                    return Err(RuntimeError::Build(format!(
                        "{} was expected to have one input",
                        node.name()
                    )));
                };
                let distribution = node
                    .required_input_distribution()
                    .into_iter()
                    .next()
                    .unwrap_or(InputDistribution::Any);
                let open = self.build(input)?;
                let one_subtask = self.subtasks(&open) == 1;
                let open = match distribution {
                    InputDistribution::Any | InputDistribution::Broadcast => open,
                    InputDistribution::Single if one_subtask => open,
                    InputDistribution::Hash { .. } if one_subtask && self.parallelism == 1 => open,
                    distribution => {
                        let parallelism = match distribution {
                            InputDistribution::Hash { .. } => self.parallelism,
                            _ => 1,
                        };
                        let time = self.processing_time(&open);
                        let stage = self.new_stage(StageHead::Exchange, parallelism, time);
                        self.connect(open, stage, 0, edge_kind(distribution));
                        Open {
                            stages: vec![stage],
                        }
                    }
                };
                self.chain(&open, node, true);
                Ok(open)
            }
        }
    }
}

fn edge_kind(distribution: InputDistribution) -> EdgeKind {
    match distribution {
        InputDistribution::Hash { keys, schema } => EdgeKind::Hash { keys, schema },
        InputDistribution::Broadcast => EdgeKind::Broadcast,
        InputDistribution::Any | InputDistribution::Single => EdgeKind::Single,
    }
}

/// What one stage runs and where its rows come from, in words: `EXPLAIN` prints it and
/// the dashboard draws it.
#[derive(Debug, Clone, PartialEq)]
pub struct StageDescription {
    pub id: StageId,
    /// The stage's operators in order (`Source t`, ..., `Sink`; `Exchange` for none).
    pub operators: Vec<String>,
    pub parallelism: usize,
    /// `reader` or `subtask` (a source's subtasks are its readers; the sink is one task).
    pub subtask_noun: &'static str,
    /// The stage is read whole before the stream starts (a lookup join's table).
    pub read_whole: bool,
    pub inputs: Vec<InputDescription>,
    /// The checkpoint ids of the stage's stateful operator instances (every subtask's).
    pub operator_ids: Vec<OperatorId>,
}

/// One edge into a stage.
#[derive(Debug, Clone, PartialEq)]
pub struct InputDescription {
    pub from: StageId,
    /// `left` or `right` for a two-input operator's sides, else empty.
    pub side: &'static str,
    /// How rows cross: `rows hashed by [t.k]`, `merging 2 subtasks`, ...
    pub how: String,
}

impl JobGraph<'_> {
    /// Every stage in words, in the graph's order.
    pub fn describe(&self) -> Vec<StageDescription> {
        let count = |n: usize, one: &str, many: &str| {
            if n == 1 {
                format!("1 {one}")
            } else {
                format!("{n} {many}")
            }
        };
        self.stages
            .iter()
            .map(|stage| {
                let mut operators: Vec<String> = Vec::new();
                let subtask_noun = match &stage.head {
                    StageHead::Source { node, .. } => {
                        operators.push(format!("Source {}", node.table.name));
                        "reader"
                    }
                    StageHead::TwoInput { node, .. } => {
                        operators.push(node.name().to_string());
                        "subtask"
                    }
                    StageHead::Exchange => "subtask",
                    StageHead::Sink => {
                        operators.push("Sink".to_string());
                        "subtask"
                    }
                };
                operators.extend(stage.chain.iter().map(|c| c.node.name().to_string()));
                if operators.is_empty() {
                    operators.push("Exchange".to_string());
                }
                let inputs = self
                    .inputs_of(stage.id)
                    .map(|edge| {
                        let side = match (&stage.head, edge.input) {
                            (StageHead::TwoInput { .. }, 0) => "left",
                            (StageHead::TwoInput { .. }, _) => "right",
                            _ => "",
                        };
                        let how = match &edge.kind {
                            EdgeKind::Hash { keys, .. } => {
                                let keys: Vec<String> =
                                    keys.iter().map(|k| k.to_string()).collect();
                                format!("rows hashed by [{}]", keys.join(", "))
                            }
                            EdgeKind::Single => {
                                let from = self.stages[edge.from].parallelism;
                                format!("merging {}", count(from, "subtask", "subtasks"))
                            }
                            EdgeKind::Broadcast => "the whole table to every subtask".to_string(),
                            EdgeKind::Forward => "each subtask's rows".to_string(),
                        };
                        InputDescription {
                            from: edge.from,
                            side,
                            how,
                        }
                    })
                    .collect();
                let mut first_ids: Vec<OperatorId> =
                    stage.chain.iter().filter_map(|c| c.first_id).collect();
                if let StageHead::TwoInput { first_id, .. } = &stage.head {
                    first_ids.push(*first_id);
                }
                let operator_ids = first_ids
                    .iter()
                    .flat_map(|first| (0..stage.parallelism).map(move |i| first + i))
                    .collect();
                StageDescription {
                    id: stage.id,
                    operator_ids,
                    operators,
                    parallelism: stage.parallelism,
                    subtask_noun,
                    read_whole: !stage.checkpointed && !matches!(stage.head, StageHead::Sink),
                    inputs,
                }
            })
            .collect()
    }
}

/// `EXPLAIN`'s view: one line per stage — its operators, its subtasks, and the edges
/// that feed it — e.g. `stage 1: WindowAggregate → Projection, 3 subtasks ← stage 0,
/// rows hashed by [clicks.user_id]`.
impl fmt::Display for JobGraph<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Job graph, parallelism {}:", self.parallelism)?;
        for stage in self.describe() {
            let subtasks = match (stage.parallelism, stage.subtask_noun) {
                (1, noun) => format!("1 {noun}"),
                (n, noun) => format!("{n} {noun}s"),
            };
            write!(
                f,
                "  stage {}: {}, {subtasks}",
                stage.id,
                stage.operators.join(" → ")
            )?;
            if stage.read_whole {
                write!(f, " (read whole before the stream starts)")?;
            }
            let inputs: Vec<String> = stage
                .inputs
                .iter()
                .map(|input| match input.side {
                    "" => format!("stage {}, {}", input.from, input.how),
                    side => format!("stage {} ({side}), {}", input.from, input.how),
                })
                .collect();
            if !inputs.is_empty() {
                write!(f, " ← {}", inputs.join("; "))?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
