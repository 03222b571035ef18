//! Channelz snapshots as the JSON the page draws. Times are milliseconds since the
//! Unix epoch (`null` for never); `now` is the server's, so the page shows ages
//! without trusting the browser's clock.
//!
//! ```text
//! { "now": ms, "channels": [Channel], "servers": [Server], "more_channels": bool }
//! Channel    { id, kind, target, state, calls, trace, policy: Policy | null,
//!              subchannels: [Subchannel], channels: [Channel] }   (nested ones)
//! Policy     { name, policy, state, config, details: [[label, value]],
//!              children: [Policy], subchannels: [{ id, address, state, details }],
//!              tables: [{ title, columns, rows }] }
//! Subchannel { id, target, state, calls, trace, sockets: [Socket] }
//! Server     { id, calls, trace, listen_sockets: [Socket], sockets: [Socket] }
//! calls      { started, succeeded, failed, last_started }
//! trace      { created, events_logged, events: [{ at, severity, description, child }] }
//! ```

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lb_core::channelz::{
    self, CallCounts, ChannelSnapshot, Kind, PolicyView, ServerSnapshot, Severity, Snapshot,
    SocketSnapshot, SubchannelSnapshot, Table, TraceSnapshot,
};
use serde_json::{Value, json};

/// How deep nested channels are followed (a channel's RLS control channel is one
/// level down).
const MAX_NESTING: usize = 3;

/// How long one answer waits for policy trees: at most `each` per channel and
/// `total` in all; channels asked after that show no tree (`"policy": null`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Waits {
    each: Duration,
    until: Instant,
}

impl Waits {
    pub(crate) fn new(each: Duration, total: Duration) -> Self {
        Self {
            each,
            until: Instant::now() + total,
        }
    }

    /// The wait for the next channel; `None` once the total is spent.
    fn next(&self) -> Option<Duration> {
        let left = self.until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then(|| self.each.min(left))
    }
}

/// Every top channel (at most `max`) and server.
pub(crate) fn overview(max: usize, wait: Waits) -> Value {
    let (channels, last) = channelz::registry().list(Kind::TopChannel, 0, max);
    let (servers, _) = channelz::registry().list(Kind::Server, 0, max);
    json!({
        "now": millis(SystemTime::now()),
        "channels": channels
            .iter()
            .filter_map(|s| match s {
                Snapshot::Channel(c) => Some(channel(c, Kind::TopChannel, max, wait, 0)),
                _ => None,
            })
            .collect::<Vec<_>>(),
        "more_channels": !last,
        "servers": servers
            .iter()
            .filter_map(|s| match s {
                Snapshot::Server(s) => Some(server(s, max)),
                _ => None,
            })
            .collect::<Vec<_>>(),
    })
}

/// Channel `id` (top or nested), if there is one.
pub(crate) fn channel_by_id(id: u64, max: usize, wait: Waits) -> Option<Value> {
    let kind = channelz::registry().kind(id)?;
    if !matches!(kind, Kind::TopChannel | Kind::NestedChannel) {
        return None;
    }
    match channelz::registry().get(id)? {
        Snapshot::Channel(c) => {
            let mut value = channel(&c, kind, max, wait, 0);
            value["now"] = millis(SystemTime::now());
            Some(value)
        }
        _ => None,
    }
}

fn channel(c: &ChannelSnapshot, kind: Kind, max: usize, wait: Waits, depth: usize) -> Value {
    let policy = wait
        .next()
        .and_then(|wait| channelz::registry().policy(c.id, wait));
    let subchannels: Vec<Value> = c
        .subchannels
        .iter()
        .take(max)
        .filter_map(|&id| match channelz::registry().get(id) {
            Some(Snapshot::Subchannel(s)) => Some(subchannel(&s, max)),
            _ => None,
        })
        .collect();
    let nested: Vec<Value> = if depth < MAX_NESTING {
        c.channels
            .iter()
            .take(max)
            .filter_map(|&id| match channelz::registry().get(id) {
                Some(Snapshot::Channel(n)) => {
                    Some(channel(&n, Kind::NestedChannel, max, wait, depth + 1))
                }
                _ => None,
            })
            .collect()
    } else {
        Vec::new()
    };
    json!({
        "id": c.id,
        "kind": if kind == Kind::TopChannel { "top" } else { "nested" },
        "target": c.target,
        "state": c.state.as_str(),
        "calls": calls(&c.calls),
        "trace": trace(&c.trace),
        "policy": policy.as_ref().map(policy_view),
        "subchannels": subchannels,
        "more_subchannels": c.subchannels.len().saturating_sub(max),
        "channels": nested,
    })
}

fn subchannel(s: &SubchannelSnapshot, max: usize) -> Value {
    json!({
        "id": s.id,
        "target": s.target,
        "state": s.state.as_str(),
        "calls": calls(&s.calls),
        "trace": trace(&s.trace),
        "sockets": sockets(&s.sockets, max),
    })
}

fn server(s: &ServerSnapshot, max: usize) -> Value {
    json!({
        "id": s.id,
        "calls": calls(&s.calls),
        "trace": trace(&s.trace),
        "listen_sockets": sockets(&s.listen_sockets, max),
        "sockets": sockets(&s.sockets, max),
        "more_sockets": s.sockets.len().saturating_sub(max),
    })
}

fn sockets(ids: &[u64], max: usize) -> Vec<Value> {
    ids.iter()
        .take(max)
        .filter_map(|&id| match channelz::registry().get(id) {
            Some(Snapshot::Socket(s)) => Some(socket(&s)),
            _ => None,
        })
        .collect()
}

pub(crate) fn socket(s: &SocketSnapshot) -> Value {
    json!({
        "id": s.id,
        "name": s.name,
        "local": s.local,
        "remote": s.remote,
        "streams_started": s.streams_started,
        "streams_succeeded": s.streams_succeeded,
        "streams_failed": s.streams_failed,
        "messages_sent": s.messages_sent,
        "messages_received": s.messages_received,
        "keep_alives_sent": s.keep_alives_sent,
        "last_local_stream_created": s.last_local_stream_created.map(millis),
        "last_remote_stream_created": s.last_remote_stream_created.map(millis),
        "last_message_sent": s.last_message_sent.map(millis),
        "last_message_received": s.last_message_received.map(millis),
        "local_flow_control_window": s.local_flow_control_window,
        "remote_flow_control_window": s.remote_flow_control_window,
        "security": s.security,
    })
}

pub(crate) fn policy_view(p: &PolicyView) -> Value {
    json!({
        "name": p.name,
        "policy": p.policy,
        "state": p.state.map(|s| s.as_str()),
        "config": p.config,
        "details": p.details,
        "children": p.children.iter().map(policy_view).collect::<Vec<_>>(),
        "subchannels": p.subchannels.iter().map(|s| json!({
            "id": s.id,
            "address": s.address,
            "state": s.state.as_str(),
            "details": s.details,
        })).collect::<Vec<_>>(),
        "tables": p.tables.iter().map(table).collect::<Vec<_>>(),
    })
}

fn table(t: &Table) -> Value {
    json!({ "title": t.title, "columns": t.columns, "rows": t.rows })
}

fn calls(c: &CallCounts) -> Value {
    json!({
        "started": c.started,
        "succeeded": c.succeeded,
        "failed": c.failed,
        "last_started": c.last_started.map(millis),
    })
}

fn trace(t: &TraceSnapshot) -> Value {
    json!({
        "created": millis(t.created),
        "events_logged": t.events_logged,
        "events": t.events.iter().map(|e| json!({
            "at": millis(e.at),
            "severity": match e.severity {
                Severity::Info => "INFO",
                Severity::Warning => "WARNING",
                Severity::Error => "ERROR",
            },
            "description": e.description,
            "child": e.child.map(|(kind, id)| json!({"kind": kind_name(kind), "id": id})),
        })).collect::<Vec<_>>(),
    })
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::TopChannel => "channel",
        Kind::NestedChannel => "nested_channel",
        Kind::Subchannel => "subchannel",
        Kind::Socket => "socket",
        Kind::ListenSocket => "listen_socket",
        Kind::Server => "server",
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn millis(t: SystemTime) -> Value {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(u128::from(u64::MAX)) as u64);
    Value::from(ms)
}
