//! Config parsing: grpc-go's `TestParseConfig` and `TestParseConfigErrors` scenarios,
//! plus defaults, caps, ordering and the per-target child config.

use std::time::{Duration, Instant};

use lb_core::config::Fields;
use lb_core::{
    ChannelController, ConfigError, LbConfig, LbPolicy, LbPolicyBuilder, LbPolicyOptions,
    LbPolicyRegistry, ResolverUpdate, Subchannel, SubchannelState, UpdateError,
};
use lb_rls::config::{CHILD_TARGET_PLACEHOLDER, RlsConfig, RlsConfigOptions};
use serde_json::{Value, json};

/// A child policy with a target field: `{"target": "...", "fail": bool}`. Its parser
/// refuses the target `"bad-target"` and `"fail": true`.
struct TestChildBuilder;

#[derive(Debug, PartialEq)]
struct TestChildConfig {
    target: Option<String>,
    extra: Value,
}

struct TestChild;

impl LbPolicy for TestChild {
    fn resolver_update(
        &mut self,
        _: ResolverUpdate,
        _: Option<&LbConfig>,
        _: &mut dyn ChannelController,
        _: Instant,
    ) -> Result<(), UpdateError> {
        Ok(())
    }
    fn subchannel_update(
        &mut self,
        _: &Subchannel,
        _: &SubchannelState,
        _: &mut dyn ChannelController,
        _: Instant,
    ) {
    }
    fn work(&mut self, _: &mut dyn ChannelController, _: Instant) {}
    fn exit_idle(&mut self, _: &mut dyn ChannelController, _: Instant) {}
    fn close(&mut self) {}
}

impl LbPolicyBuilder for TestChildBuilder {
    fn name(&self) -> &'static str {
        "test_child"
    }

    fn build(&self, _: LbPolicyOptions) -> Box<dyn LbPolicy> {
        Box::new(TestChild)
    }

    fn parse_config(&self, config: &Value, _: &LbPolicyRegistry) -> Result<LbConfig, ConfigError> {
        let f = Fields::new(config, "")?;
        let target = f.string("target")?.map(str::to_owned);
        if target.as_deref() == Some("bad-target") {
            return Err(ConfigError::new(
                "target",
                "backend field set to bad-target",
            ));
        }
        if f.bool("fail")? == Some(true) {
            return Err(ConfigError::new("fail", "asked to fail"));
        }
        let mut extra = config.clone();
        if let Some(obj) = extra.as_object_mut() {
            obj.remove("target");
        }
        Ok(LbConfig::new(TestChildConfig { target, extra }))
    }
}

fn registry() -> LbPolicyRegistry {
    let mut r = LbPolicyRegistry::with_builtins();
    r.register(TestChildBuilder);
    r
}

fn parse(json: &Value) -> Result<RlsConfig, ConfigError> {
    RlsConfig::parse(json, &registry(), &RlsConfigOptions::default())
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A valid config to break one field at a time.
fn base() -> Value {
    json!({
        "routeLookupConfig": {
            "grpcKeybuilders": [{
                "names": [{"service": "service", "method": "method"}],
                "headers": [{"key": "k1", "names": ["v1"]}],
            }],
            "lookupService": "passthrough:///target",
            "maxAge": "60s",
            "staleAge": "50s",
            "cacheSizeBytes": 1000,
        },
        "childPolicy": [{"test_child": {}}],
        "childPolicyConfigTargetFieldName": "target",
    })
}

/// The value at `path` (array elements by their decimal index).
fn at_path<'a>(mut at: &'a mut Value, path: &[&str]) -> &'a mut Value {
    for p in path {
        at = match p.parse::<usize>() {
            Ok(i) if at.is_array() => &mut at[i],
            _ => &mut at[*p],
        };
    }
    at
}

fn with(mut v: Value, path: &[&str], value: Value) -> Value {
    *at_path(&mut v, path) = value;
    v
}

fn without(mut v: Value, path: &[&str]) -> Value {
    let (last, parents) = path.split_last().expect("a path");
    at_path(&mut v, parents)
        .as_object_mut()
        .expect("an object")
        .remove(*last);
    v
}

// ---- grpc-go TestParseConfig: the four success cases ----

#[test]
fn max_age_over_five_minutes_is_kept_when_stale_age_is_set() {
    let json = json!({
        "routeLookupConfig": {
            "grpcKeybuilders": [{"names": [{"service": "service", "method": "method"}],
                                 "headers": [{"key": "k1", "names": ["v1"]}]}],
            "lookupService": ":///target",
            "maxAge": "500s",
            "staleAge": "600s",
            "cacheSizeBytes": 100000000,
            "defaultTarget": "passthrough:///default",
        },
        "childPolicy": [
            {"cds_experimental": {"Cluster": "my-fav-cluster"}},
            {"unknown-policy": {"unknown-field": "unknown-value"}},
            {"test_child": {"childPolicy": [{"pickfirst": {}}]}},
        ],
        "childPolicyConfigTargetFieldName": "target",
    });
    let c = parse(&json).unwrap();
    let r = c.route_lookup();
    assert_eq!(r.lookup_service(), ":///target", "kept verbatim");
    assert_eq!(r.lookup_service_timeout(), secs(10));
    assert_eq!(r.max_age(), secs(500), "not clamped: staleAge is set");
    assert_eq!(r.stale_age(), secs(300), "clamped to 5 minutes");
    // Capped at the 5 MiB default (grpc-go caps at 40 MiB).
    assert_eq!(r.cache_size_bytes(), 5 * 1024 * 1024);
    assert_eq!(r.default_target(), Some("passthrough:///default"));
    assert_eq!(r.key_builders().paths(), ["/service/method"]);
    assert_eq!(c.control_channel_service_config(), None);
    assert_eq!(c.child_policy_name(), "test_child");
    assert_eq!(c.child_policy_config_target_field_name(), "target");
    assert_eq!(
        Value::Object(c.child_policy_config().clone()),
        json!({"childPolicy": [{"pickfirst": {}}], "target": CHILD_TARGET_PLACEHOLDER})
    );
    let parsed = c
        .child_policy()
        .config
        .downcast_ref::<TestChildConfig>()
        .unwrap();
    assert_eq!(parsed.target.as_deref(), Some(CHILD_TARGET_PLACEHOLDER));

    // With grpc-go's cap the same config keeps grpc-go's number.
    let options = RlsConfigOptions {
        max_cache_size_bytes: 5 * 1024 * 1024 * 8,
        ..RlsConfigOptions::default()
    };
    let c = RlsConfig::parse(&json, &registry(), &options).unwrap();
    assert_eq!(c.route_lookup().cache_size_bytes(), 41_943_040);
}

#[test]
fn stale_age_below_max_age_is_kept() {
    let json = with(
        with(base(), &["routeLookupConfig", "maxAge"], json!("500s")),
        &["routeLookupConfig", "staleAge"],
        json!("200s"),
    );
    let r = parse(&json).unwrap().route_lookup().clone();
    assert_eq!((r.max_age(), r.stale_age()), (secs(500), secs(200)));
}

#[test]
fn max_age_is_clamped_when_stale_age_is_unset() {
    let json = without(
        with(base(), &["routeLookupConfig", "maxAge"], json!("500s")),
        &["routeLookupConfig", "staleAge"],
    );
    let r = parse(&json).unwrap().route_lookup().clone();
    assert_eq!((r.max_age(), r.stale_age()), (secs(300), secs(300)));
}

#[test]
fn every_field_is_kept_verbatim_when_in_range() {
    let json = json!({
        "routeLookupConfig": {
            "grpcKeybuilders": [{"names": [{"service": "service", "method": "method"}],
                                 "headers": [{"key": "k1", "names": ["v1"]}]}],
            "lookupService": "target",
            "lookupServiceTimeout": "100s",
            "maxAge": "60s",
            "staleAge": "50s",
            "cacheSizeBytes": 1000,
            "defaultTarget": "passthrough:///default",
        },
        "routeLookupChannelServiceConfig": {"loadBalancingConfig": [{"pick_first": {}}]},
        "childPolicy": [{"test_child": {"Backend": "x"}}],
        "childPolicyConfigTargetFieldName": "target",
    });
    let c = parse(&json).unwrap();
    let r = c.route_lookup();
    assert_eq!(r.lookup_service(), "target");
    assert_eq!(r.lookup_service_timeout(), secs(100));
    assert_eq!((r.max_age(), r.stale_age()), (secs(60), secs(50)));
    assert_eq!(r.cache_size_bytes(), 1000);
    assert_eq!(r.default_target(), Some("passthrough:///default"));
    assert_eq!(
        c.control_channel_service_config(),
        Some(&json!({"loadBalancingConfig": [{"pick_first": {}}]}))
    );
}

// ---- grpc-go TestParseConfigErrors: the seventeen failure cases ----

#[test]
fn the_seventeen_error_cases_name_their_field() {
    let reg = registry();
    let opts = RlsConfigOptions::default();
    let text_err = |text: &str| {
        RlsConfig::parse_text(text, &reg, &opts)
            .unwrap_err()
            .to_string()
    };
    let err = |json: Value| parse(&json).unwrap_err().to_string();
    let rlc = |field: &str, value: Value| with(base(), &["routeLookupConfig", field], value);

    // 1. Empty input.
    assert_eq!(text_err(""), "the config is empty");
    // 2. Bad JSON.
    assert!(
        text_err("{").starts_with("invalid JSON"),
        "{}",
        text_err("{")
    );
    // 3. requiredMatch set.
    assert_eq!(
        err(rlc(
            "grpcKeybuilders",
            json!([{"names": [{"service": "s"}], "headers": [{"key": "k", "names": ["n"], "requiredMatch": true}]}])
        )),
        "routeLookupConfig.grpcKeybuilders[0].headers[0].requiredMatch: must not be set for gRPC"
    );
    // 4. Empty lookupService.
    assert_eq!(
        err(rlc("lookupService", json!(""))),
        "routeLookupConfig.lookupService: must be non-empty"
    );
    // 5. Unregistered scheme.
    assert_eq!(
        err(rlc("lookupService", json!("badScheme:///target"))),
        "routeLookupConfig.lookupService: unknown resolver scheme \"badscheme\" in \"badScheme:///target\" (known: dns, ipv4, ipv6, passthrough, unix)"
    );
    // 6-8. Durations out of range.
    for field in ["lookupServiceTimeout", "maxAge", "staleAge"] {
        let e = err(rlc(field, json!("315576000001s")));
        assert!(
            e.starts_with(&format!("routeLookupConfig.{field}: invalid duration")),
            "{e}"
        );
        assert!(e.contains("out of range"), "{e}");
    }
    // 9. staleAge without maxAge.
    assert_eq!(
        err(without(base(), &["routeLookupConfig", "maxAge"])),
        "routeLookupConfig.staleAge: is set, but maxAge is not"
    );
    // 10. cacheSizeBytes unset, or zero.
    assert_eq!(
        err(without(base(), &["routeLookupConfig", "cacheSizeBytes"])),
        "routeLookupConfig.cacheSizeBytes: must be set"
    );
    assert_eq!(
        err(with(
            base(),
            &["routeLookupConfig", "cacheSizeBytes"],
            json!(0)
        )),
        "routeLookupConfig.cacheSizeBytes: must be greater than 0"
    );
    // A missing field is named first, before rules the rest of the config breaks.
    let mut both = without(base(), &["childPolicy"]);
    both = without(both, &["routeLookupConfig", "cacheSizeBytes"]);
    assert_eq!(err(both), "childPolicy: must be set");
    let no_target = without(base(), &["childPolicyConfigTargetFieldName"]);
    assert_eq!(
        err(without(no_target, &["routeLookupConfig", "cacheSizeBytes"])),
        "childPolicyConfigTargetFieldName: must be set"
    );
    // 11. The control channel's service config given as a string.
    assert_eq!(
        err(with(
            base(),
            &["routeLookupChannelServiceConfig"],
            json!("{\"loadBalancingConfig\": []}")
        )),
        "routeLookupChannelServiceConfig: must be an object, not a string"
    );
    // 12. The control channel's service config names only unknown policies.
    assert_eq!(
        err(with(
            base(),
            &["routeLookupChannelServiceConfig"],
            json!({"loadBalancingConfig": [{"unknown-policy": {}}]})
        )),
        "routeLookupChannelServiceConfig.loadBalancingConfig: no registered policy among [\"unknown-policy\"]"
    );
    // 13. No childPolicy.
    assert_eq!(
        err(without(base(), &["childPolicy"])),
        "childPolicy: must be set"
    );
    // 14. No registered child policy.
    assert_eq!(
        err(with(
            base(),
            &["childPolicy"],
            json!([{"cds_experimental": {}}, {"unknown-policy": {}}])
        )),
        "childPolicy: no registered policy among [\"cds_experimental\", \"unknown-policy\"]"
    );
    // 15. A child policy entry with two names.
    assert_eq!(
        err(with(
            base(),
            &["childPolicy"],
            json!([{"test_child": {}, "round_robin": {}}])
        )),
        "childPolicy[0]: must hold exactly one policy name, found 2"
    );
    // 16. No childPolicyConfigTargetFieldName, or an empty one.
    assert_eq!(
        err(without(base(), &["childPolicyConfigTargetFieldName"])),
        "childPolicyConfigTargetFieldName: must be set"
    );
    assert_eq!(
        err(with(
            base(),
            &["childPolicyConfigTargetFieldName"],
            json!("")
        )),
        "childPolicyConfigTargetFieldName: must be non-empty"
    );
    // 17. The child policy's own parser refuses its config.
    assert_eq!(
        err(with(
            base(),
            &["childPolicy"],
            json!([{"unknown": {}}, {"test_child": {"fail": true}}])
        )),
        "childPolicy[1].test_child.fail: asked to fail"
    );
}

// ---- Defaults, caps and the finer rules ----

#[test]
fn defaults_apply_to_unset_and_zero_values() {
    let json = without(
        without(base(), &["routeLookupConfig", "maxAge"]),
        &["routeLookupConfig", "staleAge"],
    );
    let r = parse(&json).unwrap().route_lookup().clone();
    assert_eq!(r.lookup_service_timeout(), secs(10));
    assert_eq!((r.max_age(), r.stale_age()), (secs(300), secs(300)));
    assert_eq!(r.default_target(), None);

    // Zero means unset: "0s" timeout is 10 s; a zero maxAge with no staleAge is 5 min.
    let json = with(
        with(
            json,
            &["routeLookupConfig", "lookupServiceTimeout"],
            json!("0s"),
        ),
        &["routeLookupConfig", "maxAge"],
        json!("0s"),
    );
    let r = parse(&json).unwrap().route_lookup().clone();
    assert_eq!(r.lookup_service_timeout(), secs(10));
    assert_eq!(r.max_age(), secs(300));
    // A zero staleAge is unset too, so it needs no maxAge.
    let json = with(
        without(base(), &["routeLookupConfig", "maxAge"]),
        &["routeLookupConfig", "staleAge"],
        json!("0s"),
    );
    assert_eq!(parse(&json).unwrap().route_lookup().stale_age(), secs(300));
    // An empty defaultTarget is unset.
    let json = with(base(), &["routeLookupConfig", "defaultTarget"], json!(""));
    assert_eq!(parse(&json).unwrap().route_lookup().default_target(), None);
}

#[test]
fn stale_age_never_exceeds_max_age() {
    let json = with(
        with(base(), &["routeLookupConfig", "maxAge"], json!("30s")),
        &["routeLookupConfig", "staleAge"],
        json!("40s"),
    );
    let r = parse(&json).unwrap().route_lookup().clone();
    assert_eq!((r.max_age(), r.stale_age()), (secs(30), secs(30)));
    // Fractional durations are fine.
    let json = with(
        with(base(), &["routeLookupConfig", "maxAge"], json!("1.5s")),
        &["routeLookupConfig", "staleAge"],
        json!("0.25s"),
    );
    let r = parse(&json).unwrap().route_lookup().clone();
    assert_eq!(
        (r.max_age(), r.stale_age()),
        (Duration::from_millis(1500), Duration::from_millis(250))
    );
}

#[test]
fn cache_size_is_an_int64_number_or_string_capped_by_the_program() {
    for (value, want) in [
        (json!("1000"), 1000),
        (json!(1), 1),
        (json!("99999999999"), 5 * 1024 * 1024),
    ] {
        let json = with(
            base(),
            &["routeLookupConfig", "cacheSizeBytes"],
            value.clone(),
        );
        assert_eq!(
            parse(&json).unwrap().route_lookup().cache_size_bytes(),
            want,
            "{value}"
        );
    }
    for value in [json!(0), json!(-1), json!("-5"), json!("0")] {
        let json = with(
            base(),
            &["routeLookupConfig", "cacheSizeBytes"],
            value.clone(),
        );
        assert_eq!(
            parse(&json).unwrap_err().to_string(),
            "routeLookupConfig.cacheSizeBytes: must be greater than 0",
            "{value}"
        );
    }
    for value in [json!(1.5), json!("ten"), json!(true)] {
        let json = with(
            base(),
            &["routeLookupConfig", "cacheSizeBytes"],
            value.clone(),
        );
        let e = parse(&json).unwrap_err();
        assert_eq!(e.field(), "routeLookupConfig.cacheSizeBytes", "{value}");
        assert!(e.message().starts_with("must be an integer"), "{e}");
    }
    let small = RlsConfigOptions {
        max_cache_size_bytes: 100,
        ..RlsConfigOptions::default()
    };
    let c = RlsConfig::parse(&base(), &registry(), &small).unwrap();
    assert_eq!(c.route_lookup().cache_size_bytes(), 100);
}

#[test]
fn lookup_service_schemes_are_injectable() {
    let json = with(
        base(),
        &["routeLookupConfig", "lookupService"],
        json!("xds:///rls"),
    );
    assert!(parse(&json).is_err());
    let mut options = RlsConfigOptions::default();
    options.known_schemes.insert("xds".into());
    assert!(RlsConfig::parse(&json, &registry(), &options).is_ok());
    // host:port is a schemeless target (grpc-go would refuse it; C++ accepts it).
    let json = with(
        base(),
        &["routeLookupConfig", "lookupService"],
        json!("rls.example.com:443"),
    );
    assert!(parse(&json).is_ok());
}

#[test]
fn errors_come_in_grpc_go_order() {
    // Type errors in routeLookupConfig come before key-builder rules...
    let json = with(
        with(base(), &["routeLookupConfig", "grpcKeybuilders"], json!([])),
        &["routeLookupConfig", "maxAge"],
        json!(5),
    );
    assert_eq!(
        parse(&json).unwrap_err().to_string(),
        "routeLookupConfig.maxAge: must be a duration string like \"10s\", not a number"
    );
    // ...key builders before lookupService...
    let json = with(
        with(base(), &["routeLookupConfig", "grpcKeybuilders"], json!([])),
        &["routeLookupConfig", "lookupService"],
        json!(""),
    );
    assert_eq!(
        parse(&json).unwrap_err().to_string(),
        "routeLookupConfig.grpcKeybuilders: must hold at least one key builder"
    );
    // ...lookupService before cacheSizeBytes...
    let json = with(
        with(base(), &["routeLookupConfig", "cacheSizeBytes"], json!(0)),
        &["routeLookupConfig", "lookupService"],
        json!(""),
    );
    assert_eq!(
        parse(&json).unwrap_err().field(),
        "routeLookupConfig.lookupService"
    );
    // ...the control channel's config before the target field name and child policy.
    let json = with(
        with(base(), &["routeLookupChannelServiceConfig"], json!(1)),
        &["childPolicyConfigTargetFieldName"],
        json!(""),
    );
    assert_eq!(
        parse(&json).unwrap_err().field(),
        "routeLookupChannelServiceConfig"
    );
    // Top-level types are checked first of all.
    let json = with(
        without(base(), &["routeLookupConfig"]),
        &["childPolicy"],
        json!({"test_child": {}}),
    );
    assert_eq!(
        parse(&json).unwrap_err().to_string(),
        "childPolicy: must be an array, not an object"
    );
    assert_eq!(
        parse(&without(base(), &["routeLookupConfig"]))
            .unwrap_err()
            .to_string(),
        "routeLookupConfig: must be set"
    );
    assert_eq!(
        parse(&json!([])).unwrap_err().to_string(),
        "must be an object, not an array"
    );
}

#[test]
fn child_policy_rules() {
    // The chosen entry's config must be an object.
    let json = with(base(), &["childPolicy"], json!([{"test_child": "x"}]));
    assert_eq!(
        parse(&json).unwrap_err().to_string(),
        "childPolicy[0].test_child: must be an object, not a string"
    );
    // An entry must be an object.
    let json = with(base(), &["childPolicy"], json!(["test_child"]));
    assert_eq!(
        parse(&json).unwrap_err().to_string(),
        "childPolicy[0]: must be an object, not a string"
    );
    // An empty list has no registered policy.
    let json = with(base(), &["childPolicy"], json!([]));
    assert_eq!(
        parse(&json).unwrap_err().to_string(),
        "childPolicy: no registered policy among []"
    );
    // No fall-through after the first registered entry fails.
    let json = with(
        base(),
        &["childPolicy"],
        json!([{"test_child": {"fail": true}}, {"round_robin": {}}]),
    );
    assert!(parse(&json).is_err());
    // A two-name entry after the chosen one is never looked at.
    let json = with(
        base(),
        &["childPolicy"],
        json!([{"round_robin": {}}, {"a": {}, "b": {}}]),
    );
    assert_eq!(parse(&json).unwrap().child_policy_name(), "round_robin");
    // An empty target field name is an error.
    let json = with(base(), &["childPolicyConfigTargetFieldName"], json!(""));
    assert_eq!(
        parse(&json).unwrap_err().field(),
        "childPolicyConfigTargetFieldName"
    );
    // The target field overrides whatever the config had there.
    let json = with(
        base(),
        &["childPolicy"],
        json!([{"test_child": {"target": "bad-target"}}]),
    );
    assert!(
        parse(&json).is_ok(),
        "the placeholder replaces the bad target at parse time"
    );
}

#[test]
fn child_config_for_a_target() {
    let reg = registry();
    let json = with(
        base(),
        &["childPolicy"],
        json!([{"test_child": {"other": 1}}]),
    );
    let c = RlsConfig::parse(&json, &reg, &RlsConfigOptions::default()).unwrap();
    assert_eq!(
        c.child_config_json("backend-1"),
        json!({"other": 1, "target": "backend-1"})
    );
    let parsed = c.child_config_for_target("backend-1", &reg).unwrap();
    assert_eq!(parsed.name(), "test_child");
    let cfg = parsed.config.downcast_ref::<TestChildConfig>().unwrap();
    assert_eq!(cfg.target.as_deref(), Some("backend-1"));
    assert_eq!(cfg.extra, json!({"other": 1}));
    // A target the child refuses fails only that child's config.
    let e = c.child_config_for_target("bad-target", &reg).unwrap_err();
    assert_eq!(
        e.to_string(),
        "test_child.target: backend field set to bad-target"
    );
    // The stored config is untouched.
    assert_eq!(c.child_policy_config()["target"], CHILD_TARGET_PLACEHOLDER);
}

#[test]
fn control_channel_service_config_is_checked_with_the_registry() {
    let sc = |v: Value| with(base(), &["routeLookupChannelServiceConfig"], v);
    assert!(parse(&sc(json!({}))).is_ok());
    assert!(
        parse(&sc(
            json!({"loadBalancingConfig": [{"unknown": {}}, {"round_robin": {}}]})
        ))
        .is_ok()
    );
    assert_eq!(
        parse(&sc(
            json!({"loadBalancingConfig": [{"test_child": {"fail": true}}]})
        ))
        .unwrap_err()
        .to_string(),
        "routeLookupChannelServiceConfig.loadBalancingConfig[0].test_child.fail: asked to fail"
    );
    // null is as good as absent.
    assert_eq!(
        parse(&sc(Value::Null))
            .unwrap()
            .control_channel_service_config(),
        None
    );
}

#[test]
fn proto_field_names_and_unknown_fields_are_accepted() {
    let json = json!({
        "routeLookupConfig": {
            "grpc_keybuilders": [{"names": [{"service": "s"}]}],
            "lookup_service": "dns:///rls",
            "lookup_service_timeout": "3s",
            "max_age": "20s",
            "stale_age": "10s",
            "cache_size_bytes": "64",
            "default_target": "d",
            "valid_targets": ["ignored"],
            "httpKeybuilders": [{"ignored": true}],
            "someFutureField": {},
        },
        "childPolicy": [{"test_child": {}}],
        "childPolicyConfigTargetFieldName": "target",
        "someOtherFutureField": 1,
    });
    let r = parse(&json).unwrap().route_lookup().clone();
    assert_eq!(r.lookup_service(), "dns:///rls");
    assert_eq!(r.lookup_service_timeout(), secs(3));
    assert_eq!((r.max_age(), r.stale_age()), (secs(20), secs(10)));
    assert_eq!(r.cache_size_bytes(), 64);
    assert_eq!(r.default_target(), Some("d"));
    // Both spellings of one field are ambiguous.
    let json = with(base(), &["routeLookupConfig", "max_age"], json!("1s"));
    assert_eq!(
        parse(&json).unwrap_err().to_string(),
        "routeLookupConfig.maxAge: is also given as \"max_age\"; give it once"
    );
}

#[test]
fn equal_json_gives_equal_configs() {
    let a = parse(&base()).unwrap();
    assert_eq!(a, parse(&base()).unwrap());
    let changes = [
        with(base(), &["routeLookupConfig", "cacheSizeBytes"], json!(999)),
        with(
            base(),
            &["routeLookupConfig", "lookupService"],
            json!("dns:///other"),
        ),
        with(
            base(),
            &[
                "routeLookupConfig",
                "grpcKeybuilders",
                "0",
                "headers",
                "0",
                "key",
            ],
            json!("k2"),
        ),
        with(base(), &["childPolicy"], json!([{"test_child": {"x": 1}}])),
        with(base(), &["childPolicy"], json!([{"round_robin": {}}])),
        with(base(), &["routeLookupChannelServiceConfig"], json!({})),
        with(
            base(),
            &["childPolicyConfigTargetFieldName"],
            json!("serviceName"),
        ),
    ];
    for changed in changes {
        assert_ne!(a, parse(&changed).unwrap(), "{changed}");
    }
    // Configs fit in an LbConfig and compare through it.
    assert_eq!(
        LbConfig::new(a.clone()),
        LbConfig::new(parse(&base()).unwrap())
    );
    assert!(
        a.to_string()
            .starts_with("rls(lookupService=\"passthrough:///target\"")
    );
}
