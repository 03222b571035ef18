//! `priority_experimental`: use the highest priority that works, fail over to lower
//! ones.
//!
//! ```json
//! {"children": {
//!     "local":  {"config": [{"round_robin": {}}]},
//!     "remote": {"config": [{"round_robin": {}}], "ignoreReresolutionRequests": true}
//!  },
//!  "priorities": ["local", "remote"]}
//! ```
//!
//! Children are started in priority order, only as far as needed:
//!
//! ```text
//!   p0 started ──READY──────────────────────────────> p0 serves
//!      │ TRANSIENT_FAILURE, or not READY within 10 s
//!      v
//!   p1 started (p0 keeps running) ──READY──> p1 serves
//!      │                                       │ p0 becomes READY again
//!      v                                       v
//!   … down to the last priority        p0 serves; p1 goes to the close cache for
//!                                      15 min and is revived if p0 fails again
//! ```
//!
//! - The policy publishes the chosen child's own state and picker: the highest
//!   priority that is READY or IDLE, or that is CONNECTING within its 10 s init timer,
//!   or that is not started yet; else the lowest priority.
//! - A child that has reported TRANSIENT_FAILURE gets no new init timer while it
//!   reconnects, so failover is not delayed by its CONNECTING reports.
//! - Children below the chosen one are removed to the balancer group's close cache
//!   for 15 minutes; children that leave the config are closed at once (gRFC A115).
//! - Endpoints go to children by the first element of their
//!   [hierarchy path](crate::hierarchy).
//! - A child with `ignoreReresolutionRequests` cannot ask the resolver to re-resolve.
//! - With no priorities the policy fails calls with "no priority is provided, all
//!   priorities are removed".
//! - Timers are wake-ups asked of the channel; the policy starts no thread.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use lb_core::channelz::{ChannelRef, PolicyView};
use lb_core::config::{ConfigError, Fields, json_type};
use lb_core::{
    ChannelController, ConnectivityState, Endpoint, LbConfig, LbPolicy, LbPolicyBuilder,
    LbPolicyOptions, LbPolicyRegistry, LbState, ParsedLbConfig, ResolverUpdate, Status, Subchannel,
    SubchannelState, UpdateError,
};

use crate::group::BalancerGroup;
use crate::hierarchy;

/// The policy's name in gRPC.
pub const NAME: &str = "priority_experimental";

/// The other name it is registered under.
pub const ALIAS: &str = "priority";

/// How long a de-prioritised child stays in the close cache (grpc-go's
/// `DefaultSubBalancerCloseTimeout`).
pub const SUB_BALANCER_CLOSE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// How long a newly started priority may take to become READY before the next one is
/// started too (grpc-go's `DefaultPriorityInitTimeout`).
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The failure message when the config lists no priorities.
pub const NO_PRIORITIES: &str = "no priority is provided, all priorities are removed";

/// The `priority` config.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PriorityConfig {
    /// The children, by name.
    pub children: BTreeMap<String, PriorityChild>,
    /// Child names, highest priority first. Every name is a child and each child is
    /// listed once.
    pub priorities: Vec<String>,
}

/// One child of the `priority` policy.
#[derive(Clone, Debug, PartialEq)]
pub struct PriorityChild {
    /// The child policy, chosen from the child's `config` list.
    pub config: ParsedLbConfig,
    /// Drop the child's re-resolution requests.
    pub ignore_reresolution_requests: bool,
}

/// Builds [`Priority`] and parses its config.
///
/// # Examples
///
/// ```
/// use lb_core::LbPolicyRegistry;
/// use lb_group::priority::PriorityConfig;
///
/// let mut registry = LbPolicyRegistry::with_builtins();
/// lb_group::register(&mut registry);
/// let json = serde_json::json!([{"priority_experimental": {
///     "children": {"p0": {"config": [{"round_robin": {}}]}, "p1": {"config": [{"pick_first": {}}]}},
///     "priorities": ["p0", "p1"],
/// }}]);
/// let parsed = registry.parse_load_balancing_config(&json)?;
/// assert_eq!(parsed.config.downcast_ref::<PriorityConfig>().unwrap().priorities, ["p0", "p1"]);
///
/// let bad = serde_json::json!([{"priority": {
///     "children": {"p0": {"config": [{"round_robin": {}}]}},
///     "priorities": ["p0", "p9"],
/// }}]);
/// let err = registry.parse_load_balancing_config(&bad).unwrap_err();
/// assert_eq!(err.to_string(), "[0].priority.priorities[1]: \"p9\" is not one of the children");
/// # Ok::<(), lb_core::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct PriorityBuilder;

impl LbPolicyBuilder for PriorityBuilder {
    fn name(&self) -> &'static str {
        NAME
    }

    fn build(&self, options: LbPolicyOptions) -> Box<dyn LbPolicy> {
        Box::new(Priority::new(options))
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
) -> Result<PriorityConfig, ConfigError> {
    let fields = Fields::new(config, "")?;
    let mut children = BTreeMap::new();
    for (name, value) in fields.object("children")?.into_iter().flatten() {
        let child = parse_child(value, registry).map_err(|e| e.within(name).within("children"))?;
        children.insert(name.clone(), child);
    }
    let list = fields
        .array("priorities")?
        .ok_or_else(|| ConfigError::new("priorities", "is required"))?;
    if list.is_empty() {
        return Err(ConfigError::new("priorities", "must not be empty"));
    }
    let mut priorities = Vec::with_capacity(list.len());
    let mut seen = BTreeSet::new();
    for (i, value) in list.iter().enumerate() {
        let at = |msg: String| ConfigError::new(format!("[{i}]"), msg).within("priorities");
        let name = value
            .as_str()
            .ok_or_else(|| at(format!("must be a string, not {}", json_type(value))))?;
        if !children.contains_key(name) {
            return Err(at(format!("{name:?} is not one of the children")));
        }
        if !seen.insert(name) {
            return Err(at(format!("{name:?} is listed twice")));
        }
        priorities.push(name.to_owned());
    }
    if let Some(unused) = children.keys().find(|name| !seen.contains(name.as_str())) {
        return Err(ConfigError::new("", "is not listed in priorities")
            .within(unused)
            .within("children"));
    }
    Ok(PriorityConfig {
        children,
        priorities,
    })
}

fn parse_child(
    value: &serde_json::Value,
    registry: &LbPolicyRegistry,
) -> Result<PriorityChild, ConfigError> {
    let fields = Fields::new(value, "")?;
    let list = fields
        .get("config")
        .ok_or_else(|| ConfigError::new("config", "is required"))?;
    let config = registry
        .parse_load_balancing_config(list)
        .map_err(|e| e.within("config"))?;
    Ok(PriorityChild {
        config,
        ignore_reresolution_requests: fields.bool("ignoreReresolutionRequests")?.unwrap_or(false),
    })
}

/// What the policy knows about one child of its config.
#[derive(Debug)]
struct Child {
    config: PriorityChild,
    /// The child's share of the last resolver update.
    update: ResolverUpdate,
    /// Whether the child is in the group as an active child.
    started: bool,
    /// Reported TRANSIENT_FAILURE more recently than READY or IDLE.
    reported_failure: bool,
    /// The child's last state; CONNECTING until it reports.
    state: LbState,
    /// When the child's init timer fires, if it runs.
    init_deadline: Option<Instant>,
}

/// The `priority` policy. See the [module docs](self).
#[derive(Debug)]
pub struct Priority {
    group: BalancerGroup,
    children: BTreeMap<String, Child>,
    priorities: Vec<String>,
    in_use: Option<String>,
    /// Child states the policy made up itself (a child that refused its update).
    synthetic: VecDeque<(String, LbState)>,
    closed: bool,
    /// The channel, for log messages.
    channelz: ChannelRef,
}

impl Priority {
    /// A policy with no children yet.
    pub fn new(options: LbPolicyOptions) -> Self {
        Self {
            channelz: options.channelz.clone(),
            group: BalancerGroup::new(options, SUB_BALANCER_CLOSE_TIMEOUT),
            children: BTreeMap::new(),
            priorities: Vec::new(),
            in_use: None,
            synthetic: VecDeque::new(),
            closed: false,
        }
    }

    /// The next child state to handle: made-up ones first, then the group's.
    fn next_update(&mut self) -> Option<(String, LbState)> {
        if let Some(u) = self.synthetic.pop_front() {
            return Some(u);
        }
        self.group.poll_update().map(|u| (u.id, u.state))
    }

    /// Handles every pending child state, choosing the priority after each.
    fn process(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        while let Some((name, state)) = self.next_update() {
            if self.record_state(&name, state, controller, now) {
                self.sync(Some(&name), controller, now);
            }
        }
    }

    /// Records a child's new state and starts or stops its init timer. Returns
    /// whether the state was taken (the child is known and started).
    fn record_state(
        &mut self,
        name: &str,
        state: LbState,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) -> bool {
        let Some(child) = self.children.get_mut(name) else {
            return false;
        };
        if !child.started {
            return false;
        }
        let old = std::mem::replace(&mut child.state, state).connectivity_state;
        match child.state.connectivity_state {
            ConnectivityState::Ready | ConnectivityState::Idle => {
                child.reported_failure = false;
                child.init_deadline = None;
            }
            ConnectivityState::TransientFailure => {
                child.reported_failure = true;
                child.init_deadline = None;
            }
            ConnectivityState::Connecting => {
                if !child.reported_failure && old != ConnectivityState::Connecting {
                    start_init_timer(child, controller, now);
                }
            }
            ConnectivityState::Shutdown => {}
        }
        true
    }

    /// Chooses the priority to use (see the module docs), publishes its state if the
    /// choice changed or the chosen child is the one that just reported, and starts
    /// or stops children to match.
    fn sync(
        &mut self,
        updating: Option<&str>,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) {
        let last = self.priorities.len().saturating_sub(1);
        let chosen = self.priorities.iter().enumerate().position(|(p, name)| {
            self.children.get(name).is_some_and(|c| {
                let s = c.state.connectivity_state;
                !c.started
                    || s == ConnectivityState::Ready
                    || s == ConnectivityState::Idle
                    || (s == ConnectivityState::Connecting && c.init_deadline.is_some())
                    || p == last
            })
        });
        let Some(p) = chosen else {
            return;
        };
        let name = self.priorities[p].clone();
        if self.in_use.as_deref() != Some(&name) || updating == Some(&name) {
            controller.update_picker(self.children[&name].state.clone());
        }
        self.switch_to(p, controller, now);
    }

    /// Stops every priority below `p`, and starts `p` if it is not running.
    fn switch_to(&mut self, p: usize, controller: &mut dyn ChannelController, now: Instant) {
        for i in p + 1..self.priorities.len() {
            let lower = self.priorities[i].clone();
            self.stop(&lower, controller, now);
        }
        let name = self.priorities[p].clone();
        let started = self.children.get(&name).is_some_and(|c| c.started);
        if self.in_use.as_deref() == Some(&name) && started {
            return;
        }
        log::info!(
            "channel {}: priority: {} -> {name}",
            self.channelz.target(),
            self.in_use.as_deref().unwrap_or("none")
        );
        self.in_use = Some(name.clone());
        if !started {
            self.start(&name, controller, now);
        }
    }

    /// Adds the child to the group (reviving it from the cache if it is there), starts
    /// its init timer and sends it its update.
    fn start(&mut self, name: &str, controller: &mut dyn ChannelController, now: Instant) {
        let Some(child) = self.children.get_mut(name) else {
            return;
        };
        child.started = true;
        // The policy tracks what it started, and never calls this after close.
        let _ = self.group.add(name, &child.config.config);
        start_init_timer(child, controller, now);
        self.send_update(name, controller, now);
    }

    /// Sends a started child its config and its share of the endpoints. A child that
    /// refuses the update counts as failed.
    fn send_update(&mut self, name: &str, controller: &mut dyn ChannelController, now: Instant) {
        let Some(child) = self.children.get(name) else {
            return;
        };
        self.group
            .set_ignore_resolution_requests(name, child.config.ignore_reresolution_requests);
        let result = self.group.update(
            name,
            child.update.clone(),
            &child.config.config,
            controller,
            now,
        );
        if let Err(e) = result {
            let state = LbState::failing(Status::unavailable(format!(
                "priority child {name:?} refused its update: {e}"
            )));
            self.synthetic.push_back((name.to_owned(), state));
        }
    }

    /// Removes a started child to the close cache and forgets its state, so a later
    /// start gives it a fresh init timer.
    fn stop(&mut self, name: &str, controller: &mut dyn ChannelController, now: Instant) {
        let Some(child) = self.children.get_mut(name) else {
            return;
        };
        if !child.started {
            return;
        }
        child.started = false;
        child.init_deadline = None;
        child.reported_failure = false;
        child.state = LbState::queuing(ConnectivityState::Connecting);
        self.group.remove(name, controller, now);
    }

    /// Applies a new config and endpoint list.
    fn apply(
        &mut self,
        config: &PriorityConfig,
        endpoints: Vec<Endpoint>,
        update: &ResolverUpdate,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) {
        let mut split = hierarchy::split(endpoints);
        let gone: Vec<String> = self
            .children
            .keys()
            .filter(|name| !config.children.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            self.children.remove(&name);
            self.group.remove_immediately(&name);
            if self.in_use.as_deref() == Some(&name) {
                self.in_use = None;
            }
        }
        for (name, child_config) in &config.children {
            let child_update = ResolverUpdate {
                endpoints: Ok(split.remove(name).unwrap_or_default()),
                service_config: update.service_config.clone(),
                attributes: update.attributes.clone(),
                resolution_note: update.resolution_note.clone(),
                config_selector: None,
            };
            match self.children.get_mut(name) {
                None => {
                    self.children.insert(
                        name.clone(),
                        Child {
                            config: child_config.clone(),
                            update: child_update,
                            started: false,
                            reported_failure: false,
                            state: LbState::queuing(ConnectivityState::Connecting),
                            init_deadline: None,
                        },
                    );
                }
                Some(child) => {
                    child.config = child_config.clone();
                    child.update = child_update;
                    if child.started {
                        // A different policy name switches the child gracefully.
                        self.send_update(name, controller, now);
                    }
                }
            }
        }
        self.priorities = config.priorities.clone();
        if self.priorities.is_empty() {
            self.in_use = None;
            // Drain what the children said; with no priorities nobody is chosen.
            while let Some((name, state)) = self.next_update() {
                self.record_state(&name, state, controller, now);
            }
            controller.update_picker(LbState::failing(Status::unavailable(NO_PRIORITIES)));
            return;
        }
        // Let every child's reaction to the update land before choosing once, so a
        // passing failure of one child does not cause a needless failover.
        while let Some((name, state)) = self.next_update() {
            self.record_state(&name, state, controller, now);
        }
        let in_use = self.in_use.clone();
        self.sync(in_use.as_deref(), controller, now);
        self.process(controller, now);
    }
}

fn start_init_timer(child: &mut Child, controller: &mut dyn ChannelController, now: Instant) {
    if child.init_deadline.is_some() {
        return;
    }
    // Past the end of time the timer never fires; the child is given forever.
    if let Some(deadline) = now.checked_add(INIT_TIMEOUT) {
        child.init_deadline = Some(deadline);
        controller.wake_at(deadline);
    }
}

impl LbPolicy for Priority {
    fn resolver_update(
        &mut self,
        mut update: ResolverUpdate,
        config: Option<&LbConfig>,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) -> Result<(), UpdateError> {
        if self.closed {
            return Ok(());
        }
        let endpoints = match std::mem::replace(&mut update.endpoints, Ok(Vec::new())) {
            Ok(endpoints) => endpoints,
            Err(status) => {
                self.group.resolver_error(&status, controller, now);
                self.process(controller, now);
                return Ok(());
            }
        };
        if let Some(why) = hierarchy::missing_paths(NAME, &endpoints) {
            controller.update_picker(lb_core::LbState::failing(lb_core::Status::unavailable(
                why.clone(),
            )));
            return Err(UpdateError::BadResolverState(why));
        }
        let default = PriorityConfig::default();
        let config = match config {
            None => &default,
            Some(c) => c.downcast_ref::<PriorityConfig>().ok_or_else(|| {
                UpdateError::Config(ConfigError::new(
                    "",
                    format!("{NAME} needs a priority config, not {c:?}"),
                ))
            })?,
        };
        self.apply(config, endpoints, &update, controller, now);
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
        self.process(controller, now);
    }

    fn work(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        if self.closed {
            return;
        }
        self.group.work(controller, now);
        self.process(controller, now);
        let mut fired = false;
        for child in self.children.values_mut() {
            if child.init_deadline.is_some_and(|d| d <= now) {
                child.init_deadline = None;
                fired = true;
            }
        }
        if fired {
            self.sync(None, controller, now);
            self.process(controller, now);
        }
    }

    fn exit_idle(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        if self.closed {
            return;
        }
        self.group.exit_idle(controller, now);
        self.process(controller, now);
    }

    fn close(&mut self) {
        self.closed = true;
        self.group.close();
        self.in_use = None;
        self.children.clear();
        self.synthetic.clear();
    }

    fn describe(&self, view: &mut PolicyView) {
        view.detail("in use", self.in_use.as_deref().unwrap_or("none"));
        for (i, name) in self.priorities.iter().enumerate() {
            let Some(child) = self.children.get(name) else {
                continue;
            };
            let mut v = self
                .group
                .describe_child(name)
                .unwrap_or_else(|| PolicyView::child(name, child.config.config.name()));
            v.state = Some(child.state.connectivity_state);
            v.detail("priority", i);
            v.detail("in use", self.in_use.as_deref() == Some(name));
            v.detail("started", child.started);
            v.detail(
                "failover timer",
                if child.init_deadline.is_some() {
                    "running"
                } else {
                    "not running"
                },
            );
            view.children.push(v);
        }
    }
}
