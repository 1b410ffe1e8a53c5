//! [`JobConfig`]: the job-wide settings a session's `SET` statements choose.

use std::sync::Arc;
use std::time::Duration;

use runnel_sql::TableDef;

use crate::restart::RestartStrategy;

/// Settings that apply to a whole job (Flink's configuration keys where Flink has one).
#[derive(Debug, Clone, Default)]
pub struct JobConfig {
    /// `table.exec.source.idle-timeout`: the idle timeout of every source partition whose
    /// table does not set `'scan.watermark.idle-timeout'` itself.
    pub source_idle_timeout: Option<Duration>,
    /// `runnel.watermark.idle-advance`: while every partition of a source is idle, its
    /// watermark follows the processing clock, so the last windows of a quiet stream close.
    pub idle_watermark_advance: bool,
    /// `runnel.late-data.sink`: the table late rows are written to instead of being
    /// dropped (they are counted either way).
    pub late_data_sink: Option<Arc<TableDef>>,
    /// `execution.checkpointing.interval` and the checkpoint directory: when both are
    /// set, the job checkpoints and resumes from its checkpoints.
    pub checkpoint: Option<crate::checkpoint::CheckpointConfig>,
    /// The sink's `'sink.delivery-guarantee'`.
    pub delivery: DeliveryGuarantee,
    /// The tables the job reads (so a transactional sink can commit their offsets).
    pub sources: Vec<Arc<TableDef>>,
    /// The table the job writes, when it is a table (not a query's caller).
    pub sink: Option<Arc<TableDef>>,
    /// Failures injected on purpose, for recovery tests.
    pub faults: FaultInjection,
    /// `parallelism.default`: how many subtasks each operator runs as (0 is taken as 1).
    pub parallelism: usize,
    /// Source tables whose undecodable records go to a dead-letter table
    /// (`'<format>.dead-letter.table'`), by source table name.
    pub dead_letter_tables: std::collections::BTreeMap<String, Arc<TableDef>>,
    /// `runnel.memory.limit`: the bytes of state the job may hold (`None`: no limit).
    pub memory_limit: Option<u64>,
    /// `restart-strategy.*`: how the job is restarted after a failure; `None`: the
    /// default for whether it checkpoints ([`RestartStrategy::default_for`]).
    pub restart: Option<RestartStrategy>,
}

impl JobConfig {
    /// Subtasks per operator: at least one.
    pub fn parallelism(&self) -> usize {
        self.parallelism.max(1)
    }

    /// Whether the job takes checkpoints (and resumes from them).
    pub fn checkpoints(&self) -> bool {
        self.checkpoint.is_some() && self.delivery != DeliveryGuarantee::AtMostOnce
    }

    /// The restart strategy the job runs under: the one its settings name, else the
    /// default for whether it checkpoints.
    pub fn restart_strategy(&self) -> RestartStrategy {
        self.restart
            .unwrap_or_else(|| RestartStrategy::default_for(self.checkpoints()))
    }
}

/// Failures a recovery test injects into a job (none by default).
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultInjection {
    /// The first source takes a checkpoint once it has read this many rows.
    pub checkpoint_after_rows: Option<u64>,
    /// The job fails ("crashes") right after its first checkpoint is committed, before
    /// anything after it reaches the sink.
    pub crash_after_checkpoint: bool,
    /// A pause between storing each checkpoint and committing it, so a crash test can
    /// kill the process exactly there.
    pub pause_before_commit: Option<std::time::Duration>,
    /// Every checkpoint's commit fails, as a sink's does when its broker refuses it.
    pub fail_commits: bool,
}

/// What a crash may do to a job's output (the sink's `'sink.delivery-guarantee'`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliveryGuarantee {
    /// Source offsets are committed as rows are read and nothing is replayed: a crash
    /// may lose results, never repeats one.
    AtMostOnce,
    /// The job resumes from its last checkpoint and replays from its offsets: nothing is
    /// lost, results after the checkpoint may repeat.
    #[default]
    AtLeastOnce,
    /// Each checkpoint epoch's output commits in one transaction, once the checkpoint is
    /// stored, with a record of that checkpoint (a Kafka sink: the source offsets; a jdbc
    /// sink: a row of `runnel_checkpoints`): a restart resumes from the checkpoint whose
    /// output committed, so every result is written once.
    ExactlyOnce,
}

impl DeliveryGuarantee {
    /// Parses Flink's option value (`at-least-once`, `exactly-once`, `at-most-once`,
    /// `none`, which is at-most-once).
    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().replace('_', "-").as_str() {
            "at-most-once" | "none" => Some(Self::AtMostOnce),
            "at-least-once" => Some(Self::AtLeastOnce),
            "exactly-once" => Some(Self::ExactlyOnce),
            _ => None,
        }
    }
}
