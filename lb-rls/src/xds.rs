//! RLS inside xDS: the `grpc.lookup.v1.RouteLookupClusterSpecifier` cluster
//! specifier plugin (gRFC A28's plugins, with RLS as the plugin). An RDS route
//! names the plugin; the `xds:` resolver gives the call to an
//! `rls_experimental` child of `xds_cluster_manager` whose targets are xDS
//! cluster names, each run by `cds_experimental`:
//!
//! ```text
//!   xds_cluster_manager
//!     └─ cluster_specifier_plugin:<name>: rls_experimental
//!          routeLookupConfig: the plugin's RouteLookupConfig (decoded here)
//!          childPolicy: [{"cds_experimental": {"cluster": <target>}}]
//! ```
//!
//! [`register`] wires it all: the resolver (with the plugin), `cds_experimental`
//! and `rls_experimental`.
//!
//! The config is decoded by hand on `lb_core::protowire` into protobuf JSON,
//! then validated by [`RlsConfig::parse`](crate::config::RlsConfig::parse) like
//! any service config's: one set of rules, whichever way the config came.

use std::sync::Arc;

use lb_core::LbPolicyRegistry;
use lb_core::channel::ResolverRegistry;
use lb_core::protowire::{DecodeError, Reader, wire};
use lb_group::xds::Bootstrap;
use lb_group::xds::cds_policy::{self, CdsBuilder};
use lb_group::xds::client::XdsClient;
use lb_group::xds::resolver::XdsResolverBuilder;
use serde_json::{Map, Value, json};

/// Registers the `xds:` resolver over `client` (with RLS as its cluster
/// specifier plugin) in `resolvers`, and `cds_experimental` over `client`,
/// `rls_experimental` and lb-group's xDS policies in `policies`.
///
/// ```no_run
/// use std::sync::Arc;
/// use lb_core::channel::{Channel, ResolverRegistry};
/// use lb_group::xds::Bootstrap;
/// use lb_group::xds::client::{XdsClient, XdsClientOptions};
/// # fn transport() -> Arc<dyn lb_core::Transport> { unimplemented!() }
/// let bootstrap = Bootstrap::from_env()?;
/// let ads = Channel::builder(format!("dns:///{}", bootstrap.servers[0].uri))
///     .transport(transport())
///     .build()?;
/// let client = Arc::new(XdsClient::start(ads, XdsClientOptions::from_bootstrap(&bootstrap)));
/// let (mut resolvers, mut policies) = (ResolverRegistry::with_builtins(), lb_rls::registry());
/// lb_rls::xds::register(client, bootstrap, &mut resolvers, &mut policies);
/// let channel = Channel::builder("xds:///my-service")
///     .transport(transport())
///     .resolver_registry(resolvers)
///     .lb_policy_registry(policies)
///     .build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn register(
    client: Arc<XdsClient>,
    bootstrap: Bootstrap,
    resolvers: &mut ResolverRegistry,
    policies: &mut LbPolicyRegistry,
) {
    lb_group::register(policies);
    crate::register(policies, crate::balancer::RlsBuilderOptions::default());
    policies.register(CdsBuilder::new(Arc::clone(&client)));
    resolvers.register(XdsResolverBuilder::new(client, bootstrap).with_rls_plugin(plugin_policy));
}

/// The `rls_experimental` policy config for an RLS plugin whose
/// `RouteLookupConfig` is `bytes` (encoded): RLS's targets are xDS clusters,
/// each run by `cds_experimental`.
///
/// ```
/// // grpc_keybuilders { names { service: "pkg.Svc" } }, lookup_service "rls:443"
/// let config = [0x12, 0x0b, 0x0a, 0x09, 0x0a, 0x07, b'p', b'k', b'g', b'.', b'S', b'v', b'c',
///               0x1a, 0x07, b'r', b'l', b's', b':', b'4', b'4', b'3'];
/// let policy = lb_rls::xds::plugin_policy(&config)?;
/// let rls = &policy["rls_experimental"];
/// assert_eq!(rls["routeLookupConfig"]["lookupService"], "rls:443");
/// assert_eq!(rls["childPolicyConfigTargetFieldName"], "cluster");
/// # Ok::<(), String>(())
/// ```
///
/// # Errors
///
/// The bytes are not a valid `RouteLookupConfig`; the message names the field
/// and byte.
pub fn plugin_policy(bytes: &[u8]) -> Result<Value, String> {
    let config = route_lookup_config_json(bytes)
        .map_err(|e| format!("the RLS plugin's RouteLookupConfig: {e}"))?;
    Ok(json!({crate::config::POLICY_NAME: {
        "routeLookupConfig": config,
        "childPolicy": [{cds_policy::NAME: {}}],
        "childPolicyConfigTargetFieldName": "cluster",
    }}))
}

/// Decodes an encoded `grpc.lookup.v1.RouteLookupConfig` into its protobuf JSON
/// form (the form a service config's `routeLookupConfig` takes).
///
/// # Errors
///
/// The bytes are not a valid encoding.
pub fn route_lookup_config_json(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut out = Map::new();
    let mut builders = Vec::new();
    let mut valid_targets = Vec::new();
    let mut r = Reader::new(bytes, 0);
    while let Some((field, wire_type)) = r.tag()? {
        match (field, wire_type) {
            (2, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                builders.push(key_builder(b, base).map_err(|e| e.within(field))?);
            }
            (3, wire::LEN) => {
                out.insert("lookupService".into(), r.string(field)?.into());
            }
            (4..=6, wire::LEN) => {
                let (base, d) = r.len_delimited(field)?;
                let name = ["lookupServiceTimeout", "maxAge", "staleAge"][field as usize - 4];
                out.insert(
                    name.into(),
                    duration(d, base).map_err(|e| e.within(field))?.into(),
                );
            }
            (7, wire::VARINT) => {
                // int64: protobuf JSON writes it as a string.
                out.insert(
                    "cacheSizeBytes".into(),
                    (r.varint(field)? as i64).to_string().into(),
                );
            }
            (8, wire::LEN) => valid_targets.push(Value::from(r.string(field)?)),
            (9, wire::LEN) => {
                out.insert("defaultTarget".into(), r.string(field)?.into());
            }
            _ => r.skip(field, wire_type)?,
        }
    }
    out.insert("grpcKeybuilders".into(), builders.into());
    if !valid_targets.is_empty() {
        out.insert("validTargets".into(), valid_targets.into());
    }
    Ok(Value::Object(out))
}

/// A `GrpcKeyBuilder`.
fn key_builder(bytes: &[u8], base: usize) -> Result<Value, DecodeError> {
    let mut names = Vec::new();
    let mut headers = Vec::new();
    let mut extra = Map::new();
    let mut constant = Map::new();
    let mut r = Reader::new(bytes, base);
    while let Some((field, wire_type)) = r.tag()? {
        match (field, wire_type) {
            (1, wire::LEN) => {
                let (b, m) = r.len_delimited(field)?;
                let parts = strings(m, b, &["service", "method"]).map_err(|e| e.within(field))?;
                names.push(Value::Object(parts));
            }
            (2, wire::LEN) => {
                let (b, m) = r.len_delimited(field)?;
                headers.push(name_matcher(m, b).map_err(|e| e.within(field))?);
            }
            (3, wire::LEN) => {
                let (b, m) = r.len_delimited(field)?;
                extra =
                    strings(m, b, &["host", "service", "method"]).map_err(|e| e.within(field))?;
            }
            (4, wire::LEN) => {
                let (b, m) = r.len_delimited(field)?;
                let entry = strings(m, b, &["key", "value"]).map_err(|e| e.within(field))?;
                let text = |k: &str| {
                    entry
                        .get(k)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned()
                };
                constant.insert(text("key"), text("value").into());
            }
            _ => r.skip(field, wire_type)?,
        }
    }
    let mut out = Map::new();
    out.insert("names".into(), names.into());
    if !headers.is_empty() {
        out.insert("headers".into(), headers.into());
    }
    if !extra.is_empty() {
        out.insert("extraKeys".into(), extra.into());
    }
    if !constant.is_empty() {
        out.insert("constantKeys".into(), constant.into());
    }
    Ok(Value::Object(out))
}

/// A `NameMatcher`.
fn name_matcher(bytes: &[u8], base: usize) -> Result<Value, DecodeError> {
    let mut out = Map::new();
    let mut names = Vec::new();
    let mut r = Reader::new(bytes, base);
    while let Some((field, wire_type)) = r.tag()? {
        match (field, wire_type) {
            (1, wire::LEN) => {
                out.insert("key".into(), r.string(field)?.into());
            }
            (2, wire::LEN) => names.push(Value::from(r.string(field)?)),
            (3, wire::VARINT) => {
                out.insert("requiredMatch".into(), (r.varint(field)? != 0).into());
            }
            _ => r.skip(field, wire_type)?,
        }
    }
    out.insert("names".into(), names.into());
    Ok(Value::Object(out))
}

/// A message of string fields numbered 1.. in `names`' order, as JSON (empty
/// strings left out, as protobuf JSON does).
fn strings(bytes: &[u8], base: usize, names: &[&str]) -> Result<Map<String, Value>, DecodeError> {
    let mut out = Map::new();
    let mut r = Reader::new(bytes, base);
    while let Some((field, wire_type)) = r.tag()? {
        match (field as usize, wire_type) {
            (n @ 1.., wire::LEN) if n <= names.len() => {
                let s = r.string(field)?;
                if !s.is_empty() {
                    out.insert(names[n - 1].into(), s.into());
                }
            }
            _ => r.skip(field, wire_type)?,
        }
    }
    Ok(out)
}

/// A `google.protobuf.Duration` as protobuf JSON (`"1.500s"`).
fn duration(bytes: &[u8], base: usize) -> Result<String, DecodeError> {
    let (mut seconds, mut nanos) = (0i64, 0i32);
    let mut r = Reader::new(bytes, base);
    while let Some((field, wire_type)) = r.tag()? {
        match (field, wire_type) {
            (1, wire::VARINT) => seconds = r.varint(field)? as i64,
            (2, wire::VARINT) => nanos = r.varint(field)? as i32,
            _ => r.skip(field, wire_type)?,
        }
    }
    Ok(if nanos == 0 {
        format!("{seconds}s")
    } else {
        format!("{seconds}.{:09}s", nanos.unsigned_abs())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::protowire::{put_bytes, put_string, put_tag, put_varint};

    fn msg(fill: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut b = Vec::new();
        fill(&mut b);
        b
    }

    #[test]
    fn a_full_config_decodes_to_what_the_rls_config_parser_accepts() {
        let bytes = msg(|b| {
            put_bytes(
                b,
                2,
                &msg(|k| {
                    put_bytes(k, 1, &msg(|n| put_string(n, 1, "test.Echo")));
                    put_bytes(
                        k,
                        2,
                        &msg(|h| {
                            put_string(h, 1, "user");
                            put_string(h, 2, "x-user");
                        }),
                    );
                    put_bytes(k, 3, &msg(|e| put_string(e, 3, "method")));
                    put_bytes(
                        k,
                        4,
                        &msg(|c| {
                            put_string(c, 1, "zone");
                            put_string(c, 2, "east");
                        }),
                    );
                }),
            );
            put_string(b, 3, "127.0.0.1:9999");
            put_bytes(b, 4, &msg(|d| put_tag_varint(d, 1, 2)));
            put_bytes(
                b,
                5,
                &msg(|d| {
                    put_tag_varint(d, 1, 300);
                    put_tag_varint(d, 2, 500_000_000);
                }),
            );
            put_tag_varint(b, 7, 1 << 20);
            put_string(b, 9, "fallback-cluster");
        });
        let json = route_lookup_config_json(&bytes).unwrap();
        assert_eq!(
            json,
            json!({
                "grpcKeybuilders": [{
                    "names": [{"service": "test.Echo"}],
                    "headers": [{"key": "user", "names": ["x-user"]}],
                    "extraKeys": {"method": "method"},
                    "constantKeys": {"zone": "east"}
                }],
                "lookupService": "127.0.0.1:9999",
                "lookupServiceTimeout": "2s",
                "maxAge": "300.500000000s",
                "cacheSizeBytes": "1048576",
                "defaultTarget": "fallback-cluster"
            })
        );
        let mut registry = lb_group::registry();
        crate::register(&mut registry, crate::balancer::RlsBuilderOptions::default());
        registry.register(FakeCds);
        let policy = plugin_policy(&bytes).unwrap();
        registry
            .parse_load_balancing_config(&json!([policy]))
            .expect("the RLS config parser accepts the decoded config");
    }

    #[test]
    fn garbage_is_an_error_naming_the_field() {
        // grpc_keybuilders with a length past the end.
        let err = plugin_policy(&[0x12, 0x05, 0x0a]).unwrap_err();
        assert!(err.contains("RouteLookupConfig"), "{err}");
        assert!(err.contains('2'), "{err}");
    }

    fn put_tag_varint(b: &mut Vec<u8>, field: u32, v: u64) {
        put_tag(b, field, wire::VARINT);
        put_varint(b, v);
    }

    /// `cds_experimental` without an xDS client, for parsing only.
    struct FakeCds;
    impl lb_core::LbPolicyBuilder for FakeCds {
        fn name(&self) -> &'static str {
            cds_policy::NAME
        }
        fn build(&self, _: lb_core::LbPolicyOptions) -> Box<dyn lb_core::LbPolicy> {
            unreachable!("only parsed")
        }
        fn parse_config(
            &self,
            config: &Value,
            _: &LbPolicyRegistry,
        ) -> Result<lb_core::LbConfig, lb_core::ConfigError> {
            assert!(config["cluster"].is_string(), "{config}");
            Ok(lb_core::LbConfig::new(()))
        }
    }
}
