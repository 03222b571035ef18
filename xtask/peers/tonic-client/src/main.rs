//! tonic client for `cargo xtask bench`, over ONE `Channel` (one HTTP/2 connection).
//!
//! ```text
//! tonic-bench-client --target HOST:PORT --calls N --concurrency C --payload-bytes B
//!                    [--mode unary|stream|pingpong]
//! ```
//!
//! - `unary` (the default): C tokio tasks together make N `/bench.Echo/Unary` calls
//!   with a B-byte payload; latencies are per call.
//! - `stream`: one `/bench.Echo/Stream` call that receives N messages of B bytes;
//!   the latencies are the gaps between consecutive messages.
//! - `pingpong`: one `/bench.Echo/PingPong` call: after one unmeasured round trip,
//!   N round trips of a B-byte message, each sent once the previous echo arrived.
//!
//! `stream` and `pingpong` make one call, so they take C = 1 only.
//!
//! Prints one line, the same as lb-transport's `unary_bench` and `stream_bench` (in
//! the streaming modes `calls` counts messages and `qps` messages per second):
//! `calls=N secs=S qps=Q p50_us=P p99_us=P99`.
//!
//! The messages of `../bench.proto` are written by hand as prost messages, and the
//! calls go through tonic's generic `client::Grpc::{unary, server_streaming,
//! streaming}`, which is exactly what tonic-build generates for these methods; no
//! protoc is needed to build this.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tonic::client::Grpc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

/// `message Msg { bytes payload = 1; }`
#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(bytes = "vec", tag = "1")]
    payload: Vec<u8>,
}

/// `message StreamRequest { uint32 size = 1; uint64 count = 2; }`
#[derive(Clone, PartialEq, prost::Message)]
struct StreamRequest {
    #[prost(uint32, tag = "1")]
    size: u32,
    #[prost(uint64, tag = "2")]
    count: u64,
}

const USAGE: &str = "usage: tonic-bench-client --target HOST:PORT --calls N --concurrency C \
                     --payload-bytes B [--mode unary|stream|pingpong]";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Unary,
    Stream,
    PingPong,
}

struct Args {
    target: String,
    mode: Mode,
    calls: u64,
    concurrency: usize,
    payload_bytes: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        target: String::new(),
        mode: Mode::Unary,
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
            "--mode" => {
                args.mode = match value.as_str() {
                    "unary" => Mode::Unary,
                    "stream" => Mode::Stream,
                    "pingpong" => Mode::PingPong,
                    other => return Err(format!("unknown mode {other}")),
                }
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.target.is_empty() || args.calls == 0 || args.concurrency == 0 {
        return Err("--target, --calls and --concurrency are required".into());
    }
    if args.mode != Mode::Unary && args.concurrency != 1 {
        return Err("--mode stream and pingpong make one call: --concurrency 1".into());
    }
    Ok(args)
}

async fn unary_worker(
    channel: Channel,
    request: Msg,
    next: Arc<AtomicU64>,
    calls: u64,
) -> Vec<u64> {
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

/// C tasks together make `args.calls` unary calls; their latencies.
async fn run_unary(channel: Channel, args: &Args, request: Msg) -> Vec<u64> {
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|_| {
            tokio::spawn(unary_worker(
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
    all
}

/// One server-streaming call of `count` messages of `size` bytes; the gaps between
/// consecutive messages.
async fn run_stream(channel: Channel, count: u64, size: usize) -> Vec<u64> {
    let mut client = Grpc::new(channel);
    client.ready().await.expect("channel ready");
    let request = StreamRequest {
        size: u32::try_from(size).expect("--payload-bytes fits u32"),
        count,
    };
    let mut gaps = Vec::with_capacity(count as usize);
    let mut last = Instant::now();
    let mut stream = client
        .server_streaming(
            tonic::Request::new(request),
            PathAndQuery::from_static("/bench.Echo/Stream"),
            tonic_prost::ProstCodec::<StreamRequest, Msg>::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("stream call failed: {e}"))
        .into_inner();
    while let Some(msg) = stream
        .message()
        .await
        .unwrap_or_else(|e| panic!("stream failed: {e}"))
    {
        let now = Instant::now();
        assert_eq!(msg.payload.len(), size, "stream message length");
        gaps.push((now - last).as_nanos() as u64);
        last = now;
    }
    assert_eq!(gaps.len() as u64, count, "stream message count");
    gaps
}

/// One bidi call: a warm-up round trip, then `count` measured ones; their
/// latencies and when the measured ones began.
async fn run_pingpong(channel: Channel, count: u64, request: Msg) -> (Vec<u64>, Instant) {
    let mut client = Grpc::new(channel);
    client.ready().await.expect("channel ready");
    let (tx, rx) = mpsc::channel(1);
    // The grpc C++ sync server sends its response headers with its first message,
    // and `streaming` waits for them: the warm-up message goes first.
    tx.send(request.clone()).await.expect("request stream open");
    let mut responses = client
        .streaming(
            tonic::Request::new(ReceiverStream::new(rx)),
            PathAndQuery::from_static("/bench.Echo/PingPong"),
            tonic_prost::ProstCodec::<Msg, Msg>::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("ping-pong call failed: {e}"))
        .into_inner();
    let mut recv_one = async || {
        let echo = responses
            .message()
            .await
            .unwrap_or_else(|e| panic!("ping-pong failed: {e}"))
            .expect("an echo before the end");
        assert_eq!(echo.payload.len(), request.payload.len(), "echo length");
    };
    recv_one().await;
    let mut latencies = Vec::with_capacity(count as usize);
    let start = Instant::now();
    for _ in 0..count {
        let t0 = Instant::now();
        tx.send(request.clone()).await.expect("request stream open");
        recv_one().await;
        latencies.push(t0.elapsed().as_nanos() as u64);
    }
    drop(tx);
    assert!(
        responses
            .message()
            .await
            .unwrap_or_else(|e| panic!("ping-pong status: {e}"))
            .is_none(),
        "no echo after the end"
    );
    (latencies, start)
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
    let mut start = Instant::now();
    let mut all = match args.mode {
        Mode::Unary => run_unary(channel, &args, request).await,
        Mode::Stream => run_stream(channel, args.calls, args.payload_bytes).await,
        Mode::PingPong => {
            let (latencies, measured_from) = run_pingpong(channel, args.calls, request).await;
            start = measured_from;
            latencies
        }
    };
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
