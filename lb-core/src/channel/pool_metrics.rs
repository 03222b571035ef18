//! gRFC A94's subchannel instruments, recorded by the pool (`pool.rs`) on the
//! serializer: a connection attempt succeeded (and a connection opened), failed,
//! or an open connection ended (with A94's `grpc.disconnect_error`).
//!
//! The optional labels `grpc.lb.backend_service` and `grpc.lb.locality` are
//! recorded empty: no policy here sets them on addresses yet.

use crate::metrics::Metrics;
use crate::metrics::instruments::{
    SUBCHANNEL_CONNECTION_ATTEMPTS_FAILED, SUBCHANNEL_CONNECTION_ATTEMPTS_SUCCEEDED,
    SUBCHANNEL_DISCONNECTIONS, SUBCHANNEL_OPEN_CONNECTIONS,
};
use crate::status::Status;
use crate::transport::ConnectionEvent;

/// A connection attempt reached READY: one more attempt succeeded, one more
/// connection open.
pub(super) fn connected(metrics: &Metrics) {
    let labels = [metrics.target(), "", ""];
    metrics.add_u64_counter(&SUBCHANNEL_CONNECTION_ATTEMPTS_SUCCEEDED, 1, &labels);
    metrics.add_i64_up_down_counter(&SUBCHANNEL_OPEN_CONNECTIONS, 1, &labels);
}

/// A connection attempt failed before READY.
pub(super) fn attempt_failed(metrics: &Metrics) {
    let labels = [metrics.target(), "", ""];
    metrics.add_u64_counter(&SUBCHANNEL_CONNECTION_ATTEMPTS_FAILED, 1, &labels);
}

/// An open connection ended (`error` is A94's reason): one more disconnection,
/// one connection fewer.
pub(super) fn disconnected(metrics: &Metrics, error: &str) {
    let target = metrics.target();
    metrics.add_u64_counter(&SUBCHANNEL_DISCONNECTIONS, 1, &[target, "", "", error]);
    metrics.add_i64_up_down_counter(&SUBCHANNEL_OPEN_CONNECTIONS, -1, &[target, "", ""]);
}

/// A94's `grpc.disconnect_error` for the event that ended a READY connection.
pub(super) fn disconnect_error(event: &ConnectionEvent) -> String {
    match event {
        // lb-transport writes "<HTTP/2 error code>: <debug data>".
        ConnectionEvent::GoAway { reason, .. } => {
            let code = reason.split(':').next().unwrap_or("").trim();
            let is_code = !code.is_empty()
                && code
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if is_code {
                format!("GOAWAY {code}")
            } else {
                "unknown".to_owned()
            }
        }
        ConnectionEvent::Closed(None) | ConnectionEvent::Ready => "unknown".to_owned(),
        ConnectionEvent::Closed(Some(status)) => socket_error(status).to_owned(),
    }
}

fn socket_error(status: &Status) -> &'static str {
    let message = status.message().to_ascii_lowercase();
    if message.contains("reset") {
        "connection reset"
    } else if message.contains("timed out") || message.contains("keepalive") {
        "connection timed out"
    } else if message.contains("abort") {
        "connection aborted"
    } else {
        "socket error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disconnect_errors_follow_a94s_list() {
        let goaway = |reason: &str| ConnectionEvent::GoAway {
            reason: reason.into(),
            too_many_pings: false,
        };
        assert_eq!(
            disconnect_error(&goaway("NO_ERROR: bye")),
            "GOAWAY NO_ERROR"
        );
        assert_eq!(
            disconnect_error(&goaway("ENHANCE_YOUR_CALM: too_many_pings")),
            "GOAWAY ENHANCE_YOUR_CALM"
        );
        assert_eq!(disconnect_error(&goaway("")), "unknown");
        assert_eq!(disconnect_error(&goaway("server going away")), "unknown");
        let closed = |m: &str| ConnectionEvent::Closed(Some(Status::unavailable(m)));
        assert_eq!(
            disconnect_error(&closed("Connection reset by peer")),
            "connection reset"
        );
        assert_eq!(
            disconnect_error(&closed("keepalive ping timed out")),
            "connection timed out"
        );
        assert_eq!(disconnect_error(&closed("broken pipe")), "socket error");
        assert_eq!(disconnect_error(&ConnectionEvent::Closed(None)), "unknown");
    }
}
