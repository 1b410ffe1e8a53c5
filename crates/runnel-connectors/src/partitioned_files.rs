//! A `filesystem` sink of a `PARTITIONED BY (a, b)` table: each row is written under
//! `path/a=<value>/b=<value>/` (the partition columns are in the folder names, not the
//! files), and a partition is *committed* — its file closed and, with
//! `'sink.partition-commit.policy.kind' = 'success-file'`, a `_SUCCESS` file written —
//! once no more rows are expected for it (Flink's partition commit).
//!
//! With `'sink.partition-commit.trigger' = 'partition-time'`, a partition's time is read
//! from its values with `'partition.time-extractor.timestamp-pattern'` (`'$dt $hm:00'`),
//! and it commits when the watermark passes that time plus `'sink.partition-commit.delay'`.
//! With `process-time` (the default), it commits once the delay has passed on the wall
//! clock since it was created. Every partition still open commits when the input ends.
//! A row arriving for a committed partition opens a new part file there, committed again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use runnel_runtime::{RuntimeError, Sink};
use runnel_sql::TableDef;
use tokio::io::{AsyncWriteExt, BufWriter};

use crate::error::{ConnectorError, Result};
use crate::filesystem::{local_path, write_lines};
use crate::format::{parse_time, Format};
use crate::options::TableOptions;

/// The folder name of a NULL partition value (Hive's and Flink's).
const NULL_PARTITION: &str = "__DEFAULT_PARTITION__";

/// When a partition is complete.
#[derive(Debug, Clone)]
enum CommitTrigger {
    /// The watermark passed the partition's time (from `pattern`) plus the delay.
    PartitionTime { pattern: Option<String> },
    /// The delay passed on the wall clock since the partition was created.
    ProcessTime,
}

/// The partition commit options of a table.
#[derive(Debug, Clone)]
pub(crate) struct CommitPolicy {
    trigger: CommitTrigger,
    delay: Duration,
    /// The marker file written into a committed partition, if any.
    success_file: Option<String>,
}

impl CommitPolicy {
    pub(crate) fn from_options(options: &TableOptions) -> Result<Self> {
        let trigger = match options.choice(
            "sink.partition-commit.trigger",
            &["process-time", "partition-time"],
            "process-time",
        )? {
            "partition-time" => CommitTrigger::PartitionTime {
                pattern: options
                    .get("partition.time-extractor.timestamp-pattern")
                    .map(str::to_string),
            },
            _ => CommitTrigger::ProcessTime,
        };
        let success_file = match options.get("sink.partition-commit.policy.kind") {
            None => None,
            Some("success-file") => Some(
                options
                    .get("sink.partition-commit.success-file.name")
                    .unwrap_or("_SUCCESS")
                    .to_string(),
            ),
            Some(other) => {
                return Err(options.invalid(
                    "sink.partition-commit.policy.kind",
                    other,
                    "only 'success-file' is supported (there is no metastore)",
                ))
            }
        };
        // Rolling options are accepted: each partition has one file per commit.
        for key in [
            "sink.rolling-policy.rollover-interval",
            "sink.rolling-policy.check-interval",
        ] {
            options.duration(key)?;
        }
        Ok(Self {
            trigger,
            delay: options
                .duration("sink.partition-commit.delay")?
                .unwrap_or_default(),
            success_file,
        })
    }
}

/// A partition being written.
struct OpenPartition {
    file: BufWriter<tokio::fs::File>,
    path: PathBuf,
    /// The partition's time (ms), for the partition-time trigger.
    time: Option<i64>,
    created: Instant,
}

/// Writes rows into partition folders and commits them.
pub struct PartitionedFileSink {
    table: String,
    format: Format,
    root: PathBuf,
    extension: String,
    /// Names and indexes of the partition columns in the written batches.
    keys: Vec<(String, usize)>,
    /// Indexes of the other columns: what the files hold.
    data_columns: Vec<usize>,
    policy: CommitPolicy,
    open: BTreeMap<String, OpenPartition>,
    /// Part files written so far per partition (a re-opened partition gets a new one).
    parts: BTreeMap<String, usize>,
}

impl PartitionedFileSink {
    pub async fn open(table: &TableDef) -> Result<Self> {
        let options = crate::filesystem::options(table)?;
        let schema = &table.physical_schema;
        let mut keys = Vec::new();
        for name in &table.partition_keys {
            let index = schema.index_of(name).map_err(|_| {
                ConnectorError::Other(format!("PARTITIONED BY names an unknown column '{name}'"))
            })?;
            keys.push((name.clone(), index));
        }
        let data_columns: Vec<usize> = (0..schema.fields().len())
            .filter(|i| !keys.iter().any(|(_, k)| k == i))
            .collect();
        let data_schema = Arc::new(Schema::new(
            data_columns
                .iter()
                .map(|&i| schema.field(i).clone())
                .collect::<Vec<_>>(),
        ));
        Ok(Self {
            table: table.name.clone(),
            format: Format::for_writing(&options, data_schema)?,
            root: PathBuf::from(local_path(options.required("path")?)),
            extension: options.get("format").unwrap_or("json").to_string(),
            keys,
            data_columns,
            policy: CommitPolicy::from_options(&options)?,
            open: BTreeMap::new(),
            parts: BTreeMap::new(),
        })
    }

    fn error(&self, error: ConnectorError) -> RuntimeError {
        error.at("sink", &self.table)
    }

    fn io_error(&self, path: &std::path::Path, source: std::io::Error) -> RuntimeError {
        self.error(ConnectorError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Each row's partition folder (`a=1/b=x`).
    fn partition_of_rows(&self, batch: &RecordBatch) -> Result<Vec<String>> {
        let options = FormatOptions::default()
            .with_timestamp_format(Some(crate::format::TIMESTAMP_FORMAT))
            .with_timestamp_tz_format(Some(crate::format::TIMESTAMP_TZ_FORMAT));
        let formatters = self
            .keys
            .iter()
            .map(|(_, i)| ArrayFormatter::try_new(batch.column(*i).as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| ConnectorError::Other(e.to_string()))?;
        Ok((0..batch.num_rows())
            .map(|row| {
                self.keys
                    .iter()
                    .zip(&formatters)
                    .map(|((name, index), formatter)| {
                        let value = if batch.column(*index).is_null(row) {
                            NULL_PARTITION.to_string()
                        } else {
                            formatter.value(row).to_string()
                        };
                        format!("{name}={value}")
                    })
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .collect())
    }

    /// The time of a partition for the partition-time trigger: the pattern with `$key`
    /// replaced by the key's value (default: the first key's value).
    fn partition_time(&self, partition: &str) -> Option<i64> {
        let CommitTrigger::PartitionTime { pattern } = &self.policy.trigger else {
            return None;
        };
        let values: Vec<(&str, &str)> = partition
            .split('/')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let text = match pattern {
            Some(pattern) => {
                // Longest names first, so `$dt` does not eat the start of `$dtx`.
                let mut by_length = values.clone();
                by_length.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
                by_length.iter().fold(pattern.clone(), |text, (k, v)| {
                    text.replace(&format!("${k}"), v)
                })
            }
            None => values.first()?.1.to_string(),
        };
        parse_time(&text)
    }

    async fn partition_file(&mut self, partition: &str) -> runnel_runtime::Result<()> {
        if self.open.contains_key(partition) {
            return Ok(());
        }
        let folder = self.root.join(partition);
        if let Err(e) = tokio::fs::create_dir_all(&folder).await {
            return Err(self.io_error(&folder, e));
        }
        let part = self.parts.entry(partition.to_string()).or_insert(0);
        let path = folder.join(format!("part-{part}.{}", self.extension));
        *part += 1;
        let file = match tokio::fs::File::create(&path).await {
            Ok(file) => file,
            Err(e) => return Err(self.io_error(&path, e)),
        };
        let time = self.partition_time(partition);
        if time.is_none() && matches!(self.policy.trigger, CommitTrigger::PartitionTime { .. }) {
            return Err(self.error(ConnectorError::Other(format!(
                "partition {partition}: 'partition.time-extractor.timestamp-pattern' does not \
                 give a time (expected yyyy-MM-dd HH:mm:ss after replacing $key by its value)"
            ))));
        }
        self.open.insert(
            partition.to_string(),
            OpenPartition {
                file: BufWriter::with_capacity(1 << 16, file),
                path,
                time,
                created: Instant::now(),
            },
        );
        Ok(())
    }

    /// Closes the partitions `due` says are complete and writes their success files.
    async fn commit_where(
        &mut self,
        due: impl Fn(&OpenPartition) -> bool,
    ) -> runnel_runtime::Result<()> {
        let ready: Vec<String> = self
            .open
            .iter()
            .filter(|(_, p)| due(p))
            .map(|(name, _)| name.clone())
            .collect();
        for name in ready {
            let Some(mut partition) = self.open.remove(&name) else {
                continue;
            };
            if let Err(e) = partition.file.flush().await {
                return Err(self.io_error(&partition.path, e));
            }
            if let Some(success) = &self.policy.success_file {
                let marker = self.root.join(&name).join(success);
                if let Err(e) = tokio::fs::write(&marker, b"").await {
                    return Err(self.io_error(&marker, e));
                }
            }
        }
        Ok(())
    }

    /// Commits what the processing clock says is due.
    async fn commit_by_clock(&mut self) -> runnel_runtime::Result<()> {
        if matches!(self.policy.trigger, CommitTrigger::ProcessTime) {
            let delay = self.policy.delay;
            self.commit_where(|p| p.created.elapsed() >= delay).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for PartitionedFileSink {
    async fn write_batch(&mut self, batch: RecordBatch) -> runnel_runtime::Result<()> {
        let partitions = self.partition_of_rows(&batch).map_err(|e| self.error(e))?;
        // Rows of each partition, in arrival order.
        let mut rows: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for (i, partition) in partitions.iter().enumerate() {
            rows.entry(partition).or_default().push(i as u32);
        }
        for (partition, indexes) in rows {
            let indexes = UInt32Array::from(indexes);
            let columns = self
                .data_columns
                .iter()
                .map(|&c| take(batch.column(c), &indexes, None))
                .collect::<std::result::Result<Vec<ArrayRef>, _>>()
                .map_err(|e| self.error(ConnectorError::Other(e.to_string())))?;
            let data = RecordBatch::try_new(self.format_schema(), columns)
                .map_err(|e| self.error(ConnectorError::Other(e.to_string())))?;
            let records = self.format.encode(&data).map_err(|source| {
                self.error(ConnectorError::Encode {
                    table: self.table.clone(),
                    source,
                })
            })?;
            self.partition_file(partition).await?;
            let Some(open) = self.open.get_mut(partition) else {
                continue;
            };
            if let Err(e) = write_lines(&mut open.file, &records).await {
                let path = open.path.clone();
                return Err(self.io_error(&path, e));
            }
        }
        self.commit_by_clock().await
    }

    async fn on_watermark(&mut self, watermark: i64) -> runnel_runtime::Result<()> {
        if let CommitTrigger::PartitionTime { .. } = self.policy.trigger {
            let delay = self.policy.delay.as_millis() as i64;
            self.commit_where(|p| p.time.is_some_and(|t| t.saturating_add(delay) <= watermark))
                .await?;
        }
        self.commit_by_clock().await
    }

    async fn finish(&mut self) -> runnel_runtime::Result<()> {
        self.commit_where(|_| true).await
    }
}

impl PartitionedFileSink {
    fn format_schema(&self) -> Arc<Schema> {
        match &self.format {
            Format::Json(f) => f.schema.clone(),
            Format::DebeziumJson(f) => f.payload.clone(),
            Format::Csv(f) => f.schema.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use runnel_sql::{parse_script, Catalog, Statement, StreamPlanner};

    fn table(dir: &std::path::Path) -> TableDef {
        let sql = format!(
            "CREATE TABLE out (v BIGINT, dt STRING, hm STRING) PARTITIONED BY (dt, hm) WITH (
               'connector' = 'filesystem', 'path' = 'file://{}', 'format' = 'csv',
               'sink.partition-commit.trigger' = 'partition-time',
               'sink.partition-commit.delay' = '1 min',
               'sink.partition-commit.policy.kind' = 'success-file',
               'partition.time-extractor.timestamp-pattern' = '$dt $hm:00')",
            dir.display()
        );
        let Some(Statement::CreateTable(create)) = parse_script(&sql).unwrap().pop() else {
            panic!("a CREATE TABLE")
        };
        StreamPlanner::new()
            .create_table(&Catalog::default(), *create)
            .unwrap()
    }

    fn batch(table: &TableDef, rows: &[(i64, &str, &str)]) -> RecordBatch {
        RecordBatch::try_new(
            table.physical_schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn partitions_commit_when_the_watermark_passes_their_time_plus_the_delay() {
        let dir = std::env::temp_dir().join(format!("runnel-partitions-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let table = table(&dir);
        let mut sink = PartitionedFileSink::open(&table).await.unwrap();
        let rows = [
            (1, "2026-01-01", "00:00"),
            (2, "2026-01-01", "00:01"),
            (3, "2026-01-01", "00:00"),
        ];
        sink.write_batch(batch(&table, &rows)).await.unwrap();
        let first = dir.join("dt=2026-01-01/hm=00:00");
        let second = dir.join("dt=2026-01-01/hm=00:01");
        let minute = |m: i64| 1_767_225_600_000 + m * 60_000; // 2026-01-01 00:m:00

        // 00:00 + 1 min delay is due at 00:01:00, not a millisecond earlier.
        sink.on_watermark(minute(1) - 1).await.unwrap();
        assert!(!first.join("_SUCCESS").exists());
        sink.on_watermark(minute(1)).await.unwrap();
        assert!(first.join("_SUCCESS").exists());
        assert!(!second.join("_SUCCESS").exists());
        // Partition columns live in the folder names only.
        let text = std::fs::read_to_string(first.join("part-0.csv")).unwrap();
        assert_eq!(text, "1\n3\n");

        // A late row reopens its committed partition in a new part file.
        sink.write_batch(batch(&table, &[(4, "2026-01-01", "00:00")]))
            .await
            .unwrap();
        sink.finish().await.unwrap();
        assert!(second.join("_SUCCESS").exists());
        assert_eq!(
            std::fs::read_to_string(first.join("part-1.csv")).unwrap(),
            "4\n"
        );
        assert_eq!(
            std::fs::read_to_string(second.join("part-0.csv")).unwrap(),
            "2\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
