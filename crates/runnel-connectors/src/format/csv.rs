//! CSV: one line per record, no header, columns in the table's order.

use datafusion::arrow::csv::{ReaderBuilder, WriterBuilder};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

/// `'format' = 'csv'`.
#[derive(Debug, Clone)]
pub struct CsvFormat {
    pub schema: SchemaRef,
    pub delimiter: u8,
    /// `'csv.ignore-parse-errors'`: skip (and count) lines that do not decode.
    pub bad_records: super::BadRecords,
}

impl CsvFormat {
    pub(super) fn decode_all(&self, records: &[&[u8]]) -> Result<RecordBatch, String> {
        let mut decoder = ReaderBuilder::new(self.schema.clone())
            .with_delimiter(self.delimiter)
            .with_batch_size(records.len().max(1))
            .build_decoder();
        let mut text = Vec::with_capacity(records.iter().map(|r| r.len() + 1).sum());
        for record in records {
            // arrow-csv checks UTF-8 over the fields' bytes joined without their
            // delimiters, so a character cut by a delimiter (`\xcf,\x9b`) passes and a field
            // then ends inside it (undefined behaviour: found by tests/fuzz.rs). In a
            // record that is UTF-8 a delimiter cannot cut a character.
            if std::str::from_utf8(record).is_err() {
                return Err("the record is not UTF-8".into());
            }
            text.extend_from_slice(record);
            text.push(b'\n');
        }
        let mut rest = text.as_slice();
        while !rest.is_empty() {
            let used = decoder.decode(rest).map_err(|e| e.to_string())?;
            if used == 0 {
                break;
            }
            rest = &rest[used..];
        }
        let batch = decoder
            .flush()
            .map_err(|e| e.to_string())?
            .unwrap_or_else(|| RecordBatch::new_empty(self.schema.clone()));
        if batch.num_rows() != records.len() {
            return Err(format!(
                "expected {} rows, decoded {}",
                records.len(),
                batch.num_rows()
            ));
        }
        Ok(batch)
    }

    pub(super) fn encode_rows(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>, ArrowError> {
        let mut buffer = Vec::with_capacity(batch.num_rows() * 64);
        {
            let mut writer = WriterBuilder::new()
                .with_header(false)
                .with_delimiter(self.delimiter)
                .with_timestamp_format(super::TIMESTAMP_FORMAT.to_string())
                .with_timestamp_tz_format(super::TIMESTAMP_TZ_FORMAT.to_string())
                .build(&mut buffer);
            writer.write(batch)?;
        }
        Ok(super::split_lines(buffer))
    }
}
