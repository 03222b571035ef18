//! Scenario tests for `weighted_round_robin` (gRFC A58) on the manual clock and the fake
//! controller, after grpc-go's weightedroundrobin tests: shares follow reported
//! weights, blackout, expiry, updates, out-of-band versus per-call reports, fallback to
//! plain round robin and the error penalty.

use lb_core::CallCompletion;
use std::collections::HashMap;
use std::time::Duration;

use lb_core::orca::OrcaLoadReport;
use lb_core::policies::weighted_round_robin::{
    WeightedRoundRobinBuilder, WeightedRoundRobinConfig,
};
use lb_core::{
    ChannelController, ConnectivityState as S, LbPolicy, LbPolicyBuilder, LbPolicyRegistry,
    LbState, Metadata, PickInfo, PickResult, Picker, ResolverUpdate, Status, Subchannel, endpoints,
};
use lb_testkit::picks::verify_round_robin;
use lb_testkit::{Event, FakeController, ManualClock};

const ADDRS: [&str; 3] = ["a:1", "b:1", "c:1"];
const PERIOD: Duration = Duration::from_secs(1);

struct Fixture {
    clock: ManualClock,
    ctrl: FakeController,
    policy: Box<dyn LbPolicy>,
    config: lb_core::LbConfig,
    scs: Vec<Subchannel>,
    state: Option<LbState>,
}

/// A report of `qps` queries per second at `utilization` (application), `eps` errors.
fn load(qps: f64, utilization: f64, eps: f64) -> OrcaLoadReport {
    OrcaLoadReport {
        rps_fractional: qps,
        application_utilization: utilization,
        eps,
        ..Default::default()
    }
}

impl Fixture {
    /// A policy with `config` over `addrs`, every subchannel READY.
    fn ready(config: serde_json::Value, addrs: &[&str]) -> Self {
        let ctrl = FakeController::new();
        let policy = WeightedRoundRobinBuilder.build(ctrl.policy_options());
        let config = WeightedRoundRobinBuilder
            .parse_config(&config, &LbPolicyRegistry::new())
            .unwrap();
        let mut f = Self {
            clock: ManualClock::new(),
            ctrl,
            policy,
            config,
            scs: Vec::new(),
            state: None,
        };
        f.resolve(addrs);
        f.scs = f.ctrl.verify_new_subchannels(addrs.len());
        for sc in f.scs.clone() {
            f.set(&sc, S::Connecting);
            f.set(&sc, S::Ready);
        }
        f
    }

    fn resolve(&mut self, addrs: &[&str]) {
        let update = ResolverUpdate::from_endpoints(endpoints(addrs.iter().copied()));
        self.policy
            .resolver_update(update, Some(&self.config), &mut self.ctrl, self.clock.now())
            .unwrap();
    }

    fn set(&mut self, sc: &Subchannel, state: S) {
        let now = self.clock.now();
        self.ctrl
            .update_subchannel(&mut *self.policy, sc, state, now);
    }

    /// The latest published picker (the policy publishes only when it changes).
    fn picker(&mut self) -> std::sync::Arc<dyn Picker> {
        for event in self.ctrl.take_events() {
            match event {
                Event::UpdatePicker(state) => self.state = Some(state),
                Event::WakeAt(at) => ChannelController::wake_at(&mut self.ctrl, at),
                _ => {}
            }
        }
        let state = self.state.clone().expect("a published picker");
        assert_eq!(state.connectivity_state, S::Ready);
        state.picker
    }

    /// Runs `calls` calls through the current picker; each call's server answers with
    /// `reports[address]` in its trailer (per-call reporting).
    fn calls(&mut self, calls: usize, reports: &HashMap<&str, OrcaLoadReport>) {
        let picker = self.picker();
        let md = Metadata::new();
        let info = PickInfo::new("/s/m", &md);
        for _ in 0..calls {
            let PickResult::Pick(pick) = picker.pick(&info) else {
                panic!("not a pick");
            };
            let mut trailers = Metadata::new();
            if let Some(r) = reports.get(pick.subchannel.address().address.as_str()) {
                r.write_trailer(&mut trailers);
            }
            if let Some(done) = pick.on_complete {
                done(&CallCompletion::new(
                    &Status::ok().with_trailers(trailers),
                    Duration::ZERO,
                ));
            }
        }
    }

    /// Sends each address's report out of band, as the channel's serializer would.
    fn oob(&mut self, reports: &HashMap<&str, OrcaLoadReport>) {
        for sc in &self.scs {
            let req = self
                .ctrl
                .oob_request(sc.id())
                .unwrap_or_else(|| panic!("no out-of-band request for {sc:?}"));
            (req.listener)(&reports[sc.address().address.as_str()]);
        }
    }

    /// Advances the clock by `by` in weight-update steps, running due wake-ups.
    fn advance(&mut self, by: Duration) {
        let end = self.clock.now() + by;
        for _ in 0..10_000 {
            let Some(at) = self.ctrl.take_earliest_wake() else {
                break;
            };
            if at > end {
                ChannelController::wake_at(&mut self.ctrl, at);
                break;
            }
            let now = self.clock.advance_to(at.max(self.clock.now()));
            self.policy.work(&mut self.ctrl, now);
        }
        self.clock.advance_to(end);
    }

    /// The share of `n` picks each address gets.
    fn shares(&mut self, n: usize) -> HashMap<String, f64> {
        let picker = self.picker();
        let mut counts: HashMap<String, usize> = HashMap::new();
        for addr in lb_testkit::picks::take_addresses(&*picker, n) {
            *counts.entry(addr).or_default() += 1;
        }
        counts
            .into_iter()
            .map(|(a, c)| (a, c as f64 / n as f64))
            .collect()
    }
}

/// Utilization 0.2, 0.4 and 0.8 at the same qps: weights, and shares, 4 : 2 : 1.
fn standard() -> HashMap<&'static str, OrcaLoadReport> {
    reports([
        load(10.0, 0.2, 0.0),
        load(10.0, 0.4, 0.0),
        load(10.0, 0.8, 0.0),
    ])
}

const SEVENTHS: [f64; 3] = [4.0 / 7.0, 2.0 / 7.0, 1.0 / 7.0];

fn reports(loads: [OrcaLoadReport; 3]) -> HashMap<&'static str, OrcaLoadReport> {
    ADDRS.into_iter().zip(loads).collect()
}

/// Asserts the shares are `want` (by address order), within 0.01.
fn assert_shares(got: &HashMap<String, f64>, want: [f64; 3]) {
    for (addr, w) in ADDRS.iter().zip(want) {
        let g = got.get(*addr).copied().unwrap_or(0.0);
        assert!(
            (g - w).abs() < 0.01,
            "{addr}: share {g:.4}, want {w:.4}; all {got:?}"
        );
    }
}

fn fast() -> serde_json::Value {
    serde_json::json!({"blackoutPeriod": "0s", "weightUpdatePeriod": "1s"})
}

#[test]
fn shares_follow_per_call_reports() {
    let mut f = Fixture::ready(fast(), &ADDRS);
    f.calls(30, &standard());
    f.advance(PERIOD);
    assert_shares(&f.shares(70_000), SEVENTHS);
}

#[test]
fn without_reports_it_is_plain_round_robin() {
    let mut f = Fixture::ready(fast(), &ADDRS);
    f.calls(30, &HashMap::new());
    f.advance(PERIOD * 3);
    verify_round_robin(&*f.picker(), &ADDRS);
}

#[test]
fn cpu_utilization_counts_when_application_utilization_is_zero() {
    let mut f = Fixture::ready(fast(), &ADDRS);
    let cpu = |u| OrcaLoadReport {
        rps_fractional: 10.0,
        cpu_utilization: u,
        ..Default::default()
    };
    let mut r = reports([cpu(0.5), cpu(0.5), cpu(0.5)]);
    // The application's own utilization wins over the CPU's.
    r.get_mut("a:1").unwrap().application_utilization = 0.25;
    f.calls(30, &r);
    f.advance(PERIOD);
    assert_shares(&f.shares(40_000), [0.5, 0.25, 0.25]);
}

#[test]
fn blackout_delays_new_weights() {
    let cfg = serde_json::json!({"blackoutPeriod": "5s", "weightUpdatePeriod": "1s"});
    let mut f = Fixture::ready(cfg, &ADDRS);
    let r = standard();
    // The first reports are seen at the first update (t = 1 s: reports carry no time,
    // the update stamps them), so up to t = 5 s calls go in plain round robin.
    for _ in 0..5 {
        f.calls(30, &r);
        f.advance(PERIOD);
        verify_round_robin(&*f.picker(), &ADDRS);
    }
    // Reports keep coming; five seconds after the first was seen, they count.
    f.calls(30, &r);
    f.advance(PERIOD);
    assert_shares(&f.shares(70_000), SEVENTHS);
}

#[test]
fn reconnecting_endpoint_goes_through_blackout_again() {
    let cfg = serde_json::json!({"blackoutPeriod": "3s", "weightUpdatePeriod": "1s"});
    let mut f = Fixture::ready(cfg, &["a:1", "b:1"]);
    let r: HashMap<_, _> = [
        ("a:1", load(10.0, 0.25, 0.0)),
        ("b:1", load(10.0, 0.5, 0.0)),
    ]
    .into();
    for _ in 0..4 {
        f.calls(30, &r);
        f.advance(PERIOD);
    }
    let shares = f.shares(30_000);
    assert!((shares["a:1"] - 2.0 / 3.0).abs() < 0.01, "{shares:?}");
    // b reconnects: until its blackout passes again only a's weight is known, which
    // is fewer than two: plain round robin.
    let b = f.scs[1].clone();
    f.set(&b, S::Idle);
    f.set(&b, S::Connecting);
    f.set(&b, S::Ready);
    f.calls(30, &r);
    f.advance(PERIOD);
    verify_round_robin(&*f.picker(), &["a:1", "b:1"]);
    for _ in 0..3 {
        f.calls(30, &r);
        f.advance(PERIOD);
    }
    let shares = f.shares(30_000);
    assert!((shares["a:1"] - 2.0 / 3.0).abs() < 0.01, "{shares:?}");
}

#[test]
fn weights_expire_back_to_round_robin() {
    let cfg = serde_json::json!({
        "blackoutPeriod": "0s", "weightUpdatePeriod": "1s", "weightExpirationPeriod": "10s"
    });
    let mut f = Fixture::ready(cfg, &ADDRS);
    f.calls(30, &standard());
    f.advance(PERIOD);
    assert_shares(&f.shares(70_000), SEVENTHS);
    // No reports from now on (the calls' trailers are empty).
    f.advance(Duration::from_secs(8));
    assert_shares(&f.shares(70_000), SEVENTHS);
    f.advance(Duration::from_secs(2));
    verify_round_robin(&*f.picker(), &ADDRS);
}

#[test]
fn weights_follow_new_reports_each_update_period() {
    let mut f = Fixture::ready(fast(), &ADDRS);
    f.calls(30, &standard());
    f.advance(PERIOD);
    assert_shares(&f.shares(70_000), SEVENTHS);
    // Loads turn around; the picker changes only at the next update.
    let turned = reports([
        load(10.0, 0.8, 0.0),
        load(10.0, 0.4, 0.0),
        load(10.0, 0.2, 0.0),
    ]);
    f.calls(300, &turned);
    assert_shares(&f.shares(70_000), SEVENTHS);
    f.advance(PERIOD);
    assert_shares(&f.shares(70_000), [1.0 / 7.0, 2.0 / 7.0, 4.0 / 7.0]);
}

#[test]
fn unknown_weights_get_the_mean() {
    let mut f = Fixture::ready(fast(), &ADDRS);
    let mut r = reports([
        load(10.0, 0.25, 0.0),
        load(10.0, 0.5, 0.0),
        load(0.0, 0.0, 0.0),
    ]);
    r.remove("c:1");
    f.calls(30, &r);
    f.advance(PERIOD);
    // Weights 40 and 20; c's unknown weight is their mean, 30.
    assert_shares(&f.shares(90_000), [4.0 / 9.0, 2.0 / 9.0, 3.0 / 9.0]);
}

#[test]
fn one_known_weight_falls_back_to_round_robin() {
    let mut f = Fixture::ready(fast(), &ADDRS);
    let r: HashMap<_, _> = [("a:1", load(10.0, 0.1, 0.0))].into();
    f.calls(30, &r);
    f.advance(PERIOD);
    verify_round_robin(&*f.picker(), &ADDRS);
}

#[test]
fn error_penalty_lowers_weights() {
    // Same qps and utilization; b fails half its calls: 10 / (0.5 + 5/10 × 1.0) = 10
    // against a's 20.
    let mut f = Fixture::ready(fast(), &["a:1", "b:1"]);
    let r: HashMap<_, _> = [("a:1", load(10.0, 0.5, 0.0)), ("b:1", load(10.0, 0.5, 5.0))].into();
    f.calls(30, &r);
    f.advance(PERIOD);
    let shares = f.shares(30_000);
    assert!((shares["a:1"] - 2.0 / 3.0).abs() < 0.01, "{shares:?}");
    // With the penalty off, errors do not count: equal weights, plain round robin.
    let cfg = serde_json::json!({"blackoutPeriod": "0s", "errorUtilizationPenalty": 0});
    let mut f = Fixture::ready(cfg, &["a:1", "b:1"]);
    f.calls(30, &r);
    f.advance(PERIOD);
    verify_round_robin(&*f.picker(), &["a:1", "b:1"]);
}

#[test]
fn out_of_band_reports_replace_per_call_ones() {
    let cfg = serde_json::json!({
        "blackoutPeriod": "0s", "enableOobLoadReport": true, "oobReportingPeriod": "2.5s"
    });
    let mut f = Fixture::ready(cfg, &ADDRS);
    for sc in &f.scs {
        let req = f.ctrl.oob_request(sc.id()).expect("asked for OOB reports");
        assert_eq!(req.period, Duration::from_millis(2500));
    }
    // Per-call trailers are ignored: the picker sets no completion callback.
    let picker = f.picker();
    let md = Metadata::new();
    let info = PickInfo::new("/s/m", &md);
    let PickResult::Pick(pick) = picker.pick(&info) else {
        panic!()
    };
    assert!(pick.on_complete.is_none());
    f.oob(&standard());
    f.advance(PERIOD);
    assert_shares(&f.shares(70_000), SEVENTHS);
}

#[test]
fn per_call_policy_asks_for_no_oob_stream_and_a_config_change_stops_it() {
    let mut f = Fixture::ready(fast(), &ADDRS);
    assert!(f.scs.iter().all(|sc| f.ctrl.oob_request(sc.id()).is_none()));
    f.config = WeightedRoundRobinBuilder
        .parse_config(
            &serde_json::json!({"enableOobLoadReport": true}),
            &LbPolicyRegistry::new(),
        )
        .unwrap();
    f.resolve(&ADDRS);
    assert!(f.scs.iter().all(|sc| f.ctrl.oob_request(sc.id()).is_some()));
    f.config = WeightedRoundRobinBuilder
        .parse_config(&fast(), &LbPolicyRegistry::new())
        .unwrap();
    f.resolve(&ADDRS);
    assert!(f.scs.iter().all(|sc| f.ctrl.oob_request(sc.id()).is_none()));
}

#[test]
fn weight_updates_come_from_wake_ups() {
    let cfg = serde_json::json!({"weightUpdatePeriod": "0.25s"});
    let mut f = Fixture::ready(cfg, &ADDRS);
    let first = f
        .ctrl
        .take_earliest_wake()
        .expect("a wake-up for the first update");
    assert_eq!(first - f.clock.now(), Duration::from_millis(250));
    let now = f.clock.advance_to(first);
    f.policy.work(&mut f.ctrl, now);
    assert_eq!(
        f.ctrl.take_earliest_wake(),
        Some(now + Duration::from_millis(250)),
        "each update asks for the next"
    );
}

#[test]
fn config_errors_name_the_field() {
    for (json, want) in [
        (serde_json::json!([]), "must be an object"),
        (
            serde_json::json!({"blackoutPeriod": 10}),
            "blackoutPeriod: must be a string",
        ),
        (
            serde_json::json!({"weightExpirationPeriod": "3m"}),
            "weightExpirationPeriod",
        ),
        (
            serde_json::json!({"weightUpdatePeriod": "-1s"}),
            "weightUpdatePeriod",
        ),
        (
            serde_json::json!({"oobReportingPeriod": true}),
            "oobReportingPeriod: must be a string",
        ),
        (
            serde_json::json!({"enableOobLoadReport": "yes"}),
            "enableOobLoadReport: must be a boolean",
        ),
        (
            serde_json::json!({"errorUtilizationPenalty": "1"}),
            "errorUtilizationPenalty: must be a number",
        ),
        (
            serde_json::json!({"errorUtilizationPenalty": -0.5}),
            "errorUtilizationPenalty: must be at least 0",
        ),
    ] {
        let err = WeightedRoundRobinConfig::parse(&json)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{json}: {err}");
    }
    assert_eq!(
        WeightedRoundRobinConfig::parse(&serde_json::json!({})).unwrap(),
        WeightedRoundRobinConfig::default()
    );
}

#[test]
fn describe_shows_each_endpoints_weight() {
    let mut f = Fixture::ready(fast(), &ADDRS);
    let describe = |f: &Fixture| {
        let mut view = lb_core::channelz::PolicyView::child("", "weighted_round_robin");
        f.policy.describe(&mut view);
        view
    };
    let view = describe(&f);
    assert!(
        view.get_detail("schedule")
            .unwrap()
            .starts_with("plain round robin"),
        "no weights yet: {view:#?}"
    );
    f.calls(30, &standard());
    f.advance(PERIOD);
    let _ = f.picker();
    let view = describe(&f);
    assert_eq!(view.get_detail("schedule"), Some("weighted"));
    assert_eq!(view.subchannels.len(), 3);
    let weight = |address: &str, label: &str| -> f64 {
        let sc = view
            .subchannels
            .iter()
            .find(|s| s.address == address)
            .unwrap_or_else(|| panic!("{address} in {view:#?}"));
        assert_eq!(sc.state, S::Ready);
        sc.details
            .iter()
            .find(|(l, _)| l == label)
            .unwrap_or_else(|| panic!("{label} of {sc:?}"))
            .1
            .parse()
            .unwrap()
    };
    // qps / utilization: 10 / 0.2, 10 / 0.4, 10 / 0.8.
    assert_eq!(weight("a:1", "weight"), 50.0);
    assert_eq!(weight("b:1", "weight"), 25.0);
    assert_eq!(weight("c:1", "weight"), 12.5);
    assert_eq!(weight("a:1", "scheduled weight"), f64::from(u16::MAX));
    let ratio = weight("a:1", "scheduled weight") / weight("c:1", "scheduled weight");
    assert!((ratio - 4.0).abs() < 0.01, "{ratio}");
}
