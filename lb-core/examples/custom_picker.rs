//! A load-balancing policy of your own in about 30 lines: `fastest` sends each call
//! to the READY backend whose last call took the least time. The subchannel
//! plumbing (connect to every address, reconnect, the aggregate state,
//! re-resolution on failure) is lb-core's `ReadyList`; the policy is only a picker,
//! and it learns each call's duration from the pick's completion callback.
//!
//! Two in-process backends answer, one at once and one after 200 ms; after one call
//! each, every call goes to the fast one. Run it with
//! `cargo run -p lb-core --example custom_picker`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lb_core::channel::{CallOptions, Channel};
use lb_core::policies::ready_list::{ReadyListBuilder, ReadyPickers};
use lb_core::transport::{CallRequest, CallResponse};
use lb_core::{
    CallCompletion, LbPolicyRegistry, Pick, PickInfo, PickResult, Picker, SharedRandom, Subchannel,
};
use lb_testkit::InMemoryTransport;

// ---- the policy -----------------------------------------------------------------

/// The `fastest` policy: its pickers over the READY subchannels.
#[derive(Debug)]
struct Fastest;

/// Each READY subchannel with its last call's duration in µs (0: not tried yet).
struct FastestPicker(Vec<(Subchannel, Arc<AtomicU64>)>);

impl ReadyPickers for Fastest {
    fn name(&self) -> &'static str {
        "fastest"
    }

    fn picker(&mut self, ready: &[Subchannel], _: &SharedRandom) -> Arc<dyn Picker> {
        let timed = ready.iter().map(|sc| (sc.clone(), Arc::default()));
        Arc::new(FastestPicker(timed.collect()))
    }
}

impl Picker for FastestPicker {
    fn pick(&self, _: &PickInfo<'_>) -> PickResult<'_> {
        let (subchannel, last) = (self.0.iter())
            .min_by_key(|(_, last)| last.load(Ordering::Relaxed))
            .expect("a ReadyList picker always has a READY subchannel");
        let last = last.clone();
        let mut pick = Pick::new(subchannel);
        pick.on_complete = Some(Box::new(move |done: &CallCompletion<'_>| {
            let micros = done.duration.as_micros().max(1);
            last.store(u64::try_from(micros).unwrap_or(u64::MAX), Ordering::Relaxed);
        }));
        PickResult::Pick(pick)
    }
}

// ---- a program that uses it -------------------------------------------------------

/// Makes `calls` calls through `fastest` and returns how many each backend served
/// (fast, slow).
pub(crate) fn run(calls: usize) -> Result<(usize, usize), Box<dyn std::error::Error>> {
    const FAST: &str = "127.0.0.1:50001";
    const SLOW: &str = "127.0.0.1:50002";
    let transport = InMemoryTransport::new();
    for backend in [FAST, SLOW] {
        transport.add_server(backend, |_: &CallRequest| Ok(CallResponse::default()));
    }
    transport.set_latency(SLOW, Duration::from_millis(200));

    let mut registry = LbPolicyRegistry::with_builtins();
    registry.register(ReadyListBuilder::new(|| Fastest));
    let channel = Channel::builder(format!("ipv4:{FAST},{SLOW}"))
        .transport(Arc::new(transport.clone()))
        .lb_policy_registry(registry)
        .default_service_config(r#"{"loadBalancingConfig": [{"fastest": {}}]}"#)
        .build()?;
    let options = CallOptions::default()
        .with_timeout(Duration::from_secs(10))
        .with_wait_for_ready(true);
    for i in 0..calls {
        channel.unary("/demo.Svc/Get", Vec::new(), options.clone())?;
        if i == 0 {
            // The first call waited for a READY backend; let the channel take in
            // the other one too before the rest (in-memory calls are so quick
            // that they could all be over before it does).
            channel.settle();
        }
    }
    channel.close();
    Ok((transport.call_count(FAST), transport.call_count(SLOW)))
}

#[allow(dead_code)] // `lb-core/tests/custom_picker.rs` includes this file and calls `run`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (fast, slow) = run(20)?;
    println!("fastest: the fast backend served {fast} calls, the slow one {slow}");
    Ok(())
}
