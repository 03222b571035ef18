//! The picker cell: where the serializer publishes pickers and calling threads read
//! them without taking a lock.
//!
//! ```text
//!   serializer ── publish(state, picker) ──> ArcSwap<Snapshot> <── load() ── calls
//!                          │                      (lock-free, no shared writes)
//!                          └─ drops the old snapshot's sender: every thread waiting
//!                             on `old.replaced()` wakes at once
//! ```
//!
//! Each snapshot carries a zero-capacity channel whose only sender the cell keeps;
//! publishing the next snapshot drops that sender, so a `select!` on the old
//! snapshot's `replaced()` receiver returns. A waiter that loaded a snapshot, found
//! it wanting and then waits on its `replaced()` cannot miss a publish that came in
//! between: the receiver is already disconnected. The same mechanism carries clock
//! jumps and the channel's close ([`PickerCell::touch`]).

use std::fmt;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use super::selector::SelectorRef;
use super::service_config::MethodConfigs;
use crate::picker::Picker;
use crate::state::ConnectivityState;

/// What calls see: the picker, the channel's state and the method configs.
pub(crate) struct Snapshot {
    pub(crate) picker: Arc<dyn Picker>,
    pub(crate) state: ConnectivityState,
    pub(crate) methods: Arc<MethodConfigs>,
    /// The resolver's config selector, published with the picker made from the
    /// same update.
    pub(crate) selector: Option<SelectorRef>,
    replaced: Receiver<()>,
}

impl Snapshot {
    /// Ready (disconnected) once a newer snapshot is published.
    pub(crate) fn replaced(&self) -> &Receiver<()> {
        &self.replaced
    }

    /// Whether a newer snapshot has been published.
    #[cfg(test)]
    pub(crate) fn is_replaced(&self) -> bool {
        matches!(
            self.replaced.try_recv(),
            Err(crossbeam_channel::TryRecvError::Disconnected)
        )
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Snapshot({})", self.state)
    }
}

/// The current snapshot, swapped atomically.
pub(crate) struct PickerCell {
    current: ArcSwap<Snapshot>,
    /// Only publishers take this lock, never calls.
    publisher: Mutex<Publisher>,
}

/// What publishers share.
struct Publisher {
    /// The sender of the current snapshot's `replaced` channel.
    replaced_tx: Sender<()>,
    /// A selector staged to go out with the next picker.
    staged: Option<Option<SelectorRef>>,
}

impl PickerCell {
    pub(crate) fn new(state: ConnectivityState, picker: Arc<dyn Picker>) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(0);
        Self {
            current: ArcSwap::from_pointee(Snapshot {
                picker,
                state,
                methods: Arc::default(),
                selector: None,
                replaced: rx,
            }),
            publisher: Mutex::new(Publisher {
                replaced_tx: tx,
                staged: None,
            }),
        }
    }

    /// The current snapshot, for a short look (no reference count is touched).
    #[inline]
    pub(crate) fn load(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The current snapshot, to keep.
    pub(crate) fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Publishes a new picker and state (with the staged selector, if one is).
    pub(crate) fn publish(&self, state: ConnectivityState, picker: Arc<dyn Picker>) {
        let mut publisher = self.publisher.lock();
        let mut parts = Parts {
            state,
            picker,
            ..Parts::of(&self.current.load())
        };
        if let Some(selector) = publisher.staged.take() {
            parts.selector = selector;
        }
        self.store(&mut publisher, parts);
    }

    /// Publishes new method configs with the current picker.
    pub(crate) fn set_methods(&self, methods: Arc<MethodConfigs>) {
        let mut publisher = self.publisher.lock();
        let parts = Parts {
            methods,
            ..Parts::of(&self.current.load())
        };
        self.store(&mut publisher, parts);
    }

    /// Stages a config selector to go out with the next picker
    /// [`publish`](Self::publish)es, so that no call sees it with a picker made
    /// before it (the policy publishes the picker made from the same update).
    pub(crate) fn stage_selector(&self, selector: Option<SelectorRef>) {
        self.publisher.lock().staged = Some(selector);
    }

    /// Publishes the staged selector with the current picker, if no picker took
    /// it (the policy published nothing new) and it differs from the current one.
    pub(crate) fn commit_selector(&self) {
        let mut publisher = self.publisher.lock();
        let Some(selector) = publisher.staged.take() else {
            return;
        };
        let current = self.current.load();
        if current.selector == selector {
            return;
        }
        let parts = Parts {
            selector,
            ..Parts::of(&current)
        };
        drop(current);
        self.store(&mut publisher, parts);
    }

    /// Wakes every waiter without changing anything (the clock jumped).
    pub(crate) fn touch(&self) {
        let mut publisher = self.publisher.lock();
        let parts = Parts::of(&self.current.load());
        self.store(&mut publisher, parts);
    }

    /// Stores a new snapshot; the lock is held, so publishers go one at a time.
    fn store(&self, publisher: &mut Publisher, parts: Parts) {
        let (tx, rx) = crossbeam_channel::bounded(0);
        self.current.store(Arc::new(Snapshot {
            picker: parts.picker,
            state: parts.state,
            methods: parts.methods,
            selector: parts.selector,
            replaced: rx,
        }));
        // Dropping the old sender wakes everyone waiting on the old snapshot.
        drop(std::mem::replace(&mut publisher.replaced_tx, tx));
    }
}

/// A snapshot's contents, without its wake-up channel.
struct Parts {
    state: ConnectivityState,
    picker: Arc<dyn Picker>,
    methods: Arc<MethodConfigs>,
    selector: Option<SelectorRef>,
}

impl Parts {
    fn of(snapshot: &Snapshot) -> Self {
        Self {
            state: snapshot.state,
            picker: snapshot.picker.clone(),
            methods: snapshot.methods.clone(),
            selector: snapshot.selector.clone(),
        }
    }
}

impl fmt::Debug for PickerCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PickerCell({:?})", self.current.load())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::picker::QueuePicker;
    use std::time::Duration;

    #[test]
    fn publishing_wakes_every_waiter_of_the_old_snapshot() {
        let cell = Arc::new(PickerCell::new(
            ConnectivityState::Idle,
            Arc::new(QueuePicker),
        ));
        let (started_tx, started_rx) = crossbeam_channel::unbounded();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let cell = cell.clone();
                let started = started_tx.clone();
                std::thread::spawn(move || {
                    let snap = cell.load_full();
                    started.send(()).unwrap();
                    crossbeam_channel::select! {
                        recv(snap.replaced()) -> _ => cell.load().state,
                        default(Duration::from_secs(30)) => panic!("never woken"),
                    }
                })
            })
            .collect();
        for _ in 0..4 {
            started_rx.recv().unwrap();
        }
        cell.publish(ConnectivityState::Ready, Arc::new(QueuePicker));
        for w in waiters {
            assert_eq!(w.join().unwrap(), ConnectivityState::Ready);
        }
    }

    #[test]
    fn a_waiter_that_loaded_before_a_publish_does_not_miss_it() {
        let cell = PickerCell::new(ConnectivityState::Idle, Arc::new(QueuePicker));
        let old = cell.load_full();
        assert!(!old.is_replaced());
        cell.touch();
        assert!(old.is_replaced(), "the publish came before the wait");
        assert_eq!(
            cell.load().state,
            ConnectivityState::Idle,
            "touch keeps the state"
        );
    }
}
