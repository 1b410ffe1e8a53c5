//! Nexmark with Flink's DDL and views (`sql/nexmark/ddl.sql`) and queries as published.

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use futures::StreamExt;
use runnel::{Engine, Executed};

const EVENTS: usize = 50_000;

/// Runs `ddl.sql` + `sql/nexmark/<query>.sql` over `EVENTS` generated events.
async fn run(query: &str) -> Vec<RecordBatch> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/nexmark");
    let ddl = std::fs::read_to_string(dir.join("ddl.sql")).expect("ddl.sql");
    let sql = std::fs::read_to_string(dir.join(format!("{query}.sql"))).expect("query file");
    let script = format!(
        "{}\n{sql}",
        ddl.replace("${EVENTS_NUM}", &EVENTS.to_string())
    );
    let mut batches = Vec::new();
    for result in Engine::new()
        .execute(&script)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
    {
        if let Executed::Query(mut stream) = result {
            while let Some(batch) = stream.next().await {
                batches.push(batch.unwrap_or_else(|e| panic!("{query}: {e}")));
            }
            stream
                .finish()
                .await
                .unwrap_or_else(|e| panic!("{query}: {e}"));
        }
    }
    batches
}

fn column_i64(batches: &[RecordBatch], name: &str) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let index = b.schema().index_of(name).expect("column");
            b.column(index)
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

fn column_str(batches: &[RecordBatch], name: &str) -> Vec<Option<String>> {
    batches
        .iter()
        .flat_map(|b| {
            let index = b.schema().index_of(name).expect("column");
            let column = b.column(index).as_string::<i32>();
            (0..column.len())
                .map(|i| column.is_valid(i).then(|| column.value(i).to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nexmark_q21_q22_run_as_published() {
    // q21: every bid has a channel id: hot channels by name, the others from their url.
    let q21 = run("q21").await;
    let channels = column_str(&q21, "channel");
    let ids = column_str(&q21, "channel_id");
    assert_eq!(
        channels.len(),
        EVENTS / 50 * 46,
        "every generated bid names a channel id"
    );
    for (channel, id) in channels.iter().zip(&ids) {
        let (channel, id) = (
            channel.as_deref().expect("channel"),
            id.as_deref().expect("id"),
        );
        let expected = match channel {
            "Apple" => "0".to_string(),
            "Google" => "1".to_string(),
            "Facebook" => "2".to_string(),
            "Baidu" => "3".to_string(),
            other => other.trim_start_matches("channel-").to_string(),
        };
        assert_eq!(id, expected, "channel {channel}");
    }

    // q22: the url's directories.
    let q22 = run("q22").await;
    let (dir1, dir3) = (column_str(&q22, "dir1"), column_str(&q22, "dir3"));
    assert_eq!(dir1.len(), EVENTS / 50 * 46);
    assert!(dir1
        .iter()
        .all(|d| d.as_ref().is_some_and(|d| d.len() == 5)));
    assert!(dir3.iter().all(|d| d
        .as_ref()
        .is_some_and(|d| d.starts_with("item.htm?query=1"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nexmark_q0_q1_q2_run_as_published() {
    let q0 = run("q0").await;
    let names: Vec<String> = q0[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["auction", "bidder", "price", "dateTime", "extra"]);
    let auctions = column_i64(&q0, "auction");
    let prices = column_i64(&q0, "price");
    assert_eq!(
        auctions.len(),
        EVENTS / 50 * 46,
        "46 of every 50 events are bids"
    );
    assert!(
        auctions.iter().all(|&a| a >= 1000),
        "auction ids start at 1000"
    );
    assert!(
        prices.iter().all(|&p| p >= 100),
        "prices are at least a dollar, in cents"
    );

    // Deterministic: the same events every run.
    assert_eq!(column_i64(&run("q0").await, "price"), prices);

    // q1: the same bids, price converted.
    let q1 = run("q1").await;
    let converted: Vec<f64> = q1
        .iter()
        .flat_map(|b| b.column(2).as_primitive::<Float64Type>().values().to_vec())
        .collect();
    assert_eq!(converted.len(), prices.len());
    for (euro, dollar) in converted.iter().zip(&prices) {
        assert!((euro - 0.908 * *dollar as f64).abs() < 1e-6);
    }

    // q2: exactly the bids on auctions divisible by 123.
    let q2 = run("q2").await;
    let selected = column_i64(&q2, "auction");
    let expected: Vec<i64> = auctions.iter().copied().filter(|a| a % 123 == 0).collect();
    assert!(!expected.is_empty());
    assert_eq!(selected, expected);
    assert_eq!(
        q2.iter().map(|b| b.column(1).null_count()).sum::<usize>(),
        0
    );
}
