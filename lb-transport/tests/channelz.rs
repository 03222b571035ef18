//! Channelz accounting of our server and client on loopback, without peers: each
//! way a call can end is counted once (OK, a handler's error, an unknown method, a
//! deadline, a server-streaming call), streams and messages match on both ends of
//! the connection, and sockets and servers leave the registry when they close.
//! Real sockets and real time: every wait is bounded.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use lb_core::channelz::{self, ServerSnapshot, Snapshot, SocketSnapshot};
use lb_core::transport::{CallRequest, ConnectOptions, ConnectionEvent};
use lb_core::{Address, Code, Connection, ConnectionExt, Status, Transport};
use lb_testkit::services;
use lb_transport::driver::{H2Transport, TransportConfig};
use lb_transport::server::Server;

const WAIT: Duration = Duration::from_secs(20);

fn server_snapshot(server: &Server) -> ServerSnapshot {
    match channelz::registry().get(server.channelz_id()) {
        Some(Snapshot::Server(s)) => s,
        other => panic!("{other:?}"),
    }
}

fn socket(id: u64) -> Option<SocketSnapshot> {
    match channelz::registry().get(id) {
        Some(Snapshot::Socket(s)) => Some(s),
        None => None,
        other => panic!("{other:?}"),
    }
}

/// Polls `f` until it holds (the I/O threads publish counts once per pass), at
/// most `WAIT`.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

fn call(conn: &Arc<dyn Connection>, request: CallRequest) -> Result<Vec<u8>, Status> {
    let (tx, rx) = bounded(1);
    conn.start_call(
        request,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    match rx.recv_timeout(WAIT).unwrap() {
        Ok(r) => Ok(r.message),
        Err(e) => Err(e.status),
    }
}

#[test]
fn every_way_a_call_ends_is_counted_once_on_both_ends() {
    let server = services::mount(Server::builder(), "cz")
        .unary("/test.Fail/Fail", |_| Err(Status::unavailable("no")))
        .workers(2)
        .bind("127.0.0.1:0")
        .unwrap();
    let transport = H2Transport::new(TransportConfig::default()).unwrap();
    let addr = server.local_addr().to_string();
    let opts = ConnectOptions {
        authority: addr.clone(),
        connect_deadline: Instant::now() + WAIT,
        user_agent: "channelz-test".into(),
        transport_options: Default::default(),
    };
    let (tx, events) = bounded(16);
    let sink = Arc::new(move |e| {
        let _ = tx.try_send(e);
    });
    let conn = transport
        .connect(&Address::new(&addr), &opts, sink)
        .unwrap();
    assert_eq!(events.recv_timeout(WAIT), Ok(ConnectionEvent::Ready));

    // 3 OK, 1 handler error, 1 unknown method, 1 past its deadline (the server's
    // deadline fires while the handler sleeps).
    for _ in 0..3 {
        assert_eq!(
            call(&conn, CallRequest::new(services::ECHO, b"a".to_vec())).unwrap(),
            b"a"
        );
    }
    let fail = call(&conn, CallRequest::new("/test.Fail/Fail", Vec::new()));
    assert_eq!(fail.unwrap_err().code(), Code::Unavailable);
    let unknown = call(&conn, CallRequest::new("/no.Such/Method", Vec::new()));
    assert_eq!(unknown.unwrap_err().code(), Code::Unimplemented);
    let mut slow = CallRequest::new(services::SLEEP, b"2000".to_vec());
    slow.deadline = Some(Instant::now() + Duration::from_millis(100));
    assert_eq!(
        call(&conn, slow).unwrap_err().code(),
        Code::DeadlineExceeded
    );

    eventually("the server counts 6 calls", || {
        let c = server_snapshot(&server).calls;
        c.succeeded + c.failed == 6
    });
    let s = server_snapshot(&server);
    assert_eq!(
        (s.calls.started, s.calls.succeeded, s.calls.failed),
        (6, 3, 3),
        "{s:?}"
    );
    assert!(s.calls.last_started.is_some());
    assert_eq!(s.sockets.len(), 1, "{s:?}");
    let server_socket = s.sockets[0];
    let client_socket = conn.socket_id().unwrap();

    // Both ends agree: 6 streams and 3 answers. The server refused the unknown
    // method at its headers, so it never read that request message; the client sent
    // it unless the refusal came back before the message left (a unary call's
    // message may follow its headers in a later command).
    eventually("both ends publish 6 streams", || {
        let (Some(c), Some(sv)) = (socket(client_socket), socket(server_socket)) else {
            return false;
        };
        c.streams_succeeded + c.streams_failed == 6 && sv.streams_succeeded + sv.streams_failed == 6
    });
    let (c, sv) = (
        socket(client_socket).unwrap(),
        socket(server_socket).unwrap(),
    );
    assert_eq!(c.streams_started, 6, "{c:?}");
    assert_eq!(sv.streams_started, 6, "{sv:?}");
    assert!((5..=6).contains(&c.messages_sent), "{c:?}");
    assert_eq!(c.messages_received, 3, "{c:?}");
    assert_eq!((sv.messages_received, sv.messages_sent), (5, 3), "{sv:?}");
    // The five calls answered in time ended well on both ends. The one past its
    // deadline races: the client resets it at its deadline (failed: no END_STREAM
    // seen), the server answers DEADLINE_EXCEEDED at its own a moment later
    // (succeeded, unless the client's reset arrived first).
    assert!(c.streams_succeeded >= 5 && c.streams_failed <= 1, "{c:?}");
    assert!(
        sv.streams_succeeded >= 5 && sv.streams_failed <= 1,
        "{sv:?}"
    );
    assert_eq!(c.local, sv.remote);
    assert_eq!(c.remote, sv.local);
    assert!(c.last_local_stream_created.is_some() && c.last_remote_stream_created.is_none());
    assert!(sv.last_remote_stream_created.is_some() && sv.last_local_stream_created.is_none());
    assert_eq!(c.security, None);

    // A server-streaming call: 1 request, 4 responses.
    let (tx, rx) = bounded(8);
    struct Listener(crossbeam_channel::Sender<Option<Vec<u8>>>);
    impl lb_core::transport::CallListener for Listener {
        fn on_headers(&self, _: lb_core::Metadata) {}
        fn on_writable(&self) {}
        fn on_message(&self, m: Vec<u8>) {
            let _ = self.0.send(Some(m));
        }
        fn on_close(&self, _: lb_core::transport::CallOutcome) {
            let _ = self.0.send(None);
        }
    }
    let head = lb_core::transport::CallHead::new(services::STREAM_SERVER);
    let stream = conn.open_stream(head, Arc::new(Listener(tx)));
    stream.try_send(b"4 8".to_vec(), true).unwrap();
    let mut got = 0;
    while rx.recv_timeout(WAIT).unwrap().is_some() {
        got += 1;
    }
    assert_eq!(got, 4);
    eventually("the stream's messages are published", || {
        socket(client_socket).is_some_and(|c| c.messages_received == 7)
            && socket(server_socket).is_some_and(|s| s.messages_sent == 7)
    });
    eventually("the server counts 7 calls", || {
        server_snapshot(&server).calls.succeeded == 4
    });

    // Closing the connection takes both sockets out of the registry, and the
    // server's list of sockets.
    conn.close();
    eventually("both sockets leave", || {
        socket(client_socket).is_none() && socket(server_socket).is_none()
    });
    eventually("the server forgets the socket", || {
        server_snapshot(&server).sockets.is_empty()
    });
    let (id, listen) = (server.channelz_id(), server.channelz_listen_socket_id());
    assert!(socket(listen).is_some());
    server.shutdown(Duration::from_secs(1));
    assert!(channelz::registry().get(id).is_none());
    assert!(channelz::registry().get(listen).is_none());
}
