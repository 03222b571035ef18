//! Scenario tests for `least_request_experimental` (gRFC A48), after grpc-go's
//! `balancer/leastrequest` tests: the fake controller and manual clock drive the
//! policy; held picks stand for calls in flight. Picks are random, so distribution
//! checks count many picks and allow a margin; the seeds are fixed.

use lb_core::CallCompletion;
use std::collections::HashMap;
use std::time::Duration;

use lb_core::policies::least_request::{LeastRequestBuilder, LeastRequestConfig};
use lb_core::{
    ConnectivityState as S, LbConfig, LbPolicy, LbPolicyBuilder, LbPolicyRegistry, Metadata, Pick,
    PickInfo, PickResult, Picker, ResolverUpdate, Status, Subchannel, endpoints,
};
use lb_testkit::picks::describe_pick;
use lb_testkit::{FakeController, ManualClock};

mod util;

struct Fixture {
    clock: ManualClock,
    ctrl: FakeController,
    policy: Box<dyn LbPolicy>,
}

fn config(choice_count: u32) -> LbConfig {
    LbConfig::new(LeastRequestConfig { choice_count })
}

impl Fixture {
    fn new() -> Self {
        let ctrl = FakeController::new();
        let policy = LeastRequestBuilder.build(ctrl.policy_options());
        Self {
            clock: ManualClock::new(),
            ctrl,
            policy,
        }
    }

    fn update(&mut self, addrs: &[&str], choice_count: u32) {
        let update = ResolverUpdate::from_endpoints(endpoints(addrs.iter().copied()));
        let config = config(choice_count);
        self.policy
            .resolver_update(update, Some(&config), &mut self.ctrl, self.clock.now())
            .unwrap();
    }

    fn set(&mut self, sc: &Subchannel, state: S) {
        let now = self.clock.now();
        self.ctrl
            .update_subchannel(&mut *self.policy, sc, state, now);
    }

    /// Creates subchannels for `addrs` and makes them all READY.
    fn ready(addrs: &[&str], choice_count: u32) -> (Self, Vec<Subchannel>) {
        let mut f = Self::new();
        f.update(addrs, choice_count);
        let scs = f.ctrl.verify_new_subchannels(addrs.len());
        for sc in &scs {
            f.set(sc, S::Connecting);
            f.set(sc, S::Ready);
        }
        (f, scs)
    }

    fn picker(&mut self) -> std::sync::Arc<dyn Picker> {
        let state = self.ctrl.latest_state();
        assert_eq!(state.connectivity_state, S::Ready);
        state.picker
    }
}

fn info(md: &Metadata) -> PickInfo<'_> {
    PickInfo::new("/test.Service/Method", md)
}

/// Picks once and keeps the pick (the call stays in flight until it is dropped or
/// completed).
fn hold<'a>(picker: &'a dyn Picker, md: &'a Metadata) -> Pick<'a> {
    match picker.pick(&info(md)) {
        PickResult::Pick(p) => p,
        other => panic!("expected a pick, got {other:?}"),
    }
}

/// Completes a held call with OK.
fn complete(pick: Pick<'_>) {
    (pick.on_complete.expect("least_request sets a completion"))(&CallCompletion::new(
        &Status::ok(),
        Duration::ZERO,
    ));
}

/// Where `n` calls go when each completes at once.
fn spread(picker: &dyn Picker, n: usize) -> HashMap<String, usize> {
    let md = Metadata::new();
    let mut counts = HashMap::new();
    for _ in 0..n {
        let p = hold(picker, &md);
        *counts
            .entry(p.subchannel.address().address.clone())
            .or_insert(0) += 1;
        complete(p);
    }
    counts
}

#[test]
fn configs_follow_grpc_go_and_errors_name_the_field() {
    let reg = LbPolicyRegistry::with_builtins();
    let parse = |json: &str| {
        let list = format!(r#"[{{"least_request_experimental": {json}}}]"#);
        reg.parse_load_balancing_config(&serde_json::from_str(&list).unwrap())
            .map(|c| {
                c.config
                    .downcast_ref::<LeastRequestConfig>()
                    .unwrap()
                    .choice_count
            })
    };
    for (json, want) in [
        ("{}", 2),
        (r#"{"choiceCount": 3}"#, 3),
        (r#"{"choiceCount": 10}"#, 10),
        (r#"{"choiceCount": 11}"#, 10),
        (r#"{"choiceCount": 4294967295}"#, 10),
        (r#"{"choiceCount": null}"#, 2),
        (r#"{"unknownField": 1}"#, 2),
    ] {
        assert_eq!(parse(json), Ok(want), "{json}");
    }
    let field = "[0].least_request_experimental.choiceCount";
    for (json, message) in [
        (r#"{"choiceCount": 1}"#, "must be at least 2, not 1"),
        (r#"{"choiceCount": 0}"#, "must be at least 2, not 0"),
        (r#"{"choiceCount": -1}"#, "must be an integer"),
        (r#"{"choiceCount": 2.5}"#, "must be an integer"),
        (r#"{"choiceCount": "3"}"#, "must be an integer"),
        (r#"{"choiceCount": 4294967296}"#, "must be an integer"),
    ] {
        let err = parse(json).unwrap_err();
        assert_eq!(err.field(), field, "{json}: {err}");
        assert!(err.message().contains(message), "{json}: {err}");
    }
    let err = parse("[]").unwrap_err();
    assert_eq!(err.field(), "[0].least_request_experimental", "{err}");
}

#[test]
fn connects_every_address_and_queues_until_one_is_ready() {
    let mut f = Fixture::new();
    f.update(&["a:1", "b:1", "c:1"], 2);
    let scs = f.ctrl.verify_new_subchannels(3);
    for sc in &scs {
        f.ctrl.verify_connect(sc.id());
    }
    f.set(&scs[0], S::Connecting);
    let state = f.ctrl.latest_state();
    assert_eq!(state.connectivity_state, S::Connecting);
    assert_eq!(describe_pick(&*state.picker, &Metadata::new()), "queue");
    f.set(&scs[1], S::Ready);
    let picker = f.picker();
    let spread = spread(&*picker, 50);
    assert_eq!(
        spread.keys().collect::<Vec<_>>(),
        ["b:1"],
        "only READY ones"
    );
}

#[test]
fn an_endpoint_holding_calls_gets_fewer_picks() {
    let (mut f, _) = Fixture::ready(&["a:1", "b:1", "c:1"], 2);
    let picker = f.picker();
    let md = Metadata::new();
    // Make a:1 hold 100 calls: take picks until it has them, completing the others.
    let mut held = Vec::new();
    for _ in 0..10_000 {
        if held.len() == 100 {
            break;
        }
        let p = hold(&*picker, &md);
        if p.subchannel.address().address == "a:1" {
            held.push(p);
        } else {
            complete(p);
        }
    }
    assert_eq!(held.len(), 100);
    // Now a:1 wins only when both random choices are a:1: 1/9 of picks.
    let counts = spread(&*picker, 9000);
    let a = counts["a:1"];
    assert!((700..1300).contains(&a), "a:1 got {a} of 9000: {counts:?}");
    assert!(counts["b:1"] > 3500 && counts["c:1"] > 3500, "{counts:?}");
    // Completing the held calls gives the counts back: an even spread again.
    held.into_iter().for_each(complete);
    let counts = spread(&*picker, 9000);
    for (addr, n) in &counts {
        assert!((2700..3300).contains(n), "{addr}: {n}: {counts:?}");
    }
}

#[test]
fn choice_count_sets_how_many_endpoints_each_pick_compares() {
    for (choice_count, most_for_loaded) in [(2, 1300), (10, 3)] {
        let (mut f, _) = Fixture::ready(&["a:1", "b:1", "c:1"], choice_count);
        let picker = f.picker();
        let md = Metadata::new();
        let mut held = Vec::new();
        while held.len() < 5 {
            let p = hold(&*picker, &md);
            if p.subchannel.address().address == "a:1" {
                held.push(p);
            } else {
                complete(p);
            }
        }
        // With 10 choices of 3, a:1 is almost never the only endpoint drawn.
        let counts = spread(&*picker, 9000);
        let a = counts.get("a:1").copied().unwrap_or(0);
        assert!(
            a <= most_for_loaded,
            "choiceCount {choice_count}: a:1 got {a}: {counts:?}"
        );
    }
}

#[test]
fn a_dropped_completion_still_gives_its_count_back() {
    let (mut f, _) = Fixture::ready(&["a:1", "b:1"], 10);
    let picker = f.picker();
    let md = Metadata::new();
    let first = hold(&*picker, &md);
    let loaded = first.subchannel.address().address.clone();
    // While one call is in flight there, choiceCount 10 avoids it nearly always.
    let counts = spread(&*picker, 1000);
    assert!(counts.get(&loaded).copied().unwrap_or(0) <= 3, "{counts:?}");
    drop(first);
    let counts = spread(&*picker, 1000);
    assert!(counts[&loaded] > 300, "count returned on drop: {counts:?}");
}

/// After grpc-go's TestLeastRequestPersistsCounts: counts carry over to the picker
/// of a new READY set, so a new endpoint takes the calls until it catches up.
#[test]
fn counts_persist_across_pickers_and_a_new_endpoint_catches_up() {
    let (mut f, _) = Fixture::ready(&["a:1", "b:1"], 2);
    let picker = f.picker();
    let md = Metadata::new();
    let held: Vec<Pick<'_>> = (0..200).map(|_| hold(&*picker, &md)).collect();
    f.update(&["a:1", "b:1", "c:1"], 3);
    let c = f.ctrl.verify_new_subchannels(1).remove(0);
    f.set(&c, S::Ready);
    let newer = f.picker();
    // a:1 and b:1 hold 200 calls between them; c:1 holds none, so it wins whenever
    // one of the three choices draws it (all but (2/3)^3 of the time, 70 %) until
    // it has as many as the lighter of the two: about 70 of 100 picks, and 50 or
    // fewer about once in 100,000 runs.
    let more: Vec<Pick<'_>> = (0..100).map(|_| hold(&*newer, &md)).collect();
    let on_c = more
        .iter()
        .filter(|p| p.subchannel.address().address == "c:1")
        .count();
    assert!(on_c > 50, "c:1 got {on_c} of 100");
    drop(more);
    drop(held);
    let counts = spread(&*newer, 3000);
    assert_eq!(counts.len(), 3, "{counts:?}");
}

#[test]
fn losing_ready_drops_the_endpoint_and_its_count() {
    let (mut f, scs) = Fixture::ready(&["a:1", "b:1"], 2);
    f.set(&scs[0], S::Idle);
    f.ctrl.verify_connect(scs[0].id());
    let picker = f.picker();
    assert_eq!(spread(&*picker, 100).keys().collect::<Vec<_>>(), ["b:1"]);
    for sc in &scs {
        f.set(sc, S::TransientFailure);
    }
    let state = f.ctrl.latest_state();
    assert_eq!(state.connectivity_state, S::TransientFailure);
    assert_eq!(
        describe_pick(&*state.picker, &Metadata::new()),
        "fail:UNAVAILABLE"
    );
    f.ctrl.verify_resolution_requested();
}

#[test]
fn a_choice_count_change_republishes_the_picker() {
    let (mut f, _) = Fixture::ready(&["a:1", "b:1"], 2);
    f.ctrl.take_events();
    f.update(&["a:1", "b:1"], 2);
    f.ctrl.verify_no_picker();
    f.update(&["a:1", "b:1"], 5);
    assert_eq!(f.ctrl.latest_state().connectivity_state, S::Ready);
}

#[test]
fn picks_on_many_threads_return_every_count() {
    let (mut f, _) = Fixture::ready(&["a:1", "b:1", "c:1", "d:1"], 2);
    let picker = f.picker();
    std::thread::scope(|s| {
        for _ in 0..4 {
            let picker = &picker;
            s.spawn(move || spread(&**picker, 5000));
        }
    });
    // Every call completed, so all counts are back to 0 and choices are even.
    let counts = spread(&*picker, 8000);
    for (addr, n) in &counts {
        assert!((1600..2400).contains(n), "{addr}: {n}: {counts:?}");
    }
}

/// Calls `/test.Echo/Who`; the in-memory servers answer with their address.
fn who(channel: &lb_core::channel::Channel) -> Result<String, Status> {
    let options = lb_core::channel::CallOptions::default();
    channel
        .unary("/test.Echo/Who", b"hi".to_vec(), options)
        .map(|r| String::from_utf8(r.message).unwrap())
}

/// A channel over the in-memory transport: a backend that holds its calls gets
/// fewer of the calls made while it holds them.
#[test]
fn a_channel_sends_fewer_calls_to_a_backend_holding_calls() {
    let env = util::Env::new();
    let channel = env.serving_channel(
        &["a:1", "b:1", "c:1"],
        r#"{"least_request_experimental": {"choiceCount": 3}}"#,
    );
    let _ = who(&channel);
    assert!(channel.settle());
    // Wait until all three are READY: every backend answers some call.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..300 {
        seen.insert(who(&channel).unwrap());
        if seen.len() == 3 {
            break;
        }
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    // a:1 holds its calls from now on. Each call runs on its own thread; it either
    // returns (b:1 or c:1) or becomes one more call pending on a:1.
    env.transport.hold_calls("a:1");
    let mut held = Vec::new();
    let mut counts = HashMap::<String, usize>::new();
    for _ in 0..100 {
        let pending = env.transport.pending_calls("a:1");
        let (tx, rx) = crossbeam_channel::bounded(1);
        let ch = channel.clone();
        std::thread::spawn(move || {
            let _ = tx.send(who(&ch));
        });
        let started = std::time::Instant::now();
        let landed = loop {
            if let Ok(r) = rx.recv_timeout(std::time::Duration::from_millis(20)) {
                break r.unwrap();
            }
            if env.transport.pending_calls("a:1") > pending {
                held.push(rx);
                break "a:1".to_owned();
            }
            assert!(
                started.elapsed() < util::WAIT,
                "a call neither returned nor held"
            );
        };
        *counts.entry(landed).or_default() += 1;
    }
    // With one call or more in flight on a:1 and none elsewhere, a:1 is chosen only
    // when all three choices draw it (1/27 at first, then less).
    let on_a = counts.get("a:1").copied().unwrap_or(0);
    println!("least_request over the in-memory transport, a:1 holding calls: {counts:?}");
    assert!((1..=12).contains(&on_a), "{counts:?}");
    env.transport.release_calls("a:1");
    for rx in held {
        assert_eq!(rx.recv_timeout(util::WAIT).unwrap().unwrap(), "a:1");
    }
}
