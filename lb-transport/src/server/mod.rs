//! A small synchronous gRPC server with no async runtime: unary, server-streaming,
//! client-streaming and bidirectional calls.
//!
//! Built for tests, demos and an RLS server, on the same sans-IO HTTP/2
//! [`Connection`](crate::proto::Connection) as the client side.
//!
//! # Handlers
//!
//! | kind | register with | the handler |
//! |---|---|---|
//! | unary | [`ServerBuilder::unary`] | `Fn(Request) -> Result<Response, Status>` |
//! | server-streaming | [`ServerBuilder::server_streaming`] | `Fn(Vec<u8>, &mut ServerCall) -> Result<(), Status>` |
//! | client-streaming | [`ServerBuilder::client_streaming`] | `Fn(&mut ServerCall) -> Result<Vec<u8>, Status>` |
//! | bidirectional | [`ServerBuilder::bidi_streaming`] | `Fn(&mut ServerCall) -> Result<(), Status>` |
//!
//! The streaming kinds are thin wrappers of the bidirectional one: a
//! [`ServerCall`] to [`recv`](ServerCall::recv) request messages from and
//! [`send`](ServerCall::send) response messages to, and a status to return. A
//! unary handler gets its whole [`Request`] at once and returns a [`Response`].
//!
//! The standard health service (`grpc.health.v1.Health`, `Check` and `Watch`) is
//! [`health::HealthService`]: `HealthService::new().mount(builder)`.
//!
//! Load reports for clients' `weighted_round_robin` (ORCA, gRFC A51): per call with
//! [`Response::with_load_report`] or [`ServerCall::set_load_report`], out of band with
//! [`orca::OrcaService`]: `OrcaService::new().mount(builder)`.
//!
//! Channelz (gRFC A14): every server registers itself, its listener and its
//! connections in [`lb_core::channelz::registry`] ([`Server::channelz_id`]), and
//! [`channelz::ChannelzService`] serves that registry as `grpc.channelz.v1.Channelz`:
//! `ChannelzService::new().mount(builder)`.
//!
//! # Threads and data flow
//!
//! ```text
//!  clients ──TCP──> lb-server-io (mio)                            lb-server-worker-N
//!                   listener + every connection ─── Job ────────> run the handler
//!                   (sans-IO HTTP/2, per-stream    bounded        (catch_unwind)
//!                    call state, deadlines)        channel           │      ^
//!                          ^   │                                     │      │
//!                          │   └── request messages, cancellation ───┼─> ServerCall
//!                          │       (per-call queue, flow control)    │    (streaming
//!                          └──── Completion / Poke + mio Waker ──────┘     calls)
//! ```
//!
//! - The I/O thread owns the listener and every connection. It parses request heads,
//!   answers on its own what needs no handler (unknown methods, oversized messages,
//!   plain HTTP requests, deadlines), and hands the rest to the workers.
//! - A unary or server-streaming call is dispatched once its one request message
//!   is in: the I/O thread collects it (a unary call takes no other thread hop than
//!   the worker and back). A client-streaming or bidirectional call is dispatched
//!   when its headers arrive; its request messages reach the handler as they come.
//! - Workers run handlers. A handler that panics fails its call with INTERNAL; the
//!   worker carries on.
//! - **A streaming handler holds its worker for the whole call.** With `n` workers,
//!   `n` long streams leave none for other calls, which then wait. Size
//!   [`ServerBuilder::workers`] for the streams you expect.
//! - A call is *cancelled* when the client resets it, its deadline (`grpc-timeout`)
//!   passes, its connection ends, or the server shuts down. A unary handler can
//!   notice with [`Request::wait_cancelled`], a streaming one with the errors of
//!   [`ServerCall::recv`] and [`ServerCall::send`] or
//!   [`ServerCall::wait_cancelled`]; the result of a cancelled call is dropped.
//!
//! # Bounded memory
//!
//! Every queue between the threads is bounded:
//!
//! | queue | bound |
//! |---|---|
//! | jobs for the workers | `4 × workers` in the channel; the rest wait on the I/O thread, at most one per open stream (each connection's `max_concurrent_streams`) |
//! | the I/O thread's inbox (results, pokes, shutdown) | 1024 messages (senders block when full); a streaming call has at most one poke in flight |
//! | request bytes of unary and server-streaming calls being collected | [`max_buffered_request_bytes`](ServerBuilder::max_buffered_request_bytes) per connection |
//! | request messages of a streaming call not yet taken by its handler | one stream receive window (`ConnectionConfig::stream_window`) plus the one message being reassembled (at most [`max_message_size`](ServerBuilder::max_message_size)): credit goes back to the client only as the handler takes messages; these bytes also count towards `max_buffered_request_bytes` |
//! | response messages of a streaming call | 64 KiB queued by the handler ([`ServerCall::send`] blocks beyond it) plus 64 KiB waiting in the connection for flow-control credit, plus one message |
//!
//! So a slow handler stops its client through HTTP/2 flow control, and a client
//! that reads slowly stops its handler in `send`.
//!
//! # Shutdown
//!
//! [`Server::shutdown`] stops accepting, sends GOAWAY(NO_ERROR) on every connection
//! (calls under way finish, new streams are refused and the client may retry them
//! elsewhere), waits until the connections are done or the grace period is over, then
//! closes what is left, which cancels the calls still running (a streaming handler
//! waiting in `recv` or `send` returns at once), and joins every thread. Dropping a
//! [`Server`] does the same with no grace period. Nothing the server started
//! outlives it.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use lb_core::Status;
//! use lb_transport::server::{Response, Server, ServerCall};
//!
//! let server = Server::builder()
//!     .unary("/demo.Greeter/Hello", |req| {
//!         let mut reply = b"hello, ".to_vec();
//!         reply.extend_from_slice(&req.message);
//!         Ok(Response::new(reply))
//!     })
//!     .unary("/demo.Greeter/Fail", |_| Err(Status::unavailable("try later")))
//!     // One request, many responses.
//!     .server_streaming("/demo.Greeter/Countdown", |request, call: &mut ServerCall| {
//!         let from: u8 = request.first().copied().unwrap_or(3);
//!         for n in (0..=from).rev() {
//!             call.send(&[n])?;
//!         }
//!         Ok(())
//!     })
//!     // Many requests, one response.
//!     .client_streaming("/demo.Greeter/Count", |call: &mut ServerCall| {
//!         let mut total: u64 = 0;
//!         while let Some(message) = call.recv()? {
//!             total += message.len() as u64;
//!         }
//!         Ok(total.to_be_bytes().to_vec())
//!     })
//!     // Both directions at once.
//!     .bidi_streaming("/demo.Greeter/Chat", |call: &mut ServerCall| {
//!         while let Some(message) = call.recv()? {
//!             call.send(&message)?;
//!         }
//!         Ok(())
//!     })
//!     .workers(2)
//!     .bind("127.0.0.1:0")?;
//! assert_ne!(server.local_addr().port(), 0);
//! server.shutdown(Duration::from_secs(1));
//! # Ok::<(), std::io::Error>(())
//! ```

mod call;
pub mod channelz;
mod conn;
pub mod health;
mod io;
mod metrics;
pub mod orca;
mod threads;
mod worker;

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use lb_core::channelz::{
    self as cz, CallCounters, Entity, Registration, ServerSnapshot, Severity, Snapshot, Trace,
    WallAnchor,
};
use lb_core::metrics::{Metrics, MetricsRecorder, RecorderList};
use lb_core::{Metadata, Status};
use parking_lot::Mutex;

pub use crate::server::call::ServerCall;

use crate::driver::channelz::ListenSocket;
use crate::grpc::compression::Encoding;
use crate::grpc::message::DEFAULT_MAX_MESSAGE_LEN;
use crate::proto::ConnectionConfig;
use crate::server::io::IoLoop;
use crate::server::threads::Threads;
use crate::server::worker::{IoSender, ToIo};

/// A unary handler: one request message in, one response message (or a status) out.
type UnaryHandler = dyn Fn(Request) -> Result<Response, Status> + Send + Sync + 'static;

/// A streaming handler: the general form every streaming kind is made of.
type StreamHandler = dyn Fn(&mut ServerCall) -> Result<(), Status> + Send + Sync + 'static;

/// How a method is served.
#[derive(Clone)]
pub(crate) enum Route {
    /// The I/O thread collects the one request, then the handler runs.
    Unary(Arc<UnaryHandler>),
    /// The I/O thread collects the one request, then the handler streams.
    ServerStreaming(Arc<StreamHandler>),
    /// The handler runs from the request headers on; messages flow both ways.
    Streaming(Arc<StreamHandler>),
}

/// One unary call as a handler sees it.
pub struct Request {
    /// The method path, such as `/pkg.Service/Method`.
    pub path: String,
    /// The client's custom metadata (binary values decoded).
    pub metadata: Metadata,
    /// The serialized request message.
    pub message: Vec<u8>,
    /// When the client stops waiting (from `grpc-timeout`), if it said.
    pub deadline: Option<Instant>,
    /// The request message arrived compressed (the server decompressed it; the
    /// interop tests' `expect_compressed` checks this).
    pub compressed: bool,
    /// Disconnected when the call is cancelled; never carries a message.
    cancel: Receiver<Infallible>,
}

impl Request {
    /// A request that is never cancelled, for calling a handler directly (in a test,
    /// say).
    pub fn new(path: impl Into<String>, message: impl Into<Vec<u8>>) -> Self {
        Self {
            path: path.into(),
            metadata: Metadata::new(),
            message: message.into(),
            deadline: None,
            compressed: false,
            cancel: crossbeam_channel::never(),
        }
    }

    /// Whether the call was cancelled: the client reset it, its deadline passed, its
    /// connection ended or the server shut down. Its result will be dropped.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.cancel.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// Blocks until the call is cancelled (returns `true`) or `until` passes (returns
    /// `false`). A handler that waits for something should wait here, so that a
    /// cancelled call frees its worker at once.
    pub fn wait_cancelled(&self, until: Instant) -> bool {
        match self.cancel.recv_deadline(until) {
            Ok(never) => match never {},
            Err(RecvTimeoutError::Disconnected) => true,
            Err(RecvTimeoutError::Timeout) => false,
        }
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("path", &self.path)
            .field("metadata", &self.metadata)
            .field("message_len", &self.message.len())
            .field("deadline", &self.deadline)
            .field("compressed", &self.compressed)
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// A handler's successful answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// The serialized response message.
    pub message: Vec<u8>,
    /// Metadata sent with the response headers.
    pub headers: Metadata,
    /// Metadata sent with the trailers (after `grpc-status: 0`).
    pub trailers: Metadata,
    /// Compress the message with this encoding, if the client's
    /// `grpc-accept-encoding` lists it (else it goes uncompressed). `None` takes
    /// the server's [`response_compression`](ServerBuilder::response_compression).
    pub compression: Option<Encoding>,
}

impl Response {
    /// A response with `message` and no metadata.
    pub fn new(message: impl Into<Vec<u8>>) -> Self {
        Self {
            message: message.into(),
            ..Self::default()
        }
    }

    /// This response with a per-call ORCA load report (gRFC A51) in its trailers, as
    /// `endpoint-load-metrics-bin`: policies such as `weighted_round_robin` read it
    /// when the call completes.
    ///
    /// ```
    /// use lb_core::orca::{self, OrcaLoadReport};
    /// use lb_transport::server::Response;
    /// let report = OrcaLoadReport { application_utilization: 0.4, rps_fractional: 120.0, ..Default::default() };
    /// let response = Response::new(b"hi".to_vec()).with_load_report(&report);
    /// assert!(response.trailers.get_bin(orca::TRAILER).is_some());
    /// ```
    pub fn with_load_report(mut self, report: &lb_core::orca::OrcaLoadReport) -> Self {
        report.write_trailer(&mut self.trailers);
        self
    }
}

/// A server as channelz (gRFC A14) sees it: its calls, counted on the I/O thread
/// (relaxed atomics), its trace, its listener and its connections' socket ids.
pub(crate) struct ServerEntity {
    id: u64,
    pub(crate) calls: CallCounters,
    trace: Trace,
    listen_socket: u64,
    /// Live connections' socket ids (the I/O thread adds and removes them as it
    /// accepts and drops connections).
    pub(crate) sockets: Mutex<std::collections::BTreeSet<u64>>,
    /// Turns the I/O thread's `now` into wall-clock time.
    pub(crate) anchor: WallAnchor,
}

impl ServerEntity {
    /// A call started at `now` (the I/O thread's clock).
    pub(crate) fn call_started(&self, now: Instant) {
        self.calls.started(self.anchor.wall(now));
    }
}

impl Entity for ServerEntity {
    fn snapshot(&self) -> Snapshot {
        Snapshot::Server(ServerSnapshot {
            id: self.id,
            calls: self.calls.get(),
            trace: self.trace.snapshot(),
            listen_sockets: vec![self.listen_socket],
            sockets: self.sockets.lock().iter().copied().collect(),
        })
    }
}

/// What the I/O thread and the workers share, fixed at [`ServerBuilder::bind`].
pub(crate) struct Shared {
    /// The server's channelz entity.
    pub(crate) cz: Arc<ServerEntity>,
    routes: HashMap<String, Route>,
    max_message_size: usize,
    max_buffered_request_bytes: usize,
    response_compression: Option<Encoding>,
    config: ConnectionConfig,
    #[cfg(feature = "tls")]
    tls: Option<crate::driver::tls::TlsServerConfig>,
    /// gRFC A66's server metrics (`server/metrics.rs`).
    pub(crate) metrics: Metrics,
}

impl Shared {
    fn route(&self, path: &str) -> Option<&Route> {
        self.routes.get(path)
    }
}

/// Configures and starts a [`Server`]; made by [`Server::builder`].
pub struct ServerBuilder {
    routes: HashMap<String, Route>,
    workers: Option<usize>,
    max_message_size: usize,
    max_buffered_request_bytes: Option<usize>,
    response_compression: Option<Encoding>,
    config: ConnectionConfig,
    #[cfg(feature = "tls")]
    tls: Option<crate::driver::tls::TlsServerConfig>,
    metrics_recorders: Vec<Arc<dyn MetricsRecorder>>,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut paths: Vec<&str> = self.routes.keys().map(String::as_str).collect();
        paths.sort_unstable();
        f.debug_struct("ServerBuilder")
            .field("routes", &paths)
            .field("workers", &self.workers)
            .field("max_message_size", &self.max_message_size)
            .field("config", &self.config)
            .finish()
    }
}

impl ServerBuilder {
    /// Serves unary calls to `path` (`/pkg.Service/Method`) with `handler`: one
    /// request message in, one response message out. The request is collected
    /// before the handler runs. A later registration of the same path (of any
    /// kind) replaces the earlier one.
    ///
    /// # Examples
    ///
    /// ```
    /// use lb_transport::server::{Response, Server};
    ///
    /// let builder = Server::builder().unary("/demo.Echo/Unary", |req| {
    ///     Ok(Response::new(req.message))
    /// });
    /// # drop(builder);
    /// ```
    pub fn unary<F>(mut self, path: &str, handler: F) -> Self
    where
        F: Fn(Request) -> Result<Response, Status> + Send + Sync + 'static,
    {
        self.routes
            .insert(path.to_owned(), Route::Unary(Arc::new(handler)));
        self
    }

    /// Serves server-streaming calls to `path`: one request message (collected
    /// before the handler runs, like a unary call's) and any number of response
    /// messages, sent with [`ServerCall::send`]. A request without exactly one
    /// message fails with UNIMPLEMENTED before reaching the handler.
    ///
    /// # Examples
    ///
    /// ```
    /// use lb_transport::server::{Server, ServerCall};
    ///
    /// // Sends the request back once per byte it has.
    /// let builder = Server::builder().server_streaming(
    ///     "/demo.Echo/Repeat",
    ///     |request: Vec<u8>, call: &mut ServerCall| {
    ///         for _ in 0..request.len() {
    ///             call.send(&request)?;
    ///         }
    ///         Ok(())
    ///     },
    /// );
    /// # drop(builder);
    /// ```
    pub fn server_streaming<F>(mut self, path: &str, handler: F) -> Self
    where
        F: Fn(Vec<u8>, &mut ServerCall) -> Result<(), Status> + Send + Sync + 'static,
    {
        let handler = move |call: &mut ServerCall| {
            // The I/O thread dispatches the call with its one message queued.
            let request = call
                .recv()?
                .ok_or_else(|| Status::unimplemented("no request message"))?;
            handler(request, call)
        };
        self.routes
            .insert(path.to_owned(), Route::ServerStreaming(Arc::new(handler)));
        self
    }

    /// Serves client-streaming calls to `path`: the handler reads request messages
    /// with [`ServerCall::recv`] as they arrive and returns the one response
    /// message. It must not send messages itself (the call then fails with
    /// INTERNAL); response metadata goes through [`ServerCall::send_headers`] and
    /// [`ServerCall::set_trailers`].
    ///
    /// # Examples
    ///
    /// ```
    /// use lb_transport::server::{Server, ServerCall};
    ///
    /// // Answers with the number of request messages.
    /// let builder = Server::builder().client_streaming("/demo.Echo/Count", |call: &mut ServerCall| {
    ///     let mut n: u32 = 0;
    ///     while call.recv()?.is_some() {
    ///         n += 1;
    ///     }
    ///     Ok(n.to_be_bytes().to_vec())
    /// });
    /// # drop(builder);
    /// ```
    pub fn client_streaming<F>(mut self, path: &str, handler: F) -> Self
    where
        F: Fn(&mut ServerCall) -> Result<Vec<u8>, Status> + Send + Sync + 'static,
    {
        let handler = move |call: &mut ServerCall| {
            let response = handler(call)?;
            if call.messages_sent() > 0 {
                return Err(Status::internal(
                    "a client-streaming handler sent messages of its own",
                ));
            }
            call.send(&response)
        };
        self.routes
            .insert(path.to_owned(), Route::Streaming(Arc::new(handler)));
        self
    }

    /// Serves bidirectional-streaming calls to `path`: the handler starts as soon
    /// as the request headers arrive, reads request messages with
    /// [`ServerCall::recv`] and writes response messages with
    /// [`ServerCall::send`], in any order, and returns the call's status. This is
    /// the general form: the other kinds are built on it.
    ///
    /// # Examples
    ///
    /// ```
    /// use lb_transport::server::{Server, ServerCall};
    ///
    /// // Answers every request with its length, as it comes.
    /// let builder = Server::builder().bidi_streaming("/demo.Echo/Lengths", |call: &mut ServerCall| {
    ///     while let Some(message) = call.recv()? {
    ///         call.send(&(message.len() as u32).to_be_bytes())?;
    ///     }
    ///     Ok(())
    /// });
    /// # drop(builder);
    /// ```
    pub fn bidi_streaming<F>(mut self, path: &str, handler: F) -> Self
    where
        F: Fn(&mut ServerCall) -> Result<(), Status> + Send + Sync + 'static,
    {
        self.routes
            .insert(path.to_owned(), Route::Streaming(Arc::new(handler)));
        self
    }

    /// The number of worker threads that run handlers (at least 1). By default the
    /// available parallelism, at least 2.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n.max(1));
        self
    }

    /// Compresses response messages with `encoding` when the client's
    /// `grpc-accept-encoding` lists it, unless the handler chose otherwise
    /// ([`Response::compression`], [`ServerCall::set_compression`]). Off by default.
    /// Requests are decoded whatever this says (`gzip`, `deflate`, `identity`);
    /// another `grpc-encoding` is answered UNIMPLEMENTED.
    ///
    /// ```
    /// use lb_transport::grpc::compression::Encoding;
    /// use lb_transport::server::Server;
    /// let server = Server::builder()
    ///     .response_compression(Encoding::Gzip)
    ///     .bind("127.0.0.1:0")?;
    /// server.shutdown(std::time::Duration::from_secs(1));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn response_compression(mut self, encoding: Encoding) -> Self {
        self.response_compression = Some(encoding);
        self
    }

    /// The largest request message accepted; larger ones fail with
    /// RESOURCE_EXHAUSTED. 4 MiB by default.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// The most request bytes one connection may hold for calls not yet handed to a
    /// handler; a call that would go past it fails with RESOURCE_EXHAUSTED. This
    /// bounds what a client can make the server buffer however many streams it
    /// opens. Four times the largest message by default.
    pub fn max_buffered_request_bytes(mut self, bytes: usize) -> Self {
        self.max_buffered_request_bytes = Some(bytes);
        self
    }

    /// Records gRFC A66's server metrics (`grpc.server.call.started`,
    /// `grpc.server.call.duration`, `grpc.server.call.{sent,rcvd}_total_compressed_message_size`,
    /// labelled with the method and the status) into `recorder`; call it again to
    /// add more. Methods the server does not have are recorded as `other`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lb_core::metrics::InMemoryRecorder;
    /// use lb_transport::server::{Request, Response, Server};
    /// let recorder = Arc::new(InMemoryRecorder::new());
    /// let server = Server::builder()
    ///     .unary("/echo.Echo/Say", |req: Request| Ok(Response::new(req.message)))
    ///     .metrics_recorder(recorder.clone())
    ///     .bind("127.0.0.1:0")?;
    /// # server.shutdown(std::time::Duration::ZERO);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn metrics_recorder(mut self, recorder: Arc<dyn MetricsRecorder>) -> Self {
        self.metrics_recorders.push(recorder);
        self
    }

    /// The HTTP/2 settings and limits of every connection.
    pub fn connection_config(mut self, config: ConnectionConfig) -> Self {
        self.config = config;
        self
    }

    /// Serves TLS (ALPN `h2`) with this certificate and key instead of plaintext.
    /// Available with the `tls` feature.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls(mut self, tls: crate::driver::tls::TlsServerConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Binds `addr` (`127.0.0.1:0` picks a free port), starts the I/O thread and the
    /// workers, and returns at once.
    ///
    /// # Errors
    ///
    /// The address does not resolve or cannot be bound, or a thread cannot start.
    pub fn bind(self, addr: impl ToSocketAddrs) -> std::io::Result<Server> {
        let mut last_err = None;
        for addr in addr.to_socket_addrs()? {
            match std::net::TcpListener::bind(addr) {
                Ok(listener) => return self.start(listener),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "address resolved to nothing",
            )
        }))
    }

    fn start(self, listener: std::net::TcpListener) -> std::io::Result<Server> {
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let workers = self
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get().max(2)));
        let (listen, listen_registration) = ListenSocket::register(local_addr);
        let started_at = std::time::SystemTime::now();
        let entity = Arc::new(ServerEntity {
            id: cz::next_id(),
            calls: CallCounters::default(),
            trace: Trace::new(started_at),
            listen_socket: listen.id(),
            sockets: Mutex::new(std::collections::BTreeSet::new()),
            anchor: WallAnchor::new(Instant::now(), started_at),
        });
        entity.trace.event(
            started_at,
            Severity::Info,
            format!("server started on {local_addr} with {workers} workers"),
        );
        let weak: std::sync::Weak<dyn Entity> = Arc::downgrade(&entity) as _;
        let registration = cz::registry().register(entity.id, cz::Kind::Server, weak);
        let shared = Arc::new(Shared {
            cz: Arc::clone(&entity),
            routes: self.routes,
            max_message_size: self.max_message_size,
            max_buffered_request_bytes: self
                .max_buffered_request_bytes
                .unwrap_or(self.max_message_size.saturating_mul(4)),
            response_compression: self.response_compression,
            config: self.config,
            #[cfg(feature = "tls")]
            tls: self.tls,
            metrics: match self.metrics_recorders.len() {
                0 => Metrics::none(),
                1 => Metrics::new(self.metrics_recorders[0].clone(), ""),
                _ => Metrics::new(Arc::new(RecorderList(self.metrics_recorders)), ""),
            },
        });
        let (io_loop, to_io, jobs) =
            IoLoop::new(mio::net::TcpListener::from_std(listener), &shared, workers)?;
        let mut threads = Threads::new();
        let started = (|| {
            threads.spawn("lb-server-io".into(), move || io_loop.run())?;
            for n in 0..workers {
                let jobs = jobs.clone();
                let to_io = to_io.clone();
                threads.spawn(format!("lb-server-worker-{n}"), move || {
                    worker::run(&jobs, &to_io);
                })?;
            }
            Ok::<(), std::io::Error>(())
        })();
        drop(jobs);
        // On failure, dropping the server stops whatever did start.
        let server = Server {
            local_addr,
            to_io: Some(to_io),
            threads: Some(threads),
            channelz: ServerZ {
                entity,
                _listen: listen,
                _registrations: [registration, listen_registration],
            },
        };
        started?;
        log::debug!("gRPC server listening on {local_addr} with {workers} workers");
        Ok(server)
    }
}

/// A running gRPC server. Dropping it shuts it down at once; see
/// [`Server::shutdown`] for a graceful stop.
pub struct Server {
    local_addr: SocketAddr,
    to_io: Option<IoSender>,
    threads: Option<Threads>,
    /// Dropped after `Drop::drop` has joined the threads: the server leaves the
    /// channelz registry last.
    channelz: ServerZ,
}

/// A server's channelz entities, registered while the server lives.
struct ServerZ {
    entity: Arc<ServerEntity>,
    _listen: Arc<ListenSocket>,
    _registrations: [Registration; 2],
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A builder with no services, the default limits and a thread per core.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            routes: HashMap::new(),
            workers: None,
            max_message_size: DEFAULT_MAX_MESSAGE_LEN,
            max_buffered_request_bytes: None,
            response_compression: None,
            config: ConnectionConfig::default(),
            #[cfg(feature = "tls")]
            tls: None,
            metrics_recorders: Vec::new(),
        }
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's channelz id (gRFC A14): its entry in
    /// [`lb_core::channelz::registry`], which [`channelz::ChannelzService`] serves.
    ///
    /// ```
    /// use lb_core::channelz::{self, Snapshot};
    /// use lb_transport::server::Server;
    /// let server = Server::builder().bind("127.0.0.1:0")?;
    /// let Some(Snapshot::Server(s)) = channelz::registry().get(server.channelz_id()) else {
    ///     panic!("not registered");
    /// };
    /// assert_eq!((s.calls.started, s.listen_sockets.len()), (0, 1));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn channelz_id(&self) -> u64 {
        self.channelz.entity.id
    }

    /// The channelz id of the server's listening socket.
    pub fn channelz_listen_socket_id(&self) -> u64 {
        self.channelz.entity.listen_socket
    }

    /// Stops gracefully: no new connections; GOAWAY(NO_ERROR) on every connection so
    /// that calls under way finish and new streams are refused; waits until every
    /// connection is done or `grace` has passed; then closes the rest and joins every
    /// thread the server started.
    ///
    /// Calls still running when the connections close are cancelled (see
    /// [`Request::wait_cancelled`] and [`ServerCall`]): streaming handlers blocked
    /// in `recv` or `send` return at once. The join waits for every handler to
    /// return, so a handler that ignores cancellation delays it. Do not call this
    /// from a handler: it would wait for itself.
    ///
    /// # Panics
    ///
    /// If one of the server's threads panicked (a bug: handler panics are caught).
    pub fn shutdown(mut self, grace: Duration) {
        self.stop(grace);
    }

    fn stop(&mut self, grace: Duration) {
        let Some(threads) = self.threads.take() else {
            return;
        };
        self.channelz.entity.trace.event(
            std::time::SystemTime::now(),
            Severity::Info,
            format!("server stopping (grace {grace:?})"),
        );
        if let Some(to_io) = self.to_io.take() {
            // If the I/O thread is already gone, there is nothing to tell it.
            let _ = to_io.send(ToIo::Shutdown { grace });
        }
        threads.join();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}

    #[test]
    fn handles_are_send_and_sync() {
        assert_send_sync::<Server>();
        assert_send_sync::<ServerBuilder>();
        assert_send::<Request>();
        assert_send_sync::<Response>();
    }

    #[test]
    fn a_plain_request_is_never_cancelled() {
        let req = Request::new("/a/b", b"x".to_vec());
        assert!(!req.is_cancelled());
        assert!(!req.wait_cancelled(Instant::now()));
    }

    #[test]
    fn a_dropped_sender_cancels() {
        let (tx, rx) = crossbeam_channel::bounded::<Infallible>(0);
        let req = Request {
            cancel: rx,
            ..Request::new("/a/b", Vec::new())
        };
        assert!(!req.is_cancelled());
        drop(tx);
        assert!(req.is_cancelled());
        assert!(req.wait_cancelled(Instant::now() + Duration::from_secs(60)));
    }
}
