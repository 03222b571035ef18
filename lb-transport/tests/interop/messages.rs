//! The `grpc.testing` messages the interop cases use, written by hand as prost
//! structs after `xtask/peers/interop/proto/grpc/testing/{empty,messages}.proto`
//! (the same field numbers, so the bytes match every other implementation's).
//!
//! Fields no case uses are left out; prost skips them as unknown fields when a
//! peer sends them. The helpers below build the messages the cases send and
//! read what they get back.

use prost::Message;

/// `grpc.testing.Empty`: no fields, zero bytes on the wire.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Empty {}

/// `grpc.testing.BoolValue`: a boolean that can be absent.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct BoolValue {
    /// The value.
    #[prost(bool, tag = "1")]
    pub(crate) value: bool,
}

/// `grpc.testing.Payload`: bytes that make a message as large as a case needs.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Payload {
    /// `grpc.testing.PayloadType`; 0 (`COMPRESSABLE`) is the only value.
    #[prost(int32, tag = "1")]
    pub(crate) r#type: i32,
    /// The bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) body: Vec<u8>,
}

/// `grpc.testing.EchoStatus`: the status a client asks the server to end with.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EchoStatus {
    /// The status code.
    #[prost(int32, tag = "1")]
    pub(crate) code: i32,
    /// The status message.
    #[prost(string, tag = "2")]
    pub(crate) message: String,
}

/// `grpc.testing.SimpleRequest`, the request of `UnaryCall`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SimpleRequest {
    /// `grpc.testing.PayloadType` of the response.
    #[prost(int32, tag = "1")]
    pub(crate) response_type: i32,
    /// The size of the response payload, in bytes.
    #[prost(int32, tag = "2")]
    pub(crate) response_size: i32,
    /// The request payload.
    #[prost(message, optional, tag = "3")]
    pub(crate) payload: Option<Payload>,
    /// Asks the server to compress the response.
    #[prost(message, optional, tag = "6")]
    pub(crate) response_compressed: Option<BoolValue>,
    /// The status to end the call with, when its code is nonzero.
    #[prost(message, optional, tag = "7")]
    pub(crate) response_status: Option<EchoStatus>,
    /// Tells the server the request was sent compressed.
    #[prost(message, optional, tag = "8")]
    pub(crate) expect_compressed: Option<BoolValue>,
}

/// `grpc.testing.SimpleResponse`, the response of `UnaryCall`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SimpleResponse {
    /// The response payload.
    #[prost(message, optional, tag = "1")]
    pub(crate) payload: Option<Payload>,
}

/// `grpc.testing.StreamingInputCallRequest`, one request of
/// `StreamingInputCall`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StreamingInputCallRequest {
    /// The request payload.
    #[prost(message, optional, tag = "1")]
    pub(crate) payload: Option<Payload>,
    /// Tells the server the request was sent compressed.
    #[prost(message, optional, tag = "2")]
    pub(crate) expect_compressed: Option<BoolValue>,
}

/// `grpc.testing.StreamingInputCallResponse`, the response of
/// `StreamingInputCall`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StreamingInputCallResponse {
    /// The sum of the request payload sizes.
    #[prost(int32, tag = "1")]
    pub(crate) aggregated_payload_size: i32,
}

/// `grpc.testing.ResponseParameters`: how the server builds one response.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ResponseParameters {
    /// The payload size, in bytes.
    #[prost(int32, tag = "1")]
    pub(crate) size: i32,
    /// How long to wait before sending this response, in microseconds.
    #[prost(int32, tag = "2")]
    pub(crate) interval_us: i32,
    /// Asks the server to compress this response.
    #[prost(message, optional, tag = "3")]
    pub(crate) compressed: Option<BoolValue>,
}

/// `grpc.testing.StreamingOutputCallRequest`, the request of
/// `StreamingOutputCall` and each request of `FullDuplexCall`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StreamingOutputCallRequest {
    /// `grpc.testing.PayloadType` of the responses.
    #[prost(int32, tag = "1")]
    pub(crate) response_type: i32,
    /// One response per entry, in order.
    #[prost(message, repeated, tag = "2")]
    pub(crate) response_parameters: Vec<ResponseParameters>,
    /// The request payload.
    #[prost(message, optional, tag = "3")]
    pub(crate) payload: Option<Payload>,
    /// The status to end the call with, when its code is nonzero.
    #[prost(message, optional, tag = "7")]
    pub(crate) response_status: Option<EchoStatus>,
}

/// `grpc.testing.StreamingOutputCallResponse`, one response of the streaming
/// methods.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StreamingOutputCallResponse {
    /// The response payload.
    #[prost(message, optional, tag = "1")]
    pub(crate) payload: Option<Payload>,
}

/// A payload of `size` zero bytes.
pub(crate) fn zeros(size: usize) -> Option<Payload> {
    Some(Payload {
        r#type: 0,
        body: vec![0; size],
    })
}

/// The body of an optional payload (empty when absent).
pub(crate) fn body(payload: Option<&Payload>) -> &[u8] {
    payload.map_or(&[], |p| p.body.as_slice())
}

/// A `StreamingOutputCallRequest` asking for one response per size in
/// `response_sizes`, carrying `request_size` zero bytes.
pub(crate) fn streaming_request(
    response_sizes: &[usize],
    request_size: usize,
) -> StreamingOutputCallRequest {
    StreamingOutputCallRequest {
        response_parameters: response_sizes
            .iter()
            .map(|&size| ResponseParameters {
                size: i32::try_from(size).unwrap_or(i32::MAX),
                ..ResponseParameters::default()
            })
            .collect(),
        payload: if request_size > 0 {
            zeros(request_size)
        } else {
            None
        },
        ..StreamingOutputCallRequest::default()
    }
}

/// Encodes a message to the bytes of one gRPC message.
pub(crate) fn encode<M: Message>(message: &M) -> Vec<u8> {
    message.encode_to_vec()
}

/// Decodes one gRPC message, naming `what` in the error.
pub(crate) fn decode<M: Message + Default>(bytes: &[u8], what: &str) -> Result<M, String> {
    M::decode(bytes).map_err(|e| format!("{what}: cannot decode {} bytes: {e}", bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known encodings, worked out by hand from the field numbers and wire
    /// types: a change to a tag or a type shows up here first.
    #[test]
    fn wire_bytes_match_the_protos() {
        assert!(encode(&Empty {}).is_empty());
        let request = SimpleRequest {
            response_size: 3,
            payload: zeros(2),
            response_status: Some(EchoStatus {
                code: 2,
                message: "x".into(),
            }),
            ..SimpleRequest::default()
        };
        // 0x10 = field 2 varint; 0x1a = field 3 length-delimited (Payload,
        // whose 0x12 is field 2 bytes); 0x3a = field 7 (EchoStatus: 0x08 code,
        // 0x12 message).
        assert_eq!(
            encode(&request),
            [
                0x10, 3, 0x1a, 4, 0x12, 2, 0, 0, 0x3a, 5, 0x08, 2, 0x12, 1, b'x'
            ]
        );
        let streaming = streaming_request(&[9], 1);
        // 0x12 = field 2 (ResponseParameters: 0x08 size); 0x1a = field 3.
        assert_eq!(encode(&streaming), [0x12, 2, 0x08, 9, 0x1a, 3, 0x12, 1, 0]);
        let aggregated = StreamingInputCallResponse {
            aggregated_payload_size: 300,
        };
        assert_eq!(encode(&aggregated), [0x08, 0xac, 0x02]);
        let back: StreamingInputCallResponse = decode(&[0x08, 0xac, 0x02], "test").unwrap();
        assert_eq!(back, aggregated);
    }
}
