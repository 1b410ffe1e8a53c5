//! The Nexmark benchmark runner: per query, throughput over the in-process generator
//! (events/s, events per CPU-second, peak memory), and for the stateless and tumbling
//! queries the cost of streaming itself — Runnel over pre-generated Arrow batches (a
//! memory table) divided by DataFusion running the equivalent batch query over the same
//! batches.
//!
//! ```text
//! cargo bench --bench nexmark                          # every query, 10M events
//! cargo bench --bench nexmark -- q5 q7 --events 2000000
//! cargo bench --bench nexmark -- --floor-events 2000000
//! cargo bench --bench nexmark -- --floor-only q2 --floor-runs 50   # one floor query
//! cargo bench --bench nexmark -- q5 --parallelism 1     # default: one subtask per core
//! cargo bench --bench nexmark -- claims-kafka q5-kafka --kafka 127.0.0.1:9092 --no-floor
//! cargo bench --bench nexmark -- q5 --events 100000000 --tps 100000 --no-floor
//! ```
//!
//! `claims-kafka` and `<query>-kafka` (any Nexmark query) read Kafka topics preloaded
//! (once, and kept for later runs) with the same events as JSON records: the consumer and
//! JSON decoding included.
//!
//! Linux only (peak memory comes from /proc/self).

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use runnel::{Engine, Executed};

/// The allocator the `runnel` binary runs with, so the numbers are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const QUERIES: &[&str] = &["q0", "q1", "q2", "q5", "q7", "q8", "q11", "q12", "claims"];

/// Events per second of event time the generator stamps: Flink's Nexmark default, or
/// `--tps N` (a lower rate spreads the events over more windows: how the memory of a
/// windowed query is seen to stay flat as events grow).
static TPS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
const DEFAULT_TPS: u64 = 10_000_000;

/// The claims query over generated claims (1,000 policies, 5-minute windows, 80 % inserts).
fn claims_sql(events: u64) -> String {
    format!(
        "CREATE TABLE claims_source (
             claim_no BIGINT, policy_id BIGINT, amount DECIMAL(12, 2), op_code INT,
             event_time TIMESTAMP(3),
             WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
         ) WITH (
             'connector' = 'datagen', 'rows-per-second' = '1000000000',
             'number-of-rows' = '{events}',
             'fields.claim_no.kind' = 'sequence', 'fields.claim_no.start' = '1',
             'fields.claim_no.end' = '{events}',
             'fields.policy_id.min' = '1', 'fields.policy_id.max' = '1000',
             'fields.amount.max' = '5000', 'fields.op_code.min' = '0', 'fields.op_code.max' = '9'
         );
         CREATE VIEW claims AS SELECT policy_id, amount, event_time,
             CASE WHEN op_code < 8 THEN 'INSERT' ELSE 'UPDATE' END AS operation
         FROM claims_source;
         {CLAIMS_QUERY}"
    )
}

const CLAIMS_QUERY: &str = "SELECT policy_id, window_start, window_end, COUNT(*) AS claim_count,
        SUM(amount) AS total_amount
    FROM TABLE(TUMBLE(TABLE claims, DESCRIPTOR(event_time), INTERVAL '5' MINUTES))
    WHERE operation = 'INSERT'
    GROUP BY policy_id, window_start, window_end;";

/// The claims as JSON in a Kafka topic of two partitions (`'scan.bounded.mode'`: read to
/// the end offsets found at start, then finish).
fn claims_kafka_ddl(bootstrap: &str, topic: &str) -> String {
    format!(
        "CREATE TABLE claims (
             policy_id BIGINT, amount DECIMAL(12, 2), event_time TIMESTAMP(3), operation STRING,
             WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
         ) WITH (
             'connector' = 'kafka', 'topic' = '{topic}',
             'properties.bootstrap.servers' = '{bootstrap}',
             'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
             'format' = 'json'
         );"
    )
}

/// The topic holding `events` claims.
fn claims_topic(events: u64) -> String {
    format!("runnel-bench.claims.{events}")
}

/// Fills the claims topic once with the generated claims as JSON (see [`preload`]).
async fn preload_claims(bootstrap: &str, events: u64) -> Result<(), Box<dyn std::error::Error>> {
    let topic = claims_topic(events);
    let fill = claims_sql(events).replace(
        CLAIMS_QUERY,
        &format!(
            "CREATE TABLE claims_out (
                 policy_id BIGINT, amount DECIMAL(12, 2), event_time TIMESTAMP(3), operation STRING
             ) WITH ('connector' = 'kafka', 'topic' = '{topic}',
                     'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'json');
             INSERT INTO claims_out SELECT policy_id, amount, event_time, operation FROM claims;"
        ),
    );
    preload(bootstrap, events, &[topic], &fill).await
}

/// The Nexmark streams as tables: name and columns (as the views of `sql/nexmark/ddl.sql`).
const NEXMARK_STREAMS: [(&str, &str); 3] = [
    (
        "person",
        "id BIGINT, name STRING, emailAddress STRING, creditCard STRING, city STRING, \
         state STRING, dateTime TIMESTAMP(3), extra STRING",
    ),
    (
        "auction",
        "id BIGINT, itemName STRING, description STRING, initialBid BIGINT, reserve BIGINT, \
         dateTime TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra STRING",
    ),
    (
        "bid",
        "auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, \
         dateTime TIMESTAMP(3), extra STRING",
    ),
];

/// The topic holding `events` Nexmark events' `stream` (person, auction or bid).
fn nexmark_topic(events: u64, stream: &str) -> String {
    format!("runnel-bench.nexmark.{events}.{stream}")
}

/// Person, auction and bid as JSON Kafka tables (read to the end offsets found at start),
/// in place of the generator's views: the Nexmark queries run on them unchanged.
fn nexmark_kafka_ddl(bootstrap: &str, events: u64) -> String {
    NEXMARK_STREAMS
        .iter()
        .map(|(stream, columns)| {
            format!(
                "CREATE TABLE {stream} ({columns},
                     WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND
                 ) WITH (
                     'connector' = 'kafka', 'topic' = '{}',
                     'properties.bootstrap.servers' = '{bootstrap}',
                     'scan.startup.mode' = 'earliest-offset',
                     'scan.bounded.mode' = 'latest-offset', 'format' = 'json');\n",
                nexmark_topic(events, stream)
            )
        })
        .collect()
}

/// Fills the person, auction and bid topics once with the generator's events as JSON.
async fn preload_nexmark(bootstrap: &str, events: u64) -> Result<(), Box<dyn std::error::Error>> {
    let mut fill = nexmark_ddl(events)?;
    for (stream, columns) in NEXMARK_STREAMS {
        let names: Vec<&str> = columns
            .split(',')
            .filter_map(|c| c.split_whitespace().next())
            .collect();
        fill.push_str(&format!(
            "CREATE TABLE {stream}_out ({columns}) WITH ('connector' = 'kafka', 'topic' = '{}',
                 'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'json');
             INSERT INTO {stream}_out SELECT {} FROM {stream};\n",
            nexmark_topic(events, stream),
            names.join(", ")
        ));
    }
    let topics: Vec<String> = NEXMARK_STREAMS
        .iter()
        .map(|(stream, _)| nexmark_topic(events, stream))
        .collect();
    preload(bootstrap, events, &topics, &fill).await
}

/// Makes `topics` (2 partitions each) hold `events` records in all, by running the Runnel
/// jobs of `fill` once; topics that already hold them are kept for later runs.
async fn preload(
    bootstrap: &str,
    events: u64,
    topics: &[String],
    fill: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::ClientConfig;
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    let consumer: BaseConsumer = config.create()?;
    let held: i64 = topics
        .iter()
        .flat_map(|topic| (0..2).map(move |p| (topic, p)))
        .map(|(topic, p)| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .map_or(0, |(low, high)| high - low)
        })
        .sum();
    if held == events as i64 {
        return Ok(());
    }
    let admin: AdminClient<_> = config.create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    admin.delete_topics(&names, &options).await?;
    for topic in topics {
        for attempt in 0.. {
            let created = admin
                .create_topics(
                    &[NewTopic::new(topic, 2, TopicReplication::Fixed(1))],
                    &options,
                )
                .await?;
            match &created[0] {
                Ok(_) => break,
                Err(_) if attempt < 60 => tokio::time::sleep(Duration::from_millis(500)).await,
                Err((_, code)) => return Err(format!("cannot create {topic}: {code}").into()),
            }
        }
    }
    let started = Instant::now();
    let mut jobs = Vec::new();
    for result in Engine::default().execute(fill).await? {
        if let Executed::Job(job) = result {
            jobs.push(job);
        }
    }
    for job in jobs {
        job.wait().await?;
    }
    println!(
        "(preloaded {events} events as JSON into {} in {:.1} s)",
        topics.join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

const NEXMARK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/sql/nexmark");

/// Flink's Nexmark DDL (generator table, person/auction/bid views) for `events` events.
fn nexmark_ddl(events: u64) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(format!("{NEXMARK_DIR}/ddl.sql"))?
        .replace(
            "${TPS}",
            &TPS.get().copied().unwrap_or(DEFAULT_TPS).to_string(),
        )
        .replace("${EVENTS_NUM}", &events.to_string()))
}

/// A query of `sql/nexmark/` (or of `benches/queries/`) with the Nexmark DDL in front and
/// its placeholders filled.
fn nexmark_sql(query: &str, events: u64) -> std::io::Result<String> {
    let body = std::fs::read_to_string(format!("{NEXMARK_DIR}/{query}.sql")).or_else(|_| {
        std::fs::read_to_string(
            concat!(env!("CARGO_MANIFEST_DIR"), "/benches/queries/").to_owned() + query + ".sql",
        )
    })?;
    Ok(format!(
        "{}\n{}",
        nexmark_ddl(events)?,
        body.replace("${FLINK_HOME}", NEXMARK_DIR)
    ))
}

/// Process CPU time (user + system) so far.
fn cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill.
    let failed = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) } != 0;
    if failed {
        return Duration::ZERO;
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// The process's peak resident memory so far (each generator query runs in a process of
/// its own, so this is that query's).
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// What one run measured.
struct Measured {
    wall: Duration,
    cpu: Duration,
    rows_out: u64,
    peak_mb: f64,
}

/// Runs a script whose last statement is a query (its rows read as they come) or an
/// `INSERT INTO` (a published query writing into its `blackhole` table).
async fn run_query(engine: &Engine, sql: &str) -> runnel::Result<Measured> {
    let (wall, cpu) = (Instant::now(), cpu_time());
    let mut rows_out = 0;
    for result in engine.execute(sql).await? {
        match result {
            Executed::Query(mut stream) => {
                while let Some(batch) = stream.next().await {
                    rows_out += batch?.num_rows() as u64;
                }
                stream.finish().await?;
            }
            Executed::Job(job) => rows_out += job.wait().await?.rows_out,
            _ => {}
        }
    }
    Ok(Measured {
        wall: wall.elapsed(),
        cpu: cpu_time().saturating_sub(cpu),
        rows_out,
        peak_mb: peak_rss_mb(),
    })
}

/// Streaming vs batch over the same pre-generated rows: a query on the memory table
/// `source` and its batch equivalent on a DataFusion table of the same name.
struct FloorQuery {
    name: &'static str,
    streaming: &'static str,
    batch: &'static str,
}

const BID_FLOOR: &[FloorQuery] = &[
    FloorQuery {
        name: "q1 (projection)",
        streaming: "SELECT auction, bidder, 0.908 * price AS price, dateTime, extra FROM bid",
        batch: "SELECT auction, bidder, 0.908 * price AS price, \"dateTime\", extra FROM bid",
    },
    FloorQuery {
        name: "q2 (filter)",
        streaming: "SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0",
        batch: "SELECT auction, price FROM bid WHERE auction % 123 = 0",
    },
    FloorQuery {
        name: "q7 inner (TUMBLE 10 s, MAX)",
        streaming: "SELECT MAX(price) AS maxprice, window_end FROM TABLE(TUMBLE(TABLE bid, \
                    DESCRIPTOR(dateTime), INTERVAL '10' SECOND)) GROUP BY window_start, window_end",
        batch: "SELECT MAX(price) AS maxprice, date_bin(INTERVAL '10 seconds', \"dateTime\") \
                + INTERVAL '10 seconds' AS window_end FROM bid GROUP BY 2",
    },
    FloorQuery {
        name: "TUMBLE 10 s, COUNT per auction",
        streaming: "SELECT auction, COUNT(*) AS num, window_end FROM TABLE(TUMBLE(TABLE bid, \
                    DESCRIPTOR(dateTime), INTERVAL '10' SECOND)) \
                    GROUP BY auction, window_start, window_end",
        batch: "SELECT auction, COUNT(*) AS num, date_bin(INTERVAL '10 seconds', \"dateTime\") \
                + INTERVAL '10 seconds' AS window_end FROM bid GROUP BY 1, 3",
    },
];

const CLAIMS_FLOOR: &[FloorQuery] = &[FloorQuery {
    name: "claims (TUMBLE 5 min, COUNT + SUM per policy)",
    streaming: "SELECT policy_id, window_start, window_end, COUNT(*) AS claim_count, \
                SUM(amount) AS total_amount FROM TABLE(TUMBLE(TABLE claims, \
                DESCRIPTOR(event_time), INTERVAL '5' MINUTES)) WHERE operation = 'INSERT' \
                GROUP BY policy_id, window_start, window_end",
    batch: "SELECT policy_id, date_bin(INTERVAL '5 minutes', event_time) AS window_start, \
            COUNT(*) AS claim_count, SUM(amount) AS total_amount FROM claims \
            WHERE operation = 'INSERT' GROUP BY 1, 2",
}];

/// The rows of `select` over the generator, collected (the floor's input).
async fn collect(sql: &str) -> runnel::Result<Vec<RecordBatch>> {
    let engine = Engine::default();
    // One reader: the batches in event-time order.
    engine.execute("SET 'parallelism.default' = '1';").await?;
    let mut out = Vec::new();
    for result in engine.execute(sql).await? {
        if let Executed::Query(mut stream) = result {
            while let Some(batch) = stream.next().await {
                out.push(batch?);
            }
            stream.finish().await?;
        }
    }
    Ok(out)
}

/// Runs of each engine per floor query; the fastest counts. A streaming query over 10M
/// events takes tens of milliseconds, where one scheduling hiccup is a large share.
/// `--floor-runs N` takes more (to profile one query, say).
const FLOOR_RUNS: usize = 5;

/// Runnel's time over `rows` (pushed into a memory table `table` with `ddl`), and
/// DataFusion's for the batch query over the same rows: the fastest of [`FLOOR_RUNS`]
/// runs of each.
async fn floor(
    table: &str,
    ddl: &str,
    rows: &[RecordBatch],
    query: &FloorQuery,
    runs: usize,
) -> runnel::Result<(Measured, Measured)> {
    let mut streamed = floor_streaming(table, ddl, rows, query).await?;
    let mut batch = floor_batch(table, rows, query).await?;
    for _ in 1..runs {
        streamed = fastest(streamed, floor_streaming(table, ddl, rows, query).await?);
        batch = fastest(batch, floor_batch(table, rows, query).await?);
    }
    Ok((streamed, batch))
}

/// The run of the two with less CPU time.
fn fastest(a: Measured, b: Measured) -> Measured {
    if a.cpu <= b.cpu {
        a
    } else {
        b
    }
}

/// One run of Runnel's streaming query over `rows`.
async fn floor_streaming(
    table: &str,
    ddl: &str,
    rows: &[RecordBatch],
    query: &FloorQuery,
) -> runnel::Result<Measured> {
    let engine = Engine::default();
    engine.execute("SET 'parallelism.default' = '1';").await?;
    engine.execute(ddl).await?;
    let input = engine.memory_table(table)?;
    // Pushed before the query starts: the memory table keeps them for its first reader,
    // so the timing below is the query alone.
    for batch in rows {
        input.push(batch.clone()).await?;
    }
    input.close();
    run_query(&engine, &format!("{};", query.streaming)).await
}

/// One run of DataFusion's batch query over `rows`, on one partition: per-core cost, as
/// Runnel runs each operator once here.
async fn floor_batch(
    table: &str,
    rows: &[RecordBatch],
    query: &FloorQuery,
) -> runnel::Result<Measured> {
    let mut config = SessionConfig::new().with_target_partitions(1);
    config.options_mut().sql_parser.enable_ident_normalization = false;
    let ctx = SessionContext::new_with_config(config);
    let schema = rows[0].schema();
    let mem = MemTable::try_new(schema, vec![rows.to_vec()])?;
    ctx.register_table(table, Arc::new(mem))?;
    let (started, cpu) = (Instant::now(), cpu_time());
    let batch_rows: usize = ctx
        .sql(query.batch)
        .await?
        .collect()
        .await?
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    Ok(Measured {
        wall: started.elapsed(),
        cpu: cpu_time().saturating_sub(cpu),
        rows_out: batch_rows as u64,
        peak_mb: 0.0,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let mut queries = Vec::new();
    let mut events: u64 = 10_000_000;
    let mut floor_events: u64 = 5_000_000;
    let mut floor_runs = FLOOR_RUNS;
    let mut single = false;
    let mut parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut kafka: Option<String> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--events" => events = args.next().ok_or("--events N")?.parse()?,
            "--floor-events" => floor_events = args.next().ok_or("--floor-events N")?.parse()?,
            "--floor-runs" => floor_runs = args.next().ok_or("--floor-runs N")?.parse()?,
            "--parallelism" => parallelism = args.next().ok_or("--parallelism N")?.parse()?,
            "--kafka" => kafka = Some(args.next().ok_or("--kafka BOOTSTRAP")?),
            "--tps" => {
                let tps: u64 = args.next().ok_or("--tps N")?.parse()?;
                TPS.set(tps).map_err(|_| "--tps given twice")?;
            }
            "--no-floor" => floor_events = 0,
            "--floor-only" => events = 0,
            // One generator query in this process (the runner starts one per query).
            "--single" => single = true,
            query => queries.push(query.to_string()),
        }
    }
    // With `--floor-only`, the queries named pick floor queries by their first word.
    let floor_names = queries.clone();
    if queries.is_empty() {
        queries = QUERIES.iter().map(|q| q.to_string()).collect();
    }
    if single {
        let query = &queries[0];
        let sql = if query == "claims" {
            claims_sql(events)
        } else if query == "claims-kafka" {
            let bootstrap = kafka
                .as_deref()
                .ok_or("claims-kafka needs --kafka BOOTSTRAP")?;
            format!(
                "{}\n{CLAIMS_QUERY}",
                claims_kafka_ddl(bootstrap, &claims_topic(events))
            )
        } else if let Some(base) = query.strip_suffix("-kafka") {
            let bootstrap = kafka
                .as_deref()
                .ok_or("-kafka queries need --kafka BOOTSTRAP")?;
            let generated = nexmark_sql(base, events)?;
            let body = &generated[nexmark_ddl(events)?.len()..];
            format!("{}\n{body}", nexmark_kafka_ddl(bootstrap, events))
        } else {
            nexmark_sql(query, events)?
        };
        let sql = format!("SET 'parallelism.default' = '{parallelism}';\n{sql}");
        let m = run_query(&Engine::default(), &sql).await?;
        println!(
            "{query:<8} {:>9.2} {:>12.0} {:>15.0} {:>10.0} {:>12}",
            m.wall.as_secs_f64(),
            events as f64 / m.wall.as_secs_f64(),
            events as f64 / m.cpu.as_secs_f64().max(1e-9),
            m.peak_mb,
            m.rows_out
        );
        return Ok(());
    }
    if events > 0 {
        println!(
            "Runnel Nexmark, in-process generator, {events} events per query, parallelism \
             {parallelism} (release build)"
        );
        println!(
            "{:<8} {:>9} {:>12} {:>15} {:>10} {:>12}",
            "query", "wall s", "events/s", "events/CPU-s", "peak MB", "rows out"
        );
        for query in &queries {
            if query.ends_with("-kafka") {
                let bootstrap = kafka
                    .as_deref()
                    .ok_or("-kafka queries need --kafka BOOTSTRAP")?;
                if query == "claims-kafka" {
                    preload_claims(bootstrap, events).await?;
                } else {
                    preload_nexmark(bootstrap, events).await?;
                }
            }
            let status = std::process::Command::new(std::env::current_exe()?)
                .args(["--single", query, "--events", &events.to_string()])
                .args(["--parallelism", &parallelism.to_string()])
                .args(kafka.iter().flat_map(|k| ["--kafka", k.as_str()]))
                .args([
                    "--tps",
                    &TPS.get().copied().unwrap_or(DEFAULT_TPS).to_string(),
                ])
                .status()?;
            if !status.success() {
                return Err(format!("{query} failed").into());
            }
        }
    }
    if floor_events == 0 {
        return Ok(());
    }

    println!("\nThe cost of streaming: Runnel over pre-generated Arrow batches (memory table) / DataFusion batch, {floor_events} events, both on one core (parallelism 1, one partition)");
    println!(
        "{:<46} {:>13} {:>17} {:>10} {:>9}",
        "query", "runnel wall/cpu", "datafusion wall/cpu", "wall ratio", "cpu ratio"
    );
    let bid_ddl = "CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, \
                   url STRING, dateTime TIMESTAMP(3), extra STRING, \
                   WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND) \
                   WITH ('connector' = 'memory');";
    let bids = collect(&format!(
        "{}\nSELECT auction, bidder, price, channel, url, dateTime, extra FROM bid;",
        nexmark_ddl(floor_events)?
    ))
    .await?;
    let claims_ddl = "CREATE TABLE claims (policy_id BIGINT, amount DECIMAL(12, 2), \
                      event_time TIMESTAMP(3), operation STRING, \
                      WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND) \
                      WITH ('connector' = 'memory');";
    let claims = collect(&claims_sql(floor_events).replace(
        CLAIMS_QUERY,
        "SELECT policy_id, amount, event_time, operation FROM claims;",
    ))
    .await?;
    for (table, ddl, rows, floor_queries) in [
        ("bid", bid_ddl, &bids, BID_FLOOR),
        ("claims", claims_ddl, &claims, CLAIMS_FLOOR),
    ] {
        // With `--floor-only q2 claims`, say, only the floor queries named so.
        let named = |query: &&FloorQuery| {
            events != 0
                || floor_names.is_empty()
                || floor_names
                    .iter()
                    .any(|q| query.name.split(' ').next() == Some(q))
        };
        for query in floor_queries.iter().filter(named) {
            let (runnel, datafusion) = floor(table, ddl, rows, query, floor_runs).await?;
            let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
            println!(
                "{:<46} {:>6.3}/{:<6.3} {:>8.3}/{:<8.3} {:>10.2} {:>9.2}   ({} / {} rows)",
                query.name,
                runnel.wall.as_secs_f64(),
                runnel.cpu.as_secs_f64(),
                datafusion.wall.as_secs_f64(),
                datafusion.cpu.as_secs_f64(),
                ratio(runnel.wall, datafusion.wall),
                ratio(runnel.cpu, datafusion.cpu),
                runnel.rows_out,
                datafusion.rows_out,
            );
        }
    }
    Ok(())
}
