//! The job's memory budget (`SET 'runnel.memory.limit'`): the state its operators hold,
//! as they measure it, against a limit. Near it the job slows its sources and logs which
//! stage holds what; over it the job fails with an error naming the stage, its state and
//! the setting — instead of growing until the kernel kills the process.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{Result, RuntimeError};

/// The setting that sets the limit.
pub const MEMORY_LIMIT: &str = "runnel.memory.limit";

/// Above this share of the limit the job is under pressure: its sources slow down and a
/// warning names the stages' state.
const PRESSURE_SHARE: f64 = 0.8;

/// How long a source waits before each read while the job is under pressure.
pub const PRESSURE_PAUSE: Duration = Duration::from_millis(10);

/// A job's memory limit and where its state stands against it.
#[derive(Debug, Default)]
pub struct MemoryBudget {
    /// Bytes of state the job may hold; 0: no limit.
    limit: AtomicU64,
    /// Whether the state is above [`PRESSURE_SHARE`] of the limit.
    pressure: AtomicBool,
    /// Whether the warning for this stretch of pressure was logged.
    warned: AtomicBool,
}

impl MemoryBudget {
    pub fn set_limit(&self, bytes: Option<u64>) {
        self.limit.store(bytes.unwrap_or(0), Ordering::Relaxed);
    }

    pub fn limit(&self) -> Option<u64> {
        Some(self.limit.load(Ordering::Relaxed)).filter(|&l| l > 0)
    }

    /// Whether sources should slow down (see [`PRESSURE_PAUSE`]).
    pub fn under_pressure(&self) -> bool {
        self.pressure.load(Ordering::Relaxed)
    }

    /// Checks the job's state, `total` bytes, against the limit; `stages` lists each
    /// stage's operators and state (asked for only near or over the limit). Over it: the
    /// error that fails the job, naming the stage holding the most.
    pub fn check(&self, total: u64, stages: impl FnOnce() -> Vec<(String, u64)>) -> Result<()> {
        let Some(limit) = self.limit() else {
            return Ok(());
        };
        if total > limit {
            let stages = stages();
            let (stage, held) = stages
                .iter()
                .max_by_key(|(_, bytes)| *bytes)
                .cloned()
                .unwrap_or_default();
            return Err(RuntimeError::MemoryLimit(format!(
                "the job's state, {}, is over '{MEMORY_LIMIT}' = {}; the most is held by {stage}: \
                 {}. Raise the limit, or bound the state (a window, 'table.exec.state.ttl')",
                size(total),
                size(limit),
                size(held)
            )));
        }
        let pressed = total as f64 > limit as f64 * PRESSURE_SHARE;
        self.pressure.store(pressed, Ordering::Relaxed);
        if !pressed {
            self.warned.store(false, Ordering::Relaxed);
        } else if !self.warned.swap(true, Ordering::Relaxed) {
            let held: Vec<String> = stages()
                .into_iter()
                .filter(|(_, bytes)| *bytes > 0)
                .map(|(stage, bytes)| format!("{stage}: {}", size(bytes)))
                .collect();
            tracing::warn!(
                state = %size(total),
                limit = %size(limit),
                stages = %held.join("; "),
                "the job's state is near '{MEMORY_LIMIT}'; its sources slow down"
            );
        }
        Ok(())
    }
}

/// Bytes for people: `512 B`, `3.2 MB`, `1.5 GB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The limit a job gets without the setting: half the machine's memory (Linux's
/// `/proc/meminfo`); none where it cannot be read.
pub fn default_limit() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let total_kb: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(total_kb * 1024 / 2)
}

/// Parses a memory size as Flink writes them: `512 mb`, `64MB`, `1g`, `2 gb`,
/// `1048576` (bytes).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "b" | "bytes" => 1,
        "k" | "kb" | "kibibytes" => 1 << 10,
        "m" | "mb" | "mebibytes" => 1 << 20,
        "g" | "gb" | "gibibytes" => 1 << 30,
        "t" | "tb" | "tebibytes" => 1 << 40,
        _ => return None,
    };
    let bytes = number * factor as f64;
    (bytes.is_finite() && bytes >= 1.0).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_flink_writes_them() {
        assert_eq!(parse_size("512 mb"), Some(512 << 20));
        assert_eq!(parse_size("64MB"), Some(64 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("1.5 gb"), Some(3 << 29));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("0"), None);
        assert_eq!(size(3 << 20), "3.0 MB");
    }

    #[test]
    fn over_the_limit_names_the_stage_holding_most() {
        let budget = MemoryBudget::default();
        budget.set_limit(Some(1000));
        let stages = || {
            vec![
                ("stage 1 (Source)".into(), 10),
                ("stage 2 (GroupAggregate)".into(), 990),
            ]
        };
        assert!(budget.check(500, stages).is_ok());
        assert!(!budget.under_pressure());
        assert!(budget.check(900, stages).is_ok());
        assert!(budget.under_pressure());
        let error = budget
            .check(1001, stages)
            .map_err(|e| e.to_string())
            .unwrap_err();
        assert!(error.contains("stage 2 (GroupAggregate): 990 B"), "{error}");
        assert!(error.contains("'runnel.memory.limit' = 1000 B"), "{error}");
    }
}
