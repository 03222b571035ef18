//! The seam between a channel and the transport that carries its calls.
//!
//! A channel asks a [`Transport`] to connect to an address and gets a [`Connection`]
//! back at once; the connection reports what happens to it through
//! [`ConnectionEvent`]s and carries unary calls started from any thread. Subchannel
//! state and backoff stay in the channel: a transport only connects, carries calls and
//! reports.
//!
//! ```text
//!   connect() ──> Connection ──event──> Ready ──...──> GoAway / Closed(error)
//!                     │
//!   start_call(call, done) ... done(Ok(response) | Err(status)), exactly once
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use crate::address::Address;
use crate::metadata::Metadata;
use crate::status::Status;

/// One unary call for a transport to carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRequest {
    /// The method path, `/package.Service/Method`.
    pub method: String,
    /// Metadata to send with the request headers.
    pub metadata: Metadata,
    /// The serialized request message.
    pub message: Vec<u8>,
    /// When the call must end; sent as `grpc-timeout`.
    pub deadline: Option<Instant>,
    /// Overrides the connection's `:authority` for this call.
    pub authority: Option<String>,
}

impl CallRequest {
    /// A call to `method` with `message` and nothing else set.
    pub fn new(method: impl Into<String>, message: Vec<u8>) -> Self {
        Self {
            method: method.into(),
            metadata: Metadata::new(),
            message,
            deadline: None,
            authority: None,
        }
    }
}

/// A successful unary response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallResponse {
    /// The response headers' metadata.
    pub headers: Metadata,
    /// The serialized response message.
    pub message: Vec<u8>,
    /// The trailers' metadata (without `grpc-status` and `grpc-message`).
    pub trailers: Metadata,
}

/// Why a call failed, and whether the server can have seen it.
///
/// ```
/// use lb_core::{Status, transport::CallError};
/// let e = CallError::unprocessed(Status::unavailable("stream refused"));
/// assert!(e.unprocessed);
/// let e: CallError = Status::internal("boom").into();
/// assert!(!e.unprocessed);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status}")]
pub struct CallError {
    /// The status the call ends with if it is not retried.
    pub status: Status,
    /// The server never processed the call: the stream was refused
    /// (REFUSED_STREAM, or above a GOAWAY's last stream id) or the connection was lost
    /// before the request was written. A channel may send such a call again, on
    /// another connection, without the caller noticing (gRPC's transparent retry).
    pub unprocessed: bool,
}

impl CallError {
    /// A failure the server never saw.
    pub fn unprocessed(status: Status) -> Self {
        Self {
            status,
            unprocessed: true,
        }
    }
}

impl From<Status> for CallError {
    fn from(status: Status) -> Self {
        Self {
            status,
            unprocessed: false,
        }
    }
}

/// Receives a call's result; called exactly once, from any thread.
pub type CallCompletion = Box<dyn FnOnce(Result<CallResponse, CallError>) + Send>;

/// What happened to a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// The connection is up and may carry calls (for HTTP/2: the server's SETTINGS
    /// arrived).
    Ready,
    /// The peer is going away: calls under way finish, new ones must go elsewhere.
    /// `too_many_pings` is set when the peer complained about keepalive pings (the
    /// channel then doubles its keepalive time).
    GoAway {
        /// The reason the peer gave.
        reason: String,
        /// The peer sent ENHANCE_YOUR_CALM with "too_many_pings".
        too_many_pings: bool,
    },
    /// The connection is closed. With an error if it failed or never came up.
    Closed(Option<Status>),
}

/// Receives a connection's events; called from the transport's threads.
pub type ConnectionEvents = Arc<dyn Fn(ConnectionEvent) + Send + Sync>;

/// How to connect.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// The `:authority` for calls on this connection.
    pub authority: String,
    /// When the attempt gives up if the connection is not READY by then.
    pub connect_deadline: Instant,
    /// The `user-agent` to send.
    pub user_agent: String,
}

/// A connection to one address, shared by every thread that calls on it.
pub trait Connection: Send + Sync + 'static {
    /// Starts a unary call. `done` receives the result exactly once, whatever
    /// happens: the response, the server's status, DEADLINE_EXCEEDED at the deadline,
    /// or UNAVAILABLE if the connection goes away first (marked
    /// [`CallError::unprocessed`] when the server cannot have seen the call).
    fn start_call(&self, call: CallRequest, done: CallCompletion);

    /// Closes the connection: calls under way end with UNAVAILABLE, and a
    /// [`ConnectionEvent::Closed`] follows. Idempotent.
    fn close(&self);
}

impl fmt::Debug for dyn Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Connection")
    }
}

/// Makes connections. Implement this to plug your own transport into a channel.
pub trait Transport: Send + Sync + 'static {
    /// Starts connecting to `address` without blocking. The result is reported on
    /// `events`: [`ConnectionEvent::Ready`] or [`ConnectionEvent::Closed`] with an
    /// error (also when `options.connect_deadline` passes first).
    ///
    /// # Errors
    ///
    /// The address cannot be used by this transport at all (for example it does not
    /// parse); nothing was started.
    fn connect(
        &self,
        address: &Address,
        options: &ConnectOptions,
        events: ConnectionEvents,
    ) -> Result<Arc<dyn Connection>, Status>;
}

impl fmt::Debug for dyn Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Transport")
    }
}
