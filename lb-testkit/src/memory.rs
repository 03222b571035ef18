//! An in-memory [`Transport`]: servers are closures, failures are scripted.
//!
//! ```text
//!   connect(addr) ──> refused?  ──> Closed(UNAVAILABLE)
//!                     held?     ──> stays CONNECTING until hold_connections(addr, false)
//!                     else      ──> Ready
//!   start_call ──> scripted failure? ──> that error (unprocessed ones are not counted)
//!                  calls held?       ──> parked until release_calls(addr) or the deadline
//!                  latency?          ──> answered `latency` later, on the transport's clock
//!                  else              ──> answered inline, on the calling thread
//! ```
//!
//! Time comes from a [`Clock`]: with a `ManualClock` a delayed or held call ends when
//! the test moves the clock past its latency or deadline; with real time a timer
//! thread (`lb-testkit-timer`, started on first need, ended when the transport is
//! dropped) delivers them.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender};
use lb_core::channel::{Clock, ClockListener, SystemClock};
use lb_core::transport::{
    CallCompletion, CallError, CallRequest, CallResponse, ConnectOptions, ConnectionEvent,
    ConnectionEvents,
};
use lb_core::{Address, Connection, Status, Transport};
use parking_lot::{Condvar, Mutex};

/// A server: answers one request.
pub type ServerHandler = Arc<dyn Fn(&CallRequest) -> Result<CallResponse, Status> + Send + Sync>;

struct Server {
    handler: ServerHandler,
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
    done: CallCompletion,
    /// When the answer goes out; `None` while held.
    ready_at: Option<Instant>,
    result: Option<Result<CallResponse, CallError>>,
}

#[derive(Default)]
struct State {
    servers: HashMap<String, Server>,
    stats: HashMap<String, Stats>,
    pending: Vec<PendingCall>,
    next_connection: u64,
    timer: Option<Sender<()>>,
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
/// use lb_core::{Address, Transport};
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
                state: Mutex::default(),
                parked: Condvar::new(),
                clock,
                real_time: !manual,
                _listener: listener,
            }
        });
        Self { shared }
    }

    /// Serves `address` with `handler`, replacing any server there (whose
    /// connections close).
    pub fn add_server(
        &self,
        address: &str,
        handler: impl Fn(&CallRequest) -> Result<CallResponse, Status> + Send + Sync + 'static,
    ) {
        let old = self.shared.state.lock().servers.insert(
            address.into(),
            Server {
                handler: Arc::new(handler),
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
            let handler = s.handler.clone();
            let (held, rest) = std::mem::take(&mut state.pending)
                .into_iter()
                .partition(|p| p.address == address && p.ready_at.is_none());
            state.pending = rest;
            (held, handler)
        };
        for p in held {
            let result = handler(&p.request).map_err(CallError::from);
            (p.done)(result);
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
    /// Answers every pending call that is due at `now`, and fails those whose
    /// deadline passed.
    fn fire(&self, now: Instant) {
        let due: Vec<PendingCall> = {
            let mut state = self.state.lock();
            let (due, rest) = std::mem::take(&mut state.pending)
                .into_iter()
                .partition(|p| is_due(p, now));
            state.pending = rest;
            due
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
            (p.done)(result);
        }
    }

    /// The next time [`Shared::fire`] has something to do.
    fn next_due(&self) -> Option<Instant> {
        let state = self.state.lock();
        state
            .pending
            .iter()
            .flat_map(|p| [p.ready_at, p.request.deadline])
            .flatten()
            .min()
    }

    /// Parks a call; with real time, makes sure the timer thread will see it.
    fn park(self: &Arc<Self>, call: PendingCall) {
        let timed = call.ready_at.is_some() || call.request.deadline.is_some();
        let mut state = self.state.lock();
        state.pending.push(call);
        self.parked.notify_all();
        if !(timed && self.real_time) {
            return;
        }
        match &state.timer {
            Some(tx) => {
                let _ = tx.send(());
            }
            None => {
                let (tx, rx) = crossbeam_channel::unbounded::<()>();
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
        for p in failed {
            (p.done)(Err(CallError::from(Status::unavailable(format!(
                "{}: connection closed while the call was in progress",
                self.address
            )))));
        }
    }

    fn unprocessed(done: CallCompletion, why: &str) {
        done(Err(CallError::unprocessed(Status::unavailable(why))));
    }
}

impl Connection for MemConnection {
    fn start_call(&self, call: CallRequest, done: CallCompletion) {
        if self.closed.load(Ordering::SeqCst) {
            return Self::unprocessed(done, "connection closed before the call was sent");
        }
        if !self.ready.load(Ordering::SeqCst) {
            return Self::unprocessed(done, "connection not ready");
        }
        let mut state = self.shared.state.lock();
        let Some(server) = state.servers.get_mut(&self.address) else {
            drop(state);
            return Self::unprocessed(done, "server gone before the call was sent");
        };
        if let Some((n, error)) = server.failures.take() {
            if n > 1 {
                server.failures = Some((n - 1, error.clone()));
            }
            if !error.unprocessed {
                state.stats.entry(self.address.clone()).or_default().calls += 1;
            }
            drop(state);
            return done(Err(error));
        }
        let (handler, latency, holding) =
            (server.handler.clone(), server.latency, server.holding_calls);
        state.stats.entry(self.address.clone()).or_default().calls += 1;
        drop(state);
        let (ready_at, result) = if holding {
            (None, None)
        } else {
            let result = handler(&call).map_err(CallError::from);
            if latency.is_zero() {
                return done(result);
            }
            (Some(self.shared.clock.now() + latency), Some(result))
        };
        self.shared.park(PendingCall {
            address: self.address.clone(),
            connection: self.id,
            request: call,
            done,
            ready_at,
            result,
        });
    }

    fn close(&self) {
        self.close_with(None);
    }
}

impl Transport for InMemoryTransport {
    fn connect(
        &self,
        address: &Address,
        _options: &ConnectOptions,
        events: ConnectionEvents,
    ) -> Result<Arc<dyn Connection>, Status> {
        let (accepted, hold, id) = {
            let mut state = self.shared.state.lock();
            state.next_connection += 1;
            let id = state.next_connection;
            state
                .stats
                .entry(address.address.clone())
                .or_default()
                .connects += 1;
            match state.servers.get(&address.address) {
                Some(s) if !s.refusing => (true, s.holding_connections, id),
                _ => (false, false, id),
            }
        };
        let conn = Arc::new(MemConnection {
            id,
            address: address.address.clone(),
            shared: self.shared.clone(),
            events,
            ready: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        if !accepted {
            conn.close_with(Some(Status::unavailable(format!(
                "{address}: connection refused"
            ))));
            return Ok(conn);
        }
        if let Some(s) = self.shared.state.lock().servers.get_mut(&address.address) {
            s.connections.push(Arc::downgrade(&conn));
        }
        if !hold {
            conn.ready.store(true, Ordering::SeqCst);
            (conn.events)(ConnectionEvent::Ready);
        }
        Ok(conn)
    }
}
