//! The channel's only source of time.
//!
//! Every deadline the channel keeps (call deadlines, connect deadlines, backoff,
//! idleness, re-resolution) is read from a [`Clock`]. The default, [`SystemClock`],
//! follows real time, so the channel waits for a deadline by sleeping until it. A test
//! clock (lb-testkit's `ManualClock`) moves only when told to: it says so by returning
//! `true` from [`Clock::subscribe`] and then calls every [`ClockListener`] when it
//! moves, so the channel's threads wake up and look at their deadlines again.

use std::fmt;
use std::sync::Weak;
use std::time::Instant;

/// Told when a clock that does not follow real time moves.
pub trait ClockListener: Send + Sync + 'static {
    /// The clock now reads `now`. Called on the thread that moved the clock; must not
    /// block.
    fn advanced(&self, now: Instant);
}

/// A source of time for a channel.
///
/// # Examples
///
/// A clock that stands still (time never passes, so no deadline ever expires):
///
/// ```
/// use std::time::Instant;
/// use lb_core::channel::Clock;
///
/// #[derive(Debug)]
/// struct Frozen(Instant);
/// impl Clock for Frozen {
///     fn now(&self) -> Instant { self.0 }
///     fn subscribe(&self, _: std::sync::Weak<dyn lb_core::channel::ClockListener>) -> bool {
///         true // time only "moves" by jumps, and this one never jumps
///     }
/// }
/// let c = Frozen(Instant::now());
/// assert_eq!(c.now(), c.now());
/// ```
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Instant;

    /// The current time to within a few milliseconds, never later than [`now`]:
    /// for hot paths that compare against times seconds away (a cache entry's
    /// expiry), where [`now`]'s system call-free clock read is still a third of
    /// the work. The default is [`now`]; [`SystemClock`] reads the kernel's coarse
    /// clock.
    ///
    /// [`now`]: Self::now
    fn now_coarse(&self) -> Instant {
        self.now()
    }

    /// Registers `listener` to be told whenever the clock jumps, and says whether the
    /// clock is such a clock.
    ///
    /// A clock that follows real time returns `false` (the default) and never calls
    /// the listener: the channel then waits for deadlines in real time. A clock that
    /// moves only by jumps returns `true` and must call every live listener after
    /// each jump; the channel then never waits in real time for a deadline. The clock
    /// keeps only a weak reference and may drop dead ones.
    fn subscribe(&self, listener: Weak<dyn ClockListener>) -> bool {
        let _ = listener;
        false
    }
}

/// Real time: [`Instant::now`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    /// On Linux, `CLOCK_MONOTONIC_COARSE` (the time at the last scheduler tick, 1
    /// to 10 ms behind) in a few nanoseconds; elsewhere [`Instant::now`].
    fn now_coarse(&self) -> Instant {
        coarse::now()
    }
}

/// `CLOCK_MONOTONIC_COARSE` as an [`Instant`]: the same clock as `Instant`'s
/// (`CLOCK_MONOTONIC`) read at its last tick, placed on `Instant`'s scale by one
/// pair of readings taken together. That pair may be up to one tick apart, so the
/// result is moved one tick earlier, which keeps it from ever running ahead of
/// [`Instant::now`]: it trails by at most two ticks.
#[cfg(target_os = "linux")]
mod coarse {
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    use nix::time::{ClockId, clock_getres, clock_gettime};

    const CLOCK: ClockId = ClockId::CLOCK_MONOTONIC_COARSE;

    /// An `Instant` and a coarse reading of about the same moment.
    struct Base {
        instant: Instant,
        coarse: Duration,
    }

    static BASE: OnceLock<Option<Base>> = OnceLock::new();

    fn base() -> Option<Base> {
        let tick = Duration::from(clock_getres(CLOCK).ok()?);
        let coarse = Duration::from(clock_gettime(CLOCK).ok()?);
        let instant = Instant::now().checked_sub(tick)?;
        Some(Base { instant, coarse })
    }

    pub(super) fn now() -> Instant {
        match (BASE.get_or_init(base), clock_gettime(CLOCK)) {
            (Some(base), Ok(t)) => base.instant + Duration::from(t).saturating_sub(base.coarse),
            _ => Instant::now(),
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod coarse {
    pub(super) fn now() -> std::time::Instant {
        std::time::Instant::now()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::sync::Arc;
    use std::time::Duration;

    /// A manual clock for the crate's own unit tests (lb-testkit's cannot be used
    /// here: it implements the trait of the non-test build of this crate).
    #[derive(Debug)]
    pub(crate) struct TestClock {
        now: Mutex<Instant>,
        listeners: Mutex<Vec<Weak<dyn ClockListener>>>,
    }

    impl TestClock {
        pub(crate) fn new() -> Arc<Self> {
            Arc::new(Self {
                now: Mutex::new(Instant::now()),
                listeners: Mutex::new(Vec::new()),
            })
        }

        pub(crate) fn advance(&self, by: Duration) -> Instant {
            let now = {
                let mut now = self.now.lock();
                *now += by;
                *now
            };
            let listeners: Vec<_> = self.listeners.lock().clone();
            for l in listeners.iter().filter_map(Weak::upgrade) {
                l.advanced(now);
            }
            now
        }
    }

    impl Clock for TestClock {
        fn now(&self) -> Instant {
            *self.now.lock()
        }

        fn subscribe(&self, listener: Weak<dyn ClockListener>) -> bool {
            self.listeners.lock().push(listener);
            true
        }
    }

    #[test]
    fn system_clock_follows_real_time_and_never_subscribes() {
        struct L;
        impl ClockListener for L {
            fn advanced(&self, _: Instant) {}
        }
        let l: Arc<dyn ClockListener> = Arc::new(L);
        assert!(!SystemClock.subscribe(Arc::downgrade(&l)));
        let a = SystemClock.now();
        assert!(SystemClock.now() >= a);
    }

    #[test]
    fn the_coarse_clock_trails_real_time_by_a_few_ms_at_most() {
        // Bounded: 200 readings, each checked against the fine clock on both sides.
        for _ in 0..200 {
            let before = Instant::now();
            let coarse = SystemClock.now_coarse();
            let after = Instant::now();
            assert!(coarse <= after, "the coarse clock ran ahead");
            let behind = before.saturating_duration_since(coarse);
            assert!(behind <= Duration::from_millis(25), "{behind:?} behind");
        }
    }
}
