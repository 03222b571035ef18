//! Balancer group behaviour: grpc-go's conformance scenarios 1–11 (reference D.3) and
//! the close, routing and scheduling guarantees around them.

mod util;

use std::time::Duration;

use lb_core::{ConnectivityState, ResolverUpdate, Status};
use lb_group::AddError;
use lb_testkit::picks;
use util::*;

const CACHE: Duration = Duration::from_secs(5);

/// grpc-go's `initBalancerGroupForCachingTest`: b1 (weight 2, a0 a1) and b2 (weight
/// 1, a2 a3) READY with picks cycling over {a0,a0,a1,a1,a2,a3}; then b2 is removed
/// into the cache with no subchannel shut down, and picks cycle over {a0,a1}.
fn init_caching(timeout: Duration) -> (Harness, Vec<lb_core::Subchannel>) {
    let mut h = Harness::new(timeout);
    h.add("b1", 2, REC_RR);
    h.update("b1", &[0, 1], REC_RR);
    h.add("b2", 1, REC_RR);
    h.update("b2", &[2, 3], REC_RR);
    let scs = h.connect_new(4);
    let state = h.pump().expect("a picker once all are READY");
    assert_eq!(state.connectivity_state, ConnectivityState::Ready);
    verify_rr(&state, &[0, 0, 1, 1, 2, 3]);

    h.remove("b2");
    assert!(h.group.is_cached("b2"));
    h.ctrl.verify_no_shutdowns();
    verify_rr(&h.agg.build(), &[0, 1]);
    (h, scs)
}

#[test]
fn s01_start_close_picks_by_weight_and_close_shuts_down_every_subchannel() {
    let mut h = Harness::new(Duration::ZERO);
    h.add("b1", 2, "round_robin");
    h.update("b1", &[0, 1], "round_robin");
    h.add("b2", 1, "round_robin");
    h.update("b2", &[2, 3], "round_robin");
    let scs = h.connect_new(4);
    let state = h.pump().expect("a picker");
    assert_eq!(state.connectivity_state, ConnectivityState::Ready);
    verify_rr(&state, &[0, 0, 1, 1, 2, 3]);

    h.group.close();
    h.ctrl.verify_shutdowns(&ids(&scs));
}

#[test]
fn s02_remove_with_cache_keeps_subchannels() {
    let (mut h, _) = init_caching(CACHE);
    // Time passes, short of the timeout: still nothing shut down.
    let now = h.clock.advance(CACHE - Duration::from_millis(1));
    h.group.work(&mut h.ctrl, now);
    h.ctrl.verify_no_shutdowns();
    assert!(h.group.is_cached("b2"));
    assert!(!h.tracker.closed(1));
}

#[test]
fn s03_cached_child_tracks_subchannel_state_and_readd_reuses_it() {
    let (mut h, scs) = init_caching(CACHE);
    h.set_state(&scs[2], ConnectivityState::TransientFailure);
    assert!(
        h.pump().is_none(),
        "a cached child's picker must not reach the parent"
    );
    assert_eq!(
        h.tracker.count(1, "subchannel_update"),
        5,
        "but the child saw the update"
    );

    h.add("b2", 1, REC_RR);
    let state = h
        .pump()
        .expect("re-adding publishes the cached child's picker at once");
    verify_rr(&state, &[0, 0, 1, 1, 3, 3]);
    h.ctrl.verify_no_new_subchannels();
    h.ctrl.verify_no_shutdowns();
    assert_eq!(h.tracker.built(), 2, "no new child was built");
}

#[test]
fn s04_close_shuts_down_cached_childrens_subchannels() {
    let (mut h, scs) = init_caching(CACHE);
    h.group.close();
    h.ctrl.verify_shutdowns(&ids(&scs));
    h.tracker.verify_all_closed_once();
}

#[test]
fn s05_cache_expiry_closes_the_child_and_its_subchannels() {
    let timeout = Duration::from_secs(1);
    let (mut h, scs) = init_caching(timeout);
    let removed_at = h.now();
    assert_eq!(
        h.ctrl.take_earliest_wake(),
        Some(removed_at + timeout),
        "remove asks for a wake-up at the expiry"
    );
    assert_eq!(h.group.next_expiry(), Some(removed_at + timeout));

    let early = h.clock.advance(timeout - Duration::from_nanos(1));
    h.group.work(&mut h.ctrl, early);
    h.ctrl.verify_no_shutdowns();

    let now = h.clock.advance(Duration::from_nanos(1));
    h.group.work(&mut h.ctrl, now);
    h.ctrl.verify_shutdowns(&[scs[2].id(), scs[3].id()]);
    assert!(h.tracker.closed(1), "the cached child is closed");
    assert!(!h.tracker.closed(0));
    assert!(!h.group.is_cached("b2"));
    assert_eq!(h.group.next_expiry(), None);

    // Its subchannels no longer route anywhere.
    let now = h.now();
    assert!(!h.group.subchannel_update(
        &scs[2],
        &sc_state(ConnectivityState::Ready),
        &mut h.ctrl,
        now
    ));
}

#[test]
fn s06_readd_with_a_different_builder_rebuilds() {
    let (mut h, scs) = init_caching(CACHE);
    h.add("b2", 1, RR_RENAMED);
    h.ctrl.verify_shutdowns(&[scs[2].id(), scs[3].id()]);
    assert!(
        h.tracker.closed(1),
        "the cached child was closed before the new one"
    );
    assert_eq!(h.tracker.built(), 3);

    h.update("b2", &[4, 5], RR_RENAMED);
    let new = h.connect_new(2);
    assert_eq!(
        new.iter()
            .map(|s| s.address().address.clone())
            .collect::<Vec<_>>(),
        addrs(&[4, 5])
    );
    let state = h.pump().expect("a picker");
    verify_rr(&state, &[0, 0, 1, 1, 4, 5]);
}

#[test]
fn s07_close_closes_cached_children_without_waiting() {
    let mut h = Harness::new(Duration::from_secs(1));
    h.add("b3", 1, REC_RR);
    h.remove("b3");
    assert!(!h.tracker.closed(0));
    h.group.close();
    assert!(
        h.tracker.closed(0),
        "close must close the cached child at once"
    );
    h.tracker.verify_all_closed_once();
}

#[test]
fn s08_remove_immediately_closes_now_and_remove_caches() {
    let mut h = Harness::new(CACHE);
    h.add("child-1", 1, REC_RR);
    h.add("child-2", 1, REC_RR);
    assert_eq!(h.tracker.built(), 2, "children are built on add");

    h.group.remove_immediately("child-1");
    assert!(h.tracker.closed(0));
    assert!(!h.group.is_active("child-1") && !h.group.is_cached("child-1"));

    h.remove("child-2");
    let now = h.clock.advance(Duration::from_millis(100));
    h.group.work(&mut h.ctrl, now);
    assert!(!h.tracker.closed(1), "a removed child waits in the cache");

    h.group.close();
    assert!(h.tracker.closed(1));
    h.tracker.verify_all_closed_once();
}

#[test]
fn s08b_remove_immediately_also_takes_a_child_out_of_the_cache() {
    let mut h = Harness::new(CACHE);
    h.add("c", 1, REC_RR);
    h.remove("c");
    h.group.remove_immediately("c");
    assert!(h.tracker.closed(0));
    assert!(!h.group.is_cached("c"));
}

#[test]
fn s09_a_closed_group_is_terminal() {
    let mut h = Harness::new(CACHE);
    h.add("b1", 1, REC_RR);
    h.update("b1", &[0], REC_RR);
    let scs = h.ctrl.verify_new_subchannels(1);
    h.group.close();
    h.ctrl.take_events();
    let calls_at_close = h.tracker.instances()[0].calls.len();

    let now = h.now();
    let rr = h.policy(REC_RR);
    let update = ResolverUpdate::from_endpoints(eps(&[1]));
    assert_eq!(h.group.update("b1", update, &rr, &mut h.ctrl, now), Ok(()));
    h.group
        .resolver_error(&Status::unavailable("dns"), &mut h.ctrl, now);
    h.group.exit_idle(&mut h.ctrl, now);
    h.group.exit_idle_one("b1", &mut h.ctrl, now);
    assert!(!h.group.subchannel_update(
        &scs[0],
        &sc_state(ConnectivityState::Ready),
        &mut h.ctrl,
        now
    ));
    h.group.work(&mut h.ctrl, h.clock.advance(CACHE * 2));
    h.group.remove("b1", &mut h.ctrl, now);
    h.group.remove_immediately("b1");
    h.group.close();

    let err = h.group.add("b1", &rr).unwrap_err();
    assert_eq!(err, AddError::Closed);
    assert_eq!(err.to_string(), "balancer group is closed");
    assert!(h.group.poll_update().is_none());
    assert_eq!(
        h.tracker.instances()[0].calls.len(),
        calls_at_close,
        "no call reached the child"
    );
    h.ctrl.verify_no_events();
    h.tracker.verify_all_closed_once();
}

#[test]
fn s10_exit_idle_reaches_one_child_or_all() {
    let mut h = Harness::new(Duration::ZERO);
    h.add("b1", 1, REC_RR);
    h.add("b2", 1, REC_RR);
    let now = h.now();
    h.group.exit_idle_one("b1", &mut h.ctrl, now);
    assert_eq!(
        (
            h.tracker.count(0, "exit_idle"),
            h.tracker.count(1, "exit_idle")
        ),
        (1, 0)
    );
    h.group.exit_idle_one("non-existent-id", &mut h.ctrl, now);
    assert_eq!(
        (
            h.tracker.count(0, "exit_idle"),
            h.tracker.count(1, "exit_idle")
        ),
        (1, 0)
    );
    h.group.exit_idle(&mut h.ctrl, now);
    assert_eq!(
        (
            h.tracker.count(0, "exit_idle"),
            h.tracker.count(1, "exit_idle")
        ),
        (2, 1)
    );
}

#[test]
fn s11_graceful_switch_keeps_the_old_picker_until_the_new_policy_is_ready() {
    let mut h = Harness::new(Duration::ZERO);
    h.add("b1", 1, "round_robin");
    h.update("b1", &[0, 1], "round_robin");
    let old = h.connect_new(2);
    verify_rr(&h.pump().expect("a picker"), &[0, 1]);

    // The new policy drops the first endpoint, so only a3 gets a subchannel.
    h.update("b1", &[2, 3], DROP_FIRST_PF);
    let new = h.ctrl.verify_new_subchannels(1);
    h.ctrl.verify_no_new_subchannels();
    assert_eq!(new[0].address().address, addr(3));
    assert!(
        h.pump().is_none(),
        "the pending policy's CONNECTING is held"
    );
    h.ctrl.verify_no_shutdowns();

    h.set_state(&new[0], ConnectivityState::Connecting);
    assert!(h.pump().is_none());

    h.set_state(&new[0], ConnectivityState::Ready);
    let state = h.pump().expect("the switch publishes the new picker");
    assert_eq!(state.connectivity_state, ConnectivityState::Ready);
    let want = addr(3);
    picks::verify_round_robin(&*state.picker, &[want.as_str()]);
    h.ctrl.verify_shutdowns(&ids(&old));
}

#[test]
fn graceful_switch_happens_when_the_old_policy_leaves_ready() {
    let mut h = Harness::new(Duration::ZERO);
    h.add("b1", 1, "round_robin");
    h.update("b1", &[0], "round_robin");
    let old = h.connect_new(1);
    let _ = h.pump();
    h.update("b1", &[1, 2], DROP_FIRST_PF);
    let _new = h.ctrl.verify_new_subchannels(1);
    assert!(h.pump().is_none());

    h.set_state(&old[0], ConnectivityState::TransientFailure);
    let state = h.pump().expect("the old policy left READY: switch now");
    assert_eq!(state.connectivity_state, ConnectivityState::Connecting);
    h.ctrl.verify_shutdowns(&ids(&old));
}

#[test]
fn switching_back_to_the_serving_policy_abandons_the_pending_one() {
    let mut h = Harness::new(Duration::ZERO);
    h.add("b1", 1, "round_robin");
    h.update("b1", &[0], "round_robin");
    let old = h.connect_new(1);
    let _ = h.pump();
    h.update("b1", &[1, 2], DROP_FIRST_PF);
    let pending = h.ctrl.verify_new_subchannels(1);
    h.update("b1", &[0], "round_robin");
    h.ctrl.verify_shutdowns(&ids(&pending));
    h.ctrl.verify_no_new_subchannels();
    assert!(!old[0].is_shut_down());
}

#[test]
fn adding_an_active_id_is_an_error() {
    let mut h = Harness::new(CACHE);
    h.add("b1", 1, REC_RR);
    let rr = h.policy(REC_RR);
    assert_eq!(
        h.group.add("b1", &rr),
        Err(AddError::AlreadyActive("b1".into()))
    );
    assert_eq!(h.tracker.built(), 1, "no second child was built");
    assert!(!h.tracker.closed(0), "the running child is untouched");
}

#[test]
fn the_group_shuts_down_subchannels_a_child_forgot() {
    let mut h = Harness::new(Duration::ZERO);
    h.add("b1", 1, REC_RR_FORGETFUL);
    h.update("b1", &[0, 1], REC_RR_FORGETFUL);
    let scs = h.ctrl.verify_new_subchannels(2);
    h.remove("b1");
    h.ctrl.verify_shutdowns(&ids(&scs));
    assert!(h.tracker.closed(0));
}

#[test]
fn cache_disabled_remove_closes_at_once() {
    let mut h = Harness::new(Duration::ZERO);
    h.add("b1", 1, REC_RR);
    h.update("b1", &[0], REC_RR);
    let scs = h.ctrl.verify_new_subchannels(1);
    h.remove("b1");
    assert!(h.tracker.closed(0));
    assert!(!h.group.is_cached("b1"));
    h.ctrl.verify_shutdowns(&ids(&scs));
    assert_eq!(h.ctrl.take_earliest_wake(), None, "no cache, no wake-up");
}

#[test]
fn work_reaches_only_children_that_are_due() {
    let mut h = Harness::new(CACHE);
    // pick_first asks for a wake-up 250 ms after it starts an attempt.
    h.add("pf", 1, REC_PF);
    h.update("pf", &[0, 1], REC_PF);
    h.add("rr", 1, REC_RR);
    h.update("rr", &[2], REC_RR);
    let wake = h
        .ctrl
        .take_earliest_wake()
        .expect("pick_first asked for a wake-up");
    assert_eq!(wake, h.now() + Duration::from_millis(250));

    let now = h.now();
    h.group.work(&mut h.ctrl, now);
    assert_eq!(
        (h.tracker.count(0, "work"), h.tracker.count(1, "work")),
        (0, 0),
        "nothing due yet"
    );

    let now = h.clock.advance_to(wake);
    h.group.work(&mut h.ctrl, now);
    assert_eq!(
        (h.tracker.count(0, "work"), h.tracker.count(1, "work")),
        (1, 0)
    );
    let _ = h.ctrl.verify_new_subchannels(2);

    // A picker asking for work (through the child's scheduler) wakes the parent and
    // then only that child.
    let _ = h.ctrl.work_scheduler.take_requests();
    h.tracker.schedule_work(1);
    assert_eq!(
        h.ctrl.work_scheduler.take_requests(),
        1,
        "the parent was asked for work"
    );
    h.group.work(&mut h.ctrl, now);
    assert_eq!(
        (h.tracker.count(0, "work"), h.tracker.count(1, "work")),
        (1, 1)
    );
    h.group.work(&mut h.ctrl, now);
    assert_eq!(h.tracker.count(1, "work"), 1, "one request, one work");
}

#[test]
fn a_closed_childs_scheduler_no_longer_wakes_the_parent() {
    let mut h = Harness::new(Duration::ZERO);
    h.add("b1", 1, REC_RR);
    h.group.remove_immediately("b1");
    let _ = h.ctrl.work_scheduler.take_requests();
    h.tracker.schedule_work(0);
    assert_eq!(h.ctrl.work_scheduler.take_requests(), 0);

    h.add("b2", 1, REC_RR);
    h.group.close();
    h.tracker.schedule_work(1);
    assert_eq!(h.ctrl.work_scheduler.take_requests(), 0);
}

#[test]
fn resolution_requests_pass_on_unless_ignored() {
    let mut h = Harness::new(Duration::ZERO);
    h.add("b1", 1, "round_robin");
    h.update("b1", &[0, 1], "round_robin");
    let scs = h.ctrl.verify_new_subchannels(2);
    h.set_state(&scs[0], ConnectivityState::TransientFailure);
    h.ctrl.verify_resolution_requested();

    h.group.set_ignore_resolution_requests("b1", true);
    h.set_state(&scs[1], ConnectivityState::TransientFailure);
    let events = h.ctrl.take_events();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, lb_testkit::Event::RequestResolution)),
        "{events:?}"
    );
}

#[test]
fn resolver_errors_reach_active_children_only() {
    let mut h = Harness::new(CACHE);
    h.add("b1", 1, REC_RR);
    h.add("b2", 1, REC_RR);
    h.remove("b2");
    let now = h.now();
    h.group
        .resolver_error(&Status::unavailable("dns down"), &mut h.ctrl, now);
    assert_eq!(h.tracker.count(0, "resolver_update"), 1);
    assert_eq!(h.tracker.count(1, "resolver_update"), 0);
    let state = h
        .pump()
        .expect("round_robin with no addresses reports the error");
    assert_eq!(
        state.connectivity_state,
        ConnectivityState::TransientFailure
    );
}

#[test]
fn updates_to_unknown_ids_do_nothing() {
    let mut h = Harness::new(CACHE);
    h.add("b1", 1, REC_RR);
    h.remove("b1");
    let now = h.now();
    let rr = h.policy(REC_RR);
    let update = ResolverUpdate::from_endpoints(eps(&[0]));
    assert_eq!(
        h.group.update("b1", update.clone(), &rr, &mut h.ctrl, now),
        Ok(())
    );
    assert_eq!(
        h.group.update("nope", update, &rr, &mut h.ctrl, now),
        Ok(())
    );
    assert_eq!(
        h.tracker.count(0, "resolver_update"),
        0,
        "a cached child gets no updates"
    );
    h.ctrl.verify_no_new_subchannels();
}

#[test]
fn dropping_the_group_closes_it() {
    let mut h = Harness::new(CACHE);
    h.add("b1", 1, REC_RR);
    h.update("b1", &[0], REC_RR);
    h.add("b2", 1, REC_RR);
    h.remove("b2");
    let group = std::mem::replace(
        &mut h.group,
        lb_group::BalancerGroup::new(h.ctrl.policy_options(), CACHE),
    );
    drop(group);
    h.tracker.verify_all_closed_once();
    assert!(
        h.ctrl
            .created_subchannels()
            .iter()
            .all(|s| s.is_shut_down())
    );
}

#[test]
fn many_short_lived_subchannels_are_forgotten_once_shut_down() {
    // round_robin shuts down subchannels of addresses that leave; the group's record
    // of them must not grow without bound, and routing still works afterwards.
    let mut h = Harness::new(Duration::ZERO);
    h.add("b1", 1, "round_robin");
    for i in 0..200 {
        h.update("b1", &[i], "round_robin");
    }
    let scs = h.ctrl.verify_new_subchannels(200);
    assert!(scs[..199].iter().all(|s| s.is_shut_down()));
    h.set_state(&scs[199], ConnectivityState::Ready);
    let state = h.pump().expect("a picker");
    verify_rr(&state, &[199]);
    let now = h.now();
    assert!(
        !h.group.subchannel_update(
            &scs[0],
            &sc_state(ConnectivityState::Ready),
            &mut h.ctrl,
            now
        ),
        "a shut-down subchannel the group forgot routes nowhere"
    );
    assert!(h.group.subchannel_update(
        &scs[199],
        &sc_state(ConnectivityState::Ready),
        &mut h.ctrl,
        now
    ));
}
