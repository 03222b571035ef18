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
//! only after the serializer has taken what the previous one announced (the mailbox
//! is [`super::watch`]'s). So health checks add at most one queued input per READY
//! subchannel, however fast a server sends. Response bytes are released
//! (flow-control credit) when the serializer takes them.

use std::sync::Weak;
use std::time::Instant;

use super::core::Input;
use super::watch::{self, Follow, Kind, Reopen, Target};
use crate::health::{self, ServingStatus};
use crate::protowire::DecodeError;
use crate::state::ConnectivityState;
use crate::status::Status;
use crate::subchannel::SubchannelState;

/// The mailbox of one `Watch` stream.
pub(crate) type Slot = watch::Slot<ServingStatus, DecodeError>;

fn kind() -> Kind<ServingStatus, DecodeError> {
    Kind {
        decode: health::decode_response,
        input: |id, slot| Input::Health { id, slot },
    }
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
    follow: Follow<ServingStatus, DecodeError>,
    /// What the policy was told last.
    shown: SubchannelState,
}

impl HealthCheck {
    /// Starts watching `service` on `target`'s connection; the policy was last told
    /// `shown` (CONNECTING for a new connection).
    pub(crate) fn start(service: &str, target: Target, shown: SubchannelState) -> Self {
        let request = health::encode_request(service);
        Self {
            service: service.to_owned(),
            follow: Follow::start(target, health::WATCH_METHOD, request, kind),
            shown,
        }
    }

    /// Whether calls may use the connection.
    pub(crate) fn is_healthy(&self) -> bool {
        self.shown.connectivity_state == ConnectivityState::Ready
    }

    /// What the policy was told last.
    pub(crate) fn shown(&self) -> &SubchannelState {
        &self.shown
    }

    /// The listener of `slot` announced news.
    pub(crate) fn handle(&mut self, slot: &Weak<Slot>, now: Instant) -> Step {
        let mut step = Step::default();
        let Some((latest, closed)) = self.follow.take(slot) else {
            return step; // a stream this check has already given up
        };
        let ended = match latest {
            Some(Ok(status)) => {
                self.follow.answered();
                let state = if status == ServingStatus::Serving {
                    SubchannelState::new(ConnectivityState::Ready)
                } else {
                    SubchannelState::failure(Status::unavailable(format!(
                        "{}: connection active but health check failed: service {:?} is {status}",
                        self.follow.address(),
                        self.service
                    )))
                };
                self.show(state, &mut step);
                closed
            }
            Some(Err(error)) => {
                self.follow.cancel();
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
        let reopen = self.follow.ended(&status, now);
        if reopen == Reopen::Never {
            log::error!(
                "{}: the server does not implement {}, so this connection counts as \
                 healthy and is not health-checked again: {status}",
                self.follow.address(),
                health::WATCH_METHOD
            );
            self.show(SubchannelState::new(ConnectivityState::Ready), step);
            return;
        }
        self.show(
            SubchannelState::failure(Status::unavailable(format!(
                "{}: connection active but the health check stream for service {:?} ended: {status}",
                self.follow.address(),
                self.service
            ))),
            step,
        );
        match reopen {
            Reopen::At(at) => step.retry_at = Some(at),
            _ => self.reopen(step),
        }
    }

    /// A retry timer set for `at` fired.
    pub(crate) fn retry(&mut self, at: Instant) -> Step {
        let mut step = Step::default();
        if self.follow.due(at) {
            self.reopen(&mut step);
        }
        step
    }

    fn reopen(&mut self, step: &mut Step) {
        self.show(SubchannelState::new(ConnectivityState::Connecting), step);
        self.follow.open();
    }

    fn show(&mut self, state: SubchannelState, step: &mut Step) {
        if state != self.shown {
            self.shown = state.clone();
            step.show.push(state);
        }
    }

    /// Stops: cancels the stream, if one is open.
    pub(crate) fn stop(self) {
        self.follow.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use std::sync::Arc;

    use super::*;
    use crate::channel::watch::tests::{Recorder, target};
    use crate::transport::CallOutcome;

    #[test]
    fn a_flood_of_responses_queues_one_input_and_keeps_the_latest() {
        let connection = Arc::new(Recorder::default());
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut check = HealthCheck::start(
            "s",
            target(&connection, tx),
            SubchannelState::new(ConnectivityState::Connecting),
        );
        let listener = connection.listener.lock().clone().unwrap();
        assert_eq!(connection.method.lock().as_str(), health::WATCH_METHOD);
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
