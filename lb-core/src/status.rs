//! gRPC status codes and the `Status` every failed call ends with.

use std::fmt;

use crate::metadata::Metadata;

/// A gRPC status code: the 17 canonical codes.
///
/// # Examples
///
/// ```
/// use lb_core::Code;
/// assert_eq!(Code::from_i32(14), Some(Code::Unavailable));
/// assert_eq!(Code::Unavailable.as_str(), "UNAVAILABLE");
/// assert_eq!(Code::from_i32(17), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i32)]
pub enum Code {
    /// Not an error.
    Ok = 0,
    /// The call was cancelled, typically by the caller.
    Cancelled = 1,
    /// An unknown error.
    Unknown = 2,
    /// The client gave an invalid argument.
    InvalidArgument = 3,
    /// The deadline expired before the call completed.
    DeadlineExceeded = 4,
    /// Something requested was not found.
    NotFound = 5,
    /// Something the client tried to create already exists.
    AlreadyExists = 6,
    /// The caller may not run this call.
    PermissionDenied = 7,
    /// A resource, such as a quota or memory, ran out.
    ResourceExhausted = 8,
    /// The system is not in a state the call requires.
    FailedPrecondition = 9,
    /// The call was aborted, typically by a concurrency conflict.
    Aborted = 10,
    /// The call went past the valid range.
    OutOfRange = 11,
    /// The call is not implemented or supported.
    Unimplemented = 12,
    /// An internal invariant broke.
    Internal = 13,
    /// The service is unavailable for now; retrying may help.
    Unavailable = 14,
    /// Data was lost or corrupted beyond recovery.
    DataLoss = 15,
    /// The caller has no valid credentials.
    Unauthenticated = 16,
}

impl Code {
    /// Every code, in numeric order.
    pub const ALL: [Self; 17] = [
        Self::Ok,
        Self::Cancelled,
        Self::Unknown,
        Self::InvalidArgument,
        Self::DeadlineExceeded,
        Self::NotFound,
        Self::AlreadyExists,
        Self::PermissionDenied,
        Self::ResourceExhausted,
        Self::FailedPrecondition,
        Self::Aborted,
        Self::OutOfRange,
        Self::Unimplemented,
        Self::Internal,
        Self::Unavailable,
        Self::DataLoss,
        Self::Unauthenticated,
    ];

    /// The code with number `value`, if it is one of the 17.
    pub fn from_i32(value: i32) -> Option<Self> {
        usize::try_from(value)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
    }

    /// Parses the decimal form carried in `grpc-status` (ASCII digits, no sign, no
    /// leading zeros). Anything else, including codes above 16, gives `None`; a
    /// client then reports [`Code::Unknown`].
    pub fn from_wire(text: &[u8]) -> Option<Self> {
        if text.is_empty() || text.len() > 2 || (text.len() > 1 && text[0] == b'0') {
            return None;
        }
        let mut value = 0i32;
        for &b in text {
            if !b.is_ascii_digit() {
                return None;
            }
            value = value * 10 + i32::from(b - b'0');
        }
        Self::from_i32(value)
    }

    /// The code's number.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The upper-case name gRPC uses for this code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Cancelled => "CANCELLED",
            Self::Unknown => "UNKNOWN",
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Self::NotFound => "NOT_FOUND",
            Self::AlreadyExists => "ALREADY_EXISTS",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Self::FailedPrecondition => "FAILED_PRECONDITION",
            Self::Aborted => "ABORTED",
            Self::OutOfRange => "OUT_OF_RANGE",
            Self::Unimplemented => "UNIMPLEMENTED",
            Self::Internal => "INTERNAL",
            Self::Unavailable => "UNAVAILABLE",
            Self::DataLoss => "DATA_LOSS",
            Self::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// The code a client reports for an HTTP status when the response carries no
    /// `grpc-status` (gRPC's HTTP-to-gRPC mapping).
    ///
    /// ```
    /// use lb_core::Code;
    /// assert_eq!(Code::from_http_status(503), Code::Unavailable);
    /// assert_eq!(Code::from_http_status(200), Code::Unknown);
    /// ```
    pub fn from_http_status(status: u16) -> Self {
        match status {
            400 | 431 => Self::Internal,
            401 => Self::Unauthenticated,
            403 => Self::PermissionDenied,
            404 => Self::Unimplemented,
            429 | 502 | 503 | 504 => Self::Unavailable,
            _ => Self::Unknown,
        }
    }

    /// Whether gRPC itself may generate this code. The other seven
    /// (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION, ABORTED,
    /// OUT_OF_RANGE, DATA_LOSS) belong to applications, so a channel rewrites them to
    /// INTERNAL when a policy produces one.
    pub fn is_library_code(self) -> bool {
        !matches!(
            self,
            Self::InvalidArgument
                | Self::NotFound
                | Self::AlreadyExists
                | Self::FailedPrecondition
                | Self::Aborted
                | Self::OutOfRange
                | Self::DataLoss
        )
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Code> for i32 {
    fn from(code: Code) -> Self {
        code.as_i32()
    }
}

/// The outcome of a call, or of any control-plane step that a call reports: a code, a
/// human-readable message and, for a call's final status, the trailers the server
/// sent with it (empty otherwise).
///
/// # Examples
///
/// ```
/// use lb_core::{Code, Status};
/// let status = Status::unavailable("no backend");
/// assert_eq!(status.code(), Code::Unavailable);
/// assert_eq!(status.to_string(), "UNAVAILABLE: no backend");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Status {
    code: Code,
    message: String,
    /// Boxed so that a status stays small where it is mostly empty.
    trailers: Option<Box<Metadata>>,
}

macro_rules! status_constructors {
    ($($(#[$doc:meta])* $name:ident => $code:ident,)*) => {
        $(
            $(#[$doc])*
            pub fn $name(message: impl Into<String>) -> Self {
                Self::new(Code::$code, message)
            }
        )*
    };
}

impl Status {
    /// A status with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            trailers: None,
        }
    }

    /// The OK status: how a successful call ends.
    pub fn ok() -> Self {
        Self::new(Code::Ok, "")
    }

    status_constructors! {
        /// A CANCELLED status.
        cancelled => Cancelled,
        /// An UNKNOWN status.
        unknown => Unknown,
        /// An INVALID_ARGUMENT status.
        invalid_argument => InvalidArgument,
        /// A DEADLINE_EXCEEDED status.
        deadline_exceeded => DeadlineExceeded,
        /// A RESOURCE_EXHAUSTED status.
        resource_exhausted => ResourceExhausted,
        /// An UNIMPLEMENTED status.
        unimplemented => Unimplemented,
        /// An INTERNAL status.
        internal => Internal,
        /// An UNAVAILABLE status.
        unavailable => Unavailable,
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The trailers' metadata the call ended with (without `grpc-status` and
    /// `grpc-message`); empty for a status made on this side.
    ///
    /// ```
    /// use lb_core::{Metadata, Status};
    /// let mut md = Metadata::new();
    /// md.insert("retry-hint", "later")?;
    /// let s = Status::unavailable("busy").with_trailers(md);
    /// assert_eq!(s.trailers().get("retry-hint"), Some("later"));
    /// # Ok::<(), lb_core::InvalidMetadata>(())
    /// ```
    pub fn trailers(&self) -> &Metadata {
        static EMPTY: Metadata = Metadata::EMPTY;
        self.trailers.as_deref().unwrap_or(&EMPTY)
    }

    /// This status with `trailers`.
    pub fn with_trailers(mut self, trailers: Metadata) -> Self {
        self.trailers = (!trailers.is_empty()).then(|| Box::new(trailers));
        self
    }

    /// Takes the trailers out, leaving them empty.
    pub fn take_trailers(&mut self) -> Metadata {
        self.trailers.take().map(|t| *t).unwrap_or_default()
    }

    /// Whether this is OK.
    pub fn is_ok(&self) -> bool {
        self.code == Code::Ok
    }

    /// This status with its code rewritten to INTERNAL if it is one gRPC never
    /// generates itself (see [`Code::is_library_code`]). Channels apply this to the
    /// statuses that pickers fail or drop calls with.
    pub fn sanitized_for_control_plane(self) -> Self {
        if self.code.is_library_code() {
            return self;
        }
        Self::internal(format!(
            "policy produced illegal status code {}: {}",
            self.code, self.message
        ))
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            f.write_str(self.code.as_str())
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

impl From<std::io::Error> for Status {
    fn from(err: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let code = match err.kind() {
            K::TimedOut => Code::DeadlineExceeded,
            K::PermissionDenied => Code::PermissionDenied,
            K::Interrupted => Code::Cancelled,
            _ => Code::Unavailable,
        };
        Self::new(code, err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_number() {
        for (i, code) in Code::ALL.iter().enumerate() {
            assert_eq!(code.as_i32(), i as i32);
            assert_eq!(Code::from_i32(i as i32), Some(*code));
            assert_eq!(Code::from_wire(i.to_string().as_bytes()), Some(*code));
        }
        assert_eq!(Code::from_i32(-1), None);
        assert_eq!(Code::from_i32(17), None);
    }

    #[test]
    fn wire_form_rejects_what_is_not_canonical_decimal() {
        for bad in ["", "017", "00", "-1", "1a", "17", "999", " 1"] {
            assert_eq!(Code::from_wire(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn http_mapping_follows_grpc_table() {
        let table = [
            (400, Code::Internal),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::Unimplemented),
            (429, Code::Unavailable),
            (431, Code::Internal),
            (502, Code::Unavailable),
            (503, Code::Unavailable),
            (504, Code::Unavailable),
            (200, Code::Unknown),
            (500, Code::Unknown),
        ];
        for (http, code) in table {
            assert_eq!(Code::from_http_status(http), code, "{http}");
        }
    }

    #[test]
    fn control_plane_codes_become_internal() {
        let s = Status::new(Code::NotFound, "x").sanitized_for_control_plane();
        assert_eq!(s.code(), Code::Internal);
        assert!(s.message().contains("NOT_FOUND"), "{s}");
        let s = Status::unavailable("y").sanitized_for_control_plane();
        assert_eq!(s, Status::unavailable("y"));
    }

    #[test]
    fn io_errors_convert() {
        let s: Status = std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
        assert_eq!(s.code(), Code::Unavailable);
        let s: Status = std::io::Error::from(std::io::ErrorKind::TimedOut).into();
        assert_eq!(s.code(), Code::DeadlineExceeded);
    }
}
