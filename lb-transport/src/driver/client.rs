//! The client transport: one mio I/O thread serving many HTTP/2 connections, behind
//! lb-core's [`Transport`] trait.
//!
//! ```text
//!  any thread                              I/O thread ("lb-io")
//!  ──────────                              ────────────────────
//!  H2Transport::connect ──Command──┐       mio Poll: sockets + Waker
//!  Connection::start_call ─Command─┼──> commands drained on wake
//!  Connection::close ──────Command─┘       sans-IO proto::Connection per socket
//!                                          events ──> ConnectionEvents callback
//!                                          results ─> CallCompletion callbacks
//! ```

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use lb_core::transport::{
    CallCompletion, CallError, CallRequest, ConnectOptions, ConnectionEvent, ConnectionEvents,
};
use lb_core::{Address, Connection, Status, Transport};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;

use crate::driver::proxy::{self, ProxyMode, ProxyReply};
use crate::driver::socket::{self, ReadOutcome};
use crate::driver::stream::Stream;
#[cfg(feature = "tls")]
use crate::driver::tls::TlsConfig;
use crate::frame::{Reason, StreamId};
use crate::grpc::call::{self, ClientCall, RequestHead};
use crate::grpc::message::DEFAULT_MAX_MESSAGE_LEN;
use crate::proto::{self, ConnectionConfig, Event, OpenError};

const WAKER: Token = Token(usize::MAX);

/// Settings of an [`H2Transport`].
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// HTTP/2 settings, limits and keepalive of every connection.
    pub connection: ConnectionConfig,
    /// The largest response message accepted.
    pub max_message_size: usize,
    /// Which HTTP CONNECT proxy, if any, connections go through.
    pub proxy: ProxyMode,
    /// TLS for every connection (`https`); `None` is plaintext (`http`).
    #[cfg(feature = "tls")]
    pub tls: Option<TlsConfig>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            connection: ConnectionConfig::default(),
            max_message_size: DEFAULT_MAX_MESSAGE_LEN,
            proxy: ProxyMode::FromEnv,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

/// Everything the I/O thread needs to open one connection.
struct ConnectSpec {
    id: u64,
    addr: SocketAddr,
    /// `host:port` to ask the proxy to connect to, when `addr` is a proxy.
    tunnel_to: Option<String>,
    authority: String,
    user_agent: String,
    deadline: Instant,
    events: ConnectionEvents,
}

enum Command {
    Connect(ConnectSpec),
    Call {
        id: u64,
        call: CallRequest,
        done: CallCompletion,
    },
    Close {
        id: u64,
    },
    Shutdown,
}

/// A command sender that wakes the I/O thread after each push.
#[derive(Clone)]
struct Handle {
    tx: Sender<Command>,
    waker: Arc<Waker>,
}

impl Handle {
    /// Sends `cmd`; gives it back if the I/O thread is gone.
    fn send(&self, cmd: Command) -> Result<(), Box<Command>> {
        self.tx.send(cmd).map_err(|e| Box::new(e.0))?;
        if let Err(e) = self.waker.wake() {
            log::warn!("waking the I/O thread failed: {e}");
        }
        Ok(())
    }
}

/// An HTTP/2 gRPC transport: many connections on one I/O thread.
///
/// Dropping the transport closes every connection (calls under way end with
/// UNAVAILABLE) and joins its thread.
///
/// # Examples
///
/// ```no_run
/// use std::sync::Arc;
/// use lb_transport::driver::client::{H2Transport, TransportConfig};
/// let transport = Arc::new(H2Transport::new(TransportConfig::default())?);
/// // Hand `transport` to a channel as its `Arc<dyn lb_core::Transport>`.
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct H2Transport {
    handle: Handle,
    proxy: ProxyMode,
    keepalive: Arc<KeepaliveTime>,
    next_id: AtomicU64,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl H2Transport {
    /// Starts the I/O thread.
    ///
    /// # Errors
    ///
    /// The poller or the thread could not be created.
    pub fn new(config: TransportConfig) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let proxy = config.proxy.clone();
        let keepalive = Arc::new(KeepaliveTime::new(&config.connection));
        let loop_keepalive = keepalive.clone();
        let thread = std::thread::Builder::new()
            .name("lb-io".into())
            .spawn(move || IoLoop::new(poll, rx, config, loop_keepalive).run())?;
        Ok(Self {
            handle: Handle { tx, waker },
            proxy,
            keepalive,
            next_id: AtomicU64::new(1),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The keepalive time new connections use: the configured one, doubled each time
    /// a server answered pings with GOAWAY ENHANCE_YOUR_CALM "too_many_pings"
    /// (gRFC A8). `None` when keepalive is off.
    pub fn keepalive_time(&self) -> Option<Duration> {
        self.keepalive.get()
    }

    /// Closes every connection and stops the I/O thread. Idempotent.
    pub fn shutdown(&self) {
        let _ = self.handle.send(Command::Shutdown);
        if let Some(t) = self.thread.lock().take() {
            if let Err(panic) = t.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

impl Drop for H2Transport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for H2Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("H2Transport")
    }
}

/// Parses `host:port` (or `[v6]:port`), resolving a name with the system resolver.
fn socket_addr(address: &str) -> Result<SocketAddr, Status> {
    if let Ok(addr) = address.parse() {
        return Ok(addr);
    }
    address
        .to_socket_addrs()
        .map_err(|e| Status::unavailable(format!("cannot resolve {address:?}: {e}")))?
        .next()
        .ok_or_else(|| Status::unavailable(format!("{address:?} resolved to no address")))
}

impl Transport for H2Transport {
    fn connect(
        &self,
        address: &Address,
        options: &ConnectOptions,
        events: ConnectionEvents,
    ) -> Result<Arc<dyn Connection>, Status> {
        let tunnel_to = self.proxy.proxy_for(&address.address);
        let addr = match &tunnel_to {
            Some(proxy) => socket_addr(proxy)?,
            None => socket_addr(&address.address)?,
        };
        let tunnel_to = tunnel_to.map(|_| address.address.clone());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.handle
            .send(Command::Connect(ConnectSpec {
                id,
                addr,
                tunnel_to,
                authority: options.authority.clone(),
                user_agent: options.user_agent.clone(),
                deadline: options.connect_deadline,
                events,
            }))
            .map_err(|_| Status::unavailable("transport is shut down"))?;
        Ok(Arc::new(ClientConnection {
            id,
            handle: self.handle.clone(),
            closed: AtomicBool::new(false),
        }))
    }
}

/// The keepalive time shared by the transport handle and its I/O thread, in
/// milliseconds (0 = off).
#[derive(Debug)]
struct KeepaliveTime(AtomicU64);

impl KeepaliveTime {
    fn new(config: &ConnectionConfig) -> Self {
        let ms = config.keepalive.map_or(0, |k| k.time.as_millis() as u64);
        Self(AtomicU64::new(ms))
    }

    fn get(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    fn double(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |ms| {
                (ms != 0).then(|| ms.saturating_mul(2))
            });
    }
}

/// The handle a channel holds for one connection.
struct ClientConnection {
    id: u64,
    handle: Handle,
    closed: AtomicBool,
}

impl Connection for ClientConnection {
    fn start_call(&self, call: CallRequest, done: CallCompletion) {
        let cmd = Command::Call {
            id: self.id,
            call,
            done,
        };
        if let Err(cmd) = self.handle.send(cmd) {
            if let Command::Call { done, .. } = *cmd {
                done(Err(CallError::unprocessed(Status::unavailable(
                    "transport is shut down",
                ))));
            }
        }
    }

    fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            let _ = self.handle.send(Command::Close { id: self.id });
        }
    }
}

impl Drop for ClientConnection {
    fn drop(&mut self) {
        self.close();
    }
}

/// A call waiting for its response.
struct PendingCall {
    call: ClientCall,
    done: CallCompletion,
    deadline: Option<Instant>,
}

/// How far a connection has come.
#[derive(Debug)]
enum Phase {
    /// The TCP connect is under way.
    Tcp { tunnel_to: Option<String> },
    /// CONNECT sent (or being sent) to a proxy; its answer is being read.
    Proxy {
        request: Vec<u8>,
        written: usize,
        reply: Vec<u8>,
    },
    /// Bytes flow between the socket and HTTP/2.
    Open,
}

struct Conn {
    stream: Stream,
    keepalive: Arc<KeepaliveTime>,
    h2: proto::Connection,
    events: ConnectionEvents,
    authority: String,
    user_agent: String,
    phase: Phase,
    /// Give up if not READY by then.
    connect_deadline: Option<Instant>,
    calls: HashMap<StreamId, PendingCall>,
    out: Vec<u8>,
    out_pos: usize,
    write_blocked: bool,
    /// The interest the socket is registered with.
    interest: Interest,
    reported_ready: bool,
}

struct IoLoop {
    poll: Poll,
    rx: Receiver<Command>,
    config: TransportConfig,
    keepalive: Arc<KeepaliveTime>,
    conns: HashMap<u64, Conn>,
    scratch: Vec<u8>,
    /// Connections to read again on the next pass (their read hit the budget).
    read_again: Vec<u64>,
    shutting_down: bool,
}

impl IoLoop {
    fn new(
        poll: Poll,
        rx: Receiver<Command>,
        config: TransportConfig,
        keepalive: Arc<KeepaliveTime>,
    ) -> Self {
        Self {
            poll,
            rx,
            config,
            keepalive,
            conns: HashMap::new(),
            scratch: vec![0; 64 << 10],
            read_again: Vec::new(),
            shutting_down: false,
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            // Connections whose last read stopped at the budget still have bytes, and
            // edge-triggered readiness will not report them again: do not wait.
            let timeout = if self.read_again.is_empty() {
                self.next_deadline()
                    .map(|t| t.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("I/O loop poll failed: {e}");
                    break;
                }
            }
            let now = Instant::now();
            let mut touched: Vec<u64> = Vec::new();
            for id in std::mem::take(&mut self.read_again) {
                self.on_socket_event(id, true, false, now);
                touched.push(id);
            }
            for event in events.iter() {
                if event.token() == WAKER {
                    continue;
                }
                let id = event.token().0 as u64;
                self.on_socket_event(id, event.is_readable(), event.is_writable(), now);
                touched.push(id);
            }
            touched.extend(self.drain_commands(now));
            touched.extend(self.fire_timers(now));
            touched.sort_unstable();
            touched.dedup();
            for id in touched {
                self.service(id, now);
            }
            if self.shutting_down && self.conns.is_empty() {
                break;
            }
        }
        // Whatever is left (a poll failure) still ends every call.
        for id in self.conns.keys().copied().collect::<Vec<_>>() {
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.h2.close();
            }
            self.service(id, Instant::now());
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.conns
            .values()
            .flat_map(|c| {
                c.h2.poll_timeout()
                    .into_iter()
                    .chain(c.connect_deadline)
                    .chain(c.calls.values().filter_map(|p| p.deadline))
            })
            .min()
    }

    /// Handles every queued command; returns the connections they touched.
    fn drain_commands(&mut self, now: Instant) -> Vec<u64> {
        let mut touched = Vec::new();
        loop {
            let cmd = match self.rx.try_recv() {
                Ok(cmd) => cmd,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.begin_shutdown();
                    touched.extend(self.conns.keys().copied());
                    break;
                }
            };
            match cmd {
                Command::Connect(spec) => {
                    let (id, addr, events) = (spec.id, spec.addr, spec.events.clone());
                    if let Err(e) = self.open(spec, now) {
                        events(ConnectionEvent::Closed(Some(Status::unavailable(format!(
                            "connect to {addr} failed: {e}"
                        )))));
                        continue;
                    }
                    touched.push(id);
                }
                Command::Call { id, call, done } => {
                    self.start_call(id, call, done, now);
                    touched.push(id);
                }
                Command::Close { id } => {
                    if let Some(conn) = self.conns.get_mut(&id) {
                        conn.h2.close();
                        touched.push(id);
                    }
                }
                Command::Shutdown => {
                    self.begin_shutdown();
                    touched.extend(self.conns.keys().copied());
                }
            }
        }
        touched
    }

    fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        for conn in self.conns.values_mut() {
            conn.h2.close();
        }
    }

    fn open(&mut self, spec: ConnectSpec, now: Instant) -> io::Result<()> {
        if self.shutting_down {
            return Err(io::Error::other("transport is shutting down"));
        }
        let mut socket = TcpStream::connect(spec.addr)?;
        self.poll.registry().register(
            &mut socket,
            Token(spec.id as usize),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        #[allow(unused_mut)]
        let mut stream = Stream::new(socket);
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.config.tls {
            let session = tls.start(&spec.authority).map_err(io::Error::other)?;
            stream.tls = Some(Box::new(rustls::Connection::Client(session)));
        }
        let mut connection = self.config.connection.clone();
        if let (Some(ka), Some(time)) = (&mut connection.keepalive, self.keepalive.get()) {
            ka.time = time;
        }
        let h2 = proto::Connection::client(connection, now);
        self.conns.insert(
            spec.id,
            Conn {
                stream,
                keepalive: self.keepalive.clone(),
                h2,
                events: spec.events,
                authority: spec.authority,
                user_agent: spec.user_agent,
                phase: Phase::Tcp {
                    tunnel_to: spec.tunnel_to,
                },
                connect_deadline: Some(spec.deadline),
                calls: HashMap::new(),
                out: Vec::new(),
                out_pos: 0,
                write_blocked: true,
                interest: Interest::READABLE | Interest::WRITABLE,
                reported_ready: false,
            },
        );
        Ok(())
    }

    fn start_call(&mut self, id: u64, call: CallRequest, done: CallCompletion, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return done(Err(CallError::unprocessed(Status::unavailable(
                "connection closed",
            ))));
        };
        let timeout = match call.deadline {
            Some(d) if d <= now => {
                return done(Err(Status::deadline_exceeded(
                    "deadline passed before the call started",
                )
                .into()));
            }
            Some(d) => Some(d - now),
            None => None,
        };
        let headers = call::request_headers(&RequestHead {
            scheme: if conn.stream.is_tls() {
                "https"
            } else {
                "http"
            },
            authority: call.authority.as_deref().unwrap_or(&conn.authority),
            path: &call.method,
            timeout,
            user_agent: &conn.user_agent,
            metadata: &call.metadata,
        });
        let stream = match conn.h2.open_stream(headers, false, now) {
            Ok(stream) => stream,
            Err(e @ OpenError::HeaderListTooLarge { .. }) => {
                // Never sent: failing here keeps the connection and its other calls.
                return done(Err(
                    Status::internal(format!("request not sent: {e}")).into()
                ));
            }
            Err(_) => {
                return done(Err(CallError::unprocessed(Status::unavailable(
                    "connection is not accepting new calls",
                ))));
            }
        };
        let mut body = Vec::with_capacity(call.message.len() + 5);
        call::encode_message(&call.message, &mut body);
        if let Err(e) = conn.h2.send_data(stream, &body, true) {
            return done(Err(Status::internal(e.to_string()).into()));
        }
        conn.calls.insert(
            stream,
            PendingCall {
                call: ClientCall::new(self.config.max_message_size),
                done,
                deadline: call.deadline,
            },
        );
    }

    fn on_socket_event(&mut self, id: u64, readable: bool, writable: bool, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if writable {
            conn.write_blocked = false;
        }
        if let Err(e) = conn.advance_phase(readable, writable, &mut self.scratch, now) {
            conn.h2.handle_io_error(e);
            return;
        }
        if writable && matches!(conn.phase, Phase::Open) {
            if let Err(e) = conn.stream.flush_tls() {
                conn.h2.handle_io_error(e.to_string());
                return;
            }
        }
        if readable && matches!(conn.phase, Phase::Open) {
            match socket::read_into(&mut conn.stream, &mut conn.h2, &mut self.scratch, now) {
                Ok(ReadOutcome::Eof) => conn.h2.handle_eof(),
                Ok(ReadOutcome::Budget) => self.read_again.push(id),
                Ok(ReadOutcome::WouldBlock) => {}
                Err(e) => conn.h2.handle_io_error(e.to_string()),
            }
            if let Err(e) = conn.stream.check_alpn() {
                conn.h2.handle_io_error(e);
            }
        }
    }

    /// Fires connection timers, connect deadlines and call deadlines.
    fn fire_timers(&mut self, now: Instant) -> Vec<u64> {
        let mut touched = Vec::new();
        for (id, conn) in &mut self.conns {
            let mut fired = false;
            if conn.h2.poll_timeout().is_some_and(|t| t <= now) {
                conn.h2.handle_timeout(now);
                fired = true;
            }
            if conn.connect_deadline.is_some_and(|t| t <= now) {
                conn.connect_deadline = None;
                conn.h2.handle_io_error("connect timed out".into());
                fired = true;
            }
            let expired: Vec<StreamId> = conn
                .calls
                .iter()
                .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
                .map(|(s, _)| *s)
                .collect();
            for stream in expired {
                if let Some(p) = conn.calls.remove(&stream) {
                    conn.h2.reset_stream(stream, Reason::CANCEL);
                    (p.done)(Err(Status::deadline_exceeded("deadline exceeded").into()));
                    fired = true;
                }
            }
            if fired {
                touched.push(*id);
            }
        }
        touched
    }

    /// Delivers a connection's events, writes what it has to say, updates interest,
    /// and removes it once closed.
    fn service(&mut self, id: u64, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        while let Some(event) = conn.h2.poll_event() {
            conn.dispatch(event);
        }
        if matches!(conn.phase, Phase::Open) && !conn.write_blocked {
            let sent = socket::transmit(
                &mut conn.stream,
                &mut conn.h2,
                &mut conn.out,
                &mut conn.out_pos,
                now,
            )
            .and_then(|all| conn.stream.flush_tls().map(|()| all));
            match sent {
                Ok(all) => conn.write_blocked = !all || conn.stream.wants_write(),
                Err(e) => conn.h2.handle_io_error(e.to_string()),
            }
            // An I/O error above queues more events.
            while let Some(event) = conn.h2.poll_event() {
                conn.dispatch(event);
            }
        }
        if conn.h2.is_closed() && conn.calls.is_empty() {
            let mut conn = self.conns.remove(&id).expect("present");
            let _ = self.poll.registry().deregister(&mut conn.stream.tcp);
            return;
        }
        let interest = if conn.write_blocked || !matches!(conn.phase, Phase::Open) {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        // A system call per change, not per pass.
        if interest == conn.interest {
            return;
        }
        conn.interest = interest;
        if let Err(e) =
            self.poll
                .registry()
                .reregister(&mut conn.stream.tcp, Token(id as usize), interest)
        {
            conn.h2.handle_io_error(e.to_string());
        }
    }
}

impl Conn {
    /// Moves the connection through TCP connect and the proxy's CONNECT exchange.
    fn advance_phase(
        &mut self,
        readable: bool,
        writable: bool,
        scratch: &mut [u8],
        now: Instant,
    ) -> Result<(), String> {
        use std::io::{Read, Write};
        if let Phase::Tcp { tunnel_to } = &mut self.phase {
            if !writable {
                return Ok(());
            }
            match self.stream.tcp.take_error() {
                Ok(None) if self.stream.tcp.peer_addr().is_ok() => {}
                Ok(None) => return Ok(()), // Still connecting.
                Ok(Some(e)) | Err(e) => return Err(format!("connect failed: {e}")),
            }
            let _ = self.stream.tcp.set_nodelay(true);
            self.phase = match tunnel_to.take() {
                Some(target) => Phase::Proxy {
                    request: proxy::connect_request(&target),
                    written: 0,
                    reply: Vec::new(),
                },
                None => Phase::Open,
            };
        }
        let Phase::Proxy {
            request,
            written,
            reply,
        } = &mut self.phase
        else {
            return Ok(());
        };
        while *written < request.len() {
            match self.stream.tcp.write(&request[*written..]) {
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(format!("writing to the proxy failed: {e}")),
            }
        }
        if !readable {
            return Ok(());
        }
        let mut eof = false;
        loop {
            match self.stream.tcp.read(scratch) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => reply.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("reading from the proxy failed: {e}")),
            }
            if reply.len() > proxy::MAX_RESPONSE {
                break;
            }
        }
        // Parse before judging the close: a refusal often comes with one.
        match proxy::parse_reply(reply)? {
            ProxyReply::Partial if eof => Err("proxy closed the connection".into()),
            ProxyReply::Partial => Ok(()),
            ProxyReply::Established(_) if eof => Err("proxy closed the tunnel at once".into()),
            ProxyReply::Established(extra) if extra > 0 && self.stream.is_tls() => {
                Err("proxy sent bytes before the TLS handshake".into())
            }
            ProxyReply::Established(extra) => {
                let tail = reply[reply.len() - extra..].to_vec();
                self.phase = Phase::Open;
                self.h2.handle_read(&tail, now);
                Ok(())
            }
        }
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Connected => {
                self.connect_deadline = None;
                self.reported_ready = true;
                (self.events)(ConnectionEvent::Ready);
            }
            Event::Headers {
                stream,
                headers,
                end_stream,
            } => {
                let result = match self.calls.get_mut(&stream) {
                    Some(p) => p.call.on_headers(headers, end_stream),
                    None => return,
                };
                self.complete(stream, result);
            }
            Event::Data {
                stream,
                data,
                end_stream,
            } => {
                self.h2.release_capacity(stream, data.len());
                let result = match self.calls.get_mut(&stream) {
                    Some(p) => p.call.on_data(&data, end_stream),
                    None => return,
                };
                if result.as_ref().is_some_and(Result::is_err) && !end_stream {
                    self.h2.reset_stream(stream, Reason::CANCEL);
                }
                self.complete(stream, result);
            }
            Event::Reset { stream, cause } => {
                if let Some(mut p) = self.calls.remove(&stream) {
                    (p.done)(Err(p.call.on_reset(&cause)));
                }
            }
            Event::SendReady { .. } => {}
            Event::GoAway { reason, debug, .. } => {
                let too_many_pings =
                    reason == Reason::ENHANCE_YOUR_CALM && debug == b"too_many_pings";
                if too_many_pings {
                    log::warn!("server says too_many_pings: doubling the keepalive time");
                    self.keepalive.double();
                }
                (self.events)(ConnectionEvent::GoAway {
                    reason: format!("{reason}: {}", String::from_utf8_lossy(&debug)),
                    too_many_pings,
                });
            }
            Event::Closed(err) => {
                let status = match err {
                    None => None,
                    Some(proto::ConnectionError::Local) if self.reported_ready => None,
                    Some(e) => Some(call::connection_error_status(&e)),
                };
                // A connection that never became READY always reports a failure.
                let status = match (status, self.reported_ready) {
                    (None, false) => {
                        Some(Status::unavailable("connection closed before it was ready"))
                    }
                    (s, _) => s,
                };
                (self.events)(ConnectionEvent::Closed(status));
            }
        }
    }

    fn complete(
        &mut self,
        stream: StreamId,
        result: Option<Result<lb_core::transport::CallResponse, CallError>>,
    ) {
        if let Some(result) = result {
            if let Some(p) = self.calls.remove(&stream) {
                (p.done)(result);
            }
        }
    }
}

/// How long [`H2Transport`] waits, at most, for its thread when dropped (documented for
/// users; the thread ends as soon as every connection has flushed its GOAWAY).
pub const SHUTDOWN_HINT: Duration = Duration::from_millis(100);
