//! Client-side health checks (gRFC A17): one `grpc.health.v1.Health/Watch` stream
//! per READY connection while the service config has `healthCheckConfig`, turned
//! into the state the subchannel's policy sees. Runs on the serializer; the only
//! thing on the transport's threads is the stream's listener, which stores what
//! arrived and wakes the serializer.
//!
//! ```text
//!   connection READY ──> open Watch(service) ── policy sees CONNECTING
//!     response SERVING ─────────────────────────> READY (calls may use it)
//!     response NOT_SERVING, UNKNOWN, … ─────────> TRANSIENT_FAILURE("… NOT_SERVING")
//!     stream ends UNIMPLEMENTED ────────────────> READY, logged once, never re-opened
//!     stream ends otherwise ────────────────────> TRANSIENT_FAILURE, then re-open:
//!         after a response on it: at once; else after the channel's backoff
//!         (re-opening shows CONNECTING until the next response)
//!   connection leaves READY / subchannel shut down ──> the stream is cancelled
//! ```
//!
//! The serializer's queue: a listener sends at most one [`Input::Health`] at a time.
//! It keeps only the latest response (and the close) in its [`Slot`] and sends again
//! only after the serializer has taken what the previous one announced. So health
//! checks add at most one queued input per READY subchannel, however fast a server
//! sends. Response bytes are released (flow-control credit) when the serializer
//! takes them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use super::core::Input;
use crate::address::Address;
use crate::backoff::Backoff;
use crate::health::{self, ServingStatus};
use crate::metadata::Metadata;
use crate::protowire::DecodeError;
use crate::state::ConnectivityState;
use crate::status::{Code, Status};
use crate::subchannel::{SubchannelId, SubchannelState};
use crate::transport::{CallHead, CallListener, CallOutcome, CallStream, Connection};

/// What one watch stream's listener has stored for the serializer.
#[derive(Default)]
struct Arrived {
    /// The latest response, or the first that did not decode (which sticks).
    latest: Option<Result<ServingStatus, DecodeError>>,
    /// Response bytes not yet released to the transport.
    unreleased: usize,
    closed: Option<Status>,
}

/// The mailbox between one watch stream's listener and the serializer.
pub(crate) struct Slot {
    id: SubchannelId,
    arrived: Mutex<Arrived>,
    /// An [`Input::Health`] for this slot is queued and not yet handled.
    announced: AtomicBool,
    tx: Sender<Input>,
}

impl Slot {
    fn announce(self: &Arc<Self>) {
        if !self.announced.swap(true, Ordering::AcqRel) {
            // A weak reference: a queued input never keeps the slot (and the
            // sender in it) alive.
            let _ = self.tx.send(Input::Health {
                id: self.id,
                slot: Arc::downgrade(self),
            });
        }
    }
}

/// The watch stream's listener (on the transport's threads): store, then announce.
struct WatchListener(Arc<Slot>);

impl CallListener for WatchListener {
    fn on_headers(&self, _: Metadata) {}

    fn on_message(&self, message: Vec<u8>) {
        {
            let mut arrived = self.0.arrived.lock();
            arrived.unreleased += message.len();
            if !matches!(arrived.latest, Some(Err(_))) {
                arrived.latest = Some(health::decode_response(&message));
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

/// One open watch stream.
struct Watch {
    slot: Arc<Slot>,
    stream: Arc<dyn CallStream>,
    /// A response arrived on this stream.
    answered: bool,
}

/// What a health check wants done after a step.
#[derive(Debug, Default)]
pub(crate) struct Step {
    /// States for the policy, in order.
    pub(crate) show: Vec<SubchannelState>,
    /// Call [`HealthCheck::retry`] at this time.
    pub(crate) retry_at: Option<Instant>,
}

/// The health check of one READY connection.
pub(crate) struct HealthCheck {
    service: String,
    address: Address,
    connection: Arc<dyn Connection>,
    tx: Sender<Input>,
    id: SubchannelId,
    watch: Option<Watch>,
    retry_at: Option<Instant>,
    backoff: Backoff,
    /// What the policy was told last.
    shown: SubchannelState,
}

impl HealthCheck {
    /// Starts watching `service` on `connection`; the policy was last told `shown`
    /// (CONNECTING for a new connection).
    pub(crate) fn start(
        service: &str,
        address: &Address,
        connection: Arc<dyn Connection>,
        tx: Sender<Input>,
        id: SubchannelId,
        backoff: Backoff,
        shown: SubchannelState,
    ) -> Self {
        let mut check = Self {
            service: service.to_owned(),
            address: address.clone(),
            connection,
            tx,
            id,
            watch: None,
            retry_at: None,
            backoff,
            shown,
        };
        check.open();
        check
    }

    /// Whether calls may use the connection.
    pub(crate) fn is_healthy(&self) -> bool {
        self.shown.connectivity_state == ConnectivityState::Ready
    }

    /// What the policy was told last.
    pub(crate) fn shown(&self) -> &SubchannelState {
        &self.shown
    }

    fn open(&mut self) {
        let slot = Arc::new(Slot {
            id: self.id,
            arrived: Mutex::new(Arrived::default()),
            announced: AtomicBool::new(false),
            tx: self.tx.clone(),
        });
        let listener = Arc::new(WatchListener(slot.clone()));
        let stream = self
            .connection
            .open_stream(CallHead::new(health::WATCH_METHOD), listener);
        // An empty stream takes one message; `Closed` means on_close has been sent.
        let _ = stream.try_send(health::encode_request(&self.service), true);
        self.watch = Some(Watch {
            slot,
            stream,
            answered: false,
        });
    }

    /// The listener of `slot` announced news.
    pub(crate) fn handle(&mut self, slot: &Weak<Slot>, now: Instant) -> Step {
        let mut step = Step::default();
        let current = |w: &&mut Watch| std::ptr::eq(Arc::as_ptr(&w.slot), slot.as_ptr());
        let Some(watch) = self.watch.as_mut().filter(current) else {
            return step; // a stream this check has already given up
        };
        watch.slot.announced.store(false, Ordering::Release);
        let Arrived {
            latest,
            unreleased,
            closed,
        } = std::mem::take(&mut *watch.slot.arrived.lock());
        if unreleased > 0 {
            watch.stream.release(unreleased);
        }
        let ended = match latest {
            Some(Ok(status)) => {
                watch.answered = true;
                let state = if status == ServingStatus::Serving {
                    SubchannelState::new(ConnectivityState::Ready)
                } else {
                    SubchannelState::failure(Status::unavailable(format!(
                        "{}: connection active but health check failed: service {:?} is {status}",
                        self.address, self.service
                    )))
                };
                self.show(state, &mut step);
                closed
            }
            Some(Err(error)) => {
                watch.stream.cancel();
                Some(Status::internal(format!(
                    "bad HealthCheckResponse: {error}"
                )))
            }
            None => closed,
        };
        if let Some(status) = ended {
            self.ended(status, now, &mut step);
        }
        step
    }

    /// The watch stream ended with `status`.
    fn ended(&mut self, status: Status, now: Instant, step: &mut Step) {
        let answered = self.watch.take().is_some_and(|w| w.answered);
        if status.code() == Code::Unimplemented {
            log::error!(
                "{}: the server does not implement {}, so this connection counts as \
                 healthy and is not health-checked again: {status}",
                self.address,
                health::WATCH_METHOD
            );
            self.show(SubchannelState::new(ConnectivityState::Ready), step);
            return;
        }
        self.show(
            SubchannelState::failure(Status::unavailable(format!(
                "{}: connection active but the health check stream for service {:?} ended: {status}",
                self.address, self.service
            ))),
            step,
        );
        if answered {
            self.backoff.reset();
            self.reopen(step);
        } else {
            let at = self.backoff.next_attempt_after_failure(now);
            self.retry_at = Some(at);
            step.retry_at = Some(at);
        }
    }

    /// A retry timer set for `at` fired.
    pub(crate) fn retry(&mut self, at: Instant) -> Step {
        let mut step = Step::default();
        if self.watch.is_none() && self.retry_at == Some(at) {
            self.reopen(&mut step);
        }
        step
    }

    fn reopen(&mut self, step: &mut Step) {
        self.retry_at = None;
        self.show(SubchannelState::new(ConnectivityState::Connecting), step);
        self.open();
    }

    fn show(&mut self, state: SubchannelState, step: &mut Step) {
        if state != self.shown {
            self.shown = state.clone();
            step.show.push(state);
        }
    }

    /// Stops: cancels the stream, if one is open.
    pub(crate) fn stop(self) {
        if let Some(watch) = self.watch {
            watch.stream.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;
    use crate::backoff::BackoffConfig;
    use crate::random::SplitMix64;
    use crate::transport::TrySendError;

    /// A connection whose one stream the test drives through its listener.
    #[derive(Default)]
    struct Recorder {
        listener: Mutex<Option<Arc<dyn CallListener>>>,
        released: Arc<AtomicUsize>,
        cancelled: Arc<AtomicBool>,
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
            assert_eq!(head.method, health::WATCH_METHOD);
            *self.listener.lock() = Some(l);
            Arc::new(RecordedStream {
                released: self.released.clone(),
                cancelled: self.cancelled.clone(),
            })
        }
        fn close(&self) {}
    }

    #[test]
    fn a_flood_of_responses_queues_one_input_and_keeps_the_latest() {
        let connection = Arc::new(Recorder::default());
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut check = HealthCheck::start(
            "s",
            &Address::new("a:1"),
            connection.clone(),
            tx,
            SubchannelId(1),
            Backoff::new(BackoffConfig::default(), SplitMix64::seeded(1)),
            SubchannelState::new(ConnectivityState::Connecting),
        );
        let listener = connection.listener.lock().clone().unwrap();
        for i in 0..10_000 {
            let status = if i % 2 == 0 {
                ServingStatus::NotServing
            } else {
                ServingStatus::Serving
            };
            listener.on_message(health::encode_response(status));
        }
        assert_eq!(rx.len(), 1, "one input however many responses");
        let Ok(Input::Health { slot, .. }) = rx.try_recv() else {
            panic!("not a health input");
        };
        let step = check.handle(&slot, Instant::now());
        assert_eq!(
            step.show,
            [SubchannelState::new(ConnectivityState::Ready)],
            "the latest response"
        );
        assert!(check.is_healthy());
        assert_eq!(connection.released.load(Ordering::SeqCst), 10_000 * 2);
        // The next response announces again.
        listener.on_message(health::encode_response(ServingStatus::ServiceUnknown));
        assert_eq!(rx.len(), 1);
        let Ok(Input::Health { slot, .. }) = rx.try_recv() else {
            panic!("not a health input");
        };
        let step = check.handle(&slot, Instant::now());
        let error = step.show[0].last_error.clone().unwrap();
        assert!(error.message().contains("SERVICE_UNKNOWN"), "{error}");
        // Garbage ends the stream: cancelled and TRANSIENT_FAILURE; it had answered,
        // so a new stream opens at once (CONNECTING), as grpc-go does.
        let next = |rx: &crossbeam_channel::Receiver<Input>| match rx.try_recv() {
            Ok(Input::Health { slot, .. }) => slot,
            other => panic!("not a health input: {other:?}"),
        };
        listener.on_message(vec![0xff]);
        let now = Instant::now();
        let step = check.handle(&next(&rx), now);
        assert!(connection.cancelled.swap(false, Ordering::SeqCst));
        assert_eq!(step.retry_at, None);
        let error = step.show[0].last_error.clone().unwrap();
        assert!(
            error.message().contains("bad HealthCheckResponse"),
            "{error}"
        );
        assert_eq!(
            step.show[1].connectivity_state,
            ConnectivityState::Connecting
        );
        // The old stream's close is for a stream the check has given up.
        listener.on_close(CallOutcome::processed(Status::cancelled("cancelled")));
        assert!(check.handle(&next(&rx), now).show.is_empty());
        // The new stream fails before any answer: retry after the initial backoff.
        let second = connection.listener.lock().clone().unwrap();
        assert!(!Arc::ptr_eq(&second, &listener));
        second.on_close(CallOutcome::processed(Status::unavailable("down")));
        let step = check.handle(&next(&rx), now);
        assert_eq!(step.retry_at, Some(now + Duration::from_secs(1)));
        assert_eq!(
            step.show[0].connectivity_state,
            ConnectivityState::TransientFailure
        );
        assert!(check.retry(now).show.is_empty(), "not at another time");
        let step = check.retry(now + Duration::from_secs(1));
        assert_eq!(
            step.show[0].connectivity_state,
            ConnectivityState::Connecting
        );
        check.stop();
    }
}
