//! Blocking unary calls: pick, wait for a picker when queued, start the call on the
//! picked subchannel's connection, wait for the result, retry transparently.
//!
//! ```text
//!   loop {
//!     deadline passed?                       ──> DEADLINE_EXCEEDED (+ latest balancer error)
//!     pick(current picker):
//!       Pick(sc): sc has a live connection?  ──> start_call, wait for the result
//!                   result unprocessed       ──> pick again (transparent retry)
//!                 no connection (race)       ──> wait for the next picker
//!       Queue                                ──> wait for the next picker
//!       Fail(status): fail-fast              ──> status
//!                     wait-for-ready         ──> remember it, wait for the next picker
//!       Drop(status)                         ──> status
//!   }
//! ```
//!
//! Statuses from pickers are passed through
//! [`Status::sanitized_for_control_plane`]. Waiting never holds a lock: a waiter
//! selects on the snapshot it read (replaced when a picker is published, the clock
//! jumps or the channel closes), on the call's completion and on a real-time timer
//! for its deadline (never armed with a clock that moves by jumps).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, at, never, select};

use super::cell::Snapshot;
use super::core::{Shared, closed_status};
use super::pool::ScBackend;
use super::service_config::MethodConfigs;
use crate::metadata::Metadata;
use crate::picker::{CompletionCallback, PickInfo, PickResult};
use crate::status::{Code, Status};
use crate::transport::{CallError, CallRequest, CallResponse};

/// How many times one call is sent again after the transport reports that the
/// server never saw it.
pub const MAX_TRANSPARENT_RETRIES: u32 = 32;

/// Per-call settings.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lb_core::channel::CallOptions;
/// let opts = CallOptions { wait_for_ready: Some(true), ..CallOptions::default() }
///     .with_timeout(Duration::from_secs(2));
/// assert_eq!(opts.timeout, Some(Duration::from_secs(2)));
/// ```
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// When the call must end, on the channel's clock.
    pub deadline: Option<Instant>,
    /// How long the call may take from its start; with `deadline`, the earlier wins.
    pub timeout: Option<Duration>,
    /// Metadata sent with the request.
    pub metadata: Metadata,
    /// Wait for a ready connection instead of failing while the channel is in
    /// TRANSIENT_FAILURE. `None` takes the service config's `waitForReady`, else
    /// `false`.
    pub wait_for_ready: Option<bool>,
}

impl CallOptions {
    /// These options with `deadline`.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// These options with `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// These options with `metadata`.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// These options with wait-for-ready set.
    pub fn with_wait_for_ready(mut self, wait_for_ready: bool) -> Self {
        self.wait_for_ready = Some(wait_for_ready);
        self
    }
}

/// A unary call's response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnaryResponse {
    /// The serialized response message.
    pub message: Vec<u8>,
    /// The response headers' metadata.
    pub headers: Metadata,
    /// The trailers' metadata.
    pub trailers: Metadata,
}

impl From<CallResponse> for UnaryResponse {
    fn from(r: CallResponse) -> Self {
        Self {
            message: r.message,
            headers: r.headers,
            trailers: r.trailers,
        }
    }
}

/// Turns typed messages into bytes and back, for
/// [`Channel::unary_typed`](super::Channel::unary_typed).
///
/// # Examples
///
/// ```
/// use lb_core::Status;
/// use lb_core::channel::Codec;
/// struct Utf8;
/// impl Codec for Utf8 {
///     type Request = String;
///     type Response = String;
///     fn encode(&self, request: &String) -> Vec<u8> { request.as_bytes().to_vec() }
///     fn decode(&self, bytes: &[u8]) -> Result<String, Status> {
///         String::from_utf8(bytes.to_vec()).map_err(|e| Status::internal(e.to_string()))
///     }
/// }
/// assert_eq!(Utf8.decode(&Utf8.encode(&"hi".to_string()))?, "hi");
/// # Ok::<(), Status>(())
/// ```
pub trait Codec {
    /// The request type.
    type Request;
    /// The response type.
    type Response;

    /// Serializes a request.
    fn encode(&self, request: &Self::Request) -> Vec<u8>;

    /// Parses a response.
    ///
    /// # Errors
    ///
    /// The bytes are not a valid response; gRPC reports this as INTERNAL.
    fn decode(&self, bytes: &[u8]) -> Result<Self::Response, Status>;
}

/// What the call knows about its deadline and waiting mode.
struct Plan {
    start: Instant,
    /// The earlier of the call's own deadline and timeout.
    own_deadline: Option<Instant>,
    own_wait_for_ready: Option<bool>,
    default_timeout: Option<Duration>,
}

impl Plan {
    /// The deadline and wait-for-ready mode under the current method configs.
    fn effective(&self, methods: &MethodConfigs, method: &str) -> (Option<Instant>, bool) {
        let config = if methods.is_empty() {
            None
        } else {
            methods.lookup(method)
        };
        let mut deadline = self.own_deadline;
        if let Some(timeout) = config.and_then(|c| c.timeout) {
            deadline = earlier(deadline, Some(self.start + timeout));
        }
        if deadline.is_none() {
            deadline = self.default_timeout.map(|t| self.start + t);
        }
        let wait_for_ready = self
            .own_wait_for_ready
            .or(config.and_then(|c| c.wait_for_ready))
            .unwrap_or(false);
        (deadline, wait_for_ready)
    }
}

fn earlier(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// How waiting for a started call ended.
enum Outcome {
    Done(Result<CallResponse, CallError>),
    Closed,
    DeadlineExceeded,
}

/// Runs one unary call.
pub(crate) fn unary(
    shared: &Shared,
    method: &str,
    message: Vec<u8>,
    options: &CallOptions,
) -> Result<UnaryResponse, Status> {
    if shared.is_closed() {
        return Err(closed_status());
    }
    if !is_method_path(method) {
        return Err(Status::internal(format!(
            "malformed method name {method:?}: expected /package.Service/Method"
        )));
    }
    let limit = shared.defaults.max_send_message_size;
    if message.len() > limit {
        return Err(Status::resource_exhausted(format!(
            "trying to send message larger than max ({} vs. {limit})",
            message.len()
        )));
    }
    let start = shared.clock.now();
    let _active = shared.begin_call();
    let plan = Plan {
        start,
        own_deadline: earlier(options.deadline, options.timeout.map(|t| start + t)),
        own_wait_for_ready: options.wait_for_ready,
        default_timeout: shared.defaults.default_timeout,
    };
    let info = PickInfo {
        method,
        metadata: &options.metadata,
    };
    let mut latest_pick_error: Option<Status> = None;
    let mut retries = 0u32;
    loop {
        let snapshot = shared.cell.load();
        if shared.is_closed() {
            return Err(closed_status());
        }
        let (deadline, wait_for_ready) = plan.effective(&snapshot.methods, method);
        // The deadline is checked after the pick, so that even a call that starts
        // late reports what the picker said.
        let expired = || {
            let now = shared.clock.now();
            deadline.is_some_and(|d| now >= d).then(|| now - start)
        };
        let pick = match snapshot.picker.pick(&info) {
            PickResult::Pick(pick) => pick,
            PickResult::Queue => {
                if let Some(waited) = expired() {
                    return Err(queued_deadline(waited, latest_pick_error.as_ref()));
                }
                wait_for_picker(shared, &snapshot, deadline);
                continue;
            }
            PickResult::Fail(status) if wait_for_ready => {
                latest_pick_error = Some(status);
                if let Some(waited) = expired() {
                    return Err(queued_deadline(waited, latest_pick_error.as_ref()));
                }
                wait_for_picker(shared, &snapshot, deadline);
                continue;
            }
            PickResult::Fail(status) | PickResult::Drop(status) => {
                return Err(status.sanitized_for_control_plane());
            }
        };
        let on_complete = pick.on_complete;
        let Some(backend) = pick
            .subchannel
            .backend()
            .as_any()
            .downcast_ref::<ScBackend>()
        else {
            let status = Status::internal("the policy picked a subchannel of another channel");
            complete(on_complete, &status);
            return Err(status);
        };
        let ready = backend.ready();
        let Some((attempt, connection)) = ready.as_ref().and_then(|a| a.acquire().map(|c| (a, c)))
        else {
            // Picked a subchannel whose connection just went away: the policy is
            // about to hear of it; wait for its next picker.
            drop(ready);
            complete(
                on_complete,
                &Status::unavailable("not sent: the picked subchannel has no connection"),
            );
            if let Some(waited) = expired() {
                return Err(queued_deadline(waited, latest_pick_error.as_ref()));
            }
            wait_for_picker(shared, &snapshot, deadline);
            continue;
        };
        if let Some(waited) = expired() {
            attempt.release();
            drop(ready);
            let status = queued_deadline(waited, latest_pick_error.as_ref());
            complete(on_complete, &status);
            return Err(status);
        }
        let mut metadata = options.metadata.clone();
        metadata.extend(&pick.metadata);
        let request = CallRequest {
            method: method.to_owned(),
            metadata,
            message: message.clone(),
            deadline,
            authority: None,
        };
        let (tx, rx) = crossbeam_channel::bounded(1);
        let held = Arc::clone(attempt);
        connection.start_call(
            request,
            Box::new(move |result| {
                held.release();
                let _ = tx.send(result);
            }),
        );
        drop(ready);
        drop(snapshot);
        let status = match wait_for_completion(shared, &rx, deadline) {
            Outcome::Done(Ok(response)) => {
                let limit = shared.defaults.max_receive_message_size;
                if response.message.len() > limit {
                    Status::resource_exhausted(format!(
                        "received message larger than max ({} vs. {limit})",
                        response.message.len()
                    ))
                } else {
                    complete(on_complete, &Status::new(Code::Ok, ""));
                    return Ok(response.into());
                }
            }
            Outcome::Done(Err(e)) if shared.is_closed() => {
                let _ = e;
                closed_status()
            }
            Outcome::Done(Err(e)) if e.unprocessed && retries < MAX_TRANSPARENT_RETRIES => {
                complete(on_complete, &e.status);
                retries += 1;
                // Give the transport's thread a moment to report the connection gone.
                std::thread::yield_now();
                continue;
            }
            Outcome::Done(Err(e)) => e.status,
            Outcome::Closed => closed_status(),
            Outcome::DeadlineExceeded => Status::deadline_exceeded(format!(
                "deadline exceeded after {:?} waiting for the response",
                shared.clock.now().saturating_duration_since(start)
            )),
        };
        complete(on_complete, &status);
        return Err(status);
    }
}

fn is_method_path(method: &str) -> bool {
    method
        .strip_prefix('/')
        .and_then(|m| m.split_once('/'))
        .is_some_and(|(service, name)| {
            !service.is_empty() && !name.is_empty() && !name.contains('/')
        })
}

fn complete(on_complete: Option<CompletionCallback>, status: &Status) {
    if let Some(f) = on_complete {
        f(status);
    }
}

fn queued_deadline(waited: Duration, latest: Option<&Status>) -> Status {
    match latest {
        Some(e) => Status::deadline_exceeded(format!(
            "deadline exceeded after {waited:?} waiting for a ready connection; \
             latest balancer error: {}",
            e.message()
        )),
        None => Status::deadline_exceeded(format!(
            "deadline exceeded after {waited:?} waiting for a connection"
        )),
    }
}

/// A real-time timer for `deadline`, or `never()` with a clock that jumps.
fn timer(shared: &Shared, deadline: Option<Instant>) -> Receiver<Instant> {
    match deadline {
        Some(d) if shared.real_time => at(d),
        _ => never(),
    }
}

/// Waits until `snapshot` is replaced or the deadline passes.
pub(crate) fn wait_for_picker(shared: &Shared, snapshot: &Snapshot, deadline: Option<Instant>) {
    let timer = timer(shared, deadline);
    select! {
        recv(snapshot.replaced()) -> _ => {}
        recv(timer) -> _ => {}
    }
}

/// Waits for a started call's result, the deadline or the channel's close.
fn wait_for_completion(
    shared: &Shared,
    rx: &Receiver<Result<CallResponse, CallError>>,
    deadline: Option<Instant>,
) -> Outcome {
    let dropped = || {
        Outcome::Done(Err(CallError::from(Status::internal(
            "the transport dropped the call without completing it",
        ))))
    };
    match rx.try_recv() {
        Ok(result) => return Outcome::Done(result),
        Err(crossbeam_channel::TryRecvError::Disconnected) => return dropped(),
        Err(crossbeam_channel::TryRecvError::Empty) => {}
    }
    let timer = timer(shared, deadline);
    loop {
        let snapshot = shared.cell.load_full();
        if let Ok(result) = rx.try_recv() {
            return Outcome::Done(result);
        }
        if shared.is_closed() {
            return Outcome::Closed;
        }
        if deadline.is_some_and(|d| shared.clock.now() >= d) {
            return Outcome::DeadlineExceeded;
        }
        select! {
            recv(rx) -> result => return match result {
                Ok(result) => Outcome::Done(result),
                Err(_) => dropped(),
            },
            recv(snapshot.replaced()) -> _ => {}
            recv(timer) -> _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_paths_need_a_service_and_a_method() {
        for good in ["/s/m", "/pkg.Svc/Method"] {
            assert!(is_method_path(good), "{good}");
        }
        for bad in ["", "/", "s/m", "/s", "/s/", "//m", "/s/m/x"] {
            assert!(!is_method_path(bad), "{bad}");
        }
    }

    #[test]
    fn the_earliest_deadline_wins_and_the_call_choice_beats_the_config() {
        let t0 = Instant::now();
        let sc = super::super::ServiceConfig::parse_str(
            r#"{"methodConfig": [{"name": [{"service": "s"}], "timeout": "5s", "waitForReady": true}]}"#,
            &crate::LbPolicyRegistry::with_builtins(),
        )
        .unwrap();
        let methods = sc.methods().clone();
        let plan = |own: Option<u64>, wfr: Option<bool>| Plan {
            start: t0,
            own_deadline: own.map(|s| t0 + Duration::from_secs(s)),
            own_wait_for_ready: wfr,
            default_timeout: Some(Duration::from_secs(60)),
        };
        let secs = |d: Option<Instant>| d.map(|d| (d - t0).as_secs());
        let (d, w) = plan(None, None).effective(&methods, "/s/m");
        assert_eq!((secs(d), w), (Some(5), true));
        let (d, w) = plan(Some(2), Some(false)).effective(&methods, "/s/m");
        assert_eq!((secs(d), w), (Some(2), false));
        let (d, _) = plan(Some(9), None).effective(&methods, "/s/m");
        assert_eq!(
            secs(d),
            Some(5),
            "the config's timeout caps a later deadline"
        );
        let (d, w) = plan(None, None).effective(&methods, "/other/m");
        assert_eq!((secs(d), w), (Some(60), false), "default timeout");
    }
}
