//! The `xds:` resolver (gRFC A27, A28, A31, A74): a channel to `xds:///svc`
//! watches the Listener for `svc`, its RouteConfiguration, and every Cluster
//! and ClusterLoadAssignment its routes name, and gives the channel one whole
//! config at a time:
//!
//! ```text
//!   xds_cluster_manager_experimental            (the service config)
//!     └─ <cluster>: xds_cluster_impl_experimental (drops, max_requests)
//!          └─ the cluster's tree (tree.rs: priority → weighted_target → policy)
//!   endpoints, each with the path [cluster, priority, locality]
//!   XdsSelector: each call → route (path, headers, fraction) → cluster,
//!                timeout and retry policy from the route, request hash
//! ```
//!
//! - Like grpc-go's dependency manager (A74), the resolver publishes only once
//!   every resource the routes need has arrived (or is known not to exist),
//!   so the tree never starts with a cluster half known.
//! - A cluster stays in the config while a call or a selector still holds a
//!   reference to it: each call keeps its cluster's [`ClusterRef`] until it
//!   ends, and the last reference to go rings the resolver, which drops the
//!   cluster from the next config. A call never selects a cluster the picker
//!   does not know.
//! - A listener or route configuration that does not exist, or a data-plane
//!   authority no virtual host serves, fails calls UNAVAILABLE naming the
//!   reason (gRFC A57); a cluster that does not exist fails only the calls
//!   routed to it.
//! - One thread per resolver, `lb-xds-resolver`, waits on one bell that every
//!   watch and every cluster reference rings (bounded 1: rings coalesce, and
//!   each wake reads every state).
//!
//! - A route to an RLS cluster specifier plugin goes to the plugin's child
//!   (`cluster_specifier_plugin:<name>`), whose policy the plugin's converter
//!   makes (lb-rls: `rls_experimental` over `cds_experimental` targets).
//!
//! Not yet: logical DNS and aggregate clusters; calls routed to them fail
//! UNAVAILABLE saying so.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded, select};
use lb_core::channel::{
    CallConfig, CodeSet, ConfigSelector, MAX_ATTEMPTS, MethodConfig, ResolverBuilder,
    ResolverHandle, SelectorRef, Target,
};
use lb_core::channel::{Resolver, RetryPolicy};
use lb_core::policies::ring_hash::header_hash;
use lb_core::{Attributes, Endpoint, Metadata, PickerRandom, ResolverUpdate, SharedRandom, Status};
use serde_json::{Map, Value, json};

use super::bootstrap::Bootstrap;
use super::client::{Kind, Notify, Watch, WatchState, XdsClient, XdsResource};
use super::cluster_watch::ClusterWatch;
use super::lds::{Listener, RouteSource};
use super::rds::RouteConfig;
use super::routing::{
    HashPolicy, Route, RouteAction, VirtualHost, pick_virtual_host, pick_weighted,
};
use super::tree::ClusterTree;
use crate::cluster_manager::{self, CLUSTER_ATTRIBUTE};
use crate::hierarchy;

/// The scheme.
pub const SCHEME: &str = "xds";

/// Builds `xds:` resolvers over one shared [`XdsClient`].
///
/// ```no_run
/// use std::sync::Arc;
/// use lb_core::channel::{Channel, ResolverRegistry};
/// use lb_group::xds::bootstrap::Bootstrap;
/// use lb_group::xds::client::{XdsClient, XdsClientOptions};
/// use lb_group::xds::resolver::XdsResolverBuilder;
/// # fn transport() -> Arc<dyn lb_core::Transport> { unimplemented!() }
/// let bootstrap = Bootstrap::from_env()?;
/// let ads = Channel::builder(format!("dns:///{}", bootstrap.servers[0].uri))
///     .transport(transport())
///     .build()?;
/// let client = Arc::new(XdsClient::start(ads, XdsClientOptions::default()));
/// let mut resolvers = ResolverRegistry::with_builtins();
/// resolvers.register(XdsResolverBuilder::new(client, bootstrap));
/// let channel = Channel::builder("xds:///my-service")
///     .transport(transport())
///     .resolver_registry(resolvers)
///     .lb_policy_registry(lb_group::registry())
///     .build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct XdsResolverBuilder {
    client: Arc<XdsClient>,
    bootstrap: Arc<Bootstrap>,
    random: SharedRandom,
    rls_plugin: Option<PluginPolicy>,
}

/// Turns an RLS cluster specifier plugin's encoded `RouteLookupConfig` into
/// the policy config of its `xds_cluster_manager` child (lb-rls has it:
/// `lb_rls::xds::plugin_policy`).
pub type PluginPolicy = fn(&[u8]) -> Result<Value, String>;

/// The `xds_cluster_manager` child (and call attribute) of cluster specifier
/// plugin `name`, as gRPC names it.
pub fn plugin_child(name: &str) -> String {
    format!("cluster_specifier_plugin:{name}")
}

impl XdsResolverBuilder {
    /// Resolvers over `client`, naming listeners by `bootstrap`'s templates.
    pub fn new(client: Arc<XdsClient>, bootstrap: Bootstrap) -> Self {
        Self {
            client,
            bootstrap: Arc::new(bootstrap),
            random: SharedRandom::from_entropy(),
            rls_plugin: None,
        }
    }

    /// The same, sending routes that name an RLS cluster specifier plugin to
    /// the policy `convert` makes of the plugin's config (without it, calls
    /// on such routes fail UNAVAILABLE saying so).
    #[must_use]
    pub fn with_rls_plugin(mut self, convert: PluginPolicy) -> Self {
        self.rls_plugin = Some(convert);
        self
    }

    /// The same, drawing weighted-cluster choices, runtime fractions and
    /// random request hashes from `random` (tests make them repeatable).
    #[must_use]
    pub fn with_random(mut self, random: SharedRandom) -> Self {
        self.random = random;
        self
    }
}

impl fmt::Debug for XdsResolverBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("XdsResolverBuilder")
    }
}

impl ResolverBuilder for XdsResolverBuilder {
    fn scheme(&self) -> &'static str {
        SCHEME
    }

    fn build(&self, target: &Target, handle: ResolverHandle) -> Result<Box<dyn Resolver>, String> {
        let authority = Some(target.authority()).filter(|a| !a.is_empty());
        let service = target.endpoint();
        if service.is_empty() {
            return Err("an xds target names a service: xds:///<service>".into());
        }
        let listener = self
            .bootstrap
            .listener_resource_name(authority, service)
            .map_err(|e| format!("xds target {}: {e}", target.original()))?;
        let (bell, rung) = bounded(1);
        let (stop, stopped) = bounded(0);
        let listener_watch = self
            .client
            .watch_notify(Kind::Listener, &listener, Notify::Bell(bell.clone()))
            .map_err(|s| s.message().to_owned())?;
        let random = Arc::new(PickerRandom::new(&self.random));
        let worker = Worker {
            client: Arc::clone(&self.client),
            handle,
            bell,
            authority: service.to_owned(),
            listener_name: listener,
            listener: listener_watch,
            route: None,
            clusters: BTreeMap::new(),
            refs: BTreeMap::new(),
            channel_id_hash: random.next_u64(),
            random,
            rls_plugin: self.rls_plugin,
            plugins: BTreeMap::new(),
            last: None,
        };
        let thread = std::thread::Builder::new()
            .name("lb-xds-resolver".into())
            .spawn(move || worker.run(&rung, &stopped))
            .map_err(|e| format!("spawn the xDS resolver thread: {e}"))?;
        Ok(Box::new(XdsResolver {
            stop: Some(stop),
            thread: Some(thread),
        }))
    }

    fn default_authority(&self, target: &Target) -> String {
        target.endpoint().to_owned()
    }
}

/// A running `xds:` resolver.
struct XdsResolver {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Resolver for XdsResolver {
    /// xDS pushes its changes: nothing to ask for.
    fn resolve_now(&mut self) {}

    fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("the xDS resolver thread panicked");
            }
        }
    }
}

impl Drop for XdsResolver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A reference to a cluster held by a selector and by each call routed to it;
/// the last one to go rings the resolver.
#[derive(Debug)]
pub struct ClusterRef {
    bell: Sender<()>,
}

impl Drop for ClusterRef {
    fn drop(&mut self) {
        let _ = self.bell.try_send(());
    }
}

/// What the last update was made of: an equal one is not sent again.
type Published = (
    Value,
    Vec<Endpoint>,
    VirtualHost,
    BTreeMap<String, Result<(), String>>,
    Option<Duration>,
);

struct Worker {
    client: Arc<XdsClient>,
    handle: ResolverHandle,
    bell: Sender<()>,
    /// The data-plane authority virtual hosts are matched against.
    authority: String,
    listener_name: String,
    listener: Watch,
    route: Option<(String, Watch)>,
    clusters: BTreeMap<String, ClusterWatch>,
    refs: BTreeMap<String, Weak<ClusterRef>>,
    channel_id_hash: u64,
    random: Arc<PickerRandom>,
    rls_plugin: Option<PluginPolicy>,
    /// The policies of the cluster specifier plugins in use, by child name
    /// (kept while calls hold them, as clusters are).
    plugins: BTreeMap<String, Result<Value, String>>,
    /// The last update sent: a config, or why calls fail.
    last: Option<Result<Published, String>>,
}

impl Worker {
    fn run(mut self, rung: &Receiver<()>, stopped: &Receiver<()>) {
        loop {
            self.resolve();
            select! {
                recv(rung) -> _ => {}
                recv(stopped) -> _ => return,
            }
        }
    }

    /// Fails calls with `why`, unless that is what the channel was last told.
    fn fail(&mut self, why: String) {
        if matches!(&self.last, Some(Err(last)) if *last == why) {
            return;
        }
        let update = ResolverUpdate::from_error(Status::unavailable(why.clone()));
        if self.handle.update(update).is_ok() {
            self.last = Some(Err(why));
        }
    }

    /// Reads every state and sends a new update if the config is whole and
    /// differs from the last.
    fn resolve(&mut self) {
        let listener = match self.listener.state() {
            WatchState {
                resource: Some(XdsResource::Listener(l)),
                ..
            } => l,
            WatchState {
                does_not_exist: true,
                ..
            } => {
                let why = format!("xDS listener {} does not exist", self.listener_name);
                return self.fail(why);
            }
            // No value, and an error: rejected, or the server is unreachable
            // (gRFC A57): calls fail rather than wait.
            WatchState {
                error: Some(error), ..
            } => {
                let why = format!("xDS listener {}: {error}", self.listener_name);
                return self.fail(why);
            }
            _ => return,
        };
        let Some(routes) = self.route_config(&listener) else {
            return;
        };
        let routes = match routes {
            Ok(r) => r,
            Err(why) => return self.fail(why),
        };
        let Some(host) = pick_virtual_host(&routes.virtual_hosts, &self.authority).cloned() else {
            let why = format!(
                "no virtual host in the xDS route configuration serves {:?}",
                self.authority
            );
            return self.fail(why);
        };
        let referenced: BTreeSet<String> = host
            .routes
            .iter()
            .flat_map(|r| match &r.action {
                RouteAction::Cluster(c) => vec![c.clone()],
                RouteAction::Weighted(w) => w.iter().map(|(c, _)| c.clone()).collect(),
                RouteAction::Plugin(p) => vec![plugin_child(p)],
                RouteAction::NonForwarding => Vec::new(),
            })
            .collect();
        for (name, config) in &routes.plugins {
            if referenced.contains(&plugin_child(name)) {
                let policy = match self.rls_plugin {
                    Some(convert) => convert(config),
                    None => Err(format!(
                        "the xDS route uses RLS cluster specifier plugin {name}, and this \
                         resolver has none (XdsResolverBuilder::with_rls_plugin)"
                    )),
                };
                self.plugins.insert(plugin_child(name), policy);
            }
        }
        // Clusters still held by calls or an earlier selector stay.
        self.refs.retain(|_, r| r.strong_count() > 0);
        let in_use: BTreeSet<String> = referenced
            .iter()
            .cloned()
            .chain(self.refs.keys().cloned())
            .collect();
        self.clusters.retain(|name, _| in_use.contains(name));
        let mut trees = Map::new();
        let mut endpoints = Vec::new();
        let mut outcomes = BTreeMap::new();
        self.plugins.retain(|name, _| in_use.contains(name));
        for name in &in_use {
            if let Some(policy) = self.plugins.get(name) {
                // A cluster specifier plugin's child: its policy, no endpoints.
                match policy {
                    Ok(p) => {
                        trees.insert(name.clone(), json!({"childPolicy": [p]}));
                        outcomes.insert(name.clone(), Ok(()));
                    }
                    Err(why) => {
                        outcomes.insert(name.clone(), Err(why.clone()));
                    }
                }
                continue;
            }
            match self.cluster_tree(name) {
                None => return, // still waiting for a resource
                Some(Ok(tree)) => {
                    trees.insert(name.clone(), json!({"childPolicy": [tree.config]}));
                    endpoints.extend(
                        tree.endpoints
                            .into_iter()
                            .map(|e| hierarchy::under(e, name)),
                    );
                    outcomes.insert(name.clone(), Ok(()));
                }
                Some(Err(why)) => {
                    outcomes.insert(name.clone(), Err(why));
                }
            }
        }
        let config = json!({"loadBalancingConfig": [
            {cluster_manager::NAME: {"children": trees}}
        ]});
        let published: Published = (
            config.clone(),
            endpoints.clone(),
            host.clone(),
            outcomes.clone(),
            listener.max_stream_duration,
        );
        if matches!(&self.last, Some(Ok(last)) if *last == published) {
            return;
        }
        let selector = self.selector(host, listener.max_stream_duration, &outcomes);
        let update = ResolverUpdate {
            service_config: Some(Ok(config)),
            config_selector: Some(SelectorRef(Arc::new(selector))),
            ..ResolverUpdate::from_endpoints(endpoints)
        };
        if self.handle.update(update).is_ok() {
            self.last = Some(Ok(published));
        }
    }

    /// The route configuration: inline, or by RDS (watched here). `None`
    /// while it has not arrived.
    fn route_config(&mut self, listener: &Listener) -> Option<Result<RouteConfig, String>> {
        let name = match &listener.routes {
            RouteSource::Inline(rc) => {
                self.route = None;
                return Some(Ok(rc.clone()));
            }
            RouteSource::Rds(name) => name,
        };
        if self.route.as_ref().is_none_or(|(n, _)| n != name) {
            let watch =
                self.client
                    .watch_notify(Kind::Route, name, Notify::Bell(self.bell.clone()));
            match watch {
                Ok(w) => self.route = Some((name.clone(), w)),
                Err(s) => return Some(Err(s.message().to_owned())),
            }
        }
        let (_, watch) = self.route.as_ref()?;
        match watch.state() {
            WatchState {
                resource: Some(XdsResource::Route(rc)),
                ..
            } => Some(Ok(rc)),
            WatchState {
                does_not_exist: true,
                ..
            } => Some(Err(format!(
                "xDS route configuration {name} does not exist"
            ))),
            WatchState {
                error: Some(error), ..
            } => Some(Err(format!("xDS route configuration {name}: {error}"))),
            _ => None,
        }
    }

    /// A cluster's tree; `None` while a resource it needs has not arrived;
    /// an error when calls to it must fail.
    fn cluster_tree(&mut self, name: &str) -> Option<Result<ClusterTree, String>> {
        if !self.clusters.contains_key(name) {
            match ClusterWatch::start(&self.client, name, Notify::Bell(self.bell.clone())) {
                Ok(w) => {
                    self.clusters.insert(name.to_owned(), w);
                }
                Err(why) => return Some(Err(why)),
            }
        }
        self.clusters.get_mut(name)?.tree(&self.client)
    }

    fn selector(
        &mut self,
        host: VirtualHost,
        default_timeout: Option<Duration>,
        outcomes: &BTreeMap<String, Result<(), String>>,
    ) -> XdsSelector {
        let clusters = outcomes
            .iter()
            .map(|(name, outcome)| {
                let choice = match outcome {
                    Ok(()) => {
                        let held = self.refs.get(name).and_then(Weak::upgrade);
                        let held = held.unwrap_or_else(|| {
                            let r = Arc::new(ClusterRef {
                                bell: self.bell.clone(),
                            });
                            self.refs.insert(name.clone(), Arc::downgrade(&r));
                            r
                        });
                        Ok((
                            Attributes::new().with(CLUSTER_ATTRIBUTE, name.as_str()),
                            held,
                        ))
                    }
                    Err(why) => Err(why.clone()),
                };
                (name.clone(), choice)
            })
            .collect();
        let plugin_names: BTreeSet<String> = host
            .routes
            .iter()
            .filter_map(|r| match &r.action {
                RouteAction::Plugin(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        let routes = host
            .routes
            .into_iter()
            .map(|route| {
                let timeout = route.max_stream_duration.or(default_timeout);
                let retry_policy = route.retry.as_ref().map(|r| RetryPolicy {
                    max_attempts: r.max_attempts.min(MAX_ATTEMPTS),
                    initial_backoff: r.base_interval,
                    max_backoff: r.max_interval,
                    backoff_multiplier: 2.0,
                    retryable_status_codes: r
                        .retry_on
                        .iter()
                        .fold(CodeSet::default(), |set, code| set.with(*code)),
                });
                let method_config = (timeout.is_some() || retry_policy.is_some()).then(|| {
                    Arc::new(MethodConfig {
                        timeout,
                        retry_policy,
                        ..MethodConfig::default()
                    })
                });
                (route, method_config)
            })
            .collect();
        XdsSelector {
            host_name: host.name,
            domains: host.domains,
            plugins: plugin_names
                .into_iter()
                .map(|p| {
                    let child = plugin_child(&p);
                    (p, child)
                })
                .collect(),
            routes,
            clusters,
            channel_id_hash: self.channel_id_hash,
            random: Arc::clone(&self.random),
        }
    }
}

/// What a call routed to a cluster gets: its attributes and a reference, or
/// why calls to it fail.
type ClusterChoice = Result<(Attributes, Arc<ClusterRef>), String>;

/// The per-call config selector of one xDS config (see the
/// [module docs](self)).
pub struct XdsSelector {
    host_name: String,
    domains: Vec<String>,
    routes: Vec<(Route, Option<Arc<MethodConfig>>)>,
    clusters: BTreeMap<String, ClusterChoice>,
    /// Each cluster specifier plugin's child in `clusters`, by plugin name.
    plugins: BTreeMap<String, String>,
    channel_id_hash: u64,
    random: Arc<PickerRandom>,
}

impl fmt::Debug for XdsSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdsSelector")
            .field("virtual_host", &self.host_name)
            .field("domains", &self.domains)
            .field("routes", &self.routes.len())
            .field("clusters", &self.clusters.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl XdsSelector {
    /// The call's hash from the route's hash policies (gRFC A42): each
    /// policy's hash is folded in as `hash.rotate_left(1) ^ new`, a terminal
    /// policy that produced one ends the list, and a call no policy hashes
    /// gets a random hash.
    fn request_hash(&self, route: &Route, metadata: &Metadata) -> u64 {
        let mut hash: Option<u64> = None;
        for policy in &route.hash_policies {
            let (found, terminal) = match policy {
                HashPolicy::Header { name, terminal } => (header_hash(metadata, name), *terminal),
                HashPolicy::ChannelId { terminal } => (Some(self.channel_id_hash), *terminal),
            };
            if let Some(h) = found {
                hash = Some(hash.map_or(h, |old| old.rotate_left(1) ^ h));
                if terminal {
                    break;
                }
            }
        }
        hash.unwrap_or_else(|| self.random.next_u64())
    }
}

impl ConfigSelector for XdsSelector {
    fn select(&self, method: &str, metadata: &Metadata) -> Result<CallConfig, Status> {
        let header = |name: &str| {
            let mut values = metadata.get_all(name);
            let first = values.next()?.to_owned();
            Some(values.fold(first, |mut all, v| {
                all.push(',');
                all.push_str(v);
                all
            }))
        };
        let fraction = self.random.below(1_000_000) as u32;
        let Some((route, method_config)) = self
            .routes
            .iter()
            .find(|(r, _)| r.matcher.matches(method, &header, fraction))
        else {
            return Err(Status::unavailable(format!(
                "no xDS route in virtual host {} matches {method}",
                self.host_name
            )));
        };
        let cluster = match &route.action {
            RouteAction::Cluster(c) => c.as_str(),
            RouteAction::Weighted(clusters) => {
                let total: u64 = clusters.iter().map(|(_, w)| u64::from(*w)).sum();
                let draw = ((u128::from(self.random.next_u64()) * u128::from(total)) >> 64) as u64;
                pick_weighted(clusters, draw).unwrap_or_default()
            }
            RouteAction::Plugin(name) => match self.plugins.get(name) {
                Some(child) => child.as_str(),
                None => {
                    return Err(Status::unavailable(format!(
                        "xDS cluster specifier plugin {name} is not in the config"
                    )));
                }
            },
            RouteAction::NonForwarding => {
                return Err(Status::unavailable(format!(
                    "the xDS route for {method} is not a forwarding route"
                )));
            }
        };
        match self.clusters.get(cluster) {
            Some(Ok((attributes, held))) => Ok(CallConfig {
                method_config: method_config.clone(),
                attributes: attributes.clone(),
                request_hash: Some(self.request_hash(route, metadata)),
                hold: Some(Box::new(Arc::clone(held))),
            }),
            Some(Err(why)) => Err(Status::unavailable(why.clone())),
            None => Err(Status::unavailable(format!(
                "xDS cluster {cluster} is not in the config"
            ))),
        }
    }
}
