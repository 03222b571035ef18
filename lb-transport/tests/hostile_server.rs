//! Hostile peers against OUR gRPC server, over real loopback sockets.
//!
//! Each attack is a scripted raw HTTP/2 client on a fresh TCP connection: it sends
//! the attack, then reads what the server answers (bounded in time) and checks the
//! GOAWAY or RST_STREAM error code. After every attack a normal gRPC call on a new
//! connection must still succeed.
//!
//! Memory is measured as the process's peak RSS (`VmHWM`), which only ever grows:
//! the attacks run one after the other in one test, and each prints how far the
//! peak rose during it and how far it is above the baseline taken after a warm-up
//! call. The attack that buffers many large unfinished messages runs in a child
//! process of its own so that its peak cannot hide the others'.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use lb_core::Metadata;
use lb_core::transport::{CallError, CallResponse};
use lb_transport::frame::{
    self, Continuation, Data, Frame, FrameReader, GoAway, Headers, Ping, Reason, RstStream,
    Settings, StreamId, WindowUpdate,
};
use lb_transport::grpc::call::{ClientCall, RequestHead, request_headers};
use lb_transport::grpc::compression::Encoding;
use lb_transport::grpc::message;
use lb_transport::hpack::{self, Header};
use lb_transport::proto::{Connection, ConnectionConfig, Event};
use lb_transport::server::Server;

/// How long an attack may take to draw its answer.
const ATTACK_WAIT: Duration = Duration::from_secs(10);

/// How long one socket read blocks before a loop looks at its deadline.
const READ_SLICE: Duration = Duration::from_millis(50);

/// How far the peak RSS may rise over the baseline during any one attack.
const MEMORY_BOUND_KIB: u64 = 16 << 10;

/// The bound for many streams of unfinished large messages: what a server that caps
/// the request bytes it buffers per connection should achieve. With the default cap
/// (4 x the 4 MiB message limit = 16 MiB), growing buffers may hold up to twice
/// that, plus headroom; without a cap the attack reaches 400 MiB.
const STREAMS_MEMORY_BOUND_KIB: u64 = 48 << 10;

/// Set in the child process that runs the many-streams attack alone.
const CHILD_ENV: &str = "LB_HOSTILE_SERVER_CHILD";

/// What the server sent back to an attack.
#[derive(Debug, Default)]
struct Seen {
    goaway: Option<GoAway>,
    resets: Vec<(StreamId, Reason)>,
    /// HEADERS frames with END_STREAM, per stream (responses that finished).
    finished: Vec<StreamId>,
    /// `grpc-status` and `grpc-message` of finished responses that carried them.
    statuses: Vec<(StreamId, String)>,
    eof: bool,
}

impl Seen {
    fn goaway_reason(&self) -> Option<Reason> {
        self.goaway.as_ref().map(|g| g.reason)
    }

    fn describe(&self) -> String {
        match &self.goaway {
            Some(g) => format!(
                "GOAWAY {} ({:?})",
                g.reason,
                String::from_utf8_lossy(&g.debug_data)
            ),
            None => match self.resets.first() {
                Some((id, r)) => format!("RST_STREAM {r} on {id}, connection kept"),
                None => "nothing".into(),
            },
        }
    }
}

/// A scripted raw HTTP/2 client.
struct RawClient {
    socket: TcpStream,
    reader: FrameReader,
    buf: Vec<u8>,
    encoder: hpack::Encoder,
    decoder: hpack::Decoder,
    eof: bool,
}

impl RawClient {
    fn connect(addr: SocketAddr) -> Self {
        let socket = TcpStream::connect(addr).expect("connect");
        socket.set_nodelay(true).unwrap();
        socket.set_read_timeout(Some(READ_SLICE)).unwrap();
        Self {
            socket,
            reader: FrameReader::new(),
            buf: Vec::new(),
            encoder: hpack::Encoder::new(),
            decoder: hpack::Decoder::new(hpack::DEFAULT_TABLE_SIZE),
            eof: false,
        }
    }

    /// Connects and completes the handshake: preface, SETTINGS, the ack of the
    /// server's SETTINGS (once it arrived).
    fn handshake(addr: SocketAddr) -> Self {
        let mut c = Self::connect(addr);
        let mut hello = frame::PREFACE.to_vec();
        Settings::default().encode(&mut hello);
        c.send(&hello);
        let deadline = Instant::now() + ATTACK_WAIT;
        loop {
            match c.next_frame(deadline) {
                Some(Frame::Settings(s)) if !s.ack => break,
                Some(_) => {}
                None => panic!("no SETTINGS from the server"),
            }
        }
        let mut ack = Vec::new();
        Settings::new_ack().encode(&mut ack);
        c.send(&ack);
        c
    }

    /// Writes `bytes`; a server that already closed makes this fail, which is fine.
    fn send(&mut self, bytes: &[u8]) {
        let _ = self.socket.write_all(bytes);
    }

    /// The next frame, or `None` on EOF, a socket error, a bad frame or `deadline`.
    fn next_frame(&mut self, deadline: Instant) -> Option<Frame> {
        let mut chunk = [0u8; 64 << 10];
        loop {
            match self.reader.read(&self.buf) {
                Ok(Some((f, n))) => {
                    self.buf.drain(..n);
                    return Some(f);
                }
                Ok(None) => {}
                Err(e) => panic!("the server sent a bad frame: {e:?}"),
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

    /// Reads until a GOAWAY, EOF or `wait`, recording resets and finished streams.
    fn read_until_goaway(&mut self, wait: Duration) -> Seen {
        let deadline = Instant::now() + wait;
        let mut seen = Seen::default();
        while let Some(f) = self.next_frame(deadline) {
            self.note(&mut seen, f);
            if seen.goaway.is_some() {
                break;
            }
        }
        seen.eof = self.eof;
        seen
    }

    /// Reads until `cond` holds on what was seen, a GOAWAY, EOF or `wait`.
    fn read_until(&mut self, wait: Duration, cond: impl Fn(&Seen) -> bool) -> Seen {
        let deadline = Instant::now() + wait;
        let mut seen = Seen::default();
        while !cond(&seen) && seen.goaway.is_none() {
            let Some(f) = self.next_frame(deadline) else {
                break;
            };
            self.note(&mut seen, f);
        }
        seen.eof = self.eof;
        seen
    }

    fn note(&mut self, seen: &mut Seen, f: Frame) {
        match f {
            Frame::GoAway(g) => seen.goaway = Some(g),
            Frame::RstStream(r) => seen.resets.push((r.stream_id, r.reason)),
            Frame::Headers(h) => {
                // Keep the HPACK context in step (trailers are small; any limit works).
                let mut status = String::new();
                let _ = self.decoder.decode(&h.fragment, 1 << 20, |f| {
                    if f.name.starts_with(b"grpc-") {
                        status.push_str(&String::from_utf8_lossy(&f.value));
                        status.push(' ');
                    }
                });
                if h.end_stream {
                    seen.finished.push(h.stream_id);
                    if !status.is_empty() {
                        seen.statuses.push((h.stream_id, status));
                    }
                }
            }
            _ => {}
        }
    }

    /// A header block for a gRPC request to `path`, with `extra` headers appended.
    fn request_block(&mut self, path: &str, extra: Vec<Header>) -> Vec<u8> {
        let mut headers = request_headers(&RequestHead {
            scheme: "http",
            authority: "localhost".into(),
            path,
            timeout: None,
            user_agent: "hostile".into(),
            metadata: &Metadata::new(),
            encoding: Encoding::Identity,
        });
        headers.extend(extra);
        let mut block = Vec::new();
        self.encoder.encode(headers, &mut block);
        block
    }

    /// A whole unary echo call on `id`: HEADERS and one DATA with END_STREAM.
    fn echo_call(&mut self, id: u32, body: &[u8]) -> Vec<u8> {
        let block = self.request_block("/bench.Echo/Unary", Vec::new());
        let mut out = Vec::new();
        Headers::new(StreamId::new(id), block, false, true).encode(&mut out);
        let mut msg = Vec::new();
        message::encode(body, &mut msg);
        Data::new(StreamId::new(id), msg, true).encode(&mut out);
        out
    }
}

/// One normal unary call on a new connection, with a blocking sans-IO client.
fn normal_call(addr: SocketAddr, body: &[u8]) -> Result<CallResponse, CallError> {
    let mut socket = TcpStream::connect(addr).expect("connect");
    socket.set_nodelay(true).unwrap();
    socket.set_read_timeout(Some(READ_SLICE)).unwrap();
    let mut conn = Connection::client(ConnectionConfig::default(), Instant::now());
    let headers = request_headers(&RequestHead {
        scheme: "http",
        authority: "localhost".into(),
        path: "/bench.Echo/Unary",
        timeout: None,
        user_agent: "hostile-check".into(),
        metadata: &Metadata::new(),
        encoding: Encoding::Identity,
    });
    let id = conn
        .open_stream(headers, false, Instant::now())
        .expect("open");
    let mut msg = Vec::new();
    message::encode(body, &mut msg);
    conn.send_data(id, &msg, true).unwrap();
    let mut call = ClientCall::new(16 << 20);
    let deadline = Instant::now() + ATTACK_WAIT;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let mut out = Vec::new();
        while conn.poll_transmit(Instant::now(), &mut out) > 0 {}
        if !out.is_empty() {
            socket.write_all(&out).expect("write");
        }
        while let Some(event) = conn.poll_event() {
            let result = match event {
                Event::Headers {
                    stream,
                    headers,
                    end_stream,
                } if stream == id => call.on_headers(headers, end_stream),
                Event::Data {
                    stream,
                    data,
                    end_stream,
                } if stream == id => call.on_data(&data, end_stream),
                Event::Reset { stream, cause } if stream == id => Some(Err(call.on_reset(&cause))),
                Event::Closed(err) => panic!("check connection closed: {err:?}"),
                _ => None,
            };
            if let Some(result) = result {
                return result;
            }
        }
        assert!(Instant::now() < deadline, "normal call: no answer in time");
        match socket.read(&mut buf) {
            Ok(0) => conn.handle_eof(),
            Ok(n) => conn.handle_read(&buf[..n], Instant::now()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => conn.handle_io_error(e.to_string()),
        }
    }
}

fn assert_serves(addr: SocketAddr, after: &str) {
    let reply = normal_call(addr, b"still serving")
        .unwrap_or_else(|e| panic!("after {after}: normal call failed: {e:?}"));
    assert_eq!(reply.message, b"still serving", "after {after}");
}

/// Runs `attack`, prints its outcome and peak RSS, checks the memory bound and that
/// the server still serves.
fn run(name: &str, addr: SocketAddr, baseline: u64, attack: impl FnOnce(SocketAddr) -> String) {
    let before = lb_testkit::process::peak_rss_kib();
    let outcome = attack(addr);
    let after = lb_testkit::process::peak_rss_kib();
    println!(
        "hostile server: {name} -> {outcome}, peak RSS +{} KiB (peak {} KiB over baseline)",
        after - before,
        after - baseline
    );
    assert!(
        after - baseline < MEMORY_BOUND_KIB,
        "{name}: peak RSS {} KiB over baseline, bound {MEMORY_BOUND_KIB} KiB",
        after - baseline
    );
    assert_serves(addr, name);
}

fn expect_goaway(name: &str, seen: &Seen, reason: Reason) -> String {
    assert_eq!(seen.goaway_reason(), Some(reason), "{name}: {seen:?}");
    seen.describe()
}

fn continuation_flood(addr: SocketAddr) -> String {
    let mut c = RawClient::handshake(addr);
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
    c.send(&flood);
    let seen = c.read_until_goaway(ATTACK_WAIT);
    expect_goaway("continuation flood", &seen, Reason::ENHANCE_YOUR_CALM)
}

fn continuation_big_block(addr: SocketAddr) -> String {
    let mut c = RawClient::handshake(addr);
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
    c.send(&flood);
    let seen = c.read_until_goaway(ATTACK_WAIT);
    expect_goaway(
        "continuation of a huge block",
        &seen,
        Reason::ENHANCE_YOUR_CALM,
    )
}

/// A stream the server refused at the HTTP/2 or the gRPC level: RST_STREAM
/// PROTOCOL_ERROR, or a finished response. No GOAWAY. Then a call on the same
/// connection (same HPACK contexts) still works.
fn expect_stream_refused_then_served(name: &str, c: &mut RawClient) -> String {
    let one = StreamId::new(1);
    let seen = c.read_until(ATTACK_WAIT, |s| {
        s.resets.iter().any(|(id, _)| *id == one) || s.finished.contains(&one)
    });
    assert_eq!(seen.goaway_reason(), None, "{name}: {seen:?}");
    let reset = seen.resets.iter().find(|(id, _)| *id == one);
    assert!(
        matches!(reset, Some((_, Reason::PROTOCOL_ERROR))) || seen.finished.contains(&one),
        "{name}: stream 1 neither reset PROTOCOL_ERROR nor refused: {seen:?}"
    );
    let call = c.echo_call(3, b"after");
    c.send(&call);
    let three = StreamId::new(3);
    let next = c.read_until(ATTACK_WAIT, |s| s.finished.contains(&three));
    assert!(
        next.finished.contains(&three),
        "{name}: the next call on the same connection got no answer: {next:?}"
    );
    format!("{}, next call on it answered", seen.describe())
}

fn hpack_bomb(addr: SocketAddr) -> String {
    let mut c = RawClient::handshake(addr);
    // One 4,000-byte entry inserted, then referenced 4,000 times (16 MB decoded).
    let mut block = c.request_block(
        "/bench.Echo/Unary",
        vec![Header::new("x-big", vec![b'a'; 4000])],
    );
    block.extend(std::iter::repeat_n(0xbe, 4000)); // indexed: dynamic entry 62
    let mut bytes = Vec::new();
    Headers::encode_block(StreamId::new(1), &block, true, 16_384, &mut bytes);
    c.send(&bytes);
    expect_stream_refused_then_served("hpack bomb", &mut c)
}

fn oversized_header_list(addr: SocketAddr) -> String {
    let mut c = RawClient::handshake(addr);
    // 20 KB of one header: above the 16 KiB list limit, below the block cap.
    let block = c.request_block(
        "/bench.Echo/Unary",
        vec![Header::new("x-huge", vec![b'h'; 20_000])],
    );
    let mut bytes = Vec::new();
    Headers::encode_block(StreamId::new(1), &block, true, 16_384, &mut bytes);
    c.send(&bytes);
    expect_stream_refused_then_served("oversized header list", &mut c)
}

fn settings_flood(addr: SocketAddr) -> String {
    let mut c = RawClient::handshake(addr);
    let mut flood = Vec::new();
    for _ in 0..5000 {
        Settings::default().encode(&mut flood);
    }
    c.send(&flood);
    let seen = c.read_until_goaway(ATTACK_WAIT);
    expect_goaway("settings flood", &seen, Reason::ENHANCE_YOUR_CALM)
}

fn ping_flood(addr: SocketAddr) -> String {
    let mut c = RawClient::handshake(addr);
    let mut flood = Vec::new();
    for i in 0..5000u64 {
        Ping::new(i.to_be_bytes()).encode(&mut flood);
    }
    c.send(&flood);
    let seen = c.read_until_goaway(ATTACK_WAIT);
    expect_goaway("ping flood", &seen, Reason::ENHANCE_YOUR_CALM)
}

fn connection_window_overflow(addr: SocketAddr) -> String {
    let mut c = RawClient::handshake(addr);
    let mut bytes = Vec::new();
    WindowUpdate::new(StreamId::ZERO, frame::MAX_WINDOW_SIZE).encode(&mut bytes);
    c.send(&bytes);
    let seen = c.read_until_goaway(ATTACK_WAIT);
    expect_goaway("window overflow", &seen, Reason::FLOW_CONTROL_ERROR)
}

fn stream_window_overflow(addr: SocketAddr) -> String {
    let mut c = RawClient::handshake(addr);
    let block = c.request_block("/bench.Echo/Unary", Vec::new());
    let mut bytes = Vec::new();
    Headers::new(StreamId::new(1), block, false, true).encode(&mut bytes);
    WindowUpdate::new(StreamId::new(1), frame::MAX_WINDOW_SIZE).encode(&mut bytes);
    c.send(&bytes);
    let one = StreamId::new(1);
    let seen = c.read_until(ATTACK_WAIT, |s| s.resets.iter().any(|(id, _)| *id == one));
    assert_eq!(
        seen.goaway_reason(),
        None,
        "stream window overflow: {seen:?}"
    );
    assert_eq!(
        seen.resets,
        [(one, Reason::FLOW_CONTROL_ERROR)],
        "stream window overflow"
    );
    seen.describe()
}

fn rapid_reset(addr: SocketAddr) -> String {
    let mut c = RawClient::handshake(addr);
    // Batches of 100 open-and-reset streams until the GOAWAY, at most 5,000.
    let mut seen = Seen::default();
    for batch in 0..50u32 {
        let mut bytes = Vec::new();
        for i in 0..100u32 {
            let id = StreamId::new(2 * (batch * 100 + i) + 1);
            let block = c.request_block("/bench.Echo/Unary", Vec::new());
            Headers::new(id, block, false, true).encode(&mut bytes);
            RstStream::new(id, Reason::CANCEL).encode(&mut bytes);
        }
        c.send(&bytes);
        seen = c.read_until_goaway(Duration::from_millis(20));
        if seen.goaway.is_some() || seen.eof {
            break;
        }
    }
    if seen.goaway.is_none() {
        seen = c.read_until_goaway(ATTACK_WAIT);
    }
    expect_goaway("rapid reset", &seen, Reason::ENHANCE_YOUR_CALM)
}

fn invalid_preface(addr: SocketAddr) -> String {
    let mut c = RawClient::connect(addr);
    c.send(b"PRI * HTTP/9.9\r\n\r\nXX\r\n\r\n");
    let seen = c.read_until_goaway(ATTACK_WAIT);
    expect_goaway("invalid preface", &seen, Reason::PROTOCOL_ERROR)
}

fn frame_on_idle_stream(addr: SocketAddr) -> String {
    let mut c = RawClient::handshake(addr);
    let mut bytes = Vec::new();
    RstStream::new(StreamId::new(9), Reason::CANCEL).encode(&mut bytes);
    c.send(&bytes);
    let seen = c.read_until_goaway(ATTACK_WAIT);
    expect_goaway(
        "RST_STREAM on an idle stream",
        &seen,
        Reason::PROTOCOL_ERROR,
    )
}

fn data_on_idle_stream(addr: SocketAddr) -> String {
    let mut c = RawClient::handshake(addr);
    let mut bytes = Vec::new();
    Data::new(StreamId::new(11), b"boo".to_vec(), false).encode(&mut bytes);
    c.send(&bytes);
    let seen = c.read_until_goaway(ATTACK_WAIT);
    expect_goaway("DATA on an idle stream", &seen, Reason::PROTOCOL_ERROR)
}

/// Against a server whose stream window is 16 KiB: a full window then one byte more,
/// in one write (so the server reads both before it can give credit back).
fn data_beyond_the_window(addr: SocketAddr) -> String {
    let mut c = RawClient::handshake(addr);
    let block = c.request_block("/bench.Echo/Unary", Vec::new());
    let mut bytes = Vec::new();
    Headers::new(StreamId::new(1), block, false, true).encode(&mut bytes);
    // A valid start of a 100,000-byte message, so the gRPC layer has no complaint.
    let mut payload = vec![0u8; 16_384];
    payload[1..5].copy_from_slice(&100_000u32.to_be_bytes());
    Data::new(StreamId::new(1), payload, false).encode(&mut bytes);
    Data::new(StreamId::new(1), vec![0], false).encode(&mut bytes);
    c.send(&bytes);
    let one = StreamId::new(1);
    let seen = c.read_until(ATTACK_WAIT, |s| s.resets.iter().any(|(id, _)| *id == one));
    assert_eq!(
        seen.goaway_reason(),
        None,
        "data beyond the window: {seen:?}"
    );
    assert_eq!(
        seen.resets,
        [(one, Reason::FLOW_CONTROL_ERROR)],
        "data beyond the window"
    );
    seen.describe()
}

#[test]
fn attacks_on_the_server_are_refused_with_the_right_code_and_bounded_memory() {
    let server = lb_testkit::services::mount(Server::builder(), "hostile")
        .workers(2)
        .bind("127.0.0.1:0")
        .expect("bind");
    let small_window = lb_testkit::services::mount(Server::builder(), "hostile")
        .workers(2)
        .connection_config(ConnectionConfig {
            stream_window: 16_384,
            ..ConnectionConfig::default()
        })
        .bind("127.0.0.1:0")
        .expect("bind");
    let addr = server.local_addr();
    // Warm-up: both servers serve, the threads and buffers exist.
    assert_serves(addr, "warm-up");
    assert_serves(small_window.local_addr(), "warm-up");
    let baseline = lb_testkit::process::peak_rss_kib();
    println!("hostile server: baseline peak RSS {baseline} KiB");

    run("continuation flood", addr, baseline, continuation_flood);
    run(
        "continuation of a huge header block",
        addr,
        baseline,
        continuation_big_block,
    );
    run("hpack bomb", addr, baseline, hpack_bomb);
    run(
        "oversized header list",
        addr,
        baseline,
        oversized_header_list,
    );
    run("settings flood", addr, baseline, settings_flood);
    run("ping flood", addr, baseline, ping_flood);
    run(
        "connection window overflow",
        addr,
        baseline,
        connection_window_overflow,
    );
    run(
        "stream window overflow",
        addr,
        baseline,
        stream_window_overflow,
    );
    run("rapid reset", addr, baseline, rapid_reset);
    run("invalid preface", addr, baseline, invalid_preface);
    run(
        "RST_STREAM on an idle stream",
        addr,
        baseline,
        frame_on_idle_stream,
    );
    run(
        "DATA on an idle stream",
        addr,
        baseline,
        data_on_idle_stream,
    );
    run(
        "DATA beyond the stream window",
        small_window.local_addr(),
        baseline,
        data_beyond_the_window,
    );
    println!(
        "hostile server: all attacks done, peak RSS {} KiB over baseline (bound {MEMORY_BOUND_KIB} KiB)",
        lb_testkit::process::peak_rss_kib() - baseline
    );
}

/// Streams opened, their window credit tracked, and bytes sent, by the attacker.
struct Flow {
    conn_window: i64,
    stream_windows: Vec<i64>,
    sent: Vec<usize>,
}

/// 100 streams (the server's MAX_CONCURRENT_STREAMS), each announcing a 4 MiB
/// message (the default limit) and sending all of it but the last byte, never
/// finishing. The attacker honours flow control. The server hands out credit as soon
/// as data arrives and buffers each stream's partial message, so without a
/// per-connection cap it would hold up to 100 x 4 MiB for one connection; with one,
/// the streams past the cap are refused. Stops when every stream is refused or all
/// is sent.
fn many_unfinished_large_messages(addr: SocketAddr) -> (String, u64) {
    const STREAMS: usize = 100;
    const MESSAGE: usize = 4 << 20;
    const CHUNK: usize = 16_384;
    let mut c = RawClient::handshake(addr);
    c.socket
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let mut flow = Flow {
        conn_window: 65_535,
        stream_windows: vec![1 << 20; STREAMS],
        sent: vec![0; STREAMS],
    };
    let id_of = |i: usize| StreamId::new(2 * i as u32 + 1);
    let mut bytes = Vec::new();
    for i in 0..STREAMS {
        let block = c.request_block("/bench.Echo/Unary", Vec::new());
        Headers::new(id_of(i), block, false, true).encode(&mut bytes);
    }
    c.send(&bytes);
    let target = message::PREFIX_LEN + MESSAGE - 1;
    let mut prefix = vec![0u8; message::PREFIX_LEN];
    prefix[1..5].copy_from_slice(&(MESSAGE as u32).to_be_bytes());
    let chunk = vec![0x5a_u8; CHUNK];
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    let mut seen = Seen::default();
    let closed = |seen: &Seen, i: usize| {
        seen.finished.contains(&id_of(i)) || seen.resets.iter().any(|(id, _)| *id == id_of(i))
    };
    while (0..STREAMS).any(|i| flow.sent[i] < target && !closed(&seen, i))
        && Instant::now() < deadline
    {
        let mut out = Vec::new();
        for i in 0..STREAMS {
            if closed(&seen, i) {
                continue;
            }
            let room = flow.stream_windows[i].min(flow.conn_window).max(0) as usize;
            let n = (target - flow.sent[i]).min(CHUNK).min(room);
            if n == 0 {
                continue;
            }
            let mut data = Vec::with_capacity(n);
            if flow.sent[i] == 0 {
                data.extend_from_slice(&prefix);
                data.extend_from_slice(&chunk[..n - prefix.len()]);
            } else {
                data.extend_from_slice(&chunk[..n]);
            }
            Data::new(id_of(i), data, false).encode(&mut out);
            flow.sent[i] += n;
            flow.stream_windows[i] -= n as i64;
            flow.conn_window -= n as i64;
            if out.len() >= 256 << 10 {
                break;
            }
        }
        if !out.is_empty() {
            c.send(&out);
        }
        // Take in the credit the server gave back (wait a little only when blocked).
        let wait = if out.is_empty() {
            READ_SLICE
        } else {
            Duration::ZERO
        };
        let read_until = Instant::now() + wait;
        loop {
            let frame = c.next_frame(read_until);
            match frame {
                Some(Frame::WindowUpdate(w)) if w.stream_id.is_zero() => {
                    flow.conn_window += i64::from(w.increment);
                }
                Some(Frame::WindowUpdate(w)) => {
                    let i = (w.stream_id.value() as usize - 1) / 2;
                    if let Some(win) = flow.stream_windows.get_mut(i) {
                        *win += i64::from(w.increment);
                    }
                }
                Some(other) => c.note(&mut seen, other),
                None => break,
            }
            if seen.goaway.is_some() || c.eof {
                break;
            }
        }
        if seen.goaway.is_some() || c.eof {
            break;
        }
    }
    let total: usize = flow.sent.iter().sum();
    // The server holds all of it now, if it ever will.
    std::thread::sleep(Duration::from_millis(300));
    let refused = (0..STREAMS).filter(|&i| closed(&seen, i)).count();
    let outcome = format!(
        "{} MiB of unfinished messages sent on {STREAMS} streams in {:.1} s, {refused} streams refused, server said {} (first status {:?})",
        total >> 20,
        started.elapsed().as_secs_f64(),
        seen.describe(),
        seen.statuses.first()
    );
    drop(c);
    (outcome, total as u64 >> 10)
}

#[test]
fn many_streams_of_unfinished_large_messages_stay_bounded() {
    if std::env::var_os(CHILD_ENV).is_none() {
        // Run alone in a child process so that this attack's peak RSS neither hides
        // nor is hidden by the others'.
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "many_streams_of_unfinished_large_messages_stay_bounded",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "1")
            .output()
            .expect("run the child test");
        let stdout = String::from_utf8_lossy(&out.stdout);
        for line in stdout.lines() {
            if let Some(at) = line.find("hostile server:") {
                println!("{}", &line[at..]);
            }
        }
        assert!(
            out.status.success(),
            "child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let server = lb_testkit::services::mount(Server::builder(), "hostile")
        .workers(2)
        .bind("127.0.0.1:0")
        .expect("bind");
    let addr = server.local_addr();
    assert_serves(addr, "warm-up");
    let baseline = lb_testkit::process::peak_rss_kib();
    let (outcome, sent_kib) = many_unfinished_large_messages(addr);
    let after = lb_testkit::process::peak_rss_kib();
    println!(
        "hostile server: many streams of unfinished 4 MiB messages -> {outcome}, peak RSS +{} KiB ({} KiB sent; bound {STREAMS_MEMORY_BOUND_KIB} KiB)",
        after - baseline,
        sent_kib
    );
    assert_serves(addr, "many streams of unfinished large messages");
    assert!(
        after - baseline < STREAMS_MEMORY_BOUND_KIB,
        "many streams of unfinished large messages: peak RSS +{} KiB over baseline, bound {STREAMS_MEMORY_BOUND_KIB} KiB: the server buffers too much of the streams' partial messages",
        after - baseline
    );
}
