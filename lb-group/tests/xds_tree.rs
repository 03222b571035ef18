//! A cluster's xDS policy tree: its config and paths, then driving a real
//! channel over the in-memory transport: weighted localities split calls by
//! weight, and a priority whose endpoints cannot be reached fails over to the
//! next.

use std::collections::BTreeMap;
use std::sync::Arc;

use lb_core::channel::{CallOptions, Channel};
use lb_core::{ResolverUpdate, SharedRandom, SplitMix64};
use lb_group::hierarchy;
use lb_group::xds::bootstrap::Locality;
use lb_group::xds::cds::{Cluster, ClusterKind, ClusterLbPolicy};
use lb_group::xds::eds::{ClusterEndpoints, Endpoint, HealthStatus, LocalityEndpoints};
use lb_group::xds::tree::{PriorityNames, cluster_tree, locality_name};
use lb_testkit::{InMemoryTransport, ManualClock, ManualResolver};
use serde_json::json;

fn locality(zone: &str, priority: u32, weight: u32, addresses: &[&str]) -> LocalityEndpoints {
    LocalityEndpoints {
        locality: Locality {
            region: "r".into(),
            zone: zone.into(),
            sub_zone: String::new(),
        },
        priority,
        weight,
        endpoints: addresses
            .iter()
            .map(|a| Endpoint {
                address: a.parse().unwrap(),
                health: HealthStatus::Healthy,
                weight: 1,
            })
            .collect(),
    }
}

fn cluster(lb_policy: ClusterLbPolicy) -> Cluster {
    Cluster {
        kind: ClusterKind::Eds { service_name: None },
        lb_policy,
        max_requests: 1024,
        lrs_to_self: false,
        outlier_detection: None,
    }
}

fn eps(localities: Vec<LocalityEndpoints>) -> ClusterEndpoints {
    ClusterEndpoints {
        localities,
        drops: Vec::new(),
    }
}

#[test]
fn round_robin_gets_a_weighted_target_per_locality_under_each_priority() {
    let mut a = locality("a", 0, 7, &["10.0.0.1:80", "10.0.0.2:80"]);
    a.endpoints[1].health = HealthStatus::Draining;
    let mut b = locality("b", 0, 3, &["10.0.0.3:80"]);
    b.endpoints[0].health = HealthStatus::Unknown;
    let e = eps(vec![a, b, locality("c", 1, 1, &["10.0.1.1:80"])]);
    let tree = cluster_tree(
        &cluster(ClusterLbPolicy::RoundRobin),
        &e,
        &mut PriorityNames::default(),
    );
    let p = &tree.config["priority_experimental"];
    assert_eq!(p["priorities"], json!(["priority-0", "priority-1"]));
    let targets =
        &p["children"]["priority-0"]["config"][0]["weighted_target_experimental"]["targets"];
    let a = locality_name(&e.localities[0].locality);
    assert_eq!(
        targets[&a],
        json!({"weight": 7, "childPolicy": [{"round_robin": {}}]})
    );
    assert_eq!(targets.as_object().unwrap().len(), 2);
    let paths: Vec<(String, Vec<String>)> = tree
        .endpoints
        .iter()
        .map(|ep| (ep.addresses[0].address.clone(), hierarchy::path(ep)))
        .collect();
    assert_eq!(
        paths.len(),
        3,
        "the draining endpoint is left out: {paths:?}"
    );
    assert_eq!(
        paths[0],
        ("10.0.0.1:80".to_owned(), vec!["priority-0".to_owned(), a])
    );
    assert_eq!(paths[2].1[0], "priority-1");
}

#[test]
fn ring_hash_weighs_each_endpoint_by_its_locality_and_itself() {
    let mut a = locality("a", 0, 3, &["10.0.0.1:80"]);
    a.endpoints[0].weight = 2;
    let policy = ClusterLbPolicy::RingHash {
        min_ring_size: 16,
        max_ring_size: 64,
    };
    let tree = cluster_tree(
        &cluster(policy.clone()),
        &eps(vec![a]),
        &mut PriorityNames::default(),
    );
    let child = &tree.config["priority_experimental"]["children"]["priority-0"]["config"][0];
    assert_eq!(child, &policy.to_json());
    let ep = &tree.endpoints[0];
    assert_eq!(hierarchy::path(ep), ["priority-0"]);
    assert_eq!(
        ep.attributes
            .get(lb_core::policies::ring_hash::WEIGHT_ATTRIBUTE),
        Some("6")
    );
}

#[test]
fn priority_names_follow_their_localities() {
    let mut names = PriorityNames::default();
    let first = names.assign(&eps(vec![
        locality("a", 0, 1, &[]),
        locality("b", 1, 1, &[]),
    ]));
    assert_eq!(first, ["priority-0", "priority-1"]);
    // A new top priority: a and b keep their names, the newcomer gets a new one.
    let second = names.assign(&eps(vec![
        locality("new", 0, 1, &[]),
        locality("a", 1, 1, &[]),
        locality("b", 2, 1, &[]),
    ]));
    assert_eq!(second, ["priority-2", "priority-0", "priority-1"]);
    // a and b merged into one priority: it keeps the first free name.
    let third = names.assign(&eps(vec![
        locality("a", 0, 1, &[]),
        locality("b", 0, 1, &[]),
    ]));
    assert_eq!(third, ["priority-0"]);
}

struct Setup {
    clock: ManualClock,
    transport: InMemoryTransport,
    resolver: ManualResolver,
    channel: Channel,
    names: PriorityNames,
}

impl Setup {
    fn new(addresses: &[&str]) -> Self {
        let clock = ManualClock::new();
        let transport = InMemoryTransport::with_clock(clock.shared());
        for a in addresses {
            transport.serve_address(a);
        }
        let resolver = ManualResolver::default();
        let channel = Channel::builder("test:///cluster")
            .transport(Arc::new(transport.clone()))
            .clock(clock.shared())
            .random(SharedRandom::new(SplitMix64::seeded(11)))
            .resolver_registry(resolver.registry())
            .lb_policy_registry(lb_group::registry())
            .build()
            .unwrap();
        Self {
            clock,
            transport,
            resolver,
            channel,
            names: PriorityNames::default(),
        }
    }

    /// Pushes the tree of a round_robin cluster with these localities.
    fn push(&mut self, localities: Vec<LocalityEndpoints>) {
        let tree = cluster_tree(
            &cluster(ClusterLbPolicy::RoundRobin),
            &eps(localities),
            &mut self.names,
        );
        let mut update = ResolverUpdate::from_endpoints(tree.endpoints);
        update.service_config = Some(Ok(
            serde_json::json!({"loadBalancingConfig": [tree.config]}),
        ));
        self.resolver.push(update);
    }

    /// Where `n` calls went, by answering address.
    fn calls(&self, n: usize) -> BTreeMap<String, usize> {
        let mut seen = BTreeMap::new();
        for _ in 0..n {
            let reply = self
                .channel
                .unary(
                    "/test.Echo/Who",
                    Vec::new(),
                    CallOptions::default().with_wait_for_ready(true),
                )
                .expect("the call succeeds");
            *seen
                .entry(String::from_utf8(reply.message).unwrap())
                .or_insert(0) += 1;
        }
        seen
    }
}

#[test]
fn weighted_localities_split_calls_seventy_thirty() {
    let mut s = Setup::new(&["10.0.0.1:80", "10.0.0.2:80"]);
    s.push(vec![
        locality("a", 0, 7, &["10.0.0.1:80"]),
        locality("b", 0, 3, &["10.0.0.2:80"]),
    ]);
    let _ = s.calls(1);
    assert!(s.channel.settle());
    let seen = s.calls(1000);
    assert_eq!(seen["10.0.0.1:80"] + seen["10.0.0.2:80"], 1000);
    // The weighted aggregator's cycle is exact over whole cycles.
    assert!((690..=710).contains(&seen["10.0.0.1:80"]), "{seen:?}");
}

#[test]
fn a_priority_that_cannot_connect_fails_over_and_an_eds_update_moves_endpoints() {
    let mut s = Setup::new(&["10.0.0.1:80", "10.0.1.1:80", "10.0.1.2:80"]);
    s.transport.refuse_connections("10.0.0.1:80", true);
    s.push(vec![
        locality("a", 0, 1, &["10.0.0.1:80"]),
        locality("b", 1, 1, &["10.0.1.1:80"]),
    ]);
    let seen = s.calls(20);
    assert_eq!(
        seen.get("10.0.1.1:80"),
        Some(&20),
        "priority 1 serves: {seen:?}"
    );

    // The first priority's endpoint comes back: calls return to it.
    s.transport.refuse_connections("10.0.0.1:80", false);
    s.push(vec![
        locality("a", 0, 1, &["10.0.0.1:80"]),
        locality("b", 1, 1, &["10.0.1.1:80"]),
    ]);
    // Its subchannel retries after its backoff, on the channel's manual clock.
    let mut moved_back = false;
    for _ in 0..30 {
        s.clock.advance(std::time::Duration::from_secs(1));
        assert!(s.channel.settle());
        if s.calls(1).contains_key("10.0.0.1:80") {
            moved_back = true;
            break;
        }
    }
    assert!(moved_back, "priority 0 serves again once it connects");

    // An EDS update adds an endpoint to priority 0 and drops the old one.
    s.push(vec![
        locality("a", 0, 1, &["10.0.1.2:80"]),
        locality("b", 1, 1, &["10.0.1.1:80"]),
    ]);
    assert!(s.channel.settle());
    let seen = s.calls(20);
    assert_eq!(seen.get("10.0.1.2:80"), Some(&20), "{seen:?}");
}

#[test]
fn a_cluster_with_outlier_detection_wraps_each_priority_and_the_channel_runs_it() {
    let mut c = cluster(ClusterLbPolicy::RoundRobin);
    c.outlier_detection = Some(json!({"interval": "10s", "maxEjectionPercent": 10}));
    let tree = cluster_tree(
        &c,
        &eps(vec![locality("a", 0, 1, &["10.0.0.1:80"])]),
        &mut PriorityNames::default(),
    );
    let child = &tree.config["priority_experimental"]["children"]["priority-0"]["config"][0];
    let od = &child["outlier_detection_experimental"];
    assert_eq!(od["interval"], "10s");
    assert!(
        od["childPolicy"][0]["weighted_target_experimental"].is_object(),
        "{child}"
    );
    lb_group::registry()
        .parse_load_balancing_config(&json!([tree.config]))
        .expect("the wrapped tree parses");
}
