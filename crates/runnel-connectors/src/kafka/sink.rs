//! [`KafkaSink`]: produces one record per row (JSON value, optional JSON key from
//! `'key.fields'`), and waits for the broker's acknowledgement of every batch.

use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use runnel_runtime::Sink;
use runnel_sql::TableDef;

use crate::error::{ConnectorError, Result};
use crate::format::{Format, JsonFormat};

/// Writes rows to one topic with at-least-once delivery: a batch counts as written only
/// once the broker acknowledged all of its records.
pub struct KafkaSink {
    producer: FutureProducer,
    topic: String,
    table: String,
    value: Format,
    /// Key columns (indexes into the written batches) and their encoder.
    key: Option<(Vec<usize>, Format)>,
}

impl KafkaSink {
    pub fn open(table: &TableDef, schema: SchemaRef) -> Result<Self> {
        let options = super::options(table)?;
        let value = super::value_format(&options, table)?;
        let topic = options.required("topic")?.to_string();
        let key = match options.get("key.fields") {
            None => None,
            Some(fields) => {
                let mut indexes = Vec::new();
                for name in fields.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                    let index = schema.index_of(name).map_err(|_| {
                        options.invalid("key.fields", fields, format!("no column named '{name}'"))
                    })?;
                    indexes.push(index);
                }
                let key_schema = std::sync::Arc::new(
                    schema
                        .project(&indexes)
                        .map_err(|e| ConnectorError::Other(e.to_string()))?,
                );
                Some((
                    indexes,
                    Format::Json(JsonFormat {
                        schema: key_schema,
                        ignore_parse_errors: false,
                    }),
                ))
            }
        };
        let producer: FutureProducer = super::client_config(
            &options,
            &[
                ("linger.ms", "5"),
                ("compression.type", "none"),
                ("enable.idempotence", "true"),
            ],
        )
        .create()
        .map_err(|source| ConnectorError::Kafka {
            context: format!("creating a producer for topic {topic}"),
            source,
        })?;
        Ok(Self {
            producer,
            topic,
            table: table.name.clone(),
            value,
            key,
        })
    }

    fn delivery_error(&self, source: KafkaError) -> runnel_runtime::RuntimeError {
        ConnectorError::Kafka {
            context: format!("producing to topic {}", self.topic),
            source,
        }
        .at("sink", &self.table)
    }
}

#[async_trait]
impl Sink for KafkaSink {
    async fn write_batch(&mut self, batch: RecordBatch) -> runnel_runtime::Result<()> {
        let encode_error = |source| {
            ConnectorError::Encode {
                table: self.table.clone(),
                source,
            }
            .at("sink", &self.table)
        };
        let values = self.value.encode(&batch).map_err(encode_error)?;
        let keys = match &self.key {
            Some((indexes, format)) => {
                let key_batch = batch.project(indexes).map_err(encode_error)?;
                Some(format.encode(&key_batch).map_err(encode_error)?)
            }
            None => None,
        };
        let mut pending = Vec::with_capacity(values.len());
        for (row, value) in values.iter().enumerate() {
            let mut record = FutureRecord::to(&self.topic).payload(value.as_slice());
            if let Some(keys) = &keys {
                record = record.key(keys[row].as_slice());
            }
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                        // The local queue is full: let deliveries drain, then retry.
                        record = returned;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(self.delivery_error(e)),
                }
            }
        }
        for delivery in pending {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(self.delivery_error(e)),
                Err(_) => return Err(self.delivery_error(KafkaError::Canceled)),
            }
        }
        Ok(())
    }

    async fn finish(&mut self) -> runnel_runtime::Result<()> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(30)))
            .await
            .map_err(|e| runnel_runtime::RuntimeError::Task(e.to_string()))?
            .map_err(|e| self.delivery_error(e))
    }
}
