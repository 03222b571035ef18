//! Integer representation, RFC 7541 section 5.1.
//!
//! An integer starts in the low N bits of a byte whose high bits belong to the
//! enclosing representation. Values that do not fit in the N-bit prefix
//! continue in following bytes, seven bits at a time, least significant group
//! first.

use super::DecoderError;

/// The most continuation bytes we accept after the prefix.
///
/// RFC 7541 section 5.1: "Integer encodings that exceed implementation limits
/// -- in value or octet length -- MUST be treated as decoding errors." Five
/// groups of seven bits cover every `u32`, which is more than any field of
/// HPACK can sensibly need (string lengths, table sizes and indices).
const MAX_CONTINUATION_BYTES: u32 = 5;

/// The largest value we decode.
const MAX_VALUE: u64 = u32::MAX as u64;

/// Appends `value` with an N-bit prefix, where N is `prefix_bits` (1 to 8).
/// `flags` holds the bits of the first byte above the prefix.
pub(crate) fn encode(value: usize, prefix_bits: u8, flags: u8, dst: &mut Vec<u8>) {
    let max_prefix = prefix_max(prefix_bits);
    debug_assert_eq!(flags & max_prefix, 0, "flags overlap the prefix");
    // RFC 7541 section 5.1: "If the integer value is small enough, i.e.,
    // strictly less than 2^N-1, it is encoded within the N-bit prefix."
    if value < usize::from(max_prefix) {
        dst.push(flags | value as u8);
        return;
    }
    dst.push(flags | max_prefix);
    let mut rest = value - usize::from(max_prefix);
    while rest >= 0x80 {
        dst.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    dst.push(rest as u8);
}

/// Reads an integer with an N-bit prefix from the front of `input`, advancing
/// it past the integer. The bits above the prefix in the first byte are
/// ignored; the caller has already looked at them.
pub(crate) fn decode(input: &mut &[u8], prefix_bits: u8) -> Result<usize, DecoderError> {
    let max_prefix = prefix_max(prefix_bits);
    let first = next_byte(input)?;
    let prefix = first & max_prefix;
    if prefix < max_prefix {
        return Ok(usize::from(prefix));
    }

    let mut value = u64::from(max_prefix);
    for group in 0..MAX_CONTINUATION_BYTES {
        let byte = next_byte(input)?;
        value += u64::from(byte & 0x7f) << (7 * group);
        if value > MAX_VALUE {
            return Err(DecoderError::IntegerOverflow);
        }
        if byte & 0x80 == 0 {
            return usize::try_from(value).map_err(|_| DecoderError::IntegerOverflow);
        }
    }
    // The last allowed byte still had its continuation bit set.
    Err(DecoderError::IntegerOverflow)
}

/// `2^N - 1`, the all-ones value of an N-bit prefix.
fn prefix_max(prefix_bits: u8) -> u8 {
    debug_assert!((1..=8).contains(&prefix_bits), "bad prefix {prefix_bits}");
    u8::MAX >> (8 - prefix_bits)
}

fn next_byte(input: &mut &[u8]) -> Result<u8, DecoderError> {
    let (&byte, rest) = input.split_first().ok_or(DecoderError::Truncated)?;
    *input = rest;
    Ok(byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(value: usize, prefix_bits: u8) -> Vec<u8> {
        let mut dst = Vec::new();
        encode(value, prefix_bits, 0, &mut dst);
        dst
    }

    fn decoded(mut bytes: &[u8], prefix_bits: u8) -> Result<usize, DecoderError> {
        let value = decode(&mut bytes, prefix_bits)?;
        assert!(bytes.is_empty(), "left over: {bytes:02x?}");
        Ok(value)
    }

    #[test]
    fn c_1_1_ten_with_a_5_bit_prefix() {
        assert_eq!(encoded(10, 5), [0b0000_1010]);
        assert_eq!(decoded(&[0b0000_1010], 5), Ok(10));
    }

    #[test]
    fn c_1_2_1337_with_a_5_bit_prefix() {
        assert_eq!(encoded(1337, 5), [0b0001_1111, 0b1001_1010, 0b0000_1010]);
        assert_eq!(decoded(&[0x1f, 0x9a, 0x0a], 5), Ok(1337));
    }

    #[test]
    fn c_1_3_42_at_an_octet_boundary() {
        assert_eq!(encoded(42, 8), [42]);
        assert_eq!(decoded(&[42], 8), Ok(42));
    }

    #[test]
    fn flags_are_kept_and_ignored_on_decode() {
        let mut dst = Vec::new();
        encode(3, 6, 0x40, &mut dst);
        assert_eq!(dst, [0x43]);
        assert_eq!(decoded(&dst, 6), Ok(3));
    }

    #[test]
    fn boundaries_round_trip_for_every_prefix() {
        for prefix_bits in 1..=8u8 {
            let max = usize::from(prefix_max(prefix_bits));
            for value in [0, 1, max - 1, max, max + 1, max + 127, max + 128, 1 << 20] {
                let bytes = encoded(value, prefix_bits);
                assert_eq!(
                    decoded(&bytes, prefix_bits),
                    Ok(value),
                    "{prefix_bits}:{value}"
                );
            }
            let value = u32::MAX as usize;
            assert_eq!(
                decoded(&encoded(value, prefix_bits), prefix_bits),
                Ok(value)
            );
        }
    }

    #[test]
    fn value_in_prefix_uses_one_byte() {
        assert_eq!(encoded(30, 5).len(), 1);
        assert_eq!(encoded(31, 5), [31, 0]);
    }

    #[test]
    fn empty_and_unfinished_integers_are_truncated() {
        assert_eq!(decoded(&[], 5), Err(DecoderError::Truncated));
        assert_eq!(decoded(&[0x1f], 5), Err(DecoderError::Truncated));
        assert_eq!(
            decoded(&[0x1f, 0x80, 0x80], 5),
            Err(DecoderError::Truncated)
        );
    }

    #[test]
    fn values_above_u32_are_rejected() {
        let mut bytes = encoded(u32::MAX as usize, 5);
        assert_eq!(decoded(&bytes, 5), Ok(u32::MAX as usize));
        // Bump the lowest continuation group: now one more than u32::MAX.
        bytes[1] += 1;
        assert_eq!(decoded(&bytes, 5), Err(DecoderError::IntegerOverflow));
        // 2^35 - 1 above the prefix.
        assert_eq!(
            decoded(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0x7f], 5),
            Err(DecoderError::IntegerOverflow)
        );
    }

    #[test]
    fn too_many_continuation_bytes_are_rejected() {
        // Zero-valued groups keep the value small but never end.
        let bytes = [0x1f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
        assert_eq!(decoded(&bytes, 5), Err(DecoderError::IntegerOverflow));
        // Five groups with a redundant zero at the end are still fine.
        assert_eq!(decoded(&[0x1f, 0x80, 0x80, 0x80, 0x80, 0x00], 5), Ok(31));
    }
}
