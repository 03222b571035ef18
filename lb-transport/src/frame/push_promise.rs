//! PUSH_PROMISE frames (RFC 9113 section 6.6): a server reserving a stream for a pushed
//! response, with the first fragment of the promised request's field block.
//!
//! Whether push is enabled, whether the receiver is a client, and whether the promised
//! stream is idle are the connection's checks.

use super::head::{END_HEADERS, PADDED};
use super::{
    Continuation, FrameError, Head, Kind, Reason, StreamId, clamp_max_frame_size, encode_padding,
    padding_len, split_pad_len, trim_padding,
};

/// The length of the Promised Stream ID field.
const PROMISED_ID_LEN: usize = 4;

/// A PUSH_PROMISE frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushPromise {
    /// The stream the promise is associated with; never zero.
    pub stream_id: StreamId,
    /// The stream the server reserves; even and non-zero.
    pub promised_id: StreamId,
    /// The field block fragment, still HPACK-encoded.
    pub fragment: Vec<u8>,
    /// Whether the fragment is the whole field block, with no CONTINUATION to follow.
    pub end_headers: bool,
    /// The length of the padding when the PADDED flag is set.
    pub pad_len: Option<u8>,
}

impl PushPromise {
    /// An unpadded PUSH_PROMISE frame.
    pub fn new(
        stream_id: StreamId,
        promised_id: StreamId,
        fragment: Vec<u8>,
        end_headers: bool,
    ) -> Self {
        Self {
            stream_id,
            promised_id,
            fragment,
            end_headers,
            pad_len: None,
        }
    }

    /// Parses a PUSH_PROMISE frame.
    pub fn load(head: &Head, payload: &[u8]) -> Result<Self, FrameError> {
        debug_assert_eq!(head.kind(), Kind::PushPromise);
        // "If the Stream Identifier field specifies the value 0x00, a recipient MUST respond
        // with a connection error (Section 5.4.1) of type PROTOCOL_ERROR."
        if head.stream_id().is_zero() {
            return Err(FrameError::connection(
                Reason::PROTOCOL_ERROR,
                "push_promise frame on stream 0",
            ));
        }
        let (pad_len, rest) = if head.has_flag(PADDED) {
            let (pad_len, rest) = split_pad_len(payload)?;
            (Some(pad_len), rest)
        } else {
            (None, payload)
        };
        // A frame "too small to contain mandatory frame data" is a FRAME_SIZE_ERROR, and a
        // connection error for "any frame carrying a field block".
        let Some((promised_id, rest)) = rest.split_first_chunk::<PROMISED_ID_LEN>() else {
            return Err(FrameError::connection(
                Reason::FRAME_SIZE_ERROR,
                "push_promise frame too short for promised id",
            ));
        };
        // The reserved bit in front of the Promised Stream ID is ignored like the one in
        // the frame header.
        let promised_id = StreamId::new(u32::from_be_bytes(*promised_id));
        // "A receiver MUST treat the receipt of a PUSH_PROMISE that promises an illegal
        // stream identifier (Section 5.1.1) as a connection error (Section 5.4.1) of type
        // PROTOCOL_ERROR." Whatever the stream states, zero and odd identifiers are never
        // legal, since a server's streams "MUST use even-numbered stream identifiers".
        if !promised_id.is_server_initiated() {
            return Err(FrameError::connection(
                Reason::PROTOCOL_ERROR,
                "push_promise promises a non-server stream",
            ));
        }
        let fragment = match pad_len {
            Some(pad_len) => trim_padding(rest, pad_len)?,
            None => rest,
        };
        Ok(Self {
            stream_id: head.stream_id(),
            promised_id,
            fragment: fragment.to_vec(),
            end_headers: head.has_flag(END_HEADERS),
            pad_len,
        })
    }

    /// Appends the frame to `dst` as one PUSH_PROMISE frame, whatever its length.
    ///
    /// The caller keeps the payload within the peer's maximum frame size, or uses
    /// [`PushPromise::encode_block`] to split a field block.
    ///
    /// # Panics
    ///
    /// Panics if the payload is longer than 2^24-1 bytes; see [`Head::new`].
    pub fn encode(&self, dst: &mut Vec<u8>) {
        let mut flags = 0;
        if self.end_headers {
            flags |= END_HEADERS;
        }
        if self.pad_len.is_some() {
            flags |= PADDED;
        }
        let payload_len = padding_len(self.pad_len) + PROMISED_ID_LEN + self.fragment.len();
        Head::new(Kind::PushPromise, flags, self.stream_id, payload_len).encode(dst);
        if let Some(pad_len) = self.pad_len {
            dst.push(pad_len);
        }
        dst.extend_from_slice(&self.promised_id.value().to_be_bytes());
        dst.extend_from_slice(&self.fragment);
        encode_padding(self.pad_len, dst);
    }

    /// Appends a whole field block to `dst` as one PUSH_PROMISE frame followed by as many
    /// CONTINUATION frames as needed, each with at most `max_frame_size` payload bytes and
    /// END_HEADERS on the last frame only.
    ///
    /// `max_frame_size` is the peer's SETTINGS_MAX_FRAME_SIZE and is clamped to the range
    /// that setting allows, 2^14..=2^24-1.
    pub fn encode_block(
        stream_id: StreamId,
        promised_id: StreamId,
        block: &[u8],
        max_frame_size: usize,
        dst: &mut Vec<u8>,
    ) {
        let max_frame_size = clamp_max_frame_size(max_frame_size);
        // The Promised Stream ID takes four bytes of the first frame.
        let first_len = block.len().min(max_frame_size - PROMISED_ID_LEN);
        let (first, rest) = block.split_at(first_len);
        let flags = if rest.is_empty() { END_HEADERS } else { 0 };
        let payload_len = PROMISED_ID_LEN + first.len();
        Head::new(Kind::PushPromise, flags, stream_id, payload_len).encode(dst);
        dst.extend_from_slice(&promised_id.value().to_be_bytes());
        dst.extend_from_slice(first);
        Continuation::encode_fragments(stream_id, rest, max_frame_size, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::PushPromise;
    use crate::frame::tests::{assert_conn_error, raw, read_all, read_one};
    use crate::frame::{Frame, Reason, StreamId};

    #[test]
    fn round_trips() {
        let frames = [
            PushPromise::new(StreamId::new(1), StreamId::new(2), b"req".to_vec(), true),
            PushPromise::new(
                StreamId::new(3),
                StreamId::new(0x7fff_fffe),
                Vec::new(),
                false,
            ),
            PushPromise {
                stream_id: StreamId::new(5),
                promised_id: StreamId::new(4),
                fragment: b"padded".to_vec(),
                end_headers: true,
                pad_len: Some(9),
            },
        ];
        for frame in frames {
            let mut bytes = Vec::new();
            frame.encode(&mut bytes);
            assert_eq!(read_one(&bytes), Ok(Frame::PushPromise(frame)));
        }
    }

    #[test]
    fn parses_padding_and_ignores_the_reserved_bit() {
        // Flags: PADDED | END_HEADERS, plus unused bits including END_STREAM.
        let payload = [1, 0x80, 0, 0, 2, b'q', 0];
        let frame = read_one(&raw(0x5, 0xfd, 1, &payload)).expect("valid frame");
        let expected = PushPromise {
            stream_id: StreamId::new(1),
            promised_id: StreamId::new(2),
            fragment: b"q".to_vec(),
            end_headers: true,
            pad_len: Some(1),
        };
        assert_eq!(frame, Frame::PushPromise(expected));
    }

    #[test]
    fn stream_zero_is_a_connection_protocol_error() {
        assert_conn_error(
            read_one(&raw(0x5, 0x4, 0, &[0, 0, 0, 2])),
            Reason::PROTOCOL_ERROR,
        );
    }

    #[test]
    fn too_short_for_promised_id_is_a_connection_frame_size_error() {
        assert_conn_error(
            read_one(&raw(0x5, 0x4, 1, &[0, 0, 2])),
            Reason::FRAME_SIZE_ERROR,
        );
        assert_conn_error(read_one(&raw(0x5, 0xc, 1, &[])), Reason::FRAME_SIZE_ERROR);
        assert_conn_error(
            read_one(&raw(0x5, 0xc, 1, &[0, 0, 0, 2])),
            Reason::FRAME_SIZE_ERROR,
        );
    }

    #[test]
    fn padding_over_the_payload_is_a_connection_protocol_error() {
        // Two bytes of padding would eat into the Promised Stream ID.
        assert_conn_error(
            read_one(&raw(0x5, 0xc, 1, &[2, 0, 0, 0, 2, 0])),
            Reason::PROTOCOL_ERROR,
        );
        // Exactly one byte of padding is fine.
        assert!(read_one(&raw(0x5, 0xc, 1, &[1, 0, 0, 0, 2, 0])).is_ok());
    }

    #[test]
    fn illegal_promised_id_is_a_connection_protocol_error() {
        for promised in [0u8, 1, 3] {
            assert_conn_error(
                read_one(&raw(0x5, 0x4, 1, &[0, 0, 0, promised])),
                Reason::PROTOCOL_ERROR,
            );
        }
    }

    #[test]
    fn block_splits_into_continuations() {
        let block: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        let mut bytes = Vec::new();
        PushPromise::encode_block(
            StreamId::new(1),
            StreamId::new(2),
            &block,
            16_384,
            &mut bytes,
        );
        let frames = read_all(&bytes);
        assert_eq!(frames.len(), 2);
        let Frame::PushPromise(promise) = &frames[0] else {
            panic!("expected PUSH_PROMISE, got {:?}", frames[0]);
        };
        assert!(!promise.end_headers);
        assert_eq!(promise.promised_id, StreamId::new(2));
        // The first frame's payload is the 4-byte promised id plus the fragment.
        assert_eq!(promise.fragment.len(), 16_384 - 4);
        let Frame::Continuation(continuation) = &frames[1] else {
            panic!("expected CONTINUATION, got {:?}", frames[1]);
        };
        assert!(continuation.end_headers);
        let mut joined = promise.fragment.clone();
        joined.extend_from_slice(&continuation.fragment);
        assert_eq!(joined, block);

        let mut bytes = Vec::new();
        PushPromise::encode_block(StreamId::new(1), StreamId::new(2), b"x", 16_384, &mut bytes);
        assert_eq!(
            read_all(&bytes),
            [Frame::PushPromise(PushPromise::new(
                StreamId::new(1),
                StreamId::new(2),
                b"x".to_vec(),
                true
            ))]
        );
    }
}
