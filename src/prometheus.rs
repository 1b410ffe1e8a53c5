//! Prometheus metrics of an engine's jobs: the text exposition format, and a small HTTP
//! endpoint serving it (`runnel run --metrics-addr`).

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::{Engine, JobInfo};

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
];

/// Escapes a label value (backslash, quote, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The jobs' metrics in Prometheus' text format, one series per job labelled with its id.
pub fn render(jobs: &[JobInfo]) -> String {
    let snapshots: Vec<_> = jobs.iter().map(|j| (j, j.metrics.snapshot())).collect();
    let mut out = String::new();
    for family in FAMILIES {
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
        for (job, metrics) in &snapshots {
            if let Some(value) = (family.value)(metrics) {
                let statement: String = job.statement.chars().take(120).collect();
                let _ = writeln!(
                    out,
                    "{}{{job=\"{}\",statement=\"{}\"}} {value}",
                    family.name,
                    job.id,
                    label(&statement)
                );
            }
        }
    }
    out
}

/// Serves `GET /metrics` (any path, in fact) on `addr` until the returned task is
/// aborted. Returns the address bound (useful with port 0).
pub async fn serve(
    engine: Arc<Engine>,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let mut stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // E.g. out of file descriptors: wait instead of spinning on the error.
                    tracing::warn!(error = %e, "metrics endpoint cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let engine = engine.clone();
            tokio::spawn(async move {
                // The request itself does not matter: read what came, answer with the metrics.
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                let body = render(&engine.jobs());
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok((bound, task))
}
