//! The embedding example (`examples/claims_service.rs`) run as a test: a memory table fed
//! by the caller, a Rust scalar UDF and aggregate UDF in a windowed query, results as an
//! Arrow stream, and the job's metrics — checked against the same windows computed here.

use std::collections::BTreeMap;

#[allow(dead_code)] // its `main` is for `cargo run --example`
#[path = "../examples/claims_service.rs"]
mod claims_service;

/// On a single-threaded runtime: the engine runs inside the caller's runtime and never
/// blocks it (the feeder, the job and the reader all share one thread).
#[tokio::test(flavor = "current_thread")]
async fn the_embedding_example_computes_its_windows_with_rust_functions() {
    let claims = claims_service::incoming_claims();
    let (rows, metrics) = claims_service::run(&claims)
        .await
        .expect("the service runs");

    let mut expected: BTreeMap<(i64, i64), (i64, f64, f64, i64)> = BTreeMap::new();
    for &(policy, amount, time) in &claims {
        let end = (time / 300_000 + 1) * 300_000;
        let entry = expected
            .entry((policy, end))
            .or_insert((0, f64::MAX, f64::MIN, 0));
        entry.0 += 1;
        entry.1 = entry.1.min(amount);
        entry.2 = entry.2.max(amount);
        entry.3 += i64::from(amount >= 1000.0);
    }
    let expected: BTreeMap<(i64, i64), (i64, f64, i64)> = expected
        .into_iter()
        .map(|(k, (n, min, max, high))| (k, (n, max - min, high)))
        .collect();
    let got: BTreeMap<(i64, i64), (i64, f64, i64)> = rows
        .iter()
        .map(|&(policy, end, n, spread, high)| ((policy, end), (n, spread, high)))
        .collect();
    assert_eq!(got.len(), rows.len(), "one row per policy and window");
    assert_eq!(got, expected);

    assert_eq!(metrics.rows_in, claims.len() as u64);
    assert_eq!(metrics.rows_out, expected.len() as u64);
    assert_eq!(metrics.late_rows, 0);
    assert!(metrics.watermark.is_some());
}

/// Library misuse is an error, not a panic.
#[tokio::test]
async fn misuse_of_memory_tables_and_functions_is_an_error() {
    let engine = runnel::Engine::default();
    engine
        .execute("CREATE TABLE t (a BIGINT) WITH ('connector' = 'blackhole')")
        .await
        .expect("table");
    let error = engine
        .memory_table("t")
        .expect_err("not a memory table")
        .to_string();
    assert!(error.contains("not a memory table"), "{error}");
    let error = engine
        .memory_table("nope")
        .expect_err("no table")
        .to_string();
    assert!(error.contains("nope"), "{error}");
    let error = engine
        .execute("SELECT no_such_function(a) FROM t")
        .await
        .err()
        .expect("unknown function")
        .to_string();
    assert!(error.contains("no_such_function"), "{error}");

    // A bad setting given to the constructor is reported, not silently ignored.
    let engine = runnel::Engine::new(
        runnel::EngineConfig::default().set("execution.checkpointing.interval", "soon"),
    );
    let errors = engine.validate("SELECT 1").errors;
    assert!(
        errors
            .iter()
            .any(|e| e.message.contains("execution.checkpointing.interval")),
        "{errors:?}"
    );
}

/// The settings rule: a key Runnel honours is taken silently; a Flink key it accepts
/// without acting on warns, naming it (at SET, in validate, in EXPLAIN); a misspelt key is
/// an error naming the nearest valid one.
#[tokio::test]
async fn settings_are_honoured_warned_about_or_refused_with_the_nearest_key() {
    let engine = runnel::Engine::default();
    let set = |sql: &'static str| {
        let engine = &engine;
        async move {
            match engine.execute(sql).await.map(|mut r| r.pop()) {
                Ok(Some(runnel::Executed::Set { warning, .. })) => Ok(warning),
                Ok(_) => panic!("{sql}: not a SET"),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    assert_eq!(set("SET 'table.exec.state.ttl' = '1 h';").await, Ok(None));
    assert_eq!(set("SET 'parallelism.default' = '2';").await, Ok(None));
    let ignored = set("SET 'table.exec.mini-batch.enabled' = 'true';")
        .await
        .expect("accepted")
        .expect("a warning");
    assert!(
        ignored.contains("'table.exec.mini-batch.enabled'") && ignored.contains("ignored"),
        "{ignored}"
    );
    // A Flink key Runnel has no list entry for: accepted, with the same warning.
    assert!(set("SET 'pipeline.fixed-buckets' = '3';")
        .await
        .expect("accepted")
        .is_some());
    for (typo, nearest) in [
        ("table.exec.state.tll", "table.exec.state.ttl"),
        (
            "table.exec.mini-batch.enabeld",
            "table.exec.mini-batch.enabled",
        ),
        ("paralelism.default", "parallelism.default"),
        ("runnel.late-data.snk", "runnel.late-data.sink"),
        ("checkpoint.interval", "execution.checkpointing.interval"),
    ] {
        let error = set(Box::leak(format!("SET '{typo}' = '1 s';").into_boxed_str()))
            .await
            .expect_err(typo);
        assert!(error.contains(&format!("'{nearest}'")), "{typo}: {error}");
    }
    let query = "CREATE TABLE t (x BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '1');
        SELECT x FROM t;";
    let checked = engine.validate(query);
    assert!(checked.errors.is_empty(), "{:?}", checked.errors);
    assert!(
        checked
            .warnings
            .iter()
            .any(|w| w.contains("table.exec.mini-batch.enabled")),
        "{:?}",
        checked.warnings
    );
    let explained = engine.explain("SELECT x FROM t;").expect("explain");
    assert!(
        explained.contains("Warning: 'table.exec.mini-batch.enabled'"),
        "{explained}"
    );
}

/// A join of two streams without a time bound runs as Flink's (a regular join keeping
/// every row), and says so in validate and EXPLAIN; `runnel.state.unbounded` = 'refuse'
/// keeps the strict refusal.
#[tokio::test]
async fn an_unbounded_join_runs_with_a_warning_or_is_refused_on_request() {
    let engine = runnel::Engine::default();
    let tables = "CREATE TABLE bids (auction BIGINT, price BIGINT, ts TIMESTAMP(3),
            WATERMARK FOR ts AS ts) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
        CREATE TABLE auctions (id BIGINT, seller BIGINT, ts TIMESTAMP(3),
            WATERMARK FOR ts AS ts) WITH ('connector' = 'datagen', 'number-of-rows' = '10');";
    let query = "SELECT b.price, a.seller FROM bids AS b JOIN auctions AS a ON b.auction = a.id;";
    engine.execute(tables).await.expect("tables");
    let checked = engine.validate(query);
    assert!(checked.errors.is_empty(), "{:?}", checked.errors);
    assert!(
        checked.warnings.iter().any(|w| w.contains("RegularJoin")
            && w.contains("b (read from bids) and of a (read from auctions)")
            && w.contains("table.exec.state.ttl")),
        "{:?}",
        checked.warnings
    );
    let explained = engine.explain(query).expect("explain");
    assert!(explained.contains("RegularJoin"), "{explained}");
    assert!(explained.contains("Warning: the join on"), "{explained}");
    // The same as a statement of a script, of an INSERT INTO, running nothing.
    let results = engine
        .execute(&format!(
            "CREATE TABLE out (price BIGINT, seller BIGINT) WITH ('connector' = 'blackhole');
             EXPLAIN PLAN FOR INSERT INTO out {query}"
        ))
        .await
        .expect("explain as a statement");
    let Some(runnel::Executed::Explained(plan)) = results.last() else {
        panic!("an EXPLAIN gives its plan");
    };
    assert!(
        plan.starts_with("Sink: out") && plan.contains("Warning: the join on"),
        "{plan}"
    );
    assert_eq!(engine.jobs().len(), 0, "nothing ran");
    engine
        .execute("SET 'runnel.state.unbounded' = 'refuse';")
        .await
        .expect("set");
    let refused = engine
        .validate(query)
        .errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        refused.contains("without bound") && refused.contains("runnel.state.unbounded"),
        "{refused}"
    );
}

/// The job `sql` (a script ending with an `INSERT INTO`) starts.
async fn start_job(engine: &runnel::Engine, sql: &str) -> runnel::JobHandle {
    engine
        .execute(sql)
        .await
        .expect("the job starts")
        .into_iter()
        .find_map(|executed| match executed {
            runnel::Executed::Job(job) => Some(job),
            _ => None,
        })
        .expect("a job")
}

/// A job whose final checkpoint fails as it is stopped (its commit refused, as a broker
/// back from an outage may refuse one) restarts as its strategy allows and takes the
/// final checkpoint on the new run: the stop succeeds, long before its timeout. Without
/// restarts the stop answers at once with the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_whose_final_checkpoint_fails_restarts_the_job_and_stops_it() {
    use std::time::{Duration, Instant};
    for (strategy, restarts) in [("fixed-delay", 1), ("none", 0)] {
        let dir = crate::common::scratch_dir(&format!("stop-failing-{strategy}"));
        let engine = runnel::Engine::default();
        engine.inject_faults(runnel::runtime::FaultInjection {
            fail_commits: true,
            ..Default::default()
        });
        let sql = format!(
            "SET 'execution.checkpointing.interval' = '1 h';
            SET 'state.checkpoints.dir' = '{}';
            SET 'restart-strategy.type' = '{strategy}';
            SET 'restart-strategy.fixed-delay.delay' = '0 ms';
            CREATE TABLE claims (policy_id BIGINT) WITH (
                'connector' = 'datagen', 'rows-per-second' = '1000');
            CREATE TABLE out (policy_id BIGINT) WITH ('connector' = 'blackhole');
            INSERT INTO out SELECT policy_id FROM claims",
            dir.display()
        );
        let job = start_job(&engine, &sql).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let asked = Instant::now();
        let stopped = job.stop(Duration::from_secs(60)).await;
        assert!(
            asked.elapsed() < Duration::from_secs(20),
            "{strategy}: the stop waited {:?}",
            asked.elapsed()
        );
        let metrics = engine.jobs()[0].metrics.snapshot();
        assert_eq!(metrics.restarts, restarts, "{strategy}");
        match stopped {
            Ok(_) => {
                assert_eq!(restarts, 1, "{strategy}: stopped without the restart");
                assert_eq!(metrics.checkpoints, 1, "{strategy}: the final checkpoint");
            }
            Err(e) => {
                assert_eq!(restarts, 0, "{strategy}: {e}");
                assert!(
                    e.to_string()
                        .contains("simulated failure to commit checkpoint"),
                    "{strategy}: {e}"
                );
            }
        }
    }
}

/// At parallelism 1 the sink runs in the source's task. A query's few rows still reach
/// the caller while its source is quiet (the sink hands over what it gathered on its
/// timer), and a job stopped while its source is quiet writes what it holds and ends at
/// once, not at the stop's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_sources_rows_reach_the_caller_and_a_stop_ends_its_job() {
    use datafusion::arrow::array::{Array, Int64Array};
    use datafusion::arrow::record_batch::RecordBatch;
    use futures::StreamExt;
    use std::time::{Duration, Instant};

    let engine = runnel::Engine::default();
    engine
        .execute(
            "SET 'parallelism.default' = '1';
             CREATE TABLE t (a BIGINT) WITH ('connector' = 'memory');
             CREATE TABLE u (a BIGINT) WITH ('connector' = 'memory');
             CREATE TABLE out (a BIGINT) WITH ('connector' = 'blackhole');",
        )
        .await
        .expect("tables");
    let input = engine.memory_table("t").expect("a memory table");
    let rows = |values: Vec<i64>| {
        let schema = std::sync::Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
            datafusion::arrow::datatypes::Field::new(
                "a",
                datafusion::arrow::datatypes::DataType::Int64,
                true,
            ),
        ]));
        RecordBatch::try_new(schema, vec![std::sync::Arc::new(Int64Array::from(values))])
            .expect("a batch")
    };
    let mut results = engine
        .execute("SELECT a FROM t WHERE a % 2 = 0")
        .await
        .expect("the query starts");
    let Some(runnel::Executed::Query(mut stream)) = results.pop() else {
        panic!("a query gives a stream");
    };
    for (pushed, expected) in [(vec![1, 2, 3, 4], vec![2, 4]), (vec![5, 6], vec![6])] {
        input.push(rows(pushed)).await.expect("pushed");
        let mut got = Vec::new();
        while got.len() < expected.len() {
            let batch = tokio::time::timeout(Duration::from_secs(20), stream.next())
                .await
                .expect("rows reach the caller while the source is quiet")
                .expect("the stream goes on")
                .expect("a batch");
            let column = batch.column(0).as_any().downcast_ref::<Int64Array>();
            got.extend(column.expect("BIGINT").iter().flatten());
        }
        assert_eq!(got, expected);
    }
    input.close();
    assert!(
        stream.next().await.is_none(),
        "the stream ends with its table"
    );
    let metrics = stream.finish().await.expect("the query ends cleanly");
    assert_eq!(metrics.rows_out, 3);

    // A job on a quiet source, stopped without checkpoints.
    let job = start_job(&engine, "INSERT INTO out SELECT a FROM u").await;
    let input = engine.memory_table("u").expect("a memory table");
    input.push(rows(vec![7, 8, 9])).await.expect("pushed");
    let deadline = Instant::now() + Duration::from_secs(20);
    while job.metrics().rows_out < 3 {
        assert!(Instant::now() < deadline, "the job wrote its rows");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let asked = Instant::now();
    let metrics = job.stop(Duration::from_secs(60)).await.expect("stopped");
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "the stop waited {:?} for the sink",
        asked.elapsed()
    );
    assert_eq!(metrics.rows_out, 3);
}
