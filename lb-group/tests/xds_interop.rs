//! lb-group's xDS client against a management server we did not write the
//! messages of: grpcio serving ADS with every message built and read by the
//! xds-protos package (`xtask/peers/xds_server.py`), over our HTTP/2 transport.
//! What it checks: each resource type decodes from the real protos' encoding,
//! the server decodes every request we send (so our encoding is right), and
//! the ACK and NACK carry the versions and nonces they must.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_core::channel::Channel;
use lb_group::xds::cds::{ClusterKind, ClusterLbPolicy};
use lb_group::xds::client::{Kind, Watch, WatchState, XdsClient, XdsClientOptions, XdsResource};
use lb_group::xds::eds::{DropOverload, HealthStatus};
use lb_group::xds::lds::RouteSource;
use lb_group::xds::routing::{HeaderTest, PathMatcher, RouteAction};
use lb_testkit::peers::{self, ScriptServer};
use lb_transport::driver::{H2Transport, TransportConfig};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// Waits (bounded) for `watch` to reach a state `ok` accepts.
fn until(watch: &Watch, what: &str, ok: impl Fn(&WatchState) -> bool) -> WatchState {
    let deadline = Instant::now() + WAIT;
    let mut state = watch.state();
    while !ok(&state) {
        assert!(Instant::now() < deadline, "{what}: still {state:?}");
        state = watch.next(Duration::from_millis(200)).unwrap_or(state);
    }
    state
}

/// The next `REQUEST` line the server printed, as JSON.
fn request(server: &ScriptServer) -> Value {
    let line = server.wait_for_line("REQUEST ", WAIT).expect("a request");
    serde_json::from_str(&line["REQUEST ".len()..]).unwrap()
}

#[test]
fn every_resource_type_from_a_grpcio_management_server_with_ack_and_nack() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let server = ScriptServer::start(&env, "xds_server.py", ["--port", "0", "--watch-stdin"])
        .expect("xds_server.py starts");
    let transport = Arc::new(H2Transport::new(TransportConfig::default()).unwrap());
    let channel = Channel::builder(format!("ipv4:{}", server.target()))
        .transport(transport)
        .build()
        .unwrap();
    let mut options = XdsClientOptions::default();
    options.node.node.id = "lb-interop".into();
    let client = XdsClient::start(channel, options);

    // Cluster: version 1, then version 2 with MAGLEV, which we NACK.
    let cluster = client.watch(Kind::Cluster, "c1").unwrap();
    let first = request(&server);
    assert_eq!(first["type"], "Cluster");
    assert_eq!(
        first["node"], "lb-interop",
        "the stream's first request names the node"
    );
    assert_eq!(
        (first["version"].as_str(), first["nonce"].as_str()),
        (Some(""), Some(""))
    );
    assert_eq!(first["names"], serde_json::json!(["c1"]));
    let state = until(&cluster, "cluster c1", |s| s.resource.is_some());
    let Some(XdsResource::Cluster(c)) = &state.resource else {
        panic!("a cluster: {state:?}");
    };
    assert_eq!(c.kind, ClusterKind::Eds { service_name: None });
    assert_eq!(c.lb_policy, ClusterLbPolicy::RoundRobin);
    assert_eq!(c.max_requests, 77);
    // gRFC A50's translation, with its defaults for what the server left out.
    let od = c
        .outlier_detection
        .clone()
        .expect("the cluster's outlier_detection");
    assert_eq!(
        od,
        serde_json::json!({
            "interval": "2s", "baseEjectionTime": "30s", "maxEjectionTime": "300s",
            "maxEjectionPercent": 20,
            "successRateEjection": {"stdevFactor": 1900, "enforcementPercentage": 100,
                                    "minimumHosts": 5, "requestVolume": 100},
            "failurePercentageEjection": {"threshold": 60, "enforcementPercentage": 50,
                                          "minimumHosts": 5, "requestVolume": 50}
        })
    );
    let mut with_child = od;
    with_child["childPolicy"] = serde_json::json!([{"round_robin": {}}]);
    lb_group::registry()
        .parse_load_balancing_config(&serde_json::json!([
            {"outlier_detection_experimental": with_child}
        ]))
        .expect("our outlier_detection policy takes the translated config");
    let ack = request(&server);
    assert_eq!(
        (ack["version"].as_str(), ack["nonce"].as_str()),
        (Some("1"), Some("c-1"))
    );
    assert_eq!(ack["node"], Value::Null);
    assert_eq!(ack["error"], Value::Null);
    let nack = request(&server);
    assert_eq!(
        (nack["version"].as_str(), nack["nonce"].as_str()),
        (Some("1"), Some("c-2"))
    );
    let why = nack["error"].as_str().expect("a NACK carries its reason");
    assert!(why.contains("c1: lb_policy MAGLEV"), "{why}");
    let rejected = until(&cluster, "the rejection", |s| s.error.is_some());
    assert!(
        matches!(rejected.resource, Some(XdsResource::Cluster(_))),
        "the old cluster stays"
    );

    // Listener with an inline route configuration.
    let listener = client.watch(Kind::Listener, "svc").unwrap();
    let state = until(&listener, "listener svc", |s| s.resource.is_some());
    let Some(XdsResource::Listener(l)) = state.resource else {
        panic!("a listener");
    };
    assert_eq!(l.max_stream_duration, Some(Duration::from_secs(30)));
    assert_eq!(l.http_filters, ["router"]);
    let RouteSource::Inline(rc) = l.routes else {
        panic!("inline routes");
    };
    let route = &rc.virtual_hosts[0].routes[0];
    assert_eq!(rc.virtual_hosts[0].domains, ["*"]);
    assert_eq!(
        route.action,
        RouteAction::Weighted(vec![("c1".into(), 70), ("c2".into(), 30)])
    );
    assert_eq!(route.max_stream_duration, Some(Duration::from_secs(5)));

    // A route configuration with a header matcher.
    let routes = client.watch(Kind::Route, "r1").unwrap();
    let state = until(&routes, "routes r1", |s| s.resource.is_some());
    let Some(XdsResource::Route(rc)) = state.resource else {
        panic!("routes");
    };
    let route = &rc.virtual_hosts[0].routes[0];
    assert_eq!(route.matcher.path, PathMatcher::Prefix("/pkg.Svc/".into()));
    assert_eq!(route.matcher.headers[0].name, "x-user");
    assert_eq!(
        route.matcher.headers[0].test,
        HeaderTest::Exact("alice".into())
    );
    assert_eq!(route.action, RouteAction::Cluster("c2".into()));

    // Endpoints with priorities, health and a drop overload.
    let endpoints = client.watch(Kind::Endpoints, "c1").unwrap();
    let state = until(&endpoints, "endpoints c1", |s| s.resource.is_some());
    let Some(XdsResource::Endpoints(e)) = state.resource else {
        panic!("endpoints");
    };
    let summary: Vec<(u32, &str, u32, String, HealthStatus)> = e
        .localities
        .iter()
        .map(|l| {
            let ep = &l.endpoints[0];
            (
                l.priority,
                l.locality.zone.as_str(),
                l.weight,
                ep.address.to_string(),
                ep.health,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (0, "a", 7, "10.0.0.1:80".to_owned(), HealthStatus::Healthy),
            (1, "b", 3, "10.0.0.2:81".to_owned(), HealthStatus::Draining),
        ]
    );
    assert_eq!(
        e.drops,
        [DropOverload {
            category: "lb".into(),
            per_million: 50_000
        }]
    );

    // Every request the server read was one it could decode, of the types asked.
    let mut types: Vec<String> = Vec::new();
    for _ in 0..6 {
        let r = request(&server);
        assert_eq!(r["error"], Value::Null, "{r}");
        types.push(r["type"].as_str().unwrap().to_owned());
    }
    types.sort();
    assert_eq!(
        types,
        [
            "ClusterLoadAssignment",
            "ClusterLoadAssignment",
            "Listener",
            "Listener",
            "RouteConfiguration",
            "RouteConfiguration"
        ]
    );
    drop(client);
}
