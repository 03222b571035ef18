//! The channel's logic, free of threads: [`ChannelCore`] takes inputs and the time
//! and does what they call for. The serializer thread is a thin loop around it.
//!
//! ```text
//!   inputs ──handle(input, now)──┐                         ┌──> picker cell
//!   time   ──handle_timeout(now)─┼──> ChannelCore ─────────┼──> transport.connect / close
//!                                │    (policy, pool,       ├──> resolver.resolve_now
//!   poll_timeout() <─────────────┘     resolver, timers)   └──> policy methods
//! ```
//!
//! Modes: the channel starts IDLE (no policy; the first call or `state(true)` wakes
//! it), is ACTIVE while it has a policy, goes back to IDLE after the idle timeout
//! with no calls, and is CLOSED for good after `close`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::cell::PickerCell;
use super::clock::{Clock, ClockListener};
use super::entity::ChannelData;
use super::health::Slot;
use super::pool::{Pool, Update};
use super::resolver::{MIN_RESOLUTION_INTERVAL, REFRESH_INTERVAL, Resolver};
use super::retry::{RetryCounters, RetrySettings};
use super::service_config::ServiceConfig;
use crate::address::Address;
use crate::backoff::{Backoff, BackoffConfig};
use crate::channelz::{PolicyView, Registration, Severity};
use crate::config::ConfigError;
use crate::orca::OobRequest;
use crate::picker::{DropPicker, FailPicker, PickInfo, PickResult, Picker, QueuePicker};
use crate::policies::pick_first::PickFirstBuilder;
use crate::policy::{
    ChannelController, LbConfig, LbPolicy, LbPolicyBuilder, LbPolicyOptions, LbState, WorkScheduler,
};
use crate::random::{RandomSource, SharedRandom};
use crate::registry::LbPolicyRegistry;
use crate::resolver::ResolverUpdate;
use crate::state::ConnectivityState;
use crate::status::Status;
use crate::subchannel::{Subchannel, SubchannelId};
use crate::transport::ConnectionEvent;

/// Everything the serializer reacts to.
pub(crate) enum Input {
    /// Close the channel.
    Close,
    /// A subchannel's `connect()`.
    Connect(SubchannelId),
    /// Something happened to attempt `seq` of subchannel `id`.
    Connection {
        id: SubchannelId,
        seq: u64,
        event: ConnectionEvent,
    },
    /// The last call on a draining connection ended.
    Drained { id: SubchannelId, seq: u64 },
    /// A call (or `state(true)`) wants the channel out of IDLE.
    ExitIdle,
    /// The health-check stream of `slot` on subchannel `id` has news (at most one
    /// queued per stream: see [`super::health`]).
    Health { id: SubchannelId, slot: Weak<Slot> },
    /// A policy asked for out-of-band load reports from subchannel `id` (`None`: to
    /// stop them); see [`super::orca`].
    OobRequest {
        id: SubchannelId,
        request: Option<OobRequest>,
    },
    /// The out-of-band ORCA stream of `slot` on subchannel `id` has news (at most one
    /// queued per stream: see [`super::orca`]).
    Orca {
        id: SubchannelId,
        slot: Weak<super::orca::Slot>,
    },
    /// A resolver result.
    Resolver(ResolverUpdate),
    /// Reply once everything queued before has been handled.
    Settle { reply: Sender<()>, rounds: u32 },
    /// A subchannel's `shutdown()`.
    Shutdown(SubchannelId),
    /// The clock jumped: look at the deadlines again.
    Tick,
    /// A picker of policy `epoch` asked for `work`.
    Work { epoch: u64 },
    /// Channelz asks for the policy tree (a one-slot reply channel; nobody may be
    /// waiting any more).
    Describe { reply: Sender<PolicyView> },
}

impl fmt::Debug for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Close => f.write_str("Close"),
            Self::Connect(id) => write!(f, "Connect({id})"),
            Self::Connection { id, seq, event } => write!(f, "Connection({id}#{seq}, {event:?})"),
            Self::Drained { id, seq } => write!(f, "Drained({id}#{seq})"),
            Self::ExitIdle => f.write_str("ExitIdle"),
            Self::Health { id, .. } => write!(f, "Health({id})"),
            Self::OobRequest { id, request } => write!(f, "OobRequest({id}, {request:?})"),
            Self::Orca { id, .. } => write!(f, "Orca({id})"),
            Self::Resolver(u) => write!(f, "Resolver({u:?})"),
            Self::Settle { rounds, .. } => write!(f, "Settle({rounds})"),
            Self::Shutdown(id) => write!(f, "Shutdown({id})"),
            Self::Tick => f.write_str("Tick"),
            Self::Work { epoch } => write!(f, "Work({epoch})"),
            Self::Describe { .. } => f.write_str("Describe"),
        }
    }
}

/// Call settings that do not change.
#[derive(Clone, Debug)]
pub(crate) struct CallDefaults {
    pub(crate) default_timeout: Option<Duration>,
    pub(crate) max_send_message_size: usize,
    pub(crate) max_receive_message_size: usize,
    /// The encoding of request messages for calls that do not choose one.
    pub(crate) send_compression: Option<String>,
    pub(crate) retry: RetrySettings,
    /// The channel's metrics (A66's per-call instruments are recorded in `call.rs`).
    pub(crate) metrics: crate::metrics::Metrics,
}

/// What the serializer and the calling threads share.
pub(crate) struct Shared {
    pub(crate) cell: PickerCell,
    pub(crate) clock: Arc<dyn Clock>,
    /// The clock follows real time: wait for deadlines with real timers.
    pub(crate) real_time: bool,
    pub(crate) closed: AtomicBool,
    pub(crate) tx: Sender<Input>,
    pub(crate) defaults: CallDefaults,
    /// Retry counters and the channel's retry buffer use.
    pub(crate) retries: RetryCounters,
    /// The channel's channelz data (see [`super::entity`]).
    pub(crate) channelz: Arc<ChannelData>,
    /// Calls started and not yet ended (queued ones included).
    calls: AtomicUsize,
    /// When the last call ended, in nanoseconds after `base`.
    last_call_end: AtomicU64,
    base: Instant,
    _listener: Arc<TickListener>,
}

impl Shared {
    pub(crate) fn new(
        clock: Arc<dyn Clock>,
        tx: Sender<Input>,
        defaults: CallDefaults,
        channelz: Arc<ChannelData>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|weak| {
            let listener = Arc::new(TickListener {
                shared: weak.clone(),
            });
            let as_dyn: Arc<dyn ClockListener> = listener.clone();
            let manual = clock.subscribe(Arc::downgrade(&as_dyn));
            let idle: Arc<dyn Picker> = Arc::new(IdlePicker::new(tx.clone()));
            Self {
                cell: PickerCell::new(ConnectivityState::Idle, idle),
                base: clock.now(),
                clock,
                real_time: !manual,
                closed: AtomicBool::new(false),
                tx,
                defaults,
                retries: RetryCounters::default(),
                channelz,
                calls: AtomicUsize::new(0),
                last_call_end: AtomicU64::new(0),
                _listener: listener,
            }
        })
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Counts a call until the guard drops.
    pub(crate) fn begin_call(self: &Arc<Self>) -> ActiveCall {
        self.calls.fetch_add(1, Ordering::SeqCst);
        ActiveCall(self.clone())
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn last_call_end(&self) -> Instant {
        self.base + Duration::from_nanos(self.last_call_end.load(Ordering::SeqCst))
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("cell", &self.cell)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// A call in progress, for the idle timer.
pub(crate) struct ActiveCall(Arc<Shared>);

impl ActiveCall {
    /// The channel the call is on.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.0
    }
}

impl Drop for ActiveCall {
    fn drop(&mut self) {
        let shared = &*self.0;
        let since = shared.clock.now().saturating_duration_since(shared.base);
        let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX);
        shared.last_call_end.fetch_max(nanos, Ordering::SeqCst);
        shared.calls.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Wakes the channel when a manual clock jumps.
struct TickListener {
    shared: Weak<Shared>,
}

impl ClockListener for TickListener {
    fn advanced(&self, _now: Instant) {
        if let Some(shared) = self.shared.upgrade() {
            shared.cell.touch();
            let _ = shared.tx.send(Input::Tick);
        }
    }
}

/// The picker of an IDLE channel: the first pick wakes the channel.
struct IdlePicker {
    tx: Sender<Input>,
    asked: AtomicBool,
}

impl IdlePicker {
    fn new(tx: Sender<Input>) -> Self {
        Self {
            tx,
            asked: AtomicBool::new(false),
        }
    }
}

impl Picker for IdlePicker {
    fn pick(&self, _: &PickInfo<'_>) -> PickResult<'_> {
        if !self.asked.load(Ordering::Relaxed) && !self.asked.swap(true, Ordering::AcqRel) {
            let _ = self.tx.send(Input::ExitIdle);
        }
        PickResult::Queue
    }
}

/// The work scheduler of one root policy: coalesces requests into one input.
struct PolicyScheduler {
    tx: Sender<Input>,
    epoch: u64,
    pending: AtomicBool,
}

impl WorkScheduler for PolicyScheduler {
    fn schedule_work(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            let _ = self.tx.send(Input::Work { epoch: self.epoch });
        }
    }
}

/// The channel-level settings the core works with.
pub(crate) struct CoreConfig {
    pub(crate) authority: String,
    pub(crate) registry: Arc<LbPolicyRegistry>,
    pub(crate) default_service_config: Option<Arc<ServiceConfig>>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) random: SharedRandom,
    pub(crate) backoff: BackoffConfig,
    /// `ChannelBuilder::disable_health_check`: ignore `healthCheckConfig`.
    pub(crate) health_check_disabled: bool,
    /// Given to policies, to open channels of their own like this one.
    pub(crate) channels: super::factory::ChannelFactory,
    /// Handed to policies in `LbPolicyOptions::metrics`.
    pub(crate) metrics: crate::metrics::Metrics,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Idle,
    Active,
    Closed,
}

/// The channel's own timers; policy wake-ups and subchannel timers live apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// Check whether the channel has been without calls for the idle timeout.
    Idle,
    /// A rate-limited re-resolution is due.
    ResolveNow,
    /// The periodic re-resolution is due.
    Refresh,
    /// Re-resolve after a bad update (with backoff).
    ResolutionRetry,
}

impl Timer {
    const ALL: [Self; 4] = [
        Self::Idle,
        Self::ResolveNow,
        Self::Refresh,
        Self::ResolutionRetry,
    ];
}

struct Root {
    policy: Box<dyn LbPolicy>,
    name: &'static str,
    epoch: u64,
    scheduler: Arc<PolicyScheduler>,
}

/// The channel's logic. See the [module docs](self).
pub(crate) struct ChannelCore {
    config: CoreConfig,
    shared: Arc<Shared>,
    pool: Pool,
    resolver: Option<Box<dyn Resolver>>,
    mode: Mode,
    /// Whether the channel has been ACTIVE before (re-resolve when it wakes again).
    was_active: bool,
    active_since: Instant,
    last_update: Option<ResolverUpdate>,
    /// The service config in use, once one has been applied.
    service_config: Option<Option<Arc<ServiceConfig>>>,
    root: Option<Root>,
    next_epoch: u64,
    wakeups: BinaryHeap<Reverse<Instant>>,
    timers: [Option<Instant>; 4],
    last_resolution: Option<Instant>,
    resolution_backoff: Backoff,
    resolution_requested: bool,
    updates: Vec<Update>,
    /// The channel's entry in the channelz registry, until it closes.
    registration: Option<Registration>,
    /// The state last recorded in the channel's trace.
    traced_state: ConnectivityState,
}

/// A [`RandomSource`] drawing from the channel's shared source.
struct SharedSource(SharedRandom);

impl RandomSource for SharedSource {
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
}

impl ChannelCore {
    /// A core in IDLE whose resolver was started at `now`.
    pub(crate) fn new(
        config: CoreConfig,
        shared: Arc<Shared>,
        pool: Pool,
        resolver: Box<dyn Resolver>,
        now: Instant,
    ) -> Self {
        let weak: Weak<Shared> = Arc::downgrade(&shared);
        let cz = &shared.channelz;
        let registration = crate::channelz::registry().register(cz.id, cz.kind, weak);
        cz.event(
            module_path!(),
            Severity::Info,
            None,
            format_args!("created ({:?})", cz.kind),
        );
        let resolution_backoff = Backoff::new(config.backoff, SharedSource(config.random.clone()));
        Self {
            config,
            shared,
            pool,
            resolver: Some(resolver),
            mode: Mode::Idle,
            was_active: false,
            active_since: now,
            last_update: None,
            service_config: None,
            root: None,
            next_epoch: 0,
            wakeups: BinaryHeap::new(),
            timers: [None; 4],
            last_resolution: Some(now),
            resolution_backoff,
            resolution_requested: false,
            updates: Vec::new(),
            registration: Some(registration),
            traced_state: ConnectivityState::Idle,
        }
    }

    /// Records a change of the channel's state since the last one recorded.
    fn trace_state(&mut self) {
        let state = self.shared.cell.load().state;
        if state != self.traced_state {
            let old = std::mem::replace(&mut self.traced_state, state);
            self.shared.channelz.event(
                module_path!(),
                Severity::Info,
                None,
                format_args!("state {old} -> {state}"),
            );
        }
    }

    /// Describes the policy tree for channelz.
    fn describe(&self) -> PolicyView {
        let mut view = PolicyView {
            state: Some(self.shared.cell.load().state),
            ..PolicyView::default()
        };
        match &self.root {
            Some(root) => {
                view.policy = root.name.to_owned();
                let config = self
                    .service_config
                    .as_ref()
                    .and_then(|sc| sc.as_deref()?.load_balancing().map(|c| format!("{c:?}")));
                view.config = config;
                root.policy.describe(&mut view);
            }
            None => view.detail("policy", format_args!("none ({:?})", self.mode)),
        }
        view
    }

    /// Whether the channel is closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.mode == Mode::Closed
    }

    /// How many subchannels exist.
    #[cfg(test)]
    pub(crate) fn subchannel_count(&self) -> usize {
        self.pool.len()
    }

    /// Handles one input.
    pub(crate) fn handle(&mut self, input: Input, now: Instant) {
        self.handle_input(input, now);
        self.trace_state();
    }

    fn handle_input(&mut self, input: Input, now: Instant) {
        if self.mode == Mode::Closed {
            if let Input::Settle { reply, .. } = input {
                let _ = reply.send(());
            }
            return;
        }
        match input {
            Input::Close => self.close(),
            Input::Connect(id) => {
                self.pool.connect(id, now, &mut self.updates);
                self.deliver(now);
            }
            Input::Connection { id, seq, event } => {
                self.pool
                    .handle_event(id, seq, event, now, &mut self.updates);
                self.deliver(now);
            }
            Input::Drained { id, seq } => self.pool.drained(id, seq),
            Input::Health { id, slot } => {
                self.pool.health_event(id, &slot, now, &mut self.updates);
                self.deliver(now);
            }
            Input::OobRequest { id, request } => self.pool.set_oob_request(id, request),
            Input::Orca { id, slot } => self.pool.orca_event(id, &slot, now),
            Input::ExitIdle => match self.mode {
                Mode::Idle => self.activate(now),
                _ => {
                    self.call_policy(now, |p, c, now| p.exit_idle(c, now));
                }
            },
            Input::Describe { reply } => {
                let _ = reply.try_send(self.describe());
            }
            Input::Resolver(update) => {
                self.trace_update(&update);
                self.last_update = Some(update.clone());
                if self.mode == Mode::Active {
                    self.apply_update(update, now);
                }
            }
            Input::Settle { reply, .. } => {
                let _ = reply.send(());
            }
            Input::Shutdown(id) => self.pool.shutdown(id),
            Input::Tick => {}
            Input::Work { epoch } => {
                let current = self.root.as_ref().filter(|r| r.epoch == epoch);
                if let Some(root) = current {
                    root.scheduler.pending.store(false, Ordering::Release);
                    self.call_policy(now, |p, c, now| p.work(c, now));
                }
            }
        }
    }

    /// Records a resolver result in the trace.
    fn trace_update(&self, update: &ResolverUpdate) {
        let cz = &self.shared.channelz;
        let config = match &update.service_config {
            None => "no service config",
            Some(Ok(_)) => "a service config",
            Some(Err(_)) => "a bad service config",
        };
        match &update.endpoints {
            Ok(endpoints) => {
                let addresses: usize = endpoints.iter().map(|e| e.addresses.len()).sum();
                cz.event(
                    module_path!(),
                    Severity::Info,
                    None,
                    format_args!(
                        "resolver result: {} endpoints, {addresses} addresses, {config}",
                        endpoints.len()
                    ),
                );
            }
            Err(error) => cz.event(
                module_path!(),
                Severity::Warning,
                None,
                format_args!("resolver error: {error} ({config})"),
            ),
        }
    }

    /// Fires every timer due at `now`. Calling it early does nothing.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.handle_timers(now);
        self.trace_state();
    }

    fn handle_timers(&mut self, now: Instant) {
        if self.mode == Mode::Closed {
            return;
        }
        self.pool.handle_timeout(now, &mut self.updates);
        self.deliver(now);
        let mut due = false;
        while self.wakeups.peek().is_some_and(|Reverse(t)| *t <= now) {
            self.wakeups.pop();
            due = true;
        }
        if due {
            self.call_policy(now, |p, c, now| p.work(c, now));
        }
        for (i, timer) in Timer::ALL.into_iter().enumerate() {
            if self.timers[i].is_none_or(|t| t > now) || self.mode != Mode::Active {
                continue;
            }
            self.timers[i] = None;
            match timer {
                Timer::Idle => self.check_idle(now),
                Timer::ResolveNow | Timer::ResolutionRetry => self.resolve_now(now),
                Timer::Refresh => {
                    self.resolve_now(now);
                    self.set_timer(Timer::Refresh, now + REFRESH_INTERVAL);
                }
            }
        }
    }

    /// When [`ChannelCore::handle_timeout`] next has something to do.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.mode == Mode::Closed {
            return None;
        }
        let own = self.timers.iter().flatten().min().copied();
        let policy = self.wakeups.peek().map(|Reverse(t)| *t);
        [own, policy, self.pool.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Closes the channel: the policy, every subchannel and connection, the resolver.
    pub(crate) fn close(&mut self) {
        if self.mode == Mode::Closed {
            return;
        }
        self.mode = Mode::Closed;
        self.shared.closed.store(true, Ordering::Release);
        self.shared
            .channelz
            .event(module_path!(), Severity::Info, None, "closed");
        // Out of the registry: its subchannels leave with the pool's entries below.
        self.registration = None;
        self.shared.channelz.closed();
        if let Some(mut root) = self.root.take() {
            root.policy.close();
        }
        self.pool.close();
        if let Some(mut resolver) = self.resolver.take() {
            resolver.shutdown();
        }
        self.wakeups.clear();
        self.timers = [None; 4];
        self.shared.cell.publish(
            ConnectivityState::Shutdown,
            Arc::new(DropPicker(closed_status())),
        );
    }

    fn set_timer(&mut self, timer: Timer, at: Instant) {
        self.timers[timer as usize] = Some(at);
    }

    fn timer(&self, timer: Timer) -> Option<Instant> {
        self.timers[timer as usize]
    }

    fn activate(&mut self, now: Instant) {
        self.mode = Mode::Active;
        self.active_since = now;
        if let Some(timeout) = self.config.idle_timeout {
            self.set_timer(Timer::Idle, now + timeout);
        }
        self.set_timer(Timer::Refresh, now + REFRESH_INTERVAL);
        self.shared
            .cell
            .publish(ConnectivityState::Connecting, Arc::new(QueuePicker));
        if self.was_active {
            // The last result may be old: ask for a fresh one too.
            self.request_resolution(now);
        }
        self.was_active = true;
        if let Some(update) = self.last_update.clone() {
            self.apply_update(update, now);
        }
    }

    fn enter_idle(&mut self) {
        if let Some(mut root) = self.root.take() {
            root.policy.close();
        }
        self.pool.shutdown_all();
        self.wakeups.clear();
        self.timers = [None; 4];
        self.mode = Mode::Idle;
        self.shared.cell.publish(
            ConnectivityState::Idle,
            Arc::new(IdlePicker::new(self.shared.tx.clone())),
        );
    }

    fn check_idle(&mut self, now: Instant) {
        let Some(timeout) = self.config.idle_timeout else {
            return;
        };
        if self.shared.calls() > 0 {
            self.set_timer(Timer::Idle, now + timeout);
            return;
        }
        let due = self.shared.last_call_end().max(self.active_since) + timeout;
        if due > now {
            self.set_timer(Timer::Idle, due);
        } else {
            self.enter_idle();
        }
    }

    /// A policy asked for re-resolution: at once, or when the rate limit allows.
    fn request_resolution(&mut self, now: Instant) {
        if self.mode != Mode::Active || self.resolver.is_none() {
            return;
        }
        match self.last_resolution.map(|t| t + MIN_RESOLUTION_INTERVAL) {
            Some(earliest) if earliest > now => {
                if self.timer(Timer::ResolveNow).is_none() {
                    self.set_timer(Timer::ResolveNow, earliest);
                }
            }
            _ => self.resolve_now(now),
        }
    }

    fn resolve_now(&mut self, now: Instant) {
        if let Some(resolver) = &mut self.resolver {
            resolver.resolve_now();
            self.last_resolution = Some(now);
            self.timers[Timer::ResolveNow as usize] = None;
        }
    }

    fn retry_resolution(&mut self, now: Instant) {
        if self.timer(Timer::ResolutionRetry).is_none() {
            let at = self.resolution_backoff.next_attempt_after_failure(now);
            self.set_timer(Timer::ResolutionRetry, at);
        }
    }

    /// The service config an update calls for: its own, or the default.
    fn service_config_for(
        &self,
        update: &ResolverUpdate,
    ) -> Result<Option<Arc<ServiceConfig>>, ConfigError> {
        match &update.service_config {
            None => Ok(self.config.default_service_config.clone()),
            Some(Ok(json)) => {
                ServiceConfig::parse(json, &self.config.registry).map(|sc| Some(Arc::new(sc)))
            }
            Some(Err(e)) => Err(e.clone()),
        }
    }

    fn apply_update(&mut self, mut update: ResolverUpdate, now: Instant) {
        let service_config = match self.service_config_for(&update) {
            Ok(sc) => sc,
            Err(error) => match self.service_config.clone() {
                Some(previous) => {
                    self.shared.channelz.event(
                        module_path!(),
                        Severity::Warning,
                        None,
                        format_args!(
                            "ignoring a bad service config from the resolver, keeping the last one: {error}"
                        ),
                    );
                    previous
                }
                None => {
                    self.shared.channelz.event(
                        module_path!(),
                        Severity::Warning,
                        None,
                        format_args!(
                            "bad service config from the resolver and none before it: {error}"
                        ),
                    );
                    self.shared.cell.publish(
                        ConnectivityState::TransientFailure,
                        Arc::new(FailPicker(Status::unavailable(format!(
                            "invalid service config from the resolver: {error}"
                        )))),
                    );
                    self.retry_resolution(now);
                    return;
                }
            },
        };
        let methods_changed = self.service_config.as_ref().is_none_or(|old| {
            old.as_deref().map(ServiceConfig::methods)
                != service_config.as_deref().map(ServiceConfig::methods)
        });
        if methods_changed {
            let methods = service_config
                .as_deref()
                .map(|sc| Arc::new(sc.methods().with_fresh_throttler()))
                .unwrap_or_default();
            self.shared.cell.set_methods(methods);
        }
        let config_changed = self
            .service_config
            .as_ref()
            .is_none_or(|old| *old != service_config);
        if config_changed {
            let policy = service_config
                .as_deref()
                .and_then(ServiceConfig::load_balancing)
                .map_or(crate::policies::pick_first::NAME, |c| c.name());
            self.shared.channelz.event(
                module_path!(),
                Severity::Info,
                None,
                format_args!(
                    "service config {} (policy {policy})",
                    match (&self.service_config, &service_config) {
                        (None, _) => "applied",
                        (_, None) => "changed to none",
                        _ => "changed",
                    }
                ),
            );
        }
        self.service_config = Some(service_config.clone());
        let health_service = service_config
            .as_deref()
            .and_then(ServiceConfig::health_check_service_name)
            .filter(|_| !self.config.health_check_disabled)
            .map(str::to_owned);
        self.pool
            .set_health_service(health_service, &mut self.updates);
        let (builder, lb_config): (Arc<dyn LbPolicyBuilder>, Option<LbConfig>) =
            match service_config
                .as_deref()
                .and_then(ServiceConfig::load_balancing)
            {
                Some(chosen) => (chosen.builder.clone(), Some(chosen.config.clone())),
                None => (self.pick_first(), None),
            };
        if self.root.as_ref().is_none_or(|r| r.name != builder.name()) {
            self.switch_policy(&builder);
        }
        let endpoints_ok = update.endpoints.is_ok();
        // The selector goes out with the first picker the policy publishes from
        // this update (or alone after it, if it publishes none): a call that
        // selects with it finds what it selected in the picker beside it.
        self.shared
            .cell
            .stage_selector(update.config_selector.take());
        let result = self.call_policy(now, |p, c, now| {
            p.resolver_update(update, lb_config.as_ref(), c, now)
        });
        self.shared.cell.commit_selector();
        match result {
            Some(Ok(())) if endpoints_ok => {
                self.resolution_backoff.reset();
                self.timers[Timer::ResolutionRetry as usize] = None;
            }
            Some(Ok(())) => self.retry_resolution(now),
            Some(Err(error)) => {
                self.shared.channelz.event(
                    module_path!(),
                    Severity::Warning,
                    None,
                    format_args!("the policy rejected the resolver update: {error}"),
                );
                self.retry_resolution(now);
            }
            None => {}
        }
        // Health-check changes for READY subchannels, after the policy has them.
        self.deliver(now);
    }

    fn pick_first(&self) -> Arc<dyn LbPolicyBuilder> {
        self.config
            .registry
            .get(crate::policies::pick_first::NAME)
            .cloned()
            .unwrap_or_else(|| Arc::new(PickFirstBuilder))
    }

    /// Replaces the root policy: builds the new one, closes the old one and shuts
    /// down whatever subchannels it left.
    fn switch_policy(&mut self, builder: &Arc<dyn LbPolicyBuilder>) {
        self.shared.channelz.event(
            module_path!(),
            Severity::Info,
            None,
            format_args!(
                "policy {} -> {}",
                self.root.as_ref().map_or("none", |r| r.name),
                builder.name()
            ),
        );
        if let Some(mut old) = self.root.take() {
            old.policy.close();
            self.pool.shutdown_owner(old.epoch);
            self.wakeups.clear();
            self.shared
                .cell
                .publish(ConnectivityState::Connecting, Arc::new(QueuePicker));
        }
        self.next_epoch += 1;
        let scheduler = Arc::new(PolicyScheduler {
            tx: self.shared.tx.clone(),
            epoch: self.next_epoch,
            pending: AtomicBool::new(false),
        });
        let options = LbPolicyOptions {
            work_scheduler: scheduler.clone(),
            authority: self.config.authority.clone(),
            random: self.config.random.clone(),
            registry: self.config.registry.clone(),
            channels: Some(self.config.channels.clone()),
            channelz: self.shared.channelz.channel_ref.clone(),
            metrics: self.config.metrics.clone(),
        };
        self.root = Some(Root {
            policy: builder.build(options),
            name: builder.name(),
            epoch: self.next_epoch,
            scheduler,
        });
    }

    /// Calls the root policy with a controller, then does what it asked for.
    fn call_policy<R>(
        &mut self,
        now: Instant,
        f: impl FnOnce(&mut dyn LbPolicy, &mut dyn ChannelController, Instant) -> R,
    ) -> Option<R> {
        let root = self.root.as_mut()?;
        let mut controller = Controller {
            pool: &mut self.pool,
            cell: &self.shared.cell,
            wakeups: &mut self.wakeups,
            resolution_requested: &mut self.resolution_requested,
            epoch: root.epoch,
            channelz: &self.shared.channelz,
        };
        let result = f(&mut *root.policy, &mut controller, now);
        if std::mem::take(&mut self.resolution_requested) {
            self.request_resolution(now);
        }
        Some(result)
    }

    /// Hands subchannel state changes to the policy that owns them.
    fn deliver(&mut self, now: Instant) {
        while !self.updates.is_empty() {
            let updates = std::mem::take(&mut self.updates);
            for u in updates {
                // A policy that shut a subchannel down hears no more about it, even
                // if the shutdown is still queued.
                let owned = self.root.as_ref().is_some_and(|r| r.epoch == u.owner);
                if owned && !u.subchannel.is_shut_down() {
                    self.call_policy(now, |p, c, now| {
                        p.subchannel_update(&u.subchannel, &u.state, c, now);
                    });
                }
            }
        }
    }
}

impl Drop for ChannelCore {
    fn drop(&mut self) {
        if self.mode == Mode::Closed {
            return;
        }
        if std::thread::panicking() {
            // A policy panicked: do not call into it again, but stop what was started.
            self.pool.close();
            if let Some(mut resolver) = self.resolver.take() {
                resolver.shutdown();
            }
        } else {
            self.close();
        }
    }
}

impl fmt::Debug for ChannelCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelCore")
            .field("mode", &self.mode)
            .field("policy", &self.root.as_ref().map(|r| r.name))
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

/// The status calls get once the channel is closed.
pub(crate) fn closed_status() -> Status {
    Status::cancelled("channel closed")
}

/// What the root policy may ask of the channel, valid during one policy call.
struct Controller<'a> {
    pool: &'a mut Pool,
    cell: &'a PickerCell,
    wakeups: &'a mut BinaryHeap<Reverse<Instant>>,
    resolution_requested: &'a mut bool,
    epoch: u64,
    channelz: &'a ChannelData,
}

impl ChannelController for Controller<'_> {
    fn new_subchannel(&mut self, address: &Address) -> Subchannel {
        self.pool.create(address, self.epoch)
    }

    fn update_picker(&mut self, state: LbState) {
        log::debug!(
            "channel {} ({}): picker update: {}",
            self.channelz.id,
            self.channelz.target,
            state.connectivity_state
        );
        self.cell.publish(state.connectivity_state, state.picker);
    }

    fn request_resolution(&mut self) {
        *self.resolution_requested = true;
    }

    fn wake_at(&mut self, deadline: Instant) {
        self.wakeups.push(Reverse(deadline));
    }
}
