//! The client-side adaptive throttler in front of the RLS server.
//!
//! Over a sliding window (30 s, in 100 bins of 300 ms) it counts the requests the
//! server accepted and those that were throttled, client-side throttles included:
//!
//! ```text
//!   requests = accepts + throttles
//!   p        = (requests − ratio_for_accepts × accepts) / (requests + requests_padding)
//!   throttle the next request  iff  p > U[0, 1)          (ratio 2.0, padding 8)
//! ```
//!
//! So while the server accepts at least half the requests nothing is throttled; when
//! it rejects everything, the client sheds load in proportion. The owner records
//! every response (grpc-go's control channel never does, which leaves its throttler
//! inert).
//!
//! Time is passed in; the throttler reads no clock. It is a plain value: share it
//! between picking threads behind a mutex.

use std::time::{Duration, Instant};

use lb_core::RandomSource;

/// The window, bins and formula constants.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ThrottlerConfig {
    /// How far back responses count (30 s).
    pub duration: Duration,
    /// How many bins the window is split into (100); the window slides a bin at a
    /// time.
    pub bins: u32,
    /// How many requests one accept pays for (2.0).
    pub ratio_for_accepts: f64,
    /// Added to the requests in the denominator, so a few failures do not throttle
    /// (8.0).
    pub requests_padding: f64,
}

impl Default for ThrottlerConfig {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(30),
            bins: 100,
            ratio_for_accepts: 2.0,
            requests_padding: 8.0,
        }
    }
}

/// A sum over a sliding window of time bins (grpc-go's `lookback`).
///
/// Bins are numbered from an epoch: bin `i` covers `[epoch + i·width,
/// epoch + (i+1)·width)`. The head is the newest bin seen. Adding to a time that is a
/// whole window or more behind the head is ignored; time going backwards never moves
/// the head.
#[derive(Clone, Debug)]
struct Lookback {
    epoch: Instant,
    width_nanos: i128,
    head: i128,
    total: i64,
    buf: Vec<i64>,
}

impl Lookback {
    fn new(epoch: Instant, duration: Duration, bins: u32) -> Self {
        let bins = bins.max(1);
        let width_nanos = (duration.as_nanos() as i128 / i128::from(bins)).max(1);
        Self {
            epoch,
            width_nanos,
            head: 0,
            total: 0,
            buf: vec![0; bins as usize],
        }
    }

    fn bins(&self) -> i128 {
        self.buf.len() as i128
    }

    fn bin_of(&self, t: Instant) -> i128 {
        let nanos = match t.checked_duration_since(self.epoch) {
            Some(d) => d.as_nanos() as i128,
            None => -(self.epoch.duration_since(t).as_nanos() as i128),
        };
        nanos.div_euclid(self.width_nanos)
    }

    fn slot(&self, bin: i128) -> usize {
        bin.rem_euclid(self.bins()) as usize
    }

    /// Moves the head to `t`'s bin if that is newer, clearing the bins it passes.
    fn advance(&mut self, t: Instant) -> i128 {
        let new_head = self.bin_of(t);
        if new_head <= self.head {
            return new_head;
        }
        let steps = (new_head - self.head).min(self.bins());
        for j in 1..=steps {
            let slot = self.slot(self.head + j);
            self.total -= self.buf[slot];
            self.buf[slot] = 0;
        }
        self.head = new_head;
        new_head
    }

    fn add(&mut self, t: Instant, v: i64) {
        let bin = self.advance(t);
        if self.head - bin >= self.bins() {
            return;
        }
        let slot = self.slot(bin);
        self.buf[slot] += v;
        self.total += v;
    }

    fn sum(&mut self, t: Instant) -> i64 {
        self.advance(t);
        self.total
    }
}

/// The adaptive throttler (grpc-go's `internal/adaptive.Throttler`).
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use lb_core::SplitMix64;
/// use lb_rls::throttler::{Throttler, ThrottlerConfig};
///
/// let t0 = Instant::now();
/// let mut throttler = Throttler::new(ThrottlerConfig::default(), t0, SplitMix64::seeded(1));
/// // Nothing recorded: never throttles.
/// assert!(!throttler.should_throttle(t0));
/// // A server that throttles everything: the client soon sheds most requests.
/// for _ in 0..100 {
///     throttler.register_backend_response(t0, true);
/// }
/// let shed = (0..100).filter(|_| throttler.should_throttle(t0)).count();
/// assert!(shed > 80, "{shed}");
/// // 30 s later the window has slid past all of it.
/// assert!(!throttler.should_throttle(t0 + Duration::from_secs(31)));
/// ```
pub struct Throttler {
    config: ThrottlerConfig,
    accepts: Lookback,
    throttles: Lookback,
    rng: Box<dyn RandomSource>,
}

impl Throttler {
    /// A throttler with nothing recorded; `epoch` anchors the bins (any time at or
    /// before the first call), `rng` draws the uniform numbers.
    pub fn new(config: ThrottlerConfig, epoch: Instant, rng: impl RandomSource + 'static) -> Self {
        Self {
            config,
            accepts: Lookback::new(epoch, config.duration, config.bins),
            throttles: Lookback::new(epoch, config.duration, config.bins),
            rng: Box::new(rng),
        }
    }

    /// The parameters.
    pub fn config(&self) -> &ThrottlerConfig {
        &self.config
    }

    /// Decides whether to throttle a request about to be sent at `now`. A throttled
    /// request counts as a request and a throttle; one let through is counted when
    /// its response is registered.
    pub fn should_throttle(&mut self, now: Instant) -> bool {
        let random = self.rng.next_f64();
        let accepts = self.accepts.sum(now) as f64;
        let throttles = self.throttles.sum(now) as f64;
        let requests = accepts + throttles;
        let probability = (requests - self.config.ratio_for_accepts * accepts)
            / (requests + self.config.requests_padding);
        if probability <= random {
            return false;
        }
        self.throttles.add(now, 1);
        true
    }

    /// Records the server's answer to a request: `throttled` if the server refused
    /// it, else accepted. Call it for every response.
    pub fn register_backend_response(&mut self, now: Instant, throttled: bool) {
        if throttled {
            self.throttles.add(now, 1);
        } else {
            self.accepts.add(now, 1);
        }
    }

    /// The accepts and throttles in the window at `now`.
    pub fn counts(&mut self, now: Instant) -> (i64, i64) {
        (self.accepts.sum(now), self.throttles.sum(now))
    }
}

/// What the RLS policy asks of a throttler: a decision per request and a record of
/// every response. [`Throttler`] is the real one; tests plug in their own (always,
/// never, scripted) through the builder's options.
///
/// # Examples
///
/// ```
/// use std::time::Instant;
/// use lb_rls::throttler::RequestThrottler;
/// struct Never;
/// impl RequestThrottler for Never {
///     fn should_throttle(&mut self, _: Instant) -> bool { false }
///     fn register_backend_response(&mut self, _: Instant, _: bool) {}
/// }
/// let mut t: Box<dyn RequestThrottler> = Box::new(Never);
/// assert!(!t.should_throttle(Instant::now()));
/// ```
pub trait RequestThrottler: Send {
    /// Whether to drop a request about to be sent at `now` (see
    /// [`Throttler::should_throttle`]).
    fn should_throttle(&mut self, now: Instant) -> bool;

    /// Records the answer to a request that was sent: `throttled` if the server did
    /// not serve it (see [`Throttler::register_backend_response`]).
    fn register_backend_response(&mut self, now: Instant, throttled: bool);
}

impl RequestThrottler for Throttler {
    fn should_throttle(&mut self, now: Instant) -> bool {
        Self::should_throttle(self, now)
    }

    fn register_backend_response(&mut self, now: Instant, throttled: bool) {
        Self::register_backend_response(self, now, throttled);
    }
}

impl std::fmt::Debug for Throttler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttler")
            .field("config", &self.config)
            .field("accepts", &self.accepts.total)
            .field("throttles", &self.throttles.total)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A random source that always yields `0.5`.
    struct Half;
    impl RandomSource for Half {
        fn next_u64(&mut self) -> u64 {
            1 << 63
        }
    }

    /// Window `bins` ns in `bins` bins of 1 ns, as grpc-go's tests use.
    fn config(bins: u32) -> ThrottlerConfig {
        ThrottlerConfig {
            duration: Duration::from_nanos(u64::from(bins)),
            bins,
            ..ThrottlerConfig::default()
        }
    }

    fn at(t0: Instant, tick: u64) -> Instant {
        t0 + Duration::from_nanos(tick)
    }

    #[test]
    fn half_is_half() {
        assert_eq!(Half.next_f64(), 0.5);
    }

    /// grpc-go's TestRegisterBackendResponse: at each tick, register an accept
    /// (`Some(false)`), a throttle (`Some(true)`) or nothing, then read the sums.
    #[test]
    fn register_backend_response() {
        type Case = (
            &'static str,
            u32,
            [u64; 3],
            [Option<bool>; 3],
            [i64; 3],
            [i64; 3],
        );
        const A: Option<bool> = Some(false);
        const T: Option<bool> = Some(true);
        const E: Option<bool> = None;
        let cases: [Case; 4] = [
            ("accumulate", 3, [0, 1, 2], [A, T, E], [1, 1, 1], [0, 1, 1]),
            (
                "light time travel",
                3,
                [1, 0, 2],
                [A, T, E],
                [1, 1, 1],
                [0, 1, 1],
            ),
            (
                "heavy time travel",
                3,
                [8, 0, 9],
                [A, A, A],
                [1, 1, 2],
                [0, 0, 0],
            ),
            ("rollover", 1, [0, 1, 2], [A, T, E], [1, 0, 0], [0, 1, 0]),
        ];
        for (name, bins, ticks, responses, want_acc, want_thr) in cases {
            let t0 = Instant::now();
            let mut th = Throttler::new(config(bins), t0, Half);
            for i in 0..3 {
                let now = at(t0, ticks[i]);
                if let Some(throttled) = responses[i] {
                    th.register_backend_response(now, throttled);
                }
                assert_eq!(
                    th.counts(now),
                    (want_acc[i], want_thr[i]),
                    "{name} step {i}"
                );
            }
        }
    }

    /// grpc-go's TestShouldThrottleOptions: before each decision one response is
    /// registered (throttled ×9, accepted ×6, throttled ×4); one bin, random 0.5,
    /// the clock stands still.
    #[test]
    fn should_throttle_options() {
        let responses: Vec<bool> = [vec![true; 9], vec![false; 6], vec![true; 4]].concat();
        let seq = |spec: &[(bool, usize)]| -> Vec<bool> {
            spec.iter()
                .flat_map(|&(v, n)| std::iter::repeat_n(v, n))
                .collect()
        };
        let cases = [
            (
                1.1,
                8.0,
                seq(&[(false, 8), (true, 5), (false, 3), (true, 3)]),
            ),
            (1.1, 7.0, seq(&[(false, 7), (true, 12)])),
            (1.4, 8.0, seq(&[(false, 8), (true, 2), (false, 9)])),
        ];
        for (ratio, padding, want) in cases {
            let t0 = Instant::now();
            let cfg = ThrottlerConfig {
                duration: Duration::from_nanos(1),
                bins: 1,
                ratio_for_accepts: ratio,
                requests_padding: padding,
            };
            let mut th = Throttler::new(cfg, t0, Half);
            let got: Vec<bool> = responses
                .iter()
                .map(|&throttled| {
                    th.register_backend_response(t0, throttled);
                    th.should_throttle(t0)
                })
                .collect();
            assert_eq!(got, want, "ratio {ratio} padding {padding}");
        }
    }

    /// grpc-go's TestLookback: the sums after adding 1, 2, 3 at three ticks.
    #[test]
    fn lookback() {
        let cases: [(&str, u32, [u64; 3], [i64; 3]); 4] = [
            ("accumulate", 3, [0, 1, 2], [1, 3, 6]),
            ("light time travel", 3, [1, 0, 2], [1, 3, 6]),
            ("heavy time travel", 3, [8, 0, 9], [1, 1, 4]),
            ("rollover", 1, [0, 1, 2], [1, 2, 3]),
        ];
        for (name, bins, ticks, want) in cases {
            let t0 = Instant::now();
            let mut lb = Lookback::new(t0, Duration::from_nanos(u64::from(bins)), bins);
            for i in 0..3 {
                let now = at(t0, ticks[i]);
                lb.add(now, i as i64 + 1);
                assert_eq!(lb.sum(now), want[i], "{name} step {i}");
            }
        }
    }

    #[test]
    fn time_before_the_epoch_lands_in_negative_bins() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut lb = Lookback::new(t0, Duration::from_secs(30), 100);
        // 1 s before the epoch: bin −4 (300 ms bins), within the window of head 0.
        lb.add(t0 - Duration::from_secs(1), 1);
        assert_eq!(lb.sum(t0), 1);
        // 31 s before: more than a window behind, ignored.
        lb.add(t0 - Duration::from_secs(31), 1);
        assert_eq!(lb.sum(t0), 1);
        // The window at head h holds bins h − 99 to h: bin −4 leaves it at head 96.
        assert_eq!(lb.sum(t0 + Duration::from_millis(28_799)), 1);
        assert_eq!(lb.sum(t0 + Duration::from_millis(28_800)), 0);
    }

    #[test]
    fn window_slides_bin_by_bin() {
        let t0 = Instant::now();
        let mut th = Throttler::new(ThrottlerConfig::default(), t0, Half);
        for s in 0..30 {
            th.register_backend_response(t0 + Duration::from_secs(s), false);
        }
        assert_eq!(th.counts(t0 + Duration::from_secs(29)), (30, 0));
        // At 30 s the first second's bins (0 to 3) have left the window.
        assert_eq!(th.counts(t0 + Duration::from_millis(30_000)), (29, 0));
        // The response at 29 s (bin 96) is in the window until head 196 (58.8 s).
        assert_eq!(th.counts(t0 + Duration::from_millis(58_799)), (1, 0));
        assert_eq!(th.counts(t0 + Duration::from_millis(58_800)), (0, 0));
        assert_eq!(th.counts(t0 + Duration::from_secs(100)), (0, 0));
    }

    #[test]
    fn client_side_throttles_count_as_requests() {
        // Ratio 0: any recorded request gives p = requests / (requests + 8).
        let t0 = Instant::now();
        let cfg = ThrottlerConfig {
            ratio_for_accepts: 0.0,
            ..ThrottlerConfig::default()
        };
        let mut th = Throttler::new(cfg, t0, Half);
        for _ in 0..9 {
            th.register_backend_response(t0, true);
        }
        // 9 / 17 > 0.5: throttled, and counted.
        assert!(th.should_throttle(t0));
        assert_eq!(th.counts(t0), (0, 10));
    }
}
