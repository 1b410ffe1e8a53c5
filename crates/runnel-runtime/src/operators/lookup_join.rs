//! [`LookupJoinOperator`]: joins each stream row with the rows of a table that have its
//! key (`JOIN t FOR SYSTEM_TIME AS OF s.proc_time ON s.k = t.k`).
//!
//! The table is either read whole before the stream starts (a file, a bounded topic) and
//! indexed once, or asked by key as batches arrive (a database table, through its
//! connector's [`KeyLookup`]): each batch's distinct keys not in the cache go out in one
//! request, and the answers are kept as Flink's partial cache says (`lookup.cache.*`).
//! Either way, keys are encoded in Arrow's row format, a batch's (stream row, table row)
//! pairs are collected, and the joined columns are built with Arrow's kernels.

use std::collections::VecDeque;

use datafusion::common::HashMap;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{new_null_array, Array, ArrayRef, BooleanArray, UInt32Array};
use datafusion::arrow::compute::{cast, concat_batches, filter, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::logical_expr::JoinType;
use datafusion::physical_expr::PhysicalExpr;
use runnel_sql::{LookupJoinNode, StreamNode};

use crate::connector::{KeyLookup, LookupCache};
use crate::error::{Result, RuntimeError};
use crate::operator::{Collector, OneInputOperator, OperatorState, StreamOperator};

/// A lookup join of a stream against a table.
pub struct LookupJoinOperator {
    input_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The key types both sides are compared in (the table's).
    key_types: Vec<DataType>,
    keys: RowConverter,
    table: TableSide,
    left_outer: bool,
    residual: Option<Arc<dyn PhysicalExpr>>,
    /// The table side's columns as the join emits them.
    table_schema: SchemaRef,
    schema: SchemaRef,
}

/// Where the table's rows come from.
enum TableSide {
    /// Every row, read before the stream started, with the rows of each encoded key
    /// (rows with a NULL key are not indexed: they never match).
    Loaded {
        table: RecordBatch,
        index: HashMap<Box<[u8]>, Vec<u32>>,
    },
    /// Asked by key.
    ByKey(KeyedTable),
}

/// A table asked by key, and what it answered that may still be used.
struct KeyedTable {
    lookup: Arc<dyn KeyLookup>,
    cache: LookupCache,
    /// The table's key expressions, over its rows.
    table_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Which of the table's physical columns the join reads (all when `None`).
    projection: Option<Vec<usize>>,
    /// The join's table columns, encoded as rows.
    rows: RowConverter,
    /// Each key's rows as last looked up (none: the table has no such key).
    cached: HashMap<Box<[u8]>, CachedKey>,
    /// Cached keys in the order they were looked up, oldest first, for eviction.
    order: VecDeque<Box<[u8]>>,
    /// Bytes of the cached rows and keys.
    bytes: usize,
}

struct CachedKey {
    rows: Vec<OwnedRow>,
    written: Instant,
    accessed: Instant,
}

fn operator_error(source: DataFusionError) -> RuntimeError {
    RuntimeError::Operator {
        operator: "LookupJoin".into(),
        source,
    }
}

/// Whether row `i` has a NULL in any of `keys`.
fn has_null(keys: &[ArrayRef], i: usize) -> bool {
    keys.iter().any(|k| k.is_null(i))
}

impl LookupJoinOperator {
    /// A join against `table`: every row of the table side, as its plan node produces
    /// them.
    pub fn try_new(node: &LookupJoinNode, table: Vec<RecordBatch>) -> Result<Self> {
        let table_schema = node.table.arrow_schema();
        let table = concat_batches(&table_schema, &table).map_err(|e| operator_error(e.into()))?;
        let table_keys = crate::expr::compile(&node.table_keys, &node.table_schema)?;
        let table_key_arrays = crate::expr::evaluate(&table_keys, &table)?;
        let key_types: Vec<DataType> = table_key_arrays
            .iter()
            .map(|a| a.data_type().clone())
            .collect();
        let keys = row_converter(&key_types)?;
        let rows = keys
            .convert_columns(&table_key_arrays)
            .map_err(|e| operator_error(e.into()))?;
        let mut index: HashMap<Box<[u8]>, Vec<u32>> = HashMap::new();
        for (i, row) in rows.iter().enumerate() {
            if !has_null(&table_key_arrays, i) {
                index.entry(row.as_ref().into()).or_default().push(i as u32);
            }
        }
        Self::new(node, key_types, keys, TableSide::Loaded { table, index })
    }

    /// A join that asks `lookup` for each batch's keys (the table side must be a scan of
    /// the table `lookup` reads, its keys plain columns: see
    /// [`crate::graph::key_lookup_of`]).
    pub fn by_key(node: &LookupJoinNode, lookup: Arc<dyn KeyLookup>) -> Result<Self> {
        let StreamNode::Source(source) = node.table.as_ref() else {
            return Err(RuntimeError::Build(format!(
                "a lookup by key needs a table scan, not {}",
                node.table.name()
            )));
        };
        let table_keys = crate::expr::compile(&node.table_keys, &node.table_schema)?;
        let table_schema = node.table.arrow_schema();
        let key_types = table_keys
            .iter()
            .map(|k| k.data_type(&table_schema))
            .collect::<DFResult<Vec<_>>>()
            .map_err(operator_error)?;
        let column_types: Vec<DataType> = table_schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let table = KeyedTable {
            cache: lookup.cache(),
            lookup,
            table_keys,
            projection: source.projection.clone(),
            rows: row_converter(&column_types)?,
            cached: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
        };
        let keys = row_converter(&key_types)?;
        Self::new(node, key_types, keys, TableSide::ByKey(table))
    }

    fn new(
        node: &LookupJoinNode,
        key_types: Vec<DataType>,
        keys: RowConverter,
        table: TableSide,
    ) -> Result<Self> {
        let residual = node
            .residual
            .as_ref()
            .map(|r| crate::expr::compile(std::slice::from_ref(r), &node.schema))
            .transpose()?
            .map(|mut compiled| compiled.remove(0));
        Ok(Self {
            input_keys: crate::expr::compile(&node.input_keys, &node.input_schema)?,
            key_types,
            keys,
            table,
            left_outer: node.join_type == JoinType::Left,
            residual,
            table_schema: node.table.arrow_schema(),
            schema: Arc::new(node.schema.as_arrow().clone()),
        })
    }

    /// Rows of a table read whole (for tests and metrics).
    pub fn table_rows(&self) -> usize {
        match &self.table {
            TableSide::Loaded { table, .. } => table.num_rows(),
            TableSide::ByKey(keyed) => keyed.cached.values().map(|c| c.rows.len()).sum(),
        }
    }

    fn join(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>> {
        let keys = crate::expr::evaluate(&self.input_keys, batch)?
            .iter()
            .zip(&self.key_types)
            .map(|(k, t)| cast(k, t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| operator_error(e.into()))?;
        let encoded = self
            .keys
            .convert_columns(&keys)
            .map_err(|e| operator_error(e.into()))?;
        let (stream_rows, table_columns) = match &mut self.table {
            TableSide::Loaded { table, index } => {
                let (mut stream_rows, mut table_rows) = (Vec::new(), Vec::new());
                for (i, row) in encoded.iter().enumerate() {
                    if has_null(&keys, i) {
                        continue;
                    }
                    for &m in index.get(row.as_ref()).map_or(&[][..], |m| m) {
                        stream_rows.push(i as u32);
                        table_rows.push(m);
                    }
                }
                let table_rows = UInt32Array::from(table_rows);
                let columns = table
                    .columns()
                    .iter()
                    .map(|c| take(c, &table_rows, None))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| operator_error(e.into()))?;
                (stream_rows, columns)
            }
            TableSide::ByKey(keyed) => keyed.join(&keys, &encoded, &self.keys)?,
        };
        self.assemble(batch, stream_rows, table_columns)
            .map_err(operator_error)
    }

    /// The joined rows: `stream_rows[i]` of `batch` beside row `i` of `table_columns`,
    /// kept where the residual condition holds; with a left join, the stream rows left
    /// without a partner padded with NULLs.
    fn assemble(
        &self,
        batch: &RecordBatch,
        mut stream_rows: Vec<u32>,
        table_columns: Vec<ArrayRef>,
    ) -> DFResult<Option<RecordBatch>> {
        let mut joined = self.beside(batch, &stream_rows, table_columns)?;
        if self.residual.is_some() {
            let passed = super::join_rows::residual_passes(self.residual.as_ref(), &joined)?;
            let mask = BooleanArray::from(passed);
            joined = datafusion::arrow::compute::filter_record_batch(&joined, &mask)?;
            let kept = filter(&UInt32Array::from(stream_rows), &mask)?;
            stream_rows = kept
                .as_any()
                .downcast_ref::<UInt32Array>()
                .map(|a| a.values().to_vec())
                .unwrap_or_default();
        }
        if self.left_outer {
            let mut matched = vec![false; batch.num_rows()];
            for &i in &stream_rows {
                matched[i as usize] = true;
            }
            let unmatched: Vec<u32> = (0..batch.num_rows() as u32)
                .filter(|&i| !matched[i as usize])
                .collect();
            if !unmatched.is_empty() {
                let nulls = self
                    .table_schema
                    .fields()
                    .iter()
                    .map(|f| new_null_array(f.data_type(), unmatched.len()))
                    .collect();
                let padded = self.beside(batch, &unmatched, nulls)?;
                joined = concat_batches(&self.schema, [&joined, &padded])?;
            }
        }
        Ok((joined.num_rows() > 0).then_some(joined))
    }

    /// `stream_rows` of `batch` with `table_columns` beside them, in the join's schema.
    fn beside(
        &self,
        batch: &RecordBatch,
        stream_rows: &[u32],
        table_columns: Vec<ArrayRef>,
    ) -> DFResult<RecordBatch> {
        let stream_rows = UInt32Array::from(stream_rows.to_vec());
        let mut columns: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .map(|c| take(c, &stream_rows, None))
            .collect::<Result<_, _>>()?;
        columns.extend(table_columns);
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

fn row_converter(types: &[DataType]) -> Result<RowConverter> {
    RowConverter::new(types.iter().cloned().map(SortField::new).collect())
        .map_err(|e| operator_error(e.into()))
}

impl KeyedTable {
    /// The (stream row, table columns) pairs of a batch whose keys are `keys`, encoded as
    /// `encoded` by `converter`: keys neither cached nor fresh are looked up, all in one
    /// request.
    fn join(
        &mut self,
        keys: &[ArrayRef],
        encoded: &Rows,
        converter: &RowConverter,
    ) -> Result<(Vec<u32>, Vec<ArrayRef>)> {
        let now = Instant::now();
        // The first row of each key this batch must ask for.
        let mut wanted: HashMap<&[u8], u32> = HashMap::new();
        for (i, row) in encoded.iter().enumerate() {
            if has_null(keys, i) {
                continue;
            }
            let cache = self.cache;
            match self.cached.get_mut(row.data()) {
                Some(cached) if cached.is_fresh(&cache, now) => cached.accessed = now,
                _ => {
                    wanted.entry(row.data()).or_insert(i as u32);
                }
            }
        }
        let mut fetched = self.fetch(keys, &wanted, encoded, converter)?;
        let mut stream_rows = Vec::new();
        let mut matched: Vec<datafusion::arrow::row::Row<'_>> = Vec::new();
        for (i, row) in encoded.iter().enumerate() {
            if has_null(keys, i) {
                continue;
            }
            let rows = match fetched.get(row.data()) {
                Some(rows) => rows,
                None => match self.cached.get(row.data()) {
                    Some(cached) => &cached.rows,
                    None => continue,
                },
            };
            for table_row in rows {
                stream_rows.push(i as u32);
                matched.push(table_row.row());
            }
        }
        let columns = self
            .rows
            .convert_rows(matched)
            .map_err(|e| operator_error(e.into()))?;
        // Cached only now: the rows above borrowed from `fetched` and the cache.
        for (key, rows) in fetched.drain() {
            self.remember(key, rows, now);
        }
        Ok((stream_rows, columns))
    }

    /// Asks the table for the `wanted` keys (each at its first row of `keys`); their rows
    /// (none for a key the table lacks), by encoded key.
    fn fetch(
        &self,
        keys: &[ArrayRef],
        wanted: &HashMap<&[u8], u32>,
        encoded: &Rows,
        converter: &RowConverter,
    ) -> Result<HashMap<Box<[u8]>, Vec<OwnedRow>>> {
        let mut found: HashMap<Box<[u8]>, Vec<OwnedRow>> = HashMap::new();
        if wanted.is_empty() {
            return Ok(found);
        }
        let positions = UInt32Array::from_iter_values(wanted.values().copied());
        let asked = keys
            .iter()
            .map(|k| take(k, &positions, None))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| operator_error(e.into()))?;
        // The lookup blocks until the table answers: on a multi-thread runtime the
        // worker hands its other tasks over first.
        let lookup = || self.lookup.lookup(&asked);
        let answer = match tokio::runtime::Handle::try_current() {
            Ok(runtime)
                if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread =>
            {
                tokio::task::block_in_place(lookup)
            }
            _ => lookup(),
        }?;
        let answer = match &self.projection {
            Some(columns) => answer.project(columns),
            None => Ok(answer),
        }
        .map_err(|e| operator_error(e.into()))?;
        let answer_keys = crate::expr::evaluate(&self.table_keys, &answer)?;
        let answer_key_rows = converter
            .convert_columns(&answer_keys)
            .map_err(|e| operator_error(e.into()))?;
        let answer_rows = self
            .rows
            .convert_columns(answer.columns())
            .map_err(|e| operator_error(e.into()))?;
        for (i, key) in answer_key_rows.iter().enumerate() {
            found
                .entry(key.as_ref().into())
                .or_default()
                .push(answer_rows.row(i).owned());
        }
        // Keys asked but not answered: the table has none of them.
        for &first in wanted.values() {
            found
                .entry(encoded.row(first as usize).as_ref().into())
                .or_default();
        }
        Ok(found)
    }

    /// Keeps what the table answered for `key` as the cache allows, evicting the keys
    /// looked up longest ago when it is full.
    fn remember(&mut self, key: Box<[u8]>, rows: Vec<OwnedRow>, now: Instant) {
        if self.cache.max_keys == 0 || (rows.is_empty() && !self.cache.cache_missing_keys) {
            if let Some(old) = self.cached.remove(&key) {
                self.bytes -= cached_bytes(&key, &old);
            }
            return;
        }
        let entry = CachedKey {
            rows,
            written: now,
            accessed: now,
        };
        self.bytes += cached_bytes(&key, &entry);
        match self.cached.insert(key.clone(), entry) {
            Some(old) => self.bytes -= cached_bytes(&key, &old),
            None => self.order.push_back(key),
        }
        while self.cached.len() > self.cache.max_keys {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(old) = self.cached.remove(&oldest) {
                self.bytes -= cached_bytes(&oldest, &old);
            }
        }
    }
}

impl CachedKey {
    /// Whether `cache`'s expiry rules still let these rows be used at `now`.
    fn is_fresh(&self, cache: &LookupCache, now: Instant) -> bool {
        let within = |since: Instant, limit: Option<std::time::Duration>| {
            limit.is_none_or(|limit| now.duration_since(since) < limit)
        };
        within(self.written, cache.expire_after_write)
            && within(self.accessed, cache.expire_after_access)
    }
}

fn cached_bytes(key: &[u8], cached: &CachedKey) -> usize {
    key.len()
        + 64
        + cached
            .rows
            .iter()
            .map(|r| r.row().as_ref().len() + 32)
            .sum::<usize>()
}

impl StreamOperator for LookupJoinOperator {
    fn name(&self) -> &str {
        "LookupJoin"
    }

    /// The table and its index (or the cache of looked-up keys), read again when the job
    /// restarts.
    fn state(&mut self) -> OperatorState<'_> {
        let bytes = match &self.table {
            TableSide::Loaded { table, index } => {
                table.get_array_memory_size()
                    + index
                        .iter()
                        .map(|(key, rows)| key.len() + 48 + rows.len() * 4)
                        .sum::<usize>()
            }
            TableSide::ByKey(keyed) => keyed.bytes,
        };
        OperatorState::Rebuilt { bytes }
    }
}

impl OneInputOperator for LookupJoinOperator {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        if let Some(joined) = self.join(&batch)? {
            out.emit(joined);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::compute::filter_record_batch;
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;
    use crate::test_plans::plan_script;

    /// A table of (k, name) answering lookups from rows that tests change, counting the
    /// keys asked.
    struct Rates {
        rows: Mutex<RecordBatch>,
        asked: AtomicUsize,
        cache: LookupCache,
    }

    impl Rates {
        fn new(rows: &[(i64, &str)], cache: LookupCache) -> Arc<Self> {
            Arc::new(Self {
                rows: Mutex::new(rates(rows)),
                asked: AtomicUsize::new(0),
                cache,
            })
        }
    }

    fn rates(rows: &[(i64, &str)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap()
    }

    impl KeyLookup for Rates {
        fn lookup(&self, keys: &[ArrayRef]) -> Result<RecordBatch> {
            self.asked.fetch_add(keys[0].len(), Ordering::Relaxed);
            let rows = self.rows.lock().unwrap().clone();
            let asked = keys[0].as_any().downcast_ref::<Int64Array>().unwrap();
            let k = rows
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            let mask: BooleanArray = k
                .iter()
                .map(|k| Some(asked.iter().any(|a| a == k)))
                .collect();
            Ok(filter_record_batch(&rows, &mask).unwrap())
        }

        fn cache(&self) -> LookupCache {
            self.cache
        }
    }

    fn join_node(join: &str) -> LookupJoinNode {
        let plan = plan_script(&format!(
            "CREATE TABLE s (k BIGINT, v BIGINT, proc AS PROCTIME()) WITH ('connector' = 'kafka', 'topic' = 's');
             CREATE TABLE rates (k BIGINT, name STRING) WITH ('connector' = 'filesystem', 'path' = '/tmp/rates');
             SELECT s.v, r.name FROM s {join} rates FOR SYSTEM_TIME AS OF s.proc AS r ON s.k = r.k;"
        ));
        fn find(node: &StreamNode) -> Option<LookupJoinNode> {
            match node {
                StreamNode::LookupJoin(join) => Some(join.clone()),
                other => other.inputs().into_iter().find_map(find),
            }
        }
        find(&plan.root).expect("a lookup join")
    }

    fn stream(rows: &[(Option<i64>, i64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap()
    }

    /// `k,v,name` of each joined row, sorted.
    fn joined(
        node: &LookupJoinNode,
        operator: &mut LookupJoinOperator,
        rows: &[(Option<i64>, i64)],
    ) -> Vec<String> {
        let given = stream(rows);
        // The stream's columns as the plan's input schema has them (others NULL).
        let schema = Arc::new(node.input_schema.as_arrow().clone());
        let columns = schema
            .fields()
            .iter()
            .map(|f| match f.name().as_str() {
                "k" => given.column(0).clone(),
                "v" => given.column(1).clone(),
                _ => new_null_array(f.data_type(), given.num_rows()),
            })
            .collect();
        let input = RecordBatch::try_new(schema.clone(), columns).unwrap();
        let Some(out) = operator.join(&input).unwrap() else {
            return vec![];
        };
        let k = schema.index_of("k").unwrap();
        let v = schema.index_of("v").unwrap();
        let name = out.num_columns() - 1;
        let mut lines: Vec<String> = (0..out.num_rows())
            .map(|i| {
                let show = |c: usize| {
                    datafusion::arrow::util::display::array_value_to_string(out.column(c), i)
                        .unwrap()
                };
                format!("{},{},{}", show(k), show(v), show(name))
            })
            .collect();
        lines.sort();
        lines
    }

    #[test]
    fn without_a_cache_each_batch_asks_for_its_keys_once_and_sees_the_table_as_it_is() {
        let node = join_node("JOIN");
        let table = Rates::new(&[(1, "one"), (2, "two")], LookupCache::default());
        let mut join = LookupJoinOperator::by_key(&node, table.clone()).unwrap();
        let first = joined(
            &node,
            &mut join,
            &[(Some(1), 10), (Some(1), 11), (Some(3), 12), (None, 13)],
        );
        assert_eq!(first.len(), 2, "{first:?}");
        assert!(first.iter().all(|l| l.contains("one")), "{first:?}");
        // Keys 1 and 3, once each; NULL is never asked.
        assert_eq!(table.asked.load(Ordering::Relaxed), 2);
        *table.rows.lock().unwrap() = rates(&[(1, "uno"), (3, "three")]);
        let second = joined(&node, &mut join, &[(Some(1), 20), (Some(3), 21)]);
        assert!(second.iter().any(|l| l.contains("uno")), "{second:?}");
        assert!(second.iter().any(|l| l.contains("three")), "{second:?}");
        assert_eq!(table.asked.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn a_cached_key_is_not_asked_again_until_it_expires_and_the_cache_keeps_its_size() {
        let node = join_node("LEFT JOIN");
        let cache = LookupCache {
            max_keys: 2,
            expire_after_write: Some(Duration::from_millis(200)),
            expire_after_access: None,
            cache_missing_keys: true,
        };
        let table = Rates::new(&[(1, "one"), (2, "two")], cache);
        let mut join = LookupJoinOperator::by_key(&node, table.clone()).unwrap();
        joined(&node, &mut join, &[(Some(1), 10)]);
        joined(&node, &mut join, &[(Some(9), 11)]);
        assert_eq!(table.asked.load(Ordering::Relaxed), 2);
        *table.rows.lock().unwrap() = rates(&[(1, "uno"), (9, "nine")]);
        // Both answers (9: missing) come from the cache: stale, as Flink's cache is.
        let cached = joined(&node, &mut join, &[(Some(1), 20), (Some(9), 21)]);
        assert_eq!(table.asked.load(Ordering::Relaxed), 2);
        assert!(cached.iter().any(|l| l.ends_with(",one")), "{cached:?}");
        assert!(
            cached.iter().any(|l| l == "9,21,"),
            "left join pads: {cached:?}"
        );
        // A third key evicts the oldest (1): asked again, it is read fresh.
        joined(&node, &mut join, &[(Some(2), 30)]);
        assert_eq!(table.asked.load(Ordering::Relaxed), 3);
        let evicted = joined(&node, &mut join, &[(Some(1), 31)]);
        assert_eq!(table.asked.load(Ordering::Relaxed), 4);
        assert_eq!(evicted, ["1,31,uno"]);
        // Key 2 is cached (as missing) until it expires, then asked again.
        *table.rows.lock().unwrap() = rates(&[(2, "two")]);
        assert_eq!(joined(&node, &mut join, &[(Some(2), 40)]), ["2,40,"]);
        assert_eq!(table.asked.load(Ordering::Relaxed), 4);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(joined(&node, &mut join, &[(Some(2), 41)]), ["2,41,two"]);
        assert_eq!(table.asked.load(Ordering::Relaxed), 5);
    }
}
