//! HEADERS frames (RFC 9113 section 6.2): the first fragment of a field block that opens a
//! stream or carries trailers.

use super::head::{END_HEADERS, END_STREAM, PADDED, PRIORITY};
use super::{
    Continuation, FrameError, Head, Kind, Reason, StreamDependency, StreamId, clamp_max_frame_size,
    encode_padding, padding_len, split_pad_len, trim_padding,
};

/// A HEADERS frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    /// The stream; never zero.
    pub stream_id: StreamId,
    /// The deprecated priority fields, present when the PRIORITY flag is set.
    pub priority: Option<StreamDependency>,
    /// The field block fragment, still HPACK-encoded.
    pub fragment: Vec<u8>,
    /// Whether this field block is the last the sender sends on the stream.
    pub end_stream: bool,
    /// Whether the fragment is the whole field block, with no CONTINUATION to follow.
    pub end_headers: bool,
    /// The length of the padding when the PADDED flag is set.
    pub pad_len: Option<u8>,
}

impl Headers {
    /// An unpadded HEADERS frame without priority fields.
    pub fn new(
        stream_id: StreamId,
        fragment: Vec<u8>,
        end_stream: bool,
        end_headers: bool,
    ) -> Self {
        Self {
            stream_id,
            priority: None,
            fragment,
            end_stream,
            end_headers,
            pad_len: None,
        }
    }

    /// Parses a HEADERS frame.
    pub fn load(head: &Head, payload: &[u8]) -> Result<Self, FrameError> {
        debug_assert_eq!(head.kind(), Kind::Headers);
        // "If a HEADERS frame is received whose Stream Identifier field is 0x00, the
        // recipient MUST respond with a connection error (Section 5.4.1) of type
        // PROTOCOL_ERROR."
        if head.stream_id().is_zero() {
            return Err(FrameError::connection(
                Reason::PROTOCOL_ERROR,
                "headers frame on stream 0",
            ));
        }
        let (pad_len, rest) = if head.has_flag(PADDED) {
            let (pad_len, rest) = split_pad_len(payload)?;
            (Some(pad_len), rest)
        } else {
            (None, payload)
        };
        let (priority, rest) = if head.has_flag(PRIORITY) {
            // A frame "too small to contain mandatory frame data" is a FRAME_SIZE_ERROR,
            // and a connection error for "any frame carrying a field block".
            let Some((fields, rest)) = rest.split_first_chunk::<{ StreamDependency::LEN }>() else {
                return Err(FrameError::connection(
                    Reason::FRAME_SIZE_ERROR,
                    "headers frame too short for priority",
                ));
            };
            (Some(StreamDependency::parse(*fields)), rest)
        } else {
            (None, rest)
        };
        let fragment = match pad_len {
            Some(pad_len) => trim_padding(rest, pad_len)?,
            None => rest,
        };
        Ok(Self {
            stream_id: head.stream_id(),
            priority,
            fragment: fragment.to_vec(),
            end_stream: head.has_flag(END_STREAM),
            end_headers: head.has_flag(END_HEADERS),
            pad_len,
        })
    }

    /// Appends the frame to `dst` as one HEADERS frame, whatever its length.
    ///
    /// The caller keeps the payload within the peer's maximum frame size, or uses
    /// [`Headers::encode_block`] to split a field block.
    ///
    /// # Panics
    ///
    /// Panics if the payload is longer than 2^24-1 bytes; see [`Head::new`].
    pub fn encode(&self, dst: &mut Vec<u8>) {
        let mut flags = 0;
        if self.end_stream {
            flags |= END_STREAM;
        }
        if self.end_headers {
            flags |= END_HEADERS;
        }
        if self.pad_len.is_some() {
            flags |= PADDED;
        }
        if self.priority.is_some() {
            flags |= PRIORITY;
        }
        let priority_len = self.priority.map_or(0, |_| StreamDependency::LEN);
        let payload_len = padding_len(self.pad_len) + priority_len + self.fragment.len();
        Head::new(Kind::Headers, flags, self.stream_id, payload_len).encode(dst);
        if let Some(pad_len) = self.pad_len {
            dst.push(pad_len);
        }
        if let Some(priority) = self.priority {
            dst.extend_from_slice(&priority.to_bytes());
        }
        dst.extend_from_slice(&self.fragment);
        encode_padding(self.pad_len, dst);
    }

    /// Appends a whole field block to `dst` as one HEADERS frame followed by as many
    /// CONTINUATION frames as needed, each with at most `max_frame_size` payload bytes.
    ///
    /// END_STREAM (if `end_stream`) goes on the HEADERS frame, since "the CONTINUATION
    /// frames are part of the HEADERS frame", and END_HEADERS on the last frame only.
    /// `max_frame_size` is the peer's SETTINGS_MAX_FRAME_SIZE and is clamped to the range
    /// that setting allows, 2^14..=2^24-1.
    pub fn encode_block(
        stream_id: StreamId,
        block: &[u8],
        end_stream: bool,
        max_frame_size: usize,
        dst: &mut Vec<u8>,
    ) {
        let max_frame_size = clamp_max_frame_size(max_frame_size);
        let (first, rest) = block.split_at(block.len().min(max_frame_size));
        let mut flags = 0;
        if end_stream {
            flags |= END_STREAM;
        }
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        Head::new(Kind::Headers, flags, stream_id, first.len()).encode(dst);
        dst.extend_from_slice(first);
        Continuation::encode_fragments(stream_id, rest, max_frame_size, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::Headers;
    use crate::frame::tests::{assert_conn_error, raw, read_all, read_one};
    use crate::frame::{Frame, Reason, StreamDependency, StreamId};

    #[test]
    fn round_trips() {
        let frames = [
            Headers::new(StreamId::new(1), b"block".to_vec(), false, true),
            Headers::new(StreamId::new(3), Vec::new(), true, false),
            Headers {
                stream_id: StreamId::new(5),
                priority: Some(StreamDependency {
                    dependency_id: StreamId::new(3),
                    exclusive: true,
                    weight: 200,
                }),
                fragment: b"abc".to_vec(),
                end_stream: true,
                end_headers: true,
                pad_len: Some(4),
            },
            Headers {
                stream_id: StreamId::new(7),
                priority: None,
                fragment: b"xyz".to_vec(),
                end_stream: false,
                end_headers: true,
                pad_len: Some(0),
            },
        ];
        for frame in frames {
            let mut bytes = Vec::new();
            frame.encode(&mut bytes);
            assert_eq!(read_one(&bytes), Ok(Frame::Headers(frame)));
        }
    }

    #[test]
    fn parses_padding_and_priority_in_wire_order() {
        // Flags: PRIORITY | PADDED | END_HEADERS | END_STREAM, plus unused bits.
        let payload = [2, 0x00, 0, 0, 3, 9, b'h', b'i', 0, 0];
        let frame = read_one(&raw(0x1, 0xed, 5, &payload)).expect("valid frame");
        let expected = Headers {
            stream_id: StreamId::new(5),
            priority: Some(StreamDependency {
                dependency_id: StreamId::new(3),
                exclusive: false,
                weight: 9,
            }),
            fragment: b"hi".to_vec(),
            end_stream: true,
            end_headers: true,
            pad_len: Some(2),
        };
        assert_eq!(frame, Frame::Headers(expected));
    }

    #[test]
    fn stream_zero_is_a_connection_protocol_error() {
        assert_conn_error(read_one(&raw(0x1, 0x4, 0, b"x")), Reason::PROTOCOL_ERROR);
    }

    #[test]
    fn padding_over_the_payload_is_a_connection_protocol_error() {
        assert_conn_error(
            read_one(&raw(0x1, 0x8 | 0x4, 1, &[3, b'a', 0])),
            Reason::PROTOCOL_ERROR,
        );
        // With PRIORITY the padding may not eat into the five priority bytes either.
        assert_conn_error(
            read_one(&raw(0x1, 0x28 | 0x4, 1, &[1, 0, 0, 0, 3, 16])),
            Reason::PROTOCOL_ERROR,
        );
    }

    #[test]
    fn padding_may_leave_an_empty_fragment() {
        let frame = read_one(&raw(0x1, 0x8 | 0x4, 1, &[2, 0, 0])).expect("valid frame");
        let Frame::Headers(headers) = frame else {
            panic!("expected HEADERS, got {frame:?}");
        };
        assert!(headers.fragment.is_empty());
        assert_eq!(headers.pad_len, Some(2));
    }

    #[test]
    fn too_short_for_fixed_fields_is_a_connection_frame_size_error() {
        assert_conn_error(read_one(&raw(0x1, 0x8, 1, &[])), Reason::FRAME_SIZE_ERROR);
        assert_conn_error(
            read_one(&raw(0x1, 0x20, 1, &[0, 0, 0, 3])),
            Reason::FRAME_SIZE_ERROR,
        );
        assert_conn_error(
            read_one(&raw(0x1, 0x28, 1, &[0, 0, 0, 0, 3])),
            Reason::FRAME_SIZE_ERROR,
        );
    }

    #[test]
    fn block_of_40_kib_makes_headers_and_two_continuations() {
        let block: Vec<u8> = (0..40 * 1024u32).map(|i| (i % 251) as u8).collect();
        let mut bytes = Vec::new();
        Headers::encode_block(StreamId::new(3), &block, true, 16_384, &mut bytes);
        let frames = read_all(&bytes);
        assert_eq!(frames.len(), 3);

        let Frame::Headers(headers) = &frames[0] else {
            panic!("expected HEADERS first, got {:?}", frames[0]);
        };
        assert_eq!(headers.stream_id, StreamId::new(3));
        assert!(headers.end_stream);
        assert!(!headers.end_headers);
        assert_eq!(headers.fragment.len(), 16_384);
        let mut joined = headers.fragment.clone();

        for (index, frame) in frames[1..].iter().enumerate() {
            let Frame::Continuation(continuation) = frame else {
                panic!("expected CONTINUATION, got {frame:?}");
            };
            assert_eq!(continuation.stream_id, StreamId::new(3));
            assert_eq!(continuation.end_headers, index == 1);
            joined.extend_from_slice(&continuation.fragment);
        }
        assert_eq!(joined, block);
        // 16384 + 16384 + 8192 bytes of fragment, plus three 9-byte headers.
        assert_eq!(bytes.len(), block.len() + 3 * 9);
    }

    #[test]
    fn small_block_makes_a_single_headers_frame() {
        let mut bytes = Vec::new();
        Headers::encode_block(StreamId::new(1), b"tiny", false, 16_384, &mut bytes);
        assert_eq!(
            read_all(&bytes),
            [Frame::Headers(Headers::new(
                StreamId::new(1),
                b"tiny".to_vec(),
                false,
                true
            ))]
        );

        let mut bytes = Vec::new();
        Headers::encode_block(StreamId::new(1), &[7; 16_384], false, 16_384, &mut bytes);
        assert_eq!(read_all(&bytes).len(), 1);
    }
}
