//! [`BalancerGroup`]: many child policies driven as one, with a timed close cache.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_core::{
    Address, ChannelController, LbPolicy, LbPolicyOptions, LbState, ParsedLbConfig, ResolverUpdate,
    Status, Subchannel, SubchannelId, SubchannelState, UpdateError,
};

use lb_core::channelz::PolicyView;

use crate::cache::CloseCache;
use crate::graceful_switch::{GracefulSwitch, Slot, SlotMeta, SlotScheduler};

/// Why [`BalancerGroup::add`] refused a child.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddError {
    /// The group was closed; closing is terminal.
    #[error("balancer group is closed")]
    Closed,
    /// A child with this id is already active. Remove it first; the group never
    /// replaces a running child silently.
    #[error("child {0:?} is already in the balancer group")]
    AlreadyActive(String),
}

/// A state an active child published, for the group's parent to aggregate.
#[derive(Clone, Debug)]
pub struct ChildStateUpdate {
    /// The child's id.
    pub id: String,
    /// What it published.
    pub state: LbState,
}

/// Many child policies driven as one, each under an id, with a timed cache for
/// removed children.
///
/// The group is a state machine driven by its parent policy on the serializer: every
/// method runs there, takes the time and, where a child may act, the parent's
/// [`ChannelController`]. The group does not start threads or read the clock.
///
/// ```text
///   parent policy ──add/update/remove/work/…──> BalancerGroup ──> child policies
///        ^                                            │   (each a graceful switch)
///        └────────── poll_update() ◀── states ────────┘
///   channel  ◀── new_subchannel / request_resolution / wake_at ── (passed straight on)
/// ```
///
/// - **Children** are built at once by [`add`](Self::add) and receive resolver
///   updates through [`update`](Self::update). An update whose config names a
///   different policy switches the child gracefully: the new policy runs beside the
///   old one, which keeps serving until the new one is ready (or the old one stops
///   being READY).
/// - **States** that active children publish are queued; the parent drains them with
///   [`poll_update`](Self::poll_update) after each call and aggregates them.
/// - **Subchannels** are tracked per child: [`subchannel_update`](Self::subchannel_update)
///   reaches the child that created the subchannel, and closing a child shuts down
///   every subchannel it created, even ones the child forgot.
/// - **Removed children** stay in a cache for the close timeout, still running (their
///   subchannels keep their connections and their updates), but their states no longer
///   reach the parent. [`add`](Self::add) of the same id and policy revives one at
///   once. When the timeout passes, [`work`](Self::work) closes it. A timeout of zero
///   disables the cache.
/// - **Closing** is terminal: [`close`](Self::close) closes every child, cached ones
///   included, and afterwards every method does nothing (`add` fails).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lb_core::{endpoints, ConnectivityState, LbPolicyRegistry, ResolverUpdate};
/// use lb_group::BalancerGroup;
/// use lb_testkit::{FakeController, ManualClock};
///
/// let clock = ManualClock::new();
/// let mut ctrl = FakeController::new();
/// let mut group = BalancerGroup::new(ctrl.policy_options(), Duration::from_secs(5));
/// let rr = LbPolicyRegistry::with_builtins()
///     .parse_load_balancing_config(&serde_json::json!([{"round_robin": {}}]))?;
///
/// group.add("b1", &rr)?;
/// let update = ResolverUpdate::from_endpoints(endpoints(["a0:1", "a1:1"]));
/// group.update("b1", update, &rr, &mut ctrl, clock.now()).unwrap();
/// let subchannels = ctrl.verify_new_subchannels(2);
/// group.subchannel_update(
///     &subchannels[0],
///     &lb_core::SubchannelState::new(ConnectivityState::Ready),
///     &mut ctrl,
///     clock.now(),
/// );
/// let mut last = None;
/// while let Some(u) = group.poll_update() {
///     last = Some(u);
/// }
/// let last = last.unwrap();
/// assert_eq!((last.id.as_str(), last.state.connectivity_state), ("b1", ConnectivityState::Ready));
///
/// // Removed: cached for 5 s, its subchannels still open.
/// group.remove("b1", &mut ctrl, clock.now());
/// assert!(group.is_cached("b1"));
/// ctrl.verify_no_shutdowns();
///
/// // The timeout passes: the child is closed and its subchannels shut down.
/// group.work(&mut ctrl, clock.advance(Duration::from_secs(5)));
/// assert!(!group.is_cached("b1"));
/// ctrl.verify_shutdowns(&[subchannels[0].id(), subchannels[1].id()]);
///
/// group.close();
/// assert_eq!(group.add("b1", &rr).unwrap_err().to_string(), "balancer group is closed");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct BalancerGroup {
    close_timeout: Duration,
    active: BTreeMap<Arc<str>, Child>,
    cache: CloseCache<Child>,
    shared: Shared,
    closed: bool,
}

/// The group's state that calls into a child may touch.
struct Shared {
    options: LbPolicyOptions,
    /// Which child (and which of its slots) created each live subchannel.
    owners: HashMap<SubchannelId, Owner>,
    /// States of active children, waiting for the parent.
    updates: VecDeque<ChildStateUpdate>,
    next_serial: u64,
}

#[derive(Clone, Debug)]
struct Owner {
    child: Arc<str>,
    slot: u64,
}

/// One child: its policy (or two, during a switch) and what the group remembers.
struct Child {
    id: Arc<str>,
    switch: GracefulSwitch,
    /// The last state the child published (after the switch logic).
    state: Option<LbState>,
    /// The last config given to the child, reused for resolver errors.
    config: ParsedLbConfig,
    ignore_resolution_requests: bool,
}

impl BalancerGroup {
    /// A group whose children are built with `options` (each with its own work
    /// scheduler that also wakes the parent's) and whose removed children are cached
    /// for `close_timeout` (zero: no cache).
    pub fn new(options: LbPolicyOptions, close_timeout: Duration) -> Self {
        Self {
            close_timeout,
            active: BTreeMap::new(),
            cache: CloseCache::new(),
            shared: Shared {
                options,
                owners: HashMap::new(),
                updates: VecDeque::new(),
                next_serial: 1,
            },
            closed: false,
        }
    }

    /// Adds a child running the policy `config` names, under `id`, and builds it at
    /// once. The child gets addresses with [`update`](Self::update).
    ///
    /// If `id` is in the close cache and runs the same policy, that child is revived
    /// instead: it keeps its subchannels, and its last state is queued for the parent
    /// at once. If it runs a different policy, it is closed (its subchannels shut
    /// down) before the new child is built.
    ///
    /// # Errors
    ///
    /// The group is closed, or `id` is already active.
    pub fn add(&mut self, id: &str, config: &ParsedLbConfig) -> Result<(), AddError> {
        if self.closed {
            return Err(AddError::Closed);
        }
        if self.active.contains_key(id) {
            return Err(AddError::AlreadyActive(id.to_owned()));
        }
        if let Some(mut child) = self.cache.remove(id) {
            if child.switch.latest_name() == config.name() {
                child.config = config.clone();
                if let Some(state) = &child.state {
                    self.shared.updates.push_back(ChildStateUpdate {
                        id: id.to_owned(),
                        state: state.clone(),
                    });
                }
                self.active.insert(child.id.clone(), child);
                return Ok(());
            }
            close_child(child, &mut self.shared.owners);
        }
        let id: Arc<str> = Arc::from(id);
        let slot = self.shared.build_slot(config);
        let child = Child {
            id: id.clone(),
            switch: GracefulSwitch::new(slot),
            state: None,
            config: config.clone(),
            ignore_resolution_requests: false,
        };
        self.active.insert(id, child);
        Ok(())
    }

    /// Sends a resolver update and config to the active child `id` and returns what
    /// the child returned. Unknown ids and a closed group do nothing and return
    /// `Ok(())`.
    ///
    /// If `config` names a different policy than the child's, the child switches to
    /// it gracefully (see [`BalancerGroup`]); naming the policy that still serves
    /// abandons a switch under way.
    ///
    /// # Errors
    ///
    /// The child's own [`LbPolicy::resolver_update`] error.
    pub fn update(
        &mut self,
        id: &str,
        update: ResolverUpdate,
        config: &ParsedLbConfig,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) -> Result<(), UpdateError> {
        if self.closed {
            return Ok(());
        }
        let Some(child) = self.active.get_mut(id) else {
            return Ok(());
        };
        if config.name() != child.switch.latest_name() {
            log::info!(
                "channel {}: child {id:?}: switching gracefully from {} to {}",
                self.shared.options.channelz.target(),
                child.switch.latest_name(),
                config.name()
            );
            let retired = if config.name() == child.switch.current_name() {
                child.switch.cancel_pending()
            } else {
                child.switch.switch_to(self.shared.build_slot(config))
            };
            if let Some(slot) = retired {
                close_slot(slot, &mut self.shared.owners);
            }
        }
        child.config = config.clone();
        let serial = child.switch.latest().serial;
        let result = child.call(serial, &mut self.shared, controller, |policy, cc| {
            policy.resolver_update(update, Some(&config.config), cc, now)
        });
        child.settle(&mut self.shared, true);
        result.unwrap_or(Ok(()))
    }

    /// Sends a resolver error to every active child (with its last config).
    pub fn resolver_error(
        &mut self,
        error: &Status,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) {
        if self.closed {
            return;
        }
        for child in self.active.values_mut() {
            let serial = child.switch.latest().serial;
            let config = child.config.config.clone();
            let update = ResolverUpdate::from_error(error.clone());
            // A policy that cannot use an error has published why; nothing to add.
            let _ = child.call(serial, &mut self.shared, controller, |policy, cc| {
                policy.resolver_update(update, Some(&config), cc, now)
            });
            child.settle(&mut self.shared, true);
        }
    }

    /// Asks every active child to leave IDLE.
    pub fn exit_idle(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        if self.closed {
            return;
        }
        for child in self.active.values_mut() {
            child.exit_idle(&mut self.shared, controller, now);
        }
    }

    /// Asks the active child `id` to leave IDLE. Unknown ids do nothing.
    pub fn exit_idle_one(
        &mut self,
        id: &str,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) {
        if self.closed {
            return;
        }
        if let Some(child) = self.active.get_mut(id) {
            child.exit_idle(&mut self.shared, controller, now);
        }
    }

    /// Delivers a subchannel's new state to the child that created it, active or
    /// cached. Returns whether a child of this group owns the subchannel.
    pub fn subchannel_update(
        &mut self,
        subchannel: &Subchannel,
        state: &SubchannelState,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) -> bool {
        if self.closed {
            return false;
        }
        let Some(owner) = self.shared.owners.get(&subchannel.id()).cloned() else {
            return false;
        };
        let (child, active) = match self.active.get_mut(&*owner.child) {
            Some(child) => (child, true),
            None => match self.cache.get_mut(&owner.child) {
                Some(child) => (child, false),
                None => return false,
            },
        };
        let delivered = child
            .call(owner.slot, &mut self.shared, controller, |policy, cc| {
                policy.subchannel_update(subchannel, state, cc, now);
            })
            .is_some();
        child.settle(&mut self.shared, active);
        delivered
    }

    /// Does what is due at `now`: closes cached children whose timeout passed, then
    /// runs [`LbPolicy::work`] of every child (active or cached) whose own wake-up is
    /// due or whose work scheduler was called. Calling it early does nothing.
    pub fn work(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        if self.closed {
            return;
        }
        for child in self.cache.expire(now) {
            close_child(child, &mut self.shared.owners);
        }
        let children = self
            .active
            .values_mut()
            .map(|c| (c, true))
            .chain(self.cache.values_mut().map(|c| (c, false)));
        for (child, active) in children {
            let (serials, n) = child.switch.serials();
            for &serial in &serials[..n] {
                let due = child
                    .switch
                    .slot_mut(serial)
                    .is_some_and(|slot| slot.meta.take_due(now));
                if !due {
                    continue;
                }
                child.call(serial, &mut self.shared, controller, |policy, cc| {
                    policy.work(cc, now);
                });
                child.settle(&mut self.shared, active);
            }
        }
    }

    /// Removes the active child `id`. With a close timeout it moves to the cache,
    /// still running, and a wake-up is asked for when the timeout ends; without one it
    /// is closed at once. Unknown ids and a closed group do nothing.
    pub fn remove(&mut self, id: &str, controller: &mut dyn ChannelController, now: Instant) {
        if self.closed {
            return;
        }
        let Some(child) = self.active.remove(id) else {
            return;
        };
        if self.close_timeout.is_zero() {
            close_child(child, &mut self.shared.owners);
            return;
        }
        let expires_at = now.checked_add(self.close_timeout);
        if let Some(deadline) = expires_at {
            controller.wake_at(deadline);
        }
        // `id` was active, so it cannot also be cached; close anything found anyway.
        if let Some(old) = self.cache.insert(child.id.clone(), child, expires_at) {
            close_child(old, &mut self.shared.owners);
        }
    }

    /// Closes the child `id` at once, whether it is active or cached (gRFC A115: a
    /// child that left the config is not worth keeping). Unknown ids do nothing.
    pub fn remove_immediately(&mut self, id: &str) {
        if self.closed {
            return;
        }
        let child = self.active.remove(id).or_else(|| self.cache.remove(id));
        if let Some(child) = child {
            close_child(child, &mut self.shared.owners);
        }
    }

    /// Makes the child `id` (active or cached) drop its re-resolution requests, or
    /// pass them on again.
    pub fn set_ignore_resolution_requests(&mut self, id: &str, ignore: bool) {
        let child = match self.active.get_mut(id) {
            Some(child) => Some(child),
            None => self.cache.get_mut(id),
        };
        if let Some(child) = child {
            child.ignore_resolution_requests = ignore;
        }
    }

    /// The next state an active child published, oldest first. Drain it after every
    /// call into the group. Always `None` after [`close`](Self::close).
    #[must_use]
    pub fn poll_update(&mut self) -> Option<ChildStateUpdate> {
        self.shared.updates.pop_front()
    }

    /// When the earliest cached child expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.cache.next_deadline()
    }

    /// Whether `id` is an active child.
    pub fn is_active(&self, id: &str) -> bool {
        self.active.contains_key(id)
    }

    /// Whether `id` is in the close cache.
    pub fn is_cached(&self, id: &str) -> bool {
        self.cache.contains(id)
    }

    /// Shows child `id` for channelz (an active child, or one in the close cache,
    /// marked `"closing at"`): its name in the group, its policy (the current one of
    /// a graceful switch, with the pending one as a child), its state and its own
    /// description. `None` if the group has no such child.
    pub fn describe_child(&self, id: &str) -> Option<PolicyView> {
        if let Some(child) = self.active.get(id) {
            return Some(child.describe());
        }
        self.cache
            .iter()
            .find(|(k, _, _)| *k == id)
            .map(|(_, at, child)| {
                let mut view = child.describe();
                view.detail("closing at", format_args!("{at:?}"));
                view
            })
    }

    /// Shows every child for channelz ([`BalancerGroup::describe_child`]): the
    /// active ones in id order, then those in the close cache.
    pub fn describe_children(&self) -> Vec<PolicyView> {
        let mut views: Vec<PolicyView> = self.active.values().map(Child::describe).collect();
        for (_, at, child) in self.cache.iter() {
            let mut view = child.describe();
            view.detail("closing at", format_args!("{at:?}"));
            views.push(view);
        }
        views
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Closes the group for good: closes every cached child at once and every
    /// active child, shutting down every subchannel any of them created, and drops
    /// queued states. Afterwards nothing reaches the parent: every method does
    /// nothing, [`add`](Self::add) fails, and the children's work schedulers no
    /// longer wake the parent.
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        for child in self.cache.drain() {
            close_child(child, &mut self.shared.owners);
        }
        for child in std::mem::take(&mut self.active).into_values() {
            close_child(child, &mut self.shared.owners);
        }
        self.shared.owners.clear();
        self.shared.updates.clear();
    }
}

impl Drop for BalancerGroup {
    /// A group dropped without [`BalancerGroup::close`] closes itself, so its
    /// children's subchannels never outlive it.
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for BalancerGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalancerGroup")
            .field("active", &self.active.keys().collect::<Vec<_>>())
            .field("cached", &self.cache.len())
            .field("close_timeout", &self.close_timeout)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Builds the policy `config` names in a new slot with its own work scheduler.
    fn build_slot(&mut self, config: &ParsedLbConfig) -> Slot {
        let serial = self.next_serial;
        self.next_serial += 1;
        let scheduler = Arc::new(SlotScheduler::new(self.options.work_scheduler.clone()));
        let mut options = self.options.clone();
        options.work_scheduler = scheduler.clone();
        let policy = config.builder.build(options);
        Slot::new(serial, config.name(), policy, scheduler)
    }
}

impl Child {
    fn describe(&self) -> PolicyView {
        let mut view = PolicyView::child(&*self.id, self.switch.current_name());
        self.switch.describe(&mut view);
        // What the group publishes for the child (after the switch logic).
        if let Some(state) = &self.state {
            view.state = Some(state.connectivity_state);
        }
        view
    }

    /// Runs `f` on the slot `serial` with a controller that records what the slot
    /// does. `None` if the slot no longer runs.
    fn call<R>(
        &mut self,
        serial: u64,
        shared: &mut Shared,
        parent: &mut dyn ChannelController,
        f: impl FnOnce(&mut dyn LbPolicy, &mut dyn ChannelController) -> R,
    ) -> Option<R> {
        // Only the latest slot may ask for re-resolution (the one that has the
        // addresses the resolver would refresh).
        let forward_resolution =
            !self.ignore_resolution_requests && self.switch.latest().serial == serial;
        let owner = Owner {
            child: self.id.clone(),
            slot: serial,
        };
        let slot = self.switch.slot_mut(serial)?;
        let mut cc = ChildController {
            parent,
            meta: &mut slot.meta,
            owners: &mut shared.owners,
            owner,
            forward_resolution,
        };
        Some(f(&mut *slot.policy, &mut cc))
    }

    /// Applies the graceful-switch decision after a call: closes a retired slot and
    /// records (and, for an active child, queues) what the child now publishes.
    fn settle(&mut self, shared: &mut Shared, active: bool) {
        let settled = self.switch.settle();
        if let Some(slot) = settled.retired {
            log::info!(
                "channel {}: child {:?}: {} took over from {}",
                shared.options.channelz.target(),
                self.id,
                self.switch.current_name(),
                slot.name
            );
            close_slot(slot, &mut shared.owners);
        }
        let Some(state) = settled.publish else {
            return;
        };
        if active {
            shared.updates.push_back(ChildStateUpdate {
                id: self.id.to_string(),
                state: state.clone(),
            });
        }
        self.state = Some(state);
    }

    fn exit_idle(&mut self, shared: &mut Shared, parent: &mut dyn ChannelController, now: Instant) {
        let serial = self.switch.latest().serial;
        self.call(serial, shared, parent, |policy, cc| {
            policy.exit_idle(cc, now)
        });
        self.settle(shared, true);
    }
}

/// Closes both slots of a child.
fn close_child(child: Child, owners: &mut HashMap<SubchannelId, Owner>) {
    for slot in child.switch.into_slots() {
        close_slot(slot, owners);
    }
}

/// Closes a slot's policy, then shuts down every subchannel it created (shutdown is
/// idempotent, so the ones the policy shut down itself are not shut down twice).
fn close_slot(mut slot: Slot, owners: &mut HashMap<SubchannelId, Owner>) {
    slot.meta.scheduler.close();
    slot.policy.close();
    for subchannel in slot.meta.subchannels.drain(..) {
        subchannel.shutdown();
        owners.remove(&subchannel.id());
    }
}

/// The controller a child's policy sees: records what the child does and passes
/// subchannel creation, re-resolution and wake-ups on to the parent's controller.
struct ChildController<'a> {
    parent: &'a mut dyn ChannelController,
    meta: &'a mut SlotMeta,
    owners: &'a mut HashMap<SubchannelId, Owner>,
    owner: Owner,
    forward_resolution: bool,
}

impl ChannelController for ChildController<'_> {
    fn new_subchannel(&mut self, address: &Address) -> Subchannel {
        let subchannel = self.parent.new_subchannel(address);
        self.owners.insert(subchannel.id(), self.owner.clone());
        for gone in self.meta.track(subchannel.clone()) {
            self.owners.remove(&gone.id());
        }
        subchannel
    }

    fn update_picker(&mut self, state: LbState) {
        self.meta.state = Some(state);
        self.meta.reported = true;
    }

    fn request_resolution(&mut self) {
        if self.forward_resolution {
            self.parent.request_resolution();
        }
    }

    fn wake_at(&mut self, deadline: Instant) {
        self.meta.add_deadline(deadline);
        self.parent.wake_at(deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>() {}
    fn assert_sync<T: Sync>() {}

    #[test]
    fn handle_types_can_move_to_the_serializer() {
        // A parent policy holds the group and must be `Send` (`LbPolicy: Send`).
        assert_send::<BalancerGroup>();
        assert_send::<crate::WeightedAggregator>();
        assert_send::<ChildStateUpdate>();
        assert_sync::<AddError>();
        // Pickers are shared across calling threads.
        assert_send::<crate::aggregator::WeightedPicker>();
        assert_sync::<crate::aggregator::WeightedPicker>();
        assert_sync::<SlotScheduler>();
    }
}
