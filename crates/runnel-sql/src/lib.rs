//! Runnel's SQL layer: parses Flink-dialect SQL, keeps the catalog of tables and views,
//! and plans continuous queries into [`StreamPlan`]s for the runtime.
//!
//! The entry points are [`parse_script`] (text → [`Statement`]s) and [`StreamPlanner`]
//! (statements → [`TableDef`]s, [`ViewDef`]s and [`StreamPlan`]s). Parsing and planning
//! reuse DataFusion (its sqlparser, `SqlToRel`, analyzer, optimizer and function
//! registry); this crate adds Flink's DDL, windowing table functions and the streaming
//! rewrite. It knows no operator and no connector.

pub mod catalog;
pub mod changelog;
pub mod closed_sessions;
pub mod distribution;
pub mod error;
pub mod field_names;
pub mod field_reads;
pub mod functions;
pub mod group_window;
pub mod join;
pub mod lateness;
pub mod lineage;
pub mod lookup;
pub mod panes;
pub mod parser;
pub mod plan;
pub mod planner;
pub mod temporal;
pub mod updating;
pub mod window;
pub(crate) mod window_columns;

pub use catalog::{Catalog, MetadataColumn, TableDef, ViewDef, WatermarkDef};
pub use distribution::InputDistribution;
pub use error::{Result, SqlError};
pub use parser::{parse_script, parse_script_each, CreateTable, LocatedStatement, Statement};
pub use plan::{
    ChangelogNormalizeNode, IntervalJoinNode, LookupJoinNode, OverReadiness, OverWindowNode,
    RegularJoinNode, SourceNode, StreamNode, StreamPlan, TemporalJoinNode, TopNNode,
    UpdatingAggregateNode, UpsertMaterializeNode, WindowAggregateNode, WindowJoinNode,
};
pub use planner::{PlanOptions, StreamPlanner, UpsertMaterialize};
pub use window::{WindowKind, WindowTvf};
