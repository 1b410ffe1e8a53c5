//! [`JobConfig`]: the job-wide settings a session's `SET` statements choose.

use std::sync::Arc;
use std::time::Duration;

use runnel_sql::TableDef;

/// Settings that apply to a whole job (Flink's configuration keys where Flink has one).
#[derive(Debug, Clone, Default)]
pub struct JobConfig {
    /// `table.exec.source.idle-timeout`: the idle timeout of every source partition whose
    /// table does not set `'scan.watermark.idle-timeout'` itself.
    pub source_idle_timeout: Option<Duration>,
    /// `runnel.watermark.idle-advance`: while every partition of a source is idle, its
    /// watermark follows the processing clock, so the last windows of a quiet stream close.
    pub idle_watermark_advance: bool,
    /// `runnel.late-data.sink`: the table late rows are written to instead of being
    /// dropped (they are counted either way).
    pub late_data_sink: Option<Arc<TableDef>>,
}
