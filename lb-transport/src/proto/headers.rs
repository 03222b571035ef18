//! Checks of received header lists (RFC 9113 section 8.2 and 8.3).

use crate::hpack::Header;

/// Which header list a check is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Request,
    Response,
    Trailers,
}

/// Checks a received header list; the error says what is malformed.
pub(crate) fn validate(headers: &[Header], kind: Kind) -> Result<(), &'static str> {
    let mut regular_seen = false;
    let mut has = [false; 4]; // :method, :scheme, :path, :status
    for h in headers {
        let name = h.name.as_slice();
        // "Field names MUST NOT contain characters in the range 0x41 ('A') to 0x5a ('Z')".
        if name.iter().any(u8::is_ascii_uppercase) {
            return Err("uppercase header name");
        }
        if name.is_empty() {
            return Err("empty header name");
        }
        if h.value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
            return Err("header value with CR, LF or NUL");
        }
        if let Some(pseudo) = name.strip_prefix(b":") {
            // "All pseudo-header fields MUST appear in a field block before all regular
            // field lines."
            if regular_seen {
                return Err("pseudo-header after a regular header");
            }
            let slot = match (kind, pseudo) {
                (Kind::Request, b"method") => 0,
                (Kind::Request, b"scheme") => 1,
                (Kind::Request, b"path") => 2,
                (Kind::Request, b"authority") => continue,
                (Kind::Response, b"status") => 3,
                _ => return Err("unexpected pseudo-header"),
            };
            if std::mem::replace(&mut has[slot], true) {
                return Err("repeated pseudo-header");
            }
            continue;
        }
        regular_seen = true;
        // Connection-specific fields are malformed in HTTP/2.
        if matches!(
            name,
            b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade"
        ) {
            return Err("connection-specific header");
        }
        if name == b"te" && h.value != b"trailers" {
            return Err("te header other than \"trailers\"");
        }
    }
    match kind {
        Kind::Request if !(has[0] && has[1] && has[2]) => {
            Err("request without :method, :scheme and :path")
        }
        Kind::Response if !has[3] => Err("response without :status"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(list: &[(&str, &str)]) -> Vec<Header> {
        list.iter().map(|(n, v)| Header::new(*n, *v)).collect()
    }

    #[test]
    fn well_formed_lists_pass() {
        let req = h(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/a/b"),
            (":authority", "x"),
            ("te", "trailers"),
        ]);
        assert_eq!(validate(&req, Kind::Request), Ok(()));
        assert_eq!(
            validate(
                &h(&[(":status", "200"), ("content-type", "application/grpc")]),
                Kind::Response
            ),
            Ok(())
        );
        assert_eq!(
            validate(&h(&[("grpc-status", "0")]), Kind::Trailers),
            Ok(())
        );
    }

    #[test]
    fn malformed_lists_are_named() {
        type Case<'a> = (&'a [(&'a str, &'a str)], Kind, &'a str);
        let cases: &[Case<'_>] = &[
            (
                &[(":method", "GET"), (":scheme", "http")],
                Kind::Request,
                "request without",
            ),
            (
                &[(":status", "200"), (":status", "200")],
                Kind::Response,
                "repeated",
            ),
            (
                &[("x", "1"), (":status", "200")],
                Kind::Response,
                "after a regular",
            ),
            (
                &[(":status", "200"), ("X-Up", "1")],
                Kind::Response,
                "uppercase",
            ),
            (
                &[(":status", "200"), ("connection", "close")],
                Kind::Response,
                "connection-specific",
            ),
            (
                &[(":status", "200"), ("te", "gzip")],
                Kind::Response,
                "te header",
            ),
            (&[(":path", "/")], Kind::Trailers, "unexpected pseudo"),
            (
                &[(":status", "200"), ("x", "a\nb")],
                Kind::Response,
                "CR, LF",
            ),
        ];
        for (list, kind, want) in cases {
            let err = validate(&h(list), *kind).unwrap_err();
            assert!(err.contains(want), "{list:?}: {err}");
        }
    }
}
