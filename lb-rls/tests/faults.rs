//! Fault injection for the RLS policy on real loopback sockets, with nothing but
//! this project's servers: our backends, our RLS server (`lb_rls::server::bind` with
//! a `RoutingTable` told to misbehave), a `Channel` with `H2Transport` and an
//! `rls_experimental` config with `rls_dial_target` children.
//!
//! One `#[test]` runs every scenario in turn (so the final thread check counts only
//! what the scenarios left behind). Each scenario calls from several threads with
//! per-call deadlines and distinct `x-user` keys, and prints one line
//!
//! `fault rls_<name>: attempted=N final=N lost=0 panics=0 default=D unavailable=U other=O`
//!
//! where `other` counts the outcomes the scenario's rule does not allow (the rule of
//! each scenario is written next to it). `default` counts calls the default target
//! answered, `unavailable` calls that failed with UNAVAILABLE; calls answered by a
//! target RLS returned and calls that ended with DEADLINE_EXCEEDED are in the
//! `detail` line that follows.
#![cfg(feature = "server")]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use lb_core::channel::{CallOptions, Channel};
use lb_core::{Code, LbPolicyRegistry, Metadata, Status};
use lb_rls::balancer::{RlsBuilder, RlsBuilderOptions};
use lb_rls::metrics::{InMemoryRecorder, RlsMetric};
use lb_rls::picker::RLS_DATA_HEADER;
use lb_rls::server::RoutingTable;
use lb_transport::driver::{H2Transport, TransportConfig};
use lb_transport::server::{Response, Server};
use parking_lot::Mutex;
use serde_json::{Value, json};

const METHOD: &str = "/fault.Echo/Who";
/// The response header a backend reports the length of `x-google-rls-data` in (the
/// data itself may not fit in a response header).
const LEN_HEADER: &str = "x-echo-rls-len";
const TARGET: &str = "backend-a";
const DEFAULT: &str = "default";
/// The header data the RLS table answers with.
const HEADER_DATA: &str = "tier=gold";
/// Pause between two calls of one caller thread.
const PACE: Duration = Duration::from_millis(5);
/// How far past its deadline a call may end.
const DEADLINE_SLACK: Duration = Duration::from_millis(250);

/// A backend: answers with its name and the length of the RLS header data it got.
fn start_backend(name: &'static str) -> Server {
    Server::builder()
        .unary(METHOD, move |req| {
            let mut response = Response::new(name.as_bytes());
            let len = req.metadata.get(RLS_DATA_HEADER).map_or(0, str::len);
            response
                .headers
                .insert(LEN_HEADER, &len.to_string())
                .map_err(|e| Status::internal(e.to_string()))?;
            Ok(response)
        })
        .workers(4)
        .bind("127.0.0.1:0")
        .expect("backend")
}

/// An address nothing listens on (yet).
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// Starts the RLS server on `addr`, retrying briefly while the port is not free.
fn start_rls(addr: SocketAddr, table: &Arc<RoutingTable>) -> Server {
    let mut attempt = 0;
    loop {
        match lb_rls::server::bind(addr, table.clone()) {
            Ok(server) => return server,
            Err(e) if attempt < 60 && e.kind() == std::io::ErrorKind::AddrInUse => {
                attempt += 1;
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("RLS server on {addr}: {e}"),
        }
    }
}

/// The table: every key goes to `TARGET` with `HEADER_DATA`.
fn routing_table(target: &str) -> Arc<RoutingTable> {
    Arc::new(
        RoutingTable::from_json(&json!({
            "routes": [],
            "default": {"targets": [target], "headerData": HEADER_DATA},
        }))
        .expect("table"),
    )
}

/// What a scenario's client is made of.
struct Client {
    channel: Channel,
    rls: RlsBuilder,
    recorder: Arc<InMemoryRecorder>,
}

/// A fresh channel (its own throttler and cache) with the RLS policy.
fn client(rls_addr: SocketAddr, default: Option<&str>, lookup_timeout: &str) -> Client {
    let mut rlc = json!({
        "grpcKeybuilders": [{
            "names": [{"service": "fault.Echo"}],
            "headers": [{"key": "user", "names": ["x-user"]}],
        }],
        "lookupService": format!("ipv4:{rls_addr}"),
        "lookupServiceTimeout": lookup_timeout,
        "cacheSizeBytes": 10_000_000,
    });
    if let Some(d) = default {
        rlc["defaultTarget"] = Value::from(d);
    }
    let config = json!({"loadBalancingConfig": [{"rls_experimental": {
        "routeLookupConfig": rlc,
        "childPolicy": [{"rls_dial_target": {"childPolicy": [{"round_robin": {}}]}}],
        "childPolicyConfigTargetFieldName": "target",
    }}]});
    let transport = Arc::new(H2Transport::new(TransportConfig::default()).expect("transport"));
    let recorder = Arc::new(InMemoryRecorder::new());
    let options = RlsBuilderOptions::new(transport.clone());
    let mut registry = LbPolicyRegistry::with_builtins();
    let rls = lb_rls::register(&mut registry, options);
    let channel = Channel::builder("passthrough:///fault.echo")
        .transport(transport)
        .lb_policy_registry(registry)
        .default_service_config(config.to_string())
        .metrics_recorder(recorder.clone())
        .build()
        .expect("channel");
    Client {
        channel,
        rls,
        recorder,
    }
}

/// How one call ended.
#[derive(Clone, Debug, PartialEq)]
enum Kind {
    /// Answered by `TARGET` (a target RLS returned), with header data of this length.
    Target(usize),
    /// Answered by the default target.
    Default,
    /// Answered by some other server (never expected).
    Stranger(String),
    Failed(Code, String),
}

#[derive(Clone, Debug)]
struct Record {
    thread: usize,
    key: String,
    phase: u8,
    kind: Kind,
    /// Since the scenario started.
    at: Duration,
    elapsed: Duration,
    timeout: Duration,
}

impl Record {
    fn code(&self) -> Option<Code> {
        match &self.kind {
            Kind::Failed(code, _) => Some(*code),
            _ => None,
        }
    }

    /// DEADLINE_EXCEEDED that the call's own deadline explains.
    fn own_deadline(&self) -> bool {
        self.code() == Some(Code::DeadlineExceeded)
            && self.elapsed + Duration::from_millis(50) >= self.timeout
    }
}

type Keys = Arc<dyn Fn(usize, u8, u64) -> String + Send + Sync>;

#[derive(Default)]
struct Counters {
    attempted: AtomicUsize,
    finals: AtomicUsize,
    panics: AtomicUsize,
    done: AtomicUsize,
}

/// Caller threads running until `finish`.
struct Run {
    name: &'static str,
    threads: usize,
    started: Instant,
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicU8>,
    counters: Arc<Counters>,
    records: Arc<Mutex<Vec<Record>>>,
    handles: Vec<thread::JoinHandle<()>>,
    max_timeout: Duration,
}

/// Starts `threads` callers on `channel`; thread `i` calls with key `keys(i, phase,
/// n)` and deadline `timeouts(i)`.
fn start_callers(
    name: &'static str,
    channel: &Channel,
    threads: usize,
    timeouts: impl Fn(usize) -> Duration,
    keys: Keys,
) -> Run {
    let run_started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(AtomicU8::new(0));
    let counters = Arc::new(Counters::default());
    let records = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    let mut max_timeout = Duration::ZERO;
    for id in 0..threads {
        let timeout = timeouts(id);
        max_timeout = max_timeout.max(timeout);
        let (channel, stop, phase) = (channel.clone(), stop.clone(), phase.clone());
        let counters_outer = counters.clone();
        let (counters, records, keys) = (counters.clone(), records.clone(), keys.clone());
        let body = move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let phase = phase.load(Ordering::SeqCst);
                let key = keys(id, phase, n);
                n += 1;
                let mut md = Metadata::new();
                md.insert("x-user", &key).expect("metadata");
                let options = CallOptions::default()
                    .with_metadata(md)
                    .with_timeout(timeout);
                counters.attempted.fetch_add(1, Ordering::SeqCst);
                let t = Instant::now();
                let result = channel.unary(METHOD, b"hi".to_vec(), options);
                let elapsed = t.elapsed();
                let kind = match result {
                    Ok(r) => match std::str::from_utf8(&r.message) {
                        Ok(TARGET) => Kind::Target(
                            r.headers
                                .get(LEN_HEADER)
                                .and_then(|l| l.parse().ok())
                                .unwrap_or(usize::MAX),
                        ),
                        Ok(DEFAULT) => Kind::Default,
                        _ => Kind::Stranger(String::from_utf8_lossy(&r.message).into_owned()),
                    },
                    Err(e) => Kind::Failed(e.code(), e.message().to_owned()),
                };
                records.lock().push(Record {
                    thread: id,
                    key,
                    phase,
                    kind,
                    at: t - run_started,
                    elapsed,
                    timeout,
                });
                counters.finals.fetch_add(1, Ordering::SeqCst);
                thread::sleep(PACE);
            }
        };
        handles.push(
            thread::Builder::new()
                .name(format!("fault-caller-{id}"))
                .spawn(move || {
                    if catch_unwind(AssertUnwindSafe(body)).is_err() {
                        counters_outer.panics.fetch_add(1, Ordering::SeqCst);
                    }
                    counters_outer.done.fetch_add(1, Ordering::SeqCst);
                })
                .expect("spawn caller"),
        );
    }
    Run {
        name,
        threads,
        started: run_started,
        stop,
        phase,
        counters,
        records,
        handles,
        max_timeout,
    }
}

/// What a finished run saw.
struct Outcome {
    records: Vec<Record>,
}

impl Outcome {
    fn count(&self, f: impl Fn(&Record) -> bool) -> usize {
        self.records.iter().filter(|r| f(r)).count()
    }
}

impl Run {
    fn set_phase(&self, phase: u8) {
        self.phase.store(phase, Ordering::SeqCst);
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops the callers (bounded wait), prints the scenario's line and asserts
    /// attempted == final, lost == 0, panics == 0 and other == 0, `allowed` being
    /// the scenario's rule.
    fn finish(self, allowed: impl Fn(&Record) -> bool) -> Outcome {
        self.stop.store(true, Ordering::SeqCst);
        let wait_until = Instant::now() + self.max_timeout + Duration::from_secs(5);
        while self.counters.done.load(Ordering::SeqCst) < self.threads
            && Instant::now() < wait_until
        {
            thread::sleep(Duration::from_millis(5));
        }
        let all_done = self.counters.done.load(Ordering::SeqCst) == self.threads;
        if all_done {
            for h in self.handles {
                h.join().expect("caller thread");
            }
        }
        let attempted = self.counters.attempted.load(Ordering::SeqCst);
        let finals = self.counters.finals.load(Ordering::SeqCst);
        let panics = self.counters.panics.load(Ordering::SeqCst);
        let lost = attempted.saturating_sub(finals + panics);
        let records = std::mem::take(&mut *self.records.lock());
        let out = Outcome { records };
        let default = out.count(|r| r.kind == Kind::Default);
        let unavailable = out.count(|r| r.code() == Some(Code::Unavailable));
        let target = out.count(|r| matches!(r.kind, Kind::Target(_)));
        let deadline = out.count(|r| r.code() == Some(Code::DeadlineExceeded));
        let bad: Vec<&Record> = out.records.iter().filter(|r| !allowed(r)).collect();
        let max_over = out
            .records
            .iter()
            .map(|r| r.elapsed.saturating_sub(r.timeout))
            .max()
            .unwrap_or_default();
        let mut codes: BTreeMap<String, usize> = BTreeMap::new();
        for r in &out.records {
            if let Some(c) = r.code() {
                *codes.entry(format!("{c:?}")).or_default() += 1;
            }
        }
        println!(
            "fault rls_{}: attempted={attempted} final={finals} lost={lost} panics={panics} \
             default={default} unavailable={unavailable} other={}",
            self.name,
            bad.len()
        );
        println!(
            "  detail rls_{}: target={target} deadline_exceeded={deadline} codes={codes:?} \
             max_past_deadline={max_over:?}",
            self.name
        );
        for r in bad.iter().take(5) {
            println!("  other: {r:?}");
        }
        assert!(all_done, "rls_{}: callers still running", self.name);
        assert_eq!(attempted, finals, "rls_{}: attempted vs final", self.name);
        assert_eq!(lost, 0, "rls_{}: lost", self.name);
        assert_eq!(panics, 0, "rls_{}: panics", self.name);
        assert!(
            bad.is_empty(),
            "rls_{}: {} outcomes outside the rule, e.g. {:?}",
            self.name,
            bad.len(),
            bad.first()
        );
        assert!(
            max_over <= DEADLINE_SLACK,
            "rls_{}: a call ended {max_over:?} past its deadline",
            self.name
        );
        out
    }
}

/// Closes a scenario's channel and checks the policy's threads are gone.
fn close(client: &Client, name: &str) {
    client.channel.close();
    let until = Instant::now() + Duration::from_secs(5);
    while client.rls.thread_count() != 0 && Instant::now() < until {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(client.rls.thread_count(), 0, "rls_{name}: policy threads");
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .count()
}

/// Scenario 1: RLS server down at start, started 1.5 s in. Default target configured.
/// Rule: phase 0 (down): the default target only; phase 1 (up): the target RLS
/// returned (with its header data) or the default target. Recovery: every thread's
/// keys reach the target in the last second.
fn rls_down_at_start() {
    let addr = free_addr();
    let table = routing_table(&backend_addr(TARGET));
    let c = client(addr, Some(&backend_addr(DEFAULT)), "1s");
    let keys: Keys = Arc::new(|t, _, n| format!("s1-t{t}-k{}", n % 5));
    let run = start_callers("down_at_start", &c.channel, 4, |_| secs(2.0), keys);
    thread::sleep(secs(1.5));
    let rls = start_rls(addr, &table);
    run.set_phase(1);
    let up_at = run.elapsed();
    thread::sleep(secs(4.5));
    let end = run.elapsed();
    let out = run.finish(|r| match (&r.kind, r.phase) {
        (Kind::Default, _) => true,
        (Kind::Target(len), 1) => *len == HEADER_DATA.len(),
        _ => false,
    });
    for t in 0..4 {
        let late = out.count(|r| {
            r.thread == t && r.at + secs(1.0) >= end && matches!(r.kind, Kind::Target(_))
        });
        assert!(late > 0, "rls_down_at_start: thread {t} never recovered");
    }
    let first = out
        .records
        .iter()
        .filter(|r| matches!(r.kind, Kind::Target(_)))
        .map(|r| r.at)
        .min();
    println!(
        "  detail rls_down_at_start: RLS up at {up_at:?}, first routed call started at \
         {first:?}; lookups received {}",
        table.requests().len()
    );
    close(&c, "down_at_start");
    rls.shutdown(Duration::ZERO);
}

/// Scenario 2: RLS killed (zero grace) 1.5 s in, restarted on the same address 2 s later.
/// No default target. Keys `c*` are cached before the kill, keys `l*` are first used
/// while it is down. Rule: `c*` keys always reach the target; `l*` keys fail with
/// UNAVAILABLE or (after the restart) reach the target. Recovery: `l*` keys reach
/// the target in the last second.
fn rls_killed_midrun() {
    let table = routing_table(&backend_addr(TARGET));
    let rls = lb_rls::server::bind("127.0.0.1:0", table.clone()).expect("rls");
    let addr = rls.local_addr();
    let c = client(addr, None, "1s");
    let keys: Keys = Arc::new(|t, phase, n| {
        if phase == 0 || n % 2 == 0 {
            format!("s2-t{t}-c{}", (n / 2) % 3)
        } else {
            format!("s2-t{t}-l{}", (n / 2) % 3)
        }
    });
    let run = start_callers("killed_midrun", &c.channel, 4, |_| secs(2.0), keys);
    thread::sleep(secs(1.5));
    rls.shutdown(Duration::ZERO);
    run.set_phase(1);
    thread::sleep(secs(2.0));
    let table2 = routing_table(&backend_addr(TARGET));
    let rls = start_rls(addr, &table2);
    run.set_phase(2);
    thread::sleep(secs(4.0));
    let end = run.elapsed();
    let out = run.finish(|r| {
        let cached = r.key.contains("-c");
        match &r.kind {
            Kind::Target(len) => *len == HEADER_DATA.len() && (cached || r.phase == 2),
            Kind::Failed(Code::Unavailable, _) => !cached,
            _ => false,
        }
    });
    let late_routed = out.count(|r| {
        r.key.contains("-l") && r.at + secs(1.0) >= end && matches!(r.kind, Kind::Target(_))
    });
    assert!(
        late_routed > 0,
        "rls_killed_midrun: no recovery after restart"
    );
    println!(
        "  detail rls_killed_midrun: lookups before kill {}, after restart {}",
        table.requests().len(),
        table2.requests().len()
    );
    close(&c, "killed_midrun");
    rls.shutdown(Duration::ZERO);
}

/// Scenario 3: RLS slower (4 s) than `lookupServiceTimeout` (2 s). No default target. Threads
/// 0 and 1 call with a 1.5 s deadline, threads 2 and 3 with 3 s; every call a new
/// key. Rule: UNAVAILABLE, or DEADLINE_EXCEEDED only once the call's own deadline
/// passed (a lookup's DEADLINE_EXCEEDED must not leak); no call ends more than
/// `DEADLINE_SLACK` past its deadline.
fn rls_slow() {
    let table = routing_table(&backend_addr(TARGET));
    table.set_delay(Some(secs(4.0)));
    let rls = lb_rls::server::bind("127.0.0.1:0", table.clone()).expect("rls");
    let c = client(rls.local_addr(), None, "2s");
    let keys: Keys = Arc::new(|t, _, n| format!("s3-t{t}-{n}"));
    let timeouts = |t: usize| if t < 2 { secs(1.5) } else { secs(3.0) };
    let run = start_callers("slow", &c.channel, 4, timeouts, keys);
    thread::sleep(secs(4.0));
    let out = run.finish(|r| r.code() == Some(Code::Unavailable) || r.own_deadline());
    let long_unavailable = out.count(|r| {
        r.code() == Some(Code::Unavailable) && r.elapsed >= secs(1.9) && r.elapsed <= secs(2.5)
    });
    println!(
        "  detail rls_slow: lookups received {}; UNAVAILABLE after the 2 s lookup \
         timeout: {long_unavailable}",
        table.requests().len()
    );
    close(&c, "slow");
    rls.shutdown(Duration::ZERO);
}

/// Scenario 4: RLS answers PERMISSION_DENIED. No default target. Rule: UNAVAILABLE only, never
/// PERMISSION_DENIED (control-plane codes never leak).
fn rls_errors() {
    let table = routing_table(&backend_addr(TARGET));
    table.set_failure(Some(Status::new(Code::PermissionDenied, "rls says no")));
    let rls = lb_rls::server::bind("127.0.0.1:0", table.clone()).expect("rls");
    let c = client(rls.local_addr(), None, "1s");
    let keys: Keys = Arc::new(|t, _, n| {
        if n % 2 == 0 {
            format!("s4-t{t}-{n}")
        } else {
            format!("s4-t{t}-same")
        }
    });
    let run = start_callers("errors", &c.channel, 4, |_| secs(2.0), keys);
    thread::sleep(secs(2.0));
    let out = run.finish(|r| r.code() == Some(Code::Unavailable));
    let with_text =
        out.count(|r| matches!(&r.kind, Kind::Failed(_, m) if m.contains("rls says no")));
    println!(
        "  detail rls_errors: lookups received {}; UNAVAILABLE messages carrying the RLS \
         server's text: {with_text}",
        table.requests().len()
    );
    close(&c, "errors");
    rls.shutdown(Duration::ZERO);
}

/// Scenario 5: RLS answers an empty target list. No default target. Rule: UNAVAILABLE whose
/// message mentions the target list, or (the lookups failing, the throttler
/// engages) the throttler's "RLS call throttled at client side".
fn rls_empty_targets() {
    let table = routing_table(&backend_addr(TARGET));
    table
        .replace(&json!({"routes": [], "default": {"targets": [], "headerData": "x"}}))
        .expect("replace");
    let rls = lb_rls::server::bind("127.0.0.1:0", table.clone()).expect("rls");
    let c = client(rls.local_addr(), None, "1s");
    let keys: Keys = Arc::new(|t, _, n| format!("s5-t{t}-{}", n % 7));
    let run = start_callers("empty_targets", &c.channel, 4, |_| secs(2.0), keys);
    thread::sleep(secs(2.0));
    run.finish(|r| {
        matches!(&r.kind, Kind::Failed(Code::Unavailable, m)
            if m.contains("target list") || m.contains("throttled"))
    });
    close(&c, "empty_targets");
    rls.shutdown(Duration::ZERO);
}

/// Scenario 6: RLS answers bytes that are no RouteLookupResponse. Default target configured.
/// Rule: the default target only.
fn rls_garbage() {
    let table = routing_table(&backend_addr(TARGET));
    table.set_garbage(Some(b"\x1a\x05a".to_vec()));
    let rls = lb_rls::server::bind("127.0.0.1:0", table.clone()).expect("rls");
    let c = client(rls.local_addr(), Some(&backend_addr(DEFAULT)), "1s");
    let keys: Keys = Arc::new(|t, _, n| format!("s6-t{t}-{n}"));
    let run = start_callers("garbage", &c.channel, 4, |_| secs(2.0), keys);
    thread::sleep(secs(2.0));
    run.finish(|r| r.kind == Kind::Default);
    println!(
        "  detail rls_garbage: lookups received {}",
        table.requests().len()
    );
    close(&c, "garbage");
    rls.shutdown(Duration::ZERO);
}

/// Scenario 7: RLS answers huge header data: 8 KiB for `small*` keys (fits the backend's
/// 16 KiB header-list limit), 64 KiB for `big*` keys (does not). No default target.
/// Rule: `small*` keys reach the target carrying all 8 KiB; `big*` keys reach the
/// target carrying all 64 KiB or fail with a status (any code; which one is
/// reported); nothing else.
fn rls_huge_header() {
    let small = "s".repeat(8 << 10);
    let big = "b".repeat(64 << 10);
    let target = backend_addr(TARGET);
    let mut routes = Vec::new();
    for t in 0..4 {
        for k in 0..2 {
            routes.push(json!({"keys": {"user": format!("s7-small-t{t}-{k}")},
                               "targets": [target], "headerData": small}));
            routes.push(json!({"keys": {"user": format!("s7-big-t{t}-{k}")},
                               "targets": [target], "headerData": big}));
        }
    }
    let table = Arc::new(RoutingTable::from_json(&json!({"routes": routes})).expect("table"));
    let rls = lb_rls::server::bind("127.0.0.1:0", table.clone()).expect("rls");
    let c = client(rls.local_addr(), None, "1s");
    let keys: Keys = Arc::new(|t, _, n| {
        let size = if n % 2 == 0 { "small" } else { "big" };
        format!("s7-{size}-t{t}-{}", (n / 2) % 2)
    });
    let run = start_callers("huge_header", &c.channel, 4, |_| secs(2.0), keys);
    thread::sleep(secs(2.0));
    let out = run.finish(|r| match &r.kind {
        Kind::Target(len) if r.key.contains("small") => *len == small.len(),
        Kind::Target(len) => *len == big.len(),
        Kind::Failed(..) => r.key.contains("big"),
        _ => false,
    });
    let slowest = |class: &str| {
        out.records
            .iter()
            .filter(|r| r.key.contains(class))
            .map(|r| r.elapsed)
            .max()
            .unwrap_or_default()
    };
    let mut big_failures: BTreeMap<String, usize> = BTreeMap::new();
    for r in &out.records {
        if let Kind::Failed(code, m) = &r.kind {
            let m: String = m.chars().take(120).collect();
            *big_failures.entry(format!("{code:?}: {m}")).or_default() += 1;
        }
    }
    println!(
        "  detail rls_huge_header: small carried {}, big carried {}, big failed \
         {big_failures:?}; slowest small call {:?}, slowest big call {:?}",
        out.count(|r| r.key.contains("small") && matches!(r.kind, Kind::Target(_))),
        out.count(|r| r.key.contains("big") && matches!(r.kind, Kind::Target(_))),
        slowest("small"),
        slowest("big"),
    );
    close(&c, "huge_header");
    rls.shutdown(Duration::ZERO);
}

/// Scenario 8a: Per-key backoff: one failing key (NOT_FOUND), called every 5 ms for ~5.2 s.
/// Default target configured. Rule: the default target only. Lookups arrive at
/// t0, t0 + 1.6 s ± 20 %, then + 2.56 s ± 20 % (asserted with a small margin for
/// scheduling and the odd throttled pick).
fn rls_backoff() {
    let table = Arc::new(RoutingTable::from_json(&json!({"routes": []})).expect("table"));
    let rls = lb_rls::server::bind("127.0.0.1:0", table.clone()).expect("rls");
    let c = client(rls.local_addr(), Some(&backend_addr(DEFAULT)), "1s");
    let keys: Keys = Arc::new(|_, _, _| "s8-one".to_owned());
    let run = start_callers("backoff", &c.channel, 1, |_| secs(2.0), keys);
    let mut arrivals = Vec::new();
    while run.elapsed() < secs(5.2) {
        let n = table.requests().len();
        if n > arrivals.len() {
            arrivals.extend(std::iter::repeat_n(run.elapsed(), n - arrivals.len()));
        }
        thread::sleep(Duration::from_millis(2));
    }
    run.finish(|r| r.kind == Kind::Default);
    let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    println!("  detail rls_backoff: lookups at {arrivals:?}, gaps {gaps:?}");
    assert!(
        arrivals.len() >= 2 && arrivals.len() <= 3,
        "rls_backoff: {} lookups in 5.2 s: {arrivals:?}",
        arrivals.len()
    );
    let margin = secs(0.15);
    assert!(
        gaps[0] >= secs(1.28) - margin && gaps[0] <= secs(1.92) + margin,
        "rls_backoff: first retry after {:?}",
        gaps[0]
    );
    if let Some(g) = gaps.get(1) {
        assert!(
            *g >= secs(2.048) - margin && *g <= secs(3.072) + margin,
            "rls_backoff: second retry after {g:?}"
        );
    } else {
        // The third lookup may fall past the window only if the first two gaps
        // together exceed it.
        assert!(arrivals[1] + secs(2.048) - margin > secs(5.2) - arrivals[0]);
    }
    close(&c, "backoff");
    rls.shutdown(Duration::ZERO);
}

/// Scenario 8b: The adaptive throttler: every call a new key, every lookup fails
/// (UNAVAILABLE from the server). Default target configured. Rule: the default
/// target only. Throttled misses go to the default without a lookup, so lookups
/// stay well below attempts and their share shrinks over time.
fn rls_throttle() {
    let table = routing_table(&backend_addr(TARGET));
    table.set_failure(Some(Status::unavailable("overloaded")));
    let rls = lb_rls::server::bind("127.0.0.1:0", table.clone()).expect("rls");
    let c = client(rls.local_addr(), Some(&backend_addr(DEFAULT)), "1s");
    let keys: Keys = Arc::new(|t, _, n| format!("s8-t{t}-{n}"));
    let run = start_callers("throttle", &c.channel, 4, |_| secs(2.0), keys);
    thread::sleep(secs(1.5));
    let (half_attempts, half_lookups) = (
        run.counters.attempted.load(Ordering::SeqCst),
        table.requests().len(),
    );
    thread::sleep(secs(1.5));
    let out = run.finish(|r| r.kind == Kind::Default);
    let attempts = out.records.len();
    let lookups = table.requests().len();
    let second = (attempts - half_attempts, lookups - half_lookups);
    println!(
        "  detail rls_throttle: attempts {attempts}, lookups {lookups} (first half \
         {half_lookups}/{half_attempts}, second half {}/{}), default_target_picks {}",
        second.1,
        second.0,
        c.recorder.counter_total(RlsMetric::DefaultTargetPicks)
    );
    assert!(
        lookups * 4 < attempts,
        "rls_throttle: {lookups} lookups for {attempts} attempts: not throttled"
    );
    assert!(
        second.1 * half_attempts <= half_lookups * second.0,
        "rls_throttle: lookup share did not shrink"
    );
    close(&c, "throttle");
    rls.shutdown(Duration::ZERO);
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

static BACKENDS: Mutex<Vec<(&'static str, String)>> = Mutex::new(Vec::new());

fn backend_addr(name: &str) -> String {
    BACKENDS
        .lock()
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| a.clone())
        .expect("backend")
}

#[test]
fn rls_faults() {
    let baseline = thread_count();
    let started = Instant::now();
    let backends: Vec<Server> = [TARGET, DEFAULT]
        .into_iter()
        .map(|name| {
            let server = start_backend(name);
            BACKENDS
                .lock()
                .push((name, server.local_addr().to_string()));
            server
        })
        .collect();
    rls_down_at_start();
    rls_killed_midrun();
    rls_slow();
    rls_errors();
    rls_empty_targets();
    rls_garbage();
    rls_huge_header();
    rls_backoff();
    rls_throttle();
    for server in backends {
        server.shutdown(Duration::from_secs(1));
    }
    BACKENDS.lock().clear();
    let until = Instant::now() + Duration::from_secs(5);
    while thread_count() > baseline && Instant::now() < until {
        thread::sleep(Duration::from_millis(20));
    }
    println!(
        "threads: baseline {baseline}, now {} after {:?}",
        thread_count(),
        started.elapsed()
    );
    assert!(thread_count() <= baseline, "threads left behind");
}
