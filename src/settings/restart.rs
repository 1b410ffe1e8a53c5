//! Flink's `restart-strategy.*` keys: checked when set, read into a [`RestartStrategy`]
//! when a job starts.

use std::collections::BTreeMap;
use std::time::Duration;

use runnel_connectors::options::parse_duration;
use runnel_runtime::RestartStrategy;

use super::invalid;
use crate::error::Result;

pub const TYPE: &str = "restart-strategy.type";
pub const FIXED_DELAY_ATTEMPTS: &str = "restart-strategy.fixed-delay.attempts";
pub const FIXED_DELAY_DELAY: &str = "restart-strategy.fixed-delay.delay";
pub const INITIAL_BACKOFF: &str = "restart-strategy.exponential-delay.initial-backoff";
pub const MAX_BACKOFF: &str = "restart-strategy.exponential-delay.max-backoff";
pub const BACKOFF_MULTIPLIER: &str = "restart-strategy.exponential-delay.backoff-multiplier";
pub const RESET_BACKOFF_THRESHOLD: &str =
    "restart-strategy.exponential-delay.reset-backoff-threshold";
pub const JITTER_FACTOR: &str = "restart-strategy.exponential-delay.jitter-factor";
pub const MAX_FAILURES: &str = "restart-strategy.failure-rate.max-failures-per-interval";
pub const FAILURE_RATE_INTERVAL: &str = "restart-strategy.failure-rate.failure-rate-interval";
pub const FAILURE_RATE_DELAY: &str = "restart-strategy.failure-rate.delay";

/// Every `restart-strategy.*` key Runnel acts on.
pub const KEYS: &[&str] = &[
    TYPE,
    FIXED_DELAY_ATTEMPTS,
    FIXED_DELAY_DELAY,
    INITIAL_BACKOFF,
    MAX_BACKOFF,
    BACKOFF_MULTIPLIER,
    RESET_BACKOFF_THRESHOLD,
    JITTER_FACTOR,
    MAX_FAILURES,
    FAILURE_RATE_INTERVAL,
    FAILURE_RATE_DELAY,
];

/// The strategy `restart-strategy.type` names (Flink's spellings), without its options.
fn named(value: &str) -> Option<RestartStrategy> {
    match value.trim().to_ascii_lowercase().replace('_', "-").as_str() {
        "none" | "off" | "disable" | "no-restart" => Some(RestartStrategy::None),
        "fixed-delay" | "fixeddelay" => Some(RestartStrategy::FIXED_DELAY),
        "exponential-delay" | "exponentialdelay" => Some(RestartStrategy::EXPONENTIAL_DELAY),
        "failure-rate" | "failurerate" => Some(RestartStrategy::FAILURE_RATE),
        _ => None,
    }
}

/// Checks the value of one of [`KEYS`] as it is set.
pub fn check(key: &str, value: &str) -> Result<()> {
    let duration = || {
        parse_duration(value).map(drop).ok_or_else(|| {
            invalid(
                key,
                value,
                "expected a duration such as '1 s', '10 s' or '1 min'",
            )
        })
    };
    match key {
        TYPE => named(value).map(drop).ok_or_else(|| {
            invalid(
                key,
                value,
                "expected 'exponential-delay', 'fixed-delay', 'failure-rate' or 'none'",
            )
        }),
        FIXED_DELAY_ATTEMPTS | MAX_FAILURES => match value.trim().parse::<u32>() {
            Ok(_) => Ok(()),
            Err(_) => Err(invalid(key, value, "expected a whole number, 0 or more")),
        },
        BACKOFF_MULTIPLIER => match value.trim().parse::<f64>() {
            Ok(m) if m.is_finite() && m >= 1.0 => Ok(()),
            _ => Err(invalid(key, value, "expected a number of at least 1.0")),
        },
        JITTER_FACTOR => match value.trim().parse::<f64>() {
            Ok(j) if (0.0..=1.0).contains(&j) => Ok(()),
            _ => Err(invalid(key, value, "expected a number from 0.0 to 1.0")),
        },
        _ => duration(),
    }
}

/// The strategy the settings choose; `None` when they name none (then the job gets the
/// default for whether it checkpoints). Options of a strategy other than the one named
/// are ignored, as in Flink.
pub fn strategy(settings: &BTreeMap<String, String>) -> Option<RestartStrategy> {
    let strategy = named(settings.get(TYPE)?)?;
    let duration = |key: &str, default: Duration| {
        settings
            .get(key)
            .and_then(|v| parse_duration(v))
            .unwrap_or(default)
    };
    let number = |key: &str| settings.get(key).and_then(|v| v.trim().parse::<f64>().ok());
    let count = |key: &str| settings.get(key).and_then(|v| v.trim().parse::<u32>().ok());
    Some(match strategy {
        RestartStrategy::None => RestartStrategy::None,
        RestartStrategy::FixedDelay { attempts, delay } => RestartStrategy::FixedDelay {
            attempts: count(FIXED_DELAY_ATTEMPTS).unwrap_or(attempts),
            delay: duration(FIXED_DELAY_DELAY, delay),
        },
        RestartStrategy::ExponentialDelay {
            initial,
            max,
            multiplier,
            reset_after,
            jitter,
        } => RestartStrategy::ExponentialDelay {
            initial: duration(INITIAL_BACKOFF, initial),
            max: duration(MAX_BACKOFF, max),
            multiplier: number(BACKOFF_MULTIPLIER).unwrap_or(multiplier),
            reset_after: duration(RESET_BACKOFF_THRESHOLD, reset_after),
            jitter: number(JITTER_FACTOR).unwrap_or(jitter),
        },
        RestartStrategy::FailureRate {
            max_failures,
            interval,
            delay,
        } => RestartStrategy::FailureRate {
            max_failures: count(MAX_FAILURES).unwrap_or(max_failures),
            interval: duration(FAILURE_RATE_INTERVAL, interval),
            delay: duration(FAILURE_RATE_DELAY, delay),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_a_strategy_with_its_options_and_flinks_defaults() {
        assert_eq!(strategy(&settings(&[])), None);
        assert_eq!(
            strategy(&settings(&[
                (TYPE, "fixed-delay"),
                (FIXED_DELAY_ATTEMPTS, "3")
            ])),
            Some(RestartStrategy::FixedDelay {
                attempts: 3,
                delay: Duration::from_secs(1)
            })
        );
        assert_eq!(
            strategy(&settings(&[(TYPE, "none"), (FIXED_DELAY_ATTEMPTS, "3")])),
            Some(RestartStrategy::None)
        );
        let Some(RestartStrategy::ExponentialDelay { initial, max, .. }) = strategy(&settings(&[
            (TYPE, "exponential-delay"),
            (INITIAL_BACKOFF, "200 ms"),
        ])) else {
            panic!("not exponential delay");
        };
        assert_eq!(
            (initial, max),
            (Duration::from_millis(200), Duration::from_secs(60))
        );
    }

    #[test]
    fn refuses_bad_values_naming_what_is_expected() {
        let refused = |key, value| check(key, value).map_err(|e| e.to_string()).err();
        assert!(refused(TYPE, "sometimes").is_some_and(|e| e.contains("fixed-delay")));
        assert!(refused(FIXED_DELAY_ATTEMPTS, "-1").is_some());
        assert!(refused(BACKOFF_MULTIPLIER, "0.5").is_some());
        assert!(refused(JITTER_FACTOR, "2").is_some());
        assert!(refused(FIXED_DELAY_DELAY, "soon").is_some());
        assert!(refused(TYPE, "Fixed-Delay").is_none());
    }
}
