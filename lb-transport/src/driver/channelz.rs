//! Channelz (gRFC A14) entities for this crate's sockets: every client connection
//! ([`H2Transport`](super::H2Transport)) and every connection a
//! [`Server`](crate::server::Server) accepts registers a
//! [`Kind::Socket`] in [`lb_core::channelz::registry`]; a server's listener a
//! [`Kind::ListenSocket`].
//!
//! ```text
//!  I/O thread (lb-io, lb-server-io)            anyone (the channelz service)
//!  Conn ── owns ──> SocketZ ── Arc ──> SocketEntity <── Weak ── registry()
//!    per message: a plain counter in SocketZ          snapshot(): atomics ->
//!    per pass (sync): atomics <- counters,            SocketSnapshot
//!      proto::Connection::stats(), TLS suite
//! ```
//!
//! The I/O thread counts messages in plain integers and publishes them, with the
//! HTTP/2 connection's [`ConnectionStats`] (streams, keepalives, windows), once per
//! pass over the connection: a few relaxed atomic stores, no lock. Times come from
//! the pass's `now`, turned into wall-clock time by a [`WallAnchor`] taken when the
//! socket was made. The entity leaves the registry when the connection is dropped.
//!
//! So a snapshot is at most one pass behind: a call's listener runs during the pass,
//! its counts land at the end of it, and a thread woken by the listener may read the
//! counts a moment before they include its call.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lb_core::channelz::{self, Entity, Kind, Registration, Snapshot, SocketSnapshot, WallAnchor};

use crate::driver::stream::Stream;
use crate::proto::{Connection, ConnectionStats};

/// A window not known yet.
const NO_WINDOW: i64 = i64::MIN;

/// A socket's data as the registry sees it: atomics the I/O thread stores into.
#[derive(Debug)]
struct SocketEntity {
    id: u64,
    name: String,
    remote: Option<SocketAddr>,
    local: OnceLock<SocketAddr>,
    security: OnceLock<String>,
    streams_started: AtomicU64,
    streams_succeeded: AtomicU64,
    streams_failed: AtomicU64,
    keepalives_sent: AtomicU64,
    messages_sent: AtomicU64,
    messages_received: AtomicU64,
    /// Nanoseconds since the Unix epoch; 0 for never.
    last_local_stream: AtomicU64,
    last_remote_stream: AtomicU64,
    last_message_sent: AtomicU64,
    last_message_received: AtomicU64,
    send_window: AtomicI64,
    recv_window: AtomicI64,
}

fn load_time(cell: &AtomicU64) -> Option<SystemTime> {
    match cell.load(Ordering::Relaxed) {
        0 => None,
        nanos => Some(UNIX_EPOCH + Duration::from_nanos(nanos)),
    }
}

fn nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos().clamp(1, u128::from(u64::MAX)) as u64)
}

fn load_window(cell: &AtomicI64) -> Option<i64> {
    Some(cell.load(Ordering::Relaxed)).filter(|w| *w != NO_WINDOW)
}

impl Entity for SocketEntity {
    fn snapshot(&self) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot::Socket(SocketSnapshot {
            id: self.id,
            name: self.name.clone(),
            local: self.local.get().map(ToString::to_string),
            remote: self.remote.map(|a| a.to_string()),
            streams_started: get(&self.streams_started),
            streams_succeeded: get(&self.streams_succeeded),
            streams_failed: get(&self.streams_failed),
            messages_sent: get(&self.messages_sent),
            messages_received: get(&self.messages_received),
            keep_alives_sent: get(&self.keepalives_sent),
            last_local_stream_created: load_time(&self.last_local_stream),
            last_remote_stream_created: load_time(&self.last_remote_stream),
            last_message_sent: load_time(&self.last_message_sent),
            last_message_received: load_time(&self.last_message_received),
            local_flow_control_window: load_window(&self.send_window),
            remote_flow_control_window: load_window(&self.recv_window),
            security: self.security.get().cloned(),
        })
    }
}

/// The I/O thread's handle on one connection's channelz entity: registered while it
/// lives, counting what the loop tells it.
pub(crate) struct SocketZ {
    entity: Arc<SocketEntity>,
    _registration: Registration,
    anchor: WallAnchor,
    /// This side opens the streams (a client).
    client: bool,
    /// Messages since the last [`SocketZ::sync`].
    sent: u64,
    received: u64,
    /// Streams started as of the last sync.
    started: u64,
}

impl SocketZ {
    /// Registers a connection socket under `id` (from [`channelz::next_id`]).
    /// `client` says whether this side opens the streams.
    pub(crate) fn register(
        id: u64,
        client: bool,
        local: Option<SocketAddr>,
        remote: Option<SocketAddr>,
    ) -> Self {
        let entity = Arc::new(SocketEntity {
            id,
            name: remote.map(|a| a.to_string()).unwrap_or_default(),
            remote,
            local: OnceLock::new(),
            security: OnceLock::new(),
            streams_started: AtomicU64::new(0),
            streams_succeeded: AtomicU64::new(0),
            streams_failed: AtomicU64::new(0),
            keepalives_sent: AtomicU64::new(0),
            messages_sent: AtomicU64::new(0),
            messages_received: AtomicU64::new(0),
            last_local_stream: AtomicU64::new(0),
            last_remote_stream: AtomicU64::new(0),
            last_message_sent: AtomicU64::new(0),
            last_message_received: AtomicU64::new(0),
            send_window: AtomicI64::new(NO_WINDOW),
            recv_window: AtomicI64::new(NO_WINDOW),
        });
        if let Some(local) = local {
            let _ = entity.local.set(local);
        }
        let weak: Weak<dyn Entity> = Arc::downgrade(&entity) as Weak<dyn Entity>;
        let registration = channelz::registry().register(id, Kind::Socket, weak);
        Self {
            entity,
            _registration: registration,
            anchor: WallAnchor::new(Instant::now(), SystemTime::now()),
            client,
            sent: 0,
            received: 0,
            started: 0,
        }
    }

    /// The socket's channelz id.
    pub(crate) fn id(&self) -> u64 {
        self.entity.id
    }

    /// The local address, once known (a client learns it when the connect
    /// completes).
    pub(crate) fn set_local(&self, local: SocketAddr) {
        let _ = self.entity.local.set(local);
    }

    /// `n` gRPC messages went to the connection.
    #[inline]
    pub(crate) fn sent(&mut self, n: u64) {
        self.sent += n;
    }

    /// `n` gRPC messages arrived.
    #[inline]
    pub(crate) fn received(&mut self, n: u64) {
        self.received += n;
    }

    /// Publishes what happened since the last call: the messages counted, the
    /// connection's [`ConnectionStats`], and the TLS suite once the handshake is
    /// done. Called by the I/O thread after each pass over the connection.
    pub(crate) fn sync(&mut self, h2: &Connection, stream: &Stream, now: Instant) {
        let e = &*self.entity;
        let stats: ConnectionStats = h2.stats();
        let mut wall = None;
        let mut at = || *wall.get_or_insert_with(|| nanos(self.anchor.wall(now)));
        if self.sent > 0 {
            e.messages_sent.fetch_add(self.sent, Ordering::Relaxed);
            e.last_message_sent.store(at(), Ordering::Relaxed);
            self.sent = 0;
        }
        if self.received > 0 {
            e.messages_received
                .fetch_add(self.received, Ordering::Relaxed);
            e.last_message_received.store(at(), Ordering::Relaxed);
            self.received = 0;
        }
        if stats.streams_started != self.started {
            self.started = stats.streams_started;
            let last = if self.client {
                &e.last_local_stream
            } else {
                &e.last_remote_stream
            };
            last.store(at(), Ordering::Relaxed);
        }
        e.streams_started
            .store(stats.streams_started, Ordering::Relaxed);
        e.streams_succeeded
            .store(stats.streams_succeeded, Ordering::Relaxed);
        e.streams_failed
            .store(stats.streams_failed, Ordering::Relaxed);
        e.keepalives_sent
            .store(stats.keepalives_sent, Ordering::Relaxed);
        e.send_window.store(stats.send_window, Ordering::Relaxed);
        e.recv_window.store(stats.recv_window, Ordering::Relaxed);
        if e.security.get().is_none() {
            if let Some(security) = stream.security() {
                let _ = e.security.set(security);
            }
        }
    }
}

impl std::fmt::Debug for SocketZ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SocketZ({})", self.entity.id)
    }
}

/// A server's listening socket as channelz shows it.
#[derive(Debug)]
pub(crate) struct ListenSocket {
    id: u64,
    local: SocketAddr,
}

impl ListenSocket {
    /// Registers a listener on `local`; it stays while both returned values live.
    pub(crate) fn register(local: SocketAddr) -> (Arc<Self>, Registration) {
        let id = channelz::next_id();
        let entity = Arc::new(Self { id, local });
        let weak: Weak<dyn Entity> = Arc::downgrade(&entity) as Weak<dyn Entity>;
        let registration = channelz::registry().register(id, Kind::ListenSocket, weak);
        (entity, registration)
    }

    /// Its channelz id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

impl Entity for ListenSocket {
    fn snapshot(&self) -> Snapshot {
        Snapshot::Socket(SocketSnapshot {
            id: self.id,
            name: self.local.to_string(),
            local: Some(self.local.to_string()),
            ..SocketSnapshot::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ConnectionConfig;

    #[test]
    fn a_socket_shows_what_was_synced_and_leaves_with_its_owner() {
        let id = channelz::next_id();
        let remote: SocketAddr = "127.0.0.1:50051".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let mut z = SocketZ::register(id, true, None, Some(remote));
        let Some(Snapshot::Socket(s)) = channelz::registry().get(id) else {
            panic!("not registered");
        };
        assert_eq!(
            (s.local, s.remote.as_deref()),
            (None, Some("127.0.0.1:50051"))
        );
        assert_eq!(s.local_flow_control_window, None, "unknown before a sync");

        z.set_local(local);
        z.sent(2);
        z.received(3);
        let now = Instant::now();
        let h2 = Connection::client(ConnectionConfig::default(), now);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let stream = Stream::new(mio::net::TcpStream::from_std(tcp));
        z.sync(&h2, &stream, now);
        let Some(Snapshot::Socket(s)) = channelz::registry().get(id) else {
            panic!("gone");
        };
        assert_eq!(s.local.as_deref(), Some("127.0.0.1:40000"));
        assert_eq!((s.messages_sent, s.messages_received), (2, 3));
        assert!(s.last_message_sent.is_some() && s.last_message_received.is_some());
        assert_eq!(s.last_local_stream_created, None, "no stream yet");
        assert_eq!(s.local_flow_control_window, Some(65_535));
        assert_eq!(s.security, None);
        drop(z);
        assert!(channelz::registry().get(id).is_none());
    }
}
