//! RST_STREAM frames (RFC 9113 section 6.4): immediate termination of a stream.

use super::{FrameError, Head, Kind, Reason, StreamId};

/// The payload length of a RST_STREAM frame.
const LEN: usize = 4;

/// A RST_STREAM frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RstStream {
    /// The stream being reset; never zero.
    pub stream_id: StreamId,
    /// Why the stream is reset.
    pub reason: Reason,
}

impl RstStream {
    /// A RST_STREAM frame resetting `stream_id` with `reason`.
    pub const fn new(stream_id: StreamId, reason: Reason) -> Self {
        Self { stream_id, reason }
    }

    /// Parses a RST_STREAM frame.
    pub fn load(head: &Head, payload: &[u8]) -> Result<Self, FrameError> {
        debug_assert_eq!(head.kind(), Kind::RstStream);
        // "If a RST_STREAM frame is received with a stream identifier of 0x00, the recipient
        // MUST treat this as a connection error (Section 5.4.1) of type PROTOCOL_ERROR."
        if head.stream_id().is_zero() {
            return Err(FrameError::connection(
                Reason::PROTOCOL_ERROR,
                "rst_stream frame on stream 0",
            ));
        }
        // "A RST_STREAM frame with a length other than 4 octets MUST be treated as a
        // connection error (Section 5.4.1) of type FRAME_SIZE_ERROR."
        let Ok(code) = <[u8; LEN]>::try_from(payload) else {
            return Err(FrameError::connection(
                Reason::FRAME_SIZE_ERROR,
                "rst_stream frame length is not 4",
            ));
        };
        Ok(Self {
            stream_id: head.stream_id(),
            reason: Reason::new(u32::from_be_bytes(code)),
        })
    }

    /// Appends the frame to `dst`.
    pub fn encode(&self, dst: &mut Vec<u8>) {
        Head::new(Kind::RstStream, 0, self.stream_id, LEN).encode(dst);
        dst.extend_from_slice(&self.reason.code().to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::RstStream;
    use crate::frame::tests::{assert_conn_error, raw, read_one};
    use crate::frame::{Frame, Reason, StreamId};

    #[test]
    fn round_trips() {
        for reason in [Reason::CANCEL, Reason::NO_ERROR, Reason::new(0xdead_beef)] {
            let frame = RstStream::new(StreamId::new(3), reason);
            let mut bytes = Vec::new();
            frame.encode(&mut bytes);
            assert_eq!(bytes.len(), 13);
            assert_eq!(read_one(&bytes), Ok(Frame::RstStream(frame)));
        }
    }

    #[test]
    fn parses_the_error_code() {
        let frame = read_one(&raw(0x3, 0xff, 1, &[0, 0, 0, 0x8])).expect("valid frame");
        assert_eq!(
            frame,
            Frame::RstStream(RstStream::new(StreamId::new(1), Reason::CANCEL))
        );
    }

    #[test]
    fn stream_zero_is_a_connection_protocol_error() {
        assert_conn_error(
            read_one(&raw(0x3, 0, 0, &[0, 0, 0, 0x8])),
            Reason::PROTOCOL_ERROR,
        );
    }

    #[test]
    fn wrong_length_is_a_connection_frame_size_error() {
        for len in [0, 3, 5, 8] {
            assert_conn_error(
                read_one(&raw(0x3, 0, 1, &vec![0; len])),
                Reason::FRAME_SIZE_ERROR,
            );
        }
    }
}
