//! Choosing a route for a call (gRFC A28): the virtual host whose domains match
//! the channel's authority, then the first route whose path, header and
//! runtime-fraction matchers all match the call. This is the heart of the
//! xDS config selector; it is pure, and takes its randomness as an argument.
//!
//! ```
//! use lb_group::xds::routing::{
//!     PathMatcher, Route, RouteAction, RouteMatch, VirtualHost, pick_virtual_host,
//! };
//! let hosts = vec![VirtualHost {
//!     name: "vh".into(),
//!     domains: vec!["*.example.com".into()],
//!     routes: vec![Route::new(
//!         RouteMatch::path(PathMatcher::Prefix("/pkg.Svc/".into()), true),
//!         RouteAction::Cluster("svc".into()),
//!     )],
//! }];
//! let host = pick_virtual_host(&hosts, "api.example.com").expect("a host matches");
//! let route = host.route_for("/pkg.Svc/Do", &|_| None, 0).expect("a route matches");
//! assert_eq!(route.action, RouteAction::Cluster("svc".into()));
//! ```

use regex::Regex;

/// A virtual host: the routes for a set of domains.
#[derive(Clone, Debug, PartialEq)]
pub struct VirtualHost {
    /// Its name, for logs.
    pub name: String,
    /// Exact names, or patterns with one `*` at either end, or `*` alone.
    pub domains: Vec<String>,
    /// The routes, tried in order.
    pub routes: Vec<Route>,
}

/// One route: when it applies and what it does.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// When it applies.
    pub matcher: RouteMatch,
    /// What it does.
    pub action: RouteAction,
    /// The longest a call may last (`grpc_timeout_header_max`, else
    /// `max_stream_duration`; gRFC A31).
    pub max_stream_duration: Option<std::time::Duration>,
    /// How ring hash hashes a call (gRFC A42), in order.
    pub hash_policies: Vec<HashPolicy>,
    /// Retries (gRFC A44): the route's own, else its virtual host's.
    pub retry: Option<RetryConfig>,
}

impl Route {
    /// A route with no timeout, hash policy or retry policy.
    pub fn new(matcher: RouteMatch, action: RouteAction) -> Self {
        Self {
            matcher,
            action,
            max_stream_duration: None,
            hash_policies: Vec::new(),
            retry: None,
        }
    }
}

/// A ring hash policy's source of a call's hash (gRFC A42).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashPolicy {
    /// A request header's value.
    Header {
        /// The header.
        name: String,
        /// Stop at this policy if it produced a hash.
        terminal: bool,
    },
    /// The channel's id (`filter_state` key `io.grpc.channel_id`): every call of
    /// a channel to one endpoint.
    ChannelId {
        /// Stop at this policy if it produced a hash.
        terminal: bool,
    },
}

/// A route's retry policy (gRFC A44).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryConfig {
    /// The gRPC status codes retried (`retry_on`, e.g. `unavailable`).
    pub retry_on: Vec<lb_core::Code>,
    /// Attempts in all (`num_retries` + 1).
    pub max_attempts: u32,
    /// The first backoff.
    pub base_interval: std::time::Duration,
    /// The longest backoff.
    pub max_interval: std::time::Duration,
}

/// What a route does with the calls it matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteAction {
    /// Sends them to one cluster.
    Cluster(String),
    /// Splits them over clusters by weight (each at least 1 in sum).
    Weighted(Vec<(String, u32)>),
    /// Lets a cluster specifier plugin choose, by its name in the route
    /// configuration (RLS, gRFC A77's route lookup specifier).
    Plugin(String),
    /// Fails them (a route for servers, or a redirect): UNAVAILABLE.
    NonForwarding,
}

/// When a route applies: every part must match.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteMatch {
    /// The path.
    pub path: PathMatcher,
    /// Whether the path matcher is case sensitive (default true).
    pub case_sensitive: bool,
    /// Header matchers.
    pub headers: Vec<HeaderMatcher>,
    /// The share of calls it applies to, per million (`None`: all).
    pub fraction_per_million: Option<u32>,
}

impl RouteMatch {
    /// A matcher on the path alone.
    pub fn path(path: PathMatcher, case_sensitive: bool) -> Self {
        Self {
            path,
            case_sensitive,
            headers: Vec::new(),
            fraction_per_million: None,
        }
    }
}

/// A path matcher.
#[derive(Clone, Debug)]
pub enum PathMatcher {
    /// The path starts with this.
    Prefix(String),
    /// The path is this.
    Exact(String),
    /// The whole path matches this regex (RE2 syntax, which Rust's `regex`
    /// shares for everything RE2 has).
    Regex(Regex),
}

/// A header matcher.
#[derive(Clone, Debug, PartialEq)]
pub struct HeaderMatcher {
    /// The header's name, lower case.
    pub name: String,
    /// The test on its value.
    pub test: HeaderTest,
    /// Match when the test fails instead.
    pub invert: bool,
    /// String tests ignore ASCII case (`StringMatcher.ignore_case`).
    pub ignore_case: bool,
}

/// The test a [`HeaderMatcher`] applies to a header's value.
#[derive(Clone, Debug)]
pub enum HeaderTest {
    /// Equal to this.
    Exact(String),
    /// The whole value matches this regex.
    Regex(Regex),
    /// An integer in `[start, end)`.
    Range(i64, i64),
    /// Present (`true`) or absent (`false`).
    Present(bool),
    /// Starts with this.
    Prefix(String),
    /// Ends with this.
    Suffix(String),
    /// Contains this.
    Contains(String),
}

impl HeaderMatcher {
    /// Whether a call whose header `name` has `value` (values of a repeated
    /// header joined with commas; `None`: absent) matches.
    pub fn matches(&self, value: Option<&str>) -> bool {
        // Compared in place: a header is matched on every call, so no copies.
        let eq = |a: &str, b: &str| {
            if self.ignore_case {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        let result = match (&self.test, value) {
            (HeaderTest::Present(want), v) => v.is_some() == *want,
            (_, None) => return false,
            (HeaderTest::Exact(s), Some(v)) => eq(v, s),
            (HeaderTest::Regex(re), Some(v)) => full_match(re, v),
            (HeaderTest::Range(start, end), Some(v)) => {
                v.parse::<i64>().is_ok_and(|n| *start <= n && n < *end)
            }
            (HeaderTest::Prefix(s), Some(v)) => v.get(..s.len()).is_some_and(|h| eq(h, s)),
            (HeaderTest::Suffix(s), Some(v)) => v
                .len()
                .checked_sub(s.len())
                .and_then(|i| v.get(i..))
                .is_some_and(|t| eq(t, s)),
            (HeaderTest::Contains(s), Some(v)) if self.ignore_case => {
                v.to_ascii_lowercase().contains(&s.to_ascii_lowercase())
            }
            (HeaderTest::Contains(s), Some(v)) => v.contains(s.as_str()),
        };
        result != self.invert
    }
}

impl PartialEq for PathMatcher {
    /// Regexes compare by their source text.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Prefix(a), Self::Prefix(b)) | (Self::Exact(a), Self::Exact(b)) => a == b,
            (Self::Regex(a), Self::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl PartialEq for HeaderTest {
    /// Regexes compare by their source text.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Exact(a), Self::Exact(b))
            | (Self::Prefix(a), Self::Prefix(b))
            | (Self::Suffix(a), Self::Suffix(b))
            | (Self::Contains(a), Self::Contains(b)) => a == b,
            (Self::Regex(a), Self::Regex(b)) => a.as_str() == b.as_str(),
            (Self::Range(a, b), Self::Range(c, d)) => (a, b) == (c, d),
            (Self::Present(a), Self::Present(b)) => a == b,
            _ => false,
        }
    }
}

fn full_match(re: &Regex, text: &str) -> bool {
    re.find(text)
        .is_some_and(|m| m.start() == 0 && m.end() == text.len())
}

impl VirtualHost {
    /// The first route that matches a call to `path`; `header` gives a header's
    /// value (binary `-bin` headers and `grpc-` ones are never matched, as gRPC
    /// asks: pass `None` for them). `random` is a uniform draw in `0..1_000_000`
    /// for runtime fractions.
    pub fn route_for(
        &self,
        path: &str,
        header: &dyn Fn(&str) -> Option<String>,
        random: u32,
    ) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.matcher.matches(path, header, random))
    }
}

impl RouteMatch {
    /// Whether a call matches: path, then headers, then the fraction.
    pub fn matches(
        &self,
        path: &str,
        header: &dyn Fn(&str) -> Option<String>,
        random: u32,
    ) -> bool {
        let path_ok = match &self.path {
            PathMatcher::Prefix(p) if self.case_sensitive => path.starts_with(p.as_str()),
            PathMatcher::Prefix(p) => path
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p)),
            PathMatcher::Exact(p) if self.case_sensitive => path == p,
            PathMatcher::Exact(p) => path.eq_ignore_ascii_case(p),
            PathMatcher::Regex(re) => full_match(re, path),
        };
        path_ok
            && self.headers.iter().all(|h| {
                // gRPC never matches binary headers; `content-type` is always
                // application/grpc.
                let value = if h.name.ends_with("-bin") {
                    None
                } else if h.name == "content-type" {
                    Some("application/grpc".to_owned())
                } else {
                    header(&h.name)
                };
                h.matches(value.as_deref())
            })
            && self.fraction_per_million.is_none_or(|f| random < f)
    }
}

/// The virtual host for `authority` (gRFC A28): an exact domain first, then the
/// longest `*.suffix`, then the longest `prefix.*`, then `*`. Matching ignores
/// case.
pub fn pick_virtual_host<'a>(hosts: &'a [VirtualHost], authority: &str) -> Option<&'a VirtualHost> {
    let authority = authority.to_ascii_lowercase();
    // (kind, length): kind 0 exact, 1 suffix, 2 prefix, 3 universal; lower wins,
    // then longer.
    let mut best: Option<((u8, std::cmp::Reverse<usize>), &VirtualHost)> = None;
    for host in hosts {
        for domain in &host.domains {
            let d = domain.to_ascii_lowercase();
            let rank = if d == "*" {
                Some(3)
            } else if let Some(suffix) = d.strip_prefix('*') {
                authority.ends_with(suffix).then_some(1)
            } else if let Some(prefix) = d.strip_suffix('*') {
                authority.starts_with(prefix).then_some(2)
            } else {
                (d == authority).then_some(0)
            };
            if let Some(kind) = rank {
                let key = (kind, std::cmp::Reverse(d.len()));
                if best.as_ref().is_none_or(|(k, _)| key < *k) {
                    best = Some((key, host));
                }
            }
        }
    }
    best.map(|(_, host)| host)
}

/// The cluster a weighted route sends one call to, with `random` a uniform
/// draw in `0..total` where `total` is the sum of the weights.
pub fn pick_weighted(clusters: &[(String, u32)], random: u64) -> Option<&str> {
    let mut acc = 0u64;
    for (name, weight) in clusters {
        acc += u64::from(*weight);
        if random < acc {
            return Some(name);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, domains: &[&str]) -> VirtualHost {
        VirtualHost {
            name: name.into(),
            domains: domains.iter().map(|d| (*d).to_owned()).collect(),
            routes: Vec::new(),
        }
    }

    #[test]
    fn virtual_hosts_match_exact_then_suffix_then_prefix_then_any() {
        let hosts = [
            host("any", &["*"]),
            host("prefix", &["api.*"]),
            host("suffix", &["*.example.com"]),
            host("longer-suffix", &["*.eu.example.com"]),
            host("exact", &["api.eu.example.com"]),
        ];
        let pick = |a: &str| pick_virtual_host(&hosts, a).map(|h| h.name.as_str());
        assert_eq!(pick("api.eu.example.com"), Some("exact"));
        assert_eq!(pick("API.EU.example.COM"), Some("exact"), "case is ignored");
        assert_eq!(pick("x.eu.example.com"), Some("longer-suffix"));
        assert_eq!(pick("x.example.com"), Some("suffix"));
        assert_eq!(pick("api.other.org"), Some("prefix"));
        assert_eq!(pick("other.org"), Some("any"));
        assert!(pick_virtual_host(&hosts[1..3], "other.org").is_none());
    }

    #[test]
    fn paths_match_by_prefix_exact_regex_and_case() {
        let headers = |_: &str| None;
        let m = |p: PathMatcher, cs: bool, path: &str| {
            RouteMatch::path(p, cs).matches(path, &headers, 0)
        };
        assert!(m(
            PathMatcher::Prefix("/pkg.Svc/".into()),
            true,
            "/pkg.Svc/Do"
        ));
        assert!(!m(
            PathMatcher::Prefix("/pkg.svc/".into()),
            true,
            "/pkg.Svc/Do"
        ));
        assert!(m(
            PathMatcher::Prefix("/pkg.svc/".into()),
            false,
            "/pkg.Svc/Do"
        ));
        assert!(m(PathMatcher::Prefix(String::new()), true, "/anything"));
        assert!(m(
            PathMatcher::Exact("/pkg.Svc/Do".into()),
            true,
            "/pkg.Svc/Do"
        ));
        assert!(!m(
            PathMatcher::Exact("/pkg.Svc/Do".into()),
            true,
            "/pkg.Svc/Do2"
        ));
        assert!(m(
            PathMatcher::Exact("/PKG.svc/do".into()),
            false,
            "/pkg.Svc/Do"
        ));
        let re = Regex::new("/pkg\\.Svc/D.").unwrap();
        assert!(m(PathMatcher::Regex(re.clone()), true, "/pkg.Svc/Do"));
        assert!(
            !m(PathMatcher::Regex(re), true, "/pkg.Svc/Dox"),
            "the whole path must match"
        );
    }

    #[test]
    fn headers_and_fractions_narrow_a_route() {
        let header = |name: &str| match name {
            "x-user" => Some("alice".to_owned()),
            "x-n" => Some("42".to_owned()),
            "x-bin" => Some("raw".to_owned()),
            _ => None,
        };
        let with = |test: HeaderTest, name: &str, invert: bool| {
            let mut m = RouteMatch::path(PathMatcher::Prefix("/".into()), true);
            m.headers.push(HeaderMatcher {
                name: name.into(),
                test,
                invert,
                ignore_case: false,
            });
            m.matches("/s/m", &header, 0)
        };
        assert!(with(HeaderTest::Exact("alice".into()), "x-user", false));
        assert!(!with(HeaderTest::Exact("bob".into()), "x-user", false));
        assert!(with(HeaderTest::Exact("bob".into()), "x-user", true));
        assert!(with(HeaderTest::Prefix("al".into()), "x-user", false));
        assert!(with(HeaderTest::Suffix("ce".into()), "x-user", false));
        assert!(with(HeaderTest::Contains("lic".into()), "x-user", false));
        assert!(with(
            HeaderTest::Regex(Regex::new("a.*e").unwrap()),
            "x-user",
            false
        ));
        assert!(with(HeaderTest::Range(40, 43), "x-n", false));
        assert!(
            !with(HeaderTest::Range(40, 42), "x-n", false),
            "the end is exclusive"
        );
        assert!(with(HeaderTest::Present(true), "x-user", false));
        assert!(with(HeaderTest::Present(false), "x-absent", false));
        assert!(
            !with(HeaderTest::Exact("raw".into()), "x-bin", false),
            "binary headers never match"
        );
        assert!(with(
            HeaderTest::Exact("application/grpc".into()),
            "content-type",
            false
        ));
        assert!(
            !with(HeaderTest::Exact("x".into()), "x-absent", true),
            "an absent header fails even inverted"
        );

        let mut half = RouteMatch::path(PathMatcher::Prefix("/".into()), true);
        half.fraction_per_million = Some(500_000);
        assert!(half.matches("/s/m", &header, 499_999));
        assert!(!half.matches("/s/m", &header, 500_000));
    }

    #[test]
    fn the_first_matching_route_wins_and_weights_split_in_order() {
        let mut vh = host("vh", &["*"]);
        vh.routes = vec![
            Route::new(
                RouteMatch::path(PathMatcher::Exact("/s/special".into()), true),
                RouteAction::Cluster("special".into()),
            ),
            Route::new(
                RouteMatch::path(PathMatcher::Prefix("/s/".into()), true),
                RouteAction::Weighted(vec![("a".into(), 70), ("b".into(), 30)]),
            ),
        ];
        let none = |_: &str| None;
        assert_eq!(
            vh.route_for("/s/special", &none, 0).unwrap().action,
            RouteAction::Cluster("special".into())
        );
        let RouteAction::Weighted(w) = &vh.route_for("/s/other", &none, 0).unwrap().action else {
            panic!("the weighted route");
        };
        assert_eq!(pick_weighted(w, 0), Some("a"));
        assert_eq!(pick_weighted(w, 69), Some("a"));
        assert_eq!(pick_weighted(w, 70), Some("b"));
        assert_eq!(pick_weighted(w, 99), Some("b"));
        assert_eq!(pick_weighted(w, 100), None);
        assert!(vh.route_for("/t/x", &none, 0).is_none());
    }
}
