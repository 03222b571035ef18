//! The RLS picker's decision table, row by row (grpc-go's picker tests and
//! conformance scenarios 18, 19, 21–24), on a fake controller with a manual clock
//! and a fake RLS server on the in-memory transport.

mod util;

use std::time::Duration;

use lb_core::{BackoffConfig, Code, ConnectivityState, Metadata, Status};
use lb_rls::proto::{Reason, RouteLookupResponse};
use serde_json::{Value, json};
use util::{Harness, METHOD, Picked, config, md, pick};

/// A backoff of exactly 5 s after every failure.
fn fixed_backoff() -> BackoffConfig {
    BackoffConfig {
        initial: Duration::from_secs(5),
        multiplier: 1.0,
        jitter: 0.0,
        max: Duration::from_secs(5),
        ..BackoffConfig::default()
    }
}

fn with_default(mut json: Value) -> Value {
    json["routeLookupConfig"]["defaultTarget"] = "default-backend:1".into();
    json
}

fn with_ages(mut json: Value, max_age: &str, stale_age: &str) -> Value {
    json["routeLookupConfig"]["maxAge"] = max_age.into();
    json["routeLookupConfig"]["staleAge"] = stale_age.into();
    json
}

fn harness() -> Harness {
    Harness::with(|o| o.cache.backoff = fixed_backoff())
}

#[test]
fn method_names_not_of_the_form_service_method_fail_with_unavailable() {
    let mut h = harness();
    h.update(&config(util::RLS));
    let picker = h.picker();
    for bad in [
        "grpc.testing.TestService/EmptyCall",
        "/service",
        "/service/path/to/method",
    ] {
        let got = pick(&*picker, bad, &Metadata::new());
        let Picked::Fail(code, message) = got else {
            panic!("{bad}: {got:?}");
        };
        assert_eq!(code, Code::Unavailable, "{bad}");
        assert!(
            message.contains("is not of the form '/service/method'"),
            "{message}"
        );
    }
    assert_eq!(pick(&*picker, METHOD, &Metadata::new()), Picked::Queue);
}

#[test]
fn miss_throttled_with_default_target_goes_to_the_default_and_sends_nothing() {
    let mut h = harness();
    h.throttle.set(true);
    h.update(&with_default(config(util::RLS)));
    assert_eq!(h.pick0(), Picked::to("default-backend:1"));
    h.work();
    assert_eq!(h.server.request_count(), 0);
}

#[test]
fn miss_throttled_without_default_target_fails() {
    let mut h = harness();
    h.throttle.set(true);
    h.update(&config(util::RLS));
    assert_eq!(
        h.pick0(),
        Picked::Fail(
            Code::Unavailable,
            "RLS call throttled at client side".into()
        )
    );
    h.work();
    assert_eq!(h.server.request_count(), 0);
}

#[test]
fn miss_sends_a_request_and_an_empty_target_list_is_a_failure() {
    let mut h = harness();
    h.update(&config(util::RLS));
    let md = md(&[("n1", "v1"), ("n2", "v2")]);
    assert_eq!(h.pick(&md), Picked::Queue);
    // The server's default answer has no targets.
    let got = h.pick_until_done(&md);
    let (code, message) = got.failure().expect("a failure");
    assert_eq!(code, Code::Unavailable);
    assert!(
        message.contains("RLS response's target list does not contain any entries for key"),
        "{message}"
    );
    let requests = h.server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].target_type, "grpc");
    assert_eq!(requests[0].reason, Reason::Miss);
    assert_eq!(requests[0].stale_header_data, "");
    assert_eq!(requests[0].key_map.to_string(), "k1=v1,k2=v2");
}

#[test]
fn pending_miss_queues_and_the_default_target_is_not_used() {
    for default in [false, true] {
        let mut h = harness();
        let json = config(util::RLS);
        h.update(&if default { with_default(json) } else { json });
        h.server.respond_targets(&["backend-a:1"], "");
        h.transport.hold_calls(util::RLS);
        assert_eq!(h.pick0(), Picked::Queue);
        h.work();
        assert!(h.transport.wait_for_pending_calls(util::RLS, 1, util::WAIT));
        for _ in 0..3 {
            assert_eq!(h.pick0(), Picked::Queue, "default {default}");
            h.work();
        }
        assert_eq!(
            h.transport.pending_calls(util::RLS),
            1,
            "one request per key"
        );
        h.transport.release_calls(util::RLS);
        assert_eq!(
            h.pick_until_done(&Metadata::new()),
            Picked::to("backend-a:1")
        );
        assert_eq!(h.server.request_count(), 1);
    }
}

#[test]
fn valid_entry_is_served_from_the_cache_without_a_new_request() {
    let mut h = harness();
    h.update(&config(util::RLS));
    h.server.respond_targets(&["backend-a:1"], "");
    assert_eq!(
        h.pick_until_done(&Metadata::new()),
        Picked::to("backend-a:1")
    );
    for _ in 0..5 {
        assert_eq!(h.pick0(), Picked::to("backend-a:1"));
        h.work();
    }
    assert_eq!(h.server.request_count(), 1);
}

#[test]
fn header_data_goes_on_every_pick_through_the_entry_once_and_never_to_the_default() {
    let mut h = harness();
    h.throttle.set(false);
    h.update(&with_default(config(util::RLS)));
    h.server.respond_with(|req| {
        Ok(match req.key_map.get("k1") {
            Some("with-data") => RouteLookupResponse {
                targets: vec!["backend-a:1".into()],
                header_data: "foo,bar,baz".into(),
            },
            _ => RouteLookupResponse {
                targets: vec!["backend-b:1".into()],
                header_data: String::new(),
            },
        })
    });
    let with_data = md(&[("n1", "with-data")]);
    let want = Picked::Pick {
        address: "backend-a:1".into(),
        rls_data: vec!["foo,bar,baz".into()],
    };
    assert_eq!(h.pick_until_done(&with_data), want);
    assert_eq!(h.pick(&with_data), want);
    // An entry with empty header data adds no header.
    let without = md(&[("n1", "other")]);
    assert_eq!(h.pick_until_done(&without), Picked::to("backend-b:1"));
    // The default target gets none either.
    h.throttle.set(true);
    assert_eq!(
        h.pick(&md(&[("n1", "third")])),
        Picked::to("default-backend:1")
    );
}

#[test]
fn header_data_that_is_not_a_valid_header_value_is_dropped_not_sent() {
    let mut h = harness();
    h.update(&config(util::RLS));
    // A line break would let the RLS server inject headers into every call.
    h.server
        .respond_targets(&["backend-a:1"], "ok\r\nx-injected: evil");
    assert_eq!(
        h.pick_until_done(&Metadata::new()),
        Picked::to("backend-a:1"),
        "the call is still routed, without the header"
    );
    assert_eq!(h.pick0(), Picked::to("backend-a:1"));
}

#[test]
fn stale_entry_is_served_while_one_stale_request_refreshes_it() {
    let mut h = harness();
    h.update(&with_ages(config(util::RLS), "60s", "10s"));
    h.server.respond_targets(&["backend-a:1"], "hd-1");
    let first = h.pick_until_done(&Metadata::new());
    assert_eq!(first.address(), Some("backend-a:1"));
    h.clock.advance(Duration::from_secs(11));
    h.server.respond_targets(&["backend-b:1"], "hd-2");
    h.transport.hold_calls(util::RLS);
    // Stale: served from the cache, and a refresh is recorded once.
    for _ in 0..3 {
        assert_eq!(h.pick0().address(), Some("backend-a:1"));
        h.work();
    }
    assert!(h.transport.wait_for_pending_calls(util::RLS, 1, util::WAIT));
    assert_eq!(h.pick0().address(), Some("backend-a:1"));
    h.transport.release_calls(util::RLS);
    h.server.wait_for_requests(2);
    h.work_until("the refreshed entry", |h| {
        h.pick0().address() == Some("backend-b:1")
    });
    let requests = h.server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].reason, Reason::Stale);
    assert_eq!(requests[1].stale_header_data, "hd-1");
}

#[test]
fn stale_entry_with_a_throttled_refresh_is_still_served() {
    let mut h = harness();
    h.update(&with_ages(config(util::RLS), "60s", "10s"));
    h.server.respond_targets(&["backend-a:1"], "");
    assert_eq!(
        h.pick_until_done(&Metadata::new()),
        Picked::to("backend-a:1")
    );
    h.clock.advance(Duration::from_secs(11));
    h.throttle.set(true);
    for _ in 0..3 {
        assert_eq!(h.pick0(), Picked::to("backend-a:1"));
        h.work();
    }
    assert_eq!(
        h.server.request_count(),
        1,
        "the throttled refresh is not sent"
    );
    // Not throttled any more: the next pick refreshes.
    h.throttle.set(false);
    assert_eq!(h.pick0(), Picked::to("backend-a:1"));
    h.work();
    h.server.wait_for_requests(2);
    assert_eq!(h.server.requests()[1].reason, Reason::Stale);
}

#[test]
fn expired_entry_throttled_goes_to_the_default_or_fails() {
    for default in [true, false] {
        let mut h = harness();
        let json = with_ages(config(util::RLS), "1s", "1s");
        h.update(&if default { with_default(json) } else { json });
        h.server.respond_targets(&["backend-a:1"], "");
        assert_eq!(
            h.pick_until_done(&Metadata::new()),
            Picked::to("backend-a:1")
        );
        h.clock.advance(Duration::from_secs(2));
        h.throttle.set(true);
        let want = if default {
            Picked::to("default-backend:1")
        } else {
            Picked::Fail(
                Code::Unavailable,
                "RLS call throttled at client side".into(),
            )
        };
        assert_eq!(h.pick0(), want);
        h.work();
        assert_eq!(h.server.request_count(), 1);
    }
}

#[test]
fn expired_entry_not_in_backoff_sends_a_miss_and_queues() {
    let mut h = harness();
    h.update(&with_default(with_ages(config(util::RLS), "1s", "1s")));
    h.server.respond_targets(&["backend-a:1"], "");
    assert_eq!(
        h.pick_until_done(&Metadata::new()),
        Picked::to("backend-a:1")
    );
    h.clock.advance(Duration::from_secs(2));
    assert_eq!(h.pick0(), Picked::Queue, "expired data is not used");
    assert_eq!(
        h.pick_until_done(&Metadata::new()),
        Picked::to("backend-a:1")
    );
    let requests = h.server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].reason, Reason::Miss);
}

#[test]
fn expired_entry_in_backoff_goes_to_the_default_or_fails_with_the_rls_error() {
    for default in [true, false] {
        let mut h = harness();
        let json = with_ages(config(util::RLS), "1s", "1s");
        h.update(&if default { with_default(json) } else { json });
        h.server.respond_targets(&["backend-a:1"], "");
        assert_eq!(
            h.pick_until_done(&Metadata::new()),
            Picked::to("backend-a:1")
        );
        h.server
            .respond_with(|_| Err(Status::deadline_exceeded("last RLS request failed")));
        h.clock.advance(Duration::from_secs(2));
        let got = h.pick_until_done(&Metadata::new());
        if default {
            assert_eq!(got, Picked::to("default-backend:1"));
        } else {
            let (code, message) = got.failure().expect("a failure");
            assert_eq!(code, Code::Unavailable, "never the RLS server's code");
            assert!(message.contains("last RLS request failed"), "{message}");
            assert!(
                message.contains("most recent error from RLS server"),
                "{message}"
            );
        }
        // While the backoff runs, nothing is sent; when it ends, a new picker is
        // published and the next pick asks again.
        h.advance(Duration::from_secs(4));
        assert_eq!(h.pick0(), got);
        h.work();
        assert_eq!(h.server.request_count(), 2);
        let published = h.states.len();
        h.advance(Duration::from_secs(1));
        assert!(
            h.states.len() > published,
            "a new picker at the end of the backoff"
        );
        assert_eq!(h.pick0(), Picked::Queue);
        h.work();
        h.server.wait_for_requests(3);
    }
}

#[test]
fn pending_request_with_a_stale_entry_still_serves_from_the_cache() {
    let mut h = harness();
    h.update(&with_ages(config(util::RLS), "60s", "10s"));
    h.server.respond_targets(&["backend-a:1"], "");
    assert_eq!(
        h.pick_until_done(&Metadata::new()),
        Picked::to("backend-a:1")
    );
    h.clock.advance(Duration::from_secs(11));
    h.transport.hold_calls(util::RLS);
    assert_eq!(h.pick0(), Picked::to("backend-a:1"));
    h.work();
    assert!(h.transport.wait_for_pending_calls(util::RLS, 1, util::WAIT));
    for _ in 0..3 {
        assert_eq!(h.pick0(), Picked::to("backend-a:1"));
        h.work();
    }
    assert_eq!(h.transport.pending_calls(util::RLS), 1);
    h.transport.release_calls(util::RLS);
}

#[test]
fn pending_request_with_an_expired_entry_queues() {
    let mut h = harness();
    h.update(&with_default(with_ages(config(util::RLS), "1s", "1s")));
    h.server.respond_targets(&["backend-a:1"], "");
    assert_eq!(
        h.pick_until_done(&Metadata::new()),
        Picked::to("backend-a:1")
    );
    h.clock.advance(Duration::from_secs(2));
    h.transport.hold_calls(util::RLS);
    assert_eq!(h.pick0(), Picked::Queue);
    h.work();
    assert!(h.transport.wait_for_pending_calls(util::RLS, 1, util::WAIT));
    for _ in 0..3 {
        assert_eq!(h.pick0(), Picked::Queue);
        h.work();
    }
    assert_eq!(h.transport.pending_calls(util::RLS), 1, "no second request");
    h.transport.release_calls(util::RLS);
}

/// Makes the (pick_first) child of `address` lose its connection and fail to
/// reconnect: TRANSIENT_FAILURE.
fn fail(h: &mut Harness, address: &str) {
    h.set_state(address, ConnectivityState::Idle);
    h.exit_idle();
    h.set_state(address, ConnectivityState::Connecting);
    h.set_state(address, ConnectivityState::TransientFailure);
}

#[test]
fn delegation_skips_children_in_transient_failure_except_the_last() {
    let mut h = harness();
    h.update(&config(util::RLS));
    h.server
        .respond_targets(&["backend-a:1", "backend-b:1"], "hd");
    let got = h.pick_until_done(&Metadata::new());
    assert_eq!(got.address(), Some("backend-a:1"));
    fail(&mut h, "backend-a:1");
    assert_eq!(h.pick0().address(), Some("backend-b:1"));
    fail(&mut h, "backend-b:1");
    // Both failing: the last child's picker decides (pick_first fails the call).
    let got = h.pick0();
    let (code, message) = got.failure().expect("the last child's failure");
    assert_eq!(code, Code::Unavailable);
    assert!(message.contains("backend-b:1"), "{message}");
    // A child that recovers is used again; one that is merely CONNECTING is
    // delegated to (its picker queues) rather than skipped.
    h.set_state("backend-a:1", ConnectivityState::Ready);
    assert_eq!(h.pick0().address(), Some("backend-a:1"));
    assert_eq!(h.state().connectivity_state, ConnectivityState::Ready);
    h.set_state("backend-a:1", ConnectivityState::Idle);
    h.set_state("backend-a:1", ConnectivityState::Connecting);
    assert_eq!(h.pick0(), Picked::Queue);
}

#[test]
fn keys_come_from_headers_and_the_authority() {
    let mut h = harness();
    let mut json = config(util::RLS);
    json["routeLookupConfig"]["grpcKeybuilders"] = json!([{
        "names": [{"service": "grpc.testing.TestService", "method": "EmptyCall"}],
        "headers": [{"key": "user", "names": ["x-user"]}],
        "extraKeys": {"host": "host", "service": "svc", "method": "meth"},
        "constantKeys": {"tier": "gold"},
    }]);
    h.update(&json);
    h.server.respond_targets(&["backend-a:1"], "");
    let md = md(&[("x-user", "alice"), ("x-user", "bob")]);
    assert_eq!(h.pick_until_done(&md), Picked::to("backend-a:1"));
    assert_eq!(
        h.server.requests()[0].key_map.to_string(),
        "host=test.example.com,meth=EmptyCall,svc=grpc.testing.TestService,tier=gold,user=alice,bob"
    );
}
