//! Unit tests of the pure core: inputs and time in, effects out, no threads.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use parking_lot::Mutex;

use super::clock::Clock;
use super::clock::tests::TestClock;
use super::core::{CallDefaults, ChannelCore, CoreConfig, Input, Shared};
use super::pool::{Pool, PoolConfig, ScBackend};
use super::resolver::{MIN_RESOLUTION_INTERVAL, REFRESH_INTERVAL, Resolver};
use super::service_config::ServiceConfig;
use crate::address::{Address, endpoints};
use crate::backoff::BackoffConfig;
use crate::metadata::Metadata;
use crate::picker::{PickInfo, PickResult};
use crate::random::{RandomSource, SharedRandom};
use crate::registry::LbPolicyRegistry;
use crate::resolver::ResolverUpdate;
use crate::state::ConnectivityState as S;
use crate::status::Status;
use crate::transport::{
    CallHead, CallListener, CallOutcome, CallStream, ConnectOptions, Connection, ConnectionEvent,
    ConnectionEvents, Transport, TrySendError,
};

/// What the fake transport does with a new connection to an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    Accept,
    Refuse,
    Hang,
}

struct FakeConnection {
    address: String,
    events: ConnectionEvents,
    closed: AtomicUsize,
}

/// Echoes each message back; ends OK with the request side.
struct EchoStream(Arc<dyn CallListener>);

impl CallStream for EchoStream {
    fn try_send(&self, message: Vec<u8>, last: bool) -> Result<(), TrySendError> {
        self.0.on_message(message);
        if last {
            self.half_close();
        }
        Ok(())
    }
    fn half_close(&self) {
        self.0.on_close(CallOutcome::processed(Status::ok()));
    }
    fn cancel(&self) {}
    fn release(&self, _bytes: usize) {}
}

impl Connection for FakeConnection {
    fn open_stream(&self, _head: CallHead, listener: Arc<dyn CallListener>) -> Arc<dyn CallStream> {
        listener.on_headers(Metadata::new());
        Arc::new(EchoStream(listener))
    }

    fn close(&self) {
        if self.closed.fetch_add(1, Ordering::SeqCst) == 0 {
            (self.events)(ConnectionEvent::Closed(None));
        }
    }
}

#[derive(Default)]
struct FakeTransport {
    behaviour: Mutex<Vec<(String, Behaviour)>>,
    /// Every attempt: address, deadline, and its connection.
    attempts: Mutex<Vec<(String, Instant, Arc<FakeConnection>)>>,
}

impl FakeTransport {
    fn set(&self, address: &str, b: Behaviour) {
        let mut v = self.behaviour.lock();
        v.retain(|(a, _)| a != address);
        v.push((address.into(), b));
    }

    fn attempts_to(&self, address: &str) -> usize {
        self.attempts
            .lock()
            .iter()
            .filter(|(a, ..)| a == address)
            .count()
    }

    fn last(&self, address: &str) -> Arc<FakeConnection> {
        self.attempts
            .lock()
            .iter()
            .rev()
            .find(|(a, ..)| a == address)
            .map(|(.., c)| c.clone())
            .expect("an attempt")
    }
}

impl Transport for FakeTransport {
    fn connect(
        &self,
        address: &Address,
        options: &ConnectOptions,
        events: ConnectionEvents,
    ) -> Result<Arc<dyn Connection>, Status> {
        let b = self
            .behaviour
            .lock()
            .iter()
            .find(|(a, _)| *a == address.address)
            .map_or(Behaviour::Accept, |(_, b)| *b);
        let conn = Arc::new(FakeConnection {
            address: address.address.clone(),
            events: events.clone(),
            closed: AtomicUsize::new(0),
        });
        self.attempts.lock().push((
            address.address.clone(),
            options.connect_deadline,
            conn.clone(),
        ));
        match b {
            Behaviour::Accept => events(ConnectionEvent::Ready),
            Behaviour::Refuse => {
                conn.closed.store(1, Ordering::SeqCst);
                events(ConnectionEvent::Closed(Some(Status::unavailable(format!(
                    "{}: refused",
                    conn.address
                )))));
            }
            Behaviour::Hang => {}
        }
        Ok(conn)
    }
}

#[derive(Default)]
struct ResolverLog {
    resolve_now: AtomicUsize,
    shutdown: AtomicUsize,
}

struct FakeResolver(Arc<ResolverLog>);

impl Resolver for FakeResolver {
    fn resolve_now(&mut self) {
        self.0.resolve_now.fetch_add(1, Ordering::SeqCst);
    }
    fn shutdown(&mut self) {
        self.0.shutdown.fetch_add(1, Ordering::SeqCst);
    }
}

/// Jitter at its midpoint, so backoffs are exact.
struct Midpoint;

impl RandomSource for Midpoint {
    fn next_u64(&mut self) -> u64 {
        1 << 63
    }
}

struct Harness {
    core: ChannelCore,
    rx: Receiver<Input>,
    clock: Arc<TestClock>,
    transport: Arc<FakeTransport>,
    resolver: Arc<ResolverLog>,
    shared: Arc<Shared>,
}

impl Harness {
    fn new(service_config: Option<&str>, idle_timeout: Option<Duration>) -> Self {
        let clock = TestClock::new();
        let (tx, rx) = crossbeam_channel::unbounded();
        let channelz = Arc::new(super::entity::ChannelData::new(
            "test:///core",
            clock.clone(),
            None,
        ));
        let shared = Shared::new(
            clock.clone(),
            tx.clone(),
            CallDefaults {
                default_timeout: None,
                max_send_message_size: usize::MAX,
                max_receive_message_size: usize::MAX,
                send_compression: None,
                retry: super::retry::RetrySettings {
                    enabled: true,
                    per_call_buffer: super::retry::RETRY_BUFFER_LIMIT,
                    channel_buffer: super::retry::CHANNEL_RETRY_BUFFER_LIMIT,
                    random: crate::SharedRandom::new(crate::SplitMix64::seeded(1)),
                },
                metrics: crate::metrics::Metrics::none(),
            },
            channelz.clone(),
        );
        let registry = LbPolicyRegistry::with_builtins();
        let transport = Arc::new(FakeTransport::default());
        let random = SharedRandom::new(Midpoint);
        let pool = Pool::new(
            PoolConfig {
                transport: transport.clone(),
                transport_options: Default::default(),
                authority: "test".into(),
                user_agent: "test".into(),
                backoff: BackoffConfig::default(),
                random: random.clone(),
                channel: channelz,
                metrics: crate::metrics::Metrics::none(),
            },
            tx,
        );
        let resolver = Arc::new(ResolverLog::default());
        let core = ChannelCore::new(
            CoreConfig {
                authority: "test".into(),
                default_service_config: service_config
                    .map(|s| Arc::new(ServiceConfig::parse_str(s, &registry).unwrap())),
                registry: Arc::new(registry),
                idle_timeout,
                random,
                backoff: BackoffConfig::default(),
                health_check_disabled: false,
                channels: super::ChannelFactory::new(
                    transport.clone(),
                    super::ResolverRegistry::with_builtins(),
                    clock.clone(),
                ),
                metrics: crate::metrics::Metrics::none(),
            },
            shared.clone(),
            pool,
            Box::new(FakeResolver(resolver.clone())),
            clock.now(),
        );
        Self {
            core,
            rx,
            clock,
            transport,
            resolver,
            shared,
        }
    }

    fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Fires due timers and handles every queued input, as the serializer would.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            let now = self.now();
            self.core.handle_timeout(now);
            match self.rx.try_recv() {
                Ok(input) => self.core.handle(input, now),
                Err(_) => return,
            }
        }
        panic!("the core never went quiet");
    }

    fn send(&mut self, input: Input) {
        let now = self.now();
        self.core.handle(input, now);
        self.pump();
    }

    fn advance(&mut self, by: Duration) {
        self.clock.advance(by);
        self.pump();
    }

    fn resolve(&mut self, addresses: &[&str]) {
        self.send(Input::Resolver(ResolverUpdate::from_endpoints(endpoints(
            addresses.iter().copied(),
        ))));
    }

    fn state(&self) -> S {
        self.shared.cell.load().state
    }

    /// Picks once and says what happened: an address, "queue", or the status.
    fn pick(&self) -> String {
        let md = Metadata::new();
        let info = PickInfo::new("/s/m", &md);
        let snapshot = self.shared.cell.load();
        match snapshot.picker.pick(&info) {
            PickResult::Pick(p) => {
                let backend = p
                    .subchannel
                    .backend()
                    .as_any()
                    .downcast_ref::<ScBackend>()
                    .unwrap();
                let live = backend.ready().is_some();
                format!(
                    "{}{}",
                    p.subchannel.address(),
                    if live { "" } else { " (dead)" }
                )
            }
            PickResult::Queue => "queue".into(),
            PickResult::Fail(s) => format!("fail {s}"),
            PickResult::Drop(s) => format!("drop {s}"),
        }
    }
}

#[test]
fn starts_idle_and_the_first_pick_wakes_it_with_the_stored_update() {
    let mut h = Harness::new(None, None);
    h.resolve(&["a:1"]);
    assert_eq!(h.state(), S::Idle);
    assert_eq!(h.transport.attempts_to("a:1"), 0, "idle: nothing connects");
    assert_eq!(h.pick(), "queue");
    assert_eq!(h.pick(), "queue", "the idle picker asks once");
    h.pump();
    assert_eq!(h.state(), S::Ready);
    assert_eq!(h.pick(), "a:1");
    assert_eq!(h.transport.attempts_to("a:1"), 1);
}

#[test]
fn reconnects_back_off_one_second_then_one_point_six() {
    let mut h = Harness::new(None, None);
    h.transport.set("a:1", Behaviour::Refuse);
    h.resolve(&["a:1"]);
    h.send(Input::ExitIdle);
    assert_eq!(h.state(), S::TransientFailure);
    assert_eq!(h.transport.attempts_to("a:1"), 1);
    assert!(h.pick().starts_with("fail UNAVAILABLE"), "{}", h.pick());
    h.advance(Duration::from_millis(999));
    assert_eq!(h.transport.attempts_to("a:1"), 1);
    h.advance(Duration::from_millis(1));
    assert_eq!(h.transport.attempts_to("a:1"), 2, "second attempt at 1 s");
    // Midpoint jitter: exactly 1.6 s after the second attempt started.
    h.advance(Duration::from_millis(1599));
    assert_eq!(h.transport.attempts_to("a:1"), 2);
    h.advance(Duration::from_millis(1));
    assert_eq!(
        h.transport.attempts_to("a:1"),
        3,
        "third attempt 1.6 s later"
    );
    // Success resets the backoff.
    h.transport.set("a:1", Behaviour::Accept);
    h.advance(Duration::from_millis(2560));
    assert_eq!(h.transport.attempts_to("a:1"), 4);
    assert_eq!(h.state(), S::Ready);
}

#[test]
fn a_connect_attempt_past_its_deadline_fails_and_is_closed() {
    let mut h = Harness::new(None, None);
    h.transport.set("a:1", Behaviour::Hang);
    h.resolve(&["a:1"]);
    let t0 = h.now();
    h.send(Input::ExitIdle);
    assert_eq!(h.state(), S::Connecting);
    let (deadline, first) = {
        let attempts = h.transport.attempts.lock();
        (attempts[0].1, attempts[0].2.clone())
    };
    assert_eq!(
        deadline,
        t0 + Duration::from_secs(20),
        "minimum connect timeout"
    );
    h.advance(Duration::from_secs(20) - Duration::from_millis(1));
    assert_eq!(h.state(), S::Connecting);
    h.advance(Duration::from_millis(1));
    assert_eq!(h.state(), S::TransientFailure);
    assert!(h.pick().contains("timed out after 20s"), "{}", h.pick());
    assert_eq!(first.closed.load(Ordering::SeqCst), 1);
    // The backoff (1 s from the attempt's start) is long over: it retries at once.
    assert_eq!(h.transport.attempts_to("a:1"), 2);
}

#[test]
fn ready_connection_lost_goes_idle_and_late_events_are_ignored() {
    let mut h = Harness::new(None, None);
    h.resolve(&["a:1"]);
    h.send(Input::ExitIdle);
    assert_eq!(h.pick(), "a:1");
    let first = h.transport.last("a:1");
    (first.events)(ConnectionEvent::GoAway {
        reason: "bye".into(),
        too_many_pings: false,
    });
    // The connection is marked gone at once, before the serializer runs.
    assert_eq!(h.pick(), "a:1", "old picker still names it");
    h.pump();
    assert_eq!(
        first.closed.load(Ordering::SeqCst),
        1,
        "no calls: closed now"
    );
    // pick_first goes IDLE and reconnects on the next pick.
    assert_eq!(h.state(), S::Idle);
    assert_eq!(h.pick(), "queue");
    h.pump();
    assert_eq!(h.state(), S::Ready);
    assert_eq!(h.transport.attempts_to("a:1"), 2);
    // A Closed from the first connection changes nothing.
    (first.events)(ConnectionEvent::Closed(None));
    h.pump();
    assert_eq!(h.state(), S::Ready);
    assert_eq!(h.pick(), "a:1");
}

#[test]
fn a_draining_connection_closes_when_its_last_call_ends() {
    let mut h = Harness::new(None, None);
    h.resolve(&["a:1"]);
    h.send(Input::ExitIdle);
    let attempt = {
        let md = Metadata::new();
        let info = PickInfo::new("/s/m", &md);
        let snapshot = h.shared.cell.load();
        let PickResult::Pick(p) = snapshot.picker.pick(&info) else {
            panic!("ready");
        };
        let backend = p
            .subchannel
            .backend()
            .as_any()
            .downcast_ref::<ScBackend>()
            .unwrap();
        let attempt = backend.ready().clone().unwrap();
        assert!(attempt.acquire().is_some());
        attempt
    };
    // The address goes away: the subchannel shuts down, its connection drains.
    h.resolve(&["b:1"]);
    let conn = h.transport.last("a:1");
    assert_eq!(
        conn.closed.load(Ordering::SeqCst),
        0,
        "a call is still on it"
    );
    assert!(
        attempt.acquire().is_none(),
        "no new calls on a draining connection"
    );
    attempt.release();
    h.pump();
    assert_eq!(conn.closed.load(Ordering::SeqCst), 1);
    assert_eq!(h.pick(), "b:1");
}

#[test]
fn idle_timeout_counts_from_the_last_call_and_wakes_with_the_last_update() {
    let timeout = Duration::from_secs(600);
    let mut h = Harness::new(None, Some(timeout));
    h.resolve(&["a:1"]);
    h.send(Input::ExitIdle);
    assert_eq!(h.state(), S::Ready);
    h.advance(Duration::from_secs(300));
    {
        let shared = h.shared.clone();
        let _call = shared.begin_call();
        h.advance(Duration::from_secs(400));
        assert_eq!(h.state(), S::Ready, "a call in progress keeps it active");
    }
    // The call ended at t=700 s: idle at t=1300 s.
    h.advance(Duration::from_secs(599));
    assert_eq!(h.state(), S::Ready);
    assert_eq!(h.core.subchannel_count(), 1);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.state(), S::Idle);
    assert_eq!(h.core.subchannel_count(), 0, "every subchannel shut down");
    assert_eq!(h.transport.last("a:1").closed.load(Ordering::SeqCst), 1);
    assert_eq!(h.pick(), "queue");
    h.pump();
    assert_eq!(h.state(), S::Ready);
    assert_eq!(
        h.transport.attempts_to("a:1"),
        2,
        "reconnected from the stored update"
    );
}

#[test]
fn re_resolution_is_rate_limited_and_refreshed_periodically() {
    let mut h = Harness::new(Some(r#"{"loadBalancingPolicy": "round_robin"}"#), None);
    h.transport.set("a:1", Behaviour::Refuse);
    h.resolve(&["a:1"]);
    let count = |h: &Harness| h.resolver.resolve_now.load(Ordering::SeqCst);
    h.advance(Duration::from_secs(10));
    let active_at = h.now();
    h.send(Input::ExitIdle);
    // round_robin asks at once; the resolver started 10 s ago, so it waits 20 s.
    assert_eq!(count(&h), 0);
    h.advance(Duration::from_secs(20) - Duration::from_millis(1));
    assert_eq!(count(&h), 0);
    h.advance(Duration::from_millis(1));
    assert_eq!(count(&h), 1);
    // Every reconnect fails and asks again; at most one per 30 s gets through.
    h.advance(MIN_RESOLUTION_INTERVAL - Duration::from_millis(1));
    assert_eq!(count(&h), 1);
    h.advance(Duration::from_millis(1));
    assert_eq!(count(&h), 2);
    // With a healthy backend nobody asks, and the periodic refresh comes at 30 min.
    h.transport.set("a:1", Behaviour::Accept);
    h.advance(Duration::from_secs(120));
    assert_eq!(h.state(), S::Ready);
    let before = count(&h);
    let refresh_at = active_at + REFRESH_INTERVAL;
    h.advance(refresh_at - h.now() - Duration::from_millis(1));
    assert_eq!(count(&h), before);
    h.advance(Duration::from_millis(1));
    assert_eq!(count(&h), before + 1, "periodic refresh");
}

#[test]
fn a_bad_update_is_retried_with_backoff() {
    let mut h = Harness::new(None, None);
    h.send(Input::ExitIdle);
    h.resolve(&[]);
    assert_eq!(h.state(), S::TransientFailure);
    let count = |h: &Harness| h.resolver.resolve_now.load(Ordering::SeqCst);
    h.advance(Duration::from_millis(999));
    assert_eq!(count(&h), 0);
    h.advance(Duration::from_millis(1));
    assert_eq!(
        count(&h),
        1,
        "first retry after 1 s, ignoring the 30 s limit"
    );
    h.resolve(&[]);
    h.advance(Duration::from_millis(1599));
    assert_eq!(count(&h), 1);
    h.advance(Duration::from_millis(1));
    assert_eq!(count(&h), 2, "then 1.6 s");
    h.resolve(&["a:1"]);
    assert_eq!(h.state(), S::Ready);
    h.advance(Duration::from_secs(10));
    assert_eq!(count(&h), 2, "a good update stops the retries");
}

#[test]
fn service_config_from_the_resolver_switches_the_policy() {
    let mut h = Harness::new(None, None);
    h.send(Input::ExitIdle);
    h.resolve(&["a:1", "b:1"]);
    assert_eq!(h.pick(), "a:1");
    assert_eq!(h.pick(), "a:1", "pick_first");
    let mut update = ResolverUpdate::from_endpoints(endpoints(["a:1", "b:1"]));
    update.service_config = Some(Ok(
        serde_json::json!({"loadBalancingConfig": [{"round_robin": {}}]}),
    ));
    h.send(Input::Resolver(update.clone()));
    let mut seen: Vec<String> = (0..4).map(|_| h.pick()).collect();
    seen.sort();
    assert_eq!(seen, ["a:1", "a:1", "b:1", "b:1"], "round_robin");
    // pick_first's subchannel was shut down; round_robin has its own two.
    assert_eq!(h.core.subchannel_count(), 2);
    // A broken config keeps the one in use.
    update.service_config = Some(Ok(serde_json::json!({"loadBalancingConfig": 7})));
    h.send(Input::Resolver(update));
    let mut seen: Vec<String> = (0..2).map(|_| h.pick()).collect();
    seen.sort();
    assert_eq!(seen, ["a:1", "b:1"]);
}

#[test]
fn a_broken_first_service_config_fails_calls_and_names_the_field() {
    let mut h = Harness::new(None, None);
    h.send(Input::ExitIdle);
    let mut update = ResolverUpdate::from_endpoints(endpoints(["a:1"]));
    update.service_config = Some(Ok(serde_json::json!({"methodConfig": [{"timeout": "x"}]})));
    h.send(Input::Resolver(update));
    assert_eq!(h.state(), S::TransientFailure);
    let got = h.pick();
    assert!(
        got.contains("invalid service config") && got.contains("methodConfig[0].timeout"),
        "{got}"
    );
}

#[test]
fn close_stops_everything_and_later_inputs_do_nothing() {
    let mut h = Harness::new(None, None);
    h.resolve(&["a:1"]);
    h.send(Input::ExitIdle);
    h.send(Input::Close);
    assert!(h.core.is_closed());
    assert_eq!(h.state(), S::Shutdown);
    assert_eq!(h.resolver.shutdown.load(Ordering::SeqCst), 1);
    assert_eq!(h.transport.last("a:1").closed.load(Ordering::SeqCst), 1);
    let got = h.pick();
    assert!(got.starts_with("drop CANCELLED: channel closed"), "{got}");
    h.send(Input::ExitIdle);
    h.resolve(&["b:1"]);
    assert_eq!(h.transport.attempts.lock().len(), 1);
    assert_eq!(h.core.poll_timeout(), None);
    drop(h.core);
    assert_eq!(
        h.resolver.shutdown.load(Ordering::SeqCst),
        1,
        "shut down once"
    );
}

#[test]
fn policy_wake_ups_reach_work() {
    // pick_first's Happy Eyeballs timer: the second address is tried 250 ms later.
    let mut h = Harness::new(None, None);
    h.transport.set("a:1", Behaviour::Hang);
    h.resolve(&["a:1", "b:1"]);
    h.send(Input::ExitIdle);
    assert_eq!(h.transport.attempts_to("b:1"), 0);
    h.advance(Duration::from_millis(250));
    assert_eq!(h.transport.attempts_to("b:1"), 1);
    assert_eq!(h.pick(), "b:1");
    assert_eq!(
        h.transport.last("a:1").closed.load(Ordering::SeqCst),
        1,
        "the losing attempt is closed"
    );
}
