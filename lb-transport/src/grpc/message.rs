//! Length-prefixed messages: a 1-byte compressed flag, a 4-byte big-endian length,
//! then the message. DATA frame boundaries have nothing to do with message boundaries.
//!
//! The flag is 1 when the message is compressed with the call's `grpc-encoding`
//! ([`super::compression`]); [`MessageDecoder::set_encoding`] tells the
//! decoder which one, and it hands out messages decompressed.

use lb_core::{Code, Status};

use crate::grpc::compression::{self, Encoding};

/// The bytes before each message.
pub const PREFIX_LEN: usize = 5;

/// The default limit on a received message: 4 MiB, gRPC's default.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 4 * 1024 * 1024;

/// Appends `message` with its prefix (uncompressed) to `dst`.
///
/// # Panics
///
/// If the message is 4 GiB or larger.
///
/// ```
/// let mut out = Vec::new();
/// lb_transport::grpc::message::encode(b"hi", &mut out);
/// assert_eq!(out, [0, 0, 0, 0, 2, b'h', b'i']);
/// ```
pub fn encode(message: &[u8], dst: &mut Vec<u8>) {
    dst.reserve(PREFIX_LEN + message.len());
    dst.extend_from_slice(&prefix(message.len()));
    dst.extend_from_slice(message);
}

/// The prefix of an uncompressed message of `len` bytes, for sending a message
/// without copying it next to its prefix first.
///
/// # Panics
///
/// If `len` is 4 GiB or more.
///
/// ```
/// assert_eq!(lb_transport::grpc::message::prefix(258), [0, 0, 0, 1, 2]);
/// ```
pub fn prefix(len: usize) -> [u8; PREFIX_LEN] {
    flagged_prefix(false, len)
}

/// The prefix of a message of `len` bytes, flagged compressed when `compressed`.
///
/// # Panics
///
/// If `len` is 4 GiB or more.
///
/// ```
/// assert_eq!(lb_transport::grpc::message::flagged_prefix(true, 3), [1, 0, 0, 0, 3]);
/// ```
pub fn flagged_prefix(compressed: bool, len: usize) -> [u8; PREFIX_LEN] {
    let len = u32::try_from(len).expect("a gRPC message is below 4 GiB");
    let [a, b, c, d] = len.to_be_bytes();
    [u8::from(compressed), a, b, c, d]
}

/// Appends `message` to `dst` as `encoding` sends it: compressed and flagged, or
/// as it is for identity.
///
/// # Panics
///
/// If the message (compressed) is 4 GiB or larger.
///
/// ```
/// use lb_transport::grpc::compression::Encoding;
/// use lb_transport::grpc::message::{encode_with, MessageDecoder};
/// let mut wire = Vec::new();
/// encode_with(Encoding::Gzip, &[b'a'; 100], &mut wire);
/// assert_eq!(wire[0], 1);
/// let mut dec = MessageDecoder::new(1024);
/// dec.set_encoding(Some(Encoding::Gzip));
/// dec.push(&wire)?;
/// assert_eq!(dec.next_message()?, Some(vec![b'a'; 100]));
/// # Ok::<(), lb_core::Status>(())
/// ```
pub fn encode_with(encoding: Encoding, message: &[u8], dst: &mut Vec<u8>) {
    if encoding.is_compressed() {
        let packed = compression::compress(encoding, message);
        dst.reserve(PREFIX_LEN + packed.len());
        dst.extend_from_slice(&flagged_prefix(true, packed.len()));
        dst.extend_from_slice(&packed);
    } else {
        encode(message, dst);
    }
}

/// Reassembles messages from DATA payloads, refusing any message above a size limit
/// as soon as its prefix arrives, so memory stays bounded by the limit. Compressed
/// messages are decompressed under the same limit (see
/// [`compression::decompress`]).
///
/// ```
/// use lb_transport::grpc::message::{encode, MessageDecoder};
/// let mut wire = Vec::new();
/// encode(b"hello", &mut wire);
/// let mut dec = MessageDecoder::new(1024);
/// dec.push(&wire[..3])?;
/// assert_eq!(dec.next_message()?, None);
/// dec.push(&wire[3..])?;
/// assert_eq!(dec.next_message()?, Some(b"hello".to_vec()));
/// dec.finish()?;
/// # Ok::<(), lb_core::Status>(())
/// ```
#[derive(Debug)]
pub struct MessageDecoder {
    max_len: usize,
    buf: Vec<u8>,
    /// Where the unread bytes of `buf` start: messages taken out only move it, so a
    /// frame full of small messages is not shifted once per message.
    pos: usize,
    /// The call's `grpc-encoding`, if this crate supports it; compressed messages
    /// are refused without one.
    encoding: Option<Encoding>,
    /// The last message returned was compressed on the wire.
    last_compressed: bool,
    /// The last message returned took this many bytes on the wire (prefix
    /// included).
    last_wire_len: usize,
}

impl MessageDecoder {
    /// A decoder that refuses messages longer than `max_len`.
    pub fn new(max_len: usize) -> Self {
        Self {
            max_len,
            buf: Vec::new(),
            pos: 0,
            encoding: None,
            last_compressed: false,
            last_wire_len: 0,
        }
    }

    /// How many bytes the last message [`next_message`](Self::next_message)
    /// returned took on the wire, prefix included (its compressed size).
    pub fn last_wire_len(&self) -> usize {
        self.last_wire_len
    }

    /// Whether the last message [`next_message`](Self::next_message) returned was
    /// compressed on the wire (flag 1).
    pub fn last_was_compressed(&self) -> bool {
        self.last_compressed
    }

    /// The encoding the call's `grpc-encoding` names (`None`: absent or not
    /// supported). Messages flagged compressed are decompressed with it.
    pub fn set_encoding(&mut self, encoding: Option<Encoding>) {
        self.encoding = encoding;
    }

    /// Adds received bytes.
    ///
    /// # Errors
    ///
    /// RESOURCE_EXHAUSTED when a message is announced above the limit; INTERNAL when
    /// it is flagged compressed but the call has no supported `grpc-encoding`
    /// (or identity), or its flag is neither 0 nor 1.
    pub fn push(&mut self, data: &[u8]) -> Result<(), Status> {
        if !data.is_empty() && self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
        self.check_prefix()
    }

    fn check_prefix(&self) -> Result<(), Status> {
        let Some(prefix) = self.buf[self.pos..].get(..PREFIX_LEN) else {
            return Ok(());
        };
        match (prefix[0], self.encoding) {
            (0, _) => {}
            (1, Some(e)) if e.is_compressed() => {}
            (1, _) => {
                return Err(Status::internal(
                    "received a compressed message, but the call has no supported grpc-encoding",
                ));
            }
            (flag, _) => {
                return Err(Status::internal(format!(
                    "invalid message flag {flag:#04x}"
                )));
            }
        }
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if len > self.max_len {
            return Err(Status::new(
                Code::ResourceExhausted,
                format!(
                    "received message larger than max ({len} vs. {})",
                    self.max_len
                ),
            ));
        }
        Ok(())
    }

    /// The next complete message, if one has arrived, decompressed if it was
    /// compressed.
    ///
    /// # Errors
    ///
    /// RESOURCE_EXHAUSTED when it decompresses past the limit; INTERNAL when it is
    /// not valid data of the call's encoding. The decoder must not be used after.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, Status> {
        let unread = &self.buf[self.pos..];
        let Some(prefix) = unread.get(..PREFIX_LEN) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if unread.len() < PREFIX_LEN + len {
            return Ok(None);
        }
        let body = &unread[PREFIX_LEN..PREFIX_LEN + len];
        self.last_compressed = prefix[0] == 1;
        self.last_wire_len = PREFIX_LEN + len;
        let message = match self.encoding {
            Some(encoding) if prefix[0] == 1 => {
                compression::decompress(encoding, body, self.max_len)?
            }
            _ => body.to_vec(),
        };
        self.pos += PREFIX_LEN + len;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        // The next message's prefix may already be here; the caller sees any error on
        // its next push, and `finish` re-checks.
        Ok(Some(message))
    }

    /// Whether a whole message has arrived that [`next_message`](Self::next_message)
    /// has not returned yet.
    pub fn has_message(&self) -> bool {
        let unread = &self.buf[self.pos..];
        unread.get(..PREFIX_LEN).is_some_and(|prefix| {
            let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
            unread.len() >= PREFIX_LEN + len
        })
    }

    /// Bytes received but not yet returned as a message.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Checks that the stream ended on a message boundary.
    ///
    /// # Errors
    ///
    /// INTERNAL if part of a message is left, or the limit/compression checks fail on
    /// a buffered prefix.
    pub fn finish(&self) -> Result<(), Status> {
        self.check_prefix()?;
        match self.buffered() {
            0 => Ok(()),
            left => Err(Status::internal(format!(
                "stream ended inside a message ({left} bytes left over)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_anywhere_reassemble_in_order() {
        let mut wire = Vec::new();
        for m in [&b""[..], b"a", &[7u8; 300][..]] {
            encode(m, &mut wire);
        }
        for split in 0..wire.len() {
            let mut dec = MessageDecoder::new(1000);
            let mut got = Vec::new();
            for part in [&wire[..split], &wire[split..]] {
                dec.push(part).unwrap();
                while let Some(m) = dec.next_message().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got.len(), 3, "split {split}");
            assert_eq!(got[2], vec![7u8; 300]);
            dec.finish().unwrap();
        }
    }

    #[test]
    fn oversized_message_is_refused_from_its_prefix() {
        let mut dec = MessageDecoder::new(10);
        let err = dec.push(&[0, 0, 0, 0, 11]).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(err.message().contains("11 vs. 10"), "{err}");
    }

    #[test]
    fn compressed_flag_and_truncation_are_errors() {
        let mut dec = MessageDecoder::new(10);
        assert_eq!(
            dec.push(&[1, 0, 0, 0, 1]).unwrap_err().code(),
            Code::Internal
        );
        let mut dec = MessageDecoder::new(10);
        dec.push(&[0, 0, 0, 0, 3, b'a']).unwrap();
        assert_eq!(dec.finish().unwrap_err().code(), Code::Internal);
        // Identity is no license to send flag 1, and 2 is no flag at all.
        let mut dec = MessageDecoder::new(10);
        dec.set_encoding(Some(Encoding::Identity));
        assert_eq!(
            dec.push(&[1, 0, 0, 0, 1]).unwrap_err().code(),
            Code::Internal
        );
        let mut dec = MessageDecoder::new(10);
        dec.set_encoding(Some(Encoding::Gzip));
        let err = dec.push(&[2, 0, 0, 0, 1]).unwrap_err();
        assert_eq!(err.code(), Code::Internal);
    }

    #[test]
    fn compressed_and_plain_messages_mix_on_one_call() {
        for encoding in [Encoding::Gzip, Encoding::Deflate] {
            let mut wire = Vec::new();
            encode_with(encoding, &[9u8; 2000], &mut wire);
            encode(b"plain", &mut wire);
            encode_with(encoding, b"", &mut wire);
            let mut dec = MessageDecoder::new(2000);
            dec.set_encoding(Some(encoding));
            let mut got = Vec::new();
            for byte in &wire {
                dec.push(std::slice::from_ref(byte)).unwrap();
                while let Some(m) = dec.next_message().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got, [vec![9u8; 2000], b"plain".to_vec(), Vec::new()]);
            dec.finish().unwrap();
        }
    }

    #[test]
    fn a_bomb_is_refused_after_its_prefix_passed() {
        // About 1 KiB on the wire, 1 MiB inflated; the limit is 64 KiB.
        let mut wire = Vec::new();
        encode_with(Encoding::Gzip, &vec![0u8; 1 << 20], &mut wire);
        assert!(wire.len() < 1200, "{}", wire.len());
        let mut dec = MessageDecoder::new(64 << 10);
        dec.set_encoding(Some(Encoding::Gzip));
        dec.push(&wire).unwrap();
        let err = dec.next_message().unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
    }

    #[test]
    fn garbage_flagged_compressed_is_internal() {
        let mut wire = flagged_prefix(true, 4).to_vec();
        wire.extend_from_slice(b"junk");
        let mut dec = MessageDecoder::new(100);
        dec.set_encoding(Some(Encoding::Gzip));
        dec.push(&wire).unwrap();
        let err = dec.next_message().unwrap_err();
        assert_eq!(err.code(), Code::Internal);
        assert!(err.message().contains("invalid gzip message"), "{err}");
    }
}
