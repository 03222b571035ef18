//! One call on a stream, without I/O: the request headers a client sends, the state
//! that turns a response stream into headers, messages and a final status
//! ([`ClientStream`], with [`ClientCall`] as its unary form), and the server's side,
//! for every kind of call (request heads, response headers, trailers, messages).

use std::time::Duration;

use lb_core::transport::{CallError, CallOutcome, CallResponse};
use lb_core::{Code, Metadata, Status, is_binary_key};

use crate::grpc::compression::{ACCEPT_ENCODING, Encoding};
use crate::grpc::message::{self, MessageDecoder};
use crate::grpc::{base64, percent, timeout};
use crate::hpack::{Bytes, Header};
use crate::proto::{ConnectionError, ResetCause};

/// The `content-type` of gRPC with protobuf messages.
pub const CONTENT_TYPE: &str = "application/grpc";

/// Whether `content-type` is gRPC's: `application/grpc`, alone or with a message
/// format (`application/grpc+proto`) or parameters (`;`). gRPC-Web
/// (`application/grpc-web…`) is another protocol, which this side does not speak.
///
/// ```
/// use lb_transport::grpc::call::is_grpc_content_type;
/// assert!(is_grpc_content_type(b"application/grpc"));
/// assert!(is_grpc_content_type(b"application/grpc+proto"));
/// assert!(!is_grpc_content_type(b"application/grpc-web"));
/// assert!(!is_grpc_content_type(b"application/grpcx"));
/// ```
pub fn is_grpc_content_type(content_type: &[u8]) -> bool {
    content_type
        .strip_prefix(CONTENT_TYPE.as_bytes())
        .is_some_and(|rest| matches!(rest.first(), None | Some(b'+' | b';')))
}

/// Headers that carry gRPC's own fields and never appear in call metadata.
fn is_reserved(name: &[u8]) -> bool {
    name.starts_with(b":")
        || matches!(
            name,
            b"content-type"
                | b"te"
                | b"grpc-status"
                | b"grpc-message"
                | b"grpc-timeout"
                | b"grpc-encoding"
                | b"grpc-accept-encoding"
                | b"user-agent"
                | b"content-length"
        )
}

/// What a client puts in a request's header block.
#[derive(Clone, Debug)]
pub struct RequestHead<'a> {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The `:authority`: shared, since a connection sends the same one on most
    /// of its calls.
    pub authority: Bytes,
    /// The method path.
    pub path: &'a str,
    /// Time left until the deadline, sent as `grpc-timeout`.
    pub timeout: Option<Duration>,
    /// The `user-agent`: shared, as the authority is.
    pub user_agent: Bytes,
    /// Custom metadata.
    pub metadata: &'a Metadata,
    /// How the request messages are compressed, sent as `grpc-encoding` (nothing is
    /// sent for identity).
    pub encoding: Encoding,
}

/// The request header block in the order gRPC asks for: pseudo-headers, `te`,
/// `grpc-timeout`, `content-type`, `user-agent`, `grpc-encoding` (when compressed),
/// `grpc-accept-encoding` (every encoding this crate decodes), then custom metadata
/// (binary values base64-encoded).
///
/// ```
/// use lb_core::Metadata;
/// use lb_transport::grpc::call::{request_headers, RequestHead};
/// use lb_transport::grpc::compression::Encoding;
/// use lb_transport::hpack::Bytes;
/// let md = Metadata::new();
/// let h = request_headers(&RequestHead {
///     scheme: "http", authority: Bytes::from_static(b"svc:50051"), path: "/pkg.Svc/Do",
///     timeout: None, user_agent: Bytes::from_static(b"lb/0.1"), metadata: &md,
///     encoding: Encoding::Gzip,
/// });
/// assert_eq!(h[0].name, ":method");
/// assert!(h.iter().any(|h| h.name == "grpc-encoding" && h.value == "gzip"));
/// assert!(h.iter().any(|h| h.name == "te" && h.value == "trailers"));
/// ```
pub fn request_headers(head: &RequestHead<'_>) -> Vec<Header> {
    let mut headers = vec![
        Header::new(":method", "POST"),
        Header::new(":scheme", head.scheme),
        Header::new(":path", Bytes::copy_from_slice(head.path.as_bytes())),
        Header::new(":authority", head.authority.clone()),
        Header::new("te", "trailers"),
    ];
    if let Some(t) = head.timeout {
        headers.push(Header::new("grpc-timeout", timeout::encode(t)));
    }
    headers.push(Header::new("content-type", CONTENT_TYPE));
    headers.push(Header::new("user-agent", head.user_agent.clone()));
    if head.encoding.is_compressed() {
        headers.push(Header::new("grpc-encoding", head.encoding.name()));
    }
    headers.push(Header::new("grpc-accept-encoding", ACCEPT_ENCODING));
    push_metadata(head.metadata, &mut headers);
    headers
}

/// Appends `metadata` as headers, base64-encoding binary values.
pub fn push_metadata(metadata: &Metadata, headers: &mut Vec<Header>) {
    for (key, value) in metadata.iter() {
        if is_reserved(key.as_bytes()) {
            continue;
        }
        let name = Bytes::copy_from_slice(key.as_bytes());
        if is_binary_key(key) {
            headers.push(Header::new(name, base64::encode(value)));
        } else {
            headers.push(Header::new(name, Bytes::copy_from_slice(value)));
        }
    }
}

/// The custom metadata in a received header list. Binary values that are not valid
/// base64, and entries that are not valid metadata, are dropped (with a log line),
/// never a reason to fail the call.
pub fn metadata_from_headers(headers: &[Header]) -> Metadata {
    let mut md = Metadata::new();
    for h in headers {
        if is_reserved(&h.name) {
            continue;
        }
        let Ok(key) = std::str::from_utf8(&h.name) else {
            continue;
        };
        let result = if is_binary_key(key) {
            match base64::decode_joined(&h.value) {
                Ok(values) => values.iter().try_for_each(|v| md.insert_bin(key, v)),
                Err(e) => {
                    log::debug!("dropping metadata {key}: {e}");
                    continue;
                }
            }
        } else {
            md.insert_raw(key, &h.value)
        };
        if let Err(e) = result {
            log::debug!("dropping metadata {key}: {e}");
        }
    }
    md
}

fn find<'a>(headers: &'a [Header], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|h| h.name == name.as_bytes())
        .map(|h| &h.value[..])
}

/// The status a header block carries: `grpc-status` and `grpc-message`, or a status
/// synthesized from the HTTP status when `grpc-status` is missing.
fn status_from(headers: &[Header], http_status: Option<u16>) -> Status {
    let message = find(headers, "grpc-message")
        .map(percent::decode)
        .unwrap_or_default();
    match find(headers, "grpc-status") {
        Some(code) => match Code::from_wire(code) {
            Some(code) => Status::new(code, message),
            None => Status::unknown(format!(
                "invalid grpc-status {:?}: {message}",
                String::from_utf8_lossy(code)
            )),
        },
        None => {
            let http = http_status.unwrap_or(200);
            Status::new(
                Code::from_http_status(http),
                format!("HTTP status {http} without grpc-status"),
            )
        }
    }
}

fn http_status(headers: &[Header]) -> Option<u16> {
    find(headers, ":status")
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse().ok())
}

/// What a response stream's events mean for its call, in order: at most one
/// `Headers`, any number of `Message`s, then one `End`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseEvent {
    /// The response headers arrived; their custom metadata.
    Headers(Metadata),
    /// One complete response message (without its prefix).
    Message(Vec<u8>),
    /// The call ended with this status, which carries the trailers' metadata.
    /// Nothing follows.
    End(Status),
}

/// The client's view of one call's response stream, of any kind (unary or
/// streaming), fed with the stream's events: headers, messages as they complete,
/// then the status from the trailers.
///
/// ```
/// use lb_transport::grpc::call::{ClientStream, ResponseEvent};
/// use lb_transport::grpc::message;
/// use lb_transport::hpack::Header;
/// let mut call = ClientStream::new(1024);
/// let mut out = Vec::new();
/// call.on_headers(vec![Header::new(":status", "200"), Header::new("content-type", "application/grpc")], false, &mut out);
/// let mut body = Vec::new();
/// message::encode(b"one", &mut body);
/// message::encode(b"two", &mut body);
/// call.on_data(&body, false, &mut out);
/// call.on_headers(vec![Header::new("grpc-status", "0")], true, &mut out);
/// assert!(matches!(&out[..], [
///     ResponseEvent::Headers(_),
///     ResponseEvent::Message(a),
///     ResponseEvent::Message(b),
///     ResponseEvent::End(s),
/// ] if a == b"one" && b == b"two" && s.is_ok()));
/// ```
#[derive(Debug)]
pub struct ClientStream {
    headers_seen: bool,
    decoder: MessageDecoder,
    /// A failure found in the response (a non-gRPC answer); reported when the
    /// stream ends, and the body is ignored until then.
    error: Option<Status>,
    ended: bool,
    /// What the request's messages were compressed with, to explain a refusal.
    request_encoding: Encoding,
    /// The server's `grpc-accept-encoding`, from its response headers.
    peer_accepts: Option<Vec<u8>>,
    /// A response message arrived: the server decoded the request.
    answered: bool,
}

impl ClientStream {
    /// A call that accepts response messages up to `max_message_len` bytes.
    pub fn new(max_message_len: usize) -> Self {
        Self {
            headers_seen: false,
            decoder: MessageDecoder::new(max_message_len),
            error: None,
            ended: false,
            request_encoding: Encoding::Identity,
            peer_accepts: None,
            answered: false,
        }
    }

    /// The request's messages are compressed with `encoding`: if the server
    /// refuses the call without an answer and does not list `encoding` in its
    /// `grpc-accept-encoding` (or says nothing of it but complains of the
    /// encoding), the call ends UNIMPLEMENTED naming the encoding and what the
    /// server accepts, with the server's own status after it. (gRPC's C core, for
    /// one, answers an encoding it lacks with INTERNAL "Error parsing
    /// 'grpc-encoding' metadata".)
    ///
    /// ```
    /// use lb_core::Code;
    /// use lb_transport::grpc::call::{ClientStream, ResponseEvent};
    /// use lb_transport::grpc::compression::Encoding;
    /// use lb_transport::hpack::Header;
    /// let mut call = ClientStream::new(1024);
    /// call.set_request_encoding(Encoding::Gzip);
    /// let mut out = Vec::new();
    /// call.on_headers(vec![
    ///     Header::new(":status", "200"),
    ///     Header::new("content-type", "application/grpc"),
    ///     Header::new("grpc-status", "13"),
    ///     Header::new("grpc-message", "Error parsing 'grpc-encoding' metadata"),
    ///     Header::new("grpc-accept-encoding", "identity,deflate"),
    /// ], true, &mut out);
    /// let [ResponseEvent::End(status)] = &out[..] else { panic!() };
    /// assert_eq!(status.code(), Code::Unimplemented);
    /// assert!(status.message().starts_with("the server does not accept requests compressed with gzip"));
    /// ```
    pub fn set_request_encoding(&mut self, encoding: Encoding) {
        self.request_encoding = encoding;
    }

    /// Whether [`ResponseEvent::End`] has been produced.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// A header block arrived: the response headers, trailers, or a Trailers-Only
    /// response (the first block, ending the stream). Appends what it means to
    /// `out`.
    pub fn on_headers(
        &mut self,
        headers: Vec<Header>,
        end_stream: bool,
        out: &mut Vec<ResponseEvent>,
    ) {
        if self.ended {
            return;
        }
        if self.headers_seen {
            if end_stream {
                self.end(&headers, Some(200), out);
            }
            return;
        }
        self.headers_seen = true;
        let http = http_status(&headers);
        if end_stream {
            // Trailers-Only: everything is in this one block.
            self.end(&headers, http, out);
            return;
        }
        self.peer_accepts = find(&headers, "grpc-accept-encoding").map(<[u8]>::to_vec);
        let grpc_type = find(&headers, "content-type").is_some_and(is_grpc_content_type);
        if http != Some(200) || !grpc_type {
            let code = Code::from_http_status(http.unwrap_or(0));
            self.error = Some(Status::new(
                code,
                format!(
                    "unexpected response: HTTP status {:?}, content-type {:?}",
                    http,
                    find(&headers, "content-type").map(String::from_utf8_lossy)
                ),
            ));
            return;
        }
        // Flag-1 messages need a supported `grpc-encoding`; anything else makes
        // them INTERNAL when they arrive (doc/compression.md).
        self.decoder
            .set_encoding(find(&headers, "grpc-encoding").and_then(Encoding::from_name));
        out.push(ResponseEvent::Headers(metadata_from_headers(&headers)));
    }

    /// Data arrived. Appends each message it completes, and the end of the call when
    /// the stream ended or the data broke the rules (an announced message above the
    /// limit, before or after decompression; a compressed one without a supported
    /// `grpc-encoding`; data that does not decompress): then the caller resets the
    /// stream if the peer has not ended it.
    pub fn on_data(&mut self, data: &[u8], end_stream: bool, out: &mut Vec<ResponseEvent>) {
        if self.ended {
            return;
        }
        if self.error.is_none() {
            let mut pushed = self.decoder.push(data);
            while pushed.is_ok() {
                match self.decoder.next_message() {
                    Ok(Some(m)) => {
                        self.answered = true;
                        out.push(ResponseEvent::Message(m));
                    }
                    Ok(None) => break,
                    Err(e) => pushed = Err(e),
                }
                // Checks the prefix of the next message, if it is here already.
                pushed = pushed.and_then(|()| self.decoder.push(&[]));
            }
            if let Err(status) = pushed {
                // Bounded memory: stop buffering; the caller resets the stream.
                self.ended = true;
                out.push(ResponseEvent::End(status));
                return;
            }
        }
        if end_stream {
            self.end(&[], None, out);
        }
    }

    /// The stream was reset or the connection ended: how the call ends, and
    /// whether the server can have seen it.
    pub fn on_reset(&mut self, cause: &ResetCause) -> CallOutcome {
        self.ended = true;
        match cause {
            ResetCause::Refused => CallOutcome::refused(Status::unavailable(
                "stream refused by the server before processing",
            )),
            ResetCause::Peer(reason) => {
                CallOutcome::processed(crate::grpc::status::status_for_reset(*reason))
            }
            ResetCause::Protocol(reason, detail) => CallOutcome::processed(Status::internal(
                format!("protocol error {reason}: {detail}"),
            )),
            ResetCause::Connection(err) => CallOutcome::processed(connection_error_status(err)),
        }
    }

    /// A failure of a compressed request that the server never answered, made
    /// UNIMPLEMENTED and explained when the server lacks the encoding (see
    /// [`set_request_encoding`](Self::set_request_encoding)).
    fn explain_encoding_refusal(&self, status: Status, accepts: Option<&[u8]>) -> Status {
        let encoding = self.request_encoding;
        if status.is_ok() || self.answered || !encoding.is_compressed() {
            return status;
        }
        let refused = match accepts {
            Some(list) => !encoding.accepted_by(list),
            None => {
                status.code() == Code::Unimplemented
                    || (status.code() == Code::Internal
                        && status.message().to_ascii_lowercase().contains("encoding"))
            }
        };
        if !refused {
            return status;
        }
        let accepts = accepts.map_or_else(
            || "it did not say which it accepts".to_owned(),
            |list| format!("it accepts {:?}", String::from_utf8_lossy(list)),
        );
        Status::unimplemented(format!(
            "the server does not accept requests compressed with {} ({accepts}): send \
             this call uncompressed or with an encoding it lists (the server said {}: {})",
            encoding.name(),
            status.code(),
            status.message()
        ))
    }

    /// Bytes of a message being assembled (prefixes included).
    pub fn partial_bytes(&self) -> usize {
        self.decoder.buffered()
    }

    fn end(&mut self, trailers: &[Header], http: Option<u16>, out: &mut Vec<ResponseEvent>) {
        self.ended = true;
        let status = if let Some(err) = self.error.take() {
            err
        } else {
            let status = status_from(trailers, http);
            let status = match self.decoder.finish() {
                Err(e) if status.is_ok() => e,
                _ => status,
            };
            let accepts = find(trailers, "grpc-accept-encoding").or(self.peer_accepts.as_deref());
            self.explain_encoding_refusal(status, accepts)
        };
        out.push(ResponseEvent::End(
            status.with_trailers(metadata_from_headers(trailers)),
        ));
    }
}

/// The client's view of one unary call, fed with the stream's events: a
/// [`ClientStream`] that expects exactly one response message (a missing or second
/// one is UNIMPLEMENTED, as in gRPC's unary calls). For clients built directly on
/// [`proto::Connection`](crate::proto::Connection).
///
/// ```
/// use lb_transport::grpc::call::ClientCall;
/// use lb_transport::grpc::message;
/// use lb_transport::hpack::Header;
/// let mut call = ClientCall::new(1024);
/// assert!(call.on_headers(vec![Header::new(":status", "200"), Header::new("content-type", "application/grpc")], false).is_none());
/// let mut body = Vec::new();
/// message::encode(b"hi", &mut body);
/// assert!(call.on_data(&body, false).is_none());
/// let done = call.on_headers(vec![Header::new("grpc-status", "0")], true).unwrap();
/// assert_eq!(done.unwrap().message, b"hi");
/// ```
#[derive(Debug)]
pub struct ClientCall {
    stream: ClientStream,
    headers: Metadata,
    message: Option<Vec<u8>>,
    extra_messages: usize,
    events: Vec<ResponseEvent>,
}

impl ClientCall {
    /// A call that accepts response messages up to `max_message_len` bytes.
    pub fn new(max_message_len: usize) -> Self {
        Self {
            stream: ClientStream::new(max_message_len),
            headers: Metadata::new(),
            message: None,
            extra_messages: 0,
            events: Vec::new(),
        }
    }

    /// A header block arrived. Returns the result when the stream ended.
    pub fn on_headers(
        &mut self,
        headers: Vec<Header>,
        end_stream: bool,
    ) -> Option<Result<CallResponse, CallError>> {
        let mut events = std::mem::take(&mut self.events);
        self.stream.on_headers(headers, end_stream, &mut events);
        let result = self.absorb(&mut events);
        self.events = events;
        result
    }

    /// Data arrived. Returns the result when the stream ended (or failed).
    pub fn on_data(
        &mut self,
        data: &[u8],
        end_stream: bool,
    ) -> Option<Result<CallResponse, CallError>> {
        let mut events = std::mem::take(&mut self.events);
        self.stream.on_data(data, end_stream, &mut events);
        let result = self.absorb(&mut events);
        self.events = events;
        result
    }

    /// The stream was reset or the connection ended: the final result.
    pub fn on_reset(&mut self, cause: &ResetCause) -> CallError {
        let outcome = self.stream.on_reset(cause);
        CallError {
            status: outcome.status,
            unprocessed: outcome.progress.is_unprocessed(),
        }
    }

    fn absorb(
        &mut self,
        events: &mut Vec<ResponseEvent>,
    ) -> Option<Result<CallResponse, CallError>> {
        let mut result = None;
        for event in events.drain(..) {
            match event {
                ResponseEvent::Headers(md) => self.headers = md,
                ResponseEvent::Message(m) if self.message.is_none() => self.message = Some(m),
                ResponseEvent::Message(_) => self.extra_messages += 1,
                ResponseEvent::End(status) => result = Some(self.finish(status)),
            }
        }
        result
    }

    fn finish(&mut self, mut status: Status) -> Result<CallResponse, CallError> {
        if !status.is_ok() {
            return Err(status.into());
        }
        let trailers = status.take_trailers();
        if self.extra_messages > 0 {
            return Err(Status::unimplemented(format!(
                "unary call got {} response messages",
                self.extra_messages + 1
            ))
            .with_trailers(trailers)
            .into());
        }
        let Some(message) = self.message.take() else {
            return Err(Status::unimplemented("unary call got no response message")
                .with_trailers(trailers)
                .into());
        };
        Ok(CallResponse {
            headers: std::mem::take(&mut self.headers),
            message,
            trailers,
        })
    }
}

/// The status calls end with when their connection fails.
pub fn connection_error_status(err: &ConnectionError) -> Status {
    Status::unavailable(format!("connection failed: {err}"))
}

/// What the server learned from a request's header block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerRequestHead {
    /// The method path.
    pub path: String,
    /// The custom metadata.
    pub metadata: Metadata,
    /// The client's `grpc-timeout`.
    pub timeout: Option<Duration>,
    /// The request's `grpc-encoding` (identity when absent).
    pub encoding: Encoding,
    /// The client's `grpc-accept-encoding` (empty when absent): the encodings
    /// responses may use besides identity.
    pub accept_encoding: Vec<u8>,
}

impl ServerRequestHead {
    /// The encoding to answer with when the server would like `preferred`: it, if
    /// the client's `grpc-accept-encoding` lists it, else identity.
    ///
    /// ```
    /// use lb_transport::grpc::call::{parse_request_head, request_headers, RequestHead};
    /// use lb_transport::grpc::compression::Encoding;
    /// let md = lb_core::Metadata::new();
    /// let headers = request_headers(&RequestHead {
    ///     scheme: "http", authority: "a".into(), path: "/p.S/M", timeout: None,
    ///     user_agent: "ua".into(), metadata: &md, encoding: Encoding::Identity,
    /// });
    /// let head = parse_request_head(&headers).unwrap();
    /// assert_eq!(head.response_encoding(Some(Encoding::Gzip)), Encoding::Gzip);
    /// ```
    pub fn response_encoding(&self, preferred: Option<Encoding>) -> Encoding {
        match preferred {
            Some(e) if e.accepted_by(&self.accept_encoding) => e,
            _ => Encoding::Identity,
        }
    }
}

/// Why a request is refused before its handler runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not gRPC at all: answer with this plain HTTP status.
    Http(u16),
    /// A gRPC request that cannot be served: answer Trailers-Only with this status.
    Grpc(Status),
}

/// Checks a gRPC request's header block.
///
/// # Errors
///
/// A non-POST or non-gRPC request gives [`Refusal::Http`] (405 or 415); a bad
/// `grpc-timeout` gives INTERNAL; a `grpc-encoding` this crate cannot decode gives
/// UNIMPLEMENTED (every answer lists what it can in `grpc-accept-encoding`).
pub fn parse_request_head(headers: &[Header]) -> Result<ServerRequestHead, Refusal> {
    if find(headers, ":method") != Some(b"POST") {
        return Err(Refusal::Http(405));
    }
    if !find(headers, "content-type").is_some_and(is_grpc_content_type) {
        return Err(Refusal::Http(415));
    }
    let encoding = match find(headers, "grpc-encoding") {
        None => Encoding::Identity,
        Some(name) => Encoding::from_name(name).ok_or_else(|| {
            Refusal::Grpc(Status::unimplemented(format!(
                "grpc-encoding {:?} is not supported (supported: {ACCEPT_ENCODING})",
                String::from_utf8_lossy(name)
            )))
        })?,
    };
    let timeout = match find(headers, "grpc-timeout") {
        None => None,
        Some(t) => Some(timeout::decode(t).map_err(|e| Refusal::Grpc(Status::internal(e)))?),
    };
    let path = find(headers, ":path")
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    Ok(ServerRequestHead {
        path: path.into_owned(),
        metadata: metadata_from_headers(headers),
        timeout,
        encoding,
        accept_encoding: find(headers, "grpc-accept-encoding")
            .unwrap_or_default()
            .to_vec(),
    })
}

/// A server's response headers with `metadata`: `grpc-encoding` when the messages
/// are compressed, and `grpc-accept-encoding`.
pub fn response_headers(metadata: &Metadata, encoding: Encoding) -> Vec<Header> {
    let mut headers = vec![
        Header::new(":status", "200"),
        Header::new("content-type", CONTENT_TYPE),
    ];
    if encoding.is_compressed() {
        headers.push(Header::new("grpc-encoding", encoding.name()));
    }
    headers.push(Header::new("grpc-accept-encoding", ACCEPT_ENCODING));
    push_metadata(metadata, &mut headers);
    headers
}

/// A server's trailers: `grpc-status`, `grpc-message` (percent-encoded, only when
/// not empty), `metadata`, and the status's own trailers ([`Status::trailers`]:
/// a handler may fail with a status that carries them).
pub fn trailers(status: &Status, metadata: &Metadata) -> Vec<Header> {
    let mut headers = vec![Header::new(
        "grpc-status",
        status.code().as_i32().to_string(),
    )];
    if !status.message().is_empty() {
        headers.push(Header::new(
            "grpc-message",
            percent::encode(status.message()),
        ));
    }
    push_metadata(metadata, &mut headers);
    push_metadata(status.trailers(), &mut headers);
    headers
}

/// A Trailers-Only response: HTTP 200, the gRPC content type,
/// `grpc-accept-encoding` (an UNIMPLEMENTED answer to an unsupported encoding must
/// list the supported ones) and the trailers in one block.
pub fn trailers_only(status: &Status, metadata: &Metadata) -> Vec<Header> {
    let mut headers = vec![
        Header::new(":status", "200"),
        Header::new("content-type", CONTENT_TYPE),
        Header::new("grpc-accept-encoding", ACCEPT_ENCODING),
    ];
    headers.extend(trailers(status, metadata));
    headers
}

/// Appends one response message with its prefix, compressed with `encoding`.
pub fn encode_message(encoding: Encoding, body: &[u8], dst: &mut Vec<u8>) {
    message::encode_with(encoding, body, dst);
}

#[cfg(test)]
mod tests {
    use lb_core::transport::Progress;

    use super::*;

    fn ok_headers() -> Vec<Header> {
        vec![
            Header::new(":status", "200"),
            Header::new("content-type", "application/grpc+proto"),
            Header::new("x-a", "1"),
        ]
    }

    fn body(msg: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        message::encode(msg, &mut b);
        b
    }

    #[test]
    fn request_headers_follow_the_spec_order_and_encode_binary_metadata() {
        let mut md = Metadata::new();
        md.insert("x-user", "ann").unwrap();
        md.insert_bin("x-trace-bin", &[0, 1, 0xff]).unwrap();
        let h = request_headers(&RequestHead {
            scheme: "http",
            authority: "a:1".into(),
            path: "/s/m",
            timeout: Some(Duration::from_millis(250)),
            user_agent: "ua".into(),
            metadata: &md,
            encoding: Encoding::Identity,
        });
        let names: Vec<&[u8]> = h.iter().map(|h| h.name.as_ref()).collect();
        assert_eq!(
            names,
            [
                &b":method"[..],
                b":scheme",
                b":path",
                b":authority",
                b"te",
                b"grpc-timeout",
                b"content-type",
                b"user-agent",
                b"grpc-accept-encoding",
                b"x-user",
                b"x-trace-bin"
            ]
        );
        assert_eq!(h[5].value, &b"250000u"[..]);
        assert_eq!(h[8].value, ACCEPT_ENCODING.as_bytes());
        assert_eq!(h[10].value, &b"AAH/"[..]);
        assert_eq!(metadata_from_headers(&h), md, "metadata round-trips");
    }

    #[test]
    fn a_full_response_yields_message_headers_and_trailers() {
        let mut call = ClientCall::new(100);
        assert!(call.on_headers(ok_headers(), false).is_none());
        assert!(call.on_data(&body(b"pong"), false).is_none());
        let mut t = vec![Header::new("grpc-status", "0"), Header::new("x-t", "2")];
        t.push(Header::new("x-b-bin", "AQI="));
        let r = call.on_headers(t, true).unwrap().unwrap();
        assert_eq!(r.message, b"pong");
        assert_eq!(r.headers.get("x-a"), Some("1"));
        assert_eq!(r.trailers.get("x-t"), Some("2"));
        assert_eq!(r.trailers.get_bin("x-b-bin"), Some(&[1u8, 2][..]));
    }

    #[test]
    fn trailers_only_errors_keep_code_and_decoded_message() {
        let mut call = ClientCall::new(100);
        let mut h = ok_headers();
        h.push(Header::new("grpc-status", "7"));
        h.push(Header::new("grpc-message", "permission %C3%A9 100%25"));
        let err = call.on_headers(h, true).unwrap().unwrap_err();
        assert!(!err.unprocessed);
        assert_eq!(err.status.code(), Code::PermissionDenied);
        assert_eq!(err.status.message(), "permission é 100%");
    }

    #[test]
    fn non_grpc_responses_map_http_status() {
        for (status, code) in [
            ("503", Code::Unavailable),
            ("404", Code::Unimplemented),
            ("200", Code::Unknown),
        ] {
            let mut call = ClientCall::new(100);
            let h = vec![
                Header::new(":status", status),
                Header::new("content-type", "text/html"),
            ];
            assert!(call.on_headers(h, false).is_none());
            let err = call.on_data(b"<html>", true).unwrap().unwrap_err();
            assert_eq!(err.status.code(), code, "{status}");
        }
        // A missing grpc-status on a gRPC response is UNKNOWN.
        let mut call = ClientCall::new(100);
        call.on_headers(ok_headers(), false);
        call.on_data(&body(b"x"), false);
        let err = call
            .on_headers(vec![Header::new("x", "y")], true)
            .unwrap()
            .unwrap_err();
        assert_eq!(err.status.code(), Code::Unknown);
    }

    #[test]
    fn cardinality_and_size_violations() {
        let mut call = ClientCall::new(100);
        call.on_headers(ok_headers(), false);
        let err = call
            .on_headers(vec![Header::new("grpc-status", "0")], true)
            .unwrap()
            .unwrap_err();
        assert_eq!(err.status.code(), Code::Unimplemented, "no message");

        let mut call = ClientCall::new(100);
        call.on_headers(ok_headers(), false);
        let mut two = body(b"a");
        two.extend(body(b"b"));
        call.on_data(&two, false);
        let err = call
            .on_headers(vec![Header::new("grpc-status", "0")], true)
            .unwrap()
            .unwrap_err();
        assert_eq!(err.status.code(), Code::Unimplemented, "two messages");

        let mut call = ClientCall::new(3);
        call.on_headers(ok_headers(), false);
        let err = call.on_data(&body(b"toolong"), false).unwrap().unwrap_err();
        assert_eq!(err.status.code(), Code::ResourceExhausted);
    }

    #[test]
    fn resets_map_to_statuses_and_refusals_are_unprocessed() {
        let mut call = ClientCall::new(10);
        let e = call.on_reset(&ResetCause::Refused);
        assert!(e.unprocessed);
        assert_eq!(e.status.code(), Code::Unavailable);
        let e = call.on_reset(&ResetCause::Peer(crate::frame::Reason::CANCEL));
        assert_eq!(e.status.code(), Code::Cancelled);
        let e = call.on_reset(&ResetCause::Connection(ConnectionError::Eof));
        assert_eq!((e.status.code(), e.unprocessed), (Code::Unavailable, false));
    }

    fn stream_events(call: &mut ClientStream, wire: &[u8], chunk: usize) -> Vec<ResponseEvent> {
        let mut out = Vec::new();
        for part in wire.chunks(chunk.max(1)) {
            call.on_data(part, false, &mut out);
        }
        out
    }

    #[test]
    fn a_stream_of_messages_is_delivered_in_order_however_the_data_is_split() {
        let messages: Vec<Vec<u8>> = (0..50u8)
            .map(|i| vec![i; usize::from(i) * 13 % 200])
            .collect();
        let mut wire = Vec::new();
        for m in &messages {
            message::encode(m, &mut wire);
        }
        for chunk in [1, 2, 5, 7, 64, 1000, wire.len()] {
            let mut call = ClientStream::new(1000);
            let mut out = Vec::new();
            call.on_headers(ok_headers(), false, &mut out);
            let Some(ResponseEvent::Headers(md)) = out.pop() else {
                panic!("headers first");
            };
            assert_eq!(md.get("x-a"), Some("1"));
            let got = stream_events(&mut call, &wire, chunk);
            let got: Vec<Vec<u8>> = got
                .into_iter()
                .map(|e| match e {
                    ResponseEvent::Message(m) => m,
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(got, messages, "chunk {chunk}");
            assert_eq!(call.partial_bytes(), 0);
            call.on_headers(vec![Header::new("grpc-status", "0")], true, &mut out);
            assert!(matches!(&out[..], [ResponseEvent::End(s)] if s.is_ok()));
            assert!(call.is_ended());
        }
    }

    #[test]
    fn partial_messages_are_held_until_complete() {
        let mut wire = Vec::new();
        message::encode(b"hello", &mut wire);
        let mut call = ClientStream::new(100);
        let mut out = Vec::new();
        call.on_headers(ok_headers(), false, &mut out);
        out.clear();
        call.on_data(&wire[..7], false, &mut out);
        assert!(out.is_empty());
        assert_eq!(call.partial_bytes(), 7);
        call.on_data(&wire[7..], false, &mut out);
        assert_eq!(out, [ResponseEvent::Message(b"hello".to_vec())]);
        assert_eq!(call.partial_bytes(), 0);
    }

    #[test]
    fn an_error_after_messages_keeps_the_messages_and_carries_the_trailers() {
        let mut call = ClientStream::new(100);
        let mut out = Vec::new();
        call.on_headers(ok_headers(), false, &mut out);
        let mut wire = body(b"a");
        wire.extend(body(b"b"));
        call.on_data(&wire, false, &mut out);
        let trailers = vec![
            Header::new("grpc-status", "9"),
            Header::new("grpc-message", "no%20more"),
            Header::new("x-t", "2"),
            Header::new("x-b-bin", "AQI="),
        ];
        call.on_headers(trailers, true, &mut out);
        assert_eq!(out.len(), 4, "{out:?}");
        assert_eq!(out[1], ResponseEvent::Message(b"a".to_vec()));
        assert_eq!(out[2], ResponseEvent::Message(b"b".to_vec()));
        let ResponseEvent::End(status) = &out[3] else {
            panic!("{out:?}");
        };
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "no more");
        assert_eq!(status.trailers().get("x-t"), Some("2"));
        assert_eq!(status.trailers().get_bin("x-b-bin"), Some(&[1u8, 2][..]));
        assert_eq!(status.trailers().len(), 2, "grpc-* fields are not metadata");
        // Nothing after the end.
        out.clear();
        call.on_data(&body(b"late"), true, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn trailers_only_carries_its_metadata_and_no_headers_event() {
        let mut call = ClientStream::new(100);
        let mut out = Vec::new();
        let mut h = ok_headers();
        h.push(Header::new("grpc-status", "5"));
        call.on_headers(h, true, &mut out);
        let [ResponseEvent::End(status)] = &out[..] else {
            panic!("{out:?}");
        };
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.trailers().get("x-a"), Some("1"));
    }

    #[test]
    fn an_oversized_message_ends_the_stream_at_its_prefix() {
        let mut call = ClientStream::new(3);
        let mut out = Vec::new();
        call.on_headers(ok_headers(), false, &mut out);
        let mut wire = body(b"ok");
        wire.extend(body(b"toolong"));
        call.on_data(&wire[..12], false, &mut out);
        assert!(call.is_ended());
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(matches!(&out[2], ResponseEvent::End(s) if s.code() == Code::ResourceExhausted));
        out.clear();
        call.on_data(&wire[12..], true, &mut out);
        assert!(out.is_empty(), "nothing after the end");
    }

    #[test]
    fn data_ending_the_stream_without_trailers_or_mid_message_is_an_error() {
        let mut call = ClientStream::new(100);
        let mut out = Vec::new();
        call.on_headers(ok_headers(), false, &mut out);
        call.on_data(&body(b"x"), true, &mut out);
        assert!(matches!(out.last(), Some(ResponseEvent::End(s)) if s.code() == Code::Unknown));

        let mut call = ClientStream::new(100);
        let mut out = Vec::new();
        call.on_headers(ok_headers(), false, &mut out);
        call.on_data(&body(b"xyz")[..6], false, &mut out);
        call.on_headers(vec![Header::new("grpc-status", "0")], true, &mut out);
        assert!(matches!(out.last(), Some(ResponseEvent::End(s)) if s.code() == Code::Internal));
    }

    #[test]
    fn resets_map_to_outcomes() {
        let mut call = ClientStream::new(10);
        let o = call.on_reset(&ResetCause::Refused);
        assert_eq!(
            (o.status.code(), o.progress),
            (Code::Unavailable, Progress::Refused)
        );
        let o = ClientStream::new(10).on_reset(&ResetCause::Peer(crate::frame::Reason::CANCEL));
        assert_eq!(
            (o.status.code(), o.progress),
            (Code::Cancelled, Progress::Processed)
        );
        let o = ClientStream::new(10).on_reset(&ResetCause::Connection(ConnectionError::Eof));
        assert_eq!(
            (o.status.code(), o.progress),
            (Code::Unavailable, Progress::Processed)
        );
    }

    #[test]
    fn invalid_binary_metadata_is_dropped_not_fatal() {
        let h = vec![
            Header::new("x-bad-bin", "!!"),
            Header::new("x-ok", "1"),
            Header::new("X-Up", "2"),
        ];
        let md = metadata_from_headers(&h);
        assert_eq!(md.len(), 1);
        assert_eq!(md.get("x-ok"), Some("1"));
    }

    #[test]
    fn server_request_parsing_and_responses() {
        let mut h = request_headers(&RequestHead {
            scheme: "http",
            authority: "a".into(),
            path: "/s/m",
            timeout: Some(Duration::from_secs(2)),
            user_agent: "ua".into(),
            metadata: &Metadata::new(),
            encoding: Encoding::Gzip,
        });
        let head = parse_request_head(&h).unwrap();
        assert_eq!(head.path, "/s/m");
        assert_eq!(head.encoding, Encoding::Gzip);
        assert_eq!(head.accept_encoding, ACCEPT_ENCODING.as_bytes());
        assert_eq!(head.timeout, Some(Duration::from_secs(2)));
        // gRPC-Web and look-alikes are not gRPC: 415, like any other type.
        for (content_type, served) in [
            ("application/grpc+proto", true),
            ("application/grpc; charset=utf-8", true),
            ("application/grpc-web", false),
            ("application/grpc-web-text+proto", false),
            ("application/grpcx", false),
        ] {
            let mut h = h.clone();
            for header in &mut h {
                if header.name == b"content-type"[..] {
                    *header = Header::new("content-type", content_type);
                }
            }
            let result = parse_request_head(&h);
            assert_eq!(result.is_ok(), served, "{content_type}: {result:?}");
            if !served {
                assert_eq!(result, Err(Refusal::Http(415)), "{content_type}");
            }
        }
        h[0] = Header::new(":method", "GET");
        assert_eq!(parse_request_head(&h), Err(Refusal::Http(405)));

        let status = Status::new(Code::NotFound, "no 100%");
        let t = trailers_only(&status, &Metadata::new());
        let mut call = ClientCall::new(10);
        let err = call.on_headers(t, true).unwrap().unwrap_err();
        assert_eq!(err.status, status);
        assert_eq!(
            trailers(&Status::new(Code::Ok, ""), &Metadata::new()).len(),
            1
        );
    }

    #[test]
    fn unsupported_request_encoding_is_unimplemented_listing_ours() {
        let mut h = request_headers(&RequestHead {
            scheme: "http",
            authority: "a".into(),
            path: "/s/m",
            timeout: None,
            user_agent: "ua".into(),
            metadata: &Metadata::new(),
            encoding: Encoding::Identity,
        });
        h.push(Header::new("grpc-encoding", "snappy"));
        let Err(Refusal::Grpc(status)) = parse_request_head(&h) else {
            panic!("accepted");
        };
        assert_eq!(status.code(), Code::Unimplemented);
        let answer = trailers_only(&status, &Metadata::new());
        assert_eq!(
            find(&answer, "grpc-accept-encoding"),
            Some(ACCEPT_ENCODING.as_bytes())
        );
        // A client that accepts only identity gets identity, whatever we prefer.
        let head = ServerRequestHead {
            accept_encoding: b"identity".to_vec(),
            ..parse_request_head(&h[..h.len() - 1]).unwrap()
        };
        assert_eq!(
            head.response_encoding(Some(Encoding::Gzip)),
            Encoding::Identity
        );
    }

    fn gzip_headers() -> Vec<Header> {
        let mut h = ok_headers();
        h.push(Header::new("grpc-encoding", "gzip"));
        h
    }

    #[test]
    fn compressed_responses_are_decoded_with_the_response_encoding() {
        let mut wire = Vec::new();
        message::encode_with(Encoding::Gzip, &[3u8; 500], &mut wire);
        message::encode(b"plain", &mut wire);
        let mut call = ClientStream::new(1000);
        let mut out = Vec::new();
        call.on_headers(gzip_headers(), false, &mut out);
        call.on_data(&wire, false, &mut out);
        call.on_headers(vec![Header::new("grpc-status", "0")], true, &mut out);
        assert!(
            matches!(&out[..], [
            ResponseEvent::Headers(_),
            ResponseEvent::Message(a),
            ResponseEvent::Message(b),
            ResponseEvent::End(s),
        ] if a == &[3u8; 500] && b == b"plain" && s.is_ok()),
            "{out:?}"
        );
    }

    #[test]
    fn compressed_responses_without_a_usable_encoding_are_internal() {
        let mut wire = Vec::new();
        message::encode_with(Encoding::Gzip, b"hello", &mut wire);
        for extra in [None, Some("identity"), Some("snappy")] {
            let mut h = ok_headers();
            if let Some(e) = extra {
                h.push(Header::new("grpc-encoding", e));
            }
            let mut call = ClientStream::new(100);
            let mut out = Vec::new();
            call.on_headers(h, false, &mut out);
            call.on_data(&wire, false, &mut out);
            assert!(call.is_ended(), "{extra:?}");
            assert!(
                matches!(out.last(), Some(ResponseEvent::End(s)) if s.code() == Code::Internal),
                "{extra:?}: {out:?}"
            );
        }
    }

    #[test]
    fn bombs_and_garbage_end_the_call() {
        let mut bomb = Vec::new();
        message::encode_with(Encoding::Gzip, &vec![0u8; 1 << 20], &mut bomb);
        let mut garbage = message::flagged_prefix(true, 3).to_vec();
        garbage.extend_from_slice(b"xyz");
        for (wire, code) in [(bomb, Code::ResourceExhausted), (garbage, Code::Internal)] {
            let mut call = ClientStream::new(4096);
            let mut out = Vec::new();
            call.on_headers(gzip_headers(), false, &mut out);
            call.on_data(&wire, false, &mut out);
            assert!(
                matches!(out.last(), Some(ResponseEvent::End(s)) if s.code() == code),
                "{out:?}"
            );
        }
    }
}
