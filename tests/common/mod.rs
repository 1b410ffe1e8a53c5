//! Shared pieces of the end-to-end tests: the real Kafka broker, the runnel binary, and
//! the claims workload with its expected results computed independently of Runnel.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

mod browser;
mod postgres;
mod running;
mod server;
pub use browser::Browser;
pub use postgres::*;
pub use running::{drain, log_tail, start_with, stop_cleanly, Running};
pub use server::Served;

/// Bootstrap address of the test broker.
pub fn bootstrap() -> String {
    std::env::var("RUNNEL_KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

fn admin(servers: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()
        .expect("admin client")
}

/// Deletes `topic` if it exists and creates it empty with `partitions` partitions.
pub async fn recreate_topic(topic: &str, partitions: i32) {
    recreate_topic_on(&bootstrap(), topic, partitions).await
}

/// [`recreate_topic`] on the broker at `servers`.
pub async fn recreate_topic_on(servers: &str, topic: &str, partitions: i32) {
    let admin = admin(servers);
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let _ = admin.delete_topics(&[topic], &options).await;
    for attempt in 0..60 {
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        let result = admin
            .create_topics(&[new], &options)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot reach Kafka at {} (start it with scripts/kafka.sh start): {e}",
                    servers
                )
            });
        match &result[0] {
            Ok(_) => return,
            // The deletion is still in progress.
            Err(_) if attempt < 59 => tokio::time::sleep(Duration::from_millis(250)).await,
            Err((_, code)) => panic!("cannot create topic {topic}: {code}"),
        }
    }
}

/// A Kafka record to produce: optional key, value.
pub type Record = (Option<String>, Vec<u8>);

/// Produces `(key, value)` records and waits until the broker acknowledged all of them.
pub async fn produce(topic: &str, records: &[Record]) {
    produce_on(&bootstrap(), topic, records).await
}

/// [`produce`] to the broker at `servers`.
pub async fn produce_on(servers: &str, topic: &str, records: &[Record]) {
    produce_with(&test_producer(servers), topic, records).await
}

/// A producer for test input that waits out broker outages (up to 5 minutes per record,
/// idempotent so retries write each record once).
pub fn test_producer(servers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "300000")
        .create()
        .expect("producer")
}

/// [`produce`] with `producer`.
pub async fn produce_with(producer: &FutureProducer, topic: &str, records: &[Record]) {
    let mut pending = Vec::with_capacity(records.len());
    for (key, value) in records {
        let mut record = FutureRecord::to(topic).payload(value.as_slice());
        if let Some(key) = key {
            record = record.key(key.as_str());
        }
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((_, returned)) => {
                    record = returned;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
    for delivery in pending {
        delivery.await.expect("delivery").expect("acknowledged");
    }
}

/// Produces claims as JSON values, each to the partition `partition` picks, and waits
/// for every acknowledgement.
pub async fn produce_claims_to_partitions(
    topic: &str,
    claims: &[&Claim],
    partition: impl Fn(&Claim) -> i32,
) {
    produce_claims_to_partitions_on(&bootstrap(), topic, claims, partition).await
}

/// [`produce_claims_to_partitions`] to the broker at `servers`.
pub async fn produce_claims_to_partitions_on(
    servers: &str,
    topic: &str,
    claims: &[&Claim],
    partition: impl Fn(&Claim) -> i32,
) {
    let producer = test_producer(servers);
    let mut pending = Vec::with_capacity(claims.len());
    for claim in claims {
        let value = claim.to_json();
        let record = FutureRecord::<(), _>::to(topic)
            .payload(value.as_bytes())
            .partition(partition(claim));
        pending.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("queued"),
        );
    }
    for delivery in pending {
        delivery.await.expect("delivery").expect("acknowledged");
    }
}

/// Produces one claim a day after the last of `claims` into each of `partitions`
/// partitions of `topic` on `servers`: every partition's watermark then passes every
/// window of `claims`, which all close. Its operation (`END`) is no `INSERT`.
pub async fn produce_end_of_claims(servers: &str, topic: &str, partitions: i32, claims: &[Claim]) {
    let end = claims.iter().map(|c| c.event_time_ms).max().unwrap_or(0) + 86_400_000;
    let sentinels: Vec<Claim> = (0..partitions)
        .map(|p| Claim {
            claim_id: format!("end-{p}"),
            policy_id: 0,
            amount_cents: 0,
            operation: "END",
            event_time_ms: end,
        })
        .collect();
    let refs: Vec<&Claim> = sentinels.iter().collect();
    produce_claims_to_partitions_on(servers, topic, &refs, |c| {
        c.claim_id.trim_start_matches("end-").parse().unwrap_or(0)
    })
    .await;
}

/// Every committed record of `topic`, read with `isolation.level=read_committed`, in
/// (partition, offset) order: (partition, key, value).
pub fn consume_all(topic: &str) -> Vec<(i32, Option<String>, String)> {
    consume_all_on(&bootstrap(), topic)
}

/// [`consume_all`] from the broker at `servers`.
pub fn consume_all_on(servers: &str, topic: &str) -> Vec<(i32, Option<String>, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set(
            "group.id",
            format!("runnel-test-reader-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    let mut assignment = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for &p in &partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("offsets");
        ends.insert(p, high);
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let mut records = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let positions = consumer.position().expect("position");
        let done = positions.elements().iter().all(|e| match e.offset() {
            Offset::Offset(o) => o >= ends[&e.partition()],
            _ => ends[&e.partition()] == 0,
        });
        if done {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out reading {topic}"
        );
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.expect("message");
            records.push((
                message.partition(),
                message
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned()),
                String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned(),
            ));
        }
    }
    records
}

/// The `runnel` binary built next to this test binary (`cargo build -p runnel-cli` first;
/// `.ci/run` does).
pub fn runnel_binary() -> PathBuf {
    if let Ok(binary) = std::env::var("RUNNEL_BINARY") {
        return PathBuf::from(binary);
    }
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let binary = dir.join("runnel");
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build -p runnel-cli`",
        binary.display()
    );
    binary
}

/// Runs `runnel run <file>` with `sql` written to a temporary file.
pub fn run_job(name: &str, sql: &str) -> Output {
    let dir = scratch_dir(name);
    let file = dir.join("job.sql");
    std::fs::write(&file, sql).expect("write job");
    Command::new(runnel_binary())
        .arg("run")
        .arg(&file)
        .output()
        .expect("run runnel")
}

/// The count a finished job reported before `what` on its summary line (`runnel run`
/// prints `... 600 rows in (...), 12 rows out, 0 late rows dropped, ...` last): the
/// whole number right before the words, so `0 late rows dropped` does not match
/// `10 late rows dropped`.
pub fn reported_count(stderr: &str, what: &str) -> Option<u64> {
    stderr.rmatch_indices(what).find_map(|(at, _)| {
        let before = stderr[..at].trim_end();
        let digits = before
            .rsplit(|c: char| !c.is_ascii_digit())
            .next()
            .filter(|d| !d.is_empty())?;
        // The number must stand alone: preceded by a space or the line's start.
        let start = before.len() - digits.len();
        let alone = before[..start]
            .chars()
            .next_back()
            .is_none_or(char::is_whitespace);
        alone.then(|| digits.parse().ok()).flatten()
    })
}

/// A TCP port nothing listens on now (for a `--metrics-addr` the test then scrapes).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// The whole HTTP response of `GET /metrics` on `port`, if the job answers.
pub fn scrape_metrics(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// The value of the first series of the Prometheus metric `name` in `text`.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A fresh folder for one test's files.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("runnel-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// One claims CDC event.
#[derive(Debug, Clone)]
pub struct Claim {
    pub claim_id: String,
    pub policy_id: i64,
    pub amount_cents: i64,
    pub operation: &'static str,
    pub event_time_ms: i64,
}

impl Claim {
    pub fn to_json(&self) -> String {
        format!(
            r#"{{"claim_id":"{}","policy_id":{},"amount":{}.{:02},"operation":"{}","event_time":"{}"}}"#,
            self.claim_id,
            self.policy_id,
            self.amount_cents / 100,
            self.amount_cents % 100,
            self.operation,
            format_ts(self.event_time_ms)
        )
    }
}

/// `yyyy-MM-dd HH:mm:ss.SSS` (UTC), computed by hand so the test does not share Runnel's code.
pub fn format_ts(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// A small deterministic generator (xorshift), so runs are reproducible without a crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `count` claims over `policies` policies, event time advancing ~1 s per event and out
/// of order by up to 4 s (inside the tables' 5 s watermark delay, so no row is late).
pub fn generate_claims(count: usize, policies: i64, seed: u64) -> Vec<Claim> {
    let mut rng = Rng::new(seed);
    let start = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    (0..count)
        .map(|i| {
            let operation = match rng.below(10) {
                0..=5 => "INSERT",
                6..=8 => "UPDATE",
                _ => "DELETE",
            };
            Claim {
                claim_id: format!("c-{i:07}"),
                policy_id: 1 + rng.below(policies as u64) as i64,
                amount_cents: 100 + rng.below(500_000) as i64,
                operation,
                event_time_ms: start + i as i64 * 1000 - rng.below(4000) as i64,
            }
        })
        .collect()
}

/// One row of the claims aggregate: (policy_id, window_start, window_end) → (count, sum in cents).
pub type WindowRows = BTreeMap<(i64, String, String), (i64, i64)>;

/// What the claims query must produce, computed directly from the events.
pub fn expected_windows(claims: &[Claim]) -> WindowRows {
    let mut out: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    for c in claims.iter().filter(|c| c.operation == "INSERT") {
        let start = c.event_time_ms - c.event_time_ms.rem_euclid(300_000);
        let entry = out.entry((c.policy_id, start)).or_default();
        entry.0 += 1;
        entry.1 += c.amount_cents;
    }
    out.into_iter()
        .map(|((policy, start), v)| ((policy, format_ts(start), format_ts(start + 300_000)), v))
        .collect()
}

/// How output rows of the claims aggregate compare with the expected windows.
#[derive(Debug, Default, PartialEq)]
pub struct WindowComparison {
    pub rows: usize,
    pub expected: usize,
    /// Expected windows that never appeared.
    pub missing: usize,
    /// Extra copies of windows that appeared more than once.
    pub duplicated: usize,
    /// Rows with a value other than the expected, or of a window not expected.
    pub wrong: usize,
    /// A few of the wrong rows: policy, window start, (count, cents) expected and found.
    pub examples: Vec<WrongWindow>,
}

/// A window row with a wrong value: policy, window start, expected and found.
pub type WrongWindow = (i64, String, (i64, i64), (i64, i64));

/// Compares the JSON values of `rows` (as [`consume_all`] returns them) with `expected`.
pub fn compare_window_rows(
    rows: &[(i32, Option<String>, String)],
    expected: &WindowRows,
) -> WindowComparison {
    let mut seen: BTreeMap<(i64, String, String), Vec<(i64, i64)>> = BTreeMap::new();
    for (_, _, value) in rows {
        for (key, row) in parse_window_rows([value.as_str()]) {
            seen.entry(key).or_default().push(row);
        }
    }
    let mut comparison = WindowComparison {
        rows: rows.len(),
        expected: expected.len(),
        ..WindowComparison::default()
    };
    for (key, want) in expected {
        match seen.get(key) {
            None => comparison.missing += 1,
            Some(got) => {
                comparison.duplicated += got.len() - 1;
                for g in got.iter().filter(|g| *g != want) {
                    comparison.wrong += 1;
                    if comparison.examples.len() < 5 {
                        comparison.examples.push((key.0, key.1.clone(), *want, *g));
                    }
                }
            }
        }
    }
    comparison.wrong += seen.keys().filter(|k| !expected.contains_key(*k)).count();
    comparison
}

/// Parses JSON rows of the claims aggregate; panics on a duplicate row.
pub fn parse_window_rows<'a>(rows: impl IntoIterator<Item = &'a str>) -> WindowRows {
    let mut out = WindowRows::new();
    for row in rows {
        let v: serde_json::Value =
            serde_json::from_str(row).unwrap_or_else(|e| panic!("bad output row {row}: {e}"));
        let text = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("{k} missing in {row}"))
                .to_string()
        };
        let cents = match &v["total_amount"] {
            serde_json::Value::String(s) => decimal_cents(s),
            serde_json::Value::Number(n) => decimal_cents(&n.to_string()),
            other => panic!("total_amount is {other} in {row}"),
        };
        let key = (
            v["policy_id"].as_i64().expect("policy_id"),
            text("window_start"),
            text("window_end"),
        );
        let value = (v["claim_count"].as_i64().expect("claim_count"), cents);
        assert!(
            out.insert(key.clone(), value).is_none(),
            "duplicate output row for {key:?}"
        );
    }
    out
}

fn decimal_cents(text: &str) -> i64 {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, "0"));
    let fraction = format!("{fraction:0<2}");
    whole.parse::<i64>().expect("whole part") * 100 + fraction[..2].parse::<i64>().expect("cents")
}

/// The claims source table over Kafka, bounded to what the topic holds at start.
pub fn kafka_claims_table(topic: &str, extra: &str) -> String {
    format!(
        "CREATE TABLE claims (
            claim_id STRING NOT NULL,
            policy_id BIGINT,
            amount DECIMAL(12, 2),
            operation STRING,
            event_time TIMESTAMP(3),
            WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
        ) WITH (
            'connector' = 'kafka',
            'topic' = '{topic}',
            'properties.bootstrap.servers' = '{}',
            'properties.group.id' = 'runnel-claims-test',
            'scan.startup.mode' = 'earliest-offset',
            'scan.bounded.mode' = 'latest-offset',
            'format' = 'json'{extra}
        );",
        bootstrap()
    )
}

/// The canonical claims query.
pub const CLAIMS_QUERY: &str = "INSERT INTO claims_aggregated_5min
    SELECT policy_id, window_start, window_end, COUNT(*) AS claim_count, SUM(amount) AS total_amount
    FROM TABLE(TUMBLE(TABLE claims, DESCRIPTOR(event_time), INTERVAL '5' MINUTES))
    WHERE operation = 'INSERT'
    GROUP BY policy_id, window_start, window_end;";

/// Columns of the claims output table.
pub const CLAIMS_OUTPUT_COLUMNS: &str =
    "policy_id BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3),
    claim_count BIGINT, total_amount DECIMAL(22, 2)";

/// The claims job for `guarantee`, reading `input` and writing `output` on `servers`;
/// two subtasks per operator whatever the machine, so the input's 3 partitions are read
/// by two readers, rows cross a keyed exchange, and barriers are aligned across it.
pub fn claims_job_sql(input: &str, output: &str, guarantee: &str, servers: &str) -> String {
    format!(
        "SET 'execution.checkpointing.interval' = '200 ms';
        SET 'parallelism.default' = '2';
        CREATE TABLE claims (
            claim_id STRING NOT NULL, policy_id BIGINT, amount DECIMAL(12, 2), operation STRING,
            event_time TIMESTAMP(3),
            WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
        ) WITH (
            'connector' = 'kafka', 'topic' = '{input}',
            'properties.bootstrap.servers' = '{servers}',
            'properties.group.id' = 'runnel-{input}',
            'format' = 'json'
        );
        CREATE TABLE claims_aggregated_5min ({CLAIMS_OUTPUT_COLUMNS}) WITH (
            'connector' = 'kafka', 'topic' = '{output}',
            'properties.bootstrap.servers' = '{servers}',
            'format' = 'json', 'key.format' = 'json', 'key.fields' = 'policy_id',
            'sink.delivery-guarantee' = '{guarantee}',
            'sink.transactional-id-prefix' = 'runnel-{output}'
        );
        {CLAIMS_QUERY}"
    )
}

/// Runs `sql` in a fresh engine and returns the rows its queries printed (`+I[...]`),
/// sorted; panics naming the failure.
pub async fn query_rows(sql: &str) -> Vec<String> {
    use futures::StreamExt;
    let mut rows = Vec::new();
    for result in runnel::Engine::default().execute(sql).await.expect("plans") {
        if let runnel::Executed::Query(mut stream) = result {
            while let Some(batch) = stream.next().await {
                rows.extend(
                    runnel::connectors::print::format_rows(&batch.expect("batch"), "")
                        .expect("format"),
                );
            }
            stream.finish().await.expect("runs");
        }
    }
    rows.sort();
    rows
}

/// Runs `scripts/kafka.sh <command>` for a broker of a test's own on `port` (the outage
/// and secured-broker tests), with `env` set.
pub fn kafka_script(port: u16, command: &str, env: &[(&str, &str)]) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka.sh");
    let status = Command::new(script)
        .arg(command)
        .env("KAFKA_PORT", port.to_string())
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("scripts/kafka.sh");
    assert!(status.success(), "scripts/kafka.sh {command} failed");
}
