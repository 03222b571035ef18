//! What recording metrics costs a call: unary calls on lb-testkit's in-memory
//! transport (no sockets, so the channel's own work dominates) from one thread,
//! with no recorder, with the in-memory recorder and with the Prometheus one.
//!
//! ```text
//! cargo run --release -p lb-core --features prometheus --example metrics_cost -- [CALLS]
//! ```
//!
//! Prints one line per setup: `recorder=… calls=N ns_per_call=…`, the best of
//! three rounds. A measurement, not a test: on a busy machine, run it several
//! times and compare medians.

use std::sync::Arc;
use std::time::Instant;

use lb_core::channel::{CallOptions, Channel};
use lb_core::metrics::prometheus::PrometheusRecorder;
use lb_core::metrics::{InMemoryRecorder, MetricSelection, MetricsRecorder};
use lb_testkit::InMemoryTransport;

/// Makes the recorder of one setup (`None`: no recorder).
type MakeRecorder = fn() -> Option<Arc<dyn MetricsRecorder>>;

fn run(recorder: Option<Arc<dyn MetricsRecorder>>, calls: u32) -> f64 {
    let transport = InMemoryTransport::new();
    transport.serve_address("a:1");
    let mut builder = Channel::builder("passthrough:///a:1").transport(Arc::new(transport));
    if let Some(r) = recorder {
        builder = builder.metrics_recorder(r);
    }
    let channel = builder.build().expect("channel");
    let call = || {
        channel
            .unary(
                "/bench.Echo/Unary",
                b"ping".to_vec(),
                CallOptions::default(),
            )
            .expect("call");
    };
    for _ in 0..1000 {
        call();
    }
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        for _ in 0..calls {
            call();
        }
        best = best.min(start.elapsed().as_nanos() as f64 / f64::from(calls));
    }
    channel.close();
    best
}

fn main() {
    let calls: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50_000);
    let setups: [(&str, MakeRecorder); 3] = [
        ("none", || None),
        ("in-memory", || Some(Arc::new(InMemoryRecorder::new()))),
        ("prometheus", || {
            Some(Arc::new(PrometheusRecorder::with_selection(
                MetricSelection::default(),
            )))
        }),
    ];
    for (name, make) in setups {
        let ns = run(make(), calls);
        println!("recorder={name} calls={calls} ns_per_call={ns:.0}");
    }
}
