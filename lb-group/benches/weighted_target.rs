//! The `weighted_target` picker's pick: 10 READY targets, each a `round_robin` child
//! over one subchannel, built through the real policy with a fake channel.
//!
//! Measured single-threaded and as the aggregate throughput of two threads picking
//! from the same picker, in the shape of `lb-core/benches/pick.rs`: the two-thread
//! figure is wall time divided by the total number of picks, so
//! `1_thread / 2_threads` is the speed-up.

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use lb_core::Endpoint;
use lb_group::hierarchy;

mod util;

fn picks(c: &mut Criterion) {
    let n = 10;
    let targets: serde_json::Map<String, serde_json::Value> = (0..n)
        .map(|i| {
            let target = serde_json::json!({"weight": 1, "childPolicy": [{"round_robin": {}}]});
            (format!("t{i}"), target)
        })
        .collect();
    let config = serde_json::json!([{"weighted_target_experimental": {"targets": targets}}]);
    let endpoints: Vec<Endpoint> = (0..n)
        .map(|i| {
            let target = format!("t{i}");
            hierarchy::with_path(
                Endpoint::new([format!("10.0.0.{i}:443").as_str()]),
                &[&target],
            )
        })
        .collect();
    let picker = util::ready_picker(&config, endpoints);
    // Sanity: every target gets picks.
    util::bench_picks(c, "weighted_target/pick", &picker, n);
}

criterion_group!(benches, picks);
criterion_main!(benches);
