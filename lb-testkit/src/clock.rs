//! A clock that moves only when the test moves it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Time under the test's control. Clones share one time.
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
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<Mutex<Instant>>,
}

impl ManualClock {
    /// A clock at an arbitrary starting instant.
    pub fn new() -> Self {
        Self {
            now: Arc::new(Mutex::new(Instant::now())),
        }
    }

    /// The current time.
    pub fn now(&self) -> Instant {
        *self.now.lock()
    }

    /// Moves time forward by `by` and returns the new time.
    pub fn advance(&self, by: Duration) -> Instant {
        let mut now = self.now.lock();
        *now += by;
        *now
    }

    /// Moves time forward to `to`; never backwards.
    pub fn advance_to(&self, to: Instant) -> Instant {
        let mut now = self.now.lock();
        *now = (*now).max(to);
        *now
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}
