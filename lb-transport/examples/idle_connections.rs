//! Idle connection memory for `cargo xtask bench`: opens N connections from ONE
//! [`H2Transport`] (so all of them live on its single I/O thread), in waves of 500
//! each READY before the next, and reports how much this process's resident set
//! grew once all of them are READY and idle.
//!
//! ```text
//! cargo run --release -p lb-transport --example idle_connections -- \
//!     --target HOST:PORT --connections N
//! ```
//!
//! Prints one line: `connections=N rss_delta_kib=D per_conn_bytes=B ready_secs=S`
//! (S: from the first connect to the last READY). Needs more than N open files
//! (`ulimit -n`; the soft limit is checked first, and a run that could not open N
//! connections says so instead of measuring fewer). Every connection goes to the
//! same HOST:PORT, so N is bounded by the local port range too (28,232 ports by
//! Linux's default `net.ipv4.ip_local_port_range`), not by the loopback addresses.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::unbounded;
use lb_core::transport::{ConnectOptions, ConnectionEvent};
use lb_core::{Address, Transport};
use lb_transport::driver::{H2Transport, TransportConfig};

const USAGE: &str = "usage: idle_connections --target HOST:PORT --connections N";

/// Connections opened at once (see `main`).
const WAVE: usize = 500;

/// This process's resident set size, in KiB (`VmRSS` of `/proc/self/status`).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// The soft limit on open files (`Max open files` of `/proc/self/limits`), if it
/// is known and not unlimited.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
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

    // N sockets, plus the I/O thread's poller and waker, stdio, and some slack.
    let needed = n as u64 + 64;
    if let Some(limit) = open_files_limit().filter(|&l| l < needed) {
        eprintln!(
            "{n} connections need about {needed} open files; the limit is {limit} \
             (raise it with ulimit -n)"
        );
        std::process::exit(1);
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

    let started = Instant::now();
    let mut conns = Vec::with_capacity(n);
    let mut ready = 0;
    // In waves, each READY before the next starts: a burst of thousands of
    // connects overflows the server's accept queue (`net.core.somaxconn`), and the
    // kernel's SYN retries then take seconds.
    while conns.len() < n {
        let wave = (conns.len()..n).take(WAVE);
        conns.extend(wave.map(|i| {
            let tx = tx.clone();
            let sink = Arc::new(move |e| {
                let _ = tx.send((i, e));
            });
            transport
                .connect(&address, &options, sink)
                .expect("connect")
        }));
        while ready < conns.len() {
            match events.recv_timeout(Duration::from_secs(60)) {
                Ok((_, ConnectionEvent::Ready)) => ready += 1,
                Ok((i, other)) => panic!("connection {i}: {other:?} ({ready} of {n} ready)"),
                Err(e) => panic!("{ready} of {n} connections ready: {e}"),
            }
        }
    }
    let ready_secs = started.elapsed().as_secs_f64();
    // Idle: let any settings ACKs and window updates go by.
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib();

    let delta_kib = after.saturating_sub(before);
    println!(
        "connections={n} rss_delta_kib={delta_kib} per_conn_bytes={} ready_secs={ready_secs:.2}",
        delta_kib * 1024 / n as u64
    );
    drop(conns);
}
