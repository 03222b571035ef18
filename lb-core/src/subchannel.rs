//! Subchannels: a policy's handle on one connection to one address.

use std::any::Any;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::Duration;

use crate::address::Address;
use crate::orca::{OobListener, OobRequest};
use crate::state::ConnectivityState;
use crate::status::Status;

/// A subchannel's stable identity, unique within the channel that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubchannelId(pub u64);

impl fmt::Display for SubchannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "subchannel#{}", self.0)
    }
}

/// A state update for a subchannel, delivered to the policy that created it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubchannelState {
    /// The new state.
    pub connectivity_state: ConnectivityState,
    /// Why the last attempt failed; set with TRANSIENT_FAILURE.
    pub last_error: Option<Status>,
}

impl SubchannelState {
    /// A state with no error.
    pub fn new(connectivity_state: ConnectivityState) -> Self {
        Self {
            connectivity_state,
            last_error: None,
        }
    }

    /// TRANSIENT_FAILURE because of `error`.
    pub fn failure(error: Status) -> Self {
        Self {
            connectivity_state: ConnectivityState::TransientFailure,
            last_error: Some(error),
        }
    }
}

/// What stands behind a [`Subchannel`]: the channel (or a test fake) that owns its
/// connection. Implement this to build your own channel; policies never see it.
pub trait SubchannelBackend: Send + Sync + 'static {
    /// Starts connecting if the subchannel is IDLE; otherwise does nothing.
    fn connect(&self, id: SubchannelId);
    /// Releases the subchannel for good. Called at most once per subchannel.
    fn shutdown(&self, id: SubchannelId);
    /// The backend as `Any`, so its owner can get its own type back.
    fn as_any(&self) -> &dyn Any;
    /// Starts (`Some`), replaces or stops (`None`) out-of-band ORCA load reports for
    /// `id`; see [`Subchannel::request_oob_reports`]. The default ignores the request:
    /// a backend without ORCA support never reports.
    fn set_oob_reports(&self, id: SubchannelId, request: Option<OobRequest>) {
        let _ = (id, request);
    }
}

/// A handle on one connection to one address, created by
/// [`ChannelController::new_subchannel`](crate::ChannelController::new_subchannel).
///
/// Clones are the same subchannel. A policy owns the subchannels it creates and shuts
/// them down when it no longer needs them; state updates go to the policy that created
/// the subchannel, through [`LbPolicy::subchannel_update`](crate::LbPolicy::subchannel_update).
///
/// ```text
///             connect()                     connected
///   IDLE ─────────────────> CONNECTING ──────────────────> READY
///    ^                          │                            │
///    │ backoff expired          │ attempt failed             │ connection lost,
///    │                          v                            │ GOAWAY
///    └──────────────── TRANSIENT_FAILURE                     v
///                                                          IDLE
///
///   shutdown() from any state: no further updates, the connection is closed.
/// ```
///
/// A subchannel starts IDLE and connects only when asked. Backoff between attempts is
/// the channel's business (gRPC's connection-backoff spec), not the policy's.
/// [`Subchannel::shutdown`] is idempotent.
///
/// # Examples
///
/// ```
/// # use std::any::Any;
/// # use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
/// use lb_core::{Address, Subchannel, SubchannelBackend, SubchannelId};
///
/// #[derive(Default)]
/// struct Count(AtomicUsize);
/// impl SubchannelBackend for Count {
///     fn connect(&self, _: SubchannelId) {}
///     fn shutdown(&self, _: SubchannelId) { self.0.fetch_add(1, Ordering::SeqCst); }
///     fn as_any(&self) -> &dyn Any { self }
/// }
///
/// let backend = Arc::new(Count::default());
/// let sc = Subchannel::new(SubchannelId(1), Address::new("a:1"), backend.clone());
/// sc.shutdown();
/// sc.clone().shutdown();
/// assert_eq!(backend.0.load(Ordering::SeqCst), 1);
/// ```
#[derive(Clone)]
pub struct Subchannel {
    inner: Arc<Inner>,
}

struct Inner {
    id: SubchannelId,
    address: Address,
    backend: Arc<dyn SubchannelBackend>,
    shut_down: AtomicBool,
}

impl Subchannel {
    /// A handle on subchannel `id`, for a channel implementation to hand to policies.
    pub fn new(id: SubchannelId, address: Address, backend: Arc<dyn SubchannelBackend>) -> Self {
        Self {
            inner: Arc::new(Inner {
                id,
                address,
                backend,
                shut_down: AtomicBool::new(false),
            }),
        }
    }

    /// The stable id.
    pub fn id(&self) -> SubchannelId {
        self.inner.id
    }

    /// The address this subchannel connects to.
    pub fn address(&self) -> &Address {
        &self.inner.address
    }

    /// Asks the subchannel to connect if it is IDLE. Does nothing after shutdown.
    pub fn connect(&self) {
        if !self.is_shut_down() {
            self.inner.backend.connect(self.inner.id);
        }
    }

    /// Shuts the subchannel down. Only the first call has an effect.
    pub fn shutdown(&self) {
        if !self.inner.shut_down.swap(true, Ordering::AcqRel) {
            self.inner.backend.shutdown(self.inner.id);
        }
    }

    /// Asks for out-of-band load reports (gRFC A51) from this subchannel's server every
    /// `period`, replacing any earlier request. While the connection is READY the
    /// channel keeps one `StreamCoreMetrics` stream open (re-opened with backoff) and
    /// calls `listener` on the serializer with each report; only the latest report per
    /// subchannel waits there. A subchannel nobody asks about opens no stream.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use lb_core::{Address, Subchannel, SubchannelBackend, SubchannelId};
    /// # struct Nop;
    /// # impl SubchannelBackend for Nop {
    /// #     fn connect(&self, _: SubchannelId) {}
    /// #     fn shutdown(&self, _: SubchannelId) {}
    /// #     fn as_any(&self) -> &dyn std::any::Any { self }
    /// # }
    /// let sc = Subchannel::new(SubchannelId(1), Address::new("a:1"), Arc::new(Nop));
    /// sc.request_oob_reports(std::time::Duration::from_secs(10), Arc::new(|report| {
    ///     println!("cpu {}", report.cpu_utilization);
    /// }));
    /// sc.stop_oob_reports();
    /// ```
    pub fn request_oob_reports(&self, period: Duration, listener: OobListener) {
        if !self.is_shut_down() {
            let request = OobRequest { period, listener };
            self.inner
                .backend
                .set_oob_reports(self.inner.id, Some(request));
        }
    }

    /// Stops out-of-band load reports asked for with
    /// [`Subchannel::request_oob_reports`]; the channel closes the stream.
    pub fn stop_oob_reports(&self) {
        if !self.is_shut_down() {
            self.inner.backend.set_oob_reports(self.inner.id, None);
        }
    }

    /// Whether [`Subchannel::shutdown`] has been called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.shut_down.load(Ordering::Acquire)
    }

    /// The backend, for the channel that created this subchannel.
    pub fn backend(&self) -> &dyn SubchannelBackend {
        &*self.inner.backend
    }
}

impl PartialEq for Subchannel {
    fn eq(&self, other: &Self) -> bool {
        self.inner.id == other.inner.id
    }
}

impl Eq for Subchannel {}

impl Hash for Subchannel {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.id.hash(state);
    }
}

impl fmt::Debug for Subchannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.inner.id, self.inner.address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl SubchannelBackend for Recorder {
        fn connect(&self, id: SubchannelId) {
            self.0.lock().push(format!("connect {}", id.0));
        }
        fn shutdown(&self, id: SubchannelId) {
            self.0.lock().push(format!("shutdown {}", id.0));
        }
        fn as_any(&self) -> &dyn Any {
            self
        }
    }

    #[test]
    fn shutdown_is_idempotent_across_clones_and_threads() {
        let rec = Arc::new(Recorder::default());
        let sc = Subchannel::new(SubchannelId(7), Address::new("a:1"), rec.clone());
        std::thread::scope(|s| {
            for _ in 0..8 {
                let sc = sc.clone();
                s.spawn(move || sc.shutdown());
            }
        });
        assert!(sc.is_shut_down());
        assert_eq!(*rec.0.lock(), ["shutdown 7"]);
    }

    #[test]
    fn connect_after_shutdown_does_nothing() {
        let rec = Arc::new(Recorder::default());
        let sc = Subchannel::new(SubchannelId(1), Address::new("a:1"), rec.clone());
        sc.connect();
        sc.shutdown();
        sc.connect();
        assert_eq!(*rec.0.lock(), ["connect 1", "shutdown 1"]);
    }

    #[test]
    fn identity_is_the_id_and_the_backend_is_recoverable() {
        let rec = Arc::new(Recorder::default());
        let a = Subchannel::new(SubchannelId(1), Address::new("a:1"), rec.clone());
        let b = Subchannel::new(SubchannelId(2), Address::new("a:1"), rec.clone());
        assert_ne!(a, b, "same address, different subchannels");
        assert_eq!(a, a.clone());
        assert!(a.backend().as_any().downcast_ref::<Recorder>().is_some());
        assert_eq!(format!("{a:?}"), "subchannel#1(a:1)");
    }

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        assert_send_sync::<Subchannel>();
        assert_send_sync::<crate::LbState>();
        assert_send_sync::<std::sync::Arc<dyn crate::Picker>>();
        assert_send_sync::<crate::Metadata>();
        assert_send_sync::<crate::Status>();
        assert_send_sync::<crate::LbConfig>();
        assert_send_sync::<crate::RoundRobinCounter>();
    }
}
