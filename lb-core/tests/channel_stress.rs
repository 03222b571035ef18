//! Many threads calling through one channel while resolver updates, policy switches,
//! backends coming and going, state queries and finally close all race. Afterwards
//! every call has a final status, nothing panicked, no thread the channel started is
//! left and no connection is open. Bounded in time; alone in its binary because it
//! counts the process's threads.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use lb_core::Code;
use lb_core::channel::{CallOptions, Channel};
use lb_testkit::{InMemoryTransport, ManualResolver};
use parking_lot::Mutex;

const ADDRESSES: [&str; 6] = [
    "10.0.0.1:80",
    "10.0.0.2:80",
    "10.0.0.3:80",
    "10.0.0.4:80",
    "10.0.0.5:80",
    "10.0.0.6:80",
];
const CALLERS: usize = 6;

/// How long the chaos runs: 1.5 s, or `LB_STRESS_SECS` (set by `cargo xtask soak`).
fn run_time() -> Duration {
    std::env::var("LB_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_millis(1500), Duration::from_secs_f64)
}

/// A small deterministic generator, so a failing run can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n
    }
}

#[test]
fn calls_racing_updates_switches_and_close_all_end_and_leave_nothing() {
    let baseline = lb_testkit::process::thread_count();
    let transport = InMemoryTransport::new();
    for a in ADDRESSES {
        transport.serve_address(a);
    }
    let resolver = ManualResolver::default();
    let channel = Channel::builder("test:///stress")
        .transport(Arc::new(transport.clone()))
        .resolver_registry(resolver.registry())
        .default_service_config(r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#)
        .build()
        .unwrap();
    resolver.push_addresses(&ADDRESSES[..3]);

    let stop = Arc::new(AtomicBool::new(false));
    let attempted = Arc::new(AtomicUsize::new(0));
    let codes: Arc<Mutex<BTreeMap<Code, usize>>> = Arc::default();
    let callers: Vec<_> = (0..CALLERS)
        .map(|i| {
            let (channel, stop, attempted, codes) = (
                channel.clone(),
                stop.clone(),
                attempted.clone(),
                codes.clone(),
            );
            thread::spawn(move || {
                catch_unwind(AssertUnwindSafe(|| {
                    for n in 0..1_000_000u64 {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        attempted.fetch_add(1, Ordering::SeqCst);
                        let options = CallOptions::default()
                            .with_timeout(Duration::from_secs(2))
                            .with_wait_for_ready((n + i as u64) % 2 == 0);
                        let code = match channel.unary("/stress.S/M", Vec::new(), options) {
                            Ok(_) => Code::Ok,
                            Err(s) => s.code(),
                        };
                        *codes.lock().entry(code).or_default() += 1;
                    }
                }))
                .is_ok()
            })
        })
        .collect();

    // Chaos: address changes, policy switches, backends leaving and returning, and
    // connectivity queries, until the run ends; then close with calls in flight.
    let mut rng = Lcg(0x5eed);
    let started = Instant::now();
    let mut rounds = 0;
    let run = run_time();
    while started.elapsed() < run {
        rounds += 1;
        let first = rng.below(ADDRESSES.len());
        let len = 1 + rng.below(ADDRESSES.len() - first);
        let addrs = &ADDRESSES[first..first + len];
        match rng.below(4) {
            0 => resolver.push_addresses(addrs),
            1 => {
                resolver.push_with_config(addrs, r#"{"loadBalancingConfig": [{"pick_first": {}}]}"#)
            }
            2 => resolver
                .push_with_config(addrs, r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#),
            _ => {
                let a = ADDRESSES[rng.below(ADDRESSES.len())];
                transport.remove_server(a);
                let _ = channel.state(true);
                transport.serve_address(a);
            }
        }
        thread::sleep(Duration::from_millis(2));
    }
    channel.close();
    stop.store(true, Ordering::SeqCst);
    let mut panics = 0;
    for c in callers {
        if !c.join().unwrap_or(false) {
            panics += 1;
        }
    }
    drop(channel);

    let codes = codes.lock().clone();
    let finished: usize = codes.values().sum();
    let attempted = attempted.load(Ordering::SeqCst);
    // Every thread the channel started ends; give the OS a bounded moment to reap.
    let deadline = Instant::now() + Duration::from_secs(10);
    while lb_testkit::process::thread_count() > baseline && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let threads_left = lb_testkit::process::thread_count().saturating_sub(baseline);
    let open: usize = ADDRESSES
        .iter()
        .map(|a| transport.connection_count(a))
        .sum();
    println!(
        "stress: {rounds} chaos rounds, attempted={attempted} final={finished} lost={} \
         panics={panics} threads_left={threads_left} connections_left={open} codes={codes:?}",
        attempted - finished
    );
    assert!(rounds > 50, "the chaos loop barely ran");
    assert!(
        codes.get(&Code::Ok).copied().unwrap_or(0) > 100,
        "{codes:?}"
    );
    assert_eq!(finished, attempted, "every call got a final status");
    assert_eq!(panics, 0);
    let allowed = [
        Code::Ok,
        Code::Unavailable,
        Code::DeadlineExceeded,
        Code::Cancelled,
    ];
    assert!(
        codes.keys().all(|c| allowed.contains(c)),
        "unexpected codes: {codes:?}"
    );
    assert_eq!(threads_left, 0, "threads left after close");
    assert_eq!(open, 0, "connections left open after close");
}
