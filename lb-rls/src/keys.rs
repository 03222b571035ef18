//! Key builders: from a call's method path, authority and metadata to the RLS key map.
//!
//! ```text
//!  grpcKeybuilders ──KeyBuilderMap::new──> { "/svc/method" → builder, "/svc/" → builder }
//!
//!  call "/svc/method" + metadata + host
//!     │ exact "/svc/method", else wildcard "/svc/", else no builder
//!     v
//!  builder ──> headers (first present name per matcher, values joined with ",")
//!              + extraKeys host / service / method
//!              + constantKeys
//!     v
//!  KeyMap {k1=v1, …}  (no builder: the empty map, still a valid cache key)
//! ```
//!
//! Every rule of grpc-go's `MakeBuilderMap` is checked when the map is built, plus
//! the extra checks C++ and Java make (see [`KeyBuilderMap::new`]).
//!
//! A picker's cache hit builds no [`KeyMap`]: `KeyBuilderMap::build_borrowed_keys`
//! fills a `BorrowedKeys` on the stack with the same pairs, borrowed from the
//! config, the call and the channel (only multi-valued headers' joined values are
//! allocated), which hashes and compares like the owned map.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use lb_core::config::{Fields, json_type};
use lb_core::{ConfigError, Metadata};
use serde_json::Value;

/// One `GrpcKeyBuilder` of the config, as written (`rls_config.proto`).
///
/// Parse it with [`GrpcKeyBuilder::from_json`]; check and compile a list of them with
/// [`KeyBuilderMap::new`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrpcKeyBuilder {
    /// The `(service, method)` pairs this builder applies to. An empty method matches
    /// every method of the service.
    pub names: Vec<Name>,
    /// Keys taken from request headers.
    pub headers: Vec<NameMatcher>,
    /// Key names for the host, service and method (empty: not emitted).
    pub extra_keys: ExtraKeys,
    /// Keys with fixed values.
    pub constant_keys: BTreeMap<String, String>,
}

/// `GrpcKeyBuilder.Name`: a service and an optional method.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Name {
    /// The fully qualified service name, `package.Service`.
    pub service: String,
    /// The method name; empty matches every method of the service.
    pub method: String,
}

/// `NameMatcher`: a key whose value comes from the first present header of `names`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameMatcher {
    /// The key in the key map.
    pub key: String,
    /// Header names, tried in order.
    pub names: Vec<String>,
    /// Must be false for gRPC; kept so the check can name it.
    pub required_match: bool,
}

/// `GrpcKeyBuilder.ExtraKeys`: key names for values taken from the call itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtraKeys {
    /// The key for the channel's target host; empty: not emitted.
    pub host: String,
    /// The key for the service name (without slashes); empty: not emitted.
    pub service: String,
    /// The key for the method name; empty: not emitted.
    pub method: String,
}

/// Reads a field under its protobuf JSON name or, as protobuf JSON parsers also
/// accept, under its original proto field name.
fn proto_field<'a>(
    fields: &Fields<'a>,
    json_name: &'static str,
    proto_name: &'static str,
) -> Result<Option<(&'static str, &'a Value)>, ConfigError> {
    match (fields.get(json_name), fields.get(proto_name)) {
        (Some(_), Some(_)) if json_name != proto_name => Err(ConfigError::new(
            json_name,
            format!("is also given as {proto_name:?}; give it once"),
        )),
        (Some(v), _) => Ok(Some((json_name, v))),
        (None, Some(v)) => Ok(Some((proto_name, v))),
        (None, None) => Ok(None),
    }
}

/// A string field that may appear under either name.
pub(crate) fn proto_string(
    fields: &Fields<'_>,
    json_name: &'static str,
    proto_name: &'static str,
) -> Result<Option<String>, ConfigError> {
    let Some((name, v)) = proto_field(fields, json_name, proto_name)? else {
        return Ok(None);
    };
    v.as_str()
        .map(|s| Some(s.to_owned()))
        .ok_or_else(|| ConfigError::new(name, format!("must be a string, not {}", json_type(v))))
}

/// An array field that may appear under either name; the name used comes back for
/// error paths.
pub(crate) fn proto_array<'a>(
    fields: &Fields<'a>,
    json_name: &'static str,
    proto_name: &'static str,
) -> Result<Option<(&'static str, &'a Vec<Value>)>, ConfigError> {
    let Some((name, v)) = proto_field(fields, json_name, proto_name)? else {
        return Ok(None);
    };
    v.as_array()
        .map(|a| Some((name, a)))
        .ok_or_else(|| ConfigError::new(name, format!("must be an array, not {}", json_type(v))))
}

/// The raw value of a field that may appear under either name.
pub(crate) fn proto_value<'a>(
    fields: &Fields<'a>,
    json_name: &'static str,
    proto_name: &'static str,
) -> Result<Option<(&'static str, &'a Value)>, ConfigError> {
    proto_field(fields, json_name, proto_name)
}

fn string_list(list: &[Value], field: &str) -> Result<Vec<String>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str().map(str::to_owned).ok_or_else(|| {
                ConfigError::new(
                    format!("[{i}]"),
                    format!("must be a string, not {}", json_type(v)),
                )
                .within(field)
            })
        })
        .collect()
}

impl GrpcKeyBuilder {
    /// Parses one entry of `grpcKeybuilders` (protobuf JSON: camelCase or proto field
    /// names, unknown fields ignored). Only types are checked here; the rules are
    /// checked by [`KeyBuilderMap::new`].
    ///
    /// # Errors
    ///
    /// A field has the wrong JSON type; the error names it relative to this builder.
    pub fn from_json(value: &Value) -> Result<Self, ConfigError> {
        let f = Fields::new(value, "")?;
        let mut builder = Self::default();
        if let Some((field, names)) = proto_array(&f, "names", "names")? {
            for (i, n) in names.iter().enumerate() {
                let at = format!("[{i}]");
                let nf = Fields::new(n, "").map_err(|e| e.within(&at).within(field))?;
                let name = Name {
                    service: proto_string(&nf, "service", "service")
                        .map_err(|e| e.within(&at).within(field))?
                        .unwrap_or_default(),
                    method: proto_string(&nf, "method", "method")
                        .map_err(|e| e.within(&at).within(field))?
                        .unwrap_or_default(),
                };
                builder.names.push(name);
            }
        }
        if let Some((field, headers)) = proto_array(&f, "headers", "headers")? {
            for (i, h) in headers.iter().enumerate() {
                let at = format!("[{i}]");
                let wrap = |e: ConfigError| e.within(&at).within(field);
                let hf = Fields::new(h, "").map_err(wrap)?;
                let names = match proto_array(&hf, "names", "names").map_err(wrap)? {
                    Some((nf, list)) => string_list(list, nf).map_err(wrap)?,
                    None => Vec::new(),
                };
                let required_match =
                    match proto_value(&hf, "requiredMatch", "required_match").map_err(wrap)? {
                        None => false,
                        Some((name, v)) => v.as_bool().ok_or_else(|| {
                            wrap(ConfigError::new(
                                name,
                                format!("must be a boolean, not {}", json_type(v)),
                            ))
                        })?,
                    };
                builder.headers.push(NameMatcher {
                    key: proto_string(&hf, "key", "key")
                        .map_err(wrap)?
                        .unwrap_or_default(),
                    names,
                    required_match,
                });
            }
        }
        if let Some((field, extra)) = proto_value(&f, "extraKeys", "extra_keys")? {
            let ef = Fields::new(extra, field)?;
            let read = |name: &'static str| {
                proto_string(&ef, name, name)
                    .map(Option::unwrap_or_default)
                    .map_err(|e| e.within(field))
            };
            builder.extra_keys = ExtraKeys {
                host: read("host")?,
                service: read("service")?,
                method: read("method")?,
            };
        }
        if let Some((field, constants)) = proto_value(&f, "constantKeys", "constant_keys")? {
            let obj = lb_core::config::as_object(constants, field)?;
            for (k, v) in obj {
                let v = v.as_str().ok_or_else(|| {
                    ConfigError::new(
                        k.as_str(),
                        format!("must be a string, not {}", json_type(v)),
                    )
                    .within(field)
                })?;
                builder.constant_keys.insert(k.clone(), v.to_owned());
            }
        }
        Ok(builder)
    }
}

/// A compiled key builder: what one `GrpcKeyBuilder` turns a call into.
#[derive(Clone, Debug, PartialEq, Eq)]
struct KeyBuilder {
    /// `(key, lower-cased header names)` in config order.
    headers: Vec<(String, Vec<String>)>,
    host_key: Option<String>,
    service_key: Option<String>,
    method_key: Option<String>,
    constant_keys: BTreeMap<String, String>,
}

/// A map keyed by names from the service config.
type ConfigMap<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// Up to how many entries [`config_get`] compares names rather than hashing.
const LINEAR_CONFIG: usize = 4;

/// The value of `key` in `map`. A few entries (a config usually names one or two
/// services) are compared in turn, which costs less than hashing the name.
fn config_get<'m, V>(map: &'m ConfigMap<V>, key: &str) -> Option<&'m V> {
    if map.len() <= LINEAR_CONFIG {
        map.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    } else {
        map.get(key)
    }
}

/// The builders of one service: per method, and the wildcard (empty method).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ServiceBuilders {
    methods: ConfigMap<Arc<KeyBuilder>>,
    wildcard: Option<Arc<KeyBuilder>>,
}

/// Key builders by path: `/service/method` for exact names, `/service/` for
/// wildcards. Looking up a call tries the exact path, then the wildcard.
///
/// # Examples
///
/// ```
/// use lb_core::Metadata;
/// use lb_rls::keys::{GrpcKeyBuilder, KeyBuilderMap};
/// let json = serde_json::json!({
///     "names": [{"service": "pkg.Svc"}],
///     "headers": [{"key": "user", "names": ["x-user", "x-user-fallback"]}],
///     "extraKeys": {"method": "m"},
///     "constantKeys": {"tier": "gold"},
/// });
/// let map = KeyBuilderMap::new(&[GrpcKeyBuilder::from_json(&json)?])?;
/// let mut md = Metadata::new();
/// md.insert("x-user", "alice").unwrap();
/// let keys = map.build_keys("/pkg.Svc/Get", "example.com", &md).unwrap();
/// assert_eq!(keys.to_string(), "m=Get,tier=gold,user=alice");
/// // No builder for the service: the empty key map.
/// assert!(map.build_keys("/other.Svc/Get", "example.com", &md).unwrap().is_empty());
/// # Ok::<(), lb_core::ConfigError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyBuilderMap {
    services: ConfigMap<ServiceBuilders>,
}

impl KeyBuilderMap {
    /// Checks and compiles `builders`. Error paths are relative to
    /// `grpcKeybuilders`.
    ///
    /// The rules, in grpc-go's order (each builder fully before the next):
    /// 1. there is at least one builder;
    /// 2. headers: `requiredMatch` must not be true; `key` must be non-empty (C++,
    ///    Java) and must not repeat a constant key or an earlier header key; `names`
    ///    must be non-empty and hold no empty name (C++);
    /// 3. `constantKeys` must not have an empty key (C++);
    /// 4. `extraKeys` host, service and method must not repeat a header or constant
    ///    key, nor each other (C++; grpc-go does not compare them with each other);
    /// 5. `names` must be non-empty; every `service` non-empty; no `method` holds a
    ///    `/`; every path `/service/method` is unique across all builders.
    ///
    /// # Errors
    ///
    /// The first rule broken, naming the field, e.g.
    /// `grpcKeybuilders[0].names: must be non-empty`.
    pub fn new(builders: &[GrpcKeyBuilder]) -> Result<Self, ConfigError> {
        const FIELD: &str = "grpcKeybuilders";
        if builders.is_empty() {
            return Err(ConfigError::new(
                FIELD,
                "must hold at least one key builder",
            ));
        }
        let mut map = Self::default();
        // Path → index of the builder that claimed it, for the duplicate message.
        let mut claimed: HashMap<String, usize> = HashMap::new();
        for (index, b) in builders.iter().enumerate() {
            let at = format!("[{index}]");
            let wrap = |e: ConfigError| e.within(&at).within(FIELD);
            let compiled = Arc::new(compile(b).map_err(wrap)?);
            if b.names.is_empty() {
                return Err(wrap(ConfigError::new("names", "must be non-empty")));
            }
            for (i, name) in b.names.iter().enumerate() {
                let name_at = format!("names[{i}]");
                if name.service.is_empty() {
                    return Err(wrap(
                        ConfigError::new("service", "must be non-empty").within(&name_at),
                    ));
                }
                if name.method.contains('/') {
                    return Err(wrap(
                        ConfigError::new(
                            "method",
                            format!("must not contain '/' (got {:?})", name.method),
                        )
                        .within(&name_at),
                    ));
                }
                let path = format!("/{}/{}", name.service, name.method);
                if let Some(first) = claimed.get(&path) {
                    return Err(wrap(ConfigError::new(
                        name_at,
                        format!("repeats path {path:?}, already used by {FIELD}[{first}]"),
                    )));
                }
                claimed.insert(path, index);
                let service = map.services.entry(name.service.clone()).or_default();
                if name.method.is_empty() {
                    service.wildcard = Some(compiled.clone());
                } else {
                    service
                        .methods
                        .insert(name.method.clone(), compiled.clone());
                }
            }
        }
        Ok(map)
    }

    /// Every path with a builder (`/service/method` or `/service/`), sorted.
    pub fn paths(&self) -> Vec<String> {
        let mut paths = Vec::new();
        for (service, b) in &self.services {
            if b.wildcard.is_some() {
                paths.push(format!("/{service}/"));
            }
            for method in b.methods.keys() {
                paths.push(format!("/{service}/{method}"));
            }
        }
        paths.sort();
        paths
    }

    /// The number of paths with a builder.
    pub fn len(&self) -> usize {
        self.services
            .values()
            .map(|s| s.methods.len() + usize::from(s.wildcard.is_some()))
            .sum()
    }

    /// Whether no path has a builder (never true for a map built by [`Self::new`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key map for a call to `path` (`/service/method`) on a channel whose
    /// target host is `host`, with request headers `metadata`.
    ///
    /// # Errors
    ///
    /// `path` is not of the form `/service/method` (see [`MethodPath::parse`]).
    pub fn build_keys(
        &self,
        path: &str,
        host: &str,
        metadata: &Metadata,
    ) -> Result<KeyMap, InvalidMethodPath> {
        Ok(self.build_keys_for(MethodPath::parse(path)?, host, metadata))
    }

    /// The builder for a call to `path`: the exact path's, else the service's
    /// wildcard.
    fn builder_for(&self, path: MethodPath<'_>) -> Option<&KeyBuilder> {
        let service = config_get(&self.services, path.service)?;
        config_get(&service.methods, path.method)
            .or(service.wildcard.as_ref())
            .map(|b| &**b)
    }

    /// The pairs the builder for `path` makes of a call, in the order they go into
    /// a map (a later pair replaces an earlier one of the same key): for each header
    /// key, the values of the first of its names that the call has; then the host,
    /// service and method keys; then the constant keys. `put` gets each key with its
    /// first value and, for a header with more than one value, the header's name
    /// (its values are joined with `,`: see [`join_values`]); it returns `false` to
    /// stop, and so does this then. No builder: no pairs.
    fn each_pair<'a>(
        &'a self,
        path: MethodPath<'a>,
        host: &'a str,
        metadata: &'a Metadata,
        mut put: impl FnMut(&'a str, &'a str, Option<&'a str>) -> bool,
    ) -> bool {
        let Some(b) = self.builder_for(path) else {
            return true;
        };
        for (key, names) in &b.headers {
            for name in names {
                let mut values = metadata.get_all(name);
                let Some(first) = values.next() else {
                    continue;
                };
                let more = values.next().is_some().then_some(name.as_str());
                if !put(key, first, more) {
                    return false;
                }
                break;
            }
        }
        let extra = [
            (&b.host_key, host),
            (&b.service_key, path.service),
            (&b.method_key, path.method),
        ];
        for (key, value) in extra {
            if let Some(key) = key {
                if !put(key, value, None) {
                    return false;
                }
            }
        }
        for (key, value) in &b.constant_keys {
            if !put(key, value, None) {
                return false;
            }
        }
        true
    }

    /// [`Self::build_keys`] for a path already checked. A path with no builder gives
    /// the empty key map.
    pub fn build_keys_for(&self, path: MethodPath<'_>, host: &str, metadata: &Metadata) -> KeyMap {
        let mut keys = KeyMap::new();
        self.each_pair(path, host, metadata, |key, first, more| {
            let mut value = String::new();
            match more {
                None => value.push_str(first),
                Some(name) => join_values(metadata.get_all(name), &mut value),
            }
            keys.insert(key, value);
            true
        });
        keys
    }

    /// [`Self::build_keys_for`] without building the map: the same pairs, in the
    /// same order, borrowed into `keys` (which must be empty). Returns `false`, with
    /// `keys` unusable, if the call has more keys than a [`BorrowedKeys`] holds;
    /// build the owned map then.
    pub(crate) fn build_borrowed_keys<'a>(
        &'a self,
        path: MethodPath<'a>,
        host: &'a str,
        metadata: &'a Metadata,
        keys: &mut BorrowedKeys<'a>,
    ) -> bool {
        self.each_pair(path, host, metadata, |key, first, more| {
            let value = match more {
                None => KeyValue::Borrowed(first),
                Some(name) => {
                    let start = keys.joined.len();
                    join_values(metadata.get_all(name), &mut keys.joined);
                    KeyValue::Joined(start, keys.joined.len())
                }
            };
            keys.insert(key, value)
        })
    }
}

/// Appends `values` to `out`, separated by commas: the one value of a key made of
/// a multi-valued header.
fn join_values<'a>(values: impl Iterator<Item = &'a str>, out: &mut String) {
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(v);
    }
}

/// Checks one builder's keys (rules 2–4 of [`KeyBuilderMap::new`]) and compiles them.
fn compile(b: &GrpcKeyBuilder) -> Result<KeyBuilder, ConfigError> {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for k in b.constant_keys.keys() {
        if k.is_empty() {
            return Err(ConfigError::new(
                "constantKeys",
                "must not have an empty key",
            ));
        }
        seen.insert(k);
    }
    let mut headers = Vec::with_capacity(b.headers.len());
    for (i, h) in b.headers.iter().enumerate() {
        let at = format!("headers[{i}]");
        if h.required_match {
            return Err(ConfigError::new("requiredMatch", "must not be set for gRPC").within(&at));
        }
        if h.key.is_empty() {
            return Err(ConfigError::new("key", "must be non-empty").within(&at));
        }
        if !seen.insert(&h.key) {
            return Err(ConfigError::new(
                "key",
                format!(
                    "repeated key {:?} across headers, constantKeys and extraKeys",
                    h.key
                ),
            )
            .within(&at));
        }
        if h.names.is_empty() {
            return Err(ConfigError::new("names", "must be non-empty").within(&at));
        }
        if let Some(j) = h.names.iter().position(String::is_empty) {
            return Err(ConfigError::new(format!("names[{j}]"), "must be non-empty").within(&at));
        }
        // Metadata keys are lower-case; header names match case-insensitively.
        let names = h.names.iter().map(|n| n.to_ascii_lowercase()).collect();
        headers.push((h.key.clone(), names));
    }
    let extra = [
        ("host", &b.extra_keys.host),
        ("service", &b.extra_keys.service),
        ("method", &b.extra_keys.method),
    ];
    for (field, key) in extra {
        if !key.is_empty() && !seen.insert(key) {
            return Err(ConfigError::new(
                field,
                format!("repeated key {key:?} across headers, constantKeys and extraKeys"),
            )
            .within("extraKeys"));
        }
    }
    let non_empty = |s: &String| (!s.is_empty()).then(|| s.clone());
    Ok(KeyBuilder {
        headers,
        host_key: non_empty(&b.extra_keys.host),
        service_key: non_empty(&b.extra_keys.service),
        method_key: non_empty(&b.extra_keys.method),
        constant_keys: b.constant_keys.clone(),
    })
}

/// A method path split into service and method: `/pkg.Svc/Method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodPath<'a> {
    /// The service, `pkg.Svc`.
    pub service: &'a str,
    /// The method, `Method`.
    pub method: &'a str,
}

impl<'a> MethodPath<'a> {
    /// Checks `path` as grpc-go's RLS picker does: a leading `/` and exactly two `/`
    /// in all.
    ///
    /// ```
    /// use lb_rls::keys::MethodPath;
    /// assert!(MethodPath::parse("/service/method").is_ok());
    /// for bad in ["service/method", "/service", "/service/path/to/method"] {
    ///     assert!(MethodPath::parse(bad).is_err(), "{bad}");
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// `path` is not of that form.
    pub fn parse(path: &'a str) -> Result<Self, InvalidMethodPath> {
        let bad = || InvalidMethodPath {
            path: path.to_owned(),
        };
        // One pass over the bytes: paths are short, and every pick parses one.
        let bytes = path.as_bytes();
        if bytes.first() != Some(&b'/') {
            return Err(bad());
        }
        let mut slash = None;
        for (i, &b) in bytes.iter().enumerate().skip(1) {
            if b == b'/' {
                if slash.is_some() {
                    return Err(bad());
                }
                slash = Some(i);
            }
        }
        let i = slash.ok_or_else(bad)?;
        Ok(Self {
            service: &path[1..i],
            method: &path[i + 1..],
        })
    }
}

/// A method path that is not `/service/method`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("method name {path:?} is not of the form '/service/method'")]
pub struct InvalidMethodPath {
    /// The path as given.
    pub path: String,
}

/// The keys of one RLS request: a map from key to value, kept sorted by key.
///
/// Its [`Display`](fmt::Display) form is grpc-go's cache-key string: `k=v` pairs in
/// key order, joined with `,`.
///
/// ```
/// use lb_rls::keys::KeyMap;
/// let keys: KeyMap = [("b", "2"), ("a", "1")].into_iter().collect();
/// assert_eq!(keys.to_string(), "a=1,b=2");
/// assert_eq!(keys.string_len(), 7);
/// assert_eq!(KeyMap::new().to_string(), "");
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyMap {
    /// Sorted by key, keys unique. A sorted vector: key maps are small, and this is
    /// the most compact map for the cache to hold.
    entries: Vec<(String, String)>,
}

impl KeyMap {
    /// The empty key map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`, replacing any earlier value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        match self.entries.binary_search_by(|(k, _)| k.as_str().cmp(&key)) {
            Ok(i) => self.entries[i].1 = value,
            Err(i) => self.entries.insert(i, (key, value)),
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.entries[i].1.as_str())
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The length in bytes of the string form, without building it.
    pub fn string_len(&self) -> usize {
        let pairs: usize = self
            .entries
            .iter()
            .map(|(k, v)| k.len() + 1 + v.len())
            .sum();
        pairs + self.entries.len().saturating_sub(1)
    }

    /// Releases spare capacity (the cache does this for the keys it stores).
    pub fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
    }

    /// The heap bytes this map holds (vector and string buffers), for memory
    /// accounting.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<(String, String)>()
            + self
                .entries
                .iter()
                .map(|(k, v)| k.capacity() + v.capacity())
                .sum::<usize>()
    }
}

impl fmt::Display for KeyMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for KeyMap {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = Self::new();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

impl From<BTreeMap<String, String>> for KeyMap {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self {
            entries: map.into_iter().collect(),
        }
    }
}

impl From<KeyMap> for BTreeMap<String, String> {
    fn from(map: KeyMap) -> Self {
        map.entries.into_iter().collect()
    }
}

/// How many keys a [`BorrowedKeys`] holds.
const BORROWED_KEYS: usize = 8;

/// A value of a [`BorrowedKeys`].
#[derive(Clone, Copy)]
enum KeyValue<'a> {
    /// Borrowed from the call, the channel or the config.
    Borrowed(&'a str),
    /// A multi-valued header's values, joined: this range of the map's `joined`.
    Joined(usize, usize),
}

/// The pairs of a [`KeyMap`], borrowed where they can be, in a buffer on the stack:
/// what a picker looks its cache up with, so that a hit allocates nothing (unless a
/// header has several values, which are joined into one string).
///
/// Kept sorted by key like the owned map, so that it hashes as the owned map built
/// from the same call does (the same bytes are written: see the `Hash` impl) and
/// compares pair by pair with it.
pub(crate) struct BorrowedKeys<'a> {
    /// The first `len` are the pairs, sorted by key, keys unique; the rest `None`.
    /// `Option` and `Copy` so that the buffer costs a word per pair to clear and
    /// nothing to drop.
    entries: [Option<(&'a str, KeyValue<'a>)>; BORROWED_KEYS],
    len: usize,
    /// The joined values of multi-valued headers, one after the other.
    joined: String,
}

impl<'a> BorrowedKeys<'a> {
    /// No keys.
    pub(crate) fn new() -> Self {
        Self {
            entries: [None; BORROWED_KEYS],
            len: 0,
            joined: String::new(),
        }
    }

    /// Sets `key` to `value`, replacing any earlier value, as [`KeyMap::insert`]
    /// does. Returns `false` if the buffer is full.
    fn insert(&mut self, key: &'a str, value: KeyValue<'a>) -> bool {
        let live = &self.entries[..self.len];
        match live.binary_search_by(|e| e.map_or("", |(k, _)| k).cmp(key)) {
            Ok(i) => self.entries[i] = Some((key, value)),
            Err(_) if self.len == BORROWED_KEYS => return false,
            Err(i) => {
                self.entries[i..=self.len].rotate_right(1);
                self.entries[i] = Some((key, value));
                self.len += 1;
            }
        }
        true
    }

    /// The pairs in key order.
    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.entries[..self.len].iter().map(|e| {
            let (k, v) = e.expect("the first `len` entries are set");
            let v = match v {
                KeyValue::Borrowed(v) => v,
                KeyValue::Joined(start, end) => &self.joined[start..end],
            };
            (k, v)
        })
    }

    /// Whether `map` holds exactly these pairs.
    pub(crate) fn matches(&self, map: &KeyMap) -> bool {
        map.len() == self.len && map.iter().zip(self.iter()).all(|(a, b)| a == b)
    }
}

/// A call's keys as the cache index takes them: the owned [`KeyMap`], or the
/// [`BorrowedKeys`] of a cache hit. Both hash the same pairs the same way.
pub(crate) trait CallKeys: Hash {
    /// Whether these are exactly the pairs of `map`.
    fn same_as(&self, map: &KeyMap) -> bool;
}

impl CallKeys for KeyMap {
    fn same_as(&self, map: &KeyMap) -> bool {
        self == map
    }
}

impl CallKeys for BorrowedKeys<'_> {
    fn same_as(&self, map: &KeyMap) -> bool {
        self.matches(map)
    }
}

/// Writes what the owned map's derived `Hash` writes: its `Vec<(String, String)>`,
/// that is the length, then each key and value as a `str`.
impl Hash for BorrowedKeys<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // `[T]::hash` writes the length with `write_length_prefix`, which is
        // `write_usize` unless the hasher says otherwise (std's do not).
        state.write_usize(self.len);
        for (k, v) in self.iter() {
            k.hash(state);
            v.hash(state);
        }
    }
}

impl fmt::Debug for BorrowedKeys<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn builder(v: Value) -> GrpcKeyBuilder {
        GrpcKeyBuilder::from_json(&v).expect("valid builder json")
    }

    /// grpc-go's goodKeyBuilder1: every feature on a wildcard name.
    fn good1() -> GrpcKeyBuilder {
        builder(json!({
            "names": [{"service": "gFoo"}],
            "headers": [{"key": "k1", "names": ["n1"]}, {"key": "k2", "names": ["n1"]}],
            "extraKeys": {"host": "host", "service": "service", "method": "method"},
            "constantKeys": {"const-key-1": "const-val-1", "const-key-2": "const-val-2"},
        }))
    }

    /// grpc-go's goodKeyBuilder2: an exact name and a wildcard sharing one builder.
    fn good2() -> GrpcKeyBuilder {
        builder(json!({
            "names": [{"service": "gBar", "method": "method1"}, {"service": "gFoobar"}],
            "headers": [{"key": "k1", "names": ["n1", "n2"]}],
        }))
    }

    fn md(pairs: &[(&str, &str)]) -> Metadata {
        let mut md = Metadata::new();
        for (k, v) in pairs {
            md.insert(k, v).unwrap();
        }
        md
    }

    #[test]
    fn make_builder_map_registers_exact_and_wildcard_paths() {
        let map = KeyBuilderMap::new(&[good1()]).unwrap();
        assert_eq!(map.paths(), ["/gFoo/"]);
        let map = KeyBuilderMap::new(&[good1(), good2()]).unwrap();
        assert_eq!(map.paths(), ["/gBar/method1", "/gFoo/", "/gFoobar/"]);
        assert_eq!(map.len(), 3);
    }

    #[test]
    fn make_builder_map_errors_name_the_field() {
        let cases: Vec<(Vec<GrpcKeyBuilder>, &str)> = vec![
            (
                vec![],
                "grpcKeybuilders: must hold at least one key builder",
            ),
            (
                vec![
                    builder(json!({"names": [{"service": "gFoo"}]})),
                    builder(json!({"names": [{"service": "gFoo"}]})),
                ],
                "grpcKeybuilders[1].names[0]: repeats path \"/gFoo/\", already used by grpcKeybuilders[0]",
            ),
            (
                vec![builder(
                    json!({"names": [{"service": "gFoo"}, {"method": "m"}]}),
                )],
                "grpcKeybuilders[0].names[1].service: must be non-empty",
            ),
            (
                vec![builder(json!({"headers": [{"key": "k", "names": ["n"]}]}))],
                "grpcKeybuilders[0].names: must be non-empty",
            ),
            (
                vec![builder(json!({
                    "names": [{"service": "gFoo"}],
                    "headers": [{"key": "k", "names": ["n"], "requiredMatch": true}],
                }))],
                "grpcKeybuilders[0].headers[0].requiredMatch: must not be set for gRPC",
            ),
            (
                vec![builder(json!({
                    "names": [{"service": "gFoo"}],
                    "headers": [{"key": "k", "names": ["n1"]}, {"key": "k", "names": ["n2"]}],
                }))],
                "grpcKeybuilders[0].headers[1].key: repeated key \"k\" across headers, constantKeys and extraKeys",
            ),
            (
                vec![builder(json!({
                    "names": [{"service": "gFoo"}],
                    "headers": [{"key": "k", "names": ["n1"]}],
                    "constantKeys": {"k": "v"},
                }))],
                "grpcKeybuilders[0].headers[0].key: repeated key \"k\" across headers, constantKeys and extraKeys",
            ),
            (
                vec![builder(json!({
                    "names": [{"service": "gFoo"}],
                    "headers": [{"key": "k", "names": ["n1"]}],
                    "extraKeys": {"method": "k"},
                }))],
                "grpcKeybuilders[0].extraKeys.method: repeated key \"k\" across headers, constantKeys and extraKeys",
            ),
            (
                vec![builder(json!({
                    "names": [{"service": "gFoo"}],
                    "constantKeys": {"host": "v"},
                    "extraKeys": {"host": "host"},
                }))],
                "grpcKeybuilders[0].extraKeys.host: repeated key \"host\" across headers, constantKeys and extraKeys",
            ),
            (
                vec![builder(
                    json!({"names": [{"service": "gFoo", "method": "a/b"}]}),
                )],
                "grpcKeybuilders[0].names[0].method: must not contain '/' (got \"a/b\")",
            ),
        ];
        for (builders, want) in cases {
            let err = KeyBuilderMap::new(&builders).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn stricter_checks_from_cpp_and_java() {
        let cases = [
            (
                json!({"names": [{"service": "s"}], "headers": [{"names": ["n"]}]}),
                "grpcKeybuilders[0].headers[0].key: must be non-empty",
            ),
            (
                json!({"names": [{"service": "s"}], "headers": [{"key": "k"}]}),
                "grpcKeybuilders[0].headers[0].names: must be non-empty",
            ),
            (
                json!({"names": [{"service": "s"}], "headers": [{"key": "k", "names": ["a", ""]}]}),
                "grpcKeybuilders[0].headers[0].names[1]: must be non-empty",
            ),
            (
                json!({"names": [{"service": "s"}], "constantKeys": {"": "v"}}),
                "grpcKeybuilders[0].constantKeys: must not have an empty key",
            ),
            (
                json!({"names": [{"service": "s"}], "extraKeys": {"host": "x", "method": "x"}}),
                "grpcKeybuilders[0].extraKeys.method: repeated key \"x\" across headers, constantKeys and extraKeys",
            ),
        ];
        for (json, want) in cases {
            let err = KeyBuilderMap::new(&[builder(json)]).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn json_type_errors_name_the_field() {
        let cases = [
            (
                json!({"names": "x"}),
                "names: must be an array, not a string",
            ),
            (
                json!({"names": [{"service": 1}]}),
                "names[0].service: must be a string, not a number",
            ),
            (
                json!({"headers": [{"names": [1]}]}),
                "headers[0].names[0]: must be a string, not a number",
            ),
            (
                json!({"headers": [{"requiredMatch": "yes"}]}),
                "headers[0].requiredMatch: must be a boolean, not a string",
            ),
            (
                json!({"extraKeys": {"host": 1}}),
                "extraKeys.host: must be a string, not a number",
            ),
            (
                json!({"constantKeys": {"a": 1}}),
                "constantKeys.a: must be a string, not a number",
            ),
            (
                json!({"names": [], "extra_keys": {}, "extraKeys": {}}),
                "extraKeys: is also given as \"extra_keys\"; give it once",
            ),
        ];
        for (json, want) in cases {
            assert_eq!(
                GrpcKeyBuilder::from_json(&json).unwrap_err().to_string(),
                want
            );
        }
        // Proto field names are accepted too, and unknown fields ignored.
        let b = builder(json!({
            "names": [{"service": "s"}],
            "extra_keys": {"host": "h"},
            "constant_keys": {"c": "v"},
            "headers": [{"key": "k", "names": ["n"], "required_match": false}],
            "someFutureField": 1,
        }));
        assert_eq!(b.extra_keys.host, "h");
        assert_eq!(b.constant_keys["c"], "v");
    }

    /// grpc-go's TestRLSKey: the ten cases.
    #[test]
    fn rls_key_cases() {
        let map = KeyBuilderMap::new(&[good1(), good2()]).unwrap();
        let cases: [(&str, Metadata, &str); 10] = [
            ("/notFoundService/method", md(&[("n1", "v1")]), ""),
            ("/gBar/notFoundMethod", md(&[("n1", "v1")]), ""),
            ("/gBar/method1", md(&[("notmatchingkey", "v")]), ""),
            ("/gBar/method1", md(&[("n1", "v1")]), "k1=v1"),
            ("/gBar/method1", md(&[("n2", "v2"), ("n1", "v1")]), "k1=v1"),
            ("/gFoobar/method1", md(&[("notmatchingkey", "v")]), ""),
            ("/gFoobar/method1", md(&[("n1", "v1")]), "k1=v1"),
            (
                "/gFoobar/method1",
                md(&[("n2", "v2"), ("n1", "v1")]),
                "k1=v1",
            ),
            (
                "/gFoo/method1",
                md(&[("n2", "v2"), ("n1", "v1")]),
                "const-key-1=const-val-1,const-key-2=const-val-2,host=dummy-host,k1=v1,k2=v1,method=method1,service=gFoo",
            ),
            (
                "/gBar/method1",
                md(&[("n1", "v1"), ("n1", "v2"), ("n1", "v3")]),
                "k1=v1,v2,v3",
            ),
        ];
        for (path, metadata, want) in cases {
            let keys = map.build_keys(path, "dummy-host", &metadata).unwrap();
            assert_eq!(keys.to_string(), want, "{path} {metadata:?}");
            assert_eq!(keys.string_len(), want.len());
        }
        // The multi-valued header is one value, not three keys.
        let keys = map
            .build_keys("/gBar/method1", "h", &md(&[("n1", "v1"), ("n1", "v2")]))
            .unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys.get("k1"), Some("v1,v2"));
    }

    #[test]
    fn header_names_match_case_insensitively_and_in_matcher_order() {
        let map = KeyBuilderMap::new(&[builder(json!({
            "names": [{"service": "s"}],
            "headers": [{"key": "k", "names": ["X-First", "x-second"]}],
        }))])
        .unwrap();
        let keys = map
            .build_keys("/s/m", "", &md(&[("x-second", "2"), ("x-first", "1")]))
            .unwrap();
        assert_eq!(keys.get("k"), Some("1"));
        let keys = map
            .build_keys("/s/m", "", &md(&[("x-second", "2")]))
            .unwrap();
        assert_eq!(keys.get("k"), Some("2"));
    }

    #[test]
    fn invalid_method_paths_are_refused() {
        let map = KeyBuilderMap::new(&[good1()]).unwrap();
        for bad in ["service/method", "/service", "/service/path/to/method", ""] {
            let err = map.build_keys(bad, "h", &Metadata::new()).unwrap_err();
            assert_eq!(err.path, bad);
            assert!(
                err.to_string()
                    .contains("is not of the form '/service/method'")
            );
        }
        assert_eq!(
            MethodPath::parse("/service/method").unwrap(),
            MethodPath {
                service: "service",
                method: "method"
            }
        );
    }

    #[test]
    fn map_to_string_is_sorted_whatever_the_insertion_order() {
        assert_eq!(KeyMap::new().to_string(), "");
        let forward: KeyMap = [("a", "1"), ("b", "2"), ("c", "3")].into_iter().collect();
        let backward: KeyMap = [("c", "3"), ("b", "2"), ("a", "1")].into_iter().collect();
        assert_eq!(forward.to_string(), "a=1,b=2,c=3");
        assert_eq!(forward, backward);
        let mut m = forward.clone();
        m.insert("b", "two");
        assert_eq!(m.to_string(), "a=1,b=two,c=3");
        let btree: BTreeMap<String, String> = m.clone().into();
        assert_eq!(KeyMap::from(btree), m);
    }

    #[test]
    fn builder_map_equality_is_structural() {
        let a = KeyBuilderMap::new(&[good1(), good2()]).unwrap();
        let b = KeyBuilderMap::new(&[good2(), good1()]).unwrap();
        assert_eq!(a, b);
        let mut changed = good1();
        changed.headers.reverse();
        assert_ne!(a, KeyBuilderMap::new(&[changed, good2()]).unwrap());
        let mut changed = good1();
        changed.extra_keys.host = "other".into();
        assert_ne!(a, KeyBuilderMap::new(&[changed, good2()]).unwrap());
    }
}
