//! [`ChannelFactory`]: what a channel gives its policies so that they can open
//! channels of their own (RLS's control channel, say) the way the channel itself
//! was built: the same transport, transport options, resolvers and clock.
//!
//! A policy gets it in [`LbPolicyOptions::channels`](crate::LbPolicyOptions::channels)
//! and calls [`ChannelFactory::builder`]; nothing here starts a thread until the
//! builder's `build`.

use std::fmt;
use std::sync::Arc;

use super::builder::ChannelBuilder;
use super::clock::Clock;
use super::resolver::ResolverRegistry;
use crate::transport::{Transport, TransportOptions};

/// Opens channels like the one a policy runs in. Cheap to clone.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use lb_core::channel::{ChannelFactory, ResolverRegistry, SystemClock};
/// use lb_testkit::InMemoryTransport;
///
/// let factory = ChannelFactory::new(
///     Arc::new(InMemoryTransport::new()),
///     ResolverRegistry::with_builtins(),
///     Arc::new(SystemClock),
/// );
/// // A policy opens its own channel through the parent's transport and resolvers.
/// let control = factory
///     .builder("passthrough:///rls.example.com:443")
///     .default_service_config(r#"{"loadBalancingConfig": [{"pick_first": {}}]}"#)
///     .build()?;
/// assert_eq!(control.authority(), "rls.example.com:443");
/// control.close();
/// # Ok::<(), lb_core::channel::ChannelError>(())
/// ```
#[derive(Clone)]
pub struct ChannelFactory {
    transport: Arc<dyn Transport>,
    transport_options: TransportOptions,
    resolvers: Arc<ResolverRegistry>,
    clock: Arc<dyn Clock>,
}

impl ChannelFactory {
    /// A factory whose channels use `transport`, `resolvers` and `clock` (and no
    /// transport options).
    pub fn new(
        transport: Arc<dyn Transport>,
        resolvers: ResolverRegistry,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            transport,
            transport_options: TransportOptions::default(),
            resolvers: Arc::new(resolvers),
            clock,
        }
    }

    /// The same factory with `options` given to the transport of every channel
    /// it opens.
    pub fn with_transport_options(mut self, options: TransportOptions) -> Self {
        self.transport_options = options;
        self
    }

    pub(crate) fn from_parts(
        transport: Arc<dyn Transport>,
        transport_options: TransportOptions,
        resolvers: Arc<ResolverRegistry>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            transport,
            transport_options,
            resolvers,
            clock,
        }
    }

    /// A builder for a channel to `target` with this factory's transport,
    /// transport options, resolvers and clock already set; everything else has
    /// [`ChannelBuilder::new`]'s defaults (set the policy registry, the service
    /// config and the authority as the new channel needs).
    pub fn builder(&self, target: impl Into<String>) -> ChannelBuilder {
        ChannelBuilder::new(target)
            .transport(self.transport.clone())
            .transport_options(self.transport_options.clone())
            .resolver_registry((*self.resolvers).clone())
            .clock(self.clock.clone())
    }

    /// The transport.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// The options given to the transport.
    pub fn transport_options(&self) -> &TransportOptions {
        &self.transport_options
    }

    /// The resolvers targets may name.
    pub fn resolver_registry(&self) -> &ResolverRegistry {
        &self.resolvers
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
}

impl fmt::Debug for ChannelFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelFactory")
            .field("transport_options", &self.transport_options)
            .field("resolvers", &self.resolvers)
            .finish_non_exhaustive()
    }
}
