//! Tests of the in-memory transport's scripted behaviour.

use std::sync::Arc;
use std::time::Instant;

use lb_core::transport::{CallError, CallRequest, CallResponse, ConnectOptions, ConnectionEvent};
use lb_core::{Address, Code, Connection, Status, Transport};
use lb_testkit::InMemoryTransport;
use parking_lot::Mutex;

fn opts() -> ConnectOptions {
    ConnectOptions {
        authority: "svc".into(),
        connect_deadline: Instant::now(),
        user_agent: "test".into(),
    }
}

fn connect(
    t: &InMemoryTransport,
    addr: &str,
) -> (Arc<dyn Connection>, Arc<Mutex<Vec<ConnectionEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let conn = t
        .connect(
            &Address::new(addr),
            &opts(),
            Arc::new(move |e| sink.lock().push(e)),
        )
        .unwrap();
    (conn, events)
}

fn call(conn: &dyn Connection) -> Result<CallResponse, CallError> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    conn.start_call(
        CallRequest::new("/s/m", b"x".to_vec()),
        Box::new(move |r| tx.send(r).unwrap()),
    );
    rx.recv().unwrap()
}

fn echo(t: &InMemoryTransport, addr: &str) {
    t.add_server(addr, |req: &CallRequest| {
        Ok(CallResponse {
            message: req.message.clone(),
            ..Default::default()
        })
    });
}

#[test]
fn unknown_and_refusing_servers_close_with_unavailable() {
    let t = InMemoryTransport::new();
    let (_, events) = connect(&t, "nobody:1");
    match &events.lock()[..] {
        [ConnectionEvent::Closed(Some(s))] => assert_eq!(s.code(), Code::Unavailable),
        other => panic!("{other:?}"),
    }
    echo(&t, "a:1");
    t.refuse_connections("a:1", true);
    let (conn, events) = connect(&t, "a:1");
    assert!(matches!(
        &events.lock()[..],
        [ConnectionEvent::Closed(Some(_))]
    ));
    let err = call(&*conn).unwrap_err();
    assert_eq!(err.status.code(), Code::Unavailable);
    assert!(
        err.unprocessed,
        "a call on a refused connection was never sent"
    );
    t.refuse_connections("a:1", false);
    let (conn, events) = connect(&t, "a:1");
    assert_eq!(*events.lock(), [ConnectionEvent::Ready]);
    assert_eq!(call(&*conn).unwrap().message, b"x");
    assert_eq!(t.call_count("a:1"), 1);
}

#[test]
fn stopping_a_server_fails_its_connections_and_counts_them() {
    let t = InMemoryTransport::new();
    echo(&t, "a:1");
    let (c1, e1) = connect(&t, "a:1");
    let (_c2, _e2) = connect(&t, "a:1");
    assert_eq!(t.connection_count("a:1"), 2);
    t.remove_server("a:1");
    assert!(
        matches!(e1.lock().last(), Some(ConnectionEvent::Closed(Some(s))) if s.code() == Code::Unavailable)
    );
    assert_eq!(call(&*c1).unwrap_err().status.code(), Code::Unavailable);
    assert_eq!(t.connection_count("a:1"), 0);
}

#[test]
fn go_away_then_close_and_close_is_idempotent() {
    let t = InMemoryTransport::new();
    echo(&t, "a:1");
    let (conn, events) = connect(&t, "a:1");
    t.go_away("a:1");
    conn.close();
    conn.close();
    let events = events.lock();
    assert!(
        matches!(events[1], ConnectionEvent::GoAway { .. }),
        "{events:?}"
    );
    assert_eq!(events[2], ConnectionEvent::Closed(None));
    assert_eq!(events.len(), 3, "one Closed only: {events:?}");
}

#[test]
fn server_errors_reach_the_caller() {
    let t = InMemoryTransport::new();
    t.add_server("a:1", |_: &CallRequest| {
        Err(Status::new(Code::NotFound, "no such thing"))
    });
    let (conn, _) = connect(&t, "a:1");
    let err = call(&*conn).unwrap_err();
    assert!(!err.unprocessed, "the server saw this call");
    assert_eq!(
        (err.status.code(), err.status.message()),
        (Code::NotFound, "no such thing")
    );
}
