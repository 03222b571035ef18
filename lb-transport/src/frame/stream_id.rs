//! Stream identifiers (RFC 9113 section 5.1.1).

use std::fmt;

/// A 31-bit HTTP/2 stream identifier.
///
/// On the wire a stream identifier sits in a 32-bit field whose high bit is reserved. A
/// `StreamId` never has that bit set: [`StreamId::new`] clears it, which is how the frame
/// layer ignores the bit on receipt and keeps it unset on sending (RFC 9113 section 4.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(u32);

impl StreamId {
    /// Stream 0, which addresses the connection as a whole rather than a stream.
    pub const ZERO: Self = Self(0);

    /// The largest stream identifier, 2^31-1.
    pub const MAX: Self = Self(0x7fff_ffff);

    /// Makes a stream identifier from `id`, clearing the reserved high bit.
    pub const fn new(id: u32) -> Self {
        Self(id & Self::MAX.0)
    }

    /// The identifier as a number in `0..=2^31-1`.
    pub const fn value(self) -> u32 {
        self.0
    }

    /// Whether this is stream 0, the connection itself.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Whether a client opened this stream: client streams are odd.
    pub const fn is_client_initiated(self) -> bool {
        self.0 % 2 == 1
    }

    /// Whether a server opened (or promised) this stream: server streams are even and
    /// non-zero.
    pub const fn is_server_initiated(self) -> bool {
        self.0 != 0 && self.0 % 2 == 0
    }
}

impl From<u32> for StreamId {
    /// Same as [`StreamId::new`]: the reserved high bit is cleared.
    fn from(id: u32) -> Self {
        Self::new(id)
    }
}

impl From<StreamId> for u32 {
    fn from(id: StreamId) -> Self {
        id.value()
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::StreamId;

    #[test]
    fn new_clears_the_reserved_bit() {
        assert_eq!(StreamId::new(0x8000_0001).value(), 1);
        assert_eq!(StreamId::new(u32::MAX), StreamId::MAX);
        assert_eq!(StreamId::from(0x8000_0000), StreamId::ZERO);
    }

    #[test]
    fn initiator_follows_parity() {
        assert!(StreamId::new(1).is_client_initiated());
        assert!(!StreamId::new(1).is_server_initiated());
        assert!(StreamId::new(2).is_server_initiated());
        assert!(!StreamId::new(2).is_client_initiated());
        assert!(StreamId::ZERO.is_zero());
        assert!(!StreamId::ZERO.is_client_initiated());
        assert!(!StreamId::ZERO.is_server_initiated());
        assert!(StreamId::MAX.is_client_initiated());
    }

    #[test]
    fn displays_as_a_number() {
        assert_eq!(StreamId::new(7).to_string(), "7");
        assert_eq!(u32::from(StreamId::new(9)), 9);
    }
}
