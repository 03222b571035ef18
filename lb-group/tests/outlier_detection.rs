//! Scenarios for `outlier_detection_experimental` (gRFC A50), after the cases of
//! grpc-go's outlier detection tests: config parsing, ejection by success rate and by
//! failure percentage, un-ejection, the ejection-time multiplier, the ejection cap,
//! enforcement, pass-through, and a channel over the in-memory transport.
//!
//! The policy runs on a `FakeController` with a `ManualClock`; calls are simulated by
//! picking from the published picker and completing the pick with a status. The child
//! is `round_robin` in lb-group's test wrapper (`util::TestBuilder::seeing`), which
//! keeps every subchannel state it is told and counts the completions of its picks.

use lb_core::CallCompletion;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lb_core::channel::CallOptions;
use lb_core::channelz::PolicyView;
use lb_core::config::ConfigError;
use lb_core::policies::round_robin::RoundRobinBuilder;
use lb_core::transport::{CallRequest, CallResponse};
use lb_core::{
    Code, ConnectivityState as S, LbConfig, LbPolicy, LbPolicyRegistry, LbState, Metadata,
    PickInfo, PickResult, Picker, ResolverUpdate, SharedRandom, SplitMix64, Status, Subchannel,
    UpdateError, endpoints,
};
use lb_group::outlier_detection::{OutlierDetection, OutlierDetectionConfig};
use lb_testkit::{Event, FakeController, InMemoryTransport, ManualClock, ManualResolver};
use serde_json::{Value, json};

mod util;
use util::{Seen, TestBuilder};

const INTERVAL: Duration = Duration::from_secs(10);

/// The recording child's name: `round_robin` in lb-group's test wrapper.
const RECORDING: &str = "recording_rr";

// ---------------------------------------------------------------------------------
// Harness.

fn registry_with(seen: &Arc<Seen>) -> LbPolicyRegistry {
    let mut registry = LbPolicyRegistry::with_builtins();
    lb_group::register(&mut registry);
    registry.register(TestBuilder::new(RECORDING, RoundRobinBuilder).seeing(seen));
    registry
}

fn registry() -> LbPolicyRegistry {
    registry_with(&Arc::default())
}

/// Parses `config` as the policy's config through a `loadBalancingConfig` list.
fn parse(config: Value) -> Result<OutlierDetectionConfig, ConfigError> {
    let parsed = registry()
        .parse_load_balancing_config(&json!([{ "outlier_detection_experimental": config }]))?;
    Ok(parsed
        .config
        .downcast_ref::<OutlierDetectionConfig>()
        .expect("an outlier detection config")
        .clone())
}

/// A config over the recording child with `extra` merged in.
fn config_json(extra: Value) -> Value {
    let mut config = json!({
        "interval": "10s",
        "baseEjectionTime": "30s",
        "maxEjectionTime": "300s",
        "childPolicy": [{ RECORDING: {} }],
    });
    for (k, v) in extra.as_object().expect("an object") {
        config[k] = v.clone();
    }
    config
}

struct Harness {
    ctrl: FakeController,
    clock: ManualClock,
    policy: OutlierDetection,
    registry: LbPolicyRegistry,
    config: LbConfig,
    seen: Arc<Seen>,
    subchannels: BTreeMap<String, Subchannel>,
    state: Option<LbState>,
    wakes: Vec<Instant>,
    addresses: Vec<String>,
}

impl Harness {
    /// The policy with `config` over `n` addresses `a0:1`…, every subchannel READY.
    fn start(config: Value, n: usize) -> Self {
        let seen: Arc<Seen> = Arc::default();
        let registry = registry_with(&seen);
        let ctrl = FakeController::new();
        let policy = OutlierDetection::new(ctrl.policy_options_with(registry.clone()));
        let mut h = Self {
            ctrl,
            clock: ManualClock::new(),
            policy,
            config: LbConfig::new(()),
            registry,
            seen,
            subchannels: BTreeMap::new(),
            state: None,
            wakes: Vec::new(),
            addresses: Vec::new(),
        };
        h.set_config(config);
        let addresses: Vec<String> = (0..n).map(|i| format!("a{i}:1")).collect();
        h.update_addresses(&addresses);
        h
    }

    fn set_config(&mut self, config: Value) {
        let parsed = self
            .registry
            .parse_load_balancing_config(&json!([{ "outlier_detection_experimental": config }]))
            .expect("a valid config");
        self.config = parsed.config;
    }

    /// Sends a resolver update with the current addresses and config.
    fn send_update(&mut self) {
        let now = self.clock.now();
        let addresses = self.addresses.iter().map(String::as_str);
        let update = ResolverUpdate::from_endpoints(endpoints(addresses));
        let config = self.config.clone();
        self.policy
            .resolver_update(update, Some(&config), &mut self.ctrl, now)
            .expect("update accepted");
        self.drain();
    }

    /// Sends a resolver update with `addresses` and makes new subchannels READY.
    fn update_addresses(&mut self, addresses: &[String]) {
        self.addresses = addresses.to_vec();
        self.send_update();
        let fresh: Vec<Subchannel> = self
            .ctrl
            .created_subchannels()
            .iter()
            .filter(|sc| !self.subchannels.values().any(|s| s == *sc) && !sc.is_shut_down())
            .cloned()
            .collect();
        for sc in fresh {
            self.subchannels
                .insert(sc.address().address.clone(), sc.clone());
            self.report(&sc.address().address.clone(), S::Connecting);
            self.report(&sc.address().address.clone(), S::Ready);
        }
        self.subchannels.retain(|_, sc| !sc.is_shut_down());
        self.seen.take();
    }

    /// The channel reports `state` for the subchannel of `address`.
    fn report(&mut self, address: &str, state: S) {
        let sc = self.subchannels[address].clone();
        let now = self.clock.now();
        self.ctrl
            .update_subchannel(&mut self.policy, &sc, state, now);
        self.drain();
    }

    /// Moves the clock by `by` and lets the policy work.
    fn advance(&mut self, by: Duration) {
        let now = self.clock.advance(by);
        self.policy.work(&mut self.ctrl, now);
        self.drain();
    }

    /// Runs `n` interval sweeps, with `calls` between each.
    fn intervals(&mut self, n: usize, mut calls: impl FnMut(&mut Self)) {
        for _ in 0..n {
            calls(self);
            self.advance(INTERVAL);
        }
    }

    fn drain(&mut self) {
        for event in self.ctrl.take_events() {
            match event {
                Event::UpdatePicker(state) => self.state = Some(state),
                Event::WakeAt(t) => self.wakes.push(t),
                _ => {}
            }
        }
    }

    fn picker(&self) -> Arc<dyn Picker> {
        self.state
            .as_ref()
            .expect("a published state")
            .picker
            .clone()
    }

    /// Makes `n` calls; a call to address `a` fails with UNAVAILABLE when `fails(a, k)`
    /// for its `k`-th call (from 0). Returns the calls per address.
    fn calls(&self, n: usize, fails: impl Fn(&str, usize) -> bool) -> BTreeMap<String, usize> {
        let picker = self.picker();
        let md = Metadata::new();
        let info = PickInfo::new("/test.Service/Method", &md);
        let mut per: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..n {
            let PickResult::Pick(mut pick) = picker.pick(&info) else {
                panic!("the picker did not pick");
            };
            let address = pick.subchannel.address().address.clone();
            let k = per.entry(address.clone()).or_default();
            let status = if fails(&address, *k) {
                Status::unavailable("backend failed")
            } else {
                Status::ok()
            };
            *k += 1;
            if let Some(done) = pick.on_complete.take() {
                done(&CallCompletion::new(&status, Duration::ZERO));
            }
        }
        per
    }

    fn ejected(&self) -> Vec<String> {
        self.policy.ejected_addresses()
    }

    /// The states the child was told since the last look, for `address`.
    fn child_saw(&self, address: &str) -> Vec<(S, Option<String>)> {
        self.seen
            .take()
            .into_iter()
            .filter(|(a, ..)| a == address)
            .map(|(_, s, e)| (s, e))
            .collect()
    }
}

/// Calls for one interval: 10 to each address, where `bad` fails every other call.
fn half_failing(bad: &'static str) -> impl FnMut(&mut Harness) {
    move |h: &mut Harness| {
        let n = 10 * h.addresses.len();
        h.calls(n, |a, k| a == bad && k % 2 == 0);
    }
}

/// Success-rate ejection with a volume of 10 calls per address.
fn success_rate(extra: Value) -> Value {
    let mut sre = json!({"minimumHosts": 5, "requestVolume": 10});
    for (k, v) in extra.as_object().expect("an object") {
        sre[k] = v.clone();
    }
    config_json(json!({ "successRateEjection": sre }))
}

/// Failure-percentage ejection, enforced, over 5 hosts with 10 calls each.
fn failure_percentage(extra: Value) -> Value {
    let mut fpe = json!({"threshold": 50, "enforcementPercentage": 100,
                         "minimumHosts": 5, "requestVolume": 10});
    for (k, v) in extra.as_object().expect("an object") {
        fpe[k] = v.clone();
    }
    config_json(json!({ "failurePercentageEjection": fpe }))
}

// ---------------------------------------------------------------------------------
// Config parsing.

#[test]
fn config_defaults_follow_a50() {
    let c = parse(json!({"childPolicy": [{"round_robin": {}}]})).unwrap();
    assert_eq!(c.interval, Duration::from_secs(10));
    assert_eq!(c.base_ejection_time, Duration::from_secs(30));
    assert_eq!(c.max_ejection_time, Duration::from_secs(300));
    assert_eq!(c.max_ejection_percent, 10);
    assert!(c.success_rate_ejection.is_none() && c.failure_percentage_ejection.is_none());
    assert!(c.is_noop());
    assert_eq!(c.child_policy.name(), "round_robin");

    let c = parse(json!({
        "successRateEjection": {},
        "failurePercentageEjection": {},
        "childPolicy": [{"round_robin": {}}],
    }))
    .unwrap();
    let sre = c.success_rate_ejection.unwrap();
    assert_eq!(
        (
            sre.stdev_factor,
            sre.enforcement_percentage,
            sre.minimum_hosts,
            sre.request_volume
        ),
        (1900, 100, 5, 100)
    );
    let fpe = c.failure_percentage_ejection.unwrap();
    assert_eq!(
        (
            fpe.threshold,
            fpe.enforcement_percentage,
            fpe.minimum_hosts,
            fpe.request_volume
        ),
        (85, 0, 5, 50)
    );
    assert!(!c.is_noop());
}

#[test]
fn config_with_every_field_parses_and_compares_by_value() {
    let json = json!({
        "interval": "1.5s", "baseEjectionTime": "2s", "maxEjectionTime": "3s",
        "maxEjectionPercent": 100,
        "successRateEjection": {"stdevFactor": 0, "enforcementPercentage": 0,
                                "minimumHosts": 0, "requestVolume": 0},
        "failurePercentageEjection": {"threshold": 100, "enforcementPercentage": 100,
                                      "minimumHosts": 1, "requestVolume": 2},
        "childPolicy": [{"unknown": {}}, {"pick_first": {}}],
        "someFutureField": true,
    });
    let c = parse(json.clone()).unwrap();
    assert_eq!(c.interval, Duration::from_millis(1500));
    assert_eq!(c.base_ejection_time, Duration::from_secs(2));
    assert_eq!(c.max_ejection_time, Duration::from_secs(3));
    assert_eq!(c.max_ejection_percent, 100);
    assert_eq!(c.success_rate_ejection.unwrap().stdev_factor, 0);
    assert_eq!(c.failure_percentage_ejection.unwrap().request_volume, 2);
    assert_eq!(c.child_policy.name(), "pick_first");
    assert_eq!(c, parse(json).unwrap());
    let parsed = registry()
        .parse_load_balancing_config(
            &json!([{"outlier_detection": {"childPolicy": [{"round_robin": {}}]}}]),
        )
        .unwrap();
    assert_eq!(
        parsed.name(),
        "outlier_detection_experimental",
        "the alias builds the same policy"
    );
}

#[test]
fn config_errors_name_their_field() {
    let rr = json!([{"round_robin": {}}]);
    let cases: Vec<(Value, &str)> = vec![
        (json!(5), ""),
        (json!({"interval": "-1s", "childPolicy": rr}), "interval"),
        (json!({"interval": "0s", "childPolicy": rr}), "interval"),
        (json!({"interval": 10, "childPolicy": rr}), "interval"),
        (
            json!({"baseEjectionTime": "30", "childPolicy": rr}),
            "baseEjectionTime",
        ),
        (
            json!({"maxEjectionTime": "x", "childPolicy": rr}),
            "maxEjectionTime",
        ),
        (
            json!({"maxEjectionPercent": 101, "childPolicy": rr}),
            "maxEjectionPercent",
        ),
        (
            json!({"maxEjectionPercent": -1, "childPolicy": rr}),
            "maxEjectionPercent",
        ),
        (
            json!({"successRateEjection": 1, "childPolicy": rr}),
            "successRateEjection",
        ),
        (
            json!({"successRateEjection": {"stdevFactor": -5}, "childPolicy": rr}),
            "successRateEjection.stdevFactor",
        ),
        (
            json!({"successRateEjection": {"enforcementPercentage": 101}, "childPolicy": rr}),
            "successRateEjection.enforcementPercentage",
        ),
        (
            json!({"successRateEjection": {"minimumHosts": "5"}, "childPolicy": rr}),
            "successRateEjection.minimumHosts",
        ),
        (
            json!({"successRateEjection": {"requestVolume": 1.5}, "childPolicy": rr}),
            "successRateEjection.requestVolume",
        ),
        (
            json!({"failurePercentageEjection": [], "childPolicy": rr}),
            "failurePercentageEjection",
        ),
        (
            json!({"failurePercentageEjection": {"threshold": 101}, "childPolicy": rr}),
            "failurePercentageEjection.threshold",
        ),
        (
            json!({"failurePercentageEjection": {"enforcementPercentage": 200}, "childPolicy": rr}),
            "failurePercentageEjection.enforcementPercentage",
        ),
        (
            json!({"failurePercentageEjection": {"minimumHosts": -1}, "childPolicy": rr}),
            "failurePercentageEjection.minimumHosts",
        ),
        (
            json!({"failurePercentageEjection": {"requestVolume": true}, "childPolicy": rr}),
            "failurePercentageEjection.requestVolume",
        ),
        (json!({}), "childPolicy"),
        (json!({"childPolicy": {}}), "childPolicy"),
        (
            json!({"childPolicy": [{"no_such_policy": {}}]}),
            "childPolicy",
        ),
        (
            json!({"childPolicy": [{"weighted_target": {"targets": 1}}]}),
            "childPolicy[0].weighted_target.targets",
        ),
    ];
    for (config, field) in cases {
        let err = parse(config.clone()).expect_err(&config.to_string());
        let want = if field.is_empty() {
            "[0].outlier_detection_experimental".to_owned()
        } else {
            format!("[0].outlier_detection_experimental.{field}")
        };
        assert_eq!(err.field(), want, "{config}: {err}");
    }
}

#[test]
fn a_first_resolver_error_reaches_the_child_which_fails_calls() {
    let mut ctrl = FakeController::new();
    let mut policy = OutlierDetection::new(ctrl.policy_options_with(registry()));
    let config = registry()
        .parse_load_balancing_config(&json!([{"outlier_detection_experimental": {
            "successRateEjection": {}, "childPolicy": [{"round_robin": {}}]}}]))
        .unwrap()
        .config;
    let update = ResolverUpdate::from_error(Status::unavailable("no such name"));
    policy
        .resolver_update(update, Some(&config), &mut ctrl, Instant::now())
        .unwrap();
    let state = ctrl.latest_state();
    assert_eq!(state.connectivity_state, S::TransientFailure);
    let md = Metadata::new();
    let PickResult::Fail(status) = state.picker.pick(&PickInfo::new("/m", &md)) else {
        panic!("calls fail");
    };
    assert!(status.message().contains("no such name"), "{status}");
}

#[test]
fn child_errors_and_exit_idle_pass_through() {
    let mut h = Harness::start(success_rate(json!({})), 3);
    let now = h.clock.now();
    let config = h.config.clone();
    let err = h
        .policy
        .resolver_update(
            ResolverUpdate::from_endpoints(vec![]),
            Some(&config),
            &mut h.ctrl,
            now,
        )
        .unwrap_err();
    assert!(matches!(err, UpdateError::BadResolverState(_)), "{err}");
    h.drain();
    let state = h.state.clone().expect("a state");
    assert_eq!(
        state.connectivity_state,
        S::TransientFailure,
        "round_robin's own state"
    );
    assert!(h.policy.ejected_addresses().is_empty());

    let addresses: Vec<String> = vec!["b:1".into()];
    h.update_addresses(&addresses);
    let sc = h.subchannels["b:1"].clone();
    h.report("b:1", S::Idle);
    h.ctrl.take_events();
    h.policy.exit_idle(&mut h.ctrl, now);
    h.ctrl.verify_connect(sc.id());
}

#[test]
fn an_update_without_its_config_is_refused() {
    let ctrl = FakeController::new();
    let mut policy = OutlierDetection::new(ctrl.policy_options_with(registry()));
    let mut ctrl = ctrl;
    let update = ResolverUpdate::from_endpoints(endpoints(["a:1"]));
    let err = policy
        .resolver_update(update, None, &mut ctrl, Instant::now())
        .unwrap_err();
    assert!(err.to_string().contains("outlier_detection"), "{err}");
}

// ---------------------------------------------------------------------------------
// Ejection and un-ejection.

#[test]
fn a_backend_failing_half_its_calls_is_ejected_at_the_first_interval() {
    let mut h = Harness::start(success_rate(json!({})), 6);
    let t0 = h.clock.now();
    assert_eq!(
        h.wakes,
        [t0 + INTERVAL],
        "the first sweep is one interval away"
    );

    let child_picker = h.seen.picker.lock().clone().expect("the child published");
    assert!(
        !Arc::ptr_eq(&h.picker(), &child_picker),
        "the child's picker is wrapped"
    );
    let per = h.calls(60, |a, k| a == "a5:1" && k % 2 == 0);
    assert!(per.values().all(|&n| n >= 10), "{per:?}");
    assert!(h.ejected().is_empty(), "nothing before the interval ends");
    h.advance(INTERVAL);

    assert_eq!(h.ejected(), ["a5:1"]);
    let saw = h.child_saw("a5:1");
    assert_eq!(saw.len(), 1, "{saw:?}");
    assert_eq!(saw[0].0, S::TransientFailure);
    assert!(
        saw[0].1.as_deref().unwrap_or("").contains("ejected"),
        "{saw:?}"
    );
    assert_eq!(
        h.wakes.last(),
        Some(&(t0 + 2 * INTERVAL)),
        "the next sweep is scheduled"
    );

    let per = h.calls(200, |_, _| false);
    assert_eq!(
        per.get("a5:1"),
        None,
        "no pick goes to the ejected address: {per:?}"
    );
    assert_eq!(per.values().sum::<usize>(), 200);
}

#[test]
fn results_are_counted_and_the_childs_own_callback_still_runs() {
    let mut h = Harness::start(success_rate(json!({})), 6);
    h.calls(60, |_, _| false);
    assert_eq!(h.seen.completions.load(Ordering::SeqCst), 60);
    // Without enough volume nothing is ejected, however bad the results.
    h.advance(INTERVAL);
    h.calls(30, |a, _| a == "a0:1");
    h.advance(INTERVAL);
    assert!(
        h.ejected().is_empty(),
        "5 calls each is below the volume of 10"
    );
    assert_eq!(h.seen.completions.load(Ordering::SeqCst), 90);
}

#[test]
fn an_ejected_address_returns_after_the_base_ejection_time() {
    let mut h = Harness::start(success_rate(json!({})), 6);
    let bad = half_failing("a5:1");
    h.intervals(1, bad);
    assert_eq!(h.ejected(), ["a5:1"]);
    h.child_saw("a5:1");
    // 30 s of ejection: still out at +10 s and +20 s, back at +30 s.
    h.intervals(2, |h| {
        h.calls(50, |_, _| false);
    });
    assert_eq!(h.ejected(), ["a5:1"]);
    h.advance(INTERVAL);
    assert!(h.ejected().is_empty());
    assert_eq!(
        h.child_saw("a5:1"),
        [(S::Ready, None)],
        "the child is given the subchannel's real state back"
    );
    let per = h.calls(60, |_, _| false);
    assert_eq!(per.get("a5:1"), Some(&10), "{per:?}");
}

#[test]
fn states_reported_while_ejected_reach_the_child_at_un_ejection() {
    let mut h = Harness::start(success_rate(json!({})), 6);
    let bad = half_failing("a5:1");
    h.intervals(1, bad);
    h.child_saw("a5:1");
    h.report("a5:1", S::Idle);
    h.report("a5:1", S::Connecting);
    assert!(h.child_saw("a5:1").is_empty(), "withheld while ejected");
    h.advance(3 * INTERVAL);
    assert_eq!(h.child_saw("a5:1"), [(S::Connecting, None)]);
    h.report("a5:1", S::Ready);
    assert_eq!(h.child_saw("a5:1"), [(S::Ready, None)]);
}

#[test]
fn ejection_time_grows_with_each_ejection_and_decays_in_service() {
    let mut h = Harness::start(success_rate(json!({})), 6);
    let t0 = h.clock.now();
    let bad = half_failing("a5:1");
    h.intervals(1, bad); // t0+10: ejected, multiplier 1 (30 s)
    assert_eq!(h.ejected(), ["a5:1"]);
    h.intervals(3, |_| {}); // t0+40: back
    assert!(h.ejected().is_empty());

    let bad = half_failing("a5:1");
    h.intervals(1, bad); // t0+50: ejected again, multiplier 2 (60 s)
    assert_eq!(h.ejected(), ["a5:1"]);
    h.intervals(5, |_| {}); // t0+100: still out
    assert_eq!(h.clock.now(), t0 + Duration::from_secs(100));
    assert_eq!(h.ejected(), ["a5:1"], "the second ejection lasts 60 s");
    h.advance(INTERVAL); // t0+110: back
    assert!(h.ejected().is_empty());

    // Two intervals in service bring the multiplier from 2 to 0, so the next
    // ejection lasts the base time again.
    h.intervals(2, |h| {
        h.calls(60, |_, _| false);
    }); // t0+130
    let bad = half_failing("a5:1");
    h.intervals(1, bad); // t0+140: ejected, multiplier 1
    assert_eq!(h.ejected(), ["a5:1"]);
    h.intervals(2, |_| {}); // t0+160
    assert_eq!(h.ejected(), ["a5:1"]);
    h.advance(INTERVAL); // t0+170
    assert!(h.ejected().is_empty(), "30 s after the third ejection");
}

#[test]
fn the_ejection_time_is_capped_by_max_ejection_time() {
    let config = json!({
        "interval": "10s", "baseEjectionTime": "30s", "maxEjectionTime": "40s",
        "failurePercentageEjection": {"threshold": 50, "enforcementPercentage": 100,
                                      "minimumHosts": 5, "requestVolume": 10},
        "childPolicy": [{ RECORDING: {} }],
    });
    let mut h = Harness::start(config, 5);
    // Eject a0 twice in a row (it gets no calls while out, so it is un-ejected at
    // 30 s and then fails again at once).
    let fail_a0 = |h: &mut Harness| {
        h.calls(10 * h.addresses.len(), |a, _| a == "a0:1");
    };
    h.intervals(1, fail_a0);
    h.intervals(3, |_| {});
    assert!(h.ejected().is_empty());
    h.intervals(1, fail_a0); // multiplier 2: 60 s, capped at 40 s
    assert_eq!(h.ejected(), ["a0:1"]);
    h.intervals(3, |_| {});
    assert_eq!(h.ejected(), ["a0:1"]);
    h.advance(INTERVAL);
    assert!(h.ejected().is_empty(), "out for 40 s, not 60 s");
}

#[test]
fn failure_percentage_ejects_above_the_threshold_only() {
    let mut h = Harness::start(failure_percentage(json!({})), 6);
    // a4 fails exactly half (the threshold), a5 fails 60%.
    h.intervals(1, |h| {
        h.calls(60, |a, k| {
            (a == "a4:1" && k % 2 == 0) || (a == "a5:1" && k % 5 < 3)
        });
    });
    assert_eq!(h.ejected(), ["a5:1"]);
    assert_eq!(h.child_saw("a5:1")[0].0, S::TransientFailure);
}

#[test]
fn success_rate_needs_minimum_hosts_with_enough_volume() {
    let mut h = Harness::start(success_rate(json!({"minimumHosts": 7})), 6);
    h.intervals(3, half_failing("a5:1"));
    assert!(h.ejected().is_empty(), "6 hosts with volume, 7 needed");
}

#[test]
fn max_ejection_percent_caps_ejections() {
    // Three of ten addresses fail every call; at most 20% may be out.
    let config = json!({
        "interval": "10s", "maxEjectionPercent": 20,
        "failurePercentageEjection": {"threshold": 50, "enforcementPercentage": 100,
                                      "minimumHosts": 5, "requestVolume": 10},
        "childPolicy": [{ RECORDING: {} }],
    });
    let mut h = Harness::start(config, 10);
    let bad = ["a0:1", "a1:1", "a2:1"];
    h.intervals(1, |h| {
        h.calls(100, |a, _| bad.contains(&a));
    });
    assert_eq!(h.ejected().len(), 2, "{:?}", h.ejected());
    h.intervals(1, |h| {
        h.calls(80, |a, _| bad.contains(&a));
    });
    assert_eq!(h.ejected().len(), 2, "still capped: {:?}", h.ejected());
}

#[test]
fn one_address_may_always_be_ejected() {
    // The default 10% of 6 addresses is less than one; one is ejected anyway.
    let mut h = Harness::start(failure_percentage(json!({})), 6);
    h.intervals(1, |h| {
        h.calls(60, |a, _| a == "a0:1" || a == "a1:1");
    });
    assert_eq!(h.ejected().len(), 1);
}

#[test]
fn enforcement_percentage_zero_never_ejects() {
    let mut h = Harness::start(failure_percentage(json!({"enforcementPercentage": 0})), 6);
    h.intervals(5, |h| {
        h.calls(60, |a, _| a == "a0:1");
    });
    assert!(h.ejected().is_empty());
    let mut h = Harness::start(success_rate(json!({"enforcementPercentage": 0})), 6);
    h.intervals(5, half_failing("a5:1"));
    assert!(h.ejected().is_empty());
    assert!(
        h.seen
            .take()
            .iter()
            .all(|(_, s, _)| *s == S::Ready || *s == S::Connecting)
    );
}

#[test]
fn enforcement_percentage_is_a_probability_from_the_injected_random_source() {
    // With 50%, over many sweeps some detections eject and some do not; the seeded
    // random source makes the run repeatable.
    let run = || {
        let mut h = Harness::start(failure_percentage(json!({"enforcementPercentage": 50})), 6);
        let mut ejected_at = Vec::new();
        for i in 0..20 {
            h.intervals(1, |h| {
                h.calls(60, |a, _| a == "a0:1");
            });
            if !h.ejected().is_empty() {
                ejected_at.push(i);
                h.intervals(40, |_| {}); // long enough to come back at any multiplier
            }
        }
        ejected_at
    };
    let first = run();
    assert!(!first.is_empty() && first.len() < 20, "{first:?}");
    assert_eq!(first, run(), "same seed, same draws");
}

// ---------------------------------------------------------------------------------
// Config changes, address changes, pass-through.

#[test]
fn without_an_algorithm_the_policy_is_a_pass_through() {
    let mut h = Harness::start(config_json(json!({})), 3);
    assert!(h.wakes.is_empty(), "no interval timer");
    let picker = h.picker();
    let md = Metadata::new();
    let PickResult::Pick(pick) = picker.pick(&PickInfo::new("/m", &md)) else {
        panic!("no pick");
    };
    let done = pick.on_complete.expect("the child's callback");
    done(&CallCompletion::new(
        &Status::unavailable("x"),
        Duration::ZERO,
    ));
    assert_eq!(h.seen.completions.load(Ordering::SeqCst), 1);
    let child_picker = h.seen.picker.lock().clone().expect("the child published");
    assert!(
        Arc::ptr_eq(&picker, &child_picker),
        "the child's picker is published as it is, with nothing counting"
    );
    h.advance(Duration::from_secs(100));
    assert!(h.ejected().is_empty());
}

#[test]
fn switching_to_pass_through_un_ejects_and_stops_the_timer() {
    let mut h = Harness::start(success_rate(json!({})), 6);
    h.intervals(1, half_failing("a5:1"));
    assert_eq!(h.ejected(), ["a5:1"]);
    h.child_saw("a5:1");
    h.set_config(config_json(json!({})));
    h.wakes.clear();
    h.send_update();
    assert!(h.ejected().is_empty());
    assert_eq!(h.child_saw("a5:1"), [(S::Ready, None)]);
    assert!(h.wakes.is_empty(), "no sweep is scheduled");
    let per = h.calls(60, |_, _| false);
    assert_eq!(per.get("a5:1"), Some(&10));

    // Back to success rate: the timer restarts from now with fresh counts.
    h.set_config(success_rate(json!({})));
    let now = h.clock.advance(Duration::from_secs(3));
    h.send_update();
    assert_eq!(h.wakes, [now + INTERVAL]);
}

#[test]
fn a_new_interval_reschedules_from_the_interval_start() {
    let mut h = Harness::start(success_rate(json!({})), 6);
    let t0 = h.clock.now();
    assert_eq!(h.wakes, [t0 + INTERVAL]);
    h.wakes.clear();
    let addresses = h.addresses.clone();

    h.clock.advance(Duration::from_secs(3));
    h.set_config(config_json(
        json!({"interval": "5s", "successRateEjection": {}}),
    ));
    h.update_addresses(&addresses);
    assert_eq!(h.wakes, [t0 + Duration::from_secs(5)]);
    h.wakes.clear();

    h.set_config(config_json(
        json!({"interval": "2s", "successRateEjection": {}}),
    ));
    h.update_addresses(&addresses);
    assert_eq!(h.wakes, [t0 + Duration::from_secs(3)], "overdue: sweep now");
    h.wakes.clear();

    h.update_addresses(&addresses);
    assert!(h.wakes.is_empty(), "the same config keeps its schedule");

    // Work before the sweep is due does not sweep.
    h.set_config(success_rate(json!({})));
    h.update_addresses(&addresses);
    h.wakes.clear();
    h.advance(Duration::from_secs(1));
    assert!(h.wakes.is_empty());
}

#[test]
fn addresses_that_leave_lose_their_state_and_return_fresh() {
    let mut h = Harness::start(success_rate(json!({})), 6);
    h.intervals(1, half_failing("a5:1"));
    assert_eq!(h.ejected(), ["a5:1"]);
    let five: Vec<String> = (0..5).map(|i| format!("a{i}:1")).collect();
    h.update_addresses(&five);
    assert!(h.ejected().is_empty(), "a5 left with its ejection");
    let six: Vec<String> = (0..6).map(|i| format!("a{i}:1")).collect();
    h.update_addresses(&six);
    assert!(h.ejected().is_empty(), "a5 is back, not ejected");
    let per = h.calls(60, |_, _| false);
    assert_eq!(per.get("a5:1"), Some(&10), "{per:?}");
    // Its counters start fresh: one clean interval does not eject it.
    h.intervals(1, |h| {
        h.calls(60, |_, _| false);
    });
    assert!(h.ejected().is_empty());
}

#[test]
fn a_subchannel_made_for_an_ejected_address_starts_ejected() {
    let mut h = Harness::start(success_rate(json!({})), 6);
    h.intervals(1, half_failing("a5:1"));
    assert_eq!(h.ejected(), ["a5:1"]);
    // A new child policy (plain round_robin instead of the recording one) is
    // switched to gracefully and builds new subchannels for every address.
    h.set_config(config_json(json!({
        "successRateEjection": {"minimumHosts": 5, "requestVolume": 10},
        "childPolicy": [{"round_robin": {}}],
    })));
    let before = h.ctrl.created_subchannels().len();
    let now = h.clock.now();
    h.send_update();
    let fresh: Vec<Subchannel> = h.ctrl.created_subchannels()[before..].to_vec();
    assert_eq!(fresh.len(), 6);
    for sc in &fresh {
        h.ctrl.update_subchannel(&mut h.policy, sc, S::Ready, now);
    }
    h.drain();
    let per = h.calls(50, |_, _| false);
    assert!(
        !per.contains_key("a5:1"),
        "the new child never picks a5: {per:?}"
    );
    assert_eq!(per.len(), 5);
}

#[test]
fn close_shuts_every_subchannel_down() {
    let mut h = Harness::start(success_rate(json!({})), 3);
    h.policy.close();
    assert!(
        h.ctrl
            .created_subchannels()
            .iter()
            .all(Subchannel::is_shut_down)
    );
    h.advance(INTERVAL);
    assert!(h.state.is_some());
}

// ---------------------------------------------------------------------------------
// A channel over the in-memory transport.

#[test]
fn a_channel_routes_around_a_backend_failing_half_its_calls() {
    let clock = ManualClock::new();
    let transport = InMemoryTransport::with_clock(clock.shared());
    for a in ["a:1", "b:1"] {
        transport.serve_address(a);
    }
    let n = Arc::new(AtomicUsize::new(0));
    transport.add_server("c:1", move |_: &CallRequest| {
        if n.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
            Err(Status::unavailable("c:1 is flaky"))
        } else {
            Ok(CallResponse {
                message: b"c:1".to_vec(),
                ..Default::default()
            })
        }
    });
    let resolver = ManualResolver::default();
    let channel = lb_core::channel::Channel::builder("test:///svc")
        .transport(Arc::new(transport.clone()))
        .clock(clock.shared())
        .random(SharedRandom::new(SplitMix64::seeded(7)))
        .resolver_registry(resolver.registry())
        .lb_policy_registry(registry())
        .default_service_config(
            r#"{"loadBalancingConfig": [{"outlier_detection_experimental": {
                "interval": "10s",
                "failurePercentageEjection": {"threshold": 40, "enforcementPercentage": 100,
                                              "minimumHosts": 3, "requestVolume": 10},
                "childPolicy": [{"round_robin": {}}]}}]}"#,
        )
        .build()
        .unwrap();
    resolver.push_addresses(&["a:1", "b:1", "c:1"]);
    let call = |channel: &lb_core::channel::Channel| {
        channel
            .unary("/test.Echo/Who", b"hi".to_vec(), CallOptions::default())
            .map(|r| String::from_utf8(r.message).unwrap())
    };
    let _ = call(&channel);
    assert!(channel.settle());

    let mut failures = 0;
    for _ in 0..2 {
        for _ in 0..60 {
            if let Err(status) = call(&channel) {
                assert_eq!(status.code(), Code::Unavailable);
                failures += 1;
            }
        }
        clock.advance(INTERVAL);
        assert!(channel.settle());
    }
    assert!(failures > 0);
    let before = transport.call_count("c:1");
    let mut ok = 0;
    for _ in 0..100 {
        if call(&channel).is_ok() {
            ok += 1;
        }
    }
    let to_c = transport.call_count("c:1") - before;
    assert!(to_c < 5, "c:1 got {to_c} of 100 calls");
    assert_eq!(ok, 100, "every call after the ejection succeeds");
}

#[test]
fn describe_shows_the_config_the_ejection_and_the_childs_subchannels() {
    let mut h = Harness::start(success_rate(json!({})), 6);
    let per = h.calls(60, |a, k| a == "a5:1" && k % 2 == 0);
    assert!(per.values().all(|&n| n == 10), "{per:?}");
    h.advance(INTERVAL);
    assert_eq!(h.ejected(), ["a5:1"]);

    let mut view = PolicyView::child("", "outlier_detection_experimental");
    h.policy.describe(&mut view);
    assert!(
        view.config
            .as_deref()
            .unwrap_or("")
            .contains("success_rate_ejection: Some"),
        "{view:#?}"
    );
    assert_eq!(view.get_detail("ejected"), Some("1"));
    let table = &view.tables[0];
    assert_eq!(table.title, "addresses");
    assert_eq!(table.rows.len(), 6);
    let row = |address: &str| {
        table
            .rows
            .iter()
            .find(|r| r[0] == address)
            .unwrap_or_else(|| panic!("{address} in {table:#?}"))
            .clone()
    };
    assert_eq!(row("a5:1")[1..], ["true", "1", "5", "5"]);
    assert_eq!(row("a0:1")[1..], ["false", "0", "10", "0"]);

    let child = &view.children[0];
    assert_eq!(
        (child.name.as_str(), child.policy.as_str()),
        ("child", RECORDING)
    );
    assert_eq!(child.subchannels.len(), 6);
    for sc in &child.subchannels {
        let ejected = sc
            .details
            .iter()
            .any(|(l, v)| l == "ejected" && v == "true");
        assert_eq!(ejected, sc.address == "a5:1", "{sc:?}");
        let want = if ejected {
            S::TransientFailure
        } else {
            S::Ready
        };
        assert_eq!(sc.state, want, "{sc:?}");
    }
}
