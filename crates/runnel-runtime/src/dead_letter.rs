//! Dead letters: records a source could not decode, kept with where they came from and
//! why, for a table of the user's (`'<format>.dead-letter.table'`) instead of failing the
//! job or dropping them.
//!
//! A source returns its dead letters with the rows it decoded ([`SourceBatch`]'s
//! `dead_letters`), in [`dead_letter_schema`]. The source task queues them and the sink
//! task writes them to the table, shaped by [`conform`] to the table's columns (a subset
//! of the dead-letter fields, by name). Like late rows they belong to the checkpoint epoch
//! of the offsets that passed them.
//!
//! [`SourceBatch`]: crate::SourceBatch

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BinaryArray, Int32Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use runnel_sql::TableDef;

use crate::error::{Result, RuntimeError};

/// The fields of a dead letter, as a dead-letter table's columns may name them.
pub const FIELDS: &[&str] = &[
    "source_table",
    "topic",
    "partition",
    "offset",
    "reason",
    "record",
    "read_at",
];

/// The schema dead letters travel in: the table whose source read the record; where it
/// was (a Kafka topic, partition and offset; a file's path and line as `topic` and
/// `offset`); why it could not be decoded; the record's bytes; when it was read.
pub fn dead_letter_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("source_table", DataType::Utf8, false),
        Field::new("topic", DataType::Utf8, true),
        Field::new("partition", DataType::Int32, true),
        Field::new("offset", DataType::Int64, true),
        Field::new("reason", DataType::Utf8, false),
        Field::new("record", DataType::Binary, false),
        Field::new(
            "read_at",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
    ]))
}

/// One record a source could not decode.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter<'a> {
    pub topic: Option<&'a str>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub reason: String,
    pub record: &'a [u8],
}

/// `letters` of `table`'s source as a batch in [`dead_letter_schema`]; `None` when there
/// are none.
pub fn dead_letter_batch(table: &str, letters: &[DeadLetter<'_>]) -> Result<Option<RecordBatch>> {
    if letters.is_empty() {
        return Ok(None);
    }
    let now = crate::processing_time::system_now();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![table; letters.len()])),
        Arc::new(StringArray::from_iter(letters.iter().map(|l| l.topic))),
        Arc::new(Int32Array::from_iter(letters.iter().map(|l| l.partition))),
        Arc::new(Int64Array::from_iter(letters.iter().map(|l| l.offset))),
        Arc::new(StringArray::from_iter_values(
            letters.iter().map(|l| l.reason.as_str()),
        )),
        Arc::new(BinaryArray::from_iter_values(
            letters.iter().map(|l| l.record),
        )),
        Arc::new(TimestampMillisecondArray::from(vec![now; letters.len()])),
    ];
    RecordBatch::try_new(dead_letter_schema(), columns)
        .map(Some)
        .map_err(|e| RuntimeError::Build(format!("dead letters of {table}: {e}")))
}

/// Checks that every column of the dead-letter table `table` is a dead-letter field.
pub fn check_table(table: &TableDef, source: &str) -> Result<()> {
    for field in table.physical_schema.fields() {
        if !FIELDS.contains(&field.name().as_str()) {
            return Err(RuntimeError::Build(format!(
                "table {source}: its dead-letter table {} has a column {}, which is none of the \
                 fields of a dead letter ({})",
                table.name,
                field.name(),
                FIELDS.join(", ")
            )));
        }
    }
    Ok(())
}

/// `letters` (in [`dead_letter_schema`]) as rows of `schema`: its columns picked by name
/// and cast to their types. A `record` column of text gets the record as UTF-8, with
/// bytes that are not replaced (so nothing of it is lost to a failed cast).
pub fn conform(letters: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let column = letters.column_by_name(field.name()).ok_or_else(|| {
                RuntimeError::Build(format!("{} is not a dead-letter field", field.name()))
            })?;
            match (column.data_type(), field.data_type()) {
                (DataType::Binary, DataType::Utf8) => Ok(as_text(column)),
                (from, to) if from == to => Ok(column.clone()),
                _ => datafusion::arrow::compute::cast(column, field.data_type()).map_err(|e| {
                    RuntimeError::Build(format!("dead-letter column {}: {e}", field.name()))
                }),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| RuntimeError::Build(format!("dead letters: {e}")))
}

/// Binary values as text, invalid UTF-8 replaced.
fn as_text(column: &ArrayRef) -> ArrayRef {
    let binary = column.as_any().downcast_ref::<BinaryArray>();
    let text: StringArray = binary
        .map(|b| {
            b.iter()
                .map(|v| v.map(|bytes| String::from_utf8_lossy(bytes).into_owned()))
                .collect()
        })
        .unwrap_or_else(|| StringArray::new_null(column.len()));
    Arc::new(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_conform_to_the_columns_a_table_picks() {
        let letters = dead_letter_batch(
            "claims",
            &[DeadLetter {
                topic: Some("claims.events"),
                partition: Some(2),
                offset: Some(41),
                reason: "expected a number".into(),
                record: b"{\"amount\": \xff}",
            }],
        )
        .unwrap()
        .unwrap();
        let table = Arc::new(Schema::new(vec![
            Field::new("reason", DataType::Utf8, true),
            Field::new("offset", DataType::Int64, true),
            Field::new("record", DataType::Utf8, true),
            Field::new("partition", DataType::Int64, true),
        ]));
        let rows = conform(&letters, &table).unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&[rows])
            .unwrap()
            .to_string();
        assert!(text.contains("expected a number"), "{text}");
        assert!(text.contains("| 41 "), "{text}");
        assert!(text.contains("{\"amount\": \u{fffd}}"), "{text}");
        assert_eq!(dead_letter_batch("claims", &[]).unwrap(), None);
    }
}
