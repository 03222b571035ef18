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

use std::sync::{Arc, Weak};
use std::time::Instant;

use crossbeam_channel::Sender;

use super::core::Input;
use super::watch::{self, Kind, Reopen, Watched, reopen_after};
use crate::address::Address;
use crate::backoff::Backoff;
use crate::orca::{self, OobRequest, OrcaDecodeError, OrcaLoadReport, OrcaLoadReportRequest};
use crate::status::Status;
use crate::subchannel::SubchannelId;
use crate::transport::Connection;

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
    request: OobRequest,
    address: Address,
    connection: Arc<dyn Connection>,
    tx: Sender<Input>,
    id: SubchannelId,
    watch: Option<Watched<OrcaLoadReport, OrcaDecodeError>>,
    retry_at: Option<Instant>,
    backoff: Backoff,
}

impl OobStream {
    /// Opens the stream on `connection`.
    pub(crate) fn start(
        request: OobRequest,
        address: &Address,
        connection: Arc<dyn Connection>,
        tx: Sender<Input>,
        id: SubchannelId,
        backoff: Backoff,
    ) -> Self {
        let mut stream = Self {
            request,
            address: address.clone(),
            connection,
            tx,
            id,
            watch: None,
            retry_at: None,
            backoff,
        };
        stream.open();
        stream
    }

    fn open(&mut self) {
        self.retry_at = None;
        let request = OrcaLoadReportRequest::every(self.request.period).encode();
        self.watch = Some(Watched::open(
            &self.connection,
            orca::STREAM_CORE_METRICS_METHOD,
            request,
            self.id,
            self.tx.clone(),
            kind(),
        ));
    }

    /// The listener of `slot` announced news: hands the latest report to the policy's
    /// listener. Returns when to call [`OobStream::retry`], if the stream ended before
    /// answering.
    pub(crate) fn handle(&mut self, slot: &Weak<Slot>, now: Instant) -> Option<Instant> {
        let watch = self.watch.as_mut().filter(|w| w.is(slot))?;
        let (latest, closed) = watch.take();
        let ended = match latest {
            Some(Ok(report)) => {
                watch.answered = true;
                (self.request.listener)(&report);
                closed
            }
            Some(Err(error)) => {
                watch.cancel();
                Some(Status::internal(format!("ORCA load report: {error}")))
            }
            None => closed,
        }?;
        let answered = self.watch.take().is_some_and(|w| w.answered);
        match reopen_after(&ended, answered, &mut self.backoff, now) {
            Reopen::Never => {
                log::error!(
                    "{}: the server does not implement {}; no out-of-band load reports \
                     on this connection: {ended}",
                    self.address,
                    orca::STREAM_CORE_METRICS_METHOD
                );
                None
            }
            Reopen::Now => {
                self.open();
                None
            }
            Reopen::At(at) => {
                self.retry_at = Some(at);
                Some(at)
            }
        }
    }

    /// A retry timer set for `at` fired.
    pub(crate) fn retry(&mut self, at: Instant) {
        if self.watch.is_none() && self.retry_at == Some(at) {
            self.open();
        }
    }

    /// Stops: cancels the stream, if one is open.
    pub(crate) fn stop(self) {
        if let Some(watch) = self.watch {
            watch.cancel();
        }
    }
}
