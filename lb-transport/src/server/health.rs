//! The standard gRPC health service (`grpc.health.v1.Health`) for our server:
//! `Check` (unary) and `Watch` (server-streaming, gRFC A17), with statuses the
//! program sets through a cloneable [`HealthService`] handle.
//!
//! ```text
//!   program ── set_serving_status("echo.Echo", NOT_SERVING) ──> HealthService
//!                                                      │ wakes every Watch handler
//!   Check(service) ─> the status, or NOT_FOUND for a service never set
//!   Watch(service) ─> the status now (SERVICE_UNKNOWN if never set), then each change
//! ```
//!
//! - The service `""` is the server as a whole; it starts SERVING.
//! - A `Watch` handler keeps no queue: after each message it sends the status as it
//!   is then, so a client that reads slowly skips intermediate statuses and sees the
//!   latest (the send side is bounded like every streaming call's, see
//!   [`ServerCall::send`](super::ServerCall::send)). Repeats of the status it last
//!   sent are not sent again.
//! - Each `Watch` holds a worker thread for as long as the client watches (see the
//!   [server docs](super)); size [`ServerBuilder::workers`] for the connections you
//!   expect. A `Watch` ends when its client cancels it or the server closes the
//!   connection: at once when the [`Server`](super::Server) is dropped, at the end of
//!   the grace period of [`Server::shutdown`](super::Server::shutdown). Call
//!   [`HealthService::shutdown`] first so that clients move away during the grace
//!   period.
//!
//! The messages are coded by [`lb_core::health`], which the channel's client-side
//! health checks use too.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use lb_core::health;
use lb_core::{Code, Status};
use parking_lot::Mutex;

use super::call::CallWaker;
use super::{Response, ServerBuilder, ServerCall};

pub use lb_core::health::ServingStatus;

#[derive(Default)]
struct State {
    statuses: HashMap<String, ServingStatus>,
    /// Set by `shutdown`: every status is NOT_SERVING and stays so.
    shut_down: bool,
    /// The Watch handlers to wake on a change (pruned as their calls end).
    watchers: Vec<CallWaker>,
}

/// The health service: statuses by service name, and the handlers that serve them.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lb_transport::server::Server;
/// use lb_transport::server::health::{HealthService, ServingStatus};
///
/// let health = HealthService::new();
/// health.set_serving_status("echo.Echo", ServingStatus::Serving);
/// let server = health.mount(Server::builder()).bind("127.0.0.1:0")?;
/// // Later: take the service out of rotation; watching clients see it at once.
/// health.set_serving_status("echo.Echo", ServingStatus::NotServing);
/// assert_eq!(health.serving_status("echo.Echo"), Some(ServingStatus::NotServing));
/// assert_eq!(health.serving_status(""), Some(ServingStatus::Serving));
/// health.shutdown();
/// server.shutdown(Duration::from_millis(100));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct HealthService {
    state: Arc<Mutex<State>>,
}

impl HealthService {
    /// A health service where the server as a whole (`""`) is SERVING and no other
    /// service is known.
    pub fn new() -> Self {
        let service = Self::default();
        service
            .state
            .lock()
            .statuses
            .insert(String::new(), ServingStatus::Serving);
        service
    }

    /// Sets `service`'s status (`""`: the server as a whole) and tells every
    /// watcher. Ignored after [`HealthService::shutdown`].
    pub fn set_serving_status(&self, service: &str, status: ServingStatus) {
        let mut state = self.state.lock();
        if state.shut_down {
            return;
        }
        state.statuses.insert(service.to_owned(), status);
        self.wake(state);
    }

    /// The status of `service`; `None` if it was never set.
    pub fn serving_status(&self, service: &str) -> Option<ServingStatus> {
        self.state.lock().statuses.get(service).copied()
    }

    /// How many `Watch` calls are open now.
    pub fn watch_count(&self) -> usize {
        let state = self.state.lock();
        state.watchers.iter().filter(|w| w.is_live()).count()
    }

    /// Sets every known service NOT_SERVING and ignores later updates (as grpc's
    /// health servers do before a server stops): watching clients move their calls
    /// elsewhere. [`HealthService::resume`] undoes it.
    pub fn shutdown(&self) {
        let mut state = self.state.lock();
        state.shut_down = true;
        for status in state.statuses.values_mut() {
            *status = ServingStatus::NotServing;
        }
        self.wake(state);
    }

    /// Sets every known service SERVING and accepts updates again.
    pub fn resume(&self) {
        let mut state = self.state.lock();
        state.shut_down = false;
        for status in state.statuses.values_mut() {
            *status = ServingStatus::Serving;
        }
        self.wake(state);
    }

    /// Registers `Check` and `Watch` on `builder`.
    pub fn mount(&self, builder: ServerBuilder) -> ServerBuilder {
        let check = self.clone();
        let watch = self.clone();
        builder
            .unary(health::CHECK_METHOD, move |request| {
                let service = decode(&request.message)?;
                match check.serving_status(&service) {
                    Some(status) => Ok(Response::new(health::encode_response(status))),
                    None => Err(Status::new(
                        Code::NotFound,
                        format!("unknown service {service:?}"),
                    )),
                }
            })
            .server_streaming(health::WATCH_METHOD, move |request, call| {
                watch.watch(&decode(&request)?, call)
            })
    }

    /// Serves one `Watch` until the call is cancelled.
    fn watch(&self, service: &str, call: &mut ServerCall) -> Result<(), Status> {
        let current = || {
            self.serving_status(service)
                .unwrap_or(ServingStatus::ServiceUnknown)
        };
        self.state.lock().watchers.push(call.waker());
        let mut sent = None;
        loop {
            let status = current();
            if sent != Some(status) {
                call.send(&health::encode_response(status))?;
                sent = Some(status);
            }
            call.wait_until(|| Some(current()) != sent)?;
        }
    }

    /// Wakes every watcher, forgetting those whose calls ended.
    fn wake(&self, mut state: parking_lot::MutexGuard<'_, State>) {
        let watchers = std::mem::take(&mut state.watchers);
        drop(state);
        // A waker locks its call; never hold our lock then (a watcher holds its
        // call's lock while it reads the statuses).
        let live: Vec<_> = watchers.into_iter().filter(CallWaker::wake).collect();
        self.state.lock().watchers.extend(live);
    }
}

impl fmt::Debug for HealthService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("HealthService")
            .field("statuses", &state.statuses)
            .field("shut_down", &state.shut_down)
            .field("watchers", &state.watchers.len())
            .finish()
    }
}

fn decode(request: &[u8]) -> Result<String, Status> {
    health::decode_request(request)
        .map_err(|e| Status::invalid_argument(format!("bad HealthCheckRequest: {e}")))
}
