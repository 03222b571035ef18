//! Unary call benchmark for `cargo xtask bench`: C threads make blocking
//! `/bench.Echo/Unary` calls over ONE connection of one [`H2Transport`] (one
//! connection per address when `--target` lists several).
//!
//! ```text
//! cargo run --release -p lb-transport --example unary_bench -- \
//!     --target HOST:PORT[,HOST:PORT...] --calls N --concurrency C --payload-bytes B \
//!     [--channel] [--io-threads T]
//! ```
//!
//! With `--channel`, the same calls go through a `round_robin` [`Channel`] (resolver,
//! policy, picker, transparent retry) over the same kind of connection, so the
//! difference to a run without it is the channel's overhead. That is the path a
//! user's call takes, and the bench's "ours" row.
//!
//! `--target` may list several addresses (with `--channel` only): the channel's
//! target is then `ipv4:A,B,...` (a static address list), one subchannel and one
//! connection per address, and the measured calls start once every subchannel is
//! READY, so `round_robin` spreads them over all of them. One address is
//! `passthrough:///A`.
//!
//! `--io-threads T` gives the transport T I/O threads
//! ([`TransportConfig::io_threads`]); its connections are spread over them in turn.
//! Default 1.
//!
//! `--pipeline` (with `--channel`): ONE thread keeps C calls in flight instead of
//! C threads with one each: it starts C calls (`bidi_streaming` + `send_last`),
//! then waits for the oldest and starts another, the way a synchronous program
//! pipelines calls without a thread per call. Waiting for the oldest drives the
//! transport, which delivers every answer that has arrived meanwhile.
//!
//! Prints one line: `calls=N secs=S qps=Q p50_us=P p99_us=P99`.
//!
//! [`Channel`]: lb_core::channel::Channel

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, bounded, unbounded};
use lb_core::channel::{CallOptions, Channel};
use lb_core::channelz::PolicyView;
use lb_core::transport::{CallHead, CallListener, CallOutcome, ConnectOptions, ConnectionEvent};
use lb_core::{Address, Code, Connection, ConnectivityState, Metadata, Transport};
use lb_transport::driver::{H2Transport, TransportConfig};
use parking_lot::Mutex;

const USAGE: &str = "usage: unary_bench --target HOST:PORT[,HOST:PORT...] --calls N \
                     --concurrency C --payload-bytes B [--channel [--pipeline]] [--io-threads T]";

struct Args {
    /// One address, or several (comma-separated) with `--channel`.
    target: String,
    calls: u64,
    concurrency: usize,
    payload_bytes: usize,
    channel: bool,
    /// One thread keeps `concurrency` calls in flight.
    pipeline: bool,
    io_threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        target: String::new(),
        calls: 0,
        concurrency: 1,
        payload_bytes: 16,
        channel: false,
        pipeline: false,
        io_threads: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--channel" {
            args.channel = true;
            continue;
        }
        if flag == "--pipeline" {
            args.pipeline = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--target" => args.target = value,
            "--calls" => args.calls = num(&value)?,
            "--concurrency" => args.concurrency = num(&value)? as usize,
            "--payload-bytes" => args.payload_bytes = num(&value)? as usize,
            "--io-threads" => args.io_threads = num(&value)? as usize,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.target.is_empty() || args.calls == 0 || args.concurrency == 0 {
        return Err("--target, --calls and --concurrency are required".into());
    }
    if args.target.contains(',') && !args.channel {
        return Err("several addresses need --channel (a bare connection has one)".into());
    }
    if args.pipeline && !args.channel {
        return Err("--pipeline needs --channel".into());
    }
    if args.io_threads == 0 {
        return Err("--io-threads is at least 1".into());
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

/// How the benchmark makes one blocking call: the response message or an error.
enum Caller {
    Connection(Arc<dyn Connection>),
    Channel(Channel),
}

impl Caller {
    fn call(&self, request: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            Self::Connection(conn) => {
                // The way a blocking caller uses a bare connection: open the call
                // for driving and drive it until its listener hears the end.
                let (tx, rx) = bounded(1);
                let reply = Arc::new(Reply {
                    message: Mutex::new(None),
                    done: AtomicBool::new(false),
                    tx,
                });
                let mut head = CallHead::new("/bench.Echo/Unary");
                head.caller_drives = true;
                let stream = conn.open_stream(head, reply.clone());
                stream
                    .try_send(request.to_vec(), true)
                    .map_err(|e| format!("send: {e:?}"))?;
                loop {
                    let mut until = || reply.done.load(Ordering::Acquire);
                    if !stream.drive(&mut until, None) || reply.done.load(Ordering::Acquire) {
                        break;
                    }
                }
                rx.recv().expect("the transport ends every call")
            }
            Self::Channel(channel) => channel
                .unary(
                    "/bench.Echo/Unary",
                    request.to_vec(),
                    CallOptions::default(),
                )
                .map(|r| r.message)
                .map_err(|e| e.to_string()),
        }
    }
}

/// A bare call's listener: keeps the response message, sends the result at the end.
struct Reply {
    message: Mutex<Option<Vec<u8>>>,
    done: AtomicBool,
    tx: Sender<Result<Vec<u8>, String>>,
}

impl CallListener for Reply {
    fn on_headers(&self, _: Metadata) {}

    fn on_message(&self, message: Vec<u8>) {
        *self.message.lock() = Some(message);
    }

    fn on_writable(&self) {}

    fn on_close(&self, outcome: CallOutcome) {
        let result = match (outcome.status.code(), self.message.lock().take()) {
            (Code::Ok, Some(m)) => Ok(m),
            (Code::Ok, None) => Err("no response message".to_string()),
            _ => Err(outcome.status.to_string()),
        };
        let _ = self.tx.send(result);
        self.done.store(true, Ordering::Release);
    }
}

/// One thread's blocking calls until `next` reaches `calls`; their latencies in ns.
fn worker(caller: &Caller, request: &[u8], next: &AtomicU64, calls: u64) -> Vec<u64> {
    let mut latencies = Vec::new();
    while next.fetch_add(1, Ordering::Relaxed) < calls {
        let t0 = Instant::now();
        let result = caller.call(request);
        let took = t0.elapsed();
        match result {
            Ok(m) if m.len() == request.len() => {}
            Ok(m) => panic!("echo of {} bytes came back as {}", request.len(), m.len()),
            Err(e) => panic!("call failed: {e}"),
        }
        latencies.push(took.as_nanos() as u64);
    }
    latencies
}

/// The transport's configuration: `io_threads` I/O threads, the rest default.
fn transport_config(io_threads: usize) -> TransportConfig {
    TransportConfig {
        io_threads,
        ..Default::default()
    }
}

/// A round_robin channel to `target` (one address, or several comma-separated) over
/// a fresh transport, with every subchannel READY.
fn channel_to(target: &str, io_threads: usize) -> Channel {
    let transport = Arc::new(H2Transport::new(transport_config(io_threads)).expect("I/O threads"));
    let addresses = target.split(',').count();
    let target = if addresses > 1 {
        format!("ipv4:{target}")
    } else {
        format!("passthrough:///{target}")
    };
    let channel = Channel::builder(target.as_str())
        .transport(transport)
        .default_service_config(r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#)
        .build()
        .expect("channel");
    // The first call connects; it is not measured.
    let warm = CallOptions::default().with_timeout(Duration::from_secs(20));
    channel
        .unary("/bench.Echo/Unary", encode_msg(b"warm"), warm)
        .expect("warm-up call");
    // round_robin picks READY subchannels only: wait for all of them, so that the
    // measured calls spread over every connection from the first one.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = lb_core::channelz::registry()
            .policy(channel.channelz_id(), Duration::from_secs(5))
            .map_or(0, |view| ready_subchannels(&view));
        if ready >= addresses {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{ready} of {addresses} subchannels of {target} READY after 20 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // The picker that includes them is published by the channel's serializer.
    channel.settle();
    channel
}

/// The READY subchannels in a policy tree.
fn ready_subchannels(view: &PolicyView) -> usize {
    view.subchannels
        .iter()
        .filter(|s| s.state == ConnectivityState::Ready)
        .count()
        + view.children.iter().map(ready_subchannels).sum::<usize>()
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("{e}\n{USAGE}");
        std::process::exit(2);
    });
    let _transport;
    let caller = if args.channel {
        Caller::Channel(channel_to(&args.target, args.io_threads))
    } else {
        let transport = H2Transport::new(transport_config(args.io_threads)).expect("I/O thread");
        let conn = connect(&transport, &args.target);
        _transport = transport;
        Caller::Connection(conn)
    };

    let request = encode_msg(&vec![b'x'; args.payload_bytes]);
    let next = AtomicU64::new(0);
    let start = Instant::now();
    let mut all: Vec<u64> = std::thread::scope(|s| {
        if let (true, Caller::Channel(channel)) = (args.pipeline, &caller) {
            return pipeline(channel, &request, args.concurrency, args.calls);
        }
        let workers: Vec<_> = (0..args.concurrency)
            .map(|_| s.spawn(|| worker(&caller, &request, &next, args.calls)))
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
    match caller {
        Caller::Connection(conn) => conn.close(),
        Caller::Channel(channel) => channel.close(),
    }
}

/// `calls` calls from this thread, `depth` in flight: starts calls while fewer
/// are in flight, then waits for the oldest. Their latencies in ns.
fn pipeline(channel: &Channel, request: &[u8], depth: usize, calls: u64) -> Vec<u64> {
    let mut latencies = Vec::with_capacity(calls as usize);
    let mut in_flight = std::collections::VecDeque::with_capacity(depth);
    let mut started = 0;
    while latencies.len() < calls as usize {
        while in_flight.len() < depth && started < calls {
            let t0 = Instant::now();
            let call = channel
                .bidi_streaming("/bench.Echo/Unary", CallOptions::default())
                .expect("call started");
            call.send_last(request.to_vec()).expect("request sent");
            in_flight.push_back((call, t0));
            started += 1;
        }
        let (call, t0) = in_flight.pop_front().expect("a call in flight");
        match (call.recv(), call.recv()) {
            (Ok(Some(m)), Ok(None)) if m.len() == request.len() => {}
            other => panic!("call failed: {other:?}"),
        }
        latencies.push(t0.elapsed().as_nanos() as u64);
    }
    latencies
}

/// One connection to `target`, READY.
fn connect(transport: &H2Transport, target: &str) -> Arc<dyn Connection> {
    let (tx, events) = unbounded();
    let options = ConnectOptions {
        authority: target.into(),
        connect_deadline: Instant::now() + Duration::from_secs(20),
        user_agent: "lb-transport-unary-bench".into(),
        transport_options: Default::default(),
    };
    let sink = Arc::new(move |e| {
        let _ = tx.send(e);
    });
    let conn = transport
        .connect(&Address::new(target), &options, sink)
        .expect("connect");
    match events.recv_timeout(Duration::from_secs(20)) {
        Ok(ConnectionEvent::Ready) => {}
        other => panic!("connection to {target} not ready: {other:?}"),
    }
    conn
}
