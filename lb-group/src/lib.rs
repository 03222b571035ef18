//! The balancer group: many child policies as one, with a timed close cache; and the
//! policies built on it, `weighted_target`, `priority` and `outlier_detection`. The
//! [`xds`] module holds the start of the xDS client: its bootstrap configuration.
//!
//! Everything here is a state machine driven by the channel's serializer: it takes
//! `now` as an argument, asks for wake-ups with
//! [`ChannelController::wake_at`](lb_core::ChannelController::wake_at), and never
//! starts a thread, sleeps or reads the clock.
//!
//! ```text
//!             parent policy (weighted_target, priority, rls)
//!               │ add / update / remove / work / close      ^ poll_update()
//!               v                                           │ (child id, LbState)
//!             BalancerGroup ─────────────────────────────────┘
//!               │ one GracefulSwitch per child id (current + pending policy)
//!               v
//!   active children ──remove──> close cache ──timeout (work(now))──> closed
//!          ^                         │
//!          └────── add (same policy) ┘
//! ```
//!
//! # The balancer group
//!
//! [`BalancerGroup`] keeps child policies by id. It builds a child on
//! [`add`](BalancerGroup::add), routes resolver updates to one child and subchannel
//! updates to whichever child created the subchannel, and queues the states active
//! children publish for the parent to drain with
//! [`poll_update`](BalancerGroup::poll_update) and aggregate. A removed child waits in
//! the close cache, still running, until the close timeout passes or it is added
//! again.
//!
//! # Aggregation
//!
//! [`WeightedAggregator`] is grpc-go's weighted aggregator: READY children get calls
//! in proportion to their weights through a picker that precomputes its cycle, so a
//! pick costs two relaxed atomic operations per level and writes nothing shared.
//!
//! ```
//! use lb_core::{ConnectivityState, LbState};
//! use lb_group::WeightedAggregator;
//! let mut agg = WeightedAggregator::new();
//! agg.add("b1", 2);
//! agg.update_state("b1", LbState::queuing(ConnectivityState::Ready));
//! assert_eq!(agg.build().connectivity_state, ConnectivityState::Ready);
//! ```
//!
//! # Policies
//!
//! [`weighted_target`] and [`priority`] are registered by [`register`], each under
//! grpc's name and a short alias. Both hand endpoints to children by the
//! [`hierarchy`] path attribute. [`outlier_detection`] (also registered) wraps one
//! child and ejects addresses whose calls fail more than their peers'.
//!
//! ```
//! let mut registry = lb_core::LbPolicyRegistry::with_builtins();
//! lb_group::register(&mut registry);
//! let names: Vec<_> = registry.names().collect();
//! for name in ["priority", "priority_experimental", "weighted_target", "weighted_target_experimental",
//!              "outlier_detection", "outlier_detection_experimental"] {
//!     assert!(names.contains(&name), "{name}");
//! }
//! ```
//!
//! # Closing
//!
//! Architecture Invariant: once [`BalancerGroup::close`] has returned, no child policy
//! of the group is alive and nothing reaches the parent. Close is terminal: it closes
//! cached children at once (it does not wait for their timeout), closes active
//! children, and shuts down every subchannel any child created, even ones a child
//! forgot. Every later call is a no-op, `add` fails with [`AddError::Closed`], queued
//! states are dropped, and the work schedulers given to children stop waking the
//! parent.
//!
//! The argument is short because the group is single-threaded: every event — a remove,
//! the cache timeout, a subchannel update, a child's picker, a re-add, a close — is a
//! method call on the serializer, so a "race" between them is only an order of calls.
//! The cache has no timer of its own to fire late: expiry is a check of `now` inside
//! [`BalancerGroup::work`], and a child taken out of the cache cannot expire. Each
//! entry point checks the closed flag first, so whatever order the events come in,
//! nothing after close can put a child back into the cache or the active set. The
//! test `every_order_of_racing_events_leaks_nothing` runs all 5040 orders of seven such
//! events and checks exactly this. (grpc-go needed two locks and several fixes for
//! the same guarantee; see its issue 5845 and the priority leak when a remove raced
//! with a close.)

/// The `LbPolicy` methods of a policy whose children all live in its
/// `group: BalancerGroup`, with a `closed: bool` flag and a
/// `publish(&mut self, force: bool, &mut dyn ChannelController)` that takes
/// the children's new states: `subchannel_update`, `work` and `exit_idle` pass
/// the call to the group and publish once; `close` closes the group for good.
/// One definition for `weighted_target`, `xds_cluster_manager` and
/// `xds_cluster_impl`, which differ only in how they publish. (Defined before
/// the modules, so they see it.)
macro_rules! group_forwarding {
    () => {
        fn subchannel_update(
            &mut self,
            subchannel: &lb_core::Subchannel,
            state: &lb_core::SubchannelState,
            controller: &mut dyn lb_core::ChannelController,
            now: std::time::Instant,
        ) {
            if self.closed {
                return;
            }
            self.group
                .subchannel_update(subchannel, state, controller, now);
            self.publish(false, controller);
        }

        fn work(
            &mut self,
            controller: &mut dyn lb_core::ChannelController,
            now: std::time::Instant,
        ) {
            if self.closed {
                return;
            }
            self.group.work(controller, now);
            self.publish(false, controller);
        }

        fn exit_idle(
            &mut self,
            controller: &mut dyn lb_core::ChannelController,
            now: std::time::Instant,
        ) {
            if self.closed {
                return;
            }
            self.group.exit_idle(controller, now);
            self.publish(false, controller);
        }

        fn close(&mut self) {
            self.closed = true;
            self.group.close();
        }
    };
}

mod aggregator;
mod cache;
pub mod cluster_impl;
pub mod cluster_manager;
mod graceful_switch;
mod group;
pub mod hierarchy;
pub mod outlier_detection;
pub mod priority;
pub mod weighted_target;
pub mod xds;

pub use aggregator::WeightedAggregator;
pub use group::{AddError, BalancerGroup, ChildStateUpdate};

use std::sync::Arc;

use lb_core::{LbPolicyBuilder, LbPolicyRegistry};

/// Registers `weighted_target`, `priority` and `outlier_detection` in `registry`,
/// each under grpc's name (`weighted_target_experimental`, `priority_experimental`,
/// `outlier_detection_experimental`) and a short alias (`weighted_target`,
/// `priority`, `outlier_detection`), and xDS's `xds_cluster_manager_experimental` and
/// `xds_cluster_impl_experimental`.
///
/// # Examples
///
/// ```
/// let mut registry = lb_core::LbPolicyRegistry::with_builtins();
/// lb_group::register(&mut registry);
/// assert!(registry.get("priority_experimental").is_some());
/// ```
pub fn register(registry: &mut LbPolicyRegistry) {
    register_all(registry);
}

/// A registry with every policy of lb-core and lb-group: give it to
/// `ChannelBuilder::lb_policy_registry` and service configs may name
/// `weighted_target_experimental`, `priority_experimental` and
/// `outlier_detection_experimental` (and lb-core's built-ins) with no `register`
/// call. lb-rls's `lb_rls::registry` adds RLS to this.
///
/// # Examples
///
/// ```
/// let registry = lb_group::registry();
/// assert!(registry.get("round_robin").is_some());
/// assert!(registry.get("outlier_detection_experimental").is_some());
/// ```
pub fn registry() -> LbPolicyRegistry {
    let mut registry = LbPolicyRegistry::with_builtins();
    register_all(&mut registry);
    registry
}

fn register_all(registry: &mut LbPolicyRegistry) {
    let weighted_target: Arc<dyn LbPolicyBuilder> =
        Arc::new(weighted_target::WeightedTargetBuilder);
    registry.register_arc(weighted_target.clone());
    registry.register_as(weighted_target::ALIAS, weighted_target);
    let priority: Arc<dyn LbPolicyBuilder> = Arc::new(priority::PriorityBuilder);
    registry.register_arc(priority.clone());
    registry.register_as(priority::ALIAS, priority);
    let outlier_detection: Arc<dyn LbPolicyBuilder> =
        Arc::new(outlier_detection::OutlierDetectionBuilder);
    registry.register_arc(outlier_detection.clone());
    registry.register_as(outlier_detection::ALIAS, outlier_detection);
    registry.register(cluster_manager::ClusterManagerBuilder);
    registry.register(cluster_impl::ClusterImplBuilder);
}
