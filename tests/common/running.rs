//! A `runnel run` process a test starts, kills and stops: its stderr read line by line.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::runnel_binary;

/// A running `runnel run` whose stderr lines arrive on a channel.
pub struct Running {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
}

/// Starts `runnel run JOB --checkpoint-dir CHECKPOINTS`, optionally pausing between storing
/// a checkpoint and committing it (so kills land there), its stderr on a channel.
pub fn start_with(
    job: &std::path::Path,
    checkpoints: &std::path::Path,
    pause_before_commit_ms: Option<&str>,
) -> Running {
    let mut command = Command::new(runnel_binary());
    command
        .arg("run")
        .arg(job)
        .arg("--checkpoint-dir")
        .arg(checkpoints);
    if let Some(pause) = pause_before_commit_ms {
        command.arg("--pause-before-commit-ms").arg(pause);
    }
    let mut child = command
        .env(
            "RUNNEL_LOG",
            std::env::var("RUNNEL_TEST_LOG").unwrap_or_else(|_| {
                "runnel_runtime=info,runnel_cluster=info,runnel_connectors=warn".into()
            }),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start runnel");
    let stderr = child.stderr.take().expect("stderr");
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    Running { child, lines }
}

/// Stops a run with SIGTERM (a final checkpoint, then exit) and checks it exits cleanly.
pub fn stop_cleanly(mut running: Running, log: &mut String) {
    let stopped = Command::new("kill")
        .arg("-TERM")
        .arg(running.child.id().to_string())
        .status()
        .expect("kill -TERM");
    assert!(stopped.success());
    let status = running.child.wait().expect("wait");
    drain(&running, log);
    assert!(
        status.success(),
        "runnel did not stop cleanly ({status}):\n{}",
        log_tail(log)
    );
}

/// The last lines of a run's log for a failure message, without librdkafka's own log
/// lines (`%3|…`), which repeat many times a second while a broker is down and would push
/// the line that says why out of a truncated CI log.
pub fn log_tail(log: &str) -> String {
    const LINES: usize = 60;
    let (librdkafka, runnel): (Vec<&str>, Vec<&str>) =
        log.lines().partition(|line| line.starts_with('%'));
    let skipped = runnel.len().saturating_sub(LINES);
    let mut tail = format!(
        "({} librdkafka lines and the first {skipped} others left out)\n",
        librdkafka.len()
    );
    for line in &runnel[skipped..] {
        tail.push_str(line);
        tail.push('\n');
    }
    tail
}

/// Moves every stderr line that arrives within 200 ms of the last into `log`.
pub fn drain(running: &Running, log: &mut String) {
    while let Ok(line) = running.lines.recv_timeout(Duration::from_millis(200)) {
        log.push_str(&line);
        log.push('\n');
    }
}
