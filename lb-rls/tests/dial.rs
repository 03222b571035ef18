//! `rls_dial_target`: a child that resolves its target (IP literals and lists at
//! once, names with the channel's resolvers) and balances over the addresses with its leaf policy.

mod util;

use std::sync::Arc;

use lb_core::{
    ConnectivityState, LbConfig, LbPolicy, LbPolicyBuilder, LbPolicyOptions, LbPolicyRegistry,
    ResolverUpdate, SharedRandom, SplitMix64, endpoints,
};
use lb_rls::dial::{DialTargetBuilder, MIN_RESOLUTION_INTERVAL};
use lb_testkit::{FakeController, ManualClock, picks};
use serde_json::{Value, json};
use util::ChanScheduler;

struct Dial {
    clock: ManualClock,
    ctrl: FakeController,
    policy: Box<dyn LbPolicy>,
    builder: DialTargetBuilder,
    registry: LbPolicyRegistry,
    work: crossbeam_channel::Receiver<()>,
}

impl Dial {
    fn new() -> Self {
        let (scheduler, work) = ChanScheduler::new();
        let registry = LbPolicyRegistry::with_builtins();
        let builder = DialTargetBuilder::new();
        let policy = builder.build(LbPolicyOptions {
            work_scheduler: scheduler,
            authority: "svc".into(),
            random: SharedRandom::new(SplitMix64::seeded(3)),
            registry: Arc::new(registry.clone()),
            channels: None,
            channelz: Default::default(),
            metrics: lb_core::metrics::Metrics::none(),
        });
        Self {
            clock: ManualClock::new(),
            ctrl: FakeController::new(),
            policy,
            builder,
            registry,
            work,
        }
    }

    fn config(&self, json: Value) -> LbConfig {
        self.builder
            .parse_config(&json, &self.registry)
            .expect("valid config")
    }

    fn update(&mut self, json: Value) {
        let config = self.config(json);
        let now = self.clock.now();
        self.policy
            .resolver_update(
                ResolverUpdate::from_endpoints(endpoints(["ignored:1"])),
                Some(&config),
                &mut self.ctrl,
                now,
            )
            .unwrap();
    }

    fn ready_all(&mut self, n: usize) -> Vec<String> {
        let now = self.clock.now();
        let scs = self.ctrl.verify_new_subchannels(n);
        for sc in &scs {
            self.ctrl
                .update_subchannel(&mut *self.policy, sc, ConnectivityState::Ready, now);
        }
        scs.iter().map(|s| s.address().address.clone()).collect()
    }

    /// Waits for the resolver thread's result and runs `work`.
    fn work_after_resolution(&mut self) {
        self.work
            .recv_timeout(util::WAIT)
            .expect("the resolver thread reports");
        let now = self.clock.now();
        self.policy.work(&mut self.ctrl, now);
    }
}

#[test]
fn an_address_list_is_balanced_round_robin_by_default() {
    let mut d = Dial::new();
    d.update(json!({"target": "ipv4:10.0.0.1:80,10.0.0.2:80"}));
    let addresses = d.ready_all(2);
    assert_eq!(addresses, ["10.0.0.1:80", "10.0.0.2:80"]);
    let state = d.ctrl.latest_state();
    assert_eq!(state.connectivity_state, ConnectivityState::Ready);
    picks::verify_round_robin(&*state.picker, &["10.0.0.1:80", "10.0.0.2:80"]);
    assert_eq!(
        d.builder.thread_count(),
        0,
        "no thread for literal addresses"
    );
}

#[test]
fn literal_passthrough_and_unix_targets_need_no_resolution() {
    for (target, want) in [
        ("10.0.0.9:8080", "10.0.0.9:8080"),
        ("[::1]:8080", "[::1]:8080"),
        ("passthrough:///backend-a:1", "backend-a:1"),
        ("unix:///run/backend.sock", "unix:/run/backend.sock"),
    ] {
        let mut d = Dial::new();
        d.update(json!({"target": target, "childPolicy": [{"pick_first": {}}]}));
        assert_eq!(d.ready_all(1), [want], "{target}");
        let state = d.ctrl.latest_state();
        assert_eq!(picks::pick_address(&*state.picker).as_deref(), Some(want));
    }
}

#[test]
fn a_name_is_resolved_on_a_thread_and_re_resolution_is_rate_limited() {
    let mut d = Dial::new();
    d.update(json!({"target": "localhost:8080", "childPolicy": [{"pick_first": {}}]}));
    // Until the name resolves: CONNECTING, calls queue.
    let state = d.ctrl.verify_state();
    assert_eq!(state.connectivity_state, ConnectivityState::Connecting);
    d.work_after_resolution();
    let created = d.ctrl.verify_new_subchannels(1);
    let address = created[0].address().address.clone();
    assert!(
        address == "127.0.0.1:8080" || address == "[::1]:8080",
        "{address}"
    );
    assert_eq!(d.builder.thread_count(), 1);
    let now = d.clock.now();
    d.ctrl
        .update_subchannel(&mut *d.policy, &created[0], ConnectivityState::Ready, now);
    // The connection drops: the leaf asks for re-resolution, which waits out the
    // minimum interval since the first resolution.
    d.ctrl.take_events();
    d.ctrl
        .update_subchannel(&mut *d.policy, &created[0], ConnectivityState::Idle, now);
    let wake = d.ctrl.verify_wake_at();
    assert_eq!(wake, now + MIN_RESOLUTION_INTERVAL);
    d.clock.advance_to(wake);
    d.policy.work(&mut d.ctrl, wake);
    d.work_after_resolution();
    d.policy.close();
    assert_eq!(
        d.builder.thread_count(),
        0,
        "close joins the resolver thread"
    );
}

#[test]
fn a_new_leaf_policy_replaces_the_old_one_and_its_subchannels() {
    let mut d = Dial::new();
    d.update(json!({"target": "ipv4:10.0.0.1:80,10.0.0.2:80"}));
    let old: Vec<_> = d
        .ctrl
        .verify_new_subchannels(2)
        .iter()
        .map(|s| s.id())
        .collect();
    d.update(
        json!({"target": "ipv4:10.0.0.1:80,10.0.0.2:80", "childPolicy": [{"pick_first": {}}]}),
    );
    d.ctrl.verify_shutdowns(&old);
    assert_eq!(d.ready_all(1), ["10.0.0.1:80"]);
    // A new target: new addresses for the same leaf.
    d.update(json!({"target": "10.0.0.3:80", "childPolicy": [{"pick_first": {}}]}));
    assert_eq!(d.ready_all(1), ["10.0.0.3:80"]);
    d.policy.close();
}

#[test]
fn bad_targets_are_refused_at_parse_time_with_the_field_named() {
    let d = Dial::new();
    for (json, want) in [
        (json!({}), "target: is required"),
        (json!({"target": ""}), "target: must be non-empty"),
        (json!({"target": "ipv4:nope:1"}), "not an ipv4 address"),
        (
            json!({"target": "a:1", "childPolicy": [{"nope": {}}]}),
            "childPolicy",
        ),
    ] {
        let err = d
            .builder
            .parse_config(&json, &d.registry)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{json}: {err}");
    }
}

#[test]
fn a_scheme_the_channel_does_not_know_fails_the_policy_not_the_parse() {
    // Another scheme may be registered with the channel, so it is checked when
    // the policy resolves, against the channel's registry (here, the built-ins).
    let mut d = Dial::new();
    d.update(json!({"target": "xds:///cluster"}));
    let state = d.ctrl.verify_state();
    assert_eq!(
        state.connectivity_state,
        ConnectivityState::TransientFailure
    );
    let md = lb_core::Metadata::new();
    let info = lb_core::PickInfo::new(picks::TEST_METHOD, &md);
    let lb_core::PickResult::Fail(err) = state.picker.pick(&info) else {
        panic!("picks fail");
    };
    assert!(
        err.message().contains("no resolver for scheme \"xds\""),
        "{err:?}"
    );
    assert_eq!(d.builder.thread_count(), 0);
    d.policy.close();
}
