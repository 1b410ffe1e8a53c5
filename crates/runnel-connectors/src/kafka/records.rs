//! A topic's records and Arrow rows, both ways: [`KafkaRecordDecoder`] turns one poll's
//! records of a partition into the table's rows (value, key, metadata columns), and
//! [`KafkaRecordEncoder`] turns a batch into the records a sink produces. The source and
//! sink of this connector use them, and so does a job spread over processes, which polls
//! and produces through clients of its own.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use rdkafka::message::{Header, Message, OwnedHeaders};
use runnel_sql::TableDef;

use crate::error::{ConnectorError, Result};
use crate::format::{Decoded, Format, JsonFormat};

/// How a table's records become rows.
pub struct KafkaRecordDecoder {
    definition: TableDef,
    format: Format,
    /// `upsert-kafka`: the key of each record names its row, a tombstone deletes it.
    upsert: Option<super::upsert::UpsertKey>,
    /// The table declares `METADATA FROM 'headers'`: records' headers are read.
    reads_headers: bool,
}

impl KafkaRecordDecoder {
    /// The decoder of `table`'s records (its value format, its key, its metadata).
    pub fn new(table: &TableDef) -> Result<Self> {
        let options = super::options(table)?;
        Ok(Self {
            definition: table.clone(),
            format: super::value_format(&options, table)?,
            upsert: (table.connector() == Some("upsert-kafka"))
                .then(|| super::upsert::UpsertKey::of(table))
                .transpose()?,
            reads_headers: table.metadata.iter().any(|m| m.key == "headers"),
        })
    }

    /// Whether a tombstone is a row (a delete of an upsert table) rather than nothing.
    pub fn keeps_tombstones(&self) -> bool {
        self.upsert.is_some()
    }

    /// Whether records' headers are read (gather them into [`PartitionRecords`]).
    pub fn reads_headers(&self) -> bool {
        self.reads_headers
    }

    /// The rows of `records`, read from `partition` of `topic`, with the table's metadata
    /// columns filled in. A record that cannot be decoded is an error naming topic,
    /// partition and offset, or skipped and counted in [`Decoded::skipped`].
    pub fn decode(
        &self,
        topic: &str,
        partition: i32,
        records: &PartitionRecords<'_>,
    ) -> Result<Decoded> {
        let offsets = &records.offsets;
        let place = |k: usize| format!("topic {topic} partition {partition} offset {}", offsets[k]);
        let mut decoded = match &self.upsert {
            Some(upsert) => upsert.decode(
                &self.format,
                &self.definition,
                &records.payloads,
                &records.keys,
                place,
            )?,
            None => {
                let payloads: Vec<&[u8]> = records.payloads.iter().flatten().copied().collect();
                self.format.decode(&self.definition, &payloads, place)?
            }
        };
        decoded.fill_metadata(&self.definition, |key| {
            record_metadata(
                key,
                topic,
                partition,
                offsets,
                &records.timestamps,
                &records.headers,
            )
        })?;
        Ok(decoded)
    }
}

/// One poll's records of one partition, borrowed from the poll.
#[derive(Default)]
pub struct PartitionRecords<'a> {
    pub offsets: Vec<i64>,
    pub timestamps: Vec<Option<i64>>,
    /// `None`: a tombstone.
    pub payloads: Vec<Option<&'a [u8]>>,
    pub keys: Vec<Option<&'a [u8]>>,
    /// Empty unless the table reads them (see [`KafkaRecordDecoder::reads_headers`]).
    pub headers: Vec<Vec<RecordHeader<'a>>>,
}

impl<'a> PartitionRecords<'a> {
    /// Adds record `record` of `polled` (its headers too when `headers`).
    pub fn push(&mut self, polled: &'a PolledRecords, record: usize, headers: bool) {
        self.offsets.push(polled.offsets[record]);
        self.timestamps.push(polled.timestamps[record]);
        self.payloads.push(polled.payload(record));
        self.keys.push(polled.key(record));
        if headers {
            self.headers.push(polled.headers(record));
        }
    }
}

/// One header of a record: its key and value (`None`: null).
pub type RecordHeader<'a> = (&'a [u8], Option<&'a [u8]>);

/// The Kafka metadata Flink's connector offers (`METADATA FROM 'offset'`, ...).
pub(crate) const METADATA_KEYS: &[&str] = &["topic", "partition", "offset", "timestamp", "headers"];

/// The values of metadata `key` for records of one partition; `None` for a key the
/// connector does not provide.
fn record_metadata(
    key: &str,
    topic: &str,
    partition: i32,
    offsets: &[i64],
    timestamps: &[Option<i64>],
    headers: &[Vec<RecordHeader<'_>>],
) -> Option<datafusion::arrow::array::ArrayRef> {
    use datafusion::arrow::array::{
        Int32Array, Int64Array, StringArray, TimestampMillisecondArray,
    };
    let n = offsets.len();
    Some(match key {
        "topic" => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(topic, n))),
        "partition" => Arc::new(Int32Array::from_iter_values(std::iter::repeat_n(
            partition, n,
        ))),
        "offset" => Arc::new(Int64Array::from(offsets.to_vec())),
        "timestamp" => {
            Arc::new(TimestampMillisecondArray::from(timestamps.to_vec()).with_timezone("UTC"))
        }
        // `MAP<STRING, BYTES>`, as Flink declares it.
        "headers" => {
            use datafusion::arrow::array::{BinaryBuilder, MapBuilder, StringBuilder};
            let mut map = MapBuilder::new(None, StringBuilder::new(), BinaryBuilder::new());
            for record in headers {
                for (key, value) in record {
                    map.keys().append_value(String::from_utf8_lossy(key));
                    map.values().append_option(*value);
                }
                map.append(true).ok()?;
            }
            Arc::new(map.finish())
        }
        _ => return None,
    })
}

/// One poll's records, copied out of librdkafka into shared buffers (one allocation per
/// poll, not a message object with its own topic, key and payload per record).
#[derive(Debug, Default)]
pub struct PolledRecords {
    pub topics: Vec<std::sync::Arc<str>>,
    pub partitions: Vec<i32>,
    pub offsets: Vec<i64>,
    /// Each record's timestamp (ms since the epoch), if it has one.
    pub timestamps: Vec<Option<i64>>,
    /// Each record's key as a range of `bytes`, if it has one.
    keys: Vec<Option<std::ops::Range<usize>>>,
    /// Each record's payload as a range of `bytes`; `None` for a tombstone.
    payloads: Vec<Option<std::ops::Range<usize>>>,
    /// Each record's headers: key and value (`None`: a null value) as ranges of `bytes`.
    headers: Vec<Vec<HeaderRange>>,
    bytes: Vec<u8>,
}

/// One record as read from a consumer, borrowed until [`PolledRecords::push_parts`]
/// copies it.
pub struct RecordParts<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch, if the record has a timestamp.
    pub timestamp: Option<i64>,
    pub key: Option<&'a [u8]>,
    /// `None`: a tombstone.
    pub payload: Option<&'a [u8]>,
}

/// A header's key and value (`None`: null) as ranges of a poll's bytes.
type HeaderRange = (std::ops::Range<usize>, Option<std::ops::Range<usize>>);

impl PolledRecords {
    /// Copies `message` in.
    pub fn push(&mut self, message: &impl Message) {
        use rdkafka::message::Headers;
        let headers = message.headers();
        let headers = headers
            .iter()
            .flat_map(|all| all.iter())
            .map(|header| (header.key.as_bytes(), header.value));
        self.push_parts(
            RecordParts {
                topic: message.topic(),
                partition: message.partition(),
                offset: message.offset(),
                timestamp: message.timestamp().to_millis(),
                key: message.key(),
                payload: message.payload(),
            },
            headers,
        );
    }

    /// Copies a record in from its parts and its headers (key, value; `None`: null).
    pub fn push_parts<'h>(
        &mut self,
        record: RecordParts<'_>,
        headers: impl IntoIterator<Item = RecordHeader<'h>>,
    ) {
        match self.topics.last() {
            Some(topic) if topic.as_ref() == record.topic => self.topics.push(topic.clone()),
            _ => self.topics.push(record.topic.into()),
        }
        self.partitions.push(record.partition);
        self.offsets.push(record.offset);
        self.timestamps.push(record.timestamp);
        let key = record.key.map(|key| self.copy(key));
        self.keys.push(key);
        let payload = record.payload.map(|payload| self.copy(payload));
        self.payloads.push(payload);
        let headers = headers
            .into_iter()
            .map(|(key, value)| (self.copy(key), value.map(|value| self.copy(value))))
            .collect();
        self.headers.push(headers);
    }

    /// Appends `bytes` to the poll's buffer; their range in it.
    fn copy(&mut self, bytes: &[u8]) -> std::ops::Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        start..self.bytes.len()
    }

    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// A record's key, if it has one.
    pub fn key(&self, record: usize) -> Option<&[u8]> {
        self.keys[record].clone().map(|range| &self.bytes[range])
    }

    /// A record's headers: each key and value (`None`: null).
    pub fn headers(&self, record: usize) -> Vec<RecordHeader<'_>> {
        self.headers[record]
            .iter()
            .map(|(key, value)| {
                (
                    &self.bytes[key.clone()],
                    value.clone().map(|v| &self.bytes[v]),
                )
            })
            .collect()
    }

    /// A record's payload; `None` for a tombstone.
    pub fn payload(&self, record: usize) -> Option<&[u8]> {
        self.payloads[record]
            .clone()
            .map(|range| &self.bytes[range])
    }
}

/// A record to produce: its key, and its value (`None`: a tombstone).
pub type Record = (Option<Vec<u8>>, Option<Vec<u8>>);

/// A `METADATA` column a sink writes, at its index in the written batches.
#[derive(Debug, Clone, Copy)]
enum WrittenMetadata {
    /// `timestamp` (`TIMESTAMP_LTZ(3)`): the record's timestamp.
    Timestamp(usize),
    /// `headers` (`MAP<STRING, BYTES>`): the record's headers.
    Headers(usize),
}

/// What a row's metadata columns set on its record.
#[derive(Default)]
pub struct RecordExtras {
    pub timestamp: Option<i64>,
    pub headers: Option<OwnedHeaders>,
}

/// Each row's timestamp and headers from `batch`'s columns `metadata`.
fn record_extras(
    batch: &RecordBatch,
    metadata: &[WrittenMetadata],
) -> std::result::Result<Vec<RecordExtras>, datafusion::arrow::error::ArrowError> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
    if metadata.is_empty() {
        return Ok(Vec::new());
    }
    let mut extras: Vec<RecordExtras> = (0..batch.num_rows())
        .map(|_| RecordExtras::default())
        .collect();
    for column in metadata {
        match *column {
            WrittenMetadata::Timestamp(i) => {
                let DataType::Timestamp(_, zone) = batch.column(i).data_type() else {
                    return Err(datafusion::arrow::error::ArrowError::CastError(format!(
                        "metadata 'timestamp' must be a TIMESTAMP_LTZ(3) column, not {}",
                        batch.column(i).data_type()
                    )));
                };
                let millis = cast(
                    batch.column(i),
                    &DataType::Timestamp(TimeUnit::Millisecond, zone.clone()),
                )?;
                let millis = millis.as_primitive::<TimestampMillisecondType>();
                for (row, extra) in extras.iter_mut().enumerate() {
                    extra.timestamp = millis.is_valid(row).then(|| millis.value(row));
                }
            }
            WrittenMetadata::Headers(i) => {
                let DataType::Map(..) = batch.column(i).data_type() else {
                    return Err(datafusion::arrow::error::ArrowError::CastError(format!(
                        "metadata 'headers' must be a MAP<STRING, BYTES> column, not {}",
                        batch.column(i).data_type()
                    )));
                };
                let map = batch.column(i).as_map();
                for (row, extra) in extras.iter_mut().enumerate() {
                    if map.is_null(row) {
                        continue;
                    }
                    let entries = map.value(row);
                    let keys = cast(entries.column(0), &DataType::Utf8)?;
                    let keys = keys.as_string::<i32>();
                    let values = cast(entries.column(1), &DataType::Binary)?;
                    let values = values.as_binary::<i32>();
                    let mut headers = OwnedHeaders::new_with_capacity(keys.len());
                    for j in 0..keys.len() {
                        headers = headers.insert(Header {
                            key: keys.value(j),
                            value: values.is_valid(j).then(|| values.value(j)),
                        });
                    }
                    extra.headers = Some(headers);
                }
            }
        }
    }
    Ok(extras)
}

/// How a sink's rows become records: the value in the table's format (writable metadata
/// columns set the record's timestamp and headers instead), the key from `'key.fields'`,
/// or, for `upsert-kafka`, the primary key with deletes as tombstones.
pub struct KafkaRecordEncoder {
    table: String,
    value: Format,
    /// Key columns (indexes into the written batches) and their encoder.
    key: Option<(Vec<usize>, Format)>,
    /// `upsert-kafka`: rows keyed by the primary key, deletes as tombstones.
    upsert: Option<super::upsert::UpsertKey>,
    /// Writable metadata columns (indexes into the written batches), and the others'
    /// indexes: the columns the value is made of (a changelog's change column follows).
    metadata: Vec<WrittenMetadata>,
    data_columns: Vec<usize>,
}

impl KafkaRecordEncoder {
    /// The encoder of batches of `schema` written into `table`.
    pub fn new(table: &TableDef, schema: &SchemaRef) -> Result<Self> {
        let options = super::options(table)?;
        let written = table.written_schema();
        let mut metadata = Vec::new();
        let mut data_columns = Vec::new();
        for (i, field) in written.fields().iter().enumerate() {
            match table.metadata.iter().find(|m| &m.column == field.name()) {
                None => data_columns.push(i),
                Some(m) if m.key == "timestamp" => metadata.push(WrittenMetadata::Timestamp(i)),
                Some(m) if m.key == "headers" => metadata.push(WrittenMetadata::Headers(i)),
                Some(m) => {
                    return Err(ConnectorError::Other(format!(
                        "table {}: column {} reads metadata '{}', which a sink cannot write: \
                         declare it VIRTUAL (read-only)",
                        table.name, m.column, m.key
                    )))
                }
            }
        }
        let upsert = (table.connector() == Some("upsert-kafka"))
            .then(|| super::upsert::UpsertKey::of(table))
            .transpose()?;
        if !metadata.is_empty() && upsert.is_some() {
            return Err(ConnectorError::Other(format!(
                "table {}: an upsert-kafka sink writes no metadata columns yet; declare them \
                 VIRTUAL",
                table.name
            )));
        }
        let data_schema = Arc::new(
            written
                .project(&data_columns)
                .map_err(|e| ConnectorError::Other(e.to_string()))?,
        );
        let value = Format::for_writing(&options, data_schema)?;
        let key = match options.get("key.fields").filter(|_| upsert.is_none()) {
            None => None,
            Some(fields) => {
                let mut indexes = Vec::new();
                for name in fields.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                    let index = schema.index_of(name).map_err(|_| {
                        options.invalid("key.fields", fields, format!("no column named '{name}'"))
                    })?;
                    indexes.push(index);
                }
                let key_schema = Arc::new(
                    schema
                        .project(&indexes)
                        .map_err(|e| ConnectorError::Other(e.to_string()))?,
                );
                Some((
                    indexes,
                    Format::Json(JsonFormat::new(key_schema, crate::format::BadRecords::Fail)),
                ))
            }
        };
        Ok(Self {
            table: table.name.clone(),
            value,
            key,
            upsert,
            metadata,
            data_columns,
        })
    }

    /// Whether the table is `upsert-kafka` (every record keyed, deletes as tombstones).
    pub fn is_upsert(&self) -> bool {
        self.upsert.is_some()
    }

    fn encode_error(&self, source: datafusion::arrow::error::ArrowError) -> ConnectorError {
        ConnectorError::Encode {
            table: self.table.clone(),
            source,
        }
    }

    /// The records of `batch`, one per row to write, each with its timestamp and headers
    /// when the table writes those (`extras` is empty otherwise).
    pub fn encode(&self, batch: &RecordBatch) -> Result<(Vec<Record>, Vec<RecordExtras>)> {
        if let Some(key) = &self.upsert {
            let records = super::upsert::records(key, &self.value, batch)
                .map_err(|e| self.encode_error(e))?;
            let records = records.into_iter().map(|(k, v)| (Some(k), v)).collect();
            return Ok((records, Vec::new()));
        }
        let extras = record_extras(batch, &self.metadata).map_err(|e| self.encode_error(e))?;
        let values = if self.metadata.is_empty() {
            self.value.encode(batch)
        } else {
            // The value: the data columns (and a changelog's change column, last).
            let columns: Vec<usize> = self
                .data_columns
                .iter()
                .copied()
                .chain(self.data_columns.len() + self.metadata.len()..batch.num_columns())
                .collect();
            batch
                .project(&columns)
                .and_then(|data| self.value.encode(&data))
        }
        .map_err(|e| self.encode_error(e))?;
        let keys = match &self.key {
            Some((indexes, format)) => {
                let key_batch = batch.project(indexes).map_err(|e| self.encode_error(e))?;
                Some(
                    format
                        .encode(&key_batch)
                        .map_err(|e| self.encode_error(e))?,
                )
            }
            None => None,
        };
        let records = match keys {
            Some(keys) => keys
                .into_iter()
                .map(Some)
                .zip(values.into_iter().map(Some))
                .collect(),
            None => values.into_iter().map(|v| (None, Some(v))).collect(),
        };
        Ok((records, extras))
    }
}
