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
