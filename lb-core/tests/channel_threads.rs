//! Every thread a channel starts ends when it closes or its last handle drops, even
//! with calls in flight. One test in its own binary, so no other test's threads are
//! counted; it reads `/proc/self/task`.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use lb_core::Code;
use lb_core::channel::{CallOptions, Channel};
use lb_testkit::{InMemoryTransport, ManualClock};

/// The longest the test waits for another thread or for the OS to reap one.
const WAIT: Duration = Duration::from_secs(30);

/// The names of this process's threads.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|e| {
            let path = e.ok()?.path().join("comm");
            Some(std::fs::read_to_string(path).ok()?.trim().to_owned())
        })
        .collect()
}

fn channel_threads() -> Vec<String> {
    thread_names()
        .into_iter()
        .filter(|n| n.starts_with("lb-serializer") || n.starts_with("lb-resolver"))
        .collect()
}

/// Waits (bounded) until `done` holds. Joined threads can linger in `/proc` for a
/// moment until the kernel reaps them; this waits for the OS, not for any logic.
fn wait_until(done: impl Fn() -> bool, what: &str) {
    let give_up = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < give_up, "{what}: {:?}", thread_names());
        thread::sleep(Duration::from_millis(1));
    }
}

fn assert_back_to(baseline: usize) {
    wait_until(
        || thread_names().len() == baseline,
        &format!("back to {baseline} threads"),
    );
}

#[test]
fn channels_leave_no_thread_behind() {
    let baseline = thread_names().len();
    assert!(channel_threads().is_empty());

    close_ends_calls_in_flight_and_every_thread(baseline);
    assert_back_to(baseline);

    dropping_the_last_handle_closes_the_channel(baseline);
    assert_back_to(baseline);
}

/// `close` with calls held by the servers: every call returns CANCELLED, and the
/// serializer and the DNS resolver thread are gone when `close` returns.
fn close_ends_calls_in_flight_and_every_thread(baseline: usize) {
    let clock = ManualClock::new();
    let transport = InMemoryTransport::with_clock(clock.shared());
    let backends = ["127.0.0.1:50051", "[::1]:50051"];
    for a in backends {
        transport.serve_address(a);
        transport.hold_calls(a);
    }
    let channel = Channel::builder("dns:///localhost:50051")
        .transport(Arc::new(transport.clone()))
        .clock(clock.shared())
        .build()
        .unwrap();
    // A new thread carries its parent's name until it has set its own.
    wait_until(
        || {
            let mut names = channel_threads();
            names.sort();
            names == ["lb-resolver-dns", "lb-serializer"]
        },
        "the serializer and the DNS thread",
    );
    assert_eq!(thread_names().len(), baseline + 2);

    thread::scope(|s| {
        let calls: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| channel.unary("/test.Echo/Who", b"hi".to_vec(), CallOptions::default()))
            })
            .collect();
        assert!(transport.wait_for_pending_total(4, WAIT), "calls in flight");
        channel.close();
        // `close` joined them; the OS may take a moment to reap them.
        wait_until(|| channel_threads().is_empty(), "channel threads gone");
        for call in calls {
            let err = call.join().unwrap().unwrap_err();
            assert_eq!(
                (err.code(), err.message()),
                (Code::Cancelled, "channel closed")
            );
        }
    });
    for a in backends {
        assert_eq!(transport.connection_count(a), 0, "{a}");
        assert_eq!(transport.pending_calls(a), 0, "{a}: held calls were failed");
    }
    let err = channel.unary("/test.Echo/Who", vec![], CallOptions::default());
    assert_eq!(err.unwrap_err().code(), Code::Cancelled);
    drop(channel);
    assert_eq!(clock.subscribers(), 1, "only the transport still listens");
}

/// Calls in flight hold clones: dropping the test's handle leaves the channel
/// running; when the calls end (at their deadline) their threads drop the last
/// clones, which closes the channel and ends its thread.
fn dropping_the_last_handle_closes_the_channel(baseline: usize) {
    let clock = ManualClock::new();
    let transport = InMemoryTransport::with_clock(clock.shared());
    transport.serve_address("a:1");
    transport.hold_calls("a:1");
    let channel = Channel::builder("passthrough:///a:1")
        .transport(Arc::new(transport.clone()))
        .clock(clock.shared())
        .build()
        .unwrap();
    let deadline = clock.now() + Duration::from_secs(5);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let channel = channel.clone();
            thread::spawn(move || {
                channel.unary(
                    "/test.Echo/Who",
                    b"hi".to_vec(),
                    CallOptions::default().with_deadline(deadline),
                )
            })
        })
        .collect();
    assert!(transport.wait_for_pending_calls("a:1", 4, WAIT));
    drop(channel);
    assert_eq!(
        channel_threads(),
        ["lb-serializer"],
        "the workers' clones keep it"
    );
    assert_eq!(thread_names().len(), baseline + 5);
    clock.advance(Duration::from_secs(5));
    for w in workers {
        let err = w.join().unwrap().unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded);
    }
    assert_back_to(baseline);
    assert_eq!(transport.connection_count("a:1"), 0);
    assert_eq!(clock.subscribers(), 1, "only the transport still listens");
}
