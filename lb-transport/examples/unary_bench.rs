//! Unary call benchmark for `cargo xtask bench`: C threads make blocking
//! `/bench.Echo/Unary` calls over ONE connection of one [`H2Transport`].
//!
//! ```text
//! cargo run --release -p lb-transport --example unary_bench -- \
//!     --target HOST:PORT --calls N --concurrency C --payload-bytes B
//! ```
//!
//! Prints one line: `calls=N secs=S qps=Q p50_us=P p99_us=P99`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded};
use lb_core::transport::{CallRequest, ConnectOptions, ConnectionEvent};
use lb_core::{Address, Connection, Transport};
use lb_transport::driver::{H2Transport, TransportConfig};

const USAGE: &str =
    "usage: unary_bench --target HOST:PORT --calls N --concurrency C --payload-bytes B";

struct Args {
    target: String,
    calls: u64,
    concurrency: usize,
    payload_bytes: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        target: String::new(),
        calls: 0,
        concurrency: 1,
        payload_bytes: 16,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--target" => args.target = value,
            "--calls" => args.calls = num(&value)?,
            "--concurrency" => args.concurrency = num(&value)? as usize,
            "--payload-bytes" => args.payload_bytes = num(&value)? as usize,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.target.is_empty() || args.calls == 0 || args.concurrency == 0 {
        return Err("--target, --calls and --concurrency are required".into());
    }
    Ok(args)
}

/// `bench.Msg { payload }` in protobuf wire format: field 1, wire type 2.
fn encode_msg(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x0a];
    let mut len = payload.len() as u64;
    while len >= 0x80 {
        out.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(payload);
    out
}

/// One thread's blocking calls until `next` reaches `calls`; their latencies in ns.
fn worker(conn: &dyn Connection, request: &[u8], next: &AtomicU64, calls: u64) -> Vec<u64> {
    let mut latencies = Vec::new();
    while next.fetch_add(1, Ordering::Relaxed) < calls {
        let (tx, rx) = bounded(1);
        let t0 = Instant::now();
        conn.start_call(
            CallRequest::new("/bench.Echo/Unary", request.to_vec()),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        let result = rx.recv().expect("the transport completes every call");
        let took = t0.elapsed();
        match result {
            Ok(r) if r.message.len() == request.len() => {}
            Ok(r) => panic!(
                "echo of {} bytes came back as {}",
                request.len(),
                r.message.len()
            ),
            Err(e) => panic!("call failed: {e}"),
        }
        latencies.push(took.as_nanos() as u64);
    }
    latencies
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("{e}\n{USAGE}");
        std::process::exit(2);
    });
    let transport = H2Transport::new(TransportConfig::default()).expect("I/O thread");
    let (tx, events) = unbounded();
    let options = ConnectOptions {
        authority: args.target.clone(),
        connect_deadline: Instant::now() + Duration::from_secs(20),
        user_agent: "lb-transport-unary-bench".into(),
    };
    let sink = Arc::new(move |e| {
        let _ = tx.send(e);
    });
    let conn = transport
        .connect(&Address::new(args.target.as_str()), &options, sink)
        .expect("connect");
    match events.recv_timeout(Duration::from_secs(20)) {
        Ok(ConnectionEvent::Ready) => {}
        other => panic!("connection to {} not ready: {other:?}", args.target),
    }

    let request = encode_msg(&vec![b'x'; args.payload_bytes]);
    let next = AtomicU64::new(0);
    let start = Instant::now();
    let mut all: Vec<u64> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..args.concurrency)
            .map(|_| s.spawn(|| worker(&*conn, &request, &next, args.calls)))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker panicked"))
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| all[(p * (all.len() - 1) as f64).round() as usize] as f64 / 1000.0;
    println!(
        "calls={} secs={secs:.3} qps={:.0} p50_us={:.1} p99_us={:.1}",
        all.len(),
        all.len() as f64 / secs,
        pct(0.50),
        pct(0.99)
    );
    conn.close();
}
