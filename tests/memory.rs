//! Memory: a job's state against `runnel.memory.limit`, and a slow sink that must not make
//! a job buffer without bound.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

/// An aggregate over ever new keys outgrows a small `runnel.memory.limit`: the job fails
/// with an error naming the setting and the stage holding the state, not an
/// out-of-memory kill.
#[test]
fn state_over_the_memory_limit_fails_the_job_naming_the_stage() {
    crate::errors::fails_with(
        "memory-limit",
        "SET 'runnel.memory.limit' = '8 mb';
        CREATE TABLE events (id BIGINT, payload STRING) WITH (
            'connector' = 'datagen', 'rows-per-second' = '1000000',
            'fields.id.kind' = 'sequence', 'fields.id.start' = '1',
            'fields.id.end' = '100000000', 'fields.payload.length' = '20');
        CREATE TABLE totals (id BIGINT, n BIGINT, longest INT) WITH ('connector' = 'blackhole');
        INSERT INTO totals SELECT id, COUNT(*), MAX(CHAR_LENGTH(payload)) FROM events GROUP BY id;",
        &[
            "is over 'runnel.memory.limit' = 8.0 MB",
            "the most is held by stage",
            "(UpdatingAggregate",
        ],
    );
}

/// A sink that cannot keep up (here: `print` to a pipe nobody reads, so it blocks once
/// the pipe is full) stops the source through the bounded channels between tasks: the
/// process's memory stays where it was instead of buffering the generator's rows.
#[test]
fn a_sink_that_stops_does_not_grow_memory() {
    let dir = scratch_dir("slow-sink");
    let job = dir.join("job.sql");
    std::fs::write(
        &job,
        "CREATE TABLE events (id BIGINT, payload STRING) WITH (
            'connector' = 'datagen', 'rows-per-second' = '2000000',
            'fields.id.kind' = 'sequence', 'fields.id.start' = '1',
            'fields.id.end' = '1000000000', 'fields.payload.length' = '100');
        CREATE TABLE out (id BIGINT, payload STRING) WITH ('connector' = 'print');
        INSERT INTO out SELECT id, payload FROM events;",
    )
    .expect("job file");
    let mut child = Command::new(runnel_binary())
        .arg("run")
        .arg(&job)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("runnel");
    let rss_kb = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                let line = status
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))?
                    .to_string();
                line.split_whitespace().nth(1)?.parse().ok()
            })
            .unwrap_or(0)
    };
    // Read a little, so the job is surely running, then stop reading.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = vec![0u8; 1 << 16];
    stdout.read_exact(&mut first).expect("the job prints rows");
    std::thread::sleep(Duration::from_secs(2));
    let early = rss_kb(child.id());
    std::thread::sleep(Duration::from_secs(5));
    let late = rss_kb(child.id());
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("RSS with the sink stopped: {early} kB after 2 s, {late} kB after 7 s");
    // 5 s of the generator's rows would be about 10M rows (over 1 GB) if buffered.
    assert!(early > 0 && late > 0, "RSS not readable");
    assert!(
        late < early + 50 * 1024,
        "memory grew from {early} kB to {late} kB while the sink was stopped"
    );
}
