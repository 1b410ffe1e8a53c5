//! The dashboard in a real browser: Debian's headless Chromium, driven through
//! ChromeDriver, against a real `runnel serve` holding 20 running jobs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

/// A datagen job at `rate` rows/s counting per key in 2-second windows.
fn counting_job(rate: u32) -> String {
    format!(
        "CREATE TABLE bids (auction BIGINT, price BIGINT, ts TIMESTAMP(3),
            WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
         WITH ('connector' = 'datagen', 'rows-per-second' = '{rate}',
               'fields.auction.min' = '1', 'fields.auction.max' = '20');
         CREATE TABLE totals (auction BIGINT, window_end TIMESTAMP(3), bids BIGINT)
         WITH ('connector' = 'blackhole');
         INSERT INTO totals SELECT auction, window_end, COUNT(*)
         FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '2' SECONDS))
         GROUP BY auction, window_start, window_end;"
    )
}

/// The number a counter on the page shows (`12,345`).
fn shown_number(text: &serde_json::Value) -> u64 {
    text.as_str()
        .unwrap_or_default()
        .replace(',', "")
        .parse()
        .unwrap_or(0)
}

/// The jobs list shows all 20 jobs; a job's page draws every stage of its graph and its
/// counters move between two screenshots; the editor marks a planning error at its line
/// and previews an updating query live; the stop button stops the job. Screenshots go to `RUNNEL_SCREENSHOTS` (the docs'
/// images come from there) or the test's scratch folder.
#[test]
fn the_dashboard_lists_jobs_draws_graphs_checks_sql_and_stops_a_job() {
    let dir = scratch_dir("dashboard");
    let shots = std::env::var("RUNNEL_SCREENSHOTS").map_or_else(|_| dir.clone(), PathBuf::from);
    std::fs::create_dir_all(&shots).expect("screenshot folder");
    let server = Served::start(&dir.join("state"), None);
    let (status, job) = server.post(
        "/v1/jobs",
        &json!({ "name": "bids per auction", "sql": counting_job(2000) }),
    );
    assert_eq!(status, 201, "{job}");
    for i in 2..=20 {
        let (status, job) = server.post(
            "/v1/jobs",
            &json!({ "name": format!("side job {i}"), "sql": counting_job(20) }),
        );
        assert_eq!(status, 201, "{job}");
    }
    let watched = server.wait_for_job(1, Duration::from_secs(60), |job| {
        job["status"] == "running" && job["rows_in"].as_u64() > Some(0)
    });
    let stages: Vec<u64> = watched["statements"][0]["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| s["id"].as_u64().expect("stage id"))
        .collect();
    for id in 2..=20 {
        server.wait_for_job(id, Duration::from_secs(60), |job| {
            job["status"] == "running"
        });
    }

    let browser = Browser::start();
    let opened = Instant::now();
    browser.open(&format!("{}/#/", server.base));
    browser.wait_for(
        "the jobs list shows 20 jobs",
        Duration::from_secs(20),
        "return document.querySelectorAll('#jobs-table tr[data-job-id]').length === 20",
    );
    let list_loaded = opened.elapsed();
    let first_row = browser.run(
        "return document.querySelector('#jobs-table tr[data-job-id=\"1\"]').textContent",
        json!([]),
    );
    assert!(
        first_row
            .as_str()
            .is_some_and(|row| row.contains("bids per auction") && row.contains("running")),
        "{first_row}"
    );
    browser.screenshot(&shots.join("dashboard-jobs.png"));

    let opened = Instant::now();
    browser.open(&format!("{}/#/jobs/1", server.base));
    let drawn = browser.wait_for(
        "the job's graph shows every stage",
        Duration::from_secs(20),
        &format!(
            "const ids = [...document.querySelectorAll('#graph g.stage')].map(g => Number(g.dataset.stage));
             return ids.length === {} && ids.join(',');",
            stages.len()
        ),
    );
    let job_loaded = opened.elapsed();
    let expected: Vec<String> = stages.iter().map(u64::to_string).collect();
    assert_eq!(drawn, json!(expected.join(",")));
    let rows_in = || {
        browser.run(
            "return document.getElementById('rows-in').textContent",
            json!([]),
        )
    };
    let before = shown_number(&browser.wait_for(
        "rows in shown",
        Duration::from_secs(10),
        "const t = document.getElementById('rows-in').textContent; return t !== '—' && t",
    ));
    browser.screenshot(&shots.join("dashboard-job-1.png"));
    std::thread::sleep(Duration::from_millis(2500));
    let after = shown_number(&rows_in());
    browser.screenshot(&shots.join("dashboard-job-2.png"));
    assert!(after > before, "the counters move: {before} then {after}");
    eprintln!(
        "dashboard with 20 running jobs: jobs list drawn {} ms after opening, job page {} ms",
        list_loaded.as_millis(),
        job_loaded.as_millis()
    );

    browser.open(&format!("{}/#/new", server.base));
    browser.wait_for(
        "the editor",
        Duration::from_secs(10),
        "return !!document.getElementById('sql')",
    );
    browser.run(
        "const t = document.getElementById('sql'); t.value = ''; t.dispatchEvent(new Event('input'));",
        json!([]),
    );
    browser.type_into(
        "#sql",
        "CREATE TABLE t (a INT) WITH ('connector' = 'datagen');\n\
         CREATE TABLE o (a INT) WITH ('connector' = 'blackhole');\n\
         INSERT INTO o SELECT b FROM t;",
    );
    let marked = browser.wait_for(
        "the planning error marked at line 3",
        Duration::from_secs(10),
        "const item = document.querySelector('#errors li[data-line=\"3\"]');
         const gutter = document.querySelector('#gutter div.error[data-line=\"3\"]');
         return item && gutter && item.textContent;",
    );
    assert!(
        marked
            .as_str()
            .is_some_and(|m| m.starts_with("line 3") && m.contains('b')),
        "{marked}"
    );
    browser.screenshot(&shots.join("dashboard-editor.png"));

    // A live preview of an updating query: its rows stream in and its changes are applied,
    // so the table ends with one row per key counting every generated row.
    browser.run(
        "const t = document.getElementById('sql'); t.value = ''; t.dispatchEvent(new Event('input'));",
        json!([]),
    );
    browser.type_into(
        "#sql",
        "CREATE TABLE t (k INT, ts TIMESTAMP(3)) WITH ('connector' = 'datagen', \
         'rows-per-second' = '400', 'number-of-rows' = '1200', 'fields.k.min' = '1', 'fields.k.max' = '3');\n\
         SELECT k, COUNT(*) AS n FROM t GROUP BY k;",
    );
    browser.click("#preview");
    let counts = browser.wait_for(
        "the preview's final table",
        Duration::from_secs(30),
        "const done = (document.getElementById('preview-count') || {}).textContent || '';
         if (!done.includes('all of them')) return null;
         return [...document.querySelectorAll('#preview-table tbody tr')]
             .map(tr => Number(tr.children[1].textContent));",
    );
    let counts: Vec<u64> = serde_json::from_value(counts).expect("counts");
    assert_eq!(counts.len(), 3, "one row per key: {counts:?}");
    assert_eq!(counts.iter().sum::<u64>(), 1200, "{counts:?}");
    browser.screenshot(&shots.join("dashboard-preview.png"));

    browser.open(&format!("{}/#/jobs/1", server.base));
    browser.wait_for(
        "the job is shown running",
        Duration::from_secs(10),
        "return document.getElementById('status').textContent === 'running' && !document.getElementById('stop').disabled",
    );
    browser.click("#stop");
    browser.wait_for(
        "the job is shown stopped",
        Duration::from_secs(60),
        "return document.getElementById('status').textContent === 'stopped'",
    );
    assert_eq!(server.get("/v1/jobs/1").1["status"], "stopped");
    assert_eq!(
        server.get("/v1/jobs/2").1["status"],
        "running",
        "only job 1 stopped"
    );
    drop(browser);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
