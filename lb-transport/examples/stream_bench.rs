//! Streaming call benchmark for `cargo xtask bench`: one call on a [`Channel`]
//! (target `ipv4:HOST:PORT`, one connection of one [`H2Transport`]) to the
//! benchmark server's `bench.Echo` service (`xtask/peers/bench.proto`).
//!
//! ```text
//! cargo run --release -p lb-transport --example stream_bench -- \
//!     --target HOST:PORT --mode stream|pingpong --calls N --payload-bytes B
//! ```
//!
//! - `stream`: one server-streaming `/bench.Echo/Stream` call that receives N
//!   messages of B payload bytes; the latencies are the gaps between consecutive
//!   messages.
//! - `pingpong`: one bidi `/bench.Echo/PingPong` call: after one unmeasured round
//!   trip, N round trips of a B-byte message, each sent once the previous echo
//!   arrived; the latencies are per round trip.
//!
//! Prints one line, the same as `unary_bench` and the other clients of the bench
//! (`calls` counts messages, `qps` is messages per second):
//! `calls=N secs=S qps=Q p50_us=P p99_us=P99`.
//!
//! `--concurrency` is accepted for the common command line and must be 1.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_core::ConnectivityState;
use lb_core::channel::{CallOptions, Channel};
use lb_transport::driver::client::{H2Transport, TransportConfig};

const USAGE: &str = "usage: stream_bench --target HOST:PORT --mode stream|pingpong --calls N \
                     --payload-bytes B [--concurrency 1]";

/// The limit for the one measured call.
const CALL_TIMEOUT: Duration = Duration::from_secs(150);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Stream,
    PingPong,
}

struct Args {
    target: String,
    mode: Mode,
    calls: u64,
    payload_bytes: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        target: String::new(),
        mode: Mode::Stream,
        calls: 0,
        payload_bytes: 16,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--target" => args.target = value,
            "--calls" => args.calls = num(&value)?,
            "--payload-bytes" => args.payload_bytes = num(&value)? as usize,
            "--concurrency" if num(&value)? == 1 => {}
            "--concurrency" => return Err("one call: --concurrency 1".into()),
            "--mode" => {
                args.mode = match value.as_str() {
                    "stream" => Mode::Stream,
                    "pingpong" => Mode::PingPong,
                    other => return Err(format!("unknown mode {other}")),
                }
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.target.is_empty() || args.calls == 0 {
        return Err("--target and --calls are required".into());
    }
    Ok(args)
}

/// Appends `value` as a protobuf varint.
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads a protobuf varint at the start of `bytes`: its value and length.
fn get_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// `bench.Msg { payload }`: field 1, wire type 2.
fn encode_msg(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x0a];
    put_varint(&mut out, payload.len() as u64);
    out.extend_from_slice(payload);
    out
}

/// The payload length of an encoded `bench.Msg` made of its payload field alone
/// (what the server sends), or `None` for anything else. Proto3 leaves an empty
/// payload out.
fn payload_len(msg: &[u8]) -> Option<usize> {
    let Some(rest) = msg.strip_prefix(&[0x0a]) else {
        return msg.is_empty().then_some(0);
    };
    let (len, n) = get_varint(rest)?;
    (rest.len() - n == usize::try_from(len).ok()?).then_some(rest.len() - n)
}

/// `bench.StreamRequest { size, count }`: fields 1 and 2, varints.
fn encode_stream_request(size: usize, count: u64) -> Vec<u8> {
    let mut out = vec![0x08];
    put_varint(&mut out, size as u64);
    out.push(0x10);
    put_varint(&mut out, count);
    out
}

/// A channel to `ipv4:target` over a fresh transport, READY (connected without a
/// call, as the other clients connect before they measure).
fn channel_to(target: &str) -> Channel {
    let transport = Arc::new(H2Transport::new(TransportConfig::default()).expect("I/O thread"));
    let channel = Channel::builder(format!("ipv4:{target}"))
        .transport(transport)
        .user_agent("lb-transport-stream-bench")
        .build()
        .expect("channel");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match channel.state(true) {
            ConnectivityState::Ready => return channel,
            state => {
                if !channel.wait_for_state_change(state, deadline) {
                    panic!("channel to {target} not READY within 20 s: {state:?}");
                }
            }
        }
    }
}

/// One server-streaming call of `count` messages of `size` bytes; the gaps between
/// consecutive messages, in ns.
fn run_stream(channel: &Channel, count: u64, size: usize) -> Vec<u64> {
    let mut gaps = Vec::with_capacity(count as usize);
    let mut last = Instant::now();
    let stream = channel
        .server_streaming(
            "/bench.Echo/Stream",
            encode_stream_request(size, count),
            CallOptions::default().with_timeout(CALL_TIMEOUT),
        )
        .unwrap_or_else(|e| panic!("stream call failed: {e}"));
    for message in stream {
        let message = message.unwrap_or_else(|e| panic!("stream failed: {e}"));
        let now = Instant::now();
        assert_eq!(payload_len(&message), Some(size), "stream message length");
        gaps.push((now - last).as_nanos() as u64);
        last = now;
    }
    assert_eq!(gaps.len() as u64, count, "stream message count");
    gaps
}

/// One bidi call: a warm-up round trip, then `count` measured ones; their latencies
/// in ns, and when the measured ones began.
fn run_pingpong(channel: &Channel, count: u64, size: usize) -> (Vec<u64>, Instant) {
    let request = encode_msg(&vec![b'x'; size]);
    let call = channel
        .bidi_streaming(
            "/bench.Echo/PingPong",
            CallOptions::default().with_timeout(CALL_TIMEOUT),
        )
        .unwrap_or_else(|e| panic!("ping-pong call failed: {e}"));
    let round_trip = || {
        call.send(request.clone())
            .unwrap_or_else(|e| panic!("ping-pong send failed: {e}"));
        let echo = call
            .recv()
            .unwrap_or_else(|e| panic!("ping-pong failed: {e}"))
            .expect("an echo before the end");
        assert_eq!(payload_len(&echo), Some(size), "echo length");
    };
    round_trip();
    let mut latencies = Vec::with_capacity(count as usize);
    let start = Instant::now();
    for _ in 0..count {
        let t0 = Instant::now();
        round_trip();
        latencies.push(t0.elapsed().as_nanos() as u64);
    }
    call.close_send();
    let end = call
        .recv()
        .unwrap_or_else(|e| panic!("ping-pong status: {e}"));
    assert!(end.is_none(), "no echo after the end");
    (latencies, start)
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("{e}\n{USAGE}");
        std::process::exit(2);
    });
    let channel = channel_to(&args.target);
    let mut start = Instant::now();
    let mut all = match args.mode {
        Mode::Stream => run_stream(&channel, args.calls, args.payload_bytes),
        Mode::PingPong => {
            let (latencies, measured_from) = run_pingpong(&channel, args.calls, args.payload_bytes);
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
    channel.close();
}
