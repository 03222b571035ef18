//! The gRPC health-checking protocol (`grpc.health.v1.Health`): its method names and
//! a hand-written codec for its two tiny messages, shared by the channel's
//! client-side health checks (gRFC A17) and lb-transport's health service.
//!
//! ```text
//!   message HealthCheckRequest  { string service = 1; }
//!   message HealthCheckResponse { ServingStatus status = 1; }
//!   enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
//!
//!   rpc Check(HealthCheckRequest) returns (HealthCheckResponse);          // unary
//!   rpc Watch(HealthCheckRequest) returns (stream HealthCheckResponse);   // A17
//! ```
//!
//! Decoding follows protobuf's rules: fields may come in any order or repeat (the
//! last wins), unknown fields of any wire type are skipped, and an enum number this
//! side does not know reads as [`ServingStatus::Unknown`]. Bytes that are not a
//! message are a [`HealthDecodeError`] naming what is wrong, never a panic.
//!
//! ```
//! use lb_core::health::{self, ServingStatus};
//! let request = health::encode_request("echo.Echo");
//! assert_eq!(health::decode_request(&request)?, "echo.Echo");
//! let response = health::encode_response(ServingStatus::NotServing);
//! assert_eq!(health::decode_response(&response)?, ServingStatus::NotServing);
//! assert!(health::decode_response(&[0x08]).is_err()); // a tag without its value
//! # Ok::<(), lb_core::health::HealthDecodeError>(())
//! ```

use std::fmt;

use crate::wire::{self, Value, push_varint};

/// The service, as it appears in method paths.
pub const SERVICE: &str = "grpc.health.v1.Health";

/// The unary method's path.
pub const CHECK_METHOD: &str = "/grpc.health.v1.Health/Check";

/// The server-streaming method's path (gRFC A17).
pub const WATCH_METHOD: &str = "/grpc.health.v1.Health/Watch";

/// A service's health, as `HealthCheckResponse.status` carries it.
///
/// ```
/// use lb_core::health::ServingStatus;
/// assert_eq!(ServingStatus::from_i32(2), ServingStatus::NotServing);
/// assert_eq!(ServingStatus::from_i32(99), ServingStatus::Unknown);
/// assert_eq!(ServingStatus::Serving.to_string(), "SERVING");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ServingStatus {
    /// `UNKNOWN` (0): the server does not say.
    #[default]
    Unknown,
    /// `SERVING` (1): healthy.
    Serving,
    /// `NOT_SERVING` (2): up but not to be used.
    NotServing,
    /// `SERVICE_UNKNOWN` (3): `Watch` on a service the server does not know (yet).
    ServiceUnknown,
}

impl ServingStatus {
    /// The wire number.
    pub fn as_i32(self) -> i32 {
        match self {
            Self::Unknown => 0,
            Self::Serving => 1,
            Self::NotServing => 2,
            Self::ServiceUnknown => 3,
        }
    }

    /// The status for a wire number; numbers this side does not know are `Unknown`.
    pub fn from_i32(value: i32) -> Self {
        match value {
            1 => Self::Serving,
            2 => Self::NotServing,
            3 => Self::ServiceUnknown,
            _ => Self::Unknown,
        }
    }

    /// The name in the `.proto` (`SERVING`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "UNKNOWN",
            Self::Serving => "SERVING",
            Self::NotServing => "NOT_SERVING",
            Self::ServiceUnknown => "SERVICE_UNKNOWN",
        }
    }
}

impl fmt::Display for ServingStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bytes that are not a health message.
///
/// ```
/// let err = lb_core::health::decode_request(&[0x0a, 0x05, b'a']).unwrap_err();
/// assert_eq!(err.to_string(), "bad HealthCheckRequest at byte 1: field 1 is longer than the message");
/// ```
pub type HealthDecodeError = crate::wire::DecodeError;

/// Encodes a `HealthCheckRequest` for `service` ("" is the server as a whole).
pub fn encode_request(service: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(service.len() + 6);
    if !service.is_empty() {
        out.push(0x0a); // field 1, length-delimited
        push_varint(&mut out, service.len() as u64);
        out.extend_from_slice(service.as_bytes());
    }
    out
}

/// Decodes a `HealthCheckRequest` into its service name.
///
/// # Errors
///
/// The bytes are not a `HealthCheckRequest` (truncated, bad wire type, service not
/// UTF-8).
pub fn decode_request(bytes: &[u8]) -> Result<String, HealthDecodeError> {
    let mut service = String::new();
    wire::read_message(bytes, "HealthCheckRequest", |field, value, at| {
        if let (1, Value::Bytes(b)) = (field, value) {
            service = String::from_utf8(b.to_vec())
                .map_err(|_| (at, "field 1 (service) is not UTF-8".to_string()))?;
        } else if field == 1 {
            return Err((at, "field 1 (service) must be length-delimited".into()));
        }
        Ok(())
    })?;
    Ok(service)
}

/// Encodes a `HealthCheckResponse` with `status`.
pub fn encode_response(status: ServingStatus) -> Vec<u8> {
    match status.as_i32() {
        0 => Vec::new(),
        n => vec![0x08, n as u8], // field 1, varint; every number fits in one byte
    }
}

/// Decodes a `HealthCheckResponse` into its status.
///
/// # Errors
///
/// The bytes are not a `HealthCheckResponse` (truncated, bad wire type, a varint
/// longer than ten bytes).
pub fn decode_response(bytes: &[u8]) -> Result<ServingStatus, HealthDecodeError> {
    let mut status = ServingStatus::Unknown;
    wire::read_message(bytes, "HealthCheckResponse", |field, value, at| {
        match (field, value) {
            // An int32 enum arrives as a 64-bit varint; keep its low 32 bits.
            (1, Value::Varint(n)) => status = ServingStatus::from_i32(n as i32),
            (1, _) => return Err((at, "field 1 (status) must be a varint".into())),
            _ => {}
        }
        Ok(())
    })?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_skips_unknown_fields() {
        for service in ["", "a", &"s".repeat(300)] {
            assert_eq!(decode_request(&encode_request(service)).unwrap(), service);
        }
        for status in [
            ServingStatus::Unknown,
            ServingStatus::Serving,
            ServingStatus::NotServing,
            ServingStatus::ServiceUnknown,
        ] {
            assert_eq!(decode_response(&encode_response(status)).unwrap(), status);
        }
        // Unknown fields of every wire type, then status twice (the last wins).
        let bytes = [
            0x10, 0x96, 0x01, // field 2 varint
            0x19, 1, 2, 3, 4, 5, 6, 7, 8, // field 3 fixed64
            0x22, 0x02, b'x', b'y', // field 4 bytes
            0x2d, 1, 2, 3, 4, // field 5 fixed32
            0x08, 0x02, 0x08, 0x01,
        ];
        assert_eq!(decode_response(&bytes).unwrap(), ServingStatus::Serving);
        // A negative enum number (ten-byte varint) is an unknown value.
        let mut negative = vec![0x08];
        push_varint(&mut negative, (-1i64) as u64);
        assert_eq!(decode_response(&negative).unwrap(), ServingStatus::Unknown);
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        for (bytes, want) in [
            (
                &[0x08][..],
                "bad HealthCheckResponse at byte 1: truncated varint",
            ),
            (&[0x0a, 0x01, 0x00], "field 1 (status) must be a varint"),
            (&[0x00], "field number 0"),
            (&[0x0b], "field 1 has wire type 3"),
            (&[0x11, 1, 2], "field 2 is truncated"),
            (
                &[
                    0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ],
                "varint longer than 10 bytes",
            ),
        ] {
            let err = decode_response(bytes).unwrap_err().to_string();
            assert!(err.contains(want), "{bytes:?}: {err}");
        }
        let err = decode_request(&[0x0a, 0x01, 0xff]).unwrap_err().to_string();
        assert!(err.contains("not UTF-8"), "{err}");
        let err = decode_request(&[0x08, 0x01]).unwrap_err().to_string();
        assert!(err.contains("must be length-delimited"), "{err}");
        // Every prefix and every single-byte corruption of a valid message decodes or
        // errs, without panicking.
        let good = encode_request("grpc.health.v1.Health");
        for cut in 0..good.len() {
            let _ = decode_request(&good[..cut]);
            for byte in [0x00, 0x7f, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[cut] = byte;
                let _ = decode_request(&bad);
                let _ = decode_response(&bad);
            }
        }
    }
}
