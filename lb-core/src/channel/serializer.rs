//! The serializer thread: a thin loop around [`ChannelCore`].
//!
//! ```text
//!   loop {
//!       core.handle_timeout(clock.now())
//!       select! {
//!           recv(inputs)                  -> core.handle(input, clock.now())
//!           recv(at(core.poll_timeout())) -> (next turn fires it)
//!       }
//!   }
//! ```
//!
//! With a clock that moves only by jumps the timer arm is `never()`: a jump sends
//! [`Input::Tick`], which wakes the loop. The loop ends after `Close`; a panic in a
//! policy closes the picker cell on the way out, so no call waits forever.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender, at, never, select};

use super::core::{ChannelCore, Input, Shared};
use crate::picker::DropPicker;
use crate::state::ConnectivityState;
use crate::status::Status;

/// The name of every serializer thread.
pub(crate) const THREAD_NAME: &str = "lb-serializer";

/// How many times a settle request goes back in the queue before it is answered
/// anyway (a channel that is never quiet still answers).
const MAX_SETTLE_ROUNDS: u32 = 10_000;

/// Starts the serializer thread.
pub(crate) fn spawn(
    core: ChannelCore,
    inputs: Receiver<Input>,
    shared: Arc<Shared>,
) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name(THREAD_NAME.into())
        .spawn(move || run(core, &inputs, &shared))
}

/// Publishes a failing picker if the loop unwinds, so calls end.
struct PanicGuard<'a>(&'a Shared);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.closed.store(true, Ordering::Release);
            self.0.cell.publish(
                ConnectivityState::Shutdown,
                Arc::new(DropPicker(Status::internal(
                    "the channel's serializer panicked",
                ))),
            );
        }
    }
}

fn run(mut core: ChannelCore, inputs: &Receiver<Input>, shared: &Shared) {
    let _guard = PanicGuard(shared);
    loop {
        core.handle_timeout(shared.clock.now());
        if core.is_closed() {
            break;
        }
        let timer = match core.poll_timeout() {
            Some(deadline) if shared.real_time => at(deadline),
            _ => never(),
        };
        select! {
            recv(inputs) -> input => match input {
                Ok(Input::Settle { reply, rounds }) => settle(&shared.tx, inputs, reply, rounds),
                Ok(input) => core.handle(input, shared.clock.now()),
                Err(_) => core.close(),
            },
            recv(timer) -> _ => {}
        }
    }
    // Answer whoever still waits to settle; everything else is moot now.
    while let Ok(input) = inputs.try_recv() {
        if let Input::Settle { reply, .. } = input {
            let _ = reply.send(());
        }
    }
}

/// Answers a settle request once nothing else is queued; until then it goes to the
/// back of the queue again.
fn settle(tx: &Sender<Input>, inputs: &Receiver<Input>, reply: Sender<()>, rounds: u32) {
    if inputs.is_empty() || rounds >= MAX_SETTLE_ROUNDS {
        let _ = reply.send(());
    } else {
        let _ = tx.send(Input::Settle {
            reply,
            rounds: rounds + 1,
        });
    }
}
