//! A clock that moves only when the test moves it.

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use lb_core::channel::{Clock, ClockListener};
use parking_lot::Mutex;

/// Time under the test's control. Clones share one time.
///
/// It is a [`Clock`] for channels and the in-memory transport: both subscribe to it,
/// and every [`ManualClock::advance`] tells them, so their threads look at their
/// deadlines again before `advance` returns. (A channel's effects then follow on its
/// serializer thread; `Channel::settle` waits for them.)
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let clock = lb_testkit::ManualClock::new();
/// let t0 = clock.now();
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(clock.now() - t0, Duration::from_secs(5));
/// ```
#[derive(Clone)]
pub struct ManualClock {
    inner: Arc<Inner>,
}

struct Inner {
    now: Mutex<Instant>,
    listeners: Mutex<Vec<Weak<dyn ClockListener>>>,
}

impl ManualClock {
    /// A clock at an arbitrary starting instant.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                now: Mutex::new(Instant::now()),
                listeners: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The current time.
    pub fn now(&self) -> Instant {
        *self.inner.now.lock()
    }

    /// Moves time forward by `by`, tells every subscriber, and returns the new time.
    pub fn advance(&self, by: Duration) -> Instant {
        let now = {
            let mut now = self.inner.now.lock();
            *now += by;
            *now
        };
        self.notify(now);
        now
    }

    /// Moves time forward to `to` (never backwards), tells every subscriber, and
    /// returns the new time.
    pub fn advance_to(&self, to: Instant) -> Instant {
        let now = {
            let mut now = self.inner.now.lock();
            *now = (*now).max(to);
            *now
        };
        self.notify(now);
        now
    }

    /// This clock as the trait object channels and transports take.
    pub fn shared(&self) -> Arc<dyn Clock> {
        Arc::new(self.clone())
    }

    /// How many live subscribers the clock has.
    pub fn subscribers(&self) -> usize {
        let mut listeners = self.inner.listeners.lock();
        listeners.retain(|l| l.strong_count() > 0);
        listeners.len()
    }

    fn notify(&self, now: Instant) {
        // Call the listeners without holding the lock: they may read the clock.
        let live: Vec<Arc<dyn ClockListener>> = {
            let mut listeners = self.inner.listeners.lock();
            listeners.retain(|l| l.strong_count() > 0);
            listeners.iter().filter_map(Weak::upgrade).collect()
        };
        for l in live {
            l.advanced(now);
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        Self::now(self)
    }

    fn subscribe(&self, listener: Weak<dyn ClockListener>) -> bool {
        self.inner.listeners.lock().push(listener);
        true
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Count(AtomicUsize);
    impl ClockListener for Count {
        fn advanced(&self, _: Instant) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn subscribers_hear_every_jump_until_dropped() {
        let clock = ManualClock::new();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let as_dyn: Arc<dyn ClockListener> = count.clone();
        assert!(Clock::subscribe(&clock, Arc::downgrade(&as_dyn)));
        clock.advance(Duration::from_secs(1));
        let t = clock.now();
        clock.advance_to(t - Duration::from_secs(1));
        assert_eq!(clock.now(), t, "never backwards");
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert_eq!(clock.subscribers(), 1);
        drop(as_dyn);
        drop(count);
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.subscribers(), 0);
    }
}
