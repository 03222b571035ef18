//! ORCA (gRFC A51) through a whole channel on the in-memory transport with a manual
//! clock: `weighted_round_robin` weighs three backends (utilization 0.2, 0.4, 0.8 at
//! the same qps, so 4 : 2 : 1) from per-call trailers and from out-of-band
//! `StreamCoreMetrics` streams; a policy that never asks opens no stream; a stream
//! that fails before answering is re-opened after the channel's backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lb_core::channel::Channel;
use lb_core::orca::{self, OrcaLoadReport, OrcaLoadReportRequest};
use lb_core::{Metadata, Status};
use lb_testkit::ManualResolver;
use parking_lot::Mutex;

mod util;
use util::{Env, WAIT};

const ADDRS: [&str; 3] = ["a:1", "b:1", "c:1"];
const UTILIZATIONS: [f64; 3] = [0.2, 0.4, 0.8];

/// What a backend's ORCA service saw.
#[derive(Default)]
struct Seen {
    /// The report interval each StreamCoreMetrics stream asked for, in order.
    streams: Mutex<Vec<Duration>>,
    /// Reports sent out of band.
    sent: AtomicUsize,
    /// The next stream fails at once with UNAVAILABLE.
    fail_next: AtomicBool,
}

fn report(utilization: f64) -> OrcaLoadReport {
    OrcaLoadReport {
        application_utilization: utilization,
        rps_fractional: 50.0,
        ..Default::default()
    }
}

/// Serves `/test.Echo/Who` (its address, and a per-call report in the trailers) and
/// StreamCoreMetrics (one report, then open until cancelled) on each address.
fn serve(env: &Env) -> Vec<Arc<Seen>> {
    ADDRS
        .iter()
        .zip(UTILIZATIONS)
        .map(|(&address, utilization)| {
            let seen = Arc::new(Seen::default());
            let me = seen.clone();
            env.transport.add_stream_server(address, move |call| {
                let request = call.recv().unwrap_or_default();
                if &*call.head().method == orca::STREAM_CORE_METRICS_METHOD {
                    let asked = OrcaLoadReportRequest::decode(&request)
                        .map_err(|e| Status::internal(e.to_string()))?;
                    me.streams.lock().push(asked.report_interval);
                    if me.fail_next.swap(false, Ordering::SeqCst) {
                        return Err(Status::unavailable("ORCA service restarting"));
                    }
                    call.send(report(utilization).encode())?;
                    me.sent.fetch_add(1, Ordering::SeqCst);
                    let give_up = Instant::now() + WAIT;
                    while !call.is_cancelled() && Instant::now() < give_up {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    return Err(Status::cancelled("client went away"));
                }
                call.send(address.as_bytes().to_vec())?;
                let mut trailers = Metadata::new();
                report(utilization).write_trailer(&mut trailers);
                Ok(trailers)
            });
            seen
        })
        .collect()
}

fn channel_with(env: &Env, config: &str) -> (Channel, ManualResolver) {
    let (builder, resolver) = env.resolved_builder();
    let channel = builder.build().unwrap();
    resolver.push_with_config(&ADDRS, config);
    channel.state(true);
    (channel, resolver)
}

fn count_calls(channel: &Channel, env: &Env, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let r = channel
            .unary(
                "/test.Echo/Who",
                Vec::new(),
                env.deadline_in(Duration::from_secs(5))
                    .with_wait_for_ready(true),
            )
            .unwrap();
        *seen
            .entry(String::from_utf8(r.message).unwrap())
            .or_insert(0) += 1;
    }
    seen
}

/// Waits (bounded) until `done` holds.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let give_up = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < give_up, "still waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn assert_weighted(counts: &HashMap<String, usize>) {
    let got: Vec<usize> = ADDRS.iter().map(|a| counts[*a]).collect();
    for (g, want) in got.iter().zip([400, 200, 100]) {
        assert!(
            g.abs_diff(want) <= 7,
            "calls {got:?}, want about [400, 200, 100]"
        );
    }
}

#[test]
fn per_call_reports_weigh_the_backends_and_open_no_stream() {
    let env = Env::new();
    let seen = serve(&env);
    let (channel, _resolver) = channel_with(
        &env,
        r#"{"loadBalancingConfig": [{"weighted_round_robin": {"blackoutPeriod": "0s"}}]}"#,
    );
    let before = count_calls(&channel, &env, 30);
    assert_eq!(before.len(), 3, "plain round robin first: {before:?}");
    env.advance(&channel, Duration::from_secs(1));
    assert_weighted(&count_calls(&channel, &env, 700));
    for s in &seen {
        assert!(s.streams.lock().is_empty(), "no out-of-band stream");
    }
    channel.close();
}

#[test]
fn out_of_band_reports_weigh_the_backends() {
    let env = Env::new();
    let seen = serve(&env);
    let (channel, _resolver) = channel_with(
        &env,
        r#"{"loadBalancingConfig": [{"weighted_round_robin": {
            "blackoutPeriod": "0s", "enableOobLoadReport": true, "oobReportingPeriod": "5s"}}]}"#,
    );
    for s in &seen {
        wait_until("a report on each stream", || {
            s.sent.load(Ordering::SeqCst) == 1
        });
        assert_eq!(*s.streams.lock(), [Duration::from_secs(5)]);
    }
    assert!(channel.settle());
    env.advance(&channel, Duration::from_secs(1));
    assert_weighted(&count_calls(&channel, &env, 700));
    channel.close();
}

#[test]
fn round_robin_opens_no_stream() {
    let env = Env::new();
    let seen = serve(&env);
    let (channel, _resolver) =
        channel_with(&env, r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#);
    let counts = count_calls(&channel, &env, 30);
    // Early calls may find only some connections READY; all three serve.
    assert_eq!(counts.len(), 3, "{counts:?}");
    env.advance(&channel, Duration::from_secs(60));
    for s in &seen {
        assert!(s.streams.lock().is_empty());
    }
    channel.close();
}

#[test]
fn a_failed_stream_is_reopened_after_the_backoff() {
    let env = Env::new();
    let seen = serve(&env);
    seen[0].fail_next.store(true, Ordering::SeqCst);
    let (channel, _resolver) = channel_with(
        &env,
        r#"{"loadBalancingConfig": [{"weighted_round_robin": {
            "enableOobLoadReport": true, "oobReportingPeriod": "1s"}}]}"#,
    );
    wait_until("the first stream", || seen[0].streams.lock().len() == 1);
    assert!(channel.settle());
    // The channel's initial backoff is 1 s with ±20 % jitter.
    env.advance(&channel, Duration::from_millis(790));
    assert_eq!(seen[0].streams.lock().len(), 1, "re-opened too early");
    env.advance(&channel, Duration::from_millis(420));
    wait_until("the second stream", || {
        seen[0].sent.load(Ordering::SeqCst) == 1
    });
    assert_eq!(seen[0].streams.lock().len(), 2);
    channel.close();
}
