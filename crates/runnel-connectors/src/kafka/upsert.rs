//! `'connector' = 'upsert-kafka'`: a compacted topic read and written as a table keyed by
//! its `PRIMARY KEY` (Flink's names and behaviour).
//!
//! Reading: a record's key is the row's key; a value is the key's new row (`+U`), a
//! tombstone (no value) deletes the key (`-D` carrying the key). The table's primary key
//! makes Runnel keep each key's last row (see `ChangelogNormalize`), so an update becomes
//! `-U` of the old row and `+U` of the new, and a delete carries the deleted row.
//!
//! Writing: `+I`/`+U` rows are the key's new value, `-D` rows a tombstone, `-U` rows are
//! dropped (the `+U` that follows says it all). With `'sink.buffer-flush.max-rows'` and
//! `'sink.buffer-flush.interval'`, rows are held per key and only each key's last value
//! is written when the buffer fills, the interval passes or a checkpoint is taken.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{new_null_array, ArrayRef, AsArray, Int8Array};
use datafusion::arrow::compute::interleave;
use datafusion::arrow::datatypes::{Int8Type, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use runnel_sql::changelog::ChangeKind;
use runnel_sql::TableDef;

use crate::error::{ConnectorError, Result};
use crate::format::{Decoded, Format, JsonFormat};
use crate::options::TableOptions;

/// Options upsert-kafka takes besides the formats' and `'properties.*'`.
pub const OPTIONS: &[&str] = &[
    "topic",
    "key.format",
    "value.format",
    "value.fields-include",
    "sink.buffer-flush.max-rows",
    "sink.buffer-flush.interval",
    "sink.delivery-guarantee",
    "sink.transactional-id-prefix",
    "scan.watermark.idle-timeout",
    "scan.bounded.mode",
];

/// The key of an upsert table: its primary key's columns, as JSON.
#[derive(Debug, Clone)]
pub(crate) struct UpsertKey {
    /// Indexes of the key columns in the table's physical schema.
    pub columns: Vec<usize>,
    pub format: JsonFormat,
}

impl UpsertKey {
    pub fn of(table: &TableDef) -> Result<Self> {
        if table.primary_key.is_empty() {
            return Err(ConnectorError::Other(format!(
                "table {}: 'connector' = 'upsert-kafka' needs a PRIMARY KEY (...) NOT ENFORCED: \
                 the key decides which row a record replaces",
                table.name
            )));
        }
        let columns: Vec<usize> = table
            .primary_key
            .iter()
            .map(|k| {
                table.physical_schema.index_of(k).map_err(|_| {
                    ConnectorError::Other(format!(
                        "table {}: PRIMARY KEY column {k} must be a physical column",
                        table.name
                    ))
                })
            })
            .collect::<Result<_>>()?;
        let schema = table
            .physical_schema
            .project(&columns)
            .map_err(|e| ConnectorError::Other(e.to_string()))?;
        Ok(Self {
            columns,
            format: JsonFormat::new(Arc::new(schema), crate::format::BadRecords::Fail),
        })
    }

    /// The rows of `table` from records whose values and keys are `values` and `keys`:
    /// `+U` for a value, `-D` (the key's columns set, the rest NULL) for a tombstone.
    pub fn decode(
        &self,
        value_format: &Format,
        table: &TableDef,
        values: &[Option<&[u8]>],
        keys: &[Option<&[u8]>],
        place: impl Fn(usize) -> String,
    ) -> Result<Decoded> {
        let present: Vec<usize> = (0..values.len()).filter(|&i| values[i].is_some()).collect();
        let deleted: Vec<usize> = (0..values.len())
            .filter(|&i| values[i].is_none() && keys[i].is_some())
            .collect();
        let present_values: Vec<&[u8]> = present.iter().filter_map(|&i| values[i]).collect();
        let upserts = value_format.decode(table, &present_values, |k| place(present[k]))?;
        let deleted_keys: Vec<&[u8]> = deleted.iter().filter_map(|&i| keys[i]).collect();
        let key_rows =
            self.format
                .decode_all(&deleted_keys)
                .map_err(|reason| ConnectorError::Decode {
                    place: place(deleted.first().copied().unwrap_or(0)),
                    reason: format!("the key of a tombstone: {reason}"),
                })?;
        let deletes = self.deletes(table, &key_rows)?;
        // Both parts in record order.
        let upsert_records: Vec<usize> = match &upserts.records {
            Some(rows) => rows.iter().map(|&r| present[r as usize]).collect(),
            None => present.clone(),
        };
        let mut order: Vec<(usize, usize, usize)> = upsert_records
            .iter()
            .enumerate()
            .map(|(row, &record)| (record, 0, row))
            .chain(
                deleted
                    .iter()
                    .enumerate()
                    .map(|(row, &record)| (record, 1, row)),
            )
            .collect();
        order.sort_unstable();
        let indices: Vec<(usize, usize)> =
            order.iter().map(|&(_, part, row)| (part, row)).collect();
        let kinds: Vec<i8> = order
            .iter()
            .map(|&(_, part, _)| {
                if part == 0 {
                    ChangeKind::UpdateAfter as i8
                } else {
                    ChangeKind::Delete as i8
                }
            })
            .collect();
        let mut columns: Vec<ArrayRef> =
            Vec::with_capacity(table.physical_schema.fields().len() + 1);
        for column in 0..table.physical_schema.fields().len() {
            let parts = [
                upserts.batch.column(column).as_ref(),
                deletes.column(column).as_ref(),
            ];
            columns.push(interleave(&parts, &indices).map_err(arrow)?);
        }
        columns.push(Arc::new(Int8Array::from(kinds)));
        let schema = runnel_sql::changelog::with_change_column(&table.physical_schema);
        Ok(Decoded {
            batch: RecordBatch::try_new(schema, columns).map_err(arrow)?,
            skipped: upserts.skipped + (values.len() - present.len() - deleted.len()),
            records: Some(order.iter().map(|&(record, _, _)| record as u32).collect()),
            // As indices of `values`.
            rejected: upserts
                .rejected
                .iter()
                .map(|(k, reason)| (present[*k], reason.clone()))
                .collect(),
        })
    }

    /// Rows of `table` with only the key columns set, from decoded keys.
    fn deletes(&self, table: &TableDef, keys: &RecordBatch) -> Result<RecordBatch> {
        let rows = keys.num_rows();
        let columns: Vec<ArrayRef> = table
            .physical_schema
            .fields()
            .iter()
            .enumerate()
            .map(
                |(i, field)| match self.columns.iter().position(|&c| c == i) {
                    Some(k) => keys.column(k).clone(),
                    None => new_null_array(field.data_type(), rows),
                },
            )
            .collect();
        let schema = Arc::new(Schema::new(
            table
                .physical_schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let options =
            datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(schema, columns, &options).map_err(arrow)
    }
}

fn arrow(e: datafusion::arrow::error::ArrowError) -> ConnectorError {
    ConnectorError::Other(e.to_string())
}

/// A record an upsert sink writes: its key, and its value (`None`: a tombstone).
pub(crate) type KeyedRecord = (Vec<u8>, Option<Vec<u8>>);

/// What an upsert sink writes for a batch of changes, one record per row to write.
pub(crate) fn records(
    key: &UpsertKey,
    value: &Format,
    batch: &RecordBatch,
) -> std::result::Result<Vec<KeyedRecord>, datafusion::arrow::error::ArrowError> {
    let changelog = runnel_sql::changelog::is_changelog(batch.schema_ref());
    let mut data = batch.clone();
    let kinds = if changelog {
        let last = data.num_columns() - 1;
        let kinds = data.column(last).as_primitive::<Int8Type>().clone();
        data.remove_column(last);
        Some(kinds)
    } else {
        None
    };
    let keys = Format::Json(key.format.clone()).encode(&data.project(&key.columns)?)?;
    let values = value.encode(&data)?;
    Ok(keys
        .into_iter()
        .zip(values)
        .enumerate()
        .filter_map(|(row, (key, value))| {
            let kind = kinds
                .as_ref()
                .and_then(|k| ChangeKind::from_code(k.value(row)))
                .unwrap_or(ChangeKind::Insert);
            match kind {
                ChangeKind::Insert | ChangeKind::UpdateAfter => Some((key, Some(value))),
                ChangeKind::Delete => Some((key, None)),
                ChangeKind::UpdateBefore => None,
            }
        })
        .collect())
}

/// Records held per key until the buffer is flushed (`'sink.buffer-flush.*'`): a key's
/// later value replaces its earlier one, so repeated updates of a key are written once.
#[derive(Debug)]
pub(crate) struct UpsertBuffer {
    max_rows: usize,
    interval: Option<Duration>,
    last_flush: Instant,
    /// Keys in the order first held, and their latest value.
    order: Vec<Vec<u8>>,
    latest: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

impl UpsertBuffer {
    /// The buffer the table's options ask for; `None` when it asks for none.
    pub fn from_options(options: &TableOptions) -> Result<Option<Self>> {
        let max_rows: usize = options.parse_or("sink.buffer-flush.max-rows", 0)?;
        let interval = options.duration("sink.buffer-flush.interval")?;
        if max_rows == 0 && interval.is_none() {
            return Ok(None);
        }
        Ok(Some(Self {
            max_rows: if max_rows == 0 { usize::MAX } else { max_rows },
            interval,
            last_flush: Instant::now(),
            order: Vec::new(),
            latest: HashMap::new(),
        }))
    }

    /// How long rows may wait (`sink.buffer-flush.interval`), if that bounds them.
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// Holds `records`.
    pub fn hold(&mut self, records: Vec<KeyedRecord>) {
        for (key, value) in records {
            if self.latest.insert(key.clone(), value).is_none() {
                self.order.push(key);
            }
        }
    }

    /// Whether the buffer is full or its interval has passed.
    pub fn due(&self) -> bool {
        self.latest.len() >= self.max_rows
            || self
                .interval
                .is_some_and(|i| !self.latest.is_empty() && self.last_flush.elapsed() >= i)
    }

    /// Every held key's last value, in the order keys were first held; empties the buffer.
    pub fn take(&mut self) -> Vec<KeyedRecord> {
        self.last_flush = Instant::now();
        let mut latest = std::mem::take(&mut self.latest);
        std::mem::take(&mut self.order)
            .into_iter()
            .filter_map(|key| latest.remove(&key).map(|value| (key, value)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_keeps_each_keys_last_value_in_first_seen_order() {
        let options = std::collections::BTreeMap::from([(
            "sink.buffer-flush.max-rows".to_string(),
            "2".to_string(),
        )]);
        let options = TableOptions::validate("t", "upsert-kafka", &options, OPTIONS, &[]).unwrap();
        let mut buffer = UpsertBuffer::from_options(&options).unwrap().unwrap();
        buffer.hold(vec![
            (b"a".to_vec(), Some(b"1".to_vec())),
            (b"a".to_vec(), Some(b"2".to_vec())),
        ]);
        assert!(!buffer.due(), "one key held");
        buffer.hold(vec![
            (b"b".to_vec(), None),
            (b"a".to_vec(), Some(b"3".to_vec())),
        ]);
        assert!(buffer.due());
        assert_eq!(
            buffer.take(),
            [(b"a".to_vec(), Some(b"3".to_vec())), (b"b".to_vec(), None)]
        );
        assert!(!buffer.due());
    }
}
