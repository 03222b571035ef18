//! Scenario tests for `round_robin`, driven by the manual clock and the fake controller.

use lb_core::policies::round_robin::RoundRobinBuilder;
use lb_core::{
    ConnectivityState as S, LbPolicy, LbPolicyBuilder, ResolverUpdate, Status, Subchannel,
    UpdateError, endpoints,
};
use lb_testkit::picks::{describe_pick, verify_round_robin};
use lb_testkit::{FakeController, ManualClock};

struct Fixture {
    clock: ManualClock,
    ctrl: FakeController,
    policy: Box<dyn LbPolicy>,
}

impl Fixture {
    fn new() -> Self {
        let ctrl = FakeController::new();
        let policy = RoundRobinBuilder.build(ctrl.policy_options());
        Self {
            clock: ManualClock::new(),
            ctrl,
            policy,
        }
    }

    fn update(&mut self, addrs: &[&str]) -> Result<(), UpdateError> {
        let update = ResolverUpdate::from_endpoints(endpoints(addrs.iter().copied()));
        self.policy
            .resolver_update(update, None, &mut self.ctrl, self.clock.now())
    }

    fn set(&mut self, sc: &Subchannel, state: S) {
        let now = self.clock.now();
        self.ctrl
            .update_subchannel(&mut *self.policy, sc, state, now);
    }

    /// Creates subchannels for `addrs` and makes them all READY.
    fn ready(addrs: &[&str]) -> (Self, Vec<Subchannel>) {
        let mut f = Self::new();
        f.update(addrs).unwrap();
        let scs = f.ctrl.verify_new_subchannels(addrs.len());
        for sc in &scs {
            f.set(sc, S::Connecting);
            f.set(sc, S::Ready);
        }
        (f, scs)
    }
}

#[test]
fn connects_every_address_at_once_and_reports_connecting() {
    let mut f = Fixture::new();
    f.update(&["a:1", "b:1", "c:1"]).unwrap();
    let scs = f.ctrl.verify_new_subchannels(3);
    let addrs: Vec<_> = scs.iter().map(|s| s.address().address.clone()).collect();
    assert_eq!(addrs, ["a:1", "b:1", "c:1"]);
    for sc in &scs {
        f.ctrl.verify_connect(sc.id());
    }
    // All IDLE (connecting was only requested) aggregates to IDLE; the first
    // CONNECTING moves it to CONNECTING.
    assert_eq!(f.ctrl.latest_state().connectivity_state, S::Idle);
    f.set(&scs[0], S::Connecting);
    let state = f.ctrl.latest_state();
    assert_eq!(state.connectivity_state, S::Connecting);
    assert_eq!(describe_pick(&*state.picker, &Default::default()), "queue");
}

#[test]
fn picks_cycle_over_ready_subchannels_only() {
    let mut f = Fixture::new();
    f.update(&["a:1", "b:1", "c:1"]).unwrap();
    let scs = f.ctrl.verify_new_subchannels(3);
    f.set(&scs[0], S::Ready);
    verify_round_robin(&*f.ctrl.latest_state().picker, &["a:1"]);
    f.set(&scs[2], S::Ready);
    verify_round_robin(&*f.ctrl.latest_state().picker, &["a:1", "c:1"]);
    f.set(&scs[1], S::Ready);
    verify_round_robin(&*f.ctrl.latest_state().picker, &["a:1", "b:1", "c:1"]);
    // Losing one drops it from the cycle and asks it to reconnect.
    f.set(&scs[0], S::Idle);
    f.ctrl.verify_connect(scs[0].id());
    verify_round_robin(&*f.ctrl.latest_state().picker, &["b:1", "c:1"]);
}

#[test]
fn start_index_is_random_across_pickers() {
    let (mut f, scs) = Fixture::ready(&["a:1", "b:1", "c:1", "d:1"]);
    let mut starts = std::collections::HashSet::new();
    for _ in 0..20 {
        // Each READY-set change publishes a fresh picker with a fresh start.
        f.set(&scs[0], S::Idle);
        f.set(&scs[0], S::Ready);
        let picker = f.ctrl.latest_state().picker;
        starts.insert(lb_testkit::picks::pick_address(&*picker).unwrap());
    }
    assert_eq!(starts.len(), 4, "starts seen: {starts:?}");
}

#[test]
fn transient_failure_is_sticky_until_ready() {
    let mut f = Fixture::new();
    f.update(&["a:1", "b:1"]).unwrap();
    let scs = f.ctrl.verify_new_subchannels(2);
    for sc in &scs {
        f.set(sc, S::Connecting);
        f.set(sc, S::TransientFailure);
    }
    let state = f.ctrl.latest_state();
    assert_eq!(state.connectivity_state, S::TransientFailure);
    assert_eq!(
        describe_pick(&*state.picker, &Default::default()),
        "fail:UNAVAILABLE"
    );
    f.ctrl.verify_resolution_requested();

    // Reconnect attempts do not flap the aggregate back to CONNECTING.
    for sc in &scs {
        f.set(sc, S::Idle);
        f.ctrl.verify_connect(sc.id());
        f.set(sc, S::Connecting);
    }
    assert!(
        f.ctrl
            .take_states()
            .iter()
            .all(|s| *s == S::TransientFailure),
        "only READY may leave TRANSIENT_FAILURE"
    );
    f.set(&scs[1], S::Ready);
    let state = f.ctrl.latest_state();
    assert_eq!(state.connectivity_state, S::Ready);
    verify_round_robin(&*state.picker, &["b:1"]);
}

#[test]
fn failure_picker_carries_the_latest_connection_error() {
    let mut f = Fixture::new();
    f.update(&["a:1"]).unwrap();
    let sc = f.ctrl.verify_new_subchannels(1).remove(0);
    let now = f.clock.now();
    for msg in ["first", "second"] {
        let state = lb_core::SubchannelState::failure(Status::unavailable(msg));
        f.ctrl
            .update_subchannel_with(&mut *f.policy, &sc, state, now);
        f.set(&sc, S::Idle);
    }
    let state = f.ctrl.latest_state();
    let md = lb_core::Metadata::new();
    let info = lb_core::PickInfo::new("/s/m", &md);
    match state.picker.pick(&info) {
        lb_core::PickResult::Fail(s) => assert!(s.message().contains("second"), "{s}"),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn address_updates_keep_existing_subchannels_and_shut_down_removed_ones() {
    let (mut f, scs) = Fixture::ready(&["a:1", "b:1"]);
    f.ctrl.take_events();
    f.update(&["b:1", "c:1"]).unwrap();
    let new = f.ctrl.verify_new_subchannels(1);
    assert_eq!(new[0].address().address, "c:1");
    f.ctrl.verify_shutdowns(&[scs[0].id()]);
    // b is still READY, so the picker only has b until c connects.
    verify_round_robin(&*f.ctrl.latest_state().picker, &["b:1"]);
    f.set(&new[0], S::Ready);
    verify_round_robin(&*f.ctrl.latest_state().picker, &["b:1", "c:1"]);
    // A state update for the removed subchannel is ignored.
    f.set(&scs[0], S::Ready);
    f.ctrl.verify_no_picker();
}

#[test]
fn duplicate_addresses_get_one_subchannel() {
    let mut f = Fixture::new();
    f.update(&["a:1", "a:1", "b:1"]).unwrap();
    f.ctrl.verify_new_subchannels(2);
    f.ctrl.verify_no_new_subchannels();
}

#[test]
fn empty_update_fails_and_asks_for_resolution_with_backoff() {
    let (mut f, scs) = Fixture::ready(&["a:1"]);
    f.ctrl.take_events();
    let err = f.update(&[]).unwrap_err();
    assert!(matches!(err, UpdateError::BadResolverState(_)), "{err}");
    f.ctrl.verify_shutdowns(&[scs[0].id()]);
    let state = f.ctrl.latest_state();
    assert_eq!(state.connectivity_state, S::TransientFailure);
}

#[test]
fn resolver_error_is_ignored_while_serving() {
    let (mut f, _) = Fixture::ready(&["a:1"]);
    f.ctrl.take_events();
    let update = ResolverUpdate::from_error(Status::unavailable("dns down"));
    f.policy
        .resolver_update(update, None, &mut f.ctrl, f.clock.now())
        .unwrap();
    f.ctrl.verify_no_events();
}

#[test]
fn resolver_error_before_any_address_fails_calls_with_it() {
    let mut f = Fixture::new();
    let update = ResolverUpdate::from_error(Status::unavailable("dns down"));
    f.policy
        .resolver_update(update, None, &mut f.ctrl, f.clock.now())
        .unwrap();
    let state = f.ctrl.latest_state();
    assert_eq!(state.connectivity_state, S::TransientFailure);
    let md = lb_core::Metadata::new();
    let info = lb_core::PickInfo::new("/s/m", &md);
    match state.picker.pick(&info) {
        lb_core::PickResult::Fail(s) => assert!(s.message().contains("dns down"), "{s}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn close_shuts_down_every_subchannel_once() {
    let (mut f, scs) = Fixture::ready(&["a:1", "b:1", "c:1"]);
    f.ctrl.take_events();
    f.policy.close();
    let ids: Vec<_> = scs.iter().map(|s| s.id()).collect();
    f.ctrl.verify_shutdowns(&ids);
    assert!(
        f.ctrl
            .created_subchannels()
            .iter()
            .all(|s| s.is_shut_down())
    );
}

#[test]
fn picks_from_many_threads_cover_every_ready_subchannel_evenly() {
    let (mut f, _) = Fixture::ready(&["a:1", "b:1", "c:1", "d:1"]);
    let picker = f.ctrl.latest_state().picker;
    let per_thread = 4000;
    let counts: Vec<std::collections::HashMap<String, usize>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let picker = &picker;
                s.spawn(move || {
                    let mut m = std::collections::HashMap::new();
                    for a in lb_testkit::picks::take_addresses(&**picker, per_thread) {
                        *m.entry(a).or_insert(0) += 1;
                    }
                    m
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut total = std::collections::HashMap::new();
    for m in &counts {
        assert_eq!(m.len(), 4, "every thread reaches every subchannel: {m:?}");
        for (a, n) in m {
            *total.entry(a.clone()).or_insert(0) += n;
        }
    }
    // Threads that share a counter shard may now and then take the same position, so
    // allow a little unevenness; a shared-nothing cycle would be exact.
    let want = 4 * per_thread / 4;
    for (a, n) in &total {
        assert!(
            n.abs_diff(want) <= want / 10,
            "{a}: {n} picks, want about {want}: {total:?}"
        );
    }
}
