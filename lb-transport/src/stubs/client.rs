//! Typed client calls: prost messages over lb-core's byte calls, one function and
//! one wrapper per kind of call.
//!
//! Sending encodes (which cannot fail); receiving decodes, and a response that does
//! not decode ends the call: the wrapper cancels it (the server sees CANCELLED) and
//! reports INTERNAL naming the message type, from then on.

use std::fmt;
use std::marker::PhantomData;

use lb_core::channel::{self, CallOptions, Channel, SendError};
use lb_core::{Metadata, Status};
use prost::Message;

use super::{Response, decode, encode};

/// Makes a unary call: encodes `request`, waits for the one response and decodes
/// it.
///
/// # Errors
///
/// The call's status (see [`Channel::unary`]), or INTERNAL naming `Resp` when the
/// response does not decode.
///
/// # Examples
///
/// ```
/// # use lb_core::channel::{CallOptions, Channel};
/// # fn demo(channel: &Channel) -> Result<(), lb_core::Status> {
/// use std::time::Duration;
///
/// let options = CallOptions::default().with_timeout(Duration::from_secs(1));
/// let reply: lb_transport::stubs::Response<String> =
///     lb_transport::stubs::unary(channel, "/demo.Echo/Say", &"hi".to_string(), options)?;
/// assert_eq!(reply.message, "hi");
/// # Ok(()) }
/// ```
pub fn unary<Req, Resp>(
    channel: &Channel,
    method: &str,
    request: &Req,
    options: CallOptions,
) -> Result<Response<Resp>, Status>
where
    Req: Message,
    Resp: Message + Default,
{
    let response = channel.unary(method, encode(request), options)?;
    Ok(Response {
        message: decode(&response.message)?,
        headers: response.headers,
        trailers: response.trailers,
    })
}

/// Starts a server-streaming call: sends `request`, then the responses come as an
/// iterator.
///
/// # Errors
///
/// The call could not start (see [`Channel::server_streaming`]).
///
/// # Examples
///
/// ```
/// # use lb_core::channel::{CallOptions, Channel};
/// # fn demo(channel: &Channel) -> Result<(), lb_core::Status> {
/// let stream = lb_transport::stubs::server_streaming::<String, String>(
///     channel,
///     "/demo.Words/Split",
///     &"a b c".to_string(),
///     CallOptions::default(),
/// )?;
/// for word in stream {
///     println!("{}", word?);
/// }
/// # Ok(()) }
/// ```
pub fn server_streaming<Req, Resp>(
    channel: &Channel,
    method: &str,
    request: &Req,
    options: CallOptions,
) -> Result<ServerStreaming<Resp>, Status>
where
    Req: Message,
    Resp: Message + Default,
{
    Ok(ServerStreaming {
        call: channel.server_streaming(method, encode(request), options)?,
        receiving: Receiving::new(),
    })
}

/// Starts a client-streaming call: send the requests, then
/// [`finish`](ClientStreaming::finish) for the one response.
///
/// # Errors
///
/// The call could not start (see [`Channel::client_streaming`]).
///
/// # Examples
///
/// ```
/// # use lb_core::channel::{CallOptions, Channel};
/// # fn demo(channel: &Channel) -> Result<(), lb_core::Status> {
/// let call = lb_transport::stubs::client_streaming::<String, String>(
///     channel,
///     "/demo.Words/Join",
///     CallOptions::default(),
/// )?;
/// for word in ["a", "b", "c"] {
///     call.send(&word.to_string())?;
/// }
/// let joined: String = call.finish()?;
/// # Ok(()) }
/// ```
pub fn client_streaming<Req, Resp>(
    channel: &Channel,
    method: &str,
    options: CallOptions,
) -> Result<ClientStreaming<Req, Resp>, Status>
where
    Req: Message,
    Resp: Message + Default,
{
    Ok(ClientStreaming {
        call: channel.client_streaming(method, options)?,
        _messages: PhantomData,
    })
}

/// Starts a bidirectional-streaming call: send and receive in any order, or
/// [`split`](Streaming::split) the call for two threads.
///
/// # Errors
///
/// The call could not start (see [`Channel::bidi_streaming`]).
///
/// # Examples
///
/// ```
/// # use lb_core::channel::{CallOptions, Channel};
/// # fn demo(channel: &Channel) -> Result<(), lb_core::Status> {
/// let call = lb_transport::stubs::bidi_streaming::<String, String>(
///     channel,
///     "/demo.Chat/Talk",
///     CallOptions::default(),
/// )?;
/// let (tx, rx) = call.split();
/// let writer = std::thread::spawn(move || -> Result<(), lb_core::Status> {
///     tx.send(&"hello".to_string())?;
///     tx.close_send();
///     Ok(())
/// });
/// for reply in rx {
///     println!("{}", reply?);
/// }
/// writer.join().expect("the writer panicked")?;
/// # Ok(()) }
/// ```
pub fn bidi_streaming<Req, Resp>(
    channel: &Channel,
    method: &str,
    options: CallOptions,
) -> Result<Streaming<Req, Resp>, Status>
where
    Req: Message,
    Resp: Message + Default,
{
    Ok(Streaming {
        call: channel.bidi_streaming(method, options)?,
        receiving: Receiving::new(),
        _requests: PhantomData,
    })
}

/// Why [`ClientStreaming::try_send`] or [`Streaming::try_send`] did not send.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrySendError {
    /// The stream has no room now: try again later, or use `send`, which waits.
    #[error("the stream has no room now")]
    Full,
    /// The message cannot be sent: the call ended (with this status), the sending
    /// side was closed, or the message is over the size limit.
    #[error("{0}")]
    Failed(Status),
}

impl From<TrySendError> for Status {
    fn from(e: TrySendError) -> Self {
        match e {
            TrySendError::Full => Self::resource_exhausted("the stream has no room now"),
            TrySendError::Failed(status) => status,
        }
    }
}

fn try_sent(result: Result<(), SendError>) -> Result<(), TrySendError> {
    result.map_err(|e| match e {
        SendError::Full(_) => TrySendError::Full,
        e => TrySendError::Failed(e.status()),
    })
}

/// The receiving side's state: a response that did not decode ends it for good.
struct Receiving<T> {
    /// The decode failure, reported again by every later `recv`.
    failed: Option<Status>,
    /// An iterator returned the end (or an error): it returns `None` from then on.
    done: bool,
    _messages: PhantomData<fn() -> T>,
}

impl<T: Message + Default> Receiving<T> {
    fn new() -> Self {
        Self {
            failed: None,
            done: false,
            _messages: PhantomData,
        }
    }

    /// Receives with `recv` and decodes, cancelling with `cancel` when a message
    /// does not decode.
    fn recv(
        &mut self,
        recv: impl FnOnce() -> Result<Option<Vec<u8>>, Status>,
        cancel: impl FnOnce(),
    ) -> Result<Option<T>, Status> {
        if let Some(status) = &self.failed {
            return Err(status.clone());
        }
        let Some(bytes) = recv()? else {
            return Ok(None);
        };
        decode(&bytes).map(Some).inspect_err(|status| {
            cancel();
            self.failed = Some(status.clone());
        })
    }

    /// As [`Receiving::recv`], as an iterator's `next`: `None` after the end or an
    /// error.
    fn next(
        &mut self,
        recv: impl FnOnce() -> Result<Option<Vec<u8>>, Status>,
        cancel: impl FnOnce(),
    ) -> Option<Result<T, Status>> {
        if self.done {
            return None;
        }
        let item = self.recv(recv, cancel).transpose();
        self.done = !matches!(item, Some(Ok(_)));
        item
    }
}

/// A server-streaming call's responses, decoded: an iterator of `T`. Made by
/// [`server_streaming`]; dropping it before the end cancels the call.
///
/// # Examples
///
/// ```
/// # use lb_core::channel::{CallOptions, Channel};
/// # fn demo(channel: &Channel) -> Result<(), lb_core::Status> {
/// let mut stream = lb_transport::stubs::server_streaming::<String, String>(
///     channel, "/demo.Words/Split", &"a b".to_string(), CallOptions::default())?;
/// let headers = stream.headers()?;
/// while let Some(word) = stream.recv()? {
///     println!("{word}");
/// }
/// println!("trailers: {:?}", stream.trailers());
/// # Ok(()) }
/// ```
pub struct ServerStreaming<T> {
    call: channel::ServerStreaming,
    receiving: Receiving<T>,
}

impl<T: Message + Default> ServerStreaming<T> {
    /// The next response: `Ok(None)` once the call ended with OK. Blocks until
    /// then (at most until the deadline).
    ///
    /// # Errors
    ///
    /// The call's status (see [`Call::recv`](lb_core::channel::Call::recv)), or
    /// INTERNAL naming `T` once a response did not decode.
    pub fn recv(&mut self) -> Result<Option<T>, Status> {
        let call = &self.call;
        self.receiving.recv(|| call.recv(), || call.cancel())
    }

    /// The response headers' metadata, waiting for them.
    ///
    /// # Errors
    ///
    /// The call failed before headers arrived: its status.
    pub fn headers(&self) -> Result<Metadata, Status> {
        self.call.headers()
    }

    /// The trailers' metadata, once the call has ended.
    pub fn trailers(&self) -> Option<Metadata> {
        self.call.trailers()
    }

    /// Cancels the call: the server sees CANCELLED, and later receives fail with
    /// CANCELLED. Does nothing once the call ended.
    pub fn cancel(&self) {
        self.call.cancel();
    }
}

impl<T: Message + Default> Iterator for ServerStreaming<T> {
    type Item = Result<T, Status>;

    fn next(&mut self) -> Option<Self::Item> {
        let call = &self.call;
        self.receiving.next(|| call.recv(), || call.cancel())
    }
}

impl<T> fmt::Debug for ServerStreaming<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerStreaming")
            .field("call", &self.call)
            .field("message", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}

/// A client-streaming call in progress: send requests, then
/// [`finish`](ClientStreaming::finish) for the response. Made by
/// [`client_streaming`]; dropping it unfinished cancels the call.
pub struct ClientStreaming<Req, Resp> {
    call: channel::ClientStreaming,
    _messages: PhantomData<fn(&Req) -> Resp>,
}

impl<Req: Message, Resp: Message + Default> ClientStreaming<Req, Resp> {
    /// Sends one request, waiting while the stream has no room (until the
    /// deadline).
    ///
    /// # Errors
    ///
    /// The call ended (its status: the server may answer before it read every
    /// request), or the message is over the send limit (RESOURCE_EXHAUSTED).
    pub fn send(&self, message: &Req) -> Result<(), Status> {
        self.call.send(encode(message)).map_err(Status::from)
    }

    /// Sends one request if the stream has room now, without waiting.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] when there is no room, else as
    /// [`ClientStreaming::send`].
    pub fn try_send(&self, message: &Req) -> Result<(), TrySendError> {
        try_sent(self.call.try_send(encode(message)))
    }

    /// Ends the request stream and waits for the response.
    ///
    /// # Errors
    ///
    /// The call's status, or INTERNAL naming `Resp` when the response does not
    /// decode.
    pub fn finish(self) -> Result<Resp, Status> {
        self.finish_response().map(Response::into_message)
    }

    /// As [`ClientStreaming::finish`], with the response's headers and trailers.
    ///
    /// # Errors
    ///
    /// As [`ClientStreaming::finish`].
    pub fn finish_response(self) -> Result<Response<Resp>, Status> {
        let response = self.call.finish()?;
        Ok(Response {
            message: decode(&response.message)?,
            headers: response.headers,
            trailers: response.trailers,
        })
    }

    /// Cancels the call: the server sees CANCELLED.
    pub fn cancel(&self) {
        self.call.cancel();
    }
}

impl<Req, Resp> fmt::Debug for ClientStreaming<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientStreaming")
            .field("call", &self.call)
            .field("request", &std::any::type_name::<Req>())
            .field("response", &std::any::type_name::<Resp>())
            .finish()
    }
}

/// A bidirectional-streaming call: send requests and receive responses in any
/// order (an iterator of responses), or [`split`](Streaming::split) it for two
/// threads. Made by [`bidi_streaming`]; dropping every part of it before the end
/// cancels the call.
pub struct Streaming<Req, Resp> {
    call: channel::Call,
    receiving: Receiving<Resp>,
    _requests: PhantomData<fn(&Req)>,
}

impl<Req: Message, Resp: Message + Default> Streaming<Req, Resp> {
    /// Sends one request, waiting while the stream has no room (until the
    /// deadline).
    ///
    /// # Errors
    ///
    /// The call ended (its status), sending was closed, or the message is over the
    /// send limit (RESOURCE_EXHAUSTED).
    pub fn send(&self, message: &Req) -> Result<(), Status> {
        self.call.send(encode(message)).map_err(Status::from)
    }

    /// Sends the last request and closes the sending side.
    ///
    /// # Errors
    ///
    /// As [`Streaming::send`].
    pub fn send_last(&self, message: &Req) -> Result<(), Status> {
        self.call.send_last(encode(message)).map_err(Status::from)
    }

    /// Sends one request if the stream has room now, without waiting.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] when there is no room, else as [`Streaming::send`].
    pub fn try_send(&self, message: &Req) -> Result<(), TrySendError> {
        try_sent(self.call.try_send(encode(message)))
    }

    /// Ends the request side: the server sees the end of the request stream.
    /// Idempotent.
    pub fn close_send(&self) {
        self.call.close_send();
    }

    /// The next response: `Ok(None)` once the call ended with OK. Blocks until
    /// then (at most until the deadline).
    ///
    /// # Errors
    ///
    /// The call's status, or INTERNAL naming `Resp` once a response did not decode.
    pub fn recv(&mut self) -> Result<Option<Resp>, Status> {
        let call = &self.call;
        self.receiving.recv(|| call.recv(), || call.cancel())
    }

    /// The response headers' metadata, waiting for them.
    ///
    /// # Errors
    ///
    /// The call failed before headers arrived: its status.
    pub fn headers(&self) -> Result<Metadata, Status> {
        self.call.headers()
    }

    /// The trailers' metadata, once the call has ended.
    pub fn trailers(&self) -> Option<Metadata> {
        self.call.trailers()
    }

    /// Cancels the call: the server sees CANCELLED.
    pub fn cancel(&self) {
        self.call.cancel();
    }

    /// Splits the call into a sending half and a receiving half, for two threads.
    /// The call is cancelled when both are dropped before it ended.
    pub fn split(self) -> (StreamingSender<Req>, StreamingReceiver<Resp>) {
        let (sender, receiver) = self.call.split();
        (
            StreamingSender {
                sender,
                _requests: PhantomData,
            },
            StreamingReceiver {
                receiver,
                receiving: self.receiving,
            },
        )
    }
}

impl<Req: Message, Resp: Message + Default> Iterator for Streaming<Req, Resp> {
    type Item = Result<Resp, Status>;

    fn next(&mut self) -> Option<Self::Item> {
        let call = &self.call;
        self.receiving.next(|| call.recv(), || call.cancel())
    }
}

impl<Req, Resp> fmt::Debug for Streaming<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Streaming")
            .field("call", &self.call)
            .field("request", &std::any::type_name::<Req>())
            .field("response", &std::any::type_name::<Resp>())
            .finish_non_exhaustive()
    }
}

/// The sending half of a [`Streaming`] call (see [`Streaming::split`]).
pub struct StreamingSender<Req> {
    sender: channel::CallSender,
    _requests: PhantomData<fn(&Req)>,
}

impl<Req: Message> StreamingSender<Req> {
    /// As [`Streaming::send`].
    ///
    /// # Errors
    ///
    /// As [`Streaming::send`].
    pub fn send(&self, message: &Req) -> Result<(), Status> {
        self.sender.send(encode(message)).map_err(Status::from)
    }

    /// As [`Streaming::send_last`].
    ///
    /// # Errors
    ///
    /// As [`Streaming::send`].
    pub fn send_last(&self, message: &Req) -> Result<(), Status> {
        self.sender.send_last(encode(message)).map_err(Status::from)
    }

    /// As [`Streaming::try_send`].
    ///
    /// # Errors
    ///
    /// As [`Streaming::try_send`].
    pub fn try_send(&self, message: &Req) -> Result<(), TrySendError> {
        try_sent(self.sender.try_send(encode(message)))
    }

    /// As [`Streaming::close_send`].
    pub fn close_send(&self) {
        self.sender.close_send();
    }

    /// As [`Streaming::cancel`].
    pub fn cancel(&self) {
        self.sender.cancel();
    }
}

impl<Req> fmt::Debug for StreamingSender<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamingSender")
            .field("sender", &self.sender)
            .field("request", &std::any::type_name::<Req>())
            .finish()
    }
}

/// The receiving half of a [`Streaming`] call (see [`Streaming::split`]): an
/// iterator of responses.
pub struct StreamingReceiver<Resp> {
    receiver: channel::CallReceiver,
    receiving: Receiving<Resp>,
}

impl<Resp: Message + Default> StreamingReceiver<Resp> {
    /// As [`Streaming::recv`].
    ///
    /// # Errors
    ///
    /// As [`Streaming::recv`].
    pub fn recv(&mut self) -> Result<Option<Resp>, Status> {
        let receiver = &self.receiver;
        self.receiving
            .recv(|| receiver.recv(), || receiver.cancel())
    }

    /// As [`Streaming::headers`].
    ///
    /// # Errors
    ///
    /// As [`Streaming::headers`].
    pub fn headers(&self) -> Result<Metadata, Status> {
        self.receiver.headers()
    }

    /// As [`Streaming::trailers`].
    pub fn trailers(&self) -> Option<Metadata> {
        self.receiver.trailers()
    }

    /// As [`Streaming::cancel`].
    pub fn cancel(&self) {
        self.receiver.cancel();
    }
}

impl<Resp: Message + Default> Iterator for StreamingReceiver<Resp> {
    type Item = Result<Resp, Status>;

    fn next(&mut self) -> Option<Self::Item> {
        let receiver = &self.receiver;
        self.receiving
            .next(|| receiver.recv(), || receiver.cancel())
    }
}

impl<Resp> fmt::Debug for StreamingReceiver<Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamingReceiver")
            .field("receiver", &self.receiver)
            .field("response", &std::any::type_name::<Resp>())
            .finish_non_exhaustive()
    }
}
