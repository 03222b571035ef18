//! gRPC C-core's own xDS client (grpcio with an `xds:///svc` target,
//! `xtask/peers/xds_client.py`) and ours (a channel to `xds:///svc` with
//! lb-group's resolver over our HTTP/2 transport), side by side: the same
//! management server (`xtask/peers/xds_control.py`, grpcio with Envoy's own
//! generated protos) gives both the same resources and the same changes, the
//! same grpcio backends answer both, and each case compares where each
//! client's calls went and what each sent back (ACK or NACK).
//!
//! Each case prints a line of the table `| case | client | answers | failed |`;
//! run with `--nocapture` to see it.
//!
//! It lives in lb-rls because one case routes through RLS as a cluster
//! specifier plugin; our side is wired by `lb_rls::xds::register`. Needs the
//! peers `cargo xtask test` installs (and the `server` feature, for
//! lb-transport).

#![cfg(feature = "server")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lb_core::channel::{CallOptions, Channel, ResolverRegistry};
use lb_core::{Metadata, SharedRandom, SplitMix64};
use lb_group::xds::Bootstrap;
use lb_group::xds::client::{XdsClient, XdsClientOptions};
use lb_testkit::peers::{
    self, GrpcServer, GrpcServerOptions, PeerEnv, ScriptClient, ScriptServer, TempDir,
};
use lb_transport::driver::{H2Transport, TransportConfig};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const OURS: &str = "lb-sync";
const GRPCIO: &str = "grpcio";

/// Where one client's calls went: answers by backend id, failures by status.
#[derive(Debug, Default, Clone, PartialEq)]
struct Tally {
    ok: BTreeMap<String, u64>,
    failed: BTreeMap<String, u64>,
}

impl Tally {
    fn from_result(line: &str) -> Self {
        let v: Value = serde_json::from_str(line.trim_start_matches("RESULT ")).unwrap();
        let counts = |key: &str| {
            v[key]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
                .collect()
        };
        Self {
            ok: counts("ok"),
            failed: counts("failed"),
        }
    }

    fn to(&self, id: &str) -> u64 {
        self.ok.get(id).copied().unwrap_or(0)
    }

    fn total(&self) -> u64 {
        self.ok.values().sum::<u64>() + self.failed.values().sum::<u64>()
    }

    fn failures(&self) -> u64 {
        self.failed.values().sum()
    }
}

/// The backends' addresses by id.
struct Addrs(BTreeMap<&'static str, String>);

impl Addrs {
    fn get(&self, id: &str) -> String {
        self.0[id].clone()
    }
}

/// The backends, the management server and both clients.
struct Rig {
    env: PeerEnv,
    dir: TempDir,
    backends: BTreeMap<&'static str, GrpcServer>,
    control: Option<ScriptServer>,
    control_port: u16,
    /// Every line the management server printed, in order.
    log: Vec<String>,
    /// The scenario last applied (a restarted server starts from it).
    scenario: Value,
    addrs: Addrs,
    _rls: Option<ScriptServer>,
    /// Our CSDS service, for our client.
    csds: lb_transport::server::Server,
    grpcio: ScriptClient,
    ours: Channel,
    _client: Arc<XdsClient>,
}

fn bootstrap(port: u16, node: &str) -> String {
    json!({
        "xds_servers": [{
            "server_uri": format!("127.0.0.1:{port}"),
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"]
        }],
        "node": {"id": node, "locality": {"zone": "test"}}
    })
    .to_string()
}

impl Rig {
    fn start(env: PeerEnv, ids: &[&'static str], scenario: impl Fn(&Addrs) -> Value) -> Self {
        Self::start_with_rls(env, ids, None, scenario)
    }

    /// Also runs an RLS server (`rls_server.py`) with `rls_table`, at
    /// `addrs.get("rls")`.
    fn start_with_rls(
        env: PeerEnv,
        ids: &[&'static str],
        rls_table: Option<Value>,
        scenario: impl Fn(&Addrs) -> Value,
    ) -> Self {
        let dir = env.temp_dir("xds-side-by-side").unwrap();
        let backends: BTreeMap<&'static str, GrpcServer> = ids
            .iter()
            .map(|id| {
                let options = GrpcServerOptions {
                    id: (*id).into(),
                    log_calls: true,
                    ..GrpcServerOptions::default()
                };
                (*id, GrpcServer::start(&env, options).unwrap())
            })
            .collect();
        let mut addrs = Addrs(backends.iter().map(|(id, b)| (*id, b.target())).collect());
        let rls = rls_table.map(|table| {
            let file = dir.path().join("rls-table.json");
            std::fs::write(&file, table.to_string()).unwrap();
            let rls = ScriptServer::start(
                &env,
                "rls_server.py",
                [
                    "--port",
                    "0",
                    "--table",
                    file.to_str().unwrap(),
                    "--watch-stdin",
                ],
            )
            .expect("rls_server.py starts");
            addrs.0.insert("rls", rls.target());
            rls
        });
        let first = scenario(&addrs);
        let scenario_file = dir.path().join("scenario.json");
        std::fs::write(&scenario_file, first.to_string()).unwrap();
        let control = ScriptServer::start(
            &env,
            "xds_control.py",
            [
                "--port",
                "0",
                "--scenario",
                scenario_file.to_str().unwrap(),
                "--watch-stdin",
            ],
        )
        .expect("xds_control.py starts");
        let control_port = control.addr().port();

        let grpcio_bootstrap = dir.path().join("grpcio-bootstrap.json");
        std::fs::write(&grpcio_bootstrap, bootstrap(control_port, GRPCIO)).unwrap();
        let grpcio = ScriptClient::start(
            &env,
            "xds_client.py",
            [
                "--bootstrap",
                grpcio_bootstrap.to_str().unwrap(),
                "--target",
                "xds:///svc",
                "--csds",
            ],
        )
        .expect("xds_client.py starts");

        let ours_bootstrap = Bootstrap::parse(&bootstrap(control_port, OURS)).unwrap();
        let transport = Arc::new(H2Transport::new(TransportConfig::default()).unwrap());
        let ads = Channel::builder(format!("ipv4:{}", control.target()))
            .transport(transport.clone())
            .build()
            .unwrap();
        let mut options = XdsClientOptions::from_bootstrap(&ours_bootstrap);
        options.backoff.initial = Duration::from_millis(100);
        options.backoff.max = Duration::from_millis(500);
        let client = Arc::new(XdsClient::start(ads, options));
        let csds = lb_group::xds::csds::mount(
            lb_transport::server::Server::builder(),
            vec![Arc::clone(&client)],
        )
        .bind("127.0.0.1:0")
        .unwrap();
        let mut resolvers = ResolverRegistry::with_builtins();
        let mut policies = lb_core::LbPolicyRegistry::with_builtins();
        lb_rls::xds::register(
            Arc::clone(&client),
            ours_bootstrap,
            &mut resolvers,
            &mut policies,
        );
        let ours = Channel::builder("xds:///svc")
            .transport(transport)
            .resolver_registry(resolvers)
            .lb_policy_registry(policies)
            .random(SharedRandom::new(SplitMix64::seeded(7)))
            .build()
            .unwrap();
        let mut rig = Self {
            env,
            dir,
            backends,
            control: Some(control),
            control_port,
            log: Vec::new(),
            scenario: first,
            addrs,
            _rls: rls,
            csds,
            grpcio,
            ours,
            _client: client,
        };
        // Both clients subscribe with their first call, and ACK everything.
        rig.ours_calls(1, &[]);
        rig.grpcio_calls(1, &[]);
        let types: &[&str] = if rig.scenario["routes"].is_null() {
            &["Listener", "Cluster", "ClusterLoadAssignment"]
        } else {
            &[
                "Listener",
                "RouteConfiguration",
                "Cluster",
                "ClusterLoadAssignment",
            ]
        };
        rig.wait_both(0, types, "ACK of the first scenario", |r| {
            r["error"].is_null() && r["version"] != ""
        });
        rig
    }

    /// Reads what the management server printed so far into `log`.
    fn pump(&mut self) {
        if let Some(c) = &self.control {
            self.log.extend(c.lines_now());
        }
    }

    /// The requests the management server saw from index `from` of `log` on.
    fn requests_since(&self, from: usize) -> Vec<Value> {
        self.log[from..]
            .iter()
            .filter_map(|l| l.strip_prefix("REQUEST "))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits (bounded) until both clients sent a request since `from` that
    /// `ok` accepts for each type in `types`; returns those requests by node.
    fn wait_both(
        &mut self,
        from: usize,
        types: &[&str],
        what: &str,
        ok: impl Fn(&Value) -> bool,
    ) -> BTreeMap<String, Vec<Value>> {
        let deadline = Instant::now() + WAIT;
        loop {
            self.pump();
            let requests = self.requests_since(from);
            let mut found: BTreeMap<String, Vec<Value>> = BTreeMap::new();
            for r in requests.iter().filter(|r| ok(r)) {
                found
                    .entry(r["node"].as_str().unwrap_or("").to_owned())
                    .or_default()
                    .push(r.clone());
            }
            let done = [OURS, GRPCIO].iter().all(|node| {
                types.iter().all(|t| {
                    found
                        .get(*node)
                        .is_some_and(|rs| rs.iter().any(|r| r["type"] == *t))
                })
            });
            if done {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not from both clients; the management server printed {:#?}; \
                 its stderr: {}",
                &self.log[from..],
                self.control
                    .as_ref()
                    .map(ScriptServer::stderr)
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Gives the management server a new scenario and waits until both
    /// clients ACKed the new version of each of `types`.
    fn apply(&mut self, scenario: &Value, types: &[&str]) {
        self.pump();
        let from = self.log.len();
        let control = self.control.as_ref().unwrap();
        control.send_line(&format!("SCENARIO {scenario}")).unwrap();
        self.scenario = scenario.clone();
        let versions: BTreeMap<String, u64> = self
            .requests_since(0)
            .iter()
            .filter(|r| r["error"].is_null())
            .filter_map(|r| {
                Some((
                    r["type"].as_str()?.to_owned(),
                    r["version"].as_str()?.parse().ok()?,
                ))
            })
            .fold(BTreeMap::new(), |mut m, (t, v)| {
                let e = m.entry(t).or_insert(0);
                *e = (*e).max(v);
                m
            });
        self.wait_both(from, types, "ACK of the new scenario", |r| {
            let t = r["type"].as_str().unwrap_or("");
            let v: u64 = r["version"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            r["error"].is_null() && v > versions.get(t).copied().unwrap_or(0)
        });
    }

    /// `n` calls from our client, one after another.
    fn ours_calls(&self, n: u64, metadata: &[(&str, &str)]) -> Tally {
        let mut tally = Tally::default();
        for _ in 0..n {
            self.our_call(metadata, &mut tally);
        }
        tally
    }

    fn our_call(&self, metadata: &[(&str, &str)], tally: &mut Tally) {
        let mut md = Metadata::new();
        for (k, v) in metadata {
            md.insert(k, v).unwrap();
        }
        let options = CallOptions::default()
            .with_timeout(Duration::from_secs(5))
            .with_metadata(md);
        match self.ours.unary("/test.Echo/Who", Vec::new(), options) {
            Ok(r) => {
                *tally
                    .ok
                    .entry(String::from_utf8_lossy(&r.message).into_owned())
                    .or_default() += 1;
            }
            Err(s) => *tally.failed.entry(format!("{s}")).or_default() += 1,
        }
    }

    /// `n` calls from gRPC C-core's client, one after another.
    fn grpcio_calls(&self, n: u64, metadata: &[(&str, &str)]) -> Tally {
        let pairs: Vec<String> = metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let line = self
            .grpcio
            .command(
                &format!("CALL {n} {}", pairs.join(" ")),
                "RESULT ",
                WAIT * 3,
            )
            .unwrap();
        Tally::from_result(&line)
    }

    /// Both clients make calls for `ms` milliseconds while `during` runs
    /// (changes to the config, a server restart).
    fn both_run(&mut self, ms: u64, during: impl FnOnce(&mut Self)) -> (Tally, Tally) {
        self.grpcio.send_line(&format!("RUN {ms}")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let ours = self.ours.clone();
        let flag = Arc::clone(&stop);
        let runner = std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_millis(ms);
            let mut tally = Tally::default();
            while Instant::now() < end && !flag.load(Ordering::Relaxed) {
                let options = CallOptions::default().with_timeout(Duration::from_secs(5));
                match ours.unary("/test.Echo/Who", Vec::new(), options) {
                    Ok(r) => {
                        *tally
                            .ok
                            .entry(String::from_utf8_lossy(&r.message).into_owned())
                            .or_default() += 1;
                    }
                    Err(s) => *tally.failed.entry(format!("{s}")).or_default() += 1,
                }
            }
            tally
        });
        during(self);
        let ours = runner.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        let line = self.grpcio.wait_for_line("RESULT ", WAIT * 3).unwrap();
        (ours, Tally::from_result(&line))
    }

    /// Calls from both until `ok` accepts a tally of 10 calls from each
    /// (bounded): the clients have taken a change the ACK announced.
    fn settle(&self, metadata: &[(&str, &str)], what: &str, ok: impl Fn(&Tally) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let ours = self.ours_calls(10, metadata);
            let theirs = self.grpcio_calls(10, metadata);
            if ok(&ours) && ok(&theirs) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: ours {ours:?}, grpcio {theirs:?}"
            );
        }
    }
}

impl Rig {
    /// What each client's CSDS says (`csds_client.py` against our service and
    /// against grpcio-csds in the C-core client's process): resources as
    /// [type, name, version, status, error], and how many unpacked.
    fn csds(&self) -> [(Vec<Value>, u64); 2] {
        let ask = |target: String| {
            let out = peers::run_script(&self.env, "csds_client.py", ["--target", &target], WAIT)
                .unwrap();
            let line = out
                .stdout
                .lines()
                .find_map(|l| l.strip_prefix("CSDS "))
                .unwrap_or_else(|| panic!("no CSDS line: {out:?}"))
                .to_owned();
            let v: Value = serde_json::from_str(&line).unwrap();
            // Without the node, which differs by design.
            let resources = v["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| Value::Array(r.as_array().unwrap()[1..].to_vec()))
                .collect();
            (resources, v["decoded"].as_u64().unwrap())
        };
        [
            ask(self.csds.local_addr().to_string()),
            ask(format!("127.0.0.1:{}", self.grpcio.ready_line())),
        ]
    }
}

/// gRPC C-core's xDS client (`xds_client.py`) to `target`, with `bootstrap`
/// written to `file`.
fn grpcio_client(
    env: &PeerEnv,
    file: &std::path::Path,
    bootstrap: &str,
    target: &str,
) -> ScriptClient {
    std::fs::write(file, bootstrap).unwrap();
    let file = file.to_str().unwrap();
    ScriptClient::start(
        env,
        "xds_client.py",
        ["--bootstrap", file, "--target", target],
    )
    .unwrap()
}

/// Our channel to `target`, with an xDS client for every server of
/// `bootstrap` (`XdsClient::start_for`) wired by `lb_rls::xds::register`.
fn xds_channel(bootstrap: &str, target: &str) -> Channel {
    let bootstrap = Bootstrap::parse(bootstrap).unwrap();
    let transport = Arc::new(H2Transport::new(TransportConfig::default()).unwrap());
    let client = XdsClient::start_for(&bootstrap, |server| {
        Channel::builder(format!("ipv4:{}", server.uri))
            .transport(transport.clone())
            .build()
    })
    .unwrap();
    let (mut resolvers, mut policies) = (
        ResolverRegistry::with_builtins(),
        lb_core::LbPolicyRegistry::with_builtins(),
    );
    lb_rls::xds::register(Arc::new(client), bootstrap, &mut resolvers, &mut policies);
    Channel::builder(target)
        .transport(transport)
        .resolver_registry(resolvers)
        .lb_policy_registry(policies)
        .build()
        .unwrap()
}

fn row(case: &str, client: &str, tally: &Tally) {
    let answers: Vec<String> = tally.ok.iter().map(|(k, n)| format!("{k} {n}")).collect();
    eprintln!(
        "| {case} | {client} | {} | {} |",
        answers.join(", "),
        tally.failures()
    );
}

fn rows(case: &str, ours: &Tally, theirs: &Tally) {
    row(case, "lb-sync", ours);
    row(case, "grpcio (C-core)", theirs);
}

fn one_cluster(addrs: &Addrs, ids: &[&str]) -> Value {
    let addrs: Vec<String> = ids.iter().map(|id| addrs.get(id)).collect();
    json!({
        "listeners": {"svc": {"rds": "r1"}},
        "routes": {"r1": {"virtual_hosts": [{"domains": ["*"], "routes": [
            {"prefix": "/", "cluster": "c1"}
        ]}]}},
        "clusters": {"c1": {}},
        "endpoints": {"c1": [{"zone": "a", "addresses": addrs}]}
    })
}

fn two_clusters(addrs: &Addrs, routes: Value) -> Value {
    json!({
        "listeners": {"svc": {"rds": "r1"}},
        "routes": {"r1": {"virtual_hosts": [{"domains": ["*"], "routes": routes}]}},
        "clusters": {"c1": {}, "c2": {}},
        "endpoints": {
            "c1": [{"zone": "a", "addresses": [addrs.get("A")]}],
            "c2": [{"zone": "b", "addresses": [addrs.get("B")]}]
        }
    })
}

#[test]
fn routes_weights_headers_eds_updates_and_a_nack_side_by_side() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let mut rig = Rig::start(env, &["A", "B", "C"], |a| one_cluster(a, &["A"]));

    // 1. A simple route to one cluster.
    let ours = rig.ours_calls(50, &[]);
    let theirs = rig.grpcio_calls(50, &[]);
    rows("simple route", &ours, &theirs);
    for t in [&ours, &theirs] {
        assert_eq!(t.to("A"), 50, "every call goes to c1's endpoint: {t:?}");
    }

    // 2. Weighted clusters 70/30, switched to while calls go on.
    let weighted = two_clusters(
        &rig.addrs,
        json!([{"prefix": "/", "weighted": [["c1", 70], ["c2", 30]]}]),
    );
    let (ours, theirs) = rig.both_run(1500, |rig| {
        rig.apply(&weighted, &["RouteConfiguration"]);
    });
    rows("switch to weighted, calls during", &ours, &theirs);
    for t in [&ours, &theirs] {
        assert_eq!(t.failures(), 0, "no call fails during the change: {t:?}");
    }
    rig.settle(&[], "both clusters in use", |t| t.to("B") > 0);
    let ours = rig.ours_calls(1000, &[]);
    let theirs = rig.grpcio_calls(1000, &[]);
    rows("weighted 70/30", &ours, &theirs);
    for t in [&ours, &theirs] {
        assert!(
            (620..=780).contains(&t.to("A")) && t.to("A") + t.to("B") == 1000,
            "70/30 over 1000 calls: {t:?}"
        );
    }

    // 3. Header-based routing: x-user: alice goes to c2, the rest to c1.
    let by_header = two_clusters(
        &rig.addrs,
        json!([
            {"prefix": "/test.Echo/", "headers": {"x-user": "alice"}, "cluster": "c2"},
            {"prefix": "/", "cluster": "c1"}
        ]),
    );
    rig.apply(&by_header, &["RouteConfiguration"]);
    rig.settle(&[], "header routes in use", |t| t.to("A") == 10);
    let alice = [("x-user", "alice")];
    let bob = [("x-user", "bob")];
    let (ours_a, theirs_a) = (rig.ours_calls(20, &alice), rig.grpcio_calls(20, &alice));
    let (ours_b, theirs_b) = (rig.ours_calls(20, &bob), rig.grpcio_calls(20, &bob));
    rows("header x-user: alice", &ours_a, &theirs_a);
    rows("header x-user: bob", &ours_b, &theirs_b);
    for t in [&ours_a, &theirs_a] {
        assert_eq!(t.to("B"), 20, "alice goes to c2: {t:?}");
    }
    for t in [&ours_b, &theirs_b] {
        assert_eq!(t.to("A"), 20, "bob goes to c1: {t:?}");
    }

    // 4. EDS updates while calls go on: add B and C to c1, then remove A.
    let back = one_cluster(&rig.addrs, &["A"]);
    rig.apply(&back, &["RouteConfiguration"]);
    rig.settle(&[], "one cluster again", |t| t.to("A") == 10);
    let grown = one_cluster(&rig.addrs, &["A", "B", "C"]);
    let shrunk = one_cluster(&rig.addrs, &["B", "C"]);
    let (ours, theirs) = rig.both_run(3000, |rig| {
        rig.apply(&grown, &["ClusterLoadAssignment"]);
        std::thread::sleep(Duration::from_millis(800));
        rig.apply(&shrunk, &["ClusterLoadAssignment"]);
    });
    rows("EDS add B, C then remove A, calls during", &ours, &theirs);
    for t in [&ours, &theirs] {
        assert_eq!(t.failures(), 0, "no call fails during EDS updates: {t:?}");
        assert!(
            t.to("B") > 0 && t.to("C") > 0,
            "the new endpoints serve: {t:?}"
        );
    }
    rig.settle(&[], "A removed", |t| t.to("A") == 0);
    let ours = rig.ours_calls(100, &[]);
    let theirs = rig.grpcio_calls(100, &[]);
    rows("after EDS update", &ours, &theirs);
    for t in [&ours, &theirs] {
        assert_eq!((t.to("A"), t.to("B") + t.to("C")), (0, 100), "{t:?}");
        assert!(t.to("B") >= 30 && t.to("C") >= 30, "round robin: {t:?}");
    }

    // 5. A bad resource (a cluster with MAGLEV, which gRPC refuses) is NACKed
    //    by both, and both keep the config they had.
    rig.pump();
    let from = rig.log.len();
    let mut bad = shrunk.clone();
    bad["clusters"]["c1"]["lb"] = json!("MAGLEV");
    rig.control
        .as_ref()
        .unwrap()
        .send_line(&format!("SCENARIO {bad}"))
        .unwrap();
    let nacks = rig.wait_both(from, &["Cluster"], "NACK of the MAGLEV cluster", |r| {
        !r["error"].is_null()
    });
    for (node, requests) in &nacks {
        let nack = &requests[0];
        eprintln!(
            "| NACK | {node} | version {} | {} |",
            nack["version"],
            nack["error"].as_str().unwrap_or("").replace('\n', " ")
        );
        assert!(
            nack["error"].as_str().unwrap().contains("c1"),
            "{node}'s NACK names the resource: {nack}"
        );
    }
    let ours_version = &nacks[OURS][0]["version"];
    assert_eq!(
        ours_version, &nacks[GRPCIO][0]["version"],
        "both NACK with the version they last accepted"
    );
    // 6. CSDS: both clients report the same resources, versions and statuses,
    //    c1 NACKED with the rejected version (errors are each client's words).
    let [(ours_csds, ours_decoded), (theirs_csds, theirs_decoded)] = rig.csds();
    let without_details = |rs: &[Value]| -> Vec<Value> {
        rs.iter()
            .map(|r| {
                let mut r = r.clone();
                if let Some(e) = r[4].as_array().cloned() {
                    r[4] = e[0].clone();
                }
                r
            })
            .collect()
    };
    eprintln!("| CSDS | lb-sync | {ours_csds:?} |");
    eprintln!("| CSDS | grpcio (C-core) | {theirs_csds:?} |");
    assert_eq!(
        without_details(&ours_csds),
        without_details(&theirs_csds),
        "both CSDS answers list the same state"
    );
    assert!(
        ours_csds
            .iter()
            .any(|r| r[0] == "Cluster" && r[1] == "c1" && r[3] == "NACKED"),
        "{ours_csds:?}"
    );
    assert_eq!(ours_decoded, theirs_decoded, "every resource unpacks");
    assert_eq!(ours_decoded as usize, ours_csds.len());

    let ours = rig.ours_calls(40, &[]);
    let theirs = rig.grpcio_calls(40, &[]);
    rows("after the NACK", &ours, &theirs);
    for t in [&ours, &theirs] {
        assert_eq!(
            (t.to("B") + t.to("C"), t.failures()),
            (40, 0),
            "the old cluster stays in use: {t:?}"
        );
    }
}

#[test]
fn priority_failover_and_a_management_server_restart_side_by_side() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let failover = |addrs: &Addrs| {
        json!({
            "listeners": {"svc": {"route_config": {"virtual_hosts": [{"domains": ["*"], "routes": [
                {"prefix": "/", "cluster": "c1"}
            ]}]}}},
            "clusters": {"c1": {}},
            "endpoints": {"c1": [
                {"zone": "a", "priority": 0, "addresses": [addrs.get("A")]},
                {"zone": "b", "priority": 1, "addresses": [addrs.get("B")]}
            ]}
        })
    };
    let mut rig = Rig::start(env, &["A", "B"], failover);

    // 1. Priority 0 serves; when its endpoint goes down, priority 1 takes over.
    let ours = rig.ours_calls(20, &[]);
    let theirs = rig.grpcio_calls(20, &[]);
    rows("priority 0 up", &ours, &theirs);
    for t in [&ours, &theirs] {
        assert_eq!(t.to("A"), 20, "{t:?}");
    }
    rig.backends.get_mut("A").unwrap().kill();
    let ours = rig.ours_calls(40, &[]);
    let theirs = rig.grpcio_calls(40, &[]);
    rows("priority 0 down (40 calls at once after)", &ours, &theirs);
    for t in [&ours, &theirs] {
        assert_eq!(t.total(), 40);
        assert!(t.to("B") >= 35, "priority 1 serves: {t:?}");
    }
    rig.backends.get_mut("A").unwrap().restart().unwrap();
    rig.settle(&[], "priority 0 back", |t| t.to("A") == 10);

    // 2. The management server restarts while calls go on: both clients keep
    //    their config (gRFC A57), reconnect, and re-subscribe.
    let port = rig.control_port;
    let scenario_file = rig.dir.path().join("scenario.json");
    std::fs::write(&scenario_file, rig.scenario.to_string()).unwrap();
    let (ours, theirs) = rig.both_run(3000, |rig| {
        rig.control = None; // killed
        rig.log.clear();
        std::thread::sleep(Duration::from_millis(500));
        let deadline = Instant::now() + WAIT;
        let control = loop {
            let started = ScriptServer::start(
                &rig.env,
                "xds_control.py",
                [
                    "--port",
                    &port.to_string(),
                    "--scenario",
                    scenario_file.to_str().unwrap(),
                    "--watch-stdin",
                ],
            );
            match started {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => panic!("restart: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        rig.control = Some(control);
        rig.wait_both(0, &["Listener", "Cluster"], "re-subscription", |r| {
            r["nonce"] == "" && r["version"] != ""
        });
    });
    rows("management server restart, calls during", &ours, &theirs);
    for t in [&ours, &theirs] {
        assert_eq!(
            t.failures(),
            0,
            "no call fails while the server is gone: {t:?}"
        );
        assert_eq!(t.to("A"), t.total(), "{t:?}");
    }
    // After the restart both ACK the restarted server's versions.
    let ours = rig.ours_calls(20, &[]);
    let theirs = rig.grpcio_calls(20, &[]);
    rows("after the restart", &ours, &theirs);
    for t in [&ours, &theirs] {
        assert_eq!(t.to("A"), 20, "{t:?}");
    }
}

impl Rig {
    /// `n` calls at once from each client, each `/test.Echo/Sleep` for `ms`.
    fn both_sleep(&self, n: usize, ms: u64) -> (Tally, Tally) {
        let ours: Vec<_> = (0..n)
            .map(|_| {
                let channel = self.ours.clone();
                std::thread::spawn(move || {
                    let options = CallOptions::default().with_timeout(Duration::from_secs(10));
                    channel.unary("/test.Echo/Sleep", ms.to_string(), options)
                })
            })
            .collect();
        let mut tally = Tally::default();
        for t in ours {
            match t.join().unwrap() {
                Ok(_) => *tally.ok.entry("slept".into()).or_default() += 1,
                Err(s) => *tally.failed.entry(format!("{s}")).or_default() += 1,
            }
        }
        let line = self
            .grpcio
            .command(&format!("SLEEP {n} {ms}"), "RESULT ", WAIT)
            .unwrap();
        (tally, Tally::from_result(&line))
    }
}

#[test]
fn drops_and_circuit_breaking_side_by_side() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let mut rig = Rig::start(env, &["A"], |a| one_cluster(a, &["A"]));

    // 1. A drop category of 50 %: about half the calls fail, never sent.
    let mut dropping = rig.scenario.clone();
    dropping["drops"] = json!({"c1": [["lb", 50]]});
    rig.apply(&dropping, &["ClusterLoadAssignment"]);
    rig.settle(&[], "drops in force", |t| t.failures() > 0);
    let ours = rig.ours_calls(400, &[]);
    let theirs = rig.grpcio_calls(400, &[]);
    rows("drop category lb 50 %", &ours, &theirs);
    for t in [&ours, &theirs] {
        assert!(
            (140..=260).contains(&t.failures()) && t.to("A") + t.failures() == 400,
            "about half dropped: {t:?}"
        );
        assert!(
            t.failed
                .keys()
                .all(|k| k.contains("UNAVAILABLE") || k.contains("Unavailable")),
            "drops fail UNAVAILABLE: {t:?}"
        );
    }
    eprintln!(
        "| drop message | lb-sync | {:?} |",
        ours.failed.keys().next()
    );
    eprintln!(
        "| drop message | grpcio (C-core) | {:?} |",
        theirs.failed.keys().next()
    );

    // 2. Circuit breaking: max_requests 2, six calls at once: two go through.
    let mut breaking = rig.scenario.clone();
    breaking.as_object_mut().unwrap().remove("drops");
    breaking["clusters"]["c1"]["max_requests"] = json!(2);
    rig.apply(&breaking, &["Cluster", "ClusterLoadAssignment"]);
    rig.settle(&[], "drops gone", |t| t.failures() == 0);
    let (ours, theirs) = rig.both_sleep(6, 600);
    rows("max_requests 2, six calls at once", &ours, &theirs);
    for t in [&ours, &theirs] {
        assert_eq!(
            (t.to("slept"), t.failures()),
            (2, 4),
            "two calls in flight at most: {t:?}"
        );
    }
    eprintln!(
        "| breaker message | lb-sync | {:?} |",
        ours.failed.keys().next()
    );
    eprintln!(
        "| breaker message | grpcio (C-core) | {:?} |",
        theirs.failed.keys().next()
    );
}

#[test]
fn an_rls_cluster_specifier_route_side_by_side() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    // RLS answers cluster names: alice's calls go to c2, everyone else's to c1.
    let table = json!({
        "routes": [{"keys": {"user": "alice"}, "targets": ["c2"]}],
        "default": {"targets": ["c1"]}
    });
    let scenario = |a: &Addrs| {
        let mut s = two_clusters(a, json!([{"prefix": "/", "rls": "rls1"}]));
        s["rls_plugins"] = json!({"rls1": {
            "lookup_service": a.get("rls"),
            "service": "test.Echo",
            "headers": {"user": "x-user"},
            "default_target": "c1"
        }});
        s
    };
    let rig = Rig::start_with_rls(env, &["A", "B"], Some(table), scenario);
    let alice = [("x-user", "alice")];
    let bob = [("x-user", "bob")];
    let (ours_a, theirs_a) = (rig.ours_calls(20, &alice), rig.grpcio_calls(20, &alice));
    let (ours_b, theirs_b) = (rig.ours_calls(20, &bob), rig.grpcio_calls(20, &bob));
    rows("RLS plugin, x-user: alice", &ours_a, &theirs_a);
    rows("RLS plugin, x-user: bob", &ours_b, &theirs_b);
    for t in [&ours_a, &theirs_a] {
        assert_eq!(t.to("B"), 20, "RLS sends alice to c2: {t:?}");
    }
    for t in [&ours_b, &theirs_b] {
        assert_eq!(t.to("A"), 20, "RLS sends bob to c1: {t:?}");
    }
}

impl Rig {
    /// `n` calls from our client to `/test.Echo/Status` asking for `code`.
    fn ours_fail(&self, n: u64, code: u32) -> Tally {
        let mut tally = Tally::default();
        for _ in 0..n {
            let mut md = Metadata::new();
            md.insert("x-status-code", &code.to_string()).unwrap();
            let options = CallOptions::default()
                .with_metadata(md)
                .with_timeout(Duration::from_secs(5));
            match self
                .ours
                .unary("/test.Echo/Status", b"asked to fail".to_vec(), options)
            {
                Ok(_) => *tally.ok.entry("ok".into()).or_default() += 1,
                Err(s) => *tally.failed.entry(format!("{s}")).or_default() += 1,
            }
        }
        tally
    }

    /// The same from gRPC C-core's client.
    fn grpcio_fail(&self, n: u64, code: u32) -> Tally {
        let line = self
            .grpcio
            .command(&format!("FAIL {n} {code}"), "RESULT ", WAIT)
            .unwrap();
        Tally::from_result(&line)
    }

    /// How many `CALL <method>` lines backend `id` printed since last asked
    /// (waiting up to 1 s of quiet for stragglers; other lines are dropped).
    fn calls_seen(&self, id: &str, method: &str) -> usize {
        let mut n = 0;
        while self.backends[id]
            .wait_for_line(&format!("CALL {method}"), Duration::from_secs(1))
            .is_ok()
        {
            n += 1;
        }
        n
    }
}

#[test]
fn route_timeouts_and_retries_side_by_side() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let scenario = |a: &Addrs| {
        let mut s = one_cluster(a, &["A"]);
        s["routes"]["r1"]["virtual_hosts"][0]["routes"] = json!([
            {"prefix": "/test.Echo/Sleep", "cluster": "c1", "max_stream_duration_ms": 300},
            {"prefix": "/test.Echo/Status", "cluster": "c1",
             "retry": {"on": "unavailable,cancelled", "num_retries": 2}},
            {"prefix": "/", "cluster": "c1"}
        ]);
        s
    };
    let rig = Rig::start(env, &["A"], scenario);

    // 1. The route's max_stream_duration is the call's deadline (gRFC A31).
    let (ours, theirs) = rig.both_sleep(1, 2000);
    rows(
        "route max_stream_duration 300 ms, a 2 s call",
        &ours,
        &theirs,
    );
    for t in [&ours, &theirs] {
        assert_eq!(t.failures(), 1, "{t:?}");
        assert!(
            t.failed
                .keys()
                .all(|k| k.contains("DEADLINE_EXCEEDED") || k.contains("DeadlineExceeded")),
            "{t:?}"
        );
    }

    // 2. The route's retry policy (gRFC A44): UNAVAILABLE is tried three times
    //    in all, INVALID_ARGUMENT once.
    rig.calls_seen("A", "/test.Echo/Status");
    for (code, tries) in [(14, 3), (3, 1)] {
        let ours = rig.ours_fail(4, code);
        let ours_attempts = rig.calls_seen("A", "/test.Echo/Status");
        let theirs = rig.grpcio_fail(4, code);
        let theirs_attempts = rig.calls_seen("A", "/test.Echo/Status");
        eprintln!(
            "| route retry policy, 4 calls failing with code {code} | lb-sync {ours_attempts} \
             attempts | grpcio (C-core) {theirs_attempts} attempts |"
        );
        assert_eq!(
            (ours.failures(), theirs.failures()),
            (4, 4),
            "{ours:?} {theirs:?}"
        );
        assert_eq!(
            (ours_attempts, theirs_attempts),
            (4 * tries, 4 * tries),
            "attempts for code {code}"
        );
    }
}

#[test]
fn aggregate_and_logical_dns_clusters_side_by_side() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let scenario = |a: &Addrs| {
        let mut s = two_clusters(a, json!([{"prefix": "/", "cluster": "agg"}]));
        s["clusters"]["agg"] = json!({"aggregate": ["c1", "c2"]});
        s
    };
    let mut rig = Rig::start(env, &["A", "B"], scenario);
    let ours = rig.ours_calls(20, &[]);
    let theirs = rig.grpcio_calls(20, &[]);
    rows("aggregate [c1, c2]", &ours, &theirs);
    for t in [&ours, &theirs] {
        assert_eq!(t.to("A"), 20, "the first cluster serves: {t:?}");
    }
    rig.backends.get_mut("A").unwrap().kill();
    let ours = rig.ours_calls(40, &[]);
    let theirs = rig.grpcio_calls(40, &[]);
    rows("aggregate [c1, c2], c1's endpoint down", &ours, &theirs);
    for t in [&ours, &theirs] {
        assert!(t.to("B") >= 35, "the second cluster takes over: {t:?}");
    }
    rig.backends.get_mut("A").unwrap().restart().unwrap();
    rig.settle(&[], "the first cluster back", |t| t.to("A") == 10);

    // A logical DNS cluster (gRFC A37) in the aggregate's place: `localhost`
    // resolved by each client's own DNS resolver.
    let port = rig.addrs.get("B").rsplit(':').next().unwrap().to_owned();
    let mut dns = rig.scenario.clone();
    dns["routes"]["r1"]["virtual_hosts"][0]["routes"] =
        json!([{"prefix": "/", "cluster": "by-dns"}]);
    dns["clusters"]["by-dns"] = json!({"dns": format!("localhost:{port}")});
    rig.apply(&dns, &["RouteConfiguration", "Cluster"]);
    rig.settle(&[], "the DNS cluster in use", |t| t.to("B") == 10);
    let ours = rig.ours_calls(20, &[]);
    let theirs = rig.grpcio_calls(20, &[]);
    rows("logical DNS cluster localhost:<B's port>", &ours, &theirs);
    for t in [&ours, &theirs] {
        assert_eq!(t.to("B"), 20, "{t:?}");
    }
}

#[test]
fn a52_load_balancing_policies_side_by_side() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    // One locality with A then B; the policy list starts with a type nobody
    // knows, which both clients skip.
    let scenario = |a: &Addrs, policies: Value| {
        let mut s = one_cluster(a, &["A", "B"]);
        s["clusters"]["c1"]["lb_policies"] = policies;
        s
    };
    let mut rig = Rig::start(env, &["A", "B"], |a| {
        scenario(a, json!(["unknown", "pick_first"]))
    });
    let ours = rig.ours_calls(20, &[]);
    let theirs = rig.grpcio_calls(20, &[]);
    rows("A52 [unknown, pick_first] over [A, B]", &ours, &theirs);
    for t in [&ours, &theirs] {
        assert_eq!(t.to("A"), 20, "pick_first takes the first address: {t:?}");
    }
    let wrr = scenario(&rig.addrs, json!(["unknown", "wrr_locality:round_robin"]));
    rig.apply(&wrr, &["Cluster"]);
    rig.settle(&[], "round robin in force", |t| t.to("B") > 0);
    let ours = rig.ours_calls(40, &[]);
    let theirs = rig.grpcio_calls(40, &[]);
    rows(
        "A52 [unknown, wrr_locality(round_robin)] over [A, B]",
        &ours,
        &theirs,
    );
    for t in [&ours, &theirs] {
        assert_eq!((t.to("A"), t.to("B")), (20, 20), "round robin: {t:?}");
    }
    // A list with nothing gRPC supports is NACKed by both.
    rig.pump();
    let from = rig.log.len();
    let bad = scenario(&rig.addrs, json!(["unknown"]));
    rig.control
        .as_ref()
        .unwrap()
        .send_line(&format!("SCENARIO {bad}"))
        .unwrap();
    let nacks = rig.wait_both(
        from,
        &["Cluster"],
        "NACK of an unsupported policy list",
        |r| !r["error"].is_null(),
    );
    for (node, requests) in &nacks {
        eprintln!("| A52 NACK | {node} | {} |", requests[0]["error"]);
    }
}

/// Federation (gRFC A47): a target in authority `other` takes every resource,
/// named `xdstp://other/...`, from that authority's own management server.
#[test]
fn a_federation_authority_with_its_own_management_server_side_by_side() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let dir = env.temp_dir("xds-federation").unwrap();
    let backends: Vec<GrpcServer> = ["A", "B"]
        .iter()
        .map(|id| {
            let options = GrpcServerOptions {
                id: (*id).into(),
                ..GrpcServerOptions::default()
            };
            GrpcServer::start(&env, options).unwrap()
        })
        .collect();
    let x = |kind: &str, name: &str| format!("xdstp://other/envoy.config.{kind}/{name}");
    let (listener, route) = (
        x("listener.v3.Listener", "svc"),
        x("route.v3.RouteConfiguration", "r1"),
    );
    let (cluster, endpoints) = (
        x("cluster.v3.Cluster", "c1"),
        x("endpoint.v3.ClusterLoadAssignment", "c1"),
    );
    // The default server has an old-style `svc` to A; `other` has its own to B.
    let default_scenario = one_cluster(
        &Addrs([("A", backends[0].target())].into_iter().collect()),
        &["A"],
    );
    let other_scenario = json!({
        "listeners": {&listener: {"rds": &route}},
        "routes": {&route: {"virtual_hosts": [{"domains": ["*"], "routes": [
            {"prefix": "/", "cluster": &cluster}
        ]}]}},
        "clusters": {&cluster: {"eds": &endpoints}},
        "endpoints": {&endpoints: [{"zone": "b", "addresses": [backends[1].target()]}]}
    });
    let start = |name: &str, scenario: &Value| {
        let file = dir.path().join(name);
        std::fs::write(&file, scenario.to_string()).unwrap();
        ScriptServer::start(
            &env,
            "xds_control.py",
            [
                "--port",
                "0",
                "--scenario",
                file.to_str().unwrap(),
                "--watch-stdin",
            ],
        )
        .unwrap()
    };
    let default_cp = start("default.json", &default_scenario);
    let other_cp = start("other.json", &other_scenario);
    let bootstrap = |node: &str| {
        json!({
            "xds_servers": [{"server_uri": default_cp.target(),
                             "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
            "authorities": {"other": {
                "xds_servers": [{"server_uri": other_cp.target(),
                                 "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
                "client_listener_resource_name_template":
                    "xdstp://other/envoy.config.listener.v3.Listener/%s"
            }},
            "node": {"id": node}
        })
        .to_string()
    };
    let grpcio = grpcio_client(
        &env,
        &dir.path().join("grpcio-bootstrap.json"),
        &bootstrap(GRPCIO),
        "xds://other/svc",
    );

    let ours = xds_channel(&bootstrap(OURS), "xds://other/svc");

    let mut tally = Tally::default();
    for _ in 0..20 {
        let options = CallOptions::default().with_timeout(Duration::from_secs(10));
        match ours.unary("/test.Echo/Who", Vec::new(), options) {
            Ok(r) => {
                *tally
                    .ok
                    .entry(String::from_utf8_lossy(&r.message).into_owned())
                    .or_default() += 1
            }
            Err(s) => *tally.failed.entry(format!("{s}")).or_default() += 1,
        }
    }
    let line = grpcio.command("CALL 20", "RESULT ", WAIT).unwrap();
    let theirs = Tally::from_result(&line);
    rows("federation: xds://other/svc", &tally, &theirs);
    for t in [&tally, &theirs] {
        assert_eq!(t.to("B"), 20, "authority other's server routes to B: {t:?}");
    }
    // Each client asked `other`'s server for the xdstp names, and the default
    // server for nothing.
    let asked = |cp: &ScriptServer| -> Vec<(String, String)> {
        cp.lines_now()
            .iter()
            .filter_map(|l| l.strip_prefix("REQUEST "))
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .flat_map(|r| {
                let node = r["node"].as_str().unwrap_or("").to_owned();
                r["names"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(move |n| (node.clone(), n.as_str().unwrap().to_owned()))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let from_other = asked(&other_cp);
    for node in [OURS, GRPCIO] {
        for name in [&listener, &route, &cluster, &endpoints] {
            assert!(
                from_other.contains(&(node.to_owned(), name.clone())),
                "{node} asked other's server for {name}: {from_other:?}"
            );
        }
    }
    assert!(
        asked(&default_cp).is_empty(),
        "the default server was not asked"
    );
}

/// gRFC A57: with the management server unreachable and nothing cached, calls
/// fail UNAVAILABLE at once, naming the listener and why, instead of waiting
/// out their deadline.
#[test]
fn an_unreachable_management_server_fails_calls_at_once_side_by_side() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let dir = env.temp_dir("xds-unreachable").unwrap();
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let bootstrap = |node: &str| {
        json!({
            "xds_servers": [{"server_uri": dead.to_string(),
                             "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
            "node": {"id": node}
        })
        .to_string()
    };
    let grpcio = grpcio_client(
        &env,
        &dir.path().join("bootstrap.json"),
        &bootstrap(GRPCIO),
        "xds:///svc",
    );
    let ours = xds_channel(&bootstrap(OURS), "xds:///svc");

    let started = Instant::now();
    let options = CallOptions::default().with_timeout(Duration::from_secs(10));
    let err = ours
        .unary("/test.Echo/Who", Vec::new(), options)
        .unwrap_err();
    let took = started.elapsed();
    let theirs = Tally::from_result(&grpcio.command("CALL 1", "RESULT ", WAIT).unwrap());
    eprintln!("| server unreachable | lb-sync | {err} | {took:?} |");
    eprintln!(
        "| server unreachable | grpcio (C-core) | {:?} |",
        theirs.failed
    );
    assert_eq!(err.code(), lb_core::Code::Unavailable, "{err}");
    assert!(
        err.message().contains("listener svc") && err.message().contains("unreachable"),
        "{err}"
    );
    assert!(
        took < Duration::from_secs(9),
        "failed before its deadline: {took:?}"
    );
    assert_eq!(theirs.failures(), 1, "{theirs:?}");
    assert!(
        theirs.failed.keys().all(|k| k.starts_with("UNAVAILABLE")),
        "{theirs:?}"
    );
}
