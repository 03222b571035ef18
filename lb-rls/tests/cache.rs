//! The data cache: grpc-go's cache_test scenarios (AddForcesResize, Resize,
//! EvictExpiredEntries, ResetBackoffState, LRU order), backoff timing on a manual
//! clock, and the byte-limit invariant as a property test.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lb_core::{RandomSource, SplitMix64, Status};
use lb_rls::cache::{CacheKey, CacheOptions, DataCache, MIN_EVICT_AGE};
use lb_rls::keys::KeyMap;
use proptest::prelude::*;

/// A random source that always yields the same fraction of `[0, 1)`.
struct Fixed(f64);

impl RandomSource for Fixed {
    fn next_u64(&mut self) -> u64 {
        ((self.0 * (1u64 << 53) as f64) as u64) << 11
    }
}

/// Time as offsets from one base instant.
struct Clock(Instant);

impl Clock {
    fn new() -> Self {
        Self(Instant::now())
    }
    fn at(&self, millis: u64) -> Instant {
        self.0 + Duration::from_millis(millis)
    }
}

const MIN: u64 = 60_000;
const AGES: (Duration, Duration) = (Duration::from_secs(300), Duration::from_secs(300));

/// A key of size 1 (a one-byte path, no keys), as grpc-go's tests force sizes to 1.
fn key(path: &str) -> CacheKey {
    CacheKey::new(path, KeyMap::new())
}

fn cache(max: usize) -> DataCache {
    DataCache::new(max, CacheOptions::default(), Fixed(0.5))
}

fn success(c: &mut DataCache, path: &str, now: Instant) -> Vec<String> {
    let update = c.on_success(
        key(path),
        now,
        vec![format!("target-{path}")],
        String::new(),
        AGES,
    );
    assert!(
        update.previous_targets.is_empty() || update.previous_targets == [format!("target-{path}")]
    );
    update
        .evicted
        .entries
        .iter()
        .map(|e| e.key.path().to_owned())
        .collect()
}

fn paths(c: &DataCache) -> Vec<String> {
    c.iter().map(|(k, _)| k.path().to_owned()).collect()
}

fn get(c: &mut DataCache, path: &str) -> bool {
    c.get(path, &KeyMap::new()).is_some()
}

/// grpc-go TestDataCache_AddForcesResize: a cache of one byte; each new entry evicts
/// the previous one, and the eviction reports whether a running backoff was cancelled.
#[test]
fn add_forces_resize() {
    let clock = Clock::new();
    let mut c = cache(1);
    // entry1: valid data and a running backoff (a failed stale refresh).
    assert!(success(&mut c, "1", clock.at(0)).is_empty());
    let failed = c.on_failure(key("1"), clock.at(6_000), Status::unavailable("down"));
    assert!(failed.evicted.is_empty());
    assert_eq!(c.size_bytes(), 1);
    // entry2 evicts entry1, whose backoff was running: (true, true).
    let update = c.on_success(
        key("2"),
        clock.at(6_500),
        vec!["t2".into()],
        String::new(),
        AGES,
    );
    assert_eq!(update.evicted.len(), 1);
    assert!(update.evicted.backoff_cancelled());
    assert_eq!(update.evicted.targets().collect::<Vec<_>>(), ["target-1"]);
    // entry3, once entry2 is old enough, evicts it; no backoff ran: (false, true).
    let update = c.on_success(
        key("3"),
        clock.at(12_000),
        vec!["t3".into()],
        String::new(),
        AGES,
    );
    assert_eq!(update.evicted.len(), 1);
    assert!(!update.evicted.backoff_cancelled());
    assert_eq!(paths(&c), ["3"]);
    assert_eq!(c.size_bytes(), 1);
}

/// Builds grpc-go's five-entry fixture at `now` = 7 s: LRU order 0..4, each of size 1;
/// entry0 younger than its earliest evict time; entry1 valid and in backoff.
fn five_entries(clock: &Clock) -> DataCache {
    let mut c = cache(5);
    for p in ["1", "2", "3", "4"] {
        success(&mut c, p, clock.at(0));
    }
    success(&mut c, "0", clock.at(6_000));
    let _ = c.on_failure(key("1"), clock.at(6_500), Status::unavailable("down"));
    for p in ["1", "2", "3", "4"] {
        assert!(get(&mut c, p));
    }
    assert_eq!(paths(&c), ["0", "1", "2", "3", "4"]);
    assert_eq!(c.size_bytes(), 5);
    c
}

/// grpc-go TestDataCache_Resize: shrinking is blocked by the young LRU entry, then
/// evicts down to the new size once it is gone.
#[test]
fn resize_stops_at_an_entry_younger_than_its_earliest_evict_time() {
    let clock = Clock::new();
    let now = clock.at(7_000);
    let mut c = five_entries(&clock);
    let evicted = c.resize(1, now);
    assert!(evicted.is_empty());
    assert!(!evicted.backoff_cancelled());
    assert_eq!(c.size_bytes(), 5, "stays over the new budget");
    assert_eq!(c.max_size_bytes(), 1, "the new budget is stored anyway");

    let removed = c.remove("0", &KeyMap::new(), now).unwrap();
    assert_eq!(removed.entry.targets(), ["target-0"]);
    let evicted = c.resize(1, now);
    assert!(evicted.backoff_cancelled(), "entry1's backoff was running");
    assert_eq!(
        evicted
            .entries
            .iter()
            .map(|e| e.key.path())
            .collect::<Vec<_>>(),
        ["1", "2", "3"]
    );
    assert_eq!(c.size_bytes(), 1);
    assert_eq!(paths(&c), ["4"]);
    // Once entry0 would have aged, the same resize goes through.
    let mut c = five_entries(&clock);
    let evicted = c.resize(1, clock.at(11_000));
    assert_eq!(evicted.len(), 4);
    assert_eq!(paths(&c), ["4"]);
}

/// grpc-go TestDataCache_EvictExpiredEntries: only entries whose data and backoff
/// have both expired go, whatever their age.
#[test]
fn evict_expired_entries() {
    let clock = Clock::new();
    let now = clock.at(10 * MIN);
    let mut c = cache(100);
    // entry0: valid, and younger than its earliest evict time.
    success(&mut c, "0", clock.at(10 * MIN - 1_000));
    // entry1: valid, in backoff.
    success(&mut c, "1", clock.at(9 * MIN));
    let _ = c.on_failure(
        key("1"),
        clock.at(10 * MIN - 1_000),
        Status::unavailable("x"),
    );
    // entry2: valid.
    success(&mut c, "2", clock.at(9 * MIN));
    // entry3: expired (maxAge 5 min, 6 min ago), no backoff.
    success(&mut c, "3", clock.at(4 * MIN));
    // entry4: expired, and its backoff expired too.
    success(&mut c, "4", clock.at(4 * MIN));
    let _ = c.on_failure(key("4"), clock.at(5 * MIN), Status::unavailable("x"));
    // entry5: expired data but a backoff that has not expired: kept.
    success(&mut c, "5", clock.at(4 * MIN));
    let _ = c.on_failure(
        key("5"),
        clock.at(10 * MIN - 2_000),
        Status::unavailable("x"),
    );
    // entry6: never succeeded; its backoff expired: removed.
    let _ = c.on_failure(key("6"), clock.at(5 * MIN), Status::unavailable("x"));

    let evicted = c.evict_expired(now);
    let mut gone: Vec<&str> = evicted.entries.iter().map(|e| e.key.path()).collect();
    gone.sort_unstable();
    assert_eq!(gone, ["3", "4", "6"]);
    assert_eq!(evicted.targets().count(), 2, "entry6 held no targets");
    assert_eq!(c.len(), 4);
    assert_eq!(c.size_bytes(), 4);
    let mut left = paths(&c);
    left.sort();
    assert_eq!(left, ["0", "1", "2", "5"]);
}

/// grpc-go TestDataCache_ResetBackoffState: every backoff is cleared, entries without
/// one are untouched, and the next failure starts over.
#[test]
fn reset_backoff_state() {
    let clock = Clock::new();
    let mut c = cache(100);
    success(&mut c, "0", clock.at(0));
    success(&mut c, "1", clock.at(0));
    for i in 0..3 {
        let _ = c.on_failure(key("1"), clock.at(1_000 * i), Status::unavailable("x"));
    }
    let _ = c.on_failure(key("2"), clock.at(0), Status::unavailable("x"));
    assert_eq!(
        c.peek("1", &KeyMap::new())
            .unwrap()
            .backoff()
            .unwrap()
            .retries,
        3
    );
    let before0 = c.peek("0", &KeyMap::new()).unwrap().clone();

    let now = clock.at(3_000);
    let reset = c.reset_backoff_all(now);
    assert!(reset.changed());
    assert_eq!(reset.reset, 2);
    // Entry1's last backoff (1.6³ ≈ 4.1 s from 2 s) was still running; entry2's
    // (1.6 s from 0) was not.
    assert_eq!(reset.cancelled_running, 1);
    assert_eq!(c.peek("0", &KeyMap::new()).unwrap(), &before0);
    for p in ["1", "2"] {
        let e = c.peek(p, &KeyMap::new()).unwrap();
        assert!(e.backoff().is_none() && !e.is_in_backoff(now), "{p}");
    }
    // Data and the last error survive; the next failure waits the first delay again.
    assert!(c.peek("1", &KeyMap::new()).unwrap().has_valid_data(now));
    let failed = c.on_failure(key("1"), now, Status::unavailable("x"));
    assert_eq!(failed.backoff.retries, 1);
    assert_eq!(
        failed.backoff.next_attempt - now,
        Duration::from_millis(1600)
    );
    // Nothing left to reset: unchanged.
    let mut c = cache(100);
    success(&mut c, "0", clock.at(0));
    assert!(!c.reset_backoff_all(clock.at(0)).changed());
}

/// grpc-go TestLRU_BasicOperations, through the cache: insertion order, promotion on
/// use in turn, and removal.
#[test]
fn lru_basic_operations() {
    let clock = Clock::new();
    let mut c = cache(100);
    let keys = ["0", "1", "2", "3", "4"];
    for k in keys {
        success(&mut c, k, clock.at(0));
        assert_eq!(paths(&c)[0], "0", "the first added stays LRU");
    }
    for (i, k) in keys.iter().enumerate() {
        assert!(get(&mut c, k));
        assert_eq!(paths(&c)[0], keys[(i + 1) % keys.len()]);
    }
    for (i, k) in keys.iter().enumerate() {
        assert!(c.remove(k, &KeyMap::new(), clock.at(0)).is_some());
        assert_eq!(
            paths(&c).first().map(String::as_str),
            keys.get(i + 1).copied()
        );
    }
    assert!(c.is_empty());
    assert!(!get(&mut c, "0"));
}

/// Both success and failure make the entry the most recently used.
#[test]
fn responses_promote_their_entry() {
    let clock = Clock::new();
    let mut c = cache(100);
    for k in ["a", "b", "c"] {
        success(&mut c, k, clock.at(0));
    }
    let _ = c.on_failure(key("a"), clock.at(1), Status::unavailable("x"));
    assert_eq!(paths(&c), ["b", "c", "a"]);
    success(&mut c, "b", clock.at(2));
    assert_eq!(paths(&c), ["c", "a", "b"]);
}

#[test]
fn backoff_grows_exponentially_with_jitter_and_caps() {
    let clock = Clock::new();
    let mut c = cache(100);
    let mut t = clock.at(0);
    let mut want = 1.6_f64;
    for retries in 1..=15u32 {
        let failed = c.on_failure(key("k"), t, Status::unavailable("x"));
        let delay = failed.backoff.next_attempt - t;
        assert_eq!(failed.backoff.retries, retries);
        assert!(
            (delay.as_secs_f64() - want.min(120.0)).abs() < 1e-6,
            "{retries}: {delay:?}"
        );
        assert_eq!(failed.backoff.expiry - t, delay * 2);
        let e = c.peek("k", &KeyMap::new()).unwrap();
        assert!(e.is_in_backoff(t) && !e.is_in_backoff(failed.backoff.next_attempt));
        assert_eq!(e.last_error().unwrap().message(), "x");
        assert_eq!(
            e.size(),
            0,
            "an entry that never succeeded counts for nothing"
        );
        assert_eq!(e.earliest_evict_time(), None);
        t = failed.backoff.next_attempt;
        want *= 1.6;
    }
    // A success clears the backoff and the error; the next failure starts over.
    let update = c.on_success(key("k"), t, vec!["x".into()], "hd".into(), AGES);
    assert!(update.previous_targets.is_empty());
    let e = c.peek("k", &KeyMap::new()).unwrap();
    assert!(e.backoff().is_none() && e.last_error().is_none());
    let failed = c.on_failure(key("k"), t, Status::unavailable("y"));
    assert_eq!(failed.backoff.next_attempt - t, Duration::from_millis(1600));

    // Jitter spans ±20 % of the delay.
    for (fraction, want_ms) in [(0.0, 1280), (0.25, 1440), (0.75, 1760)] {
        let mut c = DataCache::new(100, CacheOptions::default(), Fixed(fraction));
        let failed = c.on_failure(key("k"), t, Status::unavailable("x"));
        assert_eq!(
            failed.backoff.next_attempt - t,
            Duration::from_millis(want_ms),
            "{fraction}"
        );
    }
    // A seeded source stays within the bounds.
    let mut c = DataCache::new(100, CacheOptions::default(), SplitMix64::seeded(7));
    for i in 0..50 {
        let failed = c.on_failure(key(&i.to_string()), t, Status::unavailable("x"));
        let d = failed.backoff.next_attempt - t;
        assert!(
            d >= Duration::from_millis(1280) && d < Duration::from_millis(1920),
            "{d:?}"
        );
    }
}

#[test]
fn a_failed_refresh_keeps_serving_the_old_data_until_it_expires() {
    let clock = Clock::new();
    let mut c = cache(100);
    let ages = (Duration::from_secs(60), Duration::from_secs(30));
    let _ = c.on_success(
        key("k"),
        clock.at(0),
        vec!["a".into(), "b".into()],
        "hd".into(),
        ages,
    );
    let e = c.peek("k", &KeyMap::new()).unwrap();
    assert!(!e.is_stale(clock.at(30_000)) && e.is_stale(clock.at(30_001)));
    assert!(e.has_valid_data(clock.at(59_999)) && !e.has_valid_data(clock.at(60_000)));
    assert_eq!(e.size(), 3, "path + keys string + header data");

    let _ = c.on_failure(
        key("k"),
        clock.at(31_000),
        Status::unavailable("refresh failed"),
    );
    let e = c.peek("k", &KeyMap::new()).unwrap();
    assert_eq!(e.targets(), ["a", "b"]);
    assert_eq!(e.header_data(), "hd");
    assert!(e.has_valid_data(clock.at(31_000)) && e.is_in_backoff(clock.at(31_000)));
    assert_eq!(e.size(), 3);

    // A success with other targets hands back the old ones.
    let update = c.on_success(
        key("k"),
        clock.at(40_000),
        vec!["c".into()],
        String::new(),
        ages,
    );
    assert_eq!(update.previous_targets, ["a", "b"]);
    assert_eq!(c.size_bytes(), 1, "the header data went away");
}

#[test]
fn entry_size_counts_path_keys_and_header_data() {
    let clock = Clock::new();
    let mut c = cache(1000);
    // grpc-go's metrics test: path only.
    let path = "/grpc.testing.TestService/EmptyCall";
    let _ = c.on_success(
        CacheKey::new(path, KeyMap::new()),
        clock.at(0),
        vec!["t".into()],
        String::new(),
        AGES,
    );
    assert_eq!(c.size_bytes(), 35);
    let keys: KeyMap = [("k1", "v1"), ("k2", "v2")].into_iter().collect();
    let _ = c.on_success(
        CacheKey::new("/s/m", keys.clone()),
        clock.at(0),
        vec!["t".into()],
        "header".into(),
        AGES,
    );
    assert_eq!(
        c.peek("/s/m", &keys).unwrap().size(),
        4 + "k1=v1,k2=v2".len() + 6
    );
    assert_eq!(c.size_bytes(), 35 + 21);
}

#[test]
fn a_success_evicts_old_entries_behind_a_young_one() {
    // grpc-go's resize would stop at the young LRU entry and leave the cache over its
    // budget; after a success, old entries behind it are evicted instead.
    let clock = Clock::new();
    let mut c = cache(3);
    success(&mut c, "a", clock.at(0));
    success(&mut c, "b", clock.at(10_000));
    assert!(get(&mut c, "a"), "a is now more recently used than b");
    success(&mut c, "c", clock.at(11_000));
    assert_eq!(paths(&c), ["b", "a", "c"]);
    // d needs one byte: b (LRU) is young, so a goes.
    let evicted = success(&mut c, "d", clock.at(12_000));
    assert_eq!(evicted, ["a"]);
    assert_eq!(c.size_bytes(), 3);
    // Nothing is old enough: the cache stays over budget, by young entries only.
    let evicted = success(&mut c, "e", clock.at(13_000));
    assert!(evicted.is_empty());
    assert_eq!(c.size_bytes(), 4);
    // An entry bigger than the whole budget stays for its first 5 s only.
    let mut c = cache(3);
    let _ = c.on_success(key("big"), clock.at(0), vec![], "0123456789".into(), AGES);
    assert_eq!(c.len(), 1);
    let evicted = success(&mut c, "x", clock.at(MIN_EVICT_AGE.as_millis() as u64));
    assert_eq!(evicted, ["big"]);
}

#[test]
fn zero_sized_entries_are_left_by_a_success_but_not_by_a_resize() {
    let clock = Clock::new();
    let mut c = cache(2);
    let _ = c.on_failure(key("f"), clock.at(0), Status::unavailable("x"));
    success(&mut c, "a", clock.at(0));
    success(&mut c, "b", clock.at(0));
    let evicted = success(&mut c, "c", clock.at(6_000));
    assert_eq!(evicted, ["a"], "the failed entry costs no bytes and stays");
    // A resize evicts from the LRU end whatever the size (grpc-go).
    let evicted = c.resize(1, clock.at(20_000));
    let gone: Vec<&str> = evicted.entries.iter().map(|e| e.key.path()).collect();
    assert_eq!(gone, ["f", "b"]);
    let all = c.clear(clock.at(20_000));
    assert_eq!(all.len(), 1);
    assert!(c.is_empty() && c.size_bytes() == 0);
}

#[derive(Clone, Debug)]
enum Op {
    Success { key: u8, header: u8, targets: u8 },
    Failure { key: u8 },
    Get { key: u8 },
    Resize { max: u16 },
    Purge,
    Reset,
    Advance { millis: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..24, 0u8..40, 0u8..3).prop_map(|(key, header, targets)| Op::Success { key, header, targets }),
        2 => (0u8..24).prop_map(|key| Op::Failure { key }),
        2 => (0u8..24).prop_map(|key| Op::Get { key }),
        1 => (0u16..200).prop_map(|max| Op::Resize { max }),
        1 => Just(Op::Purge),
        1 => Just(Op::Reset),
        3 => (0u32..8_000).prop_map(|millis| Op::Advance { millis }),
    ]
}

fn k(n: u8) -> CacheKey {
    let keys: KeyMap = [("id", n.to_string())].into_iter().collect();
    CacheKey::new(format!("/svc/m{}", n % 3), keys)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// After every success the cache is within budget, unless every entry that
    /// counts bytes is younger than the minimum eviction age. Sizes always add up,
    /// and every target given to the cache comes back exactly once (as a previous
    /// target list, an eviction, or the final clear).
    #[test]
    fn byte_limit_and_target_accounting(ops in proptest::collection::vec(op(), 1..120), seed in any::<u64>()) {
        let clock = Clock::new();
        let mut now = clock.at(0);
        let mut c = DataCache::new(100, CacheOptions::default(), SplitMix64::seeded(seed));
        // Target name → references held by the cache.
        let mut held: BTreeMap<String, i64> = BTreeMap::new();
        let release = |held: &mut BTreeMap<String, i64>, t: &str| {
            let n = held.get_mut(t).expect("released a target never given");
            *n -= 1;
            assert!(*n >= 0, "released {t} twice");
        };
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Success { key, header, targets } => {
                    let targets: Vec<String> = (0..targets).map(|j| format!("t{key}-{i}-{j}")).collect();
                    for t in &targets {
                        *held.entry(t.clone()).or_default() += 1;
                    }
                    let header = "h".repeat(usize::from(header));
                    let update = c.on_success(k(key), now, targets, header, (Duration::from_secs(20), Duration::from_secs(10)));
                    for t in &update.previous_targets { release(&mut held, t); }
                    for t in update.evicted.targets() { release(&mut held, t); }
                    if c.size_bytes() > c.max_size_bytes() {
                        for (key, e) in c.iter() {
                            prop_assert!(
                                e.size() == 0 || !e.is_evictable(now),
                                "over budget ({} > {}) with evictable {:?}",
                                c.size_bytes(), c.max_size_bytes(), key
                            );
                        }
                    }
                    let e = c.peek(k(key).path(), k(key).keys()).expect("just stored");
                    prop_assert!(e.has_valid_data(now));
                }
                Op::Failure { key } => {
                    let update = c.on_failure(k(key), now, Status::unavailable("x"));
                    prop_assert!(update.backoff.next_attempt > now);
                    for t in update.evicted.targets() { release(&mut held, t); }
                }
                Op::Get { key } => { let _ = c.get(k(key).path(), k(key).keys()); }
                Op::Resize { max } => {
                    let evicted = c.resize(usize::from(max), now);
                    for t in evicted.targets() { release(&mut held, t); }
                }
                Op::Purge => {
                    let evicted = c.evict_expired(now);
                    for e in &evicted.entries {
                        prop_assert!(!e.entry.has_valid_data(now) && !e.entry.is_in_backoff(now));
                    }
                    for t in evicted.targets() { release(&mut held, t); }
                }
                Op::Reset => { let _ = c.reset_backoff_all(now); }
                Op::Advance { millis } => now += Duration::from_millis(u64::from(millis)),
            }
            let sum: usize = c.iter().map(|(_, e)| e.size()).sum();
            prop_assert_eq!(sum, c.size_bytes());
            prop_assert_eq!(c.iter().count(), c.len());
            for (key, e) in c.iter() {
                for t in e.targets() {
                    prop_assert!(held.get(t).copied().unwrap_or(0) >= 1, "{:?} holds released {}", key, t);
                }
            }
        }
        let all = c.clear(now);
        for t in all.targets() { release(&mut held, t); }
        prop_assert!(held.values().all(|&n| n == 0), "leaked: {:?}", held);
    }
}
