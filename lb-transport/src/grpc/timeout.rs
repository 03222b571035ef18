//! `grpc-timeout`: a positive integer of at most 8 digits and a unit (`H M S m u n`).

use std::time::Duration;

/// The largest value a `grpc-timeout` may carry.
const MAX_VALUE: u128 = 99_999_999;

/// Encodes a timeout in the finest unit whose value fits in 8 digits, rounding up so
/// the server never sees a shorter deadline than the client's. A zero timeout is sent
/// as `0n`.
///
/// ```
/// use std::time::Duration;
/// use lb_transport::grpc::timeout::encode;
/// assert_eq!(encode(Duration::from_millis(1500)), "1500000u");
/// assert_eq!(encode(Duration::from_secs(3600 * 100_000)), "6000000M");
/// assert_eq!(encode(Duration::ZERO), "0n");
/// ```
pub fn encode(timeout: Duration) -> String {
    let nanos = timeout.as_nanos();
    const UNITS: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (per, unit) in UNITS {
        let value = nanos.div_ceil(per);
        if value <= MAX_VALUE {
            return format!("{value}{unit}");
        }
    }
    format!("{MAX_VALUE}H")
}

/// Decodes a `grpc-timeout` value.
///
/// # Errors
///
/// The value is empty, has more than 8 digits, a non-digit, or an unknown unit.
///
/// ```
/// use std::time::Duration;
/// use lb_transport::grpc::timeout::decode;
/// assert_eq!(decode(b"250m"), Ok(Duration::from_millis(250)));
/// assert!(decode(b"123456789S").is_err());
/// ```
pub fn decode(text: &[u8]) -> Result<Duration, &'static str> {
    let (&unit, digits) = text.split_last().ok_or("empty grpc-timeout")?;
    if digits.is_empty() || digits.len() > 8 {
        return Err("grpc-timeout needs 1 to 8 digits");
    }
    let mut value: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err("grpc-timeout value is not decimal");
        }
        value = value * 10 + u64::from(d - b'0');
    }
    Ok(match unit {
        b'H' => Duration::from_secs(value * 3600),
        b'M' => Duration::from_secs(value * 60),
        b'S' => Duration::from_secs(value),
        b'm' => Duration::from_millis(value),
        b'u' => Duration::from_micros(value),
        b'n' => Duration::from_nanos(value),
        _ => return Err("grpc-timeout has an unknown unit"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_in_the_finest_unit_that_fits_and_never_shortens() {
        let cases = [
            (Duration::from_nanos(1), "1n"),
            (Duration::from_nanos(99_999_999), "99999999n"),
            (Duration::from_nanos(100_000_000), "100000u"),
            (Duration::from_nanos(100_000_001), "100001u"),
            // 10^8 ms does not fit in 8 digits, so seconds it is.
            (Duration::from_secs(100_000), "100000S"),
            (Duration::from_secs(1), "1000000u"),
        ];
        for (d, want) in cases {
            assert_eq!(encode(d), want, "{d:?}");
            assert!(
                decode(want.as_bytes()).unwrap() >= d,
                "{want} shorter than {d:?}"
            );
        }
        assert_eq!(encode(Duration::MAX), "99999999H");
    }

    #[test]
    fn decode_rejects_malformed_values() {
        for bad in ["", "S", "1", "1x", "-1S", "123456789n", "1.5S", " 1S"] {
            assert!(decode(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert_eq!(decode(b"2M"), Ok(Duration::from_secs(120)));
        assert_eq!(
            decode(b"99999999H"),
            Ok(Duration::from_secs(99_999_999 * 3600))
        );
    }
}
