//! Client-side health checks (gRFC A17) over real sockets: our channel
//! (`H2Transport`, round_robin, `healthCheckConfig`) against three grpcio servers
//! running grpc's own health service and against three of our servers with
//! `HealthService`; and grpcio's health client against our `HealthService`. The
//! grpcio tests need the peers that `cargo xtask test` installs (see
//! `lb_testkit::peers::require_peers`). Real time here: every wait and loop is
//! bounded in count and time.

use std::collections::HashSet;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use lb_core::Code;
use lb_core::channel::{CallOptions, Channel};
use lb_core::health::{self, ServingStatus};
use lb_testkit::peers::{self, GrpcServer, GrpcServerOptions};
use lb_transport::driver::{H2Transport, TransportConfig};
use lb_transport::server::Server;
use lb_transport::server::health::HealthService;

const WAIT: Duration = Duration::from_secs(20);

/// How soon after a backend turns NOT_SERVING it must stop getting new calls.
const STOP_WITHIN: Duration = Duration::from_secs(1);

/// The health-checked service name the tests configure.
const SERVICE: &str = "test.Echo";

fn channel(targets: &[String]) -> Channel {
    let transport = Arc::new(H2Transport::new(TransportConfig::default()).unwrap());
    Channel::builder(format!("ipv4:{}", targets.join(",")))
        .transport(transport)
        .default_service_config(format!(
            r#"{{"loadBalancingConfig": [{{"round_robin": {{}}}}],
                 "healthCheckConfig": {{"serviceName": "{SERVICE}"}}}}"#
        ))
        .build()
        .unwrap()
}

fn who(channel: &Channel) -> String {
    let options = CallOptions::default().with_deadline(Instant::now() + Duration::from_secs(5));
    let r = channel
        .unary("/test.Echo/Who", Vec::new(), options)
        .unwrap();
    String::from_utf8(r.message).unwrap()
}

/// Calls until every id in `ids` has answered (bounded by `WAIT`).
fn until_all_answer(channel: &Channel, ids: &[&str]) -> Duration {
    let start = Instant::now();
    let mut seen = HashSet::new();
    for _ in 0..100_000 {
        seen.insert(who(channel));
        if ids.iter().all(|id| seen.contains(*id)) {
            return start.elapsed();
        }
        assert!(start.elapsed() < WAIT, "only {seen:?} answered in {WAIT:?}");
    }
    panic!("only {seen:?} answered");
}

/// Calls without pause on another thread; once calls flow, `switch` turns backend
/// `victim` NOT_SERVING here. Returns how long after the switch began the last
/// call reached `victim` (zero if none did), and checks that calls go on for
/// `STOP_WITHIN` more after that with none reaching it.
fn time_until_no_calls(channel: &Channel, victim: &str, switch: impl FnOnce()) -> Duration {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (begun, switched) = (OnceLock::<Instant>::new(), OnceLock::new());
    let warm = AtomicUsize::new(0);
    let (last, calls, calls_after) = thread::scope(|scope| {
        let caller = scope.spawn(|| {
            let mut last_to_victim = None;
            let (mut calls, mut calls_after) = (0, 0);
            let start = Instant::now();
            for _ in 0..1_000_000 {
                let id = who(channel);
                assert!(
                    start.elapsed() < WAIT,
                    "{victim} still got calls after {WAIT:?}"
                );
                warm.fetch_add(1, Ordering::Relaxed);
                let Some(begun) = begun.get() else { continue };
                let at = begun.elapsed();
                calls += 1;
                if id == victim {
                    last_to_victim = Some(at);
                    calls_after = 0;
                } else {
                    calls_after += 1;
                }
                let quiet_since = last_to_victim.unwrap_or_default();
                if switched.get().is_some() && at > quiet_since + STOP_WITHIN && calls_after >= 20 {
                    break;
                }
            }
            (last_to_victim.unwrap_or_default(), calls, calls_after)
        });
        let deadline = Instant::now() + WAIT;
        while warm.load(Ordering::Relaxed) < 30 {
            assert!(Instant::now() < deadline, "calls did not flow");
            thread::yield_now();
        }
        let now = *begun.get_or_init(Instant::now);
        switch();
        switched.set(now.elapsed()).unwrap();
        caller.join().unwrap()
    });
    println!(
        "{victim} NOT_SERVING: the switch was confirmed {:?} after it began; the last of \
         {calls} calls to reach {victim} started {last:?} after the switch began (then \
         {calls_after} calls, none to it)",
        switched.get().unwrap()
    );
    last
}

#[test]
fn a_grpcio_backend_turning_not_serving_gets_no_new_calls_within_a_second() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let backends: Vec<GrpcServer> = ["a", "b", "c"]
        .into_iter()
        .map(|id| {
            let options = GrpcServerOptions {
                id: id.into(),
                health: true,
                ..GrpcServerOptions::default()
            };
            let server = GrpcServer::start(&env, options).unwrap();
            // grpcio's health service knows only "" until told.
            server.set_health("SERVING", SERVICE).unwrap();
            server
        })
        .collect();
    let channel = channel(&backends.iter().map(GrpcServer::target).collect::<Vec<_>>());
    until_all_answer(&channel, &["a", "b", "c"]);

    let took = time_until_no_calls(&channel, "b", || {
        backends[1].set_health("NOT_SERVING", SERVICE).unwrap();
    });
    assert!(took < STOP_WITHIN, "b got calls {took:?} after NOT_SERVING");

    backends[1].set_health("SERVING", SERVICE).unwrap();
    let back = until_all_answer(&channel, &["b"]);
    println!("b SERVING again: it answered a call {back:?} later");
    assert!(back < Duration::from_secs(5));
    // One connection each all along: health never closed one.
    channel.close();
}

/// One of our servers with the test services and, with `health`, a
/// `HealthService` where `SERVICE` is SERVING.
fn our_server(id: &str, health: Option<&HealthService>) -> Server {
    let mut builder = lb_testkit::services::mount(Server::builder(), id).workers(4);
    if let Some(health) = health {
        health.set_serving_status(SERVICE, ServingStatus::Serving);
        builder = health.mount(builder);
    }
    builder.bind("127.0.0.1:0").unwrap()
}

#[test]
fn our_client_watches_our_health_service() {
    let health: Vec<HealthService> = (0..2).map(|_| HealthService::new()).collect();
    let servers = [
        our_server("a", Some(&health[0])),
        our_server("b", Some(&health[1])),
        // No health service: Watch is UNIMPLEMENTED, so "c" counts as healthy.
        our_server("c", None),
    ];
    let targets: Vec<String> = servers.iter().map(|s| s.local_addr().to_string()).collect();
    let channel = channel(&targets);
    until_all_answer(&channel, &["a", "b", "c"]);
    for h in &health {
        assert_eq!(h.watch_count(), 1, "one Watch per connection");
    }

    let took = time_until_no_calls(&channel, "b", || {
        health[1].set_serving_status(SERVICE, ServingStatus::NotServing);
    });
    assert!(took < STOP_WITHIN, "b got calls {took:?} after NOT_SERVING");
    health[1].set_serving_status(SERVICE, ServingStatus::Serving);
    let back = until_all_answer(&channel, &["b"]);
    println!("b SERVING again (our server): it answered a call {back:?} later");

    // The whole server unhealthy through shutdown(): "a" leaves too.
    health[0].shutdown();
    let took = time_until_no_calls(&channel, "a", || {});
    assert!(took < STOP_WITHIN);
    channel.close();
    // Closing the channel cancels its Watch streams.
    let deadline = Instant::now() + WAIT;
    while health.iter().any(|h| h.watch_count() > 0) {
        assert!(
            Instant::now() < deadline,
            "Watch calls outlived the channel"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn our_health_service_answers_check_and_watch_and_ends_watches_on_shutdown() {
    let health = HealthService::new();
    let server = our_server("a", Some(&health));
    let transport = Arc::new(H2Transport::new(TransportConfig::default()).unwrap());
    let channel = Channel::builder(format!("ipv4:{}", server.local_addr()))
        .transport(transport)
        .build()
        .unwrap();
    let deadline = || CallOptions::default().with_deadline(Instant::now() + WAIT);
    let check = |service: &str| {
        channel
            .unary(
                health::CHECK_METHOD,
                health::encode_request(service),
                deadline(),
            )
            .map(|r| health::decode_response(&r.message).unwrap())
    };
    assert_eq!(check(""), Ok(ServingStatus::Serving));
    assert_eq!(check(SERVICE), Ok(ServingStatus::Serving));
    let err = check("nope").unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let err = channel
        .unary(health::CHECK_METHOD, vec![0x0a, 0x09], deadline())
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("HealthCheckRequest"), "{err}");

    // Watch an unknown service: SERVICE_UNKNOWN, then each change; repeats are not
    // sent, and a burst while the client is not reading leaves only the latest.
    let mut watch = channel
        .server_streaming(
            health::WATCH_METHOD,
            health::encode_request("later"),
            deadline(),
        )
        .unwrap();
    let mut next = || health::decode_response(&watch.next().unwrap().unwrap()).unwrap();
    assert_eq!(next(), ServingStatus::ServiceUnknown);
    health.set_serving_status("later", ServingStatus::NotServing);
    assert_eq!(next(), ServingStatus::NotServing);
    health.set_serving_status("later", ServingStatus::NotServing);
    health.set_serving_status("later", ServingStatus::Serving);
    assert_eq!(next(), ServingStatus::Serving);
    assert_eq!(health.watch_count(), 1);

    // Server shutdown ends the Watch (after the grace period; dropping is at once).
    let started = Instant::now();
    server.shutdown(Duration::from_millis(200));
    let end = watch.next();
    assert!(
        matches!(&end, Some(Err(_)) | None),
        "the Watch did not end: {end:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn grpcio_health_client_checks_and_watches_our_server() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let health = HealthService::new();
    let server = our_server("a", Some(&health));
    let target = server.local_addr().to_string();
    let run = |args: &[&str]| {
        let mut all = vec!["--target", &target];
        all.extend_from_slice(args);
        let out = peers::run_script(&env, "health_client.py", all, WAIT).unwrap();
        assert!(out.status.success(), "{}", out.stderr);
        out.stdout.lines().map(str::to_owned).collect::<Vec<_>>()
    };
    assert_eq!(run(&["--service", "", "--check"]), ["CHECK SERVING"]);
    assert_eq!(run(&["--service", SERVICE, "--check"]), ["CHECK SERVING"]);
    let lines = run(&["--service", "nope", "--check"]);
    assert!(lines[0].starts_with("ERROR NOT_FOUND"), "{lines:?}");

    // Watch in the background; switch statuses once it is open.
    let watcher = {
        let env = env.clone();
        let target = target.clone();
        thread::spawn(move || {
            let args = ["--target", &target, "--service", "svc", "--watch", "3"];
            peers::run_script(&env, "health_client.py", args, WAIT)
        })
    };
    let deadline = Instant::now() + WAIT;
    while health.watch_count() == 0 {
        assert!(Instant::now() < deadline, "grpcio's Watch never arrived");
        thread::sleep(Duration::from_millis(10));
    }
    // Real pauses, so grpcio reads each status before the next (the service sends
    // only the latest).
    thread::sleep(Duration::from_millis(300));
    health.set_serving_status("svc", ServingStatus::NotServing);
    thread::sleep(Duration::from_millis(300));
    health.set_serving_status("svc", ServingStatus::Serving);
    let out = watcher.join().unwrap().unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "WATCH SERVICE_UNKNOWN",
            "WATCH NOT_SERVING",
            "WATCH SERVING",
            "DONE"
        ]
    );
}
