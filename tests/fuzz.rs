//! Fuzzing the record decoders and the SQL front end: any bytes as a record (JSON, CSV,
//! Debezium JSON, with and without `ignore-parse-errors`), any text as a script (parsed,
//! planned and explained by `Engine::validate`) must give rows or a clear error — never a
//! panic, never a hang.
//!
//! The inputs are a fixed corpus of valid records and scripts, their mutations (bit
//! flips, cut and repeated ranges, splices of two inputs, tokens that stress parsers such
//! as `1e999` or a 30-digit number) and fresh random bytes, from a seeded generator: each
//! run tries new inputs, and a failure prints the seed that repeats it. How many inputs:
//! `RUNNEL_FUZZ_RECORDS` per decoder (default 20,000) and `RUNNEL_FUZZ_SCRIPTS` (default
//! 1,000); `RUNNEL_FUZZ_SEED` fixes the seed. The README's longer run sets millions.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use runnel::connectors::format::Format;
use runnel::connectors::options::TableOptions;
use runnel::sql::{parse_script, Catalog, Statement, StreamPlanner, TableDef};
use runnel::Engine;

/// No single input may take this long (a hang, or time growing out of proportion).
const SLOWEST: Duration = Duration::from_secs(2);

/// A small, seeded random generator (xorshift*), so a failing run can be repeated.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seed() -> u64 {
    std::env::var("RUNNEL_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        })
}

fn count(variable: &str, default: usize) -> usize {
    std::env::var(variable)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Tokens that stress number, string, time and structure parsing.
const TOKENS: &[&str] = &[
    "null",
    "true",
    "1e999",
    "-1e-999",
    "-0",
    "NaN",
    "999999999999999999999999999999",
    "-9223372036854775809",
    "0.0000000000000000000000000001",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"\\\"",
    "\"2026-13-45 25:61:61\"",
    "\"2026-01-01T00:00:00.123456789Z\"",
    "\"+275760-09-13 00:00:00\"",
    "{}",
    "[]",
    "[[[[[[[[[[",
    "{\"a\":{\"b\":{\"c\":",
    ",,,,",
    "\"\"\"",
    "\r\n",
    "\u{feff}",
    "é",
    "\u{10ffff}",
];

/// `input` changed in one to four places.
fn mutate(random: &mut Random, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=random.below(4) {
        let at = random.below(out.len() + 1);
        match random.below(8) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << random.below(8);
            }
            1 => out.insert(at, random.next() as u8),
            2 => {
                let end = (at + random.below(16)).min(out.len());
                out.drain(at..end);
            }
            3 => out.truncate(at),
            4 => {
                let end = (at + random.below(32)).min(out.len());
                let repeated = out[at..end].to_vec();
                out.splice(at..at, repeated);
            }
            5 => {
                let other = &corpus[random.below(corpus.len())];
                let from = random.below(other.len() + 1);
                let end = (from + random.below(64)).min(other.len());
                out.splice(at..at, other[from..end].iter().copied());
            }
            _ => {
                let token = TOKENS[random.below(TOKENS.len())].as_bytes();
                let end = (at + random.below(8)).min(out.len());
                out.splice(at..end, token.iter().copied());
            }
        }
    }
    out
}

/// The next input: a corpus item, a mutation of one, or random bytes.
fn next_input(random: &mut Random, corpus: &[Vec<u8>]) -> Vec<u8> {
    match random.below(10) {
        0 => corpus[random.below(corpus.len())].clone(),
        1 => (0..random.below(64)).map(|_| random.next() as u8).collect(),
        _ => {
            let base = &corpus[random.below(corpus.len())];
            mutate(random, base, corpus)
        }
    }
}

/// Columns of every kind a record can fill.
const COLUMNS: &str = "claim_id STRING NOT NULL, policy_id BIGINT, n INT, amount DECIMAL(12, 2),
    ratio DOUBLE, approved BOOLEAN, event_time TIMESTAMP(3), day DATE,
    holder ROW<name STRING, since TIMESTAMP(3), score DECIMAL(5, 1)>, tags ARRAY<STRING>,
    attrs MAP<STRING, BIGINT>";

/// The table `COLUMNS` declares with `options`.
fn table(options: &str) -> TableDef {
    let sql = format!(
        "CREATE TABLE fuzzed ({COLUMNS}) WITH ('connector' = 'kafka', 'topic' = 't',
         'properties.bootstrap.servers' = '127.0.0.1:1'{options})"
    );
    let Statement::CreateTable(create) = parse_script(&sql).expect("DDL").remove(0) else {
        panic!("not a CREATE TABLE")
    };
    StreamPlanner::new()
        .create_table(&Catalog::default(), *create)
        .expect("table")
}

/// Valid records of the table in each format.
fn record_corpus(format: &str) -> Vec<Vec<u8>> {
    let json = [
        r#"{"claim_id": "c-1", "policy_id": 7, "n": 3, "amount": 125.50, "ratio": 0.25, "approved": true, "event_time": "2026-01-01 00:00:01.250", "day": "2026-01-01", "holder": {"name": "Ann", "since": "2020-02-02 10:00:00", "score": 9.5}, "tags": ["a", "b"], "attrs": {"x": 1}}"#,
        r#"{"claim_id": "c-2", "policy_id": null, "amount": "3.10", "event_time": "2026-01-01T00:00:02Z"}"#,
        r#"{"claim_id": "c-3", "policy_id": -9223372036854775808, "ratio": -1.5e300, "tags": [], "attrs": {}}"#,
    ];
    match format {
        "csv" => vec![
            b"c-1,7,3,125.50,0.25,true,2026-01-01 00:00:01.250,2026-01-01,,,".to_vec(),
            b"\"c,2\",,,-3.10,,false,2026-01-01T00:00:02,,,,".to_vec(),
        ],
        "debezium-json" => {
            let mut corpus: Vec<Vec<u8>> = Vec::new();
            for (op, before, after) in [
                ("c", "null", json[0]),
                ("u", json[1], json[0]),
                ("d", json[2], "null"),
                ("r", "null", json[1]),
            ] {
                let event = format!(
                    r#"{{"before": {before}, "after": {after}, "op": "{op}", "ts_ms": 1767225600000, "source": {{"table": "claims", "lsn": 42}}}}"#
                );
                corpus.push(format!(r#"{{"schema": {{}}, "payload": {event}}}"#).into_bytes());
                corpus.push(event.into_bytes());
            }
            corpus
        }
        _ => json.iter().map(|r| r.as_bytes().to_vec()).collect(),
    }
}

thread_local! {
    /// The records being decoded, for the panic hook: a panic that cannot unwind aborts
    /// the process before the test could name its input.
    static DECODING: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Prints the records being decoded with every panic message, once per process.
fn name_the_input_on_panic() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default(info);
            DECODING.with(|d| {
                if let Ok(records) = d.try_borrow() {
                    if !records.is_empty() {
                        eprintln!("while decoding {records:?}");
                    }
                }
            });
        }));
    });
}

/// Decodes `records` as `table`'s format; a panic fails the test with the input.
fn decode_or_fail(format: &Format, table: &TableDef, records: &[Vec<u8>], seed: u64) {
    DECODING.with(|d| d.replace(records.to_vec()));
    let slices: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
    let started = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let _ = format.decode(table, &slices, |i| format!("record {i}"));
    }));
    let shown: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect();
    assert!(
        outcome.is_ok(),
        "decoding panicked (RUNNEL_FUZZ_SEED={seed}) on {shown:?}"
    );
    assert!(
        started.elapsed() < SLOWEST,
        "decoding took {:?} (RUNNEL_FUZZ_SEED={seed}) on {shown:?}",
        started.elapsed()
    );
}

#[test]
fn any_bytes_as_a_record_decode_or_fail_cleanly() {
    let seed = seed();
    let inputs = count("RUNNEL_FUZZ_RECORDS", 20_000);
    eprintln!("fuzzing decoders: {inputs} records each, RUNNEL_FUZZ_SEED={seed}");
    name_the_input_on_panic();
    let mut random = Random(seed);
    for (format, options) in [
        ("json", ""),
        ("json", ", 'json.ignore-parse-errors' = 'true'"),
        ("csv", ", 'format' = 'csv'"),
        (
            "csv",
            ", 'format' = 'csv', 'csv.ignore-parse-errors' = 'true'",
        ),
        ("debezium-json", ", 'format' = 'debezium-json'"),
        (
            "debezium-json",
            ", 'format' = 'debezium-json', 'debezium-json.schema-include' = 'true', \
             'debezium-json.ignore-parse-errors' = 'true'",
        ),
    ] {
        let table = table(options);
        let table_options = TableOptions::validate(
            &table.name,
            "kafka",
            &table.options,
            &[
                "topic",
                "format",
                "json.ignore-parse-errors",
                "csv.ignore-parse-errors",
                "debezium-json.schema-include",
                "debezium-json.ignore-parse-errors",
            ],
            &["properties."],
        )
        .expect("options");
        let decoder = Format::for_reading(&table_options, &table).expect("format");
        let corpus = record_corpus(format);
        let mut tried = 0;
        while tried < inputs {
            // One to eight records per call: the batch path, then record by record.
            let batch: Vec<Vec<u8>> = (0..=random.below(8))
                .map(|_| next_input(&mut random, &corpus))
                .collect();
            tried += batch.len();
            decode_or_fail(&decoder, &table, &batch, seed);
        }
    }
}

/// Scripts of every statement kind, over tables that need no running system.
fn script_corpus() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/nexmark");
    let ddl = std::fs::read_to_string(dir.join("ddl.sql")).expect("ddl.sql");
    let mut corpus: Vec<Vec<u8>> = ["q0", "q4", "q5", "q7", "q11", "q12", "q19", "q23"]
        .iter()
        .map(|q| {
            let query = std::fs::read_to_string(dir.join(format!("{q}.sql"))).expect("query");
            format!("{ddl}\n{query}").into_bytes()
        })
        .collect();
    let claims = "CREATE TABLE claims (claim_id STRING, policy_id BIGINT, amount DECIMAL(12, 2),
            operation STRING, event_time TIMESTAMP(3),
            WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
        WITH ('connector' = 'datagen', 'number-of-rows' = '10');";
    for query in [
        "SELECT policy_id, COUNT(*), SUM(amount) FROM TABLE(TUMBLE(TABLE claims, DESCRIPTOR(event_time), INTERVAL '5' MINUTE)) WHERE operation = 'INSERT' GROUP BY policy_id, window_start, window_end;",
        "SELECT policy_id, window_end, MAX(amount) FROM TABLE(HOP(TABLE claims, DESCRIPTOR(event_time), INTERVAL '1' MINUTE, INTERVAL '5' MINUTE)) GROUP BY policy_id, window_start, window_end;",
        "SELECT policy_id, SUM(amount) OVER (PARTITION BY policy_id ORDER BY event_time RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW) FROM claims;",
        "SELECT a.claim_id, b.claim_id FROM claims a JOIN claims b ON a.policy_id = b.policy_id AND a.event_time BETWEEN b.event_time - INTERVAL '1' MINUTE AND b.event_time;",
        "SET 'table.exec.state.ttl' = '1 h'; SELECT policy_id, COUNT(DISTINCT claim_id) FROM claims GROUP BY policy_id;",
        "EXPLAIN SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY policy_id ORDER BY amount DESC) AS r FROM claims) WHERE r <= 3;",
        "SELECT policy_id, SESSION_START(event_time, INTERVAL '10' SECOND), COUNT(*) FROM claims GROUP BY policy_id, SESSION(event_time, INTERVAL '10' SECOND);",
        "CREATE VIEW big AS SELECT * FROM claims WHERE amount > 100; SELECT CAST(amount AS STRING), COALESCE(operation, 'x'), CASE WHEN amount > 1 THEN 1 ELSE 0 END FROM big;",
    ] {
        corpus.push(format!("{claims}\n{query}").into_bytes());
    }
    corpus
}

/// SQL keywords and fragments the mutations splice in.
const SQL_TOKENS: &[&str] = &[
    " SELECT ",
    " FROM ",
    " WHERE ",
    " GROUP BY ",
    " JOIN ",
    " ON ",
    " OVER (",
    ")",
    "(",
    " TABLE(",
    " DESCRIPTOR(",
    " INTERVAL '0' SECOND",
    " INTERVAL '-1' DAY",
    " AS ",
    ",",
    ";",
    "'",
    "`",
    "\"",
    " NULL ",
    " CAST(",
    " ROW<a INT>",
    " UNION ALL ",
    " LIMIT 0",
    " WATERMARK FOR ",
    " PRIMARY KEY (",
    " NOT ENFORCED",
    " ROW_NUMBER() ",
    "*",
    " = ",
    " BETWEEN ",
    " AND ",
    " EXPLAIN ",
    " INSERT INTO ",
    " SET ",
    " 99999999999999999999 ",
];

#[test]
fn any_text_as_a_script_validates_or_fails_cleanly() {
    let seed = seed();
    let inputs = count("RUNNEL_FUZZ_SCRIPTS", 1_000);
    eprintln!("fuzzing the SQL front end: {inputs} scripts, RUNNEL_FUZZ_SEED={seed}");
    let mut random = Random(seed);
    let corpus = script_corpus();
    let mut engine = Engine::default();
    for tried in 0..inputs {
        // Scripts declare tables and settings into the engine; a fresh one now and then
        // keeps a long run's engine the size of a session's, not of millions of scripts.
        if tried % 1_000 == 999 {
            engine = Engine::default();
        }
        let mut script = next_input(&mut random, &corpus);
        // Mostly SQL-shaped changes: a keyword spliced in, a word dropped.
        if random.below(2) == 0 {
            let at = random.below(script.len() + 1);
            let token = SQL_TOKENS[random.below(SQL_TOKENS.len())].as_bytes();
            script.splice(at..at, token.iter().copied());
        }
        let text = String::from_utf8_lossy(&script).into_owned();
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| engine.validate(&text)));
        assert!(
            outcome.is_ok(),
            "validate panicked (RUNNEL_FUZZ_SEED={seed}) on:\n{text}"
        );
        assert!(
            started.elapsed() < SLOWEST * 5,
            "validate took {:?} (RUNNEL_FUZZ_SEED={seed}) on:\n{text}",
            started.elapsed()
        );
    }
}
