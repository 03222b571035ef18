//! [`ChannelBuilder`]: a target, a transport and options in, a running
//! [`Channel`] out.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::Channel;
use super::clock::{Clock, SystemClock};
use super::core::{CallDefaults, ChannelCore, CoreConfig, Shared};
use super::entity::ChannelData;
use super::factory::ChannelFactory;
use super::pool::{Pool, PoolConfig};
use super::resolver::{ResolverHandle, ResolverRegistry};
use super::retry::{CHANNEL_RETRY_BUFFER_LIMIT, RETRY_BUFFER_LIMIT, RetrySettings};
use super::serializer;
use super::service_config::ServiceConfig;
use crate::backoff::BackoffConfig;
use crate::channelz::ChannelRef;
use crate::config::ConfigError;
use crate::metrics::{Metrics, MetricsRecorder, RecorderList};
use crate::random::SharedRandom;
use crate::registry::LbPolicyRegistry;
use crate::transport::{Transport, TransportOptions};

/// How long a channel stays connected without calls before it goes IDLE.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The largest response message a channel accepts by default (gRPC's 4 MiB).
pub const DEFAULT_MAX_RECEIVE_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// Why a channel could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The target is malformed, or its resolver rejected it.
    #[error("invalid target {target:?}: {reason}")]
    Target {
        /// The target as given.
        target: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The target names a scheme no resolver is registered for.
    #[error("no resolver for scheme {scheme:?} (target {target:?})")]
    UnknownScheme {
        /// The target as given.
        target: String,
        /// The scheme.
        scheme: String,
    },
    /// The default service config does not parse; the error names the field.
    #[error("invalid default service config: {0}")]
    ServiceConfig(ConfigError),
    /// No transport was given.
    #[error("no transport: call ChannelBuilder::transport")]
    NoTransport,
    /// An option has a value the channel cannot use.
    #[error("invalid option {option}: {reason}")]
    Option {
        /// The option's builder method.
        option: &'static str,
        /// What is wrong with the value.
        reason: String,
    },
    /// The serializer thread could not be started.
    #[error("cannot start the channel's thread: {0}")]
    Spawn(String),
}

/// Configures and builds a [`Channel`].
///
/// # Examples
///
/// ```
/// # use std::sync::Arc;
/// # use lb_core::{Address, Status, transport::*};
/// # struct Nowhere;
/// # impl Transport for Nowhere {
/// #     fn connect(&self, _: &Address, _: &ConnectOptions, _: ConnectionEvents)
/// #         -> Result<Arc<dyn lb_core::Connection>, Status> { Err(Status::unavailable("no")) }
/// # }
/// use std::time::Duration;
/// use lb_core::channel::Channel;
/// let channel = Channel::builder("dns:///localhost:50051")
///     .transport(Arc::new(Nowhere))
///     .default_service_config(r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#)
///     .idle_timeout(Some(Duration::from_secs(60)))
///     .build()?;
/// assert_eq!(channel.authority(), "localhost:50051");
/// # Ok::<(), lb_core::channel::ChannelError>(())
/// ```
pub struct ChannelBuilder {
    target: String,
    transport: Option<Arc<dyn Transport>>,
    transport_options: TransportOptions,
    service_config: Option<String>,
    idle_timeout: Option<Duration>,
    default_timeout: Option<Duration>,
    user_agent: Option<String>,
    authority: Option<String>,
    max_send_message_size: usize,
    max_receive_message_size: usize,
    lb_policies: LbPolicyRegistry,
    resolvers: ResolverRegistry,
    backoff: BackoffConfig,
    random: Option<SharedRandom>,
    clock: Arc<dyn Clock>,
    retries: bool,
    per_call_retry_buffer: usize,
    channel_retry_buffer: usize,
    health_check_disabled: bool,
    send_compression: Option<String>,
    channelz_parent: Option<ChannelRef>,
    metrics_recorders: Vec<Arc<dyn MetricsRecorder>>,
}

impl ChannelBuilder {
    /// A builder for a channel to `target`, with the defaults: no default service
    /// config (so `pick_first`), a 30-minute idle timeout, no default deadline, 4 MiB
    /// largest response, the built-in policies and resolvers, gRPC's connection
    /// backoff, and real time.
    pub fn new(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            transport: None,
            transport_options: TransportOptions::default(),
            service_config: None,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            default_timeout: None,
            user_agent: None,
            authority: None,
            max_send_message_size: usize::MAX,
            max_receive_message_size: DEFAULT_MAX_RECEIVE_MESSAGE_SIZE,
            lb_policies: LbPolicyRegistry::with_builtins(),
            resolvers: ResolverRegistry::with_builtins(),
            backoff: BackoffConfig::default(),
            random: None,
            clock: Arc::new(SystemClock),
            retries: true,
            per_call_retry_buffer: RETRY_BUFFER_LIMIT,
            channel_retry_buffer: CHANNEL_RETRY_BUFFER_LIMIT,
            health_check_disabled: false,
            send_compression: None,
            channelz_parent: None,
            metrics_recorders: Vec::new(),
        }
    }

    /// The transport that carries calls (required).
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Gives the transport an option of its own for this channel's connections
    /// (it reaches [`Transport::connect`] in
    /// [`ConnectOptions::transport_options`](crate::transport::ConnectOptions::transport_options)),
    /// replacing an earlier option of the same type. lb-core does not look inside:
    /// with lb-transport's `H2Transport`, `ChannelSecurity` chooses TLS or
    /// plaintext for this channel, so one transport serves both kinds of target.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use lb_core::{Address, Status, transport::*};
    /// # struct Nowhere;
    /// # impl Transport for Nowhere {
    /// #     fn connect(&self, _: &Address, _: &ConnectOptions, _: ConnectionEvents)
    /// #         -> Result<Arc<dyn lb_core::Connection>, Status> { Err(Status::unavailable("no")) }
    /// # }
    /// /// An option a custom transport understands.
    /// struct Region(&'static str);
    /// let channel = lb_core::channel::Channel::builder("dns:///localhost:50051")
    ///     .transport(Arc::new(Nowhere))
    ///     .transport_option(Region("eu"))
    ///     .build()?;
    /// # drop(channel);
    /// # Ok::<(), lb_core::channel::ChannelError>(())
    /// ```
    pub fn transport_option<T: std::any::Any + Send + Sync>(mut self, option: T) -> Self {
        self.transport_options.insert(option);
        self
    }

    /// Replaces every transport option with `options` (see
    /// [`transport_option`](Self::transport_option)).
    pub fn transport_options(mut self, options: TransportOptions) -> Self {
        self.transport_options = options;
        self
    }

    /// The service config used while the resolver provides none (JSON text).
    pub fn default_service_config(mut self, json: impl Into<String>) -> Self {
        self.service_config = Some(json.into());
        self
    }

    /// How long the channel stays connected with no calls before it shuts its
    /// connections down and goes IDLE; `None` never does.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The timeout of calls that have no deadline from their options or the service
    /// config.
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = Some(timeout);
        self
    }

    /// Compresses the request messages of every call with `encoding` (sent as
    /// `grpc-encoding`, such as `"gzip"`), unless the call's
    /// [`CallOptions::compression`](super::CallOptions::compression) says
    /// otherwise. The transport decides which names it supports (lb-transport:
    /// `gzip`, `deflate`, `identity`); responses are decoded whatever this says.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use lb_core::{Address, Status, transport::*};
    /// # struct Nowhere;
    /// # impl Transport for Nowhere {
    /// #     fn connect(&self, _: &Address, _: &ConnectOptions, _: ConnectionEvents)
    /// #         -> Result<Arc<dyn lb_core::Connection>, Status> { Err(Status::unavailable("no")) }
    /// # }
    /// use lb_core::channel::Channel;
    /// let channel = Channel::builder("dns:///localhost:50051")
    ///     .transport(Arc::new(Nowhere))
    ///     .send_compression("gzip")
    ///     .build()?;
    /// # Ok::<(), lb_core::channel::ChannelError>(())
    /// ```
    pub fn send_compression(mut self, encoding: impl Into<String>) -> Self {
        self.send_compression = Some(encoding.into());
        self
    }

    /// Put in front of the library's own `user-agent`.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = Some(user_agent.into());
        self
    }

    /// The `:authority` of calls, instead of the one the target implies.
    pub fn authority(mut self, authority: impl Into<String>) -> Self {
        self.authority = Some(authority.into());
        self
    }

    /// The largest request message a call may send.
    pub fn max_send_message_size(mut self, bytes: usize) -> Self {
        self.max_send_message_size = bytes;
        self
    }

    /// The largest response message a call accepts.
    pub fn max_receive_message_size(mut self, bytes: usize) -> Self {
        self.max_receive_message_size = bytes;
        self
    }

    /// The policies service configs may name (default: the built-ins; add
    /// lb-group's and others here).
    pub fn lb_policy_registry(mut self, registry: LbPolicyRegistry) -> Self {
        self.lb_policies = registry;
        self
    }

    /// The resolvers targets may name (default: the built-ins).
    pub fn resolver_registry(mut self, registry: ResolverRegistry) -> Self {
        self.resolvers = registry;
        self
    }

    /// The connection backoff (default: gRPC's, 1 s ×1.6 ±20 % up to 120 s, 20 s
    /// minimum connect timeout). Also paces re-resolution after bad updates.
    pub fn backoff(mut self, config: BackoffConfig) -> Self {
        self.backoff = config;
        self
    }

    /// The random source for jitter and policies (default: seeded from entropy).
    pub fn random(mut self, random: SharedRandom) -> Self {
        self.random = Some(random);
        self
    }

    /// Whether calls follow the service config's `retryPolicy` (default: yes, as in
    /// grpc-go). Transparent retries of attempts the server never saw happen
    /// either way.
    ///
    /// ```
    /// let builder = lb_core::channel::Channel::builder("ipv4:127.0.0.1:50051").retries(false);
    /// # drop(builder);
    /// ```
    pub fn retries(mut self, enabled: bool) -> Self {
        self.retries = enabled;
        self
    }

    /// How many bytes of request messages a call keeps for retries before it
    /// commits (default [`RETRY_BUFFER_LIMIT`], 256 KiB), and how many all of the
    /// channel's calls keep together (default [`CHANNEL_RETRY_BUFFER_LIMIT`],
    /// 16 MiB). A call that would go over either commits and is no longer
    /// retried.
    ///
    /// ```
    /// let builder = lb_core::channel::Channel::builder("ipv4:127.0.0.1:50051")
    ///     .retry_buffer_limits(64 << 10, 4 << 20);
    /// # drop(builder);
    /// ```
    pub fn retry_buffer_limits(mut self, per_call: usize, per_channel: usize) -> Self {
        self.per_call_retry_buffer = per_call;
        self.channel_retry_buffer = per_channel;
        self
    }

    /// The clock the channel reads time from (default: [`SystemClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// With `true`, the channel never health-checks its connections, even when the
    /// service config has `healthCheckConfig` (gRFC A17's channel argument). By
    /// default a `healthCheckConfig` turns client-side health checks on: each READY
    /// connection watches `grpc.health.v1.Health/Watch`, and policies see it READY
    /// only while the server says SERVING.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use lb_core::{Address, Status, transport::*};
    /// # struct Nowhere;
    /// # impl Transport for Nowhere {
    /// #     fn connect(&self, _: &Address, _: &ConnectOptions, _: ConnectionEvents)
    /// #         -> Result<Arc<dyn lb_core::Connection>, Status> { Err(Status::unavailable("no")) }
    /// # }
    /// use lb_core::channel::Channel;
    /// let channel = Channel::builder("dns:///localhost:50051")
    ///     .transport(Arc::new(Nowhere))
    ///     .default_service_config(
    ///         r#"{"loadBalancingConfig": [{"round_robin": {}}],
    ///             "healthCheckConfig": {"serviceName": "echo.Echo"}}"#,
    ///     )
    ///     // This program trusts every backend: no Watch streams.
    ///     .disable_health_check(true)
    ///     .build()?;
    /// # drop(channel);
    /// # Ok::<(), lb_core::channel::ChannelError>(())
    /// ```
    pub fn disable_health_check(mut self, disable: bool) -> Self {
        self.health_check_disabled = disable;
        self
    }

    /// Makes this a nested channel of the channel `parent` names (a policy's
    /// [`LbPolicyOptions::channelz`](crate::LbPolicyOptions::channelz)): channelz
    /// shows it as a `NestedChannel` listed by its parent, not as a top channel. The
    /// RLS policy's control channel uses it.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use lb_core::{Address, Status, transport::*};
    /// # struct Nowhere;
    /// # impl Transport for Nowhere {
    /// #     fn connect(&self, _: &Address, _: &ConnectOptions, _: ConnectionEvents)
    /// #         -> Result<Arc<dyn lb_core::Connection>, Status> { Err(Status::unavailable("no")) }
    /// # }
    /// use lb_core::channel::Channel;
    /// use lb_core::channelz::{self, ChannelRef, Kind};
    /// let parent = ChannelRef::new(channelz::next_id(), "dns:///example.com");
    /// let nested = Channel::builder("dns:///rls.example.com")
    ///     .transport(Arc::new(Nowhere))
    ///     .channelz_parent(parent.clone())
    ///     .build()?;
    /// assert_eq!(parent.nested(), [nested.channelz_id()]);
    /// assert_eq!(channelz::registry().kind(nested.channelz_id()), Some(Kind::NestedChannel));
    /// nested.close();
    /// assert!(parent.nested().is_empty());
    /// # Ok::<(), lb_core::channel::ChannelError>(())
    /// ```
    pub fn channelz_parent(mut self, parent: ChannelRef) -> Self {
        self.channelz_parent = Some(parent);
        self
    }

    /// Records the channel's metrics into `recorder`: gRPC's per-call instruments
    /// (`grpc.client.attempt.*`, `grpc.client.call.duration`), the subchannels'
    /// (`grpc.subchannel.*`) and its policies' (`grpc.lb.*`), all labelled with the
    /// channel's target (`grpc.target`). Call it again to add more recorders; each
    /// gets every record. Without one, recording costs one branch per event. See
    /// [`crate::metrics`].
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use lb_core::{Address, Status, transport::*};
    /// # struct Nowhere;
    /// # impl Transport for Nowhere {
    /// #     fn connect(&self, _: &Address, _: &ConnectOptions, _: ConnectionEvents)
    /// #         -> Result<Arc<dyn lb_core::Connection>, Status> { Err(Status::unavailable("no")) }
    /// # }
    /// use lb_core::channel::Channel;
    /// use lb_core::metrics::InMemoryRecorder;
    /// let recorder = Arc::new(InMemoryRecorder::new());
    /// let channel = Channel::builder("dns:///localhost:50051")
    ///     .transport(Arc::new(Nowhere))
    ///     .metrics_recorder(recorder.clone())
    ///     .build()?;
    /// # drop(channel);
    /// # Ok::<(), lb_core::channel::ChannelError>(())
    /// ```
    pub fn metrics_recorder(mut self, recorder: Arc<dyn MetricsRecorder>) -> Self {
        self.metrics_recorders.push(recorder);
        self
    }

    /// Builds the channel: parses the target and the default service config, starts
    /// the resolver and the serializer thread. The channel starts IDLE: it connects
    /// on the first call or [`Channel::state`]`(true)`.
    ///
    /// # Errors
    ///
    /// A bad target, an unknown scheme, a bad default service config (naming the
    /// field), no transport, a bad option, or no thread.
    pub fn build(self) -> Result<Channel, ChannelError> {
        let transport = self.transport.ok_or(ChannelError::NoTransport)?;
        let target = self.resolvers.parse_target(&self.target)?;
        let default_service_config = self
            .service_config
            .as_deref()
            .map(|json| ServiceConfig::parse_str(json, &self.lb_policies))
            .transpose()
            .map_err(ChannelError::ServiceConfig)?
            .map(Arc::new);
        if self.backoff.multiplier < 1.0 || !(0.0..=1.0).contains(&self.backoff.jitter) {
            return Err(ChannelError::Option {
                option: "backoff",
                reason: "the multiplier must be at least 1 and the jitter within 0..=1".into(),
            });
        }
        if self.idle_timeout.is_some_and(|t| t.is_zero()) {
            return Err(ChannelError::Option {
                option: "idle_timeout",
                reason: "must be positive; use None to never go idle".into(),
            });
        }
        let builder = self
            .resolvers
            .get(target.scheme())
            .cloned()
            .expect("parse_target checked the scheme");
        let authority = self
            .authority
            .unwrap_or_else(|| builder.default_authority(&target));
        let random = self.random.unwrap_or_else(SharedRandom::from_entropy);
        let user_agent = match self.user_agent {
            Some(ua) => format!("{ua} lb-sync/{}", env!("CARGO_PKG_VERSION")),
            None => format!("lb-sync/{}", env!("CARGO_PKG_VERSION")),
        };

        let metrics_target = target.metrics_label();
        let metrics = match self.metrics_recorders.len() {
            0 => Metrics::none_for(metrics_target),
            1 => Metrics::new(self.metrics_recorders[0].clone(), metrics_target),
            _ => Metrics::new(
                Arc::new(RecorderList(self.metrics_recorders)),
                metrics_target,
            ),
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let channelz = Arc::new(ChannelData::new(
            &self.target,
            self.clock.clone(),
            self.channelz_parent.as_ref(),
        ));
        let shared = Shared::new(
            self.clock,
            tx.clone(),
            CallDefaults {
                default_timeout: self.default_timeout,
                max_send_message_size: self.max_send_message_size,
                max_receive_message_size: self.max_receive_message_size,
                send_compression: self.send_compression,
                retry: RetrySettings {
                    enabled: self.retries,
                    per_call_buffer: self.per_call_retry_buffer,
                    channel_buffer: self.channel_retry_buffer,
                    random: random.clone(),
                },
                metrics: metrics.clone(),
            },
            channelz.clone(),
        );
        let resolver = builder
            .build(&target, ResolverHandle::new(tx.clone()))
            .map_err(|reason| ChannelError::Target {
                target: self.target.clone(),
                reason,
            })?;
        let channels = ChannelFactory::from_parts(
            transport.clone(),
            self.transport_options.clone(),
            Arc::new(self.resolvers.clone()),
            shared.clock.clone(),
        );
        let pool = Pool::new(
            PoolConfig {
                transport,
                transport_options: self.transport_options,
                authority: authority.clone(),
                user_agent,
                backoff: self.backoff,
                random: random.clone(),
                channel: channelz,
                metrics: metrics.clone(),
            },
            tx,
        );
        let now = shared.clock.now();
        let core_config = CoreConfig {
            authority: authority.clone(),
            registry: Arc::new(self.lb_policies),
            default_service_config,
            idle_timeout: self.idle_timeout,
            random,
            backoff: self.backoff,
            health_check_disabled: self.health_check_disabled,
            channels,
            metrics,
        };
        // If the thread cannot start, dropping the core shuts the resolver down.
        let core = ChannelCore::new(core_config, shared.clone(), pool, resolver, now);
        let thread = serializer::spawn(core, rx, shared.clone())
            .map_err(|e| ChannelError::Spawn(e.to_string()))?;
        Ok(Channel::new(shared, thread, target, authority))
    }
}

impl fmt::Debug for ChannelBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelBuilder")
            .field("target", &self.target)
            .field("idle_timeout", &self.idle_timeout)
            .field("default_timeout", &self.default_timeout)
            .field("lb_policies", &self.lb_policies)
            .field("resolvers", &self.resolvers)
            .finish_non_exhaustive()
    }
}
