//! gRPC's instruments with their exact names, units and labels.
//!
//! | instrument | kind | unit | labels (optional ones in brackets) | default | where |
//! |---|---|---|---|---|---|
//! | `grpc.client.attempt.started` | counter | `{attempt}` | method, target | on | `channel/call.rs` |
//! | `grpc.client.attempt.duration` | histogram | `s` | method, target, status | on | `channel/call.rs` |
//! | `grpc.client.attempt.sent_total_compressed_message_size` | histogram | `By` | method, target, status | on | `channel/call.rs` |
//! | `grpc.client.attempt.rcvd_total_compressed_message_size` | histogram | `By` | method, target, status | on | `channel/call.rs` |
//! | `grpc.client.call.duration` | histogram | `s` | method, target, status | on | `channel/call.rs` |
//! | `grpc.server.call.started` | counter | `{call}` | method | on | lb-transport's server |
//! | `grpc.server.call.sent_total_compressed_message_size` | histogram | `By` | method, status | on | lb-transport's server |
//! | `grpc.server.call.rcvd_total_compressed_message_size` | histogram | `By` | method, status | on | lb-transport's server |
//! | `grpc.server.call.duration` | histogram | `s` | method, status | on | lb-transport's server |
//! | `grpc.lb.pick_first.disconnections` | counter | `{disconnection}` | target | off | `pick_first` |
//! | `grpc.lb.pick_first.connection_attempts_succeeded` | counter | `{attempt}` | target | off | `pick_first` |
//! | `grpc.lb.pick_first.connection_attempts_failed` | counter | `{attempt}` | target | off | `pick_first` |
//! | `grpc.lb.wrr.rr_fallback` | counter | `{update}` | target, \[locality\] | off | `weighted_round_robin` |
//! | `grpc.lb.wrr.endpoint_weight_not_yet_usable` | counter | `{endpoint}` | target, \[locality\] | off | `weighted_round_robin` |
//! | `grpc.lb.wrr.endpoint_weight_stale` | counter | `{endpoint}` | target, \[locality\] | off | `weighted_round_robin` |
//! | `grpc.lb.wrr.endpoint_weights` | histogram | `{weight}` | target, \[locality\] | off | `weighted_round_robin` |
//! | `grpc.subchannel.disconnections` | counter | `{disconnection}` | target, \[backend service, locality, disconnect error\] | off | `channel/pool.rs` |
//! | `grpc.subchannel.connection_attempts_succeeded` | counter | `{attempt}` | target, \[backend service, locality\] | off | `channel/pool.rs` |
//! | `grpc.subchannel.connection_attempts_failed` | counter | `{attempt}` | target, \[backend service, locality\] | off | `channel/pool.rs` |
//! | `grpc.subchannel.open_connections` | up-down counter | `{connection}` | target, \[backend service, locality\] | off | `channel/pool.rs` |
//!
//! Per gRFC A66, `grpc.method` is the method's full name without the leading `/`
//! (`echo.Echo/Say`); `grpc.status` is the code's name (`OK`, `UNAVAILABLE`).
//! A66 records methods that are not registered as `other`, to bound the label's
//! values. lb-transport's server does (it knows its methods); the client cannot
//! tell a generated method from another and records every method's name (a
//! deviation).

use super::{Instrument, InstrumentKind};

/// The method's full name, without the leading `/`.
pub const LABEL_METHOD: &str = "grpc.method";
/// The channel's target.
pub const LABEL_TARGET: &str = "grpc.target";
/// The call's status code name.
pub const LABEL_STATUS: &str = "grpc.status";
/// The locality (the `weighted_target` child) traffic goes to.
pub const LABEL_LOCALITY: &str = "grpc.lb.locality";
/// The backend service (xDS cluster) traffic goes to (gRFC A89).
pub const LABEL_BACKEND_SERVICE: &str = "grpc.lb.backend_service";
/// Why a connection ended (gRFC A94's list).
pub const LABEL_DISCONNECT_ERROR: &str = "grpc.disconnect_error";

/// gRFC A66's latency buckets, in seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0, 0.00001, 0.00005, 0.0001, 0.0003, 0.0006, 0.0008, 0.001, 0.002, 0.003, 0.004, 0.005,
    0.006, 0.008, 0.01, 0.013, 0.016, 0.02, 0.025, 0.03, 0.04, 0.05, 0.065, 0.08, 0.1, 0.13, 0.16,
    0.2, 0.25, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0,
];

/// gRFC A66's size buckets, in bytes.
pub const SIZE_BUCKETS: &[f64] = &[
    0.0,
    1024.0,
    2048.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
    268_435_456.0,
    1_073_741_824.0,
    4_294_967_296.0,
];

/// Buckets for WRR endpoint weights (queries per second per unit of
/// utilization); gRFC A78 leaves them to the implementation.
pub const WEIGHT_BUCKETS: &[f64] = &[
    0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];

const METHOD_TARGET: &[&str] = &[LABEL_METHOD, LABEL_TARGET];
const METHOD_TARGET_STATUS: &[&str] = &[LABEL_METHOD, LABEL_TARGET, LABEL_STATUS];
const TARGET: &[&str] = &[LABEL_TARGET];
const LOCALITY: &[&str] = &[LABEL_LOCALITY];
const SERVICE_LOCALITY: &[&str] = &[LABEL_BACKEND_SERVICE, LABEL_LOCALITY];

const fn counter(
    name: &'static str,
    description: &'static str,
    unit: &'static str,
    labels: &'static [&'static str],
    optional_labels: &'static [&'static str],
    default_enabled: bool,
) -> Instrument {
    Instrument::new(name, description, unit, labels, InstrumentKind::U64Counter)
        .with_optional_labels(optional_labels)
        .enabled_by_default(default_enabled)
}

const fn histogram(
    name: &'static str,
    description: &'static str,
    unit: &'static str,
    labels: &'static [&'static str],
    optional_labels: &'static [&'static str],
    default_enabled: bool,
    buckets: &'static [f64],
) -> Instrument {
    Instrument::new(
        name,
        description,
        unit,
        labels,
        InstrumentKind::F64Histogram,
    )
    .with_optional_labels(optional_labels)
    .enabled_by_default(default_enabled)
    .with_buckets(buckets)
}

/// `grpc.client.attempt.started`: attempts started, retries and hedges included.
pub static CLIENT_ATTEMPT_STARTED: Instrument = counter(
    "grpc.client.attempt.started",
    "Number of client call attempts started.",
    "{attempt}",
    METHOD_TARGET,
    &[],
    true,
);

/// `grpc.client.attempt.duration`: from an attempt's start to its end.
pub static CLIENT_ATTEMPT_DURATION: Instrument = histogram(
    "grpc.client.attempt.duration",
    "End-to-end time taken to complete a client call attempt.",
    "s",
    METHOD_TARGET_STATUS,
    &[],
    true,
    LATENCY_BUCKETS,
);

/// `grpc.client.attempt.sent_total_compressed_message_size`: the request bytes of
/// one attempt.
pub static CLIENT_ATTEMPT_SENT_TOTAL_COMPRESSED_MESSAGE_SIZE: Instrument = histogram(
    "grpc.client.attempt.sent_total_compressed_message_size",
    "Compressed message bytes sent per client call attempt.",
    "By",
    METHOD_TARGET_STATUS,
    &[],
    true,
    SIZE_BUCKETS,
);

/// `grpc.client.attempt.rcvd_total_compressed_message_size`: the response bytes of
/// one attempt.
pub static CLIENT_ATTEMPT_RCVD_TOTAL_COMPRESSED_MESSAGE_SIZE: Instrument = histogram(
    "grpc.client.attempt.rcvd_total_compressed_message_size",
    "Compressed message bytes received per call attempt.",
    "By",
    METHOD_TARGET_STATUS,
    &[],
    true,
    SIZE_BUCKETS,
);

/// `grpc.client.call.duration`: from the call's start to its status, all attempts
/// and backoffs included.
pub static CLIENT_CALL_DURATION: Instrument = histogram(
    "grpc.client.call.duration",
    "Time taken by gRPC to complete an RPC from application's perspective.",
    "s",
    METHOD_TARGET_STATUS,
    &[],
    true,
    LATENCY_BUCKETS,
);

/// `grpc.server.call.started`: calls a server received.
pub static SERVER_CALL_STARTED: Instrument = counter(
    "grpc.server.call.started",
    "Number of server calls started.",
    "{call}",
    &[LABEL_METHOD],
    &[],
    true,
);

/// `grpc.server.call.sent_total_compressed_message_size`.
pub static SERVER_CALL_SENT_TOTAL_COMPRESSED_MESSAGE_SIZE: Instrument = histogram(
    "grpc.server.call.sent_total_compressed_message_size",
    "Compressed message bytes sent per server call.",
    "By",
    &[LABEL_METHOD, LABEL_STATUS],
    &[],
    true,
    SIZE_BUCKETS,
);

/// `grpc.server.call.rcvd_total_compressed_message_size`.
pub static SERVER_CALL_RCVD_TOTAL_COMPRESSED_MESSAGE_SIZE: Instrument = histogram(
    "grpc.server.call.rcvd_total_compressed_message_size",
    "Compressed message bytes received per server call.",
    "By",
    &[LABEL_METHOD, LABEL_STATUS],
    &[],
    true,
    SIZE_BUCKETS,
);

/// `grpc.server.call.duration`.
pub static SERVER_CALL_DURATION: Instrument = histogram(
    "grpc.server.call.duration",
    "End-to-end time taken to complete a call from server transport's perspective.",
    "s",
    &[LABEL_METHOD, LABEL_STATUS],
    &[],
    true,
    LATENCY_BUCKETS,
);

/// `grpc.lb.pick_first.disconnections`.
pub static PICK_FIRST_DISCONNECTIONS: Instrument = counter(
    "grpc.lb.pick_first.disconnections",
    "EXPERIMENTAL. Number of times the selected subchannel becomes disconnected.",
    "{disconnection}",
    TARGET,
    &[],
    false,
);

/// `grpc.lb.pick_first.connection_attempts_succeeded`.
pub static PICK_FIRST_CONNECTION_ATTEMPTS_SUCCEEDED: Instrument = counter(
    "grpc.lb.pick_first.connection_attempts_succeeded",
    "EXPERIMENTAL. Number of successful connection attempts.",
    "{attempt}",
    TARGET,
    &[],
    false,
);

/// `grpc.lb.pick_first.connection_attempts_failed`.
pub static PICK_FIRST_CONNECTION_ATTEMPTS_FAILED: Instrument = counter(
    "grpc.lb.pick_first.connection_attempts_failed",
    "EXPERIMENTAL. Number of failed connection attempts.",
    "{attempt}",
    TARGET,
    &[],
    false,
);

/// `grpc.lb.wrr.rr_fallback`.
pub static WRR_RR_FALLBACK: Instrument = counter(
    "grpc.lb.wrr.rr_fallback",
    "EXPERIMENTAL. Number of scheduler updates in which there were not enough endpoints \
     with valid weight, which caused the WRR policy to fall back to RR behavior.",
    "{update}",
    TARGET,
    LOCALITY,
    false,
);

/// `grpc.lb.wrr.endpoint_weight_not_yet_usable`.
pub static WRR_ENDPOINT_WEIGHT_NOT_YET_USABLE: Instrument = counter(
    "grpc.lb.wrr.endpoint_weight_not_yet_usable",
    "EXPERIMENTAL. Number of endpoints from each scheduler update that don't yet have \
     usable weight information (i.e., either the load report has not yet been received, \
     or it is within the blackout period).",
    "{endpoint}",
    TARGET,
    LOCALITY,
    false,
);

/// `grpc.lb.wrr.endpoint_weight_stale`.
pub static WRR_ENDPOINT_WEIGHT_STALE: Instrument = counter(
    "grpc.lb.wrr.endpoint_weight_stale",
    "EXPERIMENTAL. Number of endpoints from each scheduler update whose latest weight is \
     older than the expiration period.",
    "{endpoint}",
    TARGET,
    LOCALITY,
    false,
);

/// `grpc.lb.wrr.endpoint_weights`.
pub static WRR_ENDPOINT_WEIGHTS: Instrument = histogram(
    "grpc.lb.wrr.endpoint_weights",
    "EXPERIMENTAL. Weight of each endpoint, recorded on every scheduler update. Endpoints \
     without usable weights will be recorded as weight 0.",
    "{weight}",
    TARGET,
    LOCALITY,
    false,
    WEIGHT_BUCKETS,
);

/// `grpc.subchannel.disconnections`.
pub static SUBCHANNEL_DISCONNECTIONS: Instrument = counter(
    "grpc.subchannel.disconnections",
    "EXPERIMENTAL. Number of times the selected subchannel becomes disconnected.",
    "{disconnection}",
    TARGET,
    &[
        LABEL_BACKEND_SERVICE,
        LABEL_LOCALITY,
        LABEL_DISCONNECT_ERROR,
    ],
    false,
);

/// `grpc.subchannel.connection_attempts_succeeded`.
pub static SUBCHANNEL_CONNECTION_ATTEMPTS_SUCCEEDED: Instrument = counter(
    "grpc.subchannel.connection_attempts_succeeded",
    "EXPERIMENTAL. Number of successful connection attempts.",
    "{attempt}",
    TARGET,
    SERVICE_LOCALITY,
    false,
);

/// `grpc.subchannel.connection_attempts_failed`.
pub static SUBCHANNEL_CONNECTION_ATTEMPTS_FAILED: Instrument = counter(
    "grpc.subchannel.connection_attempts_failed",
    "EXPERIMENTAL. Number of failed connection attempts.",
    "{attempt}",
    TARGET,
    SERVICE_LOCALITY,
    false,
);

/// `grpc.subchannel.open_connections`.
pub static SUBCHANNEL_OPEN_CONNECTIONS: Instrument = Instrument::new(
    "grpc.subchannel.open_connections",
    "EXPERIMENTAL. Number of open connections.",
    "{connection}",
    TARGET,
    InstrumentKind::I64UpDownCounter,
)
.with_optional_labels(SERVICE_LOCALITY);

/// Every instrument lb-core records (lb-rls adds its own).
pub static ALL: &[&Instrument] = &[
    &CLIENT_ATTEMPT_STARTED,
    &CLIENT_ATTEMPT_DURATION,
    &CLIENT_ATTEMPT_SENT_TOTAL_COMPRESSED_MESSAGE_SIZE,
    &CLIENT_ATTEMPT_RCVD_TOTAL_COMPRESSED_MESSAGE_SIZE,
    &CLIENT_CALL_DURATION,
    &SERVER_CALL_STARTED,
    &SERVER_CALL_SENT_TOTAL_COMPRESSED_MESSAGE_SIZE,
    &SERVER_CALL_RCVD_TOTAL_COMPRESSED_MESSAGE_SIZE,
    &SERVER_CALL_DURATION,
    &PICK_FIRST_DISCONNECTIONS,
    &PICK_FIRST_CONNECTION_ATTEMPTS_SUCCEEDED,
    &PICK_FIRST_CONNECTION_ATTEMPTS_FAILED,
    &WRR_RR_FALLBACK,
    &WRR_ENDPOINT_WEIGHT_NOT_YET_USABLE,
    &WRR_ENDPOINT_WEIGHT_STALE,
    &WRR_ENDPOINT_WEIGHTS,
    &SUBCHANNEL_DISCONNECTIONS,
    &SUBCHANNEL_CONNECTION_ATTEMPTS_SUCCEEDED,
    &SUBCHANNEL_CONNECTION_ATTEMPTS_FAILED,
    &SUBCHANNEL_OPEN_CONNECTIONS,
];

/// The `grpc.method` value of a method path: without the leading `/`.
pub fn method_label(path: &str) -> &str {
    path.strip_prefix('/').unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_grpcs() {
        let mut names: Vec<&str> = ALL.iter().map(|i| i.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        for i in ALL {
            assert!(i.name.starts_with("grpc."), "{}", i.name);
            assert_eq!(
                i.kind == InstrumentKind::F64Histogram,
                !i.buckets.is_empty(),
                "{}",
                i.name
            );
            assert!(i.buckets.windows(2).all(|w| w[0] < w[1]), "{}", i.name);
            // A66's per-call metrics are on by default, the experimental ones off.
            let per_call = i.name.starts_with("grpc.client.") || i.name.starts_with("grpc.server.");
            assert_eq!(i.default_enabled, per_call, "{}", i.name);
        }
        assert_eq!(method_label("/echo.Echo/Say"), "echo.Echo/Say");
        assert_eq!(CLIENT_ATTEMPT_DURATION.unit, "s");
        assert_eq!(
            CLIENT_ATTEMPT_DURATION.label_keys().collect::<Vec<_>>(),
            ["grpc.method", "grpc.target", "grpc.status"]
        );
    }
}
