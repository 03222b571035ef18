//! The registry of policy builders and the `loadBalancingConfig` parser.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::config::{ConfigError, json_type};
use crate::policy::{LbPolicyBuilder, ParsedLbConfig};

/// Policy builders by name.
///
/// # Examples
///
/// ```
/// use lb_core::LbPolicyRegistry;
/// let reg = LbPolicyRegistry::with_builtins();
/// let json = serde_json::json!([{"unknown_policy": {}}, {"round_robin": {}}]);
/// let chosen = reg.parse_load_balancing_config(&json)?;
/// assert_eq!(chosen.name(), "round_robin");
///
/// let err = reg.parse_load_balancing_config(&serde_json::json!([{"a": {}}, {"b": {}}])).unwrap_err();
/// assert_eq!(err.to_string(), "no registered policy among [\"a\", \"b\"]");
/// # Ok::<(), lb_core::ConfigError>(())
/// ```
#[derive(Clone, Default)]
pub struct LbPolicyRegistry {
    builders: BTreeMap<&'static str, Arc<dyn LbPolicyBuilder>>,
}

impl LbPolicyRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with `pick_first`, `round_robin`, `weighted_round_robin`,
    /// `least_request_experimental` and `ring_hash_experimental`.
    pub fn with_builtins() -> Self {
        let mut reg = Self::new();
        reg.register(crate::policies::pick_first::PickFirstBuilder);
        reg.register(crate::policies::round_robin::RoundRobinBuilder);
        reg.register(crate::policies::weighted_round_robin::WeightedRoundRobinBuilder);
        reg.register(crate::policies::least_request::LeastRequestBuilder);
        reg.register(crate::policies::ring_hash::RingHashBuilder::default());
        reg
    }

    /// Registers `builder` under its name, replacing any builder of that name.
    pub fn register(&mut self, builder: impl LbPolicyBuilder) {
        self.register_arc(Arc::new(builder));
    }

    /// Registers a shared builder under its name.
    pub fn register_arc(&mut self, builder: Arc<dyn LbPolicyBuilder>) {
        self.builders.insert(builder.name(), builder);
    }

    /// Registers `builder` under another name as well, such as grpc's
    /// `weighted_target_experimental` and the shorter `weighted_target`. Configs parsed
    /// under either name build the same policy.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lb_core::LbPolicyRegistry;
    /// use lb_core::policies::round_robin::RoundRobinBuilder;
    /// let mut reg = LbPolicyRegistry::new();
    /// reg.register_as("rr", Arc::new(RoundRobinBuilder));
    /// let chosen = reg.parse_load_balancing_config(&serde_json::json!([{"rr": {}}]))?;
    /// assert_eq!(chosen.name(), "round_robin");
    /// # Ok::<(), lb_core::ConfigError>(())
    /// ```
    pub fn register_as(&mut self, name: &'static str, builder: Arc<dyn LbPolicyBuilder>) {
        self.builders.insert(name, builder);
    }

    /// The builder registered as `name` (case-sensitive).
    pub fn get(&self, name: &str) -> Option<&Arc<dyn LbPolicyBuilder>> {
        self.builders.get(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.builders.keys().copied()
    }

    /// Chooses a policy from a `loadBalancingConfig` list (`[{"name": {config}}, …]`):
    /// the first entry whose name is registered wins and its config is parsed; entries
    /// with unknown names are skipped. A config error in the chosen entry is an error
    /// (gRPC does not fall through to later entries).
    ///
    /// # Errors
    ///
    /// The list is malformed, names no registered policy (the error lists the names
    /// tried), or the chosen policy rejects its config (the error names the field,
    /// prefixed with `[index].name`).
    pub fn parse_load_balancing_config(&self, list: &Value) -> Result<ParsedLbConfig, ConfigError> {
        let entries = list.as_array().ok_or_else(|| {
            ConfigError::new(
                "",
                format!(
                    "must be an array of {{policy: config}} objects, not {}",
                    json_type(list)
                ),
            )
        })?;
        let mut tried = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let at = format!("[{i}]");
            let obj = entry.as_object().ok_or_else(|| {
                ConfigError::new(&at, format!("must be an object, not {}", json_type(entry)))
            })?;
            if obj.len() != 1 {
                return Err(ConfigError::new(
                    &at,
                    format!("must hold exactly one policy name, found {}", obj.len()),
                ));
            }
            let (name, config) = obj.iter().next().expect("one entry");
            let Some(builder) = self.get(name) else {
                tried.push(name.clone());
                continue;
            };
            let config = builder
                .parse_config(config, self)
                .map_err(|e| e.within(name).within(&at))?;
            return Ok(ParsedLbConfig {
                builder: builder.clone(),
                config,
            });
        }
        Err(Self::none_registered(&tried))
    }

    /// The error for a `loadBalancingConfig` list none of whose names is registered:
    /// it lists the names, and says which crate's `register` adds those that come
    /// with this project's other crates.
    ///
    /// ```
    /// use lb_core::LbPolicyRegistry;
    /// let err = LbPolicyRegistry::none_registered(&["rls_experimental".into()]);
    /// assert_eq!(
    ///     err.to_string(),
    ///     "no registered policy among [\"rls_experimental\"] (rls_experimental comes with \
    ///      crate lb-rls: give ChannelBuilder::lb_policy_registry lb_rls::registry(), \
    ///      which has every policy of lb-core, lb-group and lb-rls, or call \
    ///      lb_rls::register on the registry you give it)"
    /// );
    /// ```
    pub fn none_registered(tried: &[String]) -> ConfigError {
        let mut message = format!("no registered policy among {tried:?}");
        let hints: Vec<String> = tried.iter().filter_map(|n| Self::hint(n)).collect();
        if !hints.is_empty() {
            message.push_str(&format!(" ({})", hints.join("; ")));
        }
        ConfigError::new("", message)
    }

    /// For a policy name that comes with another crate of this project, which crate
    /// and which call register it.
    ///
    /// ```
    /// use lb_core::LbPolicyRegistry;
    /// assert!(LbPolicyRegistry::hint("priority_experimental").unwrap().contains("lb_group::register"));
    /// assert_eq!(LbPolicyRegistry::hint("no_such_policy"), None);
    /// ```
    pub fn hint(name: &str) -> Option<String> {
        let (krate, register) = match name {
            "weighted_target_experimental"
            | "priority_experimental"
            | "outlier_detection_experimental"
            | "outlier_detection" => ("lb-group", "lb_group"),
            "rls_experimental" | "rls_dial_target" => ("lb-rls", "lb_rls"),
            _ => return None,
        };
        let all = if krate == "lb-rls" {
            "lb-core, lb-group and lb-rls"
        } else {
            "lb-core and lb-group"
        };
        Some(format!(
            "{name} comes with crate {krate}: give ChannelBuilder::lb_policy_registry \
             {register}::registry(), which has every policy of {all}, or call \
             {register}::register on the registry you give it"
        ))
    }
}

impl fmt::Debug for LbPolicyRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.builders.keys()).finish()
    }
}
