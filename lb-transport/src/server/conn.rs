//! One accepted connection: its socket, its sans-IO HTTP/2 state, and the state of
//! each call on it, from request head to response.
//!
//! A unary or server-streaming call is collected, then run; a client-streaming or
//! bidirectional call streams from its headers on:
//!
//! ```text
//!  HEADERS ─┬─> Receiving ── END_STREAM, one message ─┬─> Running (unary) ── result ──> answered
//!           │      │                                  └─> Streaming (server-streaming)
//!           │      └── refused (no such method, oversized,
//!           │          not one message, deadline, reset)
//!           └─> Streaming ── messages both ways ── trailers queued ──> (drained) answered
//!                  │
//!                  └── deadline, reset, bad request, connection end: cancelled
//! ```
//!
//! Everything that ends a call removes it from [`Conn::calls`]. Dropping a running
//! unary call's cancel sender cancels its request, and its late result finds no
//! call; dropping a streaming call's [`CallHandle`] cancels its [`ServerCall`].
//!
//! A streaming call's request credit is given back to the client only as its
//! handler takes messages (see [`crate::server::call`] for the bounds); the
//! collected calls' credit goes back at once, bounded by the connection's
//! `max_buffered_request_bytes` instead.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use lb_core::metrics::Metrics;
use lb_core::{Code, Metadata, Status};
use mio::Token;

use crate::driver::channelz::SocketZ;
use crate::driver::socket::{self, ReadOutcome};
use crate::driver::stream::Stream;
use crate::frame::{Reason, StreamId};
use crate::grpc::call::{self, Refusal, ServerRequestHead};
use crate::grpc::compression::Encoding;
use crate::grpc::message::MessageDecoder;
use crate::hpack::Header;
use crate::proto::{Connection, ConnectionConfig, Event, ResetCause, StreamError};
use crate::server::call::{CallHandle, CallShared, CallState, Out, Poker};
use crate::server::metrics::CallMetrics;
use crate::server::worker::{IoSender, Job, cancel_pair};
use crate::server::{
    Request, Response, Route, ServerCall, ServerEntity, Shared, StreamHandler, UnaryHandler,
};

/// How long a finished connection waits for its last bytes to leave and for the peer
/// to close, so that closing does not reset data the peer has not read yet.
const LINGER: Duration = Duration::from_secs(1);

/// The body of the answer to a plain HTTP GET.
const GET_BODY: &[u8] = b"lb-transport gRPC server: send gRPC requests (POST, application/grpc)\n";

/// How many times one pass may handle events, move streamed responses into the
/// connection and write them, so that one busy connection cannot starve the
/// others; the I/O thread comes back to it at once ([`Conn::again`]).
const PUMP_ROUNDS: usize = 8;

/// What every connection shares on the I/O thread: the routes, the workers' job
/// channel with its overflow queue, and the call deadlines.
pub(crate) struct Dispatch {
    pub(crate) shared: Arc<Shared>,
    jobs: Sender<Job>,
    /// Jobs that did not fit in the bounded channel, sent as workers free up. Bounded
    /// by the connections' MAX_CONCURRENT_STREAMS (one job per open stream at most).
    backlog: VecDeque<Job>,
    /// Every call with a deadline that has not ended, earliest first.
    pub(crate) deadlines: BTreeSet<(Instant, Token, StreamId)>,
    /// The I/O thread's inbox, for streaming calls to poke it.
    io: IoSender,
}

impl Dispatch {
    pub(crate) fn new(shared: Arc<Shared>, jobs: Sender<Job>, io: IoSender) -> Self {
        Self {
            shared,
            jobs,
            backlog: VecDeque::new(),
            deadlines: BTreeSet::new(),
            io,
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
            if job.is_cancelled() {
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

/// A collected call's handler.
enum Collect {
    Unary(Arc<UnaryHandler>),
    ServerStreaming(Arc<StreamHandler>),
}

/// Where a call is.
enum Phase {
    /// Collecting the one request message of a unary or server-streaming call.
    Receiving {
        head: ServerRequestHead,
        handler: Collect,
        decoder: MessageDecoder,
        message: Option<Vec<u8>>,
        /// Request bytes received so far, counted in [`Conn::buffered`].
        received: usize,
    },
    /// A worker has (or will have) the unary request. Dropping the sender cancels it.
    Running {
        _cancel: Sender<Infallible>,
        /// The client's `grpc-accept-encoding`, for compressing the response.
        accept_encoding: Vec<u8>,
    },
    /// A streaming call: its handler runs (or will), messages flow both ways.
    Streaming(Box<Streaming>),
}

/// The I/O thread's side of a streaming call.
struct Streaming {
    /// The state shared with the handler; dropping it cancels the call.
    handle: CallHandle,
    /// Reassembles request messages.
    decoder: MessageDecoder,
    /// Request bytes received and not yet taken by the handler (queued messages
    /// and the partial one), counted in [`Conn::buffered`].
    buffered: usize,
    /// Response headers were handed to the connection.
    headers_sent: bool,
    /// Messages are decompressed into the handler's queue only while it holds
    /// fewer decompressed bytes than this (the stream window).
    inbox_limit: usize,
    /// The client ended its side; the handler hears of it once every message
    /// left the decoder.
    end_seen: bool,
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
    /// Streaming calls whose handlers queued responses that may move into the
    /// connection now (not those refused until [`Event::SendReady`]).
    sending: HashSet<StreamId>,
    /// Request bytes held by calls not yet dispatched and by streaming calls'
    /// queues (bounded by the server's `max_buffered_request_bytes`).
    buffered: usize,
    /// The interest the socket is registered with.
    pub(crate) interest: mio::Interest,
    /// The last transmit could not write everything: wait until writable.
    write_blocked: bool,
    /// The last read stopped at its budget: read again without waiting for an event.
    pub(crate) read_again: bool,
    /// The last drive stopped at its budget with responses still moving: drive
    /// again without waiting for an event.
    pub(crate) again: bool,
    /// The peer closed its side.
    peer_eof: bool,
    /// The socket failed: drop it.
    broken: bool,
    /// We closed our sending side after the connection finished.
    fin_sent: bool,
    /// Once the connection has finished: the latest moment to drop the socket.
    linger_until: Option<Instant>,
    /// The connection's channelz socket.
    pub(crate) cz: SocketZ,
    /// The server's channelz entity, which counts calls.
    server: Arc<ServerEntity>,
    /// gRFC A66's server metrics of the calls on this connection.
    call_metrics: CallMetrics,
}

impl Conn {
    pub(crate) fn new(
        token: Token,
        stream: Stream,
        config: ConnectionConfig,
        cz: SocketZ,
        server: Arc<ServerEntity>,
        now: Instant,
        metrics: Metrics,
    ) -> Self {
        Self {
            token,
            stream,
            proto: Connection::server(config, now),
            out: Vec::new(),
            out_pos: 0,
            calls: HashMap::new(),
            sending: HashSet::new(),
            buffered: 0,
            interest: mio::Interest::READABLE,
            write_blocked: false,
            read_again: false,
            again: false,
            peer_eof: false,
            broken: false,
            fin_sent: false,
            linger_until: None,
            cz,
            server,
            call_metrics: CallMetrics::new(metrics),
        }
    }

    // ----- Input -----

    /// Reads what the socket has, up to the per-pass budget. `short_read_drains`:
    /// the readiness edge that brought us here reported no close or error, so a
    /// short read of a plain TCP socket may end the pass (see
    /// [`read_into`](crate::driver::socket::read_into)).
    pub(crate) fn read(&mut self, scratch: &mut [u8], short_read_drains: bool, now: Instant) {
        self.read_again = false;
        if self.broken || self.peer_eof {
            return;
        }
        let drains = short_read_drains && self.stream.short_read_drains();
        match socket::read_into(&mut self.stream, &mut self.proto, scratch, drains, now) {
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

    /// Ends the connection now: GOAWAY, every call dropped (cancelled).
    pub(crate) fn close(&mut self, dispatch: &mut Dispatch) {
        self.proto.close();
        self.drop_calls(dispatch, "the server closed the connection");
    }

    /// A unary handler's result arrived. Dropped if its call already ended.
    pub(crate) fn complete(
        &mut self,
        stream: StreamId,
        result: Result<Response, Status>,
        dispatch: &mut Dispatch,
    ) {
        let Some(call) = self.remove_call(stream, dispatch) else {
            return;
        };
        let Phase::Running {
            accept_encoding, ..
        } = &call.phase
        else {
            debug_assert!(false, "a unary result for a call that is not running");
            return;
        };
        let response = match result {
            Ok(response) if u32::try_from(response.message.len()).is_err() => Err(
                Status::internal("response message is larger than gRPC allows"),
            ),
            other => other,
        };
        match response {
            Ok(response) => {
                let preferred = response
                    .compression
                    .or(dispatch.shared.response_compression);
                let encoding = match preferred {
                    Some(e) if e.accepted_by(accept_encoding) => e,
                    _ => Encoding::Identity,
                };
                self.send_response(stream, &response, encoding);
            }
            Err(status) => self.send_status(stream, &status, call.remote_done),
        }
    }

    /// A streaming call's handler queued something or took messages: settle its
    /// request credit now; its responses move in the next [`Conn::drive`].
    /// Messages that waited compressed for room in the handler's queue move in.
    pub(crate) fn poke(&mut self, stream: StreamId, dispatch: &mut Dispatch) {
        let Some(Call {
            phase: Phase::Streaming(st),
            ..
        }) = self.calls.get_mut(&stream)
        else {
            return;
        };
        let shared = Arc::clone(&st.handle.0);
        let mut state = shared.lock();
        state.io_notified = false;
        settle_credit(&mut self.proto, stream, st, &mut state, &mut self.buffered);
        let decoded = decode_into_inbox(st, &mut state, &mut self.cz);
        settle_credit(&mut self.proto, stream, st, &mut state, &mut self.buffered);
        drop(state);
        self.sending.insert(stream);
        match decoded {
            Ok(true) => shared.notify(),
            Ok(false) => {}
            Err(status) => self.fail_call(stream, status, dispatch),
        }
    }

    /// A call deadline passed: DEADLINE_EXCEEDED, unless the call already ended.
    pub(crate) fn expire(&mut self, stream: StreamId, dispatch: &mut Dispatch) {
        let status = Status::deadline_exceeded("deadline exceeded before the call completed");
        self.fail_call(stream, status, dispatch);
    }

    // ----- Driving -----

    /// Handles every event, moves streamed responses into the connection and
    /// writes what can be written, and repeats while writing produced new events (a
    /// drained connection finishing, room for a stream's responses), a bounded
    /// number of times.
    pub(crate) fn drive(&mut self, dispatch: &mut Dispatch, now: Instant) {
        self.again = false;
        let mut rounds = 0;
        loop {
            while let Some(event) = self.proto.poll_event() {
                self.on_event(event, dispatch, now);
            }
            self.pump_output(dispatch);
            self.transmit(now);
            // Writing may finish the connection, or make room for streams that
            // were refused (SendReady).
            let Some(event) = self.proto.poll_event() else {
                break;
            };
            self.on_event(event, dispatch, now);
            rounds += 1;
            if rounds == PUMP_ROUNDS {
                // Enough for one pass: the I/O thread comes back at once.
                self.again = true;
                break;
            }
        }
        self.cz.sync(&self.proto, &self.stream, now);
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

    /// Drops every call (cancelling running ones, streaming handlers with
    /// CANCELLED and `why`) and forgets their deadlines.
    pub(crate) fn drop_calls(&mut self, dispatch: &mut Dispatch, why: &str) {
        self.call_metrics.end_all(&Status::cancelled(why));
        for (stream, call) in self.calls.drain() {
            self.server.calls.finished(false);
            if let Some(at) = call.deadline {
                dispatch.deadlines.remove(&(at, self.token, stream));
            }
            if let Phase::Streaming(st) = &call.phase {
                st.handle.0.cancel(Status::cancelled(why));
            }
        }
        self.sending.clear();
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
            } => self.on_data(stream, &data, end_stream, dispatch),
            Event::Reset { stream, cause } => {
                let reset = Status::cancelled("the stream was reset");
                self.call_metrics.end(stream, &reset);
                if let Some(call) = self.remove_call(stream, dispatch) {
                    self.server.calls.finished(false);
                    log::debug!(
                        "connection {}: call on {stream} reset: {cause:?}",
                        self.token.0
                    );
                    if let Phase::Streaming(st) = &call.phase {
                        let status = match cause {
                            ResetCause::Peer(reason) => Status::cancelled(format!(
                                "the client cancelled the call ({reason})"
                            )),
                            ResetCause::Connection(err) => {
                                Status::cancelled(format!("the connection ended: {err}"))
                            }
                            other => Status::cancelled(format!("the stream ended: {other:?}")),
                        };
                        st.handle.0.cancel(status);
                    }
                }
            }
            Event::Closed(err) => {
                if let Some(err) = &err {
                    log::debug!("connection {} closed: {err}", self.token.0);
                }
                self.drop_calls(dispatch, "the connection closed");
            }
            Event::SendReady { stream } => {
                // Room again for a stream whose responses were refused.
                if self.calls.contains_key(&stream) {
                    self.sending.insert(stream);
                }
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
            Err(Refusal::Grpc(status)) => {
                self.server.call_started(now);
                return self.send_status(stream, &status, end_stream);
            }
            Err(Refusal::Http(code)) => return self.plain_http(stream, headers, code, end_stream),
        };
        self.server.call_started(now);
        let route = dispatch.shared.route(&head.path).cloned();
        self.call_metrics.start(stream, &head.path, route.is_some());
        let Some(route) = route else {
            let status = Status::unimplemented(format!("unknown method {}", head.path));
            return self.send_status(stream, &status, end_stream);
        };
        let deadline = head.timeout.and_then(|t| now.checked_add(t));
        if let Some(at) = deadline {
            dispatch.deadlines.insert((at, self.token, stream));
        }
        let handler = match route {
            Route::Unary(handler) => Collect::Unary(handler),
            Route::ServerStreaming(handler) => Collect::ServerStreaming(handler),
            Route::Streaming(handler) => {
                let shared = Arc::new(CallShared::default());
                self.start_streaming(stream, head, deadline, handler, shared, dispatch);
                if end_stream {
                    self.end_of_request(stream, dispatch);
                }
                return;
            }
        };
        let mut decoder = MessageDecoder::new(dispatch.shared.max_message_size);
        decoder.set_encoding(Some(head.encoding));
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

    /// Hands a streaming call to the workers (its deadline is already registered).
    fn start_streaming(
        &mut self,
        stream: StreamId,
        head: ServerRequestHead,
        deadline: Option<Instant>,
        handler: Arc<StreamHandler>,
        shared: Arc<CallShared>,
        dispatch: &mut Dispatch,
    ) {
        let remote_done = shared.lock().remote_done;
        let poker = Poker {
            io: dispatch.io.clone(),
            conn: self.token,
            stream,
        };
        let mut decoder = MessageDecoder::new(dispatch.shared.max_message_size);
        decoder.set_encoding(Some(head.encoding));
        let mut call = ServerCall::new(
            head.path,
            head.metadata,
            deadline,
            Arc::clone(&shared),
            poker,
        );
        call.negotiate(head.accept_encoding, dispatch.shared.response_compression);
        if !dispatch.submit(Job::Streaming { handler, call }) {
            self.forget_deadline(stream, deadline, dispatch);
            let status = Status::internal("the server has no worker left");
            return self.send_status(stream, &status, remote_done);
        }
        let streaming = Streaming {
            handle: CallHandle(shared),
            decoder,
            buffered: 0,
            headers_sent: false,
            inbox_limit: usize::try_from(dispatch.shared.config.stream_window)
                .unwrap_or(usize::MAX),
            end_seen: remote_done,
        };
        let call = Call {
            deadline,
            remote_done,
            phase: Phase::Streaming(Box::new(streaming)),
        };
        self.calls.insert(stream, call);
    }

    fn on_data(
        &mut self,
        stream: StreamId,
        data: &[u8],
        end_stream: bool,
        dispatch: &mut Dispatch,
    ) {
        self.call_metrics.received(stream, data.len());
        match self.calls.get(&stream).map(|c| &c.phase) {
            Some(Phase::Streaming(_)) => self.stream_data(stream, data, end_stream, dispatch),
            _ => {
                // A collected request is bounded by `max_buffered_request_bytes`
                // instead, so its credit goes back at once (and so does that of a
                // stream with no call).
                self.proto.release_capacity(stream, data.len());
                self.collect_data(stream, data, end_stream, dispatch);
            }
        }
    }

    /// Data for a call being collected.
    fn collect_data(
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
            Some(over_limit(limit))
        } else {
            *received += data.len();
            self.buffered += data.len();
            decoder.push(data).err()
        };
        while failure.is_none() {
            let m = match decoder.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            self.cz.received(1);
            if message.is_some() {
                failure = Some(Status::unimplemented(
                    "more than one request message for a method that takes one",
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

    /// Data for a streaming call: messages go to the handler's queue, and their
    /// credit is held until the handler takes them.
    fn stream_data(
        &mut self,
        stream: StreamId,
        data: &[u8],
        end_stream: bool,
        dispatch: &mut Dispatch,
    ) {
        let limit = dispatch.shared.max_buffered_request_bytes;
        let Some(call) = self.calls.get_mut(&stream) else {
            return;
        };
        let Phase::Streaming(st) = &mut call.phase else {
            return;
        };
        call.remote_done |= end_stream;
        let n = data.len();
        let shared = Arc::clone(&st.handle.0);
        let mut state = shared.lock();
        // What the handler took since the last look no longer counts.
        settle_credit(&mut self.proto, stream, st, &mut state, &mut self.buffered);
        let mut failure = if self.buffered + n > limit {
            Some(over_limit(limit))
        } else {
            self.buffered += n;
            st.buffered += n;
            st.decoder.push(data).err()
        };
        if failure.is_none() {
            state.held += n;
            st.end_seen |= end_stream;
            let news = match decode_into_inbox(st, &mut state, &mut self.cz) {
                Ok(news) => news,
                Err(e) => {
                    failure = Some(e);
                    false
                }
            };
            settle_credit(&mut self.proto, stream, st, &mut state, &mut self.buffered);
            drop(state);
            if news {
                shared.notify();
            }
        } else {
            drop(state);
        }
        if let Some(status) = failure {
            self.fail_call(stream, status, dispatch);
        }
    }

    /// The client ended its side of the stream. A collected request is dispatched
    /// if it holds exactly one message; a streaming handler sees the end.
    fn end_of_request(&mut self, stream: StreamId, dispatch: &mut Dispatch) {
        let Some(call) = self.calls.get_mut(&stream) else {
            return;
        };
        match &mut call.phase {
            Phase::Receiving { .. } => {}
            Phase::Running { .. } => {
                call.remote_done = true;
                return;
            }
            Phase::Streaming(st) => {
                call.remote_done = true;
                st.end_seen = true;
                let shared = Arc::clone(&st.handle.0);
                let decoded = decode_into_inbox(st, &mut shared.lock(), &mut self.cz);
                shared.notify();
                if let Err(status) = decoded {
                    self.fail_call(stream, status, dispatch);
                }
                return;
            }
        }
        let Some(Call {
            deadline,
            phase:
                Phase::Receiving {
                    head,
                    handler,
                    decoder,
                    message,
                    ..
                },
            ..
        }) = self.take_call(stream)
        else {
            return;
        };
        let compressed = decoder.last_was_compressed();
        let refusal = match (decoder.finish(), message) {
            (Err(status), _) => Err(status),
            (Ok(()), None) => Err(Status::unimplemented(
                "no request message for a method that takes one",
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
        let handler = match handler {
            Collect::Unary(handler) => handler,
            Collect::ServerStreaming(handler) => {
                let shared = Arc::new(CallShared::default());
                {
                    let mut state = shared.lock();
                    state.push_message(message, 0, compressed);
                    state.remote_done = true;
                }
                return self.start_streaming(stream, head, deadline, handler, shared, dispatch);
            }
        };
        let (cancel, cancelled) = cancel_pair();
        let job = Job::Unary {
            conn: self.token,
            stream,
            handler,
            request: Request {
                path: head.path,
                metadata: head.metadata,
                message,
                deadline,
                compressed,
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
            phase: Phase::Running {
                _cancel: cancel,
                accept_encoding: head.accept_encoding,
            },
        };
        self.calls.insert(stream, call);
    }

    /// Ends a call early with `status`: the client gets it (or a reset), and a
    /// streaming handler sees it from then on.
    fn fail_call(&mut self, stream: StreamId, status: Status, dispatch: &mut Dispatch) {
        let Some(call) = self.remove_call(stream, dispatch) else {
            return;
        };
        match &call.phase {
            Phase::Streaming(st) => {
                self.server.calls.finished(false);
                self.call_metrics.end(stream, &status);
                st.handle.0.cancel(status.clone());
                if st.headers_sent && self.proto.send_buffered(stream) > 0 {
                    // Responses are queued ahead of where the status would go.
                    self.proto.reset_stream(stream, Reason::CANCEL);
                    return;
                }
                let headers = if st.headers_sent {
                    call::trailers(&status, &Metadata::new())
                } else {
                    call::trailers_only(&status, &Metadata::new())
                };
                if let Err(e) = self.proto.send_headers(stream, headers, true) {
                    log::debug!("connection {}: status not sent: {e}", self.token.0);
                }
                if !call.remote_done {
                    self.proto.reset_stream(stream, Reason::NO_ERROR);
                }
            }
            _ => self.send_status(stream, &status, call.remote_done),
        }
    }

    /// Takes a call out of the table, releasing the request bytes it buffered.
    fn take_call(&mut self, stream: StreamId) -> Option<Call> {
        let call = self.calls.remove(&stream)?;
        match &call.phase {
            Phase::Receiving { received, .. } => self.buffered -= received,
            Phase::Streaming(st) => {
                self.buffered -= st.buffered;
                self.sending.remove(&stream);
            }
            Phase::Running { .. } => {}
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

    // ----- Streamed responses -----

    /// Moves what streaming handlers queued into the connection, as far as each
    /// stream has room. Returns whether anything moved.
    fn pump_output(&mut self, dispatch: &mut Dispatch) -> bool {
        if self.sending.is_empty() {
            return false;
        }
        let streams: Vec<StreamId> = self.sending.iter().copied().collect();
        let mut moved = false;
        for stream in streams {
            moved |= self.pump_stream(stream, dispatch);
        }
        moved
    }

    /// Moves one streaming call's queued responses into the connection: headers,
    /// then messages until the connection's queue for the stream is full
    /// ([`StreamError::Blocked`]; [`Event::SendReady`] brings the stream back),
    /// then the trailers, which end the call. Wakes the handler when room was made.
    fn pump_stream(&mut self, stream: StreamId, dispatch: &mut Dispatch) -> bool {
        let Some(Call {
            phase: Phase::Streaming(st),
            remote_done,
            ..
        }) = self.calls.get_mut(&stream)
        else {
            self.sending.remove(&stream);
            return false;
        };
        let remote_done = *remote_done;
        let shared = Arc::clone(&st.handle.0);
        let mut state = shared.lock();
        let mut moved = false;
        let mut freed = false;
        let mut blocked = false;
        let mut finished = false;
        let mut status_ok = false;
        let mut gone = None;
        while let Some(out) = state.outbound.pop_front() {
            let sent = match out {
                Out::Headers(metadata, encoding) => {
                    st.headers_sent = true;
                    self.proto.send_headers(
                        stream,
                        call::response_headers(&metadata, encoding),
                        false,
                    )
                }
                Out::Message(wire) => {
                    let headers = if st.headers_sent {
                        Ok(())
                    } else {
                        st.headers_sent = true;
                        // `ServerCall::send` queues headers first; this is a
                        // fallback, and its messages are uncompressed.
                        let headers = call::response_headers(&Metadata::new(), Encoding::Identity);
                        self.proto.send_headers(stream, headers, false)
                    };
                    match headers.and_then(|()| self.proto.send_data(stream, &wire, false)) {
                        Ok(()) => {
                            self.call_metrics.sent(stream, wire.len());
                            state.out_bytes -= wire.len();
                            freed = true;
                            self.cz.sent(1);
                            Ok(())
                        }
                        Err(StreamError::Blocked(_)) => {
                            state.outbound.push_front(Out::Message(wire));
                            blocked = true;
                            break;
                        }
                        Err(e) => Err(e),
                    }
                }
                Out::Trailers(status, metadata) => {
                    self.call_metrics.end(stream, &status);
                    let headers = if st.headers_sent {
                        call::trailers(&status, &metadata)
                    } else {
                        call::trailers_only(&status, &metadata)
                    };
                    finished = true;
                    status_ok = status.code() == Code::Ok;
                    self.proto.send_headers(stream, headers, true)
                }
            };
            if let Err(e) = sent {
                gone = Some(e);
                break;
            }
            moved = true;
            if finished {
                break;
            }
        }
        let idle = state.outbound.is_empty();
        drop(state);
        if freed {
            shared.notify();
        }
        if let Some(e) = gone {
            log::debug!("connection {}: response not sent: {e}", self.token.0);
            let status = Status::cancelled("the stream closed");
            self.call_metrics.end(stream, &status);
            if let Some(call) = self.remove_call(stream, dispatch) {
                self.server.calls.finished(false);
                if let Phase::Streaming(st) = &call.phase {
                    st.handle.0.cancel(status);
                }
            }
        } else if finished {
            // The connection sends the trailers after the queued data. A client still
            // sending is told to stop (RFC 9113 section 8.1) if the trailers are
            // already on their way; otherwise it stops when it reads them.
            if self.remove_call(stream, dispatch).is_some() {
                self.server.calls.finished(status_ok);
            }
            if !remote_done && self.proto.send_buffered(stream) == 0 {
                self.proto.reset_stream(stream, Reason::NO_ERROR);
            }
        } else if idle || blocked {
            self.sending.remove(&stream);
        }
        moved
    }

    // ----- Answers -----

    /// Response headers, the one message, and trailers with OK.
    fn send_response(&mut self, stream: StreamId, response: &Response, encoding: Encoding) {
        self.server.calls.finished(true);
        self.cz.sent(1);
        let mut body = Vec::new();
        call::encode_message(encoding, &response.message, &mut body);
        let ok = Status::new(Code::Ok, "");
        self.call_metrics.sent(stream, body.len());
        self.call_metrics.end(stream, &ok);
        let sent = self
            .proto
            .send_headers(
                stream,
                call::response_headers(&response.headers, encoding),
                false,
            )
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
        self.server.calls.finished(status.code() == Code::Ok);
        self.call_metrics.end(stream, status);
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
            .any(|h| h.name == b":method"[..] && h.value == b"GET"[..]);
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

/// Moves the complete request messages of a streaming call from its decoder into
/// its handler's queue, decompressing each, while the queue holds fewer
/// decompressed bytes than the call's `inbox_limit`: the rest wait compressed
/// (their credit held) until the handler takes messages. Once the client has
/// ended its side and every message left the decoder, the handler is told.
/// Returns whether the handler has news.
fn decode_into_inbox(
    st: &mut Streaming,
    state: &mut CallState,
    cz: &mut SocketZ,
) -> Result<bool, Status> {
    let mut news = false;
    let mut drained = false;
    while state.inbox_bytes < st.inbox_limit {
        match st.decoder.next_message()? {
            Some(message) => {
                let (wire_len, compressed) =
                    (st.decoder.last_wire_len(), st.decoder.last_was_compressed());
                state.push_message(message, wire_len, compressed);
                cz.received(1);
                news = true;
            }
            None => {
                drained = true;
                break;
            }
        }
    }
    if st.end_seen && drained && !state.remote_done {
        st.decoder.finish()?;
        state.remote_done = true;
        news = true;
    }
    Ok(news)
}

/// The refusal of a call that would take the connection past its
/// `max_buffered_request_bytes`.
fn over_limit(limit: usize) -> Status {
    Status::resource_exhausted(format!(
        "connection is buffering more than {limit} bytes of requests"
    ))
}

/// Accounts for the request bytes a streaming handler took since the last look,
/// and gives the client back the credit it may have: all that is held once the
/// handler's queue is empty (the partial message then needs the rest of its
/// bytes), else as much as was taken. So at most one stream window of messages
/// waits in the queue, plus the message being reassembled.
fn settle_credit(
    proto: &mut Connection,
    stream: StreamId,
    st: &mut Streaming,
    state: &mut CallState,
    conn_buffered: &mut usize,
) {
    let taken = std::mem::take(&mut state.taken).min(st.buffered);
    st.buffered -= taken;
    *conn_buffered -= taken;
    // Messages waiting compressed in the decoder keep their credit held too.
    let release = if state.inbox_is_empty() && !st.decoder.has_message() {
        state.held
    } else {
        state.held.min(taken)
    };
    state.held -= release;
    proto.release_capacity(stream, release);
}
