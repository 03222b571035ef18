//! The percent-encoding of `grpc-message`: bytes 0x20–0x7E other than `%` go as they
//! are, every other byte of the UTF-8 text becomes `%XX`.

/// Percent-encodes a status message.
///
/// ```
/// use lb_transport::grpc::percent::encode;
/// assert_eq!(encode("50% off\r\n"), "50%25 off%0D%0A");
/// assert_eq!(encode("héllo"), "h%C3%A9llo");
/// ```
pub fn encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Decodes a `grpc-message`. Never fails: a `%` not followed by two hex digits is
/// kept as it is, and bytes that are not UTF-8 become U+FFFD, as gRPC requires of
/// decoders.
///
/// ```
/// use lb_transport::grpc::percent::decode;
/// assert_eq!(decode(b"50%25 off%0D%0A"), "50% off\r\n");
/// assert_eq!(decode(b"bad %zz and %4"), "bad %zz and %4");
/// ```
pub fn decode(text: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'%' {
            if let (Some(h), Some(l)) = (
                text.get(i + 1).and_then(|b| hex_value(*b)),
                text.get(i + 2).and_then(|b| hex_value(*b)),
            ) {
                bytes.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        bytes.push(text[i]);
        i += 1;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_char_class() {
        for msg in [
            "",
            "plain",
            "100%",
            "tab\tnew\nline",
            "日本語",
            "\u{0}\u{7f}",
            "%%%",
        ] {
            let enc = encode(msg);
            assert!(enc.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{enc}");
            assert_eq!(decode(enc.as_bytes()), msg);
        }
    }

    #[test]
    fn lowercase_hex_and_bad_utf8_are_tolerated() {
        assert_eq!(decode(b"%c3%a9"), "é");
        assert_eq!(decode(b"%FF"), "\u{fffd}");
        assert_eq!(decode(b"%"), "%");
    }
}
