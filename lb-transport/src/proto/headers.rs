//! Checks of received header lists (RFC 9113 sections 8.1.1, 8.2 and 8.3).
//!
//! A field name may hold only visible ASCII other than uppercase letters, and a
//! colon only as a pseudo-header's first byte; a field value may not hold NUL, CR or
//! LF, nor start or end with a space or tab (section 8.2.1). A list that breaks a
//! rule is malformed: a stream error of type PROTOCOL_ERROR.

use crate::hpack::Header;

/// Which header list a check is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Request,
    Response,
    Trailers,
}

/// Bytes a field name may hold (but a pseudo-header's leading colon): "A field
/// name MUST NOT contain characters in the ranges 0x00-0x20, 0x41-0x5a, or
/// 0x7f-0xff", nor a colon.
const NAME_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0x21;
    while b < 0x7f {
        table[b] = !(b as u8).is_ascii_uppercase() && b != b':' as usize;
        b += 1;
    }
    table
};

/// Bytes a field value may not hold: NUL, LF and CR.
const BAD_VALUE_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    table[0] = true;
    table[b'\n' as usize] = true;
    table[b'\r' as usize] = true;
    table
};

/// What is wrong with a field name that [`NAME_BYTE`] refused.
fn bad_name(name: &[u8]) -> &'static str {
    if name.iter().any(u8::is_ascii_uppercase) {
        "uppercase header name"
    } else if name.iter().any(|&b| b <= 0x20 || b >= 0x7f) {
        "header name with a space, a control or a non-ASCII byte"
    } else {
        "header name with a colon inside"
    }
}

/// Checks a received header list; the error says what is malformed.
pub(crate) fn validate(headers: &[Header], kind: Kind) -> Result<(), &'static str> {
    let mut regular_seen = false;
    let mut has = [false; 4]; // :method, :scheme, :path, :status
    for h in headers {
        let name = &h.name[..];
        let Some((&first, rest)) = name.split_first() else {
            return Err("empty header name");
        };
        // One pass over each string with a byte table; the slow checks below
        // only name what a bad one holds.
        if !(NAME_BYTE[usize::from(first)] || first == b':')
            || !rest.iter().all(|&b| NAME_BYTE[usize::from(b)])
        {
            return Err(bad_name(name));
        }
        if h.value.iter().any(|&b| BAD_VALUE_BYTE[usize::from(b)]) {
            return Err("header value with CR, LF or NUL");
        }
        if h.value.first().is_some_and(|b| matches!(b, b' ' | b'\t'))
            || h.value.last().is_some_and(|b| matches!(b, b' ' | b'\t'))
        {
            return Err("header value with leading or trailing whitespace");
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
        if name == b"te" && h.value != b"trailers"[..] {
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

/// The `content-length` a header list declares, if any (RFC 9113 section 8.1.1:
/// the DATA must then add up to it exactly).
///
/// # Errors
///
/// A value that is not a decimal number, or two values that differ.
pub(crate) fn content_length(headers: &[Header]) -> Result<Option<u64>, &'static str> {
    let mut declared = None;
    for h in headers.iter().filter(|h| h.name == b"content-length"[..]) {
        let value = std::str::from_utf8(&h.value)
            .ok()
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or("content-length that is not a number")?;
        if declared.is_some_and(|d| d != value) {
            return Err("content-length given twice with different values");
        }
        declared = Some(value);
    }
    Ok(declared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(list: &[(&str, &str)]) -> Vec<Header> {
        list.iter()
            .map(|(n, v)| Header::new(n.to_string(), v.to_string()))
            .collect()
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
            (
                &[(":status", "200"), ("x y", "1")],
                Kind::Response,
                "with a space",
            ),
            (
                &[(":status", "200"), ("x\u{1}", "1")],
                Kind::Response,
                "a control",
            ),
            (
                &[(":status", "200"), ("caf\u{e9}", "1")],
                Kind::Response,
                "non-ASCII",
            ),
            (
                &[(":status", "200"), ("a:b", "1")],
                Kind::Response,
                "colon inside",
            ),
            (
                &[(":status", "200"), ("x", " padded")],
                Kind::Response,
                "leading or trailing whitespace",
            ),
            (
                &[(":status", "200"), ("x", "tab\t")],
                Kind::Response,
                "leading or trailing whitespace",
            ),
        ];
        for (list, kind, want) in cases {
            let err = validate(&h(list), *kind).unwrap_err();
            assert!(err.contains(want), "{list:?}: {err}");
        }
        // Inner spaces and other visible bytes in values are fine.
        assert_eq!(
            validate(&h(&[(":status", "200"), ("x", "a b\tc")]), Kind::Response),
            Ok(())
        );
    }

    #[test]
    fn content_length_is_one_decimal_number() {
        assert_eq!(content_length(&h(&[("a", "1")])), Ok(None));
        assert_eq!(
            content_length(&h(&[("content-length", "12")])),
            Ok(Some(12))
        );
        assert_eq!(
            content_length(&h(&[("content-length", "5"), ("content-length", "5")])),
            Ok(Some(5))
        );
        for bad in [
            &[("content-length", "-1")][..],
            &[("content-length", "")],
            &[("content-length", "1"), ("content-length", "2")],
        ] {
            assert!(content_length(&h(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_byte_of_a_name_and_a_value_is_judged_as_rfc_9113_says() {
        for b in 0..=255u8 {
            let name = vec![b'x', b];
            let list = vec![Header::new(":status", "200"), Header::new(name, "1")];
            let allowed = (0x21..0x7f).contains(&b) && !b.is_ascii_uppercase() && b != b':';
            assert_eq!(
                validate(&list, Kind::Response).is_ok(),
                allowed,
                "name byte {b:#04x}"
            );
            let value = vec![b'a', b, b'a'];
            let list = vec![Header::new(":status", "200"), Header::new("x", value)];
            let allowed = !matches!(b, 0 | b'\n' | b'\r');
            assert_eq!(
                validate(&list, Kind::Response).is_ok(),
                allowed,
                "value byte {b:#04x}"
            );
        }
    }
}
