//! The control channel: a [`Channel`] to the RLS server, the threads that make the
//! blocking RouteLookup calls on it, and a watcher of its connectivity.
//!
//! ```text
//!  serializer (RlsPolicy)                       lookup threads "lb-rls-lookup" (≤ 8)
//!  ──────────────────────                       ────────────────────────────────────
//!  lookup(key, request, now) ──job──────────>   channel.unary(RouteLookup, deadline)
//!                                                  │ response / status
//!  work(now) <── schedule_work ── events <─────────┘
//!                                  ^
//!  watcher thread "lb-rls-watch": channel.state() changes ──┘
//!
//!  close(): stop flag, channel.close() (cancels calls in flight, wakes the watcher),
//!           drop the job sender, join every thread
//! ```
//!
//! Nothing here blocks the serializer or a picking thread: a lookup is a send on an
//! unbounded channel, and its result comes back as an event that the
//! policy drains in `work`. The channel is built with the parent channel's authority
//! (so the RLS server must present the backends' identity), the parent's policy
//! registry, `routeLookupChannelServiceConfig` as its default service config (else
//! `pick_first`), and the policy's clock; it is asked to connect at once.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use lb_core::channel::{CallOptions, Channel, ChannelFactory, Clock};
use lb_core::channelz::ChannelRef;
use lb_core::{ConnectivityState, LbPolicyRegistry, Status, WorkScheduler};
use parking_lot::Mutex;
use serde_json::Value;

use crate::cache::CacheKey;
use crate::config::RlsConfig;
use crate::proto::{ROUTE_LOOKUP_METHOD, RouteLookupRequest, RouteLookupResponse};

/// The most lookup threads one control channel runs: at most this many RouteLookup
/// calls are in flight at once; more wait for a free thread (their deadline runs
/// from when they were sent, so a long wait ends as DEADLINE_EXCEEDED).
pub const MAX_LOOKUP_THREADS: usize = 8;

/// The control channel's service config when the RLS config gives none.
pub const DEFAULT_CONTROL_CHANNEL_SERVICE_CONFIG: &str =
    r#"{"loadBalancingConfig": [{"pick_first": {}}]}"#;

/// How long the watcher waits for a state change before it looks at its stop flag
/// again (real time only; with a manual clock it wakes on every clock jump).
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Counts the threads started by the policies of one builder, so tests (and
/// programs) can check that closing a policy ends them all.
#[derive(Clone, Debug, Default)]
pub(crate) struct ThreadCounter(Arc<AtomicUsize>);

impl ThreadCounter {
    /// How many counted threads are running.
    pub(crate) fn live(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// Counts one more until the guard is dropped (for threads that another
    /// crate's code starts, such as a resolver's).
    pub(crate) fn hold(&self) -> LiveGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        LiveGuard(self.0.clone())
    }

    /// Starts a named thread that is counted until it ends.
    pub(crate) fn spawn(
        &self,
        name: &str,
        f: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<JoinHandle<()>> {
        struct Live(Arc<AtomicUsize>);
        impl Drop for Live {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.0.fetch_add(1, Ordering::SeqCst);
        let live = Live(self.0.clone());
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let _live = live;
                f();
            })
        // On a spawn error the closure (and its guard) is dropped: the count is right.
    }
}

/// One count of a [`ThreadCounter`], given back when dropped.
#[derive(Debug)]
pub(crate) struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Joins a thread, logging (not re-raising) a panic: a policy's close must finish.
pub(crate) fn join_logged(thread: JoinHandle<()>) {
    if thread.join().is_err() {
        log::error!("rls: a control-channel thread panicked");
    }
}

/// The config fields that make up a control channel: a change to any of them
/// rebuilds it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ControlChannelConfig {
    pub(crate) lookup_service: String,
    pub(crate) timeout: Duration,
    pub(crate) service_config: Option<Value>,
}

impl ControlChannelConfig {
    pub(crate) fn of(config: &RlsConfig) -> Self {
        Self {
            lookup_service: config.route_lookup().lookup_service().to_owned(),
            timeout: config.route_lookup().lookup_service_timeout(),
            service_config: config.control_channel_service_config().cloned(),
        }
    }
}

/// What a control channel reports to its policy.
#[derive(Debug)]
pub(crate) enum ControlEvent {
    /// A RouteLookup call ended.
    Response {
        generation: u64,
        key: CacheKey,
        result: Result<RouteLookupResponse, Status>,
    },
    /// The channel's connectivity state changed.
    State {
        generation: u64,
        state: ConnectivityState,
    },
}

/// What every control channel of one policy shares.
#[derive(Clone)]
pub(crate) struct ControlDeps {
    /// Opens the control channel; `Err` (every lookup fails with it) when there
    /// is no transport.
    pub(crate) channels: Result<ChannelFactory, Status>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) authority: String,
    pub(crate) registry: LbPolicyRegistry,
    pub(crate) events: Sender<ControlEvent>,
    pub(crate) scheduler: Arc<dyn WorkScheduler>,
    pub(crate) threads: ThreadCounter,
    /// The parent channel: the control channel is its nested channel in channelz.
    pub(crate) parent: ChannelRef,
}

/// One lookup for a thread to make.
struct Job {
    key: CacheKey,
    message: Vec<u8>,
    deadline: Instant,
}

/// Where results go, for the lookup threads and the watcher.
#[derive(Clone)]
struct Reporter {
    generation: u64,
    events: Sender<ControlEvent>,
    scheduler: Arc<dyn WorkScheduler>,
    /// The state last reported, by whichever thread saw it.
    last_state: Arc<Mutex<Option<ConnectivityState>>>,
}

impl Reporter {
    /// Reports `state` unless it is the state last reported. False once the
    /// policy is gone.
    fn report_state(&self, state: ConnectivityState) -> bool {
        let mut last = self.last_state.lock();
        if *last == Some(state) {
            return true;
        }
        *last = Some(state);
        self.report(ControlEvent::State {
            generation: self.generation,
            state,
        })
    }

    /// Sends an event and asks for the policy's `work`. False once the policy is
    /// gone.
    fn report(&self, event: ControlEvent) -> bool {
        if self.events.send(event).is_err() {
            return false;
        }
        self.scheduler.schedule_work();
        true
    }
}

/// A channel to the RLS server with its lookup threads. See the [module docs](self).
pub(crate) struct ControlChannel {
    generation: u64,
    timeout: Duration,
    lookup_service: String,
    /// `Err` when the channel could not be built: every lookup fails with it.
    channel: Result<Channel, Status>,
    jobs: Option<(Sender<Job>, Receiver<Job>)>,
    lookup_threads: Vec<JoinHandle<()>>,
    idle: Arc<AtomicUsize>,
    watcher: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    reporter: Reporter,
    threads: ThreadCounter,
}

impl ControlChannel {
    /// Builds the channel, asks it to connect and starts watching its state.
    pub(crate) fn new(config: &ControlChannelConfig, deps: &ControlDeps, generation: u64) -> Self {
        let service_config = config.service_config.as_ref().map_or_else(
            || DEFAULT_CONTROL_CHANNEL_SERVICE_CONFIG.to_owned(),
            Value::to_string,
        );
        let channel = deps.channels.clone().and_then(|channels| {
            channels
                .builder(config.lookup_service.as_str())
                .default_service_config(service_config)
                .authority(deps.authority.clone())
                .lb_policy_registry(deps.registry.clone())
                .clock(deps.clock.clone())
                .channelz_parent(deps.parent.clone())
                .build()
                .map_err(|e| {
                    log::error!(
                        "rls: cannot build the control channel to {:?}: {e}",
                        config.lookup_service
                    );
                    Status::unavailable(format!(
                        "rls: cannot build the control channel to {:?}: {e}",
                        config.lookup_service
                    ))
                })
        });
        let reporter = Reporter {
            generation,
            events: deps.events.clone(),
            scheduler: deps.scheduler.clone(),
            last_state: Arc::default(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut watcher = None;
        if let Ok(ch) = &channel {
            // Connect eagerly, so the first lookup does not pay for the handshake.
            ch.state(true);
            let (ch, stop, reporter, clock) = (
                ch.clone(),
                stop.clone(),
                reporter.clone(),
                deps.clock.clone(),
            );
            match deps.threads.spawn("lb-rls-watch", move || {
                watch(&ch, &stop, &reporter, &*clock);
            }) {
                Ok(t) => watcher = Some(t),
                Err(e) => log::error!("rls: cannot start the control-channel watcher: {e}"),
            }
        }
        Self {
            generation,
            timeout: config.timeout,
            lookup_service: config.lookup_service.clone(),
            channel,
            jobs: Some(crossbeam_channel::unbounded()),
            lookup_threads: Vec::new(),
            idle: Arc::new(AtomicUsize::new(0)),
            watcher,
            stop,
            reporter,
            threads: deps.threads.clone(),
        }
    }

    /// The control channel's channelz id, if it was built.
    pub(crate) fn channelz_id(&self) -> Option<u64> {
        self.channel.as_ref().ok().map(Channel::channelz_id)
    }

    /// The RLS server's target.
    pub(crate) fn lookup_service(&self) -> &str {
        &self.lookup_service
    }

    /// The generation this channel's events carry.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Starts a RouteLookup call for `key` with a deadline of `now` plus
    /// `lookupServiceTimeout`. Its result arrives as a [`ControlEvent::Response`].
    ///
    /// # Errors
    ///
    /// The call cannot be started at all (no channel, no thread): the caller treats
    /// the status as the call's failure.
    pub(crate) fn lookup(
        &mut self,
        key: CacheKey,
        request: &RouteLookupRequest,
        now: Instant,
    ) -> Result<(), Status> {
        let channel = self.channel.as_ref().map_err(Clone::clone)?;
        let Some((tx, rx)) = &self.jobs else {
            return Err(Status::unavailable("rls: the control channel is closed"));
        };
        let job = Job {
            key,
            message: request.to_bytes(),
            deadline: now + self.timeout,
        };
        tx.send(job)
            .map_err(|_| Status::unavailable("rls: the control channel is closed"))?;
        // One more thread while jobs wait and no thread is free to take them.
        if tx.len() > self.idle.load(Ordering::Acquire)
            && self.lookup_threads.len() < MAX_LOOKUP_THREADS
        {
            let (ch, jobs, idle, reporter) = (
                channel.clone(),
                rx.clone(),
                self.idle.clone(),
                self.reporter.clone(),
            );
            match self.threads.spawn("lb-rls-lookup", move || {
                run_lookups(&ch, &jobs, &idle, &reporter);
            }) {
                Ok(t) => self.lookup_threads.push(t),
                Err(e) => {
                    log::error!("rls: cannot start a lookup thread: {e}");
                    if self.lookup_threads.is_empty() {
                        // Nobody would ever take the job: drop it and fail.
                        let _ = rx.try_recv();
                        return Err(Status::unavailable(format!(
                            "rls: cannot start a lookup thread: {e}"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Closes the channel (calls in flight end CANCELLED; their results are
    /// dropped by the policy, which knows this generation is gone) and joins every
    /// thread.
    pub(crate) fn close(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(ch) = &self.channel {
            ch.close();
        }
        self.jobs = None;
        for t in self.lookup_threads.drain(..) {
            join_logged(t);
        }
        if let Some(t) = self.watcher.take() {
            join_logged(t);
        }
    }
}

impl Drop for ControlChannel {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for ControlChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlChannel")
            .field("generation", &self.generation)
            .field("lookup_service", &self.lookup_service)
            .field("lookup_threads", &self.lookup_threads.len())
            .finish_non_exhaustive()
    }
}

/// A lookup thread: takes jobs until the sender is dropped.
fn run_lookups(channel: &Channel, jobs: &Receiver<Job>, idle: &AtomicUsize, reporter: &Reporter) {
    loop {
        idle.fetch_add(1, Ordering::AcqRel);
        let job = jobs.recv();
        idle.fetch_sub(1, Ordering::AcqRel);
        let Ok(job) = job else {
            return;
        };
        let options = CallOptions::default().with_deadline(job.deadline);
        let result = channel
            .unary(ROUTE_LOOKUP_METHOD, job.message, options)
            .and_then(|response| {
                RouteLookupResponse::decode(&response.message).map_err(|e| {
                    Status::internal(format!("rls: malformed RouteLookupResponse: {e}"))
                })
            });
        // A call that failed because the channel is down is proof of the
        // TRANSIENT_FAILURE the watcher may have missed between two snapshots;
        // reported first, so the policy knows of it when it applies the failure.
        if result.is_err()
            && channel.state(false) == ConnectivityState::TransientFailure
            && !reporter.report_state(ConnectivityState::TransientFailure)
        {
            return;
        }
        let event = ControlEvent::Response {
            generation: reporter.generation,
            key: job.key,
            result,
        };
        if !reporter.report(event) {
            return;
        }
    }
}

/// The watcher thread: reports every state it sees until the channel shuts down or
/// the stop flag is set. (The channel's state is read from snapshots, so a state
/// that lasts only between two reads can be missed; the lookup threads report the
/// TRANSIENT_FAILURE their failed calls saw.)
fn watch(channel: &Channel, stop: &AtomicBool, reporter: &Reporter, clock: &dyn Clock) {
    while !stop.load(Ordering::SeqCst) {
        let state = channel.state(false);
        if !reporter.report_state(state) {
            return;
        }
        if state == ConnectivityState::Shutdown {
            return;
        }
        channel.wait_for_state_change(state, clock.now() + WATCH_INTERVAL);
    }
}
