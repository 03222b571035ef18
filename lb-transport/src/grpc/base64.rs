//! Base64 for binary metadata: emit unpadded standard base64, accept padded and
//! unpadded, and split comma-joined duplicates before decoding.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes `data` as unpadded standard base64.
///
/// ```
/// assert_eq!(lb_transport::grpc::base64::encode(b"\x00\xff\x10"), "AP8Q");
/// assert_eq!(lb_transport::grpc::base64::encode(b"ab"), "YWI");
/// ```
pub fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize]));
        }
    }
    out
}

/// Decodes one base64 value, padded or not.
///
/// # Errors
///
/// A character outside the standard alphabet, misplaced padding, or a length that no
/// encoding produces.
///
/// ```
/// use lb_transport::grpc::base64::decode;
/// assert_eq!(decode(b"YWI="), Ok(b"ab".to_vec()));
/// assert_eq!(decode(b"YWI"), Ok(b"ab".to_vec()));
/// assert!(decode(b"Y").is_err());
/// ```
pub fn decode(text: &[u8]) -> Result<Vec<u8>, &'static str> {
    let trimmed = match text {
        [rest @ .., b'=', b'='] if text.len() % 4 == 0 => rest,
        [rest @ .., b'='] if text.len() % 4 == 0 => rest,
        _ => text,
    };
    if trimmed.len() % 4 == 1 {
        return Err("base64 length is impossible");
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    for chunk in trimmed.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return Err("invalid base64 character"),
            };
            n |= u32::from(v) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Ok(out)
}

/// Decodes a binary header value that may hold several comma-joined values.
///
/// # Errors
///
/// One of the parts is not valid base64.
pub fn decode_joined(text: &[u8]) -> Result<Vec<Vec<u8>>, &'static str> {
    text.split(|&b| b == b',')
        .map(|part| decode(part.trim_ascii()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_length() {
        let data: Vec<u8> = (0..=255).collect();
        for n in 0..40 {
            let enc = encode(&data[..n]);
            assert!(!enc.contains('='));
            assert_eq!(decode(enc.as_bytes()).unwrap(), &data[..n], "{n}");
            let padded = format!("{enc}{}", "=".repeat((4 - enc.len() % 4) % 4));
            assert_eq!(decode(padded.as_bytes()).unwrap(), &data[..n], "padded {n}");
        }
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [&b"a"[..], b"ab!c", b"=abc", b"ab=c", b"abcde"] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn joined_values_split_on_commas() {
        assert_eq!(
            decode_joined(b"YQ, Yg==").unwrap(),
            [b"a".to_vec(), b"b".to_vec()]
        );
    }
}
