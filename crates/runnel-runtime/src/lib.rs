//! Runnel's runtime: runs [`runnel_sql::StreamPlan`]s as streaming jobs on tokio.
//!
//! The entry point is [`spawn_job`]. Operators implement [`Operator`] and work on Arrow
//! `RecordBatch`es, never row by row; they exchange [`Message`]s (batches, watermarks,
//! end-of-stream) over bounded channels. Scalar expressions run as DataFusion
//! `PhysicalExpr`s and aggregates as DataFusion `GroupsAccumulator`s. Connectors plug in
//! through [`Source`], [`Sink`] and [`ConnectorFactory`]; this crate knows none of them.

pub mod alignment;
pub mod checkpoint;
pub mod config;
pub mod connector;
pub mod error;
pub mod exchange;
pub mod expr;
pub mod job;
pub mod message;
pub mod metrics;
pub mod operator;
pub mod operators;
pub mod sink;
pub mod source;
pub mod watermark;

pub use checkpoint::{CheckpointConfig, CheckpointId, CheckpointStore, Manifest, SourceState};
pub use config::{DeliveryGuarantee, FaultInjection, JobConfig};
pub use connector::{ConnectorFactory, SourceSplit};
pub use error::{BoxError, Result, RuntimeError};
pub use job::{parallel_layout, single_input_operator, spawn_job, JobHandle};
pub use message::{Message, Watermark, WATERMARK_END};
pub use metrics::{JobMetrics, MetricsSnapshot};
pub use operator::{Operator, OperatorChain, Side, TwoInputOperator};
pub use sink::{ChannelSink, Sink};
pub use source::{Source, SourceBatch, SourceEvent};
pub use watermark::WatermarkTracker;
