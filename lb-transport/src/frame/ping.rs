//! PING frames (RFC 9113 section 6.7): round-trip measurement and liveness checks.

use super::head::ACK;
use super::{FrameError, Head, Kind, Reason, StreamId};

/// The payload length of a PING frame.
const LEN: usize = 8;

/// A PING frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ping {
    /// Whether this is a response to a PING.
    pub ack: bool,
    /// The opaque data, echoed back in the response.
    pub payload: [u8; LEN],
}

impl Ping {
    /// A PING request carrying `payload`.
    pub const fn new(payload: [u8; LEN]) -> Self {
        Self {
            ack: false,
            payload,
        }
    }

    /// The response to a PING that carried `payload`: "Receivers of a PING frame that does
    /// not include an ACK flag MUST send a PING frame with the ACK flag set in response,
    /// with an identical frame payload."
    pub const fn pong(payload: [u8; LEN]) -> Self {
        Self { ack: true, payload }
    }

    /// Parses a PING frame.
    pub fn load(head: &Head, payload: &[u8]) -> Result<Self, FrameError> {
        debug_assert_eq!(head.kind(), Kind::Ping);
        // "If a PING frame is received with a Stream Identifier field value other than 0x00,
        // the recipient MUST respond with a connection error (Section 5.4.1) of type
        // PROTOCOL_ERROR."
        if !head.stream_id().is_zero() {
            return Err(FrameError::connection(
                Reason::PROTOCOL_ERROR,
                "ping frame on a stream",
            ));
        }
        // "Receipt of a PING frame with a length field value other than 8 MUST be treated as
        // a connection error (Section 5.4.1) of type FRAME_SIZE_ERROR."
        let Ok(payload) = <[u8; LEN]>::try_from(payload) else {
            return Err(FrameError::connection(
                Reason::FRAME_SIZE_ERROR,
                "ping frame length is not 8",
            ));
        };
        Ok(Self {
            ack: head.has_flag(ACK),
            payload,
        })
    }

    /// Appends the frame to `dst`.
    pub fn encode(&self, dst: &mut Vec<u8>) {
        let flags = if self.ack { ACK } else { 0 };
        Head::new(Kind::Ping, flags, StreamId::ZERO, LEN).encode(dst);
        dst.extend_from_slice(&self.payload);
    }
}

#[cfg(test)]
mod tests {
    use super::Ping;
    use crate::frame::tests::{assert_conn_error, raw, read_one};
    use crate::frame::{Frame, Reason};

    #[test]
    fn round_trips() {
        for frame in [Ping::new([1, 2, 3, 4, 5, 6, 7, 8]), Ping::pong([0xff; 8])] {
            let mut bytes = Vec::new();
            frame.encode(&mut bytes);
            assert_eq!(bytes.len(), 17);
            assert_eq!(read_one(&bytes), Ok(Frame::Ping(frame)));
        }
    }

    #[test]
    fn parses_ack_and_ignores_other_flags() {
        let frame = read_one(&raw(0x6, 0xfe, 0, &[9; 8])).expect("valid frame");
        assert_eq!(frame, Frame::Ping(Ping::new([9; 8])));
        let frame = read_one(&raw(0x6, 0x01, 0, &[9; 8])).expect("valid frame");
        assert_eq!(frame, Frame::Ping(Ping::pong([9; 8])));
    }

    #[test]
    fn non_zero_stream_is_a_connection_protocol_error() {
        assert_conn_error(read_one(&raw(0x6, 0, 1, &[0; 8])), Reason::PROTOCOL_ERROR);
    }

    #[test]
    fn wrong_length_is_a_connection_frame_size_error() {
        for len in [0, 7, 9, 16] {
            assert_conn_error(
                read_one(&raw(0x6, 0, 0, &vec![0; len])),
                Reason::FRAME_SIZE_ERROR,
            );
        }
    }
}
