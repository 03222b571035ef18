//! The HTTP/2 connection state machine, for both roles.
//!
//! This file holds [`Connection`] itself, its getters, its input and output methods
//! and the dispatch of incoming frames. Each concern has its own file of
//! `impl Connection` blocks, with the public commands that belong to it:
//!
//! | file | owns |
//! |---|---|
//! | `streams.rs` | per-stream state; opening, MAX_CONCURRENT_STREAMS queueing, what a header list does to a stream, RST_STREAM both ways, the rapid-reset bucket |
//! | `flow.rs` | DATA both ways, the per-stream send bound, send and receive windows, WINDOW_UPDATE, credit release |
//! | `header_block.rs` | HEADERS and CONTINUATION: assembly, the flood and HPACK decode limits, encoding our blocks |
//! | `settings.rs` | the SETTINGS exchange, its ack timeout, the bound on queued control frames |
//! | `ping.rs` | PING, client keepalive (gRFC A8), server ping strikes |
//! | `goaway.rs` | GOAWAY both ways, the graceful two-phase shutdown, how the connection ends |
//! | `error.rs` | the error types |

mod error;
mod flow;
mod goaway;
mod header_block;
mod ping;
mod settings;
mod streams;

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use crate::frame::{self, Frame, FrameError, FrameReader, Head, Reason, StreamId};
use crate::hpack::{self, Header};
use crate::proto::config::ConnectionConfig;

pub use error::{ConnectionError, OpenError, ResetCause, StreamError};
use header_block::PartialBlock;
use settings::PeerSettings;
use streams::Stream;

/// Which end of the connection this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Opens streams (sends requests).
    Client,
    /// Accepts streams (answers requests).
    Server,
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
    /// Data on a stream. Its stream-level flow-control credit goes back to the peer
    /// only when the application calls [`Connection::release_capacity`].
    Data {
        /// The stream.
        stream: StreamId,
        /// The bytes.
        data: Vec<u8>,
        /// The peer will send nothing more on this stream.
        end_stream: bool,
    },
    /// The stream that was blocked can take more data: [`Connection::send_data`]
    /// refused data with [`StreamError::Blocked`], and [`Connection::poll_transmit`]
    /// has since drained its queue below half of
    /// [`ConnectionConfig::stream_send_buffer`]. Once per refusal episode; not sent
    /// if the stream ends or is reset first.
    SendReady {
        /// The stream.
        stream: StreamId,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    KeepaliveIdle = 0,
    KeepaliveTimeout = 1,
    SettingsAck = 2,
}

const TIMERS: usize = 3;

/// What a connection has done, for channelz (gRFC A14): see
/// [`Connection::stats`]. Plain counts, kept as the connection runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Streams opened: HEADERS sent (client) or accepted (server).
    pub streams_started: u64,
    /// Streams that ended well: the peer's END_STREAM arrived (client), or ours
    /// went out (server), as channelz counts them.
    pub streams_succeeded: u64,
    /// Streams that ended otherwise (reset, refused, connection gone).
    pub streams_failed: u64,
    /// Keepalive PINGs sent (gRFC A8).
    pub keepalives_sent: u64,
    /// The connection-level window the peer grants us (what we may send).
    pub send_window: i64,
    /// The connection-level window we grant the peer (what it may send).
    pub recv_window: i64,
}

/// At most about this many bytes of DATA per [`Connection::poll_transmit`] call, so
/// one connection cannot starve others.
const TRANSMIT_BUDGET: usize = 256 << 10;

/// An HTTP/2 connection without I/O: bytes and time go in, bytes, events and the next
/// deadline come out.
///
/// Four families of methods, as in quinn-proto:
/// - getters take `&self` ([`Connection::is_closed`], [`Connection::role`],
///   [`Connection::send_buffered`]);
/// - `handle_*(now, …)` feed input: [`Connection::handle_read`],
///   [`Connection::handle_timeout`], [`Connection::handle_eof`];
/// - commands from the application: [`Connection::open_stream`],
///   [`Connection::send_data`], [`Connection::send_headers`],
///   [`Connection::release_capacity`], [`Connection::reset_stream`],
///   [`Connection::go_away`], [`Connection::close`];
/// - outputs, each drained until empty: [`Connection::poll_transmit`],
///   [`Connection::poll_event`], [`Connection::poll_timeout`].
///
/// Errors are sticky: after a connection error the GOAWAY is still flushed by
/// `poll_transmit`, every open stream gets a [`Event::Reset`], and [`Event::Closed`]
/// is the last event.
///
/// Both directions of DATA are bounded by the application's pace. Sending: a stream
/// holds at most [`ConnectionConfig::stream_send_buffer`] bytes not yet handed to
/// `poll_transmit`; beyond that `send_data` says [`StreamError::Blocked`] and
/// [`Event::SendReady`] follows when there is room. Receiving: a stream's window
/// reopens only as the application calls `release_capacity`.
///
/// ```text
///  send_data ──▶ stream queue (≤ stream_send_buffer) ──poll_transmit──▶ peer
///      ▲                                 │ drained below half
///      └──────── Event::SendReady ◀──────┘ (only after Blocked)
///
///  peer ──handle_read──▶ Event::Data ──▶ application ──release_capacity──▶ WINDOW_UPDATE
/// ```
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
    /// Counts for channelz ([`Connection::stats`]); the windows are filled in on
    /// reading.
    stats: ConnectionStats,
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
            stats: ConnectionStats::default(),
            config,
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

    /// Streams started and ended, keepalives sent, and the connection windows
    /// now (for channelz).
    ///
    /// ```
    /// use std::time::Instant;
    /// use lb_transport::proto::{Connection, ConnectionConfig};
    /// let conn = Connection::client(ConnectionConfig::default(), Instant::now());
    /// let stats = conn.stats();
    /// assert_eq!((stats.streams_started, stats.send_window), (0, 65_535));
    /// ```
    pub fn stats(&self) -> ConnectionStats {
        ConnectionStats {
            send_window: self.conn_send_window,
            recv_window: self.conn_recv_window,
            ..self.stats
        }
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
        self.keepalive_on_read(now);
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
        // Frames are read straight from `bytes`; only a frame split across reads is
        // gathered in `read_buf`, completed first with just the bytes it lacks.
        if !self.read_buf.is_empty() {
            let mut pending = std::mem::take(&mut self.read_buf);
            // The header first, then the rest of the frame it announces.
            for _ in 0..2 {
                let want = Head::parse(&pending).map_or(frame::HEADER_LEN, |h| h.frame_len());
                let n = want.saturating_sub(pending.len()).min(bytes.len());
                pending.extend_from_slice(&bytes[..n]);
                bytes = &bytes[n..];
            }
            let used = self.read_frames(&pending, now);
            if used < pending.len() {
                // Still incomplete (the read ran out), or the connection ended.
                pending.drain(..used);
                self.read_buf = pending;
                return;
            }
            pending.clear();
            self.read_buf = pending;
        }
        let used = self.read_frames(bytes, now);
        if self.error.is_none() && !self.closed {
            self.read_buf.extend_from_slice(&bytes[used..]);
        }
    }

    /// Handles the complete frames at the start of `input`; returns how many bytes
    /// they took. Stops at an incomplete frame, a connection error, or the end of
    /// the connection.
    fn read_frames(&mut self, input: &[u8], now: Instant) -> usize {
        let mut pos = 0;
        // A frame may finish the connection (a GOAWAY with no streams left, say): then
        // nothing after it is read.
        while self.error.is_none() && !self.closed {
            match self.reader.read(&input[pos..]) {
                Ok(None) => break,
                Ok(Some((frame, n))) => {
                    pos += n;
                    self.handle_frame(frame, now);
                }
                // A stream error comes only with a complete frame: skip it and go on.
                Err(err @ FrameError::Stream { .. }) => {
                    pos += Head::parse(&input[pos..]).map_or(0, |h| h.frame_len());
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
        pos
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
            return self.settings_timed_out();
        }
        if self.due(Timer::KeepaliveTimeout, now) {
            return self.keepalive_timed_out();
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

    // ----- Output -----

    /// Appends bytes to write to `buf`: control frames first, then DATA within the
    /// flow-control windows, at most about 256 KiB a call so one connection cannot
    /// starve others. Returns how many bytes were appended.
    ///
    /// May queue [`Event::SendReady`] for streams whose data left: drain
    /// [`Connection::poll_event`] afterwards.
    #[must_use]
    pub fn poll_transmit(&mut self, _now: Instant, buf: &mut Vec<u8>) -> usize {
        let start = buf.len();
        buf.append(&mut self.out);
        self.pending_control = 0;
        self.credit_sent();
        if self.closed {
            return buf.len() - start;
        }
        self.transmit_data(buf, start + TRANSMIT_BUDGET);
        buf.len() - start
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

    // ----- Frame dispatch -----

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
}
