//! `'connector' = 'nexmark'`: the Nexmark benchmark's event generator (people, auctions
//! and bids) as a source, with the DDL and options of Flink's Nexmark suite. The model
//! and the Arrow columns it makes are in [`generator`].

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use runnel_runtime::{Source, SourceBatch, SourceEvent, SourceSplit, SourceState};
use runnel_sql::TableDef;

use crate::error::Result;
use crate::options::TableOptions;
use crate::random::RowBlocks;

mod generator;

use generator::BATCH_EVENTS;
pub use generator::{Generator, NexmarkConfig};

/// Options of Flink's Nexmark connector, plus `seed` and `base-time` (Runnel's, for
/// reproducible runs).
pub const OPTIONS: &[&str] = &[
    "events.num",
    "first-event.rate",
    "next-event.rate",
    "person.proportion",
    "auction.proportion",
    "bid.proportion",
    "rate.shape",
    "rate.period",
    "rate.limited",
    "seed",
    "base-time",
];

pub(crate) fn options(table: &TableDef) -> Result<(TableOptions<'_>, NexmarkConfig)> {
    let valid: Vec<&str> = OPTIONS
        .iter()
        .chain(crate::options::ALIGNMENT_OPTIONS)
        .copied()
        .collect();
    let options = TableOptions::validate(&table.name, "nexmark", &table.options, &valid, &[])?;
    let events: u64 = options.parse_or("events.num", 0)?;
    let rate: u64 = options.parse_or("first-event.rate", 10_000)?;
    if rate == 0 {
        return Err(options.invalid("first-event.rate", "0", "must be positive"));
    }
    let config = NexmarkConfig {
        events: (events > 0).then_some(events),
        rate,
        person_proportion: options.parse_or("person.proportion", 1)?,
        auction_proportion: options.parse_or("auction.proportion", 3)?,
        bid_proportion: options.parse_or("bid.proportion", 46)?,
        seed: options.parse_or("seed", 0)?,
        base_time_ms: options.parse_or("base-time", 1_767_225_600_000)?,
    };
    if config.total_proportion() == 0
        || config.person_proportion == 0
        || config.auction_proportion == 0
    {
        return Err(options.invalid(
            "person.proportion",
            &config.person_proportion.to_string(),
            "people and auctions need a positive proportion",
        ));
    }
    Ok((options, config))
}

/// The Nexmark generator as a source (one partition).
pub struct NexmarkSource {
    table: String,
    config: NexmarkConfig,
    generator: Generator,
    blocks: RowBlocks,
}

impl NexmarkSource {
    /// Generates the blocks of events `split` takes (see [`RowBlocks`]); `start`: a
    /// restored job resumes at the checkpoint's next event number.
    pub fn open(table: &TableDef, split: SourceSplit, start: Option<&SourceState>) -> Result<Self> {
        let (_, config) = options(table)?;
        let mut generator = Generator::new(
            config,
            table.physical_schema.clone(),
            table.read_fields.clone(),
        );
        // Check the declared columns once, before the job starts.
        generator.batch(0, 0)?;
        let resume = start
            .and_then(|s| s.offsets.first().copied().flatten())
            .map(|n| n.max(0) as u64);
        Ok(Self {
            table: table.name.clone(),
            config,
            generator,
            blocks: RowBlocks::new(split, BATCH_EVENTS, resume),
        })
    }
}

#[async_trait]
impl Source for NexmarkSource {
    fn partitions(&self) -> usize {
        1
    }

    async fn next_event(&mut self) -> runnel_runtime::Result<Option<SourceEvent>> {
        let Some((from, to)) = self.blocks.next_block(self.config.events) else {
            return Ok(None);
        };
        let batch = self
            .generator
            .batch(from, to)
            .map_err(|e| e.at("source", &self.table))?;
        // Generation is CPU work: let other tasks run between batches.
        tokio::task::yield_now().await;
        Ok(Some(SourceEvent::Batch(SourceBatch {
            partition: 0,
            batch,
            next_offset: Some(self.blocks.position() as i64),
            dead_letters: None,
        })))
    }
}

/// `'connector' = 'nexmark'`: the Nexmark benchmark's event generator.
pub struct NexmarkConnector;

#[async_trait]
impl crate::Connector for NexmarkConnector {
    fn name(&self) -> &'static str {
        "nexmark"
    }

    fn validate(&self, table: &TableDef) -> Result<()> {
        let (options, config) = options(table)?;
        options.watermark_alignment(Some(config.default_drift()))?;
        Ok(())
    }

    /// Readers keep in step by default, within 32 blocks of events (the published
    /// queries' joins and windows would otherwise keep the rows of whichever reader the
    /// scheduler let run ahead).
    fn watermark_alignment(&self, table: &TableDef) -> Option<runnel_runtime::WatermarkAlignment> {
        let (options, config) = options(table).ok()?;
        options
            .watermark_alignment(Some(config.default_drift()))
            .ok()?
    }

    /// Bounded with `'events.num'`.
    fn is_bounded(&self, table: &TableDef) -> bool {
        table
            .options
            .get("events.num")
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    }

    /// Blocks of events are shared out over readers.
    fn max_splits(&self, _table: &TableDef) -> usize {
        usize::MAX
    }

    /// Every person and every auction has an id of its own: ids grow with the event
    /// number, and each event is generated once (by one reader).
    fn unique_fields(&self, table: &TableDef) -> Vec<Vec<String>> {
        ["person", "auction"]
            .into_iter()
            .filter(|column| {
                table
                    .physical_schema
                    .field_with_name(column)
                    .is_ok_and(|f| {
                        matches!(f.data_type(), DataType::Struct(fields)
                        if fields.iter().any(|field| field.name() == "id"))
                    })
            })
            .map(|column| vec![column.to_string(), "id".to_string()])
            .collect()
    }

    async fn open_source(
        &self,
        table: &TableDef,
        context: crate::SourceContext<'_>,
    ) -> Result<Box<dyn runnel_runtime::Source>> {
        Ok(Box::new(NexmarkSource::open(
            table,
            context.split,
            context.start,
        )?))
    }
}
