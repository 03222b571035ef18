//! Frames of types RFC 9113 does not define. "Implementations MUST ignore and discard
//! frames of unknown types", so they are kept whole for the connection to drop (or, in the
//! middle of a field block, to reject).

use super::{Head, Kind, StreamId};

/// A frame of an unknown type, kept as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    /// The type byte, above 0x9 for frames that [`Unknown::load`] produced.
    pub kind: u8,
    /// The flags byte.
    pub flags: u8,
    /// The stream identifier, which may be zero.
    pub stream_id: StreamId,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Unknown {
    /// Keeps the frame as it is: nothing about an unknown frame can be invalid.
    pub fn load(head: &Head, payload: &[u8]) -> Self {
        Self {
            kind: head.kind().as_u8(),
            flags: head.flags(),
            stream_id: head.stream_id(),
            payload: payload.to_vec(),
        }
    }

    /// Appends the frame to `dst` as it is. A `kind` of a known type makes a frame of that
    /// type.
    ///
    /// # Panics
    ///
    /// Panics if the payload is longer than 2^24-1 bytes; see [`Head::new`].
    pub fn encode(&self, dst: &mut Vec<u8>) {
        let kind = Kind::from_u8(self.kind);
        Head::new(kind, self.flags, self.stream_id, self.payload.len()).encode(dst);
        dst.extend_from_slice(&self.payload);
    }
}

#[cfg(test)]
mod tests {
    use super::Unknown;
    use crate::frame::tests::{raw, read_one};
    use crate::frame::{Frame, Kind, StreamId};

    #[test]
    fn unknown_types_are_kept_on_any_stream() {
        for (kind, stream) in [(0xa, 0), (0x10, 1), (0xff, 0x7fff_ffff)] {
            let frame = read_one(&raw(kind, 0xab, stream, b"ext")).expect("valid frame");
            let expected = Unknown {
                kind,
                flags: 0xab,
                stream_id: StreamId::new(stream),
                payload: b"ext".to_vec(),
            };
            assert_eq!(frame.kind(), Kind::Unknown(kind));
            assert_eq!(frame, Frame::Unknown(expected));
        }
    }

    #[test]
    fn round_trips() {
        let frame = Unknown {
            kind: 0xb,
            flags: 0xff,
            stream_id: StreamId::new(4),
            payload: vec![0; 300],
        };
        let mut bytes = Vec::new();
        frame.encode(&mut bytes);
        assert_eq!(read_one(&bytes), Ok(Frame::Unknown(frame)));
    }
}
