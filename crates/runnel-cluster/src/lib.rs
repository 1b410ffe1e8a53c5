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
//! A process runs one or more members of the group (`parallelism.default`), each on its
//! own thread; a member runs its tasks' operators synchronously, and the operators are the
//! same as in a job of one process. A task's changelog holds per operator a base and
//! the increments since ([`changelog`]); a process with a checkpoint directory keeps
//! copies of its tasks' changelogs there, so a returning task reads only the tail
//! ([`local`], [`restore`]).

pub mod changelog;
pub mod error;
mod kafka_cluster;
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
