//! A server stream the serializer follows on a READY connection: the coalescing
//! mailbox shared by health checks ([`super::health`]) and ORCA's out-of-band reports
//! ([`super::orca`]).
//!
//! ```text
//!   transport thread: on_message ─> decode, keep only the latest (an error sticks)
//!                     on_close   ─> keep the status
//!                        └─ announce: one Input per slot until the serializer takes it
//!   serializer:       Watched::take ─> (latest, closed); releases the bytes' credit
//! ```
//!
//! So a followed stream adds at most one queued [`Input`] to the serializer's queue
//! however fast its server sends, and response bytes are released (flow-control
//! credit) only when the serializer takes them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use super::core::Input;
use crate::address::Address;
use crate::backoff::Backoff;
use crate::metadata::Metadata;
use crate::status::{Code, Status};
use crate::subchannel::SubchannelId;
use crate::transport::{CallHead, CallListener, CallOutcome, CallStream, Connection};

/// What one stream's listener has stored for the serializer.
struct Arrived<M, E> {
    /// The latest message, or the first that did not decode (which sticks).
    latest: Option<Result<M, E>>,
    /// Message bytes not yet released to the transport.
    unreleased: usize,
    closed: Option<Status>,
}

impl<M, E> Default for Arrived<M, E> {
    fn default() -> Self {
        Self {
            latest: None,
            unreleased: 0,
            closed: None,
        }
    }
}

/// How a kind of followed stream decodes its messages and announces news.
pub(crate) struct Kind<M, E> {
    pub(crate) decode: fn(&[u8]) -> Result<M, E>,
    pub(crate) input: fn(SubchannelId, Weak<Slot<M, E>>) -> Input,
}

/// The mailbox between one stream's listener and the serializer.
pub(crate) struct Slot<M, E> {
    id: SubchannelId,
    arrived: Mutex<Arrived<M, E>>,
    /// An input for this slot is queued and not yet handled.
    announced: AtomicBool,
    tx: Sender<Input>,
    kind: Kind<M, E>,
}

impl<M, E> Slot<M, E> {
    fn announce(self: &Arc<Self>) {
        if !self.announced.swap(true, Ordering::AcqRel) {
            // A weak reference: a queued input never keeps the slot (and the
            // sender in it) alive.
            let _ = self
                .tx
                .send((self.kind.input)(self.id, Arc::downgrade(self)));
        }
    }
}

/// The stream's listener (on the transport's threads): store, then announce.
struct Listener<M, E>(Arc<Slot<M, E>>);

impl<M: Send + 'static, E: Send + 'static> CallListener for Listener<M, E> {
    fn on_headers(&self, _: Metadata) {}

    fn on_message(&self, message: Vec<u8>) {
        {
            let mut arrived = self.0.arrived.lock();
            arrived.unreleased += message.len();
            if !matches!(arrived.latest, Some(Err(_))) {
                arrived.latest = Some((self.0.kind.decode)(&message));
            }
        }
        self.0.announce();
    }

    fn on_writable(&self) {}

    fn on_close(&self, outcome: CallOutcome) {
        self.0.arrived.lock().closed = Some(outcome.status);
        self.0.announce();
    }
}

/// What [`Watched::take`] returns: the latest message (or the error that stuck),
/// and the status the stream ended with.
pub(crate) type Taken<M, E> = (Option<Result<M, E>>, Option<Status>);

/// One open followed stream.
pub(crate) struct Watched<M, E> {
    slot: Arc<Slot<M, E>>,
    stream: Arc<dyn CallStream>,
    /// A message arrived on this stream.
    pub(crate) answered: bool,
}

impl<M: Send + 'static, E: Send + 'static> Watched<M, E> {
    /// Opens `method` on `connection` with the one request message `request`.
    pub(crate) fn open(
        connection: &Arc<dyn Connection>,
        method: &str,
        request: Vec<u8>,
        id: SubchannelId,
        tx: Sender<Input>,
        kind: Kind<M, E>,
    ) -> Self {
        let slot = Arc::new(Slot {
            id,
            arrived: Mutex::new(Arrived::default()),
            announced: AtomicBool::new(false),
            tx,
            kind,
        });
        let listener = Arc::new(Listener(slot.clone()));
        let stream = connection.open_stream(CallHead::new(method), listener);
        // An empty stream takes one message; `Closed` means on_close has been sent.
        let _ = stream.try_send(request, true);
        Self {
            slot,
            stream,
            answered: false,
        }
    }
}

impl<M, E> Watched<M, E> {
    /// Whether `slot` is this stream's (not one given up before).
    pub(crate) fn is(&self, slot: &Weak<Slot<M, E>>) -> bool {
        std::ptr::eq(Arc::as_ptr(&self.slot), slot.as_ptr())
    }

    /// Takes what arrived: the latest message and the close, releasing the credit.
    pub(crate) fn take(&mut self) -> Taken<M, E> {
        self.slot.announced.store(false, Ordering::Release);
        let arrived = std::mem::take(&mut *self.slot.arrived.lock());
        if arrived.unreleased > 0 {
            self.stream.release(arrived.unreleased);
        }
        (arrived.latest, arrived.closed)
    }

    /// Cancels the stream.
    pub(crate) fn cancel(&self) {
        self.stream.cancel();
    }
}

/// Where a followed stream runs: the READY connection of subchannel `id`.
pub(crate) struct Target {
    pub(crate) address: Address,
    pub(crate) connection: Arc<dyn Connection>,
    pub(crate) tx: Sender<Input>,
    pub(crate) id: SubchannelId,
    /// Paces re-opening after streams that end without answering.
    pub(crate) backoff: Backoff,
}

/// One method followed on one connection: the open stream (if any), and when to
/// re-open it.
pub(crate) struct Follow<M, E> {
    target: Target,
    method: &'static str,
    request: Vec<u8>,
    kind: fn() -> Kind<M, E>,
    watch: Option<Watched<M, E>>,
    retry_at: Option<Instant>,
}

impl<M: Send + 'static, E: Send + 'static> Follow<M, E> {
    /// Opens `method` with `request` on `target`.
    pub(crate) fn start(
        target: Target,
        method: &'static str,
        request: Vec<u8>,
        kind: fn() -> Kind<M, E>,
    ) -> Self {
        let mut follow = Self {
            target,
            method,
            request,
            kind,
            watch: None,
            retry_at: None,
        };
        follow.open();
        follow
    }

    /// Opens a new stream.
    pub(crate) fn open(&mut self) {
        self.retry_at = None;
        let t = &self.target;
        self.watch = Some(Watched::open(
            &t.connection,
            self.method,
            self.request.clone(),
            t.id,
            t.tx.clone(),
            (self.kind)(),
        ));
    }
}

impl<M, E> Follow<M, E> {
    /// The address followed, for messages.
    pub(crate) fn address(&self) -> &Address {
        &self.target.address
    }

    /// What arrived on `slot`, if it is the current stream's (not one given up).
    pub(crate) fn take(&mut self, slot: &Weak<Slot<M, E>>) -> Option<Taken<M, E>> {
        Some(self.watch.as_mut().filter(|w| w.is(slot))?.take())
    }

    /// Notes that the current stream answered.
    pub(crate) fn answered(&mut self) {
        if let Some(w) = self.watch.as_mut() {
            w.answered = true;
        }
    }

    /// Cancels the current stream (it will end).
    pub(crate) fn cancel(&self) {
        if let Some(w) = &self.watch {
            w.cancel();
        }
    }

    /// The current stream ended with `status`: when to re-open it. The caller opens
    /// at once for [`Reopen::Now`]; for [`Reopen::At`] it sets a timer and calls
    /// [`Follow::due`].
    pub(crate) fn ended(&mut self, status: &Status, now: Instant) -> Reopen {
        let answered = self.watch.take().is_some_and(|w| w.answered);
        let reopen = reopen_after(status, answered, &mut self.target.backoff, now);
        if let Reopen::At(at) = reopen {
            self.retry_at = Some(at);
        }
        reopen
    }

    /// Whether a retry timer set for `at` means re-opening now.
    pub(crate) fn due(&self, at: Instant) -> bool {
        self.watch.is_none() && self.retry_at == Some(at)
    }

    /// Stops: cancels the stream, if one is open.
    pub(crate) fn stop(self) {
        self.cancel();
    }
}

/// When to re-open a followed stream that ended with `status`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reopen {
    /// The server does not implement the method: never.
    Never,
    /// It had answered: at once (the backoff starts over).
    Now,
    /// It ended before answering: after the backoff.
    At(Instant),
}

/// Decides when to re-open a stream that ended with `status`.
fn reopen_after(status: &Status, answered: bool, backoff: &mut Backoff, now: Instant) -> Reopen {
    if status.code() == Code::Unimplemented {
        Reopen::Never
    } else if answered {
        backoff.reset();
        Reopen::Now
    } else {
        Reopen::At(backoff.next_attempt_after_failure(now))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::address::Address;
    use crate::backoff::BackoffConfig;
    use crate::random::SplitMix64;
    use crate::transport::TrySendError;

    /// A target on `connection` for subchannel 1 at `a:1`, with the default backoff.
    pub(crate) fn target(connection: &Arc<Recorder>, tx: Sender<Input>) -> Target {
        Target {
            address: Address::new("a:1"),
            connection: connection.clone(),
            tx,
            id: SubchannelId(1),
            backoff: Backoff::new(BackoffConfig::default(), SplitMix64::seeded(1)),
        }
    }

    /// A connection whose one stream the test drives through its listener.
    #[derive(Default)]
    pub(crate) struct Recorder {
        pub(crate) method: Mutex<String>,
        pub(crate) listener: Mutex<Option<Arc<dyn CallListener>>>,
        pub(crate) released: Arc<AtomicUsize>,
        pub(crate) cancelled: Arc<AtomicBool>,
    }

    struct RecordedStream {
        released: Arc<AtomicUsize>,
        cancelled: Arc<AtomicBool>,
    }

    impl CallStream for RecordedStream {
        fn try_send(&self, _: Vec<u8>, _: bool) -> Result<(), TrySendError> {
            Ok(())
        }
        fn half_close(&self) {}
        fn cancel(&self) {
            self.cancelled.store(true, Ordering::SeqCst);
        }
        fn release(&self, bytes: usize) {
            self.released.fetch_add(bytes, Ordering::SeqCst);
        }
    }

    impl Connection for Recorder {
        fn open_stream(&self, head: CallHead, l: Arc<dyn CallListener>) -> Arc<dyn CallStream> {
            *self.method.lock() = head.method.to_string();
            *self.listener.lock() = Some(l);
            Arc::new(RecordedStream {
                released: self.released.clone(),
                cancelled: self.cancelled.clone(),
            })
        }
        fn close(&self) {}
    }
}
