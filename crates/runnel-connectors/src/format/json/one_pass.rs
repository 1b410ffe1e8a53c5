//! A one-pass JSON decoder: each record is read once, left to right, the fields of the
//! decoded schema go straight into Arrow buffers, and everything else is stepped over
//! without being tokenized (a string is skipped sixteen bytes at a time, an object by
//! counting its brackets). arrow-json first writes every token of every record to a
//! tape, whatever the schema reads of it.
//!
//! It decodes only what it is sure arrow-json decodes the same way: JSON objects whose
//! fields are booleans, integers, floats, decimals, strings, timestamps without a time
//! zone and objects of those. On anything else — a type it does not build, a number
//! written as a string, a timestamp in another form, a duplicate key, a NULL for a NOT
//! NULL field, a malformed record — it gives the batch up ([`GiveUp`]) and the caller
//! decodes it with arrow-json, which builds the rows or names the error. So every batch
//! it builds equals arrow-json's. One difference is left: a value under a key the schema
//! does not hold is skipped without being checked.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use datafusion::arrow::array::NullBufferBuilder;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, BooleanBufferBuilder, PrimitiveArray, StringBuilder, StructArray,
};
use datafusion::arrow::buffer::{NullBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Decimal128Type, Field, Fields, Float32Type, Float64Type,
    Int16Type, Int32Type, Int64Type, Int8Type, SchemaRef, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::text::{
    decimal, integer, prefix, timestamp, unescape, utf8, FieldName, Input, LastDate,
};

/// The one-pass decoder gave a batch up: arrow-json decodes it instead.
#[derive(Debug, PartialEq)]
pub(super) struct GiveUp;

pub(super) type Step<T = ()> = Result<T, GiveUp>;

/// Batches given up in a row after which the decoder rests: it then tries one batch in
/// [`RESTING_BATCHES`], so a stream it cannot take (numbers written as strings, say)
/// costs little more than arrow-json alone.
const GIVE_UPS_BEFORE_RESTING: u32 = 8;
const RESTING_BATCHES: u32 = 64;

/// Decodes records of one schema; see the module docs for what it takes on.
#[derive(Debug)]
pub(super) struct OnePassDecoder {
    schema: SchemaRef,
    /// The table's columns as declared: `schema` is them, or some of their fields.
    declared: SchemaRef,
    /// Batches given up since the last one built, and batches asked about while
    /// resting (see [`GIVE_UPS_BEFORE_RESTING`]).
    gave_up_in_a_row: AtomicU32,
    asked_while_resting: AtomicU32,
}

impl OnePassDecoder {
    /// `None` when `schema` holds a type this decoder does not build.
    pub fn new(schema: SchemaRef) -> Option<Self> {
        Self::within(schema.clone(), schema)
    }

    /// Decodes `schema`, the part of `declared` a plan reads: the keys of the fields
    /// left out are still expected in their declared places, and their values stepped
    /// over. `None` when `schema` holds a type this decoder does not build.
    pub fn within(schema: SchemaRef, declared: SchemaRef) -> Option<Self> {
        ObjectColumn::new(schema.fields(), declared.fields(), false, 0).map(|_| Self {
            schema,
            declared,
            gave_up_in_a_row: AtomicU32::new(0),
            asked_while_resting: AtomicU32::new(0),
        })
    }

    /// Whether to try the next batch at all (see [`GIVE_UPS_BEFORE_RESTING`]).
    pub fn worth_trying(&self) -> bool {
        self.gave_up_in_a_row.load(Ordering::Relaxed) < GIVE_UPS_BEFORE_RESTING
            || self
                .asked_while_resting
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(RESTING_BATCHES)
    }

    /// One row per record, each record one JSON object.
    pub fn decode(&self, records: &[&[u8]]) -> Step<RecordBatch> {
        let decoded = self.decode_batch(records);
        match decoded {
            Ok(_) => self.gave_up_in_a_row.store(0, Ordering::Relaxed),
            Err(GiveUp) => {
                self.gave_up_in_a_row.fetch_add(1, Ordering::Relaxed);
            }
        }
        decoded
    }

    fn decode_batch(&self, records: &[&[u8]]) -> Step<RecordBatch> {
        let mut root = ObjectColumn::new(
            self.schema.fields(),
            self.declared.fields(),
            false,
            records.len(),
        )
        .ok_or(GiveUp)?;
        let mut scratch = Vec::new();
        for record in records {
            let mut input = Input::new(record);
            input.skip_whitespace();
            if input.next_byte() != Some(b'{') {
                return Err(GiveUp);
            }
            root.fields(&mut input, &mut scratch)?;
            input.skip_whitespace();
            if !input.at_end() {
                return Err(GiveUp);
            }
        }
        let columns = root.finish_fields()?;
        RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(records.len())),
        )
        .map_err(|_| GiveUp)
    }
}

/// Which rows are valid, for a field that may or may not hold NULLs.
struct Validity {
    nulls: NullBufferBuilder,
    nullable: bool,
}

impl Validity {
    fn new(nullable: bool, capacity: usize) -> Self {
        Self {
            nulls: NullBufferBuilder::new(capacity),
            nullable,
        }
    }

    fn valid(&mut self) {
        self.nulls.append_non_null();
    }

    /// Gives up for a NOT NULL field: arrow-json decides what that means.
    fn null(&mut self) -> Step {
        if !self.nullable {
            return Err(GiveUp);
        }
        self.nulls.append_null();
        Ok(())
    }

    fn finish(&mut self) -> Option<NullBuffer> {
        self.nulls.finish()
    }
}

/// Primitive values (integers, floats, decimals, timestamps) in Arrow's native type.
struct Values<T: ArrowPrimitiveType> {
    values: Vec<T::Native>,
    validity: Validity,
    data_type: DataType,
}

impl<T: ArrowPrimitiveType> Values<T> {
    fn new(field: &Field, capacity: usize) -> Self {
        Self {
            values: Vec::with_capacity(capacity),
            validity: Validity::new(field.is_nullable(), capacity),
            data_type: field.data_type().clone(),
        }
    }

    fn push(&mut self, value: T::Native) {
        self.values.push(value);
        self.validity.valid();
    }

    fn null(&mut self) -> Step {
        self.values.push(T::Native::default());
        self.validity.null()
    }

    fn finish(&mut self) -> ArrayRef {
        let values = ScalarBuffer::from(std::mem::take(&mut self.values));
        Arc::new(
            PrimitiveArray::<T>::new(values, self.validity.finish())
                .with_data_type(self.data_type.clone()),
        )
    }
}

/// The builder of one field.
enum Column {
    Boolean(BooleanBufferBuilder, Validity),
    Int8(Values<Int8Type>),
    Int16(Values<Int16Type>),
    Int32(Values<Int32Type>),
    Int64(Values<Int64Type>),
    UInt8(Values<UInt8Type>),
    UInt16(Values<UInt16Type>),
    UInt32(Values<UInt32Type>),
    UInt64(Values<UInt64Type>),
    Float32(Values<Float32Type>),
    Float64(Values<Float64Type>),
    Decimal(Values<Decimal128Type>, u8, i8),
    Second(Values<TimestampSecondType>, LastDate),
    Millisecond(Values<TimestampMillisecondType>, LastDate),
    Microsecond(Values<TimestampMicrosecondType>, LastDate),
    Nanosecond(Values<TimestampNanosecondType>, LastDate),
    Utf8(StringBuilder, bool),
    Object(ObjectColumn),
}

impl Column {
    /// `field`, of a table that declares it as `declared` (a struct's declared fields
    /// may be more than the decoded ones). `None` for a type it does not build (lists,
    /// maps, binary, intervals, timestamps with a zone, ...).
    fn new(field: &Field, declared: &Field, capacity: usize) -> Option<Self> {
        Some(match field.data_type() {
            DataType::Boolean => Column::Boolean(
                BooleanBufferBuilder::new(capacity),
                Validity::new(field.is_nullable(), capacity),
            ),
            DataType::Int8 => Column::Int8(Values::new(field, capacity)),
            DataType::Int16 => Column::Int16(Values::new(field, capacity)),
            DataType::Int32 => Column::Int32(Values::new(field, capacity)),
            DataType::Int64 => Column::Int64(Values::new(field, capacity)),
            DataType::UInt8 => Column::UInt8(Values::new(field, capacity)),
            DataType::UInt16 => Column::UInt16(Values::new(field, capacity)),
            DataType::UInt32 => Column::UInt32(Values::new(field, capacity)),
            DataType::UInt64 => Column::UInt64(Values::new(field, capacity)),
            DataType::Float32 => Column::Float32(Values::new(field, capacity)),
            DataType::Float64 => Column::Float64(Values::new(field, capacity)),
            DataType::Decimal128(p, s) if *p <= 38 && *s >= 0 && *s as u8 <= *p => {
                Column::Decimal(Values::new(field, capacity), *p, *s)
            }
            DataType::Timestamp(TimeUnit::Second, None) => {
                Column::Second(Values::new(field, capacity), LastDate::default())
            }
            DataType::Timestamp(TimeUnit::Millisecond, None) => {
                Column::Millisecond(Values::new(field, capacity), LastDate::default())
            }
            DataType::Timestamp(TimeUnit::Microsecond, None) => {
                Column::Microsecond(Values::new(field, capacity), LastDate::default())
            }
            DataType::Timestamp(TimeUnit::Nanosecond, None) => {
                Column::Nanosecond(Values::new(field, capacity), LastDate::default())
            }
            DataType::Utf8 => Column::Utf8(
                StringBuilder::with_capacity(capacity, capacity * 16),
                field.is_nullable(),
            ),
            DataType::Struct(fields) => {
                let declared = match declared.data_type() {
                    DataType::Struct(declared) => declared,
                    _ => fields,
                };
                Column::Object(ObjectColumn::new(
                    fields,
                    declared,
                    field.is_nullable(),
                    capacity,
                )?)
            }
            _ => return None,
        })
    }

    /// Decodes the value at `input` (after any whitespace) into this field.
    fn decode(&mut self, input: &mut Input, scratch: &mut Vec<u8>) -> Step {
        let first = input.peek().ok_or(GiveUp)?;
        if first == b'n' {
            input.literal(b"null")?;
            return self.null();
        }
        match self {
            Column::Boolean(values, validity) => {
                let value = first == b't';
                if value {
                    input.literal(b"true")?;
                } else {
                    input.literal(b"false")?;
                }
                values.append(value);
                validity.valid();
            }
            Column::Int8(v) => v.push(narrow(integer(input.number_text()?)?)?),
            Column::Int16(v) => v.push(narrow(integer(input.number_text()?)?)?),
            Column::Int32(v) => v.push(narrow(integer(input.number_text()?)?)?),
            Column::Int64(v) => v.push(integer(input.number_text()?)?),
            Column::UInt8(v) => v.push(narrow(integer(input.number_text()?)?)?),
            Column::UInt16(v) => v.push(narrow(integer(input.number_text()?)?)?),
            Column::UInt32(v) => v.push(narrow(integer(input.number_text()?)?)?),
            Column::UInt64(v) => v.push(narrow(integer(input.number_text()?)?)?),
            Column::Float32(v) => v.push(float(input.number_text()?)?),
            Column::Float64(v) => v.push(float(input.number_text()?)?),
            Column::Decimal(v, precision, scale) => {
                v.push(decimal(input.number_text()?, *precision, *scale)?)
            }
            Column::Second(v, last) => v.push(instant(input, TimeUnit::Second, last)?),
            Column::Millisecond(v, last) => v.push(instant(input, TimeUnit::Millisecond, last)?),
            Column::Microsecond(v, last) => v.push(instant(input, TimeUnit::Microsecond, last)?),
            Column::Nanosecond(v, last) => v.push(instant(input, TimeUnit::Nanosecond, last)?),
            Column::Utf8(values, _) => {
                if input.next_byte() != Some(b'"') {
                    return Err(GiveUp);
                }
                let (raw, escaped) = input.raw_string()?;
                let bytes = if escaped {
                    unescape(raw, scratch)?;
                    scratch.as_slice()
                } else {
                    raw
                };
                values.append_value(utf8(bytes)?);
            }
            Column::Object(object) => {
                if input.next_byte() != Some(b'{') {
                    return Err(GiveUp);
                }
                object.fields(input, scratch)?;
                object.validity.valid();
            }
        }
        Ok(())
    }

    /// A NULL in this field (given, or its key missing).
    fn null(&mut self) -> Step {
        match self {
            Column::Boolean(values, validity) => {
                values.append(false);
                validity.null()
            }
            Column::Int8(v) => v.null(),
            Column::Int16(v) => v.null(),
            Column::Int32(v) => v.null(),
            Column::Int64(v) => v.null(),
            Column::UInt8(v) => v.null(),
            Column::UInt16(v) => v.null(),
            Column::UInt32(v) => v.null(),
            Column::UInt64(v) => v.null(),
            Column::Float32(v) => v.null(),
            Column::Float64(v) => v.null(),
            Column::Decimal(v, _, _) => v.null(),
            Column::Second(v, _) => v.null(),
            Column::Millisecond(v, _) => v.null(),
            Column::Microsecond(v, _) => v.null(),
            Column::Nanosecond(v, _) => v.null(),
            Column::Utf8(values, nullable) => {
                if !*nullable {
                    return Err(GiveUp);
                }
                values.append_null();
                Ok(())
            }
            Column::Object(object) => {
                object.validity.null()?;
                object.children.iter_mut().try_for_each(Column::null)
            }
        }
    }

    fn finish(&mut self) -> Step<ArrayRef> {
        Ok(match self {
            Column::Boolean(values, validity) => {
                Arc::new(BooleanArray::new(values.finish(), validity.finish()))
            }
            Column::Int8(v) => v.finish(),
            Column::Int16(v) => v.finish(),
            Column::Int32(v) => v.finish(),
            Column::Int64(v) => v.finish(),
            Column::UInt8(v) => v.finish(),
            Column::UInt16(v) => v.finish(),
            Column::UInt32(v) => v.finish(),
            Column::UInt64(v) => v.finish(),
            Column::Float32(v) => v.finish(),
            Column::Float64(v) => v.finish(),
            Column::Decimal(v, _, _) => v.finish(),
            Column::Second(v, _) => v.finish(),
            Column::Millisecond(v, _) => v.finish(),
            Column::Microsecond(v, _) => v.finish(),
            Column::Nanosecond(v, _) => v.finish(),
            Column::Utf8(values, _) => Arc::new(values.finish()),
            Column::Object(object) => {
                let children = object.finish_fields()?;
                let nulls = object.validity.finish();
                Arc::new(
                    StructArray::try_new(object.fields.clone(), children, nulls)
                        .map_err(|_| GiveUp)?,
                )
            }
        })
    }
}

/// An integer in a narrower type, or give up (arrow-json names the overflow).
fn narrow<T: TryFrom<i64>>(value: i64) -> Step<T> {
    T::try_from(value).map_err(|_| GiveUp)
}

/// A float written as a JSON number.
fn float<T: std::str::FromStr>(text: &[u8]) -> Step<T> {
    std::str::from_utf8(text)
        .map_err(|_| GiveUp)?
        .parse()
        .map_err(|_| GiveUp)
}

/// A timestamp: a string in [`timestamp`]'s form, or an integer in the column's unit.
fn instant(input: &mut Input, unit: TimeUnit, last: &mut LastDate) -> Step<i64> {
    if input.peek() == Some(b'"') {
        input.at += 1;
        let (raw, escaped) = input.raw_string()?;
        if escaped {
            return Err(GiveUp);
        }
        timestamp(raw, unit, last)
    } else {
        integer(input.number_text()?)
    }
}

/// The fields of an object (or of the record itself), by name.
struct ObjectColumn {
    fields: Fields,
    /// The object's keys as the table declares them, in order: the decoded fields and
    /// the ones no query reads, so that the keys of a record written in declared order
    /// are each matched in place, whether their value is decoded or stepped over.
    names: Vec<FieldName>,
    /// Per name, the decoded field it is (`None`: its value is stepped over).
    slots: Vec<Option<usize>>,
    children: Vec<Column>,
    validity: Validity,
    /// Per decoded field, the last row (`row` counts objects decoded) that gave it a
    /// value, to find the keys a row leaves out and the keys it repeats.
    seen_in: Vec<usize>,
    row: usize,
    /// Where the next key is looked for first (an index of `names`): keys usually come
    /// in declared order.
    next: usize,
}

impl ObjectColumn {
    /// Decodes `fields` of an object declared with `declared` (the same fields, or more);
    /// `None` when a field has a type [`Column`] does not build.
    fn new(fields: &Fields, declared: &Fields, nullable: bool, capacity: usize) -> Option<Self> {
        let mut names: Vec<&str> = declared.iter().map(|f| f.name().as_str()).collect();
        for field in fields {
            if !names.contains(&field.name().as_str()) {
                names.push(field.name());
            }
        }
        Some(Self {
            fields: fields.clone(),
            slots: names
                .iter()
                .map(|name| fields.iter().position(|f| f.name() == name))
                .collect(),
            names: names.into_iter().map(FieldName::new).collect(),
            children: fields
                .iter()
                .map(|f| {
                    let declared = declared.iter().find(|d| d.name() == f.name());
                    Column::new(f, declared.map_or(f.as_ref(), |d| d.as_ref()), capacity)
                })
                .collect::<Option<_>>()?,
            validity: Validity::new(nullable, capacity),
            seen_in: vec![0; fields.len()],
            row: 0,
            next: 0,
        })
    }

    /// The field named `key`, `key` being the start of `window`.
    fn field(&self, key: &[u8], window: &[u8]) -> Option<usize> {
        let prefix = prefix(window, key.len());
        // From `next` to the end, then from the start: no division per probe.
        let next = self.next.min(self.names.len());
        (next..self.names.len())
            .chain(0..next)
            .find(|i| self.names[*i].is(key, prefix))
    }

    /// The next field in schema order, when the key at `input` (after its opening quote)
    /// is its name written plainly; the key and its closing quote are then consumed.
    /// Keys most often come in schema order, so most are matched without looking for
    /// their end first.
    fn expected_field(&self, input: &mut Input) -> Option<usize> {
        let name = self.names.get(self.next).filter(|name| name.plain)?;
        let rest = &input.bytes[input.at..];
        let len = name.name.len();
        if rest.get(len) != Some(&b'"') || !name.is(&rest[..len], prefix(rest, len)) {
            return None;
        }
        input.at += len + 1;
        Some(self.next)
    }

    /// After an object's `{`: its keys and values up to its `}`; fields it leaves out
    /// are NULL.
    fn fields(&mut self, input: &mut Input, scratch: &mut Vec<u8>) -> Step {
        self.row += 1;
        input.skip_whitespace();
        if input.peek() == Some(b'}') {
            input.at += 1;
        } else {
            loop {
                if input.next_byte() != Some(b'"') {
                    return Err(GiveUp);
                }
                let name = match self.expected_field(input) {
                    Some(i) => Some(i),
                    None => {
                        let key_at = input.at;
                        let (key, escaped) = input.raw_string()?;
                        if escaped {
                            return Err(GiveUp);
                        }
                        self.field(key, &input.bytes[key_at..])
                    }
                };
                input.skip_whitespace();
                if input.next_byte() != Some(b':') {
                    return Err(GiveUp);
                }
                input.skip_whitespace();
                if let Some(i) = name {
                    self.next = i + 1;
                }
                match name.and_then(|i| self.slots[i]) {
                    Some(child) => {
                        if self.seen_in[child] == self.row {
                            return Err(GiveUp);
                        }
                        self.seen_in[child] = self.row;
                        self.children[child].decode(input, scratch)?;
                    }
                    None => input.skip_value()?,
                }
                input.skip_whitespace();
                match input.next_byte() {
                    Some(b',') => input.skip_whitespace(),
                    Some(b'}') => break,
                    _ => return Err(GiveUp),
                }
            }
        }
        for (child, seen_in) in self.children.iter_mut().zip(&self.seen_in) {
            if *seen_in != self.row {
                child.null()?;
            }
        }
        self.next = 0;
        Ok(())
    }

    fn finish_fields(&mut self) -> Step<Vec<ArrayRef>> {
        self.children.iter_mut().map(Column::finish).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::JsonFormat;
    use super::*;
    use crate::format::BadRecords;
    use datafusion::arrow::datatypes::Schema;

    /// A seeded xorshift generator, so a failure repeats.
    struct Random(u64);

    impl Random {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }

        fn pick<'a>(&mut self, choices: &[&'a str]) -> &'a str {
            choices[self.below(choices.len())]
        }
    }

    fn schema() -> SchemaRef {
        use DataType::*;
        let inner = Fields::from(vec![Field::new("x", Int16, true)]);
        let nested = Fields::from(vec![
            Field::new("a", Int64, true),
            Field::new("s", Utf8, true),
            Field::new("t", Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("inner", Struct(inner), true),
        ]);
        Arc::new(Schema::new(vec![
            Field::new("id", Int64, false),
            Field::new("small", Int32, true),
            Field::new("flag", Boolean, true),
            Field::new("price", Decimal128(12, 2), true),
            Field::new("ratio", Float64, true),
            Field::new("single", Float32, true),
            Field::new("name", Utf8, true),
            Field::new("ts", Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("micros", Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("nested", Struct(nested), true),
        ]))
    }

    const INTEGERS: &[&str] = &["0", "-7", "42", "9223372036854775807", "123456789012345678"];
    const NUMBERS: &[&str] = &["0", "1.5", "-0.25", "1e3", "2.5E-3", "12", "677.58", "-3.1"];
    const STRINGS: &[&str] = &[
        r#""""#,
        r#""plain""#,
        r#""tab\there""#,
        r#""quote \" and \\ slash \/""#,
        r#""\u00e9t\u00E9 \ud83d\ude00""#,
        "\"caf\u{e9} \u{1f600}\"",
        r#""{not [an object""#,
    ];
    const TIMES: &[&str] = &[
        r#""2026-01-01 00:00:00.081""#,
        r#""2024-02-29T23:59:59""#,
        r#""1969-12-31 23:59:59.9""#,
        r#""1900-03-01 12:00:00.123456789""#,
        "1704067500000",
    ];
    /// Values arrow-json may decode another way, or not at all: the one-pass decoder
    /// must give them up or decode them as arrow-json does.
    const TROUBLE: &[&str] = &[
        r#""12""#,
        "1.0",
        "99999999999999999999",
        "1e999",
        "-",
        "01",
        "true",
        r#""2024-02-30 00:00:00""#,
        r#""2024-01-01 00:00:60""#,
        r#""2024-01-01T00:00:00Z""#,
        r#""2024-01-01 00:00:00.1234567891""#,
        r#""2024-01-01""#,
        r#""\ud800""#,
        r#""\x""#,
        "[1, 2]",
        "{}",
        "12.345",
        "1234567890123.5",
        "1.",
        "-1.e5",
        "1e",
        "1e+",
        "-0",
        "00.5",
        "nul",
    ];
    /// Values under keys the schema does not hold: valid JSON of every kind.
    const OTHERS: &[&str] = &[
        r#"{"deep": [1, {"a": "}]"}, null], "b": "\"{"}"#,
        "[]",
        "-1.5e-7",
        "false",
        "null",
        r#""\\""#,
    ];

    fn value(random: &mut Random, field: &Field, trouble: bool) -> String {
        if (field.is_nullable() || trouble) && random.below(12) == 0 {
            return "null".into();
        }
        if trouble && random.below(24) == 0 {
            return random.pick(TROUBLE).into();
        }
        match field.data_type() {
            DataType::Int64 | DataType::Int32 | DataType::Int16 => {
                let v = random.pick(INTEGERS);
                if field.data_type() == &DataType::Int64 || v.len() < 4 {
                    v.into()
                } else {
                    random.below(300).to_string()
                }
            }
            DataType::Boolean => random.pick(&["true", "false"]).into(),
            DataType::Decimal128(..) => random.pick(&["677.58", "-0.5", "12", "0.07", "0"]).into(),
            DataType::Float64 | DataType::Float32 => random.pick(NUMBERS).into(),
            DataType::Utf8 => random.pick(STRINGS).into(),
            DataType::Timestamp(..) => random.pick(TIMES).into(),
            DataType::Struct(fields) => object(random, fields, trouble),
            _ => "null".into(),
        }
    }

    /// An object with some of `fields` in any order, keys the schema does not hold, and
    /// (with `trouble`) repeated keys and values of the wrong kind.
    fn object(random: &mut Random, fields: &Fields, trouble: bool) -> String {
        let mut members = Vec::new();
        for field in fields {
            if !field.is_nullable() || random.below(5) != 0 {
                let value = value(random, field, trouble);
                members.push(format!(r#""{}": {value}"#, field.name()));
            }
        }
        for _ in 0..random.below(3) {
            members.push(format!(
                r#""other{}":{}"#,
                random.below(3),
                random.pick(OTHERS)
            ));
        }
        if trouble && random.below(10) == 0 {
            members.push(format!(r#""{}": 1"#, fields[0].name()));
        }
        for i in (1..members.len()).rev() {
            members.swap(i, random.below(i + 1));
        }
        let space = random.pick(&["", " ", "\n\t "]);
        format!("{{{space}{}{space}}}", members.join(&format!(",{space}")))
    }

    #[test]
    fn every_batch_it_builds_equals_arrow_jsons() {
        let schema = schema();
        let one_pass = OnePassDecoder::new(schema.clone()).unwrap();
        let arrow_json = JsonFormat::new(schema.clone(), BadRecords::Fail);
        let mut random = Random(0x2545_f491_4f6c_dd1d);
        let mut built_with_trouble = 0;
        for batch in 0..400 {
            let trouble = batch % 2 == 1;
            let records: Vec<String> = (0..1 + random.below(if trouble { 3 } else { 20 }))
                .map(|_| object(&mut random, schema.fields(), trouble))
                .collect();
            let shown = records.join("\n");
            let records: Vec<&[u8]> = records.iter().map(|r| r.as_bytes()).collect();
            let expected = arrow_json.decode_with_arrow_json(&records);
            match one_pass.decode(&records) {
                Ok(decoded) => {
                    built_with_trouble += usize::from(trouble);
                    let expected = expected.unwrap_or_else(|e| {
                        panic!("arrow-json fails ({e}) where the one pass decodes:\n{shown}")
                    });
                    assert_eq!(decoded, expected, "\n{shown}");
                }
                Err(GiveUp) => assert!(trouble, "a batch of valid values was given up:\n{shown}"),
            }
        }
        assert!(built_with_trouble > 20, "{built_with_trouble} of 200 built");
    }

    /// `schema()` less some top-level columns and nested fields, as a plan that reads
    /// only the others decodes it.
    fn pruned_schema() -> SchemaRef {
        let declared = schema();
        let fields = declared
            .fields()
            .iter()
            .filter(|f| !["flag", "name"].contains(&f.name().as_str()))
            .map(|f| match f.data_type() {
                DataType::Struct(nested) => {
                    let kept: Fields = nested
                        .iter()
                        .filter(|n| !["s", "inner"].contains(&n.name().as_str()))
                        .cloned()
                        .collect();
                    Arc::new(f.as_ref().clone().with_data_type(DataType::Struct(kept)))
                }
                _ => f.clone(),
            })
            .collect::<Vec<_>>();
        Arc::new(Schema::new(fields))
    }

    #[test]
    fn a_batch_of_some_fields_equals_arrow_jsons_of_those_fields() {
        let (declared, decoded) = (schema(), pruned_schema());
        let one_pass = OnePassDecoder::within(decoded.clone(), declared.clone()).unwrap();
        let arrow_json = JsonFormat::new(decoded, BadRecords::Fail);
        let mut random = Random(0x9e37_79b9_7f4a_7c15);
        let mut built = 0;
        for batch in 0..400 {
            let trouble = batch % 2 == 1;
            let records: Vec<String> = (0..1 + random.below(20))
                .map(|_| object(&mut random, declared.fields(), trouble))
                .collect();
            let shown = records.join("\n");
            let records: Vec<&[u8]> = records.iter().map(|r| r.as_bytes()).collect();
            if let Ok(decoded) = one_pass.decode(&records) {
                built += 1;
                match arrow_json.decode_with_arrow_json(&records) {
                    Ok(expected) => assert_eq!(decoded, expected, "\n{shown}"),
                    // A bad value in a field left out is stepped over unchecked (as in
                    // Flink); arrow-json's tokenizer still rejects a malformed one.
                    Err(_) if trouble => {}
                    Err(e) => panic!("arrow-json fails ({e}) where the one pass decodes:\n{shown}"),
                }
            } else {
                assert!(trouble, "a batch of valid values was given up:\n{shown}");
            }
        }
        assert!(built > 200, "{built} of 400 built");
    }

    #[test]
    fn after_eight_batches_given_up_it_tries_one_in_sixty_four_until_one_is_built() {
        let decoder = OnePassDecoder::new(schema()).unwrap();
        let bad: &[&[u8]] = &[br#"{"id": "1"}"#];
        let good: &[&[u8]] = &[br#"{"id": 1}"#];
        for _ in 0..GIVE_UPS_BEFORE_RESTING {
            assert!(decoder.worth_trying());
            assert_eq!(decoder.decode(bad), Err(GiveUp));
        }
        let tried = (0..2 * RESTING_BATCHES)
            .filter(|_| decoder.worth_trying())
            .count();
        assert_eq!(tried, 2);
        assert!(decoder.decode(good).is_ok());
        assert!((0..10).all(|_| decoder.worth_trying()));
    }

    #[test]
    fn a_schema_with_a_type_it_does_not_build_is_left_to_arrow_json() {
        use DataType::*;
        let zoned = Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let list = List(Arc::new(Field::new("item", Int64, true)));
        for data_type in [zoned, list, Decimal128(10, -2)] {
            let nested = Struct(Fields::from(vec![Field::new("x", data_type, true)]));
            let schema = Schema::new(vec![Field::new("n", nested, true)]);
            assert!(OnePassDecoder::new(Arc::new(schema)).is_none());
        }
        assert!(OnePassDecoder::new(schema()).is_some());
    }
}
