//! The bodies of the lb-rls fuzz targets: what each does with its input, as plain
//! functions over public APIs.
//!
//! This one file is compiled twice:
//!
//! - as `lb_fuzz::rls_bodies` in the fuzz project, whose targets in `../fuzz_targets/`
//!   are one line each: `fuzz_target!(|data: &[u8]| lb_fuzz::rls_bodies::<name>(data))`;
//! - as a module of `lb-rls/tests/fuzz_regressions.rs` (through `#[path]`), which
//!   replays `../seeds/<name>/` and `../regressions/<name>/` through [`TARGETS`] under
//!   plain `cargo test`, so a fixed finding stays fixed without the fuzzer.
//!
//! So it may use only lb-rls, lb-group, lb-core, serde_json and std (lb-rls's own
//! dependencies):
//! never libfuzzer-sys or lb-transport, and no `mod` items of its own. The targets of
//! lb-transport and lb-core are in `bodies.rs`, replayed by lb-transport's test.
//!
//! Adding a target: a body here and its line in [`TARGETS`] (names start with `rls_`),
//! the one-line file `fuzz_targets/<name>.rs`, and a `[[bin]]` entry in `Cargo.toml`.
//!
//! Each body panics when a property the APIs document is broken (round trips, errors
//! that say what is wrong, the caps and defaults of a parsed config), not only when
//! the code under test panics.

use std::time::Duration;

use lb_core::{ConfigError, LbPolicyRegistry};
use lb_rls::config::{CHILD_TARGET_PLACEHOLDER, MAX_MAX_AGE, RlsConfig, RlsConfigOptions};
use lb_rls::dial::DialTargetBuilder;
use lb_rls::proto::{DecodeError, RouteLookupRequest, RouteLookupResponse};

/// What a target does with one input.
pub type Body = fn(&[u8]);

/// Every RLS target with its body, by name: the fuzz project's `[[bin]]` names and the
/// directory names under `seeds/` and `regressions/`.
pub const TARGETS: &[(&str, Body)] = &[
    ("rls_response", rls_response),
    ("rls_config", rls_config),
    ("rls_xds", rls_xds),
];

// ----- rls_response -----

/// Decodes the input as a `RouteLookupResponse` and as a `RouteLookupRequest` (the
/// client decodes the one, an RLS server the other).
///
/// Whatever decodes is encoded again: the encoding must be as long as `encoded_len`
/// says, decode to an equal message, and encode to the same bytes once more (our
/// encoding is canonical). An error must name a position inside the input and say
/// what is wrong.
pub fn rls_response(data: &[u8]) {
    match RouteLookupResponse::decode(data) {
        Ok(response) => {
            let bytes = response.to_bytes();
            assert_eq!(
                bytes.len(),
                response.encoded_len(),
                "encoded_len of {response:?}"
            );
            let again = RouteLookupResponse::decode(&bytes)
                .unwrap_or_else(|e| panic!("our encoding of {response:?} does not decode: {e}"));
            assert_eq!(
                again, response,
                "response changed in an encode/decode round trip"
            );
            assert_eq!(again.to_bytes(), bytes, "response encoding not canonical");
        }
        Err(e) => check_decode_error(&e, data),
    }
    match RouteLookupRequest::decode(data) {
        Ok(request) => {
            let bytes = request.to_bytes();
            assert_eq!(
                bytes.len(),
                request.encoded_len(),
                "encoded_len of {request:?}"
            );
            let again = RouteLookupRequest::decode(&bytes)
                .unwrap_or_else(|e| panic!("our encoding of {request:?} does not decode: {e}"));
            assert_eq!(
                again, request,
                "request changed in an encode/decode round trip"
            );
            assert_eq!(again.to_bytes(), bytes, "request encoding not canonical");
        }
        Err(e) => check_decode_error(&e, data),
    }
}

/// A decode error points into the input and has a message.
fn check_decode_error(e: &DecodeError, data: &[u8]) {
    assert!(
        e.offset() <= data.len(),
        "error offset {} past the input's {} bytes: {e}",
        e.offset(),
        data.len()
    );
    assert!(!e.to_string().is_empty(), "empty message for {e:?}");
}

// ----- rls_config -----

/// The registry configs are parsed with: the built-in policies and `rls_dial_target`
/// (which needs no transport; `rls_experimental` itself does, so it is not here).
fn registry() -> LbPolicyRegistry {
    let mut registry = LbPolicyRegistry::with_builtins();
    registry.register(DialTargetBuilder::new());
    registry
}

/// Parses the input, when it is JSON, as the `rls_experimental` config with
/// [`RlsConfig::parse`] (and, when it is UTF-8, with [`RlsConfig::parse_text`], which
/// must agree).
///
/// An error must say what is wrong. A config that parses must keep the documented
/// caps and defaults (`staleAge` at most `maxAge` and 5 minutes, a cache size in
/// `1..=max_cache_size_bytes`, a non-zero timeout, no empty default target), hold the
/// placeholder in its child config, and give the child's parsed config back for the
/// placeholder target; a child config for the default target may fail, but with a
/// message.
pub fn rls_config(data: &[u8]) {
    let registry = registry();
    let options = RlsConfigOptions::default();
    let parsed = serde_json::from_slice::<serde_json::Value>(data)
        .ok()
        .map(|value| RlsConfig::parse(&value, &registry, &options));
    if let Ok(text) = std::str::from_utf8(data) {
        let from_text = RlsConfig::parse_text(text, &registry, &options);
        match &parsed {
            Some(parsed) => assert_eq!(
                &from_text, parsed,
                "parse_text and parse disagree on {text:?}"
            ),
            None => check_config_error(
                &from_text.expect_err("parse_text accepted what is not JSON"),
                text,
            ),
        }
    }
    let Some(parsed) = parsed else {
        return;
    };
    let config = match parsed {
        Ok(config) => config,
        Err(e) => {
            check_config_error(&e, &String::from_utf8_lossy(data));
            return;
        }
    };

    let rlc = config.route_lookup();
    assert!(
        rlc.stale_age() <= rlc.max_age(),
        "staleAge {:?} over maxAge {:?}",
        rlc.stale_age(),
        rlc.max_age()
    );
    assert!(
        rlc.stale_age() <= MAX_MAX_AGE,
        "staleAge {:?} over the cap",
        rlc.stale_age()
    );
    assert!(
        (1..=options.max_cache_size_bytes).contains(&rlc.cache_size_bytes()),
        "cacheSizeBytes {} outside 1..={}",
        rlc.cache_size_bytes(),
        options.max_cache_size_bytes
    );
    assert!(
        rlc.lookup_service_timeout() > Duration::ZERO,
        "zero lookupServiceTimeout"
    );
    assert!(!rlc.lookup_service().is_empty(), "empty lookupService");
    assert_ne!(rlc.default_target(), Some(""), "empty defaultTarget kept");

    let field = config.child_policy_config_target_field_name();
    assert!(!field.is_empty(), "empty childPolicyConfigTargetFieldName");
    assert_eq!(
        config.child_policy_config().get(field),
        Some(&serde_json::Value::from(CHILD_TARGET_PLACEHOLDER)),
        "the child config lacks the placeholder target"
    );
    assert!(
        registry.get(config.child_policy_name()).is_some(),
        "child policy {} is not registered",
        config.child_policy_name()
    );
    let child = config
        .child_config_for_target(CHILD_TARGET_PLACEHOLDER, &registry)
        .unwrap_or_else(|e| panic!("the placeholder child config parsed once, not again: {e}"));
    assert_eq!(
        &child,
        config.child_policy(),
        "the placeholder child config parsed differently"
    );
    if let Some(target) = rlc.default_target() {
        if let Err(e) = config.child_config_for_target(target, &registry) {
            check_config_error(&e, target);
        }
    }
}

/// A config error says what is wrong.
fn check_config_error(e: &ConfigError, input: &str) {
    assert!(
        !e.message().is_empty(),
        "error without a message (field {:?}) for {input:?}",
        e.field()
    );
    assert!(!e.to_string().is_empty(), "empty error for {input:?}");
}

// ----- rls_xds -----

/// The input through every xDS decoder (lb-group's, which lb-rls builds on, and
/// lb-rls's RLS plugin): each xDS resource type, a `DiscoveryResponse` and
/// `DiscoveryRequest`, a CSDS request, a `load_balancing_policy` list, and an
/// RLS plugin's `RouteLookupConfig`. Garbage must be an error whose message says
/// something, never a panic; a decoded resource has a name; a plugin config that
/// decodes is checked by `RlsConfig::parse` like any other.
pub fn rls_xds(data: &[u8]) {
    use lb_group::xds::ads::ResourceType;
    use lb_group::xds::cds::ClusterType;
    use lb_group::xds::eds::EndpointType;
    use lb_group::xds::lds::ListenerType;
    use lb_group::xds::rds::RouteConfigType;

    fn check<R>(kind: &str, decoded: Result<(String, R), (Option<String>, String)>) {
        if let Err((_, why)) = decoded {
            assert!(!why.is_empty(), "{kind}: an error without a message");
        }
    }
    check("listener", ListenerType.decode(data));
    check("route configuration", RouteConfigType.decode(data));
    check("cluster", ClusterType.decode(data));
    check("endpoints", EndpointType.decode(data));
    if let Err(e) = lb_group::xds::wire::DiscoveryResponse::decode(data) {
        assert!(!e.to_string().is_empty());
    }
    if let Err(e) = lb_group::xds::wire::DiscoveryRequest::decode(data) {
        assert!(!e.to_string().is_empty());
    }
    let _ = lb_group::xds::csds::decode_request(data);
    if let Err(why) = lb_group::xds::lb_policy::convert(data, 0) {
        assert!(!why.is_empty());
    }
    match lb_rls::xds::plugin_policy(data) {
        Ok(policy) => {
            let config = &policy[lb_rls::config::POLICY_NAME];
            let parsed = RlsConfig::parse(config, &registry(), &RlsConfigOptions::default());
            if let Err(e) = parsed {
                assert!(!e.to_string().is_empty());
            }
        }
        Err(why) => assert!(why.contains("RouteLookupConfig"), "{why}"),
    }
}
