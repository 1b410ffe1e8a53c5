//! [`TableOptions`]: a table's `WITH (...)` options, checked against what its connector accepts.

use std::collections::BTreeMap;
use std::str::FromStr;

use crate::error::{ConnectorError, Result};

/// Flink's watermark alignment options, for connectors whose readers can keep in step
/// (see [`TableOptions::watermark_alignment`]).
pub const ALIGNMENT_OPTIONS: &[&str] = &[
    "scan.watermark.alignment.group",
    "scan.watermark.alignment.max-drift",
    "scan.watermark.alignment.update-interval",
];

/// The options of one table, for one connector.
pub struct TableOptions<'a> {
    table: &'a str,
    connector: &'a str,
    options: &'a BTreeMap<String, String>,
}

impl<'a> TableOptions<'a> {
    /// Checks that every option is in `valid` or starts with one of `prefixes`.
    pub fn validate(
        table: &'a str,
        connector: &'a str,
        options: &'a BTreeMap<String, String>,
        valid: &[&str],
        prefixes: &[&str],
    ) -> Result<Self> {
        for key in options.keys() {
            let known = key == "connector"
                || valid.contains(&key.as_str())
                || prefixes.iter().any(|p| key.starts_with(p));
            if !known {
                let mut list: Vec<String> = valid.iter().map(|s| format!("'{s}'")).collect();
                list.extend(prefixes.iter().map(|p| format!("'{p}*'")));
                return Err(ConnectorError::UnknownOption {
                    table: table.into(),
                    connector: connector.into(),
                    option: key.clone(),
                    valid: list.join(", "),
                });
            }
        }
        Ok(Self {
            table,
            connector,
            options,
        })
    }

    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.options.get(key).map(String::as_str)
    }

    pub fn required(&self, key: &str) -> Result<&'a str> {
        self.get(key).ok_or_else(|| ConnectorError::MissingOption {
            table: self.table.into(),
            connector: self.connector.into(),
            option: key.into(),
        })
    }

    /// The option parsed, or `None` when absent.
    pub fn parse<T: FromStr>(&self, key: &str) -> Result<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        self.get(key)
            .map(|value| {
                value
                    .parse()
                    .map_err(|e: T::Err| self.invalid(key, value, e.to_string()))
            })
            .transpose()
    }

    /// The option parsed, or `default` when absent.
    pub fn parse_or<T: FromStr>(&self, key: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        Ok(self.parse(key)?.unwrap_or(default))
    }

    /// A duration option in Flink's format (`500 ms`, `5 s`, `1 min`, `2h`; a bare number is ms).
    pub fn duration(&self, key: &str) -> Result<Option<std::time::Duration>> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        parse_duration(value).map(Some).ok_or_else(|| {
            self.invalid(
                key,
                value,
                "expected a duration such as '500 ms', '5 s' or '1 min'",
            )
        })
    }

    /// How the table's readers keep in step in event time: `'scan.watermark.alignment.
    /// max-drift'` (or the connector's `default_drift`) within `'scan.watermark.alignment.
    /// group'` (by default the table's own readers); `None` without a drift. Flink's
    /// `update-interval` is accepted and has nothing to set: readers report each
    /// watermark as they reach it.
    pub fn watermark_alignment(
        &self,
        default_drift: Option<std::time::Duration>,
    ) -> Result<Option<runnel_runtime::WatermarkAlignment>> {
        const GROUP: &str = "scan.watermark.alignment.group";
        self.duration("scan.watermark.alignment.update-interval")?;
        let drift = self
            .duration("scan.watermark.alignment.max-drift")?
            .or(default_drift);
        match (drift, self.get(GROUP)) {
            (None, None) => Ok(None),
            (None, Some(group)) => Err(self.invalid(
                GROUP,
                group,
                "needs 'scan.watermark.alignment.max-drift' too",
            )),
            (Some(drift), group) => Ok(Some(runnel_runtime::WatermarkAlignment {
                group: group.map_or_else(|| format!("table:{}", self.table), str::to_string),
                max_drift_ms: i64::try_from(drift.as_millis()).unwrap_or(i64::MAX),
            })),
        }
    }

    /// The option, which must be one of `choices` (or `default` when absent).
    pub fn choice(&self, key: &str, choices: &[&'a str], default: &'a str) -> Result<&'a str> {
        let value = self.get(key).unwrap_or(default);
        if choices.contains(&value) {
            Ok(value)
        } else {
            Err(self.invalid(
                key,
                value,
                format!("expected one of {}", choices.join(", ")),
            ))
        }
    }

    pub fn invalid(&self, key: &str, value: &str, reason: impl Into<String>) -> ConnectorError {
        ConnectorError::InvalidOption {
            table: self.table.into(),
            option: key.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// Options under `prefix`, with the prefix stripped (`properties.acks` → `acks`).
    pub fn with_prefix(&self, prefix: &str) -> Vec<(&'a str, &'a str)> {
        self.options
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k, v.as_str())))
            .collect()
    }
}

/// Parses Flink's duration syntax: a number and an optional unit (default milliseconds).
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let millis = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "min" | "m" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        _ => return None,
    };
    Some(std::time::Duration::from_millis(
        number.checked_mul(millis)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn parses_flink_durations() {
        assert_eq!(parse_duration("500"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("5 s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("1min"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("2 hours"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("5 fortnights"), None);
        assert_eq!(parse_duration("s"), None);
    }
}
