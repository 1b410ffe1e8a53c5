//! [`SessionWindowOperator`]: the runtime side of Flink's `SESSION` window table function.
//! Rows of one partition key less than the gap apart form a session `[first, last + gap)`;
//! a row can bridge two sessions and merge them, so a row's window is known only once its
//! session can no longer grow. The operator therefore holds rows until the watermark
//! reaches their session's end, then emits them with `window_start`, `window_end` and
//! `window_time` appended — exactly what `TUMBLE` would have appended had the sessions been
//! known upfront, so the window aggregate downstream is the same for every window kind.
//!
//! A row is late when its event time is below the watermark: it could belong to a session
//! already emitted. Late rows are dropped and counted (or routed to the late-data sink).

use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, TimestampMillisecondArray};
use datafusion::arrow::compute::kernels::cmp::gt_eq;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::hash_utils::RandomState;
use hashbrown::HashTable;
use smallvec::SmallVec;

use crate::error::{Result, RuntimeError};
use crate::message::Watermark;
use crate::metrics::JobMetrics;
use crate::operator::{
    CheckpointedState, Collector, OneInputOperator, OperatorState, StreamOperator,
};
use crate::operators::held_rows::{HeldRows, RowRef};
use crate::operators::late_rows::drop_late;
use crate::operators::window_assign::{compacted, event_times, with_window_columns};
use crate::operators::LateRowsOutput;

/// Rows per emitted batch when many sessions close at once.
const EMIT_BATCH_ROWS: usize = 65_536;

/// How partition keys (their row-format bytes) are hashed.
const KEY_HASH: RandomState = RandomState::with_seed(0x53_45_53_53);

/// One open session of `key`: `[start, end)`, `end` being the last row's time plus the
/// gap, and the rows it holds. `id` tells it from the sessions that held its slot before.
#[derive(Debug, Default)]
struct Session {
    id: u64,
    start: i64,
    end: i64,
    rows: Vec<RowRef>,
    /// The hash of its key, by which the key's [`KeySessions`] is found when it closes.
    key_hash: u64,
}

/// One key's open sessions, kept in the hash table itself: a short key's bytes and a
/// few slots need no allocation of their own, so a row's lookup reads one entry.
#[derive(Debug)]
struct KeySessions {
    hash: u64,
    key: SmallVec<[u8; 16]>,
    /// The slots of the key's open sessions (a few: sessions of one key are disjoint).
    slots: SmallVec<[u32; 2]>,
}

/// The open sessions of every key, closable in order of their end without scanning.
#[derive(Debug, Default)]
struct SessionIndex {
    /// Open sessions by slot: a session keeps its slot while it is open, and the slot of
    /// one closed or merged away is used again. A row costs one hash lookup (its key's).
    slots: Vec<Option<Session>>,
    free: Vec<u32>,
    /// Each key's open sessions.
    by_key: HashTable<KeySessions>,
    /// One `(end, id, slot)` per open session, `end` at most its end: a session that
    /// grows keeps its entry, which moves to its end when the watermark reaches it (so a
    /// row costs no reordering here). Entries of sessions merged into others are dropped
    /// then too (their slot is empty, or holds a session of another id).
    by_end: BTreeSet<(i64, u64, u32)>,
    next_id: u64,
    /// The rows of every open session, and the bytes of every key in `by_key`: kept as
    /// they change, so the state's size costs nothing to read.
    rows: usize,
    key_bytes: usize,
}

impl SessionIndex {
    /// Adds a row at `t` of `key`: it opens `[t, t + gap)`, merged with every session of
    /// the key it overlaps (a bridging row merges two). Sessions are half-open, so rows
    /// exactly `gap` apart stay apart.
    fn add_row(&mut self, key: &[u8], t: i64, gap: i64, row: RowRef) {
        let hash = KEY_HASH.hash_one(key);
        let entry = self
            .by_key
            .entry(hash, |e| e.key.as_slice() == key, |e: &KeySessions| e.hash);
        let slots_of_key = &mut match entry {
            hashbrown::hash_table::Entry::Occupied(open) => open.into_mut(),
            hashbrown::hash_table::Entry::Vacant(new) => {
                self.key_bytes += key.len();
                new.insert(KeySessions {
                    hash,
                    key: key.into(),
                    slots: SmallVec::new(),
                })
                .into_mut()
            }
        }
        .slots;
        let (mut start, mut end) = (t, t.saturating_add(gap));
        let mut merged: Option<u32> = None;
        let mut index = 0;
        while index < slots_of_key.len() {
            let slot = slots_of_key[index];
            let Some(session) = &self.slots[slot as usize] else {
                slots_of_key.swap_remove(index);
                continue;
            };
            if session.start < end && start < session.end {
                start = start.min(session.start);
                end = end.max(session.end);
                match merged {
                    None => {
                        merged = Some(slot);
                        index += 1;
                    }
                    Some(into) => {
                        // Move the smaller row list into the larger.
                        let mut absorbed = self.slots[slot as usize].take().unwrap_or_default();
                        self.free.push(slot);
                        if let Some(target) = &mut self.slots[into as usize] {
                            if absorbed.rows.len() > target.rows.len() {
                                std::mem::swap(&mut absorbed.rows, &mut target.rows);
                            }
                            target.rows.append(&mut absorbed.rows);
                        }
                        slots_of_key.swap_remove(index);
                    }
                }
            } else {
                index += 1;
            }
        }
        let slot = merged.unwrap_or_else(|| {
            let id = self.next_id;
            self.next_id += 1;
            let session = Session {
                id,
                key_hash: hash,
                ..Session::default()
            };
            let slot = match self.free.pop() {
                Some(slot) => {
                    self.slots[slot as usize] = Some(session);
                    slot
                }
                None => {
                    self.slots.push(Some(session));
                    (self.slots.len() - 1) as u32
                }
            };
            slots_of_key.push(slot);
            self.by_end.insert((end, id, slot));
            slot
        });
        if let Some(session) = &mut self.slots[slot as usize] {
            self.rows += 1;
            session.start = start;
            session.end = end;
            session.rows.push(row);
        }
    }

    /// A time no open session ends before (see `by_end`).
    fn earliest_end(&self) -> Option<i64> {
        self.by_end.first().map(|(end, _, _)| *end)
    }

    /// Removes and returns every session ending at or before `watermark`.
    fn close_until(&mut self, watermark: Watermark) -> Vec<Session> {
        let mut closed: Vec<Session> = Vec::new();
        while let Some(&(end, id, slot)) = self.by_end.first() {
            if end > watermark {
                break;
            }
            self.by_end.pop_first();
            let place = &mut self.slots[slot as usize];
            match place {
                Some(open) if open.id == id && open.end > watermark => {
                    self.by_end.insert((open.end, id, slot));
                    continue;
                }
                Some(open) if open.id == id => {}
                // Merged into another session.
                _ => continue,
            }
            let Some(session) = place.take() else {
                continue;
            };
            self.free.push(slot);
            let of_key = self
                .by_key
                .find_entry(session.key_hash, |e| e.slots.contains(&slot));
            if let Ok(mut of_key) = of_key {
                let sessions = of_key.get_mut();
                sessions.slots.retain(|open| *open != slot);
                if sessions.slots.is_empty() {
                    self.key_bytes -= sessions.key.len();
                    of_key.remove();
                }
            }
            self.rows -= session.rows.len();
            closed.push(session);
        }
        // In order of end, as they would close one watermark at a time.
        closed.sort_unstable_by_key(|session| (session.end, session.id));
        closed
    }

    /// The open sessions.
    fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.slots.iter().flatten()
    }

    /// Roughly the bytes the index holds (the rows themselves are in [`HeldRows`]).
    fn size(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Option<Session>>()
            + self.free.len() * 4
            + self.rows * std::mem::size_of::<RowRef>()
            + self.by_key.len() * std::mem::size_of::<KeySessions>()
            + self.key_bytes
    }
}

/// Session windows per partition key, emitted when they close.
pub struct SessionWindowOperator {
    gap_ms: i64,
    time_column: usize,
    time_column_name: String,
    key_columns: Vec<usize>,
    /// Encodes partition keys as bytes; `None` without keys (one session stream).
    keys: Option<RowConverter>,
    index: SessionIndex,
    held: HeldRows,
    input_schema: SchemaRef,
    schema: SchemaRef,
    watermark: Option<Watermark>,
    metrics: Arc<JobMetrics>,
    late_output: Option<LateRowsOutput>,
}

fn arrow_error(e: ArrowError) -> RuntimeError {
    RuntimeError::Operator {
        operator: "SessionWindow".into(),
        source: e.into(),
    }
}

impl SessionWindowOperator {
    #[allow(clippy::too_many_arguments)]
    pub fn try_new(
        gap_ms: i64,
        time_column: usize,
        key_columns: Vec<usize>,
        input_schema: SchemaRef,
        schema: SchemaRef,
        metrics: Arc<JobMetrics>,
        late_output: Option<LateRowsOutput>,
    ) -> Result<Self> {
        let keys = if key_columns.is_empty() {
            None
        } else {
            let fields = key_columns
                .iter()
                .map(|&i| SortField::new(input_schema.field(i).data_type().clone()))
                .collect();
            Some(RowConverter::new(fields).map_err(arrow_error)?)
        };
        Ok(Self {
            gap_ms,
            time_column,
            time_column_name: input_schema.field(time_column).name().clone(),
            key_columns,
            keys,
            index: SessionIndex::default(),
            held: HeldRows::default(),
            input_schema,
            schema,
            watermark: None,
            metrics,
            late_output,
        })
    }

    /// The rows' partition keys as bytes (`None` without keys).
    fn key_rows(&self, batch: &RecordBatch) -> Result<Option<Rows>> {
        let Some(converter) = &self.keys else {
            return Ok(None);
        };
        let columns: Vec<ArrayRef> = self
            .key_columns
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        converter
            .convert_columns(&columns)
            .map(Some)
            .map_err(arrow_error)
    }

    /// Emits the rows of every session that ends at or before `watermark`, in batches of
    /// about [`EMIT_BATCH_ROWS`] (so closing many sessions at once needs little memory).
    fn emit_closed(&mut self, watermark: Watermark, out: &mut Collector) -> Result<()> {
        let closed = self.index.close_until(watermark);
        let mut sessions = closed.as_slice();
        while !sessions.is_empty() {
            let mut rows = 0;
            let count = sessions
                .iter()
                .take_while(|s| {
                    let fits = rows == 0 || rows + s.rows.len() <= EMIT_BATCH_ROWS;
                    rows += s.rows.len();
                    fits
                })
                .count();
            let (chunk, rest) = sessions.split_at(count);
            self.emit_sessions(chunk, out)?;
            sessions = rest;
        }
        Ok(())
    }

    /// Emits the rows of `sessions` as one batch, with their bounds appended.
    fn emit_sessions(&mut self, sessions: &[Session], out: &mut Collector) -> Result<()> {
        let total: usize = sessions.iter().map(|s| s.rows.len()).sum();
        let (mut refs, mut starts, mut ends) = (
            Vec::with_capacity(total),
            Vec::with_capacity(total),
            Vec::with_capacity(total),
        );
        for session in sessions {
            refs.extend_from_slice(&session.rows);
            starts.extend(std::iter::repeat_n(session.start, session.rows.len()));
            ends.extend(std::iter::repeat_n(session.end, session.rows.len()));
        }
        let rows = self
            .held
            .gather(&self.input_schema, &refs)
            .map_err(arrow_error)?;
        self.held.release(&refs);
        let output = with_window_columns(
            &self.schema,
            rows.columns().to_vec(),
            TimestampMillisecondArray::from(starts),
            TimestampMillisecondArray::from(ends),
        )
        .map_err(arrow_error)?;
        out.emit(output);
        Ok(())
    }
}

impl StreamOperator for SessionWindowOperator {
    fn name(&self) -> &str {
        "SessionWindow"
    }

    fn state(&mut self) -> OperatorState<'_> {
        OperatorState::Checkpointed(self)
    }
}

impl CheckpointedState for SessionWindowOperator {
    fn size(&self) -> usize {
        self.held.size() + self.index.size()
    }

    /// The rows of every open session, and the watermark.
    fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        let refs: Vec<RowRef> = self
            .index
            .sessions()
            .flat_map(|s| s.rows.iter().copied())
            .collect();
        let rows = self
            .held
            .gather(&self.input_schema, &refs)
            .map_err(arrow_error)?;
        crate::checkpoint::tag(rows, "watermark", self.watermark).map(Some)
    }

    /// Sessions are a function of their rows: holding the rows again rebuilds them.
    fn restore(&mut self, state: RecordBatch) -> Result<()> {
        let watermark = crate::checkpoint::tagged(&state, "watermark");
        let rows = RecordBatch::try_new(self.input_schema.clone(), state.columns().to_vec())
            .map_err(arrow_error)?;
        self.watermark = None;
        self.process_batch(rows, &mut Collector::default())?;
        self.watermark = watermark;
        Ok(())
    }
}

impl OneInputOperator for SessionWindowOperator {
    fn process_batch(&mut self, mut batch: RecordBatch, out: &mut Collector) -> Result<()> {
        let name = "SessionWindow";
        let mut times = event_times(&batch, self.time_column, &self.time_column_name, name)?;
        if let Some(watermark) = self.watermark {
            let millis: Int64Array = times.reinterpret_cast();
            let on_time =
                gt_eq(&millis, &Int64Array::new_scalar(watermark)).map_err(arrow_error)?;
            let output = self.late_output.as_ref();
            if let Some(kept) = drop_late(&batch, &on_time, &self.metrics, output, out)? {
                batch = kept;
                times = event_times(&batch, self.time_column, &self.time_column_name, name)?;
            }
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let keys = self.key_rows(&batch)?;
        let batch = compacted(&batch).map_err(|source| RuntimeError::Operator {
            operator: name.into(),
            source,
        })?;
        let id = self.held.push(batch);
        for (row, &t) in times.values().iter().enumerate() {
            let key: &[u8] = keys.as_ref().map_or(&[], |k| k.row(row).data());
            self.index.add_row(key, t, self.gap_ms, (id, row as u32));
        }
        Ok(())
    }

    fn process_watermark(
        &mut self,
        watermark: Watermark,
        out: &mut Collector,
    ) -> Result<Option<Watermark>> {
        if self.watermark.is_none_or(|w| watermark > w) {
            self.watermark = Some(watermark);
            if self
                .index
                .earliest_end()
                .is_some_and(|end| end <= watermark)
            {
                self.emit_closed(watermark, out)?;
            }
        }
        Ok(Some(watermark))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(index: &SessionIndex, key: &[u8]) -> Vec<(i64, i64, usize)> {
        let hash = KEY_HASH.hash_one(key);
        let of_key = index.by_key.find(hash, |e| e.key.as_slice() == key);
        let mut spans: Vec<(i64, i64, usize)> = of_key.map_or(vec![], |sessions| {
            sessions
                .slots
                .iter()
                .filter_map(|slot| index.slots[*slot as usize].as_ref())
                .map(|s| (s.start, s.end, s.rows.len()))
                .collect()
        });
        spans.sort();
        spans
    }

    #[test]
    fn rows_closer_than_the_gap_share_a_session_and_a_bridge_merges_two() {
        let mut index = SessionIndex::default();
        let mut row = 0;
        let mut add = |index: &mut SessionIndex, key: &[u8], t| {
            row += 1;
            index.add_row(key, t, 5, (0, row));
        };
        add(&mut index, b"a", 10);
        add(&mut index, b"a", 12);
        add(&mut index, b"a", 30);
        add(&mut index, b"b", 11);
        assert_eq!(spans(&index, b"a"), [(10, 17, 2), (30, 35, 1)]);
        // Exactly the gap apart: a new session (the first one ends at 17, exclusive).
        add(&mut index, b"a", 22);
        assert_eq!(spans(&index, b"a"), [(10, 17, 2), (22, 27, 1), (30, 35, 1)]);
        // 26 reaches into the session at 30: the two merge; 16 extends the first.
        add(&mut index, b"a", 26);
        add(&mut index, b"a", 16);
        assert_eq!(spans(&index, b"a"), [(10, 21, 3), (22, 35, 3)]);
        // Closing by end: b's [11, 16) first, then a's [10, 21). The earliest end known
        // is a's first session's first, 15: it has grown since.
        assert_eq!(index.earliest_end(), Some(15));
        assert!(index.close_until(15).is_empty());
        assert_eq!(index.earliest_end(), Some(16));
        let closed = index.close_until(21);
        assert_eq!(closed.len(), 2);
        assert_eq!(spans(&index, b"b"), []);
        // An out-of-order row bridging what is left.
        add(&mut index, b"a", 20);
        assert_eq!(spans(&index, b"a"), [(20, 35, 4)]);
        // What is left closes at its end, the entry of the session merged away dropped.
        assert!(index.close_until(34).is_empty());
        assert_eq!(index.close_until(35).len(), 1);
        assert!(index.by_end.is_empty() && index.sessions().next().is_none());
        assert_eq!((index.rows, index.key_bytes), (0, 0));
    }

    #[test]
    fn a_slot_used_again_is_not_closed_by_the_entry_of_the_session_it_held() {
        let mut index = SessionIndex::default();
        index.add_row(b"a", 10, 5, (0, 0));
        index.add_row(b"a", 18, 5, (0, 1));
        // 14 bridges [10, 15) and [18, 23): the second's slot is freed, its end entry
        // (23) left behind.
        index.add_row(b"a", 14, 5, (0, 2));
        assert_eq!(spans(&index, b"a"), [(10, 23, 3)]);
        // b's session takes the freed slot.
        index.add_row(b"b", 100, 5, (0, 3));
        let closed = index.close_until(23);
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].start, closed[0].end), (10, 23));
        assert_eq!(spans(&index, b"b"), [(100, 105, 1)]);
        assert_eq!(index.close_until(105).len(), 1);
        assert_eq!((index.rows, index.key_bytes), (0, 0));
        assert!(index.sessions().next().is_none());
    }
}
