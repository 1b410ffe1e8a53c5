//! Reading JSON text for the one-pass decoder: a record's bytes under a cursor
//! ([`Input`]) that finds strings' ends, numbers' text and whole values to step over,
//! keys told apart by their first bytes ([`FieldName`]), and the scalars it builds from
//! them (integers, decimals, zone-less timestamps, unescaped strings). Each gives up
//! ([`GiveUp`]) on any form it is not sure arrow-json reads the same way.

use datafusion::arrow::datatypes::TimeUnit;

use super::one_pass::{GiveUp, Step};

/// The bytes of one record and how far they are read.
pub(super) struct Input<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) at: usize,
}

impl<'a> Input<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    pub(super) fn at_end(&self) -> bool {
        self.at >= self.bytes.len()
    }

    pub(super) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    pub(super) fn next_byte(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    pub(super) fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.at += 1;
        }
    }

    /// Consumes `literal` (`null`, `true`, `false`) or gives up. Its length is known
    /// when compiled, so the comparison is one of integers, not a call to `memcmp`.
    pub(super) fn literal<const N: usize>(&mut self, literal: &[u8; N]) -> Step {
        let end = self.at + N;
        match self.bytes.get(self.at..end) {
            Some(bytes) if bytes == literal => {
                self.at = end;
                Ok(())
            }
            _ => Err(GiveUp),
        }
    }

    /// After an opening quote: the string's raw bytes up to the closing quote (which is
    /// consumed), and whether they hold an escape.
    pub(super) fn raw_string(&mut self) -> Step<(&'a [u8], bool)> {
        let start = self.at;
        let mut escaped = false;
        loop {
            let rest = &self.bytes[self.at..];
            match quote_or_backslash(rest) {
                Some(n) if rest[n] == b'"' => {
                    self.at += n + 1;
                    return Ok((&self.bytes[start..self.at - 1], escaped));
                }
                // A backslash: the byte after it is escaped, whatever it is.
                Some(n) => {
                    escaped = true;
                    self.at += n + 2;
                    if self.at > self.bytes.len() {
                        return Err(GiveUp);
                    }
                }
                None => return Err(GiveUp),
            }
        }
    }

    /// The text of a number: an optional minus, then digits, a fraction and an exponent
    /// as far as they go. Gives up unless it starts with a digit after the sign.
    pub(super) fn number_text(&mut self) -> Step<&'a [u8]> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        if !matches!(self.peek(), Some(b'0'..=b'9')) {
            return Err(GiveUp);
        }
        while let Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') = self.peek() {
            self.at += 1;
        }
        Ok(&self.bytes[start..self.at])
    }

    /// Steps over one value without decoding it.
    pub(super) fn skip_value(&mut self) -> Step {
        match self.peek().ok_or(GiveUp)? {
            b'"' => {
                self.at += 1;
                self.raw_string().map(|_| ())
            }
            b'{' | b'[' => self.skip_nested(),
            b'n' => self.literal(b"null"),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            _ => self.number_text().map(|_| ()),
        }
    }

    /// Steps over an object or array by counting brackets outside strings.
    fn skip_nested(&mut self) -> Step {
        let mut depth = 0usize;
        while let Some(byte) = self.next_byte() {
            match byte {
                b'"' => {
                    self.raw_string()?;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
        Err(GiveUp)
    }
}

/// Where the first `"` or `\` of `bytes` is: sixteen bytes at a time with SSE2 (part
/// of every x86-64), the last ones of a record eight at a time in a `u64`.
fn quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        sse2::quote_or_backslash(bytes)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        quote_or_backslash_in_words(bytes)
    }
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };

    pub(super) fn quote_or_backslash(bytes: &[u8]) -> Option<usize> {
        if bytes.len() < 16 {
            return super::quote_or_backslash_in_words(bytes);
        }
        // Bit i set where byte `at + i` is a quote or a backslash.
        let hits = |at: usize| -> u32 {
            debug_assert!(at + 16 <= bytes.len());
            // SAFETY: SSE2 is always there on x86-64, and every call reads the 16 bytes
            // from `at`, which the callers keep within `bytes` (`at + 16 <= len`).
            unsafe {
                let chunk = _mm_loadu_si128(bytes.as_ptr().add(at).cast::<__m128i>());
                let quotes = _mm_cmpeq_epi8(chunk, _mm_set1_epi8(b'"' as i8));
                let backslashes = _mm_cmpeq_epi8(chunk, _mm_set1_epi8(b'\\' as i8));
                _mm_movemask_epi8(_mm_or_si128(quotes, backslashes)) as u32
            }
        };
        let mut at = 0;
        while at + 16 <= bytes.len() {
            let found = hits(at);
            if found != 0 {
                return Some(at + found.trailing_zeros() as usize);
            }
            at += 16;
        }
        if at == bytes.len() {
            return None;
        }
        // The last sixteen bytes, less those already searched.
        let last = bytes.len() - 16;
        let found = hits(last) >> (at - last);
        (found != 0).then(|| at + found.trailing_zeros() as usize)
    }
}

/// [`quote_or_backslash`] eight bytes at a time in a `u64`.
fn quote_or_backslash_in_words(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    let mut words = bytes.chunks_exact(8);
    for (i, word) in words.by_ref().enumerate() {
        let word = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
        // A byte of `x` is zero where `word` holds the byte searched for; the lowest
        // flagged byte is the first such (flags above it may be false).
        let quotes = word ^ (ONES * u64::from(b'"'));
        let backslashes = word ^ (ONES * u64::from(b'\\'));
        let zero = |x: u64| x.wrapping_sub(ONES) & !x;
        let found = (zero(quotes) | zero(backslashes)) & HIGH_BITS;
        if found != 0 {
            return Some(i * 8 + found.trailing_zeros() as usize / 8);
        }
    }
    let tail = bytes.len() - words.remainder().len();
    words
        .remainder()
        .iter()
        .position(|b| matches!(b, b'"' | b'\\'))
        .map(|n| tail + n)
}

/// An integer written as `-?[0-9]+` (no fraction, no exponent) that fits an `i64`.
pub(super) fn integer(text: &[u8]) -> Step<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', digits)) => (true, digits),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(GiveUp);
    }
    let magnitude = if digits.len() <= 18 {
        digits
            .iter()
            .fold(0i64, |value, digit| value * 10 + i64::from(digit - b'0'))
    } else {
        digits
            .iter()
            .try_fold(0i64, |value, digit| {
                value.checked_mul(10)?.checked_add(i64::from(digit - b'0'))
            })
            .ok_or(GiveUp)?
    };
    Ok(if negative { -magnitude } else { magnitude })
}

/// A decimal written as `-?[0-9]+(\.[0-9]+)?` with at most `scale` fraction digits and at
/// most `precision` digits in all, as an integer of `scale` fraction digits.
pub(super) fn decimal(text: &[u8], precision: u8, scale: i8) -> Step<i128> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', digits)) => (true, digits),
        _ => (false, text),
    };
    let (whole, fraction) = match digits.iter().position(|b| *b == b'.') {
        Some(dot) => (&digits[..dot], &digits[dot + 1..]),
        None => (digits, &digits[digits.len()..]),
    };
    let scale = scale as usize;
    let significant = whole.iter().skip_while(|b| **b == b'0').count();
    if whole.is_empty()
        || (digits.len() > whole.len() && fraction.is_empty())
        || fraction.len() > scale
        || significant + scale > precision as usize
    {
        return Err(GiveUp);
    }
    let padding = (scale - fraction.len()) as u32;
    // Up to eighteen digits (most decimals) fit a u64, whose arithmetic is cheaper.
    let value = if whole.len() + scale <= 18 {
        let value = fold_digits(fold_digits(0u64, whole)?, fraction)?;
        i128::from(value * 10u64.pow(padding))
    } else {
        fold_digits(fold_digits(0i128, whole)?, fraction)? * 10i128.pow(padding)
    };
    Ok(if negative { -value } else { value })
}

/// `value` with the decimal `digits` appended, or give up on anything but a digit.
fn fold_digits<T: From<u8> + std::ops::Mul<Output = T> + std::ops::Add<Output = T>>(
    mut value: T,
    digits: &[u8],
) -> Step<T> {
    for &byte in digits {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return Err(GiveUp);
        }
        value = value * T::from(10) + T::from(digit);
    }
    Ok(value)
}

/// The date [`timestamp`] read last and its days since the epoch: the records of a
/// stream mostly share their date, so it is parsed once.
#[derive(Debug, Default)]
pub(super) struct LastDate {
    /// `yyyy-MM-dd` as written; all zero bytes (never a valid date) until one is read.
    text: [u8; 10],
    days: i64,
}

/// `yyyy-MM-dd[T ]HH:mm:ss[.f…]` (one to nine fraction digits, no zone) in `unit` since
/// the epoch.
pub(super) fn timestamp(text: &[u8], unit: TimeUnit, last: &mut LastDate) -> Step<i64> {
    let number = |range: std::ops::Range<usize>| -> Step<i64> {
        let digits = text.get(range).ok_or(GiveUp)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err(GiveUp);
        }
        Ok(digits
            .iter()
            .fold(0, |value, digit| value * 10 + i64::from(digit - b'0')))
    };
    if text.len() < 19 {
        return Err(GiveUp);
    }
    let days = if text[..10] == last.text {
        last.days
    } else {
        if text[4] != b'-' || text[7] != b'-' {
            return Err(GiveUp);
        }
        let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return Err(GiveUp);
        }
        last.text.copy_from_slice(&text[..10]);
        last.days = days_from_civil(year, month, day);
        last.days
    };
    if !matches!(text[10], b' ' | b'T') || text[13] != b':' || text[16] != b':' {
        return Err(GiveUp);
    }
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if hour > 23 || minute > 59 || second > 59 {
        return Err(GiveUp);
    }
    let nanos = match text.len() {
        19 => 0,
        20 => return Err(GiveUp),
        len if len <= 29 && text[19] == b'.' => number(20..len)? * 10i64.pow(29 - len as u32),
        _ => return Err(GiveUp),
    };
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    Ok(match unit {
        TimeUnit::Second => seconds,
        TimeUnit::Millisecond => seconds * 1_000 + nanos / 1_000_000,
        TimeUnit::Microsecond => seconds * 1_000_000 + nanos / 1_000,
        TimeUnit::Nanosecond => seconds
            .checked_mul(1_000_000_000)
            .and_then(|n| n.checked_add(nanos))
            .ok_or(GiveUp)?,
    })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Appends the string `raw` (a JSON string's bytes between its quotes) decoded to `out`.
pub(super) fn unescape(raw: &[u8], out: &mut Vec<u8>) -> Step {
    out.clear();
    let mut rest = raw;
    while let Some(n) = memchr::memchr(b'\\', rest) {
        out.extend_from_slice(&rest[..n]);
        let escape = rest.get(n + 1).ok_or(GiveUp)?;
        rest = &rest[n + 2..];
        let byte = match escape {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let (code, after) = hex4(rest)?;
                rest = after;
                let code = match code {
                    0xd800..=0xdbff => {
                        let low = rest.strip_prefix(b"\\u").ok_or(GiveUp)?;
                        let (low, after) = hex4(low)?;
                        if !(0xdc00..=0xdfff).contains(&low) {
                            return Err(GiveUp);
                        }
                        rest = after;
                        0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00)
                    }
                    0xdc00..=0xdfff => return Err(GiveUp),
                    code => code,
                };
                let c = char::from_u32(code).ok_or(GiveUp)?;
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                continue;
            }
            _ => return Err(GiveUp),
        };
        out.push(byte);
    }
    out.extend_from_slice(rest);
    Ok(())
}

/// `bytes` as text. ASCII, which most JSON strings are, is checked a word at a time in
/// line; anything else goes through the full UTF-8 validation.
pub(super) fn utf8(bytes: &[u8]) -> Step<&str> {
    if bytes.is_ascii() {
        // SAFETY: ASCII bytes are valid UTF-8.
        Ok(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes).map_err(|_| GiveUp)
    }
}

/// Four hex digits at the start of `bytes`, and what follows them.
fn hex4(bytes: &[u8]) -> Step<(u32, &[u8])> {
    let digits = bytes.get(..4).ok_or(GiveUp)?;
    let text = std::str::from_utf8(digits).map_err(|_| GiveUp)?;
    let code = u32::from_str_radix(text, 16).map_err(|_| GiveUp)?;
    Ok((code, &bytes[4..]))
}

/// A field's name, with its first eight bytes in a `u64`: most keys are told apart, or
/// matched whole, by one comparison (names of up to 16 bytes by two).
pub(super) struct FieldName {
    pub(super) name: Box<[u8]>,
    prefix: Option<u64>,
    /// The last eight bytes of a name of 9 to 16 bytes: with the first eight, all of it.
    suffix: Option<u64>,
    /// Whether the name is written as it is in a JSON key (no quote, backslash or
    /// control character to escape), so the key's bytes can be compared with it before
    /// the key's end is known.
    pub(super) plain: bool,
}

impl FieldName {
    pub(super) fn new(name: &str) -> Self {
        let name: Box<[u8]> = name.as_bytes().into();
        let mut padded = name.to_vec();
        padded.resize(name.len().max(8), 0);
        Self {
            prefix: prefix(&padded, name.len()),
            suffix: (9..=16)
                .contains(&name.len())
                .then(|| prefix(&name[name.len() - 8..], 8))
                .flatten(),
            plain: !name.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20),
            name,
        }
    }

    /// Whether `key`, whose first bytes are `prefix` (see [`prefix`]), is this name.
    pub(super) fn is(&self, key: &[u8], prefix: Option<u64>) -> bool {
        if self.name.len() != key.len() {
            return false;
        }
        match (self.prefix, prefix) {
            (Some(mine), Some(theirs)) => {
                mine == theirs
                    && (key.len() <= 8
                        || match self.suffix {
                            Some(suffix) => self::prefix(&key[key.len() - 8..], 8) == Some(suffix),
                            None => self.name[8..] == key[8..],
                        })
            }
            _ => *self.name == *key,
        }
    }
}

/// The first `len` bytes of `window` (up to eight) in a `u64`, the rest zero; `None`
/// when `window` is shorter than eight bytes.
pub(super) fn prefix(window: &[u8], len: usize) -> Option<u64> {
    let word = u64::from_le_bytes(window.get(..8)?.try_into().ok()?);
    Some(match len {
        0 => 0,
        1..=7 => word & ((1u64 << (8 * len)) - 1),
        _ => word,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_strings_end_wherever_it_falls() {
        for len in 0..200 {
            for found in [b'"', b'\\'] {
                let mut bytes = vec![b'a'; len + 9];
                bytes[len] = found;
                // A second match after the first must not be taken.
                bytes[len + 1] = b'"';
                assert_eq!(quote_or_backslash(&bytes), Some(len), "at {len}");
                assert_eq!(quote_or_backslash_in_words(&bytes), Some(len), "at {len}");
                // Found in the last bytes only.
                assert_eq!(quote_or_backslash(&bytes[..=len]), Some(len), "at {len}");
            }
            assert_eq!(quote_or_backslash(&vec![b'a'; len]), None);
            assert_eq!(quote_or_backslash_in_words(&vec![b'a'; len]), None);
        }
    }

    #[test]
    fn reads_numbers_times_and_strings_as_arrow_does() {
        assert_eq!(integer(b"-42"), Ok(-42));
        assert_eq!(integer(b"4.2"), Err(GiveUp));
        assert_eq!(integer(b"9223372036854775807"), Ok(i64::MAX));
        assert_eq!(integer(b"9223372036854775808"), Err(GiveUp));
        assert_eq!(decimal(b"677.5", 12, 2), Ok(67_750));
        assert_eq!(decimal(b"-0.07", 12, 2), Ok(-7));
        assert_eq!(decimal(b"1.234", 12, 2), Err(GiveUp));
        assert_eq!(decimal(b"12345678901", 12, 2), Err(GiveUp));
        assert_eq!(decimal(b"5.", 12, 2), Err(GiveUp));
        assert_eq!(decimal(b"5a", 12, 2), Err(GiveUp));
        assert_eq!(decimal(b"1.-2", 12, 2), Err(GiveUp));
        // Past eighteen digits: the wide path.
        assert_eq!(
            decimal(b"-12345678901234567.89", 38, 4),
            Ok(-123_456_789_012_345_678_900)
        );
        assert_eq!(decimal(b"0000000000000000001.5", 20, 1), Ok(15));
        let ms = TimeUnit::Millisecond;
        // One `LastDate` throughout, as a column keeps it: a date read before is taken
        // from it, and a date given up on is not kept.
        let last = &mut LastDate::default();
        let mut timestamp = |text: &[u8]| timestamp(text, ms, last);
        assert_eq!(timestamp(b"2024-01-01 00:05:00.250"), Ok(1_704_067_500_250));
        assert_eq!(timestamp(b"2024-01-01T00:05:00"), Ok(1_704_067_500_000));
        assert_eq!(timestamp(b"2024-01-01 00:05:00Z"), Err(GiveUp));
        assert_eq!(timestamp(b"2024-01-01 24:00:00"), Err(GiveUp));
        assert_eq!(timestamp(b"1969-12-31 23:59:59.999"), Ok(-1));
        assert_eq!(timestamp(b"2023-02-29 00:00:00"), Err(GiveUp));
        assert_eq!(timestamp(b"2023-02-29 00:00:00"), Err(GiveUp));
        assert_eq!(timestamp(b"2024-02-29 00:00:00"), Ok(1_709_164_800_000));
        assert_eq!(timestamp(b"2024/02/29 00:00:00"), Err(GiveUp));
        let mut out = Vec::new();
        unescape(br#"a\"b\u00e9\ud83d\ude00"#, &mut out).unwrap();
        assert_eq!(out, "a\"b\u{e9}\u{1f600}".as_bytes());
        assert_eq!(unescape(br#"\udc00"#, &mut out), Err(GiveUp));
    }

    #[test]
    fn matches_keys_by_their_first_eight_bytes() {
        let record = br#"{"auction":1,"dateTime":"t","event_typo":2,"event_type":3,"policy_holder_nama":4,"policy_holder_name":5}"#;
        let names = [
            "auction",
            "dateTime",
            "event_type",
            "a",
            "policy_holder_name",
        ]
        .map(FieldName::new);
        let at = |key: &str| {
            let start = memchr::memmem::find(record, format!("\"{key}\"").as_bytes()).unwrap() + 1;
            let key = &record[start..start + key.len()];
            let prefix = prefix(&record[start..], key.len());
            names.iter().position(|name| name.is(key, prefix))
        };
        assert_eq!(at("auction"), Some(0));
        assert_eq!(at("dateTime"), Some(1));
        assert_eq!(at("event_type"), Some(2));
        assert_eq!(at("event_typo"), None);
        // Longer than 16 bytes: the rest compared whole.
        assert_eq!(at("policy_holder_name"), Some(4));
        assert_eq!(at("policy_holder_nama"), None);
        assert_eq!(at("t"), None);
        // Near the end of a record there is no window of eight bytes to read.
        assert!(names[3].is(b"a", prefix(b"a\"}", 1)));
    }
}
