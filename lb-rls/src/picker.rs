//! The RLS picker: grpc-go's decision table, with a cache hit that takes no lock and
//! writes no shared memory.
//!
//! ```text
//!  pick(call)
//!   │ method not /service/method ─────────────────────────────> Fail(UNAVAILABLE)
//!   │ keys = key builders(path, authority, metadata), borrowed
//!   v
//!  fast path: this picker's own index snapshot, no lock, no allocation, the
//!   │ coarse clock (`Clock::now_coarse`, a few ms behind)
//!   │ entry valid and (fresh, or refresh already asked for, or in backoff)
//!   │                                  ──> delegate to the entry's children
//!   │ entry expired and in backoff     ──> default target, or UNAVAILABLE
//!   v otherwise: keys = the owned key map
//!  slow path: the policy's latest index + pending requests, under one mutex
//!   │ no entry,   no pending ── throttled ──> default target, or UNAVAILABLE
//!   │                       └─ else ───────> record a MISS, ask the serializer, Queue
//!   │ no entry,   pending   ─────────────────> Queue (the default target is not used)
//!   │ valid entry           ── stale, not in backoff, nothing pending, not throttled
//!   │                          ──> record a STALE request (with its header data);
//!   │                       ── then delegate
//!   │ expired,    in backoff ───────────────> default target, or UNAVAILABLE with
//!   │                                         "most recent error from RLS server: …"
//!   │ expired,    pending   ─────────────────> Queue
//!   │ expired,    no pending ── throttled ──> default target, or UNAVAILABLE
//!   │                        └─ else ──────> record a MISS, ask the serializer, Queue
//! ```
//!
//! The fast path looks the index up with `BorrowedKeys`: the key map's pairs
//! borrowed from the config, the call and the channel, hashed as the owned
//! [`KeyMap`] is. Only a pick that leaves it (or whose call has more keys than the
//! borrowed buffer holds) builds the owned map.
//!
//! Delegation goes to the first of the entry's targets whose child is not in
//! TRANSIENT_FAILURE, else the last; the child's pick is returned as is, and a
//! completed pick carries `x-google-rls-data` with the entry's header data (unless
//! it is empty). Requests are never sent from the picking thread: the picker records
//! them and calls the policy's [`WorkScheduler`], and the serializer sends them.
//!
//! # The index
//!
//! The serializer owns the [`DataCache`](crate::cache::DataCache) and mirrors it into
//! an index of immutable entry views, split into shards by key hash. A change
//! to one entry copies one shard (structural sharing of the rest), so publishing a
//! picker after every RLS response costs O(entries / shards), not O(entries).
//!
//! A hit marks its view as used in the current epoch: a relaxed load, and a write
//! only the first time per epoch. The serializer drains the used views at its next
//! call and promotes them in the cache's LRU order, then starts a new epoch. So hits
//! keep entries alive as in grpc-go (where every lookup promotes), at the cost of
//! ordering the hits of one epoch among themselves arbitrarily.

use foldhash::fast::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use lb_core::channel::Clock;
use lb_core::{ConnectivityState, PickInfo, PickResult, Picker, Status, WorkScheduler};
use parking_lot::Mutex;

use crate::cache::{CacheEntry, CacheKey};
use crate::config::RlsConfig;
use crate::keys::{BorrowedKeys, CallKeys, KeyMap, MethodPath};
use crate::metrics::{PickOutcome, RlsMetrics};
use crate::proto::Reason;
use crate::throttler::RequestThrottler;

/// The request header that carries an entry's header data to the backend.
pub const RLS_DATA_HEADER: &str = "x-google-rls-data";

/// The header data an entry's calls carry: `None` when it is empty, or when it is not
/// a valid header value (a control byte, say), which is then dropped with a logged
/// error rather than sent.
fn sendable_header_data(data: &str) -> Option<Box<str>> {
    if data.is_empty() {
        return None;
    }
    match lb_core::validate_ascii_value(RLS_DATA_HEADER, data.as_bytes()) {
        Ok(()) => Some(data.into()),
        Err(e) => {
            log::error!("rls: dropping header data from the RLS server: {e}");
            None
        }
    }
}

/// The message of picks failed because the RLS request was throttled.
pub const THROTTLED_MESSAGE: &str = "RLS call throttled at client side";

/// How many shards the index has (a power of two).
const SHARDS: usize = 32;

/// One cache entry as pickers see it: immutable but for two hint flags.
pub(crate) struct EntryView {
    pub(crate) key: CacheKey,
    hash: u64,
    targets: Box<[Arc<str>]>,
    header_data: Option<Box<str>>,
    expiry: Option<Instant>,
    stale: Option<Instant>,
    backoff_until: Option<Instant>,
    last_error: Option<Status>,
    /// A STALE refresh has been recorded for this view: later picks need not ask.
    refresh_sent: AtomicBool,
    /// The epoch in which a pick last used this view.
    used_in: AtomicU64,
}

impl EntryView {
    /// The view of `entry`, stored under `key` whose hash is `hash`.
    pub(crate) fn new(key: &CacheKey, hash: u64, entry: &CacheEntry) -> Self {
        Self {
            key: key.clone(),
            hash,
            targets: entry
                .targets()
                .iter()
                .map(|t| Arc::from(t.as_str()))
                .collect(),
            header_data: sendable_header_data(entry.header_data()),
            expiry: entry.expiry_time(),
            stale: entry.stale_time(),
            backoff_until: entry.backoff().map(|b| b.next_attempt),
            last_error: entry.last_error().cloned(),
            refresh_sent: AtomicBool::new(false),
            used_in: AtomicU64::new(0),
        }
    }

    fn has_valid_data(&self, now: Instant) -> bool {
        self.expiry.is_some_and(|t| t > now)
    }

    fn is_stale(&self, now: Instant) -> bool {
        self.stale.is_some_and(|t| t < now)
    }

    fn is_in_backoff(&self, now: Instant) -> bool {
        self.backoff_until.is_some_and(|t| t > now)
    }

    fn matches(&self, hash: u64, path: &str, keys: &impl CallKeys) -> bool {
        self.hash == hash && self.key.path() == path && keys.same_as(self.key.keys())
    }

    /// The status of a pick failed because the entry is in backoff: always
    /// UNAVAILABLE, whatever code the RLS server sent.
    fn backoff_status(&self) -> Status {
        let last = self
            .last_error
            .as_ref()
            .map_or_else(|| "unknown error".to_owned(), ToString::to_string);
        Status::unavailable(format!("most recent error from RLS server: {last}"))
    }
}

impl fmt::Debug for EntryView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntryView")
            .field("key", &self.key)
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

/// A hasher for keys that already are hashes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

#[derive(Clone)]
enum Bucket {
    One(Arc<EntryView>),
    /// Full 64-bit hash collisions: rare.
    Many(Vec<Arc<EntryView>>),
}

type Shard = HashMap<u64, Bucket, BuildHasherDefault<PassThrough>>;

/// The cache as pickers read it. Cheap to clone; see the [module docs](self).
#[derive(Clone)]
pub(crate) struct Index {
    shards: Vec<Arc<Shard>>,
    len: usize,
}

impl Index {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Arc::default()).collect(),
            len: 0,
        }
    }

    fn shard(hash: u64) -> usize {
        (hash >> 59) as usize % SHARDS
    }

    /// The view of `(path, keys)`, whose `hash` is [`PickerShared::hash`]'s.
    fn find(&self, hash: u64, path: &str, keys: &impl CallKeys) -> Option<&Arc<EntryView>> {
        match self.shards[Self::shard(hash)].get(&hash)? {
            Bucket::One(v) => v.matches(hash, path, keys).then_some(v),
            Bucket::Many(vs) => vs.iter().find(|v| v.matches(hash, path, keys)),
        }
    }

    /// Inserts or replaces the view of `view.key`.
    pub(crate) fn upsert(&mut self, view: Arc<EntryView>) {
        let hash = view.hash;
        let shard = Arc::make_mut(&mut self.shards[Self::shard(hash)]);
        match shard.get_mut(&hash) {
            None => {
                shard.insert(hash, Bucket::One(view));
                self.len += 1;
            }
            Some(Bucket::One(old)) if old.key == view.key => *old = view,
            Some(bucket @ Bucket::One(_)) => {
                let Bucket::One(old) = std::mem::replace(bucket, Bucket::Many(Vec::new())) else {
                    unreachable!("matched One");
                };
                *bucket = Bucket::Many(vec![old, view]);
                self.len += 1;
            }
            Some(Bucket::Many(vs)) => match vs.iter_mut().find(|v| v.key == view.key) {
                Some(old) => *old = view,
                None => {
                    vs.push(view);
                    self.len += 1;
                }
            },
        }
    }

    /// Removes the view of `key`, whose hash is `hash`.
    pub(crate) fn remove(&mut self, hash: u64, key: &CacheKey) {
        let i = Self::shard(hash);
        let present = match self.shards[i].get(&hash) {
            None => false,
            Some(Bucket::One(v)) => v.key == *key,
            Some(Bucket::Many(vs)) => vs.iter().any(|v| v.key == *key),
        };
        if !present {
            return;
        }
        let shard = Arc::make_mut(&mut self.shards[i]);
        let emptied = match shard.get_mut(&hash) {
            Some(Bucket::Many(vs)) => {
                vs.retain(|v| v.key != *key);
                vs.is_empty()
            }
            _ => true,
        };
        if emptied {
            shard.remove(&hash);
        }
        self.len -= 1;
    }

    /// How many views the index holds.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl fmt::Debug for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Index({} entries)", self.len)
    }
}

/// A request a picker recorded for the serializer to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PendingRequest {
    pub(crate) reason: Reason,
    pub(crate) stale_header_data: String,
}

/// What pickers and the policy share under one mutex: the slow path's state.
pub(crate) struct SlowState {
    /// The latest index, stored together with the pending requests it answers.
    pub(crate) index: Arc<Index>,
    /// At most one request per key is outstanding.
    pub(crate) pending: HashMap<CacheKey, PendingRequest>,
    /// Requests recorded since the serializer last looked.
    pub(crate) outbox: Vec<(CacheKey, PendingRequest)>,
    /// The current control channel's throttler.
    pub(crate) throttler: Box<dyn RequestThrottler>,
    pub(crate) closed: bool,
}

/// What every picker of one policy shares with it.
pub(crate) struct PickerShared {
    clock: Arc<dyn Clock>,
    hasher: RandomState,
    authority: String,
    scheduler: Arc<dyn WorkScheduler>,
    epoch: AtomicU64,
    used: Mutex<Vec<Arc<EntryView>>>,
    pub(crate) slow: Mutex<SlowState>,
    /// The channel's target, for log messages.
    channel_target: Box<str>,
}

impl PickerShared {
    pub(crate) fn new(
        clock: Arc<dyn Clock>,
        authority: String,
        scheduler: Arc<dyn WorkScheduler>,
        throttler: Box<dyn RequestThrottler>,
        channel_target: &str,
    ) -> Self {
        Self {
            channel_target: channel_target.into(),
            clock,
            hasher: RandomState::default(),
            authority,
            scheduler,
            epoch: AtomicU64::new(1),
            used: Mutex::new(Vec::new()),
            slow: Mutex::new(SlowState {
                index: Arc::new(Index::new()),
                pending: HashMap::new(),
                outbox: Vec::new(),
                throttler,
                closed: false,
            }),
        }
    }

    /// The hash the index files `(path, keys)` under: the same for a call's owned
    /// and borrowed keys (see [`CallKeys`]).
    pub(crate) fn hash(&self, path: &str, keys: &impl CallKeys) -> u64 {
        self.hasher.hash_one((path, keys))
    }

    /// Notes that a pick used `view` (see the [module docs](self)).
    fn mark_used(&self, view: &Arc<EntryView>) {
        let epoch = self.epoch.load(Ordering::Relaxed);
        if view.used_in.load(Ordering::Relaxed) != epoch
            && view.used_in.swap(epoch, Ordering::Relaxed) != epoch
        {
            self.used.lock().push(view.clone());
        }
    }

    /// The views picks used since the last call, which starts a new epoch.
    pub(crate) fn take_used(&self) -> Vec<Arc<EntryView>> {
        let used = std::mem::take(&mut *self.used.lock());
        if !used.is_empty() {
            self.epoch.fetch_add(1, Ordering::Relaxed);
        }
        used
    }
}

impl fmt::Debug for PickerShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PickerShared")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

/// A child policy as a picker sees it.
#[derive(Clone)]
pub(crate) struct ChildPick {
    pub(crate) state: ConnectivityState,
    pub(crate) picker: Arc<dyn Picker>,
}

/// Up to how many children [`RlsPicker::child`] finds by comparing names.
const LINEAR_CHILDREN: usize = 4;

/// The RLS picker. See the [module docs](self).
pub(crate) struct RlsPicker {
    shared: Arc<PickerShared>,
    config: Arc<RlsConfig>,
    index: Arc<Index>,
    children: HashMap<Arc<str>, ChildPick>,
    default_target: Option<Arc<str>>,
    metrics: Arc<RlsMetrics>,
}

impl RlsPicker {
    pub(crate) fn new(
        shared: Arc<PickerShared>,
        config: Arc<RlsConfig>,
        index: Arc<Index>,
        children: HashMap<Arc<str>, ChildPick>,
        default_target: Option<Arc<str>>,
        metrics: Arc<RlsMetrics>,
    ) -> Self {
        Self {
            shared,
            config,
            index,
            children,
            default_target,
            metrics,
        }
    }

    /// The fast half of the decision table, in this picker's own index with the
    /// call's `keys`: the key hash when the call needs the slow half.
    fn pick_fast(&self, info: &PickInfo<'_>, keys: &impl CallKeys) -> Result<PickResult<'_>, u64> {
        let hash = self.shared.hash(info.method, keys);
        let Some(view) = self.index.find(hash, info.method, keys) else {
            return Err(hash);
        };
        // Expiry, staleness and backoff are seconds away: a clock a few
        // milliseconds behind serves as well, at a third of the cost.
        let now = self.shared.clock.now_coarse();
        if view.has_valid_data(now) {
            if !view.is_stale(now)
                || view.is_in_backoff(now)
                || view.refresh_sent.load(Ordering::Relaxed)
            {
                self.shared.mark_used(view);
                return Ok(self.delegate(view, info));
            }
        } else if view.is_in_backoff(now) {
            self.shared.mark_used(view);
            return Ok(self.fall_back(info, view.backoff_status()));
        }
        Err(hash)
    }

    /// The decision table's slow half, under the shared mutex.
    fn pick_slow(
        &self,
        info: &PickInfo<'_>,
        keys: KeyMap,
        hash: u64,
        now: Instant,
    ) -> PickResult<'_> {
        let mut slow = self.shared.slow.lock();
        if slow.closed {
            return PickResult::Fail(Status::unavailable("rls: LB policy already shut down"));
        }
        let view = slow.index.find(hash, info.method, &keys).cloned();
        let key = CacheKey::new(info.method, keys);
        let pending = slow.pending.contains_key(&key);
        let Some(view) = view else {
            if pending {
                return PickResult::Queue;
            }
            return self.send_or_fall_back(slow, info, key, Reason::Miss, "", now);
        };
        self.shared.mark_used(&view);
        if view.has_valid_data(now) {
            if !pending && view.is_stale(now) && !view.is_in_backoff(now) {
                // A throttled refresh is skipped; the data is still served.
                if !slow.throttler.should_throttle(now) {
                    let header = view.header_data.as_deref().unwrap_or("");
                    record(&mut slow, key, Reason::Stale, header);
                    view.refresh_sent.store(true, Ordering::Relaxed);
                    drop(slow);
                    self.shared.scheduler.schedule_work();
                } else {
                    log::debug!(
                        "channel {}: rls: stale refresh of {:?} throttled",
                        self.shared.channel_target,
                        info.method
                    );
                }
            }
            return self.delegate(&view, info);
        }
        if view.is_in_backoff(now) {
            drop(slow);
            return self.fall_back(info, view.backoff_status());
        }
        if pending {
            return PickResult::Queue;
        }
        self.send_or_fall_back(slow, info, key, Reason::Miss, "", now)
    }

    /// Records a request unless the throttler says no, in which case the pick goes
    /// to the default target or fails.
    fn send_or_fall_back(
        &self,
        mut slow: parking_lot::MutexGuard<'_, SlowState>,
        info: &PickInfo<'_>,
        key: CacheKey,
        reason: Reason,
        stale_header_data: &str,
        now: Instant,
    ) -> PickResult<'_> {
        if slow.throttler.should_throttle(now) {
            drop(slow);
            log::debug!(
                "channel {}: rls: lookup {:?} throttled ({reason:?})",
                self.shared.channel_target,
                key.path()
            );
            return self.fall_back(info, Status::unavailable(THROTTLED_MESSAGE));
        }
        record(&mut slow, key, reason, stale_header_data);
        drop(slow);
        self.shared.scheduler.schedule_work();
        PickResult::Queue
    }

    /// The child of `target`. Few children are compared in turn rather than hashed:
    /// hashing the name costs more than comparing a handful of them.
    fn child(&self, target: &str) -> Option<&ChildPick> {
        if self.children.len() <= LINEAR_CHILDREN {
            self.children
                .iter()
                .find(|(t, _)| ***t == *target)
                .map(|(_, child)| child)
        } else {
            self.children.get(target)
        }
    }

    /// RLS has no data to offer: the default target if there is one, else `status`.
    fn fall_back(&self, info: &PickInfo<'_>, status: Status) -> PickResult<'_> {
        let Some(target) = &self.default_target else {
            self.metrics.failed_pick();
            return PickResult::Fail(status);
        };
        let Some(child) = self.child(target) else {
            return PickResult::Queue;
        };
        let result = child.picker.pick(info);
        if let Some(outcome) = outcome(&result) {
            self.metrics.default_target_pick(target, outcome);
        }
        result
    }

    /// Delegates to the first of the entry's children not in TRANSIENT_FAILURE, else
    /// the last.
    fn delegate(&self, view: &EntryView, info: &PickInfo<'_>) -> PickResult<'_> {
        let mut chosen = None;
        for target in view.targets.iter() {
            if let Some(child) = self.child(target) {
                chosen = Some((target, child));
                if child.state != ConnectivityState::TransientFailure {
                    break;
                }
            }
        }
        let Some((target, child)) = chosen else {
            // The children are newer than this picker; the next one has them.
            return PickResult::Queue;
        };
        let mut result = child.picker.pick(info);
        if let (PickResult::Pick(pick), Some(data)) = (&mut result, &view.header_data) {
            pick.metadata.remove(RLS_DATA_HEADER);
            if let Err(e) = pick.metadata.insert(RLS_DATA_HEADER, data) {
                log::warn!("rls: header data not sent: {e}");
            }
        }
        if let Some(outcome) = outcome(&result) {
            self.metrics.target_pick(target, outcome);
        }
        result
    }
}

fn record(slow: &mut SlowState, key: CacheKey, reason: Reason, stale_header_data: &str) {
    let request = PendingRequest {
        reason,
        stale_header_data: stale_header_data.to_owned(),
    };
    slow.pending.insert(key.clone(), request.clone());
    slow.outbox.push((key, request));
}

/// The metrics label of a pick result; `None` for a queued pick (not counted).
fn outcome(result: &PickResult<'_>) -> Option<PickOutcome> {
    match result {
        PickResult::Pick(_) => Some(PickOutcome::Complete),
        PickResult::Queue => None,
        PickResult::Fail(_) => Some(PickOutcome::Fail),
        PickResult::Drop(_) => Some(PickOutcome::Drop),
    }
}

impl Picker for RlsPicker {
    fn pick(&self, info: &PickInfo<'_>) -> PickResult<'_> {
        let path = match MethodPath::parse(info.method) {
            Ok(path) => path,
            Err(e) => return PickResult::Fail(Status::unavailable(format!("rls: {e}"))),
        };
        let builders = self.config.route_lookup().key_builders();
        let mut borrowed = BorrowedKeys::new();
        // The hash of a fast path that missed.
        let missed = if builders.build_borrowed_keys(
            path,
            &self.shared.authority,
            info.metadata,
            &mut borrowed,
        ) {
            match self.pick_fast(info, &borrowed) {
                Ok(result) => return result,
                Err(hash) => Some(hash),
            }
        } else {
            None
        };
        drop(borrowed);
        let keys = builders.build_keys_for(path, &self.shared.authority, info.metadata);
        let hash = match missed {
            Some(hash) => {
                debug_assert_eq!(hash, self.shared.hash(info.method, &keys));
                hash
            }
            // Too many keys to borrow: the same fast path with the owned map.
            None => match self.pick_fast(info, &keys) {
                Ok(result) => return result,
                Err(hash) => hash,
            },
        };
        let now = self.shared.clock.now();
        self.pick_slow(info, keys, hash, now)
    }
}

impl fmt::Debug for RlsPicker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RlsPicker")
            .field("entries", &self.index.len())
            .field("children", &self.children.len())
            .field("default_target", &self.default_target)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use lb_core::{SplitMix64, Status};

    use crate::cache::{CacheOptions, DataCache};

    fn key(path: &str, k: &str) -> CacheKey {
        CacheKey::new(path, [("k", k)].into_iter().collect())
    }

    #[test]
    fn index_upserts_replaces_and_removes_with_structural_sharing() {
        let t = Instant::now();
        let mut cache = DataCache::new(1 << 20, CacheOptions::default(), SplitMix64::seeded(1));
        let hasher = RandomState::default();
        let hash = |k: &CacheKey| hasher.hash_one((k.path(), k.keys()));
        let mut index = Index::new();
        let ages = (Duration::from_secs(10), Duration::from_secs(5));
        for i in 0..200 {
            let k = key("/s/m", &i.to_string());
            let _ = cache.on_success(k.clone(), t, vec![format!("t{i}")], String::new(), ages);
            let view = EntryView::new(&k, hash(&k), cache.peek(k.path(), k.keys()).unwrap());
            index.upsert(Arc::new(view));
        }
        assert_eq!(index.len(), 200);
        let published = index.clone();
        // Replacing one entry copies one shard: the others stay shared.
        let k = key("/s/m", "7");
        let _ = cache.on_failure(k.clone(), t, Status::unavailable("x"));
        let view = EntryView::new(&k, hash(&k), cache.peek(k.path(), k.keys()).unwrap());
        index.upsert(Arc::new(view));
        let shared = index
            .shards
            .iter()
            .zip(&published.shards)
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert_eq!(shared, SHARDS - 1);
        assert_eq!(index.len(), 200);
        assert!(
            index
                .find(hash(&k), "/s/m", k.keys())
                .unwrap()
                .is_in_backoff(t)
        );
        assert!(
            !published
                .find(hash(&k), "/s/m", k.keys())
                .unwrap()
                .is_in_backoff(t)
        );
        index.remove(hash(&k), &k);
        index.remove(hash(&k), &k);
        assert_eq!(index.len(), 199);
        assert!(index.find(hash(&k), "/s/m", k.keys()).is_none());
        assert!(published.find(hash(&k), "/s/m", k.keys()).is_some());
    }

    #[test]
    fn full_hash_collisions_keep_both_entries() {
        let t = Instant::now();
        let mut cache = DataCache::new(1 << 20, CacheOptions::default(), SplitMix64::seeded(1));
        let ages = (Duration::from_secs(10), Duration::from_secs(5));
        let (a, b) = (key("/s/m", "a"), key("/s/m", "b"));
        let _ = cache.on_success(a.clone(), t, vec!["ta".into()], String::new(), ages);
        let _ = cache.on_success(b.clone(), t, vec!["tb".into()], String::new(), ages);
        let mut index = Index::new();
        for k in [&a, &b] {
            let view = EntryView::new(k, 42, cache.peek(k.path(), k.keys()).unwrap());
            index.upsert(Arc::new(view));
        }
        assert_eq!(index.len(), 2);
        assert_eq!(&*index.find(42, "/s/m", a.keys()).unwrap().targets[0], "ta");
        assert_eq!(&*index.find(42, "/s/m", b.keys()).unwrap().targets[0], "tb");
        index.remove(42, &a);
        assert!(index.find(42, "/s/m", a.keys()).is_none());
        assert_eq!(&*index.find(42, "/s/m", b.keys()).unwrap().targets[0], "tb");
        index.remove(42, &b);
        assert_eq!(index.len(), 0);
    }

    struct Never;

    impl RequestThrottler for Never {
        fn should_throttle(&mut self, _: Instant) -> bool {
            false
        }

        fn register_backend_response(&mut self, _: Instant, _: bool) {}
    }

    struct NoWork;

    impl WorkScheduler for NoWork {
        fn schedule_work(&self) {}
    }

    #[test]
    fn borrowed_keys_hash_and_find_as_the_owned_key_map() {
        use crate::keys::{GrpcKeyBuilder, KeyBuilderMap};
        use lb_core::Metadata;
        use serde_json::json;

        let shared = PickerShared::new(
            Arc::new(lb_core::channel::SystemClock),
            "h.example.com".into(),
            Arc::new(NoWork),
            Box::new(Never),
            "target",
        );
        let builders: Vec<GrpcKeyBuilder> = [
            // Every kind of key, on a wildcard.
            json!({
                "names": [{"service": "all.Svc"}],
                "headers": [
                    {"key": "user", "names": ["x-user", "x-user-fallback"]},
                    {"key": "a-tenant", "names": ["x-tenant"]},
                ],
                "extraKeys": {"host": "host", "service": "svc", "method": "m"},
                "constantKeys": {"tier": "gold", "0-first": "c"},
            }),
            // Nothing but the name: the empty key map.
            json!({"names": [{"service": "empty.Svc"}]}),
            // More keys than a `BorrowedKeys` holds.
            json!({
                "names": [{"service": "many.Svc"}],
                "constantKeys": {
                    "c0": "0", "c1": "1", "c2": "2", "c3": "3", "c4": "4",
                    "c5": "5", "c6": "6", "c7": "7", "c8": "8",
                },
            }),
        ]
        .iter()
        .map(|j| GrpcKeyBuilder::from_json(j).unwrap())
        .collect();
        let map = KeyBuilderMap::new(&builders).unwrap();
        let md = |pairs: &[(&str, &str)]| {
            let mut md = Metadata::new();
            for (k, v) in pairs {
                md.insert(k, v).unwrap();
            }
            md
        };
        let cases = [
            (
                "/all.Svc/Get",
                md(&[("x-user", "alice"), ("x-tenant", "t1")]),
            ),
            // A multi-valued header, and the fallback name.
            (
                "/all.Svc/Get",
                md(&[("x-user", "a"), ("x-user", "b"), ("x-user", "c")]),
            ),
            ("/all.Svc/Put", md(&[("x-user-fallback", "bob")])),
            // Two multi-valued headers, joined one after the other.
            (
                "/all.Svc/Put",
                md(&[
                    ("x-tenant", "t1"),
                    ("x-user", "a"),
                    ("x-tenant", "t2"),
                    ("x-user", "b"),
                ]),
            ),
            // Missing headers.
            ("/all.Svc/Get", md(&[("other", "x")])),
            ("/all.Svc/List", md(&[])),
            ("/empty.Svc/Get", md(&[("x-user", "alice")])),
            // No builder for the service.
            ("/none.Svc/Get", md(&[("x-user", "alice")])),
        ];
        let t = Instant::now();
        let mut cache = DataCache::new(1 << 20, CacheOptions::default(), SplitMix64::seeded(1));
        let ages = (Duration::from_secs(10), Duration::from_secs(5));
        let mut index = Index::new();
        let mut owned_keys = Vec::new();
        for (i, (method, metadata)) in cases.iter().enumerate() {
            let path = MethodPath::parse(method).unwrap();
            let owned = map.build_keys_for(path, &shared.authority, metadata);
            let mut borrowed = BorrowedKeys::new();
            assert!(map.build_borrowed_keys(path, &shared.authority, metadata, &mut borrowed));
            assert!(borrowed.matches(&owned), "{method} {owned:?} {borrowed:?}");
            let pairs: Vec<(&str, &str)> = borrowed.iter().collect();
            assert_eq!(pairs, owned.iter().collect::<Vec<_>>());
            let hash = shared.hash(method, &owned);
            assert_eq!(shared.hash(method, &borrowed), hash, "{method} {owned:?}");
            // Not yet in the index: neither finds it.
            assert!(index.find(hash, method, &owned).is_none());
            assert!(index.find(hash, method, &borrowed).is_none());
            let k = CacheKey::new(*method, owned.clone());
            let _ = cache.on_success(k.clone(), t, vec![format!("t{i}")], String::new(), ages);
            let view = EntryView::new(&k, hash, cache.peek(k.path(), k.keys()).unwrap());
            index.upsert(Arc::new(view));
            owned_keys.push(owned);
        }
        // Both find the same view for every call; a borrowed map of another call does
        // not match it, even filed under the same hash.
        for (i, (method, metadata)) in cases.iter().enumerate() {
            let path = MethodPath::parse(method).unwrap();
            let mut borrowed = BorrowedKeys::new();
            assert!(map.build_borrowed_keys(path, &shared.authority, metadata, &mut borrowed));
            let hash = shared.hash(method, &borrowed);
            let by_owned = index.find(hash, method, &owned_keys[i]).unwrap();
            let by_borrowed = index.find(hash, method, &borrowed).unwrap();
            assert!(Arc::ptr_eq(by_owned, by_borrowed));
            for (j, other) in owned_keys.iter().enumerate() {
                assert_eq!(borrowed.matches(other), owned_keys[i] == *other, "{i} {j}");
            }
        }
        // Too many keys: the caller builds the owned map instead.
        let path = MethodPath::parse("/many.Svc/Get").unwrap();
        let mut borrowed = BorrowedKeys::new();
        assert!(!map.build_borrowed_keys(path, "h", &md(&[]), &mut borrowed));
        assert_eq!(map.build_keys_for(path, "h", &md(&[])).len(), 9);
    }

    #[test]
    fn backoff_status_is_unavailable_whatever_the_server_said() {
        let t = Instant::now();
        let mut cache = DataCache::new(1000, CacheOptions::default(), SplitMix64::seeded(1));
        let k = key("/s/m", "a");
        let _ = cache.on_failure(
            k.clone(),
            t,
            Status::new(lb_core::Code::PermissionDenied, "go away"),
        );
        let view = EntryView::new(&k, 1, cache.peek(k.path(), k.keys()).unwrap());
        let status = view.backoff_status();
        assert_eq!(status.code(), lb_core::Code::Unavailable);
        assert_eq!(
            status.message(),
            "most recent error from RLS server: PERMISSION_DENIED: go away"
        );
    }
}
