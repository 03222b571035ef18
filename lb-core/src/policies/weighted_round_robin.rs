//! `weighted_round_robin` (gRFC A58): round robin whose shares follow the load that
//! backends report through ORCA ([`crate::orca`]).
//!
//! ```text
//!   backends ──ORCA reports──> per-endpoint atomics (latest weight, "fresh" flag)
//!     per call: the picker's on_complete            │
//!     or out of band: Subchannel::request_oob_reports (listener on the serializer)
//!                                                   │ every weightUpdatePeriod:
//!                                                   v work(now) via wake_at
//!   policy (serializer): stamps fresh weights with `now`, applies blackout and
//!   expiry, scales them to u16 ─> new WrrPicker { subchannels, weights, counter }
//!                                                   │
//!   app threads: pick = counter shard + static-stride schedule (atomics only)
//! ```
//!
//! - Connectivity, stickiness and re-resolution are `round_robin`'s: this policy wraps
//!   a [`RoundRobin`] and replaces its READY picker with a weighted one.
//! - A report gives the weight `qps / (utilization + eps / qps × errorUtilizationPenalty)`,
//!   where utilization is `application_utilization`, or `cpu_utilization` when that is
//!   0; a report with no qps or no utilization is ignored.
//! - A weight counts only after `blackoutPeriod` of reports since the endpoint last had
//!   none (it goes back to none when it becomes READY again, or when its last report is
//!   `weightExpirationPeriod` old). Endpoints without a usable weight get the mean of
//!   the others. With fewer than two usable weights, or all equal, calls go in plain
//!   round robin.
//! - The schedule is the static-stride earliest-deadline-first of grpc-go: weights are
//!   scaled so the largest is `u16::MAX`; the counter's value `k` over `n` endpoints is
//!   endpoint `k % n` in generation `k / n`, and that endpoint takes the call when its
//!   stride crosses a multiple of `u16::MAX` in that generation (the largest always
//!   does, so a pick looks at most `n` positions). Each thread has its own counter
//!   shard ([`RoundRobinCounter`]), so picks write no shared memory.
//!
//! Time is an argument: reports carry no time. They set a "fresh" flag, and the
//! policy's next `work(now)` (every `weightUpdatePeriod`) stamps them with `now`. So
//! blackout and expiry are measured in whole update periods (grpc-go stamps each report
//! as it arrives).
//!
//! ```
//! use lb_core::LbPolicyRegistry;
//! let registry = LbPolicyRegistry::with_builtins();
//! let json = serde_json::json!([{"weighted_round_robin": {"blackoutPeriod": "1s"}}]);
//! assert_eq!(registry.parse_load_balancing_config(&json)?.name(), "weighted_round_robin");
//! let bad = serde_json::json!([{"weighted_round_robin": {"errorUtilizationPenalty": -1}}]);
//! let err = registry.parse_load_balancing_config(&bad).unwrap_err();
//! assert_eq!(err.to_string(), "[0].weighted_round_robin.errorUtilizationPenalty: must be at least 0, not -1");
//! # Ok::<(), lb_core::ConfigError>(())
//! ```

use crate::picker::CallCompletion;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::{ConfigError, Fields};
use crate::orca::{self, OrcaLoadReport};
use crate::picker::{Pick, PickInfo, PickResult, Picker, RoundRobinCounter};
use crate::policies::round_robin::RoundRobin;
use crate::policy::{
    ChannelController, LbConfig, LbPolicy, LbPolicyBuilder, LbPolicyOptions, LbState, UpdateError,
};
use crate::registry::LbPolicyRegistry;
use crate::resolver::ResolverUpdate;
use crate::state::ConnectivityState;
use crate::status::Status;
use crate::subchannel::{Subchannel, SubchannelId, SubchannelState};

/// The policy's registered name.
pub const NAME: &str = "weighted_round_robin";

/// The shortest `weightUpdatePeriod`; shorter configured periods are raised to it.
pub const MIN_WEIGHT_UPDATE_PERIOD: Duration = Duration::from_millis(100);

/// The `weighted_round_robin` config (gRFC A58), with its JSON field names.
///
/// ```
/// use lb_core::policies::weighted_round_robin::WeightedRoundRobinConfig;
/// use std::time::Duration;
/// let json = serde_json::json!({"weightUpdatePeriod": "0.01s", "enableOobLoadReport": true});
/// let c = WeightedRoundRobinConfig::parse(&json)?;
/// assert_eq!(c.weight_update_period, Duration::from_millis(100)); // raised to the minimum
/// assert!(c.enable_oob_load_report);
/// assert_eq!(c.blackout_period, Duration::from_secs(10));
/// # Ok::<(), lb_core::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct WeightedRoundRobinConfig {
    /// `enableOobLoadReport` (default false): weights from out-of-band reports
    /// instead of per-call trailers.
    pub enable_oob_load_report: bool,
    /// `oobReportingPeriod` (default 10 s): the out-of-band report interval asked for.
    pub oob_reporting_period: Duration,
    /// `blackoutPeriod` (default 10 s; 0 turns it off): how long an endpoint must report
    /// before its weight counts.
    pub blackout_period: Duration,
    /// `weightExpirationPeriod` (default 3 min; 0 turns it off): a weight this old is
    /// dropped.
    pub weight_expiration_period: Duration,
    /// `weightUpdatePeriod` (default 1 s, at least 100 ms): how often the schedule is
    /// rebuilt.
    pub weight_update_period: Duration,
    /// `errorUtilizationPenalty` (default 1.0, at least 0): how much errors per query
    /// add to utilization.
    pub error_utilization_penalty: f64,
}

impl Default for WeightedRoundRobinConfig {
    fn default() -> Self {
        Self {
            enable_oob_load_report: false,
            oob_reporting_period: Duration::from_secs(10),
            blackout_period: Duration::from_secs(10),
            weight_expiration_period: Duration::from_secs(180),
            weight_update_period: Duration::from_secs(1),
            error_utilization_penalty: 1.0,
        }
    }
}

impl WeightedRoundRobinConfig {
    /// Parses the JSON config (unknown fields ignored, defaults for missing ones).
    ///
    /// # Errors
    ///
    /// A field has the wrong type or a bad value; the error names it.
    pub fn parse(json: &serde_json::Value) -> Result<Self, ConfigError> {
        let f = Fields::new(json, "")?;
        let d = Self::default();
        let penalty = f
            .f64("errorUtilizationPenalty")?
            .unwrap_or(d.error_utilization_penalty);
        // JSON numbers are never NaN.
        if penalty < 0.0 {
            return Err(ConfigError::new(
                "errorUtilizationPenalty",
                format!("must be at least 0, not {penalty}"),
            ));
        }
        Ok(Self {
            enable_oob_load_report: f
                .bool("enableOobLoadReport")?
                .unwrap_or(d.enable_oob_load_report),
            oob_reporting_period: f
                .duration("oobReportingPeriod")?
                .unwrap_or(d.oob_reporting_period),
            blackout_period: f.duration("blackoutPeriod")?.unwrap_or(d.blackout_period),
            weight_expiration_period: f
                .duration("weightExpirationPeriod")?
                .unwrap_or(d.weight_expiration_period),
            weight_update_period: f
                .duration("weightUpdatePeriod")?
                .unwrap_or(d.weight_update_period)
                .max(MIN_WEIGHT_UPDATE_PERIOD),
            error_utilization_penalty: penalty,
        })
    }
}

/// Builds [`WeightedRoundRobin`].
#[derive(Clone, Copy, Debug, Default)]
pub struct WeightedRoundRobinBuilder;

impl LbPolicyBuilder for WeightedRoundRobinBuilder {
    fn name(&self) -> &'static str {
        NAME
    }

    fn build(&self, options: LbPolicyOptions) -> Box<dyn LbPolicy> {
        Box::new(WeightedRoundRobin::new(options))
    }

    fn parse_config(
        &self,
        config: &serde_json::Value,
        _: &LbPolicyRegistry,
    ) -> Result<LbConfig, ConfigError> {
        WeightedRoundRobinConfig::parse(config).map(LbConfig::new)
    }
}

/// The weight one report gives (gRFC A58), or `None` when it says nothing usable.
///
/// ```
/// use lb_core::orca::OrcaLoadReport;
/// use lb_core::policies::weighted_round_robin::weight_of;
/// let r = OrcaLoadReport { rps_fractional: 100.0, cpu_utilization: 0.5, eps: 10.0, ..Default::default() };
/// assert_eq!(weight_of(&r, 1.0), Some(100.0 / (0.5 + 0.1)));
/// let app = OrcaLoadReport { application_utilization: 0.25, ..r.clone() };
/// assert_eq!(weight_of(&app, 0.0), Some(400.0)); // application utilization wins
/// assert_eq!(weight_of(&OrcaLoadReport { rps_fractional: 0.0, ..r }, 1.0), None);
/// ```
pub fn weight_of(report: &OrcaLoadReport, error_utilization_penalty: f64) -> Option<f64> {
    let utilization = if report.application_utilization > 0.0 {
        report.application_utilization
    } else {
        report.cpu_utilization
    };
    let qps = report.rps_fractional;
    if !(utilization > 0.0 && qps > 0.0) {
        return None;
    }
    let weight = qps / (utilization + report.eps / qps * error_utilization_penalty);
    (weight.is_finite() && weight > 0.0).then_some(weight)
}

/// The latest reported weight of one endpoint, written by any thread (a call's
/// completion, the out-of-band listener) and taken by the policy.
#[derive(Debug, Default)]
struct Reported {
    weight_bits: AtomicU64,
    fresh: AtomicBool,
}

impl Reported {
    fn record(&self, report: &OrcaLoadReport, penalty: f64) {
        if let Some(weight) = weight_of(report, penalty) {
            self.weight_bits.store(weight.to_bits(), Ordering::Relaxed);
            self.fresh.store(true, Ordering::Release);
        }
    }

    fn record_status(&self, status: &Status, penalty: f64) {
        if let Some(Ok(report)) = orca::report_from(status) {
            self.record(&report, penalty);
        }
    }

    /// The weight reported since the last take, if any.
    fn take(&self) -> Option<f64> {
        self.fresh
            .swap(false, Ordering::Acquire)
            .then(|| f64::from_bits(self.weight_bits.load(Ordering::Relaxed)))
    }
}

/// The policy's view of one endpoint's weight (serializer only).
#[derive(Debug)]
struct Endpoint {
    reported: Arc<Reported>,
    weight: f64,
    non_empty_since: Option<Instant>,
    last_updated: Option<Instant>,
    ready: bool,
    /// The out-of-band period asked for, while asked.
    oob: Option<Duration>,
}

impl Endpoint {
    fn new() -> Self {
        Self {
            reported: Arc::default(),
            weight: 0.0,
            non_empty_since: None,
            last_updated: None,
            ready: false,
            oob: None,
        }
    }

    /// Takes a fresh report and answers the weight usable at `now` (0: none).
    #[cfg(test)]
    fn weight_at(&mut self, now: Instant, cfg: &WeightedRoundRobinConfig) -> f64 {
        self.weigh(now, cfg).0
    }

    /// Takes a fresh report and answers the weight usable at `now` (0: none), and
    /// why it is 0 (for gRFC A78's metrics).
    fn weigh(&mut self, now: Instant, cfg: &WeightedRoundRobinConfig) -> (f64, Usability) {
        if let Some(w) = self.reported.take() {
            self.weight = w;
            self.last_updated = Some(now);
            self.non_empty_since.get_or_insert(now);
        }
        let Some(last) = self.last_updated else {
            return (0.0, Usability::NotYetUsable);
        };
        let expiry = cfg.weight_expiration_period;
        if !expiry.is_zero() && now.saturating_duration_since(last) >= expiry {
            self.non_empty_since = None;
            return (0.0, Usability::Stale);
        }
        let blackout = cfg.blackout_period;
        match self.non_empty_since {
            _ if blackout.is_zero() => (self.weight, Usability::Usable),
            Some(since) if now.saturating_duration_since(since) >= blackout => {
                (self.weight, Usability::Usable)
            }
            _ => (0.0, Usability::NotYetUsable),
        }
    }
}

/// The `weighted_round_robin` policy. See the [module docs](self).
pub struct WeightedRoundRobin {
    options: LbPolicyOptions,
    rr: RoundRobin,
    config: WeightedRoundRobinConfig,
    endpoints: HashMap<SubchannelId, Endpoint>,
    /// The state `round_robin` last published, and whether it is not passed on yet.
    inner: Option<LbState>,
    inner_fresh: bool,
    /// What the published picker was built from: the READY set and its weights.
    published: Option<(Vec<Subchannel>, Schedule)>,
    next_update: Option<Instant>,
}

impl std::fmt::Debug for WeightedRoundRobin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightedRoundRobin")
            .field("config", &self.config)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// Scaled weights in READY order; `None`: plain round robin.
type Schedule = Option<Box<[u16]>>;

/// Passes everything to the channel but `update_picker`, which it keeps.
struct Intercept<'a> {
    parent: &'a mut dyn ChannelController,
    state: Option<LbState>,
}

impl ChannelController for Intercept<'_> {
    fn new_subchannel(&mut self, address: &crate::Address) -> Subchannel {
        self.parent.new_subchannel(address)
    }
    fn update_picker(&mut self, state: LbState) {
        self.state = Some(state);
    }
    fn request_resolution(&mut self) {
        self.parent.request_resolution();
    }
    fn wake_at(&mut self, deadline: Instant) {
        self.parent.wake_at(deadline);
    }
}

impl WeightedRoundRobin {
    /// A policy with no addresses yet.
    pub fn new(options: LbPolicyOptions) -> Self {
        Self {
            rr: RoundRobin::new(options.clone()),
            options,
            config: WeightedRoundRobinConfig::default(),
            endpoints: HashMap::new(),
            inner: None,
            inner_fresh: false,
            published: None,
            next_update: None,
        }
    }

    /// Runs `f` on the wrapped `round_robin`, keeping what it publishes.
    fn with_rr<T>(
        &mut self,
        controller: &mut dyn ChannelController,
        f: impl FnOnce(&mut RoundRobin, &mut dyn ChannelController) -> T,
    ) -> T {
        let mut intercept = Intercept {
            parent: controller,
            state: None,
        };
        let out = f(&mut self.rr, &mut intercept);
        if let Some(state) = intercept.state {
            self.inner = Some(state);
            self.inner_fresh = true;
        }
        out
    }

    /// Starts or stops out-of-band reports to match the config.
    fn sync_oob(&mut self, subchannel: &Subchannel) {
        let Some(ep) = self.endpoints.get_mut(&subchannel.id()) else {
            return;
        };
        let want = self
            .config
            .enable_oob_load_report
            .then_some(self.config.oob_reporting_period);
        if ep.oob == want {
            return;
        }
        ep.oob = want;
        match want {
            Some(period) => {
                let reported = ep.reported.clone();
                let penalty = self.config.error_utilization_penalty;
                subchannel.request_oob_reports(
                    period,
                    Arc::new(move |report| reported.record(report, penalty)),
                );
            }
            None => subchannel.stop_oob_reports(),
        }
    }

    /// Publishes `round_robin`'s state, with a weighted picker when READY, if it
    /// differs from the last one.
    fn publish(&mut self, controller: &mut dyn ChannelController, now: Instant, force: bool) {
        let Some(inner) = &self.inner else { return };
        let force = force || std::mem::take(&mut self.inner_fresh);
        if inner.connectivity_state != ConnectivityState::Ready {
            if force {
                self.published = None;
                controller.update_picker(inner.clone());
            }
            return;
        }
        let ready = self.rr.ready().to_vec();
        let cfg = &self.config;
        let (raw, usability): (Vec<f64>, Vec<Usability>) = ready
            .iter()
            .map(|sc| {
                self.endpoints
                    .get_mut(&sc.id())
                    .map_or((0.0, Usability::NotYetUsable), |ep| ep.weigh(now, cfg))
            })
            .unzip();
        record_metrics(&self.options.metrics, &raw, &usability);
        let weights = scale_weights(&raw);
        if !force
            && self
                .published
                .as_ref()
                .is_some_and(|(r, w)| *r == ready && *w == weights)
        {
            return;
        }
        let per_call = (!cfg.enable_oob_load_report).then(|| {
            ready
                .iter()
                .map(|sc| {
                    self.endpoints
                        .get(&sc.id())
                        .map_or_else(Arc::default, |ep| ep.reported.clone())
                })
                .collect()
        });
        let start = self
            .options
            .random
            .below(ready.len() * usize::from(u16::MAX));
        let picker = WrrPicker {
            subchannels: ready.clone(),
            weights: weights.clone(),
            per_call,
            penalty: cfg.error_utilization_penalty,
            next: RoundRobinCounter::new(start),
        };
        self.published = Some((ready, weights));
        controller.update_picker(LbState {
            connectivity_state: ConnectivityState::Ready,
            picker: Arc::new(picker),
        });
    }

    fn schedule_update(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        if self.next_update.is_none_or(|t| t <= now) {
            let at = now + self.config.weight_update_period;
            self.next_update = Some(at);
            controller.wake_at(at);
        }
    }
}

impl LbPolicy for WeightedRoundRobin {
    fn resolver_update(
        &mut self,
        update: ResolverUpdate,
        config: Option<&LbConfig>,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) -> Result<(), UpdateError> {
        let new_config = config
            .and_then(|c| c.downcast_ref::<WeightedRoundRobinConfig>())
            .cloned()
            .unwrap_or_default();
        let config_changed = new_config != self.config;
        if new_config.weight_update_period != self.config.weight_update_period {
            self.next_update = None;
        }
        self.config = new_config;
        let result = self.with_rr(controller, |rr, c| rr.resolver_update(update, None, c, now));
        let subchannels: Vec<Subchannel> = self.rr.subchannels().cloned().collect();
        self.endpoints
            .retain(|id, _| subchannels.iter().any(|s| s.id() == *id));
        for sc in &subchannels {
            let ep = self.endpoints.entry(sc.id()).or_insert_with(Endpoint::new);
            if ep.ready {
                self.sync_oob(sc);
            }
        }
        self.schedule_update(controller, now);
        self.publish(controller, now, config_changed);
        result
    }

    fn subchannel_update(
        &mut self,
        subchannel: &Subchannel,
        state: &SubchannelState,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) {
        if !self.rr.subchannels().any(|s| s == subchannel) {
            return;
        }
        let ready = state.connectivity_state == ConnectivityState::Ready;
        let ep = self
            .endpoints
            .entry(subchannel.id())
            .or_insert_with(Endpoint::new);
        if ready && !ep.ready {
            // A reconnected endpoint goes through the blackout again.
            ep.non_empty_since = None;
        }
        ep.ready = ready;
        if ready {
            self.sync_oob(subchannel);
        }
        self.with_rr(controller, |rr, c| {
            rr.subchannel_update(subchannel, state, c, now);
        });
        self.publish(controller, now, false);
    }

    fn work(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        if self.next_update.is_some_and(|t| t <= now) {
            self.schedule_update(controller, now);
            self.publish(controller, now, false);
        }
    }

    fn exit_idle(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        self.with_rr(controller, |rr, c| rr.exit_idle(c, now));
        self.publish(controller, now, false);
    }

    fn close(&mut self) {
        self.rr.close();
        self.endpoints.clear();
    }

    fn describe(&self, view: &mut crate::channelz::PolicyView) {
        self.rr.describe(view);
        view.config = Some(format!("{:?}", self.config));
        let scheduled = self.published.as_ref().filter(|(_, s)| s.is_some());
        view.detail(
            "schedule",
            if scheduled.is_some() {
                "weighted"
            } else {
                "plain round robin (fewer than two distinct weights)"
            },
        );
        for sc in &mut view.subchannels {
            let Some(e) = self.endpoints.get(&SubchannelId(sc.id)) else {
                continue;
            };
            sc.details
                .push(("weight".into(), format!("{:.3}", e.weight)));
            if let Some((ready, Some(scaled))) = &self.published {
                if let Some(i) = ready.iter().position(|r| r.id().0 == sc.id) {
                    sc.details
                        .push(("scheduled weight".into(), scaled[i].to_string()));
                }
            }
            if let Some(period) = e.oob {
                sc.details
                    .push(("oob reports every".into(), format!("{period:?}")));
            }
        }
    }
}

/// Whether an endpoint's weight counts at a scheduler update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Usability {
    Usable,
    /// No report yet, or still in the blackout period.
    NotYetUsable,
    /// The latest report is older than the expiration period.
    Stale,
}

/// gRFC A78's `grpc.lb.wrr.*` for one scheduler update: each endpoint's weight (0
/// when unusable), how many were not yet usable or stale, and whether too few had a
/// weight and the picker falls back to round robin. `grpc.lb.locality` is recorded
/// empty (no parent sets it here yet).
fn record_metrics(metrics: &crate::metrics::Metrics, weights: &[f64], usability: &[Usability]) {
    use crate::metrics::instruments::{
        WRR_ENDPOINT_WEIGHT_NOT_YET_USABLE, WRR_ENDPOINT_WEIGHT_STALE, WRR_ENDPOINT_WEIGHTS,
        WRR_RR_FALLBACK,
    };
    if !metrics.is_enabled() {
        return;
    }
    let labels = [metrics.target(), ""];
    for w in weights {
        metrics.record_f64_histogram(&WRR_ENDPOINT_WEIGHTS, *w, &labels);
    }
    let count = |u: Usability| usability.iter().filter(|x| **x == u).count() as u64;
    let not_yet = count(Usability::NotYetUsable);
    if not_yet > 0 {
        metrics.add_u64_counter(&WRR_ENDPOINT_WEIGHT_NOT_YET_USABLE, not_yet, &labels);
    }
    let stale = count(Usability::Stale);
    if stale > 0 {
        metrics.add_u64_counter(&WRR_ENDPOINT_WEIGHT_STALE, stale, &labels);
    }
    if weights.iter().filter(|w| **w > 0.0).count() < 2 {
        metrics.add_u64_counter(&WRR_RR_FALLBACK, 1, &labels);
    }
}

/// Scales weights so the largest is `u16::MAX`; unknown (0) weights get the mean of
/// the known ones. `None`: plain round robin (fewer than two known, or all equal).
fn scale_weights(raw: &[f64]) -> Schedule {
    let known: Vec<f64> = raw.iter().copied().filter(|w| *w > 0.0).collect();
    if known.len() < 2 {
        return None;
    }
    let max = known.iter().copied().fold(0.0, f64::max);
    let scale = f64::from(u16::MAX) / max;
    let mean = known.iter().sum::<f64>() / known.len() as f64;
    let to_u16 = |w: f64| ((w * scale).round() as u16).max(1);
    let weights: Box<[u16]> = raw
        .iter()
        .map(|&w| to_u16(if w > 0.0 { w } else { mean }))
        .collect();
    if weights.iter().all(|w| *w == weights[0]) {
        return None;
    }
    Some(weights)
}

/// The weighted picker: READY subchannels, their scaled weights and a sharded counter.
struct WrrPicker {
    subchannels: Vec<Subchannel>,
    /// `None`: plain round robin.
    weights: Schedule,
    /// Per-call reporting: each subchannel's report slot (`None` when out of band).
    per_call: Option<Vec<Arc<Reported>>>,
    penalty: f64,
    next: RoundRobinCounter,
}

impl WrrPicker {
    #[inline]
    fn next_index(&self) -> usize {
        let n = self.subchannels.len();
        let Some(weights) = &self.weights else {
            return self.next.next_below(n);
        };
        const MAX: u64 = u16::MAX as u64;
        const OFFSET: u64 = MAX / 2;
        // Each generation visits every endpoint once; the largest weight (MAX) takes a
        // call in every generation, so this loop ends within n steps.
        loop {
            let k = self.next.next_below(n * MAX as usize) as u64;
            let (i, generation) = (k % n as u64, k / n as u64);
            let w = u64::from(weights[i as usize]);
            if (w * generation + i * OFFSET) % MAX >= MAX - w {
                return i as usize;
            }
        }
    }
}

impl Picker for WrrPicker {
    #[inline]
    fn pick(&self, _: &PickInfo<'_>) -> PickResult<'_> {
        let i = self.next_index();
        let mut pick = Pick::new(&self.subchannels[i]);
        if let Some(slots) = &self.per_call {
            let slot = slots[i].clone();
            let penalty = self.penalty;
            pick.on_complete = Some(Box::new(move |done: &CallCompletion<'_>| {
                slot.record_status(done.status, penalty);
            }));
        }
        PickResult::Pick(pick)
    }
}

/// Makes a weighted picker directly, for benchmarks: `weights[i]` is subchannel `i`'s
/// weight, scaled as the policy does; with `per_call` each pick carries a completion
/// callback that reads the call's ORCA trailer.
///
/// ```
/// # use std::sync::Arc;
/// # use lb_core::{Address, Metadata, PickInfo, Picker, Subchannel, SubchannelBackend, SubchannelId};
/// # struct Nop;
/// # impl SubchannelBackend for Nop {
/// #     fn connect(&self, _: SubchannelId) {}
/// #     fn shutdown(&self, _: SubchannelId) {}
/// #     fn as_any(&self) -> &dyn std::any::Any { self }
/// # }
/// let scs: Vec<_> = (0..2)
///     .map(|i| Subchannel::new(SubchannelId(i), Address::new(format!("a:{i}")), Arc::new(Nop)))
///     .collect();
/// let picker = lb_core::policies::weighted_round_robin::picker(scs, &[3.0, 1.0], false);
/// let md = Metadata::new();
/// let info = PickInfo::new("/s/m", &md);
/// let first = (0..4000).filter(|_| picker.pick(&info).subchannel().unwrap().id().0 == 0).count();
/// assert!((2900..3100).contains(&first), "{first}");
/// ```
///
/// # Panics
///
/// Panics if `subchannels` is empty or `weights` has another length.
pub fn picker(subchannels: Vec<Subchannel>, weights: &[f64], per_call: bool) -> Arc<dyn Picker> {
    assert!(
        !subchannels.is_empty(),
        "a weighted picker needs a subchannel"
    );
    assert_eq!(
        subchannels.len(),
        weights.len(),
        "one weight per subchannel"
    );
    Arc::new(WrrPicker {
        per_call: per_call.then(|| subchannels.iter().map(|_| Arc::default()).collect()),
        subchannels,
        weights: scale_weights(weights),
        penalty: 1.0,
        next: RoundRobinCounter::new(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_follows_grpc_go() {
        assert_eq!(scale_weights(&[]), None);
        assert_eq!(scale_weights(&[5.0, 0.0, 0.0]), None, "one known weight");
        assert_eq!(scale_weights(&[2.0, 2.0]), None, "all equal");
        assert_eq!(
            scale_weights(&[4.0, 2.0, 0.0]).as_deref(),
            Some(&[65535, 32768, 49151][..]),
            "the largest scales to u16::MAX, the unknown gets the mean"
        );
        assert_eq!(
            scale_weights(&[1e9, 1.0]).as_deref(),
            Some(&[65535, 1][..]),
            "never below 1"
        );
    }

    #[test]
    fn blackout_and_expiry_follow_grpc_go() {
        let t0 = Instant::now();
        let cfg = WeightedRoundRobinConfig {
            blackout_period: Duration::from_secs(10),
            weight_expiration_period: Duration::from_secs(180),
            ..Default::default()
        };
        let report = OrcaLoadReport {
            rps_fractional: 10.0,
            cpu_utilization: 0.5,
            ..Default::default()
        };
        let mut ep = Endpoint::new();
        assert_eq!(ep.weight_at(t0, &cfg), 0.0, "never reported");
        ep.reported.record(&report, 1.0);
        assert_eq!(ep.weight_at(t0, &cfg), 0.0, "in blackout");
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(ep.weight_at(at(9), &cfg), 0.0);
        assert_eq!(ep.weight_at(at(10), &cfg), 20.0, "blackout over");
        assert_eq!(ep.weight_at(at(179), &cfg), 20.0);
        assert_eq!(ep.weight_at(at(180), &cfg), 0.0, "expired");
        ep.reported.record(&report, 1.0);
        assert_eq!(
            ep.weight_at(at(181), &cfg),
            0.0,
            "a new blackout after expiry"
        );
        assert_eq!(ep.weight_at(at(191), &cfg), 20.0);
        // Without a blackout, a weight counts even while non_empty_since is unset (as
        // after a reconnect).
        let no_blackout = WeightedRoundRobinConfig {
            blackout_period: Duration::ZERO,
            ..cfg
        };
        ep.non_empty_since = None;
        assert_eq!(ep.weight_at(at(192), &no_blackout), 20.0);
    }

    #[test]
    fn reports_are_taken_once() {
        let r = Reported::default();
        assert_eq!(r.take(), None);
        let report = OrcaLoadReport {
            rps_fractional: 10.0,
            cpu_utilization: 0.5,
            ..Default::default()
        };
        r.record(&report, 1.0);
        assert_eq!(r.take(), Some(20.0));
        assert_eq!(r.take(), None);
        r.record(&OrcaLoadReport::default(), 1.0);
        assert_eq!(r.take(), None, "a report without load is ignored");
    }
}
