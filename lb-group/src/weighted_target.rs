//! `weighted_target_experimental`: split calls over named targets by weight.
//!
//! ```json
//! {"targets": {
//!     "us": {"weight": 2, "childPolicy": [{"round_robin": {}}]},
//!     "eu": {"weight": 1, "childPolicy": [{"pick_first": {}}]}
//! }}
//! ```
//!
//! - Each target is a child policy in a [`BalancerGroup`] (close cache disabled),
//!   chosen from its `childPolicy` list like a `loadBalancingConfig`.
//! - Endpoints go to targets by the first element of their
//!   [hierarchy path](crate::hierarchy); endpoints without one are dropped.
//! - States are aggregated by a [`WeightedAggregator`]: calls go to READY targets in
//!   proportion to their weights.
//! - A target whose `childPolicy` names a different policy switches gracefully; a
//!   target that leaves the config is closed.
//! - Each call into the policy publishes at most one state, after every child has
//!   reacted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lb_core::channelz::PolicyView;
use lb_core::config::{ConfigError, Fields};
use lb_core::{
    ChannelController, LbConfig, LbPolicy, LbPolicyBuilder, LbPolicyOptions, LbPolicyRegistry,
    ParsedLbConfig, ResolverUpdate, UpdateError,
};

use crate::aggregator::WeightedAggregator;
use crate::group::BalancerGroup;
use crate::hierarchy;

/// The policy's name in gRPC.
pub const NAME: &str = "weighted_target_experimental";

/// The other name it is registered under.
pub const ALIAS: &str = "weighted_target";

/// The `weighted_target` config: targets by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WeightedTargetConfig {
    /// The targets, by name.
    pub targets: BTreeMap<String, Target>,
}

/// One target: its weight and child policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// The target's share of calls relative to the other targets; at least 1.
    pub weight: u32,
    /// The child policy, chosen from the target's `childPolicy` list.
    pub child_policy: ParsedLbConfig,
}

/// Builds [`WeightedTarget`] and parses its config.
///
/// # Examples
///
/// ```
/// use lb_core::LbPolicyRegistry;
/// use lb_group::weighted_target::WeightedTargetConfig;
///
/// let mut registry = LbPolicyRegistry::with_builtins();
/// lb_group::register(&mut registry);
/// let json = serde_json::json!([{"weighted_target_experimental": {"targets": {
///     "us": {"weight": 2, "childPolicy": [{"round_robin": {}}]},
/// }}}]);
/// let parsed = registry.parse_load_balancing_config(&json)?;
/// let config = parsed.config.downcast_ref::<WeightedTargetConfig>().unwrap();
/// assert_eq!(config.targets["us"].weight, 2);
///
/// let bad = serde_json::json!([{"weighted_target": {"targets": {
///     "us": {"weight": 0, "childPolicy": [{"round_robin": {}}]},
/// }}}]);
/// let err = registry.parse_load_balancing_config(&bad).unwrap_err();
/// assert_eq!(err.to_string(), "[0].weighted_target.targets.us.weight: must be at least 1");
/// # Ok::<(), lb_core::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct WeightedTargetBuilder;

impl LbPolicyBuilder for WeightedTargetBuilder {
    fn name(&self) -> &'static str {
        NAME
    }

    fn build(&self, options: LbPolicyOptions) -> Box<dyn LbPolicy> {
        Box::new(WeightedTarget::new(options))
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
) -> Result<WeightedTargetConfig, ConfigError> {
    let fields = Fields::new(config, "")?;
    let mut targets = BTreeMap::new();
    for (name, value) in fields.object("targets")?.into_iter().flatten() {
        let target = parse_target(value, registry).map_err(|e| e.within(name).within("targets"))?;
        targets.insert(name.clone(), target);
    }
    Ok(WeightedTargetConfig { targets })
}

fn parse_target(
    value: &serde_json::Value,
    registry: &LbPolicyRegistry,
) -> Result<Target, ConfigError> {
    let fields = Fields::new(value, "")?;
    let weight = fields
        .u32("weight")?
        .ok_or_else(|| ConfigError::new("weight", "is required"))?;
    if weight == 0 {
        return Err(ConfigError::new("weight", "must be at least 1"));
    }
    let list = fields
        .get("childPolicy")
        .ok_or_else(|| ConfigError::new("childPolicy", "is required"))?;
    let child_policy = registry
        .parse_load_balancing_config(list)
        .map_err(|e| e.within("childPolicy"))?;
    Ok(Target {
        weight,
        child_policy,
    })
}

/// The `weighted_target` policy. See the [module docs](self).
#[derive(Debug)]
pub struct WeightedTarget {
    group: BalancerGroup,
    aggregator: WeightedAggregator,
    targets: BTreeMap<String, Target>,
    closed: bool,
}

impl WeightedTarget {
    /// A policy with no targets yet.
    pub fn new(options: LbPolicyOptions) -> Self {
        Self {
            group: BalancerGroup::new(options, Duration::ZERO),
            aggregator: WeightedAggregator::new(),
            targets: BTreeMap::new(),
            closed: false,
        }
    }

    /// Feeds the children's new states to the aggregator and publishes once if
    /// anything changed (or `force`).
    fn publish(&mut self, force: bool, controller: &mut dyn ChannelController) {
        let mut changed = force;
        while let Some(update) = self.group.poll_update() {
            changed |= self.aggregator.update_state(&update.id, update.state);
        }
        if changed {
            controller.update_picker(self.aggregator.build());
        }
    }
}

impl LbPolicy for WeightedTarget {
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
        let endpoints = match update.endpoints {
            Ok(endpoints) => endpoints,
            Err(status) => {
                self.group.resolver_error(&status, controller, now);
                self.publish(false, controller);
                return Ok(());
            }
        };
        if let Some(why) = hierarchy::missing_paths(NAME, &endpoints) {
            controller.update_picker(lb_core::LbState::failing(lb_core::Status::unavailable(
                why.clone(),
            )));
            return Err(UpdateError::BadResolverState(why));
        }
        let Some(config) = config.and_then(|c| c.downcast_ref::<WeightedTargetConfig>()) else {
            return Err(UpdateError::Config(ConfigError::new(
                "",
                format!("{NAME} needs a weighted_target config"),
            )));
        };
        let mut split = hierarchy::split(endpoints);
        let mut structure_changed = false;

        for name in self.targets.keys() {
            if !config.targets.contains_key(name) {
                self.aggregator.remove(name);
                self.group.remove(name, controller, now);
                structure_changed = true;
            }
        }
        for (name, target) in &config.targets {
            match self.targets.get(name) {
                None => {
                    self.aggregator.add(name, target.weight);
                    // The group is not closed and `name` is not active: cannot fail.
                    let _ = self.group.add(name, &target.child_policy);
                    structure_changed = true;
                }
                Some(old) if old.weight != target.weight => {
                    self.aggregator.set_weight(name, target.weight);
                    structure_changed = true;
                }
                Some(_) => {}
            }
            let child_update = ResolverUpdate {
                endpoints: Ok(split.remove(name).unwrap_or_default()),
                service_config: update.service_config.clone(),
                attributes: update.attributes.clone(),
                resolution_note: update.resolution_note.clone(),
                config_selector: None,
            };
            // A child that cannot use its share (no endpoints, say) has published
            // TRANSIENT_FAILURE, which the aggregate reflects; like grpc-go, the
            // parent does not fail the whole update for it.
            let _ = self
                .group
                .update(name, child_update, &target.child_policy, controller, now);
        }
        self.targets = config.targets.clone();
        self.publish(structure_changed || self.targets.is_empty(), controller);
        Ok(())
    }

    group_forwarding!();

    fn describe(&self, view: &mut PolicyView) {
        let total: u64 = self.targets.values().map(|t| u64::from(t.weight)).sum();
        for (name, target) in &self.targets {
            let mut v = self
                .group
                .describe_child(name)
                .unwrap_or_else(|| PolicyView::child(name, target.child_policy.name()));
            v.detail("weight", target.weight);
            v.detail("share", format_args!("{} of {total}", target.weight));
            view.children.push(v);
        }
    }
}
