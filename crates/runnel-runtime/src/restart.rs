//! Restart strategies (Flink's `restart-strategy.*`): whether a failed job starts again
//! from its last checkpoint inside the same process, and after how long.
//!
//! [`RestartStrategy`] is the setting; [`RestartBackoff`] applies it to a job's failures
//! as they happen and answers, for each, "restart after this delay" or "give up".

use std::time::{Duration, Instant};

/// How a job that failed while running is restarted (Flink's `restart-strategy.type`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RestartStrategy {
    /// The first failure ends the job (`none`, `off`, `disable`).
    None,
    /// Up to `attempts` restarts in the job's life, each after `delay`.
    FixedDelay { attempts: u32, delay: Duration },
    /// Restarts without end, each delay `multiplier` times the last, from `initial` up to
    /// `max`, varied by ± `jitter` of itself. A job that ran `reset_after` without failing
    /// starts again from `initial`.
    ExponentialDelay {
        initial: Duration,
        max: Duration,
        multiplier: f64,
        reset_after: Duration,
        jitter: f64,
    },
    /// Restarts after `delay`, unless `max_failures` failures already happened within the
    /// last `interval`.
    FailureRate {
        max_failures: u32,
        interval: Duration,
        delay: Duration,
    },
}

impl RestartStrategy {
    /// Flink's defaults for `exponential-delay`: from 1 s to 1 min, × 1.5, reset after
    /// an hour without failure, 10 % jitter.
    pub const EXPONENTIAL_DELAY: RestartStrategy = RestartStrategy::ExponentialDelay {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(60),
        multiplier: 1.5,
        reset_after: Duration::from_secs(3600),
        jitter: 0.1,
    };

    /// Flink's defaults for `fixed-delay`: one restart after 1 s.
    pub const FIXED_DELAY: RestartStrategy = RestartStrategy::FixedDelay {
        attempts: 1,
        delay: Duration::from_secs(1),
    };

    /// Flink's defaults for `failure-rate`: one failure a minute, restarted after 1 s.
    pub const FAILURE_RATE: RestartStrategy = RestartStrategy::FailureRate {
        max_failures: 1,
        interval: Duration::from_secs(60),
        delay: Duration::from_secs(1),
    };

    /// The strategy a job gets when its settings name none: as Flink, exponential delay
    /// for a job that checkpoints (a restart resumes from its checkpoint), none for one
    /// that does not (a restart would read its input again from the start).
    pub fn default_for(checkpointing: bool) -> Self {
        if checkpointing {
            Self::EXPONENTIAL_DELAY
        } else {
            Self::None
        }
    }

    /// Its name in `restart-strategy.type`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::FixedDelay { .. } => "fixed-delay",
            Self::ExponentialDelay { .. } => "exponential-delay",
            Self::FailureRate { .. } => "failure-rate",
        }
    }
}

/// A job's failures so far under its [`RestartStrategy`].
#[derive(Debug)]
pub struct RestartBackoff {
    strategy: RestartStrategy,
    /// Restarts granted so far.
    restarts: u32,
    /// The delay before the last restart (exponential delay).
    last_delay: Option<Duration>,
    /// When the job last (re)started running.
    running_since: Instant,
    /// When recent failures happened (failure rate).
    failures: std::collections::VecDeque<Instant>,
    /// A little state for the jitter, so two jobs failing together do not retry in step.
    jitter_seed: u64,
}

impl RestartBackoff {
    pub fn new(strategy: RestartStrategy) -> Self {
        Self {
            strategy,
            restarts: 0,
            last_delay: None,
            running_since: Instant::now(),
            failures: Default::default(),
            jitter_seed: std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15,
        }
    }

    pub fn strategy(&self) -> RestartStrategy {
        self.strategy
    }

    /// The job is running again (its restart succeeded).
    pub fn restarted(&mut self, now: Instant) {
        self.running_since = now;
    }

    /// The job failed at `now`: how long to wait before restarting it, or `None` when the
    /// strategy gives up (then the failure ends the job).
    pub fn on_failure(&mut self, now: Instant) -> Option<Duration> {
        let delay = match self.strategy {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay } => {
                (self.restarts < attempts).then_some(delay)
            }
            RestartStrategy::FailureRate {
                max_failures,
                interval,
                delay,
            } => {
                self.failures
                    .retain(|at| now.saturating_duration_since(*at) < interval);
                self.failures.push_back(now);
                (self.failures.len() <= max_failures as usize).then_some(delay)
            }
            RestartStrategy::ExponentialDelay {
                initial,
                max,
                multiplier,
                reset_after,
                jitter,
            } => {
                let ran_long = now.saturating_duration_since(self.running_since) >= reset_after;
                let next = match self.last_delay {
                    Some(last) if !ran_long => last.mul_f64(multiplier.max(1.0)).min(max),
                    _ => initial.min(max),
                };
                self.last_delay = Some(next);
                Some(self.jittered(next, jitter))
            }
        }?;
        self.restarts += 1;
        Some(delay)
    }

    /// `delay` varied by up to ± `share` of itself.
    fn jittered(&mut self, delay: Duration, share: f64) -> Duration {
        if share <= 0.0 {
            return delay;
        }
        // xorshift: enough to spread retries, no need for a random crate here.
        self.jitter_seed ^= self.jitter_seed << 13;
        self.jitter_seed ^= self.jitter_seed >> 7;
        self.jitter_seed ^= self.jitter_seed << 17;
        let unit = (self.jitter_seed % 2001) as f64 / 1000.0 - 1.0; // in [-1, 1]
        delay.mul_f64((1.0 + unit * share.min(1.0)).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn none_gives_up_at_once() {
        let mut backoff = RestartBackoff::new(RestartStrategy::None);
        assert_eq!(backoff.on_failure(Instant::now()), None);
    }

    #[test]
    fn fixed_delay_counts_attempts_over_the_jobs_life() {
        let mut backoff = RestartBackoff::new(RestartStrategy::FixedDelay {
            attempts: 2,
            delay: 3 * S,
        });
        let now = Instant::now();
        assert_eq!(backoff.on_failure(now), Some(3 * S));
        backoff.restarted(now);
        assert_eq!(backoff.on_failure(now + 100 * S), Some(3 * S));
        assert_eq!(backoff.on_failure(now + 10_000 * S), None);
    }

    #[test]
    fn failure_rate_forgets_failures_outside_the_interval() {
        let mut backoff = RestartBackoff::new(RestartStrategy::FailureRate {
            max_failures: 2,
            interval: 60 * S,
            delay: S,
        });
        let start = Instant::now();
        assert_eq!(backoff.on_failure(start), Some(S));
        assert_eq!(backoff.on_failure(start + 10 * S), Some(S));
        // A third failure within the minute: too many.
        assert_eq!(backoff.on_failure(start + 20 * S), None);
        let mut backoff = RestartBackoff::new(RestartStrategy::FailureRate {
            max_failures: 2,
            interval: 60 * S,
            delay: S,
        });
        backoff.on_failure(start);
        backoff.on_failure(start + 10 * S);
        // The first has left the window by now.
        assert_eq!(backoff.on_failure(start + 65 * S), Some(S));
    }

    #[test]
    fn exponential_delay_grows_to_its_cap_and_resets_after_a_long_run() {
        let mut backoff = RestartBackoff::new(RestartStrategy::ExponentialDelay {
            initial: S,
            max: 5 * S,
            multiplier: 2.0,
            reset_after: 3600 * S,
            jitter: 0.0,
        });
        let start = Instant::now();
        let delays: Vec<_> = (0..5)
            .map(|i| backoff.on_failure(start + i * S).map(|d| d.as_secs()))
            .collect();
        assert_eq!(delays, [Some(1), Some(2), Some(4), Some(5), Some(5)]);
        backoff.restarted(start + 10 * S);
        assert_eq!(backoff.on_failure(start + 3700 * S), Some(S));
    }

    #[test]
    fn jitter_stays_within_its_share() {
        let mut backoff = RestartBackoff::new(RestartStrategy::ExponentialDelay {
            initial: 10 * S,
            max: 10 * S,
            multiplier: 1.5,
            reset_after: 3600 * S,
            jitter: 0.1,
        });
        let now = Instant::now();
        for _ in 0..100 {
            let delay = backoff.on_failure(now).map(|d| d.as_millis());
            assert!(
                delay.is_some_and(|d| (9_000..=11_000).contains(&d)),
                "{delay:?}"
            );
        }
    }
}
