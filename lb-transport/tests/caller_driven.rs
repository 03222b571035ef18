//! Caller-driven I/O (`CallStream::drive`, `lb_transport::driver::poller`) against
//! grpcio (gRPC C-core, `xtask/peers/grpc_server.py`): a blocked caller runs its
//! own call's I/O and callbacks on its thread; a caller that cannot drive (another
//! thread polls) is still answered; callers parked behind a driver are never
//! stranded when it leaves; calls followed only through their listener never wait
//! for a driver. Needs the peers that `cargo xtask test` installs; every wait is
//! bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, bounded};
use lb_core::channel::{CallOptions, Channel};
use lb_core::transport::{CallHead, CallListener, CallOutcome, CallRequest, CallStream};
use lb_core::{Code, Connection, ConnectionExt, Metadata};
use lb_testkit::peers::{self, GrpcServer, GrpcServerOptions};
use lb_transport::driver::{H2Transport, TransportConfig};

/// The longest any single wait may take.
const WAIT: Duration = Duration::from_secs(20);

fn server() -> Option<GrpcServer> {
    let env = peers::require_peers()?;
    Some(GrpcServer::start(&env, GrpcServerOptions::default()).unwrap())
}

/// One READY connection to `target` on a transport of its own.
fn connect(target: &str) -> (H2Transport, Arc<dyn Connection>) {
    let transport = H2Transport::new(TransportConfig::default()).unwrap();
    let conn = lb_testkit::connect_ready(&transport, target, WAIT);
    (transport, conn)
}

/// Where and how a call ended, as its listener reports it.
type Ended = crossbeam_channel::Receiver<(ThreadId, CallOutcome)>;

/// Records where and how a call ended.
struct Ending {
    closed: AtomicBool,
    tx: Sender<(ThreadId, CallOutcome)>,
}

impl CallListener for Ending {
    fn on_headers(&self, _: Metadata) {}
    fn on_message(&self, _: Vec<u8>) {}
    fn on_writable(&self) {}
    fn on_close(&self, outcome: CallOutcome) {
        let _ = self.tx.send((thread::current().id(), outcome));
        self.closed.store(true, Ordering::Release);
    }
}

/// Opens `method` with one request `message`; `caller_drives` as given.
fn open_call(
    conn: &dyn Connection,
    method: &str,
    message: &[u8],
    caller_drives: bool,
) -> (Arc<dyn CallStream>, Arc<Ending>, Ended) {
    let (tx, rx) = bounded(1);
    let ending = Arc::new(Ending {
        closed: AtomicBool::new(false),
        tx,
    });
    let mut head = CallHead::new(method);
    head.caller_drives = caller_drives;
    let stream = conn.open_stream(head, ending.clone());
    stream.try_send(message.to_vec(), true).unwrap();
    (stream, ending, rx)
}

/// Opens `/test.Echo/Echo` with one message; `caller_drives` as given.
fn open_echo(
    conn: &dyn Connection,
    caller_drives: bool,
) -> (Arc<dyn CallStream>, Arc<Ending>, Ended) {
    open_call(conn, "/test.Echo/Echo", b"ping", caller_drives)
}

/// One `/test.Echo/Echo` of `cb` through the callback API (followed through its
/// listener only), waited for at most `WAIT`.
fn callback_echo(
    conn: &dyn Connection,
) -> Result<lb_core::transport::CallResponse, lb_core::transport::CallError> {
    let (tx, rx) = bounded(1);
    conn.start_call(
        CallRequest::new("/test.Echo/Echo", b"cb".to_vec()),
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.recv_timeout(WAIT).expect("answered")
}

/// Waits for the call to end, driving while it can; returns the thread its
/// `on_close` ran on and how it ended.
fn drive_to_end(stream: &dyn CallStream, ending: &Ending, rx: &Ended) -> (ThreadId, CallOutcome) {
    let deadline = Instant::now() + WAIT;
    while !ending.closed.load(Ordering::Acquire) && Instant::now() < deadline {
        let mut until = || ending.closed.load(Ordering::Acquire);
        if !stream.drive(&mut until, Some(deadline)) {
            break;
        }
    }
    rx.recv_timeout(WAIT).expect("the call ended in time")
}

#[test]
fn a_blocked_caller_runs_its_own_call() {
    let Some(server) = server() else { return };
    let (_transport, conn) = connect(&server.target());
    let me = thread::current().id();
    let mut here = 0;
    for _ in 0..20 {
        let (stream, ending, rx) = open_echo(&*conn, true);
        let (thread, outcome) = drive_to_end(&*stream, &ending, &rx);
        assert_eq!(outcome.status.code(), Code::Ok, "{outcome:?}");
        if thread == me {
            here += 1;
        }
    }
    // The I/O thread takes the loop back only after a pause without a driver (or
    // while a connection is being set up), so most of these calls run here; on a
    // loaded machine some may not.
    assert!(here >= 1, "no call ran on its caller's thread");
}

#[test]
fn a_call_not_opened_for_driving_is_never_driven_and_still_ends() {
    let Some(server) = server() else { return };
    let (_transport, conn) = connect(&server.target());
    for _ in 0..5 {
        let (stream, _ending, rx) = open_echo(&*conn, false);
        let mut until = || false;
        assert!(!stream.drive(&mut until, Some(Instant::now() + WAIT)));
        let (thread, outcome) = rx.recv_timeout(WAIT).expect("answered by the I/O thread");
        assert_eq!(outcome.status.code(), Code::Ok, "{outcome:?}");
        assert_ne!(thread, thread::current().id());
    }
    // The callback API follows its calls through their listeners only.
    for _ in 0..5 {
        let reply = callback_echo(&*conn).expect("ok");
        assert_eq!(reply.message, b"cb");
    }
}

#[test]
fn a_caller_shut_out_by_another_driver_is_answered() {
    let Some(server) = server() else { return };
    let (_transport, conn) = connect(&server.target());
    // Another thread makes slow calls (the server sleeps 100 ms) and drives them,
    // holding the loop for a slice at a time; it says when it first holds it.
    let stop = Arc::new(AtomicBool::new(false));
    let (holding_tx, holding) = bounded(1);
    let driver = {
        let (stop, conn) = (stop.clone(), conn.clone());
        thread::spawn(move || {
            for _ in 0..50 {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let (stream, ending, rx) = open_call(&*conn, "/test.Echo/Sleep", b"100", true);
                let deadline = Instant::now() + WAIT;
                while !ending.closed.load(Ordering::Acquire) && Instant::now() < deadline {
                    let mut until = || {
                        let _ = holding_tx.try_send(());
                        ending.closed.load(Ordering::Acquire)
                    };
                    if !stream.drive(&mut until, Some(deadline)) {
                        break;
                    }
                }
                let (_, outcome) = rx.recv_timeout(WAIT).expect("the slow call ended");
                assert_eq!(outcome.status.code(), Code::Ok, "{outcome:?}");
            }
            thread::current().id()
        })
    };
    holding
        .recv_timeout(WAIT)
        .expect("the other thread drove the loop");
    let mut threads = Vec::new();
    for _ in 0..20 {
        let (stream, ending, rx) = open_echo(&*conn, true);
        let (thread, outcome) = drive_to_end(&*stream, &ending, &rx);
        assert_eq!(outcome.status.code(), Code::Ok, "{outcome:?}");
        threads.push(thread);
    }
    stop.store(true, Ordering::Release);
    let other = driver.join().unwrap();
    // The first calls start while the other thread holds the loop: they are shut
    // out, park, and are answered by the other thread's polling.
    assert!(
        threads.contains(&other),
        "no call was answered by the driving thread"
    );
}

#[test]
fn concurrent_channel_calls_all_end_while_callers_take_turns_driving() {
    let Some(server) = server() else { return };
    let transport = Arc::new(H2Transport::new(TransportConfig::default()).unwrap());
    let channel = Channel::builder(format!("ipv4:{}", server.target()))
        .transport(transport.clone())
        .build()
        .unwrap();
    let (_t2, conn) = connect(&server.target());
    let failures = AtomicUsize::new(0);
    thread::scope(|s| {
        for t in 0..8 {
            let (channel, failures) = (&channel, &failures);
            s.spawn(move || {
                for i in 0..100 {
                    let options = CallOptions::default().with_timeout(WAIT);
                    let message = format!("{t}-{i}").into_bytes();
                    match channel.unary("/test.Echo/Echo", message.clone(), options) {
                        Ok(r) if r.message == message => {}
                        other => {
                            eprintln!("call {t}-{i}: {other:?}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        // Meanwhile, callback-only calls on another transport's loop and a
        // streaming call on the channel's.
        s.spawn(|| {
            for _ in 0..50 {
                assert!(callback_echo(&*conn).is_ok());
            }
        });
        s.spawn(|| {
            let call = channel
                .bidi_streaming(
                    "/test.Stream/Bidi",
                    CallOptions::default().with_timeout(WAIT),
                )
                .unwrap();
            for i in 0..50u32 {
                call.send(i.to_be_bytes().to_vec()).unwrap();
                assert_eq!(call.recv().unwrap(), Some(i.to_be_bytes().to_vec()));
            }
            call.close_send();
            assert_eq!(call.recv().unwrap(), None);
        });
    });
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    channel.close();
}
