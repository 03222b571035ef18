//! Readers for the protobuf shapes every xDS resource uses (wrapper values,
//! durations, `Any`, repeated sub-messages), on lb-core's `protowire`, so each
//! resource decoder reads only its own fields. Offsets in errors stay absolute
//! and each nested error names its field path.

use std::time::Duration;

use lb_core::DecodeError;
use lb_core::protowire::{Reader, wire};

/// Calls `each(field, wire_type, reader)` for every field of `bytes` (whose
/// first byte is at offset `base`); `each` must consume the field's value.
///
/// An error from inside a field's value (a nested message read with `fields`
/// again) comes back placed within that field. An error in reading the field
/// itself already names it (its path is just `[field]`) and is left so; the
/// one ambiguous case, a nested message failing in its own field of the same
/// number, reports the shorter path, with the exact byte offset either way.
pub(crate) fn fields<'a>(
    bytes: &'a [u8],
    base: usize,
    mut each: impl FnMut(u32, u8, &mut Reader<'a>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let mut r = Reader::new(bytes, base);
    while let Some((field, wt)) = r.tag()? {
        each(field, wt, &mut r).map_err(|e| {
            if e.field_path() == [field] {
                e
            } else {
                e.within(field)
            }
        })?;
    }
    Ok(())
}

/// Every occurrence of the sub-message field `number`, with its offset.
pub(crate) fn messages(
    bytes: &[u8],
    base: usize,
    number: u32,
) -> Result<Vec<(usize, &[u8])>, DecodeError> {
    let mut out = Vec::new();
    fields(bytes, base, |field, wt, r| {
        if field == number && wt == wire::LEN {
            out.push(r.len_delimited(field)?);
        } else {
            r.skip(field, wt)?;
        }
        Ok(())
    })?;
    Ok(out)
}

/// The value of a wrapper message (`BoolValue`, `UInt32Value`, `UInt64Value`):
/// its varint field 1, 0 when absent.
pub(crate) fn wrapped(bytes: &[u8], base: usize) -> Result<u64, DecodeError> {
    let mut v = 0;
    fields(bytes, base, |f, w, r| {
        match (f, w) {
            (1, wire::VARINT) => v = r.varint(f)?,
            _ => r.skip(f, w)?,
        }
        Ok(())
    })?;
    Ok(v)
}

/// A `UInt32Value`, saturating a value past 32 bits.
pub(crate) fn wrapped_u32(bytes: &[u8], base: usize) -> Result<u32, DecodeError> {
    Ok(u32::try_from(wrapped(bytes, base)?).unwrap_or(u32::MAX))
}

/// A `google.protobuf.Duration`; negative parts count as zero.
pub(crate) fn duration(bytes: &[u8], base: usize) -> Result<Duration, DecodeError> {
    let (mut secs, mut nanos) = (0i64, 0i64);
    fields(bytes, base, |f, w, r| {
        match (f, w) {
            (1, wire::VARINT) => secs = r.varint(f)? as i64,
            (2, wire::VARINT) => nanos = i64::from(r.varint(f)? as i32),
            _ => r.skip(f, w)?,
        }
        Ok(())
    })?;
    Ok(Duration::new(
        secs.max(0) as u64,
        nanos.clamp(0, 999_999_999) as u32,
    ))
}

/// A `google.protobuf.Any` as (type URL, encoded value).
pub(crate) type RawAny = (String, Vec<u8>);

/// Reads a `google.protobuf.Any`.
pub(crate) fn any(bytes: &[u8], base: usize) -> Result<RawAny, DecodeError> {
    let (mut type_url, mut value) = (String::new(), Vec::new());
    fields(bytes, base, |f, w, r| {
        match (f, w) {
            (1, wire::LEN) => type_url = r.string(f)?,
            (2, wire::LEN) => value = r.len_delimited(f)?.1.to_vec(),
            _ => r.skip(f, w)?,
        }
        Ok(())
    })?;
    Ok((type_url, value))
}

/// A `FractionalPercent` as (numerator, denominator enum value).
pub(crate) fn fraction(bytes: &[u8], base: usize) -> Result<(u32, u64), DecodeError> {
    let (mut n, mut d) = (0u32, 0u64);
    fields(bytes, base, |f, w, r| {
        match (f, w) {
            (1, wire::VARINT) => n = r.varint(f)? as u32,
            (2, wire::VARINT) => d = r.varint(f)?,
            _ => r.skip(f, w)?,
        }
        Ok(())
    })?;
    Ok((n, d))
}

/// A `FractionalPercent` in parts per million (HUNDRED, TEN_THOUSAND and
/// MILLION denominators), capped at a million; `Err` gives back an unknown
/// denominator.
pub(crate) fn per_million(numerator: u32, denominator: u64) -> Result<u32, u64> {
    let scale: u64 = match denominator {
        0 => 10_000,
        1 => 100,
        2 => 1,
        other => return Err(other),
    };
    Ok(u64::from(numerator).saturating_mul(scale).min(1_000_000) as u32)
}

/// Which member of a `ConfigSource`'s oneof is set (3: `ads`, 5: `self`).
pub(crate) fn config_source_kind(bytes: &[u8], base: usize) -> Result<Option<u32>, DecodeError> {
    let mut kind = None;
    fields(bytes, base, |f, w, r| {
        if matches!(f, 1..=5 | 8) && w == wire::LEN {
            r.len_delimited(f)?;
            kind = Some(f);
        } else {
            r.skip(f, w)?;
        }
        Ok(())
    })?;
    Ok(kind)
}

/// Whether a `ConfigSource` is `ads` or `self`, the only sources gRPC reads.
pub(crate) fn ads_or_self(bytes: &[u8], base: usize) -> Result<bool, DecodeError> {
    Ok(matches!(config_source_kind(bytes, base)?, Some(3 | 5)))
}

/// A decoder's result for a resource named `name` (empty: unnamed, an error):
/// the name with the checked value, or the error with the name.
pub(crate) fn named<R>(
    name: String,
    check: impl FnOnce() -> Result<R, String>,
) -> Result<(String, R), (Option<String>, String)> {
    if name.is_empty() {
        return Err((None, "name is empty".to_owned()));
    }
    match check() {
        Ok(r) => Ok((name, r)),
        Err(e) => Err((Some(name), e)),
    }
}

/// Writers for tests: build the messages the decoders read.
#[cfg(test)]
pub(crate) mod build {
    use lb_core::protowire::{put_bytes, put_string, put_tag, put_varint, wire};

    /// A message built by `fill`.
    pub(crate) fn msg(fill: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut b = Vec::new();
        fill(&mut b);
        b
    }

    /// A varint field.
    pub(crate) fn varint(b: &mut Vec<u8>, field: u32, v: u64) {
        put_tag(b, field, wire::VARINT);
        put_varint(b, v);
    }

    /// A wrapper message (`UInt32Value` and the like).
    pub(crate) fn wrapped(v: u64) -> Vec<u8> {
        msg(|b| varint(b, 1, v))
    }

    /// A `Duration`.
    pub(crate) fn duration(secs: u64, nanos: u64) -> Vec<u8> {
        msg(|b| {
            varint(b, 1, secs);
            varint(b, 2, nanos);
        })
    }

    /// An `Any`.
    pub(crate) fn any(type_url: &str, value: &[u8]) -> Vec<u8> {
        msg(|a| {
            put_string(a, 1, type_url);
            put_bytes(a, 2, value);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::build::msg;
    use super::*;
    use lb_core::protowire::put_bytes;

    #[test]
    fn the_shared_shapes_read_back() {
        assert_eq!(wrapped(&build::wrapped(7), 0).unwrap(), 7);
        assert_eq!(wrapped(&[], 0).unwrap(), 0, "an empty wrapper is 0");
        assert_eq!(wrapped_u32(&build::wrapped(1 << 40), 0).unwrap(), u32::MAX);
        assert_eq!(
            duration(&build::duration(2, 500_000_000), 0).unwrap(),
            Duration::from_millis(2500)
        );
        assert_eq!(
            any(&build::any("t", b"v"), 0).unwrap(),
            ("t".to_owned(), b"v".to_vec())
        );
        let two = msg(|b| {
            put_bytes(b, 3, b"x");
            put_bytes(b, 4, b"y");
            put_bytes(b, 3, b"z");
        });
        let found: Vec<&[u8]> = messages(&two, 0, 3)
            .unwrap()
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        assert_eq!(found, [&b"x"[..], b"z"]);
        assert_eq!(
            config_source_kind(&msg(|b| put_bytes(b, 5, &[])), 0).unwrap(),
            Some(5)
        );
        assert_eq!(
            named("".into(), || Ok(1)),
            Err((None, "name is empty".to_owned()))
        );
        assert_eq!(
            named("n".into(), || Err::<(), _>("bad".into())),
            Err((Some("n".into()), "bad".into()))
        );
        // A field that runs past the end names itself once; an error inside a
        // nested message names the path down to it.
        let err = messages(&[0x1a, 0x05], 0, 3).unwrap_err();
        assert_eq!(err.field_path(), [3], "{err}");
        let nested = msg(|b| put_bytes(b, 2, &[0x0a, 0x09]));
        let err = fields(&nested, 0, |f, _, r| {
            let (base, inner) = r.len_delimited(f)?;
            messages(inner, base, 1).map(|_| ())
        })
        .unwrap_err();
        assert_eq!(err.field_path(), [2, 1], "{err}");
    }
}
