//! gRPC C-core's own RLS client policy (`rls_experimental` in grpcio, run by
//! `xtask/peers/rls_client.py`) against OUR RLS server (`lb_rls::server::mount` on
//! lb-transport's gRPC server), with a grpcio backend (`grpc_server.py`) behind it.
//!
//! C-core gives every RLS child the channel's own addresses, and its `pick_first`
//! child ignores the target field, so every call reaches the backend the channel
//! targets; what is checked is the RLS exchange: the key maps, target type, reason
//! and stale data our server decoded, the header data C-core attached to the
//! calls (the backend echoes `x-*` metadata, `x-google-rls-data` included), and
//! how C-core reacts to our server's errors and faults.
//!
//! Needs the peers `cargo xtask test` installs; every test starts with
//! `require_peers`, every wait is bounded and every process is killed on drop.

#![cfg(feature = "server")]

use std::sync::Arc;
use std::time::Duration;

use lb_core::Status;
use lb_rls::keys::KeyMap;
use lb_rls::proto::{Reason, RouteLookupRequest, TARGET_TYPE_GRPC};
use lb_rls::server::{self, RoutingTable};
use lb_testkit::peers::{self, GrpcServer, GrpcServerOptions, PeerEnv};
use lb_transport::server::Server;
use serde_json::{Value, json};

/// How long one run of the client may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Our RLS server, the grpcio backend, and the table our server answers from.
struct World {
    env: PeerEnv,
    backend: GrpcServer,
    table: Arc<RoutingTable>,
    rls: Server,
}

impl World {
    /// Starts the backend, then our RLS server with the table `make_table` builds
    /// from the backend's address.
    fn start(make_table: impl FnOnce(&str) -> Value) -> Option<Self> {
        let env = peers::require_peers()?;
        let backend = GrpcServer::start(
            &env,
            GrpcServerOptions {
                id: "backend".into(),
                ..GrpcServerOptions::default()
            },
        )
        .expect("backend starts");
        let table =
            Arc::new(RoutingTable::from_json(&make_table(&backend.target())).expect("valid table"));
        let rls = server::mount(Server::builder().workers(2), table.clone())
            .bind("127.0.0.1:0")
            .expect("RLS server binds");
        Some(Self {
            env,
            backend,
            table,
            rls,
        })
    }

    /// Runs `rls_client.py` against the backend with our RLS server as its lookup
    /// service, with `extra` arguments; returns one JSON object per call.
    fn run_client(&self, extra: &[&str]) -> Vec<Value> {
        let rls = self.rls.local_addr().to_string();
        let backend = self.backend.target();
        let mut args = vec!["--target", &backend, "--rls", &rls];
        args.extend_from_slice(extra);
        let out = peers::run_script(&self.env, "rls_client.py", &args, CLIENT_TIMEOUT)
            .expect("rls_client.py runs");
        assert!(
            out.status.success(),
            "rls_client.py exited with {}; stdout: {}; stderr: {}",
            out.status,
            out.stdout,
            out.stderr
        );
        out.stdout
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }
}

/// The request C-core's key builder (the client's default: header `x-user` as
/// `user`, plus the service and method names) makes for a call with
/// `x-user: user`, on a cache miss.
fn miss(pairs: &[(&str, &str)]) -> RouteLookupRequest {
    RouteLookupRequest {
        target_type: TARGET_TYPE_GRPC.into(),
        reason: Reason::Miss,
        stale_header_data: String::new(),
        key_map: pairs.iter().copied().collect::<KeyMap>(),
    }
}

fn user_keys(user: &str) -> [(&str, &str); 3] {
    [("user", user), ("service", "test.Echo"), ("method", "Echo")]
}

/// The routes for alice (with header data) and bob (without), both to `backend`.
fn alice_and_bob(backend: &str) -> Value {
    json!({"routes": [
        {"keys": {"user": "alice", "service": "test.Echo", "method": "Echo"},
         "targets": [backend], "headerData": "hd-alice"},
        {"keys": {"user": "bob", "service": "test.Echo", "method": "Echo"},
         "targets": [backend]},
    ]})
}

/// The values of response metadata `key` in a call's `initial` metadata.
fn initial<'a>(call: &'a Value, key: &str) -> Vec<&'a str> {
    call["initial"][key]
        .as_array()
        .map(|vs| vs.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn c_core_sends_the_configured_keys_and_the_backend_gets_our_header_data() {
    let Some(world) = World::start(alice_and_bob) else {
        return;
    };
    let calls = world.run_client(&[
        "--key",
        "x-user=alice",
        "--key",
        "x-user=bob",
        "--repeat",
        "2",
    ]);
    assert_eq!(calls.len(), 4, "{calls:#?}");
    for call in &calls {
        assert_eq!(call["code"], "OK", "{call}");
        // The call reached the grpcio backend.
        assert_eq!(initial(call, "x-server-id"), ["backend"], "{call}");
    }
    // One lookup per key: the repeated calls were cache hits.
    assert_eq!(
        world.table.requests(),
        [miss(&user_keys("alice")), miss(&user_keys("bob"))]
    );
    for alice in &calls[..2] {
        assert_eq!(initial(alice, "x-user"), ["alice"]);
        assert_eq!(initial(alice, "x-google-rls-data"), ["hd-alice"], "{alice}");
    }
    // C-core adds no x-google-rls-data when the header data is empty.
    for bob in &calls[2..] {
        assert_eq!(initial(bob, "x-user"), ["bob"]);
        assert!(initial(bob, "x-google-rls-data").is_empty(), "{bob}");
    }
}

#[test]
fn a_call_no_key_builder_covers_sends_an_empty_key_map_which_the_empty_route_matches() {
    let Some(world) = World::start(
        |backend| json!({"routes": [{"keys": {}, "targets": [backend], "headerData": "global"}]}),
    ) else {
        return;
    };
    let builders = r#"[{"names": [{"service": "other.Svc"}], "headers": [{"key": "user", "names": ["x-user"]}]}]"#;
    let calls = world.run_client(&["--keybuilders", builders, "--key", "x-user=alice"]);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["code"], "OK", "{}", calls[0]);
    assert_eq!(initial(&calls[0], "x-google-rls-data"), ["global"]);
    assert_eq!(world.table.requests(), [miss(&[])]);
}

#[test]
fn header_names_are_tried_in_order_values_joined_and_constant_keys_added() {
    let Some(world) = World::start(
        |backend| json!({"routes": [], "default": {"targets": [backend], "headerData": "d"}}),
    ) else {
        return;
    };
    // Two header names for one key: the first one present gives the value, all of
    // its values joined with commas.
    let builders = r#"[{"names": [{"service": "test.Echo", "method": "Echo"}],
                        "headers": [{"key": "who", "names": ["x-missing", "x-user", "x-other"]}],
                        "constantKeys": {"env": "test"}}]"#;
    let calls = world.run_client(&[
        "--keybuilders",
        builders,
        "--key",
        "x-other=zed&x-user=carol&x-user=dave",
    ]);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["code"], "OK", "{}", calls[0]);
    assert_eq!(
        world.table.requests(),
        [miss(&[("who", "carol,dave"), ("env", "test")])]
    );
}

#[test]
fn our_not_found_fails_the_call_with_unavailable() {
    let Some(world) = World::start(alice_and_bob) else {
        return;
    };
    let calls = world.run_client(&["--key", "x-user=carol"]);
    assert_eq!(calls.len(), 1);
    // C-core does not pass the RLS server's code on to the call (grpc-go #5400
    // made Go do the same), but keeps it and the message in the details.
    assert_eq!(calls[0]["code"], "UNAVAILABLE", "{}", calls[0]);
    assert_eq!(
        calls[0]["details"],
        "RLS request failed: NOT_FOUND: no route for keys {method=Echo,service=test.Echo,user=carol}"
    );
    assert_eq!(world.table.requests(), [miss(&user_keys("carol"))]);
}

#[test]
fn our_failures_and_garbage_fail_c_cores_calls() {
    let Some(world) = World::start(alice_and_bob) else {
        return;
    };
    world
        .table
        .set_failure(Some(Status::unavailable("rls is down for the test")));
    let calls = world.run_client(&["--key", "x-user=alice"]);
    assert_eq!(calls[0]["code"], "UNAVAILABLE", "{}", calls[0]);
    assert_eq!(
        calls[0]["details"],
        "RLS request failed: UNAVAILABLE: rls is down for the test"
    );
    world.table.set_failure(None);

    // A response that is no RouteLookupResponse (field 3 runs past the end): C-core
    // fails the lookup itself, with INTERNAL.
    world.table.set_garbage(Some(b"\x1a\x05a".to_vec()));
    let calls = world.run_client(&["--key", "x-user=alice"]);
    assert_eq!(calls[0]["code"], "UNAVAILABLE", "{}", calls[0]);
    assert_eq!(
        calls[0]["details"],
        "RLS request failed: INTERNAL: cannot parse RLS response"
    );
    world.table.set_garbage(None);

    // An answer with no targets is a failed lookup too (C-core: INVALID_ARGUMENT).
    world
        .table
        .replace(&json!({"routes": [], "default": {"targets": [], "headerData": "x"}}))
        .unwrap();
    let calls = world.run_client(&["--key", "x-user=alice"]);
    assert_eq!(calls[0]["code"], "UNAVAILABLE", "{}", calls[0]);
    assert_eq!(
        calls[0]["details"],
        "RLS request failed: INVALID_ARGUMENT: RLS response has no target entry"
    );

    // Each run is a new channel, so a new cache: one lookup per run.
    assert_eq!(world.table.requests(), vec![miss(&user_keys("alice")); 3]);
}

#[test]
fn a_lookup_slower_than_lookup_service_timeout_fails_the_call() {
    let Some(world) = World::start(alice_and_bob) else {
        return;
    };
    world.table.set_delay(Some(Duration::from_secs(3600)));
    let calls = world.run_client(&["--key", "x-user=alice", "--lookup-timeout", "0.5"]);
    assert_eq!(calls[0]["code"], "UNAVAILABLE", "{}", calls[0]);
    // Whichever side notices the deadline first writes the message: C-core
    // ("Deadline Exceeded") or our server, which reads grpc-timeout too.
    let details = calls[0]["details"].as_str().unwrap();
    assert!(
        details.starts_with("RLS request failed: DEADLINE_EXCEEDED: "),
        "{details}"
    );
    assert_eq!(world.table.requests(), [miss(&user_keys("alice"))]);
}
