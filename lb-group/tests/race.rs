//! The remove-versus-close race (DESIGN decision 8, grpc-go issue 5845 and the priority
//! leak of seed 003), tried in every order.
//!
//! A child is removed into the close cache while the group is closed, the cache
//! timer fires, the child publishes a picker, one of its subchannels changes state, it
//! gets a resolver update that creates a subchannel, and it is added again. On the
//! serializer these are method calls, so a race is an order of calls: the test runs
//! all 5040 orders of the seven events and checks, for each, that after close no child
//! is alive, every subchannel was shut down exactly once, and nothing reached the
//! parent.

mod util;

use std::time::Duration;

use lb_core::{ConnectivityState, ResolverUpdate};
use util::*;

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug)]
enum Step {
    /// `remove(b2)`: into the close cache.
    Remove,
    /// `close()`.
    Close,
    /// The cache timeout passes and the serializer calls `work(now)`.
    TimerFires,
    /// b2's picker asks for work; in `work` b2 re-publishes its picker.
    ChildPublishes,
    /// One of b2's subchannels becomes READY.
    SubchannelUpdate,
    /// b2 gets a resolver update with one more address (a new subchannel).
    ResolverUpdate,
    /// `add(b2)` again with the same policy.
    ReAdd,
}

const STEPS: [Step; 7] = [
    Step::Remove,
    Step::Close,
    Step::TimerFires,
    Step::ChildPublishes,
    Step::SubchannelUpdate,
    Step::ResolverUpdate,
    Step::ReAdd,
];

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for i in 0..=p.len() {
            let mut q = p.clone();
            q.insert(i, n - 1);
            out.push(q);
        }
    }
    out
}

/// The latest instance of b2's policy (a re-add after the cached one closed builds a
/// new one).
fn b2_instance(h: &Harness) -> usize {
    h.tracker
        .instances()
        .iter()
        .rposition(|i| i.name == REC_RR_PUBLISHING)
        .expect("b2 was built")
}

fn run(order: &[Step]) {
    let mut h = Harness::new(TIMEOUT);
    let mut history = History::default();
    h.add("b1", 2, REC_RR);
    h.update("b1", &[0, 1], REC_RR);
    h.add("b2", 1, REC_RR_PUBLISHING);
    h.update("b2", &[2, 3], REC_RR_PUBLISHING);
    let scs = h.connect_new(4);
    verify_rr(&h.pump().expect("a picker"), &[0, 0, 1, 1, 2, 3]);
    history.take(&mut h.ctrl);

    let mut closed = false;
    for step in order {
        let now = h.now();
        match step {
            Step::Remove => h.remove("b2"),
            Step::Close => {
                h.group.close();
                closed = true;
                // What close itself did (shutting subchannels down) is fine; from
                // here on nothing may reach the parent.
                history.take(&mut h.ctrl);
                let _ = h.ctrl.work_scheduler.take_requests();
            }
            Step::TimerFires => {
                let now = h.clock.advance(TIMEOUT + Duration::from_millis(1));
                h.group.work(&mut h.ctrl, now);
            }
            Step::ChildPublishes => {
                let b2 = b2_instance(&h);
                h.tracker.schedule_work(b2);
                h.group.work(&mut h.ctrl, now);
            }
            Step::SubchannelUpdate => {
                h.group.subchannel_update(
                    &scs[2],
                    &sc_state(ConnectivityState::Ready),
                    &mut h.ctrl,
                    now,
                );
            }
            Step::ResolverUpdate => {
                let config = h.policy(REC_RR_PUBLISHING);
                let update = ResolverUpdate::from_endpoints(eps(&[2, 3, 4]));
                let _ = h.group.update("b2", update, &config, &mut h.ctrl, now);
            }
            Step::ReAdd => {
                h.agg.add("b2", 1);
                let config = h.policy(REC_RR_PUBLISHING);
                let was_active = h.group.is_active("b2");
                let result = h.group.add("b2", &config);
                assert_eq!(
                    result.is_err(),
                    closed || was_active,
                    "{order:?}: {result:?}"
                );
            }
        }
        if closed {
            assert!(
                h.group.poll_update().is_none(),
                "{order:?}: a state reached the parent after close"
            );
            let events = h.ctrl.take_events();
            assert!(
                events.is_empty(),
                "{order:?}: after close, at {step:?}: {events:?}"
            );
        } else {
            let _ = h.pump();
        }
    }

    assert!(closed);
    assert_eq!(
        h.ctrl.work_scheduler.take_requests(),
        0,
        "{order:?}: a wake-up reached the parent after close"
    );
    assert_eq!(
        h.tracker.alive(),
        0,
        "{order:?}: a child outlived close: {:?}",
        h.tracker.instances()
    );
    h.tracker.verify_all_closed_once();
    history.verify_every_subchannel_shut_down_once(&mut h.ctrl);
}

#[test]
fn every_order_of_racing_events_leaks_nothing() {
    let orders = permutations(STEPS.len());
    assert_eq!(orders.len(), 5040);
    for order in orders {
        let steps: Vec<Step> = order.iter().map(|&i| STEPS[i]).collect();
        run(&steps);
    }
}

#[test]
fn the_racing_events_do_what_they_say_before_close() {
    // Guard against a vacuous race test: without close, each event has its effect.
    let mut h = Harness::new(TIMEOUT);
    h.add("b1", 2, REC_RR);
    h.update("b1", &[0, 1], REC_RR);
    h.add("b2", 1, REC_RR_PUBLISHING);
    h.update("b2", &[2, 3], REC_RR_PUBLISHING);
    let scs = h.connect_new(4);
    let _ = h.pump();

    // The child publishes on work while active: the parent sees it.
    h.tracker.schedule_work(1);
    let now = h.now();
    h.group.work(&mut h.ctrl, now);
    assert!(
        h.pump().is_some(),
        "an active child's picker reaches the parent"
    );

    h.remove("b2");
    assert!(h.group.is_cached("b2"));
    h.tracker.schedule_work(1);
    h.group.work(&mut h.ctrl, now);
    assert_eq!(
        h.tracker.count(1, "work"),
        2,
        "the cached child still works"
    );
    assert!(h.pump().is_none(), "but its picker stays in the group");

    let now = h.clock.advance(TIMEOUT + Duration::from_millis(1));
    h.group.work(&mut h.ctrl, now);
    assert!(h.tracker.closed(1), "the timer closes the cached child");
    assert!(scs[2].is_shut_down() && scs[3].is_shut_down());
    assert!(!scs[0].is_shut_down());
}
