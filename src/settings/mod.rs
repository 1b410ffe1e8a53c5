//! The `SET` keys Runnel reads, and how a session's settings become a job's [`JobConfig`].

use std::collections::BTreeMap;

use runnel_connectors::options::parse_duration;
use runnel_runtime::JobConfig;
use runnel_sql::Catalog;

use crate::error::{Result, RunnelError};

pub mod restart;

/// `SET 'table.exec.source.idle-timeout' = '5 s'`: Flink's default idle timeout of sources.
pub const SOURCE_IDLE_TIMEOUT: &str = "table.exec.source.idle-timeout";
/// `SET 'table.exec.state.ttl' = '1 h'`: Flink's key; bounds joins that have no time bound.
pub const STATE_TTL: &str = "table.exec.state.ttl";
/// Window aggregates keep each window this long after it fired, updating its rows.
pub const ALLOW_LATENESS: &str = "table.exec.emit.allow-lateness";
/// `SET 'table.exec.sink.upsert-materialize' = 'AUTO'`: Flink's key; whether changes
/// going into a sink with a primary key are put in order per key first.
pub const UPSERT_MATERIALIZE: &str = "table.exec.sink.upsert-materialize";
/// `SET 'table.exec.emit.early-fire.enabled' = 'true'`: Flink's key; window aggregates
/// emit their running rows before the window ends.
pub const EARLY_FIRE_ENABLED: &str = "table.exec.emit.early-fire.enabled";
/// `SET 'table.exec.emit.early-fire.delay' = '1 min'`: how often (processing time); 0 =
/// after every batch.
pub const EARLY_FIRE_DELAY: &str = "table.exec.emit.early-fire.delay";
/// `SET 'runnel.watermark.idle-advance' = 'true'`: with every source partition idle, the
/// watermark follows the processing clock.
pub const IDLE_WATERMARK_ADVANCE: &str = "runnel.watermark.idle-advance";
/// `SET 'runnel.late-data.sink' = 'table'`: late rows are written to this table.
pub const LATE_DATA_SINK: &str = "runnel.late-data.sink";
/// `SET 'runnel.state.unbounded' = 'refuse'`: refuse plans whose state grows without
/// bound (a join of streams with no time bound) instead of running them with a warning
/// (`'warn'`, the default, as Flink runs them).
pub const UNBOUNDED_STATE: &str = "runnel.state.unbounded";

/// `SET 'table.optimizer.reuse-source-enabled' = 'false'`: Flink's key; by default a
/// table a query scans several times is read once for all its scans.
pub const REUSE_SOURCE: &str = "table.optimizer.reuse-source-enabled";
/// `SET 'table.optimizer.reuse-sub-plan-enabled' = 'false'`: Flink's key; by default a
/// part of a plan it holds twice (a view used twice) runs once for both uses.
pub const REUSE_SUB_PLAN: &str = "table.optimizer.reuse-sub-plan-enabled";

/// `SET 'execution.checkpointing.interval' = '10 s'`: Flink's key; with a checkpoint
/// directory, the job checkpoints this often.
pub const CHECKPOINT_INTERVAL: &str = "execution.checkpointing.interval";
/// `SET 'state.checkpoints.dir' = '/path'`: Flink's key for where checkpoints go (the CLI's
/// `--checkpoint-dir` sets it).
pub const CHECKPOINT_DIR: &str = "state.checkpoints.dir";
/// `SET 'execution.checkpointing.incremental' = 'true'`: Flink's key; a checkpoint writes
/// only what changed in a state since the previous one, built off the task, and merges
/// the chain into a full snapshot in the background (window aggregates; other operators
/// snapshot whole). Flink's older `state.backend.incremental` means the same.
pub const CHECKPOINT_INCREMENTAL: &str = "execution.checkpointing.incremental";
const CHECKPOINT_INCREMENTAL_OLD: &str = "state.backend.incremental";

/// `SET 'parallelism.default' = '4'`: Flink's key; how many subtasks each operator runs
/// as (default: the machine's cores).
pub const PARALLELISM: &str = "parallelism.default";

/// `SET 'execution.target' = 'kafka'`: the job runs as one member of a job spread over
/// the processes that start it under the same `pipeline.name` (see `runnel_cluster`);
/// `'local'` (the default) runs it in this process alone.
pub const EXECUTION_TARGET: &str = "execution.target";
/// `SET 'pipeline.name' = 'claims-5min'`: Flink's key; names a job spread over processes
/// (its consumer group and internal topics).
pub const PIPELINE_NAME: &str = "pipeline.name";
/// `SET 'pipeline.max-parallelism' = '12'`: Flink's key; how many key groups (tasks) each
/// keyed stage of a job spread over processes has.
pub const MAX_PARALLELISM_KEY: &str = "pipeline.max-parallelism";

/// `SET 'sql-client.execution.result-mode' = 'table' | 'changelog' | 'tableau'`: how the
/// shell shows a query's rows (Flink's SQL client's key): the current result redrawn in
/// place (the default), every change as a line with its kind, or rows as they come.
pub const RESULT_MODE: &str = "sql-client.execution.result-mode";

/// The shell's result modes, as [`RESULT_MODE`] names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResultMode {
    /// The current result as a table, redrawn in place as it changes.
    #[default]
    Table,
    /// Every change as its own line, with its kind (`+I`, `-U`, `+U`, `-D`).
    Changelog,
    /// Rows as a table that grows as they come (an updating query's with their kinds).
    Tableau,
}

impl ResultMode {
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "table" => Some(Self::Table),
            "changelog" => Some(Self::Changelog),
            "tableau" => Some(Self::Tableau),
            _ => None,
        }
    }
}

/// Flink's execution targets: accepted, and run locally.
const FLINK_TARGETS: &[&str] = &[
    "remote",
    "yarn-per-job",
    "yarn-session",
    "yarn-application",
    "kubernetes-session",
    "kubernetes-application",
];

/// `SET 'runnel.memory.limit' = '2 gb'`: the state a job may hold (default: half the
/// machine's memory); near it the job slows its sources, over it the job fails naming the
/// stage that holds the most.
pub const MEMORY_LIMIT: &str = runnel_runtime::memory::MEMORY_LIMIT;

/// Runnel's own keys; a `runnel.*` key outside this list is a typo and refused.
const RUNNEL_KEYS: &[&str] = &[
    IDLE_WATERMARK_ADVANCE,
    LATE_DATA_SINK,
    UNBOUNDED_STATE,
    MEMORY_LIMIT,
];

/// Flink's keys Runnel acts on (the SQL reference lists what each does).
const HONOURED_KEYS: &[&str] = &[
    SOURCE_IDLE_TIMEOUT,
    STATE_TTL,
    ALLOW_LATENESS,
    UPSERT_MATERIALIZE,
    EARLY_FIRE_ENABLED,
    EARLY_FIRE_DELAY,
    REUSE_SOURCE,
    REUSE_SUB_PLAN,
    CHECKPOINT_INTERVAL,
    CHECKPOINT_DIR,
    CHECKPOINT_INCREMENTAL,
    CHECKPOINT_INCREMENTAL_OLD,
    PARALLELISM,
    EXECUTION_TARGET,
    PIPELINE_NAME,
    MAX_PARALLELISM_KEY,
    RESULT_MODE,
];

/// Flink keys a Flink script may set that Runnel accepts without acting on them: setting
/// one warns, naming it. (A key of Flink's namespaces not listed here is accepted with a
/// warning too, unless it is a near miss of a listed key: then it is a typo.)
const IGNORED_FLINK_KEYS: &[&str] = &[
    "table.exec.mini-batch.enabled",
    "table.exec.mini-batch.allow-latency",
    "table.exec.mini-batch.size",
    "table.exec.resource.default-parallelism",
    "table.exec.sink.not-null-enforcer",
    "table.exec.sink.type-length-enforcer",
    "table.exec.sink.keyed-shuffle",
    "table.exec.async-lookup.buffer-capacity",
    "table.exec.async-lookup.timeout",
    "table.exec.async-lookup.output-mode",
    "table.exec.source.cdc-events-duplicate",
    "table.exec.legacy-cast-behaviour",
    "table.exec.simplify-operator-name-enabled",
    "table.exec.uid.generation",
    "table.exec.window-agg.buffer-size-limit",
    "table.exec.rank.topn-cache-size",
    "table.exec.interval-join.min-cleanup-interval",
    "table.exec.disabled-operators",
    "table.exec.spill-compression.enabled",
    "table.exec.spill-compression.block-size",
    "table.optimizer.agg-phase-strategy",
    "table.optimizer.distinct-agg.split.enabled",
    "table.optimizer.distinct-agg.split.bucket-num",
    "table.optimizer.join-reorder-enabled",
    "table.optimizer.source.predicate-pushdown-enabled",
    "table.optimizer.multiple-input-enabled",
    "table.optimizer.non-deterministic-update.strategy",
    "table.optimizer.incremental-agg-enabled",
    "table.dml-sync",
    "table.local-time-zone",
    "table.sql-dialect",
    "table.display.max-column-width",
    "table.dynamic-table-options.enabled",
    "table.generated-code.max-length",
    "execution.runtime-mode",
    "execution.checkpointing.mode",
    "execution.checkpointing.timeout",
    "execution.checkpointing.min-pause",
    "execution.checkpointing.max-concurrent-checkpoints",
    "execution.checkpointing.externalized-checkpoint-retention",
    "execution.checkpointing.tolerable-failed-checkpoints",
    "execution.checkpointing.unaligned.enabled",
    "execution.checkpointing.aligned-checkpoint-timeout",
    "execution.checkpointing.savepoint-dir",
    "execution.savepoint.path",
    "execution.savepoint.ignore-unclaimed-state",
    "execution.buffer-timeout.interval",
    "execution.attached",
    "pipeline.jars",
    "pipeline.classpaths",
    "pipeline.auto-watermark-interval",
    "pipeline.object-reuse",
    "pipeline.operator-chaining.enabled",
    "pipeline.global-job-parameters",
    "state.backend.type",
    "state.backend.local-recovery",
    "state.savepoints.dir",
    "state.checkpoints.num-retained",
    "state.checkpoint-storage",
    "sql-client.execution.max-table-result.rows",
    "sql-client.verbose",
    "sql-client.display.max-column-width",
    "taskmanager.numberOfTaskSlots",
    "taskmanager.memory.process.size",
    "taskmanager.memory.managed.fraction",
    "jobmanager.memory.process.size",
];

/// The namespaces of Flink's configuration: a key under one of them that Runnel does not
/// know is taken for a Flink key it does not act on (a warning), not for a typo.
const FLINK_NAMESPACES: &[&str] = &[
    "table.",
    "execution.",
    "pipeline.",
    "state.",
    "restart-strategy.",
    "sql-client.",
    "taskmanager.",
    "jobmanager.",
    "parallelism.",
    "rest.",
    "metrics.",
    "high-availability.",
    "python.",
    "security.",
    "cluster.",
    "kubernetes.",
    "yarn.",
    "env.",
    "web.",
    "heartbeat.",
    "pekko.",
    "akka.",
    "client.",
    "classloader.",
    "io.",
    "fs.",
    "blob.",
];

/// Edits (insertions, deletions, substitutions) between `a` and `b`, or `None` when they
/// are more than `limit` apart: the search for a nearest key stops early on keys that are
/// already farther than the best so far, so a long or odd key costs little to check.
fn edit_distance(a: &[char], b: &[char], limit: usize) -> Option<usize> {
    if a.len().abs_diff(b.len()) > limit {
        return None;
    }
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        if current.iter().min().is_some_and(|&least| least > limit) {
            return None;
        }
        std::mem::swap(&mut previous, &mut current);
    }
    Some(previous[b.len()]).filter(|&distance| distance <= limit)
}

/// The candidate nearest to `key` within `limit` edits, and how far it is; of candidates
/// equally near, the first. Candidates are tried nearest in length first, so the search
/// stops at the first whose length alone is farther than the best found.
fn nearest<'a>(
    key: &str,
    candidates: impl Iterator<Item = &'a &'static str>,
    limit: usize,
) -> Option<(&'static str, usize)> {
    let key: Vec<char> = key.chars().collect();
    let mut candidates: Vec<(usize, usize, &'static str)> = candidates
        .enumerate()
        .map(|(order, known)| (known.chars().count().abs_diff(key.len()), order, *known))
        .collect();
    candidates.sort_unstable();
    // The best so far: (distance, its place among the candidates, the key).
    let mut best: Option<(usize, usize, &'static str)> = None;
    for (length_difference, order, known) in candidates {
        let bound = best.map_or(limit, |(distance, _, _)| distance);
        if length_difference > bound {
            break;
        }
        let known_chars: Vec<char> = known.chars().collect();
        if let Some(distance) = edit_distance(&key, &known_chars, bound) {
            if best.is_none_or(|(d, o, _)| (distance, order) < (d, o)) {
                best = Some((distance, order, known));
            }
        }
    }
    best.map(|(distance, _, known)| (known, distance))
}

/// Every key Runnel knows.
fn known_keys() -> impl Iterator<Item = &'static &'static str> {
    RUNNEL_KEYS
        .iter()
        .chain(HONOURED_KEYS)
        .chain(restart::KEYS)
        .chain(IGNORED_FLINK_KEYS)
}

/// The known key nearest to `key`.
fn nearest_key(key: &str) -> &'static str {
    nearest(key, known_keys(), usize::MAX).map_or("", |(known, _)| known)
}

/// Whether `key` is one Runnel acts on.
fn is_honoured(key: &str) -> bool {
    RUNNEL_KEYS.contains(&key) || HONOURED_KEYS.contains(&key) || restart::KEYS.contains(&key)
}

/// Whether `key` is close enough to a known key (and not one) to be taken for a typo.
fn is_near_miss(key: &str) -> Option<&'static str> {
    nearest(key, known_keys(), 2.max(key.len() / 12))
        .and_then(|(known, distance)| (distance > 0).then_some(known))
}

/// What to tell a user who sets `key`, which Runnel accepts but does not act on (a Flink
/// key of a feature Runnel lacks or does differently); `None` for keys Runnel honours.
pub fn warning(key: &str) -> Option<String> {
    if is_honoured(key) {
        return None;
    }
    Some(format!(
        "'{key}' is a Flink setting Runnel accepts but does not act on; it is ignored \
         (the SQL reference lists the settings Runnel honours)"
    ))
}

/// The most subtasks per operator a job may ask for (each is a task with its channels).
const MAX_PARALLELISM: usize = 1024;

/// The most key groups (partitions of a repartition topic) a keyed stage may have.
const MAX_KEY_GROUPS: usize = 32768;

/// How often a job spread over processes commits without `execution.checkpointing.interval`.
const DEFAULT_COMMIT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// With `'execution.target' = 'kafka'`, how the job is spread over processes.
pub fn scale_out(settings: &BTreeMap<String, String>) -> Result<Option<runnel_cluster::ScaleOut>> {
    let target = settings
        .get(EXECUTION_TARGET)
        .map(|t| t.to_ascii_lowercase());
    if target.as_deref() != Some("kafka") {
        return Ok(None);
    }
    let job = settings.get(PIPELINE_NAME).ok_or_else(|| {
        invalid(
            EXECUTION_TARGET,
            "kafka",
            "a job spread over processes needs a name: SET 'pipeline.name' = '...' (every \
             process of the job uses the same)",
        )
    })?;
    Ok(Some(runnel_cluster::ScaleOut {
        job: job.clone(),
        local_dir: settings.get(CHECKPOINT_DIR).map(std::path::PathBuf::from),
        threads: settings
            .get(PARALLELISM)
            .and_then(|v| v.trim().parse().ok())
            .filter(|&n: &usize| (1..=MAX_PARALLELISM).contains(&n))
            .unwrap_or(1),
        max_parallelism: settings
            .get(MAX_PARALLELISM_KEY)
            .and_then(|v| v.trim().parse().ok()),
        commit_interval: settings
            .get(CHECKPOINT_INTERVAL)
            .and_then(|v| parse_duration(v))
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_COMMIT_INTERVAL),
    }))
}

/// The parallelism a job gets without `parallelism.default`: one subtask per core.
pub fn default_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub(crate) fn invalid(key: &str, value: &str, reason: impl Into<String>) -> RunnelError {
    RunnelError::Setting {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Checks one `SET` when it is made, so a bad value fails at the statement that set it.
pub fn check(key: &str, value: &str) -> Result<()> {
    match key {
        SOURCE_IDLE_TIMEOUT | STATE_TTL | ALLOW_LATENESS | CHECKPOINT_INTERVAL
        | EARLY_FIRE_DELAY => parse_duration(value).map(drop).ok_or_else(|| {
            invalid(
                key,
                value,
                "expected a duration such as '500 ms', '5 s' or '1 min'",
            )
        }),
        PARALLELISM => match value.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_PARALLELISM).contains(&n) => Ok(()),
            _ => Err(invalid(
                key,
                value,
                format!("expected a whole number of subtasks from 1 to {MAX_PARALLELISM}"),
            )),
        },
        UPSERT_MATERIALIZE => runnel_sql::UpsertMaterialize::parse(value)
            .map(drop)
            .ok_or_else(|| invalid(key, value, "expected 'NONE', 'AUTO' or 'FORCE'")),
        IDLE_WATERMARK_ADVANCE
        | EARLY_FIRE_ENABLED
        | REUSE_SOURCE
        | REUSE_SUB_PLAN
        | CHECKPOINT_INCREMENTAL
        | CHECKPOINT_INCREMENTAL_OLD => value
            .parse::<bool>()
            .map(drop)
            .map_err(|_| invalid(key, value, "expected 'true' or 'false'")),
        LATE_DATA_SINK => Ok(()), // resolved when a job starts: the table may come later
        EXECUTION_TARGET => match value.to_ascii_lowercase().as_str() {
            "local" | "kafka" => Ok(()),
            target if FLINK_TARGETS.contains(&target) => Ok(()),
            _ => Err(invalid(
                key,
                value,
                "expected 'local' (this process) or 'kafka' (one job over every process \
                 started with the same 'pipeline.name')",
            )),
        },
        PIPELINE_NAME => runnel_cluster::topology::check_job_name(value)
            .map_err(|e| invalid(key, value, e.to_string())),
        MAX_PARALLELISM_KEY => match value.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_KEY_GROUPS).contains(&n) => Ok(()),
            _ => Err(invalid(
                key,
                value,
                format!("expected a whole number of key groups from 1 to {MAX_KEY_GROUPS}"),
            )),
        },
        RESULT_MODE => ResultMode::parse(value)
            .map(drop)
            .ok_or_else(|| invalid(key, value, "expected 'table', 'changelog' or 'tableau'")),
        MEMORY_LIMIT => runnel_runtime::memory::parse_size(value)
            .map(drop)
            .ok_or_else(|| invalid(key, value, "expected a size such as '512 mb' or '2 gb'")),
        UNBOUNDED_STATE => match value.to_ascii_lowercase().as_str() {
            "warn" | "refuse" => Ok(()),
            _ => Err(invalid(key, value, "expected 'warn' or 'refuse'")),
        },
        other if restart::KEYS.contains(&other) => restart::check(key, value),
        other if other.starts_with("runnel.") => Err(invalid(
            key,
            value,
            format!(
                "unknown Runnel setting; the nearest is '{}' (known: {})",
                nearest(other, RUNNEL_KEYS.iter(), usize::MAX).map_or("", |(known, _)| known),
                RUNNEL_KEYS.join(", ")
            ),
        )),
        other if IGNORED_FLINK_KEYS.contains(&other) => Ok(()),
        other => match is_near_miss(other) {
            Some(nearest) => Err(invalid(
                key,
                value,
                format!("unknown setting; did you mean '{nearest}'?"),
            )),
            None if FLINK_NAMESPACES.iter().any(|n| other.starts_with(n)) => Ok(()),
            None => Err(invalid(
                key,
                value,
                format!(
                    "unknown setting: neither Runnel's nor Flink's (the nearest known is '{}')",
                    nearest_key(other)
                ),
            )),
        },
    }
}

/// The planning options a query planned now gets from the session's settings.
pub fn plan_options(
    settings: &BTreeMap<String, String>,
    catalog: &Catalog,
) -> runnel_sql::PlanOptions {
    let keep_columns = settings
        .get(LATE_DATA_SINK)
        .and_then(|name| catalog.table(name))
        .map(|table| {
            table
                .physical_schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        })
        .unwrap_or_default();
    let state_ttl_ms = settings
        .get(STATE_TTL)
        .and_then(|value| parse_duration(value))
        .filter(|d| !d.is_zero())
        .map(|d| d.as_millis() as i64);
    let allow_lateness_ms = settings
        .get(ALLOW_LATENESS)
        .and_then(|value| parse_duration(value))
        .filter(|d| !d.is_zero())
        .map(|d| d.as_millis() as i64);
    let early_fire_ms = (settings.get(EARLY_FIRE_ENABLED).map(String::as_str) == Some("true"))
        .then(|| {
            settings
                .get(EARLY_FIRE_DELAY)
                .and_then(|value| parse_duration(value))
                .map_or(0, |d| d.as_millis() as i64)
        });
    let upsert_materialize = settings
        .get(UPSERT_MATERIALIZE)
        .and_then(|value| runnel_sql::UpsertMaterialize::parse(value))
        .unwrap_or_default();
    let refuse_unbounded_state = settings
        .get(UNBOUNDED_STATE)
        .is_some_and(|value| value.eq_ignore_ascii_case("refuse"));
    // Flink's reuse keys default to on: only an explicit 'false' turns one off.
    let turned_off = |key: &str| {
        settings
            .get(key)
            .is_some_and(|value| value.trim().eq_ignore_ascii_case("false"))
    };
    let separate_source_reads = turned_off(REUSE_SOURCE);
    let separate_sub_plans = turned_off(REUSE_SUB_PLAN);
    runnel_sql::PlanOptions {
        keep_columns,
        separate_source_reads,
        separate_sub_plans,
        state_ttl_ms,
        allow_lateness_ms,
        early_fire_ms,
        upsert_materialize,
        refuse_unbounded_state,
    }
}

/// The configuration a job started now gets from the session's settings.
pub fn job_config(settings: &BTreeMap<String, String>, catalog: &Catalog) -> Result<JobConfig> {
    let mut config = JobConfig {
        parallelism: settings
            .get(PARALLELISM)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(default_parallelism),
        ..JobConfig::default()
    };
    if let Some(value) = settings.get(SOURCE_IDLE_TIMEOUT) {
        // A zero timeout is Flink's way to say "never idle".
        config.source_idle_timeout = parse_duration(value).filter(|d| !d.is_zero());
    }
    if let Some(value) = settings.get(IDLE_WATERMARK_ADVANCE) {
        config.idle_watermark_advance = value == "true";
    }
    if let Some(table) = settings.get(LATE_DATA_SINK) {
        let sink = catalog.require_table(table).map_err(|e| {
            invalid(
                LATE_DATA_SINK,
                table,
                format!("{e}; declare the table with CREATE TABLE first"),
            )
        })?;
        config.late_data_sink = Some(sink);
    }
    let interval = settings
        .get(CHECKPOINT_INTERVAL)
        .and_then(|v| parse_duration(v))
        .filter(|d| !d.is_zero());
    let dir = settings.get(CHECKPOINT_DIR);
    config.checkpoint = match (interval, dir) {
        (Some(interval), Some(dir)) => Some(runnel_runtime::CheckpointConfig {
            dir: std::path::PathBuf::from(dir.strip_prefix("file://").unwrap_or(dir)),
            interval,
            incremental: [CHECKPOINT_INCREMENTAL, CHECKPOINT_INCREMENTAL_OLD]
                .iter()
                .find_map(|key| settings.get(*key))
                .is_some_and(|value| value.trim() == "true"),
        }),
        // A job spread over processes keeps its state in Kafka, not in a directory.
        (Some(_), None) if scale_out(settings)?.is_some() => None,
        (Some(_), None) => {
            return Err(invalid(
                CHECKPOINT_INTERVAL,
                settings.get(CHECKPOINT_INTERVAL).map_or("", String::as_str),
                "checkpoints need a directory: runnel run --checkpoint-dir DIR, or \
                 SET 'state.checkpoints.dir' = '/path'",
            ))
        }
        _ => None,
    };
    config.restart = restart::strategy(settings);
    config.memory_limit = match settings.get(MEMORY_LIMIT) {
        Some(value) => runnel_runtime::memory::parse_size(value),
        None => runnel_runtime::memory::default_limit(),
    };
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn distance(a: &str, b: &str, limit: usize) -> Option<usize> {
        let chars = |s: &str| s.chars().collect::<Vec<_>>();
        edit_distance(&chars(a), &chars(b), limit)
    }

    #[test]
    fn edit_distance_counts_edits_up_to_its_limit() {
        assert_eq!(distance("kitten", "sitting", 5), Some(3));
        assert_eq!(distance("kitten", "sitting", 3), Some(3));
        assert_eq!(distance("kitten", "sitting", 2), None);
        assert_eq!(distance("", "abc", 3), Some(3));
        assert_eq!(distance("é", "e", 1), Some(1));
        assert_eq!(distance(&"x".repeat(10_000), "pipeline.name", 3), None);
    }

    #[test]
    fn a_typo_names_the_key_it_is_near() {
        // Equally near 'execution.target': the first known key wins.
        assert_eq!(
            nearest_key("checkpoint.interval"),
            "execution.checkpointing.interval"
        );
        assert_eq!(is_near_miss("pipeline.nmae"), Some(PIPELINE_NAME));
        assert_eq!(is_near_miss(PIPELINE_NAME), None);
        assert_eq!(nearest_key("table.exec.state.tll"), "table.exec.state.ttl");
        assert_eq!(is_near_miss(&"table.".repeat(1_000)), None);
    }
}
