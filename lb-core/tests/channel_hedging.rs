//! Hedged calls under a service config's `hedgingPolicy` (gRFC A6), through the
//! channel on lb-testkit's in-memory transport with a manual clock: an attempt
//! every `hedgingDelay`, the first answer wins and the others are cancelled, a
//! non-fatal failure starts the next attempt at once, a fatal one ends the call,
//! pushback delays or stops hedging, and streamed requests are replayed to every
//! attempt. Every wait on another thread is bounded by `WAIT`.

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

/// How the scripted server answers attempt number `n` (0-based).
#[derive(Clone)]
enum Answer {
    /// Wait (bounded) until the client cancels the attempt.
    Stall,
    Fail(Status),
    /// Answer with the first request message.
    First,
}

/// What one attempt saw: its `grpc-previous-rpc-attempts`, its request messages,
/// and whether it ended cancelled by the client.
#[derive(Clone, Debug, Default)]
struct Attempt {
    previous: Option<String>,
    messages: Vec<Vec<u8>>,
    cancelled: bool,
}

#[derive(Default)]
struct Seen {
    started: AtomicUsize,
    ended: Mutex<Vec<(usize, Attempt)>>,
}

impl Seen {
    fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until `n` attempts have started.
    fn wait_started(&self, n: usize) {
        let give_up = Instant::now() + WAIT;
        while self.started() < n {
            assert!(Instant::now() < give_up, "{n} attempts never started");
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits (bounded) until `n` attempts have ended; returns them by number.
    fn wait_ended(&self, n: usize) -> Vec<Attempt> {
        let give_up = Instant::now() + WAIT;
        loop {
            {
                let ended = self.ended.lock();
                if ended.len() >= n {
                    let mut all = ended.clone();
                    all.sort_by_key(|(i, _)| *i);
                    return all.into_iter().map(|(_, a)| a).collect();
                }
            }
            assert!(Instant::now() < give_up, "{n} attempts never ended");
            thread::sleep(Duration::from_millis(1));
        }
    }
}

fn serve(
    t: &InMemoryTransport,
    script: impl Fn(usize) -> Answer + Send + Sync + 'static,
) -> Arc<Seen> {
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    t.add_stream_server("10.0.0.1:1", move |call| {
        let n = s.started.fetch_add(1, Ordering::SeqCst);
        let mut attempt = Attempt {
            previous: call
                .head()
                .metadata
                .get(PREVIOUS_ATTEMPTS_HEADER)
                .map(String::from),
            ..Attempt::default()
        };
        while let Some(m) = call.recv() {
            attempt.messages.push(m);
        }
        let answer = script(n);
        if let Answer::Stall = answer {
            let give_up = Instant::now() + WAIT;
            while !call.is_cancelled() && Instant::now() < give_up {
                thread::sleep(Duration::from_millis(1));
            }
        }
        attempt.cancelled = call.is_cancelled();
        let first = attempt.messages.first().cloned();
        s.ended.lock().push((n, attempt));
        match answer {
            Answer::Stall => Err(Status::deadline_exceeded("stalled")),
            Answer::Fail(status) => Err(status),
            Answer::First => {
                call.send(first.unwrap_or_default())?;
                Ok(Metadata::new())
            }
        }
    });
    seen
}

fn hedging(max_attempts: u32, delay: &str, non_fatal: &str) -> String {
    format!(
        r#"{{"methodConfig": [{{"name": [{{"service": "h.S"}}], "hedgingPolicy": {{
            "maxAttempts": {max_attempts}, "hedgingDelay": "{delay}",
            "nonFatalStatusCodes": [{non_fatal}]}}}}]}}"#
    )
}

fn channel(env: &Env, service_config: String) -> Channel {
    env.builder("ipv4:10.0.0.1:1")
        .default_service_config(service_config)
        .build()
        .unwrap()
}

fn unary_on_thread(
    channel: &Channel,
    message: &str,
) -> thread::JoinHandle<Result<Vec<u8>, Status>> {
    let c = channel.clone();
    let message = message.as_bytes().to_vec();
    thread::spawn(move || {
        c.unary("/h.S/M", message, CallOptions::default())
            .map(|r| r.message)
    })
}

#[test]
fn attempts_start_every_delay_and_the_first_answer_wins_and_cancels_the_rest() {
    let env = Env::new();
    let seen = serve(&env.transport, |n| {
        if n < 2 { Answer::Stall } else { Answer::First }
    });
    let channel = channel(&env, hedging(3, "1s", ""));
    let call = unary_on_thread(&channel, "hi");
    seen.wait_started(1);
    env.advance(&channel, Duration::from_millis(999));
    assert_eq!(seen.started(), 1, "no second attempt before the delay");
    env.advance(&channel, Duration::from_millis(1));
    seen.wait_started(2);
    env.advance(&channel, Duration::from_secs(1));
    seen.wait_started(3);
    assert_eq!(call.join().unwrap().unwrap(), b"hi");
    let attempts = seen.wait_ended(3);
    let previous: Vec<_> = attempts.iter().map(|a| a.previous.clone()).collect();
    assert_eq!(previous, [None, Some("1".into()), Some("2".into())]);
    assert!(
        attempts[0].cancelled && attempts[1].cancelled,
        "{attempts:?}"
    );
    assert!(attempts.iter().all(|a| a.messages == [b"hi".to_vec()]));
    assert_eq!(channel.retry_stats().hedges, 2);
    assert_eq!(channel.retry_stats().buffered_bytes, 0);
    // No fourth attempt, however long the clock runs.
    env.advance(&channel, Duration::from_secs(10));
    assert_eq!(seen.started(), 3);
}

#[test]
fn a_non_fatal_failure_starts_the_next_attempt_at_once_and_a_fatal_one_ends_the_call() {
    let env = Env::new();
    let seen = serve(&env.transport, |n| match n {
        0 => Answer::Fail(Status::unavailable("busy")),
        1 => Answer::First,
        _ => Answer::Fail(Status::internal("broken")),
    });
    let channel = channel(&env, hedging(5, "60s", r#""UNAVAILABLE""#));
    assert_eq!(
        call_now(&channel, "a").unwrap(),
        b"a",
        "no clock move needed"
    );
    assert_eq!(seen.started(), 2);
    let err = call_now(&channel, "b").unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::Internal, "broken"));
    env.advance(&channel, Duration::from_secs(120));
    assert_eq!(seen.started(), 3, "a fatal status starts nothing more");
}

fn call_now(channel: &Channel, message: &str) -> Result<Vec<u8>, Status> {
    channel
        .unary(
            "/h.S/M",
            message.as_bytes().to_vec(),
            CallOptions::default(),
        )
        .map(|r| r.message)
}

#[test]
fn pushback_delays_the_next_attempt_or_stops_hedging() {
    let env = Env::new();
    let pushback = |ms: &str| {
        let mut md = Metadata::new();
        md.insert(PUSHBACK_TRAILER, ms).unwrap();
        Status::unavailable("later").with_trailers(md)
    };
    let (p500, stop) = (pushback("500"), pushback("-1"));
    let seen = serve(&env.transport, move |n| match n {
        0 => Answer::Fail(p500.clone()),
        1 => Answer::First,
        _ => Answer::Fail(stop.clone()),
    });
    let channel = channel(&env, hedging(5, "60s", r#""UNAVAILABLE""#));
    let call = unary_on_thread(&channel, "x");
    seen.wait_ended(1);
    // The clock moves in 10 ms steps until the second attempt starts: not before
    // the 500 ms the server asked for (the hedging delay is 60 s).
    let mut waited = Duration::ZERO;
    while seen.started() < 2 {
        assert!(waited < Duration::from_secs(2), "no second attempt");
        env.advance(&channel, Duration::from_millis(10));
        waited += Duration::from_millis(10);
        let give_up = Instant::now() + Duration::from_millis(20);
        while seen.started() < 2 && Instant::now() < give_up {
            thread::sleep(Duration::from_millis(1));
        }
    }
    assert!(waited >= Duration::from_millis(500), "after {waited:?}");
    assert_eq!(call.join().unwrap().unwrap(), b"x");
    assert_eq!(seen.started(), 2);

    let err = call_now(&channel, "y").unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    env.advance(&channel, Duration::from_secs(120));
    assert_eq!(seen.started(), 3, "negative pushback: no more attempts");
}

#[test]
fn when_every_attempt_fails_non_fatally_the_last_failure_is_the_calls() {
    let env = Env::new();
    let seen = serve(&env.transport, |n| {
        Answer::Fail(Status::unavailable(format!("attempt {n}")))
    });
    let channel = channel(&env, hedging(3, "60s", "14"));
    let err = call_now(&channel, "x").unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unavailable, "attempt 2")
    );
    assert_eq!(seen.started(), 3);
}

#[test]
fn a_hedged_client_stream_is_replayed_to_each_attempt() {
    let env = Env::new();
    let seen = serve(&env.transport, |n| {
        if n == 0 { Answer::Stall } else { Answer::First }
    });
    let channel = channel(&env, hedging(2, "1s", ""));
    let c = channel.clone();
    let call = thread::spawn(move || {
        let call = c.client_streaming("/h.S/M", CallOptions::default())?;
        call.send("one").unwrap();
        call.send("two").unwrap();
        call.finish()
    });
    seen.wait_started(1);
    env.advance(&channel, Duration::from_secs(1));
    assert_eq!(call.join().unwrap().unwrap().message, b"one");
    let attempts = seen.wait_ended(2);
    let both = [b"one".to_vec(), b"two".to_vec()];
    assert_eq!(
        attempts[1].messages, both,
        "the hedge got everything sent before it"
    );
    // The first attempt was cancelled when the second answered, possibly before its
    // handler had read all it was sent.
    assert!(both.starts_with(&attempts[0].messages), "{attempts:?}");
    assert!(attempts[0].cancelled);
}

#[test]
fn cancelling_a_hedged_call_cancels_every_attempt() {
    let env = Env::new();
    let seen = serve(&env.transport, |_| Answer::Stall);
    let channel = channel(&env, hedging(2, "1s", ""));
    let call = channel
        .bidi_streaming("/h.S/M", CallOptions::default())
        .unwrap();
    call.send_last("x").unwrap();
    let (sender, receiver) = call.split();
    let waiter = thread::spawn(move || receiver.recv());
    seen.wait_started(1);
    env.advance(&channel, Duration::from_secs(1));
    seen.wait_started(2);
    sender.cancel();
    assert_eq!(waiter.join().unwrap().unwrap_err().code(), Code::Cancelled);
    let attempts = seen.wait_ended(2);
    assert!(attempts.iter().all(|a| a.cancelled), "{attempts:?}");
}
