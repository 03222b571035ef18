//! The `outlier_detection` picker's pick: success-rate ejection over a `round_robin`
//! child with 10 READY subchannels, built through the real policy with a fake
//! channel. Each pick looks up the picked address's counter and wraps the completion
//! callback (which the pick loop drops unrun).
//!
//! Measured single-threaded and as the aggregate throughput of two threads picking
//! from the same picker (see `util`).

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use lb_core::endpoints;

mod util;

fn picks(c: &mut Criterion) {
    let config = serde_json::json!([{"outlier_detection_experimental": {
        "successRateEjection": {},
        "childPolicy": [{"round_robin": {}}],
    }}]);
    let addresses: Vec<String> = (0..10).map(|i| format!("10.0.0.{i}:443")).collect();
    let picker = util::ready_picker(&config, endpoints(addresses.iter().map(String::as_str)));
    util::bench_picks(c, "outlier_detection/pick", &picker, 10);
}

criterion_group!(benches, picks);
criterion_main!(benches);
