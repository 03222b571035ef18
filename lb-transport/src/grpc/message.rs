//! Length-prefixed messages: a 1-byte compressed flag, a 4-byte big-endian length,
//! then the message. DATA frame boundaries have nothing to do with message boundaries.

use lb_core::{Code, Status};

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
    let len = u32::try_from(len).expect("a gRPC message is below 4 GiB");
    let [a, b, c, d] = len.to_be_bytes();
    [0, a, b, c, d]
}

/// Reassembles messages from DATA payloads, refusing any message above a size limit
/// as soon as its prefix arrives, so memory stays bounded by the limit.
///
/// ```
/// use lb_transport::grpc::message::{encode, MessageDecoder};
/// let mut wire = Vec::new();
/// encode(b"hello", &mut wire);
/// let mut dec = MessageDecoder::new(1024);
/// dec.push(&wire[..3])?;
/// assert_eq!(dec.next_message(), None);
/// dec.push(&wire[3..])?;
/// assert_eq!(dec.next_message(), Some(b"hello".to_vec()));
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
}

impl MessageDecoder {
    /// A decoder that refuses messages longer than `max_len`.
    pub fn new(max_len: usize) -> Self {
        Self {
            max_len,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// Adds received bytes.
    ///
    /// # Errors
    ///
    /// RESOURCE_EXHAUSTED when a message is announced above the limit; INTERNAL when
    /// it is flagged compressed (this implementation never asks for compression).
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
        if prefix[0] != 0 {
            return Err(Status::internal(
                "received a compressed message, but no compression was negotiated",
            ));
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

    /// The next complete message, if one has arrived.
    pub fn next_message(&mut self) -> Option<Vec<u8>> {
        let unread = &self.buf[self.pos..];
        let prefix = unread.get(..PREFIX_LEN)?;
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if unread.len() < PREFIX_LEN + len {
            return None;
        }
        let message = unread[PREFIX_LEN..PREFIX_LEN + len].to_vec();
        self.pos += PREFIX_LEN + len;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        // The next message's prefix may already be here; the caller sees any error on
        // its next push, and `finish` re-checks.
        Some(message)
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
                while let Some(m) = dec.next_message() {
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
    }
}
