//! `ring_hash_experimental` (gRFCs A42, A61 and A76): consistent hashing of a request
//! header onto a ring of endpoints, so calls with the same key go to the same backend
//! and removing one of N backends moves only about 1/N of the keys.
//!
//! ```text
//!  ring (sorted by hash; an endpoint of weight w gets about w/Σw of the entries)
//!   0 ──●a_0──●c_1──●b_0──●a_1──●c_0──●b_1── … ──> u64::MAX, then back to 0
//!                  ^ first entry with hash >= xxh64(header values joined by ",")
//!  walk from there:  READY ─> pick
//!                    CONNECTING ─> queue
//!                    IDLE ─> ask the policy to connect it (schedule_work), queue
//!                    TRANSIENT_FAILURE ─> next entry
//!                    (every entry failed: fail with the first one's error)
//! ```
//!
//! - **Config** (grpc-go's rules, in its order): `minRingSize` (default 1024) and
//!   `maxRingSize` (default 4096) above 8,388,608 are errors, 0 means the default,
//!   `minRingSize` above `maxRingSize` is an error, then both are lowered to the
//!   builder's cap (4096 by default, grpc-go's `GRPC_RING_HASH_CAP`).
//!   `requestHashHeader` is lower-cased and must be a valid, non-`-bin` metadata key.
//! - **The ring**: one entry list per endpoint, hashed from `"<hash key>_<i>"` with
//!   XXH64 (seed 0), where the hash key is the endpoint's `hash_key` attribute or
//!   else its first address; the endpoint's `weight` attribute (default 1) sets its
//!   share. Same endpoints, same ring, in every client.
//! - **The request hash**: XXH64 of the `requestHashHeader` values joined with `","`.
//!   A call without the header gets a random hash and goes to the first READY
//!   endpoint from there, starting at most one connection on the way (A76). Without a
//!   `requestHashHeader` the hash would come from xDS, which this crate does not
//!   have, so calls fail with UNAVAILABLE, as in grpc-go.
//! - **Connections are lazy**: an endpoint connects when a pick lands on it, or when
//!   the policy is CONNECTING or TRANSIENT_FAILURE with no endpoint CONNECTING (then
//!   the first IDLE endpoint by hash key connects, so a failing policy keeps trying).
//!   A failed endpoint stays TRANSIENT_FAILURE until READY and reconnects after each
//!   backoff (as grpc-go's pick_first child does).
//! - **The aggregate**: READY if any endpoint is; else TRANSIENT_FAILURE if two or
//!   more are; else CONNECTING if any is, or if one of several is failing; else IDLE
//!   if any is; else TRANSIENT_FAILURE.
//!
//! Each endpoint connects to its first address only (grpc-go runs a pick_first over
//! all of an endpoint's addresses).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::address::Endpoint;
use crate::config::{ConfigError, Fields};
use crate::metadata::{Metadata, is_binary_key, validate_key};
use crate::picker::{Pick, PickInfo, PickResult, Picker, PickerRandom};
use crate::policy::{
    ChannelController, LbConfig, LbPolicy, LbPolicyBuilder, LbPolicyOptions, LbState, UpdateError,
    WorkScheduler,
};
use crate::registry::LbPolicyRegistry;
use crate::resolver::ResolverUpdate;
use crate::state::ConnectivityState;
use crate::status::Status;
use crate::subchannel::{Subchannel, SubchannelState};
use crate::xxh64::xxh64;

/// The policy's registered name.
pub const NAME: &str = "ring_hash_experimental";

/// `minRingSize` when the config does not set it (or sets 0).
pub const DEFAULT_MIN_RING_SIZE: u64 = 1024;

/// `maxRingSize` when the config does not set it (or sets 0).
pub const DEFAULT_MAX_RING_SIZE: u64 = 4096;

/// Ring sizes above this are config errors (8M, as grpc-go).
pub const RING_SIZE_UPPER_BOUND: u64 = 8 * 1024 * 1024;

/// The cap ring sizes are lowered to unless the builder sets another
/// ([`RingHashBuilder::with_ring_size_cap`]); grpc-go's `GRPC_RING_HASH_CAP` default.
pub const DEFAULT_RING_SIZE_CAP: u64 = 4096;

/// The endpoint attribute holding its weight (a decimal `u32`; missing, 0 or not a
/// number counts as 1).
pub const WEIGHT_ATTRIBUTE: &str = "weight";

/// The endpoint attribute that, when set and not empty, is hashed onto the ring
/// instead of the endpoint's first address (gRFC A76).
pub const HASH_KEY_ATTRIBUTE: &str = "hash_key";

/// The `ring_hash_experimental` config, after grpc-go's defaults and caps.
///
/// # Examples
///
/// ```
/// use lb_core::LbPolicyBuilder;
/// use lb_core::policies::ring_hash::{RingHashBuilder, RingHashConfig};
/// let reg = lb_core::LbPolicyRegistry::new();
/// let json = serde_json::json!({"maxRingSize": 100000, "requestHashHeader": "X-Key"});
/// let parsed = RingHashBuilder::default().parse_config(&json, &reg)?;
/// let c = parsed.downcast_ref::<RingHashConfig>().unwrap();
/// assert_eq!((c.min_ring_size, c.max_ring_size), (1024, 4096), "capped at 4096");
/// assert_eq!(c.request_hash_header.as_deref(), Some("x-key"));
/// # Ok::<(), lb_core::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingHashConfig {
    /// The smallest ring to build.
    pub min_ring_size: u64,
    /// The largest ring to build.
    pub max_ring_size: u64,
    /// The lower-case metadata key whose values are hashed; `None` when unset.
    pub request_hash_header: Option<String>,
}

impl Default for RingHashConfig {
    fn default() -> Self {
        Self {
            min_ring_size: DEFAULT_MIN_RING_SIZE,
            max_ring_size: DEFAULT_MAX_RING_SIZE,
            request_hash_header: None,
        }
    }
}

/// Builds the `ring_hash_experimental` policy ([`RingHash`]).
///
/// ```
/// use lb_core::LbPolicyBuilder;
/// use lb_core::policies::ring_hash::{RingHashBuilder, RingHashConfig};
/// let builder = RingHashBuilder::default().with_ring_size_cap(8192);
/// let json = serde_json::json!({"minRingSize": 5000, "maxRingSize": 6000});
/// let parsed = builder.parse_config(&json, &lb_core::LbPolicyRegistry::new())?;
/// assert_eq!(parsed.downcast_ref::<RingHashConfig>().unwrap().max_ring_size, 6000);
/// # Ok::<(), lb_core::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RingHashBuilder {
    ring_size_cap: u64,
}

impl Default for RingHashBuilder {
    fn default() -> Self {
        Self {
            ring_size_cap: DEFAULT_RING_SIZE_CAP,
        }
    }
}

impl RingHashBuilder {
    /// This builder with ring sizes lowered to at most `cap` (at least 1, at most
    /// [`RING_SIZE_UPPER_BOUND`]) instead of [`DEFAULT_RING_SIZE_CAP`].
    pub fn with_ring_size_cap(mut self, cap: u64) -> Self {
        self.ring_size_cap = cap.clamp(1, RING_SIZE_UPPER_BOUND);
        self
    }
}

fn ring_size(fields: &Fields<'_>, name: &str, default: u64) -> Result<u64, ConfigError> {
    let Some(size) = fields.i64(name)? else {
        return Ok(default);
    };
    let size = u64::try_from(size)
        .map_err(|_| ConfigError::new(name, format!("must not be negative, not {size}")))?;
    if size > RING_SIZE_UPPER_BOUND {
        return Err(ConfigError::new(
            name,
            format!("{size} is greater than the largest supported value {RING_SIZE_UPPER_BOUND}"),
        ));
    }
    Ok(if size == 0 { default } else { size })
}

impl LbPolicyBuilder for RingHashBuilder {
    fn name(&self) -> &'static str {
        NAME
    }

    fn build(&self, options: LbPolicyOptions) -> Box<dyn LbPolicy> {
        Box::new(RingHash::new(options))
    }

    fn parse_config(
        &self,
        config: &serde_json::Value,
        _: &LbPolicyRegistry,
    ) -> Result<LbConfig, ConfigError> {
        let fields = Fields::new(config, "")?;
        let min = ring_size(&fields, "minRingSize", DEFAULT_MIN_RING_SIZE)?;
        let max = ring_size(&fields, "maxRingSize", DEFAULT_MAX_RING_SIZE)?;
        if min > max {
            return Err(ConfigError::new(
                "minRingSize",
                format!("{min} is greater than maxRingSize {max}"),
            ));
        }
        let request_hash_header = match fields.string("requestHashHeader")? {
            None | Some("") => None,
            Some(header) => {
                let header = header.to_ascii_lowercase();
                if let Err(e) = validate_key(&header) {
                    return Err(ConfigError::new("requestHashHeader", e.to_string()));
                }
                if is_binary_key(&header) {
                    return Err(ConfigError::new(
                        "requestHashHeader",
                        format!("{header:?} must not end with \"-bin\""),
                    ));
                }
                Some(header)
            }
        };
        Ok(LbConfig::new(RingHashConfig {
            min_ring_size: min.min(self.ring_size_cap),
            max_ring_size: max.min(self.ring_size_cap),
            request_hash_header,
        }))
    }
}

/// One endpoint as the policy tracks it.
#[derive(Debug)]
struct Entry {
    subchannel: Subchannel,
    hash_key: String,
    weight: u32,
    /// The endpoint's state as the aggregate and pickers see it: sticky in
    /// TRANSIENT_FAILURE until READY.
    state: ConnectivityState,
    last_error: Option<Status>,
    /// Set by a picker that landed on this endpoint while it was IDLE.
    wanted: Arc<AtomicBool>,
}

/// One ring position: its hash and the endpoint (an index into the policy's list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RingEntry {
    hash: u64,
    endpoint: u32,
}

/// The ring as pickers search it: the sorted hashes apart from their endpoints, so a
/// binary search touches only the hashes (8 bytes an entry).
#[derive(Debug, Default)]
struct Ring {
    hashes: Box<[u64]>,
    owners: Box<[u32]>,
}

impl Ring {
    fn new(entries: Vec<RingEntry>) -> Self {
        Self {
            hashes: entries.iter().map(|e| e.hash).collect(),
            owners: entries.iter().map(|e| e.endpoint).collect(),
        }
    }
}

/// Builds the ring as grpc-go does: weights normalized, endpoints in hash-key order,
/// the smallest weight getting a whole number of entries when the sizes allow.
fn build_ring(entries: &[Entry], min_size: u64, max_size: u64) -> Vec<RingEntry> {
    let total: u64 = entries.iter().map(|e| u64::from(e.weight)).sum();
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|&a, &b| entries[a].hash_key.cmp(&entries[b].hash_key));
    let normalized = |i: usize| f64::from(entries[i].weight) / total as f64;
    let min_weight = order.iter().map(|&i| normalized(i)).fold(1.0, f64::min);
    let scale = ((min_weight * min_size as f64).ceil() / min_weight).min(max_size as f64);
    let mut ring = Vec::with_capacity(scale.ceil() as usize);
    let (mut current, mut target) = (0.0f64, 0.0f64);
    for &i in &order {
        target += scale * normalized(i);
        let mut n = 0u64;
        while current < target {
            let key = format!("{}_{n}", entries[i].hash_key);
            ring.push(RingEntry {
                hash: xxh64(key.as_bytes(), 0),
                endpoint: i as u32,
            });
            n += 1;
            current += 1.0;
        }
    }
    ring.sort_by_key(|e| e.hash);
    ring
}

fn weight_of(endpoint: &Endpoint) -> u32 {
    endpoint
        .attributes
        .get(WEIGHT_ATTRIBUTE)
        .and_then(|w| w.parse::<u32>().ok())
        .filter(|w| *w > 0)
        .unwrap_or(1)
}

fn hash_key_of(endpoint: &Endpoint) -> String {
    match endpoint.attributes.get(HASH_KEY_ATTRIBUTE) {
        Some(key) if !key.is_empty() => key.to_owned(),
        _ => endpoint.addresses[0].address.clone(),
    }
}

/// The `ring_hash_experimental` policy. See the [module docs](self).
///
/// # Examples
///
/// Keys pick endpoints; an IDLE endpoint is connected when a key lands on it:
///
/// ```
/// use lb_core::policies::ring_hash::{RingHash, RingHashConfig};
/// use lb_core::{ConnectivityState, LbConfig, LbPolicy, Metadata, ResolverUpdate, endpoints};
/// use lb_testkit::picks::describe_pick;
///
/// let mut ctrl = lb_testkit::FakeController::new();
/// let mut policy = RingHash::new(ctrl.policy_options());
/// let config = LbConfig::new(RingHashConfig {
///     request_hash_header: Some("x-key".into()),
///     ..RingHashConfig::default()
/// });
/// let now = std::time::Instant::now();
/// let update = ResolverUpdate::from_endpoints(endpoints(["a:1", "b:1"]));
/// policy.resolver_update(update, Some(&config), &mut ctrl, now).unwrap();
/// let mut md = Metadata::new();
/// md.insert("x-key", "user-7").unwrap();
/// assert_eq!(describe_pick(&*ctrl.latest_state().picker, &md), "queue", "IDLE: connect first");
/// for sc in ctrl.verify_new_subchannels(2) {
///     ctrl.update_subchannel(&mut policy, &sc, ConnectivityState::Ready, now);
/// }
/// let picker = ctrl.latest_state().picker;
/// let first = describe_pick(&*picker, &md);
/// assert!(first.starts_with("pick:"));
/// assert_eq!(describe_pick(&*picker, &md), first, "the same key, the same endpoint");
/// ```
#[derive(Debug)]
pub struct RingHash {
    options: LbPolicyOptions,
    config: RingHashConfig,
    entries: Vec<Entry>,
    /// Indices of `entries` in hash-key order, for choosing which IDLE one connects.
    by_hash_key: Vec<usize>,
    ring: Arc<Ring>,
    /// The resolver's error while there are no endpoints.
    resolver_error: Option<Status>,
}

impl RingHash {
    /// A policy with no endpoints yet and the default config.
    pub fn new(options: LbPolicyOptions) -> Self {
        Self {
            options,
            config: RingHashConfig::default(),
            entries: Vec::new(),
            by_hash_key: Vec::new(),
            ring: Arc::default(),
            resolver_error: None,
        }
    }

    /// Reconciles the endpoint list; returns whether the ring must be rebuilt.
    fn set_endpoints(
        &mut self,
        endpoints: &[Endpoint],
        controller: &mut dyn ChannelController,
    ) -> bool {
        let before: Vec<(String, String, u32)> = self.ring_inputs();
        let mut old = std::mem::take(&mut self.entries);
        for endpoint in endpoints.iter().filter(|e| !e.addresses.is_empty()) {
            let address = &endpoint.addresses[0];
            if self
                .entries
                .iter()
                .any(|e| e.subchannel.address().address == address.address)
            {
                continue;
            }
            let (hash_key, weight) = (hash_key_of(endpoint), weight_of(endpoint));
            match old
                .iter()
                .position(|e| e.subchannel.address().address == address.address)
            {
                Some(i) => {
                    let mut entry = old.swap_remove(i);
                    entry.hash_key = hash_key;
                    entry.weight = weight;
                    self.entries.push(entry);
                }
                None => self.entries.push(Entry {
                    subchannel: controller.new_subchannel(address),
                    hash_key,
                    weight,
                    state: ConnectivityState::Idle,
                    last_error: None,
                    wanted: Arc::default(),
                }),
            }
        }
        for gone in old {
            gone.subchannel.shutdown();
        }
        before != self.ring_inputs()
    }

    fn ring_inputs(&self) -> Vec<(String, String, u32)> {
        self.entries
            .iter()
            .map(|e| {
                let address = e.subchannel.address().address.clone();
                (address, e.hash_key.clone(), e.weight)
            })
            .collect()
    }

    fn rebuild_ring(&mut self) {
        self.ring = Arc::new(Ring::new(build_ring(
            &self.entries,
            self.config.min_ring_size,
            self.config.max_ring_size,
        )));
        self.by_hash_key = (0..self.entries.len()).collect();
        let entries = &self.entries;
        self.by_hash_key
            .sort_by(|&a, &b| entries[a].hash_key.cmp(&entries[b].hash_key));
    }

    fn count(&self, state: ConnectivityState) -> usize {
        self.entries.iter().filter(|e| e.state == state).count()
    }

    /// gRFC A42's aggregation rule.
    fn aggregate(&self) -> ConnectivityState {
        use ConnectivityState::*;
        let failing = self.count(TransientFailure);
        if self.count(Ready) > 0 {
            Ready
        } else if failing > 1 {
            TransientFailure
        } else if self.count(Connecting) > 0 || (failing == 1 && self.entries.len() > 1) {
            Connecting
        } else if self.count(Idle) > 0 {
            Idle
        } else {
            TransientFailure
        }
    }

    /// Connects the first IDLE endpoint (in hash-key order) when the policy is
    /// CONNECTING or failing and no endpoint is CONNECTING, then publishes a picker.
    fn update_picker(&mut self, controller: &mut dyn ChannelController) {
        let state = self.aggregate();
        let kick = matches!(
            state,
            ConnectivityState::Connecting | ConnectivityState::TransientFailure
        ) && self.count(ConnectivityState::Connecting) == 0;
        let idle = self
            .by_hash_key
            .iter()
            .find(|&&i| self.entries[i].state == ConnectivityState::Idle);
        if let (true, Some(&i)) = (kick, idle) {
            self.entries[i].subchannel.connect();
        }
        let endpoints = self
            .entries
            .iter()
            .map(|e| PickerEndpoint {
                subchannel: e.subchannel.clone(),
                state: e.state,
                error: (e.state == ConnectivityState::TransientFailure).then(|| {
                    let why = e.last_error.as_ref().map_or("", |s| s.message());
                    Box::new(Status::unavailable(format!(
                        "{NAME}: {}: last connection error: {why}",
                        e.subchannel.address()
                    )))
                }),
                wanted: e.wanted.clone(),
            })
            .collect();
        let picker = RingHashPicker {
            ring: self.ring.clone(),
            endpoints,
            header: self.config.request_hash_header.clone(),
            any_connecting: self.count(ConnectivityState::Connecting) > 0,
            scheduler: self.options.work_scheduler.clone(),
            random: PickerRandom::new(&self.options.random),
        };
        controller.update_picker(LbState {
            connectivity_state: state,
            picker: Arc::new(picker),
        });
    }

    fn close_all(&mut self) {
        for e in self.entries.drain(..) {
            e.subchannel.shutdown();
        }
        self.by_hash_key.clear();
        self.ring = Arc::default();
    }
}

impl LbPolicy for RingHash {
    fn resolver_update(
        &mut self,
        update: ResolverUpdate,
        config: Option<&LbConfig>,
        controller: &mut dyn ChannelController,
        _now: Instant,
    ) -> Result<(), UpdateError> {
        let config = config
            .and_then(|c| c.downcast_ref::<RingHashConfig>())
            .cloned()
            .unwrap_or_default();
        let resize = (config.min_ring_size, config.max_ring_size)
            != (self.config.min_ring_size, self.config.max_ring_size);
        self.config = config;
        let endpoints = match update.endpoints {
            Ok(endpoints) => endpoints,
            Err(status) => {
                if self.entries.is_empty() {
                    self.resolver_error = Some(status.clone());
                    controller.update_picker(LbState::failing(Status::unavailable(format!(
                        "{NAME}: name resolver error: {}",
                        status.message()
                    ))));
                }
                return Ok(());
            }
        };
        let changed = self.set_endpoints(&endpoints, controller);
        if self.entries.is_empty() {
            self.close_all();
            let reason = "resolver produced zero addresses";
            controller.update_picker(LbState::failing(Status::unavailable(format!(
                "{NAME}: {reason}"
            ))));
            return Err(UpdateError::BadResolverState(reason.into()));
        }
        self.resolver_error = None;
        if changed || resize || self.ring.hashes.is_empty() {
            self.rebuild_ring();
        }
        self.update_picker(controller);
        Ok(())
    }

    fn subchannel_update(
        &mut self,
        subchannel: &Subchannel,
        state: &SubchannelState,
        controller: &mut dyn ChannelController,
        _now: Instant,
    ) {
        let Some(entry) = self
            .entries
            .iter_mut()
            .find(|e| e.subchannel == *subchannel)
        else {
            return;
        };
        let new = state.connectivity_state;
        if new == ConnectivityState::Shutdown {
            return;
        }
        if new == ConnectivityState::TransientFailure {
            entry.last_error = state.last_error.clone();
            controller.request_resolution();
        } else if entry.state == ConnectivityState::TransientFailure {
            if new == ConnectivityState::Idle {
                // Backoff is over: a failing endpoint tries again at once.
                entry.subchannel.connect();
            }
            if new != ConnectivityState::Ready {
                return;
            }
        } else if new == entry.state {
            return;
        }
        entry.state = new;
        self.update_picker(controller);
    }

    fn work(&mut self, _controller: &mut dyn ChannelController, _now: Instant) {
        for e in &self.entries {
            if e.wanted.swap(false, Ordering::AcqRel) && e.state == ConnectivityState::Idle {
                e.subchannel.connect();
            }
        }
    }

    /// Does nothing: connections start from picks and from the aggregation rule, as
    /// in grpc-go.
    fn exit_idle(&mut self, _controller: &mut dyn ChannelController, _now: Instant) {}

    fn close(&mut self) {
        self.close_all();
    }

    fn describe(&self, view: &mut crate::channelz::PolicyView) {
        view.config = Some(format!("{:?}", self.config));
        view.detail("ring size", self.ring.hashes.len());
        view.detail("endpoints", self.entries.len());
        if let Some(error) = &self.resolver_error {
            view.detail("resolver error", error);
        }
        let total = self.ring.hashes.len().max(1);
        // One pass over the ring, however many endpoints share it.
        let mut owned = vec![0usize; self.entries.len()];
        for &owner in self.ring.owners.iter() {
            if let Some(n) = owned.get_mut(owner as usize) {
                *n += 1;
            }
        }
        view.subchannels = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let owned = owned[i];
                let mut sc = crate::channelz::SubchannelView::of(&e.subchannel, e.state)
                    .with("weight", e.weight)
                    .with("ring share", format_args!("{owned} of {total}"));
                if let Some(error) = &e.last_error {
                    sc = sc.with("last error", error);
                }
                sc
            })
            .collect();
    }
}

/// An endpoint as one picker sees it.
struct PickerEndpoint {
    subchannel: Subchannel,
    state: ConnectivityState,
    /// The failure to report when this endpoint is the answer but TRANSIENT_FAILURE
    /// (boxed: the READY path reads a small entry).
    error: Option<Box<Status>>,
    wanted: Arc<AtomicBool>,
}

/// Picks by walking the ring from the request's hash. Never blocks, takes no lock.
struct RingHashPicker {
    ring: Arc<Ring>,
    endpoints: Vec<PickerEndpoint>,
    header: Option<String>,
    any_connecting: bool,
    scheduler: Arc<dyn WorkScheduler>,
    random: PickerRandom,
}

/// The hash of a request's `header` values joined with `","`, or `None` when the
/// request has no such header.
/// A call's hash from a header (gRFC A76, and xDS hash policies, A42): xxh64
/// (seed 0) of its values joined with commas; `None` without the header.
///
/// ```
/// use lb_core::Metadata;
/// use lb_core::policies::ring_hash::header_hash;
/// let mut md = Metadata::new();
/// assert_eq!(header_hash(&md, "x-key"), None);
/// md.insert("x-key", "a").unwrap();
/// assert!(header_hash(&md, "x-key").is_some());
/// ```
pub fn header_hash(metadata: &Metadata, header: &str) -> Option<u64> {
    let mut values = metadata.get_all(header);
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(xxh64(first.as_bytes(), 0));
    };
    let mut joined = format!("{first},{second}");
    for v in values {
        joined.push(',');
        joined.push_str(v);
    }
    Some(xxh64(joined.as_bytes(), 0))
}

impl RingHashPicker {
    /// The index of the first ring entry whose hash is at least `hash`, wrapping.
    #[inline]
    fn start(&self, hash: u64) -> usize {
        let i = self.ring.hashes.partition_point(|h| *h < hash);
        if i == self.ring.hashes.len() { 0 } else { i }
    }

    fn endpoint_at(&self, i: usize) -> &PickerEndpoint {
        let owners = &self.ring.owners;
        &self.endpoints[owners[i % owners.len()] as usize]
    }

    /// Asks the policy to connect `endpoint` (once until it runs).
    fn want(&self, endpoint: &PickerEndpoint) {
        if !endpoint.wanted.swap(true, Ordering::AcqRel) {
            self.scheduler.schedule_work();
        }
    }

    /// What an endpoint's own picker would answer.
    fn answer<'a>(&self, endpoint: &'a PickerEndpoint) -> PickResult<'a> {
        match endpoint.state {
            ConnectivityState::Ready => PickResult::Pick(Pick::new(&endpoint.subchannel)),
            ConnectivityState::Idle => {
                self.want(endpoint);
                PickResult::Queue
            }
            ConnectivityState::TransientFailure => PickResult::Fail(
                endpoint
                    .error
                    .as_deref()
                    .cloned()
                    .unwrap_or_else(|| Status::unavailable(format!("{NAME}: failing"))),
            ),
            ConnectivityState::Connecting | ConnectivityState::Shutdown => PickResult::Queue,
        }
    }
}

impl RingHashPicker {
    /// The endpoint for a request hash: failing endpoints are passed over
    /// (gRFC A61), the first endpoint that is not failing answers.
    fn pick_by_hash(&self, hash: u64) -> PickResult<'_> {
        let n = self.ring.hashes.len();
        let start = self.start(hash);
        (start..start + n)
            .map(|i| self.endpoint_at(i))
            .find(|e| e.state != ConnectivityState::TransientFailure)
            .map_or_else(|| self.answer(self.endpoint_at(start)), |e| self.answer(e))
    }
}

impl Picker for RingHashPicker {
    fn pick(&self, info: &PickInfo<'_>) -> PickResult<'_> {
        if let Some(hash) = info.request_hash {
            return self.pick_by_hash(hash);
        }
        let Some(header) = &self.header else {
            return PickResult::Fail(Status::unavailable(format!(
                "{NAME}: no request hash: requestHashHeader is not set and there is no \
                 xDS config selector to compute one"
            )));
        };
        let n = self.ring.hashes.len();
        match header_hash(info.metadata, header) {
            Some(hash) => self.pick_by_hash(hash),
            None => {
                // A random hash: the first READY endpoint from there, starting at most
                // one connection on the way unless one is under way (gRFC A76).
                let start = self.start(self.random.next_u64());
                let mut requested = self.any_connecting;
                for i in start..start + n {
                    let e = self.endpoint_at(i);
                    match e.state {
                        ConnectivityState::Ready => {
                            return PickResult::Pick(Pick::new(&e.subchannel));
                        }
                        ConnectivityState::Idle if !requested => {
                            requested = true;
                            self.want(e);
                        }
                        _ => {}
                    }
                }
                if requested {
                    PickResult::Queue
                } else {
                    self.answer(self.endpoint_at(start))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Address;
    use crate::subchannel::{SubchannelBackend, SubchannelId};

    struct Nop;
    impl SubchannelBackend for Nop {
        fn connect(&self, _: SubchannelId) {}
        fn shutdown(&self, _: SubchannelId) {}
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    fn entries(weights: &[(&str, u32)]) -> Vec<Entry> {
        weights
            .iter()
            .enumerate()
            .map(|(i, (addr, weight))| Entry {
                subchannel: Subchannel::new(
                    SubchannelId(i as u64),
                    Address::new(*addr),
                    Arc::new(Nop),
                ),
                hash_key: (*addr).to_owned(),
                weight: *weight,
                state: ConnectivityState::Idle,
                last_error: None,
                wanted: Arc::default(),
            })
            .collect()
    }

    /// As grpc-go's ring tests: the ring's size follows min/max and each endpoint's
    /// share of it follows its weight.
    #[test]
    fn ring_size_and_shares_follow_the_weights() {
        let es = entries(&[("a:1", 1), ("b:1", 2), ("c:1", 3)]);
        for min in [3u64, 6, 10, 100, 1000] {
            let ring = build_ring(&es, min, 1_000_000);
            assert!(ring.len() as u64 >= min, "min {min}: {}", ring.len());
            let count = |i: u32| ring.iter().filter(|e| e.endpoint == i).count() as f64;
            let total = ring.len() as f64;
            for (i, w) in [(0u32, 1.0 / 6.0), (1, 2.0 / 6.0), (2, 3.0 / 6.0)] {
                assert!(
                    (count(i) / total - w).abs() <= 1.0 / total + 1e-9,
                    "min {min}: endpoint {i} has {} of {total}",
                    count(i)
                );
            }
            assert!(ring.windows(2).all(|w| w[0].hash <= w[1].hash), "sorted");
        }
        assert_eq!(build_ring(&es, 10, 12).len(), 12, "max caps the size");
    }

    #[test]
    fn entries_hash_the_hash_key_and_index_like_grpc_go() {
        let es = entries(&[("10.0.0.1:443", 1)]);
        let ring = build_ring(&es, 1, 1);
        // XXH64("10.0.0.1:443_0") from the reference library.
        assert_eq!(ring[0].hash, 0x1d65_05e9_abee_d0b3);
    }

    #[test]
    fn request_hash_joins_repeated_values_with_commas() {
        let mut md = Metadata::new();
        assert_eq!(header_hash(&md, "x-key"), None);
        md.insert("x-key", "a").unwrap();
        assert_eq!(header_hash(&md, "x-key"), Some(xxh64(b"a", 0)));
        md.insert("x-key", "b").unwrap();
        md.insert("x-key", "c").unwrap();
        assert_eq!(header_hash(&md, "x-key"), Some(xxh64(b"a,b,c", 0)));
    }
}
