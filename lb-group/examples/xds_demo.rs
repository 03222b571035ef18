//! `cargo xtask demo xds`: a channel configured by an xDS management server,
//! whose weights change while four threads call without pause.
//!
//! - Three of our gRPC servers, `alpha`, `beta` and `gamma`, answer
//!   `/test.Echo/Who` with their names.
//! - The management server is `xtask/peers/xds_control.py` (grpcio serving ADS
//!   with Envoy's own generated protos, the one the side-by-side tests run
//!   C-core's xDS client against). Cluster `blue` is `alpha`; cluster `green`
//!   is `beta`, later `beta` and `gamma`.
//! - One `Channel` to `xds:///demo` (lb-group's xDS resolver over our HTTP/2
//!   transport) follows it through five phases of 2 s:
//!   1. every call to `blue`;
//!   2. `blue` 70 / `green` 30;
//!   3. `blue` 30 / `green` 70;
//!   4. `green` only, and an EDS update adds `gamma` to it;
//!   5. calls with `x-user: vip` go to `blue`, the rest to `green`.
//! - Progress lines every 0.5 s, a table of where each phase's calls went, the
//!   policy tree xDS built (also on the admin page, whose address is printed,
//!   with the xDS resources from `lb_group::xds::csds::dump_json`), the xDS
//!   resources as CSDS would list them, and the calls that failed: none, if
//!   all went well.
//!
//! ```text
//! cargo run -p lb-group --example xds_demo -- [seconds to keep the admin page up (0)]
//! ```
//!
//! The Python peers must be installed (`cargo xtask peers`; `cargo xtask demo
//! xds` does it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use lb_core::Metadata;
use lb_core::channel::{CallOptions, Channel, ResolverRegistry};
use lb_core::channelz::PolicyView;
use lb_group::xds::Bootstrap;
use lb_group::xds::client::{XdsClient, XdsClientOptions};
use lb_group::xds::resolver::XdsResolverBuilder;
use lb_testkit::peers::{self, ScriptServer};
use lb_transport::admin::AdminServer;
use lb_transport::driver::{H2Transport, TransportConfig};
use lb_transport::server::Server;
use parking_lot::Mutex;
use serde_json::{Value, json};

const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];
const THREADS: usize = 4;
const PHASE: Duration = Duration::from_secs(2);
const PHASES: [&str; 5] = [
    "all to blue",
    "blue 70 / green 30",
    "blue 30 / green 70",
    "green only, gamma joins green",
    "x-user: vip to blue, rest green",
];

/// The scenario of phase `phase`.
fn scenario(phase: usize, addr: &BTreeMap<&str, String>) -> Value {
    let routes = match phase {
        0 => json!([{"prefix": "/", "cluster": "blue"}]),
        1 => json!([{"prefix": "/", "weighted": [["blue", 70], ["green", 30]]}]),
        2 => json!([{"prefix": "/", "weighted": [["blue", 30], ["green", 70]]}]),
        3 => json!([{"prefix": "/", "cluster": "green"}]),
        _ => json!([
            {"prefix": "/", "headers": {"x-user": "vip"}, "cluster": "blue"},
            {"prefix": "/", "cluster": "green"}
        ]),
    };
    let green: Vec<&String> = if phase >= 3 {
        vec![&addr["beta"], &addr["gamma"]]
    } else {
        vec![&addr["beta"]]
    };
    json!({
        "listeners": {"demo": {"rds": "demo-routes"}},
        "routes": {"demo-routes": {"virtual_hosts": [{"domains": ["*"], "routes": routes}]}},
        "clusters": {"blue": {}, "green": {}},
        "endpoints": {
            "blue": [{"zone": "east", "addresses": [&addr["alpha"]]}],
            "green": [{"zone": "west", "addresses": green}]
        }
    })
}

/// Calls per phase and backend, and failures.
#[derive(Default)]
struct Tally {
    served: [BTreeMap<String, u64>; PHASES.len()],
    failed: Vec<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let hold: u64 = std::env::args().nth(1).map_or(Ok(0), |s| s.parse())?;
    let env = peers::peers_available().map_err(|e| {
        format!("{e}\nthe xDS demo runs the management server from the Python peers: run `cargo xtask peers`")
    })?;
    let mut backends = Vec::new();
    let mut addr = BTreeMap::new();
    for name in NAMES {
        let server = lb_testkit::services::mount(Server::builder(), name).bind("127.0.0.1:0")?;
        addr.insert(name, server.local_addr().to_string());
        println!("{name:<6} listening on {}", server.local_addr());
        backends.push(server);
    }
    let dir = env.temp_dir("xds-demo")?;
    let first = dir.path().join("scenario.json");
    std::fs::write(&first, scenario(0, &addr).to_string())?;
    let control = ScriptServer::start(
        &env,
        "xds_control.py",
        [
            "--port",
            "0",
            "--scenario",
            first.to_str().ok_or("a UTF-8 path")?,
            "--watch-stdin",
        ],
    )?;
    println!(
        "xDS management server (grpcio + Envoy's protos) on {}",
        control.target()
    );

    let bootstrap = Bootstrap::parse(
        &json!({
            "xds_servers": [{"server_uri": control.target(), "channel_creds": [{"type": "insecure"}],
                             "server_features": ["xds_v3"]}],
            "node": {"id": "xds-demo"}
        })
        .to_string(),
    )?;
    let transport = Arc::new(H2Transport::new(TransportConfig::default())?);
    let ads = Channel::builder(format!("ipv4:{}", control.target()))
        .transport(transport.clone())
        .build()?;
    let client = Arc::new(XdsClient::start(
        ads,
        XdsClientOptions::from_bootstrap(&bootstrap),
    ));
    let mut resolvers = ResolverRegistry::with_builtins();
    resolvers.register(XdsResolverBuilder::new(Arc::clone(&client), bootstrap));
    let channel = Channel::builder("xds:///demo")
        .transport(transport)
        .resolver_registry(resolvers)
        .lb_policy_registry(lb_group::registry())
        .build()?;
    let admin = AdminServer::bind("127.0.0.1:0")?;
    let xds_clients = vec![Arc::clone(&client)];
    admin.route("/api/xds", move |_| {
        let dump = lb_group::xds::csds::dump_json(&xds_clients);
        ("application/json", dump.to_string())
    });
    println!(
        "admin page: {} (the channel xds:///demo shows the tree xDS built, and the \
         xDS resources their versions and status)",
        admin.url()
    );
    println!("channel: xds:///demo, {THREADS} threads calling without pause\n");

    let phase = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (channel, phase, stop, tally) = (
                channel.clone(),
                Arc::clone(&phase),
                Arc::clone(&stop),
                Arc::clone(&tally),
            );
            thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let p = phase.load(Ordering::Relaxed);
                    let mut md = Metadata::new();
                    // One call in four is a VIP's (it matters in phase 5).
                    if (n + t as u64) % 4 == 0 {
                        md.insert("x-user", "vip").expect("valid metadata");
                    }
                    let options = CallOptions::default()
                        .with_metadata(md)
                        .with_timeout(Duration::from_secs(5));
                    let result = channel.unary("/test.Echo/Who", Vec::new(), options);
                    let mut tally = tally.lock();
                    match result {
                        Ok(r) => {
                            let who = String::from_utf8_lossy(&r.message).into_owned();
                            *tally.served[p].entry(who).or_default() += 1;
                        }
                        Err(s) => tally.failed.push(format!("phase {}: {s}", p + 1)),
                    }
                }
            })
        })
        .collect();

    let start = Instant::now();
    for (p, name) in PHASES.iter().enumerate() {
        if p > 0 {
            control.send_line(&format!("SCENARIO {}", scenario(p, &addr)))?;
            control.wait_for_line("APPLIED", Duration::from_secs(10))?;
            phase.store(p, Ordering::Relaxed);
        }
        println!("phase {}: {name}", p + 1);
        let end = Instant::now() + PHASE;
        while Instant::now() < end {
            thread::sleep(Duration::from_millis(500));
            let t = tally.lock();
            let served: Vec<String> = t.served[p]
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            println!(
                "  {:>5.1} s  {}  failed {}",
                start.elapsed().as_secs_f64(),
                served.join(" · "),
                t.failed.len()
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }

    let t = tally.lock();
    println!("\n| phase | alpha (blue) | beta (green) | gamma (green) |");
    println!("|---|---|---|---|");
    for (p, name) in PHASES.iter().enumerate() {
        let total: u64 = t.served[p].values().sum();
        let cell = |who: &str| {
            let n = t.served[p].get(who).copied().unwrap_or(0);
            format!("{n} ({:.0} %)", 100.0 * n as f64 / total.max(1) as f64)
        };
        println!(
            "| {} {name} | {} | {} | {} |",
            p + 1,
            cell("alpha"),
            cell("beta"),
            cell("gamma")
        );
    }
    println!("\nthe policy tree xDS built:");
    match lb_core::channelz::registry().policy(channel.channelz_id(), Duration::from_secs(1)) {
        Some(view) => print_tree(&view, 1),
        None => println!("  (the channel did not answer)"),
    }
    println!("\nthe xDS resources (as CSDS and the admin page list them):");
    for c in lb_group::xds::csds::dump_json(&[Arc::clone(&client)])["clients"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for r in c["resources"].as_array().into_iter().flatten() {
            println!(
                "  {:<22} {:<12} version {:<3} {}",
                r["type"].as_str().unwrap_or(""),
                r["name"].as_str().unwrap_or(""),
                r["version"].as_str().unwrap_or(""),
                r["status"].as_str().unwrap_or("")
            );
        }
    }
    println!("\nfailed calls: {}", t.failed.len());
    for f in t.failed.iter().take(10) {
        println!("  {f}");
    }
    let failed = t.failed.len();
    drop(t);
    if hold > 0 {
        println!("\nthe admin page stays up for {hold} s: {}", admin.url());
        thread::sleep(Duration::from_secs(hold));
    }
    admin.shutdown();
    channel.close();
    drop(client);
    for b in backends {
        b.shutdown(Duration::ZERO);
    }
    if failed > 0 {
        return Err(format!("{failed} calls failed").into());
    }
    Ok(())
}

/// Prints a policy tree, one policy per line, indented by depth.
fn print_tree(view: &PolicyView, depth: usize) {
    let name = if view.name.is_empty() {
        String::new()
    } else {
        format!("{}: ", view.name)
    };
    let state = view.state.map(|s| format!(" [{s}]")).unwrap_or_default();
    let details: Vec<String> = view
        .details
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let details = if details.is_empty() {
        String::new()
    } else {
        format!(" ({})", details.join(", "))
    };
    println!(
        "{}{name}{}{state}{details}",
        "  ".repeat(depth),
        view.policy
    );
    for child in &view.children {
        print_tree(child, depth + 1);
    }
}
