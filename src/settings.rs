//! The `SET` keys Runnel reads, and how a session's settings become a job's [`JobConfig`].

use std::collections::BTreeMap;

use runnel_connectors::options::parse_duration;
use runnel_runtime::JobConfig;
use runnel_sql::Catalog;

use crate::error::{Result, RunnelError};

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

/// `SET 'execution.checkpointing.interval' = '10 s'`: Flink's key; with a checkpoint
/// directory, the job checkpoints this often.
pub const CHECKPOINT_INTERVAL: &str = "execution.checkpointing.interval";
/// `SET 'state.checkpoints.dir' = '/path'`: Flink's key for where checkpoints go (the CLI's
/// `--checkpoint-dir` sets it).
pub const CHECKPOINT_DIR: &str = "state.checkpoints.dir";

/// `SET 'parallelism.default' = '4'`: Flink's key; how many subtasks each operator runs
/// as (default: the machine's cores).
pub const PARALLELISM: &str = "parallelism.default";

/// Runnel's own keys; a `runnel.*` key outside this list is a typo and refused. Other keys
/// (Flink's) are recorded even when Runnel does not read them, so Flink scripts run.
const RUNNEL_KEYS: &[&str] = &[IDLE_WATERMARK_ADVANCE, LATE_DATA_SINK];

/// The most subtasks per operator a job may ask for (each is a task with its channels).
const MAX_PARALLELISM: usize = 1024;

/// The parallelism a job gets without `parallelism.default`: one subtask per core.
pub fn default_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn invalid(key: &str, value: &str, reason: impl Into<String>) -> RunnelError {
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
        IDLE_WATERMARK_ADVANCE | EARLY_FIRE_ENABLED => value
            .parse::<bool>()
            .map(drop)
            .map_err(|_| invalid(key, value, "expected 'true' or 'false'")),
        LATE_DATA_SINK => Ok(()), // resolved when a job starts: the table may come later
        other if other.starts_with("runnel.") => Err(invalid(
            key,
            value,
            format!("unknown Runnel setting; known: {}", RUNNEL_KEYS.join(", ")),
        )),
        _ => Ok(()),
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
    runnel_sql::PlanOptions {
        keep_columns,
        state_ttl_ms,
        allow_lateness_ms,
        early_fire_ms,
        upsert_materialize,
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
        }),
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
    Ok(config)
}
