//! The `outlier_detection` picker's pick: success-rate ejection over a `round_robin`
//! child with 10 READY subchannels, built through the real policy with a fake
//! channel. Each pick looks up the picked address's counter and wraps the completion
//! callback (the callback is dropped unrun, as the pick loop drops its results).
//!
//! Measured single-threaded and as the aggregate throughput of two threads picking
//! from the same picker, in the shape of `weighted_target.rs`.

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use lb_core::{ConnectivityState, LbPolicyRegistry, Picker, ResolverUpdate, endpoints};
use lb_testkit::{FakeController, ManualClock};

/// A READY `outlier_detection` picker over `round_robin` with `n` subchannels.
fn ready_picker(n: usize) -> Arc<dyn Picker> {
    let mut registry = LbPolicyRegistry::with_builtins();
    lb_group::register(&mut registry);
    let json = serde_json::json!([{"outlier_detection_experimental": {
        "successRateEjection": {},
        "childPolicy": [{"round_robin": {}}],
    }}]);
    let parsed = registry
        .parse_load_balancing_config(&json)
        .expect("valid config");
    let addresses: Vec<String> = (0..n).map(|i| format!("10.0.0.{i}:443")).collect();

    let clock = ManualClock::new();
    let mut ctrl = FakeController::new();
    let mut policy = parsed.builder.build(ctrl.policy_options_with(registry));
    policy
        .resolver_update(
            ResolverUpdate::from_endpoints(endpoints(addresses.iter().map(String::as_str))),
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
    state.picker
}

fn picks(c: &mut Criterion) {
    let picker = ready_picker(10);
    let seen: std::collections::HashSet<_> = lb_testkit::picks::take_addresses(&*picker, 20)
        .into_iter()
        .collect();
    assert_eq!(seen.len(), 10);

    let mut group = c.benchmark_group("outlier_detection/pick");
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
