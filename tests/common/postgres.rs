//! The real PostgreSQL server of `scripts/postgres.sh` and the Kafka Connect worker of
//! `scripts/connect.sh` (the README's test command starts both), as the CDC tests use them.

use std::process::Command;
use std::time::{Duration, Instant};

/// The test server's URL (`postgres://user:password@host:port/database`).
pub fn postgres_url() -> String {
    std::env::var("RUNNEL_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://runnel:runnel@127.0.0.1:5433/runnel".to_string())
}

/// The same server as a Runnel `jdbc` table's `url`.
pub fn postgres_jdbc_url() -> String {
    let url = postgres_url();
    let address = url.rsplit_once('@').map_or(url.as_str(), |(_, a)| a);
    format!("jdbc:postgresql://{address}")
}

/// The server's host and port.
pub fn postgres_host_port() -> (String, u16) {
    let url = postgres_url();
    let address = url.rsplit_once('@').map_or(url.as_str(), |(_, a)| a);
    let host_port = address.split('/').next().unwrap_or(address);
    let (host, port) = host_port.rsplit_once(':').expect("host:port in the URL");
    (host.to_string(), port.parse().expect("a port number"))
}

/// A client of the test server; its connection runs on the current runtime.
pub async fn postgres() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {} is not serving ({e}): start it with scripts/postgres.sh start",
                postgres_url()
            )
        });
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A client of the test server with `schema` made afresh (dropped with everything in it,
/// created again), then `tables` (SQL) run in it.
pub async fn postgres_with_schema(schema: &str, tables: &str) -> tokio_postgres::Client {
    let client = postgres().await;
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; {tables}"
        ))
        .await
        .unwrap_or_else(|e| panic!("creating schema {schema}: {e}"));
    client
}

/// The Kafka Connect worker's REST address.
pub fn connect_url() -> String {
    std::env::var("RUNNEL_CONNECT_URL").unwrap_or_else(|_| "http://127.0.0.1:8083".to_string())
}

/// One call to the Connect worker's REST API (through `curl`): status code and body.
pub fn connect_rest(method: &str, path: &str, body: Option<&serde_json::Value>) -> (u16, String) {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "-X", method, "-w", "\n%{http_code}"])
        .args(["-H", "Content-Type: application/json"]);
    if let Some(body) = body {
        command.arg("--data").arg(body.to_string());
    }
    let output = command
        .arg(format!("{}{path}", connect_url()))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Registers a Debezium PostgreSQL connector named `name` capturing `tables` of the test
/// server into topics `<prefix>.<schema>.<table>`, and waits until its task runs. Its
/// replication slot and publication are its own, dropped when it is deleted.
pub fn start_debezium(name: &str, prefix: &str, tables: &str) {
    let (host, port) = postgres_host_port();
    let slot = name.replace(['-', '.'], "_");
    let config = serde_json::json!({
        "name": name,
        "config": {
            "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
            "tasks.max": "1",
            "database.hostname": host,
            "database.port": port.to_string(),
            "database.user": "runnel",
            "database.password": "runnel",
            "database.dbname": "runnel",
            "topic.prefix": prefix,
            "table.include.list": tables,
            "plugin.name": "pgoutput",
            "slot.name": slot,
            "slot.drop.on.stop": "true",
            "publication.name": slot,
            "publication.autocreate.mode": "filtered"
        }
    });
    let (code, body) = connect_rest("POST", "/connectors", Some(&config));
    assert!(
        code == 201,
        "Kafka Connect at {} refused the connector ({code}): {body}; start it with scripts/connect.sh start",
        connect_url()
    );
    let started = Instant::now();
    loop {
        let (_, status) = connect_rest("GET", &format!("/connectors/{name}/status"), None);
        if status.contains(r#""tasks":[{"id":0,"state":"RUNNING""#) {
            return;
        }
        assert!(
            !status.contains(r#""state":"FAILED""#),
            "connector {name} failed: {status}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "connector {name} did not run within 60 s: {status}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Deletes a connector (its slot and publication go with it).
pub fn stop_debezium(name: &str) {
    connect_rest("DELETE", &format!("/connectors/{name}"), None);
}
