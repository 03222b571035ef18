//! The I/O thread: a thin mio loop around the listener and every connection.
//!
//! Each pass:
//!
//! 1. waits in `poll` until the earliest deadline (connection timers, call deadlines,
//!    linger, shutdown), or not at all if a connection's read budget ran out;
//! 2. accepts until `WouldBlock`, and reads ready connections up to the budget;
//! 3. drains the inbox (unary results, pokes from streaming calls, shutdown) until
//!    it is empty;
//! 4. fires due call deadlines and connection timers, with the clock read once;
//! 5. drives every touched connection (events, streamed responses, writes), derives
//!    its interest from what is left to write, and drops the connections that are
//!    done. A connection that stopped at a budget (reading, or moving responses)
//!    is served again in the next pass without waiting.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::driver::channelz::SocketZ;
use crate::driver::stream::Stream;
use crate::server::Shared;
use crate::server::conn::{Conn, Dispatch};
use crate::server::worker::{IoSender, Job, ToIo};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;

/// Results, pokes and commands waiting for the I/O thread, at most (senders block
/// when it is full; a streaming call has at most one poke in it).
const INBOX_CAPACITY: usize = 1024;

/// Jobs waiting for a worker in the channel, per worker (more wait in the backlog).
const JOBS_PER_WORKER: usize = 4;

/// The I/O thread's state.
pub(crate) struct IoLoop {
    poll: Poll,
    /// `None` once the server stops accepting.
    listener: Option<TcpListener>,
    conns: HashMap<Token, Conn>,
    /// Tokens are never reused, so a late result cannot reach a newer connection.
    next_token: usize,
    dispatch: Dispatch,
    inbox: Receiver<ToIo>,
    /// Set by shutdown: when to close whatever is still open.
    shutdown_at: Option<Instant>,
    scratch: Vec<u8>,
}

impl IoLoop {
    /// The loop, the handle that sends it messages, and the workers' job receiver.
    pub(crate) fn new(
        mut listener: TcpListener,
        shared: &Arc<Shared>,
        workers: usize,
    ) -> io::Result<(Self, IoSender, Receiver<Job>)> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, inbox) = crossbeam_channel::bounded(INBOX_CAPACITY);
        let (jobs_tx, jobs_rx) = crossbeam_channel::bounded(workers * JOBS_PER_WORKER);
        let to_io = IoSender::new(tx, waker);
        let io_loop = Self {
            poll,
            listener: Some(listener),
            conns: HashMap::new(),
            next_token: FIRST_CONN,
            dispatch: Dispatch::new(Arc::clone(shared), jobs_tx, to_io.clone()),
            inbox,
            shutdown_at: None,
            scratch: vec![0; 64 << 10],
        };
        Ok((io_loop, to_io, jobs_rx))
    }

    /// Runs until shutdown has finished. Dropping the loop closes the job channel,
    /// which ends the workers.
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut read_again: Vec<Token> = Vec::new();
        let mut touched: Vec<Token> = Vec::new();
        loop {
            let timeout = if read_again.is_empty() {
                self.next_deadline()
                    .map(|at| at.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // Nothing can be served without poll: close everything and end.
                log::error!("server poll failed: {e}");
                self.close_all(Instant::now());
                return;
            }
            let now = Instant::now();
            touched.clear();
            for token in read_again.drain(..) {
                self.read(token, false, now, &mut touched);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now, &mut touched),
                    WAKER => {}
                    token => {
                        let closed = event.is_read_closed() || event.is_error();
                        if event.is_readable() || closed {
                            // A short read ends the pass only if this edge brought
                            // no close or error to see: it will not come again.
                            self.read(token, !closed, now, &mut touched);
                        } else {
                            touched.push(token);
                        }
                    }
                }
            }
            if !self.drain_inbox(now, &mut touched) {
                log::error!("server handle dropped without shutdown");
                self.close_all(now);
                return;
            }
            self.fire_timers(now, &mut touched);
            touched.sort_unstable();
            touched.dedup();
            for &token in &touched {
                self.service(token, now, &mut read_again);
            }
            self.dispatch.pump();
            if let Some(at) = self.shutdown_at {
                if self.conns.is_empty() {
                    return;
                }
                if now >= at {
                    self.close_all(now);
                    return;
                }
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let conns = self.conns.values().filter_map(Conn::next_timeout);
        conns
            .chain(self.dispatch.next_deadline())
            .chain(self.shutdown_at)
            .min()
    }

    fn accept(&mut self, now: Instant, touched: &mut Vec<Token>) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            let (mut socket, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    // Out of descriptors, say: the next connection attempt retries.
                    log::warn!("server accept failed: {e}");
                    return;
                }
            };
            if let Err(e) = socket.set_nodelay(true) {
                log::debug!("TCP_NODELAY on {peer}: {e}");
            }
            let token = Token(self.next_token);
            self.next_token += 1;
            if let Err(e) = self
                .poll
                .registry()
                .register(&mut socket, token, Interest::READABLE)
            {
                log::warn!("cannot register connection from {peer}: {e}");
                continue;
            }
            let config = self.dispatch.shared.config.clone();
            #[allow(unused_mut)]
            let mut stream = Stream::new(socket);
            #[cfg(feature = "tls")]
            if let Some(tls) = &self.dispatch.shared.tls {
                match tls.start() {
                    Ok(session) => stream.tls = Some(Box::new(rustls::Connection::Server(session))),
                    Err(e) => {
                        log::warn!("TLS session for {peer}: {e}");
                        let _ = self.poll.registry().deregister(&mut stream.tcp);
                        continue;
                    }
                }
            }
            let local = stream.tcp.local_addr().ok();
            let cz = SocketZ::register(lb_core::channelz::next_id(), false, local, Some(peer));
            let server = Arc::clone(&self.dispatch.shared.cz);
            server.sockets.lock().insert(cz.id());
            self.conns.insert(
                token,
                Conn::new(
                    token,
                    stream,
                    config,
                    cz,
                    server,
                    now,
                    self.dispatch.shared.metrics.clone(),
                ),
            );
            // Our SETTINGS go out at once; bytes that came with the connection are
            // read at once too.
            touched.push(token);
            if let Some(conn) = self.conns.get_mut(&token) {
                conn.read(&mut self.scratch, false, now);
            }
        }
    }

    fn read(
        &mut self,
        token: Token,
        short_read_drains: bool,
        now: Instant,
        touched: &mut Vec<Token>,
    ) {
        if let Some(conn) = self.conns.get_mut(&token) {
            conn.read(&mut self.scratch, short_read_drains, now);
            touched.push(token);
        }
    }

    /// Handles every message waiting; `false` if every sender is gone.
    fn drain_inbox(&mut self, now: Instant, touched: &mut Vec<Token>) -> bool {
        loop {
            match self.inbox.try_recv() {
                Ok(ToIo::Completion {
                    conn,
                    stream,
                    result,
                }) => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.complete(stream, result, &mut self.dispatch);
                        touched.push(conn);
                    }
                }
                Ok(ToIo::Poke { conn, stream }) => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.poke(stream, &mut self.dispatch);
                        touched.push(conn);
                    }
                }
                Ok(ToIo::Shutdown { grace }) => self.begin_shutdown(grace, now, touched),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn begin_shutdown(&mut self, grace: Duration, now: Instant, touched: &mut Vec<Token>) {
        if let Some(mut listener) = self.listener.take() {
            if let Err(e) = self.poll.registry().deregister(&mut listener) {
                log::debug!("deregistering the listener: {e}");
            }
        }
        let at = now
            .checked_add(grace)
            .unwrap_or(now + Duration::from_secs(86_400));
        self.shutdown_at = Some(self.shutdown_at.map_or(at, |t| t.min(at)));
        for (token, conn) in &mut self.conns {
            conn.go_away();
            touched.push(*token);
        }
    }

    fn fire_timers(&mut self, now: Instant, touched: &mut Vec<Token>) {
        while let Some(&(at, token, stream)) = self.dispatch.deadlines.first() {
            if at > now {
                break;
            }
            self.dispatch.deadlines.pop_first();
            if let Some(conn) = self.conns.get_mut(&token) {
                conn.expire(stream, &mut self.dispatch);
                touched.push(token);
            }
        }
        for (token, conn) in &mut self.conns {
            if conn.next_timeout().is_some_and(|at| at <= now) {
                conn.handle_timeout(now);
                touched.push(*token);
            }
        }
    }

    /// Drives one connection, then re-registers or drops it.
    fn service(&mut self, token: Token, now: Instant, read_again: &mut Vec<Token>) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        conn.drive(&mut self.dispatch, now);
        if conn.is_done(now) {
            self.remove(token);
            return;
        }
        let wanted = conn.wanted_interest();
        if wanted != conn.interest {
            match self
                .poll
                .registry()
                .reregister(&mut conn.stream.tcp, token, wanted)
            {
                Ok(()) => conn.interest = wanted,
                Err(e) => {
                    log::warn!("cannot re-register connection {}: {e}", token.0);
                    self.remove(token);
                    return;
                }
            }
        }
        if conn.read_again || conn.again {
            read_again.push(token);
        }
    }

    fn remove(&mut self, token: Token) {
        if let Some(mut conn) = self.conns.remove(&token) {
            conn.drop_calls(&mut self.dispatch, "the connection closed");
            self.dispatch.shared.cz.sockets.lock().remove(&conn.cz.id());
            if let Err(e) = self.poll.registry().deregister(&mut conn.stream.tcp) {
                log::debug!("deregistering connection {}: {e}", token.0);
            }
        }
    }

    /// Closes every connection at once: GOAWAY if it can be written, then drop.
    fn close_all(&mut self, now: Instant) {
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for token in tokens {
            if let Some(conn) = self.conns.get_mut(&token) {
                conn.close(&mut self.dispatch);
                conn.drive(&mut self.dispatch, now);
            }
            self.remove(token);
        }
    }
}
