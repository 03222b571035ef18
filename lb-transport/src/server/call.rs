//! The handler's side of a streaming call ([`ServerCall`]) and the state it shares
//! with the I/O thread.
//!
//! ```text
//!   I/O thread                         CallShared (Mutex + Condvar)          handler (worker)
//!   ──────────                         ────────────────────────────          ────────────────
//!   DATA ─decode─> push_message ─────> inbox: VecDeque<message> ──────────> recv()
//!   release_capacity(held) <── poke ── taken, held                <──────── (took a message)
//!   proto.send_data <───────────────── outbound: VecDeque<Out> <─────────── send(), send_headers()
//!                  └── notify ───────> out_bytes (room)                      finish (trailers)
//!   reset, deadline, close ──────────> cancelled: Option<Status> ──────────> Err from recv/send
//! ```
//!
//! The handler never touches the connection: it queues what to send and pokes the
//! I/O thread with [`ToIo::Poke`]. At most one poke per call is in flight
//! (`io_notified`), so a call costs the I/O thread's inbox one slot at most.
//!
//! # Bounds
//!
//! - **Requests** (`inbox`): the I/O thread withholds the HTTP/2 stream credit of
//!   the bytes it receives (`held`) and gives it back only as the handler takes
//!   messages (their wire bytes), or all of it once the queue is empty. The client
//!   can therefore have at most one stream receive window of wire bytes unread
//!   here, plus the one message being reassembled (which needs its whole length).
//!   Decompressed, the queue is bounded too: the I/O thread decompresses messages
//!   into it only while it holds less than one stream window of decompressed bytes
//!   (`inbox_bytes`); the rest wait compressed in the decoder until the handler
//!   takes messages. So the queue holds at most `stream_window + max_message_size`
//!   decompressed bytes, however well the messages compress, and the wire bytes at
//!   most `stream_window + max_message_size + 5`. The wire bytes also count towards
//!   the connection's `max_buffered_request_bytes`.
//! - **Responses** (`outbound`): [`ServerCall::send`] blocks while the queued
//!   messages hold `SEND_QUEUE_BYTES` (64 KiB) or more (a larger message is
//!   accepted when the queue is empty). The I/O thread moves them into the
//!   connection, whose queue per stream holds at most
//!   [`ConnectionConfig::stream_send_buffer`](crate::proto::ConnectionConfig::stream_send_buffer)
//!   bytes (64 KiB by default; [`StreamError::Blocked`](crate::proto::StreamError::Blocked)
//!   beyond, [`Event::SendReady`](crate::proto::Event::SendReady) once it drained).
//!   So a client that reads slowly stops the handler, through HTTP/2 flow control,
//!   with about `SEND_QUEUE_BYTES + stream_send_buffer` plus one message queued.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use lb_core::transport::SendFlags;
use lb_core::{Code, Metadata, Status};
use mio::Token;
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::frame::StreamId;
use crate::grpc::compression::Encoding;
use crate::grpc::message;
use crate::server::worker::{IoSender, ToIo};

/// Response bytes a handler may queue for the I/O thread before [`ServerCall::send`]
/// blocks (one larger message is accepted when nothing is queued).
pub(crate) const SEND_QUEUE_BYTES: usize = 64 << 10;

/// What a handler asks the I/O thread to send, in order.
#[derive(Debug)]
pub(crate) enum Out {
    /// Response headers with this metadata, announcing this message encoding.
    Headers(Metadata, Encoding),
    /// One encoded message (prefix included).
    Message(Vec<u8>),
    /// The end of the call: the status and the trailers metadata.
    Trailers(Status, Metadata),
}

/// The state of one streaming call shared by the I/O thread and the handler.
#[derive(Debug, Default)]
pub(crate) struct CallState {
    /// Request messages not yet taken by the handler (decompressed), with what
    /// each took on the wire. Filled with [`CallState::push_message`].
    inbox: VecDeque<Inbound>,
    /// The bytes of the messages in `inbox`, decompressed: the I/O thread stops
    /// decompressing into the queue at its limit (see the module docs).
    pub(crate) inbox_bytes: usize,
    /// The client ended its side: no message comes after those in `inbox`.
    pub(crate) remote_done: bool,
    /// Request bytes (prefix included) the handler took since the I/O thread last
    /// looked.
    pub(crate) taken: usize,
    /// Stream credit the I/O thread withholds from the client.
    pub(crate) held: usize,
    /// What the handler queued for the I/O thread.
    pub(crate) outbound: VecDeque<Out>,
    /// The bytes of the messages in `outbound`.
    pub(crate) out_bytes: usize,
    /// Why the call was cancelled, once it was.
    pub(crate) cancelled: Option<Status>,
    /// A poke is on its way to the I/O thread.
    pub(crate) io_notified: bool,
}

/// A request message waiting for the handler.
#[derive(Debug)]
struct Inbound {
    /// Decompressed.
    message: Vec<u8>,
    /// What it took on the wire, prefix included.
    wire_len: usize,
    /// It was compressed on the wire.
    compressed: bool,
}

impl CallState {
    /// Queues a request message for the handler: `message` decompressed, which
    /// took `wire_len` bytes on the wire (prefix included).
    pub(crate) fn push_message(&mut self, message: Vec<u8>, wire_len: usize, compressed: bool) {
        self.inbox_bytes += message.len();
        self.inbox.push_back(Inbound {
            message,
            wire_len,
            compressed,
        });
    }

    /// Whether no request message waits for the handler.
    pub(crate) fn inbox_is_empty(&self) -> bool {
        self.inbox.is_empty()
    }
}

/// [`CallState`] with the condition variable its waiters sleep on.
#[derive(Debug, Default)]
pub(crate) struct CallShared {
    state: Mutex<CallState>,
    cond: Condvar,
}

impl CallShared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, CallState> {
        self.state.lock()
    }

    /// Wakes the handler if it waits (for a message, for room, for cancellation).
    pub(crate) fn notify(&self) {
        self.cond.notify_all();
    }

    /// Cancels the call with `status`, unless it already was.
    pub(crate) fn cancel(&self, status: Status) {
        let mut state = self.state.lock();
        if state.cancelled.is_none() {
            state.cancelled = Some(status);
        }
        drop(state);
        self.cond.notify_all();
    }
}

/// Wakes a handler waiting in [`ServerCall::wait_until`]; does nothing once the
/// call is gone.
#[derive(Clone, Debug)]
pub(crate) struct CallWaker(std::sync::Weak<CallShared>);

impl CallWaker {
    /// Whether the call's handler still runs.
    pub(crate) fn is_live(&self) -> bool {
        self.0.strong_count() > 0
    }

    /// Wakes the handler; `false` when the call has ended.
    pub(crate) fn wake(&self) -> bool {
        let Some(shared) = self.0.upgrade() else {
            return false;
        };
        // Taking the lock orders this after a waiter's check of its condition.
        drop(shared.lock());
        shared.notify();
        true
    }
}

/// The I/O thread's reference to a call's shared state: dropping it (the call
/// ended, for whatever reason) cancels the call, so no handler waits forever.
#[derive(Debug)]
pub(crate) struct CallHandle(pub(crate) Arc<CallShared>);

impl Drop for CallHandle {
    fn drop(&mut self) {
        self.0.cancel(Status::cancelled("the call ended"));
    }
}

/// Where a call pokes the I/O thread.
#[derive(Clone)]
pub(crate) struct Poker {
    pub(crate) io: IoSender,
    pub(crate) conn: Token,
    pub(crate) stream: StreamId,
}

impl Poker {
    fn poke(&self) {
        // If the I/O thread is gone, the call was cancelled when its state dropped.
        let _ = self.io.send(ToIo::Poke {
            conn: self.conn,
            stream: self.stream,
        });
    }
}

/// One call of any kind (server-streaming, client-streaming or bidirectional) as
/// its handler sees it, on the worker thread that runs the handler.
///
/// The handler reads request messages with [`recv`](ServerCall::recv), writes
/// response messages with [`send`](ServerCall::send), and returns the call's
/// status: `Ok(())` for OK, or an error [`Status`]. The status goes in the
/// trailers with the metadata of [`set_trailers`](ServerCall::set_trailers).
/// Response headers go out before the first message, or with
/// [`send_headers`](ServerCall::send_headers) to give them metadata; a call that
/// sends neither ends with a Trailers-Only response.
///
/// # Backpressure
///
/// `recv` blocks until a message arrives; the client cannot run more than one
/// HTTP/2 stream window ahead of it. `send` blocks while the client is not reading
/// fast enough (the call's response queue is full), until there is room, the call
/// is cancelled or its deadline passes. Memory per call stays bounded either way.
///
/// # Cancellation
///
/// The call is cancelled when the client resets the stream (CANCELLED), its
/// deadline passes (DEADLINE_EXCEEDED), its connection ends or the server shuts
/// down (CANCELLED), or the request is invalid (such as a message over
/// [`max_message_size`](crate::server::ServerBuilder::max_message_size):
/// RESOURCE_EXHAUSTED). From then on `recv` and `send` fail with that status and
/// [`is_cancelled`](ServerCall::is_cancelled) is true; whatever the handler
/// returns is dropped. A handler holds its worker thread for the whole call, so
/// one that waits for something else should wait with
/// [`wait_cancelled`](ServerCall::wait_cancelled).
///
/// # Examples
///
/// A bidirectional echo that also reports how many messages it saw:
///
/// ```
/// use lb_core::{Metadata, Status};
/// use lb_transport::server::{Server, ServerCall};
///
/// fn echo(call: &mut ServerCall) -> Result<(), Status> {
///     let mut count = 0;
///     while let Some(message) = call.recv()? {
///         call.send(&message)?;
///         count += 1;
///     }
///     let mut trailers = Metadata::new();
///     trailers.insert("x-count", &count.to_string()).expect("valid metadata");
///     call.set_trailers(trailers);
///     Ok(())
/// }
///
/// let server = Server::builder()
///     .bidi_streaming("/demo.Echo/Chat", echo)
///     .bind("127.0.0.1:0")?;
/// server.shutdown(std::time::Duration::from_secs(1));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct ServerCall {
    path: String,
    metadata: Metadata,
    deadline: Option<Instant>,
    shared: Arc<CallShared>,
    poker: Poker,
    headers_sent: bool,
    messages_sent: usize,
    trailers: Metadata,
    /// The encoding response messages are sent with.
    encoding: Encoding,
    /// The client's `grpc-accept-encoding`.
    accept_encoding: Vec<u8>,
    /// The last message [`recv`](Self::recv) returned was compressed on the wire.
    last_compressed: bool,
}

impl ServerCall {
    pub(crate) fn new(
        path: String,
        metadata: Metadata,
        deadline: Option<Instant>,
        shared: Arc<CallShared>,
        poker: Poker,
    ) -> Self {
        Self {
            path,
            metadata,
            deadline,
            shared,
            poker,
            headers_sent: false,
            messages_sent: 0,
            trailers: Metadata::new(),
            encoding: Encoding::Identity,
            accept_encoding: Vec::new(),
            last_compressed: false,
        }
    }

    /// What the client accepts (`grpc-accept-encoding`) and what the server would
    /// like to send (its `response_compression`), before the handler runs.
    pub(crate) fn negotiate(&mut self, accept_encoding: Vec<u8>, preferred: Option<Encoding>) {
        self.accept_encoding = accept_encoding;
        self.set_compression(preferred.unwrap_or(Encoding::Identity));
    }

    /// Compresses the response messages with `encoding` if the client's
    /// `grpc-accept-encoding` lists it (else they go uncompressed). Returns the
    /// encoding in use. Only before the response headers go out (the first
    /// [`send`](Self::send) or [`send_headers`](Self::send_headers)); afterwards it
    /// changes nothing.
    ///
    /// ```
    /// use lb_core::Status;
    /// use lb_transport::grpc::compression::Encoding;
    /// use lb_transport::server::ServerCall;
    /// fn handler(call: &mut ServerCall) -> Result<(), Status> {
    ///     call.set_compression(Encoding::Gzip);
    ///     call.send(&[0u8; 1000])
    /// }
    /// ```
    pub fn set_compression(&mut self, encoding: Encoding) -> Encoding {
        if !self.headers_sent {
            self.encoding = if encoding.accepted_by(&self.accept_encoding) {
                encoding
            } else {
                Encoding::Identity
            };
        }
        self.encoding
    }

    /// The method path, such as `/pkg.Service/Method`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The client's custom metadata (binary values decoded).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// When the client stops waiting (from `grpc-timeout`), if it said.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether the last request message [`recv`](Self::recv) returned was
    /// compressed on the wire (a client may send some messages of a compressed
    /// call uncompressed).
    pub fn last_was_compressed(&self) -> bool {
        self.last_compressed
    }

    /// The next request message: blocks until one arrives. `Ok(None)` once the
    /// client has ended its side of the stream and every message was taken.
    ///
    /// Taking a message gives its bytes of flow-control credit back to the client,
    /// so a handler that stops calling `recv` soon stops the client.
    ///
    /// # Errors
    ///
    /// The call was cancelled (see [`ServerCall`]); the status says why.
    pub fn recv(&mut self) -> Result<Option<Vec<u8>>, Status> {
        let mut state = self.shared.lock();
        loop {
            if let Some(status) = &state.cancelled {
                return Err(status.clone());
            }
            if let Some(Inbound {
                message,
                wire_len,
                compressed,
            }) = state.inbox.pop_front()
            {
                state.inbox_bytes -= message.len();
                state.taken += wire_len;
                self.last_compressed = compressed;
                let poke = state.held > 0 && !state.io_notified;
                state.io_notified |= poke;
                drop(state);
                if poke {
                    self.poker.poke();
                }
                return Ok(Some(message));
            }
            if state.remote_done {
                return Ok(None);
            }
            self.wait(&mut state)?;
        }
    }

    /// Sends one response message (with response headers first, if they have not
    /// gone yet). Blocks while the call's response queue is full, that is while
    /// the client reads slower than the handler writes.
    ///
    /// # Errors
    ///
    /// The call was cancelled, or its deadline passed while waiting for room; or
    /// the message is 4 GiB or larger (INTERNAL), which gRPC cannot carry.
    pub fn send(&mut self, message: &[u8]) -> Result<(), Status> {
        self.send_with(message, SendFlags::default())
    }

    /// [`send`](Self::send) with per-message flags: with
    /// [`SendFlags::uncompressed`] this message goes uncompressed (flag 0) even
    /// when the call's responses are compressed.
    ///
    /// ```
    /// use lb_core::Status;
    /// use lb_core::transport::SendFlags;
    /// use lb_transport::grpc::compression::Encoding;
    /// use lb_transport::server::ServerCall;
    /// fn handler(call: &mut ServerCall) -> Result<(), Status> {
    ///     call.set_compression(Encoding::Gzip);
    ///     call.send(b"compressed if the client accepts gzip")?;
    ///     call.send_with(b"\x89PNG already compressed", SendFlags::uncompressed())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn send_with(&mut self, message: &[u8], flags: SendFlags) -> Result<(), Status> {
        if u32::try_from(message.len()).is_err() {
            return Err(Status::internal(
                "response message is larger than gRPC allows",
            ));
        }
        // Compressed on the handler's thread, not on the I/O thread.
        let mut wire = Vec::new();
        let encoding = if flags.no_compress {
            Encoding::Identity
        } else {
            self.encoding
        };
        message::encode_with(encoding, message, &mut wire);
        let len = wire.len();
        let mut state = self.shared.lock();
        loop {
            if let Some(status) = &state.cancelled {
                return Err(status.clone());
            }
            if state.out_bytes == 0 || state.out_bytes + len <= SEND_QUEUE_BYTES {
                break;
            }
            self.wait(&mut state)?;
        }
        if !self.headers_sent {
            state
                .outbound
                .push_back(Out::Headers(Metadata::new(), self.encoding));
        }
        state.out_bytes += len;
        state.outbound.push_back(Out::Message(wire));
        self.headers_sent = true;
        self.messages_sent += 1;
        self.queued(state);
        Ok(())
    }

    /// Sends the response headers now, with `metadata`. Optional: without it,
    /// headers with no metadata go out before the first message.
    ///
    /// # Errors
    ///
    /// The call was cancelled; or the headers already went (INTERNAL).
    pub fn send_headers(&mut self, metadata: Metadata) -> Result<(), Status> {
        if self.headers_sent {
            return Err(Status::internal("response headers were already sent"));
        }
        let mut state = self.shared.lock();
        if let Some(status) = &state.cancelled {
            return Err(status.clone());
        }
        state
            .outbound
            .push_back(Out::Headers(metadata, self.encoding));
        self.headers_sent = true;
        self.queued(state);
        Ok(())
    }

    /// Sets the metadata sent with the trailers, after the status the handler
    /// returns (OK or not). A later call replaces it.
    pub fn set_trailers(&mut self, metadata: Metadata) {
        self.trailers = metadata;
    }

    /// Sends a per-call ORCA load report (gRFC A51) with the trailers, as
    /// `endpoint-load-metrics-bin`, replacing an earlier one. Call it after
    /// [`set_trailers`](Self::set_trailers), which replaces every trailer.
    ///
    /// ```
    /// use lb_core::orca::OrcaLoadReport;
    /// use lb_transport::server::{Server, ServerCall};
    /// let builder = Server::builder().server_streaming(
    ///     "/demo.Echo/Repeat",
    ///     |request: Vec<u8>, call: &mut ServerCall| {
    ///         call.send(&request)?;
    ///         call.set_load_report(&OrcaLoadReport { cpu_utilization: 0.3, rps_fractional: 40.0, ..Default::default() });
    ///         Ok(())
    ///     },
    /// );
    /// # drop(builder);
    /// ```
    pub fn set_load_report(&mut self, report: &lb_core::orca::OrcaLoadReport) {
        report.write_trailer(&mut self.trailers);
    }

    /// Whether the call was cancelled (see [`ServerCall`]).
    pub fn is_cancelled(&self) -> bool {
        self.shared.lock().cancelled.is_some()
    }

    /// Blocks until the call is cancelled (returns `true`) or `until` passes
    /// (returns `false`).
    pub fn wait_cancelled(&self, until: Instant) -> bool {
        let mut state = self.shared.lock();
        while state.cancelled.is_none() {
            if self.shared.cond.wait_until(&mut state, until).timed_out() {
                return state.cancelled.is_some();
            }
        }
        true
    }

    /// A handle another thread uses to wake this call's handler out of
    /// [`ServerCall::wait_until`].
    pub(crate) fn waker(&self) -> CallWaker {
        CallWaker(Arc::downgrade(&self.shared))
    }

    /// Blocks until `ready()` holds (checked with the call's lock held, so a
    /// [`CallWaker::wake`] after the state it reads changed is never lost).
    ///
    /// # Errors
    ///
    /// The call was cancelled first.
    pub(crate) fn wait_until(&self, mut ready: impl FnMut() -> bool) -> Result<(), Status> {
        let mut state = self.shared.lock();
        loop {
            if let Some(status) = &state.cancelled {
                return Err(status.clone());
            }
            if ready() {
                return Ok(());
            }
            self.shared.cond.wait(&mut state);
        }
    }

    /// How many messages the handler has sent.
    pub(crate) fn messages_sent(&self) -> usize {
        self.messages_sent
    }

    /// Ends the call with the handler's result: the status and the trailers go to
    /// the I/O thread (dropped there if the call already ended).
    pub(crate) fn finish(self, result: Result<(), Status>) {
        let status = result.err().unwrap_or_else(|| Status::new(Code::Ok, ""));
        let mut state = self.shared.lock();
        state
            .outbound
            .push_back(Out::Trailers(status, self.trailers));
        let poke = !state.io_notified;
        state.io_notified = true;
        drop(state);
        if poke {
            self.poker.poke();
        }
    }

    /// After queueing something: pokes the I/O thread unless a poke is pending.
    fn queued(&self, mut state: MutexGuard<'_, CallState>) {
        let poke = !state.io_notified;
        state.io_notified = true;
        drop(state);
        if poke {
            self.poker.poke();
        }
    }

    /// Sleeps until notified; past the deadline, fails with DEADLINE_EXCEEDED
    /// (the I/O thread cancels the call then too; this is the backstop).
    fn wait(&self, state: &mut MutexGuard<'_, CallState>) -> Result<(), Status> {
        match self.deadline {
            None => self.shared.cond.wait(state),
            Some(at) => {
                if self.shared.cond.wait_until(state, at).timed_out() && state.cancelled.is_none() {
                    return Err(Status::deadline_exceeded("deadline exceeded"));
                }
            }
        }
        Ok(())
    }
}

impl fmt::Debug for ServerCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCall")
            .field("path", &self.path)
            .field("metadata", &self.metadata)
            .field("deadline", &self.deadline)
            .field("headers_sent", &self.headers_sent)
            .field("messages_sent", &self.messages_sent)
            .field("cancelled", &self.is_cancelled())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mio::{Poll, Waker};

    use super::*;

    /// A call whose pokes land in a channel the test reads.
    fn call(
        deadline: Option<Instant>,
    ) -> (
        ServerCall,
        Arc<CallShared>,
        crossbeam_channel::Receiver<ToIo>,
        Poll,
    ) {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(1)).unwrap());
        let (tx, rx) = crossbeam_channel::bounded(16);
        let shared = Arc::new(CallShared::default());
        let poker = Poker {
            io: IoSender::new(tx, waker),
            conn: Token(2),
            stream: StreamId::new(1),
        };
        let call = ServerCall::new(
            "/a/b".into(),
            Metadata::new(),
            deadline,
            Arc::clone(&shared),
            poker,
        );
        (call, shared, rx, poll)
    }

    #[test]
    fn a_message_sent_uncompressed_is_flagged_0_on_a_compressed_call() {
        let (mut call, shared, _pokes, _poll) = call(None);
        call.negotiate(b"gzip".to_vec(), Some(Encoding::Gzip));
        call.send(&[3; 500]).unwrap();
        call.send_with(&[3; 500], SendFlags::uncompressed())
            .unwrap();
        let state = shared.lock();
        let flags: Vec<(u8, usize)> = (state.outbound.iter())
            .filter_map(|o| match o {
                Out::Message(wire) => Some((wire[0], wire.len())),
                _ => None,
            })
            .collect();
        assert_eq!(flags.len(), 2);
        assert_eq!(flags[0].0, 1, "compressed");
        assert!(flags[0].1 < 100, "{flags:?}");
        assert_eq!(flags[1], (0, 505), "uncompressed, prefix and all");
    }

    #[test]
    fn recv_takes_queued_messages_then_sees_the_end() {
        let (mut call, shared, pokes, _poll) = call(None);
        {
            let mut state = shared.lock();
            state.push_message(b"one".to_vec(), 8, false);
            state.push_message(b"two".to_vec(), 8, false);
            state.remote_done = true;
            state.held = 3;
        }
        assert_eq!(call.recv().unwrap().as_deref(), Some(&b"one"[..]));
        assert_eq!(call.recv().unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(call.recv().unwrap(), None);
        assert_eq!(shared.lock().taken, 2 * (5 + 3));
        // Credit was held: one poke for the I/O thread, however many messages.
        assert_eq!(pokes.try_iter().count(), 1);
    }

    #[test]
    fn recv_blocks_until_a_message_or_cancellation() {
        let (mut call, shared, _pokes, _poll) = call(None);
        std::thread::scope(|s| {
            let feeder = s.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                shared.lock().push_message(b"late".to_vec(), 9, false);
                shared.notify();
            });
            assert_eq!(call.recv().unwrap().as_deref(), Some(&b"late"[..]));
            feeder.join().unwrap();
        });
        shared.cancel(Status::cancelled("gone"));
        shared.cancel(Status::deadline_exceeded("later causes do not win"));
        assert_eq!(call.recv().unwrap_err().code(), Code::Cancelled);
        assert_eq!(call.send(b"x").unwrap_err().code(), Code::Cancelled);
        assert!(call.is_cancelled());
        assert!(call.wait_cancelled(Instant::now() + Duration::from_secs(60)));
    }

    #[test]
    fn send_blocks_while_the_queue_is_full_and_resumes_when_drained() {
        let (mut call, shared, pokes, _poll) = call(None);
        let big = vec![7u8; SEND_QUEUE_BYTES];
        // A message larger than the budget goes when the queue is empty.
        call.send(&big).unwrap();
        assert_eq!(pokes.try_iter().count(), 1);
        std::thread::scope(|s| {
            let drainer = s.spawn(|| {
                std::thread::sleep(Duration::from_millis(30));
                let mut state = shared.lock();
                // The headers (queued by the first send) and the first message.
                assert_eq!(state.outbound.len(), 2, "the second send waits");
                state.outbound.clear();
                state.out_bytes = 0;
                drop(state);
                shared.notify();
            });
            call.send(b"small").unwrap();
            drainer.join().unwrap();
        });
        assert_eq!(call.messages_sent(), 2);
        assert_eq!(shared.lock().outbound.len(), 1);
    }

    #[test]
    fn a_blocked_send_fails_at_the_deadline() {
        let deadline = Instant::now() + Duration::from_millis(30);
        let (mut call, _shared, _pokes, _poll) = call(Some(deadline));
        call.send(&vec![0; SEND_QUEUE_BYTES]).unwrap();
        let err = call.send(b"no room").unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded);
        assert!(Instant::now() >= deadline);
    }

    #[test]
    fn headers_go_once_and_finish_queues_the_trailers() {
        let (mut call, shared, _pokes, _poll) = call(None);
        call.send_headers(Metadata::new()).unwrap();
        assert_eq!(
            call.send_headers(Metadata::new()).unwrap_err().code(),
            Code::Internal
        );
        let mut trailers = Metadata::new();
        trailers.insert("x-t", "1").unwrap();
        call.set_trailers(trailers);
        call.finish(Err(Status::new(Code::Aborted, "stop")));
        let state = shared.lock();
        assert!(matches!(state.outbound.front(), Some(Out::Headers(..))));
        match state.outbound.back() {
            Some(Out::Trailers(status, md)) => {
                assert_eq!(status.code(), Code::Aborted);
                assert_eq!(md.get("x-t"), Some("1"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_dropped_handle_cancels() {
        let (call, shared, _pokes, _poll) = call(None);
        drop(CallHandle(shared));
        assert!(call.is_cancelled());
        assert!(call.wait_cancelled(Instant::now()));
    }

    #[test]
    fn server_call_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ServerCall>();
    }
}
