//! `round_robin`: spread calls over every READY address.
//!
//! - One subchannel per address (the endpoints' addresses in order, each once); all
//!   connect at once, and a subchannel that goes IDLE reconnects at once.
//! - The picker cycles over the READY subchannels, starting at a random index so that
//!   many clients do not all hit the same server first.
//! - A subchannel that failed counts as TRANSIENT_FAILURE until it is READY again,
//!   even while it reconnects (sticky, gRFC A62), so the aggregate does not flap to
//!   CONNECTING on every retry.
//! - The aggregate state is READY if any subchannel is READY, else CONNECTING, else
//!   IDLE, else TRANSIENT_FAILURE; in TRANSIENT_FAILURE calls fail with the last
//!   connection error.
//! - A connection failure asks the resolver to resolve again.

use std::sync::Arc;
use std::time::Instant;

use crate::address::{Address, flatten_addresses};
use crate::config::{ConfigError, Fields};
use crate::picker::{Pick, PickInfo, PickResult, Picker, RoundRobinCounter};
use crate::policy::{
    ChannelController, LbConfig, LbPolicy, LbPolicyBuilder, LbPolicyOptions, LbState, UpdateError,
};
use crate::registry::LbPolicyRegistry;
use crate::resolver::ResolverUpdate;
use crate::state::{ConnectivityState, ConnectivityStateEvaluator};
use crate::status::Status;
use crate::subchannel::{Subchannel, SubchannelState};

/// The policy's registered name.
pub const NAME: &str = "round_robin";

/// The `round_robin` config: it has no fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoundRobinConfig;

/// Builds [`RoundRobin`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RoundRobinBuilder;

impl LbPolicyBuilder for RoundRobinBuilder {
    fn name(&self) -> &'static str {
        NAME
    }

    fn build(&self, options: LbPolicyOptions) -> Box<dyn LbPolicy> {
        Box::new(RoundRobin::new(options))
    }

    fn parse_config(
        &self,
        config: &serde_json::Value,
        _: &LbPolicyRegistry,
    ) -> Result<LbConfig, ConfigError> {
        Fields::new(config, "")?;
        Ok(LbConfig::new(RoundRobinConfig))
    }
}

#[derive(Debug)]
struct Entry {
    subchannel: Subchannel,
    /// The state as the aggregate sees it: sticky in TRANSIENT_FAILURE.
    state: ConnectivityState,
}

/// The `round_robin` policy. See the [module docs](self).
#[derive(Debug)]
pub struct RoundRobin {
    options: LbPolicyOptions,
    entries: Vec<Entry>,
    evaluator: ConnectivityStateEvaluator,
    last_error: Option<Status>,
    /// What was last published: the aggregate and the READY set behind its picker.
    published: Option<(ConnectivityState, Vec<Subchannel>)>,
}

impl RoundRobin {
    /// A policy with no addresses yet.
    pub fn new(options: LbPolicyOptions) -> Self {
        Self {
            options,
            entries: Vec::new(),
            evaluator: ConnectivityStateEvaluator::default(),
            last_error: None,
            published: None,
        }
    }

    fn set_addresses(&mut self, addresses: &[Address], controller: &mut dyn ChannelController) {
        let mut old = std::mem::take(&mut self.entries);
        for address in addresses {
            match old.iter().position(|e| e.subchannel.address() == address) {
                Some(i) => self.entries.push(old.swap_remove(i)),
                None => {
                    let subchannel = controller.new_subchannel(address);
                    self.evaluator
                        .record_transition(None, Some(ConnectivityState::Idle));
                    subchannel.connect();
                    self.entries.push(Entry {
                        subchannel,
                        state: ConnectivityState::Idle,
                    });
                }
            }
        }
        for gone in old {
            self.evaluator.record_transition(Some(gone.state), None);
            gone.subchannel.shutdown();
        }
    }

    /// Publishes a new state if the aggregate or the READY set changed.
    fn publish(&mut self, controller: &mut dyn ChannelController) {
        let state = self.evaluator.aggregate();
        let ready: Vec<Subchannel> = self
            .entries
            .iter()
            .filter(|e| e.state == ConnectivityState::Ready)
            .map(|e| e.subchannel.clone())
            .collect();
        let unchanged = self
            .published
            .as_ref()
            .is_some_and(|(s, r)| *s == state && *r == ready);
        // A failure picker is republished when the error changes, so calls see the
        // latest cause.
        if unchanged && state != ConnectivityState::TransientFailure {
            return;
        }
        let lb_state = match state {
            ConnectivityState::Ready => {
                let start = self.options.random.below(ready.len());
                LbState {
                    connectivity_state: state,
                    picker: Arc::new(RoundRobinPicker::new(ready.clone(), start)),
                }
            }
            ConnectivityState::TransientFailure => {
                let error = self
                    .last_error
                    .as_ref()
                    .map_or("no addresses", |e| e.message());
                LbState::failing(Status::unavailable(format!(
                    "round_robin: last connection error: {error}"
                )))
            }
            other => LbState::queuing(other),
        };
        self.published = Some((state, ready));
        controller.update_picker(lb_state);
    }

    /// The READY subchannels behind the last published picker (empty unless READY),
    /// for `weighted_round_robin`, which wraps this policy.
    pub(crate) fn ready(&self) -> &[Subchannel] {
        match &self.published {
            Some((ConnectivityState::Ready, ready)) => ready,
            _ => &[],
        }
    }

    /// This policy's subchannels, in address order.
    pub(crate) fn subchannels(&self) -> impl Iterator<Item = &Subchannel> {
        self.entries.iter().map(|e| &e.subchannel)
    }

    fn close_all(&mut self) {
        for e in self.entries.drain(..) {
            e.subchannel.shutdown();
        }
        self.evaluator = ConnectivityStateEvaluator::default();
    }
}

impl LbPolicy for RoundRobin {
    fn resolver_update(
        &mut self,
        update: ResolverUpdate,
        _config: Option<&LbConfig>,
        controller: &mut dyn ChannelController,
        _now: Instant,
    ) -> Result<(), UpdateError> {
        let endpoints = match update.endpoints {
            Ok(endpoints) => endpoints,
            Err(status) => {
                if self.entries.is_empty()
                    || self.evaluator.aggregate() == ConnectivityState::TransientFailure
                {
                    self.last_error = Some(Status::unavailable(format!(
                        "name resolver error: {}",
                        status.message()
                    )));
                    self.published = None;
                    self.publish(controller);
                }
                return Ok(());
            }
        };
        let addresses = flatten_addresses(&endpoints);
        if addresses.is_empty() {
            self.close_all();
            let reason = "resolver produced zero addresses";
            self.last_error = Some(Status::unavailable(reason));
            self.published = None;
            self.publish(controller);
            return Err(UpdateError::BadResolverState(reason.into()));
        }
        self.set_addresses(&addresses, controller);
        self.publish(controller);
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
        if new == ConnectivityState::Idle {
            entry.subchannel.connect();
        }
        if new == ConnectivityState::TransientFailure {
            self.last_error = state.last_error.clone();
            controller.request_resolution();
        }
        let sticky = entry.state == ConnectivityState::TransientFailure
            && matches!(new, ConnectivityState::Connecting | ConnectivityState::Idle);
        if sticky || new == ConnectivityState::Shutdown || new == entry.state {
            if new == ConnectivityState::TransientFailure {
                // Same state, newer error: refresh the failure picker.
                self.publish(controller);
            }
            return;
        }
        let old = std::mem::replace(&mut entry.state, new);
        self.evaluator.record_transition(Some(old), Some(new));
        self.publish(controller);
    }

    fn work(&mut self, _controller: &mut dyn ChannelController, _now: Instant) {}

    fn exit_idle(&mut self, _controller: &mut dyn ChannelController, _now: Instant) {
        for e in &self.entries {
            e.subchannel.connect();
        }
    }

    fn close(&mut self) {
        self.close_all();
    }
}

/// Cycles over READY subchannels; each thread advances its own position.
struct RoundRobinPicker {
    subchannels: Vec<Subchannel>,
    next: RoundRobinCounter,
}

impl RoundRobinPicker {
    fn new(subchannels: Vec<Subchannel>, start: usize) -> Self {
        Self {
            subchannels,
            next: RoundRobinCounter::new(start),
        }
    }
}

impl Picker for RoundRobinPicker {
    #[inline]
    fn pick(&self, _: &PickInfo<'_>) -> PickResult<'_> {
        let i = self.next.next_below(self.subchannels.len());
        PickResult::Pick(Pick::new(&self.subchannels[i]))
    }
}

/// Makes the round-robin picker directly, for benchmarks and tests of parents.
///
/// ```
/// # use std::sync::Arc;
/// # use lb_core::{Address, Metadata, PickInfo, Picker, Subchannel, SubchannelBackend, SubchannelId};
/// # struct Nop;
/// # impl SubchannelBackend for Nop {
/// #     fn connect(&self, _: SubchannelId) {}
/// #     fn shutdown(&self, _: SubchannelId) {}
/// #     fn as_any(&self) -> &dyn std::any::Any { self }
/// # }
/// let scs: Vec<_> = (0..3)
///     .map(|i| Subchannel::new(SubchannelId(i), Address::new(format!("a:{i}")), Arc::new(Nop)))
///     .collect();
/// let picker = lb_core::policies::round_robin::picker(scs, 1);
/// let md = Metadata::new();
/// let info = PickInfo { method: "/s/m", metadata: &md };
/// let ids: Vec<u64> = (0..4).map(|_| picker.pick(&info).subchannel().unwrap().id().0).collect();
/// assert_eq!(ids, [1, 2, 0, 1]);
/// ```
///
/// # Panics
///
/// Panics if `subchannels` is empty.
pub fn picker(subchannels: Vec<Subchannel>, start: usize) -> Arc<dyn Picker> {
    assert!(
        !subchannels.is_empty(),
        "a round-robin picker needs a subchannel"
    );
    Arc::new(RoundRobinPicker::new(subchannels, start))
}
