//! [`TableOptions`]: a table's `WITH (...)` options, checked against what its connector accepts.

use std::collections::BTreeMap;
use std::str::FromStr;

use crate::error::{ConnectorError, Result};

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

    /// The option parsed, or `default` when absent.
    pub fn parse_or<T: FromStr>(&self, key: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(value) => value
                .parse()
                .map_err(|e: T::Err| self.invalid(key, value, e.to_string())),
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
