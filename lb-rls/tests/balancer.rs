//! The RLS policy's lifecycle (grpc-go's balancer tests and conformance scenario
//! 25): config updates, the control channel, the default target, child policies,
//! the cache's size and purge, state aggregation, one picker per update, and a
//! close that leaves nothing behind.

mod util;

use std::time::Duration;

use lb_core::channelz::{self, PolicyView};
use lb_core::{
    BackoffConfig, Code, ConnectivityState, Metadata, ResolverUpdate, Status, endpoints,
};
use lb_rls::metrics::RlsMetric;
use lb_rls::proto::Reason;
use serde_json::{Value, json};
use util::{ChildEvent, FakeRls, Harness, Picked, config, md};

fn fixed_backoff() -> BackoffConfig {
    BackoffConfig {
        initial: Duration::from_secs(5),
        multiplier: 1.0,
        jitter: 0.0,
        max: Duration::from_secs(5),
        ..BackoffConfig::default()
    }
}

fn set(json: &mut Value, field: &str, value: Value) {
    json["routeLookupConfig"][field] = value;
}

fn configs_of(events: &[ChildEvent], backend: &str) -> Vec<Value> {
    events
        .iter()
        .filter_map(|e| match e {
            ChildEvent::Config { json, .. } if json["Backend"] == backend => Some(json.clone()),
            _ => None,
        })
        .collect()
}

fn closed(events: &[ChildEvent], backend: &str) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, ChildEvent::Closed { backend: b, .. } if b == backend))
        .count()
}

#[test]
fn initial_state_is_idle_with_no_children_and_no_default_target() {
    let mut h = Harness::new();
    h.update(&config(util::RLS));
    assert_eq!(h.states.len(), 1, "one picker for the config update");
    assert_eq!(h.state().connectivity_state, ConnectivityState::Idle);
    assert_eq!(
        h.pick0(),
        Picked::Queue,
        "always the RLS picker, never a fixed one"
    );
}

#[test]
fn one_picker_per_config_update_however_many_states_children_report() {
    let mut h = Harness::new();
    let mut json = config(util::RLS);
    json["childPolicy"] = json!([{"test_child": {"Emit": true}}]);
    set(&mut json, "defaultTarget", "default-backend:1".into());
    h.auto_ready = false;
    h.update(&json);
    // The default child reported IDLE, CONNECTING and CONNECTING: one picker.
    assert_eq!(h.states.len(), 1);
    assert_eq!(h.state().connectivity_state, ConnectivityState::Connecting);
    h.set_state("default-backend:1", ConnectivityState::Connecting);
    h.set_state("default-backend:1", ConnectivityState::Ready);
    assert_eq!(h.state().connectivity_state, ConnectivityState::Ready);
    let before = h.states.len();
    // grpc-go's TestUpdateStatePauses: another key builder name.
    json["routeLookupConfig"]["grpcKeybuilders"][0]["names"] =
        json!([{"service": "grpc.testing.TestService"}, {"service": "grpc.testing.Other"}]);
    h.update(&json);
    assert_eq!(h.states.len(), before + 1);
    // A child config change pushed to a child that reports two states: still one.
    json["childPolicy"] = json!([{"test_child": {"Emit": true, "Random": "random"}}]);
    h.update(&json);
    assert_eq!(h.states.len(), before + 2);
}

#[test]
fn equal_config_is_ignored_but_resolver_changes_still_reach_the_children() {
    let mut h = Harness::new();
    let mut json = config(util::RLS);
    set(&mut json, "defaultTarget", "default-backend:1".into());
    h.update(&json);
    let first = h.take_child_events();
    assert_eq!(configs_of(&first, "default-backend:1").len(), 1);
    let published = h.states.len();
    h.update(&json);
    assert!(
        h.take_child_events().is_empty(),
        "same config, same addresses"
    );
    assert_eq!(h.states.len(), published);
    // The same config with new addresses: the children hear of them (grpc-go drops
    // this update).
    h.update_with(
        &json,
        ResolverUpdate::from_endpoints(endpoints(["svc:1", "svc:2"])),
    );
    assert_eq!(
        configs_of(&h.take_child_events(), "default-backend:1").len(),
        1
    );
    assert_eq!(*h.throttle.made.lock(), 1, "same control channel");
}

#[test]
fn a_new_lookup_service_gets_a_new_control_channel_and_the_old_one_closes() {
    let mut h = Harness::new();
    let server2 = FakeRls::start(&h.transport, "rls-server-2:1");
    let mut json = config(util::RLS);
    set(&mut json, "maxAge", "1s".into());
    h.update(&json);
    h.server.respond_targets(&["backend-1:1"], "");
    server2.respond_targets(&["backend-2:1"], "");
    assert_eq!(
        h.pick_until_done(&Metadata::new()),
        Picked::to("backend-1:1")
    );
    assert_eq!(h.transport.connection_count(util::RLS), 1);
    set(
        &mut json,
        "lookupService",
        "passthrough:///rls-server-2:1".into(),
    );
    h.update(&json);
    assert_eq!(
        h.transport.connection_count(util::RLS),
        0,
        "old channel closed"
    );
    // Still valid data is still used; once expired, server 2 is asked.
    assert_eq!(h.pick0(), Picked::to("backend-1:1"));
    h.clock.advance(Duration::from_secs(2));
    assert_eq!(
        h.pick_until_done(&Metadata::new()),
        Picked::to("backend-2:1")
    );
    assert_eq!(server2.request_count(), 1);
    assert_eq!(h.server.request_count(), 1);
}

#[test]
fn any_control_channel_field_change_rebuilds_it_with_a_fresh_throttler() {
    let mut h = Harness::new();
    let mut json = config(util::RLS);
    h.update(&json);
    h.server.respond_targets(&["backend-1:1"], "");
    assert_eq!(
        h.pick_until_done(&Metadata::new()),
        Picked::to("backend-1:1")
    );
    assert_eq!(h.transport.connect_count(util::RLS), 1);
    assert_eq!(*h.throttle.made.lock(), 1);

    // Each new channel connects eagerly; the old one is closed.
    set(&mut json, "lookupServiceTimeout", "7s".into());
    h.update(&json);
    assert_eq!(*h.throttle.made.lock(), 2);
    h.work_until("the second connection", |h| {
        h.transport.connect_count(util::RLS) == 2
    });
    json["routeLookupChannelServiceConfig"] = json!({"loadBalancingConfig": [{"round_robin": {}}]});
    h.update(&json);
    assert_eq!(*h.throttle.made.lock(), 3);
    h.work_until("the third connection", |h| {
        h.transport.connect_count(util::RLS) == 3
    });
    assert_eq!(h.transport.connection_count(util::RLS), 1);
    // A config change elsewhere keeps the channel.
    set(&mut json, "cacheSizeBytes", 2048.into());
    h.update(&json);
    assert_eq!(*h.throttle.made.lock(), 3);
}

#[test]
fn requests_pending_on_a_replaced_control_channel_are_sent_on_the_new_one() {
    let mut h = Harness::new();
    let server2 = FakeRls::start(&h.transport, "rls-server-2:1");
    server2.respond_targets(&["backend-2:1"], "");
    let mut json = config(util::RLS);
    h.update(&json);
    h.transport.hold_calls(util::RLS);
    assert_eq!(h.pick0(), Picked::Queue);
    h.work();
    assert!(h.transport.wait_for_pending_calls(util::RLS, 1, util::WAIT));
    set(
        &mut json,
        "lookupService",
        "passthrough:///rls-server-2:1".into(),
    );
    h.update(&json);
    assert_eq!(
        h.pick_until_done(&Metadata::new()),
        Picked::to("backend-2:1")
    );
    assert_eq!(server2.request_count(), 1);
    // The call the old server held ended with its channel.
    assert_eq!(h.transport.pending_calls(util::RLS), 0);
}

#[test]
fn default_target_change_swaps_the_default_child() {
    let mut h = Harness::new();
    h.throttle.set(true);
    let mut json = config(util::RLS);
    set(&mut json, "defaultTarget", "default-1:1".into());
    h.update(&json);
    assert_eq!(h.pick0(), Picked::to("default-1:1"));
    let old_sc = h.subchannels[0].id();
    set(&mut json, "defaultTarget", "default-2:1".into());
    h.update(&json);
    assert_eq!(h.pick0(), Picked::to("default-2:1"));
    let events = h.take_child_events();
    assert_eq!(
        closed(&events, "default-1:1"),
        1,
        "the old default child is closed"
    );
    assert_eq!(h.shutdowns, [old_sc]);
    // No default any more: picks fail, and the child is gone.
    let json = config(util::RLS);
    h.update(&json);
    assert_eq!(h.pick0().failure().map(|f| f.0), Some(Code::Unavailable));
    assert_eq!(closed(&h.take_child_events(), "default-2:1"), 1);
    assert_eq!(h.state().connectivity_state, ConnectivityState::Idle);
}

#[test]
fn a_default_target_that_rls_also_returns_shares_one_child_and_outlives_the_default() {
    let mut h = Harness::new();
    let mut json = config(util::RLS);
    set(&mut json, "defaultTarget", "shared:1".into());
    h.update(&json);
    h.server.respond_targets(&["shared:1"], "");
    assert_eq!(h.pick_until_done(&Metadata::new()), Picked::to("shared:1"));
    assert_eq!(h.subchannels.len(), 1, "one child for both");
    set(&mut json, "defaultTarget", "other-default:1".into());
    h.update(&json);
    let events = h.take_child_events();
    assert_eq!(
        closed(&events, "shared:1"),
        0,
        "the cache entry still holds it"
    );
    assert_eq!(h.pick0(), Picked::to("shared:1"));
    // Changing the default back and forth never drops the entry's reference.
    set(&mut json, "defaultTarget", "shared:1".into());
    h.update(&json);
    json["routeLookupConfig"]
        .as_object_mut()
        .unwrap()
        .remove("defaultTarget");
    h.update(&json);
    assert_eq!(closed(&h.take_child_events(), "shared:1"), 0);
    assert_eq!(h.pick0(), Picked::to("shared:1"));
}

#[test]
fn child_policy_configs_carry_the_target_and_config_changes_reach_every_child() {
    let mut h = Harness::new();
    let mut json = config(util::RLS);
    set(&mut json, "defaultTarget", "default:1".into());
    h.update(&json);
    assert_eq!(
        configs_of(&h.take_child_events(), "default:1"),
        [json!({"Backend": "default:1"})]
    );
    h.server.respond_targets(&["test:1"], "");
    assert_eq!(h.pick_until_done(&Metadata::new()), Picked::to("test:1"));
    assert_eq!(
        configs_of(&h.take_child_events(), "test:1"),
        [json!({"Backend": "test:1"})]
    );
    json["childPolicy"] = json!([{"test_child": {"Random": "random"}}]);
    h.update(&json);
    let events = h.take_child_events();
    for backend in ["default:1", "test:1"] {
        assert_eq!(
            configs_of(&events, backend),
            [json!({"Backend": backend, "Random": "random"})],
            "{backend}"
        );
    }
}

#[test]
fn child_policy_name_change_rebuilds_every_child() {
    let mut h = Harness::new();
    let mut json = config(util::RLS);
    set(&mut json, "defaultTarget", "default-backend:1".into());
    h.update(&json);
    h.take_child_events();
    json["childPolicy"] = json!([{"test_child_2": {}}]);
    h.update(&json);
    let events = h.take_child_events();
    assert_eq!(
        events,
        [
            ChildEvent::Closed {
                policy: "test_child",
                backend: "default-backend:1".into()
            },
            ChildEvent::Config {
                policy: "test_child_2",
                json: json!({"Backend": "default-backend:1"})
            },
        ]
    );
    h.throttle.set(true);
    assert_eq!(h.pick0(), Picked::to("default-backend:1"));
}

#[test]
fn a_target_whose_child_config_does_not_parse_is_lamed() {
    let mut h = Harness::new();
    let mut json = config(util::RLS);
    set(&mut json, "defaultTarget", "default-backend:1".into());
    h.update(&json);
    h.server.respond_targets(&["bad-target"], "");
    let got = h.pick_until_done(&Metadata::new());
    let (code, message) = got.failure().expect("a failure");
    assert_eq!(code, Code::Unavailable);
    assert!(
        message.contains("backend field set to RLSChildPolicyBadTarget"),
        "{message}"
    );
    // The healthy default keeps the aggregate out of TRANSIENT_FAILURE.
    assert_eq!(h.state().connectivity_state, ConnectivityState::Ready);
    // Without the default, the lamed child alone makes it TRANSIENT_FAILURE.
    json["routeLookupConfig"]
        .as_object_mut()
        .unwrap()
        .remove("defaultTarget");
    h.update(&json);
    assert_eq!(
        h.state().connectivity_state,
        ConnectivityState::TransientFailure
    );
}

#[test]
fn a_smaller_cache_evicts_the_least_recently_used_entry_and_releases_its_child() {
    let mut h = Harness::with(|o| o.cache.min_evict_age = Duration::ZERO);
    let mut json = config(util::RLS);
    h.update(&json);
    h.server.respond_with(|req| {
        let target = match req.key_map.get("k1") {
            Some(_) => "backend-1:1",
            None => "backend-2:1",
        };
        Ok(lb_rls::proto::RouteLookupResponse {
            targets: vec![target.into()],
            header_data: String::new(),
        })
    });
    let (n1, n2) = (md(&[("n1", "v1")]), md(&[("n2", "v2")]));
    assert_eq!(h.pick_until_done(&n1), Picked::to("backend-1:1"));
    assert_eq!(h.pick_until_done(&n2), Picked::to("backend-2:1"));
    // Each entry is 35 (path) + 5 (keys) bytes; 50 bytes hold one.
    assert_eq!(h.recorder.gauge_value(RlsMetric::CacheSize), Some(80));
    let sc1 = h.subchannels[0].id();
    set(&mut json, "cacheSizeBytes", 50.into());
    h.update(&json);
    assert_eq!(h.recorder.gauge_value(RlsMetric::CacheEntries), Some(1));
    assert_eq!(closed(&h.take_child_events(), "backend-1:1"), 1);
    assert_eq!(h.shutdowns, [sc1]);
    // The evicted key needs a new lookup; the other is still cached.
    assert_eq!(h.pick(&n2), Picked::to("backend-2:1"));
    assert_eq!(h.pick(&n1), Picked::Queue);
    assert_eq!(h.pick_until_done(&n1), Picked::to("backend-1:1"));
    assert_eq!(h.server.request_count(), 3);
}

#[test]
fn a_hit_makes_an_entry_recently_used() {
    let mut h = Harness::with(|o| o.cache.min_evict_age = Duration::ZERO);
    let mut json = config(util::RLS);
    h.update(&json);
    h.server.respond_targets(&["backend-1:1"], "");
    let (n1, n2) = (md(&[("n1", "v1")]), md(&[("n2", "v2")]));
    assert_eq!(h.pick_until_done(&n1), Picked::to("backend-1:1"));
    assert_eq!(h.pick_until_done(&n2), Picked::to("backend-1:1"));
    // n1 is the least recently used until a pick hits it.
    assert_eq!(h.pick(&n1), Picked::to("backend-1:1"));
    set(&mut json, "cacheSizeBytes", 50.into());
    h.update(&json);
    assert_eq!(h.pick(&n1), Picked::to("backend-1:1"));
    assert_eq!(h.pick(&n2), Picked::Queue, "n2 was evicted");
}

#[test]
fn evicting_an_entry_in_backoff_publishes_a_new_picker() {
    let mut h = Harness::with(|o| {
        o.cache.min_evict_age = Duration::ZERO;
        o.cache.backoff = fixed_backoff();
    });
    let mut json = config(util::RLS);
    h.update(&json);
    // No keys: the server fails; the entry (size 0) is in backoff.
    h.server.respond_with(|req| match req.key_map.is_empty() {
        true => Err(Status::unavailable("no keys")),
        false => Ok(lb_rls::proto::RouteLookupResponse {
            targets: vec!["backend-1:1".into()],
            header_data: String::new(),
        }),
    });
    let failed = h.pick_until_done(&Metadata::new());
    assert!(failed.failure().is_some(), "{failed:?}");
    assert_eq!(
        h.pick_until_done(&md(&[("n1", "v1")])),
        Picked::to("backend-1:1")
    );
    assert_eq!(
        h.pick_until_done(&md(&[("n2", "v2")])),
        Picked::to("backend-1:1")
    );
    assert_eq!(h.state().connectivity_state, ConnectivityState::Ready);
    let published = h.states.len();
    // The backoff entry (0 bytes) is the least recently used, then n1 (40 bytes);
    // a 40-byte budget evicts both and keeps n2, whose child keeps the policy READY.
    set(&mut json, "cacheSizeBytes", 40.into());
    h.update(&json);
    assert_eq!(h.states.len(), published + 1);
    assert_eq!(h.state().connectivity_state, ConnectivityState::Ready);
    assert_eq!(h.recorder.gauge_value(RlsMetric::CacheEntries), Some(1));
    assert_eq!(h.pick(&md(&[("n2", "v2")])), Picked::to("backend-1:1"));
    // The key that was in backoff asks the server again at once.
    assert_eq!(h.pick0(), Picked::Queue);
}

#[test]
fn the_purge_drops_expired_entries_and_their_children() {
    let mut h = Harness::new();
    let mut json = config(util::RLS);
    set(&mut json, "maxAge", "1s".into());
    h.update(&json);
    assert_eq!(h.wakes.len(), 1, "the purge timer");
    h.server.respond_targets(&["backend-1:1"], "");
    let (n1, n2) = (md(&[("n1", "v1")]), md(&[("n2", "v2")]));
    assert_eq!(h.pick_until_done(&n1), Picked::to("backend-1:1"));
    assert_eq!(h.pick_until_done(&n2), Picked::to("backend-1:1"));
    h.advance(Duration::from_secs(30));
    assert_eq!(h.recorder.gauge_value(RlsMetric::CacheEntries), Some(2));
    h.take_child_events();
    h.advance(Duration::from_secs(31));
    assert_eq!(h.recorder.gauge_value(RlsMetric::CacheEntries), Some(0));
    assert_eq!(closed(&h.take_child_events(), "backend-1:1"), 1);
    assert_eq!(h.pick(&n1), Picked::Queue);
    assert_eq!(h.pick_until_done(&n2), Picked::to("backend-1:1"));
    assert_eq!(h.server.request_count(), 4);
}

#[test]
fn aggregate_state_follows_the_children_and_transient_failure_is_sticky() {
    let mut h = Harness::new();
    h.auto_ready = false;
    let mut json = config(util::RLS);
    set(&mut json, "defaultTarget", "default:1".into());
    h.update(&json);
    assert_eq!(h.state().connectivity_state, ConnectivityState::Connecting);
    h.set_state("default:1", ConnectivityState::Connecting);
    h.set_state("default:1", ConnectivityState::TransientFailure);
    assert_eq!(
        h.state().connectivity_state,
        ConnectivityState::TransientFailure
    );
    let published = h.states.len();
    // TRANSIENT_FAILURE to CONNECTING is ignored (pick_first reports CONNECTING on
    // its next attempt; the RLS aggregate stays failed).
    h.set_state("default:1", ConnectivityState::Idle);
    h.exit_idle();
    h.set_state("default:1", ConnectivityState::Connecting);
    assert_eq!(
        h.states.last().unwrap().connectivity_state,
        ConnectivityState::TransientFailure
    );
    assert!(h.states.len() >= published);
    h.set_state("default:1", ConnectivityState::Ready);
    assert_eq!(h.state().connectivity_state, ConnectivityState::Ready);
}

#[test]
fn every_response_is_recorded_in_the_throttler() {
    let mut h = Harness::with(|o| o.cache.backoff = fixed_backoff());
    h.update(&config(util::RLS));
    h.server.respond_targets(&["backend-1:1"], "");
    assert_eq!(
        h.pick_until_done(&md(&[("n1", "a")])),
        Picked::to("backend-1:1")
    );
    h.server
        .respond_with(|_| Err(Status::unavailable("overloaded")));
    assert!(h.pick_until_done(&md(&[("n1", "b")])).failure().is_some());
    h.server.respond_targets(&[], "");
    assert!(h.pick_until_done(&md(&[("n1", "c")])).failure().is_some());
    assert_eq!(*h.throttle.responses.lock(), [false, true, true]);
}

#[test]
fn the_adaptive_throttler_sheds_lookups_when_the_server_rejects_them() {
    let mut h = Harness::with(|o| o.throttler = None);
    h.update(&config(util::RLS));
    h.server
        .respond_with(|_| Err(Status::unavailable("rejected")));
    let mut throttled = 0;
    for i in 0..200 {
        let got = h.pick_until_done(&md(&[("n1", &i.to_string())]));
        match got {
            Picked::Fail(Code::Unavailable, m) if m == "RLS call throttled at client side" => {
                throttled += 1;
            }
            Picked::Fail(Code::Unavailable, m) => {
                assert!(m.contains("rejected"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        if throttled >= 5 {
            break;
        }
    }
    assert!(throttled >= 5, "the throttler never throttled");
    assert!(h.server.request_count() < 200);
}

#[test]
fn close_leaves_nothing_behind() {
    let mut h = Harness::new();
    let mut json = config(util::RLS);
    set(&mut json, "defaultTarget", "default:1".into());
    h.update(&json);
    h.server
        .respond_targets(&["backend-1:1", "backend-2:1"], "");
    assert_eq!(
        h.pick_until_done(&md(&[("n1", "x")])),
        Picked::to("backend-1:1")
    );
    h.transport.hold_calls(util::RLS);
    assert_eq!(h.pick(&md(&[("n1", "y")])), Picked::Queue);
    h.work();
    assert!(h.transport.wait_for_pending_calls(util::RLS, 1, util::WAIT));
    assert!(h.rls.thread_count() >= 2, "a lookup thread and the watcher");
    let picker = h.picker();
    h.close();
    // Every subchannel shut down exactly once.
    let mut created: Vec<_> = h.subchannels.iter().map(|s| s.id()).collect();
    let mut shut = h.shutdowns.clone();
    created.sort();
    shut.sort();
    assert_eq!(created.len(), 3);
    assert_eq!(shut, created);
    // Every child closed exactly once.
    let events = h.take_child_events();
    for backend in ["default:1", "backend-1:1", "backend-2:1"] {
        assert_eq!(closed(&events, backend), 1, "{backend}");
    }
    // The control channel and its threads are gone, the held call ended with it.
    assert_eq!(h.rls.thread_count(), 0);
    assert_eq!(h.transport.connection_count(util::RLS), 0);
    assert_eq!(h.transport.pending_calls(util::RLS), 0);
    // A picker still held by a caller fails what it cannot serve from its snapshot.
    let got = util::pick(&*picker, util::METHOD, &md(&[("n1", "z")]));
    assert_eq!(
        got,
        Picked::Fail(Code::Unavailable, "rls: LB policy already shut down".into())
    );
    // Later calls do nothing.
    let published = h.states.len();
    h.work();
    h.update(&json);
    assert_eq!(h.states.len(), published);
    h.close();
}

#[test]
fn stale_refresh_success_keeps_the_entrys_children_and_releases_replaced_ones() {
    let mut h = Harness::new();
    let mut json = config(util::RLS);
    set(&mut json, "maxAge", "60s".into());
    set(&mut json, "staleAge", "10s".into());
    h.update(&json);
    h.server.respond_targets(&["backend-1:1"], "");
    assert_eq!(
        h.pick_until_done(&Metadata::new()),
        Picked::to("backend-1:1")
    );
    // Same target on refresh: the child stays.
    h.clock.advance(Duration::from_secs(11));
    assert_eq!(h.pick0(), Picked::to("backend-1:1"));
    h.work();
    h.server.wait_for_requests(2);
    h.work_until_published("the refresh applied");
    assert_eq!(h.pick0(), Picked::to("backend-1:1"));
    assert_eq!(closed(&h.take_child_events(), "backend-1:1"), 0);
    // A different target on the next refresh: the old child goes.
    h.server.respond_targets(&["backend-2:1"], "");
    h.clock.advance(Duration::from_secs(11));
    assert_eq!(h.pick0(), Picked::to("backend-1:1"));
    h.work_until("the second refresh", |h| {
        h.pick0() == Picked::to("backend-2:1")
    });
    assert_eq!(closed(&h.take_child_events(), "backend-1:1"), 1);
    assert_eq!(h.server.requests()[2].reason, Reason::Stale);
}

#[test]
fn describe_shows_the_cache_the_children_and_the_control_channel() {
    let mut h = Harness::new();
    let mut json = config(util::RLS);
    set(&mut json, "maxAge", "60s".into());
    set(&mut json, "staleAge", "30s".into());
    h.update(&json);
    h.server.respond_targets(&["backend-1:1"], "hd-1");
    let md = md(&[("n1", "v1")]);
    assert_eq!(
        h.pick_until_done(&md),
        Picked::Pick {
            address: "backend-1:1".into(),
            rls_data: vec!["hd-1".into()]
        }
    );

    let describe = |h: &Harness| {
        let mut view = PolicyView::child("", "rls_experimental");
        h.policy.describe(&mut view);
        view
    };
    let view = describe(&h);
    assert!(
        view.config
            .as_deref()
            .unwrap_or("")
            .contains("lookupService"),
        "{view:#?}"
    );
    let control: u64 = view
        .get_detail("control channel")
        .and_then(|id| id.parse().ok())
        .expect("the control channel's id");
    assert_eq!(
        h.parent.nested(),
        [control],
        "a nested channel of the parent"
    );
    assert_eq!(
        channelz::registry().kind(control),
        Some(channelz::Kind::NestedChannel)
    );
    let cache = view.tables.iter().find(|t| t.title == "cache").unwrap();
    assert_eq!(cache.rows.len(), 1, "{cache:#?}");
    let row = &cache.rows[0];
    let column = |name: &str| &row[cache.columns.iter().position(|c| c == name).unwrap()];
    assert!(column("key").starts_with(util::METHOD), "{row:?}");
    assert!(column("key").contains("k1=v1"), "{row:?}");
    assert_eq!(column("targets"), "backend-1:1");
    assert_eq!(column("header data"), "hd-1");
    assert_eq!(column("data"), "fresh");
    assert_eq!(column("backoff"), "-");
    assert_eq!(view.children.len(), 1);
    let child = &view.children[0];
    assert_eq!(
        (child.name.as_str(), child.policy.as_str()),
        ("backend-1:1", "test_child")
    );
    assert_eq!(child.get_detail("references"), Some("1"));

    h.advance(Duration::from_secs(40));
    let view = describe(&h);
    let cache = view.tables.iter().find(|t| t.title == "cache").unwrap();
    let data = cache.columns.iter().position(|c| c == "data").unwrap();
    let age = cache.columns.iter().position(|c| c == "age").unwrap();
    assert_eq!(cache.rows[0][data], "stale");
    assert_eq!(cache.rows[0][age], "40s");

    h.close();
    assert!(h.parent.nested().is_empty(), "the control channel closed");
    assert!(channelz::registry().kind(control).is_none());
}
