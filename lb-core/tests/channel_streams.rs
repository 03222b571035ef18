//! Streaming calls of every kind through the channel, on lb-testkit's in-memory
//! transport with a manual clock: server-streaming, client-streaming and bidi calls
//! over round_robin, cancellation by drop, deadlines, trailers on failure,
//! backpressure both ways and transparent retry. Every wait on another thread is
//! bounded by `WAIT`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use lb_core::channel::{CallOptions, Channel, SendError};
use lb_core::transport::CallError;
use lb_core::{Code, Metadata, Status};
use lb_testkit::InMemoryTransport;

mod util;
use util::{Env, WAIT};

impl Env {
    fn channel(&self, target: &str) -> Channel {
        self.builder(target)
            .default_service_config(r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#)
            .build()
            .unwrap()
    }
}

/// A server at `address` that answers `/test.S/Count` with `n` messages named after
/// itself (n = the request's first byte), echoes every message of `/test.S/Echo`,
/// sums the lengths of `/test.S/Sum`'s messages, and fails `/test.S/Fail` after two
/// messages with trailers.
fn serve(t: &InMemoryTransport, address: &'static str) {
    t.add_stream_server(address, move |call| {
        match &*call.head().method {
            "/test.S/Count" => {
                let n = call.recv().map_or(0, |m| m[0]);
                for i in 0..n {
                    call.send(format!("{address}#{i}").into_bytes())?;
                }
            }
            "/test.S/Echo" => {
                while let Some(m) = call.recv() {
                    call.send(m)?;
                }
            }
            "/test.S/Sum" => {
                let mut total = 0usize;
                while let Some(m) = call.recv() {
                    total += m.len();
                }
                call.send(total.to_string().into_bytes())?;
            }
            "/test.S/Fail" => {
                call.send(b"one".to_vec())?;
                call.send(b"two".to_vec())?;
                let mut md = Metadata::new();
                md.insert("why", "on purpose").unwrap();
                return Err(Status::new(Code::Aborted, "stopped after two").with_trailers(md));
            }
            _ => return Err(Status::unimplemented("no such method")),
        }
        let mut md = Metadata::new();
        md.insert("served-by", address).unwrap();
        Ok(md)
    });
}

fn text(m: Vec<u8>) -> String {
    String::from_utf8(m).unwrap()
}

#[test]
fn server_streaming_delivers_every_message_in_order_then_trailers() {
    let env = Env::new();
    serve(&env.transport, "10.0.0.1:1");
    let channel = env.channel("ipv4:10.0.0.1:1");
    let mut call = channel
        .server_streaming("/test.S/Count", vec![5], CallOptions::default())
        .unwrap();
    let got: Vec<String> = call.by_ref().map(|m| text(m.unwrap())).collect();
    assert_eq!(
        got,
        [
            "10.0.0.1:1#0",
            "10.0.0.1:1#1",
            "10.0.0.1:1#2",
            "10.0.0.1:1#3",
            "10.0.0.1:1#4"
        ]
    );
    assert_eq!(
        call.trailers().unwrap().get("served-by"),
        Some("10.0.0.1:1")
    );
}

#[test]
fn each_call_is_picked_once_and_round_robin_spreads_calls() {
    let env = Env::new();
    for a in ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"] {
        serve(&env.transport, a);
    }
    let channel = env.channel("ipv4:10.0.0.1:1,10.0.0.2:1,10.0.0.3:1");
    channel.state(true);
    assert!(channel.settle());
    let mut seen = Vec::new();
    for _ in 0..6 {
        let call = channel
            .server_streaming("/test.S/Count", vec![3], CallOptions::default())
            .unwrap();
        let messages: Vec<String> = call.map(|m| text(m.unwrap())).collect();
        // All three messages of one call come from one backend.
        let backend = messages[0].split('#').next().unwrap().to_owned();
        assert!(
            messages.iter().all(|m| m.starts_with(&backend)),
            "{messages:?}"
        );
        seen.push(backend);
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "10.0.0.1:1",
            "10.0.0.1:1",
            "10.0.0.2:1",
            "10.0.0.2:1",
            "10.0.0.3:1",
            "10.0.0.3:1"
        ]
    );
}

#[test]
fn client_streaming_sends_many_then_gets_one_response() {
    let env = Env::new();
    serve(&env.transport, "10.0.0.1:1");
    let channel = env.channel("ipv4:10.0.0.1:1");
    let call = channel
        .client_streaming("/test.S/Sum", CallOptions::default())
        .unwrap();
    for n in [3usize, 4, 5] {
        call.send(vec![0u8; n]).unwrap();
    }
    let response = call.finish().unwrap();
    assert_eq!(text(response.message), "12");
    assert_eq!(response.trailers.get("served-by"), Some("10.0.0.1:1"));
}

#[test]
fn bidi_halves_work_from_two_threads() {
    let env = Env::new();
    serve(&env.transport, "10.0.0.1:1");
    let channel = env.channel("ipv4:10.0.0.1:1");
    let call = channel
        .bidi_streaming("/test.S/Echo", CallOptions::default())
        .unwrap();
    let (tx, rx) = call.split();
    let writer = thread::spawn(move || {
        for i in 0..100 {
            tx.send(format!("m{i}")).unwrap();
        }
        tx.close_send();
    });
    let got: Vec<String> = rx.map(|m| text(m.unwrap())).collect();
    writer.join().unwrap();
    let want: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want);
}

#[test]
fn a_failure_after_messages_carries_its_trailers() {
    let env = Env::new();
    serve(&env.transport, "10.0.0.1:1");
    let channel = env.channel("ipv4:10.0.0.1:1");
    let mut call = channel
        .server_streaming("/test.S/Fail", Vec::new(), CallOptions::default())
        .unwrap();
    assert_eq!(text(call.next().unwrap().unwrap()), "one");
    assert_eq!(text(call.next().unwrap().unwrap()), "two");
    let status = call.next().unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(status.trailers().get("why"), Some("on purpose"));
    assert!(call.next().is_none(), "nothing after the end");
}

#[test]
fn dropping_an_unfinished_call_cancels_it_on_the_server() {
    let env = Env::new();
    let seen_cancel = Arc::new(AtomicUsize::new(0));
    let seen = seen_cancel.clone();
    let (started_tx, started_rx) = crossbeam_channel::bounded(1);
    env.transport.add_stream_server("10.0.0.1:1", move |call| {
        let _ = started_tx.send(());
        // Wait for a message that never comes: the client drops the call.
        assert_eq!(call.recv(), None);
        if call.is_cancelled() {
            seen.fetch_add(1, Ordering::SeqCst);
        }
        Ok(Metadata::new())
    });
    let channel = env.channel("ipv4:10.0.0.1:1");
    let call = channel
        .bidi_streaming("/test.S/Wait", CallOptions::default())
        .unwrap();
    started_rx.recv_timeout(WAIT).unwrap();
    drop(call);
    for _ in 0..3000 {
        if seen_cancel.load(Ordering::SeqCst) == 1 {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("the server never saw the cancellation");
}

#[test]
fn a_deadline_ends_a_stream_mid_way_on_the_manual_clock() {
    let env = Env::new();
    serve(&env.transport, "10.0.0.1:1");
    let channel = env.channel("ipv4:10.0.0.1:1");
    let call = channel
        .bidi_streaming(
            "/test.S/Echo",
            CallOptions::default().with_timeout(Duration::from_secs(5)),
        )
        .unwrap();
    call.send("one").unwrap();
    assert_eq!(text(call.recv().unwrap().unwrap()), "one");
    let (tx, rx) = crossbeam_channel::bounded(1);
    let (call_tx, _keep) = call.split();
    let receiver = _keep;
    let waiter = thread::spawn(move || {
        let _ = tx.send(receiver.recv());
    });
    env.clock.advance(Duration::from_secs(4));
    assert!(channel.settle());
    assert!(rx.is_empty(), "still running at 4 s");
    env.clock.advance(Duration::from_secs(1));
    assert!(channel.settle());
    let result = rx.recv_timeout(WAIT).expect("the receiver returned");
    assert_eq!(result.unwrap_err().code(), Code::DeadlineExceeded);
    let err = call_tx.send("late").unwrap_err();
    assert_eq!(err.status().code(), Code::DeadlineExceeded);
    waiter.join().unwrap();
}

#[test]
fn a_sender_faster_than_the_server_gets_full_then_room_again() {
    let env = Env::new();
    env.transport.set_stream_window(1000);
    let (go_tx, go_rx) = crossbeam_channel::bounded::<()>(1);
    env.transport.add_stream_server("10.0.0.1:1", move |call| {
        // Read nothing until told.
        go_rx.recv_timeout(WAIT).unwrap();
        let mut n = 0usize;
        while let Some(m) = call.recv() {
            n += m.len();
        }
        call.send(n.to_string().into_bytes())?;
        Ok(Metadata::new())
    });
    let channel = env.channel("ipv4:10.0.0.1:1");
    let call = channel
        .client_streaming("/test.S/Sink", CallOptions::default())
        .unwrap();
    let mut sent = 0usize;
    let refused = loop {
        match call.try_send(vec![7u8; 100]) {
            Ok(()) => sent += 100,
            Err(SendError::Full(m)) => break m,
            Err(e) => panic!("{e:?}"),
        }
        assert!(sent <= 10_000, "the window never filled");
    };
    assert_eq!(refused.len(), 100, "the refused message comes back");
    assert_eq!(sent, 1000, "exactly the window was taken");
    // A blocking send waits until the server reads.
    let sender = thread::spawn(move || {
        call.send(vec![7u8; 100]).unwrap();
        call.finish()
    });
    go_tx.send(()).unwrap();
    let response = sender.join().unwrap().unwrap();
    assert_eq!(text(response.message), "1100");
}

#[test]
fn a_slow_reader_stops_the_server_at_the_window() {
    let env = Env::new();
    env.transport.set_stream_window(4096);
    let (peak_tx, peak_rx) = crossbeam_channel::unbounded();
    env.transport.add_stream_server("10.0.0.1:1", move |call| {
        for _ in 0..200 {
            call.send(vec![1u8; 512])?;
            let _ = peak_tx.send(call.unreleased_bytes());
        }
        Ok(Metadata::new())
    });
    let channel = env.channel("ipv4:10.0.0.1:1");
    let mut call = channel
        .server_streaming("/test.S/Flood", Vec::new(), CallOptions::default())
        .unwrap();
    // Read nothing for a while: the server must stop at the window.
    let mut stopped_at = 0;
    while let Ok(unreleased) = peak_rx.recv_timeout(Duration::from_millis(300)) {
        stopped_at = unreleased;
    }
    assert!(
        (4096..4096 + 512).contains(&stopped_at),
        "the server stopped with {stopped_at} bytes unread by the client"
    );
    let mut total = 0;
    for m in call.by_ref() {
        total += m.unwrap().len();
    }
    assert_eq!(total, 200 * 512);
    let peak = peak_rx.try_iter().max().unwrap_or(0);
    assert!(peak < 4096 + 512, "never more than a window unread: {peak}");
}

#[test]
fn a_stream_refused_unprocessed_is_retried_transparently_on_another_backend() {
    let env = Env::new();
    for a in ["10.0.0.1:1", "10.0.0.2:1"] {
        serve(&env.transport, a);
        env.transport
            .fail_next_calls(a, 1, CallError::unprocessed(Status::unavailable("refused")));
    }
    let channel = env.channel("ipv4:10.0.0.1:1,10.0.0.2:1");
    channel.state(true);
    assert!(channel.settle());
    let call = channel
        .bidi_streaming("/test.S/Echo", CallOptions::default())
        .unwrap();
    call.send("replayed").unwrap();
    call.close_send();
    let got: Vec<String> = call.map(|m| text(m.unwrap())).collect();
    assert_eq!(got, ["replayed"], "the buffered message was sent again");
}

#[test]
fn a_unary_call_to_a_streaming_server_with_two_answers_is_unimplemented() {
    let env = Env::new();
    serve(&env.transport, "10.0.0.1:1");
    let channel = env.channel("ipv4:10.0.0.1:1");
    let err = channel
        .unary("/test.S/Count", vec![2], CallOptions::default())
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err}");
    let err = channel
        .unary("/test.S/Count", vec![0], CallOptions::default())
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err}");
    let ok = channel
        .unary("/test.S/Count", vec![1], CallOptions::default())
        .unwrap();
    assert_eq!(text(ok.message), "10.0.0.1:1#0");
}

#[test]
fn a_sent_message_over_the_limit_fails_locally_and_comes_back() {
    let env = Env::new();
    serve(&env.transport, "10.0.0.1:1");
    let channel = Channel::builder("ipv4:10.0.0.1:1")
        .transport(Arc::new(env.transport.clone()))
        .clock(env.clock.shared())
        .max_send_message_size(10)
        .build()
        .unwrap();
    let call = channel
        .bidi_streaming("/test.S/Echo", CallOptions::default())
        .unwrap();
    let err = call.send(vec![0u8; 11]).unwrap_err();
    assert_eq!(err.status().code(), Code::ResourceExhausted);
    assert_eq!(err.into_message().len(), 11);
    call.send(vec![0u8; 10]).unwrap();
    assert_eq!(call.recv().unwrap().unwrap().len(), 10);
}

#[test]
fn a_server_that_ends_before_the_request_still_delivers_its_messages_and_status() {
    let env = Env::new();
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    env.transport.add_stream_server("10.0.0.1:1", move |call| {
        call.send(b"early".to_vec())?;
        let _ = done_tx.send(());
        Err(Status::new(Code::FailedPrecondition, "without reading"))
    });
    let channel = env.channel("ipv4:10.0.0.1:1");
    let call = channel
        .bidi_streaming("/test.S/Early", CallOptions::default())
        .unwrap();
    done_rx.recv_timeout(WAIT).unwrap();
    // The handler has ended: a send reports the call's status ...
    for _ in 0..3000 {
        match call.send("late") {
            Err(e) => {
                assert_eq!(e.status().code(), Code::FailedPrecondition);
                break;
            }
            // The end may not have reached the client yet.
            Ok(()) => thread::sleep(Duration::from_millis(1)),
        }
    }
    // ... and what the server sent before it ended is still delivered.
    assert_eq!(text(call.recv().unwrap().unwrap()), "early");
    assert_eq!(call.recv().unwrap_err().code(), Code::FailedPrecondition);
}
