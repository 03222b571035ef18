//! One call's stream as the caller sees it: the [`CallStream`] handle that
//! [`H2Transport`](super::H2Transport) returns, the state it shares with the I/O
//! thread, and the ledger that decides how much receive credit the peer gets back.
//!
//! # Sending: decided on the caller's thread
//!
//! [`CallStream::try_send`] never asks the I/O thread. The shared state counts the
//! bytes of this stream (gRPC prefixes included) that were accepted but have not
//! been transmitted yet, in the handle's outbox or in HTTP/2's send buffer. A
//! message is accepted while that count is below [`SEND_BUFFER`] (so an empty
//! stream always takes one message, whatever its size), else it comes back as
//! [`TrySendError::Full`] and the writer is marked as waiting. The I/O thread lowers
//! the count as bytes leave and calls [`CallListener::on_writable`] once, when a
//! waiting stream drops below half of [`SEND_BUFFER`]. So a stream holds at most
//! [`SEND_BUFFER`] plus one message.
//!
//! # Waking the I/O thread: one command per stream at a time
//!
//! Everything the caller does (messages, the end of the request, a cancel, released
//! bytes) is recorded in the shared state; the first change after the I/O thread
//! last looked sends one `Stream` command, and the rest ride along with it. The
//! `Open` command counts as that command: a message sent right after
//! [`open_stream`](lb_core::Connection::open_stream) (a unary call) goes out with
//! the request headers, as one command and one wake-up.
//!
//! # Receiving: credit follows what the application released
//!
//! [`RecvCredit`] gives the peer back the credit of every received byte except those
//! of complete messages the application still holds (delivered to
//! [`CallListener::on_message`] and not yet [`release`](CallStream::release)d):
//! prefixes and the bytes of a message being assembled go back at once, so a
//! message larger than the window cannot stall. Released bytes are batched in the
//! handle and reach the I/O thread once [`release_batch`] bytes have accumulated;
//! that batch is at most a quarter of the stream window, so a reader that released
//! everything always leaves the peer room to send (see [`release_batch`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Instant;

use lb_core::Status;
use lb_core::transport::{
    CallHead, CallListener, CallOutcome, CallStream, SendFlags, TrySendError,
};
use parking_lot::Mutex;

use crate::driver::client::{Command, Handle};
use crate::frame::StreamId;
use crate::grpc::compression::{self, Encoding};
use crate::grpc::message::PREFIX_LEN;

/// How many bytes of one stream may wait to be transmitted before
/// [`CallStream::try_send`] answers [`TrySendError::Full`]: 64 KiB.
pub const SEND_BUFFER: usize = 64 << 10;

/// The most released bytes a handle accumulates before it tells the I/O thread:
/// 16 KiB (less for a small stream window, see [`release_batch`]).
pub const RELEASE_BATCH: usize = 16 << 10;

/// The release batch for a stream receive window of `stream_window` bytes:
/// [`RELEASE_BATCH`], but at most a quarter of the window (and at least 1).
///
/// Why a quarter is safe: HTTP/2 sends a WINDOW_UPDATE once half a window of credit
/// is due, so while the application holds no message, the credit the peer lacks is
/// below a batch plus half a window: under three quarters of it. The peer can always
/// send, and what it sends makes the application release more.
///
/// ```
/// use lb_transport::driver::call::{release_batch, RELEASE_BATCH};
/// assert_eq!(release_batch(1 << 20), RELEASE_BATCH);
/// assert_eq!(release_batch(16 << 10), 4 << 10);
/// ```
pub fn release_batch(stream_window: u32) -> usize {
    RELEASE_BATCH.min(stream_window as usize / 4).max(1)
}

/// Whether a stream with `queued` bytes not yet transmitted takes another message.
/// The one place that decides "has room".
fn has_room(queued: usize) -> bool {
    queued < SEND_BUFFER
}

/// Whether a writer waiting for room should be told, with `queued` bytes left.
fn drained(queued: usize) -> bool {
    queued < SEND_BUFFER / 2
}

/// What the caller asked for since the I/O thread last looked.
#[derive(Debug, Default)]
struct Pending {
    /// Messages accepted and not yet handed to HTTP/2 (without prefixes), each
    /// with whether it was compressed with the call's encoding.
    messages: Vec<(Vec<u8>, bool)>,
    /// End the request after `messages`.
    end: bool,
    cancel: bool,
    /// Bytes of response messages the application released.
    released: usize,
}

#[derive(Debug, Default)]
struct State {
    pending: Pending,
    /// A command will make the I/O thread look at this stream (the `Open`, or a
    /// `Stream` command in the queue).
    scheduled: bool,
    /// Bytes (with prefixes) accepted and not yet transmitted.
    queued: usize,
    /// A `try_send` answered `Full`; `on_writable` is owed.
    want_writable: bool,
    /// The request side is over (`last`, `half_close` or `cancel`).
    send_closed: bool,
    /// `on_close` was called (or is being called).
    closed: bool,
}

/// What the I/O thread takes from a stream when it looks at it.
#[derive(Debug, Default)]
pub(crate) struct Work {
    /// Messages to send, without their prefixes, in order, each with whether it
    /// is compressed (its flag byte).
    pub(crate) messages: Vec<(Vec<u8>, bool)>,
    /// End the request after them.
    pub(crate) end: bool,
    /// Reset the stream: the caller cancelled.
    pub(crate) cancel: bool,
    /// Response bytes the application released.
    pub(crate) released: usize,
}

/// The state of one call shared by its handle (any thread) and the I/O thread.
pub(crate) struct StreamShared {
    /// The connection the call is on.
    pub(crate) conn: u64,
    /// Where the call's events go.
    pub(crate) listener: Arc<dyn CallListener>,
    release_batch: usize,
    /// What request messages are compressed with (on the caller's thread, in
    /// `try_send`).
    encoding: Encoding,
    /// The HTTP/2 stream id once the I/O thread opened it; 0 before.
    id: AtomicU32,
    state: Mutex<State>,
    /// Its caller waits through [`CallStream::drive`] (`CallHead::caller_drives`).
    pub(crate) driven: bool,
    /// A command of this call was left for its caller to take when it drives
    /// (nobody was polling), see [`poller`](super::poller).
    pub(crate) deferred: AtomicBool,
    /// Its caller waits on its bell, not driving; counted in `parked_count`.
    parked: AtomicBool,
    /// The loop's count of parked callers.
    parked_count: Arc<AtomicUsize>,
}

impl StreamShared {
    /// A call on connection `conn` whose `Open` command is about to be sent.
    pub(crate) fn new(
        conn: u64,
        listener: Arc<dyn CallListener>,
        release_batch: usize,
        encoding: Encoding,
        driven: bool,
        parked_count: Arc<AtomicUsize>,
    ) -> Self {
        Self {
            conn,
            listener,
            release_batch,
            encoding,
            id: AtomicU32::new(0),
            state: Mutex::new(State {
                scheduled: true,
                ..State::default()
            }),
            driven,
            deferred: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            parked_count,
        }
    }

    /// Its caller is about to wait on its bell without driving.
    pub(crate) fn set_parked(&self) {
        if !self.parked.swap(true, Ordering::SeqCst) {
            self.parked_count.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Its caller is back (or the call ended).
    pub(crate) fn clear_parked(&self) {
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::SeqCst) {
            self.parked_count.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// The HTTP/2 stream, once opened.
    pub(crate) fn stream_id(&self) -> Option<StreamId> {
        match self.id.load(Ordering::Acquire) {
            0 => None,
            id => Some(StreamId::new(id)),
        }
    }

    /// Records the HTTP/2 stream the call was opened on (I/O thread).
    pub(crate) fn set_stream_id(&self, id: StreamId) {
        self.id.store(id.value(), Ordering::Release);
    }

    /// Takes what the caller asked for since the last look (I/O thread); the next
    /// change sends a new command.
    pub(crate) fn take_work(&self) -> Work {
        let mut state = self.state.lock();
        state.scheduled = false;
        let Pending {
            messages,
            end,
            cancel,
            released,
        } = std::mem::take(&mut state.pending);
        Work {
            messages,
            end,
            cancel,
            released,
        }
    }

    /// `bytes` of this stream were transmitted (I/O thread). Returns whether a
    /// waiting writer is owed [`CallListener::on_writable`] now; the caller calls it,
    /// holding no lock. The one place that detects "drained".
    pub(crate) fn transmitted(&self, bytes: usize) -> bool {
        let mut state = self.state.lock();
        state.queued = state.queued.saturating_sub(bytes);
        if state.want_writable && !state.closed && drained(state.queued) {
            state.want_writable = false;
            return true;
        }
        false
    }

    /// Ends the call with `outcome`, unless it already ended: nothing is sent
    /// afterwards, and the listener hears `on_close` (on this thread, holding no
    /// lock). Returns whether this call ended it.
    pub(crate) fn close(&self, outcome: CallOutcome) -> bool {
        {
            let mut state = self.state.lock();
            if state.closed {
                return false;
            }
            state.closed = true;
            state.send_closed = true;
            state.want_writable = false;
            state.pending = Pending::default();
        }
        self.clear_parked();
        self.listener.on_close(outcome);
        true
    }
}

impl std::fmt::Debug for StreamShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamShared")
            .field("conn", &self.conn)
            .field("id", &self.id)
            .field("state", &*self.state.lock())
            .finish_non_exhaustive()
    }
}

/// An `Open` command's call: if the command is dropped unprocessed (the I/O thread
/// is gone), the call ends with UNAVAILABLE, so its listener always hears
/// `on_close`.
pub(crate) struct Opening {
    head: CallHead,
    stream: Option<Arc<StreamShared>>,
}

impl Opening {
    pub(crate) fn new(head: CallHead, stream: Arc<StreamShared>) -> Self {
        Self {
            head,
            stream: Some(stream),
        }
    }

    /// The head and the call, for the I/O thread to open.
    pub(crate) fn take(mut self) -> (CallHead, Arc<StreamShared>) {
        let head = std::mem::replace(&mut self.head, CallHead::new(String::new()));
        let stream = self.stream.take().expect("taken once");
        (head, stream)
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            stream.close(CallOutcome::not_sent(Status::unavailable(
                "transport is shut down",
            )));
        }
    }
}

/// The [`CallStream`] of a call on an [`H2Transport`](super::H2Transport)
/// connection. Dropping it does not cancel the call.
pub(crate) struct StreamHandle {
    shared: Arc<StreamShared>,
    handle: Handle,
}

impl StreamHandle {
    pub(crate) fn new(shared: Arc<StreamShared>, handle: Handle) -> Self {
        Self { shared, handle }
    }

    /// Makes sure the I/O thread looks at the stream: sends a command unless one is
    /// already on its way. Call without holding the state lock.
    ///
    /// `urgent`: the change is one the peer waits for (receive credit), so it is
    /// never left for the caller's next drive.
    fn schedule(&self, urgent: bool) {
        // A failed send means the I/O thread is gone; it ended every call it had,
        // and a dropped `Open` ends its own.
        let command = Command::Stream(self.shared.clone());
        let _ = if urgent {
            self.handle.send(command)
        } else {
            self.handle.send_for(command, &self.shared)
        };
    }

    /// Runs `change` on the state; schedules the I/O thread if `change` says so and
    /// no command is on its way yet.
    fn update<R>(&self, urgent: bool, change: impl FnOnce(&mut State) -> (R, bool)) -> R {
        let (result, schedule) = {
            let mut state = self.shared.state.lock();
            let (result, wants) = change(&mut state);
            let schedule = wants && !state.scheduled;
            if schedule {
                state.scheduled = true;
            }
            (result, schedule)
        };
        if schedule {
            self.schedule(urgent);
        }
        result
    }
}

impl CallStream for StreamHandle {
    fn try_send(&self, message: Vec<u8>, last: bool) -> Result<(), TrySendError> {
        self.try_send_with(message, last, SendFlags::default())
    }

    fn try_send_with(
        &self,
        message: Vec<u8>,
        last: bool,
        flags: SendFlags,
    ) -> Result<(), TrySendError> {
        self.update(false, |state| {
            if state.send_closed {
                return (Err(TrySendError::Closed(message)), false);
            }
            if !has_room(state.queued) {
                state.want_writable = true;
                return (Err(TrySendError::Full(message)), false);
            }
            // Compressed here, on the caller's thread, not on the I/O thread; what
            // counts towards the bound is what goes on the wire.
            let compressed = self.shared.encoding.is_compressed() && !flags.no_compress;
            let message = if compressed {
                compression::compress(self.shared.encoding, &message)
            } else {
                message
            };
            state.queued += PREFIX_LEN + message.len();
            state.pending.messages.push((message, compressed));
            if last {
                state.pending.end = true;
                state.send_closed = true;
            }
            (Ok(()), true)
        })
    }

    fn half_close(&self) {
        self.update(false, |state| {
            if state.send_closed {
                return ((), false);
            }
            state.send_closed = true;
            state.pending.end = true;
            ((), true)
        });
    }

    fn cancel(&self) {
        // A caller that cancels rarely waits for the call again: the reset goes now.
        self.update(true, |state| {
            if state.closed || state.pending.cancel {
                return ((), false);
            }
            state.pending.cancel = true;
            state.send_closed = true;
            ((), true)
        });
    }

    fn release(&self, bytes: usize) {
        let batch = self.shared.release_batch;
        self.update(true, |state| {
            if state.closed || bytes == 0 {
                return ((), false);
            }
            state.pending.released = state.pending.released.saturating_add(bytes);
            ((), state.pending.released >= batch)
        });
    }

    fn drive(&self, until: &mut dyn FnMut() -> bool, deadline: Option<Instant>) -> bool {
        self.handle.shared.drive(&self.shared, until, deadline)
    }
}

impl std::fmt::Debug for StreamHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamHandle")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

/// The receive-credit ledger of one stream (I/O thread): how much of the DATA
/// received may be given back to the peer as flow-control credit.
///
/// The target is everything received except what the application holds (messages
/// delivered and not released). Credit only ever grows, so bytes credited while
/// their message was being assembled are owed back: when that message is delivered,
/// no credit goes out until the application has released as much.
///
/// ```
/// use lb_transport::driver::call::RecvCredit;
/// let mut c = RecvCredit::default();
/// // 5 prefix bytes + a 10-byte message in one DATA frame, delivered: only the
/// // prefix goes back.
/// assert_eq!(c.on_data(15, 10), 5);
/// assert_eq!(c.on_release(10), 10);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecvCredit {
    received: u64,
    held: u64,
    credited: u64,
}

impl RecvCredit {
    /// `len` bytes of DATA arrived, completing messages of `delivered` bytes in all
    /// (handed to the application). Returns the credit to give back now.
    pub fn on_data(&mut self, len: usize, delivered: usize) -> usize {
        self.received += len as u64;
        self.held += delivered as u64;
        self.settle()
    }

    /// The application released `bytes` bytes of messages. Returns the credit to
    /// give back now.
    pub fn on_release(&mut self, bytes: usize) -> usize {
        self.held = self.held.saturating_sub(bytes as u64);
        self.settle()
    }

    /// Bytes of delivered messages the application still holds, as far as the
    /// I/O thread knows.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// Bytes received and not yet credited.
    pub fn uncredited(&self) -> u64 {
        self.received - self.credited
    }

    fn settle(&mut self) -> usize {
        let target = self.received.saturating_sub(self.held);
        if target <= self.credited {
            return 0;
        }
        let due = target - self.credited;
        self.credited = target;
        due as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_holds_back_exactly_what_the_application_holds() {
        let mut c = RecvCredit::default();
        // A 100-byte message split over three frames: prefix + 30, 40, 30.
        assert_eq!(c.on_data(35, 0), 35, "partial bytes go back at once");
        assert_eq!(c.on_data(40, 0), 40);
        // The last frame completes it: 100 bytes held, 75 already credited, so
        // nothing goes back until the application releases 75 more than owed.
        assert_eq!(c.on_data(30, 100), 0);
        assert_eq!(c.uncredited(), 30);
        assert_eq!(c.on_release(50), 0, "still holds 50 > 30 uncredited");
        assert_eq!(
            c.on_release(50),
            30,
            "holds nothing: everything is credited"
        );
        assert_eq!(c.uncredited(), 0);
    }

    #[test]
    fn credit_never_exceeds_what_was_received() {
        let mut c = RecvCredit::default();
        assert_eq!(c.on_data(15, 10), 5);
        assert_eq!(c.on_release(1000), 10, "over-release is clamped");
        assert_eq!(c.on_data(15, 10), 5);
        assert_eq!(c.held(), 10);
        assert_eq!(c.on_release(10), 10);
        assert_eq!(c.uncredited(), 0);
    }

    #[test]
    fn release_batch_is_at_most_a_quarter_window() {
        assert_eq!(release_batch(1 << 20), RELEASE_BATCH);
        assert_eq!(release_batch(65_535), 16_383);
        assert_eq!(release_batch(3), 1);
    }

    #[test]
    fn room_and_drain_thresholds() {
        assert!(has_room(0));
        assert!(has_room(SEND_BUFFER - 1));
        assert!(!has_room(SEND_BUFFER));
        assert!(!drained(SEND_BUFFER / 2));
        assert!(drained(SEND_BUFFER / 2 - 1));
    }
}
