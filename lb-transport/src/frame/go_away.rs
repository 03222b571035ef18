//! GOAWAY frames (RFC 9113 section 6.8): shutdown of a connection, with the last stream
//! the sender processed.

use super::{FrameError, Head, Kind, Reason, StreamId};

/// The length of the fixed fields: Last-Stream-ID and Error Code.
const FIXED_LEN: usize = 8;

/// A GOAWAY frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoAway {
    /// The highest-numbered peer-initiated stream the sender might have acted on.
    pub last_stream_id: StreamId,
    /// Why the connection is closing.
    pub reason: Reason,
    /// Opaque diagnostic data.
    pub debug_data: Vec<u8>,
}

impl GoAway {
    /// A GOAWAY frame without debug data.
    pub const fn new(last_stream_id: StreamId, reason: Reason) -> Self {
        Self {
            last_stream_id,
            reason,
            debug_data: Vec::new(),
        }
    }

    /// Parses a GOAWAY frame.
    pub fn load(head: &Head, payload: &[u8]) -> Result<Self, FrameError> {
        debug_assert_eq!(head.kind(), Kind::GoAway);
        // "An endpoint MUST treat a GOAWAY frame with a stream identifier other than 0x00 as
        // a connection error (Section 5.4.1) of type PROTOCOL_ERROR."
        if !head.stream_id().is_zero() {
            return Err(FrameError::connection(
                Reason::PROTOCOL_ERROR,
                "goaway frame on a stream",
            ));
        }
        // A frame "too small to contain mandatory frame data" is a FRAME_SIZE_ERROR, and a
        // connection error for "any frame with a stream identifier of 0".
        let Some((&[s0, s1, s2, s3, e0, e1, e2, e3], debug_data)) =
            payload.split_first_chunk::<FIXED_LEN>()
        else {
            return Err(FrameError::connection(
                Reason::FRAME_SIZE_ERROR,
                "goaway frame shorter than 8 bytes",
            ));
        };
        Ok(Self {
            // The reserved bit in front of Last-Stream-ID is ignored.
            last_stream_id: StreamId::new(u32::from_be_bytes([s0, s1, s2, s3])),
            reason: Reason::new(u32::from_be_bytes([e0, e1, e2, e3])),
            debug_data: debug_data.to_vec(),
        })
    }

    /// Appends the frame to `dst`.
    ///
    /// # Panics
    ///
    /// Panics if the debug data makes the payload longer than 2^24-1 bytes; see
    /// [`Head::new`].
    pub fn encode(&self, dst: &mut Vec<u8>) {
        let payload_len = FIXED_LEN + self.debug_data.len();
        Head::new(Kind::GoAway, 0, StreamId::ZERO, payload_len).encode(dst);
        dst.extend_from_slice(&self.last_stream_id.value().to_be_bytes());
        dst.extend_from_slice(&self.reason.code().to_be_bytes());
        dst.extend_from_slice(&self.debug_data);
    }
}

#[cfg(test)]
mod tests {
    use super::GoAway;
    use crate::frame::tests::{assert_conn_error, raw, read_one};
    use crate::frame::{Frame, Reason, StreamId};

    #[test]
    fn round_trips() {
        let frames = [
            GoAway::new(StreamId::ZERO, Reason::NO_ERROR),
            GoAway::new(StreamId::MAX, Reason::new(0x99)),
            GoAway {
                last_stream_id: StreamId::new(7),
                reason: Reason::ENHANCE_YOUR_CALM,
                debug_data: b"too many resets".to_vec(),
            },
        ];
        for frame in frames {
            let mut bytes = Vec::new();
            frame.encode(&mut bytes);
            assert_eq!(read_one(&bytes), Ok(Frame::GoAway(frame)));
        }
    }

    #[test]
    fn parses_fields_and_ignores_the_reserved_bit() {
        let payload = [0x80, 0, 0, 5, 0, 0, 0, 1, b'o', b'k'];
        let frame = read_one(&raw(0x7, 0xff, 0, &payload)).expect("valid frame");
        let expected = GoAway {
            last_stream_id: StreamId::new(5),
            reason: Reason::PROTOCOL_ERROR,
            debug_data: b"ok".to_vec(),
        };
        assert_eq!(frame, Frame::GoAway(expected));
    }

    #[test]
    fn non_zero_stream_is_a_connection_protocol_error() {
        assert_conn_error(read_one(&raw(0x7, 0, 1, &[0; 8])), Reason::PROTOCOL_ERROR);
    }

    #[test]
    fn shorter_than_8_bytes_is_a_connection_frame_size_error() {
        for len in [0, 4, 7] {
            assert_conn_error(
                read_one(&raw(0x7, 0, 0, &vec![0; len])),
                Reason::FRAME_SIZE_ERROR,
            );
        }
    }
}
