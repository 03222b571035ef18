//! Resolvers: what turns a target into addresses, and the registry that finds one
//! by scheme.
//!
//! ```text
//!   ResolverRegistry ── scheme ──> ResolverBuilder::build(target, handle) ──> Resolver
//!                                                           │
//!   any thread:  handle.update(ResolverUpdate) ─────────────┴──> serializer ──> policy
//!   serializer:  resolver.resolve_now() (rate-limited), resolver.shutdown() (once)
//! ```
//!
//! A resolver is built when the channel is built and runs until the channel closes.
//! It pushes [`ResolverUpdate`]s whenever it likes, from any thread, through its
//! [`ResolverHandle`]. The channel calls [`Resolver::resolve_now`] when a policy asks
//! for re-resolution (at most once per [`MIN_RESOLUTION_INTERVAL`]), after a bad
//! update (with backoff) and every [`REFRESH_INTERVAL`] while the channel is active.
//!
//! A policy may run resolvers too (through the channel's registry, from
//! [`ChannelFactory::resolver_registry`](super::ChannelFactory::resolver_registry)):
//! its handle, from [`ResolverHandle::for_policy`], keeps the latest result in a
//! [`ResolverInbox`] and schedules the policy's `work`, where the policy takes it.
//!
//! Built in: `passthrough`, `dns`, `ipv4`, `ipv6` and `unix`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use super::builder::ChannelError;
use super::core::Input;
use super::dns::DnsResolverBuilder;
use super::target::{ParseError, Target, split_host_port};
use crate::address::endpoints;
use crate::policy::WorkScheduler;
use crate::resolver::ResolverUpdate;

/// The shortest time between two re-resolutions a policy asks for (gRPC's DNS
/// resolver uses the same 30 s).
pub const MIN_RESOLUTION_INTERVAL: Duration = Duration::from_secs(30);

/// How often an active channel re-resolves even if nothing asks it to.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(30 * 60);

/// The port used when a `dns`, `ipv4` or `ipv6` target names none.
pub const DEFAULT_PORT: u16 = 443;

/// A running resolver. Its methods are called on the channel's serializer and must
/// not block.
pub trait Resolver: Send + 'static {
    /// Resolve again soon. The channel rate-limits these; a resolver may ignore them
    /// (a static list has nothing to refresh).
    fn resolve_now(&mut self);

    /// Stop for good. Every thread the resolver started must be gone when this
    /// returns. Called once; no other method is called after it.
    fn shutdown(&mut self);
}

/// Builds resolvers for one scheme. Registered in a [`ResolverRegistry`].
pub trait ResolverBuilder: Send + Sync + 'static {
    /// The scheme this builder resolves, lower-case (`dns`).
    fn scheme(&self) -> &'static str;

    /// Starts resolving `target`; results go to `handle`.
    ///
    /// # Errors
    ///
    /// The target is not valid for this scheme; the message says why, and the
    /// channel's build fails with it.
    fn build(&self, target: &Target, handle: ResolverHandle) -> Result<Box<dyn Resolver>, String>;

    /// The authority calls carry when the channel has no override: by default the
    /// target's endpoint (`example.com:443`).
    fn default_authority(&self, target: &Target) -> String {
        target.endpoint().to_owned()
    }
}

impl fmt::Debug for dyn ResolverBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResolverBuilder({})", self.scheme())
    }
}

/// Where a resolver sends its results. Cheap to clone; usable from any thread.
///
/// A channel makes one for the resolver of its target. A policy that runs
/// resolvers of its own (RLS's `rls_dial_target` child resolves the targets RLS
/// returns) makes one with [`ResolverHandle::for_policy`] and reads the results on
/// its serializer, in [`LbPolicy::work`](crate::LbPolicy::work).
#[derive(Clone)]
pub struct ResolverHandle {
    sink: Sink,
}

/// Where a handle's updates go.
#[derive(Clone)]
enum Sink {
    /// The channel's input queue.
    Channel(Sender<Input>),
    /// A policy's inbox (gone once the policy drops its [`ResolverInbox`]) and
    /// the scheduler that wakes the policy.
    Policy {
        slot: Weak<Mutex<Option<ResolverUpdate>>>,
        scheduler: Arc<dyn WorkScheduler>,
    },
}

impl ResolverHandle {
    pub(crate) fn new(tx: Sender<Input>) -> Self {
        Self {
            sink: Sink::Channel(tx),
        }
    }

    /// A handle whose updates go to a policy rather than to a channel, and the
    /// inbox the policy reads them from.
    ///
    /// [`update`](Self::update) keeps the update in the inbox and calls
    /// `scheduler`'s [`schedule_work`](WorkScheduler::schedule_work); the policy
    /// takes it with [`ResolverInbox::take`] in its `work`, on the serializer. The
    /// inbox holds at most one update, the latest: an update that arrives before
    /// the policy took the previous one replaces it (each update is a complete
    /// result, so nothing is lost but a stale one). Once the inbox is dropped,
    /// `update` gives its update back, as with a closed channel.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use lb_core::channel::{ResolverHandle, ResolverRegistry};
    /// use lb_core::{ResolverUpdate, WorkScheduler, endpoints};
    ///
    /// #[derive(Default)]
    /// struct Counter(AtomicUsize);
    /// impl WorkScheduler for Counter {
    ///     fn schedule_work(&self) {
    ///         self.0.fetch_add(1, Ordering::SeqCst);
    ///     }
    /// }
    ///
    /// let scheduler = Arc::new(Counter::default());
    /// let (handle, inbox) = ResolverHandle::for_policy(scheduler.clone());
    /// let registry = ResolverRegistry::with_builtins();
    /// let target = registry.parse_target("ipv4:10.0.0.1:80")?;
    /// let mut resolver = registry
    ///     .get(target.scheme())
    ///     .expect("built in")
    ///     .build(&target, handle.clone())
    ///     .expect("a valid target");
    /// // A static resolver answers while it is built; the policy is woken.
    /// assert_eq!(scheduler.0.load(Ordering::SeqCst), 1);
    /// let update = inbox.take().expect("a result");
    /// assert_eq!(update.endpoints, Ok(endpoints(["10.0.0.1:80"])));
    /// assert!(inbox.take().is_none());
    /// // The policy shuts its resolvers down when it closes.
    /// resolver.shutdown();
    /// drop(inbox);
    /// let late = ResolverUpdate::from_endpoints(endpoints(["10.0.0.2:80"]));
    /// assert_eq!(handle.update(late.clone()), Err(late));
    /// # Ok::<(), lb_core::channel::ChannelError>(())
    /// ```
    pub fn for_policy(scheduler: Arc<dyn WorkScheduler>) -> (Self, ResolverInbox) {
        let slot = Arc::new(Mutex::new(None));
        let handle = Self {
            sink: Sink::Policy {
                slot: Arc::downgrade(&slot),
                scheduler,
            },
        };
        (handle, ResolverInbox { slot })
    }

    /// Sends a result to the channel, which hands it to its policy (or, for a
    /// [`for_policy`](Self::for_policy) handle, to the policy's inbox).
    ///
    /// # Errors
    ///
    /// The channel (or the policy's inbox) is gone; the update is given back.
    // The update comes back whole, as a closed channel gives back what was sent;
    // boxing it would cost every update an allocation for the rare failure.
    #[allow(clippy::result_large_err)]
    pub fn update(&self, update: ResolverUpdate) -> Result<(), ResolverUpdate> {
        match &self.sink {
            Sink::Channel(tx) => {
                tx.send(Input::Resolver(update))
                    .map_err(|e| match e.into_inner() {
                        Input::Resolver(update) => update,
                        _ => unreachable!("sent a resolver update"),
                    })
            }
            Sink::Policy { slot, scheduler } => {
                let Some(slot) = slot.upgrade() else {
                    return Err(update);
                };
                *slot.lock() = Some(update);
                scheduler.schedule_work();
                Ok(())
            }
        }
    }
}

impl fmt::Debug for ResolverHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResolverHandle")
    }
}

/// The policy's end of a [`ResolverHandle::for_policy`] handle: the latest update
/// not yet taken (one at most). Dropping it makes the handle's `update` fail.
pub struct ResolverInbox {
    slot: Arc<Mutex<Option<ResolverUpdate>>>,
}

impl ResolverInbox {
    /// Takes the latest update, if one came since the last `take`.
    pub fn take(&self) -> Option<ResolverUpdate> {
        self.slot.lock().take()
    }
}

impl fmt::Debug for ResolverInbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolverInbox")
            .field("pending", &self.slot.lock().is_some())
            .finish()
    }
}

/// Resolver builders by scheme.
///
/// # Examples
///
/// ```
/// use lb_core::channel::{ChannelError, ResolverRegistry};
/// let reg = ResolverRegistry::with_builtins();
/// assert_eq!(reg.schemes().collect::<Vec<_>>(), ["dns", "ipv4", "ipv6", "passthrough", "unix"]);
/// assert!(matches!(reg.parse_target("xds:///svc"), Err(ChannelError::UnknownScheme { .. })));
/// ```
#[derive(Clone, Default)]
pub struct ResolverRegistry {
    builders: BTreeMap<&'static str, Arc<dyn ResolverBuilder>>,
}

impl ResolverRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with `passthrough`, `dns`, `ipv4`, `ipv6` and `unix`.
    pub fn with_builtins() -> Self {
        let mut reg = Self::new();
        reg.register(PassthroughResolverBuilder);
        reg.register(DnsResolverBuilder);
        reg.register(IpResolverBuilder { v6: false });
        reg.register(IpResolverBuilder { v6: true });
        reg.register(UnixResolverBuilder);
        reg
    }

    /// Registers `builder` under its scheme, replacing any builder of that scheme.
    pub fn register(&mut self, builder: impl ResolverBuilder) {
        self.register_arc(Arc::new(builder));
    }

    /// Registers a shared builder under its scheme.
    pub fn register_arc(&mut self, builder: Arc<dyn ResolverBuilder>) {
        self.builders.insert(builder.scheme(), builder);
    }

    /// The builder for `scheme`.
    pub fn get(&self, scheme: &str) -> Option<&Arc<dyn ResolverBuilder>> {
        self.builders.get(scheme)
    }

    /// The registered schemes, sorted.
    pub fn schemes(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.builders.keys().copied()
    }

    /// Parses a target: a `scheme://` form must name a registered scheme; a
    /// `scheme:rest` form whose scheme is registered uses it; anything else is a
    /// `dns` target.
    ///
    /// # Errors
    ///
    /// [`ChannelError::Target`] for a malformed target, [`ChannelError::UnknownScheme`]
    /// for an unregistered scheme.
    pub fn parse_target(&self, text: &str) -> Result<Target, ChannelError> {
        Target::parse(text, |s| self.builders.contains_key(s)).map_err(|e| match e {
            ParseError::Invalid(reason) => ChannelError::Target {
                target: text.into(),
                reason,
            },
            ParseError::UnknownScheme(scheme) => ChannelError::UnknownScheme {
                target: text.into(),
                scheme,
            },
        })
    }
}

impl fmt::Debug for ResolverRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.builders.keys()).finish()
    }
}

/// A resolver whose one result was sent when it was built.
#[derive(Debug)]
pub(crate) struct StaticResolver;

impl Resolver for StaticResolver {
    fn resolve_now(&mut self) {}
    fn shutdown(&mut self) {}
}

/// Sends a fixed address list once.
pub(crate) fn static_resolver(
    handle: &ResolverHandle,
    addresses: Vec<String>,
) -> Result<Box<dyn Resolver>, String> {
    // A closed channel cannot use the result; nothing to report.
    let _ = handle.update(ResolverUpdate::from_endpoints(endpoints(
        addresses.iter().map(String::as_str),
    )));
    Ok(Box::new(StaticResolver))
}

/// `passthrough:///address`: the endpoint is the one address, as written.
#[derive(Clone, Copy, Debug, Default)]
pub struct PassthroughResolverBuilder;

impl ResolverBuilder for PassthroughResolverBuilder {
    fn scheme(&self) -> &'static str {
        "passthrough"
    }

    fn build(&self, target: &Target, handle: ResolverHandle) -> Result<Box<dyn Resolver>, String> {
        if target.endpoint().is_empty() {
            return Err("passthrough needs an address: passthrough:///host:port".into());
        }
        static_resolver(&handle, vec![target.endpoint().to_owned()])
    }
}

/// `ipv4:a:port,b:port` and `ipv6:[a]:port,[b]:port`: a fixed list of IP addresses.
#[derive(Clone, Copy, Debug)]
pub struct IpResolverBuilder {
    v6: bool,
}

impl IpResolverBuilder {
    /// The `ipv4` builder.
    pub const IPV4: Self = Self { v6: false };
    /// The `ipv6` builder.
    pub const IPV6: Self = Self { v6: true };

    fn addresses(&self, list: &str) -> Result<Vec<String>, String> {
        if list.is_empty() {
            return Err(format!("{} needs at least one address", self.scheme_name()));
        }
        list.split(',')
            .map(|item| {
                if self.v6 {
                    refuse_ambiguous_v6(item)?;
                }
                let (host, port) = split_host_port(item, DEFAULT_PORT)?;
                let ok = if self.v6 {
                    host.parse::<Ipv6Addr>().is_ok()
                } else {
                    host.parse::<Ipv4Addr>().is_ok()
                };
                if !ok {
                    return Err(format!(
                        "{item:?} is not an {} address",
                        if self.v6 { "IPv6" } else { "IPv4" }
                    ));
                }
                Ok(super::target::join_host_port(&host, port))
            })
            .collect()
    }

    fn scheme_name(&self) -> &'static str {
        if self.v6 { "ipv6" } else { "ipv4" }
    }
}

impl ResolverBuilder for IpResolverBuilder {
    fn scheme(&self) -> &'static str {
        self.scheme_name()
    }

    fn build(&self, target: &Target, handle: ResolverHandle) -> Result<Box<dyn Resolver>, String> {
        if !target.authority().is_empty() {
            return Err(format!("{} targets take no authority", self.scheme_name()));
        }
        let addresses = self.addresses(target.endpoint())?;
        static_resolver(&handle, addresses)
    }

    fn default_authority(&self, target: &Target) -> String {
        self.addresses(target.endpoint())
            .ok()
            .and_then(|a| a.into_iter().next())
            .unwrap_or_else(|| "localhost".into())
    }
}

/// A bare IPv6 address whose last group could be a port (`::1:80`: the address
/// `::1:80`, or `::1` port 80?) is refused with both bracketed forms.
fn refuse_ambiguous_v6(item: &str) -> Result<(), String> {
    if item.starts_with('[') {
        return Ok(());
    }
    let Some((address, last)) = item.rsplit_once(':') else {
        return Ok(());
    };
    let port_like = (1..=5).contains(&last.len()) && last.bytes().all(|b| b.is_ascii_digit());
    if port_like && address.parse::<Ipv6Addr>().is_ok() {
        return Err(format!(
            "{item:?} is ambiguous: write [{address}]:{last} for port {last} of {address}, \
             or [{item}] for the address {item}"
        ));
    }
    Ok(())
}

/// `unix:/path`, `unix:///path` or `unix:relative`: one Unix-domain socket address,
/// handed to the transport as `unix:<path>` (`unix:///run/a.sock` becomes
/// `unix:/run/a.sock`).
#[derive(Clone, Copy, Debug, Default)]
pub struct UnixResolverBuilder;

impl ResolverBuilder for UnixResolverBuilder {
    fn scheme(&self) -> &'static str {
        "unix"
    }

    fn build(&self, target: &Target, handle: ResolverHandle) -> Result<Box<dyn Resolver>, String> {
        if !target.authority().is_empty() {
            return Err("unix targets take no authority: use unix:/path or unix:///path".into());
        }
        if target.path().is_empty() || target.path() == "/" {
            return Err("unix needs a socket path: unix:/path or unix:///path".into());
        }
        static_resolver(&handle, vec![format!("unix:{}", target.path())])
    }

    fn default_authority(&self, _: &Target) -> String {
        "localhost".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Endpoint;

    fn resolve(text: &str) -> Result<Vec<Endpoint>, ChannelError> {
        let reg = ResolverRegistry::with_builtins();
        let target = reg.parse_target(text)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let builder = reg.get(target.scheme()).unwrap();
        let mut r = builder
            .build(&target, ResolverHandle::new(tx))
            .map_err(|reason| ChannelError::Target {
                target: text.into(),
                reason,
            })?;
        r.shutdown();
        match rx.try_recv() {
            Ok(Input::Resolver(u)) => Ok(u.endpoints.unwrap()),
            _ => panic!("no update for {text}"),
        }
    }

    #[test]
    fn static_schemes_resolve_to_their_addresses() {
        assert_eq!(
            resolve("passthrough:///any-name:1").unwrap(),
            endpoints(["any-name:1"])
        );
        assert_eq!(
            resolve("ipv4:10.0.0.1:80,10.0.0.2").unwrap(),
            endpoints(["10.0.0.1:80", "10.0.0.2:443"])
        );
        assert_eq!(
            resolve("ipv6:[::1]:80,fd00::2").unwrap(),
            endpoints(["[::1]:80", "[fd00::2]:443"])
        );
        assert_eq!(
            resolve("unix:///run/a.sock").unwrap(),
            endpoints(["unix:/run/a.sock"])
        );
        assert_eq!(
            resolve("unix:rel.sock").unwrap(),
            endpoints(["unix:rel.sock"])
        );
    }

    #[test]
    fn bad_static_targets_say_why() {
        for (text, want) in [
            ("ipv4:10.0.0.1:80,::1", "not an IPv4 address"),
            ("ipv6:10.0.0.1", "not an IPv6 address"),
            (
                "ipv6:::1:80",
                "\"::1:80\" is ambiguous: write [::1]:80 for port 80 of ::1, or [::1:80]",
            ),
            ("ipv6:[::1]:80,fe80::1:443", "write [fe80::1]:443"),
            ("ipv4:10.0.0.1:99999", "bad port"),
            ("passthrough:///", "needs an address"),
            ("unix://host/a.sock", "no authority"),
            ("unix:", "needs a socket path"),
        ] {
            let err = resolve(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn a_policy_inbox_keeps_the_latest_update_and_wakes_the_policy_each_time() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        #[derive(Default)]
        struct Count(AtomicUsize);
        impl WorkScheduler for Count {
            fn schedule_work(&self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let scheduler = Arc::new(Count::default());
        let (handle, inbox) = ResolverHandle::for_policy(scheduler.clone());
        assert!(inbox.take().is_none());
        let first = ResolverUpdate::from_endpoints(endpoints(["a:1"]));
        let second = ResolverUpdate::from_endpoints(endpoints(["b:1"]));
        handle.clone().update(first).unwrap();
        handle.update(second.clone()).unwrap();
        assert_eq!(scheduler.0.load(Ordering::SeqCst), 2);
        assert_eq!(inbox.take(), Some(second.clone()), "the latest replaces");
        assert!(inbox.take().is_none());
        drop(inbox);
        assert_eq!(handle.update(second.clone()), Err(second));
        assert_eq!(scheduler.0.load(Ordering::SeqCst), 2, "no wake once gone");
    }

    #[test]
    fn handle_gives_the_update_back_when_the_channel_is_gone() {
        let (tx, rx) = crossbeam_channel::unbounded();
        drop(rx);
        let u = ResolverUpdate::from_endpoints(endpoints(["a:1"]));
        assert_eq!(ResolverHandle::new(tx).update(u.clone()), Err(u));
    }
}
