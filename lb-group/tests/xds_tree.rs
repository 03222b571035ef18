//! A cluster's xDS policy tree driving a real channel over the in-memory
//! transport: weighted localities split calls by weight, and a priority whose
//! endpoints cannot be reached fails over to the next.

use std::collections::BTreeMap;
use std::sync::Arc;

use lb_core::channel::{CallOptions, Channel};
use lb_core::{ResolverUpdate, SharedRandom, SplitMix64};
use lb_group::xds::bootstrap::Locality;
use lb_group::xds::cds::{Cluster, ClusterKind, ClusterLbPolicy};
use lb_group::xds::eds::{ClusterEndpoints, Endpoint, HealthStatus, LocalityEndpoints};
use lb_group::xds::tree::{PriorityNames, cluster_tree};
use lb_testkit::{InMemoryTransport, ManualClock, ManualResolver};

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
        let cluster = Cluster {
            kind: ClusterKind::Eds { service_name: None },
            lb_policy: ClusterLbPolicy::RoundRobin,
            max_requests: 1024,
            lrs_to_self: false,
        };
        let endpoints = ClusterEndpoints {
            localities,
            drops: Vec::new(),
        };
        let tree = cluster_tree(&cluster, &endpoints, &mut self.names);
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
