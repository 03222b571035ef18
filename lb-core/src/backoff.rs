//! Exponential backoff per gRPC's connection-backoff spec.
//!
//! ```text
//! attempt 1: connect with deadline max(now + INITIAL, now + MIN_CONNECT_TIMEOUT)
//! on failure: wait until now + INITIAL, then for attempt n ≥ 2:
//!   backoff_n = min(backoff_{n-1} × MULTIPLIER, MAX)  ± JITTER × backoff_n
//! on a successful connection (the server's SETTINGS arrived): reset to INITIAL
//! ```
//!
//! The defaults are gRPC's: 1 s initial, ×1.6, ±20 % jitter, 120 s cap, 20 s minimum
//! connect timeout.

use std::time::{Duration, Instant};

use crate::random::RandomSource;

/// Backoff parameters.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lb_core::BackoffConfig;
/// let c = BackoffConfig::default();
/// assert_eq!(c.initial, Duration::from_secs(1));
/// assert_eq!(c.max, Duration::from_secs(120));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackoffConfig {
    /// The first delay.
    pub initial: Duration,
    /// The factor each later delay grows by.
    pub multiplier: f64,
    /// The jitter as a fraction of the delay: a delay `d` becomes uniform in
    /// `[d × (1 − jitter), d × (1 + jitter))`.
    pub jitter: f64,
    /// The largest delay before jitter.
    pub max: Duration,
    /// No connection attempt gets less time than this.
    pub min_connect_timeout: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            multiplier: 1.6,
            jitter: 0.2,
            max: Duration::from_secs(120),
            min_connect_timeout: Duration::from_secs(20),
        }
    }
}

impl BackoffConfig {
    /// The delay after `retries` failures, as grpc's `Exponential` strategy computes
    /// it: `retries == 0` gives `initial` with no jitter; otherwise `initial` grows by
    /// `multiplier` once per retry, stops at `max`, and gets jitter.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lb_core::{BackoffConfig, SplitMix64};
    /// let c = BackoffConfig { jitter: 0.0, ..BackoffConfig::default() };
    /// let mut rng = SplitMix64::seeded(1);
    /// assert_eq!(c.delay_for(0, &mut rng), Duration::from_secs(1));
    /// assert_eq!(c.delay_for(1, &mut rng), Duration::from_millis(1600));
    /// assert_eq!(c.delay_for(100, &mut rng), Duration::from_secs(120));
    /// ```
    pub fn delay_for(&self, retries: u32, rng: &mut dyn RandomSource) -> Duration {
        if retries == 0 {
            return self.initial;
        }
        let max = self.max.as_secs_f64();
        let mut backoff = self.initial.as_secs_f64();
        for _ in 0..retries {
            if backoff >= max {
                break;
            }
            backoff *= self.multiplier;
        }
        self.jittered(backoff.min(max), rng)
    }

    fn jittered(&self, secs: f64, rng: &mut dyn RandomSource) -> Duration {
        let factor = 1.0 + self.jitter * (rng.next_f64() * 2.0 - 1.0);
        Duration::try_from_secs_f64((secs * factor).max(0.0)).unwrap_or(self.max)
    }
}

/// The backoff state of one connection target (a subchannel): when the next attempt
/// may start and how long an attempt may take.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use lb_core::{Backoff, BackoffConfig, SplitMix64};
/// let mut b = Backoff::new(BackoffConfig::default(), SplitMix64::seeded(9));
/// let t0 = Instant::now();
/// // The first attempt may take the minimum connect timeout.
/// assert_eq!(b.connect_deadline(t0), t0 + Duration::from_secs(20));
/// // After it fails, the next attempt waits the initial backoff.
/// assert_eq!(b.next_attempt_after_failure(t0), t0 + Duration::from_secs(1));
/// let d = b.next_attempt_after_failure(t0) - t0;
/// assert!(d >= Duration::from_millis(1280) && d <= Duration::from_millis(1920));
/// b.reset();
/// assert_eq!(b.next_attempt_after_failure(t0), t0 + Duration::from_secs(1));
/// ```
pub struct Backoff {
    config: BackoffConfig,
    rng: Box<dyn RandomSource>,
    /// The delay the next failure waits (before jitter), `None` before the first.
    current: Option<f64>,
}

impl Backoff {
    /// A fresh backoff: the next failure waits `config.initial`.
    pub fn new(config: BackoffConfig, rng: impl RandomSource + 'static) -> Self {
        Self {
            config,
            rng: Box::new(rng),
            current: None,
        }
    }

    /// The parameters.
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// The deadline for a connection attempt that starts at `now`: the end of the
    /// current backoff period, but never less than the minimum connect timeout.
    pub fn connect_deadline(&self, now: Instant) -> Instant {
        let backoff =
            Duration::from_secs_f64(self.current.unwrap_or(self.config.initial.as_secs_f64()));
        now + backoff.max(self.config.min_connect_timeout)
    }

    /// Records a failed attempt at `now` and returns when the next may start. The
    /// first failure waits exactly `initial`; each later one grows by `multiplier`, is
    /// capped at `max`, then gets jitter.
    pub fn next_attempt_after_failure(&mut self, now: Instant) -> Instant {
        let max = self.config.max.as_secs_f64();
        let delay = match self.current {
            None => {
                let initial = self.config.initial.as_secs_f64();
                self.current = Some(initial);
                return now + self.config.initial;
            }
            Some(prev) => (prev * self.config.multiplier).min(max),
        };
        self.current = Some(delay);
        now + self.config.jittered(delay, &mut *self.rng)
    }

    /// Forgets past failures: called when a connection succeeds.
    pub fn reset(&mut self) {
        self.current = None;
    }
}

impl std::fmt::Debug for Backoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backoff")
            .field("config", &self.config)
            .field("current", &self.current)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that always returns the same fraction.
    struct Fixed(f64);
    impl RandomSource for Fixed {
        fn next_u64(&mut self) -> u64 {
            (self.0 * (1u64 << 53) as f64) as u64 * 2048
        }
    }

    fn secs(d: Duration) -> f64 {
        (d.as_secs_f64() * 1000.0).round() / 1000.0
    }

    #[test]
    fn sequence_grows_by_multiplier_and_caps() {
        let t = Instant::now();
        let mut b = Backoff::new(BackoffConfig::default(), Fixed(0.5));
        let got: Vec<f64> = (0..14)
            .map(|_| secs(b.next_attempt_after_failure(t) - t))
            .collect();
        let mut want = vec![1.0];
        let mut d: f64 = 1.0;
        for _ in 1..14 {
            d = (d * 1.6).min(120.0);
            want.push((d * 1000.0).round() / 1000.0);
        }
        assert_eq!(got, want);
        assert_eq!(*got.last().unwrap(), 120.0);
    }

    #[test]
    fn jitter_spans_twenty_percent_both_ways() {
        let t = Instant::now();
        for (frac, factor) in [(0.0, 0.8), (0.999_999, 1.2)] {
            let mut b = Backoff::new(BackoffConfig::default(), Fixed(frac));
            b.next_attempt_after_failure(t);
            let d = secs(b.next_attempt_after_failure(t) - t);
            assert!((d - 1.6 * factor).abs() < 0.002, "{frac}: {d}");
        }
    }

    #[test]
    fn connect_deadline_never_below_min_connect_timeout() {
        let t = Instant::now();
        let mut b = Backoff::new(BackoffConfig::default(), Fixed(0.5));
        assert_eq!(b.connect_deadline(t), t + Duration::from_secs(20));
        for _ in 0..12 {
            b.next_attempt_after_failure(t);
        }
        // The current backoff (1.6^11 ≈ 176 s, capped at 120 s) is above 20 s.
        assert_eq!(b.connect_deadline(t), t + Duration::from_secs(120));
        b.reset();
        assert_eq!(b.connect_deadline(t), t + Duration::from_secs(20));
    }

    #[test]
    fn delay_for_matches_grpc_exponential_strategy() {
        let c = BackoffConfig::default();
        let mut mid = Fixed(0.5);
        assert_eq!(c.delay_for(0, &mut mid), Duration::from_secs(1));
        assert_eq!(secs(c.delay_for(1, &mut mid)), 1.6);
        assert_eq!(secs(c.delay_for(2, &mut mid)), 2.56);
        assert_eq!(secs(c.delay_for(u32::MAX, &mut mid)), 120.0);
    }
}
