//! The server's threads: named at spawn, joined together, panics re-raised.

use std::io;
use std::thread::{self, JoinHandle};

/// The join handles of every thread a server started.
#[derive(Debug, Default)]
pub(crate) struct Threads {
    handles: Vec<JoinHandle<()>>,
}

impl Threads {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Starts a thread called `name` running `f`.
    pub(crate) fn spawn<F>(&mut self, name: String, f: F) -> io::Result<()>
    where
        F: FnOnce() + Send + 'static,
    {
        let handle = thread::Builder::new().name(name).spawn(f)?;
        self.handles.push(handle);
        Ok(())
    }

    /// Joins every thread in start order, then re-raises the first panic among them,
    /// unless this thread is already panicking (a second panic would abort).
    pub(crate) fn join(self) {
        let mut first_panic = None;
        for handle in self.handles {
            let name = handle.thread().name().unwrap_or("?").to_owned();
            if let Err(payload) = handle.join() {
                log::error!("server thread {name} panicked");
                first_panic.get_or_insert(payload);
            }
        }
        if let Some(payload) = first_panic {
            if !thread::panicking() {
                std::panic::resume_unwind(payload);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_waits_for_every_thread_and_reraises_a_panic() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut threads = Threads::new();
        threads.spawn("t-panics".into(), || panic!("boom")).unwrap();
        threads
            .spawn("t-works".into(), move || {
                tx.send(thread::current().name().map(str::to_owned))
                    .unwrap()
            })
            .unwrap();
        let joined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || threads.join()));
        let payload = joined.unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
        assert_eq!(rx.try_recv().unwrap().as_deref(), Some("t-works"));
    }
}
