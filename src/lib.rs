//! Runnel: a streaming SQL engine on Arrow and DataFusion.
//!
//! This crate is the library facade: [`Engine`] takes Flink-dialect SQL — `CREATE TABLE`
//! with watermarks, `CREATE VIEW`, `INSERT INTO ... SELECT` and bare `SELECT`s — and runs
//! each continuous query as a job on the caller's tokio runtime.
//!
//! ```no_run
//! # async fn demo() -> Result<(), runnel::RunnelError> {
//! let engine = runnel::Engine::default();
//! let results = engine.execute("
//!     CREATE TABLE claims (policy_id BIGINT, amount DOUBLE, event_time TIMESTAMP(3),
//!         WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
//!     WITH ('connector' = 'filesystem', 'path' = 'claims.json', 'format' = 'json');
//!     CREATE TABLE totals (policy_id BIGINT, window_end TIMESTAMP(3), total DOUBLE)
//!     WITH ('connector' = 'print');
//!     INSERT INTO totals
//!     SELECT policy_id, window_end, SUM(amount)
//!     FROM TABLE(TUMBLE(TABLE claims, DESCRIPTOR(event_time), INTERVAL '5' MINUTES))
//!     GROUP BY policy_id, window_start, window_end;
//! ").await?;
//! for result in results {
//!     if let runnel::Executed::Job(job) = result {
//!         job.wait().await?;
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! The layers below are re-exported: [`sql`] (parsing, catalog, planning), [`runtime`]
//! (operators, jobs) and [`connectors`].

mod config;
mod engine;
mod error;
mod job_file;
pub mod prometheus;
pub mod settings;

pub use config::EngineConfig;
pub use engine::{Engine, Executed, JobInfo, QueryStream, ScriptError, Validation};
pub use error::{error_chain, Result, RunnelError};
pub use job_file::JobFile;

pub use runnel_connectors as connectors;
pub use runnel_runtime as runtime;
pub use runnel_sql as sql;

pub use datafusion::arrow;
pub use runnel_runtime::{JobHandle, MetricsSnapshot};
