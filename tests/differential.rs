//! Randomized differential test: for seeded random event streams (keys, values, bounded
//! disorder, a few late rows, several batches), Runnel's streaming window aggregate must
//! equal DataFusion's batch answer over the same rows minus those Runnel reported late
//! (routed to a late-data sink, so the test knows which). The batch side does not use
//! Runnel's window assignment: it joins the events with an explicit table of every window,
//! or, for sessions, numbers sessions with `LAG` over each key's rows.
//!
//! A failure prints the seed and window; `RUNNEL_SEED=<seed>` replays one seed.

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use runnel::{Engine, Executed};

use crate::common::{format_ts, scratch_dir, Rng};

/// Seeds per window kind.
const SEEDS: u64 = 200;
const EVENTS: usize = 150;
const BASE_MS: i64 = 1_767_225_600_000;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Tumble {
        size: i64,
    },
    Hop {
        slide: i64,
        size: i64,
    },
    Cumulate {
        step: i64,
        size: i64,
    },
    Session {
        gap: i64,
    },
    /// `OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL .. PRECEDING AND CURRENT ROW)`.
    OverRange {
        range: i64,
    },
    /// `OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN n PRECEDING AND CURRENT ROW)`.
    OverRows {
        rows: u64,
    },
}

/// Window kinds the test draws from.
const FAMILIES: usize = 5;

impl Kind {
    fn random(family: usize, rng: &mut Rng) -> Kind {
        let seconds = |n: u64| 1000 * n as i64;
        match family {
            0 => Kind::Tumble {
                size: seconds(1 + rng.below(10)),
            },
            1 => {
                let slide = seconds(1 + rng.below(4));
                // Half the time the slide divides the size: aggregated per pane.
                let size = if rng.below(2) == 0 {
                    slide * (2 + rng.below(5) as i64)
                } else {
                    slide + seconds(1 + rng.below(8))
                };
                Kind::Hop { slide, size }
            }
            2 => {
                let step = seconds(1 + rng.below(3));
                Kind::Cumulate {
                    step,
                    size: step * (1 + rng.below(5) as i64),
                }
            }
            3 => Kind::Session {
                gap: seconds(1 + rng.below(3)),
            },
            _ if rng.below(2) == 0 => Kind::OverRange {
                range: seconds(rng.below(6)),
            },
            _ => Kind::OverRows { rows: rng.below(6) },
        }
    }

    /// The streaming query; for OVER windows also the batch query.
    fn query(&self) -> String {
        let over = |frame: String| {
            format!(
                "SELECT id, k, ts, v, SUM(v) OVER w AS s, COUNT(*) OVER w AS n, MAX(v) OVER w AS hi
                 FROM events WINDOW w AS (PARTITION BY k ORDER BY ts {frame})"
            )
        };
        match *self {
            Kind::OverRange { range } => over(format!(
                "RANGE BETWEEN INTERVAL '{}' SECOND PRECEDING AND CURRENT ROW",
                range / 1000
            )),
            Kind::OverRows { rows } => {
                over(format!("ROWS BETWEEN {rows} PRECEDING AND CURRENT ROW"))
            }
            _ => format!(
                "SELECT k, window_start, window_end, {AGGREGATES}
                 FROM TABLE({}) GROUP BY k, window_start, window_end",
                self.sql()
            ),
        }
    }

    fn sql(&self) -> String {
        let interval = |ms: i64| format!("INTERVAL '{}' SECOND", ms / 1000);
        match *self {
            Kind::Tumble { size } => {
                format!("TUMBLE(TABLE events, DESCRIPTOR(ts), {})", interval(size))
            }
            Kind::Hop { slide, size } => {
                format!(
                    "HOP(TABLE events, DESCRIPTOR(ts), {}, {})",
                    interval(slide),
                    interval(size)
                )
            }
            Kind::Cumulate { step, size } => {
                format!(
                    "CUMULATE(TABLE events, DESCRIPTOR(ts), {}, {})",
                    interval(step),
                    interval(size)
                )
            }
            Kind::Session { gap } => format!(
                "SESSION(TABLE events PARTITION BY k, DESCRIPTOR(ts), {})",
                interval(gap)
            ),
            Kind::OverRange { .. } | Kind::OverRows { .. } => unreachable!("not a table function"),
        }
    }

    /// Every window that can hold an event in `[min, max]`, enumerated independently.
    fn windows(&self, min: i64, max: i64) -> Vec<(i64, i64)> {
        let floor = |t: i64, unit: i64| t - t.rem_euclid(unit);
        let mut out = Vec::new();
        match *self {
            Kind::Tumble { size } => {
                let mut s = floor(min, size);
                while s <= max {
                    out.push((s, s + size));
                    s += size;
                }
            }
            Kind::Hop { slide, size } => {
                let mut s = floor(min - size, slide);
                while s <= max {
                    out.push((s, s + size));
                    s += slide;
                }
            }
            Kind::Cumulate { step, size } => {
                let mut s = floor(min, size);
                while s <= max {
                    for j in 1..=size / step {
                        out.push((s, s + j * step));
                    }
                    s += size;
                }
            }
            _ => unreachable!("only TUMBLE, HOP and CUMULATE windows are enumerable upfront"),
        }
        out
    }
}

struct Events {
    keys: Vec<i64>,
    values: Vec<i64>,
    times: Vec<i64>,
    /// Whether the event was made 45 s behind: the only ones Runnel may call late.
    behind: Vec<bool>,
}

impl Events {
    /// Fails unless every row Runnel called late (`late`, as indexes) was made behind:
    /// a window or join that drops on-time rows as late must not be excused by the
    /// comparison leaving them out.
    fn assert_late_were_behind(&self, late: &[usize], what: &str) {
        for &i in late {
            assert!(
                self.behind.get(i).copied().unwrap_or(false),
                "{what}: event {i} at {} was on time, yet counted late",
                self.times[i]
            );
        }
    }
}

/// Event time advances ~300 ms per event, out of order by up to 2 s (within the watermark
/// delay of 3 s). About one row in 20 is instead 45 s behind: late for every window it
/// could belong to once an earlier batch moved the watermark (windows are at most 15 s,
/// a batch at most 60 rows), on time in the first batch.
fn events(rng: &mut Rng) -> Events {
    let mut e = Events {
        keys: vec![],
        values: vec![],
        times: vec![],
        behind: vec![],
    };
    for i in 0..EVENTS {
        e.keys.push(rng.below(4) as i64);
        e.values.push(rng.below(1000) as i64 - 200);
        let behind = if rng.below(20) == 0 {
            45_000
        } else {
            rng.below(2000) as i64
        };
        // Distinct times, so ROWS frames have one order in both engines.
        let mut time = BASE_MS + i as i64 * 300 - behind;
        while e.times.contains(&time) {
            time += 1;
        }
        e.times.push(time);
        e.behind.push(behind == 45_000);
    }
    e
}

const AGGREGATES: &str = "COUNT(*) AS n, SUM(v) AS total, MIN(v) AS lo, MAX(v) AS hi";

/// The streaming result (sorted rows) and the ids of the rows Runnel reported late.
async fn streaming(
    name: &str,
    kind: Kind,
    events: &Events,
    rng: &mut Rng,
) -> (Vec<String>, Vec<usize>) {
    // Write the events as several files: each is one batch, so watermarks advance between them.
    let dir = scratch_dir(name);
    let late_dir = scratch_dir(&format!("{name}-late"));
    let late_path = late_dir.join("late.json");
    write_batches(&dir, &event_lines(events, 0), rng);
    let sql = format!(
        "CREATE TABLE events (id BIGINT, k BIGINT, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '3' SECOND)
           WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
         CREATE TABLE late_events (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
         SET 'runnel.late-data.sink' = 'late_events';
         {};",
        dir.display(),
        late_path.display(),
        kind.query()
    );
    let mut late_count = 0;
    let mut rows = Vec::new();
    for result in Engine::default()
        .execute(&sql)
        .await
        .expect("streaming query plans")
    {
        if let Executed::Query(mut stream) = result {
            while let Some(batch) = stream.next().await {
                rows.extend(
                    runnel::connectors::print::format_rows(&batch.expect("batch"), "")
                        .expect("format"),
                );
            }
            let metrics = stream.finish().await.expect("streaming query runs");
            assert_eq!(
                metrics.late_rows_routed, metrics.late_rows,
                "{name}: every late row is routed"
            );
            late_count = metrics.late_rows;
        }
    }
    rows.sort();
    let late: Vec<usize> = late_ids(&late_path);
    assert_eq!(
        late.len() as u64,
        late_count,
        "{name}: every row counted late reaches the late-data sink"
    );
    let _ = std::fs::remove_dir_all(late_dir);
    (rows, late)
}

/// DataFusion's batch answer over `events` minus the rows in `late`.
async fn batch(kind: Kind, events: &Events, late: &[usize]) -> Vec<String> {
    let on_time: Vec<usize> = (0..EVENTS).filter(|i| !late.contains(i)).collect();
    let pick = |column: &[i64]| on_time.iter().map(|&i| column[i]).collect::<Vec<_>>();
    let events = &Events {
        keys: pick(&events.keys),
        values: pick(&events.values),
        times: pick(&events.times),
        behind: Vec::new(),
    };
    let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
    let event_schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
        Field::new("ts", ts.clone(), false),
        Field::new("t", DataType::Int64, false),
    ]));
    let event_batch = RecordBatch::try_new(
        event_schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(
                on_time.iter().map(|&i| i as i64),
            )),
            Arc::new(Int64Array::from(events.keys.clone())),
            Arc::new(Int64Array::from(events.values.clone())),
            Arc::new(TimestampMillisecondArray::from(events.times.clone())),
            Arc::new(Int64Array::from(events.times.clone())),
        ],
    )
    .expect("events batch");
    let ctx = SessionContext::new();
    ctx.register_table(
        "events",
        Arc::new(MemTable::try_new(event_schema, vec![vec![event_batch]]).expect("table")),
    )
    .expect("register events");
    if let Kind::OverRange { .. } | Kind::OverRows { .. } = kind {
        // The same query, as a batch query: OVER windows are plain SQL.
        return collect_sorted(&ctx, &kind.query()).await;
    }
    if let Kind::Session { gap } = kind {
        // A row starts a session when its key's previous row is `gap` or more before it.
        return collect_sorted(&ctx, &format!(
            "WITH flagged AS (
                 SELECT k, v, t, CASE WHEN t - LAG(t) OVER (PARTITION BY k ORDER BY t) < {gap}
                                      THEN 0 ELSE 1 END AS starts
                 FROM events),
             numbered AS (
                 SELECT k, v, t, SUM(starts) OVER (PARTITION BY k ORDER BY t ROWS UNBOUNDED PRECEDING) AS session
                 FROM flagged)
             SELECT k, to_timestamp_millis(MIN(t)) AS window_start,
                    to_timestamp_millis(MAX(t) + {gap}) AS window_end, {AGGREGATES}
             FROM numbered GROUP BY k, session"
        ))
        .await;
    }
    let min = *events.times.iter().min().expect("events");
    let max = *events.times.iter().max().expect("events");
    let windows = kind.windows(min, max);
    let window_schema = Arc::new(Schema::new(vec![
        Field::new("ws", ts.clone(), false),
        Field::new("we", ts, false),
    ]));
    let window_batch = RecordBatch::try_new(
        window_schema.clone(),
        vec![
            Arc::new(TimestampMillisecondArray::from(
                windows.iter().map(|w| w.0).collect::<Vec<_>>(),
            )),
            Arc::new(TimestampMillisecondArray::from(
                windows.iter().map(|w| w.1).collect::<Vec<_>>(),
            )),
        ],
    )
    .expect("windows batch");
    ctx.register_table(
        "windows",
        Arc::new(MemTable::try_new(window_schema, vec![vec![window_batch]]).expect("table")),
    )
    .expect("register windows");
    collect_sorted(
        &ctx,
        &format!(
            "SELECT k, ws AS window_start, we AS window_end, {AGGREGATES}
             FROM events JOIN windows ON ts >= ws AND ts < we
             GROUP BY k, ws, we"
        ),
    )
    .await
}

/// Runs a batch query; its rows formatted like Runnel's, sorted.
async fn collect_sorted(ctx: &SessionContext, sql: &str) -> Vec<String> {
    let frame = ctx.sql(sql).await.expect("batch query plans");
    let mut rows = Vec::new();
    for batch in frame.collect().await.expect("batch query runs") {
        rows.extend(runnel::connectors::print::format_rows(&batch, "").expect("format"));
    }
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_aggregates_equal_datafusion_batch_results() {
    let only: Option<u64> = std::env::var("RUNNEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let seeds: Vec<u64> = match only {
        Some(seed) => vec![seed],
        None => (1..=SEEDS).collect(),
    };
    let (mut checked, mut late_rows) = (0, 0);
    for family in 0..FAMILIES {
        for &seed in &seeds {
            let mut rng = Rng::new(seed * 7919 + family as u64);
            let kind = Kind::random(family, &mut rng);
            let events = events(&mut rng);
            let name = format!("diff-{family}-{seed}");
            let (actual, late) = streaming(&name, kind, &events, &mut rng).await;
            events.assert_late_were_behind(&late, &format!("seed {seed} ({kind:?})"));
            let expected = batch(kind, &events, &late).await;
            assert!(!expected.is_empty());
            late_rows += late.len();
            assert_eq!(
                actual, expected,
                "seed {seed} ({kind:?}) differs from DataFusion's batch result; replay with RUNNEL_SEED={seed}"
            );
            let _ = std::fs::remove_dir_all(crate::common::scratch_dir(&name));
            checked += 1;
        }
    }
    // Events made behind after the first batch are late: some must have been seen as such.
    assert!(
        late_rows > 0 || only.is_some(),
        "no seed had a late row: the lateness check is not exercised"
    );
    eprintln!("{checked} seeded streams matched DataFusion ({late_rows} late rows excluded)");
}

/// The ids the late-data sink wrote (`{"id":n}` lines; none if it wrote nothing).
fn late_ids<T: std::str::FromStr>(path: &std::path::Path) -> Vec<T> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let id = line.trim_start_matches(r#"{"id":"#).trim_end_matches('}');
            id.parse()
                .unwrap_or_else(|_| panic!("a late row id in {line}"))
        })
        .collect()
}

/// The events as JSON lines, ids from `base`.
fn event_lines(e: &Events, base: usize) -> Vec<String> {
    (0..EVENTS)
        .map(|i| {
            format!(
                r#"{{"id":{},"k":{},"v":{},"ts":"{}"}}"#,
                base + i,
                e.keys[i],
                e.values[i],
                format_ts(e.times[i])
            )
        })
        .collect()
}

/// Writes rows as JSON lines in several files (one batch each), split at random.
fn write_batches(dir: &std::path::Path, lines: &[String], rng: &mut Rng) {
    let mut start = 0;
    let mut part = 0;
    while start < lines.len() {
        let len = (1 + rng.below(60) as usize).min(lines.len() - start);
        std::fs::write(
            dir.join(format!("part-{part:04}.json")),
            lines[start..start + len].join("\n"),
        )
        .expect("write events");
        start += len;
        part += 1;
    }
}

/// A join shape the join differential test draws.
#[derive(Debug, Clone, Copy)]
enum JoinKind {
    /// `left.ts - right.ts` in `[lower, upper]` seconds; `join` is `JOIN`, `LEFT JOIN`, ...
    Interval {
        lower: i64,
        upper: i64,
        join: &'static str,
    },
    /// A TUMBLE window join of `size` seconds, `outer` = full outer.
    Window { size: i64, full_outer: bool },
}

impl JoinKind {
    fn random(rng: &mut Rng) -> JoinKind {
        if rng.below(2) == 0 {
            let lower = rng.below(8) as i64 - 6;
            JoinKind::Interval {
                lower,
                upper: lower + 1 + rng.below(6) as i64,
                join: ["JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN"][rng.below(4) as usize],
            }
        } else {
            JoinKind::Window {
                size: 1 + rng.below(5) as i64,
                full_outer: rng.below(2) == 0,
            }
        }
    }

    /// The streaming query, and the batch query DataFusion answers over the same rows.
    fn queries(&self) -> (String, String) {
        match *self {
            JoinKind::Interval { lower, upper, join } => {
                let query = format!(
                    "SELECT l.id AS left_id, r.id AS right_id, l.v + r.v AS total FROM lefts l {join} rights r
                     ON l.k = r.k AND l.ts BETWEEN r.ts + INTERVAL '{lower}' SECOND AND r.ts + INTERVAL '{upper}' SECOND"
                );
                (query.clone(), query)
            }
            JoinKind::Window { size, full_outer } => {
                let join = if full_outer { "FULL JOIN" } else { "JOIN" };
                let streaming = format!(
                    "SELECT l.id AS left_id, r.id AS right_id, COALESCE(l.window_start, r.window_start) AS ws
                     FROM (SELECT * FROM TABLE(TUMBLE(TABLE lefts, DESCRIPTOR(ts), INTERVAL '{size}' SECOND))) l
                     {join} (SELECT * FROM TABLE(TUMBLE(TABLE rights, DESCRIPTOR(ts), INTERVAL '{size}' SECOND))) r
                     ON l.k = r.k AND l.window_start = r.window_start AND l.window_end = r.window_end"
                );
                // Windows computed independently from epoch milliseconds.
                let ms = size * 1000;
                let windowed = |t: &str| {
                    format!(
                        "(SELECT id, k, to_timestamp_millis(t - ((t % {ms}) + {ms}) % {ms}) AS ws FROM {t})"
                    )
                };
                let batch = format!(
                    "SELECT l.id AS left_id, r.id AS right_id, COALESCE(l.ws, r.ws) AS ws
                     FROM {} l {join} {} r ON l.k = r.k AND l.ws = r.ws",
                    windowed("lefts"),
                    windowed("rights")
                );
                (streaming, batch)
            }
        }
    }
}

/// Joins of two streams: two random streams (ids: left 0.., right 1000..; keys, values,
/// disorder, some late rows) joined by an interval join or a (full outer) window join must
/// equal DataFusion's batch join of the same rows minus the rows Runnel routed as late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_joins_equal_datafusion_batch_joins() {
    let only: Option<u64> = std::env::var("RUNNEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let seeds: Vec<u64> = match only {
        Some(seed) => vec![seed],
        None => (1..=2 * SEEDS).collect(),
    };
    let (mut matched_rows, mut late_rows) = (0, 0);
    let mut kinds = [0; 2];
    for &seed in &seeds {
        let mut rng = Rng::new(seed * 104_729 + 17);
        let (left, right) = (events(&mut rng), events(&mut rng));
        let kind = JoinKind::random(&mut rng);
        kinds[usize::from(matches!(kind, JoinKind::Window { .. }))] += 1;
        let (streaming_query, batch_query) = kind.queries();
        let name = format!("join-diff-{seed}");
        let dir = scratch_dir(&name);
        let (left_dir, right_dir) = (dir.join("left"), dir.join("right"));
        std::fs::create_dir_all(&left_dir).expect("dir");
        std::fs::create_dir_all(&right_dir).expect("dir");
        write_batches(&left_dir, &event_lines(&left, 0), &mut rng);
        write_batches(&right_dir, &event_lines(&right, 1000), &mut rng);
        let late_path = dir.join("late.json");
        let sql = format!(
            "CREATE TABLE lefts (id BIGINT, k BIGINT, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '3' SECOND)
               WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
             CREATE TABLE rights (id BIGINT, k BIGINT, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '3' SECOND)
               WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
             CREATE TABLE late_rows (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
             SET 'runnel.late-data.sink' = 'late_rows';
             {streaming_query};",
            left_dir.display(),
            right_dir.display(),
            late_path.display(),
        );
        let mut actual = Vec::new();
        for result in Engine::default().execute(&sql).await.expect("join plans") {
            if let Executed::Query(mut stream) = result {
                while let Some(batch) = stream.next().await {
                    actual.extend(
                        runnel::connectors::print::format_rows(&batch.expect("batch"), "")
                            .expect("format"),
                    );
                }
                let metrics = stream.finish().await.expect("join runs");
                assert_eq!(metrics.late_rows_routed, metrics.late_rows);
                late_rows += metrics.late_rows;
            }
        }
        actual.sort();
        let late: Vec<i64> = late_ids(&late_path);
        for (e, base, side) in [(&left, 0i64, "left"), (&right, 1000, "right")] {
            let indexes: Vec<usize> = late
                .iter()
                .filter(|&&id| (base..base + EVENTS as i64).contains(&id))
                .map(|&id| (id - base) as usize)
                .collect();
            e.assert_late_were_behind(&indexes, &format!("seed {seed} ({kind:?}), {side} side"));
        }

        // The batch join over the same rows minus the late ones.
        let ctx = SessionContext::new();
        for (table, e, base) in [("lefts", &left, 0i64), ("rights", &right, 1000)] {
            let keep: Vec<usize> = (0..EVENTS)
                .filter(|&i| !late.contains(&(base + i as i64)))
                .collect();
            let schema = Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("k", DataType::Int64, false),
                Field::new("v", DataType::Int64, false),
                Field::new(
                    "ts",
                    DataType::Timestamp(TimeUnit::Millisecond, None),
                    false,
                ),
                Field::new("t", DataType::Int64, false),
            ]));
            let pick = |c: &[i64]| keep.iter().map(|&i| c[i]).collect::<Vec<_>>();
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from_iter_values(
                        keep.iter().map(|&i| base + i as i64),
                    )),
                    Arc::new(Int64Array::from(pick(&e.keys))),
                    Arc::new(Int64Array::from(pick(&e.values))),
                    Arc::new(TimestampMillisecondArray::from(pick(&e.times))),
                    Arc::new(Int64Array::from(pick(&e.times))),
                ],
            )
            .expect("batch");
            ctx.register_table(
                table,
                Arc::new(MemTable::try_new(schema, vec![vec![batch]]).expect("table")),
            )
            .expect("register");
        }
        let expected = collect_sorted(&ctx, &batch_query).await;
        assert_eq!(
            actual, expected,
            "seed {seed} ({kind:?}) differs from DataFusion's batch join; replay with RUNNEL_SEED={seed}"
        );
        matched_rows += expected.len();
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(matched_rows > 0, "the joins matched rows");
    assert!(
        late_rows > 0 || only.is_some(),
        "no seed had a late row: the joins' lateness is not exercised"
    );
    eprintln!(
        "{} seeded joins ({} interval, {} window) matched DataFusion ({matched_rows} rows, {late_rows} late rows excluded)",
        seeds.len(),
        kinds[0],
        kinds[1]
    );
}
