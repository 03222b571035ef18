//! An in-memory [`Transport`]: servers are closures, failures are scripted.
//!
//! This first version runs every call inline, on the calling thread, and reports
//! connection events inline too. It does not look at deadlines, so tests that use a
//! manual clock stay deterministic.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use lb_core::transport::{
    CallCompletion, CallError, CallRequest, CallResponse, ConnectOptions, ConnectionEvent,
    ConnectionEvents,
};
use lb_core::{Address, Connection, Status, Transport};
use parking_lot::Mutex;

/// A server: answers one request.
pub type ServerHandler = Arc<dyn Fn(&CallRequest) -> Result<CallResponse, Status> + Send + Sync>;

struct Server {
    handler: ServerHandler,
    refusing: bool,
    connections: Vec<Weak<MemConnection>>,
    calls: Arc<AtomicUsize>,
}

#[derive(Default)]
struct Servers {
    by_address: HashMap<String, Server>,
}

/// A transport whose servers live in this process.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use lb_core::transport::{CallRequest, CallResponse, ConnectOptions, ConnectionEvent};
/// use lb_core::{Address, Transport};
/// use lb_testkit::InMemoryTransport;
///
/// let transport = InMemoryTransport::new();
/// transport.add_server("echo:1", |req: &CallRequest| {
///     Ok(CallResponse { message: req.message.clone(), ..Default::default() })
/// });
/// let events = Arc::new(parking_lot::Mutex::new(Vec::new()));
/// let sink = events.clone();
/// let opts = ConnectOptions {
///     authority: "echo".into(),
///     connect_deadline: std::time::Instant::now(),
///     user_agent: "test".into(),
/// };
/// let conn = transport
///     .connect(&Address::new("echo:1"), &opts, Arc::new(move |e| sink.lock().push(e)))
///     .unwrap();
/// assert_eq!(*events.lock(), [ConnectionEvent::Ready]);
/// let (tx, rx) = crossbeam_channel::bounded(1);
/// conn.start_call(CallRequest::new("/echo.Echo/Say", b"hi".to_vec()), Box::new(move |r| tx.send(r).unwrap()));
/// assert_eq!(rx.recv().unwrap().unwrap().message, b"hi");
/// ```
#[derive(Clone, Default)]
pub struct InMemoryTransport {
    servers: Arc<Mutex<Servers>>,
}

impl InMemoryTransport {
    /// A transport with no servers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `address` with `handler`, replacing any server there.
    pub fn add_server(
        &self,
        address: &str,
        handler: impl Fn(&CallRequest) -> Result<CallResponse, Status> + Send + Sync + 'static,
    ) {
        let mut servers = self.servers.lock();
        let old = servers.by_address.insert(
            address.into(),
            Server {
                handler: Arc::new(handler),
                refusing: false,
                connections: Vec::new(),
                calls: Arc::default(),
            },
        );
        drop(servers);
        if let Some(old) = old {
            close_all(old.connections, None);
        }
    }

    /// Stops the server at `address`: its connections close with UNAVAILABLE and new
    /// ones are refused.
    pub fn remove_server(&self, address: &str) {
        let old = self.servers.lock().by_address.remove(address);
        if let Some(old) = old {
            close_all(
                old.connections,
                Some(Status::unavailable(format!("{address}: server stopped"))),
            );
        }
    }

    /// Makes new connections to `address` fail (or succeed again).
    pub fn refuse_connections(&self, address: &str, refuse: bool) {
        if let Some(s) = self.servers.lock().by_address.get_mut(address) {
            s.refusing = refuse;
        }
    }

    /// Closes every connection to `address` cleanly (as after an idle timeout).
    pub fn close_connections(&self, address: &str) {
        let conns = self.take_connections(address);
        close_all(conns, None);
    }

    /// Sends GOAWAY on every connection to `address`, then closes them.
    pub fn go_away(&self, address: &str) {
        for c in self
            .take_connections(address)
            .iter()
            .filter_map(Weak::upgrade)
        {
            (c.events)(ConnectionEvent::GoAway {
                reason: "server going away".into(),
                too_many_pings: false,
            });
            c.close_with(None);
        }
    }

    /// How many open connections `address` has.
    pub fn connection_count(&self, address: &str) -> usize {
        let mut servers = self.servers.lock();
        servers.by_address.get_mut(address).map_or(0, |s| {
            s.connections.retain(|c| {
                c.upgrade()
                    .is_some_and(|c| !c.closed.load(Ordering::SeqCst))
            });
            s.connections.len()
        })
    }

    /// How many calls `address` has served.
    pub fn call_count(&self, address: &str) -> usize {
        self.servers
            .lock()
            .by_address
            .get(address)
            .map_or(0, |s| s.calls.load(Ordering::SeqCst))
    }

    fn take_connections(&self, address: &str) -> Vec<Weak<MemConnection>> {
        self.servers
            .lock()
            .by_address
            .get_mut(address)
            .map(|s| std::mem::take(&mut s.connections))
            .unwrap_or_default()
    }
}

impl fmt::Debug for InMemoryTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let servers = self.servers.lock();
        f.debug_list().entries(servers.by_address.keys()).finish()
    }
}

fn close_all(conns: Vec<Weak<MemConnection>>, error: Option<Status>) {
    for c in conns.iter().filter_map(Weak::upgrade) {
        c.close_with(error.clone());
    }
}

struct MemConnection {
    address: String,
    servers: Arc<Mutex<Servers>>,
    events: ConnectionEvents,
    closed: AtomicBool,
}

impl MemConnection {
    fn close_with(&self, error: Option<Status>) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            (self.events)(ConnectionEvent::Closed(error));
        }
    }
}

impl Connection for MemConnection {
    fn start_call(&self, call: CallRequest, done: CallCompletion) {
        if self.closed.load(Ordering::SeqCst) {
            return done(Err(CallError::unprocessed(Status::unavailable(
                "connection closed before the call was sent",
            ))));
        }
        let server = self
            .servers
            .lock()
            .by_address
            .get(&self.address)
            .map(|s| (s.handler.clone(), s.calls.clone()));
        let Some((handler, calls)) = server else {
            return done(Err(CallError::unprocessed(Status::unavailable(
                "server gone before the call was sent",
            ))));
        };
        calls.fetch_add(1, Ordering::SeqCst);
        done(handler(&call).map_err(CallError::from));
    }

    fn close(&self) {
        self.close_with(None);
    }
}

impl Transport for InMemoryTransport {
    fn connect(
        &self,
        address: &Address,
        _options: &ConnectOptions,
        events: ConnectionEvents,
    ) -> Result<Arc<dyn Connection>, Status> {
        let conn = Arc::new(MemConnection {
            address: address.address.clone(),
            servers: self.servers.clone(),
            events,
            closed: AtomicBool::new(false),
        });
        let accepted = {
            let mut servers = self.servers.lock();
            match servers.by_address.get_mut(&address.address) {
                Some(s) if !s.refusing => {
                    s.connections.push(Arc::downgrade(&conn));
                    true
                }
                _ => false,
            }
        };
        if accepted {
            (conn.events)(ConnectionEvent::Ready);
        } else {
            conn.close_with(Some(Status::unavailable(format!(
                "{address}: connection refused"
            ))));
        }
        Ok(conn)
    }
}
