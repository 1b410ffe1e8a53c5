//! Record formats: decoding records (Kafka messages, file lines) into Arrow batches and
//! encoding batches into records.
//!
//! Decoding is vectorized: a whole poll's worth of records goes through arrow's decoder at
//! once. Only when that fails are records decoded one by one, to name the bad one (or to
//! skip and count it when the table ignores parse errors).

mod csv;
mod json;

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::{ConnectorError, Result};
use crate::options::TableOptions;

pub use self::csv::CsvFormat;
pub use self::json::JsonFormat;

/// A record format of a table (`'format' = 'json' | 'csv' | 'debezium-json'`).
#[derive(Debug, Clone)]
pub enum Format {
    Json(JsonFormat),
    Csv(CsvFormat),
    /// Debezium's change envelope, `{"before": ..., "after": ..., "op": "c" | "d"}` (as
    /// Flink writes it: an update is a `d` of the old row and a `c` of the new). Written
    /// only, so far.
    DebeziumJson(JsonFormat),
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
    "csv.ignore-parse-errors",
    "csv.field-delimiter",
];

/// Fails unless the table's format can be read (`debezium-json` is written only, so far).
pub(crate) fn check_readable(table: &runnel_sql::TableDef) -> Result<()> {
    if table.options.get("format").map(String::as_str) == Some("debezium-json") {
        return Err(ConnectorError::Other(
            "reading 'format' = 'debezium-json' is not supported yet (it is written only)".into(),
        ));
    }
    Ok(())
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
    pub batch: RecordBatch,
    pub skipped: usize,
}

impl Format {
    /// The format a table's options select, decoding into `schema`.
    pub fn from_options(options: &TableOptions, schema: SchemaRef) -> Result<Self> {
        match options.choice("format", &["json", "csv", "debezium-json"], "json")? {
            "debezium-json" => Ok(Format::DebeziumJson(JsonFormat {
                schema,
                ignore_parse_errors: false,
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
                    ignore_parse_errors: options.parse_or("csv.ignore-parse-errors", false)?,
                }))
            }
            _ => Ok(Format::Json(JsonFormat {
                schema,
                ignore_parse_errors: options.parse_or("json.ignore-parse-errors", false)?,
            })),
        }
    }

    fn schema(&self) -> &SchemaRef {
        match self {
            Format::Json(f) | Format::DebeziumJson(f) => &f.schema,
            Format::Csv(f) => &f.schema,
        }
    }

    fn ignore_parse_errors(&self) -> bool {
        match self {
            Format::Json(f) | Format::DebeziumJson(f) => f.ignore_parse_errors,
            Format::Csv(f) => f.ignore_parse_errors,
        }
    }

    fn decode_all(&self, records: &[&[u8]]) -> std::result::Result<RecordBatch, String> {
        match self {
            Format::Json(f) => f.decode_all(records),
            Format::Csv(f) => f.decode_all(records),
            Format::DebeziumJson(_) => Err("reading 'debezium-json' is not supported yet".into()),
        }
    }

    /// Decodes `records` into one batch. A record that does not decode fails the call,
    /// naming it with `place(index)`, unless the format ignores parse errors: then it is
    /// skipped and counted in [`Decoded::skipped`].
    pub fn decode(&self, records: &[&[u8]], place: impl Fn(usize) -> String) -> Result<Decoded> {
        if let Ok(batch) = self.decode_all(records) {
            return Ok(Decoded { batch, skipped: 0 });
        }
        // Slow path: find the bad records one by one.
        let mut good = Vec::with_capacity(records.len());
        let mut skipped = 0;
        for (i, record) in records.iter().enumerate() {
            match self.decode_all(std::slice::from_ref(record)) {
                Ok(batch) => good.push(batch),
                Err(_) if self.ignore_parse_errors() => skipped += 1,
                Err(reason) => {
                    return Err(ConnectorError::Decode {
                        place: place(i),
                        reason: format!("{reason} (record: {})", preview(record)),
                    })
                }
            }
        }
        let batch = concat_batches(self.schema(), &good)
            .map_err(|e| ConnectorError::Other(e.to_string()))?;
        Ok(Decoded { batch, skipped })
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

    fn json() -> Format {
        Format::Json(JsonFormat {
            schema: Arc::new(ArrowSchema::new(vec![
                Field::new("id", DataType::Utf8, false),
                Field::new("amount", DataType::Decimal128(12, 2), true),
                Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            ])),
            ignore_parse_errors: false,
        })
    }

    #[test]
    fn decodes_every_timestamp_form() {
        let records: Vec<&[u8]> = vec![
            br#"{"id": "a", "amount": 1.5, "ts": "2024-01-01T00:05:00Z"}"#,
            br#"{"id": "b", "amount": "2.25", "ts": "2024-01-01 00:05:00.250"}"#,
            br#"{"id": "c", "ts": 1704067500000}"#,
        ];
        let decoded = json().decode(&records, |i| format!("#{i}")).unwrap();
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
            .decode(&records, |i| format!("offset {i}"))
            .unwrap_err();
        assert!(err.to_string().contains("offset 1"), "{err}");
        let Format::Json(mut lenient) = json() else {
            unreachable!()
        };
        lenient.ignore_parse_errors = true;
        let decoded = Format::Json(lenient)
            .decode(&records, |i| format!("{i}"))
            .unwrap();
        assert_eq!(decoded.batch.num_rows(), 2);
        assert_eq!(
            decoded.skipped, 2,
            "malformed JSON and a missing NOT NULL column"
        );
    }
}
