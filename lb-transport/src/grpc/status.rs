//! Mapping HTTP/2 error codes to gRPC statuses.

use lb_core::{Code, Status};

use crate::frame::Reason;

/// The gRPC code for a stream reset by the peer with `reason`.
///
/// ```
/// use lb_core::Code;
/// use lb_transport::frame::Reason;
/// use lb_transport::grpc::status::code_for_reset;
/// assert_eq!(code_for_reset(Reason::REFUSED_STREAM), Code::Unavailable);
/// assert_eq!(code_for_reset(Reason::CANCEL), Code::Cancelled);
/// ```
pub fn code_for_reset(reason: Reason) -> Code {
    match reason {
        Reason::REFUSED_STREAM => Code::Unavailable,
        Reason::CANCEL => Code::Cancelled,
        Reason::ENHANCE_YOUR_CALM => Code::ResourceExhausted,
        Reason::INADEQUATE_SECURITY => Code::PermissionDenied,
        _ => Code::Internal,
    }
}

/// The status of a call whose stream the peer reset with `reason`.
pub fn status_for_reset(reason: Reason) -> Status {
    Status::new(
        code_for_reset(reason),
        format!("stream reset by the peer: {reason}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_grpc_table() {
        let table = [
            (Reason::NO_ERROR, Code::Internal),
            (Reason::PROTOCOL_ERROR, Code::Internal),
            (Reason::INTERNAL_ERROR, Code::Internal),
            (Reason::FLOW_CONTROL_ERROR, Code::Internal),
            (Reason::SETTINGS_TIMEOUT, Code::Internal),
            (Reason::FRAME_SIZE_ERROR, Code::Internal),
            (Reason::COMPRESSION_ERROR, Code::Internal),
            (Reason::CONNECT_ERROR, Code::Internal),
            (Reason::REFUSED_STREAM, Code::Unavailable),
            (Reason::CANCEL, Code::Cancelled),
            (Reason::ENHANCE_YOUR_CALM, Code::ResourceExhausted),
            (Reason::INADEQUATE_SECURITY, Code::PermissionDenied),
        ];
        for (reason, code) in table {
            assert_eq!(code_for_reset(reason), code, "{reason}");
        }
        assert!(
            status_for_reset(Reason::CANCEL)
                .message()
                .contains("CANCEL")
        );
    }
}
