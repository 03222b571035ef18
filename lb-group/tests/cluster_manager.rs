//! `xds_cluster_manager_experimental` and the channel's config selector (gRFC
//! A31) together, over the in-memory transport: calls go to the cluster their
//! selector names, a selector's error fails the call without a pick, a call
//! holds what it selected until it ends, and a selector is never published
//! before the picker that knows its clusters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use lb_core::channel::{CallConfig, CallOptions, Channel, ConfigSelector, SelectorRef};
use lb_core::{Code, Metadata, ResolverUpdate, Status};
use lb_group::cluster_manager::CLUSTER_ATTRIBUTE;
use lb_group::hierarchy;
use lb_testkit::{InMemoryTransport, ManualResolver};
use serde_json::{Map, json};

/// Routes by the `x-to` header (the cluster's name), else to `default`;
/// `x-fail` makes it fail the call. Counts live selections in `held`.
#[derive(Debug)]
struct ByHeader {
    default: String,
    held: Arc<AtomicUsize>,
}

/// Counts itself in `held` while it lives.
struct Held(Arc<AtomicUsize>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ConfigSelector for ByHeader {
    fn select(&self, _method: &str, metadata: &Metadata) -> Result<CallConfig, Status> {
        if metadata.get("x-fail").is_some() {
            return Err(Status::unavailable("the selector refuses this call"));
        }
        let cluster = metadata.get("x-to").unwrap_or(&self.default);
        let mut config = CallConfig::with_attribute(CLUSTER_ATTRIBUTE, cluster);
        self.held.fetch_add(1, Ordering::SeqCst);
        config.hold = Some(Box::new(Held(Arc::clone(&self.held))));
        Ok(config)
    }
}

struct Setup {
    resolver: ManualResolver,
    channel: Channel,
    held: Arc<AtomicUsize>,
}

impl Setup {
    fn new(addresses: &[&str]) -> Self {
        let transport = InMemoryTransport::new();
        for a in addresses {
            transport.serve_address(a);
        }
        let resolver = ManualResolver::default();
        let channel = Channel::builder("test:///xds")
            .transport(Arc::new(transport))
            .resolver_registry(resolver.registry())
            .lb_policy_registry(lb_group::registry())
            .build()
            .unwrap();
        Self {
            resolver,
            channel,
            held: Arc::default(),
        }
    }

    /// Clusters by name, each round robin over its addresses, with a
    /// selector sending calls to `default`.
    fn push(&self, clusters: &[(&str, &[&str])], default: &str) {
        let mut children = Map::new();
        let mut endpoints = Vec::new();
        for (name, addresses) in clusters {
            children.insert(
                (*name).to_owned(),
                json!({"childPolicy": [{"round_robin": {}}]}),
            );
            for a in *addresses {
                let endpoint = lb_core::Endpoint::new([*a]);
                endpoints.push(hierarchy::with_path(endpoint, &[name]));
            }
        }
        let mut update = ResolverUpdate::from_endpoints(endpoints);
        update.service_config = Some(Ok(json!({"loadBalancingConfig": [
            {"xds_cluster_manager_experimental": {"children": children}}
        ]})));
        update.config_selector = Some(SelectorRef(Arc::new(ByHeader {
            default: default.to_owned(),
            held: Arc::clone(&self.held),
        })));
        self.resolver.push(update);
    }

    fn who(&self, metadata: &[(&str, &str)]) -> Result<String, Status> {
        let mut md = Metadata::new();
        for (k, v) in metadata {
            md.insert(k, v).unwrap();
        }
        let options = CallOptions::default()
            .with_metadata(md)
            .with_timeout(Duration::from_secs(10));
        self.channel
            .unary("/test.Echo/Who", Vec::new(), options)
            .map(|r| String::from_utf8(r.message).unwrap())
    }
}

#[test]
fn calls_go_to_the_cluster_their_selector_names() {
    let s = Setup::new(&["a:1", "b:1", "b:2"]);
    s.push(&[("a", &["a:1"]), ("b", &["b:1", "b:2"])], "a");
    assert_eq!(s.who(&[]).unwrap(), "a:1");
    assert_eq!(s.who(&[("x-to", "b")]).unwrap().get(..2), Some("b:"));
    // Both of b's connections are up once the channel has settled.
    assert!(s.channel.settle());
    let mut to_b: Vec<String> = (0..4).map(|_| s.who(&[("x-to", "b")]).unwrap()).collect();
    to_b.sort();
    assert_eq!(to_b, ["b:1", "b:1", "b:2", "b:2"], "b's own round robin");

    let unknown = s.who(&[("x-to", "nowhere")]).unwrap_err();
    assert_eq!(unknown.code(), Code::Unavailable);
    assert!(
        unknown.message().contains("unknown cluster") && unknown.message().contains("nowhere"),
        "{unknown}"
    );
    let refused = s.who(&[("x-fail", "1")]).unwrap_err();
    assert_eq!(
        (refused.code(), refused.message()),
        (Code::Unavailable, "the selector refuses this call")
    );
}

#[test]
fn a_call_holds_its_selection_until_it_ends() {
    let s = Setup::new(&["a:1"]);
    s.push(&[("a", &["a:1"])], "a");
    assert_eq!(s.held.load(Ordering::SeqCst), 0);
    let call = s
        .channel
        .bidi_streaming("/test.Echo/Who", CallOptions::default())
        .unwrap();
    call.send(Vec::new()).unwrap();
    call.close_send();
    assert_eq!(call.recv().unwrap(), Some(b"a:1".to_vec()));
    assert_eq!(
        s.held.load(Ordering::SeqCst),
        1,
        "the call holds its selection while it lives"
    );
    drop(call);
    assert_eq!(s.held.load(Ordering::SeqCst), 0, "released at its end");
}

#[test]
fn a_selector_naming_a_new_cluster_comes_with_the_picker_that_has_it() {
    let s = Arc::new(Setup::new(&[
        "c0:1", "c1:1", "c2:1", "c3:1", "c4:1", "c5:1",
    ]));
    s.push(&[("c0", &["c0:1"])], "c0");
    assert_eq!(s.who(&[]).unwrap(), "c0:1");
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let (s, stop) = (Arc::clone(&s), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut calls = 0;
                while !stop.load(Ordering::SeqCst) && calls < 100_000 {
                    calls += 1;
                    if let Err(e) = s.who(&[]) {
                        failures.push(e);
                    }
                }
                failures
            })
        })
        .collect();
    // Each update adds a cluster and sends every call to it at once.
    let names = ["c0", "c1", "c2", "c3", "c4", "c5"];
    let addresses = ["c0:1", "c1:1", "c2:1", "c3:1", "c4:1", "c5:1"];
    for n in 1..names.len() {
        let clusters: Vec<(&str, &[&str])> = (0..=n)
            .map(|i| (names[i], std::slice::from_ref(&addresses[i])))
            .collect();
        s.push(&clusters, names[n]);
        assert!(s.channel.settle());
        assert_eq!(s.who(&[]).unwrap(), addresses[n]);
    }
    stop.store(true, Ordering::SeqCst);
    for c in callers {
        let failures = c.join().unwrap();
        assert!(failures.is_empty(), "no call saw a tear: {failures:?}");
    }
}
