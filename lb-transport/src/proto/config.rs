//! Connection settings, keepalive and the limits that bound a hostile peer.

use std::time::Duration;

/// Client keepalive (gRFC A8): ping after `time` without reading anything, and close
/// if nothing arrives within `timeout` of the ping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepaliveConfig {
    /// Time without reads before a ping; at least [`KeepaliveConfig::MIN_TIME`].
    pub time: Duration,
    /// How long to wait for any byte after a ping.
    pub timeout: Duration,
    /// Whether to ping when no call is under way.
    pub permit_without_calls: bool,
}

impl KeepaliveConfig {
    /// The smallest keepalive time a client may use.
    pub const MIN_TIME: Duration = Duration::from_secs(10);

    /// Keepalive every `time` (raised to 10 s if lower) with gRPC's 20 s timeout.
    pub fn new(time: Duration) -> Self {
        Self {
            time: time.max(Self::MIN_TIME),
            timeout: Duration::from_secs(20),
            permit_without_calls: false,
        }
    }
}

/// How a server polices client pings (gRFC A8 enforcement).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingPolicy {
    /// The shortest interval between pings while calls are under way.
    pub min_time: Duration,
    /// Whether pings are allowed with no call under way (otherwise every 2 hours).
    pub permit_without_calls: bool,
    /// Pings that break the policy before the server says GOAWAY ENHANCE_YOUR_CALM.
    pub max_strikes: u32,
}

impl Default for PingPolicy {
    fn default() -> Self {
        Self {
            min_time: Duration::from_secs(300),
            permit_without_calls: false,
            max_strikes: 2,
        }
    }
}

/// The interval a server allows between pings when no call is under way and pings
/// without calls are not permitted.
pub const IDLE_PING_INTERVAL: Duration = Duration::from_secs(2 * 60 * 60);

/// Settings and limits of one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// SETTINGS_MAX_CONCURRENT_STREAMS we advertise (streams the peer may open).
    pub max_concurrent_streams: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE we advertise: each stream's receive window.
    pub stream_window: u32,
    /// Our connection receive window (raised from 65,535 with a WINDOW_UPDATE).
    pub connection_window: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE we advertise and enforce.
    pub max_header_list_size: u32,
    /// Client keepalive; `None` disables it.
    pub keepalive: Option<KeepaliveConfig>,
    /// Server ping policy.
    pub ping_policy: PingPolicy,
    /// How long the peer may take to acknowledge our SETTINGS.
    pub settings_timeout: Duration,
    /// Control frames (SETTINGS and PING acks) queued but not yet written before the
    /// peer is judged to be flooding.
    pub max_pending_control_frames: usize,
    /// Streams the peer may reset (or have refused) per second, as a token bucket of
    /// this size refilled at this rate; beyond it: GOAWAY ENHANCE_YOUR_CALM (rapid
    /// reset).
    pub max_resets_per_second: u32,
    /// CONTINUATION frames allowed in one header block.
    pub max_continuation_frames: usize,
    /// Bytes of DATA one stream may hold queued and not yet handed to
    /// [`Connection::poll_transmit`](crate::proto::Connection::poll_transmit).
    /// [`Connection::send_data`](crate::proto::Connection::send_data) takes a whole
    /// message while the queue is below this, and refuses with
    /// [`StreamError::Blocked`](crate::proto::StreamError::Blocked) at or above it;
    /// [`Event::SendReady`](crate::proto::Event::SendReady) follows once the queue is
    /// below half. An empty queue always takes a message, so one larger than this
    /// still goes out.
    pub stream_send_buffer: usize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 100,
            stream_window: 1 << 20,
            connection_window: 4 << 20,
            max_header_list_size: 16 << 10,
            keepalive: None,
            ping_policy: PingPolicy::default(),
            settings_timeout: Duration::from_secs(10),
            max_pending_control_frames: 1000,
            max_resets_per_second: 200,
            max_continuation_frames: 64,
            stream_send_buffer: 64 << 10,
        }
    }
}
