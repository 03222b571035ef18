//! The `rls_experimental` policy: the builder an embedding program registers, and
//! the policy that ties the cache, the control channel, the children and the picker
//! together on the channel's serializer.
//!
//! ```text
//!  serializer ─ resolver_update(config) ─┐
//!             ─ subchannel_update ───────┤     ┌── ChildPolicies (BalancerGroup)
//!             ─ work(now) ───────────────┼──> RlsPolicy ──── DataCache ──mirror──> Index
//!             ─ exit_idle / close ───────┘     │     └── ControlChannel ── lookup threads
//!                                              │            ^ events (responses, state)
//!                                              v            │
//!                       update_picker(RlsPicker{Index, child pickers, default target})
//!                                              │
//!  picking threads: hit ── no lock ──> child picker
//!                   miss ─ record request, schedule_work ──> work(now) sends it
//! ```
//!
//! Every method runs on the serializer. What the policy does in `work(now)`, in
//! order: apply control-channel events (lookup results, connectivity), send the
//! requests pickers recorded, run the children's due work, notice backoffs that
//! ended, purge the cache every [`RlsBuilderOptions::purge_interval`]; then publish
//! one picker if anything changed. A config update publishes exactly one picker at
//! its end, however many states the children report meanwhile.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use lb_core::channel::{ChannelFactory, Clock, ResolverRegistry, SystemClock};
use lb_core::channelz::{ChannelRef, PolicyView, Table};
use lb_core::{
    ChannelController, ConfigError, ConnectivityState, LbConfig, LbPolicy, LbPolicyBuilder,
    LbPolicyOptions, LbPolicyRegistry, LbState, RandomSource, ResolverUpdate, SharedRandom, Status,
    Subchannel, SubchannelState, Transport, UpdateError,
};

use crate::cache::{CacheKey, CacheOptions, DataCache, Evicted};
use crate::child_policy::ChildPolicies;
use crate::config::{POLICY_NAME, RlsConfig, RlsConfigOptions};
use crate::control_channel::{
    ControlChannel, ControlChannelConfig, ControlDeps, ControlEvent, ThreadCounter,
};
use crate::metrics::RlsMetrics;
use crate::picker::{EntryView, Index, PendingRequest, PickerShared, RlsPicker};
use crate::proto::{RouteLookupRequest, RouteLookupResponse, TARGET_TYPE_GRPC};
use crate::throttler::{RequestThrottler, Throttler, ThrottlerConfig};

/// How often the cache drops entries whose data and backoff have both expired.
pub const DEFAULT_PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// Makes the throttler of a new control channel; given the time it is made.
pub type ThrottlerFactory = Arc<dyn Fn(Instant) -> Box<dyn RequestThrottler> + Send + Sync>;

/// What the embedding program may set for the RLS policy. Every field has a
/// default ([`RlsBuilderOptions::default`]): the control channel is opened like the
/// channel the policy runs in (its transport, transport options, resolvers and
/// clock, from [`LbPolicyOptions::channels`]), so nothing is required.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use lb_rls::balancer::RlsBuilderOptions;
/// use lb_testkit::InMemoryTransport;
/// let options = RlsBuilderOptions::default();
/// assert!(options.transport.is_none(), "the parent channel's transport");
/// assert_eq!(options.purge_interval.as_secs(), 60);
/// assert_eq!(options.config_options.max_cache_size_bytes, 5 * 1024 * 1024);
/// // An explicit transport for the control channel overrides the channel's.
/// let options = RlsBuilderOptions::new(Arc::new(InMemoryTransport::new()));
/// assert!(options.transport.is_some());
/// ```
#[derive(Clone)]
pub struct RlsBuilderOptions {
    /// Carries the control channel's calls to the RLS server instead of the
    /// transport of the channel the policy runs in (default: `None`, the
    /// channel's).
    pub transport: Option<Arc<dyn Transport>>,
    /// The time the policy, its pickers and its control channel read (default:
    /// the clock of the channel the policy runs in, else [`SystemClock`]). Pickers
    /// read it on every pick, to tell valid, stale and expired entries apart on the
    /// calling thread as grpc-go does. Give tests lb-testkit's `ManualClock`.
    pub clock: Option<Arc<dyn Clock>>,
    /// The cache cap and the `lookupService` schemes configs may use.
    pub config_options: RlsConfigOptions,
    /// Makes each control channel's throttler (default: the adaptive
    /// [`Throttler`] with gRPC's parameters and the policy's random source).
    pub throttler: Option<ThrottlerFactory>,
    /// The cache's minimum eviction age and per-key backoff.
    pub cache: CacheOptions,
    /// How often expired entries are purged ([`DEFAULT_PURGE_INTERVAL`]).
    pub purge_interval: Duration,
}

impl Default for RlsBuilderOptions {
    /// Everything from the channel the policy runs in, gRPC's defaults for the rest.
    fn default() -> Self {
        Self {
            transport: None,
            clock: None,
            config_options: RlsConfigOptions::default(),
            throttler: None,
            cache: CacheOptions::default(),
            purge_interval: DEFAULT_PURGE_INTERVAL,
        }
    }
}

impl RlsBuilderOptions {
    /// The defaults, with `transport` for the control channel instead of the
    /// channel's own (an explicit override; [`default`](Self::default) needs none).
    pub fn new(transport: Arc<dyn Transport>) -> Self {
        Self {
            transport: Some(transport),
            clock: None,
            config_options: RlsConfigOptions::default(),
            throttler: None,
            cache: CacheOptions::default(),
            purge_interval: DEFAULT_PURGE_INTERVAL,
        }
    }
}

impl fmt::Debug for RlsBuilderOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RlsBuilderOptions")
            .field("clock", &self.clock)
            .field("config_options", &self.config_options)
            .field("throttler", &self.throttler.as_ref().map(|_| "custom"))
            .field("cache", &self.cache)
            .field("purge_interval", &self.purge_interval)
            .finish_non_exhaustive()
    }
}

/// Builds `rls_experimental` policies and parses their configs. Cheap to clone;
/// clones share one thread count.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use lb_core::LbPolicyRegistry;
/// use lb_rls::balancer::RlsBuilderOptions;
/// use lb_testkit::InMemoryTransport;
///
/// let mut registry = LbPolicyRegistry::with_builtins();
/// let rls = lb_rls::register(&mut registry, RlsBuilderOptions::new(Arc::new(InMemoryTransport::new())));
/// let json = serde_json::json!([{"rls_experimental": {
///     "routeLookupConfig": {
///         "grpcKeybuilders": [{"names": [{"service": "pkg.Svc"}]}],
///         "lookupService": "passthrough:///rls.example.com:443",
///         "cacheSizeBytes": 1000,
///     },
///     "childPolicy": [{"rls_dial_target": {}}],
///     "childPolicyConfigTargetFieldName": "target",
/// }}]);
/// assert_eq!(registry.parse_load_balancing_config(&json)?.name(), "rls_experimental");
/// assert_eq!(rls.thread_count(), 0);
/// # Ok::<(), lb_core::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RlsBuilder {
    inner: Arc<BuilderInner>,
}

struct BuilderInner {
    options: RlsBuilderOptions,
    threads: ThreadCounter,
}

impl RlsBuilder {
    /// A builder whose policies use `options`.
    pub fn new(options: RlsBuilderOptions) -> Self {
        Self {
            inner: Arc::new(BuilderInner {
                options,
                threads: ThreadCounter::default(),
            }),
        }
    }

    /// The options policies are built with.
    pub fn options(&self) -> &RlsBuilderOptions {
        &self.inner.options
    }

    /// How many threads the policies of this builder (and the `rls_dial_target`
    /// children [`register`](crate::register) installed with it) are running now:
    /// control-channel lookup threads and watchers, and the children's resolvers of
    /// names (see
    /// [`DialTargetBuilder::thread_count`](crate::dial::DialTargetBuilder::thread_count)).
    /// Zero once every policy is closed.
    pub fn thread_count(&self) -> usize {
        self.inner.threads.live()
    }

    pub(crate) fn threads(&self) -> ThreadCounter {
        self.inner.threads.clone()
    }
}

impl fmt::Debug for RlsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RlsBuilder")
            .field("options", &self.inner.options)
            .field("threads", &self.inner.threads.live())
            .finish()
    }
}

impl LbPolicyBuilder for RlsBuilder {
    fn name(&self) -> &'static str {
        POLICY_NAME
    }

    fn build(&self, options: LbPolicyOptions) -> Box<dyn LbPolicy> {
        Box::new(RlsPolicy::new(self.inner.clone(), options))
    }

    fn parse_config(
        &self,
        config: &serde_json::Value,
        registry: &LbPolicyRegistry,
    ) -> Result<LbConfig, ConfigError> {
        RlsConfig::parse(config, registry, &self.inner.options.config_options).map(LbConfig::new)
    }
}

/// A [`SharedRandom`] as an owned [`RandomSource`].
struct SharedSource(SharedRandom);

impl RandomSource for SharedSource {
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
}

/// A version-4 UUID from `random`, naming one policy instance in the metrics.
fn instance_uuid(random: &SharedRandom) -> String {
    let a = (random.next_u64() & !0xf000) | 0x4000;
    let b = (random.next_u64() & !(0b11 << 62)) | (0b10 << 62);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// The `rls_experimental` policy. See the [module docs](self).
pub(crate) struct RlsPolicy {
    builder: Arc<BuilderInner>,
    /// The builder's clock, else the channel's, else real time.
    clock: Arc<dyn Clock>,
    random: SharedRandom,
    shared: Arc<PickerShared>,
    config: Option<Arc<RlsConfig>>,
    /// The last resolver update with endpoints: what new children get.
    last_update: ResolverUpdate,
    cache: DataCache,
    /// The cache as pickers see it; mirrored into the shared slow state.
    index: Arc<Index>,
    children: ChildPolicies,
    /// The target the default slot holds a reference to.
    default_target: Option<Arc<str>>,
    control: Option<ControlChannel>,
    control_deps: ControlDeps,
    generation: u64,
    /// The control channel was in TRANSIENT_FAILURE since it was last READY.
    control_failed: bool,
    events: Receiver<ControlEvent>,
    metrics: Arc<RlsMetrics>,
    /// Ends of backoffs: a new picker is due at each.
    backoff_ends: BTreeSet<Instant>,
    next_purge: Option<Instant>,
    closed: bool,
    /// The channel the policy runs in: log messages name its target.
    channelz: ChannelRef,
}

impl RlsPolicy {
    fn new(builder: Arc<BuilderInner>, options: LbPolicyOptions) -> Self {
        let (events_tx, events): (Sender<ControlEvent>, _) = crossbeam_channel::unbounded();
        let clock: Arc<dyn Clock> = match (&builder.options.clock, &options.channels) {
            (Some(clock), _) => clock.clone(),
            (None, Some(channels)) => channels.clock().clone(),
            (None, None) => Arc::new(SystemClock),
        };
        // The control channel is opened like the channel this policy runs in,
        // through the builder's transport if the program gave one.
        let channels = match (&builder.options.transport, &options.channels) {
            (Some(transport), parent) => Ok(ChannelFactory::new(
                transport.clone(),
                parent
                    .as_ref()
                    .map_or_else(ResolverRegistry::with_builtins, |p| {
                        p.resolver_registry().clone()
                    }),
                clock.clone(),
            )
            .with_transport_options(
                parent
                    .as_ref()
                    .map(|p| p.transport_options().clone())
                    .unwrap_or_default(),
            )),
            (None, Some(parent)) => Ok(ChannelFactory::new(
                parent.transport().clone(),
                parent.resolver_registry().clone(),
                clock.clone(),
            )
            .with_transport_options(parent.transport_options().clone())),
            (None, None) => Err(Status::unavailable(
                "rls: no transport for the control channel: the policy runs outside a \
                 channel, so give one with RlsBuilderOptions::new(transport)",
            )),
        };
        // The first config builds the control channel and its throttler; until
        // then no picker exists to consult this placeholder.
        let shared = Arc::new(PickerShared::new(
            clock.clone(),
            options.authority.clone(),
            options.work_scheduler.clone(),
            Box::new(Unthrottled),
            options.channelz.target(),
        ));
        let cache = DataCache::new(
            builder.options.config_options.max_cache_size_bytes,
            builder.options.cache,
            SharedSource(options.random.clone()),
        );
        let metrics = Arc::new(RlsMetrics::new(
            options.metrics.clone(),
            "",
            instance_uuid(&options.random),
        ));
        let control_deps = ControlDeps {
            channels,
            clock: clock.clone(),
            authority: options.authority.clone(),
            registry: (*options.registry).clone(),
            events: events_tx,
            scheduler: options.work_scheduler.clone(),
            threads: builder.threads.clone(),
            parent: options.channelz.clone(),
        };
        Self {
            channelz: options.channelz.clone(),
            random: options.random.clone(),
            children: ChildPolicies::new(options),
            builder,
            clock,
            shared,
            config: None,
            last_update: ResolverUpdate::from_endpoints(Vec::new()),
            cache,
            index: Arc::new(Index::new()),
            default_target: None,
            control: None,
            control_deps,
            generation: 0,
            control_failed: false,
            events,
            metrics,
            backoff_ends: BTreeSet::new(),
            next_purge: None,
            closed: false,
        }
    }

    /// Promotes, in the cache's LRU order, the entries picks used since last time.
    fn promote_used(&mut self) {
        for view in self.shared.take_used() {
            let _ = self.cache.get(view.key.path(), view.key.keys());
        }
    }

    /// Replaces the control channel (a control-channel field of the config
    /// changed): the old one is closed, its throttler state goes with it, and every
    /// request still pending is sent again on the new one.
    fn rebuild_control_channel(
        &mut self,
        config: &RlsConfig,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) {
        log::info!(
            "channel {}: rls: control channel to {:?} ({})",
            self.channelz.target(),
            config.route_lookup().lookup_service(),
            if self.control.is_some() {
                "rebuilt: its config changed"
            } else {
                "built"
            }
        );
        if let Some(mut old) = self.control.take() {
            old.close();
        }
        self.generation += 1;
        self.control_failed = false;
        self.control = Some(ControlChannel::new(
            &ControlChannelConfig::of(config),
            &self.control_deps,
            self.generation,
        ));
        let resend: Vec<(CacheKey, PendingRequest)> = {
            let mut slow = self.shared.slow.lock();
            slow.throttler = new_throttler(&self.builder, &self.random, now);
            slow.outbox.clear();
            slow.pending
                .iter()
                .map(|(k, r)| (k.clone(), r.clone()))
                .collect()
        };
        for (key, request) in resend {
            // The config update that rebuilt the channel publishes a picker anyway.
            let _ = self.dispatch(key, request, controller, now);
        }
    }

    /// Sends one request on the control channel; a request that cannot be sent
    /// fails at once (and then this returns true: the cache changed).
    fn dispatch(
        &mut self,
        key: CacheKey,
        request: PendingRequest,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) -> bool {
        log::debug!(
            "channel {}: rls: lookup {:?} {:?} ({:?})",
            self.channelz.target(),
            key.path(),
            key.keys().to_string(),
            request.reason
        );
        let message = RouteLookupRequest {
            target_type: TARGET_TYPE_GRPC.to_owned(),
            reason: request.reason,
            stale_header_data: request.stale_header_data,
            key_map: key.keys().clone(),
        };
        let sent = match &mut self.control {
            Some(control) => control.lookup(key.clone(), &message, now),
            None => Err(Status::unavailable("rls: no control channel")),
        };
        match sent {
            Ok(()) => false,
            Err(status) => {
                self.apply_response(key, Err(status), controller, now);
                true
            }
        }
    }

    /// Handles one control-channel event; returns whether a new picker is due.
    fn handle_event(
        &mut self,
        event: ControlEvent,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) -> bool {
        let current = self.control.as_ref().map(ControlChannel::generation);
        match event {
            ControlEvent::Response {
                generation,
                key,
                result,
            } => {
                // A replaced channel's calls were sent again on the new one.
                if Some(generation) != current {
                    return false;
                }
                self.apply_response(key, result, controller, now);
                true
            }
            ControlEvent::State { generation, state } => {
                if Some(generation) != current {
                    return false;
                }
                match state {
                    ConnectivityState::TransientFailure => {
                        self.control_failed = true;
                        false
                    }
                    ConnectivityState::Ready if self.control_failed => {
                        // Failures while the RLS server was unreachable should not
                        // count against the keys: start their backoffs afresh.
                        self.control_failed = false;
                        let reset = self.cache.reset_backoff_all(now);
                        log::info!(
                            "channel {}: rls: control channel READY again: {reset:?}",
                            self.channelz.target()
                        );
                        if reset.changed() {
                            self.refresh_all_views();
                        }
                        reset.changed()
                    }
                    _ => false,
                }
            }
        }
    }

    /// Applies a lookup's result to the cache, the children and the index, and
    /// settles its pending request.
    fn apply_response(
        &mut self,
        key: CacheKey,
        result: Result<RouteLookupResponse, Status>,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) {
        let Some(config) = self.config.clone() else {
            return;
        };
        let rlc = config.route_lookup();
        let throttled = match result {
            Ok(response) if !response.targets.is_empty() => {
                log::debug!(
                    "channel {}: rls: lookup {:?} {:?} -> {:?} (header data {} bytes)",
                    self.channelz.target(),
                    key.path(),
                    key.keys().to_string(),
                    response.targets,
                    response.header_data.len()
                );
                // New references first, so a target kept across responses keeps its
                // child.
                for target in &response.targets {
                    self.children
                        .acquire(target, &config, &self.last_update, controller, now);
                }
                let update = self.cache.on_success(
                    key.clone(),
                    now,
                    response.targets,
                    response.header_data,
                    (rlc.max_age(), rlc.stale_age()),
                );
                for target in &update.previous_targets {
                    self.children.release(target, controller, now);
                }
                self.drop_evicted(update.evicted, controller, now);
                false
            }
            other => {
                let status = match other {
                    Err(status) => status,
                    Ok(_) => Status::unavailable(format!(
                        "RLS response's target list does not contain any entries for key {{path: {:?}, keys: {:?}}}",
                        key.path(),
                        key.keys().to_string()
                    )),
                };
                log::debug!(
                    "channel {}: rls: lookup {:?} {:?} failed: {status}",
                    self.channelz.target(),
                    key.path(),
                    key.keys().to_string()
                );
                let update = self.cache.on_failure(key.clone(), now, status);
                self.backoff_ends.insert(update.backoff.next_attempt);
                controller.wake_at(update.backoff.next_attempt);
                self.drop_evicted(update.evicted, controller, now);
                true
            }
        };
        self.refresh_view(&key);
        let mut slow = self.shared.slow.lock();
        slow.index = self.index.clone();
        slow.pending.remove(&key);
        slow.throttler.register_backend_response(now, throttled);
    }

    /// Releases what evicted entries held and drops them from the index.
    fn drop_evicted(
        &mut self,
        evicted: Evicted,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) {
        for e in evicted.entries {
            for target in e.entry.targets() {
                self.children.release(target, controller, now);
            }
            let hash = self.shared.hash(e.key.path(), e.key.keys());
            Arc::make_mut(&mut self.index).remove(hash, &e.key);
        }
    }

    /// Mirrors the cache's entry for `key` into the index.
    fn refresh_view(&mut self, key: &CacheKey) {
        let hash = self.shared.hash(key.path(), key.keys());
        let index = Arc::make_mut(&mut self.index);
        match self.cache.peek(key.path(), key.keys()) {
            Some(entry) => index.upsert(Arc::new(EntryView::new(key, hash, entry))),
            None => index.remove(hash, key),
        }
    }

    /// Mirrors every entry into the index (after a backoff reset).
    fn refresh_all_views(&mut self) {
        let views: Vec<Arc<EntryView>> = self
            .cache
            .iter()
            .map(|(key, entry)| {
                let hash = self.shared.hash(key.path(), key.keys());
                Arc::new(EntryView::new(key, hash, entry))
            })
            .collect();
        let index = Arc::make_mut(&mut self.index);
        for view in views {
            index.upsert(view);
        }
        self.store_index();
    }

    /// Hands the index to the pickers' slow path.
    fn store_index(&self) {
        self.shared.slow.lock().index = self.index.clone();
    }

    /// Publishes the aggregate state with a new picker, and the cache gauges.
    fn publish(&mut self, controller: &mut dyn ChannelController) {
        let Some(config) = self.config.clone() else {
            return;
        };
        self.metrics
            .record_cache(self.cache.len(), self.cache.size_bytes());
        let picker = RlsPicker::new(
            self.shared.clone(),
            config,
            self.index.clone(),
            self.children.snapshot(),
            self.default_target.clone(),
            self.metrics.clone(),
        );
        let state = self.children.aggregate(self.default_target.is_some());
        controller.update_picker(LbState {
            connectivity_state: state,
            picker: Arc::new(picker),
        });
    }
}

/// The throttler before the first config.
struct Unthrottled;

impl RequestThrottler for Unthrottled {
    fn should_throttle(&mut self, _: Instant) -> bool {
        false
    }

    fn register_backend_response(&mut self, _: Instant, _: bool) {}
}

fn new_throttler(
    builder: &BuilderInner,
    random: &SharedRandom,
    now: Instant,
) -> Box<dyn RequestThrottler> {
    match &builder.options.throttler {
        Some(factory) => factory(now),
        None => Box::new(Throttler::new(
            ThrottlerConfig::default(),
            now,
            SharedSource(random.clone()),
        )),
    }
}

impl LbPolicy for RlsPolicy {
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
        self.promote_used();
        let Some(new) = config.and_then(|c| c.downcast_ref::<RlsConfig>()) else {
            return Err(UpdateError::Config(ConfigError::new(
                "",
                format!("{POLICY_NAME} needs an {POLICY_NAME} config"),
            )));
        };
        let resolver_changed = match &update.endpoints {
            Ok(_) => {
                let changed = self.last_update != update;
                self.last_update = update;
                changed
            }
            Err(status) => {
                self.children.resolver_error(status, controller, now);
                false
            }
        };

        if let Some(current) = self.config.clone()
            && *current == *new
        {
            // The config is unchanged; the resolver state may not be (grpc-go drops
            // it here).
            if resolver_changed {
                self.children
                    .push_all(&current, &self.last_update, controller, now);
            }
            if self.children.take_changed() {
                self.publish(controller);
            }
            return Ok(());
        }

        let new = Arc::new(new.clone());
        let old = self.config.replace(new.clone());
        let rlc = new.route_lookup();

        // 1. The control channel: any change of its fields rebuilds it.
        let control_config = ControlChannelConfig::of(&new);
        if old
            .as_ref()
            .is_none_or(|o| ControlChannelConfig::of(o) != control_config)
        {
            self.rebuild_control_channel(&new, controller, now);
            let mut metrics = (*self.metrics).clone();
            metrics.set_server_target(rlc.lookup_service());
            self.metrics = Arc::new(metrics);
        }

        // 2. The cache's size: evictions release their children.
        if old
            .as_ref()
            .is_none_or(|o| o.route_lookup().cache_size_bytes() != rlc.cache_size_bytes())
        {
            let evicted = self.cache.resize(rlc.cache_size_bytes(), now);
            self.drop_evicted(evicted, controller, now);
        }

        // 3. The children's policy and config.
        if let Some(old) = &old {
            if old.child_policy_name() != new.child_policy_name() {
                self.children
                    .rebuild_all(&new, &self.last_update, controller, now);
            } else if resolver_changed
                || old.child_policy_config() != new.child_policy_config()
                || old.child_policy_config_target_field_name()
                    != new.child_policy_config_target_field_name()
            {
                self.children
                    .push_all(&new, &self.last_update, controller, now);
            }
        }

        // 4. The default target: take the new reference, then drop the old one.
        let default_target: Option<Arc<str>> = rlc.default_target().map(Arc::from);
        if default_target != self.default_target {
            if let Some(target) = &default_target {
                self.children
                    .acquire(target, &new, &self.last_update, controller, now);
            }
            if let Some(target) = self.default_target.take() {
                self.children.release(&target, controller, now);
            }
            self.default_target = default_target;
        }

        if self.next_purge.is_none() {
            let at = now + self.builder.options.purge_interval;
            self.next_purge = Some(at);
            controller.wake_at(at);
        }
        self.store_index();
        let _ = self.children.take_changed();
        self.publish(controller);
        Ok(())
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
        self.promote_used();
        self.children
            .subchannel_update(subchannel, state, controller, now);
        if self.children.take_changed() {
            self.publish(controller);
        }
    }

    fn work(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        if self.closed {
            return;
        }
        self.promote_used();
        let mut dirty = false;
        while let Ok(event) = self.events.try_recv() {
            dirty |= self.handle_event(event, controller, now);
        }
        let outbox = std::mem::take(&mut self.shared.slow.lock().outbox);
        for (key, request) in outbox {
            dirty |= self.dispatch(key, request, controller, now);
        }
        self.children.work(controller, now);
        while self.backoff_ends.first().is_some_and(|t| *t <= now) {
            self.backoff_ends.pop_first();
            dirty = true;
        }
        if let Some(at) = self.next_purge
            && now >= at
        {
            let evicted = self.cache.evict_expired(now);
            if !evicted.is_empty() {
                self.drop_evicted(evicted, controller, now);
                self.store_index();
                dirty = true;
            }
            let next = now + self.builder.options.purge_interval;
            self.next_purge = Some(next);
            controller.wake_at(next);
        }
        if self.children.take_changed() || dirty {
            self.publish(controller);
        }
    }

    fn exit_idle(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        if self.closed {
            return;
        }
        self.children.exit_idle(controller, now);
        if self.children.take_changed() {
            self.publish(controller);
        }
    }

    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        {
            let mut slow = self.shared.slow.lock();
            slow.closed = true;
            slow.pending.clear();
            slow.outbox.clear();
            slow.index = Arc::new(Index::new());
        }
        if let Some(mut control) = self.control.take() {
            control.close();
        }
        self.children.close();
        let _ = self.cache.clear(self.clock.now());
        self.index = Arc::new(Index::new());
        self.default_target = None;
    }

    fn describe(&self, view: &mut PolicyView) {
        let now = self.clock.now();
        view.config = self.config.as_deref().map(ToString::to_string);
        if let Some(control) = &self.control {
            view.detail("lookup service", control.lookup_service());
            match control.channelz_id() {
                Some(id) => view.detail("control channel", id),
                None => view.detail("control channel", "could not be built"),
            }
        }
        view.detail(
            "default target",
            self.default_target.as_deref().unwrap_or("none"),
        );
        view.detail(
            "cache",
            format_args!(
                "{} entries, {} of {} bytes",
                self.cache.len(),
                self.cache.size_bytes(),
                self.cache.max_size_bytes()
            ),
        );
        view.detail("pending lookups", self.shared.slow.lock().pending.len());
        let max_age = self.config.as_deref().map(|c| c.route_lookup().max_age());
        let later = |at: Option<Instant>| match at {
            Some(at) if at > now => format!("in {:?}", at - now),
            Some(at) => format!("{:?} ago", now - at),
            None => "never".to_owned(),
        };
        let rows = self
            .cache
            .iter()
            .map(|(key, entry)| {
                // Entries last `maxAge` from their response.
                let age = match (entry.expiry_time(), max_age) {
                    (Some(expiry), Some(max_age)) if !entry.targets().is_empty() => {
                        format!(
                            "{:?}",
                            max_age.saturating_sub(expiry.saturating_duration_since(now))
                        )
                    }
                    _ => "-".to_owned(),
                };
                let status = if !entry.has_valid_data(now) {
                    if entry.targets().is_empty() {
                        "no data"
                    } else {
                        "expired"
                    }
                } else if entry.is_stale(now) {
                    "stale"
                } else {
                    "fresh"
                };
                let backoff = match entry.backoff() {
                    Some(b) if entry.is_in_backoff(now) => format!(
                        "retry {} until {}{}",
                        b.retries,
                        later(Some(b.next_attempt)),
                        entry
                            .last_error()
                            .map_or(String::new(), |e| format!(": {e}"))
                    ),
                    Some(b) => format!("retry {} over", b.retries),
                    None => "-".to_owned(),
                };
                vec![
                    format!("{} {}", key.path(), key.keys()),
                    entry.targets().join(", "),
                    entry.header_data().to_owned(),
                    age,
                    status.to_owned(),
                    format!(
                        "stale {}, expires {}",
                        later(entry.stale_time()),
                        later(entry.expiry_time())
                    ),
                    backoff,
                ]
            })
            .collect();
        view.tables.push(Table {
            title: "cache".into(),
            columns: [
                "key",
                "targets",
                "header data",
                "age",
                "data",
                "times",
                "backoff",
            ]
            .map(String::from)
            .to_vec(),
            rows,
        });
        view.children = self.children.describe();
    }
}

impl Drop for RlsPolicy {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for RlsPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RlsPolicy")
            .field("config", &self.config.as_deref().map(ToString::to_string))
            .field("cache", &self.cache)
            .field("children", &self.children)
            .field("default_target", &self.default_target)
            .field("control", &self.control)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use lb_core::{LbPolicyRegistry, endpoints};
    use lb_testkit::{FakeController, InMemoryTransport, ManualClock};

    fn policy(clock: &ManualClock, ctrl: &FakeController) -> (RlsPolicy, LbPolicyRegistry) {
        let mut options =
            RlsBuilderOptions::new(Arc::new(InMemoryTransport::with_clock(clock.shared())));
        options.clock = Some(clock.shared());
        options.cache.min_evict_age = Duration::ZERO;
        let builder = RlsBuilder::new(options);
        let registry = LbPolicyRegistry::with_builtins();
        let policy = RlsPolicy::new(
            builder.inner.clone(),
            ctrl.policy_options_with(registry.clone()),
        );
        (policy, registry)
    }

    fn config(registry: &LbPolicyRegistry, default_target: Option<&str>) -> LbConfig {
        let mut json = serde_json::json!({
            "routeLookupConfig": {
                "grpcKeybuilders": [{"names": [{"service": "s"}]}],
                "lookupService": "passthrough:///rls:1",
                "cacheSizeBytes": 1000,
            },
            "childPolicy": [{"pick_first": {}}],
            "childPolicyConfigTargetFieldName": "serviceName",
        });
        if let Some(t) = default_target {
            json["routeLookupConfig"]["defaultTarget"] = t.into();
        }
        let parsed = RlsConfig::parse(&json, registry, &RlsConfigOptions::default()).unwrap();
        LbConfig::new(parsed)
    }

    fn respond(
        p: &mut RlsPolicy,
        ctrl: &mut FakeController,
        now: Instant,
        path: &str,
        targets: &[&str],
    ) {
        let key = CacheKey::new(path, crate::keys::KeyMap::new());
        let response = RouteLookupResponse {
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
            header_data: String::new(),
        };
        p.apply_response(key, Ok(response), ctrl, now);
    }

    #[test]
    fn the_default_slot_and_cache_entries_each_hold_one_reference() {
        let clock = ManualClock::new();
        let mut ctrl = FakeController::new();
        let (mut p, registry) = policy(&clock, &ctrl);
        let update = || ResolverUpdate::from_endpoints(endpoints(["svc:1"]));
        let now = clock.now();
        p.resolver_update(
            update(),
            Some(&config(&registry, Some("d"))),
            &mut ctrl,
            now,
        )
        .unwrap();
        assert_eq!(p.children.refs("d"), 1);
        respond(&mut p, &mut ctrl, now, "/s/a", &["d", "x"]);
        respond(&mut p, &mut ctrl, now, "/s/b", &["x"]);
        assert_eq!((p.children.refs("d"), p.children.refs("x")), (2, 2));
        // A new default: the slot takes the new reference and drops its old one only.
        p.resolver_update(
            update(),
            Some(&config(&registry, Some("y"))),
            &mut ctrl,
            now,
        )
        .unwrap();
        assert_eq!((p.children.refs("d"), p.children.refs("y")), (1, 1));
        // A refreshed entry with other targets moves its references.
        respond(&mut p, &mut ctrl, now, "/s/a", &["y"]);
        assert_eq!(
            (
                p.children.refs("d"),
                p.children.refs("x"),
                p.children.refs("y")
            ),
            (0, 1, 2)
        );
        // Evictions release what the entries held.
        let evicted = p.cache.resize(0, now);
        p.drop_evicted(evicted, &mut ctrl, now);
        assert_eq!((p.children.refs("x"), p.children.refs("y")), (0, 1));
        assert_eq!(p.children.len(), 1, "only the default's child is left");
        assert_eq!(p.index.len(), 0);
        p.resolver_update(update(), Some(&config(&registry, None)), &mut ctrl, now)
            .unwrap();
        assert_eq!(p.children.len(), 0);
        p.close();
    }

    #[test]
    fn instance_uuids_are_version_4() {
        let random = SharedRandom::new(lb_core::SplitMix64::seeded(1));
        let a = instance_uuid(&random);
        let b = instance_uuid(&random);
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
    }
}
