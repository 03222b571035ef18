//! Tests of the in-memory transport's scripted behaviour.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_core::transport::{CallError, CallRequest, CallResponse, ConnectOptions, ConnectionEvent};
use lb_core::{Address, Code, Connection, ConnectionExt, Status, Transport};
use lb_testkit::{InMemoryTransport, ManualClock};
use parking_lot::Mutex;

fn opts() -> ConnectOptions {
    ConnectOptions {
        authority: "svc".into(),
        connect_deadline: Instant::now(),
        user_agent: "test".into(),
        transport_options: Default::default(),
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

/// Starts a call and returns the receiver of its result.
fn start(
    conn: &dyn Connection,
    deadline: Option<Instant>,
) -> crossbeam_channel::Receiver<Result<CallResponse, CallError>> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let mut req = CallRequest::new("/s/m", b"x".to_vec());
    req.deadline = deadline;
    conn.start_call(req, Box::new(move |r| tx.send(r).unwrap()));
    rx
}

#[test]
fn latency_runs_on_the_manual_clock() {
    let clock = ManualClock::new();
    let t = InMemoryTransport::with_clock(clock.shared());
    echo(&t, "a:1");
    t.set_latency("a:1", Duration::from_millis(50));
    let (conn, _) = connect(&t, "a:1");
    let rx = start(&*conn, None);
    assert!(rx.try_recv().is_err(), "not before the latency");
    assert_eq!(t.pending_calls("a:1"), 1);
    clock.advance(Duration::from_millis(49));
    assert!(rx.try_recv().is_err());
    clock.advance(Duration::from_millis(1));
    assert_eq!(rx.try_recv().unwrap().unwrap().message, b"x");
    assert_eq!(t.pending_calls("a:1"), 0);
}

#[test]
fn latency_on_real_time_is_delivered_by_a_timer_thread() {
    let t = InMemoryTransport::new();
    echo(&t, "a:1");
    t.set_latency("a:1", Duration::from_millis(5));
    let (conn, _) = connect(&t, "a:1");
    let started = Instant::now();
    let rx = start(&*conn, None);
    let got = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(got.unwrap().message, b"x");
    assert!(started.elapsed() >= Duration::from_millis(5));
}

#[test]
fn scripted_failures_count_only_what_the_server_saw() {
    let t = InMemoryTransport::new();
    echo(&t, "a:1");
    let (conn, _) = connect(&t, "a:1");
    t.fail_next_calls(
        "a:1",
        2,
        CallError::unprocessed(Status::unavailable("refused stream")),
    );
    for _ in 0..2 {
        let err = call(&*conn).unwrap_err();
        assert!(err.unprocessed);
    }
    assert_eq!(
        t.call_count("a:1"),
        0,
        "unprocessed calls never reached the server"
    );
    t.fail_next_calls("a:1", 1, Status::internal("boom").into());
    assert_eq!(call(&*conn).unwrap_err().status.code(), Code::Internal);
    assert!(call(&*conn).is_ok(), "only the next n fail");
    assert_eq!(t.call_count("a:1"), 2);
}

#[test]
fn held_calls_wait_for_release_their_deadline_or_the_connection() {
    let clock = ManualClock::new();
    let t = InMemoryTransport::with_clock(clock.shared());
    echo(&t, "a:1");
    t.hold_calls("a:1");
    let (conn, _) = connect(&t, "a:1");
    let released = start(&*conn, None);
    let timed = start(&*conn, Some(clock.now() + Duration::from_secs(1)));
    assert!(t.wait_for_pending_calls("a:1", 2, Duration::from_secs(30)));
    assert_eq!(t.call_count("a:1"), 2, "held calls reached the server");
    clock.advance(Duration::from_secs(1));
    let err = timed.try_recv().unwrap().unwrap_err();
    assert_eq!(err.status.code(), Code::DeadlineExceeded);
    t.release_calls("a:1");
    assert_eq!(released.try_recv().unwrap().unwrap().message, b"x");

    t.hold_calls("a:1");
    let cut = start(&*conn, None);
    conn.close();
    let err = cut.try_recv().unwrap().unwrap_err();
    assert_eq!(err.status.code(), Code::Unavailable);
    assert!(!err.unprocessed, "the server had the call");
}

#[test]
fn held_connections_stay_connecting_until_let_go() {
    let t = InMemoryTransport::new();
    echo(&t, "a:1");
    t.hold_connections("a:1", true);
    let (conn, events) = connect(&t, "a:1");
    let (closed, closed_events) = connect(&t, "a:1");
    assert!(events.lock().is_empty());
    assert!(call(&*conn).unwrap_err().unprocessed, "not ready yet");
    closed.close();
    t.hold_connections("a:1", false);
    assert_eq!(*events.lock(), [ConnectionEvent::Ready]);
    assert_eq!(*closed_events.lock(), [ConnectionEvent::Closed(None)]);
    assert!(call(&*conn).is_ok());
    assert_eq!(t.connect_count("a:1"), 2);
    t.refuse_connections("a:1", true);
    let _ = connect(&t, "a:1");
    assert_eq!(t.connect_count("a:1"), 3, "refused attempts count too");
}
