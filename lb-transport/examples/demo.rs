//! `cargo xtask demo`: the most complete path that has landed, end to end, on real
//! loopback sockets.
//!
//! Three of our gRPC servers listen on 127.0.0.1. A `Channel` with our HTTP/2
//! transport resolves an `ipv4:` target to them, and a service config chooses
//! `round_robin` (after skipping a policy this build does not have). Several threads
//! make blocking unary calls. Half-way through, one server shuts down gracefully: its
//! GOAWAY lets the calls it has finish, the channel moves new calls to the other two,
//! and no call fails. The summary shows where calls went and their latency.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use lb_core::channel::{CallOptions, Channel};
use lb_transport::driver::{H2Transport, TransportConfig};
use lb_transport::server::{Response, Server};

const THREADS: usize = 4;
const CALLS_PER_THREAD: usize = 5_000;

/// Calls per (after the stop?, backend), latencies, failures by status.
type Report = (
    BTreeMap<(bool, String), usize>,
    Vec<Duration>,
    BTreeMap<String, usize>,
);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut servers = Vec::new();
    for name in ["backend-a", "backend-b", "backend-c"] {
        let server = Server::builder()
            .unary("/demo.Echo/Who", move |_req| {
                Ok(Response::new(name.as_bytes()))
            })
            .workers(2)
            .bind("127.0.0.1:0")?;
        println!("{name} listening on {}", server.local_addr());
        servers.push(Some(server));
    }
    let addrs: Vec<String> = servers
        .iter()
        .flatten()
        .map(|s| s.local_addr().to_string())
        .collect();

    let service_config =
        r#"{"loadBalancingConfig": [{"weighted_round_robin": {}}, {"round_robin": {}}]}"#;
    let transport = Arc::new(H2Transport::new(TransportConfig::default())?);
    let channel = Channel::builder(format!("ipv4:{}", addrs.join(",")))
        .transport(transport)
        .default_service_config(service_config)
        .build()?;
    println!("service config {service_config}");
    println!(
        "channel to ipv4:{} is {}",
        addrs.join(","),
        channel.state(false)
    );

    let started = Instant::now();
    let stopped = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let reports: Vec<Report> = thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let (channel, stopped, done) = (&channel, &stopped, &done);
                s.spawn(move || {
                    let mut report = Report::default();
                    for _ in 0..CALLS_PER_THREAD {
                        let t = Instant::now();
                        let options = CallOptions::default()
                            .with_timeout(Duration::from_secs(10))
                            .with_wait_for_ready(true);
                        match channel.unary("/demo.Echo/Who", b"hi".to_vec(), options) {
                            Ok(r) => {
                                report.1.push(t.elapsed());
                                let from = String::from_utf8_lossy(&r.message).into_owned();
                                *report
                                    .0
                                    .entry((stopped.load(Ordering::SeqCst), from))
                                    .or_default() += 1;
                            }
                            Err(e) => *report.2.entry(e.to_string()).or_default() += 1,
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    report
                })
            })
            .collect();
        // Half-way through, shut backend-b down gracefully.
        while done.load(Ordering::Relaxed) < THREADS * CALLS_PER_THREAD / 2 {
            thread::sleep(Duration::from_millis(1));
        }
        if let Some(server) = servers[1].take() {
            println!(
                "\nstopping backend-b (graceful, GOAWAY) after {} calls",
                done.load(Ordering::Relaxed)
            );
            stopped.store(true, Ordering::SeqCst);
            server.shutdown(Duration::from_secs(5));
        }
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect()
    });
    let elapsed = started.elapsed();

    let mut by_backend: BTreeMap<(bool, String), usize> = BTreeMap::new();
    let mut latencies = Vec::new();
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for (seen, lat, failed) in reports {
        for (k, n) in seen {
            *by_backend.entry(k).or_default() += n;
        }
        latencies.extend(lat);
        for (k, n) in failed {
            *failures.entry(k).or_default() += n;
        }
    }
    for (phase, label) in [
        (false, "before backend-b stopped"),
        (true, "after backend-b stopped"),
    ] {
        println!("\ncalls {label}:");
        for ((p, from), n) in &by_backend {
            if *p == phase {
                println!("  {from:<10} {n:>7}");
            }
        }
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    let failed: usize = failures.values().sum();
    println!(
        "\n{} calls from {THREADS} threads in {elapsed:.2?} ({:.0} calls/s): {} ok, {failed} failed",
        latencies.len() + failed,
        (latencies.len() + failed) as f64 / elapsed.as_secs_f64(),
        latencies.len(),
    );
    println!(
        "latency p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0)
    );
    for (why, n) in &failures {
        println!("  {n} failed with {why}");
    }
    println!("channel is {}", channel.state(false));
    channel.close();
    Ok(())
}
