//! `outlier_detection_experimental`: take addresses whose calls fail more than their
//! peers' out of rotation for a while (gRFC A50).
//!
//! ```json
//! {"interval": "10s", "baseEjectionTime": "30s", "maxEjectionTime": "300s",
//!  "maxEjectionPercent": 10,
//!  "successRateEjection": {"stdevFactor": 1900, "enforcementPercentage": 100,
//!                          "minimumHosts": 5, "requestVolume": 100},
//!  "failurePercentageEjection": {"threshold": 85, "enforcementPercentage": 0,
//!                                "minimumHosts": 5, "requestVolume": 50},
//!  "childPolicy": [{"round_robin": {}}]}
//! ```
//!
//! The policy wraps one child policy (in a [`BalancerGroup`], so a change of
//! `childPolicy` switches gracefully) and sits between it and the channel both ways:
//!
//! ```text
//!             channel (or parent policy)
//!   subchannel_update │      ^ update_picker(CountingPicker(child's picker))
//!                     v      │
//!   OutlierDetection: real state remembered per subchannel; while its address is
//!     │  ejected the child is told TRANSIENT_FAILURE instead (and the real state is
//!     │  replayed on un-ejection); every interval (work(now)): swap the counters,
//!     │  run success-rate / failure-percentage ejection, un-eject the expired
//!     v
//!   TrackingController ── new_subchannel: records subchannel → address ──> channel
//!     │
//!   BalancerGroup (one child) ──> child policy (round_robin, …)
//!
//!   app threads: CountingPicker::pick ─> child picker ─> Pick
//!                on_complete ─> CallCounter of the picked address (two atomic
//!                adds, no lock) ─> the child's own on_complete
//! ```
//!
//! - **Counting.** Each address in the resolver update has a [`CallCounter`]: an
//!   active and an inactive bucket of success and failure counts. Pickers add to the
//!   active bucket; at each interval the buckets swap and the policy reads the one
//!   that just closed. A call counts as a success only when its status is OK.
//! - **Ejection.** Success-rate ejection ejects an address whose success rate is
//!   below `mean − stdev × stdevFactor / 1000` of the addresses with at least
//!   `requestVolume` calls, when at least `minimumHosts` have. Failure-percentage
//!   ejection ejects an address whose failure percentage is above `threshold`. Each
//!   detection is enforced with probability `enforcementPercentage` (drawn from the
//!   channel's [`RandomSource`](lb_core::RandomSource)), and no ejection happens once
//!   `maxEjectionPercent` of the addresses are ejected (but one always may).
//! - **Un-ejection.** An address ejected at `t` returns at the first interval at or
//!   after `t + min(baseEjectionTime × multiplier, max(baseEjectionTime,
//!   maxEjectionTime))`. The multiplier grows by one at each ejection and shrinks by
//!   one at each interval the address spends in service.
//! - **Pass-through.** With neither algorithm configured, the policy neither counts
//!   nor runs a timer, and un-ejects everything.
//! - Time is an argument: intervals are wake-ups asked with
//!   [`ChannelController::wake_at`]; the policy never reads the clock.

use lb_core::CallCompletion;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lb_core::channelz::{PolicyView, Table};
use lb_core::config::{ConfigError, Fields};
use lb_core::{
    Address, ChannelController, ConnectivityState, LbConfig, LbPolicy, LbPolicyBuilder,
    LbPolicyOptions, LbPolicyRegistry, LbState, ParsedLbConfig, PickInfo, PickResult, Picker,
    ResolverUpdate, Status, Subchannel, SubchannelId, SubchannelState, UpdateError,
    flatten_addresses,
};

use crate::group::BalancerGroup;

/// The policy's name in gRPC.
pub const NAME: &str = "outlier_detection_experimental";

/// The other name it is registered under.
pub const ALIAS: &str = "outlier_detection";

/// The id of the one child in the policy's balancer group.
const CHILD: &str = "child";

/// The `outlier_detection` config (grpc-go's `LBConfig`).
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierDetectionConfig {
    /// Time between ejection sweeps (`interval`, default 10 s, more than zero).
    pub interval: Duration,
    /// How long an address is ejected for, times its multiplier
    /// (`baseEjectionTime`, default 30 s).
    pub base_ejection_time: Duration,
    /// The longest ejection, unless `base_ejection_time` is longer
    /// (`maxEjectionTime`, default 300 s).
    pub max_ejection_time: Duration,
    /// The most addresses ejected at once, in percent; one may always be
    /// (`maxEjectionPercent`, default 10, at most 100).
    pub max_ejection_percent: u32,
    /// Success-rate ejection, if configured.
    pub success_rate_ejection: Option<SuccessRateEjection>,
    /// Failure-percentage ejection, if configured.
    pub failure_percentage_ejection: Option<FailurePercentageEjection>,
    /// The child policy, chosen from the `childPolicy` list.
    pub child_policy: ParsedLbConfig,
}

impl OutlierDetectionConfig {
    /// Whether neither algorithm is configured: the policy then passes everything
    /// through.
    pub fn is_noop(&self) -> bool {
        self.success_rate_ejection.is_none() && self.failure_percentage_ejection.is_none()
    }

    /// How long an address ejected with `multiplier` stays ejected.
    fn ejection_time(&self, multiplier: u32) -> Duration {
        let grown = self.base_ejection_time.saturating_mul(multiplier);
        grown.min(self.base_ejection_time.max(self.max_ejection_time))
    }
}

/// Parameters of success-rate ejection (`successRateEjection`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SuccessRateEjection {
    /// The ejection threshold is `mean − stdev × stdev_factor / 1000`
    /// (`stdevFactor`, default 1900).
    pub stdev_factor: u32,
    /// The chance, in percent, that a detected outlier is ejected
    /// (`enforcementPercentage`, default 100, at most 100).
    pub enforcement_percentage: u32,
    /// How many addresses need `request_volume` calls for the algorithm to run
    /// (`minimumHosts`, default 5).
    pub minimum_hosts: u32,
    /// Calls in an interval for an address to count (`requestVolume`, default 100).
    pub request_volume: u32,
}

impl Default for SuccessRateEjection {
    fn default() -> Self {
        Self {
            stdev_factor: 1900,
            enforcement_percentage: 100,
            minimum_hosts: 5,
            request_volume: 100,
        }
    }
}

/// Parameters of failure-percentage ejection (`failurePercentageEjection`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailurePercentageEjection {
    /// An address whose failure percentage is above this is an outlier
    /// (`threshold`, default 85, at most 100).
    pub threshold: u32,
    /// The chance, in percent, that a detected outlier is ejected
    /// (`enforcementPercentage`, default 0, at most 100).
    pub enforcement_percentage: u32,
    /// How many addresses need `request_volume` calls for the algorithm to run
    /// (`minimumHosts`, default 5).
    pub minimum_hosts: u32,
    /// Calls in an interval for an address to count (`requestVolume`, default 50).
    pub request_volume: u32,
}

impl Default for FailurePercentageEjection {
    fn default() -> Self {
        Self {
            threshold: 85,
            enforcement_percentage: 0,
            minimum_hosts: 5,
            request_volume: 50,
        }
    }
}

/// Builds [`OutlierDetection`] and parses its config.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lb_core::LbPolicyRegistry;
/// use lb_group::outlier_detection::OutlierDetectionConfig;
///
/// let mut registry = LbPolicyRegistry::with_builtins();
/// lb_group::register(&mut registry);
/// let json = serde_json::json!([{"outlier_detection_experimental": {
///     "interval": "1s",
///     "successRateEjection": {},
///     "childPolicy": [{"round_robin": {}}],
/// }}]);
/// let parsed = registry.parse_load_balancing_config(&json)?;
/// let config = parsed.config.downcast_ref::<OutlierDetectionConfig>().unwrap();
/// assert_eq!(config.interval, Duration::from_secs(1));
/// assert_eq!(config.base_ejection_time, Duration::from_secs(30));
/// assert_eq!(config.success_rate_ejection.unwrap().stdev_factor, 1900);
/// assert!(config.failure_percentage_ejection.is_none());
///
/// let bad = serde_json::json!([{"outlier_detection": {
///     "maxEjectionPercent": 101, "childPolicy": [{"round_robin": {}}],
/// }}]);
/// let err = registry.parse_load_balancing_config(&bad).unwrap_err();
/// assert_eq!(err.to_string(), "[0].outlier_detection.maxEjectionPercent: must be at most 100");
/// # Ok::<(), lb_core::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct OutlierDetectionBuilder;

impl LbPolicyBuilder for OutlierDetectionBuilder {
    fn name(&self) -> &'static str {
        NAME
    }

    fn build(&self, options: LbPolicyOptions) -> Box<dyn LbPolicy> {
        Box::new(OutlierDetection::new(options))
    }

    fn parse_config(
        &self,
        config: &serde_json::Value,
        registry: &LbPolicyRegistry,
    ) -> Result<LbConfig, ConfigError> {
        Ok(LbConfig::new(parse_config(config, registry)?))
    }
}

fn parse_config(
    config: &serde_json::Value,
    registry: &LbPolicyRegistry,
) -> Result<OutlierDetectionConfig, ConfigError> {
    let fields = Fields::new(config, "")?;
    let interval = fields
        .duration("interval")?
        .unwrap_or(Duration::from_secs(10));
    if interval.is_zero() {
        return Err(ConfigError::new("interval", "must be greater than 0"));
    }
    let base_ejection_time = fields
        .duration("baseEjectionTime")?
        .unwrap_or(Duration::from_secs(30));
    let max_ejection_time = fields
        .duration("maxEjectionTime")?
        .unwrap_or(Duration::from_secs(300));
    let max_ejection_percent = percent(&fields, "maxEjectionPercent", 10)?;
    let success_rate_ejection = fields
        .get("successRateEjection")
        .map(|v| parse_success_rate(v).map_err(|e| e.within("successRateEjection")))
        .transpose()?;
    let failure_percentage_ejection = fields
        .get("failurePercentageEjection")
        .map(|v| parse_failure_percentage(v).map_err(|e| e.within("failurePercentageEjection")))
        .transpose()?;
    let list = fields
        .get("childPolicy")
        .ok_or_else(|| ConfigError::new("childPolicy", "is required"))?;
    let child_policy = registry
        .parse_load_balancing_config(list)
        .map_err(|e| e.within("childPolicy"))?;
    Ok(OutlierDetectionConfig {
        interval,
        base_ejection_time,
        max_ejection_time,
        max_ejection_percent,
        success_rate_ejection,
        failure_percentage_ejection,
        child_policy,
    })
}

fn parse_success_rate(value: &serde_json::Value) -> Result<SuccessRateEjection, ConfigError> {
    let fields = Fields::new(value, "")?;
    let d = SuccessRateEjection::default();
    let (enforcement_percentage, minimum_hosts, request_volume) = shared_fields(
        &fields,
        d.enforcement_percentage,
        d.minimum_hosts,
        d.request_volume,
    )?;
    Ok(SuccessRateEjection {
        stdev_factor: fields.u32("stdevFactor")?.unwrap_or(d.stdev_factor),
        enforcement_percentage,
        minimum_hosts,
        request_volume,
    })
}

fn parse_failure_percentage(
    value: &serde_json::Value,
) -> Result<FailurePercentageEjection, ConfigError> {
    let fields = Fields::new(value, "")?;
    let d = FailurePercentageEjection::default();
    let (enforcement_percentage, minimum_hosts, request_volume) = shared_fields(
        &fields,
        d.enforcement_percentage,
        d.minimum_hosts,
        d.request_volume,
    )?;
    Ok(FailurePercentageEjection {
        threshold: percent(&fields, "threshold", d.threshold)?,
        enforcement_percentage,
        minimum_hosts,
        request_volume,
    })
}

/// The fields both algorithms have, with their defaults: `enforcementPercentage`,
/// `minimumHosts` and `requestVolume`.
fn shared_fields(
    fields: &Fields<'_>,
    enforcement: u32,
    minimum_hosts: u32,
    request_volume: u32,
) -> Result<(u32, u32, u32), ConfigError> {
    Ok((
        percent(fields, "enforcementPercentage", enforcement)?,
        fields.u32("minimumHosts")?.unwrap_or(minimum_hosts),
        fields.u32("requestVolume")?.unwrap_or(request_volume),
    ))
}

/// A percentage field: an integer from 0 to 100, `default` when absent.
fn percent(fields: &Fields<'_>, name: &str, default: u32) -> Result<u32, ConfigError> {
    let value = fields.u32(name)?.unwrap_or(default);
    if value > 100 {
        return Err(ConfigError::new(name, "must be at most 100"));
    }
    Ok(value)
}

/// One address's call results: an active bucket the pickers add to and an inactive
/// one the policy reads, swapped at each interval (grpc-go's `callCounter`).
///
/// Recording is two relaxed atomic operations and takes no lock. A call that loaded
/// the active bucket just before a swap may land in the bucket that was swapped out;
/// like grpc-go, that one count is lost, never corrupted.
///
/// # Examples
///
/// ```
/// use lb_group::outlier_detection::CallCounter;
/// let c = CallCounter::default();
/// c.record(true);
/// c.record(false);
/// c.record(true);
/// assert_eq!(c.swap(), (2, 1), "the interval that just closed");
/// assert_eq!(c.swap(), (0, 0), "nothing since");
/// ```
#[derive(Debug, Default)]
pub struct CallCounter {
    buckets: [Bucket; 2],
    active: AtomicUsize,
}

#[derive(Debug, Default)]
struct Bucket {
    successes: AtomicU64,
    failures: AtomicU64,
}

impl Bucket {
    fn clear(&self) {
        self.successes.store(0, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
    }
}

impl CallCounter {
    /// Counts one finished call in the active bucket.
    pub fn record(&self, success: bool) {
        let bucket = &self.buckets[self.active.load(Ordering::Acquire) & 1];
        let count = if success {
            &bucket.successes
        } else {
            &bucket.failures
        };
        count.fetch_add(1, Ordering::Relaxed);
    }

    /// Starts a new interval: an empty bucket becomes active, and the counts of the
    /// bucket that was active, `(successes, failures)`, are returned.
    pub fn swap(&self) -> (u64, u64) {
        let old = self.active.load(Ordering::Acquire) & 1;
        let new = old ^ 1;
        self.buckets[new].clear();
        self.active.store(new, Ordering::Release);
        let closed = &self.buckets[old];
        (
            closed.successes.load(Ordering::Relaxed),
            closed.failures.load(Ordering::Relaxed),
        )
    }

    /// Forgets every count.
    pub fn clear(&self) {
        for bucket in &self.buckets {
            bucket.clear();
        }
    }
}

/// What the policy knows about one address of the resolver update.
#[derive(Debug, Default)]
struct AddressInfo {
    counter: Arc<CallCounter>,
    /// `(successes, failures)` of the last closed interval.
    last: (u64, u64),
    /// When the address was ejected, if it is.
    ejected_at: Option<Instant>,
    ejection_multiplier: u32,
}

impl AddressInfo {
    fn volume(&self) -> u64 {
        self.last.0 + self.last.1
    }

    fn success_rate(&self) -> f64 {
        self.last.0 as f64 / self.volume() as f64
    }

    fn failure_percentage(&self) -> f64 {
        self.last.1 as f64 * 100.0 / self.volume() as f64
    }
}

/// One subchannel the child created.
#[derive(Debug)]
struct Tracked {
    subchannel: Subchannel,
    /// The latest state the channel reported (IDLE until the first report).
    real: SubchannelState,
    /// Whether the child was told TRANSIENT_FAILURE for ejection and has not seen
    /// the real state since.
    ejected: bool,
}

/// The policy's state that the controller wrapper writes while the child runs.
#[derive(Debug, Default)]
struct Tracking {
    addresses: BTreeMap<String, AddressInfo>,
    subchannels: HashMap<SubchannelId, Tracked>,
    /// Subchannels created for ejected addresses, to be told so once the child's
    /// call returns.
    born_ejected: Vec<SubchannelId>,
}

/// The controller the child sees: records each subchannel it creates, passes
/// everything on to the channel.
struct TrackingController<'a> {
    parent: &'a mut dyn ChannelController,
    tracking: &'a mut Tracking,
}

impl ChannelController for TrackingController<'_> {
    fn new_subchannel(&mut self, address: &Address) -> Subchannel {
        let subchannel = self.parent.new_subchannel(address);
        let ejected = self
            .tracking
            .addresses
            .get(&address.address)
            .is_some_and(|a| a.ejected_at.is_some());
        if ejected {
            self.tracking.born_ejected.push(subchannel.id());
        }
        self.tracking.subchannels.insert(
            subchannel.id(),
            Tracked {
                subchannel: subchannel.clone(),
                real: SubchannelState::new(ConnectivityState::Idle),
                ejected: false,
            },
        );
        subchannel
    }

    fn update_picker(&mut self, state: LbState) {
        // The balancer group keeps its child's states for `poll_update`; nothing
        // publishes through here.
        self.parent.update_picker(state);
    }

    fn request_resolution(&mut self) {
        self.parent.request_resolution();
    }

    fn wake_at(&mut self, deadline: Instant) {
        self.parent.wake_at(deadline);
    }
}

/// Wraps the child's picker and counts the result of every call it picks onto a
/// tracked address.
struct CountingPicker {
    child: Arc<dyn Picker>,
    counters: HashMap<SubchannelId, Arc<CallCounter>>,
}

impl Picker for CountingPicker {
    fn pick(&self, info: &PickInfo<'_>) -> PickResult<'_> {
        let mut pick = match self.child.pick(info) {
            PickResult::Pick(pick) => pick,
            other => return other,
        };
        if let Some(counter) = self.counters.get(&pick.subchannel.id()) {
            let counter = counter.clone();
            let inner = pick.on_complete.take();
            pick.on_complete = Some(Box::new(move |done: &CallCompletion<'_>| {
                counter.record(done.status.is_ok());
                if let Some(inner) = inner {
                    inner(done);
                }
            }));
        }
        PickResult::Pick(pick)
    }
}

/// The `outlier_detection` policy. See the [module docs](self).
///
/// # Examples
///
/// Two backends behind `round_robin`; the one whose calls all fail is ejected at the
/// end of the first interval, and picks go around it.
///
/// ```
/// use std::time::Duration;
/// use lb_core::{endpoints, ConnectivityState, LbPolicy, LbPolicyRegistry, Metadata};
/// use lb_core::{CallCompletion, PickInfo, PickResult, ResolverUpdate, Status};
/// use lb_group::outlier_detection::OutlierDetection;
/// use lb_testkit::{picks, FakeController, ManualClock};
///
/// let mut registry = LbPolicyRegistry::with_builtins();
/// lb_group::register(&mut registry);
/// let config = registry.parse_load_balancing_config(&serde_json::json!([
///     {"outlier_detection_experimental": {
///         "interval": "10s",
///         "failurePercentageEjection": {"threshold": 50, "enforcementPercentage": 100,
///                                       "minimumHosts": 2, "requestVolume": 4},
///         "childPolicy": [{"round_robin": {}}]}}]))?.config;
///
/// let clock = ManualClock::new();
/// let mut ctrl = FakeController::new();
/// let mut policy = OutlierDetection::new(ctrl.policy_options_with(registry));
/// let update = ResolverUpdate::from_endpoints(endpoints(["good:1", "bad:1"]));
/// policy.resolver_update(update, Some(&config), &mut ctrl, clock.now())?;
/// for sc in ctrl.verify_new_subchannels(2) {
///     ctrl.update_subchannel(&mut policy, &sc, ConnectivityState::Ready, clock.now());
/// }
///
/// // Eight calls, four each; every call to bad:1 fails.
/// let picker = ctrl.latest_state().picker;
/// let md = Metadata::new();
/// for _ in 0..8 {
///     let PickResult::Pick(mut pick) = picker.pick(&PickInfo::new("/s/m", &md))
///     else { unreachable!() };
///     let bad = pick.subchannel.address().address == "bad:1";
///     let status = if bad { Status::unavailable("down") } else { Status::ok() };
///     (pick.on_complete.take().unwrap())(&CallCompletion::new(&status, Duration::ZERO));
/// }
///
/// // The interval ends: bad:1 is ejected and the child no longer picks it.
/// policy.work(&mut ctrl, clock.advance(Duration::from_secs(10)));
/// assert_eq!(policy.ejected_addresses(), ["bad:1"]);
/// let picker = ctrl.latest_state().picker;
/// assert_eq!(picks::take_addresses(&*picker, 4), ["good:1"; 4]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct OutlierDetection {
    options: LbPolicyOptions,
    group: BalancerGroup,
    config: Option<OutlierDetectionConfig>,
    tracking: Tracking,
    /// The child's latest state, unwrapped.
    child_state: Option<LbState>,
    /// When the current interval started (A50's timer start timestamp); `None`
    /// while no algorithm is configured.
    interval_start: Option<Instant>,
    /// When the next interval sweep is due.
    next_sweep: Option<Instant>,
    closed: bool,
}

impl std::fmt::Debug for OutlierDetection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutlierDetection")
            .field("config", &self.config)
            .field("addresses", &self.tracking.addresses)
            .field("next_sweep", &self.next_sweep)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl OutlierDetection {
    /// A policy with no child yet; the first resolver update builds it.
    pub fn new(options: LbPolicyOptions) -> Self {
        Self {
            group: BalancerGroup::new(options.clone(), Duration::ZERO),
            options,
            config: None,
            tracking: Tracking::default(),
            child_state: None,
            interval_start: None,
            next_sweep: None,
            closed: false,
        }
    }

    /// The addresses ejected now, sorted.
    pub fn ejected_addresses(&self) -> Vec<String> {
        self.tracking
            .addresses
            .iter()
            .filter(|(_, a)| a.ejected_at.is_some())
            .map(|(addr, _)| addr.clone())
            .collect()
    }

    /// Runs `f` on the balancer group with the tracking controller, then tells the
    /// child about subchannels born ejected and publishes what the child published.
    fn with_child<R>(
        &mut self,
        controller: &mut dyn ChannelController,
        now: Instant,
        force_publish: bool,
        f: impl FnOnce(&mut BalancerGroup, &mut dyn ChannelController) -> R,
    ) -> R {
        let result = f(
            &mut self.group,
            &mut TrackingController {
                parent: controller,
                tracking: &mut self.tracking,
            },
        );
        while !self.tracking.born_ejected.is_empty() {
            for id in std::mem::take(&mut self.tracking.born_ejected) {
                self.set_ejected(id, true, controller, now);
            }
        }
        self.publish(force_publish, controller);
        result
    }

    /// Drains the child's states and publishes the latest, wrapped (or `force`:
    /// republishes the last one, for new counters or a new pass-through setting).
    fn publish(&mut self, force: bool, controller: &mut dyn ChannelController) {
        let mut changed = force;
        while let Some(update) = self.group.poll_update() {
            self.child_state = Some(update.state);
            changed = true;
        }
        let Some(state) = &self.child_state else {
            return;
        };
        if !changed {
            return;
        }
        let counting = self.config.as_ref().is_some_and(|c| !c.is_noop());
        let picker: Arc<dyn Picker> = if counting {
            let counters = self
                .tracking
                .subchannels
                .iter()
                .filter_map(|(id, t)| {
                    let info = self
                        .tracking
                        .addresses
                        .get(&t.subchannel.address().address)?;
                    Some((*id, info.counter.clone()))
                })
                .collect();
            Arc::new(CountingPicker {
                child: state.picker.clone(),
                counters,
            })
        } else {
            state.picker.clone()
        };
        controller.update_picker(LbState {
            connectivity_state: state.connectivity_state,
            picker,
        });
    }

    /// Tells the child that subchannel `id` is ejected (TRANSIENT_FAILURE) or, on
    /// un-ejection, its real state. Does nothing if the child already sees that.
    fn set_ejected(
        &mut self,
        id: SubchannelId,
        ejected: bool,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) {
        let Some(tracked) = self.tracking.subchannels.get_mut(&id) else {
            return;
        };
        if tracked.ejected == ejected || tracked.subchannel.is_shut_down() {
            return;
        }
        tracked.ejected = ejected;
        let subchannel = tracked.subchannel.clone();
        let state = if ejected {
            SubchannelState::failure(Status::unavailable(format!(
                "ejected by outlier detection: {}",
                subchannel.address()
            )))
        } else {
            tracked.real.clone()
        };
        self.group.subchannel_update(
            &subchannel,
            &state,
            &mut TrackingController {
                parent: controller,
                tracking: &mut self.tracking,
            },
            now,
        );
    }

    /// Ejects or un-ejects every subchannel of `address` in the child's view.
    fn set_address_ejected(
        &mut self,
        address: &str,
        ejected: bool,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) {
        let ids: Vec<SubchannelId> = self
            .tracking
            .subchannels
            .iter()
            .filter(|(_, t)| t.subchannel.address().address == address)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.set_ejected(id, ejected, controller, now);
        }
    }

    /// Forgets subchannels the child has shut down.
    fn prune(&mut self) {
        self.tracking
            .subchannels
            .retain(|_, t| !t.subchannel.is_shut_down());
    }

    /// Applies a new config's timer rules (A50): pass-through stops the timer and
    /// un-ejects everything; otherwise the timer keeps its start, or starts now with
    /// fresh counters.
    fn apply_timer(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        let Some(config) = &self.config else {
            return;
        };
        if config.is_noop() {
            self.interval_start = None;
            self.next_sweep = None;
            let ejected = self.ejected_addresses();
            for info in self.tracking.addresses.values_mut() {
                info.ejected_at = None;
                info.ejection_multiplier = 0;
            }
            for address in ejected {
                self.set_address_ejected(&address, false, controller, now);
            }
            return;
        }
        let start = match self.interval_start {
            Some(start) => start,
            None => {
                for info in self.tracking.addresses.values() {
                    info.counter.clear();
                }
                self.interval_start = Some(now);
                now
            }
        };
        let due = start.checked_add(config.interval).map(|due| due.max(now));
        if due != self.next_sweep {
            self.next_sweep = due;
            if let Some(due) = due {
                controller.wake_at(due);
            }
        }
    }

    /// The interval sweep: swap counters, eject outliers, un-eject the expired, and
    /// schedule the next sweep.
    fn sweep(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        let Some(config) = self.config.clone() else {
            return;
        };
        self.interval_start = Some(now);
        for info in self.tracking.addresses.values_mut() {
            info.last = info.counter.swap();
        }
        let mut newly_ejected = Vec::new();
        if let Some(sre) = config.success_rate_ejection {
            newly_ejected.extend(self.success_rate(&config, &sre, now));
        }
        if let Some(fpe) = config.failure_percentage_ejection {
            newly_ejected.extend(self.failure_percentage(&config, &fpe, now));
        }
        let mut unejected = Vec::new();
        for (address, info) in &mut self.tracking.addresses {
            match info.ejected_at {
                None => info.ejection_multiplier = info.ejection_multiplier.saturating_sub(1),
                Some(at) => {
                    let ends = at.checked_add(config.ejection_time(info.ejection_multiplier));
                    if ends.is_some_and(|ends| now >= ends) {
                        info.ejected_at = None;
                        unejected.push(address.clone());
                    }
                }
            }
        }
        for address in newly_ejected {
            if let Some(info) = self.tracking.addresses.get(&address) {
                log::info!(
                    "channel {}: outlier_detection: ejecting {address} (time {}, last interval {} ok, {} failed)",
                    self.options.channelz.target(),
                    info.ejection_multiplier,
                    info.last.0,
                    info.last.1
                );
            }
            self.set_address_ejected(&address, true, controller, now);
        }
        for address in unejected {
            log::info!(
                "channel {}: outlier_detection: {address} returns from ejection",
                self.options.channelz.target()
            );
            self.set_address_ejected(&address, false, controller, now);
        }
        self.next_sweep = now.checked_add(config.interval);
        if let Some(due) = self.next_sweep {
            controller.wake_at(due);
        }
    }

    /// The addresses with at least `volume` calls in the last interval, if at least
    /// `minimum_hosts` of them have (else none).
    fn candidates(&self, volume: u32, minimum_hosts: u32) -> Vec<String> {
        let candidates: Vec<String> = self
            .tracking
            .addresses
            .iter()
            .filter(|(_, a)| a.volume() >= u64::from(volume))
            .map(|(addr, _)| addr.clone())
            .collect();
        if candidates.len() < minimum_hosts as usize {
            return Vec::new();
        }
        candidates
    }

    /// Whether `maxEjectionPercent` forbids another ejection.
    fn at_max_ejections(&self, config: &OutlierDetectionConfig) -> bool {
        let total = self.tracking.addresses.len() as u64;
        let ejected = self
            .tracking
            .addresses
            .values()
            .filter(|a| a.ejected_at.is_some())
            .count() as u64;
        ejected * 100 >= u64::from(config.max_ejection_percent) * total
    }

    /// Ejects, in address order, each candidate not ejected yet that `is_outlier`,
    /// with probability `enforcement` percent, until `maxEjectionPercent` is reached.
    /// Returns the addresses it ejected.
    fn eject_outliers(
        &mut self,
        config: &OutlierDetectionConfig,
        candidates: Vec<String>,
        enforcement: u32,
        now: Instant,
        is_outlier: impl Fn(&AddressInfo) -> bool,
    ) -> Vec<String> {
        let mut ejected = Vec::new();
        for address in candidates {
            if self.at_max_ejections(config) {
                break;
            }
            let Some(info) = self.tracking.addresses.get(&address) else {
                continue;
            };
            if info.ejected_at.is_some() || !is_outlier(info) {
                continue;
            }
            // Drawn for every detection, enforced or not, as grpc-go does.
            if self.options.random.below(100) as u32 >= enforcement {
                continue;
            }
            if let Some(info) = self.tracking.addresses.get_mut(&address) {
                info.ejected_at = Some(now);
                info.ejection_multiplier = info.ejection_multiplier.saturating_add(1);
                ejected.push(address);
            }
        }
        ejected
    }

    /// Success-rate ejection: outliers are below `mean − stdev × stdevFactor / 1000`
    /// of the candidates' success rates.
    fn success_rate(
        &mut self,
        config: &OutlierDetectionConfig,
        sre: &SuccessRateEjection,
        now: Instant,
    ) -> Vec<String> {
        let candidates = self.candidates(sre.request_volume, sre.minimum_hosts);
        if candidates.is_empty() {
            return Vec::new();
        }
        let rates: Vec<f64> = candidates
            .iter()
            .map(|a| self.tracking.addresses[a].success_rate())
            .collect();
        let n = rates.len() as f64;
        let mean = rates.iter().sum::<f64>() / n;
        let variance = rates.iter().map(|r| (r - mean) * (r - mean)).sum::<f64>() / n;
        let required = mean - variance.sqrt() * (f64::from(sre.stdev_factor) / 1000.0);
        self.eject_outliers(config, candidates, sre.enforcement_percentage, now, |a| {
            a.success_rate() < required
        })
    }

    /// Failure-percentage ejection: outliers fail more than `threshold` percent.
    fn failure_percentage(
        &mut self,
        config: &OutlierDetectionConfig,
        fpe: &FailurePercentageEjection,
        now: Instant,
    ) -> Vec<String> {
        let candidates = self.candidates(fpe.request_volume, fpe.minimum_hosts);
        let threshold = f64::from(fpe.threshold);
        self.eject_outliers(config, candidates, fpe.enforcement_percentage, now, |a| {
            a.failure_percentage() > threshold
        })
    }
}

impl LbPolicy for OutlierDetection {
    fn resolver_update(
        &mut self,
        update: ResolverUpdate,
        config: Option<&LbConfig>,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) -> Result<(), UpdateError> {
        if self.closed {
            return Ok(());
        }
        let Some(config) = config.and_then(|c| c.downcast_ref::<OutlierDetectionConfig>()) else {
            return Err(UpdateError::Config(ConfigError::new(
                "",
                format!("{NAME} needs an outlier_detection config"),
            )));
        };
        let config = config.clone();
        if !self.group.is_active(CHILD) {
            // The group is open and has no child yet: cannot fail.
            let _ = self.group.add(CHILD, &config.child_policy);
        }
        if let Err(status) = &update.endpoints {
            // The child keeps its addresses (and this policy their counters); it
            // publishes the error if it has nothing better.
            let status = status.clone();
            self.with_child(controller, now, false, |group, cc| {
                group.resolver_error(&status, cc, now);
            });
            return Ok(());
        }
        let was_noop = self.config.as_ref().map(OutlierDetectionConfig::is_noop);
        let addresses: BTreeSet<String> = update
            .endpoints
            .as_ref()
            .map(|e| flatten_addresses(e))
            .unwrap_or_default()
            .into_iter()
            .map(|a| a.address)
            .collect();
        let before = self.tracking.addresses.len();
        self.tracking
            .addresses
            .retain(|addr, _| addresses.contains(addr));
        let mut addresses_changed = self.tracking.addresses.len() != before;
        for address in addresses {
            if let std::collections::btree_map::Entry::Vacant(v) =
                self.tracking.addresses.entry(address)
            {
                v.insert(AddressInfo::default());
                addresses_changed = true;
            }
        }
        let noop_changed = was_noop != Some(config.is_noop());
        let child_policy = config.child_policy.clone();
        self.config = Some(config);
        self.prune();
        self.apply_timer(controller, now);

        let force = addresses_changed || noop_changed;
        let result = self.with_child(controller, now, force, |group, cc| {
            group.update(CHILD, update, &child_policy, cc, now)
        });
        // Subchannels of addresses that left the update can no longer be un-ejected
        // by a sweep: give the child their real state back.
        let orphans: Vec<SubchannelId> = self
            .tracking
            .subchannels
            .iter()
            .filter(|(_, t)| {
                t.ejected
                    && !self
                        .tracking
                        .addresses
                        .contains_key(&t.subchannel.address().address)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in orphans {
            self.set_ejected(id, false, controller, now);
        }
        self.publish(false, controller);
        result
    }

    fn subchannel_update(
        &mut self,
        subchannel: &Subchannel,
        state: &SubchannelState,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) {
        if self.closed {
            return;
        }
        if let Some(tracked) = self.tracking.subchannels.get_mut(&subchannel.id()) {
            tracked.real = state.clone();
            let shutdown = state.connectivity_state == ConnectivityState::Shutdown;
            if shutdown {
                self.tracking.subchannels.remove(&subchannel.id());
            } else if tracked.ejected {
                // The child keeps seeing TRANSIENT_FAILURE until un-ejection replays
                // this state.
                return;
            }
        }
        self.with_child(controller, now, false, |group, cc| {
            group.subchannel_update(subchannel, state, cc, now);
        });
    }

    fn work(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        if self.closed {
            return;
        }
        self.with_child(controller, now, false, |group, cc| group.work(cc, now));
        if self.next_sweep.is_some_and(|due| now >= due) {
            self.prune();
            self.sweep(controller, now);
            self.publish(false, controller);
        }
    }

    fn exit_idle(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        if self.closed {
            return;
        }
        self.with_child(controller, now, false, |group, cc| group.exit_idle(cc, now));
    }

    fn close(&mut self) {
        self.closed = true;
        self.group.close();
        self.tracking = Tracking::default();
    }

    fn describe(&self, view: &mut PolicyView) {
        view.config = self.config.as_ref().map(|c| format!("{c:?}"));
        let ejected = self.ejected_addresses();
        view.detail("ejected", ejected.len());
        view.tables.push(Table {
            title: "addresses".into(),
            columns: [
                "address",
                "ejected",
                "multiplier",
                "last interval ok",
                "last interval failed",
            ]
            .map(String::from)
            .to_vec(),
            rows: self
                .tracking
                .addresses
                .iter()
                .map(|(address, a)| {
                    vec![
                        address.clone(),
                        a.ejected_at.is_some().to_string(),
                        a.ejection_multiplier.to_string(),
                        a.last.0.to_string(),
                        a.last.1.to_string(),
                    ]
                })
                .collect(),
        });
        if let Some(mut child) = self.group.describe_child(CHILD) {
            // The child shows ejected subchannels in TRANSIENT_FAILURE; say why.
            mark_ejected(&mut child, &ejected);
            view.children.push(child);
        }
    }
}

/// Marks the subchannels of `ejected` addresses anywhere in `view`'s tree.
fn mark_ejected(view: &mut PolicyView, ejected: &[String]) {
    for sc in &mut view.subchannels {
        if ejected.contains(&sc.address) {
            sc.details.push(("ejected".into(), "true".into()));
        }
    }
    for child in &mut view.children {
        mark_ejected(child, ejected);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejection_time_grows_with_the_multiplier_up_to_the_cap() {
        let registry = LbPolicyRegistry::with_builtins();
        let json = serde_json::json!({
            "baseEjectionTime": "10s", "maxEjectionTime": "25s",
            "childPolicy": [{"round_robin": {}}],
        });
        let c = parse_config(&json, &registry).unwrap();
        let secs: Vec<u64> = (0..5).map(|m| c.ejection_time(m).as_secs()).collect();
        assert_eq!(secs, [0, 10, 20, 25, 25]);
        let json = serde_json::json!({
            "baseEjectionTime": "40s", "maxEjectionTime": "25s",
            "childPolicy": [{"round_robin": {}}],
        });
        let c = parse_config(&json, &registry).unwrap();
        assert_eq!(
            c.ejection_time(3),
            Duration::from_secs(40),
            "a base longer than the max wins"
        );
    }

    #[test]
    fn counter_buckets_alternate() {
        let c = CallCounter::default();
        for _ in 0..3 {
            c.record(false);
        }
        assert_eq!(c.swap(), (0, 3));
        c.record(true);
        assert_eq!(c.swap(), (1, 0));
        c.record(true);
        c.clear();
        assert_eq!(c.swap(), (0, 0));
    }

    #[test]
    fn counter_counts_from_many_threads() {
        let c = Arc::new(CallCounter::default());
        std::thread::scope(|s| {
            for t in 0..4 {
                let c = c.clone();
                s.spawn(move || {
                    for i in 0..1000 {
                        c.record((i + t) % 2 == 0);
                    }
                });
            }
        });
        assert_eq!(c.swap(), (2000, 2000));
    }
}
