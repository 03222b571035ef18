//! An in-memory [`Transport`]: servers are closures, failures are scripted.
//!
//! ```text
//!   connect(addr) ──> refused?  ──> Closed(UNAVAILABLE)
//!                     held?     ──> stays CONNECTING until hold_connections(addr, false)
//!                     else      ──> Ready
//!   open_stream ──> connection closed or server gone ──> on_close(UNAVAILABLE, NotSent)
//!   unary server (add_server): the request's last message arrives
//!                  scripted failure? ──> that error (unprocessed ones are not counted)
//!                  calls held?       ──> parked until release_calls(addr) or the deadline
//!                  latency?          ──> answered `latency` later, on the transport's clock
//!                  else              ──> answered inline, on the calling thread
//!   streaming server (add_stream_server): the handler runs on its own thread
//!                  ("lb-testkit-stream"), reading and writing through a ServerStream
//! ```
//!
//! Streams have flow control like HTTP/2's: the client's `try_send` answers `Full`
//! once the handler has `stream_window` bytes it has not read (and `on_writable`
//! follows when it reads), and the handler's `send` blocks once the client holds
//! `stream_window` bytes it has not released. So tests of backpressure run here too.
//!
//! Time comes from a [`Clock`]: with a `ManualClock` a delayed or held call ends when
//! the test moves the clock past its latency or deadline; with real time a timer
//! thread (`lb-testkit-timer`, started on first need, ended when the transport is
//! dropped) delivers them.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender};
use lb_core::channel::{Clock, ClockListener, SystemClock};
use lb_core::transport::{
    CallError, CallHead, CallListener, CallOutcome, CallRequest, CallResponse, CallStream,
    ClosedStream, ConnectOptions, ConnectionEvent, ConnectionEvents, Progress, TrySendError,
};
use lb_core::{Address, Connection, Metadata, Status, Transport};
use parking_lot::{Condvar, Mutex};

/// A server: answers one request.
pub type ServerHandler = Arc<dyn Fn(&CallRequest) -> Result<CallResponse, Status> + Send + Sync>;

/// A streaming server: runs once per call on its own thread, reading and writing
/// through the [`ServerStream`]; returns the trailers' metadata for an OK end, or the
/// status to end with.
pub type StreamHandler =
    Arc<dyn Fn(&mut ServerStream) -> Result<Metadata, Status> + Send + Sync + 'static>;

/// The default flow-control window of in-memory streams, each way.
pub const DEFAULT_STREAM_WINDOW: usize = 64 << 10;

#[derive(Clone)]
enum Handler {
    Unary(ServerHandler),
    Stream(StreamHandler),
}

struct Server {
    handler: Handler,
    refusing: bool,
    holding_connections: bool,
    holding_calls: bool,
    latency: Duration,
    /// Fail this many next calls with this error.
    failures: Option<(usize, CallError)>,
    connections: Vec<Weak<MemConnection>>,
}

/// Counts that outlive a server's removal.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    calls: usize,
    connects: usize,
}

/// A call the server has but has not answered yet.
struct PendingCall {
    address: String,
    connection: u64,
    request: CallRequest,
    call: Arc<MemCall>,
    /// When the answer goes out; `None` while held.
    ready_at: Option<Instant>,
    result: Option<Result<CallResponse, CallError>>,
}

#[derive(Default)]
struct State {
    servers: HashMap<String, Server>,
    stats: HashMap<String, Stats>,
    pending: Vec<PendingCall>,
    /// Streaming calls with a deadline, for [`Shared::fire`].
    timed_streams: Vec<Weak<MemCall>>,
    next_connection: u64,
    timer: Option<Sender<()>>,
    stream_window: usize,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled whenever a call is parked.
    parked: Condvar,
    clock: Arc<dyn Clock>,
    real_time: bool,
    _listener: Arc<Listener>,
}

/// Delivers due calls when a manual clock moves.
struct Listener(Weak<Shared>);

impl ClockListener for Listener {
    fn advanced(&self, now: Instant) {
        if let Some(shared) = self.0.upgrade() {
            shared.fire(now);
        }
    }
}

/// A transport whose servers live in this process.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use lb_core::transport::{CallRequest, CallResponse, ConnectOptions, ConnectionEvent};
/// use lb_core::{Address, ConnectionExt, Transport};
/// use lb_testkit::InMemoryTransport;
///
/// let transport = InMemoryTransport::new();
/// transport.add_server("echo:1", |req: &CallRequest| {
///     Ok(CallResponse { message: req.message.clone(), ..Default::default() })
/// });
/// let events = Arc::new(parking_lot::Mutex::new(Vec::new()));
/// let sink = events.clone();
/// let opts = ConnectOptions {
///     authority: "echo".into(),
///     connect_deadline: std::time::Instant::now(),
///     user_agent: "test".into(),
///     transport_options: Default::default(),
/// };
/// let conn = transport
///     .connect(&Address::new("echo:1"), &opts, Arc::new(move |e| sink.lock().push(e)))
///     .unwrap();
/// assert_eq!(*events.lock(), [ConnectionEvent::Ready]);
/// let (tx, rx) = crossbeam_channel::bounded(1);
/// conn.start_call(CallRequest::new("/echo.Echo/Say", b"hi".to_vec()), Box::new(move |r| tx.send(r).unwrap()));
/// assert_eq!(rx.recv().unwrap().unwrap().message, b"hi");
/// ```
#[derive(Clone)]
pub struct InMemoryTransport {
    shared: Arc<Shared>,
}

impl InMemoryTransport {
    /// A transport with no servers, on real time.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// A transport with no servers whose latencies and deadlines run on `clock`
    /// (give it the channel's clock).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        let shared = Arc::new_cyclic(|weak: &Weak<Shared>| {
            let listener = Arc::new(Listener(weak.clone()));
            let as_dyn: Arc<dyn ClockListener> = listener.clone();
            let manual = clock.subscribe(Arc::downgrade(&as_dyn));
            Shared {
                state: Mutex::new(State {
                    stream_window: DEFAULT_STREAM_WINDOW,
                    ..State::default()
                }),
                parked: Condvar::new(),
                clock,
                real_time: !manual,
                _listener: listener,
            }
        });
        Self { shared }
    }

    /// Serves `address` with `handler`, a unary server (one request message, one
    /// response), replacing any server there (whose connections close).
    pub fn add_server(
        &self,
        address: &str,
        handler: impl Fn(&CallRequest) -> Result<CallResponse, Status> + Send + Sync + 'static,
    ) {
        self.insert_server(address, Handler::Unary(Arc::new(handler)));
    }

    /// Serves `address` with a streaming `handler`, run on its own thread for each
    /// call (of any kind), replacing any server there.
    ///
    /// ```
    /// use lb_testkit::InMemoryTransport;
    /// let transport = InMemoryTransport::new();
    /// transport.add_stream_server("count:1", |call| {
    ///     while let Some(message) = call.recv() {
    ///         for _ in 0..message.len() {
    ///             call.send(b"tick".to_vec())?;
    ///         }
    ///     }
    ///     Ok(lb_core::Metadata::new())
    /// });
    /// ```
    pub fn add_stream_server(
        &self,
        address: &str,
        handler: impl Fn(&mut ServerStream) -> Result<Metadata, Status> + Send + Sync + 'static,
    ) {
        self.insert_server(address, Handler::Stream(Arc::new(handler)));
    }

    /// Sets the flow-control window of streams opened from now on (each way, in
    /// message bytes; [`DEFAULT_STREAM_WINDOW`] until set).
    pub fn set_stream_window(&self, bytes: usize) {
        self.shared.state.lock().stream_window = bytes.max(1);
    }

    fn insert_server(&self, address: &str, handler: Handler) {
        let old = self.shared.state.lock().servers.insert(
            address.into(),
            Server {
                handler,
                refusing: false,
                holding_connections: false,
                holding_calls: false,
                latency: Duration::ZERO,
                failures: None,
                connections: Vec::new(),
            },
        );
        if let Some(old) = old {
            close_all(old.connections, None);
        }
    }

    /// Serves `address` with a handler that answers every call with the address
    /// itself as the message, so a test sees where each call went.
    pub fn serve_address(&self, address: &str) {
        let name = address.as_bytes().to_vec();
        self.add_server(address, move |_: &CallRequest| {
            Ok(CallResponse {
                message: name.clone(),
                ..Default::default()
            })
        });
    }

    /// Stops the server at `address`: its connections close with UNAVAILABLE (calls
    /// it holds fail with it) and new ones are refused.
    pub fn remove_server(&self, address: &str) {
        let old = self.shared.state.lock().servers.remove(address);
        if let Some(old) = old {
            close_all(
                old.connections,
                Some(Status::unavailable(format!("{address}: server stopped"))),
            );
        }
    }

    /// Makes new connections to `address` fail (or succeed again).
    pub fn refuse_connections(&self, address: &str, refuse: bool) {
        self.with_server(address, |s| s.refusing = refuse);
    }

    /// While `hold` is set, new connections to `address` stay CONNECTING: neither
    /// READY nor failed. Clearing it makes the held ones (not closed since) READY.
    pub fn hold_connections(&self, address: &str, hold: bool) {
        let waiting: Vec<Arc<MemConnection>> = {
            let mut state = self.shared.state.lock();
            let Some(s) = state.servers.get_mut(address) else {
                return;
            };
            s.holding_connections = hold;
            if hold {
                return;
            }
            s.connections.iter().filter_map(Weak::upgrade).collect()
        };
        for c in waiting {
            if !c.closed.load(Ordering::SeqCst) && !c.ready.swap(true, Ordering::SeqCst) {
                (c.events)(ConnectionEvent::Ready);
            }
        }
    }

    /// Calls to `address` take `latency` (on the transport's clock) to answer.
    pub fn set_latency(&self, address: &str, latency: Duration) {
        self.with_server(address, |s| s.latency = latency);
    }

    /// The next `n` calls to `address` fail with `error` (an
    /// [`CallError::unprocessed`] one is not counted as served).
    pub fn fail_next_calls(&self, address: &str, n: usize, error: CallError) {
        self.with_server(address, |s| s.failures = (n > 0).then_some((n, error)));
    }

    /// From now on the server at `address` takes calls but does not answer them
    /// until [`InMemoryTransport::release_calls`] (or their deadline).
    pub fn hold_calls(&self, address: &str) {
        self.with_server(address, |s| s.holding_calls = true);
    }

    /// Answers every call held at `address` and stops holding.
    pub fn release_calls(&self, address: &str) {
        let (held, handler) = {
            let mut state = self.shared.state.lock();
            let Some(s) = state.servers.get_mut(address) else {
                return;
            };
            s.holding_calls = false;
            let Handler::Unary(handler) = s.handler.clone() else {
                return;
            };
            let (held, rest) = std::mem::take(&mut state.pending)
                .into_iter()
                .partition(|p| p.address == address && p.ready_at.is_none());
            state.pending = rest;
            (held, handler)
        };
        for p in held {
            let result = handler(&p.request).map_err(CallError::from);
            p.call.finish_unary(result);
        }
    }

    /// How many calls `address` holds or has not answered yet.
    pub fn pending_calls(&self, address: &str) -> usize {
        let state = self.shared.state.lock();
        state
            .pending
            .iter()
            .filter(|p| p.address == address)
            .count()
    }

    /// Waits (at most `timeout` of real time) until `address` holds at least `n`
    /// unanswered calls. Returns whether it does.
    pub fn wait_for_pending_calls(&self, address: &str, n: usize, timeout: Duration) -> bool {
        self.wait_for_pending(|p| p.address == address, n, timeout)
    }

    /// Waits (at most `timeout` of real time) until the servers together hold at
    /// least `n` unanswered calls. Returns whether they do.
    pub fn wait_for_pending_total(&self, n: usize, timeout: Duration) -> bool {
        self.wait_for_pending(|_| true, n, timeout)
    }

    fn wait_for_pending(
        &self,
        counts: impl Fn(&PendingCall) -> bool,
        n: usize,
        timeout: Duration,
    ) -> bool {
        let give_up = Instant::now() + timeout;
        let mut state = self.shared.state.lock();
        loop {
            if state.pending.iter().filter(|p| counts(p)).count() >= n {
                return true;
            }
            if self
                .shared
                .parked
                .wait_until(&mut state, give_up)
                .timed_out()
            {
                return state.pending.iter().filter(|p| counts(p)).count() >= n;
            }
        }
    }

    /// Closes every connection to `address` cleanly (as after an idle timeout).
    pub fn close_connections(&self, address: &str) {
        let conns = self.take_connections(address);
        close_all(conns, None);
    }

    /// Sends GOAWAY on every connection to `address`, then closes them.
    pub fn go_away(&self, address: &str) {
        for c in self
            .take_connections(address)
            .iter()
            .filter_map(Weak::upgrade)
        {
            (c.events)(ConnectionEvent::GoAway {
                reason: "server going away".into(),
                too_many_pings: false,
            });
            c.close_with(None);
        }
    }

    /// How many open connections `address` has.
    pub fn connection_count(&self, address: &str) -> usize {
        let mut state = self.shared.state.lock();
        state.servers.get_mut(address).map_or(0, |s| {
            s.connections.retain(|c| {
                c.upgrade()
                    .is_some_and(|c| !c.closed.load(Ordering::SeqCst))
            });
            s.connections.len()
        })
    }

    /// How many calls `address` has received (answered, failed or held), over its
    /// whole life.
    pub fn call_count(&self, address: &str) -> usize {
        let state = self.shared.state.lock();
        state.stats.get(address).map_or(0, |s| s.calls)
    }

    /// How many connection attempts `address` has seen, refused ones included.
    pub fn connect_count(&self, address: &str) -> usize {
        let state = self.shared.state.lock();
        state.stats.get(address).map_or(0, |s| s.connects)
    }

    fn with_server(&self, address: &str, f: impl FnOnce(&mut Server)) {
        if let Some(s) = self.shared.state.lock().servers.get_mut(address) {
            f(s);
        }
    }

    fn take_connections(&self, address: &str) -> Vec<Weak<MemConnection>> {
        self.shared
            .state
            .lock()
            .servers
            .get_mut(address)
            .map(|s| std::mem::take(&mut s.connections))
            .unwrap_or_default()
    }
}

impl Default for InMemoryTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for InMemoryTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state.lock();
        f.debug_list().entries(state.servers.keys()).finish()
    }
}

impl Shared {
    /// Answers every pending call that is due at `now`, fails those whose deadline
    /// passed, and ends streaming calls past their deadline.
    fn fire(&self, now: Instant) {
        let (due, streams) = {
            let mut state = self.state.lock();
            let (due, rest) = std::mem::take(&mut state.pending)
                .into_iter()
                .partition(|p| is_due(p, now));
            state.pending = rest;
            let mut expired = Vec::new();
            state.timed_streams.retain(|w| match w.upgrade() {
                Some(c) if c.is_closed() => false,
                Some(c) if c.head.deadline.is_some_and(|d| d <= now) => {
                    expired.push(c);
                    false
                }
                Some(_) => true,
                None => false,
            });
            (due, expired)
        };
        for p in due {
            let expired = p
                .request
                .deadline
                .filter(|d| *d <= now && p.ready_at.is_none_or(|r| r > *d));
            let result = match (expired, p.result) {
                (Some(_), _) | (None, None) => Err(CallError::from(Status::deadline_exceeded(
                    "deadline exceeded in the in-memory transport",
                ))),
                (None, Some(result)) => result,
            };
            p.call.finish_unary(result);
        }
        for call in streams {
            call.end(
                Status::deadline_exceeded("deadline exceeded in the in-memory transport"),
                Progress::Processed,
            );
        }
    }

    /// The next time [`Shared::fire`] has something to do.
    fn next_due(&self) -> Option<Instant> {
        let state = self.state.lock();
        let streams = state
            .timed_streams
            .iter()
            .filter_map(Weak::upgrade)
            .filter_map(|c| c.head.deadline);
        state
            .pending
            .iter()
            .flat_map(|p| [p.ready_at, p.request.deadline])
            .flatten()
            .chain(streams)
            .min()
    }

    /// Parks a call; with real time, makes sure the timer thread will see it.
    fn park(self: &Arc<Self>, call: PendingCall) {
        let timed = call.ready_at.is_some() || call.request.deadline.is_some();
        let mut state = self.state.lock();
        state.pending.push(call);
        self.parked.notify_all();
        if timed {
            self.wake_timer(&mut state);
        }
    }

    /// Watches a streaming call's deadline.
    fn watch_deadline(self: &Arc<Self>, call: &Arc<MemCall>) {
        let mut state = self.state.lock();
        state.timed_streams.push(Arc::downgrade(call));
        self.wake_timer(&mut state);
    }

    /// With real time, makes sure the timer thread runs and re-reads the next due
    /// time.
    fn wake_timer(self: &Arc<Self>, state: &mut State) {
        if !self.real_time {
            return;
        }
        if let Some(tx) = &state.timer {
            let _ = tx.send(());
            return;
        }
        // At most one wake-up is ever needed: the thread re-reads everything.
        let (tx, rx) = crossbeam_channel::bounded::<()>(1);
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("lb-testkit-timer".into())
            .spawn(move || {
                loop {
                    let Some(shared) = weak.upgrade() else {
                        return;
                    };
                    shared.fire(shared.clock.now());
                    let next = shared.next_due();
                    drop(shared);
                    let woke = match next {
                        Some(at) => match rx.recv_deadline(at) {
                            Ok(()) | Err(RecvTimeoutError::Timeout) => true,
                            Err(RecvTimeoutError::Disconnected) => false,
                        },
                        None => rx.recv().is_ok(),
                    };
                    if !woke {
                        return;
                    }
                }
            });
        if spawned.is_ok() {
            state.timer = Some(tx);
        }
    }
}

fn is_due(p: &PendingCall, now: Instant) -> bool {
    p.ready_at.is_some_and(|r| r <= now) || p.request.deadline.is_some_and(|d| d <= now)
}

fn close_all(conns: Vec<Weak<MemConnection>>, error: Option<Status>) {
    for c in conns.iter().filter_map(Weak::upgrade) {
        c.close_with(error.clone());
    }
}

struct MemConnection {
    id: u64,
    address: String,
    shared: Arc<Shared>,
    events: ConnectionEvents,
    ready: AtomicBool,
    closed: AtomicBool,
    /// Streaming calls under way, ended when the connection closes.
    streams: Mutex<Vec<Weak<MemCall>>>,
}

impl MemConnection {
    fn close_with(&self, error: Option<Status>) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        (self.events)(ConnectionEvent::Closed(error));
        let failed: Vec<PendingCall> = {
            let mut state = self.shared.state.lock();
            let (failed, rest) = std::mem::take(&mut state.pending)
                .into_iter()
                .partition(|p| p.connection == self.id);
            state.pending = rest;
            failed
        };
        let lost = || {
            Status::unavailable(format!(
                "{}: connection closed while the call was in progress",
                self.address
            ))
        };
        for p in failed {
            p.call.finish_unary(Err(CallError::from(lost())));
        }
        let streams = std::mem::take(&mut *self.streams.lock());
        for call in streams.iter().filter_map(Weak::upgrade) {
            call.end(lost(), Progress::Processed);
        }
    }

    /// Runs a unary server for `call` once its request is complete.
    fn dispatch_unary(&self, call: Arc<MemCall>, messages: Vec<Vec<u8>>) {
        let mut state = self.shared.state.lock();
        let Some(server) = state.servers.get_mut(&self.address) else {
            drop(state);
            return call.finish_unary(Err(CallError::unprocessed(Status::unavailable(
                "server gone before the call was sent",
            ))));
        };
        if let Some((n, error)) = server.failures.take() {
            if n > 1 {
                server.failures = Some((n - 1, error.clone()));
            }
            if !error.unprocessed {
                state.stats.entry(self.address.clone()).or_default().calls += 1;
            }
            drop(state);
            return call.finish_unary(Err(error));
        }
        let (handler, latency, holding) =
            (server.handler.clone(), server.latency, server.holding_calls);
        state.stats.entry(self.address.clone()).or_default().calls += 1;
        drop(state);
        let Handler::Unary(handler) = handler else {
            unreachable!("streaming servers never dispatch unary calls");
        };
        let count = messages.len();
        let Ok::<[Vec<u8>; 1], _>([message]) = messages.try_into() else {
            return call.finish_unary(Err(CallError::from(Status::unimplemented(format!(
                "unary server got {count} request messages"
            )))));
        };
        let request = CallRequest {
            method: call.head.method.to_string(),
            metadata: call.head.metadata.clone(),
            message,
            deadline: call.head.deadline,
            authority: call.head.authority.clone(),
        };
        let (ready_at, result) = if holding {
            (None, None)
        } else {
            let result = handler(&request).map_err(CallError::from);
            if latency.is_zero() {
                return call.finish_unary(result);
            }
            (Some(self.shared.clock.now() + latency), Some(result))
        };
        self.shared.park(PendingCall {
            address: self.address.clone(),
            connection: self.id,
            request,
            call,
            ready_at,
            result,
        });
    }
}

impl Connection for MemConnection {
    fn open_stream(&self, head: CallHead, listener: Arc<dyn CallListener>) -> Arc<dyn CallStream> {
        let not_sent = |why: &str| {
            listener.on_close(CallOutcome::not_sent(Status::unavailable(why)));
            Arc::new(ClosedStream) as Arc<dyn CallStream>
        };
        if self.closed.load(Ordering::SeqCst) {
            return not_sent("connection closed before the call was sent");
        }
        if !self.ready.load(Ordering::SeqCst) {
            return not_sent("connection not ready");
        }
        let (handler, window) = {
            let state = self.shared.state.lock();
            match state.servers.get(&self.address) {
                Some(s) => (s.handler.clone(), state.stream_window),
                None => {
                    drop(state);
                    return not_sent("server gone before the call was sent");
                }
            }
        };
        let Some(conn) = self.shared.connection(self.id, &self.address) else {
            return not_sent("connection closed before the call was sent");
        };
        let streaming = matches!(handler, Handler::Stream(_));
        let call = Arc::new_cyclic(|me| MemCall {
            me: me.clone(),
            head,
            listener,
            window,
            connection: Arc::downgrade(&conn),
            shared: Arc::downgrade(&self.shared),
            streaming,
            state: Mutex::new(CallState::default()),
            changed: Condvar::new(),
            deliver: Mutex::new(false),
        });
        let Handler::Stream(handler) = handler else {
            return call;
        };
        let failure = {
            let mut state = self.shared.state.lock();
            let failure = state.servers.get_mut(&self.address).and_then(|server| {
                let (n, error) = server.failures.take()?;
                if n > 1 {
                    server.failures = Some((n - 1, error.clone()));
                }
                Some(error)
            });
            if failure.as_ref().is_none_or(|e| !e.unprocessed) {
                state.stats.entry(self.address.clone()).or_default().calls += 1;
            }
            failure
        };
        if let Some(error) = failure {
            let progress = if error.unprocessed {
                Progress::Refused
            } else {
                Progress::Processed
            };
            call.end(error.status, progress);
            return call;
        }
        self.streams.lock().push(Arc::downgrade(&call));
        if call.head.deadline.is_some() {
            self.shared.watch_deadline(&call);
        }
        let server_side = call.clone();
        let spawned = std::thread::Builder::new()
            .name("lb-testkit-stream".into())
            .spawn(move || {
                let mut stream = ServerStream {
                    call: server_side.clone(),
                };
                let result = handler(&mut stream);
                let status = match result {
                    Ok(trailers) => Status::ok().with_trailers(trailers),
                    Err(status) => status,
                };
                server_side.end(status, Progress::Processed);
            });
        if let Err(e) = spawned {
            call.end(
                Status::unavailable(format!("cannot start the server thread: {e}")),
                Progress::NotSent,
            );
        }
        call
    }

    fn close(&self) {
        self.close_with(None);
    }
}

impl Shared {
    /// The live connection `id` to `address`, if the server still lists it.
    fn connection(&self, id: u64, address: &str) -> Option<Arc<MemConnection>> {
        let state = self.state.lock();
        state
            .servers
            .get(address)?
            .connections
            .iter()
            .filter_map(Weak::upgrade)
            .find(|c| c.id == id)
    }
}

#[derive(Default)]
struct CallState {
    /// Request messages the server has not taken.
    inbox: VecDeque<Vec<u8>>,
    inbox_bytes: usize,
    /// The client ended its side.
    half_closed: bool,
    /// The client's `try_send` was refused for lack of room.
    writer_waiting: bool,
    /// Response bytes the client has not released.
    unreleased: usize,
    /// The call ended (client cancel, deadline, connection loss or the handler's
    /// return): the status the server side sees.
    ended: Option<Status>,
    headers_sent: bool,
}

/// One in-memory call: the client's [`CallStream`] and the server side's state.
struct MemCall {
    me: Weak<Self>,
    head: CallHead,
    listener: Arc<dyn CallListener>,
    window: usize,
    connection: Weak<MemConnection>,
    shared: Weak<Shared>,
    streaming: bool,
    state: Mutex<CallState>,
    changed: Condvar,
    /// Held while calling the listener, so its calls never overlap or reorder;
    /// `true` once `on_close` went out.
    deliver: Mutex<bool>,
}

impl MemCall {
    fn is_closed(&self) -> bool {
        self.state.lock().ended.is_some()
    }

    /// Ends the call with `status` (both sides) unless it has ended already.
    fn end(&self, status: Status, progress: Progress) {
        {
            let mut state = self.state.lock();
            if state.ended.is_some() {
                return;
            }
            state.ended = Some(status.clone());
            self.changed.notify_all();
        }
        self.close_listener(CallOutcome { status, progress });
    }

    fn close_listener(&self, outcome: CallOutcome) {
        let mut closed = self.deliver.lock();
        if !std::mem::replace(&mut *closed, true) {
            self.listener.on_close(outcome);
        }
    }

    /// Delivers a unary server's answer.
    fn finish_unary(&self, result: Result<CallResponse, CallError>) {
        {
            let mut state = self.state.lock();
            if state.ended.is_some() {
                return;
            }
            state.ended = Some(Status::cancelled("call ended"));
        }
        let mut closed = self.deliver.lock();
        if std::mem::replace(&mut *closed, true) {
            return;
        }
        match result {
            Ok(r) => {
                self.listener.on_headers(r.headers);
                self.listener.on_message(r.message);
                self.listener.on_close(CallOutcome::processed(
                    Status::ok().with_trailers(r.trailers),
                ));
            }
            Err(e) => self.listener.on_close(CallOutcome {
                status: e.status,
                progress: if e.unprocessed {
                    Progress::Refused
                } else {
                    Progress::Processed
                },
            }),
        }
    }

    /// A unary server's request is complete.
    fn dispatch(self: &Arc<Self>) {
        let messages: Vec<Vec<u8>> = std::mem::take(&mut self.state.lock().inbox).into();
        match self.connection.upgrade() {
            Some(conn) if !conn.closed.load(Ordering::SeqCst) => {
                conn.dispatch_unary(self.clone(), messages);
            }
            _ => self.finish_unary(Err(CallError::unprocessed(Status::unavailable(
                "connection closed before the call was sent",
            )))),
        }
    }
}

impl CallStream for MemCall {
    fn try_send(&self, message: Vec<u8>, last: bool) -> Result<(), TrySendError> {
        {
            let mut state = self.state.lock();
            if state.ended.is_some() || state.half_closed {
                return Err(TrySendError::Closed(message));
            }
            if self.streaming && state.inbox_bytes >= self.window {
                state.writer_waiting = true;
                return Err(TrySendError::Full(message));
            }
            state.inbox_bytes += message.len();
            state.inbox.push_back(message);
            state.half_closed = last;
            self.changed.notify_all();
        }
        if last && !self.streaming {
            self.me().dispatch();
        }
        Ok(())
    }

    fn half_close(&self) {
        {
            let mut state = self.state.lock();
            if state.ended.is_some() || state.half_closed {
                return;
            }
            state.half_closed = true;
            self.changed.notify_all();
        }
        if !self.streaming {
            self.me().dispatch();
        }
    }

    fn cancel(&self) {
        if let Some(shared) = self.shared.upgrade() {
            let mut state = shared.state.lock();
            state
                .pending
                .retain(|p| !std::ptr::eq(Arc::as_ptr(&p.call), self));
        }
        self.end(
            Status::cancelled("call cancelled by the client"),
            Progress::Processed,
        );
    }

    fn release(&self, bytes: usize) {
        let mut state = self.state.lock();
        state.unreleased = state.unreleased.saturating_sub(bytes);
        self.changed.notify_all();
    }
}

impl MemCall {
    /// This call as an `Arc` (every `MemCall` lives in one).
    fn me(&self) -> Arc<Self> {
        self.me
            .upgrade()
            .expect("a MemCall is used through its Arc")
    }
}

/// The server's side of one in-memory streaming call, handed to a
/// [`StreamHandler`] on its own thread.
pub struct ServerStream {
    call: Arc<MemCall>,
}

/// How long a handler waits, at most, for one step of its call before giving up
/// (a bound on tests that forget to end a call).
const HANDLER_WAIT_LIMIT: Duration = Duration::from_secs(60);

impl ServerStream {
    /// The call's head: method, metadata, deadline.
    pub fn head(&self) -> &CallHead {
        &self.call.head
    }

    /// The next request message; `None` once the client ended its side, or the call
    /// ended (see [`ServerStream::is_cancelled`]). Blocks until one of them.
    pub fn recv(&mut self) -> Option<Vec<u8>> {
        let give_up = Instant::now() + HANDLER_WAIT_LIMIT;
        let (message, wake_writer) = {
            let mut state = self.call.state.lock();
            loop {
                if state.ended.is_some() {
                    return None;
                }
                if let Some(m) = state.inbox.pop_front() {
                    state.inbox_bytes -= m.len();
                    let wake = state.writer_waiting && state.inbox_bytes < self.call.window;
                    if wake {
                        state.writer_waiting = false;
                    }
                    break (m, wake);
                }
                if state.half_closed {
                    return None;
                }
                if self
                    .call
                    .changed
                    .wait_until(&mut state, give_up)
                    .timed_out()
                {
                    return None;
                }
            }
        };
        if wake_writer {
            let closed = self.call.deliver.lock();
            if !*closed {
                self.call.listener.on_writable();
            }
        }
        Some(message)
    }

    /// Sends response headers with `metadata` (before the first message; later
    /// calls do nothing).
    pub fn send_headers(&mut self, metadata: Metadata) {
        {
            let mut state = self.call.state.lock();
            if state.ended.is_some() || std::mem::replace(&mut state.headers_sent, true) {
                return;
            }
        }
        let closed = self.call.deliver.lock();
        if !*closed {
            self.call.listener.on_headers(metadata);
        }
    }

    /// Sends one response message, blocking while the client holds a window's
    /// worth of bytes it has not released.
    ///
    /// # Errors
    ///
    /// The call ended (cancelled, past its deadline, connection lost): its status.
    pub fn send(&mut self, message: Vec<u8>) -> Result<(), Status> {
        let give_up = Instant::now() + HANDLER_WAIT_LIMIT;
        let headers = {
            let mut state = self.call.state.lock();
            loop {
                if let Some(status) = &state.ended {
                    return Err(status.clone());
                }
                if state.unreleased < self.call.window {
                    break;
                }
                if self
                    .call
                    .changed
                    .wait_until(&mut state, give_up)
                    .timed_out()
                {
                    return Err(Status::deadline_exceeded(
                        "the client did not read for 60 s",
                    ));
                }
            }
            state.unreleased += message.len();
            !std::mem::replace(&mut state.headers_sent, true)
        };
        let closed = self.call.deliver.lock();
        if *closed {
            return Err(Status::cancelled("call ended"));
        }
        if headers {
            self.call.listener.on_headers(Metadata::new());
        }
        self.call.listener.on_message(message);
        Ok(())
    }

    /// Whether the call has ended for the server: the client cancelled, the
    /// deadline passed or the connection closed.
    pub fn is_cancelled(&self) -> bool {
        self.call.is_closed()
    }

    /// Response bytes the client holds and has not released yet (for tests of
    /// backpressure).
    pub fn unreleased_bytes(&self) -> usize {
        self.call.state.lock().unreleased
    }
}

impl fmt::Debug for ServerStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerStream")
            .field("method", &self.call.head.method)
            .finish_non_exhaustive()
    }
}

impl Transport for InMemoryTransport {
    fn connect(
        &self,
        address: &Address,
        _options: &ConnectOptions,
        events: ConnectionEvents,
    ) -> Result<Arc<dyn Connection>, Status> {
        // The attempt is counted and the connection listed in one critical
        // section: a test that sees the count also sees the connection.
        let (conn, accepted, hold) = {
            let mut state = self.shared.state.lock();
            state.next_connection += 1;
            let id = state.next_connection;
            state
                .stats
                .entry(address.address.clone())
                .or_default()
                .connects += 1;
            let conn = Arc::new(MemConnection {
                id,
                address: address.address.clone(),
                shared: self.shared.clone(),
                events,
                ready: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                streams: Mutex::new(Vec::new()),
            });
            match state.servers.get_mut(&address.address) {
                Some(s) if !s.refusing => {
                    s.connections.push(Arc::downgrade(&conn));
                    (conn, true, s.holding_connections)
                }
                _ => (conn, false, false),
            }
        };
        if !accepted {
            conn.close_with(Some(Status::unavailable(format!(
                "{address}: connection refused"
            ))));
            return Ok(conn);
        }
        if !hold {
            conn.ready.store(true, Ordering::SeqCst);
            (conn.events)(ConnectionEvent::Ready);
        }
        Ok(conn)
    }
}
