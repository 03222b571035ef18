//! One cluster's watches (its Cluster, then its ClusterLoadAssignment) and the
//! policy tree they make, shared by the `xds:` resolver (every cluster its
//! routes name) and the `cds_experimental` policy (clusters named at run time,
//! such as RLS's targets).
//!
//! An EDS cluster's tree is `xds_cluster_impl_experimental` (drops,
//! `max_requests`) over [`cluster_tree`]'s priorities, with the endpoints'
//! hierarchy paths. A logical DNS cluster (gRFC A37) is resolved by lb-core's
//! `dns` resolver (its own `lb-resolver-dns` thread, results through the
//! watch's [`Notify`]) into one endpoint with every address, under
//! `pick_first`. An aggregate cluster (gRFC A37, with A75's fixes) is a
//! `priority_experimental` over its leaf clusters, depth first, each running
//! its own tree and policy; leaves that cannot be used are left out, and a
//! chain deeper than [`MAX_AGGREGATE_DEPTH`] or a cycle is an error.

use std::collections::BTreeMap;
use std::sync::Arc;

use lb_core::channel::{DnsResolverBuilder, Resolver, ResolverBuilder, ResolverHandle};
use lb_core::channel::{ResolverInbox, ResolverRegistry};
use lb_core::{Endpoint, WorkScheduler};
use serde_json::{Map, Value, json};

use super::cds::{Cluster, ClusterKind};
use super::client::{Kind, Notify, Watch, WatchState, XdsClient, XdsResource};
use super::tree::{ClusterTree, PriorityNames, cluster_tree, with_outlier_detection};
use crate::{cluster_impl, hierarchy, priority};

/// The deepest chain of aggregate clusters followed (gRFC A37 says 16).
pub const MAX_AGGREGATE_DEPTH: usize = 16;

/// A cluster's watches; see the [module docs](self).
#[derive(Debug)]
pub struct ClusterWatch {
    name: String,
    notify: Notify,
    cds: Watch,
    /// The endpoint resource's name and watch (EDS clusters).
    eds: Option<(String, Watch)>,
    names: PriorityNames,
    /// An aggregate cluster's underlying clusters' watches, by name.
    subs: BTreeMap<String, Self>,
    /// A logical DNS cluster's resolution.
    dns: Option<Dns>,
}

/// A logical DNS cluster's resolver and what it last found.
struct Dns {
    target: String,
    resolver: Box<dyn Resolver>,
    inbox: ResolverInbox,
    /// The addresses found, or why none were.
    found: Option<Result<Endpoint, String>>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns")
            .field("target", &self.target)
            .field("found", &self.found)
            .finish_non_exhaustive()
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.resolver.shutdown();
    }
}

/// Tells a watch's [`Notify`] of a resolver result.
struct NotifyScheduler(Notify);

impl WorkScheduler for NotifyScheduler {
    fn schedule_work(&self) {
        self.0.notify();
    }
}

impl ClusterWatch {
    /// Starts watching cluster `name`, telling `notify` of every change.
    ///
    /// # Errors
    ///
    /// The client cannot take the watch (it is shutting down or busy).
    pub fn start(client: &XdsClient, name: &str, notify: Notify) -> Result<Self, String> {
        let cds = client
            .watch_notify(Kind::Cluster, name, notify.clone())
            .map_err(|s| s.message().to_owned())?;
        Ok(Self {
            name: name.to_owned(),
            notify,
            cds,
            eds: None,
            names: PriorityNames::default(),
            subs: BTreeMap::new(),
            dns: None,
        })
    }

    /// The cluster's tree as its resources stand: `None` while one it needs
    /// has not arrived, an error (for calls routed to it) when it cannot have
    /// one. Watches the endpoint resource once the cluster names it.
    pub fn tree(&mut self, client: &XdsClient) -> Option<Result<ClusterTree, String>> {
        self.tree_within(client, &mut Vec::new())
    }

    /// [`tree`](Self::tree), with `chain` the aggregate clusters above this
    /// one.
    fn tree_within(
        &mut self,
        client: &XdsClient,
        chain: &mut Vec<String>,
    ) -> Option<Result<ClusterTree, String>> {
        let name = &self.name;
        let cluster: Cluster = match self.cds.state() {
            WatchState {
                resource: Some(XdsResource::Cluster(c)),
                ..
            } => c,
            WatchState {
                does_not_exist: true,
                ..
            } => return Some(Err(format!("xDS cluster {name} does not exist"))),
            // No value, and an error: rejected, or the server is unreachable.
            WatchState {
                error: Some(error), ..
            } => return Some(Err(format!("xDS cluster {name}: {error}"))),
            _ => return None,
        };
        let eds_name = match &cluster.kind {
            ClusterKind::Eds { service_name } => service_name.as_deref().unwrap_or(name),
            ClusterKind::LogicalDns { target } => {
                let target = target.clone();
                return self.logical_dns(&cluster, &target);
            }
            ClusterKind::Aggregate { clusters } => {
                let clusters = clusters.clone();
                return self.aggregate(client, &clusters, chain);
            }
        };
        if self.eds.as_ref().is_none_or(|(n, _)| n != eds_name) {
            match client.watch_notify(Kind::Endpoints, eds_name, self.notify.clone()) {
                Ok(w) => self.eds = Some((eds_name.to_owned(), w)),
                Err(s) => return Some(Err(s.message().to_owned())),
            }
        }
        let (_, eds) = self.eds.as_ref()?;
        let endpoints = match eds.state() {
            WatchState {
                resource: Some(XdsResource::Endpoints(e)),
                ..
            } => e,
            WatchState {
                does_not_exist: true,
                ..
            } => {
                return Some(Err(format!(
                    "xDS endpoints {eds_name} of cluster {name} do not exist"
                )));
            }
            WatchState {
                error: Some(error), ..
            } => {
                return Some(Err(format!(
                    "xDS endpoints {eds_name} of cluster {name}: {error}"
                )));
            }
            _ => return None,
        };
        if endpoints.localities.is_empty() {
            return Some(Err(format!("xDS cluster {name} has no endpoints")));
        }
        let tree = cluster_tree(&cluster, &endpoints, &mut self.names);
        let drops: Vec<Value> = endpoints
            .drops
            .iter()
            .map(|d| json!({"category": d.category, "requestsPerMillion": d.per_million}))
            .collect();
        Some(Ok(ClusterTree {
            config: impl_config(name, &cluster, drops, tree.config),
            endpoints: tree.endpoints,
        }))
    }

    /// An aggregate cluster's tree: a priority over its underlying clusters'
    /// trees, in order.
    fn aggregate(
        &mut self,
        client: &XdsClient,
        clusters: &[String],
        chain: &mut Vec<String>,
    ) -> Option<Result<ClusterTree, String>> {
        let name = self.name.clone();
        if chain.contains(&name) {
            return Some(Err(format!(
                "xDS aggregate cluster {name} contains itself: {} -> {name}",
                chain.join(" -> ")
            )));
        }
        if chain.len() >= MAX_AGGREGATE_DEPTH {
            return Some(Err(format!(
                "xDS aggregate clusters nest deeper than {MAX_AGGREGATE_DEPTH} at {name}"
            )));
        }
        self.subs.retain(|n, _| clusters.contains(n));
        chain.push(name.clone());
        let mut children = Map::new();
        let mut priorities = Vec::new();
        let mut endpoints = Vec::new();
        let mut errors = Vec::new();
        let mut waiting = false;
        for sub in clusters {
            if !self.subs.contains_key(sub) {
                match Self::start(client, sub, self.notify.clone()) {
                    Ok(w) => {
                        self.subs.insert(sub.clone(), w);
                    }
                    Err(why) => {
                        errors.push(why);
                        continue;
                    }
                }
            }
            let Some(watch) = self.subs.get_mut(sub) else {
                continue;
            };
            match watch.tree_within(client, chain) {
                None => waiting = true,
                Some(Err(why)) => errors.push(why),
                Some(Ok(tree)) => {
                    if children.contains_key(sub) {
                        continue;
                    }
                    children.insert(
                        sub.clone(),
                        json!({"config": [tree.config], "ignoreReresolutionRequests": true}),
                    );
                    priorities.push(sub.clone());
                    endpoints.extend(tree.endpoints.into_iter().map(|e| hierarchy::under(e, sub)));
                }
            }
        }
        chain.pop();
        if waiting {
            return None;
        }
        if priorities.is_empty() {
            return Some(Err(format!(
                "xDS aggregate cluster {name} has no usable cluster: {}",
                errors.join("; ")
            )));
        }
        Some(Ok(ClusterTree {
            config: json!({priority::NAME: {"children": children, "priorities": priorities}}),
            endpoints,
        }))
    }

    /// A logical DNS cluster's tree: one priority, one endpoint with every
    /// address `target` resolves to, `pick_first` over them.
    fn logical_dns(
        &mut self,
        cluster: &Cluster,
        target: &str,
    ) -> Option<Result<ClusterTree, String>> {
        let name = self.name.clone();
        if self.dns.as_ref().is_none_or(|d| d.target != target) {
            self.dns = None;
            let scheduler = Arc::new(NotifyScheduler(self.notify.clone()));
            let (handle, inbox) = ResolverHandle::for_policy(scheduler);
            let parsed =
                ResolverRegistry::with_builtins().parse_target(&format!("dns:///{target}"));
            let built = parsed
                .map_err(|e| e.to_string())
                .and_then(|t| DnsResolverBuilder.build(&t, handle));
            match built {
                Ok(resolver) => {
                    self.dns = Some(Dns {
                        target: target.to_owned(),
                        resolver,
                        inbox,
                        found: None,
                    });
                }
                Err(why) => {
                    return Some(Err(format!(
                        "xDS logical DNS cluster {name}: target {target}: {why}"
                    )));
                }
            }
        }
        let dns = self.dns.as_mut()?;
        if let Some(update) = dns.inbox.take() {
            let found = match update.endpoints {
                Ok(endpoints) => {
                    let addresses = lb_core::flatten_addresses(&endpoints);
                    if addresses.is_empty() {
                        Err(format!("{target} resolved to no address"))
                    } else {
                        Ok(Endpoint::new(addresses))
                    }
                }
                Err(status) => Err(status.message().to_owned()),
            };
            // An error after addresses keeps the addresses (they may still work).
            if found.is_ok() || !matches!(dns.found, Some(Ok(_))) {
                dns.found = Some(found);
            }
        }
        let endpoint = match dns.found.as_ref()? {
            Ok(e) => e.clone(),
            Err(why) => {
                return Some(Err(format!("xDS logical DNS cluster {name}: {why}")));
            }
        };
        let priority = "priority-0";
        let child = with_outlier_detection(cluster, json!([{"pick_first": {}}]));
        let tree = json!({priority::NAME: {
            "children": {priority: {"config": child, "ignoreReresolutionRequests": true}},
            "priorities": [priority],
        }});
        Some(Ok(ClusterTree {
            config: impl_config(&name, cluster, Vec::new(), tree),
            endpoints: vec![hierarchy::with_path(endpoint, &[priority])],
        }))
    }
}

/// `xds_cluster_impl_experimental` (drops, `max_requests`) around a cluster's
/// tree.
fn impl_config(name: &str, cluster: &Cluster, drops: Vec<Value>, tree: Value) -> Value {
    json!({cluster_impl::NAME: {
        "cluster": name,
        "maxConcurrentRequests": cluster.max_requests,
        "dropCategories": drops,
        "childPolicy": [tree],
    }})
}
