//! Our client driver against scripted raw servers on real loopback sockets: a server
//! that complains about pings, one that refuses a stream, one that is not HTTP/2.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded, unbounded};
use lb_core::transport::{CallRequest, ConnectOptions, ConnectionEvent};
use lb_core::{Address, Code, Connection, ConnectionExt, Transport};
use lb_transport::driver::{H2Transport, TransportConfig};
use lb_transport::frame::{self, GoAway, Reason, RstStream, Settings, StreamId};
use lb_transport::proto::{ConnectionConfig, KeepaliveConfig};

const WAIT: Duration = Duration::from_secs(20);

/// A one-connection server: reads the client's first bytes, then writes `script`'s
/// bytes and keeps the socket open until the client closes it.
fn raw_server(script: impl FnOnce(&[u8]) -> Vec<u8> + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        let Ok((mut socket, _)) = listener.accept() else {
            return;
        };
        socket.set_read_timeout(Some(WAIT)).unwrap();
        // Wait for the preface and at least one frame header, bounded.
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while seen.len() < frame::PREFACE.len() + 9 {
            match socket.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        // Give the client's request a moment to arrive too, bounded by the timeout.
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if let Ok(n) = socket.read(&mut buf) {
            seen.extend_from_slice(&buf[..n]);
        }
        let reply = script(&seen);
        let _ = socket.write_all(&reply);
        socket.set_read_timeout(Some(WAIT)).unwrap();
        while matches!(socket.read(&mut buf), Ok(n) if n > 0) {}
    });
    addr
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
        user_agent: "raw-test".into(),
        transport_options: Default::default(),
    };
    let sink = Arc::new(move |e| {
        let _ = tx.send(e);
    });
    let conn = transport.connect(&Address::new(addr), &opts, sink).unwrap();
    (transport, conn, events)
}

fn server_hello() -> Vec<u8> {
    let mut out = Vec::new();
    Settings::default().encode(&mut out);
    Settings::new_ack().encode(&mut out);
    out
}

#[test]
fn too_many_pings_doubles_the_keepalive_time_for_new_connections() {
    let addr = raw_server(|_| {
        let mut out = server_hello();
        GoAway {
            last_stream_id: StreamId::ZERO,
            reason: Reason::ENHANCE_YOUR_CALM,
            debug_data: b"too_many_pings".to_vec(),
        }
        .encode(&mut out);
        out
    });
    let config = TransportConfig {
        connection: ConnectionConfig {
            keepalive: Some(KeepaliveConfig::new(Duration::from_secs(10))),
            ..ConnectionConfig::default()
        },
        ..TransportConfig::default()
    };
    let (transport, _conn, events) = connect(config, &addr);
    assert_eq!(transport.keepalive_time(), Some(Duration::from_secs(10)));
    let goaway = (0..4).find_map(|_| match events.recv_timeout(WAIT) {
        Ok(ConnectionEvent::GoAway { too_many_pings, .. }) => Some(too_many_pings),
        _ => None,
    });
    assert_eq!(goaway, Some(true));
    assert_eq!(transport.keepalive_time(), Some(Duration::from_secs(20)));
}

#[test]
fn a_refused_stream_fails_the_call_as_unprocessed() {
    let addr = raw_server(|_| {
        let mut out = server_hello();
        RstStream::new(StreamId::new(1), Reason::REFUSED_STREAM).encode(&mut out);
        out
    });
    let (_t, conn, events) = connect(TransportConfig::default(), &addr);
    let (tx, rx) = bounded(1);
    conn.start_call(
        CallRequest::new("/s/m", b"x".to_vec()),
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    let err = rx.recv_timeout(WAIT).unwrap().unwrap_err();
    assert!(err.unprocessed, "{err:?}");
    assert_eq!(err.status.code(), Code::Unavailable);
    assert_eq!(events.recv_timeout(WAIT), Ok(ConnectionEvent::Ready));
}

#[test]
fn a_server_that_is_not_http2_fails_the_connection() {
    let addr = raw_server(|_| b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec());
    let (_t, _conn, events) = connect(TransportConfig::default(), &addr);
    match events.recv_timeout(WAIT) {
        Ok(ConnectionEvent::Closed(Some(s))) => {
            assert_eq!(s.code(), Code::Unavailable);
            assert!(
                s.message().contains("PROTOCOL_ERROR") || s.message().contains("FRAME_SIZE"),
                "{s}"
            );
        }
        other => panic!("{other:?}"),
    }
}
