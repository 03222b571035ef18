//! PRIORITY frames (RFC 9113 section 6.3) and the stream dependency fields they share with
//! HEADERS. RFC 9113 deprecates this priority scheme; the frames are still parsed so that
//! peers using it interoperate.

use super::{FrameError, Head, Kind, Reason, StreamId};

/// The Exclusive, Stream Dependency and Weight fields of PRIORITY and HEADERS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamDependency {
    /// The stream this one depends on.
    pub dependency_id: StreamId,
    /// Whether the dependency is exclusive.
    pub exclusive: bool,
    /// The weight as sent on the wire; the RFC 7540 weight is this value plus one.
    pub weight: u8,
}

impl StreamDependency {
    /// The encoded length of the fields.
    pub const LEN: usize = 5;

    /// Parses the five bytes of the fields.
    pub fn parse(bytes: [u8; Self::LEN]) -> Self {
        let [d0, d1, d2, d3, weight] = bytes;
        let raw = u32::from_be_bytes([d0, d1, d2, d3]);
        Self {
            dependency_id: StreamId::new(raw),
            exclusive: raw & 0x8000_0000 != 0,
            weight,
        }
    }

    /// The five bytes of the fields.
    pub fn to_bytes(self) -> [u8; Self::LEN] {
        let mut raw = self.dependency_id.value();
        if self.exclusive {
            raw |= 0x8000_0000;
        }
        let [d0, d1, d2, d3] = raw.to_be_bytes();
        [d0, d1, d2, d3, self.weight]
    }
}

/// A PRIORITY frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    /// The stream being prioritised; never zero.
    pub stream_id: StreamId,
    /// Its new dependency and weight.
    pub dependency: StreamDependency,
}

impl Priority {
    /// Parses a PRIORITY frame.
    pub fn load(head: &Head, payload: &[u8]) -> Result<Self, FrameError> {
        debug_assert_eq!(head.kind(), Kind::Priority);
        // "If a PRIORITY frame is received with a stream identifier of 0x00, the recipient
        // MUST respond with a connection error (Section 5.4.1) of type PROTOCOL_ERROR."
        if head.stream_id().is_zero() {
            return Err(FrameError::connection(
                Reason::PROTOCOL_ERROR,
                "priority frame on stream 0",
            ));
        }
        // "A PRIORITY frame with a length other than 5 octets MUST be treated as a stream
        // error (Section 5.4.2) of type FRAME_SIZE_ERROR."
        let Ok(bytes) = <[u8; StreamDependency::LEN]>::try_from(payload) else {
            return Err(FrameError::stream(
                head.stream_id(),
                Reason::FRAME_SIZE_ERROR,
                "priority frame length is not 5",
            ));
        };
        Ok(Self {
            stream_id: head.stream_id(),
            dependency: StreamDependency::parse(bytes),
        })
    }

    /// Appends the frame to `dst`.
    pub fn encode(&self, dst: &mut Vec<u8>) {
        Head::new(Kind::Priority, 0, self.stream_id, StreamDependency::LEN).encode(dst);
        dst.extend_from_slice(&self.dependency.to_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::{Priority, StreamDependency};
    use crate::frame::tests::{assert_conn_error, assert_stream_error, raw, read_one};
    use crate::frame::{Frame, Reason, StreamId};

    #[test]
    fn round_trips() {
        for (exclusive, weight) in [(false, 0), (true, 255), (true, 15)] {
            let frame = Priority {
                stream_id: StreamId::new(9),
                dependency: StreamDependency {
                    dependency_id: StreamId::new(0x7fff_fffd),
                    exclusive,
                    weight,
                },
            };
            let mut bytes = Vec::new();
            frame.encode(&mut bytes);
            assert_eq!(read_one(&bytes), Ok(Frame::Priority(frame)));
        }
    }

    #[test]
    fn parses_the_exclusive_bit_and_weight() {
        let frame = read_one(&raw(0x2, 0xff, 3, &[0x80, 0, 0, 1, 16])).expect("valid frame");
        let expected = Priority {
            stream_id: StreamId::new(3),
            dependency: StreamDependency {
                dependency_id: StreamId::new(1),
                exclusive: true,
                weight: 16,
            },
        };
        assert_eq!(frame, Frame::Priority(expected));
    }

    #[test]
    fn stream_zero_is_a_connection_protocol_error() {
        assert_conn_error(
            read_one(&raw(0x2, 0, 0, &[0, 0, 0, 1, 16])),
            Reason::PROTOCOL_ERROR,
        );
    }

    #[test]
    fn wrong_length_is_a_stream_frame_size_error() {
        for len in [0, 4, 6] {
            assert_stream_error(
                read_one(&raw(0x2, 0, 5, &vec![0; len])),
                5,
                Reason::FRAME_SIZE_ERROR,
            );
        }
    }
}
