//! Random sources that tests can replace.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;

/// A source of random numbers. Backoff jitter, address shuffling and random start
/// indices draw from one, so tests can inject exact values.
pub trait RandomSource: Send {
    /// A uniformly random 64-bit value.
    fn next_u64(&mut self) -> u64;

    /// A uniformly random value in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniformly random index below `n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

/// SplitMix64: small, fast and good enough for jitter and shuffles. Not for secrets.
///
/// # Examples
///
/// ```
/// use lb_core::{RandomSource, SplitMix64};
/// let mut a = SplitMix64::seeded(7);
/// let mut b = SplitMix64::seeded(7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// assert!(a.next_f64() < 1.0);
/// ```
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator with a fixed seed, for reproducible runs.
    pub fn seeded(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator seeded from the process's hash randomness.
    pub fn from_entropy() -> Self {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(0x5851_f42d_4c95_7f2d);
        Self::seeded(h.finish())
    }
}

impl RandomSource for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(SPLITMIX_GAMMA);
        splitmix_mix(self.state)
    }
}

/// SplitMix64's increment: the state advances by this much per draw.
pub(crate) const SPLITMIX_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's output function of a state.
#[inline]
pub(crate) fn splitmix_mix(state: u64) -> u64 {
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A random source shared by the policies of one channel (they all run on its
/// serializer thread, so the lock is never contended).
///
/// # Examples
///
/// ```
/// use lb_core::{SharedRandom, SplitMix64};
/// let rng = SharedRandom::new(SplitMix64::seeded(1));
/// let copy = rng.clone();
/// assert_ne!(rng.next_u64(), copy.next_u64(), "clones share one stream");
/// ```
#[derive(Clone)]
pub struct SharedRandom(Arc<Mutex<Box<dyn RandomSource>>>);

impl SharedRandom {
    /// Shares `source`.
    pub fn new(source: impl RandomSource + 'static) -> Self {
        Self(Arc::new(Mutex::new(Box::new(source))))
    }

    /// A shared source seeded from entropy.
    pub fn from_entropy() -> Self {
        Self::new(SplitMix64::from_entropy())
    }

    /// See [`RandomSource::next_u64`].
    pub fn next_u64(&self) -> u64 {
        self.0.lock().next_u64()
    }

    /// See [`RandomSource::next_f64`].
    pub fn next_f64(&self) -> f64 {
        self.0.lock().next_f64()
    }

    /// See [`RandomSource::below`].
    pub fn below(&self, n: usize) -> usize {
        self.0.lock().below(n)
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub fn shuffle<T>(&self, items: &mut [T]) {
        let mut rng = self.0.lock();
        for i in (1..items.len()).rev() {
            items.swap(i, rng.below(i + 1));
        }
    }
}

impl std::fmt::Debug for SharedRandom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedRandom")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = SplitMix64::seeded(42);
        let mut seen = [0usize; 5];
        for _ in 0..5000 {
            seen[rng.below(5)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let rng = SharedRandom::new(SplitMix64::seeded(3));
        let mut v: Vec<u32> = (0..50).collect();
        rng.shuffle(&mut v);
        assert_ne!(v, (0..50).collect::<Vec<_>>());
        v.sort_unstable();
        assert_eq!(v, (0..50).collect::<Vec<_>>());
    }
}
