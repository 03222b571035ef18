//! Fault injection on real loopback sockets: several threads make wait-for-ready
//! calls through one round_robin `Channel` (our `H2Transport`) to three backends
//! while one of them is killed, stopped gracefully, resets streams, has its TCP
//! connections cut, or stops answering. Every call must end with a status, only the
//! calls the fault hit may fail (with the expected codes), and once the channel and
//! the backends are gone the process's threads and sockets are back where they were.
//!
//! With a `retryPolicy` (gRFC A6), the SIGKILL scenario is run again and must fail
//! no call at all: the calls in flight on the killed backend are retried on the
//! others.
//!
//! One test runs the scenarios one after the other: the leak check counts the whole
//! process's threads and sockets.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::unbounded;
use lb_core::Code;
use lb_core::channel::{CallOptions, Channel};
use lb_testkit::peers::{self, GrpcServer, GrpcServerOptions, PeerEnv};
use lb_transport::driver::proxy::ProxyMode;
use lb_transport::driver::{H2Transport, TransportConfig};
use lb_transport::frame::{
    self, Data, Frame, FrameReader, Headers, Ping, Reason, RstStream, Settings, StreamId,
    WindowUpdate,
};
use lb_transport::hpack::{Encoder, Header};
use lb_transport::proto::{ConnectionConfig, KeepaliveConfig, PingPolicy};
use lb_transport::server::Server;

/// Bound on setup steps (warm-up, rejoin after a restart, the leak check).
const WAIT: Duration = Duration::from_secs(10);
/// The deadline of each call in most scenarios.
const DEADLINE: Duration = Duration::from_secs(8);
/// Caller threads per scenario.
const CALLERS: usize = 4;

// ---------------------------------------------------------------------------------
// Process accounting.

/// Names of this process's threads that the client stack starts.
fn client_threads() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .filter(|n| n == "lb-io" || n == "lb-serializer" || n == "lb-resolver-dns")
        .collect()
}

/// Waits (bounded) until threads and sockets are back to `baseline`; returns how
/// many are left over.
fn left_over(baseline: (usize, usize)) -> (isize, isize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = (
            lb_testkit::process::thread_count(),
            lb_testkit::process::socket_count(),
        );
        if now == baseline || Instant::now() > deadline {
            return (
                now.0 as isize - baseline.0 as isize,
                now.1 as isize - baseline.1 as isize,
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------------
// Backends.

fn grpcio(env: &PeerEnv, id: &str) -> GrpcServer {
    let options = GrpcServerOptions {
        id: id.into(),
        ..GrpcServerOptions::default()
    };
    GrpcServer::start(env, options).unwrap()
}

fn ours(id: &str, addr: &str) -> Server {
    let config = ConnectionConfig {
        ping_policy: PingPolicy {
            min_time: Duration::from_secs(5),
            permit_without_calls: true,
            max_strikes: 2,
        },
        ..ConnectionConfig::default()
    };
    // A port just freed may still be held by a closing connection: retry, bounded.
    let deadline = Instant::now() + WAIT;
    loop {
        match lb_testkit::services::mount(Server::builder(), id)
            .workers(4)
            .connection_config(config.clone())
            .bind(addr)
        {
            Ok(s) => return s,
            Err(e) if Instant::now() > deadline => panic!("cannot bind {addr}: {e}"),
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A stoppable accept loop: `handle` runs on its own thread for each connection.
struct Acceptor {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Arc<parking_lot::Mutex<Vec<JoinHandle<()>>>>,
    accept: Option<JoinHandle<()>>,
}

impl Acceptor {
    fn start(handle: impl Fn(TcpStream, &Arc<AtomicBool>) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let threads = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let handle = Arc::new(handle);
        let accept = {
            let (stop, threads) = (stop.clone(), threads.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((socket, _)) => {
                            socket.set_nonblocking(false).unwrap();
                            let (handle, stop) = (handle.clone(), stop.clone());
                            let t = thread::spawn(move || handle(socket, &stop));
                            threads.lock().push(t);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => panic!("accept: {e}"),
                    }
                }
            })
        };
        Self {
            addr,
            stop,
            threads,
            accept: Some(accept),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.accept.take() {
            a.join().unwrap();
        }
        for t in std::mem::take(&mut *self.threads.lock()) {
            t.join().unwrap();
        }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A scripted HTTP/2 server answering `/test.Echo/Who` with "raw", except that it
/// resets some calls: every fourth with RST_STREAM(CANCEL) before any response, and
/// every fourth (offset by two) with RST_STREAM(INTERNAL_ERROR) after the response
/// headers.
struct RstServer {
    acceptor: Acceptor,
    resets: Arc<AtomicUsize>,
}

impl RstServer {
    fn start() -> Self {
        let resets = Arc::new(AtomicUsize::new(0));
        let calls = Arc::new(AtomicUsize::new(0));
        let r = resets.clone();
        let acceptor = Acceptor::start(move |socket, stop| {
            let _ = serve_raw(socket, stop, &calls, &r);
        });
        Self { acceptor, resets }
    }
}

fn serve_raw(
    mut socket: TcpStream,
    stop: &AtomicBool,
    calls: &AtomicUsize,
    resets: &AtomicUsize,
) -> std::io::Result<()> {
    socket.set_read_timeout(Some(Duration::from_millis(20)))?;
    let mut out = Vec::new();
    Settings::default().encode(&mut out);
    socket.write_all(&out)?;
    let mut encoder = Encoder::new();
    let reader = FrameReader::new();
    let mut buf = Vec::new();
    let mut preface = false;
    let mut chunk = [0u8; 16 << 10];
    while !stop.load(Ordering::SeqCst) {
        match socket.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                continue;
            }
            Err(e) => return Err(e),
        }
        if !preface {
            if buf.len() < frame::PREFACE.len() {
                continue;
            }
            assert_eq!(&buf[..frame::PREFACE.len()], frame::PREFACE);
            buf.drain(..frame::PREFACE.len());
            preface = true;
        }
        let mut out = Vec::new();
        while let Some((f, used)) = reader
            .read(&buf)
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?
        {
            buf.drain(..used);
            let end_of_request = match f {
                Frame::Settings(s) if !s.ack => {
                    Settings::new_ack().encode(&mut out);
                    None
                }
                Frame::Ping(p) if !p.ack => {
                    Ping::pong(p.payload).encode(&mut out);
                    None
                }
                Frame::GoAway(_) => return Ok(()),
                Frame::Data(d) => {
                    let n = d.flow_controlled_len();
                    if n > 0 {
                        WindowUpdate::new(StreamId::ZERO, n as u32).encode(&mut out);
                    }
                    d.end_stream.then_some(d.stream_id)
                }
                Frame::Headers(h) => h.end_stream.then_some(h.stream_id),
                _ => None,
            };
            let Some(id) = end_of_request else { continue };
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if n % 4 == 1 {
                resets.fetch_add(1, Ordering::SeqCst);
                RstStream::new(id, Reason::CANCEL).encode(&mut out);
                continue;
            }
            let mut block = Vec::new();
            encoder.encode(
                [
                    Header::new(":status", "200"),
                    Header::new("content-type", "application/grpc"),
                ],
                &mut block,
            );
            Headers::new(id, block, false, true).encode(&mut out);
            if n % 4 == 3 {
                resets.fetch_add(1, Ordering::SeqCst);
                RstStream::new(id, Reason::INTERNAL_ERROR).encode(&mut out);
                continue;
            }
            Data::new(id, b"\0\0\0\0\x03raw".to_vec(), false).encode(&mut out);
            let mut block = Vec::new();
            encoder.encode([Header::new("grpc-status", "0")], &mut block);
            Headers::new(id, block, true, true).encode(&mut out);
        }
        socket.write_all(&out)?;
    }
    Ok(())
}

const FORWARD: u8 = 0;
const STALL: u8 = 1;
const REJECT: u8 = 2;

/// A TCP relay in front of a backend: forwards, stalls (stops forwarding without
/// closing), or is cut (every connection shut down, new ones closed at once).
struct Relay {
    acceptor: Acceptor,
    mode: Arc<AtomicU8>,
    open: Arc<parking_lot::Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(upstream: SocketAddr) -> Self {
        let mode = Arc::new(AtomicU8::new(FORWARD));
        let open = Arc::new(parking_lot::Mutex::new(Vec::<TcpStream>::new()));
        let (m, o) = (mode.clone(), open.clone());
        let acceptor = Acceptor::start(move |client, stop| {
            if m.load(Ordering::SeqCst) == REJECT {
                return;
            }
            let Ok(server) = TcpStream::connect(upstream) else {
                return;
            };
            {
                let mut open = o.lock();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
            }
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (m2, stop2) = (m.clone(), stop.clone());
            let back = thread::spawn(move || pump(s2, c2, &m2, &stop2));
            pump(client, server, &m, stop);
            back.join().unwrap();
        });
        Self {
            acceptor,
            mode,
            open,
        }
    }

    fn target(&self) -> String {
        self.acceptor.addr.to_string()
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    /// Cuts every connection (both sides) and refuses new ones.
    fn cut(&self) {
        self.set(REJECT);
        for s in self.open.lock().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn stop(mut self) {
        self.cut();
        self.acceptor.stop();
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, mode: &AtomicU8, stop: &AtomicBool) {
    from.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = [0u8; 16 << 10];
    while !stop.load(Ordering::SeqCst) {
        if mode.load(Ordering::SeqCst) == STALL {
            thread::sleep(Duration::from_millis(10));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

// ---------------------------------------------------------------------------------
// Callers.

#[derive(Default)]
struct Tally {
    attempted: AtomicUsize,
    finished: AtomicUsize,
    panics: AtomicUsize,
    /// Successes: when the call ended and which backend answered.
    ok: parking_lot::Mutex<Vec<(Instant, String)>>,
    /// Failures: when, which code, per caller.
    failed: parking_lot::Mutex<Vec<(Instant, Code, usize, String)>>,
    /// How long each call took.
    latencies: parking_lot::Mutex<Vec<Duration>>,
}

impl Tally {
    fn ok_from(&self, id: &str) -> usize {
        self.ok.lock().iter().filter(|(_, who)| who == id).count()
    }

    fn failed_count(&self) -> usize {
        self.failed.lock().len()
    }
}

struct Callers {
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    done: crossbeam_channel::Receiver<()>,
    threads: Vec<JoinHandle<()>>,
    deadline: Duration,
}

fn callers(channel: &Channel, deadline: Duration, pause: Duration) -> Callers {
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, done) = unbounded();
    let threads = (0..CALLERS)
        .map(|caller| {
            let (channel, tally, stop, done_tx) = (
                channel.clone(),
                tally.clone(),
                stop.clone(),
                done_tx.clone(),
            );
            thread::spawn(move || {
                let run = catch_unwind(AssertUnwindSafe(|| {
                    while !stop.load(Ordering::SeqCst) {
                        let options = CallOptions::default()
                            .with_timeout(deadline)
                            .with_wait_for_ready(true);
                        tally.attempted.fetch_add(1, Ordering::SeqCst);
                        let started = Instant::now();
                        let r = channel.unary("/test.Echo/Who", Vec::new(), options);
                        tally.latencies.lock().push(started.elapsed());
                        tally.finished.fetch_add(1, Ordering::SeqCst);
                        match r {
                            Ok(r) => {
                                let id = String::from_utf8(r.message).unwrap();
                                tally.ok.lock().push((Instant::now(), id));
                            }
                            Err(s) => tally.failed.lock().push((
                                Instant::now(),
                                s.code(),
                                caller,
                                s.message().to_owned(),
                            )),
                        }
                        if !pause.is_zero() {
                            thread::sleep(pause);
                        }
                    }
                }));
                if run.is_err() {
                    tally.panics.fetch_add(1, Ordering::SeqCst);
                }
                let _ = done_tx.send(());
            })
        })
        .collect();
    Callers {
        tally,
        stop,
        done,
        threads,
        deadline,
    }
}

impl Callers {
    /// Waits (bounded) until `id` has answered more calls than `before`.
    fn wait_rejoin(&self, id: &str, before: usize) {
        let deadline = Instant::now() + WAIT;
        while self.tally.ok_from(id) <= before {
            assert!(Instant::now() < deadline, "{id} never rejoined");
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the callers, each bounded by its call deadline; returns the tally.
    fn finish(self) -> Arc<Tally> {
        self.stop.store(true, Ordering::SeqCst);
        let limit = Instant::now() + self.deadline + Duration::from_secs(2);
        let mut reported = 0;
        while reported < self.threads.len() && self.done.recv_deadline(limit).is_ok() {
            reported += 1;
        }
        if reported == self.threads.len() {
            for t in self.threads {
                t.join().unwrap();
            }
        }
        // A caller still stuck in a call here has lost it: attempted > finished.
        self.tally
    }
}

// ---------------------------------------------------------------------------------
// Scenarios.

fn channel(targets: &[String], connection: ConnectionConfig) -> Channel {
    channel_with(
        targets,
        connection,
        r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#,
    )
}

/// round_robin, and every method retried on UNAVAILABLE.
const RETRYING: &str = r#"{
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [{"name": [{}], "retryPolicy": {
        "maxAttempts": 5, "initialBackoff": "0.01s", "maxBackoff": "0.2s",
        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]
}"#;

fn channel_with(targets: &[String], connection: ConnectionConfig, service_config: &str) -> Channel {
    let mut registry = lb_core::LbPolicyRegistry::with_builtins();
    lb_group::register(&mut registry);
    let config = TransportConfig {
        connection,
        proxy: ProxyMode::Disabled,
        ..TransportConfig::default()
    };
    let transport = Arc::new(H2Transport::new(config).unwrap());
    Channel::builder(format!("ipv4:{}", targets.join(",")))
        .transport(transport)
        .lb_policy_registry(registry)
        .default_service_config(service_config)
        .build()
        .unwrap()
}

/// Calls (fail-fast, bounded) until every backend in `ids` has answered once.
fn warm_up(channel: &Channel, ids: &[&str]) {
    let deadline = Instant::now() + WAIT;
    let mut seen = std::collections::HashSet::new();
    while seen.len() < ids.len() {
        assert!(Instant::now() < deadline, "only {seen:?} of {ids:?} ready");
        let options = CallOptions::default().with_timeout(WAIT);
        if let Ok(r) = channel.unary("/test.Echo/Who", Vec::new(), options) {
            seen.insert(String::from_utf8(r.message).unwrap());
        }
    }
}

/// What a scenario reports; checked and printed by [`check`].
struct Outcome {
    name: &'static str,
    tally: Arc<Tally>,
    left: (isize, isize),
    client_threads_after_close: Vec<String>,
}

/// Closes the channel, then `teardown` stops the backends; measures what is left.
fn close_and_count(
    channel: Channel,
    baseline: (usize, usize),
    teardown: impl FnOnce(),
) -> ((isize, isize), Vec<String>) {
    channel.close();
    drop(channel);
    let deadline = Instant::now() + WAIT;
    let mut client = client_threads();
    while !client.is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
        client = client_threads();
    }
    teardown();
    (left_over(baseline), client)
}

/// Asserts the common invariants and prints the summary line; returns the failure
/// codes for the scenario's own checks.
fn check(o: &Outcome) -> Vec<Code> {
    let t = &o.tally;
    let attempted = t.attempted.load(Ordering::SeqCst);
    let finished = t.finished.load(Ordering::SeqCst);
    let panics = t.panics.load(Ordering::SeqCst);
    let failed = t.failed.lock();
    let mut codes: HashMap<Code, usize> = HashMap::new();
    for (_, c, _, _) in failed.iter() {
        *codes.entry(*c).or_default() += 1;
    }
    let mut codes_text: Vec<String> = codes.iter().map(|(c, n)| format!("{c:?}:{n}")).collect();
    codes_text.sort();
    println!(
        "fault {}: attempted={attempted} final={finished} lost={} panics={panics} \
         failed={} ({}) threads_left={} sockets_left={}",
        o.name,
        attempted - finished,
        failed.len(),
        codes_text.join(","),
        o.left.0,
        o.left.1,
    );
    assert!(attempted > 50, "{}: only {attempted} calls", o.name);
    assert_eq!(finished, attempted, "{}: calls lost", o.name);
    assert_eq!(panics, 0, "{}: callers panicked", o.name);
    assert!(
        o.client_threads_after_close.is_empty(),
        "{}: client threads alive after close: {:?}",
        o.name,
        o.client_threads_after_close
    );
    assert_eq!(o.left, (0, 0), "{}: (threads, sockets) left behind", o.name);
    failed.iter().map(|(_, c, _, _)| *c).collect()
}

/// At most `per_caller` failures per caller thread, all UNAVAILABLE.
fn only_in_flight_unavailable(o: &Outcome, per_caller: usize) {
    let failed = o.tally.failed.lock();
    for caller in 0..CALLERS {
        let mine: Vec<_> = failed.iter().filter(|f| f.2 == caller).collect();
        assert!(
            mine.len() <= per_caller,
            "{}: caller {caller} lost more than its calls in flight: {mine:?}",
            o.name
        );
    }
    assert!(
        failed.iter().all(|f| f.1 == Code::Unavailable),
        "{}: {failed:?}",
        o.name
    );
}

/// 1. Two grpcio backends are SIGKILLed and restarted on the same port: first one,
///    then both.
fn killed_and_restarted(env: &PeerEnv) -> Outcome {
    kill_and_restart(env, "killed_and_restarted", None)
}

/// 6. As 1, with three grpcio backends and a retryPolicy: no call fails.
fn killed_with_retries(env: &PeerEnv) -> Outcome {
    kill_and_restart(env, "killed_with_retries", Some(RETRYING))
}

fn kill_and_restart(env: &PeerEnv, name: &'static str, retrying: Option<&str>) -> Outcome {
    let baseline = (
        lb_testkit::process::thread_count(),
        lb_testkit::process::socket_count(),
    );
    let mut g = [grpcio(env, "g0"), grpcio(env, "g1")];
    // With retries, the third backend is grpcio too (the issue's setup); without,
    // one of ours.
    let third = match retrying {
        Some(_) => Third::Grpcio(Box::new(grpcio(env, "g2"))),
        None => Third::Ours(ours("g2", "127.0.0.1:0")),
    };
    let targets = vec![g[0].target(), g[1].target(), third.target()];
    let channel = match retrying {
        Some(sc) => channel_with(&targets, ConnectionConfig::default(), sc),
        None => channel(&targets, ConnectionConfig::default()),
    };
    warm_up(&channel, &["g0", "g1", "g2"]);
    let c = callers(&channel, DEADLINE, Duration::ZERO);
    thread::sleep(Duration::from_millis(300));
    for round in [&[0][..], &[0, 1][..]] {
        let before: Vec<usize> = round
            .iter()
            .map(|i| c.tally.ok_from(&format!("g{i}")))
            .collect();
        for &i in round {
            g[i].kill();
        }
        thread::sleep(Duration::from_millis(300));
        for &i in round {
            g[i].restart().unwrap();
        }
        for (&i, before) in round.iter().zip(before) {
            c.wait_rejoin(&format!("g{i}"), before);
        }
        thread::sleep(Duration::from_millis(200));
    }
    let tally = c.finish();
    let stats = channel.retry_stats();
    let (left, client) = close_and_count(channel, baseline, move || {
        drop(g);
        if let Third::Ours(server) = third {
            server.shutdown(Duration::ZERO);
        }
    });
    let o = Outcome {
        name,
        tally,
        left,
        client_threads_after_close: client,
    };
    check(&o);
    if retrying.is_some() {
        println!(
            "fault {name}: retries={} transparent_retries={}",
            stats.retries, stats.transparent_retries
        );
        let failed = o.tally.failed.lock();
        assert!(failed.is_empty(), "{name}: calls failed: {failed:?}");
    } else {
        // Three kills: each caller can lose at most the call it had in flight on
        // each.
        only_in_flight_unavailable(&o, 3);
    }
    o
}

/// 7. Hedging (`hedgingDelay` 10 ms, up to 3 attempts) over three of our servers,
///    one of which holds every call for 1 s: the slow backend costs the callers
///    only the hedging delay, and its held calls are cancelled.
fn hedged_past_a_stalling_backend() -> Outcome {
    const HEDGING: &str = r#"{
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [{"name": [{"service": "test.Echo"}], "hedgingPolicy": {
            "maxAttempts": 3, "hedgingDelay": "0.01s",
            "nonFatalStatusCodes": ["UNAVAILABLE"]}}]
    }"#;
    let baseline = (
        lb_testkit::process::thread_count(),
        lb_testkit::process::socket_count(),
    );
    let held = Arc::new(AtomicUsize::new(0));
    let h = held.clone();
    let slow = lb_testkit::services::mount(Server::builder(), "slow")
        .unary(
            "/test.Echo/Who",
            move |req: lb_transport::server::Request| {
                if !req.wait_cancelled(Instant::now() + Duration::from_secs(1)) {
                    h.fetch_add(1, Ordering::SeqCst);
                }
                Ok(lb_transport::server::Response::new(b"slow".to_vec()))
            },
        )
        .workers(8)
        .bind("127.0.0.1:0")
        .unwrap();
    let fast = [ours("h1", "127.0.0.1:0"), ours("h2", "127.0.0.1:0")];
    let targets = vec![
        slow.local_addr().to_string(),
        fast[0].local_addr().to_string(),
        fast[1].local_addr().to_string(),
    ];
    let run = Run {
        name: "hedged_past_a_stalling_backend",
        service_config: HEDGING,
        warm: &["h1", "h2"],
        pause: Duration::ZERO,
        run_for: Duration::from_secs(2),
    };
    let (o, stats, _) = run.over(&targets, baseline, move || {
        slow.shutdown(Duration::ZERO);
        for s in fast {
            s.shutdown(Duration::ZERO);
        }
    });
    let mut latencies = o.tally.latencies.lock().clone();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    let from_slow = o.tally.ok_from("slow");
    println!(
        "fault {}: calls={} p50={:?} p99={:?} max={:?} hedges={} answered_by_slow={from_slow} \
         slow_calls_not_cancelled={}",
        o.name,
        latencies.len(),
        at(0.5),
        at(0.99),
        at(1.0),
        stats.hedges,
        held.load(Ordering::SeqCst),
    );
    assert!(o.tally.failed.lock().is_empty(), "{}: calls failed", o.name);
    // Without hedging a third of the calls would take 1 s; the target is 50 ms
    // (printed above), the bound here leaves room for a loaded machine.
    assert!(
        at(0.99) < Duration::from_millis(500),
        "{}: p99 {:?}",
        o.name,
        at(0.99)
    );
    assert!(stats.hedges > 0, "{}: no hedged attempt", o.name);
    o
}

/// 8. Outlier detection (interval 0.5 s, failure percentage over 30 %) around
///    round_robin over three of our servers, one of which fails every other call
///    with UNAVAILABLE from the start: it is ejected within two intervals, and
///    gets under 5 % of the calls while ejected.
fn ejected_for_failing_half() -> Outcome {
    const INTERVAL: Duration = Duration::from_millis(500);
    const DETECTING: &str = r#"{"loadBalancingConfig": [{"outlier_detection_experimental": {
        "interval": "0.5s", "baseEjectionTime": "30s", "maxEjectionPercent": 50,
        "failurePercentageEjection": {"threshold": 30, "enforcementPercentage": 100,
                                      "minimumHosts": 3, "requestVolume": 20},
        "childPolicy": [{"round_robin": {}}]}}]}"#;
    let baseline = (
        lb_testkit::process::thread_count(),
        lb_testkit::process::socket_count(),
    );
    let n = Arc::new(AtomicUsize::new(0));
    let flaky = lb_testkit::services::mount(Server::builder(), "flaky")
        .unary("/test.Echo/Who", move |_: lb_transport::server::Request| {
            if n.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
                return Err(lb_core::Status::unavailable("flaky: failing on purpose"));
            }
            Ok(lb_transport::server::Response::new(b"flaky".to_vec()))
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let good = [ours("o1", "127.0.0.1:0"), ours("o2", "127.0.0.1:0")];
    let targets = vec![
        flaky.local_addr().to_string(),
        good[0].local_addr().to_string(),
        good[1].local_addr().to_string(),
    ];
    let run = Run {
        name: "ejected_for_failing_half",
        service_config: DETECTING,
        warm: &["flaky", "o1", "o2"],
        // A pause between calls keeps the run to a few thousand calls.
        pause: Duration::from_millis(1),
        run_for: INTERVAL * 2 + Duration::from_secs(2),
    };
    let (o, _, start) = run.over(&targets, baseline, move || {
        flaky.shutdown(Duration::ZERO);
        for s in good {
            s.shutdown(Duration::ZERO);
        }
    });
    let end = Instant::now();
    // Every call the flaky backend saw, answered or failed, with its time.
    let mut flaky_calls: Vec<Instant> = o
        .tally
        .ok
        .lock()
        .iter()
        .filter(|(_, id)| id == "flaky")
        .map(|(t, _)| *t)
        .collect();
    flaky_calls.extend(
        o.tally
            .failed
            .lock()
            .iter()
            .filter(|f| f.3.starts_with("flaky"))
            .map(|f| f.0),
    );
    flaky_calls.sort();
    let total_after = |from: Instant| {
        let ok = o.tally.ok.lock().iter().filter(|(t, _)| *t >= from).count();
        ok + o.tally.failed.lock().iter().filter(|f| f.0 >= from).count()
    };
    let ejected_by = start + INTERVAL * 2;
    let after = flaky_calls.iter().filter(|t| **t >= ejected_by).count();
    let share = after as f64 / total_after(ejected_by).max(1) as f64;
    let last = flaky_calls
        .last()
        .map(|t| t.saturating_duration_since(start));
    println!(
        "fault {}: calls={} to_flaky={} last_flaky_call_after={last:?} \
         share_after_two_intervals={:.2}% ({after} of {}) run={:?}",
        o.name,
        o.tally.attempted.load(Ordering::SeqCst),
        flaky_calls.len(),
        share * 100.0,
        total_after(ejected_by),
        end - start,
    );
    assert!(
        share < 0.05,
        "{}: flaky still got {:.1}%",
        o.name,
        share * 100.0
    );
    o
}

/// Callers on a channel with a service config for a while, over backends a
/// scenario set up.
struct Run {
    name: &'static str,
    service_config: &'static str,
    /// The backends that must have answered before the callers start.
    warm: &'static [&'static str],
    pause: Duration,
    run_for: Duration,
}

impl Run {
    /// Runs the callers, closes the channel, `teardown` stops the backends, and
    /// the common invariants are checked. Returns the outcome, the channel's retry
    /// stats and when the callers started.
    fn over(
        &self,
        targets: &[String],
        baseline: (usize, usize),
        teardown: impl FnOnce(),
    ) -> (Outcome, lb_core::channel::RetryStats, Instant) {
        let channel = channel_with(targets, ConnectionConfig::default(), self.service_config);
        warm_up(&channel, self.warm);
        let start = Instant::now();
        let c = callers(&channel, DEADLINE, self.pause);
        thread::sleep(self.run_for);
        let tally = c.finish();
        let stats = channel.retry_stats();
        let (left, client) = close_and_count(channel, baseline, teardown);
        let o = Outcome {
            name: self.name,
            tally,
            left,
            client_threads_after_close: client,
        };
        check(&o);
        (o, stats, start)
    }
}

/// The third backend of [`kill_and_restart`].
enum Third {
    Grpcio(Box<GrpcServer>),
    Ours(Server),
}

impl Third {
    fn target(&self) -> String {
        match self {
            Self::Grpcio(g) => g.target(),
            Self::Ours(s) => s.local_addr().to_string(),
        }
    }
}

/// 2. A grpcio backend and one of ours stop gracefully (GOAWAY) and come back.
fn goaway_and_back(env: &PeerEnv) -> Outcome {
    let baseline = (
        lb_testkit::process::thread_count(),
        lb_testkit::process::socket_count(),
    );
    let mut g0 = grpcio(env, "g0");
    let g1 = grpcio(env, "g1");
    let o2 = ours("ours-2", "127.0.0.1:0");
    let o2_addr = o2.local_addr().to_string();
    let targets = vec![g0.target(), g1.target(), o2_addr.clone()];
    let channel = channel(&targets, ConnectionConfig::default());
    warm_up(&channel, &["g0", "g1", "ours-2"]);
    let c = callers(&channel, DEADLINE, Duration::ZERO);
    thread::sleep(Duration::from_millis(300));
    let before = c.tally.ok_from("g0");
    let stop_at = Instant::now();
    g0.stop_graceful().unwrap();
    thread::sleep(Duration::from_millis(300));
    g0.restart().unwrap();
    c.wait_rejoin("g0", before);
    let back_at = Instant::now();
    let ours_failed_before = c.tally.failed_count();
    let before = c.tally.ok_from("ours-2");
    o2.shutdown(Duration::from_secs(2));
    thread::sleep(Duration::from_millis(300));
    let o2 = ours("ours-2", &o2_addr);
    c.wait_rejoin("ours-2", before);
    thread::sleep(Duration::from_millis(200));
    let ours_failed = c.tally.failed_count() - ours_failed_before;
    let tally = c.finish();
    let (left, client) = close_and_count(channel, baseline, move || {
        drop((g0, g1));
        o2.shutdown(Duration::ZERO);
    });
    let o = Outcome {
        name: "goaway_and_back",
        tally,
        left,
        client_threads_after_close: client,
    };
    check(&o);
    // Our server's GOAWAY fails nothing. When its shutdown starts, gRPC C-core
    // answers CANCELLED (its own trailers, not a reset) to calls it has received but
    // not yet given to a handler: at most the one call each caller has in flight
    // (see channel_e2e.rs).
    assert_eq!(ours_failed, 0, "our server's graceful stop failed calls");
    let failed = o.tally.failed.lock();
    for caller in 0..CALLERS {
        let mine = failed.iter().filter(|f| f.2 == caller).count();
        assert!(mine <= 1, "caller {caller}: {failed:?}");
    }
    assert!(
        failed
            .iter()
            .all(|(at, code, _, message)| *code == Code::Cancelled
                && !message.contains("stream reset")
                && (stop_at..=back_at).contains(at)),
        "{failed:?}"
    );
    drop(failed);
    o
}

/// 3. A scripted server resets some streams (CANCEL before the response, INTERNAL
///    after the response headers); exactly those calls fail, the rest go on.
fn stream_reset(env: &PeerEnv) -> Outcome {
    let baseline = (
        lb_testkit::process::thread_count(),
        lb_testkit::process::socket_count(),
    );
    let mut raw = RstServer::start();
    let o1 = ours("ours-1", "127.0.0.1:0");
    let g2 = grpcio(env, "g2");
    let targets = vec![
        raw.acceptor.addr.to_string(),
        o1.local_addr().to_string(),
        g2.target(),
    ];
    let channel = channel(&targets, ConnectionConfig::default());
    warm_up(&channel, &["raw", "ours-1", "g2"]);
    let resets_before = raw.resets.load(Ordering::SeqCst);
    // Paced, so the resets stay under the client's rapid-reset limit (200/s).
    let c = callers(&channel, DEADLINE, Duration::from_millis(4));
    thread::sleep(Duration::from_millis(1500));
    let tally = c.finish();
    let resets = raw.resets.load(Ordering::SeqCst) - resets_before;
    let ok_raw = tally.ok_from("raw");
    let (left, client) = close_and_count(channel, baseline, move || {
        raw.acceptor.stop();
        o1.shutdown(Duration::ZERO);
        drop(g2);
    });
    let o = Outcome {
        name: "stream_reset",
        tally,
        left,
        client_threads_after_close: client,
    };
    let codes = check(&o);
    assert!(
        resets > 10 && ok_raw > 10,
        "resets={resets} ok_raw={ok_raw}"
    );
    assert_eq!(codes.len(), resets, "every reset call fails, no other");
    let failed = o.tally.failed.lock();
    assert!(
        failed.iter().all(
            |(_, code, _, message)| matches!(code, Code::Cancelled | Code::Internal)
                && message.contains("stream reset by the peer")
        ),
        "{failed:?}"
    );
    drop(failed);
    o
}

/// 4. The TCP connections to one backend are cut mid-run (both sockets shut down
///    by a relay); its calls in flight fail UNAVAILABLE, new calls go to the others,
///    and it rejoins once the relay forwards again.
fn tcp_cut(env: &PeerEnv) -> Outcome {
    let baseline = (
        lb_testkit::process::thread_count(),
        lb_testkit::process::socket_count(),
    );
    let o0 = ours("ours-0", "127.0.0.1:0");
    let relay = Relay::start(o0.local_addr());
    let g1 = grpcio(env, "g1");
    let o2 = ours("ours-2", "127.0.0.1:0");
    let targets = vec![relay.target(), g1.target(), o2.local_addr().to_string()];
    let channel = channel(&targets, ConnectionConfig::default());
    warm_up(&channel, &["ours-0", "g1", "ours-2"]);
    let c = callers(&channel, DEADLINE, Duration::ZERO);
    thread::sleep(Duration::from_millis(400));
    relay.cut();
    let cut_at = Instant::now();
    thread::sleep(Duration::from_millis(600));
    let others_after = c
        .tally
        .ok
        .lock()
        .iter()
        .filter(|(at, who)| *at > cut_at + Duration::from_millis(100) && who != "ours-0")
        .count();
    let relayed_after = c
        .tally
        .ok
        .lock()
        .iter()
        .filter(|(at, who)| *at > cut_at + Duration::from_millis(100) && who == "ours-0")
        .count();
    let before = c.tally.ok_from("ours-0");
    relay.set(FORWARD);
    c.wait_rejoin("ours-0", before);
    thread::sleep(Duration::from_millis(200));
    let tally = c.finish();
    let (left, client) = close_and_count(channel, baseline, move || {
        relay.stop();
        o0.shutdown(Duration::ZERO);
        o2.shutdown(Duration::ZERO);
        drop(g1);
    });
    let o = Outcome {
        name: "tcp_cut",
        tally,
        left,
        client_threads_after_close: client,
    };
    check(&o);
    only_in_flight_unavailable(&o, 1);
    assert_eq!(relayed_after, 0, "calls answered through a cut connection");
    assert!(others_after > 20, "only {others_after} calls after the cut");
    o
}

/// 5. One backend stops answering without closing (a stalled relay); keepalive
///    (10 s, timeout 2 s) detects it, its calls fail UNAVAILABLE, the rest go on.
fn peer_stalls() -> Outcome {
    let baseline = (
        lb_testkit::process::thread_count(),
        lb_testkit::process::socket_count(),
    );
    let o0 = ours("ours-0", "127.0.0.1:0");
    let relay = Relay::start(o0.local_addr());
    let o1 = ours("ours-1", "127.0.0.1:0");
    let o2 = ours("ours-2", "127.0.0.1:0");
    let targets = vec![
        relay.target(),
        o1.local_addr().to_string(),
        o2.local_addr().to_string(),
    ];
    let keepalive = ConnectionConfig {
        keepalive: Some(KeepaliveConfig {
            time: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            permit_without_calls: true,
        }),
        ..ConnectionConfig::default()
    };
    let channel = channel(&targets, keepalive);
    warm_up(&channel, &["ours-0", "ours-1", "ours-2"]);
    // Longer than keepalive's detection, so a stuck call ends UNAVAILABLE, not
    // DEADLINE_EXCEEDED.
    let c = callers(&channel, Duration::from_secs(20), Duration::ZERO);
    thread::sleep(Duration::from_millis(300));
    relay.set(STALL);
    let stalled_at = Instant::now();
    let limit = stalled_at + Duration::from_secs(16);
    let detected = loop {
        if let Some(at) = c.tally.failed.lock().first().map(|f| f.0) {
            break Some(at.saturating_duration_since(stalled_at));
        }
        if Instant::now() > limit {
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    relay.set(FORWARD);
    thread::sleep(Duration::from_millis(300));
    let tally = c.finish();
    let (left, client) = close_and_count(channel, baseline, move || {
        relay.stop();
        o0.shutdown(Duration::ZERO);
        o1.shutdown(Duration::ZERO);
        o2.shutdown(Duration::ZERO);
    });
    let o = Outcome {
        name: "peer_stalls",
        tally,
        left,
        client_threads_after_close: client,
    };
    check(&o);
    let detected = detected.expect("the stalled peer was not detected within 16 s");
    println!("fault peer_stalls: detected after {detected:?}");
    assert!(
        (Duration::from_secs(9)..=Duration::from_secs(15)).contains(&detected),
        "{detected:?}"
    );
    only_in_flight_unavailable(&o, 1);
    o
}

#[test]
fn faults_on_real_sockets() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let started = Instant::now();
    let outcomes = [
        killed_and_restarted(&env),
        goaway_and_back(&env),
        stream_reset(&env),
        tcp_cut(&env),
        peer_stalls(),
        killed_with_retries(&env),
        hedged_past_a_stalling_backend(),
        ejected_for_failing_half(),
    ];
    println!(
        "fault scenarios: {} in {:?}",
        outcomes.len(),
        started.elapsed()
    );
    for o in &outcomes {
        assert!(o.tally.attempted.load(Ordering::SeqCst) > 0, "{}", o.name);
    }
}
