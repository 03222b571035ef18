//! CONTINUATION frames (RFC 9113 section 6.10): the further fragments of a field block
//! started by HEADERS or PUSH_PROMISE.
//!
//! That a CONTINUATION follows a HEADERS, PUSH_PROMISE or CONTINUATION without END_HEADERS
//! on the same stream is a rule about the sequence of frames, which the connection checks.

use super::head::END_HEADERS;
use super::{FrameError, Head, Kind, Reason, StreamId};

/// A CONTINUATION frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continuation {
    /// The stream; never zero.
    pub stream_id: StreamId,
    /// The field block fragment, still HPACK-encoded.
    pub fragment: Vec<u8>,
    /// Whether this frame ends the field block.
    pub end_headers: bool,
}

impl Continuation {
    /// Parses a CONTINUATION frame.
    pub fn load(head: &Head, payload: &[u8]) -> Result<Self, FrameError> {
        debug_assert_eq!(head.kind(), Kind::Continuation);
        // "If a CONTINUATION frame is received with a Stream Identifier field of 0x00, the
        // recipient MUST respond with a connection error (Section 5.4.1) of type
        // PROTOCOL_ERROR."
        if head.stream_id().is_zero() {
            return Err(FrameError::connection(
                Reason::PROTOCOL_ERROR,
                "continuation frame on stream 0",
            ));
        }
        Ok(Self {
            stream_id: head.stream_id(),
            fragment: payload.to_vec(),
            end_headers: head.has_flag(END_HEADERS),
        })
    }

    /// Appends the frame to `dst`.
    ///
    /// # Panics
    ///
    /// Panics if the fragment is longer than 2^24-1 bytes; see [`Head::new`].
    pub fn encode(&self, dst: &mut Vec<u8>) {
        encode_one(self.stream_id, &self.fragment, self.end_headers, dst);
    }

    /// Appends `rest`, the part of a field block left after the first frame, as
    /// CONTINUATION frames of at most `max_frame_size` bytes, with END_HEADERS on the last.
    /// Writes nothing if `rest` is empty. `max_frame_size` must be non-zero.
    pub(super) fn encode_fragments(
        stream_id: StreamId,
        rest: &[u8],
        max_frame_size: usize,
        dst: &mut Vec<u8>,
    ) {
        debug_assert!(max_frame_size > 0);
        let max_frame_size = max_frame_size.max(1);
        let mut rest = rest;
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rest.len().min(max_frame_size));
            rest = tail;
            encode_one(stream_id, chunk, rest.is_empty(), dst);
        }
    }
}

/// Appends one CONTINUATION frame carrying `fragment`.
fn encode_one(stream_id: StreamId, fragment: &[u8], end_headers: bool, dst: &mut Vec<u8>) {
    let flags = if end_headers { END_HEADERS } else { 0 };
    Head::new(Kind::Continuation, flags, stream_id, fragment.len()).encode(dst);
    dst.extend_from_slice(fragment);
}

#[cfg(test)]
mod tests {
    use super::Continuation;
    use crate::frame::tests::{assert_conn_error, raw, read_all, read_one};
    use crate::frame::{Frame, Reason, StreamId};

    #[test]
    fn round_trips() {
        for end_headers in [false, true] {
            let frame = Continuation {
                stream_id: StreamId::new(11),
                fragment: b"more".to_vec(),
                end_headers,
            };
            let mut bytes = Vec::new();
            frame.encode(&mut bytes);
            assert_eq!(read_one(&bytes), Ok(Frame::Continuation(frame)));
        }
    }

    #[test]
    fn only_end_headers_is_a_flag() {
        // END_STREAM and PADDED mean nothing on CONTINUATION and must be ignored.
        let frame = read_one(&raw(0x9, 0xfb, 1, &[8, 0, 0])).expect("valid frame");
        let expected = Continuation {
            stream_id: StreamId::new(1),
            fragment: vec![8, 0, 0],
            end_headers: false,
        };
        assert_eq!(frame, Frame::Continuation(expected));
    }

    #[test]
    fn stream_zero_is_a_connection_protocol_error() {
        assert_conn_error(read_one(&raw(0x9, 0x4, 0, b"x")), Reason::PROTOCOL_ERROR);
    }

    #[test]
    fn fragments_split_with_end_headers_on_the_last() {
        let mut bytes = Vec::new();
        Continuation::encode_fragments(StreamId::new(1), &[1; 25], 10, &mut bytes);
        let frames = read_all(&bytes);
        let shape: Vec<(usize, bool)> = frames
            .iter()
            .map(|frame| match frame {
                Frame::Continuation(c) => (c.fragment.len(), c.end_headers),
                other => panic!("expected CONTINUATION, got {other:?}"),
            })
            .collect();
        assert_eq!(shape, [(10, false), (10, false), (5, true)]);

        let mut bytes = Vec::new();
        Continuation::encode_fragments(StreamId::new(1), &[], 10, &mut bytes);
        assert!(bytes.is_empty());
    }
}
