//! Record formats: decoding records (Kafka messages, file lines) into Arrow batches and
//! encoding batches into records.
//!
//! Decoding is vectorized: a whole poll's worth of records goes through arrow's decoder at
//! once. Only when that fails are records decoded one by one, to name the bad one (or to
//! skip and count it when the table ignores parse errors).

mod csv;
pub mod debezium;
mod json;

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::{ConnectorError, Result};
use crate::options::TableOptions;

pub use self::csv::CsvFormat;
pub use self::debezium::DebeziumJsonFormat;
pub use self::json::JsonFormat;

/// A record format of a table (`'format' = 'json' | 'csv' | 'debezium-json'`).
#[derive(Debug, Clone)]
pub enum Format {
    Json(JsonFormat),
    Csv(CsvFormat),
    /// Debezium's change envelope: read as an updating stream (see [`debezium`]); written
    /// as Flink writes it (an update is a `d` of the old row and a `c` of the new).
    DebeziumJson(DebeziumJsonFormat),
}

/// Decoded rows, and for each the record it came from when that is not its own index.
type RowsOfRecords = (RecordBatch, Option<Vec<u32>>);

/// Where each column of a table's decoded rows comes from.
#[derive(Debug, Clone, PartialEq)]
enum Slot {
    /// Column `n` of what the format decodes from the record's fields.
    Payload(usize),
    /// Metadata the format knows (column `n` of what it decodes after the payload).
    FormatMetadata(usize),
    /// Metadata the connector fills (null until it does).
    ConnectorMetadata(String),
}

/// How a table's rows are put together: the table's physical columns in order (then the
/// change column for a changelog), each from the payload, the format or the connector.
#[derive(Debug, Clone)]
struct RowLayout {
    schema: SchemaRef,
    slots: Vec<Slot>,
}

/// The formats that can write an updating stream.
pub const CHANGELOG_FORMATS: &[&str] = &["debezium-json"];

/// How TIMESTAMP values are written (Flink's SQL format, which every reader here accepts back).
pub const TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.3f";
/// How TIMESTAMP_LTZ values are written: ISO-8601 in UTC.
pub const TIMESTAMP_TZ_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3fZ";

/// Option names each format adds to its connector's.
pub const FORMAT_OPTIONS: &[&str] = &[
    "format",
    "json.ignore-parse-errors",
    "json.dead-letter.table",
    "csv.ignore-parse-errors",
    "csv.dead-letter.table",
    "csv.field-delimiter",
    "debezium-json.schema-include",
    "debezium-json.ignore-parse-errors",
    "debezium-json.dead-letter.table",
];

/// Records that could not be decoded: each one's index, and why.
type Rejected = Vec<(usize, String)>;

/// What decoding does with a record it cannot read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BadRecords {
    /// The read fails, naming the record and why (the default).
    #[default]
    Fail,
    /// It is skipped and counted (`'<format>.ignore-parse-errors' = 'true'`).
    Skip,
    /// It is skipped, counted and returned in [`Decoded::rejected`], for the table's
    /// dead-letter table (`'<format>.dead-letter.table'`).
    DeadLetter,
}

impl BadRecords {
    /// The choice a table's options make for format `format`.
    fn of(options: &TableOptions, format: &str) -> Result<Self> {
        let ignore_key = format!("{format}.ignore-parse-errors");
        let dead_letter_key = format!("{format}.dead-letter.table");
        let ignore = options.parse_or(&ignore_key, false)?;
        match options.get(&dead_letter_key) {
            Some(table) if ignore => Err(options.invalid(
                &dead_letter_key,
                table,
                format!("'{ignore_key}' drops bad records, this option keeps them: set one"),
            )),
            Some(_) => Ok(Self::DeadLetter),
            None if ignore => Ok(Self::Skip),
            None => Ok(Self::Fail),
        }
    }
}

/// The dead-letter table a table's options name (`'<format>.dead-letter.table'`), if any.
pub fn dead_letter_table(table: &runnel_sql::TableDef) -> Option<&str> {
    let format = table
        .options
        .get("value.format")
        .or_else(|| table.options.get("format"))
        .map_or("json", String::as_str);
    table
        .options
        .get(&format!("{format}.dead-letter.table"))
        .map(String::as_str)
}

/// Fails when `schema` is an updating stream that the table's format cannot express.
pub(crate) fn check_writable(table: &runnel_sql::TableDef, schema: &SchemaRef) -> Result<()> {
    let format = table.options.get("format").map_or("json", String::as_str);
    if runnel_sql::changelog::is_changelog(schema) && !CHANGELOG_FORMATS.contains(&format) {
        return Err(ConnectorError::Other(format!(
            "the query produces an updating stream (an aggregate or Top-N without a \
             window revises rows it wrote), which 'format' = '{format}' cannot express: \
             use 'format' = 'debezium-json', or window the aggregate"
        )));
    }
    Ok(())
}

/// Decoded rows and how many records were skipped as undecodable.
#[derive(Debug)]
pub struct Decoded {
    /// The table's physical columns (then the change column, for a changelog); metadata the
    /// connector provides is NULL until it fills it in ([`Decoded::fill_metadata`]).
    pub batch: RecordBatch,
    pub skipped: usize,
    /// For each row, the index of the record it came from, when that is not simply the
    /// row's own index (records skipped, or one change record giving two rows).
    pub records: Option<Vec<u32>>,
    /// The records skipped for a dead-letter table ([`BadRecords::DeadLetter`]): each
    /// one's index in the records decoded, and why it could not be decoded.
    pub rejected: Vec<(usize, String)>,
}

impl Decoded {
    /// The records [`Decoded::rejected`] names, as dead letters of `table` (a batch in
    /// [`runnel_runtime::dead_letter::dead_letter_schema`]); `records` are the records
    /// decoded, `place(i)` says where record `i` was (topic, partition, offset).
    pub fn dead_letters<'a>(
        &self,
        table: &str,
        records: &[&'a [u8]],
        place: impl Fn(usize) -> (Option<&'a str>, Option<i32>, Option<i64>),
    ) -> Result<Option<RecordBatch>> {
        let letters: Vec<_> = self
            .rejected
            .iter()
            .map(|(i, reason)| {
                let (topic, partition, offset) = place(*i);
                runnel_runtime::dead_letter::DeadLetter {
                    topic,
                    partition,
                    offset,
                    reason: reason.clone(),
                    record: records.get(*i).copied().unwrap_or_default(),
                }
            })
            .collect();
        runnel_runtime::dead_letter::dead_letter_batch(table, &letters)
            .map_err(|e| ConnectorError::Other(e.to_string()))
    }

    /// Fills the metadata columns the connector provides: `value(key)` gives one value per
    /// record (of the slice passed to [`Format::decode`]), or `None` for a key it does
    /// not know (the column stays NULL).
    pub fn fill_metadata(
        &mut self,
        table: &runnel_sql::TableDef,
        value: impl Fn(&str) -> Option<datafusion::arrow::array::ArrayRef>,
    ) -> Result<()> {
        if table.metadata.is_empty() {
            return Ok(());
        }
        let mut columns = self.batch.columns().to_vec();
        for meta in &table.metadata {
            let Ok(index) = self.batch.schema().index_of(&meta.column) else {
                continue;
            };
            let Some(per_record) = value(&meta.key) else {
                continue;
            };
            let per_row = match &self.records {
                Some(records) => datafusion::arrow::compute::take(
                    &per_record,
                    &datafusion::arrow::array::UInt32Array::from(records.clone()),
                    None,
                ),
                None => Ok(per_record),
            }
            .and_then(|array| {
                datafusion::arrow::compute::cast(
                    &array,
                    self.batch.schema().field(index).data_type(),
                )
            })
            .map_err(|e| ConnectorError::Other(format!("metadata {}: {e}", meta.key)))?;
            columns[index] = per_row;
        }
        self.batch = RecordBatch::try_new(self.batch.schema(), columns)
            .map_err(|e| ConnectorError::Other(e.to_string()))?;
        Ok(())
    }
}

impl Format {
    /// The format a table's options select, for writing rows of `schema`.
    pub fn for_writing(options: &TableOptions, schema: SchemaRef) -> Result<Self> {
        Self::new(options, schema, Vec::new(), false)
    }

    /// The format a table's options select, for reading its records into its physical
    /// columns (metadata the format knows included).
    pub fn for_reading(options: &TableOptions, table: &runnel_sql::TableDef) -> Result<Self> {
        let metadata = table
            .metadata
            .iter()
            .filter(|m| debezium::METADATA_KEYS.contains(&m.key.as_str()))
            .map(|m| {
                let field = table.physical_schema.field_with_name(&m.column);
                (m.key.clone(), field.map(|f| f.data_type().clone()))
            })
            .map(|(key, data_type)| {
                data_type
                    .map(|t| (key, t))
                    .map_err(|e| ConnectorError::Other(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let format = match Self::new(
            options,
            table.payload_schema(),
            metadata,
            !table.primary_key.is_empty(),
        )? {
            Format::Json(json) => Format::Json(json.reading(&table.read_fields)),
            other => other,
        };
        if !matches!(format, Format::DebeziumJson(_)) {
            if let Some(meta) = table.metadata.iter().find(|m| m.key.starts_with("value.")) {
                return Err(ConnectorError::Other(format!(
                    "table {}: metadata '{}' is Debezium's; this table's format is not debezium-json",
                    table.name, meta.key
                )));
            }
        }
        Ok(format)
    }

    fn new(
        options: &TableOptions,
        schema: SchemaRef,
        metadata: Vec<(String, datafusion::arrow::datatypes::DataType)>,
        keyed: bool,
    ) -> Result<Self> {
        let format_option = if options.get("value.format").is_some() {
            "value.format"
        } else {
            "format"
        };
        match options.choice(format_option, &["json", "csv", "debezium-json"], "json")? {
            "debezium-json" => Ok(Format::DebeziumJson(DebeziumJsonFormat {
                payload: schema,
                metadata,
                schema_include: options.parse_or("debezium-json.schema-include", false)?,
                bad_records: BadRecords::of(options, "debezium-json")?,
                keyed,
            })),
            "csv" => {
                let delimiter = options.get("csv.field-delimiter").unwrap_or(",");
                let [delimiter] = delimiter.as_bytes() else {
                    return Err(options.invalid(
                        "csv.field-delimiter",
                        delimiter,
                        "must be one character",
                    ));
                };
                Ok(Format::Csv(CsvFormat {
                    schema,
                    delimiter: *delimiter,
                    bad_records: BadRecords::of(options, "csv")?,
                }))
            }
            _ => Ok(Format::Json(JsonFormat::new(
                schema,
                BadRecords::of(options, "json")?,
            ))),
        }
    }

    fn bad_records(&self) -> BadRecords {
        match self {
            Format::Json(f) => f.bad_records,
            Format::DebeziumJson(f) => f.bad_records,
            Format::Csv(f) => f.bad_records,
        }
    }

    /// What the format decodes from records: the payload columns (then, for Debezium, the
    /// metadata it knows and the change column), with each row's record.
    ///
    /// Arrow's number parsers can overflow on hostile input (a decimal with a five-digit
    /// exponent, `1e99999`, overflows an `i16`); Cargo.toml keeps overflow checks on for
    /// `arrow-cast`, so that panics instead of giving a wrong value, and the panic is this
    /// batch's error here (the record-by-record pass then names or skips the record).
    fn decode_all(&self, records: &[&[u8]]) -> std::result::Result<RowsOfRecords, (usize, String)> {
        let decode = || match self {
            Format::Json(f) => f.decode_all(records).map(|b| (b, None)).map_err(|e| (0, e)),
            Format::Csv(f) => f.decode_all(records).map(|b| (b, None)).map_err(|e| (0, e)),
            Format::DebeziumJson(f) => f.decode_all(records).map(|d| (d.batch, Some(d.events))),
        };
        // Each call builds its own decoders, so nothing half-updated outlives a panic.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)).unwrap_or_else(|_| {
            Err((
                0,
                "a value the decoder cannot hold (a number out of range)".to_string(),
            ))
        })
    }

    /// The schema of [`Format::decode_all`]'s batches.
    fn decoded_schema(&self) -> SchemaRef {
        match self {
            Format::Json(f) => f.schema.clone(),
            Format::Csv(f) => f.schema.clone(),
            Format::DebeziumJson(f) => f.output_schema(),
        }
    }

    /// Decodes `records` into the rows of `table` (its physical columns, then the change
    /// column for a changelog; see [`Decoded`]). A record that does not decode fails the
    /// call, naming it with `place(index)`, unless the table says otherwise
    /// ([`BadRecords`]): then it is skipped and counted in [`Decoded::skipped`] (and kept
    /// in [`Decoded::rejected`] for a dead-letter table).
    pub fn decode(
        &self,
        table: &runnel_sql::TableDef,
        records: &[&[u8]],
        place: impl Fn(usize) -> String,
    ) -> Result<Decoded> {
        let (batch, rows_of, rejected) = match self.decode_all(records) {
            Ok((batch, rows_of)) => (batch, rows_of, Vec::new()),
            Err(_) => self.decode_each(records, &place)?,
        };
        let batch = self.layout(table).arrange(batch)?;
        Ok(Decoded {
            batch,
            skipped: rejected.len(),
            records: rows_of,
            rejected: match self.bad_records() {
                BadRecords::DeadLetter => rejected,
                _ => Vec::new(),
            },
        })
    }

    /// The slow path: records decoded one by one, to name the bad one or skip it.
    fn decode_each(
        &self,
        records: &[&[u8]],
        place: &impl Fn(usize) -> String,
    ) -> Result<(RecordBatch, Option<Vec<u32>>, Rejected)> {
        let mut good = Vec::with_capacity(records.len());
        let mut rows_of: Vec<u32> = Vec::with_capacity(records.len());
        let mut rejected = Vec::new();
        for (i, record) in records.iter().enumerate() {
            match self.decode_all(std::slice::from_ref(record)) {
                Ok((batch, _)) => {
                    rows_of.extend(std::iter::repeat_n(i as u32, batch.num_rows()));
                    good.push(batch);
                }
                Err((_, reason)) if self.bad_records() != BadRecords::Fail => {
                    rejected.push((i, reason))
                }
                Err((_, reason)) => {
                    return Err(ConnectorError::Decode {
                        place: place(i),
                        reason: format!("{reason} (record: {})", preview(record)),
                    })
                }
            }
        }
        let batch = concat_batches(&self.decoded_schema(), &good)
            .map_err(|e| ConnectorError::Other(e.to_string()))?;
        Ok((batch, Some(rows_of), rejected))
    }

    /// Where each of `table`'s columns comes from.
    fn layout(&self, table: &runnel_sql::TableDef) -> RowLayout {
        let decoded = self.decoded_schema();
        let format_metadata: Vec<String> = match self {
            Format::DebeziumJson(f) => f.metadata.iter().map(|(k, _)| k.clone()).collect(),
            _ => Vec::new(),
        };
        let payload = table.payload_schema();
        let slots = table
            .physical_schema
            .fields()
            .iter()
            .map(|field| match table.metadata_of(field.name()) {
                Some(meta) => match format_metadata.iter().position(|k| *k == meta.key) {
                    Some(n) => Slot::FormatMetadata(payload.fields().len() + n),
                    None => Slot::ConnectorMetadata(meta.key.clone()),
                },
                None => Slot::Payload(payload.index_of(field.name()).unwrap_or(0)),
            })
            .collect();
        let schema = if runnel_sql::changelog::is_changelog(&decoded) {
            runnel_sql::changelog::with_change_column(&table.physical_schema)
        } else {
            table.physical_schema.clone()
        };
        RowLayout { schema, slots }
    }

    /// Whether the format can write an updating stream's `-U`/`-D` rows.
    pub fn writes_changes(&self) -> bool {
        matches!(self, Format::DebeziumJson(_))
    }

    /// Encodes each row of `batch` as one record.
    pub fn encode(
        &self,
        batch: &RecordBatch,
    ) -> std::result::Result<Vec<Vec<u8>>, datafusion::arrow::error::ArrowError> {
        match self {
            Format::Json(_) => json::encode_rows(batch),
            Format::Csv(f) => f.encode_rows(batch),
            Format::DebeziumJson(_) => json::encode_changes(batch),
        }
    }
}

impl RowLayout {
    /// The table's row batch from what the format decoded.
    fn arrange(&self, decoded: RecordBatch) -> Result<RecordBatch> {
        let identity = self
            .slots
            .iter()
            .enumerate()
            .all(|(i, slot)| *slot == Slot::Payload(i))
            && decoded.num_columns() == self.schema.fields().len();
        if identity {
            return Ok(decoded);
        }
        let rows = decoded.num_rows();
        let mut columns: Vec<datafusion::arrow::array::ArrayRef> = self
            .slots
            .iter()
            .zip(self.schema.fields())
            .map(|(slot, field)| match slot {
                Slot::Payload(n) | Slot::FormatMetadata(n) => decoded.column(*n).clone(),
                Slot::ConnectorMetadata(_) => {
                    datafusion::arrow::array::new_null_array(field.data_type(), rows)
                }
            })
            .collect();
        if runnel_sql::changelog::is_changelog(&self.schema) {
            columns.push(decoded.column(decoded.num_columns() - 1).clone());
        }
        let options =
            datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)
            .map_err(|e| ConnectorError::Other(e.to_string()))
    }
}

/// Parses `yyyy-MM-dd HH:mm:ss[.SSS]` (as UTC), the same with `T`, or epoch milliseconds.
pub(crate) fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(millis) = text.parse::<i64>() {
        return Some(millis);
    }
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|format| chrono::NaiveDateTime::parse_from_str(text, format).ok())
        .map(|t| t.and_utc().timestamp_millis())
}

/// The start of a record, for error messages.
fn preview(record: &[u8]) -> String {
    let text = String::from_utf8_lossy(record);
    let mut preview: String = text.chars().take(120).collect();
    if text.chars().count() > 120 {
        preview.push('…');
    }
    preview
}

/// Splits encoded newline-delimited output into one record per row.
pub(crate) fn split_lines(buffer: Vec<u8>) -> Vec<Vec<u8>> {
    buffer
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema as ArrowSchema, TimeUnit};
    use std::sync::Arc;

    fn fields() -> Vec<Field> {
        vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("amount", DataType::Decimal128(12, 2), true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]
    }

    fn json() -> Format {
        Format::Json(JsonFormat::new(
            Arc::new(ArrowSchema::new(fields())),
            BadRecords::Fail,
        ))
    }

    /// [`json`] skipping the records it cannot decode.
    fn lenient_json() -> Format {
        let Format::Json(mut lenient) = json() else {
            unreachable!()
        };
        lenient.bad_records = BadRecords::Skip;
        Format::Json(lenient)
    }

    fn table() -> runnel_sql::TableDef {
        crate::test_table("t", fields(), &[])
    }

    #[test]
    fn decodes_every_timestamp_form() {
        let records: Vec<&[u8]> = vec![
            br#"{"id": "a", "amount": 1.5, "ts": "2024-01-01T00:05:00Z"}"#,
            br#"{"id": "b", "amount": "2.25", "ts": "2024-01-01 00:05:00.250"}"#,
            br#"{"id": "c", "ts": 1704067500000}"#,
        ];
        let decoded = json()
            .decode(&table(), &records, |i| format!("#{i}"))
            .unwrap();
        assert_eq!(decoded.batch.num_rows(), 3);
        let ts = decoded
            .batch
            .column(2)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::TimestampMillisecondArray>()
            .unwrap();
        assert_eq!(ts.value(0), 1_704_067_500_000);
        assert_eq!(ts.value(1), 1_704_067_500_250);
        assert_eq!(ts.value(2), 1_704_067_500_000);
    }

    #[test]
    fn names_the_bad_record_or_skips_and_counts_it() {
        let records: Vec<&[u8]> = vec![
            br#"{"id": "a"}"#,
            b"{not json",
            br#"{"amount": 3}"#,
            br#"{"id": "d"}"#,
        ];
        let err = json()
            .decode(&table(), &records, |i| format!("offset {i}"))
            .unwrap_err();
        assert!(err.to_string().contains("offset 1"), "{err}");
        let decoded = lenient_json()
            .decode(&table(), &records, |i| format!("{i}"))
            .unwrap();
        assert_eq!(decoded.batch.num_rows(), 2);
        assert_eq!(
            decoded.skipped, 2,
            "malformed JSON and a missing NOT NULL column"
        );
    }
    /// Found by fuzzing (tests/fuzz.rs): a decimal with a five-digit exponent overflows
    /// arrow's parser (apache/arrow-rs#10787, as does a 256-digit number). The record is
    /// named as bad (or skipped), never a panic nor a wrong value, and the good records
    /// around it are kept.
    #[test]
    fn a_decimal_with_a_huge_exponent_is_a_bad_record() {
        let digits = format!(r#"{{"id": "d", "amount": {}}}"#, "1".repeat(256));
        let records: Vec<&[u8]> = vec![
            br#"{"id": "a", "amount": 1.5}"#,
            br#"{"id": "b", "amount": 1e99999}"#,
            br#"{"id": "c", "amount": 1e65538}"#,
            digits.as_bytes(),
        ];
        let err = json()
            .decode(&table(), &records, |i| format!("offset {i}"))
            .unwrap_err();
        assert!(err.to_string().contains("offset 1"), "{err}");
        assert!(err.to_string().contains("out of range"), "{err}");
        let decoded = lenient_json()
            .decode(&table(), &records, |i| format!("{i}"))
            .unwrap();
        assert_eq!((decoded.batch.num_rows(), decoded.skipped), (1, 3));
    }
    /// Found by fuzzing: a character cut in two by a delimiter reached arrow-csv's
    /// unchecked slicing and aborted the process. It is a bad record.
    #[test]
    fn a_csv_record_that_is_not_utf8_is_a_bad_record() {
        let csv = Format::Csv(CsvFormat {
            schema: Arc::new(ArrowSchema::new(fields())),
            delimiter: b',',
            bad_records: BadRecords::Fail,
        });
        let records: Vec<&[u8]> = vec![b"a,1.5,2024-01-01 00:05:00", b"b,2.5,2024-01-01\xcf,\x9b"];
        let err = csv
            .decode(&table(), &records, |i| format!("offset {i}"))
            .unwrap_err();
        assert!(err.to_string().contains("offset 1"), "{err}");
        assert!(err.to_string().contains("not UTF-8"), "{err}");
    }
}
