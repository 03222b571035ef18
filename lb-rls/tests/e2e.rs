//! The RLS policy inside a real channel, with `rls_dial_target` children, an RLS
//! server and backends on the in-memory transport and a manual clock: header data
//! reaching the backend (scenario 24), calls queued behind a pending lookup until
//! their deadline (scenario 19), the default target, and a close that ends every
//! connection and thread.

mod util;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_core::channel::{CallOptions, Channel, UnaryResponse};
use lb_core::transport::{CallRequest, CallResponse};
use lb_core::{Code, LbPolicyRegistry, Metadata, Status};
use lb_rls::balancer::{RlsBuilder, RlsBuilderOptions};
use lb_testkit::{InMemoryTransport, ManualClock};
use parking_lot::Mutex;
use serde_json::{Value, json};
use util::{FakeRls, METHOD, RLS, Throttle, WAIT};

struct World {
    clock: ManualClock,
    transport: InMemoryTransport,
    server: FakeRls,
    rls: RlsBuilder,
    throttle: Throttle,
    channel: Channel,
    /// The metadata each backend call carried, by backend address.
    seen: Arc<Mutex<Vec<(String, Metadata)>>>,
}

fn rls_config(default_target: Option<&str>) -> Value {
    let mut config = json!({
        "routeLookupConfig": {
            "grpcKeybuilders": [{
                "names": [{"service": "grpc.testing.TestService"}],
                "headers": [{"key": "k1", "names": ["n1"]}],
            }],
            "lookupService": format!("passthrough:///{RLS}"),
            "lookupServiceTimeout": "5s",
            "cacheSizeBytes": 10000,
        },
        "childPolicy": [{"rls_dial_target": {"childPolicy": [{"pick_first": {}}]}}],
        "childPolicyConfigTargetFieldName": "target",
    });
    if let Some(t) = default_target {
        config["routeLookupConfig"]["defaultTarget"] = t.into();
    }
    config
}

impl World {
    fn new(config: Value) -> Self {
        let clock = ManualClock::new();
        let transport = InMemoryTransport::with_clock(clock.shared());
        let server = FakeRls::start(&transport, RLS);
        let seen: Arc<Mutex<Vec<(String, Metadata)>>> = Arc::default();
        for backend in ["backend-a:1", "backend-b:1", "default:1"] {
            let seen = seen.clone();
            let name = backend.to_owned();
            transport.add_server(backend, move |call: &CallRequest| {
                seen.lock().push((name.clone(), call.metadata.clone()));
                Ok(CallResponse {
                    message: name.as_bytes().to_vec(),
                    ..Default::default()
                })
            });
        }
        let throttle = Throttle::default();
        let mut options = RlsBuilderOptions::new(Arc::new(transport.clone()));
        options.clock = Some(clock.shared());
        options.throttler = Some(throttle.factory());
        let mut registry = LbPolicyRegistry::with_builtins();
        let rls = lb_rls::register(&mut registry, options);
        let service_config = json!({"loadBalancingConfig": [{"rls_experimental": config}]});
        let channel = Channel::builder("passthrough:///svc.example.com")
            .transport(Arc::new(transport.clone()))
            .clock(clock.shared())
            .lb_policy_registry(registry)
            .default_service_config(service_config.to_string())
            .build()
            .expect("channel");
        Self {
            clock,
            transport,
            server,
            rls,
            throttle,
            channel,
            seen,
        }
    }

    /// A call with `md` and a 30 s deadline on the manual clock, made on a thread
    /// of its own so a call that waits can never hang the test.
    fn start_call(
        &self,
        md: Metadata,
    ) -> crossbeam_channel::Receiver<Result<UnaryResponse, Status>> {
        let channel = self.channel.clone();
        let deadline = self.clock.now() + Duration::from_secs(30);
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            let options = CallOptions::default()
                .with_metadata(md)
                .with_deadline(deadline);
            let _ = tx.send(channel.unary(METHOD, b"".to_vec(), options));
        });
        rx
    }

    fn call(&self, md: Metadata) -> Result<UnaryResponse, Status> {
        self.start_call(md)
            .recv_timeout(WAIT)
            .expect("the call ended in time")
    }
}

fn to(response: &Result<UnaryResponse, Status>) -> &str {
    std::str::from_utf8(&response.as_ref().expect("a response").message).unwrap()
}

#[test]
fn header_data_reaches_the_backend_exactly_once() {
    let w = World::new(rls_config(None));
    w.server
        .respond_targets(&["passthrough:///backend-a:1"], "foo,bar,baz");
    let response = w.call(util::md(&[("n1", "v1")]));
    assert_eq!(to(&response), "backend-a:1");
    let response = w.call(util::md(&[("n1", "v1")]));
    assert_eq!(to(&response), "backend-a:1");
    let seen = w.seen.lock();
    assert_eq!(seen.len(), 2);
    for (_, md) in seen.iter() {
        let values: Vec<&str> = md.get_all("x-google-rls-data").collect();
        assert_eq!(values, ["foo,bar,baz"]);
    }
    assert_eq!(w.server.request_count(), 1, "the second call hit the cache");
}

#[test]
fn calls_behind_a_pending_lookup_wait_until_their_deadline_and_skip_the_default() {
    let w = World::new(rls_config(Some("passthrough:///default:1")));
    w.transport.hold_calls(RLS);
    let deadline = w.clock.now() + Duration::from_secs(1);
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let channel = w.channel.clone();
            let (tx, rx) = crossbeam_channel::bounded(1);
            std::thread::spawn(move || {
                let options = CallOptions::default()
                    .with_metadata(util::md(&[("n1", "v1")]))
                    .with_deadline(deadline);
                let _ = tx.send(channel.unary(METHOD, b"".to_vec(), options));
            });
            rx
        })
        .collect();
    assert!(w.transport.wait_for_pending_calls(RLS, 1, WAIT));
    w.clock.advance_to(deadline);
    for rx in calls {
        let result = rx.recv_timeout(WAIT).expect("the call ended");
        assert_eq!(result.unwrap_err().code(), Code::DeadlineExceeded);
    }
    assert_eq!(w.transport.pending_calls(RLS), 1, "exactly one lookup");
    assert!(w.seen.lock().is_empty(), "the default target was not used");
    w.transport.release_calls(RLS);
}

#[test]
fn throttled_lookups_go_to_the_default_target() {
    let w = World::new(rls_config(Some("passthrough:///default:1")));
    w.throttle.set(true);
    let response = w.call(util::md(&[("n1", "v1")]));
    assert_eq!(to(&response), "default:1");
    let seen = w.seen.lock();
    assert_eq!(seen[0].1.get("x-google-rls-data"), None);
    assert_eq!(w.server.request_count(), 0);
}

#[test]
fn a_failed_lookup_fails_the_call_with_unavailable() {
    let w = World::new(rls_config(None));
    w.server
        .respond_with(|_| Err(Status::new(Code::PermissionDenied, "not for you")));
    let err = w.call(util::md(&[("n1", "v1")])).unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("not for you"), "{err}");
}

#[test]
fn closing_the_channel_ends_the_control_channel_children_and_threads() {
    let w = World::new(rls_config(Some("passthrough:///default:1")));
    w.server.respond_with(|req| {
        let target = match req.key_map.get("k1") {
            Some("a") => "passthrough:///backend-a:1",
            _ => "passthrough:///backend-b:1",
        };
        Ok(lb_rls::proto::RouteLookupResponse {
            targets: vec![target.into()],
            header_data: String::new(),
        })
    });
    assert_eq!(to(&w.call(util::md(&[("n1", "a")]))), "backend-a:1");
    assert_eq!(to(&w.call(util::md(&[("n1", "b")]))), "backend-b:1");
    assert!(w.rls.thread_count() > 0);
    let started = Instant::now();
    w.channel.close();
    assert!(started.elapsed() < WAIT);
    assert_eq!(w.rls.thread_count(), 0);
    for address in [RLS, "backend-a:1", "backend-b:1", "default:1"] {
        assert_eq!(w.transport.connection_count(address), 0, "{address}");
    }
}

#[test]
fn channelz_shows_the_control_channel_nested_and_the_policy_tree() {
    use lb_core::channelz::{self, Kind, Snapshot};
    let w = World::new(rls_config(None));
    w.server
        .respond_targets(&["passthrough:///backend-a:1"], "");
    let response = w.call(util::md(&[("n1", "v1")]));
    assert_eq!(to(&response), "backend-a:1");
    assert!(w.channel.settle());

    let parent = w.channel.channelz_id();
    let Some(Snapshot::Channel(snap)) = channelz::registry().get(parent) else {
        panic!("the channel is registered");
    };
    assert_eq!(snap.channels.len(), 1, "{snap:#?}");
    let control = snap.channels[0];
    assert_eq!(
        channelz::registry().kind(control),
        Some(Kind::NestedChannel)
    );
    let Some(Snapshot::Channel(nested)) = channelz::registry().get(control) else {
        panic!("the control channel is registered");
    };
    assert_eq!(nested.target, format!("passthrough:///{RLS}"));
    assert_eq!(nested.calls.started, 1, "one RouteLookup");
    assert_eq!(nested.calls.succeeded, 1);

    let view = channelz::registry()
        .policy(parent, WAIT)
        .expect("the serializer answers");
    assert_eq!(view.policy, "rls_experimental");
    assert_eq!(
        view.get_detail("control channel"),
        Some(control.to_string().as_str())
    );
    let cache = view.tables.iter().find(|t| t.title == "cache").unwrap();
    assert_eq!(cache.rows.len(), 1);
    assert_eq!(cache.rows[0][1], "passthrough:///backend-a:1");
    let child = view
        .find("passthrough:///backend-a:1")
        .expect("the target's child");
    assert_eq!(child.policy, "rls_dial_target");
    assert_eq!(child.get_detail("resolution"), Some("1 endpoints"));
    // Under it, the leaf policy with the target's one subchannel, READY.
    assert_eq!(child.children.len(), 1, "{child:#?}");
    let leaf = &child.children[0];
    assert_eq!(leaf.policy, "pick_first");
    assert_eq!(leaf.subchannels.len(), 1, "{leaf:#?}");
    assert_eq!(leaf.subchannels[0].address, "backend-a:1");
    assert_eq!(leaf.subchannels[0].state, lb_core::ConnectivityState::Ready);

    w.channel.close();
    assert!(channelz::registry().kind(parent).is_none());
    assert!(channelz::registry().kind(control).is_none());
}
