//! The client transport: mio I/O loops serving many HTTP/2 connections, behind
//! lb-core's [`Transport`] trait. Every call is one HTTP/2 stream
//! ([`Connection::open_stream`]); unary calls are lb-core's adapter over it.
//!
//! ```text
//!  any thread                                  I/O thread ("lb-io")
//!  ──────────                                  ────────────────────
//!  H2Transport::connect ─────Connect──┐        mio Poll: sockets + Waker
//!  Connection::open_stream ──Open─────┤        commands drained on wake
//!  CallStream::try_send/half_close/   ├─ queue ─> (at most COMMANDS_PER_PASS a pass)
//!    cancel/release ─────────Stream───┤        sans-IO proto::Connection per socket
//!  Connection::close ────────Close────┘        events ──> ConnectionEvents callback
//!        │                                     stream events ──> CallListener
//!        └── per-stream shared state <──────── (on_headers, on_message,
//!            (messages, queued bytes,           on_writable, on_close)
//!             released bytes)
//! ```
//!
//! # Queues and their bounds
//!
//! - **Commands to a loop**: a bounded channel of [`COMMAND_QUEUE`] (4096)
//!   commands per loop. `send` blocks while it is full: only threads that are not
//!   polling the loop ever wait there, and the poller drains it without waiting on
//!   anyone (it blocks only in `poll`, and listeners must not block). A stream has
//!   at most one command in the queue at a time (its `Open`, then one `Stream`
//!   command that every later change rides along with, see [`call`](super::call)).
//! - **The poller's own commands**: callbacks run on the thread polling the loop,
//!   and what they send to it (a `try_send` from `on_message`, a `connect` from an
//!   event) goes to a list local to that thread, never to the bounded channel it
//!   drains itself; the list is handled first on the next pass, and a caller that
//!   stops driving hands what is left of it to the loop. It holds what one pass's
//!   callbacks sent: at most one command per stream, plus the connects and closes
//!   they made.
//! - **Sending, per stream**: the caller's messages wait in the stream's shared
//!   state and then in HTTP/2's send buffer; [`CallStream::try_send`] takes a
//!   message only while fewer than [`SEND_BUFFER`](super::call::SEND_BUFFER)
//!   (64 KiB) bytes wait, so a stream holds at most 64 KiB plus one message.
//! - **Receiving, per stream**: the peer gets credit for the bytes of delivered
//!   messages only once the application [`release`](CallStream::release)s them, so
//!   the messages a listener holds stay within the stream window (1 MiB by default)
//!   plus the one being assembled (at most [`TransportConfig::max_message_size`]).
//! - **Writing, per connection**: at most one `poll_transmit` (about 256 KiB) past
//!   [`socket::READ_BUDGET`] bytes waits for the socket.
//!
//! # Threads
//!
//! A transport has [`TransportConfig::io_threads`] loops (one by default), each
//! with its own thread; a connection stays on one loop for its life. A loop is
//! polled by whoever holds it: its I/O thread, or a caller blocked in
//! [`CallStream::drive`] on a call opened with `CallHead::caller_drives` (every
//! channel call). A sequential blocking call then goes from request to response on
//! its caller's thread with no thread switch; the I/O thread polls whatever no
//! caller drives (connects, callback-only calls, idle connections after
//! [`GRACE`](super::poller::GRACE)). The rules are in [`poller`](super::poller).
//!
//! Every [`CallListener`] and [`ConnectionEvents`] callback runs on the thread
//! polling the loop, which holds no lock of the transport while it runs them, so a
//! listener may call back into its stream or connection; callbacks must not block
//! (nor take a lock that a caller may hold while it waits for a call). The one
//! exception: once the transport is shut down, a call opened on it ends at once,
//! on the caller's thread. A callback that calls into a *different* transport (or
//! loop) is an ordinary sender there, and may wait while that loop's queue is full.
//!
//! # How calls end
//!
//! | what happened | status | progress |
//! |---|---|---|
//! | the server's trailers (or Trailers-Only) | the server's, with its trailers | processed |
//! | connection gone or not accepting before the stream opened | UNAVAILABLE | not sent |
//! | request headers above the peer's header list limit | INTERNAL | not sent |
//! | REFUSED_STREAM, above a GOAWAY's last stream, never opened | UNAVAILABLE | refused |
//! | [`CallStream::cancel`] | CANCELLED (RST_STREAM CANCEL) | processed, or not sent |
//! | the deadline (sent as `grpc-timeout`) | DEADLINE_EXCEEDED (RST_STREAM CANCEL) | processed, or not sent |
//! | a message above the size limit | RESOURCE_EXHAUSTED (RST_STREAM CANCEL) | processed |
//! | another reset, the connection failed | from the reset, UNAVAILABLE | processed |

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use lb_core::transport::{
    CallHead, CallListener, CallOutcome, CallStream, ConnectOptions, ConnectionEvent,
    ConnectionEvents,
};
use lb_core::{Address, Connection, Status, Transport};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;

use crate::driver::IdMap;
use crate::driver::call::{Opening, RecvCredit, StreamHandle, StreamShared, Work, release_batch};
use crate::driver::channelz::SocketZ;
use crate::driver::poller::LoopShared;
use crate::driver::proxy::{self, ProxyMode, ProxyReply};
use crate::driver::socket::{self, ReadOutcome};
use crate::driver::stream::Stream;
#[cfg(feature = "tls")]
use crate::driver::tls::TlsConfig;
use crate::frame::{Reason, StreamId};
use crate::grpc::call::{self, ClientStream, RequestHead, ResponseEvent};
use crate::grpc::compression::{ACCEPT_ENCODING, Encoding};
use crate::grpc::message::{self, DEFAULT_MAX_MESSAGE_LEN, PREFIX_LEN};
use crate::hpack::Bytes;
use crate::proto::{self, ConnectionConfig, Event, OpenError};

const WAKER: Token = Token(usize::MAX);

/// How many commands may wait for the I/O thread before senders block.
pub const COMMAND_QUEUE: usize = 4096;

/// How many queued commands the I/O thread handles in one pass before it serves
/// the sockets again.
const COMMANDS_PER_PASS: usize = 1024;

/// Settings of an [`H2Transport`].
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// HTTP/2 settings, limits and keepalive of every connection.
    pub connection: ConnectionConfig,
    /// The largest response message accepted.
    pub max_message_size: usize,
    /// Which HTTP CONNECT proxy, if any, connections go through.
    pub proxy: ProxyMode,
    /// TLS for the connections of channels that choose none (`https`); `None` is
    /// plaintext (`http`). A channel chooses for itself with [`ChannelSecurity`].
    /// Available with the `tls` feature.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub tls: Option<TlsConfig>,
    /// How many I/O threads serve the transport's connections (at least 1; 0
    /// counts as 1). Connections are spread over them in turn, each living on one
    /// thread for its whole life, so a program on more cores is not held to one
    /// I/O thread. Calls on one connection always share its thread.
    pub io_threads: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            connection: ConnectionConfig::default(),
            max_message_size: DEFAULT_MAX_MESSAGE_LEN,
            proxy: ProxyMode::FromEnv,
            io_threads: 1,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

/// One channel's choice of TLS or plaintext, overriding its transport's
/// `TransportConfig::tls`: give it to lb-core's `ChannelBuilder::transport_option`,
/// and one [`H2Transport`] serves TLS channels and plaintext channels at once.
/// Channels that set none use the transport's setting. The RLS control channel
/// (and any channel a policy opens through its `ChannelFactory`) inherits its
/// parent channel's choice.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use lb_core::channel::Channel;
/// use lb_transport::driver::{ChannelSecurity, H2Transport, TransportConfig};
///
/// // A transport whose connections are plaintext unless a channel says otherwise.
/// let transport = Arc::new(H2Transport::new(TransportConfig::default())?);
/// let plaintext = Channel::builder("dns:///localhost:50051")
///     .transport(transport.clone())
///     .build()?;
/// # #[cfg(feature = "tls")] {
/// use lb_transport::driver::tls::TlsConfig;
/// let secure = Channel::builder("dns:///api.example.com:443")
///     .transport(transport.clone())
///     .transport_option(ChannelSecurity::Tls(TlsConfig::with_webpki_roots()))
///     .build()?;
/// # secure.close();
/// # }
/// # plaintext.close();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ChannelSecurity {
    /// Plaintext (`http`), whatever the transport's setting.
    Plaintext,
    /// TLS with these settings (`https`). Available with the `tls` feature.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    Tls(TlsConfig),
}

/// Everything the I/O thread needs to open one connection.
pub(crate) struct ConnectSpec {
    id: u64,
    /// The connection's channelz socket id.
    socket_id: u64,
    addr: SocketAddr,
    /// `host:port` to ask the proxy to connect to, when `addr` is a proxy.
    tunnel_to: Option<String>,
    authority: String,
    user_agent: String,
    deadline: Instant,
    events: ConnectionEvents,
    /// TLS for this connection: the channel's [`ChannelSecurity`], else the
    /// transport's setting.
    #[cfg(feature = "tls")]
    tls: Option<TlsConfig>,
}

/// What other threads ask of the I/O thread.
pub(crate) enum Command {
    /// Open a connection.
    Connect(ConnectSpec),
    /// Open a call's stream (and send whatever the caller queued meanwhile).
    Open(Opening),
    /// Look at a call's shared state: messages, end of request, cancel, released
    /// bytes.
    Stream(Arc<StreamShared>),
    /// Close a connection.
    Close { id: u64 },
    /// Close everything and stop.
    Shutdown,
}

/// Tells each I/O loop apart, for [`OWN_COMMANDS`].
static NEXT_LOOP_ID: AtomicU64 = AtomicU64::new(1);

/// Commands sent by the thread polling a loop (by the callbacks it runs) to that
/// loop.
struct OwnCommands {
    loop_id: u64,
    commands: Vec<Command>,
}

thread_local! {
    /// Set while a thread polls a loop (for good on an I/O thread, for a drive on
    /// a caller's): the commands its callbacks sent to that loop. They never go to
    /// its bounded channel, which the thread could then block on itself.
    static OWN_COMMANDS: RefCell<Option<OwnCommands>> = const { RefCell::new(None) };
}

/// Marks this thread as the poller of one loop while it lives.
pub(crate) struct OwnCommandsGuard(());

impl OwnCommandsGuard {
    pub(crate) fn install(loop_id: u64) -> Self {
        OWN_COMMANDS.with(|own| {
            *own.borrow_mut() = Some(OwnCommands {
                loop_id,
                commands: Vec::new(),
            });
        });
        Self(())
    }

    /// Whether this thread polls a loop now (runs its callbacks).
    pub(crate) fn polls_a_loop() -> bool {
        OWN_COMMANDS
            .try_with(|own| own.borrow().is_some())
            .unwrap_or(true)
    }
}

impl Drop for OwnCommandsGuard {
    fn drop(&mut self) {
        let _ = OWN_COMMANDS.try_with(|own| own.borrow_mut().take());
    }
}

/// Takes the commands this (I/O) thread sent to itself.
fn take_own_commands() -> Vec<Command> {
    OWN_COMMANDS
        .try_with(|own| {
            own.borrow_mut()
                .as_mut()
                .map(|q| std::mem::take(&mut q.commands))
                .unwrap_or_default()
        })
        .unwrap_or_default()
}

fn has_own_commands() -> bool {
    OWN_COMMANDS
        .try_with(|own| {
            own.borrow()
                .as_ref()
                .is_some_and(|q| !q.commands.is_empty())
        })
        .unwrap_or(false)
}

/// A command sender that makes sure a poller sees each command it pushes.
#[derive(Clone)]
pub(crate) struct Handle {
    tx: Sender<Command>,
    pub(crate) shared: Arc<LoopShared>,
}

impl Handle {
    /// Sends `cmd`; gives it back if the loop is gone. Blocks while
    /// [`COMMAND_QUEUE`] commands wait, except on the thread polling the loop,
    /// whose commands go to its own list.
    pub(crate) fn send(&self, cmd: Command) -> Result<(), Box<Command>> {
        self.send_inner(cmd, None)
    }

    /// As [`send`](Self::send), for a command of `stream`'s call: one of a driven
    /// call waits for its caller when nobody polls.
    pub(crate) fn send_for(&self, cmd: Command, stream: &StreamShared) -> Result<(), Box<Command>> {
        self.send_inner(cmd, Some(stream).filter(|s| s.driven))
    }

    fn send_inner(
        &self,
        cmd: Command,
        deferred: Option<&StreamShared>,
    ) -> Result<(), Box<Command>> {
        let mut slot = Some(cmd);
        let _ = OWN_COMMANDS.try_with(|own| {
            if let Some(q) = own.borrow_mut().as_mut() {
                if q.loop_id == self.shared.loop_id {
                    q.commands.extend(slot.take());
                }
            }
        });
        let Some(cmd) = slot else {
            return Ok(());
        };
        self.tx.send(cmd).map_err(|e| Box::new(e.0))?;
        self.shared.notify(deferred);
        Ok(())
    }
}
/// An HTTP/2 gRPC transport: many connections on one I/O thread, calls of every
/// kind as streams with backpressure both ways (see the [module docs](self)).
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
    /// One handle per I/O thread; connection `id` lives on `handles[id % len]`.
    handles: Vec<Handle>,
    proxy: ProxyMode,
    keepalive: Arc<KeepaliveTime>,
    /// The release batch of every stream (from the stream window).
    release_batch: usize,
    next_id: AtomicU64,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// `TransportConfig::tls`: the TLS of channels that choose none.
    #[cfg(feature = "tls")]
    tls: Option<TlsConfig>,
}

impl H2Transport {
    /// Starts the I/O threads (`TransportConfig::io_threads`).
    ///
    /// # Errors
    ///
    /// A poller or a thread could not be created.
    pub fn new(config: TransportConfig) -> io::Result<Self> {
        let proxy = config.proxy.clone();
        let keepalive = Arc::new(KeepaliveTime::new(&config.connection));
        let release_batch = release_batch(config.connection.stream_window);
        #[cfg(feature = "tls")]
        let tls = config.tls.clone();
        let count = config.io_threads.max(1);
        let mut transport = Self {
            handles: Vec::with_capacity(count),
            proxy,
            keepalive,
            release_batch,
            next_id: AtomicU64::new(1),
            threads: Mutex::new(Vec::with_capacity(count)),
            #[cfg(feature = "tls")]
            tls,
        };
        for n in 0..count {
            let poll = Poll::new()?;
            let waker = Waker::new(poll.registry(), WAKER)?;
            let (tx, rx) = crossbeam_channel::bounded(COMMAND_QUEUE);
            let loop_id = NEXT_LOOP_ID.fetch_add(1, Ordering::Relaxed);
            let (config, keepalive) = (config.clone(), transport.keepalive.clone());
            let parked = Arc::new(AtomicUsize::new(0));
            let sleeping = Arc::new(AtomicBool::new(false));
            let io = IoLoop::new(poll, rx, config, keepalive, sleeping.clone());
            let shared = Arc::new(LoopShared::new(io, waker, loop_id, parked, sleeping));
            let name = if count == 1 {
                "lb-io".to_string()
            } else {
                format!("lb-io-{n}")
            };
            let runner = shared.clone();
            // On an error here, dropping `transport` stops the threads started so far.
            let thread = std::thread::Builder::new()
                .name(name)
                .spawn(move || runner.run())?;
            transport.handles.push(Handle { tx, shared });
            transport.threads.get_mut().push(thread);
        }
        Ok(transport)
    }

    /// How many I/O threads serve this transport.
    pub fn io_threads(&self) -> usize {
        self.handles.len()
    }

    /// The keepalive time new connections use: the configured one, doubled each time
    /// a server answered pings with GOAWAY ENHANCE_YOUR_CALM "too_many_pings"
    /// (gRFC A8). `None` when keepalive is off.
    pub fn keepalive_time(&self) -> Option<Duration> {
        self.keepalive.get()
    }

    /// Closes every connection and stops the I/O thread. Idempotent.
    pub fn shutdown(&self) {
        for handle in &self.handles {
            let _ = handle.send(Command::Shutdown);
        }
        let threads = std::mem::take(&mut *self.threads.lock());
        for t in threads {
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
        let socket_id = lb_core::channelz::next_id();
        let handle = &self.handles[(id % self.handles.len() as u64) as usize];
        handle
            .send(Command::Connect(ConnectSpec {
                id,
                socket_id,
                addr,
                tunnel_to,
                authority: options.authority.clone(),
                user_agent: options.user_agent.clone(),
                deadline: options.connect_deadline,
                events,
                #[cfg(feature = "tls")]
                tls: match options.transport_options.get::<ChannelSecurity>() {
                    Some(ChannelSecurity::Plaintext) => None,
                    Some(ChannelSecurity::Tls(tls)) => Some(tls.clone()),
                    None => self.tls.clone(),
                },
            }))
            .map_err(|_| Status::unavailable("transport is shut down"))?;
        Ok(Arc::new(ClientConnection {
            id,
            socket_id,
            handle: handle.clone(),
            closed: AtomicBool::new(false),
            release_batch: self.release_batch,
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

/// The encoding a call's head asks its request messages to be sent with.
fn request_encoding(head: &CallHead) -> Result<Encoding, Status> {
    match head.compression.as_deref() {
        None => Ok(Encoding::Identity),
        Some(name) => Encoding::from_name(name.as_bytes()).ok_or_else(|| {
            Status::internal(format!(
                "request compression {name:?} is not supported (supported: {ACCEPT_ENCODING})"
            ))
        }),
    }
}

/// The handle a channel holds for one connection.
struct ClientConnection {
    id: u64,
    /// Its channelz socket id (registered by the I/O thread while the socket
    /// lives).
    socket_id: u64,
    handle: Handle,
    closed: AtomicBool,
    release_batch: usize,
}

impl Connection for ClientConnection {
    fn open_stream(&self, head: CallHead, listener: Arc<dyn CallListener>) -> Arc<dyn CallStream> {
        // An encoding we do not know fails the call when it opens (`open_call`).
        let encoding = request_encoding(&head).unwrap_or(Encoding::Identity);
        let shared = Arc::new(StreamShared::new(
            self.id,
            listener,
            self.release_batch,
            encoding,
            head.caller_drives,
            self.handle.shared.parked.clone(),
        ));
        // A command that cannot be sent is dropped here, and its `Opening` ends the
        // call with UNAVAILABLE.
        let _ = self
            .handle
            .send_for(Command::Open(Opening::new(head, shared.clone())), &shared);
        Arc::new(StreamHandle::new(shared, self.handle.clone()))
    }

    fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            let _ = self.handle.send(Command::Close { id: self.id });
        }
    }

    fn socket_id(&self) -> Option<u64> {
        Some(self.socket_id)
    }
}

impl Drop for ClientConnection {
    fn drop(&mut self) {
        self.close();
    }
}

/// A call whose stream is open, as the I/O thread keeps it.
struct ActiveCall {
    shared: Arc<StreamShared>,
    response: ClientStream,
    deadline: Option<Instant>,
    /// Bytes handed to HTTP/2 and not yet transmitted, as of the last look.
    unsent: usize,
    /// END_STREAM is queued (or sent) on our side.
    local_ended: bool,
    /// Messages the handle accepted that HTTP/2's stream buffer has no room for
    /// yet (bounded with them by the handle's [`SEND_BUFFER`](super::call::SEND_BUFFER)),
    /// without prefixes, each with whether it is compressed.
    backlog: VecDeque<(Vec<u8>, bool)>,
    /// END_STREAM goes out after the backlog.
    end_pending: bool,
    credit: RecvCredit,
}

impl ActiveCall {
    /// Its caller drives it and it waits for nothing from the peer to send.
    fn is_quiet(&self) -> bool {
        self.shared.driven && self.unsent == 0 && self.backlog.is_empty() && !self.end_pending
    }
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
    /// The proto's per-stream send bound (`ConnectionConfig::stream_send_buffer`).
    send_limit: usize,
    keepalive: Arc<KeepaliveTime>,
    h2: proto::Connection,
    events: ConnectionEvents,
    /// Shared by the request headers of every call that does not set its own.
    authority: Bytes,
    user_agent: Bytes,
    phase: Phase,
    /// Give up if not READY by then.
    connect_deadline: Option<Instant>,
    calls: IdMap<StreamId, ActiveCall>,
    /// What the last stream event meant for its call (reused).
    responses: Vec<ResponseEvent>,
    out: Vec<u8>,
    out_pos: usize,
    write_blocked: bool,
    /// The interest the socket is registered with.
    interest: Interest,
    reported_ready: bool,
    /// Its channelz entity (`driver::channelz`).
    cz: SocketZ,
    /// What [`Conn::is_quiet`] said after the last service (counted in
    /// `IoLoop::noisy` when false).
    quiet: bool,
}

/// One I/O loop's state: its poller, connections and command queue. Whoever
/// holds it polls (see [`poller`](super::poller)).
pub(crate) struct IoLoop {
    poll: Poll,
    events: Events,
    rx: Receiver<Command>,
    config: TransportConfig,
    keepalive: Arc<KeepaliveTime>,
    conns: IdMap<u64, Conn>,
    scratch: Vec<u8>,
    /// Connections to read again on the next pass (their read hit the budget).
    read_again: Vec<u64>,
    /// The last pass left commands in the queue (it handled its quota).
    backlog: bool,
    /// Commands a poller's callbacks sent to this loop and left when it stopped
    /// polling.
    own_pending: Vec<Command>,
    /// Connections that are not quiet (`Conn::quiet` false).
    noisy: usize,
    /// The poller is (about to be) blocked in `poll`: a sender must wake it
    /// (`LoopShared::notify`).
    sleeping: Arc<AtomicBool>,
    shutting_down: bool,
}

impl IoLoop {
    fn new(
        poll: Poll,
        rx: Receiver<Command>,
        config: TransportConfig,
        keepalive: Arc<KeepaliveTime>,
        sleeping: Arc<AtomicBool>,
    ) -> Self {
        Self {
            poll,
            events: Events::with_capacity(256),
            rx,
            config,
            keepalive,
            conns: IdMap::default(),
            scratch: vec![0; 64 << 10],
            read_again: Vec::new(),
            backlog: false,
            own_pending: Vec::new(),
            noisy: 0,
            sleeping,
            shutting_down: false,
        }
    }

    /// Whether the loop may go unpolled until a caller drives it: see the
    /// [`poller`](super::poller) rules (parked callers are the caller's to check).
    pub(crate) fn quiet(&self) -> bool {
        self.noisy == 0
            && !self.shutting_down
            && self.read_again.is_empty()
            && !self.backlog
            && self.own_pending.is_empty()
            && !has_own_commands()
    }

    /// Whether commands wait in the queue.
    pub(crate) fn commands_waiting(&self) -> bool {
        !self.rx.is_empty()
    }

    /// Whether the loop has shut down and closed every connection.
    pub(crate) fn done(&self) -> bool {
        self.shutting_down && self.conns.is_empty()
    }

    /// Moves the commands this (polling) thread sent itself into the loop, for
    /// the next poller.
    pub(crate) fn adopt_own_commands(&mut self) {
        self.own_pending.extend(take_own_commands());
    }

    /// One turn: waits for sockets (until the next timer or `limit`, not at all
    /// when work is waiting), then handles readiness, commands and timers, and
    /// services every connection they touched.
    pub(crate) fn pass(&mut self, limit: Option<Instant>) {
        // Connections whose last read stopped at the budget still have bytes, and
        // edge-triggered readiness will not report them again; commands waiting
        // need no wake-up either: do not wait.
        let idle = self.read_again.is_empty()
            && !self.backlog
            && self.own_pending.is_empty()
            && !has_own_commands()
            && self.rx.is_empty();
        let mut timeout = if idle {
            let wake = match (self.next_deadline(), limit) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            wake.map(|t| t.saturating_duration_since(Instant::now()))
        } else {
            Some(Duration::ZERO)
        };
        let sleeps = timeout != Some(Duration::ZERO);
        if sleeps {
            // Senders wake the poller only while it sleeps; a command pushed
            // before this store is seen below instead (a full fence each side).
            self.sleeping.store(true, Ordering::SeqCst);
            std::sync::atomic::fence(Ordering::SeqCst);
            if !self.rx.is_empty() {
                timeout = Some(Duration::ZERO);
            }
        }
        let polled = self.poll.poll(&mut self.events, timeout);
        if sleeps {
            self.sleeping.store(false, Ordering::Relaxed);
            // A poll that timed out with commands queued may have missed its
            // wake-up (see `poller::IDLE_POLL`), or the command came just then.
            if self.events.is_empty() && !self.rx.is_empty() {
                log::debug!(
                    "I/O loop: {} commands waited out a poll of {timeout:?}",
                    self.rx.len()
                );
            }
        }
        if let Err(e) = polled {
            if e.kind() != io::ErrorKind::Interrupted {
                log::error!("I/O loop poll failed: {e}");
                self.begin_shutdown();
                for conn in self.conns.values_mut() {
                    conn.h2.handle_io_error(format!("poll failed: {e}"));
                }
            }
        }
        let now = Instant::now();
        let mut touched: Vec<u64> = std::mem::take(&mut self.read_again);
        for &id in &touched {
            self.on_socket_event(id, true, false, false, now);
        }
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        for event in events.iter() {
            if event.token() == WAKER {
                continue;
            }
            let id = event.token().0 as u64;
            // A short read ends the pass only if this edge brought no close or
            // error to see: it will not come again.
            let clean = !(event.is_read_closed() || event.is_error());
            self.on_socket_event(id, event.is_readable(), event.is_writable(), clean, now);
            touched.push(id);
        }
        self.events = events;
        touched.extend(self.drain_commands(now));
        touched.extend(self.fire_timers(now));
        touched.sort_unstable();
        touched.dedup();
        for id in touched {
            self.service(id, now);
            self.note_quiet(id);
        }
    }

    /// Recounts whether connection `id` is quiet after its service.
    fn note_quiet(&mut self, id: u64) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let quiet = conn.is_quiet();
        if quiet != conn.quiet {
            conn.quiet = quiet;
            if quiet {
                self.noisy -= 1;
            } else {
                self.noisy += 1;
            }
        }
    }

    /// Ends the loop once it is done (I/O thread): whatever is left still ends
    /// every call, and what is still queued is discarded: calls not yet opened end
    /// with UNAVAILABLE (when their `Open` drops), connects report `Closed`.
    pub(crate) fn finish(&mut self) {
        for id in self.conns.keys().copied().collect::<Vec<_>>() {
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.h2.close();
            }
            self.service(id, Instant::now());
        }
        for conn in self.conns.values_mut() {
            for (_, call) in conn.calls.drain() {
                call.shared
                    .close(CallOutcome::processed(Status::unavailable(
                        "transport is shut down",
                    )));
            }
        }
        self.conns.clear();
        let discard = |commands: Vec<Command>| {
            for cmd in commands {
                if let Command::Connect(spec) = cmd {
                    (spec.events)(ConnectionEvent::Closed(Some(Status::unavailable(
                        "transport is shut down",
                    ))));
                }
            }
        };
        // Callbacks run by the discarding may send more; the loop ends when nothing
        // is left.
        loop {
            let mut commands = take_own_commands();
            commands.append(&mut self.own_pending);
            commands.extend(self.rx.try_iter());
            if commands.is_empty() {
                break;
            }
            discard(commands);
        }
        // From here on sends fail; dropping the receiver drops whatever raced in.
        drop(std::mem::replace(&mut self.rx, crossbeam_channel::never()));
        loop {
            let commands = take_own_commands();
            if commands.is_empty() {
                break;
            }
            discard(commands);
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

    /// Handles the commands this thread sent itself, then up to
    /// [`COMMANDS_PER_PASS`] queued ones; returns the connections they touched.
    fn drain_commands(&mut self, now: Instant) -> Vec<u64> {
        let mut touched = Vec::new();
        let mut own = std::mem::take(&mut self.own_pending);
        own.extend(take_own_commands());
        for cmd in own {
            self.command(cmd, now, &mut touched);
        }
        let mut handled = 0;
        self.backlog = false;
        while handled < COMMANDS_PER_PASS {
            match self.rx.try_recv() {
                Ok(cmd) => self.command(cmd, now, &mut touched),
                Err(TryRecvError::Empty) => return touched,
                Err(TryRecvError::Disconnected) => {
                    self.begin_shutdown();
                    touched.extend(self.conns.keys().copied());
                    return touched;
                }
            }
            handled += 1;
        }
        self.backlog = !self.rx.is_empty();
        touched
    }

    fn command(&mut self, cmd: Command, now: Instant, touched: &mut Vec<u64>) {
        match cmd {
            Command::Connect(spec) => {
                let (id, addr, events) = (spec.id, spec.addr, spec.events.clone());
                if let Err(e) = self.open(spec, now) {
                    events(ConnectionEvent::Closed(Some(Status::unavailable(format!(
                        "connect to {addr} failed: {e}"
                    )))));
                    return;
                }
                touched.push(id);
            }
            Command::Open(opening) => touched.extend(self.open_call(opening, now)),
            Command::Stream(shared) => {
                let work = shared.take_work();
                let (Some(conn), Some(stream)) =
                    (self.conns.get_mut(&shared.conn), shared.stream_id())
                else {
                    return;
                };
                conn.apply(stream, work);
                touched.push(shared.conn);
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
        let cz = SocketZ::register(
            spec.socket_id,
            true,
            socket.local_addr().ok(),
            Some(spec.addr),
        );
        self.poll.registry().register(
            &mut socket,
            Token(spec.id as usize),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        #[allow(unused_mut)]
        let mut stream = Stream::new(socket);
        #[cfg(feature = "tls")]
        if let Some(tls) = &spec.tls {
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
                send_limit: self.config.connection.stream_send_buffer,
                keepalive: self.keepalive.clone(),
                h2,
                events: spec.events,
                authority: Bytes::from(spec.authority),
                user_agent: Bytes::from(spec.user_agent),
                phase: Phase::Tcp {
                    tunnel_to: spec.tunnel_to,
                },
                connect_deadline: Some(spec.deadline),
                calls: IdMap::default(),
                responses: Vec::new(),
                out: Vec::new(),
                out_pos: 0,
                write_blocked: true,
                interest: Interest::READABLE | Interest::WRITABLE,
                reported_ready: false,
                cz,
                quiet: false,
            },
        );
        self.noisy += 1;
        Ok(())
    }

    /// Opens a call's stream and sends what its caller queued meanwhile; returns
    /// the connection touched. A call that cannot be opened ends here, alone.
    fn open_call(&mut self, opening: Opening, now: Instant) -> Option<u64> {
        let (head, shared) = opening.take();
        let work = shared.take_work();
        let not_sent = |status: Status| {
            shared.close(CallOutcome::not_sent(status));
            None
        };
        let Some(conn) = self.conns.get_mut(&shared.conn) else {
            return not_sent(Status::unavailable("connection closed"));
        };
        if work.cancel {
            return not_sent(Status::cancelled("call cancelled"));
        }
        let timeout = match head.deadline {
            Some(d) if d <= now => {
                return not_sent(Status::deadline_exceeded(
                    "deadline passed before the call started",
                ));
            }
            Some(d) => Some(d - now),
            None => None,
        };
        let encoding = match request_encoding(&head) {
            Ok(encoding) => encoding,
            Err(status) => return not_sent(status),
        };
        let headers = call::request_headers(&RequestHead {
            scheme: if conn.stream.is_tls() {
                "https"
            } else {
                "http"
            },
            authority: match &head.authority {
                Some(own) => Bytes::copy_from_slice(own.as_bytes()),
                None => conn.authority.clone(),
            },
            path: &head.method,
            timeout,
            user_agent: conn.user_agent.clone(),
            metadata: &head.metadata,
            encoding,
        });
        // A request that ends without a message ends with its headers.
        let end_now = work.end && work.messages.is_empty();
        let stream = match conn.h2.open_stream(headers, end_now, now) {
            Ok(stream) => stream,
            Err(e @ OpenError::HeaderListTooLarge { .. }) => {
                // Never sent: failing here keeps the connection and its other calls.
                return not_sent(Status::internal(format!("request not sent: {e}")));
            }
            Err(_) => {
                return not_sent(Status::unavailable("connection is not accepting new calls"));
            }
        };
        shared.set_stream_id(stream);
        let mut response = ClientStream::new(self.config.max_message_size);
        response.set_request_encoding(encoding);
        conn.calls.insert(
            stream,
            ActiveCall {
                shared: shared.clone(),
                response,
                deadline: head.deadline,
                unsent: 0,
                local_ended: end_now,
                backlog: VecDeque::new(),
                end_pending: false,
                credit: RecvCredit::default(),
            },
        );
        conn.apply(stream, work);
        Some(shared.conn)
    }

    fn on_socket_event(
        &mut self,
        id: u64,
        readable: bool,
        writable: bool,
        short_read_drains: bool,
        now: Instant,
    ) {
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
            let drains = short_read_drains && conn.stream.short_read_drains();
            match socket::read_into(
                &mut conn.stream,
                &mut conn.h2,
                &mut self.scratch,
                drains,
                now,
            ) {
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
                if let Some(call) = conn.calls.remove(&stream) {
                    conn.h2.reset_stream(stream, Reason::CANCEL);
                    call.shared
                        .close(CallOutcome::processed(Status::deadline_exceeded(
                            "deadline exceeded",
                        )));
                    fired = true;
                }
            }
            if fired {
                touched.push(*id);
            }
        }
        touched
    }

    /// Delivers a connection's events, writes what it has to say, tells writers
    /// that their streams drained, updates interest, and removes it once closed.
    fn service(&mut self, id: u64, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        while let Some(event) = conn.h2.poll_event() {
            conn.dispatch(event);
        }
        // Transmit, then move backlogs into the room that made; again while a
        // backlog moved and the socket takes more (bounded: each round moves at
        // least one message of a finite backlog).
        while matches!(conn.phase, Phase::Open) && !conn.write_blocked {
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
            if !conn.report_transmitted() {
                break;
            }
        }
        conn.cz.sync(&conn.h2, &conn.stream, now);
        if conn.h2.is_closed() && conn.calls.is_empty() {
            let mut conn = self.conns.remove(&id).expect("present");
            if !conn.quiet {
                self.noisy -= 1;
            }
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
    /// Whether the connection may go unpolled until a caller drives: open and
    /// ready, nothing left to write, and only driven calls with nothing to send.
    fn is_quiet(&self) -> bool {
        matches!(self.phase, Phase::Open)
            && self.reported_ready
            && !self.write_blocked
            && self.out_pos >= self.out.len()
            && !self.h2.is_closed()
            && self.calls.values().all(ActiveCall::is_quiet)
    }

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
            if let Ok(local) = self.stream.tcp.local_addr() {
                self.cz.set_local(local);
            }
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

    /// Hands what the caller queued to HTTP/2: messages (each after its prefix),
    /// the end of the request, a cancel, and released bytes' credit.
    fn apply(&mut self, stream: StreamId, work: Work) {
        let Some(call) = self.calls.get_mut(&stream) else {
            return;
        };
        if work.cancel {
            let call = self.calls.remove(&stream).expect("present");
            self.h2.reset_stream(stream, Reason::CANCEL);
            call.shared
                .close(CallOutcome::processed(Status::cancelled("call cancelled")));
            return;
        }
        if !call.local_ended {
            call.backlog.extend(work.messages);
            call.local_ended = work.end;
            call.end_pending = work.end;
        }
        if work.released > 0 {
            let credit = call.credit.on_release(work.released);
            if credit > 0 {
                self.h2.release_capacity(stream, credit);
            }
        }
        self.flush(stream);
    }

    /// Hands a call's backlog to HTTP/2 while the stream's send buffer
    /// (`stream_send_buffer`) has room; what is left waits for the next transmit.
    /// Returns whether anything moved.
    fn flush(&mut self, stream: StreamId) -> bool {
        let Some(call) = self.calls.get_mut(&stream) else {
            return false;
        };
        let mut moved = false;
        while let Some((len, compressed)) = call.backlog.front().map(|(m, c)| (m.len(), *c)) {
            // Prefix and message go in together: an empty buffer always takes them,
            // a non-empty one only while both fit under the bound (a message is
            // never split by a refusal between its prefix and its body).
            let buffered = self.h2.send_buffered(stream);
            if buffered > 0 && buffered + PREFIX_LEN >= self.send_limit {
                return moved;
            }
            let (m, _) = call.backlog.pop_front().expect("present");
            let end = call.end_pending && call.backlog.is_empty();
            let sent = self
                .h2
                .send_data(stream, &message::flagged_prefix(compressed, len), false)
                .and_then(|()| self.h2.send_data(stream, &m, end));
            if let Err(e) = sent {
                // The stream ended under the caller; its event follows.
                log::debug!("dropping request messages: {e}");
                call.backlog.clear();
                call.end_pending = false;
                return moved;
            }
            moved = true;
            self.cz.sent(1);
            call.unsent += PREFIX_LEN + len;
            if end {
                call.end_pending = false;
            }
        }
        if std::mem::take(&mut call.end_pending) {
            moved = true;
            if let Err(e) = self.h2.send_data(stream, &[], true) {
                log::debug!("ending a request: {e}");
            }
        }
        moved
    }

    /// Lowers each stream's count of bytes waiting to be transmitted by what left
    /// since the last look, and tells writers waiting for room.
    fn report_transmitted(&mut self) -> bool {
        let mut writable = Vec::new();
        for (stream, call) in &mut self.calls {
            if call.unsent == 0 {
                continue;
            }
            let left = self.h2.send_buffered(*stream);
            if left < call.unsent {
                let sent = call.unsent - left;
                call.unsent = left;
                if call.shared.transmitted(sent) {
                    writable.push(call.shared.clone());
                }
            }
        }
        let waiting: Vec<StreamId> = self
            .calls
            .iter()
            .filter(|(_, c)| !c.backlog.is_empty() || c.end_pending)
            .map(|(s, _)| *s)
            .collect();
        let mut moved = false;
        for stream in waiting {
            moved |= self.flush(stream);
        }
        for shared in writable {
            shared.listener.on_writable();
        }
        moved
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            // The backlog is pushed after every transmit (`report_transmitted`).
            Event::SendReady { .. } => {}
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
                let Some(call) = self.calls.get_mut(&stream) else {
                    return;
                };
                let mut responses = std::mem::take(&mut self.responses);
                call.response
                    .on_headers(headers, end_stream, &mut responses);
                self.deliver(stream, &mut responses, end_stream);
                self.responses = responses;
            }
            Event::Data {
                stream,
                data,
                end_stream,
            } => {
                let Some(call) = self.calls.get_mut(&stream) else {
                    self.h2.release_capacity(stream, data.len());
                    return;
                };
                let mut responses = std::mem::take(&mut self.responses);
                call.response.on_data(&data, end_stream, &mut responses);
                let delivered = responses
                    .iter()
                    .map(|r| match r {
                        ResponseEvent::Message(m) => m.len(),
                        _ => 0,
                    })
                    .sum();
                // Prefixes and partial messages get their credit back now; complete
                // messages when the application releases them.
                let credit = call.credit.on_data(data.len(), delivered);
                if credit > 0 {
                    self.h2.release_capacity(stream, credit);
                }
                self.deliver(stream, &mut responses, end_stream);
                self.responses = responses;
            }
            Event::Reset { stream, cause } => {
                if let Some(mut call) = self.calls.remove(&stream) {
                    let outcome = call.response.on_reset(&cause);
                    call.shared.close(outcome);
                }
            }
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

    /// Hands a call's response events to its listener, in order; at the end of the
    /// call, the stream goes too: reset with NO_ERROR if the server ended it before
    /// our request ended (as gRPC does), with CANCEL if the response broke the rules.
    fn deliver(&mut self, stream: StreamId, responses: &mut Vec<ResponseEvent>, peer_ended: bool) {
        let Some(call) = self.calls.get(&stream) else {
            responses.clear();
            return;
        };
        let shared = call.shared.clone();
        for response in responses.drain(..) {
            match response {
                ResponseEvent::Headers(md) => shared.listener.on_headers(md),
                ResponseEvent::Message(m) => {
                    self.cz.received(1);
                    shared.listener.on_message(m);
                }
                ResponseEvent::End(status) => {
                    self.calls.remove(&stream);
                    let reason = if peer_ended {
                        Reason::NO_ERROR
                    } else {
                        Reason::CANCEL
                    };
                    self.h2.reset_stream(stream, reason);
                    shared.close(CallOutcome::processed(status));
                }
            }
        }
    }
}

/// How long [`H2Transport`] waits, at most, for its thread when dropped (documented for
/// users; the thread ends as soon as every connection has flushed its GOAWAY).
pub const SHUTDOWN_HINT: Duration = Duration::from_millis(100);
