//! [`KeyedRowLog`]: the rows one input of an interval join keeps, in arrival order, found
//! by key and expired oldest first.
//!
//! Rows are numbered as they arrive. A hash table maps each key to its newest row, and
//! each row names the row before it with the same key, so the rows of a key are a chain
//! from newest to oldest; a chain ends at a row that has expired. Expiring is popping rows
//! off the front while they are older than the bound, so it costs the rows it drops, not
//! the rows it keeps; a batch is dropped once its last row is.
//!
//! A row that is not old yet stops the rows behind it from being popped, even old ones (a
//! row far in the future would stop them all). The log is therefore compacted — its
//! rows that are still needed copied out and indexed again — whenever it has doubled
//! since the last compaction and at least half of it has expired, which keeps it within
//! twice what is needed at an amortized cost of one copy per row.

use std::collections::{BTreeSet, VecDeque};
use std::hash::BuildHasher;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::interleave_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::row::{Row, RowConverter, Rows};
use datafusion::common::hash_utils::RandomState;
use hashbrown::HashTable;

/// Where a held row is: its number in arrival order.
pub type RowNumber = u64;

/// The end of a chain of rows with equal keys.
const NO_ROW: RowNumber = RowNumber::MAX;

/// How keys are hashed (a seed of its own: the hash exchange in front of the join routes
/// by a hash of the same keys, so reusing its seed would put them all in a few buckets).
const KEY_HASH: RandomState = RandomState::with_seed(0x4a_4f_49_4e);

/// Rows held below this many are never compacted (a copy would save nothing). Tests use a
/// few, so the joins' tests compact too.
const MIN_COMPACTION_ROWS: usize = if cfg!(test) { 8 } else { 1024 };

/// The hash a key's encoded bytes are found by; both inputs of a join use the same one.
pub fn key_hash(key: Row<'_>) -> u64 {
    KEY_HASH.hash_one(key.data())
}

/// A batch of held rows and their keys in the row format.
#[derive(Debug)]
struct LoggedBatch {
    rows: RecordBatch,
    keys: Rows,
    /// The number of its first row.
    first: RowNumber,
}

impl LoggedBatch {
    fn end(&self) -> RowNumber {
        self.first + self.rows.num_rows() as RowNumber
    }
}

/// What the log knows of each held row besides its columns.
#[derive(Debug, Clone, Copy)]
struct LoggedRow {
    time: i64,
    hash: u64,
    /// The row before it with the same key, or [`NO_ROW`].
    older: RowNumber,
}

/// Rows held in arrival order and found by key; see the module docs.
#[derive(Debug, Default)]
pub struct KeyedRowLog {
    batches: VecDeque<LoggedBatch>,
    /// Row `first + i` is `rows[i]`.
    rows: VecDeque<LoggedRow>,
    first: RowNumber,
    /// For each key held: its hash and its newest row.
    newest: HashTable<(u64, RowNumber)>,
    /// Outer inputs: held rows not matched yet, by time (so they expire in time order).
    unmatched: BTreeSet<(i64, RowNumber)>,
    /// Rows held right after the last compaction (or the last look for one).
    rows_at_compaction: usize,
}

impl KeyedRowLog {
    /// Bytes of the held rows, their keys and the log's own bookkeeping.
    pub fn size(&self) -> usize {
        let batches: usize = self
            .batches
            .iter()
            .map(|b| b.rows.get_array_memory_size() + b.keys.size())
            .sum();
        batches
            + self.rows.capacity() * std::mem::size_of::<LoggedRow>()
            + self.newest.capacity() * (std::mem::size_of::<(u64, RowNumber)>() + 1)
            + self.unmatched.len() * std::mem::size_of::<(i64, RowNumber)>() * 2
    }

    /// Where held row `number` is: the place of its batch in `batches`, and its index
    /// in that batch.
    fn locate(batches: &VecDeque<LoggedBatch>, number: RowNumber) -> (usize, usize) {
        let at = batches.partition_point(|b| b.end() <= number);
        (at, (number - batches[at].first) as usize)
    }

    fn key_of(batches: &VecDeque<LoggedBatch>, number: RowNumber) -> Row<'_> {
        let (at, row) = Self::locate(batches, number);
        batches[at].keys.row(row)
    }

    /// Holds every row of `rows`: `keys` are their keys (none NULL), `hashes` the keys'
    /// [`key_hash`]es and `times` the rows' event times. Returns the number of the first.
    pub fn push(
        &mut self,
        rows: RecordBatch,
        keys: Rows,
        hashes: &[u64],
        times: &[i64],
    ) -> RowNumber {
        let count = rows.num_rows();
        debug_assert!(keys.num_rows() == count && hashes.len() == count && times.len() == count);
        let first = self.first + self.rows.len() as RowNumber;
        if count == 0 {
            return first;
        }
        self.batches.push_back(LoggedBatch { rows, keys, first });
        let batches = &self.batches;
        let Some(batch) = batches.back() else {
            return first;
        };
        self.rows.reserve(count);
        for (i, (&time, &hash)) in times.iter().zip(hashes).enumerate() {
            let number = first + i as RowNumber;
            let key = batch.keys.row(i);
            let same_key =
                |&(h, newest): &(u64, RowNumber)| h == hash && Self::key_of(batches, newest) == key;
            let older = match self.newest.find_mut(hash, same_key) {
                Some((_, newest)) => std::mem::replace(newest, number),
                None => {
                    self.newest.insert_unique(hash, (hash, number), |&(h, _)| h);
                    NO_ROW
                }
            };
            self.rows.push_back(LoggedRow { time, hash, older });
        }
        first
    }

    /// Calls `visit(row, time)` for every held row whose key is `key` (`hash` its
    /// [`key_hash`]), newest first.
    pub fn for_each_match(&self, key: Row<'_>, hash: u64, mut visit: impl FnMut(RowNumber, i64)) {
        let batches = &self.batches;
        let same_key =
            |&(h, newest): &(u64, RowNumber)| h == hash && Self::key_of(batches, newest) == key;
        let Some(&(_, newest)) = self.newest.find(hash, same_key) else {
            return;
        };
        let mut number = newest;
        while number != NO_ROW && number >= self.first {
            let row = self.rows[(number - self.first) as usize];
            visit(number, row.time);
            number = row.older;
        }
    }

    /// The rows `numbers` (in that order, all held) as one batch of `schema`.
    pub fn gather(
        &self,
        schema: &SchemaRef,
        numbers: &[RowNumber],
    ) -> std::result::Result<RecordBatch, ArrowError> {
        if numbers.is_empty() {
            return Ok(RecordBatch::new_empty(schema.clone()));
        }
        let mut sources: Vec<&RecordBatch> = Vec::new();
        // Position in `sources` of each batch used, by its place in `batches`.
        let mut positions: Vec<Option<usize>> = vec![None; self.batches.len()];
        let mut indices = Vec::with_capacity(numbers.len());
        for &number in numbers {
            if number < self.first || number >= self.first + self.rows.len() as RowNumber {
                return Err(ArrowError::ComputeError(format!(
                    "row {number} is no longer held"
                )));
            }
            let (at, row) = Self::locate(&self.batches, number);
            let position = *positions[at].get_or_insert_with(|| {
                sources.push(&self.batches[at].rows);
                sources.len() - 1
            });
            indices.push((position, row));
        }
        interleave_record_batch(&sources, &indices)
    }

    /// Every held row, oldest first, with whether it is still unmatched.
    pub fn held(&self) -> impl Iterator<Item = (RowNumber, bool)> + '_ {
        self.rows.iter().enumerate().map(|(i, row)| {
            let number = self.first + i as RowNumber;
            (number, self.unmatched.contains(&(row.time, number)))
        })
    }

    /// Remembers row `number` (held, at event time `time`) as not matched yet.
    pub fn unmatched(&mut self, number: RowNumber, time: i64) {
        self.unmatched.insert((time, number));
    }

    /// Row `number` (held, at event time `time`) has met a partner.
    pub fn matched(&mut self, number: RowNumber, time: i64) {
        self.unmatched.remove(&(time, number));
    }

    /// Takes the unmatched rows older than `keep_from` (no partner can come any more),
    /// oldest first; they stay held until [`KeyedRowLog::expire`].
    pub fn take_unmatched_before(&mut self, keep_from: i64) -> Vec<RowNumber> {
        let mut taken = Vec::new();
        while let Some(&(time, number)) = self.unmatched.first() {
            if time >= keep_from {
                break;
            }
            self.unmatched.pop_first();
            taken.push(number);
        }
        taken
    }

    /// Stops holding the rows older than `keep_from` that are at the front, and compacts
    /// the log if it has doubled and half of it has expired (see the module docs).
    /// `converter` encodes the keys (to copy them when compacting).
    pub fn expire(
        &mut self,
        keep_from: i64,
        converter: &RowConverter,
    ) -> std::result::Result<(), ArrowError> {
        while let Some(&row) = self.rows.front() {
            if row.time >= keep_from {
                break;
            }
            let number = self.first;
            if let Ok(entry) = self
                .newest
                .find_entry(row.hash, |&(_, newest)| newest == number)
            {
                entry.remove();
            }
            self.unmatched.remove(&(row.time, number));
            self.rows.pop_front();
            self.first += 1;
        }
        while self.batches.front().is_some_and(|b| b.end() <= self.first) {
            self.batches.pop_front();
        }
        if self.rows.is_empty() {
            self.newest.clear();
            self.newest.shrink_to(0, |&(h, _)| h);
        }
        let held = self.rows.len();
        if held >= MIN_COMPACTION_ROWS && held > 2 * self.rows_at_compaction {
            let expired = self.rows.iter().filter(|r| r.time < keep_from).count();
            if expired * 2 >= held {
                self.compact(keep_from, converter)?;
            }
            self.rows_at_compaction = self.rows.len();
        }
        Ok(())
    }

    /// Copies the rows at `keep_from` or later into one batch and holds only them.
    fn compact(
        &mut self,
        keep_from: i64,
        converter: &RowConverter,
    ) -> std::result::Result<(), ArrowError> {
        let Some(schema) = self.batches.front().map(|b| b.rows.schema()) else {
            return Ok(());
        };
        let kept: Vec<(RowNumber, LoggedRow)> = self
            .rows
            .iter()
            .enumerate()
            .filter(|(_, row)| row.time >= keep_from)
            .map(|(i, row)| (self.first + i as RowNumber, *row))
            .collect();
        let numbers: Vec<RowNumber> = kept.iter().map(|(number, _)| *number).collect();
        let rows = self.gather(&schema, &numbers)?;
        let mut keys = converter.empty_rows(kept.len(), 0);
        for &number in &numbers {
            keys.push(Self::key_of(&self.batches, number));
        }
        let times: Vec<i64> = kept.iter().map(|(_, row)| row.time).collect();
        let hashes: Vec<u64> = kept.iter().map(|(_, row)| row.hash).collect();
        let unmatched: Vec<bool> = kept
            .iter()
            .map(|&(number, row)| self.unmatched.contains(&(row.time, number)))
            .collect();
        let next = self.first + self.rows.len() as RowNumber;
        *self = KeyedRowLog {
            first: next,
            ..KeyedRowLog::default()
        };
        let first = self.push(rows, keys, &hashes, &times);
        for (i, (&time, unmatched)) in times.iter().zip(unmatched).enumerate() {
            if unmatched {
                self.unmatched(first + i as RowNumber, time);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::row::SortField;

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]))
    }

    /// Holds rows with keys `keys` at times `times`.
    fn push(log: &mut KeyedRowLog, converter: &RowConverter, keys: &[i64], times: &[i64]) {
        let column: Arc<dyn Array> = Arc::new(Int64Array::from(keys.to_vec()));
        let rows = RecordBatch::try_new(schema(), vec![column.clone()]).unwrap();
        let encoded = converter.convert_columns(&[column]).unwrap();
        let hashes: Vec<u64> = encoded.iter().map(key_hash).collect();
        let first = log.push(rows, encoded, &hashes, times);
        for (i, &time) in times.iter().enumerate() {
            log.unmatched(first + i as RowNumber, time);
        }
    }

    /// The times of the rows held under `key`, newest first.
    fn times_of(log: &KeyedRowLog, converter: &RowConverter, key: i64) -> Vec<i64> {
        let column: Arc<dyn Array> = Arc::new(Int64Array::from(vec![key]));
        let encoded = converter.convert_columns(&[column]).unwrap();
        let mut times = Vec::new();
        log.for_each_match(encoded.row(0), key_hash(encoded.row(0)), |_, t| {
            times.push(t)
        });
        times
    }

    fn converter() -> RowConverter {
        RowConverter::new(vec![SortField::new(DataType::Int64)]).unwrap()
    }

    #[test]
    fn rows_are_found_by_key_and_expire_from_the_oldest() {
        let converter = converter();
        let mut log = KeyedRowLog::default();
        push(&mut log, &converter, &[1, 2, 1], &[10, 11, 12]);
        push(&mut log, &converter, &[1, 3], &[13, 14]);
        assert_eq!(times_of(&log, &converter, 1), [13, 12, 10]);
        assert_eq!(times_of(&log, &converter, 4), Vec::<i64>::new());

        log.expire(12, &converter).unwrap();
        assert_eq!(log.rows.len(), 3);
        assert_eq!(times_of(&log, &converter, 1), [13, 12]);
        assert_eq!(times_of(&log, &converter, 2), Vec::<i64>::new());
        assert_eq!(log.newest.len(), 2, "key 2's entry left with its last row");
        assert_eq!(log.batches.len(), 2);

        log.expire(14, &converter).unwrap();
        assert_eq!(
            log.batches.len(),
            1,
            "the first batch went with its last row"
        );
        let rows = log.gather(&schema(), &[4]).unwrap();
        let keys = rows
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(keys.values().to_vec(), [3]);
        assert!(log.gather(&schema(), &[0]).is_err());
        log.expire(15, &converter).unwrap();
        assert_eq!(
            (log.rows.len(), log.newest.len(), log.batches.len()),
            (0, 0, 0)
        );
    }

    #[test]
    fn a_row_far_ahead_does_not_keep_the_expired_rows_behind_it() {
        let converter = converter();
        let mut log = KeyedRowLog::default();
        push(&mut log, &converter, &[7], &[1_000_000]);
        let mut kept_at_most = 0;
        for step in 0..100i64 {
            let times: Vec<i64> = (0..100).map(|i| step * 100 + i).collect();
            let keys: Vec<i64> = (0..100).map(|i| i % 5).collect();
            push(&mut log, &converter, &keys, &times);
            log.expire(step * 100, &converter).unwrap();
            kept_at_most = kept_at_most.max(log.rows.len());
        }
        // Needed: the row far ahead and the last step's 100 rows.
        assert!(
            kept_at_most <= 2 * MIN_COMPACTION_ROWS + 200,
            "{kept_at_most}"
        );
        assert_eq!(times_of(&log, &converter, 7), [1_000_000]);
        let key_2 = times_of(&log, &converter, 2);
        assert_eq!(key_2.iter().filter(|&&t| t >= 9_900).count(), 20);
        // The unmatched rows were carried over by compactions, renumbered.
        let unmatched = log.take_unmatched_before(i64::MAX);
        assert_eq!(unmatched.len(), log.rows.len());
        let rows = log.gather(&schema(), &unmatched).unwrap();
        let keys = rows
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(
            keys.value(keys.len() - 1),
            7,
            "the row far ahead is the newest"
        );
    }
}
