//! Retries under a service config's `retryPolicy` and `retryThrottling` (gRFC A6),
//! through the channel on lb-testkit's in-memory transport with a manual clock:
//! attempts, backoff, server pushback, `grpc-previous-rpc-attempts`, commit on
//! response headers, the per-call and per-channel retry buffers, throttling,
//! deadlines and cancellation during a backoff, and every kind of call. Backoffs
//! pass only when a test moves the clock; every wait on another thread is bounded
//! by `WAIT`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use lb_core::channel::{CallOptions, Channel, PREVIOUS_ATTEMPTS_HEADER, PUSHBACK_TRAILER};
use lb_core::{Code, Metadata, Status};
use lb_testkit::InMemoryTransport;
use parking_lot::Mutex;

mod util;
use util::{Env, WAIT};

/// What a scripted server saw: per attempt, its `grpc-previous-rpc-attempts` and
/// the request messages it read.
#[derive(Default)]
struct Seen {
    attempts: Mutex<Vec<SeenAttempt>>,
}

/// An attempt's `grpc-previous-rpc-attempts` and its request messages.
type SeenAttempt = (Option<String>, Vec<Vec<u8>>);

impl Seen {
    fn count(&self) -> usize {
        self.attempts.lock().len()
    }

    fn previous(&self) -> Vec<Option<String>> {
        self.attempts.lock().iter().map(|a| a.0.clone()).collect()
    }
}

/// How the scripted server answers attempt number `n` (0-based).
type Script = dyn Fn(usize) -> Answer + Send + Sync;

enum Answer {
    /// Fail with this status, without response headers (Trailers-Only).
    Fail(Status),
    /// Send response headers, then fail.
    HeadersThenFail(Status),
    /// Echo every request message, then OK.
    Echo,
}

fn serve(t: &InMemoryTransport, address: &str, script: Arc<Script>) -> Arc<Seen> {
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    let n = Arc::new(AtomicUsize::new(0));
    t.add_stream_server(address, move |call| {
        let attempt = n.fetch_add(1, Ordering::SeqCst);
        let previous = call
            .head()
            .metadata
            .get(PREVIOUS_ATTEMPTS_HEADER)
            .map(String::from);
        let mut messages = Vec::new();
        while let Some(m) = call.recv() {
            messages.push(m);
        }
        s.attempts.lock().push((previous, messages.clone()));
        match script(attempt) {
            Answer::Fail(status) => Err(status),
            Answer::HeadersThenFail(status) => {
                call.send_headers(Metadata::new());
                Err(status)
            }
            Answer::Echo => {
                // `/r.S/First` answers with the first message only (client streaming).
                let only_first = &*call.head().method == "/r.S/First";
                for m in messages
                    .into_iter()
                    .take(if only_first { 1 } else { usize::MAX })
                {
                    call.send(m)?;
                }
                Ok(Metadata::new())
            }
        }
    });
    seen
}

fn unavailable() -> Status {
    Status::unavailable("try elsewhere")
}

fn with_pushback(status: Status, ms: &str) -> Status {
    let mut md = Metadata::new();
    md.insert(PUSHBACK_TRAILER, ms).unwrap();
    status.with_trailers(md)
}

fn config(max_attempts: u32, extra: &str) -> String {
    format!(
        r#"{{"methodConfig": [{{"name": [{{"service": "r.S"}}], "retryPolicy": {{
            "maxAttempts": {max_attempts}, "initialBackoff": "0.1s", "maxBackoff": "0.1s",
            "backoffMultiplier": 1, "retryableStatusCodes": ["UNAVAILABLE"]}}}}]{extra}}}"#
    )
}

impl Env {
    fn retrying(&self, target: &str, service_config: &str) -> Channel {
        self.builder(target)
            .default_service_config(service_config)
            .build()
            .unwrap()
    }

    /// Runs `f` on another thread, moving the clock by `step` whenever a call of
    /// `channel` waits out a backoff, until `f` returns.
    fn drive<T: Send + 'static>(
        &self,
        channel: &Channel,
        step: Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let worker = thread::spawn(f);
        let give_up = Instant::now() + WAIT;
        while !worker.is_finished() {
            assert!(Instant::now() < give_up, "the call did not end");
            if channel.retry_stats().in_backoff > 0 {
                self.advance(channel, step);
            } else {
                thread::sleep(Duration::from_millis(1));
            }
        }
        worker.join().unwrap()
    }
}

fn unary(channel: &Channel, message: &str) -> Result<Vec<u8>, Status> {
    channel
        .unary(
            "/r.S/M",
            message.as_bytes().to_vec(),
            CallOptions::default(),
        )
        .map(|r| r.message)
}

#[test]
fn a_failed_call_is_retried_until_it_succeeds_and_each_retry_counts_its_predecessors() {
    let env = Env::new();
    let seen = serve(
        &env.transport,
        "10.0.0.1:1",
        Arc::new(|n| {
            if n < 2 {
                Answer::Fail(unavailable())
            } else {
                Answer::Echo
            }
        }),
    );
    let channel = env.retrying("ipv4:10.0.0.1:1", &config(4, ""));
    let c = channel.clone();
    let result = env.drive(&channel, Duration::from_millis(100), move || {
        unary(&c, "hi")
    });
    assert_eq!(result.unwrap(), b"hi");
    assert_eq!(seen.count(), 3);
    assert_eq!(
        seen.previous(),
        [None, Some("1".into()), Some("2".into())],
        "grpc-previous-rpc-attempts on retries only"
    );
    assert_eq!(channel.retry_stats().retries, 2);
    assert_eq!(channel.retry_stats().buffered_bytes, 0, "buffer freed");
}

#[test]
fn max_attempts_bounds_the_retries_and_the_last_status_is_the_calls() {
    let env = Env::new();
    let seen = serve(
        &env.transport,
        "10.0.0.1:1",
        Arc::new(|n| Answer::Fail(Status::unavailable(format!("attempt {n}")))),
    );
    let channel = env.retrying("ipv4:10.0.0.1:1", &config(3, ""));
    let c = channel.clone();
    let err = env
        .drive(&channel, Duration::from_millis(100), move || unary(&c, "x"))
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unavailable, "attempt 2")
    );
    assert_eq!(seen.count(), 3);
}

#[test]
fn codes_not_listed_and_committed_calls_are_not_retried() {
    let env = Env::new();
    let internal = serve(
        &env.transport,
        "10.0.0.1:1",
        Arc::new(|_| Answer::Fail(Status::internal("no"))),
    );
    let channel = env.retrying("ipv4:10.0.0.1:1", &config(5, ""));
    assert_eq!(unary(&channel, "x").unwrap_err().code(), Code::Internal);
    assert_eq!(internal.count(), 1);

    let env = Env::new();
    let committed = serve(
        &env.transport,
        "10.0.0.1:1",
        Arc::new(|_| Answer::HeadersThenFail(unavailable())),
    );
    let channel = env.retrying("ipv4:10.0.0.1:1", &config(5, ""));
    assert_eq!(unary(&channel, "x").unwrap_err().code(), Code::Unavailable);
    assert_eq!(committed.count(), 1, "response headers commit the call");
    assert_eq!(channel.retry_stats().retries, 0);
}

#[test]
fn server_pushback_sets_the_exact_delay_and_a_negative_one_stops_retries() {
    let env = Env::new();
    let seen = serve(
        &env.transport,
        "10.0.0.1:1",
        Arc::new(|n| {
            if n == 0 {
                Answer::Fail(with_pushback(unavailable(), "2000"))
            } else {
                Answer::Echo
            }
        }),
    );
    let channel = env.retrying("ipv4:10.0.0.1:1", &config(3, ""));
    let c = channel.clone();
    let worker = thread::spawn(move || unary(&c, "x"));
    let give_up = Instant::now() + WAIT;
    while channel.retry_stats().in_backoff == 0 {
        assert!(Instant::now() < give_up);
        thread::sleep(Duration::from_millis(1));
    }
    env.advance(&channel, Duration::from_millis(1999));
    assert_eq!(seen.count(), 1, "still waiting at 1999 ms");
    assert_eq!(channel.retry_stats().in_backoff, 1);
    env.advance(&channel, Duration::from_millis(1));
    assert_eq!(worker.join().unwrap().unwrap(), b"x");
    assert_eq!(seen.count(), 2);

    let env = Env::new();
    let stopped = serve(
        &env.transport,
        "10.0.0.1:1",
        Arc::new(|_| Answer::Fail(with_pushback(unavailable(), "-1"))),
    );
    let channel = env.retrying("ipv4:10.0.0.1:1", &config(5, ""));
    let err = unary(&channel, "x").unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(err.trailers().get(PUSHBACK_TRAILER), Some("-1"));
    assert_eq!(stopped.count(), 1);
}

#[test]
fn throttling_stops_retries_when_tokens_run_low_and_successes_refill_them() {
    let env = Env::new();
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f = fail.clone();
    let seen = serve(
        &env.transport,
        "10.0.0.1:1",
        Arc::new(move |_| {
            if f.load(Ordering::SeqCst) {
                Answer::Fail(unavailable())
            } else {
                Answer::Echo
            }
        }),
    );
    // 4 tokens, threshold 2: the first failure leaves 3 (retry), the second 2
    // (throttled).
    let sc = config(
        5,
        r#", "retryThrottling": {"maxTokens": 4, "tokenRatio": 1}"#,
    );
    let channel = env.retrying("ipv4:10.0.0.1:1", &sc);
    let c = channel.clone();
    let err = env.drive(&channel, Duration::from_millis(100), move || unary(&c, "a"));
    assert_eq!(err.unwrap_err().code(), Code::Unavailable);
    assert_eq!(seen.count(), 2);
    assert_eq!(channel.retry_stats().throttled, 1);
    // Tokens at 2 - 1 = 1: no retry at all.
    assert_eq!(unary(&channel, "b").unwrap_err().code(), Code::Unavailable);
    assert_eq!(seen.count(), 3);
    // Three successes give 3 tokens back: 4 - 1 = 3 > 2 allows one retry again.
    fail.store(false, Ordering::SeqCst);
    for _ in 0..3 {
        unary(&channel, "ok").unwrap();
    }
    fail.store(true, Ordering::SeqCst);
    let c = channel.clone();
    let err = env.drive(&channel, Duration::from_millis(100), move || unary(&c, "c"));
    assert_eq!(err.unwrap_err().code(), Code::Unavailable);
    assert_eq!(seen.count(), 8, "two attempts for the last call");
}

/// A channel to one scripted server with the given retry buffer limits.
fn limited(
    env: &Env,
    script: Arc<Script>,
    per_call: usize,
    per_channel: usize,
) -> (Arc<Seen>, Channel) {
    let seen = serve(&env.transport, "10.0.0.1:1", script);
    let channel = env
        .builder("ipv4:10.0.0.1:1")
        .default_service_config(config(3, ""))
        .retry_buffer_limits(per_call, per_channel)
        .build()
        .unwrap();
    (seen, channel)
}

#[test]
fn the_per_call_retry_buffer_commits_a_large_stream() {
    let env = Env::new();
    let script = |n: usize| {
        if n % 2 == 0 {
            Answer::Fail(unavailable())
        } else {
            Answer::Echo
        }
    };
    let (seen, channel) = limited(&env, Arc::new(script), 1000, 1 << 20);
    // Under the limit: replayed in full on the retry (attempts 0 and 1).
    let c = channel.clone();
    let small = env.drive(&channel, Duration::from_millis(100), move || {
        let call = c.client_streaming("/r.S/First", CallOptions::default())?;
        call.send(vec![1; 400]).unwrap();
        call.send(vec![2; 400]).unwrap();
        call.finish()
    });
    assert_eq!(small.unwrap().message, vec![1; 400], "the first echo");
    assert_eq!(seen.attempts.lock()[1].1, [vec![1; 400], vec![2; 400]]);

    // Over the limit: committed, so the failure (attempt 2) is final.
    let call = channel
        .client_streaming("/r.S/First", CallOptions::default())
        .unwrap();
    call.send(vec![1; 600]).unwrap();
    assert_eq!(channel.retry_stats().buffered_bytes, 600);
    call.send(vec![2; 600]).unwrap();
    assert_eq!(channel.retry_stats().buffered_bytes, 0, "committed: freed");
    assert_eq!(call.finish().unwrap_err().code(), Code::Unavailable);
    assert_eq!(seen.count(), 3);
}

#[test]
fn the_channel_retry_buffer_is_shared_by_its_calls() {
    let env = Env::new();
    let script = |n: usize| {
        if n < 2 {
            Answer::Fail(unavailable())
        } else {
            Answer::Echo
        }
    };
    let (seen, channel) = limited(&env, Arc::new(script), 1000, 1000);
    let a = channel
        .client_streaming("/r.S/First", CallOptions::default())
        .unwrap();
    a.send(vec![1; 800]).unwrap();
    let b = channel
        .client_streaming("/r.S/First", CallOptions::default())
        .unwrap();
    b.send(vec![2; 300]).unwrap();
    assert_eq!(
        channel.retry_stats().buffered_bytes,
        800,
        "b could not keep its message: committed"
    );
    // b ends first (the server's attempt 0) and is not retried.
    assert_eq!(b.finish().unwrap_err().code(), Code::Unavailable);
    // a fails once (attempt 1), is retried, and succeeds (attempt 2).
    let result = env.drive(&channel, Duration::from_millis(100), move || a.finish());
    assert_eq!(result.unwrap().message, vec![1; 800]);
    assert_eq!(seen.count(), 3);
    assert_eq!(channel.retry_stats().buffered_bytes, 0);
}

#[test]
fn server_streaming_and_bidi_calls_are_retried_and_replayed() {
    let env = Env::new();
    let seen = serve(
        &env.transport,
        "10.0.0.1:1",
        Arc::new(|n| {
            if n % 2 == 0 {
                Answer::Fail(unavailable())
            } else {
                Answer::Echo
            }
        }),
    );
    let channel = env.retrying("ipv4:10.0.0.1:1", &config(2, ""));
    let c = channel.clone();
    let got = env.drive(&channel, Duration::from_millis(100), move || {
        c.server_streaming("/r.S/M", b"one".to_vec(), CallOptions::default())
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
    });
    assert_eq!(got.unwrap(), [b"one".to_vec()]);
    let c = channel.clone();
    let got = env.drive(&channel, Duration::from_millis(100), move || {
        let call = c.bidi_streaming("/r.S/M", CallOptions::default()).unwrap();
        call.send("a").unwrap();
        call.send_last("b").unwrap();
        call.collect::<Result<Vec<_>, _>>()
    });
    assert_eq!(got.unwrap(), [b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(seen.count(), 4);
    assert_eq!(seen.attempts.lock()[3].1, [b"a".to_vec(), b"b".to_vec()]);
}

#[test]
fn the_deadline_and_a_cancel_end_a_call_waiting_to_retry() {
    let env = Env::new();
    let seen = serve(
        &env.transport,
        "10.0.0.1:1",
        Arc::new(|_| Answer::Fail(with_pushback(unavailable(), "10000"))),
    );
    let channel = env.retrying("ipv4:10.0.0.1:1", &config(5, ""));
    let c = channel.clone();
    let worker = thread::spawn(move || {
        c.unary(
            "/r.S/M",
            b"x".to_vec(),
            CallOptions::default().with_timeout(Duration::from_secs(1)),
        )
    });
    let give_up = Instant::now() + WAIT;
    while channel.retry_stats().in_backoff == 0 {
        assert!(Instant::now() < give_up);
        thread::sleep(Duration::from_millis(1));
    }
    env.advance(&channel, Duration::from_secs(1));
    let err = worker.join().unwrap().unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(err.message().contains("waiting to retry"), "{err}");
    assert_eq!(seen.count(), 1);

    let call = channel
        .bidi_streaming("/r.S/M", CallOptions::default())
        .unwrap();
    call.send_last("x").unwrap();
    let (sender, receiver) = call.split();
    let worker = thread::spawn(move || receiver.collect::<Result<Vec<_>, _>>());
    while channel.retry_stats().in_backoff == 0 {
        assert!(Instant::now() < give_up);
        thread::sleep(Duration::from_millis(1));
    }
    sender.cancel();
    assert_eq!(worker.join().unwrap().unwrap_err().code(), Code::Cancelled);
    assert_eq!(seen.count(), 2, "no attempt after the cancel");
    assert_eq!(channel.retry_stats().in_backoff, 0);
}

#[test]
fn each_retry_picks_anew_and_retries_can_be_turned_off() {
    let env = Env::new();
    let bad = serve(
        &env.transport,
        "10.0.0.1:1",
        Arc::new(|_| Answer::Fail(unavailable())),
    );
    let good = serve(&env.transport, "10.0.0.2:1", Arc::new(|_| Answer::Echo));
    let sc = config(2, r#", "loadBalancingConfig": [{"round_robin": {}}]"#);
    let channel = env.retrying("ipv4:10.0.0.1:1,10.0.0.2:1", &sc);
    // Both backends READY first, so that a retry always has the other to go to.
    channel.state(true);
    assert!(channel.settle());
    assert_eq!(env.transport.connection_count("10.0.0.1:1"), 1);
    assert_eq!(env.transport.connection_count("10.0.0.2:1"), 1);
    let c = channel.clone();
    let results = env.drive(&channel, Duration::from_millis(100), move || {
        (0..20).map(|_| unary(&c, "x")).collect::<Vec<_>>()
    });
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(good.count(), 20, "each call ended on the good backend");
    assert!(bad.count() >= 1, "round_robin sent the bad backend calls");
    assert_eq!(
        channel.retry_stats().retries,
        bad.count() as u64,
        "each attempt the bad backend failed was retried"
    );

    let env = Env::new();
    let seen = serve(
        &env.transport,
        "10.0.0.1:1",
        Arc::new(|_| Answer::Fail(unavailable())),
    );
    let channel = env
        .builder("ipv4:10.0.0.1:1")
        .default_service_config(config(5, ""))
        .retries(false)
        .build()
        .unwrap();
    assert_eq!(unary(&channel, "x").unwrap_err().code(), Code::Unavailable);
    assert_eq!(seen.count(), 1);
}
