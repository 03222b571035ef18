//! Client-side health checks (gRFC A17) on the in-memory transport with a manual
//! clock: each backend is a streaming server that answers `/test.Echo/Who` with its
//! address and `grpc.health.v1.Health/Watch` from a status the test sets. The test
//! waits (bounded by `WAIT`) until a backend has sent what it was told, then for the
//! channel with `settle`; backoffs pass by moving the clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lb_core::channel::Channel;
use lb_core::health::{self, ServingStatus};
use lb_core::{Code, ConnectivityState as S, Metadata, Status};
use lb_testkit::ManualResolver;
use parking_lot::{Condvar, Mutex};

mod util;
use util::{Env, WAIT};

const RR_HEALTH: &str = r#"{"loadBalancingConfig": [{"round_robin": {}}],
                            "healthCheckConfig": {"serviceName": "echo"}}"#;

/// What one backend's health service does.
#[derive(Default)]
struct Script {
    status: ServingStatus,
    /// Bumped by every change the test makes.
    version: u64,
    /// The version each watch (numbered from 1) has sent last.
    sent: HashMap<usize, u64>,
    /// The service each watch asked for, in order.
    watches: Vec<String>,
    /// Watches send nothing while this is set.
    hold: bool,
    /// Watch `n` ends with this status (after sending what it had to).
    end: Option<(usize, Status)>,
    /// This many next watches fail at once with UNAVAILABLE.
    fail_next: usize,
    /// This many next watches send bytes that are no HealthCheckResponse.
    garbage_next: usize,
    unimplemented: bool,
    calls: usize,
}

/// One in-memory backend with a scriptable health service.
#[derive(Clone)]
struct Backend {
    address: &'static str,
    script: Arc<(Mutex<Script>, Condvar)>,
}

impl Backend {
    fn serve(env: &Env, address: &'static str, status: ServingStatus) -> Self {
        let backend = Self {
            address,
            script: Arc::new((
                Mutex::new(Script {
                    status,
                    ..Script::default()
                }),
                Condvar::new(),
            )),
        };
        let me = backend.clone();
        env.transport.add_stream_server(address, move |call| {
            let request = call.recv().unwrap_or_default();
            if &*call.head().method == health::WATCH_METHOD {
                return me.watch(call, &request);
            }
            me.edit(|s| s.calls += 1);
            call.send(me.address.as_bytes().to_vec())?;
            Ok(Metadata::new())
        });
        backend
    }

    /// Serves one Watch: the current status, then every change, until told to end.
    fn watch(
        &self,
        call: &mut lb_testkit::ServerStream,
        request: &[u8],
    ) -> Result<Metadata, Status> {
        let service =
            health::decode_request(request).map_err(|e| Status::internal(e.to_string()))?;
        let (lock, changed) = &*self.script;
        let mut script = lock.lock();
        script.watches.push(service);
        changed.notify_all();
        let me = script.watches.len();
        if script.unimplemented {
            return Err(Status::new(Code::Unimplemented, "no health service"));
        }
        if script.fail_next > 0 {
            script.fail_next -= 1;
            return Err(Status::unavailable("health service broken"));
        }
        let garbage = script.garbage_next > 0;
        script.garbage_next = script.garbage_next.saturating_sub(1);
        let mut sent = None;
        loop {
            if sent != Some(script.version) && !script.hold {
                let version = script.version;
                let message = if garbage {
                    vec![0x08]
                } else {
                    health::encode_response(script.status)
                };
                drop(script);
                // The in-memory transport hands the message to the client inline.
                let result = call.send(message);
                script = lock.lock();
                sent = Some(version);
                script.sent.insert(me, version);
                changed.notify_all();
                result?;
            }
            if let Some((n, status)) = &script.end {
                if *n == me {
                    return Err(status.clone());
                }
            }
            if call.is_cancelled() {
                return Err(Status::cancelled("client went away"));
            }
            // Wakes on changes; the timeout only notices a cancelled call.
            changed.wait_for(&mut script, Duration::from_millis(20));
        }
    }

    fn edit(&self, f: impl FnOnce(&mut Script)) {
        f(&mut self.script.0.lock());
        self.script.1.notify_all();
    }

    /// Sets the status and waits until the latest watch has sent it.
    fn set(&self, status: ServingStatus) {
        let mut want = 0;
        self.edit(|s| {
            s.status = status;
            s.version += 1;
            want = s.version;
        });
        self.wait_until(|s| s.sent.get(&s.watches.len()) == Some(&want));
    }

    /// Waits until watch `n` has sent its first response.
    fn wait_for_watch(&self, n: usize) {
        self.wait_until(|s| s.sent.contains_key(&n));
    }

    /// Waits until `n` watches were opened.
    fn wait_for_opened(&self, n: usize) {
        self.wait_until(|s| s.watches.len() >= n);
    }

    fn wait_until(&self, done: impl Fn(&Script) -> bool) {
        let (lock, changed) = &*self.script;
        let mut script = lock.lock();
        let deadline = std::time::Instant::now() + WAIT;
        while !done(&script) {
            assert!(
                !changed.wait_until(&mut script, deadline).timed_out(),
                "{}: still waiting after {WAIT:?}; watches {:?}",
                self.address,
                script.watches
            );
        }
    }

    /// Checks that watch `n` opens after the clock moves `not_yet_ms` and then
    /// `then_ms` more (not before), and that the channel has handled its answer.
    fn reopens_after(&self, env: &Env, channel: &Channel, not_yet_ms: u64, then_ms: u64, n: usize) {
        env.advance(channel, Duration::from_millis(not_yet_ms));
        assert_eq!(self.watches().len(), n - 1, "re-opened too early");
        env.advance(channel, Duration::from_millis(then_ms));
        self.wait_for_watch(n);
        assert!(channel.settle());
    }

    fn watches(&self) -> Vec<String> {
        self.script.0.lock().watches.clone()
    }

    fn calls(&self) -> usize {
        self.script.0.lock().calls
    }
}

/// Waits (bounded by `WAIT` of the channel's clock, which the test does not move)
/// until the channel is in `want`.
fn await_state(channel: &Channel, env: &Env, want: S) {
    loop {
        let now = channel.state(false);
        if now == want {
            return;
        }
        assert!(
            channel.wait_for_state_change(now, env.clock.now() + WAIT),
            "stuck in {now:?}, want {want:?}"
        );
    }
}

/// A channel over `addresses` with `config` from the resolver, connecting.
fn channel_with(env: &Env, addresses: &[&str], config: &str) -> (Channel, ManualResolver) {
    let (builder, resolver) = env.resolved_builder();
    let channel = builder.build().unwrap();
    resolver.push_with_config(addresses, config);
    channel.state(true);
    (channel, resolver)
}

fn who(channel: &Channel, env: &Env) -> Result<String, Status> {
    channel
        .unary(
            "/test.Echo/Who",
            b"hi".to_vec(),
            env.deadline_in(Duration::from_secs(5)),
        )
        .map(|r| String::from_utf8(r.message).unwrap())
}

fn count_calls(channel: &Channel, env: &Env, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        *seen.entry(who(channel, env).unwrap()).or_insert(0) += 1;
    }
    seen
}

/// Three backends with the given statuses behind round_robin with health checks.
fn three(env: &Env, statuses: [ServingStatus; 3]) -> (Channel, ManualResolver, Vec<Backend>) {
    let backends: Vec<_> = ["a:1", "b:1", "c:1"]
        .into_iter()
        .zip(statuses)
        .map(|(a, s)| Backend::serve(env, a, s))
        .collect();
    let (channel, resolver) = channel_with(env, &["a:1", "b:1", "c:1"], RR_HEALTH);
    for b in &backends {
        b.wait_for_watch(1);
    }
    assert!(channel.settle());
    (channel, resolver, backends)
}

#[test]
fn serving_backends_are_picked_and_not_serving_ones_get_no_calls() {
    use ServingStatus::*;
    let env = Env::new();
    let (channel, _resolver, backends) = three(&env, [Serving, NotServing, Serving]);
    assert_eq!(channel.state(false), S::Ready);
    for b in &backends {
        assert_eq!(
            b.watches(),
            ["echo"],
            "{}: one Watch for the configured service",
            b.address
        );
    }
    let seen = count_calls(&channel, &env, 100);
    assert_eq!(seen.get("b:1"), None, "NOT_SERVING b:1 got calls: {seen:?}");
    assert_eq!(seen["a:1"] + seen["c:1"], 100);
    assert_eq!(backends[1].calls(), 0);

    // b:1 turns SERVING: it is picked again; then a:1 turns NOT_SERVING.
    backends[1].set(Serving);
    assert!(channel.settle());
    let seen = count_calls(&channel, &env, 99);
    assert_eq!(
        (seen["a:1"], seen["b:1"], seen["c:1"]),
        (33, 33, 33),
        "{seen:?}"
    );
    backends[0].set(NotServing);
    assert!(channel.settle());
    let seen = count_calls(&channel, &env, 100);
    assert_eq!(seen.get("a:1"), None, "{seen:?}");
    // The connections stayed up the whole time: one each.
    for b in &backends {
        assert_eq!(env.transport.connect_count(b.address), 1);
    }
}

#[test]
fn every_backend_unhealthy_fails_fast_calls_with_the_health_state() {
    use ServingStatus::*;
    let env = Env::new();
    let (channel, _resolver, backends) = three(&env, [NotServing, ServiceUnknown, Unknown]);
    assert_eq!(channel.state(false), S::TransientFailure);
    let err = who(&channel, &env).unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(
        ["NOT_SERVING", "SERVICE_UNKNOWN", "UNKNOWN"]
            .iter()
            .any(|s| err.message().contains(s)),
        "{err}"
    );
    assert!(err.message().contains("health check failed"), "{err}");
    backends[2].set(Serving);
    assert!(channel.settle());
    assert_eq!(channel.state(false), S::Ready);
    assert_eq!(count_calls(&channel, &env, 5)["c:1"], 5);
}

#[test]
fn the_subchannel_is_connecting_until_the_first_response() {
    let env = Env::new();
    let a = Backend::serve(&env, "a:1", ServingStatus::Serving);
    a.edit(|s| s.hold = true);
    let (channel, _resolver) = channel_with(&env, &["a:1"], RR_HEALTH);
    a.wait_for_opened(1);
    assert!(channel.settle());
    assert_eq!(
        channel.state(false),
        S::Connecting,
        "connected, no response yet"
    );
    assert_eq!(env.transport.connect_count("a:1"), 1);
    a.edit(|s| s.hold = false);
    a.wait_for_watch(1);
    assert!(channel.settle());
    assert_eq!(channel.state(false), S::Ready);
    assert_eq!(who(&channel, &env).unwrap(), "a:1");
}

/// Collects the error records logged in this test binary.
struct Errors(Mutex<Vec<String>>);

impl log::Log for Errors {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Error
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            self.0.lock().push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

static ERRORS: Errors = Errors(Mutex::new(Vec::new()));

#[test]
fn unimplemented_means_healthy_and_is_not_retried() {
    let _ = log::set_logger(&ERRORS);
    log::set_max_level(log::LevelFilter::Error);
    let env = Env::new();
    let a = Backend::serve(&env, "a:1", ServingStatus::NotServing);
    a.edit(|s| s.unimplemented = true);
    let (channel, _resolver) = channel_with(&env, &["a:1"], RR_HEALTH);
    await_state(&channel, &env, S::Ready);
    assert_eq!(who(&channel, &env).unwrap(), "a:1");
    env.advance(&channel, Duration::from_secs(300));
    assert_eq!(a.watches().len(), 1, "never re-opened");
    assert_eq!(who(&channel, &env).unwrap(), "a:1");
    let logged: Vec<String> = ERRORS
        .0
        .lock()
        .iter()
        .filter(|e| e.contains("does not implement"))
        .cloned()
        .collect();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(logged[0].contains("a:1") && logged[0].contains(health::WATCH_METHOD));
}

#[test]
fn a_failed_watch_is_transient_failure_and_reopens_after_the_backoff() {
    let env = Env::new();
    let a = Backend::serve(&env, "a:1", ServingStatus::Serving);
    // The first watch ends with UNAVAILABLE, the second sends garbage.
    a.edit(|s| {
        s.fail_next = 1;
        s.garbage_next = 1;
    });
    let (channel, _resolver) = channel_with(&env, &["a:1"], RR_HEALTH);
    await_state(&channel, &env, S::TransientFailure);
    let err = who(&channel, &env).unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("health check stream"), "{err}");
    assert!(err.message().contains("health service broken"), "{err}");
    // The first retry waits exactly the initial backoff, 1 s.
    a.reopens_after(&env, &channel, 999, 1, 2);
    assert_eq!(
        channel.state(false),
        S::TransientFailure,
        "garbage: failed again"
    );
    let err = who(&channel, &env).unwrap_err();
    assert!(err.message().contains("bad HealthCheckResponse"), "{err}");
    // The second waits 1.6 s ±20 %.
    a.reopens_after(&env, &channel, 1270, 700, 3);
    assert_eq!(channel.state(false), S::Ready);
    assert_eq!(who(&channel, &env).unwrap(), "a:1");
    assert_eq!(
        env.transport.connect_count("a:1"),
        1,
        "the connection stayed up"
    );
}

#[test]
fn a_watch_that_ends_after_a_response_reopens_at_once() {
    let env = Env::new();
    let a = Backend::serve(&env, "a:1", ServingStatus::Serving);
    let (channel, _resolver) = channel_with(&env, &["a:1"], RR_HEALTH);
    a.wait_for_watch(1);
    assert!(channel.settle());
    assert_eq!(who(&channel, &env).unwrap(), "a:1");
    a.edit(|s| s.end = Some((1, Status::unavailable("health service restarting"))));
    // No clock move: the second watch opens at once and answers.
    a.wait_for_watch(2);
    assert!(channel.settle());
    assert_eq!(channel.state(false), S::Ready);
    assert_eq!(who(&channel, &env).unwrap(), "a:1");
    assert_eq!(env.transport.connect_count("a:1"), 1);
}

#[test]
fn pick_first_honours_health_too() {
    let env = Env::new();
    let a = Backend::serve(&env, "a:1", ServingStatus::Serving);
    let (channel, _resolver) = channel_with(
        &env,
        &["a:1"],
        r#"{"healthCheckConfig": {"serviceName": ""}}"#,
    );
    a.wait_for_watch(1);
    assert!(channel.settle());
    assert_eq!(a.watches(), [""]);
    assert_eq!(who(&channel, &env).unwrap(), "a:1");
    a.set(ServingStatus::NotServing);
    assert!(channel.settle());
    assert_eq!(channel.state(false), S::TransientFailure);
    let err = who(&channel, &env).unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("NOT_SERVING"), "{err}");
    a.set(ServingStatus::Serving);
    assert!(channel.settle());
    assert_eq!(who(&channel, &env).unwrap(), "a:1");
    assert_eq!(a.calls(), 2);
}

#[test]
fn no_watch_without_health_check_config_or_when_disabled() {
    for (config, disabled) in [
        (r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#, false),
        (RR_HEALTH, true),
    ] {
        let env = Env::new();
        let a = Backend::serve(&env, "a:1", ServingStatus::NotServing);
        let (builder, resolver) = env.resolved_builder();
        let channel = builder.disable_health_check(disabled).build().unwrap();
        resolver.push_with_config(&["a:1"], config);
        assert_eq!(
            who(&channel, &env).unwrap(),
            "a:1",
            "NOT_SERVING is not asked"
        );
        env.advance(&channel, Duration::from_secs(5));
        assert!(a.watches().is_empty(), "{config} disabled={disabled}");
    }
}

#[test]
fn service_config_updates_reapply_to_ready_subchannels() {
    use ServingStatus::*;
    let env = Env::new();
    let (channel, resolver, backends) = three(&env, [Serving, NotServing, Serving]);
    assert_eq!(count_calls(&channel, &env, 10).get("b:1"), None);
    // Without healthCheckConfig, b:1 is READY again and its watch is cancelled.
    resolver.push_with_config(
        &["a:1", "b:1", "c:1"],
        r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#,
    );
    assert!(channel.settle());
    assert_eq!(count_calls(&channel, &env, 9)["b:1"], 3);
    // Back on, for another service: every READY subchannel opens a new watch.
    resolver.push_with_config(
        &["a:1", "b:1", "c:1"],
        r#"{"loadBalancingConfig": [{"round_robin": {}}],
            "healthCheckConfig": {"serviceName": "other"}}"#,
    );
    for b in &backends {
        b.wait_for_watch(2);
        assert_eq!(b.watches(), ["echo", "other"]);
    }
    assert!(channel.settle());
    assert_eq!(count_calls(&channel, &env, 10).get("b:1"), None);
    for b in &backends {
        assert_eq!(env.transport.connect_count(b.address), 1);
    }
}

#[test]
fn a_watch_ends_when_its_connection_goes_and_a_new_connection_watches_again() {
    let env = Env::new();
    let a = Backend::serve(&env, "a:1", ServingStatus::Serving);
    let (channel, _resolver) = channel_with(&env, &["a:1"], RR_HEALTH);
    a.wait_for_watch(1);
    assert!(channel.settle());
    env.transport.close_connections("a:1");
    assert!(channel.settle());
    // round_robin reconnects at once; the new connection is watched again.
    a.wait_for_watch(2);
    assert!(channel.settle());
    assert_eq!(channel.state(false), S::Ready);
    assert_eq!(who(&channel, &env).unwrap(), "a:1");
    assert_eq!(env.transport.connect_count("a:1"), 2);
}
