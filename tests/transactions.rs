//! Kafka transactions left open by a producer that is gone: the shell lists and aborts
//! them (`SHOW TRANSACTIONS`, `ABORT TRANSACTION`), and a job whose sink's transactional
//! id changed fences its old id at start, so `read_committed` readers of its output need
//! not wait for the old transaction's timeout.

use std::process::Command;
use std::time::Duration;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

use crate::common::*;

/// Opens a transaction under `id`, writes one record to `topic` in it, and abandons the
/// producer with the transaction open (as a crashed process would), for 5 minutes.
fn abandon_open_transaction(id: &str, topic: &str) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("transactional.id", id)
        .set("transaction.timeout.ms", "300000")
        .create()
        .expect("producer");
    producer
        .init_transactions(Duration::from_secs(30))
        .expect("init");
    producer.begin_transaction().expect("begin");
    producer
        .send(BaseRecord::to(topic).key("k").payload("left open"))
        .map_err(|(e, _)| e)
        .expect("send");
    producer.flush(Duration::from_secs(30)).expect("flush");
    // Never committed, aborted or closed: the broker holds it open until its timeout.
    std::mem::forget(producer);
}

/// Declares table `out` on `topic` of the test broker: the engine then reaches its cluster.
async fn declare_kafka_table(engine: &runnel::Engine, topic: &str) {
    engine
        .execute(&format!(
            "CREATE TABLE out (v STRING) WITH ('connector' = 'kafka', 'topic' = '{topic}',
               'properties.bootstrap.servers' = '{}', 'format' = 'json')",
            bootstrap()
        ))
        .await
        .expect("declare");
}

fn open_ids(
    open: &[(
        String,
        runnel::connectors::kafka::transactions::KafkaTransaction,
    )],
) -> Vec<&str> {
    open.iter()
        .map(|(_, t)| t.transactional_id.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_left_open_is_listed_and_aborted() {
    let topic = "lingering.listed";
    recreate_topic(topic, 2).await;
    let id = format!("lingering-listed-{}", std::process::id());
    let (abandoned, on) = (id.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || abandon_open_transaction(&abandoned, &on))
        .await
        .expect("producer");

    let engine = runnel::Engine::default();
    let refused = engine
        .kafka_transactions()
        .await
        .expect_err("no Kafka table yet");
    assert!(
        refused.to_string().contains("declare one first"),
        "{refused}"
    );
    declare_kafka_table(&engine, topic).await;
    let open = engine.kafka_transactions().await.expect("list");
    let (cluster, listed) = open
        .iter()
        .find(|(_, t)| t.transactional_id == id)
        .unwrap_or_else(|| panic!("{id} among {:?}", open_ids(&open)));
    assert_eq!(cluster, &bootstrap());
    assert_eq!(
        listed.state,
        runnel::connectors::kafka::transactions::TransactionState::Ongoing
    );
    assert!(listed.writes_to(topic), "{listed:?}");
    assert_eq!(listed.timeout_ms, 300_000);

    let aborted = engine.abort_kafka_transaction(&id).await.expect("abort");
    assert_eq!(aborted.producer_id, listed.producer_id);
    let open = engine.kafka_transactions().await.expect("list again");
    assert!(
        !open_ids(&open).contains(&id.as_str()),
        "{:?}",
        open_ids(&open)
    );
    // What it wrote is aborted: a read_committed reader reaches the end and sees nothing.
    assert!(consume_all(topic).is_empty());
    let again = engine
        .abort_kafka_transaction(&id)
        .await
        .expect_err("nothing left to abort");
    assert!(again.to_string().contains("no open transaction"), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_transactional_id_changed_fences_the_old_one_at_start() {
    let (input, output) = ("lingering.job.in", "lingering.job.out");
    recreate_topic(input, 2).await;
    recreate_topic(output, 1).await;
    let claims = generate_claims(2_000, 50, 31);
    let records: Vec<Record> = claims
        .iter()
        .map(|c| (None, c.to_json().into_bytes()))
        .collect();
    produce(input, &records).await;

    // The job ran before under another transactional id and died with a transaction
    // open on its output.
    let old = format!("runnel-old-prefix-{}", std::process::id());
    // And another producer, not the job's, left one open there too.
    let other = format!("someone-else-{}", std::process::id());
    let (abandoned, on, also) = (old.clone(), output.to_string(), other.clone());
    tokio::task::spawn_blocking(move || {
        abandon_open_transaction(&abandoned, &on);
        abandon_open_transaction(&also, &on);
    })
    .await
    .expect("producer");
    let dir = scratch_dir("lingering-job");
    let checkpoints = dir.join("checkpoints");
    let recorded = checkpoints.join("kafka-transactional-ids");
    std::fs::create_dir_all(&recorded).expect("checkpoint dir");
    std::fs::write(recorded.join("claims_aggregated_5min"), &old).expect("recorded id");

    let job = dir.join("job.sql");
    let sql = claims_job_sql(input, output, "exactly-once", &bootstrap()).replace(
        "'format' = 'json'\n        );",
        "'format' = 'json', 'scan.bounded.mode' = 'latest-offset'\n        );",
    );
    assert!(sql.contains("scan.bounded.mode"), "{sql}");
    std::fs::write(&job, sql).expect("job file");
    let run = Command::new(runnel_binary())
        .arg("run")
        .arg(&job)
        .arg("--checkpoint-dir")
        .arg(&checkpoints)
        .env("RUNNEL_LOG", "runnel_connectors=info")
        .output()
        .expect("run runnel");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("fenced the old one") && stderr.contains(&old),
        "{stderr}"
    );
    // The other producer's transaction is not the job's to end: it is named, for the
    // shell to abort.
    assert!(
        stderr.contains("another producer holds a transaction open") && stderr.contains(&other),
        "{stderr}"
    );
    let engine = runnel::Engine::default();
    declare_kafka_table(&engine, output).await;
    engine.abort_kafka_transaction(&other).await.expect("abort");
    // Both are aborted, so a read_committed reader gets the job's output.
    let rows = consume_all(output);
    let comparison = compare_window_rows(&rows, &expected_windows(&claims));
    assert_eq!(
        (comparison.missing, comparison.duplicated, comparison.wrong),
        (0, 0, 0)
    );
    assert_eq!(
        std::fs::read_to_string(recorded.join("claims_aggregated_5min")).expect("recorded"),
        format!("runnel-{output}"),
        "the new id is recorded"
    );
}
