//! `SHOW TRANSACTIONS` and `ABORT TRANSACTION 'id'`: the Kafka transactions left open on
//! the clusters of the declared Kafka tables, listed as a table and ended by fencing.

use runnel::Engine;
use tokio::runtime::Runtime;

use crate::describe;

/// The columns of `SHOW TRANSACTIONS`.
const HEADERS: [&str; 6] = [
    "transactional id",
    "state",
    "open for",
    "timeout",
    "partitions",
    "cluster",
];

/// The open transactions as table rows, oldest first.
pub fn show(
    runtime: &Runtime,
    engine: &Engine,
) -> Result<([&'static str; 6], Vec<Vec<String>>), String> {
    let open = runtime
        .block_on(engine.kafka_transactions())
        .map_err(|e| describe(&e))?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let rows = open
        .into_iter()
        .map(|(cluster, t)| {
            let partitions: Vec<String> = t
                .partitions
                .iter()
                .map(|(topic, ids)| {
                    let ids: Vec<String> = ids.iter().map(i32::to_string).collect();
                    format!("{topic}[{}]", ids.join(","))
                })
                .collect();
            vec![
                t.transactional_id,
                t.state.name(),
                format!("{} s", (now_ms - t.started_ms).max(0) / 1000),
                format!("{} s", t.timeout_ms / 1000),
                partitions.join(" "),
                cluster,
            ]
        })
        .collect();
    Ok((HEADERS, rows))
}

/// Aborts the open transaction of `id`; returns what to tell the user.
pub fn abort(runtime: &Runtime, engine: &Engine, id: &str) -> Result<String, String> {
    if id.is_empty() {
        return Err(
            "ABORT TRANSACTION needs a transactional id in quotes (SHOW TRANSACTIONS lists them)"
                .into(),
        );
    }
    let aborted = runtime
        .block_on(engine.abort_kafka_transaction(id))
        .map_err(|e| describe(&e))?;
    Ok(format!(
        "transaction of '{id}' (producer {}, epoch {}) aborted; a producer still using the id \
         fails on its next write",
        aborted.producer_id, aborted.producer_epoch
    ))
}
