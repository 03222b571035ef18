//! Hostile servers against OUR client transport ([`H2Transport`]), over real
//! loopback sockets.
//!
//! Each case is a scripted raw HTTP/2 server on a fresh listener: our client
//! connects and starts a call, then the server attacks. The call must end with a
//! status within a bounded wait; for connection errors the connection must report
//! `Closed` with an error and the GOAWAY our client wrote (read back from the
//! socket) must carry the right code; for stream errors our RST_STREAM code is
//! checked and the connection must stay usable.
//!
//! Memory is the process's peak RSS (`VmHWM`, which only grows): the cases run one
//! after the other in one test, each printing how far the peak rose during it and
//! how far it is above the baseline taken after a benign warm-up case.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded, unbounded};
use lb_core::transport::{CallRequest, CallResponse, ConnectOptions, ConnectionEvent};
use lb_core::{Address, Connection, ConnectionExt, Status, Transport};
use lb_transport::driver::proxy::ProxyMode;
use lb_transport::driver::{H2Transport, TransportConfig};
use lb_transport::frame::{
    self, Continuation, Data, Frame, FrameReader, GoAway, Headers, Ping, PushPromise, Reason,
    Settings, StreamId, WindowUpdate,
};
use lb_transport::grpc::message;
use lb_transport::hpack::{self, Header};
use lb_transport::proto::ConnectionConfig;

/// The longest any single wait may take.
const WAIT: Duration = Duration::from_secs(10);

/// How long one socket read blocks before a loop looks at its deadline.
const READ_SLICE: Duration = Duration::from_millis(50);

/// How far the peak RSS may rise over the baseline during any one case.
const MEMORY_BOUND_KIB: u64 = 16 << 10;

/// What our client wrote to the scripted server.
#[derive(Debug, Default)]
struct Report {
    goaway: Option<GoAway>,
    resets: Vec<(StreamId, Reason)>,
}

/// The scripted server's side of one connection.
struct Peer {
    socket: TcpStream,
    reader: FrameReader,
    buf: Vec<u8>,
    encoder: hpack::Encoder,
    report: Report,
    eof: bool,
}

impl Peer {
    fn send(&mut self, bytes: &[u8]) {
        // A client that already gave up makes this fail, which is fine.
        let _ = self.socket.write_all(bytes);
    }

    /// The next frame from our client, or `None` on EOF, error or `deadline`.
    fn next_frame(&mut self, deadline: Instant) -> Option<Frame> {
        let mut chunk = [0u8; 64 << 10];
        loop {
            match self.reader.read(&self.buf) {
                Ok(Some((f, n))) => {
                    self.buf.drain(..n);
                    match &f {
                        Frame::GoAway(g) => self.report.goaway = Some(g.clone()),
                        Frame::RstStream(r) => self.report.resets.push((r.stream_id, r.reason)),
                        _ => {}
                    }
                    return Some(f);
                }
                Ok(None) => {}
                Err(e) => panic!("our client sent a bad frame: {e:?}"),
            }
            if self.eof || Instant::now() >= deadline {
                return None;
            }
            match self.socket.read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => self.eof = true,
            }
        }
    }

    /// Reads until our client's request HEADERS on `id` (bounded).
    fn wait_request(&mut self, id: u32) {
        let deadline = Instant::now() + WAIT;
        while let Some(f) = self.next_frame(deadline) {
            if matches!(&f, Frame::Headers(h) if h.stream_id == StreamId::new(id)) {
                return;
            }
        }
        panic!("no request on stream {id}");
    }

    fn block(&mut self, headers: Vec<Header>) -> Vec<u8> {
        let mut block = Vec::new();
        self.encoder.encode(headers, &mut block);
        block
    }

    fn response_head() -> Vec<Header> {
        vec![
            Header::new(":status", "200"),
            Header::new("content-type", "application/grpc"),
        ]
    }

    /// A whole OK response with `body` on `id`.
    fn respond_ok(&mut self, id: u32, body: &[u8]) {
        let id = StreamId::new(id);
        let mut out = Vec::new();
        let head = self.block(Self::response_head());
        Headers::new(id, head, false, true).encode(&mut out);
        let mut msg = Vec::new();
        message::encode(body, &mut msg);
        Data::new(id, msg, false).encode(&mut out);
        let trailers = self.block(vec![Header::new("grpc-status", "0")]);
        Headers::new(id, trailers, true, true).encode(&mut out);
        self.send(&out);
    }
}

/// A one-connection scripted server. It reads the client preface, sends its own
/// SETTINGS (and an ack) if `hello`, runs `attack`, then reads what the client sends
/// until its GOAWAY or EOF (bounded) and reports it.
fn raw_server(
    hello: bool,
    attack: impl FnOnce(&mut Peer) + Send + 'static,
) -> (String, Receiver<Report>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = bounded(1);
    thread::spawn(move || {
        let deadline = Instant::now() + WAIT;
        let socket = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        };
        socket.set_nonblocking(false).unwrap();
        socket.set_nodelay(true).unwrap();
        socket.set_read_timeout(Some(READ_SLICE)).unwrap();
        let mut peer = Peer {
            socket,
            reader: FrameReader::new(),
            buf: Vec::new(),
            encoder: hpack::Encoder::new(),
            report: Report::default(),
            eof: false,
        };
        let mut chunk = [0u8; 4096];
        while peer.buf.len() < frame::PREFACE.len() {
            if Instant::now() >= deadline {
                return;
            }
            match peer.socket.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => peer.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
        assert_eq!(&peer.buf[..frame::PREFACE.len()], frame::PREFACE);
        peer.buf.drain(..frame::PREFACE.len());
        if hello {
            let mut out = Vec::new();
            Settings::default().encode(&mut out);
            Settings::new_ack().encode(&mut out);
            peer.send(&out);
        }
        attack(&mut peer);
        let deadline = Instant::now() + WAIT;
        while peer.report.goaway.is_none() && peer.next_frame(deadline).is_some() {}
        let _ = tx.send(std::mem::take(&mut peer.report));
        // Stay until the client closes (bounded), so it sees no reset first.
        let deadline = Instant::now() + WAIT;
        while peer.next_frame(deadline).is_some() {}
    });
    (addr, rx)
}

fn connect(
    config: TransportConfig,
    addr: &str,
) -> (H2Transport, Arc<dyn Connection>, Receiver<ConnectionEvent>) {
    let transport = H2Transport::new(config).unwrap();
    let (tx, events) = unbounded();
    let opts = ConnectOptions {
        authority: addr.into(),
        connect_deadline: Instant::now() + WAIT,
        user_agent: "hostile-test".into(),
        transport_options: Default::default(),
    };
    let sink = Arc::new(move |e| {
        let _ = tx.send(e);
    });
    let conn = transport.connect(&Address::new(addr), &opts, sink).unwrap();
    (transport, conn, events)
}

/// Starts a call and waits (bounded) for its end.
fn call(conn: &Arc<dyn Connection>, what: &str) -> Result<CallResponse, Status> {
    let (tx, rx) = bounded(1);
    conn.start_call(
        CallRequest::new("/s/m", b"x".to_vec()),
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("{what}: the call did not end within {WAIT:?}"))
        .map_err(|e| e.status)
}

/// Waits (bounded) for the connection's `Closed` event.
fn wait_closed(events: &Receiver<ConnectionEvent>, what: &str) -> Option<Status> {
    let deadline = Instant::now() + WAIT;
    loop {
        match events.recv_deadline(deadline) {
            Ok(ConnectionEvent::Closed(status)) => return status,
            Ok(_) => {}
            Err(_) => panic!("{what}: the connection did not close within {WAIT:?}"),
        }
    }
}

/// What a case must lead to.
enum Expect {
    /// The call succeeds with `ok`.
    Ok,
    /// The connection fails: our GOAWAY carries this code.
    GoAway(Reason),
    /// The stream fails: our RST_STREAM on stream 1 carries this code, and (if set) a
    /// second call on the same connection succeeds.
    StreamReset(Reason, bool),
}

fn transport_config(stream_window: u32) -> TransportConfig {
    TransportConfig {
        connection: ConnectionConfig {
            stream_window,
            ..ConnectionConfig::default()
        },
        proxy: ProxyMode::Disabled,
        ..TransportConfig::default()
    }
}

fn status_text(s: &Status) -> String {
    format!("{:?} {:?}", s.code(), s.message())
}

/// Runs one case; returns its outcome line.
fn run_case(
    name: &str,
    config: TransportConfig,
    hello: bool,
    attack: impl FnOnce(&mut Peer) + Send + 'static,
    expect: &Expect,
) -> String {
    let (addr, reports) = raw_server(hello, attack);
    let (transport, conn, events) = connect(config, &addr);
    let first = call(&conn, name);
    match expect {
        Expect::Ok => {
            let reply = first.unwrap_or_else(|s| panic!("{name}: {s}"));
            assert_eq!(reply.message, b"ok", "{name}");
            assert!(
                !events
                    .try_iter()
                    .any(|e| matches!(e, ConnectionEvent::Closed(_))),
                "{name}: closed"
            );
            drop(conn);
            drop(transport);
            "call OK".to_owned()
        }
        Expect::GoAway(reason) => {
            let status = first.expect_err(name);
            let closed = wait_closed(&events, name);
            let closed = closed.unwrap_or_else(|| panic!("{name}: closed without an error"));
            let report = reports
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("{name}: no report from the scripted server"));
            let goaway = report
                .goaway
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: our client sent no GOAWAY: {report:?}"));
            assert_eq!(goaway.reason, *reason, "{name}: {goaway:?}");
            drop(conn);
            drop(transport);
            format!(
                "call {}, Closed({}), our GOAWAY {} ({:?})",
                status_text(&status),
                status_text(&closed),
                goaway.reason,
                String::from_utf8_lossy(&goaway.debug_data)
            )
        }
        Expect::StreamReset(reason, second) => {
            let status = first.expect_err(name);
            let mut line = format!("call {}", status_text(&status));
            if *second {
                let reply = call(&conn, name)
                    .unwrap_or_else(|s| panic!("{name}: second call on the connection: {s}"));
                assert_eq!(reply.message, b"ok", "{name}");
                line.push_str(", next call on the connection OK");
            }
            assert!(
                !events
                    .try_iter()
                    .any(|e| matches!(e, ConnectionEvent::Closed(_))),
                "{name}: the connection closed on a stream error"
            );
            // Closing our side ends the script.
            drop(conn);
            drop(transport);
            let report = reports
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("{name}: no report from the scripted server"));
            assert!(
                report.resets.contains(&(StreamId::new(1), *reason)),
                "{name}: {report:?}"
            );
            assert!(
                report
                    .goaway
                    .as_ref()
                    .is_none_or(|g| g.reason == Reason::NO_ERROR),
                "{name}: {report:?}"
            );
            line.push_str(&format!(", our RST_STREAM {reason}"));
            line
        }
    }
}

fn respond_ok(p: &mut Peer) {
    p.wait_request(1);
    p.respond_ok(1, b"ok");
}

fn continuation_flood(p: &mut Peer) {
    p.wait_request(1);
    let mut flood = Vec::new();
    Headers::new(StreamId::new(1), vec![], false, false).encode(&mut flood);
    for _ in 0..1000 {
        Continuation {
            stream_id: StreamId::new(1),
            fragment: vec![],
            end_headers: false,
        }
        .encode(&mut flood);
    }
    p.send(&flood);
}

fn continuation_big_block(p: &mut Peer) {
    p.wait_request(1);
    let mut flood = Vec::new();
    Headers::new(StreamId::new(1), vec![b'x'; 16_000], false, false).encode(&mut flood);
    for _ in 0..20 {
        Continuation {
            stream_id: StreamId::new(1),
            fragment: vec![b'x'; 16_000],
            end_headers: false,
        }
        .encode(&mut flood);
    }
    p.send(&flood);
}

/// Sends `block` as stream 1's response headers, then serves stream 3 normally with
/// the same HPACK context.
fn bad_headers_then_serve(p: &mut Peer, block: &[u8]) {
    p.wait_request(1);
    let mut out = Vec::new();
    Headers::encode_block(StreamId::new(1), block, false, 16_384, &mut out);
    p.send(&out);
    p.wait_request(3);
    p.respond_ok(3, b"ok");
}

fn hpack_bomb(p: &mut Peer) {
    let mut head = Peer::response_head();
    head.push(Header::new("x-big", vec![b'a'; 4000]));
    let mut block = p.block(head);
    block.extend(std::iter::repeat_n(0xbe, 4000)); // indexed: dynamic entry 62
    bad_headers_then_serve(p, &block);
}

fn oversized_headers(p: &mut Peer) {
    let mut head = Peer::response_head();
    head.push(Header::new("x-huge", vec![b'h'; 20_000]));
    let block = p.block(head);
    bad_headers_then_serve(p, &block);
}

fn settings_flood(p: &mut Peer) {
    p.wait_request(1);
    let mut flood = Vec::new();
    for _ in 0..5000 {
        Settings::default().encode(&mut flood);
    }
    p.send(&flood);
}

fn ping_flood(p: &mut Peer) {
    p.wait_request(1);
    let mut flood = Vec::new();
    for i in 0..5000u64 {
        Ping::new(i.to_be_bytes()).encode(&mut flood);
    }
    p.send(&flood);
}

fn window_overflow(p: &mut Peer) {
    p.wait_request(1);
    let mut out = Vec::new();
    WindowUpdate::new(StreamId::ZERO, frame::MAX_WINDOW_SIZE).encode(&mut out);
    p.send(&out);
}

/// Against a client whose stream window is 16 KiB: response headers, a full window
/// and one byte more, in one write (so the client reads them before it can give
/// credit back).
fn data_beyond_the_window(p: &mut Peer) {
    p.wait_request(1);
    let id = StreamId::new(1);
    let mut out = Vec::new();
    let head = p.block(Peer::response_head());
    Headers::new(id, head, false, true).encode(&mut out);
    // A valid start of a 100,000-byte message, so the gRPC layer has no complaint.
    let mut payload = vec![0u8; 16_384];
    payload[1..5].copy_from_slice(&100_000u32.to_be_bytes());
    Data::new(id, payload, false).encode(&mut out);
    Data::new(id, vec![0], false).encode(&mut out);
    p.send(&out);
}

fn invalid_first_frame(p: &mut Peer) {
    let mut out = Vec::new();
    Ping::new(*b"notsetng").encode(&mut out);
    p.send(&out);
}

fn push_promise(p: &mut Peer) {
    p.wait_request(1);
    let block = p.block(vec![
        Header::new(":method", "GET"),
        Header::new(":scheme", "http"),
        Header::new(":path", "/pushed"),
        Header::new(":authority", "x"),
    ]);
    let mut out = Vec::new();
    PushPromise {
        stream_id: StreamId::new(1),
        promised_id: StreamId::new(2),
        fragment: block,
        end_headers: true,
        pad_len: None,
    }
    .encode(&mut out);
    p.send(&out);
}

type Attack = fn(&mut Peer);

#[test]
fn hostile_servers_fail_the_call_with_a_status_and_our_goaway_has_the_right_code() {
    // Warm-up: a benign server, which also proves the harness.
    let ok = run_case(
        "warm-up",
        transport_config(1 << 20),
        true,
        respond_ok,
        &Expect::Ok,
    );
    assert_eq!(ok, "call OK");
    let baseline = lb_testkit::process::peak_rss_kib();
    println!("hostile client: baseline peak RSS {baseline} KiB");
    let cases: [(&str, u32, bool, Attack, Expect); 12] = [
        ("benign response", 1 << 20, true, respond_ok, Expect::Ok),
        (
            "continuation flood",
            1 << 20,
            true,
            continuation_flood,
            Expect::GoAway(Reason::ENHANCE_YOUR_CALM),
        ),
        (
            "continuation of a huge header block",
            1 << 20,
            true,
            continuation_big_block,
            Expect::GoAway(Reason::ENHANCE_YOUR_CALM),
        ),
        (
            "hpack bomb in response headers",
            1 << 20,
            true,
            hpack_bomb,
            Expect::StreamReset(Reason::PROTOCOL_ERROR, true),
        ),
        (
            "oversized response headers",
            1 << 20,
            true,
            oversized_headers,
            Expect::StreamReset(Reason::PROTOCOL_ERROR, true),
        ),
        (
            "settings flood",
            1 << 20,
            true,
            settings_flood,
            Expect::GoAway(Reason::ENHANCE_YOUR_CALM),
        ),
        (
            "ping flood",
            1 << 20,
            true,
            ping_flood,
            Expect::GoAway(Reason::ENHANCE_YOUR_CALM),
        ),
        (
            "window overflow",
            1 << 20,
            true,
            window_overflow,
            Expect::GoAway(Reason::FLOW_CONTROL_ERROR),
        ),
        (
            "DATA beyond our stream window",
            16_384,
            true,
            data_beyond_the_window,
            Expect::StreamReset(Reason::FLOW_CONTROL_ERROR, false),
        ),
        (
            "invalid first frame (PING before SETTINGS)",
            1 << 20,
            false,
            invalid_first_frame,
            Expect::GoAway(Reason::PROTOCOL_ERROR),
        ),
        (
            "PUSH_PROMISE",
            1 << 20,
            true,
            push_promise,
            Expect::GoAway(Reason::PROTOCOL_ERROR),
        ),
        (
            "benign response again",
            1 << 20,
            true,
            respond_ok,
            Expect::Ok,
        ),
    ];
    for (name, window, hello, attack, expect) in cases {
        let before = lb_testkit::process::peak_rss_kib();
        let outcome = run_case(name, transport_config(window), hello, attack, &expect);
        let after = lb_testkit::process::peak_rss_kib();
        println!(
            "hostile client: {name} -> {outcome}, peak RSS +{} KiB (peak {} KiB over baseline)",
            after - before,
            after - baseline
        );
        assert!(
            after - baseline < MEMORY_BOUND_KIB,
            "{name}: peak RSS {} KiB over baseline, bound {MEMORY_BOUND_KIB} KiB",
            after - baseline
        );
    }
    println!(
        "hostile client: all cases done, peak RSS {} KiB over baseline (bound {MEMORY_BOUND_KIB} KiB)",
        lb_testkit::process::peak_rss_kib() - baseline
    );
}
