//! Out-of-band ORCA load reports (gRFC A51) on the client: one
//! `OpenRcaService/StreamCoreMetrics` stream per READY connection whose policy asked
//! with [`Subchannel::request_oob_reports`](crate::Subchannel::request_oob_reports).
//! Runs on the serializer, driven by `pool.rs`, like health checks.
//!
//! ```text
//!   policy: request_oob_reports(period, listener) ─> Input::OobRequest ─> pool
//!   connection READY and asked ──> open StreamCoreMetrics{report_interval: period}
//!     report ──> listener(&report) on the serializer (the latest one only)
//!     stream ends UNIMPLEMENTED ──> logged once, not re-opened on this connection
//!     stream ends otherwise ─────> re-open: at once after a report, else after
//!                                  the channel's backoff
//!     garbage ──────────────────> cancelled, then as above
//!   connection leaves READY / the policy stops asking / shutdown ──> cancelled
//! ```
//!
//! The serializer's queue: a stream's listener sends at most one [`Input::Orca`] at a
//! time and keeps only the latest report (the mailbox is [`super::watch`]'s), so
//! out-of-band reports add at most one queued input per READY subchannel that a
//! policy asked about, however fast a server sends. Policies that never ask open no
//! stream.

use std::sync::Weak;
use std::time::Instant;

use super::core::Input;
use super::watch::{self, Follow, Kind, Reopen, Target};
use crate::orca::{
    self, OobListener, OobRequest, OrcaDecodeError, OrcaLoadReport, OrcaLoadReportRequest,
};
use crate::status::Status;

/// The mailbox of one `StreamCoreMetrics` stream.
pub(crate) type Slot = watch::Slot<OrcaLoadReport, OrcaDecodeError>;

fn kind() -> Kind<OrcaLoadReport, OrcaDecodeError> {
    Kind {
        decode: OrcaLoadReport::decode,
        input: |id, slot| Input::Orca { id, slot },
    }
}

/// The out-of-band stream of one READY connection.
pub(crate) struct OobStream {
    listener: OobListener,
    follow: Follow<OrcaLoadReport, OrcaDecodeError>,
}

impl OobStream {
    /// Opens the stream on `target`'s connection.
    pub(crate) fn start(request: OobRequest, target: Target) -> Self {
        let bytes = OrcaLoadReportRequest::every(request.period).encode();
        Self {
            listener: request.listener,
            follow: Follow::start(target, orca::STREAM_CORE_METRICS_METHOD, bytes, kind),
        }
    }

    /// The listener of `slot` announced news: hands the latest report to the policy's
    /// listener. Returns when to call [`OobStream::retry`], if the stream ended before
    /// answering.
    pub(crate) fn handle(&mut self, slot: &Weak<Slot>, now: Instant) -> Option<Instant> {
        let (latest, closed) = self.follow.take(slot)?;
        let ended = match latest {
            Some(Ok(report)) => {
                self.follow.answered();
                (self.listener)(&report);
                closed
            }
            Some(Err(error)) => {
                self.follow.cancel();
                Some(Status::internal(format!("ORCA load report: {error}")))
            }
            None => closed,
        }?;
        match self.follow.ended(&ended, now) {
            Reopen::Never => {
                log::error!(
                    "{}: the server does not implement {}; no out-of-band load reports \
                     on this connection: {ended}",
                    self.follow.address(),
                    orca::STREAM_CORE_METRICS_METHOD
                );
                None
            }
            Reopen::Now => {
                self.follow.open();
                None
            }
            Reopen::At(at) => Some(at),
        }
    }

    /// A retry timer set for `at` fired.
    pub(crate) fn retry(&mut self, at: Instant) {
        if self.follow.due(at) {
            self.follow.open();
        }
    }

    /// Stops: cancels the stream, if one is open.
    pub(crate) fn stop(self) {
        self.follow.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use parking_lot::Mutex;

    use super::*;
    use crate::channel::watch::tests::{Recorder, target};
    use crate::status::Code;
    use crate::transport::CallOutcome;

    fn next_slot(rx: &crossbeam_channel::Receiver<Input>) -> Weak<Slot> {
        match rx.try_recv() {
            Ok(Input::Orca { slot, .. }) => slot,
            other => panic!("not an ORCA input: {other:?}"),
        }
    }

    #[test]
    fn a_flood_of_reports_queues_one_input_and_the_policy_sees_the_latest() {
        let connection = Arc::new(Recorder::default());
        let (tx, rx) = crossbeam_channel::unbounded();
        let got: Arc<Mutex<Vec<f64>>> = Arc::default();
        let g = got.clone();
        let request = OobRequest {
            period: Duration::from_secs(3),
            listener: Arc::new(move |r: &OrcaLoadReport| g.lock().push(r.cpu_utilization)),
        };
        let mut oob = OobStream::start(request, target(&connection, tx));
        assert_eq!(
            connection.method.lock().as_str(),
            orca::STREAM_CORE_METRICS_METHOD
        );
        let listener = connection.listener.lock().clone().unwrap();
        for i in 0..1000 {
            let report = OrcaLoadReport {
                cpu_utilization: f64::from(i),
                ..Default::default()
            };
            listener.on_message(report.encode());
        }
        assert_eq!(rx.len(), 1, "one input however many reports");
        let now = Instant::now();
        assert_eq!(oob.handle(&next_slot(&rx), now), None);
        assert_eq!(*got.lock(), [999.0], "only the latest report");
        // Garbage cancels the stream; it had answered, so it re-opens at once.
        listener.on_message(vec![0x0b]);
        assert_eq!(oob.handle(&next_slot(&rx), now), None);
        assert!(connection.cancelled.swap(false, Ordering::SeqCst));
        let second = connection.listener.lock().clone().unwrap();
        assert!(!Arc::ptr_eq(&second, &listener), "a new stream");
        // It fails before answering: re-open after the channel's backoff.
        second.on_close(CallOutcome::processed(Status::unavailable("down")));
        let at = oob.handle(&next_slot(&rx), now).expect("a retry time");
        assert_eq!(at, now + Duration::from_secs(1));
        oob.retry(at);
        let third = connection.listener.lock().clone().unwrap();
        assert!(!Arc::ptr_eq(&third, &second));
        // UNIMPLEMENTED: never again on this connection.
        third.on_close(CallOutcome::processed(Status::new(
            Code::Unimplemented,
            "no",
        )));
        assert_eq!(oob.handle(&next_slot(&rx), now), None);
        oob.retry(at);
        assert!(Arc::ptr_eq(
            &connection.listener.lock().clone().unwrap(),
            &third
        ));
        oob.stop();
        assert_eq!(*got.lock(), [999.0]);
    }
}
