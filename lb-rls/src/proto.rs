//! A hand-written protobuf codec for the two RLS messages (`grpc/lookup/v1/rls.proto`).
//!
//! ```text
//! RouteLookupRequest                         RouteLookupResponse
//!   3  target_type        string  0x1a         2  header_data  string           0x12
//!   4  key_map            map     0x22         3  targets      repeated string  0x1a
//!        entry: 1 key 0x0a, 2 value 0x12       4  extensions   (skipped)
//!   5  reason             enum    0x28
//!   6  stale_header_data  string  0x32
//!   7  extensions         (skipped)
//! ```
//!
//! The client encodes requests and decodes responses; an RLS server does the
//! reverse. Encoding writes fields in number order, omits proto3 defaults (empty
//! strings, reason 0) and writes both key and value of every map entry, as the
//! reference implementations do.
//!
//! Decoding follows protobuf's rules: fields may come in any order; a singular field
//! seen twice keeps the last value; a repeated key in the map keeps the last value;
//! unknown fields of every wire type are skipped, and so is a known field with an
//! unexpected wire type (protobuf parsers treat it as unknown). Malformed input is an
//! error that names the problem, the field and the byte offset: a truncated varint,
//! tag or length; a length past the end; a varint of more than 10 bytes or 64 bits;
//! a group or an invalid wire type (3, 4, 6, 7); field number 0; invalid UTF-8 in a
//! string. A length is checked against the remaining input before anything is
//! copied, so memory use is bounded by the input's size.

pub use lb_core::protowire::{DecodeError, DecodeErrorKind};
use lb_core::protowire::{Reader, put_string, put_tag, put_varint, varint_len, wire};

use crate::keys::KeyMap;

/// The full method path of the RouteLookup RPC.
pub const ROUTE_LOOKUP_METHOD: &str = "/grpc.lookup.v1.RouteLookupService/RouteLookup";

/// The `target_type` gRPC clients send.
pub const TARGET_TYPE_GRPC: &str = "grpc";

/// `RouteLookupRequest.Reason`. Values other than the three known ones are kept (proto3
/// enums are open).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Reason {
    /// `REASON_UNKNOWN` (0): unused.
    #[default]
    Unknown,
    /// `REASON_MISS` (1): no data in the client's cache.
    Miss,
    /// `REASON_STALE` (2): the client's data is stale.
    Stale,
    /// A value this version does not know.
    Unrecognized(i32),
}

impl Reason {
    /// The wire value.
    pub fn as_i32(self) -> i32 {
        match self {
            Self::Unknown => 0,
            Self::Miss => 1,
            Self::Stale => 2,
            Self::Unrecognized(v) => v,
        }
    }

    /// The reason with wire value `value`.
    pub fn from_i32(value: i32) -> Self {
        match value {
            0 => Self::Unknown,
            1 => Self::Miss,
            2 => Self::Stale,
            v => Self::Unrecognized(v),
        }
    }
}

/// `grpc.lookup.v1.RouteLookupRequest` (the `extensions` field is not kept).
///
/// # Examples
///
/// ```
/// use lb_rls::keys::KeyMap;
/// use lb_rls::proto::{Reason, RouteLookupRequest};
/// let request = RouteLookupRequest {
///     target_type: "grpc".into(),
///     reason: Reason::Miss,
///     stale_header_data: String::new(),
///     key_map: [("k", "v")].into_iter().collect::<KeyMap>(),
/// };
/// let bytes = request.to_bytes();
/// assert_eq!(bytes, b"\x1a\x04grpc\x22\x06\x0a\x01k\x12\x01v\x28\x01");
/// assert_eq!(RouteLookupRequest::decode(&bytes)?, request);
/// # Ok::<(), lb_rls::proto::DecodeError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteLookupRequest {
    /// The target format wanted; gRPC clients send `"grpc"`.
    pub target_type: String,
    /// Why the request is made.
    pub reason: Reason,
    /// For [`Reason::Stale`], the header data of the stale entry.
    pub stale_header_data: String,
    /// The keys built from the call.
    pub key_map: KeyMap,
}

/// `grpc.lookup.v1.RouteLookupResponse` (the `extensions` field is not kept).
///
/// # Examples
///
/// ```
/// use lb_rls::proto::RouteLookupResponse;
/// let response = RouteLookupResponse {
///     targets: vec!["a".into(), "bc".into()],
///     header_data: "hd".into(),
/// };
/// let bytes = response.to_bytes();
/// assert_eq!(bytes, b"\x12\x02hd\x1a\x01a\x1a\x02bc");
/// assert_eq!(RouteLookupResponse::decode(&bytes)?, response);
/// # Ok::<(), lb_rls::proto::DecodeError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteLookupResponse {
    /// Targets, best first.
    pub targets: Vec<String>,
    /// Data to send to the backend in the `x-google-rls-data` header.
    pub header_data: String,
}

impl RouteLookupRequest {
    /// Appends the encoded message to `buf`.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        buf.reserve(self.encoded_len());
        put_string(buf, 3, &self.target_type);
        for (k, v) in self.key_map.iter() {
            put_tag(buf, 4, wire::LEN);
            put_varint(buf, map_entry_len(k, v) as u64);
            put_tag(buf, 1, wire::LEN);
            put_varint(buf, k.len() as u64);
            buf.extend_from_slice(k.as_bytes());
            put_tag(buf, 2, wire::LEN);
            put_varint(buf, v.len() as u64);
            buf.extend_from_slice(v.as_bytes());
        }
        let reason = self.reason.as_i32();
        if reason != 0 {
            put_tag(buf, 5, wire::VARINT);
            // int32 values are sign-extended to 64 bits on the wire.
            put_varint(buf, i64::from(reason) as u64);
        }
        put_string(buf, 6, &self.stale_header_data);
    }

    /// The encoded message.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        self.encode(&mut buf);
        buf
    }

    /// The length of the encoded message.
    pub fn encoded_len(&self) -> usize {
        let mut n = string_field_len(3, &self.target_type);
        for (k, v) in self.key_map.iter() {
            let entry = map_entry_len(k, v);
            n += 1 + varint_len(entry as u64) + entry;
        }
        let reason = self.reason.as_i32();
        if reason != 0 {
            n += 1 + varint_len(i64::from(reason) as u64);
        }
        n + string_field_len(6, &self.stale_header_data)
    }

    /// Decodes a message.
    ///
    /// # Errors
    ///
    /// The bytes are not a valid encoding (see the module docs).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut msg = Self::default();
        let mut r = Reader::new(bytes, 0);
        while let Some((field, wire_type)) = r.tag()? {
            match (field, wire_type) {
                (3, wire::LEN) => msg.target_type = r.string(field)?,
                (4, wire::LEN) => {
                    let (offset, entry) = r.len_delimited(field)?;
                    let (k, v) = decode_map_entry(entry, offset).map_err(|e| e.within(field))?;
                    msg.key_map.insert(k, v);
                }
                (5, wire::VARINT) => {
                    // int32: keep the low 32 bits, as protobuf does.
                    msg.reason = Reason::from_i32(r.varint(field)? as i32);
                }
                (6, wire::LEN) => msg.stale_header_data = r.string(field)?,
                _ => r.skip(field, wire_type)?,
            }
        }
        Ok(msg)
    }
}

impl RouteLookupResponse {
    /// Appends the encoded message to `buf`.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        buf.reserve(self.encoded_len());
        put_string(buf, 2, &self.header_data);
        for t in &self.targets {
            // Repeated: every element is written, empty ones too.
            put_tag(buf, 3, wire::LEN);
            put_varint(buf, t.len() as u64);
            buf.extend_from_slice(t.as_bytes());
        }
    }

    /// The encoded message.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        self.encode(&mut buf);
        buf
    }

    /// The length of the encoded message.
    pub fn encoded_len(&self) -> usize {
        string_field_len(2, &self.header_data)
            + self
                .targets
                .iter()
                .map(|t| 1 + varint_len(t.len() as u64) + t.len())
                .sum::<usize>()
    }

    /// Decodes a message.
    ///
    /// # Errors
    ///
    /// The bytes are not a valid encoding (see the module docs).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut msg = Self::default();
        let mut r = Reader::new(bytes, 0);
        while let Some((field, wire_type)) = r.tag()? {
            match (field, wire_type) {
                (2, wire::LEN) => msg.header_data = r.string(field)?,
                (3, wire::LEN) => msg.targets.push(r.string(field)?),
                _ => r.skip(field, wire_type)?,
            }
        }
        Ok(msg)
    }
}

/// A map entry: `1: key`, `2: value`, both optional (absent means empty).
fn decode_map_entry(bytes: &[u8], base: usize) -> Result<(String, String), DecodeError> {
    let mut key = String::new();
    let mut value = String::new();
    let mut r = Reader::new(bytes, base);
    while let Some((field, wire_type)) = r.tag()? {
        match (field, wire_type) {
            (1, wire::LEN) => key = r.string(field)?,
            (2, wire::LEN) => value = r.string(field)?,
            _ => r.skip(field, wire_type)?,
        }
    }
    Ok((key, value))
}

/// Tags of fields 1 to 15 take one byte.
fn string_field_len(_field: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        1 + varint_len(s.len() as u64) + s.len()
    }
}

fn map_entry_len(k: &str, v: &str) -> usize {
    1 + varint_len(k.len() as u64) + k.len() + 1 + varint_len(v.len() as u64) + v.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request(
        target_type: &str,
        reason: Reason,
        stale: &str,
        keys: &[(&str, &str)],
    ) -> RouteLookupRequest {
        RouteLookupRequest {
            target_type: target_type.into(),
            reason,
            stale_header_data: stale.into(),
            key_map: keys.iter().copied().collect(),
        }
    }

    #[test]
    fn request_encodes_byte_exact() {
        // Everything default: nothing on the wire.
        assert_eq!(RouteLookupRequest::default().to_bytes(), b"");
        // A stale refresh with two keys: fields in number order, map sorted by key.
        let r = request("grpc", Reason::Stale, "hd", &[("b", ""), ("a", "1")]);
        let want: &[u8] = &[
            0x1a, 4, b'g', b'r', b'p', b'c', // 3: target_type
            0x22, 6, 0x0a, 1, b'a', 0x12, 1, b'1', // 4: key_map {a: 1}
            0x22, 5, 0x0a, 1, b'b', 0x12, 0, // 4: key_map {b: ""}, empty value still written
            0x28, 2, // 5: reason STALE
            0x32, 2, b'h', b'd', // 6: stale_header_data
        ];
        assert_eq!(r.to_bytes(), want);
        assert_eq!(r.encoded_len(), want.len());
        // A negative enum value is a sign-extended 10-byte varint.
        let r = request("", Reason::Unrecognized(-1), "", &[]);
        let want: &[u8] = &[
            0x28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert_eq!(r.to_bytes(), want);
        assert_eq!(r.encoded_len(), 11);
        assert_eq!(
            RouteLookupRequest::decode(want).unwrap().reason,
            Reason::Unrecognized(-1)
        );
    }

    #[test]
    fn response_encodes_byte_exact() {
        assert_eq!(RouteLookupResponse::default().to_bytes(), b"");
        let r = RouteLookupResponse {
            targets: vec!["t1".into(), String::new()],
            header_data: String::new(),
        };
        assert_eq!(r.to_bytes(), [0x1a, 2, b't', b'1', 0x1a, 0]);
        // A 200-byte target needs a two-byte length: 200 = 0xc8 0x01.
        let long = "x".repeat(200);
        let r = RouteLookupResponse {
            targets: vec![long.clone()],
            header_data: String::new(),
        };
        let bytes = r.to_bytes();
        assert_eq!(&bytes[..3], [0x1a, 0xc8, 0x01]);
        assert_eq!(bytes.len(), 203);
        assert_eq!(r.encoded_len(), 203);
    }

    #[test]
    fn decoding_accepts_any_order_last_value_wins_and_skips_unknown_fields() {
        let bytes: &[u8] = &[
            0x28, 1, // reason MISS
            0x08, 0x96, 0x01, // field 1 (reserved), varint: unknown
            0x32, 1, b'x', // stale_header_data "x"
            0x09, 1, 2, 3, 4, 5, 6, 7, 8, // field 1, fixed64: unknown
            0x22, 3, 0x0a, 1, b'k', // key_map {k: ""} (value absent)
            0x3a, 2, 0x0a, 0, // field 7 extensions: skipped
            0x1a, 1, b'a', // target_type "a"
            0x15, 1, 2, 3, 4, // field 2, fixed32: unknown
            0x1a, 4, b'g', b'r', b'p', b'c', // target_type again: last wins
            0x28, 2, // reason again: STALE
            0x22, 6, 0x12, 1, b'v', 0x0a, 1, b'k', // key_map {k: v}, value first: last wins
            0x22, 9, 0x18, 1, 0x0a, 1, b'j', 0x12, 1, b'w',
            0x20, // entry ending in a bare tag
        ];
        // The last entry ends with the tag of a varint field 4 and no value: that
        // must fail. Everything before it is good.
        let good = &bytes[..bytes.len() - 11];
        let r = RouteLookupRequest::decode(good).unwrap();
        assert_eq!(r, request("grpc", Reason::Stale, "x", &[("k", "v")]));
        let err = RouteLookupRequest::decode(bytes).unwrap_err();
        assert_eq!(err.kind(), DecodeErrorKind::TruncatedVarint);
        assert_eq!(err.field_path(), [4, 4]);
        // A well-formed entry with an unknown field inside.
        let mut ok = good.to_vec();
        ok.extend_from_slice(&[0x22, 8, 0x18, 1, 0x0a, 1, b'j', 0x12, 1, b'w']);
        let r = RouteLookupRequest::decode(&ok).unwrap();
        assert_eq!(r.key_map.get("j"), Some("w"));
        // A known field with an unexpected wire type is skipped like an unknown one.
        let r = RouteLookupRequest::decode(&[0x18, 5, 0x2d, 1, 0, 0, 0]).unwrap();
        assert_eq!(r, RouteLookupRequest::default());
    }

    #[test]
    fn response_decoding_appends_targets_and_skips_unknown_fields() {
        let bytes: &[u8] = &[
            0x1a, 1, b'a', // targets += "a"
            0x0a, 3, b'o', b'l', b'd', // field 1 (reserved "target"): unknown
            0x12, 1, b'h', // header_data
            0x22, 2, 0x0a, 0, // field 4 extensions: skipped
            0x1a, 1, b'b', // targets += "b"
            0xf8, 0xff, 0xff, 0xff, 0x0f, 0x00, // field 2^29 − 1, varint: unknown
            0x12, 2, b'h', b'2', // header_data again: last wins
        ];
        let r = RouteLookupResponse::decode(bytes).unwrap();
        assert_eq!(r.targets, ["a", "b"]);
        assert_eq!(r.header_data, "h2");
    }

    #[test]
    fn malformed_inputs_are_errors_that_name_the_field() {
        use DecodeErrorKind::*;
        let cases: &[(&[u8], DecodeErrorKind, &[u32], usize)] = &[
            // A tag cut short.
            (&[0x80], TruncatedVarint, &[], 0),
            // A length cut short.
            (&[0x1a, 0x80], TruncatedVarint, &[3], 1),
            // A value cut short.
            (&[0x28, 0xff], TruncatedVarint, &[5], 1),
            // An 11-byte varint.
            (
                &[
                    0x28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ],
                VarintTooLong,
                &[5],
                1,
            ),
            // A 10-byte varint over 64 bits.
            (
                &[
                    0x28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
                ],
                VarintTooLong,
                &[5],
                1,
            ),
            // A length past the end.
            (
                &[0x1a, 5, b'a'],
                LengthPastEnd {
                    length: 5,
                    remaining: 1,
                },
                &[3],
                1,
            ),
            // A huge length: refused before any allocation.
            (
                &[0x32, 0xff, 0xff, 0xff, 0xff, 0x0f],
                LengthPastEnd {
                    length: 0xffff_ffff,
                    remaining: 0,
                },
                &[6],
                1,
            ),
            // Groups and undefined wire types.
            (&[0x0b], InvalidWireType(3), &[1], 0),
            (&[0x0c], InvalidWireType(4), &[1], 0),
            (&[0x0e], InvalidWireType(6), &[1], 0),
            (&[0x0f], InvalidWireType(7), &[1], 0),
            // Field number 0.
            (&[0x02, 0], InvalidFieldNumber(0), &[], 0),
            // Field number 2^29.
            (
                &[0x80, 0x80, 0x80, 0x80, 0x10],
                InvalidFieldNumber(1 << 29),
                &[],
                0,
            ),
            // Truncated fixed-width values of an unknown field.
            (&[0x09, 1, 2, 3], TruncatedFixed, &[1], 1),
            (&[0x0d, 1], TruncatedFixed, &[1], 1),
            // Invalid UTF-8 in target_type and in a map value.
            (&[0x1a, 2, b'a', 0xff], InvalidUtf8, &[3], 3),
            (&[0x22, 4, 0x12, 2, 0xc3, 0x28], InvalidUtf8, &[4, 2], 4),
            // A map entry whose key length runs past the entry.
            (
                &[0x22, 3, 0x0a, 5, b'k', 0x00, 0x00],
                LengthPastEnd {
                    length: 5,
                    remaining: 1,
                },
                &[4, 1],
                3,
            ),
        ];
        for &(bytes, kind, path, offset) in cases {
            let err = RouteLookupRequest::decode(bytes).unwrap_err();
            assert_eq!(
                (err.kind(), err.field_path(), err.offset()),
                (kind, path, offset),
                "{bytes:02x?}: {err}"
            );
        }
        // The same rules for responses.
        let err = RouteLookupResponse::decode(&[0x1a, 1, 0x80]).unwrap_err();
        assert_eq!((err.kind(), err.field_path()), (InvalidUtf8, &[3][..]));
        let err = RouteLookupResponse::decode(&[0x23]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "field 4 at byte 0: wire type 3 (groups) is not supported"
        );
        let err = RouteLookupRequest::decode(&[0x22, 4, 0x12, 2, 0xc3, 0x28]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "field 4.2 at byte 4: string is not valid UTF-8"
        );
    }

    fn arb_string() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[a-z0-9=,./-]{1,12}", any::<String>()]
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = RouteLookupRequest::decode(&bytes);
            let _ = RouteLookupResponse::decode(&bytes);
        }

        #[test]
        fn requests_round_trip(
            target_type in arb_string(),
            reason in any::<i32>(),
            stale in arb_string(),
            keys in proptest::collection::btree_map(arb_string(), arb_string(), 0..6),
        ) {
            let r = RouteLookupRequest {
                target_type,
                reason: Reason::from_i32(reason),
                stale_header_data: stale,
                key_map: keys.into(),
            };
            let bytes = r.to_bytes();
            prop_assert_eq!(bytes.len(), r.encoded_len());
            prop_assert_eq!(RouteLookupRequest::decode(&bytes).unwrap(), r);
        }

        #[test]
        fn responses_round_trip(
            targets in proptest::collection::vec(arb_string(), 0..6),
            header_data in arb_string(),
        ) {
            let r = RouteLookupResponse { targets, header_data };
            let bytes = r.to_bytes();
            prop_assert_eq!(bytes.len(), r.encoded_len());
            prop_assert_eq!(RouteLookupResponse::decode(&bytes).unwrap(), r);
        }

        #[test]
        fn truncating_a_valid_message_never_panics(
            targets in proptest::collection::vec(arb_string(), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let bytes = RouteLookupResponse { targets, header_data: "h".into() }.to_bytes();
            let at = cut.index(bytes.len());
            let _ = RouteLookupResponse::decode(&bytes[..at]);
        }
    }
}
