//! The load-balancing policy contract: builders, policies and their controller.
//!
//! ```text
//!  serializer thread                                   any thread
//!  ─────────────────                                   ──────────
//!  resolver_update ─┐                                   Picker::pick
//!  subchannel_update├─> LbPolicy ──controller──> update_picker(LbState) ──> picker cell
//!  work / exit_idle ┘      │                     new_subchannel / request_resolution
//!                          └────────────────────  wake_at(Instant) → work(now) later
//! ```
//!
//! Every policy method runs on the channel's serializer, one at a time, and is given the
//! time (`now`) and a [`ChannelController`]. A policy therefore needs no locks for its
//! own state and never reads the clock.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use crate::address::Address;
use crate::config::ConfigError;
use crate::picker::{FailPicker, Picker, QueuePicker};
use crate::random::SharedRandom;
use crate::registry::LbPolicyRegistry;
use crate::resolver::ResolverUpdate;
use crate::state::ConnectivityState;
use crate::status::Status;
use crate::subchannel::{Subchannel, SubchannelState};

/// A policy's published state: its connectivity and the picker calls use.
#[derive(Clone)]
pub struct LbState {
    /// The policy's aggregate connectivity state.
    pub connectivity_state: ConnectivityState,
    /// The picker for calls from now on.
    pub picker: Arc<dyn Picker>,
}

impl LbState {
    /// A state whose picker queues every call.
    pub fn queuing(connectivity_state: ConnectivityState) -> Self {
        Self {
            connectivity_state,
            picker: Arc::new(QueuePicker),
        }
    }

    /// TRANSIENT_FAILURE with a picker that fails calls with `status`.
    pub fn failing(status: Status) -> Self {
        Self {
            connectivity_state: ConnectivityState::TransientFailure,
            picker: Arc::new(FailPicker(status)),
        }
    }
}

impl fmt::Debug for LbState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LbState({})", self.connectivity_state)
    }
}

/// What a policy may ask of the channel (or of its parent policy).
///
/// Given to every [`LbPolicy`] method; valid only during that call.
pub trait ChannelController {
    /// Creates an IDLE subchannel for `address`. Its state updates go to the policy
    /// that created it.
    fn new_subchannel(&mut self, address: &Address) -> Subchannel;

    /// Publishes the policy's new state and picker.
    fn update_picker(&mut self, state: LbState);

    /// Asks the resolver to resolve again soon (rate-limited by the channel).
    fn request_resolution(&mut self);

    /// Asks for a call to [`LbPolicy::work`] at or after `deadline`. Several requests
    /// may be pending; each is honoured at least once, and `work` may also come early
    /// or for other reasons, so a policy checks its own deadlines.
    fn wake_at(&mut self, deadline: Instant);
}

/// Lets a picker (on any thread) ask for its policy's [`LbPolicy::work`] to run on the
/// serializer soon.
pub trait WorkScheduler: Send + Sync + 'static {
    /// Schedules a call to `work`. Many calls before it runs give one `work`.
    fn schedule_work(&self);
}

/// Why a policy did not accept a resolver update.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// The update cannot be used (no addresses, say); the channel re-resolves with
    /// backoff.
    #[error("bad resolver state: {0}")]
    BadResolverState(String),
    /// The policy's config does not fit this update.
    #[error("invalid config: {0}")]
    Config(ConfigError),
}

/// A load-balancing policy: turns resolver updates and subchannel states into pickers.
///
/// Methods are called on the serializer, one at a time, never concurrently with each
/// other. A policy must not block in any of them.
pub trait LbPolicy: Send {
    /// A new resolver result (addresses, or an error) with the policy's config, which
    /// is `None` if the policy runs with defaults.
    ///
    /// # Errors
    ///
    /// [`UpdateError::BadResolverState`] when the update cannot be used; the policy
    /// has then published TRANSIENT_FAILURE (or kept serving its old addresses).
    fn resolver_update(
        &mut self,
        update: ResolverUpdate,
        config: Option<&LbConfig>,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) -> Result<(), UpdateError>;

    /// A subchannel this policy created changed state.
    fn subchannel_update(
        &mut self,
        subchannel: &Subchannel,
        state: &SubchannelState,
        controller: &mut dyn ChannelController,
        now: Instant,
    );

    /// A wake-up asked for with [`ChannelController::wake_at`] or
    /// [`WorkScheduler::schedule_work`] is due.
    fn work(&mut self, controller: &mut dyn ChannelController, now: Instant);

    /// The channel wants to leave IDLE: connect if not connected.
    fn exit_idle(&mut self, controller: &mut dyn ChannelController, now: Instant);

    /// Shuts the policy down: it shuts down every subchannel and child it owns. No
    /// method is called after this.
    fn close(&mut self);

    /// Shows the policy for people (the admin page, channelz): its state, config,
    /// children, subchannels and any tables of its own. The parent has set `view`'s
    /// `name`, `policy` and, when it knows it, `state`; a policy with children sets
    /// each child's `name` and `policy` and calls the child's `describe`. Called on
    /// the serializer, rarely; it may allocate but must not block. The default shows
    /// nothing more.
    fn describe(&self, view: &mut crate::channelz::PolicyView) {
        let _ = view;
    }
}

/// What a policy is built with.
#[derive(Clone)]
pub struct LbPolicyOptions {
    /// Lets the policy's pickers ask for [`LbPolicy::work`].
    pub work_scheduler: Arc<dyn WorkScheduler>,
    /// The channel's authority (the host the target names).
    pub authority: String,
    /// The random source for jitter, shuffles and random starts.
    pub random: SharedRandom,
    /// The registry, for policies that build or re-parse child policies.
    pub registry: Arc<LbPolicyRegistry>,
    /// Opens channels like the one the policy runs in (its transport, transport
    /// options, resolvers and clock), for policies that talk to a server of their
    /// own, such as RLS's control channel. `None` when no channel runs the policy
    /// (a test's fake controller).
    pub channels: Option<crate::channel::ChannelFactory>,
    /// The channel the policy runs in, for channelz and log messages: channels the
    /// policy builds join it as nested channels. `ChannelRef::default()` outside a
    /// channel.
    pub channelz: crate::channelz::ChannelRef,
    /// Where the policy records its metrics (`grpc.lb.*`), with the channel's
    /// target; [`Metrics::none`](crate::metrics::Metrics::none) (the default
    /// when the channel has no recorder) records nothing at no cost.
    pub metrics: crate::metrics::Metrics,
}

impl fmt::Debug for LbPolicyOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LbPolicyOptions")
            .field("authority", &self.authority)
            .field("channelz", &self.channelz)
            .finish_non_exhaustive()
    }
}

/// Builds one kind of policy and parses its config. Registered by name in an
/// [`LbPolicyRegistry`].
pub trait LbPolicyBuilder: Send + Sync + 'static {
    /// The name used in `loadBalancingConfig`, such as `round_robin`.
    fn name(&self) -> &'static str;

    /// Builds a policy. Never fails: problems surface through the policy's state.
    fn build(&self, options: LbPolicyOptions) -> Box<dyn LbPolicy>;

    /// Parses this policy's JSON config (the value under its name). Unknown fields are
    /// ignored, so configs written for newer gRPC versions still load.
    ///
    /// # Errors
    ///
    /// A field has a bad value; the error names it.
    fn parse_config(
        &self,
        config: &serde_json::Value,
        registry: &LbPolicyRegistry,
    ) -> Result<LbConfig, ConfigError>;
}

impl fmt::Debug for dyn LbPolicyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LbPolicyBuilder({})", self.name())
    }
}

/// Object-safe equality and debug for typed configs.
trait AnyConfig: Any + Send + Sync + fmt::Debug {
    fn as_any(&self) -> &dyn Any;
    fn eq_dyn(&self, other: &dyn AnyConfig) -> bool;
}

impl<T: Any + Send + Sync + fmt::Debug + PartialEq> AnyConfig for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn eq_dyn(&self, other: &dyn AnyConfig) -> bool {
        other.as_any().downcast_ref::<T>() == Some(self)
    }
}

/// A parsed policy config of a type only its policy knows. Cheap to clone; compared
/// by value.
///
/// # Examples
///
/// ```
/// use lb_core::LbConfig;
/// #[derive(Debug, PartialEq)]
/// struct MyConfig { weight: u32 }
/// let c = LbConfig::new(MyConfig { weight: 2 });
/// assert_eq!(c.downcast_ref::<MyConfig>().map(|c| c.weight), Some(2));
/// assert_eq!(c, LbConfig::new(MyConfig { weight: 2 }));
/// assert!(c.downcast_ref::<u32>().is_none());
/// ```
#[derive(Clone)]
pub struct LbConfig(Arc<dyn AnyConfig>);

impl LbConfig {
    /// Wraps a typed config.
    pub fn new<T: Any + Send + Sync + fmt::Debug + PartialEq>(config: T) -> Self {
        Self(Arc::new(config))
    }

    /// The typed config, if it is a `T`.
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref()
    }
}

impl PartialEq for LbConfig {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_dyn(&*other.0)
    }
}

impl fmt::Debug for LbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A policy chosen from a `loadBalancingConfig` list: its builder and parsed config.
#[derive(Clone)]
pub struct ParsedLbConfig {
    /// The builder of the chosen policy.
    pub builder: Arc<dyn LbPolicyBuilder>,
    /// Its parsed config.
    pub config: LbConfig,
}

impl ParsedLbConfig {
    /// The chosen policy's name.
    pub fn name(&self) -> &'static str {
        self.builder.name()
    }
}

impl PartialEq for ParsedLbConfig {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name() && self.config == other.config
    }
}

impl fmt::Debug for ParsedLbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {:?}", self.name(), self.config)
    }
}
