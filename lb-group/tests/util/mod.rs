//! Test helpers for `lb-group`: a recording wrapper policy whose lifetime is
//! observable, a group + aggregator harness in the shape of grpc-go's balancergroup
//! tests, and leak checks.
//!
//! These would fit `lb-testkit`; they live here because this crate may not edit it.

#![allow(dead_code, unreachable_pub)]

use lb_core::CallCompletion;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lb_core::config::ConfigError;
use lb_core::policies::{pick_first::PickFirstBuilder, round_robin::RoundRobinBuilder};
use lb_core::{
    ChannelController, ConnectivityState, Endpoint, LbConfig, LbPolicy, LbPolicyBuilder,
    LbPolicyOptions, LbPolicyRegistry, LbState, ParsedLbConfig, PickInfo, PickResult, Picker,
    ResolverUpdate, Subchannel, SubchannelId, SubchannelState, UpdateError, WorkScheduler,
    endpoints,
};
use lb_group::{BalancerGroup, WeightedAggregator, hierarchy};
use lb_testkit::{Event, FakeController, ManualClock};
use parking_lot::Mutex;

/// `round_robin`, recorded.
pub const REC_RR: &str = "rec_rr";
/// `round_robin`, recorded, that re-publishes its last picker whenever it works.
pub const REC_RR_PUBLISHING: &str = "rec_rr_publishing";
/// `round_robin`, recorded, that does not close its inner policy (so it forgets to
/// shut its subchannels down).
pub const REC_RR_FORGETFUL: &str = "rec_rr_forgetful";
/// `round_robin` under another name: a different builder for the same behaviour.
pub const RR_RENAMED: &str = "rr_renamed";
/// `pick_first`, recorded.
pub const REC_PF: &str = "rec_pf";
/// `pick_first` that drops the first endpoint of every update.
pub const DROP_FIRST_PF: &str = "drop_first_pf";

/// What happened to one built test policy.
#[derive(Clone)]
pub struct Instance {
    pub name: &'static str,
    pub calls: Vec<&'static str>,
    pub closes: usize,
    pub calls_after_close: usize,
    pub scheduler: Arc<dyn WorkScheduler>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("name", &self.name)
            .field("calls", &self.calls)
            .field("closes", &self.closes)
            .field("calls_after_close", &self.calls_after_close)
            .finish_non_exhaustive()
    }
}

/// Records every test policy built from builders that share it.
#[derive(Default)]
pub struct Tracker {
    instances: Mutex<Vec<Instance>>,
}

impl Tracker {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn register(&self, name: &'static str, scheduler: Arc<dyn WorkScheduler>) -> usize {
        let mut v = self.instances.lock();
        v.push(Instance {
            name,
            calls: Vec::new(),
            closes: 0,
            calls_after_close: 0,
            scheduler,
        });
        v.len() - 1
    }

    fn record(&self, i: usize, call: &'static str) {
        let mut v = self.instances.lock();
        let inst = &mut v[i];
        if inst.closes > 0 {
            inst.calls_after_close += 1;
        }
        if call == "close" {
            inst.closes += 1;
        }
        inst.calls.push(call);
    }

    pub fn instances(&self) -> Vec<Instance> {
        self.instances.lock().clone()
    }

    pub fn built(&self) -> usize {
        self.instances.lock().len()
    }

    /// Instances not closed yet.
    pub fn alive(&self) -> usize {
        self.instances
            .lock()
            .iter()
            .filter(|i| i.closes == 0)
            .count()
    }

    /// Whether instance `i` was closed.
    pub fn closed(&self, i: usize) -> bool {
        self.instances.lock()[i].closes > 0
    }

    /// How many calls instance `i` got of `call`.
    pub fn count(&self, i: usize, call: &str) -> usize {
        self.instances.lock()[i]
            .calls
            .iter()
            .filter(|c| **c == call)
            .count()
    }

    /// Calls `schedule_work` on the scheduler instance `i` was built with, as its
    /// picker would.
    pub fn schedule_work(&self, i: usize) {
        let sched = self.instances.lock()[i].scheduler.clone();
        sched.schedule_work();
    }

    /// Panics unless every instance was closed exactly once and got no call after.
    pub fn verify_all_closed_once(&self) {
        for (i, inst) in self.instances.lock().iter().enumerate() {
            assert_eq!(
                inst.closes, 1,
                "instance {i} ({}) closes: {inst:?}",
                inst.name
            );
            assert_eq!(
                inst.calls_after_close, 0,
                "instance {i} called after close: {inst:?}"
            );
        }
    }
}

/// What a test policy built [`TestBuilder::seeing`] a `Seen` was told and published.
#[derive(Default)]
pub struct Seen {
    /// Every subchannel state it was given: (address, state, error message).
    pub updates: Mutex<Vec<(String, ConnectivityState, Option<String>)>>,
    /// How many calls its picks completed (every picker it publishes counts them).
    pub completions: AtomicUsize,
    /// The picker it published last.
    pub picker: Mutex<Option<Arc<dyn Picker>>>,
}

impl Seen {
    /// Takes the subchannel states seen so far.
    pub fn take(&self) -> Vec<(String, ConnectivityState, Option<String>)> {
        std::mem::take(&mut *self.updates.lock())
    }
}

/// Gives every pick of the inner picker a completion callback that counts in `Seen`.
struct CompletionCounting {
    inner: Arc<dyn Picker>,
    seen: Arc<Seen>,
}

impl Picker for CompletionCounting {
    fn pick(&self, info: &PickInfo<'_>) -> PickResult<'_> {
        let mut pick = match self.inner.pick(info) {
            PickResult::Pick(pick) => pick,
            other => return other,
        };
        let seen = self.seen.clone();
        pick.on_complete = Some(Box::new(move |_: &CallCompletion<'_>| {
            seen.completions.fetch_add(1, Ordering::SeqCst);
        }));
        PickResult::Pick(pick)
    }
}

/// A builder of test policies: a named wrapper around a real policy.
#[derive(Clone)]
pub struct TestBuilder {
    name: &'static str,
    inner: Arc<dyn LbPolicyBuilder>,
    tracker: Option<Arc<Tracker>>,
    seen: Option<Arc<Seen>>,
    drop_first_endpoint: bool,
    publish_on_work: bool,
    forget_subchannels: bool,
}

impl TestBuilder {
    pub fn new(name: &'static str, inner: impl LbPolicyBuilder) -> Self {
        Self {
            name,
            inner: Arc::new(inner),
            tracker: None,
            seen: None,
            drop_first_endpoint: false,
            publish_on_work: false,
            forget_subchannels: false,
        }
    }
    pub fn tracked(mut self, tracker: &Arc<Tracker>) -> Self {
        self.tracker = Some(tracker.clone());
        self
    }
    /// Records subchannel states, completions and pickers in `seen`.
    pub fn seeing(mut self, seen: &Arc<Seen>) -> Self {
        self.seen = Some(seen.clone());
        self
    }
    pub fn dropping_first_endpoint(mut self) -> Self {
        self.drop_first_endpoint = true;
        self
    }
    pub fn publishing_on_work(mut self) -> Self {
        self.publish_on_work = true;
        self
    }
    pub fn forgetting_subchannels(mut self) -> Self {
        self.forget_subchannels = true;
        self
    }
}

impl LbPolicyBuilder for TestBuilder {
    fn name(&self) -> &'static str {
        self.name
    }

    fn build(&self, options: LbPolicyOptions) -> Box<dyn LbPolicy> {
        let index = self
            .tracker
            .as_ref()
            .map(|t| t.register(self.name, options.work_scheduler.clone()));
        Box::new(TestPolicy {
            inner: Some(self.inner.build(options)),
            builder: self.clone(),
            index,
            last: None,
        })
    }

    fn parse_config(
        &self,
        config: &serde_json::Value,
        registry: &LbPolicyRegistry,
    ) -> Result<LbConfig, ConfigError> {
        self.inner.parse_config(config, registry)
    }
}

struct TestPolicy {
    inner: Option<Box<dyn LbPolicy>>,
    builder: TestBuilder,
    index: Option<usize>,
    last: Option<LbState>,
}

impl TestPolicy {
    fn record(&self, call: &'static str) {
        if let (Some(t), Some(i)) = (&self.builder.tracker, self.index) {
            t.record(i, call);
        }
    }
}

/// Remembers the last state the inner policy published (and, with a `Seen`, counts
/// the completions of its picks).
struct Spy<'a> {
    inner: &'a mut dyn ChannelController,
    last: &'a mut Option<LbState>,
    seen: Option<&'a Arc<Seen>>,
}

impl ChannelController for Spy<'_> {
    fn new_subchannel(&mut self, address: &lb_core::Address) -> Subchannel {
        self.inner.new_subchannel(address)
    }
    fn update_picker(&mut self, mut state: LbState) {
        if let Some(seen) = self.seen {
            state.picker = Arc::new(CompletionCounting {
                inner: state.picker,
                seen: seen.clone(),
            });
            *seen.picker.lock() = Some(state.picker.clone());
        }
        *self.last = Some(state.clone());
        self.inner.update_picker(state);
    }
    fn request_resolution(&mut self) {
        self.inner.request_resolution();
    }
    fn wake_at(&mut self, deadline: Instant) {
        self.inner.wake_at(deadline);
    }
}

impl LbPolicy for TestPolicy {
    fn resolver_update(
        &mut self,
        mut update: ResolverUpdate,
        config: Option<&LbConfig>,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) -> Result<(), UpdateError> {
        self.record("resolver_update");
        if self.builder.drop_first_endpoint {
            if let Ok(eps) = &mut update.endpoints {
                if !eps.is_empty() {
                    eps.remove(0);
                }
            }
        }
        let Some(inner) = &mut self.inner else {
            return Ok(());
        };
        let mut spy = Spy {
            inner: controller,
            last: &mut self.last,
            seen: self.builder.seen.as_ref(),
        };
        inner.resolver_update(update, config, &mut spy, now)
    }

    fn subchannel_update(
        &mut self,
        subchannel: &Subchannel,
        state: &SubchannelState,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) {
        self.record("subchannel_update");
        if let Some(seen) = &self.builder.seen {
            seen.updates.lock().push((
                subchannel.address().address.clone(),
                state.connectivity_state,
                state.last_error.as_ref().map(|e| e.message().to_owned()),
            ));
        }
        if let Some(inner) = &mut self.inner {
            let mut spy = Spy {
                inner: controller,
                last: &mut self.last,
                seen: self.builder.seen.as_ref(),
            };
            inner.subchannel_update(subchannel, state, &mut spy, now);
        }
    }

    fn work(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        self.record("work");
        if let Some(inner) = &mut self.inner {
            let mut spy = Spy {
                inner: controller,
                last: &mut self.last,
                seen: self.builder.seen.as_ref(),
            };
            inner.work(&mut spy, now);
        }
        if self.builder.publish_on_work {
            if let Some(last) = &self.last {
                controller.update_picker(last.clone());
            }
        }
    }

    fn exit_idle(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        self.record("exit_idle");
        if let Some(inner) = &mut self.inner {
            let mut spy = Spy {
                inner: controller,
                last: &mut self.last,
                seen: self.builder.seen.as_ref(),
            };
            inner.exit_idle(&mut spy, now);
        }
    }

    fn close(&mut self) {
        self.record("close");
        let inner = self.inner.take();
        if let Some(mut inner) = inner {
            if !self.builder.forget_subchannels {
                inner.close();
            }
        }
    }

    fn describe(&self, view: &mut lb_core::channelz::PolicyView) {
        if let Some(inner) = &self.inner {
            inner.describe(view);
        }
    }
}

/// The built-ins, `lb_group`'s policies, and the test policies (recorded by
/// `tracker`).
pub fn registry(tracker: &Arc<Tracker>) -> LbPolicyRegistry {
    let mut reg = LbPolicyRegistry::with_builtins();
    lb_group::register(&mut reg);
    reg.register(TestBuilder::new(REC_RR, RoundRobinBuilder).tracked(tracker));
    reg.register(
        TestBuilder::new(REC_RR_PUBLISHING, RoundRobinBuilder)
            .tracked(tracker)
            .publishing_on_work(),
    );
    reg.register(
        TestBuilder::new(REC_RR_FORGETFUL, RoundRobinBuilder)
            .tracked(tracker)
            .forgetting_subchannels(),
    );
    reg.register(TestBuilder::new(RR_RENAMED, RoundRobinBuilder).tracked(tracker));
    reg.register(TestBuilder::new(REC_PF, PickFirstBuilder).tracked(tracker));
    reg.register(
        TestBuilder::new(DROP_FIRST_PF, PickFirstBuilder)
            .tracked(tracker)
            .dropping_first_endpoint(),
    );
    reg.register(MirrorBuilder);
    reg
}

/// The config of policy `name` with an empty JSON config, chosen from `registry`.
pub fn policy(registry: &LbPolicyRegistry, name: &str) -> ParsedLbConfig {
    registry
        .parse_load_balancing_config(&serde_json::json!([{ (name): {} }]))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A subchannel state with a failure for TRANSIENT_FAILURE.
pub fn sc_state(state: ConnectivityState) -> SubchannelState {
    match state {
        ConnectivityState::TransientFailure => {
            SubchannelState::failure(lb_core::Status::unavailable("connection refused"))
        }
        other => SubchannelState::new(other),
    }
}

/// The `i`-th test address, "i.i.i.i:i" as in grpc-go's tests.
pub fn addr(i: usize) -> String {
    format!("{i}.{i}.{i}.{i}:{i}")
}

/// Endpoints for the given test address indices.
pub fn eps(indices: &[usize]) -> Vec<Endpoint> {
    endpoints(indices.iter().map(|&i| lb_core::Address::new(addr(i))))
}

/// Endpoints for `indices`, each with hierarchy path `path`.
pub fn eps_at(path: &[&str], indices: &[usize]) -> Vec<Endpoint> {
    eps(indices)
        .into_iter()
        .map(|e| hierarchy::with_path(e, path))
        .collect()
}

/// Keeps every event a controller logged, so a test can check the whole history.
#[derive(Default)]
pub struct History {
    pub events: Vec<Event>,
}

impl History {
    pub fn take(&mut self, ctrl: &mut FakeController) -> Vec<Event> {
        let new = ctrl.take_events();
        self.events.extend(new.iter().cloned());
        new
    }

    /// Panics unless every subchannel `ctrl` created is shut down, and the backend
    /// saw exactly one shutdown for each.
    pub fn verify_every_subchannel_shut_down_once(&mut self, ctrl: &mut FakeController) {
        self.take(ctrl);
        let mut shutdowns: HashMap<SubchannelId, usize> = HashMap::new();
        for e in &self.events {
            if let Event::Shutdown(id) = e {
                *shutdowns.entry(*id).or_default() += 1;
            }
        }
        for sc in ctrl.created_subchannels() {
            assert!(sc.is_shut_down(), "{sc:?} was never shut down");
            assert_eq!(shutdowns.get(&sc.id()), Some(&1), "{sc:?} shutdowns");
        }
        assert_eq!(
            shutdowns.len(),
            ctrl.created_subchannels().len(),
            "shutdowns of unknown subchannels"
        );
    }
}

/// A balancer group with a weighted aggregator as its parent, in the shape of
/// grpc-go's balancergroup tests.
pub struct Harness {
    pub clock: ManualClock,
    pub ctrl: FakeController,
    pub group: BalancerGroup,
    pub agg: WeightedAggregator,
    pub tracker: Arc<Tracker>,
    pub registry: LbPolicyRegistry,
}

impl Harness {
    pub fn new(close_timeout: Duration) -> Self {
        let tracker = Tracker::new();
        let registry = registry(&tracker);
        let ctrl = FakeController::new();
        let group = BalancerGroup::new(ctrl.policy_options_with(registry.clone()), close_timeout);
        Self {
            clock: ManualClock::new(),
            ctrl,
            group,
            agg: WeightedAggregator::new(),
            tracker,
            registry,
        }
    }

    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    pub fn policy(&self, name: &str) -> ParsedLbConfig {
        policy(&self.registry, name)
    }

    /// Adds `id` to the aggregator (with `weight`) and to the group.
    pub fn add(&mut self, id: &str, weight: u32, policy_name: &str) {
        self.agg.add(id, weight);
        let config = self.policy(policy_name);
        self.group.add(id, &config).unwrap();
    }

    /// Removes `id` from the aggregator and the group.
    pub fn remove(&mut self, id: &str) {
        self.agg.remove(id);
        let now = self.now();
        self.group.remove(id, &mut self.ctrl, now);
    }

    /// Sends `id` the endpoints for `indices` with the config of `policy_name`.
    pub fn update(&mut self, id: &str, indices: &[usize], policy_name: &str) {
        let config = self.policy(policy_name);
        let now = self.now();
        let update = ResolverUpdate::from_endpoints(eps(indices));
        let _ = self.group.update(id, update, &config, &mut self.ctrl, now);
    }

    /// Delivers a subchannel state through the group.
    pub fn set_state(&mut self, sc: &Subchannel, state: ConnectivityState) {
        let now = self.now();
        self.group
            .subchannel_update(sc, &sc_state(state), &mut self.ctrl, now);
    }

    /// Takes `n` new subchannels and moves each CONNECTING then READY.
    pub fn connect_new(&mut self, n: usize) -> Vec<Subchannel> {
        let scs = self.ctrl.verify_new_subchannels(n);
        for sc in &scs {
            self.set_state(sc, ConnectivityState::Connecting);
            self.set_state(sc, ConnectivityState::Ready);
        }
        scs
    }

    /// Feeds queued child states to the aggregator and returns the aggregate if any
    /// state of a known child arrived (what the parent would publish).
    pub fn pump(&mut self) -> Option<LbState> {
        let mut changed = false;
        while let Some(u) = self.group.poll_update() {
            changed |= self.agg.update_state(&u.id, u.state);
        }
        changed.then(|| self.agg.build())
    }
}

/// Addresses of the test indices, as `&str`s for `verify_round_robin`.
pub fn addrs(indices: &[usize]) -> Vec<String> {
    indices.iter().map(|&i| addr(i)).collect()
}

/// `verify_round_robin` over the addresses of `indices`.
pub fn verify_rr(state: &LbState, indices: &[usize]) {
    let want = addrs(indices);
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    lb_testkit::picks::verify_round_robin(&*state.picker, &want);
}

/// The ids of `subchannels`.
pub fn ids(subchannels: &[Subchannel]) -> Vec<SubchannelId> {
    subchannels.iter().map(Subchannel::id).collect()
}

/// A policy with no smoothing at all: one subchannel for the first address, whose
/// every state it publishes as its own (so TRANSIENT_FAILURE → CONNECTING reaches the
/// parent, which the built-in policies never let happen).
pub const MIRROR: &str = "mirror";

#[derive(Clone, Copy, Debug)]
pub struct MirrorBuilder;

impl LbPolicyBuilder for MirrorBuilder {
    fn name(&self) -> &'static str {
        MIRROR
    }

    fn build(&self, _: LbPolicyOptions) -> Box<dyn LbPolicy> {
        Box::new(Mirror { subchannel: None })
    }

    fn parse_config(
        &self,
        _: &serde_json::Value,
        _: &LbPolicyRegistry,
    ) -> Result<LbConfig, ConfigError> {
        Ok(LbConfig::new(()))
    }
}

struct Mirror {
    subchannel: Option<Subchannel>,
}

struct MirrorPicker(Subchannel);

impl lb_core::Picker for MirrorPicker {
    fn pick(&self, _: &lb_core::PickInfo<'_>) -> lb_core::PickResult<'_> {
        lb_core::PickResult::Pick(lb_core::Pick::new(&self.0))
    }
}

impl LbPolicy for Mirror {
    fn resolver_update(
        &mut self,
        update: ResolverUpdate,
        _: Option<&LbConfig>,
        controller: &mut dyn ChannelController,
        _: Instant,
    ) -> Result<(), UpdateError> {
        let Ok(endpoints) = update.endpoints else {
            return Ok(());
        };
        if self.subchannel.is_none() {
            if let Some(address) = endpoints.first().and_then(|e| e.addresses.first()) {
                let sc = controller.new_subchannel(address);
                sc.connect();
                self.subchannel = Some(sc);
            }
        }
        Ok(())
    }

    fn subchannel_update(
        &mut self,
        subchannel: &Subchannel,
        state: &SubchannelState,
        controller: &mut dyn ChannelController,
        _: Instant,
    ) {
        let s = state.connectivity_state;
        controller.update_picker(match s {
            ConnectivityState::Ready => LbState {
                connectivity_state: s,
                picker: Arc::new(MirrorPicker(subchannel.clone())),
            },
            ConnectivityState::TransientFailure => {
                LbState::failing(lb_core::Status::unavailable("mirror: failed"))
            }
            other => LbState::queuing(other),
        });
    }

    fn work(&mut self, _: &mut dyn ChannelController, _: Instant) {}

    fn exit_idle(&mut self, _: &mut dyn ChannelController, _: Instant) {}

    fn close(&mut self) {
        if let Some(sc) = self.subchannel.take() {
            sc.shutdown();
        }
    }
}
