//! Scenario tests of the channel on lb-testkit's in-memory transport, with a manual
//! clock. Calls that must block run on their own threads; the test moves the clock,
//! waits for the serializer with `settle`, and collects their results (every wait
//! on another thread is bounded by `WAIT`).

use lb_core::CallCompletion;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use lb_core::channel::{CallOptions, Channel, ChannelError, Codec, ResolverRegistry};
use lb_core::config::ConfigError;
use lb_core::transport::{CallError, CallRequest, CallResponse};
use lb_core::{
    ChannelController, Code, ConnectivityState as S, LbConfig, LbPolicy, LbPolicyBuilder,
    LbPolicyOptions, LbPolicyRegistry, LbState, Metadata, Pick, PickInfo, PickResult, Picker,
    ResolverUpdate, Status, Subchannel, SubchannelState, UpdateError,
};
use lb_testkit::ManualResolver;
use parking_lot::Mutex;

mod util;
use util::{Env, WAIT};

/// Calls `/test.Echo/Who`; the in-memory servers answer with their address.
fn who(channel: &Channel) -> Result<String, Status> {
    call_with(channel, "/test.Echo/Who", CallOptions::default())
}

fn call_with(channel: &Channel, method: &str, options: CallOptions) -> Result<String, Status> {
    channel
        .unary(method, b"hi".to_vec(), options)
        .map(|r| String::from_utf8(r.message).expect("utf-8"))
}

/// Runs a call on a thread of its own.
fn spawn_call(
    channel: &Channel,
    method: &'static str,
    options: CallOptions,
) -> Receiver<Result<String, Status>> {
    let channel = channel.clone();
    let (tx, rx) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let _ = tx.send(call_with(&channel, method, options));
    });
    rx
}

fn result_of(rx: &Receiver<Result<String, Status>>) -> Result<String, Status> {
    rx.recv_timeout(WAIT).expect("the call returned")
}

/// Whether the call has not returned yet (looks without taking the result).
fn still_waiting(rx: &Receiver<Result<String, Status>>) -> bool {
    rx.is_empty()
}

/// Where `n` calls go once the channel has settled (a first call wakes it).
fn sorted_calls(channel: &Channel, n: usize) -> Vec<String> {
    let _ = who(channel);
    assert!(channel.settle());
    let mut seen: Vec<String> = (0..n).map(|_| who(channel).unwrap()).collect();
    seen.sort();
    seen.dedup();
    seen
}

#[test]
fn a_call_reaches_its_backend_with_metadata_both_ways() {
    let env = Env::new();
    env.transport.add_server("a:1", |req: &CallRequest| {
        let mut headers = Metadata::new();
        headers
            .insert("x-seen-user", req.metadata.get("x-user").unwrap_or("none"))
            .unwrap();
        let mut trailers = Metadata::new();
        trailers.insert("x-method", &req.method).unwrap();
        Ok(CallResponse {
            headers,
            message: req.message.iter().rev().copied().collect(),
            trailers,
        })
    });
    let channel = env.builder("passthrough:///a:1").build().unwrap();
    assert_eq!(channel.state(false), S::Idle);
    let mut metadata = Metadata::new();
    metadata.insert("x-user", "alice").unwrap();
    let response = channel
        .unary(
            "/test.Echo/Reverse",
            &b"abc"[..],
            CallOptions::default().with_metadata(metadata),
        )
        .unwrap();
    assert_eq!(response.message, b"cba");
    assert_eq!(response.headers.get("x-seen-user"), Some("alice"));
    assert_eq!(
        response.trailers.get("x-method"),
        Some("/test.Echo/Reverse")
    );
    assert_eq!(channel.state(false), S::Ready);
    assert_eq!(channel.authority(), "a:1");
}

#[test]
fn typed_calls_go_through_the_codec() {
    struct Numbers;
    impl Codec for Numbers {
        type Request = u32;
        type Response = u32;
        fn encode(&self, request: &u32) -> Vec<u8> {
            request.to_be_bytes().to_vec()
        }
        fn decode(&self, bytes: &[u8]) -> Result<u32, Status> {
            let bytes: [u8; 4] = bytes
                .try_into()
                .map_err(|_| Status::internal(format!("{} bytes is not a u32", bytes.len())))?;
            Ok(u32::from_be_bytes(bytes))
        }
    }
    let env = Env::new();
    env.transport.add_server("a:1", |req: &CallRequest| {
        let n = u32::from_be_bytes(req.message[..].try_into().unwrap());
        let message = if n == 0 {
            vec![1]
        } else {
            (n * 2).to_be_bytes().to_vec()
        };
        Ok(CallResponse {
            message,
            ..Default::default()
        })
    });
    let channel = env.builder("passthrough:///a:1").build().unwrap();
    let doubled = channel.unary_typed("/test.Math/Double", &Numbers, &21, CallOptions::default());
    assert_eq!(doubled, Ok(42));
    let err = channel
        .unary_typed("/test.Math/Double", &Numbers, &0, CallOptions::default())
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(err.message().contains("1 bytes"), "{err}");
}

#[test]
fn resolver_updates_move_calls_between_backends() {
    let env = Env::new();
    for a in ["a:1", "b:1", "c:1"] {
        env.transport.serve_address(a);
    }
    let resolver = ManualResolver::default();
    let channel = env
        .builder("test:///svc")
        .resolver_registry(resolver.registry())
        .default_service_config(r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#)
        .build()
        .unwrap();
    resolver.push_addresses(&["a:1", "b:1"]);
    assert_eq!(sorted_calls(&channel, 10), ["a:1", "b:1"]);
    resolver.push_addresses(&["b:1", "c:1"]);
    assert!(channel.settle());
    assert_eq!(sorted_calls(&channel, 10), ["b:1", "c:1"]);
    assert_eq!(
        env.transport.connection_count("a:1"),
        0,
        "a:1 was shut down"
    );
    let before = env.transport.call_count("a:1");
    assert_eq!(sorted_calls(&channel, 10), ["b:1", "c:1"]);
    assert_eq!(env.transport.call_count("a:1"), before);
}

#[test]
fn a_service_config_change_switches_pick_first_to_round_robin() {
    let env = Env::new();
    for a in ["a:1", "b:1"] {
        env.transport.serve_address(a);
    }
    let resolver = ManualResolver::default();
    let channel = env
        .builder("test:///svc")
        .resolver_registry(resolver.registry())
        .build()
        .unwrap();
    resolver.push_addresses(&["a:1", "b:1"]);
    assert_eq!(sorted_calls(&channel, 6), ["a:1"], "pick_first by default");
    resolver.push_with_config(
        &["a:1", "b:1"],
        r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#,
    );
    assert!(channel.settle());
    assert_eq!(sorted_calls(&channel, 6), ["a:1", "b:1"], "round_robin now");
    assert_eq!(
        env.transport.connection_count("a:1"),
        1,
        "pick_first's was closed"
    );
    // A config the channel cannot parse keeps the one in use.
    resolver.push_with_config(
        &["a:1", "b:1"],
        r#"{"loadBalancingConfig": [{"nope": {}}]}"#,
    );
    assert!(channel.settle());
    assert_eq!(sorted_calls(&channel, 6), ["a:1", "b:1"]);
}

#[test]
fn the_resolver_service_config_wins_over_the_default() {
    let env = Env::new();
    for a in ["a:1", "b:1"] {
        env.transport.serve_address(a);
    }
    let resolver = ManualResolver::default();
    let channel = env
        .builder("test:///svc")
        .resolver_registry(resolver.registry())
        .default_service_config(r#"{"loadBalancingPolicy": "round_robin"}"#)
        .build()
        .unwrap();
    resolver.push_addresses(&["a:1", "b:1"]);
    assert_eq!(sorted_calls(&channel, 6), ["a:1", "b:1"], "the default");
    resolver.push_with_config(
        &["a:1", "b:1"],
        r#"{"loadBalancingConfig": [{"pick_first": {}}]}"#,
    );
    assert!(channel.settle());
    assert_eq!(
        sorted_calls(&channel, 6).len(),
        1,
        "the resolver's pick_first"
    );
    resolver.push_addresses(&["a:1", "b:1"]);
    assert!(channel.settle());
    assert_eq!(
        sorted_calls(&channel, 6),
        ["a:1", "b:1"],
        "no config: default again"
    );
}

#[test]
fn fail_fast_calls_fail_and_wait_for_ready_calls_wait_in_transient_failure() {
    let env = Env::new();
    env.transport.serve_address("a:1");
    env.transport.refuse_connections("a:1", true);
    let channel = env.builder("passthrough:///a:1").build().unwrap();
    assert_eq!(channel.state(true), S::Idle);
    assert!(channel.settle());
    assert_eq!(channel.state(false), S::TransientFailure);
    let err = who(&channel).unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("connection refused"), "{err}");
    let waiting = spawn_call(
        &channel,
        "/test.Echo/Who",
        env.deadline_in(Duration::from_secs(60))
            .with_wait_for_ready(true),
    );
    env.transport.refuse_connections("a:1", false);
    assert!(
        still_waiting(&waiting),
        "nothing changed for the channel yet"
    );
    env.advance(&channel, Duration::from_secs(1));
    assert_eq!(
        result_of(&waiting),
        Ok("a:1".into()),
        "reconnected after 1 s backoff"
    );
    assert_eq!(who(&channel), Ok("a:1".into()));
}

#[test]
fn a_queued_call_fails_at_its_deadline_with_the_latest_balancer_error() {
    let env = Env::new();
    env.transport.serve_address("a:1");
    env.transport.refuse_connections("a:1", true);
    let channel = env.builder("passthrough:///a:1").build().unwrap();
    channel.state(true);
    assert!(channel.settle());
    let waiting = spawn_call(
        &channel,
        "/test.Echo/Who",
        env.deadline_in(Duration::from_secs(3))
            .with_wait_for_ready(true),
    );
    env.advance(&channel, Duration::from_millis(2999));
    assert!(still_waiting(&waiting));
    env.advance(&channel, Duration::from_millis(1));
    let err = result_of(&waiting).unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(
        err.message().contains("latest balancer error")
            && err.message().contains("connection refused"),
        "{err}"
    );
}

#[test]
fn a_call_queued_while_connecting_fails_at_its_deadline() {
    let env = Env::new();
    env.transport.serve_address("a:1");
    env.transport.hold_connections("a:1", true);
    let channel = env.builder("passthrough:///a:1").build().unwrap();
    let waiting = spawn_call(
        &channel,
        "/test.Echo/Who",
        env.deadline_in(Duration::from_secs(5)),
    );
    // The call woke the channel, which is connecting.
    assert!(channel.wait_for_state_change(S::Idle, env.clock.now() + WAIT));
    assert!(channel.settle());
    assert_eq!(channel.state(false), S::Connecting);
    env.advance(&channel, Duration::from_millis(4999));
    assert!(still_waiting(&waiting));
    env.advance(&channel, Duration::from_millis(1));
    let err = result_of(&waiting).unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(err.message().contains("waiting for a connection"), "{err}");
}

#[test]
fn a_zero_or_past_deadline_on_a_ready_channel_says_so() {
    let env = Env::new();
    env.transport.serve_address("a:1");
    let channel = env.builder("passthrough:///a:1").build().unwrap();
    assert_eq!(who(&channel).unwrap(), "a:1", "READY");
    for options in [
        CallOptions::default().with_timeout(Duration::ZERO),
        CallOptions::default().with_deadline(env.clock.now() - Duration::from_secs(1)),
    ] {
        let err = call_with(&channel, "/test.Echo/Who", options).unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded);
        assert!(
            err.message()
                .contains("had already passed when the call started"),
            "{err}"
        );
        assert!(!err.message().contains("waiting for a connection"), "{err}");
    }
}

#[test]
fn method_configs_cap_message_sizes_below_the_channel_limits() {
    let env = Env::new();
    env.transport.serve_address("a:1");
    let channel = env
        .builder("passthrough:///a:1")
        .default_service_config(
            r#"{"methodConfig": [
                {"name": [{"service": "test.Echo", "method": "Who"}], "maxResponseMessageBytes": 2},
                {"name": [{"service": "test.Small"}], "maxRequestMessageBytes": "4"}
            ]}"#,
        )
        .build()
        .unwrap();
    // The backend answers with its address, 3 bytes.
    let err = who(&channel).unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("(3 vs. 2)"), "{err}");
    let send = |n: usize| {
        channel
            .unary("/test.Small/Any", vec![0; n], CallOptions::default())
            .map(|r| r.message)
    };
    assert_eq!(send(4).unwrap(), b"a:1");
    let err = send(5).unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("(5 vs. 4)"), "{err}");
}

#[test]
fn a_call_in_flight_fails_at_its_deadline() {
    let env = Env::new();
    env.transport.serve_address("a:1");
    env.transport.hold_calls("a:1");
    let channel = env.builder("passthrough:///a:1").build().unwrap();
    let waiting = spawn_call(
        &channel,
        "/test.Echo/Who",
        env.deadline_in(Duration::from_secs(1)),
    );
    assert!(env.transport.wait_for_pending_calls("a:1", 1, WAIT));
    env.advance(&channel, Duration::from_secs(1));
    assert_eq!(
        result_of(&waiting).unwrap_err().code(),
        Code::DeadlineExceeded
    );
}

#[test]
fn a_method_config_timeout_limits_calls_to_that_method() {
    let env = Env::new();
    env.transport.serve_address("a:1");
    env.transport.hold_calls("a:1");
    let channel = env
        .builder("passthrough:///a:1")
        .default_service_config(
            r#"{"methodConfig": [
                {"name": [{"service": "test.Echo", "method": "Slow"}], "timeout": "2s"}
            ]}"#,
        )
        .build()
        .unwrap();
    let slow = spawn_call(&channel, "/test.Echo/Slow", CallOptions::default());
    let other = spawn_call(&channel, "/test.Echo/Other", CallOptions::default());
    // Both calls reached the server, so both read their start time already.
    assert!(env.transport.wait_for_pending_calls("a:1", 2, WAIT));
    env.advance(&channel, Duration::from_millis(1999));
    assert!(still_waiting(&slow));
    env.advance(&channel, Duration::from_millis(1));
    assert_eq!(result_of(&slow).unwrap_err().code(), Code::DeadlineExceeded);
    env.advance(&channel, Duration::from_secs(3600));
    assert!(still_waiting(&other), "no timeout for other methods");
    env.transport.release_calls("a:1");
    assert_eq!(result_of(&other), Ok("a:1".into()));
}

#[test]
fn a_method_config_can_make_calls_wait_for_ready() {
    let env = Env::new();
    env.transport.serve_address("a:1");
    let (picks_tx, picks) = crossbeam_channel::unbounded();
    let mut registry = LbPolicyRegistry::with_builtins();
    registry.register(TagBuilder {
        completions: Arc::default(),
        drop_code: None,
        fail: Some(picks_tx),
    });
    let channel = env
        .builder("passthrough:///a:1")
        .lb_policy_registry(registry)
        .default_service_config(
            r#"{"loadBalancingConfig": [{"tag": {}}],
                "methodConfig": [{"name": [{"service": "test.Patient"}], "waitForReady": true}]}"#,
        )
        .build()
        .unwrap();
    let err = who(&channel).unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unavailable, "failing by tag")
    );
    picks.try_iter().for_each(drop);
    let patient = spawn_call(
        &channel,
        "/test.Patient/Who",
        env.deadline_in(Duration::from_secs(3)),
    );
    picks.recv_timeout(WAIT).expect("the call picked");
    assert!(channel.settle());
    assert!(still_waiting(&patient), "a failing pick does not end it");
    env.advance(&channel, Duration::from_secs(3));
    let err = result_of(&patient).unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(
        err.message()
            .contains("latest balancer error: failing by tag"),
        "{err}"
    );
}

#[test]
fn idle_channels_shut_subchannels_down_and_the_next_call_reconnects() {
    let env = Env::new();
    env.transport.serve_address("a:1");
    let channel = env
        .builder("passthrough:///a:1")
        .idle_timeout(Some(Duration::from_secs(60)))
        .build()
        .unwrap();
    assert_eq!(who(&channel), Ok("a:1".into()));
    assert_eq!(env.transport.connection_count("a:1"), 1);
    env.advance(&channel, Duration::from_secs(59));
    assert_eq!(channel.state(false), S::Ready);
    assert_eq!(env.transport.connection_count("a:1"), 1);
    env.advance(&channel, Duration::from_secs(1));
    assert_eq!(channel.state(false), S::Idle);
    assert_eq!(
        env.transport.connection_count("a:1"),
        0,
        "connection closed"
    );
    assert_eq!(who(&channel), Ok("a:1".into()));
    assert_eq!(env.transport.connect_count("a:1"), 2, "reconnected");
    assert_eq!(channel.state(false), S::Ready);
}

#[test]
fn a_long_call_keeps_the_channel_out_of_idle() {
    let env = Env::new();
    env.transport.serve_address("a:1");
    env.transport.hold_calls("a:1");
    let channel = env
        .builder("passthrough:///a:1")
        .idle_timeout(Some(Duration::from_secs(60)))
        .build()
        .unwrap();
    let long = spawn_call(&channel, "/test.Echo/Who", CallOptions::default());
    assert!(env.transport.wait_for_pending_calls("a:1", 1, WAIT));
    env.advance(&channel, Duration::from_secs(90));
    assert_eq!(channel.state(false), S::Ready, "a call is in flight");
    env.transport.release_calls("a:1");
    assert_eq!(result_of(&long), Ok("a:1".into()));
    // The call ended at t=90 s: idle at t=150 s.
    env.advance(&channel, Duration::from_secs(59));
    assert_eq!(channel.state(false), S::Ready);
    env.advance(&channel, Duration::from_secs(1));
    assert_eq!(channel.state(false), S::Idle);
}

#[test]
fn re_resolution_requests_reach_the_resolver_at_most_every_30_seconds() {
    let env = Env::new();
    env.transport.serve_address("a:1");
    let resolver = ManualResolver::default();
    let channel = env
        .builder("test:///svc")
        .resolver_registry(resolver.registry())
        .build()
        .unwrap();
    resolver.push_addresses(&["a:1"]);
    assert_eq!(who(&channel), Ok("a:1".into()));
    // Losing the connection makes pick_first ask for re-resolution; the resolver
    // started at t=0, so the request waits until t=30 s.
    env.transport.close_connections("a:1");
    assert!(channel.settle());
    assert_eq!(resolver.resolve_now_count(), 0);
    env.advance(&channel, Duration::from_millis(29_999));
    assert_eq!(resolver.resolve_now_count(), 0);
    env.advance(&channel, Duration::from_millis(1));
    assert_eq!(resolver.resolve_now_count(), 1);
    assert_eq!(
        who(&channel),
        Ok("a:1".into()),
        "reconnects on the next call"
    );
    env.advance(&channel, Duration::from_secs(1));
    env.transport.close_connections("a:1");
    assert!(channel.settle());
    env.advance(&channel, Duration::from_millis(28_999));
    assert_eq!(resolver.resolve_now_count(), 1, "30 s after the last one");
    env.advance(&channel, Duration::from_millis(1));
    assert_eq!(resolver.resolve_now_count(), 2);
}

#[test]
fn reconnects_back_off_one_second_then_one_point_six_with_jitter() {
    let env = Env::new();
    env.transport.serve_address("a:1");
    env.transport.refuse_connections("a:1", true);
    let channel = env.builder("passthrough:///a:1").build().unwrap();
    channel.state(true);
    assert!(channel.settle());
    assert_eq!(env.transport.connect_count("a:1"), 1);
    env.advance(&channel, Duration::from_millis(999));
    assert_eq!(env.transport.connect_count("a:1"), 1);
    env.advance(&channel, Duration::from_millis(1));
    assert_eq!(
        env.transport.connect_count("a:1"),
        2,
        "second attempt after exactly 1 s"
    );
    let mut waited = Duration::ZERO;
    while env.transport.connect_count("a:1") == 2 && waited < Duration::from_secs(3) {
        env.advance(&channel, Duration::from_millis(10));
        waited += Duration::from_millis(10);
    }
    assert_eq!(env.transport.connect_count("a:1"), 3);
    assert!(
        waited >= Duration::from_millis(1280) && waited <= Duration::from_millis(1920),
        "third attempt {waited:?} after the second: 1.6 s ± 20 %"
    );
    assert_eq!(channel.state(false), S::TransientFailure);
}

#[test]
fn unprocessed_calls_are_retried_transparently_and_processed_ones_are_not() {
    let env = Env::new();
    env.transport.serve_address("a:1");
    let channel = env.builder("passthrough:///a:1").build().unwrap();
    let refused = || CallError::unprocessed(Status::unavailable("stream refused"));
    env.transport.fail_next_calls("a:1", 3, refused());
    assert_eq!(who(&channel), Ok("a:1".into()));
    assert_eq!(
        env.transport.call_count("a:1"),
        1,
        "the server saw one call"
    );
    env.transport
        .fail_next_calls("a:1", 1, Status::internal("boom").into());
    let err = who(&channel).unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::Internal, "boom"));
    assert_eq!(env.transport.call_count("a:1"), 2);
    // The retries are bounded.
    env.transport.fail_next_calls("a:1", 1000, refused());
    let err = who(&channel).unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unavailable, "stream refused")
    );
}

#[test]
fn an_ipv4_list_resolves_statically_and_fail_fast_calls_report_the_refusal() {
    let env = Env::new();
    env.transport.serve_address("10.0.0.2:1");
    let channel = env
        .builder("ipv4:10.0.0.1:1,10.0.0.2:1")
        .default_service_config(r#"{"loadBalancingPolicy": "round_robin"}"#)
        .build()
        .unwrap();
    assert_eq!(channel.authority(), "10.0.0.1:1");
    // One backend refuses; round_robin serves from the other.
    assert_eq!(sorted_calls(&channel, 4), ["10.0.0.2:1"]);
    env.transport.remove_server("10.0.0.2:1");
    assert!(channel.settle());
    let err = who(&channel).unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("refused") || err.message().contains("stopped"),
        "{err}"
    );
}

#[test]
fn state_changes_can_be_awaited() {
    let env = Env::new();
    env.transport.serve_address("a:1");
    let channel = env.builder("passthrough:///a:1").build().unwrap();
    assert!(channel.settle());
    assert_eq!(channel.state(false), S::Idle);
    assert_eq!(
        env.transport.connect_count("a:1"),
        0,
        "IDLE channels do not connect"
    );
    assert!(
        !channel.wait_for_state_change(S::Idle, env.clock.now()),
        "deadline now"
    );
    assert_eq!(channel.state(true), S::Idle);
    assert!(channel.wait_for_state_change(S::Idle, env.clock.now() + WAIT));
    assert!(channel.settle());
    assert_eq!(channel.state(false), S::Ready);
    let (tx, rx) = crossbeam_channel::bounded(1);
    let waiter = {
        let channel = channel.clone();
        let deadline = env.clock.now() + Duration::from_secs(1);
        thread::spawn(move || tx.send(channel.wait_for_state_change(S::Ready, deadline)))
    };
    env.advance(&channel, Duration::from_secs(1));
    assert_eq!(
        rx.recv_timeout(WAIT),
        Ok(false),
        "no change before the deadline"
    );
    waiter.join().unwrap().unwrap();
    env.transport.close_connections("a:1");
    assert!(channel.wait_for_state_change(S::Ready, env.clock.now() + WAIT));
    assert_eq!(
        channel.state(false),
        S::Idle,
        "pick_first lost its connection"
    );
}

#[test]
fn close_ends_queued_and_later_calls_with_cancelled() {
    let env = Env::new();
    env.transport.serve_address("a:1");
    env.transport.hold_connections("a:1", true);
    let resolver = ManualResolver::default();
    let channel = env
        .builder("test:///svc")
        .resolver_registry(resolver.registry())
        .build()
        .unwrap();
    resolver.push_addresses(&["a:1"]);
    let queued = spawn_call(&channel, "/test.Echo/Who", CallOptions::default());
    assert!(channel.wait_for_state_change(S::Idle, env.clock.now() + WAIT));
    channel.close();
    let err = result_of(&queued).unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Cancelled, "channel closed")
    );
    assert_eq!(who(&channel).unwrap_err().code(), Code::Cancelled);
    assert_eq!(channel.state(true), S::Shutdown);
    assert_eq!(resolver.shutdown_count(), 1);
    assert_eq!(env.transport.connection_count("a:1"), 0);
    channel.close();
    assert!(channel.settle(), "settle after close returns at once");
}

#[test]
fn custom_resolvers_are_found_by_scheme() {
    let env = Env::new();
    env.transport.serve_address("10.1.1.1:80");
    let resolver = ManualResolver::default();
    let channel = env
        .builder("test:///my-service:8080")
        .resolver_registry(resolver.registry())
        .build()
        .unwrap();
    assert_eq!(resolver.endpoints(), ["my-service:8080"]);
    assert_eq!(channel.authority(), "my-service:8080");
    assert_eq!(channel.target().scheme(), "test");
    resolver.push_addresses(&["10.1.1.1:80"]);
    assert_eq!(who(&channel), Ok("10.1.1.1:80".into()));
    let overridden = env
        .builder("test:///other")
        .resolver_registry(resolver.registry())
        .authority("api.example.com")
        .build()
        .unwrap();
    assert_eq!(overridden.authority(), "api.example.com");
    // Without the registration the scheme is unknown.
    let err = env.builder("test:///svc").build().unwrap_err();
    assert_eq!(
        err,
        ChannelError::UnknownScheme {
            target: "test:///svc".into(),
            scheme: "test".into()
        }
    );
}

#[test]
fn bad_targets_fail_the_build_and_say_why() {
    let env = Env::new();
    let cases = [
        ("", "the target is empty"),
        (
            "ipv4:10.0.0.1:80,1.2.3:4",
            "\"1.2.3:4\" is not an IPv4 address",
        ),
        ("ipv6:[::1]:http", "bad port"),
        ("passthrough:///", "passthrough needs an address"),
        ("unix://host/sock", "unix targets take no authority"),
        ("dns://8.8.8.8/example.com", "custom DNS servers"),
        ("dns:///example.com:99999", "bad port"),
        ("xds:///svc", "no resolver for scheme \"xds\""),
    ];
    for (target, want) in cases {
        let err = env.builder(target).build().unwrap_err().to_string();
        assert!(err.contains(want), "{target:?}: {err}");
        assert!(
            err.contains(&format!("{target:?}")),
            "names the target: {err}"
        );
    }
    let err = Channel::builder("passthrough:///a:1").build().unwrap_err();
    assert_eq!(err, ChannelError::NoTransport);
    let err = env
        .builder("passthrough:///a:1")
        .idle_timeout(Some(Duration::ZERO))
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            ChannelError::Option {
                option: "idle_timeout",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn bad_default_service_configs_name_the_field() {
    let env = Env::new();
    let cases = [
        (
            r#"{"loadBalancingConfig": [{"round_robin": []}]}"#,
            "loadBalancingConfig[0].round_robin: must be an object, not an array",
        ),
        (
            r#"{"loadBalancingConfig": [{"no_such_policy": {}}]}"#,
            "loadBalancingConfig: no registered policy among [\"no_such_policy\"]",
        ),
        (
            r#"{"methodConfig": [{"name": [{"service": "s"}], "timeout": "soon"}]}"#,
            "methodConfig[0].timeout: invalid duration \"soon\"",
        ),
        (
            r#"{"loadBalancingPolicy": 1}"#,
            "loadBalancingPolicy: must be a string",
        ),
        ("{", "invalid JSON"),
    ];
    for (json, want) in cases {
        let err = env
            .builder("passthrough:///a:1")
            .default_service_config(json)
            .build()
            .unwrap_err();
        assert!(matches!(err, ChannelError::ServiceConfig(_)), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("invalid default service config: {want}")),
            "{json}\n  got {text}"
        );
    }
}

#[test]
fn message_size_limits_and_method_names_are_checked() {
    let env = Env::new();
    env.transport.add_server("a:1", |req: &CallRequest| {
        Ok(CallResponse {
            message: vec![0; req.message.len() * 10],
            ..Default::default()
        })
    });
    let channel = env
        .builder("passthrough:///a:1")
        .max_send_message_size(8)
        .max_receive_message_size(50)
        .build()
        .unwrap();
    let call = |n: usize| channel.unary("/s/m", vec![1; n], CallOptions::default());
    assert_eq!(call(5).unwrap().message.len(), 50);
    let err = call(6).unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message()
            .contains("received message larger than max (60 vs. 50)"),
        "{err}"
    );
    let err = call(9).unwrap_err();
    assert!(
        err.message()
            .contains("send message larger than max (9 vs. 8)"),
        "{err}"
    );
    for bad in ["s/m", "/s", "/s/m/x", ""] {
        let err = channel
            .unary(bad, vec![], CallOptions::default())
            .unwrap_err();
        assert_eq!(err.code(), Code::Internal, "{bad:?}");
    }
}

/// A test policy: one subchannel to the first address; when READY its picker adds
/// `x-picked-by: tag` and records every final status, or drops calls with
/// `drop_code`, or fails them (TRANSIENT_FAILURE style) and reports each pick.
#[derive(Clone)]
struct TagBuilder {
    completions: Arc<Mutex<Vec<Code>>>,
    drop_code: Option<Code>,
    /// Fail every pick with UNAVAILABLE, telling this sender about each.
    fail: Option<crossbeam_channel::Sender<()>>,
}

struct Tag {
    builder: TagBuilder,
    subchannel: Option<Subchannel>,
}

struct TagPicker {
    builder: TagBuilder,
    subchannel: Subchannel,
}

impl LbPolicyBuilder for TagBuilder {
    fn name(&self) -> &'static str {
        "tag"
    }

    fn build(&self, _: LbPolicyOptions) -> Box<dyn LbPolicy> {
        Box::new(Tag {
            builder: self.clone(),
            subchannel: None,
        })
    }

    fn parse_config(
        &self,
        _: &serde_json::Value,
        _: &LbPolicyRegistry,
    ) -> Result<LbConfig, ConfigError> {
        Ok(LbConfig::new(()))
    }
}

impl LbPolicy for Tag {
    fn resolver_update(
        &mut self,
        update: ResolverUpdate,
        _: Option<&LbConfig>,
        controller: &mut dyn ChannelController,
        _: Instant,
    ) -> Result<(), UpdateError> {
        let endpoints = update.endpoints.unwrap_or_default();
        let Some(address) = endpoints.first().and_then(|e| e.addresses.first()) else {
            return Err(UpdateError::BadResolverState("no addresses".into()));
        };
        if self.subchannel.is_none() {
            let sc = controller.new_subchannel(address);
            sc.connect();
            self.subchannel = Some(sc);
            controller.update_picker(LbState::queuing(S::Connecting));
        }
        Ok(())
    }

    fn subchannel_update(
        &mut self,
        subchannel: &Subchannel,
        state: &SubchannelState,
        controller: &mut dyn ChannelController,
        _: Instant,
    ) {
        if state.connectivity_state == S::Ready {
            controller.update_picker(LbState {
                connectivity_state: S::Ready,
                picker: Arc::new(TagPicker {
                    builder: self.builder.clone(),
                    subchannel: subchannel.clone(),
                }),
            });
        }
    }

    fn work(&mut self, _: &mut dyn ChannelController, _: Instant) {}

    fn exit_idle(&mut self, _: &mut dyn ChannelController, _: Instant) {}

    fn close(&mut self) {
        if let Some(sc) = self.subchannel.take() {
            sc.shutdown();
        }
    }
}

impl Picker for TagPicker {
    fn pick(&self, _: &PickInfo<'_>) -> PickResult<'_> {
        if let Some(code) = self.builder.drop_code {
            return PickResult::Drop(Status::new(code, "dropped by tag"));
        }
        if let Some(picks) = &self.builder.fail {
            let _ = picks.send(());
            return PickResult::Fail(Status::unavailable("failing by tag"));
        }
        let mut metadata = Metadata::new();
        metadata.insert("x-picked-by", "tag").unwrap();
        let completions = self.builder.completions.clone();
        PickResult::Pick(Pick {
            subchannel: &self.subchannel,
            metadata,
            on_complete: Some(Box::new(move |done: &CallCompletion<'_>| {
                completions.lock().push(done.status.code());
            })),
        })
    }
}

fn tag_channel(env: &Env, drop_code: Option<Code>) -> (Channel, Arc<Mutex<Vec<Code>>>) {
    let completions = Arc::new(Mutex::new(Vec::new()));
    let mut registry = LbPolicyRegistry::with_builtins();
    registry.register(TagBuilder {
        completions: completions.clone(),
        drop_code,
        fail: None,
    });
    let channel = env
        .builder("passthrough:///a:1")
        .lb_policy_registry(registry)
        .default_service_config(r#"{"loadBalancingConfig": [{"tag": {}}]}"#)
        .build()
        .unwrap();
    (channel, completions)
}

#[test]
fn pick_metadata_is_sent_and_completions_get_the_final_status() {
    let env = Env::new();
    env.transport.add_server("a:1", |req: &CallRequest| {
        if req.message == b"fail" {
            return Err(Status::new(Code::NotFound, "no such thing"));
        }
        let picked = req.metadata.get("x-picked-by").unwrap_or("nobody");
        Ok(CallResponse {
            message: picked.as_bytes().to_vec(),
            ..Default::default()
        })
    });
    let (channel, completions) = tag_channel(&env, None);
    let ok = channel
        .unary("/s/m", &b"hi"[..], CallOptions::default())
        .unwrap();
    assert_eq!(ok.message, b"tag");
    let err = channel
        .unary("/s/m", &b"fail"[..], CallOptions::default())
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "a server's code passes through");
    env.transport.fail_next_calls(
        "a:1",
        1,
        CallError::unprocessed(Status::unavailable("refused")),
    );
    assert!(
        channel
            .unary("/s/m", &b"hi"[..], CallOptions::default())
            .is_ok()
    );
    assert_eq!(
        *completions.lock(),
        [Code::Ok, Code::NotFound, Code::Unavailable, Code::Ok],
        "one completion per attempt, the retried one included"
    );
}

#[test]
fn statuses_a_policy_must_not_produce_become_internal() {
    let env = Env::new();
    env.transport.serve_address("a:1");
    let (channel, _) = tag_channel(&env, Some(Code::NotFound));
    let err = who(&channel).unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(err.message().contains("NOT_FOUND"), "{err}");
    let (channel, _) = tag_channel(&env, Some(Code::ResourceExhausted));
    assert_eq!(who(&channel).unwrap_err().code(), Code::ResourceExhausted);
}

#[test]
fn channel_handles_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Channel>();
    assert_send_sync::<lb_core::channel::ResolverHandle>();
    assert_send_sync::<ResolverRegistry>();
    assert_send_sync::<CallOptions>();
}
