//! What lb-group's pick benchmarks share: a READY picker built through a real policy
//! on a fake channel, and the one- and two-thread pick measurement (in the shape of
//! `lb-core/benches/pick.rs`: the two-thread figure is wall time divided by the total
//! number of picks, so `1_thread / 2_threads` is the speed-up).

use std::sync::Arc;

use criterion::Criterion;
use lb_core::{ConnectivityState, Endpoint, LbPolicyRegistry, Picker, ResolverUpdate};
use lb_testkit::{FakeController, ManualClock};

/// The picker the policy `config` (a `loadBalancingConfig` list, parsed with
/// lb-group's policies registered) publishes over `endpoints` once every subchannel
/// is READY.
pub(crate) fn ready_picker(
    config: &serde_json::Value,
    endpoints: Vec<Endpoint>,
) -> Arc<dyn Picker> {
    let mut registry = LbPolicyRegistry::with_builtins();
    lb_group::register(&mut registry);
    let parsed = registry
        .parse_load_balancing_config(config)
        .expect("valid config");
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

/// Checks that 20 picks reach `spread` addresses, then benchmarks the picker as
/// `<name>/1_thread` and `<name>/2_threads`.
pub(crate) fn bench_picks(c: &mut Criterion, name: &str, picker: &Arc<dyn Picker>, spread: usize) {
    let seen: std::collections::HashSet<_> = lb_testkit::picks::take_addresses(&**picker, 20)
        .into_iter()
        .collect();
    assert_eq!(seen.len(), spread);
    let mut group = c.benchmark_group(name);
    // Both arms use the same loop on spawned threads, so their ratio is the scaling.
    group.bench_function("1_thread", |b| {
        b.iter_custom(|iters| lb_testkit::picks::parallel_picks(picker, 1, iters))
    });
    group.bench_function("2_threads", |b| {
        b.iter_custom(|iters| lb_testkit::picks::parallel_picks(picker, 2, iters))
    });
    group.finish();
}
