//! Pickers: the per-call routing decision, made on the calling thread.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::address::Attributes;
use crate::metadata::Metadata;
use crate::policy::WorkScheduler;
use crate::status::Status;
use crate::subchannel::Subchannel;

/// What a picker knows about the call it routes.
///
/// # Examples
///
/// ```
/// use lb_core::{Attributes, Metadata, PickInfo};
/// let md = Metadata::new();
/// let plain = PickInfo::new("/s/m", &md);
/// assert!(plain.attributes.is_empty());
/// // A config selector's choice (xDS: the route's cluster and request hash).
/// let attrs = Attributes::new().with("cluster", "c1");
/// let routed = plain.with_call(&attrs, Some(7));
/// assert_eq!(routed.attributes.get("cluster"), Some("c1"));
/// assert_eq!(routed.request_hash, Some(7));
/// ```
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct PickInfo<'a> {
    /// The full method path, `/package.Service/Method`.
    pub method: &'a str,
    /// The call's metadata.
    pub metadata: &'a Metadata,
    /// What the channel's config selector chose for the call (empty without
    /// one): xDS puts the route's cluster here for `xds_cluster_manager`.
    pub attributes: &'a Attributes,
    /// The call's hash from the selector's hash policies (gRFC A42), which
    /// `ring_hash` uses before anything else.
    pub request_hash: Option<u64>,
}

/// The attributes of a call without a config selector.
static NO_ATTRIBUTES: Attributes = Attributes::new();

impl<'a> PickInfo<'a> {
    /// A call to `method` with `metadata`, with no selector's attributes.
    pub fn new(method: &'a str, metadata: &'a Metadata) -> Self {
        Self {
            method,
            metadata,
            attributes: &NO_ATTRIBUTES,
            request_hash: None,
        }
    }

    /// This call with a config selector's attributes and request hash.
    #[must_use]
    pub fn with_call(self, attributes: &'a Attributes, request_hash: Option<u64>) -> Self {
        Self {
            attributes,
            request_hash,
            ..self
        }
    }
}

/// A callback told how a picked call ended: its final status (OK included), its
/// trailers and how long it took ([`CallCompletion`]).
pub type CompletionCallback = Box<dyn FnOnce(&CallCompletion<'_>) + Send>;

/// How a picked call (one attempt of it) ended, for its pick's
/// [`on_complete`](Pick::on_complete) callback.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lb_core::{CallCompletion, Metadata, Status};
/// let mut trailers = Metadata::new();
/// trailers.insert("x-load", "0.5").unwrap();
/// let status = Status::ok().with_trailers(trailers);
/// let done = CallCompletion::new(&status, Duration::from_millis(12));
/// assert!(done.status.is_ok());
/// assert_eq!(done.trailers().get("x-load"), Some("0.5"));
/// assert_eq!(done.duration.as_millis(), 12);
/// ```
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct CallCompletion<'a> {
    /// The final status; a status the server sent carries its trailers.
    pub status: &'a Status,
    /// From the pick to the end of the attempt, on the channel's clock (zero for
    /// an attempt that ended before it was sent).
    pub duration: Duration,
}

impl<'a> CallCompletion<'a> {
    /// A completion with `status` after `duration`.
    pub fn new(status: &'a Status, duration: Duration) -> Self {
        Self { status, duration }
    }

    /// The trailers the call ended with (empty when the server sent none).
    pub fn trailers(&self) -> &'a Metadata {
        self.status.trailers()
    }
}

/// A successful pick: the subchannel to send the call on, and what to add to it.
///
/// The subchannel is borrowed from the picker: handing out a reference instead of a
/// refcounted clone keeps the pick free of writes to shared memory, so picks on many
/// threads do not contend. The caller holds the picker while it starts the call.
pub struct Pick<'a> {
    /// The subchannel to send the call on.
    pub subchannel: &'a Subchannel,
    /// Metadata to add to the call.
    pub metadata: Metadata,
    /// Called once when the call ends, with its status, trailers and duration.
    pub on_complete: Option<CompletionCallback>,
}

impl<'a> Pick<'a> {
    /// A pick of `subchannel` with nothing added.
    pub fn new(subchannel: &'a Subchannel) -> Self {
        Self {
            subchannel,
            metadata: Metadata::new(),
            on_complete: None,
        }
    }
}

impl fmt::Debug for Pick<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pick")
            .field("subchannel", self.subchannel)
            .field("metadata", &self.metadata)
            .field("on_complete", &self.on_complete.is_some())
            .finish()
    }
}

/// A picker's decision for one call.
#[derive(Debug)]
pub enum PickResult<'a> {
    /// Send the call on this subchannel.
    Pick(Pick<'a>),
    /// No decision yet: wait for the next picker (or the call's deadline).
    Queue,
    /// Fail the call with this status, unless it is wait-for-ready, in which case it
    /// waits for the next picker. Used while the policy is in TRANSIENT_FAILURE.
    Fail(Status),
    /// Fail the call with this status even if it is wait-for-ready.
    Drop(Status),
}

impl PickResult<'_> {
    /// The picked subchannel, if this is a pick.
    pub fn subchannel(&self) -> Option<&Subchannel> {
        match self {
            Self::Pick(p) => Some(p.subchannel),
            _ => None,
        }
    }
}

/// Routes calls. Made by a policy, published with
/// [`ChannelController::update_picker`](crate::ChannelController::update_picker) and
/// called concurrently by every thread that starts a call.
///
/// A picker never blocks and never does I/O. If it needs the policy to act (start a
/// connection, send a lookup) it asks through a [`WorkScheduler`] or another channel to
/// the serializer and returns [`PickResult::Queue`].
pub trait Picker: Send + Sync + 'static {
    /// Decides where the call described by `info` goes.
    fn pick(&self, info: &PickInfo<'_>) -> PickResult<'_>;
}

impl fmt::Debug for dyn Picker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Picker")
    }
}

/// A picker that queues every call: for CONNECTING, and for IDLE when nothing needs to
/// be kicked.
///
/// ```
/// use lb_core::{Metadata, PickInfo, PickResult, Picker, QueuePicker};
/// let md = Metadata::new();
/// let info = PickInfo::new("/s/m", &md);
/// assert!(matches!(QueuePicker.pick(&info), PickResult::Queue));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct QueuePicker;

impl Picker for QueuePicker {
    fn pick(&self, _: &PickInfo<'_>) -> PickResult<'_> {
        PickResult::Queue
    }
}

/// A picker that fails every call with one status (wait-for-ready calls keep waiting).
#[derive(Clone, Debug)]
pub struct FailPicker(pub Status);

impl Picker for FailPicker {
    fn pick(&self, _: &PickInfo<'_>) -> PickResult<'_> {
        PickResult::Fail(self.0.clone())
    }
}

/// A picker that drops every call with one status, wait-for-ready or not.
#[derive(Clone, Debug)]
pub struct DropPicker(pub Status);

impl Picker for DropPicker {
    fn pick(&self, _: &PickInfo<'_>) -> PickResult<'_> {
        PickResult::Drop(self.0.clone())
    }
}

/// The picker of an IDLE policy: queues the call and asks the policy, once, to leave
/// IDLE (the serializer then calls its [`LbPolicy::work`](crate::LbPolicy::work)).
pub struct ExitIdlePicker {
    scheduler: Arc<dyn WorkScheduler>,
    asked: std::sync::atomic::AtomicBool,
}

impl ExitIdlePicker {
    /// A picker that calls `scheduler` on its first pick.
    pub fn new(scheduler: Arc<dyn WorkScheduler>) -> Self {
        Self {
            scheduler,
            asked: Default::default(),
        }
    }
}

impl Picker for ExitIdlePicker {
    fn pick(&self, _: &PickInfo<'_>) -> PickResult<'_> {
        if !self.asked.load(Ordering::Relaxed) && !self.asked.swap(true, Ordering::AcqRel) {
            self.scheduler.schedule_work();
        }
        PickResult::Queue
    }
}

/// How many counter shards a [`RoundRobinCounter`] has; threads are spread over them.
const SHARDS: usize = 8;

#[repr(align(128))]
#[derive(Default)]
struct PaddedCounter(AtomicUsize);

thread_local! {
    static THREAD_SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

static NEXT_THREAD_SHARD: AtomicUsize = AtomicUsize::new(0);

fn thread_shard() -> usize {
    THREAD_SHARD.with(|s| {
        let mut v = s.get();
        if v == usize::MAX {
            v = NEXT_THREAD_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
            s.set(v);
        }
        v
    })
}

/// A round-robin position that many threads advance without contending.
///
/// Each thread advances its own shard (threads are spread over 8 cache-line-sized
/// shards), so one thread sees a strict cycle and many threads together see an even
/// spread, with no shared writes on the pick path. Two threads that share a shard may
/// now and then take the same position; that costs evenness, never correctness.
///
/// # Examples
///
/// ```
/// let c = lb_core::RoundRobinCounter::new(2);
/// let got: Vec<usize> = (0..5).map(|_| c.next_below(3)).collect();
/// assert_eq!(got, [2, 0, 1, 2, 0]);
/// ```
pub struct RoundRobinCounter {
    shards: Box<[PaddedCounter; SHARDS]>,
}

impl RoundRobinCounter {
    /// A counter whose every shard starts at `start`.
    pub fn new(start: usize) -> Self {
        let shards: Box<[PaddedCounter; SHARDS]> = Box::default();
        for s in shards.iter() {
            s.0.store(start, Ordering::Relaxed);
        }
        Self { shards }
    }

    /// The current position of this thread's shard in `0..n`, which then moves on by
    /// one and wraps to 0 at `n`. `n` must not be 0.
    #[inline]
    pub fn next_below(&self, n: usize) -> usize {
        let c = &self.shards[thread_shard()].0;
        let mut v = c.load(Ordering::Relaxed);
        if v >= n {
            // Only a start at or beyond `n` gets here; no division on the usual path.
            v %= n.max(1);
        }
        c.store(if v + 1 >= n { 0 } else { v + 1 }, Ordering::Relaxed);
        v
    }
}

impl fmt::Debug for RoundRobinCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RoundRobinCounter")
    }
}

/// Random numbers for pickers, drawn without a lock.
///
/// Like [`RoundRobinCounter`], each thread steps its own cache-line-sized shard (a
/// SplitMix64 state), so picks on many threads neither lock nor write each other's
/// memory. The shards are seeded from the policy's injected random source, so one
/// thread's sequence is reproducible in tests. Two threads that share a shard may now
/// and then draw the same number; that costs randomness, never correctness.
///
/// # Examples
///
/// ```
/// use lb_core::{PickerRandom, SharedRandom, SplitMix64};
/// let a = PickerRandom::new(&SharedRandom::new(SplitMix64::seeded(1)));
/// let b = PickerRandom::new(&SharedRandom::new(SplitMix64::seeded(1)));
/// assert_eq!(a.next_u64(), b.next_u64(), "same seed, same sequence on one thread");
/// assert!(a.below(3) < 3);
/// ```
pub struct PickerRandom {
    shards: Box<[PaddedU64; SHARDS]>,
}

#[repr(align(128))]
#[derive(Default)]
struct PaddedU64(AtomicU64);

impl PickerRandom {
    /// A source whose shards are seeded from `random`.
    pub fn new(random: &crate::random::SharedRandom) -> Self {
        let shards: Box<[PaddedU64; SHARDS]> = Box::default();
        for s in shards.iter() {
            s.0.store(random.next_u64(), Ordering::Relaxed);
        }
        Self { shards }
    }

    /// A uniformly random 64-bit value from this thread's shard.
    #[inline]
    pub fn next_u64(&self) -> u64 {
        let s = &self.shards[thread_shard()].0;
        let state = s
            .load(Ordering::Relaxed)
            .wrapping_add(crate::random::SPLITMIX_GAMMA);
        s.store(state, Ordering::Relaxed);
        crate::random::splitmix_mix(state)
    }

    /// A uniformly random index below `n` (0 when `n` is 0).
    #[inline]
    pub fn below(&self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

impl fmt::Debug for PickerRandom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PickerRandom")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn counter_cycles_per_thread() {
        let c = Arc::new(RoundRobinCounter::new(5));
        let here: Vec<usize> = (0..4).map(|_| c.next_below(10)).collect();
        assert_eq!(here, [5, 6, 7, 8]);
        let c2 = c.clone();
        let there: Vec<usize> =
            std::thread::spawn(move || (0..3).map(|_| c2.next_below(10)).collect())
                .join()
                .unwrap();
        assert_eq!(there.len(), 3);
        assert_eq!(there[1], (there[0] + 1) % 10);
        assert_eq!(
            c.next_below(10),
            9,
            "another thread's picks never move this thread's cycle"
        );
        assert_eq!(c.next_below(10), 0, "wraps at n");
        assert_eq!(
            RoundRobinCounter::new(7).next_below(3),
            1,
            "a start beyond n wraps"
        );
    }

    struct CountingScheduler(AtomicUsize);
    impl WorkScheduler for CountingScheduler {
        fn schedule_work(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn exit_idle_picker_asks_once() {
        let sched = Arc::new(CountingScheduler(AtomicUsize::new(0)));
        let p = ExitIdlePicker::new(sched.clone());
        let md = Metadata::new();
        let info = PickInfo::new("/a/b", &md);
        for _ in 0..3 {
            assert!(matches!(p.pick(&info), PickResult::Queue));
        }
        assert_eq!(sched.0.load(Ordering::SeqCst), 1);
    }
}
