//! Our client side of the interop cases: a [`Channel`] over our HTTP/2
//! transport ([`H2Transport`]) calling a `grpc.testing.TestService` server.
//!
//! Each case runs on its own thread and is given [`CASE_LIMIT`]: a case that
//! has not finished by then fails as hung (its thread is left behind), and a
//! case that panics fails with the panic message. Every call also carries a
//! deadline of its own.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use lb_core::channel::{CallOptions, Channel};
use lb_core::{Code, Metadata, Status};
use lb_transport::driver::{H2Transport, TransportConfig};

use crate::messages::{
    self, BoolValue, EchoStatus, Empty, SimpleRequest, SimpleResponse, StreamingInputCallRequest,
    StreamingInputCallResponse, StreamingOutputCallRequest, StreamingOutputCallResponse,
};
use crate::service::{ECHO_INITIAL, ECHO_TRAILING, SERVICE};
use crate::{CASES, Outcome};

/// The deadline of every call (but `timeout_on_sleeping_server`'s).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one case may take in all.
const CASE_LIMIT: Duration = Duration::from_secs(30);

/// The request payload sizes of the streaming cases.
const REQUEST_SIZES: [usize; 4] = [27182, 8, 1828, 45904];

/// The response payload sizes of the streaming cases.
const RESPONSE_SIZES: [usize; 4] = [31415, 9, 2653, 58979];

/// The value `custom_metadata` sends in `x-grpc-test-echo-initial`.
const ECHO_INITIAL_VALUE: &str = "test_initial_metadata_value";

/// The value `custom_metadata` sends in `x-grpc-test-echo-trailing-bin`.
const ECHO_TRAILING_VALUE: [u8; 3] = [0xab, 0xab, 0xab];

/// The message `status_code_and_message` asks for.
const STATUS_MESSAGE: &str = "test status message";

/// The message `special_status_message` asks for: whitespace, and characters
/// in and beyond the Basic Multilingual Plane.
const SPECIAL_STATUS_MESSAGE: &str =
    "\t\ntest with whitespace\r\nand Unicode BMP \u{263a} and non-BMP \u{1f608}\t\n";

/// What a case function returns: `Err` says what went wrong.
type CaseResult = Result<(), String>;

/// Runs every case against the server at `target` (`host:port`), in
/// [`CASES`] order.
pub(crate) fn run_all(target: &str) -> Vec<(&'static str, Outcome)> {
    let channel = match channel(target) {
        Ok(channel) => channel,
        Err(why) => {
            return CASES
                .iter()
                .map(|&case| (case, Outcome::Fail(why.clone())))
                .collect();
        }
    };
    let results = CASES
        .iter()
        .map(|&case| (case, run_case(&channel, case)))
        .collect();
    channel.close();
    results
}

/// A channel to `target` over our transport, with the default policy.
fn channel(target: &str) -> Result<Channel, String> {
    let transport = H2Transport::new(TransportConfig::default())
        .map_err(|e| format!("cannot start our transport: {e}"))?;
    Channel::builder(format!("ipv4:{target}"))
        .transport(Arc::new(transport))
        .build()
        .map_err(|e| format!("cannot build our channel: {e}"))
}

/// Runs one case on its own thread, bounded by [`CASE_LIMIT`].
fn run_case(channel: &Channel, case: &'static str) -> Outcome {
    let body: fn(&Channel) -> CaseResult = match case {
        "empty_unary" => empty_unary,
        "large_unary" => large_unary,
        "client_compressed_unary" => client_compressed_unary,
        "server_compressed_unary" => server_compressed_unary,
        "client_streaming" => client_streaming,
        "server_streaming" => server_streaming,
        "ping_pong" => ping_pong,
        "empty_stream" => empty_stream,
        "timeout_on_sleeping_server" => timeout_on_sleeping_server,
        "cancel_after_begin" => cancel_after_begin,
        "cancel_after_first_response" => cancel_after_first_response,
        "custom_metadata" => custom_metadata,
        "status_code_and_message" => status_code_and_message,
        "special_status_message" => special_status_message,
        "unimplemented_method" => unimplemented_method,
        "unimplemented_service" => unimplemented_service,
        other => return Outcome::Fail(format!("no such case {other}")),
    };
    let (tx, rx) = mpsc::channel();
    let channel = channel.clone();
    let spawned = thread::Builder::new()
        .name(format!("interop-{case}"))
        .spawn(move || {
            let result = panic::catch_unwind(AssertUnwindSafe(|| body(&channel)))
                .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_message(&*panic))));
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        return Outcome::Fail(format!("cannot start the case's thread: {e}"));
    }
    match rx.recv_timeout(CASE_LIMIT) {
        Ok(Ok(())) => Outcome::Pass,
        Ok(Err(why)) => Outcome::Fail(why),
        Err(RecvTimeoutError::Timeout) => {
            Outcome::Fail(format!("hung: not finished within {CASE_LIMIT:?}"))
        }
        Err(RecvTimeoutError::Disconnected) => Outcome::Fail("the case's thread died".into()),
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(not a string)".into())
}

fn empty_unary(channel: &Channel) -> CaseResult {
    let response = channel
        .unary(&path("EmptyCall"), messages::encode(&Empty {}), options())
        .map_err(|s| unexpected("EmptyCall", &s))?;
    let _: Empty = messages::decode(&response.message, "EmptyCall response")?;
    check(
        response.message.is_empty(),
        format!(
            "EmptyCall response is {} bytes, not 0",
            response.message.len()
        ),
    )
}

fn large_unary(channel: &Channel) -> CaseResult {
    let response = channel
        .unary(
            &path("UnaryCall"),
            messages::encode(&large_request()),
            options(),
        )
        .map_err(|s| unexpected("UnaryCall", &s))?;
    let response: SimpleResponse = messages::decode(&response.message, "UnaryCall response")?;
    zeros(
        messages::body(response.payload.as_ref()),
        314_159,
        "response",
    )
}

/// `large_request` with `expect_compressed` or `response_compressed` set to
/// `value`.
fn compression_request(expect: Option<bool>, respond: Option<bool>) -> SimpleRequest {
    SimpleRequest {
        expect_compressed: expect.map(|value| BoolValue { value }),
        response_compressed: respond.map(|value| BoolValue { value }),
        ..large_request()
    }
}

/// One `UnaryCall` with `request`, sent with `compression`; checks the
/// response's payload.
fn compressed_unary_call(
    channel: &Channel,
    request: &SimpleRequest,
    compression: &str,
) -> Result<(), Status> {
    let response = channel.unary(
        &path("UnaryCall"),
        messages::encode(request),
        options().with_compression(compression),
    )?;
    let response: SimpleResponse =
        messages::decode(&response.message, "UnaryCall response").map_err(Status::internal)?;
    zeros(
        messages::body(response.payload.as_ref()),
        314_159,
        "response",
    )
    .map_err(Status::internal)
}

fn client_compressed_unary(channel: &Channel) -> CaseResult {
    // The probe: an uncompressed request that expects compression. A server with
    // the spec's CompressedRequest feature answers INVALID_ARGUMENT; grpcio's
    // cannot see the flag and answers OK (see `xtask/peers/interop/server.py`).
    match compressed_unary_call(channel, &compression_request(Some(true), None), "identity") {
        Ok(()) => {}
        Err(s) => expect_code(&s, Code::InvalidArgument, None)?,
    }
    compressed_unary_call(channel, &compression_request(Some(true), None), "gzip")
        .map_err(|s| unexpected("compressed UnaryCall", &s))?;
    compressed_unary_call(channel, &compression_request(Some(false), None), "identity")
        .map_err(|s| unexpected("uncompressed UnaryCall", &s))
}

fn server_compressed_unary(channel: &Channel) -> CaseResult {
    for respond in [true, false] {
        compressed_unary_call(
            channel,
            &compression_request(None, Some(respond)),
            "identity",
        )
        .map_err(|s| unexpected(&format!("UnaryCall response_compressed {respond}"), &s))?;
    }
    Ok(())
}

fn client_streaming(channel: &Channel) -> CaseResult {
    let call = channel
        .client_streaming(&path("StreamingInputCall"), options())
        .map_err(|s| unexpected("StreamingInputCall start", &s))?;
    for size in REQUEST_SIZES {
        let request = StreamingInputCallRequest {
            payload: messages::zeros(size),
            ..StreamingInputCallRequest::default()
        };
        call.send(messages::encode(&request))
            .map_err(|e| unexpected(&format!("send of {size} bytes"), &e.status()))?;
    }
    let response = call
        .finish()
        .map_err(|s| unexpected("StreamingInputCall", &s))?;
    let response: StreamingInputCallResponse =
        messages::decode(&response.message, "StreamingInputCall response")?;
    check(
        response.aggregated_payload_size == 74_922,
        format!(
            "aggregated_payload_size {}, expected 74922",
            response.aggregated_payload_size
        ),
    )
}

fn server_streaming(channel: &Channel) -> CaseResult {
    let request = StreamingOutputCallRequest {
        response_parameters: messages::streaming_request(&RESPONSE_SIZES, 0).response_parameters,
        ..StreamingOutputCallRequest::default()
    };
    let call = channel
        .server_streaming(
            &path("StreamingOutputCall"),
            messages::encode(&request),
            options(),
        )
        .map_err(|s| unexpected("StreamingOutputCall start", &s))?;
    let mut sizes = Vec::new();
    for (i, message) in call.enumerate() {
        let message = message.map_err(|s| unexpected(&format!("after {i} responses"), &s))?;
        let response: StreamingOutputCallResponse = messages::decode(&message, "response")?;
        let body = messages::body(response.payload.as_ref());
        if let Some(&expected) = RESPONSE_SIZES.get(i) {
            zeros(body, expected, &format!("response {i}"))?;
        }
        sizes.push(body.len());
    }
    check(
        sizes == RESPONSE_SIZES,
        format!("response sizes {sizes:?}, expected {RESPONSE_SIZES:?}"),
    )
}

fn ping_pong(channel: &Channel) -> CaseResult {
    let call = channel
        .bidi_streaming(&path("FullDuplexCall"), options())
        .map_err(|s| unexpected("FullDuplexCall start", &s))?;
    for (i, (out, back)) in REQUEST_SIZES.into_iter().zip(RESPONSE_SIZES).enumerate() {
        call.send(messages::encode(&messages::streaming_request(&[back], out)))
            .map_err(|e| unexpected(&format!("send {i}"), &e.status()))?;
        let message = call
            .recv()
            .map_err(|s| unexpected(&format!("waiting for response {i}"), &s))?
            .ok_or_else(|| format!("the call ended OK before response {i}"))?;
        let response: StreamingOutputCallResponse = messages::decode(&message, "response")?;
        zeros(
            messages::body(response.payload.as_ref()),
            back,
            &format!("response {i}"),
        )?;
    }
    call.close_send();
    expect_end(call.recv(), "after the half-close")
}

fn empty_stream(channel: &Channel) -> CaseResult {
    let call = channel
        .bidi_streaming(&path("FullDuplexCall"), options())
        .map_err(|s| unexpected("FullDuplexCall start", &s))?;
    call.close_send();
    expect_end(call.recv(), "after the half-close")
}

fn timeout_on_sleeping_server(channel: &Channel) -> CaseResult {
    let options = CallOptions::default().with_timeout(Duration::from_millis(1));
    let call = match channel.bidi_streaming(&path("FullDuplexCall"), options) {
        Ok(call) => call,
        // The deadline may pass before the call is even on a connection.
        Err(status) => return expect_code(&status, Code::DeadlineExceeded, None),
    };
    // The send may fail already, with the call's status: recv tells.
    let _ = call.send(messages::encode(&messages::streaming_request(&[], 27182)));
    loop {
        match call.recv() {
            Ok(Some(_)) => {}
            Ok(None) => return Err("the call ended OK".into()),
            Err(status) => return expect_code(&status, Code::DeadlineExceeded, None),
        }
    }
}

fn cancel_after_begin(channel: &Channel) -> CaseResult {
    let call = channel
        .client_streaming(&path("StreamingInputCall"), options())
        .map_err(|s| unexpected("StreamingInputCall start", &s))?;
    call.cancel();
    match call.finish() {
        Ok(_) => Err("the call succeeded after cancel".into()),
        Err(status) => expect_code(&status, Code::Cancelled, None),
    }
}

fn cancel_after_first_response(channel: &Channel) -> CaseResult {
    let call = channel
        .bidi_streaming(&path("FullDuplexCall"), options())
        .map_err(|s| unexpected("FullDuplexCall start", &s))?;
    call.send(messages::encode(&messages::streaming_request(
        &[31415],
        27182,
    )))
    .map_err(|e| unexpected("send", &e.status()))?;
    let message = call
        .recv()
        .map_err(|s| unexpected("waiting for the first response", &s))?
        .ok_or("the call ended OK before the first response")?;
    let response: StreamingOutputCallResponse = messages::decode(&message, "response")?;
    zeros(messages::body(response.payload.as_ref()), 31415, "response")?;
    call.cancel();
    match call.recv() {
        Ok(Some(_)) => Err("a response after cancel".into()),
        Ok(None) => Err("the call ended OK after cancel".into()),
        Err(status) => expect_code(&status, Code::Cancelled, None),
    }
}

fn custom_metadata(channel: &Channel) -> CaseResult {
    let mut metadata = Metadata::new();
    metadata
        .insert(ECHO_INITIAL, ECHO_INITIAL_VALUE)
        .map_err(|e| e.to_string())?;
    metadata
        .insert_bin(ECHO_TRAILING, &ECHO_TRAILING_VALUE)
        .map_err(|e| e.to_string())?;

    let response = channel
        .unary(
            &path("UnaryCall"),
            messages::encode(&large_request()),
            options().with_metadata(metadata.clone()),
        )
        .map_err(|s| unexpected("UnaryCall", &s))?;
    let body: SimpleResponse = messages::decode(&response.message, "UnaryCall response")?;
    zeros(
        messages::body(body.payload.as_ref()),
        314_159,
        "UnaryCall response",
    )?;
    check_echoed("UnaryCall", &response.headers, &response.trailers)?;

    let call = channel
        .bidi_streaming(&path("FullDuplexCall"), options().with_metadata(metadata))
        .map_err(|s| unexpected("FullDuplexCall start", &s))?;
    call.send_last(messages::encode(&messages::streaming_request(
        &[314_159],
        271_828,
    )))
    .map_err(|e| unexpected("FullDuplexCall send", &e.status()))?;
    let headers = call
        .headers()
        .map_err(|s| unexpected("FullDuplexCall headers", &s))?;
    let message = call
        .recv()
        .map_err(|s| unexpected("FullDuplexCall response", &s))?
        .ok_or("FullDuplexCall ended OK with no response")?;
    let response: StreamingOutputCallResponse = messages::decode(&message, "response")?;
    zeros(
        messages::body(response.payload.as_ref()),
        314_159,
        "FullDuplexCall response",
    )?;
    expect_end(call.recv(), "FullDuplexCall after its response")?;
    let trailers = call
        .trailers()
        .ok_or("FullDuplexCall ended without trailers")?;
    check_echoed("FullDuplexCall", &headers, &trailers)
}

fn check_echoed(method: &str, headers: &Metadata, trailers: &Metadata) -> CaseResult {
    check(
        headers.get(ECHO_INITIAL) == Some(ECHO_INITIAL_VALUE),
        format!("{method}: initial metadata {headers:?} lacks {ECHO_INITIAL}"),
    )?;
    check(
        trailers.get_bin(ECHO_TRAILING) == Some(&ECHO_TRAILING_VALUE[..]),
        format!("{method}: trailing metadata {trailers:?} lacks {ECHO_TRAILING}"),
    )
}

fn status_code_and_message(channel: &Channel) -> CaseResult {
    unary_with_status(channel, STATUS_MESSAGE)?;
    let call = channel
        .bidi_streaming(&path("FullDuplexCall"), options())
        .map_err(|s| unexpected("FullDuplexCall start", &s))?;
    let request = StreamingOutputCallRequest {
        response_status: Some(EchoStatus {
            code: 2,
            message: STATUS_MESSAGE.into(),
        }),
        ..StreamingOutputCallRequest::default()
    };
    call.send_last(messages::encode(&request))
        .map_err(|e| unexpected("FullDuplexCall send", &e.status()))?;
    match call.recv() {
        Ok(Some(_)) => Err("FullDuplexCall: a response, expected none".into()),
        Ok(None) => Err("FullDuplexCall ended OK".into()),
        Err(status) => expect_code(&status, Code::Unknown, Some(STATUS_MESSAGE))
            .map_err(|e| format!("FullDuplexCall: {e}")),
    }
}

fn special_status_message(channel: &Channel) -> CaseResult {
    unary_with_status(channel, SPECIAL_STATUS_MESSAGE)
}

/// A `UnaryCall` asking for UNKNOWN with `message`, which must come back
/// exactly.
fn unary_with_status(channel: &Channel, message: &str) -> CaseResult {
    let request = SimpleRequest {
        response_status: Some(EchoStatus {
            code: 2,
            message: message.into(),
        }),
        ..SimpleRequest::default()
    };
    match channel.unary(&path("UnaryCall"), messages::encode(&request), options()) {
        Ok(_) => Err("UnaryCall succeeded".into()),
        Err(status) => expect_code(&status, Code::Unknown, Some(message))
            .map_err(|e| format!("UnaryCall: {e}")),
    }
}

fn unimplemented_method(channel: &Channel) -> CaseResult {
    expect_unimplemented(channel, &path("UnimplementedCall"))
}

fn unimplemented_service(channel: &Channel) -> CaseResult {
    expect_unimplemented(
        channel,
        "/grpc.testing.UnimplementedService/UnimplementedCall",
    )
}

fn expect_unimplemented(channel: &Channel, method: &str) -> CaseResult {
    match channel.unary(method, messages::encode(&Empty {}), options()) {
        Ok(_) => Err(format!("{method} succeeded")),
        Err(status) => expect_code(&status, Code::Unimplemented, None),
    }
}

/// The `SimpleRequest` of `large_unary` and `custom_metadata`.
fn large_request() -> SimpleRequest {
    SimpleRequest {
        response_size: 314_159,
        payload: messages::zeros(271_828),
        ..SimpleRequest::default()
    }
}

/// The path of a `TestService` method.
fn path(method: &str) -> String {
    format!("{SERVICE}{method}")
}

/// The options of every call but `timeout_on_sleeping_server`'s.
fn options() -> CallOptions {
    CallOptions::default().with_timeout(CALL_TIMEOUT)
}

fn check(condition: bool, what: String) -> CaseResult {
    if condition { Ok(()) } else { Err(what) }
}

/// Checks that `body` is `size` zero bytes.
fn zeros(body: &[u8], size: usize, what: &str) -> CaseResult {
    check(
        body.len() == size,
        format!("{what}: {} bytes, expected {size}", body.len()),
    )?;
    check(
        body.iter().all(|&b| b == 0),
        format!("{what}: the payload is not all zeros"),
    )
}

/// Checks that a call ended with `code` (and `message`, when given).
fn expect_code(status: &Status, code: Code, message: Option<&str>) -> CaseResult {
    check(
        status.code() == code,
        format!(
            "status {:?} ({:?}), expected {code:?}",
            status.code(),
            status.message()
        ),
    )?;
    match message {
        Some(message) => check(
            status.message() == message,
            format!(
                "status message {:?}, expected {message:?}",
                status.message()
            ),
        ),
        None => Ok(()),
    }
}

/// Checks that a receive saw the end of an OK call.
fn expect_end(received: Result<Option<Vec<u8>>, Status>, when: &str) -> CaseResult {
    match received {
        Ok(None) => Ok(()),
        Ok(Some(message)) => Err(format!(
            "{when}: an extra response of {} bytes",
            message.len()
        )),
        Err(status) => Err(unexpected(when, &status)),
    }
}

fn unexpected(what: &str, status: &Status) -> String {
    format!(
        "{what}: unexpected status {:?} ({:?})",
        status.code(),
        status.message()
    )
}
