//! The RLS policy's children: one refcounted child policy per target, run in a
//! [`BalancerGroup`] without a close cache.
//!
//! ```text
//!   cache entry targets ─┐ acquire / release              ┌─> group child "target-a"
//!   default target slot ─┼──> ChildPolicies { target → refs, state, picker } ─┤
//!                        │    (refs 0: removed and closed at once)            └─> …
//!                        └─ a target whose config does not parse is "lamed":
//!                           TRANSIENT_FAILURE with a picker failing with the parse
//!                           error; it is not in the group
//! ```
//!
//! Each child's config is the RLS config's child policy config with the target
//! field set to its target, re-parsed per target. States the group queues are
//! absorbed after every call into it, with grpc-go's one exception: a child's move
//! from TRANSIENT_FAILURE to CONNECTING is ignored (failing calls are better than
//! queuing them while subchannels flap).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_core::channelz::PolicyView;
use lb_core::{
    ChannelController, ConnectivityState, FailPicker, LbPolicyOptions, LbPolicyRegistry, Picker,
    QueuePicker, ResolverUpdate, Status, Subchannel, SubchannelState,
};
use lb_group::BalancerGroup;

use crate::config::RlsConfig;
use crate::picker::ChildPick;

/// One child policy and the references to it.
struct Child {
    refs: usize,
    state: ConnectivityState,
    picker: Arc<dyn Picker>,
    /// Whether it runs in the group (false: lamed by a bad config).
    in_group: bool,
}

/// The children of one RLS policy. See the [module docs](self).
pub(crate) struct ChildPolicies {
    group: BalancerGroup,
    children: HashMap<Arc<str>, Child>,
    registry: Arc<LbPolicyRegistry>,
    changed: bool,
}

impl ChildPolicies {
    pub(crate) fn new(options: LbPolicyOptions) -> Self {
        let registry = options.registry.clone();
        Self {
            group: BalancerGroup::new(options, Duration::ZERO),
            children: HashMap::new(),
            registry,
            changed: false,
        }
    }

    /// Takes a reference to the child for `target`, creating and configuring it if
    /// this is the first.
    pub(crate) fn acquire(
        &mut self,
        target: &str,
        config: &RlsConfig,
        update: &ResolverUpdate,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) {
        if let Some(child) = self.children.get_mut(target) {
            child.refs += 1;
            return;
        }
        let id: Arc<str> = Arc::from(target);
        self.children.insert(
            id.clone(),
            Child {
                refs: 1,
                state: ConnectivityState::Connecting,
                picker: Arc::new(QueuePicker),
                in_group: false,
            },
        );
        self.changed = true;
        self.configure(&id, config, update, controller, now);
    }

    /// Releases a reference; the last one removes and closes the child.
    pub(crate) fn release(
        &mut self,
        target: &str,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) {
        let Some(child) = self.children.get_mut(target) else {
            debug_assert!(false, "release of {target:?}, which has no child");
            return;
        };
        child.refs -= 1;
        if child.refs > 0 {
            return;
        }
        if let Some(child) = self.children.remove(target)
            && child.in_group
        {
            self.group.remove(target, controller, now);
        }
        self.changed = true;
    }

    /// Builds every child again (the child policy's name changed).
    pub(crate) fn rebuild_all(
        &mut self,
        config: &RlsConfig,
        update: &ResolverUpdate,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) {
        let ids: Vec<Arc<str>> = self.children.keys().cloned().collect();
        for id in &ids {
            let child = self.children.get_mut(id).expect("listed");
            if child.in_group {
                child.in_group = false;
                self.group.remove(id, controller, now);
            }
            child.state = ConnectivityState::Connecting;
            child.picker = Arc::new(QueuePicker);
        }
        self.changed = true;
        for id in &ids {
            self.configure(id, config, update, controller, now);
        }
    }

    /// Sends every child its config and `update` again (the child config or the
    /// resolver state changed).
    pub(crate) fn push_all(
        &mut self,
        config: &RlsConfig,
        update: &ResolverUpdate,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) {
        let ids: Vec<Arc<str>> = self.children.keys().cloned().collect();
        for id in &ids {
            self.configure(id, config, update, controller, now);
        }
    }

    /// Parses the child's config for its target and sends it with `update`; a
    /// config that does not parse lames the child.
    fn configure(
        &mut self,
        id: &Arc<str>,
        config: &RlsConfig,
        update: &ResolverUpdate,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) {
        let parsed = config.child_config_for_target(id, &self.registry);
        let Some(child) = self.children.get_mut(id) else {
            return;
        };
        match parsed {
            Ok(parsed) => {
                if !child.in_group {
                    if let Err(e) = self.group.add(id, &parsed) {
                        log::error!("rls: cannot add child {id:?}: {e}");
                        return;
                    }
                    child.in_group = true;
                    child.state = ConnectivityState::Connecting;
                    child.picker = Arc::new(QueuePicker);
                    self.changed = true;
                }
                // A child that cannot use the update has published why.
                let _ = self
                    .group
                    .update(id, update.clone(), &parsed, controller, now);
                self.absorb();
            }
            Err(e) => {
                log::warn!("rls: child policy for target {id:?} lamed: {e}");
                if child.in_group {
                    child.in_group = false;
                    self.group.remove(id, controller, now);
                }
                child.state = ConnectivityState::TransientFailure;
                child.picker = Arc::new(FailPicker(Status::unavailable(format!(
                    "rls: child policy config for target {id:?} is invalid: {e}"
                ))));
                self.changed = true;
            }
        }
    }

    /// Sends a resolver error to every child.
    pub(crate) fn resolver_error(
        &mut self,
        error: &Status,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) {
        self.group.resolver_error(error, controller, now);
        self.absorb();
    }

    /// Delivers a subchannel update to the child that owns the subchannel.
    pub(crate) fn subchannel_update(
        &mut self,
        subchannel: &Subchannel,
        state: &SubchannelState,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) {
        self.group
            .subchannel_update(subchannel, state, controller, now);
        self.absorb();
    }

    /// Runs the children's due work.
    pub(crate) fn work(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        self.group.work(controller, now);
        self.absorb();
    }

    /// Asks every child to leave IDLE.
    pub(crate) fn exit_idle(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        self.group.exit_idle(controller, now);
        self.absorb();
    }

    /// Applies the states the group queued.
    fn absorb(&mut self) {
        while let Some(update) = self.group.poll_update() {
            let Some(child) = self.children.get_mut(update.id.as_str()) else {
                continue;
            };
            let new = update.state.connectivity_state;
            if child.state == ConnectivityState::TransientFailure
                && new == ConnectivityState::Connecting
            {
                continue;
            }
            child.state = new;
            child.picker = update.state.picker;
            self.changed = true;
        }
    }

    /// Whether a child changed since the last call.
    pub(crate) fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// The aggregate state: IDLE with no children and no default target, else READY
    /// if any child is, else CONNECTING if any is, else IDLE if any is, else
    /// TRANSIENT_FAILURE.
    pub(crate) fn aggregate(&self, has_default_target: bool) -> ConnectivityState {
        if self.children.is_empty() && !has_default_target {
            return ConnectivityState::Idle;
        }
        let any = |s: ConnectivityState| self.children.values().any(|c| c.state == s);
        [
            ConnectivityState::Ready,
            ConnectivityState::Connecting,
            ConnectivityState::Idle,
        ]
        .into_iter()
        .find(|s| any(*s))
        .unwrap_or(ConnectivityState::TransientFailure)
    }

    /// The children's pickers, for a new RLS picker.
    pub(crate) fn snapshot(&self) -> HashMap<Arc<str>, ChildPick> {
        self.children
            .iter()
            .map(|(id, c)| {
                (
                    id.clone(),
                    ChildPick {
                        state: c.state,
                        picker: c.picker.clone(),
                    },
                )
            })
            .collect()
    }

    /// How many references the child for `target` has (0: no child).
    #[cfg(test)]
    pub(crate) fn refs(&self, target: &str) -> usize {
        self.children.get(target).map_or(0, |c| c.refs)
    }

    /// How many children there are.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.children.len()
    }

    /// Shows each child for channelz, named by its target, in target order: its
    /// policy's own view (from the group), its references and its state.
    pub(crate) fn describe(&self) -> Vec<PolicyView> {
        let mut targets: Vec<&Arc<str>> = self.children.keys().collect();
        targets.sort();
        targets
            .into_iter()
            .map(|target| {
                let child = &self.children[target];
                let mut view = self
                    .group
                    .describe_child(target)
                    .unwrap_or_else(|| PolicyView::child(&**target, "(bad config)"));
                view.state = Some(child.state);
                view.detail("references", child.refs);
                if !child.in_group {
                    view.detail("lamed", "its config does not parse");
                }
                view
            })
            .collect()
    }

    /// Closes every child.
    pub(crate) fn close(&mut self) {
        self.group.close();
        self.children.clear();
    }
}

impl fmt::Debug for ChildPolicies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (id, c) in &self.children {
            m.entry(id, &(c.refs, c.state));
        }
        m.finish()
    }
}
