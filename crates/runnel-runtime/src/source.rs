//! The [`Source`] trait that connectors implement, and the task that turns a source's
//! records into a stream of batches, watermarks and barriers.
//!
//! `SourceTask` is the read loop; it hands rows to [`SourceRows`] (computed columns,
//! the query's columns), time to `WatermarkGenerator` (the table's watermark per
//! partition, processing time, idleness) and checkpoint triggers to `BarrierInjector`
//! (the source's position and a barrier for every checkpoint, in order), and sends what
//! comes out to the operators chained after it (`SourceOutput`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, TimestampMillisecondArray};
use datafusion::arrow::compute::kernels::aggregate::max;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;
use runnel_sql::SourceNode;
use tokio::sync::mpsc;

use crate::checkpoint::{CheckpointCoordinator, CheckpointId, SourceState};
use crate::config::JobConfig;
use crate::error::{Result, RuntimeError};
use crate::job::SourceOutput;
use crate::message::{Message, Watermark, WATERMARK_END};
use crate::metrics::JobMetrics;
use crate::operators::ProjectionOperator;
use crate::processing_time::{system_now, ProcessingTime};
use crate::side_output::RowQueue;
use crate::watermark::WatermarkTracker;
use crate::watermark_alignment::AlignedReader;

/// Rows a source read from one of its partitions, in the table's physical schema.
#[derive(Debug, Clone)]
pub struct SourceBatch {
    pub partition: usize,
    pub batch: RecordBatch,
    /// The partition's offset after these rows (the next to read), when the source can
    /// resume from an offset (checkpoints record it).
    pub next_offset: Option<i64>,
    /// Records among these that could not be decoded, for the table's dead-letter table
    /// (in [`crate::dead_letter::dead_letter_schema`]).
    pub dead_letters: Option<RecordBatch>,
}

/// What a source reports.
#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// Rows from one partition.
    Batch(SourceBatch),
    /// A partition has no more rows (bounded reads); it stops holding the watermark back.
    PartitionFinished(usize),
    /// A partition had no rows for the table's idle timeout; it stops holding the
    /// watermark back until its next rows.
    PartitionIdle(usize),
    /// A partition's watermark moves to `watermark` (a source that knows its event-time
    /// progress, e.g. a replayed script); it never moves a watermark back.
    Watermark { partition: usize, watermark: i64 },
    /// The processing clock reads `now` (ms since the epoch): sources that replay time
    /// (see [`Source::replays_clock`]) drive the job's processing clock with these.
    Clock(i64),
}

/// A connector's reader: yields decoded rows, one partition at a time.
///
/// Rows of one partition arrive in order. A bounded source returns `Ok(None)` once every
/// partition is exhausted; an unbounded one never does. Records that cannot be decoded
/// are either an error (naming topic/file, partition, offset/line and reason) or, when the
/// table allows it, skipped and counted in [`JobMetrics::bad_records`].
#[async_trait]
pub trait Source: Send {
    /// How many partitions this source reads; the watermark waits for all of them.
    fn partitions(&self) -> usize;

    /// The next event, or `None` when a bounded source is done.
    async fn next_event(&mut self) -> Result<Option<SourceEvent>>;

    /// Whether this source drives the processing clock with [`SourceEvent::Clock`]; if
    /// not, the job reads the system clock.
    fn replays_clock(&self) -> bool {
        false
    }
}

/// The processing clock a source task reads.
#[derive(Debug, Clone, Copy)]
enum ProcessingClock {
    System,
    /// Driven by the source's [`SourceEvent::Clock`] events; unknown before the first.
    Replayed(Option<i64>),
}

impl ProcessingClock {
    /// Milliseconds since the epoch.
    fn now(&self) -> Option<i64> {
        match self {
            ProcessingClock::System => Some(system_now()),
            ProcessingClock::Replayed(now) => *now,
        }
    }
}

/// How a source computes a batch's watermark candidate: the largest value of the table's
/// watermark expression over the batch's rows.
pub enum WatermarkExpr {
    /// `col` or `col - INTERVAL '...'` of a fixed length: the column's maximum less the
    /// delay — one `max` kernel over the column, no per-row date arithmetic.
    ColumnLess { column: usize, delay_ms: i64 },
    /// Any other expression, evaluated on every row.
    General(Arc<dyn PhysicalExpr>),
}

impl WatermarkExpr {
    /// The candidate of `table`'s `watermark` declaration.
    pub fn new(watermark: &runnel_sql::WatermarkDef, table: &runnel_sql::TableDef) -> Result<Self> {
        use datafusion::common::ScalarValue;
        use datafusion::logical_expr::{BinaryExpr, Operator};
        let delay_ms = |value: &ScalarValue| match value {
            ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
                Some(v.days as i64 * 86_400_000 + v.nanoseconds / 1_000_000)
            }
            ScalarValue::IntervalDayTime(Some(v)) => {
                Some(v.days as i64 * 86_400_000 + v.milliseconds as i64)
            }
            _ => None,
        };
        let column = |expr: &Expr| match expr {
            Expr::Column(c) => table.schema.index_of(&c.name).ok(),
            _ => None,
        };
        let fast = match &watermark.expr {
            expr @ Expr::Column(_) => column(expr).map(|c| (c, 0)),
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Minus,
                right,
            }) => match right.as_ref() {
                Expr::Literal(value, _) => column(left).zip(delay_ms(value)),
                _ => None,
            },
            _ => None,
        };
        Ok(match fast {
            Some((column, delay_ms)) => WatermarkExpr::ColumnLess { column, delay_ms },
            None => WatermarkExpr::General(
                crate::expr::compile(
                    std::slice::from_ref::<Expr>(&watermark.expr),
                    &table.df_schema(),
                )?
                .remove(0),
            ),
        })
    }

    /// The largest watermark the batch's rows give (`None` when every value is NULL).
    pub fn candidate(&self, batch: &RecordBatch) -> datafusion::error::Result<Option<i64>> {
        Ok(match self {
            WatermarkExpr::ColumnLess { column, delay_ms } => {
                let millis = crate::operators::as_millis(batch.column(*column))?;
                largest(&millis).map(|t| t.saturating_sub(*delay_ms))
            }
            WatermarkExpr::General(expr) => {
                let values = expr.evaluate(batch)?.into_array(batch.num_rows())?;
                largest(&crate::operators::as_millis(&values)?)
            }
        })
    }
}

/// The largest of `times` (`None` when all are NULL), the watermark of every batch a
/// source reads. Arrow's `max` folds integers in one chain, each comparison waiting on
/// the last; eight running maxima let the CPU overlap them. (Compiled for AVX2 it was
/// no faster: over a batch not in cache the loop waits on memory.)
fn largest(times: &TimestampMillisecondArray) -> Option<i64> {
    if times.null_count() > 0 || times.is_empty() {
        return max(times);
    }
    Some(largest_in_lanes(times.values()))
}

/// The largest of `values` (`i64::MIN` for none), over eight independent lanes.
fn largest_in_lanes(values: &[i64]) -> i64 {
    const LANES: usize = 8;
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    let mut lanes = [i64::MIN; LANES];
    for chunk in chunks {
        for (lane, value) in lanes.iter_mut().zip(chunk) {
            *lane = (*lane).max(*value);
        }
    }
    lanes
        .into_iter()
        .chain(rest.iter().copied())
        .fold(i64::MIN, i64::max)
}

/// How often a source task reads the system clock when something depends on it.
const CLOCK_TICK: Duration = Duration::from_millis(200);

/// A source's events, plus a tick of the system clock every [`CLOCK_TICK`] when asked.
/// Ticking needs the source read on its own task (its `next_event` may not be safe to
/// cancel); without ticks it is read directly.
enum EventFeed {
    Direct(Box<dyn Source>),
    Ticking {
        events: mpsc::Receiver<Result<Option<SourceEvent>>>,
        ticks: tokio::time::Interval,
        /// Reads the source; stopped with the feed.
        _reader: AbortOnDrop,
    },
}

/// Stops a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl EventFeed {
    fn new(mut source: Box<dyn Source>, tick: bool) -> Self {
        if !tick {
            return EventFeed::Direct(source);
        }
        let (sender, events) = mpsc::channel(4);
        let reader = tokio::spawn(async move {
            loop {
                let event = source.next_event().await;
                let last = !matches!(event, Ok(Some(_)));
                if sender.send(event).await.is_err() || last {
                    break;
                }
            }
        });
        let mut ticks = tokio::time::interval(CLOCK_TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        EventFeed::Ticking {
            events,
            ticks,
            _reader: AbortOnDrop(reader),
        }
    }

    /// The next event; `Ok(Some(None))` is a clock tick; `Ok(None)` the end.
    async fn next(&mut self) -> Result<Option<Option<SourceEvent>>> {
        match self {
            EventFeed::Direct(source) => Ok(source.next_event().await?.map(Some)),
            EventFeed::Ticking {
                events,
                ticks,
                _reader: _,
            } => tokio::select! {
                event = events.recv() => match event {
                    Some(event) => Ok(event?.map(Some)),
                    None => Ok(None),
                },
                _ = ticks.tick() => Ok(Some(None)),
            },
        }
    }
}

/// A batch's rows as the query sees them: the table's computed columns added, then only
/// the columns the query reads.
pub struct SourceRows {
    /// Computed columns, when the table declares some (`PROCTIME()` reads `clock`): the
    /// struct fields they read inside a `CASE` first, when they do (see
    /// [`runnel_sql::field_reads`]), then the columns.
    computed: Vec<ProjectionOperator>,
    projection: Option<Vec<usize>>,
    clock: ProcessingTime,
}

impl SourceRows {
    /// The steps from `node`'s table's physical rows to the rows `node` reads.
    pub fn new(node: &SourceNode) -> Result<Self> {
        let table = &node.table;
        let clock = ProcessingTime::default();
        // A changelog's batches carry the change column last, through every step.
        let changelog = table.is_changelog();
        let with_changes = |schema: datafusion::arrow::datatypes::SchemaRef| {
            if changelog {
                runnel_sql::changelog::with_change_column(&schema)
            } else {
                schema
            }
        };
        let mut computed = Vec::new();
        if table.has_computed_columns() {
            let physical = table.physical_df_schema();
            let schema = with_changes(table.schema.clone());
            match runnel_sql::field_reads::hoist_field_reads(&table.row_exprs, &physical)
                .map_err(|e| RuntimeError::Build(format!("table {}: {e}", table.name)))?
            {
                Some(hoisted) => {
                    let widened = with_changes(Arc::new(hoisted.widened.as_arrow().clone()));
                    computed.push(ProjectionOperator::try_new(
                        &hoisted.first,
                        &physical,
                        widened,
                        &clock,
                    )?);
                    computed.push(ProjectionOperator::try_new(
                        &hoisted.exprs,
                        &hoisted.widened,
                        schema,
                        &clock,
                    )?);
                }
                None => computed.push(ProjectionOperator::try_new(
                    &table.row_exprs,
                    &physical,
                    schema,
                    &clock,
                )?),
            }
        }
        let projection = node.projection.clone().map(|mut indices| {
            if changelog {
                indices.push(table.schema.fields().len());
            }
            indices
        });
        Ok(Self {
            computed,
            projection,
            clock,
        })
    }

    /// All of the table's columns (computed ones stamped at processing time `now`).
    pub fn full(&self, batch: RecordBatch, now: i64) -> datafusion::error::Result<RecordBatch> {
        self.clock.set(now);
        self.computed
            .iter()
            .try_fold(batch, |batch, step| step.project(&batch))
    }

    /// The columns the query reads.
    pub fn project(&self, full: RecordBatch) -> datafusion::error::Result<RecordBatch> {
        match &self.projection {
            Some(indices) => Ok(full.project(indices)?),
            None => Ok(full),
        }
    }
}

/// A source's watermark: per partition the largest value the table's watermark
/// expression took, the minimum over partitions (see [`WatermarkTracker`]); on processing
/// time, the processing clock. With `runnel.watermark.idle-advance`, the clock moves it
/// while every partition is idle.
struct WatermarkGenerator {
    /// `None` on processing time or without a declared watermark.
    expr: Option<WatermarkExpr>,
    tracker: WatermarkTracker,
    clock: ProcessingClock,
    processing_time: bool,
    /// The last processing-time watermark sent.
    processing_watermark: Watermark,
    idle_advance: bool,
    /// Whether the last state reported downstream was "idle".
    idle_sent: bool,
}

impl WatermarkGenerator {
    fn new(source: &dyn Source, node: &SourceNode, config: &JobConfig) -> Result<Self> {
        let expr = match &node.table.watermark {
            Some(w) if !node.processing_time => Some(WatermarkExpr::new(w, &node.table)?),
            _ => None,
        };
        let clock = if source.replays_clock() {
            ProcessingClock::Replayed(None)
        } else {
            ProcessingClock::System
        };
        Ok(Self {
            expr,
            tracker: WatermarkTracker::new(source.partitions()),
            clock,
            processing_time: node.processing_time,
            processing_watermark: Watermark::MIN,
            idle_advance: config.idle_watermark_advance,
            idle_sent: false,
        })
    }

    /// Whether something (processing time, the idle advance) needs the system clock read
    /// on a timer even when no record arrives.
    fn ticks(&self) -> bool {
        (self.idle_advance || self.processing_time) && matches!(self.clock, ProcessingClock::System)
    }

    /// Where a restored source's partitions stood; returns the watermark they give.
    fn restore(&mut self, state: &SourceState) -> Option<Watermark> {
        for (p, w) in state.watermarks.iter().enumerate() {
            if let Some(w) = w {
                self.tracker.update(p, *w);
            }
        }
        self.tracker.current()
    }

    /// The processing time now (unknown before a replayed clock's first reading).
    fn now(&self) -> Option<i64> {
        self.clock.now()
    }

    /// On processing time, the watermark to send before a batch read `now` (rows and
    /// `PROCTIME()` agree on it); none when the clock did not move.
    fn before_batch(&mut self, now: i64) -> Option<Watermark> {
        (self.processing_time && now > self.processing_watermark).then(|| {
            self.processing_watermark = now;
            now
        })
    }

    /// The watermark `full` (a batch of `partition` with all table columns) moves to.
    fn after_batch(
        &mut self,
        partition: usize,
        full: &RecordBatch,
    ) -> datafusion::error::Result<Option<Watermark>> {
        let candidate = match &self.expr {
            Some(expr) => expr.candidate(full)?,
            None => None,
        };
        Ok(candidate.and_then(|w| self.tracker.update(partition, w)))
    }

    /// What a non-batch event does to the watermark.
    fn on_event(&mut self, event: &SourceEvent) -> Option<Watermark> {
        match *event {
            SourceEvent::PartitionFinished(p) => self.tracker.finish_partition(p),
            SourceEvent::PartitionIdle(p) => self.tracker.mark_idle(p),
            SourceEvent::Watermark {
                partition,
                watermark,
            } => self.tracker.update(partition, watermark),
            SourceEvent::Clock(now) => {
                self.clock = ProcessingClock::Replayed(Some(now));
                None
            }
            SourceEvent::Batch(_) => None,
        }
    }

    /// The watermark to send after an event that moved it to `advanced` (or a clock
    /// tick): on processing time the clock; with the idle advance, the clock's progress
    /// while every partition is idle.
    fn after_event(&mut self, advanced: Option<Watermark>) -> Option<Watermark> {
        if self.processing_time {
            let now = self.clock.now()?;
            return self.before_batch(now);
        }
        match self.clock.now().filter(|_| self.idle_advance) {
            Some(now) => self.tracker.advance_idle(now).or(advanced),
            None => advanced,
        }
    }

    /// True once when every partition went idle (so the readers next to this one, parallel
    /// subtasks, are not held back by it); again after it read something and went idle.
    fn became_idle(&mut self) -> bool {
        let idle = self.tracker.all_idle();
        let newly = idle && !self.idle_sent;
        self.idle_sent = idle;
        newly
    }

    fn partition_watermarks(&self) -> Vec<Option<Watermark>> {
        self.tracker.partition_watermarks()
    }
}

/// Sends checkpoint barriers into a source's output. On each trigger it records where
/// the source stands and sends `Barrier(n)` after the rows read so far, for every id up
/// to the trigger in order — none skipped, even those triggered before the source
/// started — because multi-input tasks align on equal ids.
struct BarrierInjector {
    /// Set when the job checkpoints.
    coordinator: Option<Arc<CheckpointCoordinator>>,
    triggers: Option<tokio::sync::watch::Receiver<CheckpointId>>,
    /// The source's number in the job's checkpoints.
    index: usize,
    last_barrier: CheckpointId,
}

impl BarrierInjector {
    fn new(coordinator: Option<Arc<CheckpointCoordinator>>, index: usize) -> Self {
        let mut triggers = coordinator.as_ref().map(|c| c.subscribe());
        if let Some(triggers) = &mut triggers {
            // Checkpoints triggered before this task started are sent at once.
            triggers.mark_changed();
        }
        Self {
            last_barrier: coordinator.as_ref().map_or(0, |c| c.first()),
            coordinator,
            triggers,
            index,
        }
    }

    /// The id of the next checkpoint triggered; waits forever when the job takes none.
    async fn triggered(&mut self) -> CheckpointId {
        let Some(triggers) = &mut self.triggers else {
            return std::future::pending().await;
        };
        match triggers.changed().await {
            Ok(()) => *triggers.borrow_and_update(),
            Err(_) => {
                self.triggers = None;
                std::future::pending().await
            }
        }
    }

    /// Fault injection: the first checkpoint once the job's sources read `after` rows.
    fn trigger_after_rows(&self, after: Option<u64>, metrics: &JobMetrics) {
        if let (Some(after), Some(coordinator)) = (after, &self.coordinator) {
            if metrics.rows_in.load(std::sync::atomic::Ordering::Relaxed) >= after {
                coordinator.trigger_once();
            }
        }
    }

    /// Sends the barriers up to `checkpoint`, each recording `state`. False once the
    /// downstream stopped.
    async fn inject(
        &mut self,
        checkpoint: CheckpointId,
        state: &SourceState,
        output: &mut SourceOutput,
    ) -> Result<bool> {
        while self.last_barrier < checkpoint {
            self.last_barrier += 1;
            if let Some(coordinator) = &self.coordinator {
                coordinator.add_source(self.last_barrier, self.index, state.clone());
            }
            if !output.send(Message::Barrier(self.last_barrier)).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The source ended in `state`: one last checkpoint after its last output, so a
    /// finished job that is started again (or a transaction still open) has nothing left
    /// to redo.
    async fn finish(&mut self, state: SourceState, output: &mut SourceOutput) -> Result<()> {
        let Some(coordinator) = self.coordinator.clone() else {
            return Ok(());
        };
        coordinator.source_finished(self.index, state.clone());
        let checkpoint = coordinator.trigger();
        let state = SourceState {
            finished: true,
            ..state
        };
        self.inject(checkpoint, &state, output).await?;
        Ok(())
    }
}

/// What the read loop waits for next.
enum Next {
    /// The job's sink, run in this task, has a timer tick or was told to stop.
    Sink(crate::job::SinkSignal),
    Checkpoint(CheckpointId),
    /// A reader paused for watermark alignment may read again.
    CaughtUp,
    /// An event; `None` is a clock tick.
    Event(Option<SourceEvent>),
    End,
}

/// Runs a [`Source`]: reads its events, shapes its rows, derives watermarks per
/// partition, injects barriers, and sends everything downstream.
pub(crate) struct SourceTask {
    pub source: Box<dyn Source>,
    pub node: SourceNode,
    pub metrics: Arc<JobMetrics>,
    pub config: JobConfig,
    /// Where what it reads goes: a channel, or the operators chained after it (and the
    /// job's sink, when this reader alone feeds it).
    pub output: SourceOutput,
    /// The source's number in the job (its place in checkpoints).
    pub index: usize,
    /// Set when the job checkpoints: on each trigger the task records its position and
    /// sends a barrier.
    pub checkpoints: Option<Arc<CheckpointCoordinator>>,
    /// Where a restored job's source stood.
    pub restored: Option<SourceState>,
    /// The reader's place in its watermark alignment group, when its table has one: it
    /// stops reading while it is ahead of the group's slowest reader by more than the
    /// drift allowed.
    pub alignment: Option<AlignedReader>,
    /// Where records the source could not decode go, for the sink task to write.
    pub dead_letters: RowQueue,
}

impl SourceTask {
    pub async fn run(self) -> Result<()> {
        let table = self.node.table.clone();
        let context = format!("source {}", table.name);
        let error = |source| RuntimeError::Operator {
            operator: context.clone(),
            source,
        };
        let rows = SourceRows::new(&self.node)?;
        let mut watermarks =
            WatermarkGenerator::new(self.source.as_ref(), &self.node, &self.config)?;
        let mut offsets: Vec<Option<i64>> = vec![None; self.source.partitions().max(1)];
        let mut output = self.output;
        if let Some(restored) = &self.restored {
            let watermark = watermarks.restore(restored);
            for (slot, offset) in offsets.iter_mut().zip(&restored.offsets) {
                *slot = *offset;
            }
            // Downstream saw this watermark before the checkpoint, but operators keep no
            // watermark of each input: sent again, it holds without waiting for new rows
            // (a join or union with a quiet side is not stalled; the sink reports it).
            if let Some(watermark) = watermark {
                if let Some(alignment) = &self.alignment {
                    alignment.advanced(watermark);
                }
                if !output.send(Message::Watermark(watermark)).await? {
                    return Ok(());
                }
            }
        }
        let mut barriers = BarrierInjector::new(self.checkpoints.clone(), self.index);
        let position = |offsets: &[Option<i64>], watermarks: &WatermarkGenerator| SourceState {
            table: table.name.clone(),
            offsets: offsets.to_vec(),
            watermarks: watermarks.partition_watermarks(),
            finished: false,
        };
        // The read in progress survives a barrier (it is not cancelled and restarted), so
        // a source need not be cancel-safe and a slow read completes. The feed is moved
        // into the read and handed back with its result.
        type Reading = std::pin::Pin<
            Box<
                dyn std::future::Future<Output = (EventFeed, Result<Option<Option<SourceEvent>>>)>
                    + Send,
            >,
        >;
        let read = |mut feed: EventFeed| -> Reading {
            Box::pin(async move {
                let event = feed.next().await;
                (feed, event)
            })
        };
        let mut in_flight: Reading = read(EventFeed::new(self.source, watermarks.ticks()));
        let alignment = self.alignment;
        loop {
            if self.metrics.memory.under_pressure() {
                tokio::time::sleep(crate::memory::PRESSURE_PAUSE).await;
            }
            let paused = alignment.as_ref().is_some_and(AlignedReader::is_ahead);
            let next = tokio::select! {
                biased;
                signal = output.signal() => Next::Sink(signal),
                checkpoint = barriers.triggered() => Next::Checkpoint(checkpoint),
                _ = async { if let Some(a) = &alignment { a.caught_up().await } }, if paused => {
                    Next::CaughtUp
                }
                (feed, event) = &mut in_flight, if !paused => {
                    in_flight = read(feed);
                    match event? {
                        Some(event) => Next::Event(event),
                        None => Next::End,
                    }
                }
            };
            let event = match next {
                Next::End => break,
                Next::CaughtUp => continue,
                Next::Sink(signal) => {
                    if output.on_signal(signal).await? {
                        return Ok(()); // the job stopped; the sink wrote what it held
                    }
                    continue;
                }
                Next::Checkpoint(checkpoint) => {
                    // Everything sent so far belongs to these checkpoints.
                    let state = position(&offsets, &watermarks);
                    if !barriers.inject(checkpoint, &state, &mut output).await? {
                        return Ok(());
                    }
                    continue;
                }
                Next::Event(event) => event,
            };
            let advanced = match event {
                Some(SourceEvent::Batch(SourceBatch {
                    partition,
                    batch,
                    next_offset,
                    dead_letters,
                })) => {
                    if let (Some(next), Some(slot)) = (next_offset, offsets.get_mut(partition)) {
                        *slot = Some(next);
                    }
                    // With the offsets that passed them: before the next barrier.
                    if let Some(letters) = dead_letters {
                        JobMetrics::add(&self.metrics.dead_letters, letters.num_rows());
                        self.dead_letters.push(letters);
                    }
                    if batch.num_rows() == 0 {
                        continue;
                    }
                    JobMetrics::add(&self.metrics.rows_in, batch.num_rows());
                    barriers.trigger_after_rows(
                        self.config.faults.checkpoint_after_rows,
                        &self.metrics,
                    );
                    let now = watermarks.now().unwrap_or(Watermark::MIN);
                    if let Some(w) = watermarks.before_batch(now) {
                        if let Some(alignment) = &alignment {
                            alignment.advanced(w);
                        }
                        if !output.send(Message::Watermark(w)).await? {
                            return Ok(());
                        }
                    }
                    let full = rows.full(batch, now).map_err(error)?;
                    let advanced = watermarks.after_batch(partition, &full).map_err(error)?;
                    let batch = rows.project(full).map_err(error)?;
                    if !output.send(Message::Batch(batch)).await? {
                        return Ok(()); // downstream stopped; it reports why
                    }
                    advanced
                }
                Some(other) => watermarks.on_event(&other),
                None => None, // a clock tick
            };
            if let Some(watermark) = watermarks.after_event(advanced) {
                if let Some(alignment) = &alignment {
                    alignment.advanced(watermark);
                }
                if !output.send(Message::Watermark(watermark)).await? {
                    return Ok(());
                }
            }
            if watermarks.became_idle() {
                if let Some(alignment) = &alignment {
                    alignment.step_aside();
                }
                if !output.send(Message::Idle).await? {
                    return Ok(());
                }
            }
        }
        // Done reading: the other readers of the group go on without waiting for it.
        drop(alignment);
        // A finished bounded source completes every window.
        // Downstream may have stopped (it reports why); an operator chained here may fail.
        if !output.send(Message::Watermark(WATERMARK_END)).await? {
            return Ok(());
        }
        barriers
            .finish(position(&offsets, &watermarks), &mut output)
            .await?;
        output.send(Message::End).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source with nothing (left) to read.
    struct Drained;

    #[async_trait]
    impl Source for Drained {
        fn partitions(&self) -> usize {
            2
        }

        async fn next_event(&mut self) -> Result<Option<SourceEvent>> {
            Ok(None)
        }
    }

    /// The messages a source task over [`Drained`] sends, restored from `restored`.
    async fn sent(restored: Option<SourceState>) -> Vec<Message> {
        let plan = crate::test_plans::plan_script(
            "CREATE TABLE t (v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)
               WITH ('connector' = 'filesystem', 'path' = 'unused');
             SELECT v FROM t;",
        );
        let mut node = plan.root;
        let source = loop {
            node = match node {
                runnel_sql::StreamNode::Source(source) => break source,
                runnel_sql::StreamNode::Projection { input, .. }
                | runnel_sql::StreamNode::Filter { input, .. } => *input,
                other => panic!("no source in {other:?}"),
            }
        };
        let (sender, mut receiver) = mpsc::channel(16);
        let task = SourceTask {
            source: Box::new(Drained),
            node: source,
            metrics: Arc::new(JobMetrics::default()),
            config: JobConfig::default(),
            output: SourceOutput::Channel(sender),
            index: 0,
            checkpoints: None,
            restored,
            alignment: None,
            dead_letters: RowQueue::default(),
        };
        task.run().await.unwrap();
        let mut messages = Vec::new();
        while let Some(message) = receiver.recv().await {
            messages.push(message);
        }
        messages
    }

    fn watermarks(messages: &[Message]) -> Vec<Watermark> {
        messages
            .iter()
            .filter_map(|m| match m {
                Message::Watermark(w) => Some(*w),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_restored_source_sends_the_watermark_it_had_before_reading() {
        let state = |watermarks: Vec<Option<i64>>| SourceState {
            table: "t".into(),
            offsets: vec![Some(10), Some(20)],
            watermarks,
            finished: false,
        };
        // The lower partition's watermark holds, before anything is read.
        let restored = sent(Some(state(vec![Some(7_000), Some(5_000)]))).await;
        assert_eq!(watermarks(&restored), [5_000, WATERMARK_END]);
        // A partition without one holds it back, as before the checkpoint.
        let partial = sent(Some(state(vec![Some(7_000), None]))).await;
        assert_eq!(watermarks(&partial), [WATERMARK_END]);
        let fresh = sent(None).await;
        assert_eq!(watermarks(&fresh), [WATERMARK_END]);
    }

    #[test]
    fn the_largest_time_equals_arrows_max() {
        let mut random = crate::test_random::Random(0x9e37_79b9_7f4a_7c15);
        for len in 0..40 {
            for with_nulls in [false, true] {
                let times: TimestampMillisecondArray = (0..len)
                    .map(|_| {
                        let value = random.next();
                        (!with_nulls || !value.is_multiple_of(3))
                            .then_some(value as i64 >> (value % 50))
                    })
                    .collect();
                assert_eq!(largest(&times), max(&times), "{times:?}");
                if with_nulls {
                    continue;
                }
                let expected = max(&times).unwrap_or(i64::MIN);
                assert_eq!(largest_in_lanes(times.values()), expected, "{times:?}");
            }
        }
        let sliced =
            TimestampMillisecondArray::from(vec![9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]).slice(1, 9);
        assert_eq!(largest(&sliced), Some(9));
    }
}
