//! The 9-byte frame header shared by every frame (RFC 9113 section 4.1).

use super::StreamId;
use super::settings::MAX_MAX_FRAME_SIZE;

/// The length of a frame header in bytes.
pub const HEADER_LEN: usize = 9;

/// The END_STREAM flag of DATA and HEADERS.
pub(super) const END_STREAM: u8 = 0x1;
/// The ACK flag of SETTINGS and PING.
pub(super) const ACK: u8 = 0x1;
/// The END_HEADERS flag of HEADERS, PUSH_PROMISE and CONTINUATION.
pub(super) const END_HEADERS: u8 = 0x4;
/// The PADDED flag of DATA, HEADERS and PUSH_PROMISE.
pub(super) const PADDED: u8 = 0x8;
/// The PRIORITY flag of HEADERS.
pub(super) const PRIORITY: u8 = 0x20;

/// The type of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// DATA (0x0).
    Data,
    /// HEADERS (0x1).
    Headers,
    /// PRIORITY (0x2).
    Priority,
    /// RST_STREAM (0x3).
    RstStream,
    /// SETTINGS (0x4).
    Settings,
    /// PUSH_PROMISE (0x5).
    PushPromise,
    /// PING (0x6).
    Ping,
    /// GOAWAY (0x7).
    GoAway,
    /// WINDOW_UPDATE (0x8).
    WindowUpdate,
    /// CONTINUATION (0x9).
    Continuation,
    /// A type this implementation does not know. [`Kind::from_u8`] only produces it for
    /// bytes above 0x9.
    Unknown(u8),
}

impl Kind {
    /// The kind for the type byte `byte`.
    pub const fn from_u8(byte: u8) -> Self {
        match byte {
            0x0 => Self::Data,
            0x1 => Self::Headers,
            0x2 => Self::Priority,
            0x3 => Self::RstStream,
            0x4 => Self::Settings,
            0x5 => Self::PushPromise,
            0x6 => Self::Ping,
            0x7 => Self::GoAway,
            0x8 => Self::WindowUpdate,
            0x9 => Self::Continuation,
            other => Self::Unknown(other),
        }
    }

    /// The type byte for this kind.
    pub const fn as_u8(self) -> u8 {
        match self {
            Self::Data => 0x0,
            Self::Headers => 0x1,
            Self::Priority => 0x2,
            Self::RstStream => 0x3,
            Self::Settings => 0x4,
            Self::PushPromise => 0x5,
            Self::Ping => 0x6,
            Self::GoAway => 0x7,
            Self::WindowUpdate => 0x8,
            Self::Continuation => 0x9,
            Self::Unknown(other) => other,
        }
    }
}

impl From<u8> for Kind {
    fn from(byte: u8) -> Self {
        Self::from_u8(byte)
    }
}

impl From<Kind> for u8 {
    fn from(kind: Kind) -> Self {
        kind.as_u8()
    }
}

/// A frame header: payload length, type, flags and stream identifier.
///
/// The payload length always fits the 24-bit length field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    length: u32,
    kind: Kind,
    flags: u8,
    stream_id: StreamId,
}

impl Head {
    /// The header of a frame with a `payload_len`-byte payload.
    ///
    /// # Panics
    ///
    /// Panics if `payload_len` is above 2^24-1, which the 24-bit length field cannot carry.
    /// Encoders that split their payload by the peer's maximum frame size never get there.
    pub fn new(kind: Kind, flags: u8, stream_id: StreamId, payload_len: usize) -> Self {
        let length = u32::try_from(payload_len)
            .ok()
            .filter(|&length| length <= MAX_MAX_FRAME_SIZE);
        let Some(length) = length else {
            panic!("frame payload of {payload_len} bytes does not fit a 24-bit length");
        };
        Self {
            length,
            kind,
            flags,
            stream_id,
        }
    }

    /// Parses the header at the start of `buf`, or returns `None` if `buf` holds fewer than
    /// [`HEADER_LEN`] bytes.
    pub fn parse(buf: &[u8]) -> Option<Self> {
        let header: [u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = header;
        Some(Self {
            length: u32::from_be_bytes([0, l0, l1, l2]),
            kind: Kind::from_u8(kind),
            flags,
            // "The semantics of this bit are undefined, and the bit ... MUST be ignored
            // when receiving." `StreamId::new` drops it.
            stream_id: StreamId::new(u32::from_be_bytes([s0, s1, s2, s3])),
        })
    }

    /// Appends the 9 header bytes to `dst`.
    pub fn encode(&self, dst: &mut Vec<u8>) {
        let [_, l0, l1, l2] = self.length.to_be_bytes();
        dst.extend_from_slice(&[l0, l1, l2, self.kind.as_u8(), self.flags]);
        // A `StreamId` never has the reserved bit set, so "the bit MUST remain unset (0x00)
        // when sending" holds by construction.
        dst.extend_from_slice(&self.stream_id.value().to_be_bytes());
    }

    /// The payload length announced by the header.
    pub const fn length(&self) -> u32 {
        self.length
    }

    /// The frame type.
    pub const fn kind(&self) -> Kind {
        self.kind
    }

    /// The raw flags byte, including flags the frame type does not define.
    pub const fn flags(&self) -> u8 {
        self.flags
    }

    /// The stream identifier, with the reserved bit already cleared.
    pub const fn stream_id(&self) -> StreamId {
        self.stream_id
    }

    /// Whether every bit of `flag` is set.
    pub const fn has_flag(&self, flag: u8) -> bool {
        self.flags & flag == flag
    }

    /// The length of the whole frame, header included.
    pub const fn frame_len(&self) -> usize {
        HEADER_LEN + self.length as usize
    }
}

#[cfg(test)]
mod tests {
    use super::{HEADER_LEN, Head, Kind};
    use crate::frame::StreamId;

    #[test]
    fn kind_bytes_round_trip() {
        for byte in 0..=u8::MAX {
            let kind = Kind::from_u8(byte);
            assert_eq!(kind.as_u8(), byte);
            assert_eq!(matches!(kind, Kind::Unknown(_)), byte > 0x9);
        }
        assert_eq!(Kind::from(0x4), Kind::Settings);
        assert_eq!(u8::from(Kind::GoAway), 0x7);
    }

    #[test]
    fn parses_every_field() {
        let bytes = [0x01, 0x02, 0x03, 0x08, 0xa5, 0x12, 0x34, 0x56, 0x78, 0xff];
        let head = Head::parse(&bytes).expect("nine bytes are enough");
        assert_eq!(head.length(), 0x01_0203);
        assert_eq!(head.kind(), Kind::WindowUpdate);
        assert_eq!(head.flags(), 0xa5);
        assert_eq!(head.stream_id(), StreamId::new(0x1234_5678));
        assert_eq!(head.frame_len(), HEADER_LEN + 0x01_0203);
    }

    #[test]
    fn needs_nine_bytes() {
        let bytes = [0u8; HEADER_LEN];
        for len in 0..HEADER_LEN {
            assert_eq!(Head::parse(&bytes[..len]), None, "{len} bytes");
        }
        assert!(Head::parse(&bytes).is_some());
    }

    #[test]
    fn reserved_bit_is_ignored_on_read() {
        let bytes = [0, 0, 0, 0, 0, 0x80, 0, 0, 0x05];
        let head = Head::parse(&bytes).expect("complete header");
        assert_eq!(head.stream_id(), StreamId::new(5));
    }

    #[test]
    fn reserved_bit_is_cleared_on_write() {
        let head = Head::new(Kind::Ping, 0x1, StreamId::new(0xffff_ffff), 8);
        let mut dst = Vec::new();
        head.encode(&mut dst);
        assert_eq!(dst, [0, 0, 8, 0x6, 0x1, 0x7f, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn encode_then_parse_round_trips() {
        let head = Head::new(Kind::Unknown(0xfa), 0x42, StreamId::new(77), 0xff_ffff);
        let mut dst = Vec::new();
        head.encode(&mut dst);
        assert_eq!(dst.len(), HEADER_LEN);
        assert_eq!(Head::parse(&dst), Some(head));
        assert!(head.has_flag(0x42));
        assert!(head.has_flag(0x02));
        assert!(!head.has_flag(0x01));
    }

    #[test]
    #[should_panic(expected = "does not fit a 24-bit length")]
    fn oversized_payload_cannot_be_encoded() {
        let _ = Head::new(Kind::Data, 0, StreamId::new(1), 1 << 24);
    }
}
