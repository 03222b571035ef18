//! tonic unary client for `cargo xtask bench`: C tokio tasks make `/bench.Echo/Unary`
//! calls over ONE `Channel` (one HTTP/2 connection).
//!
//! ```text
//! tonic-bench-client --target HOST:PORT --calls N --concurrency C --payload-bytes B
//! ```
//!
//! Prints one line, the same as lb-transport's `unary_bench`:
//! `calls=N secs=S qps=Q p50_us=P p99_us=P99`.
//!
//! `bench.Msg` (see `../bench.proto`) is written by hand as a prost message, and the
//! call goes through tonic's generic `client::Grpc::unary`, which is exactly what
//! tonic-build generates for a unary method; no protoc is needed to build this.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tonic::client::Grpc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

/// `message Msg { bytes payload = 1; }`
#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(bytes = "vec", tag = "1")]
    payload: Vec<u8>,
}

const USAGE: &str =
    "usage: tonic-bench-client --target HOST:PORT --calls N --concurrency C --payload-bytes B";

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

async fn worker(channel: Channel, request: Msg, next: Arc<AtomicU64>, calls: u64) -> Vec<u64> {
    let mut client = Grpc::new(channel);
    let path = PathAndQuery::from_static("/bench.Echo/Unary");
    let mut latencies = Vec::new();
    while next.fetch_add(1, Ordering::Relaxed) < calls {
        let t0 = Instant::now();
        client.ready().await.expect("channel ready");
        let response: tonic::Response<Msg> = client
            .unary(
                tonic::Request::new(request.clone()),
                path.clone(),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("call failed: {e}"));
        let took = t0.elapsed();
        assert_eq!(
            response.get_ref().payload.len(),
            request.payload.len(),
            "echo length"
        );
        latencies.push(took.as_nanos() as u64);
    }
    latencies
}

#[tokio::main]
async fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("{e}\n{USAGE}");
        std::process::exit(2);
    });
    let channel = Endpoint::from_shared(format!("http://{}", args.target))
        .expect("target")
        .connect_timeout(Duration::from_secs(20))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", args.target));
    let request = Msg {
        payload: vec![b'x'; args.payload_bytes],
    };
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|_| {
            tokio::spawn(worker(
                channel.clone(),
                request.clone(),
                next.clone(),
                args.calls,
            ))
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task panicked"));
    }
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
}
