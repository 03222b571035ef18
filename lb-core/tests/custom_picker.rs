//! A policy of one's own on `ReadyList` (the endpoint-list building block): the
//! `custom_picker` example runs here, and a pick's completion callback is checked to
//! get the call's status, trailers and duration on the channel's clock.

#[path = "../examples/custom_picker.rs"]
mod example;

use std::sync::Arc;
use std::time::Duration;

use lb_core::channel::{CallOptions, Channel};
use lb_core::policies::ready_list::{ReadyListBuilder, ReadyPickers};
use lb_core::transport::{CallRequest, CallResponse};
use lb_core::{
    CallCompletion, Code, LbPolicyRegistry, Metadata, Pick, PickInfo, PickResult, Picker,
    SharedRandom, Subchannel,
};
use lb_testkit::{InMemoryTransport, ManualClock};
use parking_lot::Mutex;

#[test]
fn the_custom_picker_example_sends_calls_to_the_fastest_backend() {
    let (fast, slow) = example::run(20).expect("the example runs");
    assert_eq!(fast + slow, 20);
    // The slow backend is tried once (twice if the picker was rebuilt when the
    // second connection came up), then every call goes to the fast one.
    assert!((1..=2).contains(&slow), "fast {fast}, slow {slow}");
}

/// What each completion callback saw: code, one trailer, duration.
type Seen = Arc<Mutex<Vec<(Code, Option<String>, Duration)>>>;

#[derive(Debug)]
struct Recording(Seen);

struct RecordingPicker(Subchannel, Seen);

impl ReadyPickers for Recording {
    fn name(&self) -> &'static str {
        "recording"
    }

    fn picker(&mut self, ready: &[Subchannel], _: &SharedRandom) -> Arc<dyn Picker> {
        Arc::new(RecordingPicker(ready[0].clone(), self.0.clone()))
    }
}

impl Picker for RecordingPicker {
    fn pick(&self, _: &PickInfo<'_>) -> PickResult<'_> {
        let seen = self.1.clone();
        let mut pick = Pick::new(&self.0);
        pick.on_complete = Some(Box::new(move |done: &CallCompletion<'_>| {
            let load = done.trailers().get("x-load").map(str::to_owned);
            seen.lock().push((done.status.code(), load, done.duration));
        }));
        PickResult::Pick(pick)
    }
}

#[test]
fn the_completion_callback_gets_status_trailers_and_duration_on_the_channels_clock() {
    let clock = ManualClock::new();
    let transport = InMemoryTransport::with_clock(clock.shared());
    transport.add_server("127.0.0.1:1", |_: &CallRequest| {
        let mut trailers = Metadata::new();
        trailers.insert("x-load", "0.25").unwrap();
        Ok(CallResponse {
            trailers,
            ..Default::default()
        })
    });
    transport.set_latency("127.0.0.1:1", Duration::from_millis(250));
    let seen: Seen = Arc::default();
    let mut registry = LbPolicyRegistry::with_builtins();
    let for_builder = seen.clone();
    registry.register(ReadyListBuilder::new(move || {
        Recording(for_builder.clone())
    }));
    let channel = Channel::builder("ipv4:127.0.0.1:1")
        .transport(Arc::new(transport.clone()))
        .clock(clock.shared())
        .lb_policy_registry(registry)
        .default_service_config(r#"{"loadBalancingConfig": [{"recording": {}}]}"#)
        .build()
        .expect("channel");
    let call = {
        let channel = channel.clone();
        let deadline = clock.now() + Duration::from_secs(30);
        std::thread::spawn(move || {
            let options = CallOptions::default()
                .with_deadline(deadline)
                .with_wait_for_ready(true);
            channel.unary("/s/m", Vec::new(), options)
        })
    };
    assert!(
        transport.wait_for_pending_calls("127.0.0.1:1", 1, Duration::from_secs(20)),
        "the call reached the server"
    );
    assert!(seen.lock().is_empty(), "no completion before the answer");
    clock.advance(Duration::from_millis(250));
    call.join().unwrap().expect("the call succeeds");
    assert_eq!(
        *seen.lock(),
        [(
            Code::Ok,
            Some("0.25".to_owned()),
            Duration::from_millis(250)
        )]
    );
    channel.close();
}
