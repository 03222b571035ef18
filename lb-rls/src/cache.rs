//! The data cache: RLS responses by key, least recently used first out, bounded by
//! bytes.
//!
//! ```text
//!   LRU end                                                   MRU end
//!   ┌────────┐   ┌────────┐   ┌────────┐          get() moves an entry here
//!   │ entry  │ → │ entry  │ → │ entry  │ →  …     a success or failure too
//!   └────────┘   └────────┘   └────────┘
//!   evicted first while the cache is over its byte budget
//! ```
//!
//! An entry's life, with the times it carries:
//!
//! ```text
//!  success at t:  targets, header data; expiry = t + maxAge; stale = t + staleAge;
//!                 earliest evict = t + 5 s; backoff cleared; size = path + keys + header
//!  failure at t:  last error; retries + 1; delay = backoff(retries) (1.6 s ± 20 %
//!                 first, ×1.6 each time, 120 s cap); next attempt = t + delay;
//!                 backoff expiry = t + 2 × delay. Data from an earlier success is
//!                 kept until it expires; an entry that never succeeded has size 0.
//! ```
//!
//! The cache is a plain value driven by its owner with `now`: it reads no clock and
//! starts no timer. Every operation that removes entries returns them
//! ([`Evicted`]), so the owner releases the child policies their targets held and
//! knows whether a running backoff was cancelled (queued picks then need a new
//! picker).
//!
//! # Eviction rules
//!
//! - [`DataCache::resize`] (a config change) works as grpc-go's: evict from the LRU
//!   end while over budget, and stop at the first entry younger than its earliest
//!   evict time, even if that leaves the cache over budget.
//! - After a successful response ([`DataCache::on_success`]) the cache evicts, LRU
//!   first, every entry it needs to get within budget, skipping (not stopping at)
//!   entries younger than the minimum eviction age. So the cache is never above its
//!   budget after a success, except by entries younger than 5 s. grpc-go does not
//!   evict here at all and can stay over budget until the next insert.
//! - [`DataCache::evict_expired`] (the periodic purge) removes entries whose data and
//!   backoff have both expired, whatever their age.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_core::{BackoffConfig, RandomSource, Status};

use crate::keys::KeyMap;

/// How long a successful entry is protected from size-based eviction.
pub const MIN_EVICT_AGE: Duration = Duration::from_secs(5);

/// A cache key: the call's method path and its key map (grpc-go's `cacheKey`).
///
/// Keyed on the map itself rather than on its string form, so two different maps
/// whose `k=v,…` strings happen to coincide (a value holding `,` or `=`) never share
/// an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheKey {
    path: String,
    keys: KeyMap,
}

impl CacheKey {
    /// The key for calls to `path` that produced `keys`.
    pub fn new(path: impl Into<String>, keys: KeyMap) -> Self {
        Self {
            path: path.into(),
            keys,
        }
    }

    /// The method path, `/service/method`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The key map.
    pub fn keys(&self) -> &KeyMap {
        &self.keys
    }

    /// The bytes this key counts for in an entry's size: the path plus the key
    /// map's string form.
    pub fn size_bytes(&self) -> usize {
        self.path.len() + self.keys.string_len()
    }
}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_key(&self.path, &self.keys, state);
    }
}

fn hash_key<H: Hasher>(path: &str, keys: &KeyMap, state: &mut H) {
    path.hash(state);
    keys.hash(state);
}

/// A borrowed view of a key, so lookups need no owned [`CacheKey`].
trait KeyView {
    fn path(&self) -> &str;
    fn keys(&self) -> &KeyMap;
}

impl KeyView for CacheKey {
    fn path(&self) -> &str {
        &self.path
    }
    fn keys(&self) -> &KeyMap {
        &self.keys
    }
}

impl KeyView for (&str, &KeyMap) {
    fn path(&self) -> &str {
        self.0
    }
    fn keys(&self) -> &KeyMap {
        self.1
    }
}

impl Hash for dyn KeyView + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_key(self.path(), self.keys(), state);
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.path() == other.path() && self.keys() == other.keys()
    }
}

impl Eq for dyn KeyView + '_ {}

impl<'a> Borrow<dyn KeyView + 'a> for Arc<CacheKey> {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        &**self
    }
}

/// The backoff of an entry whose last RLS request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffState {
    /// Failures since the last success (or the last backoff reset).
    pub retries: u32,
    /// No new RLS request for this key before this time.
    pub next_attempt: Instant,
    /// The entry is kept at least until this time (now + 2 × the delay), so the
    /// backoff is remembered after its data expires.
    pub expiry: Instant,
}

/// One cached RLS result (grpc-go's `cacheEntry`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheEntry {
    targets: Vec<String>,
    header_data: String,
    expiry_time: Option<Instant>,
    stale_time: Option<Instant>,
    earliest_evict_time: Option<Instant>,
    last_error: Option<Status>,
    backoff: Option<BackoffState>,
    size: usize,
}

impl CacheEntry {
    fn empty() -> Self {
        Self {
            targets: Vec::new(),
            header_data: String::new(),
            expiry_time: None,
            stale_time: None,
            earliest_evict_time: None,
            last_error: None,
            backoff: None,
            size: 0,
        }
    }

    /// The targets of the last successful response, best first (empty if none).
    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    /// The header data of the last successful response.
    pub fn header_data(&self) -> &str {
        &self.header_data
    }

    /// When the data expires (`None`: no successful response yet).
    pub fn expiry_time(&self) -> Option<Instant> {
        self.expiry_time
    }

    /// When the data becomes stale.
    pub fn stale_time(&self) -> Option<Instant> {
        self.stale_time
    }

    /// Size-based eviction leaves the entry alone until this time.
    pub fn earliest_evict_time(&self) -> Option<Instant> {
        self.earliest_evict_time
    }

    /// The error of the last failed RLS request, cleared by a success.
    pub fn last_error(&self) -> Option<&Status> {
        self.last_error.as_ref()
    }

    /// The backoff after failures (`None` after a success or a reset).
    pub fn backoff(&self) -> Option<&BackoffState> {
        self.backoff.as_ref()
    }

    /// The bytes the entry counts for: path + keys string + header data after a
    /// success, 0 before.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether the data may be used at `now` (its expiry is after `now`).
    pub fn has_valid_data(&self, now: Instant) -> bool {
        self.expiry_time.is_some_and(|t| t > now)
    }

    /// Whether the data is stale at `now` (its stale time is before `now`).
    pub fn is_stale(&self, now: Instant) -> bool {
        self.stale_time.is_some_and(|t| t < now)
    }

    /// Whether the key is in backoff at `now` (its next attempt is after `now`).
    pub fn is_in_backoff(&self, now: Instant) -> bool {
        self.backoff.is_some_and(|b| b.next_attempt > now)
    }

    /// Whether size-based eviction may remove the entry at `now`.
    pub fn is_evictable(&self, now: Instant) -> bool {
        self.earliest_evict_time.is_none_or(|t| t <= now)
    }
}

/// An entry the cache removed: the owner releases what its targets held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvictedEntry {
    /// Its key.
    pub key: CacheKey,
    /// The entry as it was.
    pub entry: CacheEntry,
    /// Whether it was in backoff: picks waiting for that backoff to end need a new
    /// picker.
    pub backoff_cancelled: bool,
}

/// Entries an operation removed, least recently used first. Never drop this
/// unread: the targets it holds are references the owner must release.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "evicted entries hold child-policy references the caller must release"]
pub struct Evicted {
    /// The removed entries.
    pub entries: Vec<EvictedEntry>,
}

impl Evicted {
    /// Whether nothing was removed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many entries were removed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether a removed entry was in backoff (grpc-go's `backoffCancelled`).
    pub fn backoff_cancelled(&self) -> bool {
        self.entries.iter().any(|e| e.backoff_cancelled)
    }

    /// Every target the removed entries held, entry by entry, in order.
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .flat_map(|e| e.entry.targets.iter().map(String::as_str))
    }
}

/// What [`DataCache::on_success`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "the previous targets and evicted entries hold references the caller must release"]
pub struct SuccessUpdate {
    /// The targets the entry held before (empty for a new entry). The entry now holds
    /// the new ones: acquire those first, then release these.
    pub previous_targets: Vec<String>,
    /// Entries evicted to get within budget.
    pub evicted: Evicted,
}

/// What [`DataCache::on_failure`] changed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "evicted entries hold references the caller must release"]
pub struct FailureUpdate {
    /// The entry's new backoff: ask for a wake-up at `next_attempt` to push a new
    /// picker.
    pub backoff: BackoffState,
    /// Entries evicted because the cache was over budget.
    pub evicted: Evicted,
}

/// What [`DataCache::reset_backoff_all`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackoffReset {
    /// Entries whose backoff state was cleared.
    pub reset: usize,
    /// How many of them were still in backoff.
    pub cancelled_running: usize,
}

impl BackoffReset {
    /// Whether any entry changed (grpc-go's return value).
    pub fn changed(&self) -> bool {
        self.reset > 0
    }
}

/// Parameters of a [`DataCache`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CacheOptions {
    /// Size-based eviction leaves a successful entry alone for this long
    /// ([`MIN_EVICT_AGE`], 5 s).
    pub min_evict_age: Duration,
    /// The per-key backoff after failed RLS requests: gRPC's connection backoff
    /// (1 s, ×1.6, ±20 %, 120 s cap). The first failure counts as retry 1, so it
    /// waits 1.6 s ± 20 %.
    pub backoff: BackoffConfig,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            min_evict_age: MIN_EVICT_AGE,
            backoff: BackoffConfig::default(),
        }
    }
}

const NIL: usize = usize::MAX;

struct Node {
    key: Arc<CacheKey>,
    entry: CacheEntry,
    /// Towards the LRU end.
    prev: usize,
    /// Towards the MRU end.
    next: usize,
}

/// The RLS data cache: an LRU map from [`CacheKey`] to [`CacheEntry`], bounded by
/// bytes.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use lb_core::{SplitMix64, Status};
/// use lb_rls::cache::{CacheKey, CacheOptions, DataCache};
/// use lb_rls::keys::KeyMap;
///
/// let t0 = Instant::now();
/// let mut cache = DataCache::new(1000, CacheOptions::default(), SplitMix64::seeded(1));
/// let keys: KeyMap = [("user", "alice")].into_iter().collect();
/// let key = CacheKey::new("/pkg.Svc/Get", keys.clone());
///
/// // A success stores the targets; its size is path + keys string + header data.
/// let ages = (Duration::from_secs(300), Duration::from_secs(240));
/// let update = cache.on_success(key.clone(), t0, vec!["backend-a".into()], "hd".into(), ages);
/// assert!(update.previous_targets.is_empty() && update.evicted.is_empty());
/// let entry = cache.get("/pkg.Svc/Get", &keys).unwrap();
/// assert_eq!(entry.targets(), ["backend-a"]);
/// assert_eq!(entry.size(), 12 + 10 + 2);
///
/// // A failed refresh keeps the data and starts a backoff.
/// let failed = cache.on_failure(key, t0, Status::unavailable("rls down"));
/// assert!(failed.evicted.is_empty());
/// let entry = cache.get("/pkg.Svc/Get", &keys).unwrap();
/// assert!(entry.has_valid_data(t0) && entry.is_in_backoff(t0));
///
/// // The purge removes entries whose data and backoff have both expired.
/// let purged = cache.evict_expired(t0 + Duration::from_secs(301));
/// assert_eq!(purged.targets().collect::<Vec<_>>(), ["backend-a"]);
/// assert!(cache.is_empty());
/// ```
pub struct DataCache {
    map: HashMap<Arc<CacheKey>, usize>,
    nodes: Vec<Option<Node>>,
    free: Vec<usize>,
    /// The least recently used entry.
    head: usize,
    /// The most recently used entry.
    tail: usize,
    size: usize,
    max_size: usize,
    options: CacheOptions,
    rng: Box<dyn RandomSource>,
}

impl DataCache {
    /// An empty cache with a budget of `max_size_bytes`; `rng` draws backoff jitter.
    pub fn new(
        max_size_bytes: usize,
        options: CacheOptions,
        rng: impl RandomSource + 'static,
    ) -> Self {
        Self {
            map: HashMap::new(),
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            size: 0,
            max_size: max_size_bytes,
            options,
            rng: Box::new(rng),
        }
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The bytes the entries count for (see [`CacheEntry::size`]).
    pub fn size_bytes(&self) -> usize {
        self.size
    }

    /// The byte budget.
    pub fn max_size_bytes(&self) -> usize {
        self.max_size
    }

    /// The parameters.
    pub fn options(&self) -> &CacheOptions {
        &self.options
    }

    /// An estimate of the memory the cache holds, in bytes: every allocation it can
    /// account for, by capacity.
    ///
    /// - the slot vector: `capacity × size_of::<Option<Node>>()` (a node holds the
    ///   entry inline: its times, backoff, error, size, links);
    /// - the hash index: `buckets × (size_of::<(Arc<CacheKey>, usize)>() + 1)` plus 16
    ///   control bytes, with `buckets` the power of two at or above capacity × 8/7
    ///   (std's SwissTable layout);
    /// - per entry: the shared key (`Arc` header + `CacheKey`), the path, the key
    ///   map's vector and strings, the target vector and strings, the header data and
    ///   the last error's message;
    /// - the free list.
    ///
    /// Allocator overhead (size classes, headers) is not counted.
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        let slots = self.nodes.capacity() * size_of::<Option<Node>>();
        let buckets = if self.map.capacity() == 0 {
            0
        } else {
            (self.map.capacity() * 8 / 7).next_power_of_two()
        };
        let index = buckets * (size_of::<(Arc<CacheKey>, usize)>() + 1) + 16;
        let free = self.free.capacity() * size_of::<usize>();
        let per_entry: usize = self
            .nodes
            .iter()
            .flatten()
            .map(|n| {
                let key = 2 * size_of::<usize>()
                    + size_of::<CacheKey>()
                    + n.key.path.capacity()
                    + n.key.keys.heap_bytes();
                let e = &n.entry;
                let targets = e.targets.capacity() * size_of::<String>()
                    + e.targets.iter().map(String::capacity).sum::<usize>();
                let error = e.last_error.as_ref().map_or(0, |s| s.message().len());
                key + targets + e.header_data.capacity() + error
            })
            .sum();
        slots + index + free + per_entry
    }

    /// The entry for `(path, keys)`, made the most recently used.
    pub fn get(&mut self, path: &str, keys: &KeyMap) -> Option<&CacheEntry> {
        let idx = self.find(path, keys)?;
        self.move_to_mru(idx);
        Some(&self.node(idx).entry)
    }

    /// The entry for `(path, keys)`, leaving the LRU order alone.
    pub fn peek(&self, path: &str, keys: &KeyMap) -> Option<&CacheEntry> {
        self.find(path, keys).map(|idx| &self.node(idx).entry)
    }

    /// Every entry, least recently used first.
    pub fn iter(&self) -> impl Iterator<Item = (&CacheKey, &CacheEntry)> {
        let mut idx = self.head;
        std::iter::from_fn(move || {
            if idx == NIL {
                return None;
            }
            let node = self.node(idx);
            idx = node.next;
            Some((&*node.key, &node.entry))
        })
    }

    /// Records a successful RLS response for `key` at `now`: `targets` (best first,
    /// non-empty: an empty list is a failure), `header_data`, and the config's
    /// `(max_age, stale_age)`. The entry becomes the most recently used; its size is
    /// recomputed; then least recently used entries at least
    /// [`CacheOptions::min_evict_age`] old are evicted until the cache is within
    /// budget (see the module docs).
    pub fn on_success(
        &mut self,
        key: CacheKey,
        now: Instant,
        targets: Vec<String>,
        header_data: String,
        (max_age, stale_age): (Duration, Duration),
    ) -> SuccessUpdate {
        let new_size = key.size_bytes() + header_data.len();
        let idx = self.find_or_insert(key);
        self.move_to_mru(idx);
        let min_evict_age = self.options.min_evict_age;
        let entry = &mut self.node_mut(idx).entry;
        let previous_targets = std::mem::replace(&mut entry.targets, targets);
        let old_size = entry.size;
        entry.header_data = header_data;
        entry.expiry_time = Some(now + max_age);
        entry.stale_time = Some(now + stale_age);
        entry.earliest_evict_time = Some(now + min_evict_age);
        entry.last_error = None;
        entry.backoff = None;
        entry.size = new_size;
        self.size = self.size - old_size + new_size;
        let evicted = self.make_room(now);
        SuccessUpdate {
            previous_targets,
            evicted,
        }
    }

    /// Records a failed RLS request for `key` at `now` (an error, or a response with
    /// no targets). The entry (created with size 0 if there was none) becomes the
    /// most recently used, keeps any data from an earlier success, stores `error`
    /// and backs off: retries + 1, next attempt at `now + delay`, backoff expiry at
    /// `now + 2 × delay`. If the cache is over budget, it is resized as by
    /// [`Self::resize`].
    pub fn on_failure(&mut self, key: CacheKey, now: Instant, error: Status) -> FailureUpdate {
        let idx = self.find_or_insert(key);
        self.move_to_mru(idx);
        let retries = self.node(idx).entry.backoff.map_or(0, |b| b.retries) + 1;
        let delay = self.options.backoff.delay_for(retries, &mut *self.rng);
        let backoff = BackoffState {
            retries,
            next_attempt: now + delay,
            expiry: now + delay * 2,
        };
        let entry = &mut self.node_mut(idx).entry;
        entry.last_error = Some(error);
        entry.backoff = Some(backoff);
        let evicted = if self.size > self.max_size {
            self.resize(self.max_size, now)
        } else {
            Evicted::default()
        };
        FailureUpdate { backoff, evicted }
    }

    /// Sets the budget to `max_size_bytes` and evicts from the LRU end while over it,
    /// stopping at the first entry younger than its earliest evict time (so the cache
    /// may stay over budget for a few seconds). As grpc-go's `resize`.
    pub fn resize(&mut self, max_size_bytes: usize, now: Instant) -> Evicted {
        self.max_size = max_size_bytes;
        let mut evicted = Evicted::default();
        while self.size > self.max_size && self.head != NIL {
            let idx = self.head;
            if !self.node(idx).entry.is_evictable(now) {
                log::debug!(
                    "rls cache: {} bytes over a budget of {}, but the least recently used entry is younger than the minimum eviction age",
                    self.size,
                    self.max_size
                );
                break;
            }
            evicted.entries.push(self.remove_at(idx, now));
        }
        evicted
    }

    /// Removes every entry whose data and backoff have both expired at `now` (the
    /// 60 s purge), whatever its age.
    pub fn evict_expired(&mut self, now: Instant) -> Evicted {
        let mut evicted = Evicted::default();
        let mut idx = self.head;
        while idx != NIL {
            let node = self.node(idx);
            let next = node.next;
            let data_expired = node.entry.expiry_time.is_none_or(|t| t <= now);
            let backoff_expired = node.entry.backoff.is_none_or(|b| b.expiry <= now);
            if data_expired && backoff_expired {
                evicted.entries.push(self.remove_at(idx, now));
            }
            idx = next;
        }
        evicted
    }

    /// Clears the backoff of every entry (the control channel went from
    /// TRANSIENT_FAILURE back to READY: failures while it was down should not count).
    /// The next pick of such a key sends a new request at once.
    pub fn reset_backoff_all(&mut self, now: Instant) -> BackoffReset {
        let mut result = BackoffReset::default();
        for node in self.nodes.iter_mut().flatten() {
            if let Some(b) = node.entry.backoff.take() {
                result.reset += 1;
                if b.next_attempt > now {
                    result.cancelled_running += 1;
                }
            }
        }
        result
    }

    /// Removes the entry for `(path, keys)`.
    pub fn remove(&mut self, path: &str, keys: &KeyMap, now: Instant) -> Option<EvictedEntry> {
        let idx = self.find(path, keys)?;
        Some(self.remove_at(idx, now))
    }

    /// Removes every entry (the policy is shutting down).
    pub fn clear(&mut self, now: Instant) -> Evicted {
        let mut evicted = Evicted::default();
        while self.head != NIL {
            evicted.entries.push(self.remove_at(self.head, now));
        }
        evicted
    }

    /// Evicts after a success: LRU first, skipping entries that are too young or
    /// count for no bytes, until within budget.
    fn make_room(&mut self, now: Instant) -> Evicted {
        let mut evicted = Evicted::default();
        let mut idx = self.head;
        while self.size > self.max_size && idx != NIL {
            let node = self.node(idx);
            let next = node.next;
            if node.entry.size > 0 && node.entry.is_evictable(now) {
                evicted.entries.push(self.remove_at(idx, now));
            }
            idx = next;
        }
        evicted
    }

    fn find(&self, path: &str, keys: &KeyMap) -> Option<usize> {
        self.map.get(&(path, keys) as &dyn KeyView).copied()
    }

    fn find_or_insert(&mut self, mut key: CacheKey) -> usize {
        if let Some(idx) = self.find(&key.path, &key.keys) {
            return idx;
        }
        // The key lives as long as the entry: keep no spare capacity.
        key.path.shrink_to_fit();
        key.keys.shrink_to_fit();
        let key = Arc::new(key);
        let node = Node {
            key: key.clone(),
            entry: CacheEntry::empty(),
            prev: NIL,
            next: NIL,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.nodes[i] = Some(node);
                i
            }
            None => {
                self.nodes.push(Some(node));
                self.nodes.len() - 1
            }
        };
        self.map.insert(key, idx);
        self.link_at_mru(idx);
        idx
    }

    fn remove_at(&mut self, idx: usize, now: Instant) -> EvictedEntry {
        self.unlink(idx);
        let node = self.nodes[idx].take().expect("linked node is present");
        self.free.push(idx);
        self.map.remove(&*node.key as &dyn KeyView);
        self.size -= node.entry.size;
        let backoff_cancelled = node.entry.is_in_backoff(now);
        let key = Arc::try_unwrap(node.key).unwrap_or_else(|shared| (*shared).clone());
        EvictedEntry {
            key,
            entry: node.entry,
            backoff_cancelled,
        }
    }

    fn node(&self, idx: usize) -> &Node {
        self.nodes[idx].as_ref().expect("linked node is present")
    }

    fn node_mut(&mut self, idx: usize) -> &mut Node {
        self.nodes[idx].as_mut().expect("linked node is present")
    }

    fn unlink(&mut self, idx: usize) {
        let (prev, next) = {
            let n = self.node(idx);
            (n.prev, n.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.node_mut(prev).next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.node_mut(next).prev = prev;
        }
        let n = self.node_mut(idx);
        n.prev = NIL;
        n.next = NIL;
    }

    fn link_at_mru(&mut self, idx: usize) {
        let tail = self.tail;
        {
            let n = self.node_mut(idx);
            n.prev = tail;
            n.next = NIL;
        }
        if tail == NIL {
            self.head = idx;
        } else {
            self.node_mut(tail).next = idx;
        }
        self.tail = idx;
    }

    fn move_to_mru(&mut self, idx: usize) {
        if self.tail != idx {
            self.unlink(idx);
            self.link_at_mru(idx);
        }
    }
}

impl fmt::Debug for DataCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataCache")
            .field("len", &self.len())
            .field("size", &self.size)
            .field("max_size", &self.max_size)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(path: &str) -> CacheKey {
        CacheKey::new(path, KeyMap::new())
    }

    fn order(cache: &DataCache) -> Vec<String> {
        cache.iter().map(|(k, _)| k.path().to_owned()).collect()
    }

    struct Half;
    impl RandomSource for Half {
        fn next_u64(&mut self) -> u64 {
            1 << 63
        }
    }

    const AGES: (Duration, Duration) = (Duration::from_secs(300), Duration::from_secs(300));

    #[test]
    fn lru_order_follows_use_and_removal() {
        let t = Instant::now();
        let mut c = DataCache::new(1000, CacheOptions::default(), Half);
        for p in ["a", "b", "c", "d", "e"] {
            let _ = c.on_success(key(p), t, vec![p.into()], String::new(), AGES);
        }
        assert_eq!(order(&c), ["a", "b", "c", "d", "e"]);
        // Using each key in turn makes the next one the least recently used.
        for (i, p) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            assert!(c.get(p, &KeyMap::new()).is_some());
            let lru = ["b", "c", "d", "e", "a"][i];
            assert_eq!(order(&c)[0], lru);
        }
        // Peeking does not promote.
        assert!(c.peek("a", &KeyMap::new()).is_some());
        assert_eq!(order(&c)[0], "a");
        for (p, next_lru) in [
            ("a", Some("b")),
            ("b", Some("c")),
            ("c", Some("d")),
            ("d", Some("e")),
            ("e", None),
        ] {
            let removed = c.remove(p, &KeyMap::new(), t).unwrap();
            assert_eq!(removed.entry.targets(), [p]);
            assert_eq!(order(&c).first().map(String::as_str), next_lru);
        }
        assert!(c.is_empty());
        assert_eq!(c.size_bytes(), 0);
        assert!(c.remove("a", &KeyMap::new(), t).is_none());
    }

    #[test]
    fn slots_are_reused_after_removal() {
        let t = Instant::now();
        let mut c = DataCache::new(1000, CacheOptions::default(), Half);
        for round in 0..3 {
            for i in 0..10 {
                let _ = c.on_success(key(&format!("/s/{i}")), t, vec![], String::new(), AGES);
            }
            assert_eq!(c.len(), 10, "round {round}");
            let _ = c.clear(t);
        }
        assert_eq!(c.nodes.len(), 10);
    }

    #[test]
    fn memory_accounting_grows_with_entries() {
        let t = Instant::now();
        let mut c = DataCache::new(1 << 20, CacheOptions::default(), Half);
        assert!(c.memory_bytes() <= 16);
        let _ = c.on_success(key("/s/m"), t, vec!["target".into()], "hd".into(), AGES);
        let one = c.memory_bytes();
        // At least the node, the key, the target and the strings.
        assert!(
            one > std::mem::size_of::<Option<Node>>() + 3 + 6 + 2,
            "{one}"
        );
        for i in 0..100 {
            let _ = c.on_success(
                key(&format!("/s/{i}")),
                t,
                vec!["target".into()],
                "hd".into(),
                AGES,
            );
        }
        assert!(c.memory_bytes() > 20 * one, "{}", c.memory_bytes());
    }

    #[test]
    fn keys_with_equal_strings_but_different_maps_do_not_collide() {
        let t = Instant::now();
        let mut c = DataCache::new(1000, CacheOptions::default(), Half);
        let one: KeyMap = [("k1", "a,k2=b")].into_iter().collect();
        let two: KeyMap = [("k1", "a"), ("k2", "b")].into_iter().collect();
        assert_eq!(one.to_string(), two.to_string());
        let _ = c.on_success(
            CacheKey::new("/s/m", one.clone()),
            t,
            vec!["x".into()],
            String::new(),
            AGES,
        );
        assert!(c.peek("/s/m", &two).is_none());
        assert_eq!(c.peek("/s/m", &one).unwrap().targets(), ["x"]);
    }
}
