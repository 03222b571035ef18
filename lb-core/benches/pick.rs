//! Pick-path benchmarks: the cost of one `Picker::pick`, single-threaded and as the
//! aggregate throughput of two threads picking from the same picker.
//!
//! Reported by `cargo xtask bench`, which reads criterion's estimates and prints the
//! two-thread scaling ratio. The two-thread figure is wall time divided by the total
//! number of picks, so `1_thread / 2_threads` is the speed-up.

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use lb_core::{
    ChannelController, ConnectivityState, LbPolicyBuilder, Picker, ResolverUpdate, endpoints,
};
use lb_testkit::{FakeController, ManualClock};

/// A READY picker built through the real policy with `n` READY subchannels.
fn ready_picker(builder: &dyn LbPolicyBuilder, n: usize) -> Arc<dyn Picker> {
    ready_picker_with(builder, n, serde_json::json!({}))
}

/// Like [`ready_picker`], with the policy's JSON config.
fn ready_picker_with(
    builder: &dyn LbPolicyBuilder,
    n: usize,
    config: serde_json::Value,
) -> Arc<dyn Picker> {
    let clock = ManualClock::new();
    let mut ctrl = FakeController::new();
    let mut policy = builder.build(ctrl.policy_options());
    let addrs: Vec<String> = (0..n)
        .map(|i| format!("10.0.{}.{}:443", i / 256, i % 256))
        .collect();
    let update = ResolverUpdate::from_endpoints(endpoints(addrs.iter().map(String::as_str)));
    let config = builder
        .parse_config(&config, &lb_core::LbPolicyRegistry::new())
        .expect("config parses");
    policy
        .resolver_update(update, Some(&config), &mut ctrl, clock.now())
        .expect("update accepted");
    for sc in ctrl.created_subchannels().to_vec() {
        ctrl.update_subchannel(&mut *policy, &sc, ConnectivityState::Ready, clock.now());
    }
    let state = ctrl.latest_state();
    assert_eq!(state.connectivity_state, ConnectivityState::Ready);
    state.picker
}

/// Benchmarks one picker as `<name>/1_thread` and `<name>/2_threads`.
fn bench_picker(c: &mut Criterion, name: &str, picker: Arc<dyn Picker>) {
    let mut group = c.benchmark_group(name);
    // Both arms use the same loop on spawned threads, so their ratio is the scaling.
    group.bench_function("1_thread", |b| {
        b.iter_custom(|iters| lb_testkit::picks::parallel_picks(&picker, 1, iters))
    });
    group.bench_function("2_threads", |b| {
        b.iter_custom(|iters| lb_testkit::picks::parallel_picks(&picker, 2, iters))
    });
    group.finish();
}

fn picks(c: &mut Criterion) {
    use lb_core::policies::{
        least_request::LeastRequestBuilder, pick_first::PickFirstBuilder,
        ring_hash::RingHashBuilder, round_robin::RoundRobinBuilder,
    };
    bench_picker(
        c,
        "round_robin_pick_10",
        ready_picker(&RoundRobinBuilder, 10),
    );
    bench_picker(c, "pick_first_pick", ready_picker(&PickFirstBuilder, 3));
    bench_picker(c, "weighted_round_robin_pick_10", weighted_picker(false));
    bench_picker(
        c,
        "weighted_round_robin_pick_10_per_call",
        weighted_picker(true),
    );
    bench_picker(
        c,
        "least_request_pick_10",
        ready_picker(&LeastRequestBuilder, 10),
    );
    // The pick loop sends no x-key, so each pick hashes at random and walks to the
    // first READY entry: the ring search plus the random draw.
    bench_picker(
        c,
        "ring_hash_pick_1000",
        ready_picker_with(
            &RingHashBuilder::default(),
            1000,
            serde_json::json!({"requestHashHeader": "x-key"}),
        ),
    );
}

/// A weighted_round_robin picker over 10 subchannels weighted 1 to 10; with
/// `per_call`, each pick carries the completion callback that reads ORCA trailers
/// (dropped uncalled here), as with per-call reports.
fn weighted_picker(per_call: bool) -> Arc<dyn Picker> {
    let mut ctrl = FakeController::new();
    let subchannels = (0..10)
        .map(|i| ctrl.new_subchannel(&lb_core::Address::new(format!("10.0.0.{i}:443"))))
        .collect();
    let weights: Vec<f64> = (1..=10).map(f64::from).collect();
    lb_core::policies::weighted_round_robin::picker(subchannels, &weights, per_call)
}

criterion_group!(benches, picks);
criterion_main!(benches);
