//! Service config: the policy a channel runs and per-method call settings.
//!
//! ```json
//! {
//!   "loadBalancingConfig": [{"round_robin": {}}],
//!   "methodConfig": [{
//!     "name": [{"service": "echo.Echo", "method": "Say"}, {"service": "echo.Admin"}],
//!     "timeout": "1.5s",
//!     "waitForReady": true
//!   }]
//! }
//! ```
//!
//! - `loadBalancingConfig` is parsed by the [`LbPolicyRegistry`]: the first registered
//!   policy wins. The deprecated `"loadBalancingPolicy": "round_robin"` is accepted
//!   when there is no `loadBalancingConfig`. With neither the channel runs
//!   `pick_first`.
//! - A `methodConfig` applies to the methods its `name`s list: `{service, method}`
//!   names one method, `{service}` every method of a service and `{}` every method.
//!   The most specific match wins. Its fields `timeout`, `waitForReady`,
//!   `maxRequestMessageBytes`, `maxResponseMessageBytes` (the smaller of these and
//!   the channel's own limits applies), `retryPolicy` and `hedgingPolicy` (see
//!   [`super::retry`]) are all gRPC defines.
//! - `retryThrottling` limits the retries of the whole channel.
//! - `healthCheckConfig: {"serviceName": "echo.Echo"}` turns on client-side health
//!   checks (gRFC A17): the channel watches `grpc.health.v1.Health/Watch` for that
//!   service ("" when `serviceName` is missing) on every READY connection, and a
//!   policy sees a connection READY only while it is SERVING. See
//!   [`ServiceConfig::health_check_service_name`].
//! - Unknown fields are ignored; a field with a bad value is an error that names it
//!   (`methodConfig[0].timeout: invalid duration "1x" …`).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::retry::{
    HedgingPolicy, RetryPolicy, RetryThrottling, Throttler, parse_hedging_policy,
    parse_retry_policy, parse_retry_throttling,
};
use crate::config::{ConfigError, Fields, parse_json};
use crate::policy::ParsedLbConfig;
use crate::registry::LbPolicyRegistry;

/// A parsed service config.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lb_core::LbPolicyRegistry;
/// use lb_core::channel::ServiceConfig;
/// let json = r#"{"loadBalancingPolicy": "round_robin",
///                "methodConfig": [{"name": [{"service": "s"}], "timeout": "2s"}]}"#;
/// let sc = ServiceConfig::parse_str(json, &LbPolicyRegistry::with_builtins())?;
/// assert_eq!(sc.load_balancing().map(|c| c.name()), Some("round_robin"));
/// assert_eq!(sc.method("/s/Any").and_then(|m| m.timeout), Some(Duration::from_secs(2)));
/// assert!(sc.method("/other/Any").is_none());
/// # Ok::<(), lb_core::ConfigError>(())
/// ```
#[derive(Clone, Default, PartialEq)]
pub struct ServiceConfig {
    load_balancing: Option<ParsedLbConfig>,
    methods: MethodConfigs,
    /// `healthCheckConfig.serviceName`, when health checks are on.
    health_check: Option<String>,
}

/// The settings a `methodConfig` entry gives the calls it names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MethodConfig {
    /// The longest a call may take; a call's own deadline wins when it is earlier.
    pub timeout: Option<Duration>,
    /// Whether calls wait for a ready connection instead of failing fast; a call's
    /// own choice wins.
    pub wait_for_ready: Option<bool>,
    /// How failed attempts are retried (gRFC A6).
    pub retry_policy: Option<RetryPolicy>,
    /// How attempts are hedged (gRFC A6); at most one of the two policies is set.
    pub hedging_policy: Option<HedgingPolicy>,
    /// The largest request message a call may send (with the channel's limit, the
    /// smaller wins).
    pub max_request_message_bytes: Option<usize>,
    /// The largest response message a call accepts (with the channel's limit, the
    /// smaller wins).
    pub max_response_message_bytes: Option<usize>,
}

/// Method configs by the name they apply to.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct MethodConfigs {
    /// `service/method` → config.
    by_method: HashMap<String, Arc<MethodConfig>>,
    by_service: HashMap<String, Arc<MethodConfig>>,
    fallback: Option<Arc<MethodConfig>>,
    /// The channel's retry tokens (`retryThrottling`); a channel makes its own with
    /// [`MethodConfigs::with_fresh_throttler`].
    pub(crate) throttler: Option<Arc<Throttler>>,
}

impl MethodConfigs {
    /// The config for a method path (`/package.Service/Method`), most specific first.
    pub(crate) fn lookup(&self, path: &str) -> Option<&MethodConfig> {
        if self.by_method.is_empty() && self.by_service.is_empty() {
            return self.fallback.as_deref();
        }
        let name = path.strip_prefix('/').unwrap_or(path);
        let service = name.split_once('/').map_or(name, |(s, _)| s);
        self.by_method
            .get(name)
            .or_else(|| self.by_service.get(service))
            .or(self.fallback.as_ref())
            .map(|c| &**c)
    }

    /// These configs with a full bucket of retry tokens of their own, for one
    /// channel.
    pub(crate) fn with_fresh_throttler(&self) -> Self {
        let mut fresh = self.clone();
        fresh.throttler = self
            .throttler
            .as_ref()
            .map(|t| Arc::new(Throttler::new(t.config())));
        fresh
    }
}

impl ServiceConfig {
    /// Parses service-config JSON text.
    ///
    /// # Errors
    ///
    /// The text is not JSON or [`ServiceConfig::parse`] rejects it.
    pub fn parse_str(text: &str, registry: &LbPolicyRegistry) -> Result<Self, ConfigError> {
        Self::parse(&parse_json(text)?, registry)
    }

    /// Parses a service config.
    ///
    /// # Errors
    ///
    /// A field has a bad value, the chosen policy rejects its config, or no policy
    /// of `loadBalancingConfig` is registered; the error names the field.
    pub fn parse(json: &Value, registry: &LbPolicyRegistry) -> Result<Self, ConfigError> {
        let fields = Fields::new(json, "")?;
        let load_balancing = if let Some(list) = fields.get("loadBalancingConfig") {
            Some(
                registry
                    .parse_load_balancing_config(list)
                    .map_err(|e| e.within("loadBalancingConfig"))?,
            )
        } else if let Some(name) = fields.string("loadBalancingPolicy")? {
            let builder = registry
                .get(name)
                .or_else(|| registry.get(&name.to_ascii_lowercase()))
                .ok_or_else(|| {
                    let hint = LbPolicyRegistry::hint(name)
                        .map_or_else(String::new, |h| format!(" ({h})"));
                    ConfigError::new(
                        "loadBalancingPolicy",
                        format!("no registered policy named {name:?}{hint}"),
                    )
                })?;
            let config = builder
                .parse_config(&Value::Object(Default::default()), registry)
                .map_err(|e| e.within(name).within("loadBalancingPolicy"))?;
            Some(ParsedLbConfig {
                builder: builder.clone(),
                config,
            })
        } else {
            None
        };
        let mut methods = match fields.array("methodConfig")? {
            Some(list) => parse_method_configs(list).map_err(|e| e.within("methodConfig"))?,
            None => MethodConfigs::default(),
        };
        if let Some(v) = fields.get("retryThrottling") {
            let throttling = parse_retry_throttling(v).map_err(|e| e.within("retryThrottling"))?;
            methods.throttler = Some(Arc::new(Throttler::new(throttling)));
        }
        let health_check = parse_health_check_config(&fields)?;
        Ok(Self {
            load_balancing,
            methods,
            health_check,
        })
    }

    /// The policy chosen by `loadBalancingConfig` or `loadBalancingPolicy`; `None`
    /// means `pick_first`.
    pub fn load_balancing(&self) -> Option<&ParsedLbConfig> {
        self.load_balancing.as_ref()
    }

    /// The method config that applies to `path` (`/package.Service/Method`).
    pub fn method(&self, path: &str) -> Option<&MethodConfig> {
        self.methods.lookup(path)
    }

    pub(crate) fn methods(&self) -> &MethodConfigs {
        &self.methods
    }

    /// The channel's `retryThrottling`, if any.
    pub fn retry_throttling(&self) -> Option<RetryThrottling> {
        self.methods.throttler.as_ref().map(|t| t.config())
    }

    /// The service whose health the channel watches on each connection
    /// (`healthCheckConfig.serviceName`; `Some("")` is the server as a whole), or
    /// `None` without `healthCheckConfig`.
    ///
    /// ```
    /// use lb_core::LbPolicyRegistry;
    /// use lb_core::channel::ServiceConfig;
    /// let registry = LbPolicyRegistry::with_builtins();
    /// let sc = ServiceConfig::parse_str(
    ///     r#"{"healthCheckConfig": {"serviceName": "echo.Echo"}}"#, &registry)?;
    /// assert_eq!(sc.health_check_service_name(), Some("echo.Echo"));
    /// let sc = ServiceConfig::parse_str(r#"{"healthCheckConfig": {}}"#, &registry)?;
    /// assert_eq!(sc.health_check_service_name(), Some(""));
    /// let sc = ServiceConfig::parse_str("{}", &registry)?;
    /// assert_eq!(sc.health_check_service_name(), None);
    /// # Ok::<(), lb_core::ConfigError>(())
    /// ```
    pub fn health_check_service_name(&self) -> Option<&str> {
        self.health_check.as_deref()
    }
}

/// `healthCheckConfig` (gRFC A17): `{"serviceName": "..."}`, both parts optional.
fn parse_health_check_config(fields: &Fields<'_>) -> Result<Option<String>, ConfigError> {
    let Some(value) = fields.get("healthCheckConfig") else {
        return Ok(None);
    };
    let within = |e: ConfigError| e.within("healthCheckConfig");
    let health = Fields::new(value, "").map_err(within)?;
    let name = health.string("serviceName").map_err(within)?;
    Ok(Some(name.unwrap_or_default().to_owned()))
}

impl fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("load_balancing", &self.load_balancing)
            .field("methods", &self.methods)
            .field("health_check", &self.health_check)
            .finish()
    }
}

fn parse_method_configs(list: &[Value]) -> Result<MethodConfigs, ConfigError> {
    let mut out = MethodConfigs::default();
    for (i, entry) in list.iter().enumerate() {
        let at = format!("[{i}]");
        let fields = Fields::new(entry, "").map_err(|e| e.within(&at))?;
        let within = |e: ConfigError| e.within(&at);
        fn policy<T>(
            fields: &Fields<'_>,
            name: &str,
            parse: fn(&Value) -> Result<T, ConfigError>,
        ) -> Result<Option<T>, ConfigError> {
            fields
                .get(name)
                .map(|v| parse(v).map_err(|e| e.within(name)))
                .transpose()
        }
        let retry_policy = policy(&fields, "retryPolicy", parse_retry_policy).map_err(within)?;
        let hedging_policy =
            policy(&fields, "hedgingPolicy", parse_hedging_policy).map_err(within)?;
        if retry_policy.is_some() && hedging_policy.is_some() {
            return Err(within(ConfigError::new(
                "hedgingPolicy",
                "a method config may have a retryPolicy or a hedgingPolicy, not both",
            )));
        }
        let size = |name: &str| -> Result<Option<usize>, ConfigError> {
            match fields.i64(name).map_err(within)? {
                None => Ok(None),
                Some(n) if n < 0 => Err(within(ConfigError::new(
                    name,
                    format!("must not be negative, not {n}"),
                ))),
                Some(n) => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
            }
        };
        let config = Arc::new(MethodConfig {
            timeout: fields.duration("timeout").map_err(within)?,
            wait_for_ready: fields.bool("waitForReady").map_err(within)?,
            retry_policy,
            hedging_policy,
            max_request_message_bytes: size("maxRequestMessageBytes")?,
            max_response_message_bytes: size("maxResponseMessageBytes")?,
        });
        let names = fields
            .array("name")
            .map_err(|e| e.within(&at))?
            .map_or(&[][..], Vec::as_slice);
        for (j, name) in names.iter().enumerate() {
            let field = |e: ConfigError| e.within(&format!("[{j}]")).within("name").within(&at);
            let name_fields = Fields::new(name, "").map_err(field)?;
            let service = name_fields.string("service").map_err(field)?.unwrap_or("");
            let method = name_fields.string("method").map_err(field)?.unwrap_or("");
            let duplicate = match (service, method) {
                ("", "") => out.fallback.replace(config.clone()).is_some(),
                ("", _) => {
                    return Err(field(ConfigError::new(
                        "method",
                        "a method needs its service",
                    )));
                }
                (s, "") => out.by_service.insert(s.into(), config.clone()).is_some(),
                (s, m) => out
                    .by_method
                    .insert(format!("{s}/{m}"), config.clone())
                    .is_some(),
            };
            if duplicate {
                return Err(field(ConfigError::new(
                    "",
                    format!("duplicate method name {name}"),
                )));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServiceConfig, ConfigError> {
        ServiceConfig::parse_str(text, &LbPolicyRegistry::with_builtins())
    }

    #[test]
    fn both_policy_forms_and_the_default() {
        let sc = parse(r#"{"loadBalancingConfig": [{"nope": {}}, {"round_robin": {}}]}"#).unwrap();
        assert_eq!(sc.load_balancing().unwrap().name(), "round_robin");
        let sc = parse(r#"{"loadBalancingPolicy": "ROUND_ROBIN"}"#).unwrap();
        assert_eq!(sc.load_balancing().unwrap().name(), "round_robin");
        let sc = parse(
            r#"{"loadBalancingPolicy": "round_robin", "loadBalancingConfig": [{"pick_first": {}}]}"#,
        )
        .unwrap();
        assert_eq!(sc.load_balancing().unwrap().name(), "pick_first");
        assert!(parse("{}").unwrap().load_balancing().is_none());
    }

    #[test]
    fn errors_carry_the_field_path() {
        for (text, want) in [
            (
                r#"{"loadBalancingConfig": [{"pick_first": {"shuffleAddressList": 1}}]}"#,
                "loadBalancingConfig[0].pick_first.shuffleAddressList: must be a boolean",
            ),
            (
                r#"{"loadBalancingConfig": {}}"#,
                "loadBalancingConfig: must be an array",
            ),
            (
                r#"{"loadBalancingPolicy": "magic"}"#,
                "loadBalancingPolicy: no registered policy named \"magic\"",
            ),
            (
                r#"{"methodConfig": [{"name": [{}], "timeout": "1x"}]}"#,
                "methodConfig[0].timeout: invalid duration",
            ),
            (
                r#"{"methodConfig": [{}, {"waitForReady": "yes"}]}"#,
                "methodConfig[1].waitForReady: must be a boolean",
            ),
            (
                r#"{"methodConfig": [{"name": [{"method": "M"}]}]}"#,
                "methodConfig[0].name[0].method: a method needs its service",
            ),
            (
                r#"{"methodConfig": [{"name": [{"service": "s"}]}, {"name": [{"service": "s"}]}]}"#,
                "methodConfig[1].name[0]: duplicate method name",
            ),
            (
                r#"{"methodConfig": [{"retryPolicy": {"maxAttempts": 1}}]}"#,
                "methodConfig[0].retryPolicy.maxAttempts: must be at least 2",
            ),
            (
                r#"{"methodConfig": [{"hedgingPolicy": {"maxAttempts": 2, "nonFatalStatusCodes": ["NOPE"]}}]}"#,
                "methodConfig[0].hedgingPolicy.nonFatalStatusCodes[0]: not a status code",
            ),
            (
                r#"{"methodConfig": [{"hedgingPolicy": {"maxAttempts": 2}, "retryPolicy": {"maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "1s", "backoffMultiplier": 2, "retryableStatusCodes": [14]}}]}"#,
                "methodConfig[0].hedgingPolicy: a method config may have a retryPolicy or a hedgingPolicy, not both",
            ),
            (
                r#"{"methodConfig": [{"maxRequestMessageBytes": -1}]}"#,
                "methodConfig[0].maxRequestMessageBytes: must not be negative",
            ),
            (
                r#"{"methodConfig": [{"maxResponseMessageBytes": "many"}]}"#,
                "methodConfig[0].maxResponseMessageBytes: must be an integer",
            ),
            (
                r#"{"retryThrottling": {"maxTokens": 5000, "tokenRatio": 1}}"#,
                "retryThrottling.maxTokens: must be an integer from 1 to 1000",
            ),
            (
                r#"{"healthCheckConfig": {"serviceName": 7}}"#,
                "healthCheckConfig.serviceName: must be a string",
            ),
            (
                r#"{"healthCheckConfig": "echo"}"#,
                "healthCheckConfig: must be an object",
            ),
            ("[]", "must be an object"),
            ("{", "invalid JSON"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.starts_with(want), "{text}\n got {err}\nwant {want}");
        }
    }

    #[test]
    fn the_most_specific_method_config_wins() {
        let sc = parse(
            r#"{"methodConfig": [
                {"name": [{}], "timeout": "1s"},
                {"name": [{"service": "s"}], "timeout": "2s"},
                {"name": [{"service": "s", "method": "m"}], "timeout": "3s", "waitForReady": true}
            ]}"#,
        )
        .unwrap();
        let t = |p: &str| sc.method(p).and_then(|m| m.timeout).unwrap().as_secs();
        assert_eq!((t("/s/m"), t("/s/other"), t("/x/m")), (3, 2, 1));
        assert_eq!(sc.method("/s/m").unwrap().wait_for_ready, Some(true));
        assert_eq!(sc.method("/s/other").unwrap().wait_for_ready, None);
    }
}
