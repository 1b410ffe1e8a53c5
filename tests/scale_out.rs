//! One job across several `runnel` processes, with Kafka as the cluster
//! (`SET 'execution.target' = 'kafka'`): the processes join one consumer group, rows
//! cross between them through repartition topics, state lives in changelog topics, and
//! every commit is one Kafka transaction. Each test starts real `runnel run` processes
//! against the real broker and reads the output `read_committed`.

use std::time::{Duration, Instant};

use crate::common::*;

const EVENTS: usize = 60_000;
const POLICIES: i64 = 400;
const PARTITIONS: i32 = 6;

/// A job name no earlier run used (its internal topics are new).
fn fresh_job(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "scale-{tag}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000
    )
}

/// The claims job spread over processes as `job`, reading `input` to its end.
fn claims_job(job: &str, input: &str, output: &str) -> String {
    format!(
        "SET 'execution.target' = 'kafka';
        SET 'pipeline.name' = '{job}';
        SET 'pipeline.max-parallelism' = '6';
        SET 'execution.checkpointing.interval' = '300 ms';
        {}
        CREATE TABLE claims_aggregated_5min ({CLAIMS_OUTPUT_COLUMNS}) WITH (
            'connector' = 'kafka', 'topic' = '{output}',
            'properties.bootstrap.servers' = '{}',
            'format' = 'json', 'key.format' = 'json', 'key.fields' = 'policy_id',
            'sink.delivery-guarantee' = 'exactly-once'
        );
        {CLAIMS_QUERY}",
        kafka_claims_table(input, ""),
        bootstrap()
    )
}

fn compare_claims(output: &str, claims: &[Claim]) -> WindowComparison {
    compare_window_rows(&consume_all(output), &expected_windows(claims))
}

/// Waits (up to `timeout`) for every process to exit; returns their logs, panicking with
/// them when one fails or hangs.
fn wait_all(mut processes: Vec<Running>, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut logs = vec![String::new(); processes.len()];
    let mut done = vec![false; processes.len()];
    while done.iter().any(|d| !d) {
        for (i, running) in processes.iter_mut().enumerate() {
            if done[i] {
                continue;
            }
            drain_now(running, &mut logs[i]);
            if let Some(status) = running.child.try_wait().expect("wait") {
                drain(running, &mut logs[i]);
                assert!(
                    status.success(),
                    "process {i} failed ({status}):\n{}",
                    logs[i]
                );
                done[i] = true;
            }
        }
        if Instant::now() > deadline {
            for running in &mut processes {
                let _ = running.child.kill();
            }
            panic!(
                "the job did not end within {timeout:?}:\n{}",
                logs.join("\n----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    logs
}

/// Moves the stderr lines already there into `log`.
fn drain_now(running: &Running, log: &mut String) {
    while let Ok(line) = running.lines.try_recv() {
        log.push_str(&line);
        log.push('\n');
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_run_one_claims_job_exactly_once() {
    let job = fresh_job("claims3");
    let (input, output, late) = (
        format!("{job}.in"),
        format!("{job}.out"),
        format!("{job}.late"),
    );
    let claims = generate_claims(EVENTS, POLICIES, 17);
    recreate_topic(&input, PARTITIONS).await;
    recreate_topic(&output, 3).await;
    recreate_topic(&late, 1).await;
    let dir = scratch_dir(&job);
    let file = dir.join("job.sql");
    // Late rows go to a Kafka table, in the processes' transactions.
    let late_table = format!(
        "SET 'runnel.late-data.sink' = 'late_claims';
         CREATE TABLE late_claims (policy_id BIGINT, amount DECIMAL(12, 2),
             event_time TIMESTAMP(3)) WITH ('connector' = 'kafka', 'topic' = '{late}',
             'properties.bootstrap.servers' = '{}', 'format' = 'json');
         {CLAIMS_QUERY}",
        bootstrap()
    );
    let sql = unbounded_claims_job(&job, &input, &output).replace(CLAIMS_QUERY, &late_table);
    std::fs::write(&file, &sql).expect("job file");

    // EXPLAIN shows the cut the processes make: the source's partitions and the keyed
    // stage's repartition topic as tasks, each stage's changelog topic.
    let explained = runnel::Engine::default()
        .explain(&unbounded_claims_job(&job, &input, &output))
        .expect("explain");
    for part in [
        format!("Across processes: consumer group {job}, 12 tasks"),
        format!("stage 0: 6 tasks reading topic {input}; state in {job}-stage-0-changelog"),
        format!("6 tasks reading {job}-stage-1-repartition; state in {job}-stage-1-changelog"),
    ] {
        assert!(explained.contains(&part), "{part:?} not in:\n{explained}");
    }
    let started = Instant::now();
    let processes: Vec<Running> = (0..3)
        .map(|i| start_with(&file, &dir.join(format!("local-{i}")), None))
        .collect();
    // Every process owns tasks before the claims arrive (under load a late starter would
    // otherwise find the work done).
    let (processes, mut logs) = tokio::task::spawn_blocking(move || {
        let mut logs = vec![String::new(); 3];
        for (running, log) in processes.iter().zip(logs.iter_mut()) {
            wait_for_line(running, "gained tasks", log, Duration::from_secs(90));
        }
        (processes, logs)
    })
    .await
    .expect("processes");
    produce_over_time(input.clone(), claims.clone()).await;
    let expected = expected_windows(&claims).len();
    let out = output.clone();
    tokio::task::spawn_blocking(move || wait_for_rows(&out, expected, Duration::from_secs(120)))
        .await
        .expect("output");
    // Every window has fired: a claim of the first minute, into each partition, is late.
    let first = claims.iter().map(|c| c.event_time_ms).min().unwrap_or(0);
    let late_claims: Vec<Claim> = (0..PARTITIONS)
        .map(|p| Claim {
            claim_id: format!("late-{p}"),
            policy_id: 999_999,
            amount_cents: 123,
            operation: "INSERT",
            event_time_ms: first,
        })
        .collect();
    let refs: Vec<&Claim> = late_claims.iter().collect();
    produce_claims_to_partitions(&input, &refs, |c| {
        c.claim_id.trim_start_matches("late-").parse().unwrap_or(0)
    })
    .await;
    let late_topic = late.clone();
    let logs = tokio::task::spawn_blocking(move || {
        wait_for_rows(&late_topic, late_claims.len(), Duration::from_secs(60));
        for (running, log) in processes.into_iter().zip(logs.iter_mut()) {
            stop_cleanly(running, log);
        }
        logs
    })
    .await
    .expect("processes");
    let routed = consume_all(&late);
    assert_eq!(
        routed.len(),
        PARTITIONS as usize,
        "each late claim once in {late}: {routed:?}"
    );
    assert!(
        routed.iter().all(|(_, _, value)| value.contains("999999")),
        "{routed:?}"
    );
    let elapsed = started.elapsed();
    let comparison = compare_claims(&output, &claims);
    eprintln!("three processes, {EVENTS} events in {elapsed:?}: {comparison:?}");
    assert_eq!(
        (comparison.missing, comparison.duplicated, comparison.wrong),
        (0, 0, 0),
        "{comparison:?}\n{}",
        logs.join("\n----\n")
    );
    assert_eq!(comparison.rows, comparison.expected);

    // What the tasks committed past is gone from the repartition topic: each partition
    // starts past its first record.
    let purged = repartition_offsets(&job);
    assert!(!purged.is_empty(), "no repartition topic of {job}");
    for (topic, partition, low, high) in &purged {
        assert!(
            *low > 0 && *low <= *high,
            "{topic} [{partition}] still starts at {low} (ends at {high}): {purged:?}\n{}",
            logs.join("\n----\n")
        );
    }
    eprintln!("repartition partitions after the run (first, end offset): {purged:?}");

    // The same job with another number of key groups is refused, with the reason.
    let changed = claims_job(&job, &input, &output).replace(
        "'pipeline.max-parallelism' = '6'",
        "'pipeline.max-parallelism' = '4'",
    );
    let refused = run_job(&format!("{job}-changed"), &changed);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("has 6 partitions, but this job needs 4")
            && stderr.contains("'pipeline.max-parallelism'"),
        "{stderr}"
    );
}

/// Each partition of `job`'s repartition topics: topic, partition, first and end offset.
fn repartition_offsets(job: &str) -> Vec<(String, i32, i64, i64)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("consumer");
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(None, timeout).expect("metadata");
    let mut offsets = Vec::new();
    for topic in metadata.topics() {
        let name = topic.name();
        if !(name.starts_with(&format!("{job}-stage-")) && name.ends_with("-repartition")) {
            continue;
        }
        for partition in topic.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(name, partition.id(), timeout)
                .expect("offsets");
            offsets.push((name.to_string(), partition.id(), low, high));
        }
    }
    offsets.sort();
    offsets
}

/// The claims source over Kafka, read for as long as the job runs.
fn unbounded_claims_job(job: &str, input: &str, output: &str) -> String {
    claims_job(job, input, output).replace("'scan.bounded.mode' = 'latest-offset',", "")
}

/// Produces the claims over ~8 s in 20 chunks, then one event a day later into every
/// partition, which closes every window.
async fn produce_over_time(input: String, claims: Vec<Claim>) {
    let chunk = claims.len().div_ceil(20);
    for (i, part) in claims.chunks(chunk).enumerate() {
        let refs: Vec<&Claim> = part.iter().collect();
        let first = i * chunk;
        produce_claims_to_partitions(&input, &refs, |c| {
            let index: usize = c.claim_id.trim_start_matches("c-").parse().unwrap_or(first);
            (index % PARTITIONS as usize) as i32
        })
        .await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    produce_end_of_claims(&bootstrap(), &input, PARTITIONS, &claims).await;
}

/// Waits for a line containing `text` from `running` (collecting lines into `log`);
/// returns when it arrived.
fn wait_for_line(running: &Running, text: &str, log: &mut String, timeout: Duration) -> Instant {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(line) = running.lines.recv_timeout(Duration::from_millis(100)) {
            log.push_str(&line);
            log.push('\n');
            if line.contains(text) {
                return Instant::now();
            }
        }
    }
    panic!("no line with '{text}' within {timeout:?}:\n{log}");
}

/// Waits for a line containing `text` from any of `processes`; returns when it arrived.
fn wait_for_any(
    processes: &[Running],
    text: &str,
    logs: &mut [String],
    timeout: Duration,
) -> Instant {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for (running, log) in processes.iter().zip(logs.iter_mut()) {
            while let Ok(line) = running.lines.try_recv() {
                log.push_str(&line);
                log.push('\n');
                if line.contains(text) {
                    return Instant::now();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "no line with '{text}' within {timeout:?}:\n{}",
        logs.join("\n----\n")
    );
}

/// Polls the output until it holds `expected` rows (or `timeout` passes).
fn wait_for_rows(output: &str, expected: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while consume_all(output).len() < expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_s_tasks_move_and_the_output_stays_exact() {
    let job = fresh_job("kill");
    let (input, output) = (format!("{job}.in"), format!("{job}.out"));
    let claims = generate_claims(EVENTS * 2, POLICIES, 23);
    recreate_topic(&input, PARTITIONS).await;
    recreate_topic(&output, 3).await;
    let dir = scratch_dir(&job);
    let file = dir.join("job.sql");
    std::fs::write(&file, unbounded_claims_job(&job, &input, &output)).expect("job file");
    let mut processes: Vec<Running> = (0..3)
        .map(|i| start_with(&file, &dir.join(format!("local-{i}")), None))
        .collect();
    let producing = tokio::spawn(produce_over_time(input.clone(), claims.clone()));
    let expected = expected_windows(&claims).len();
    let out = output.clone();
    let (takeover, logs) = tokio::task::spawn_blocking(move || {
        let mut logs = vec![String::new(); 5];
        // Mid-run, once every process owns tasks and the group settled, one of three dies.
        for (running, log) in processes.iter().zip(logs.iter_mut()) {
            wait_for_line(running, "gained tasks", log, Duration::from_secs(60));
        }
        std::thread::sleep(Duration::from_secs(3));
        for (running, log) in processes.iter().zip(logs.iter_mut()) {
            drain_now(running, log);
        }
        processes[0].child.kill().expect("SIGKILL");
        let killed = Instant::now();
        let _ = processes[0].child.wait();
        // The survivors take its tasks over: they gain them, then commit one first.
        wait_for_any(
            &processes[1..3],
            "gained tasks",
            &mut logs[1..3],
            Duration::from_secs(90),
        );
        let taken = wait_for_any(
            &processes[1..3],
            "first commit of a gained task",
            &mut logs[1..3],
            Duration::from_secs(90),
        );
        let takeover = taken - killed;
        // A fourth joins, running two members on two threads; then one of the first
        // leaves cleanly.
        let two_threads = dir.join("job-two-threads.sql");
        let job_text = std::fs::read_to_string(&file).expect("job file");
        let job_text = format!("SET 'parallelism.default' = '2';\n{job_text}");
        std::fs::write(&two_threads, job_text).expect("job file");
        processes.push(start_with(&two_threads, &dir.join("local-3"), None));
        wait_for_line(
            &processes[3],
            "gained tasks",
            &mut logs[3],
            Duration::from_secs(60),
        );
        let leaving = processes.remove(2);
        stop_cleanly(leaving, &mut logs[2]);
        wait_for_rows(&out, expected, Duration::from_secs(120));
        for running in processes.drain(1..) {
            let mut log = String::new();
            stop_cleanly(running, &mut log);
            logs[4].push_str(&log);
        }
        (takeover, logs)
    })
    .await
    .expect("processes");
    producing.await.expect("producer");
    let comparison = compare_claims(&output, &claims);
    eprintln!("kill one of three, add a fourth, stop one: takeover {takeover:?}; {comparison:?}");
    let fourth = format!("{}{}", logs[3], logs[4]);
    for thread in ["member{thread=0}", "member{thread=1}"] {
        assert!(
            fourth
                .lines()
                .any(|l| l.contains(thread) && l.contains("gained tasks")),
            "the fourth process's {thread} should gain tasks:\n{fourth}"
        );
    }
    for (i, log) in logs.iter().enumerate() {
        for line in log.lines().filter(|l| {
            ["gained", "lost", "going back", "first commit"]
                .iter()
                .any(|w| l.contains(w))
        }) {
            eprintln!("  process {i}: {line}");
        }
    }
    assert_eq!(
        (comparison.missing, comparison.duplicated, comparison.wrong),
        (0, 0, 0),
        "{comparison:?}\n{}",
        logs.join("\n----\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_takes_half_the_tasks_and_gives_them_back_nothing_lost_or_repeated() {
    let job = fresh_job("up");
    let (input, output) = (format!("{job}.in"), format!("{job}.out"));
    let claims = generate_claims(EVENTS * 2, POLICIES, 29);
    recreate_topic(&input, PARTITIONS).await;
    recreate_topic(&output, 3).await;
    let dir = scratch_dir(&job);
    let file = dir.join("job.sql");
    std::fs::write(&file, unbounded_claims_job(&job, &input, &output)).expect("job file");
    let first = start_with(&file, &dir.join("local-0"), None);
    let producing = tokio::spawn(produce_over_time(input.clone(), claims.clone()));
    let expected = expected_windows(&claims).len();
    let out = output.clone();
    let (moved, from_copy, logs) = tokio::task::spawn_blocking(move || {
        let mut logs = vec![String::new(); 2];
        wait_for_line(
            &first,
            "gained tasks",
            &mut logs[0],
            Duration::from_secs(60),
        );
        std::thread::sleep(Duration::from_secs(2));
        let second = start_with(&file, &dir.join("local-1"), None);
        wait_for_line(
            &second,
            "gained tasks",
            &mut logs[1],
            Duration::from_secs(60),
        );
        let moved = logs[1]
            .lines()
            .find(|l| l.contains("gained tasks"))
            .and_then(|l| l.split("tasks=").nth(1))
            .map_or(0, |tasks| tasks.split_whitespace().count());
        // Mid-run the second leaves again: its tasks go back to the first, which restores
        // each from its local copy and the changelog's tail the second wrote.
        std::thread::sleep(Duration::from_secs(3));
        stop_cleanly(second, &mut logs[1]);
        let regained = logs[0].len();
        wait_for_line(
            &first,
            "gained tasks",
            &mut logs[0],
            Duration::from_secs(60),
        );
        for _ in 0..moved {
            let read = "read the task's changelog";
            wait_for_line(&first, read, &mut logs[0], Duration::from_secs(60));
        }
        let from_copy = logs[0][regained..]
            .lines()
            .filter(|l| {
                l.contains("read the task's changelog") && l.contains("from_local_copy=true")
            })
            .count();
        wait_for_rows(&out, expected, Duration::from_secs(120));
        stop_cleanly(first, &mut logs[0]);
        (moved, from_copy, logs)
    })
    .await
    .expect("processes");
    producing.await.expect("producer");
    let comparison = compare_claims(&output, &claims);
    eprintln!(
        "scale up from one and back: {moved} of 12 tasks moved to the second and back, \
         {from_copy} restored from the first's local copies; {comparison:?}"
    );
    assert_eq!(
        from_copy,
        moved,
        "every task back should be restored from the local copy and the tail:\n{}",
        logs.join("\n----\n")
    );
    assert_eq!(
        moved,
        6,
        "half the tasks should move:\n{}",
        logs.join("\n----\n")
    );
    assert_eq!(
        (comparison.missing, comparison.duplicated, comparison.wrong),
        (0, 0, 0),
        "{comparison:?}\n{}",
        logs.join("\n----\n")
    );
}

/// The published Nexmark source over a Kafka topic (one JSON record per event with the
/// nested person / auction / bid rows), read to its end.
fn nexmark_kafka_ddl(topic: &str) -> String {
    let ddl = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/nexmark/ddl.sql"))
        .expect("sql/nexmark/ddl.sql");
    let start = ddl
        .find(") WITH (\n    'connector' = 'nexmark'")
        .expect("the generator's options");
    let end = start + ddl[start..].find(");").expect("their end") + 2;
    format!(
        "{}) WITH (
            'connector' = 'kafka', 'topic' = '{topic}',
            'properties.bootstrap.servers' = '{}',
            'scan.startup.mode' = 'earliest-offset',
            'scan.bounded.mode' = 'latest-offset',
            'format' = 'json'
        );{}",
        &ddl[..start],
        bootstrap(),
        &ddl[end..]
    )
}

/// q5 as published, writing `output` with `settings` in front.
fn q5_job(settings: &str, topic: &str, output: &str) -> String {
    let q5 = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/nexmark/q5.sql"))
        .expect("sql/nexmark/q5.sql");
    let q5 = q5.replace(
        "'connector' = 'blackhole'",
        &format!(
            "'connector' = 'kafka', 'topic' = '{output}', 'properties.bootstrap.servers' = '{}',
             'format' = 'json', 'sink.delivery-guarantee' = 'exactly-once'",
            bootstrap()
        ),
    );
    format!("{settings}\n{}\n{q5}", nexmark_kafka_ddl(topic))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nexmark_q5_over_three_processes_equals_one_process() {
    let job = fresh_job("q5");
    let events = format!("{job}.events");
    let (spread, single) = (format!("{job}.spread"), format!("{job}.single"));
    recreate_topic(&events, PARTITIONS).await;
    recreate_topic(&spread, 3).await;
    recreate_topic(&single, 3).await;
    // The generator's events, as the published Kafka table holds them.
    let ddl = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/nexmark/ddl.sql"))
        .expect("ddl")
        .replace("${TPS}", "1000")
        .replace("${EVENTS_NUM}", "200000");
    // One generator, in order: each partition then holds its events in time order, so no
    // row is late in either run, whatever order the partitions are read in.
    let fill = format!(
        "SET 'parallelism.default' = '1';
        {ddl}
        CREATE TABLE events_topic (event_type INT, person ROW<id BIGINT, name VARCHAR,
            emailAddress VARCHAR, creditCard VARCHAR, city VARCHAR, state VARCHAR,
            `dateTime` TIMESTAMP(3), extra VARCHAR>,
            auction ROW<id BIGINT, itemName VARCHAR, description VARCHAR, initialBid BIGINT,
            reserve BIGINT, `dateTime` TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT,
            category BIGINT, extra VARCHAR>,
            bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
            `dateTime` TIMESTAMP(3), extra VARCHAR>)
        WITH ('connector' = 'kafka', 'topic' = '{events}',
            'properties.bootstrap.servers' = '{}', 'format' = 'json');
        INSERT INTO events_topic SELECT event_type, person, auction, bid FROM datagen;",
        bootstrap()
    );
    for result in runnel::Engine::default()
        .execute(&fill)
        .await
        .expect("fill plans")
    {
        if let runnel::Executed::Job(job) = result {
            job.wait().await.expect("fill runs");
        }
    }
    let dir = scratch_dir(&job);
    let spread_file = dir.join("spread.sql");
    let settings = format!(
        "SET 'execution.target' = 'kafka'; SET 'pipeline.name' = '{job}';
         SET 'execution.checkpointing.interval' = '300 ms';"
    );
    std::fs::write(&spread_file, q5_job(&settings, &events, &spread)).expect("job file");
    let single_file = dir.join("single.sql");
    std::fs::write(
        &single_file,
        q5_job("SET 'parallelism.default' = '2';", &events, &single).replace(
            "'sink.delivery-guarantee' = 'exactly-once'",
            "'sink.delivery-guarantee' = 'at-least-once'",
        ),
    )
    .expect("job file");
    let started = Instant::now();
    let processes: Vec<Running> = (0..3)
        .map(|i| start_with(&spread_file, &dir.join(format!("local-{i}")), None))
        .collect();
    let logs = tokio::task::spawn_blocking(move || wait_all(processes, Duration::from_secs(240)))
        .await
        .expect("processes");
    let elapsed = started.elapsed();
    let reference = run_job(
        &format!("{job}-single"),
        &std::fs::read_to_string(&single_file).expect("job"),
    );
    let reference_log = String::from_utf8_lossy(&reference.stderr);
    assert!(reference.status.success(), "{reference_log}");
    assert_eq!(
        reported_count(&reference_log, "late rows dropped"),
        Some(0),
        "{reference_log}"
    );
    let rows = |topic: &str| {
        let mut rows: Vec<String> = consume_all(topic).into_iter().map(|(_, _, v)| v).collect();
        rows.sort();
        rows
    };
    let (spread_rows, single_rows) = (rows(&spread), rows(&single));
    eprintln!(
        "q5: three processes wrote {} rows in {elapsed:?}, one process {}",
        spread_rows.len(),
        single_rows.len()
    );
    let topology: String = logs[0]
        .lines()
        .skip_while(|l| !l.contains("Across processes"))
        .take_while(|l| l.starts_with("Across") || l.starts_with("  stage"))
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!("{topology}");
    assert!(!single_rows.is_empty());
    let only = |a: &[String], b: &[String]| -> Vec<String> {
        let mut b = b.to_vec();
        a.iter()
            .filter(|row| match b.iter().position(|r| r == *row) {
                Some(at) => {
                    b.remove(at);
                    false
                }
                None => true,
            })
            .cloned()
            .collect()
    };
    assert!(
        spread_rows == single_rows,
        "q5 across processes differs from one process ({} vs {} rows); only across \
         processes: {:?}; only in one: {:?}\n{}",
        spread_rows.len(),
        single_rows.len(),
        only(&spread_rows, &single_rows),
        only(&single_rows, &spread_rows),
        logs.join("\n----\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_cannot_be_spread_is_refused_with_the_reason() {
    let source = kafka_claims_table("scale.refused.in", "");
    let output = |connector: &str| {
        format!(
            "CREATE TABLE claims_aggregated_5min ({CLAIMS_OUTPUT_COLUMNS}) WITH (
                'connector' = '{connector}', 'path' = '/tmp/x', 'format' = 'json');"
        )
    };
    let cases = [
        (
            format!(
                "SET 'execution.target' = 'kafka'; {source} {} {CLAIMS_QUERY}",
                output("filesystem")
            ),
            "'pipeline.name'",
        ),
        (
            format!(
                "SET 'execution.target' = 'kafka'; SET 'pipeline.name' = 'refused';
                 {source} {} {CLAIMS_QUERY}",
                output("filesystem")
            ),
            "table claims_aggregated_5min writes connector 'filesystem'",
        ),
        (
            "SET 'pipeline.name' = 'claims 5 min';".to_string(),
            "cannot name Kafka topics",
        ),
        (
            "SET 'execution.target' = 'yarn-cluster';".to_string(),
            "expected 'local'",
        ),
    ];
    for (script, reason) in cases {
        let error = match runnel::Engine::default().execute(&script).await {
            Ok(_) => panic!("accepted: {script}"),
            Err(e) => e.to_string(),
        };
        assert!(error.contains(reason), "{error}\n(wanted: {reason})");
    }
}
