//! Runnel's end-to-end tests, compiled into one binary. Tests that touch Kafka need the
//! real broker that `scripts/kafka.sh start` runs (the README's test command starts it).

mod bad_input;
mod cdc;
mod changelog_differential;
mod claims;
mod cli;
mod common;
mod crash;
mod dashboard;
mod differential;
mod docs;
mod embedding;
mod errors;
mod fuzz;
mod idle;
mod memory;
mod nexmark;
mod scale_out;
mod secured;
mod server;
mod sql_cases;
mod transactions;
