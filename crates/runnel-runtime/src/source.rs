//! The [`Source`] trait that connectors implement, and the task that turns a source's
//! records into a stream of batches and watermarks.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::compute::kernels::aggregate::max;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;
use runnel_sql::SourceNode;
use tokio::sync::mpsc;

use crate::checkpoint::{CheckpointCoordinator, CheckpointId, SourceState};
use crate::config::JobConfig;
use crate::error::{Result, RuntimeError};
use crate::message::{Message, Watermark, WATERMARK_END};
use crate::metrics::JobMetrics;
use crate::operators::ProjectionOperator;
use crate::watermark::WatermarkTracker;

/// Rows a source read from one of its partitions, in the table's physical schema.
#[derive(Debug, Clone)]
pub struct SourceBatch {
    pub partition: usize,
    pub batch: RecordBatch,
    /// The partition's offset after these rows (the next to read), when the source can
    /// resume from an offset (checkpoints record it).
    pub next_offset: Option<i64>,
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
            ProcessingClock::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_millis() as i64),
            ProcessingClock::Replayed(now) => *now,
        }
    }
}

/// How a source computes a batch's watermark candidate: the largest value of the table's
/// watermark expression over the batch's rows.
enum WatermarkExpr {
    /// `col` or `col - INTERVAL '...'` of a fixed length: the column's maximum less the
    /// delay — one `max` kernel over the column, no per-row date arithmetic.
    ColumnLess { column: usize, delay_ms: i64 },
    /// Any other expression, evaluated on every row.
    General(Arc<dyn PhysicalExpr>),
}

impl WatermarkExpr {
    fn new(watermark: &runnel_sql::WatermarkDef, table: &runnel_sql::TableDef) -> Result<Self> {
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
    fn candidate(&self, batch: &RecordBatch) -> datafusion::error::Result<Option<i64>> {
        Ok(match self {
            WatermarkExpr::ColumnLess { column, delay_ms } => {
                let millis = crate::operators::as_millis(batch.column(*column))?;
                max(&millis).map(|t| t.saturating_sub(*delay_ms))
            }
            WatermarkExpr::General(expr) => {
                let values = expr.evaluate(batch)?.into_array(batch.num_rows())?;
                max(&crate::operators::as_millis(&values)?)
            }
        })
    }
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

/// Runs a [`Source`]: computes computed columns, projects, derives watermarks per
/// partition, and sends everything downstream.
pub(crate) struct SourceTask {
    pub source: Box<dyn Source>,
    pub node: SourceNode,
    pub metrics: Arc<JobMetrics>,
    pub config: JobConfig,
    pub output: mpsc::Sender<Message>,
    /// The source's number in the job (its place in checkpoints).
    pub index: usize,
    /// Set when the job checkpoints: on each trigger the task records its position and
    /// sends a barrier.
    pub checkpoints: Option<Arc<CheckpointCoordinator>>,
    /// Where a restored job's source stood.
    pub restored: Option<SourceState>,
}

impl SourceTask {
    pub async fn run(self) -> Result<()> {
        let table = self.node.table.clone();
        let context = format!("source {}", table.name);
        let error = |source| RuntimeError::Operator {
            operator: context.clone(),
            source,
        };
        // Computed columns: only needed when the table declares some.
        let row_projection = if table.has_computed_columns() {
            Some(ProjectionOperator::try_new(
                &table.row_exprs,
                &table.physical_df_schema(),
                table.schema.clone(),
            )?)
        } else {
            None
        };
        let watermark_expr = table
            .watermark
            .as_ref()
            .map(|w| WatermarkExpr::new(w, &table))
            .transpose()?;
        let mut tracker = WatermarkTracker::new(self.source.partitions());
        let mut offsets: Vec<Option<i64>> = vec![None; self.source.partitions().max(1)];
        if let Some(restored) = &self.restored {
            for (p, w) in restored.watermarks.iter().enumerate() {
                if let Some(w) = w {
                    tracker.update(p, *w);
                }
            }
            for (p, o) in restored.offsets.iter().enumerate() {
                if p < offsets.len() {
                    offsets[p] = *o;
                }
            }
        }
        let mut triggers = self.checkpoints.as_ref().map(|c| c.subscribe());
        // Barriers go out for every checkpoint id in order, none skipped (a trigger may
        // move on twice before this task looks): multi-input operators align on equal ids.
        let mut last_barrier: CheckpointId = self.checkpoints.as_ref().map_or(0, |c| c.first());
        if let Some(triggers) = &mut triggers {
            // Checkpoints triggered before this task started are sent at once.
            triggers.mark_changed();
        }
        // Fault injection: one checkpoint once the job's sources read this many rows.
        let checkpoint_after_rows = self.config.faults.checkpoint_after_rows;
        let mut clock = if self.source.replays_clock() {
            ProcessingClock::Replayed(None)
        } else {
            ProcessingClock::System
        };
        let idle_advance = self.config.idle_watermark_advance;
        // On processing time, watermarks are the processing clock: sent before each batch
        // (whose rows `PROCTIME()` stamps with it) and as the clock moves.
        let processing_time = self.node.processing_time;
        let mut processing_watermark = Watermark::MIN;
        let tick = (idle_advance || processing_time) && matches!(clock, ProcessingClock::System);
        // The feed is moved into the read in progress and handed back with its result.
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
        let mut in_flight: Reading = read(EventFeed::new(self.source, tick));
        let mut triggers_closed = false;
        let mut idle_sent = false;
        loop {
            // The source's read in progress survives a barrier (it is not cancelled and
            // restarted), so a source need not be cancel-safe and a slow read completes.
            let next = match &mut triggers {
                Some(triggers) => tokio::select! {
                    biased;
                    changed = triggers.changed(), if !triggers_closed => match changed {
                        Ok(()) => Err(*triggers.borrow_and_update()),
                        Err(_) => {
                            triggers_closed = true;
                            continue;
                        }
                    },
                    (feed, event) = &mut in_flight => {
                        in_flight = read(feed);
                        Ok(event?)
                    }
                },
                None => {
                    let (feed, event) = (&mut in_flight).await;
                    in_flight = read(feed);
                    Ok(event?)
                }
            };
            let event = match next {
                Ok(event) => event,
                Err(checkpoint) => {
                    // Barriers: everything sent so far belongs to these checkpoints.
                    let state = SourceState {
                        table: table.name.clone(),
                        offsets: offsets.clone(),
                        watermarks: tracker.partition_watermarks(),
                        finished: false,
                    };
                    while last_barrier < checkpoint {
                        last_barrier += 1;
                        if let Some(coordinator) = &self.checkpoints {
                            coordinator.add_source(last_barrier, self.index, state.clone());
                        }
                        if self
                            .output
                            .send(Message::Barrier(last_barrier))
                            .await
                            .is_err()
                        {
                            return Ok(());
                        }
                    }
                    continue;
                }
            };
            let Some(event) = event else {
                break;
            };
            let mut advanced = match event {
                None => None, // a clock tick
                Some(SourceEvent::PartitionFinished(p)) => tracker.finish_partition(p),
                Some(SourceEvent::PartitionIdle(p)) => tracker.mark_idle(p),
                Some(SourceEvent::Watermark {
                    partition,
                    watermark,
                }) => tracker.update(partition, watermark),
                Some(SourceEvent::Clock(now)) => {
                    clock = ProcessingClock::Replayed(Some(now));
                    None
                }
                Some(SourceEvent::Batch(SourceBatch {
                    partition,
                    batch,
                    next_offset,
                })) => {
                    if let (Some(next), Some(slot)) = (next_offset, offsets.get_mut(partition)) {
                        *slot = Some(next);
                    }
                    if batch.num_rows() == 0 {
                        continue;
                    }
                    JobMetrics::add(&self.metrics.rows_in, batch.num_rows());
                    if let (Some(after), Some(coordinator)) =
                        (checkpoint_after_rows, &self.checkpoints)
                    {
                        if self.metrics.snapshot().rows_in >= after {
                            coordinator.trigger_once();
                        }
                    }
                    let now = clock.now().unwrap_or(Watermark::MIN);
                    if processing_time && now > processing_watermark {
                        processing_watermark = now;
                        if self.output.send(Message::Watermark(now)).await.is_err() {
                            return Ok(());
                        }
                    }
                    let full = match &row_projection {
                        Some(p) => {
                            runnel_sql::functions::with_processing_time(now, || p.project(&batch))
                                .map_err(error)?
                        }
                        None => batch,
                    };
                    let candidate = match &watermark_expr {
                        _ if processing_time => None,
                        Some(expr) => expr.candidate(&full).map_err(error)?,
                        None => None,
                    };
                    let rows = match &self.node.projection {
                        Some(indices) => full.project(indices).map_err(|e| error(e.into()))?,
                        None => full,
                    };
                    if self.output.send(Message::Batch(rows)).await.is_err() {
                        return Ok(()); // downstream stopped; it reports why
                    }
                    candidate.and_then(|w| tracker.update(partition, w))
                }
            };
            if processing_time {
                advanced = clock
                    .now()
                    .filter(|&now| now > processing_watermark)
                    .inspect(|&now| processing_watermark = now);
            } else if let Some(now) = clock.now().filter(|_| idle_advance) {
                advanced = tracker.advance_idle(now).or(advanced);
            }
            if let Some(watermark) = advanced {
                if self
                    .output
                    .send(Message::Watermark(watermark))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
            // A reader whose partitions all went idle says so once, so the readers next to
            // it (parallel subtasks) are not held back by it.
            let idle = tracker.all_idle();
            if idle && !idle_sent && self.output.send(Message::Idle).await.is_err() {
                return Ok(());
            }
            idle_sent = idle;
        }
        // A finished bounded source completes every window.
        let _ = self.output.send(Message::Watermark(WATERMARK_END)).await;
        if let Some(coordinator) = &self.checkpoints {
            // A final checkpoint after the last output: a finished job that is started
            // again (or a transaction still open) has nothing left to redo.
            let state = SourceState {
                table: table.name.clone(),
                offsets,
                watermarks: tracker.partition_watermarks(),
                finished: true,
            };
            coordinator.source_finished(self.index, state.clone());
            let checkpoint = coordinator.trigger();
            while last_barrier < checkpoint {
                last_barrier += 1;
                coordinator.add_source(last_barrier, self.index, state.clone());
                let _ = self.output.send(Message::Barrier(last_barrier)).await;
            }
        }
        let _ = self.output.send(Message::End).await;
        Ok(())
    }
}
