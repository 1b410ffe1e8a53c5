//! `'connector' = 'filesystem'`: a bounded source over a file or a folder of files (JSON
//! lines or CSV), and a sink writing such a file.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use runnel_runtime::{JobMetrics, RuntimeError, Sink, Source, SourceBatch, SourceEvent};
use runnel_sql::TableDef;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::error::{ConnectorError, Result};
use crate::format::{Format, FORMAT_OPTIONS};
use crate::options::TableOptions;

/// Options the filesystem connector accepts (besides the format's).
pub const OPTIONS: &[&str] = &[
    "path",
    "sink.partition-commit.trigger",
    "sink.partition-commit.delay",
    "sink.partition-commit.policy.kind",
    "sink.partition-commit.success-file.name",
    "partition.time-extractor.timestamp-pattern",
    "sink.rolling-policy.rollover-interval",
    "sink.rolling-policy.check-interval",
    "sink.rolling-policy.file-size",
];

/// Lines decoded together.
const LINES_PER_BATCH: usize = 8192;
/// Bytes read from a file at a time.
const READ_BYTES: usize = 1 << 20;

pub(crate) fn options(table: &TableDef) -> Result<TableOptions<'_>> {
    let valid: Vec<&str> = OPTIONS.iter().chain(FORMAT_OPTIONS).copied().collect();
    let options = TableOptions::validate(&table.name, "filesystem", &table.options, &valid, &[])?;
    options.required("path")?;
    Format::for_reading(&options, table)?;
    crate::partitioned_files::CommitPolicy::from_options(&options)?;
    Ok(options)
}

/// The files a path names: the file itself, or the visible files of a folder by name.
fn list_files(path: &Path) -> Result<Vec<PathBuf>> {
    let io = |source| ConnectorError::Io {
        path: path.display().to_string(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let hidden = name.to_string_lossy().starts_with(['.', '_']);
        if !hidden && entry.file_type().map_err(io)?.is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// A `'path'` as a local path: Flink's `file://` scheme is accepted and dropped.
pub(crate) fn local_path(path: &str) -> &str {
    path.strip_prefix("file://").unwrap_or(path)
}

/// Reads files on a blocking thread, decoding lines in batches; the job receives them
/// through a small channel (so reading pauses when the job is busy).
pub struct FileSource {
    table: String,
    events: mpsc::Receiver<Result<SourceBatch>>,
}

impl FileSource {
    /// `start`: a restored job resumes after the checkpoint's number of records.
    pub fn open(
        table: &TableDef,
        metrics: Arc<JobMetrics>,
        start: Option<&runnel_runtime::SourceState>,
    ) -> Result<Self> {
        let options = options(table)?;
        let format = Format::for_reading(&options, table)?;
        let files = list_files(Path::new(local_path(options.required("path")?)))?;
        let skip = start
            .and_then(|s| s.offsets.first().copied().flatten())
            .map_or(0, |n| n.max(0) as usize);
        let (sender, events) = mpsc::channel(4);
        let definition = table.clone();
        std::thread::Builder::new()
            .name(format!("runnel-file-{}", table.name))
            .spawn(move || {
                let read = read_files(&definition, &files, &format, &metrics, skip, &sender);
                if let Err(e) = read {
                    let _ = sender.blocking_send(Err(e));
                }
            })
            .map_err(|e| ConnectorError::Other(format!("cannot start the file reader: {e}")))?;
        Ok(Self {
            table: table.name.clone(),
            events,
        })
    }
}

/// Reads `files` in order, skipping their first `skip` records (a restored job's
/// position); each batch carries the number of records read so far as its offset.
/// Metadata: `file.path` and `file.name` (Flink's keys).
fn read_files(
    table: &TableDef,
    files: &[PathBuf],
    format: &Format,
    metrics: &JobMetrics,
    skip: usize,
    sender: &mpsc::Sender<Result<SourceBatch>>,
) -> Result<()> {
    let mut records_seen = 0usize;
    for path in files {
        let io = |source| ConnectorError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = File::open(path).map_err(io)?;
        // The file is read in blocks of READ_BYTES into `text`; `split` is where the
        // first line not yet cut out of it starts.
        let mut text: Vec<u8> = Vec::with_capacity(2 * READ_BYTES);
        let mut split = 0usize;
        let mut at_end = false;
        let mut bounds: Vec<(usize, usize, usize)> = Vec::with_capacity(LINES_PER_BATCH);
        let mut line_number = 0usize;
        loop {
            while bounds.len() < LINES_PER_BATCH {
                let end = match memchr::memchr(b'\n', &text[split..]) {
                    Some(n) => split + n + 1,
                    None if at_end && split < text.len() => text.len(),
                    None => break,
                };
                line_number += 1;
                let line = &text[split..end];
                let trimmed = line.trim_ascii();
                if !trimmed.is_empty() {
                    records_seen += 1;
                    if records_seen > skip {
                        let offset = line.len() - line.trim_ascii_start().len();
                        bounds.push((split + offset, split + offset + trimmed.len(), line_number));
                    }
                }
                split = end;
            }
            let full = bounds.len() >= LINES_PER_BATCH;
            if !full && !at_end {
                if bounds.is_empty() {
                    // Nothing in `text` before `split` is needed any more.
                    text.drain(..split);
                    split = 0;
                }
                // Read into the spare capacity: no block zeroed first.
                text.reserve(READ_BYTES);
                let read = (&mut file)
                    .take(READ_BYTES as u64)
                    .read_to_end(&mut text)
                    .map_err(io)?;
                at_end = read == 0;
                continue;
            }
            if !bounds.is_empty() {
                let records: Vec<&[u8]> = bounds.iter().map(|&(s, e, _)| &text[s..e]).collect();
                let mut decoded = format.decode(table, &records, |i| {
                    format!("{} line {}", path.display(), bounds[i].2)
                })?;
                decoded.fill_metadata(table, |key| {
                    let value = match key {
                        "file.path" => path.display().to_string(),
                        "file.name" => path.file_name()?.to_string_lossy().into_owned(),
                        _ => return None,
                    };
                    let values = std::iter::repeat_n(Some(value), records.len());
                    Some(Arc::new(datafusion::arrow::array::StringArray::from_iter(values)) as _)
                })?;
                JobMetrics::add(&metrics.bad_records, decoded.skipped);
                let file = path.display().to_string();
                let dead_letters = decoded.dead_letters(&table.name, &records, |i| {
                    (Some(file.as_str()), None, Some(bounds[i].2 as i64))
                })?;
                let batch = SourceBatch {
                    partition: 0,
                    batch: decoded.batch,
                    next_offset: Some(records_seen as i64),
                    dead_letters,
                };
                if sender.blocking_send(Ok(batch)).is_err() {
                    return Ok(()); // the job stopped
                }
                // What is left of the last block moves to the front.
                text.drain(..split);
                split = 0;
                bounds.clear();
            } else if at_end {
                break;
            }
        }
    }
    Ok(())
}

#[async_trait]
impl Source for FileSource {
    fn partitions(&self) -> usize {
        1
    }

    async fn next_event(&mut self) -> runnel_runtime::Result<Option<SourceEvent>> {
        match self.events.recv().await {
            Some(Ok(batch)) => Ok(Some(SourceEvent::Batch(batch))),
            Some(Err(e)) => Err(e.at("source", &self.table)),
            None => Ok(None),
        }
    }
}

/// Writes rows as JSON lines or CSV into one file (`part-0.<format>` when `path` is a folder).
pub struct FileSink {
    table: String,
    format: Format,
    path: PathBuf,
    file: tokio::io::BufWriter<tokio::fs::File>,
}

impl FileSink {
    pub async fn open(table: &TableDef) -> Result<Self> {
        let options = options(table)?;
        let format = Format::for_writing(&options, table.physical_schema.clone())?;
        let path_option = local_path(options.required("path")?);
        let mut path = PathBuf::from(path_option);
        let extension = options.get("format").unwrap_or("json");
        if path.is_dir() || path_option.ends_with('/') {
            path = path.join(format!("part-0.{extension}"));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|source| ConnectorError::Io {
                    path: parent.display().to_string(),
                    source,
                })?;
        }
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|source| ConnectorError::Io {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Self {
            table: table.name.clone(),
            format,
            path,
            file: tokio::io::BufWriter::with_capacity(1 << 20, file),
        })
    }

    fn io_error(&self, source: std::io::Error) -> RuntimeError {
        ConnectorError::Io {
            path: self.path.display().to_string(),
            source,
        }
        .at("sink", &self.table)
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn write_batch(&mut self, batch: RecordBatch) -> runnel_runtime::Result<()> {
        let rows = self.format.encode(&batch).map_err(|source| {
            ConnectorError::Encode {
                table: self.table.clone(),
                source,
            }
            .at("sink", &self.table)
        })?;
        if let Err(e) = write_lines(&mut self.file, &rows).await {
            return Err(self.io_error(e));
        }
        Ok(())
    }

    async fn finish(&mut self) -> runnel_runtime::Result<()> {
        if let Err(e) = self.file.flush().await {
            return Err(self.io_error(e));
        }
        Ok(())
    }
}

/// Writes each record and a newline.
pub(crate) async fn write_lines(
    file: &mut tokio::io::BufWriter<tokio::fs::File>,
    records: &[Vec<u8>],
) -> std::io::Result<()> {
    for record in records {
        file.write_all(record).await?;
        file.write_all(b"\n").await?;
    }
    Ok(())
}

/// `'connector' = 'filesystem'`: a bounded source of files and a sink (partitioned by
/// the table's `PARTITIONED BY` columns when it declares some).
pub struct FilesystemConnector;

#[async_trait]
impl crate::Connector for FilesystemConnector {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    fn validate(&self, table: &TableDef) -> Result<()> {
        options(table).map(drop)
    }

    fn metadata_keys(&self) -> &'static [&'static str] {
        &["file.path", "file.name"]
    }

    fn is_bounded(&self, _table: &TableDef) -> bool {
        true
    }

    async fn open_source(
        &self,
        table: &TableDef,
        context: crate::SourceContext<'_>,
    ) -> Result<Box<dyn runnel_runtime::Source>> {
        Ok(Box::new(FileSource::open(
            table,
            context.metrics,
            context.start,
        )?))
    }

    async fn open_sink(
        &self,
        table: &TableDef,
        schema: datafusion::arrow::datatypes::SchemaRef,
        _config: &runnel_runtime::JobConfig,
    ) -> Result<Box<dyn Sink>> {
        crate::format::check_writable(table, &schema)?;
        if table.partition_keys.is_empty() {
            Ok(Box::new(FileSink::open(table).await?))
        } else {
            Ok(Box::new(
                crate::partitioned_files::PartitionedFileSink::open(table).await?,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{BadRecords, JsonFormat};
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};

    /// Lines are cut out of blocks of `READ_BYTES`: a line across two blocks, a line
    /// longer than a block, blank lines, `\r\n` and a last line without a newline are
    /// each one record (or none), in order, numbered by their line.
    #[test]
    fn every_line_is_read_once_whatever_blocks_it_spans() {
        let long = "x".repeat(READ_BYTES + 10);
        let mut text = String::new();
        let mut expected = Vec::new();
        for i in 0..30_000i64 {
            match i % 1000 {
                7 => text.push_str("\n  \n"),
                8 => text.push_str(&format!("{{\"id\": {i}, \"pad\": \"{long}\"}}\r\n")),
                _ => text.push_str(&format!("{{\"id\": {i}}}\n")),
            }
            if i % 1000 != 7 {
                expected.push(i);
            }
        }
        text.push_str("{\"id\": -1}");
        expected.push(-1);
        let dir = std::env::temp_dir().join(format!("runnel-lines-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lines.json");
        std::fs::write(&path, text).unwrap();

        let fields = vec![Field::new("id", DataType::Int64, true)];
        let table = crate::test_table("t", fields.clone(), &[]);
        let format = Format::Json(JsonFormat::new(
            Arc::new(Schema::new(fields)),
            BadRecords::Fail,
        ));
        let (sender, mut receiver) = mpsc::channel(1024);
        let metrics = JobMetrics::default();
        read_files(&table, &[path], &format, &metrics, 2, &sender).unwrap();
        drop(sender);
        let mut ids = Vec::new();
        let mut last_offset = None;
        while let Ok(Ok(batch)) = receiver.try_recv() {
            let column: &Int64Array = batch.batch.column(0).as_primitive::<Int64Type>();
            ids.extend(column.values().iter().copied());
            last_offset = batch.next_offset;
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(ids, expected[2..], "the first two records skipped");
        assert_eq!(last_offset, Some(expected.len() as i64));
    }
}
