//! Our client (`H2Transport`) against a gRPC server we did not write: grpcio, which is
//! gRPC C-core, run by `xtask/peers/grpc_server.py`. Needs the peers that
//! `cargo xtask test` installs (see `lb_testkit::peers::require_peers`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded, unbounded};
use lb_core::transport::{CallError, CallRequest, CallResponse, ConnectOptions, ConnectionEvent};
use lb_core::{Address, Code, Connection, ConnectionExt, Transport};
use lb_testkit::peers::{self, GrpcServer, GrpcServerOptions};
use lb_transport::driver::{H2Transport, TransportConfig};

const WAIT: Duration = Duration::from_secs(20);

struct Client {
    _transport: H2Transport,
    conn: Arc<dyn Connection>,
    events: Receiver<ConnectionEvent>,
}

fn connect(target: &str) -> Client {
    let transport = H2Transport::new(TransportConfig::default()).unwrap();
    let (tx, events) = unbounded();
    let opts = ConnectOptions {
        authority: target.into(),
        connect_deadline: Instant::now() + Duration::from_secs(20),
        user_agent: "lb-transport-test".into(),
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
        events,
    }
}

fn start(conn: &dyn Connection, call: CallRequest) -> Receiver<Result<CallResponse, CallError>> {
    let (tx, rx) = bounded(1);
    conn.start_call(
        call,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx
}

fn call(conn: &dyn Connection, call: CallRequest) -> Result<CallResponse, CallError> {
    start(conn, call)
        .recv_timeout(WAIT)
        .expect("call completed")
}

fn server(id: &str) -> Option<GrpcServer> {
    let env = peers::require_peers()?;
    let options = GrpcServerOptions {
        id: id.into(),
        log_calls: true,
        ..GrpcServerOptions::default()
    };
    Some(GrpcServer::start(&env, options).unwrap())
}

#[test]
fn unary_echo_of_16b_1mib_and_4mib() {
    let Some(server) = server("c-core") else {
        return;
    };
    let c = connect(&server.target());
    for len in [16, 1 << 20, 4 << 20] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
        let r = call(
            &*c.conn,
            CallRequest::new("/bench.Echo/Unary", payload.clone()),
        )
        .unwrap();
        assert_eq!(r.message.len(), len);
        assert!(r.message == payload, "{len}-byte echo corrupted");
    }
}

#[test]
fn metadata_round_trips_including_binary() {
    let Some(server) = server("c-core") else {
        return;
    };
    let c = connect(&server.target());
    let mut req = CallRequest::new("/test.Echo/Echo", b"m".to_vec());
    req.metadata.insert("x-ascii", "hello").unwrap();
    req.metadata
        .insert_bin("x-trace-bin", &[0, 1, 0xff, b','])
        .unwrap();
    let r = call(&*c.conn, req).unwrap();
    for md in [&r.headers, &r.trailers] {
        assert_eq!(md.get("x-ascii"), Some("hello"), "{md:?}");
        assert_eq!(
            md.get_bin("x-trace-bin"),
            Some(&[0u8, 1, 0xff, b','][..]),
            "{md:?}"
        );
    }
    assert_eq!(r.headers.get("x-server-id"), Some("c-core"));
}

#[test]
fn error_status_message_needing_percent_encoding_arrives_exactly() {
    let Some(server) = server("c-core") else {
        return;
    };
    let c = connect(&server.target());
    let mut req = CallRequest::new("/test.Echo/Status", Vec::new());
    req.metadata.insert("x-status-code", "7").unwrap();
    let message = "permission \u{e9} 100%\r\n\u{65e5}";
    req.metadata
        .insert_bin("x-status-message-bin", message.as_bytes())
        .unwrap();
    let err = call(&*c.conn, req).unwrap_err();
    assert_eq!(err.status.code(), Code::PermissionDenied);
    assert_eq!(err.status.message(), message);
    assert!(!err.unprocessed);
}

#[test]
fn deadline_exceeded_ends_the_call_at_its_deadline() {
    let Some(server) = server("c-core") else {
        return;
    };
    let c = connect(&server.target());
    let mut req = CallRequest::new("/test.Echo/Sleep", b"3000".to_vec());
    let t = Instant::now();
    req.deadline = Some(t + Duration::from_millis(300));
    let err = call(&*c.conn, req).unwrap_err();
    let took = t.elapsed();
    assert_eq!(err.status.code(), Code::DeadlineExceeded, "{err}");
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // The connection is still good.
    let r = call(&*c.conn, CallRequest::new("/test.Echo/Who", Vec::new())).unwrap();
    assert_eq!(r.message, b"c-core");
}

#[test]
fn server_going_away_mid_traffic_finishes_calls_and_reports_goaway() {
    let Some(mut server) = server("c-core") else {
        return;
    };
    let c = connect(&server.target());
    let in_flight: Vec<_> = (0..4)
        .map(|_| {
            start(
                &*c.conn,
                CallRequest::new("/test.Echo/Sleep", b"700".to_vec()),
            )
        })
        .collect();
    for _ in 0..4 {
        server.wait_for_line("CALL /test.Echo/Sleep", WAIT).unwrap();
    }
    let stopper = std::thread::spawn(move || {
        let status = server.stop_graceful();
        (server, status)
    });
    for rx in in_flight {
        let r = rx.recv_timeout(WAIT).expect("completed");
        assert_eq!(
            r.map(|r| r.message).map_err(|e| e.status),
            Ok(b"700".to_vec())
        );
    }
    let (_server, status) = stopper.join().unwrap();
    assert!(status.unwrap().success());
    let mut saw_goaway = false;
    let mut closed = false;
    while let Ok(e) = c.events.recv_timeout(WAIT) {
        match e {
            ConnectionEvent::GoAway { .. } => saw_goaway = true,
            ConnectionEvent::Closed(_) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(saw_goaway && closed, "goaway {saw_goaway}, closed {closed}");
    // A call after the GOAWAY is refused without reaching any server.
    let err = call(&*c.conn, CallRequest::new("/test.Echo/Who", Vec::new())).unwrap_err();
    assert!(err.unprocessed, "{err:?}");
}

#[test]
fn killed_server_fails_in_flight_calls_and_closes_the_connection() {
    let Some(mut server) = server("c-core") else {
        return;
    };
    let c = connect(&server.target());
    let rx = start(
        &*c.conn,
        CallRequest::new("/test.Echo/Sleep", b"5000".to_vec()),
    );
    server.wait_for_line("CALL /test.Echo/Sleep", WAIT).unwrap();
    server.kill();
    let err = rx.recv_timeout(WAIT).expect("completed").unwrap_err();
    assert_eq!(err.status.code(), Code::Unavailable, "{err}");
    let closed = (0..4).find_map(|_| match c.events.recv_timeout(WAIT) {
        Ok(ConnectionEvent::Closed(e)) => Some(e),
        _ => None,
    });
    assert!(matches!(closed, Some(Some(_))), "{closed:?}");
}

#[test]
fn connecting_to_a_closed_port_reports_a_failure() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let transport = H2Transport::new(TransportConfig::default()).unwrap();
    let (tx, events) = unbounded();
    let opts = ConnectOptions {
        authority: "x".into(),
        connect_deadline: Instant::now() + Duration::from_secs(5),
        user_agent: "t".into(),
        transport_options: Default::default(),
    };
    let sink = Arc::new(move |e| {
        let _ = tx.send(e);
    });
    let _conn = transport
        .connect(&Address::new(format!("127.0.0.1:{port}")), &opts, sink)
        .unwrap();
    match events.recv_timeout(WAIT) {
        Ok(ConnectionEvent::Closed(Some(s))) => assert_eq!(s.code(), Code::Unavailable),
        other => panic!("{other:?}"),
    }
}
