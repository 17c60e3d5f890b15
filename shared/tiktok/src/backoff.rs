//! Exponential backoff with full jitter (sleep a uniform random time in `[0, min(cap, base * 2^n)]`),
//! bounded by a number of attempts and by the total time since the first attempt. Plugged into `backon`.

use std::time::{Duration, Instant};

use rand::Rng;

use crate::RetryPolicy;

pub(crate) struct FullJitter {
    policy: RetryPolicy,
    started: Instant,
    /// Sum of the delays handed out (the caller sleeps them; counted in case it has not yet).
    planned: Duration,
    retries: u32,
}

impl FullJitter {
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        FullJitter {
            policy,
            started: Instant::now(),
            planned: Duration::ZERO,
            retries: 0,
        }
    }
}

impl Iterator for FullJitter {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        // max_attempts counts the first try too.
        if self.retries + 1 >= self.policy.max_attempts {
            return None;
        }
        let exp = self
            .policy
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(self.retries));
        let cap = exp.min(self.policy.max_backoff);
        let delay = if cap.is_zero() {
            cap
        } else {
            rand::rng().random_range(Duration::ZERO..=cap)
        };
        if self.started.elapsed().max(self.planned) + delay > self.policy.max_elapsed {
            return None;
        }
        self.planned += delay;
        self.retries += 1;
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(attempts: u32, elapsed: Duration) -> RetryPolicy {
        RetryPolicy {
            max_attempts: attempts,
            max_elapsed: elapsed,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
        }
    }

    #[test]
    fn bounded_by_attempts_and_capped() {
        let delays: Vec<Duration> = FullJitter::new(policy(5, Duration::from_secs(60))).collect();
        assert_eq!(delays.len(), 4, "5 attempts = 4 retries");
        let caps = [100, 200, 400, 400];
        for (d, cap) in delays.iter().zip(caps) {
            assert!(*d <= Duration::from_millis(cap), "{d:?} > {cap}ms");
        }
    }

    #[test]
    fn bounded_by_total_time() {
        let mut p = policy(1_000, Duration::from_millis(150));
        p.max_backoff = Duration::from_secs(10);
        let delays: Vec<Duration> = FullJitter::new(p).collect();
        let total: Duration = delays.iter().sum();
        // Without the time bound 999 retries would be allowed; the budget stops it after a few.
        assert!(delays.len() < 999);
        assert!(
            total <= Duration::from_millis(150),
            "planned sleeps {total:?} exceed the budget"
        );
    }

    #[test]
    fn jitter_spreads_delays() {
        let p = policy(3, Duration::from_secs(60));
        let firsts: std::collections::BTreeSet<Duration> = (0..50)
            .filter_map(|_| FullJitter::new(p.clone()).next())
            .collect();
        assert!(
            firsts.len() > 10,
            "full jitter should draw many different delays, got {}",
            firsts.len()
        );
    }

    #[test]
    fn single_attempt_never_retries() {
        assert_eq!(
            FullJitter::new(policy(1, Duration::from_secs(60))).next(),
            None
        );
    }
}
