//! `'connector' = 'script'`: a bounded source that replays a script file — rows of several
//! partitions interleaved with explicit watermarks, idle and end markers, and ticks of the
//! processing clock. It makes event-time behaviour reproducible in tests and demos.
//!
//! A script is read line by line:
//!
//! ```text
//! # a comment
//! {"k": 1, "ts": "2026-01-01 00:00:01"}    a row (in the table's format) of the current partition
//! ---                                     ends the current batch
//! @partition 1                            following rows belong to partition 1 (default 0)
//! @watermark 2026-01-01 00:05:00          the current partition's watermark moves here
//! @idle                                   the current partition goes idle
//! @finish                                 the current partition has no more rows
//! @clock 2026-01-01 00:10:00              the processing clock reads this time
//! ```
//!
//! Consecutive rows of one partition form one batch; a marker or a change of partition
//! ends it. Times are `yyyy-MM-dd HH:mm:ss[.SSS]` (UTC) or epoch milliseconds.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use runnel_runtime::{JobMetrics, Source, SourceBatch, SourceEvent};
use runnel_sql::TableDef;

use crate::error::{ConnectorError, Result};
use crate::format::{Format, FORMAT_OPTIONS};
use crate::options::TableOptions;

/// Partitions a script may name (each costs a watermark slot).
const MAX_PARTITIONS: usize = 1024;

/// Options the script connector accepts (besides the format's).
pub const OPTIONS: &[&str] = &["path", "partitions"];

pub(crate) fn options(table: &TableDef) -> Result<TableOptions<'_>> {
    let valid: Vec<&str> = OPTIONS.iter().chain(FORMAT_OPTIONS).copied().collect();
    let options = TableOptions::validate(&table.name, "script", &table.options, &valid, &[])?;
    options.required("path")?;
    Format::for_reading(&options, table)?;
    Ok(options)
}

/// One step of a script, before its rows are decoded.
#[derive(Debug)]
enum Step {
    Rows {
        partition: usize,
        /// `(line number, record)`.
        records: Vec<(usize, String)>,
    },
    Watermark(usize, i64),
    Idle(usize),
    Finish(usize),
    Clock(i64),
}

fn parse_script(path: &str, text: &str) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    let mut partition = 0;
    let mut rows: Vec<(usize, String)> = Vec::new();
    let flush = |steps: &mut Vec<Step>, rows: &mut Vec<(usize, String)>, partition| {
        if !rows.is_empty() {
            steps.push(Step::Rows {
                partition,
                records: std::mem::take(rows),
            });
        }
    };
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        let bad = |reason: String| ConnectorError::Decode {
            place: format!("{path} line {number}"),
            reason,
        };
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "---" {
            flush(&mut steps, &mut rows, partition);
            continue;
        }
        let Some(marker) = line.strip_prefix('@') else {
            rows.push((number, line.to_string()));
            continue;
        };
        flush(&mut steps, &mut rows, partition);
        let (name, argument) = marker.split_once(' ').unwrap_or((marker, ""));
        let time = || {
            crate::format::parse_time(argument).ok_or_else(|| {
                bad(format!(
                    "@{name} needs a time as 'yyyy-MM-dd HH:mm:ss[.SSS]' or epoch milliseconds, got '{argument}'"
                ))
            })
        };
        match name {
            "partition" => {
                partition = argument
                    .trim()
                    .parse()
                    .ok()
                    .filter(|&p: &usize| p < MAX_PARTITIONS)
                    .ok_or_else(|| {
                        bad(format!(
                            "@partition needs a partition number below {MAX_PARTITIONS}, got '{argument}'"
                        ))
                    })?
            }
            "watermark" => steps.push(Step::Watermark(partition, time()?)),
            "clock" => steps.push(Step::Clock(time()?)),
            "idle" => steps.push(Step::Idle(partition)),
            "finish" => steps.push(Step::Finish(partition)),
            other => {
                return Err(bad(format!(
                    "unknown marker @{other}; expected @partition, @watermark, @idle, @finish or @clock"
                )))
            }
        }
    }
    flush(&mut steps, &mut rows, partition);
    Ok(steps)
}

/// Replays a script: every step in order, rows decoded as they are reached.
pub struct ScriptSource {
    table: TableDef,
    path: String,
    format: Format,
    partitions: usize,
    steps: std::vec::IntoIter<Step>,
    /// Steps replayed so far (the source's position).
    replayed: usize,
    replays_clock: bool,
    metrics: Arc<JobMetrics>,
}

impl ScriptSource {
    pub fn open(
        table: &TableDef,
        metrics: Arc<JobMetrics>,
        start: Option<&runnel_runtime::SourceState>,
    ) -> Result<Self> {
        let options = options(table)?;
        let format = Format::for_reading(&options, table)?;
        let path = options.required("path")?;
        let text =
            std::fs::read_to_string(Path::new(path)).map_err(|source| ConnectorError::Io {
                path: path.to_string(),
                source,
            })?;
        let steps = parse_script(path, &text)?;
        let used = steps
            .iter()
            .filter_map(|s| match s {
                Step::Rows { partition, .. }
                | Step::Watermark(partition, _)
                | Step::Idle(partition)
                | Step::Finish(partition) => Some(partition + 1),
                Step::Clock(_) => None,
            })
            .max()
            .unwrap_or(1);
        let partitions = options.parse_or("partitions", used)?;
        if partitions > MAX_PARTITIONS {
            return Err(options.invalid(
                "partitions",
                &partitions.to_string(),
                format!("at most {MAX_PARTITIONS}"),
            ));
        }
        if partitions < used {
            return Err(options.invalid(
                "partitions",
                &partitions.to_string(),
                format!("the script uses partition {}", used - 1),
            ));
        }
        // A restored job resumes after the steps the checkpoint's rows came from (its
        // position is the number of steps replayed, recorded on every partition).
        let skip = start
            .map(|s| {
                s.offsets
                    .iter()
                    .flatten()
                    .copied()
                    .max()
                    .unwrap_or(0)
                    .max(0) as usize
            })
            .unwrap_or(0);
        let replays_clock = steps.iter().any(|s| matches!(s, Step::Clock(_)));
        let mut steps = steps.into_iter();
        if skip > 0 {
            steps.nth(skip - 1);
        }
        Ok(Self {
            table: table.clone(),
            path: path.to_string(),
            format,
            partitions,
            replays_clock,
            steps,
            replayed: skip,
            metrics,
        })
    }
}

#[async_trait]
impl Source for ScriptSource {
    fn partitions(&self) -> usize {
        self.partitions
    }

    fn replays_clock(&self) -> bool {
        self.replays_clock
    }

    async fn next_event(&mut self) -> runnel_runtime::Result<Option<SourceEvent>> {
        let Some(step) = self.steps.next() else {
            return Ok(None);
        };
        self.replayed += 1;
        Ok(Some(match step {
            Step::Rows { partition, records } => {
                let bytes: Vec<&[u8]> = records.iter().map(|(_, r)| r.as_bytes()).collect();
                let decoded = self
                    .format
                    .decode(&self.table, &bytes, |i| {
                        format!("{} line {}", self.path, records[i].0)
                    })
                    .map_err(|e| e.in_context(format!("script {}", self.path)))?;
                JobMetrics::add(&self.metrics.bad_records, decoded.skipped);
                let dead_letters = decoded
                    .dead_letters(&self.table.name, &bytes, |i| {
                        (
                            Some(self.path.as_str()),
                            Some(partition as i32),
                            Some(records[i].0 as i64),
                        )
                    })
                    .map_err(|e| e.in_context(format!("script {}", self.path)))?;
                SourceEvent::Batch(SourceBatch {
                    partition,
                    batch: decoded.batch,
                    next_offset: Some(self.replayed as i64),
                    dead_letters,
                })
            }
            Step::Watermark(partition, watermark) => SourceEvent::Watermark {
                partition,
                watermark,
            },
            Step::Idle(partition) => SourceEvent::PartitionIdle(partition),
            Step::Finish(partition) => SourceEvent::PartitionFinished(partition),
            Step::Clock(now) => SourceEvent::Clock(now),
        }))
    }
}

/// `'connector' = 'script'`: replays rows, watermarks and clock readings for tests.
pub struct ScriptConnector;

#[async_trait]
impl crate::Connector for ScriptConnector {
    fn name(&self) -> &'static str {
        "script"
    }

    fn validate(&self, table: &TableDef) -> Result<()> {
        options(table).map(drop)
    }

    fn is_bounded(&self, _table: &TableDef) -> bool {
        true
    }

    async fn open_source(
        &self,
        table: &TableDef,
        context: crate::SourceContext<'_>,
    ) -> Result<Box<dyn runnel_runtime::Source>> {
        Ok(Box::new(ScriptSource::open(
            table,
            context.metrics,
            context.start,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_end_batches_and_carry_their_partition() {
        let steps = parse_script(
            "s",
            "{\"a\":1}\n{\"a\":2}\n@partition 1\n{\"a\":3}\n@watermark 2026-01-01 00:00:01\n@idle\n@clock 1000\n",
        )
        .unwrap();
        let summary: Vec<String> = steps
            .iter()
            .map(|s| match s {
                Step::Rows { partition, records } => {
                    format!("rows p{partition} x{}", records.len())
                }
                Step::Watermark(p, w) => format!("wm p{p} {w}"),
                Step::Idle(p) => format!("idle p{p}"),
                Step::Finish(p) => format!("finish p{p}"),
                Step::Clock(t) => format!("clock {t}"),
            })
            .collect();
        assert_eq!(
            summary,
            [
                "rows p0 x2",
                "rows p1 x1",
                "wm p1 1767225601000",
                "idle p1",
                "clock 1000"
            ]
        );
    }

    #[test]
    fn a_bad_marker_names_its_line() {
        let err = parse_script("s.script", "{}\n@wat 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("s.script line 2"), "{err}");
        assert!(err.contains("@wat"), "{err}");
        let err = parse_script("s.script", "@watermark soon\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1") && err.contains("soon"), "{err}");
    }
}
