//! A service embedding Runnel: it pushes claims it receives into a memory table, runs a
//! continuous windowed query with a Rust scalar function and a Rust aggregate function,
//! reads the results as a stream of Arrow batches, and reports the job's metrics.
//!
//! Run it with `cargo run --example claims_service`.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{create_udaf, create_udf, Accumulator, ColumnarValue, Volatility};
use futures::StreamExt;
use runnel::{Engine, EngineConfig, Executed, MetricsSnapshot};

/// `risk_band(amount)`: 'high' from 1000 up, else 'low'. A vectorized Rust function.
fn risk_band() -> datafusion::logical_expr::ScalarUDF {
    create_udf(
        "risk_band",
        vec![DataType::Float64],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let amounts = ColumnarValue::values_to_arrays(args)?;
            let amounts = amounts[0].as_primitive::<Float64Type>();
            let bands: StringArray = amounts
                .iter()
                .map(|a| a.map(|a| if a >= 1000.0 { "high" } else { "low" }))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(bands)))
        }),
    )
}

/// `spread(amount)`: largest minus smallest amount. A Rust aggregate function; its state
/// (min and max) is what Runnel checkpoints and merges.
#[derive(Debug, Default)]
struct Spread {
    min: Option<f64>,
    max: Option<f64>,
}

impl Accumulator for Spread {
    fn update_batch(&mut self, values: &[ArrayRef]) -> datafusion::error::Result<()> {
        let values = values[0].as_primitive::<Float64Type>();
        let (min, max) = (
            datafusion::arrow::compute::min(values),
            datafusion::arrow::compute::max(values),
        );
        self.min = match (self.min, min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max = match (self.max, max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> datafusion::error::Result<()> {
        self.update_batch(&states[0..1])?;
        self.update_batch(&states[1..2])
    }

    fn state(&mut self) -> datafusion::error::Result<Vec<ScalarValue>> {
        Ok(vec![
            ScalarValue::Float64(self.min),
            ScalarValue::Float64(self.max),
        ])
    }

    fn evaluate(&mut self) -> datafusion::error::Result<ScalarValue> {
        Ok(ScalarValue::Float64(
            self.min.zip(self.max).map(|(min, max)| max - min),
        ))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }
}

fn spread() -> datafusion::logical_expr::AggregateUDF {
    create_udaf(
        "spread",
        vec![DataType::Float64],
        Arc::new(DataType::Float64),
        Volatility::Immutable,
        Arc::new(|_| Ok(Box::new(Spread::default()))),
        Arc::new(vec![DataType::Float64, DataType::Float64]),
    )
}

/// One result row: policy, window end (ms), claims, spread, high-risk claims.
pub type WindowRow = (i64, i64, i64, f64, i64);

/// Claims the service "receives": (policy, amount, event time in ms).
pub fn incoming_claims() -> Vec<(i64, f64, i64)> {
    let minute = 60_000;
    (0..300)
        .map(|i| {
            let policy = i % 3;
            let amount = ((i * 37) % 1500) as f64;
            (policy, amount, i * minute / 20) // 20 claims a minute, 15 minutes
        })
        .collect()
}

/// Runs the service's query over `claims`; returns its rows and the job's metrics.
pub async fn run(claims: &[(i64, f64, i64)]) -> runnel::Result<(Vec<WindowRow>, MetricsSnapshot)> {
    let engine = Engine::new(EngineConfig::default());
    engine.register_udf(risk_band())?;
    engine.register_udaf(spread())?;
    engine
        .execute(
            "CREATE TABLE claims (
                policy_id BIGINT, amount DOUBLE, event_time TIMESTAMP(3),
                WATERMARK FOR event_time AS event_time - INTERVAL '10' SECOND
            ) WITH ('connector' = 'memory')",
        )
        .await?;
    let input = engine.memory_table("claims")?;
    let mut results = engine
        .execute(
            "SELECT policy_id, window_end, COUNT(*) AS claims, spread(amount) AS spread,
                    COUNT(*) FILTER (WHERE risk_band(amount) = 'high') AS high_risk
             FROM TABLE(TUMBLE(TABLE claims, DESCRIPTOR(event_time), INTERVAL '5' MINUTES))
             GROUP BY policy_id, window_start, window_end",
        )
        .await?;
    let Some(Executed::Query(mut rows)) = results.pop() else {
        unreachable!("a SELECT returns a query stream");
    };

    // The service pushes claims as they arrive, in batches; the query runs meanwhile on
    // the same tokio runtime.
    let schema = input.schema();
    let feeder = {
        let claims = claims.to_vec();
        tokio::spawn(async move {
            for chunk in claims.chunks(50) {
                let batch = RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Int64Array::from_iter_values(chunk.iter().map(|c| c.0))),
                        Arc::new(Float64Array::from_iter_values(chunk.iter().map(|c| c.1))),
                        Arc::new(TimestampMillisecondArray::from_iter_values(
                            chunk.iter().map(|c| c.2),
                        )),
                    ],
                )?;
                input.push(batch).await?;
            }
            input.close();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
    };

    let mut out = Vec::new();
    while let Some(batch) = rows.next().await {
        let batch = batch?;
        let policy = batch
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let end = batch
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>();
        let count = batch
            .column(2)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let spread = batch.column(3).as_primitive::<Float64Type>();
        let high = batch
            .column(4)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        for i in 0..batch.num_rows() {
            out.push((
                policy.value(i),
                end.value(i),
                count.value(i),
                if spread.is_null(i) {
                    f64::NAN
                } else {
                    spread.value(i)
                },
                high.value(i),
            ));
        }
    }
    feeder
        .await
        .map_err(|e| runnel::RunnelError::Usage(e.to_string()))?
        .map_err(|e| runnel::RunnelError::Usage(e.to_string()))?;
    let metrics = rows.finish().await?;
    Ok((out, metrics))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (rows, metrics) = run(&incoming_claims()).await?;
    println!("policy | window end    | claims | spread  | high risk");
    for (policy, end, claims, spread, high) in &rows {
        println!("{policy:>6} | {end:>13} | {claims:>6} | {spread:>7.1} | {high:>9}");
    }
    println!(
        "metrics: {} rows in, {} rows out, {} late, watermark {:?}, state {} bytes",
        metrics.rows_in,
        metrics.rows_out,
        metrics.late_rows,
        metrics.watermark,
        metrics.state_bytes
    );
    Ok(())
}
