//! JSON: one object per record, decoded straight into Arrow columns, in one pass where
//! the records and the schema allow ([`one_pass`]) and with arrow-json otherwise.
//! TIMESTAMP columns accept ISO-8601 strings, `yyyy-MM-dd HH:mm:ss[.SSS]` and epoch milliseconds.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{new_null_array, Array, ArrayRef, AsArray, StructArray};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::writer::{LineDelimited, WriterBuilder};
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use self::one_pass::OnePassDecoder;

mod one_pass;
mod text;

/// `'format' = 'json'`.
#[derive(Debug, Clone)]
pub struct JsonFormat {
    pub schema: SchemaRef,
    /// `'json.ignore-parse-errors'`: skip (and count) records that do not decode.
    pub bad_records: super::BadRecords,
    /// When the plan reads only some fields of struct columns: what is decoded, and how
    /// the batch of `schema` is made from it.
    pruned: Option<Arc<PrunedSchema>>,
    /// The decoder tried first, when the decoded schema has only types it builds.
    one_pass: Option<Arc<OnePassDecoder>>,
}

impl JsonFormat {
    pub fn new(schema: SchemaRef, bad_records: super::BadRecords) -> Self {
        Self {
            one_pass: OnePassDecoder::new(schema.clone()).map(Arc::new),
            schema,
            bad_records,
            pruned: None,
        }
    }

    /// Decodes only the fields `read_fields` names of the struct columns it lists (see
    /// `runnel_sql::TableDef::read_fields`); the others are NULL in every row. A value
    /// that would not decode in a field left out is not noticed, as in Flink.
    pub fn reading(mut self, read_fields: &BTreeMap<String, Vec<String>>) -> Self {
        self.pruned = PrunedSchema::new(&self.schema, read_fields).map(Arc::new);
        self.one_pass =
            OnePassDecoder::within(self.decoded_schema(), self.schema.clone()).map(Arc::new);
        self
    }

    /// What the decoders build: the schema, less the struct fields no query reads.
    fn decoded_schema(&self) -> SchemaRef {
        match &self.pruned {
            Some(pruned) => pruned.decoded.clone(),
            None => self.schema.clone(),
        }
    }

    /// Decodes every record, or fails if any record is not exactly one valid object.
    pub(crate) fn decode_all(&self, records: &[&[u8]]) -> Result<RecordBatch, String> {
        let one_pass = self.one_pass.as_ref().filter(|d| d.worth_trying());
        let batch = match one_pass.map(|d| d.decode(records)) {
            Some(Ok(batch)) => batch,
            _ => self.decode_with_arrow_json(records)?,
        };
        match &self.pruned {
            Some(pruned) => pruned
                .widen(&self.schema, &batch)
                .map_err(|e| e.to_string()),
            None => Ok(batch),
        }
    }

    /// The records of [`Self::decoded_schema`] by arrow-json: every batch the one-pass
    /// decoder gives up, and the error that names a bad record.
    fn decode_with_arrow_json(&self, records: &[&[u8]]) -> Result<RecordBatch, String> {
        let decoded_schema = self.decoded_schema();
        let mut decoder = ReaderBuilder::new(decoded_schema.clone())
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
        Ok(match decoder.flush().map_err(|e| e.to_string())? {
            Some(batch) => batch,
            None => RecordBatch::new_empty(decoded_schema),
        })
    }
}

/// A table's payload schema with the struct fields no query reads left out, and the way
/// back: the left-out fields and columns become NULL arrays, sliced from ones kept per
/// type (so a batch costs no allocation for them).
#[derive(Debug)]
struct PrunedSchema {
    /// What the decoder builds.
    decoded: SchemaRef,
    /// Per column of the full schema, where it comes from.
    columns: Vec<PrunedColumn>,
    nulls: Mutex<HashMap<DataType, ArrayRef>>,
}

#[derive(Debug)]
enum PrunedColumn {
    /// Decoded whole, at this index of the decoded batch.
    Whole(usize),
    /// A struct decoded in part, at this index: per field of `fields`, its index in the
    /// decoded struct, `None` for a field left out.
    Part {
        at: usize,
        fields: Fields,
        children: Vec<Option<usize>>,
    },
    /// Not decoded: NULL.
    Absent,
}

impl PrunedSchema {
    /// `None` when `read_fields` leaves nothing of `schema` out.
    fn new(schema: &Schema, read_fields: &BTreeMap<String, Vec<String>>) -> Option<Self> {
        let mut decoded: Vec<Field> = Vec::new();
        let mut columns = Vec::with_capacity(schema.fields().len());
        let mut pruned_any = false;
        for field in schema.fields() {
            let read = read_fields.get(field.name());
            match (field.data_type(), read) {
                (DataType::Struct(fields), Some(read)) if field.is_nullable() => {
                    if read.is_empty() {
                        columns.push(PrunedColumn::Absent);
                        pruned_any = true;
                        continue;
                    }
                    let kept: Vec<_> = fields
                        .iter()
                        .filter(|f| read.contains(f.name()) || !f.is_nullable())
                        .cloned()
                        .collect();
                    if kept.len() == fields.len() {
                        columns.push(PrunedColumn::Whole(decoded.len()));
                        decoded.push(field.as_ref().clone());
                        continue;
                    }
                    let children = fields
                        .iter()
                        .map(|f| kept.iter().position(|k| k.name() == f.name()))
                        .collect();
                    columns.push(PrunedColumn::Part {
                        at: decoded.len(),
                        fields: fields.clone(),
                        children,
                    });
                    decoded.push(
                        field
                            .as_ref()
                            .clone()
                            .with_data_type(DataType::Struct(Fields::from(kept))),
                    );
                    pruned_any = true;
                }
                _ => {
                    columns.push(PrunedColumn::Whole(decoded.len()));
                    decoded.push(field.as_ref().clone());
                }
            }
        }
        pruned_any.then(|| Self {
            decoded: Arc::new(Schema::new_with_metadata(
                decoded,
                schema.metadata().clone(),
            )),
            columns,
            nulls: Mutex::new(HashMap::new()),
        })
    }

    /// `batch` (of `self.decoded`) as a batch of `schema`.
    fn widen(&self, schema: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
        let rows = batch.num_rows();
        let columns = schema
            .fields()
            .iter()
            .zip(&self.columns)
            .map(|(field, column)| match column {
                PrunedColumn::Whole(at) => Ok(batch.column(*at).clone()),
                PrunedColumn::Absent => Ok(self.nulls(field.data_type(), rows)),
                PrunedColumn::Part {
                    at,
                    fields,
                    children,
                } => {
                    let decoded = batch.column(*at).as_struct();
                    let arrays = fields
                        .iter()
                        .zip(children)
                        .map(|(f, child)| match child {
                            Some(i) => decoded.column(*i).clone(),
                            None => self.nulls(f.data_type(), rows),
                        })
                        .collect();
                    let widened =
                        StructArray::try_new(fields.clone(), arrays, decoded.nulls().cloned())?;
                    Ok(Arc::new(widened) as ArrayRef)
                }
            })
            .collect::<Result<Vec<_>, ArrowError>>()?;
        RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
    }

    /// `rows` NULLs of `data_type`.
    fn nulls(&self, data_type: &DataType, rows: usize) -> ArrayRef {
        // A poisoned lock only means another reader panicked mid-insert of a whole
        // array: what is there is still valid.
        let mut nulls = self.nulls.lock().unwrap_or_else(|e| e.into_inner());
        let kept = nulls
            .entry(data_type.clone())
            .or_insert_with(|| new_null_array(data_type, rows.max(1024)));
        if kept.len() < rows {
            *kept = new_null_array(data_type, rows.next_power_of_two());
        }
        kept.slice(0, rows)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::BadRecords;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::DataType::{Int64, Utf8};

    fn schema() -> SchemaRef {
        let bid = Fields::from(vec![
            Field::new("auction", Int64, true),
            Field::new("price", Int64, true),
            Field::new("url", Utf8, true),
        ]);
        let person = Fields::from(vec![Field::new("name", Utf8, true)]);
        Arc::new(Schema::new(vec![
            Field::new("kind", Int64, true),
            Field::new("person", DataType::Struct(person), true),
            Field::new("bid", DataType::Struct(bid), true),
        ]))
    }

    const RECORDS: [&str; 3] = [
        r#"{"kind": 2, "person": null, "bid": {"auction": 7, "price": 10, "url": "u"}}"#,
        r#"{"kind": 0, "person": {"name": "ann"}, "bid": null}"#,
        r#"{"kind": 2, "bid": {"auction": 8, "url": "v", "price": 12}}"#,
    ];

    fn decode(format: &JsonFormat, records: &[&str]) -> Result<RecordBatch, String> {
        let records: Vec<&[u8]> = records.iter().map(|r| r.as_bytes()).collect();
        format.decode_all(&records)
    }

    #[test]
    fn fields_left_out_are_null_and_the_rest_as_a_full_decode() {
        let full = JsonFormat::new(schema(), BadRecords::Fail);
        let read = BTreeMap::from([
            ("bid".to_string(), vec!["auction".to_string()]),
            ("person".to_string(), vec![]),
        ]);
        let pruned = full.clone().reading(&read);
        let all = decode(&full, &RECORDS).unwrap();
        let some = decode(&pruned, &RECORDS).unwrap();
        assert_eq!(some.schema(), schema());
        assert_eq!(some.column(0), all.column(0));
        let (all_bids, some_bids) = (all.column(2).as_struct(), some.column(2).as_struct());
        assert_eq!(some_bids.nulls(), all_bids.nulls());
        assert_eq!(some_bids.column(0), all_bids.column(0));
        let auctions = some_bids.column(0).as_any().downcast_ref::<Int64Array>();
        assert_eq!(
            auctions.unwrap().iter().collect::<Vec<_>>(),
            vec![Some(7), None, Some(8)]
        );
        assert_eq!(some_bids.column(1).null_count(), 3);
        assert_eq!(some_bids.column(2).null_count(), 3);
        assert_eq!(some.column(1).null_count(), 3);
        // A second, larger batch reuses and grows the NULL arrays kept.
        let many: Vec<&str> = RECORDS.iter().cycle().take(3000).copied().collect();
        assert_eq!(decode(&pruned, &many).unwrap().num_rows(), 3000);
    }

    #[test]
    fn a_bad_value_in_a_field_left_out_is_not_decoded() {
        let bad = [r#"{"kind": 2, "bid": {"auction": 9, "price": "ten"}}"#];
        let full = JsonFormat::new(schema(), BadRecords::Fail);
        assert!(decode(&full, &bad).is_err());
        let read = BTreeMap::from([("bid".to_string(), vec!["auction".to_string()])]);
        let batch = decode(&full.reading(&read), &bad).unwrap();
        assert_eq!(batch.num_rows(), 1);
        // A record that is not JSON still fails.
        let read = BTreeMap::from([("bid".to_string(), vec![])]);
        let pruned = JsonFormat::new(schema(), BadRecords::Fail).reading(&read);
        assert!(decode(&pruned, &[r#"{"kind": 2, "bid": {"#]).is_err());
    }
}
