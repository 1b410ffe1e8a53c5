//! One job across several processes and machines, with Kafka as the cluster.
//!
//! Start the same job (`SET 'execution.target' = 'kafka'` and a `'pipeline.name'`) in
//! several processes and they form one job, the way Kafka Streams applications scale:
//! - the job graph is cut where rows change hands ([`ClusterTopology`]): each source
//!   partition and each partition of an internal **repartition topic** is a **task**;
//! - the processes join one consumer group, and the group protocol spreads the tasks;
//! - rows cross processes through the repartition topics, with every writer's watermarks
//!   and end as markers ([`wire`]);
//! - each task's state goes to a compacted **changelog topic** in the same Kafka
//!   transaction as its output and input offsets, so a task that moves (a rebalance, a
//!   crash) is restored exactly where its committed output left off ([`member`]).
//!
//! Within a process a task runs its operators synchronously on the process's thread; the
//! operators are the same as in a job of one process.

pub mod changelog;
pub mod error;
pub mod local;
pub mod member;
pub mod pipeline;
pub mod restore;
pub mod task;
#[cfg(test)]
mod test_plans;
pub mod topics;
pub mod topology;
pub mod transaction;
pub mod wire;

pub use error::{ClusterError, Result};
pub use member::{describe_cut, spawn_member, ScaleOut};
pub use topology::{ClusterTopology, TaskId};
