//! WINDOW_UPDATE frames (RFC 9113 section 6.9): flow-control credit for a stream or for the
//! whole connection.
//!
//! Whether an increment overflows a window past 2^31-1 depends on the window, so the
//! connection checks it.

use super::{FrameError, Head, Kind, MAX_WINDOW_SIZE, Reason, StreamId};

/// The payload length of a WINDOW_UPDATE frame.
const LEN: usize = 4;

/// A WINDOW_UPDATE frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowUpdate {
    /// The stream whose window grows, or zero for the connection window.
    pub stream_id: StreamId,
    /// The number of bytes added to the window, in `1..=2^31-1`.
    pub increment: u32,
}

impl WindowUpdate {
    /// A WINDOW_UPDATE frame adding `increment` bytes to `stream_id`'s window.
    pub const fn new(stream_id: StreamId, increment: u32) -> Self {
        Self {
            stream_id,
            increment,
        }
    }

    /// Parses a WINDOW_UPDATE frame.
    pub fn load(head: &Head, payload: &[u8]) -> Result<Self, FrameError> {
        debug_assert_eq!(head.kind(), Kind::WindowUpdate);
        // "A WINDOW_UPDATE frame with a length other than 4 octets MUST be treated as a
        // connection error (Section 5.4.1) of type FRAME_SIZE_ERROR."
        let Ok(bytes) = <[u8; LEN]>::try_from(payload) else {
            return Err(FrameError::connection(
                Reason::FRAME_SIZE_ERROR,
                "window_update frame length is not 4",
            ));
        };
        // The increment follows a reserved bit, which is ignored.
        let increment = u32::from_be_bytes(bytes) & MAX_WINDOW_SIZE;
        // "A receiver MUST treat the receipt of a WINDOW_UPDATE frame with a flow-control
        // window increment of 0 as a stream error (Section 5.4.2) of type PROTOCOL_ERROR;
        // errors on the connection flow-control window MUST be treated as a connection
        // error (Section 5.4.1)."
        if increment == 0 {
            let detail = "window_update increment is 0";
            if head.stream_id().is_zero() {
                return Err(FrameError::connection(Reason::PROTOCOL_ERROR, detail));
            }
            return Err(FrameError::stream(
                head.stream_id(),
                Reason::PROTOCOL_ERROR,
                detail,
            ));
        }
        Ok(Self {
            stream_id: head.stream_id(),
            increment,
        })
    }

    /// Appends the frame to `dst`. The reserved bit is left unset, so only the low 31 bits
    /// of the increment are sent.
    pub fn encode(&self, dst: &mut Vec<u8>) {
        debug_assert!(
            (1..=MAX_WINDOW_SIZE).contains(&self.increment),
            "window increment out of range"
        );
        Head::new(Kind::WindowUpdate, 0, self.stream_id, LEN).encode(dst);
        dst.extend_from_slice(&(self.increment & MAX_WINDOW_SIZE).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::WindowUpdate;
    use crate::frame::tests::{assert_conn_error, assert_stream_error, raw, read_one};
    use crate::frame::{Frame, Reason, StreamId};

    #[test]
    fn round_trips() {
        let frames = [
            WindowUpdate::new(StreamId::ZERO, 1),
            WindowUpdate::new(StreamId::new(3), 0x7fff_ffff),
            WindowUpdate::new(StreamId::new(4), 65_535),
        ];
        for frame in frames {
            let mut bytes = Vec::new();
            frame.encode(&mut bytes);
            assert_eq!(read_one(&bytes), Ok(Frame::WindowUpdate(frame)));
        }
    }

    #[test]
    fn the_reserved_bit_is_ignored() {
        let frame = read_one(&raw(0x8, 0xff, 1, &[0x80, 0, 0, 10])).expect("valid frame");
        assert_eq!(
            frame,
            Frame::WindowUpdate(WindowUpdate::new(StreamId::new(1), 10))
        );
    }

    #[test]
    fn wrong_length_is_a_connection_frame_size_error() {
        for (stream, len) in [(0, 0), (0, 3), (1, 5), (1, 8)] {
            assert_conn_error(
                read_one(&raw(0x8, 0, stream, &vec![0; len])),
                Reason::FRAME_SIZE_ERROR,
            );
        }
    }

    #[test]
    fn zero_increment_on_a_stream_is_a_stream_protocol_error() {
        assert_stream_error(
            read_one(&raw(0x8, 0, 5, &[0; 4])),
            5,
            Reason::PROTOCOL_ERROR,
        );
        // Only the reserved bit set still means an increment of 0.
        assert_stream_error(
            read_one(&raw(0x8, 0, 5, &[0x80, 0, 0, 0])),
            5,
            Reason::PROTOCOL_ERROR,
        );
    }

    #[test]
    fn zero_increment_on_the_connection_is_a_connection_protocol_error() {
        assert_conn_error(read_one(&raw(0x8, 0, 0, &[0; 4])), Reason::PROTOCOL_ERROR);
    }
}
