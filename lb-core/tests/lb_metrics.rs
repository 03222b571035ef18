//! gRFC A78's policy metrics on the manual clock and the fake controller:
//! `grpc.lb.pick_first.*` as the policy's subchannels connect, fail and drop, and
//! `grpc.lb.wrr.*` at each scheduler update through blackout, use and expiry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lb_core::metrics::{InMemoryRecorder, Metrics};
use lb_core::orca::OrcaLoadReport;
use lb_core::policies::pick_first::PickFirstBuilder;
use lb_core::policies::weighted_round_robin::WeightedRoundRobinBuilder;
use lb_core::{
    CallCompletion, ChannelController, ConnectivityState as S, LbPolicy, LbPolicyBuilder,
    LbPolicyRegistry, Metadata, PickInfo, PickResult, ResolverUpdate, Status, Subchannel,
    endpoints,
};
use lb_testkit::{Event, FakeController, ManualClock};

const TARGET: &str = "dns:///metrics.test";

fn options(ctrl: &FakeController, recorder: &Arc<InMemoryRecorder>) -> lb_core::LbPolicyOptions {
    let mut options = ctrl.policy_options();
    options.metrics = Metrics::new(recorder.clone(), TARGET);
    options
}

#[test]
fn pick_first_counts_attempts_and_disconnections_of_its_subchannels() {
    let recorder = Arc::new(InMemoryRecorder::new());
    let clock = ManualClock::new();
    let mut ctrl = FakeController::new();
    let mut policy = PickFirstBuilder.build(options(&ctrl, &recorder));
    let update = ResolverUpdate::from_endpoints(endpoints(["a:1", "b:1"]));
    policy
        .resolver_update(update, None, &mut ctrl, clock.now())
        .unwrap();
    let a = ctrl.verify_new_subchannels(1).remove(0);
    let now = clock.now();
    ctrl.update_subchannel(&mut *policy, &a, S::Connecting, now);
    ctrl.update_subchannel(&mut *policy, &a, S::TransientFailure, now);
    let b = ctrl.verify_new_subchannels(1).remove(0);
    ctrl.update_subchannel(&mut *policy, &b, S::Connecting, now);
    ctrl.update_subchannel(&mut *policy, &b, S::Ready, now);
    let labels = [("grpc.target", TARGET)];
    let count = |name: &str| recorder.counter(name, &labels);
    assert_eq!(count("grpc.lb.pick_first.connection_attempts_failed"), 1);
    assert_eq!(count("grpc.lb.pick_first.connection_attempts_succeeded"), 1);
    assert_eq!(count("grpc.lb.pick_first.disconnections"), 0);
    // The selected connection drops: a disconnection; its reconnection succeeds.
    ctrl.update_subchannel(&mut *policy, &b, S::Idle, now);
    assert_eq!(count("grpc.lb.pick_first.disconnections"), 1);
    policy.exit_idle(&mut ctrl, now);
    ctrl.update_subchannel(&mut *policy, &b, S::Connecting, now);
    ctrl.update_subchannel(&mut *policy, &b, S::Ready, now);
    assert_eq!(count("grpc.lb.pick_first.connection_attempts_succeeded"), 2);
    assert_eq!(count("grpc.lb.pick_first.connection_attempts_failed"), 1);
    // A subchannel that was never selected going IDLE is no disconnection.
    ctrl.update_subchannel(&mut *policy, &a, S::Idle, now);
    assert_eq!(count("grpc.lb.pick_first.disconnections"), 1);
    policy.close();
}

/// A `weighted_round_robin` policy over three READY endpoints that report per
/// call; scheduler updates every second, 2 s of blackout, weights expire after 5 s.
struct Wrr {
    clock: ManualClock,
    ctrl: FakeController,
    policy: Box<dyn LbPolicy>,
    scs: Vec<Subchannel>,
    recorder: Arc<InMemoryRecorder>,
}

const ADDRS: [&str; 3] = ["a:1", "b:1", "c:1"];

impl Wrr {
    fn new() -> Self {
        let recorder = Arc::new(InMemoryRecorder::new());
        let mut ctrl = FakeController::new();
        let mut policy = WeightedRoundRobinBuilder.build(options(&ctrl, &recorder));
        let config = WeightedRoundRobinBuilder
            .parse_config(
                &serde_json::json!({
                    "blackoutPeriod": "2s",
                    "weightUpdatePeriod": "1s",
                    "weightExpirationPeriod": "5s",
                }),
                &LbPolicyRegistry::new(),
            )
            .unwrap();
        let clock = ManualClock::new();
        let update = ResolverUpdate::from_endpoints(endpoints(ADDRS));
        policy
            .resolver_update(update, Some(&config), &mut ctrl, clock.now())
            .unwrap();
        let scs = ctrl.verify_new_subchannels(3);
        for sc in &scs {
            ctrl.update_subchannel(&mut *policy, sc, S::Connecting, clock.now());
            ctrl.update_subchannel(&mut *policy, sc, S::Ready, clock.now());
        }
        Self {
            clock,
            ctrl,
            policy,
            scs,
            recorder,
        }
    }

    /// `n` calls through the latest picker, each backend reporting 10 qps at
    /// utilization 0.2, 0.4 and 0.8: weights 50, 25 and 12.5.
    fn calls(&mut self, n: usize) {
        let mut picker = None;
        for event in self.ctrl.take_events() {
            match event {
                Event::UpdatePicker(state) => picker = Some(state.picker),
                Event::WakeAt(at) => ChannelController::wake_at(&mut self.ctrl, at),
                _ => {}
            }
        }
        let picker = picker.unwrap_or_else(|| self.ctrl.latest_state().picker);
        let utilization: HashMap<&str, f64> = ADDRS.into_iter().zip([0.2, 0.4, 0.8]).collect();
        let md = Metadata::new();
        let info = PickInfo::new("/s/m", &md);
        for _ in 0..n {
            let PickResult::Pick(pick) = picker.pick(&info) else {
                panic!("not a pick");
            };
            let report = OrcaLoadReport {
                rps_fractional: 10.0,
                application_utilization: utilization[pick.subchannel.address().address.as_str()],
                ..Default::default()
            };
            let mut trailers = Metadata::new();
            report.write_trailer(&mut trailers);
            if let Some(done) = pick.on_complete {
                let status = Status::ok().with_trailers(trailers);
                done(&CallCompletion::new(&status, Duration::ZERO));
            }
        }
    }

    /// One scheduler update, one second later.
    fn update(&mut self) {
        let at = self.ctrl.take_earliest_wake().expect("a scheduled update");
        let now = self.clock.advance_to(at);
        self.policy.work(&mut self.ctrl, now);
        assert_eq!(self.scs.len(), 3);
    }

    /// (not yet usable, stale, fallbacks, weights) recorded since the last look.
    fn take(&self) -> (u64, u64, u64, Vec<f64>) {
        let labels = [("grpc.target", TARGET), ("grpc.lb.locality", "")];
        let r = &self.recorder;
        let got = (
            r.counter("grpc.lb.wrr.endpoint_weight_not_yet_usable", &labels),
            r.counter("grpc.lb.wrr.endpoint_weight_stale", &labels),
            r.counter("grpc.lb.wrr.rr_fallback", &labels),
            r.histogram_values("grpc.lb.wrr.endpoint_weights", &labels),
        );
        r.clear();
        got
    }
}

#[test]
fn wrr_metrics_follow_each_endpoint_through_blackout_use_and_expiry() {
    let mut w = Wrr::new();
    w.take();
    // No report yet: every endpoint is not yet usable, the picker is plain RR.
    w.update();
    assert_eq!(w.take(), (3, 0, 1, vec![0.0; 3]));
    // Reports arrive; the next update stamps them and starts the blackout.
    w.calls(30);
    w.update();
    assert_eq!(w.take(), (3, 0, 1, vec![0.0; 3]));
    w.update();
    assert_eq!(w.take(), (3, 0, 1, vec![0.0; 3]), "1 s into a 2 s blackout");
    // Blackout over: real weights, no fallback.
    w.update();
    assert_eq!(w.take(), (0, 0, 0, vec![50.0, 25.0, 12.5]));
    w.update();
    w.update();
    assert_eq!(w.take().2, 0, "4 s after the last report: still fresh");
    // 5 s after the reports were stamped, with none since: stale, back to RR.
    w.update();
    assert_eq!(w.take(), (0, 3, 1, vec![0.0; 3]));
    // It stays stale at every update until a report comes (as in grpc-go)...
    w.update();
    assert_eq!(w.take(), (0, 3, 1, vec![0.0; 3]));
    // ...and a fresh report starts a new blackout.
    w.calls(30);
    w.update();
    assert_eq!(w.take(), (3, 0, 1, vec![0.0; 3]));
    w.policy.close();
}

#[test]
fn without_a_recorder_nothing_is_recorded_and_policies_still_work() {
    // The default options carry a no-op recorder.
    let mut ctrl = FakeController::new();
    let mut policy = PickFirstBuilder.build(ctrl.policy_options());
    assert!(!ctrl.policy_options().metrics.is_enabled());
    let update = ResolverUpdate::from_endpoints(endpoints(["a:1"]));
    let clock = ManualClock::new();
    policy
        .resolver_update(update, None, &mut ctrl, clock.now())
        .unwrap();
    let a = ctrl.verify_new_subchannels(1).remove(0);
    ctrl.update_subchannel(&mut *policy, &a, S::Connecting, clock.now());
    ctrl.update_subchannel(&mut *policy, &a, S::Ready, clock.now());
    assert_eq!(ctrl.latest_state().connectivity_state, S::Ready);
    policy.close();
}
