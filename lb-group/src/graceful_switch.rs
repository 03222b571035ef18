//! Graceful switch: changing a child's policy without a gap in service.
//!
//! Every child of a [`BalancerGroup`](crate::BalancerGroup) is a [`GracefulSwitch`]
//! holding one running policy (the *current* slot) and, while its policy is being
//! changed, a second one (the *pending* slot):
//!
//! ```text
//!   update names policy B while A runs      pending B reports non-CONNECTING,
//!   ─────────────────────────────────>      or current A leaves READY
//!   current A, pending B (A still serves) ────────────────────────────────> current B
//!                                                                           (A closed)
//! ```
//!
//! A slot's policy reports through the group's controller wrapper, which only records
//! what it was told (the slot's last [`LbState`] and that it reported). After each call
//! into a slot the group calls [`GracefulSwitch::settle`], which decides what the child
//! publishes and which slot, if any, retires. Deciding after the call, instead of inside
//! the slot's `update_picker`, means a policy is never closed while one of its own
//! methods is still running.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use lb_core::channelz::PolicyView;
use lb_core::{ConnectivityState, LbPolicy, LbState, Subchannel, WorkScheduler};

/// The smallest subchannel list that is worth pruning of shut-down entries.
const MIN_PRUNE_LEN: usize = 16;

/// One running policy and what the group knows about it.
pub(crate) struct Slot {
    /// Unique within the group, so subchannel updates find the slot that owns them.
    pub(crate) serial: u64,
    /// The policy's registered name.
    pub(crate) name: &'static str,
    pub(crate) policy: Box<dyn LbPolicy>,
    pub(crate) meta: SlotMeta,
}

/// Everything about a slot except its policy, so the controller wrapper can write
/// here while the policy runs.
pub(crate) struct SlotMeta {
    /// Every subchannel the policy created and that was not seen shut down yet.
    pub(crate) subchannels: Vec<Subchannel>,
    /// Prune `subchannels` of shut-down entries when it grows past this.
    pub(crate) prune_at: usize,
    /// The last state the policy published.
    pub(crate) state: Option<LbState>,
    /// Whether the policy published since the last [`GracefulSwitch::settle`].
    pub(crate) reported: bool,
    /// Wake-ups the policy asked for and has not had yet.
    pub(crate) deadlines: Vec<Instant>,
    /// The work scheduler the policy was built with.
    pub(crate) scheduler: Arc<SlotScheduler>,
}

impl Slot {
    pub(crate) fn new(
        serial: u64,
        name: &'static str,
        policy: Box<dyn LbPolicy>,
        scheduler: Arc<SlotScheduler>,
    ) -> Self {
        Self {
            serial,
            name,
            policy,
            meta: SlotMeta {
                subchannels: Vec::new(),
                prune_at: MIN_PRUNE_LEN,
                state: None,
                reported: false,
                deadlines: Vec::new(),
                scheduler,
            },
        }
    }
}

impl SlotMeta {
    /// Whether the policy's `work` is due: a deadline it asked for has passed or its
    /// scheduler was called. Forgets the deadlines that are due.
    pub(crate) fn take_due(&mut self, now: Instant) -> bool {
        let before = self.deadlines.len();
        self.deadlines.retain(|d| *d > now);
        let timer_due = self.deadlines.len() != before;
        let scheduled = self.scheduler.take_pending();
        timer_due || scheduled
    }

    /// Records a wake-up request.
    pub(crate) fn add_deadline(&mut self, deadline: Instant) {
        if !self.deadlines.contains(&deadline) {
            self.deadlines.push(deadline);
        }
    }

    /// Records a new subchannel. Returns the subchannels pruned from the record
    /// because their policy already shut them down.
    pub(crate) fn track(&mut self, subchannel: Subchannel) -> Vec<Subchannel> {
        self.subchannels.push(subchannel);
        if self.subchannels.len() <= self.prune_at {
            return Vec::new();
        }
        let (gone, live): (Vec<_>, Vec<_>) = std::mem::take(&mut self.subchannels)
            .into_iter()
            .partition(Subchannel::is_shut_down);
        self.subchannels = live;
        self.prune_at = MIN_PRUNE_LEN.max(2 * self.subchannels.len());
        gone
    }
}

/// The [`WorkScheduler`] a slot's policy is built with: remembers that the slot asked
/// for work and passes the request on to the group's own scheduler.
///
/// It is called from picker threads. Once its slot is closed it passes nothing on, so
/// a picker of a closed child that is still in use never wakes the parent. (A call
/// already under way on another thread when the slot closes may still get through;
/// closing the window exactly would need a lock held across the parent's scheduler,
/// which could deadlock against a serializer with a bounded queue.)
pub(crate) struct SlotScheduler {
    parent: Arc<dyn WorkScheduler>,
    pending: AtomicBool,
    closed: AtomicBool,
}

impl SlotScheduler {
    pub(crate) fn new(parent: Arc<dyn WorkScheduler>) -> Self {
        Self {
            parent,
            pending: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    /// Whether work was asked for since the last call.
    fn take_pending(&self) -> bool {
        self.pending.swap(false, Ordering::AcqRel)
    }

    /// Stops passing requests on.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.pending.store(false, Ordering::SeqCst);
    }
}

impl WorkScheduler for SlotScheduler {
    fn schedule_work(&self) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        self.pending.store(true, Ordering::SeqCst);
        self.parent.schedule_work();
    }
}

/// What [`GracefulSwitch::settle`] decided.
pub(crate) struct Settled {
    /// The state the child now publishes, if it changed.
    pub(crate) publish: Option<LbState>,
    /// A slot that is no longer needed, for the group to close.
    pub(crate) retired: Option<Slot>,
}

/// Fills `view` with `slot`'s policy name, state and description.
fn describe_slot(slot: &Slot, view: &mut PolicyView) {
    view.policy = slot.name.to_owned();
    view.state = slot.meta.state.as_ref().map(|s| s.connectivity_state);
    slot.policy.describe(view);
}

/// A child's current slot and, during a switch, its pending slot.
pub(crate) struct GracefulSwitch {
    current: Slot,
    pending: Option<Slot>,
}

impl GracefulSwitch {
    pub(crate) fn new(current: Slot) -> Self {
        Self {
            current,
            pending: None,
        }
    }

    /// The slot that gets resolver updates: the pending one if there is one.
    pub(crate) fn latest(&self) -> &Slot {
        self.pending.as_ref().unwrap_or(&self.current)
    }

    /// The name of the policy the child is switching to, or running.
    pub(crate) fn latest_name(&self) -> &'static str {
        self.latest().name
    }

    /// The name of the policy that serves now.
    pub(crate) fn current_name(&self) -> &'static str {
        self.current.name
    }

    /// The serials of the running slots, current first.
    pub(crate) fn serials(&self) -> ([u64; 2], usize) {
        match &self.pending {
            Some(p) => ([self.current.serial, p.serial], 2),
            None => ([self.current.serial, 0], 1),
        }
    }

    /// Shows the child for channelz: the current policy (name, last published
    /// state, its own description) and, during a switch, the pending one as a child
    /// view named `"pending"`.
    pub(crate) fn describe(&self, view: &mut PolicyView) {
        describe_slot(&self.current, view);
        if let Some(pending) = &self.pending {
            view.detail("switching to", pending.name);
            let mut p = PolicyView::child("pending", pending.name);
            describe_slot(pending, &mut p);
            view.children.push(p);
        }
    }

    /// The slot with `serial`, if it still runs.
    pub(crate) fn slot_mut(&mut self, serial: u64) -> Option<&mut Slot> {
        if self.current.serial == serial {
            return Some(&mut self.current);
        }
        self.pending.as_mut().filter(|p| p.serial == serial)
    }

    /// Starts switching to `slot`: it becomes pending. Returns the slot it replaces
    /// (an earlier pending one), for the caller to close.
    #[must_use]
    pub(crate) fn switch_to(&mut self, slot: Slot) -> Option<Slot> {
        self.pending.replace(slot)
    }

    /// Abandons a switch: the current policy stays. Returns the pending slot.
    #[must_use]
    pub(crate) fn cancel_pending(&mut self) -> Option<Slot> {
        self.pending.take()
    }

    /// Decides, after a call into one of the slots, what the child publishes and
    /// whether the pending slot takes over.
    ///
    /// - With no switch under way, the current slot's report is published.
    /// - The pending slot takes over when it reports anything but CONNECTING, or
    ///   reports at all while the current slot is not READY, or when the current slot
    ///   reports something other than READY. The pending slot's last state is then
    ///   published (CONNECTING if it has said nothing yet) and the old current slot
    ///   retires.
    /// - Otherwise the current slot's report (READY) is published and the pending
    ///   slot's report is kept for later.
    pub(crate) fn settle(&mut self) -> Settled {
        let current_reported = std::mem::take(&mut self.current.meta.reported);
        let Some(pending) = &mut self.pending else {
            return Settled {
                publish: current_reported
                    .then(|| self.current.meta.state.clone())
                    .flatten(),
                retired: None,
            };
        };
        let pending_reported = std::mem::take(&mut pending.meta.reported);
        let current_ready = is(&self.current.meta.state, ConnectivityState::Ready);
        let pending_connecting = is(&pending.meta.state, ConnectivityState::Connecting);
        let swap = (pending_reported && (!pending_connecting || !current_ready))
            || (current_reported && !current_ready);
        if !swap {
            return Settled {
                publish: current_reported
                    .then(|| self.current.meta.state.clone())
                    .flatten(),
                retired: None,
            };
        }
        let Some(pending) = self.pending.take() else {
            return Settled {
                publish: None,
                retired: None,
            };
        };
        let retired = std::mem::replace(&mut self.current, pending);
        let publish = self
            .current
            .meta
            .state
            .clone()
            .unwrap_or_else(|| LbState::queuing(ConnectivityState::Connecting));
        Settled {
            publish: Some(publish),
            retired: Some(retired),
        }
    }

    /// Every running slot, for closing.
    pub(crate) fn into_slots(self) -> impl Iterator<Item = Slot> {
        std::iter::once(self.current).chain(self.pending)
    }
}

fn is(state: &Option<LbState>, want: ConnectivityState) -> bool {
    state.as_ref().is_some_and(|s| s.connectivity_state == want)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::{ChannelController, LbConfig, ResolverUpdate, SubchannelState, UpdateError};

    struct Nop;
    impl LbPolicy for Nop {
        fn resolver_update(
            &mut self,
            _: ResolverUpdate,
            _: Option<&LbConfig>,
            _: &mut dyn ChannelController,
            _: Instant,
        ) -> Result<(), UpdateError> {
            Ok(())
        }
        fn subchannel_update(
            &mut self,
            _: &Subchannel,
            _: &SubchannelState,
            _: &mut dyn ChannelController,
            _: Instant,
        ) {
        }
        fn work(&mut self, _: &mut dyn ChannelController, _: Instant) {}
        fn exit_idle(&mut self, _: &mut dyn ChannelController, _: Instant) {}
        fn close(&mut self) {}
    }

    struct Count(std::sync::atomic::AtomicUsize);
    impl WorkScheduler for Count {
        fn schedule_work(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn slot(serial: u64, name: &'static str) -> Slot {
        let parent = Arc::new(Count(Default::default()));
        Slot::new(
            serial,
            name,
            Box::new(Nop),
            Arc::new(SlotScheduler::new(parent)),
        )
    }

    fn report(slot: &mut Slot, state: ConnectivityState) {
        slot.meta.state = Some(LbState::queuing(state));
        slot.meta.reported = true;
    }

    fn published(s: &Settled) -> Option<ConnectivityState> {
        s.publish.as_ref().map(|s| s.connectivity_state)
    }

    fn ready_switch() -> GracefulSwitch {
        let mut sw = GracefulSwitch::new(slot(1, "a"));
        report(&mut sw.current, ConnectivityState::Ready);
        assert_eq!(published(&sw.settle()), Some(ConnectivityState::Ready));
        assert!(sw.switch_to(slot(2, "b")).is_none());
        sw
    }

    #[test]
    fn pending_connecting_is_held_while_current_is_ready() {
        let mut sw = ready_switch();
        report(sw.slot_mut(2).unwrap(), ConnectivityState::Connecting);
        let s = sw.settle();
        assert!(s.publish.is_none() && s.retired.is_none());
        assert_eq!(sw.current_name(), "a");
        assert_eq!(sw.latest_name(), "b");
    }

    #[test]
    fn pending_ready_takes_over_and_retires_current() {
        let mut sw = ready_switch();
        report(sw.slot_mut(2).unwrap(), ConnectivityState::Ready);
        let s = sw.settle();
        assert_eq!(published(&s), Some(ConnectivityState::Ready));
        assert_eq!(s.retired.map(|r| r.serial), Some(1));
        assert_eq!(sw.current_name(), "b");
        assert_eq!(sw.serials(), ([2, 0], 1));
    }

    #[test]
    fn current_leaving_ready_hands_over_to_the_held_pending_state() {
        let mut sw = ready_switch();
        report(sw.slot_mut(2).unwrap(), ConnectivityState::Connecting);
        assert!(sw.settle().publish.is_none());
        report(sw.slot_mut(1).unwrap(), ConnectivityState::Ready);
        assert_eq!(
            published(&sw.settle()),
            Some(ConnectivityState::Ready),
            "a READY current keeps serving"
        );
        report(sw.slot_mut(1).unwrap(), ConnectivityState::Idle);
        let s = sw.settle();
        assert_eq!(
            published(&s),
            Some(ConnectivityState::Connecting),
            "the pending slot's held CONNECTING is published"
        );
        assert_eq!(s.retired.map(|r| r.serial), Some(1));
    }

    #[test]
    fn pending_that_never_reported_publishes_connecting_on_takeover() {
        let mut sw = ready_switch();
        report(sw.slot_mut(1).unwrap(), ConnectivityState::TransientFailure);
        let s = sw.settle();
        assert_eq!(published(&s), Some(ConnectivityState::Connecting));
        assert_eq!(sw.current_name(), "b");
    }

    #[test]
    fn pending_takes_over_at_once_when_current_is_not_ready() {
        let mut sw = GracefulSwitch::new(slot(1, "a"));
        report(&mut sw.current, ConnectivityState::Connecting);
        let _ = sw.settle();
        assert!(sw.switch_to(slot(2, "b")).is_none());
        report(sw.slot_mut(2).unwrap(), ConnectivityState::Connecting);
        let s = sw.settle();
        assert_eq!(published(&s), Some(ConnectivityState::Connecting));
        assert!(s.retired.is_some());
    }

    #[test]
    fn cancel_and_replace_pending() {
        let mut sw = ready_switch();
        assert_eq!(sw.switch_to(slot(3, "c")).map(|s| s.serial), Some(2));
        assert!(
            sw.slot_mut(2).is_none(),
            "the replaced pending slot is gone"
        );
        assert_eq!(sw.cancel_pending().map(|s| s.serial), Some(3));
        assert_eq!(sw.latest_name(), "a");
        assert_eq!(sw.into_slots().count(), 1);
    }

    #[test]
    fn scheduler_marks_and_forwards_until_closed() {
        let parent = Arc::new(Count(Default::default()));
        let sched = Arc::new(SlotScheduler::new(parent.clone()));
        let mut s = Slot::new(1, "a", Box::new(Nop), sched.clone());
        let now = Instant::now();
        assert!(!s.meta.take_due(now));
        sched.schedule_work();
        assert_eq!(parent.0.load(Ordering::SeqCst), 1);
        assert!(s.meta.take_due(now));
        assert!(!s.meta.take_due(now), "one request gives one work");
        sched.close();
        sched.schedule_work();
        assert_eq!(
            parent.0.load(Ordering::SeqCst),
            1,
            "closed: nothing reaches the parent"
        );
        assert!(!s.meta.take_due(now));
    }

    #[test]
    fn deadlines_are_due_once_each() {
        let mut s = slot(1, "a");
        let t0 = Instant::now();
        let t1 = t0 + std::time::Duration::from_secs(1);
        let t2 = t0 + std::time::Duration::from_secs(2);
        s.meta.add_deadline(t2);
        s.meta.add_deadline(t1);
        s.meta.add_deadline(t1);
        assert!(!s.meta.take_due(t0));
        assert!(s.meta.take_due(t1));
        assert!(!s.meta.take_due(t1));
        assert!(s.meta.take_due(t2 + std::time::Duration::from_secs(5)));
        assert!(s.meta.deadlines.is_empty());
    }
}
