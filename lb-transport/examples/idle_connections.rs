//! Idle connection memory for `cargo xtask bench`: opens N connections from ONE
//! [`H2Transport`] (so all of them live on its single I/O thread), waits until every
//! one is READY, and reports how much this process's resident set grew.
//!
//! ```text
//! cargo run --release -p lb-transport --example idle_connections -- \
//!     --target HOST:PORT --connections N
//! ```
//!
//! Prints one line: `connections=N rss_delta_kib=D per_conn_bytes=B`. Needs more
//! than N open files (`ulimit -n`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::unbounded;
use lb_core::transport::{ConnectOptions, ConnectionEvent};
use lb_core::{Address, Transport};
use lb_transport::driver::{H2Transport, TransportConfig};

const USAGE: &str = "usage: idle_connections --target HOST:PORT --connections N";

/// This process's resident set size, in KiB (`VmRSS` of `/proc/self/status`).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

fn main() {
    let (mut target, mut n) = (String::new(), 1000usize);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match (flag.as_str(), it.next()) {
            ("--target", Some(v)) => target = v,
            ("--connections", Some(v)) => n = v.parse().expect("--connections N"),
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }
    if target.is_empty() || n == 0 {
        eprintln!("{USAGE}");
        std::process::exit(2);
    }

    let transport = H2Transport::new(TransportConfig::default()).expect("I/O thread");
    let (tx, events) = unbounded();
    let options = ConnectOptions {
        authority: target.clone(),
        connect_deadline: Instant::now() + Duration::from_secs(60),
        user_agent: "lb-transport-idle-connections".into(),
        transport_options: Default::default(),
    };
    let address = Address::new(target.as_str());
    // Let the I/O thread start and settle before the baseline.
    std::thread::sleep(Duration::from_millis(100));
    let before = rss_kib();

    let conns: Vec<_> = (0..n)
        .map(|i| {
            let tx = tx.clone();
            let sink = Arc::new(move |e| {
                let _ = tx.send((i, e));
            });
            transport
                .connect(&address, &options, sink)
                .expect("connect")
        })
        .collect();
    let mut ready = 0;
    while ready < n {
        match events.recv_timeout(Duration::from_secs(60)) {
            Ok((_, ConnectionEvent::Ready)) => ready += 1,
            Ok((i, other)) => panic!("connection {i}: {other:?} ({ready} of {n} ready)"),
            Err(e) => panic!("{ready} of {n} connections ready: {e}"),
        }
    }
    // Idle: let any settings ACKs and window updates go by.
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib();

    let delta_kib = after.saturating_sub(before);
    println!(
        "connections={n} rss_delta_kib={delta_kib} per_conn_bytes={}",
        delta_kib * 1024 / n as u64
    );
    drop(conns);
}
