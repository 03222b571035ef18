//! Who polls an I/O loop: its own thread, or a caller blocked in one of the loop's
//! calls. A sequential blocking call then runs on one thread from request to
//! response, as gRPC C++'s synchronous API does, instead of crossing to the I/O
//! thread and back (two thread switches, each a wake-up on another core).
//!
//! ```text
//!                       Mutex<IoLoop>: whoever holds it polls
//!   I/O thread ─── lock ──> passes until quiet ──> release ──> rest (GRACE) ─┐
//!        ^                                                                    │
//!        └──── `wanted` (a sender or a releasing driver needs a poller) ──────┘
//!   caller in CallStream::drive ── try_lock ──> passes until its call is ready
//!                               └─ held by another: mark parked, wait on its bell
//! ```
//!
//! # The rules
//!
//! - **Polling.** The holder of the loop's lock polls; `polling` says so to
//!   senders. The I/O thread holds it while the loop has work no caller will drive
//!   ("not quiet", below); it then releases it and rests. It polls again when
//!   asked (`wanted`), or after [`GRACE`] without any caller driving, so idle
//!   connections still answer pings and see their peers go away.
//! - **Quiet.** A loop is quiet when every connection is open with nothing to
//!   write, every open call was opened with `caller_drives` and has nothing waiting
//!   for the peer's window, no caller is parked, and no command waits. The
//!   callers of driven calls will poll when they wait; anything else needs the I/O
//!   thread.
//! - **Senders** of a command wake the poller if there is one (the loop's waker);
//!   otherwise they ask for the I/O thread, unless the command belongs to a driven
//!   call: its caller is about to drive, and takes the command itself.
//! - **Drivers** try the lock. If the I/O thread holds it only because a caller
//!   was parked, and none is any more, the driver wakes it and waits up to
//!   [`HANDOFF_WAIT`] for the lock: the I/O thread lets go on its next pass, and
//!   a long call (a ping-pong stream) goes back to being driven by its caller.
//!   If another thread holds the lock otherwise, the driver marks its
//!   call *parked*, tries once more, and gives up: it waits on its bell, and the
//!   holder, seeing a parked caller when it releases, asks for the I/O thread.
//!   Marking before the second try and checking after the release (each with a
//!   full fence) means one of the two always sees the other.
//! - A driver releases when its call is ready, at its deadline, or after
//!   [`DRIVE_SLICE`]; if the loop is not quiet then, it asks for the I/O thread.
//!
//! Callbacks run on whichever thread polls. They must not block wherever they
//! run; the commands they send go to that thread's own list (see
//! [`client`](super::client)), which a releasing poller hands to the loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::time::{Duration, Instant};

use mio::Waker;
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::driver::call::StreamShared;
use crate::driver::client::{IoLoop, OwnCommandsGuard};

/// How long the I/O thread rests, when it has nothing to do, before it polls idle
/// connections again: while callers keep driving, it keeps resting. Pings, a
/// peer's GOAWAY or a closed socket on an idle loop are seen at most this late.
pub const GRACE: Duration = Duration::from_millis(2);

/// The longest the I/O thread sleeps in `poll` before it looks at its queue
/// again, whatever it expects: a backstop against a missed wake-up (one was seen
/// once in CI, in `channel_leaks`, and is not explained yet).
pub const IDLE_POLL: Duration = Duration::from_millis(50);

/// How long a caller waits for the I/O thread to let go of a loop it polls only
/// for parked callers (see `LoopShared::ask_io_thread`) before it parks itself.
pub const HANDOFF_WAIT: Duration = Duration::from_millis(1);

/// The longest a caller drives in one go before it looks at its call again.
pub const DRIVE_SLICE: Duration = Duration::from_millis(50);

/// What an I/O loop shares with every thread that uses it.
pub(crate) struct LoopShared {
    /// The loop; its holder polls.
    io: Mutex<IoLoop>,
    pub(crate) waker: Waker,
    pub(crate) loop_id: u64,
    /// Someone holds `io` and polls: senders wake it with `waker` if it sleeps.
    polling: AtomicBool,
    /// The poller is blocked in `poll` (or about to be): only then does a sender
    /// need the `waker` (a system call, and a wake-up); a poller that is awake
    /// looks at the queue before it sleeps.
    sleeping: Arc<AtomicBool>,
    /// The I/O thread holds `io` and its last pass found the loop quiet: it polls
    /// only for parked callers, and lets go on its next pass if there are none.
    yieldable: AtomicBool,
    /// Drives so far: the resting I/O thread polls again only after a [`GRACE`]
    /// without one.
    drives: AtomicU64,
    /// Callers waiting on their bells for calls of this loop, not driving (each
    /// call counts once, see [`StreamShared::set_parked`]).
    pub(crate) parked: Arc<AtomicUsize>,
    /// The I/O thread is asked to poll.
    wanted: Mutex<bool>,
    rest: Condvar,
    /// The loop has stopped for good; nobody drives it any more.
    finished: AtomicBool,
}

impl LoopShared {
    pub(crate) fn new(
        io: IoLoop,
        waker: Waker,
        loop_id: u64,
        parked: Arc<AtomicUsize>,
        sleeping: Arc<AtomicBool>,
    ) -> Self {
        Self {
            io: Mutex::new(io),
            waker,
            loop_id,
            polling: AtomicBool::new(false),
            sleeping,
            yieldable: AtomicBool::new(false),
            drives: AtomicU64::new(0),
            parked,
            wanted: Mutex::new(false),
            rest: Condvar::new(),
            finished: AtomicBool::new(false),
        }
    }

    /// After a command was queued: makes sure a poller will see it. `deferred`: it
    /// belongs to a driven call, whose caller will take it when it drives.
    pub(crate) fn notify(&self, deferred: Option<&StreamShared>) {
        // Pairs with `begin_polling`'s store and `release`'s look at the queue.
        fence(Ordering::SeqCst);
        if self.polling.load(Ordering::SeqCst) {
            if self.sleeping.load(Ordering::SeqCst) {
                if let Err(e) = self.waker.wake() {
                    log::warn!("waking the I/O thread failed: {e}");
                }
            }
        } else if let Some(stream) = deferred {
            stream.deferred.store(true, Ordering::Relaxed);
        } else {
            self.call_io_thread();
        }
    }

    /// Asks the I/O thread to poll (at once if it rests, else after its passes).
    fn call_io_thread(&self) {
        let mut wanted = self.wanted.lock();
        *wanted = true;
        self.rest.notify_one();
    }

    fn begin_polling(&self) {
        self.polling.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// Lets go of the loop; asks for the I/O thread if it has work no driver
    /// will do.
    fn release(&self, mut io: MutexGuard<'_, IoLoop>) {
        io.adopt_own_commands();
        self.polling.store(false, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let busy = !io.quiet() || io.commands_waiting() || io.done();
        drop(io);
        fence(Ordering::SeqCst);
        if busy || self.parked.load(Ordering::SeqCst) > 0 {
            self.call_io_thread();
        }
    }

    /// [`CallStream::drive`](lb_core::transport::CallStream::drive) for `stream`.
    pub(crate) fn drive(
        &self,
        stream: &StreamShared,
        until: &mut dyn FnMut() -> bool,
        deadline: Option<Instant>,
    ) -> bool {
        stream.clear_parked();
        if !stream.driven
            || self.finished.load(Ordering::Acquire)
            || OwnCommandsGuard::polls_a_loop()
        {
            return false;
        }
        let io = match self.io.try_lock().or_else(|| self.ask_io_thread()) {
            Some(io) => io,
            None => {
                stream.set_parked();
                fence(Ordering::SeqCst);
                match self.io.try_lock() {
                    Some(io) => {
                        stream.clear_parked();
                        io
                    }
                    None => {
                        // The holder has not seen a command we left for ourselves.
                        if stream.deferred.swap(false, Ordering::Relaxed) {
                            let _ = self.waker.wake();
                        }
                        return false;
                    }
                }
            }
        };
        if io.done() {
            drop(io);
            self.call_io_thread();
            return false;
        }
        stream.deferred.store(false, Ordering::Relaxed);
        self.drives.fetch_add(1, Ordering::Relaxed);
        self.poll_until(io, until, deadline);
        true
    }

    /// When the I/O thread holds the loop only for parked callers and there are
    /// none: wakes it, so that its next pass lets go, and waits a little for the
    /// loop. Otherwise the caller parks at once (the I/O thread keeps polling).
    fn ask_io_thread(&self) -> Option<MutexGuard<'_, IoLoop>> {
        if !self.yieldable.load(Ordering::SeqCst) || self.parked.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let _ = self.waker.wake();
        self.io.try_lock_for(HANDOFF_WAIT)
    }

    fn poll_until(
        &self,
        io: MutexGuard<'_, IoLoop>,
        until: &mut dyn FnMut() -> bool,
        deadline: Option<Instant>,
    ) {
        self.begin_polling();
        let own = OwnCommandsGuard::install(self.loop_id);
        // Released however this ends, a panicking callback included.
        let mut driving = Driving {
            shared: self,
            io: Some(io),
        };
        let io = driving.io.as_mut().expect("held until dropped");
        let slice_end = Instant::now() + DRIVE_SLICE;
        let end = deadline.map_or(slice_end, |d| d.min(slice_end));
        while !until() && !io.done() && Instant::now() < end {
            io.pass(Some(end));
        }
        // Hands this thread's own commands to the loop before it stops being one.
        drop(driving);
        drop(own);
    }

    /// The I/O thread: polls while the loop has work no caller drives, rests while
    /// callers drive, and ends the loop once it has shut down.
    pub(crate) fn run(self: Arc<Self>) {
        let _own = OwnCommandsGuard::install(self.loop_id);
        loop {
            let mut io = self.io.lock();
            self.begin_polling();
            loop {
                // Never longer than IDLE_POLL: a backstop, so that a wake-up this
                // loop failed to see delays a command instead of stranding it.
                io.pass(Some(Instant::now() + IDLE_POLL));
                if io.done() {
                    self.finished.store(true, Ordering::Release);
                    self.polling.store(false, Ordering::SeqCst);
                    io.finish();
                    return;
                }
                let quiet = io.quiet();
                if quiet && self.parked.load(Ordering::SeqCst) == 0 {
                    break;
                }
                self.yieldable.store(quiet, Ordering::SeqCst);
            }
            self.yieldable.store(false, Ordering::SeqCst);
            self.release(io);
            self.rest();
        }
    }

    /// Waits until asked to poll, or until a [`GRACE`] passes without a drive.
    fn rest(&self) {
        let mut wanted = self.wanted.lock();
        loop {
            if std::mem::take(&mut *wanted) {
                return;
            }
            let seen = self.drives.load(Ordering::Relaxed);
            let timed_out = self.rest.wait_for(&mut wanted, GRACE).timed_out();
            // A caller driving right now counts as driving.
            if timed_out
                && !*wanted
                && self.drives.load(Ordering::Relaxed) == seen
                && !self.polling.load(Ordering::SeqCst)
            {
                return;
            }
        }
    }
}

/// A caller's hold on the loop: released when dropped.
struct Driving<'a> {
    shared: &'a LoopShared,
    io: Option<MutexGuard<'a, IoLoop>>,
}

impl Drop for Driving<'_> {
    fn drop(&mut self) {
        if let Some(io) = self.io.take() {
            self.shared.release(io);
        }
    }
}
