//! HTTP/2 connection and stream state, without I/O (RFC 9113 sections 5 and 6).
//!
//! [`Connection`] takes bytes and time in and gives bytes, [`Event`]s and its next
//! deadline out, for either [`Role`]. It owns the HPACK contexts, stream states,
//! flow-control windows, SETTINGS exchange, GOAWAY in both directions, keepalive
//! (gRFC A8) and the limits that keep a hostile peer's cost bounded.
//!
//! DATA is bounded in both directions by the application's pace. A stream queues at
//! most [`ConnectionConfig::stream_send_buffer`] bytes (64 KiB by default) for
//! [`Connection::poll_transmit`]; beyond that [`Connection::send_data`] returns
//! [`StreamError::Blocked`] and takes nothing, and [`Event::SendReady`] says when the
//! queue has drained below half. Received DATA's stream credit goes back only when the
//! application calls [`Connection::release_capacity`], so a slow reader stops its
//! peer instead of growing a queue.
//!
//! | attack | defence |
//! |---|---|
//! | CONTINUATION flood | at most `max_continuation_frames` per block and a byte cap → GOAWAY ENHANCE_YOUR_CALM |
//! | HPACK bomb, oversized header list | decoding stops at `max_header_list_size` → the stream is reset |
//! | SETTINGS or PING flood | more than `max_pending_control_frames` acks queued → GOAWAY ENHANCE_YOUR_CALM |
//! | window overflow | WINDOW_UPDATE past 2^31-1 → FLOW_CONTROL_ERROR |
//! | peer stops reading, our data piles up | at most `stream_send_buffer` bytes queued per stream → `StreamError::Blocked` until `Event::SendReady` |
//! | peer outruns a slow reader | stream credit returns only through `release_capacity` |
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
    Connection, ConnectionError, ConnectionStats, Event, OpenError, ResetCause, Role, StreamError,
};
