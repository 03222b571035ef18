//! The protobuf wire format, as much as lb-core's hand-written codecs need: varints,
//! and a field walker that skips what a codec does not know and reports malformed
//! bytes as `(offset, reason)`, never panicking. Each codec wraps the reason in its
//! own error type ([`crate::health`], [`crate::orca`]).

/// One field's value.
pub(crate) enum Value<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 2.
    Bytes(&'a [u8]),
    /// Wire type 1 (a double's bits, a fixed64).
    Fixed64(u64),
    /// Wire type 5.
    Fixed32,
}

/// Appends `value` as a varint.
pub(crate) fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends a field key: `field` with wire type `wire`.
pub(crate) fn push_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    push_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

/// Appends a length-delimited field.
pub(crate) fn push_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    push_key(out, field, 2);
    push_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends a `double` field (fixed64, little-endian).
pub(crate) fn push_double(out: &mut Vec<u8>, field: u32, value: f64) {
    push_key(out, field, 1);
    out.extend_from_slice(&value.to_bits().to_le_bytes());
}

/// Reads a varint at `*pos`, moving past it.
pub(crate) fn take_varint(bytes: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let Some(&byte) = bytes.get(*pos) else {
            return Err("truncated varint".into());
        };
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift.min(63);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint longer than 10 bytes".into())
}

/// Bytes that are not the protobuf message a codec expected: which message, the byte
/// where the problem is, and what it is. Named [`HealthDecodeError`](crate::health::HealthDecodeError)
/// and [`OrcaDecodeError`](crate::orca::OrcaDecodeError) by the codecs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad {message} at byte {offset}: {reason}")]
pub struct DecodeError {
    message: &'static str,
    offset: usize,
    reason: String,
}

/// Walks the fields of `message`, handing each to `on_field(number, value, offset)`,
/// whose errors are `(offset, reason)`.
pub(crate) fn read_message<'a>(
    bytes: &'a [u8],
    message: &'static str,
    on_field: impl FnMut(u64, Value<'a>, usize) -> Result<(), (usize, String)>,
) -> Result<(), DecodeError> {
    read_fields(bytes, on_field).map_err(|(offset, reason)| DecodeError {
        message,
        offset,
        reason,
    })
}

/// Walks a message's fields, handing each to `on_field(number, value, offset)`.
/// Errors are `(offset, reason)`.
pub(crate) fn read_fields<'a>(
    bytes: &'a [u8],
    mut on_field: impl FnMut(u64, Value<'a>, usize) -> Result<(), (usize, String)>,
) -> Result<(), (usize, String)> {
    let mut pos = 0;
    while pos < bytes.len() {
        let start = pos;
        let key = take_varint(bytes, &mut pos).map_err(|r| (start, r))?;
        let field = key >> 3;
        if field == 0 {
            return Err((start, "field number 0".into()));
        }
        let at = pos;
        let value = match key & 7 {
            0 => Value::Varint(take_varint(bytes, &mut pos).map_err(|r| (at, r))?),
            1 => {
                let Some(raw) = bytes.get(pos..pos + 8) else {
                    return Err((at, format!("field {field} is truncated")));
                };
                pos += 8;
                let mut le = [0u8; 8];
                le.copy_from_slice(raw);
                Value::Fixed64(u64::from_le_bytes(le))
            }
            5 => {
                if bytes.len() - pos < 4 {
                    return Err((at, format!("field {field} is truncated")));
                }
                pos += 4;
                Value::Fixed32
            }
            2 => {
                let len = take_varint(bytes, &mut pos).map_err(|r| (at, r))?;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|l| pos.checked_add(l))
                    .filter(|&end| end <= bytes.len())
                    .ok_or_else(|| (at, format!("field {field} is longer than the message")))?;
                let slice = &bytes[pos..end];
                pos = end;
                Value::Bytes(slice)
            }
            wire => return Err((start, format!("field {field} has wire type {wire}"))),
        };
        on_field(field, value, at)?;
    }
    Ok(())
}
