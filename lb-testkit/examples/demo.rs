//! `cargo xtask demo`: the most complete path that has landed, end to end.
//!
//! A `Channel` to three backends served by the in-memory transport, with a service
//! config that chooses `round_robin` (after skipping a policy this build does not
//! have). Four threads make blocking unary calls through it. Half-way through one
//! backend is stopped: its connection closes under the calls, the calls the server
//! never saw are sent again transparently, the policy drops the backend, and every
//! call still succeeds. The summary shows where calls went, their latency, and the
//! channel's state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use lb_core::channel::{CallOptions, Channel};
use lb_testkit::InMemoryTransport;

const BACKENDS: [&str; 3] = ["backend-a:50051", "backend-b:50051", "backend-c:50051"];
const THREADS: usize = 4;
const CALLS_PER_THREAD: usize = 20_000;

/// What one worker saw: calls per (phase, backend), latencies, failures by status.
type WorkerReport = (
    BTreeMap<(bool, String), usize>,
    Vec<Duration>,
    BTreeMap<String, usize>,
);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let transport = InMemoryTransport::new();
    for name in BACKENDS {
        transport.serve_address(name);
    }
    let service_config =
        r#"{"loadBalancingConfig": [{"weighted_round_robin": {}}, {"round_robin": {}}]}"#;
    let channel = Channel::builder(format!("demo:///{}", BACKENDS.join(",")))
        .resolver_registry(static_list::registry())
        .transport(Arc::new(transport.clone()))
        .default_service_config(service_config)
        .user_agent("lb-demo")
        .build()?;
    println!(
        "target {}\nservice config {service_config}",
        channel.target()
    );
    channel.state(true);
    channel.settle();
    println!("channel is {} before the first call", channel.state(false));

    let started = Instant::now();
    let stopped = AtomicBool::new(false);
    let options = CallOptions::default()
        .with_wait_for_ready(true)
        .with_timeout(Duration::from_secs(10));
    let reports: Vec<WorkerReport> = thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (channel, transport, stopped, options) =
                    (&channel, &transport, &stopped, &options);
                s.spawn(move || {
                    let mut seen = BTreeMap::new();
                    let mut latencies = Vec::with_capacity(CALLS_PER_THREAD);
                    let mut failures = BTreeMap::new();
                    for i in 0..CALLS_PER_THREAD {
                        if t == 0 && i == CALLS_PER_THREAD / 2 {
                            transport.remove_server(BACKENDS[1]);
                            stopped.store(true, Ordering::SeqCst);
                        }
                        let phase = stopped.load(Ordering::SeqCst);
                        let t0 = Instant::now();
                        match channel.unary("/demo.Echo/Say", &b"hello"[..], options.clone()) {
                            Ok(response) => {
                                latencies.push(t0.elapsed());
                                let from = String::from_utf8_lossy(&response.message).into_owned();
                                *seen.entry((phase, from)).or_default() += 1;
                            }
                            Err(status) => *failures.entry(status.to_string()).or_default() += 1,
                        }
                    }
                    (seen, latencies, failures)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect()
    });
    let elapsed = started.elapsed();

    let mut by_phase: BTreeMap<(bool, String), usize> = BTreeMap::new();
    let mut latencies = Vec::new();
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for (seen, lat, failed) in reports {
        for (k, n) in seen {
            *by_phase.entry(k).or_default() += n;
        }
        latencies.extend(lat);
        for (k, n) in failed {
            *failures.entry(k).or_default() += n;
        }
    }
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    for (phase, label) in [
        (false, "before backend-b stopped"),
        (true, "after backend-b stopped"),
    ] {
        println!("\ncalls {label}:");
        for ((p, from), n) in &by_phase {
            if *p == phase {
                println!("  {from:<18} {n:>7}");
            }
        }
    }
    let failed: usize = failures.values().sum();
    let total = latencies.len() + failed;
    println!(
        "\n{total} calls from {THREADS} threads in {elapsed:.2?}: {} ok, {failed} failed; \
         latency p50 {:?} p90 {:?} p99 {:?} p99.9 {:?} max {:?}",
        latencies.len(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        pct(1.0),
    );
    for (why, n) in &failures {
        println!("  {n} failed with {why}");
    }
    println!(
        "connects: {}",
        BACKENDS
            .iter()
            .map(|b| format!("{b} {}", transport.connect_count(b)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("channel is {} at the end", channel.state(false));
    channel.close();
    println!("channel is {} after close", channel.state(false));
    if failed > 0 {
        return Err(format!("{failed} calls failed").into());
    }
    Ok(())
}

/// A resolver for the demo's `demo:///a,b,c` targets: a fixed list of in-memory
/// names (the built-in `ipv4` resolver accepts only IP addresses).
mod static_list {
    use lb_core::channel::{Resolver, ResolverBuilder, ResolverHandle, ResolverRegistry, Target};
    use lb_core::{ResolverUpdate, endpoints};

    struct Builder;
    struct Static;

    impl ResolverBuilder for Builder {
        fn scheme(&self) -> &'static str {
            "demo"
        }

        fn build(
            &self,
            target: &Target,
            handle: ResolverHandle,
        ) -> Result<Box<dyn Resolver>, String> {
            let names: Vec<&str> = target.endpoint().split(',').collect();
            handle
                .update(ResolverUpdate::from_endpoints(endpoints(names)))
                .map_err(|_| "the channel is gone".to_string())?;
            Ok(Box::new(Static))
        }

        fn default_authority(&self, _: &Target) -> String {
            "demo".into()
        }
    }

    impl Resolver for Static {
        fn resolve_now(&mut self) {}
        fn shutdown(&mut self) {}
    }

    pub(crate) fn registry() -> ResolverRegistry {
        let mut registry = ResolverRegistry::with_builtins();
        registry.register(Builder);
        registry
    }
}
