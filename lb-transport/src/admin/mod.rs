//! The admin page: every channel of the process with its policy tree, subchannels,
//! sockets and recent events, as a web page served over HTTP/1.1.
//!
//! The data is channelz's ([`lb_core::channelz`]): the top channels the registry
//! lists, each with its policy tree ([`PolicyView`](lb_core::channelz::PolicyView),
//! asked of the channel's serializer), its subchannels and their sockets, its nested
//! channels (the RLS control channel), and the servers.
//!
//! | path | what |
//! |---|---|
//! | `/` | the page: one self-contained HTML document (inline CSS and JS, nothing loaded from elsewhere) that fetches `/api/channels` every 1.5 s and draws it |
//! | `/api/channels` | every top channel (at most [`AdminConfig::max_channels`]) and server, as JSON |
//! | `/api/channel/{id}` | one channel (top or nested) as JSON; 404 when there is none |
//! | others | what [`AdminServer::route`] added, such as a Prometheus exporter's `/metrics` |
//!
//! # Threads and limits
//!
//! ```text
//!  browser, curl ──TCP──> "lb-admin" (one mio loop: listener + every connection)
//!                           parse the head (httparse) ─> answer on this thread
//!                           (channelz snapshots; each policy tree waits at most
//!                           AdminConfig::policy_wait for its channel's serializer,
//!                           all of them at most AdminConfig::policy_budget)
//! ```
//!
//! One thread, no queue: requests are answered in the order they arrive, one at a
//! time. What a hostile or careless client can hold is bounded by [`AdminConfig`]:
//!
//! | limit | default | beyond it |
//! |---|---|---|
//! | [`max_head_bytes`](AdminConfig::max_head_bytes) | 8 KiB | 431 and close |
//! | request headers | 32 | 431 and close |
//! | [`max_connections`](AdminConfig::max_connections) | 64 | 503 and close |
//! | [`read_timeout`](AdminConfig::read_timeout): a whole request head, from the accept or the previous answer | 10 s | close |
//! | [`write_timeout`](AdminConfig::write_timeout): between two writes of an answer | 10 s | close |
//! | [`max_requests_per_connection`](AdminConfig::max_requests_per_connection) (keep-alive) | 100 | `connection: close` on the last answer |
//! | [`policy_wait`](AdminConfig::policy_wait): one channel's policy tree | 500 ms | that channel shows no tree |
//! | [`policy_budget`](AdminConfig::policy_budget): all policy trees of one answer | 2 s | the channels left show no tree |
//! | [`max_channels`](AdminConfig::max_channels): channels and servers listed, subchannels and sockets per entity | 100 | not listed (the JSON says how many more) |
//!
//! Only `GET` and `HEAD` are served (others get 405); a request with a body gets
//! 400 and the connection closes, since bodies are never read. A connection that
//! closes after an answer lingers: the server shuts its side and reads and drops
//! what the client still sends for up to 1 s or 64 KiB, so that the answer is not
//! lost to a reset. Unknown paths get
//! 404. A handler that panics answers 500. Every answer is sent with
//! `cache-control: no-store` and a content security policy that lets the page
//! load nothing from other origins.
//!
//! The page shows targets, addresses and configs: bind it to loopback (or put it
//! behind something that checks who asks). Nothing here changes any state.
//!
//! [`AdminServer::shutdown`] (or dropping the server) stops and joins the thread and
//! closes every connection.
//!
//! # Examples
//!
//! ```
//! use std::io::{Read, Write};
//! use lb_transport::admin::{AdminServer, Reply};
//!
//! let admin = AdminServer::bind("127.0.0.1:0")?;
//! admin.route("/metrics", |_req| Reply::new("text/plain; version=0.0.4", "up 1\n"));
//!
//! let mut conn = std::net::TcpStream::connect(admin.local_addr())?;
//! conn.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")?;
//! let mut answer = String::new();
//! conn.read_to_string(&mut answer)?;
//! assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
//! assert!(answer.ends_with("\r\n\r\nup 1\n"), "{answer}");
//! admin.shutdown();
//! # Ok::<(), std::io::Error>(())
//! ```

mod http;
mod json;
mod server;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use mio::{Interest, Poll, Waker};
use parking_lot::RwLock;

/// The page, inline CSS and JS included.
pub const PAGE: &str = include_str!("page.html");

/// The name of the admin server's thread.
pub const THREAD_NAME: &str = "lb-admin";

/// The admin server's limits (see the [module docs](self) for what happens beyond
/// each).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AdminConfig {
    /// The largest request head (request line and headers).
    pub max_head_bytes: usize,
    /// Connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// The time a client has for a whole request head, from the accept or from the
    /// end of the previous answer (so also the keep-alive idle time).
    pub read_timeout: Duration,
    /// The longest wait for the client to take more of an answer.
    pub write_timeout: Duration,
    /// Requests one connection may carry.
    pub max_requests_per_connection: usize,
    /// How long the JSON answers wait for one channel's policy tree (asked of the
    /// channel's serializer).
    pub policy_wait: Duration,
    /// How long one JSON answer waits for policy trees in all; channels asked
    /// after that show none.
    pub policy_budget: Duration,
    /// Top channels listed by `/api/channels` (and servers, and subchannels per
    /// channel, and sockets per subchannel or server).
    pub max_channels: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            max_head_bytes: 8 * 1024,
            max_connections: 64,
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_requests_per_connection: 100,
            policy_wait: Duration::from_millis(500),
            policy_budget: Duration::from_secs(2),
            max_channels: 100,
        }
    }
}

/// A request as a route handler sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    method: String,
    path: String,
    query: String,
}

impl Request {
    /// `GET` or `HEAD` (handlers see no other; a `HEAD` answer's body is dropped).
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path, without the query (`/metrics`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What followed `?` in the request target, undecoded; empty without one.
    pub fn query(&self) -> &str {
        &self.query
    }
}

/// An answer: status, content type and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Reply {
    /// A 200 answer.
    pub fn new(content_type: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status: 200,
            content_type: content_type.into(),
            body: body.into(),
        }
    }

    /// A short plain-text answer with `status` (a line of `message`).
    pub fn text(status: u16, message: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8".into(),
            body: format!("{message}\n").into_bytes(),
        }
    }

    /// The same answer with another status. Statuses outside 200..=599 become 500.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = if (200..=599).contains(&status) {
            status
        } else {
            500
        };
        self
    }

    /// The status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The content type.
    pub fn content_type(&self) -> &str {
        &self.content_type
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

impl<C: Into<String>, B: Into<Vec<u8>>> From<(C, B)> for Reply {
    /// A 200 answer from a content type and a body.
    fn from((content_type, body): (C, B)) -> Self {
        Self::new(content_type, body)
    }
}

/// What [`AdminServer::route`] keeps: runs on the admin thread, so it should be
/// quick (everything else waits meanwhile), must not block for long, and must not
/// shut its own server down (that joins the thread it runs on).
pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// What the thread shares with the handle.
pub(crate) struct Shared {
    pub(crate) config: AdminConfig,
    pub(crate) routes: RwLock<HashMap<String, Handler>>,
}

/// The paths the admin server answers itself; [`AdminServer::route`] refuses them.
const OWN_PATHS: &[&str] = &["/", "/index.html", "/api/channels"];
const CHANNEL_PREFIX: &str = "/api/channel/";

/// The admin page's HTTP/1.1 server: one thread (`lb-admin`), stopped and joined
/// by [`shutdown`](Self::shutdown) or drop. See the [module docs](self).
pub struct AdminServer {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Listens on `addr` (`127.0.0.1:0` picks a free port; see
    /// [`local_addr`](Self::local_addr)) with the default limits.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound or the thread cannot start.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Self::bind_with(addr, AdminConfig::default())
    }

    /// Listens on `addr` with the limits of `config`.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound or the thread cannot start.
    pub fn bind_with(addr: impl ToSocketAddrs, config: AdminConfig) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let mut listener = mio::net::TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, server::LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), server::WAKER)?);
        let config = AdminConfig {
            max_head_bytes: config.max_head_bytes.max(64),
            max_connections: config.max_connections.max(1),
            max_requests_per_connection: config.max_requests_per_connection.max(1),
            max_channels: config.max_channels.max(1),
            ..config
        };
        let shared = Arc::new(Shared {
            config,
            routes: RwLock::new(HashMap::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (shared.clone(), stop.clone());
            thread::Builder::new()
                .name(THREAD_NAME.into())
                .spawn(move || server::run(poll, listener, shared, stop))?
        };
        Ok(Self {
            local_addr,
            shared,
            stop,
            waker,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The page's address (`http://127.0.0.1:port/`).
    pub fn url(&self) -> String {
        format!("http://{}/", self.local_addr)
    }

    /// Answers `GET path` (and `HEAD`) with `handler`, replacing any handler
    /// `path` had. The path is matched exactly, without the query. Takes effect for
    /// the next request; callable from any thread.
    ///
    /// The handler returns a [`Reply`], or a `(content type, body)` pair for a 200
    /// answer, which is what a metrics exporter's scrape function gives:
    ///
    /// ```
    /// # let admin = lb_transport::admin::AdminServer::bind("127.0.0.1:0")?;
    /// let scrape = || ("text/plain; version=0.0.4", String::from("up 1\n"));
    /// admin.route("/metrics", move |_req| scrape());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Panics
    ///
    /// If `path` does not start with `/`, or is one of the page's own paths (`/`,
    /// `/index.html`, `/api/channels`, `/api/channel/…`).
    pub fn route<R: Into<Reply>>(
        &self,
        path: &str,
        handler: impl Fn(&Request) -> R + Send + Sync + 'static,
    ) -> &Self {
        assert!(
            path.starts_with('/'),
            "a route's path starts with '/': {path:?}"
        );
        assert!(
            !OWN_PATHS.contains(&path) && !path.starts_with(CHANNEL_PREFIX),
            "{path} is the admin page's own"
        );
        self.shared.routes.write().insert(
            path.to_owned(),
            Arc::new(move |r: &Request| handler(r).into()),
        );
        self
    }

    /// Stops the server: the thread ends after the request it is answering, every
    /// connection closes, and the thread is joined.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::Release);
        if let Err(e) = self.waker.wake() {
            // The loop also looks at the flag at least once a second.
            log::warn!("admin server: cannot wake the thread: {e}");
        }
        if thread.join().is_err() && !thread::panicking() {
            log::error!("the admin server's thread panicked");
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

impl fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminServer")
            .field("local_addr", &self.local_addr)
            .field("routes", &self.shared.routes.read().len())
            .finish_non_exhaustive()
    }
}

/// The answer to one request.
pub(crate) fn answer(shared: &Shared, request: &Request, has_body: bool) -> Reply {
    if request.method != "GET" && request.method != "HEAD" {
        return Reply::text(
            405,
            &format!("{} is not allowed here: GET or HEAD", request.method),
        );
    }
    if has_body {
        return Reply::text(400, "a GET or HEAD request has no body");
    }
    let config = &shared.config;
    let path = request.path.as_str();
    match path {
        "/" | "/index.html" => return Reply::new("text/html; charset=utf-8", PAGE),
        "/api/channels" => {
            let value = json::overview(config.max_channels, waits(config));
            return json_reply(&value);
        }
        _ => {}
    }
    if let Some(id) = path.strip_prefix(CHANNEL_PREFIX) {
        return match id.parse::<u64>() {
            Ok(id) => match json::channel_by_id(id, config.max_channels, waits(config)) {
                Some(value) => json_reply(&value),
                None => Reply::text(404, &format!("no channel {id}")),
            },
            Err(_) => Reply::text(404, &format!("not a channel id: {id:?}")),
        };
    }
    let handler = shared.routes.read().get(path).cloned();
    match handler {
        Some(handler) => match catch_unwind(AssertUnwindSafe(|| handler(request))) {
            Ok(reply) => reply,
            Err(_) => {
                log::error!("admin server: the handler of {path} panicked");
                Reply::text(500, &format!("the handler of {path} failed"))
            }
        },
        None => Reply::text(404, &format!("nothing at {path}")),
    }
}

fn waits(config: &AdminConfig) -> json::Waits {
    json::Waits::new(config.policy_wait, config.policy_budget)
}

fn json_reply(value: &serde_json::Value) -> Reply {
    Reply::new("application/json", value.to_string())
}
