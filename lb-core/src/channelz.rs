//! Channelz (gRFC A14): what every channel, subchannel, socket and server of this
//! process has done, kept always on, read by the `grpc.channelz.v1.Channelz` service
//! and the admin page.
//!
//! ```text
//!  Channel ──(id)──> registry()  <──(id)── Server
//!     │ subchannels      │ by id (BTreeMap of Weak entries; an entry is gone when
//!     v                  │ its owner drops its Registration)
//!  Subchannel ───────────┤
//!     │ sockets          │
//!     v                  │
//!  Socket (a transport's connection) ────────┘
//! ```
//!
//! - Ids come from one process-wide counter ([`next_id`]); 0 is never an id (channelz
//!   reads 0 as "none").
//! - The owner of an entity (the channel, the subchannel pool, the transport, the
//!   server) keeps its data in atomics ([`CallCounters`], plain `AtomicU64`s) and a
//!   bounded [`Trace`], and registers a [`Weak`] [`Entity`] that turns them into a
//!   [`Snapshot`] on demand. Nothing is copied until someone asks.
//! - Times are wall-clock ([`SystemTime`]), as channelz reports them. Code that runs on
//!   a channel's [`Clock`](crate::channel::Clock) converts its `now: Instant` with the
//!   channel's [`WallAnchor`], so tests on a manual clock get repeatable times.
//! - The policy tree is not kept: [`Entity::policy`] asks the channel's serializer to
//!   describe its policies ([`LbPolicy::describe`](crate::LbPolicy::describe)) and
//!   waits at most the given time.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use std::time::SystemTime;
//! use lb_core::channelz::{self, CallCounters, Entity, Kind, Snapshot, ServerSnapshot, Trace};
//!
//! struct MyServer { id: u64, calls: CallCounters, trace: Trace }
//! impl Entity for MyServer {
//!     fn snapshot(&self) -> Snapshot {
//!         Snapshot::Server(ServerSnapshot {
//!             id: self.id,
//!             calls: self.calls.get(),
//!             trace: self.trace.snapshot(),
//!             ..ServerSnapshot::default()
//!         })
//!     }
//! }
//!
//! let id = channelz::next_id();
//! let server = Arc::new(MyServer { id, calls: CallCounters::default(), trace: Trace::new(SystemTime::now()) });
//! let weak: std::sync::Weak<dyn Entity> = Arc::downgrade(&server) as _;
//! let registration = channelz::registry().register(id, Kind::Server, weak);
//! server.calls.started(SystemTime::now());
//! server.calls.finished(true);
//! match channelz::registry().get(id) {
//!     Some(Snapshot::Server(s)) => assert_eq!((s.calls.started, s.calls.succeeded), (1, 1)),
//!     other => panic!("{other:?}"),
//! }
//! drop(registration);
//! assert!(channelz::registry().get(id).is_none());
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};

use crate::state::ConnectivityState;

/// Events a [`Trace`] keeps; older ones are dropped (and counted in
/// [`TraceSnapshot::events_logged`]). grpc-go keeps a bounded number too.
pub const TRACE_EVENTS: usize = 32;

/// A new process-wide channelz id (never 0).
pub fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// What kind of entity an id names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A channel created by the program.
    TopChannel,
    /// A channel created by a policy (the RLS control channel), shown under its
    /// parent.
    NestedChannel,
    /// A subchannel.
    Subchannel,
    /// A connection of a client or a server.
    Socket,
    /// A server's listening socket.
    ListenSocket,
    /// A server.
    Server,
}

/// Something that can describe itself to channelz. Owners implement it over their
/// own counters; the registry holds it weakly.
pub trait Entity: Send + Sync {
    /// Its data now.
    fn snapshot(&self) -> Snapshot;

    /// For channels: the policy tree, asking the channel's serializer and waiting at
    /// most `wait`. `None` when the entity has no policy or the serializer did not
    /// answer in time.
    fn policy(&self, wait: Duration) -> Option<PolicyView> {
        let _ = wait;
        None
    }
}

/// The channel a policy runs in, as channelz knows it: its id, its target (for
/// logs), and the list that channels the policy makes (the RLS control channel) join
/// as its nested channels. Policies get it in
/// [`LbPolicyOptions::channelz`](crate::LbPolicyOptions::channelz) and pass it to
/// the channels they build
/// ([`ChannelBuilder::channelz_parent`](crate::channel::ChannelBuilder::channelz_parent)).
/// Clones share the list.
///
/// ```
/// use lb_core::channelz::ChannelRef;
/// let parent = ChannelRef::new(7, "dns:///example.com");
/// let link = parent.adopt(9);
/// assert_eq!(parent.nested(), [9]);
/// drop(link);
/// assert!(parent.nested().is_empty());
/// assert_eq!(ChannelRef::default().id(), 0, "outside a channel (tests)");
/// ```
#[derive(Clone, Default)]
pub struct ChannelRef {
    id: u64,
    target: Arc<str>,
    nested: Arc<Mutex<Vec<u64>>>,
}

impl ChannelRef {
    /// The channel `id` to `target`, with no nested channels yet.
    pub fn new(id: u64, target: &str) -> Self {
        Self {
            id,
            target: target.into(),
            nested: Arc::default(),
        }
    }

    /// The channel's channelz id (0 outside a channel).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The channel's target as the program gave it (empty outside a channel), for
    /// log messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The ids of the nested channels alive now, in the order they joined.
    pub fn nested(&self) -> Vec<u64> {
        self.nested.lock().clone()
    }

    /// Lists channel `id` as nested in this one until the returned link is dropped.
    pub fn adopt(&self, id: u64) -> NestedLink {
        self.nested.lock().push(id);
        NestedLink {
            id,
            nested: Arc::downgrade(&self.nested),
        }
    }
}

impl fmt::Debug for ChannelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelRef({}, {:?})", self.id, self.target)
    }
}

/// Keeps a nested channel in its parent's list ([`ChannelRef::adopt`]); dropping it
/// takes the channel out.
#[must_use = "the channel leaves its parent's list when this is dropped"]
#[derive(Debug)]
pub struct NestedLink {
    id: u64,
    nested: Weak<Mutex<Vec<u64>>>,
}

impl Drop for NestedLink {
    fn drop(&mut self) {
        if let Some(nested) = self.nested.upgrade() {
            nested.lock().retain(|&id| id != self.id);
        }
    }
}

/// One entity's data, by kind.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Snapshot {
    /// A top-level or nested channel.
    Channel(ChannelSnapshot),
    /// A subchannel.
    Subchannel(SubchannelSnapshot),
    /// A connection or a listening socket.
    Socket(SocketSnapshot),
    /// A server.
    Server(ServerSnapshot),
}

/// The process's channelz entities by id.
pub struct Registry {
    entries: RwLock<BTreeMap<u64, Entry>>,
}

type Entry = (Kind, Weak<dyn Entity>);

/// The process-wide registry.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry {
        entries: RwLock::new(BTreeMap::new()),
    })
}

/// Keeps an entity in the registry; dropping it removes the entity.
#[must_use = "the entity leaves the registry when this is dropped"]
pub struct Registration {
    id: u64,
}

impl Registration {
    /// The entity's id.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        registry().entries.write().remove(&self.id);
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Registration({})", self.id)
    }
}

impl Registry {
    /// Registers `entity` under `id` (from [`next_id`]) until the returned
    /// [`Registration`] is dropped.
    pub fn register(&self, id: u64, kind: Kind, entity: Weak<dyn Entity>) -> Registration {
        self.entries.write().insert(id, (kind, entity));
        Registration { id }
    }

    /// The kind of entity `id` names, if it is registered.
    pub fn kind(&self, id: u64) -> Option<Kind> {
        self.entries.read().get(&id).map(|(kind, _)| *kind)
    }

    /// The data of entity `id`, if it is registered and alive.
    pub fn get(&self, id: u64) -> Option<Snapshot> {
        let entity = self.entries.read().get(&id)?.1.upgrade()?;
        Some(entity.snapshot())
    }

    /// The policy tree of channel `id` (see [`Entity::policy`]).
    pub fn policy(&self, id: u64, wait: Duration) -> Option<PolicyView> {
        let entity = self.entries.read().get(&id)?.1.upgrade()?;
        entity.policy(wait)
    }

    /// Up to `max` entities of `kind` with ids from `start_id` on, in id order, and
    /// whether that was the last of them (channelz's paging:
    /// `GetTopChannels`, `GetServers`).
    pub fn list(&self, kind: Kind, start_id: u64, max: usize) -> (Vec<Snapshot>, bool) {
        let entities: Vec<_> = self
            .entries
            .read()
            .range(start_id..)
            .filter(|(_, (k, _))| *k == kind)
            .map(|(_, (_, weak))| weak.clone())
            .collect();
        let mut out = Vec::new();
        let mut taken = 0;
        for weak in &entities {
            if out.len() == max.max(1) {
                break;
            }
            taken += 1;
            if let Some(entity) = weak.upgrade() {
                out.push(entity.snapshot());
            }
        }
        (out, taken == entities.len())
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("entities", &self.entries.read().len())
            .finish()
    }
}

/// Maps a channel's `Instant`s (from its clock) to wall-clock times.
#[derive(Clone, Copy, Debug)]
pub struct WallAnchor {
    instant: Instant,
    system: SystemTime,
    /// `system` in nanoseconds since the Unix epoch (0 before it).
    system_nanos: u64,
}

impl WallAnchor {
    /// `instant` on the channel's clock is `system` on the wall clock.
    pub fn new(instant: Instant, system: SystemTime) -> Self {
        Self {
            instant,
            system,
            system_nanos: nanos_since_epoch(system),
        }
    }

    /// The wall-clock time of `now` in nanoseconds since the Unix epoch, for
    /// [`CallCounters::started_at_nanos`]: one subtraction of instants, where
    /// [`WallAnchor::wall`] and [`CallCounters::started`] take three. Never 0.
    #[inline]
    pub fn wall_nanos(&self, now: Instant) -> u64 {
        match now.checked_duration_since(self.instant) {
            Some(after) => {
                let after = u64::try_from(after.as_nanos()).unwrap_or(u64::MAX);
                self.system_nanos.saturating_add(after).max(1)
            }
            None => nanos_since_epoch(self.wall(now)),
        }
    }

    /// The wall-clock time of `now`.
    pub fn wall(&self, now: Instant) -> SystemTime {
        match now.checked_duration_since(self.instant) {
            Some(after) => self.system + after,
            None => self.system - (self.instant - now),
        }
    }
}

/// Calls started, succeeded and failed, and when the last one started. Lock-free:
/// two or three relaxed atomic operations a call.
#[derive(Debug, Default)]
pub struct CallCounters {
    started: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    /// Nanoseconds since the Unix epoch; 0 for never.
    last_started: AtomicU64,
}

impl CallCounters {
    /// A call started at `at`.
    #[inline]
    pub fn started(&self, at: SystemTime) {
        self.started_at_nanos(nanos_since_epoch(at));
    }

    /// A call started `nanos` nanoseconds after the Unix epoch (from
    /// [`WallAnchor::wall_nanos`]; 0 reads as "never").
    #[inline]
    pub fn started_at_nanos(&self, nanos: u64) {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.last_started.store(nanos, Ordering::Relaxed);
    }

    /// A call ended, with status OK or not.
    #[inline]
    pub fn finished(&self, ok: bool) {
        if ok {
            self.succeeded.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts now.
    pub fn get(&self) -> CallCounts {
        let nanos = self.last_started.load(Ordering::Relaxed);
        CallCounts {
            started: self.started.load(Ordering::Relaxed),
            succeeded: self.succeeded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            last_started: (nanos != 0).then(|| UNIX_EPOCH + Duration::from_nanos(nanos)),
        }
    }
}

/// `at` in nanoseconds since the Unix epoch, at least 1 (0 means "never").
fn nanos_since_epoch(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos().clamp(1, u128::from(u64::MAX)) as u64)
}

/// A copy of [`CallCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallCounts {
    /// Calls started.
    pub started: u64,
    /// Calls that ended with OK.
    pub succeeded: u64,
    /// Calls that ended with another status.
    pub failed: u64,
    /// When the last call started.
    pub last_started: Option<SystemTime>,
}

/// How serious a trace event is (channelz's `ChannelTraceEvent.Severity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Severity {
    /// Normal operation: state changes, resolver results, picker updates.
    Info,
    /// Something a user may want to act on: a bad config, a failed connection.
    Warning,
    /// Something failed.
    Error,
}

/// One trace event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// When it happened.
    pub at: SystemTime,
    /// How serious it is.
    pub severity: Severity,
    /// What happened, in words.
    pub description: String,
    /// The entity it is about (a subchannel created, say), if any.
    pub child: Option<(Kind, u64)>,
}

/// The last [`TRACE_EVENTS`] events of one entity.
#[derive(Debug)]
pub struct Trace {
    created: SystemTime,
    inner: Mutex<(VecDeque<TraceEvent>, u64)>,
}

impl Trace {
    /// An empty trace of an entity created at `created`.
    pub fn new(created: SystemTime) -> Self {
        Self {
            created,
            inner: Mutex::new((VecDeque::with_capacity(4), 0)),
        }
    }

    /// Adds an event, dropping the oldest beyond [`TRACE_EVENTS`].
    pub fn add(&self, event: TraceEvent) {
        let mut inner = self.inner.lock();
        if inner.0.len() == TRACE_EVENTS {
            inner.0.pop_front();
        }
        inner.0.push_back(event);
        inner.1 += 1;
    }

    /// Adds an event without a child reference.
    pub fn event(&self, at: SystemTime, severity: Severity, description: impl Into<String>) {
        self.add(TraceEvent {
            at,
            severity,
            description: description.into(),
            child: None,
        });
    }

    /// The events kept now, oldest first.
    pub fn snapshot(&self) -> TraceSnapshot {
        let inner = self.inner.lock();
        TraceSnapshot {
            created: self.created,
            events_logged: inner.1,
            events: inner.0.iter().cloned().collect(),
        }
    }
}

/// A copy of a [`Trace`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceSnapshot {
    /// When the entity was created.
    pub created: SystemTime,
    /// Events ever added, including those dropped.
    pub events_logged: u64,
    /// The events kept, oldest first.
    pub events: Vec<TraceEvent>,
}

impl Default for TraceSnapshot {
    fn default() -> Self {
        Self {
            created: UNIX_EPOCH,
            events_logged: 0,
            events: Vec::new(),
        }
    }
}

/// A channel's data.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelSnapshot {
    /// Its id.
    pub id: u64,
    /// Its target, as the program gave it.
    pub target: String,
    /// Its connectivity state.
    pub state: ConnectivityState,
    /// Its calls.
    pub calls: CallCounts,
    /// Its recent events: resolver results, policy changes, state changes.
    pub trace: TraceSnapshot,
    /// Its subchannels' ids.
    pub subchannels: Vec<u64>,
    /// The ids of channels its policies made (the RLS control channel).
    pub channels: Vec<u64>,
}

/// A subchannel's data.
#[derive(Clone, Debug, PartialEq)]
pub struct SubchannelSnapshot {
    /// Its id.
    pub id: u64,
    /// The address it connects to.
    pub target: String,
    /// Its connectivity state.
    pub state: ConnectivityState,
    /// The calls picked onto it.
    pub calls: CallCounts,
    /// Its recent events: state changes, connection failures.
    pub trace: TraceSnapshot,
    /// Its connections' socket ids (those the transport registered).
    pub sockets: Vec<u64>,
}

/// A socket's data: a client's or a server's connection, or a listening socket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SocketSnapshot {
    /// Its id.
    pub id: u64,
    /// A name for people (`127.0.0.1:50051`, say).
    pub name: String,
    /// The local address, if known.
    pub local: Option<String>,
    /// The remote address, if known (none for a listening socket).
    pub remote: Option<String>,
    /// Streams this side opened or the peer opened.
    pub streams_started: u64,
    /// Streams that ended with END_STREAM and no error.
    pub streams_succeeded: u64,
    /// Streams that ended otherwise (reset, connection lost).
    pub streams_failed: u64,
    /// gRPC messages sent.
    pub messages_sent: u64,
    /// gRPC messages received.
    pub messages_received: u64,
    /// Keepalive PINGs sent.
    pub keep_alives_sent: u64,
    /// When this side last opened a stream.
    pub last_local_stream_created: Option<SystemTime>,
    /// When the peer last opened a stream.
    pub last_remote_stream_created: Option<SystemTime>,
    /// When a message was last sent.
    pub last_message_sent: Option<SystemTime>,
    /// When a message was last received.
    pub last_message_received: Option<SystemTime>,
    /// The connection-level flow-control window the peer grants this side (what
    /// this side may still send), as channelz.proto defines it.
    pub local_flow_control_window: Option<i64>,
    /// The connection-level flow-control window this side grants the peer (what
    /// the peer may still send).
    pub remote_flow_control_window: Option<i64>,
    /// The security in use (`"tls"`, with details after a colon), if any.
    pub security: Option<String>,
}

/// A server's data.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerSnapshot {
    /// Its id.
    pub id: u64,
    /// Its calls.
    pub calls: CallCounts,
    /// Its recent events.
    pub trace: TraceSnapshot,
    /// Its listening sockets' ids.
    pub listen_sockets: Vec<u64>,
    /// Its connections' socket ids.
    pub sockets: Vec<u64>,
}

/// A policy as it shows itself: filled in by
/// [`LbPolicy::describe`](crate::LbPolicy::describe), read by the admin page.
///
/// The parent (the channel for the root) sets `policy`, `name` and, when it knows it,
/// `state`; the policy adds the rest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyView {
    /// The child's name in its parent (a target, a priority, a cluster); empty for
    /// the root.
    pub name: String,
    /// The policy's registered name (`round_robin`).
    pub policy: String,
    /// The state it last published.
    pub state: Option<ConnectivityState>,
    /// Its config, for people (JSON or Rust debug text).
    pub config: Option<String>,
    /// Facts worth showing, as label and value (`"weight"`, `"3"`).
    pub details: Vec<(String, String)>,
    /// Its child policies.
    pub children: Vec<Self>,
    /// The subchannels it owns directly.
    pub subchannels: Vec<SubchannelView>,
    /// Tables of its own, such as the RLS cache.
    pub tables: Vec<Table>,
}

impl PolicyView {
    /// A child's view before its `describe`: its name in the parent and its
    /// policy's name.
    pub fn child(name: impl Into<String>, policy: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            policy: policy.into(),
            ..Self::default()
        }
    }

    /// Adds a fact (`"weight"`, `3`).
    pub fn detail(&mut self, label: impl Into<String>, value: impl fmt::Display) {
        self.details.push((label.into(), value.to_string()));
    }

    /// The value of the first fact labelled `label`, if any.
    pub fn get_detail(&self, label: &str) -> Option<&str> {
        self.details
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, v)| v.as_str())
    }

    /// The first view in this tree (itself included, depth first) named `name`.
    pub fn find(&self, name: &str) -> Option<&Self> {
        if self.name == name {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(name))
    }
}

/// A subchannel as a policy shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubchannelView {
    /// Its channelz id (0 for a subchannel outside a channel, in tests).
    pub id: u64,
    /// The address.
    pub address: String,
    /// Its state as the policy last heard it.
    pub state: ConnectivityState,
    /// Facts worth showing (`"ejected"`, `"weight"`).
    pub details: Vec<(String, String)>,
}

impl SubchannelView {
    /// `subchannel` as its policy last saw it (`state`); its id is its channelz id.
    pub fn of(subchannel: &crate::Subchannel, state: ConnectivityState) -> Self {
        Self {
            id: subchannel.id().0,
            address: subchannel.address().to_string(),
            state,
            details: Vec::new(),
        }
    }

    /// Adds a fact (`"weight"`, `3`).
    pub fn with(mut self, label: impl Into<String>, value: impl fmt::Display) -> Self {
        self.details.push((label.into(), value.to_string()));
        self
    }
}

/// A table a policy shows (the RLS cache: one row an entry).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// What the table holds.
    pub title: String,
    /// The column headings.
    pub columns: Vec<String>,
    /// The rows, each as long as `columns`.
    pub rows: Vec<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Snapshot);
    impl Entity for Fixed {
        fn snapshot(&self) -> Snapshot {
            self.0.clone()
        }
    }

    fn server(id: u64) -> Arc<dyn Entity> {
        Arc::new(Fixed(Snapshot::Server(ServerSnapshot {
            id,
            ..ServerSnapshot::default()
        })))
    }

    #[test]
    fn list_pages_by_id_and_skips_dead_and_other_kinds() {
        let ids: Vec<u64> = (0..5).map(|_| next_id()).collect();
        let mut entities: Vec<_> = ids.iter().map(|&id| server(id)).collect();
        let regs: Vec<_> = ids
            .iter()
            .zip(&entities)
            .map(|(&id, e)| registry().register(id, Kind::Server, Arc::downgrade(e)))
            .collect();
        let other = next_id();
        let other_entity = server(other);
        let _other = registry().register(other, Kind::Socket, Arc::downgrade(&other_entity));

        let ids_of = |snaps: &[Snapshot]| -> Vec<u64> {
            snaps
                .iter()
                .map(|s| match s {
                    Snapshot::Server(s) => s.id,
                    other => panic!("{other:?}"),
                })
                .filter(|id| ids.contains(id))
                .collect()
        };
        let (page, end) = registry().list(Kind::Server, ids[0], 2);
        assert_eq!(ids_of(&page), ids[..2]);
        assert!(!end);
        drop(entities.remove(2));
        let (page, _) = registry().list(Kind::Server, ids[2], 2);
        assert_eq!(ids_of(&page), ids[3..5], "the dropped one is skipped");
        drop(regs);
        assert!(registry().get(ids[0]).is_none());
        assert_eq!(registry().kind(other), Some(Kind::Socket));
    }

    #[test]
    fn trace_keeps_the_last_events_and_counts_all() {
        let trace = Trace::new(UNIX_EPOCH);
        for i in 0..TRACE_EVENTS + 3 {
            trace.event(UNIX_EPOCH, Severity::Info, format!("e{i}"));
        }
        let snap = trace.snapshot();
        assert_eq!(snap.events_logged, TRACE_EVENTS as u64 + 3);
        assert_eq!(snap.events.len(), TRACE_EVENTS);
        assert_eq!(snap.events[0].description, "e3");
    }

    #[test]
    fn counters_and_anchor() {
        let c = CallCounters::default();
        assert_eq!(c.get(), CallCounts::default());
        let now = Instant::now();
        let anchor = WallAnchor::new(now, UNIX_EPOCH + Duration::from_secs(100));
        let at = anchor.wall(now + Duration::from_secs(5));
        assert_eq!(at, UNIX_EPOCH + Duration::from_secs(105));
        assert_eq!(
            anchor.wall(now - Duration::from_secs(1)),
            UNIX_EPOCH + Duration::from_secs(99)
        );
        c.started(at);
        c.finished(false);
        let got = c.get();
        assert_eq!((got.started, got.succeeded, got.failed), (1, 0, 1));
        assert_eq!(got.last_started, Some(at));
        let later = now + Duration::from_millis(1500);
        c.started_at_nanos(anchor.wall_nanos(later));
        assert_eq!(c.get().last_started, Some(anchor.wall(later)));
        assert_eq!(
            anchor.wall_nanos(now - Duration::from_secs(1)),
            99_000_000_000,
            "before the anchor too"
        );
    }
}
