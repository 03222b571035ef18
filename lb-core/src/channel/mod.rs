//! The channel: what a program holds to make calls. It joins a target's resolver, the
//! root policy, the picker and a [`Transport`](crate::Transport), with blocking calls
//! of every kind (unary, server-streaming, client-streaming, bidi), deadlines and
//! wait-for-ready.
//!
//! ```text
//!  app threads ── call ── pick once (lock-free read of the picker cell)
//!      │                   ├ Pick(sc)  → sc's connection.open_stream → send / recv
//!      │                   └ Queue     → wait for the next picker or the deadline
//!      │
//!  serializer thread "lb-serializer" (one per channel) ── ChannelCore
//!      inputs: resolver updates, subchannel connect/shutdown, connection events,
//!              policy work requests, exit-idle, clock jumps, close
//!      timers: connect deadlines, backoff, policy wake-ups, idleness, re-resolution
//!
//!  resolver: "dns" resolves on a thread "lb-resolver-dns"; the static schemes have none
//! ```
//!
//! # Building a channel
//!
//! [`Channel::builder`] takes a target (`dns:///host:port`, `host:port`,
//! `passthrough:///address`, `ipv4:a:p,b:p`, `ipv6:[a]:p`, `unix:/path`, or any scheme
//! registered in a [`ResolverRegistry`]) and a transport; everything else has a
//! default. The channel starts IDLE and connects on its first call.
//!
//! ```
//! use std::sync::Arc;
//! use lb_core::channel::{CallOptions, Channel};
//! # use lb_core::{Address, Connection, Metadata, Status, transport::*};
//! # struct Echo(Arc<dyn CallListener>);
//! # impl CallStream for Echo {
//! #     fn try_send(&self, m: Vec<u8>, last: bool) -> Result<(), TrySendError> {
//! #         self.0.on_message(m);
//! #         if last { self.0.on_close(CallOutcome::processed(Status::ok())); }
//! #         Ok(())
//! #     }
//! #     fn half_close(&self) {}
//! #     fn cancel(&self) {}
//! #     fn release(&self, _: usize) {}
//! # }
//! # struct EchoConnection;
//! # impl Connection for EchoConnection {
//! #     fn open_stream(&self, _: CallHead, l: Arc<dyn CallListener>) -> Arc<dyn CallStream> {
//! #         l.on_headers(Metadata::new());
//! #         Arc::new(Echo(l))
//! #     }
//! #     fn close(&self) {}
//! # }
//! # struct EchoTransport;
//! # impl Transport for EchoTransport {
//! #     fn connect(&self, _: &Address, _: &ConnectOptions, events: ConnectionEvents)
//! #         -> Result<Arc<dyn Connection>, Status> {
//! #         events(ConnectionEvent::Ready);
//! #         Ok(Arc::new(EchoConnection))
//! #     }
//! # }
//! let channel = Channel::builder("ipv4:10.0.0.1:50051,10.0.0.2:50051")
//!     .transport(Arc::new(EchoTransport))
//!     .default_service_config(r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#)
//!     .build()?;
//! let response = channel.unary("/echo.Echo/Say", b"hi", CallOptions::default())?;
//! assert_eq!(response.message, b"hi");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Calls
//!
//! Every kind of call runs on one pipeline ([`Call`]): [`Channel::unary`],
//! [`Channel::server_streaming`] (an iterator of responses),
//! [`Channel::client_streaming`] (a sender, then the response) and
//! [`Channel::bidi_streaming`] (a call that splits into a sender and a receiver for
//! two threads). The pick is made once per call, when it starts. Sending waits while
//! the stream has no room ([`Call::try_send`] does not); a slow reader stops the
//! server through HTTP/2 flow control. Dropping an unfinished call cancels it.
//!
//! [`Channel::unary`] blocks until the response, an error status, or the deadline.
//! A call whose pick is queued waits for the next picker; a fail-fast call fails
//! while the channel is in TRANSIENT_FAILURE, a wait-for-ready call keeps waiting
//! and, at its deadline, reports the latest picker error. A call the transport says
//! the server never saw is sent again (transparent retry, up to
//! [`MAX_TRANSPARENT_RETRIES`] times, within the deadline). The service config's
//! `methodConfig` sets `timeout` and `waitForReady` per method.
//!
//! # Connectivity and idleness
//!
//! [`Channel::state`] reports the channel's state (and can ask it to connect);
//! [`Channel::wait_for_state_change`] waits for a change. After the idle timeout
//! (30 minutes by default) with no calls the channel closes its policy and every
//! connection and goes IDLE; the next call builds the policy again from the last
//! resolver result.
//!
//! # Health checks
//!
//! With `"healthCheckConfig": {"serviceName": "…"}` in the service config (gRFC
//! A17), each READY connection watches `grpc.health.v1.Health/Watch` for that service
//! (see [`crate::health`]), and the policy sees it READY, so calls reach it, only
//! while the server says SERVING; until the first answer it is CONNECTING, otherwise
//! TRANSIENT_FAILURE with a status naming the health state. A server without the
//! health service (UNIMPLEMENTED) counts as healthy. Failed watches are re-opened
//! with the channel's backoff. [`ChannelBuilder::disable_health_check`] turns this
//! off.
//!
//! # Load reports (ORCA)
//!
//! A policy that asks with
//! [`Subchannel::request_oob_reports`](crate::Subchannel::request_oob_reports) (as
//! `weighted_round_robin` does with `enableOobLoadReport`) gets an
//! `OpenRcaService/StreamCoreMetrics` stream on each READY connection of that
//! subchannel (gRFC A51); each report reaches its listener on the serializer, only
//! the latest waiting. Streams are re-opened with the channel's backoff and cancelled
//! when the connection leaves READY or the policy stops asking. Per-call reports need
//! no channel support: a picker's completion callback reads them from the call's
//! trailers with [`crate::orca::report_from`].
//!
//! # Closing
//!
//! [`Channel::close`], or dropping the last clone, closes the policy, every
//! subchannel and connection and the resolver, and ends every thread the channel
//! started before it returns. Every call blocked in the channel, and every later
//! call, returns CANCELLED "channel closed".
//!
//! # Time
//!
//! The channel reads time only from its [`Clock`]. Tests give it lb-testkit's
//! `ManualClock`: the channel's threads wake when the test moves the clock, and
//! [`Channel::settle`] waits until the serializer has handled everything queued.

mod builder;
mod call;
mod call_metrics;
mod cell;
mod clock;
mod core;
mod dns;
mod entity;
mod factory;
mod health;
mod orca;
mod pool;
mod pool_metrics;
mod resolver;
mod retry;
mod selector;
mod serializer;
mod service_config;
mod target;
mod watch;

use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{at, never, select};
use parking_lot::Mutex;

pub use builder::{
    ChannelBuilder, ChannelError, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_RECEIVE_MESSAGE_SIZE,
};
pub use call::{
    Call, CallOptions, CallReceiver, CallSender, ClientStreaming, Codec, MAX_TRANSPARENT_RETRIES,
    SendError, ServerStreaming, UnaryResponse,
};
pub use clock::{Clock, ClockListener, SystemClock};
pub use dns::DnsResolverBuilder;
pub use factory::ChannelFactory;
pub use resolver::{
    DEFAULT_PORT, IpResolverBuilder, MIN_RESOLUTION_INTERVAL, PassthroughResolverBuilder,
    REFRESH_INTERVAL, Resolver, ResolverBuilder, ResolverHandle, ResolverInbox, ResolverRegistry,
    UnixResolverBuilder,
};
pub use retry::{
    CHANNEL_RETRY_BUFFER_LIMIT, CodeSet, HedgingPolicy, MAX_ATTEMPTS, PREVIOUS_ATTEMPTS_HEADER,
    PUSHBACK_TRAILER, RETRY_BUFFER_LIMIT, RetryPolicy, RetryStats, RetryThrottling,
};
pub use selector::{CallConfig, ConfigSelector, SelectorRef};
pub use service_config::{MethodConfig, ServiceConfig};
pub use target::{DEFAULT_SCHEME, Target};

use self::core::{Input, Shared};
use crate::state::ConnectivityState;
use crate::status::Status;

/// A channel to one target. Cheap to clone; clones are the same channel, and the
/// last one dropped closes it. See the [module docs](self).
#[derive(Clone)]
pub struct Channel {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    target: Target,
    authority: String,
}

impl Channel {
    /// Starts building a channel to `target`.
    pub fn builder(target: impl Into<String>) -> ChannelBuilder {
        ChannelBuilder::new(target)
    }

    fn new(shared: Arc<Shared>, thread: JoinHandle<()>, target: Target, authority: String) -> Self {
        Self {
            inner: Arc::new(Inner {
                shared,
                thread: Mutex::new(Some(thread)),
                target,
                authority,
            }),
        }
    }

    /// The parsed target.
    pub fn target(&self) -> &Target {
        &self.inner.target
    }

    /// The `:authority` calls carry.
    pub fn authority(&self) -> &str {
        &self.inner.authority
    }

    /// Makes a unary call to `method` (`/package.Service/Method`) and waits for its
    /// response.
    ///
    /// # Errors
    ///
    /// The call's status: the server's, DEADLINE_EXCEEDED, UNAVAILABLE when no
    /// backend could be reached (fail-fast), a picker's (sanitized), CANCELLED when
    /// the channel closes, RESOURCE_EXHAUSTED for a message over the size limits,
    /// INTERNAL for a malformed method name.
    pub fn unary(
        &self,
        method: &str,
        request: impl Into<Vec<u8>>,
        options: CallOptions,
    ) -> Result<UnaryResponse, Status> {
        call::unary(&self.inner.shared, method, request.into(), &options)
    }

    /// A unary call with typed messages, serialized by `codec`.
    ///
    /// # Errors
    ///
    /// As [`Channel::unary`], or the codec's error for a response it cannot parse.
    pub fn unary_typed<C: Codec>(
        &self,
        method: &str,
        codec: &C,
        request: &C::Request,
        options: CallOptions,
    ) -> Result<C::Response, Status> {
        let response = self.unary(method, codec.encode(request), options)?;
        codec.decode(&response.message)
    }

    /// Starts a server-streaming call: one request message, then an iterator of
    /// response messages. Returns once the call is on a connection (the pick is made
    /// once, here).
    ///
    /// # Errors
    ///
    /// The call could not start: as [`Channel::unary`] before a response.
    pub fn server_streaming(
        &self,
        method: &str,
        request: impl Into<Vec<u8>>,
        options: CallOptions,
    ) -> Result<ServerStreaming, Status> {
        call::server_streaming(&self.inner.shared, method, request.into(), &options)
    }

    /// Starts a client-streaming call: send request messages, then
    /// [`ClientStreaming::finish`] for the one response.
    ///
    /// # Errors
    ///
    /// The call could not start: as [`Channel::unary`] before a response.
    pub fn client_streaming(
        &self,
        method: &str,
        options: CallOptions,
    ) -> Result<ClientStreaming, Status> {
        call::client_streaming(&self.inner.shared, method, &options)
    }

    /// Starts a bidirectional-streaming call: a [`Call`] that sends and receives
    /// messages in any order, and can be [split](Call::split) into a sending half
    /// and a receiving half for two threads.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use lb_core::channel::{CallOptions, Channel};
    /// # fn demo(channel: &Channel) -> Result<(), lb_core::Status> {
    /// let call = channel.bidi_streaming("/chat.Chat/Talk", CallOptions::default())?;
    /// let (tx, rx) = call.split();
    /// let writer = std::thread::spawn(move || {
    ///     for line in ["hello", "bye"] {
    ///         tx.send(line)?;
    ///     }
    ///     tx.close_send();
    ///     Ok::<(), lb_core::channel::SendError>(())
    /// });
    /// for reply in rx {
    ///     println!("{}", String::from_utf8_lossy(&reply?));
    /// }
    /// writer.join().unwrap().map_err(lb_core::Status::from)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The call could not start: as [`Channel::unary`] before a response.
    pub fn bidi_streaming(&self, method: &str, options: CallOptions) -> Result<Call, Status> {
        Call::start(&self.inner.shared, method, &options)
    }

    /// The channel's id in the channelz registry
    /// ([`channelz::registry`](crate::channelz::registry)), where its snapshot
    /// ([`Entity::snapshot`](crate::channelz::Entity::snapshot)) and policy tree
    /// ([`Entity::policy`](crate::channelz::Entity::policy)) are, until it closes.
    pub fn channelz_id(&self) -> u64 {
        self.inner.shared.channelz.id
    }

    /// Maps times on the channel's clock to the wall-clock times channelz shows.
    pub fn wall_anchor(&self) -> crate::channelz::WallAnchor {
        self.inner.shared.channelz.anchor()
    }

    /// What the channel's calls have retried so far (see [`RetryStats`]).
    pub fn retry_stats(&self) -> RetryStats {
        self.inner.shared.retries.stats()
    }

    /// The channel's connectivity state. With `try_to_connect`, an IDLE channel
    /// starts connecting.
    pub fn state(&self, try_to_connect: bool) -> ConnectivityState {
        let state = self.inner.shared.cell.load().state;
        if try_to_connect && state == ConnectivityState::Idle {
            let _ = self.inner.shared.tx.send(Input::ExitIdle);
        }
        state
    }

    /// Waits until the state is no longer `source`, or until `deadline` (on the
    /// channel's clock). Returns whether it changed.
    pub fn wait_for_state_change(&self, source: ConnectivityState, deadline: Instant) -> bool {
        let shared = &self.inner.shared;
        let timer = if shared.real_time {
            at(deadline)
        } else {
            never()
        };
        loop {
            let snapshot = shared.cell.load_full();
            if snapshot.state != source {
                return true;
            }
            if shared.clock.now() >= deadline {
                return false;
            }
            select! {
                recv(snapshot.replaced()) -> _ => {}
                recv(timer) -> _ => {}
            }
        }
    }

    /// Waits until the serializer has handled every input queued before this call,
    /// and the inputs that handling queued in turn (a barrier for tests: after
    /// `settle`, every effect of a clock jump or a resolver update that the
    /// serializer makes itself is visible). Gives up after 60 s of real time and
    /// returns `false` then.
    pub fn settle(&self) -> bool {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self
            .inner
            .shared
            .tx
            .send(Input::Settle {
                reply: tx,
                rounds: 0,
            })
            .is_err()
        {
            return true;
        }
        !matches!(
            rx.recv_timeout(Duration::from_secs(60)),
            Err(crossbeam_channel::RecvTimeoutError::Timeout)
        )
    }

    /// Closes the channel: the policy, every subchannel and connection, the
    /// resolver, and every thread the channel started, before it returns. Calls in
    /// progress and later calls return CANCELLED "channel closed". Idempotent; any
    /// clone may close it.
    ///
    /// # Panics
    ///
    /// If the serializer thread panicked (a policy did), the panic is raised here.
    pub fn close(&self) {
        if let Err(panic) = self.inner.close() {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Inner {
    fn close(&self) -> std::thread::Result<()> {
        self.shared
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
        let _ = self.shared.tx.send(Input::Close);
        let thread = self.thread.lock().take();
        match thread {
            Some(t) if t.thread().id() != std::thread::current().id() => t.join(),
            _ => Ok(()),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.close().is_err() {
            log::error!("the channel's serializer thread panicked");
        }
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("target", &self.inner.target)
            .field("state", &self.inner.shared.cell.load().state)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
