//! A recording channel controller with fake subchannels.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use lb_core::orca::OobRequest;
use lb_core::{
    Address, ChannelController, ConnectivityState, LbPolicy, LbPolicyOptions, LbPolicyRegistry,
    LbState, SharedRandom, SplitMix64, Subchannel, SubchannelBackend, SubchannelId,
    SubchannelState, WorkScheduler,
};
use parking_lot::Mutex;

/// Something a policy did, in the order it did it.
#[derive(Clone, Debug)]
pub enum Event {
    /// Created a subchannel.
    NewSubchannel(Subchannel),
    /// Published a state and picker.
    UpdatePicker(LbState),
    /// Asked for re-resolution.
    RequestResolution,
    /// Asked for a wake-up.
    WakeAt(Instant),
    /// Asked a subchannel to connect.
    Connect(SubchannelId),
    /// Shut a subchannel down.
    Shutdown(SubchannelId),
}

type Log = Arc<Mutex<VecDeque<Event>>>;

/// The fake subchannels' backend: records connects and shutdowns in the log, and keeps
/// each subchannel's out-of-band report request.
struct FakeBackend {
    log: Log,
    oob: Mutex<HashMap<SubchannelId, OobRequest>>,
}

impl SubchannelBackend for FakeBackend {
    fn connect(&self, id: SubchannelId) {
        self.log.lock().push_back(Event::Connect(id));
    }

    fn shutdown(&self, id: SubchannelId) {
        self.log.lock().push_back(Event::Shutdown(id));
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn set_oob_reports(&self, id: SubchannelId, request: Option<OobRequest>) {
        let mut oob = self.oob.lock();
        match request {
            Some(r) => oob.insert(id, r),
            None => oob.remove(&id),
        };
    }
}

/// A [`WorkScheduler`] that counts requests.
#[derive(Debug, Default)]
pub struct FakeWorkScheduler {
    requests: AtomicUsize,
}

impl FakeWorkScheduler {
    /// How many times work was requested since the last call.
    pub fn take_requests(&self) -> usize {
        self.requests.swap(0, Ordering::SeqCst)
    }
}

impl WorkScheduler for FakeWorkScheduler {
    fn schedule_work(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
    }
}

/// A [`ChannelController`] that records every call as an [`Event`].
///
/// The `verify_*` helpers remove the events they check and panic, with the events
/// seen, when the expectation fails. Events they do not look at stay in the log, so a
/// test can end with [`FakeController::verify_no_events`].
pub struct FakeController {
    log: Log,
    backend: Arc<FakeBackend>,
    next_id: u64,
    /// The scheduler handed to policies built with [`FakeController::policy_options`].
    pub work_scheduler: Arc<FakeWorkScheduler>,
    /// Every subchannel ever created, for leak checks.
    created: Vec<Subchannel>,
}

impl FakeController {
    /// A controller with an empty log.
    pub fn new() -> Self {
        let log: Log = Default::default();
        Self {
            backend: Arc::new(FakeBackend {
                log: log.clone(),
                oob: Mutex::default(),
            }),
            log,
            next_id: 1,
            work_scheduler: Arc::default(),
            created: Vec::new(),
        }
    }

    /// Options for building a policy under test: this controller's work scheduler, a
    /// seeded random source and a registry with the built-in policies.
    pub fn policy_options(&self) -> LbPolicyOptions {
        self.policy_options_with(LbPolicyRegistry::with_builtins())
    }

    /// Like [`FakeController::policy_options`] with the given registry.
    pub fn policy_options_with(&self, registry: LbPolicyRegistry) -> LbPolicyOptions {
        LbPolicyOptions {
            work_scheduler: self.work_scheduler.clone(),
            authority: "test.example.com".into(),
            random: SharedRandom::new(SplitMix64::seeded(0x5eed)),
            registry: Arc::new(registry),
            channels: None,
            channelz: Default::default(),
            metrics: lb_core::metrics::Metrics::none_for("test.example.com"),
        }
    }

    /// Delivers a state to `policy` for `subchannel`, as the channel would.
    pub fn update_subchannel(
        &mut self,
        policy: &mut dyn LbPolicy,
        subchannel: &Subchannel,
        state: ConnectivityState,
        now: Instant,
    ) {
        let state = match state {
            ConnectivityState::TransientFailure => {
                SubchannelState::failure(lb_core::Status::unavailable(format!(
                    "{} refused the connection",
                    subchannel.address()
                )))
            }
            other => SubchannelState::new(other),
        };
        self.update_subchannel_with(policy, subchannel, state, now);
    }

    /// Delivers a full [`SubchannelState`] to `policy`.
    pub fn update_subchannel_with(
        &mut self,
        policy: &mut dyn LbPolicy,
        subchannel: &Subchannel,
        state: SubchannelState,
        now: Instant,
    ) {
        policy.subchannel_update(subchannel, &state, self, now);
    }

    /// Removes and returns every event so far.
    pub fn take_events(&mut self) -> Vec<Event> {
        self.log.lock().drain(..).collect()
    }

    /// The out-of-band report request a policy made for subchannel `id`
    /// ([`Subchannel::request_oob_reports`]), while it stands. A test sends reports by
    /// calling its `listener`, as the channel's serializer would.
    pub fn oob_request(&self, id: SubchannelId) -> Option<OobRequest> {
        self.backend.oob.lock().get(&id).cloned()
    }

    /// Every subchannel this controller has created.
    pub fn created_subchannels(&self) -> &[Subchannel] {
        &self.created
    }

    fn take_first<T>(&mut self, what: &str, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        let mut log = self.log.lock();
        if let Some((i, v)) = log
            .iter()
            .enumerate()
            .find_map(|(i, e)| f(e).map(|v| (i, v)))
        {
            log.remove(i);
            return v;
        }
        panic!("expected {what}; events: {:?}", log);
    }

    /// Removes the first `n` subchannel creations and returns the subchannels.
    pub fn verify_new_subchannels(&mut self, n: usize) -> Vec<Subchannel> {
        (0..n)
            .map(|i| {
                self.take_first(
                    &format!("subchannel creation {} of {n}", i + 1),
                    |e| match e {
                        Event::NewSubchannel(sc) => Some(sc.clone()),
                        _ => None,
                    },
                )
            })
            .collect()
    }

    /// Panics if any subchannel creation is in the log.
    pub fn verify_no_new_subchannels(&mut self) {
        let log = self.log.lock();
        if log.iter().any(|e| matches!(e, Event::NewSubchannel(_))) {
            panic!("expected no subchannel creation; events: {log:?}");
        }
    }

    /// Removes the first published state and returns it.
    pub fn verify_state(&mut self) -> LbState {
        self.take_first("a published picker", |e| match e {
            Event::UpdatePicker(s) => Some(s.clone()),
            _ => None,
        })
    }

    /// Removes every published state and returns the last.
    pub fn latest_state(&mut self) -> LbState {
        let mut log = self.log.lock();
        let mut last = None;
        log.retain(|e| match e {
            Event::UpdatePicker(s) => {
                last = Some(s.clone());
                false
            }
            _ => true,
        });
        last.unwrap_or_else(|| panic!("expected a published picker; events: {log:?}"))
    }

    /// Removes every published state and returns their connectivity states in order.
    pub fn take_states(&mut self) -> Vec<ConnectivityState> {
        let mut states = Vec::new();
        self.log.lock().retain(|e| match e {
            Event::UpdatePicker(s) => {
                states.push(s.connectivity_state);
                false
            }
            _ => true,
        });
        states
    }

    /// Panics if a picker was published.
    pub fn verify_no_picker(&mut self) {
        let log = self.log.lock();
        if log.iter().any(|e| matches!(e, Event::UpdatePicker(_))) {
            panic!("expected no picker update; events: {log:?}");
        }
    }

    /// Removes the first connect request for `id`.
    pub fn verify_connect(&mut self, id: SubchannelId) {
        self.take_first(&format!("connect({id})"), |e| {
            matches!(e, Event::Connect(i) if *i == id).then_some(())
        });
    }

    /// Removes the shutdown events of exactly these subchannels (in any order) and
    /// panics if another shutdown is in the log.
    pub fn verify_shutdowns(&mut self, ids: &[SubchannelId]) {
        let mut log = self.log.lock();
        let mut got: Vec<SubchannelId> = Vec::new();
        log.retain(|e| match e {
            Event::Shutdown(id) => {
                got.push(*id);
                false
            }
            _ => true,
        });
        let mut want = ids.to_vec();
        want.sort();
        got.sort();
        assert_eq!(got, want, "shutdowns differ; other events: {log:?}");
    }

    /// Panics if any subchannel was shut down.
    pub fn verify_no_shutdowns(&mut self) {
        let log = self.log.lock();
        if log.iter().any(|e| matches!(e, Event::Shutdown(_))) {
            panic!("expected no shutdown; events: {log:?}");
        }
    }

    /// Removes one re-resolution request.
    pub fn verify_resolution_requested(&mut self) {
        self.take_first("a re-resolution request", |e| {
            matches!(e, Event::RequestResolution).then_some(())
        });
    }

    /// Removes the first wake-up request and returns its deadline.
    pub fn verify_wake_at(&mut self) -> Instant {
        self.take_first("a wake-up request", |e| match e {
            Event::WakeAt(t) => Some(*t),
            _ => None,
        })
    }

    /// Removes every wake-up request and returns the earliest deadline.
    pub fn take_earliest_wake(&mut self) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        self.log.lock().retain(|e| match e {
            Event::WakeAt(t) => {
                earliest = Some(earliest.map_or(*t, |e| e.min(*t)));
                false
            }
            _ => true,
        });
        earliest
    }

    /// Panics unless the log is empty.
    pub fn verify_no_events(&mut self) {
        let log = self.log.lock();
        assert!(log.is_empty(), "expected no events; got {log:?}");
    }
}

impl Default for FakeController {
    fn default() -> Self {
        Self::new()
    }
}

impl ChannelController for FakeController {
    fn new_subchannel(&mut self, address: &Address) -> Subchannel {
        let id = SubchannelId(self.next_id);
        self.next_id += 1;
        let sc = Subchannel::new(id, address.clone(), self.backend.clone());
        self.created.push(sc.clone());
        self.log.lock().push_back(Event::NewSubchannel(sc.clone()));
        sc
    }

    fn update_picker(&mut self, state: LbState) {
        self.log.lock().push_back(Event::UpdatePicker(state));
    }

    fn request_resolution(&mut self) {
        self.log.lock().push_back(Event::RequestResolution);
    }

    fn wake_at(&mut self, deadline: Instant) {
        self.log.lock().push_back(Event::WakeAt(deadline));
    }
}
