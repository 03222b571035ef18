//! ORCA (gRFC A51) on our server: per-call load reports and the out-of-band
//! `xds.service.orca.v3.OpenRcaService` with its server-streaming `StreamCoreMetrics`.
//!
//! ```text
//!   per call:    handler ─ Response::with_load_report(&report) ─> trailer
//!                          (or ServerCall::set_load_report)         endpoint-load-metrics-bin
//!
//!   out of band: program ─ recorder.set(report) ─> MetricsRecorder (latest values only)
//!                StreamCoreMetrics(report_interval) handler, one per client connection:
//!                  loop { send the recorder's report; wait report_interval or cancel }
//! ```
//!
//! - The recorder keeps no queue: a stream sends whatever the values are when its
//!   interval comes round, so a slow client skips reports, never piles them up (the
//!   send side is bounded like every streaming call's, see
//!   [`ServerCall::send`](super::ServerCall::send)).
//! - The interval is the client's `report_interval`, raised to the service's minimum
//!   ([`MIN_REPORT_INTERVAL`](lb_core::orca::MIN_REPORT_INTERVAL), 1 s, unless
//!   [`OrcaService::min_report_interval`] set it lower, for tests).
//! - Each stream holds a worker thread while the client listens (as the health
//!   service's `Watch` does); it ends when the client cancels it or the server closes
//!   the connection.
//!
//! Messages are coded by [`lb_core::orca`], which the client side uses too.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_core::Status;
use lb_core::orca::{self, OrcaLoadReport, OrcaLoadReportRequest};
use parking_lot::Mutex;

use super::{ServerBuilder, ServerCall};

/// The server's current load, shared by the program (which sets it) and the
/// out-of-band streams (which send it). Clones share the values.
///
/// ```
/// use lb_transport::server::orca::MetricsRecorder;
/// let recorder = MetricsRecorder::default();
/// recorder.update(|r| r.cpu_utilization = 0.3);
/// recorder.update(|r| { r.named_metrics.insert("queue".into(), 4.0); });
/// assert_eq!(recorder.report().cpu_utilization, 0.3);
/// ```
#[derive(Clone, Default)]
pub struct MetricsRecorder {
    report: Arc<Mutex<OrcaLoadReport>>,
}

impl MetricsRecorder {
    /// Replaces every value.
    pub fn set(&self, report: OrcaLoadReport) {
        *self.report.lock() = report;
    }

    /// Changes some values.
    pub fn update(&self, change: impl FnOnce(&mut OrcaLoadReport)) {
        change(&mut self.report.lock());
    }

    /// The values now.
    pub fn report(&self) -> OrcaLoadReport {
        self.report.lock().clone()
    }
}

impl fmt::Debug for MetricsRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("MetricsRecorder")
            .field(&*self.report.lock())
            .finish()
    }
}

/// The out-of-band ORCA service: mount it on a [`ServerBuilder`], then set the load
/// through its [`recorder`](OrcaService::recorder).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lb_core::orca::OrcaLoadReport;
/// use lb_transport::server::Server;
/// use lb_transport::server::orca::OrcaService;
///
/// let orca = OrcaService::new();
/// let server = orca.mount(Server::builder()).bind("127.0.0.1:0")?;
/// // Later, from anywhere in the program:
/// orca.recorder().set(OrcaLoadReport { application_utilization: 0.6, rps_fractional: 250.0, ..Default::default() });
/// server.shutdown(Duration::from_millis(100));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct OrcaService {
    recorder: MetricsRecorder,
    min_interval: Duration,
}

impl Default for OrcaService {
    fn default() -> Self {
        Self::new()
    }
}

impl OrcaService {
    /// A service with an empty report and the 1 s minimum interval.
    pub fn new() -> Self {
        Self {
            recorder: MetricsRecorder::default(),
            min_interval: orca::MIN_REPORT_INTERVAL,
        }
    }

    /// Lowers (or raises) the shortest interval the service sends at. gRFC A51 asks
    /// for 1 s; tests use less.
    pub fn min_report_interval(mut self, interval: Duration) -> Self {
        self.min_interval = interval;
        self
    }

    /// The recorder whose values the streams send.
    pub fn recorder(&self) -> &MetricsRecorder {
        &self.recorder
    }

    /// Registers `StreamCoreMetrics` on `builder`.
    pub fn mount(&self, builder: ServerBuilder) -> ServerBuilder {
        let service = self.clone();
        builder.server_streaming(orca::STREAM_CORE_METRICS_METHOD, move |request, call| {
            let request = OrcaLoadReportRequest::decode(&request)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            service.stream(&request, call)
        })
    }

    /// Sends a report every interval until the call is cancelled.
    fn stream(&self, request: &OrcaLoadReportRequest, call: &mut ServerCall) -> Result<(), Status> {
        let interval = request.report_interval.max(self.min_interval);
        loop {
            call.send(&self.recorder.report().encode())?;
            if call.wait_cancelled(Instant::now() + interval) {
                return Err(Status::cancelled("StreamCoreMetrics cancelled"));
            }
        }
    }
}
