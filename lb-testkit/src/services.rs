//! The echo and benchmark services that tests and benchmarks run on our gRPC server
//! ([`lb_transport::server`]), answering like the grpcio peer in
//! `xtask/peers/grpc_server.py`, so a test can swap one server for the other.
//!
//! | path | answer |
//! |---|---|
//! | [`BENCH_UNARY`] `/bench.Echo/Unary` | the request bytes (wire-compatible with `bench.Msg { bytes payload = 1; }`) |
//! | [`ECHO`] `/test.Echo/Echo` | the request bytes; request metadata keys starting with `x-` come back in the response headers and in the trailers, and the headers also carry `x-server-id` |
//! | [`STATUS`] `/test.Echo/Status` | fails with the code in `x-status-code` and the message in `x-status-message-bin` (UTF-8), else `x-status-message`, else the body |
//! | [`SLEEP`] `/test.Echo/Sleep` | waits the milliseconds given as ASCII digits in the body (at most 30 s, cut short when the call is cancelled), then echoes |
//! | [`WHO`] `/test.Echo/Who` | the server's id |
//! | [`STREAM_SERVER`] `/test.Stream/Server` | for the ASCII request `COUNT SIZE`, COUNT messages of SIZE bytes (at least 4): message i is i as 4 big-endian bytes, then bytes i % 251; request metadata keys starting with `x-` come back as trailers, and with `x-status-code` the call then fails with that code |
//! | [`STREAM_CLIENT`] `/test.Stream/Client` | reads every request message and answers ASCII `COUNT BYTES` |
//! | [`STREAM_BIDI`] `/test.Stream/Bidi` | echoes each request message as it arrives |
//!
//! The three `/test.Stream` methods send `x-server-id` in their response headers.
//!
//! # Examples
//!
//! ```
//! use lb_transport::server::Server;
//!
//! let server = lb_testkit::services::mount(Server::builder(), "server-a")
//!     .workers(2)
//!     .bind("127.0.0.1:0")?;
//! assert_ne!(server.local_addr().port(), 0);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::time::{Duration, Instant};

use lb_core::{Code, Metadata, Status};
use lb_transport::server::{Request, Response, ServerBuilder, ServerCall};

/// Echoes the request bytes.
pub const BENCH_UNARY: &str = "/bench.Echo/Unary";
/// Echoes the request bytes and its `x-` metadata.
pub const ECHO: &str = "/test.Echo/Echo";
/// Fails with the status the request asks for.
pub const STATUS: &str = "/test.Echo/Status";
/// Waits, then echoes.
pub const SLEEP: &str = "/test.Echo/Sleep";
/// Answers with the server's id.
pub const WHO: &str = "/test.Echo/Who";
/// Streams COUNT messages of SIZE bytes.
pub const STREAM_SERVER: &str = "/test.Stream/Server";
/// Counts the request messages and their bytes.
pub const STREAM_CLIENT: &str = "/test.Stream/Client";
/// Echoes each request message.
pub const STREAM_BIDI: &str = "/test.Stream/Bidi";

/// The `n`th message `/test.Stream/Server` sends, `size` bytes long (at least 4).
///
/// ```
/// assert_eq!(lb_testkit::services::stream_message(2, 6), [0, 0, 0, 2, 2, 2]);
/// ```
pub fn stream_message(n: usize, size: usize) -> Vec<u8> {
    let mut m = (n as u32).to_be_bytes().to_vec();
    m.resize(size.max(4), (n % 251) as u8);
    m
}

/// Registers the services on `builder`; `/test.Echo/Echo` and `/test.Echo/Who`
/// answer with `server_id`. A handler registered on the returned builder for one
/// of these paths replaces the built-in one.
pub fn mount(builder: ServerBuilder, server_id: &str) -> ServerBuilder {
    let id = server_id.to_owned();
    let who = server_id.as_bytes().to_vec();
    let id_md = {
        let mut md = Metadata::new();
        // An id that is not a valid metadata value is not sent.
        let _ = md.insert("x-server-id", server_id);
        md
    };
    let (a, b, c) = (id_md.clone(), id_md.clone(), id_md);
    builder
        .server_streaming(STREAM_SERVER, move |req, call: &mut ServerCall| {
            stream_server(&req, call, a.clone())
        })
        .client_streaming(STREAM_CLIENT, move |call: &mut ServerCall| {
            call.send_headers(b.clone())?;
            let (mut count, mut bytes) = (0usize, 0usize);
            while let Some(m) = call.recv()? {
                count += 1;
                bytes += m.len();
            }
            Ok(format!("{count} {bytes}").into_bytes())
        })
        .bidi_streaming(STREAM_BIDI, move |call: &mut ServerCall| {
            call.send_headers(c.clone())?;
            while let Some(m) = call.recv()? {
                call.send(&m)?;
            }
            Ok(())
        })
        .unary(BENCH_UNARY, |req: Request| Ok(Response::new(req.message)))
        .unary(ECHO, move |req: Request| Ok(echo(req, &id)))
        .unary(STATUS, status)
        .unary(SLEEP, sleep)
        .unary(WHO, move |_: Request| Ok(Response::new(who.clone())))
}

/// `/test.Stream/Server`: COUNT messages of SIZE bytes, `x-` metadata back as
/// trailers, and the code in `x-status-code` after the messages.
fn stream_server(request: &[u8], call: &mut ServerCall, headers: Metadata) -> Result<(), Status> {
    let text = std::str::from_utf8(request).unwrap_or("");
    let fields: Vec<usize> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| Status::invalid_argument("body must be COUNT SIZE"))?;
    let [count, size, ..] = fields[..] else {
        return Err(Status::invalid_argument("body must be COUNT SIZE"));
    };
    call.send_headers(headers)?;
    let mut trailers = Metadata::new();
    for (key, value) in call.metadata().iter().filter(|(k, _)| k.starts_with("x-")) {
        let _ = trailers.insert_raw(key, value);
    }
    for n in 0..count {
        call.send(&stream_message(n, size))?;
    }
    let code = call
        .metadata()
        .get("x-status-code")
        .and_then(|c| c.trim().parse::<i32>().ok())
        .and_then(Code::from_i32);
    match code {
        Some(code) if code != Code::Ok => {
            Err(Status::new(code, "after messages").with_trailers(trailers))
        }
        _ => {
            call.set_trailers(trailers);
            Ok(())
        }
    }
}

/// The longest `/test.Echo/Sleep` waits.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// The request bytes back, with the `x-` metadata in the headers and the trailers.
fn echo(req: Request, server_id: &str) -> Response {
    let mut echoed = Metadata::new();
    for (key, value) in req.metadata.iter().filter(|(k, _)| k.starts_with("x-")) {
        // The keys and values were valid in the request, so they are valid here.
        let _ = echoed.insert_raw(key, value);
    }
    let mut headers = echoed.clone();
    // An id that is not a valid metadata value is not sent.
    let _ = headers.insert("x-server-id", server_id);
    Response {
        message: req.message,
        headers,
        trailers: echoed,
        compression: None,
    }
}

/// Fails with the status the request asks for.
fn status(req: Request) -> Result<Response, Status> {
    let raw = req.metadata.get("x-status-code");
    let code = raw
        .and_then(|c| c.trim().parse::<i32>().ok())
        .and_then(Code::from_i32)
        .ok_or_else(|| Status::invalid_argument(format!("bad x-status-code: {raw:?}")))?;
    let message = match (
        req.metadata.get_bin("x-status-message-bin"),
        req.metadata.get("x-status-message"),
    ) {
        (Some(bin), _) => String::from_utf8_lossy(bin).into_owned(),
        (None, Some(text)) => text.to_owned(),
        (None, None) => String::from_utf8_lossy(&req.message).into_owned(),
    };
    if code == Code::Ok {
        return Ok(Response::default());
    }
    Err(Status::new(code, message))
}

/// Waits the ASCII milliseconds in the body (cut short if the call is cancelled),
/// then echoes.
fn sleep(req: Request) -> Result<Response, Status> {
    let text = std::str::from_utf8(&req.message).unwrap_or("?").trim();
    let ms: u64 = if text.is_empty() {
        0
    } else {
        text.parse()
            .map_err(|_| Status::invalid_argument("body must be ASCII milliseconds"))?
    };
    let wait = Duration::from_millis(ms).min(MAX_SLEEP);
    if req.wait_cancelled(Instant::now() + wait) {
        return Err(Status::cancelled("call cancelled while sleeping"));
    }
    Ok(Response::new(req.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_returns_x_metadata_in_headers_and_trailers() {
        let mut req = Request::new("/test.Echo/Echo", b"hi".to_vec());
        req.metadata.insert("x-a", "1").unwrap();
        req.metadata.insert("other", "2").unwrap();
        req.metadata.insert_bin("x-b-bin", &[0, 255]).unwrap();
        let resp = echo(req, "srv");
        assert_eq!(resp.message, b"hi");
        assert_eq!(resp.trailers.len(), 2);
        assert_eq!(resp.trailers.get_bin("x-b-bin"), Some(&[0u8, 255][..]));
        assert_eq!(resp.headers.get("x-a"), Some("1"));
        assert_eq!(resp.headers.get("x-server-id"), Some("srv"));
        assert_eq!(resp.headers.get("other"), None);
    }

    #[test]
    fn status_takes_code_and_message_from_metadata() {
        let mut req = Request::new("/test.Echo/Status", b"body".to_vec());
        req.metadata.insert("x-status-code", "7").unwrap();
        req.metadata
            .insert_bin("x-status-message-bin", "permission é 100%".as_bytes())
            .unwrap();
        let err = status(req).unwrap_err();
        assert_eq!(
            err,
            Status::new(Code::PermissionDenied, "permission é 100%")
        );

        let mut req = Request::new("/test.Echo/Status", b"from body".to_vec());
        req.metadata.insert("x-status-code", "14").unwrap();
        assert_eq!(status(req).unwrap_err().message(), "from body");

        let mut req = Request::new("/test.Echo/Status", Vec::new());
        req.metadata.insert("x-status-code", "0").unwrap();
        assert_eq!(status(req), Ok(Response::default()));

        let req = Request::new("/test.Echo/Status", Vec::new());
        assert_eq!(status(req).unwrap_err().code(), Code::InvalidArgument);
    }

    #[test]
    fn sleep_zero_echoes_and_bad_bodies_are_refused() {
        let resp = sleep(Request::new("/test.Echo/Sleep", b"0".to_vec())).unwrap();
        assert_eq!(resp.message, b"0");
        let err = sleep(Request::new("/test.Echo/Sleep", b"soon".to_vec())).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }
}
