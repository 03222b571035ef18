//! The xDS client: one ADS stream to a management server, over a channel the
//! caller builds (so any transport: lb-transport's HTTP/2, TLS, or an in-memory
//! one in tests), shared by every watcher of every resource type.
//!
//! ```text
//!   watch(kind, name) ──commands (bounded 1024)──> worker thread ──> AdsState per type
//!        │                                           │   ^ responses (bounded 16) from
//!        v                                           │   │ the reader thread of the stream
//!   Watch: latest event (one slot) + bell  <─────────┘   │
//!                                            requests ──> bidi call StreamAggregatedResources
//! ```
//!
//! - The worker owns the four [`AdsState`]s (Listener, Route, Cluster,
//!   Endpoint), sends what they queue, feeds them responses by type URL and
//!   fires their resource timers.
//! - A watcher sees its resource's state ([`WatchState`]: the value, the last
//!   rejection, whether it exists), updated in place, so a slow watcher never
//!   grows a queue or stalls the stream and never misses the latest value.
//! - When the stream fails the states keep their resources (gRFC A57), and the
//!   worker opens a new stream after a backoff, reset once a stream has
//!   delivered a response.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, after, bounded, never, select};
use lb_core::channel::{CallOptions, Channel};
use lb_core::{Backoff, BackoffConfig, SplitMix64, Status};
use parking_lot::Mutex;

use super::ads::{AdsEvent, AdsState, ResourceDump, ResourceType};
use super::bootstrap::{Bootstrap, XdsServer};
use super::cds::{Cluster, ClusterType};
use super::eds::{ClusterEndpoints, EndpointType};
use super::lds::{Listener, ListenerType};
use super::rds::{RouteConfig, RouteConfigType};
use super::wire::{DiscoveryResponse, NodeInfo};

/// The ADS method.
pub const ADS_METHOD: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";

/// Commands waiting for the worker, at most.
const COMMAND_QUEUE: usize = 1024;

/// Responses read ahead of the worker, at most (the reader then waits, and the
/// stream's flow control holds the server).
const RESPONSE_QUEUE: usize = 16;

/// A resource kind a watcher can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Listener (LDS).
    Listener,
    /// RouteConfiguration (RDS).
    Route,
    /// Cluster (CDS).
    Cluster,
    /// ClusterLoadAssignment (EDS).
    Endpoints,
}

/// A resource's value.
#[derive(Clone, Debug, PartialEq)]
pub enum XdsResource {
    /// A Listener.
    Listener(Listener),
    /// A RouteConfiguration.
    Route(RouteConfig),
    /// A Cluster.
    Cluster(Cluster),
    /// A ClusterLoadAssignment.
    Endpoints(ClusterEndpoints),
}

/// What a watcher knows of its resource.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WatchState {
    /// Its value: `None` before it arrives, and once it does not exist.
    pub resource: Option<XdsResource>,
    /// Why the server's last version of it was rejected; cleared by a valid one
    /// (the value above stays in use meanwhile, gRFC A46).
    pub error: Option<String>,
    /// It does not exist: deleted, or not sent in time after it was requested.
    pub does_not_exist: bool,
}

/// Options of an [`XdsClient`].
#[derive(Clone, Debug, Default)]
pub struct XdsClientOptions {
    /// Who this client is, sent on each stream's first request.
    pub node: NodeInfo,
    /// The server's `ignore_resource_deletion` feature (gRFC A53).
    pub ignore_resource_deletion: bool,
    /// The delay before a new stream after a failed one.
    pub backoff: BackoffConfig,
}

impl XdsClientOptions {
    /// Options for a client of `bootstrap`'s first server: its node, its
    /// `ignore_resource_deletion` feature, and this crate as the user agent,
    /// with the client features gRPC clients send (gRFC A27).
    ///
    /// ```
    /// use lb_group::xds::Bootstrap;
    /// use lb_group::xds::client::XdsClientOptions;
    /// let b = Bootstrap::parse(r#"{"xds_servers": [{"server_uri": "cp:443",
    ///     "channel_creds": [{"type": "insecure"}],
    ///     "server_features": ["ignore_resource_deletion"]}],
    ///     "node": {"id": "n1"}}"#)?;
    /// let options = XdsClientOptions::from_bootstrap(&b);
    /// assert_eq!(options.node.node.id, "n1");
    /// assert!(options.ignore_resource_deletion);
    /// # Ok::<(), lb_core::ConfigError>(())
    /// ```
    pub fn from_bootstrap(bootstrap: &Bootstrap) -> Self {
        Self {
            node: NodeInfo {
                node: bootstrap.node.clone(),
                user_agent_name: env!("CARGO_PKG_NAME").into(),
                user_agent_version: env!("CARGO_PKG_VERSION").into(),
                client_features: vec![
                    "envoy.lb.does_not_support_overprovisioning".into(),
                    "xds.config.resource-in-sotw".into(),
                ],
            },
            ignore_resource_deletion: bootstrap
                .servers
                .first()
                .is_some_and(|s| s.ignore_resource_deletion),
            backoff: BackoffConfig::default(),
        }
    }
}

/// A watch of one resource: its state, and whether it changed since last read.
pub struct Watch {
    slot: Arc<WatchSlot>,
    /// The bell's receiving end, unless the watcher shares a bell of its own.
    bell: Option<Receiver<()>>,
    kind: Kind,
    name: String,
    commands: Sender<Command>,
}

struct WatchSlot {
    /// The state, and whether it changed since the watcher last read it.
    state: Mutex<(WatchState, bool)>,
    /// Told after each change.
    notify: Notify,
}

/// How a watch tells its watcher that its state changed.
#[derive(Clone)]
pub enum Notify {
    /// Rings a bell with `try_send` (give it a bounded(1) channel: rings
    /// coalesce), so one thread can wait on many watches.
    Bell(Sender<()>),
    /// Calls a function on the client's thread; it must not block (a policy
    /// calls its `WorkScheduler::schedule_work`).
    Call(Arc<dyn Fn() + Send + Sync>),
}

impl Notify {
    pub(crate) fn notify(&self) {
        match self {
            Self::Bell(bell) => {
                let _ = bell.try_send(());
            }
            Self::Call(f) => f(),
        }
    }
}

impl std::fmt::Debug for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Bell(_) => "Notify::Bell",
            Self::Call(_) => "Notify::Call",
        })
    }
}

impl WatchSlot {
    fn put<R>(&self, event: AdsEvent<R>, wrap: fn(R) -> XdsResource) {
        {
            let mut guard = self.state.lock();
            let (state, changed) = &mut *guard;
            match event {
                AdsEvent::Changed { resource, .. } => {
                    state.resource = Some(wrap(resource));
                    state.error = None;
                    state.does_not_exist = false;
                }
                AdsEvent::Invalid { reason, .. } => state.error = Some(reason),
                AdsEvent::DoesNotExist { .. } => {
                    state.resource = None;
                    state.does_not_exist = true;
                }
            }
            *changed = true;
        }
        self.notify.notify();
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Watch {
    /// The state if it changed since the last call, waiting up to `timeout`
    /// for a change (a watch made with [`XdsClient::watch_notify`] does not
    /// wait: its owner waits on its notifier).
    pub fn next(&self, timeout: Duration) -> Option<WatchState> {
        let take = || {
            let mut guard = self.slot.state.lock();
            std::mem::take(&mut guard.1).then(|| guard.0.clone())
        };
        if let Some(s) = take() {
            return Some(s);
        }
        // A watch on a shared bell has nothing of its own to wait on: its
        // owner waits on the bell.
        if let Some(bell) = &self.bell {
            let _ = bell.recv_timeout(timeout);
        }
        take()
    }

    /// The state now, changed or not.
    pub fn state(&self) -> WatchState {
        self.slot.state.lock().0.clone()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.commands.try_send(Command::Unwatch {
            kind: self.kind,
            name: std::mem::take(&mut self.name),
            slot: Arc::clone(&self.slot),
        });
    }
}

enum Command {
    /// The client is dropped: end the worker.
    Shutdown,
    /// Every subscribed resource as it stands, to this one-slot reply.
    Dump(Sender<Vec<ResourceDump>>),
    Watch {
        kind: Kind,
        name: String,
        slot: Arc<WatchSlot>,
    },
    Unwatch {
        kind: Kind,
        name: String,
        slot: Arc<WatchSlot>,
    },
}

/// The xDS client: see the [module docs](self). Dropping it closes every
/// stream and joins its threads; watches still held then hear nothing more.
pub struct XdsClient {
    /// One stream (and worker) per management server.
    servers: Vec<ServerStream>,
    /// Which server serves the resources of each authority (`None`: the
    /// old-style names); an authority not listed uses server 0.
    by_authority: BTreeMap<Option<String>, usize>,
    node: NodeInfo,
}

/// One management server's ADS stream: its worker and channel.
struct ServerStream {
    uri: String,
    commands: Sender<Command>,
    channel: Channel,
    thread: Option<JoinHandle<()>>,
}

impl ServerStream {
    fn start(uri: String, channel: Channel, options: XdsClientOptions) -> Self {
        let (commands, rx) = bounded(COMMAND_QUEUE);
        let worker_channel = channel.clone();
        let thread = std::thread::Builder::new()
            .name("lb-xds".into())
            .spawn(move || Worker::new(worker_channel, options, rx).run())
            .expect("spawn the xDS client thread");
        Self {
            uri,
            commands,
            channel,
            thread: Some(thread),
        }
    }
}

impl Drop for ServerStream {
    fn drop(&mut self) {
        // Closing the channel first ends the stream, so a worker blocked in a
        // send returns and drains its queue; the shutdown then always arrives.
        self.channel.close();
        let _ = self.commands.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("the xDS client thread panicked");
            }
        }
    }
}

impl std::fmt::Debug for XdsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let servers: Vec<&str> = self.servers.iter().map(|s| s.uri.as_str()).collect();
        f.debug_struct("XdsClient")
            .field("servers", &servers)
            .finish_non_exhaustive()
    }
}

/// The authority of a resource name: `Some` for `xdstp://authority/...`.
fn authority_of(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("xdstp://")?;
    Some(rest.split('/').next().unwrap_or(""))
}

impl XdsClient {
    /// Starts a client streaming from `channel` (a channel to the management
    /// server) for every resource.
    pub fn start(channel: Channel, options: XdsClientOptions) -> Self {
        let node = options.node.clone();
        Self {
            servers: vec![ServerStream::start(String::new(), channel, options)],
            by_authority: BTreeMap::new(),
            node,
        }
    }

    /// Starts a client for `bootstrap`'s servers and federation authorities
    /// (gRFC A47): one ADS stream per distinct management server, each opened
    /// on the channel `connect` builds for it (the first of a list is used);
    /// an `xdstp://authority/...` resource goes to its authority's server, an
    /// old-style name to the top-level one.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use lb_core::channel::Channel;
    /// use lb_group::xds::Bootstrap;
    /// use lb_group::xds::client::{XdsClient, XdsClientOptions};
    /// # fn transport() -> Arc<dyn lb_core::Transport> { unimplemented!() }
    /// let bootstrap = Bootstrap::from_env()?;
    /// let client = XdsClient::start_for(&bootstrap, |server| {
    ///     Channel::builder(format!("dns:///{}", server.uri)).transport(transport()).build()
    /// })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The bootstrap lists no server, or `connect` fails for one.
    pub fn start_for<E: std::fmt::Display>(
        bootstrap: &Bootstrap,
        mut connect: impl FnMut(&XdsServer) -> Result<Channel, E>,
    ) -> Result<Self, String> {
        let options = XdsClientOptions::from_bootstrap(bootstrap);
        let mut servers: Vec<ServerStream> = Vec::new();
        let mut by_authority = BTreeMap::new();
        let authorities = std::iter::once(None).chain(bootstrap.authorities.keys().map(Some));
        for authority in authorities {
            let Some(server) = bootstrap.servers_for(authority.map(String::as_str)).first() else {
                return Err("the xDS bootstrap lists no server".to_owned());
            };
            let index = match servers.iter().position(|s| s.uri == server.uri) {
                Some(i) => i,
                None => {
                    let mut server_options = options.clone();
                    server_options.ignore_resource_deletion = server.ignore_resource_deletion;
                    let channel =
                        connect(server).map_err(|e| format!("xDS server {}: {e}", server.uri))?;
                    servers.push(ServerStream::start(
                        server.uri.clone(),
                        channel,
                        server_options,
                    ));
                    servers.len() - 1
                }
            };
            by_authority.insert(authority.cloned(), index);
        }
        Ok(Self {
            servers,
            by_authority,
            node: options.node,
        })
    }

    /// The stream that serves resource `name`.
    fn server_for(&self, name: &str) -> &ServerStream {
        let authority = authority_of(name).map(str::to_owned);
        let index = self.by_authority.get(&authority).copied().unwrap_or(0);
        &self.servers[index]
    }

    /// Who this client says it is to the server.
    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// Every subscribed resource as it stands: version, status, the value in
    /// use and the last rejection (CSDS, gRFC A40; the admin page). Waits at
    /// most `timeout` for the client's thread.
    ///
    /// # Errors
    ///
    /// The client is shut down, busy beyond its queue, or did not answer in
    /// time.
    pub fn dump(&self, timeout: Duration) -> Result<Vec<ResourceDump>, Status> {
        let deadline = Instant::now() + timeout;
        let mut all = Vec::new();
        for server in &self.servers {
            let (reply, answer) = bounded(1);
            server
                .commands
                .try_send(Command::Dump(reply))
                .map_err(|_| Status::unavailable("the xDS client is busy or shut down"))?;
            let left = deadline.saturating_duration_since(Instant::now());
            all.extend(
                answer
                    .recv_timeout(left)
                    .map_err(|_| Status::unavailable("the xDS client did not answer in time"))?,
            );
        }
        Ok(all)
    }

    /// Watches the resource `name` of `kind`; [`Watch::next`] waits for its
    /// changes.
    ///
    /// # Errors
    ///
    /// The client is shutting down, or more than 1024 commands wait.
    pub fn watch(&self, kind: Kind, name: &str) -> Result<Watch, Status> {
        let (bell, rx) = bounded(1);
        let mut watch = self.watch_notify(kind, name, Notify::Bell(bell))?;
        watch.bell = Some(rx);
        Ok(watch)
    }

    /// Watches the resource `name` of `kind`, telling `notify` after each
    /// change (the xDS resolver's thread waits on one bell for all its
    /// watches; a policy schedules its work). Read the state with
    /// [`Watch::state`].
    ///
    /// # Errors
    ///
    /// The client is shutting down, or more than 1024 commands wait.
    pub fn watch_notify(&self, kind: Kind, name: &str, notify: Notify) -> Result<Watch, Status> {
        let commands = self.server_for(name).commands.clone();
        let slot = Arc::new(WatchSlot {
            state: Mutex::new((WatchState::default(), false)),
            notify,
        });
        commands
            .try_send(Command::Watch {
                kind,
                name: name.to_owned(),
                slot: Arc::clone(&slot),
            })
            .map_err(|_| Status::unavailable("the xDS client is busy or shut down"))?;
        Ok(Watch {
            slot,
            bell: None,
            kind,
            name: name.to_owned(),
            commands,
        })
    }
}

/// One resource type's state and watchers, behind a common face.
trait Slot: Send {
    fn type_url(&self) -> &'static str;
    fn watch(&mut self, name: &str, slot: Arc<WatchSlot>, now: Instant);
    fn unwatch(&mut self, name: &str, slot: &Arc<WatchSlot>);
    fn stream_started(&mut self, now: Instant);
    fn stream_failed(&mut self, why: &str);
    fn handle_response(&mut self, response: &DiscoveryResponse);
    fn handle_timeout(&mut self, now: Instant);
    fn next_timeout(&self) -> Option<Instant>;
    fn poll_request(&mut self) -> Option<Vec<u8>>;
    fn deliver(&mut self);
    fn dump(&self) -> Vec<ResourceDump>;
}

struct TypeSlot<T: ResourceType> {
    state: AdsState<T>,
    watchers: BTreeMap<String, Vec<Arc<WatchSlot>>>,
    wrap: fn(T::Resource) -> XdsResource,
    /// Why the last stream failed, until a response arrives: watchers of a
    /// resource with no value learn it (gRFC A57), so their calls fail
    /// instead of waiting for a server that cannot be reached.
    failure: Option<String>,
}

impl<T: ResourceType> TypeSlot<T> {
    /// Tells the watchers of `name` (all of them, or `only` one) why the
    /// server cannot give it, if it has no value.
    fn tell_failure(&self, name: &str, only: Option<&Arc<WatchSlot>>) {
        let Some(why) = &self.failure else {
            return;
        };
        if self.state.cached(name).is_some() {
            return;
        }
        let event = AdsEvent::Invalid {
            name: name.to_owned(),
            reason: format!("xDS server unreachable: {why}"),
        };
        for w in self.watchers.get(name).into_iter().flatten() {
            if only.is_none_or(|o| Arc::ptr_eq(o, w)) {
                w.put(event.clone(), self.wrap);
            }
        }
    }
}

impl<T: ResourceType> Slot for TypeSlot<T> {
    fn type_url(&self) -> &'static str {
        self.state.type_url()
    }
    fn watch(&mut self, name: &str, slot: Arc<WatchSlot>, now: Instant) {
        self.watchers
            .entry(name.to_owned())
            .or_default()
            .push(Arc::clone(&slot));
        self.state.subscribe(name, now);
        self.tell_failure(name, Some(&slot));
    }
    fn unwatch(&mut self, name: &str, slot: &Arc<WatchSlot>) {
        if let Some(list) = self.watchers.get_mut(name) {
            list.retain(|s| !Arc::ptr_eq(s, slot));
            if list.is_empty() {
                self.watchers.remove(name);
                self.state.unsubscribe(name);
            }
        }
    }
    fn stream_started(&mut self, now: Instant) {
        self.state.stream_started(now);
    }
    fn stream_failed(&mut self, why: &str) {
        self.state.stream_failed();
        self.failure = Some(why.to_owned());
        for name in self.watchers.keys() {
            self.tell_failure(name, None);
        }
    }
    fn handle_response(&mut self, response: &DiscoveryResponse) {
        self.failure = None;
        self.state.handle_response(response);
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.state.handle_timeout(now);
    }
    fn next_timeout(&self) -> Option<Instant> {
        self.state.next_timeout()
    }
    fn poll_request(&mut self) -> Option<Vec<u8>> {
        self.state.poll_request().map(|r| r.encode())
    }
    fn dump(&self) -> Vec<ResourceDump> {
        self.state.dump()
    }

    fn deliver(&mut self) {
        while let Some(event) = self.state.poll_event() {
            let name = match &event {
                AdsEvent::Changed { name, .. }
                | AdsEvent::Invalid { name, .. }
                | AdsEvent::DoesNotExist { name } => name.clone(),
            };
            for w in self.watchers.get(&name).into_iter().flatten() {
                w.put(event.clone(), self.wrap);
            }
        }
    }
}

fn slot<T: ResourceType + Default>(
    options: &XdsClientOptions,
    wrap: fn(T::Resource) -> XdsResource,
) -> Box<dyn Slot> {
    Box::new(TypeSlot {
        state: AdsState::new(
            T::default(),
            options.node.clone(),
            options.ignore_resource_deletion,
        ),
        watchers: BTreeMap::new(),
        wrap,
        failure: None,
    })
}

struct Worker {
    channel: Channel,
    commands: Receiver<Command>,
    slots: BTreeMap<Kind, Box<dyn Slot>>,
    backoff: Backoff,
}

/// How a stream ended.
enum StreamEnd {
    /// The client is shutting down.
    Closed,
    /// The stream failed; `heard` says whether it delivered a response.
    Failed { heard: bool, status: Status },
}

impl Worker {
    fn new(channel: Channel, options: XdsClientOptions, commands: Receiver<Command>) -> Self {
        let mut slots: BTreeMap<Kind, Box<dyn Slot>> = BTreeMap::new();
        slots.insert(
            Kind::Listener,
            slot::<ListenerType>(&options, XdsResource::Listener),
        );
        slots.insert(
            Kind::Route,
            slot::<RouteConfigType>(&options, XdsResource::Route),
        );
        slots.insert(
            Kind::Cluster,
            slot::<ClusterType>(&options, XdsResource::Cluster),
        );
        slots.insert(
            Kind::Endpoints,
            slot::<EndpointType>(&options, XdsResource::Endpoints),
        );
        Self {
            channel,
            commands,
            slots,
            backoff: Backoff::new(options.backoff, SplitMix64::from_entropy()),
        }
    }

    fn run(mut self) {
        loop {
            match self.stream() {
                StreamEnd::Closed => break,
                StreamEnd::Failed { heard, status } => {
                    log::info!("xDS stream ended: {status}");
                    let why = status.to_string();
                    for s in self.slots.values_mut() {
                        s.stream_failed(&why);
                    }
                    if heard {
                        self.backoff.reset();
                    }
                    let until = self.backoff.next_attempt_after_failure(Instant::now());
                    // Watches still come and go while the stream is down.
                    loop {
                        let wait = until.saturating_duration_since(Instant::now());
                        select! {
                            recv(self.commands) -> c => {
                                if !c.is_ok_and(|c| self.command(c, Instant::now())) {
                                    return;
                                }
                            },
                            recv(after(wait)) -> _ => break,
                        }
                    }
                }
            }
        }
    }

    /// Carries out `command`; `false` for a shutdown.
    fn command(&mut self, command: Command, now: Instant) -> bool {
        match command {
            Command::Shutdown => return false,
            Command::Dump(reply) => {
                let all = self.slots.values().flat_map(|s| s.dump()).collect();
                let _ = reply.try_send(all);
            }
            Command::Watch { kind, name, slot } => {
                if let Some(s) = self.slots.get_mut(&kind) {
                    s.watch(&name, slot, now);
                }
            }
            Command::Unwatch { kind, name, slot } => {
                if let Some(s) = self.slots.get_mut(&kind) {
                    s.unwatch(&name, &slot);
                }
            }
        }
        for s in self.slots.values_mut() {
            s.deliver();
        }
        true
    }

    /// Runs one ADS stream until it fails or the client closes. The call is
    /// not wait-for-ready: when the server cannot be reached it fails at once,
    /// so watchers of resources with no value learn why (gRFC A57), and the
    /// next stream is tried after the backoff.
    fn stream(&mut self) -> StreamEnd {
        let call = match self
            .channel
            .bidi_streaming(ADS_METHOD, CallOptions::default())
        {
            Ok(call) => call,
            Err(status) => {
                return StreamEnd::Failed {
                    heard: false,
                    status,
                };
            }
        };
        let (sender, receiver) = call.split();
        let (responses_tx, responses) = bounded::<Result<Vec<u8>, Status>>(RESPONSE_QUEUE);
        let reader = std::thread::Builder::new()
            .name("lb-xds-read".into())
            .spawn(move || {
                loop {
                    let item = match receiver.recv() {
                        Ok(Some(bytes)) => Ok(bytes),
                        Ok(None) => Err(Status::unavailable(
                            "the management server ended the stream",
                        )),
                        Err(status) => Err(status),
                    };
                    let end = item.is_err();
                    if responses_tx.send(item).is_err() || end {
                        return;
                    }
                }
            })
            .expect("spawn the xDS reader thread");
        let now = Instant::now();
        for s in self.slots.values_mut() {
            s.stream_started(now);
        }
        let mut heard = false;
        let end = loop {
            // Send what the states queued; hand their events to watchers.
            let mut failed = None;
            for s in self.slots.values_mut() {
                while let Some(request) = s.poll_request() {
                    if let Err(e) = sender.send(request) {
                        failed = Some(Status::unavailable(format!(
                            "sending on the xDS stream: {e:?}"
                        )));
                        break;
                    }
                }
                s.deliver();
            }
            if let Some(status) = failed {
                break StreamEnd::Failed { heard, status };
            }
            let timer = self
                .slots
                .values()
                .filter_map(|s| s.next_timeout())
                .min()
                .map_or_else(never, |t| {
                    after(t.saturating_duration_since(Instant::now()))
                });
            select! {
                recv(self.commands) -> c => {
                    if !c.is_ok_and(|c| self.command(c, Instant::now())) {
                        break StreamEnd::Closed;
                    }
                },
                recv(responses) -> r => match r {
                    Ok(Ok(bytes)) => match DiscoveryResponse::decode(&bytes) {
                        Ok(response) => {
                            heard = true;
                            match self.slots.values_mut().find(|s| s.type_url() == response.type_url) {
                                Some(s) => s.handle_response(&response),
                                None => log::warn!("xDS response of unknown type {}", response.type_url),
                            }
                        }
                        Err(e) => {
                            break StreamEnd::Failed {
                                heard,
                                status: Status::internal(format!("undecodable DiscoveryResponse: {e}")),
                            };
                        }
                    },
                    Ok(Err(status)) => break StreamEnd::Failed { heard, status },
                    Err(_) => break StreamEnd::Failed {
                        heard,
                        status: Status::internal("the xDS reader thread ended"),
                    },
                },
                recv(timer) -> _ => {
                    let now = Instant::now();
                    for s in self.slots.values_mut() {
                        s.handle_timeout(now);
                    }
                }
            }
        };
        sender.cancel();
        drop(sender);
        drop(responses);
        let _ = reader.join();
        end
    }
}

#[cfg(test)]
mod tests;
