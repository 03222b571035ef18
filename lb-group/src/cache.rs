//! The close cache: removed children wait here, still running, until their deadline.
//!
//! The cache is a plain map from child id to a value and the instant it expires. It
//! never reads the clock and never runs anything by itself: the group asks it which
//! entries have expired when the serializer wakes the group (`work(now)`), and closes
//! them. Taking an entry out ([`CloseCache::remove`]) therefore guarantees that it will
//! never expire, with no flag to check and no timer to race: there is no timer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// Removed children by id, each with the instant it expires (`None`: never, which only
/// happens when `now + timeout` does not fit in an [`Instant`]).
#[derive(Debug)]
pub(crate) struct CloseCache<V> {
    entries: BTreeMap<Arc<str>, (Option<Instant>, V)>,
}

impl<V> CloseCache<V> {
    pub(crate) fn new() -> Self {
        Self {
            entries: BTreeMap::new(),
        }
    }

    /// Caches `value` under `key` until `expires_at`. An entry already under `key` is
    /// handed back, untouched by the cache, for the caller to close.
    #[must_use]
    pub(crate) fn insert(
        &mut self,
        key: Arc<str>,
        value: V,
        expires_at: Option<Instant>,
    ) -> Option<V> {
        self.entries
            .insert(key, (expires_at, value))
            .map(|(_, old)| old)
    }

    /// Takes the entry for `key` out; it will not expire any more.
    pub(crate) fn remove(&mut self, key: &str) -> Option<V> {
        self.entries.remove(key).map(|(_, v)| v)
    }

    /// The entry for `key`, left in place.
    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.entries.get_mut(key).map(|(_, v)| v)
    }

    /// Whether `key` is cached.
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Every cached value with its key and expiry, in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, Option<Instant>, &V)> {
        self.entries.iter().map(|(k, (at, v))| (&**k, *at, v))
    }

    /// Every cached value, in key order.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.entries.values_mut().map(|(_, v)| v)
    }

    /// Takes out every entry whose deadline is at or before `now`. Calling it early
    /// takes nothing.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<V> {
        let expired: Vec<Arc<str>> = self
            .entries
            .iter()
            .filter(|(_, (at, _))| at.is_some_and(|at| at <= now))
            .map(|(k, _)| k.clone())
            .collect();
        expired.iter().filter_map(|k| self.remove(k)).collect()
    }

    /// Takes out every entry, expired or not.
    pub(crate) fn drain(&mut self) -> Vec<V> {
        std::mem::take(&mut self.entries)
            .into_values()
            .map(|(_, v)| v)
            .collect()
    }

    /// The earliest deadline of a cached entry.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.entries.values().filter_map(|(at, _)| *at).min()
    }

    /// How many entries are cached.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn entries_expire_at_their_deadline_not_before() {
        let t0 = Instant::now();
        let mut cache = CloseCache::new();
        assert!(
            cache
                .insert(key("a"), 1, Some(t0 + Duration::from_secs(1)))
                .is_none()
        );
        assert!(
            cache
                .insert(key("b"), 2, Some(t0 + Duration::from_secs(2)))
                .is_none()
        );
        assert_eq!(cache.next_deadline(), Some(t0 + Duration::from_secs(1)));

        assert!(cache.expire(t0).is_empty(), "nothing is due at t0");
        assert!(
            cache.expire(t0 + Duration::from_millis(999)).is_empty(),
            "an early wake-up takes nothing"
        );
        assert_eq!(
            cache.expire(t0 + Duration::from_secs(1)),
            [1],
            "due exactly at the deadline"
        );
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.next_deadline(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(cache.expire(t0 + Duration::from_secs(60)), [2]);
        assert_eq!(cache.next_deadline(), None);
    }

    #[test]
    fn a_removed_entry_never_expires() {
        let t0 = Instant::now();
        let mut cache = CloseCache::new();
        let _ = cache.insert(key("a"), "child", Some(t0 + Duration::from_secs(1)));
        assert_eq!(cache.remove("a"), Some("child"));
        assert!(cache.expire(t0 + Duration::from_secs(10)).is_empty());
        assert_eq!(cache.remove("a"), None, "a second remove finds nothing");
    }

    #[test]
    fn drain_takes_everything_once() {
        let t0 = Instant::now();
        let mut cache = CloseCache::new();
        let _ = cache.insert(key("a"), 1, Some(t0));
        let _ = cache.insert(key("b"), 2, None);
        let mut all = cache.drain();
        all.sort_unstable();
        assert_eq!(all, [1, 2]);
        assert_eq!(cache.len(), 0);
        assert!(cache.drain().is_empty());
        assert!(cache.expire(t0 + Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn a_never_expiring_entry_stays_until_drained() {
        let t0 = Instant::now();
        let mut cache = CloseCache::new();
        let _ = cache.insert(key("a"), 1, None);
        assert!(cache.expire(t0 + Duration::from_secs(1_000_000)).is_empty());
        assert!(cache.contains("a"));
        assert_eq!(cache.next_deadline(), None);
        *cache.get_mut("a").unwrap() += 1;
        assert_eq!(cache.values_mut().map(|v| *v).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn insert_hands_back_an_entry_it_replaces() {
        let mut cache = CloseCache::new();
        assert_eq!(cache.insert(key("a"), 1, None), None);
        assert_eq!(cache.insert(key("a"), 2, None), Some(1));
        assert_eq!(cache.remove("a"), Some(2));
    }
}
