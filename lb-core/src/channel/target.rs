//! Channel targets: `scheme://authority/endpoint`, `scheme:endpoint` or a bare
//! `host:port`, as gRPC's naming doc spells them.
//!
//! ```text
//!   dns:///example.com:443        scheme "dns", authority "", endpoint "example.com:443"
//!   dns://8.8.8.8/example.com     scheme "dns", authority "8.8.8.8", endpoint "example.com"
//!   unix:/run/app.sock            scheme "unix", path "/run/app.sock" (opaque form)
//!   ipv4:10.0.0.1:80,10.0.0.2:80  scheme "ipv4", endpoint "10.0.0.1:80,10.0.0.2:80"
//!   example.com:443               no registered scheme: dns:///example.com:443
//! ```

use std::fmt;

/// The scheme used for a target that names no registered scheme.
pub const DEFAULT_SCHEME: &str = "dns";

/// A parsed target.
///
/// # Examples
///
/// ```
/// use lb_core::channel::ResolverRegistry;
/// let reg = ResolverRegistry::with_builtins();
/// let t = reg.parse_target("dns:///example.com:443")?;
/// assert_eq!((t.scheme(), t.authority(), t.endpoint()), ("dns", "", "example.com:443"));
/// let t = reg.parse_target("example.com:443")?;
/// assert_eq!((t.scheme(), t.endpoint()), ("dns", "example.com:443"));
/// let t = reg.parse_target("unix:/run/app.sock")?;
/// assert_eq!((t.scheme(), t.path()), ("unix", "/run/app.sock"));
/// # Ok::<(), lb_core::channel::ChannelError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    original: String,
    scheme: String,
    authority: String,
    path: String,
}

impl Target {
    /// The target as the user wrote it.
    pub fn original(&self) -> &str {
        &self.original
    }

    /// The scheme, lower-case: it names the resolver.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The URI authority (`dns://8.8.8.8/…` gives `8.8.8.8`); usually empty.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The path as written: `/example.com:443` for `dns:///example.com:443`,
    /// `/run/app.sock` for `unix:/run/app.sock`, `a:1` for `ipv4:a:1`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path without its leading `/`: what most resolvers resolve.
    pub fn endpoint(&self) -> &str {
        self.path.strip_prefix('/').unwrap_or(&self.path)
    }

    /// Parses `text`; `registered` says whether a scheme has a resolver.
    pub(crate) fn parse(text: &str, registered: impl Fn(&str) -> bool) -> Result<Self, ParseError> {
        if text.trim().is_empty() {
            return Err(ParseError::Invalid("the target is empty".into()));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ParseError::Invalid(
                "the target must not contain whitespace or control characters".into(),
            ));
        }
        if let Some((scheme, rest)) = text.split_once("://") {
            if !is_scheme(scheme) {
                return Err(ParseError::Invalid(format!(
                    "{scheme:?} is not a URI scheme"
                )));
            }
            let scheme = scheme.to_ascii_lowercase();
            if !registered(&scheme) {
                return Err(ParseError::UnknownScheme(scheme));
            }
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            };
            return Ok(Self {
                original: text.into(),
                scheme,
                authority: authority.into(),
                path: path.into(),
            });
        }
        if let Some((scheme, rest)) = text.split_once(':') {
            let lower = scheme.to_ascii_lowercase();
            if is_scheme(scheme) && registered(&lower) {
                return Ok(Self {
                    original: text.into(),
                    scheme: lower,
                    authority: String::new(),
                    path: rest.into(),
                });
            }
        }
        if !registered(DEFAULT_SCHEME) {
            return Err(ParseError::UnknownScheme(DEFAULT_SCHEME.into()));
        }
        Ok(Self {
            original: text.into(),
            scheme: DEFAULT_SCHEME.into(),
            authority: String::new(),
            path: format!("/{text}"),
        })
    }
}

impl Target {
    /// The target as the `grpc.target` metric label shows it (gRFC A66): as
    /// written when it names its scheme, else with the default scheme's
    /// `dns:///` in front.
    pub(crate) fn metrics_label(&self) -> String {
        let has_scheme = self
            .original
            .strip_prefix(self.scheme.as_str())
            .is_some_and(|rest| rest.starts_with(':'));
        if has_scheme {
            self.original.clone()
        } else {
            format!("{}:///{}", self.scheme, self.original)
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("scheme", &self.scheme)
            .field("authority", &self.authority)
            .field("path", &self.path)
            .finish()
    }
}

/// Why a target did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ParseError {
    Invalid(String),
    UnknownScheme(String),
}

/// RFC 3986: `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// Splits `host:port`, `[v6]:port`, `[v6]`, a bare IPv6 literal or a bare host into
/// host and port, using `default_port` when none is given.
pub(crate) fn split_host_port(text: &str, default_port: u16) -> Result<(String, u16), String> {
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("bad port {p:?} in {text:?}: must be a number from 0 to 65535"))
    };
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("missing ']' in {text:?}"))?;
        if host.is_empty() {
            return Err(format!("empty host in {text:?}"));
        }
        return match after {
            "" => Ok((host.into(), default_port)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((host.into(), port(p)?)),
                None => Err(format!("unexpected {after:?} after ']' in {text:?}")),
            },
        };
    }
    match text.matches(':').count() {
        0 if !text.is_empty() => Ok((text.into(), default_port)),
        0 => Err("empty host".into()),
        1 => {
            let (host, p) = text.split_once(':').expect("one colon");
            if host.is_empty() {
                return Err(format!("empty host in {text:?}"));
            }
            Ok((host.into(), port(p)?))
        }
        // More than one colon and no brackets: a bare IPv6 literal.
        _ => Ok((text.into(), default_port)),
    }
}

/// Formats a host and port as an address: `[v6]:port` for IPv6 literals.
pub(crate) fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Target, ParseError> {
        Target::parse(text, |s| {
            matches!(s, "dns" | "passthrough" | "unix" | "ipv4" | "ipv6")
        })
    }

    #[test]
    fn uri_forms_split_into_scheme_authority_and_path() {
        let t = parse("dns://8.8.8.8:53/example.com:443").unwrap();
        assert_eq!(
            (t.scheme(), t.authority(), t.endpoint()),
            ("dns", "8.8.8.8:53", "example.com:443")
        );
        let t = parse("PASSTHROUGH:///10.0.0.1:80").unwrap();
        assert_eq!((t.scheme(), t.endpoint()), ("passthrough", "10.0.0.1:80"));
        let t = parse("unix:///run/app.sock").unwrap();
        assert_eq!(t.path(), "/run/app.sock");
        let t = parse("unix:relative.sock").unwrap();
        assert_eq!((t.scheme(), t.path()), ("unix", "relative.sock"));
    }

    #[test]
    fn bare_host_port_falls_back_to_dns() {
        for text in ["localhost:50051", "example.com", "[::1]:443", "10.0.0.1:80"] {
            let t = parse(text).unwrap();
            assert_eq!((t.scheme(), t.endpoint()), ("dns", text), "{text}");
        }
    }

    #[test]
    fn bad_targets_name_the_problem() {
        assert_eq!(
            parse("xds:///svc"),
            Err(ParseError::UnknownScheme("xds".into()))
        );
        assert!(matches!(parse(""), Err(ParseError::Invalid(m)) if m.contains("empty")));
        assert!(matches!(parse("a b:1"), Err(ParseError::Invalid(m)) if m.contains("whitespace")));
        assert!(matches!(parse("1x:///a"), Err(ParseError::Invalid(m)) if m.contains("scheme")));
    }

    #[test]
    fn host_port_splitting() {
        assert_eq!(split_host_port("a:1", 443), Ok(("a".into(), 1)));
        assert_eq!(split_host_port("a", 443), Ok(("a".into(), 443)));
        assert_eq!(split_host_port("[::1]:8", 443), Ok(("::1".into(), 8)));
        assert_eq!(split_host_port("[::1]", 443), Ok(("::1".into(), 443)));
        assert_eq!(split_host_port("::1", 443), Ok(("::1".into(), 443)));
        for bad in ["", ":1", "a:x", "a:70000", "[::1", "[]:1", "[::1]x"] {
            assert!(split_host_port(bad, 443).is_err(), "{bad:?}");
        }
        assert_eq!(join_host_port("::1", 8), "[::1]:8");
        assert_eq!(join_host_port("a", 8), "a:8");
    }
}
