//! The `priority` policy: failover, init timeout, recovery with the 15-minute close
//! cache, config changes, and closing at every point of a failover.

mod util;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_core::{
    ConnectivityState, LbConfig, LbPolicy, LbPolicyBuilder, LbPolicyRegistry, Metadata, PickInfo,
    PickResult, ResolverUpdate, Subchannel,
};
use lb_group::priority::{
    self, INIT_TIMEOUT, NO_PRIORITIES, PriorityBuilder, PriorityConfig, SUB_BALANCER_CLOSE_TIMEOUT,
};
use lb_testkit::{Event, FakeController, ManualClock, picks};
use serde_json::{Value, json};
use util::*;

struct Prio {
    clock: ManualClock,
    ctrl: FakeController,
    policy: Box<dyn LbPolicy>,
    registry: LbPolicyRegistry,
    tracker: Arc<Tracker>,
    history: History,
}

impl Prio {
    fn new() -> Self {
        let tracker = Tracker::new();
        let registry = registry(&tracker);
        let ctrl = FakeController::new();
        let policy = PriorityBuilder.build(ctrl.policy_options_with(registry.clone()));
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

    fn config(&self, json: Value) -> LbConfig {
        PriorityBuilder.parse_config(&json, &self.registry).unwrap()
    }

    fn update_with(&mut self, config: Value, endpoints: Vec<lb_core::Endpoint>) {
        let config = self.config(config);
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

    /// p0 (a0) and p1 (a1), both recorded round_robin.
    fn update(&mut self) {
        self.update_with(two_priorities(false), endpoints());
    }

    fn set(&mut self, sc: &Subchannel, state: ConnectivityState) {
        let now = self.now();
        self.ctrl
            .update_subchannel(&mut *self.policy, sc, state, now);
    }

    fn advance_and_work(&mut self, by: Duration) {
        let now = self.clock.advance(by);
        self.policy.work(&mut self.ctrl, now);
    }

    fn new_subchannel(&mut self) -> Subchannel {
        self.ctrl.verify_new_subchannels(1).remove(0)
    }

    fn latest(&mut self) -> lb_core::LbState {
        self.ctrl.latest_state()
    }
}

fn two_priorities(ignore_p0_reresolution: bool) -> Value {
    json!({
        "children": {
            "p0": {"config": [{"rec_rr": {}}], "ignoreReresolutionRequests": ignore_p0_reresolution},
            "p1": {"config": [{"rec_rr": {}}]},
        },
        "priorities": ["p0", "p1"],
    })
}

fn endpoints() -> Vec<lb_core::Endpoint> {
    let mut eps = eps_at(&["p0"], &[0]);
    eps.extend(eps_at(&["p1"], &[1]));
    eps
}

fn picks_addr(state: &lb_core::LbState, i: usize) {
    let want = addr(i);
    picks::verify_round_robin(&*state.picker, &[want.as_str()]);
}

#[test]
fn p0_failure_fails_over_to_p1() {
    let mut p = Prio::new();
    p.update();
    let a0 = p.new_subchannel();
    assert_eq!(a0.address().address, addr(0));
    assert_eq!(
        p.latest().connectivity_state,
        ConnectivityState::Idle,
        "p0's own state (round_robin is IDLE until its subchannel connects)"
    );
    assert_eq!(
        p.tracker.built(),
        1,
        "p1 is not started while p0 may still connect"
    );
    p.ctrl.verify_no_new_subchannels();

    p.set(&a0, ConnectivityState::Connecting);
    assert_eq!(p.latest().connectivity_state, ConnectivityState::Connecting);
    p.ctrl.verify_no_new_subchannels();
    p.set(&a0, ConnectivityState::TransientFailure);
    let a1 = p.new_subchannel();
    assert_eq!(a1.address().address, addr(1));
    assert_eq!(p.tracker.built(), 2);
    assert_eq!(
        p.ctrl.take_states(),
        [ConnectivityState::Connecting, ConnectivityState::Idle],
        "p1's starting state, then its own; never p0's failure"
    );

    p.set(&a1, ConnectivityState::Ready);
    let state = p.latest();
    assert_eq!(state.connectivity_state, ConnectivityState::Ready);
    picks_addr(&state, 1);
    assert!(!p.tracker.closed(0), "p0 keeps running to recover");
    assert!(!a0.is_shut_down());
}

#[test]
fn p0_not_ready_within_the_init_timeout_starts_p1() {
    let mut p = Prio::new();
    let t0 = p.now();
    p.update();
    let a0 = p.new_subchannel();
    p.set(&a0, ConnectivityState::Connecting);
    assert_eq!(p.ctrl.take_earliest_wake(), Some(t0 + INIT_TIMEOUT));

    p.advance_and_work(INIT_TIMEOUT - Duration::from_nanos(1));
    p.ctrl.verify_no_new_subchannels();
    assert_eq!(p.tracker.built(), 1);

    p.advance_and_work(Duration::from_nanos(1));
    let a1 = p.new_subchannel();
    assert_eq!(a1.address().address, addr(1));
    p.set(&a1, ConnectivityState::Ready);
    picks_addr(&p.latest(), 1);

    // p0 connects after all: it serves again.
    p.set(&a0, ConnectivityState::Ready);
    let state = p.latest();
    picks_addr(&state, 0);
}

/// p0 fails, p1 serves, p0 recovers: returns the subchannels (a0, a1).
fn fail_over_and_recover(p: &mut Prio) -> (Subchannel, Subchannel) {
    p.update();
    let a0 = p.new_subchannel();
    p.set(&a0, ConnectivityState::TransientFailure);
    let a1 = p.new_subchannel();
    p.set(&a1, ConnectivityState::Ready);
    p.set(&a0, ConnectivityState::Ready);
    (a0, a1)
}

#[test]
fn p0_recovery_caches_p1_for_15_minutes() {
    let mut p = Prio::new();
    let (a0, a1) = fail_over_and_recover(&mut p);
    let recovered_at = p.now();
    let state = p.latest();
    assert_eq!(state.connectivity_state, ConnectivityState::Ready);
    picks_addr(&state, 0);
    assert!(!p.tracker.closed(1), "p1 waits in the close cache");
    assert!(!a1.is_shut_down(), "with its subchannels alive");
    let wakes: Vec<Instant> = p
        .ctrl
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::WakeAt(t) => Some(t),
            _ => None,
        })
        .collect();
    assert!(
        wakes.contains(&(recovered_at + SUB_BALANCER_CLOSE_TIMEOUT)),
        "{wakes:?}"
    );

    p.advance_and_work(SUB_BALANCER_CLOSE_TIMEOUT - Duration::from_secs(1));
    assert!(!p.tracker.closed(1));
    assert!(!a1.is_shut_down());

    p.advance_and_work(Duration::from_secs(1));
    assert!(p.tracker.closed(1), "the cache timeout closes p1");
    p.ctrl.verify_shutdowns(&[a1.id()]);
    assert!(!a0.is_shut_down());
    p.ctrl.verify_no_picker();
}

#[test]
fn p1_is_revived_from_the_cache_when_p0_fails_again() {
    let mut p = Prio::new();
    let (a0, _a1) = fail_over_and_recover(&mut p);
    p.advance_and_work(Duration::from_secs(60));
    p.ctrl.take_events();

    p.set(&a0, ConnectivityState::TransientFailure);
    p.ctrl.verify_no_new_subchannels();
    assert_eq!(p.tracker.built(), 2, "the cached p1 is reused, not rebuilt");
    let state = p.latest();
    assert_eq!(
        state.connectivity_state,
        ConnectivityState::Ready,
        "its last picker is used at once"
    );
    picks_addr(&state, 1);
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Update,
    A0Connecting,
    A0Failed,
    A0Ready,
    A1Ready,
    InitTimeout,
    Minutes(u64),
}

fn run_then_close(script: &[Step], close_after: usize) {
    let mut p = Prio::new();
    let mut a0 = None;
    let mut a1 = None;
    for step in &script[..close_after] {
        match step {
            Step::Update => p.update(),
            Step::A0Connecting => p.set(a0.as_ref().unwrap(), ConnectivityState::Connecting),
            Step::A0Failed => p.set(a0.as_ref().unwrap(), ConnectivityState::TransientFailure),
            Step::A0Ready => p.set(a0.as_ref().unwrap(), ConnectivityState::Ready),
            Step::A1Ready => p.set(a1.as_ref().unwrap(), ConnectivityState::Ready),
            Step::InitTimeout => p.advance_and_work(INIT_TIMEOUT),
            Step::Minutes(m) => p.advance_and_work(Duration::from_secs(60 * m)),
        }
        for sc in p.ctrl.created_subchannels() {
            match sc.address().address.as_str() {
                a if a == addr(0) && a0.is_none() => a0 = Some(sc.clone()),
                a if a == addr(1) && a1.is_none() => a1 = Some(sc.clone()),
                _ => {}
            }
        }
        p.history.take(&mut p.ctrl);
    }
    p.policy.close();
    p.history.take(&mut p.ctrl);

    // Nothing reaches the channel after close.
    let now = p.now();
    if let Some(a0) = &a0 {
        p.set(a0, ConnectivityState::Idle);
    }
    p.policy.work(&mut p.ctrl, now + Duration::from_secs(3600));
    p.policy.exit_idle(&mut p.ctrl, now);
    p.update();
    let after = p.ctrl.take_events();
    assert!(
        after.is_empty(),
        "{script:?} closed after {close_after}: {after:?}"
    );

    assert_eq!(
        p.tracker.alive(),
        0,
        "{script:?} closed after {close_after}: {:?}",
        p.tracker.instances()
    );
    p.tracker.verify_all_closed_once();
    p.history
        .verify_every_subchannel_shut_down_once(&mut p.ctrl);
}

#[test]
fn closing_at_any_point_of_a_failover_leaks_nothing() {
    let failover = [
        Step::Update,
        Step::A0Connecting,
        Step::A0Failed,
        Step::A1Ready,
        Step::A0Ready,
        Step::Minutes(5),
        Step::A0Failed,
        Step::A0Ready,
        Step::Minutes(16),
        Step::A0Failed,
        Step::A1Ready,
    ];
    let timeout = [
        Step::Update,
        Step::A0Connecting,
        Step::InitTimeout,
        Step::A1Ready,
        Step::A0Ready,
        Step::Minutes(20),
    ];
    for script in [&failover[..], &timeout[..]] {
        for close_after in 0..=script.len() {
            run_then_close(script, close_after);
        }
    }
}

#[test]
fn the_failover_script_builds_what_the_leak_test_expects() {
    // Guard against a vacuous leak test: the failover script really starts p1,
    // caches it, revives it, lets it expire and rebuilds it.
    let mut p = Prio::new();
    let (a0, _) = fail_over_and_recover(&mut p);
    p.advance_and_work(Duration::from_secs(5 * 60));
    p.set(&a0, ConnectivityState::TransientFailure);
    assert_eq!(p.tracker.built(), 2, "revived");
    p.set(&a0, ConnectivityState::Ready);
    p.advance_and_work(Duration::from_secs(16 * 60));
    assert!(p.tracker.closed(1), "expired");
    p.set(&a0, ConnectivityState::TransientFailure);
    assert_eq!(p.tracker.built(), 3, "rebuilt after expiry");
}

#[test]
fn a_failed_priority_that_reconnects_gets_no_new_init_timer() {
    let mut p = Prio::new();
    let mirrors = json!({
        "children": {"p0": {"config": [{"mirror": {}}]}, "p1": {"config": [{"mirror": {}}]}},
        "priorities": ["p0", "p1"],
    });
    p.update_with(mirrors.clone(), endpoints());
    let a0 = p.new_subchannel();
    p.set(&a0, ConnectivityState::Connecting);
    p.set(&a0, ConnectivityState::TransientFailure);
    let a1 = p.new_subchannel();
    p.set(&a1, ConnectivityState::Ready);
    picks_addr(&p.latest(), 1);
    p.ctrl.take_events();

    // p0 retries: CONNECTING after a failure does not give it the init period again,
    // so p1 keeps serving and stays started.
    p.set(&a0, ConnectivityState::Connecting);
    p.ctrl.verify_no_picker();
    assert_eq!(
        p.ctrl.take_earliest_wake(),
        None,
        "no init timer for a failed child"
    );
    assert!(!a1.is_shut_down());

    // Once p0 was READY, a later CONNECTING does start the timer (and p0 is used).
    p.set(&a0, ConnectivityState::Ready);
    picks_addr(&p.latest(), 0);
    p.set(&a0, ConnectivityState::Connecting);
    assert_eq!(p.latest().connectivity_state, ConnectivityState::Connecting);
    let t = p.now();
    assert_eq!(p.ctrl.take_earliest_wake(), Some(t + INIT_TIMEOUT));
}

#[test]
fn no_priorities_fails_calls() {
    let mut p = Prio::new();
    let now = p.now();
    p.policy
        .resolver_update(
            ResolverUpdate::from_endpoints(endpoints()),
            None,
            &mut p.ctrl,
            now,
        )
        .unwrap();
    let state = p.latest();
    assert_eq!(
        state.connectivity_state,
        ConnectivityState::TransientFailure
    );
    let md = Metadata::new();
    match state.picker.pick(&PickInfo::new("/a/b", &md)) {
        PickResult::Fail(s) => assert_eq!(s.message(), NO_PRIORITIES),
        other => panic!("{other:?}"),
    }

    // A config built in code with no priorities says the same, and closes the
    // children that ran.
    p.update();
    let a0 = p.new_subchannel();
    let empty = LbConfig::new(PriorityConfig::default());
    p.policy
        .resolver_update(
            ResolverUpdate::from_endpoints(endpoints()),
            Some(&empty),
            &mut p.ctrl,
            now,
        )
        .unwrap();
    assert_eq!(
        p.latest().connectivity_state,
        ConnectivityState::TransientFailure
    );
    assert!(a0.is_shut_down());
    assert!(p.tracker.closed(0));
}

#[test]
fn children_that_leave_the_config_close_at_once() {
    let mut p = Prio::new();
    let (a0, a1) = fail_over_and_recover(&mut p);
    assert!(!p.tracker.closed(1), "p1 is cached");
    let only_p0 = json!({
        "children": {"p0": {"config": [{"rec_rr": {}}]}},
        "priorities": ["p0"],
    });
    p.update_with(only_p0, endpoints());
    assert!(
        p.tracker.closed(1),
        "a cached child that left the config is closed at once"
    );
    assert!(a1.is_shut_down());
    assert!(!a0.is_shut_down());

    // An active child that leaves is closed at once too.
    let only_p1 = json!({
        "children": {"p1": {"config": [{"rec_rr": {}}]}},
        "priorities": ["p1"],
    });
    p.update_with(only_p1, endpoints());
    assert!(p.tracker.closed(0));
    assert!(a0.is_shut_down());
    let a1_again = p.new_subchannel();
    assert_eq!(a1_again.address().address, addr(1));
    assert_eq!(p.tracker.built(), 3);
}

#[test]
fn ignore_reresolution_requests_drops_only_that_childs_requests() {
    let mut p = Prio::new();
    p.update_with(two_priorities(true), endpoints());
    let a0 = p.new_subchannel();
    p.ctrl.take_events();
    p.set(&a0, ConnectivityState::TransientFailure);
    let a1 = p.new_subchannel();
    let events = p.ctrl.take_events();
    assert!(
        !events.iter().any(|e| matches!(e, Event::RequestResolution)),
        "p0 ignores re-resolution requests: {events:?}"
    );
    p.set(&a1, ConnectivityState::TransientFailure);
    p.ctrl.verify_resolution_requested();
}

#[test]
fn a_policy_change_of_a_running_child_is_graceful() {
    let mut p = Prio::new();
    p.update();
    let a0 = p.new_subchannel();
    p.set(&a0, ConnectivityState::Ready);
    picks_addr(&p.latest(), 0);

    let switched = json!({
        "children": {
            "p0": {"config": [{"pick_first": {}}]},
            "p1": {"config": [{"rec_rr": {}}]},
        },
        "priorities": ["p0", "p1"],
    });
    p.update_with(switched, endpoints());
    let new = p.new_subchannel();
    assert!(
        !a0.is_shut_down(),
        "the old policy serves until the new one is ready"
    );
    p.set(&new, ConnectivityState::Ready);
    assert!(a0.is_shut_down());
    picks_addr(&p.latest(), 0);
    assert!(p.tracker.closed(0));
}

#[test]
fn registered_under_both_names() {
    let tracker = Tracker::new();
    let reg = registry(&tracker);
    for name in [priority::NAME, priority::ALIAS] {
        let parsed = reg
            .parse_load_balancing_config(&json!([{ (name): {
                "children": {"a": {"config": [{"round_robin": {}}]}},
                "priorities": ["a"],
            }}]))
            .unwrap();
        assert_eq!(
            parsed.name(),
            priority::NAME,
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
        (json!("x"), "must be an object, not a string"),
        (
            json!({"children": [], "priorities": ["a"]}),
            "children: must be an object, not an array",
        ),
        (
            json!({"children": {"p0": "rr"}, "priorities": ["p0"]}),
            "children.p0: must be an object, not a string",
        ),
        (
            json!({"children": {"p0": {}}, "priorities": ["p0"]}),
            "children.p0.config: is required",
        ),
        (
            json!({"children": {"p0": {"config": [{"nope": {}}]}}, "priorities": ["p0"]}),
            "children.p0.config: no registered policy among [\"nope\"]",
        ),
        (
            json!({"children": {"p0": {"config": [{"round_robin": 1}]}}, "priorities": ["p0"]}),
            "children.p0.config[0].round_robin: must be an object, not a number",
        ),
        (
            json!({"children": {"p0": {"config": rr, "ignoreReresolutionRequests": "yes"}}, "priorities": ["p0"]}),
            "children.p0.ignoreReresolutionRequests: must be a boolean, not a string",
        ),
        (
            json!({"children": {"p0": {"config": rr}}}),
            "priorities: is required",
        ),
        (
            json!({"children": {}, "priorities": []}),
            "priorities: must not be empty",
        ),
        (
            json!({"children": {"p0": {"config": rr}}, "priorities": {}}),
            "priorities: must be an array, not an object",
        ),
        (
            json!({"children": {"p0": {"config": rr}}, "priorities": [0]}),
            "priorities[0]: must be a string, not a number",
        ),
        (
            json!({"children": {"p0": {"config": rr}}, "priorities": ["p0", "p9"]}),
            "priorities[1]: \"p9\" is not one of the children",
        ),
        (
            json!({"children": {"p0": {"config": rr}}, "priorities": ["p0", "p0"]}),
            "priorities[1]: \"p0\" is listed twice",
        ),
        (
            json!({"children": {"p0": {"config": rr}, "p1": {"config": rr}}, "priorities": ["p0"]}),
            "children.p1: is not listed in priorities",
        ),
    ];
    for (config, want) in cases {
        let err = PriorityBuilder
            .parse_config(&config, &reg)
            .expect_err(&config.to_string());
        assert_eq!(err.to_string(), want, "{config}");
    }

    let err = reg
        .parse_load_balancing_config(&json!([{"priority_experimental": {
            "children": {"p0": {"config": [{"nope": {}}, {"nada": {}}]}},
            "priorities": ["p0"],
        }}]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "[0].priority_experimental.children.p0.config: no registered policy among [\"nope\", \"nada\"]"
    );

    let ok = PriorityBuilder
        .parse_config(
            &json!({"children": {"p0": {"config": [{"nope": {}}, {"round_robin": {}}], "ignoreReresolutionRequests": true, "extra": 1}}, "priorities": ["p0"]}),
            &reg,
        )
        .unwrap();
    let ok = ok.downcast_ref::<PriorityConfig>().unwrap();
    assert_eq!(ok.children["p0"].config.name(), "round_robin");
    assert!(ok.children["p0"].ignore_reresolution_requests);
}

fn describe(p: &Prio) -> lb_core::channelz::PolicyView {
    let mut view = lb_core::channelz::PolicyView::child("", "priority_experimental");
    p.policy.describe(&mut view);
    view
}

#[test]
fn describe_shows_the_priorities_in_order_and_the_one_in_use() {
    let mut p = Prio::new();
    p.update();
    let a0 = p.new_subchannel();
    let view = describe(&p);
    assert_eq!(view.get_detail("in use"), Some("p0"));
    let names: Vec<&str> = view.children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["p0", "p1"]);
    let (p0, p1) = (&view.children[0], &view.children[1]);
    assert_eq!(p0.get_detail("failover timer"), Some("not running"), "IDLE");
    assert_eq!(p0.get_detail("in use"), Some("true"));
    assert_eq!(p1.get_detail("started"), Some("false"));
    assert_eq!(p1.get_detail("failover timer"), Some("not running"));

    p.set(&a0, ConnectivityState::Connecting);
    let view = describe(&p);
    assert_eq!(
        view.children[0].get_detail("failover timer"),
        Some("running"),
        "CONNECTING starts the init timer"
    );
    p.set(&a0, ConnectivityState::TransientFailure);
    let a1 = p.new_subchannel();
    p.set(&a1, ConnectivityState::Connecting);
    let view = describe(&p);
    assert_eq!(view.get_detail("in use"), Some("p1"), "failed over");
    let (p0, p1) = (&view.children[0], &view.children[1]);
    assert_eq!(p0.state, Some(ConnectivityState::TransientFailure));
    assert_eq!(p0.get_detail("in use"), Some("false"));
    assert_eq!(p0.get_detail("failover timer"), Some("not running"));
    assert_eq!(p1.get_detail("in use"), Some("true"));
    assert_eq!(p1.get_detail("failover timer"), Some("running"));

    p.set(&a1, ConnectivityState::Ready);
    let view = describe(&p);
    let (p0, p1) = (&view.children[0], &view.children[1]);
    assert_eq!(p1.state, Some(ConnectivityState::Ready));
    assert_eq!(p1.get_detail("failover timer"), Some("not running"));
    assert_eq!(p1.policy, "rec_rr");
    let sc = |v: &lb_core::channelz::PolicyView| {
        v.subchannels
            .iter()
            .map(|s| (s.address.clone(), s.state))
            .collect::<Vec<_>>()
    };
    assert_eq!(sc(p1), [(addr(1), ConnectivityState::Ready)]);
    assert_eq!(sc(p0), [(addr(0), ConnectivityState::TransientFailure)]);
}
