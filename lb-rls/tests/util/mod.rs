//! Shared helpers for the RLS policy tests: a harness that drives the policy on a
//! fake controller with a manual clock, a fake RLS server on the in-memory
//! transport, and a test child policy (grpc-go's pattern: a `pick_first` over the
//! one address its config's `Backend` field names).

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use lb_core::channelz::{self, ChannelRef};
use lb_core::config::Fields;
use lb_core::policies::pick_first::PickFirstBuilder;
use lb_core::transport::{CallRequest, CallResponse};
use lb_core::{
    ChannelController, ConfigError, ConnectivityState, LbConfig, LbPolicy, LbPolicyBuilder,
    LbPolicyOptions, LbPolicyRegistry, LbState, Metadata, PickInfo, PickResult, Picker,
    ResolverUpdate, SharedRandom, SplitMix64, Status, Subchannel, SubchannelId, SubchannelState,
    UpdateError, WorkScheduler, endpoints,
};
use lb_rls::balancer::{RlsBuilder, RlsBuilderOptions, ThrottlerFactory};
use lb_rls::metrics::InMemoryRecorder;
use lb_rls::proto::{ROUTE_LOOKUP_METHOD, RouteLookupRequest, RouteLookupResponse};
use lb_rls::throttler::RequestThrottler;
use lb_testkit::{Event, FakeController, InMemoryTransport, ManualClock};
use parking_lot::{Condvar, Mutex};
use serde_json::{Value, json};

/// The longest a test waits for another thread.
pub const WAIT: Duration = Duration::from_secs(20);

/// The method the tests call (grpc-go's tests use the same).
pub const METHOD: &str = "/grpc.testing.TestService/EmptyCall";

/// The RLS server's address.
pub const RLS: &str = "rls-server:1";

// ---------------------------------------------------------------------------------
// Work scheduling

/// A work scheduler that signals a channel.
pub struct ChanScheduler {
    tx: Sender<()>,
}

impl ChanScheduler {
    /// A scheduler and the receiver of its signals.
    pub fn new() -> (Arc<Self>, Receiver<()>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        (Arc::new(Self { tx }), rx)
    }
}

impl WorkScheduler for ChanScheduler {
    fn schedule_work(&self) {
        let _ = self.tx.send(());
    }
}

// ---------------------------------------------------------------------------------
// Throttlers

/// A throttler that always (or never) throttles and counts the responses.
pub struct FixedThrottler {
    pub throttle: Arc<Mutex<bool>>,
    pub responses: Arc<Mutex<Vec<bool>>>,
}

impl RequestThrottler for FixedThrottler {
    fn should_throttle(&mut self, _: Instant) -> bool {
        *self.throttle.lock()
    }

    fn register_backend_response(&mut self, _: Instant, throttled: bool) {
        self.responses.lock().push(throttled);
    }
}

/// A switchable throttler shared by every control channel the policy builds.
#[derive(Clone, Default)]
pub struct Throttle {
    pub on: Arc<Mutex<bool>>,
    pub responses: Arc<Mutex<Vec<bool>>>,
    pub made: Arc<Mutex<usize>>,
}

impl Throttle {
    pub fn factory(&self) -> ThrottlerFactory {
        let this = self.clone();
        Arc::new(move |_| {
            *this.made.lock() += 1;
            Box::new(FixedThrottler {
                throttle: this.on.clone(),
                responses: this.responses.clone(),
            })
        })
    }

    pub fn set(&self, on: bool) {
        *self.on.lock() = on;
    }
}

// ---------------------------------------------------------------------------------
// Fake RLS server

type Responder = Box<dyn Fn(&RouteLookupRequest) -> Result<RouteLookupResponse, Status> + Send>;

/// A RouteLookup server on the in-memory transport: records requests, answers with a
/// settable responder (default: the empty response, which RLS treats as a failure).
#[derive(Clone)]
pub struct FakeRls {
    pub address: String,
    requests: Arc<(Mutex<Vec<RouteLookupRequest>>, Condvar)>,
    responder: Arc<Mutex<Responder>>,
}

impl FakeRls {
    pub fn start(transport: &InMemoryTransport, address: &str) -> Self {
        let server = Self {
            address: address.to_owned(),
            requests: Arc::default(),
            responder: Arc::new(Mutex::new(Box::new(|_| Ok(RouteLookupResponse::default())))),
        };
        server.serve(transport);
        server
    }

    /// (Re)installs the server on `transport`.
    pub fn serve(&self, transport: &InMemoryTransport) {
        let this = self.clone();
        transport.add_server(&self.address, move |call: &CallRequest| {
            assert_eq!(call.method, ROUTE_LOOKUP_METHOD);
            let request = RouteLookupRequest::decode(&call.message)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let response = (this.responder.lock())(&request);
            {
                let (list, cv) = &*this.requests;
                list.lock().push(request);
                cv.notify_all();
            }
            response.map(|r| CallResponse {
                message: r.to_bytes(),
                ..Default::default()
            })
        });
    }

    pub fn respond_with(
        &self,
        f: impl Fn(&RouteLookupRequest) -> Result<RouteLookupResponse, Status> + Send + 'static,
    ) {
        *self.responder.lock() = Box::new(f);
    }

    /// Answers every request with `targets` and `header_data`.
    pub fn respond_targets(&self, targets: &[&str], header_data: &str) {
        let response = RouteLookupResponse {
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
            header_data: header_data.to_owned(),
        };
        self.respond_with(move |_| Ok(response.clone()));
    }

    pub fn requests(&self) -> Vec<RouteLookupRequest> {
        self.requests.0.lock().clone()
    }

    pub fn request_count(&self) -> usize {
        self.requests.0.lock().len()
    }

    /// Waits (bounded) until the server has answered `n` requests in all.
    pub fn wait_for_requests(&self, n: usize) {
        let (list, cv) = &*self.requests;
        let give_up = Instant::now() + WAIT;
        let mut list = list.lock();
        while list.len() < n {
            assert!(
                !cv.wait_until(&mut list, give_up).timed_out() || list.len() >= n,
                "{}: waited for {n} requests, got {}",
                self.address,
                list.len()
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// Test child policy

/// What the test child policies did.
#[derive(Clone, Debug, PartialEq)]
pub enum ChildEvent {
    /// Got a config (the whole JSON it was parsed from).
    Config { policy: &'static str, json: Value },
    /// Was closed.
    Closed {
        policy: &'static str,
        backend: String,
    },
}

pub type ChildLog = Arc<Mutex<Vec<ChildEvent>>>;

/// The config of [`TestChildBuilder`].
#[derive(Clone, Debug, PartialEq)]
pub struct TestChildConfig {
    pub backend: String,
    pub json: Value,
}

/// A child policy with a `Backend` field: `pick_first` over that one address.
/// `"bad-target"` does not parse.
#[derive(Clone)]
pub struct TestChildBuilder {
    pub name: &'static str,
    pub log: ChildLog,
}

impl LbPolicyBuilder for TestChildBuilder {
    fn name(&self) -> &'static str {
        self.name
    }

    fn build(&self, options: LbPolicyOptions) -> Box<dyn LbPolicy> {
        Box::new(TestChild {
            name: self.name,
            log: self.log.clone(),
            inner: PickFirstBuilder.build(options),
            backend: None,
        })
    }

    fn parse_config(&self, config: &Value, _: &LbPolicyRegistry) -> Result<LbConfig, ConfigError> {
        let fields = Fields::new(config, "")?;
        let backend = fields
            .string("Backend")?
            .ok_or_else(|| ConfigError::new("Backend", "is required"))?;
        if backend == "bad-target" {
            return Err(ConfigError::new(
                "Backend",
                "backend field set to RLSChildPolicyBadTarget",
            ));
        }
        Ok(LbConfig::new(TestChildConfig {
            backend: backend.to_owned(),
            json: config.clone(),
        }))
    }
}

struct TestChild {
    name: &'static str,
    log: ChildLog,
    inner: Box<dyn LbPolicy>,
    backend: Option<String>,
}

impl LbPolicy for TestChild {
    fn resolver_update(
        &mut self,
        _update: ResolverUpdate,
        config: Option<&LbConfig>,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) -> Result<(), UpdateError> {
        let config = config
            .and_then(|c| c.downcast_ref::<TestChildConfig>())
            .expect("test child config");
        self.log.lock().push(ChildEvent::Config {
            policy: self.name,
            json: config.json.clone(),
        });
        self.backend = Some(config.backend.clone());
        // `"Emit": true`: publish two states before the real one, as a busy child
        // would while its parent is still configuring.
        if config.json.get("Emit") == Some(&Value::Bool(true)) {
            controller.update_picker(LbState::queuing(ConnectivityState::Idle));
            controller.update_picker(LbState::queuing(ConnectivityState::Connecting));
        }
        let update = ResolverUpdate::from_endpoints(endpoints([config.backend.as_str()]));
        self.inner.resolver_update(update, None, controller, now)
    }

    fn subchannel_update(
        &mut self,
        subchannel: &Subchannel,
        state: &SubchannelState,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) {
        self.inner
            .subchannel_update(subchannel, state, controller, now);
    }

    fn work(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        self.inner.work(controller, now);
    }

    fn exit_idle(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        self.inner.exit_idle(controller, now);
    }

    fn close(&mut self) {
        self.log.lock().push(ChildEvent::Closed {
            policy: self.name,
            backend: self.backend.clone().unwrap_or_default(),
        });
        self.inner.close();
    }
}

// ---------------------------------------------------------------------------------
// Configs

/// grpc-go's basic test config: keys k1 ← n1 and k2 ← n2 for TestService, a 5 s
/// lookup timeout, a 1024-byte cache, pick_first on the control channel, the test
/// child with target field `Backend`.
pub fn config(lookup_service: &str) -> Value {
    json!({
        "routeLookupConfig": {
            "grpcKeybuilders": [{
                "names": [{"service": "grpc.testing.TestService"}],
                "headers": [{"key": "k1", "names": ["n1"]}, {"key": "k2", "names": ["n2"]}],
            }],
            "lookupService": format!("passthrough:///{lookup_service}"),
            "lookupServiceTimeout": "5s",
            "cacheSizeBytes": 1024,
        },
        "routeLookupChannelServiceConfig": {"loadBalancingConfig": [{"pick_first": {}}]},
        "childPolicy": [{"test_child": {}}],
        "childPolicyConfigTargetFieldName": "Backend",
    })
}

// ---------------------------------------------------------------------------------
// The harness

/// Drives one RLS policy on a fake controller: every call's events are sorted into
/// the fields below.
pub struct Harness {
    pub clock: ManualClock,
    pub transport: InMemoryTransport,
    pub server: FakeRls,
    pub rls: RlsBuilder,
    pub registry: Arc<LbPolicyRegistry>,
    pub recorder: Arc<InMemoryRecorder>,
    pub throttle: Throttle,
    pub children: ChildLog,
    pub ctrl: FakeController,
    pub policy: Box<dyn LbPolicy>,
    /// The channel the policy runs in, as channelz sees it: the control channel
    /// is listed as its nested channel.
    pub parent: ChannelRef,
    work_rx: Receiver<()>,
    /// Every state published, oldest first.
    pub states: Vec<LbState>,
    /// Every subchannel created.
    pub subchannels: Vec<Subchannel>,
    /// Every shutdown, in order.
    pub shutdowns: Vec<SubchannelId>,
    /// Every wake-up asked for.
    pub wakes: Vec<Instant>,
    /// Make every new subchannel READY at once.
    pub auto_ready: bool,
    readied: usize,
}

impl Harness {
    /// A harness with a never-throttling throttler and the default options.
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    /// A harness whose builder options `tweak` adjusts.
    pub fn with(tweak: impl FnOnce(&mut RlsBuilderOptions)) -> Self {
        let clock = ManualClock::new();
        let transport = InMemoryTransport::with_clock(clock.shared());
        let server = FakeRls::start(&transport, RLS);
        let recorder = Arc::new(InMemoryRecorder::new());
        let throttle = Throttle::default();
        let mut options = RlsBuilderOptions::new(Arc::new(transport.clone()));
        options.clock = Some(clock.shared());
        options.throttler = Some(throttle.factory());
        tweak(&mut options);
        let mut registry = LbPolicyRegistry::with_builtins();
        let rls = lb_rls::register(&mut registry, options);
        let children: ChildLog = Arc::default();
        for name in ["test_child", "test_child_2"] {
            registry.register(TestChildBuilder {
                name,
                log: children.clone(),
            });
        }
        let registry = Arc::new(registry);
        let (tx, work_rx) = crossbeam_channel::unbounded();
        let ctrl = FakeController::new();
        let parent = ChannelRef::new(channelz::next_id(), "test:///rls-parent");
        let options = LbPolicyOptions {
            work_scheduler: Arc::new(ChanScheduler { tx }),
            authority: "test.example.com".into(),
            random: SharedRandom::new(SplitMix64::seeded(7)),
            registry: registry.clone(),
            channels: None,
            channelz: parent.clone(),
            metrics: lb_core::metrics::Metrics::new(recorder.clone(), "test.example.com"),
        };
        let policy = rls.build(options);
        Self {
            clock,
            transport,
            server,
            rls,
            registry,
            recorder,
            throttle,
            children,
            ctrl,
            policy,
            parent,
            work_rx,
            states: Vec::new(),
            subchannels: Vec::new(),
            shutdowns: Vec::new(),
            wakes: Vec::new(),
            auto_ready: true,
            readied: 0,
        }
    }

    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Parses `json` as the RLS config.
    pub fn parse(&self, json: &Value) -> LbConfig {
        self.registry
            .parse_load_balancing_config(&json!([{ "rls_experimental": json }]))
            .expect("valid config")
            .config
    }

    /// Sends a resolver update with `json` as the config.
    pub fn update(&mut self, json: &Value) {
        self.update_with(json, ResolverUpdate::from_endpoints(endpoints(["svc:1"])));
    }

    pub fn update_with(&mut self, json: &Value, update: ResolverUpdate) {
        let config = self.parse(json);
        let now = self.now();
        self.policy
            .resolver_update(update, Some(&config), &mut self.ctrl, now)
            .expect("update accepted");
        self.sync();
    }

    /// Runs `work` once at the clock's time.
    pub fn work(&mut self) {
        let now = self.now();
        self.policy.work(&mut self.ctrl, now);
        self.sync();
    }

    /// Asks the policy to leave IDLE.
    pub fn exit_idle(&mut self) {
        let now = self.now();
        self.policy.exit_idle(&mut self.ctrl, now);
        self.sync();
    }

    /// Moves the clock and runs `work`.
    pub fn advance(&mut self, by: Duration) {
        self.clock.advance(by);
        self.work();
    }

    /// Runs `work` whenever work is asked for, until `done` holds (bounded).
    pub fn work_until(&mut self, what: &str, mut done: impl FnMut(&mut Self) -> bool) {
        let give_up = Instant::now() + WAIT;
        loop {
            self.work();
            if done(self) {
                return;
            }
            let left = give_up.saturating_duration_since(Instant::now());
            assert!(
                self.work_rx.recv_timeout(left).is_ok(),
                "gave up waiting for {what}"
            );
            while self.work_rx.try_recv().is_ok() {}
        }
    }

    /// Like [`Harness::work_until`], giving up (and returning false) after
    /// `timeout` of real time.
    pub fn work_until_within(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> bool {
        let give_up = Instant::now() + timeout;
        loop {
            self.work();
            if done(self) {
                return true;
            }
            let left = give_up.saturating_duration_since(Instant::now());
            if self.work_rx.recv_timeout(left).is_err() {
                return false;
            }
            while self.work_rx.try_recv().is_ok() {}
        }
    }

    /// Runs `work` whenever work is asked for, until a new picker is published
    /// (bounded): after a lookup the test knows was answered, the picker that
    /// applies it.
    pub fn work_until_published(&mut self, what: &str) {
        let published = self.states.len();
        self.work_until(what, |h| h.states.len() > published);
    }

    /// Sorts the controller's events into the harness's fields, and makes new
    /// subchannels READY if `auto_ready`.
    pub fn sync(&mut self) {
        loop {
            for event in self.ctrl.take_events() {
                match event {
                    Event::UpdatePicker(s) => self.states.push(s),
                    Event::NewSubchannel(sc) => self.subchannels.push(sc),
                    Event::Shutdown(id) => self.shutdowns.push(id),
                    Event::WakeAt(t) => self.wakes.push(t),
                    Event::RequestResolution | Event::Connect(_) => {}
                }
            }
            if !self.auto_ready || self.readied == self.subchannels.len() {
                return;
            }
            let now = self.now();
            while self.readied < self.subchannels.len() {
                let sc = self.subchannels[self.readied].clone();
                self.readied += 1;
                if sc.is_shut_down() {
                    continue;
                }
                for state in [ConnectivityState::Connecting, ConnectivityState::Ready] {
                    self.ctrl
                        .update_subchannel(&mut *self.policy, &sc, state, now);
                }
            }
        }
    }

    /// Delivers `state` for the subchannel of `address`.
    pub fn set_state(&mut self, address: &str, state: ConnectivityState) {
        let now = self.now();
        let sc = self
            .subchannels
            .iter()
            .rev()
            .find(|sc| sc.address().address == address && !sc.is_shut_down())
            .unwrap_or_else(|| panic!("no live subchannel for {address}"))
            .clone();
        self.ctrl
            .update_subchannel(&mut *self.policy, &sc, state, now);
        self.sync();
    }

    /// The latest published state.
    pub fn state(&self) -> &LbState {
        self.states.last().expect("a published state")
    }

    pub fn picker(&self) -> Arc<dyn Picker> {
        self.state().picker.clone()
    }

    /// Picks with the latest picker for `METHOD` and `md`.
    pub fn pick(&self, md: &Metadata) -> Picked {
        pick(&*self.picker(), METHOD, md)
    }

    /// Picks with no metadata.
    pub fn pick0(&self) -> Picked {
        self.pick(&Metadata::new())
    }

    /// Picks, and keeps running `work` until the pick no longer queues.
    pub fn pick_until_done(&mut self, md: &Metadata) -> Picked {
        let md = md.clone();
        let mut last = Picked::Queue;
        self.work_until("a pick that does not queue", |h| {
            last = h.pick(&md);
            last != Picked::Queue
        });
        last
    }

    /// Closes the policy and syncs.
    pub fn close(&mut self) {
        self.policy.close();
        self.sync();
    }

    /// The child events so far, drained.
    pub fn take_child_events(&self) -> Vec<ChildEvent> {
        std::mem::take(&mut *self.children.lock())
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.policy.close();
    }
}

/// A pick's outcome, comparable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Picked {
    /// Picked the subchannel of this address, with this `x-google-rls-data`.
    Pick {
        address: String,
        rls_data: Vec<String>,
    },
    Queue,
    Fail(lb_core::Code, String),
    Drop(lb_core::Code, String),
}

impl Picked {
    /// A pick of `address` with no header data.
    pub fn to(address: &str) -> Self {
        Self::Pick {
            address: address.to_owned(),
            rls_data: Vec::new(),
        }
    }

    /// The address picked.
    pub fn address(&self) -> Option<&str> {
        match self {
            Self::Pick { address, .. } => Some(address),
            _ => None,
        }
    }

    /// The failure's status, if the pick failed.
    pub fn failure(&self) -> Option<(lb_core::Code, &str)> {
        match self {
            Self::Fail(c, m) => Some((*c, m)),
            _ => None,
        }
    }
}

pub fn pick(picker: &dyn Picker, method: &str, md: &Metadata) -> Picked {
    let info = PickInfo::new(method, md);
    match picker.pick(&info) {
        PickResult::Pick(p) => Picked::Pick {
            address: p.subchannel.address().address.clone(),
            rls_data: p
                .metadata
                .get_all("x-google-rls-data")
                .map(str::to_owned)
                .collect(),
        },
        PickResult::Queue => Picked::Queue,
        PickResult::Fail(s) => Picked::Fail(s.code(), s.message().to_owned()),
        PickResult::Drop(s) => Picked::Drop(s.code(), s.message().to_owned()),
    }
}

/// Metadata with these `(key, value)` pairs.
pub fn md(pairs: &[(&str, &str)]) -> Metadata {
    let mut md = Metadata::new();
    for (k, v) in pairs {
        md.insert(k, v).expect("valid metadata");
    }
    md
}

/// Waits (bounded, polling) for `done`: only for effects of other threads that
/// signal nothing (the OS reaping a thread).
pub fn eventually(what: &str, done: impl Fn() -> bool) {
    let give_up = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < give_up, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}
