//! The seam between a channel and the transport that carries its calls.
//!
//! A channel asks a [`Transport`] to connect to an address and gets a [`Connection`]
//! back at once; the connection reports what happens to it through
//! [`ConnectionEvent`]s. Every call, of every kind, is one stream on a connection:
//!
//! ```text
//!   connect() ──> Connection ──event──> Ready ──...──> GoAway / Closed(error)
//!                     │
//!   open_stream(head, listener) ──> CallStream
//!       caller ── try_send(message, last) / half_close / cancel / release(bytes) ──> transport
//!       transport ── on_headers, on_message*, on_writable*, on_close (exactly once) ──> listener
//! ```
//!
//! A custom transport implements streams only: unary calls are an adapter over a
//! stream ([`ConnectionExt::start_call`]), and so are the channel's calls of every
//! kind.
//!
//! # Backpressure, both ways
//!
//! - Sending: [`CallStream::try_send`] takes a message only while the stream has room
//!   (flow-control window or a bounded send buffer). Otherwise it gives the message
//!   back as [`TrySendError::Full`], and the transport calls
//!   [`CallListener::on_writable`] once there is room again. A stream with nothing
//!   queued always takes one message, whatever its size.
//! - Receiving: the transport hands every message to [`CallListener::on_message`],
//!   but gives the peer flow-control credit for a message's bytes only when the
//!   application calls [`CallStream::release`] after taking it. So the messages a
//!   listener holds are bounded by the stream's receive window (plus the one message
//!   being assembled): a slow reader stops the peer, never grows a queue.
//!
//! # Threads
//!
//! Listener methods run on the transport's threads, on a caller's thread that is
//! driving the transport's I/O ([`CallStream::drive`], lb-transport's transport
//! lets a blocked caller do so), or inline inside `open_stream`/`try_send`/`cancel`
//! on the caller's thread (an in-memory transport does that). A listener must
//! therefore be quick, must not block, and must not call back into its own stream
//! while it holds a lock that the stream's caller may hold.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::address::Address;
use crate::metadata::Metadata;
use crate::status::{Code, Status};

/// What opens a call: everything sent in the request headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallHead {
    /// The method path, `/package.Service/Method`; shared, since a call's every
    /// attempt sends the same one.
    pub method: Arc<str>,
    /// Metadata to send with the request headers.
    pub metadata: Metadata,
    /// When the call must end; sent as `grpc-timeout`, and the transport ends the
    /// call with DEADLINE_EXCEEDED (resetting the stream) when it passes.
    pub deadline: Option<Instant>,
    /// Overrides the connection's `:authority` for this call.
    pub authority: Option<String>,
    /// The message encoding (`grpc-encoding`) to compress request messages with,
    /// such as `"gzip"`; `None` or `"identity"` sends them uncompressed. The
    /// transport decides which names it supports and fails the call with INTERNAL,
    /// before sending it, for one it does not know. Responses are decoded whatever
    /// this says.
    pub compression: Option<String>,
    /// The thread that opens the call will wait for it through
    /// [`CallStream::drive`] (the channel's calls do): a transport may leave the
    /// call's I/O to that thread instead of waking one of its own. `false` (the
    /// default) for calls followed only through their listener.
    pub caller_drives: bool,
}

impl CallHead {
    /// A head for `method` with nothing else set.
    pub fn new(method: impl Into<Arc<str>>) -> Self {
        Self {
            method: method.into(),
            metadata: Metadata::new(),
            deadline: None,
            authority: None,
            compression: None,
            caller_drives: false,
        }
    }
}

/// How far a call got before it ended: what a retry needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Progress {
    /// Nothing of the call left this client (the connection was gone, or the
    /// request headers were never written).
    NotSent,
    /// The server refused the stream without processing it (REFUSED_STREAM, or a
    /// stream above a GOAWAY's last stream id).
    Refused,
    /// The server may have seen the call.
    Processed,
}

impl Progress {
    /// The server cannot have processed the call, so it may be sent again without
    /// the caller noticing (gRPC's transparent retry).
    pub fn is_unprocessed(self) -> bool {
        !matches!(self, Self::Processed)
    }
}

/// How a call ended: its status (carrying the trailers' metadata) and how far it got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallOutcome {
    /// The final status: the server's (OK included), or one made on this side.
    pub status: Status,
    /// How far the call got.
    pub progress: Progress,
}

impl CallOutcome {
    /// An outcome the server had a part in.
    pub fn processed(status: Status) -> Self {
        Self {
            status,
            progress: Progress::Processed,
        }
    }

    /// An outcome of a call that never left this client.
    pub fn not_sent(status: Status) -> Self {
        Self {
            status,
            progress: Progress::NotSent,
        }
    }

    /// An outcome of a call the server refused unprocessed.
    pub fn refused(status: Status) -> Self {
        Self {
            status,
            progress: Progress::Refused,
        }
    }
}

/// Receives what happens on one call's stream. See the [module docs](self) for the
/// threads these run on.
///
/// Order: `on_headers` at most once and before any message; `on_message` for each
/// response message in order; `on_writable` after a [`TrySendError::Full`], once
/// the stream has room; `on_close` exactly once, last. A call whose stream could not
/// be opened gets only `on_close`.
pub trait CallListener: Send + Sync + 'static {
    /// The response headers' metadata arrived.
    fn on_headers(&self, headers: Metadata);

    /// A response message arrived. Its bytes count against the stream's receive
    /// window until the application calls [`CallStream::release`] for them.
    fn on_message(&self, message: Vec<u8>);

    /// A stream that refused a message with [`TrySendError::Full`] can take more.
    fn on_writable(&self);

    /// The call ended. Nothing follows.
    fn on_close(&self, outcome: CallOutcome);
}

/// Why [`CallStream::try_send`] did not take a message; the message comes back.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrySendError {
    /// No room now; [`CallListener::on_writable`] follows when there is.
    #[error("the stream's send buffer is full")]
    Full(Vec<u8>),
    /// The call has ended or its sending side was closed; nothing more can be sent.
    #[error("the stream is closed for sending")]
    Closed(Vec<u8>),
}

impl TrySendError {
    /// The message that was not sent.
    pub fn into_message(self) -> Vec<u8> {
        match self {
            Self::Full(m) | Self::Closed(m) => m,
        }
    }
}

impl fmt::Debug for TrySendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(m) => write!(f, "Full({} bytes)", m.len()),
            Self::Closed(m) => write!(f, "Closed({} bytes)", m.len()),
        }
    }
}

/// The caller's side of one call's stream. Any thread may use it; methods never
/// block.
pub trait CallStream: Send + Sync + 'static {
    /// Queues one request message (without gRPC framing: the transport adds it);
    /// with `last`, the request side ends after it.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] when the stream has no room (wait for
    /// [`CallListener::on_writable`]); [`TrySendError::Closed`] when the call has
    /// ended or sending was closed.
    fn try_send(&self, message: Vec<u8>, last: bool) -> Result<(), TrySendError>;

    /// [`try_send`](Self::try_send) with per-message options: with
    /// [`SendFlags::no_compress`] this message goes uncompressed (flag 0) even on
    /// a call that compresses (gRPC's per-message "don't compress" write flag).
    /// The default ignores the flags, which is right for a transport that never
    /// compresses.
    ///
    /// # Errors
    ///
    /// As [`try_send`](Self::try_send).
    fn try_send_with(
        &self,
        message: Vec<u8>,
        last: bool,
        flags: SendFlags,
    ) -> Result<(), TrySendError> {
        let _ = flags;
        self.try_send(message, last)
    }

    /// Ends the request side without another message. Idempotent.
    fn half_close(&self);

    /// Cancels the call: the stream is reset (RST_STREAM CANCEL for HTTP/2) and
    /// [`CallListener::on_close`] follows with CANCELLED, unless the call had already
    /// ended. Idempotent.
    fn cancel(&self);

    /// The application has taken `bytes` bytes of response messages (the sum of
    /// their lengths): give the peer that much flow-control credit back. Framing
    /// bytes are the transport's own business, never counted here.
    fn release(&self, bytes: usize);

    /// Waits on this thread until `until()` holds, `deadline` passes or a slice
    /// of the transport's choosing ends, doing the transport's I/O on this thread
    /// meanwhile when no other thread is doing it. A blocked caller that drives
    /// its own call needs no other thread to wake it (gRPC C++'s synchronous API
    /// works this way), so a sequential call costs no thread switch on the client.
    ///
    /// Returns `false` at once when it cannot drive: another thread is doing the
    /// I/O, the call was not opened with [`CallHead::caller_drives`], or the
    /// transport has no such mode (the default). The caller then waits its usual
    /// way for the listener's callbacks. `true` means it drove and returned for one
    /// of the three reasons above; the caller looks at its call again.
    ///
    /// While it drives, this thread runs the transport's callbacks for any call
    /// (listeners must not block, wherever they run): a caller holding a lock
    /// that a callback could take must not drive.
    fn drive(&self, until: &mut dyn FnMut() -> bool, deadline: Option<Instant>) -> bool {
        let _ = (until, deadline);
        false
    }
}

impl fmt::Debug for dyn CallStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CallStream")
    }
}

/// Per-message options of a send ([`CallStream::try_send_with`], and the channel's
/// `send_with` on its calls).
///
/// ```
/// use lb_core::transport::SendFlags;
/// assert!(!SendFlags::default().no_compress);
/// assert!(SendFlags::uncompressed().no_compress);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendFlags {
    /// Send this message uncompressed, whatever the call's compression (for a
    /// message that is already compressed, or holds secrets next to
    /// attacker-chosen data).
    pub no_compress: bool,
}

impl SendFlags {
    /// The flags of a message sent uncompressed.
    pub fn uncompressed() -> Self {
        Self { no_compress: true }
    }
}

/// A [`CallStream`] for a call that could not be opened: it takes nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClosedStream;

impl CallStream for ClosedStream {
    fn try_send(&self, message: Vec<u8>, _last: bool) -> Result<(), TrySendError> {
        Err(TrySendError::Closed(message))
    }
    fn half_close(&self) {}
    fn cancel(&self) {}
    fn release(&self, _bytes: usize) {}
}

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
    /// The channel's options for its transport
    /// ([`ChannelBuilder::transport_option`](crate::channel::ChannelBuilder::transport_option)),
    /// such as lb-transport's choice of TLS or plaintext for this channel. lb-core
    /// carries them without looking inside; a transport reads the types it knows.
    pub transport_options: TransportOptions,
}

/// Options a channel passes to its transport, one value per type, opaque to lb-core.
///
/// A transport defines the option types it understands (lb-transport: its
/// `ChannelSecurity`, TLS or plaintext for one channel) and reads them with
/// [`get`](Self::get) in [`Transport::connect`]; a transport ignores types it does
/// not know. Cheap to clone (the values are shared).
///
/// # Examples
///
/// ```
/// use lb_core::transport::TransportOptions;
/// #[derive(Debug, PartialEq)]
/// struct Compress(bool);
/// let mut options = TransportOptions::default();
/// options.insert(Compress(true));
/// options.insert(Compress(false)); // replaces the value of the same type
/// assert_eq!(options.get::<Compress>(), Some(&Compress(false)));
/// assert_eq!(options.get::<String>(), None);
/// ```
#[derive(Clone, Default)]
pub struct TransportOptions {
    values: Vec<Arc<dyn Any + Send + Sync>>,
}

impl TransportOptions {
    /// Sets the option of type `T`, replacing any earlier value of that type.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) {
        self.values.retain(|v| !v.is::<T>());
        self.values.push(Arc::new(value));
    }

    /// The option of type `T`, if the channel set one.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.values.iter().find_map(|v| v.downcast_ref::<T>())
    }

    /// Whether no option is set.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl fmt::Debug for TransportOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TransportOptions({} set)", self.values.len())
    }
}

/// A connection to one address, shared by every thread that calls on it.
pub trait Connection: Send + Sync + 'static {
    /// Opens a stream for a call. Never waits for the network; a transport whose
    /// bounded command queue is full may hold the caller until it has room (the
    /// H2 transport's holds 4,096 commands). The listener hears of everything
    /// that happens to the call, ending with exactly one
    /// [`on_close`](CallListener::on_close): the server's status, DEADLINE_EXCEEDED at
    /// the head's deadline, CANCELLED after [`CallStream::cancel`], or UNAVAILABLE if
    /// the connection goes away first (with [`Progress::NotSent`] or
    /// [`Progress::Refused`] when the server cannot have seen the call). A stream
    /// that cannot be opened at all is reported the same way, possibly before this
    /// returns; the handle returned then takes nothing.
    fn open_stream(&self, head: CallHead, listener: Arc<dyn CallListener>) -> Arc<dyn CallStream>;

    /// Closes the connection: calls under way end with UNAVAILABLE, and a
    /// [`ConnectionEvent::Closed`] follows. Idempotent.
    fn close(&self);

    /// The channelz id of this connection's socket, if the transport registered one
    /// in [`crate::channelz::registry`]; the channel lists it under the subchannel.
    fn socket_id(&self) -> Option<u64> {
        None
    }
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

// ---------------------------------------------------------------------------------
// Unary calls: an adapter over a stream.
// ---------------------------------------------------------------------------------

/// One unary call: a head and its one request message.
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

    /// The call's head (everything but the message).
    pub fn head(&self) -> CallHead {
        CallHead {
            method: self.method.as_str().into(),
            metadata: self.metadata.clone(),
            deadline: self.deadline,
            authority: self.authority.clone(),
            compression: None,
            caller_drives: false,
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
    /// The status the call ends with if it is not retried (with the trailers).
    pub status: Status,
    /// The server never processed the call (see [`Progress::is_unprocessed`]).
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

/// Receives a unary call's result; called exactly once, from any thread.
pub type CallCompletion = Box<dyn FnOnce(Result<CallResponse, CallError>) + Send>;

/// Unary calls on any [`Connection`], as an adapter over its streams.
///
/// ```
/// use std::sync::Arc;
/// use lb_core::transport::*;
/// # use lb_core::Status;
/// fn echo_once(conn: &dyn Connection) -> Result<CallResponse, CallError> {
///     let (tx, rx) = std::sync::mpsc::sync_channel(1);
///     conn.start_call(
///         CallRequest::new("/echo.Echo/Say", b"hi".to_vec()),
///         Box::new(move |result| { let _ = tx.send(result); }),
///     );
///     rx.recv().unwrap()
/// }
/// ```
pub trait ConnectionExt {
    /// Starts a unary call: opens a stream, sends the one message with the end of
    /// the request, and calls `done` exactly once with the one response message
    /// (or the error: a missing or second response message is UNIMPLEMENTED, as in
    /// gRPC's unary calls).
    fn start_call(&self, call: CallRequest, done: CallCompletion);
}

impl<C: Connection + ?Sized> ConnectionExt for C {
    fn start_call(&self, call: CallRequest, done: CallCompletion) {
        let CallRequest {
            method,
            metadata,
            message,
            deadline,
            authority,
        } = call;
        let listener = Arc::new(UnaryListener {
            state: Mutex::new(UnaryState {
                headers: Metadata::new(),
                message: None,
                extra: 0,
                done: Some(done),
            }),
        });
        let stream = self.open_stream(
            CallHead {
                method: method.into(),
                metadata,
                deadline,
                authority,
                compression: None,
                caller_drives: false,
            },
            listener,
        );
        // An empty stream always takes one message; `Closed` means the call already
        // ended, and its listener has been told.
        let _ = stream.try_send(message, true);
    }
}

struct UnaryState {
    headers: Metadata,
    message: Option<Vec<u8>>,
    extra: usize,
    done: Option<CallCompletion>,
}

/// Collects a unary call's one response.
struct UnaryListener {
    state: Mutex<UnaryState>,
}

impl CallListener for UnaryListener {
    fn on_headers(&self, headers: Metadata) {
        self.state.lock().headers = headers;
    }

    fn on_message(&self, message: Vec<u8>) {
        // The stream ends with this call's response, so the credit never matters.
        let mut state = self.state.lock();
        if state.message.is_none() {
            state.message = Some(message);
        } else {
            state.extra += 1;
        }
    }

    fn on_writable(&self) {}

    fn on_close(&self, outcome: CallOutcome) {
        let (done, result) = {
            let mut state = self.state.lock();
            let Some(done) = state.done.take() else {
                return;
            };
            let CallOutcome {
                mut status,
                progress,
            } = outcome;
            let result = if !status.is_ok() {
                Err(CallError {
                    status,
                    unprocessed: progress.is_unprocessed(),
                })
            } else if state.extra > 0 {
                Err(Status::new(
                    Code::Unimplemented,
                    format!("unary call got {} response messages", state.extra + 1),
                )
                .with_trailers(status.take_trailers())
                .into())
            } else {
                match state.message.take() {
                    Some(message) => Ok(CallResponse {
                        headers: std::mem::take(&mut state.headers),
                        message,
                        trailers: status.take_trailers(),
                    }),
                    None => Err(Status::new(
                        Code::Unimplemented,
                        "unary call got no response message",
                    )
                    .with_trailers(status.take_trailers())
                    .into()),
                }
            };
            (done, result)
        };
        done(result);
    }
}
