//! Runnel's runtime: runs [`runnel_sql::StreamPlan`]s as streaming jobs on tokio.
//!
//! The entry point is [`spawn_job`]. A plan becomes a [`JobGraph`] (stages of chained
//! operators and the edges between them, plain data), and the graph becomes tasks joined
//! by bounded channels of [`Message`]s (batches, watermarks, barriers, idleness, the
//! end). Operators implement the contract in [`operator`] and work on Arrow
//! `RecordBatch`es, never row by row; scalar expressions run as DataFusion
//! `PhysicalExpr`s and aggregates as DataFusion `GroupsAccumulator`s. Connectors plug in
//! through [`Source`], [`Sink`] and [`ConnectorFactory`]; this crate knows none of them.

pub mod alignment;
pub mod chain;
pub mod checkpoint;
pub mod config;
pub mod connector;
pub mod dead_letter;
pub mod error;
pub mod exchange;
pub mod expr;
pub mod graph;
pub mod job;
pub mod memory;
pub mod message;
pub mod metrics;
pub mod operator;
pub mod operators;
pub mod processing_time;
pub mod restart;
pub mod side_output;
pub mod sink;
pub mod source;
#[cfg(test)]
mod test_plans;
#[cfg(test)]
mod test_random;
pub mod watermark;
pub mod watermark_alignment;

pub use chain::{Chained, OperatorChain};
pub use checkpoint::{CheckpointConfig, CheckpointId, CheckpointStore, Manifest, SourceState};
pub use config::{DeliveryGuarantee, FaultInjection, JobConfig};
pub use connector::{ConnectorFactory, KeyLookup, LookupCache, SourceSplit};
pub use error::{BoxError, Result, RuntimeError};
pub use exchange::KeyPartitioner;
pub use graph::{Edge, EdgeKind, InputDescription, JobGraph, Stage, StageDescription, StageHead};
pub use job::{job_graph, spawn_job, JobHandle, TwoInputTask};
pub use message::{Message, Watermark, WATERMARK_END};
pub use metrics::{CheckpointRecord, JobMetrics, MetricsSnapshot, StageProbe, StageSnapshot};
pub use operator::{
    BuildIncrement, CheckpointedState, Collector, CompactChain, InputWatermarks, OneInputOperator,
    OperatorState, Side, StateIncrement, StreamOperator, TwoInputOperator,
};
pub use operators::{one_input_operator, two_input_operator, LookupTable, OperatorContext};
pub use processing_time::ProcessingTime;
pub use restart::{RestartBackoff, RestartStrategy};
pub use side_output::{LateRows, RowQueue};
pub use sink::{ChannelSink, Sink, SinkFactory, TableSink};
pub use source::{Source, SourceBatch, SourceEvent, SourceRows, WatermarkExpr};
pub use watermark::WatermarkTracker;
pub use watermark_alignment::WatermarkAlignment;
