//! HTTP/2 error codes (RFC 9113 section 7), carried by RST_STREAM and GOAWAY.

use std::fmt;

/// An HTTP/2 error code.
///
/// Any 32-bit value is a valid `Reason`: "Unknown or unsupported error codes MUST NOT
/// trigger any special behavior." The constants name the codes RFC 9113 defines.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reason(u32);

impl Reason {
    /// The condition is not the result of an error, such as a graceful shutdown.
    pub const NO_ERROR: Self = Self(0x0);
    /// The endpoint detected an unspecific protocol error.
    pub const PROTOCOL_ERROR: Self = Self(0x1);
    /// The endpoint encountered an unexpected internal error.
    pub const INTERNAL_ERROR: Self = Self(0x2);
    /// The peer violated the flow-control protocol.
    pub const FLOW_CONTROL_ERROR: Self = Self(0x3);
    /// A SETTINGS frame was not acknowledged in time.
    pub const SETTINGS_TIMEOUT: Self = Self(0x4);
    /// A frame arrived after the stream was half-closed.
    pub const STREAM_CLOSED: Self = Self(0x5);
    /// A frame had an invalid size.
    pub const FRAME_SIZE_ERROR: Self = Self(0x6);
    /// The stream was refused before any application processing.
    pub const REFUSED_STREAM: Self = Self(0x7);
    /// The stream is no longer needed.
    pub const CANCEL: Self = Self(0x8);
    /// The field section compression context cannot be maintained.
    pub const COMPRESSION_ERROR: Self = Self(0x9);
    /// The connection made for a CONNECT request was reset or closed abnormally.
    pub const CONNECT_ERROR: Self = Self(0xa);
    /// The peer is generating excessive load.
    pub const ENHANCE_YOUR_CALM: Self = Self(0xb);
    /// The transport does not meet minimum security requirements.
    pub const INADEQUATE_SECURITY: Self = Self(0xc);
    /// The endpoint requires HTTP/1.1 instead of HTTP/2.
    pub const HTTP_1_1_REQUIRED: Self = Self(0xd);

    /// The reason with the numeric error code `code`.
    pub const fn new(code: u32) -> Self {
        Self(code)
    }

    /// The numeric error code.
    pub const fn code(self) -> u32 {
        self.0
    }

    /// The RFC name of the code, such as `"PROTOCOL_ERROR"`, or `None` for a code RFC 9113
    /// does not define.
    pub const fn name(self) -> Option<&'static str> {
        let name = match self.0 {
            0x0 => "NO_ERROR",
            0x1 => "PROTOCOL_ERROR",
            0x2 => "INTERNAL_ERROR",
            0x3 => "FLOW_CONTROL_ERROR",
            0x4 => "SETTINGS_TIMEOUT",
            0x5 => "STREAM_CLOSED",
            0x6 => "FRAME_SIZE_ERROR",
            0x7 => "REFUSED_STREAM",
            0x8 => "CANCEL",
            0x9 => "COMPRESSION_ERROR",
            0xa => "CONNECT_ERROR",
            0xb => "ENHANCE_YOUR_CALM",
            0xc => "INADEQUATE_SECURITY",
            0xd => "HTTP_1_1_REQUIRED",
            _ => return None,
        };
        Some(name)
    }
}

impl From<u32> for Reason {
    fn from(code: u32) -> Self {
        Self::new(code)
    }
}

impl From<Reason> for u32 {
    fn from(reason: Reason) -> Self {
        reason.code()
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "unknown error code {:#x}", self.0),
        }
    }
}

impl fmt::Debug for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "Reason({name})"),
            None => write!(f, "Reason({:#x})", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Reason;

    #[test]
    fn known_codes_display_their_rfc_names() {
        let expected = [
            (Reason::NO_ERROR, 0x0, "NO_ERROR"),
            (Reason::PROTOCOL_ERROR, 0x1, "PROTOCOL_ERROR"),
            (Reason::INTERNAL_ERROR, 0x2, "INTERNAL_ERROR"),
            (Reason::FLOW_CONTROL_ERROR, 0x3, "FLOW_CONTROL_ERROR"),
            (Reason::SETTINGS_TIMEOUT, 0x4, "SETTINGS_TIMEOUT"),
            (Reason::STREAM_CLOSED, 0x5, "STREAM_CLOSED"),
            (Reason::FRAME_SIZE_ERROR, 0x6, "FRAME_SIZE_ERROR"),
            (Reason::REFUSED_STREAM, 0x7, "REFUSED_STREAM"),
            (Reason::CANCEL, 0x8, "CANCEL"),
            (Reason::COMPRESSION_ERROR, 0x9, "COMPRESSION_ERROR"),
            (Reason::CONNECT_ERROR, 0xa, "CONNECT_ERROR"),
            (Reason::ENHANCE_YOUR_CALM, 0xb, "ENHANCE_YOUR_CALM"),
            (Reason::INADEQUATE_SECURITY, 0xc, "INADEQUATE_SECURITY"),
            (Reason::HTTP_1_1_REQUIRED, 0xd, "HTTP_1_1_REQUIRED"),
        ];
        for (reason, code, name) in expected {
            assert_eq!(reason.code(), code);
            assert_eq!(Reason::new(code), reason);
            assert_eq!(reason.to_string(), name);
            assert_eq!(reason.name(), Some(name));
        }
    }

    #[test]
    fn unknown_codes_are_printable() {
        let reason = Reason::new(0x1234);
        assert_eq!(reason.name(), None);
        assert_eq!(reason.to_string(), "unknown error code 0x1234");
        assert_eq!(format!("{reason:?}"), "Reason(0x1234)");
        assert_eq!(format!("{:?}", Reason::CANCEL), "Reason(CANCEL)");
        assert_eq!(u32::from(Reason::from(0xe)), 0xe);
    }
}
