//! Every SQL example in the README and `docs/` runs: each file's ```sql blocks, in order,
//! in one engine session (later blocks use earlier tables). Declarations must succeed;
//! each query or job runs against the real sources (Kafka included) until it ends, or
//! for a few seconds if it does not, and must not fail. Kafka topics are prefixed with
//! `docs-test.` so examples never touch the topics other tests use. Every ```toml block
//! (a job file) must pass `runnel validate`.

use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use runnel::{Engine, Executed};

use crate::common::{bootstrap, recreate_topic, runnel_binary, scratch_dir};

/// How long an example that does not end runs before it counts as working.
const RUN_FOR: Duration = Duration::from_secs(3);

fn doc_files() -> Vec<std::path::PathBuf> {
    let mut files = vec![std::path::PathBuf::from("README.md")];
    let mut docs: Vec<_> = std::fs::read_dir("docs")
        .expect("docs folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The fenced blocks of `language` in a Markdown text, with the line each starts on.
fn blocks(text: &str, language: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start();
        match &mut current {
            None if fence == format!("```{language}") => current = Some((i + 1, String::new())),
            Some(_) if fence.starts_with("```") => out.extend(current.take()),
            Some((_, block)) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    out
}

/// The block with its topics prefixed, against the broker the tests use.
fn namespaced_topics(sql: &str) -> String {
    sql.replace("'topic' = '", "'topic' = 'docs-test.")
        .replace("127.0.0.1:9092", &bootstrap())
}

/// The topics a block's tables name.
fn topics(sql: &str) -> Vec<String> {
    sql.split("'topic' = '")
        .skip(1)
        .filter_map(|rest| rest.split_once('\'').map(|(topic, _)| topic.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sql_example_in_the_docs_runs() {
    let mut examples = 0;
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).expect("doc file");
        let engine = Engine::default();
        for (line, block) in blocks(&text, "sql") {
            examples += 1;
            let place = format!("{}:{line}", file.display());
            let block = namespaced_topics(&block);
            for topic in topics(&block) {
                recreate_topic(&topic, 1).await;
            }
            let results = engine
                .execute(&block)
                .await
                .unwrap_or_else(|e| panic!("{place}: {e}\n{block}"));
            for result in results {
                match result {
                    Executed::Job(mut job) => {
                        if let Ok(Err(e)) = tokio::time::timeout(RUN_FOR, job.wait_ref()).await {
                            panic!("{place}: the job failed: {e}\n{block}");
                        }
                        job.abort();
                    }
                    Executed::Query(mut stream) => {
                        let read = tokio::time::timeout(RUN_FOR, async {
                            while let Some(batch) = stream.next().await {
                                batch?;
                            }
                            Ok::<_, datafusion::error::DataFusionError>(())
                        })
                        .await;
                        if let Ok(Err(e)) = read {
                            panic!("{place}: the query failed: {e}\n{block}");
                        }
                    }
                    Executed::Created(_) | Executed::Set { .. } | Executed::Explained(_) => {}
                }
            }
        }
    }
    assert!(examples >= 6, "only {examples} SQL examples found");
}

#[test]
fn every_job_file_example_in_the_docs_validates() {
    let dir = scratch_dir("docs-toml");
    let mut examples = 0;
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).expect("doc file");
        for (line, block) in blocks(&text, "toml") {
            examples += 1;
            let job = dir.join(format!("example-{examples}.toml"));
            std::fs::write(&job, &block).expect("job file");
            let output = Command::new(runnel_binary())
                .arg("validate")
                .arg(&job)
                .env("KAFKA_BROKERS", bootstrap())
                .output()
                .expect("run runnel");
            assert!(
                output.status.success(),
                "{}:{line}: {}\n{block}",
                file.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    assert!(examples >= 1, "no job file example found");
}
