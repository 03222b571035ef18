//! `xds_cluster_manager_experimental`: one child per cluster, and each call goes
//! to the child its config selector named (gRFC A28).
//!
//! ```json
//! {"children": {
//!     "cluster:c1": {"childPolicy": [{"round_robin": {}}]},
//!     "cluster:c2": {"childPolicy": [{"priority_experimental": {...}}]}
//! }}
//! ```
//!
//! - Each child is a policy in a [`BalancerGroup`] (close cache disabled),
//!   chosen from its `childPolicy` list; endpoints go to children by the first
//!   element of their [hierarchy path](crate::hierarchy).
//! - A call is routed by the [`CLUSTER_ATTRIBUTE`] of its
//!   [`PickInfo::attributes`], which the xDS resolver's config selector sets;
//!   the child's own picker then picks. A call naming no child fails
//!   UNAVAILABLE.
//! - The aggregate state is READY if any child is, else CONNECTING if any is,
//!   else IDLE if any is, else TRANSIENT_FAILURE, as in grpc-go; a call never
//!   depends on that aggregate, only on its own child's picker.
//! - Each call into the policy publishes at most one state.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_core::channelz::PolicyView;
use lb_core::config::{ConfigError, Fields};
use lb_core::{
    ChannelController, ConnectivityState, LbConfig, LbPolicy, LbPolicyBuilder, LbPolicyOptions,
    LbPolicyRegistry, LbState, ParsedLbConfig, PickInfo, PickResult, Picker, ResolverUpdate,
    Status, UpdateError, aggregate_states,
};

use crate::group::BalancerGroup;
use crate::hierarchy;

/// The policy's name in gRPC.
pub const NAME: &str = "xds_cluster_manager_experimental";

/// The call attribute naming the child a call goes to.
pub const CLUSTER_ATTRIBUTE: &str = "xds.cluster";

/// The `xds_cluster_manager` config: children by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterManagerConfig {
    /// Each child's policy, by the child's name.
    pub children: BTreeMap<String, ParsedLbConfig>,
}

/// Builds [`ClusterManager`] and parses its config.
///
/// # Examples
///
/// ```
/// use lb_group::cluster_manager::ClusterManagerConfig;
///
/// let registry = lb_group::registry();
/// let json = serde_json::json!([{"xds_cluster_manager_experimental": {"children": {
///     "cluster:a": {"childPolicy": [{"round_robin": {}}]},
/// }}}]);
/// let parsed = registry.parse_load_balancing_config(&json)?;
/// let config = parsed.config.downcast_ref::<ClusterManagerConfig>().unwrap();
/// assert_eq!(config.children["cluster:a"].name(), "round_robin");
///
/// let bad = serde_json::json!([{"xds_cluster_manager_experimental": {"children": {
///     "cluster:a": {},
/// }}}]);
/// let err = registry.parse_load_balancing_config(&bad).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "[0].xds_cluster_manager_experimental.children.cluster:a.childPolicy: is required"
/// );
/// # Ok::<(), lb_core::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ClusterManagerBuilder;

impl LbPolicyBuilder for ClusterManagerBuilder {
    fn name(&self) -> &'static str {
        NAME
    }

    fn build(&self, options: LbPolicyOptions) -> Box<dyn LbPolicy> {
        Box::new(ClusterManager::new(options))
    }

    fn parse_config(
        &self,
        config: &serde_json::Value,
        registry: &LbPolicyRegistry,
    ) -> Result<LbConfig, ConfigError> {
        let fields = Fields::new(config, "")?;
        let mut children = BTreeMap::new();
        for (name, value) in fields.object("children")?.into_iter().flatten() {
            let child = Fields::new(value, "")
                .and_then(|f| {
                    let list = f
                        .get("childPolicy")
                        .ok_or_else(|| ConfigError::new("childPolicy", "is required"))?;
                    registry
                        .parse_load_balancing_config(list)
                        .map_err(|e| e.within("childPolicy"))
                })
                .map_err(|e| e.within(name).within("children"))?;
            children.insert(name.clone(), child);
        }
        Ok(LbConfig::new(ClusterManagerConfig { children }))
    }
}

/// The `xds_cluster_manager` policy. See the [module docs](self).
#[derive(Debug)]
pub struct ClusterManager {
    group: BalancerGroup,
    children: BTreeMap<String, ParsedLbConfig>,
    /// Each child's latest state; a child that has not reported has none.
    states: BTreeMap<String, LbState>,
    closed: bool,
}

impl ClusterManager {
    /// A policy with no children yet.
    pub fn new(options: LbPolicyOptions) -> Self {
        Self {
            group: BalancerGroup::new(options, Duration::ZERO),
            children: BTreeMap::new(),
            states: BTreeMap::new(),
            closed: false,
        }
    }

    /// Takes the children's new states and publishes once if anything changed
    /// (or `force`).
    fn publish(&mut self, force: bool, controller: &mut dyn ChannelController) {
        let mut changed = force;
        while let Some(update) = self.group.poll_update() {
            if self.children.contains_key(&update.id) {
                self.states.insert(update.id, update.state);
                changed = true;
            }
        }
        if !changed {
            return;
        }
        // A child that has not reported yet is connecting.
        let state = if self.children.is_empty() {
            ConnectivityState::TransientFailure
        } else {
            aggregate_states(self.children.keys().map(|name| {
                self.states
                    .get(name)
                    .map_or(ConnectivityState::Connecting, |s| s.connectivity_state)
            }))
        };
        let pickers = self
            .children
            .keys()
            .map(|name| {
                let picker = self.states.get(name).map_or_else(
                    || LbState::queuing(ConnectivityState::Connecting).picker,
                    |s| s.picker.clone(),
                );
                (Box::from(name.as_str()), picker)
            })
            .collect();
        controller.update_picker(LbState {
            connectivity_state: state,
            picker: Arc::new(ClusterPicker { pickers }),
        });
    }
}

impl LbPolicy for ClusterManager {
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
        let Some(config) = config.and_then(|c| c.downcast_ref::<ClusterManagerConfig>()) else {
            return Err(UpdateError::Config(ConfigError::new(
                "",
                format!("{NAME} needs an xds_cluster_manager config"),
            )));
        };
        let endpoints = match update.endpoints {
            Ok(endpoints) => endpoints,
            Err(status) => {
                self.group.resolver_error(&status, controller, now);
                self.publish(false, controller);
                return Ok(());
            }
        };
        if let Some(why) = hierarchy::missing_paths(NAME, &endpoints) {
            controller.update_picker(LbState::failing(Status::unavailable(why.clone())));
            return Err(UpdateError::BadResolverState(why));
        }
        let mut split = hierarchy::split(endpoints);
        let mut structure_changed = false;
        for name in self.children.keys() {
            if !config.children.contains_key(name) {
                self.group.remove(name, controller, now);
                self.states.remove(name);
                structure_changed = true;
            }
        }
        for (name, child) in &config.children {
            if !self.children.contains_key(name) {
                // The group is not closed and `name` is not active: cannot fail.
                let _ = self.group.add(name, child);
                structure_changed = true;
            }
            let child_update = ResolverUpdate {
                endpoints: Ok(split.remove(name).unwrap_or_default()),
                ..ResolverUpdate::from_endpoints(Vec::new())
            };
            // A child that cannot use its update has published TRANSIENT_FAILURE,
            // which its calls see; the others go on.
            let _ = self
                .group
                .update(name, child_update, child, controller, now);
        }
        self.children = config.children.clone();
        self.publish(structure_changed, controller);
        Ok(())
    }

    group_forwarding!();

    fn describe(&self, view: &mut PolicyView) {
        for (name, child) in &self.children {
            let v = self
                .group
                .describe_child(name)
                .unwrap_or_else(|| PolicyView::child(name, child.name()));
            view.children.push(v);
        }
    }
}

/// Routes each call to the picker of the child its [`CLUSTER_ATTRIBUTE`] names.
struct ClusterPicker {
    pickers: HashMap<Box<str>, Arc<dyn Picker>>,
}

impl Picker for ClusterPicker {
    fn pick(&self, info: &PickInfo<'_>) -> PickResult<'_> {
        let Some(cluster) = info.attributes.get(CLUSTER_ATTRIBUTE) else {
            return PickResult::Fail(Status::unavailable(format!(
                "{NAME}: the call names no cluster (it needs the xDS config selector)"
            )));
        };
        match self.pickers.get(cluster) {
            Some(picker) => picker.pick(info),
            None => PickResult::Fail(Status::unavailable(format!(
                "{NAME}: unknown cluster selected for the call: {cluster}"
            ))),
        }
    }
}

impl fmt::Debug for ClusterPicker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.pickers.keys().map(|k| &**k).collect();
        names.sort_unstable();
        f.debug_struct("ClusterPicker")
            .field("clusters", &names)
            .finish()
    }
}
