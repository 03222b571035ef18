//! The subchannel pool: each subchannel's connectivity, connection and backoff, kept
//! on the serializer.
//!
//! ```text
//!            connect()               Ready event
//!   IDLE ─────────────> CONNECTING ──────────────> READY ── GoAway / Closed ──> IDLE
//!    ^                      │ Closed, refused, or
//!    │                      │ the connect deadline passed
//!    │                      v
//!    └── backoff over ── TRANSIENT_FAILURE
//! ```
//!
//! - An attempt that starts at `t` may take until
//!   `max(t + current backoff, t + 20 s)`; after it fails the next may start at
//!   `t + backoff` (1 s, then ×1.6 with ±20 % jitter, at most 120 s): the subchannel
//!   stays in TRANSIENT_FAILURE until then and goes IDLE, and its policy connects it
//!   again. READY resets the backoff.
//! - Each attempt is an [`Attempt`] with its own sequence number, so late events
//!   from an attempt that was given up are ignored. Calls find the READY attempt of a
//!   subchannel through its backend, lock-free.
//! - A connection that leaves READY (GOAWAY, shutdown, replaced) drains: it is
//!   closed once its last call completes. A connection that reports GOAWAY or
//!   Closed is marked gone at once, on the transport's thread, so calls stop using
//!   it before the serializer has caught up.
//! - With health checks on (the service config's `healthCheckConfig`, see
//!   [`super::health`]), a READY connection is shown to the policy, and given to
//!   calls, only while its health check says SERVING; until then the policy sees
//!   CONNECTING or TRANSIENT_FAILURE. [`Pool::set_health_service`] applies a
//!   changed config to the READY connections.
//! - A policy that asked for out-of-band load reports
//!   ([`Subchannel::request_oob_reports`]) gets one ORCA stream per READY connection
//!   ([`super::orca`]); it is cancelled when the connection leaves READY or the
//!   policy stops asking.

use std::any::Any;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use arc_swap::{ArcSwapOption, Guard};
use crossbeam_channel::Sender;

use super::core::Input;
use super::entity::{ChannelData, SubchannelData};
use super::health::{HealthCheck, Slot, Step};
use super::orca::{OobStream, Slot as OrcaSlot};
use super::pool_metrics;
use super::watch::Target;
use crate::address::Address;
use crate::backoff::{Backoff, BackoffConfig};
use crate::channelz::{Kind, Registration};
use crate::orca::OobRequest;
use crate::random::{RandomSource, SharedRandom};
use crate::state::ConnectivityState;
use crate::status::Status;
use crate::subchannel::{Subchannel, SubchannelBackend, SubchannelId, SubchannelState};
use crate::transport::{ConnectOptions, Connection, ConnectionEvent, ConnectionEvents, Transport};

/// One connection attempt of one subchannel, and then its connection.
pub(crate) struct Attempt {
    id: SubchannelId,
    seq: u64,
    connection: OnceLock<Arc<dyn Connection>>,
    /// The transport reported GOAWAY or Closed.
    gone: AtomicBool,
    /// No new calls: the connection closes when `in_flight` reaches 0.
    draining: AtomicBool,
    in_flight: AtomicUsize,
    tx: Sender<Input>,
    /// The subchannel's channelz data: calls on this connection count there.
    channelz: Arc<SubchannelData>,
}

impl Attempt {
    /// Counts one call on the connection, if it may take one.
    #[inline]
    pub(crate) fn acquire(&self) -> Option<&Arc<dyn Connection>> {
        if self.gone.load(Ordering::Acquire) {
            return None;
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if self.draining.load(Ordering::SeqCst) || self.gone.load(Ordering::Acquire) {
            self.release();
            return None;
        }
        match self.connection.get() {
            Some(c) => Some(c),
            None => {
                self.release();
                None
            }
        }
    }

    /// Ends a call counted by [`Attempt::acquire`]. The last call on a draining
    /// connection asks the serializer to close it.
    #[inline]
    pub(crate) fn release(&self) {
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1
            && self.draining.load(Ordering::SeqCst)
        {
            let _ = self.tx.send(Input::Drained {
                id: self.id,
                seq: self.seq,
            });
        }
    }

    fn close(&self) {
        if let Some(c) = self.connection.get() {
            c.close();
        }
    }

    /// The channelz data of the attempt's subchannel.
    #[inline]
    pub(crate) fn channelz(&self) -> &SubchannelData {
        &self.channelz
    }
}

impl fmt::Debug for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Attempt({}#{})", self.id, self.seq)
    }
}

/// The backend of each subchannel this channel makes: forwards connect and shutdown
/// to the serializer and holds the READY attempt for calls.
pub(crate) struct ScBackend {
    tx: Sender<Input>,
    ready: ArcSwapOption<Attempt>,
}

impl ScBackend {
    /// The READY attempt, if any.
    #[inline]
    pub(crate) fn ready(&self) -> Guard<Option<Arc<Attempt>>> {
        self.ready.load()
    }
}

impl SubchannelBackend for ScBackend {
    fn connect(&self, id: SubchannelId) {
        let _ = self.tx.send(Input::Connect(id));
    }

    fn shutdown(&self, id: SubchannelId) {
        let _ = self.tx.send(Input::Shutdown(id));
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn set_oob_reports(&self, id: SubchannelId, request: Option<OobRequest>) {
        let _ = self.tx.send(Input::OobRequest { id, request });
    }
}

/// A subchannel state change for the policy that owns the subchannel.
#[derive(Debug)]
pub(crate) struct Update {
    pub(crate) subchannel: Subchannel,
    pub(crate) state: SubchannelState,
    /// The policy epoch that created the subchannel.
    pub(crate) owner: u64,
}

/// What the pool connects with.
pub(crate) struct PoolConfig {
    pub(crate) transport: Arc<dyn Transport>,
    /// `ChannelBuilder::transport_option`s, passed on every connect.
    pub(crate) transport_options: crate::transport::TransportOptions,
    pub(crate) authority: String,
    pub(crate) user_agent: String,
    pub(crate) backoff: BackoffConfig,
    pub(crate) random: SharedRandom,
    /// The channel's channelz data (subchannels are listed and traced there).
    pub(crate) channel: Arc<ChannelData>,
    /// For A94's `grpc.subchannel.*` instruments.
    pub(crate) metrics: crate::metrics::Metrics,
}

/// A [`RandomSource`] drawing from the channel's shared source.
struct SharedSource(SharedRandom);

impl RandomSource for SharedSource {
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    /// Give up the attempt if it is still CONNECTING.
    ConnectDeadline,
    /// Backoff over: TRANSIENT_FAILURE → IDLE.
    Retry,
    /// Re-open a READY connection's health-check stream.
    HealthRetry,
    /// Re-open a READY connection's out-of-band ORCA stream.
    OobRetry,
}

struct Entry {
    handle: Subchannel,
    backend: Arc<ScBackend>,
    owner: u64,
    state: ConnectivityState,
    backoff: Backoff,
    /// The sequence number of the latest attempt.
    seq: u64,
    /// The attempt under way (CONNECTING) or in use (READY).
    attempt: Option<Arc<Attempt>>,
    attempt_started: Option<Instant>,
    /// The READY connection's health check, when health checks are on.
    health: Option<HealthCheck>,
    /// The policy's request for out-of-band load reports, while it stands.
    oob: Option<OobRequest>,
    /// The READY connection's out-of-band stream, while asked for.
    oob_stream: Option<OobStream>,
    /// Its channelz data, and its place in the registry while it exists.
    channelz: Arc<SubchannelData>,
    _registration: Registration,
}

/// Every subchannel of one channel.
pub(crate) struct Pool {
    config: PoolConfig,
    tx: Sender<Input>,
    entries: HashMap<SubchannelId, Entry>,
    /// Connections that left READY and still carry calls.
    draining: HashMap<(SubchannelId, u64), Arc<Attempt>>,
    timers: BinaryHeap<Reverse<(Instant, SubchannelId, u64, TimerKind)>>,
    /// The service READY connections watch the health of (`None`: no health checks).
    health_service: Option<String>,
}

impl Pool {
    pub(crate) fn new(config: PoolConfig, tx: Sender<Input>) -> Self {
        Self {
            config,
            tx,
            entries: HashMap::new(),
            draining: HashMap::new(),
            timers: BinaryHeap::new(),
            health_service: None,
        }
    }

    /// Makes an IDLE subchannel owned by policy epoch `owner`. Its id is its
    /// channelz id.
    pub(crate) fn create(&mut self, address: &Address, owner: u64) -> Subchannel {
        let id = SubchannelId(crate::channelz::next_id());
        let channelz = Arc::new(SubchannelData::new(
            id.0,
            address,
            self.config.channel.clone(),
        ));
        let weak: Weak<SubchannelData> = Arc::downgrade(&channelz);
        let registration = crate::channelz::registry().register(id.0, Kind::Subchannel, weak);
        self.config.channel.subchannel_created(id.0, address);
        let backend = Arc::new(ScBackend {
            tx: self.tx.clone(),
            ready: ArcSwapOption::empty(),
        });
        let handle = Subchannel::new(id, address.clone(), backend.clone());
        self.entries.insert(
            id,
            Entry {
                handle: handle.clone(),
                backend,
                owner,
                state: ConnectivityState::Idle,
                backoff: Backoff::new(
                    self.config.backoff,
                    SharedSource(self.config.random.clone()),
                ),
                seq: 0,
                attempt: None,
                attempt_started: None,
                health: None,
                oob: None,
                oob_stream: None,
                channelz,
                _registration: registration,
            },
        );
        handle
    }

    /// How many subchannels exist.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Starts an attempt if the subchannel is IDLE.
    pub(crate) fn connect(&mut self, id: SubchannelId, now: Instant, out: &mut Vec<Update>) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        if entry.state != ConnectivityState::Idle {
            return;
        }
        entry.seq += 1;
        let seq = entry.seq;
        entry.state = ConnectivityState::Connecting;
        entry.attempt_started = Some(now);
        out.push(update(
            entry,
            SubchannelState::new(ConnectivityState::Connecting),
        ));
        let deadline = entry.backoff.connect_deadline(now);
        self.timers
            .push(Reverse((deadline, id, seq, TimerKind::ConnectDeadline)));
        let attempt = Arc::new(Attempt {
            id,
            seq,
            connection: OnceLock::new(),
            gone: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            tx: self.tx.clone(),
            channelz: entry.channelz.clone(),
        });
        let weak = Arc::downgrade(&attempt);
        let tx = self.tx.clone();
        let events: ConnectionEvents = Arc::new(move |event: ConnectionEvent| {
            if !matches!(event, ConnectionEvent::Ready) {
                if let Some(a) = weak.upgrade() {
                    a.gone.store(true, Ordering::Release);
                }
            }
            let _ = tx.send(Input::Connection { id, seq, event });
        });
        let options = ConnectOptions {
            authority: self.config.authority.clone(),
            connect_deadline: deadline,
            user_agent: self.config.user_agent.clone(),
            transport_options: self.config.transport_options.clone(),
        };
        match self
            .config
            .transport
            .connect(entry.handle.address(), &options, events)
        {
            Ok(connection) => {
                entry.channelz.add_connection(&connection);
                let _ = attempt.connection.set(connection);
                entry.attempt = Some(attempt);
            }
            Err(status) => fail(
                entry,
                &mut self.timers,
                status,
                now,
                out,
                &self.config.metrics,
            ),
        }
    }

    /// Handles an event of attempt `seq` of subchannel `id`.
    pub(crate) fn handle_event(
        &mut self,
        id: SubchannelId,
        seq: u64,
        event: ConnectionEvent,
        now: Instant,
        out: &mut Vec<Update>,
    ) {
        let closed = matches!(event, ConnectionEvent::Closed(_));
        let current = self
            .entries
            .get(&id)
            .is_some_and(|e| e.attempt.as_ref().is_some_and(|a| a.seq == seq));
        if !current {
            if closed {
                self.draining.remove(&(id, seq));
            }
            return;
        }
        let entry = self.entries.get_mut(&id).expect("checked above");
        let disconnect_error = (entry.state == ConnectivityState::Ready
            && self.config.metrics.is_enabled())
        .then(|| pool_metrics::disconnect_error(&event));
        match (entry.state, event) {
            (ConnectivityState::Connecting, ConnectionEvent::Ready) => {
                pool_metrics::connected(&self.config.metrics);
                entry.state = ConnectivityState::Ready;
                entry.backoff.reset();
                start_oob(entry, &self.config, &self.tx);
                match self.health_service.clone() {
                    // The policy keeps seeing CONNECTING until the first response.
                    Some(service) => start_health(
                        entry,
                        &service,
                        &self.config,
                        &self.tx,
                        SubchannelState::new(ConnectivityState::Connecting),
                    ),
                    None => {
                        entry.backend.ready.store(entry.attempt.clone());
                        out.push(update(
                            entry,
                            SubchannelState::new(ConnectivityState::Ready),
                        ));
                    }
                }
            }
            (ConnectivityState::Connecting, ConnectionEvent::GoAway { reason, .. }) => {
                let status = Status::unavailable(format!(
                    "{}: the server went away before the connection was ready: {reason}",
                    entry.handle.address()
                ));
                fail(
                    entry,
                    &mut self.timers,
                    status,
                    now,
                    out,
                    &self.config.metrics,
                );
            }
            (ConnectivityState::Connecting, ConnectionEvent::Closed(error)) => {
                let status = error.unwrap_or_else(|| {
                    Status::unavailable(format!(
                        "{}: connection closed before it was ready",
                        entry.handle.address()
                    ))
                });
                fail(
                    entry,
                    &mut self.timers,
                    status,
                    now,
                    out,
                    &self.config.metrics,
                );
            }
            (
                ConnectivityState::Ready,
                ConnectionEvent::GoAway { .. } | ConnectionEvent::Closed(_),
            ) => {
                if let Some(error) = &disconnect_error {
                    pool_metrics::disconnected(&self.config.metrics, error);
                }
                entry.backend.ready.store(None);
                stop_streams(entry);
                let attempt = entry.attempt.take();
                entry.state = ConnectivityState::Idle;
                out.push(update(entry, SubchannelState::new(ConnectivityState::Idle)));
                if let (Some(attempt), false) = (attempt, closed) {
                    self.retire(attempt);
                }
            }
            _ => {}
        }
    }

    /// The health-check stream of `slot` on subchannel `id` has news.
    pub(crate) fn health_event(
        &mut self,
        id: SubchannelId,
        slot: &Weak<Slot>,
        now: Instant,
        out: &mut Vec<Update>,
    ) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        let Some(health) = entry.health.as_mut() else {
            return;
        };
        let step = health.handle(slot, now);
        apply_health_step(entry, step, &mut self.timers, out);
    }

    /// Health checks watch `service` from now on (`None`: no health checks). A
    /// change applies to READY connections at once: a new service restarts their
    /// checks (the policy keeps what it was shown until the first response), and
    /// `None` shows them READY.
    pub(crate) fn set_health_service(&mut self, service: Option<String>, out: &mut Vec<Update>) {
        if self.health_service == service {
            return;
        }
        self.health_service = service;
        for entry in self.entries.values_mut() {
            if entry.state != ConnectivityState::Ready {
                continue;
            }
            let old = entry.health.take();
            let shown = old.as_ref().map_or_else(
                || SubchannelState::new(ConnectivityState::Ready),
                |h| h.shown().clone(),
            );
            if let Some(old) = old {
                old.stop();
            }
            match &self.health_service {
                Some(service) => start_health(entry, service, &self.config, &self.tx, shown),
                None if shown.connectivity_state != ConnectivityState::Ready => {
                    entry.backend.ready.store(entry.attempt.clone());
                    out.push(update(
                        entry,
                        SubchannelState::new(ConnectivityState::Ready),
                    ));
                }
                None => {}
            }
        }
    }

    /// A policy asked for out-of-band reports from `id` (`None`: stop). A READY
    /// connection opens (or re-opens with the new period) its stream at once.
    pub(crate) fn set_oob_request(&mut self, id: SubchannelId, request: Option<OobRequest>) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        entry.oob = request;
        if let Some(old) = entry.oob_stream.take() {
            old.stop();
        }
        if entry.state == ConnectivityState::Ready {
            start_oob(entry, &self.config, &self.tx);
        }
    }

    /// The out-of-band stream of `slot` on subchannel `id` has news.
    pub(crate) fn orca_event(&mut self, id: SubchannelId, slot: &Weak<OrcaSlot>, now: Instant) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        let Some(oob) = entry.oob_stream.as_mut() else {
            return;
        };
        if let Some(at) = oob.handle(slot, now) {
            self.timers
                .push(Reverse((at, id, entry.seq, TimerKind::OobRetry)));
        }
    }

    /// The last call on a draining connection completed.
    pub(crate) fn drained(&mut self, id: SubchannelId, seq: u64) {
        if let Some(a) = self.draining.get(&(id, seq)) {
            if a.in_flight.load(Ordering::SeqCst) == 0 {
                a.close();
                self.draining.remove(&(id, seq));
            }
        }
    }

    /// Fires the connect deadlines and backoffs that are due.
    pub(crate) fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Update>) {
        while let Some(&Reverse((at, id, seq, kind))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            if entry.seq != seq {
                continue;
            }
            match (kind, entry.state) {
                (TimerKind::ConnectDeadline, ConnectivityState::Connecting) => {
                    let waited = entry
                        .attempt_started
                        .map(|t| at.saturating_duration_since(t))
                        .unwrap_or_default();
                    let status = Status::unavailable(format!(
                        "{}: connection attempt timed out after {waited:?}",
                        entry.handle.address()
                    ));
                    fail(
                        entry,
                        &mut self.timers,
                        status,
                        now,
                        out,
                        &self.config.metrics,
                    );
                }
                (TimerKind::Retry, ConnectivityState::TransientFailure) => {
                    entry.state = ConnectivityState::Idle;
                    out.push(update(entry, SubchannelState::new(ConnectivityState::Idle)));
                }
                (TimerKind::OobRetry, ConnectivityState::Ready) => {
                    if let Some(oob) = entry.oob_stream.as_mut() {
                        oob.retry(at);
                    }
                }
                (TimerKind::HealthRetry, ConnectivityState::Ready) => {
                    if let Some(health) = entry.health.as_mut() {
                        let step = health.retry(at);
                        apply_health_step(entry, step, &mut self.timers, out);
                    }
                }
                _ => {}
            }
        }
    }

    /// When [`Pool::handle_timeout`] next has something to do.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, ..))| *at)
    }

    /// Shuts subchannel `id` down: its connection drains, then closes.
    pub(crate) fn shutdown(&mut self, id: SubchannelId) {
        let Some(mut entry) = self.entries.remove(&id) else {
            return;
        };
        self.config
            .channel
            .subchannel_shut_down(id.0, entry.handle.address());
        entry.backend.ready.store(None);
        entry.handle.shutdown();
        stop_streams(&mut entry);
        if let Some(attempt) = entry.attempt.take() {
            if entry.state == ConnectivityState::Ready {
                pool_metrics::disconnected(&self.config.metrics, "subchannel shutdown");
                self.retire(attempt);
            } else {
                attempt.close();
            }
        }
    }

    /// Shuts down every subchannel a closed policy left behind.
    pub(crate) fn shutdown_owner(&mut self, owner: u64) {
        let ids: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, e)| e.owner == owner)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.shutdown(id);
        }
    }

    /// Shuts down every subchannel (the channel goes idle).
    pub(crate) fn shutdown_all(&mut self) {
        let ids: Vec<_> = self.entries.keys().copied().collect();
        for id in ids {
            self.shutdown(id);
        }
    }

    /// Closes everything at once, draining connections too (the channel closes).
    pub(crate) fn close(&mut self) {
        for (id, mut entry) in self.entries.drain() {
            self.config
                .channel
                .subchannel_shut_down(id.0, entry.handle.address());
            entry.backend.ready.store(None);
            entry.handle.shutdown();
            stop_streams(&mut entry);
            if let Some(attempt) = entry.attempt.take() {
                if entry.state == ConnectivityState::Ready {
                    pool_metrics::disconnected(&self.config.metrics, "subchannel shutdown");
                }
                attempt.draining.store(true, Ordering::SeqCst);
                attempt.close();
            }
        }
        for (_, attempt) in self.draining.drain() {
            attempt.close();
        }
        self.timers.clear();
    }

    /// Takes a connection out of service: it closes when its last call ends.
    fn retire(&mut self, attempt: Arc<Attempt>) {
        attempt.draining.store(true, Ordering::SeqCst);
        if attempt.in_flight.load(Ordering::SeqCst) == 0 {
            attempt.close();
        } else {
            self.draining.insert((attempt.id, attempt.seq), attempt);
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|(id, e)| (id, e.state)))
            .finish()
    }
}

/// What the policy is shown next; also the subchannel's state in channelz.
fn update(entry: &Entry, state: SubchannelState) -> Update {
    entry
        .channelz
        .set_state(state.connectivity_state, state.last_error.as_ref());
    Update {
        subchannel: entry.handle.clone(),
        state,
        owner: entry.owner,
    }
}

/// Starts the health check of a READY entry; the policy was last shown `shown`.
fn start_health(
    entry: &mut Entry,
    service: &str,
    config: &PoolConfig,
    tx: &Sender<Input>,
    shown: SubchannelState,
) {
    let Some(target) = follow_target(entry, config, tx) else {
        return;
    };
    let ready = shown.connectivity_state == ConnectivityState::Ready;
    entry
        .backend
        .ready
        .store(if ready { entry.attempt.clone() } else { None });
    entry.health = Some(HealthCheck::start(service, target, shown));
}

/// Opens the out-of-band stream of a READY entry, if its policy asked for one.
fn start_oob(entry: &mut Entry, config: &PoolConfig, tx: &Sender<Input>) {
    let Some(request) = entry.oob.clone() else {
        return;
    };
    if let Some(target) = follow_target(entry, config, tx) {
        entry.oob_stream = Some(OobStream::start(request, target));
    }
}

/// Where a stream on the entry's READY connection runs.
fn follow_target(entry: &Entry, config: &PoolConfig, tx: &Sender<Input>) -> Option<Target> {
    Some(Target {
        address: entry.handle.address().clone(),
        connection: entry.attempt.as_ref()?.connection.get()?.clone(),
        tx: tx.clone(),
        id: entry.handle.id(),
        backoff: Backoff::new(config.backoff, SharedSource(config.random.clone())),
    })
}

/// Cancels the streams a READY connection follows (health, ORCA).
fn stop_streams(entry: &mut Entry) {
    if let Some(health) = entry.health.take() {
        health.stop();
    }
    if let Some(oob) = entry.oob_stream.take() {
        oob.stop();
    }
}

/// Shows the policy what a health check decided; calls use the connection only
/// while it is shown READY.
fn apply_health_step(
    entry: &mut Entry,
    step: Step,
    timers: &mut BinaryHeap<Reverse<(Instant, SubchannelId, u64, TimerKind)>>,
    out: &mut Vec<Update>,
) {
    let healthy = entry.health.as_ref().is_some_and(HealthCheck::is_healthy);
    entry
        .backend
        .ready
        .store(if healthy { entry.attempt.clone() } else { None });
    for state in step.show {
        out.push(update(entry, state));
    }
    if let Some(at) = step.retry_at {
        timers.push(Reverse((
            at,
            entry.handle.id(),
            entry.seq,
            TimerKind::HealthRetry,
        )));
    }
}

/// The current attempt failed: TRANSIENT_FAILURE until the backoff ends.
fn fail(
    entry: &mut Entry,
    timers: &mut BinaryHeap<Reverse<(Instant, SubchannelId, u64, TimerKind)>>,
    status: Status,
    now: Instant,
    out: &mut Vec<Update>,
    metrics: &crate::metrics::Metrics,
) {
    pool_metrics::attempt_failed(metrics);
    if let Some(attempt) = entry.attempt.take() {
        attempt.close();
    }
    entry.state = ConnectivityState::TransientFailure;
    out.push(update(entry, SubchannelState::failure(status)));
    let started = entry.attempt_started.unwrap_or(now);
    let retry_at = entry.backoff.next_attempt_after_failure(started);
    if retry_at <= now {
        entry.state = ConnectivityState::Idle;
        out.push(update(entry, SubchannelState::new(ConnectivityState::Idle)));
    } else {
        timers.push(Reverse((
            retry_at,
            entry.handle.id(),
            entry.seq,
            TimerKind::Retry,
        )));
    }
}
