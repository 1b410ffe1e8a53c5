//! How a running job shows its progress: a status line redrawn every second on a
//! terminal, a structured log line every ten seconds elsewhere.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use runnel::runtime::JobMetrics;
use runnel::MetricsSnapshot;

/// Clears the terminal line (before printing a row over a status line).
pub const CLEAR_LINE: &str = "\x1b[2K\r";

/// A number with thousands separators: `12,345`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as `512 B`, `14.2 KB`, `3.1 MB`, `1.2 GB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KB", "MB", "GB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A watermark as wall-clock time (UTC), `—` before the first, `end` at end of input.
pub fn watermark(w: Option<i64>) -> String {
    match w {
        None => "—".into(),
        Some(i64::MAX) => "end".into(),
        Some(ms) => chrono::DateTime::from_timestamp_millis(ms)
            .map_or_else(|| ms.to_string(), |t| t.format("%H:%M:%S%.3f").to_string()),
    }
}

/// One line on the job's progress since `previous` (`seconds` ago).
pub fn line(name: &str, now: &MetricsSnapshot, previous: &MetricsSnapshot, seconds: f64) -> String {
    let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / seconds.max(1e-9);
    let lag = now.watermark_lag_ms.map_or_else(String::new, |l| {
        format!(" (lag {:.1} s)", l as f64 / 1000.0)
    });
    let late = if now.late_rows > 0 {
        format!(" · {} late", grouped(now.late_rows))
    } else {
        String::new()
    };
    let tasks = now
        .tasks_owned
        .map_or_else(String::new, |t| format!(" · {t} tasks here"));
    let restarts = match now.restarts {
        0 => String::new(),
        1 => " · restarted once".to_string(),
        n => format!(" · restarted {n} times"),
    };
    format!(
        "{name} · {} rows in ({}/s) · {} out ({}/s) · watermark {}{lag} · state {}{late}{tasks}{restarts}",
        grouped(now.rows_in),
        grouped(rate(now.rows_in, previous.rows_in) as u64),
        grouped(now.rows_out),
        grouped(rate(now.rows_out, previous.rows_out) as u64),
        watermark(now.watermark),
        bytes(now.state_bytes),
    )
}

/// Reports `jobs`' progress until aborted: on a terminal a line redrawn every second on
/// stderr; elsewhere an `info` log line every ten seconds.
pub fn spawn(jobs: Vec<(String, Arc<JobMetrics>)>) -> tokio::task::JoinHandle<()> {
    let terminal = std::io::stderr().is_terminal();
    let every = if terminal {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    };
    tokio::spawn(async move {
        let mut previous: Vec<MetricsSnapshot> = jobs.iter().map(|(_, m)| m.snapshot()).collect();
        let mut at = Instant::now();
        loop {
            tokio::time::sleep(every).await;
            let seconds = at.elapsed().as_secs_f64();
            at = Instant::now();
            let lines: Vec<String> = jobs
                .iter()
                .zip(previous.iter_mut())
                .map(|((name, metrics), previous)| {
                    let now = metrics.snapshot();
                    let text = line(name, &now, previous, seconds);
                    if !terminal {
                        tracing::info!(
                            target: "runnel::status",
                            job = %name,
                            rows_in = now.rows_in,
                            rows_out = now.rows_out,
                            late_rows = now.late_rows,
                            // Left out while unknown (no watermark yet, no tasks owned).
                            watermark = now.watermark,
                            watermark_lag_ms = now.watermark_lag_ms,
                            state_bytes = now.state_bytes,
                            tasks_owned = now.tasks_owned,
                            restarts = now.restarts,
                            "progress"
                        );
                    }
                    *previous = now;
                    text
                })
                .collect();
            if terminal {
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "{CLEAR_LINE}{}\r", lines.join(" | "));
                let _ = err.flush();
            }
        }
    })
}

/// Clears the status line (before the final report).
pub fn clear() {
    if std::io::stderr().is_terminal() {
        eprint!("{CLEAR_LINE}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_reads_well() {
        let previous = MetricsSnapshot::default();
        let now = MetricsSnapshot {
            rows_in: 12_345,
            rows_out: 30,
            watermark: Some(1_767_225_600_500),
            watermark_lag_ms: Some(1_200),
            state_bytes: 14_540,
            ..Default::default()
        };
        assert_eq!(
            line("job claims", &now, &previous, 2.0),
            "job claims · 12,345 rows in (6,172/s) · 30 out (15/s) · watermark 00:00:00.500 (lag 1.2 s) · state 14.2 KB"
        );
        let spread = MetricsSnapshot {
            tasks_owned: Some(4),
            ..now
        };
        assert!(
            line("job claims", &spread, &previous, 2.0).ends_with("state 14.2 KB · 4 tasks here")
        );
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000_000), "1,000,000");
        assert_eq!(bytes(512), "512 B");
    }
}
