//! Protobuf's wire format, by hand, for the few small messages gRPC's own
//! protocols need (health checks, RLS, ORCA) without a code generator: a
//! [`Reader`] that checks every length against the input before taking it and
//! reports what is wrong, in which field and at which byte ([`DecodeError`]), and
//! the writers (`put_*`).
//!
//! ```
//! use lb_core::protowire::{Reader, put_string, wire};
//! let mut buf = Vec::new();
//! put_string(&mut buf, 1, "echo.Echo");
//! let mut r = Reader::new(&buf, 0);
//! let mut service = String::new();
//! while let Some((field, wire_type)) = r.tag()? {
//!     match (field, wire_type) {
//!         (1, wire::LEN) => service = r.string(field)?,
//!         _ => r.skip(field, wire_type)?,
//!     }
//! }
//! assert_eq!(service, "echo.Echo");
//! # Ok::<(), lb_core::protowire::DecodeError>(())
//! ```

use std::fmt;

/// The wire types this module reads (groups, 3 and 4, are refused).
pub mod wire {
    /// int32, int64, uint32, uint64, sint32, sint64, bool, enum.
    pub const VARINT: u8 = 0;
    /// fixed64, sfixed64, double.
    pub const FIXED64: u8 = 1;
    /// string, bytes, embedded messages, packed repeated fields.
    pub const LEN: u8 = 2;
    /// fixed32, sfixed32, float.
    pub const FIXED32: u8 = 5;
}

/// The largest field number protobuf allows.
const MAX_FIELD_NUMBER: u64 = (1 << 29) - 1;

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
/// use lb_core::protowire::{DecodeErrorKind, Reader};
/// // Field 3, length-delimited, claims 5 bytes; 1 is left.
/// let mut r = Reader::new(b"\x1a\x05a", 0);
/// let (field, _) = r.tag()?.unwrap();
/// let err = r.len_delimited(field).unwrap_err();
/// assert_eq!(err.kind(), DecodeErrorKind::LengthPastEnd { length: 5, remaining: 1 });
/// assert_eq!(err.field_path(), [3]);
/// assert_eq!(err.to_string(), "field 3 at byte 1: length 5 runs past the end of the input (1 bytes left)");
/// # Ok::<(), lb_core::protowire::DecodeError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct DecodeError {
    kind: DecodeErrorKind,
    /// Outermost field first; empty when the problem is in a tag.
    path: Vec<u32>,
    offset: usize,
}

impl DecodeError {
    /// An error of `kind` in `field` (if known) at byte `offset`.
    pub fn new(kind: DecodeErrorKind, field: Option<u32>, offset: usize) -> Self {
        Self {
            kind,
            path: field.into_iter().collect(),
            offset,
        }
    }

    /// The same error, inside `field` of an enclosing message.
    pub fn within(mut self, field: u32) -> Self {
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
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    /// A reader of `buf`, whose first byte is at offset `base` of the whole input.
    pub fn new(buf: &'a [u8], base: usize) -> Self {
        Self { buf, pos: 0, base }
    }

    /// The absolute offset of the next byte.
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn err(&self, kind: DecodeErrorKind, field: Option<u32>, at: usize) -> DecodeError {
        DecodeError::new(kind, field, self.base + at)
    }

    /// The next tag (field number and wire type), or `None` at the end of the
    /// input.
    ///
    /// # Errors
    ///
    /// A truncated tag, field number 0 or above 2^29 − 1, a group or an invalid
    /// wire type.
    pub fn tag(&mut self) -> Result<Option<(u32, u8)>, DecodeError> {
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

    /// A varint, in `field` if it is a field's value (for the error).
    ///
    /// # Errors
    ///
    /// Truncated, or longer than 10 bytes or 64 bits.
    pub fn raw_varint(&mut self, field: Option<u32>) -> Result<u64, DecodeError> {
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

    /// A varint field's value.
    ///
    /// # Errors
    ///
    /// As [`Reader::raw_varint`].
    pub fn varint(&mut self, field: u32) -> Result<u64, DecodeError> {
        self.raw_varint(Some(field))
    }

    /// A length-delimited field's bytes and their absolute offset. The length is
    /// checked against the input before anything is taken.
    ///
    /// # Errors
    ///
    /// A bad length varint, or a length past the end of the input.
    pub fn len_delimited(&mut self, field: u32) -> Result<(usize, &'a [u8]), DecodeError> {
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

    /// A string field.
    ///
    /// # Errors
    ///
    /// As [`Reader::len_delimited`], or not UTF-8.
    pub fn string(&mut self, field: u32) -> Result<String, DecodeError> {
        let (offset, bytes) = self.len_delimited(field)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|e| {
            DecodeError::new(
                DecodeErrorKind::InvalidUtf8,
                Some(field),
                offset + e.valid_up_to(),
            )
        })
    }

    fn fixed(&mut self, field: u32, width: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() - self.pos < width {
            return Err(self.err(DecodeErrorKind::TruncatedFixed, Some(field), self.pos));
        }
        let bytes = &self.buf[self.pos..self.pos + width];
        self.pos += width;
        Ok(bytes)
    }

    /// A 32-bit fixed-width field's value (`fixed32`, `sfixed32`, `float` as
    /// bits).
    ///
    /// # Errors
    ///
    /// Fewer than 4 bytes left.
    pub fn fixed32(&mut self, field: u32) -> Result<u32, DecodeError> {
        let bytes = self.fixed(field, 4)?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
    }

    /// A 64-bit fixed-width field's value (`fixed64`, `sfixed64`, `double` as
    /// bits).
    ///
    /// # Errors
    ///
    /// Fewer than 8 bytes left.
    pub fn fixed64(&mut self, field: u32) -> Result<u64, DecodeError> {
        let bytes = self.fixed(field, 8)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }

    /// A `double` field's value.
    ///
    /// # Errors
    ///
    /// Fewer than 8 bytes left.
    pub fn double(&mut self, field: u32) -> Result<f64, DecodeError> {
        self.fixed64(field).map(f64::from_bits)
    }

    /// Skips a field's value (an unknown field, or one of an unexpected wire type).
    ///
    /// # Errors
    ///
    /// The value is malformed or truncated.
    pub fn skip(&mut self, field: u32, wire_type: u8) -> Result<(), DecodeError> {
        match wire_type {
            wire::VARINT => self.varint(field).map(drop),
            wire::FIXED64 => self.fixed(field, 8).map(drop),
            wire::LEN => self.len_delimited(field).map(drop),
            wire::FIXED32 => self.fixed(field, 4).map(drop),
            t => Err(self.err(
                DecodeErrorKind::InvalidWireType(t),
                Some(field),
                self.offset(),
            )),
        }
    }
}

/// Appends `v` as a varint.
pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Appends a field's tag.
pub fn put_tag(buf: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(buf, (u64::from(field) << 3) | u64::from(wire_type));
}

/// A proto3 singular string: omitted when empty.
pub fn put_string(buf: &mut Vec<u8>, field: u32, s: &str) {
    if s.is_empty() {
        return;
    }
    put_tag(buf, field, wire::LEN);
    put_varint(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}

/// A length-delimited field (bytes or an embedded message), written even when
/// empty.
pub fn put_bytes(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(buf, field, wire::LEN);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// A `double` field.
pub fn put_double(buf: &mut Vec<u8>, field: u32, value: f64) {
    put_tag(buf, field, wire::FIXED64);
    buf.extend_from_slice(&value.to_le_bytes());
}

/// How many bytes `v` takes as a varint.
pub fn varint_len(v: u64) -> usize {
    // ceil(bits / 7), at least 1.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths_round_trip() {
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
    fn doubles_and_fixed_widths() {
        let mut buf = Vec::new();
        put_tag(&mut buf, 1, wire::FIXED64);
        buf.extend_from_slice(&0.25f64.to_le_bytes());
        put_tag(&mut buf, 2, wire::FIXED32);
        buf.extend_from_slice(&[1, 2, 3, 4]);
        let mut r = Reader::new(&buf, 0);
        assert_eq!(r.tag(), Ok(Some((1, wire::FIXED64))));
        assert_eq!(r.double(1), Ok(0.25));
        assert_eq!(r.tag(), Ok(Some((2, wire::FIXED32))));
        r.skip(2, wire::FIXED32).unwrap();
        assert_eq!(r.tag(), Ok(None));
        let err = Reader::new(&buf[..5], 0).double(1).unwrap_err();
        assert_eq!(err.kind(), DecodeErrorKind::TruncatedFixed);
    }
}
