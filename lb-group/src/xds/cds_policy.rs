//! `cds_experimental`: a policy for one xDS cluster named in its config, which
//! watches the cluster's resources itself and runs the tree they make
//! ([`ClusterWatch`]). The `xds:` resolver builds the trees of the clusters
//! its routes name; this policy is for clusters named at run time: RLS's
//! targets inside xDS (`{"cds_experimental": {"cluster": "<target>"}}` as
//! RLS's child policy).
//!
//! - Until the cluster's resources arrive the policy is CONNECTING and calls
//!   wait; a cluster that cannot be used (it does not exist, has no
//!   endpoints) makes it TRANSIENT_FAILURE with a status naming why.
//! - The watches tell the policy through its `WorkScheduler`; the new tree is
//!   built in `work`, on the serializer.
//! - Register it with [`CdsBuilder::new`] over the channel's [`XdsClient`]
//!   (`lb_group::xds::register` does it with the resolver).

use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_core::channelz::PolicyView;
use lb_core::config::{ConfigError, Fields};
use lb_core::{
    ChannelController, ConnectivityState, LbConfig, LbPolicy, LbPolicyBuilder, LbPolicyOptions,
    LbPolicyRegistry, LbState, ResolverUpdate, Status, Subchannel, SubchannelState, UpdateError,
};
use serde_json::json;

use super::client::{Notify, XdsClient};
use super::cluster_watch::ClusterWatch;
use super::tree::ClusterTree;
use crate::group::BalancerGroup;

/// The policy's name in gRPC.
pub const NAME: &str = "cds_experimental";

/// The child's id in the group.
const CHILD: &str = "cluster";

/// The `cds_experimental` config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CdsConfig {
    /// The cluster.
    pub cluster: String,
}

/// Builds [`CdsPolicy`]s over one [`XdsClient`].
#[derive(Clone, Debug)]
pub struct CdsBuilder {
    client: Arc<XdsClient>,
}

impl CdsBuilder {
    /// Policies that watch clusters through `client`.
    pub fn new(client: Arc<XdsClient>) -> Self {
        Self { client }
    }
}

impl LbPolicyBuilder for CdsBuilder {
    fn name(&self) -> &'static str {
        NAME
    }

    fn build(&self, options: LbPolicyOptions) -> Box<dyn LbPolicy> {
        Box::new(CdsPolicy {
            client: Arc::clone(&self.client),
            group: BalancerGroup::new(options.clone(), Duration::ZERO),
            options,
            watch: None,
            cluster: None,
            tree: None,
            failure: None,
            child_state: None,
            closed: false,
        })
    }

    fn parse_config(
        &self,
        config: &serde_json::Value,
        _registry: &LbPolicyRegistry,
    ) -> Result<LbConfig, ConfigError> {
        let fields = Fields::new(config, "")?;
        let cluster = fields
            .string("cluster")?
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ConfigError::new("cluster", "is required"))?;
        Ok(LbConfig::new(CdsConfig {
            cluster: cluster.to_owned(),
        }))
    }
}

/// The `cds_experimental` policy. See the [module docs](self).
#[derive(Debug)]
pub struct CdsPolicy {
    client: Arc<XdsClient>,
    options: LbPolicyOptions,
    group: BalancerGroup,
    watch: Option<ClusterWatch>,
    cluster: Option<String>,
    /// The tree the child runs.
    tree: Option<ClusterTree>,
    /// Why the cluster cannot be used, while it cannot.
    failure: Option<String>,
    /// The child's latest state.
    child_state: Option<LbState>,
    closed: bool,
}

impl CdsPolicy {
    /// Reads the cluster's resources and gives the child the tree they make.
    fn refresh(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        let Some(watch) = &mut self.watch else {
            return;
        };
        match watch.tree(&self.client) {
            None => {
                if self.tree.is_none() {
                    controller.update_picker(LbState::queuing(ConnectivityState::Connecting));
                }
            }
            Some(Err(why)) => {
                if self.failure.as_ref() != Some(&why) {
                    controller.update_picker(LbState::failing(Status::unavailable(why.clone())));
                    self.failure = Some(why);
                }
            }
            Some(Ok(tree)) => {
                let recovered = self.failure.take().is_some();
                if self.tree.as_ref() == Some(&tree) && !recovered {
                    return;
                }
                let parsed = self
                    .options
                    .registry
                    .parse_load_balancing_config(&json!([tree.config]));
                let config = match parsed {
                    Ok(c) => c,
                    Err(e) => {
                        let why = format!("the tree of xDS cluster is invalid: {e}");
                        controller.update_picker(LbState::failing(Status::internal(why.clone())));
                        self.failure = Some(why);
                        return;
                    }
                };
                if !self.group.is_active(CHILD) {
                    // The group is open and has no child: cannot fail.
                    let _ = self.group.add(CHILD, &config);
                }
                let update = ResolverUpdate::from_endpoints(tree.endpoints.clone());
                let _ = self.group.update(CHILD, update, &config, controller, now);
                self.tree = Some(tree);
                self.publish(recovered, controller);
            }
        }
    }

    /// Publishes the child's latest state (or `force`: its last one again),
    /// unless the cluster cannot be used.
    fn publish(&mut self, force: bool, controller: &mut dyn ChannelController) {
        let mut changed = force;
        while let Some(update) = self.group.poll_update() {
            self.child_state = Some(update.state);
            changed = true;
        }
        if !changed || self.failure.is_some() {
            return;
        }
        if let Some(state) = &self.child_state {
            controller.update_picker(state.clone());
        }
    }
}

impl LbPolicy for CdsPolicy {
    fn resolver_update(
        &mut self,
        _update: ResolverUpdate,
        config: Option<&LbConfig>,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) -> Result<(), UpdateError> {
        if self.closed {
            return Ok(());
        }
        let Some(config) = config.and_then(|c| c.downcast_ref::<CdsConfig>()) else {
            return Err(UpdateError::Config(ConfigError::new(
                "",
                format!("{NAME} needs a cds config"),
            )));
        };
        if self.cluster.as_ref() != Some(&config.cluster) {
            let scheduler = Arc::clone(&self.options.work_scheduler);
            let notify = Notify::Call(Arc::new(move || scheduler.schedule_work()));
            let watch = ClusterWatch::start(&self.client, &config.cluster, notify)
                .map_err(UpdateError::BadResolverState)?;
            if self.group.is_active(CHILD) {
                self.group.remove_immediately(CHILD);
            }
            self.child_state = None;
            self.watch = Some(watch);
            self.cluster = Some(config.cluster.clone());
            self.tree = None;
            self.failure = None;
        }
        self.refresh(controller, now);
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
        self.group
            .subchannel_update(subchannel, state, controller, now);
        self.publish(false, controller);
    }

    fn work(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        if self.closed {
            return;
        }
        self.group.work(controller, now);
        self.refresh(controller, now);
        self.publish(false, controller);
    }

    fn exit_idle(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        if self.closed {
            return;
        }
        self.group.exit_idle(controller, now);
        self.publish(false, controller);
    }

    fn close(&mut self) {
        self.closed = true;
        self.watch = None;
        self.group.close();
    }

    fn describe(&self, view: &mut PolicyView) {
        if let Some(cluster) = &self.cluster {
            view.detail("cluster", cluster);
        }
        if let Some(why) = &self.failure {
            view.detail("failing", why);
        }
        view.children.extend(self.group.describe_children());
    }
}
