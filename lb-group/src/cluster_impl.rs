//! `xds_cluster_impl_experimental`: what an xDS cluster says about calls before
//! its endpoints see them (gRFC A27's drops, A32's circuit breaking), around
//! one child (the cluster's priority tree).
//!
//! ```json
//! {"cluster": "c1",
//!  "maxConcurrentRequests": 1024,
//!  "dropCategories": [{"category": "lb", "requestsPerMillion": 50000}],
//!  "childPolicy": [{"priority_experimental": {...}}]}
//! ```
//!
//! - Drops: each category drops its share of calls, tried in order, each
//!   with its own draw; a dropped call fails UNAVAILABLE naming the category
//!   and is never sent (`PickResult::Drop`, so wait-for-ready does not hold
//!   it).
//! - Circuit breaking: a call picked while `maxConcurrentRequests` calls of
//!   this cluster are in flight fails UNAVAILABLE the same way. A call counts
//!   from its pick until its pick's completion callback runs or is dropped,
//!   so no path can leak a count. The count belongs to the policy and
//!   survives new pickers and config updates.
//! - Everything else (states, resolution requests, timers) passes through.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use lb_core::channelz::PolicyView;
use lb_core::config::{ConfigError, Fields};
use lb_core::{
    CallCompletion, ChannelController, LbConfig, LbPolicy, LbPolicyBuilder, LbPolicyOptions,
    LbPolicyRegistry, LbState, ParsedLbConfig, PickInfo, PickResult, Picker, PickerRandom,
    ResolverUpdate, Status, UpdateError,
};

use crate::group::BalancerGroup;

/// The policy's name in gRPC.
pub const NAME: &str = "xds_cluster_impl_experimental";

/// `maxConcurrentRequests` when the config leaves it out (gRFC A32).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: u32 = 1024;

/// The child's id in the group.
const CHILD: &str = "child";

/// The `xds_cluster_impl` config.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterImplConfig {
    /// The cluster's name, for errors and logs.
    pub cluster: String,
    /// Calls in flight at most.
    pub max_concurrent_requests: u32,
    /// Drop categories with their share of calls per million, in order.
    pub drops: Vec<(String, u32)>,
    /// The child policy.
    pub child_policy: ParsedLbConfig,
}

/// Builds [`ClusterImpl`] and parses its config.
///
/// # Examples
///
/// ```
/// use lb_group::cluster_impl::ClusterImplConfig;
///
/// let registry = lb_group::registry();
/// let json = serde_json::json!([{"xds_cluster_impl_experimental": {
///     "cluster": "c1",
///     "dropCategories": [{"category": "lb", "requestsPerMillion": 50000}],
///     "childPolicy": [{"round_robin": {}}],
/// }}]);
/// let parsed = registry.parse_load_balancing_config(&json)?;
/// let config = parsed.config.downcast_ref::<ClusterImplConfig>().unwrap();
/// assert_eq!(config.max_concurrent_requests, 1024);
/// assert_eq!(config.drops, [("lb".to_owned(), 50000)]);
///
/// let bad = serde_json::json!([{"xds_cluster_impl_experimental": {
///     "cluster": "c1",
///     "dropCategories": [{"category": "lb", "requestsPerMillion": 2000000}],
///     "childPolicy": [{"round_robin": {}}],
/// }}]);
/// let err = registry.parse_load_balancing_config(&bad).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "[0].xds_cluster_impl_experimental.dropCategories[0].requestsPerMillion: \
///      must be at most 1000000"
/// );
/// # Ok::<(), lb_core::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ClusterImplBuilder;

impl LbPolicyBuilder for ClusterImplBuilder {
    fn name(&self) -> &'static str {
        NAME
    }

    fn build(&self, options: LbPolicyOptions) -> Box<dyn LbPolicy> {
        Box::new(ClusterImpl::new(options))
    }

    fn parse_config(
        &self,
        config: &serde_json::Value,
        registry: &LbPolicyRegistry,
    ) -> Result<LbConfig, ConfigError> {
        let fields = Fields::new(config, "")?;
        let cluster = fields
            .string("cluster")?
            .ok_or_else(|| ConfigError::new("cluster", "is required"))?
            .to_owned();
        let max_concurrent_requests = fields
            .u32("maxConcurrentRequests")?
            .unwrap_or(DEFAULT_MAX_CONCURRENT_REQUESTS);
        let mut drops = Vec::new();
        for (i, entry) in fields
            .array("dropCategories")?
            .into_iter()
            .flatten()
            .enumerate()
        {
            let drop = Fields::new(entry, "").and_then(|f| {
                let category = f
                    .string("category")?
                    .ok_or_else(|| ConfigError::new("category", "is required"))?;
                let per_million = f.u32("requestsPerMillion")?.unwrap_or(0);
                if per_million > 1_000_000 {
                    return Err(ConfigError::new(
                        "requestsPerMillion",
                        "must be at most 1000000",
                    ));
                }
                Ok((category.to_owned(), per_million))
            });
            drops.push(drop.map_err(|e| e.within(&format!("[{i}]")).within("dropCategories"))?);
        }
        let list = fields
            .get("childPolicy")
            .ok_or_else(|| ConfigError::new("childPolicy", "is required"))?;
        let child_policy = registry
            .parse_load_balancing_config(list)
            .map_err(|e| e.within("childPolicy"))?;
        Ok(LbConfig::new(ClusterImplConfig {
            cluster,
            max_concurrent_requests,
            drops,
            child_policy,
        }))
    }
}

/// The `xds_cluster_impl` policy. See the [module docs](self).
pub struct ClusterImpl {
    group: BalancerGroup,
    config: Option<ClusterImplConfig>,
    /// Calls of this cluster in flight.
    in_flight: Arc<AtomicU32>,
    random: Arc<PickerRandom>,
    /// The child's latest state, unwrapped.
    child_state: Option<LbState>,
    closed: bool,
}

impl fmt::Debug for ClusterImpl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterImpl")
            .field("config", &self.config)
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl ClusterImpl {
    /// A policy with no child yet; the first resolver update builds it.
    pub fn new(options: LbPolicyOptions) -> Self {
        Self {
            random: Arc::new(PickerRandom::new(&options.random)),
            group: BalancerGroup::new(options, Duration::ZERO),
            config: None,
            in_flight: Arc::default(),
            child_state: None,
            closed: false,
        }
    }

    /// Calls picked by this policy that have not ended.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Publishes the child's latest state with its picker wrapped (or `force`:
    /// republishes for a new config).
    fn publish(&mut self, force: bool, controller: &mut dyn ChannelController) {
        let mut changed = force;
        while let Some(update) = self.group.poll_update() {
            self.child_state = Some(update.state);
            changed = true;
        }
        let (Some(state), Some(config), true) = (&self.child_state, &self.config, changed) else {
            return;
        };
        controller.update_picker(LbState {
            connectivity_state: state.connectivity_state,
            picker: Arc::new(ClusterImplPicker {
                child: state.picker.clone(),
                cluster: config.cluster.clone(),
                max: config.max_concurrent_requests,
                drops: config.drops.clone(),
                in_flight: Arc::clone(&self.in_flight),
                random: Arc::clone(&self.random),
            }),
        });
    }
}

impl LbPolicy for ClusterImpl {
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
        let Some(config) = config.and_then(|c| c.downcast_ref::<ClusterImplConfig>()) else {
            return Err(UpdateError::Config(ConfigError::new(
                "",
                format!("{NAME} needs an xds_cluster_impl config"),
            )));
        };
        if !self.group.is_active(CHILD) {
            // The group is open and has no child yet: cannot fail.
            let _ = self.group.add(CHILD, &config.child_policy);
        }
        let force = self.config.as_ref() != Some(config);
        self.config = Some(config.clone());
        let result = if let Err(status) = &update.endpoints {
            self.group.resolver_error(status, controller, now);
            Ok(())
        } else {
            self.group
                .update(CHILD, update, &config.child_policy, controller, now)
        };
        self.publish(force, controller);
        result
    }

    group_forwarding!();

    fn describe(&self, view: &mut PolicyView) {
        if let Some(config) = &self.config {
            view.detail("cluster", &config.cluster);
            view.detail(
                "in flight",
                format_args!("{} of {}", self.in_flight(), config.max_concurrent_requests),
            );
            for (category, per_million) in &config.drops {
                view.detail(
                    format!("drop {category}"),
                    format_args!("{per_million} per million"),
                );
            }
        }
        view.children.extend(self.group.describe_children());
    }
}

/// One call in flight; dropping it (when its pick's callback runs, or if the
/// callback is dropped unrun) ends the count.
struct InFlight(Arc<AtomicU32>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct ClusterImplPicker {
    child: Arc<dyn Picker>,
    cluster: String,
    max: u32,
    drops: Vec<(String, u32)>,
    in_flight: Arc<AtomicU32>,
    random: Arc<PickerRandom>,
}

impl Picker for ClusterImplPicker {
    fn pick(&self, info: &PickInfo<'_>) -> PickResult<'_> {
        for (category, per_million) in &self.drops {
            if (self.random.below(1_000_000) as u32) < *per_million {
                return PickResult::Drop(Status::unavailable(format!(
                    "dropped by xDS cluster {}'s drop category {category}",
                    self.cluster
                )));
            }
        }
        // Take a place before the child picks (two racing picks cannot both take
        // the last one); a call the child does not pick gives it back.
        let before = self.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight(Arc::clone(&self.in_flight));
        if before >= self.max {
            return PickResult::Drop(Status::unavailable(format!(
                "xDS cluster {}'s circuit breaker is open: {} calls in flight",
                self.cluster, self.max
            )));
        }
        let mut pick = match self.child.pick(info) {
            PickResult::Pick(pick) => pick,
            other => return other,
        };
        let inner = pick.on_complete.take();
        pick.on_complete = Some(Box::new(move |done: &CallCompletion<'_>| {
            drop(guard);
            if let Some(inner) = inner {
                inner(done);
            }
        }));
        PickResult::Pick(pick)
    }
}

impl fmt::Debug for ClusterImplPicker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterImplPicker")
            .field("cluster", &self.cluster)
            .field("max", &self.max)
            .field("drops", &self.drops)
            .finish_non_exhaustive()
    }
}
