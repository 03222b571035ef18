//! OUR RLS client policy (`rls_experimental` with `rls_dial_target` children)
//! inside a real parent [`Channel`] on lb-transport's `H2Transport`, against an
//! RLS server we did not write (`xtask/peers/rls_server.py`, grpcio) and three
//! grpcio backends (`grpc_server.py`): routing by key, header data reaching the
//! backend, cache hits, the default target while the RLS server is down, and
//! recovery once it is back on the same port.
//!
//! (`H2Transport` is an optional dependency, enabled by the `server` feature.)
//!
//! Needs the peers `cargo xtask test` installs; every test starts with
//! `require_peers`, every wait is bounded and every process is killed on drop.

#![cfg(feature = "server")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_core::channel::{CallOptions, Channel, UnaryResponse};
use lb_core::{LbPolicyRegistry, Metadata, Status};
use lb_rls::balancer::{RlsBuilder, RlsBuilderOptions};
use lb_testkit::peers::{self, GrpcServer, GrpcServerOptions, PeerEnv, ScriptServer, TempDir};
use lb_transport::driver::proxy::ProxyMode;
use lb_transport::driver::{H2Transport, TransportConfig};
use serde_json::{Value, json};

/// The longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(20);

/// The deadline of each call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to let the RLS server's output settle before checking that it
/// printed nothing more.
const SETTLE: Duration = Duration::from_millis(300);

const WHO: &str = "/test.Echo/Who";
const ECHO: &str = "/test.Echo/Echo";

/// The RLS server, three grpcio backends, and a channel whose policy is RLS.
struct World {
    env: PeerEnv,
    rls_server: Option<ScriptServer>,
    rls_port: u16,
    alice: GrpcServer,
    bob: GrpcServer,
    /// The default target's backend, kept running.
    _default: GrpcServer,
    rls: RlsBuilder,
    channel: Channel,
    dir: TempDir,
    _transport: Arc<H2Transport>,
}

fn backend(env: &PeerEnv, id: &str) -> GrpcServer {
    GrpcServer::start(
        env,
        GrpcServerOptions {
            id: id.into(),
            ..GrpcServerOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{id} starts: {e}"))
}

/// A route of `rls_server.py`'s table for `user` calling `method` (the key map
/// holds the extra keys `service` and `method` too).
fn route(user: &str, method: &str, target: &str, header_data: &str) -> Value {
    json!({
        "keys": {"user": user, "service": "test.Echo", "method": method},
        "targets": [target],
        "headerData": header_data,
    })
}

/// The key map our policy builds for `user` calling `method`.
fn key_map(user: &str, method: &str) -> Value {
    json!({"user": user, "service": "test.Echo", "method": method})
}

fn md(user: &str) -> Metadata {
    let mut md = Metadata::new();
    md.insert("x-user", user).unwrap();
    md
}

fn who(response: &Result<UnaryResponse, Status>) -> String {
    match response {
        Ok(r) => String::from_utf8_lossy(&r.message).into_owned(),
        Err(e) => format!("error: {e}"),
    }
}

impl World {
    fn start() -> Option<Self> {
        let env = peers::require_peers()?;
        let alice = backend(&env, "alice-backend");
        let bob = backend(&env, "bob-backend");
        let default = backend(&env, "default-backend");
        let dir = env.temp_dir("rls-client").expect("temp dir");
        let table = Self::table(&alice, &bob, false);
        let path = Self::write_table(&dir, "table.json", &table);
        let server = ScriptServer::start(
            &env,
            "rls_server.py",
            ["--port", "0", "--table", &path, "--watch-stdin"],
        )
        .expect("rls_server.py starts");
        let rls_port = server.addr().port();
        let rls_target = server.target();

        let transport = Arc::new(
            H2Transport::new(TransportConfig {
                proxy: ProxyMode::Disabled,
                ..TransportConfig::default()
            })
            .expect("transport"),
        );
        let mut registry = LbPolicyRegistry::with_builtins();
        let rls = lb_rls::register(&mut registry, RlsBuilderOptions::new(transport.clone()));
        let config = json!({"loadBalancingConfig": [{"rls_experimental": {
            "routeLookupConfig": {
                "grpcKeybuilders": [{
                    "names": [{"service": "test.Echo"}],
                    "headers": [{"key": "user", "names": ["x-user"]}],
                    "extraKeys": {"service": "service", "method": "method"},
                }],
                "lookupService": format!("passthrough:///{rls_target}"),
                "lookupServiceTimeout": "2s",
                "maxAge": "300s",
                "cacheSizeBytes": 1_000_000,
                "defaultTarget": default.target(),
            },
            "childPolicy": [{"rls_dial_target": {"childPolicy": [{"round_robin": {}}]}}],
            "childPolicyConfigTargetFieldName": "target",
        }}]});
        let channel = Channel::builder("passthrough:///echo.rls-interop.test")
            .transport(transport.clone())
            .lb_policy_registry(registry)
            .default_service_config(config.to_string())
            .build()
            .expect("channel");
        Some(Self {
            env,
            rls_server: Some(server),
            rls_port,
            alice,
            bob,
            _default: default,
            rls,
            channel,
            dir,
            _transport: transport,
        })
    }

    /// The routing table: alice and bob to their backends; with `carol`, carol
    /// to bob's backend too.
    fn table(alice: &GrpcServer, bob: &GrpcServer, carol: bool) -> Value {
        let mut routes = Vec::new();
        for method in ["Who", "Echo"] {
            routes.push(route("alice", method, &alice.target(), "hd-alice"));
            routes.push(route("bob", method, &bob.target(), "hd-bob"));
            if carol {
                routes.push(route("carol", method, &bob.target(), "hd-carol"));
            }
        }
        json!({ "routes": routes })
    }

    fn write_table(dir: &TempDir, name: &str, table: &Value) -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(table).unwrap()).expect("write table");
        path.display().to_string()
    }

    fn server(&self) -> &ScriptServer {
        self.rls_server.as_ref().expect("the RLS server runs")
    }

    fn call(&self, method: &str, user: &str) -> Result<UnaryResponse, Status> {
        let options = CallOptions::default()
            .with_timeout(CALL_TIMEOUT)
            .with_metadata(md(user));
        self.channel.unary(method, b"ping".to_vec(), options)
    }

    /// The next `REQUEST {...}` line of the RLS server, as JSON.
    fn next_request(&self) -> Value {
        let line = self
            .server()
            .wait_for_line("REQUEST ", WAIT)
            .unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_str(&line["REQUEST ".len()..]).expect("JSON after REQUEST")
    }

    /// Asserts the next REQUEST line is a miss for `user` calling `method`.
    fn expect_miss(&self, user: &str, method: &str) {
        assert_eq!(
            self.next_request(),
            json!({
                "target_type": "grpc",
                "key_map": key_map(user, method),
                "reason": "REASON_MISS",
                "stale_header_data": "",
            }),
            "the lookup for {user} calling {method}"
        );
    }

    /// Asserts the RLS server printed no REQUEST line since the last one read.
    fn expect_no_more_requests(&self) {
        std::thread::sleep(SETTLE);
        let extra: Vec<String> = self
            .server()
            .lines_now()
            .into_iter()
            .filter(|l| l.starts_with("REQUEST "))
            .collect();
        assert!(extra.is_empty(), "unexpected lookups: {extra:?}");
    }

    /// Calls `method` as `user` every 100 ms until the response comes from
    /// `want` (bounded by [`WAIT`]); until then it must come from the default
    /// backend. Returns the response from `want`.
    fn poll_until(&self, method: &str, user: &str, want: &str) -> UnaryResponse {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < WAIT {
            match self.call(method, user) {
                Ok(r) => {
                    let from = r.headers.get("x-server-id").map_or_else(
                        || String::from_utf8_lossy(&r.message).into_owned(),
                        str::to_owned,
                    );
                    if from == want {
                        return r;
                    }
                    assert_eq!(from, "default-backend", "{user} calling {method}");
                    last = from;
                }
                Err(e) => panic!("{user} calling {method}: {e}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{user} calling {method} did not reach {want} within {WAIT:?} (last: {last})");
    }

    /// Alice's and Bob's calls, each looked up once and then served from the cache.
    fn route_alice_and_bob(&self) {
        assert_eq!(who(&self.call(WHO, "alice")), "alice-backend");
        self.expect_miss("alice", "Who");
        assert_eq!(who(&self.call(WHO, "bob")), "bob-backend");
        self.expect_miss("bob", "Who");
        for _ in 0..3 {
            assert_eq!(who(&self.call(WHO, "alice")), "alice-backend");
            assert_eq!(who(&self.call(WHO, "bob")), "bob-backend");
        }
        self.expect_no_more_requests();
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.channel.close();
    }
}

#[test]
fn routes_by_key_attaches_header_data_and_serves_repeats_from_the_cache() {
    let Some(w) = World::start() else {
        return;
    };
    w.route_alice_and_bob();

    // The Echo backend sends the request's `x-*` metadata back as headers, so
    // they show what the backend received: RLS's header data, exactly once.
    for round in 0..2 {
        let response = w.call(ECHO, "alice").expect("echo for alice");
        let echoed: Vec<&str> = response.headers.get_all("x-google-rls-data").collect();
        assert_eq!(echoed, ["hd-alice"], "round {round}");
        assert_eq!(response.headers.get("x-server-id"), Some("alice-backend"));
        assert_eq!(response.headers.get("x-user"), Some("alice"));
        if round == 0 {
            w.expect_miss("alice", "Echo");
        }
    }
    let response = w.call(ECHO, "bob").expect("echo for bob");
    assert_eq!(response.headers.get("x-google-rls-data"), Some("hd-bob"));
    assert_eq!(response.headers.get("x-server-id"), Some("bob-backend"));
    w.expect_miss("bob", "Echo");
    w.expect_no_more_requests();

    w.channel.close();
    assert_eq!(w.rls.thread_count(), 0, "closing ends the policy's threads");
}

#[test]
fn the_default_target_serves_new_keys_while_rls_is_down_then_lookups_recover() {
    let Some(mut w) = World::start() else {
        return;
    };
    w.route_alice_and_bob();

    // The RLS server dies (SIGKILL: no GOAWAY, connections reset).
    drop(w.rls_server.take());

    // A new key: the lookup fails, the entry goes into backoff, and with a
    // default target the call goes there. Alice's entry is still valid.
    assert_eq!(who(&w.call(WHO, "carol")), "default-backend");
    assert_eq!(who(&w.call(WHO, "carol")), "default-backend");
    assert_eq!(who(&w.call(WHO, "alice")), "alice-backend");
    let response = w.call(ECHO, "carol").expect("echo for carol");
    assert_eq!(response.headers.get("x-server-id"), Some("default-backend"));
    assert_eq!(
        response.headers.get("x-google-rls-data"),
        None,
        "no header data from the default target"
    );

    // The RLS server comes back on the same port, now routing carol to bob.
    let table = World::table(&w.alice, &w.bob, true);
    let path = World::write_table(&w.dir, "table-2.json", &table);
    let port = w.rls_port.to_string();
    let deadline = Instant::now() + WAIT;
    let server = loop {
        match ScriptServer::start(
            &w.env,
            "rls_server.py",
            ["--port", &port, "--table", &path, "--watch-stdin"],
        ) {
            Ok(server) => break server,
            Err(e) if Instant::now() >= deadline => panic!("rls_server.py restarts: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    assert_eq!(server.addr().port(), w.rls_port);
    w.rls_server = Some(server);

    // Carol's entries leave backoff (about 1.6 s after the failure, or at once
    // when the control channel is READY again) and are looked up again.
    w.poll_until(WHO, "carol", "bob-backend");
    let response = w.poll_until(ECHO, "carol", "bob-backend");
    assert_eq!(response.headers.get("x-google-rls-data"), Some("hd-carol"));
    // Every lookup the new server saw was one of carol's, a miss (her entries
    // had no data); nothing for alice or bob, whose entries are still valid.
    std::thread::sleep(SETTLE);
    let requests: Vec<Value> = w
        .server()
        .lines_now()
        .iter()
        .filter_map(|line| line.strip_prefix("REQUEST "))
        .map(|json| serde_json::from_str(json).expect("JSON after REQUEST"))
        .collect();
    for method in ["Who", "Echo"] {
        let miss = json!({
            "target_type": "grpc",
            "key_map": key_map("carol", method),
            "reason": "REASON_MISS",
            "stale_header_data": "",
        });
        assert!(requests.contains(&miss), "{method}: {requests:?}");
    }
    for request in &requests {
        assert_eq!(request["key_map"]["user"], "carol", "{request}");
        assert_eq!(request["reason"], "REASON_MISS", "{request}");
    }
    for _ in 0..3 {
        assert_eq!(who(&w.call(WHO, "carol")), "bob-backend");
        assert_eq!(who(&w.call(WHO, "alice")), "alice-backend");
        assert_eq!(who(&w.call(WHO, "bob")), "bob-backend");
    }
    w.expect_no_more_requests();
}
