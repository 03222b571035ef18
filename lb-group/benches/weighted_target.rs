//! The `weighted_target` picker's pick: 10 READY targets, each a `round_robin` child
//! over one subchannel, built through the real policy with a fake channel.
//!
//! Measured single-threaded and as the aggregate throughput of two threads picking
//! from the same picker, in the shape of `lb-core/benches/pick.rs`: the two-thread
//! figure is wall time divided by the total number of picks, so
//! `1_thread / 2_threads` is the speed-up.

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use lb_core::{ConnectivityState, Endpoint, LbPolicyRegistry, Picker, ResolverUpdate};
use lb_group::hierarchy;
use lb_testkit::{FakeController, ManualClock};

/// A READY `weighted_target` picker over `n` targets of weight 1, each a
/// `round_robin` child with one READY subchannel.
fn ready_picker(n: usize) -> Arc<dyn Picker> {
    let mut registry = LbPolicyRegistry::with_builtins();
    lb_group::register(&mut registry);
    let targets: serde_json::Map<String, serde_json::Value> = (0..n)
        .map(|i| {
            let target = serde_json::json!({"weight": 1, "childPolicy": [{"round_robin": {}}]});
            (format!("t{i}"), target)
        })
        .collect();
    let json = serde_json::json!([{"weighted_target_experimental": {"targets": targets}}]);
    let parsed = registry
        .parse_load_balancing_config(&json)
        .expect("valid config");
    let endpoints: Vec<Endpoint> = (0..n)
        .map(|i| {
            let target = format!("t{i}");
            hierarchy::with_path(
                Endpoint::new([format!("10.0.0.{i}:443").as_str()]),
                &[&target],
            )
        })
        .collect();

    let clock = ManualClock::new();
    let mut ctrl = FakeController::new();
    let mut policy = parsed.builder.build(ctrl.policy_options_with(registry));
    policy
        .resolver_update(
            ResolverUpdate::from_endpoints(endpoints),
            Some(&parsed.config),
            &mut ctrl,
            clock.now(),
        )
        .expect("update accepted");
    for sc in ctrl.created_subchannels().to_vec() {
        ctrl.update_subchannel(&mut *policy, &sc, ConnectivityState::Ready, clock.now());
    }
    let state = ctrl.latest_state();
    assert_eq!(state.connectivity_state, ConnectivityState::Ready);
    // The policy (and its children) may go; the picker holds what it needs.
    state.picker
}

fn picks(c: &mut Criterion) {
    let picker = ready_picker(10);
    // Sanity: every target gets picks.
    let seen: std::collections::HashSet<_> = lb_testkit::picks::take_addresses(&*picker, 20)
        .into_iter()
        .collect();
    assert_eq!(seen.len(), 10);

    let mut group = c.benchmark_group("weighted_target/pick");
    // Both arms use the same loop on spawned threads, so their ratio is the scaling.
    group.bench_function("1_thread", |b| {
        b.iter_custom(|iters| lb_testkit::picks::parallel_picks(&picker, 1, iters))
    });
    group.bench_function("2_threads", |b| {
        b.iter_custom(|iters| lb_testkit::picks::parallel_picks(&picker, 2, iters))
    });
    group.finish();
}

criterion_group!(benches, picks);
criterion_main!(benches);
