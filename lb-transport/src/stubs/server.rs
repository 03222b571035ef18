//! Typed server handlers: adapters from a generated service trait's methods to the
//! byte handlers that [`ServerBuilder`](crate::server::ServerBuilder) runs.
//!
//! | kind | the trait method gets | and returns | adapter |
//! | --- | --- | --- | --- |
//! | unary | [`Request<Req>`] | [`Response<Resp>`] | [`unary`] |
//! | server-streaming | `Req` and a [`ResponseSink<Resp>`] | `()` | [`server_streaming`] |
//! | client-streaming | a [`RequestStream<Req>`] | `Resp` | [`client_streaming`] |
//! | bidi | a [`BidiStream<Req, Resp>`] | `()` | [`bidi_streaming`] |
//!
//! Every one of them can read the call's path, metadata and deadline, and notice
//! cancellation (`is_cancelled`, `wait_cancelled`); the streams can also send
//! response headers and set trailers. A request that does not decode fails the
//! call with INTERNAL naming the message type; the handler is not run for it.
//!
//! The streaming adapters drive the server's call through [`RawServerCall`], which
//! the server's `ServerCall` implements (and a test's fake can).
//!
//! # Examples
//!
//! What generated `mount` code does for a unary method, by hand:
//!
//! ```
//! use lb_core::Status;
//! use lb_transport::server::Server;
//! use lb_transport::stubs::{self, Response};
//!
//! fn shout(request: stubs::server::Request<String>) -> Result<Response<String>, Status> {
//!     Ok(Response::new(request.message.to_uppercase()))
//! }
//!
//! let server = Server::builder()
//!     .unary("/demo.Shout/Shout", |raw| stubs::server::unary(raw, shout))
//!     .bind("127.0.0.1:0")?;
//! # server.shutdown(std::time::Duration::from_secs(1));
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::time::Instant;

use lb_core::{Metadata, Status};
use prost::Message;

use super::{Response, decode, encode};
use crate::server as raw;

/// The untyped server call that the streaming adapters drive: the server's
/// `ServerCall` (one streaming call, as its handler sees it), or a fake in tests.
///
/// # Examples
///
/// A fake call that replays requests and records responses, to run a typed
/// handler without a server:
///
/// ```
/// use std::collections::VecDeque;
/// use std::time::Instant;
/// use lb_core::{Metadata, Status};
/// use lb_transport::stubs::{decode, encode, server::{self, RawServerCall}};
///
/// #[derive(Default)]
/// struct Fake {
///     requests: VecDeque<Vec<u8>>,
///     responses: Vec<Vec<u8>>,
///     metadata: Metadata,
/// }
///
/// impl RawServerCall for Fake {
///     fn path(&self) -> &str { "/demo.Words/Join" }
///     fn metadata(&self) -> &Metadata { &self.metadata }
///     fn deadline(&self) -> Option<Instant> { None }
///     fn recv(&mut self) -> Result<Option<Vec<u8>>, Status> { Ok(self.requests.pop_front()) }
///     fn send(&mut self, message: &[u8]) -> Result<(), Status> {
///         self.responses.push(message.to_vec());
///         Ok(())
///     }
///     fn send_headers(&mut self, _: Metadata) -> Result<(), Status> { Ok(()) }
///     fn set_trailers(&mut self, _: Metadata) {}
///     fn is_cancelled(&self) -> bool { false }
///     fn wait_cancelled(&self, _: Instant) -> bool { false }
/// }
///
/// let mut call = Fake::default();
/// call.requests.extend(["a", "b"].map(|w| encode(&w.to_string())));
/// let joined = server::client_streaming(&mut call, |words| {
///     words.collect::<Result<Vec<String>, Status>>().map(|w| w.join(" "))
/// })?;
/// assert_eq!(decode::<String>(&joined)?, "a b");
/// # Ok::<(), Status>(())
/// ```
pub trait RawServerCall {
    /// The method path, such as `/pkg.Service/Method`.
    fn path(&self) -> &str;

    /// The client's custom metadata.
    fn metadata(&self) -> &Metadata;

    /// When the client stops waiting, if it said.
    fn deadline(&self) -> Option<Instant>;

    /// The next request message, `Ok(None)` at the end of the request stream.
    ///
    /// # Errors
    ///
    /// The call ended: cancelled, past its deadline, or the connection is gone.
    fn recv(&mut self) -> Result<Option<Vec<u8>>, Status>;

    /// Sends one response message (the response headers first, if not sent yet).
    ///
    /// # Errors
    ///
    /// The call ended.
    fn send(&mut self, message: &[u8]) -> Result<(), Status>;

    /// Sends the response headers now, with `metadata`.
    ///
    /// # Errors
    ///
    /// The headers were sent already, or the call ended.
    fn send_headers(&mut self, metadata: Metadata) -> Result<(), Status>;

    /// The metadata to send with the trailers when the handler returns.
    fn set_trailers(&mut self, metadata: Metadata);

    /// Whether the call was cancelled: the client reset it, its deadline passed,
    /// its connection ended or the server shut down.
    fn is_cancelled(&self) -> bool;

    /// Blocks until the call is cancelled (`true`) or `until` passes (`false`).
    fn wait_cancelled(&self, until: Instant) -> bool;
}

/// The server's call of the streaming kinds: the adapters drive it directly.
impl RawServerCall for raw::ServerCall {
    // `Self::` finds the inherent methods first: these forward, not recurse.
    fn path(&self) -> &str {
        Self::path(self)
    }

    fn metadata(&self) -> &Metadata {
        Self::metadata(self)
    }

    fn deadline(&self) -> Option<Instant> {
        Self::deadline(self)
    }

    fn recv(&mut self) -> Result<Option<Vec<u8>>, Status> {
        Self::recv(self)
    }

    fn send(&mut self, message: &[u8]) -> Result<(), Status> {
        Self::send(self, message)
    }

    fn send_headers(&mut self, metadata: Metadata) -> Result<(), Status> {
        Self::send_headers(self, metadata)
    }

    fn set_trailers(&mut self, metadata: Metadata) {
        Self::set_trailers(self, metadata);
    }

    fn is_cancelled(&self) -> bool {
        Self::is_cancelled(self)
    }

    fn wait_cancelled(&self, until: Instant) -> bool {
        Self::wait_cancelled(self, until)
    }
}

/// Runs a typed unary handler for the server's byte handler: decodes the request,
/// encodes the response and its metadata.
///
/// # Errors
///
/// INTERNAL naming `Req` when the request does not decode, else the handler's
/// status.
pub fn unary<Req, Resp, F>(request: raw::Request, handler: F) -> Result<raw::Response, Status>
where
    Req: Message + Default,
    Resp: Message,
    F: FnOnce(Request<Req>) -> Result<Response<Resp>, Status>,
{
    let mut call = request;
    let message = decode(&std::mem::take(&mut call.message))?;
    let response = handler(Request { message, call })?;
    Ok(raw::Response {
        message: encode(&response.message),
        headers: response.headers,
        trailers: response.trailers,
        compression: None,
    })
}

/// Runs a typed server-streaming handler: decodes the request and gives the
/// handler a [`ResponseSink`] that encodes what it sends.
///
/// # Errors
///
/// INTERNAL naming `Req` when the request does not decode, else the handler's
/// status.
pub fn server_streaming<Req, Resp, F>(
    request: Vec<u8>,
    call: &mut dyn RawServerCall,
    handler: F,
) -> Result<(), Status>
where
    Req: Message + Default,
    Resp: Message,
    F: FnOnce(Req, &mut ResponseSink<'_, Resp>) -> Result<(), Status>,
{
    let request = decode(&request)?;
    handler(
        request,
        &mut ResponseSink {
            call,
            _messages: PhantomData,
        },
    )
}

/// Runs a typed client-streaming handler: gives it a [`RequestStream`] that
/// decodes the requests, and encodes its response.
///
/// # Errors
///
/// The handler's status (a request that does not decode reaches it from the
/// stream as INTERNAL, and it usually returns that).
pub fn client_streaming<Req, Resp, F>(
    call: &mut dyn RawServerCall,
    handler: F,
) -> Result<Vec<u8>, Status>
where
    Req: Message + Default,
    Resp: Message,
    F: FnOnce(&mut RequestStream<'_, Req>) -> Result<Resp, Status>,
{
    let response = handler(&mut RequestStream {
        call,
        receiving: Receiving::default(),
        _messages: PhantomData,
    })?;
    Ok(encode(&response))
}

/// Runs a typed bidi handler: gives it a [`BidiStream`] that decodes requests
/// and encodes responses.
///
/// # Errors
///
/// The handler's status.
pub fn bidi_streaming<Req, Resp, F>(call: &mut dyn RawServerCall, handler: F) -> Result<(), Status>
where
    Req: Message + Default,
    Resp: Message,
    F: FnOnce(&mut BidiStream<'_, Req, Resp>) -> Result<(), Status>,
{
    handler(&mut BidiStream {
        call,
        receiving: Receiving::default(),
        _messages: PhantomData,
    })
}

/// A unary call's request as a typed handler sees it: the decoded message, and the
/// call's path, metadata, deadline and cancellation.
///
/// # Examples
///
/// ```
/// use lb_transport::stubs::server::Request;
///
/// // Calling a handler directly, in a test, say.
/// let request = Request::new(String::from("hi"));
/// assert_eq!(request.message, "hi");
/// assert!(request.metadata().is_empty());
/// assert!(!request.is_cancelled());
/// ```
pub struct Request<T> {
    /// The decoded request message.
    pub message: T,
    /// The call, with its message taken out.
    call: raw::Request,
}

impl<T> Request<T> {
    /// A request with `message`, no metadata and no deadline, that is never
    /// cancelled: for calling a handler directly.
    pub fn new(message: T) -> Self {
        Self {
            message,
            call: raw::Request::new(String::new(), Vec::new()),
        }
    }

    /// The message.
    pub fn into_message(self) -> T {
        self.message
    }

    /// The method path, such as `/pkg.Service/Method` (empty for
    /// [`Request::new`]).
    pub fn path(&self) -> &str {
        &self.call.path
    }

    /// The client's custom metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.call.metadata
    }

    /// When the client stops waiting, if it said.
    pub fn deadline(&self) -> Option<Instant> {
        self.call.deadline
    }

    /// Whether the call was cancelled; its result will be dropped.
    pub fn is_cancelled(&self) -> bool {
        self.call.is_cancelled()
    }

    /// Blocks until the call is cancelled (`true`) or `until` passes (`false`). A
    /// handler that waits for something should wait here, so that a cancelled call
    /// frees its worker at once.
    pub fn wait_cancelled(&self, until: Instant) -> bool {
        self.call.wait_cancelled(until)
    }
}

impl<T: fmt::Debug> fmt::Debug for Request<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("message", &self.message)
            .field("path", &self.call.path)
            .field("metadata", &self.call.metadata)
            .field("deadline", &self.call.deadline)
            .finish_non_exhaustive()
    }
}

/// The receiving side of a streaming handler: a request that did not decode ends
/// it for good.
#[derive(Default)]
struct Receiving {
    failed: Option<Status>,
    done: bool,
}

impl Receiving {
    fn recv<T: Message + Default>(
        &mut self,
        call: &mut dyn RawServerCall,
    ) -> Result<Option<T>, Status> {
        if let Some(status) = &self.failed {
            return Err(status.clone());
        }
        let Some(bytes) = call.recv()? else {
            return Ok(None);
        };
        decode(&bytes).map(Some).inspect_err(|status| {
            self.failed = Some(status.clone());
        })
    }

    fn next<T: Message + Default>(
        &mut self,
        call: &mut dyn RawServerCall,
    ) -> Option<Result<T, Status>> {
        if self.done {
            return None;
        }
        let item = self.recv(call).transpose();
        self.done = !matches!(item, Some(Ok(_)));
        item
    }
}

/// The call's context, shared by the streams: path, metadata, deadline,
/// cancellation, headers and trailers.
macro_rules! call_context {
    () => {
        /// The method path, such as `/pkg.Service/Method`.
        pub fn path(&self) -> &str {
            self.call.path()
        }

        /// The client's custom metadata.
        pub fn metadata(&self) -> &Metadata {
            self.call.metadata()
        }

        /// When the client stops waiting, if it said.
        pub fn deadline(&self) -> Option<Instant> {
            self.call.deadline()
        }

        /// Whether the call was cancelled: the client reset it, its deadline
        /// passed, its connection ended or the server shut down.
        pub fn is_cancelled(&self) -> bool {
            self.call.is_cancelled()
        }

        /// Blocks until the call is cancelled (`true`) or `until` passes
        /// (`false`).
        pub fn wait_cancelled(&self, until: Instant) -> bool {
            self.call.wait_cancelled(until)
        }

        /// Sends the response headers now, with `metadata` (otherwise they go,
        /// empty, with the first response or the trailers).
        ///
        /// # Errors
        ///
        /// The headers were sent already, or the call ended.
        pub fn send_headers(&mut self, metadata: Metadata) -> Result<(), Status> {
            self.call.send_headers(metadata)
        }

        /// The metadata to send with the trailers when the handler returns.
        pub fn set_trailers(&mut self, metadata: Metadata) {
            self.call.set_trailers(metadata);
        }
    };
}

/// Where a server-streaming handler sends its responses; also the call's context.
///
/// # Examples
///
/// ```
/// use lb_core::Status;
/// use lb_transport::stubs::server::ResponseSink;
///
/// fn count(to: u32, responses: &mut ResponseSink<'_, u32>) -> Result<(), Status> {
///     for n in 1..=to {
///         if responses.is_cancelled() {
///             return Err(Status::cancelled("the client went away"));
///         }
///         responses.send(&n)?;
///     }
///     Ok(())
/// }
/// ```
pub struct ResponseSink<'a, T> {
    call: &'a mut dyn RawServerCall,
    _messages: PhantomData<fn(&T)>,
}

impl<T: Message> ResponseSink<'_, T> {
    /// Sends one response.
    ///
    /// # Errors
    ///
    /// The call ended (cancelled, past its deadline, connection gone): the handler
    /// should return.
    pub fn send(&mut self, message: &T) -> Result<(), Status> {
        self.call.send(&encode(message))
    }

    call_context!();
}

impl<T> fmt::Debug for ResponseSink<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseSink")
            .field("path", &self.call.path())
            .field("message", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}

/// A client-streaming handler's requests, decoded: an iterator of `T`; also the
/// call's context.
///
/// # Examples
///
/// ```
/// use lb_core::Status;
/// use lb_transport::stubs::server::RequestStream;
///
/// fn sum(numbers: &mut RequestStream<'_, u64>) -> Result<u64, Status> {
///     let mut total = 0;
///     while let Some(n) = numbers.recv()? {
///         total += n;
///     }
///     Ok(total)
/// }
/// ```
pub struct RequestStream<'a, T> {
    call: &'a mut dyn RawServerCall,
    receiving: Receiving,
    _messages: PhantomData<fn() -> T>,
}

impl<T: Message + Default> RequestStream<'_, T> {
    /// The next request, `Ok(None)` at the end of the request stream.
    ///
    /// # Errors
    ///
    /// The call ended, or INTERNAL naming `T` once a request did not decode.
    pub fn recv(&mut self) -> Result<Option<T>, Status> {
        self.receiving.recv(self.call)
    }

    call_context!();
}

impl<T: Message + Default> Iterator for RequestStream<'_, T> {
    type Item = Result<T, Status>;

    fn next(&mut self) -> Option<Self::Item> {
        self.receiving.next(self.call)
    }
}

impl<T> fmt::Debug for RequestStream<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestStream")
            .field("path", &self.call.path())
            .field("message", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}

/// A bidi handler's call: receive requests (an iterator of `Req`) and send
/// responses, in any order; also the call's context.
///
/// # Examples
///
/// ```
/// use lb_core::Status;
/// use lb_transport::stubs::server::BidiStream;
///
/// fn echo(stream: &mut BidiStream<'_, String, String>) -> Result<(), Status> {
///     while let Some(line) = stream.recv()? {
///         stream.send(&line)?;
///     }
///     Ok(())
/// }
/// ```
pub struct BidiStream<'a, Req, Resp> {
    call: &'a mut dyn RawServerCall,
    receiving: Receiving,
    _messages: PhantomData<fn(&Resp) -> Req>,
}

impl<Req: Message + Default, Resp: Message> BidiStream<'_, Req, Resp> {
    /// The next request, `Ok(None)` at the end of the request stream.
    ///
    /// # Errors
    ///
    /// The call ended, or INTERNAL naming `Req` once a request did not decode.
    pub fn recv(&mut self) -> Result<Option<Req>, Status> {
        self.receiving.recv(self.call)
    }

    /// Sends one response.
    ///
    /// # Errors
    ///
    /// The call ended: the handler should return.
    pub fn send(&mut self, message: &Resp) -> Result<(), Status> {
        self.call.send(&encode(message))
    }

    call_context!();
}

impl<Req: Message + Default, Resp: Message> Iterator for BidiStream<'_, Req, Resp> {
    type Item = Result<Req, Status>;

    fn next(&mut self) -> Option<Self::Item> {
        self.receiving.next(self.call)
    }
}

impl<Req, Resp> fmt::Debug for BidiStream<'_, Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BidiStream")
            .field("path", &self.call.path())
            .field("request", &std::any::type_name::<Req>())
            .field("response", &std::any::type_name::<Resp>())
            .finish_non_exhaustive()
    }
}
