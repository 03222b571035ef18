//! The RLS metrics (grpc-go's metrics tests): target, default-target and failed
//! picks with their labels, queued picks not counted, and the cache gauges.

mod util;

use lb_core::{ConnectivityState, Metadata};
use lb_rls::metrics::{
    LABEL_DATA_PLANE_TARGET, LABEL_INSTANCE_UUID, LABEL_PICK_RESULT, LABEL_SERVER_TARGET,
    LABEL_TARGET, RlsMetric,
};
use util::{Harness, Picked, config};

const SERVER_TARGET: &str = "passthrough:///rls-server:1";

fn pick_labels<'a>(data_plane: &'a str, result: &'a str) -> [(&'static str, &'a str); 4] {
    [
        (LABEL_TARGET, "test.example.com"),
        (LABEL_SERVER_TARGET, SERVER_TARGET),
        (LABEL_DATA_PLANE_TARGET, data_plane),
        (LABEL_PICK_RESULT, result),
    ]
}

#[test]
fn a_pick_through_an_rls_target_counts_as_a_target_pick() {
    let mut h = Harness::new();
    h.update(&config(util::RLS));
    h.server.respond_targets(&["backend:1"], "");
    assert_eq!(h.pick_until_done(&Metadata::new()), Picked::to("backend:1"));
    let r = &h.recorder;
    assert_eq!(
        r.counter(
            RlsMetric::TargetPicks,
            &pick_labels("backend:1", "complete")
        ),
        1
    );
    assert_eq!(
        r.counter_total(RlsMetric::TargetPicks),
        1,
        "queued picks not counted"
    );
    assert_eq!(r.counter_total(RlsMetric::DefaultTargetPicks), 0);
    assert_eq!(r.counter_total(RlsMetric::FailedPicks), 0);
    assert_eq!(r.gauge_value(RlsMetric::CacheEntries), Some(1));
    // "/grpc.testing.TestService/EmptyCall" with no keys and no header data.
    assert_eq!(r.gauge_value(RlsMetric::CacheSize), Some(35));
}

#[test]
fn a_pick_sent_to_the_default_target_counts_as_a_default_target_pick() {
    let mut h = Harness::new();
    let mut json = config(util::RLS);
    json["routeLookupConfig"]["defaultTarget"] = "default:1".into();
    h.update(&json);
    // The server's empty answer is a failure: the entry is in backoff.
    assert_eq!(h.pick_until_done(&Metadata::new()), Picked::to("default:1"));
    let r = &h.recorder;
    assert_eq!(
        r.counter(
            RlsMetric::DefaultTargetPicks,
            &pick_labels("default:1", "complete")
        ),
        1
    );
    assert_eq!(r.counter_total(RlsMetric::TargetPicks), 0);
    assert_eq!(r.counter_total(RlsMetric::FailedPicks), 0);
    assert_eq!(r.gauge_value(RlsMetric::CacheEntries), Some(1));
    assert_eq!(r.gauge_value(RlsMetric::CacheSize), Some(0));
}

#[test]
fn a_pick_failed_for_want_of_rls_data_counts_as_a_failed_pick() {
    let mut h = Harness::new();
    h.update(&config(util::RLS));
    assert!(h.pick_until_done(&Metadata::new()).failure().is_some());
    let r = &h.recorder;
    assert_eq!(
        r.counter(
            RlsMetric::FailedPicks,
            &[
                (LABEL_TARGET, "test.example.com"),
                (LABEL_SERVER_TARGET, SERVER_TARGET)
            ]
        ),
        1
    );
    assert_eq!(r.counter_total(RlsMetric::TargetPicks), 0);
    assert_eq!(r.counter_total(RlsMetric::DefaultTargetPicks), 0);
    assert_eq!(r.gauge_value(RlsMetric::CacheEntries), Some(1));
    assert_eq!(r.gauge_value(RlsMetric::CacheSize), Some(0));
}

#[test]
fn a_childs_failure_is_counted_as_fail_and_its_queued_picks_are_not_counted() {
    let mut h = Harness::new();
    h.update(&config(util::RLS));
    h.server.respond_targets(&["backend:1"], "");
    assert_eq!(h.pick_until_done(&Metadata::new()), Picked::to("backend:1"));
    h.recorder.clear();
    h.set_state("backend:1", ConnectivityState::Idle);
    assert_eq!(h.pick0(), Picked::Queue);
    assert_eq!(h.recorder.counter_total(RlsMetric::TargetPicks), 0);
    h.exit_idle();
    h.set_state("backend:1", ConnectivityState::Connecting);
    h.set_state("backend:1", ConnectivityState::TransientFailure);
    assert!(h.pick0().failure().is_some());
    assert_eq!(
        h.recorder
            .counter(RlsMetric::TargetPicks, &pick_labels("backend:1", "fail")),
        1
    );
}

#[test]
fn the_cache_gauges_name_the_policy_instance() {
    let mut h = Harness::new();
    h.update(&config(util::RLS));
    let series = h.recorder.snapshot();
    let gauges: Vec<_> = series
        .iter()
        .filter(|s| s.name == RlsMetric::CacheEntries.name())
        .collect();
    assert_eq!(gauges.len(), 1);
    let uuid = &gauges[0].labels[LABEL_INSTANCE_UUID];
    let parts: Vec<usize> = uuid.split('-').map(str::len).collect();
    assert_eq!(parts, [8, 4, 4, 4, 12], "{uuid}");
    assert!(uuid.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    assert_eq!(&uuid[14..15], "4", "version 4: {uuid}");
    assert_eq!(gauges[0].labels[LABEL_SERVER_TARGET], SERVER_TARGET);
}
