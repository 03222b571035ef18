//! The client against a management server on the in-memory transport: watch,
//! ACK, NACK with the old version, a stream that ends and a new one that
//! re-requests with the last version and no nonce.

use super::*;
use crate::xds::ads::CLUSTER_TYPE;
use crate::xds::cds::{ClusterKind, ClusterLbPolicy};
use crate::xds::pb::build::{any, msg, varint};
use crate::xds::wire::{AnyResource, DiscoveryRequest};
use lb_core::protowire::{put_bytes, put_string};
use lb_testkit::{InMemoryTransport, ManualResolver};
use std::sync::atomic::{AtomicUsize, Ordering};

/// An EDS cluster named `name` with `lb_policy` (0 round robin, 2 ring hash, 5
/// MAGLEV, which is refused).
fn cluster(name: &str, lb_policy: u64) -> AnyResource {
    let value = msg(|b| {
        put_string(b, 1, name);
        varint(b, 2, 3);
        put_bytes(
            b,
            3,
            &msg(|e| put_bytes(e, 1, &msg(|c| put_bytes(c, 3, &[])))),
        );
        varint(b, 6, lb_policy);
    });
    let a = any(CLUSTER_TYPE, &value);
    let (type_url, value) = crate::xds::pb::any(&a, 0).unwrap();
    AnyResource { type_url, value }
}

fn response(version: &str, nonce: &str, resources: Vec<AnyResource>) -> Vec<u8> {
    DiscoveryResponse {
        version_info: version.into(),
        resources,
        type_url: CLUSTER_TYPE.into(),
        nonce: nonce.into(),
    }
    .encode()
}

/// A channel to the management server at `cp:1` on `transport`.
fn channel_to_cp(transport: &InMemoryTransport) -> Channel {
    let resolver = ManualResolver::default();
    let channel = Channel::builder("test:///cp")
        .transport(Arc::new(transport.clone()))
        .resolver_registry(resolver.registry())
        .build()
        .unwrap();
    resolver.push_addresses(&["cp:1"]);
    channel
}

#[test]
fn watch_ack_nack_and_a_new_stream_after_the_server_ends_one() {
    let transport = InMemoryTransport::new();
    let (seen_tx, seen) = bounded::<(usize, DiscoveryRequest)>(64);
    let streams = Arc::new(AtomicUsize::new(0));
    let server_streams = Arc::clone(&streams);
    transport.add_stream_server("cp:1", move |call| {
        let stream = server_streams.fetch_add(1, Ordering::SeqCst);
        let mut step = 0;
        while let Some(bytes) = call.recv() {
            let request = DiscoveryRequest::decode(&bytes).expect("a valid request");
            seen_tx.send((stream, request)).unwrap();
            step += 1;
            let reply = match (stream, step) {
                (0, 1) => response("1", "n1", vec![cluster("c1", 0)]),
                (0, 2) => response("2", "n2", vec![cluster("c1", 5)]),
                // The NACK: this stream ends.
                (0, _) => return Err(Status::unavailable("management server restarts")),
                (_, 1) => response("3", "n3", vec![cluster("c1", 2)]),
                _ => continue,
            };
            call.send(reply)?;
        }
        Ok(lb_core::Metadata::new())
    });
    let channel = channel_to_cp(&transport);
    let mut options = XdsClientOptions::default();
    options.node.node.id = "client-1".into();
    options.backoff.initial = Duration::from_millis(10);
    let client = XdsClient::start(channel, options);
    let watch = client.watch(Kind::Cluster, "c1").unwrap();
    let wait = Duration::from_secs(10);

    // The watcher may see each state or only a later one: wait for each.
    let until = |what: &str, ok: &dyn Fn(&WatchState) -> bool| {
        let deadline = Instant::now() + wait;
        let mut state = watch.state();
        while !ok(&state) {
            assert!(Instant::now() < deadline, "{what}: still {state:?}");
            state = watch.next(Duration::from_millis(100)).unwrap_or(state);
        }
        state
    };
    let cluster_of = |s: &WatchState| match &s.resource {
        Some(XdsResource::Cluster(c)) => Some(c.clone()),
        _ => None,
    };
    let first = until("the first cluster", &|s| cluster_of(s).is_some());
    let c = cluster_of(&first).unwrap();
    assert_eq!(c.kind, ClusterKind::Eds { service_name: None });
    assert_eq!(c.lb_policy, ClusterLbPolicy::RoundRobin);

    let rejected = until("the invalid update", &|s| s.error.is_some());
    assert!(
        rejected.error.as_deref().unwrap().contains("MAGLEV"),
        "{rejected:?}"
    );
    assert_eq!(
        cluster_of(&rejected),
        Some(c),
        "the valid cluster stays in use"
    );

    let second = until("the cluster from the second stream", &|s| {
        cluster_of(s).is_some_and(|c| matches!(c.lb_policy, ClusterLbPolicy::RingHash { .. }))
    });
    assert_eq!(second.error, None, "a valid version clears the error");

    // What the client sent, in order: subscribe, ACK, NACK; then on the new
    // stream: subscribe with the last version and no nonce, and its ACK.
    let requests: Vec<(usize, DiscoveryRequest)> = (0..5)
        .map(|_| seen.recv_timeout(wait).expect("a request"))
        .collect();
    let brief: Vec<(usize, &str, &str, bool, bool)> = requests
        .iter()
        .map(|(s, r)| {
            (
                *s,
                r.version_info.as_str(),
                r.response_nonce.as_str(),
                r.node.is_some(),
                r.error_detail.is_some(),
            )
        })
        .collect();
    assert_eq!(
        brief,
        [
            (0, "", "", true, false),
            (0, "1", "n1", false, false),
            (0, "1", "n2", false, true),
            (1, "1", "", true, false),
            (1, "3", "n3", false, false),
        ]
    );
    assert!(
        requests
            .iter()
            .all(|(_, r)| r.resource_names == ["c1"] && r.type_url == CLUSTER_TYPE)
    );
    assert_eq!(requests[0].1.node.as_ref().unwrap().node.id, "client-1");
    let nack = requests[2].1.error_detail.as_ref().unwrap();
    assert!(
        nack.message.starts_with("c1: lb_policy MAGLEV"),
        "{}",
        nack.message
    );
    assert_eq!(streams.load(Ordering::SeqCst), 2);

    // Dropping the client ends the stream and joins its threads.
    drop(client);
    assert!(watch.next(Duration::from_millis(10)).is_none());
}

#[test]
fn dropping_a_client_whose_server_cannot_be_reached_returns() {
    let transport = InMemoryTransport::new();
    transport.serve_address("cp:1");
    transport.refuse_connections("cp:1", true);
    let channel = channel_to_cp(&transport);
    let client = XdsClient::start(channel, XdsClientOptions::default());
    let watch = client.watch(Kind::Listener, "svc").unwrap();
    // The stream cannot open; the client must still shut down (bounded wait).
    let (done_tx, done) = bounded(1);
    std::thread::spawn(move || {
        drop(client);
        let _ = done_tx.send(());
    });
    assert!(
        done.recv_timeout(Duration::from_secs(20)).is_ok(),
        "dropping the client returned"
    );
    // Nothing was ever heard but, perhaps, why (gRFC A57): no value, and not
    // taken for deleted.
    let state = watch.state();
    assert_eq!((&state.resource, state.does_not_exist), (&None, false));
    assert!(
        state
            .error
            .as_deref()
            .is_none_or(|e| e.contains("xDS server unreachable")),
        "{state:?}"
    );
}

#[test]
fn watchers_of_resources_with_no_value_learn_that_the_server_is_unreachable() {
    let transport = InMemoryTransport::new();
    transport.serve_address("cp:1");
    transport.refuse_connections("cp:1", true);
    let client = XdsClient::start(channel_to_cp(&transport), XdsClientOptions::default());
    let first = client.watch(Kind::Cluster, "c1").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut state = first.state();
    while state.error.is_none() {
        assert!(Instant::now() < deadline, "no error: {state:?}");
        state = first.next(Duration::from_millis(50)).unwrap_or(state);
    }
    let error = state.error.unwrap();
    assert!(error.contains("xDS server unreachable"), "{error}");
    assert_eq!((state.resource, state.does_not_exist), (None, false));
    // A watcher that comes later is told at once.
    let later = client.watch(Kind::Route, "r1").unwrap();
    let told = later.next(Duration::from_secs(5)).expect("told at once");
    assert!(told.error.is_some_and(|e| e.contains("unreachable")));
}
