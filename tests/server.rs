//! `runnel serve` over HTTP: a Kafka job submitted, watched, carried across a restart of
//! the server and stopped; planning errors with their place; the token.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

fn counter(job: &Value, name: &str) -> u64 {
    job[name].as_u64().unwrap_or(0)
}

/// The claims job on the server, exactly-once from one Kafka topic into another: the
/// counters grow while claims arrive; a restart of the server resumes it from its
/// checkpoint (claims produced while it was down included); the output equals the
/// expected windows with none missing or repeated; then it stops on request.
#[test]
fn a_kafka_job_runs_on_the_server_across_a_restart_and_stops() {
    let tag = std::process::id();
    let (input, output) = (format!("server.claims.{tag}"), format!("server.out.{tag}"));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        recreate_topic(&input, 2).await;
        recreate_topic(&output, 1).await;
    });
    let claims = generate_claims(3_000, 40, 7);
    let (first, rest) = claims.split_at(1_000);
    let (second, third) = rest.split_at(1_000);
    let produce = |part: &[Claim]| {
        let refs: Vec<&Claim> = part.iter().collect();
        runtime.block_on(produce_claims_to_partitions(&input, &refs, |c| {
            (c.policy_id % 2) as i32
        }));
    };
    produce(first);

    let dir = scratch_dir("server-kafka");
    let state = dir.join("state");
    let server = Served::start(&state, Some("s3cret"));
    let sql = claims_job_sql(&input, &output, "exactly-once", &bootstrap())
        .replace("'200 ms'", "'500 ms'");
    let (status, submitted) = server.post("/v1/jobs", &json!({ "name": "claims", "sql": sql }));
    assert_eq!(status, 201, "{submitted}\n{}", server.log());
    let id = submitted["id"].as_u64().expect("job id");
    assert_eq!(submitted["name"], "claims");

    let running = server.wait_for_job(id, Duration::from_secs(60), |job| {
        job["status"] == "running" && counter(job, "rows_in") >= first.len() as u64
    });
    let stages = running["statements"][0]["stages"]
        .as_array()
        .expect("stages")
        .clone();
    assert!(
        stages.len() >= 3,
        "source, aggregate and sink stages: {running}"
    );
    assert!(
        stages.iter().any(|s| s["inputs"][0]["how"]
            .as_str()
            .is_some_and(|how| how.starts_with("rows hashed by"))),
        "a keyed edge: {running}"
    );
    assert!(running["plan"]
        .as_str()
        .is_some_and(|p| p.contains("Job graph")));
    // The counters grow as claims arrive.
    produce(second);
    let grown = server.wait_for_job(id, Duration::from_secs(60), |job| {
        counter(job, "rows_in") >= (first.len() + second.len()) as u64
            && counter(job, "checkpoints") > 0
    });
    assert!(counter(&grown, "rows_in") > counter(&running, "rows_in"));
    let (status, list) = server.get("/v1/jobs");
    assert_eq!(status, 200);
    assert_eq!(list[0]["id"], id, "{list}");

    // The server stops (a final checkpoint), claims arrive while it is down, and it
    // starts again on the same state directory: the job resumes where it stopped.
    server.terminate();
    produce(third);
    runtime.block_on(produce_end_of_claims(&bootstrap(), &input, 2, &claims));
    let server = Served::start(&state, Some("s3cret"));
    let resumed = server.wait_for_job(id, Duration::from_secs(60), |job| {
        job["status"] == "running"
    });
    assert!(
        resumed["restored_checkpoint"]
            .as_u64()
            .is_some_and(|c| c > 0),
        "resumed from a checkpoint: {resumed}"
    );
    assert_eq!(
        resumed["restarts"], 0,
        "a new server process counts its own starts"
    );

    let expected = expected_windows(&claims);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let comparison = loop {
        let comparison = compare_window_rows(&consume_all(&output), &expected);
        if comparison.missing == 0 || std::time::Instant::now() > deadline {
            break comparison;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        (comparison.missing, comparison.duplicated, comparison.wrong),
        (0, 0, 0),
        "{comparison:?}\n{}",
        server.log()
    );
    assert_eq!(comparison.rows, expected.len());

    // Prometheus sees the server's jobs by their ids.
    let metrics = server
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .and_then(|r| r.text())
        .expect("metrics");
    assert!(
        metrics.contains(&format!("runnel_rows_in_total{{job=\"{id}\"")),
        "{metrics}"
    );

    let (status, stopped) = server.post(&format!("/v1/jobs/{id}/stop"), &json!({}));
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    let (status, again) = server.post(&format!("/v1/jobs/{id}/stop"), &json!({}));
    assert_eq!(status, 409, "stopping a stopped job: {again}");
    assert_eq!(server.get(&format!("/v1/jobs/{id}")).1["status"], "stopped");
    // A stopped job stays stopped across a restart of the server.
    server.terminate();
    let server = Served::start(&state, Some("s3cret"));
    assert_eq!(server.get(&format!("/v1/jobs/{id}")).1["status"], "stopped");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Errors answer as JSON: planning errors with line and column (400), no token (401), an
/// unknown job (404); a preview and an explain run without a job.
#[test]
fn the_api_answers_errors_with_their_place_and_previews_queries() {
    let dir = scratch_dir("server-api");
    let server = Served::start(&dir.join("state"), Some("t0ken"));

    let anonymous = reqwest::blocking::Client::new();
    let denied = anonymous
        .get(format!("{}/v1/jobs", server.base))
        .send()
        .expect("request");
    assert_eq!(denied.status().as_u16(), 401);
    let body: Value = denied.json().expect("JSON error");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("token")),
        "{body}"
    );
    let wrong = anonymous
        .get(format!("{}/v1/jobs", server.base))
        .bearer_auth("guess")
        .send()
        .expect("request");
    assert_eq!(wrong.status().as_u16(), 401);
    // The dashboard's page itself is open (it asks for the token).
    let page = anonymous
        .get(format!("{}/", server.base))
        .send()
        .expect("page");
    assert_eq!(page.status().as_u16(), 200);

    let sql = "CREATE TABLE t (a INT) WITH ('connector' = 'datagen');\n\
               CREATE TABLE out_t (a INT) WITH ('connector' = 'blackhole');\n\
               INSERT INTO out_t SELEC a FROM t;";
    let (status, body) = server.post("/v1/jobs", &json!({ "sql": sql }));
    assert_eq!(status, 400, "{body}");
    let error = &body["errors"][0];
    assert_eq!(
        (error["line"].as_u64(), error["column"].as_u64()),
        (Some(3), Some(19)),
        "{body}"
    );
    assert_eq!(error["statement"], 3);

    let unknown = "CREATE TABLE t (a INT) WITH ('connector' = 'datagen');\n\
                   CREATE TABLE out_t (a INT) WITH ('connector' = 'blackhole');\n\n\
                   INSERT INTO out_t SELECT b FROM t;";
    let (status, body) = server.post("/v1/jobs", &json!({ "sql": unknown }));
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["errors"][0]["line"], 4,
        "a planning error at its statement's line: {body}"
    );

    let (status, body) = server.post("/v1/jobs", &json!({ "sql": "SELECT 1" }));
    assert_eq!(status, 400, "a bare SELECT is no job: {body}");
    let (status, body) = server.post("/v1/jobs", &json!({ "query": "x" }));
    assert_eq!(status, 400, "an unknown field: {body}");
    let (status, body) = server.get("/v1/jobs/99");
    assert_eq!(status, 404, "{body}");

    let (status, checked) = server.post("/v1/validate", &json!({ "sql": sql }));
    assert_eq!(status, 200);
    assert_eq!(checked["errors"][0]["line"], 3, "{checked}");

    let bounded = "CREATE TABLE t (a INT, b STRING) WITH ('connector' = 'datagen', \
                   'number-of-rows' = '20', 'fields.a.min' = '1', 'fields.a.max' = '3');\n\
                   SELECT a, COUNT(*) AS n FROM t GROUP BY a;";
    let (status, plan) = server.post("/v1/explain", &json!({ "sql": bounded }));
    assert_eq!(status, 200, "{plan}");
    assert!(
        plan["plan"]
            .as_str()
            .is_some_and(|p| p.contains("Job graph")),
        "{plan}"
    );
    let (status, preview) = server.post(
        "/v1/preview",
        &json!({ "sql": bounded, "timeout_ms": 20000 }),
    );
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["columns"], json!(["a", "n"]));
    assert_eq!(preview["ended"], true, "{preview}");
    // An updating query: applying its changes leaves one row per key, counting all 20.
    let mut current: std::collections::BTreeMap<String, u64> = Default::default();
    for row in preview["rows"].as_array().expect("rows") {
        let key = row["values"][0].as_str().expect("a").to_string();
        let n: u64 = row["values"][1]
            .as_str()
            .and_then(|n| n.parse().ok())
            .expect("n");
        match row["op"].as_str() {
            Some("+I" | "+U") => {
                current.insert(key, n);
            }
            Some("-U" | "-D") => {
                current.remove(&key);
            }
            other => panic!("op {other:?}"),
        }
    }
    assert_eq!(current.values().sum::<u64>(), 20, "{preview}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `runnel --server URL`: the shell's declarations stay local, a `SELECT` runs on the
/// server with its rows streaming back until Ctrl-C, an `INSERT INTO` becomes a job of
/// the server, and `SHOW JOBS` and `STOP JOB` act on the server's jobs.
#[test]
fn the_shell_drives_a_server() {
    let dir = scratch_dir("server-shell");
    let server = Served::start(&dir.join("state"), Some("sh3ll"));
    let mut command = std::process::Command::new(runnel_binary());
    command
        .env("HOME", &dir)
        .env("TERM", "xterm")
        .env("RUNNEL_TOKEN", "sh3ll")
        .arg("--server")
        .arg(&server.base);
    let mut shell = rexpect::session::spawn_command(command, Some(30_000)).expect("start runnel");
    shell.exp_string("Connected to").expect("connected");
    shell.exp_string("runnel> ").expect("prompt");
    shell
        .send_line(
            "CREATE TABLE t (k INT, ts TIMESTAMP(3)) WITH ('connector' = 'datagen', \
             'rows-per-second' = '200', 'fields.k.min' = '1', 'fields.k.max' = '3');",
        )
        .expect("type");
    shell.exp_string("created t").expect("declared here");
    shell
        .send_line("SET 'sql-client.execution.result-mode' = 'tableau';")
        .expect("type");
    shell.exp_string("set 'sql-client").expect("set");
    shell
        .send_line("SELECT k, COUNT(*) AS n FROM t GROUP BY k;")
        .expect("type");
    shell
        .exp_regex(r"\+U +\| +[123] +\| +\d+")
        .expect("the server's changes stream back");
    shell.send_control('c').expect("Ctrl-C");
    shell.exp_string("query stopped").expect("query stopped");
    shell.exp_string("runnel> ").expect("prompt");
    shell
        .send_line("CREATE TABLE sink_t (k INT, n BIGINT) WITH ('connector' = 'blackhole');")
        .expect("type");
    shell.exp_string("created sink_t").expect("declared");
    shell
        .send_line("INSERT INTO sink_t SELECT k, COUNT(*) FROM t GROUP BY k;")
        .expect("type");
    shell
        .exp_string("job 1 submitted")
        .expect("the job runs on the server");
    server.wait_for_job(1, Duration::from_secs(30), |job| {
        job["status"] == "running" && job["rows_in"].as_u64() > Some(0)
    });
    shell.send_line("SHOW JOBS;").expect("type");
    shell
        .exp_regex(r"1 +\| running")
        .expect("the server's job listed");
    shell.send_line("STOP JOB 1;").expect("type");
    shell.exp_string("job 1 stopped").expect("stopped");
    assert_eq!(server.get("/v1/jobs/1").1["status"], "stopped");
    shell
        .send_line("INSERT INTO sink_t SELECT nope FROM t;")
        .expect("type");
    shell
        .exp_regex(r"error: 1 error\(s\):\s+line \d+: .*nope")
        .expect("the server's planning error, placed");
    shell.send_line("\\q").expect("type");
    shell.exp_eof().expect("the shell exits");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
