//! gRFC A66's server instruments (`grpc.server.call.*`), recorded by each
//! connection on the `lb-server-io` thread: a call starts when its request headers
//! arrive and ends when its status goes out (or the stream or connection ends
//! first: CANCELLED).
//!
//! `grpc.method` is the method's name without the leading `/` for the methods the
//! server has, and `other` for the rest (A66: unregistered methods must not grow
//! the label's values). Sizes count the DATA bytes of the call's messages each way,
//! as on the wire (compressed), with gRPC's 5-byte prefix of each message.
//!
//! Without a recorder nothing is kept and no clock is read.

use std::collections::HashMap;
use std::time::Instant;

use lb_core::Status;
use lb_core::metrics::Metrics;
use lb_core::metrics::instruments::{
    SERVER_CALL_DURATION, SERVER_CALL_RCVD_TOTAL_COMPRESSED_MESSAGE_SIZE,
    SERVER_CALL_SENT_TOTAL_COMPRESSED_MESSAGE_SIZE, SERVER_CALL_STARTED, method_label,
};

use crate::frame::StreamId;

/// One call's numbers so far.
struct Call {
    method: Box<str>,
    start: Instant,
    rcvd: u64,
    sent: u64,
}

/// One connection's calls, for the metrics.
pub(crate) struct CallMetrics {
    metrics: Metrics,
    calls: HashMap<StreamId, Call>,
}

impl CallMetrics {
    pub(crate) fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            calls: HashMap::new(),
        }
    }

    /// A call to `path` started on `stream`; `known` tells whether the server has
    /// the method.
    pub(crate) fn start(&mut self, stream: StreamId, path: &str, known: bool) {
        if !self.metrics.is_enabled() {
            return;
        }
        let method: Box<str> = if known {
            method_label(path).into()
        } else {
            "other".into()
        };
        self.metrics
            .add_u64_counter(&SERVER_CALL_STARTED, 1, &[&method]);
        self.calls.insert(
            stream,
            Call {
                method,
                start: Instant::now(),
                rcvd: 0,
                sent: 0,
            },
        );
    }

    /// `bytes` of request DATA arrived on `stream`.
    pub(crate) fn received(&mut self, stream: StreamId, bytes: usize) {
        if let Some(call) = self.calls.get_mut(&stream) {
            call.rcvd += bytes as u64;
        }
    }

    /// `bytes` of response DATA went to `stream`.
    pub(crate) fn sent(&mut self, stream: StreamId, bytes: usize) {
        if let Some(call) = self.calls.get_mut(&stream) {
            call.sent += bytes as u64;
        }
    }

    /// The call on `stream` ended with `status` (only the first end counts).
    pub(crate) fn end(&mut self, stream: StreamId, status: &Status) {
        let Some(call) = self.calls.remove(&stream) else {
            return;
        };
        let m = &self.metrics;
        let labels = [&*call.method, status.code().as_str()];
        let elapsed = call.start.elapsed().as_secs_f64();
        m.record_f64_histogram(&SERVER_CALL_DURATION, elapsed, &labels);
        m.record_f64_histogram(
            &SERVER_CALL_SENT_TOTAL_COMPRESSED_MESSAGE_SIZE,
            call.sent as f64,
            &labels,
        );
        m.record_f64_histogram(
            &SERVER_CALL_RCVD_TOTAL_COMPRESSED_MESSAGE_SIZE,
            call.rcvd as f64,
            &labels,
        );
    }

    /// Every call still open ended with `status` (the connection closed).
    pub(crate) fn end_all(&mut self, status: &Status) {
        let streams: Vec<StreamId> = self.calls.keys().copied().collect();
        for stream in streams {
            self.end(stream, status);
        }
    }
}
