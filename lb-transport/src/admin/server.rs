//! The `lb-admin` thread: one mio loop owning the listener and every connection.
//! Requests are answered on this thread, one at a time, in the order they arrive.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::http::{self, Parsed};
use super::{Reply, Shared};

pub(crate) const LISTENER: Token = Token(0);
pub(crate) const WAKER: Token = Token(1);

/// How long one `poll` may sleep when no connection has a deadline (the stop flag
/// is also signalled through the waker, so this is only a safety net).
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// The bytes one `read` call takes at most.
const READ_CHUNK: usize = 4096;

/// After the last answer of a connection, how long and how much of what the client
/// still sends is read and dropped before the socket closes (closing with unread
/// bytes resets the connection, and a reset can destroy the answer before the
/// client reads it: a 431 to a client still sending its head, say).
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

struct Conn {
    stream: TcpStream,
    /// Received bytes not yet parsed: at most `max_head_bytes`.
    inbuf: Vec<u8>,
    /// The answer being written, and how much of it is out.
    out: Vec<u8>,
    written: usize,
    /// Close once `out` is written.
    close_after_write: bool,
    /// Requests answered on this connection.
    served: usize,
    /// When the connection is closed unless it makes progress: a request head must
    /// be complete by then (from the previous answer or the accept), and a write
    /// must move.
    deadline: Instant,
    /// The peer closed its side.
    eof: bool,
    /// The last answer is out and our side is shut: reading and dropping what
    /// comes until EOF, [`LINGER_BYTES`] or the deadline.
    lingering: Option<usize>,
}

/// The loop: runs until `stop` is set (and the waker poked).
pub(crate) fn run(
    mut poll: Poll,
    mut listener: TcpListener,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) {
    let mut events = Events::with_capacity(256);
    let mut conns: HashMap<Token, Conn> = HashMap::new();
    let mut next_token = 2usize;
    let mut ready: Vec<Token> = Vec::new();
    loop {
        let now = Instant::now();
        let timeout = conns
            .values()
            .map(|c| c.deadline.saturating_duration_since(now))
            .min()
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            log::error!("admin server: poll failed: {e}");
            break;
        }
        if stop.load(Ordering::Acquire) {
            break;
        }
        ready.clear();
        for event in events.iter() {
            match event.token() {
                LISTENER => accept(
                    &mut poll,
                    &mut listener,
                    &mut conns,
                    &mut next_token,
                    &shared,
                    &mut ready,
                ),
                WAKER => {}
                token => ready.push(token),
            }
        }
        let now = Instant::now();
        for token in ready.drain(..) {
            let Some(conn) = conns.get_mut(&token) else {
                continue;
            };
            if !drive(conn, &shared, now) {
                close(&mut poll, conns.remove(&token));
            }
        }
        let now = Instant::now();
        let expired: Vec<Token> = conns
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for token in expired {
            close(&mut poll, conns.remove(&token));
        }
    }
    for (_, conn) in conns.drain() {
        close(&mut poll, Some(conn));
    }
}

fn accept(
    poll: &mut Poll,
    listener: &mut TcpListener,
    conns: &mut HashMap<Token, Conn>,
    next_token: &mut usize,
    shared: &Shared,
    ready: &mut Vec<Token>,
) {
    let config = &shared.config;
    loop {
        let mut stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Out of descriptors, say: leave the rest in the backlog until the
                // next event rather than spinning.
                log::warn!("admin server: accept failed: {e}");
                return;
            }
        };
        if conns.len() >= config.max_connections {
            // Best effort: a short answer fits in the socket buffer of a fresh
            // connection; then the connection closes.
            let reply = Reply::text(503, "too many connections to the admin server");
            let _ = stream.write_all(&http::encode(&reply, false, false));
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        }
        let token = Token(*next_token);
        *next_token += 1;
        if let Err(e) =
            poll.registry()
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        {
            log::warn!("admin server: cannot register a connection: {e}");
            continue;
        }
        let _ = stream.set_nodelay(true);
        conns.insert(
            token,
            Conn {
                stream,
                inbuf: Vec::new(),
                out: Vec::new(),
                written: 0,
                close_after_write: false,
                served: 0,
                deadline: Instant::now() + config.read_timeout,
                eof: false,
                lingering: None,
            },
        );
        // Data may already be there; edge-triggered events for it may have come
        // before the registration.
        ready.push(token);
    }
}

fn close(poll: &mut Poll, conn: Option<Conn>) {
    if let Some(mut conn) = conn {
        let _ = poll.registry().deregister(&mut conn.stream);
        let _ = conn.stream.shutdown(Shutdown::Both);
    }
}

/// Moves `conn` on as far as it goes without blocking: writes the pending
/// answer, parses and answers requests, reads. `false` when it is to be closed.
fn drive(conn: &mut Conn, shared: &Shared, now: Instant) -> bool {
    let config = &shared.config;
    loop {
        if let Some(dropped) = &mut conn.lingering {
            let mut chunk = [0u8; READ_CHUNK];
            match conn.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) if *dropped + n >= LINGER_BYTES => return false,
                Ok(n) => *dropped += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
            continue;
        }
        if conn.written < conn.out.len() {
            match conn.stream.write(&conn.out[conn.written..]) {
                Ok(0) => return false,
                Ok(n) => {
                    conn.written += n;
                    conn.deadline = now + config.write_timeout;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        if !conn.out.is_empty() {
            conn.out = Vec::new();
            conn.written = 0;
            if conn.close_after_write {
                if conn.eof || conn.stream.shutdown(Shutdown::Write).is_err() {
                    return false;
                }
                conn.lingering = Some(0);
                conn.deadline = now + LINGER_TIME;
                continue;
            }
            conn.deadline = now + config.read_timeout;
        }
        match http::parse(&conn.inbuf, config.max_head_bytes) {
            Parsed::Request {
                request,
                len,
                keep_alive,
                has_body,
            } => {
                conn.inbuf.drain(..len);
                conn.served += 1;
                let keep_alive =
                    keep_alive && !has_body && conn.served < config.max_requests_per_connection;
                let head_only = request.method == "HEAD";
                let reply = super::answer(shared, &request, has_body);
                conn.out = http::encode(&reply, head_only, keep_alive);
                conn.close_after_write = !keep_alive;
                conn.deadline = now + config.write_timeout;
                continue;
            }
            Parsed::Error(reply) => {
                conn.inbuf.clear();
                conn.out = http::encode(&reply, false, false);
                conn.close_after_write = true;
                conn.deadline = now + config.write_timeout;
                continue;
            }
            Parsed::Partial => {}
        }
        if conn.eof {
            return false;
        }
        let room = config.max_head_bytes - conn.inbuf.len();
        let mut chunk = [0u8; READ_CHUNK];
        let want = room.clamp(1, READ_CHUNK);
        match conn.stream.read(&mut chunk[..want]) {
            Ok(0) => conn.eof = true,
            Ok(n) => conn.inbuf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}
