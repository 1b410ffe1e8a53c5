//! The one Kafka cluster a job spread over processes lives on: its client settings, and
//! the checks that every table the job reads and writes is a Kafka table on it (each
//! process writes everything into one transaction).

use std::sync::Arc;

use rdkafka::ClientConfig;
use runnel_sql::{StreamPlan, TableDef};

use crate::error::{ClusterError, Result};

/// The Kafka client settings of `table` (its `'properties.*'`, but not its group).
pub(crate) fn client_config(table: &TableDef) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in &table.options {
        if let Some(property) = key.strip_prefix("properties.") {
            if property != "group.id" {
                config.set(property, value);
            }
        }
    }
    config
}

/// The one Kafka cluster a job's topics live on: the settings of its sink table, checked
/// against every source table's servers.
pub(crate) fn cluster_config(plan: &StreamPlan) -> Result<(ClientConfig, Arc<TableDef>)> {
    let sink = plan.sink.clone().ok_or_else(|| {
        ClusterError::Unsupported("a SELECT without INSERT INTO: its rows go to one caller".into())
    })?;
    if !matches!(sink.connector(), Some("kafka" | "upsert-kafka")) {
        return Err(ClusterError::Unsupported(format!(
            "table {} writes connector '{}'; a job spread over processes writes Kafka topics",
            sink.name,
            sink.connector().unwrap_or("?")
        )));
    }
    let servers = |table: &TableDef| {
        table
            .options
            .get("properties.bootstrap.servers")
            .cloned()
            .unwrap_or_default()
    };
    for source in plan.sources() {
        if servers(&source) != servers(&sink) {
            return Err(ClusterError::Unsupported(format!(
                "table {} is on '{}' and table {} on '{}': every topic of a job spread over \
                 processes lives on one Kafka cluster",
                source.name,
                servers(&source),
                sink.name,
                servers(&sink)
            )));
        }
        match source.options.get("scan.startup.mode").map(String::as_str) {
            None | Some("group-offsets" | "earliest-offset") => {}
            Some(mode) => {
                return Err(ClusterError::Unsupported(format!(
                    "table {}: 'scan.startup.mode' = '{mode}' (a new job reads from the \
                     group's offsets, else from the earliest)",
                    source.name
                )))
            }
        }
    }
    Ok((client_config(&sink), sink))
}

/// Refuses `table` (the job's `role`) unless it is a Kafka table on the cluster of the
/// job's `sink`: everything a process writes goes into its one transaction.
pub(crate) fn same_cluster(table: &TableDef, sink: &TableDef, role: &str) -> Result<()> {
    if !matches!(table.connector(), Some("kafka" | "upsert-kafka")) {
        return Err(ClusterError::Unsupported(format!(
            "the {role} {} writes connector '{}'; a job spread over processes writes Kafka \
             topics",
            table.name,
            table.connector().unwrap_or("?")
        )));
    }
    let servers = |t: &TableDef| t.options.get("properties.bootstrap.servers").cloned();
    if servers(table) != servers(sink) {
        return Err(ClusterError::Unsupported(format!(
            "the {role} {} is on '{}' and table {} on '{}': every topic of a job spread over \
             processes lives on one Kafka cluster",
            table.name,
            servers(table).unwrap_or_default(),
            sink.name,
            servers(sink).unwrap_or_default()
        )));
    }
    Ok(())
}
