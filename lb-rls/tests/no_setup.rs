//! RLS and lb-group's policies with no setup step: `lb_rls::registry()` has every
//! policy of lb-core, lb-group and lb-rls, and the RLS policy opens its control
//! channel through the transport, resolvers and clock of the channel it runs in
//! (no `RlsBuilderOptions::new(transport)`, no `register` call).

mod util;

use std::sync::Arc;
use std::time::Duration;

use lb_core::channel::{CallOptions, Channel, UnaryResponse};
use lb_core::transport::{CallRequest, CallResponse};
use lb_core::{LbPolicyRegistry, Status};
use lb_testkit::{InMemoryTransport, ManualClock, ManualResolver};
use serde_json::json;
use util::{FakeRls, METHOD, RLS, WAIT};

fn rls_config() -> serde_json::Value {
    json!({
        "routeLookupConfig": {
            "grpcKeybuilders": [{"names": [{"service": "grpc.testing.TestService"}]}],
            "lookupService": format!("passthrough:///{RLS}"),
            "lookupServiceTimeout": "5s",
            "maxAge": "10s",
            "staleAge": "10s",
            "cacheSizeBytes": 10000,
        },
        "childPolicy": [{"rls_dial_target": {"childPolicy": [{"pick_first": {}}]}}],
        "childPolicyConfigTargetFieldName": "target",
    })
}

#[test]
fn service_configs_name_every_linked_policy_without_a_register_call() {
    let registry = lb_rls::registry();
    let configs = [
        json!([{"weighted_target_experimental": {"targets": {
            "a": {"weight": 1, "childPolicy": [{"round_robin": {}}]}}}}]),
        json!([{"priority_experimental": {
            "children": {"p0": {"config": [{"pick_first": {}}]}},
            "priorities": ["p0"]}}]),
        json!([{"outlier_detection_experimental": {
            "childPolicy": [{"round_robin": {}}]}}]),
        json!([{"rls_experimental": rls_config()}]),
    ];
    for config in configs {
        let parsed = registry
            .parse_load_balancing_config(&config)
            .unwrap_or_else(|e| panic!("{config}: {e}"));
        assert!(
            config[0].get(parsed.name()).is_some(),
            "{config} chose {}",
            parsed.name()
        );
    }
    // lb-group's registry has lb-group's policies but not RLS, and says where
    // RLS comes from.
    let group = lb_group::registry();
    assert!(group.get("priority_experimental").is_some());
    let err = group
        .parse_load_balancing_config(&json!([{"rls_experimental": rls_config()}]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("lb_rls::registry()"), "{err}");
    // lb-core's built-ins alone point at both crates.
    let err = LbPolicyRegistry::with_builtins()
        .parse_load_balancing_config(&json!([{"priority_experimental": {}}]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("lb_group::registry()"), "{err}");
}

/// A call on a channel built with `lb_rls::registry()` only: the RLS policy
/// reaches the RLS server through the channel's own (in-memory) transport, and
/// reads the channel's manual clock (its cache entries expire when that clock
/// passes `maxAge`, not in real time).
#[test]
fn rls_routes_calls_through_the_channels_own_transport_and_clock() {
    let clock = ManualClock::new();
    let transport = InMemoryTransport::with_clock(clock.shared());
    let server = FakeRls::start(&transport, RLS);
    server.respond_targets(&["passthrough:///backend-a:1"], "");
    transport.add_server("backend-a:1", |_: &CallRequest| {
        Ok(CallResponse {
            message: b"backend-a".to_vec(),
            ..Default::default()
        })
    });
    let service_config = json!({"loadBalancingConfig": [{"rls_experimental": rls_config()}]});
    let channel = Channel::builder("passthrough:///svc.example.com")
        .transport(Arc::new(transport.clone()))
        .clock(clock.shared())
        .lb_policy_registry(lb_rls::registry())
        .default_service_config(service_config.to_string())
        .build()
        .expect("channel");
    let call = || -> Result<UnaryResponse, Status> {
        let (ch, deadline) = (channel.clone(), clock.now() + Duration::from_secs(30));
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            let options = CallOptions::default().with_deadline(deadline);
            let _ = tx.send(ch.unary(METHOD, Vec::new(), options));
        });
        rx.recv_timeout(WAIT).expect("the call ended in time")
    };
    let response = call().expect("routed by RLS");
    assert_eq!(response.message, b"backend-a");
    assert_eq!(server.request_count(), 1);
    call().expect("a cache hit");
    assert_eq!(server.request_count(), 1, "the second call hit the cache");
    // Past maxAge on the channel's clock the entry has expired: a new lookup.
    clock.advance(Duration::from_secs(11));
    channel.settle();
    call().expect("routed after a new lookup");
    assert_eq!(
        server.request_count(),
        2,
        "the entry expired on the channel's manual clock"
    );
    channel.close();
}

/// RLS returns a target in a scheme the program registered with its channel
/// (`test`, lb-testkit's `ManualResolver`): `rls_dial_target` resolves it with the
/// channel's resolver registry, takes the result on the serializer, and shuts the
/// resolver down when the channel closes.
#[test]
fn rls_targets_resolve_with_a_scheme_registered_on_the_channel() {
    let clock = ManualClock::new();
    let transport = InMemoryTransport::with_clock(clock.shared());
    let server = FakeRls::start(&transport, RLS);
    server.respond_targets(&["test:///backend"], "");
    transport.add_server("backend-a:1", |_: &CallRequest| {
        Ok(CallResponse {
            message: b"backend-a".to_vec(),
            ..Default::default()
        })
    });
    let resolver = ManualResolver::default();
    let service_config = json!({"loadBalancingConfig": [{"rls_experimental": rls_config()}]});
    let channel = Channel::builder("passthrough:///svc.example.com")
        .transport(Arc::new(transport.clone()))
        .clock(clock.shared())
        .resolver_registry(resolver.registry())
        .lb_policy_registry(lb_rls::registry())
        .default_service_config(service_config.to_string())
        .build()
        .expect("channel");
    let (ch, deadline) = (channel.clone(), clock.now() + Duration::from_secs(30));
    let (tx, rx) = crossbeam_channel::bounded(1);
    let caller = std::thread::spawn(move || {
        let options = CallOptions::default().with_deadline(deadline);
        let _ = tx.send(ch.unary(METHOD, Vec::new(), options));
    });
    // The call waits for the RLS lookup, then for the child's resolver.
    assert!(
        resolver.wait_for_builds(1, WAIT),
        "rls_dial_target built the channel's `test` resolver"
    );
    assert_eq!(resolver.endpoints(), ["backend"]);
    resolver.push_addresses(&["backend-a:1"]);
    let response = rx
        .recv_timeout(WAIT)
        .expect("the call ended in time")
        .expect("routed to the address the test resolver gave");
    assert_eq!(response.message, b"backend-a");
    caller.join().unwrap();
    assert_eq!(server.request_count(), 1);
    assert_eq!(resolver.shutdown_count(), 0);
    channel.close();
    assert_eq!(
        resolver.shutdown_count(),
        1,
        "closing the channel shuts the child's resolver down"
    );
}
