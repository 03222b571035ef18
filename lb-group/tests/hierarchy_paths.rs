//! weighted_target and priority route endpoints by hierarchy path: given endpoints
//! without any (a plain `dns:` or `ipv4:` target), they say so, instead of letting
//! their children report that the resolver produced zero addresses.

use std::time::Instant;

use lb_core::{
    ConnectivityState, LbPolicyBuilder, LbPolicyRegistry, Metadata, PickInfo, PickResult,
    ResolverUpdate, UpdateError, endpoints,
};
use lb_testkit::FakeController;

fn check(builder: &dyn LbPolicyBuilder, config: serde_json::Value) {
    let mut registry = LbPolicyRegistry::with_builtins();
    lb_group::register(&mut registry);
    let mut ctrl = FakeController::new();
    let mut policy = builder.build(ctrl.policy_options_with(registry.clone()));
    let config = builder.parse_config(&config, &registry).unwrap();
    let update = ResolverUpdate::from_endpoints(endpoints(["10.0.0.1:443", "10.0.0.2:443"]));
    let err = policy
        .resolver_update(update, Some(&config), &mut ctrl, Instant::now())
        .unwrap_err();
    let UpdateError::BadResolverState(why) = err else {
        panic!("{err:?}");
    };
    assert!(why.contains("by hierarchy path"), "{why}");
    assert!(why.contains("none of the 2 endpoints has one"), "{why}");
    assert!(!why.contains("zero addresses"), "{why}");
    let state = ctrl.latest_state();
    assert_eq!(
        state.connectivity_state,
        ConnectivityState::TransientFailure
    );
    let md = Metadata::new();
    let info = PickInfo::new("/s/m", &md);
    match state.picker.pick(&info) {
        PickResult::Fail(status) => {
            assert!(status.message().contains("hierarchy path"), "{status}")
        }
        _ => panic!("calls must fail with the reason"),
    }
}

#[test]
fn weighted_target_without_paths_names_what_is_missing() {
    check(
        &lb_group::weighted_target::WeightedTargetBuilder,
        serde_json::json!({"targets": {"a": {"weight": 1, "childPolicy": [{"round_robin": {}}]}}}),
    );
}

#[test]
fn priority_without_paths_names_what_is_missing() {
    check(
        &lb_group::priority::PriorityBuilder,
        serde_json::json!({"children": {"p0": {"config": [{"round_robin": {}}]}},
                           "priorities": ["p0"]}),
    );
}
