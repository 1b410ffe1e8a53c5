//! Criterion micro-benchmarks of the hot operators, each driven by itself over
//! pre-built Arrow batches of 8,192 rows (no source, no channels, no tasks):
//!
//! - `exchange`: hashing a batch's key and splitting it over 2 and 8 subtasks;
//! - `window/tumble`: `TUMBLE` assignment + count and sum per key (1,000 keys);
//! - `window/hop_5`, `window/hop_60`: the same over `HOP` with size/slide 5 and 60;
//! - `filter_project`: the claims query's filter and projection.
//!
//! ```text
//! cargo bench --bench operators
//! cargo bench --bench operators -- window/hop
//! ```
//!
//! The operators are built from the plan Runnel makes for a real query (`Engine::stream_plans`
//! and `runtime::one_input_operator`), so they are exactly what a job runs.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;
use runnel::arrow::array::TimestampMillisecondArray;
use runnel::arrow::array::{ArrayRef, Decimal128Array, Int64Array, StringArray};
use runnel::arrow::datatypes::SchemaRef;
use runnel::arrow::record_batch::RecordBatch;
use runnel::runtime::exchange::Exchange;
use runnel::runtime::{
    one_input_operator, Chained, JobConfig, JobMetrics, LateRows, Message, OperatorChain,
    OperatorContext, ProcessingTime,
};
use runnel::sql::StreamNode;
use runnel::Engine;

const ROWS: usize = 8192;

const CLAIMS: &str = "CREATE TABLE claims (
        policy_id BIGINT, amount DECIMAL(12, 2), event_time TIMESTAMP(3), operation STRING,
        WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
    ) WITH ('connector' = 'memory');";

/// 8,192 claims of 1,000 policies, within one minute of event time (one tumbling window).
fn claims_batch(schema: SchemaRef) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            (0..ROWS as i64).map(|i| (i * 7919) % 1000),
        )),
        Arc::new(
            Decimal128Array::from_iter_values((0..ROWS as i128).map(|i| (i * 104_729) % 500_000))
                .with_precision_and_scale(12, 2)
                .expect("decimal(12, 2)"),
        ),
        Arc::new(TimestampMillisecondArray::from_iter_values(
            (0..ROWS as i64).map(|i| 1_767_225_600_000 + i * 7),
        )),
        Arc::new(StringArray::from_iter_values((0..ROWS).map(|i| {
            if i % 5 == 4 {
                "UPDATE"
            } else {
                "INSERT"
            }
        }))),
    ];
    RecordBatch::try_new(schema, columns).expect("claims batch")
}

/// The single-input operators between the source and the plan's root, bottom-up, as one
/// chain; with the batch the source would feed them.
fn chain_for(query: &str) -> (OperatorChain, RecordBatch) {
    let engine = Engine::default();
    let plans = engine
        .stream_plans(&format!("{CLAIMS}\n{query}"))
        .expect("the benchmark query plans");
    let mut nodes = Vec::new();
    let mut node = &plans[0].root;
    let batch = loop {
        match node {
            StreamNode::Source(source) => {
                // The table's rows, with the columns the query reads.
                let full = claims_batch(source.table.physical_schema.clone());
                let read: Vec<usize> = source
                    .schema
                    .fields()
                    .iter()
                    .map(|f| full.schema().index_of(f.name()).expect("a table column"))
                    .collect();
                break full.project(&read).expect("the columns read");
            }
            other => {
                nodes.push(other);
                node = other.inputs()[0];
            }
        }
    };
    let context = OperatorContext {
        config: JobConfig::default(),
        metrics: Arc::new(JobMetrics::default()),
        clock: ProcessingTime::default(),
        lookup: Default::default(),
    };
    let operators = nodes
        .iter()
        .rev()
        .map(|node| {
            one_input_operator(node, &context).map(|operator| Chained { operator, id: None })
        })
        .collect::<Result<Vec<_>, _>>()
        .expect("operators");
    (OperatorChain::new(operators, LateRows::default()), batch)
}

fn window_aggregates(c: &mut Criterion) {
    let mut group = c.benchmark_group("window");
    group.throughput(Throughput::Elements(ROWS as u64));
    for (name, window) in [
        (
            "tumble",
            "TUMBLE(TABLE claims, DESCRIPTOR(event_time), INTERVAL '5' MINUTES)",
        ),
        (
            "hop_5",
            "HOP(TABLE claims, DESCRIPTOR(event_time), INTERVAL '1' MINUTES, INTERVAL '5' MINUTES)",
        ),
        (
            "hop_60",
            "HOP(TABLE claims, DESCRIPTOR(event_time), INTERVAL '5' SECONDS, INTERVAL '5' MINUTES)",
        ),
    ] {
        let (mut chain, batch) = chain_for(&format!(
            "SELECT policy_id, window_start, window_end, COUNT(*) AS claims, SUM(amount) AS total
             FROM TABLE({window}) GROUP BY policy_id, window_start, window_end;"
        ));
        let mut out = Vec::new();
        group.bench_function(name, |b| {
            b.iter(|| {
                // No watermark: the windows stay open, 1,000 groups each, state flat.
                chain
                    .process(Message::Batch(batch.clone()), &mut out)
                    .expect("window aggregate");
                out.clear();
            })
        });
    }
    group.finish();
}

fn filter_project(c: &mut Criterion) {
    let (mut chain, batch) = chain_for(
        "SELECT policy_id, amount * 2 AS doubled, event_time FROM claims WHERE operation = 'INSERT';",
    );
    let mut group = c.benchmark_group("filter_project");
    group.throughput(Throughput::Elements(ROWS as u64));
    let mut out = Vec::new();
    group.bench_function("claims", |b| {
        b.iter(|| {
            chain
                .process(Message::Batch(batch.clone()), &mut out)
                .expect("filter and projection");
            out.clear();
        })
    });
    group.finish();
}

fn exchange(c: &mut Criterion) {
    let (_, batch) = chain_for("SELECT * FROM claims;");
    let key: Arc<dyn PhysicalExpr> = Arc::new(Column::new("policy_id", 0));
    let mut group = c.benchmark_group("exchange");
    group.throughput(Throughput::Elements(ROWS as u64));
    for subtasks in [2, 8] {
        let (senders, _receivers): (Vec<_>, Vec<_>) =
            (0..subtasks).map(|_| tokio::sync::mpsc::channel(1)).unzip();
        let mut exchange = Exchange::hash(senders, vec![key.clone()], "bench");
        group.bench_function(format!("hash_into_{subtasks}"), |b| {
            b.iter_batched(
                || batch.clone(),
                |batch| exchange.partition(&batch).expect("partition"),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, exchange, filter_project, window_aggregates);
criterion_main!(benches);
