//! Scenario tests for `pick_first`, driven by the manual clock and the fake controller.

use std::time::Duration;

use lb_core::policies::pick_first::{CONNECTION_ATTEMPT_DELAY, PickFirstBuilder};
use lb_core::{
    ConnectivityState as S, LbConfig, LbPolicy, LbPolicyBuilder, LbPolicyRegistry, ResolverUpdate,
    Status, Subchannel, UpdateError, endpoints,
};
use lb_testkit::picks::{describe_pick, pick_address};
use lb_testkit::{FakeController, ManualClock};

struct Fixture {
    clock: ManualClock,
    ctrl: FakeController,
    policy: Box<dyn LbPolicy>,
    config: Option<LbConfig>,
}

impl Fixture {
    fn new() -> Self {
        let ctrl = FakeController::new();
        let policy = PickFirstBuilder.build(ctrl.policy_options());
        Self {
            clock: ManualClock::new(),
            ctrl,
            policy,
            config: None,
        }
    }

    fn update(&mut self, addrs: &[&str]) -> Result<(), UpdateError> {
        let update = ResolverUpdate::from_endpoints(endpoints(addrs.iter().copied()));
        self.policy.resolver_update(
            update,
            self.config.as_ref(),
            &mut self.ctrl,
            self.clock.now(),
        )
    }

    fn set(&mut self, sc: &Subchannel, state: S) {
        let now = self.clock.now();
        self.ctrl
            .update_subchannel(&mut *self.policy, sc, state, now);
    }

    fn advance(&mut self, d: Duration) {
        let now = self.clock.advance(d);
        self.policy.work(&mut self.ctrl, now);
    }
}

#[test]
fn connects_to_the_first_address_and_stays_on_it() {
    let mut f = Fixture::new();
    f.update(&["a:1", "b:1", "c:1"]).unwrap();
    assert_eq!(f.ctrl.verify_state().connectivity_state, S::Connecting);
    let a = f.ctrl.verify_new_subchannels(1).remove(0);
    assert_eq!(a.address().address, "a:1");
    f.ctrl.verify_connect(a.id());
    f.ctrl.verify_no_new_subchannels();
    f.set(&a, S::Connecting);
    f.set(&a, S::Ready);
    let state = f.ctrl.latest_state();
    assert_eq!(state.connectivity_state, S::Ready);
    for _ in 0..5 {
        assert_eq!(pick_address(&*state.picker).as_deref(), Some("a:1"));
    }
}

#[test]
fn moves_to_the_next_address_when_one_fails() {
    let mut f = Fixture::new();
    f.update(&["a:1", "b:1"]).unwrap();
    let a = f.ctrl.verify_new_subchannels(1).remove(0);
    f.set(&a, S::Connecting);
    f.set(&a, S::TransientFailure);
    let b = f.ctrl.verify_new_subchannels(1).remove(0);
    assert_eq!(b.address().address, "b:1");
    f.ctrl.verify_connect(b.id());
    // Still CONNECTING: the pass is not over.
    assert!(!f.ctrl.take_states().contains(&S::TransientFailure));
    f.set(&b, S::Ready);
    assert_eq!(
        pick_address(&*f.ctrl.latest_state().picker).as_deref(),
        Some("b:1")
    );
    // The failed subchannel is shut down once b wins.
    f.ctrl.verify_shutdowns(&[a.id()]);
}

#[test]
fn happy_eyeballs_starts_the_next_attempt_after_250ms() {
    let mut f = Fixture::new();
    f.update(&["a:1", "b:1", "c:1"]).unwrap();
    let a = f.ctrl.verify_new_subchannels(1).remove(0);
    f.set(&a, S::Connecting);
    let wake = f.ctrl.verify_wake_at();
    assert_eq!(wake - f.clock.now(), CONNECTION_ATTEMPT_DELAY);

    // Early work does nothing.
    f.advance(Duration::from_millis(249));
    f.ctrl.verify_no_new_subchannels();
    f.advance(Duration::from_millis(1));
    let b = f.ctrl.verify_new_subchannels(1).remove(0);
    assert_eq!(b.address().address, "b:1");
    f.set(&b, S::Connecting);

    // The first attempt is still running; whichever connects first wins.
    f.set(&a, S::Ready);
    assert_eq!(
        pick_address(&*f.ctrl.latest_state().picker).as_deref(),
        Some("a:1")
    );
    f.ctrl.verify_shutdowns(&[b.id()]);
}

#[test]
fn all_addresses_failing_reports_transient_failure_and_re_resolves() {
    let mut f = Fixture::new();
    f.update(&["a:1", "b:1"]).unwrap();
    let a = f.ctrl.verify_new_subchannels(1).remove(0);
    f.set(&a, S::TransientFailure);
    let b = f.ctrl.verify_new_subchannels(1).remove(0);
    f.set(&b, S::TransientFailure);
    let state = f.ctrl.latest_state();
    assert_eq!(state.connectivity_state, S::TransientFailure);
    assert_eq!(
        describe_pick(&*state.picker, &Default::default()),
        "fail:UNAVAILABLE"
    );
    f.ctrl.verify_resolution_requested();

    // Sticky: backoff ends, the subchannels retry, the state stays TF.
    f.set(&a, S::Idle);
    f.ctrl.verify_connect(a.id());
    f.set(&a, S::Connecting);
    assert!(
        f.ctrl
            .take_states()
            .iter()
            .all(|s| *s == S::TransientFailure)
    );
    f.set(&a, S::Ready);
    assert_eq!(f.ctrl.latest_state().connectivity_state, S::Ready);
    f.ctrl.verify_shutdowns(&[b.id()]);
}

#[test]
fn losing_the_connection_goes_idle_and_the_next_pick_reconnects() {
    let mut f = Fixture::new();
    f.update(&["a:1", "b:1"]).unwrap();
    let a = f.ctrl.verify_new_subchannels(1).remove(0);
    f.set(&a, S::Ready);
    f.ctrl.take_events();

    f.set(&a, S::Idle);
    f.ctrl.verify_resolution_requested();
    let state = f.ctrl.latest_state();
    assert_eq!(state.connectivity_state, S::Idle);
    f.ctrl.verify_no_new_subchannels();

    // A pick queues and asks for work, once.
    assert_eq!(describe_pick(&*state.picker, &Default::default()), "queue");
    assert_eq!(describe_pick(&*state.picker, &Default::default()), "queue");
    assert_eq!(f.ctrl.work_scheduler.take_requests(), 1);
    let now = f.clock.now();
    f.policy.work(&mut f.ctrl, now);
    assert_eq!(f.ctrl.latest_state().connectivity_state, S::Connecting);
    f.ctrl.verify_connect(a.id());
}

#[test]
fn exit_idle_restarts_from_the_first_address() {
    let mut f = Fixture::new();
    f.update(&["a:1"]).unwrap();
    let a = f.ctrl.verify_new_subchannels(1).remove(0);
    f.set(&a, S::Ready);
    f.set(&a, S::Idle);
    f.ctrl.take_events();
    let now = f.clock.now();
    f.policy.exit_idle(&mut f.ctrl, now);
    f.ctrl.verify_connect(a.id());
    assert_eq!(f.ctrl.latest_state().connectivity_state, S::Connecting);
}

#[test]
fn an_update_that_keeps_the_connected_address_keeps_the_connection() {
    let mut f = Fixture::new();
    f.update(&["a:1", "b:1"]).unwrap();
    let a = f.ctrl.verify_new_subchannels(1).remove(0);
    f.set(&a, S::Ready);
    f.ctrl.take_events();
    f.update(&["c:1", "a:1"]).unwrap();
    f.ctrl.verify_no_new_subchannels();
    f.ctrl.verify_no_shutdowns();
    f.ctrl.verify_no_picker();
    // An update without it starts over.
    f.update(&["c:1"]).unwrap();
    f.ctrl.verify_shutdowns(&[a.id()]);
    let c = f.ctrl.verify_new_subchannels(1).remove(0);
    assert_eq!(c.address().address, "c:1");
}

#[test]
fn shuffle_address_list_changes_the_order() {
    let reg = LbPolicyRegistry::with_builtins();
    let config = PickFirstBuilder
        .parse_config(&serde_json::json!({"shuffleAddressList": true}), &reg)
        .unwrap();
    let addrs: Vec<String> = (0..16).map(|i| format!("10.0.0.{i}:80")).collect();
    let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let mut firsts = std::collections::HashSet::new();
    for _ in 0..8 {
        let mut f = Fixture::new();
        f.config = Some(config.clone());
        f.update(&refs).unwrap();
        firsts.insert(
            f.ctrl.verify_new_subchannels(1)[0]
                .address()
                .address
                .clone(),
        );
    }
    // The seeded source gives each fixture the same order; it must not be the input's.
    assert!(
        !firsts.contains("10.0.0.0:80") || firsts.len() > 1,
        "{firsts:?}"
    );
}

#[test]
fn empty_update_is_a_bad_resolver_state() {
    let mut f = Fixture::new();
    let err = f.update(&[]).unwrap_err();
    assert!(err.to_string().contains("zero addresses"), "{err}");
    assert_eq!(
        f.ctrl.latest_state().connectivity_state,
        S::TransientFailure
    );
}

#[test]
fn resolver_error_is_reported_only_without_a_good_list() {
    let mut f = Fixture::new();
    let err = ResolverUpdate::from_error(Status::unavailable("no such host"));
    f.policy
        .resolver_update(err.clone(), None, &mut f.ctrl, f.clock.now())
        .unwrap();
    let state = f.ctrl.latest_state();
    assert_eq!(state.connectivity_state, S::TransientFailure);

    f.update(&["a:1"]).unwrap();
    let a = f.ctrl.verify_new_subchannels(1).remove(0);
    f.set(&a, S::Ready);
    f.ctrl.take_events();
    f.policy
        .resolver_update(err, None, &mut f.ctrl, f.clock.now())
        .unwrap();
    f.ctrl.verify_no_picker();
}

#[test]
fn close_shuts_down_every_subchannel() {
    let mut f = Fixture::new();
    f.update(&["a:1", "b:1"]).unwrap();
    let a = f.ctrl.verify_new_subchannels(1).remove(0);
    f.advance(CONNECTION_ATTEMPT_DELAY);
    let b = f.ctrl.verify_new_subchannels(1).remove(0);
    f.ctrl.take_events();
    f.policy.close();
    f.ctrl.verify_shutdowns(&[a.id(), b.id()]);
}

#[test]
fn a_selected_subchannel_that_turns_unhealthy_fails_picks_until_ready_again() {
    // Health checks (gRFC A17) move a connected subchannel READY → TRANSIENT_FAILURE
    // or CONNECTING → READY without a new connection.
    let mut f = Fixture::new();
    f.update(&["a:1", "b:1"]).unwrap();
    let a = f.ctrl.verify_new_subchannels(1).remove(0);
    f.set(&a, S::Connecting);
    f.set(&a, S::Ready);
    f.ctrl.take_events();
    f.set(&a, S::TransientFailure);
    let state = f.ctrl.latest_state();
    assert_eq!(state.connectivity_state, S::TransientFailure);
    let md = lb_core::Metadata::new();
    assert_eq!(describe_pick(&*state.picker, &md), "fail:UNAVAILABLE");
    f.ctrl.verify_no_new_subchannels();
    f.set(&a, S::Connecting);
    let state = f.ctrl.latest_state();
    assert_eq!(state.connectivity_state, S::Connecting);
    assert_eq!(describe_pick(&*state.picker, &md), "queue");
    f.set(&a, S::Ready);
    let state = f.ctrl.latest_state();
    assert_eq!(state.connectivity_state, S::Ready);
    assert_eq!(pick_address(&*state.picker).as_deref(), Some("a:1"));
    f.ctrl.verify_no_new_subchannels();
}
