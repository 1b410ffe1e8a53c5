//! `'format' = 'debezium-json'`: Debezium's change events as its JSON converter writes
//! them, read as an updating stream, and written from one.
//!
//! Reading: `{"before": row, "after": row, "op": "c" | "r" | "u" | "d", "source": {...},
//! "ts_ms": ...}`, optionally wrapped as `{"schema": ..., "payload": ...}`
//! (`'debezium-json.schema-include'`). `c` and `r` (snapshot reads) become `+I` of
//! `after`; `u` becomes `-U` of `before` (when the event carries it) and `+U` of `after`;
//! `d` becomes `-D` of `before`. Tombstones (no value) carry no row. Values in Debezium's
//! encodings: DECIMAL as the base64 of its unscaled big-endian integer (`precise` mode),
//! as a string (`string` mode) or a number (`double` mode); TIMESTAMP as a number in the
//! unit of its precision (`io.debezium.time.Timestamp` ms for precision ≤ 3,
//! `MicroTimestamp` µs for ≤ 6 — declare the column with the source's precision) or an
//! ISO-8601 string (`ZonedTimestamp`); DATE as days since the epoch.
//!
//! Records are decoded a poll at a time with arrow-json into the envelope's Arrow struct
//! (the columns Debezium encodes specially arrive as text), then each column is converted
//! once per batch and the change rows are gathered with one `interleave` per column.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Decimal128Array, Int8Array, RecordBatch, StructArray,
    TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray,
    TimestampSecondArray,
};
use datafusion::arrow::compute::{cast, interleave};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::json::ReaderBuilder;
use runnel_sql::changelog::ChangeKind;

/// The metadata Debezium's envelope carries, by Flink's keys.
pub const METADATA_KEYS: &[&str] = &[
    "value.source.timestamp",
    "value.ingestion-timestamp",
    "value.source.table",
    "value.source.database",
    "value.source.schema",
];

/// `'format' = 'debezium-json'`, reading.
#[derive(Debug, Clone)]
pub struct DebeziumJsonFormat {
    /// The row columns `before` and `after` hold, in the table's types.
    pub payload: SchemaRef,
    /// The metadata (`value.*` keys) to give each row, with their declared types.
    pub metadata: Vec<(String, DataType)>,
    /// `'debezium-json.schema-include'`: records are `{"schema": ..., "payload": ...}`.
    pub schema_include: bool,
    /// `'debezium-json.ignore-parse-errors'`: skip (and count) events that do not decode.
    pub bad_records: super::BadRecords,
    /// The table has a primary key: an update without its `before` image (PostgreSQL's
    /// default replica identity) is read as `+U` alone, and the key's previous row is
    /// taken from the table's state.
    pub keyed: bool,
}

/// Change rows decoded from a group of events.
#[derive(Debug)]
pub struct DecodedChanges {
    /// The payload columns, then the metadata columns asked for, then the change column.
    pub batch: RecordBatch,
    /// For each row, the index of the event it came from.
    pub events: Vec<u32>,
}

impl DebeziumJsonFormat {
    /// The Arrow struct arrow-json decodes each event into: the envelope, with the row
    /// columns Debezium encodes specially (DECIMAL, TIMESTAMP, DATE) as text.
    /// The Arrow shape of an event: wrapped as `{"schema": ..., "payload": ...}` or not.
    fn envelope(&self, wrapped: bool) -> SchemaRef {
        let row: Fields = self
            .payload
            .fields()
            .iter()
            .map(|f| Arc::new(Field::new(f.name(), wire_type(f.data_type()), true)))
            .collect();
        let source = Fields::from(vec![
            Field::new("ts_ms", DataType::Int64, true),
            Field::new("table", DataType::Utf8, true),
            Field::new("db", DataType::Utf8, true),
            Field::new("schema", DataType::Utf8, true),
        ]);
        let fields = vec![
            Field::new("before", DataType::Struct(row.clone()), true),
            Field::new("after", DataType::Struct(row), true),
            Field::new("op", DataType::Utf8, true),
            Field::new("ts_ms", DataType::Int64, true),
            Field::new("source", DataType::Struct(source), true),
        ];
        if wrapped {
            Arc::new(Schema::new(vec![Field::new(
                "payload",
                DataType::Struct(fields.into()),
                true,
            )]))
        } else {
            Arc::new(Schema::new(fields))
        }
    }

    /// The schema of [`DecodedChanges::batch`].
    pub fn output_schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .payload
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.extend(
            self.metadata
                .iter()
                .map(|(key, data_type)| Field::new(key, data_type.clone(), true)),
        );
        fields.push(runnel_sql::changelog::change_field());
        Arc::new(Schema::new(fields))
    }

    /// Decodes every event, or fails naming what is wrong with the first bad one (as
    /// `Err((event index, reason))`). An event that is JSON `null` (a tombstone, as a file
    /// of captured records or a console consumer writes it) carries no change.
    pub fn decode_all(&self, events: &[&[u8]]) -> Result<DecodedChanges, (usize, String)> {
        let kept: Vec<usize> = (0..events.len())
            .filter(|&i| events[i].trim_ascii() != b"null")
            .collect();
        if kept.len() == events.len() {
            return self.decode_present(events);
        }
        let present: Vec<&[u8]> = kept.iter().map(|&i| events[i]).collect();
        let mut decoded = self
            .decode_present(&present)
            .map_err(|(i, reason)| (kept.get(i).copied().unwrap_or(i), reason))?;
        for event in &mut decoded.events {
            *event = kept[*event as usize] as u32;
        }
        Ok(decoded)
    }

    /// Decodes events that are not tombstones. With the schema envelope, Kafka Connect
    /// writes the schema first and the payload last: the decoder gets the payloads alone,
    /// so the schema — most of each record's bytes — is skipped without being tokenized.
    /// Events of another shape, or that fail so, are decoded whole.
    fn decode_present(&self, events: &[&[u8]]) -> Result<DecodedChanges, (usize, String)> {
        if self.schema_include {
            if let Some(payloads) = events
                .iter()
                .map(|e| payload_of(e))
                .collect::<Option<Vec<_>>>()
            {
                if let Ok(decoded) = self.decode_events(&payloads, false) {
                    return Ok(decoded);
                }
            }
        }
        self.decode_events(events, self.schema_include)
    }

    fn decode_events(
        &self,
        events: &[&[u8]],
        wrapped: bool,
    ) -> Result<DecodedChanges, (usize, String)> {
        let envelope = self.envelope(wrapped);
        let mut decoder = ReaderBuilder::new(envelope.clone())
            .with_batch_size(events.len().max(1))
            .with_coerce_primitive(true)
            .build_decoder()
            .map_err(|e| (0, e.to_string()))?;
        for (i, event) in events.iter().enumerate() {
            decoder.decode(event).map_err(|e| (i, e.to_string()))?;
            if decoder.has_partial_record() {
                return Err((i, "incomplete JSON value".into()));
            }
            if decoder.len() != i + 1 {
                return Err((
                    i,
                    if decoder.len() <= i {
                        "empty event".into()
                    } else {
                        "more than one JSON value in one event".into()
                    },
                ));
            }
        }
        let decoded = match decoder.flush().map_err(|e| (0, e.to_string()))? {
            Some(batch) => batch,
            None => RecordBatch::new_empty(envelope),
        };
        let body: StructArray = if wrapped {
            let payload = decoded.column(0).as_struct();
            if let Some(i) = (0..payload.len()).find(|&i| payload.is_null(i)) {
                return Err((
                    i,
                    "no 'payload': the event has no schema/payload envelope (set \
                     'debezium-json.schema-include' = 'false')"
                        .into(),
                ));
            }
            payload.clone()
        } else {
            StructArray::from(decoded)
        };
        self.changes(&body)
    }

    /// The change rows of decoded envelopes.
    fn changes(&self, body: &StructArray) -> Result<DecodedChanges, (usize, String)> {
        let column = |name: &str| {
            body.column_by_name(name)
                .ok_or_else(|| (0, format!("the envelope has no '{name}'")))
        };
        let before = column("before")?.as_struct().clone();
        let after = column("after")?.as_struct().clone();
        let op = column("op")?.as_string::<i32>().clone();
        if self.schema_include {
            if let Some(i) = (0..body.len()).find(|&i| op.is_null(i) && after.is_null(i)) {
                if before.is_null(i) {
                    return Err((i, "no 'op', 'before' or 'after': not a change event".into()));
                }
            }
        }
        // (side, event): side 0 is `before`, 1 is `after`.
        let mut rows: Vec<(usize, usize)> = Vec::with_capacity(body.len() * 2);
        let mut kinds: Vec<i8> = Vec::with_capacity(body.len() * 2);
        let mut events: Vec<u32> = Vec::with_capacity(body.len() * 2);
        let mut push = |side: usize, event: usize, kind: ChangeKind| {
            rows.push((side, event));
            kinds.push(kind as i8);
            events.push(event as u32);
        };
        for event in 0..body.len() {
            let needs = |array: &StructArray, side: &str| {
                if array.is_null(event) {
                    Err((
                        event,
                        format!("a '{}' event without '{side}'", op.value(event)),
                    ))
                } else {
                    Ok(())
                }
            };
            if op.is_null(event) {
                return Err((event, "no 'op': not a Debezium change event".into()));
            }
            match op.value(event) {
                "c" | "r" => {
                    needs(&after, "after")?;
                    push(1, event, ChangeKind::Insert);
                }
                "u" => {
                    needs(&after, "after")?;
                    if !before.is_null(event) {
                        push(0, event, ChangeKind::UpdateBefore);
                    } else if !self.keyed {
                        return Err((
                            event,
                            "an update without its 'before' row: declare the table's PRIMARY \
                             KEY (Runnel then keeps each key's last row), or set the source \
                             table's REPLICA IDENTITY to FULL"
                                .into(),
                        ));
                    }
                    push(1, event, ChangeKind::UpdateAfter);
                }
                "d" => {
                    needs(&before, "before")?;
                    push(0, event, ChangeKind::Delete);
                }
                "t" | "m" => {} // truncate, message: no row of the table
                other => {
                    return Err((
                        event,
                        format!("unknown op '{other}' (Debezium writes c, r, u, d, t and m)"),
                    ))
                }
            }
        }
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.payload.fields().len() + 1);
        for (i, field) in self.payload.fields().iter().enumerate() {
            let sides = [
                to_table_type(before.column(i), field.data_type())
                    .map_err(|e| (0, format!("column {}: {e}", field.name())))?,
                to_table_type(after.column(i), field.data_type())
                    .map_err(|e| (0, format!("column {}: {e}", field.name())))?,
            ];
            let sides: Vec<&dyn Array> = sides.iter().map(|a| a.as_ref()).collect();
            columns.push(interleave(&sides, &rows).map_err(|e| (0, e.to_string()))?);
        }
        let take_events = |array: &ArrayRef| -> Result<ArrayRef, (usize, String)> {
            let indices = datafusion::arrow::array::UInt32Array::from(events.clone());
            datafusion::arrow::compute::take(array, &indices, None).map_err(|e| (0, e.to_string()))
        };
        let source = column("source")?.as_struct().clone();
        for (key, data_type) in &self.metadata {
            let value: ArrayRef = match key.as_str() {
                "value.source.timestamp" => source_column(&source, "ts_ms")?,
                "value.ingestion-timestamp" => column("ts_ms")?.clone(),
                "value.source.table" => source_column(&source, "table")?,
                "value.source.database" => source_column(&source, "db")?,
                "value.source.schema" => source_column(&source, "schema")?,
                other => return Err((0, format!("unknown metadata key '{other}'"))),
            };
            let value = match (value.data_type(), data_type) {
                (DataType::Int64, DataType::Timestamp(TimeUnit::Millisecond, zone)) => {
                    let millis = value.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                    Arc::new(
                        TimestampMillisecondArray::new(
                            millis.values().clone(),
                            millis.nulls().cloned(),
                        )
                        .with_timezone_opt(zone.clone()),
                    ) as ArrayRef
                }
                _ => cast(&value, data_type).map_err(|e| (0, format!("metadata {key}: {e}")))?,
            };
            columns.push(take_events(&value)?);
        }
        columns.push(Arc::new(Int8Array::from(kinds)));
        let batch =
            RecordBatch::try_new(self.output_schema(), columns).map_err(|e| (0, e.to_string()))?;
        Ok(DecodedChanges { batch, events })
    }
}

/// The payload of an event as Kafka Connect's JSON converter writes it,
/// `{"schema":{...},"payload":{...}}`; `None` for any other shape. (A `"payload":` key
/// cannot hide in the schema — column names are values there — nor inside a string,
/// whose quotes are escaped.)
fn payload_of(event: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b",\"payload\":";
    let event = event.trim_ascii();
    if !event.starts_with(b"{\"schema\":") {
        return None;
    }
    let at = memchr::memmem::find(event, KEY)?;
    let rest = &event[at + KEY.len()..];
    // Drop the envelope's closing brace.
    let inner = rest.strip_suffix(b"}")?.trim_ascii();
    inner.starts_with(b"{").then_some(inner)
}

fn source_column(source: &StructArray, name: &str) -> Result<ArrayRef, (usize, String)> {
    source
        .column_by_name(name)
        .cloned()
        .ok_or_else(|| (0, format!("the envelope's source has no '{name}'")))
}

/// How a table type travels in Debezium's JSON: as text where Debezium encodes it its own
/// way, else as itself.
fn wire_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Decimal128(..) | DataType::Timestamp(..) | DataType::Date32 => DataType::Utf8,
        other => other.clone(),
    }
}

/// `values` (as [`wire_type`] decoded them) in the table's type.
fn to_table_type(values: &ArrayRef, data_type: &DataType) -> Result<ArrayRef, String> {
    if values.data_type() == data_type {
        return Ok(values.clone());
    }
    let text = values
        .as_string_opt::<i32>()
        .ok_or_else(|| format!("expected text for {data_type}, got {}", values.data_type()))?;
    let each = |parse: &dyn Fn(&str) -> Result<i128, String>| -> Result<Vec<Option<i128>>, String> {
        text.iter().map(|v| v.map(parse).transpose()).collect()
    };
    Ok(match data_type {
        DataType::Decimal128(precision, scale) => {
            let values = each(&|v| parse_decimal(v, *scale))?;
            Arc::new(
                Decimal128Array::from(values)
                    .with_precision_and_scale(*precision, *scale)
                    .map_err(|e| e.to_string())?,
            )
        }
        DataType::Date32 => {
            let values = each(&|v| parse_date(v).map(i128::from))?;
            Arc::new(Date32Array::from_iter(
                values.into_iter().map(|v| v.map(|d| d as i32)),
            ))
        }
        DataType::Timestamp(unit, zone) => {
            let values: Vec<Option<i64>> = each(&|v| parse_timestamp(v, *unit).map(i128::from))?
                .into_iter()
                .map(|v| v.map(|t| t as i64))
                .collect();
            let zone = zone.clone();
            match unit {
                TimeUnit::Second => {
                    Arc::new(TimestampSecondArray::from(values).with_timezone_opt(zone))
                }
                TimeUnit::Millisecond => {
                    Arc::new(TimestampMillisecondArray::from(values).with_timezone_opt(zone))
                }
                TimeUnit::Microsecond => {
                    Arc::new(TimestampMicrosecondArray::from(values).with_timezone_opt(zone))
                }
                TimeUnit::Nanosecond => {
                    Arc::new(TimestampNanosecondArray::from(values).with_timezone_opt(zone))
                }
            }
        }
        other => return Err(format!("cannot read {other} from Debezium's text")),
    })
}

/// A DECIMAL's unscaled value at `scale`: from its text (`"12.50"`, Debezium's `string`
/// or `double` modes) or from the base64 of its big-endian two's-complement unscaled
/// integer (Debezium's default `precise` mode, at the column's scale).
fn parse_decimal(text: &str, scale: i8) -> Result<i128, String> {
    let numeric = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
        && text.chars().any(|c| c.is_ascii_digit());
    if numeric {
        return decimal_text(text, scale).ok_or_else(|| format!("'{text}' is not a number"));
    }
    let bytes = base64_decode(text).ok_or_else(|| {
        format!(
            "'{text}' is neither a number nor the base64 of a DECIMAL (Debezium's precise mode)"
        )
    })?;
    if bytes.is_empty() || bytes.len() > 16 {
        return Err(format!(
            "'{text}' holds {} bytes, not a DECIMAL",
            bytes.len()
        ));
    }
    let negative = bytes[0] & 0x80 != 0;
    let mut value: i128 = if negative { -1 } else { 0 };
    for byte in bytes {
        value = (value << 8) | i128::from(byte);
    }
    Ok(value)
}

/// `text` (a decimal number, possibly with an exponent) as an integer at `scale`.
fn decimal_text(text: &str, scale: i8) -> Option<i128> {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], text[at + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let negative = mantissa.starts_with('-');
    let mantissa = mantissa.trim_start_matches(['-', '+']);
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = format!("{whole}{fraction}");
    let mut value: i128 = digits.parse().ok()?;
    // value * 10^(exponent - fraction digits) expressed at `scale`.
    let shift = i32::from(scale) + exponent - fraction.len() as i32;
    if shift >= 0 {
        value = value.checked_mul(10i128.checked_pow(shift as u32)?)?;
    } else {
        let divisor = 10i128.checked_pow((-shift) as u32)?;
        let rounded = (value % divisor) * 2 >= divisor;
        value = value / divisor + i128::from(rounded);
    }
    Some(if negative { -value } else { value })
}

/// Standard base64 (with or without padding); `None` for anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let text = text.trim_end_matches('=').as_bytes();
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        let mut bits: u32 = 0;
        for (i, &c) in chunk.iter().enumerate() {
            bits |= value(c)? << (18 - 6 * i);
        }
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// A DATE as days since the epoch: Debezium's number, or `yyyy-MM-dd`.
fn parse_date(text: &str) -> Result<i64, String> {
    if let Ok(days) = text.parse::<i64>() {
        return Ok(days);
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|d| (d - chrono::NaiveDate::default()).num_days())
        .map_err(|_| format!("'{text}' is not a date"))
}

/// A TIMESTAMP in `unit`: Debezium's number (in the unit of the column's precision, which
/// the table declares), or an ISO-8601 / `yyyy-MM-dd HH:mm:ss[.f]` string.
fn parse_timestamp(text: &str, unit: TimeUnit) -> Result<i64, String> {
    let per_second: i64 = match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    };
    if let Ok(value) = text.parse::<i64>() {
        // Beyond the year 9999 in the declared unit: the column's precision differs from
        // the source's (e.g. microseconds read as milliseconds).
        if value.unsigned_abs() / per_second as u64 > 253_402_300_799 {
            return Err(format!(
                "{value} is past the year 9999 as a TIMESTAMP of this precision: declare the \
                 column with the source column's precision (Debezium writes TIMESTAMP(6) in \
                 microseconds, TIMESTAMP(3) in milliseconds)"
            ));
        }
        return Ok(value);
    }
    let nanos = chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc).naive_utc())
        .ok()
        .or_else(|| {
            ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
                .iter()
                .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
        })
        .and_then(|t| t.and_utc().timestamp_nanos_opt())
        .ok_or_else(|| format!("'{text}' is not a timestamp"))?;
    Ok(nanos / (1_000_000_000 / per_second))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events as Debezium 3.6.1's PostgreSQL connector wrote them (JSON converter with
    /// schemas) for `policies (policy_id BIGINT PRIMARY KEY, holder TEXT, premium
    /// NUMERIC(12,2), updated_at TIMESTAMP(3))`: a snapshot read, an update (no `before`:
    /// default replica identity), an insert and a delete.
    const EVENTS: &[&str] = &[
        r#"{"schema":{"type":"struct","fields":[]},"payload":{"before":null,"after":{"policy_id":1,"holder":"ann","premium":"BBo=","updated_at":1767225601000},"source":{"version":"3.6.1.Final","connector":"postgresql","name":"pg","ts_ms":1795864631164,"snapshot":"last","db":"runnel","sequence":"[null,\"26595568\"]","ts_us":1795864631164000,"ts_ns":1795864631164000000,"schema":"public","table":"policies","txId":752,"lsn":26595568,"xmin":null},"transaction":null,"op":"r","ts_ms":1795864631415,"ts_us":1795864631415245,"ts_ns":1795864631415245000}}"#,
        r#"{"schema":{"type":"struct","fields":[]},"payload":{"before":null,"after":{"policy_id":1,"holder":"ann","premium":"BGU=","updated_at":1767225660000},"source":{"version":"3.6.1.Final","connector":"postgresql","name":"pg","ts_ms":1795864633985,"snapshot":"false","db":"runnel","sequence":"[\"26604656\",\"26604712\"]","schema":"public","table":"policies","txId":754,"lsn":26604712},"transaction":null,"op":"u","ts_ms":1795864634181}}"#,
        r#"{"schema":{"type":"struct","fields":[]},"payload":{"before":null,"after":{"policy_id":2,"holder":"bob","premium":"Arw=","updated_at":1767225720000},"source":{"ts_ms":1795864633985,"db":"runnel","schema":"public","table":"policies"},"op":"c","ts_ms":1795864634182}}"#,
        r#"{"schema":{"type":"struct","fields":[]},"payload":{"before":{"policy_id":2,"holder":null,"premium":null,"updated_at":null},"after":null,"source":{"ts_ms":1795864633985,"db":"runnel","schema":"public","table":"policies"},"op":"d","ts_ms":1795864634183}}"#,
    ];

    fn format(keyed: bool) -> DebeziumJsonFormat {
        DebeziumJsonFormat {
            payload: Arc::new(Schema::new(vec![
                Field::new("policy_id", DataType::Int64, false),
                Field::new("holder", DataType::Utf8, true),
                Field::new("premium", DataType::Decimal128(12, 2), true),
                Field::new(
                    "updated_at",
                    DataType::Timestamp(TimeUnit::Millisecond, None),
                    true,
                ),
            ])),
            metadata: vec![(
                "value.source.timestamp".into(),
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            )],
            schema_include: true,
            bad_records: crate::format::BadRecords::Fail,
            keyed,
        }
    }

    #[test]
    fn reads_snapshot_update_insert_and_delete_as_changes() {
        let events: Vec<&[u8]> = EVENTS.iter().map(|e| e.as_bytes()).collect();
        let decoded = format(true).decode_all(&events).unwrap();
        let rows = crate::print::format_rows(&decoded.batch, "").unwrap();
        assert_eq!(
            rows,
            [
                "+I[1, ann, 10.50, 2026-01-01 00:00:01.000, 2026-11-28T11:17:11.164Z]",
                "+U[1, ann, 11.25, 2026-01-01 00:01:00.000, 2026-11-28T11:17:13.985Z]",
                "+I[2, bob, 7.00, 2026-01-01 00:02:00.000, 2026-11-28T11:17:13.985Z]",
                "-D[2, NULL, NULL, NULL, 2026-11-28T11:17:13.985Z]",
            ]
        );
        assert_eq!(decoded.events, [0, 1, 2, 3]);
    }

    #[test]
    fn the_payload_is_found_without_reading_the_schema() {
        let event = br#"{"schema":{"type":"struct","fields":[{"field":"payload","type":"string"}]},"payload":{"after":{"payload":"a \",\"payload\": b"},"op":"c"}} "#;
        assert_eq!(
            payload_of(event),
            Some(&br#"{"after":{"payload":"a \",\"payload\": b"},"op":"c"}"#[..])
        );
        assert_eq!(payload_of(br#"{"payload":{"op":"c"},"schema":{}}"#), None);
        assert_eq!(payload_of(br#"{"schema":{},"payload":null}"#), None);
    }

    #[test]
    fn a_null_event_is_a_tombstone_and_rows_keep_their_event_numbers() {
        let events: Vec<&[u8]> = vec![EVENTS[2].as_bytes(), EVENTS[3].as_bytes(), b"null"];
        let decoded = format(true).decode_all(&events).unwrap();
        assert_eq!(decoded.batch.num_rows(), 2);
        assert_eq!(decoded.events, [0, 1]);
        let events: Vec<&[u8]> = vec![b" null", EVENTS[2].as_bytes(), b"{}"];
        let (event, _) = format(true).decode_all(&events).unwrap_err();
        assert_eq!(event, 2, "the bad event is named by its own number");
    }

    #[test]
    fn an_update_without_its_before_row_needs_a_key() {
        let events: Vec<&[u8]> = EVENTS.iter().map(|e| e.as_bytes()).collect();
        let (event, reason) = format(false).decode_all(&events).unwrap_err();
        assert_eq!(event, 1);
        assert!(reason.contains("PRIMARY KEY"), "{reason}");
    }

    #[test]
    fn an_update_with_both_rows_is_two_changes_and_bad_events_are_named() {
        let mut f = format(false);
        f.schema_include = false;
        let update: &[u8] = br#"{"before":{"policy_id":3,"holder":"x","premium":"1.5","updated_at":"2026-01-01T00:00:00Z"},"after":{"policy_id":3,"holder":"y","premium":2,"updated_at":1767225600001},"op":"u","source":{"ts_ms":5}}"#;
        let decoded = f.decode_all(&[update]).unwrap();
        let rows = crate::print::format_rows(&decoded.batch, "").unwrap();
        assert_eq!(
            rows,
            [
                "-U[3, x, 1.50, 2026-01-01 00:00:00.000, 1970-01-01T00:00:00.005Z]",
                "+U[3, y, 2.00, 2026-01-01 00:00:00.001, 1970-01-01T00:00:00.005Z]",
            ]
        );
        assert_eq!(decoded.events, [0, 0]);
        let unknown: &[u8] = br#"{"before":null,"after":{"policy_id":3},"op":"x"}"#;
        let missing: &[u8] = br#"{"before":null,"after":null,"op":"c"}"#;
        let (event, reason) = f.decode_all(&[update, unknown]).unwrap_err();
        assert_eq!(
            (event, reason.contains("unknown op 'x'")),
            (1, true),
            "{reason}"
        );
        let (event, reason) = f.decode_all(&[missing]).unwrap_err();
        assert_eq!(
            (event, reason.contains("without 'after'")),
            (0, true),
            "{reason}"
        );
    }

    #[test]
    fn decimals_come_from_base64_text_or_numbers() {
        assert_eq!(parse_decimal("BBo=", 2), Ok(1050));
        assert_eq!(parse_decimal("/w==", 2), Ok(-1));
        assert_eq!(parse_decimal("12.5", 2), Ok(1250));
        assert_eq!(parse_decimal("-0.005", 2), Ok(-1));
        assert_eq!(parse_decimal("1.25E2", 2), Ok(12500));
        assert!(parse_decimal("not base64!", 2).is_err());
        assert_eq!(
            parse_timestamp("1767225601000", TimeUnit::Millisecond),
            Ok(1767225601000)
        );
        assert!(parse_timestamp("1767225601000000", TimeUnit::Millisecond).is_err());
        assert_eq!(parse_date("20454"), Ok(20454));
        assert_eq!(parse_date("2026-01-01"), Ok(20454));
    }
}
