//! `'connector' = 'memory'`: tables an embedding service pushes Arrow batches into.
//!
//! The service declares the table in SQL (columns, event time, watermark), gets its
//! [`MemoryTable`] handle from the engine and pushes batches; every query reading the
//! table gets each batch pushed after it started, in order. Batches pushed while no query
//! reads the table are kept for the first one that does, so a service may fill a table
//! before starting its query. A push waits while a reading query is behind (backpressure);
//! [`MemoryTable::close`] ends the table, and with it the queries that read only it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use runnel_runtime::{Source, SourceBatch, SourceEvent};
use runnel_sql::TableDef;
use tokio::sync::mpsc;

use crate::error::{ConnectorError, Result};

/// Batches in flight to each reading query.
const READER_CAPACITY: usize = 16;

/// The memory tables of one engine, by table name.
#[derive(Debug, Default, Clone)]
pub struct MemoryTables {
    tables: Arc<Mutex<HashMap<String, MemoryTable>>>,
}

impl MemoryTables {
    /// The handle of the memory table `table` (the same handle on every call).
    pub fn table(&self, table: &TableDef) -> Result<MemoryTable> {
        if table.connector() != Some("memory") {
            return Err(ConnectorError::Other(format!(
                "table {} is not a memory table (its 'connector' is '{}'); declare it WITH ('connector' = 'memory')",
                table.name,
                table.connector().unwrap_or("?")
            )));
        }
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        let handle = tables
            .entry(table.name.clone())
            .or_insert_with(|| MemoryTable {
                name: table.name.clone(),
                schema: table.physical_schema.clone(),
                shared: Arc::new(Mutex::new(Shared::default())),
            });
        Ok(handle.clone())
    }
}

#[derive(Debug, Default)]
struct Shared {
    readers: Vec<mpsc::Sender<RecordBatch>>,
    /// Pushed while no query read the table.
    kept: Vec<RecordBatch>,
    closed: bool,
}

/// A memory table's writing end. Cheap to clone; every clone writes the same table.
#[derive(Debug, Clone)]
pub struct MemoryTable {
    name: String,
    schema: SchemaRef,
    shared: Arc<Mutex<Shared>>,
}

impl MemoryTable {
    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The columns a pushed batch must have (the table's physical columns).
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Appends `batch` to the table. Its columns must have the table's types, in the
    /// table's order (names may differ). Waits while a reading query is behind.
    pub async fn push(&self, batch: RecordBatch) -> Result<()> {
        let batch = self.conform(batch)?;
        let readers = {
            let mut shared = self.shared();
            if shared.closed {
                return Err(ConnectorError::Other(format!(
                    "memory table {}: closed, no more rows can be pushed",
                    self.name
                )));
            }
            shared.readers.retain(|r| !r.is_closed());
            if shared.readers.is_empty() {
                shared.kept.push(batch);
                return Ok(());
            }
            shared.readers.clone()
        };
        for reader in readers {
            // A query that stopped meanwhile no longer needs the rows.
            let _ = reader.send(batch.clone()).await;
        }
        Ok(())
    }

    /// Ends the table: queries reading it see its end once they have read every row.
    pub fn close(&self) {
        let mut shared = self.shared();
        shared.closed = true;
        shared.readers.clear();
    }

    fn conform(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let expected = self.schema.fields();
        let got = batch.schema();
        let mismatch = |detail: String| {
            ConnectorError::Other(format!(
                "memory table {}: the batch does not fit its columns ({}): {detail}",
                self.name,
                expected
                    .iter()
                    .map(|f| format!("{} {}", f.name(), f.data_type()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        };
        if got.fields().len() != expected.len() {
            return Err(mismatch(format!("it has {} columns", got.fields().len())));
        }
        for (index, (want, have)) in expected.iter().zip(got.fields()).enumerate() {
            if want.data_type() != have.data_type() {
                return Err(mismatch(format!(
                    "column {} is {}, the batch's {} is {}",
                    want.name(),
                    want.data_type(),
                    have.name(),
                    have.data_type()
                )));
            }
            if !want.is_nullable() && batch.column(index).null_count() > 0 {
                return Err(mismatch(format!("column {} is NOT NULL", want.name())));
            }
        }
        RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec())
            .map_err(|e| mismatch(e.to_string()))
    }

    /// A new reader: every batch kept so far, then each one pushed from now on.
    fn subscribe(&self) -> MemorySource {
        let (sender, receiver) = mpsc::channel(READER_CAPACITY);
        let mut shared = self.shared();
        let kept = std::mem::take(&mut shared.kept);
        if !shared.closed {
            shared.readers.push(sender);
        }
        MemorySource {
            kept: kept.into(),
            receiver,
        }
    }
}

/// One query's read of a memory table (one partition).
pub struct MemorySource {
    kept: std::collections::VecDeque<RecordBatch>,
    receiver: mpsc::Receiver<RecordBatch>,
}

impl MemorySource {
    pub fn open(tables: &MemoryTables, table: &TableDef) -> Result<Self> {
        Ok(tables.table(table)?.subscribe())
    }
}

#[async_trait]
impl Source for MemorySource {
    fn partitions(&self) -> usize {
        1
    }

    async fn next_event(&mut self) -> runnel_runtime::Result<Option<SourceEvent>> {
        let batch = match self.kept.pop_front() {
            Some(batch) => Some(batch),
            None => self.receiver.recv().await,
        };
        Ok(batch.map(|batch| {
            SourceEvent::Batch(SourceBatch {
                partition: 0,
                batch,
                next_offset: None,
                dead_letters: None,
            })
        }))
    }
}

/// `'connector' = 'memory'`: batches an embedding service pushes into the engine.
pub struct MemoryConnector {
    pub tables: MemoryTables,
}

#[async_trait]
impl crate::Connector for MemoryConnector {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn validate(&self, table: &TableDef) -> Result<()> {
        crate::options::TableOptions::validate(&table.name, "memory", &table.options, &[], &[])
            .map(drop)
    }

    async fn open_source(
        &self,
        table: &TableDef,
        _context: crate::SourceContext<'_>,
    ) -> Result<Box<dyn Source>> {
        Ok(Box::new(MemorySource::open(&self.tables, table)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn table() -> TableDef {
        crate::test_table(
            "people",
            vec![
                Field::new("id", DataType::Int64, false),
                Field::new("name", DataType::Utf8, true),
            ],
            &[("connector", "memory")],
        )
    }

    fn batch(ids: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Int64, true),
            Field::new("y", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(vec!["a"; ids.len()])),
            ],
        )
        .unwrap()
    }

    async fn read_all(source: &mut MemorySource) -> Vec<i64> {
        let mut ids = Vec::new();
        while let Some(SourceEvent::Batch(b)) = source.next_event().await.unwrap() {
            let column = b
                .batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            ids.extend(column.values().iter());
        }
        ids
    }

    #[tokio::test]
    async fn kept_rows_then_pushed_rows_reach_a_reader_until_close() {
        let tables = MemoryTables::default();
        let def = table();
        let writer = tables.table(&def).unwrap();
        writer.push(batch(&[1, 2])).await.unwrap();
        let mut reader = MemorySource::open(&tables, &def).unwrap();
        writer.push(batch(&[3])).await.unwrap();
        writer.close();
        assert_eq!(read_all(&mut reader).await, vec![1, 2, 3]);
        let error = writer.push(batch(&[4])).await.unwrap_err().to_string();
        assert!(error.contains("closed"), "{error}");
    }

    #[tokio::test]
    async fn a_batch_of_other_types_is_refused_with_the_columns() {
        let tables = MemoryTables::default();
        let writer = tables.table(&table()).unwrap();
        let wrong = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("x", DataType::Utf8, true),
                Field::new("y", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(StringArray::from(vec!["1"])),
                Arc::new(StringArray::from(vec!["a"])),
            ],
        )
        .unwrap();
        let error = writer.push(wrong).await.unwrap_err().to_string();
        assert!(
            error.contains("people") && error.contains("column id is Int64"),
            "{error}"
        );
    }
}
