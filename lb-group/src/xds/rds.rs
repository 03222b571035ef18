//! Route configuration (RDS) resources, read from
//! `envoy.config.route.v3.RouteConfiguration` into the [`routing`] types, with
//! gRFC A28's rules (and A31's timeouts, A42's hash policies, A44's retries,
//! A77's cluster specifier plugins).
//!
//! Routes gRPC cannot serve are left out rather than failing the resource: a
//! route matching query parameters, one with an unsupported path matcher, one
//! naming its cluster by header, and one whose optional plugin is not
//! supported. A route configuration is invalid (NACKed) when a regex does not
//! compile, weighted clusters weigh nothing or overflow, a route names a
//! plugin the configuration does not list, a required plugin is not
//! supported, or a retry policy is out of range. Actions other than routing
//! (redirects, direct responses, non-forwarding) fail their calls.
//!
//! [`routing`]: super::routing

use std::collections::BTreeMap;
use std::time::Duration;

use lb_core::protowire::wire;
use lb_core::{Code, DecodeError};
use regex::Regex;

use super::ads::{ROUTE_TYPE, ResourceType};
use super::pb;
use super::routing::{
    HashPolicy, HeaderMatcher, HeaderTest, PathMatcher, RetryConfig, Route, RouteAction,
    RouteMatch, VirtualHost,
};

/// The RLS cluster specifier plugin's config type (gRFC A77).
pub const RLS_PLUGIN_TYPE: &str = "type.googleapis.com/grpc.lookup.v1.RouteLookupClusterSpecifier";

/// A route configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteConfig {
    /// The virtual hosts.
    pub virtual_hosts: Vec<VirtualHost>,
    /// Cluster specifier plugins by name: the encoded
    /// `grpc.lookup.v1.RouteLookupConfig` of each RLS plugin.
    pub plugins: BTreeMap<String, Vec<u8>>,
}

/// The [`ResourceType`] of route configuration resources.
#[derive(Clone, Copy, Debug, Default)]
pub struct RouteConfigType;

impl ResourceType for RouteConfigType {
    type Resource = RouteConfig;

    fn type_url(&self) -> &'static str {
        ROUTE_TYPE
    }

    fn decode(&self, bytes: &[u8]) -> Result<(String, RouteConfig), (Option<String>, String)> {
        let (name, config) = decode_route_config(bytes)?;
        if name.is_empty() {
            return Err((None, "name is empty".to_owned()));
        }
        Ok((name, config))
    }
}

/// Decodes a `RouteConfiguration` (an RDS resource, or one inline in a
/// Listener): its name and contents.
///
/// # Errors
///
/// Malformed or invalid, with the name if it could be read.
pub fn decode_route_config(
    bytes: &[u8],
) -> Result<(String, RouteConfig), (Option<String>, String)> {
    let raw = read_route_config(bytes).map_err(|e| (None, e.to_string()))?;
    let name = raw.name.clone();
    let named = |e: String| (Some(name.clone()).filter(|n| !n.is_empty()), e);
    let mut plugins = BTreeMap::new();
    let mut optional_unsupported = Vec::new();
    for p in raw.plugins {
        if p.type_url == RLS_PLUGIN_TYPE {
            plugins.insert(p.name, p.config);
        } else if p.optional {
            optional_unsupported.push(p.name);
        } else {
            return Err(named(format!(
                "cluster specifier plugin {:?} has unsupported type {}",
                p.name, p.type_url
            )));
        }
    }
    let mut virtual_hosts = Vec::new();
    for vh in raw.virtual_hosts {
        let vh_retry = vh.retry.map(retry_config).transpose().map_err(&named)?;
        let mut routes = Vec::new();
        for r in vh.routes {
            if let Some(route) =
                route(r, &plugins, &optional_unsupported, vh_retry.as_ref()).map_err(&named)?
            {
                routes.push(route);
            }
        }
        virtual_hosts.push(VirtualHost {
            name: vh.name,
            domains: vh.domains,
            routes,
        });
    }
    Ok((
        name,
        RouteConfig {
            virtual_hosts,
            plugins,
        },
    ))
}

/// One route, or `None` for a route gRPC leaves out.
fn route(
    r: RawRoute,
    plugins: &BTreeMap<String, Vec<u8>>,
    optional_unsupported: &[String],
    vh_retry: Option<&RetryConfig>,
) -> Result<Option<Route>, String> {
    let Some(m) = r.matcher else {
        return Err("a route has no match".to_owned());
    };
    if m.query_parameters || m.unsupported_path {
        return Ok(None);
    }
    let path = match m.path {
        Some(RawPath::Prefix(p)) => PathMatcher::Prefix(p),
        Some(RawPath::Exact(p)) => PathMatcher::Exact(p),
        Some(RawPath::Regex(re)) => PathMatcher::Regex(compile(&re)?),
        None => return Err("a route match has no path specifier".to_owned()),
    };
    let mut headers = Vec::with_capacity(m.headers.len());
    for h in m.headers {
        let test = match h.test {
            RawHeaderTest::Exact(s) => HeaderTest::Exact(s),
            RawHeaderTest::Regex(re) => HeaderTest::Regex(compile(&re)?),
            RawHeaderTest::Range(start, end) => HeaderTest::Range(start, end),
            RawHeaderTest::Present(p) => HeaderTest::Present(p),
            RawHeaderTest::Prefix(s) => HeaderTest::Prefix(s),
            RawHeaderTest::Suffix(s) => HeaderTest::Suffix(s),
            RawHeaderTest::Contains(s) => HeaderTest::Contains(s),
            RawHeaderTest::None => return Err(format!("header matcher {:?} has no test", h.name)),
        };
        headers.push(HeaderMatcher {
            name: h.name.to_ascii_lowercase(),
            test,
            invert: h.invert,
            ignore_case: h.ignore_case,
        });
    }
    let matcher = RouteMatch {
        path,
        case_sensitive: m.case_sensitive.unwrap_or(true),
        headers,
        fraction_per_million: m
            .fraction
            .map(|(n, d)| pb::per_million(n, d))
            .transpose()
            .map_err(|d| format!("fraction denominator {d} is unknown"))?,
    };
    let Some(action) = r.action else {
        return Ok(Some(Route::new(matcher, RouteAction::NonForwarding)));
    };
    let target = match action.target {
        RawTarget::Cluster(c) if c.is_empty() => {
            return Err("a route's cluster is empty".to_owned());
        }
        RawTarget::Cluster(c) => RouteAction::Cluster(c),
        RawTarget::Weighted(clusters) => {
            let total: u64 = clusters.iter().map(|(_, w)| u64::from(*w)).sum();
            if total == 0 {
                return Err("weighted clusters weigh nothing".to_owned());
            }
            if total > u64::from(u32::MAX) {
                return Err("weighted cluster weights sum past 2^32 - 1".to_owned());
            }
            RouteAction::Weighted(clusters.into_iter().filter(|(_, w)| *w > 0).collect())
        }
        RawTarget::Plugin(name) if plugins.contains_key(&name) => RouteAction::Plugin(name),
        RawTarget::Plugin(name) if optional_unsupported.contains(&name) => return Ok(None),
        RawTarget::Plugin(name) => {
            return Err(format!(
                "a route names cluster specifier plugin {name:?}, which is not listed"
            ));
        }
        RawTarget::Unsupported => return Ok(None),
    };
    let retry = match action.retry {
        Some(raw) => Some(retry_config(raw)?),
        None => vh_retry.cloned(),
    };
    Ok(Some(Route {
        matcher,
        action: target,
        max_stream_duration: action.max_stream_duration,
        hash_policies: action.hash_policies,
        retry,
    }))
}

fn compile(re: &str) -> Result<Regex, String> {
    Regex::new(re).map_err(|e| format!("regex {re:?} does not compile: {e}"))
}

fn retry_config(raw: RawRetry) -> Result<RetryConfig, String> {
    let retry_on = raw
        .retry_on
        .split(',')
        .filter_map(|c| match c.trim() {
            "cancelled" => Some(Code::Cancelled),
            "deadline-exceeded" => Some(Code::DeadlineExceeded),
            "internal" => Some(Code::Internal),
            "resource-exhausted" => Some(Code::ResourceExhausted),
            "unavailable" => Some(Code::Unavailable),
            // Envoy's other conditions do not apply to gRPC calls.
            _ => None,
        })
        .collect();
    let num_retries = raw.num_retries.unwrap_or(1);
    if num_retries == 0 {
        return Err("retry policy num_retries is 0".to_owned());
    }
    let base = raw.base_interval.unwrap_or(Duration::from_millis(25));
    if base.is_zero() {
        return Err("retry backoff base_interval is 0".to_owned());
    }
    let max = raw.max_interval.unwrap_or(base * 10);
    if max < base {
        return Err("retry backoff max_interval is below base_interval".to_owned());
    }
    Ok(RetryConfig {
        retry_on,
        max_attempts: num_retries.saturating_add(1),
        base_interval: base,
        max_interval: max,
    })
}

// ----- The messages as read -----

#[derive(Default)]
struct RawRouteConfig {
    name: String,
    virtual_hosts: Vec<RawVirtualHost>,
    plugins: Vec<RawPlugin>,
}

struct RawPlugin {
    name: String,
    type_url: String,
    /// The plugin's config message (for RLS: its `route_lookup_config`).
    config: Vec<u8>,
    optional: bool,
}

#[derive(Default)]
struct RawVirtualHost {
    name: String,
    domains: Vec<String>,
    routes: Vec<RawRoute>,
    retry: Option<RawRetry>,
}

#[derive(Default)]
struct RawRoute {
    matcher: Option<RawMatch>,
    /// `None`: a non-routing action.
    action: Option<RawAction>,
}

#[derive(Default)]
struct RawMatch {
    path: Option<RawPath>,
    unsupported_path: bool,
    case_sensitive: Option<bool>,
    fraction: Option<(u32, u64)>,
    headers: Vec<RawHeader>,
    query_parameters: bool,
}

enum RawPath {
    Prefix(String),
    Exact(String),
    Regex(String),
}

struct RawHeader {
    name: String,
    test: RawHeaderTest,
    invert: bool,
    ignore_case: bool,
}

enum RawHeaderTest {
    None,
    Exact(String),
    Regex(String),
    Range(i64, i64),
    Present(bool),
    Prefix(String),
    Suffix(String),
    Contains(String),
}

struct RawAction {
    target: RawTarget,
    max_stream_duration: Option<Duration>,
    hash_policies: Vec<HashPolicy>,
    retry: Option<RawRetry>,
}

enum RawTarget {
    Cluster(String),
    Weighted(Vec<(String, u32)>),
    Plugin(String),
    Unsupported,
}

#[derive(Default)]
struct RawRetry {
    retry_on: String,
    num_retries: Option<u32>,
    base_interval: Option<Duration>,
    max_interval: Option<Duration>,
}

fn read_route_config(bytes: &[u8]) -> Result<RawRouteConfig, DecodeError> {
    let mut out = RawRouteConfig::default();
    pb::fields(bytes, 0, |field, wt, r| {
        match (field, wt) {
            (1, wire::LEN) => out.name = r.string(field)?,
            (2, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                out.virtual_hosts.push(read_virtual_host(b, base)?);
            }
            (12, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                out.plugins.push(read_plugin(b, base)?);
            }
            _ => r.skip(field, wt)?,
        }
        Ok(())
    })?;
    Ok(out)
}

fn read_plugin(bytes: &[u8], base: usize) -> Result<RawPlugin, DecodeError> {
    let mut p = RawPlugin {
        name: String::new(),
        type_url: String::new(),
        config: Vec::new(),
        optional: false,
    };
    pb::fields(bytes, base, |field, wt, r| {
        match (field, wt) {
            // extension: TypedExtensionConfig { name = 1, typed_config = 2 (Any) }
            (1, wire::LEN) => {
                let (base, ext) = r.len_delimited(field)?;
                pb::fields(ext, base, |f, w, e| {
                    match (f, w) {
                        (1, wire::LEN) => p.name = e.string(f)?,
                        (2, wire::LEN) => {
                            let (base, any) = e.len_delimited(f)?;
                            pb::fields(any, base, |af, aw, a| {
                                match (af, aw) {
                                    (1, wire::LEN) => p.type_url = a.string(af)?,
                                    // RouteLookupClusterSpecifier { route_lookup_config = 1 }
                                    (2, wire::LEN) => {
                                        let (base, v) = a.len_delimited(af)?;
                                        pb::fields(v, base, |vf, vw, vr| {
                                            match (vf, vw) {
                                                (1, wire::LEN) => {
                                                    p.config = vr.len_delimited(vf)?.1.to_vec()
                                                }
                                                _ => vr.skip(vf, vw)?,
                                            }
                                            Ok(())
                                        })?;
                                    }
                                    _ => a.skip(af, aw)?,
                                }
                                Ok(())
                            })?;
                        }
                        _ => e.skip(f, w)?,
                    }
                    Ok(())
                })?;
            }
            (2, wire::VARINT) => p.optional = r.varint(field)? != 0,
            _ => r.skip(field, wt)?,
        }
        Ok(())
    })?;
    Ok(p)
}

fn read_virtual_host(bytes: &[u8], base: usize) -> Result<RawVirtualHost, DecodeError> {
    let mut vh = RawVirtualHost::default();
    pb::fields(bytes, base, |field, wt, r| {
        match (field, wt) {
            (1, wire::LEN) => vh.name = r.string(field)?,
            (2, wire::LEN) => vh.domains.push(r.string(field)?),
            (3, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                vh.routes.push(read_route(b, base)?);
            }
            (16, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                vh.retry = Some(read_retry(b, base)?);
            }
            _ => r.skip(field, wt)?,
        }
        Ok(())
    })?;
    Ok(vh)
}

fn read_route(bytes: &[u8], base: usize) -> Result<RawRoute, DecodeError> {
    let mut route = RawRoute::default();
    pb::fields(bytes, base, |field, wt, r| {
        match (field, wt) {
            (1, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                route.matcher = Some(read_match(b, base)?);
            }
            (2, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                route.action = Some(read_action(b, base)?);
            }
            _ => r.skip(field, wt)?,
        }
        Ok(())
    })?;
    Ok(route)
}

fn read_match(bytes: &[u8], base: usize) -> Result<RawMatch, DecodeError> {
    let mut m = RawMatch::default();
    pb::fields(bytes, base, |field, wt, r| {
        match (field, wt) {
            (1, wire::LEN) => m.path = Some(RawPath::Prefix(r.string(field)?)),
            (2, wire::LEN) => m.path = Some(RawPath::Exact(r.string(field)?)),
            (10, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                m.path = Some(RawPath::Regex(read_regex(b, base)?));
            }
            (12 | 14 | 15, wire::LEN) => {
                r.len_delimited(field)?;
                m.unsupported_path = true;
            }
            (4, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                m.case_sensitive = Some(pb::wrapped(b, base)? != 0);
            }
            (9, wire::LEN) => {
                // RuntimeFractionalPercent { default_value = 1: FractionalPercent }
                let (base, b) = r.len_delimited(field)?;
                let mut fraction = (0, 0);
                pb::fields(b, base, |f, w, fr| {
                    match (f, w) {
                        (1, wire::LEN) => {
                            let (base, pct) = fr.len_delimited(f)?;
                            fraction = pb::fraction(pct, base)?;
                        }
                        _ => fr.skip(f, w)?,
                    }
                    Ok(())
                })?;
                m.fraction = Some(fraction);
            }
            (6, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                m.headers.push(read_header(b, base)?);
            }
            (7, wire::LEN) => {
                r.len_delimited(field)?;
                m.query_parameters = true;
            }
            _ => r.skip(field, wt)?,
        }
        Ok(())
    })?;
    Ok(m)
}

/// `RegexMatcher.regex`.
fn read_regex(bytes: &[u8], base: usize) -> Result<String, DecodeError> {
    let mut re = String::new();
    pb::fields(bytes, base, |f, w, r| {
        match (f, w) {
            (2, wire::LEN) => re = r.string(f)?,
            _ => r.skip(f, w)?,
        }
        Ok(())
    })?;
    Ok(re)
}

fn read_header(bytes: &[u8], base: usize) -> Result<RawHeader, DecodeError> {
    let mut h = RawHeader {
        name: String::new(),
        test: RawHeaderTest::None,
        invert: false,
        ignore_case: false,
    };
    pb::fields(bytes, base, |field, wt, r| {
        match (field, wt) {
            (1, wire::LEN) => h.name = r.string(field)?,
            (4, wire::LEN) => h.test = RawHeaderTest::Exact(r.string(field)?),
            (11, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                h.test = RawHeaderTest::Regex(read_regex(b, base)?);
            }
            (6, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                let (mut start, mut end) = (0i64, 0i64);
                pb::fields(b, base, |f, w, rr| {
                    match (f, w) {
                        (1, wire::VARINT) => start = rr.varint(f)? as i64,
                        (2, wire::VARINT) => end = rr.varint(f)? as i64,
                        _ => rr.skip(f, w)?,
                    }
                    Ok(())
                })?;
                h.test = RawHeaderTest::Range(start, end);
            }
            (7, wire::VARINT) => h.test = RawHeaderTest::Present(r.varint(field)? != 0),
            (9, wire::LEN) => h.test = RawHeaderTest::Prefix(r.string(field)?),
            (10, wire::LEN) => h.test = RawHeaderTest::Suffix(r.string(field)?),
            (12, wire::LEN) => h.test = RawHeaderTest::Contains(r.string(field)?),
            (13, wire::LEN) => {
                // StringMatcher
                let (base, b) = r.len_delimited(field)?;
                pb::fields(b, base, |f, w, s| {
                    match (f, w) {
                        (1, wire::LEN) => h.test = RawHeaderTest::Exact(s.string(f)?),
                        (2, wire::LEN) => h.test = RawHeaderTest::Prefix(s.string(f)?),
                        (3, wire::LEN) => h.test = RawHeaderTest::Suffix(s.string(f)?),
                        (5, wire::LEN) => {
                            let (base, re) = s.len_delimited(f)?;
                            h.test = RawHeaderTest::Regex(read_regex(re, base)?);
                        }
                        (7, wire::LEN) => h.test = RawHeaderTest::Contains(s.string(f)?),
                        (6, wire::VARINT) => h.ignore_case = s.varint(f)? != 0,
                        _ => s.skip(f, w)?,
                    }
                    Ok(())
                })?;
            }
            (8, wire::VARINT) => h.invert = r.varint(field)? != 0,
            _ => r.skip(field, wt)?,
        }
        Ok(())
    })?;
    Ok(h)
}

fn read_action(bytes: &[u8], base: usize) -> Result<RawAction, DecodeError> {
    let mut a = RawAction {
        target: RawTarget::Unsupported,
        max_stream_duration: None,
        hash_policies: Vec::new(),
        retry: None,
    };
    let mut header_max = None;
    pb::fields(bytes, base, |field, wt, r| {
        match (field, wt) {
            (1, wire::LEN) => a.target = RawTarget::Cluster(r.string(field)?),
            (2 | 39, wire::LEN) => {
                r.len_delimited(field)?;
                a.target = RawTarget::Unsupported;
            }
            (3, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                let mut clusters = Vec::new();
                pb::fields(b, base, |f, w, wr| {
                    match (f, w) {
                        (1, wire::LEN) => {
                            let (base, cw) = wr.len_delimited(f)?;
                            let (mut name, mut weight) = (String::new(), 0u32);
                            pb::fields(cw, base, |cf, cwt, c| {
                                match (cf, cwt) {
                                    (1, wire::LEN) => name = c.string(cf)?,
                                    (2, wire::LEN) => {
                                        let (base, v) = c.len_delimited(cf)?;
                                        weight = u32::try_from(pb::wrapped(v, base)?)
                                            .unwrap_or(u32::MAX);
                                    }
                                    _ => c.skip(cf, cwt)?,
                                }
                                Ok(())
                            })?;
                            clusters.push((name, weight));
                        }
                        _ => wr.skip(f, w)?,
                    }
                    Ok(())
                })?;
                a.target = RawTarget::Weighted(clusters);
            }
            (37, wire::LEN) => a.target = RawTarget::Plugin(r.string(field)?),
            (36, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                pb::fields(b, base, |f, w, d| {
                    match (f, w) {
                        (1, wire::LEN) => {
                            let (base, v) = d.len_delimited(f)?;
                            a.max_stream_duration = Some(pb::duration(v, base)?);
                        }
                        (2, wire::LEN) => {
                            let (base, v) = d.len_delimited(f)?;
                            header_max = Some(pb::duration(v, base)?);
                        }
                        _ => d.skip(f, w)?,
                    }
                    Ok(())
                })?;
            }
            (15, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                if let Some(p) = read_hash_policy(b, base)? {
                    a.hash_policies.push(p);
                }
            }
            (9, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                a.retry = Some(read_retry(b, base)?);
            }
            _ => r.skip(field, wt)?,
        }
        Ok(())
    })?;
    if header_max.is_some() {
        a.max_stream_duration = header_max;
    }
    Ok(a)
}

/// A hash policy gRPC supports (header, or the channel id), else `None`.
fn read_hash_policy(bytes: &[u8], base: usize) -> Result<Option<HashPolicy>, DecodeError> {
    let (mut header, mut channel_id, mut terminal) = (None, false, false);
    pb::fields(bytes, base, |field, wt, r| {
        match (field, wt) {
            (1, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                pb::fields(b, base, |f, w, h| {
                    match (f, w) {
                        (1, wire::LEN) => header = Some(h.string(f)?.to_ascii_lowercase()),
                        _ => h.skip(f, w)?,
                    }
                    Ok(())
                })?;
            }
            (6, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                pb::fields(b, base, |f, w, s| {
                    match (f, w) {
                        (1, wire::LEN) => channel_id = s.string(f)? == "io.grpc.channel_id",
                        _ => s.skip(f, w)?,
                    }
                    Ok(())
                })?;
            }
            (4, wire::VARINT) => terminal = r.varint(field)? != 0,
            _ => r.skip(field, wt)?,
        }
        Ok(())
    })?;
    Ok(match (header, channel_id) {
        (Some(name), _) => Some(HashPolicy::Header { name, terminal }),
        (None, true) => Some(HashPolicy::ChannelId { terminal }),
        (None, false) => None,
    })
}

fn read_retry(bytes: &[u8], base: usize) -> Result<RawRetry, DecodeError> {
    let mut retry = RawRetry::default();
    pb::fields(bytes, base, |field, wt, r| {
        match (field, wt) {
            (1, wire::LEN) => retry.retry_on = r.string(field)?,
            (2, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                retry.num_retries = Some(u32::try_from(pb::wrapped(b, base)?).unwrap_or(u32::MAX));
            }
            (8, wire::LEN) => {
                let (base, b) = r.len_delimited(field)?;
                pb::fields(b, base, |f, w, bo| {
                    match (f, w) {
                        (1, wire::LEN) => {
                            let (base, d) = bo.len_delimited(f)?;
                            retry.base_interval = Some(pb::duration(d, base)?);
                        }
                        (2, wire::LEN) => {
                            let (base, d) = bo.len_delimited(f)?;
                            retry.max_interval = Some(pb::duration(d, base)?);
                        }
                        _ => bo.skip(f, w)?,
                    }
                    Ok(())
                })?;
            }
            _ => r.skip(field, wt)?,
        }
        Ok(())
    })?;
    Ok(retry)
}

#[cfg(test)]
mod tests;
