//! Streaming calls on our client (`H2Transport`'s `open_stream`) against a gRPC
//! server we did not write: grpcio (gRPC C-core), run by `xtask/peers/grpc_server.py`
//! with its `/test.Stream/*` methods. Server streaming, client streaming, bidi
//! ping-pong, trailers after messages, cancel and deadline mid-stream, backpressure
//! both ways, and lb-core's `Channel` streaming over this transport. Needs the peers that `cargo xtask test` installs (see
//! `lb_testkit::peers::require_peers`); every wait is bounded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use lb_core::channel::{CallOptions, Channel};
use lb_core::transport::{
    CallHead, CallListener, CallOutcome, CallStream, ConnectOptions, ConnectionEvent, Progress,
    TrySendError,
};
use lb_core::{Address, Code, Connection, Metadata, Transport};
use lb_testkit::peers::{self, GrpcServer, GrpcServerOptions};
use lb_transport::driver::{H2Transport, TransportConfig};
use lb_transport::proto::ConnectionConfig;

/// The longest any single wait may take.
const WAIT: Duration = Duration::from_secs(20);

/// What a call's listener heard, in order.
#[derive(Debug)]
enum Heard {
    Headers(Metadata),
    Message(Vec<u8>),
    Writable,
    Close(CallOutcome),
}

/// Forwards every callback to a channel (never blocks: unbounded, test only).
struct Recorder(Sender<Heard>);

impl CallListener for Recorder {
    fn on_headers(&self, headers: Metadata) {
        let _ = self.0.send(Heard::Headers(headers));
    }
    fn on_message(&self, message: Vec<u8>) {
        let _ = self.0.send(Heard::Message(message));
    }
    fn on_writable(&self) {
        let _ = self.0.send(Heard::Writable);
    }
    fn on_close(&self, outcome: CallOutcome) {
        let _ = self.0.send(Heard::Close(outcome));
    }
}

struct Client {
    _transport: H2Transport,
    conn: Arc<dyn Connection>,
}

fn server() -> Option<GrpcServer> {
    let env = peers::require_peers()?;
    Some(GrpcServer::start(&env, GrpcServerOptions::default()).unwrap())
}

fn connect_with(target: &str, connection: ConnectionConfig) -> Client {
    let transport = H2Transport::new(TransportConfig {
        connection,
        ..TransportConfig::default()
    })
    .unwrap();
    let (tx, events) = unbounded();
    let opts = ConnectOptions {
        authority: target.into(),
        connect_deadline: Instant::now() + WAIT,
        user_agent: "lb-transport-streams-test".into(),
        transport_options: Default::default(),
    };
    let sink = Arc::new(move |e| {
        let _ = tx.send(e);
    });
    let conn = transport
        .connect(&Address::new(target), &opts, sink)
        .unwrap();
    assert_eq!(events.recv_timeout(WAIT), Ok(ConnectionEvent::Ready));
    Client {
        _transport: transport,
        conn,
    }
}

fn connect(target: &str) -> Client {
    connect_with(target, ConnectionConfig::default())
}

/// An open call: its handle and what its listener heard.
struct Call {
    stream: Arc<dyn CallStream>,
    heard: Receiver<Heard>,
}

impl Call {
    fn open(conn: &dyn Connection, head: CallHead) -> Self {
        let (tx, heard) = unbounded();
        let stream = conn.open_stream(head, Arc::new(Recorder(tx)));
        Self { stream, heard }
    }

    fn next(&self) -> Heard {
        self.heard
            .recv_timeout(WAIT)
            .expect("the call made progress in time")
    }

    /// Reads to the end, releasing each message as it arrives; returns the headers,
    /// the messages and how the call ended.
    fn finish(&self) -> (Option<Metadata>, Vec<Vec<u8>>, CallOutcome) {
        let (mut headers, mut messages) = (None, Vec::new());
        loop {
            match self.next() {
                Heard::Headers(md) => headers = Some(md),
                Heard::Message(m) => {
                    self.stream.release(m.len());
                    messages.push(m);
                }
                Heard::Writable => {}
                Heard::Close(outcome) => return (headers, messages, outcome),
            }
        }
    }

    /// Sends `message`, waiting (bounded) for room whenever the stream is full.
    /// Returns how many times it was full.
    fn send(&self, mut message: Vec<u8>, last: bool) -> usize {
        let mut full = 0;
        loop {
            match self.stream.try_send(message, last) {
                Ok(()) => return full,
                Err(TrySendError::Full(m)) => {
                    full += 1;
                    message = m;
                    match self.next() {
                        // The server may answer with its headers before it reads.
                        Heard::Writable | Heard::Headers(_) => {}
                        Heard::Close(o) => panic!("closed while waiting for room: {o:?}"),
                        other => panic!("unexpected while sending: {other:?}"),
                    }
                }
                Err(e @ TrySendError::Closed(_)) => panic!("send failed: {e:?}"),
            }
        }
    }
}

fn head(method: &str) -> CallHead {
    CallHead::new(method)
}

/// Message i of `/test.Stream/Server`.
fn expected(i: usize, size: usize) -> Vec<u8> {
    let mut m = (i as u32).to_be_bytes().to_vec();
    m.resize(size, (i % 251) as u8);
    m
}

#[test]
fn server_streaming_delivers_many_messages_in_order() {
    let Some(server) = server() else { return };
    let c = connect(&server.target());
    // 3 MB in all: three times the stream window, so credit must come back as the
    // messages are released.
    let (count, size) = (3000, 1000);
    let call = Call::open(&*c.conn, head("/test.Stream/Server"));
    call.stream
        .try_send(format!("{count} {size}").into_bytes(), true)
        .unwrap();
    let (headers, messages, outcome) = call.finish();
    assert_eq!(outcome, CallOutcome::processed(lb_core::Status::ok()));
    assert!(headers.is_some(), "headers came first");
    assert_eq!(messages.len(), count);
    for (i, m) in messages.iter().enumerate() {
        assert!(
            *m == expected(i, size),
            "message {i} out of order or corrupted"
        );
    }
}

#[test]
fn messages_larger_than_the_window_stream_through() {
    let Some(server) = server() else { return };
    let c = connect(&server.target());
    // 2 MiB messages, twice the stream window: each is assembled on credit given
    // back at once, and held until released.
    let (count, size) = (4, 2 << 20);
    let call = Call::open(&*c.conn, head("/test.Stream/Server"));
    call.stream
        .try_send(format!("{count} {size}").into_bytes(), true)
        .unwrap();
    let (_, messages, outcome) = call.finish();
    assert!(outcome.status.is_ok(), "{outcome:?}");
    assert_eq!(messages.len(), count);
    for (i, m) in messages.iter().enumerate() {
        assert!(*m == expected(i, size), "message {i}");
    }
}

#[test]
fn tiny_releases_through_a_small_window_never_stall() {
    let Some(server) = server() else { return };
    // A 16 KiB window: released bytes are batched by 4 KiB, and a reader that
    // released everything must still let the server send.
    let c = connect_with(
        &server.target(),
        ConnectionConfig {
            stream_window: 16 << 10,
            ..ConnectionConfig::default()
        },
    );
    let (count, size) = (10_000, 7);
    let call = Call::open(&*c.conn, head("/test.Stream/Server"));
    call.stream
        .try_send(format!("{count} {size}").into_bytes(), true)
        .unwrap();
    let (_, messages, outcome) = call.finish();
    assert!(outcome.status.is_ok(), "{outcome:?}");
    assert_eq!(messages.len(), count);
    assert!(
        messages
            .iter()
            .enumerate()
            .all(|(i, m)| *m == expected(i, size))
    );
}

#[test]
fn client_streaming_sends_every_message() {
    let Some(server) = server() else { return };
    let c = connect(&server.target());
    let call = Call::open(&*c.conn, head("/test.Stream/Client"));
    let (mut count, mut bytes) = (0usize, 0usize);
    for i in 0..400usize {
        let m = vec![(i % 256) as u8; (i * 37) % 5000];
        bytes += m.len();
        count += 1;
        call.send(m, false);
    }
    call.stream.half_close();
    assert!(matches!(
        call.stream.try_send(b"late".to_vec(), false),
        Err(TrySendError::Closed(_))
    ));
    let (_, messages, outcome) = call.finish();
    assert!(outcome.status.is_ok(), "{outcome:?}");
    assert_eq!(messages, vec![format!("{count} {bytes}").into_bytes()]);
}

#[test]
fn bidi_ping_pong() {
    let Some(server) = server() else { return };
    let c = connect(&server.target());
    let call = Call::open(&*c.conn, head("/test.Stream/Bidi"));
    for i in 0..200 {
        let ping = format!("ping {i}").into_bytes();
        call.send(ping.clone(), false);
        loop {
            match call.next() {
                Heard::Headers(_) if i == 0 => {}
                Heard::Message(m) => {
                    assert_eq!(m, ping);
                    call.stream.release(m.len());
                    break;
                }
                other => panic!("round {i}: {other:?}"),
            }
        }
    }
    call.stream.half_close();
    let (_, messages, outcome) = call.finish();
    assert!(messages.is_empty());
    assert!(outcome.status.is_ok(), "{outcome:?}");
}

#[test]
fn an_error_status_after_messages_carries_the_trailers() {
    let Some(server) = server() else { return };
    let c = connect(&server.target());
    let mut h = head("/test.Stream/Server");
    h.metadata.insert("x-status-code", "9").unwrap();
    h.metadata.insert("x-note", "kept").unwrap();
    h.metadata.insert_bin("x-raw-bin", &[0, 0xff, 7]).unwrap();
    let call = Call::open(&*c.conn, h);
    call.stream.try_send(b"3 10".to_vec(), true).unwrap();
    let (_, messages, outcome) = call.finish();
    assert_eq!(messages.len(), 3);
    assert_eq!(outcome.progress, Progress::Processed);
    assert_eq!(outcome.status.code(), Code::FailedPrecondition);
    assert_eq!(outcome.status.message(), "after messages");
    let trailers = outcome.status.trailers();
    assert_eq!(trailers.get("x-note"), Some("kept"), "{trailers:?}");
    assert_eq!(trailers.get_bin("x-raw-bin"), Some(&[0u8, 0xff, 7][..]));
}

#[test]
fn cancel_mid_stream_resets_the_stream_and_the_server_sees_it() {
    let Some(server) = server() else { return };
    let c = connect(&server.target());
    let call = Call::open(&*c.conn, head("/test.Stream/Server"));
    call.stream.try_send(b"1000 8 20".to_vec(), true).unwrap();
    let mut got = 0;
    while got < 3 {
        if let Heard::Message(m) = call.next() {
            call.stream.release(m.len());
            got += 1;
        }
    }
    call.stream.cancel();
    let outcome = loop {
        match call.next() {
            Heard::Close(o) => break o,
            Heard::Message(_) => {}
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(outcome.status.code(), Code::Cancelled, "{outcome:?}");
    assert_eq!(outcome.progress, Progress::Processed);
    server
        .wait_for_line("CANCELLED /test.Stream/Server", WAIT)
        .unwrap();
    // Once closed, nothing more: no second close, no sending.
    call.stream.cancel();
    assert!(matches!(
        call.stream.try_send(b"x".to_vec(), false),
        Err(TrySendError::Closed(_))
    ));
    assert_eq!(
        call.heard.recv_timeout(Duration::from_millis(200)).err(),
        Some(RecvTimeoutError::Timeout)
    );
    // The connection carries on.
    let next = Call::open(&*c.conn, head("/test.Stream/Server"));
    next.stream.try_send(b"2 4".to_vec(), true).unwrap();
    let (_, messages, outcome) = next.finish();
    assert_eq!((messages.len(), outcome.status.code()), (2, Code::Ok));
}

#[test]
fn a_deadline_mid_stream_ends_the_call() {
    let Some(server) = server() else { return };
    let c = connect(&server.target());
    let mut h = head("/test.Stream/Server");
    let started = Instant::now();
    h.deadline = Some(started + Duration::from_millis(500));
    let call = Call::open(&*c.conn, h);
    call.stream.try_send(b"1000 8 50".to_vec(), true).unwrap();
    let (_, messages, outcome) = call.finish();
    let took = started.elapsed();
    assert!(!messages.is_empty(), "messages came before the deadline");
    assert_eq!(outcome.status.code(), Code::DeadlineExceeded, "{outcome:?}");
    assert_eq!(outcome.progress, Progress::Processed);
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "ended after {took:?}"
    );
}

#[test]
fn a_reader_that_does_not_release_stops_the_server_at_the_window() {
    let Some(server) = server() else { return };
    let window = 64 << 10;
    let c = connect_with(
        &server.target(),
        ConnectionConfig {
            stream_window: window,
            ..ConnectionConfig::default()
        },
    );
    let (count, size) = (400, 1000);
    let call = Call::open(&*c.conn, head("/test.Stream/Server"));
    call.stream
        .try_send(format!("{count} {size}").into_bytes(), true)
        .unwrap();
    // Take messages without releasing them until nothing more comes for a while.
    let mut held = Vec::new();
    let give_up = Instant::now() + WAIT;
    loop {
        match call.heard.recv_timeout(Duration::from_millis(500)) {
            Ok(Heard::Message(m)) => held.push(m),
            Ok(Heard::Headers(_)) => {}
            Ok(other) => panic!("{other:?}"),
            Err(RecvTimeoutError::Timeout) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < give_up, "the server never stopped");
    }
    let bytes: usize = held.iter().map(Vec::len).sum();
    assert!(
        bytes <= window as usize && bytes >= window as usize / 2,
        "held {bytes} bytes ({} messages) with a {window}-byte window",
        held.len()
    );
    // Releasing lets the rest through.
    call.stream.release(bytes);
    let (_, rest, outcome) = call.finish();
    assert!(outcome.status.is_ok(), "{outcome:?}");
    assert_eq!(held.len() + rest.len(), count);
    for (i, m) in held.iter().chain(&rest).enumerate() {
        assert!(*m == expected(i, size), "message {i}");
    }
}

#[test]
fn a_server_that_does_not_read_fills_the_stream_then_it_drains() {
    let Some(server) = server() else { return };
    let c = connect(&server.target());
    let call = Call::open(&*c.conn, head("/test.Stream/Client"));
    // The server takes this first message, then reads nothing for 3 s.
    let hold = Duration::from_secs(3);
    let started = Instant::now();
    call.stream
        .try_send(format!("hold {}", hold.as_millis()).into_bytes(), false)
        .unwrap();
    let mut sent = (1usize, 9usize);
    let chunk = vec![7u8; 16 << 10];
    // Send until the stream stays full: the server's window and our 64 KiB are
    // taken, and no `on_writable` comes while the server does not read.
    loop {
        match call.stream.try_send(chunk.clone(), false) {
            Ok(()) => sent = (sent.0 + 1, sent.1 + chunk.len()),
            Err(TrySendError::Full(_)) => {
                match call.heard.recv_timeout(Duration::from_millis(300)) {
                    Ok(Heard::Writable | Heard::Headers(_)) => {}
                    Ok(other) => panic!("{other:?}"),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            Err(e) => panic!("{e:?}"),
        }
        assert!(sent.1 < 64 << 20, "never full after {} bytes", sent.1);
    }
    let stuck = started.elapsed();
    assert!(stuck < hold, "the stream only filled after {stuck:?}");
    // Once the server reads, the stream drains and says so.
    loop {
        match call.next() {
            Heard::Writable => break,
            Heard::Headers(_) => {}
            other => panic!("expected on_writable, got {other:?}"),
        }
    }
    let writable = started.elapsed();
    assert!(
        writable >= hold - Duration::from_millis(500),
        "on_writable after {writable:?}, before the server read"
    );
    for _ in 0..20 {
        call.send(chunk.clone(), false);
        sent = (sent.0 + 1, sent.1 + chunk.len());
    }
    call.send(b"end".to_vec(), true);
    sent = (sent.0 + 1, sent.1 + 3);
    let (_, messages, outcome) = call.finish();
    assert!(outcome.status.is_ok(), "{outcome:?}");
    assert_eq!(
        messages,
        vec![format!("{} {}", sent.0, sent.1).into_bytes()]
    );
}

#[test]
fn request_headers_above_the_peer_limit_fail_that_call_alone() {
    let Some(server) = server() else { return };
    let c = connect(&server.target());
    let mut h = head("/test.Stream/Server");
    h.metadata.insert("x-huge", &"a".repeat(64 << 10)).unwrap();
    let call = Call::open(&*c.conn, h);
    let _ = call.stream.try_send(b"1 4".to_vec(), true);
    let (_, messages, outcome) = call.finish();
    assert!(messages.is_empty());
    assert_eq!(outcome.progress, Progress::NotSent, "{outcome:?}");
    assert_eq!(outcome.status.code(), Code::Internal, "{outcome:?}");
    let next = Call::open(&*c.conn, head("/test.Stream/Server"));
    next.stream.try_send(b"1 4".to_vec(), true).unwrap();
    let (_, messages, outcome) = next.finish();
    assert_eq!((messages.len(), outcome.status.code()), (1, Code::Ok));
}

#[test]
fn a_call_on_a_shut_down_transport_ends_unavailable_and_unsent() {
    // No peer needed: the connection never has to come up.
    let transport = H2Transport::new(TransportConfig::default()).unwrap();
    let opts = ConnectOptions {
        authority: "127.0.0.1:1".into(),
        connect_deadline: Instant::now() + WAIT,
        user_agent: "lb-transport-streams-test".into(),
        transport_options: Default::default(),
    };
    let conn = transport
        .connect(&Address::new("127.0.0.1:1"), &opts, Arc::new(|_| {}))
        .unwrap();
    transport.shutdown();
    let call = Call::open(&*conn, head("/test.Stream/Server"));
    let _ = call.stream.try_send(b"1 4".to_vec(), true);
    match call.next() {
        Heard::Close(o) => {
            assert_eq!(o.status.code(), Code::Unavailable, "{o:?}");
            assert_eq!(o.progress, Progress::NotSent);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_channel_streams_over_this_transport() {
    let Some(server) = server() else { return };
    let transport = Arc::new(H2Transport::new(TransportConfig::default()).unwrap());
    let channel = Channel::builder(format!("ipv4:{}", server.target()))
        .transport(transport)
        .build()
        .unwrap();
    let options = || CallOptions {
        timeout: Some(WAIT),
        ..CallOptions::default()
    };
    let (count, size) = (2000, 1000);
    let call = channel
        .server_streaming("/test.Stream/Server", format!("{count} {size}"), options())
        .unwrap();
    let mut i = 0;
    while let Some(m) = call.recv().unwrap() {
        assert!(m == expected(i, size), "message {i}");
        i += 1;
    }
    assert_eq!(i, count);

    let call = channel
        .bidi_streaming("/test.Stream/Bidi", options())
        .unwrap();
    for round in 0..50 {
        let ping = format!("ping {round}");
        call.send(ping.clone()).unwrap();
        assert_eq!(call.recv().unwrap(), Some(ping.into_bytes()));
    }
    call.close_send();
    assert_eq!(call.recv().unwrap(), None);
}
