//! The HTTP/2 connection state machine, for both roles.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::time::{Duration, Instant};

use crate::frame::{
    self, Continuation, Data, Frame, FrameError, FrameReader, GoAway, Head, Headers, Ping, Reason,
    RstStream, Settings, StreamId, WindowUpdate,
};
use crate::hpack::{self, Header};
use crate::proto::config::{ConnectionConfig, IDLE_PING_INTERVAL};
use crate::proto::headers::{self, Kind as HeaderKind};

/// Which end of the connection this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Opens streams (sends requests).
    Client,
    /// Accepts streams (answers requests).
    Server,
}

/// Why a connection ended with an error. Sticky: once set it never changes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The peer broke the protocol; we sent GOAWAY with this reason.
    #[error("peer protocol error {reason}: {detail}")]
    Protocol {
        /// The error code we sent.
        reason: Reason,
        /// What the peer did.
        detail: String,
    },
    /// The peer sent GOAWAY with an error code.
    #[error("peer sent GOAWAY {reason}: {debug}")]
    GoAway {
        /// The peer's error code.
        reason: Reason,
        /// The peer's debug data, lossily decoded.
        debug: String,
    },
    /// A keepalive ping got no answer in time.
    #[error("keepalive ping not answered within {0:?}")]
    KeepaliveTimeout(Duration),
    /// The peer did not acknowledge our SETTINGS in time.
    #[error("peer did not acknowledge SETTINGS within {0:?}")]
    SettingsTimeout(Duration),
    /// The byte stream ended without a GOAWAY.
    #[error("connection closed by the peer")]
    Eof,
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(String),
    /// The local side closed the connection.
    #[error("connection closed locally")]
    Local,
}

/// Why a stream ended before completing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResetCause {
    /// The peer reset it with RST_STREAM.
    Peer(Reason),
    /// The peer never processed it: REFUSED_STREAM, a stream above a GOAWAY's last
    /// stream id, or a request that was still queued. Safe to retry elsewhere.
    Refused,
    /// We reset it because the peer broke the protocol on it.
    Protocol(Reason, &'static str),
    /// The whole connection ended.
    Connection(ConnectionError),
}

/// Something that happened on the connection, drained with
/// [`Connection::poll_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The peer's first SETTINGS arrived: the connection is usable.
    Connected,
    /// A header block: request headers (server), response headers (client) or
    /// trailers (when the stream already had headers).
    Headers {
        /// The stream.
        stream: StreamId,
        /// The decoded header list.
        headers: Vec<Header>,
        /// The peer will send nothing more on this stream.
        end_stream: bool,
    },
    /// Data on a stream (already acknowledged for flow control).
    Data {
        /// The stream.
        stream: StreamId,
        /// The bytes.
        data: Vec<u8>,
        /// The peer will send nothing more on this stream.
        end_stream: bool,
    },
    /// A stream ended early; nothing more will come for it.
    Reset {
        /// The stream.
        stream: StreamId,
        /// Why.
        cause: ResetCause,
    },
    /// The peer sent GOAWAY: streams above `last_stream_id` were reset as refused,
    /// and no new stream may be opened.
    GoAway {
        /// The last stream the peer may process.
        last_stream_id: StreamId,
        /// The peer's error code.
        reason: Reason,
        /// The peer's debug data.
        debug: Vec<u8>,
    },
    /// The connection is finished. The last event; with an error unless it ended
    /// gracefully.
    Closed(Option<ConnectionError>),
}

/// Why a stream could not be opened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The connection is going away or closed; use another one.
    #[error("connection is not accepting new streams")]
    NotAccepting,
    /// Every client stream id has been used; use another connection.
    #[error("stream ids exhausted")]
    IdsExhausted,
    /// The call is not valid on this side of the connection.
    #[error("only a client opens streams")]
    NotClient,
    /// The headers are larger than the peer's SETTINGS_MAX_HEADER_LIST_SIZE: sending
    /// them would only make the peer refuse the stream or close the connection.
    #[error("header list of {size} bytes exceeds the peer's limit of {limit} bytes")]
    HeaderListTooLarge {
        /// The list's size as HTTP/2 counts it (name + value + 32 per field).
        size: usize,
        /// The peer's limit.
        limit: u32,
    },
}

/// Why a command on a stream failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// No such stream is open (it ended, or was never opened).
    #[error("stream {0} is not open")]
    NotOpen(StreamId),
    /// The local side already ended the stream.
    #[error("stream {0} already ended locally")]
    AlreadyEnded(StreamId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    KeepaliveIdle = 0,
    KeepaliveTimeout = 1,
    SettingsAck = 2,
}

const TIMERS: usize = 3;

/// The payload of the PING that ends the first phase of a graceful GOAWAY.
const SHUTDOWN_PING: [u8; 8] = *b"shutdown";

/// What the peer told us in SETTINGS.
#[derive(Clone, Copy, Debug)]
struct PeerSettings {
    max_concurrent_streams: u32,
    initial_window: u32,
    max_frame_size: u32,
    max_header_list_size: Option<u32>,
}

impl Default for PeerSettings {
    fn default() -> Self {
        Self {
            max_concurrent_streams: u32::MAX,
            initial_window: frame::DEFAULT_INITIAL_WINDOW_SIZE,
            max_frame_size: frame::DEFAULT_MAX_FRAME_SIZE,
            max_header_list_size: None,
        }
    }
}

#[derive(Debug, Default)]
struct Stream {
    /// Request headers not yet sent (a client stream waiting for a concurrency slot).
    queued_headers: Option<(Vec<Header>, bool)>,
    /// HEADERS went on the wire.
    opened: bool,
    /// Data waiting for flow-control credit.
    send_buf: Vec<u8>,
    send_pos: usize,
    /// Send END_STREAM once `send_buf` is drained (with trailers if any).
    end_after_data: bool,
    trailers: Option<Vec<Header>>,
    local_closed: bool,
    remote_closed: bool,
    /// Header blocks received: 0, 1 (headers) or 2 (trailers).
    blocks_received: u8,
    send_window: i64,
    recv_window: i64,
    recv_unacked: u32,
}

impl Stream {
    fn has_pending_send(&self) -> bool {
        self.send_pos < self.send_buf.len()
            || (self.end_after_data && !self.local_closed)
            || self.trailers.is_some()
    }
}

/// A header block being assembled from HEADERS and CONTINUATION frames.
#[derive(Debug)]
struct PartialBlock {
    stream: StreamId,
    fragment: Vec<u8>,
    end_stream: bool,
    continuations: usize,
}

/// An HTTP/2 connection without I/O: bytes and time go in, bytes, events and the next
/// deadline come out.
///
/// Four families of methods, as in quinn-proto:
/// - getters take `&self` ([`Connection::is_closed`], [`Connection::role`]);
/// - `handle_*(now, …)` feed input: [`Connection::handle_read`],
///   [`Connection::handle_timeout`], [`Connection::handle_eof`];
/// - commands from the application: [`Connection::open_stream`],
///   [`Connection::send_data`], [`Connection::send_headers`],
///   [`Connection::reset_stream`], [`Connection::go_away`];
/// - outputs, each drained until empty: [`Connection::poll_transmit`],
///   [`Connection::poll_event`], [`Connection::poll_timeout`].
///
/// Errors are sticky: after a connection error the GOAWAY is still flushed by
/// `poll_transmit`, every open stream gets a [`Event::Reset`], and [`Event::Closed`]
/// is the last event.
///
/// # Examples
///
/// ```
/// use std::time::Instant;
/// use lb_transport::hpack::Header;
/// use lb_transport::proto::{Connection, ConnectionConfig, Event};
///
/// let now = Instant::now();
/// let mut client = Connection::client(ConnectionConfig::default(), now);
/// let mut server = Connection::server(ConnectionConfig::default(), now);
/// let mut wire = Vec::new();
/// let request = vec![
///     Header::new(":method", "GET"), Header::new(":scheme", "http"),
///     Header::new(":path", "/"), Header::new(":authority", "example"),
/// ];
/// let stream = client.open_stream(request, true, now).unwrap();
/// client.poll_transmit(now, &mut wire);
/// server.handle_read(&wire, now);
/// assert_eq!(server.poll_event(), Some(Event::Connected));
/// assert!(matches!(server.poll_event(), Some(Event::Headers { stream: s, end_stream: true, .. }) if s == stream));
/// ```
#[derive(Debug)]
pub struct Connection {
    role: Role,
    config: ConnectionConfig,
    /// Server: bytes of the client preface still expected.
    preface_left: usize,
    peer_settings_seen: bool,
    peer: PeerSettings,
    reader: FrameReader,
    read_buf: Vec<u8>,
    out: Vec<u8>,
    pending_control: usize,
    encoder: hpack::Encoder,
    decoder: hpack::Decoder,
    streams: BTreeMap<StreamId, Stream>,
    queued: VecDeque<StreamId>,
    next_stream_id: u32,
    /// Highest stream id the peer opened.
    last_peer_stream: StreamId,
    open_local: u32,
    open_remote: u32,
    conn_send_window: i64,
    conn_recv_window: i64,
    conn_recv_unacked: u32,
    /// WINDOW_UPDATEs queued but not yet written: their credit counts only once the
    /// peer can have seen them.
    pending_credit: Vec<(StreamId, u32)>,
    partial: Option<PartialBlock>,
    events: VecDeque<Event>,
    timers: [Option<Instant>; TIMERS],
    last_read: Instant,
    ping_outstanding: bool,
    settings_unacked: u32,
    last_peer_ping: Option<Instant>,
    ping_strikes: u32,
    reset_tokens: f64,
    reset_tokens_at: Instant,
    goaway_sent: Option<StreamId>,
    /// A graceful GOAWAY's PING is unanswered (see [`Connection::go_away`]).
    shutdown_ping_outstanding: bool,
    goaway_received: Option<StreamId>,
    error: Option<ConnectionError>,
    closed: bool,
    /// Round-robin position for DATA scheduling.
    send_cursor: StreamId,
}

impl Connection {
    /// A client connection: queues the preface and our SETTINGS.
    pub fn client(config: ConnectionConfig, now: Instant) -> Self {
        let mut conn = Self::new(Role::Client, config, now);
        conn.out.extend_from_slice(frame::PREFACE);
        conn.send_initial_settings(now);
        if let Some(ka) = conn.config.keepalive {
            conn.timers[Timer::KeepaliveIdle as usize] = Some(now + ka.time);
        }
        conn
    }

    /// A server connection: expects the client preface, queues our SETTINGS.
    pub fn server(config: ConnectionConfig, now: Instant) -> Self {
        let mut conn = Self::new(Role::Server, config, now);
        conn.preface_left = frame::PREFACE.len();
        conn.send_initial_settings(now);
        conn
    }

    fn new(role: Role, config: ConnectionConfig, now: Instant) -> Self {
        let reset_tokens = f64::from(config.max_resets_per_second);
        Self {
            role,
            preface_left: 0,
            peer_settings_seen: false,
            peer: PeerSettings::default(),
            reader: FrameReader::new(),
            read_buf: Vec::new(),
            out: Vec::new(),
            pending_control: 0,
            encoder: hpack::Encoder::new(),
            decoder: hpack::Decoder::new(hpack::DEFAULT_TABLE_SIZE),
            streams: BTreeMap::new(),
            queued: VecDeque::new(),
            next_stream_id: 1,
            last_peer_stream: StreamId::ZERO,
            open_local: 0,
            open_remote: 0,
            conn_send_window: i64::from(frame::DEFAULT_INITIAL_WINDOW_SIZE),
            conn_recv_window: i64::from(frame::DEFAULT_INITIAL_WINDOW_SIZE),
            conn_recv_unacked: 0,
            pending_credit: Vec::new(),
            partial: None,
            events: VecDeque::new(),
            timers: [None; TIMERS],
            last_read: now,
            ping_outstanding: false,
            settings_unacked: 0,
            last_peer_ping: None,
            ping_strikes: 0,
            reset_tokens,
            reset_tokens_at: now,
            goaway_sent: None,
            shutdown_ping_outstanding: false,
            goaway_received: None,
            error: None,
            closed: false,
            send_cursor: StreamId::ZERO,
            config,
        }
    }

    fn send_initial_settings(&mut self, now: Instant) {
        let settings = Settings {
            enable_push: Some(0),
            max_concurrent_streams: Some(self.config.max_concurrent_streams),
            initial_window_size: Some(self.config.stream_window.min(frame::MAX_WINDOW_SIZE)),
            max_header_list_size: Some(self.config.max_header_list_size),
            ..Settings::default()
        };
        settings.encode(&mut self.out);
        self.settings_unacked += 1;
        self.timers[Timer::SettingsAck as usize] = Some(now + self.config.settings_timeout);
        let target = i64::from(self.config.connection_window.min(frame::MAX_WINDOW_SIZE));
        let raise = target - self.conn_recv_window;
        if raise > 0 {
            WindowUpdate::new(StreamId::ZERO, raise as u32).encode(&mut self.out);
            self.pending_credit.push((StreamId::ZERO, raise as u32));
        }
    }

    // ----- Getters -----

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether the connection is finished: [`Event::Closed`] has been queued. Flush
    /// [`Connection::poll_transmit`] once more, then close the socket.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether the peer's SETTINGS arrived.
    pub fn is_connected(&self) -> bool {
        self.peer_settings_seen
    }

    /// Whether new streams may be opened (no GOAWAY either way, no error).
    pub fn is_accepting_streams(&self) -> bool {
        self.error.is_none()
            && !self.closed
            && self.goaway_received.is_none()
            && self.goaway_sent.is_none()
    }

    /// The connection error, if there was one.
    pub fn error(&self) -> Option<&ConnectionError> {
        self.error.as_ref()
    }

    /// Streams open or queued.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Whether [`Connection::poll_transmit`] has something to write.
    pub fn wants_write(&self) -> bool {
        !self.out.is_empty()
            || (self.conn_send_window > 0
                && self
                    .streams
                    .values()
                    .any(|s| s.opened && s.has_pending_send() && s.send_window > 0))
    }

    // ----- Input -----

    /// Feeds bytes read from the peer.
    pub fn handle_read(&mut self, mut bytes: &[u8], now: Instant) {
        if self.error.is_some() || self.closed || bytes.is_empty() {
            return;
        }
        self.last_read = now;
        // Any bytes answer a keepalive ping (gRFC A8).
        self.ping_outstanding = false;
        self.timers[Timer::KeepaliveTimeout as usize] = None;
        if let Some(ka) = self.config.keepalive {
            self.timers[Timer::KeepaliveIdle as usize] = Some(now + ka.time);
        }
        if self.preface_left > 0 {
            let expected = &frame::PREFACE[frame::PREFACE.len() - self.preface_left..];
            let n = bytes.len().min(self.preface_left);
            if bytes[..n] != expected[..n] {
                self.fail(Reason::PROTOCOL_ERROR, "invalid connection preface");
                return;
            }
            self.preface_left -= n;
            bytes = &bytes[n..];
        }
        self.read_buf.extend_from_slice(bytes);
        let mut pos = 0;
        // A frame may finish the connection (a GOAWAY with no streams left, say): then
        // nothing after it is read.
        while self.error.is_none() && !self.closed {
            match self.reader.read(&self.read_buf[pos..]) {
                Ok(None) => break,
                Ok(Some((frame, n))) => {
                    pos += n;
                    self.handle_frame(frame, now);
                }
                // A stream error comes only with a complete frame: skip it and go on.
                Err(err @ FrameError::Stream { .. }) => {
                    pos += Head::parse(&self.read_buf[pos..]).map_or(0, |h| h.frame_len());
                    self.handle_frame_error(err, now);
                }
                // A connection error may come from a frame header alone (a frame
                // longer than we allow): nothing after it is read.
                Err(err) => {
                    self.handle_frame_error(err, now);
                    break;
                }
            }
        }
        self.read_buf.drain(..pos);
    }

    /// The peer closed its side of the byte stream.
    pub fn handle_eof(&mut self) {
        let graceful = self.goaway_received.is_some() && self.streams.is_empty();
        let err = (!graceful).then_some(ConnectionError::Eof);
        self.finish(err);
    }

    /// The socket failed.
    pub fn handle_io_error(&mut self, error: String) {
        self.finish(Some(ConnectionError::Io(error)));
    }

    /// Fires the timers that are due. Calling it early does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        if self.due(Timer::SettingsAck, now) {
            GoAway::new(self.last_peer_stream, Reason::SETTINGS_TIMEOUT).encode(&mut self.out);
            self.goaway_sent = Some(self.last_peer_stream);
            let err = ConnectionError::SettingsTimeout(self.config.settings_timeout);
            self.error = Some(err.clone());
            self.finish(Some(err));
            return;
        }
        if self.due(Timer::KeepaliveTimeout, now) {
            let timeout = self.config.keepalive.map_or(Duration::ZERO, |k| k.timeout);
            self.error = Some(ConnectionError::KeepaliveTimeout(timeout));
            self.finish(self.error.clone());
            return;
        }
        if self.due(Timer::KeepaliveIdle, now) {
            self.keepalive_ping(now);
        }
    }

    fn due(&mut self, timer: Timer, now: Instant) -> bool {
        let slot = &mut self.timers[timer as usize];
        if slot.is_some_and(|t| t <= now) {
            *slot = None;
            return true;
        }
        false
    }

    fn keepalive_ping(&mut self, now: Instant) {
        let Some(ka) = self.config.keepalive else {
            return;
        };
        let active = self.open_local > 0;
        if !self.ping_outstanding && (active || ka.permit_without_calls) {
            Ping::new(*b"keepaliv").encode(&mut self.out);
            self.ping_outstanding = true;
            self.timers[Timer::KeepaliveTimeout as usize] = Some(now + ka.timeout);
        }
        self.timers[Timer::KeepaliveIdle as usize] = Some(now + ka.time);
    }

    // ----- Commands -----

    /// Opens a client stream with `headers` (a request), ending it at once if
    /// `end_stream`. Beyond the peer's MAX_CONCURRENT_STREAMS the stream is queued and
    /// opened when another ends; its id is fixed now, so events and commands can use it
    /// at once.
    ///
    /// # Errors
    ///
    /// The connection is going away or closed, stream ids are used up, or this is a
    /// server.
    pub fn open_stream(
        &mut self,
        headers: Vec<Header>,
        end_stream: bool,
        now: Instant,
    ) -> Result<StreamId, OpenError> {
        if self.role != Role::Client {
            return Err(OpenError::NotClient);
        }
        if !self.is_accepting_streams() {
            return Err(OpenError::NotAccepting);
        }
        if self.next_stream_id > frame::StreamId::MAX.value() {
            return Err(OpenError::IdsExhausted);
        }
        if let Some(limit) = self.peer.max_header_list_size {
            let size: usize = headers.iter().map(Header::size).sum();
            if size > limit as usize {
                return Err(OpenError::HeaderListTooLarge { size, limit });
            }
        }
        let id = StreamId::new(self.next_stream_id);
        self.next_stream_id += 2;
        let stream = Stream {
            queued_headers: Some((headers, end_stream)),
            send_window: i64::from(self.peer.initial_window),
            recv_window: i64::from(self.config.stream_window),
            ..Stream::default()
        };
        self.streams.insert(id, stream);
        self.queued.push_back(id);
        // gRFC A8: a stream that starts long after the last read pings first.
        if let Some(ka) = self.config.keepalive {
            if now.saturating_duration_since(self.last_read) >= ka.time && self.open_local == 0 {
                self.keepalive_ping(now);
            }
        }
        self.open_queued();
        Ok(id)
    }

    fn open_queued(&mut self) {
        while self.open_local < self.peer.max_concurrent_streams {
            let Some(id) = self.queued.pop_front() else {
                return;
            };
            let Some(stream) = self.streams.get_mut(&id) else {
                continue;
            };
            let Some((headers, end_stream)) = stream.queued_headers.take() else {
                continue;
            };
            stream.opened = true;
            stream.local_closed = end_stream;
            self.open_local += 1;
            self.write_headers(id, &headers, end_stream);
        }
    }

    fn write_headers(&mut self, id: StreamId, headers: &[Header], end_stream: bool) {
        let mut block = Vec::new();
        self.encoder.encode(headers, &mut block);
        Headers::encode_block(
            id,
            &block,
            end_stream,
            self.peer.max_frame_size as usize,
            &mut self.out,
        );
        // gRFC A8: pings strikes reset whenever the server sends headers or data.
        self.ping_strikes = 0;
    }

    /// Queues data on a stream, ending it after the data if `end_stream`. Sent as flow
    /// control allows.
    ///
    /// # Errors
    ///
    /// The stream is not open or already ended locally.
    pub fn send_data(
        &mut self,
        id: StreamId,
        data: &[u8],
        end_stream: bool,
    ) -> Result<(), StreamError> {
        let stream = self.streams.get_mut(&id).ok_or(StreamError::NotOpen(id))?;
        if stream.local_closed || stream.end_after_data || stream.trailers.is_some() {
            return Err(StreamError::AlreadyEnded(id));
        }
        if stream.send_pos == stream.send_buf.len() {
            stream.send_buf.clear();
            stream.send_pos = 0;
        }
        stream.send_buf.extend_from_slice(data);
        stream.end_after_data = end_stream;
        Ok(())
    }

    /// Bytes queued on `id` (DATA and its framing not yet handed to
    /// [`Connection::poll_transmit`]); 0 for a stream that is gone. Drivers use it to
    /// give a sender's bounded buffer its room back as the data leaves.
    #[must_use]
    pub fn send_buffered(&self, id: StreamId) -> usize {
        self.streams
            .get(&id)
            .map_or(0, |s| s.send_buf.len() - s.send_pos)
    }

    /// Sends a header block on a stream: a server's response headers, or trailers
    /// (sent after any queued data, ending the stream).
    ///
    /// # Errors
    ///
    /// The stream is not open or already ended locally.
    pub fn send_headers(
        &mut self,
        id: StreamId,
        headers: Vec<Header>,
        end_stream: bool,
    ) -> Result<(), StreamError> {
        let stream = self.streams.get_mut(&id).ok_or(StreamError::NotOpen(id))?;
        if stream.local_closed || stream.end_after_data || stream.trailers.is_some() {
            return Err(StreamError::AlreadyEnded(id));
        }
        if end_stream && stream.send_pos < stream.send_buf.len() {
            stream.trailers = Some(headers);
            return Ok(());
        }
        stream.local_closed = end_stream;
        self.write_headers(id, &headers, end_stream);
        self.maybe_remove(id);
        Ok(())
    }

    /// Resets a stream (RST_STREAM with `reason`, unless it never went on the wire).
    /// Does nothing for a stream that is not open.
    pub fn reset_stream(&mut self, id: StreamId, reason: Reason) {
        let Some(stream) = self.streams.remove(&id) else {
            return;
        };
        if stream.opened || self.role == Role::Server {
            RstStream::new(id, reason).encode(&mut self.out);
        }
        self.stream_gone(id, &stream);
        self.finish_if_drained();
    }

    /// Sends GOAWAY: no new streams are accepted; streams up to the last one the peer
    /// opened finish. With an error `reason` the connection ends at once.
    ///
    /// A server's graceful GOAWAY (NO_ERROR) has two phases, as RFC 9113 section 6.8
    /// suggests: a GOAWAY with the largest stream id and a PING; when the PING is
    /// acknowledged, every stream the client sent before seeing the GOAWAY has
    /// arrived, and the final GOAWAY names the real last stream. So no request in
    /// flight is refused.
    pub fn go_away(&mut self, reason: Reason, debug: &[u8]) {
        if self.closed || self.goaway_sent.is_some() {
            return;
        }
        if self.role == Role::Server && reason == Reason::NO_ERROR {
            GoAway {
                last_stream_id: StreamId::MAX,
                reason,
                debug_data: debug.to_vec(),
            }
            .encode(&mut self.out);
            Ping::new(SHUTDOWN_PING).encode(&mut self.out);
            self.goaway_sent = Some(StreamId::MAX);
            self.shutdown_ping_outstanding = true;
            return;
        }
        let last = self.last_peer_stream;
        GoAway {
            last_stream_id: last,
            reason,
            debug_data: debug.to_vec(),
        }
        .encode(&mut self.out);
        self.goaway_sent = Some(last);
        for id in std::mem::take(&mut self.queued) {
            if let Some(stream) = self.streams.remove(&id) {
                self.stream_gone(id, &stream);
                self.events.push_back(Event::Reset {
                    stream: id,
                    cause: ResetCause::Refused,
                });
            }
        }
        if reason != Reason::NO_ERROR {
            self.error = Some(ConnectionError::Local);
            self.finish(Some(ConnectionError::Local));
        } else {
            self.finish_if_drained();
        }
    }

    // ----- Output -----

    /// Appends bytes to write to `buf`: control frames first, then DATA within the
    /// flow-control windows, at most about 256 KiB a call so one connection cannot
    /// starve others. Returns how many bytes were appended.
    #[must_use]
    pub fn poll_transmit(&mut self, _now: Instant, buf: &mut Vec<u8>) -> usize {
        const BUDGET: usize = 256 << 10;
        let start = buf.len();
        buf.append(&mut self.out);
        self.pending_control = 0;
        for (id, credit) in std::mem::take(&mut self.pending_credit) {
            if id.is_zero() {
                self.conn_recv_window += i64::from(credit);
            } else if let Some(stream) = self.streams.get_mut(&id) {
                stream.recv_window += i64::from(credit);
            }
        }
        if self.closed {
            return buf.len() - start;
        }
        // DATA, round-robin over streams, starting after the last one served.
        let after = (Bound::Excluded(self.send_cursor), Bound::Unbounded);
        let ids: Vec<StreamId> = self
            .streams
            .range(after)
            .chain(self.streams.range(..=self.send_cursor))
            .filter(|(_, s)| s.opened && s.has_pending_send())
            .map(|(id, _)| *id)
            .collect();
        let stop_at = start + BUDGET;
        for id in ids {
            if buf.len() >= stop_at {
                break;
            }
            self.send_cursor = id;
            self.write_stream_data(id, buf, stop_at);
            buf.append(&mut self.out);
        }
        buf.len() - start
    }

    /// Writes `id`'s DATA into `buf` until its data, the windows, or `buf` reaching
    /// `stop_at` bytes runs out; then its trailers if the data is drained.
    fn write_stream_data(&mut self, id: StreamId, buf: &mut Vec<u8>, stop_at: usize) {
        let max_frame = self.peer.max_frame_size as usize;
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let mut wrote_any = false;
        loop {
            let left = stream.send_buf.len() - stream.send_pos;
            let window = stream.send_window.min(self.conn_send_window).max(0) as usize;
            let room = stop_at.saturating_sub(buf.len());
            let n = left.min(window).min(max_frame).min(room);
            let last_chunk = n == left;
            let end = last_chunk && stream.end_after_data && stream.trailers.is_none();
            if n == 0 && !(left == 0 && end) {
                break;
            }
            let chunk = &stream.send_buf[stream.send_pos..stream.send_pos + n];
            Head::new(frame::Kind::Data, u8::from(end), id, n).encode(buf);
            buf.extend_from_slice(chunk);
            wrote_any = true;
            stream.send_pos += n;
            stream.send_window -= n as i64;
            self.conn_send_window -= n as i64;
            if end {
                stream.local_closed = true;
                stream.end_after_data = false;
                break;
            }
            if last_chunk || buf.len() >= stop_at {
                break;
            }
        }
        if wrote_any {
            self.ping_strikes = 0;
        }
        let drained = stream.send_pos == stream.send_buf.len();
        if drained {
            stream.send_buf = Vec::new();
            stream.send_pos = 0;
            if let Some(trailers) = stream.trailers.take() {
                stream.local_closed = true;
                stream.end_after_data = false;
                self.write_headers(id, &trailers, true);
            }
        }
        self.maybe_remove(id);
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest deadline at which [`Connection::handle_timeout`] has work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        self.timers.iter().flatten().min().copied()
    }

    // ----- Frame handling -----

    fn handle_frame_error(&mut self, err: FrameError, _now: Instant) {
        match err {
            FrameError::Stream {
                stream_id,
                reason,
                detail,
            } => self.stream_error(stream_id, reason, detail),
            _ => self.fail(err.reason(), "invalid frame"),
        }
    }

    fn handle_frame(&mut self, frame: Frame, now: Instant) {
        if !self.peer_settings_seen && !matches!(frame, Frame::Settings(ref s) if !s.ack) {
            // "The first frame sent by the peer MUST be a SETTINGS frame."
            return self.fail(Reason::PROTOCOL_ERROR, "first frame is not SETTINGS");
        }
        if let Some(partial) = &self.partial {
            // "A receiver MUST treat the receipt of any other type of frame or a frame on
            // a different stream as a connection error of type PROTOCOL_ERROR."
            let continues =
                matches!(&frame, Frame::Continuation(c) if c.stream_id == partial.stream);
            if !continues {
                return self.fail(Reason::PROTOCOL_ERROR, "header block interrupted");
            }
        }
        match frame {
            Frame::Settings(s) => self.handle_settings(s, now),
            Frame::Ping(p) => self.handle_ping(p, now),
            Frame::GoAway(g) => self.handle_go_away(g),
            Frame::WindowUpdate(w) => self.handle_window_update(w),
            Frame::RstStream(r) => self.handle_rst_stream(r, now),
            Frame::Headers(h) => self.handle_headers(h),
            Frame::Continuation(c) => self.handle_continuation(c),
            Frame::Data(d) => self.handle_data(d),
            Frame::PushPromise(_) => {
                // We advertise ENABLE_PUSH = 0, and a server never receives one.
                self.fail(Reason::PROTOCOL_ERROR, "PUSH_PROMISE received")
            }
            Frame::Priority(_) | Frame::Unknown(_) => {}
        }
    }

    fn queue_control(&mut self) -> bool {
        self.pending_control += 1;
        if self.pending_control > self.config.max_pending_control_frames {
            self.fail(Reason::ENHANCE_YOUR_CALM, "too many control frames queued");
            return false;
        }
        true
    }

    fn handle_settings(&mut self, s: Settings, _now: Instant) {
        if s.ack {
            if self.settings_unacked > 0 {
                self.settings_unacked -= 1;
                if self.settings_unacked == 0 {
                    self.timers[Timer::SettingsAck as usize] = None;
                }
            }
            return;
        }
        if self.role == Role::Client && s.enable_push.is_some_and(|v| v != 0) {
            // "A server MUST NOT explicitly set this value to 1."
            return self.fail(Reason::PROTOCOL_ERROR, "server enabled push");
        }
        if let Some(size) = s.header_table_size {
            self.encoder.set_max_table_size(size as usize);
        }
        if let Some(n) = s.max_concurrent_streams {
            self.peer.max_concurrent_streams = n;
        }
        if let Some(n) = s.max_frame_size {
            self.peer.max_frame_size = n;
        }
        if let Some(n) = s.max_header_list_size {
            self.peer.max_header_list_size = Some(n);
        }
        if let Some(window) = s.initial_window_size {
            let delta = i64::from(window) - i64::from(self.peer.initial_window);
            self.peer.initial_window = window;
            for stream in self.streams.values_mut() {
                stream.send_window += delta;
                if stream.send_window > i64::from(frame::MAX_WINDOW_SIZE) {
                    // "... MUST treat this as a connection error of type
                    // FLOW_CONTROL_ERROR."
                    return self.fail(Reason::FLOW_CONTROL_ERROR, "window above 2^31-1");
                }
            }
        }
        if !self.queue_control() {
            return;
        }
        Settings::new_ack().encode(&mut self.out);
        if !self.peer_settings_seen {
            self.peer_settings_seen = true;
            self.events.push_back(Event::Connected);
        }
        self.open_queued();
    }

    fn handle_ping(&mut self, p: Ping, now: Instant) {
        if p.ack && p.payload == SHUTDOWN_PING && self.shutdown_ping_outstanding {
            // Phase two of a graceful GOAWAY: everything sent before the first has come.
            self.shutdown_ping_outstanding = false;
            let last = self.last_peer_stream;
            GoAway::new(last, Reason::NO_ERROR).encode(&mut self.out);
            self.goaway_sent = Some(last);
            self.finish_if_drained();
            return;
        }
        if p.ack {
            self.ping_outstanding = false;
            self.timers[Timer::KeepaliveTimeout as usize] = None;
            return;
        }
        if self.role == Role::Server {
            let policy = self.config.ping_policy;
            let interval = if self.open_remote == 0 && !policy.permit_without_calls {
                IDLE_PING_INTERVAL
            } else {
                policy.min_time
            };
            if self
                .last_peer_ping
                .is_some_and(|last| now < last + interval)
            {
                self.ping_strikes += 1;
                if self.ping_strikes > policy.max_strikes {
                    // gRFC A8: the debug data is exactly "too_many_pings".
                    return self.fail(Reason::ENHANCE_YOUR_CALM, "too_many_pings");
                }
            }
            self.last_peer_ping = Some(now);
        }
        if self.queue_control() {
            Ping::pong(p.payload).encode(&mut self.out);
        }
    }

    fn handle_go_away(&mut self, g: GoAway) {
        let last = g.last_stream_id;
        self.goaway_received = Some(self.goaway_received.map_or(last, |prev| prev.min(last)));
        // Our streams above the last id were never processed: refused. (A graceful
        // shutdown often starts with last = 2^31-1, which refuses nothing.)
        let above = (Bound::Excluded(last), Bound::Unbounded);
        let refused: Vec<StreamId> = self
            .streams
            .range(above)
            .map(|(id, _)| *id)
            .filter(|id| self.role == Role::Client || id.is_server_initiated())
            .collect();
        self.events.push_back(Event::GoAway {
            last_stream_id: last,
            reason: g.reason,
            debug: g.debug_data.clone(),
        });
        for id in refused {
            if let Some(stream) = self.streams.remove(&id) {
                self.stream_gone(id, &stream);
                self.events.push_back(Event::Reset {
                    stream: id,
                    cause: ResetCause::Refused,
                });
            }
        }
        self.queued.clear();
        if g.reason != Reason::NO_ERROR {
            let err = ConnectionError::GoAway {
                reason: g.reason,
                debug: String::from_utf8_lossy(&g.debug_data).into_owned(),
            };
            self.error = Some(err.clone());
            self.finish(Some(err));
            return;
        }
        self.finish_if_drained();
    }

    fn handle_window_update(&mut self, w: WindowUpdate) {
        let inc = i64::from(w.increment);
        if w.stream_id.is_zero() {
            self.conn_send_window += inc;
            if self.conn_send_window > i64::from(frame::MAX_WINDOW_SIZE) {
                self.fail(Reason::FLOW_CONTROL_ERROR, "connection window above 2^31-1");
            }
            return;
        }
        let Some(stream) = self.streams.get_mut(&w.stream_id) else {
            if self.is_idle_stream(w.stream_id) {
                self.fail(Reason::PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream");
            }
            return;
        };
        stream.send_window += inc;
        if stream.send_window > i64::from(frame::MAX_WINDOW_SIZE) {
            self.stream_error(
                w.stream_id,
                Reason::FLOW_CONTROL_ERROR,
                "window above 2^31-1",
            );
        }
    }

    fn handle_rst_stream(&mut self, r: RstStream, now: Instant) {
        if self.is_idle_stream(r.stream_id) {
            // "If a RST_STREAM frame identifying an idle stream is received, the
            // recipient MUST treat this as a connection error of type PROTOCOL_ERROR."
            return self.fail(Reason::PROTOCOL_ERROR, "RST_STREAM on an idle stream");
        }
        if self.role == Role::Server && !self.take_reset_token(now) {
            return self.fail(Reason::ENHANCE_YOUR_CALM, "too many stream resets");
        }
        let Some(stream) = self.streams.remove(&r.stream_id) else {
            return;
        };
        self.stream_gone(r.stream_id, &stream);
        let cause = if r.reason == Reason::REFUSED_STREAM && self.role == Role::Client {
            ResetCause::Refused
        } else {
            ResetCause::Peer(r.reason)
        };
        self.events.push_back(Event::Reset {
            stream: r.stream_id,
            cause,
        });
        self.finish_if_drained();
    }

    /// Rapid-reset defence: a token bucket of peer-initiated stream resets.
    fn take_reset_token(&mut self, now: Instant) -> bool {
        let rate = f64::from(self.config.max_resets_per_second);
        let elapsed = now
            .saturating_duration_since(self.reset_tokens_at)
            .as_secs_f64();
        self.reset_tokens = (self.reset_tokens + elapsed * rate).min(rate);
        self.reset_tokens_at = now;
        if self.reset_tokens < 1.0 {
            return false;
        }
        self.reset_tokens -= 1.0;
        true
    }

    /// Whether `id` names a stream that was never opened (RFC 9113 section 5.1 "idle").
    fn is_idle_stream(&self, id: StreamId) -> bool {
        let ours = match self.role {
            Role::Client => id.is_client_initiated(),
            Role::Server => id.is_server_initiated(),
        };
        if ours {
            id.value() >= self.next_stream_id
        } else {
            id > self.last_peer_stream
        }
    }

    fn handle_headers(&mut self, h: Headers) {
        if h.end_headers {
            return self.handle_header_block(h.stream_id, h.fragment, h.end_stream);
        }
        self.partial = Some(PartialBlock {
            stream: h.stream_id,
            fragment: h.fragment,
            end_stream: h.end_stream,
            continuations: 0,
        });
        self.check_partial_size();
    }

    fn handle_continuation(&mut self, c: Continuation) {
        let Some(partial) = &mut self.partial else {
            // "A CONTINUATION frame MUST be preceded by a HEADERS, PUSH_PROMISE or
            // CONTINUATION frame without the END_HEADERS flag set."
            return self.fail(Reason::PROTOCOL_ERROR, "unexpected CONTINUATION");
        };
        partial.fragment.extend_from_slice(&c.fragment);
        partial.continuations += 1;
        if partial.continuations > self.config.max_continuation_frames {
            return self.fail(Reason::ENHANCE_YOUR_CALM, "too many CONTINUATION frames");
        }
        if !self.check_partial_size() {
            return;
        }
        if c.end_headers {
            let partial = self.partial.take().expect("checked above");
            self.handle_header_block(partial.stream, partial.fragment, partial.end_stream);
        }
    }

    /// CONTINUATION flood defence: the compressed block may not grow past twice our
    /// header list limit.
    fn check_partial_size(&mut self) -> bool {
        let limit = 2 * self.config.max_header_list_size as usize + 1024;
        if self
            .partial
            .as_ref()
            .is_some_and(|p| p.fragment.len() > limit)
        {
            self.fail(Reason::ENHANCE_YOUR_CALM, "header block too large");
            return false;
        }
        true
    }

    fn handle_header_block(&mut self, id: StreamId, block: Vec<u8>, end_stream: bool) {
        let mut headers = Vec::new();
        let limit = self.config.max_header_list_size as usize;
        let decoded = self.decoder.decode(&block, limit, |h| headers.push(h));
        match decoded {
            Ok(()) => {}
            Err(e) if e.is_compression_error() => {
                return self.fail(Reason::COMPRESSION_ERROR, "invalid header block");
            }
            Err(_) => {
                // The table is still in sync: only this stream is refused.
                if self.role == Role::Server && !self.streams.contains_key(&id) {
                    self.last_peer_stream = self.last_peer_stream.max(id);
                }
                return self.stream_error(id, Reason::PROTOCOL_ERROR, "header list too large");
            }
        }
        match self.role {
            Role::Server => self.server_header_block(id, headers, end_stream),
            Role::Client => self.client_header_block(id, headers, end_stream),
        }
    }

    fn server_header_block(&mut self, id: StreamId, headers: Vec<Header>, end_stream: bool) {
        if let Some(stream) = self.streams.get_mut(&id) {
            // Trailers: "… MUST contain END_STREAM"; none after the peer ended.
            if stream.remote_closed || stream.blocks_received >= 2 {
                return self.stream_error(id, Reason::STREAM_CLOSED, "headers after end of stream");
            }
            if !end_stream {
                return self.stream_error(
                    id,
                    Reason::PROTOCOL_ERROR,
                    "trailers without END_STREAM",
                );
            }
            if let Err(why) = headers::validate(&headers, HeaderKind::Trailers) {
                return self.stream_error(id, Reason::PROTOCOL_ERROR, why);
            }
            stream.blocks_received = 2;
            stream.remote_closed = true;
            self.events.push_back(Event::Headers {
                stream: id,
                headers,
                end_stream,
            });
            self.maybe_remove(id);
            return;
        }
        if !id.is_client_initiated() {
            return self.fail(Reason::PROTOCOL_ERROR, "client opened an even stream");
        }
        if id <= self.last_peer_stream {
            return self.stream_error(id, Reason::STREAM_CLOSED, "headers on a closed stream");
        }
        self.last_peer_stream = id;
        if self.goaway_sent.is_some_and(|last| id > last) {
            // Above our GOAWAY's last stream id: refuse without processing.
            RstStream::new(id, Reason::REFUSED_STREAM).encode(&mut self.out);
            return;
        }
        if self.open_remote >= self.config.max_concurrent_streams {
            RstStream::new(id, Reason::REFUSED_STREAM).encode(&mut self.out);
            return;
        }
        if let Err(why) = headers::validate(&headers, HeaderKind::Request) {
            RstStream::new(id, Reason::PROTOCOL_ERROR).encode(&mut self.out);
            log::debug!("stream {id}: malformed request: {why}");
            return;
        }
        self.open_remote += 1;
        self.streams.insert(
            id,
            Stream {
                opened: true,
                remote_closed: end_stream,
                blocks_received: 1,
                send_window: i64::from(self.peer.initial_window),
                recv_window: i64::from(self.config.stream_window),
                ..Stream::default()
            },
        );
        self.events.push_back(Event::Headers {
            stream: id,
            headers,
            end_stream,
        });
    }

    fn client_header_block(&mut self, id: StreamId, headers: Vec<Header>, end_stream: bool) {
        if !id.is_client_initiated() {
            return self.fail(Reason::PROTOCOL_ERROR, "server opened a stream");
        }
        let Some(stream) = self.streams.get_mut(&id) else {
            if self.is_idle_stream(id) {
                return self.fail(Reason::PROTOCOL_ERROR, "HEADERS on an idle stream");
            }
            // A stream we already reset or finished: ignore what was in flight.
            return;
        };
        if stream.remote_closed {
            return self.stream_error(id, Reason::STREAM_CLOSED, "headers after end of stream");
        }
        let kind = if stream.blocks_received == 0 {
            HeaderKind::Response
        } else {
            HeaderKind::Trailers
        };
        if let Err(why) = headers::validate(&headers, kind) {
            return self.stream_error(id, Reason::PROTOCOL_ERROR, why);
        }
        if kind == HeaderKind::Response && is_informational(&headers) && !end_stream {
            // 1xx: skip and wait for the final response.
            return;
        }
        if kind == HeaderKind::Trailers && !end_stream {
            return self.stream_error(id, Reason::PROTOCOL_ERROR, "trailers without END_STREAM");
        }
        stream.blocks_received += 1;
        stream.remote_closed = end_stream;
        self.events.push_back(Event::Headers {
            stream: id,
            headers,
            end_stream,
        });
        self.maybe_remove(id);
    }

    fn handle_data(&mut self, d: Data) {
        let len = d.flow_controlled_len();
        // Connection flow control applies even to frames on closed streams.
        if len as i64 > self.conn_recv_window {
            return self.fail(
                Reason::FLOW_CONTROL_ERROR,
                "data beyond the connection window",
            );
        }
        self.conn_recv_window -= len as i64;
        self.release_connection_window(len);
        let id = d.stream_id;
        let Some(stream) = self.streams.get_mut(&id) else {
            if self.is_idle_stream(id) {
                return self.fail(Reason::PROTOCOL_ERROR, "DATA on an idle stream");
            }
            return;
        };
        if stream.remote_closed || stream.blocks_received == 0 {
            let reason = if stream.remote_closed {
                Reason::STREAM_CLOSED
            } else {
                Reason::PROTOCOL_ERROR
            };
            return self.stream_error(id, reason, "DATA in the wrong stream state");
        }
        if len as i64 > stream.recv_window {
            return self.stream_error(
                id,
                Reason::FLOW_CONTROL_ERROR,
                "data beyond the stream window",
            );
        }
        stream.recv_window -= len as i64;
        stream.remote_closed = d.end_stream;
        // Padding is never the application's: its credit goes back at once. The
        // data's credit comes back through `release_capacity`, when the application
        // has taken it, so a slow reader stops the peer instead of growing a queue.
        let padding = len - d.data.len();
        if padding > 0 {
            self.release_stream_credit(id, padding);
        }
        self.events.push_back(Event::Data {
            stream: id,
            data: d.data,
            end_stream: d.end_stream,
        });
        self.maybe_remove(id);
    }

    /// The application has taken `len` bytes of `id`'s DATA: give the peer that much
    /// stream window back (in batches of half the window). Does nothing for a stream
    /// that is gone or whose peer has finished sending.
    ///
    /// Connection-level credit goes back as DATA arrives (as grpc-go does), so one
    /// stream whose reader is slow never stops the others; each stream's unreleased
    /// data stays within its own window.
    pub fn release_capacity(&mut self, id: StreamId, len: usize) {
        if len > 0 {
            self.release_stream_credit(id, len);
        }
    }

    fn release_stream_credit(&mut self, id: StreamId, len: usize) {
        let half = self.config.stream_window / 2;
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if stream.remote_closed {
            return;
        }
        stream.recv_unacked = stream.recv_unacked.saturating_add(len as u32);
        if stream.recv_unacked >= half {
            WindowUpdate::new(id, stream.recv_unacked).encode(&mut self.out);
            self.pending_credit.push((id, stream.recv_unacked));
            stream.recv_unacked = 0;
        }
    }

    fn release_connection_window(&mut self, len: usize) {
        self.conn_recv_unacked += len as u32;
        if self.conn_recv_unacked >= self.config.connection_window / 2 {
            WindowUpdate::new(StreamId::ZERO, self.conn_recv_unacked).encode(&mut self.out);
            self.pending_credit
                .push((StreamId::ZERO, self.conn_recv_unacked));
            self.conn_recv_unacked = 0;
        }
    }

    // ----- Stream and connection endings -----

    fn stream_error(&mut self, id: StreamId, reason: Reason, detail: &'static str) {
        RstStream::new(id, reason).encode(&mut self.out);
        if let Some(stream) = self.streams.remove(&id) {
            self.stream_gone(id, &stream);
            self.events.push_back(Event::Reset {
                stream: id,
                cause: ResetCause::Protocol(reason, detail),
            });
        }
        self.finish_if_drained();
    }

    fn maybe_remove(&mut self, id: StreamId) {
        let done = self
            .streams
            .get(&id)
            .is_some_and(|s| s.local_closed && s.remote_closed && !s.has_pending_send());
        if done {
            let stream = self.streams.remove(&id).expect("checked above");
            self.stream_gone(id, &stream);
            self.finish_if_drained();
        }
    }

    /// Bookkeeping for a stream that left the table.
    fn stream_gone(&mut self, id: StreamId, stream: &Stream) {
        if !stream.opened {
            self.queued.retain(|q| *q != id);
            return;
        }
        match self.role {
            Role::Client => self.open_local = self.open_local.saturating_sub(1),
            Role::Server => self.open_remote = self.open_remote.saturating_sub(1),
        }
        if self.role == Role::Client {
            self.open_queued();
        }
    }

    fn finish_if_drained(&mut self) {
        let draining = self.goaway_received.is_some()
            || (self.goaway_sent.is_some() && !self.shutdown_ping_outstanding);
        if draining && self.streams.is_empty() && !self.closed {
            self.finish(None);
        }
    }

    /// A connection error we detected: GOAWAY with `reason`, then finish.
    fn fail(&mut self, reason: Reason, detail: &'static str) {
        if self.error.is_some() || self.closed {
            return;
        }
        log::debug!("{:?} connection error {reason}: {detail}", self.role);
        GoAway {
            last_stream_id: self.last_peer_stream,
            reason,
            debug_data: detail.as_bytes().to_vec(),
        }
        .encode(&mut self.out);
        self.goaway_sent = Some(self.last_peer_stream);
        let err = ConnectionError::Protocol {
            reason,
            detail: detail.into(),
        };
        self.error = Some(err.clone());
        self.finish(Some(err));
    }

    /// Ends every stream and queues [`Event::Closed`], once.
    fn finish(&mut self, err: Option<ConnectionError>) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.timers = [None; TIMERS];
        let cause_for = |opened: bool| match &err {
            _ if !opened => ResetCause::Refused,
            Some(e) => ResetCause::Connection(e.clone()),
            None => ResetCause::Connection(ConnectionError::Local),
        };
        for (id, stream) in std::mem::take(&mut self.streams) {
            self.events.push_back(Event::Reset {
                stream: id,
                cause: cause_for(stream.opened),
            });
        }
        self.queued.clear();
        self.events.push_back(Event::Closed(err));
    }

    /// Ends the connection from the local side: GOAWAY(NO_ERROR) if possible, every
    /// stream reset, [`Event::Closed`] with [`ConnectionError::Local`].
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        if self.goaway_sent.is_none() {
            GoAway::new(self.last_peer_stream, Reason::NO_ERROR).encode(&mut self.out);
            self.goaway_sent = Some(self.last_peer_stream);
        }
        self.finish(Some(ConnectionError::Local));
    }
}

fn is_informational(headers: &[Header]) -> bool {
    headers
        .iter()
        .find(|h| h.name == b":status")
        .is_some_and(|h| h.value.first() == Some(&b'1'))
}
