//! `xds_cluster_impl_experimental` on its own: drops by category share, and the
//! circuit breaker's count of calls in flight, which every way a call can end
//! gives back.

use std::time::Duration;

use lb_core::{
    CallCompletion, Code, ConnectivityState, LbConfig, LbPolicy, Metadata, PickInfo, PickResult,
    ResolverUpdate, Status, endpoints,
};
use lb_group::cluster_impl::ClusterImpl;
use lb_testkit::{FakeController, ManualClock};
use serde_json::json;

fn config(max: u32, drops: serde_json::Value) -> LbConfig {
    lb_group::registry()
        .parse_load_balancing_config(&json!([{"xds_cluster_impl_experimental": {
            "cluster": "c1",
            "maxConcurrentRequests": max,
            "dropCategories": drops,
            "childPolicy": [{"round_robin": {}}],
        }}]))
        .unwrap()
        .config
}

/// A policy over two READY backends.
fn ready(config: &LbConfig) -> (ClusterImpl, FakeController) {
    let clock = ManualClock::new();
    let mut ctrl = FakeController::new();
    let mut policy = ClusterImpl::new(ctrl.policy_options_with(lb_group::registry()));
    let update = ResolverUpdate::from_endpoints(endpoints(["a:1", "b:1"]));
    policy
        .resolver_update(update, Some(config), &mut ctrl, clock.now())
        .unwrap();
    for sc in ctrl.verify_new_subchannels(2) {
        ctrl.update_subchannel(&mut policy, &sc, ConnectivityState::Ready, clock.now());
    }
    (policy, ctrl)
}

#[test]
fn each_drop_category_drops_its_share_and_names_itself() {
    let (_policy, mut ctrl) = ready(&config(
        u32::MAX,
        json!([
            {"category": "lb", "requestsPerMillion": 100_000},
            {"category": "throttle", "requestsPerMillion": 500_000},
        ]),
    ));
    let state = ctrl.latest_state();
    assert_eq!(state.connectivity_state, ConnectivityState::Ready);
    let md = Metadata::new();
    let (mut lb, mut throttle, mut picked) = (0, 0, 0);
    for _ in 0..100_000 {
        match state.picker.pick(&PickInfo::new("/s/m", &md)) {
            PickResult::Drop(s) if s.message().ends_with("drop category lb") => lb += 1,
            PickResult::Drop(s) if s.message().ends_with("drop category throttle") => {
                assert_eq!(s.code(), Code::Unavailable);
                throttle += 1;
            }
            PickResult::Pick(_) => picked += 1,
            other => panic!("{other:?}"),
        }
    }
    // 10 % first, then half of the rest (45 % of all); 4 standard deviations.
    assert!((8_800..=11_200).contains(&lb), "lb {lb}");
    assert!((43_000..=47_000).contains(&throttle), "throttle {throttle}");
    assert_eq!(lb + throttle + picked, 100_000);
}

#[test]
fn the_circuit_breaker_counts_calls_until_they_end_however_they_end() {
    let (policy, mut ctrl) = ready(&config(2, json!([])));
    let picker = ctrl.latest_state().picker;
    let md = Metadata::new();
    let pick = || match picker.pick(&PickInfo::new("/s/m", &md)) {
        PickResult::Pick(p) => Ok(p),
        PickResult::Drop(s) => Err(s),
        other => panic!("{other:?}"),
    };
    let mut first = pick().unwrap();
    let second = pick().unwrap();
    assert_eq!(policy.in_flight(), 2);
    let refused = pick().unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    assert!(refused.message().contains("circuit breaker"), "{refused}");
    assert_eq!(policy.in_flight(), 2, "a refused call takes no place");

    // The first call ends: its place is free.
    let done = first.on_complete.take().unwrap();
    done(&CallCompletion::new(&Status::ok(), Duration::ZERO));
    assert_eq!(policy.in_flight(), 1);
    let third = pick().unwrap();
    assert_eq!(policy.in_flight(), 2);

    // A pick whose callback is dropped unrun (its call never started) frees
    // its place too.
    drop(second);
    drop(third);
    assert_eq!(policy.in_flight(), 0);
    assert!(pick().is_ok());
}
