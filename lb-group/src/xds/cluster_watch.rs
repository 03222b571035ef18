//! One cluster's watches (its Cluster, then its ClusterLoadAssignment) and the
//! policy tree they make, shared by the `xds:` resolver (every cluster its
//! routes name) and the `cds_experimental` policy (clusters named at run time,
//! such as RLS's targets).
//!
//! The tree is `xds_cluster_impl_experimental` (drops, `max_requests`) over
//! [`cluster_tree`]'s priorities, with the endpoints' hierarchy paths.

use serde_json::{Value, json};

use super::cds::{Cluster, ClusterKind};
use super::client::{Kind, Notify, Watch, WatchState, XdsClient, XdsResource};
use super::tree::{ClusterTree, PriorityNames, cluster_tree};
use crate::cluster_impl;

/// A cluster's watches; see the [module docs](self).
#[derive(Debug)]
pub struct ClusterWatch {
    name: String,
    notify: Notify,
    cds: Watch,
    /// The endpoint resource's name and watch (EDS clusters).
    eds: Option<(String, Watch)>,
    names: PriorityNames,
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
        })
    }

    /// The cluster's tree as its resources stand: `None` while one it needs
    /// has not arrived, an error (for calls routed to it) when it cannot have
    /// one. Watches the endpoint resource once the cluster names it.
    pub fn tree(&mut self, client: &XdsClient) -> Option<Result<ClusterTree, String>> {
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
            _ => return None,
        };
        let eds_name = match &cluster.kind {
            ClusterKind::Eds { service_name } => service_name.as_deref().unwrap_or(name),
            ClusterKind::LogicalDns { .. } => {
                return Some(Err(format!(
                    "xDS cluster {name} is a logical DNS cluster, not supported yet"
                )));
            }
            ClusterKind::Aggregate { .. } => {
                return Some(Err(format!(
                    "xDS cluster {name} is an aggregate cluster, not supported yet"
                )));
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
        let config = json!({cluster_impl::NAME: {
            "cluster": name,
            "maxConcurrentRequests": cluster.max_requests,
            "dropCategories": drops,
            "childPolicy": [tree.config],
        }});
        Some(Ok(ClusterTree {
            config,
            endpoints: tree.endpoints,
        }))
    }
}
