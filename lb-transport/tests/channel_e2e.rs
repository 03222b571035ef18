//! The whole client stack end to end: a `Channel` with our HTTP/2 transport against
//! three grpcio (gRPC C-core) backends on loopback.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use lb_core::Code;
use lb_core::channel::{CallOptions, Channel};
use lb_testkit::peers::{self, GrpcServer, GrpcServerOptions, PeerEnv};
use lb_transport::driver::{H2Transport, TransportConfig};

const WAIT: Duration = Duration::from_secs(20);

fn backends(env: &PeerEnv, n: usize) -> Vec<GrpcServer> {
    (0..n)
        .map(|i| {
            let options = GrpcServerOptions {
                id: format!("backend-{i}"),
                ..GrpcServerOptions::default()
            };
            GrpcServer::start(env, options).unwrap()
        })
        .collect()
}

fn channel(backends: &[GrpcServer], policy: &str) -> Channel {
    let list: Vec<String> = backends.iter().map(GrpcServer::target).collect();
    let transport = Arc::new(H2Transport::new(TransportConfig::default()).unwrap());
    Channel::builder(format!("ipv4:{}", list.join(",")))
        .transport(transport)
        .default_service_config(format!(
            r#"{{"loadBalancingConfig": [{{"{policy}": {{}}}}]}}"#
        ))
        .build()
        .unwrap()
}

fn who(channel: &Channel, options: CallOptions) -> Result<String, lb_core::Status> {
    let r = channel.unary("/test.Echo/Who", Vec::new(), options)?;
    Ok(String::from_utf8(r.message).unwrap())
}

/// Calls until every backend has answered once (bounded), so all are READY.
fn warm_up(channel: &Channel, n: usize) {
    let deadline = Instant::now() + WAIT;
    let mut seen = std::collections::HashSet::new();
    while seen.len() < n {
        assert!(Instant::now() < deadline, "only {seen:?} became ready");
        if let Ok(id) = who(channel, CallOptions::default().with_timeout(WAIT)) {
            seen.insert(id);
        }
    }
}

#[test]
fn round_robin_spreads_calls_evenly() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let servers = backends(&env, 3);
    let channel = channel(&servers, "round_robin");
    warm_up(&channel, 3);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        let id = who(&channel, CallOptions::default().with_timeout(WAIT)).unwrap();
        *counts.entry(id).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (id, n) in &counts {
        assert!((90..=110).contains(n), "{id} got {n} of 300: {counts:?}");
    }
}

#[test]
fn pick_first_stays_on_one_backend() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let servers = backends(&env, 3);
    let channel = channel(&servers, "pick_first");
    let first = who(&channel, CallOptions::default().with_timeout(WAIT)).unwrap();
    for _ in 0..100 {
        assert_eq!(
            who(&channel, CallOptions::default().with_timeout(WAIT)).unwrap(),
            first
        );
    }
    assert_eq!(first, "backend-0", "pick_first takes the first address");
}

/// What one caller saw: successes, failure codes, successes per backend.
type CallerReport = (usize, Vec<Code>, HashMap<String, usize>);

/// Runs `threads` callers doing wait-for-ready calls until `stop`.
fn callers(
    channel: &Channel,
    threads: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<thread::JoinHandle<CallerReport>> {
    (0..threads)
        .map(|_| {
            let channel = channel.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let (mut ok, mut failed, mut by) = (0, Vec::new(), HashMap::new());
                for _ in 0..100_000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let options = CallOptions::default()
                        .with_timeout(WAIT)
                        .with_wait_for_ready(true);
                    match who(&channel, options) {
                        Ok(id) => {
                            ok += 1;
                            *by.entry(id).or_insert(0) += 1;
                        }
                        Err(s) => failed.push(s.code()),
                    }
                }
                (ok, failed, by)
            })
        })
        .collect()
}

#[test]
fn a_backend_stopped_mid_run_moves_calls_elsewhere_and_rejoins_after_restart() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let mut servers = backends(&env, 3);
    let channel = channel(&servers, "round_robin");
    warm_up(&channel, 3);
    let stop = Arc::new(AtomicBool::new(false));
    let workers = callers(&channel, 4, &stop);
    thread::sleep(Duration::from_millis(300));
    // Graceful stop: GOAWAY, in-flight calls finish, later streams are refused
    // before processing and retried elsewhere.
    servers[1].stop_graceful().unwrap();
    thread::sleep(Duration::from_millis(500));
    servers[1].restart().unwrap();
    // The restarted backend rejoins once its subchannel's backoff ends (1 s, 1.6 s…).
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "backend-1 never rejoined");
        if who(&channel, CallOptions::default().with_timeout(WAIT)).as_deref() == Ok("backend-1") {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    // No call fails because of the client stack: streams the server refuses (above
    // its GOAWAY) are retried elsewhere. What gRPC C-core itself does is outside our
    // control: when its shutdown starts it answers CANCELLED to calls it has received
    // but not yet given to a handler (seen in about 4 runs in 10, one call at most),
    // and a call the server answered cannot be retried safely.
    let mut total = 0;
    for w in workers {
        let (ok, failed, _) = w.join().unwrap();
        assert!(
            failed.len() <= 1 && failed.iter().all(|c| *c == Code::Cancelled),
            "wait-for-ready calls failed: {failed:?}"
        );
        total += ok;
    }
    assert!(total > 100, "only {total} calls ran");
}

#[test]
fn a_backend_killed_mid_run_fails_only_calls_it_had_in_flight() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let mut servers = backends(&env, 3);
    let channel = channel(&servers, "round_robin");
    warm_up(&channel, 3);
    let stop = Arc::new(AtomicBool::new(false));
    let workers = callers(&channel, 4, &stop);
    thread::sleep(Duration::from_millis(300));
    // SIGKILL: calls the backend had accepted are lost with it (gRPC fails them too);
    // nothing else may fail.
    servers[2].kill();
    thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::SeqCst);
    let mut after_kill: HashMap<String, usize> = HashMap::new();
    for w in workers {
        let (_, failed, by) = w.join().unwrap();
        assert!(
            failed.len() <= 1,
            "a thread lost more than its one call in flight: {failed:?}"
        );
        assert!(failed.iter().all(|c| *c == Code::Unavailable), "{failed:?}");
        for (id, n) in by {
            *after_kill.entry(id).or_default() += n;
        }
    }
    // Calls kept flowing to the two live backends.
    for id in ["backend-0", "backend-1"] {
        assert!(
            after_kill.get(id).copied().unwrap_or(0) > 10,
            "{after_kill:?}"
        );
    }
    for _ in 0..20 {
        let id = who(&channel, CallOptions::default().with_timeout(WAIT)).unwrap();
        assert_ne!(id, "backend-2");
    }
}
