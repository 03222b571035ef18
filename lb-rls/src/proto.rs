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

use std::fmt;

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

/// Protobuf wire types.
mod wire {
    pub(super) const VARINT: u8 = 0;
    pub(super) const FIXED64: u8 = 1;
    pub(super) const LEN: u8 = 2;
    pub(super) const FIXED32: u8 = 5;
}

/// The largest field number protobuf allows.
const MAX_FIELD_NUMBER: u64 = (1 << 29) - 1;

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

/// What is wrong with an encoded message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The input ends inside a varint (a tag, a length or a value).
    TruncatedVarint,
    /// A varint runs over 10 bytes or over 64 bits.
    VarintTooLong,
    /// The input ends inside a fixed-width value.
    TruncatedFixed,
    /// A length-delimited field is longer than the rest of the input.
    LengthPastEnd {
        /// The length the field claims.
        length: u64,
        /// The bytes left after the length.
        remaining: usize,
    },
    /// Wire type 3 or 4 (groups, not supported) or 6 or 7 (not defined).
    InvalidWireType(u8),
    /// A field number of 0 or above 2^29 − 1.
    InvalidFieldNumber(u64),
    /// A string field is not valid UTF-8.
    InvalidUtf8,
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TruncatedVarint => f.write_str("the input ends inside a varint"),
            Self::VarintTooLong => f.write_str("varint longer than 10 bytes or 64 bits"),
            Self::TruncatedFixed => f.write_str("the input ends inside a fixed-width value"),
            Self::LengthPastEnd { length, remaining } => write!(
                f,
                "length {length} runs past the end of the input ({remaining} bytes left)"
            ),
            Self::InvalidWireType(t @ (3 | 4)) => {
                write!(f, "wire type {t} (groups) is not supported")
            }
            Self::InvalidWireType(t) => write!(f, "invalid wire type {t}"),
            Self::InvalidFieldNumber(n) => write!(f, "invalid field number {n}"),
            Self::InvalidUtf8 => f.write_str("string is not valid UTF-8"),
        }
    }
}

/// A message that could not be decoded: what is wrong, in which field, where.
///
/// ```
/// use lb_rls::proto::{DecodeErrorKind, RouteLookupResponse};
/// // Field 3 (targets) claims 5 bytes; 1 is left.
/// let err = RouteLookupResponse::decode(b"\x1a\x05a").unwrap_err();
/// assert_eq!(err.kind(), DecodeErrorKind::LengthPastEnd { length: 5, remaining: 1 });
/// assert_eq!(err.field_path(), [3]);
/// assert_eq!(err.to_string(), "field 3 at byte 1: length 5 runs past the end of the input (1 bytes left)");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct DecodeError {
    kind: DecodeErrorKind,
    /// Outermost field first; empty when the problem is in a tag.
    path: Vec<u32>,
    offset: usize,
}

impl DecodeError {
    fn new(kind: DecodeErrorKind, field: Option<u32>, offset: usize) -> Self {
        Self {
            kind,
            path: field.into_iter().collect(),
            offset,
        }
    }

    fn within(mut self, field: u32) -> Self {
        self.path.insert(0, field);
        self
    }

    /// What is wrong.
    pub fn kind(&self) -> DecodeErrorKind {
        self.kind
    }

    /// The field numbers leading to the problem, outermost first (`[4, 2]`: the
    /// value of a `key_map` entry); empty if the problem is in a tag of the top-level
    /// message.
    pub fn field_path(&self) -> &[u32] {
        &self.path
    }

    /// The byte offset in the input where the problem was found.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "at byte {}: {}", self.offset, self.kind)
        } else {
            f.write_str("field ")?;
            for (i, n) in self.path.iter().enumerate() {
                if i > 0 {
                    f.write_str(".")?;
                }
                write!(f, "{n}")?;
            }
            write!(f, " at byte {}: {}", self.offset, self.kind)
        }
    }
}

/// Reads protobuf wire data. Offsets in errors are absolute (`base` + position).
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Self { buf, pos: 0, base }
    }

    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn err(&self, kind: DecodeErrorKind, field: Option<u32>, at: usize) -> DecodeError {
        DecodeError::new(kind, field, self.base + at)
    }

    /// The next tag, or `None` at the end of the input.
    fn tag(&mut self) -> Result<Option<(u32, u8)>, DecodeError> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let start = self.pos;
        let tag = self.raw_varint(None)?;
        let number = tag >> 3;
        if number == 0 || number > MAX_FIELD_NUMBER {
            return Err(self.err(DecodeErrorKind::InvalidFieldNumber(number), None, start));
        }
        let field = number as u32;
        let wire_type = (tag & 7) as u8;
        match wire_type {
            wire::VARINT | wire::FIXED64 | wire::LEN | wire::FIXED32 => {
                Ok(Some((field, wire_type)))
            }
            t => Err(self.err(DecodeErrorKind::InvalidWireType(t), Some(field), start)),
        }
    }

    fn raw_varint(&mut self, field: Option<u32>) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.err(DecodeErrorKind::TruncatedVarint, field, start));
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                // The tenth byte may only hold the 64th bit.
                return Err(self.err(DecodeErrorKind::VarintTooLong, field, start));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.err(DecodeErrorKind::VarintTooLong, field, start))
    }

    fn varint(&mut self, field: u32) -> Result<u64, DecodeError> {
        self.raw_varint(Some(field))
    }

    /// A length-delimited field's bytes and their absolute offset.
    fn len_delimited(&mut self, field: u32) -> Result<(usize, &'a [u8]), DecodeError> {
        let length_at = self.pos;
        let length = self.varint(field)?;
        let remaining = self.buf.len() - self.pos;
        if length > remaining as u64 {
            return Err(self.err(
                DecodeErrorKind::LengthPastEnd { length, remaining },
                Some(field),
                length_at,
            ));
        }
        let start = self.pos;
        self.pos += length as usize;
        Ok((self.base + start, &self.buf[start..self.pos]))
    }

    fn string(&mut self, field: u32) -> Result<String, DecodeError> {
        let (offset, bytes) = self.len_delimited(field)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|e| {
            DecodeError::new(
                DecodeErrorKind::InvalidUtf8,
                Some(field),
                offset + e.valid_up_to(),
            )
        })
    }

    fn fixed(&mut self, field: u32, width: usize) -> Result<(), DecodeError> {
        if self.buf.len() - self.pos < width {
            return Err(self.err(DecodeErrorKind::TruncatedFixed, Some(field), self.pos));
        }
        self.pos += width;
        Ok(())
    }

    /// Skips a field's value.
    fn skip(&mut self, field: u32, wire_type: u8) -> Result<(), DecodeError> {
        match wire_type {
            wire::VARINT => self.varint(field).map(drop),
            wire::FIXED64 => self.fixed(field, 8),
            wire::LEN => self.len_delimited(field).map(drop),
            wire::FIXED32 => self.fixed(field, 4),
            t => Err(self.err(
                DecodeErrorKind::InvalidWireType(t),
                Some(field),
                self.offset(),
            )),
        }
    }
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_tag(buf: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(buf, (u64::from(field) << 3) | u64::from(wire_type));
}

/// A proto3 singular string: omitted when empty.
fn put_string(buf: &mut Vec<u8>, field: u32, s: &str) {
    if s.is_empty() {
        return;
    }
    put_tag(buf, field, wire::LEN);
    put_varint(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}

fn varint_len(v: u64) -> usize {
    // ceil(bits / 7), at least 1.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
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
    fn varint_lengths() {
        for (v, n) in [
            (0u64, 1),
            (1, 1),
            (127, 1),
            (128, 2),
            (16383, 2),
            (16384, 3),
            (u64::MAX, 10),
        ] {
            assert_eq!(varint_len(v), n, "{v}");
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf.len(), n);
            assert_eq!(Reader::new(&buf, 0).raw_varint(None), Ok(v));
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
