//! Tests of the policy registry and `loadBalancingConfig` parsing.

use lb_core::{ConfigError, LbPolicyRegistry};
use serde_json::json;

fn parse(v: serde_json::Value) -> Result<&'static str, ConfigError> {
    LbPolicyRegistry::with_builtins()
        .parse_load_balancing_config(&v)
        .map(|c| c.name())
}

#[test]
fn first_registered_name_wins_and_unknown_names_are_skipped() {
    assert_eq!(
        parse(json!([{"round_robin": {}}, {"pick_first": {}}])),
        Ok("round_robin")
    );
    assert_eq!(
        parse(json!([{"xds": {}}, {"pick_first": {}}])),
        Ok("pick_first")
    );
}

#[test]
fn no_registered_name_lists_what_was_tried() {
    let err = parse(json!([{"grpclb": {}}, {"rls_nope": {}}])).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"no registered policy among ["grpclb", "rls_nope"]"#
    );
    let err = parse(json!([])).unwrap_err();
    assert_eq!(err.to_string(), "no registered policy among []");
}

#[test]
fn names_are_case_sensitive() {
    assert!(parse(json!([{"ROUND_ROBIN": {}}])).is_err());
}

#[test]
fn malformed_lists_name_the_entry() {
    let cases = [
        (json!({"round_robin": {}}), "", "must be an array"),
        (json!([1]), "[0]", "must be an object, not a number"),
        (json!([{}]), "[0]", "exactly one policy name, found 0"),
        (
            json!([{"a": {}, "b": {}}]),
            "[0]",
            "exactly one policy name, found 2",
        ),
    ];
    for (input, field, msg) in cases {
        let err = parse(input.clone()).unwrap_err();
        assert_eq!(err.field(), field, "{input}");
        assert!(err.message().contains(msg), "{input}: {err}");
    }
}

#[test]
fn bad_field_values_name_the_field_and_do_not_fall_through() {
    let err = parse(json!([{"pick_first": {"shuffleAddressList": "yes"}}, {"round_robin": {}}]))
        .unwrap_err();
    assert_eq!(err.field(), "[0].pick_first.shuffleAddressList");
    assert!(err.message().contains("must be a boolean"), "{err}");
    let err = parse(json!([{"round_robin": []}])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "[0].round_robin: must be an object, not an array"
    );
}

#[test]
fn unknown_fields_are_ignored() {
    assert_eq!(
        parse(json!([{"pick_first": {"futureOption": 3}}])),
        Ok("pick_first")
    );
}

#[test]
fn bad_json_text_names_the_position() {
    let err = lb_core::config::parse_json("[{\"round_robin\": }]").unwrap_err();
    assert!(
        err.message().contains("invalid JSON") && err.message().contains("column"),
        "{err}"
    );
}

#[test]
fn a_policy_of_another_crate_says_which_crate_registers_it() {
    let reg = LbPolicyRegistry::with_builtins();
    let err = reg
        .parse_load_balancing_config(&serde_json::json!([{"rls_experimental": {}}, {"nope": {}}]))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("no registered policy among [\"rls_experimental\", \"nope\"]"),
        "{err}"
    );
    assert!(err.contains("call lb_rls::register"), "{err}");
    let err = lb_core::channel::ServiceConfig::parse_str(
        r#"{"loadBalancingPolicy": "weighted_target_experimental"}"#,
        &reg,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("call lb_group::register"), "{err}");
}
