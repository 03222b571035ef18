//! Every thread the RLS policy starts ends when its channel closes: the control
//! channel's serializer, lookup threads and watcher, and the `dns` resolver
//! threads (`lb-resolver-dns`) of `rls_dial_target` children. One test in its own binary, so no other test's
//! threads are counted; it reads `/proc/self/task`.

mod util;

use std::sync::Arc;
use std::time::Duration;

use lb_core::LbPolicyRegistry;
use lb_core::channel::{CallOptions, Channel};
use lb_rls::balancer::RlsBuilderOptions;
use lb_testkit::{InMemoryTransport, ManualClock};
use serde_json::json;
use util::{FakeRls, METHOD, RLS};

/// The names of this process's threads.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|e| {
            let path = e.ok()?.path().join("comm");
            Some(std::fs::read_to_string(path).ok()?.trim().to_owned())
        })
        .collect()
}

fn library_threads() -> Vec<String> {
    thread_names()
        .into_iter()
        .filter(|n| n.starts_with("lb-"))
        .collect()
}

#[test]
fn closing_the_channel_ends_every_thread_the_policy_started() {
    assert!(library_threads().is_empty(), "{:?}", library_threads());
    let clock = ManualClock::new();
    let transport = InMemoryTransport::with_clock(clock.shared());
    let server = FakeRls::start(&transport, RLS);
    for backend in ["127.0.0.1:1", "[::1]:1", "backend-a:1"] {
        transport.serve_address(backend);
    }
    // One target needs the system resolver (a DNS thread), one does not.
    server.respond_with(|req| {
        let target = match req.key_map.get("k1") {
            Some("dns") => "localhost:1",
            _ => "passthrough:///backend-a:1",
        };
        Ok(lb_rls::proto::RouteLookupResponse {
            targets: vec![target.into()],
            header_data: String::new(),
        })
    });
    let mut options = RlsBuilderOptions::new(Arc::new(transport.clone()));
    options.clock = Some(clock.shared());
    let mut registry = LbPolicyRegistry::with_builtins();
    let rls = lb_rls::register(&mut registry, options);
    let config = json!({"loadBalancingConfig": [{"rls_experimental": {
        "routeLookupConfig": {
            "grpcKeybuilders": [{
                "names": [{"service": "grpc.testing.TestService"}],
                "headers": [{"key": "k1", "names": ["n1"]}],
            }],
            "lookupService": format!("passthrough:///{RLS}"),
            "cacheSizeBytes": 10000,
        },
        "childPolicy": [{"rls_dial_target": {}}],
        "childPolicyConfigTargetFieldName": "target",
    }}]});
    let channel = Channel::builder("passthrough:///svc.example.com")
        .transport(Arc::new(transport.clone()))
        .clock(clock.shared())
        .lb_policy_registry(registry)
        .default_service_config(config.to_string())
        .build()
        .expect("channel");
    let deadline = clock.now() + Duration::from_secs(30);
    for key in ["dns", "plain"] {
        let options = CallOptions::default()
            .with_metadata(util::md(&[("n1", key)]))
            .with_deadline(deadline);
        let response = channel.unary(METHOD, b"".to_vec(), options).expect("call");
        assert!(!response.message.is_empty());
    }
    let names = library_threads();
    for name in ["lb-rls-lookup", "lb-rls-watch", "lb-resolver-dns"] {
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }
    channel.close();
    assert_eq!(rls.thread_count(), 0);
    // Joined threads can linger in /proc until the kernel reaps them: this waits
    // for the OS, not for any logic.
    util::eventually("every library thread gone", || library_threads().is_empty());
    for address in [RLS, "127.0.0.1:1", "[::1]:1", "backend-a:1"] {
        assert_eq!(transport.connection_count(address), 0, "{address}");
    }
}
