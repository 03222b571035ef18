//! RLS pick benchmarks: the cost of one `Picker::pick` on a cache hit, on one thread
//! and as the aggregate throughput of two threads picking from the same picker.
//!
//! The picker is built by the real policy: its control channel asks an RLS server on
//! the in-memory transport, the response creates the child (`pick_first`), whose
//! subchannel is made READY. A hit then builds the (empty) key map, reads the
//! clock, finds the entry in the picker's index without a lock and delegates to
//! the child's picker. As in lb-core's pick benchmarks, the two-thread figure is
//! wall time divided by the total number of picks, so `1_thread / 2_threads` is
//! the speed-up. Run with `cargo bench -p lb-rls --bench picker`.

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use crossbeam_channel::Sender;
use lb_core::channel::SystemClock;
use lb_core::transport::{CallRequest, CallResponse};
use lb_core::{
    ConnectivityState, LbPolicy, LbPolicyBuilder, LbPolicyOptions, LbPolicyRegistry, Picker,
    ResolverUpdate, SharedRandom, SplitMix64, WorkScheduler, endpoints,
};
use lb_rls::balancer::RlsBuilderOptions;
use lb_rls::proto::RouteLookupResponse;
use lb_testkit::picks::{parallel_picks, pick_address};
use lb_testkit::{Event, FakeController, InMemoryTransport};

struct Signal(Sender<()>);

impl WorkScheduler for Signal {
    fn schedule_work(&self) {
        let _ = self.0.send(());
    }
}

/// A picker whose cache holds the entry for `lb_testkit::picks::TEST_METHOD`, and
/// the policy that published it (kept alive while the picker is used).
fn hit_picker() -> (Arc<dyn Picker>, Box<dyn LbPolicy>) {
    let transport = InMemoryTransport::new();
    transport.add_server("rls:1", |_: &CallRequest| {
        let response = RouteLookupResponse {
            targets: vec!["backend-a".into()],
            header_data: String::new(),
        };
        Ok(CallResponse {
            message: response.to_bytes(),
            ..Default::default()
        })
    });
    let mut registry = LbPolicyRegistry::with_builtins();
    let rls = lb_rls::register(&mut registry, RlsBuilderOptions::new(Arc::new(transport)));
    let json = serde_json::json!({
        "routeLookupConfig": {
            "grpcKeybuilders": [{"names": [{"service": "test.Service"}]}],
            "lookupService": "passthrough:///rls:1",
            "cacheSizeBytes": 100000,
        },
        "childPolicy": [{"pick_first": {}}],
        "childPolicyConfigTargetFieldName": "serviceName",
    });
    let config = registry
        .parse_load_balancing_config(&serde_json::json!([{ "rls_experimental": json }]))
        .expect("config")
        .config;
    let (tx, work) = crossbeam_channel::unbounded();
    let mut ctrl = FakeController::new();
    let mut policy = rls.build(LbPolicyOptions {
        work_scheduler: Arc::new(Signal(tx)),
        authority: "svc.example.com".into(),
        random: SharedRandom::new(SplitMix64::seeded(1)),
        registry: Arc::new(registry),
        channels: None,
        channelz: Default::default(),
        metrics: lb_core::metrics::Metrics::none(),
    });
    let clock = SystemClock;
    use lb_core::channel::Clock;
    let update = ResolverUpdate::from_endpoints(endpoints(["10.0.0.1:443"]));
    policy
        .resolver_update(update, Some(&config), &mut ctrl, clock.now())
        .expect("update");
    let mut picker = ctrl.latest_state().picker;
    for _ in 0..1000 {
        if pick_address(&*picker).is_some() {
            return (picker, policy);
        }
        policy.work(&mut ctrl, clock.now());
        for event in ctrl.take_events() {
            match event {
                Event::NewSubchannel(sc) => {
                    ctrl.update_subchannel(
                        &mut *policy,
                        &sc,
                        ConnectivityState::Ready,
                        clock.now(),
                    );
                }
                Event::UpdatePicker(state) => picker = state.picker,
                _ => {}
            }
        }
        for event in ctrl.take_events() {
            if let Event::UpdatePicker(state) = event {
                picker = state.picker;
            }
        }
        if pick_address(&*picker).is_none() {
            let _ = work.recv_timeout(Duration::from_millis(100));
        }
    }
    panic!("the RLS lookup never completed");
}

fn picks(c: &mut Criterion) {
    let (picker, _policy) = hit_picker();
    let mut group = c.benchmark_group("rls_pick_hit");
    // Both arms use the same loop on spawned threads, so their ratio is the scaling.
    group.bench_function("1_thread", |b| {
        b.iter_custom(|iters| parallel_picks(&picker, 1, iters))
    });
    group.bench_function("2_threads", |b| {
        b.iter_custom(|iters| parallel_picks(&picker, 2, iters))
    });
    group.finish();
}

criterion_group!(benches, picks);
criterion_main!(benches);
