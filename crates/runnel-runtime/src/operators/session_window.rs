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

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, TimestampMillisecondArray, UInt32Array};
use datafusion::arrow::compute::kernels::cmp::gt_eq;
use datafusion::arrow::compute::{concat_batches, filter_record_batch, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};

use crate::error::{Result, RuntimeError};
use crate::message::{Message, Watermark};
use crate::metrics::JobMetrics;
use crate::operator::Operator;
use crate::operators::window_assign::{event_times, with_window_columns};
use crate::operators::LateRowsOutput;

/// One open session: `[start, end)`, `end` being the last row's time plus the gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Session {
    start: i64,
    end: i64,
}

/// Adds a row at `t` to a key's sessions (disjoint, sorted by start): it opens
/// `[t, t + gap)`, merged with every session it overlaps. Returns the merged session.
fn add_row(sessions: &mut Vec<Session>, t: i64, gap: i64) -> Session {
    let mut merged = Session {
        start: t,
        end: t.saturating_add(gap),
    };
    sessions.retain(|s| {
        let overlaps = s.start < merged.end && merged.start < s.end;
        if overlaps {
            merged.start = merged.start.min(s.start);
            merged.end = merged.end.max(s.end);
        }
        !overlaps
    });
    let at = sessions.partition_point(|s| s.start < merged.start);
    sessions.insert(at, merged);
    merged
}

/// Session windows per partition key, emitted when they close.
pub struct SessionWindowOperator {
    gap_ms: i64,
    time_column: usize,
    time_column_name: String,
    key_columns: Vec<usize>,
    /// Encodes partition keys as bytes; `None` without keys (one session stream).
    keys: Option<RowConverter>,
    sessions: HashMap<Box<[u8]>, Vec<Session>>,
    /// No open session ends before this (a lower bound; exact after each emission).
    earliest_end: i64,
    /// Rows of open sessions, in the input schema.
    pending: Vec<RecordBatch>,
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
            sessions: HashMap::new(),
            earliest_end: i64::MAX,
            pending: Vec::new(),
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

    /// Emits the rows of every session that ends at or before `watermark`.
    fn emit_closed(&mut self, watermark: Watermark, out: &mut Vec<Message>) -> Result<()> {
        let batch = concat_batches(&self.input_schema, &self.pending).map_err(arrow_error)?;
        self.pending.clear();
        let times = event_times(
            &batch,
            self.time_column,
            &self.time_column_name,
            "SessionWindow",
        )?;
        let keys = self.key_rows(&batch)?;
        let (mut emit, mut keep) = (Vec::new(), Vec::new());
        let (mut starts, mut ends) = (Vec::new(), Vec::new());
        for (row, &t) in times.values().iter().enumerate() {
            let key: &[u8] = keys.as_ref().map_or(&[], |k| k.row(row).data());
            let session = self
                .sessions
                .get(key)
                .and_then(|list| list.iter().find(|s| s.start <= t && t < s.end))
                .copied()
                .ok_or_else(|| {
                    RuntimeError::Build("SessionWindow: a held row has no session".into())
                })?;
            if session.end <= watermark {
                emit.push(row as u32);
                starts.push(session.start);
                ends.push(session.end);
            } else {
                keep.push(row as u32);
            }
        }
        // Forget closed sessions; find the next end.
        self.earliest_end = i64::MAX;
        self.sessions.retain(|_, list| {
            list.retain(|s| s.end > watermark);
            if let Some(first_end) = list.iter().map(|s| s.end).min() {
                self.earliest_end = self.earliest_end.min(first_end);
            }
            !list.is_empty()
        });
        if !keep.is_empty() {
            let kept = take_record_batch(&batch, &UInt32Array::from(keep)).map_err(arrow_error)?;
            self.pending.push(kept);
        }
        if emit.is_empty() {
            return Ok(());
        }
        let rows = take_record_batch(&batch, &UInt32Array::from(emit)).map_err(arrow_error)?;
        let output = with_window_columns(
            &self.schema,
            rows.columns().to_vec(),
            TimestampMillisecondArray::from(starts),
            TimestampMillisecondArray::from(ends),
        )
        .map_err(arrow_error)?;
        out.push(Message::Batch(output));
        Ok(())
    }
}

impl Operator for SessionWindowOperator {
    fn name(&self) -> &str {
        "SessionWindow"
    }

    fn process_batch(&mut self, mut batch: RecordBatch, out: &mut Vec<Message>) -> Result<()> {
        let mut times = event_times(
            &batch,
            self.time_column,
            &self.time_column_name,
            "SessionWindow",
        )?;
        if let Some(watermark) = self.watermark {
            let millis: Int64Array = times.reinterpret_cast();
            let on_time =
                gt_eq(&millis, &Int64Array::new_scalar(watermark)).map_err(arrow_error)?;
            let late = on_time.len() - on_time.true_count();
            if late > 0 {
                JobMetrics::add(&self.metrics.late_rows, late);
                if let Some(output) = &self.late_output {
                    output.emit_late(&batch, &on_time, out)?;
                }
                batch = filter_record_batch(&batch, &on_time).map_err(arrow_error)?;
                times = event_times(
                    &batch,
                    self.time_column,
                    &self.time_column_name,
                    "SessionWindow",
                )?;
            }
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let keys = self.key_rows(&batch)?;
        for (row, &t) in times.values().iter().enumerate() {
            let key: &[u8] = keys.as_ref().map_or(&[], |k| k.row(row).data());
            let sessions = match self.sessions.get_mut(key) {
                Some(sessions) => sessions,
                None => self.sessions.entry(key.into()).or_default(),
            };
            let merged = add_row(sessions, t, self.gap_ms);
            self.earliest_end = self.earliest_end.min(merged.end);
        }
        self.pending.push(batch);
        Ok(())
    }

    fn process_watermark(&mut self, watermark: Watermark, out: &mut Vec<Message>) -> Result<()> {
        if self.watermark.is_none_or(|w| watermark > w) {
            self.watermark = Some(watermark);
            if self.earliest_end <= watermark {
                self.emit_closed(watermark, out)?;
            }
        }
        out.push(Message::Watermark(watermark));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(sessions: &[Session]) -> Vec<(i64, i64)> {
        sessions.iter().map(|s| (s.start, s.end)).collect()
    }

    #[test]
    fn rows_closer_than_the_gap_share_a_session_and_a_bridge_merges_two() {
        let mut sessions = Vec::new();
        add_row(&mut sessions, 10, 5);
        add_row(&mut sessions, 12, 5);
        add_row(&mut sessions, 30, 5);
        assert_eq!(spans(&sessions), [(10, 17), (30, 35)]);
        // Exactly the gap apart: a new session (the first one ends at 17, exclusive).
        add_row(&mut sessions, 22, 5);
        assert_eq!(spans(&sessions), [(10, 17), (22, 27), (30, 35)]);
        // 26 reaches into the session at 30: the two merge; 16 extends the first.
        add_row(&mut sessions, 26, 5);
        add_row(&mut sessions, 16, 5);
        assert_eq!(spans(&sessions), [(10, 21), (22, 35)]);
        // An out-of-order row bridging everything.
        add_row(&mut sessions, 20, 5);
        assert_eq!(spans(&sessions), [(10, 35)]);
    }
}
