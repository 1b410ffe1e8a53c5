//! The Nexmark generator: the published model (as in Beam and Flink) made straight into
//! Arrow columns. Events are numbered; event `n` is a person, an auction or a bid by
//! `n mod (p + a + b)` for the proportions 1:3:46; event time advances by
//! `1 / first-event.rate` seconds per event; ids grow with the event number; bids go to a
//! hot auction (and from a hot bidder) most of the time. Each event draws from its own
//! random stream seeded by `(seed, n)`, so a seed always gives the same events in any
//! batch split.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, ArrayRef, Int32Array, Int64Builder, StringBuilder, StructArray,
    TimestampMillisecondBuilder,
};
use datafusion::arrow::buffer::{BooleanBuffer, NullBuffer};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Fields, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::{ConnectorError, Result};
use crate::random::EventRng;

const FIRST_PERSON_ID: i64 = 1000;
const FIRST_AUCTION_ID: i64 = 1000;
const FIRST_CATEGORY_ID: i64 = 10;
const NUM_CATEGORIES: u64 = 5;
const NUM_ACTIVE_PEOPLE: i64 = 1000;
const NUM_IN_FLIGHT_AUCTIONS: i64 = 100;
const PERSON_ID_LEAD: i64 = 10;
const AUCTION_ID_LEAD: i64 = 10;
const HOT_AUCTION_RATIO: u64 = 2;
const HOT_SELLER_RATIO: u64 = 4;
const HOT_BIDDER_RATIO: u64 = 4;
/// Hot ids are multiples of this many ids.
const HOT_GROUP: i64 = 100;
/// Events per batch (a reader's block).
pub(super) const BATCH_EVENTS: u64 = 8192;

const FIRST_NAMES: &[&str] = &[
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: &[&str] = &[
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
const US_STATES: &[&str] = &["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: &[&str] = &[
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const HOT_CHANNELS: &[&str] = &["Google", "Facebook", "Baidu", "Apple"];

/// The generator's settings.
#[derive(Debug, Clone, Copy)]
pub struct NexmarkConfig {
    /// Events to generate; `None` generates forever.
    pub events: Option<u64>,
    /// Events per second of event time.
    pub rate: u64,
    pub person_proportion: u64,
    pub auction_proportion: u64,
    pub bid_proportion: u64,
    pub seed: u64,
    /// Event time of event 0, in ms since the epoch.
    pub base_time_ms: i64,
}

impl NexmarkConfig {
    /// How far in event time a reader may run ahead of the others: 32 blocks of events
    /// at the generator's rate (a block is one reader's batch). Eight cost q5 a tenth
    /// more CPU (readers waiting on each other too often) for little less memory.
    pub(super) fn default_drift(&self) -> std::time::Duration {
        std::time::Duration::from_millis((32 * BATCH_EVENTS * 1000 / self.rate.max(1)).max(1))
    }

    pub(super) fn total_proportion(&self) -> u64 {
        self.person_proportion + self.auction_proportion + self.bid_proportion
    }

    /// A recent person (from 0), slightly ahead of the last one created.
    fn next_person(&self, at: &EventPosition, rng: &mut EventRng) -> i64 {
        let people = at.last_person(self) + 1;
        let active = people.min(NUM_ACTIVE_PEOPLE);
        people - active + rng.below((active + PERSON_ID_LEAD) as u64) as i64
    }

    /// An auction in flight (from 0).
    fn next_auction(&self, at: &EventPosition, rng: &mut EventRng) -> i64 {
        let max = at.last_auction(self);
        let min = (max - NUM_IN_FLIGHT_AUCTIONS).max(0);
        min + rng.below((max - min + 1 + AUCTION_ID_LEAD) as u64) as i64
    }
}

/// Where event `n` falls in the model: its epoch (one person, a few auctions and many
/// bids), its place in the epoch and its event time. Stepped one event at a time, so
/// generating a batch divides once, not several times per event.
#[derive(Debug, Clone, Copy)]
struct EventPosition {
    epoch: u64,
    /// `n mod (p + a + b)`.
    offset: u64,
    /// Event time, in ms since the epoch.
    time: i64,
    /// `n * 1000 mod rate`: the part of a millisecond `time` leaves out, in 1/rate ms.
    time_rest: u64,
}

impl EventPosition {
    fn at(config: &NexmarkConfig, n: u64) -> Self {
        let total = config.total_proportion();
        let rate = config.rate.max(1) as u128;
        let ms = n as u128 * 1000;
        Self {
            epoch: n / total,
            offset: n % total,
            time: config.base_time_ms + (ms / rate) as i64,
            time_rest: (ms % rate) as u64,
        }
    }

    /// Moves on to the next event.
    fn step(&mut self, config: &NexmarkConfig) {
        self.offset += 1;
        if self.offset == config.total_proportion() {
            self.offset = 0;
            self.epoch += 1;
        }
        let rate = config.rate.max(1);
        self.time += (1000 / rate) as i64;
        self.time_rest += 1000 % rate;
        if self.time_rest >= rate {
            self.time_rest -= rate;
            self.time += 1;
        }
    }

    /// 0 person, 1 auction, 2 bid (the `event_type` column).
    fn event_type(&self, config: &NexmarkConfig) -> i32 {
        if self.offset < config.person_proportion {
            0
        } else if self.offset < config.person_proportion + config.auction_proportion {
            1
        } else {
            2
        }
    }

    /// Id (from 0) of the last person created at or before this event.
    fn last_person(&self, config: &NexmarkConfig) -> i64 {
        let offset = self.offset.min(config.person_proportion.saturating_sub(1));
        (self.epoch * config.person_proportion + offset) as i64
    }

    /// Id (from 0) of the last auction created at or before this event.
    fn last_auction(&self, config: &NexmarkConfig) -> i64 {
        let (mut epoch, mut offset) = (self.epoch as i64, self.offset as i64);
        let (p, a) = (
            config.person_proportion as i64,
            config.auction_proportion as i64,
        );
        if offset < p {
            epoch -= 1;
            offset = a - 1;
        } else if offset >= p + a {
            offset = a - 1;
        } else {
            offset -= p;
        }
        (epoch * a + offset).max(0)
    }
}

/// Nexmark's price distribution: 10^(0..6) dollars, in cents.
fn price(rng: &mut EventRng) -> i64 {
    (10f64.powf(rng.unit() * 6.0) * 100.0).round() as i64
}

/// Column builders for one struct (person, auction or bid), appended in field order.
/// Only the fields the plan reads are built (see `TableDef::read_fields`); the others
/// are NULL, and their random draws are skipped when no built field comes after them.
struct RowBuilder {
    fields: Vec<(&'static str, ColumnBuilder)>,
    /// The fields built (not [`ColumnBuilder::Skipped`]), by index.
    built: Vec<usize>,
    /// Fields at or before this index draw their random values (a later built field's
    /// values depend on them); `None`: no built field draws.
    draws_until: Option<usize>,
}

enum ColumnBuilder {
    Int(Int64Builder),
    Text(StringBuilder),
    Time(TimestampMillisecondBuilder),
    /// Not read by the plan: NULL.
    Skipped,
}

/// A generated field: its name, its type (`i`nteger, `s`tring, `t`imestamp), and whether
/// making it draws from the event's random stream.
type FieldSpec = (&'static str, char, bool);

/// Bytes a generated string holds on average, to size a builder once per batch.
const TEXT_BYTES: usize = 32;

impl RowBuilder {
    /// Builders for `rows` rows of `fields`, of which only `read` when given.
    fn new(fields: &[FieldSpec], read: Option<&Vec<String>>, rows: usize) -> Self {
        let built =
            |name: &str| read.is_none_or(|read| read.iter().any(|r| r.eq_ignore_ascii_case(name)));
        let builders: Vec<(&'static str, ColumnBuilder)> = fields
            .iter()
            .map(|&(name, kind, _)| {
                let builder = match kind {
                    _ if !built(name) => ColumnBuilder::Skipped,
                    'i' => ColumnBuilder::Int(Int64Builder::with_capacity(rows)),
                    't' => ColumnBuilder::Time(TimestampMillisecondBuilder::with_capacity(rows)),
                    _ => ColumnBuilder::Text(StringBuilder::with_capacity(rows, rows * TEXT_BYTES)),
                };
                (name, builder)
            })
            .collect();
        Self {
            built: (0..builders.len())
                .filter(|&i| !matches!(builders[i].1, ColumnBuilder::Skipped))
                .collect(),
            fields: builders,
            draws_until: fields
                .iter()
                .rposition(|&(name, _, draws)| draws && built(name)),
        }
    }

    /// Whether field `i`'s random values are drawn.
    fn draws(&self, i: usize) -> bool {
        self.draws_until.is_some_and(|until| i <= until)
    }

    /// Whether field `i` is built (read by the plan): a field drawn but not built only
    /// moves its event's random stream on.
    fn builds(&self, i: usize) -> bool {
        !matches!(self.fields[i].1, ColumnBuilder::Skipped)
    }

    /// A row of another event type: NULL in every built field.
    fn null(&mut self) {
        for &i in &self.built {
            match &mut self.fields[i].1 {
                ColumnBuilder::Int(b) => b.append_null(),
                ColumnBuilder::Text(b) => b.append_null(),
                ColumnBuilder::Time(b) => b.append_null(),
                ColumnBuilder::Skipped => {}
            }
        }
    }

    fn int(&mut self, i: usize, v: i64) {
        if let ColumnBuilder::Int(b) = &mut self.fields[i].1 {
            b.append_value(v)
        }
    }

    fn text(&mut self, i: usize, v: &str) {
        if let ColumnBuilder::Text(b) = &mut self.fields[i].1 {
            b.append_value(v)
        }
    }

    /// Field `i` as `len` random letters (drawn past when the field is not built).
    fn letters(&mut self, i: usize, rng: &mut EventRng, len: usize, text: &mut String) {
        if self.builds(i) {
            text.clear();
            rng.letters(len, text);
            self.text(i, text);
        } else {
            rng.skip(len as u64);
        }
    }

    fn time(&mut self, i: usize, v: i64) {
        if let ColumnBuilder::Time(b) = &mut self.fields[i].1 {
            b.append_value(v)
        }
    }

    /// The struct column, shaped (names, types, order) like `target`: a row where
    /// `valid` is set, NULL elsewhere; each field not built is `nulls`' all-NULL array.
    fn finish(
        mut self,
        column: &str,
        target: &DataType,
        valid: NullBuffer,
        nulls: &mut NullArrays,
    ) -> Result<ArrayRef> {
        let DataType::Struct(target_fields) = target else {
            return Err(ConnectorError::Other(format!(
                "nexmark: column {column} must be a ROW<...>"
            )));
        };
        let rows = valid.len();
        let mut built: Vec<(&str, Option<ArrayRef>)> = self
            .fields
            .iter_mut()
            .map(|(name, builder)| {
                let array: Option<ArrayRef> = match builder {
                    ColumnBuilder::Int(b) => Some(Arc::new(b.finish())),
                    ColumnBuilder::Text(b) => Some(Arc::new(b.finish())),
                    ColumnBuilder::Time(b) => Some(Arc::new(b.finish())),
                    ColumnBuilder::Skipped => None,
                };
                (*name, array)
            })
            .collect();
        let mut children = Vec::with_capacity(target_fields.len());
        for field in target_fields.iter() {
            let Some(index) = built
                .iter()
                .position(|(name, _)| name.eq_ignore_ascii_case(field.name()))
            else {
                return Err(ConnectorError::Other(format!(
                    "nexmark: {column} has no field '{}' (it has: {})",
                    field.name(),
                    built.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                )));
            };
            let array = match built.swap_remove(index).1 {
                Some(array) if array.data_type() == field.data_type() => array,
                Some(array) => cast(&array, field.data_type())
                    .map_err(|e| ConnectorError::Other(e.to_string()))?,
                None => nulls.of(field.data_type(), rows),
            };
            children.push(array);
        }
        let fields: Fields = target_fields
            .iter()
            .map(|f| Arc::new(Field::new(f.name(), f.data_type().clone(), true)))
            .collect();
        let array = StructArray::try_new(fields, children, Some(valid))
            .map_err(|e| ConnectorError::Other(e.to_string()))?;
        Ok(Arc::new(array))
    }
}

/// All-NULL arrays kept from batch to batch: a field no query reads is the same column
/// in every batch of the same size, built once instead of zeroed anew each time.
#[derive(Default)]
struct NullArrays(Vec<ArrayRef>);

impl NullArrays {
    fn of(&mut self, data_type: &DataType, rows: usize) -> ArrayRef {
        if let Some(array) = self
            .0
            .iter()
            .find(|a| a.len() == rows && a.data_type() == data_type)
        {
            return array.clone();
        }
        let array = new_null_array(data_type, rows);
        // Batches have one size but the last: a few arrays cover a run.
        if self.0.len() >= 16 {
            self.0.remove(0);
        }
        self.0.push(array.clone());
        array
    }
}

const PERSON: &[FieldSpec] = &[
    ("id", 'i', false),
    ("name", 's', true),
    ("emailAddress", 's', true),
    ("creditCard", 's', true),
    ("city", 's', true),
    ("state", 's', true),
    ("dateTime", 't', false),
    ("extra", 's', true),
];
const AUCTION: &[FieldSpec] = &[
    ("id", 'i', false),
    ("itemName", 's', true),
    ("description", 's', true),
    ("initialBid", 'i', true),
    ("reserve", 'i', true),
    ("dateTime", 't', false),
    ("expires", 't', true),
    ("seller", 'i', true),
    ("category", 'i', true),
    ("extra", 's', true),
];
const BID: &[FieldSpec] = &[
    ("auction", 'i', true),
    ("bidder", 'i', true),
    ("price", 'i', true),
    ("channel", 's', true),
    ("url", 's', true),
    ("dateTime", 't', false),
    ("extra", 's', true),
];

/// Makes the batches of one Nexmark table: events `[from, to)` as one batch of its
/// columns (`event_type`, `person`, `auction`, `bid` in any order), building of the rows
/// only the fields the plan reads (see `TableDef::read_fields`); the others are NULL.
pub struct Generator {
    config: NexmarkConfig,
    schema: SchemaRef,
    read_fields: BTreeMap<String, Vec<String>>,
    nulls: NullArrays,
}

impl Generator {
    /// A generator of `schema`'s columns, reading of the struct columns the fields
    /// `read_fields` names (all of a column it leaves out).
    pub fn new(
        config: NexmarkConfig,
        schema: SchemaRef,
        read_fields: BTreeMap<String, Vec<String>>,
    ) -> Self {
        Self {
            config,
            schema,
            read_fields,
            nulls: NullArrays::default(),
        }
    }

    /// Events `[from, to)`.
    pub fn batch(&mut self, from: u64, to: u64) -> Result<RecordBatch> {
        let config = &self.config;
        let rows = to.saturating_sub(from) as usize;
        let mut types = Vec::with_capacity(rows);
        let read = |column: &str| {
            self.read_fields
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(column))
                .map(|(_, fields)| fields)
        };
        let mut person = RowBuilder::new(PERSON, read("person"), rows);
        let mut auction = RowBuilder::new(AUCTION, read("auction"), rows);
        let mut bid = RowBuilder::new(BID, read("bid"), rows);
        let mut text = String::with_capacity(128);
        let mut at = EventPosition::at(config, from);
        for n in from..to {
            if n > from {
                at.step(config);
            }
            let mut rng = EventRng::new(config.seed, n);
            let time = at.time;
            let kind = at.event_type(config);
            types.push(kind);
            // Within an event, fields draw in order: a field's draws are skipped once no
            // built field after it draws (`RowBuilder::draws`), which stops the event
            // early; a field drawn but not built moves the stream on without being made.
            match kind {
                0 => person_row(&mut person, config, &at, &mut rng, time, &mut text),
                1 => auction_row(&mut auction, config, &at, &mut rng, time, &mut text),
                _ => bid_row(&mut bid, config, &at, &mut rng, time, &mut text),
            }
            if kind != 0 {
                person.null();
            }
            if kind != 1 {
                auction.null();
            }
            if kind != 2 {
                bid.null();
            }
        }
        let valid = |kind: i32| {
            NullBuffer::new(BooleanBuffer::collect_bool(types.len(), |i| {
                types[i] == kind
            }))
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        let mut builders = [(0, Some(person)), (1, Some(auction)), (2, Some(bid))];
        for field in self.schema.fields() {
            let name = field.name().to_ascii_lowercase();
            let kind = match name.as_str() {
                "event_type" => {
                    let types: ArrayRef = Arc::new(Int32Array::from(types.clone()));
                    columns.push(
                        cast(&types, field.data_type())
                            .map_err(|e| ConnectorError::Other(e.to_string()))?,
                    );
                    continue;
                }
                "person" => 0,
                "auction" => 1,
                "bid" => 2,
                other => {
                    return Err(ConnectorError::Other(format!(
                        "nexmark: unknown column '{other}' (a nexmark table has event_type, person, auction and bid)"
                    )))
                }
            };
            let Some(builder) = builders[kind as usize].1.take() else {
                return Err(ConnectorError::Other(format!(
                    "nexmark: column {} appears twice",
                    field.name()
                )));
            };
            columns.push(builder.finish(
                field.name(),
                field.data_type(),
                valid(kind),
                &mut self.nulls,
            )?);
        }
        RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| ConnectorError::Other(e.to_string()))
    }
}

/// Appends a person (event type 0).
fn person_row(
    person: &mut RowBuilder,
    config: &NexmarkConfig,
    at: &EventPosition,
    rng: &mut EventRng,
    time: i64,
    text: &mut String,
) {
    person.int(0, at.last_person(config) + FIRST_PERSON_ID);
    person.time(6, time);
    if !person.draws(1) {
        return;
    }
    let (first, last) = (rng.pick(FIRST_NAMES), rng.pick(LAST_NAMES));
    if person.builds(1) {
        text.clear();
        text.push_str(first);
        text.push(' ');
        text.push_str(last);
        person.text(1, text);
    }
    if !person.draws(2) {
        return;
    }
    if person.builds(2) {
        text.clear();
        rng.letters(7, text);
        text.push('@');
        rng.letters(5, text);
        text.push_str(".com");
        person.text(2, text);
    } else {
        rng.skip(12);
    }
    if !person.draws(3) {
        return;
    }
    if person.builds(3) {
        text.clear();
        for group in 0..4 {
            if group > 0 {
                text.push(' ');
            }
            // Writing to a String cannot fail.
            let _ = write!(text, "{:04}", rng.below(10_000));
        }
        person.text(3, text);
    } else {
        rng.skip(4);
    }
    if !person.draws(4) {
        return;
    }
    person.text(4, rng.pick(US_CITIES));
    if !person.draws(5) {
        return;
    }
    person.text(5, rng.pick(US_STATES));
    if !person.draws(7) {
        return;
    }
    let len = rng.below(60) as usize;
    person.letters(7, rng, len, text);
}

/// Appends an auction (event type 1).
fn auction_row(
    auction: &mut RowBuilder,
    config: &NexmarkConfig,
    at: &EventPosition,
    rng: &mut EventRng,
    time: i64,
    text: &mut String,
) {
    auction.int(0, at.last_auction(config) + FIRST_AUCTION_ID);
    auction.time(5, time);
    if !auction.draws(1) {
        return;
    }
    auction.letters(1, rng, 20, text);
    if !auction.draws(2) {
        return;
    }
    auction.letters(2, rng, 100, text);
    if !auction.draws(3) {
        return;
    }
    if auction.builds(3) || auction.builds(4) {
        let initial = price(rng);
        auction.int(3, initial);
        auction.int(4, initial + price(rng));
    } else {
        rng.skip(2);
    }
    if !auction.draws(6) {
        return;
    }
    // Auctions run for up to ~twice the time it takes to create the in-flight ones.
    let span_ms = (NUM_IN_FLIGHT_AUCTIONS as u64 * config.total_proportion()
        / config.auction_proportion.max(1))
        * 1000
        / config.rate.max(1);
    auction.time(6, time + 1 + rng.below(2 * span_ms.max(1)) as i64);
    if !auction.draws(7) {
        return;
    }
    let seller = if rng.below(HOT_SELLER_RATIO) > 0 {
        (at.last_person(config) / HOT_GROUP) * HOT_GROUP
    } else {
        config.next_person(at, rng)
    };
    auction.int(7, seller + FIRST_PERSON_ID);
    if !auction.draws(8) {
        return;
    }
    auction.int(8, FIRST_CATEGORY_ID + rng.below(NUM_CATEGORIES) as i64);
    if !auction.draws(9) {
        return;
    }
    let len = rng.below(200) as usize;
    auction.letters(9, rng, len, text);
}

/// Appends a bid (event type 2).
fn bid_row(
    bid: &mut RowBuilder,
    config: &NexmarkConfig,
    at: &EventPosition,
    rng: &mut EventRng,
    time: i64,
    text: &mut String,
) {
    bid.time(5, time);
    if !bid.draws(0) {
        return;
    }
    let auction_id = if rng.below(HOT_AUCTION_RATIO) > 0 {
        (at.last_auction(config) / HOT_GROUP) * HOT_GROUP
    } else {
        config.next_auction(at, rng)
    };
    bid.int(0, auction_id + FIRST_AUCTION_ID);
    if !bid.draws(1) {
        return;
    }
    let bidder = if rng.below(HOT_BIDDER_RATIO) > 0 {
        (at.last_person(config) / HOT_GROUP) * HOT_GROUP + 1
    } else {
        config.next_person(at, rng)
    };
    bid.int(1, bidder + FIRST_PERSON_ID);
    if !bid.draws(2) {
        return;
    }
    if bid.builds(2) {
        bid.int(2, price(rng));
    } else {
        rng.skip(1);
    }
    if !bid.draws(3) {
        return;
    }
    // Most bids come from a hot channel; the others name theirs in the url.
    let channel_id = if rng.below(10) > 0 {
        bid.text(3, rng.pick(HOT_CHANNELS));
        None
    } else {
        let id = rng.below(10_000);
        if bid.builds(3) {
            text.clear();
            let _ = write!(text, "channel-{id}");
            bid.text(3, text);
        }
        Some(id)
    };
    if !bid.draws(4) {
        return;
    }
    if bid.builds(4) {
        text.clear();
        text.push_str("https://www.nexmark.com/");
        rng.letters(5, text);
        text.push('/');
        rng.letters(5, text);
        text.push_str("/item.htm?query=1");
        if let Some(id) = channel_id {
            let _ = write!(text, "&channel_id={id}");
        }
        bid.text(4, text);
    } else {
        rng.skip(10);
    }
    if !bid.draws(6) {
        return;
    }
    let len = rng.below(30) as usize;
    bid.letters(6, rng, len, text);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NexmarkConfig {
        NexmarkConfig {
            events: Some(1000),
            rate: 1000,
            person_proportion: 1,
            auction_proportion: 3,
            bid_proportion: 46,
            seed: 0,
            base_time_ms: 0,
        }
    }

    #[test]
    fn event_mix_ids_and_times_follow_the_model() {
        let c = config();
        let at = |n| EventPosition::at(&c, n);
        let types: Vec<i32> = (0..50).map(|n| at(n).event_type(&c)).collect();
        assert_eq!(types.iter().filter(|&&t| t == 0).count(), 1);
        assert_eq!(types.iter().filter(|&&t| t == 1).count(), 3);
        assert_eq!(types.iter().filter(|&&t| t == 2).count(), 46);
        assert_eq!(
            (
                at(0).last_person(&c),
                at(50).last_person(&c),
                at(149).last_person(&c)
            ),
            (0, 1, 2)
        );
        assert_eq!(
            (
                at(1).last_auction(&c),
                at(3).last_auction(&c),
                at(51).last_auction(&c)
            ),
            (0, 2, 3)
        );
        assert_eq!(at(1500).time, 1500, "1000 events per second: 1 ms apart");
        // Stepping lands where computing does, at any rate.
        for rate in [1, 7, 1000, 3001, 10_000_000] {
            let c = NexmarkConfig { rate, ..c };
            let mut stepped = EventPosition::at(&c, 95);
            for n in 96..2000 {
                stepped.step(&c);
                let at = EventPosition::at(&c, n);
                assert_eq!(
                    (
                        stepped.epoch,
                        stepped.offset,
                        stepped.time,
                        stepped.time_rest
                    ),
                    (at.epoch, at.offset, at.time, at.time_rest),
                    "rate {rate}, event {n}"
                );
            }
        }
    }

    #[test]
    fn a_seed_gives_the_same_events_in_any_batch_split() {
        let schema: SchemaRef = Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
            Field::new("event_type", DataType::Int32, true),
            Field::new(
                "bid",
                DataType::Struct(Fields::from(vec![
                    Field::new("auction", DataType::Int64, true),
                    Field::new("price", DataType::Int64, true),
                ])),
                true,
            ),
        ]));
        let c = config();
        let all = BTreeMap::new();
        let mut generator = Generator::new(c, schema.clone(), all);
        let whole = generator.batch(0, 100).unwrap();
        let parts = [
            generator.batch(0, 37).unwrap(),
            generator.batch(37, 100).unwrap(),
        ];
        let joined = datafusion::arrow::compute::concat_batches(&schema, &parts).unwrap();
        assert_eq!(whole, joined);
        assert_eq!(whole.num_rows(), 100);
    }

    /// The published table's physical columns.
    fn nexmark_schema() -> SchemaRef {
        let row = |fields: &[FieldSpec]| {
            let fields: Vec<Field> = fields
                .iter()
                .map(|&(name, kind, _)| {
                    let data_type = match kind {
                        'i' => DataType::Int64,
                        't' => DataType::Timestamp(
                            datafusion::arrow::datatypes::TimeUnit::Millisecond,
                            None,
                        ),
                        _ => DataType::Utf8,
                    };
                    Field::new(name, data_type, true)
                })
                .collect();
            DataType::Struct(Fields::from(fields))
        };
        Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
            Field::new("event_type", DataType::Int32, true),
            Field::new("person", row(PERSON), true),
            Field::new("auction", row(AUCTION), true),
            Field::new("bid", row(BID), true),
        ]))
    }

    #[test]
    fn fields_left_out_are_null_and_the_others_as_generated_whole() {
        use datafusion::arrow::array::{Array, AsArray};
        let schema = nexmark_schema();
        let c = config();
        let whole = Generator::new(c, schema.clone(), BTreeMap::new())
            .batch(0, 500)
            .unwrap();
        // Each row type read in part: an early field, a late one, only undrawn ones.
        let read = BTreeMap::from([
            ("person".to_string(), vec!["dateTime".to_string()]),
            (
                "auction".to_string(),
                vec!["itemName".to_string(), "category".to_string()],
            ),
            (
                "bid".to_string(),
                vec!["price".to_string(), "dateTime".to_string()],
            ),
        ]);
        let mut generator = Generator::new(c, schema.clone(), read.clone());
        let part = generator.batch(0, 500).unwrap();
        // The all-NULL fields kept from the first batch serve the second.
        assert_eq!(generator.batch(0, 500).unwrap(), part);
        assert_eq!(part.schema(), schema);
        assert_eq!(part.column(0), whole.column(0));
        for (at, column) in ["person", "auction", "bid"].into_iter().enumerate() {
            let (whole, part) = (
                whole.column(at + 1).as_struct(),
                part.column(at + 1).as_struct(),
            );
            assert_eq!(part.nulls(), whole.nulls(), "{column}");
            for (i, field) in part.fields().iter().enumerate() {
                if read[column].contains(field.name()) {
                    assert_eq!(part.column(i), whole.column(i), "{column}.{}", field.name());
                } else {
                    assert_eq!(
                        part.column(i).null_count(),
                        500,
                        "{column}.{}",
                        field.name()
                    );
                }
            }
        }
    }
}
