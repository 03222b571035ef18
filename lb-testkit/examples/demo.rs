//! `cargo xtask demo`: the most complete path that has landed, end to end.
//!
//! A service config chooses `round_robin`; a small driver (a preview of the channel's
//! serializer) feeds it three backends served by the in-memory transport, connects the
//! subchannels the policy asks for, and publishes its pickers. Four threads then make
//! calls through the pickers. Half-way through, one backend is stopped: the policy
//! sees the failure and the calls move to the other two. The summary shows where calls
//! went and their latency.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};
use lb_core::transport::{CallRequest, CallResponse, ConnectOptions, ConnectionEvent};
use lb_core::{
    Address, ChannelController, Connection, ConnectivityState, LbPolicy, LbPolicyOptions,
    LbPolicyRegistry, LbState, Metadata, PickInfo, PickResult, Picker, QueuePicker, ResolverUpdate,
    SharedRandom, Status, Subchannel, SubchannelBackend, SubchannelId, SubchannelState, Transport,
    WorkScheduler, endpoints,
};
use lb_testkit::InMemoryTransport;
use parking_lot::{Condvar, Mutex, RwLock};

const BACKENDS: [&str; 3] = ["backend-a:50051", "backend-b:50051", "backend-c:50051"];
const THREADS: usize = 4;
const CALLS_PER_THREAD: usize = 20_000;

/// Inputs of the serializer thread.
enum Input {
    Connect(SubchannelId),
    Shutdown(SubchannelId),
    Event(SubchannelId, ConnectionEvent),
    Work,
    Stop,
}

/// The subchannels' backend: turns connect/shutdown into serializer inputs.
struct Backend {
    tx: Sender<Input>,
}

impl SubchannelBackend for Backend {
    fn connect(&self, id: SubchannelId) {
        let _ = self.tx.send(Input::Connect(id));
    }
    fn shutdown(&self, id: SubchannelId) {
        let _ = self.tx.send(Input::Shutdown(id));
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl WorkScheduler for Backend {
    fn schedule_work(&self) {
        let _ = self.tx.send(Input::Work);
    }
}

/// Where app threads find the current picker and the connections behind subchannels.
#[derive(Default)]
struct Shared {
    picker: RwLock<Option<Arc<dyn Picker>>>,
    changed: Condvar,
    changed_lock: Mutex<u64>,
    connections: RwLock<HashMap<SubchannelId, Arc<dyn Connection>>>,
}

/// The controller the policy talks to, owned by the serializer.
struct Controller {
    backend: Arc<Backend>,
    shared: Arc<Shared>,
    subchannels: HashMap<SubchannelId, Subchannel>,
    next_id: u64,
    log: Vec<String>,
}

impl ChannelController for Controller {
    fn new_subchannel(&mut self, address: &Address) -> Subchannel {
        self.next_id += 1;
        let sc = Subchannel::new(
            SubchannelId(self.next_id),
            address.clone(),
            self.backend.clone(),
        );
        self.subchannels.insert(sc.id(), sc.clone());
        sc
    }
    fn update_picker(&mut self, state: LbState) {
        self.log
            .push(format!("policy is {}", state.connectivity_state));
        *self.shared.picker.write() = Some(state.picker);
        *self.shared.changed_lock.lock() += 1;
        self.shared.changed.notify_all();
    }
    fn request_resolution(&mut self) {
        self.log.push("policy asked for re-resolution".into());
    }
    fn wake_at(&mut self, _deadline: Instant) {}
}

fn serializer(
    mut policy: Box<dyn LbPolicy>,
    mut ctrl: Controller,
    rx: Receiver<Input>,
    transport: InMemoryTransport,
) -> Vec<String> {
    while let Ok(input) = rx.recv() {
        let now = Instant::now();
        match input {
            Input::Connect(id) => {
                let Some(sc) = ctrl.subchannels.get(&id).cloned() else {
                    continue;
                };
                let state = SubchannelState::new(ConnectivityState::Connecting);
                policy.subchannel_update(&sc, &state, &mut ctrl, now);
                let tx = ctrl.backend.tx.clone();
                let opts = ConnectOptions {
                    authority: "demo".into(),
                    connect_deadline: now + Duration::from_secs(20),
                    user_agent: "lb-demo".into(),
                };
                let events = Arc::new(move |e| {
                    let _ = tx.send(Input::Event(id, e));
                });
                if let Ok(conn) = transport.connect(sc.address(), &opts, events) {
                    ctrl.shared.connections.write().insert(id, conn);
                }
            }
            Input::Event(id, event) => {
                let Some(sc) = ctrl.subchannels.get(&id).cloned() else {
                    continue;
                };
                let state = match event {
                    ConnectionEvent::Ready => SubchannelState::new(ConnectivityState::Ready),
                    ConnectionEvent::Closed(Some(err)) => {
                        ctrl.log
                            .push(format!("{}: {}", sc.address(), err.message()));
                        ctrl.shared.connections.write().remove(&id);
                        SubchannelState::failure(err)
                    }
                    _ => {
                        ctrl.shared.connections.write().remove(&id);
                        SubchannelState::new(ConnectivityState::Idle)
                    }
                };
                policy.subchannel_update(&sc, &state, &mut ctrl, now);
            }
            Input::Shutdown(id) => {
                ctrl.subchannels.remove(&id);
                if let Some(conn) = ctrl.shared.connections.write().remove(&id) {
                    conn.close();
                }
            }
            Input::Work => policy.work(&mut ctrl, now),
            Input::Stop => break,
        }
    }
    policy.close();
    ctrl.log
}

/// One blocking call: pick, wait for a picker if queued, call on the connection.
fn call(shared: &Shared, message: &[u8]) -> Result<(String, Duration), Status> {
    let t = Instant::now();
    let md = Metadata::new();
    let info = PickInfo {
        method: "/demo.Echo/Say",
        metadata: &md,
    };
    loop {
        let seen = *shared.changed_lock.lock();
        let picker = shared
            .picker
            .read()
            .clone()
            .unwrap_or_else(|| Arc::new(QueuePicker));
        let conn = match picker.pick(&info) {
            PickResult::Pick(p) => shared.connections.read().get(&p.subchannel.id()).cloned(),
            PickResult::Queue => None,
            PickResult::Fail(s) | PickResult::Drop(s) => return Err(s),
        };
        if let Some(conn) = conn {
            let (tx, rx) = crossbeam_channel::bounded(1);
            conn.start_call(
                CallRequest::new("/demo.Echo/Say", message.to_vec()),
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            );
            match rx.recv().map_err(|_| Status::internal("call dropped"))? {
                Ok(response) => {
                    let from = String::from_utf8_lossy(&response.message).into_owned();
                    return Ok((from, t.elapsed()));
                }
                // The server never saw it: pick again (transparent retry).
                Err(e) if e.unprocessed => continue,
                Err(e) => return Err(e.status),
            }
        }
        // Queued (or the connection just went away): wait for the next picker.
        let mut guard = shared.changed_lock.lock();
        if *guard == seen {
            shared
                .changed
                .wait_for(&mut guard, Duration::from_millis(50));
        }
    }
}

fn main() {
    let transport = InMemoryTransport::new();
    for name in BACKENDS {
        transport.add_server(name, move |_req: &CallRequest| {
            Ok(CallResponse {
                message: name.as_bytes().to_vec(),
                ..Default::default()
            })
        });
    }

    let service_config =
        r#"{"loadBalancingConfig": [{"weighted_round_robin": {}}, {"round_robin": {}}]}"#;
    let registry = Arc::new(LbPolicyRegistry::with_builtins());
    let json: serde_json::Value = serde_json::from_str(service_config).expect("valid JSON");
    let chosen = registry
        .parse_load_balancing_config(&json["loadBalancingConfig"])
        .expect("a registered policy");
    println!(
        "service config {service_config}\n  -> chose {:?}",
        chosen.name()
    );

    let (tx, rx) = unbounded();
    let backend = Arc::new(Backend { tx: tx.clone() });
    let shared = Arc::new(Shared::default());
    let options = LbPolicyOptions {
        work_scheduler: backend.clone(),
        authority: "demo".into(),
        random: SharedRandom::from_entropy(),
        registry: registry.clone(),
    };
    let mut policy = chosen.builder.build(options);
    let mut ctrl = Controller {
        backend,
        shared: shared.clone(),
        subchannels: HashMap::new(),
        next_id: 0,
        log: Vec::new(),
    };
    let update = ResolverUpdate::from_endpoints(endpoints(BACKENDS));
    policy
        .resolver_update(update, Some(&chosen.config), &mut ctrl, Instant::now())
        .expect("update accepted");
    let driver = {
        let transport = transport.clone();
        thread::Builder::new()
            .name("lb-serializer".into())
            .spawn(move || serializer(policy, ctrl, rx, transport))
            .expect("spawn serializer")
    };

    let started = Instant::now();
    let killed = Arc::new(AtomicBool::new(false));
    let results: Vec<_> = thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let shared = &shared;
                let transport = &transport;
                let killed = &killed;
                s.spawn(move || {
                    let mut seen: BTreeMap<(bool, String), usize> = BTreeMap::new();
                    let mut latencies = Vec::with_capacity(CALLS_PER_THREAD);
                    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
                    for i in 0..CALLS_PER_THREAD {
                        if t == 0 && i == CALLS_PER_THREAD / 2 {
                            transport.remove_server(BACKENDS[1]);
                            killed.store(true, Ordering::SeqCst);
                        }
                        match call(shared, b"hello") {
                            Ok((from, latency)) => {
                                *seen
                                    .entry((killed.load(Ordering::SeqCst), from))
                                    .or_default() += 1;
                                latencies.push(latency);
                            }
                            Err(e) => *failures.entry(e.to_string()).or_default() += 1,
                        }
                    }
                    (seen, latencies, failures)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect()
    });
    let elapsed = started.elapsed();
    tx.send(Input::Stop).expect("serializer running");
    let log = driver.join().expect("serializer");

    let mut by_phase: BTreeMap<(bool, String), usize> = BTreeMap::new();
    let mut latencies = Vec::new();
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for (seen, lat, failed) in results {
        for (k, n) in seen {
            *by_phase.entry(k).or_default() += n;
        }
        latencies.extend(lat);
        for (k, n) in failed {
            *failures.entry(k).or_default() += n;
        }
    }
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    println!("\npolicy events:");
    for line in log {
        println!("  {line}");
    }
    for (phase, label) in [
        (false, "before backend-b stopped"),
        (true, "after backend-b stopped"),
    ] {
        println!("\ncalls {label}:");
        for ((p, from), n) in &by_phase {
            if *p == phase {
                println!("  {from:<18} {n:>7}");
            }
        }
    }
    let failed: usize = failures.values().sum();
    let total = latencies.len() + failed;
    println!(
        "\n{total} calls from {THREADS} threads in {elapsed:.2?}: {} ok, {failed} failed; \
         latency p50 {:?} p99 {:?} max {:?}",
        latencies.len(),
        pct(0.50),
        pct(0.99),
        pct(1.0),
    );
    for (why, n) in failures {
        println!(
            "  {n} failed with {why} (picked backend-b as it stopped; the channel will retry these)"
        );
    }
}
