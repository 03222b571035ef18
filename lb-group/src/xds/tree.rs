//! One cluster's policy tree from its [`Cluster`] and [`ClusterEndpoints`]
//! (gRFC A27's EDS balancing, A42's ring hash): a `priority_experimental`
//! config with one child per priority, and the endpoints with the hierarchy
//! paths that route them to their child.
//!
//! ```text
//!   priority_experimental  (children named by PriorityNames, stable across updates)
//!     └─ priority-N: outlier_detection_experimental (only when the cluster has
//!          │          an outlier_detection, gRFC A50)
//!          └─ weighted_target_experimental (one target per locality, weighted
//!               │                          by the locality's weight)
//!               └─ <locality>: the cluster's policy (round_robin / least_request)
//!          or, for ring hash: ring_hash_experimental over all the priority's
//!             endpoints, each weighted by locality weight x endpoint weight;
//!          or, for a top-level load_balancing_policy other than WrrLocality
//!             (gRFC A52: pick_first, a custom policy): that policy over all
//!             the priority's endpoints
//! ```
//!
//! Only endpoints whose health is UNKNOWN or HEALTHY are given to the tree.
//! Drops and `max_requests` are not applied here: the resolver puts the
//! tree under `xds_cluster_impl_experimental` ([`crate::cluster_impl`]).

use std::collections::{BTreeMap, BTreeSet};

use lb_core::Endpoint;
use serde_json::{Map, Value, json};

use super::bootstrap::Locality;
use super::cds::{Cluster, ClusterLbPolicy};
use super::eds::ClusterEndpoints;
use crate::hierarchy;

/// A cluster's policy config (a `loadBalancingConfig` entry) and endpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterTree {
    /// `{"priority_experimental": {...}}`.
    pub config: Value,
    /// The endpoints, each with its hierarchy path.
    pub endpoints: Vec<Endpoint>,
}

/// Names for a cluster's priorities that stay with their localities across
/// updates (gRFC A27): a priority keeps the name of an earlier priority that
/// had one of its localities, so a locality moving between priorities, or a
/// priority inserted above, does not restart every child.
#[derive(Clone, Debug, Default)]
pub struct PriorityNames {
    by_locality: BTreeMap<LocalityKey, String>,
    next: u64,
}

type LocalityKey = (String, String, String);

fn key(l: &Locality) -> LocalityKey {
    (l.region.clone(), l.zone.clone(), l.sub_zone.clone())
}

impl PriorityNames {
    /// The names of `endpoints`' priorities, in priority order.
    pub fn assign(&mut self, endpoints: &ClusterEndpoints) -> Vec<String> {
        let mut by_priority: BTreeMap<u32, Vec<LocalityKey>> = BTreeMap::new();
        for l in &endpoints.localities {
            by_priority
                .entry(l.priority)
                .or_default()
                .push(key(&l.locality));
        }
        let mut taken = BTreeSet::new();
        let mut names = Vec::with_capacity(by_priority.len());
        let mut next_map = BTreeMap::new();
        for localities in by_priority.values() {
            let reused = localities
                .iter()
                .filter_map(|k| self.by_locality.get(k))
                .find(|name| !taken.contains(*name))
                .cloned();
            let name = reused.unwrap_or_else(|| {
                self.next += 1;
                format!("priority-{}", self.next - 1)
            });
            taken.insert(name.clone());
            for k in localities {
                next_map.insert(k.clone(), name.clone());
            }
            names.push(name);
        }
        self.by_locality = next_map;
        names
    }
}

/// The name of a locality's target: its parts joined, readable in logs.
pub fn locality_name(l: &Locality) -> String {
    format!(
        "{{region={}, zone={}, sub_zone={}}}",
        l.region, l.zone, l.sub_zone
    )
}

/// Builds `cluster`'s tree from its `endpoints`, naming priorities with
/// `names`.
///
/// ```
/// use lb_group::xds::cds::{Cluster, ClusterKind, ClusterLbPolicy};
/// use lb_group::xds::eds::{ClusterEndpoints, Endpoint, HealthStatus, LocalityEndpoints};
/// use lb_group::xds::tree::{PriorityNames, cluster_tree};
/// let cluster = Cluster {
///     kind: ClusterKind::Eds { service_name: None },
///     lb_policy: ClusterLbPolicy::RoundRobin,
///     max_requests: 1024,
///     lrs_to_self: false,
///     outlier_detection: None,
/// };
/// let endpoints = ClusterEndpoints {
///     localities: vec![LocalityEndpoints {
///         locality: Default::default(),
///         priority: 0,
///         weight: 1,
///         endpoints: vec![Endpoint {
///             address: "10.0.0.1:80".parse().unwrap(),
///             health: HealthStatus::Healthy,
///             weight: 1,
///         }],
///     }],
///     drops: vec![],
/// };
/// let tree = cluster_tree(&cluster, &endpoints, &mut PriorityNames::default());
/// assert_eq!(tree.config["priority_experimental"]["priorities"][0], "priority-0");
/// assert_eq!(tree.endpoints.len(), 1);
/// ```
pub fn cluster_tree(
    cluster: &Cluster,
    endpoints: &ClusterEndpoints,
    names: &mut PriorityNames,
) -> ClusterTree {
    let priority_names = names.assign(endpoints);
    let endpoint_policy = cluster.lb_policy.to_json();
    // Ring hash and A52's top-level policies see the whole priority; the
    // others run per locality under a weighted_target.
    let ring_hash = matches!(
        cluster.lb_policy,
        ClusterLbPolicy::RingHash { .. } | ClusterLbPolicy::Whole(_)
    );
    let mut children = Map::new();
    let mut out = Vec::new();
    let priorities: BTreeSet<u32> = endpoints.localities.iter().map(|l| l.priority).collect();
    for (index, priority) in priorities.iter().enumerate() {
        let name = &priority_names[index];
        let mut targets = Map::new();
        for l in endpoints
            .localities
            .iter()
            .filter(|l| l.priority == *priority)
        {
            let target = locality_name(&l.locality);
            targets.insert(
                target.clone(),
                json!({"weight": l.weight, "childPolicy": [endpoint_policy.clone()]}),
            );
            for e in l.endpoints.iter().filter(|e| e.health.usable()) {
                let endpoint = Endpoint::new([lb_core::Address::new(e.address.to_string())]);
                let endpoint = if ring_hash {
                    let weight = u64::from(l.weight) * u64::from(e.weight);
                    hierarchy::with_path(endpoint, &[name]).with_attribute(
                        lb_core::policies::ring_hash::WEIGHT_ATTRIBUTE,
                        weight.min(u64::from(u32::MAX)).to_string(),
                    )
                } else {
                    hierarchy::with_path(endpoint, &[name, &target])
                };
                out.push(endpoint);
            }
        }
        let mut child = if ring_hash {
            json!([endpoint_policy.clone()])
        } else {
            json!([{"weighted_target_experimental": {"targets": targets}}])
        };
        child = with_outlier_detection(cluster, child);
        children.insert(
            name.clone(),
            json!({"config": child, "ignoreReresolutionRequests": true}),
        );
    }
    ClusterTree {
        config: json!({"priority_experimental": {"children": children, "priorities": priority_names}}),
        endpoints: out,
    }
}

/// `child` (a `childPolicy` list) under the cluster's
/// `outlier_detection_experimental` (gRFC A50), or as it is when the cluster
/// has none.
pub fn with_outlier_detection(cluster: &Cluster, child: Value) -> Value {
    match &cluster.outlier_detection {
        Some(od) => {
            let mut config = od.clone();
            config["childPolicy"] = child;
            json!([{crate::outlier_detection::NAME: config}])
        }
        None => child,
    }
}

// Tested with a channel in tests/xds_tree.rs.
