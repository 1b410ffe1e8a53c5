//! Prometheus metrics of an engine's jobs in the text exposition format (served over
//! HTTP by `runnel-server`: `runnel run --metrics-addr` and `runnel serve`).

use std::fmt::Write;

use crate::JobInfo;

/// One metric family: name, type, help, and each job's value (`None`: not known yet).
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&runnel_runtime::MetricsSnapshot) -> Option<f64>,
}

const FAMILIES: &[Family] = &[
    Family {
        name: "runnel_rows_in_total",
        kind: "counter",
        help: "Rows the job's sources produced.",
        value: |m| Some(m.rows_in as f64),
    },
    Family {
        name: "runnel_rows_out_total",
        kind: "counter",
        help: "Rows the job's sink received.",
        value: |m| Some(m.rows_out as f64),
    },
    Family {
        name: "runnel_late_rows_total",
        kind: "counter",
        help: "Rows that arrived after their window was final (dropped or routed).",
        value: |m| Some(m.late_rows as f64),
    },
    Family {
        name: "runnel_late_rows_routed_total",
        kind: "counter",
        help: "Late rows written to the late-data sink.",
        value: |m| Some(m.late_rows_routed as f64),
    },
    Family {
        name: "runnel_bad_records_total",
        kind: "counter",
        help: "Records that could not be decoded and were skipped.",
        value: |m| Some(m.bad_records as f64),
    },
    Family {
        name: "runnel_checkpoints_total",
        kind: "counter",
        help: "Checkpoints completed.",
        value: |m| Some(m.checkpoints as f64),
    },
    Family {
        name: "runnel_watermark_milliseconds",
        kind: "gauge",
        help: "The job's watermark at its sink, in ms since the epoch.",
        value: |m| m.watermark.filter(|w| *w < i64::MAX).map(|w| w as f64),
    },
    Family {
        name: "runnel_watermark_lag_milliseconds",
        kind: "gauge",
        help: "How far the watermark is behind the wall clock.",
        value: |m| m.watermark_lag_ms.map(|l| l as f64),
    },
    Family {
        name: "runnel_state_bytes",
        kind: "gauge",
        help: "About how many bytes of state the job's operators hold.",
        value: |m| Some(m.state_bytes as f64),
    },
    Family {
        name: "runnel_tasks_owned",
        kind: "gauge",
        help: "A job spread over processes: how many of its tasks this process owns.",
        value: |m| m.tasks_owned.map(|t| t as f64),
    },
    Family {
        name: "runnel_dead_letters_total",
        kind: "counter",
        help: "Records that could not be decoded, written to a dead-letter table.",
        value: |m| Some(m.dead_letters as f64),
    },
    Family {
        name: "runnel_restarts_total",
        kind: "counter",
        help: "Times the job failed and its restart strategy started it again.",
        value: |m| Some(m.restarts as f64),
    },
];

/// Escapes a label value (backslash, quote, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One job's series: its `job` and `statement` labels, its counters, and its stages'.
pub struct Series {
    pub job: String,
    pub statement: String,
    pub metrics: runnel_runtime::MetricsSnapshot,
    pub stages: Vec<runnel_runtime::metrics::StageSnapshot>,
}

impl Series {
    /// The series of a job's `metrics`, labelled `job` and `statement`.
    pub fn of(job: String, statement: String, metrics: &runnel_runtime::JobMetrics) -> Self {
        Self {
            job,
            statement,
            metrics: metrics.snapshot(),
            stages: metrics.stages(),
        }
    }
}

impl From<&JobInfo> for Series {
    fn from(job: &JobInfo) -> Self {
        Self::of(job.id.to_string(), job.statement.clone(), &job.metrics)
    }
}

/// One metric family of a job's stages: each stage's value, labelled with its id.
struct StageFamily {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&runnel_runtime::metrics::StageSnapshot) -> f64,
}

const STAGE_FAMILIES: &[StageFamily] = &[
    StageFamily {
        name: "runnel_stage_state_bytes",
        kind: "gauge",
        help: "About how many bytes of state the stage's operators hold.",
        value: |s| s.state_bytes as f64,
    },
    StageFamily {
        name: "runnel_stage_checkpoint_bytes",
        kind: "gauge",
        help: "Bytes the stage's operators wrote into the last checkpoint.",
        value: |s| s.checkpoint_bytes as f64,
    },
    StageFamily {
        name: "runnel_stage_checkpoint_stall_milliseconds",
        kind: "gauge",
        help: "The longest pause of a subtask of the stage at the last checkpoint barrier.",
        value: |s| s.checkpoint_stall_ms,
    },
];

/// The jobs' metrics in Prometheus' text format, one series per job labelled with its id.
pub fn render(jobs: &[JobInfo]) -> String {
    render_series(&jobs.iter().map(Series::from).collect::<Vec<_>>())
}

/// [`render`] over series labelled by the caller (a server numbers its jobs itself).
pub fn render_series(series: &[Series]) -> String {
    let mut out = String::new();
    for family in FAMILIES {
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
        for one in series {
            if let Some(value) = (family.value)(&one.metrics) {
                let statement: String = one.statement.chars().take(120).collect();
                let _ = writeln!(
                    out,
                    "{}{{job=\"{}\",statement=\"{}\"}} {value}",
                    family.name,
                    label(&one.job),
                    label(&statement)
                );
            }
        }
    }
    for family in STAGE_FAMILIES {
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
        for one in series {
            for stage in &one.stages {
                let _ = writeln!(
                    out,
                    "{}{{job=\"{}\",stage=\"{}\",operators=\"{}\"}} {}",
                    family.name,
                    label(&one.job),
                    stage.description.id,
                    label(&stage.description.operators.join(" → ")),
                    (family.value)(stage)
                );
            }
        }
    }
    out
}
