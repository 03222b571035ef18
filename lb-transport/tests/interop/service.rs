//! Our `grpc.testing.TestService` on [`lb_transport::server`]: the server side
//! of the interop cases, which grpcio's Python client calls.
//!
//! What each method does is the interop spec's server features, the same as
//! `xtask/peers/interop/server.py`:
//!
//! - `EmptyCall` answers `Empty`; `UnaryCall` answers `response_size` zero
//!   bytes.
//! - `StreamingOutputCall` answers one message per response parameter, after
//!   waiting its `interval_us`; `FullDuplexCall` does so for each request as it
//!   arrives and `HalfDuplexCall` after the client half-closes.
//! - `StreamingInputCall` answers the sum of the request payload sizes.
//! - A request with a nonzero `response_status` ends the call with it.
//! - `x-grpc-test-echo-initial` comes back in the response headers and
//!   `x-grpc-test-echo-trailing-bin` in the trailers.
//! - `UnimplementedCall` and `UnimplementedService` are not registered, so the
//!   server answers them UNIMPLEMENTED.
//! - `UnaryCall` with `response_compressed: true` answers gzip-compressed (if
//!   the client accepts gzip), and with `expect_compressed: true` fails with
//!   INVALID_ARGUMENT unless the request message arrived compressed (the interop
//!   spec's CompressedResponse and CompressedRequest features).

use std::time::{Duration, Instant};

use lb_core::{Code, Metadata, Status};
use lb_transport::grpc::compression::Encoding;
use lb_transport::server::{Request, Response, ServerBuilder, ServerCall};

use crate::messages::{
    self, BoolValue, EchoStatus, Empty, SimpleRequest, SimpleResponse, StreamingInputCallRequest,
    StreamingInputCallResponse, StreamingOutputCallRequest, StreamingOutputCallResponse,
};

/// The request metadata key echoed in the response headers.
pub(crate) const ECHO_INITIAL: &str = "x-grpc-test-echo-initial";
/// The request metadata key echoed in the trailers.
pub(crate) const ECHO_TRAILING: &str = "x-grpc-test-echo-trailing-bin";

/// The method path prefix of `grpc.testing.TestService`.
pub(crate) const SERVICE: &str = "/grpc.testing.TestService/";

/// The longest wait one response parameter may ask for.
const MAX_INTERVAL: Duration = Duration::from_secs(10);

/// Registers the `TestService` methods on `builder`.
pub(crate) fn register(builder: ServerBuilder) -> ServerBuilder {
    let path = |method: &str| format!("{SERVICE}{method}");
    builder
        .unary(&path("EmptyCall"), empty_call)
        .unary(&path("UnaryCall"), unary_call)
        .server_streaming(&path("StreamingOutputCall"), streaming_output_call)
        .client_streaming(&path("StreamingInputCall"), streaming_input_call)
        .bidi_streaming(&path("FullDuplexCall"), full_duplex_call)
        .bidi_streaming(&path("HalfDuplexCall"), half_duplex_call)
}

fn empty_call(request: Request) -> Result<Response, Status> {
    let _: Empty = decode(&request.message)?;
    let (headers, trailers) = echo(&request.metadata);
    Ok(Response {
        message: messages::encode(&Empty {}),
        headers,
        trailers,
        compression: None,
    })
}

fn unary_call(request: Request) -> Result<Response, Status> {
    let message: SimpleRequest = decode(&request.message)?;
    requested_status(message.response_status.as_ref())?;
    if is_set(message.expect_compressed.as_ref()) && !request.compressed {
        return Err(Status::invalid_argument(
            "expected a compressed request, but it was not compressed",
        ));
    }
    let (headers, trailers) = echo(&request.metadata);
    let response = SimpleResponse {
        payload: messages::zeros(size(message.response_size)?),
    };
    // Identity must be explicit: the server may have a default.
    let compression = if is_set(message.response_compressed.as_ref()) {
        Encoding::Gzip
    } else {
        Encoding::Identity
    };
    Ok(Response {
        message: messages::encode(&response),
        headers,
        trailers,
        compression: Some(compression),
    })
}

fn streaming_output_call(request: Vec<u8>, call: &mut ServerCall) -> Result<(), Status> {
    start_echo(call)?;
    let message: StreamingOutputCallRequest = decode(&request)?;
    respond(call, &message)
}

fn streaming_input_call(call: &mut ServerCall) -> Result<Vec<u8>, Status> {
    start_echo(call)?;
    let mut total: usize = 0;
    while let Some(bytes) = call.recv()? {
        let message: StreamingInputCallRequest = decode(&bytes)?;
        if is_set(message.expect_compressed.as_ref()) {
            // The compressed flag of a streamed message is not shown to handlers;
            // client_compressed_streaming is not among the cases run.
            return Err(Status::unimplemented(
                "expect_compressed is not checked on streaming calls",
            ));
        }
        total += messages::body(message.payload.as_ref()).len();
    }
    let aggregated_payload_size = i32::try_from(total)
        .map_err(|_| Status::invalid_argument("aggregated payload size overflows int32"))?;
    Ok(messages::encode(&StreamingInputCallResponse {
        aggregated_payload_size,
    }))
}

fn full_duplex_call(call: &mut ServerCall) -> Result<(), Status> {
    start_echo(call)?;
    while let Some(bytes) = call.recv()? {
        let message: StreamingOutputCallRequest = decode(&bytes)?;
        respond(call, &message)?;
    }
    Ok(())
}

fn half_duplex_call(call: &mut ServerCall) -> Result<(), Status> {
    start_echo(call)?;
    let mut requests = Vec::new();
    while let Some(bytes) = call.recv()? {
        requests.push(decode::<StreamingOutputCallRequest>(&bytes)?);
    }
    for message in &requests {
        respond(call, message)?;
    }
    Ok(())
}

/// Sends the responses one streaming request asks for, or ends the call with
/// the status it asks for.
fn respond(call: &mut ServerCall, message: &StreamingOutputCallRequest) -> Result<(), Status> {
    requested_status(message.response_status.as_ref())?;
    for parameters in &message.response_parameters {
        if is_set(parameters.compressed.as_ref()) {
            // Takes effect only while the response headers have not gone out.
            call.set_compression(Encoding::Gzip);
        }
        let interval = u64::try_from(parameters.interval_us).unwrap_or(0);
        if interval > 0 {
            let wait = Duration::from_micros(interval).min(MAX_INTERVAL);
            if call.wait_cancelled(Instant::now() + wait) {
                return Err(Status::cancelled("cancelled while waiting interval_us"));
            }
        }
        let response = StreamingOutputCallResponse {
            payload: messages::zeros(size(parameters.size)?),
        };
        call.send(&messages::encode(&response))?;
    }
    Ok(())
}

/// The response headers and trailers that echo the request's metadata.
fn echo(request: &Metadata) -> (Metadata, Metadata) {
    let mut headers = Metadata::new();
    let mut trailers = Metadata::new();
    for value in request.get_all(ECHO_INITIAL) {
        // A value that arrived is a valid value.
        let _ = headers.insert(ECHO_INITIAL, value);
    }
    if let Some(value) = request.get_bin(ECHO_TRAILING) {
        let _ = trailers.insert_bin(ECHO_TRAILING, value);
    }
    (headers, trailers)
}

/// For a streaming call: the echoed headers go out now (only when there are
/// any, so a call without them still sends its headers with its first
/// message), and the echoed trailers with the status.
fn start_echo(call: &mut ServerCall) -> Result<(), Status> {
    let (headers, trailers) = echo(call.metadata());
    if !headers.is_empty() {
        call.send_headers(headers)?;
    }
    call.set_trailers(trailers);
    Ok(())
}

/// Fails with the status a request asks for, when its code is nonzero.
fn requested_status(status: Option<&EchoStatus>) -> Result<(), Status> {
    let Some(status) = status.filter(|s| s.code != 0) else {
        return Ok(());
    };
    let code = Code::from_i32(status.code)
        .ok_or_else(|| Status::invalid_argument(format!("{} is not a status code", status.code)))?;
    Err(Status::new(code, status.message.clone()))
}

/// Refuses what needs message compression, which we do not have.
/// Whether an optional `BoolValue` is there and true.
fn is_set(value: Option<&BoolValue>) -> bool {
    value.is_some_and(|b| b.value)
}

/// A payload size from a request, which must not be negative.
fn size(size: i32) -> Result<usize, Status> {
    usize::try_from(size).map_err(|_| Status::invalid_argument(format!("negative size {size}")))
}

/// Decodes a request message, failing the call with INVALID_ARGUMENT.
fn decode<M: prost::Message + Default>(bytes: &[u8]) -> Result<M, Status> {
    messages::decode(bytes, "request").map_err(Status::invalid_argument)
}
