//! gRFC A66's per-call client instruments, recorded by `call.rs` at four points:
//! an attempt's stream opens (`grpc.client.attempt.started`), an attempt's
//! listener gets a message (bytes received) and its `on_close` (the attempt's
//! duration and sizes, with its own status), and the call settles for good
//! (`grpc.client.call.duration`, with the call's status).
//!
//! Made only when the channel has a recorder: without one a call holds `None` and
//! reads no clock for metrics.
//!
//! Every attempt counts: transparent retries, `retryPolicy` retries and hedges.
//! Sizes are the message bytes the call handed to the transport (sent) and got
//! from it (received), before compression and after decompression: lb-core does
//! not see the wire. They equal A66's "compressed" sizes for calls without
//! compression. An attempt's sent size is every request byte the call had
//! accepted when the attempt ended: a retry replays the messages sent before it,
//! so this is what the attempt carried (or was about to).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use super::clock::Clock;
use crate::metrics::Metrics;
use crate::metrics::instruments::{
    CLIENT_ATTEMPT_DURATION, CLIENT_ATTEMPT_RCVD_TOTAL_COMPRESSED_MESSAGE_SIZE,
    CLIENT_ATTEMPT_SENT_TOTAL_COMPRESSED_MESSAGE_SIZE, CLIENT_ATTEMPT_STARTED,
    CLIENT_CALL_DURATION, method_label,
};
use crate::status::Status;

/// One call's metrics.
pub(super) struct CallMetrics {
    metrics: Metrics,
    clock: Arc<dyn Clock>,
    /// `grpc.method`: the path without its leading `/`.
    method: Box<str>,
    start: Instant,
    /// Request bytes the call has accepted so far.
    sent: AtomicU64,
    /// `grpc.client.call.duration` was recorded.
    done: AtomicBool,
}

impl CallMetrics {
    /// `None` when nobody listens.
    pub(super) fn new(
        metrics: &Metrics,
        clock: &Arc<dyn Clock>,
        method: &str,
        start: Instant,
    ) -> Option<Arc<Self>> {
        metrics.is_enabled().then(|| {
            Arc::new(Self {
                metrics: metrics.clone(),
                clock: clock.clone(),
                method: method_label(method).into(),
                start,
                sent: AtomicU64::new(0),
                done: AtomicBool::new(false),
            })
        })
    }

    /// An attempt's stream is about to open: counts it and starts its clock.
    pub(super) fn attempt(self: &Arc<Self>) -> AttemptMetrics {
        let m = &self.metrics;
        m.add_u64_counter(&CLIENT_ATTEMPT_STARTED, 1, &[&self.method, m.target()]);
        AttemptMetrics {
            call: self.clone(),
            start: self.clock.now(),
            rcvd: AtomicU64::new(0),
        }
    }

    /// The call is handing the transport `bytes` of request messages
    /// (`accepted`), or the transport did not take them after all. Counted
    /// before the hand-over, since the attempt may end before it returns.
    pub(super) fn sent(&self, bytes: usize, accepted: bool) {
        if accepted {
            self.sent.fetch_add(bytes as u64, Ordering::Relaxed);
        } else {
            self.sent.fetch_sub(bytes as u64, Ordering::Relaxed);
        }
    }

    /// The call ended with `status`; only the first report counts.
    pub(super) fn finish(&self, status: &Status) {
        if self.done.swap(true, Ordering::Relaxed) {
            return;
        }
        let elapsed = self.clock.now().saturating_duration_since(self.start);
        let m = &self.metrics;
        let labels = [&*self.method, m.target(), status.code().as_str()];
        m.record_f64_histogram(&CLIENT_CALL_DURATION, elapsed.as_secs_f64(), &labels);
    }
}

/// One attempt's metrics, held by its listener.
pub(super) struct AttemptMetrics {
    call: Arc<CallMetrics>,
    start: Instant,
    rcvd: AtomicU64,
}

impl AttemptMetrics {
    /// The attempt received a message of `bytes`.
    pub(super) fn received(&self, bytes: usize) {
        self.rcvd.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// The attempt's stream closed with `status` (called once: every stream gets
    /// exactly one `on_close`).
    pub(super) fn end(&self, status: &Status) {
        let call = &self.call;
        let elapsed = call.clock.now().saturating_duration_since(self.start);
        let m = &call.metrics;
        let labels = [&*call.method, m.target(), status.code().as_str()];
        m.record_f64_histogram(&CLIENT_ATTEMPT_DURATION, elapsed.as_secs_f64(), &labels);
        let sent = call.sent.load(Ordering::Relaxed) as f64;
        m.record_f64_histogram(
            &CLIENT_ATTEMPT_SENT_TOTAL_COMPRESSED_MESSAGE_SIZE,
            sent,
            &labels,
        );
        let rcvd = self.rcvd.load(Ordering::Relaxed) as f64;
        m.record_f64_histogram(
            &CLIENT_ATTEMPT_RCVD_TOTAL_COMPRESSED_MESSAGE_SIZE,
            rcvd,
            &labels,
        );
    }
}
