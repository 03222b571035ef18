//! Scenario tests for `ring_hash_experimental` (gRFCs A42, A61, A76), after grpc-go's
//! `balancer/ringhash` tests: the fake controller and manual clock drive the policy;
//! keys are `x-key` header values.

use std::collections::{HashMap, HashSet};

use lb_core::policies::ring_hash::{HASH_KEY_ATTRIBUTE, RingHashConfig, WEIGHT_ATTRIBUTE};
use lb_core::{
    ConnectivityState as S, Endpoint, LbConfig, LbPolicy, LbPolicyRegistry, Metadata, PickInfo,
    PickResult, Picker, ResolverUpdate, Status, Subchannel, UpdateError,
};
use lb_testkit::picks::describe_pick;
use lb_testkit::{FakeController, ManualClock};

mod util;

const HEADER: &str = "x-key";

struct Fixture {
    clock: ManualClock,
    ctrl: FakeController,
    policy: Box<dyn LbPolicy>,
    config: RingHashConfig,
}

fn with_header() -> RingHashConfig {
    RingHashConfig {
        request_hash_header: Some(HEADER.into()),
        ..RingHashConfig::default()
    }
}

fn eps(addrs: &[&str]) -> Vec<Endpoint> {
    addrs.iter().map(|a| Endpoint::new([*a])).collect()
}

impl Fixture {
    fn new(config: RingHashConfig) -> Self {
        let ctrl = FakeController::new();
        let builder = LbPolicyRegistry::with_builtins()
            .get("ring_hash_experimental")
            .unwrap()
            .clone();
        let policy = builder.build(ctrl.policy_options());
        Self {
            clock: ManualClock::new(),
            ctrl,
            policy,
            config,
        }
    }

    fn update(&mut self, endpoints: Vec<Endpoint>) -> Result<(), UpdateError> {
        let config = LbConfig::new(self.config.clone());
        self.policy.resolver_update(
            ResolverUpdate::from_endpoints(endpoints),
            Some(&config),
            &mut self.ctrl,
            self.clock.now(),
        )
    }

    fn set(&mut self, sc: &Subchannel, state: S) {
        let now = self.clock.now();
        self.ctrl
            .update_subchannel(&mut *self.policy, sc, state, now);
    }

    /// Endpoints for `addrs`, all READY.
    fn ready(addrs: &[&str]) -> (Self, Vec<Subchannel>) {
        let mut f = Self::new(with_header());
        f.update(eps(addrs)).unwrap();
        let scs = f.ctrl.verify_new_subchannels(addrs.len());
        for sc in &scs {
            f.set(sc, S::Connecting);
            f.set(sc, S::Ready);
        }
        (f, scs)
    }

    fn work(&mut self) {
        let now = self.clock.now();
        self.policy.work(&mut self.ctrl, now);
    }
}

fn key(k: &str) -> Metadata {
    let mut md = Metadata::new();
    md.insert(HEADER, k).unwrap();
    md
}

fn pick(picker: &dyn Picker, md: &Metadata) -> String {
    describe_pick(picker, md)
}

/// Where each of `n` keys goes: `key i` → its pick, described.
fn key_map(picker: &dyn Picker, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| pick(picker, &key(&format!("key-{i}"))))
        .collect()
}

#[test]
fn configs_follow_grpc_go_and_errors_name_the_field() {
    let reg = LbPolicyRegistry::with_builtins();
    let parse = |json: &str| {
        let list = format!(r#"[{{"ring_hash_experimental": {json}}}]"#);
        reg.parse_load_balancing_config(&serde_json::from_str(&list).unwrap())
            .map(|c| c.config.downcast_ref::<RingHashConfig>().unwrap().clone())
    };
    let sizes = |min, max, header: Option<&str>| RingHashConfig {
        min_ring_size: min,
        max_ring_size: max,
        request_hash_header: header.map(str::to_owned),
    };
    for (json, want) in [
        ("{}", sizes(1024, 4096, None)),
        (r#"{"minRingSize": 1, "maxRingSize": 2}"#, sizes(1, 2, None)),
        (r#"{"maxRingSize": 2000}"#, sizes(1024, 2000, None)),
        (r#"{"minRingSize": 2000}"#, sizes(2000, 4096, None)),
        (
            r#"{"minRingSize": 0, "maxRingSize": 0}"#,
            sizes(1024, 4096, None),
        ),
        (
            r#"{"minRingSize": 1, "maxRingSize": 6000}"#,
            sizes(1, 4096, None),
        ),
        (
            r#"{"minRingSize": 5000, "maxRingSize": 6000}"#,
            sizes(4096, 4096, None),
        ),
        (
            r#"{"minRingSize": "10", "maxRingSize": "20"}"#,
            sizes(10, 20, None),
        ),
        (
            r#"{"requestHashHeader": "x-foo"}"#,
            sizes(1024, 4096, Some("x-foo")),
        ),
        (
            r#"{"requestHashHeader": "x-FOO"}"#,
            sizes(1024, 4096, Some("x-foo")),
        ),
        (r#"{"requestHashHeader": ""}"#, sizes(1024, 4096, None)),
    ] {
        assert_eq!(parse(json).as_ref(), Ok(&want), "{json}");
    }
    let at = "[0].ring_hash_experimental";
    for (json, field, message) in [
        (
            r#"{"minRingSize": 10, "maxRingSize": 2}"#,
            "minRingSize",
            "10 is greater than maxRingSize 2",
        ),
        (
            r#"{"minRingSize": 6000, "maxRingSize": 5000}"#,
            "minRingSize",
            "greater than maxRingSize",
        ),
        (
            r#"{"minRingSize": 8388610, "maxRingSize": 10}"#,
            "minRingSize",
            "greater than the largest supported value 8388608",
        ),
        (
            r#"{"minRingSize": 10, "maxRingSize": 8388610}"#,
            "maxRingSize",
            "greater than the largest supported value",
        ),
        (
            r#"{"minRingSize": -1}"#,
            "minRingSize",
            "must not be negative",
        ),
        (
            r#"{"maxRingSize": 1.5}"#,
            "maxRingSize",
            "must be an integer",
        ),
        (
            r#"{"maxRingSize": true}"#,
            "maxRingSize",
            "must be an integer",
        ),
        (
            r#"{"requestHashHeader": 7}"#,
            "requestHashHeader",
            "must be a string",
        ),
        (
            r#"{"requestHashHeader": "!invalid"}"#,
            "requestHashHeader",
            "metadata key",
        ),
        (
            r#"{"requestHashHeader": "header-with-bin"}"#,
            "requestHashHeader",
            "must not end with \"-bin\"",
        ),
    ] {
        let err = parse(json).unwrap_err();
        assert_eq!(err.field(), format!("{at}.{field}"), "{json}: {err}");
        assert!(err.message().contains(message), "{json}: {err}");
    }
    assert_eq!(parse("7").unwrap_err().field(), at);
}

#[test]
fn endpoints_connect_only_when_a_pick_lands_on_them() {
    let mut f = Fixture::new(with_header());
    f.update(eps(&["a:1", "b:1", "c:1"])).unwrap();
    let scs = f.ctrl.verify_new_subchannels(3);
    let state = f.ctrl.latest_state();
    assert_eq!(state.connectivity_state, S::Idle);
    f.ctrl.verify_no_events();
    // A pick queues and asks for work once, however many picks land there.
    for _ in 0..3 {
        assert_eq!(pick(&*state.picker, &key("k")), "queue");
    }
    assert_eq!(f.ctrl.work_scheduler.take_requests(), 1);
    f.work();
    let events = f.ctrl.take_events();
    let connects: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            lb_testkit::Event::Connect(id) => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(connects.len(), 1, "only the key's endpoint: {events:?}");
    let target = scs.iter().find(|s| s.id() == connects[0]).unwrap().clone();
    f.set(&target, S::Connecting);
    let state = f.ctrl.latest_state();
    assert_eq!(state.connectivity_state, S::Connecting);
    assert_eq!(pick(&*state.picker, &key("k")), "queue");
    f.set(&target, S::Ready);
    let state = f.ctrl.latest_state();
    assert_eq!(state.connectivity_state, S::Ready);
    assert_eq!(
        pick(&*state.picker, &key("k")),
        format!("pick:{}", target.address())
    );
}

#[test]
fn the_same_key_always_goes_to_the_same_endpoint() {
    let (mut f, _) = Fixture::ready(&["a:1", "b:1", "c:1"]);
    let picker = f.ctrl.latest_state().picker;
    let first = key_map(&*picker, 100);
    for _ in 0..10 {
        assert_eq!(key_map(&*picker, 100), first);
    }
    let used: HashSet<_> = first.iter().collect();
    assert_eq!(used.len(), 3, "100 keys reach every endpoint: {used:?}");
    // Another client with the same endpoints builds the same ring.
    let (mut g, _) = Fixture::ready(&["c:1", "a:1", "b:1"]);
    assert_eq!(key_map(&*g.ctrl.latest_state().picker, 100), first);
}

#[test]
fn repeated_header_values_hash_joined_with_commas() {
    let (mut f, _) = Fixture::ready(&["a:1", "b:1", "c:1", "d:1", "e:1"]);
    let picker = f.ctrl.latest_state().picker;
    for i in 0..50 {
        let (x, y) = (format!("x{i}"), format!("y{i}"));
        let mut two = Metadata::new();
        two.insert(HEADER, &x).unwrap();
        two.insert(HEADER, &y).unwrap();
        assert_eq!(
            pick(&*picker, &two),
            pick(&*picker, &key(&format!("{x},{y}")))
        );
    }
}

#[test]
fn removing_one_of_five_endpoints_moves_about_a_fifth_of_the_keys() {
    let addrs = ["a:1", "b:1", "c:1", "d:1", "e:1"];
    let (mut f, _) = Fixture::ready(&addrs);
    let before = key_map(&*f.ctrl.latest_state().picker, 10_000);
    f.update(eps(&addrs[..4])).unwrap();
    let after = key_map(&*f.ctrl.latest_state().picker, 10_000);
    // Keys on e:1 all move. The ring keeps its size (minRingSize), so each endpoint's
    // entries grow from 1/5 to 1/4 of it and some other keys move too: grpc-go's ring
    // (and Envoy's) does the same.
    let (mut moved, mut others_moved) = (0, 0);
    for (b, a) in before.iter().zip(&after) {
        assert_ne!(a, "pick:e:1");
        if a != b {
            moved += 1;
            if b != "pick:e:1" {
                others_moved += 1;
            }
        }
    }
    let fraction = moved as f64 / 10_000.0;
    println!(
        "removing 1 of 5 endpoints moved {fraction:.3} of 10,000 keys \
         ({others_moved} of them were not on the removed endpoint)"
    );
    // e:1 had about 1/5 of the keys; the surviving endpoints' new entries (1/5 of
    // the new ring) take over the arcs before them, a quarter of which were their own.
    assert!((0.2..0.36).contains(&fraction), "moved {fraction}");
    assert!(
        others_moved < 1300,
        "{others_moved} keys of other endpoints moved"
    );
    // Adding it back restores the old map exactly.
    f.update(eps(&addrs)).unwrap();
    let e = f.ctrl.verify_new_subchannels(1).remove(0);
    f.set(&e, S::Ready);
    assert_eq!(key_map(&*f.ctrl.latest_state().picker, 10_000), before);
}

#[test]
fn weights_set_each_endpoints_share_of_keys() {
    let mut f = Fixture::new(with_header());
    let endpoints = vec![
        Endpoint::new(["a:1"]).with_attribute(WEIGHT_ATTRIBUTE, "1"),
        Endpoint::new(["b:1"]).with_attribute(WEIGHT_ATTRIBUTE, "2"),
        Endpoint::new(["c:1"]).with_attribute(WEIGHT_ATTRIBUTE, "3"),
    ];
    f.update(endpoints).unwrap();
    for sc in f.ctrl.verify_new_subchannels(3) {
        f.set(&sc, S::Ready);
    }
    let map = key_map(&*f.ctrl.latest_state().picker, 12_000);
    let share =
        |a: &str| map.iter().filter(|p| *p == &format!("pick:{a}")).count() as f64 / 12_000.0;
    for (addr, want) in [("a:1", 1.0 / 6.0), ("b:1", 2.0 / 6.0), ("c:1", 3.0 / 6.0)] {
        let got = share(addr);
        assert!(
            (got - want).abs() < 0.05,
            "{addr}: {got:.3}, want {want:.3}"
        );
    }
}

#[test]
fn the_hash_key_attribute_places_endpoints_instead_of_the_address() {
    let with_keys = |addrs: [&str; 3]| {
        addrs
            .iter()
            .zip(["k1", "k2", "k3"])
            .map(|(a, k)| Endpoint::new([*a]).with_attribute(HASH_KEY_ATTRIBUTE, k))
            .collect::<Vec<_>>()
    };
    let maps: Vec<Vec<String>> = [["a:1", "b:1", "c:1"], ["x:1", "y:1", "z:1"]]
        .into_iter()
        .map(|addrs| {
            let mut f = Fixture::new(with_header());
            f.update(with_keys(addrs)).unwrap();
            for sc in f.ctrl.verify_new_subchannels(3) {
                f.set(&sc, S::Ready);
            }
            let rename: HashMap<String, &str> = addrs
                .iter()
                .zip(["k1", "k2", "k3"])
                .map(|(a, k)| (format!("pick:{a}"), k))
                .collect();
            key_map(&*f.ctrl.latest_state().picker, 500)
                .into_iter()
                .map(|p| rename[&p].to_owned())
                .collect()
        })
        .collect();
    assert_eq!(maps[0], maps[1], "same hash keys, same placement");
}

#[test]
fn failing_endpoints_are_passed_over_for_the_next_on_the_ring() {
    let (mut f, scs) = Fixture::ready(&["a:1", "b:1", "c:1"]);
    let before = key_map(&*f.ctrl.latest_state().picker, 300);
    f.set(&scs[0], S::TransientFailure);
    f.ctrl.verify_resolution_requested();
    let state = f.ctrl.latest_state();
    assert_eq!(state.connectivity_state, S::Ready);
    let after = key_map(&*state.picker, 300);
    for (b, a) in before.iter().zip(&after) {
        assert_ne!(a, "pick:a:1");
        if b != "pick:a:1" {
            assert_eq!(a, b);
        }
    }
    // Its reconnect attempts (IDLE after backoff, CONNECTING) keep it failing, and
    // it reconnects at once after each backoff.
    f.set(&scs[0], S::Idle);
    f.ctrl.verify_connect(scs[0].id());
    f.set(&scs[0], S::Connecting);
    f.ctrl.verify_no_picker();
    f.set(&scs[0], S::Ready);
    assert_eq!(key_map(&*f.ctrl.latest_state().picker, 300), before);
}

#[test]
fn aggregate_state_follows_grpc_a42() {
    // One endpoint failing of several, the rest IDLE: CONNECTING, and the first IDLE
    // endpoint by hash key starts connecting so the policy keeps trying.
    let mut f = Fixture::new(with_header());
    f.update(eps(&["c:1", "a:1", "b:1"])).unwrap();
    let scs = f.ctrl.verify_new_subchannels(3);
    f.set(&scs[1], S::Connecting);
    assert_eq!(f.ctrl.latest_state().connectivity_state, S::Connecting);
    f.set(&scs[1], S::TransientFailure);
    assert_eq!(f.ctrl.latest_state().connectivity_state, S::Connecting);
    // a:1 failed, so b:1 (next in hash-key order, and IDLE) connects.
    f.ctrl.verify_connect(scs[2].id());
    f.set(&scs[2], S::Connecting);
    assert_eq!(f.ctrl.latest_state().connectivity_state, S::Connecting);
    // Two failing: TRANSIENT_FAILURE, and c:1, the last IDLE one, connects.
    f.set(&scs[2], S::TransientFailure);
    let state = f.ctrl.latest_state();
    assert_eq!(state.connectivity_state, S::TransientFailure);
    f.ctrl.verify_connect(scs[0].id());
    // Keys walk past failing endpoints: the one still IDLE gets them.
    f.ctrl.take_events();
    assert_eq!(pick(&*state.picker, &key("any")), "queue");
    // READY anywhere: READY.
    f.set(&scs[0], S::Ready);
    let state = f.ctrl.latest_state();
    assert_eq!(state.connectivity_state, S::Ready);
    for i in 0..50 {
        assert_eq!(pick(&*state.picker, &key(&format!("{i}"))), "pick:c:1");
    }
    // All failing: every call fails with a connection error.
    f.set(&scs[0], S::TransientFailure);
    let state = f.ctrl.latest_state();
    assert_eq!(state.connectivity_state, S::TransientFailure);
    let md = key("k");
    match state.picker.pick(&PickInfo::new("/s/m", &md)) {
        PickResult::Fail(s) => {
            assert_eq!(s.code(), lb_core::Code::Unavailable);
            assert!(s.message().contains("refused the connection"), "{s}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_single_endpoint_failing_is_transient_failure() {
    let mut f = Fixture::new(with_header());
    f.update(eps(&["a:1"])).unwrap();
    let sc = f.ctrl.verify_new_subchannels(1).remove(0);
    f.set(&sc, S::Connecting);
    f.set(&sc, S::TransientFailure);
    assert_eq!(
        f.ctrl.latest_state().connectivity_state,
        S::TransientFailure
    );
}

#[test]
fn a_lost_connection_goes_idle_and_reconnects_only_on_demand() {
    let (mut f, scs) = Fixture::ready(&["a:1", "b:1"]);
    f.ctrl.take_events();
    f.set(&scs[0], S::Idle);
    let events = f.ctrl.take_events();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, lb_testkit::Event::Connect(_))),
        "no reconnect without a pick: {events:?}"
    );
    let picker = match events.last() {
        Some(lb_testkit::Event::UpdatePicker(s)) => s.picker.clone(),
        other => panic!("{other:?}"),
    };
    let key_on_a = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| pick(&*picker, &key(k)) == "queue")
        .expect("some key maps to a:1");
    assert!(f.ctrl.work_scheduler.take_requests() >= 1);
    f.work();
    f.ctrl.verify_connect(scs[0].id());
    f.set(&scs[0], S::Ready);
    assert_eq!(
        pick(&*f.ctrl.latest_state().picker, &key(&key_on_a)),
        "pick:a:1"
    );
}

#[test]
fn without_the_header_a_random_hash_finds_a_ready_endpoint_or_connects_one() {
    let mut f = Fixture::new(with_header());
    f.update(eps(&["a:1", "b:1", "c:1"])).unwrap();
    let scs = f.ctrl.verify_new_subchannels(3);
    let picker = f.ctrl.latest_state().picker;
    let none = Metadata::new();
    // A pick starts at most one connection (each pick may start one, as in
    // grpc-go, until a picker shows one CONNECTING).
    assert_eq!(pick(&*picker, &none), "queue");
    assert_eq!(f.ctrl.work_scheduler.take_requests(), 1, "one connection");
    f.work();
    let connected: Vec<_> = f
        .ctrl
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            lb_testkit::Event::Connect(id) => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(connected.len(), 1);
    // While one is CONNECTING, no more connections start.
    let sc = scs.iter().find(|s| s.id() == connected[0]).unwrap().clone();
    f.set(&sc, S::Connecting);
    let picker = f.ctrl.latest_state().picker;
    assert_eq!(pick(&*picker, &none), "queue");
    assert_eq!(f.ctrl.work_scheduler.take_requests(), 0);
    f.set(&sc, S::Ready);
    let picker = f.ctrl.latest_state().picker;
    for _ in 0..20 {
        assert_eq!(pick(&*picker, &none), format!("pick:{}", sc.address()));
    }
}

#[test]
fn without_a_request_hash_header_calls_fail_as_in_grpc_go() {
    let mut f = Fixture::new(RingHashConfig::default());
    f.update(eps(&["a:1"])).unwrap();
    let picker = f.ctrl.latest_state().picker;
    assert_eq!(pick(&*picker, &key("k")), "fail:UNAVAILABLE");
    assert_eq!(f.ctrl.work_scheduler.take_requests(), 0);
}

#[test]
fn address_updates_keep_subchannels_and_errors_fail_with_a_reason() {
    let (mut f, scs) = Fixture::ready(&["a:1", "b:1"]);
    f.ctrl.take_events();
    f.update(eps(&["b:1", "c:1", "c:1"])).unwrap();
    let new = f.ctrl.verify_new_subchannels(1);
    assert_eq!(new[0].address().address, "c:1");
    f.ctrl.verify_no_new_subchannels();
    f.ctrl.verify_shutdowns(&[scs[0].id()]);
    let err = f.update(Vec::new()).unwrap_err();
    assert!(matches!(err, UpdateError::BadResolverState(_)), "{err}");
    f.ctrl.verify_shutdowns(&[scs[1].id(), new[0].id()]);
    let state = f.ctrl.latest_state();
    assert_eq!(state.connectivity_state, S::TransientFailure);

    let mut g = Fixture::new(with_header());
    let update = ResolverUpdate::from_error(Status::unavailable("dns down"));
    g.policy
        .resolver_update(update, None, &mut g.ctrl, g.clock.now())
        .unwrap();
    assert_eq!(
        describe_pick(&*g.ctrl.latest_state().picker, &key("k")),
        "fail:UNAVAILABLE"
    );
}

#[test]
fn close_shuts_down_every_subchannel() {
    let (mut f, scs) = Fixture::ready(&["a:1", "b:1", "c:1"]);
    f.ctrl.take_events();
    f.policy.close();
    let ids: Vec<_> = scs.iter().map(|s| s.id()).collect();
    f.ctrl.verify_shutdowns(&ids);
}

/// A channel over the in-memory transport: calls with the same `x-key` reach the
/// same backend, connecting only the backends keys land on.
#[test]
fn a_channel_routes_each_key_to_one_backend() {
    use lb_core::channel::CallOptions;
    let env = util::Env::new();
    let channel = env.serving_channel(
        &["a:1", "b:1", "c:1"],
        r#"{"ring_hash_experimental": {"requestHashHeader": "x-key"}}"#,
    );
    let call = |k: &str| {
        let options = CallOptions::default()
            .with_metadata(key(k))
            .with_wait_for_ready(true)
            .with_deadline(env.clock.now() + util::WAIT);
        channel
            .unary("/test.Echo/Who", b"hi".to_vec(), options)
            .map(|r| String::from_utf8(r.message).unwrap())
    };
    let mut homes: HashMap<String, HashSet<String>> = HashMap::new();
    for round in 0..5 {
        for i in 0..30 {
            let k = format!("user-{i}");
            homes
                .entry(k.clone())
                .or_default()
                .insert(call(&k).unwrap());
        }
        if round == 0 {
            assert!(channel.settle());
        }
    }
    for (k, backends) in &homes {
        assert_eq!(backends.len(), 1, "{k} went to {backends:?}");
    }
    let used: HashSet<_> = homes.values().flatten().collect();
    assert_eq!(used.len(), 3, "30 keys spread over the backends: {used:?}");
}

/// After grpc-go's TestAddrWeightChange and TestUpdateClientConnState_NewRingSize:
/// a changed weight or ring size rebuilds the ring; an unchanged update keeps it.
#[test]
fn weight_and_ring_size_changes_rebuild_the_ring() {
    let (mut f, _) = Fixture::ready(&["a:1", "b:1", "c:1"]);
    let share_of_a = |picker: &dyn Picker| {
        key_map(picker, 3000)
            .iter()
            .filter(|p| *p == "pick:a:1")
            .count() as f64
            / 3000.0
    };
    let picker = f.ctrl.latest_state().picker;
    let before = key_map(&*picker, 3000);
    let a_before = share_of_a(&*picker);
    f.update(eps(&["a:1", "b:1", "c:1"])).unwrap();
    assert_eq!(key_map(&*f.ctrl.latest_state().picker, 3000), before);

    let mut weighted = eps(&["a:1", "b:1", "c:1"]);
    weighted[0] = weighted[0].clone().with_attribute(WEIGHT_ATTRIBUTE, "8");
    f.update(weighted.clone()).unwrap();
    f.ctrl.verify_no_new_subchannels();
    let a_after = share_of_a(&*f.ctrl.latest_state().picker);
    assert!(
        a_before < 0.45 && a_after > 0.7,
        "a:1's share went from {a_before:.2} to {a_after:.2}"
    );

    // A ring of 3 entries (one per endpoint) instead of thousands moves keys.
    f.config.min_ring_size = 3;
    f.config.max_ring_size = 3;
    f.update(eps(&["a:1", "b:1", "c:1"])).unwrap();
    let tiny = key_map(&*f.ctrl.latest_state().picker, 3000);
    assert_ne!(tiny, before, "a 3-entry ring places keys differently");
}

#[test]
fn describe_shows_the_ring_and_each_endpoints_share() {
    let (mut f, scs) = Fixture::ready(&["a:1", "b:1", "c:1"]);
    f.set(&scs[2], S::TransientFailure);
    let mut view = lb_core::channelz::PolicyView::child("", "ring_hash_experimental");
    f.policy.describe(&mut view);
    let ring: usize = view.get_detail("ring size").unwrap().parse().unwrap();
    assert!(ring >= 1024, "the default minimum ring size: {ring}");
    assert_eq!(view.get_detail("endpoints"), Some("3"));
    let mut shares = 0;
    for (sc, view) in scs.iter().zip(&view.subchannels) {
        assert_eq!(
            (view.id, view.address.as_str()),
            (sc.id().0, sc.address().address.as_str())
        );
        let share = view
            .details
            .iter()
            .find(|(l, _)| l == "ring share")
            .unwrap();
        let (owned, total) = share.1.split_once(" of ").unwrap();
        assert_eq!(total.parse::<usize>().unwrap(), ring);
        shares += owned.parse::<usize>().unwrap();
    }
    assert_eq!(shares, ring, "every ring entry belongs to one endpoint");
    let states: Vec<S> = view.subchannels.iter().map(|s| s.state).collect();
    assert_eq!(states, [S::Ready, S::Ready, S::TransientFailure]);
}
