//! Flink SQL functions that DataFusion does not have, registered as DataFusion UDFs so
//! Flink queries run as written.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray};
use datafusion::arrow::compute::kernels::numeric::rem;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{create_udf, ColumnarValue, ScalarUDF, Volatility};

/// Every Flink compatibility function.
pub fn flink_functions() -> Vec<ScalarUDF> {
    vec![
        modulo(),
        regexp_extract(),
        split_index(),
        proctime(),
        hour(),
        count_char(),
        date_format(),
    ]
}

/// Java UDF classes of well-known suites whose behaviour Runnel has built in, with the
/// name it has there: `CREATE FUNCTION count_char AS '...CountChar'` then resolves.
pub const KNOWN_JAVA_FUNCTIONS: &[(&str, &str)] =
    &[("com.github.nexmark.flink.udf.CountChar", "count_char")];

/// `HOUR(timestamp)`: the hour of the day, 0 to 23 (Flink's).
fn hour() -> ScalarUDF {
    create_udf(
        "hour",
        vec![DataType::Timestamp(
            datafusion::arrow::datatypes::TimeUnit::Millisecond,
            None,
        )],
        DataType::Int64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let hours = datafusion::arrow::compute::kernels::temporal::date_part(
                &arrays[0],
                datafusion::arrow::compute::DatePart::Hour,
            )?;
            shape(
                args,
                datafusion::arrow::compute::cast(&hours, &DataType::Int64)?,
            )
        }),
    )
}

/// `DATE_FORMAT(timestamp, 'yyyy-MM-dd HH:mm')`: the timestamp as text in a Java
/// `SimpleDateFormat` pattern (Flink's). Formatted per batch with Arrow's formatter.
fn date_format() -> ScalarUDF {
    use datafusion::arrow::datatypes::TimeUnit;
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    create_udf(
        "date_format",
        vec![
            DataType::Timestamp(TimeUnit::Millisecond, None),
            DataType::Utf8,
        ],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let ColumnarValue::Scalar(pattern) = &args[1] else {
                return datafusion::common::plan_err!(
                    "DATE_FORMAT takes a constant pattern, e.g. DATE_FORMAT(ts, 'yyyy-MM-dd')"
                );
            };
            let Some(pattern) = pattern.try_as_str().flatten() else {
                return datafusion::common::plan_err!("DATE_FORMAT pattern is NULL");
            };
            let format = strftime_of_java_pattern(pattern)
                .map_err(datafusion::error::DataFusionError::Plan)?;
            let times = args[0].to_array(rows_of(args))?;
            let options = FormatOptions::default().with_timestamp_format(Some(&format));
            let formatter = ArrayFormatter::try_new(times.as_ref(), &options)?;
            let text: StringArray = (0..times.len())
                .map(|i| times.is_valid(i).then(|| formatter.value(i).to_string()))
                .collect();
            shape(&args[..1], Arc::new(text))
        }),
    )
}

/// The `strftime` format of a Java `SimpleDateFormat` pattern (`yyyy-MM-dd HH:mm:ss.SSS`,
/// quoted literals such as `'T'`); an error names a letter it does not know.
pub fn strftime_of_java_pattern(pattern: &str) -> Result<String, String> {
    let mut out = String::new();
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let run = chars[i..].iter().take_while(|&&x| x == c).count();
        match c {
            '\'' => {
                // A quoted literal; '' is a quote.
                let end = chars[i + 1..].iter().position(|&x| x == '\'');
                match end {
                    Some(0) => out.push('\''),
                    Some(n) => out.extend(chars[i + 1..i + 1 + n].iter()),
                    None => {
                        return Err(format!("unclosed quote in DATE_FORMAT pattern '{pattern}'"))
                    }
                }
                i += end.map_or(chars.len(), |n| n + 2);
                continue;
            }
            'y' if run == 2 => out.push_str("%y"),
            'y' => out.push_str("%Y"),
            'M' if run >= 3 => out.push_str(if run == 3 { "%b" } else { "%B" }),
            'M' => out.push_str("%m"),
            'd' => out.push_str("%d"),
            'H' => out.push_str("%H"),
            'h' => out.push_str("%I"),
            'm' => out.push_str("%M"),
            's' => out.push_str("%S"),
            'S' => out.push_str(&format!("%{}f", run.min(9))),
            'a' => out.push_str("%p"),
            'E' => out.push_str(if run >= 4 { "%A" } else { "%a" }),
            'D' => out.push_str("%j"),
            '%' => out.push_str(&"%%".repeat(run)),
            c if c.is_ascii_alphabetic() => {
                return Err(format!(
                    "DATE_FORMAT pattern letter '{c}' is not supported (in '{pattern}')"
                ))
            }
            c => out.extend(std::iter::repeat_n(c, run)),
        }
        i += run;
    }
    Ok(out)
}

/// `count_char(text, char)`: how often `char` occurs in `text` — the Nexmark suite's
/// `CountChar` UDF, as its Java code does it: a NULL `text` counts 0; `text` is compared
/// as UTF-16 code units with the first unit of `char` (a character beyond the BMP is two
/// units); a NULL or empty `char` is an error (Java's `charAt(0)` throws).
fn count_char() -> ScalarUDF {
    create_udf(
        "count_char",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Int64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let rows = rows_of(args);
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let (text, needle) = (arrays[0].as_string::<i32>(), arrays[1].as_string::<i32>());
            let counts = (0..rows)
                .map(|row| {
                    if text.is_null(row) {
                        return Ok(0);
                    }
                    let unit = needle
                        .is_valid(row)
                        .then(|| needle.value(row).encode_utf16().next())
                        .flatten()
                        .ok_or_else(|| {
                            datafusion::error::DataFusionError::Execution(
                                "count_char: the character to count is NULL or empty".into(),
                            )
                        })?;
                    Ok(text
                        .value(row)
                        .encode_utf16()
                        .filter(|&u| u == unit)
                        .count() as i64)
                })
                .collect::<datafusion::error::Result<Vec<i64>>>()?;
            shape(
                args,
                Arc::new(datafusion::arrow::array::Int64Array::from(counts)),
            )
        }),
    )
}

/// Name of Flink's processing-time function.
pub const PROCTIME: &str = "proctime";

/// `PROCTIME()`: the processing time as a TIMESTAMP_LTZ(3). This is the planning-time
/// definition, which reads the system clock; the runtime binds each call to the clock of
/// the task evaluating it (`runnel_runtime::ProcessingTime`).
fn proctime() -> ScalarUDF {
    create_udf(
        PROCTIME,
        vec![],
        DataType::Timestamp(
            datafusion::arrow::datatypes::TimeUnit::Millisecond,
            Some(crate::parser::LTZ_TIME_ZONE.into()),
        ),
        Volatility::Volatile,
        Arc::new(|_args: &[ColumnarValue]| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            Ok(ColumnarValue::Scalar(
                datafusion::common::ScalarValue::TimestampMillisecond(
                    Some(now),
                    Some(crate::parser::LTZ_TIME_ZONE.into()),
                ),
            ))
        }),
    )
}

/// Rows of the call: the length of any array argument, else 1 (all scalars).
fn rows_of(args: &[ColumnarValue]) -> usize {
    args.iter()
        .find_map(|a| match a {
            ColumnarValue::Array(array) => Some(array.len()),
            ColumnarValue::Scalar(_) => None,
        })
        .unwrap_or(1)
}

/// Returns `result` as a scalar when every argument was one.
fn shape(args: &[ColumnarValue], result: ArrayRef) -> datafusion::error::Result<ColumnarValue> {
    if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
        Ok(ColumnarValue::Scalar(
            datafusion::common::ScalarValue::try_from_array(&result, 0)?,
        ))
    } else {
        Ok(ColumnarValue::Array(result))
    }
}

/// `MOD(a, b)`: the remainder of integer division (sign of `a`), NULL if either is NULL
/// or `b` is zero (as in Flink).
fn modulo() -> ScalarUDF {
    create_udf(
        "mod",
        vec![DataType::Int64, DataType::Int64],
        DataType::Int64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            // A constant divisor (Nexmark q2's `MOD(auction, 123)`): one kernel over the
            // dividends, the divisor neither repeated into an array nor checked per row.
            if let (
                ColumnarValue::Array(dividends),
                ColumnarValue::Scalar(ScalarValue::Int64(Some(divisor))),
            ) = (&args[0], &args[1])
            {
                if *divisor != 0 {
                    let divisor = Int64Array::new_scalar(*divisor);
                    return Ok(ColumnarValue::Array(rem(dividends, &divisor)?));
                }
            }
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let divisor = arrays[1].as_primitive::<Int64Type>();
            let divisor: ArrayRef =
                Arc::new(divisor.unary_opt::<_, Int64Type>(|d| (d != 0).then_some(d)));
            shape(args, rem(&arrays[0], &divisor)?)
        }),
    )
}

/// A `(STRING, STRING, BIGINT) -> STRING` function evaluated row by row: NULL in any
/// argument gives NULL. `row_function` makes the per-call row function (which may keep
/// state across rows, such as a compiled pattern).
fn string_function<F>(name: &str, row_function: fn() -> F) -> ScalarUDF
where
    F: FnMut(&str, &str, i64) -> datafusion::error::Result<Option<String>> + 'static,
{
    create_udf(
        name,
        vec![DataType::Utf8, DataType::Utf8, DataType::Int64],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let rows = rows_of(args);
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let (text, pattern, number) = (
                arrays[0].as_string::<i32>(),
                arrays[1].as_string::<i32>(),
                arrays[2].as_primitive::<Int64Type>(),
            );
            let mut apply = row_function();
            let mut out = Vec::with_capacity(rows);
            for row in 0..rows {
                if text.is_null(row) || pattern.is_null(row) || number.is_null(row) {
                    out.push(None);
                } else {
                    out.push(apply(
                        text.value(row),
                        pattern.value(row),
                        number.value(row),
                    )?);
                }
            }
            shape(args, Arc::new(StringArray::from(out)))
        }),
    )
}

/// `REGEXP_EXTRACT(str, regex, index)`: the `index`-th capture group of the first match
/// (0 is the whole match); NULL when nothing matches.
fn regexp_extract() -> ScalarUDF {
    string_function("regexp_extract", || {
        // The pattern is almost always a constant: compile each distinct one once.
        let mut compiled: Option<(String, regex::Regex)> = None;
        move |text: &str, pattern: &str, group: i64| {
            if compiled.as_ref().is_none_or(|(p, _)| p != pattern) {
                let regex = regex::Regex::new(pattern).map_err(|e| {
                    datafusion::error::DataFusionError::Execution(format!(
                        "REGEXP_EXTRACT: bad regex {pattern:?}: {e}"
                    ))
                })?;
                compiled = Some((pattern.to_string(), regex));
            }
            let index = usize::try_from(group).ok();
            Ok(compiled.as_ref().and_then(|(_, regex)| {
                let captures = regex.captures(text)?;
                Some(captures.get(index?)?.as_str().to_string())
            }))
        }
    })
}

/// `SPLIT_INDEX(str, separator, index)`: the `index`-th (from 0) piece of `str` split at
/// `separator`; NULL when there is no such piece.
fn split_index() -> ScalarUDF {
    string_function("split_index", || {
        |text: &str, separator: &str, index: i64| {
            let Ok(index) = usize::try_from(index) else {
                return Ok(None);
            };
            if separator.is_empty() {
                return Ok(None);
            }
            Ok(text.split(separator).nth(index).map(str::to_string))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `function` over `args` of `rows` rows.
    fn invoke(function: &ScalarUDF, args: Vec<ColumnarValue>, rows: usize) -> ColumnarValue {
        let arg_fields = args
            .iter()
            .map(|a| {
                Arc::new(datafusion::arrow::datatypes::Field::new(
                    "a",
                    a.data_type(),
                    true,
                ))
            })
            .collect();
        let arg_types: Vec<DataType> = args.iter().map(|a| a.data_type()).collect();
        let return_type = function.return_type(&arg_types).unwrap();
        function
            .invoke_with_args(datafusion::logical_expr::ScalarFunctionArgs {
                args,
                arg_fields,
                number_rows: rows,
                // These functions know their result type; the field is not read.
                return_field: Arc::new(datafusion::arrow::datatypes::Field::new(
                    "r",
                    return_type,
                    true,
                )),
                config_options: Default::default(),
            })
            .unwrap()
    }

    fn call(function: &ScalarUDF, args: Vec<ScalarValue>) -> ScalarValue {
        let args: Vec<ColumnarValue> = args.into_iter().map(ColumnarValue::Scalar).collect();
        match invoke(function, args, 1) {
            ColumnarValue::Scalar(s) => s,
            ColumnarValue::Array(a) => ScalarValue::try_from_array(&a, 0).unwrap(),
        }
    }

    /// `MOD` over an array with a constant divisor equals `MOD` with the divisor given
    /// per row: the sign of the dividend, NULL for a NULL dividend, NULL for divisor 0.
    #[test]
    fn mod_by_a_constant_equals_mod_by_an_array_of_it() {
        let dividends: ArrayRef = Arc::new(Int64Array::from(vec![
            Some(246),
            Some(247),
            Some(-247),
            None,
            Some(i64::MAX),
        ]));
        let modulo_by = |divisor: ColumnarValue| {
            let args = vec![ColumnarValue::Array(dividends.clone()), divisor];
            invoke(&modulo(), args, dividends.len())
                .into_array(dividends.len())
                .unwrap()
        };
        for divisor in [123, -123, 1, 0] {
            let constant = modulo_by(ColumnarValue::Scalar(ScalarValue::Int64(Some(divisor))));
            let per_row = modulo_by(ColumnarValue::Array(Arc::new(Int64Array::from(vec![
                divisor;
                dividends.len()
            ]))));
            assert_eq!(&constant, &per_row, "MOD(x, {divisor})");
        }
        let by_123 = modulo_by(ColumnarValue::Scalar(ScalarValue::Int64(Some(123))));
        assert_eq!(
            by_123
                .as_primitive::<Int64Type>()
                .iter()
                .collect::<Vec<_>>(),
            vec![Some(0), Some(1), Some(-1), None, Some(i64::MAX % 123)]
        );
        let by_zero = modulo_by(ColumnarValue::Scalar(ScalarValue::Int64(Some(0))));
        assert_eq!(by_zero.null_count(), dividends.len());
        let by_null = modulo_by(ColumnarValue::Scalar(ScalarValue::Int64(None)));
        assert_eq!(by_null.null_count(), dividends.len());
    }

    /// `count_char` as Nexmark's Java `CountChar`: NULL text counts 0, non-ASCII text is
    /// counted by UTF-16 unit, a NULL or empty character fails.
    #[test]
    fn count_char_follows_nexmark_java_udf() {
        let text = |s: &str| ScalarValue::Utf8(Some(s.to_string()));
        let null = ScalarValue::Utf8(None);
        let count = |t: ScalarValue, c: ScalarValue| call(&count_char(), vec![t, c]);
        assert_eq!(
            count(text("abcabc"), text("c")),
            ScalarValue::Int64(Some(2))
        );
        assert_eq!(count(null.clone(), text("c")), ScalarValue::Int64(Some(0)));
        assert_eq!(count(text(""), text("c")), ScalarValue::Int64(Some(0)));
        assert_eq!(count(text("ééa"), text("é")), ScalarValue::Int64(Some(2)));
        // Only the first character of the second argument counts.
        assert_eq!(count(text("xyzx"), text("xy")), ScalarValue::Int64(Some(2)));
        // 😀 is two UTF-16 units; its first (a high surrogate) is counted, as in Java.
        assert_eq!(
            count(text("😀a😀"), text("😀")),
            ScalarValue::Int64(Some(2))
        );
        for bad in [null, text("")] {
            let args = vec![
                ColumnarValue::Scalar(text("abc")),
                ColumnarValue::Scalar(bad),
            ];
            let result =
                count_char().invoke_with_args(datafusion::logical_expr::ScalarFunctionArgs {
                    args,
                    arg_fields: vec![
                        Arc::new(datafusion::arrow::datatypes::Field::new(
                            "a",
                            DataType::Utf8,
                            true,
                        )),
                        Arc::new(datafusion::arrow::datatypes::Field::new(
                            "b",
                            DataType::Utf8,
                            true,
                        )),
                    ],
                    number_rows: 1,
                    return_field: Arc::new(datafusion::arrow::datatypes::Field::new(
                        "r",
                        DataType::Int64,
                        true,
                    )),
                    config_options: Default::default(),
                });
            let error = result.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(error.contains("NULL or empty"), "{error}");
        }
    }

    #[test]
    fn flink_functions_follow_flink() {
        let text = |s: &str| ScalarValue::Utf8(Some(s.to_string()));
        let int = |i: i64| ScalarValue::Int64(Some(i));
        assert_eq!(call(&modulo(), vec![int(7), int(3)]), int(1));
        assert_eq!(call(&modulo(), vec![int(-7), int(3)]), int(-1));
        assert_eq!(
            call(&modulo(), vec![int(7), int(0)]),
            ScalarValue::Int64(None)
        );
        let url = text("https://x.com/a/b?q=1&channel_id=42");
        assert_eq!(
            call(
                &regexp_extract(),
                vec![url.clone(), text("(&|^)channel_id=([^&]*)"), int(2)]
            ),
            text("42")
        );
        assert_eq!(
            call(
                &regexp_extract(),
                vec![url.clone(), text("nope=(\\d+)"), int(1)]
            ),
            ScalarValue::Utf8(None)
        );
        assert_eq!(
            call(&split_index(), vec![url.clone(), text("/"), int(3)]),
            text("a")
        );
        assert_eq!(
            call(&split_index(), vec![url, text("/"), int(9)]),
            ScalarValue::Utf8(None)
        );
    }

    /// NULL in any argument gives NULL (Flink's null handling for these built-ins);
    /// empty and non-ASCII text work by characters, as Java strings do.
    #[test]
    fn flink_functions_on_null_empty_and_non_ascii_input() {
        let text = |s: &str| ScalarValue::Utf8(Some(s.to_string()));
        let null_text = ScalarValue::Utf8(None);
        let int = |i: i64| ScalarValue::Int64(Some(i));
        let null_int = ScalarValue::Int64(None);
        assert_eq!(call(&modulo(), vec![null_int.clone(), int(3)]), null_int);
        assert_eq!(call(&modulo(), vec![int(7), null_int.clone()]), null_int);
        for args in [
            vec![null_text.clone(), text("(a)"), int(1)],
            vec![text("abc"), null_text.clone(), int(1)],
            vec![text("abc"), text("(a)"), null_int.clone()],
            vec![text(""), text("(a)"), int(1)],
            // A group the pattern does not have.
            vec![text("abc"), text("(a)"), int(2)],
        ] {
            assert_eq!(
                call(&regexp_extract(), args.clone()),
                null_text,
                "REGEXP_EXTRACT{args:?}"
            );
        }
        assert_eq!(
            call(
                &regexp_extract(),
                vec![text("größe=Ünïcode"), text("=(\\w+)"), int(1)]
            ),
            text("Ünïcode")
        );
        for args in [
            vec![null_text.clone(), text("/"), int(0)],
            vec![text("a/b"), null_text.clone(), int(0)],
            vec![text("a/b"), text("/"), null_int.clone()],
            vec![text("a/b"), text("/"), int(-1)],
        ] {
            assert_eq!(
                call(&split_index(), args.clone()),
                null_text,
                "SPLIT_INDEX{args:?}"
            );
        }
        assert_eq!(
            call(&split_index(), vec![text("é→ü→ö"), text("→"), int(1)]),
            text("ü")
        );
        assert_eq!(
            call(&split_index(), vec![text("a//b"), text("/"), int(1)]),
            text("")
        );
        assert_eq!(
            call(&hour(), vec![ScalarValue::TimestampMillisecond(None, None)]),
            ScalarValue::Int64(None)
        );
    }
}

#[cfg(test)]
mod date_format_tests {
    use super::*;
    use datafusion::arrow::array::TimestampMillisecondArray;

    #[test]
    fn java_patterns_become_strftime_formats() {
        assert_eq!(strftime_of_java_pattern("yyyy-MM-dd").unwrap(), "%Y-%m-%d");
        assert_eq!(strftime_of_java_pattern("HH:mm").unwrap(), "%H:%M");
        assert_eq!(
            strftime_of_java_pattern("yyyy-MM-dd'T'HH:mm:ss.SSS").unwrap(),
            "%Y-%m-%dT%H:%M:%S.%3f"
        );
        let err = strftime_of_java_pattern("yyyy-ww").unwrap_err();
        assert!(err.contains("letter 'w'"), "{err}");
    }

    #[test]
    fn formats_a_batch_of_timestamps() {
        // 2026-01-02 03:04:05.678 UTC.
        let times: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![
            Some(1_767_323_045_678),
            None,
        ]));
        let function = date_format();
        let args = vec![
            ColumnarValue::Array(times),
            ColumnarValue::Scalar(datafusion::common::ScalarValue::from("yyyy-MM-dd HH:mm")),
        ];
        let result = function
            .invoke_with_args(datafusion::logical_expr::ScalarFunctionArgs {
                args,
                arg_fields: vec![
                    Arc::new(datafusion::arrow::datatypes::Field::new(
                        "t",
                        DataType::Timestamp(
                            datafusion::arrow::datatypes::TimeUnit::Millisecond,
                            None,
                        ),
                        true,
                    )),
                    Arc::new(datafusion::arrow::datatypes::Field::new(
                        "p",
                        DataType::Utf8,
                        false,
                    )),
                ],
                number_rows: 2,
                return_field: Arc::new(datafusion::arrow::datatypes::Field::new(
                    "r",
                    DataType::Utf8,
                    true,
                )),
                config_options: Default::default(),
            })
            .unwrap()
            .to_array(2)
            .unwrap();
        let text = result.as_string::<i32>();
        assert_eq!(text.value(0), "2026-01-02 03:04");
        assert!(text.is_null(1));
    }
}
