//! The `grpc.channelz.v1` messages, coded by hand on [`lb_core::protowire`] (as
//! health and ORCA are), with the field numbers of grpc's
//! `src/proto/grpc/channelz/channelz.proto`.
//!
//! - Requests are decoded ([`decode_request`]) by the service: every request is a
//!   few `int64` fields and one `bool`.
//! - Responses are encoded from lb-core's snapshots ([`encode_channel`],
//!   [`encode_server`], [`encode_socket`], the `encode_get_*` wrappers).
//! - Responses decode back into the same snapshots ([`decode_channel`], …,
//!   [`decode_page`]), so a test can read what a server (ours, or grpcio's
//!   channelz servicer) answered without generated code. Fields the snapshots do
//!   not hold (socket options, certificates, `remote_name`) are skipped.
//!
//! Decoding follows protobuf's rules: any field order, the last of a repeated
//! scalar wins, unknown fields (and known ones with an unexpected wire type) are
//! skipped, and malformed bytes are a [`DecodeError`] naming the field and the
//! byte, never a panic.
//!
//! ```
//! use lb_transport::server::channelz::wire::{self, Method, Request};
//! let mut bytes = Vec::new();
//! lb_core::protowire::put_tag(&mut bytes, 2, lb_core::protowire::wire::VARINT);
//! lb_core::protowire::put_varint(&mut bytes, 1);
//! assert_eq!(
//!     wire::decode_request(Method::GetServers, &bytes)?,
//!     Request::Servers { start_server_id: 0, max_results: 1 },
//! );
//! # Ok::<(), lb_core::protowire::DecodeError>(())
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lb_core::ConnectivityState;
use lb_core::channelz::{
    CallCounts, ChannelSnapshot, Kind, ServerSnapshot, Severity, SocketSnapshot,
    SubchannelSnapshot, TraceEvent, TraceSnapshot,
};
use lb_core::protowire::{Reader, put_bytes, put_string, put_tag, put_varint, wire};

pub use lb_core::protowire::DecodeError;

/// The service, as it appears in method paths.
pub const SERVICE: &str = "grpc.channelz.v1.Channelz";

/// The seven methods of `grpc.channelz.v1.Channelz`, all unary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GetTopChannels`: the channels the program made, a page at a time.
    GetTopChannels,
    /// `GetServers`: the servers, a page at a time.
    GetServers,
    /// `GetServer`: one server.
    GetServer,
    /// `GetServerSockets`: one server's connections, a page at a time.
    GetServerSockets,
    /// `GetChannel`: one channel.
    GetChannel,
    /// `GetSubchannel`: one subchannel.
    GetSubchannel,
    /// `GetSocket`: one socket.
    GetSocket,
}

impl Method {
    /// Every method.
    pub const ALL: [Self; 7] = [
        Self::GetTopChannels,
        Self::GetServers,
        Self::GetServer,
        Self::GetServerSockets,
        Self::GetChannel,
        Self::GetSubchannel,
        Self::GetSocket,
    ];

    /// The method's path (`/grpc.channelz.v1.Channelz/GetServers`).
    pub fn path(self) -> &'static str {
        match self {
            Self::GetTopChannels => "/grpc.channelz.v1.Channelz/GetTopChannels",
            Self::GetServers => "/grpc.channelz.v1.Channelz/GetServers",
            Self::GetServer => "/grpc.channelz.v1.Channelz/GetServer",
            Self::GetServerSockets => "/grpc.channelz.v1.Channelz/GetServerSockets",
            Self::GetChannel => "/grpc.channelz.v1.Channelz/GetChannel",
            Self::GetSubchannel => "/grpc.channelz.v1.Channelz/GetSubchannel",
            Self::GetSocket => "/grpc.channelz.v1.Channelz/GetSocket",
        }
    }
}

/// A decoded request. Ids and counts are `int64` on the wire; the service refuses
/// negative ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// `GetTopChannelsRequest`.
    TopChannels {
        /// Field 1: the first id to list.
        start_channel_id: i64,
        /// Field 2: at most this many (0: the server chooses).
        max_results: i64,
    },
    /// `GetServersRequest`.
    Servers {
        /// Field 1.
        start_server_id: i64,
        /// Field 2.
        max_results: i64,
    },
    /// `GetServerRequest`.
    Server {
        /// Field 1.
        server_id: i64,
    },
    /// `GetServerSocketsRequest`.
    ServerSockets {
        /// Field 1.
        server_id: i64,
        /// Field 2.
        start_socket_id: i64,
        /// Field 3.
        max_results: i64,
    },
    /// `GetChannelRequest`.
    Channel {
        /// Field 1.
        channel_id: i64,
    },
    /// `GetSubchannelRequest`.
    Subchannel {
        /// Field 1.
        subchannel_id: i64,
    },
    /// `GetSocketRequest`.
    Socket {
        /// Field 1.
        socket_id: i64,
        /// Field 2: only what is cheap to get (this side always sends everything).
        summary: bool,
    },
}

/// Decodes the request of `method`.
///
/// # Errors
///
/// The bytes are not protobuf; the error names the field and the byte.
pub fn decode_request(method: Method, bytes: &[u8]) -> Result<Request, DecodeError> {
    // Every request is varint fields 1 to 3.
    let mut f = [0u64; 3];
    let mut r = Reader::new(bytes, 0);
    while let Some((field, wire_type)) = r.tag()? {
        match (field, wire_type) {
            (1..=3, wire::VARINT) => f[field as usize - 1] = r.varint(field)?,
            _ => r.skip(field, wire_type)?,
        }
    }
    let [a, b, c] = f.map(|v| v as i64);
    Ok(match method {
        Method::GetTopChannels => Request::TopChannels {
            start_channel_id: a,
            max_results: b,
        },
        Method::GetServers => Request::Servers {
            start_server_id: a,
            max_results: b,
        },
        Method::GetServer => Request::Server { server_id: a },
        Method::GetServerSockets => Request::ServerSockets {
            server_id: a,
            start_socket_id: b,
            max_results: c,
        },
        Method::GetChannel => Request::Channel { channel_id: a },
        Method::GetSubchannel => Request::Subchannel { subchannel_id: a },
        Method::GetSocket => Request::Socket {
            socket_id: a,
            summary: b != 0,
        },
    })
}

/// Encodes a request (what a channelz client sends; the tests' client side).
pub fn encode_request(request: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    let fields: [i64; 3] = match *request {
        Request::TopChannels {
            start_channel_id: a,
            max_results: b,
        }
        | Request::Servers {
            start_server_id: a,
            max_results: b,
        } => [a, b, 0],
        Request::Server { server_id: a }
        | Request::Channel { channel_id: a }
        | Request::Subchannel { subchannel_id: a } => [a, 0, 0],
        Request::ServerSockets {
            server_id,
            start_socket_id,
            max_results,
        } => [server_id, start_socket_id, max_results],
        Request::Socket { socket_id, summary } => [socket_id, i64::from(summary), 0],
    };
    for (n, v) in (1..).zip(fields) {
        put_int64(&mut out, n, v as u64);
    }
    out
}

// ----- Writers -----

/// A proto3 `int64` (or `int32`, `enum`, `bool`): omitted when zero.
fn put_int64(buf: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        put_tag(buf, field, wire::VARINT);
        put_varint(buf, v);
    }
}

/// An embedded message written by `write`.
fn put_message(buf: &mut Vec<u8>, field: u32, write: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    write(&mut inner);
    put_bytes(buf, field, &inner);
}

/// A `google.protobuf.Timestamp`.
fn put_timestamp(buf: &mut Vec<u8>, field: u32, at: SystemTime) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    put_message(buf, field, |b| {
        put_int64(b, 1, since.as_secs());
        put_int64(b, 2, u64::from(since.subsec_nanos()));
    });
}

fn state_number(state: ConnectivityState) -> u64 {
    match state {
        ConnectivityState::Idle => 1,
        ConnectivityState::Connecting => 2,
        ConnectivityState::Ready => 3,
        ConnectivityState::TransientFailure => 4,
        ConnectivityState::Shutdown => 5,
    }
}

fn severity_number(severity: Severity) -> u64 {
    match severity {
        Severity::Info => 1,
        Severity::Warning => 2,
        Severity::Error => 3,
    }
}

/// `ChannelRef` (`channel_id` 1, `name` 2).
fn put_channel_ref(buf: &mut Vec<u8>, field: u32, id: u64, name: &str) {
    put_message(buf, field, |b| {
        put_int64(b, 1, id);
        put_string(b, 2, name);
    });
}

/// `SubchannelRef` (`subchannel_id` 7, `name` 8).
fn put_subchannel_ref(buf: &mut Vec<u8>, field: u32, id: u64, name: &str) {
    put_message(buf, field, |b| {
        put_int64(b, 7, id);
        put_string(b, 8, name);
    });
}

/// `SocketRef` (`socket_id` 3, `name` 4).
fn put_socket_ref(buf: &mut Vec<u8>, field: u32, id: u64, name: &str) {
    put_message(buf, field, |b| {
        put_int64(b, 3, id);
        put_string(b, 4, name);
    });
}

/// `ChannelTrace`.
fn put_trace(buf: &mut Vec<u8>, field: u32, trace: &TraceSnapshot) {
    put_message(buf, field, |b| {
        put_int64(b, 1, trace.events_logged);
        put_timestamp(b, 2, trace.created);
        for event in &trace.events {
            put_message(b, 3, |e| {
                put_string(e, 1, &event.description);
                put_int64(e, 2, severity_number(event.severity));
                put_timestamp(e, 3, event.at);
                match event.child {
                    Some((Kind::TopChannel | Kind::NestedChannel, id)) => {
                        put_channel_ref(e, 4, id, "");
                    }
                    Some((Kind::Subchannel, id)) => put_subchannel_ref(e, 5, id, ""),
                    _ => {}
                }
            });
        }
    });
}

/// `ChannelData`.
fn put_channel_data(
    buf: &mut Vec<u8>,
    state: ConnectivityState,
    target: &str,
    trace: &TraceSnapshot,
    calls: &CallCounts,
) {
    put_message(buf, 2, |b| {
        put_message(b, 1, |s| put_int64(s, 1, state_number(state)));
        put_string(b, 2, target);
        put_trace(b, 3, trace);
        put_int64(b, 4, calls.started);
        put_int64(b, 5, calls.succeeded);
        put_int64(b, 6, calls.failed);
        if let Some(at) = calls.last_started {
            put_timestamp(b, 7, at);
        }
    });
}

/// A `Channel` message.
pub fn encode_channel(channel: &ChannelSnapshot) -> Vec<u8> {
    let mut out = Vec::new();
    put_channel_ref(&mut out, 1, channel.id, &channel.target);
    put_channel_data(
        &mut out,
        channel.state,
        &channel.target,
        &channel.trace,
        &channel.calls,
    );
    for &id in &channel.channels {
        put_channel_ref(&mut out, 3, id, "");
    }
    for &id in &channel.subchannels {
        put_subchannel_ref(&mut out, 4, id, "");
    }
    out
}

/// A `Subchannel` message.
pub fn encode_subchannel(subchannel: &SubchannelSnapshot) -> Vec<u8> {
    let mut out = Vec::new();
    put_subchannel_ref(&mut out, 1, subchannel.id, &subchannel.target);
    put_channel_data(
        &mut out,
        subchannel.state,
        &subchannel.target,
        &subchannel.trace,
        &subchannel.calls,
    );
    for &id in &subchannel.sockets {
        put_socket_ref(&mut out, 5, id, "");
    }
    out
}

/// A `Server` message.
pub fn encode_server(server: &ServerSnapshot) -> Vec<u8> {
    let mut out = Vec::new();
    put_message(&mut out, 1, |b| put_int64(b, 5, server.id));
    put_message(&mut out, 2, |b| {
        put_trace(b, 1, &server.trace);
        put_int64(b, 2, server.calls.started);
        put_int64(b, 3, server.calls.succeeded);
        put_int64(b, 4, server.calls.failed);
        if let Some(at) = server.calls.last_started {
            put_timestamp(b, 5, at);
        }
    });
    for &id in &server.listen_sockets {
        put_socket_ref(&mut out, 3, id, "");
    }
    out
}

/// An `Address`: `tcpip_address` (ip bytes and port) for `ip:port`,
/// `uds_address` for `unix:path`, `other_address` with the text otherwise.
fn put_address(buf: &mut Vec<u8>, field: u32, address: &str) {
    put_message(buf, field, |b| {
        if let Ok(addr) = address.parse::<SocketAddr>() {
            let ip = match addr.ip() {
                IpAddr::V4(ip) => ip.octets().to_vec(),
                IpAddr::V6(ip) => ip.octets().to_vec(),
            };
            put_message(b, 1, |t| {
                put_bytes(t, 1, &ip);
                put_int64(t, 2, u64::from(addr.port()));
            });
        } else if let Some(path) = address.strip_prefix("unix:") {
            put_message(b, 2, |u| put_string(u, 1, path));
        } else {
            put_message(b, 3, |o| put_string(o, 1, address));
        }
    });
}

/// A `Security`: `tls` (with the suite's `standard_name` after `tls:`), or
/// `other` with the text.
fn put_security(buf: &mut Vec<u8>, field: u32, security: &str) {
    put_message(buf, field, |b| {
        if security == "tls" || security.starts_with("tls:") {
            put_message(b, 1, |t| {
                if let Some(name) = security.strip_prefix("tls:") {
                    put_string(t, 1, name);
                }
            });
        } else {
            put_message(b, 2, |o| put_string(o, 1, security));
        }
    });
}

/// A `Socket` message.
pub fn encode_socket(socket: &SocketSnapshot) -> Vec<u8> {
    let mut out = Vec::new();
    put_socket_ref(&mut out, 1, socket.id, &socket.name);
    put_message(&mut out, 2, |b| {
        put_int64(b, 1, socket.streams_started);
        put_int64(b, 2, socket.streams_succeeded);
        put_int64(b, 3, socket.streams_failed);
        put_int64(b, 4, socket.messages_sent);
        put_int64(b, 5, socket.messages_received);
        put_int64(b, 6, socket.keep_alives_sent);
        let times = [
            (7, socket.last_local_stream_created),
            (8, socket.last_remote_stream_created),
            (9, socket.last_message_sent),
            (10, socket.last_message_received),
        ];
        for (field, at) in times {
            if let Some(at) = at {
                put_timestamp(b, field, at);
            }
        }
        // google.protobuf.Int64Value: one int64, field 1.
        let windows = [
            (11, socket.local_flow_control_window),
            (12, socket.remote_flow_control_window),
        ];
        for (field, window) in windows {
            if let Some(w) = window {
                put_message(b, field, |v| put_int64(v, 1, w as u64));
            }
        }
    });
    if let Some(local) = &socket.local {
        put_address(&mut out, 3, local);
    }
    if let Some(remote) = &socket.remote {
        put_address(&mut out, 4, remote);
    }
    if let Some(security) = &socket.security {
        put_security(&mut out, 5, security);
    }
    out
}

/// `GetTopChannelsResponse` (`channel` 1, `end` 2).
pub fn encode_get_top_channels(channels: &[ChannelSnapshot], end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for channel in channels {
        put_bytes(&mut out, 1, &encode_channel(channel));
    }
    put_int64(&mut out, 2, u64::from(end));
    out
}

/// `GetServersResponse` (`server` 1, `end` 2).
pub fn encode_get_servers(servers: &[ServerSnapshot], end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for server in servers {
        put_bytes(&mut out, 1, &encode_server(server));
    }
    put_int64(&mut out, 2, u64::from(end));
    out
}

/// `GetServerSocketsResponse` (`socket_ref` 1, `end` 2) from ids and names.
pub fn encode_get_server_sockets(sockets: &[(u64, String)], end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (id, name) in sockets {
        put_socket_ref(&mut out, 1, *id, name);
    }
    put_int64(&mut out, 2, u64::from(end));
    out
}

/// A `Get*Response` holding one message (`GetServerResponse`,
/// `GetChannelResponse`, `GetSubchannelResponse`, `GetSocketResponse`: all field 1).
pub fn encode_get_one(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_bytes(&mut out, 1, message);
    out
}

// ----- Readers -----

/// Calls `field` for each field of the message in `bytes` (at `base`), adding the
/// field number to errors raised inside it.
fn each_field<'a>(
    bytes: &'a [u8],
    base: usize,
    mut field: impl FnMut(&mut Reader<'a>, u32, u8) -> Result<bool, DecodeError>,
) -> Result<(), DecodeError> {
    let mut r = Reader::new(bytes, base);
    while let Some((number, wire_type)) = r.tag()? {
        if !field(&mut r, number, wire_type)? {
            r.skip(number, wire_type)?;
        }
    }
    Ok(())
}

/// An embedded message's bytes and offset, errors inside it marked with `field`.
fn message<'a>(r: &mut Reader<'a>, field: u32) -> Result<(&'a [u8], usize), DecodeError> {
    let (offset, bytes) = r.len_delimited(field)?;
    Ok((bytes, offset))
}

fn within<T>(field: u32, result: Result<T, DecodeError>) -> Result<T, DecodeError> {
    result.map_err(|e| e.within(field))
}

fn read_timestamp(bytes: &[u8], base: usize) -> Result<SystemTime, DecodeError> {
    let (mut secs, mut nanos) = (0i64, 0i64);
    each_field(bytes, base, |r, n, w| {
        match (n, w) {
            (1, wire::VARINT) => secs = r.varint(n)? as i64,
            (2, wire::VARINT) => nanos = r.varint(n)? as i64,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let at = Duration::from_secs(secs.max(0) as u64) + Duration::from_nanos(nanos.max(0) as u64);
    Ok(UNIX_EPOCH + at)
}

/// A ref's id (`ChannelRef` 1, `SubchannelRef` 7, `SocketRef` 3, `ServerRef` 5)
/// and name (the next field number).
fn read_ref(bytes: &[u8], base: usize, id_field: u32) -> Result<(u64, String), DecodeError> {
    let (mut id, mut name) = (0, String::new());
    each_field(bytes, base, |r, n, w| {
        match w {
            wire::VARINT if n == id_field => id = r.varint(n)?,
            wire::LEN if n == id_field + 1 => name = r.string(n)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok((id, name))
}

fn state_from(n: u64) -> ConnectivityState {
    match n {
        1 => ConnectivityState::Idle,
        2 => ConnectivityState::Connecting,
        3 => ConnectivityState::Ready,
        4 => ConnectivityState::TransientFailure,
        // UNKNOWN (0) and SHUTDOWN (5); lb-core has no UNKNOWN.
        _ => ConnectivityState::Shutdown,
    }
}

fn severity_from(n: u64) -> Severity {
    match n {
        2 => Severity::Warning,
        3 => Severity::Error,
        _ => Severity::Info,
    }
}

fn read_trace(bytes: &[u8], base: usize) -> Result<TraceSnapshot, DecodeError> {
    let mut trace = TraceSnapshot::default();
    each_field(bytes, base, |r, n, w| {
        match (n, w) {
            (1, wire::VARINT) => trace.events_logged = r.varint(n)?,
            (2, wire::LEN) => {
                let (b, at) = message(r, n)?;
                trace.created = within(n, read_timestamp(b, at))?;
            }
            (3, wire::LEN) => {
                let (b, at) = message(r, n)?;
                trace.events.push(within(n, read_event(b, at))?);
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(trace)
}

fn read_event(bytes: &[u8], base: usize) -> Result<TraceEvent, DecodeError> {
    let mut event = TraceEvent {
        at: UNIX_EPOCH,
        severity: Severity::Info,
        description: String::new(),
        child: None,
    };
    each_field(bytes, base, |r, n, w| {
        match (n, w) {
            (1, wire::LEN) => event.description = r.string(n)?,
            (2, wire::VARINT) => event.severity = severity_from(r.varint(n)?),
            (3, wire::LEN) => {
                let (b, at) = message(r, n)?;
                event.at = within(n, read_timestamp(b, at))?;
            }
            (4, wire::LEN) => {
                let (b, at) = message(r, n)?;
                let (id, _) = within(n, read_ref(b, at, 1))?;
                event.child = Some((Kind::NestedChannel, id));
            }
            (5, wire::LEN) => {
                let (b, at) = message(r, n)?;
                let (id, _) = within(n, read_ref(b, at, 7))?;
                event.child = Some((Kind::Subchannel, id));
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(event)
}

/// `ChannelData`, as state, target, trace and calls.
struct ChannelData {
    state: ConnectivityState,
    target: String,
    trace: TraceSnapshot,
    calls: CallCounts,
}

fn read_channel_data(bytes: &[u8], base: usize) -> Result<ChannelData, DecodeError> {
    let mut data = ChannelData {
        state: ConnectivityState::Shutdown,
        target: String::new(),
        trace: TraceSnapshot::default(),
        calls: CallCounts::default(),
    };
    each_field(bytes, base, |r, n, w| {
        match (n, w) {
            (1, wire::LEN) => {
                let (b, at) = message(r, n)?;
                let mut state = 0;
                within(
                    n,
                    each_field(b, at, |r, n, w| {
                        if (n, w) == (1, wire::VARINT) {
                            state = r.varint(n)?;
                            return Ok(true);
                        }
                        Ok(false)
                    }),
                )?;
                data.state = state_from(state);
            }
            (2, wire::LEN) => data.target = r.string(n)?,
            (3, wire::LEN) => {
                let (b, at) = message(r, n)?;
                data.trace = within(n, read_trace(b, at))?;
            }
            (4, wire::VARINT) => data.calls.started = r.varint(n)?,
            (5, wire::VARINT) => data.calls.succeeded = r.varint(n)?,
            (6, wire::VARINT) => data.calls.failed = r.varint(n)?,
            (7, wire::LEN) => {
                let (b, at) = message(r, n)?;
                data.calls.last_started = Some(within(n, read_timestamp(b, at))?);
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(data)
}

/// Decodes a `Channel` message.
///
/// # Errors
///
/// Malformed bytes, naming the field path and the byte.
pub fn decode_channel(bytes: &[u8]) -> Result<ChannelSnapshot, DecodeError> {
    let mut id = 0;
    let mut data = None;
    let (mut channels, mut subchannels) = (Vec::new(), Vec::new());
    each_field(bytes, 0, |r, n, w| {
        if w != wire::LEN {
            return Ok(false);
        }
        let (b, at) = message(r, n)?;
        match n {
            1 => id = within(n, read_ref(b, at, 1))?.0,
            2 => data = Some(within(n, read_channel_data(b, at))?),
            3 => channels.push(within(n, read_ref(b, at, 1))?.0),
            4 => subchannels.push(within(n, read_ref(b, at, 7))?.0),
            _ => {}
        }
        Ok(true)
    })?;
    let data = data.unwrap_or_else(|| read_channel_data(&[], 0).expect("empty"));
    Ok(ChannelSnapshot {
        id,
        target: data.target,
        state: data.state,
        calls: data.calls,
        trace: data.trace,
        subchannels,
        channels,
    })
}

/// Decodes a `Subchannel` message.
///
/// # Errors
///
/// Malformed bytes, naming the field path and the byte.
pub fn decode_subchannel(bytes: &[u8]) -> Result<SubchannelSnapshot, DecodeError> {
    let mut id = 0;
    let mut data = None;
    let mut sockets = Vec::new();
    each_field(bytes, 0, |r, n, w| {
        if w != wire::LEN {
            return Ok(false);
        }
        let (b, at) = message(r, n)?;
        match n {
            1 => id = within(n, read_ref(b, at, 7))?.0,
            2 => data = Some(within(n, read_channel_data(b, at))?),
            5 => sockets.push(within(n, read_ref(b, at, 3))?.0),
            _ => {}
        }
        Ok(true)
    })?;
    let data = data.unwrap_or_else(|| read_channel_data(&[], 0).expect("empty"));
    Ok(SubchannelSnapshot {
        id,
        target: data.target,
        state: data.state,
        calls: data.calls,
        trace: data.trace,
        sockets,
    })
}

/// Decodes a `Server` message. `sockets` stays empty (the message does not list
/// connections: `GetServerSockets` does).
///
/// # Errors
///
/// Malformed bytes, naming the field path and the byte.
pub fn decode_server(bytes: &[u8]) -> Result<ServerSnapshot, DecodeError> {
    let mut server = ServerSnapshot::default();
    each_field(bytes, 0, |r, n, w| {
        if w != wire::LEN {
            return Ok(false);
        }
        let (b, at) = message(r, n)?;
        match n {
            1 => server.id = within(n, read_ref(b, at, 5))?.0,
            2 => within(
                n,
                each_field(b, at, |r, n, w| {
                    match (n, w) {
                        (1, wire::LEN) => {
                            let (b, at) = message(r, n)?;
                            server.trace = within(n, read_trace(b, at))?;
                        }
                        (2, wire::VARINT) => server.calls.started = r.varint(n)?,
                        (3, wire::VARINT) => server.calls.succeeded = r.varint(n)?,
                        (4, wire::VARINT) => server.calls.failed = r.varint(n)?,
                        (5, wire::LEN) => {
                            let (b, at) = message(r, n)?;
                            server.calls.last_started = Some(within(n, read_timestamp(b, at))?);
                        }
                        _ => return Ok(false),
                    }
                    Ok(true)
                }),
            )?,
            3 => server.listen_sockets.push(within(n, read_ref(b, at, 3))?.0),
            _ => {}
        }
        Ok(true)
    })?;
    Ok(server)
}

/// An `Address` as text: `ip:port`, `unix:path`, or the other address's name.
fn read_address(bytes: &[u8], base: usize) -> Result<String, DecodeError> {
    let mut out = String::new();
    each_field(bytes, base, |r, n, w| {
        if w != wire::LEN {
            return Ok(false);
        }
        let (b, at) = message(r, n)?;
        match n {
            1 => {
                let (mut ip, mut port) = (Vec::new(), 0u64);
                within(
                    n,
                    each_field(b, at, |r, n, w| {
                        match (n, w) {
                            (1, wire::LEN) => ip = r.len_delimited(n)?.1.to_vec(),
                            (2, wire::VARINT) => port = r.varint(n)?,
                            _ => return Ok(false),
                        }
                        Ok(true)
                    }),
                )?;
                let ip = match ip.len() {
                    4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(ip).expect("4"))),
                    16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(ip).expect("16"))),
                    _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                };
                out = SocketAddr::new(ip, port as u16).to_string();
            }
            2 | 3 => {
                let mut name = String::new();
                within(
                    n,
                    each_field(b, at, |r, n, w| {
                        if (n, w) == (1, wire::LEN) {
                            name = r.string(n)?;
                            return Ok(true);
                        }
                        Ok(false)
                    }),
                )?;
                out = if n == 2 { format!("unix:{name}") } else { name };
            }
            _ => {}
        }
        Ok(true)
    })?;
    Ok(out)
}

/// A `Security` as text: `tls` or `tls:<suite>`, or the other security's name.
fn read_security(bytes: &[u8], base: usize) -> Result<String, DecodeError> {
    let mut out = String::new();
    each_field(bytes, base, |r, n, w| {
        if w != wire::LEN || !(n == 1 || n == 2) {
            return Ok(false);
        }
        let (b, at) = message(r, n)?;
        let mut name = String::new();
        within(
            n,
            each_field(b, at, |r, f, w| {
                // Tls: standard_name 1 or other_name 2; OtherSecurity: name 1.
                if w == wire::LEN && (f == 1 || (n == 1 && f == 2)) {
                    name = r.string(f)?;
                    return Ok(true);
                }
                Ok(false)
            }),
        )?;
        out = match (n, name.is_empty()) {
            (1, true) => "tls".to_owned(),
            (1, false) => format!("tls:{name}"),
            _ => name,
        };
        Ok(true)
    })?;
    Ok(out)
}

/// Decodes a `Socket` message (socket options, certificates and `remote_name` are
/// skipped).
///
/// # Errors
///
/// Malformed bytes, naming the field path and the byte.
pub fn decode_socket(bytes: &[u8]) -> Result<SocketSnapshot, DecodeError> {
    let mut s = SocketSnapshot::default();
    each_field(bytes, 0, |r, n, w| {
        if w != wire::LEN {
            return Ok(false);
        }
        let (b, at) = message(r, n)?;
        match n {
            1 => (s.id, s.name) = within(n, read_ref(b, at, 3))?,
            2 => within(n, read_socket_data(b, at, &mut s))?,
            3 => s.local = Some(within(n, read_address(b, at))?),
            4 => s.remote = Some(within(n, read_address(b, at))?),
            5 => s.security = Some(within(n, read_security(b, at))?),
            _ => {}
        }
        Ok(true)
    })?;
    Ok(s)
}

fn read_socket_data(bytes: &[u8], base: usize, s: &mut SocketSnapshot) -> Result<(), DecodeError> {
    each_field(bytes, base, |r, n, w| {
        match (n, w) {
            (1..=6, wire::VARINT) => {
                let v = r.varint(n)?;
                *match n {
                    1 => &mut s.streams_started,
                    2 => &mut s.streams_succeeded,
                    3 => &mut s.streams_failed,
                    4 => &mut s.messages_sent,
                    5 => &mut s.messages_received,
                    _ => &mut s.keep_alives_sent,
                } = v;
            }
            (7..=10, wire::LEN) => {
                let (b, at) = message(r, n)?;
                let t = Some(within(n, read_timestamp(b, at))?);
                *match n {
                    7 => &mut s.last_local_stream_created,
                    8 => &mut s.last_remote_stream_created,
                    9 => &mut s.last_message_sent,
                    _ => &mut s.last_message_received,
                } = t;
            }
            (11 | 12, wire::LEN) => {
                let (b, at) = message(r, n)?;
                let mut value = 0u64;
                within(
                    n,
                    each_field(b, at, |r, f, w| {
                        if (f, w) == (1, wire::VARINT) {
                            value = r.varint(f)?;
                            return Ok(true);
                        }
                        Ok(false)
                    }),
                )?;
                let window = Some(value as i64);
                if n == 11 {
                    s.local_flow_control_window = window;
                } else {
                    s.remote_flow_control_window = window;
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    })
}

/// Decodes a paged response (`GetTopChannelsResponse`, `GetServersResponse`,
/// `GetServerSocketsResponse`): each field-1 message decoded by `item`, and `end`.
/// An error inside an item has the item's field path under 1 and its offset counted
/// from the item's first byte.
///
/// # Errors
///
/// Malformed bytes, naming the field path and the byte.
pub fn decode_page<T>(
    bytes: &[u8],
    item: impl Fn(&[u8]) -> Result<T, DecodeError>,
) -> Result<(Vec<T>, bool), DecodeError> {
    let (mut items, mut end) = (Vec::new(), false);
    each_field(bytes, 0, |r, n, w| {
        match (n, w) {
            (1, wire::LEN) => {
                let (b, _) = message(r, n)?;
                // An error inside an item counts its offset from the item's start.
                items.push(within(n, item(b))?);
            }
            (2, wire::VARINT) => end = r.varint(n)? != 0,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok((items, end))
}

/// Decodes a `SocketRef` into its id and name (the items of
/// `GetServerSocketsResponse`).
///
/// # Errors
///
/// Malformed bytes.
pub fn decode_socket_ref(bytes: &[u8]) -> Result<(u64, String), DecodeError> {
    read_ref(bytes, 0, 3)
}

/// The one message of a `Get*Response` (field 1), decoded by `item`.
///
/// # Errors
///
/// Malformed bytes, or field 1 missing.
pub fn decode_get_one<T>(
    bytes: &[u8],
    item: impl Fn(&[u8]) -> Result<T, DecodeError>,
) -> Result<Option<T>, DecodeError> {
    let (mut items, _) = decode_page(bytes, item)?;
    Ok(items.pop())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    fn trace() -> TraceSnapshot {
        TraceSnapshot {
            created: at(1_700_000_000, 5),
            events_logged: 40,
            events: vec![
                TraceEvent {
                    at: at(1_700_000_001, 0),
                    severity: Severity::Warning,
                    description: "subchannel created".into(),
                    child: Some((Kind::Subchannel, 9)),
                },
                TraceEvent {
                    at: at(1_700_000_002, 999_999_999),
                    severity: Severity::Info,
                    description: "rls child".into(),
                    child: Some((Kind::NestedChannel, 11)),
                },
            ],
        }
    }

    fn calls() -> CallCounts {
        CallCounts {
            started: 7,
            succeeded: 4,
            failed: 3,
            last_started: Some(at(1_700_000_003, 123)),
        }
    }

    #[test]
    fn requests_decode_by_method_and_skip_unknown_fields() {
        for method in Method::ALL {
            assert_eq!(
                decode_request(method, &[]).map(|r| encode_request(&r)),
                Ok(Vec::new()),
                "{method:?}: an empty request is all zeros"
            );
        }
        let request = Request::ServerSockets {
            server_id: 3,
            start_socket_id: 10,
            max_results: 1,
        };
        let mut bytes = encode_request(&request);
        // An unknown field, and field 1 as a string: both skipped.
        put_string(&mut bytes, 9, "x");
        put_string(&mut bytes, 1, "y");
        assert_eq!(
            decode_request(Method::GetServerSockets, &bytes),
            Ok(request)
        );
        let socket = Request::Socket {
            socket_id: -1,
            summary: true,
        };
        let bytes = encode_request(&socket);
        assert_eq!(decode_request(Method::GetSocket, &bytes), Ok(socket));
        let err = decode_request(Method::GetServer, &[0x08]).unwrap_err();
        assert_eq!(err.field_path(), [1]);
    }

    #[test]
    fn channels_and_subchannels_round_trip() {
        let channel = ChannelSnapshot {
            id: 5,
            target: "dns:///example.com:443".into(),
            state: ConnectivityState::Ready,
            calls: calls(),
            trace: trace(),
            subchannels: vec![9, 10],
            channels: vec![11],
        };
        let bytes = encode_get_top_channels(std::slice::from_ref(&channel), true);
        let (got, end) = decode_page(&bytes, decode_channel).unwrap();
        assert!(end);
        assert_eq!(got, [channel]);
        let sub = SubchannelSnapshot {
            id: 9,
            target: "127.0.0.1:50051".into(),
            state: ConnectivityState::TransientFailure,
            calls: CallCounts::default(),
            trace: TraceSnapshot::default(),
            sockets: vec![12],
        };
        let bytes = encode_get_one(&encode_subchannel(&sub));
        assert_eq!(decode_get_one(&bytes, decode_subchannel), Ok(Some(sub)));
    }

    #[test]
    fn servers_and_sockets_round_trip() {
        let server = ServerSnapshot {
            id: 3,
            calls: calls(),
            trace: trace(),
            listen_sockets: vec![4],
            sockets: Vec::new(),
        };
        let bytes = encode_get_servers(std::slice::from_ref(&server), false);
        assert_eq!(
            decode_page(&bytes, decode_server),
            Ok((vec![server], false))
        );
        for (local, remote, security) in [
            (
                "127.0.0.1:50051",
                "10.1.2.3:40000",
                Some("tls:TLS_AES_128_GCM_SHA256"),
            ),
            ("[::1]:50051", "[2001:db8::1]:443", Some("tls")),
            ("unix:/tmp/s", "somewhere", None),
        ] {
            let socket = SocketSnapshot {
                id: 12,
                name: remote.into(),
                local: Some(local.into()),
                remote: Some(remote.into()),
                streams_started: 10,
                streams_succeeded: 8,
                streams_failed: 2,
                messages_sent: 20,
                messages_received: 19,
                keep_alives_sent: 1,
                last_local_stream_created: Some(at(1_700_000_010, 1)),
                last_remote_stream_created: None,
                last_message_sent: Some(at(1_700_000_011, 2)),
                last_message_received: Some(at(1_700_000_012, 3)),
                local_flow_control_window: Some(65_535),
                remote_flow_control_window: Some(-5),
                security: security.map(str::to_owned),
            };
            let bytes = encode_get_one(&encode_socket(&socket));
            assert_eq!(decode_get_one(&bytes, decode_socket), Ok(Some(socket)));
        }
        let refs = vec![(4, "a".to_owned()), (6, String::new())];
        let bytes = encode_get_server_sockets(&refs, true);
        assert_eq!(decode_page(&bytes, decode_socket_ref), Ok((refs, true)));
    }

    #[test]
    fn field_numbers_follow_channelz_proto() {
        // GetServerSocketsResponse { socket_ref { socket_id: 4 } end: true }:
        // 0a 02 18 04 10 01, by hand from the .proto's numbers.
        let bytes = encode_get_server_sockets(&[(4, String::new())], true);
        assert_eq!(bytes, [0x0a, 0x02, 0x18, 0x04, 0x10, 0x01]);
        // Server { ref { server_id: 2 } data { calls_started: 1 } }.
        let server = ServerSnapshot {
            id: 2,
            calls: CallCounts {
                started: 1,
                ..CallCounts::default()
            },
            trace: TraceSnapshot::default(),
            ..ServerSnapshot::default()
        };
        let bytes = encode_server(&server);
        // ref: 0a 02 28 02; data: 12 .. (trace 0a 02 12 00, calls_started 10 01).
        assert_eq!(
            bytes,
            [
                0x0a, 0x02, 0x28, 0x02, 0x12, 0x06, 0x0a, 0x02, 0x12, 0x00, 0x10, 0x01
            ]
        );
    }

    #[test]
    fn bad_bytes_are_errors_with_a_path() {
        let socket = SocketSnapshot {
            id: 1,
            local: Some("127.0.0.1:1".into()),
            ..SocketSnapshot::default()
        };
        let bytes = encode_get_one(&encode_socket(&socket));
        for cut in 1..bytes.len() {
            assert!(
                decode_get_one(&bytes[..cut], decode_socket).is_err(),
                "cut at {cut}"
            );
        }
    }
}
