//! `rls_dial_target`: a child policy for RLS that resolves the target RLS returned
//! and balances over its addresses with a leaf policy (`round_robin` by default).
//!
//! grpc-go's RLS children are xDS cluster policies (`cds_experimental`); without xDS,
//! this is the child that turns an RLS target into connections:
//!
//! ```json
//! {"rls_experimental": {
//!     "routeLookupConfig": {"…": "…"},
//!     "childPolicy": [{"rls_dial_target": {"childPolicy": [{"pick_first": {}}]}}],
//!     "childPolicyConfigTargetFieldName": "target"}}
//! ```
//!
//! The RLS policy fills in `"target"` (so `childPolicyConfigTargetFieldName` must be
//! `"target"`) with what the RLS server returned, in gRPC's target syntax, resolved
//! by the resolvers of the channel the policy runs in
//! ([`ChannelFactory::resolver_registry`](lb_core::channel::ChannelFactory::resolver_registry);
//! the built-in ones when the policy has no channel):
//!
//! ```text
//!   10.0.0.1:443, [::1]:443            an IP literal: used as is
//!   ipv4:10.0.0.1:80,10.0.0.2:80       a list of IPv4 addresses (ipv6:[a]:p,… too)
//!   passthrough:///any-address         the address, verbatim
//!   unix:/run/backend.sock             a Unix socket
//!   backend.example.com:443            resolved by the channel's dns resolver (dns:///… too)
//!   test:///backend                    a scheme the program registered with its channel
//!                                      (ChannelBuilder::resolver_registry)
//! ```
//!
//! Targets in the built-in schemes are checked when the config is parsed; a
//! `scheme://` target in any other scheme (write custom schemes that way) is left
//! to the channel's registry, and a scheme it does not know makes the policy
//! TRANSIENT_FAILURE.
//!
//! The policy runs the resolver the way a channel runs its own
//! ([`ResolverBuilder::build`](lb_core::channel::ResolverBuilder::build),
//! [`Resolver::resolve_now`], [`Resolver::shutdown`] when the target changes or
//! the policy closes), with a handle from
//! [`ResolverHandle::for_policy`]: results come back through the policy's work
//! scheduler and are taken on the serializer, in `work` (a result the resolver
//! gives while it is built, as for IP literals and lists, is used at once). The
//! `dns` resolver looks names up on a thread of its own (`lb-resolver-dns`), never
//! on the serializer. The leaf policy asks for re-resolution when it loses its
//! connections; the policy resolves again at most every
//! [`MIN_RESOLUTION_INTERVAL`]. The parent's resolver addresses are ignored. Until
//! the first resolution the policy is CONNECTING; a resolution error before any
//! addresses makes it TRANSIENT_FAILURE.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use lb_core::channel::{ChannelError, Resolver, ResolverHandle, ResolverInbox, ResolverRegistry};
use lb_core::channelz::PolicyView;
use lb_core::config::Fields;
use lb_core::{
    Address, ChannelController, ConfigError, ConnectivityState, Endpoint, LbConfig, LbPolicy,
    LbPolicyBuilder, LbPolicyOptions, LbPolicyRegistry, LbState, ParsedLbConfig, ResolverUpdate,
    Status, Subchannel, SubchannelState, UpdateError,
};

use crate::control_channel::{LiveGuard, ThreadCounter};

/// The policy's registered name.
pub const NAME: &str = "rls_dial_target";

/// The config field holding the target: set `childPolicyConfigTargetFieldName` to
/// this.
pub const TARGET_FIELD: &str = "target";

/// The shortest time between two resolutions the leaf policy asks for.
pub const MIN_RESOLUTION_INTERVAL: Duration = Duration::from_secs(30);

/// The port of a target that names none.
const DEFAULT_PORT: u16 = 443;

/// The `rls_dial_target` config.
#[derive(Clone, Debug, PartialEq)]
pub struct DialTargetConfig {
    /// The target to resolve, in gRPC's target syntax.
    pub target: String,
    /// The leaf policy that balances over the target's addresses.
    pub child_policy: ParsedLbConfig,
}

/// Builds [`DialTarget`](self) policies and parses their config.
///
/// # Examples
///
/// ```
/// use lb_core::{LbPolicyBuilder, LbPolicyRegistry};
/// use lb_rls::dial::{DialTargetBuilder, DialTargetConfig};
/// let registry = LbPolicyRegistry::with_builtins();
/// let config = DialTargetBuilder::new()
///     .parse_config(&serde_json::json!({"target": "ipv4:10.0.0.1:80"}), &registry)?;
/// let config = config.downcast_ref::<DialTargetConfig>().unwrap();
/// assert_eq!(config.child_policy.name(), "round_robin");
///
/// let err = DialTargetBuilder::new()
///     .parse_config(&serde_json::json!({"target": "ipv4:backend:80"}), &registry)
///     .unwrap_err();
/// assert!(err.to_string().starts_with("target: "), "{err}");
/// // A scheme a channel may register is left to the channel's resolvers.
/// DialTargetBuilder::new()
///     .parse_config(&serde_json::json!({"target": "test:///backend"}), &registry)?;
/// # Ok::<(), lb_core::ConfigError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct DialTargetBuilder {
    threads: ThreadCounter,
}

impl DialTargetBuilder {
    /// A builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder whose threads are counted with the RLS builder's.
    pub(crate) fn with_threads(threads: ThreadCounter) -> Self {
        Self { threads }
    }

    /// How many resolvers of names (a `dns` name's lookup thread, a resolver of
    /// a scheme the channel registered) the policies of this builder run now. IP
    /// literals, address lists, `passthrough` and `unix` targets need none.
    pub fn thread_count(&self) -> usize {
        self.threads.live()
    }
}

impl LbPolicyBuilder for DialTargetBuilder {
    fn name(&self) -> &'static str {
        NAME
    }

    fn build(&self, options: LbPolicyOptions) -> Box<dyn LbPolicy> {
        Box::new(DialTarget {
            options,
            threads: self.threads.clone(),
            config: None,
            resolver: None,
            resolved: None,
            leaf: None,
            leaf_fed: false,
            last_resolution: None,
            resolve_at: None,
            closed: false,
        })
    }

    fn parse_config(
        &self,
        config: &serde_json::Value,
        registry: &LbPolicyRegistry,
    ) -> Result<LbConfig, ConfigError> {
        let fields = Fields::new(config, "")?;
        let target = fields
            .string(TARGET_FIELD)?
            .ok_or_else(|| ConfigError::new(TARGET_FIELD, "is required"))?;
        if target.is_empty() {
            return Err(ConfigError::new(TARGET_FIELD, "must be non-empty"));
        }
        check(target).map_err(|m| ConfigError::new(TARGET_FIELD, m))?;
        let child_policy = match fields.get("childPolicy") {
            Some(list) => registry
                .parse_load_balancing_config(list)
                .map_err(|e| e.within("childPolicy"))?,
            None => registry
                .parse_load_balancing_config(&serde_json::json!([{"round_robin": {}}]))
                .map_err(|e| e.within("childPolicy"))?,
        };
        Ok(LbConfig::new(DialTargetConfig {
            target: target.to_owned(),
            child_policy,
        }))
    }
}

/// What a target in a built-in scheme resolves to.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// A fixed list of addresses.
    Static(Vec<String>),
    /// A name for the `dns` resolver.
    Dns { host: String, port: u16 },
}

/// Checks `text` at parse time: a target in a built-in scheme must be valid; a
/// `scheme://` target in another scheme is left to the channel's registry.
fn check(text: &str) -> Result<(), String> {
    match ResolverRegistry::with_builtins().parse_target(text) {
        Err(ChannelError::UnknownScheme { .. }) => Ok(()),
        _ => plan(text).map(|_| ()),
    }
}

/// Whether resolving `text` keeps a resolver busy (a name to look up, a custom
/// scheme), as opposed to a fixed list the resolver gives at once.
fn needs_lookup(text: &str) -> bool {
    !matches!(plan(text), Ok(Plan::Static(_)))
}

/// Decides what a target in a built-in scheme resolves to.
fn plan(text: &str) -> Result<Plan, String> {
    let target = ResolverRegistry::with_builtins()
        .parse_target(text)
        .map_err(|e| e.to_string())?;
    let no_authority = || {
        if target.authority().is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} targets take no authority ({text:?})",
                target.scheme()
            ))
        }
    };
    match target.scheme() {
        "passthrough" if !target.endpoint().is_empty() => {
            Ok(Plan::Static(vec![target.endpoint().to_owned()]))
        }
        "passthrough" => Err(format!("{text:?} names no address")),
        scheme @ ("ipv4" | "ipv6") => {
            no_authority()?;
            let v6 = scheme == "ipv6";
            let addresses = target
                .endpoint()
                .split(',')
                .map(|item| {
                    let (host, port) = split_host_port(item)?;
                    let ok = if v6 {
                        host.parse::<Ipv6Addr>().is_ok()
                    } else {
                        host.parse::<Ipv4Addr>().is_ok()
                    };
                    if !ok {
                        return Err(format!("{item:?} is not an {scheme} address"));
                    }
                    Ok(join_host_port(&host, port))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Plan::Static(addresses))
        }
        "unix" => {
            no_authority()?;
            if target.path().is_empty() || target.path() == "/" {
                return Err(format!("{text:?} names no socket path"));
            }
            Ok(Plan::Static(vec![format!("unix:{}", target.path())]))
        }
        "dns" => {
            no_authority()?;
            let (host, port) = split_host_port(target.endpoint())?;
            if host.is_empty() {
                return Err(format!("{text:?} names no host"));
            }
            Ok(match host.parse::<IpAddr>() {
                Ok(ip) => Plan::Static(vec![SocketAddr::new(ip, port).to_string()]),
                Err(_) => Plan::Dns { host, port },
            })
        }
        other => Err(format!(
            "unsupported scheme {other:?} in {text:?} (use dns, ipv4, ipv6, passthrough or unix)"
        )),
    }
}

/// Splits `host:port`, `[v6]:port`, `host` or a bare IPv6 address; the port
/// defaults to 443.
fn split_host_port(text: &str) -> Result<(String, u16), String> {
    let parse_port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("bad port {p:?} in {text:?}"))
    };
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("unclosed '[' in {text:?}"))?;
        return match after {
            "" => Ok((host.to_owned(), DEFAULT_PORT)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((host.to_owned(), parse_port(p)?)),
                None => Err(format!("junk after ']' in {text:?}")),
            },
        };
    }
    match text.matches(':').count() {
        0 => Ok((text.to_owned(), DEFAULT_PORT)),
        1 => {
            let (host, port) = text.split_once(':').expect("one colon");
            Ok((host.to_owned(), parse_port(port)?))
        }
        _ => Ok((text.to_owned(), DEFAULT_PORT)),
    }
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The resolver of the current target and where its results arrive.
struct Running {
    resolver: Box<dyn Resolver>,
    inbox: ResolverInbox,
    /// Counts the resolver in the builder's [`DialTargetBuilder::thread_count`].
    _live: Option<LiveGuard>,
}

impl Running {
    /// Builds the resolver for `text` from the channel's registry (the built-in
    /// one without a channel), the way the channel builds its own.
    fn start(
        text: &str,
        options: &LbPolicyOptions,
        threads: &ThreadCounter,
    ) -> Result<Self, String> {
        let builtins;
        let registry = match &options.channels {
            Some(channels) => channels.resolver_registry(),
            None => {
                builtins = ResolverRegistry::with_builtins();
                &builtins
            }
        };
        let target = registry.parse_target(text).map_err(|e| e.to_string())?;
        let builder = registry
            .get(target.scheme())
            .ok_or_else(|| format!("no resolver for scheme {:?} ({text:?})", target.scheme()))?;
        let (handle, inbox) = ResolverHandle::for_policy(options.work_scheduler.clone());
        let live = needs_lookup(text).then(|| threads.hold());
        let resolver = builder.build(&target, handle)?;
        Ok(Self {
            resolver,
            inbox,
            _live: live,
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.resolver.shutdown();
    }
}

/// The controller the leaf sees: the parent's, with re-resolution requests kept.
struct LeafController<'a> {
    parent: &'a mut dyn ChannelController,
    resolve: &'a mut bool,
}

impl ChannelController for LeafController<'_> {
    fn new_subchannel(&mut self, address: &Address) -> Subchannel {
        self.parent.new_subchannel(address)
    }

    fn update_picker(&mut self, state: LbState) {
        self.parent.update_picker(state);
    }

    fn request_resolution(&mut self) {
        *self.resolve = true;
    }

    fn wake_at(&mut self, deadline: Instant) {
        self.parent.wake_at(deadline);
    }
}

/// The `rls_dial_target` policy. See the [module docs](self).
struct DialTarget {
    options: LbPolicyOptions,
    threads: ThreadCounter,
    config: Option<DialTargetConfig>,
    resolver: Option<Running>,
    /// The latest resolution (`None`: under way).
    resolved: Option<Result<Vec<Endpoint>, Status>>,
    leaf: Option<Box<dyn LbPolicy>>,
    /// Whether the leaf has been given endpoints.
    leaf_fed: bool,
    last_resolution: Option<Instant>,
    resolve_at: Option<Instant>,
    closed: bool,
}

impl DialTarget {
    /// Runs `f` on the leaf with a controller that keeps its re-resolution
    /// requests, then honours them.
    fn with_leaf<R>(
        &mut self,
        controller: &mut dyn ChannelController,
        now: Instant,
        f: impl FnOnce(&mut dyn LbPolicy, &mut dyn ChannelController) -> R,
    ) -> Option<R> {
        let leaf = self.leaf.as_mut()?;
        let mut resolve = false;
        let result = {
            let mut cc = LeafController {
                parent: &mut *controller,
                resolve: &mut resolve,
            };
            f(&mut **leaf, &mut cc)
        };
        if resolve {
            self.request_resolution(controller, now);
        }
        Some(result)
    }

    /// Resolves again, at most every [`MIN_RESOLUTION_INTERVAL`].
    fn request_resolution(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        let Some(running) = &mut self.resolver else {
            return;
        };
        match self.last_resolution {
            Some(last) if now < last + MIN_RESOLUTION_INTERVAL => {
                let at = last + MIN_RESOLUTION_INTERVAL;
                if self.resolve_at.is_none() {
                    self.resolve_at = Some(at);
                    controller.wake_at(at);
                }
            }
            _ => {
                running.resolver.resolve_now();
                self.last_resolution = Some(now);
                self.resolve_at = None;
            }
        }
    }

    /// Gives the leaf the latest resolution (or publishes what the policy is
    /// without one).
    fn feed_leaf(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        let Some(config) = &self.config else {
            return;
        };
        let leaf_config = config.child_policy.config.clone();
        match self.resolved.clone() {
            None => {
                if !self.leaf_fed {
                    controller.update_picker(LbState::queuing(ConnectivityState::Connecting));
                }
            }
            Some(Ok(endpoints)) => {
                self.leaf_fed = true;
                let update = ResolverUpdate::from_endpoints(endpoints);
                // A leaf that cannot use the addresses has published why.
                let _ = self.with_leaf(controller, now, |leaf, cc| {
                    leaf.resolver_update(update, Some(&leaf_config), cc, now)
                });
            }
            Some(Err(status)) => {
                if self.leaf_fed {
                    let update = ResolverUpdate::from_error(status);
                    let _ = self.with_leaf(controller, now, |leaf, cc| {
                        leaf.resolver_update(update, Some(&leaf_config), cc, now)
                    });
                } else {
                    controller.update_picker(LbState::failing(status));
                }
            }
        }
    }

    /// Shuts the resolver down (dropping [`Running`] does).
    fn stop_resolver(&mut self) {
        self.resolver = None;
    }
}

impl LbPolicy for DialTarget {
    fn resolver_update(
        &mut self,
        _update: ResolverUpdate,
        config: Option<&LbConfig>,
        controller: &mut dyn ChannelController,
        now: Instant,
    ) -> Result<(), UpdateError> {
        if self.closed {
            return Ok(());
        }
        let Some(config) = config.and_then(|c| c.downcast_ref::<DialTargetConfig>()) else {
            return Err(UpdateError::Config(ConfigError::new(
                "",
                format!("{NAME} needs a {NAME} config"),
            )));
        };
        let old = self.config.replace(config.clone());
        let target_changed = old.as_ref().is_none_or(|o| o.target != config.target);
        let leaf_changed = old
            .as_ref()
            .is_none_or(|o| o.child_policy != config.child_policy);
        if !target_changed && !leaf_changed {
            return Ok(());
        }
        if leaf_changed {
            let builder = &config.child_policy.builder;
            let same_policy = old
                .as_ref()
                .is_some_and(|o| o.child_policy.name() == builder.name());
            if !same_policy || self.leaf.is_none() {
                if let Some(mut old_leaf) = self.leaf.take() {
                    old_leaf.close();
                }
                self.leaf = Some(builder.build(self.options.clone()));
                self.leaf_fed = false;
            }
        }
        if target_changed {
            self.stop_resolver();
            self.resolved = None;
            self.last_resolution = None;
            self.resolve_at = None;
            match Running::start(&config.target, &self.options, &self.threads) {
                Ok(running) => {
                    // Static resolvers answer while they are built.
                    self.resolved = running.inbox.take().map(|u| u.endpoints);
                    self.resolver = Some(running);
                    self.last_resolution = Some(now);
                }
                Err(message) => {
                    self.resolved = Some(Err(Status::unavailable(format!("{NAME}: {message}"))));
                }
            }
        }
        self.feed_leaf(controller, now);
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
        self.with_leaf(controller, now, |leaf, cc| {
            leaf.subchannel_update(subchannel, state, cc, now);
        });
    }

    fn work(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        if self.closed {
            return;
        }
        if let Some(update) = self.resolver.as_ref().and_then(|r| r.inbox.take()) {
            self.resolved = Some(update.endpoints);
            self.feed_leaf(controller, now);
        }
        if self.resolve_at.is_some_and(|at| now >= at) {
            self.resolve_at = None;
            self.request_resolution(controller, now);
        }
        self.with_leaf(controller, now, |leaf, cc| leaf.work(cc, now));
    }

    fn exit_idle(&mut self, controller: &mut dyn ChannelController, now: Instant) {
        if self.closed {
            return;
        }
        self.with_leaf(controller, now, |leaf, cc| leaf.exit_idle(cc, now));
    }

    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.stop_resolver();
        if let Some(mut leaf) = self.leaf.take() {
            leaf.close();
        }
    }

    fn describe(&self, view: &mut PolicyView) {
        let Some(config) = &self.config else {
            return;
        };
        view.detail("target", &config.target);
        let resolution = match &self.resolved {
            None => "under way".to_owned(),
            Some(Ok(endpoints)) => format!("{} endpoints", endpoints.len()),
            Some(Err(status)) => format!("failed: {status}"),
        };
        view.detail("resolution", resolution);
        if let Some(leaf) = &self.leaf {
            let mut child = PolicyView {
                name: config.target.clone(),
                policy: config.child_policy.name().to_owned(),
                ..PolicyView::default()
            };
            leaf.describe(&mut child);
            view.children.push(child);
        }
    }
}

impl Drop for DialTarget {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for DialTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DialTarget")
            .field("config", &self.config)
            .field("resolved", &self.resolved)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_plan_as_grpc_names_them() {
        let s = |v: &[&str]| Ok(Plan::Static(v.iter().map(|a| (*a).to_owned()).collect()));
        assert_eq!(plan("10.0.0.1:80"), s(&["10.0.0.1:80"]));
        assert_eq!(plan("10.0.0.1"), s(&["10.0.0.1:443"]));
        assert_eq!(plan("[::1]:80"), s(&["[::1]:80"]));
        assert_eq!(plan("dns:///[::1]"), s(&["[::1]:443"]));
        assert_eq!(
            plan("ipv4:10.0.0.1:80,10.0.0.2"),
            s(&["10.0.0.1:80", "10.0.0.2:443"])
        );
        assert_eq!(plan("ipv6:[::1]:80,::2"), s(&["[::1]:80", "[::2]:443"]));
        assert_eq!(plan("passthrough:///backend-a:1"), s(&["backend-a:1"]));
        assert_eq!(plan("unix:///run/b.sock"), s(&["unix:/run/b.sock"]));
        assert_eq!(
            plan("backend.example.com:8443"),
            Ok(Plan::Dns {
                host: "backend.example.com".into(),
                port: 8443
            })
        );
        assert_eq!(
            plan("dns:///backend.example.com"),
            Ok(Plan::Dns {
                host: "backend.example.com".into(),
                port: 443
            })
        );
        for (bad, why) in [
            ("xds:///cluster", "scheme"),
            ("ipv4:::1", "not an ipv4 address"),
            ("ipv4:10.0.0.1:99999", "bad port"),
            ("dns://8.8.8.8/backend", "no authority"),
            ("passthrough:///", "names no address"),
            ("[::1", "unclosed"),
        ] {
            let err = plan(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
