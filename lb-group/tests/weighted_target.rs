//! The `weighted_target` policy, driven through its builder with a fake channel.

mod util;

use std::sync::Arc;
use std::time::Instant;

use lb_core::{
    ConnectivityState, LbConfig, LbPolicy, LbPolicyBuilder, LbPolicyRegistry, Metadata,
    ResolverUpdate, Status, Subchannel,
};
use lb_group::weighted_target::{self, WeightedTargetBuilder};
use lb_testkit::{FakeController, ManualClock, picks};
use serde_json::json;
use util::*;

struct Wt {
    clock: ManualClock,
    ctrl: FakeController,
    policy: Box<dyn LbPolicy>,
    registry: LbPolicyRegistry,
    tracker: Arc<Tracker>,
    history: History,
}

impl Wt {
    fn new() -> Self {
        let tracker = Tracker::new();
        let registry = registry(&tracker);
        let ctrl = FakeController::new();
        let policy = WeightedTargetBuilder.build(ctrl.policy_options_with(registry.clone()));
        Self {
            clock: ManualClock::new(),
            ctrl,
            policy,
            registry,
            tracker,
            history: History::default(),
        }
    }

    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn config(&self, targets: serde_json::Value) -> LbConfig {
        WeightedTargetBuilder
            .parse_config(&json!({ "targets": targets }), &self.registry)
            .unwrap()
    }

    fn update(&mut self, targets: serde_json::Value, endpoints: Vec<lb_core::Endpoint>) {
        let config = self.config(targets);
        let now = self.now();
        self.policy
            .resolver_update(
                ResolverUpdate::from_endpoints(endpoints),
                Some(&config),
                &mut self.ctrl,
                now,
            )
            .unwrap();
    }

    fn set(&mut self, sc: &Subchannel, state: ConnectivityState) {
        let now = self.now();
        self.ctrl
            .update_subchannel(&mut *self.policy, sc, state, now);
    }

    fn ready(&mut self, n: usize) -> Vec<Subchannel> {
        let scs = self.ctrl.verify_new_subchannels(n);
        for sc in &scs {
            self.set(sc, ConnectivityState::Connecting);
            self.set(sc, ConnectivityState::Ready);
        }
        scs
    }
}

fn two_targets(b1: u32, b2: u32, policy: &str) -> serde_json::Value {
    json!({
        "b1": {"weight": b1, "childPolicy": [{ (policy): {} }]},
        "b2": {"weight": b2, "childPolicy": [{ (policy): {} }]},
    })
}

fn split_endpoints() -> Vec<lb_core::Endpoint> {
    let mut eps = eps_at(&["b1"], &[0, 1]);
    eps.extend(eps_at(&["b2"], &[2, 3]));
    eps
}

#[test]
fn scenario_1_picks_by_weight_and_close_shuts_down_everything() {
    let mut wt = Wt::new();
    wt.update(two_targets(2, 1, "round_robin"), split_endpoints());
    let scs = wt.ready(4);
    let state = wt.ctrl.latest_state();
    assert_eq!(state.connectivity_state, ConnectivityState::Ready);
    verify_rr(&state, &[0, 0, 1, 1, 2, 3]);

    wt.policy.close();
    wt.ctrl.verify_shutdowns(&ids(&scs));
}

#[test]
fn endpoints_go_to_the_target_their_path_names() {
    let mut wt = Wt::new();
    let mut all = split_endpoints();
    all.extend(eps(&[8]));
    all.extend(eps_at(&["unknown-target"], &[9]));
    wt.update(two_targets(1, 1, REC_RR), all);
    let scs = wt.ctrl.verify_new_subchannels(4);
    wt.ctrl.verify_no_new_subchannels();
    let got: Vec<String> = scs.iter().map(|s| s.address().address.clone()).collect();
    assert_eq!(
        got,
        addrs(&[0, 1, 2, 3]),
        "no path and unknown targets are dropped"
    );
}

#[test]
fn no_targets_fails_calls() {
    let mut wt = Wt::new();
    wt.update(json!({}), Vec::new());
    let state = wt.ctrl.latest_state();
    assert_eq!(
        state.connectivity_state,
        ConnectivityState::TransientFailure
    );
    let md = Metadata::new();
    assert_eq!(
        picks::describe_pick(&*state.picker, &md),
        "fail:UNAVAILABLE"
    );
    match state.picker.pick(&lb_core::PickInfo::new("/a/b", &md)) {
        lb_core::PickResult::Fail(s) => {
            assert_eq!(s.message(), "weighted-target: no targets to pick from")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_removed_target_closes_at_once_and_weight_changes_apply() {
    let mut wt = Wt::new();
    let three = |w1: u32| {
        json!({
            "b1": {"weight": w1, "childPolicy": [{"round_robin": {}}]},
            "b2": {"weight": 1, "childPolicy": [{"round_robin": {}}]},
            "b3": {"weight": 1, "childPolicy": [{"round_robin": {}}]},
        })
    };
    let mut eps = eps_at(&["b1"], &[0]);
    eps.extend(eps_at(&["b2"], &[1]));
    eps.extend(eps_at(&["b3"], &[2]));
    wt.update(three(2), eps.clone());
    let scs = wt.ready(3);
    verify_rr(&wt.ctrl.latest_state(), &[0, 0, 1, 2]);

    wt.update(three(1), eps.clone());
    verify_rr(&wt.ctrl.latest_state(), &[0, 1, 2]);

    let without_b3 = json!({
        "b1": {"weight": 1, "childPolicy": [{"round_robin": {}}]},
        "b2": {"weight": 1, "childPolicy": [{"round_robin": {}}]},
    });
    wt.update(without_b3, eps);
    wt.ctrl.verify_shutdowns(&[scs[2].id()]);
    verify_rr(&wt.ctrl.latest_state(), &[0, 1]);
}

#[test]
fn a_policy_change_switches_the_target_gracefully() {
    let mut wt = Wt::new();
    wt.update(two_targets(1, 1, "round_robin"), split_endpoints());
    let old = wt.ready(4);
    verify_rr(&wt.ctrl.latest_state(), &[0, 1, 2, 3]);

    let switched = json!({
        "b1": {"weight": 1, "childPolicy": [{"pick_first": {}}]},
        "b2": {"weight": 1, "childPolicy": [{"round_robin": {}}]},
    });
    wt.update(switched, split_endpoints());
    let new = wt.ctrl.verify_new_subchannels(1);
    assert_eq!(new[0].address().address, addr(0));
    wt.ctrl.verify_no_shutdowns();
    wt.ctrl.verify_no_picker();

    wt.set(&new[0], ConnectivityState::Ready);
    wt.ctrl.verify_shutdowns(&[old[0].id(), old[1].id()]);
    // b1 now picks its one pick_first subchannel, a new subchannel for a0.
    let state = wt.ctrl.latest_state();
    let got = picks::take_addresses(&*state.picker, 4);
    assert_eq!(got.iter().filter(|a| **a == addr(0)).count(), 2, "{got:?}");
    assert!(!got.contains(&addr(1)), "{got:?}");
}

#[test]
fn all_targets_failed_fails_with_a_childs_error() {
    let mut wt = Wt::new();
    wt.update(two_targets(1, 1, "round_robin"), split_endpoints());
    let scs = wt.ctrl.verify_new_subchannels(4);
    for sc in &scs {
        wt.set(sc, ConnectivityState::Connecting);
    }
    for sc in &scs[..2] {
        wt.set(sc, ConnectivityState::TransientFailure);
    }
    assert_eq!(
        wt.ctrl.latest_state().connectivity_state,
        ConnectivityState::Connecting,
        "b2 still connects"
    );
    for sc in &scs[2..] {
        wt.set(sc, ConnectivityState::TransientFailure);
    }
    let state = wt.ctrl.latest_state();
    assert_eq!(
        state.connectivity_state,
        ConnectivityState::TransientFailure
    );
    let md = Metadata::new();
    match state.picker.pick(&lb_core::PickInfo::new("/a/b", &md)) {
        lb_core::PickResult::Fail(s) => assert!(s.message().contains("round_robin"), "{s}"),
        other => panic!("{other:?}"),
    }

    wt.set(&scs[3], ConnectivityState::Ready);
    let state = wt.ctrl.latest_state();
    assert_eq!(state.connectivity_state, ConnectivityState::Ready);
    verify_rr(&state, &[3]);
}

#[test]
fn an_idle_target_reconnects_when_picked() {
    let mut wt = Wt::new();
    let config = json!({"b1": {"weight": 1, "childPolicy": [{"pick_first": {}}]}});
    wt.update(config, eps_at(&["b1"], &[0]));
    let sc = wt.ready(1).remove(0);
    wt.set(&sc, ConnectivityState::Idle);
    let state = wt.ctrl.latest_state();
    assert_eq!(state.connectivity_state, ConnectivityState::Idle);
    wt.ctrl.take_events();

    let _ = wt.ctrl.work_scheduler.take_requests();
    assert_eq!(
        picks::describe_pick(&*state.picker, &Metadata::new()),
        "queue"
    );
    assert_eq!(
        wt.ctrl.work_scheduler.take_requests(),
        1,
        "the pick asked for work"
    );
    let now = wt.now();
    wt.policy.work(&mut wt.ctrl, now);
    wt.ctrl.verify_connect(sc.id());
}

#[test]
fn resolver_errors_reach_every_target() {
    let mut wt = Wt::new();
    let config = wt.config(two_targets(1, 1, REC_RR));
    let now = wt.now();
    wt.policy
        .resolver_update(
            ResolverUpdate::from_endpoints(split_endpoints()),
            Some(&config),
            &mut wt.ctrl,
            now,
        )
        .unwrap();
    wt.policy
        .resolver_update(
            ResolverUpdate::from_error(Status::unavailable("dns down")),
            Some(&config),
            &mut wt.ctrl,
            now,
        )
        .unwrap();
    assert_eq!(wt.tracker.count(0, "resolver_update"), 2);
    assert_eq!(wt.tracker.count(1, "resolver_update"), 2);
}

#[test]
fn a_missing_config_is_an_error() {
    let mut wt = Wt::new();
    let now = wt.now();
    let err = wt
        .policy
        .resolver_update(
            ResolverUpdate::from_endpoints(split_endpoints()),
            None,
            &mut wt.ctrl,
            now,
        )
        .unwrap_err();
    assert!(err.to_string().contains("weighted_target"), "{err}");
}

#[test]
fn close_is_terminal_and_leaks_nothing() {
    let mut wt = Wt::new();
    wt.update(two_targets(2, 1, REC_RR), split_endpoints());
    let scs = wt.ready(4);
    wt.policy.close();
    wt.history.take(&mut wt.ctrl);

    wt.update(two_targets(2, 1, REC_RR), split_endpoints());
    wt.set(&scs[0], ConnectivityState::Idle);
    let now = wt.now();
    wt.policy.work(&mut wt.ctrl, now);
    wt.policy.exit_idle(&mut wt.ctrl, now);
    wt.ctrl.verify_no_events();
    wt.tracker.verify_all_closed_once();
    wt.history
        .verify_every_subchannel_shut_down_once(&mut wt.ctrl);
}

#[test]
fn registered_under_both_names() {
    let tracker = Tracker::new();
    let reg = registry(&tracker);
    for name in [weighted_target::NAME, weighted_target::ALIAS] {
        let parsed = reg
            .parse_load_balancing_config(&json!([{ (name): {"targets": {}} }]))
            .unwrap();
        assert_eq!(
            parsed.name(),
            weighted_target::NAME,
            "{name} builds the same policy"
        );
    }
}

#[test]
fn config_errors_name_the_field() {
    let tracker = Tracker::new();
    let reg = registry(&tracker);
    let rr = json!([{"round_robin": {}}]);
    let cases = [
        (json!([]), "must be an object, not an array"),
        (
            json!({"targets": 1}),
            "targets: must be an object, not a number",
        ),
        (
            json!({"targets": {"us": []}}),
            "targets.us: must be an object, not an array",
        ),
        (
            json!({"targets": {"us": {"weight": 0, "childPolicy": rr}}}),
            "targets.us.weight: must be at least 1",
        ),
        (
            json!({"targets": {"us": {"childPolicy": rr}}}),
            "targets.us.weight: is required",
        ),
        (
            json!({"targets": {"us": {"weight": -1, "childPolicy": rr}}}),
            "targets.us.weight: must be an integer from 0 to 4294967295, not a number",
        ),
        (
            json!({"targets": {"us": {"weight": 1.5, "childPolicy": rr}}}),
            "targets.us.weight: must be an integer from 0 to 4294967295, not a number",
        ),
        (
            json!({"targets": {"us": {"weight": "2", "childPolicy": rr}}}),
            "targets.us.weight: must be an integer from 0 to 4294967295, not a string",
        ),
        (
            json!({"targets": {"us": {"weight": 1}}}),
            "targets.us.childPolicy: is required",
        ),
        (
            json!({"targets": {"us": {"weight": 1, "childPolicy": {"round_robin": {}}}}}),
            "targets.us.childPolicy: must be an array of {policy: config} objects, not an object",
        ),
        (
            json!({"targets": {"us": {"weight": 1, "childPolicy": [{"foo": {}}, {"bar": {}}]}}}),
            "targets.us.childPolicy: no registered policy among [\"foo\", \"bar\"]",
        ),
        (
            json!({"targets": {"us": {"weight": 1, "childPolicy": [{"pick_first": {"shuffleAddressList": 3}}]}}}),
            "targets.us.childPolicy[0].pick_first.shuffleAddressList: must be a boolean, not a number",
        ),
    ];
    for (config, want) in cases {
        let err = WeightedTargetBuilder
            .parse_config(&config, &reg)
            .expect_err(&config.to_string());
        assert_eq!(err.to_string(), want, "{config}");
    }

    // Through the registry the path starts at the list entry.
    let err = reg
        .parse_load_balancing_config(&json!([{"weighted_target_experimental": {"targets": {"us": {"weight": 1, "childPolicy": [{"nope": {}}]}}}}]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "[0].weighted_target_experimental.targets.us.childPolicy: no registered policy among [\"nope\"]"
    );

    // Unknown fields are ignored, and a missing `targets` is no targets.
    let ok = WeightedTargetBuilder
        .parse_config(
            &json!({"extra": true, "targets": {"us": {"weight": 3, "childPolicy": rr, "x": 1}}}),
            &reg,
        )
        .unwrap();
    let ok = ok
        .downcast_ref::<weighted_target::WeightedTargetConfig>()
        .unwrap();
    assert_eq!(ok.targets["us"].weight, 3);
    assert_eq!(ok.targets["us"].child_policy.name(), "round_robin");
    let empty = WeightedTargetBuilder
        .parse_config(&json!({}), &reg)
        .unwrap();
    assert!(
        empty
            .downcast_ref::<weighted_target::WeightedTargetConfig>()
            .unwrap()
            .targets
            .is_empty()
    );
}

#[test]
fn describe_shows_each_target_with_its_weight_and_subchannels() {
    let mut wt = Wt::new();
    let mut endpoints = eps_at(&["east"], &[0, 1]);
    endpoints.extend(eps_at(&["west"], &[2]));
    wt.update(
        json!({
            "east": {"weight": 3, "childPolicy": [{"round_robin": {}}]},
            "west": {"weight": 1, "childPolicy": [{"pick_first": {}}]},
        }),
        endpoints,
    );
    let scs = wt.ready(3);
    wt.set(&scs[2], ConnectivityState::TransientFailure);

    let mut view = lb_core::channelz::PolicyView::child("", "weighted_target_experimental");
    wt.policy.describe(&mut view);
    let names: Vec<(&str, &str)> = view
        .children
        .iter()
        .map(|c| (c.name.as_str(), c.policy.as_str()))
        .collect();
    assert_eq!(names, [("east", "round_robin"), ("west", "pick_first")]);
    let (east, west) = (&view.children[0], &view.children[1]);
    assert_eq!(east.get_detail("weight"), Some("3"));
    assert_eq!(east.get_detail("share"), Some("3 of 4"));
    assert_eq!(west.get_detail("weight"), Some("1"));
    assert_eq!(east.state, Some(ConnectivityState::Ready));
    assert_eq!(west.state, Some(ConnectivityState::TransientFailure));
    let states = |v: &lb_core::channelz::PolicyView| {
        v.subchannels
            .iter()
            .map(|s| (s.id, s.address.clone(), s.state))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        states(east),
        [
            (scs[0].id().0, addr(0), ConnectivityState::Ready),
            (scs[1].id().0, addr(1), ConnectivityState::Ready)
        ]
    );
    assert_eq!(
        states(west),
        [(scs[2].id().0, addr(2), ConnectivityState::TransientFailure)]
    );
}
