//! `cargo xtask demo` (second part): backends going bad mid-run while callers keep
//! going, on real loopback sockets, with nothing but this project's code.
//!
//! - Three of our gRPC servers, `alpha`, `beta` and `gamma`, answer
//!   `/demo.Echo/Who` with their names and serve the standard health service.
//! - One `Channel` (our HTTP/2 transport) runs `outlier_detection_experimental`
//!   around `round_robin`, health checks (`healthCheckConfig`), and a
//!   `retryPolicy` on UNAVAILABLE with `retryThrottling`. Four threads call it
//!   without pause for four phases of 1.5 s:
//!   1. all healthy;
//!   2. `gamma` fails every other call with UNAVAILABLE: retries hide the
//!      failures, and outlier detection ejects `gamma`;
//!   3. `beta` reports NOT_SERVING: health checking takes it out of the rotation;
//!   4. `beta` is SERVING again, and `alpha` is shut down abruptly with calls in
//!      flight: those are retried on `beta`.
//! - While it runs, live progress lines (indicatif, when stderr is a terminal;
//!   plain lines every 0.5 s otherwise) show the calls so far, the attempts and
//!   their statuses, and the subchannels' connections, read from the channel's
//!   metrics recorder (`lb_core::metrics`, gRPC's instruments), and the calls each
//!   backend served, from each server's own recorder (`grpc.server.call.started`).
//! - The summary shows which backend answered the calls in each phase, latency
//!   percentiles, retries, a table of the metrics recorded, and the calls that
//!   failed: none, if all went well.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use lb_core::LbPolicyRegistry;
use lb_core::channel::{CallOptions, Channel};
use lb_core::health::ServingStatus;
use lb_core::metrics::InMemoryRecorder;
use lb_core::{Code, Status};
use lb_transport::admin::AdminServer;
use lb_transport::driver::{H2Transport, TransportConfig};
use lb_transport::server::health::HealthService;
use lb_transport::server::{Request, Response, Server};
use parking_lot::Mutex;

const METHOD: &str = "/demo.Echo/Who";
const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];
const THREADS: usize = 4;
const PHASE: Duration = Duration::from_millis(1500);
const PHASES: [&str; 4] = [
    "all healthy",
    "gamma fails half",
    "beta NOT_SERVING",
    "alpha killed, beta back",
];

const SERVICE_CONFIG: &str = r#"{
    "loadBalancingConfig": [{"outlier_detection_experimental": {
        "interval": "0.25s", "baseEjectionTime": "30s", "maxEjectionPercent": 34,
        "failurePercentageEjection": {"threshold": 30, "enforcementPercentage": 100,
                                      "minimumHosts": 3, "requestVolume": 20},
        "childPolicy": [{"round_robin": {}}]}}],
    "healthCheckConfig": {"serviceName": "demo.Echo"},
    "methodConfig": [{"name": [{"service": "demo.Echo"}], "timeout": "5s",
        "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.01s",
            "maxBackoff": "0.1s", "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"]}}],
    "retryThrottling": {"maxTokens": 100, "tokenRatio": 0.5}
}"#;

/// One backend: a server, its health, and whether it fails every other call.
struct Backend {
    server: Option<Server>,
    health: HealthService,
    failing: Arc<AtomicBool>,
    /// The server's metrics (gRFC A66's `grpc.server.call.*`).
    recorder: Arc<InMemoryRecorder>,
}

fn start_backend(name: &'static str) -> std::io::Result<Backend> {
    let health = HealthService::new();
    health.set_serving_status("demo.Echo", ServingStatus::Serving);
    let failing = Arc::new(AtomicBool::new(false));
    let (f, n) = (failing.clone(), AtomicUsize::new(0));
    let builder = Server::builder()
        .unary(METHOD, move |_: Request| {
            if f.load(Ordering::Relaxed) && n.fetch_add(1, Ordering::Relaxed) % 2 == 0 {
                return Err(Status::unavailable(format!("{name} is failing")));
            }
            Ok(Response::new(name.as_bytes().to_vec()))
        })
        .workers(8);
    let recorder = Arc::new(InMemoryRecorder::new());
    let server = health
        .mount(builder)
        .metrics_recorder(recorder.clone())
        .bind("127.0.0.1:0")?;
    Ok(Backend {
        server: Some(server),
        health,
        failing,
        recorder,
    })
}

/// What the callers saw, per phase.
#[derive(Default)]
struct Tally {
    /// [phase][backend] calls answered.
    answered: [[usize; 3]; 4],
    /// [phase][backend] when the last answer came, after the phase began.
    last: [[Option<Duration>; 3]; 4],
    failed: [Vec<Status>; 4],
    latencies: [Vec<Duration>; 4],
}

/// The live lines: time and calls, attempts by status, connections, and the calls
/// each backend served. From the channel's recorder and the servers'.
fn live_text(recorder: &InMemoryRecorder, phase: usize, backends: &[Backend]) -> [String; 3] {
    let calls = recorder.histogram_count("grpc.client.call.duration", &[]);
    let ok = recorder.histogram_count("grpc.client.call.duration", &[("grpc.status", "OK")]);
    let attempts = recorder.counter_total("grpc.client.attempt.started");
    let by_status: Vec<String> = recorder
        .histogram_count_by("grpc.client.attempt.duration", "grpc.status")
        .into_iter()
        .map(|(status, n)| format!("{status} {n}"))
        .collect();
    let open = recorder
        .gauge_value("grpc.subchannel.open_connections")
        .unwrap_or(0);
    let dropped = recorder.counter_total("grpc.subchannel.disconnections");
    let served: Vec<String> = NAMES
        .iter()
        .zip(backends)
        .map(|(name, b)| {
            let method = [("grpc.method", &METHOD[1..])];
            let n = b.recorder.counter("grpc.server.call.started", &method);
            format!("{name} {n}")
        })
        .collect();
    [
        format!(
            "phase {}/4 ({}): {calls} calls, {} failed",
            phase + 1,
            PHASES[phase],
            calls.saturating_sub(ok)
        ),
        format!(
            "{attempts} attempts ({} more than calls): {}",
            attempts.saturating_sub(calls),
            by_status.join(" · ")
        ),
        format!(
            "connections open {open}, dropped {dropped} · calls served: {}",
            served.join(" · ")
        ),
    ]
}

/// Serves the admin page (every channel's policy tree, subchannels and events from
/// channelz) on a free loopback port.
fn admin_page() -> std::io::Result<AdminServer> {
    AdminServer::bind("127.0.0.1:0")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut backends = NAMES
        .iter()
        .map(|n| start_backend(n))
        .collect::<Result<Vec<_>, _>>()?;
    let targets: Vec<String> = backends
        .iter()
        .map(|b| b.server.as_ref().expect("running").local_addr().to_string())
        .collect();
    for (name, addr) in NAMES.iter().zip(&targets) {
        println!("{name:<6} listening on {addr}");
    }
    let admin = admin_page()?;
    println!(
        "admin page: {} (open it in a browser while the demo runs)",
        admin.url()
    );
    let mut registry = LbPolicyRegistry::with_builtins();
    lb_group::register(&mut registry);
    let recorder = Arc::new(InMemoryRecorder::new());
    let channel = Channel::builder(format!("ipv4:{}", targets.join(",")))
        .transport(Arc::new(H2Transport::new(TransportConfig::default())?))
        .lb_policy_registry(registry)
        .default_service_config(SERVICE_CONFIG)
        .metrics_recorder(recorder.clone())
        .build()?;
    println!(
        "channel: outlier detection around round_robin, health checks, retries on UNAVAILABLE"
    );

    let phase = Arc::new(AtomicU8::new(0));
    let phase_start = Arc::new(Mutex::new([Instant::now(); 4]));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (channel, phase, stop, tally, phase_start) = (
                channel.clone(),
                phase.clone(),
                stop.clone(),
                tally.clone(),
                phase_start.clone(),
            );
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let p = usize::from(phase.load(Ordering::Relaxed));
                    let started = Instant::now();
                    let options = CallOptions::default().with_wait_for_ready(true);
                    let result = channel.unary(METHOD, Vec::new(), options);
                    let took = started.elapsed();
                    let mut t = tally.lock();
                    t.latencies[p].push(took);
                    match result {
                        Ok(r) => {
                            if let Some(i) = NAMES.iter().position(|n| n.as_bytes() == r.message) {
                                t.answered[p][i] += 1;
                                let since = phase_start.lock()[p];
                                t.last[p][i] =
                                    Some(Instant::now().saturating_duration_since(since));
                            }
                        }
                        Err(status) => t.failed[p].push(status),
                    }
                }
            })
        })
        .collect();

    let run_start = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let multi = MultiProgress::new();
    let top = ProgressBar::new((PHASE * PHASES.len() as u32).as_millis() as u64);
    top.set_style(
        ProgressStyle::with_template("{spinner} {bar:24.cyan/blue} {msg}")?.progress_chars("=> "),
    );
    let plain = ProgressStyle::with_template("  {msg}")?;
    let lines = [
        multi.add(top),
        multi.add(ProgressBar::new(1).with_style(plain.clone())),
        multi.add(ProgressBar::new(1).with_style(plain)),
    ];
    let mut next_plain = Duration::ZERO;
    for (i, name) in PHASES.iter().enumerate() {
        phase_start.lock()[i] = Instant::now();
        phase.store(i as u8, Ordering::Relaxed);
        match i {
            1 => backends[2].failing.store(true, Ordering::Relaxed),
            2 => backends[1]
                .health
                .set_serving_status("demo.Echo", ServingStatus::NotServing),
            3 => {
                backends[1]
                    .health
                    .set_serving_status("demo.Echo", ServingStatus::Serving);
                // Give beta's health stream a moment, then pull alpha's plug.
                thread::sleep(Duration::from_millis(300));
                if let Some(server) = backends[0].server.take() {
                    server.shutdown(Duration::ZERO);
                }
            }
            _ => {}
        }
        let event = format!(
            "{:>5.1} s  phase {}: {name}",
            run_start.elapsed().as_secs_f64(),
            i + 1
        );
        if terminal {
            multi.println(event)?;
        } else {
            println!("{event}");
        }
        let phase_end = run_start + PHASE * (i as u32 + 1);
        while Instant::now() < phase_end {
            thread::sleep(Duration::from_millis(100).min(phase_end - Instant::now()));
            let text = live_text(&recorder, i, &backends);
            let elapsed = run_start.elapsed();
            if terminal {
                lines[0].set_position(elapsed.as_millis() as u64);
                for (line, text) in lines.iter().zip(text) {
                    line.set_message(text);
                }
            } else if elapsed >= next_plain {
                next_plain = elapsed + Duration::from_millis(500);
                println!(
                    "{:>5.1} s  {}",
                    elapsed.as_secs_f64(),
                    text.join("\n         ")
                );
            }
        }
    }
    for line in &lines {
        line.finish_and_clear();
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().map_err(|_| "a caller panicked")?;
    }
    let stats = channel.retry_stats();
    channel.close();

    let t = tally.lock();
    println!();
    println!(
        "{:<26} {:>7} {:>7} {:>7} {:>7} {:>9} {:>9}",
        "phase", "alpha", "beta", "gamma", "failed", "p50", "p99"
    );
    let mut total = 0;
    let mut failed = 0;
    for (i, name) in PHASES.iter().enumerate() {
        let mut lat = t.latencies[i].clone();
        lat.sort();
        let at = |q: f64| {
            lat.get(((lat.len().max(1) - 1) as f64 * q) as usize)
                .map_or("-".to_string(), |d| format!("{:.2?}", d))
        };
        let [a, b, g] = t.answered[i];
        println!(
            "{:<26} {a:>7} {b:>7} {g:>7} {:>7} {:>9} {:>9}",
            format!("{}. {name}", i + 1),
            t.failed[i].len(),
            at(0.5),
            at(0.99)
        );
        total += t.latencies[i].len();
        failed += t.failed[i].len();
    }
    println!();
    let last = |phase: usize, backend: usize| {
        t.last[phase][backend].map_or("never".to_string(), |d| format!("{d:.1?} in"))
    };
    println!(
        "gamma fails half its calls: its last answer came {} (outlier detection ejected it)",
        last(1, 2)
    );
    println!(
        "beta NOT_SERVING: its last answer came {} (health checking)",
        last(2, 1)
    );
    println!(
        "alpha killed 300 ms in: its last answer came {}; calls it had in flight were retried",
        last(3, 0)
    );
    println!(
        "retries {}, transparent retries {}, throttled {}",
        stats.retries, stats.transparent_retries, stats.throttled
    );
    let mut codes: Vec<(Code, String)> = t
        .failed
        .iter()
        .flatten()
        .map(|s| (s.code(), s.message().to_owned()))
        .collect();
    codes.dedup();
    for (code, message) in codes.iter().take(5) {
        println!("  failed: {code:?} {message}");
    }
    println!("calls: {total}, failed: {failed}");
    println!("\nmetrics the channel recorded (lb_core::metrics, gRPC's instrument names):");
    for line in recorder.table(&["grpc.target"]).lines() {
        println!("  {line}");
    }
    for b in &mut backends {
        if let Some(server) = b.server.take() {
            server.shutdown(Duration::from_millis(100));
        }
    }
    println!("servers shut down");
    if failed > 0 {
        return Err(format!("{failed} of {total} calls failed").into());
    }
    Ok(())
}
