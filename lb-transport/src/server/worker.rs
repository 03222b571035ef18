//! Worker threads: they take jobs, run handlers, and send the results back to the
//! I/O thread, waking it.

use std::convert::Infallible;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use crossbeam_channel::{Receiver, SendError, Sender};
use lb_core::Status;
use mio::{Token, Waker};

use crate::frame::StreamId;
use crate::server::{Handler, Request, Response};

/// One call for a worker: the handler and its request, and where the result goes.
pub(crate) struct Job {
    pub(crate) conn: Token,
    pub(crate) stream: StreamId,
    pub(crate) handler: Arc<Handler>,
    pub(crate) request: Request,
}

/// What the I/O thread receives from other threads.
pub(crate) enum ToIo {
    /// A handler finished.
    Completion {
        conn: Token,
        stream: StreamId,
        result: Result<Response, Status>,
    },
    /// Stop accepting, drain the connections for at most `grace`, then end.
    Shutdown { grace: std::time::Duration },
}

/// The I/O thread's inbox: a channel sender and the waker of its `Poll`, so that
/// [`IoSender::send`] pushes and then wakes.
#[derive(Clone)]
pub(crate) struct IoSender {
    tx: Sender<ToIo>,
    waker: Arc<Waker>,
}

impl IoSender {
    pub(crate) fn new(tx: Sender<ToIo>, waker: Arc<Waker>) -> Self {
        Self { tx, waker }
    }

    /// Queues `msg` and wakes the I/O thread.
    ///
    /// # Errors
    ///
    /// The I/O thread has ended; the message comes back.
    pub(crate) fn send(&self, msg: ToIo) -> Result<(), SendError<ToIo>> {
        self.tx.send(msg)?;
        if let Err(e) = self.waker.wake() {
            log::warn!("cannot wake the server's I/O thread: {e}");
        }
        Ok(())
    }
}

/// A worker's loop: until the job channel is closed (the I/O thread ended).
pub(crate) fn run(jobs: &Receiver<Job>, to_io: &IoSender) {
    for job in jobs {
        let Job {
            conn,
            stream,
            handler,
            request,
        } = job;
        if request.is_cancelled() {
            // Reset, past its deadline, or the server is stopping: nobody waits.
            continue;
        }
        let path = request.path.clone();
        let result =
            panic::catch_unwind(AssertUnwindSafe(|| handler(request))).unwrap_or_else(|payload| {
                let what = panic_message(payload.as_ref());
                log::error!("handler for {path} panicked: {what}");
                Err(Status::internal(format!("handler panicked: {what}")))
            });
        if to_io
            .send(ToIo::Completion {
                conn,
                stream,
                result,
            })
            .is_err()
        {
            // The I/O thread is gone: the server is stopping; drain what is queued.
            continue;
        }
    }
}

/// The text of a panic payload, when it has one.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

/// A cancellation pair: the I/O thread keeps the sender in the call's state; dropping
/// it (the call ended, was reset or timed out) cancels the request.
pub(crate) fn cancel_pair() -> (Sender<Infallible>, Receiver<Infallible>) {
    crossbeam_channel::bounded(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_recovered() {
        let p = panic::catch_unwind(|| panic!("static")).unwrap_err();
        assert_eq!(panic_message(p.as_ref()), "static");
        let n = 7;
        let p = panic::catch_unwind(|| panic!("formatted {n}")).unwrap_err();
        assert_eq!(panic_message(p.as_ref()), "formatted 7");
        let p = panic::catch_unwind(|| panic::panic_any(5u8)).unwrap_err();
        assert_eq!(panic_message(p.as_ref()), "(no message)");
    }
}
