//! `cargo xtask demo`: RLS (`rls_experimental`) routing end to end, on real loopback
//! sockets, with nothing but this project's code.
//!
//! - Four backends (`backend-a` … `backend-d`) and a fifth, `default`, are our
//!   gRPC servers on 127.0.0.1. Each answers `/demo.Echo/Who` with its name and
//!   echoes the `x-google-rls-data` request header it received back as the response
//!   header `x-echo-rls-data`.
//! - An RLS server (`lb_rls::server::bind` with a `RoutingTable`) maps the key
//!   `user` onto those backends, with header data such as `tier=gold`. One user,
//!   `mallory`, has no route: the lookup fails with NOT_FOUND, the key goes into
//!   backoff and its calls use the `defaultTarget`.
//! - A `Channel` with our HTTP/2 transport and an `rls_experimental` service config
//!   (key `user` from the header `x-user`, `rls_dial_target` children with
//!   `round_robin`) is called from four threads for six seconds.
//! - After 2 s the RLS server shuts down (gracefully) for 1.5 s, then comes back on
//!   the same port with the same table. Users whose routes are cached keep going to
//!   their backends; users first seen while it is down fall back to the default
//!   target; once it is back their lookups succeed and they move to their backends.
//! - While it runs, live progress lines (indicatif, when stderr is a terminal; plain
//!   lines every 0.5 s otherwise) show the calls so far, where they went (per
//!   backend) and the RLS lookups and cache hit rate, read from the channel's
//!   metrics recorder (`lb_core::metrics`: gRPC's `grpc.client.call.duration` and
//!   `grpc.lb.rls.*` instruments).
//! - The summary shows where every user's calls went in each phase, the header data
//!   the backends saw, latency percentiles, the lookups each RLS server incarnation
//!   received, the RLS pick metrics, a table of the metrics recorded, and the
//!   failures.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use lb_core::channel::{CallOptions, Channel};
use lb_core::metrics::MetricSelection;
use lb_core::metrics::prometheus::PrometheusRecorder;
use lb_core::{LbPolicyRegistry, Metadata};
use lb_rls::balancer::RlsBuilderOptions;
use lb_rls::metrics::{InMemoryRecorder, RlsMetric};
use lb_rls::picker::RLS_DATA_HEADER;
use lb_rls::server::RoutingTable;
use lb_transport::admin::AdminServer;
use lb_transport::driver::{H2Transport, TransportConfig};
use lb_transport::server::{Response, Server};
use serde_json::{Value, json};

const METHOD: &str = "/demo.Echo/Who";
/// The response header the backends echo `x-google-rls-data` in.
const ECHO_HEADER: &str = "x-echo-rls-data";
const BACKENDS: [&str; 4] = ["backend-a", "backend-b", "backend-c", "backend-d"];
const DEFAULT_BACKEND: &str = "default";
/// Users with a route, called from the start.
const EARLY_USERS: [&str; 8] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
];
/// Users with a route, first called when the RLS server goes down.
const LATE_USERS: [&str; 4] = ["ivan", "judy", "mike", "niaj"];
/// The user without a route (NOT_FOUND, then the default target).
const UNMAPPED_USER: &str = "mallory";
const TIERS: [&str; 3] = ["gold", "silver", "bronze"];

const THREADS: usize = 4;
const RLS_STOP_AT: Duration = Duration::from_millis(2000);
const RLS_DOWN_FOR: Duration = Duration::from_millis(1500);
const RUN_FOR: Duration = Duration::from_millis(6000);
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// How often the live lines are redrawn on a terminal.
const REDRAW_EVERY: Duration = Duration::from_millis(100);

const PHASES: [&str; 3] = ["RLS up", "RLS down", "RLS back"];
const PHASE_UP: u8 = 0;
const PHASE_DOWN: u8 = 1;
const PHASE_BACK: u8 = 2;

/// Every mapped user in table order, with its backend and header data.
fn routes() -> Vec<(&'static str, &'static str, String)> {
    EARLY_USERS
        .iter()
        .chain(LATE_USERS.iter())
        .enumerate()
        .map(|(i, user)| {
            let tier = TIERS[i % TIERS.len()];
            (*user, BACKENDS[i % BACKENDS.len()], format!("tier={tier}"))
        })
        .collect()
}

/// What one worker thread saw.
#[derive(Default)]
struct Report {
    /// Calls per (user, phase, backend that answered).
    calls: BTreeMap<(&'static str, u8, String), usize>,
    /// Calls per (user, header data the backend saw; empty: none).
    data: BTreeMap<(&'static str, String), usize>,
    latencies: Vec<Duration>,
    /// Failed calls per (phase, status).
    failures: BTreeMap<(u8, String), usize>,
    /// Per user, when (since the start) a call started after the restart first
    /// reached a backend other than the default.
    first_routed_back: BTreeMap<&'static str, Duration>,
}

/// What the workers and the controller share.
#[derive(Default)]
struct Shared {
    phase: AtomicU8,
    stop: AtomicBool,
    done: AtomicUsize,
    failed: AtomicUsize,
}

/// A backend: answers with its name, echoing the RLS header data it received.
fn start_backend(name: &'static str) -> std::io::Result<Server> {
    Server::builder()
        .unary(METHOD, move |req| {
            let mut response = Response::new(name.as_bytes());
            if let Some(data) = req.metadata.get(RLS_DATA_HEADER) {
                response
                    .headers
                    .insert(ECHO_HEADER, data)
                    .map_err(|e| lb_core::Status::internal(e.to_string()))?;
            }
            Ok(response)
        })
        .workers(2)
        .bind("127.0.0.1:0")
}

/// Starts the RLS server on `addr`, retrying briefly if the port is not free yet.
fn start_rls(addr: SocketAddr, table: Arc<RoutingTable>) -> std::io::Result<Server> {
    let mut attempt = 0;
    loop {
        match lb_rls::server::bind(addr, table.clone()) {
            Ok(server) => return Ok(server),
            Err(e) if attempt < 20 && e.kind() == std::io::ErrorKind::AddrInUse => {
                attempt += 1;
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

/// A small deterministic generator (SplitMix64) to choose users.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn worker(id: usize, channel: &Channel, shared: &Shared, start: Instant) -> Report {
    let mut report = Report::default();
    let early: Vec<&'static str> = EARLY_USERS.iter().copied().chain([UNMAPPED_USER]).collect();
    let all: Vec<&'static str> = early.iter().copied().chain(LATE_USERS).collect();
    let mut n = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let phase = shared.phase.load(Ordering::SeqCst);
        let users = if phase == PHASE_UP { &early } else { &all };
        n += 1;
        let pick = mix(((id as u64) << 40) | n);
        let user = users[(pick % users.len() as u64) as usize];
        let mut md = Metadata::new();
        md.insert("x-user", user).expect("valid metadata");
        let options = CallOptions::default()
            .with_metadata(md)
            .with_timeout(Duration::from_secs(2));
        let started = Instant::now();
        match channel.unary(METHOD, b"hi".to_vec(), options) {
            Ok(r) => {
                report.latencies.push(started.elapsed());
                let from = String::from_utf8_lossy(&r.message).into_owned();
                if phase == PHASE_BACK && from != DEFAULT_BACKEND {
                    let at = started - start;
                    let first = report.first_routed_back.entry(user).or_insert(at);
                    *first = (*first).min(at);
                }
                *report.calls.entry((user, phase, from)).or_default() += 1;
                let data = r.headers.get(ECHO_HEADER).unwrap_or_default().to_owned();
                *report.data.entry((user, data)).or_default() += 1;
            }
            Err(e) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                *report.failures.entry((phase, e.to_string())).or_default() += 1;
            }
        }
        shared.done.fetch_add(1, Ordering::Relaxed);
    }
    report
}

/// The live progress: three indicatif lines on a terminal (time and calls, calls
/// per backend, RLS lookups and cache hits), plain lines otherwise. Everything it
/// shows comes from the channel's metrics recorder, plus the lookups the RLS
/// server counted.
struct Progress {
    multi: MultiProgress,
    lines: [ProgressBar; 3],
    tty: bool,
}

impl Progress {
    fn new(run_for: Duration) -> Self {
        let tty = std::io::stderr().is_terminal();
        let multi = MultiProgress::new();
        let top = ProgressBar::new(run_for.as_millis() as u64);
        top.set_style(
            ProgressStyle::with_template("{spinner} {bar:24.cyan/blue} {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        let plain = ProgressStyle::with_template("  {msg}").expect("a valid template");
        let lines = [
            multi.add(top),
            multi.add(ProgressBar::new(1).with_style(plain.clone())),
            multi.add(ProgressBar::new(1).with_style(plain)),
        ];
        Self { multi, lines, tty }
    }

    /// A line above the live ones.
    fn event(&self, line: &str) {
        if self.tty {
            let _ = self.multi.println(line);
        } else {
            println!("{line}");
        }
    }

    fn show(&self, elapsed: Duration, text: [String; 3]) {
        if self.tty {
            self.lines[0].set_position(elapsed.as_millis() as u64);
            for (line, text) in self.lines.iter().zip(text) {
                line.set_message(text);
            }
        } else {
            println!(
                "[{:>5.2}s] {}",
                elapsed.as_secs_f64(),
                text.join("\n         ")
            );
        }
    }

    fn finish(&self) {
        for line in &self.lines {
            line.finish_and_clear();
        }
    }
}

/// The live numbers, from the recorder: calls so far (and failed), calls per
/// backend (RLS picks by data-plane target, named), lookups and cache hit rate.
fn live_text(
    recorder: &InMemoryRecorder,
    name_of: &BTreeMap<String, &str>,
    lookups: usize,
    rate: f64,
    phase: &str,
) -> [String; 3] {
    let calls = recorder.histogram_count("grpc.client.call.duration", &[]);
    let ok = recorder.histogram_count("grpc.client.call.duration", &[("grpc.status", "OK")]);
    let mut per_backend: BTreeMap<&str, u64> = BTreeMap::new();
    for metric in [RlsMetric::TargetPicks, RlsMetric::DefaultTargetPicks] {
        for (target, n) in recorder.counter_by(metric, "grpc.lb.rls.data_plane_target") {
            let name = name_of.get(&target).copied().unwrap_or("?");
            *per_backend.entry(name).or_default() += n;
        }
    }
    let picks: u64 =
        per_backend.values().sum::<u64>() + recorder.counter_total(RlsMetric::FailedPicks);
    let hits = picks.saturating_sub(lookups as u64);
    let split: Vec<String> = per_backend
        .iter()
        .map(|(b, n)| format!("{b} {n}"))
        .collect();
    [
        format!(
            "{calls} calls ({rate:.0}/s), {} failed  [{phase}]",
            calls.saturating_sub(ok)
        ),
        format!("per backend: {}", split.join(" · ")),
        format!(
            "RLS lookups {lookups} · cache hit rate {:.2}% ({hits} of {picks} picks without a lookup)",
            100.0 * hits as f64 / picks.max(1) as f64
        ),
    ]
}

/// The summary of what the channel's metrics recorder holds (the channel's and
/// RLS server's targets and the instance id left out), and the size of the
/// Prometheus text.
fn print_metrics(recorder: &InMemoryRecorder, scrape: &str) {
    println!("\nmetrics the channel recorded (lb_core::metrics, gRPC's instrument names):");
    let hidden = [
        "grpc.target",
        "grpc.lb.rls.server_target",
        "grpc.lb.rls.instance_uuid",
    ];
    for line in recorder.table(&hidden).lines() {
        println!("  {line}");
    }
    let families = scrape.lines().filter(|l| l.starts_with("# TYPE ")).count();
    println!(
        "the admin page's /metrics serves {} bytes of Prometheus text: {families} \
         instruments",
        scrape.len()
    );
}

/// Serves the admin page (lb-transport's `AdminServer`: every channel's policy tree,
/// subchannels, the RLS cache and recent events from channelz, and `/metrics` from
/// `metrics`, the Prometheus recorder's handler) on a free loopback port.
fn admin_page(
    metrics: impl Fn() -> (&'static str, String) + Send + Sync + 'static,
) -> std::io::Result<AdminServer> {
    let admin = AdminServer::bind("127.0.0.1:0")?;
    admin.route("/metrics", move |_| metrics());
    Ok(admin)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. Backends and the RLS server.
    let mut backends = Vec::new();
    let mut addr_of: BTreeMap<&str, String> = BTreeMap::new();
    for name in BACKENDS.into_iter().chain([DEFAULT_BACKEND]) {
        let server = start_backend(name)?;
        println!("{name:<10} listening on {}", server.local_addr());
        addr_of.insert(name, server.local_addr().to_string());
        backends.push(server);
    }
    let routes = routes();
    let table_json = json!({
        "routes": routes
            .iter()
            .map(|(user, backend, data)| json!({
                "keys": {"user": user},
                "targets": [addr_of[backend]],
                "headerData": data,
            }))
            .collect::<Vec<Value>>(),
    });
    let table = || RoutingTable::from_json(&table_json).map(Arc::new);
    let mut tables = vec![table()?];
    let rls = lb_rls::server::bind("127.0.0.1:0", tables[0].clone())?;
    let rls_addr = rls.local_addr();
    println!("RLS server listening on {rls_addr}; routes (user → backend, header data):");
    for (user, backend, data) in &routes {
        println!("  {user:<8} → {backend:<10} {data}");
    }
    println!("  {UNMAPPED_USER:<8} → (no route: NOT_FOUND, so the default target)");

    // 2. The client channel with the RLS policy.
    let service_config = json!({"loadBalancingConfig": [{"rls_experimental": {
        "routeLookupConfig": {
            "grpcKeybuilders": [{
                "names": [{"service": "demo.Echo"}],
                "headers": [{"key": "user", "names": ["x-user"]}],
            }],
            "lookupService": format!("ipv4:{rls_addr}"),
            "lookupServiceTimeout": "1s",
            "cacheSizeBytes": 1_000_000,
            "defaultTarget": addr_of[DEFAULT_BACKEND],
        },
        "childPolicy": [{"rls_dial_target": {"childPolicy": [{"round_robin": {}}]}}],
        "childPolicyConfigTargetFieldName": "target",
    }}]});
    let transport = Arc::new(H2Transport::new(TransportConfig::default())?);
    // Two recorders: one in memory for the progress lines and the summary, and
    // the Prometheus one (every instrument, the experimental RLS ones too) for
    // the admin page's /metrics.
    let recorder = Arc::new(InMemoryRecorder::new());
    let prometheus = Arc::new(PrometheusRecorder::with_selection(MetricSelection::all()));
    let admin = admin_page(prometheus.handler())?;
    println!(
        "admin page: {} (open it in a browser while the demo runs; Prometheus text at {}metrics)",
        admin.url(),
        admin.url()
    );
    let options = RlsBuilderOptions::new(transport.clone());
    let mut registry = LbPolicyRegistry::with_builtins();
    let rls_builder = lb_rls::register(&mut registry, options);
    let channel = Channel::builder("passthrough:///echo.demo")
        .transport(transport)
        .lb_policy_registry(registry)
        .default_service_config(service_config.to_string())
        .metrics_recorder(recorder.clone())
        .metrics_recorder(prometheus.clone())
        .build()?;
    println!(
        "\nservice config:\n{}",
        serde_json::to_string_pretty(&service_config)?
    );

    // 3. and 4. Calls from four threads; the RLS server goes away and comes back.
    println!(
        "\ncalling {METHOD} from {THREADS} threads for {RUN_FOR:?}: {} users from the \
         start, {} more from when RLS stops",
        EARLY_USERS.len() + 1,
        LATE_USERS.len()
    );
    let shared = Shared::default();
    let started = Instant::now();
    let mut rls = Some(rls);
    let mut restarted_at = None;
    let reports: Vec<Report> = thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|id| {
                let (channel, shared) = (&channel, &shared);
                s.spawn(move || worker(id, channel, shared, started))
            })
            .collect();
        let progress = Progress::new(RUN_FOR);
        let name_of: BTreeMap<String, &str> = addr_of
            .iter()
            .map(|(name, addr)| (addr.clone(), *name))
            .collect();
        let mut next_progress = Duration::ZERO;
        let mut last = (Duration::ZERO, 0usize);
        let event = |line: String| progress.event(&line);
        loop {
            let now = started.elapsed();
            if now >= RUN_FOR {
                break;
            }
            let up = shared.phase.load(Ordering::SeqCst) == PHASE_UP;
            if let Some(server) = rls.take_if(|_| up && now >= RLS_STOP_AT) {
                let t = Instant::now();
                server.shutdown(Duration::from_millis(500));
                // Only now: no lookup of a new user can reach the old server.
                shared.phase.store(PHASE_DOWN, Ordering::SeqCst);
                event(format!(
                    "[{:>5.2}s] RLS server on {rls_addr} stopped (graceful shutdown took {:.0?})",
                    now.as_secs_f64(),
                    t.elapsed()
                ));
            }
            if shared.phase.load(Ordering::SeqCst) == PHASE_DOWN
                && now >= RLS_STOP_AT + RLS_DOWN_FOR
            {
                let restarted = table().map_err(|e| e.to_string()).and_then(|t| {
                    tables.push(t.clone());
                    start_rls(rls_addr, t).map_err(|e| e.to_string())
                });
                match restarted {
                    Ok(server) => {
                        rls = Some(server);
                        restarted_at = Some(now);
                        shared.phase.store(PHASE_BACK, Ordering::SeqCst);
                        event(format!(
                            "[{:>5.2}s] RLS server restarted on the same address {rls_addr}",
                            now.as_secs_f64()
                        ));
                    }
                    Err(e) => {
                        event(format!("RLS server failed to restart: {e}"));
                        shared.phase.store(PHASE_BACK, Ordering::SeqCst);
                    }
                }
            }
            if now >= next_progress {
                let done = shared.done.load(Ordering::Relaxed);
                let rate = (done - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-3);
                if now - last.0 >= PROGRESS_EVERY || last.1 == 0 {
                    last = (now, done);
                }
                next_progress += if progress.tty {
                    REDRAW_EVERY
                } else {
                    PROGRESS_EVERY
                };
                let lookups: usize = tables.iter().map(|t| t.requests().len()).sum();
                let phase = PHASES[usize::from(shared.phase.load(Ordering::SeqCst))];
                progress.show(now, live_text(&recorder, &name_of, lookups, rate, phase));
            }
            thread::sleep(Duration::from_millis(20));
        }
        progress.finish();
        shared.stop.store(true, Ordering::SeqCst);
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect()
    });
    let elapsed = started.elapsed();

    // 5. Summary.
    let mut all = Report::default();
    for r in reports {
        for (k, n) in r.calls {
            *all.calls.entry(k).or_default() += n;
        }
        for (k, n) in r.data {
            *all.data.entry(k).or_default() += n;
        }
        all.latencies.extend(r.latencies);
        for (k, n) in r.failures {
            *all.failures.entry(k).or_default() += n;
        }
        for (user, at) in r.first_routed_back {
            let first = all.first_routed_back.entry(user).or_insert(at);
            *first = (*first).min(at);
        }
    }
    let mut lookups_per_user: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (i, t) in tables.iter().enumerate() {
        for req in t.requests() {
            let user = req.key_map.get("user").unwrap_or("(none)").to_owned();
            let entry = lookups_per_user.entry(user).or_default();
            if i == 0 {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
    }

    println!(
        "\nwhere each user's calls went (backend calls), per phase; the header data the \
         backend saw;\nand the lookups the RLS server received for the user (first + \
         restarted incarnation):"
    );
    let mut rows: Vec<Vec<String>> = vec![
        [
            "user",
            "route",
            PHASES[0],
            PHASES[1],
            PHASES[2],
            RLS_DATA_HEADER,
            "lookups",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    let mut mismatches = Vec::new();
    let users: Vec<(&str, &str, String)> = routes
        .iter()
        .cloned()
        .chain([(UNMAPPED_USER, DEFAULT_BACKEND, String::new())])
        .collect();
    for (user, route, want_data) in &users {
        let late = LATE_USERS.contains(user);
        let mut row = vec![(*user).to_owned(), (*route).to_owned()];
        if *route == DEFAULT_BACKEND {
            row[1] = "(none)".to_owned();
        }
        for phase in [PHASE_UP, PHASE_DOWN, PHASE_BACK] {
            let parts: Vec<String> = all
                .calls
                .iter()
                .filter(|((u, p, _), _)| u == user && *p == phase)
                .map(|((_, _, from), n)| {
                    // Right: the user's route; the default target only for a user
                    // first seen while RLS was down (until RLS answers again).
                    let ok = from == route || (from == DEFAULT_BACKEND && late);
                    if !ok {
                        mismatches.push(format!(
                            "{user} reached {from} {n}× ({})",
                            PHASES[usize::from(phase)]
                        ));
                    }
                    format!("{from} {n}")
                })
                .collect();
            row.push(if parts.is_empty() {
                "-".to_owned()
            } else {
                parts.join(", ")
            });
        }
        let data: Vec<String> = all
            .data
            .iter()
            .filter(|((u, _), _)| u == user)
            .map(|((_, d), n)| {
                if !d.is_empty() && d != want_data {
                    mismatches.push(format!("{user} sent header data {d:?} {n}×"));
                }
                if d.is_empty() {
                    format!("none {n}")
                } else {
                    format!("{d} {n}")
                }
            })
            .collect();
        row.push(data.join(", "));
        let (l0, l1) = lookups_per_user.get(*user).copied().unwrap_or_default();
        row.push(format!("{l0} + {l1}"));
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("  {}", cells.join(" | ").trim_end());
    }
    if mismatches.is_empty() {
        println!(
            "routing check: every call reached the user's route (cached users even while \
             RLS was down), or the default target only for users RLS had not answered; \
             header data always matched the route"
        );
    } else {
        println!("routing check FAILED:");
        for m in &mismatches {
            println!("  {m}");
        }
    }

    if let Some(restart) = restarted_at {
        let back: Vec<String> = LATE_USERS
            .iter()
            .map(|user| match all.first_routed_back.get(user) {
                Some(at) => format!("{user} {} ms", at.saturating_sub(restart).as_millis()),
                None => format!("{user} never"),
            })
            .collect();
        println!(
            "users first seen while RLS was down reached their own backend after the \
             restart: {}\n  (the control channel reconnects with gRPC's connection \
             backoff, 1 s then 1.6 s ± 20 %; its READY resets the keys' backoffs)",
            back.join(", ")
        );
    }

    let ok = all.latencies.len();
    let failed: usize = all.failures.values().sum();
    let total = ok + failed;
    println!(
        "\n{total} calls from {THREADS} threads in {elapsed:.2?} ({:.0} calls/s): {ok} ok, \
         {failed} failed",
        total as f64 / elapsed.as_secs_f64()
    );
    all.latencies.sort_unstable();
    let pct = |p: f64| {
        all.latencies
            .get(((all.latencies.len().max(1) - 1) as f64 * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "latency p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0)
    );
    for ((phase, why), n) in &all.failures {
        println!("  {n} failed ({}) with {why}", PHASES[usize::from(*phase)]);
    }

    let lookups: Vec<usize> = tables.iter().map(|t| t.requests().len()).collect();
    let total_lookups: usize = lookups.iter().sum();
    let target_picks = recorder.counter_total(RlsMetric::TargetPicks);
    let default_picks = recorder.counter_total(RlsMetric::DefaultTargetPicks);
    let failed_picks = recorder.counter_total(RlsMetric::FailedPicks);
    let picks = target_picks + default_picks + failed_picks;
    println!(
        "\nRLS lookups received by the server: {total_lookups} ({} by the first incarnation, \
         {} after the restart)",
        lookups[0],
        lookups.get(1).copied().unwrap_or(0)
    );
    println!(
        "RLS picks (metrics recorder; a pick is counted once it is routed or fails, not \
         while it waits for a lookup):"
    );
    println!("  target_picks          {target_picks:>8}  (routed to a target RLS returned)");
    println!(
        "  default_target_picks  {default_picks:>8}  (no RLS answer: NOT_FOUND for \
         {UNMAPPED_USER}, or RLS down)"
    );
    println!("  failed_picks          {failed_picks:>8}");
    println!(
        "cache: {total_lookups} lookups received (misses plus retries after backoff) for \
         {picks} counted picks, so at least {} picks ({:.2}%) were answered from the cache \
         without a lookup",
        picks.saturating_sub(total_lookups as u64),
        100.0 * picks.saturating_sub(total_lookups as u64) as f64 / picks.max(1) as f64
    );
    print_metrics(&recorder, &prometheus.encode());
    println!(
        "failures: {failed}{}",
        if failed == 0 {
            " (none expected: the default target covers keys RLS cannot answer)"
        } else {
            " (see above)"
        }
    );

    // Close everything.
    channel.close();
    println!(
        "\nchannel closed; RLS policy threads left: {}",
        rls_builder.thread_count()
    );
    if let Some(server) = rls.take() {
        server.shutdown(Duration::from_secs(1));
    }
    for server in backends {
        server.shutdown(Duration::from_secs(1));
    }
    println!("servers shut down");
    Ok(())
}
