//! [`ReadyList`]: the endpoint-list building block (grpc-go's `endpointsharding`
//! plays this part there). It does everything a policy that spreads calls over its
//! addresses needs except the choice itself: `round_robin` and
//! `least_request_experimental` are each a `ReadyList` with their own picker over
//! the READY subchannels, and so can your policy be.
//!
//! ```text
//!  resolver_update ──> one subchannel per address, all connect at once
//!  subchannel_update ─> sticky TRANSIENT_FAILURE, IDLE reconnects at once
//!        │ aggregate: READY > CONNECTING > IDLE > TRANSIENT_FAILURE
//!        v
//!  READY:   ReadyPickers::picker(READY subchannels)   (round_robin, least_request, yours)
//!  other:   QueuePicker, or FailPicker with the last connection error
//! ```
//!
//! - One subchannel per address (the endpoints' addresses in order, each once); all
//!   connect at once, and a subchannel that goes IDLE reconnects at once.
//! - A subchannel that failed counts as TRANSIENT_FAILURE until it is READY again,
//!   even while it reconnects (sticky, gRFC A62), so the aggregate does not flap to
//!   CONNECTING on every retry.
//! - The aggregate state is READY if any subchannel is READY, else CONNECTING, else
//!   IDLE, else TRANSIENT_FAILURE; in TRANSIENT_FAILURE calls fail with the last
//!   connection error.
//! - A connection failure asks the resolver to resolve again.
//! - A new picker is published when the aggregate, the READY set or the config
//!   changes (and on every new connection error while failing).
//!
//! # A policy of your own
//!
//! Implement [`ReadyPickers`] (a name and a picker over the READY subchannels; a
//! config if it has one) and register a [`ReadyListBuilder`]. A picker may set
//! [`Pick::on_complete`](crate::Pick::on_complete) to hear how each call ended: its
//! status, trailers and duration ([`CallCompletion`](crate::CallCompletion)).
//! `lb-core/examples/custom_picker.rs` is a whole program: a policy that sends
//! calls to the backend whose last call was fastest, in about 30 lines.
//!
//! ```
//! use std::sync::Arc;
//! use lb_core::policies::ready_list::{ReadyListBuilder, ReadyPickers};
//! use lb_core::{LbPolicyRegistry, Pick, PickInfo, PickResult, Picker, SharedRandom, Subchannel};
//!
//! /// Always the first READY address: a fallback list in address order.
//! #[derive(Debug)]
//! struct FirstReady;
//! struct FirstPicker(Subchannel);
//! impl Picker for FirstPicker {
//!     fn pick(&self, _: &PickInfo<'_>) -> PickResult<'_> {
//!         PickResult::Pick(Pick::new(&self.0))
//!     }
//! }
//! impl ReadyPickers for FirstReady {
//!     fn name(&self) -> &'static str { "first_ready" }
//!     fn picker(&mut self, ready: &[Subchannel], _: &SharedRandom) -> Arc<dyn Picker> {
//!         Arc::new(FirstPicker(ready[0].clone()))
//!     }
//! }
//!
//! let mut registry = LbPolicyRegistry::with_builtins();
//! registry.register(ReadyListBuilder::new(|| FirstReady));
//! let chosen = registry.parse_load_balancing_config(&serde_json::json!([{"first_ready": {}}]))?;
//! assert_eq!(chosen.name(), "first_ready");
//! # Ok::<(), lb_core::ConfigError>(())
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use crate::address::{Address, flatten_addresses};
use crate::config::{ConfigError, Fields};
use crate::picker::Picker;
use crate::policy::{
    ChannelController, LbConfig, LbPolicy, LbPolicyBuilder, LbPolicyOptions, LbState, UpdateError,
};
use crate::random::SharedRandom;
use crate::registry::LbPolicyRegistry;
use crate::resolver::ResolverUpdate;
use crate::state::{ConnectivityState, ConnectivityStateEvaluator};
use crate::status::Status;
use crate::subchannel::{Subchannel, SubchannelState};

/// What makes a [`ReadyList`] one policy rather than another: its pickers over the
/// READY subchannels.
///
/// # Examples
///
/// A policy that always picks the first READY subchannel:
///
/// ```
/// use std::sync::Arc;
/// use lb_core::policies::ready_list::{ReadyList, ReadyPickers};
/// use lb_core::{LbConfig, Pick, PickInfo, PickResult, Picker, SharedRandom, Subchannel};
///
/// #[derive(Debug)]
/// struct First;
/// struct FirstPicker(Subchannel);
/// impl Picker for FirstPicker {
///     fn pick(&self, _: &PickInfo<'_>) -> PickResult<'_> {
///         PickResult::Pick(Pick::new(&self.0))
///     }
/// }
/// impl ReadyPickers for First {
///     fn name(&self) -> &'static str { "first_ready" }
///     fn set_config(&mut self, _: Option<&LbConfig>) -> bool { false }
///     fn picker(&mut self, ready: &[Subchannel], _: &SharedRandom) -> Arc<dyn Picker> {
///         Arc::new(FirstPicker(ready[0].clone()))
///     }
/// }
/// let options = lb_testkit::FakeController::new().policy_options();
/// let policy: Box<dyn lb_core::LbPolicy> = Box::new(ReadyList::with_pickers(options, First));
/// ```
pub trait ReadyPickers: Send + fmt::Debug + 'static {
    /// The policy's name: its name in `loadBalancingConfig` when registered with a
    /// [`ReadyListBuilder`], and the prefix of its error messages.
    fn name(&self) -> &'static str;

    /// Parses the policy's JSON config (the value under its name) for a
    /// [`ReadyListBuilder`]. The default accepts an object, ignoring its fields,
    /// and gives `()`.
    ///
    /// # Errors
    ///
    /// A field has a bad value; the error names it (see [`crate::config`]).
    fn parse_config(config: &serde_json::Value) -> Result<LbConfig, ConfigError>
    where
        Self: Sized,
    {
        Fields::new(config, "")?;
        Ok(LbConfig::new(()))
    }

    /// Takes the config of a resolver update (`None`: defaults). Returns whether the
    /// pickers change, so the current one must be rebuilt. The default keeps the
    /// pickers as they are.
    fn set_config(&mut self, config: Option<&LbConfig>) -> bool {
        let _ = config;
        false
    }

    /// A picker over `ready`, which is never empty, in address order.
    fn picker(&mut self, ready: &[Subchannel], random: &SharedRandom) -> Arc<dyn Picker>;
}

/// Builds [`ReadyList`]s with pickers made by a closure: registers a
/// [`ReadyPickers`] policy under its [name](ReadyPickers::name), its config parsed by
/// [`ReadyPickers::parse_config`]. See the [module docs](self).
pub struct ReadyListBuilder<P> {
    name: &'static str,
    make: Box<dyn Fn() -> P + Send + Sync>,
}

impl<P: ReadyPickers> ReadyListBuilder<P> {
    /// A builder whose policies get their pickers from `make` (called once per
    /// policy, and once here for the name).
    pub fn new(make: impl Fn() -> P + Send + Sync + 'static) -> Self {
        Self {
            name: make().name(),
            make: Box::new(make),
        }
    }
}

impl<P> fmt::Debug for ReadyListBuilder<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReadyListBuilder({})", self.name)
    }
}

impl<P: ReadyPickers> LbPolicyBuilder for ReadyListBuilder<P> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn build(&self, options: LbPolicyOptions) -> Box<dyn LbPolicy> {
        Box::new(ReadyList::with_pickers(options, (self.make)()))
    }

    fn parse_config(
        &self,
        config: &serde_json::Value,
        _: &LbPolicyRegistry,
    ) -> Result<LbConfig, ConfigError> {
        P::parse_config(config)
    }
}

#[derive(Debug)]
struct Entry {
    subchannel: Subchannel,
    /// The state as the aggregate sees it: sticky in TRANSIENT_FAILURE.
    state: ConnectivityState,
}

/// A policy that connects to every address and publishes `P`'s picker over the READY
/// ones. See the [module docs](self).
#[derive(Debug)]
pub struct ReadyList<P> {
    options: LbPolicyOptions,
    pickers: P,
    entries: Vec<Entry>,
    evaluator: ConnectivityStateEvaluator,
    last_error: Option<Status>,
    /// What was last published: the aggregate and the READY set behind its picker.
    published: Option<(ConnectivityState, Vec<Subchannel>)>,
}

impl<P: ReadyPickers> ReadyList<P> {
    /// A policy with no addresses yet whose READY pickers come from `pickers`.
    pub fn with_pickers(options: LbPolicyOptions, pickers: P) -> Self {
        Self {
            options,
            pickers,
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
            ConnectivityState::Ready => LbState {
                connectivity_state: state,
                picker: self.pickers.picker(&ready, &self.options.random),
            },
            ConnectivityState::TransientFailure => {
                let error = self
                    .last_error
                    .as_ref()
                    .map_or("no addresses", |e| e.message());
                LbState::failing(Status::unavailable(format!(
                    "{}: last connection error: {error}",
                    self.pickers.name()
                )))
            }
            other => LbState::queuing(other),
        };
        self.published = Some((state, ready));
        controller.update_picker(lb_state);
    }

    /// The READY subchannels behind the last published picker (empty unless READY),
    /// for `weighted_round_robin`, which wraps `round_robin`.
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

impl<P: ReadyPickers> LbPolicy for ReadyList<P> {
    fn resolver_update(
        &mut self,
        update: ResolverUpdate,
        config: Option<&LbConfig>,
        controller: &mut dyn ChannelController,
        _now: Instant,
    ) -> Result<(), UpdateError> {
        if self.pickers.set_config(config) {
            self.published = None;
        }
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

    fn describe(&self, view: &mut crate::channelz::PolicyView) {
        let ready = self.published.as_ref().map_or(0, |(_, r)| r.len());
        view.detail("ready", format_args!("{ready} of {}", self.entries.len()));
        if let Some(error) = &self.last_error {
            view.detail("last error", error);
        }
        view.subchannels = self
            .entries
            .iter()
            .map(|e| crate::channelz::SubchannelView::of(&e.subchannel, e.state))
            .collect();
    }
}
