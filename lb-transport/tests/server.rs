//! The gRPC server over real loopback sockets, driven by a small blocking client
//! built here from the sans-IO client connection and the `grpc::call` helpers.
//!
//! Every wait is bounded: socket reads time out, and each wait gives up (failing the
//! test) after [`WAIT`]. Nothing sleeps to wait for logic; handlers that need to
//! block wait on channels the test controls.
//!
//! Tests that look at the process's thread names take [`SERIAL`] exclusively; every
//! other test holds it shared for its whole run, so no other server is alive then.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lb_core::transport::{CallError, CallResponse};
use lb_core::{Code, Metadata, Status};
use lb_testkit::services;
use lb_transport::frame::{Reason, StreamId};
use lb_transport::grpc::call::{ClientCall, RequestHead, request_headers};
use lb_transport::grpc::compression::Encoding;
use lb_transport::grpc::message;
use lb_transport::hpack::Header;
use lb_transport::proto::{Connection, ConnectionConfig, Event, StreamError};
use lb_transport::server::{Request, Response, Server, ServerCall};
use parking_lot::RwLock;

/// The longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(20);

/// How long one socket read blocks before the wait loop looks at its deadline.
const READ_SLICE: Duration = Duration::from_millis(50);

/// Shared by ordinary tests, exclusive for the ones that count server threads.
static SERIAL: RwLock<()> = RwLock::new(());

/// The frame type of GOAWAY (RFC 9113 section 6.8).
const GOAWAY_TYPE: u8 = 0x7;

/// What a stream that is not a gRPC call received.
#[derive(Debug, Default)]
struct RawStream {
    headers: Vec<Vec<Header>>,
    body: Vec<u8>,
    ended: bool,
    reset: Option<String>,
}

/// A blocking HTTP/2 client on one connection, with any number of streams.
struct TestClient {
    socket: TcpStream,
    conn: Connection,
    calls: HashMap<StreamId, ClientCall>,
    done: HashMap<StreamId, Result<CallResponse, CallError>>,
    raw: HashMap<StreamId, RawStream>,
    /// Bytes read but not yet a whole frame.
    partial: Vec<u8>,
    /// When set, a GOAWAY frame and everything after it is held back here.
    hold_goaway: bool,
    held: Vec<u8>,
    goaway_seen: bool,
    closed: bool,
    /// The server closed its side of the socket.
    eof: bool,
    /// Streams whose received data is not given back as flow-control credit (a
    /// client that does not read).
    hold_credit: HashSet<StreamId>,
    /// Bytes written to the socket so far.
    written: usize,
}

impl TestClient {
    fn connect(addr: SocketAddr) -> Self {
        Self::connect_with(addr, ConnectionConfig::default())
    }

    fn connect_with(addr: SocketAddr, config: ConnectionConfig) -> Self {
        let socket = TcpStream::connect(addr).expect("connect");
        socket.set_nodelay(true).unwrap();
        socket.set_read_timeout(Some(READ_SLICE)).unwrap();
        let mut client = Self {
            socket,
            conn: Connection::client(config, Instant::now()),
            calls: HashMap::new(),
            done: HashMap::new(),
            raw: HashMap::new(),
            partial: Vec::new(),
            hold_goaway: false,
            held: Vec::new(),
            goaway_seen: false,
            closed: false,
            eof: false,
            hold_credit: HashSet::new(),
            written: 0,
        };
        client.flush();
        client
    }

    /// Writes everything the connection has to send (within its windows).
    fn flush(&mut self) {
        let mut out = Vec::new();
        while self.conn.poll_transmit(Instant::now(), &mut out) > 0 {}
        if !out.is_empty() {
            self.socket.write_all(&out).expect("write");
            self.written += out.len();
        }
    }

    /// Opens a gRPC stream of any kind (collected as a [`RawStream`]) without
    /// sending a message.
    fn open(&mut self, path: &str, metadata: &Metadata, timeout: Option<Duration>) -> StreamId {
        let headers = request_headers(&RequestHead {
            scheme: "http",
            authority: "localhost".into(),
            path,
            timeout,
            user_agent: "lb-transport-test".into(),
            metadata,
            encoding: Encoding::Identity,
        });
        let id = self
            .conn
            .open_stream(headers, false, Instant::now())
            .expect("open");
        self.raw.insert(id, RawStream::default());
        self.flush();
        id
    }

    /// Queues one message on a stream (ending it if `end`); `false` when the
    /// stream's send queue is full (the server is not taking what it has).
    fn try_send(&mut self, id: StreamId, msg: &[u8], end: bool) -> bool {
        let mut body = Vec::new();
        message::encode(msg, &mut body);
        match self.conn.send_data(id, &body, end) {
            Ok(()) => {
                self.flush();
                true
            }
            Err(StreamError::Blocked(_)) => false,
            Err(e) => panic!("send on {id}: {e}"),
        }
    }

    /// Sends one message, pumping (bounded) while the send queue is full.
    fn send(&mut self, id: StreamId, msg: &[u8], end: bool) {
        let deadline = Instant::now() + WAIT;
        while !self.try_send(id, msg, end) {
            assert!(Instant::now() < deadline, "{id}: no room within {WAIT:?}");
            self.pump();
        }
    }

    /// Ends our side of a stream.
    fn finish(&mut self, id: StreamId) {
        self.conn.send_data(id, &[], true).unwrap();
        self.flush();
    }

    /// The messages a raw stream has received so far.
    fn messages(&self, id: StreamId) -> Vec<Vec<u8>> {
        self.raw.get(&id).map(decode).unwrap_or_default()
    }

    /// Starts a unary call; the result is collected by [`TestClient::wait`].
    fn start(
        &mut self,
        path: &str,
        metadata: &Metadata,
        timeout: Option<Duration>,
        message: &[u8],
    ) -> StreamId {
        let headers = request_headers(&RequestHead {
            scheme: "http",
            authority: "localhost".into(),
            path,
            timeout,
            user_agent: "lb-transport-test".into(),
            metadata,
            encoding: Encoding::Identity,
        });
        let id = self
            .conn
            .open_stream(headers, false, Instant::now())
            .expect("open");
        let mut body = Vec::new();
        message::encode(message, &mut body);
        self.conn.send_data(id, &body, true).unwrap();
        self.calls.insert(id, ClientCall::new(16 << 20));
        self.flush();
        id
    }

    /// Starts a stream with arbitrary headers (and an optional body).
    fn start_raw(&mut self, headers: Vec<Header>, body: Option<&[u8]>) -> StreamId {
        let id = self
            .conn
            .open_stream(headers, body.is_none(), Instant::now())
            .expect("open");
        if let Some(body) = body {
            self.conn.send_data(id, body, true).unwrap();
        }
        self.raw.insert(id, RawStream::default());
        self.flush();
        id
    }

    /// Starts a call whose message (of `declared` bytes) arrives only partly: the
    /// 5-byte prefix and `first` bytes of payload, without ending the stream.
    fn start_partial(&mut self, path: &str, declared: usize, first: usize) -> StreamId {
        let headers = request_headers(&RequestHead {
            scheme: "http",
            authority: "localhost".into(),
            path,
            timeout: None,
            user_agent: "lb-transport-test".into(),
            metadata: &Metadata::new(),
            encoding: Encoding::Identity,
        });
        let id = self
            .conn
            .open_stream(headers, false, Instant::now())
            .expect("open");
        let mut body = vec![0];
        body.extend_from_slice(&(declared as u32).to_be_bytes());
        body.resize(5 + first, b'p');
        self.conn.send_data(id, &body, false).unwrap();
        self.calls.insert(id, ClientCall::new(16 << 20));
        self.flush();
        id
    }

    /// Sends the rest of a partial call's payload and ends its stream.
    fn finish_partial(&mut self, id: StreamId, rest: usize) {
        self.conn.send_data(id, &vec![b'p'; rest], true).unwrap();
        self.flush();
    }

    fn call(
        &mut self,
        path: &str,
        metadata: &Metadata,
        message: &[u8],
    ) -> Result<CallResponse, CallError> {
        let id = self.start(path, metadata, None, message);
        self.wait(id)
    }

    /// Pumps the connection until `id`'s result is in.
    fn wait(&mut self, id: StreamId) -> Result<CallResponse, CallError> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(result) = self.done.remove(&id) {
                return result;
            }
            assert!(
                Instant::now() < deadline,
                "no result for {id} within {WAIT:?}"
            );
            assert!(
                !self.closed || self.calls.contains_key(&id),
                "connection closed"
            );
            self.pump();
        }
    }

    /// Pumps the connection until the raw stream `id` ended or was reset.
    fn wait_raw(&mut self, id: StreamId) -> RawStream {
        let deadline = Instant::now() + WAIT;
        loop {
            let finished = self
                .raw
                .get(&id)
                .is_some_and(|s| s.ended || s.reset.is_some());
            if finished {
                return self.raw.remove(&id).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "raw stream {id} not done within {WAIT:?}"
            );
            self.pump();
        }
    }

    /// Pumps until `cond` holds.
    fn pump_until(&mut self, what: &str, mut cond: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond(self) {
            assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
            self.pump();
        }
    }

    /// One round: read what arrives within [`READ_SLICE`], feed whole frames to the
    /// connection, handle its events, and write what it has to send.
    fn pump(&mut self) {
        let mut buf = [0u8; 64 << 10];
        match self.socket.read(&mut buf) {
            Ok(0) => {
                self.conn.handle_eof();
                self.closed = true;
                self.eof = true;
            }
            Ok(n) => {
                self.partial.extend_from_slice(&buf[..n]);
                self.feed_frames();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                self.conn.handle_io_error(e.to_string());
                self.closed = true;
            }
        }
        self.handle_events();
        if !self.closed {
            self.flush();
        }
    }

    /// Feeds complete frames, holding back a GOAWAY (and what follows) if asked.
    fn feed_frames(&mut self) {
        let now = Instant::now();
        loop {
            if self.partial.len() < 9 {
                return;
            }
            let len = usize::from(self.partial[0]) << 16
                | usize::from(self.partial[1]) << 8
                | usize::from(self.partial[2]);
            if self.partial.len() < 9 + len {
                return;
            }
            let frame: Vec<u8> = self.partial.drain(..9 + len).collect();
            if !self.held.is_empty() || (self.hold_goaway && frame[3] == GOAWAY_TYPE) {
                self.held.extend_from_slice(&frame);
            } else {
                self.conn.handle_read(&frame, now);
            }
        }
    }

    /// Feeds the held-back frames and stops holding.
    fn release_held(&mut self) {
        self.hold_goaway = false;
        let held = std::mem::take(&mut self.held);
        self.conn.handle_read(&held, Instant::now());
        self.handle_events();
        self.flush();
    }

    fn held_goaway(&self) -> bool {
        self.held.get(3) == Some(&GOAWAY_TYPE)
    }

    fn handle_events(&mut self) {
        while let Some(event) = self.conn.poll_event() {
            match event {
                Event::Headers {
                    stream,
                    headers,
                    end_stream,
                } => {
                    if let Some(raw) = self.raw.get_mut(&stream) {
                        raw.headers.push(headers);
                        raw.ended |= end_stream;
                    } else if let Some(call) = self.calls.get_mut(&stream) {
                        if let Some(result) = call.on_headers(headers, end_stream) {
                            self.calls.remove(&stream);
                            self.done.insert(stream, result);
                        }
                    }
                }
                Event::Data {
                    stream,
                    data,
                    end_stream,
                } => {
                    // This client reads everything at once, unless told not to.
                    if !self.hold_credit.contains(&stream) {
                        self.conn.release_capacity(stream, data.len());
                    }
                    if let Some(raw) = self.raw.get_mut(&stream) {
                        raw.body.extend_from_slice(&data);
                        raw.ended |= end_stream;
                    } else if let Some(call) = self.calls.get_mut(&stream) {
                        if let Some(result) = call.on_data(&data, end_stream) {
                            self.calls.remove(&stream);
                            self.done.insert(stream, result);
                        }
                    }
                }
                Event::Reset { stream, cause } => {
                    if let Some(raw) = self.raw.get_mut(&stream) {
                        raw.reset = Some(format!("{cause:?}"));
                    } else if let Some(mut call) = self.calls.remove(&stream) {
                        self.done.insert(stream, Err(call.on_reset(&cause)));
                    }
                }
                Event::GoAway { .. } => self.goaway_seen = true,
                Event::Closed(_) => self.closed = true,
                Event::Connected | Event::SendReady { .. } => {}
            }
        }
    }
}

fn echo_server() -> Server {
    services::mount(Server::builder(), "lb-transport")
        .workers(4)
        .bind("127.0.0.1:0")
        .expect("bind")
}

/// The messages in a raw stream's body.
fn decode(raw: &RawStream) -> Vec<Vec<u8>> {
    let mut decoder = message::MessageDecoder::new(usize::MAX);
    decoder.push(&raw.body).expect("valid messages");
    std::iter::from_fn(|| decoder.next_message().unwrap()).collect()
}

/// The `grpc-status` and `grpc-message` of a raw stream's last header block.
fn status_of(raw: &RawStream) -> Option<(String, String)> {
    let last = raw.headers.last()?;
    let find = |name: &str| {
        last.iter()
            .find(|h| h.name == name.as_bytes())
            .map(|h| String::from_utf8_lossy(&h.value).into_owned())
    };
    Some((
        find("grpc-status")?,
        lb_transport::grpc::percent::decode(find("grpc-message").unwrap_or_default().as_bytes()),
    ))
}

/// The value of `name` in a raw stream's header block `index` (0: the response
/// headers; the last: the trailers).
fn header_value(raw: &RawStream, index: usize, name: &str) -> Option<String> {
    raw.headers
        .get(index)?
        .iter()
        .find(|h| h.name == name.as_bytes())
        .map(|h| String::from_utf8_lossy(&h.value).into_owned())
}

fn md(pairs: &[(&str, &str)]) -> Metadata {
    let mut md = Metadata::new();
    for (k, v) in pairs {
        md.insert(k, v).unwrap();
    }
    md
}

/// Bytes that are not all the same, so a misplaced chunk shows.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// The names of this process's threads that a server started.
fn server_threads() -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let Ok(entry) = entry else { continue };
        // A thread that exits while we look is simply gone.
        let Ok(name) = std::fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        let name = name.trim().to_owned();
        if name.starts_with("lb-server") {
            names.push(name);
        }
    }
    names
}

/// Waits (bounded) until `cond` holds for the server threads' names; returns the
/// names last seen. A thread names itself once it runs, and a joined thread may
/// linger in /proc for a moment, so a single look can be early.
fn wait_server_threads(cond: impl Fn(&[String]) -> bool) -> Vec<String> {
    for _ in 0..200 {
        let names = server_threads();
        if cond(&names) {
            return names;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    server_threads()
}

fn wait_no_server_threads() -> Vec<String> {
    wait_server_threads(<[String]>::is_empty)
}

#[test]
fn unary_echo_of_16_bytes_1_mib_and_4_mib() {
    let _serial = SERIAL.read();
    let server = echo_server();
    let mut client = TestClient::connect(server.local_addr());
    for len in [16, 1 << 20, 4 << 20] {
        let sent = payload(len);
        let reply = client
            .call("/bench.Echo/Unary", &Metadata::new(), &sent)
            .unwrap_or_else(|e| panic!("{len} bytes: {e:?}"));
        assert_eq!(reply.message.len(), len);
        assert!(reply.message == sent, "{len} bytes came back changed");
    }
}

#[test]
fn metadata_round_trips_including_a_binary_key() {
    let _serial = SERIAL.read();
    // A handler registered after the services replaces the built-in one.
    let server = services::mount(Server::builder(), "srv-7")
        .unary("/test.Echo/Status", |_| {
            Ok(Response::new(b"custom".to_vec()))
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let mut client = TestClient::connect(server.local_addr());
    let mut sent = md(&[("x-ascii", "hello"), ("not-echoed", "1")]);
    sent.insert_bin("x-trace-bin", &[0, 1, 0xff]).unwrap();
    let reply = client.call("/test.Echo/Echo", &sent, b"meta").unwrap();
    assert_eq!(reply.message, b"meta");
    for (name, got) in [("headers", &reply.headers), ("trailers", &reply.trailers)] {
        assert_eq!(got.get("x-ascii"), Some("hello"), "{name}: {got:?}");
        assert_eq!(
            got.get_bin("x-trace-bin"),
            Some(&[0u8, 1, 0xff][..]),
            "{name}"
        );
        assert_eq!(got.get("not-echoed"), None, "{name}");
    }
    assert_eq!(reply.headers.get("x-server-id"), Some("srv-7"));
    let who = client
        .call("/test.Echo/Who", &Metadata::new(), b"")
        .unwrap();
    assert_eq!(who.message, b"srv-7");
    let custom = client
        .call("/test.Echo/Status", &Metadata::new(), b"")
        .unwrap();
    assert_eq!(custom.message, b"custom");
}

#[test]
fn an_error_status_message_that_needs_percent_encoding_comes_back_exactly() {
    let _serial = SERIAL.read();
    let server = echo_server();
    let mut client = TestClient::connect(server.local_addr());
    let text = "permission é 100%";
    let mut sent = md(&[("x-status-code", "7")]);
    sent.insert_bin("x-status-message-bin", text.as_bytes())
        .unwrap();
    let err = client.call("/test.Echo/Status", &sent, b"").unwrap_err();
    assert_eq!(err.status.code(), Code::PermissionDenied);
    assert_eq!(err.status.message(), text);
    assert!(!err.unprocessed);

    // The same message read from the body, and from ASCII metadata.
    let sent = md(&[("x-status-code", "14")]);
    let err = client
        .call("/test.Echo/Status", &sent, text.as_bytes())
        .unwrap_err();
    assert_eq!(
        (err.status.code(), err.status.message()),
        (Code::Unavailable, text)
    );
    let sent = md(&[("x-status-code", "5"), ("x-status-message", "50% gone")]);
    let err = client.call("/test.Echo/Status", &sent, b"").unwrap_err();
    assert_eq!(
        (err.status.code(), err.status.message()),
        (Code::NotFound, "50% gone")
    );
}

#[test]
fn a_grpc_timeout_shorter_than_the_handler_gives_deadline_exceeded() {
    let _serial = SERIAL.read();
    let server = echo_server();
    let mut client = TestClient::connect(server.local_addr());
    let started = Instant::now();
    let id = client.start(
        "/test.Echo/Sleep",
        &Metadata::new(),
        Some(Duration::from_millis(200)),
        b"10000",
    );
    let err = client.wait(id).unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.status.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        elapsed >= Duration::from_millis(200),
        "answered early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "answered late: {elapsed:?}"
    );
    // The connection and the server carry on.
    let ok = client
        .call("/bench.Echo/Unary", &Metadata::new(), b"after")
        .unwrap();
    assert_eq!(ok.message, b"after");
    // A deadline that the handler beats does nothing.
    let id = client.start(
        "/test.Echo/Sleep",
        &Metadata::new(),
        Some(Duration::from_secs(10)),
        b"1",
    );
    assert_eq!(client.wait(id).unwrap().message, b"1");
}

#[test]
fn an_unknown_method_is_unimplemented() {
    let _serial = SERIAL.read();
    let server = echo_server();
    let mut client = TestClient::connect(server.local_addr());
    let err = client
        .call("/no.Such/Method", &Metadata::new(), b"x")
        .unwrap_err();
    assert_eq!(err.status.code(), Code::Unimplemented);
    assert!(err.status.message().contains("/no.Such/Method"), "{err:?}");
    assert!(
        client
            .call("/bench.Echo/Unary", &Metadata::new(), b"y")
            .is_ok()
    );
}

#[test]
fn an_oversized_request_is_resource_exhausted_and_the_connection_lives_on() {
    let _serial = SERIAL.read();
    let server = services::mount(Server::builder(), "lb-transport")
        .max_message_size(1024)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut client = TestClient::connect(server.local_addr());
    // Large enough that the client is still sending when the answer comes.
    let err = client
        .call("/bench.Echo/Unary", &Metadata::new(), &payload(3 << 20))
        .unwrap_err();
    assert_eq!(err.status.code(), Code::ResourceExhausted, "{err:?}");
    let err = client
        .call("/bench.Echo/Unary", &Metadata::new(), &payload(1025))
        .unwrap_err();
    assert_eq!(err.status.code(), Code::ResourceExhausted, "{err:?}");
    let ok = client
        .call("/bench.Echo/Unary", &Metadata::new(), &payload(1024))
        .unwrap();
    assert_eq!(ok.message, payload(1024));
}

#[test]
fn zero_or_two_request_messages_break_unary_cardinality() {
    let _serial = SERIAL.read();
    let server = echo_server();
    let mut client = TestClient::connect(server.local_addr());
    let head = |path: &str| {
        request_headers(&RequestHead {
            scheme: "http",
            authority: "localhost".into(),
            path,
            timeout: None,
            user_agent: "t".into(),
            metadata: &Metadata::new(),
            encoding: Encoding::Identity,
        })
    };
    let grpc_status = |raw: &RawStream| {
        raw.headers
            .last()
            .and_then(|h| h.iter().find(|h| h.name == b"grpc-status"[..]))
            .map(|h| String::from_utf8_lossy(&h.value).into_owned())
    };
    let none = client.start_raw(head("/bench.Echo/Unary"), None);
    let raw = client.wait_raw(none);
    assert_eq!(grpc_status(&raw).as_deref(), Some("12"), "{raw:?}");

    let mut two = Vec::new();
    message::encode(b"a", &mut two);
    message::encode(b"b", &mut two);
    let id = client.start_raw(head("/bench.Echo/Unary"), Some(&two));
    let raw = client.wait_raw(id);
    assert_eq!(grpc_status(&raw).as_deref(), Some("12"), "{raw:?}");

    // Half a message, then the end: INTERNAL.
    let id = client.start_raw(head("/bench.Echo/Unary"), Some(&[0, 0, 0, 0, 9, 1]));
    let raw = client.wait_raw(id);
    assert_eq!(grpc_status(&raw).as_deref(), Some("13"), "{raw:?}");
}

#[test]
fn plain_http_get_gets_text_and_other_requests_get_an_http_status() {
    let _serial = SERIAL.read();
    let server = echo_server();
    let mut client = TestClient::connect(server.local_addr());
    let get = vec![
        Header::new(":method", "GET"),
        Header::new(":scheme", "http"),
        Header::new(":path", "/anything"),
        Header::new(":authority", "localhost"),
    ];
    let id = client.start_raw(get, None);
    let raw = client.wait_raw(id);
    let head = &raw.headers[0];
    let find = |name: &str| {
        head.iter()
            .find(|h| h.name == name.as_bytes())
            .map(|h| String::from_utf8_lossy(&h.value).into_owned())
    };
    assert_eq!(find(":status").as_deref(), Some("200"));
    assert!(find("content-type").unwrap().starts_with("text/plain"));
    assert!(!raw.body.is_empty() && raw.ended, "{raw:?}");

    let post = vec![
        Header::new(":method", "POST"),
        Header::new(":scheme", "http"),
        Header::new(":path", "/form"),
        Header::new(":authority", "localhost"),
        Header::new("content-type", "text/plain"),
    ];
    let id = client.start_raw(post, Some(b"hello"));
    let raw = client.wait_raw(id);
    let status = raw.headers[0]
        .iter()
        .find(|h| h.name == b":status"[..])
        .unwrap();
    assert_eq!(status.value, &b"415"[..]);
}

#[test]
fn a_panicking_handler_gives_internal_and_the_worker_survives() {
    let _serial = SERIAL.read();
    let server = Server::builder()
        .unary("/t.T/Panic", |_| panic!("handler bug"))
        .unary("/t.T/Ok", |req| Ok(Response::new(req.message)))
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut client = TestClient::connect(server.local_addr());
    for round in 0..3 {
        let err = client
            .call("/t.T/Panic", &Metadata::new(), b"x")
            .unwrap_err();
        assert_eq!(err.status.code(), Code::Internal, "round {round}");
        assert!(err.status.message().contains("handler bug"), "{err:?}");
        let ok = client.call("/t.T/Ok", &Metadata::new(), b"fine").unwrap();
        assert_eq!(ok.message, b"fine", "round {round}");
    }
}

/// A handler that reports when it starts and then waits for the test to release it
/// (or for the call to be cancelled).
struct Gate {
    entered: crossbeam_channel::Receiver<()>,
    release: crossbeam_channel::Sender<()>,
    cancelled: crossbeam_channel::Receiver<()>,
    runs: Arc<AtomicUsize>,
}

fn gated_server(grace_workers: usize) -> (Server, Gate) {
    let (entered_tx, entered) = crossbeam_channel::unbounded();
    let (release, release_rx) = crossbeam_channel::unbounded::<()>();
    let (cancelled_tx, cancelled) = crossbeam_channel::unbounded();
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&runs);
    let server = services::mount(Server::builder(), "lb-transport")
        .unary("/t.Gate/Wait", move |req: Request| {
            counter.fetch_add(1, Ordering::SeqCst);
            entered_tx.send(()).unwrap();
            let until = Instant::now() + WAIT;
            loop {
                if release_rx.try_recv().is_ok() {
                    return Ok(Response::new(req.message));
                }
                // Wait in short slices for either the release or a cancellation.
                let slice = (Instant::now() + Duration::from_millis(20)).min(until);
                if req.wait_cancelled(slice) {
                    cancelled_tx.send(()).unwrap();
                    return Ok(Response::new(req.message));
                }
                if Instant::now() >= until {
                    return Err(Status::internal("gate never opened"));
                }
            }
        })
        .workers(grace_workers)
        .bind("127.0.0.1:0")
        .unwrap();
    (
        server,
        Gate {
            entered,
            release,
            cancelled,
            runs,
        },
    )
}

#[test]
fn a_client_reset_cancels_the_handler_and_drops_its_result() {
    let _serial = SERIAL.read();
    let (server, gate) = gated_server(2);
    let mut client = TestClient::connect(server.local_addr());
    let id = client.start("/t.Gate/Wait", &Metadata::new(), None, b"1");
    gate.entered.recv_timeout(WAIT).expect("handler started");
    client.calls.remove(&id);
    client.conn.reset_stream(id, Reason::CANCEL);
    client.flush();
    gate.cancelled
        .recv_timeout(WAIT)
        .expect("handler saw the cancellation");
    // The late result goes nowhere; the connection serves the next call.
    let ok = client
        .call("/bench.Echo/Unary", &Metadata::new(), b"next")
        .unwrap();
    assert_eq!(ok.message, b"next");
}

#[test]
fn a_client_that_vanishes_mid_call_cancels_the_handler() {
    let _serial = SERIAL.read();
    let (server, gate) = gated_server(2);
    let mut client = TestClient::connect(server.local_addr());
    client.start("/t.Gate/Wait", &Metadata::new(), None, b"1");
    gate.entered.recv_timeout(WAIT).expect("handler started");
    drop(client);
    gate.cancelled
        .recv_timeout(WAIT)
        .expect("handler saw the cancellation");
    let mut other = TestClient::connect(server.local_addr());
    let ok = other
        .call("/bench.Echo/Unary", &Metadata::new(), b"still here")
        .unwrap();
    assert_eq!(ok.message, b"still here");
}

#[test]
fn a_peer_that_sends_garbage_is_closed_and_others_are_served() {
    let _serial = SERIAL.read();
    let server = echo_server();
    let mut bad = TcpStream::connect(server.local_addr()).unwrap();
    bad.set_read_timeout(Some(READ_SLICE)).unwrap();
    bad.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // The server answers with its SETTINGS and a GOAWAY, then closes.
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        assert!(Instant::now() < deadline, "connection not closed: {got:?}");
        match bad.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    let mut frames = got.as_slice();
    let mut types = Vec::new();
    while frames.len() >= 9 {
        let len =
            usize::from(frames[0]) << 16 | usize::from(frames[1]) << 8 | usize::from(frames[2]);
        types.push(frames[3]);
        frames = &frames[(9 + len).min(frames.len())..];
    }
    assert!(types.contains(&GOAWAY_TYPE), "frame types {types:?}");
    let mut good = TestClient::connect(server.local_addr());
    assert!(
        good.call("/bench.Echo/Unary", &Metadata::new(), b"ok")
            .is_ok()
    );
}

#[test]
fn many_concurrent_calls_from_several_threads_all_complete() {
    let _serial = SERIAL.read();
    let server = services::mount(Server::builder(), "lb-transport")
        .workers(2)
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    const THREADS: usize = 8;
    const ROUNDS: usize = 10;
    const IN_FLIGHT: usize = 8;
    let completed = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let completed = &completed;
            s.spawn(move || {
                let mut client = TestClient::connect(addr);
                for round in 0..ROUNDS {
                    let sent: Vec<(StreamId, Vec<u8>)> = (0..IN_FLIGHT)
                        .map(|i| {
                            let msg = format!("t{t} r{round} c{i}")
                                .repeat(1 + i * 100)
                                .into_bytes();
                            let path = if i % 2 == 0 {
                                "/bench.Echo/Unary"
                            } else {
                                "/test.Echo/Echo"
                            };
                            (client.start(path, &Metadata::new(), None, &msg), msg)
                        })
                        .collect();
                    for (id, msg) in sent {
                        let reply = client.wait(id).unwrap();
                        assert!(
                            reply.message == msg,
                            "thread {t} round {round}: wrong reply"
                        );
                        completed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(completed.into_inner(), THREADS * ROUNDS * IN_FLIGHT);
}

#[test]
fn a_hundred_idle_connections_stay_open_and_served() {
    let _serial = SERIAL.read();
    let server = echo_server();
    let mut clients: Vec<TestClient> = (0..100)
        .map(|_| TestClient::connect(server.local_addr()))
        .collect();
    for (i, client) in clients.iter_mut().enumerate() {
        let msg = format!("first {i}");
        let reply = client
            .call("/bench.Echo/Unary", &Metadata::new(), msg.as_bytes())
            .unwrap();
        assert_eq!(reply.message, msg.as_bytes());
    }
    // Every connection is still open and answers again, in reverse order.
    for (i, client) in clients.iter_mut().enumerate().rev() {
        assert!(
            !client.closed && !client.goaway_seen,
            "connection {i} ended"
        );
        let msg = format!("second {i}");
        let reply = client
            .call("/bench.Echo/Unary", &Metadata::new(), msg.as_bytes())
            .unwrap();
        assert_eq!(reply.message, msg.as_bytes());
    }
}

#[test]
fn graceful_shutdown_finishes_calls_in_flight_and_ends_every_thread() {
    let _serial = SERIAL.write();
    assert_eq!(
        wait_no_server_threads(),
        Vec::<String>::new(),
        "threads before"
    );
    let (server, gate) = gated_server(2);
    let mut names = wait_server_threads(|names| names.len() == 3);
    names.sort();
    // Thread names are cut to 15 bytes in /proc.
    assert_eq!(
        names,
        ["lb-server-io", "lb-server-worke", "lb-server-worke"]
    );
    let mut client = TestClient::connect(server.local_addr());
    let in_flight = client.start("/t.Gate/Wait", &Metadata::new(), None, b"in flight");
    gate.entered.recv_timeout(WAIT).expect("handler started");

    client.hold_goaway = true;
    let (stopped_tx, stopped) = crossbeam_channel::bounded(1);
    let stopper = std::thread::spawn(move || {
        server.shutdown(Duration::from_secs(10));
        stopped_tx.send(()).unwrap();
    });
    client.pump_until("GOAWAY", TestClient::held_goaway);
    // A stream the client opens before it has read the GOAWAY: the first GOAWAY names
    // the largest stream id and the final one follows a PING, so it is still served.
    let late = client.start("/t.Gate/Wait", &Metadata::new(), None, b"late");
    client.release_held();
    assert!(client.goaway_seen);
    gate.entered
        .recv_timeout(WAIT)
        .expect("the late call started");
    gate.release.send(()).unwrap();
    gate.release.send(()).unwrap();

    let done = client
        .wait(in_flight)
        .expect("the call in flight completes");
    assert_eq!(done.message, b"in flight");
    let late = client
        .wait(late)
        .expect("the call sent before GOAWAY completes");
    assert_eq!(late.message, b"late");
    assert_eq!(gate.runs.load(Ordering::SeqCst), 2, "both calls ran");
    assert!(
        client
            .conn
            .open_stream(Vec::new(), true, Instant::now())
            .is_err()
    );

    drop(client);
    stopped.recv_timeout(WAIT).expect("shutdown returns");
    stopper.join().unwrap();
    assert_eq!(
        wait_no_server_threads(),
        Vec::<String>::new(),
        "threads after"
    );
}

#[test]
fn shutdown_ends_a_connection_whose_last_call_was_answered_early() {
    let _serial = SERIAL.read();
    let server = echo_server();
    let mut client = TestClient::connect(server.local_addr());
    // A request whose body never ends, with a short deadline: the server answers
    // DEADLINE_EXCEEDED and resets the stream while it is draining.
    let headers = request_headers(&RequestHead {
        scheme: "http",
        authority: "localhost".into(),
        path: "/bench.Echo/Unary",
        timeout: Some(Duration::from_millis(300)),
        user_agent: "t".into(),
        metadata: &Metadata::new(),
        encoding: Encoding::Identity,
    });
    let id = client
        .conn
        .open_stream(headers, false, Instant::now())
        .unwrap();
    client
        .conn
        .send_data(id, &[0, 0, 0, 0, 9, 1, 2], false)
        .unwrap();
    client.raw.insert(id, RawStream::default());
    client.flush();
    client.pump_until("the request reached the server", |c| c.conn.is_connected());

    let (stopped_tx, stopped) = crossbeam_channel::bounded(1);
    let started = Instant::now();
    let stopper = std::thread::spawn(move || {
        server.shutdown(Duration::from_secs(30));
        stopped_tx.send(()).unwrap();
    });
    let raw = client.wait_raw(id);
    let status = raw.headers[0].iter().find(|h| h.name == b"grpc-status"[..]);
    assert_eq!(status.map(|h| h.value.as_ref()), Some(&b"4"[..]), "{raw:?}");
    // The client keeps its socket open: the server must end the connection itself.
    client.pump_until("the server closes", |c| c.eof);
    drop(client);
    stopped.recv_timeout(WAIT).expect("shutdown returns");
    stopper.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown waited for its grace period: {:?}",
        started.elapsed()
    );
}

#[test]
fn dropping_a_server_ends_its_threads_and_cancels_calls() {
    let _serial = SERIAL.write();
    let (server, gate) = gated_server(3);
    let mut client = TestClient::connect(server.local_addr());
    let id = client.start("/t.Gate/Wait", &Metadata::new(), None, b"x");
    gate.entered.recv_timeout(WAIT).expect("handler started");
    let started = Instant::now();
    drop(server);
    assert!(started.elapsed() < WAIT);
    gate.cancelled
        .try_recv()
        .expect("the handler was cancelled");
    let err = client.wait(id).unwrap_err();
    assert_eq!(err.status.code(), Code::Unavailable, "{err:?}");
    assert_eq!(wait_no_server_threads(), Vec::<String>::new());
}

#[test]
fn request_bytes_buffered_per_connection_are_bounded() {
    let _serial = SERIAL.read();
    let server = services::mount(Server::builder(), "lb-transport")
        .max_buffered_request_bytes(100_000)
        .bind("127.0.0.1:0")
        .expect("bind");
    let mut client = TestClient::connect(server.local_addr());
    // 50 KB of one 60 KB message waits on the first stream.
    let first = client.start_partial("/bench.Echo/Unary", 60_000, 50_000);
    client.pump_until("the first part to arrive", |_| true);
    // A second stream pushing past 100 KB of pending requests is refused...
    let second = client.start_partial("/bench.Echo/Unary", 60_000, 50_000);
    let err = client.wait(second).unwrap_err();
    assert_eq!(err.status.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.status.message().contains("100000 bytes"), "{err:?}");
    // ...while the first completes, and its bytes are released for later calls.
    client.finish_partial(first, 10_000);
    let done = client.wait(first).unwrap();
    assert_eq!(done.message.len(), 60_000);
    let third = client.start_partial("/bench.Echo/Unary", 60_000, 50_000);
    client.finish_partial(third, 10_000);
    assert_eq!(client.wait(third).unwrap().message.len(), 60_000);
}

// ----- Streaming calls -----

/// Waits in short slices until the gate opens (`Ok`) or the call is cancelled.
fn wait_gate(call: &ServerCall, gate: &crossbeam_channel::Receiver<()>) -> Result<(), Status> {
    let until = Instant::now() + WAIT;
    while Instant::now() < until {
        if gate.try_recv().is_ok() {
            return Ok(());
        }
        if call.wait_cancelled(Instant::now() + Duration::from_millis(10)) {
            return Err(Status::cancelled("cancelled at the gate"));
        }
    }
    Err(Status::internal("gate never opened"))
}

/// A bidirectional echo that counts the messages into its trailers.
fn chat(call: &mut ServerCall) -> Result<(), Status> {
    let mut n = 0;
    while let Some(message) = call.recv()? {
        call.send(&message)?;
        n += 1;
    }
    call.set_trailers(md(&[("x-count", &n.to_string())]));
    Ok(())
}

#[test]
fn bidi_echo_answers_each_message_as_it_comes_and_ends_with_trailers() {
    let _serial = SERIAL.read();
    let server = Server::builder()
        .bidi_streaming("/t.S/Chat", chat)
        .workers(2)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut client = TestClient::connect(server.local_addr());
    let id = client.open("/t.S/Chat", &Metadata::new(), None);
    for i in 0..20 {
        let sent = payload(100 * i);
        client.send(id, &sent, false);
        client.pump_until("the echo", |c| c.messages(id).len() == i + 1);
        assert!(client.messages(id)[i] == sent, "echo {i} came back changed");
    }
    client.finish(id);
    let raw = client.wait_raw(id);
    assert_eq!(raw.headers.len(), 2, "headers and trailers: {raw:?}");
    assert_eq!(status_of(&raw), Some(("0".into(), String::new())));
    assert_eq!(header_value(&raw, 1, "x-count").as_deref(), Some("20"));
}

#[test]
fn server_streaming_sends_headers_messages_and_trailers_with_metadata() {
    let _serial = SERIAL.read();
    let server = Server::builder()
        .server_streaming("/t.S/Count", |request, call: &mut ServerCall| {
            let n: usize = std::str::from_utf8(&request)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| Status::invalid_argument("not a number"))?;
            let mut headers = md(&[("x-head", "h")]);
            headers.insert_bin("x-raw-bin", &[0, 255]).unwrap();
            call.send_headers(headers)?;
            for i in 0..n {
                call.send(format!("m{i}").as_bytes())?;
            }
            call.set_trailers(md(&[("x-tail", "t")]));
            Ok(())
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let mut client = TestClient::connect(server.local_addr());
    for n in [100, 0] {
        let id = client.open("/t.S/Count", &Metadata::new(), None);
        client.send(id, n.to_string().as_bytes(), true);
        let raw = client.wait_raw(id);
        let want: Vec<Vec<u8>> = (0..n).map(|i| format!("m{i}").into_bytes()).collect();
        assert_eq!(decode(&raw), want, "{n} messages");
        assert_eq!(raw.headers.len(), 2, "{raw:?}");
        assert_eq!(header_value(&raw, 0, "x-head").as_deref(), Some("h"));
        assert_eq!(header_value(&raw, 0, "x-raw-bin").as_deref(), Some("AP8"));
        assert_eq!(header_value(&raw, 1, "x-tail").as_deref(), Some("t"));
        assert_eq!(status_of(&raw), Some(("0".into(), String::new())));
    }
    // A server-streaming method takes exactly one request message.
    let id = client.open("/t.S/Count", &Metadata::new(), None);
    client.send(id, b"1", false);
    client.send(id, b"2", true);
    let raw = client.wait_raw(id);
    assert_eq!(status_of(&raw).unwrap().0, "12", "{raw:?}");
    let id = client.open("/t.S/Count", &Metadata::new(), None);
    client.finish(id);
    let raw = client.wait_raw(id);
    assert_eq!(status_of(&raw).unwrap().0, "12", "{raw:?}");
}

/// Answers with the number of request messages and their total size.
fn sum(call: &mut ServerCall) -> Result<Vec<u8>, Status> {
    let (mut count, mut total) = (0, 0);
    while let Some(message) = call.recv()? {
        count += 1;
        total += message.len();
    }
    Ok(format!("{count} {total}").into_bytes())
}

#[test]
fn client_streaming_takes_every_message_and_answers_once() {
    let _serial = SERIAL.read();
    let server = Server::builder()
        .client_streaming("/t.S/Sum", sum)
        .client_streaming("/t.S/Rude", |call: &mut ServerCall| {
            call.send(b"not mine to send")?;
            Ok(b"answer".to_vec())
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let mut client = TestClient::connect(server.local_addr());
    let id = client.open("/t.S/Sum", &Metadata::new(), None);
    let sizes = [0, 1, 1000, 70_000, 5];
    for round in 0..10 {
        for (i, size) in sizes.iter().enumerate() {
            let last = round == 9 && i == sizes.len() - 1;
            client.send(id, &payload(*size), last);
        }
    }
    let raw = client.wait_raw(id);
    let total: usize = sizes.iter().sum::<usize>() * 10;
    assert_eq!(decode(&raw), [format!("50 {total}").into_bytes()]);
    assert_eq!(status_of(&raw), Some(("0".into(), String::new())));

    // A client-streaming handler that sends messages itself breaks the call.
    let id = client.open("/t.S/Rude", &Metadata::new(), None);
    client.finish(id);
    let raw = client.wait_raw(id);
    assert_eq!(status_of(&raw).unwrap().0, "13", "{raw:?}");
}

#[test]
fn a_streaming_handler_error_or_panic_ends_the_call_with_its_status_and_trailers() {
    let _serial = SERIAL.read();
    let server = Server::builder()
        .bidi_streaming("/t.S/FailLate", |call: &mut ServerCall| {
            for i in 0..3 {
                call.send(&[i])?;
            }
            call.set_trailers(md(&[("x-why", "because")]));
            Err(Status::new(Code::Aborted, "stop é 100%"))
        })
        .bidi_streaming("/t.S/FailAtOnce", |call: &mut ServerCall| {
            call.set_trailers(md(&[("x-why", "nothing here")]));
            Err(Status::new(Code::NotFound, "nothing"))
        })
        .bidi_streaming("/t.S/Panic", |call: &mut ServerCall| {
            call.send(b"first")?;
            panic!("streaming handler bug")
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut client = TestClient::connect(server.local_addr());

    let id = client.open("/t.S/FailLate", &Metadata::new(), None);
    client.finish(id);
    let raw = client.wait_raw(id);
    assert_eq!(decode(&raw), [[0], [1], [2]]);
    assert_eq!(
        status_of(&raw),
        Some(("10".into(), "stop é 100%".into())),
        "{raw:?}"
    );
    assert_eq!(header_value(&raw, 1, "x-why").as_deref(), Some("because"));

    // No message: one Trailers-Only block with the status and the metadata.
    let id = client.open("/t.S/FailAtOnce", &Metadata::new(), None);
    client.finish(id);
    let raw = client.wait_raw(id);
    assert_eq!(raw.headers.len(), 1, "{raw:?}");
    assert_eq!(header_value(&raw, 0, ":status").as_deref(), Some("200"));
    assert_eq!(status_of(&raw), Some(("5".into(), "nothing".into())));
    assert_eq!(
        header_value(&raw, 0, "x-why").as_deref(),
        Some("nothing here")
    );

    // A panic is INTERNAL, after what was sent; the one worker survives it.
    for round in 0..2 {
        let id = client.open("/t.S/Panic", &Metadata::new(), None);
        client.finish(id);
        let raw = client.wait_raw(id);
        assert_eq!(decode(&raw), [b"first".to_vec()], "round {round}");
        let (code, message) = status_of(&raw).unwrap();
        assert_eq!(code, "13", "round {round}");
        assert!(message.contains("streaming handler bug"), "{message}");
    }
}

#[test]
fn a_slow_handler_stops_the_client_through_flow_control() {
    let _serial = SERIAL.read();
    const WINDOW: u32 = 64 << 10;
    let (gate_tx, gate) = crossbeam_channel::unbounded();
    let server = Server::builder()
        .client_streaming("/t.S/Slow", move |call: &mut ServerCall| {
            wait_gate(call, &gate)?;
            sum(call)
        })
        .client_streaming("/t.S/Sum", sum)
        .connection_config(ConnectionConfig {
            stream_window: WINDOW,
            ..ConnectionConfig::default()
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let mut client = TestClient::connect(server.local_addr());
    let id = client.open("/t.S/Slow", &Metadata::new(), None);
    let chunk = payload(16 << 10);
    let total = 128;
    let mut queued = 0;
    // The handler takes nothing: the client soon has no credit left.
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        if client.try_send(id, &chunk, false) {
            queued += 1;
        } else {
            client.pump();
        }
    }
    println!(
        "slow handler: the client wrote {} bytes ({queued} messages queued) with a stream window of {WINDOW}",
        client.written
    );
    assert!(
        client.written < 2 * WINDOW as usize,
        "the client wrote {} bytes with a stream window of {WINDOW}",
        client.written
    );
    assert!(queued < total, "all {queued} messages were taken");
    gate_tx.send(()).unwrap();
    for i in queued..total {
        client.send(id, &chunk, i + 1 == total);
    }
    if queued == total {
        client.finish(id);
    }
    let raw = client.wait_raw(id);
    assert_eq!(
        decode(&raw),
        [format!("{total} {}", total * chunk.len()).into_bytes()],
        "{raw:?}"
    );

    // Messages larger than the window still arrive whole.
    let id = client.open("/t.S/Sum", &Metadata::new(), None);
    for i in 0..5 {
        client.send(id, &payload(200 << 10), i == 4);
    }
    let raw = client.wait_raw(id);
    assert_eq!(
        decode(&raw),
        [format!("5 {}", 5 * (200 << 10)).into_bytes()]
    );
}

#[test]
fn a_client_that_does_not_read_blocks_the_handler_in_send() {
    let _serial = SERIAL.read();
    const CHUNK: usize = 16 << 10;
    let sent = Arc::new(AtomicUsize::new(0));
    let (ended_tx, ended) = crossbeam_channel::unbounded();
    let counter = Arc::clone(&sent);
    let server = Server::builder()
        .server_streaming("/t.S/Flood", move |_request, call: &mut ServerCall| {
            let chunk = vec![7u8; CHUNK];
            // 64 MiB at most.
            for _ in 0..4096 {
                if let Err(status) = call.send(&chunk) {
                    ended_tx.send(status.code()).unwrap();
                    return Err(status);
                }
                counter.fetch_add(CHUNK, Ordering::SeqCst);
            }
            ended_tx.send(Code::Ok).unwrap();
            Ok(())
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let mut client = TestClient::connect(server.local_addr());
    let id = client.open("/t.S/Flood", &Metadata::new(), None);
    client.hold_credit.insert(id);
    client.send(id, b"go", true);
    let window = ConnectionConfig::default().stream_window as usize;
    client.pump_until("the stream window to fill", |c| {
        c.raw[&id].body.len() >= window
    });
    let settle = Instant::now() + Duration::from_millis(300);
    client.pump_until("a pause", |_| Instant::now() >= settle);
    let blocked_at = sent.load(Ordering::SeqCst);
    // The window, the connection's queue for the stream, the handler's queue, and
    // a message of slack on each.
    let bound = window + (64 << 10) + (64 << 10) + 2 * CHUNK;
    println!("slow reader: the handler sent {blocked_at} bytes before blocking (bound {bound})");
    assert!(
        blocked_at <= bound,
        "the handler sent {blocked_at} bytes to a client that reads nothing (bound {bound})"
    );
    let settle = Instant::now() + Duration::from_millis(200);
    client.pump_until("another pause", |_| Instant::now() >= settle);
    assert_eq!(sent.load(Ordering::SeqCst), blocked_at, "still blocked");
    assert!(ended.try_recv().is_err(), "the handler is still sending");

    // Reading again lets the handler on.
    client.hold_credit.remove(&id);
    let read = client.raw[&id].body.len();
    client.conn.release_capacity(id, read);
    client.pump_until("more data", |c| c.raw[&id].body.len() >= read + window);
    assert!(sent.load(Ordering::SeqCst) > blocked_at);

    // Resetting the stream fails the handler's next send.
    client.raw.remove(&id);
    client.conn.reset_stream(id, Reason::CANCEL);
    client.flush();
    assert_eq!(ended.recv_timeout(WAIT), Ok(Code::Cancelled));
}

/// A bidirectional handler that reports when it starts, optionally sends one
/// message, then waits in `recv` and reports how that ended.
fn waiting_server(workers: usize) -> (Server, crossbeam_channel::Receiver<Option<Code>>) {
    let (seen_tx, seen) = crossbeam_channel::unbounded();
    let server = Server::builder()
        .bidi_streaming("/t.S/Wait", move |call: &mut ServerCall| {
            if call.metadata().get("x-send-first").is_some() {
                call.send(b"first")?;
            }
            seen_tx.send(None).unwrap();
            let got = call.recv();
            seen_tx.send(got.as_ref().err().map(Status::code)).unwrap();
            got.map(|_| ())
        })
        .workers(workers)
        .bind("127.0.0.1:0")
        .unwrap();
    (server, seen)
}

#[test]
fn a_deadline_cancels_a_streaming_handler_with_deadline_exceeded() {
    let _serial = SERIAL.read();
    let (server, seen) = waiting_server(2);
    let mut client = TestClient::connect(server.local_addr());
    for send_first in [false, true] {
        let metadata = if send_first {
            md(&[("x-send-first", "1")])
        } else {
            Metadata::new()
        };
        let started = Instant::now();
        let id = client.open("/t.S/Wait", &metadata, Some(Duration::from_millis(200)));
        assert_eq!(seen.recv_timeout(WAIT), Ok(None), "the handler started");
        let raw = client.wait_raw(id);
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(seen.recv_timeout(WAIT), Ok(Some(Code::DeadlineExceeded)));
        assert_eq!(
            status_of(&raw).map(|s| s.0).as_deref(),
            Some("4"),
            "{raw:?}"
        );
        let want: &[&[u8]] = if send_first { &[b"first"] } else { &[] };
        assert_eq!(decode(&raw), want);
    }
}

#[test]
fn a_client_reset_cancels_a_streaming_handler_blocked_in_recv() {
    let _serial = SERIAL.read();
    let (server, seen) = waiting_server(2);
    let mut client = TestClient::connect(server.local_addr());
    let id = client.open("/t.S/Wait", &Metadata::new(), None);
    assert_eq!(seen.recv_timeout(WAIT), Ok(None), "the handler started");
    client.raw.remove(&id);
    client.conn.reset_stream(id, Reason::CANCEL);
    client.flush();
    assert_eq!(seen.recv_timeout(WAIT), Ok(Some(Code::Cancelled)));
    // The connection carries on.
    let id = client.open("/t.S/Wait", &md(&[("x-send-first", "1")]), None);
    assert_eq!(seen.recv_timeout(WAIT), Ok(None));
    client.pump_until("the first message", |c| c.messages(id).len() == 1);
    client.finish(id);
    assert_eq!(seen.recv_timeout(WAIT), Ok(None), "recv saw the end");
    let raw = client.wait_raw(id);
    assert_eq!(status_of(&raw).map(|s| s.0).as_deref(), Some("0"));
}

#[test]
fn dropping_a_server_cancels_streaming_handlers_and_ends_every_thread() {
    let _serial = SERIAL.write();
    let (server, seen) = waiting_server(2);
    let mut client = TestClient::connect(server.local_addr());
    client.open("/t.S/Wait", &Metadata::new(), None);
    client.open("/t.S/Wait", &md(&[("x-send-first", "1")]), None);
    for _ in 0..2 {
        assert_eq!(seen.recv_timeout(WAIT), Ok(None), "a handler started");
    }
    let started = Instant::now();
    drop(server);
    assert!(started.elapsed() < WAIT);
    let ends: Vec<_> = seen.try_iter().collect();
    assert_eq!(ends, [Some(Code::Cancelled), Some(Code::Cancelled)]);
    assert_eq!(wait_no_server_threads(), Vec::<String>::new());
}

#[test]
fn graceful_shutdown_lets_a_streaming_call_finish() {
    let _serial = SERIAL.read();
    let server = Server::builder()
        .bidi_streaming("/t.S/Chat", chat)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut client = TestClient::connect(server.local_addr());
    let id = client.open("/t.S/Chat", &Metadata::new(), None);
    client.send(id, b"before", false);
    client.pump_until("the first echo", |c| c.messages(id).len() == 1);
    let (stopped_tx, stopped) = crossbeam_channel::bounded(1);
    let stopper = std::thread::spawn(move || {
        server.shutdown(Duration::from_secs(30));
        stopped_tx.send(()).unwrap();
    });
    client.pump_until("GOAWAY", |c| c.goaway_seen);
    client.send(id, b"after", true);
    let raw = client.wait_raw(id);
    assert_eq!(decode(&raw), [b"before".to_vec(), b"after".to_vec()]);
    assert_eq!(status_of(&raw).map(|s| s.0).as_deref(), Some("0"));
    drop(client);
    stopped.recv_timeout(WAIT).expect("shutdown returns");
    stopper.join().unwrap();
}

#[test]
fn streaming_request_bytes_count_towards_the_connection_limit() {
    let _serial = SERIAL.read();
    let (gate_tx, gate) = crossbeam_channel::unbounded();
    let server = Server::builder()
        .client_streaming("/t.S/Hold", move |call: &mut ServerCall| {
            wait_gate(call, &gate)?;
            sum(call)
        })
        .client_streaming("/t.S/Sum", sum)
        .max_buffered_request_bytes(100_000)
        .workers(3)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut client = TestClient::connect(server.local_addr());
    // 60 KB waits in the first call's queue...
    let first = client.open("/t.S/Hold", &Metadata::new(), None);
    client.send(first, &payload(60_000), false);
    let settle = Instant::now() + Duration::from_millis(100);
    client.pump_until("the message to arrive", |_| Instant::now() >= settle);
    // ...so a second call pushing past 100 KB is refused (before its message is
    // whole, so before its handler could take it)...
    let second = client.open("/t.S/Sum", &Metadata::new(), None);
    client.send(second, &payload(60_000), false);
    let raw = client.wait_raw(second);
    let (code, message) = status_of(&raw).unwrap();
    assert_eq!(code, "8", "{raw:?}");
    assert!(message.contains("100000 bytes"), "{message}");
    // ...while the first completes, and its bytes are released for later calls.
    gate_tx.send(()).unwrap();
    client.finish(first);
    let raw = client.wait_raw(first);
    assert_eq!(decode(&raw), [b"1 60000".to_vec()], "{raw:?}");
    let third = client.open("/t.S/Sum", &Metadata::new(), None);
    client.send(third, &payload(60_000), true);
    let raw = client.wait_raw(third);
    assert_eq!(decode(&raw), [b"1 60000".to_vec()], "{raw:?}");
}

#[test]
fn concurrent_streams_from_several_threads_all_complete() {
    let _serial = SERIAL.read();
    let server = Server::builder()
        .bidi_streaming("/t.S/Chat", chat)
        .workers(4)
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                let mut client = TestClient::connect(addr);
                let ids: Vec<StreamId> = (0..2)
                    .map(|_| client.open("/t.S/Chat", &Metadata::new(), None))
                    .collect();
                for round in 0..30 {
                    for (i, &id) in ids.iter().enumerate() {
                        let msg = format!("t{t} s{i} r{round}").repeat(1 + round * 50);
                        client.send(id, msg.as_bytes(), round == 29);
                    }
                }
                for id in ids {
                    let raw = client.wait_raw(id);
                    assert_eq!(decode(&raw).len(), 30, "thread {t}");
                    assert_eq!(status_of(&raw).map(|s| s.0).as_deref(), Some("0"));
                }
            });
        }
    });
}
