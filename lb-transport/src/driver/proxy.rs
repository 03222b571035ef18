//! HTTP CONNECT proxies: which proxy a connection uses, and the CONNECT exchange.
//!
//! Like grpc-go, the proxy comes from `grpc_proxy`, then `https_proxy`, then
//! `http_proxy` (lower or upper case), unless the target host matches `no_grpc_proxy`
//! or `no_proxy`; loopback targets never use a proxy.

use std::net::IpAddr;

/// How a transport chooses a proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ProxyMode {
    /// From the environment (the default).
    #[default]
    FromEnv,
    /// Always this proxy (`host:port`).
    Explicit(String),
    /// Never a proxy.
    Disabled,
}

impl ProxyMode {
    /// The proxy (`host:port`) to reach `target` (`host:port`) through, if any.
    pub fn proxy_for(&self, target: &str) -> Option<String> {
        match self {
            Self::Disabled => None,
            Self::Explicit(p) => Some(p.clone()),
            Self::FromEnv => proxy_from_env(target, |k| std::env::var(k).ok()),
        }
    }
}

/// The proxy for `target` given environment lookups `env`.
///
/// ```
/// use lb_transport::driver::proxy::proxy_from_env;
/// let env = |k: &str| match k {
///     "https_proxy" => Some("http://proxy.corp:3128".to_string()),
///     "no_proxy" => Some("internal.corp,.svc".to_string()),
///     _ => None,
/// };
/// assert_eq!(proxy_from_env("api.example.com:443", env), Some("proxy.corp:3128".into()));
/// assert_eq!(proxy_from_env("db.internal.corp:5432", env), None);
/// assert_eq!(proxy_from_env("a.b.svc:80", env), None);
/// assert_eq!(proxy_from_env("127.0.0.1:80", env), None);
/// ```
pub fn proxy_from_env(target: &str, env: impl Fn(&str) -> Option<String>) -> Option<String> {
    let host = host_of(target);
    if is_loopback(host) {
        return None;
    }
    let lookup = |name: &str| {
        env(name)
            .or_else(|| env(&name.to_ascii_uppercase()))
            .filter(|v| !v.is_empty())
    };
    let no_proxy = lookup("no_grpc_proxy").or_else(|| lookup("no_proxy"));
    if no_proxy.is_some_and(|list| excluded(host, &list)) {
        return None;
    }
    let proxy = lookup("grpc_proxy")
        .or_else(|| lookup("https_proxy"))
        .or_else(|| lookup("http_proxy"))?;
    let proxy = proxy
        .strip_prefix("http://")
        .unwrap_or(&proxy)
        .trim_end_matches('/');
    // `user:pass@` is not supported; drop it rather than send it in the clear.
    let proxy = proxy.rsplit('@').next().unwrap_or(proxy);
    Some(if proxy.contains(':') && !proxy.ends_with(']') {
        proxy.to_string()
    } else {
        format!("{proxy}:80")
    })
}

fn host_of(target: &str) -> &str {
    if let Some(rest) = target.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    target.rsplit_once(':').map_or(target, |(h, _)| h)
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `host` matches a `no_proxy` list: `*`, exact names, and suffixes (`.svc`
/// or `svc` both match `a.svc`).
fn excluded(host: &str, list: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let entry = entry.trim_start_matches('.');
            let entry = host_of(entry);
            host.eq_ignore_ascii_case(entry)
                || (host.len() > entry.len()
                    && host[host.len() - entry.len()..].eq_ignore_ascii_case(entry)
                    && host.as_bytes()[host.len() - entry.len() - 1] == b'.')
        })
}

/// The CONNECT request for `target`.
pub fn connect_request(target: &str) -> Vec<u8> {
    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: lb-transport\r\n\r\n")
        .into_bytes()
}

/// The most a proxy's answer may hold before its end.
pub const MAX_RESPONSE: usize = 16 << 10;

/// What the proxy's answer says so far.
#[derive(Debug, PartialEq, Eq)]
pub enum ProxyReply {
    /// More bytes needed.
    Partial,
    /// The tunnel is open; bytes after the answer's head (`usize` of them at its end)
    /// already belong to the tunnel.
    Established(usize),
}

/// Parses the proxy's answer to CONNECT.
///
/// # Errors
///
/// The answer is not HTTP, is not 2xx, or is larger than [`MAX_RESPONSE`].
pub fn parse_reply(buf: &[u8]) -> Result<ProxyReply, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE => {
            Err(format!("proxy answer larger than {MAX_RESPONSE} bytes"))
        }
        Ok(httparse::Status::Partial) => Ok(ProxyReply::Partial),
        Ok(httparse::Status::Complete(n)) => match response.code {
            Some(code) if (200..300).contains(&code) => Ok(ProxyReply::Established(buf.len() - n)),
            code => Err(format!(
                "proxy refused CONNECT: {} {}",
                code.unwrap_or(0),
                response.reason.unwrap_or("")
            )),
        },
        Err(e) => Err(format!("invalid proxy answer: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn precedence_and_exclusions() {
        let vars = [
            ("HTTP_PROXY", "http://h:1"),
            ("https_proxy", "s:2"),
            ("grpc_proxy", "g:3"),
            ("no_grpc_proxy", "skip.me"),
            ("no_proxy", "*"),
        ];
        assert_eq!(proxy_from_env("x.io:443", env(&vars)), Some("g:3".into()));
        assert_eq!(proxy_from_env("skip.me:443", env(&vars)), None);
        assert_eq!(proxy_from_env("a.skip.me:443", env(&vars)), None);
        assert_eq!(
            proxy_from_env("notskip.me:443", env(&vars)),
            Some("g:3".into()),
            "suffix needs a dot"
        );
        assert_eq!(
            proxy_from_env("x.io:1", env(&vars[..1])),
            Some("h:1".into())
        );
        assert_eq!(
            proxy_from_env("x.io:1", env(&[("no_proxy", "*"), ("http_proxy", "h:1")])),
            None
        );
        assert_eq!(proxy_from_env("[::1]:1", env(&vars)), None, "loopback");
        assert_eq!(proxy_from_env("localhost:1", env(&vars)), None, "loopback");
        assert_eq!(
            proxy_from_env("x.io:1", env(&[("http_proxy", "http://u:p@h")])),
            Some("h:80".into())
        );
        assert_eq!(proxy_from_env("x.io:1", env(&[])), None);
    }

    #[test]
    fn replies_are_parsed_and_bounded() {
        assert_eq!(
            parse_reply(b"HTTP/1.1 200 Connection established\r\n"),
            Ok(ProxyReply::Partial)
        );
        assert_eq!(
            parse_reply(b"HTTP/1.1 200 OK\r\nX: y\r\n\r\nPRI"),
            Ok(ProxyReply::Established(3))
        );
        let err = parse_reply(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n").unwrap_err();
        assert!(err.contains("407"), "{err}");
        assert!(parse_reply(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_RESPONSE));
        assert!(parse_reply(&huge).is_err());
    }
}
