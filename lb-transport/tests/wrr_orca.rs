//! `weighted_round_robin` (gRFC A58) on real loopback sockets, fed by ORCA (gRFC A51)
//! reports from three of our servers at utilization 0.2, 0.4 and 0.8 with the same
//! qps: weights go as qps / utilization, so the shares of calls must converge to 4/7,
//! 2/7 and 1/7 (each within 5 % of its expected value) within 5 s. Once with per-call
//! reports (the `endpoint-load-metrics-bin` trailer), once with out-of-band reports
//! (the `OpenRcaService/StreamCoreMetrics` stream). Measured shares and the time to
//! converge are printed. A third test checks the server's `OrcaService` alone.
//!
//! Every wait is bounded: callers stop after at most `RUN` and the watcher looks at
//! most `RUN / STEP` times.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use lb_core::channel::{CallOptions, Channel};
use lb_core::orca::OrcaLoadReport;
use lb_transport::driver::proxy::ProxyMode;
use lb_transport::driver::{H2Transport, TransportConfig};
use lb_transport::server::{Request, Response, Server};

const UTILIZATIONS: [f64; 3] = [0.2, 0.4, 0.8];
const EXPECTED: [f64; 3] = [4.0 / 7.0, 2.0 / 7.0, 1.0 / 7.0];
/// How close each share must come, relative to its expected value.
const TOLERANCE: f64 = 0.05;
/// The time allowed to converge.
const CONVERGE_WITHIN: Duration = Duration::from_secs(5);
/// The longest the callers run.
const RUN: Duration = Duration::from_secs(8);
/// The watcher's sampling step; shares are judged over `WINDOW` steps.
const STEP: Duration = Duration::from_millis(100);
const WINDOW: usize = 3;
/// How long the shares are measured again after converging.
const CONFIRM: Duration = Duration::from_secs(1);
const CALLERS: usize = 2;
const QPS: f64 = 100.0;

/// How reports reach the client.
#[derive(Clone, Copy, Debug)]
enum Mode {
    PerCall,
    OutOfBand,
}

fn report(utilization: f64) -> OrcaLoadReport {
    OrcaLoadReport {
        application_utilization: utilization,
        rps_fractional: QPS,
        ..Default::default()
    }
}

/// One backend: it counts its calls and reports `utilization`.
fn backend(mode: Mode, utilization: f64, calls: Arc<AtomicUsize>) -> Server {
    let load = report(utilization);
    let mut builder = Server::builder().unary("/test.Echo/Who", move |_: Request| {
        calls.fetch_add(1, Ordering::Relaxed);
        let response = Response::new(Vec::new());
        Ok(match mode {
            Mode::PerCall => response.with_load_report(&load),
            Mode::OutOfBand => response,
        })
    });
    if let Mode::OutOfBand = mode {
        builder = oob_service(utilization).mount(builder);
    }
    builder.bind("127.0.0.1:0").expect("bind a loopback port")
}

fn oob_service(utilization: f64) -> lb_transport::server::orca::OrcaService {
    let service = lb_transport::server::orca::OrcaService::new()
        .min_report_interval(Duration::from_millis(50));
    service.recorder().set(report(utilization));
    service
}

fn channel(targets: &[String], mode: Mode) -> Channel {
    let config = match mode {
        Mode::PerCall => {
            r#"{"loadBalancingConfig": [{"weighted_round_robin": {
            "blackoutPeriod": "0.1s", "weightUpdatePeriod": "0.1s"}}]}"#
        }
        Mode::OutOfBand => {
            r#"{"loadBalancingConfig": [{"weighted_round_robin": {
            "blackoutPeriod": "0.1s", "weightUpdatePeriod": "0.1s",
            "enableOobLoadReport": true, "oobReportingPeriod": "0.1s"}}]}"#
        }
    };
    let transport = Arc::new(
        H2Transport::new(TransportConfig {
            proxy: ProxyMode::Disabled,
            ..TransportConfig::default()
        })
        .expect("a transport"),
    );
    Channel::builder(format!("ipv4:{}", targets.join(",")))
        .transport(transport)
        .default_service_config(config)
        .build()
        .expect("a channel")
}

fn shares(counts: &[usize; 3]) -> [f64; 3] {
    let total = counts.iter().sum::<usize>().max(1) as f64;
    counts.map(|c| c as f64 / total)
}

fn close_enough(shares: &[f64; 3]) -> bool {
    shares
        .iter()
        .zip(EXPECTED)
        .all(|(s, e)| (s - e).abs() <= e * TOLERANCE)
}

fn run(mode: Mode) {
    let counters: [Arc<AtomicUsize>; 3] = Default::default();
    let servers: Vec<Server> = UTILIZATIONS
        .iter()
        .zip(&counters)
        .map(|(u, c)| backend(mode, *u, c.clone()))
        .collect();
    let targets: Vec<String> = servers.iter().map(|s| s.local_addr().to_string()).collect();
    let channel = channel(&targets, mode);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (channel, stop, failures) = (channel.clone(), stop.clone(), failures.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) && start.elapsed() < RUN {
                    let options = CallOptions::default()
                        .with_timeout(Duration::from_secs(2))
                        .with_wait_for_ready(true);
                    if channel
                        .unary("/test.Echo/Who", Vec::new(), options)
                        .is_err()
                    {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    let sample = || counters.each_ref().map(|c| c.load(Ordering::Relaxed));
    let mut history = vec![sample()];
    let mut converged: Option<(Duration, [f64; 3])> = None;
    while start.elapsed() < CONVERGE_WITHIN && converged.is_none() {
        thread::sleep(STEP);
        history.push(sample());
        if history.len() > WINDOW {
            let (now, then) = (
                history[history.len() - 1],
                history[history.len() - 1 - WINDOW],
            );
            let window = [now[0] - then[0], now[1] - then[1], now[2] - then[2]];
            let s = shares(&window);
            if window.iter().sum::<usize>() >= 300 && close_enough(&s) {
                converged = Some((start.elapsed(), s));
            }
        }
    }
    // A second, later window confirms the shares stay put.
    let before = sample();
    thread::sleep(CONFIRM);
    let after = sample();
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.join().expect("a caller panicked");
    }
    channel.close();
    for s in servers {
        s.shutdown(Duration::ZERO);
    }
    let confirm = [
        after[0] - before[0],
        after[1] - before[1],
        after[2] - before[2],
    ];
    let confirmed = shares(&confirm);
    println!(
        "{mode:?}: converged after {:?} with shares {:?}; then {:?} over {} calls \
         (expected {EXPECTED:.4?}); failed calls: {}",
        converged.map(|c| c.0),
        converged.map(|c| c.1.map(|s| (s * 10_000.0).round() / 10_000.0)),
        confirmed.map(|s| (s * 10_000.0).round() / 10_000.0),
        confirm.iter().sum::<usize>(),
        failures.load(Ordering::Relaxed),
    );
    assert!(
        converged.is_some(),
        "{mode:?}: shares did not converge within {CONVERGE_WITHIN:?}"
    );
    assert!(
        close_enough(&confirmed),
        "{mode:?}: shares drifted to {confirmed:?}"
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "{mode:?}: failed calls"
    );
}

#[test]
fn per_call_reports_converge() {
    run(Mode::PerCall);
}

#[test]
fn out_of_band_reports_converge() {
    run(Mode::OutOfBand);
}

/// The server side alone: StreamCoreMetrics sends the recorder's values as they are
/// when each interval comes round, no faster than the service's minimum, and a
/// request that does not decode fails with INVALID_ARGUMENT.
#[test]
fn oob_service_sends_latest_values_no_faster_than_its_minimum() {
    const MIN: Duration = Duration::from_millis(200);
    let service = lb_transport::server::orca::OrcaService::new().min_report_interval(MIN);
    service.recorder().set(report(0.5));
    let server = service
        .mount(Server::builder())
        .bind("127.0.0.1:0")
        .expect("bind a loopback port");
    let channel = channel(&[server.local_addr().to_string()], Mode::PerCall);
    let asked = lb_core::orca::OrcaLoadReportRequest::every(Duration::from_millis(10));
    let options = CallOptions::default().with_timeout(Duration::from_secs(5));
    let mut stream = channel
        .server_streaming(
            lb_core::orca::STREAM_CORE_METRICS_METHOD,
            asked.encode(),
            options.clone(),
        )
        .expect("the stream starts");
    let mut next = || {
        let bytes = stream.next().expect("a report").expect("not an error");
        (
            Instant::now(),
            OrcaLoadReport::decode(&bytes).expect("a report decodes"),
        )
    };
    let (t1, first) = next();
    assert_eq!(first, report(0.5));
    service
        .recorder()
        .update(|r| r.application_utilization = 0.9);
    let (t2, second) = next();
    assert_eq!(second.application_utilization, 0.9, "the latest values");
    assert!(
        t2 - t1 >= MIN - Duration::from_millis(20),
        "reports {:?} apart, the minimum is {MIN:?}",
        t2 - t1
    );
    drop(stream);
    let bad = channel
        .server_streaming(
            lb_core::orca::STREAM_CORE_METRICS_METHOD,
            vec![0x0b],
            options,
        )
        .expect("the stream starts")
        .next()
        .expect("an answer");
    assert_eq!(bad.unwrap_err().code(), lb_core::Code::InvalidArgument);
    channel.close();
    server.shutdown(Duration::ZERO);
}
