//! Message compression (gRPC's `doc/compression.md`): the encodings this crate
//! speaks, compressing a message, and decompressing one without letting a small
//! message grow past the receive limit.
//!
//! A call names its encoding in `grpc-encoding`; each message says whether it is
//! compressed with that encoding in its flag byte. Both sides list what they can
//! decode in `grpc-accept-encoding` ([`ACCEPT_ENCODING`]).
//!
//! Decompression is bounded: output is produced in small steps and the message is
//! refused with RESOURCE_EXHAUSTED as soon as it passes the limit, so a compression
//! bomb (a few KiB that would inflate to gigabytes) costs at most the limit in memory.
//! Bytes that are not valid data of the encoding give INTERNAL.
//!
//! ```
//! use lb_transport::grpc::compression::{Encoding, compress, decompress};
//! let packed = compress(Encoding::Gzip, &[7u8; 1000]);
//! assert!(packed.len() < 100);
//! assert_eq!(decompress(Encoding::Gzip, &packed, 4096)?, vec![7u8; 1000]);
//! // Past the limit: refused, whatever the gzip trailer claims.
//! let err = decompress(Encoding::Gzip, &packed, 999).unwrap_err();
//! assert_eq!(err.code(), lb_core::Code::ResourceExhausted);
//! # Ok::<(), lb_core::Status>(())
//! ```

use std::io::{Read, Write};

use lb_core::{Code, Status};

/// What this crate can decode, as it sends it in `grpc-accept-encoding`
/// (`zstd` too with the `zstd` feature).
#[cfg(not(feature = "zstd"))]
pub const ACCEPT_ENCODING: &str = "identity,deflate,gzip";

/// What this crate can decode, as it sends it in `grpc-accept-encoding`
/// (`zstd` too with the `zstd` feature).
#[cfg(feature = "zstd")]
pub const ACCEPT_ENCODING: &str = "identity,deflate,gzip,zstd";

/// The largest zstd window a received frame may ask for, as a power of two: a
/// frame header names the window the decoder must allocate, so without a cap a
/// few bytes could make it allocate 128 MiB before any output. The cap is the
/// receive limit rounded up, at least 8 MiB (2^23, what zstd's own levels 1 to 19
/// use for streaming) and at most 2^27 (zstd's default decoding limit).
#[cfg(feature = "zstd")]
fn zstd_window_log(max_len: usize) -> u32 {
    let needed = usize::BITS - max_len.saturating_sub(1).leading_zeros();
    needed.clamp(23, 27)
}

/// A message encoding named in `grpc-encoding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// No compression.
    Identity,
    /// `gzip` (RFC 1952).
    Gzip,
    /// `deflate`: the zlib format (RFC 1950), as gRPC's C core writes it.
    Deflate,
    /// `zstd` (RFC 8878), as tonic and grpc-go's zstd codec write it. Available
    /// with the `zstd` feature.
    #[cfg(feature = "zstd")]
    #[cfg_attr(docsrs, doc(cfg(feature = "zstd")))]
    Zstd,
}

impl Encoding {
    /// The name on the wire.
    ///
    /// ```
    /// use lb_transport::grpc::compression::Encoding;
    /// assert_eq!(Encoding::Gzip.name(), "gzip");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Gzip => "gzip",
            Self::Deflate => "deflate",
            #[cfg(feature = "zstd")]
            Self::Zstd => "zstd",
        }
    }

    /// The encoding a `grpc-encoding` value names, if this crate supports it.
    /// Names are matched exactly (they are lower case on the wire).
    ///
    /// ```
    /// use lb_transport::grpc::compression::Encoding;
    /// assert_eq!(Encoding::from_name(b"gzip"), Some(Encoding::Gzip));
    /// assert_eq!(Encoding::from_name(b"snappy"), None);
    /// ```
    pub fn from_name(name: &[u8]) -> Option<Self> {
        match name {
            b"identity" => Some(Self::Identity),
            b"gzip" => Some(Self::Gzip),
            b"deflate" => Some(Self::Deflate),
            #[cfg(feature = "zstd")]
            b"zstd" => Some(Self::Zstd),
            _ => None,
        }
    }

    /// Whether messages in this encoding are compressed (all but identity).
    pub fn is_compressed(self) -> bool {
        self != Self::Identity
    }

    /// Whether a `grpc-accept-encoding` value lists this encoding. Identity is
    /// always accepted.
    ///
    /// ```
    /// use lb_transport::grpc::compression::Encoding;
    /// assert!(Encoding::Gzip.accepted_by(b"identity, gzip"));
    /// assert!(!Encoding::Deflate.accepted_by(b"gzip"));
    /// assert!(Encoding::Identity.accepted_by(b""));
    /// ```
    pub fn accepted_by(self, accept_encoding: &[u8]) -> bool {
        !self.is_compressed()
            || accept_encoding
                .split(|&b| b == b',')
                .any(|name| name.trim_ascii() == self.name().as_bytes())
    }
}

/// `message` compressed with `encoding` (a copy for identity).
///
/// ```
/// use lb_transport::grpc::compression::{Encoding, compress};
/// assert_eq!(compress(Encoding::Identity, b"hi"), b"hi");
/// assert_eq!(&compress(Encoding::Gzip, b"hi")[..2], [0x1f, 0x8b]);
/// ```
pub fn compress(encoding: Encoding, message: &[u8]) -> Vec<u8> {
    let level = flate2::Compression::default();
    let out = Vec::with_capacity(message.len() / 2 + 32);
    // Writing into a Vec cannot fail.
    let written = match encoding {
        Encoding::Identity => return message.to_vec(),
        Encoding::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(out, level);
            enc.write_all(message).and_then(|()| enc.finish())
        }
        Encoding::Deflate => {
            let mut enc = flate2::write::ZlibEncoder::new(out, level);
            enc.write_all(message).and_then(|()| enc.finish())
        }
        // One frame that records the message's size, so the window fits it.
        #[cfg(feature = "zstd")]
        Encoding::Zstd => zstd::bulk::compress(message, zstd::DEFAULT_COMPRESSION_LEVEL),
    };
    written.expect("compressing into memory")
}

/// `compressed` decompressed with `encoding`, refused as soon as the output would
/// pass `max_len` bytes.
///
/// # Errors
///
/// RESOURCE_EXHAUSTED past `max_len` (without producing more than `max_len + 1`
/// bytes); INTERNAL when the bytes are not a complete, valid stream of `encoding`.
pub fn decompress(
    encoding: Encoding,
    compressed: &[u8],
    max_len: usize,
) -> Result<Vec<u8>, Status> {
    match encoding {
        Encoding::Identity => Ok(compressed.to_vec()),
        Encoding::Gzip => read_bounded(encoding, flate2::read::GzDecoder::new(compressed), max_len),
        Encoding::Deflate => read_bounded(
            encoding,
            flate2::read::ZlibDecoder::new(compressed),
            max_len,
        ),
        #[cfg(feature = "zstd")]
        Encoding::Zstd => {
            let invalid = |e: std::io::Error| {
                Status::internal(format!("invalid {} message: {e}", encoding.name()))
            };
            let mut decoder =
                zstd::stream::read::Decoder::with_buffer(compressed).map_err(invalid)?;
            decoder
                .window_log_max(zstd_window_log(max_len))
                .map_err(invalid)?;
            read_bounded(encoding, decoder, max_len)
        }
    }
}

/// Reads `decoder` to its end in steps, keeping at most `max_len + 1` bytes.
fn read_bounded(encoding: Encoding, decoder: impl Read, max_len: usize) -> Result<Vec<u8>, Status> {
    let mut out = Vec::new();
    let limit = u64::try_from(max_len).unwrap_or(u64::MAX).saturating_add(1);
    // `read_to_end` grows the buffer as output arrives, never by a size the data
    // claims; `take` stops it one byte past the limit.
    decoder
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| Status::internal(format!("invalid {} message: {e}", encoding.name())))?;
    if out.len() > max_len {
        return Err(Status::new(
            Code::ResourceExhausted,
            format!(
                "received message larger than max when decompressed ({} message above {max_len} bytes)",
                encoding.name()
            ),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every encoding this build speaks.
    fn all() -> Vec<Encoding> {
        let all = vec![Encoding::Identity, Encoding::Gzip, Encoding::Deflate];
        #[cfg(feature = "zstd")]
        let all = [all, vec![Encoding::Zstd]].concat();
        all
    }

    #[test]
    fn every_encoding_round_trips() {
        let text: Vec<u8> = (0..5000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        for enc in all() {
            for m in [&b""[..], b"x", &text[..]] {
                let packed = compress(enc, m);
                assert_eq!(decompress(enc, &packed, m.len()).unwrap(), m, "{enc:?}");
            }
            assert_eq!(Encoding::from_name(enc.name().as_bytes()), Some(enc));
        }
    }

    #[test]
    fn one_kib_bomb_is_refused_at_the_limit() {
        // 1 GiB of zeros compresses to about 1 MiB; a 10 MiB run to about 10 KiB.
        // Build a bomb of just about 1 KiB: 1 MiB of zeros.
        let bomb = compress(Encoding::Gzip, &vec![0u8; 1 << 20]);
        assert!(bomb.len() <= 1100, "{}", bomb.len());
        let err = decompress(Encoding::Gzip, &bomb, 64 << 10).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(err.message().contains("decompressed"), "{err}");
        // Exactly at the limit is fine.
        assert_eq!(
            decompress(Encoding::Gzip, &bomb, 1 << 20).unwrap().len(),
            1 << 20
        );
    }

    #[test]
    fn every_compressed_encoding_refuses_a_bomb_at_the_limit() {
        for enc in all().into_iter().filter(|e| e.is_compressed()) {
            let bomb = compress(enc, &vec![0u8; 4 << 20]);
            assert!(bomb.len() <= 8 << 10, "{enc:?}: {}", bomb.len());
            let err = decompress(enc, &bomb, 64 << 10).unwrap_err();
            assert_eq!(err.code(), Code::ResourceExhausted, "{enc:?}");
            assert_eq!(decompress(enc, &bomb, 4 << 20).unwrap().len(), 4 << 20);
            assert!(Encoding::from_name(enc.name().as_bytes()) == Some(enc));
            assert!(enc.accepted_by(ACCEPT_ENCODING.as_bytes()), "{enc:?}");
        }
    }

    /// A zstd frame whose header asks for a 64 MiB window is refused under a
    /// 4 MiB limit before the decoder allocates the window (zstd's own default
    /// would allow it), and accepted under a 64 MiB limit.
    #[cfg(feature = "zstd")]
    #[test]
    fn a_zstd_frame_asking_for_a_window_past_the_cap_is_refused() {
        assert_eq!(zstd_window_log(4 << 20), 23);
        assert_eq!(zstd_window_log(64 << 20), 26);
        assert_eq!(zstd_window_log(usize::MAX), 27);
        // Magic; a frame header descriptor without the single-segment flag; a
        // window descriptor of exponent 16 (2^(10+16) bytes); an empty last raw
        // block.
        let frame = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 16 << 3, 0x01, 0x00, 0x00];
        let err = decompress(Encoding::Zstd, &frame, 4 << 20).unwrap_err();
        assert_eq!(err.code(), Code::Internal, "{err}");
        assert_eq!(decompress(Encoding::Zstd, &frame, 64 << 20).unwrap(), b"");
    }

    #[test]
    fn garbage_and_truncation_are_internal() {
        for enc in all().into_iter().filter(|e| e.is_compressed()) {
            let err = decompress(enc, b"definitely not compressed", 1000).unwrap_err();
            assert_eq!(err.code(), Code::Internal, "{enc:?}");
            assert!(err.message().contains(enc.name()), "{err}");
            let packed = compress(enc, &[5u8; 500]);
            for cut in [1, packed.len() / 2, packed.len() - 1] {
                let err = decompress(enc, &packed[..cut], 1000).unwrap_err();
                assert_eq!(err.code(), Code::Internal, "{enc:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn accept_encoding_lists_are_split_on_commas() {
        assert!(Encoding::Gzip.accepted_by(ACCEPT_ENCODING.as_bytes()));
        assert!(Encoding::Deflate.accepted_by(b"gzip ,deflate"));
        assert!(!Encoding::Gzip.accepted_by(b"gzipx"));
    }
}
