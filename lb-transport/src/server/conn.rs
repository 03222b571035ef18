//! One accepted connection: its socket, its sans-IO HTTP/2 state, and the state of
//! each call on it, from request head to response.
//!
//! A call goes through two phases:
//!
//! ```text
//!  HEADERS ──> Receiving ── END_STREAM, one message ──> Running ── result ──> answered
//!                 │                                        │
//!                 └── refused (no such method, oversized,  └── deadline, reset,
//!                     not one message, deadline, reset)        connection end: dropped
//! ```
//!
//! Everything that ends a call removes it from [`Conn::calls`]; dropping a running
//! call's cancel sender cancels its request, and its late result finds no call.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use lb_core::{Code, Metadata, Status};
use mio::Token;

use crate::driver::socket::{self, ReadOutcome};
use crate::driver::stream::Stream;
use crate::frame::{Reason, StreamId};
use crate::grpc::call::{self, Refusal, ServerRequestHead};
use crate::grpc::message::MessageDecoder;
use crate::hpack::Header;
use crate::proto::{Connection, ConnectionConfig, Event};
use crate::server::worker::{Job, cancel_pair};
use crate::server::{Handler, Request, Response, Shared};

/// How long a finished connection waits for its last bytes to leave and for the peer
/// to close, so that closing does not reset data the peer has not read yet.
const LINGER: Duration = Duration::from_secs(1);

/// The body of the answer to a plain HTTP GET.
const GET_BODY: &[u8] = b"lb-transport gRPC server: send gRPC requests (POST, application/grpc)\n";

/// What every connection shares on the I/O thread: the routes, the workers' job
/// channel with its overflow queue, and the call deadlines.
pub(crate) struct Dispatch {
    pub(crate) shared: Arc<Shared>,
    jobs: Sender<Job>,
    /// Jobs that did not fit in the bounded channel, sent as workers free up. Bounded
    /// in practice by the connections' MAX_CONCURRENT_STREAMS.
    backlog: VecDeque<Job>,
    /// Every running or receiving call with a deadline, earliest first.
    pub(crate) deadlines: BTreeSet<(Instant, Token, StreamId)>,
}

impl Dispatch {
    pub(crate) fn new(shared: Arc<Shared>, jobs: Sender<Job>) -> Self {
        Self {
            shared,
            jobs,
            backlog: VecDeque::new(),
            deadlines: BTreeSet::new(),
        }
    }

    /// Hands a job to the workers, or queues it if they are all busy. Fails only if
    /// every worker is gone.
    fn submit(&mut self, job: Job) -> bool {
        if !self.backlog.is_empty() {
            self.backlog.push_back(job);
            return true;
        }
        match self.jobs.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(job)) => {
                self.backlog.push_back(job);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Moves queued jobs to the workers while there is room, skipping cancelled ones.
    pub(crate) fn pump(&mut self) {
        while let Some(job) = self.backlog.pop_front() {
            if job.request.is_cancelled() {
                continue;
            }
            match self.jobs.try_send(job) {
                Ok(()) => {}
                Err(TrySendError::Full(job)) => {
                    self.backlog.push_front(job);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.backlog.clear();
                    return;
                }
            }
        }
    }

    /// The earliest call deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _, _)| *at)
    }
}

/// Where a call is.
enum Phase {
    /// Collecting the request message.
    Receiving {
        head: ServerRequestHead,
        handler: Arc<Handler>,
        decoder: MessageDecoder,
        message: Option<Vec<u8>>,
        /// Request bytes received so far, counted in [`Conn::buffered`].
        received: usize,
    },
    /// A worker has (or will have) the request. Dropping the sender cancels it.
    Running { _cancel: Sender<Infallible> },
}

/// One call on the connection.
struct Call {
    deadline: Option<Instant>,
    /// The client ended its side of the stream.
    remote_done: bool,
    phase: Phase,
}

/// An accepted connection.
pub(crate) struct Conn {
    token: Token,
    pub(crate) stream: Stream,
    proto: Connection,
    out: Vec<u8>,
    out_pos: usize,
    calls: HashMap<StreamId, Call>,
    /// Request bytes held by calls not yet dispatched (bounded by the server's
    /// `max_buffered_request_bytes`).
    buffered: usize,
    /// The interest the socket is registered with.
    pub(crate) interest: mio::Interest,
    /// The last transmit could not write everything: wait until writable.
    write_blocked: bool,
    /// The last read stopped at its budget: read again without waiting for an event.
    pub(crate) read_again: bool,
    /// The peer closed its side.
    peer_eof: bool,
    /// The socket failed: drop it.
    broken: bool,
    /// We closed our sending side after the connection finished.
    fin_sent: bool,
    /// Once the connection has finished: the latest moment to drop the socket.
    linger_until: Option<Instant>,
}

impl Conn {
    pub(crate) fn new(
        token: Token,
        stream: Stream,
        config: ConnectionConfig,
        now: Instant,
    ) -> Self {
        Self {
            token,
            stream,
            proto: Connection::server(config, now),
            out: Vec::new(),
            out_pos: 0,
            calls: HashMap::new(),
            buffered: 0,
            interest: mio::Interest::READABLE,
            write_blocked: false,
            read_again: false,
            peer_eof: false,
            broken: false,
            fin_sent: false,
            linger_until: None,
        }
    }

    // ----- Input -----

    /// Reads what the socket has, up to the per-pass budget.
    pub(crate) fn read(&mut self, scratch: &mut [u8], now: Instant) {
        self.read_again = false;
        if self.broken || self.peer_eof {
            return;
        }
        match socket::read_into(&mut self.stream, &mut self.proto, scratch, now) {
            Ok(ReadOutcome::WouldBlock) => {}
            Ok(ReadOutcome::Budget) => self.read_again = true,
            Ok(ReadOutcome::Eof) => {
                self.peer_eof = true;
                self.proto.handle_eof();
            }
            Err(e) => self.fail_io(&e),
        }
    }

    /// Fires the connection's timers if they are due.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.proto.handle_timeout(now);
    }

    /// Starts a graceful close: GOAWAY(NO_ERROR); calls under way finish.
    pub(crate) fn go_away(&mut self) {
        self.proto.go_away(Reason::NO_ERROR, b"");
    }

    /// Ends the connection now: GOAWAY, every call dropped.
    pub(crate) fn close(&mut self, dispatch: &mut Dispatch) {
        self.proto.close();
        self.drop_calls(dispatch);
    }

    /// A handler's result arrived. Dropped if its call already ended.
    pub(crate) fn complete(
        &mut self,
        stream: StreamId,
        result: Result<Response, Status>,
        dispatch: &mut Dispatch,
    ) {
        let Some(call) = self.remove_call(stream, dispatch) else {
            return;
        };
        debug_assert!(matches!(call.phase, Phase::Running { .. }));
        let response = match result {
            Ok(response) if u32::try_from(response.message.len()).is_err() => Err(
                Status::internal("response message is larger than gRPC allows"),
            ),
            other => other,
        };
        match response {
            Ok(response) => self.send_response(stream, &response),
            Err(status) => self.send_status(stream, &status, call.remote_done),
        }
    }

    /// A call deadline passed: DEADLINE_EXCEEDED, unless the call already ended.
    pub(crate) fn expire(&mut self, stream: StreamId, dispatch: &mut Dispatch) {
        if let Some(call) = self.remove_call(stream, dispatch) {
            let status = Status::deadline_exceeded("deadline exceeded before the call completed");
            self.send_status(stream, &status, call.remote_done);
        }
    }

    // ----- Driving -----

    /// Handles every event, writes what can be written, and repeats while writing
    /// produced new events (a drained connection finishing, say).
    pub(crate) fn drive(&mut self, dispatch: &mut Dispatch, now: Instant) {
        loop {
            while let Some(event) = self.proto.poll_event() {
                self.on_event(event, dispatch, now);
            }
            self.transmit(now);
            match self.proto.poll_event() {
                Some(event) => self.on_event(event, dispatch, now),
                None => break,
            }
        }
        if self.proto.is_closed() {
            self.linger_until.get_or_insert(now + LINGER);
            let flushed = !self.write_blocked;
            if flushed && !self.fin_sent && !self.peer_eof && !self.broken {
                // Our side is done; the peer's EOF (or the linger timeout) ends it.
                if let Err(e) = self.stream.shutdown_write() {
                    log::debug!("connection {}: shutdown: {e}", self.token.0);
                    self.broken = true;
                }
                self.fin_sent = true;
            }
        }
    }

    fn transmit(&mut self, now: Instant) {
        if self.broken || self.fin_sent {
            return;
        }
        // TLS records left from an earlier pass go first.
        let sent = self
            .stream
            .flush_tls()
            .and_then(|()| {
                socket::transmit(
                    &mut self.stream,
                    &mut self.proto,
                    &mut self.out,
                    &mut self.out_pos,
                    now,
                )
            })
            .and_then(|all| self.stream.flush_tls().map(|()| all));
        match sent {
            Ok(all_written) => self.write_blocked = !all_written || self.stream.wants_write(),
            Err(e) => self.fail_io(&e),
        }
    }

    fn fail_io(&mut self, e: &io::Error) {
        log::debug!("connection {}: {e}", self.token.0);
        self.broken = true;
        self.write_blocked = false;
        self.proto.handle_io_error(e.to_string());
    }

    /// Whether the connection can be dropped: it finished and its last bytes left
    /// (and the peer closed), or the socket failed, or the linger time is over.
    pub(crate) fn is_done(&self, now: Instant) -> bool {
        if !self.proto.is_closed() {
            return false;
        }
        self.broken
            || (!self.write_blocked && self.peer_eof)
            || self.linger_until.is_some_and(|t| now >= t)
    }

    /// The interest the socket should have now.
    pub(crate) fn wanted_interest(&self) -> mio::Interest {
        if self.write_blocked {
            mio::Interest::READABLE | mio::Interest::WRITABLE
        } else {
            mio::Interest::READABLE
        }
    }

    /// When [`Conn::handle_timeout`] or the linger check next has work.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        match (self.proto.poll_timeout(), self.linger_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Drops every call (cancelling running ones) and forgets their deadlines.
    pub(crate) fn drop_calls(&mut self, dispatch: &mut Dispatch) {
        for (stream, call) in self.calls.drain() {
            if let Some(at) = call.deadline {
                dispatch.deadlines.remove(&(at, self.token, stream));
            }
        }
        self.buffered = 0;
    }

    // ----- Events -----

    fn on_event(&mut self, event: Event, dispatch: &mut Dispatch, now: Instant) {
        match event {
            Event::Headers {
                stream,
                headers,
                end_stream,
            } => {
                if self.calls.contains_key(&stream) {
                    // Trailers from the client: only their END_STREAM matters.
                    if end_stream {
                        self.end_of_request(stream, dispatch);
                    }
                } else {
                    self.start_call(stream, &headers, end_stream, dispatch, now);
                }
            }
            Event::Data {
                stream,
                data,
                end_stream,
            } => {
                // The whole request is collected before its handler runs (bounded by
                // `max_buffered_request_bytes`), so its credit goes back at once.
                self.proto.release_capacity(stream, data.len());
                self.on_data(stream, &data, end_stream, dispatch);
            }
            Event::Reset { stream, cause } => {
                if self.remove_call(stream, dispatch).is_some() {
                    log::debug!(
                        "connection {}: call on {stream} reset: {cause:?}",
                        self.token.0
                    );
                }
            }
            Event::Closed(err) => {
                if let Some(err) = err {
                    log::debug!("connection {} closed: {err}", self.token.0);
                }
                self.drop_calls(dispatch);
            }
            Event::Connected | Event::GoAway { .. } => {}
        }
    }

    fn start_call(
        &mut self,
        stream: StreamId,
        headers: &[Header],
        end_stream: bool,
        dispatch: &mut Dispatch,
        now: Instant,
    ) {
        let head = match call::parse_request_head(headers) {
            Ok(head) => head,
            Err(Refusal::Grpc(status)) => return self.send_status(stream, &status, end_stream),
            Err(Refusal::Http(code)) => return self.plain_http(stream, headers, code, end_stream),
        };
        let Some(handler) = dispatch.shared.route(&head.path).cloned() else {
            let status = Status::unimplemented(format!("unknown method {}", head.path));
            return self.send_status(stream, &status, end_stream);
        };
        let deadline = head.timeout.and_then(|t| now.checked_add(t));
        if let Some(at) = deadline {
            dispatch.deadlines.insert((at, self.token, stream));
        }
        let decoder = MessageDecoder::new(dispatch.shared.max_message_size);
        let call = Call {
            deadline,
            remote_done: false,
            phase: Phase::Receiving {
                head,
                handler,
                decoder,
                message: None,
                received: 0,
            },
        };
        self.calls.insert(stream, call);
        if end_stream {
            self.end_of_request(stream, dispatch);
        }
    }

    fn on_data(
        &mut self,
        stream: StreamId,
        data: &[u8],
        end_stream: bool,
        dispatch: &mut Dispatch,
    ) {
        let Some(call) = self.calls.get_mut(&stream) else {
            return;
        };
        let Phase::Receiving {
            decoder,
            message,
            received,
            ..
        } = &mut call.phase
        else {
            return;
        };
        // Bounded memory: requests not yet dispatched may hold this much of one
        // connection's bytes; a call that would go past it is refused.
        let limit = dispatch.shared.max_buffered_request_bytes;
        let mut failure = if self.buffered + data.len() > limit {
            Some(Status::resource_exhausted(format!(
                "connection is buffering more than {limit} bytes of requests"
            )))
        } else {
            *received += data.len();
            self.buffered += data.len();
            decoder.push(data).err()
        };
        while failure.is_none() {
            let Some(m) = decoder.next_message() else {
                break;
            };
            if message.is_some() {
                failure = Some(Status::unimplemented(
                    "more than one request message for a unary method",
                ));
            } else {
                *message = Some(m);
            }
        }
        if let Some(status) = failure {
            self.remove_call(stream, dispatch);
            return self.send_status(stream, &status, end_stream);
        }
        if end_stream {
            self.end_of_request(stream, dispatch);
        }
    }

    /// The client ended the request: dispatch it if it holds exactly one message.
    fn end_of_request(&mut self, stream: StreamId, dispatch: &mut Dispatch) {
        let Some(Call {
            deadline, phase, ..
        }) = self.take_call(stream)
        else {
            return;
        };
        let (head, handler, decoder, message) = match phase {
            Phase::Receiving {
                head,
                handler,
                decoder,
                message,
                ..
            } => (head, handler, decoder, message),
            running @ Phase::Running { .. } => {
                let call = Call {
                    deadline,
                    remote_done: true,
                    phase: running,
                };
                self.calls.insert(stream, call);
                return;
            }
        };
        let refusal = match (decoder.finish(), message) {
            (Err(status), _) => Err(status),
            (Ok(()), None) => Err(Status::unimplemented(
                "no request message for a unary method",
            )),
            (Ok(()), Some(message)) => Ok(message),
        };
        let message = match refusal {
            Ok(message) => message,
            Err(status) => {
                self.forget_deadline(stream, deadline, dispatch);
                return self.send_status(stream, &status, true);
            }
        };
        let (cancel, cancelled) = cancel_pair();
        let job = Job {
            conn: self.token,
            stream,
            handler,
            request: Request {
                path: head.path,
                metadata: head.metadata,
                message,
                deadline,
                cancel: cancelled,
            },
        };
        if !dispatch.submit(job) {
            self.forget_deadline(stream, deadline, dispatch);
            let status = Status::internal("the server has no worker left");
            return self.send_status(stream, &status, true);
        }
        let call = Call {
            deadline,
            remote_done: true,
            phase: Phase::Running { _cancel: cancel },
        };
        self.calls.insert(stream, call);
    }

    /// Takes a call out of the table, releasing the request bytes it buffered.
    fn take_call(&mut self, stream: StreamId) -> Option<Call> {
        let call = self.calls.remove(&stream)?;
        if let Phase::Receiving { received, .. } = &call.phase {
            self.buffered -= received;
        }
        Some(call)
    }

    fn remove_call(&mut self, stream: StreamId, dispatch: &mut Dispatch) -> Option<Call> {
        let call = self.take_call(stream)?;
        self.forget_deadline(stream, call.deadline, dispatch);
        Some(call)
    }

    fn forget_deadline(&self, stream: StreamId, at: Option<Instant>, dispatch: &mut Dispatch) {
        if let Some(at) = at {
            dispatch.deadlines.remove(&(at, self.token, stream));
        }
    }

    // ----- Answers -----

    /// Response headers, the one message, and trailers with OK.
    fn send_response(&mut self, stream: StreamId, response: &Response) {
        let mut body = Vec::new();
        call::encode_message(&response.message, &mut body);
        let ok = Status::new(Code::Ok, "");
        let sent = self
            .proto
            .send_headers(stream, call::response_headers(&response.headers), false)
            .and_then(|()| self.proto.send_data(stream, &body, false))
            .and_then(|()| {
                self.proto
                    .send_headers(stream, call::trailers(&ok, &response.trailers), true)
            });
        if let Err(e) = sent {
            log::debug!("connection {}: response not sent: {e}", self.token.0);
        }
    }

    /// A Trailers-Only answer with `status`. If the client is still sending, the
    /// stream is then reset with NO_ERROR: the answer is complete, stop sending
    /// (RFC 9113 section 8.1).
    fn send_status(&mut self, stream: StreamId, status: &Status, remote_done: bool) {
        let headers = call::trailers_only(status, &Metadata::new());
        if let Err(e) = self.proto.send_headers(stream, headers, true) {
            log::debug!("connection {}: status not sent: {e}", self.token.0);
        }
        if !remote_done {
            self.proto.reset_stream(stream, Reason::NO_ERROR);
        }
    }

    /// A request that is not gRPC: a GET gets a short text page, anything else the
    /// HTTP status `code`.
    fn plain_http(&mut self, stream: StreamId, headers: &[Header], code: u16, end_stream: bool) {
        let is_get = headers
            .iter()
            .any(|h| h.name == b":method" && h.value == b"GET");
        let sent = if is_get {
            let head = vec![
                Header::new(":status", "200"),
                Header::new("content-type", "text/plain; charset=utf-8"),
                Header::new("content-length", GET_BODY.len().to_string()),
            ];
            // The stream ends once the client's side ends too; no reset, which would
            // drop the queued body.
            self.proto
                .send_headers(stream, head, false)
                .and_then(|()| self.proto.send_data(stream, GET_BODY, true))
        } else {
            let head = vec![Header::new(":status", code.to_string())];
            let sent = self.proto.send_headers(stream, head, true);
            if !end_stream {
                self.proto.reset_stream(stream, Reason::NO_ERROR);
            }
            sent
        };
        if let Err(e) = sent {
            log::debug!("connection {}: HTTP answer not sent: {e}", self.token.0);
        }
    }
}
