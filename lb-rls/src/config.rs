//! The policy's JSON config: parsing, every validation rule, defaults and caps.
//!
//! ```text
//! {"rls_experimental": {
//!    "routeLookupConfig": {             grpc.lookup.v1.RouteLookupConfig (protobuf JSON)
//!      "grpcKeybuilders": [...],        ≥ 1, checked by KeyBuilderMap::new
//!      "lookupService": "dns:///rls",   a target URI with a known scheme
//!      "lookupServiceTimeout": "10s",   default 10 s
//!      "maxAge": "300s",                default and cap 5 min (no cap if staleAge is set)
//!      "staleAge": "240s",              needs maxAge; cap 5 min; at most maxAge
//!      "cacheSizeBytes": 1000,          > 0; capped at RlsConfigOptions::max_cache_size_bytes
//!      "defaultTarget": "..."},         optional
//!    "routeLookupChannelServiceConfig": {...},   optional service config object
//!    "childPolicy": [{"name": {...}}],           first registered entry wins
//!    "childPolicyConfigTargetFieldName": "x"}}   non-empty
//! ```
//!
//! The rules are checked in grpc-go's order, so a config with several problems
//! reports the same one grpc-go would. Every error names the field:
//! `routeLookupConfig.cacheSizeBytes: must be greater than 0`.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use lb_core::config::{Fields, as_object, json_type, parse_duration};
use lb_core::{ConfigError, LbPolicyRegistry, ParsedLbConfig};
use serde_json::{Map, Value};

use crate::keys::{GrpcKeyBuilder, KeyBuilderMap, proto_array, proto_string, proto_value};

/// The policy's registered name.
pub const POLICY_NAME: &str = "rls_experimental";

/// `lookupServiceTimeout` when unset or zero.
pub const DEFAULT_LOOKUP_SERVICE_TIMEOUT: Duration = Duration::from_secs(10);

/// The default of `maxAge` and `staleAge`, and the cap of `staleAge` (and of `maxAge`
/// when `staleAge` is unset): 5 minutes.
pub const MAX_MAX_AGE: Duration = Duration::from_secs(300);

/// The default cap on `cacheSizeBytes`: 5 MiB, as in gRPC C++ and Java (grpc-go uses
/// 40 MiB). Change it with [`RlsConfigOptions::max_cache_size_bytes`].
pub const DEFAULT_MAX_CACHE_SIZE_BYTES: usize = 5 * 1024 * 1024;

/// The target-field value used to check the child policy's config at parse time.
pub const CHILD_TARGET_PLACEHOLDER: &str = "target_name_to_be_filled_in_later";

/// The resolver schemes `lookupService` may use unless the embedding program says
/// otherwise.
pub const DEFAULT_LOOKUP_SERVICE_SCHEMES: [&str; 5] =
    ["dns", "ipv4", "ipv6", "passthrough", "unix"];

/// The scheme assumed for a `lookupService` that names none (grpc-go's
/// `resolver.GetDefaultScheme()`).
pub const DEFAULT_LOOKUP_SERVICE_SCHEME: &str = "passthrough";

/// What the embedding program decides about configs: the cache cap and the resolver
/// schemes its channels support.
///
/// # Examples
///
/// ```
/// use lb_rls::config::RlsConfigOptions;
/// let mut options = RlsConfigOptions::default();
/// assert_eq!(options.max_cache_size_bytes, 5 * 1024 * 1024);
/// options.max_cache_size_bytes = 1 << 20;
/// options.known_schemes.insert("xds".into());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RlsConfigOptions {
    /// `cacheSizeBytes` above this is lowered to it.
    pub max_cache_size_bytes: usize,
    /// The resolver schemes `lookupService` may name (lower-case).
    pub known_schemes: BTreeSet<String>,
    /// The scheme of a `lookupService` that names none.
    pub default_scheme: String,
}

impl Default for RlsConfigOptions {
    fn default() -> Self {
        Self {
            max_cache_size_bytes: DEFAULT_MAX_CACHE_SIZE_BYTES,
            known_schemes: DEFAULT_LOOKUP_SERVICE_SCHEMES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            default_scheme: DEFAULT_LOOKUP_SERVICE_SCHEME.to_owned(),
        }
    }
}

/// `routeLookupConfig`, checked and normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteLookupConfig {
    key_builders: KeyBuilderMap,
    lookup_service: String,
    lookup_service_timeout: Duration,
    max_age: Duration,
    stale_age: Duration,
    cache_size_bytes: usize,
    default_target: Option<String>,
}

impl RouteLookupConfig {
    /// The key builders by path.
    pub fn key_builders(&self) -> &KeyBuilderMap {
        &self.key_builders
    }

    /// The RLS server's target URI, verbatim.
    pub fn lookup_service(&self) -> &str {
        &self.lookup_service
    }

    /// The deadline of each RouteLookup call (10 s when unset or zero).
    pub fn lookup_service_timeout(&self) -> Duration {
        self.lookup_service_timeout
    }

    /// How long a response is valid.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// After this age, a pick that uses an entry refreshes it; never above
    /// [`Self::max_age`] (equal means no refresh before expiry).
    pub fn stale_age(&self) -> Duration {
        self.stale_age
    }

    /// The cache's byte budget, after the cap.
    pub fn cache_size_bytes(&self) -> usize {
        self.cache_size_bytes
    }

    /// The target used when RLS fails or is throttled (`None` if unset or empty).
    pub fn default_target(&self) -> Option<&str> {
        self.default_target.as_deref()
    }
}

/// The policy's whole config, checked.
///
/// Equal configs compare equal, so an update with an unchanged config can be
/// recognised.
///
/// # Examples
///
/// ```
/// use lb_core::LbPolicyRegistry;
/// use lb_rls::config::{RlsConfig, RlsConfigOptions};
/// let json = serde_json::json!({
///     "routeLookupConfig": {
///         "grpcKeybuilders": [{"names": [{"service": "pkg.Svc"}]}],
///         "lookupService": "dns:///rls.example.com",
///         "cacheSizeBytes": "1000",
///     },
///     "childPolicy": [{"unknown": {}}, {"pick_first": {}}],
///     "childPolicyConfigTargetFieldName": "serviceName",
/// });
/// let registry = LbPolicyRegistry::with_builtins();
/// let config = RlsConfig::parse(&json, &registry, &RlsConfigOptions::default())?;
/// let rlc = config.route_lookup();
/// assert_eq!(rlc.lookup_service_timeout().as_secs(), 10);
/// assert_eq!((rlc.max_age().as_secs(), rlc.stale_age().as_secs()), (300, 300));
/// assert_eq!(rlc.cache_size_bytes(), 1000);
/// assert_eq!(config.child_policy_name(), "pick_first");
/// assert_eq!(config.child_policy_config()["serviceName"], "target_name_to_be_filled_in_later");
///
/// let mut bad = json.clone();
/// bad["routeLookupConfig"]["cacheSizeBytes"] = 0.into();
/// let err = RlsConfig::parse(&bad, &registry, &RlsConfigOptions::default()).unwrap_err();
/// assert_eq!(err.to_string(), "routeLookupConfig.cacheSizeBytes: must be greater than 0");
/// # Ok::<(), lb_core::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RlsConfig {
    route_lookup: RouteLookupConfig,
    control_channel_service_config: Option<Value>,
    child_policy: ParsedLbConfig,
    child_policy_config: Map<String, Value>,
    child_policy_config_target_field_name: String,
}

impl RlsConfig {
    /// Parses the policy's config text (the JSON object under `rls_experimental`).
    ///
    /// # Errors
    ///
    /// The text is empty or not JSON, or [`Self::parse`] refuses it.
    pub fn parse_text(
        text: &str,
        registry: &LbPolicyRegistry,
        options: &RlsConfigOptions,
    ) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Err(ConfigError::new("", "the config is empty"));
        }
        let value = lb_core::config::parse_json(text)?;
        Self::parse(&value, registry, options)
    }

    /// Parses and checks the policy's config (the JSON object under
    /// `rls_experimental`). Unknown fields are ignored; `routeLookupConfig` is
    /// protobuf JSON, so its fields may also use their proto names
    /// (`grpc_keybuilders`).
    ///
    /// A required field that is missing is reported first (`routeLookupConfig`,
    /// `childPolicy`, `childPolicyConfigTargetFieldName`, then inside
    /// `routeLookupConfig` `lookupService` and `cacheSizeBytes`), so that the error
    /// names what is missing rather than a later rule it happens to break. The other
    /// checks come in grpc-go's order:
    /// 1. the JSON types of the top-level fields;
    /// 2. the JSON types of `routeLookupConfig`'s fields, durations included;
    /// 3. the key builders ([`KeyBuilderMap::new`]);
    /// 4. `lookupService`: non-empty, a target URI whose scheme is known (a URI
    ///    without a scheme gets [`RlsConfigOptions::default_scheme`]);
    /// 5. `lookupServiceTimeout`: 10 s when unset or zero;
    /// 6. `maxAge` and `staleAge`: 5 min when unset (or zero);
    /// 7. `staleAge` set without `maxAge` is an error;
    /// 8. `staleAge` is capped at 5 min; `maxAge` too, unless `staleAge` is set; then
    ///    `staleAge` is lowered to `maxAge` if above it;
    /// 9. `cacheSizeBytes` must be greater than 0, and is capped at
    ///    [`RlsConfigOptions::max_cache_size_bytes`];
    /// 10. `defaultTarget` is kept verbatim (empty means unset); `validTargets` and
    ///     `httpKeybuilders` are ignored;
    /// 11. `routeLookupChannelServiceConfig` must be an object, whose
    ///     `loadBalancingConfig`, if present, must name a registered policy with a
    ///     valid config;
    /// 12. `childPolicyConfigTargetFieldName` must be non-empty;
    /// 13. `childPolicy`: each entry holds exactly one name; unregistered names are
    ///     skipped; the first registered one's config must be an object, and with
    ///     the target field set to [`CHILD_TARGET_PLACEHOLDER`] it must pass that
    ///     policy's own parser (no fall-through to later entries); no registered
    ///     entry is an error.
    ///
    /// # Errors
    ///
    /// The first rule broken, naming the field.
    pub fn parse(
        json: &Value,
        registry: &LbPolicyRegistry,
        options: &RlsConfigOptions,
    ) -> Result<Self, ConfigError> {
        // 1. Top-level types.
        let top = Fields::new(json, "")?;
        let rlc_json = top.get("routeLookupConfig");
        let channel_sc = top.get("routeLookupChannelServiceConfig");
        let child_policy = top.array("childPolicy")?;
        let target_field = top.string("childPolicyConfigTargetFieldName")?;

        // Missing required fields first.
        let Some(rlc_json) = rlc_json else {
            return Err(ConfigError::new("routeLookupConfig", "must be set"));
        };
        if child_policy.is_none() {
            return Err(ConfigError::new("childPolicy", "must be set"));
        }
        if target_field.is_none() {
            return Err(ConfigError::new(
                "childPolicyConfigTargetFieldName",
                "must be set",
            ));
        }
        if let Some(rlc) = rlc_json.as_object() {
            for (name, proto_name) in [
                ("lookupService", "lookup_service"),
                ("cacheSizeBytes", "cache_size_bytes"),
            ] {
                if !rlc.contains_key(name) && !rlc.contains_key(proto_name) {
                    return Err(ConfigError::new(name, "must be set").within("routeLookupConfig"));
                }
            }
        }

        // 2. routeLookupConfig types.
        let raw =
            RawRouteLookupConfig::from_json(rlc_json).map_err(|e| e.within("routeLookupConfig"))?;

        // 3-10.
        let route_lookup = raw
            .validate(options)
            .map_err(|e| e.within("routeLookupConfig"))?;

        // 11. The control channel's service config.
        let control_channel_service_config = match channel_sc {
            None => None,
            Some(sc) => {
                check_service_config(sc, registry)
                    .map_err(|e| e.within("routeLookupChannelServiceConfig"))?;
                Some(sc.clone())
            }
        };

        // 12. The target field name.
        let target_field = match target_field {
            Some(f) if !f.is_empty() => f.to_owned(),
            _ => {
                return Err(ConfigError::new(
                    "childPolicyConfigTargetFieldName",
                    "must be non-empty",
                ));
            }
        };

        // 13. The child policy.
        let Some(child_policy) = child_policy else {
            return Err(ConfigError::new("childPolicy", "must be set"));
        };
        let (child_policy, child_policy_config) =
            choose_child_policy(child_policy, &target_field, registry)
                .map_err(|e| e.within("childPolicy"))?;

        Ok(Self {
            route_lookup,
            control_channel_service_config,
            child_policy,
            child_policy_config,
            child_policy_config_target_field_name: target_field,
        })
    }

    /// `routeLookupConfig`, checked and normalised.
    pub fn route_lookup(&self) -> &RouteLookupConfig {
        &self.route_lookup
    }

    /// `routeLookupChannelServiceConfig`, if given: the control channel's service
    /// config (resolver-provided service config is then not used on that channel).
    pub fn control_channel_service_config(&self) -> Option<&Value> {
        self.control_channel_service_config.as_ref()
    }

    /// The name of the chosen child policy.
    pub fn child_policy_name(&self) -> &'static str {
        self.child_policy.name()
    }

    /// The chosen child policy with its config as parsed with the placeholder
    /// target.
    pub fn child_policy(&self) -> &ParsedLbConfig {
        &self.child_policy
    }

    /// The chosen child policy's JSON config, with the target field set to
    /// [`CHILD_TARGET_PLACEHOLDER`].
    pub fn child_policy_config(&self) -> &Map<String, Value> {
        &self.child_policy_config
    }

    /// `childPolicyConfigTargetFieldName`.
    pub fn child_policy_config_target_field_name(&self) -> &str {
        &self.child_policy_config_target_field_name
    }

    /// The child policy's JSON config for one RLS target: the stored config with the
    /// target field set to `target`.
    pub fn child_config_json(&self, target: &str) -> Value {
        let mut config = self.child_policy_config.clone();
        config.insert(
            self.child_policy_config_target_field_name.clone(),
            Value::String(target.to_owned()),
        );
        Value::Object(config)
    }

    /// The child policy's parsed config for one RLS target. The balancer calls this
    /// for every child it creates or reconfigures; a failure puts only that child in
    /// TRANSIENT_FAILURE, the RLS config stays valid.
    ///
    /// # Errors
    ///
    /// The child policy's parser refuses the config with this target; the error's
    /// path starts with the policy name.
    pub fn child_config_for_target(
        &self,
        target: &str,
        registry: &LbPolicyRegistry,
    ) -> Result<ParsedLbConfig, ConfigError> {
        let builder = self.child_policy.builder.clone();
        let config = builder
            .parse_config(&self.child_config_json(target), registry)
            .map_err(|e| e.within(builder.name()))?;
        Ok(ParsedLbConfig { builder, config })
    }
}

/// `routeLookupConfig` with JSON types checked, before the rules.
#[derive(Debug, Default)]
struct RawRouteLookupConfig {
    grpc_keybuilders: Vec<GrpcKeyBuilder>,
    lookup_service: String,
    lookup_service_timeout: Option<Duration>,
    max_age: Option<Duration>,
    stale_age: Option<Duration>,
    cache_size_bytes: Option<i64>,
    default_target: String,
}

impl RawRouteLookupConfig {
    fn from_json(value: &Value) -> Result<Self, ConfigError> {
        let f = Fields::new(value, "")?;
        let mut raw = Self::default();
        if let Some((field, list)) = proto_array(&f, "grpcKeybuilders", "grpc_keybuilders")? {
            for (i, b) in list.iter().enumerate() {
                raw.grpc_keybuilders.push(
                    GrpcKeyBuilder::from_json(b)
                        .map_err(|e| e.within(&format!("[{i}]")).within(field))?,
                );
            }
        }
        raw.lookup_service =
            proto_string(&f, "lookupService", "lookup_service")?.unwrap_or_default();
        raw.lookup_service_timeout =
            proto_duration(&f, "lookupServiceTimeout", "lookup_service_timeout")?;
        raw.max_age = proto_duration(&f, "maxAge", "max_age")?;
        raw.stale_age = proto_duration(&f, "staleAge", "stale_age")?;
        raw.cache_size_bytes = match proto_value(&f, "cacheSizeBytes", "cache_size_bytes")? {
            None => None,
            Some((field, v)) => Some(proto_int64(v).map_err(|m| ConfigError::new(field, m))?),
        };
        raw.default_target =
            proto_string(&f, "defaultTarget", "default_target")?.unwrap_or_default();
        Ok(raw)
    }

    /// Rules 3 to 10 of [`RlsConfig::parse`].
    fn validate(self, options: &RlsConfigOptions) -> Result<RouteLookupConfig, ConfigError> {
        let key_builders = KeyBuilderMap::new(&self.grpc_keybuilders)?;

        if self.lookup_service.is_empty() {
            return Err(ConfigError::new("lookupService", "must be non-empty"));
        }
        check_target_uri(&self.lookup_service, options)
            .map_err(|m| ConfigError::new("lookupService", m))?;

        let lookup_service_timeout = self
            .lookup_service_timeout
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_LOOKUP_SERVICE_TIMEOUT);

        // Zero counts as unset, as the proto says ("if omitted or zero").
        let max_age_set = self.max_age.filter(|d| !d.is_zero());
        let stale_age_set = self.stale_age.filter(|d| !d.is_zero());
        if stale_age_set.is_some() && max_age_set.is_none() {
            return Err(ConfigError::new("staleAge", "is set, but maxAge is not"));
        }
        let mut max_age = max_age_set.unwrap_or(MAX_MAX_AGE);
        let mut stale_age = stale_age_set.unwrap_or(MAX_MAX_AGE).min(MAX_MAX_AGE);
        if stale_age_set.is_none() {
            max_age = max_age.min(MAX_MAX_AGE);
        }
        stale_age = stale_age.min(max_age);

        let cache_size_bytes = match self.cache_size_bytes {
            Some(n) if n > 0 => {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if n > options.max_cache_size_bytes {
                    log::info!(
                        "rls: cacheSizeBytes {n} capped at {}",
                        options.max_cache_size_bytes
                    );
                }
                n.min(options.max_cache_size_bytes)
            }
            _ => {
                return Err(ConfigError::new("cacheSizeBytes", "must be greater than 0"));
            }
        };

        Ok(RouteLookupConfig {
            key_builders,
            lookup_service: self.lookup_service,
            lookup_service_timeout,
            max_age,
            stale_age,
            cache_size_bytes,
            default_target: (!self.default_target.is_empty()).then_some(self.default_target),
        })
    }
}

/// A `google.protobuf.Duration` field in JSON form.
fn proto_duration(
    f: &Fields<'_>,
    json_name: &'static str,
    proto_name: &'static str,
) -> Result<Option<Duration>, ConfigError> {
    let Some((name, v)) = proto_value(f, json_name, proto_name)? else {
        return Ok(None);
    };
    let text = v.as_str().ok_or_else(|| {
        ConfigError::new(
            name,
            format!(
                "must be a duration string like \"10s\", not {}",
                json_type(v)
            ),
        )
    })?;
    parse_duration(text).map(Some).map_err(|e| e.within(name))
}

/// A protobuf JSON int64: a number or a decimal string, integral, in range.
fn proto_int64(v: &Value) -> Result<i64, String> {
    let bad = || format!("must be an integer (a number or a decimal string), not {v}");
    let from_float = |x: f64| {
        // i64::MAX as f64 rounds up to 2^63, so the upper bound is exclusive.
        (x.fract() == 0.0 && x >= i64::MIN as f64 && x < i64::MAX as f64).then_some(x as i64)
    };
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().and_then(from_float))
            .ok_or_else(bad),
        Value::String(s) => s
            .parse::<i64>()
            .ok()
            .or_else(|| {
                s.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .and_then(from_float)
            })
            .ok_or_else(bad),
        _ => Err(format!(
            "must be an integer (a number or a decimal string), not {}",
            json_type(v)
        )),
    }
}

/// Checks that `text` is a gRPC target URI whose scheme is known, as grpc-go does:
/// parse it as a URI; if that fails, parse `<default>:///text` instead; a URI
/// without a scheme gets the default scheme.
///
/// One deliberate difference: `host:port` (an RFC 3986 scheme followed by something
/// other than `//`, such as `rls.example.com:443`) with an unknown "scheme" is read as
/// a schemeless target, as gRPC C++ and this project's channel read it, where grpc-go
/// refuses it. `badScheme:///target` is still refused.
fn check_target_uri(text: &str, options: &RlsConfigOptions) -> Result<(), String> {
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(format!(
            "must be a valid gRPC target URI: control character {c:?} in {text:?}"
        ));
    }
    check_percent_escapes(text).map_err(|m| format!("must be a valid gRPC target URI: {m}"))?;
    let default_ok = || {
        if options.known_schemes.contains(&options.default_scheme) {
            Ok(())
        } else {
            Err(unknown_scheme(&options.default_scheme, text, options))
        }
    };
    let Some((scheme, rest)) = split_scheme(text) else {
        return default_ok();
    };
    let scheme = scheme.to_ascii_lowercase();
    if options.known_schemes.contains(&scheme) {
        return Ok(());
    }
    if rest.starts_with("//") {
        return Err(unknown_scheme(&scheme, text, options));
    }
    default_ok()
}

fn unknown_scheme(scheme: &str, text: &str, options: &RlsConfigOptions) -> String {
    let known: Vec<&str> = options.known_schemes.iter().map(String::as_str).collect();
    format!(
        "unknown resolver scheme {scheme:?} in {text:?} (known: {})",
        known.join(", ")
    )
}

/// The RFC 3986 scheme of `text` and what follows its `:`, if it has one.
fn split_scheme(text: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = text.split_once(':')?;
    let mut bytes = scheme.bytes();
    let ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    ok.then_some((scheme, rest))
}

/// Every `%` starts a two-hex-digit escape.
fn check_percent_escapes(text: &str) -> Result<(), String> {
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%' {
            let ok = bytes.len() > i + 2
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit();
            if !ok {
                return Err(format!("invalid escape at byte {i} of {text:?}"));
            }
        }
    }
    Ok(())
}

/// Rule 11: a service config object whose `loadBalancingConfig`, if present, names a
/// registered policy with a valid config.
fn check_service_config(sc: &Value, registry: &LbPolicyRegistry) -> Result<(), ConfigError> {
    let f = Fields::new(sc, "")?;
    if let Some(lb) = f.get("loadBalancingConfig") {
        registry
            .parse_load_balancing_config(lb)
            .map_err(|e| e.within("loadBalancingConfig"))?;
    }
    Ok(())
}

/// Rule 13: the first registered child policy, parsed with the placeholder target.
fn choose_child_policy(
    list: &[Value],
    target_field: &str,
    registry: &LbPolicyRegistry,
) -> Result<(ParsedLbConfig, Map<String, Value>), ConfigError> {
    let mut tried = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let at = format!("[{i}]");
        let obj = as_object(entry, &at)?;
        if obj.len() != 1 {
            return Err(ConfigError::new(
                &at,
                format!("must hold exactly one policy name, found {}", obj.len()),
            ));
        }
        let Some((name, config)) = obj.iter().next() else {
            continue;
        };
        let Some(builder) = registry.get(name) else {
            tried.push(name.clone());
            continue;
        };
        let mut config = as_object(config, "")
            .map_err(|e| e.within(name).within(&at))?
            .clone();
        config.insert(
            target_field.to_owned(),
            Value::String(CHILD_TARGET_PLACEHOLDER.to_owned()),
        );
        let parsed = builder
            .parse_config(&Value::Object(config.clone()), registry)
            .map_err(|e| e.within(name).within(&at))?;
        return Ok((
            ParsedLbConfig {
                builder: builder.clone(),
                config: parsed,
            },
            config,
        ));
    }
    Err(LbPolicyRegistry::none_registered(&tried))
}

impl fmt::Display for RlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.route_lookup;
        write!(
            f,
            "rls(lookupService={:?}, timeout={:?}, maxAge={:?}, staleAge={:?}, cacheSizeBytes={}, defaultTarget={:?}, child={})",
            r.lookup_service,
            r.lookup_service_timeout,
            r.max_age,
            r.stale_age,
            r.cache_size_bytes,
            r.default_target,
            self.child_policy.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn target_uris_follow_grpc_go_with_the_host_port_exception() {
        let o = RlsConfigOptions::default();
        for good in [
            "target",
            ":///target",
            "dns:///rls.example.com",
            "DNS:///rls.example.com",
            "dns://8.8.8.8/rls.example.com:443",
            "passthrough:///10.0.0.1:80",
            "ipv4:10.0.0.1:80,10.0.0.2:80",
            "ipv6:[::1]:80",
            "unix:/run/rls.sock",
            "unix:///run/rls.sock",
            "127.0.0.1:8080",
            "rls.example.com:443",
            "localhost:1234",
            "%41bc",
        ] {
            assert_eq!(check_target_uri(good, &o), Ok(()), "{good}");
        }
        for bad in [
            "badScheme:///target",
            "xds:///cluster",
            "a\nb",
            "%zz",
            "abc%4",
        ] {
            assert!(check_target_uri(bad, &o).is_err(), "{bad}");
        }
        let mut o = RlsConfigOptions::default();
        o.known_schemes.insert("xds".into());
        assert_eq!(check_target_uri("xds:///cluster", &o), Ok(()));
        o.known_schemes.remove("passthrough");
        let err = check_target_uri("target", &o).unwrap_err();
        assert!(
            err.contains("unknown resolver scheme \"passthrough\""),
            "{err}"
        );
    }

    #[test]
    fn int64_accepts_numbers_and_decimal_strings() {
        assert_eq!(proto_int64(&json!(5)), Ok(5));
        assert_eq!(proto_int64(&json!("5")), Ok(5));
        assert_eq!(proto_int64(&json!(-5)), Ok(-5));
        assert_eq!(proto_int64(&json!(1e3)), Ok(1000));
        assert_eq!(proto_int64(&json!("1e3")), Ok(1000));
        assert_eq!(proto_int64(&json!("9223372036854775807")), Ok(i64::MAX));
        for bad in [
            json!(1.5),
            json!("1.5"),
            json!("x"),
            json!(true),
            json!(18446744073709551615u64),
            json!("9223372036854775808"),
            json!("NaN"),
        ] {
            assert!(proto_int64(&bad).is_err(), "{bad}");
        }
    }
}
