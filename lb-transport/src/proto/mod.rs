//! HTTP/2 connection and stream state, without I/O (RFC 9113 sections 5 and 6).
//!
//! [`Connection`] takes bytes and time in and gives bytes, [`Event`]s and its next
//! deadline out, for either [`Role`]. It owns the HPACK contexts, stream states,
//! flow-control windows, SETTINGS exchange, GOAWAY in both directions, keepalive
//! (gRFC A8) and the limits that keep a hostile peer's cost bounded:
//!
//! | attack | defence |
//! |---|---|
//! | CONTINUATION flood | at most `max_continuation_frames` per block and a byte cap → GOAWAY ENHANCE_YOUR_CALM |
//! | HPACK bomb, oversized header list | decoding stops at `max_header_list_size` → the stream is reset |
//! | SETTINGS or PING flood | more than `max_pending_control_frames` acks queued → GOAWAY ENHANCE_YOUR_CALM |
//! | window overflow | WINDOW_UPDATE past 2^31-1 → FLOW_CONTROL_ERROR |
//! | frames on closed or idle streams | STREAM_CLOSED / PROTOCOL_ERROR |
//! | rapid reset (server) | a token bucket of peer resets → GOAWAY ENHANCE_YOUR_CALM |
//! | pings too often (server) | gRFC A8 strikes → GOAWAY ENHANCE_YOUR_CALM "too_many_pings" |

mod config;
mod connection;
mod headers;
#[cfg(test)]
mod tests;

pub use config::{ConnectionConfig, IDLE_PING_INTERVAL, KeepaliveConfig, PingPolicy};
pub use connection::{
    Connection, ConnectionError, Event, OpenError, ResetCause, Role, StreamError,
};
