//! Worker threads: they take jobs, run handlers, and send the results back to the
//! I/O thread, waking it.
//!
//! A unary job is one handler call whose result goes back as a
//! [`ToIo::Completion`]. A streaming job runs its handler for the whole call: the
//! handler talks to the I/O thread through its [`ServerCall`] while it runs, and
//! its status goes out as the trailers when it returns.

use std::convert::Infallible;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use crossbeam_channel::{Receiver, SendError, Sender};
use lb_core::Status;
use mio::{Token, Waker};

use crate::frame::StreamId;
use crate::server::{Request, Response, ServerCall, StreamHandler, UnaryHandler};

/// One call for a worker.
pub(crate) enum Job {
    /// A unary call: the handler, its request, and where the result goes.
    Unary {
        conn: Token,
        stream: StreamId,
        handler: Arc<UnaryHandler>,
        request: Request,
    },
    /// A streaming call: the handler and the call it runs for.
    Streaming {
        handler: Arc<StreamHandler>,
        call: ServerCall,
    },
}

impl Job {
    /// Whether nobody waits for this job any more (reset, past its deadline, or
    /// the server is stopping).
    pub(crate) fn is_cancelled(&self) -> bool {
        match self {
            Self::Unary { request, .. } => request.is_cancelled(),
            Self::Streaming { call, .. } => call.is_cancelled(),
        }
    }
}

/// What the I/O thread receives from other threads.
pub(crate) enum ToIo {
    /// A unary handler finished.
    Completion {
        conn: Token,
        stream: StreamId,
        result: Result<Response, Status>,
    },
    /// A streaming call has something for the I/O thread (messages to send, credit
    /// to give back, its end). At most one is in flight per call.
    Poke { conn: Token, stream: StreamId },
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
        if job.is_cancelled() {
            // Nobody waits for it.
            continue;
        }
        match job {
            Job::Unary {
                conn,
                stream,
                handler,
                request,
            } => {
                let path = request.path.clone();
                let result = catch(&path, || handler(request));
                // If the I/O thread is gone the server is stopping; drain what is
                // queued.
                let _ = to_io.send(ToIo::Completion {
                    conn,
                    stream,
                    result,
                });
            }
            Job::Streaming { handler, mut call } => {
                let path = call.path().to_owned();
                let result = catch(&path, || handler(&mut call));
                call.finish(result);
            }
        }
    }
}

/// Runs a handler; a panic becomes INTERNAL.
fn catch<T>(path: &str, f: impl FnOnce() -> Result<T, Status>) -> Result<T, Status> {
    panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let what = panic_message(payload.as_ref());
        log::error!("handler for {path} panicked: {what}");
        Err(Status::internal(format!("handler panicked: {what}")))
    })
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
