//! The control channel (grpc-go's control channel tests and the connectivity parts
//! of conformance scenario 25): lookup failures and deadlines, malformed
//! responses, its service config, its thread limit, and the backoff reset that
//! only a recovery from TRANSIENT_FAILURE triggers.

mod util;

use std::time::Duration;

use lb_core::transport::{CallRequest, CallResponse};
use lb_core::{BackoffConfig, Code, Metadata, Status};
use lb_rls::control_channel::MAX_LOOKUP_THREADS;
use serde_json::{Value, json};
use util::{FakeRls, Harness, Picked, config, md};

fn fixed_backoff() -> BackoffConfig {
    BackoffConfig {
        initial: Duration::from_secs(5),
        multiplier: 1.0,
        jitter: 0.0,
        max: Duration::from_secs(5),
        ..BackoffConfig::default()
    }
}

fn harness() -> Harness {
    Harness::with(|o| o.cache.backoff = fixed_backoff())
}

fn failure_message(got: &Picked) -> String {
    let (code, message) = got.failure().unwrap_or_else(|| panic!("{got:?}"));
    assert_eq!(code, Code::Unavailable);
    message.to_owned()
}

#[test]
fn a_failed_lookup_becomes_unavailable_with_the_servers_message() {
    let mut h = harness();
    h.update(&config(util::RLS));
    h.server
        .respond_with(|_| Err(Status::new(Code::PermissionDenied, "boom")));
    let message = failure_message(&h.pick_until_done(&Metadata::new()));
    assert!(message.contains("PERMISSION_DENIED: boom"), "{message}");
}

#[test]
fn a_lookup_past_its_deadline_fails_with_deadline_exceeded() {
    let mut h = harness();
    let mut json = config(util::RLS);
    json["routeLookupConfig"]["lookupServiceTimeout"] = "1s".into();
    h.update(&json);
    h.transport.hold_calls(util::RLS);
    assert_eq!(h.pick0(), Picked::Queue);
    h.work();
    assert!(h.transport.wait_for_pending_calls(util::RLS, 1, util::WAIT));
    h.clock.advance(Duration::from_secs(1));
    let message = failure_message(&h.pick_until_done(&Metadata::new()));
    assert!(message.contains("DEADLINE_EXCEEDED"), "{message}");
}

#[test]
fn a_malformed_response_is_a_failure() {
    let mut h = harness();
    h.update(&config(util::RLS));
    h.transport.add_server(util::RLS, |_: &CallRequest| {
        Ok(CallResponse {
            message: b"\x1a\x09back".to_vec(),
            ..Default::default()
        })
    });
    let message = failure_message(&h.pick_until_done(&Metadata::new()));
    assert!(
        message.contains("malformed RouteLookupResponse"),
        "{message}"
    );
}

#[test]
fn a_control_channel_that_cannot_be_built_fails_lookups_or_uses_the_default() {
    let mut h = harness();
    let mut json = config(util::RLS);
    // A known scheme, but not a target its resolver accepts.
    json["routeLookupConfig"]["lookupService"] = "unix://host/rls.sock".into();
    h.update(&json);
    let message = failure_message(&h.pick_until_done(&Metadata::new()));
    assert!(
        message.contains("cannot build the control channel"),
        "{message}"
    );
    json["routeLookupConfig"]["defaultTarget"] = "default:1".into();
    h.update(&json);
    assert_eq!(
        h.pick_until_done(&md(&[("n1", "other")])),
        Picked::to("default:1")
    );
    assert_eq!(h.rls.thread_count(), 0, "no channel, no threads");
}

#[test]
fn the_control_channel_uses_route_lookup_channel_service_config() {
    for (policy, spread) in [("pick_first", false), ("round_robin", true)] {
        let mut h = harness();
        let servers = [
            FakeRls::start(&h.transport, "10.0.0.1:1"),
            FakeRls::start(&h.transport, "10.0.0.2:1"),
        ];
        for s in &servers {
            s.respond_targets(&["backend:1"], "");
        }
        let mut json = config(util::RLS);
        json["routeLookupConfig"]["lookupService"] = "ipv4:10.0.0.1:1,10.0.0.2:1".into();
        json["routeLookupChannelServiceConfig"] = json!({"loadBalancingConfig": [{policy: {}}]});
        h.update(&json);
        for i in 0..6 {
            let got = h.pick_until_done(&md(&[("n1", &i.to_string())]));
            assert_eq!(got, Picked::to("backend:1"));
        }
        let counts = [servers[0].request_count(), servers[1].request_count()];
        assert_eq!(counts[0] + counts[1], 6, "{policy}");
        if spread {
            assert!(counts[0] > 0 && counts[1] > 0, "{policy}: {counts:?}");
        } else {
            assert_eq!(counts, [6, 0], "{policy}");
        }
    }
}

#[test]
fn lookups_run_concurrently_up_to_the_thread_limit() {
    let mut h = harness();
    h.update(&config(util::RLS));
    h.server.respond_targets(&["backend:1"], "");
    h.transport.hold_calls(util::RLS);
    let keys: Vec<Metadata> = (0..MAX_LOOKUP_THREADS + 3)
        .map(|i| md(&[("n1", &i.to_string())]))
        .collect();
    for k in &keys {
        assert_eq!(h.pick(k), Picked::Queue);
    }
    h.work();
    assert!(
        h.transport
            .wait_for_pending_calls(util::RLS, MAX_LOOKUP_THREADS, util::WAIT)
    );
    assert_eq!(h.transport.pending_calls(util::RLS), MAX_LOOKUP_THREADS);
    // The lookup threads plus the watcher.
    assert_eq!(h.rls.thread_count(), MAX_LOOKUP_THREADS + 1);
    h.transport.release_calls(util::RLS);
    for k in &keys {
        assert_eq!(h.pick_until_done(k), Picked::to("backend:1"));
    }
    assert_eq!(h.server.request_count(), keys.len());
}

/// Fails the lookup for `md` (the server answers errors), leaving its key in a
/// 5 s backoff.
fn put_in_backoff(h: &mut Harness, md: &Metadata) {
    h.server
        .respond_with(|_| Err(Status::unavailable("RLS server overloaded")));
    let message = failure_message(&h.pick_until_done(md));
    assert!(message.contains("overloaded"), "{message}");
}

fn backoff_reset_config() -> Value {
    let mut json = config(util::RLS);
    json["routeLookupConfig"]["lookupServiceTimeout"] = "1s".into();
    json
}

#[test]
fn backoffs_reset_when_the_control_channel_recovers_from_transient_failure() {
    let mut h = harness();
    h.update(&backoff_reset_config());
    let (a, b) = (md(&[("n1", "a")]), md(&[("n1", "b")]));
    // The initial CONNECTING → READY resets nothing: `a` stays in backoff.
    put_in_backoff(&mut h, &a);
    h.work();
    assert!(h.pick(&a).failure().is_some());
    h.work();
    assert_eq!(h.server.request_count(), 1);

    // The RLS server goes away: the next lookup finds the channel failing.
    h.transport.remove_server(util::RLS);
    let message = failure_message(&h.pick_until_done(&b));
    assert!(!message.contains("overloaded"), "{message}");

    // It comes back; the channel reconnects after its backoff (about 1 s), which
    // is shorter than the keys' 5 s.
    h.server.serve(&h.transport);
    h.server.respond_targets(&["backend:1"], "");
    let mut reset = false;
    for _ in 0..3 {
        h.clock.advance(Duration::from_millis(1300));
        if h.work_until_within(Duration::from_secs(5), |h| h.pick(&a) == Picked::Queue) {
            reset = true;
            break;
        }
    }
    assert!(reset, "READY after TRANSIENT_FAILURE resets every backoff");
    assert_eq!(h.pick_until_done(&a), Picked::to("backend:1"));
    assert_eq!(h.pick_until_done(&b), Picked::to("backend:1"));
}

#[test]
fn ready_idle_ready_does_not_reset_backoffs() {
    let mut h = harness();
    h.update(&backoff_reset_config());
    let (a, b) = (md(&[("n1", "a")]), md(&[("n1", "b")]));
    put_in_backoff(&mut h, &a);
    let connects = h.transport.connect_count(util::RLS);
    // The connection closes cleanly: the channel goes IDLE, not TRANSIENT_FAILURE,
    // and the next lookup reconnects.
    h.transport.close_connections(util::RLS);
    h.server.respond_targets(&["backend:1"], "");
    assert_eq!(h.pick_until_done(&b), Picked::to("backend:1"));
    assert!(
        h.transport.connect_count(util::RLS) > connects,
        "reconnected"
    );
    h.work();
    // `a` is still in its backoff: it fails without a new request.
    assert!(h.pick(&a).failure().is_some());
    h.work();
    assert_eq!(h.server.request_count(), 2);
    // Until the backoff ends.
    h.advance(Duration::from_secs(5));
    assert_eq!(h.pick_until_done(&a), Picked::to("backend:1"));
}
