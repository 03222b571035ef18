//! Calls of every kind on one pipeline: pick once, open a stream on the picked
//! subchannel's connection, carry messages both ways with backpressure, and end
//! with one status. Unary, server-streaming and client-streaming calls are thin
//! wrappers over the bidi [`Call`].
//!
//! ```text
//!   start: loop {                                  (caller's thread, blocking)
//!     deadline passed?                       ──> DEADLINE_EXCEEDED (+ latest balancer error)
//!     pick(current picker):
//!       Pick(sc): sc has a live connection?  ──> open_stream(head, listener): the call
//!                 no connection (race)       ──> wait for the next picker
//!       Queue                                ──> wait for the next picker
//!       Fail(status): fail-fast              ──> status
//!                     wait-for-ready         ──> remember it, wait for the next picker
//!       Drop(status)                         ──> status
//!   }
//!   send ──> try_send; Full ──> wait for on_writable (or the deadline)
//!   recv <── messages queued by the listener; release(bytes) once taken
//!   the attempt ends unprocessed before the call committed ──> pick again, replay
//!   the messages sent so far (transparent retry)
//!   the attempt fails, not committed, and the method has a retryPolicy
//!     ──> retry::decide: wait out the backoff (or the server's pushback) on the
//!         caller's thread, then pick again and replay (gRFC A6)
//!   the method has a hedgingPolicy ──> drive_hedges, whenever a caller looks:
//!     another attempt every hedgingDelay (at once after a non-fatal failure), each
//!     picked anew and fed the kept messages by `pump`; the first to answer
//!     (Events::admit, on the transport's thread) wins, the others are cancelled
//! ```
//!
//! # Bounds
//!
//! - Received messages wait in the call's queue, filled by the transport's thread.
//!   The queue holds at most the stream's receive window in bytes (plus the message
//!   being assembled): the transport gives the peer credit back only when
//!   [`Call::recv`] takes a message, so a slow reader stops the peer.
//! - Sent messages go straight to the transport, which takes them only while the
//!   stream has room ([`crate::transport::CallStream::try_send`]); a blocked
//!   [`Call::send`] waits for `on_writable` or the deadline.
//! - Until a call commits (response headers or a message arrive, or the messages
//!   sent would go over the call's retry buffer, [`RETRY_BUFFER_LIMIT`] by default,
//!   or the channel's, [`CHANNEL_RETRY_BUFFER_LIMIT`]) the messages sent are kept
//!   to replay on a retry; then they are dropped.
//!
//! [`RETRY_BUFFER_LIMIT`]: super::RETRY_BUFFER_LIMIT
//! [`CHANNEL_RETRY_BUFFER_LIMIT`]: super::CHANNEL_RETRY_BUFFER_LIMIT
//!
//! Statuses from pickers are passed through [`Status::sanitized_for_control_plane`].
//! Waiting never holds a lock: a waiter selects on the snapshot it read (replaced
//! when a picker is published, the clock jumps or the channel closes), on the call's
//! doorbells (rung by the transport's thread) and on a real-time timer for its
//! deadline (never armed with a clock that moves by jumps).

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, at, never, select};
use parking_lot::Mutex;

use super::call_metrics::{AttemptMetrics, CallMetrics};
use super::cell::Snapshot;
use super::core::{ActiveCall, Shared, closed_status};
use super::pool::{Attempt, ScBackend};
use super::retry::{
    CodeSet, Decision, HedgingPolicy, PREVIOUS_ATTEMPTS_HEADER, Pushback, RetryPolicy, RetryState,
    Throttler, pushback,
};
use super::selector::CallConfig;
use super::service_config::MethodConfig;
use crate::metadata::Metadata;
use crate::picker::{CallCompletion, CompletionCallback, PickInfo, PickResult};
use crate::status::{Code, Status};
use crate::transport::{CallHead, CallListener, CallOutcome, CallStream, SendFlags, TrySendError};

/// How many times one call is sent again after the transport reports that the
/// server never saw it.
pub const MAX_TRANSPARENT_RETRIES: u32 = 32;

/// Per-call settings.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lb_core::channel::CallOptions;
/// let opts = CallOptions { wait_for_ready: Some(true), ..CallOptions::default() }
///     .with_timeout(Duration::from_secs(2));
/// assert_eq!(opts.timeout, Some(Duration::from_secs(2)));
/// ```
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// When the call must end, on the channel's clock.
    pub deadline: Option<Instant>,
    /// How long the call may take from its start; with `deadline`, the earlier wins.
    pub timeout: Option<Duration>,
    /// Metadata sent with the request.
    pub metadata: Metadata,
    /// Wait for a ready connection instead of failing while the channel is in
    /// TRANSIENT_FAILURE. `None` takes the service config's `waitForReady`, else
    /// `false`.
    pub wait_for_ready: Option<bool>,
    /// Compresses the request messages with this encoding (`grpc-encoding`, such
    /// as `"gzip"`), instead of the channel's
    /// [`send_compression`](super::ChannelBuilder::send_compression);
    /// `Some("identity")` turns compression off for this call. Which names work is
    /// up to the transport (lb-transport: `gzip`, `deflate`, `identity`).
    pub compression: Option<String>,
}

impl CallOptions {
    /// These options with `deadline`.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// These options with `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// These options with `metadata`.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// These options with wait-for-ready set.
    pub fn with_wait_for_ready(mut self, wait_for_ready: bool) -> Self {
        self.wait_for_ready = Some(wait_for_ready);
        self
    }

    /// These options compressing request messages with `encoding` (see
    /// [`compression`](Self::compression)).
    ///
    /// ```
    /// use lb_core::channel::CallOptions;
    /// let opts = CallOptions::default().with_compression("gzip");
    /// assert_eq!(opts.compression.as_deref(), Some("gzip"));
    /// ```
    pub fn with_compression(mut self, encoding: impl Into<String>) -> Self {
        self.compression = Some(encoding.into());
        self
    }
}

/// Turns typed messages into bytes and back, for
/// [`Channel::unary_typed`](super::Channel::unary_typed).
///
/// # Examples
///
/// ```
/// use lb_core::Status;
/// use lb_core::channel::Codec;
/// struct Utf8;
/// impl Codec for Utf8 {
///     type Request = String;
///     type Response = String;
///     fn encode(&self, request: &String) -> Vec<u8> { request.as_bytes().to_vec() }
///     fn decode(&self, bytes: &[u8]) -> Result<String, Status> {
///         String::from_utf8(bytes.to_vec()).map_err(|e| Status::internal(e.to_string()))
///     }
/// }
/// assert_eq!(Utf8.decode(&Utf8.encode(&"hi".to_string()))?, "hi");
/// # Ok::<(), Status>(())
/// ```
pub trait Codec {
    /// The request type.
    type Request;
    /// The response type.
    type Response;

    /// Serializes a request.
    fn encode(&self, request: &Self::Request) -> Vec<u8>;

    /// Parses a response.
    ///
    /// # Errors
    ///
    /// The bytes are not a valid response; gRPC reports this as INTERNAL.
    fn decode(&self, bytes: &[u8]) -> Result<Self::Response, Status>;
}

/// What the call knows about its deadline and waiting mode when it starts.
struct PlanInput {
    start: Instant,
    /// The earlier of the call's own deadline and timeout.
    own_deadline: Option<Instant>,
    own_wait_for_ready: Option<bool>,
    default_timeout: Option<Duration>,
}

impl PlanInput {
    /// The deadline and wait-for-ready mode under the current method configs.
    fn effective(&self, config: Option<&MethodConfig>) -> (Option<Instant>, bool) {
        let mut deadline = self.own_deadline;
        if let Some(timeout) = config.and_then(|c| c.timeout) {
            deadline = earlier(deadline, Some(self.start + timeout));
        }
        if deadline.is_none() {
            deadline = self.default_timeout.map(|t| self.start + t);
        }
        let wait_for_ready = self
            .own_wait_for_ready
            .or(config.and_then(|c| c.wait_for_ready))
            .unwrap_or(false);
        (deadline, wait_for_ready)
    }
}

fn earlier(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The call's deadline, fixed by the snapshot its first attempt was picked with.
struct Plan {
    input: PlanInput,
    start: Instant,
    fixed_deadline: std::sync::OnceLock<Option<Instant>>,
    /// What the method config says, also fixed by the first attempt's snapshot.
    fixed: std::sync::OnceLock<Fixed>,
    /// What the channel's config selector chose, asked once, at the first look
    /// at a snapshot that has one; kept (with its hold) until the call ends.
    selected: std::sync::OnceLock<CallConfig>,
}

/// The method config's part in a call, read once, at its first attempt.
struct Fixed {
    /// The retry or hedging policy.
    policy: AttemptPolicy,
    /// The channel's retry throttle, when the method has a policy.
    throttler: Option<Arc<Throttler>>,
    /// The largest message to send and to receive: the channel's limits, or the
    /// method config's where smaller.
    limits: (usize, usize),
}

/// How a call makes more than one attempt (besides transparent retries).
#[derive(Debug)]
enum AttemptPolicy {
    None,
    Retry(RetryPolicy),
    Hedge(HedgingPolicy),
}

/// A unary call's response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnaryResponse {
    /// The serialized response message.
    pub message: Vec<u8>,
    /// The response headers' metadata.
    pub headers: Metadata,
    /// The trailers' metadata.
    pub trailers: Metadata,
}

/// What the transport's thread tells a call, guarded by one lock.
struct Events {
    /// The attempt whose events count; events of an abandoned attempt are ignored.
    attempt: u64,
    /// The current attempt's stream.
    stream: Arc<dyn CallStream>,
    headers: Option<Metadata>,
    messages: VecDeque<Vec<u8>>,
    /// The call's outcome: the transport's, or one decided here (deadline,
    /// cancellation, a message over the limit), whichever came first.
    outcome: Option<CallOutcome>,
    /// Response headers or a message arrived, or the replay buffer overflowed: no
    /// retry any more.
    committed: bool,
    /// `outcome` is the call's for good: no retry follows.
    settled: bool,
    /// A hedged call's state until it commits.
    hedge: Option<HedgeEvents>,
    /// A caller waits in [`Call::headers`]: the headers' arrival rings the receive
    /// bell (otherwise only messages and the outcome do, sparing a waiter in
    /// `recv` a wake-up for nothing).
    headers_wanted: bool,
}

/// What a hedged call's listeners share until it commits: before that no attempt
/// is `Events::attempt`, and the first to answer (headers, a message, or a status
/// that is OK or fatal) becomes it; the others are cancelled.
struct HedgeEvents {
    /// The codes after which the other attempts go on.
    non_fatal: CodeSet,
    /// The attempts running, with their streams.
    live: Vec<(u64, Arc<dyn CallStream>)>,
    /// The latest non-fatal failure: the call's status if no attempt succeeds.
    failure: Option<CallOutcome>,
    /// A non-fatal failure arrived since the driver last looked: the next attempt
    /// starts now (or after the server's pushback).
    kick: bool,
    /// Failures the server never saw: each allows one more attempt.
    unprocessed: u32,
    /// When the driver starts the next attempt (waiters wake then).
    next_at: Option<Instant>,
}

impl Events {
    /// Whether events of `attempt` count. A hedged call that has not committed
    /// commits to `attempt` if it is one of its live attempts; the others' streams
    /// are put in `losers`, to cancel once the lock is released.
    fn admit(&mut self, attempt: u64, losers: &mut Vec<Arc<dyn CallStream>>) -> bool {
        if self.attempt == attempt {
            return true;
        }
        if self.committed {
            return false;
        }
        let Some(hedge) = self.hedge.as_mut() else {
            return false;
        };
        let Some(i) = hedge.live.iter().position(|(id, _)| *id == attempt) else {
            return false;
        };
        let (_, stream) = hedge.live.swap_remove(i);
        losers.extend(hedge.live.drain(..).map(|(_, s)| s));
        hedge.next_at = None;
        self.attempt = attempt;
        self.stream = stream;
        self.committed = true;
        true
    }
}

/// The state a call shares with its attempts' listeners.
struct CallState {
    events: Mutex<Events>,
    /// Rung (without blocking: capacity 1) when headers, a message or the outcome
    /// arrive.
    recv_bell: PooledBell,
    /// Rung when the stream can take more, or the outcome arrives. Made by the
    /// first sender that has to wait (most calls never do), see
    /// [`CallState::send_bell`].
    send_bell: std::sync::OnceLock<(Sender<()>, Receiver<()>)>,
}

impl CallState {
    /// The send doorbell, made on first use. Returns whether this call made it: a
    /// ring before it existed was lost, so the caller looks again (tries to send)
    /// before waiting on it.
    fn send_bell(&self) -> (&Receiver<()>, bool) {
        let mut fresh = false;
        let bell = self.send_bell.get_or_init(|| {
            fresh = true;
            crossbeam_channel::bounded(1)
        });
        (&bell.1, fresh)
    }

    fn ring_send(&self) {
        if let Some(bell) = self.send_bell.get() {
            let _ = bell.0.try_send(());
        }
    }
}

/// A doorbell: a channel of capacity 1, rung without blocking.
type Bell = (Sender<()>, Receiver<()>);

/// How many doorbells of ended calls wait for the next calls to reuse them (making
/// a channel costs more than the rest of a small call's setup).
const BELL_POOL: usize = 256;

fn bell_pool() -> &'static (Sender<Bell>, Receiver<Bell>) {
    static POOL: std::sync::OnceLock<(Sender<Bell>, Receiver<Bell>)> = std::sync::OnceLock::new();
    POOL.get_or_init(|| crossbeam_channel::bounded(BELL_POOL))
}

/// A call's receive doorbell, taken from the pool and given back, silent, when the
/// call's state is dropped (then nothing can ring it any more).
struct PooledBell(Option<Bell>);

impl PooledBell {
    fn take() -> Self {
        let bell = bell_pool()
            .1
            .try_recv()
            .unwrap_or_else(|_| crossbeam_channel::bounded(1));
        Self(Some(bell))
    }

    fn ring(&self) {
        if let Some(bell) = &self.0 {
            ring(bell);
        }
    }

    fn receiver(&self) -> &Receiver<()> {
        &self.0.as_ref().expect("held until drop").1
    }
}

impl Drop for PooledBell {
    fn drop(&mut self) {
        if let Some(bell) = self.0.take() {
            let _ = bell.1.try_recv();
            let _ = bell_pool().0.try_send(bell);
        }
    }
}

fn ring(bell: &Bell) {
    let _ = bell.0.try_send(());
}

/// One attempt's listener.
struct AttemptListener {
    call: Arc<CallState>,
    attempt: u64,
    /// The connection's in-flight count, released when the attempt ends.
    held: Arc<Attempt>,
    on_complete: Mutex<Option<Completion>>,
    /// gRFC A66's attempt metrics (`None` without a recorder).
    metrics: Option<AttemptMetrics>,
}

/// The stream of a call with no attempt open: one shared handle, so a call does
/// not allocate for it.
fn closed_stream() -> Arc<dyn CallStream> {
    static CLOSED: std::sync::OnceLock<Arc<dyn CallStream>> = std::sync::OnceLock::new();
    CLOSED
        .get_or_init(|| Arc::new(crate::transport::ClosedStream))
        .clone()
}

fn cancel_all(streams: Vec<Arc<dyn CallStream>>) {
    for stream in streams {
        stream.cancel();
    }
}

impl CallListener for AttemptListener {
    fn on_headers(&self, headers: Metadata) {
        let mut losers = Vec::new();
        let wanted = {
            let mut ev = self.call.events.lock();
            if ev.outcome.is_some() || !ev.admit(self.attempt, &mut losers) {
                return;
            }
            ev.headers = Some(headers);
            ev.committed = true;
            ev.headers_wanted
        };
        cancel_all(losers);
        if wanted {
            self.call.recv_bell.ring();
        }
        self.call.ring_send();
    }

    fn on_message(&self, message: Vec<u8>) {
        if let Some(m) = &self.metrics {
            m.received(message.len());
        }
        let mut losers = Vec::new();
        {
            let mut ev = self.call.events.lock();
            if ev.outcome.is_some() || !ev.admit(self.attempt, &mut losers) {
                return;
            }
            ev.headers.get_or_insert_with(Metadata::new);
            ev.messages.push_back(message);
            ev.committed = true;
        }
        cancel_all(losers);
        self.call.recv_bell.ring();
        self.call.ring_send();
    }

    fn on_writable(&self) {
        self.call.ring_send();
    }

    fn on_close(&self, outcome: CallOutcome) {
        self.held.channelz().call_finished(outcome.status.is_ok());
        if let Some(m) = &self.metrics {
            m.end(&outcome.status);
        }
        let mut losers = Vec::new();
        let status = {
            let mut ev = self.call.events.lock();
            let ev = &mut *ev;
            let live = !ev.committed
                && ev.outcome.is_none()
                && ev
                    .hedge
                    .as_ref()
                    .is_some_and(|h| h.live.iter().any(|(id, _)| *id == self.attempt));
            if live {
                let hedge = ev.hedge.as_mut().expect("checked above");
                let code = outcome.status.code();
                if outcome.progress.is_unprocessed() || hedge.non_fatal.contains(code) {
                    // Another attempt may still answer; the driver may start one.
                    hedge.live.retain(|(id, _)| *id != self.attempt);
                    if outcome.progress.is_unprocessed() {
                        hedge.unprocessed += 1;
                    }
                    hedge.kick = true;
                    hedge.failure = Some(outcome.clone());
                } else {
                    // OK or fatal: this attempt's status is the call's.
                    ev.admit(self.attempt, &mut losers);
                    ev.outcome = Some(outcome.clone());
                }
                outcome.status.clone()
            } else if ev.attempt != self.attempt {
                outcome.status.clone()
            } else if let Some(decided) = &ev.outcome {
                decided.status.clone()
            } else {
                let status = outcome.status.clone();
                ev.outcome = Some(outcome);
                status
            }
        };
        cancel_all(losers);
        self.held.release();
        if let Some(done) = self.on_complete.lock().take() {
            done.finish(&status);
        }
        self.call.recv_bell.ring();
        self.call.ring_send();
    }
}

/// The sending side's bookkeeping, guarded by its own lock (taken before
/// `events` when both are needed, never after).
struct Sending {
    /// Messages sent before the call committed, for a retry, with their flags.
    replay: Vec<(Vec<u8>, SendFlags)>,
    /// Their bytes, reserved in the channel's retry buffer.
    replay_bytes: usize,
    /// The request side has ended (or the call was started with its last message).
    done: bool,
    /// Transparent retries so far.
    retries: u32,
    /// Retries under the retry policy so far.
    retry: RetryState,
    next_attempt: u64,
    /// A hedged call's attempts and how far each has taken `replay`, until the
    /// call commits and its attempt has caught up.
    cursors: Vec<Cursor>,
    /// Hedged attempts started (transparent ones not counted).
    hedges: u32,
    /// No more hedged attempts: the server's pushback or the throttle said so.
    hedges_stopped: bool,
}

/// One hedged attempt's progress through the messages kept for replay.
struct Cursor {
    attempt: u64,
    stream: Arc<dyn CallStream>,
    /// How many of `Sending::replay` it has taken.
    sent: usize,
    /// It has been given the end of the request.
    closed: bool,
}

/// What every handle of one call shares.
struct CallInner {
    active: ActiveCall,
    method: Arc<str>,
    metadata: Metadata,
    /// The request messages' encoding, if the call or the channel chose one.
    compression: Option<String>,
    plan: Plan,
    state: Arc<CallState>,
    sending: Mutex<Sending>,
    /// The latest error a picker gave while the call waited (wait-for-ready).
    latest_pick_error: Mutex<Option<Status>>,
    /// An iterator over the responses has returned the end (or the error): it
    /// returns `None` from then on.
    iter_done: std::sync::atomic::AtomicBool,
    /// gRFC A66's call metrics (`None` without a recorder).
    metrics: Option<Arc<CallMetrics>>,
}

/// A call in progress, of any kind: send request messages, receive response
/// messages, end with a status. Made by [`Channel::bidi_streaming`]; the other kinds
/// wrap it.
///
/// Dropping a call (every handle of it, after [`Call::split`]) before it ended
/// cancels it: the stream is reset (RST_STREAM CANCEL) and the server sees the
/// cancellation.
///
/// [`Channel::bidi_streaming`]: super::Channel::bidi_streaming
pub struct Call {
    inner: Arc<CallInner>,
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("method", &self.inner.method)
            .finish_non_exhaustive()
    }
}

/// How [`Call::wait`] ended.
enum Woke {
    /// A doorbell rang or something changed: look again.
    Again,
    /// The deadline passed (the call now has its outcome).
    Expired,
}

impl CallInner {
    fn shared(&self) -> &Arc<Shared> {
        self.active.shared()
    }

    /// The largest message to send and to receive (see [`Fixed::limits`]).
    fn limits(&self) -> (usize, usize) {
        let defaults = &self.shared().defaults;
        self.plan.fixed.get().map(|f| f.limits).unwrap_or((
            defaults.max_send_message_size,
            defaults.max_receive_message_size,
        ))
    }

    /// The effective deadline, fixed when the first attempt started.
    fn deadline(&self) -> Option<Instant> {
        self.plan.fixed_deadline.get().copied().flatten()
    }

    /// What the config selector chose for the call: asked on the first snapshot
    /// that has a selector, then kept. `None` while there is no selector.
    fn select(&self, snapshot: &Snapshot) -> Result<Option<&CallConfig>, Status> {
        if let Some(selected) = self.plan.selected.get() {
            return Ok(Some(selected));
        }
        let Some(selector) = &snapshot.selector else {
            return Ok(None);
        };
        let chosen = selector.0.select(&self.method, &self.metadata)?;
        Ok(Some(self.plan.selected.get_or_init(|| chosen)))
    }

    /// Picks and opens a stream (the first attempt, or a transparent retry).
    /// Called with `sending` locked.
    fn open_attempt(self: &Arc<Self>, sending: &mut Sending) -> Result<(), Status> {
        let shared = self.shared();
        let plain = PickInfo::new(&self.method, &self.metadata);
        loop {
            let snapshot = shared.cell.load();
            if shared.is_closed() {
                return Err(closed_status());
            }
            let (config, info) = match self.select(&snapshot)? {
                Some(selected) => (
                    selected.method_config.as_deref(),
                    plain.with_call(&selected.attributes, selected.request_hash),
                ),
                None => (snapshot.methods.lookup(&self.method), plain),
            };
            let (mut deadline, wait_for_ready) = self.plan.input.effective(config);
            if let Some(fixed) = self.plan.fixed_deadline.get() {
                deadline = *fixed;
            }
            let start = self.plan.start;
            let expired = || {
                let now = shared.clock.now();
                deadline.is_some_and(|d| now >= d).then(|| now - start)
            };
            let latest = || self.latest_pick_error.lock().clone();
            let pick = match snapshot.picker.pick(&info) {
                PickResult::Pick(pick) => pick,
                PickResult::Queue => {
                    if let Some(waited) = expired() {
                        return Err(expired_status(deadline, start, waited, latest().as_ref()));
                    }
                    wait_for_picker(shared, &snapshot, deadline);
                    continue;
                }
                PickResult::Fail(status) if wait_for_ready => {
                    *self.latest_pick_error.lock() = Some(status);
                    if let Some(waited) = expired() {
                        return Err(expired_status(deadline, start, waited, latest().as_ref()));
                    }
                    wait_for_picker(shared, &snapshot, deadline);
                    continue;
                }
                PickResult::Fail(status) | PickResult::Drop(status) => {
                    return Err(status.sanitized_for_control_plane());
                }
            };
            // The clock is read only for picks that want to know the duration.
            let on_complete = pick.on_complete.map(|callback| Completion {
                callback,
                picked_at: shared.clock.now(),
                clock: shared.clock.clone(),
            });
            let Some(backend) = pick
                .subchannel
                .backend()
                .as_any()
                .downcast_ref::<ScBackend>()
            else {
                let status = Status::internal("the policy picked a subchannel of another channel");
                complete(on_complete, &status);
                return Err(status);
            };
            let ready = backend.ready();
            let Some((attempt, connection)) =
                ready.as_ref().and_then(|a| a.acquire().map(|c| (a, c)))
            else {
                // Picked a subchannel whose connection just went away: the policy is
                // about to hear of it; wait for its next picker.
                drop(ready);
                complete(
                    on_complete,
                    &Status::unavailable("not sent: the picked subchannel has no connection"),
                );
                if let Some(waited) = expired() {
                    return Err(expired_status(deadline, start, waited, latest().as_ref()));
                }
                wait_for_picker(shared, &snapshot, deadline);
                continue;
            };
            if let Some(waited) = expired() {
                attempt.release();
                drop(ready);
                let status = expired_status(deadline, start, waited, latest().as_ref());
                complete(on_complete, &status);
                return Err(status);
            }
            let deadline = *self.plan.fixed_deadline.get_or_init(|| deadline);
            let fixed = self.plan.fixed.get_or_init(|| {
                let defaults = &shared.defaults;
                let limit = |channel: usize, method: Option<usize>| {
                    method.map_or(channel, |m| m.min(channel))
                };
                let policy = match config.filter(|_| defaults.retry.enabled) {
                    Some(MethodConfig {
                        retry_policy: Some(p),
                        ..
                    }) => AttemptPolicy::Retry(p.clone()),
                    Some(MethodConfig {
                        hedging_policy: Some(p),
                        ..
                    }) => AttemptPolicy::Hedge(p.clone()),
                    _ => AttemptPolicy::None,
                };
                let throttler = match policy {
                    AttemptPolicy::None => None,
                    _ => snapshot.methods.throttler.clone(),
                };
                Fixed {
                    policy,
                    throttler,
                    limits: (
                        limit(
                            defaults.max_send_message_size,
                            config.and_then(|c| c.max_request_message_bytes),
                        ),
                        limit(
                            defaults.max_receive_message_size,
                            config.and_then(|c| c.max_response_message_bytes),
                        ),
                    ),
                }
            });
            let hedging = match &fixed.policy {
                AttemptPolicy::Hedge(h) => Some(h),
                _ => None,
            };
            let mut metadata = self.metadata.clone();
            metadata.extend(&pick.metadata);
            let previous = if hedging.is_some() {
                sending.hedges
            } else {
                sending.retry.retries
            };
            if previous > 0 {
                let _ = metadata.insert(PREVIOUS_ATTEMPTS_HEADER, &previous.to_string());
            }
            let head = CallHead {
                method: self.method.clone(),
                metadata,
                deadline,
                authority: None,
                compression: self.compression.clone(),
                // Callers wait for channel calls in `wait`, which drives.
                caller_drives: true,
            };
            sending.next_attempt += 1;
            let id = sending.next_attempt;
            {
                // Events of the previous attempt are ignored from here on.
                let mut ev = self.state.events.lock();
                if ev.settled {
                    // Cancelled (or expired) while this attempt was being picked.
                    let status = ev.outcome.as_ref().map_or_else(
                        || Status::cancelled("the call was cancelled by the client"),
                        |o| o.status.clone(),
                    );
                    drop(ev);
                    attempt.release();
                    complete(on_complete, &status);
                    return Err(status);
                }
                if let Some(policy) = hedging {
                    // Another attempt of the call may answer first: this one
                    // joins them (see `Events::admit`).
                    ev.hedge.get_or_insert_with(|| HedgeEvents {
                        non_fatal: policy.non_fatal_status_codes,
                        live: Vec::new(),
                        failure: None,
                        kick: false,
                        unprocessed: 0,
                        next_at: None,
                    });
                } else {
                    ev.attempt = id;
                    ev.outcome = None;
                    ev.headers = None;
                    ev.messages.clear();
                    ev.stream = closed_stream();
                }
            }
            let listener = Arc::new(AttemptListener {
                call: self.state.clone(),
                attempt: id,
                held: Arc::clone(attempt),
                on_complete: Mutex::new(on_complete),
                metrics: self.metrics.as_ref().map(CallMetrics::attempt),
            });
            let connection = Arc::clone(connection);
            drop(ready);
            drop(snapshot);
            // The next hedge is due `hedgingDelay` after this attempt started
            // (read before the server can see it).
            let opened_at = shared.clock.now();
            listener.held.channelz().call_started(opened_at);
            let stream = connection.open_stream(head, listener);
            if hedging.is_some() {
                let joined = {
                    let mut ev = self.state.events.lock();
                    let open = !ev.committed && ev.outcome.is_none();
                    match ev.hedge.as_mut() {
                        Some(h) if open => {
                            h.live.push((id, stream.clone()));
                            let delay = hedging.map_or(Duration::ZERO, |p| p.hedging_delay);
                            h.next_at = Some(opened_at + delay);
                            true
                        }
                        _ => false,
                    }
                };
                if !joined {
                    // Another attempt answered (or the call ended) meanwhile.
                    stream.cancel();
                    return Ok(());
                }
                sending.hedges += 1;
                // The driver waits on it too, so that lagging attempts get fed.
                self.state.send_bell();
                sending.cursors.push(Cursor {
                    attempt: id,
                    stream,
                    sent: 0,
                    closed: false,
                });
                self.pump(sending);
                return Ok(());
            }
            {
                let mut ev = self.state.events.lock();
                if ev.attempt == id {
                    ev.stream = stream.clone();
                }
            }
            // Replay what the previous attempt had sent, waiting for room as a
            // sender would.
            let count = sending.replay.len();
            'replay: for (i, (message, flags)) in sending.replay.iter().enumerate() {
                let last = sending.done && i + 1 == count;
                let mut pending = message.clone();
                loop {
                    match stream.try_send_with(pending, last, *flags) {
                        Ok(()) => break,
                        Err(TrySendError::Full(m)) => {
                            pending = m;
                            let (bell, fresh) = self.state.send_bell();
                            if !fresh && let Woke::Expired = self.wait(bell) {
                                break 'replay;
                            }
                        }
                        // The new attempt ended already: its outcome says why.
                        Err(TrySendError::Closed(_)) => break 'replay,
                    }
                }
            }
            if sending.done && count == 0 {
                stream.half_close();
            }
            return Ok(());
        }
    }

    /// The outcome, if the call has one for good. Retries transparently when the
    /// current attempt ended without the server seeing it, and under the method's
    /// retry policy when it failed before the call committed (waiting out the
    /// backoff here, on the caller's thread).
    fn settle_outcome(self: &Arc<Self>) -> Option<CallOutcome> {
        let mut sending = self.sending.lock();
        let shared = self.shared();
        if let Some(Fixed {
            policy: AttemptPolicy::Hedge(policy),
            throttler,
            ..
        }) = self.plan.fixed.get()
        {
            return self.drive_hedges(&mut sending, policy, throttler.as_deref());
        }
        loop {
            let (outcome, committed) = {
                let ev = self.state.events.lock();
                match &ev.outcome {
                    None => return None,
                    Some(o) if ev.settled => return Some(o.clone()),
                    Some(o) => (o.clone(), ev.committed),
                }
            };
            let closed = shared.is_closed();
            let transparent = outcome.progress.is_unprocessed()
                && !committed
                && sending.retries < MAX_TRANSPARENT_RETRIES
                && !closed;
            let next = if transparent {
                log::debug!(
                    "channel {}: {}: transparent retry {} after {}",
                    shared.channelz.target,
                    self.method,
                    sending.retries + 1,
                    outcome.status
                );
                sending.retries += 1;
                shared
                    .retries
                    .transparent_retries
                    .fetch_add(1, Ordering::Relaxed);
                // Give the transport's thread a moment to report the connection gone.
                std::thread::yield_now();
                Ok(())
            } else if !outcome.status.is_ok() && !committed && !closed {
                match self.retry_decision(&mut sending, &outcome.status) {
                    Decision::RetryAfter(delay) => {
                        log::debug!(
                            "channel {}: {}: retry {} in {delay:?} after {}",
                            shared.channelz.target,
                            self.method,
                            sending.retry.retries,
                            outcome.status
                        );
                        self.back_off(delay, &outcome.status)
                    }
                    Decision::Final | Decision::Throttled => {
                        return Some(self.settle(&mut sending, outcome));
                    }
                }
            } else {
                let outcome = if !outcome.status.is_ok() && closed {
                    // Whatever the transport said, the channel's close ended it.
                    CallOutcome::processed(closed_status())
                } else {
                    outcome
                };
                return Some(self.settle(&mut sending, outcome));
            };
            if let Err(status) = next.and_then(|()| self.open_attempt(&mut sending)) {
                return Some(self.settle(&mut sending, CallOutcome::processed(status)));
            }
        }
    }

    /// A hedged call's driver, run whenever a caller looks at the call: pushes the
    /// kept messages to every attempt, starts the next attempt when its delay has
    /// passed (at once after a non-fatal failure, or after the server's pushback),
    /// and settles the call once an attempt won or none is left to try.
    fn drive_hedges(
        self: &Arc<Self>,
        sending: &mut Sending,
        policy: &HedgingPolicy,
        throttler: Option<&Throttler>,
    ) -> Option<CallOutcome> {
        let shared = self.shared();
        loop {
            self.pump(sending);
            let now = shared.clock.now();
            let (live, failure, unprocessed) = {
                let mut ev = self.state.events.lock();
                if ev.settled || (ev.committed && ev.outcome.is_some()) {
                    let outcome = ev.outcome.clone().expect("checked");
                    drop(ev);
                    return Some(self.settle(sending, outcome));
                }
                if ev.committed || ev.outcome.is_some() {
                    // Committed and still running (its attempt may be catching
                    // up on the kept messages: `pump` above), or ended here.
                    return ev.outcome.clone();
                }
                let hedge = ev.hedge.as_mut().expect("a hedged call has its state");
                if std::mem::take(&mut hedge.kick) {
                    let failure = hedge.failure.as_ref().expect("a kick has its failure");
                    let status = &failure.status;
                    let throttled = !failure.progress.is_unprocessed()
                        && throttler.is_some_and(Throttler::failed);
                    match pushback(status.trailers()) {
                        _ if throttled => sending.hedges_stopped = true,
                        Pushback::Stop => sending.hedges_stopped = true,
                        Pushback::After(d) => hedge.next_at = Some(now + d),
                        Pushback::None => hedge.next_at = Some(now),
                    }
                }
                (hedge.live.len(), hedge.failure.clone(), hedge.unprocessed)
            };
            let allowed = policy.max_attempts + unprocessed.min(MAX_TRANSPARENT_RETRIES);
            let more = !sending.hedges_stopped && sending.hedges < allowed && !shared.is_closed();
            let next_at = {
                let mut ev = self.state.events.lock();
                let hedge = ev.hedge.as_mut().expect("a hedged call has its state");
                if !more {
                    // Nothing more to start: waiters need not wake for it.
                    hedge.next_at = None;
                }
                hedge.next_at
            };
            if more && next_at.is_some_and(|t| now >= t) {
                let started = sending.hedges;
                if let Err(status) = self.open_attempt(sending) {
                    if live == 0 {
                        return Some(self.settle(sending, CallOutcome::processed(status)));
                    }
                    sending.hedges_stopped = true;
                } else if sending.hedges > started {
                    log::debug!(
                        "channel {}: {}: hedged attempt {} started",
                        shared.channelz.target,
                        self.method,
                        sending.hedges
                    );
                    shared.retries.hedges.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            if live == 0 && !more {
                let outcome = failure.unwrap_or_else(|| {
                    CallOutcome::processed(Status::unavailable("no hedged attempt could start"))
                });
                return Some(self.settle(sending, outcome));
            }
            return None;
        }
    }

    /// Gives each hedged attempt the kept messages it has not taken yet (as far as
    /// its stream has room), and the end of the request once the caller ended it.
    /// Drops the messages once the call has committed and its attempt has them
    /// all.
    fn pump(&self, sending: &mut Sending) {
        let Sending {
            cursors,
            replay,
            done,
            ..
        } = sending;
        cursors.retain_mut(|c| {
            while let Some((message, flags)) = replay.get(c.sent) {
                match c.stream.try_send_with(message.clone(), false, *flags) {
                    Ok(()) => c.sent += 1,
                    Err(TrySendError::Full(_)) => return true,
                    Err(TrySendError::Closed(_)) => return false,
                }
            }
            if *done && !c.closed {
                c.stream.half_close();
                c.closed = true;
            }
            true
        });
        let (committed, winner) = {
            let ev = self.state.events.lock();
            (ev.committed, ev.attempt)
        };
        if committed {
            sending.cursors.retain(|c| c.attempt == winner);
            let caught_up = sending
                .cursors
                .first()
                .is_none_or(|c| c.sent == sending.replay.len());
            if caught_up {
                sending.cursors.clear();
                self.drop_replay(sending);
            }
        }
    }

    /// Applies the retry policy (if any) to a failed attempt.
    fn retry_decision(&self, sending: &mut Sending, status: &Status) -> Decision {
        let Some(Fixed {
            policy: AttemptPolicy::Retry(policy),
            throttler,
            ..
        }) = self.plan.fixed.get()
        else {
            return Decision::Final;
        };
        let random = self.shared().defaults.retry.random.next_f64();
        let decision = super::retry::decide(
            policy,
            throttler.as_deref(),
            &mut sending.retry,
            status.code(),
            status.trailers(),
            random,
        );
        let counters = &self.shared().retries;
        match decision {
            Decision::RetryAfter(_) => counters.retries.fetch_add(1, Ordering::Relaxed),
            Decision::Throttled => counters.throttled.fetch_add(1, Ordering::Relaxed),
            Decision::Final => 0,
        };
        decision
    }

    /// Waits `delay` on the channel's clock before a retry. Fails with the call's
    /// status when the deadline passes first, the call is cancelled or the channel
    /// closes.
    fn back_off(&self, delay: Duration, last: &Status) -> Result<(), Status> {
        let shared = self.shared();
        let until = shared.clock.now() + delay;
        let deadline = self.deadline();
        shared.retries.in_backoff.fetch_add(1, Ordering::AcqRel);
        let _done = OnDrop(|| {
            shared.retries.in_backoff.fetch_sub(1, Ordering::AcqRel);
        });
        loop {
            let snapshot = shared.cell.load_full();
            if shared.is_closed() {
                return Err(closed_status());
            }
            {
                let ev = self.state.events.lock();
                if let Some(o) = ev.outcome.as_ref().filter(|_| ev.settled) {
                    return Err(o.status.clone());
                }
            }
            let now = shared.clock.now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(Status::deadline_exceeded(format!(
                    "deadline exceeded after {:?} waiting to retry; last attempt: {last}",
                    now.saturating_duration_since(self.plan.start)
                ))
                .with_trailers(last.trailers().clone()));
            }
            if now >= until {
                return Ok(());
            }
            let timer = timer(shared, earlier(Some(until), deadline));
            select! {
                recv(self.state.recv_bell.receiver()) -> _ => {}
                recv(snapshot.replaced()) -> _ => {}
                recv(timer) -> _ => {}
            }
        }
    }

    /// Makes `outcome` the call's for good (unless the call was ended here first),
    /// frees the retry buffer and feeds the throttle.
    fn settle(&self, sending: &mut Sending, outcome: CallOutcome) -> CallOutcome {
        self.drop_replay(sending);
        sending.cursors.clear();
        let mut ev = self.state.events.lock();
        if !ev.settled {
            if outcome.status.is_ok()
                && let Some(throttler) = self.plan.fixed.get().and_then(|f| f.throttler.as_ref())
            {
                throttler.succeeded();
            }
            ev.outcome = Some(outcome);
            ev.settled = true;
        }
        let outcome = ev.outcome.clone().expect("settled above");
        drop(ev);
        self.finish_metrics(&outcome.status);
        outcome
    }

    /// Records the call's duration and status (once; later reports are ignored).
    fn finish_metrics(&self, status: &Status) {
        if let Some(m) = &self.metrics {
            m.finish(status);
        }
    }

    /// Drops the messages kept for retries and gives their bytes back to the
    /// channel.
    fn drop_replay(&self, sending: &mut Sending) {
        if sending.replay_bytes > 0 {
            self.shared().retries.unreserve(sending.replay_bytes);
        }
        sending.replay = Vec::new();
        sending.replay_bytes = 0;
    }

    /// Ends the call here with `status` (unless it already ended) and resets its
    /// stream.
    /// An attempt that failed while its retry is still being decided (or waited
    /// for) ends with `status` instead; a call that succeeded or settled keeps its
    /// outcome.
    fn abort(&self, status: Status) {
        self.abort_with(|| status);
    }

    /// [`Self::abort`] with the status made only if the call has not ended (a
    /// dropped call that ended has nothing to abort, and makes no message).
    fn abort_with(&self, status: impl FnOnce() -> Status) {
        let mut hedges = Vec::new();
        let stream = {
            let mut ev = self.state.events.lock();
            match &ev.outcome {
                Some(o) if ev.settled || o.status.is_ok() => return,
                _ => {}
            }
            let status = status();
            self.finish_metrics(&status);
            ev.outcome = Some(CallOutcome::processed(status));
            ev.settled = true;
            if let Some(h) = ev.hedge.as_mut() {
                hedges.extend(h.live.drain(..).map(|(_, s)| s));
                h.next_at = None;
            }
            ev.stream.clone()
        };
        cancel_all(hedges);
        stream.cancel();
        self.state.recv_bell.ring();
        self.state.ring_send();
    }

    /// Waits for `bell`, a newer snapshot (clock jump, close) or the deadline. A
    /// hedged call that has not committed also wakes when its next attempt is due
    /// and when an attempt's stream has room, so that its caller drives it.
    fn wait(&self, bell: &Receiver<()>) -> Woke {
        let shared = self.shared();
        let snapshot = shared.cell.load_full();
        if shared.is_closed() {
            self.abort(closed_status());
            return Woke::Again;
        }
        let deadline = self.deadline();
        if deadline.is_some_and(|d| shared.clock.now() >= d) {
            self.expire();
            return Woke::Expired;
        }
        let (hedge_at, hedging) = {
            let ev = self.state.events.lock();
            match &ev.hedge {
                Some(h) if !ev.committed && !ev.settled => (h.next_at, true),
                _ => (None, false),
            }
        };
        let wake_at = earlier(deadline, hedge_at).filter(|_| shared.real_time);
        if !hedging && shared.real_time {
            // Do the transport's I/O on this thread while no other thread does: the
            // answer then needs no thread switch to reach us (`CallStream::drive`).
            let stream = self.state.events.lock().stream.clone();
            let replaced = snapshot.replaced();
            let mut until = || {
                !bell.is_empty()
                    || matches!(
                        replaced.try_recv(),
                        Err(crossbeam_channel::TryRecvError::Disconnected)
                    )
            };
            if stream.drive(&mut until, wake_at) {
                let _ = bell.try_recv();
                return Woke::Again;
            }
        }
        let timer = wake_at.map(at);
        let mut select = crossbeam_channel::Select::new();
        let mut bells = [bell; 2];
        let mut count = 1;
        if hedging {
            // Made when the call started hedging (`open_attempt`).
            bells[1] = self.state.send_bell().0;
            count = 2;
        }
        for b in &bells[..count] {
            select.recv(b);
        }
        select.recv(snapshot.replaced());
        if let Some(timer) = &timer {
            select.recv(timer);
        }
        // Only as many operations as there is something to wait for: a call
        // without a deadline selects on its bell and the snapshot alone.
        let ready = select.ready();
        if let Some(b) = bells[..count].get(ready) {
            // Take the ring, so that it does not wake the next wait for nothing.
            let _ = b.try_recv();
        }
        Woke::Again
    }

    /// Whether a hedged call keeps its request messages for its attempts: it has
    /// not committed, or its winning attempt has not taken them all yet.
    fn hedge_buffering(&self, sending: &Sending) -> bool {
        if !sending.cursors.is_empty() {
            return true;
        }
        let ev = self.state.events.lock();
        ev.hedge.is_some() && !ev.committed && !ev.settled
    }

    /// A hedged call's send: keeps the message for every attempt and gives it to
    /// those with room. Over the retry buffer, the call commits to its oldest
    /// attempt and the message waits for that attempt to catch up. `Err` gives the
    /// message back: the caller waits (or returns `Full`) and tries again.
    fn hedge_send(
        &self,
        sending: &mut Sending,
        message: Vec<u8>,
        last: bool,
        flags: SendFlags,
    ) -> Result<(), Vec<u8>> {
        let retry = &self.shared().defaults.retry;
        let fits = sending.replay_bytes + message.len() <= retry.per_call_buffer
            && self
                .shared()
                .retries
                .reserve(message.len(), retry.channel_buffer);
        if fits {
            sending.replay_bytes += message.len();
            sending.replay.push((message, flags));
            sending.done = last;
            self.pump(sending);
            return Ok(());
        }
        let mut losers = Vec::new();
        {
            let mut ev = self.state.events.lock();
            let oldest = ev
                .hedge
                .as_ref()
                .and_then(|h| h.live.iter().map(|(id, _)| *id).min());
            if let (false, Some(oldest)) = (ev.committed, oldest) {
                ev.admit(oldest, &mut losers);
            }
        }
        cancel_all(losers);
        self.pump(sending);
        Err(message)
    }

    fn expire(&self) {
        let waited = self
            .shared()
            .clock
            .now()
            .saturating_duration_since(self.plan.start);
        self.abort(Status::deadline_exceeded(format!(
            "deadline exceeded after {waited:?} waiting for the response"
        )));
    }

    fn send(
        self: &Arc<Self>,
        mut message: Vec<u8>,
        last: bool,
        block: bool,
        flags: SendFlags,
    ) -> Result<(), SendError> {
        let limit = self.limits().0;
        if message.len() > limit {
            let status = Status::resource_exhausted(format!(
                "trying to send message larger than max ({} vs. {limit})",
                message.len()
            ));
            return Err(SendError::Failed(message, status));
        }
        let len = message.len();
        loop {
            {
                let mut sending = self.sending.lock();
                if sending.done {
                    return Err(SendError::Failed(
                        message,
                        Status::internal("the call's sending side is already closed"),
                    ));
                }
                if self.hedge_buffering(&sending) {
                    // Counted first: an attempt may end before the send returns.
                    self.note_sent(len, true);
                    match self.hedge_send(&mut sending, message, last, flags) {
                        Ok(()) => return Ok(()),
                        Err(m) => {
                            self.note_sent(len, false);
                            message = m;
                        }
                    }
                    if self.hedge_buffering(&sending) {
                        // The winning attempt is catching up on the kept messages.
                        if !block {
                            return Err(SendError::Full(message));
                        }
                        drop(sending);
                        let (bell, fresh) = self.state.send_bell();
                        if !fresh && let Woke::Expired = self.wait(bell) {
                            let status = self.settle_outcome().map_or_else(
                                || Status::deadline_exceeded("deadline exceeded"),
                                final_status,
                            );
                            return Err(SendError::Failed(message, status));
                        }
                        continue;
                    }
                }
                let (stream, committed, attempt) = {
                    let ev = self.state.events.lock();
                    (ev.stream.clone(), ev.committed, ev.attempt)
                };
                let retry = &self.shared().defaults.retry;
                let keep =
                    !committed && sending.replay_bytes + message.len() <= retry.per_call_buffer;
                let copy = keep.then(|| message.clone());
                // Counted first: the attempt may end before `try_send` returns.
                self.note_sent(len, true);
                let sent = stream.try_send_with(message, last, flags);
                if sent.is_err() {
                    self.note_sent(len, false);
                }
                match sent {
                    Ok(()) => {
                        sending.done = last;
                        let channel = &self.shared().retries;
                        match copy.filter(|c| channel.reserve(c.len(), retry.channel_buffer)) {
                            Some(copy) => {
                                sending.replay_bytes += copy.len();
                                sending.replay.push((copy, flags));
                            }
                            None => {
                                self.drop_replay(&mut sending);
                                self.state.events.lock().committed = true;
                            }
                        }
                        return Ok(());
                    }
                    Err(TrySendError::Full(m)) if !block => return Err(SendError::Full(m)),
                    Err(TrySendError::Full(m)) => message = m,
                    Err(TrySendError::Closed(m)) => {
                        message = m;
                        drop(sending);
                        match self.settle_outcome() {
                            Some(outcome) => {
                                return Err(SendError::Failed(message, final_status(outcome)));
                            }
                            // Retried: send on the new attempt.
                            None if self.state.events.lock().attempt != attempt => continue,
                            // The stream ended and its outcome is on its way: wait
                            // for it (on_close rings the bell).
                            None => {}
                        }
                    }
                }
            }
            let (bell, fresh) = self.state.send_bell();
            if fresh {
                continue;
            }
            if let Woke::Expired = self.wait(bell) {
                let status = self.settle_outcome().map_or_else(
                    || Status::deadline_exceeded("deadline exceeded"),
                    final_status,
                );
                return Err(SendError::Failed(message, status));
            }
        }
    }

    /// The call is handing the transport a request message of `len` bytes
    /// (`accepted`), or the transport did not take it after all (for the
    /// metrics).
    fn note_sent(&self, len: usize, accepted: bool) {
        if let Some(m) = &self.metrics {
            m.sent(len, accepted);
        }
    }

    fn close_send(self: &Arc<Self>) {
        let mut sending = self.sending.lock();
        if std::mem::replace(&mut sending.done, true) {
            return;
        }
        if self.hedge_buffering(&sending) {
            self.pump(&mut sending);
            if self.hedge_buffering(&sending) {
                return;
            }
        }
        let stream = self.state.events.lock().stream.clone();
        stream.half_close();
    }

    /// The next response message, `None` at the end of an OK call.
    fn recv(self: &Arc<Self>) -> Result<Option<Vec<u8>>, Status> {
        loop {
            let taken = {
                let mut ev = self.state.events.lock();
                ev.messages.pop_front().map(|m| (m, ev.stream.clone()))
            };
            if let Some((message, stream)) = taken {
                stream.release(message.len());
                let limit = self.limits().1;
                if message.len() > limit {
                    let status = Status::resource_exhausted(format!(
                        "received message larger than max ({} vs. {limit})",
                        message.len()
                    ));
                    self.abort(status.clone());
                    return Err(status);
                }
                return Ok(Some(message));
            }
            if let Some(outcome) = self.settle_outcome() {
                // Messages that arrived before the end are still delivered.
                if !self.state.events.lock().messages.is_empty() {
                    continue;
                }
                return match outcome.status.code() {
                    Code::Ok => Ok(None),
                    _ => Err(outcome.status),
                };
            }
            self.wait(self.state.recv_bell.receiver());
        }
    }

    /// The response headers, waiting for them.
    fn headers(self: &Arc<Self>) -> Result<Metadata, Status> {
        loop {
            {
                let mut ev = self.state.events.lock();
                if let Some(h) = &ev.headers {
                    return Ok(h.clone());
                }
                // Headers alone wake receivers only when one waits for them.
                ev.headers_wanted = true;
            }
            if let Some(outcome) = self.settle_outcome() {
                if let Some(h) = &self.state.events.lock().headers {
                    return Ok(h.clone());
                }
                return match outcome.status.code() {
                    Code::Ok => Ok(Metadata::new()),
                    _ => Err(outcome.status),
                };
            }
            self.wait(self.state.recv_bell.receiver());
        }
    }

    /// The next item of an iterator over the responses: fused after the end or the
    /// first error.
    fn next_item(self: &Arc<Self>) -> Option<Result<Vec<u8>, Status>> {
        use std::sync::atomic::Ordering;
        if self.iter_done.load(Ordering::Acquire) {
            return None;
        }
        let item = self.recv().transpose();
        if !matches!(item, Some(Ok(_))) {
            self.iter_done.store(true, Ordering::Release);
        }
        item
    }

    fn trailers(&self) -> Option<Metadata> {
        let ev = self.state.events.lock();
        ev.outcome.as_ref().map(|o| o.status.trailers().clone())
    }
}

impl Drop for CallInner {
    fn drop(&mut self) {
        self.abort_with(|| Status::cancelled("the call was dropped before it ended"));
        let bytes = self.sending.get_mut().replay_bytes;
        if bytes > 0 {
            self.shared().retries.unreserve(bytes);
        }
        // A transport may keep an attempt's listener (which holds this call's
        // state) as long as the stream handle lives, and the state holds the
        // handle: let go of the handles, so that the cycle breaks and both are
        // freed once the transport is done with the stream.
        let mut ev = self.state.events.lock();
        let ok = ev.outcome.as_ref().is_some_and(|o| o.status.is_ok());
        self.shared().channelz.call_finished(ok);
        ev.stream = closed_stream();
        if let Some(hedge) = ev.hedge.as_mut() {
            hedge.live.clear();
        }
        // A call whose outcome arrived but was never looked at ends here.
        if let (Some(m), Some(outcome)) = (&self.metrics, &ev.outcome) {
            m.finish(&outcome.status);
        }
    }
}

/// Runs a closure when dropped.
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

fn final_status(outcome: CallOutcome) -> Status {
    outcome.status
}

/// Why a send did not go through.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// [`Call::try_send`] only: the stream has no room now; the message comes back.
    #[error("the stream has no room now")]
    Full(Vec<u8>),
    /// The message cannot be sent: the call ended (with this status), the sending
    /// side was closed, or the message is over the size limit. The message comes
    /// back.
    #[error("{1}")]
    Failed(Vec<u8>, Status),
}

impl SendError {
    /// The status to report: RESOURCE_EXHAUSTED for a full stream.
    pub fn status(&self) -> Status {
        match self {
            Self::Full(_) => Status::resource_exhausted("the stream has no room now"),
            Self::Failed(_, s) => s.clone(),
        }
    }

    /// The message that was not sent.
    pub fn into_message(self) -> Vec<u8> {
        match self {
            Self::Full(m) | Self::Failed(m, _) => m,
        }
    }
}

impl fmt::Debug for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(m) => write!(f, "Full({} bytes)", m.len()),
            Self::Failed(m, s) => write!(f, "Failed({} bytes, {s})", m.len()),
        }
    }
}

impl From<SendError> for Status {
    fn from(e: SendError) -> Self {
        e.status()
    }
}

impl Call {
    /// Starts a call on `shared`: validates it, picks, opens a stream.
    pub(crate) fn start(
        shared: &Arc<Shared>,
        method: &str,
        options: &CallOptions,
    ) -> Result<Self, Status> {
        if shared.is_closed() {
            return Err(closed_status());
        }
        if !is_method_path(method) {
            return Err(Status::internal(format!(
                "malformed method name {method:?}: expected /package.Service/Method"
            )));
        }
        let start = shared.clock.now();
        shared.channelz.call_started(start);
        let own = PlanInput {
            start,
            own_deadline: earlier(options.deadline, options.timeout.map(|t| start + t)),
            own_wait_for_ready: options.wait_for_ready,
            default_timeout: shared.defaults.default_timeout,
        };
        let inner = Arc::new(CallInner {
            active: shared.begin_call(),
            method: method.into(),
            metadata: options.metadata.clone(),
            compression: options
                .compression
                .clone()
                .or_else(|| shared.defaults.send_compression.clone()),
            plan: Plan {
                input: own,
                start,
                fixed_deadline: std::sync::OnceLock::new(),
                fixed: std::sync::OnceLock::new(),
                selected: std::sync::OnceLock::new(),
            },
            state: Arc::new(CallState {
                events: Mutex::new(Events {
                    attempt: 0,
                    stream: closed_stream(),
                    headers: None,
                    messages: VecDeque::new(),
                    outcome: None,
                    committed: false,
                    settled: false,
                    hedge: None,
                    headers_wanted: false,
                }),
                recv_bell: PooledBell::take(),
                send_bell: std::sync::OnceLock::new(),
            }),
            sending: Mutex::new(Sending {
                replay: Vec::new(),
                replay_bytes: 0,
                done: false,
                retries: 0,
                retry: RetryState::default(),
                next_attempt: 0,
                cursors: Vec::new(),
                hedges: 0,
                hedges_stopped: false,
            }),
            latest_pick_error: Mutex::new(None),
            iter_done: std::sync::atomic::AtomicBool::new(false),
            metrics: CallMetrics::new(&shared.defaults.metrics, &shared.clock, method, start),
        });
        {
            let mut sending = inner.sending.lock();
            if let Err(status) = inner.open_attempt(&mut sending) {
                // Nothing to cancel: mark the call ended so dropping it is quiet.
                inner.finish_metrics(&status);
                let mut ev = inner.state.events.lock();
                ev.outcome = Some(CallOutcome::not_sent(status.clone()));
                ev.settled = true;
                return Err(status);
            }
        }
        Ok(Self { inner })
    }

    /// Sends one request message, waiting while the stream has no room (until the
    /// call's deadline).
    ///
    /// # Errors
    ///
    /// The call ended (its status), sending was closed, or the message is over the
    /// channel's send limit (RESOURCE_EXHAUSTED). The message comes back in the
    /// error.
    pub fn send(&self, message: impl Into<Vec<u8>>) -> Result<(), SendError> {
        self.inner
            .send(message.into(), false, true, SendFlags::default())
    }

    /// Sends the last request message and closes the sending side, waiting while
    /// the stream has no room.
    ///
    /// # Errors
    ///
    /// As [`Call::send`].
    pub fn send_last(&self, message: impl Into<Vec<u8>>) -> Result<(), SendError> {
        self.inner
            .send(message.into(), true, true, SendFlags::default())
    }

    /// Sends one request message if the stream has room now, without waiting.
    ///
    /// # Errors
    ///
    /// [`SendError::Full`] when there is no room (the message comes back; try again
    /// later, or use [`Call::send`]), else as [`Call::send`].
    pub fn try_send(&self, message: impl Into<Vec<u8>>) -> Result<(), SendError> {
        self.inner
            .send(message.into(), false, false, SendFlags::default())
    }

    /// [`Call::send`] with per-message flags: with
    /// [`SendFlags::uncompressed`] this message goes uncompressed even when the
    /// call compresses (its `grpc-encoding` still applies to the others). A
    /// retry or hedge replays the message with the same flags.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use lb_core::channel::{CallOptions, Channel};
    /// # use lb_core::transport::SendFlags;
    /// # let transport = lb_testkit::InMemoryTransport::new();
    /// # transport.add_stream_server("127.0.0.1:1", |call| {
    /// #     while let Some(m) = call.recv() { call.send(m)?; }
    /// #     Ok(lb_core::Metadata::new())
    /// # });
    /// # let channel = Channel::builder("ipv4:127.0.0.1:1")
    /// #     .transport(Arc::new(transport)).build()?;
    /// let call = channel.bidi_streaming("/chat.Room/Talk", CallOptions::default().with_compression("gzip"))?;
    /// call.send(b"compressed".to_vec())?;
    /// // Already compressed (a JPEG, say): spare the work.
    /// call.send_with(b"\xff\xd8 jpeg bytes".to_vec(), SendFlags::uncompressed())?;
    /// call.close_send();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Call::send`].
    pub fn send_with(
        &self,
        message: impl Into<Vec<u8>>,
        flags: SendFlags,
    ) -> Result<(), SendError> {
        self.inner.send(message.into(), false, true, flags)
    }

    /// Ends the request side: the server sees the end of the request stream.
    /// Idempotent.
    pub fn close_send(&self) {
        self.inner.close_send();
    }

    /// The next response message: `Ok(None)` once the call ended with OK, the
    /// call's status once it failed. Blocks until then (at most until the deadline).
    ///
    /// # Errors
    ///
    /// The call's status: the server's, DEADLINE_EXCEEDED, CANCELLED, UNAVAILABLE
    /// when the connection was lost, RESOURCE_EXHAUSTED for a message over the
    /// channel's receive limit.
    pub fn recv(&self) -> Result<Option<Vec<u8>>, Status> {
        self.inner.recv()
    }

    /// The response headers' metadata, waiting for them (empty when the server
    /// answered with trailers only).
    ///
    /// # Errors
    ///
    /// The call failed before headers arrived: its status.
    pub fn headers(&self) -> Result<Metadata, Status> {
        self.inner.headers()
    }

    /// The trailers' metadata, once the call has ended (on failure too; also in
    /// [`Status::trailers`]).
    pub fn trailers(&self) -> Option<Metadata> {
        self.inner.trailers()
    }

    /// Cancels the call: the stream is reset and the server sees CANCELLED; later
    /// sends and receives fail with CANCELLED. Does nothing once the call ended.
    pub fn cancel(&self) {
        self.inner
            .abort(Status::cancelled("the call was cancelled by the client"));
    }

    /// Splits the call into a sending half and a receiving half for two threads.
    /// The call is cancelled when both are dropped before it ended.
    pub fn split(self) -> (CallSender, CallReceiver) {
        (
            CallSender {
                inner: self.inner.clone(),
            },
            CallReceiver { inner: self.inner },
        )
    }
}

impl Iterator for Call {
    type Item = Result<Vec<u8>, Status>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next_item()
    }
}

/// The sending half of a [`Call`] (see [`Call::split`]).
pub struct CallSender {
    inner: Arc<CallInner>,
}

impl CallSender {
    /// As [`Call::send`].
    ///
    /// # Errors
    ///
    /// As [`Call::send`].
    pub fn send(&self, message: impl Into<Vec<u8>>) -> Result<(), SendError> {
        self.inner
            .send(message.into(), false, true, SendFlags::default())
    }

    /// As [`Call::send_last`].
    ///
    /// # Errors
    ///
    /// As [`Call::send`].
    pub fn send_last(&self, message: impl Into<Vec<u8>>) -> Result<(), SendError> {
        self.inner
            .send(message.into(), true, true, SendFlags::default())
    }

    /// As [`Call::try_send`].
    ///
    /// # Errors
    ///
    /// As [`Call::try_send`].
    pub fn try_send(&self, message: impl Into<Vec<u8>>) -> Result<(), SendError> {
        self.inner
            .send(message.into(), false, false, SendFlags::default())
    }

    /// As [`Call::send_with`].
    ///
    /// # Errors
    ///
    /// As [`Call::send`].
    pub fn send_with(
        &self,
        message: impl Into<Vec<u8>>,
        flags: SendFlags,
    ) -> Result<(), SendError> {
        self.inner.send(message.into(), false, true, flags)
    }

    /// As [`Call::close_send`].
    pub fn close_send(&self) {
        self.inner.close_send();
    }

    /// As [`Call::cancel`].
    pub fn cancel(&self) {
        self.inner
            .abort(Status::cancelled("the call was cancelled by the client"));
    }
}

impl fmt::Debug for CallSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallSender")
            .field("method", &self.inner.method)
            .finish_non_exhaustive()
    }
}

/// The receiving half of a [`Call`] (see [`Call::split`]); an iterator of response
/// messages.
pub struct CallReceiver {
    inner: Arc<CallInner>,
}

impl CallReceiver {
    /// As [`Call::recv`].
    ///
    /// # Errors
    ///
    /// As [`Call::recv`].
    pub fn recv(&self) -> Result<Option<Vec<u8>>, Status> {
        self.inner.recv()
    }

    /// As [`Call::headers`].
    ///
    /// # Errors
    ///
    /// As [`Call::headers`].
    pub fn headers(&self) -> Result<Metadata, Status> {
        self.inner.headers()
    }

    /// As [`Call::trailers`].
    pub fn trailers(&self) -> Option<Metadata> {
        self.inner.trailers()
    }

    /// As [`Call::cancel`].
    pub fn cancel(&self) {
        self.inner
            .abort(Status::cancelled("the call was cancelled by the client"));
    }
}

impl Iterator for CallReceiver {
    type Item = Result<Vec<u8>, Status>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next_item()
    }
}

impl fmt::Debug for CallReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallReceiver")
            .field("method", &self.inner.method)
            .finish_non_exhaustive()
    }
}

/// A server-streaming call: an iterator of response messages. Made by
/// [`Channel::server_streaming`](super::Channel::server_streaming); dropping it
/// before the end cancels the call.
#[derive(Debug)]
pub struct ServerStreaming {
    call: Call,
}

impl ServerStreaming {
    /// As [`Call::recv`].
    ///
    /// # Errors
    ///
    /// As [`Call::recv`].
    pub fn recv(&self) -> Result<Option<Vec<u8>>, Status> {
        self.call.recv()
    }

    /// As [`Call::headers`].
    ///
    /// # Errors
    ///
    /// As [`Call::headers`].
    pub fn headers(&self) -> Result<Metadata, Status> {
        self.call.headers()
    }

    /// As [`Call::trailers`].
    pub fn trailers(&self) -> Option<Metadata> {
        self.call.trailers()
    }

    /// As [`Call::cancel`].
    pub fn cancel(&self) {
        self.call.cancel();
    }
}

impl Iterator for ServerStreaming {
    type Item = Result<Vec<u8>, Status>;

    fn next(&mut self) -> Option<Self::Item> {
        self.call.next()
    }
}

/// A client-streaming call: send request messages, then [`finish`] for the one
/// response. Made by
/// [`Channel::client_streaming`](super::Channel::client_streaming); dropping it
/// unfinished cancels the call.
///
/// [`finish`]: ClientStreaming::finish
#[derive(Debug)]
pub struct ClientStreaming {
    call: Call,
}

impl ClientStreaming {
    /// As [`Call::send`].
    ///
    /// # Errors
    ///
    /// As [`Call::send`].
    pub fn send(&self, message: impl Into<Vec<u8>>) -> Result<(), SendError> {
        self.call.send(message)
    }

    /// As [`Call::try_send`].
    ///
    /// # Errors
    ///
    /// As [`Call::try_send`].
    pub fn try_send(&self, message: impl Into<Vec<u8>>) -> Result<(), SendError> {
        self.call.try_send(message)
    }

    /// As [`Call::send_with`].
    ///
    /// # Errors
    ///
    /// As [`Call::send`].
    pub fn send_with(
        &self,
        message: impl Into<Vec<u8>>,
        flags: SendFlags,
    ) -> Result<(), SendError> {
        self.call.send_with(message, flags)
    }

    /// Ends the request stream and waits for the response.
    ///
    /// # Errors
    ///
    /// The call's status; UNIMPLEMENTED when the server answered with no message or
    /// more than one.
    pub fn finish(self) -> Result<UnaryResponse, Status> {
        self.call.close_send();
        single_response(&self.call)
    }

    /// As [`Call::cancel`].
    pub fn cancel(&self) {
        self.call.cancel();
    }
}

/// Reads the one response of a unary or client-streaming call.
fn single_response(call: &Call) -> Result<UnaryResponse, Status> {
    let Some(message) = call.recv()? else {
        return Err(Status::unimplemented("unary call got no response message")
            .with_trailers(call.trailers().unwrap_or_default()));
    };
    if call.recv()?.is_some() {
        call.cancel();
        return Err(Status::unimplemented(
            "unary call got more than one response message",
        ));
    }
    Ok(UnaryResponse {
        message,
        headers: call.headers().unwrap_or_default(),
        trailers: call.trailers().unwrap_or_default(),
    })
}

/// Runs one unary call.
pub(crate) fn unary(
    shared: &Arc<Shared>,
    method: &str,
    message: Vec<u8>,
    options: &CallOptions,
) -> Result<UnaryResponse, Status> {
    check_send_size(shared, &message)?;
    let call = Call::start(shared, method, options)?;
    send_request(&call, message)?;
    single_response(&call)
}

/// Refuses a request over the channel's send limit before the call starts.
fn check_send_size(shared: &Shared, message: &[u8]) -> Result<(), Status> {
    let limit = shared.defaults.max_send_message_size;
    if message.len() > limit {
        return Err(Status::resource_exhausted(format!(
            "trying to send message larger than max ({} vs. {limit})",
            message.len()
        )));
    }
    Ok(())
}

/// Sends the one request of a unary or server-streaming call. A call that the
/// server already ended (it answered without waiting for the request) is not an
/// error here: its messages and status are read next, as gRPC does.
fn send_request(call: &Call, message: Vec<u8>) -> Result<(), Status> {
    match call.send_last(message) {
        Ok(()) => Ok(()),
        Err(SendError::Failed(..)) if call.inner.state.events.lock().outcome.is_some() => Ok(()),
        Err(e) => {
            call.cancel();
            Err(e.into())
        }
    }
}

/// Starts a server-streaming call.
pub(crate) fn server_streaming(
    shared: &Arc<Shared>,
    method: &str,
    message: Vec<u8>,
    options: &CallOptions,
) -> Result<ServerStreaming, Status> {
    check_send_size(shared, &message)?;
    let call = Call::start(shared, method, options)?;
    send_request(&call, message)?;
    Ok(ServerStreaming { call })
}

/// Starts a client-streaming call.
pub(crate) fn client_streaming(
    shared: &Arc<Shared>,
    method: &str,
    options: &CallOptions,
) -> Result<ClientStreaming, Status> {
    Ok(ClientStreaming {
        call: Call::start(shared, method, options)?,
    })
}

/// A pick's completion callback with what it needs to measure the attempt.
struct Completion {
    callback: CompletionCallback,
    picked_at: Instant,
    clock: Arc<dyn super::clock::Clock>,
}

impl Completion {
    fn finish(self, status: &Status) {
        let duration = self.clock.now().saturating_duration_since(self.picked_at);
        (self.callback)(&CallCompletion::new(status, duration));
    }
}

fn complete(on_complete: Option<Completion>, status: &Status) {
    if let Some(done) = on_complete {
        done.finish(status);
    }
}

fn is_method_path(method: &str) -> bool {
    method
        .strip_prefix('/')
        .and_then(|m| m.split_once('/'))
        .is_some_and(|(service, name)| {
            !service.is_empty() && !name.is_empty() && !name.contains('/')
        })
}

/// DEADLINE_EXCEEDED for a call whose deadline passed before it could be sent: a
/// deadline that was past when the call started says so, whatever the channel's
/// state; one that passed while the call waited says what it waited for.
fn expired_status(
    deadline: Option<Instant>,
    start: Instant,
    waited: Duration,
    latest: Option<&Status>,
) -> Status {
    if deadline.is_some_and(|d| d <= start) {
        let latest = latest.map_or_else(String::new, |e| {
            format!("; latest balancer error: {}", e.message())
        });
        return Status::deadline_exceeded(format!(
            "deadline exceeded before the call was sent: the deadline had already passed \
             when the call started (a zero or past deadline or timeout){latest}"
        ));
    }
    queued_deadline(waited, latest)
}

fn queued_deadline(waited: Duration, latest: Option<&Status>) -> Status {
    match latest {
        Some(e) => Status::deadline_exceeded(format!(
            "deadline exceeded after {waited:?} waiting for a ready connection; \
             latest balancer error: {}",
            e.message()
        )),
        None => Status::deadline_exceeded(format!(
            "deadline exceeded after {waited:?} waiting for a connection"
        )),
    }
}

/// A real-time timer for `deadline`, or `never()` with a clock that jumps.
fn timer(shared: &Shared, deadline: Option<Instant>) -> Receiver<Instant> {
    match deadline {
        Some(d) if shared.real_time => at(d),
        _ => never(),
    }
}

/// Waits until `snapshot` is replaced or the deadline passes.
pub(crate) fn wait_for_picker(shared: &Shared, snapshot: &Snapshot, deadline: Option<Instant>) {
    let timer = timer(shared, deadline);
    select! {
        recv(snapshot.replaced()) -> _ => {}
        recv(timer) -> _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_paths_need_a_service_and_a_method() {
        for good in ["/s/m", "/pkg.Svc/Method"] {
            assert!(is_method_path(good), "{good}");
        }
        for bad in ["", "/", "s/m", "/s", "/s/", "//m", "/s/m/x"] {
            assert!(!is_method_path(bad), "{bad}");
        }
    }

    #[test]
    fn the_earliest_deadline_wins_and_the_call_choice_beats_the_config() {
        let t0 = Instant::now();
        let sc = super::super::ServiceConfig::parse_str(
            r#"{"methodConfig": [{"name": [{"service": "s"}], "timeout": "5s", "waitForReady": true}]}"#,
            &crate::LbPolicyRegistry::with_builtins(),
        )
        .unwrap();
        let methods = sc.methods().clone();
        let plan = |own: Option<u64>, wfr: Option<bool>| PlanInput {
            start: t0,
            own_deadline: own.map(|s| t0 + Duration::from_secs(s)),
            own_wait_for_ready: wfr,
            default_timeout: Some(Duration::from_secs(60)),
        };
        let secs = |d: Option<Instant>| d.map(|d| (d - t0).as_secs());
        let (d, w) = plan(None, None).effective(methods.lookup("/s/m"));
        assert_eq!((secs(d), w), (Some(5), true));
        let (d, w) = plan(Some(2), Some(false)).effective(methods.lookup("/s/m"));
        assert_eq!((secs(d), w), (Some(2), false));
        let (d, _) = plan(Some(9), None).effective(methods.lookup("/s/m"));
        assert_eq!(
            secs(d),
            Some(5),
            "the config's timeout caps a later deadline"
        );
        let (d, w) = plan(None, None).effective(methods.lookup("/other/m"));
        assert_eq!((secs(d), w), (Some(60), false), "default timeout");
    }
}
