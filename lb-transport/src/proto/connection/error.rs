//! The errors of the connection and its commands, and why a stream ended early.

use std::time::Duration;

use crate::frame::{Reason, StreamId};

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
    /// The stream already has [`ConnectionConfig::stream_send_buffer`] bytes queued;
    /// nothing was taken. [`Event::SendReady`] says when to try again.
    ///
    /// [`ConnectionConfig::stream_send_buffer`]: crate::proto::ConnectionConfig::stream_send_buffer
    /// [`Event::SendReady`]: crate::proto::Event::SendReady
    #[error("stream {0}'s send buffer is full; wait for Event::SendReady")]
    Blocked(StreamId),
}
