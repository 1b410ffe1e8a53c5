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
    let errors = engine.validate("SELECT 1");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("execution.checkpointing.interval")),
        "{errors:?}"
    );
}
