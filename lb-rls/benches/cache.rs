//! Benchmarks of the RLS data cache: insert, hit lookup (with promotion), eviction,
//! and an accounting of the memory one entry takes.
//!
//! Run with `cargo bench -p lb-rls --bench cache`. The memory figures are printed
//! once, before the timings.

// criterion's `criterion_group!` and `criterion_main!` generate public functions
// without docs; the lint cannot be satisfied from here.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Once;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use lb_core::{SplitMix64, Status};
use lb_rls::cache::{CacheKey, CacheOptions, DataCache};
use lb_rls::keys::KeyMap;

const AGES: (Duration, Duration) = (Duration::from_secs(300), Duration::from_secs(240));

/// A realistic key: a method path and two keys (a header and the host).
fn key(i: usize) -> CacheKey {
    let keys: KeyMap = [
        ("host", "bigtable.googleapis.com".to_owned()),
        (
            "x-goog-request-params",
            format!("table=projects/p/instances/i/tables/t{i}"),
        ),
    ]
    .into_iter()
    .collect();
    CacheKey::new("/google.bigtable.v2.Bigtable/ReadRows", keys)
}

fn targets(i: usize) -> Vec<String> {
    vec![format!("us-east1-{}.bigtable.internal:443", i % 16)]
}

fn header() -> String {
    "x".repeat(32)
}

fn filled(n: usize, t0: Instant) -> DataCache {
    let mut c = DataCache::new(usize::MAX, CacheOptions::default(), SplitMix64::seeded(1));
    for i in 0..n {
        let _ = c.on_success(key(i), t0, targets(i), header(), AGES);
    }
    c
}

fn report_memory() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let t0 = Instant::now();
        for n in [1_000, 10_000, 100_000] {
            let c = filled(n, t0);
            let (key, entry) = c.iter().next().expect("filled");
            eprintln!(
                "rls cache memory: {n} entries, {} bytes accounted ({} per entry); \
                 entry size as counted against cacheSizeBytes: {} (path {} + keys {} + header {})",
                c.memory_bytes(),
                c.memory_bytes() / n,
                entry.size(),
                key.path().len(),
                key.keys().string_len(),
                entry.header_data().len(),
            );
        }
    });
}

fn insert(c: &mut Criterion) {
    report_memory();
    let t0 = Instant::now();
    let mut group = c.benchmark_group("rls_cache_insert");
    const N: usize = 1_000;
    let keys: Vec<CacheKey> = (0..N).map(key).collect();
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("on_success_new_key_x1000", |b| {
        b.iter_batched(
            || {
                (
                    DataCache::new(usize::MAX, CacheOptions::default(), SplitMix64::seeded(1)),
                    keys.clone(),
                )
            },
            |(mut cache, keys)| {
                for (i, k) in keys.into_iter().enumerate() {
                    let _ = cache.on_success(k, t0, targets(i), header(), AGES);
                }
                cache
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

fn hit(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut group = c.benchmark_group("rls_cache_hit");
    for n in [100, 10_000] {
        let mut cache = filled(n, t0);
        let keys: Vec<CacheKey> = (0..n).map(key).collect();
        let mut i = 0;
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("get_promote_{n}_entries"), |b| {
            b.iter(|| {
                let k = &keys[i % n];
                i = i.wrapping_add(7919);
                black_box(cache.get(k.path(), k.keys()).is_some())
            });
        });
    }
    group.finish();
}

fn eviction(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut group = c.benchmark_group("rls_cache_eviction");
    // Steady state: the cache is full; each success of a new key evicts the least
    // recently used entry (old enough, as time moves 1 s per insert).
    const N: usize = 10_000;
    let mut cache = filled(N, t0);
    let budget = cache.size_bytes();
    let _ = cache.resize(budget, t0);
    let mut now = t0 + Duration::from_secs(10);
    let next = std::cell::Cell::new(N);
    group.throughput(Throughput::Elements(1));
    group.bench_function("on_success_evicts_one_10000_entries", |b| {
        b.iter_batched(
            || {
                let i = next.get();
                next.set(i + 1);
                (key(i), targets(i))
            },
            |(k, t)| {
                now += Duration::from_secs(1);
                let update = cache.on_success(k, now, t, header(), AGES);
                debug_assert_eq!(update.evicted.len(), 1);
                update
            },
            BatchSize::SmallInput,
        );
    });
    // Bulk: shrinking a full cache of 1000 entries to zero.
    const M: usize = 1_000;
    group.throughput(Throughput::Elements(M as u64));
    group.bench_function("resize_to_zero_1000_entries", |b| {
        b.iter_batched(
            || filled(M, t0),
            |mut cache| cache.resize(0, t0 + Duration::from_secs(10)),
            BatchSize::LargeInput,
        );
    });
    // Failures on new keys (size-0 entries with backoff).
    let mut cache = filled(N, t0);
    let mut j = 0;
    group.throughput(Throughput::Elements(1));
    group.bench_function("on_failure_existing_key_10000_entries", |b| {
        b.iter(|| {
            j = (j + 7919) % N;
            let update = cache.on_failure(key(j), t0, Status::unavailable("rls down"));
            black_box(update.backoff)
        });
    });
    group.finish();
}

criterion_group!(benches, insert, hit, eviction);
criterion_main!(benches);
