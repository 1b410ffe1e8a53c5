//! JSON: one object per record, decoded with arrow-json straight into Arrow columns.
//! TIMESTAMP columns accept ISO-8601 strings, `yyyy-MM-dd HH:mm:ss[.SSS]` and epoch milliseconds.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::writer::{LineDelimited, WriterBuilder};
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::record_batch::RecordBatch;

/// `'format' = 'json'`.
#[derive(Debug, Clone)]
pub struct JsonFormat {
    pub schema: SchemaRef,
    /// `'json.ignore-parse-errors'`: skip (and count) records that do not decode.
    pub bad_records: super::BadRecords,
}

impl JsonFormat {
    /// Decodes every record, or fails if any record is not exactly one valid object.
    pub(crate) fn decode_all(&self, records: &[&[u8]]) -> Result<RecordBatch, String> {
        let mut decoder = ReaderBuilder::new(self.schema.clone())
            .with_batch_size(records.len().max(1))
            .build_decoder()
            .map_err(|e| e.to_string())?;
        for (i, record) in records.iter().enumerate() {
            decoder.decode(record).map_err(|e| e.to_string())?;
            if decoder.has_partial_record() {
                return Err("incomplete JSON value".into());
            }
            if decoder.len() != i + 1 {
                return Err(if decoder.len() <= i {
                    "empty record".into()
                } else {
                    "more than one JSON value in one record".into()
                });
            }
        }
        match decoder.flush().map_err(|e| e.to_string())? {
            Some(batch) => Ok(batch),
            None => Ok(RecordBatch::new_empty(self.schema.clone())),
        }
    }
}

/// One JSON object per row, nulls written explicitly.
pub(super) fn encode_rows(batch: &RecordBatch) -> Result<Vec<Vec<u8>>, ArrowError> {
    let mut buffer = Vec::with_capacity(batch.num_rows() * 64);
    {
        let mut writer = WriterBuilder::new()
            .with_explicit_nulls(true)
            .with_timestamp_format(super::TIMESTAMP_FORMAT.to_string())
            .with_timestamp_tz_format(super::TIMESTAMP_TZ_FORMAT.to_string())
            .build::<_, LineDelimited>(&mut buffer);
        writer.write(batch)?;
        writer.finish()?;
    }
    Ok(super::split_lines(buffer))
}

/// Each row in Debezium's envelope: `+I`/`+U` rows as `{"before":null,"after":row,"op":"c"}`,
/// `-U`/`-D` rows as `{"before":row,"after":null,"op":"d"}`. An append-only batch is all
/// `c`.
pub(super) fn encode_changes(batch: &RecordBatch) -> Result<Vec<Vec<u8>>, ArrowError> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int8Type;
    use runnel_sql::changelog::{is_changelog, ChangeKind};
    let (rows, kinds) = if is_changelog(batch.schema_ref()) {
        let last = batch.num_columns() - 1;
        let kinds = batch.column(last).as_primitive::<Int8Type>().clone();
        let mut rows = batch.clone();
        rows.remove_column(last);
        (rows, Some(kinds))
    } else {
        (batch.clone(), None)
    };
    let encoded = encode_rows(&rows)?;
    Ok(encoded
        .into_iter()
        .enumerate()
        .map(|(i, row)| {
            let added = kinds.as_ref().is_none_or(|k| {
                ChangeKind::from_code(k.value(i)).is_none_or(ChangeKind::is_addition)
            });
            let mut record = Vec::with_capacity(row.len() + 40);
            if added {
                record.extend_from_slice(b"{\"before\":null,\"after\":");
                record.extend_from_slice(&row);
                record.extend_from_slice(b",\"op\":\"c\"}");
            } else {
                record.extend_from_slice(b"{\"before\":");
                record.extend_from_slice(&row);
                record.extend_from_slice(b",\"after\":null,\"op\":\"d\"}");
            }
            record
        })
        .collect())
}
