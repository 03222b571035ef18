//! The channel's side of channelz ([`crate::channelz`]): what a channel and each of
//! its subchannels keep for it, and the one way events are recorded.
//!
//! ```text
//!  Channel ─ Shared ─ ChannelData (id, target, CallCounters, Trace, subchannel ids,
//!                │                 nested channels, WallAnchor from the clock)
//!                │  registered as an Entity (Weak<Shared>) by the core; the entry
//!                │  leaves the registry when the channel closes
//!                └─ Pool ─ Entry ─ SubchannelData (id = SubchannelId, address,
//!                                   state, CallCounters, Trace, connections)
//! ```
//!
//! Every event that goes to a trace is logged by the same call ([`ChannelData::event`],
//! [`SubchannelData::event`]): the `log` level from the severity (info, warn, error;
//! a subchannel's state changes are info even when the trace marks a failure as a
//! warning), the log target given by the caller (its module path), and a message
//! that starts with the channel's id and target. Calls count with relaxed atomics
//! only: two increments and a store per call and per subchannel it is picked onto.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use super::clock::Clock;
use super::core::{Input, Shared};
use crate::address::Address;
use crate::channelz::{
    CallCounters, ChannelRef, ChannelSnapshot, Entity, Kind, NestedLink, PolicyView, Severity,
    Snapshot, SubchannelSnapshot, Trace, TraceEvent, WallAnchor,
};
use crate::state::ConnectivityState;
use crate::transport::Connection;

/// A channel's channelz data. Shared by its calls (counters), its serializer
/// (trace, subchannel ids) and the registry (snapshots).
pub(crate) struct ChannelData {
    pub(crate) id: u64,
    pub(crate) kind: Kind,
    /// The target as the program gave it.
    pub(crate) target: String,
    anchor: WallAnchor,
    clock: Arc<dyn Clock>,
    calls: CallCounters,
    trace: Trace,
    subchannels: Mutex<BTreeSet<u64>>,
    /// This channel as policies see it; its nested channels join its list.
    pub(crate) channel_ref: ChannelRef,
    /// This channel's place in its parent's list, if it is nested, until it closes.
    parent: Mutex<Option<NestedLink>>,
}

impl ChannelData {
    /// The data of a new channel to `target`; `parent` makes it a nested channel.
    pub(crate) fn new(target: &str, clock: Arc<dyn Clock>, parent: Option<&ChannelRef>) -> Self {
        let id = crate::channelz::next_id();
        let anchor = WallAnchor::new(clock.now(), SystemTime::now());
        let created = anchor.wall(clock.now());
        Self {
            id,
            kind: if parent.is_some() {
                Kind::NestedChannel
            } else {
                Kind::TopChannel
            },
            target: target.to_owned(),
            anchor,
            clock,
            calls: CallCounters::default(),
            trace: Trace::new(created),
            subchannels: Mutex::new(BTreeSet::new()),
            channel_ref: ChannelRef::new(id, target),
            parent: Mutex::new(parent.map(|p| p.adopt(id))),
        }
    }

    /// A call started at `now` (on the channel's clock).
    #[inline]
    pub(crate) fn call_started(&self, now: Instant) {
        self.calls.started_at_nanos(self.anchor.wall_nanos(now));
    }

    /// A call ended, with status OK or not.
    #[inline]
    pub(crate) fn call_finished(&self, ok: bool) {
        self.calls.finished(ok);
    }

    /// Counts a call started at `now` in `counters` (a subchannel's).
    #[inline]
    fn call_started_on(&self, counters: &CallCounters, now: Instant) {
        counters.started_at_nanos(self.anchor.wall_nanos(now));
    }

    /// The wall-clock time of the channel's clock now.
    pub(crate) fn wall_now(&self) -> SystemTime {
        self.anchor.wall(self.clock.now())
    }

    /// The anchor that maps the channel's clock to the wall clock.
    pub(crate) fn anchor(&self) -> WallAnchor {
        self.anchor
    }

    /// Records an event in the channel's trace and logs it (target `module`, level
    /// from `severity`, the message prefixed with the channel's target).
    pub(crate) fn event(
        &self,
        module: &str,
        severity: Severity,
        child: Option<(Kind, u64)>,
        description: impl fmt::Display,
    ) {
        let description = description.to_string();
        log::log!(
            target: module,
            level(severity),
            "channel {} ({}): {description}",
            self.id,
            self.target
        );
        self.trace.add(TraceEvent {
            at: self.wall_now(),
            severity,
            description,
            child,
        });
    }

    /// The channel closed: it leaves its parent's list of nested channels.
    pub(crate) fn closed(&self) {
        self.parent.lock().take();
    }

    /// Subchannel `id` was created: listed, traced.
    pub(crate) fn subchannel_created(&self, id: u64, address: &Address) {
        self.subchannels.lock().insert(id);
        self.event(
            module_path!(),
            Severity::Info,
            Some((Kind::Subchannel, id)),
            format_args!("subchannel {id} created for {address}"),
        );
    }

    /// Subchannel `id` was shut down: no longer listed, traced.
    pub(crate) fn subchannel_shut_down(&self, id: u64, address: &Address) {
        self.subchannels.lock().remove(&id);
        self.event(
            module_path!(),
            Severity::Info,
            Some((Kind::Subchannel, id)),
            format_args!("subchannel {id} for {address} shut down"),
        );
    }

    /// The channel's data now, in state `state`.
    pub(crate) fn snapshot(&self, state: ConnectivityState) -> ChannelSnapshot {
        ChannelSnapshot {
            id: self.id,
            target: self.target.clone(),
            state,
            calls: self.calls.get(),
            trace: self.trace.snapshot(),
            subchannels: self.subchannels.lock().iter().copied().collect(),
            channels: self.channel_ref.nested(),
        }
    }
}

impl fmt::Debug for ChannelData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelData({}, {:?})", self.id, self.target)
    }
}

/// The `log` level of a trace event of `severity`.
pub(crate) fn level(severity: Severity) -> log::Level {
    match severity {
        Severity::Info => log::Level::Info,
        Severity::Warning => log::Level::Warn,
        Severity::Error => log::Level::Error,
    }
}

impl Entity for Shared {
    fn snapshot(&self) -> Snapshot {
        Snapshot::Channel(self.channelz.snapshot(self.cell.load().state))
    }

    fn policy(&self, wait: Duration) -> Option<PolicyView> {
        // One slot: the serializer never waits to reply, and a late reply is dropped.
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.tx.send(Input::Describe { reply }).ok()?;
        answer.recv_timeout(wait).ok()
    }
}

/// One subchannel's channelz data, kept by the pool; its calls count it on their
/// own threads.
pub(crate) struct SubchannelData {
    pub(crate) id: u64,
    address: Address,
    channel: Arc<ChannelData>,
    state: Mutex<ConnectivityState>,
    calls: CallCounters,
    trace: Trace,
    /// Its connections (the current one and any still draining); dead ones are
    /// pruned when another is added, so this holds at most the live ones and one.
    connections: Mutex<Vec<Weak<dyn Connection>>>,
}

impl SubchannelData {
    pub(crate) fn new(id: u64, address: &Address, channel: Arc<ChannelData>) -> Self {
        Self {
            id,
            address: address.clone(),
            trace: Trace::new(channel.wall_now()),
            channel,
            state: Mutex::new(ConnectivityState::Idle),
            calls: CallCounters::default(),
            connections: Mutex::new(Vec::new()),
        }
    }

    /// Records an event in this subchannel's trace and logs it at `level` (as
    /// [`ChannelData::event`] does, naming the subchannel).
    pub(crate) fn event(
        &self,
        module: &str,
        level: log::Level,
        severity: Severity,
        description: impl fmt::Display,
    ) {
        let description = description.to_string();
        log::log!(
            target: module,
            level,
            "channel {} ({}): subchannel {} ({}): {description}",
            self.channel.id,
            self.channel.target,
            self.id,
            self.address
        );
        self.trace.add(TraceEvent {
            at: self.channel.wall_now(),
            severity,
            description,
            child: None,
        });
    }

    /// The subchannel's state changed (as its policy is shown it). Logged at info
    /// like every state change; a failure is a warning in the trace.
    pub(crate) fn set_state(&self, state: ConnectivityState, error: Option<&crate::Status>) {
        let old = std::mem::replace(&mut *self.state.lock(), state);
        let info = log::Level::Info;
        match error {
            Some(error) => self.event(
                module_path!(),
                info,
                Severity::Warning,
                format_args!("{old} -> {state}: {error}"),
            ),
            None if old != state => {
                self.event(
                    module_path!(),
                    info,
                    Severity::Info,
                    format_args!("{old} -> {state}"),
                );
            }
            None => {}
        }
    }

    /// A call's attempt opened a stream on this subchannel at `now`.
    #[inline]
    pub(crate) fn call_started(&self, now: Instant) {
        self.channel.call_started_on(&self.calls, now);
    }

    /// That attempt ended, with status OK or not.
    #[inline]
    pub(crate) fn call_finished(&self, ok: bool) {
        self.calls.finished(ok);
    }

    /// A new connection of this subchannel (its socket is listed while it lives).
    pub(crate) fn add_connection(&self, connection: &Arc<dyn Connection>) {
        let mut connections = self.connections.lock();
        connections.retain(|c| c.strong_count() > 0);
        connections.push(Arc::downgrade(connection));
    }
}

impl Entity for SubchannelData {
    fn snapshot(&self) -> Snapshot {
        let sockets = self
            .connections
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .filter_map(|c| c.socket_id())
            .collect();
        Snapshot::Subchannel(SubchannelSnapshot {
            id: self.id,
            target: self.address.to_string(),
            state: *self.state.lock(),
            calls: self.calls.get(),
            trace: self.trace.snapshot(),
            sockets,
        })
    }
}

impl fmt::Debug for SubchannelData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubchannelData({}, {})", self.id, self.address)
    }
}
