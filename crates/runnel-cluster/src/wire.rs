//! What the records of Runnel's internal topics hold.
//!
//! A **repartition** record is one of: rows (an Arrow IPC stream of one batch), or a
//! marker of its writer's progress — its watermark, its going idle, its end. Headers say
//! which, which task wrote it and which input of the reading stage it feeds:
//! `runnel.kind` (`rows` | `watermark` | `idle` | `end`), `runnel.writer` (`stage/partition`),
//! `runnel.input` (`0` | `1`), `runnel.watermark` (milliseconds, for `watermark`).
//! A writer sends its markers to every partition, so each reading task learns every
//! writer's progress and takes the minimum, as a subtask does over its input channels.
//!
//! A **changelog** record is keyed by what it holds: `progress` (JSON: where the task's
//! input stands) or `state/<stage>/<operator>` (an operator's snapshot as Arrow IPC; a
//! tombstone when it holds none). The latest record of each key is the task's state.

use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use rdkafka::message::{Header, OwnedHeaders};
use serde::{Deserialize, Serialize};

use crate::error::{ClusterError, Result};
use crate::topology::TaskId;

const KIND: &str = "runnel.kind";
const WRITER: &str = "runnel.writer";
const INPUT: &str = "runnel.input";
const WATERMARK: &str = "runnel.watermark";

/// What a repartition record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Rows,
    Watermark(i64),
    Idle,
    End,
}

/// A repartition record's headers, read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    pub kind: RecordKind,
    pub writer: TaskId,
    pub input: usize,
}

impl Envelope {
    /// The record's headers.
    pub fn headers(&self) -> OwnedHeaders {
        let (kind, watermark) = match self.kind {
            RecordKind::Rows => ("rows", None),
            RecordKind::Watermark(w) => ("watermark", Some(w.to_string())),
            RecordKind::Idle => ("idle", None),
            RecordKind::End => ("end", None),
        };
        let writer = self.writer.to_string();
        let input = self.input.to_string();
        let mut headers = OwnedHeaders::new_with_capacity(4)
            .insert(Header {
                key: KIND,
                value: Some(kind),
            })
            .insert(Header {
                key: WRITER,
                value: Some(&writer),
            })
            .insert(Header {
                key: INPUT,
                value: Some(&input),
            });
        if let Some(watermark) = &watermark {
            headers = headers.insert(Header {
                key: WATERMARK,
                value: Some(watermark),
            });
        }
        headers
    }

    /// Reads the headers of a repartition record (each key and value, as polled).
    pub fn read(headers: &[(&[u8], Option<&[u8]>)]) -> std::result::Result<Self, String> {
        let get = |key: &str| {
            headers
                .iter()
                .find(|(k, _)| *k == key.as_bytes())
                .and_then(|(_, v)| *v)
                .and_then(|v| std::str::from_utf8(v).ok())
                .ok_or_else(|| format!("no header {key}: not a record Runnel wrote"))
        };
        let kind = match get(KIND)? {
            "rows" => RecordKind::Rows,
            "idle" => RecordKind::Idle,
            "end" => RecordKind::End,
            "watermark" => RecordKind::Watermark(
                get(WATERMARK)?
                    .parse()
                    .map_err(|_| "a watermark that is no number".to_string())?,
            ),
            other => return Err(format!("unknown record kind '{other}'")),
        };
        Ok(Envelope {
            kind,
            writer: get(WRITER)?.parse()?,
            input: get(INPUT)?
                .parse()
                .map_err(|_| "an input that is no number".to_string())?,
        })
    }
}

/// `batch` as an Arrow IPC stream.
pub fn encode_batch(batch: &RecordBatch) -> Result<Vec<u8>> {
    let arrow = |source| ClusterError::Arrow {
        context: "encoding rows for a repartition or changelog topic".into(),
        source,
    };
    let mut bytes = Vec::new();
    let mut writer = StreamWriter::try_new(&mut bytes, batch.schema_ref()).map_err(arrow)?;
    writer.write(batch).map_err(arrow)?;
    writer.finish().map_err(arrow)?;
    drop(writer);
    Ok(bytes)
}

/// The one batch of an Arrow IPC stream written by [`encode_batch`].
pub fn decode_batch(bytes: &[u8]) -> std::result::Result<RecordBatch, String> {
    let mut reader = StreamReader::try_new(bytes, None).map_err(|e| e.to_string())?;
    match reader.next() {
        Some(batch) => batch.map_err(|e| e.to_string()),
        None => Err("an Arrow stream without rows".into()),
    }
}

/// Where a task's input stands, written with its state at every commit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskProgress {
    /// A source task: the largest watermark candidate its rows gave.
    pub source_watermark: Option<i64>,
    /// A bounded source task: the offset it reads up to (fixed when it first started).
    pub end_offset: Option<i64>,
    /// A repartition task: per input, each writer's watermark (`None`: none yet).
    pub writer_watermarks: [Vec<Option<i64>>; 2],
    /// A repartition task: per input, which writers ended.
    pub writer_ended: [Vec<bool>; 2],
    /// The task read its whole input and wrote its end.
    pub finished: bool,
    /// The next offset of the task's input partition this state stands at: committed in
    /// the same transaction, so a task restored from it resumes there.
    #[serde(default)]
    pub next_offset: Option<i64>,
}

impl TaskProgress {
    /// The progress among a task's restored changelog records (the default when it has
    /// none yet).
    pub fn restored(
        records: &std::collections::HashMap<String, Option<Vec<u8>>>,
    ) -> std::result::Result<Self, String> {
        match records.get(PROGRESS_KEY) {
            Some(Some(bytes)) => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
            _ => Ok(Self::default()),
        }
    }
}

/// The changelog key of the progress record.
pub const PROGRESS_KEY: &str = "progress";

/// The changelog key of operator `operator` of graph stage `stage`'s chain (`head` for a
/// two-input stage's join).
pub fn state_key(stage: usize, operator: &str) -> String {
    format!("state/{stage}/{operator}")
}

/// One changelog record: its key and its value (`None`: a tombstone).
pub type ChangelogRecord = (String, Option<Vec<u8>>);

/// The latest value of each key of a changelog partition.
pub type LatestRecords = std::collections::HashMap<String, Option<Vec<u8>>>;

/// A changelog value larger than this is written as numbered parts: one Kafka record
/// holds at most `MAX_RECORD_BYTES`, a task's state may hold more.
pub const STATE_PART_BYTES: usize = 8 * 1024 * 1024;

/// The value of a key stored in parts: this prefix and the part count (an Arrow IPC
/// stream, which every other state value is, starts with `0xFFFFFFFF`).
const PARTS_HEADER: &[u8] = b"runnel-parts:";

/// The key part `index` of `key`'s value is stored under.
fn part_key(key: &str, index: usize) -> String {
    format!("{key}#part{index}")
}

/// The changelog records that store `value` under `key`: the value itself when it fits
/// in `part_bytes`, else a header naming the part count and the parts. Parts a previous
/// write had beyond the new count (`previous_parts`) are deleted with tombstones.
/// Returns the records and the part count now (0: not split).
pub fn state_records(
    key: &str,
    value: Option<Vec<u8>>,
    previous_parts: usize,
    part_bytes: usize,
) -> (Vec<ChangelogRecord>, usize) {
    let mut records = Vec::new();
    let parts = match value {
        Some(value) if value.len() > part_bytes => {
            let chunks: Vec<&[u8]> = value.chunks(part_bytes).collect();
            let mut header = PARTS_HEADER.to_vec();
            header.extend_from_slice(chunks.len().to_string().as_bytes());
            records.push((key.to_string(), Some(header)));
            for (index, chunk) in chunks.iter().enumerate() {
                records.push((part_key(key, index), Some(chunk.to_vec())));
            }
            chunks.len()
        }
        value => {
            records.push((key.to_string(), value));
            0
        }
    };
    records.extend((parts..previous_parts).map(|index| (part_key(key, index), None)));
    (records, parts)
}

/// The values of a task's restored changelog records with those stored in parts put
/// together again (the parts' own keys left out), and how many parts each such key has.
pub fn join_parts(
    mut records: LatestRecords,
) -> std::result::Result<(LatestRecords, std::collections::HashMap<String, usize>), String> {
    let mut counts = std::collections::HashMap::new();
    let split: Vec<(String, usize)> = records
        .iter()
        .filter_map(|(key, value)| {
            let count = value.as_deref()?.strip_prefix(PARTS_HEADER)?;
            Some((key.clone(), std::str::from_utf8(count).ok()?.parse().ok()?))
        })
        .collect();
    for (key, count) in split {
        let mut value = Vec::new();
        for index in 0..count {
            match records.remove(&part_key(&key, index)) {
                Some(Some(part)) => value.extend_from_slice(&part),
                _ => return Err(format!("{key}: part {index} of {count} is missing")),
            }
        }
        records.insert(key.clone(), Some(value));
        counts.insert(key, count);
    }
    records.retain(|key, _| !key.contains("#part"));
    Ok((records, counts))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn headers_round_trip_for_every_kind() {
        let writer = TaskId {
            stage: 3,
            partition: 11,
        };
        for kind in [
            RecordKind::Rows,
            RecordKind::Watermark(-5),
            RecordKind::Idle,
            RecordKind::End,
        ] {
            let envelope = Envelope {
                kind,
                writer,
                input: 1,
            };
            let headers = envelope.headers();
            use rdkafka::message::Headers;
            let read: Vec<(&[u8], Option<&[u8]>)> = headers
                .iter()
                .map(|h| (h.key.as_bytes(), h.value))
                .collect();
            assert_eq!(Envelope::read(&read), Ok(envelope));
        }
    }

    #[test]
    fn a_record_without_headers_is_refused_with_the_reason() {
        let error = Envelope::read(&[]).unwrap_err();
        assert!(error.contains("not a record Runnel wrote"), "{error}");
    }

    #[test]
    fn rows_round_trip_through_arrow_ipc() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![Some(1), None]))],
        )
        .unwrap();
        let bytes = encode_batch(&batch).unwrap();
        assert_eq!(decode_batch(&bytes).unwrap(), batch);
        assert!(decode_batch(b"garbage").is_err());
    }

    #[test]
    fn big_values_are_stored_in_parts_and_put_together_again() {
        let big: Vec<u8> = (0..25u8).collect();
        let (records, parts) = state_records("state/1/0", Some(big.clone()), 0, 10);
        assert_eq!(parts, 3);
        assert_eq!(records.len(), 4, "a header and three parts");
        let stored: std::collections::HashMap<_, _> = records.into_iter().collect();
        let (joined, counts) = join_parts(stored.clone()).unwrap();
        assert_eq!(joined.len(), 1, "{joined:?}");
        assert_eq!(joined["state/1/0"].as_deref(), Some(&big[..]));
        assert_eq!(counts["state/1/0"], 3);

        // Smaller again: one record, and tombstones for the parts no longer used.
        let (records, parts) = state_records("state/1/0", Some(vec![1, 2]), 3, 10);
        assert_eq!(parts, 0);
        let keys: Vec<_> = records
            .iter()
            .map(|(k, v)| (k.as_str(), v.is_some()))
            .collect();
        assert_eq!(
            keys,
            [
                ("state/1/0", true),
                ("state/1/0#part0", false),
                ("state/1/0#part1", false),
                ("state/1/0#part2", false)
            ]
        );
        let mut latest = stored.clone();
        latest.extend(records);
        let (joined, counts) = join_parts(latest).unwrap();
        assert_eq!(joined.len(), 1);
        assert_eq!(joined["state/1/0"].as_deref(), Some(&[1u8, 2][..]));
        assert!(counts.is_empty());

        let mut broken = stored;
        broken.remove("state/1/0#part1");
        let error = join_parts(broken).unwrap_err();
        assert!(error.contains("part 1 of 3 is missing"), "{error}");
    }
}
