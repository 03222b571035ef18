//! The channel's own metrics on the in-memory transport and the manual clock:
//! gRFC A66's per-call instruments (attempts with transparent retries, exact
//! durations on the channel's clock, sizes, statuses) and gRFC A94's subchannel
//! instruments (attempts, open connections, disconnections with their reason).

mod util;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use lb_core::channel::CallOptions;
use lb_core::metrics::InMemoryRecorder;
use lb_core::transport::{CallError, CallRequest, CallResponse};
use lb_core::{Code, Status};
use util::{Env, WAIT};

const METHOD: &str = "/test.Echo/Echo";

fn echo_server(env: &Env, address: &str) {
    env.transport.add_server(address, |req: &CallRequest| {
        if req.message == b"fail" {
            return Err(Status::new(Code::NotFound, "no such thing"));
        }
        Ok(CallResponse {
            message: [&req.message[..], b"!"].concat(),
            ..Default::default()
        })
    });
}

#[test]
fn calls_and_attempts_are_timed_on_the_channels_clock() {
    let env = Env::new();
    echo_server(&env, "a:1");
    let recorder = Arc::new(InMemoryRecorder::new());
    let channel = env
        .builder("passthrough:///a:1")
        .metrics_recorder(recorder.clone())
        .build()
        .unwrap();
    let target = "passthrough:///a:1";
    // Connect first, so that the timed call only waits for its answer.
    channel
        .unary(METHOD, b"warm".to_vec(), CallOptions::default())
        .unwrap();
    recorder.clear();

    env.transport.set_latency("a:1", Duration::from_millis(250));
    let call = {
        let channel = channel.clone();
        thread::spawn(move || channel.unary(METHOD, b"hello".to_vec(), CallOptions::default()))
    };
    assert!(env.transport.wait_for_pending_calls("a:1", 1, WAIT));
    env.clock.advance(Duration::from_millis(250));
    assert_eq!(call.join().unwrap().unwrap().message, b"hello!");

    let ok = [
        ("grpc.method", "test.Echo/Echo"),
        ("grpc.target", target),
        ("grpc.status", "OK"),
    ];
    assert_eq!(
        recorder.counter(
            "grpc.client.attempt.started",
            &[("grpc.method", "test.Echo/Echo"), ("grpc.target", target)]
        ),
        1
    );
    assert_eq!(
        recorder.histogram_values("grpc.client.attempt.duration", &ok),
        [0.25]
    );
    assert_eq!(
        recorder.histogram_values("grpc.client.call.duration", &ok),
        [0.25]
    );
    assert_eq!(
        recorder.histogram_values(
            "grpc.client.attempt.sent_total_compressed_message_size",
            &ok
        ),
        [5.0]
    );
    assert_eq!(
        recorder.histogram_values(
            "grpc.client.attempt.rcvd_total_compressed_message_size",
            &ok
        ),
        [6.0]
    );
    channel.close();
}

#[test]
fn transparent_retries_are_attempts_and_failures_carry_their_status() {
    let env = Env::new();
    echo_server(&env, "a:1");
    let recorder = Arc::new(InMemoryRecorder::new());
    let channel = env
        .builder("passthrough:///a:1")
        .metrics_recorder(recorder.clone())
        .build()
        .unwrap();
    channel
        .unary(METHOD, b"warm".to_vec(), CallOptions::default())
        .unwrap();
    recorder.clear();

    // Two attempts the server never saw, then the real one.
    env.transport.fail_next_calls(
        "a:1",
        2,
        CallError::unprocessed(Status::unavailable("refused")),
    );
    channel
        .unary(METHOD, b"again".to_vec(), CallOptions::default())
        .unwrap();
    assert_eq!(recorder.counter_total("grpc.client.attempt.started"), 3);
    let by_status =
        |name: &str, code: &str| recorder.histogram_count(name, &[("grpc.status", code)]);
    assert_eq!(by_status("grpc.client.attempt.duration", "UNAVAILABLE"), 2);
    assert_eq!(by_status("grpc.client.attempt.duration", "OK"), 1);
    assert_eq!(by_status("grpc.client.call.duration", "OK"), 1);
    assert_eq!(by_status("grpc.client.call.duration", "UNAVAILABLE"), 0);

    // A failure the application sees.
    let err = channel
        .unary(METHOD, b"fail".to_vec(), CallOptions::default())
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(by_status("grpc.client.call.duration", "NOT_FOUND"), 1);
    assert_eq!(by_status("grpc.client.attempt.duration", "NOT_FOUND"), 1);

    // A call that never gets an attempt (bad method) still has a duration.
    let err = channel
        .unary("no-slash", Vec::new(), CallOptions::default())
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert_eq!(recorder.counter_total("grpc.client.attempt.started"), 4);
    channel.close();
}

#[test]
fn subchannels_count_attempts_open_connections_and_disconnections() {
    let env = Env::new();
    echo_server(&env, "a:1");
    let recorder = Arc::new(InMemoryRecorder::new());
    let channel = env
        .builder("passthrough:///a:1")
        .metrics_recorder(recorder.clone())
        .build()
        .unwrap();
    let target = [("grpc.target", "passthrough:///a:1")];
    channel
        .unary(METHOD, b"one".to_vec(), CallOptions::default())
        .unwrap();
    assert!(channel.settle());
    let count = |name: &str| recorder.counter_matching(name, &target);
    let open = || {
        recorder.gauge(
            "grpc.subchannel.open_connections",
            &[
                ("grpc.target", "passthrough:///a:1"),
                ("grpc.lb.backend_service", ""),
                ("grpc.lb.locality", ""),
            ],
        )
    };
    assert_eq!(count("grpc.subchannel.connection_attempts_succeeded"), 1);
    assert_eq!(open(), Some(1));

    // The server says GOAWAY: one disconnection, no connection open.
    env.transport.go_away("a:1");
    assert!(channel.settle());
    assert_eq!(
        recorder.counter_matching(
            "grpc.subchannel.disconnections",
            &[("grpc.disconnect_error", "unknown")]
        ),
        1
    );
    assert_eq!(open(), Some(0));

    // Reconnecting fails while the server refuses.
    env.transport.refuse_connections("a:1", true);
    let _ = channel.unary(
        METHOD,
        b"two".to_vec(),
        CallOptions::default().with_wait_for_ready(false),
    );
    assert!(channel.settle());
    assert!(count("grpc.subchannel.connection_attempts_failed") >= 1);
    assert_eq!(count("grpc.subchannel.connection_attempts_succeeded"), 1);

    // Back: a new connection; closing the channel shuts it down.
    env.transport.refuse_connections("a:1", false);
    env.advance(&channel, Duration::from_secs(200));
    channel
        .unary(METHOD, b"three".to_vec(), CallOptions::default())
        .unwrap();
    assert_eq!(count("grpc.subchannel.connection_attempts_succeeded"), 2);
    assert_eq!(open(), Some(1));
    channel.close();
    assert_eq!(
        recorder.counter_matching(
            "grpc.subchannel.disconnections",
            &[("grpc.disconnect_error", "subchannel shutdown")]
        ),
        1
    );
    assert_eq!(open(), Some(0));
}

#[test]
fn every_recorder_given_to_the_builder_gets_every_record() {
    let env = Env::new();
    echo_server(&env, "a:1");
    let (first, second) = (
        Arc::new(InMemoryRecorder::new()),
        Arc::new(InMemoryRecorder::new()),
    );
    let channel = env
        .builder("passthrough:///a:1")
        .metrics_recorder(first.clone())
        .metrics_recorder(second.clone())
        .build()
        .unwrap();
    for _ in 0..3 {
        channel
            .unary(METHOD, b"x".to_vec(), CallOptions::default())
            .unwrap();
    }
    channel.close();
    for r in [&first, &second] {
        assert_eq!(r.counter_total("grpc.client.attempt.started"), 3);
        assert_eq!(r.histogram_count("grpc.client.call.duration", &[]), 3);
        assert_eq!(
            r.counter_total("grpc.subchannel.connection_attempts_succeeded"),
            1
        );
    }
    assert_eq!(first.snapshot(), second.snapshot());
}
