//! Plugging your own transport into a channel: this one serves calls in-process,
//! from one closure per address that answers each request message with one response
//! message. A transport implements streams only; unary calls, and every other kind,
//! run over them. Run it with `cargo run -p lb-core --example custom_transport`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use lb_core::channel::{CallOptions, Channel};
use lb_core::transport::{
    CallHead, CallListener, CallOutcome, CallStream, ClosedStream, ConnectOptions, ConnectionEvent,
    ConnectionEvents, TrySendError,
};
use lb_core::{Address, Connection, Metadata, Status, Transport};

/// Answers one request message of a call to `method`.
type Handler = Arc<dyn Fn(&str, &[u8]) -> Result<Vec<u8>, Status> + Send + Sync>;

/// Connects to the addresses it has a handler for and refuses the rest.
struct ClosureTransport {
    handlers: HashMap<String, Handler>,
}

/// A "connection" is the handler plus the channel's event callback.
struct ClosureConnection {
    handler: Handler,
    events: ConnectionEvents,
    closed: AtomicBool,
}

impl Transport for ClosureTransport {
    fn connect(
        &self,
        address: &Address,
        _options: &ConnectOptions,
        events: ConnectionEvents,
    ) -> Result<Arc<dyn Connection>, Status> {
        let handler = self.handlers.get(&address.address).cloned();
        let handler =
            handler.ok_or_else(|| Status::unavailable(format!("no server at {address}")))?;
        // Nothing to dial: the connection is up at once.
        events(ConnectionEvent::Ready);
        Ok(Arc::new(ClosureConnection {
            handler,
            events,
            closed: AtomicBool::new(false),
        }))
    }
}

impl Connection for ClosureConnection {
    fn open_stream(&self, head: CallHead, listener: Arc<dyn CallListener>) -> Arc<dyn CallStream> {
        if self.closed.load(Ordering::SeqCst) {
            // The server never saw it: the channel may send it elsewhere.
            listener.on_close(CallOutcome::not_sent(Status::unavailable("closed")));
            return Arc::new(ClosedStream);
        }
        listener.on_headers(Metadata::new());
        Arc::new(ClosureStream {
            method: head.method.to_string(),
            handler: self.handler.clone(),
            listener,
            ended: AtomicBool::new(false),
        })
    }

    fn close(&self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            (self.events)(ConnectionEvent::Closed(None));
        }
    }
}

/// One call: each message sent is answered at once, on the sender's thread. (A
/// real transport queues bytes, answers `Full` when its buffer is full and calls
/// `on_writable` later; this one always has room.)
struct ClosureStream {
    method: String,
    handler: Handler,
    listener: Arc<dyn CallListener>,
    ended: AtomicBool,
}

impl ClosureStream {
    fn end(&self, status: Status) {
        if !self.ended.swap(true, Ordering::SeqCst) {
            self.listener.on_close(CallOutcome::processed(status));
        }
    }
}

impl CallStream for ClosureStream {
    fn try_send(&self, message: Vec<u8>, last: bool) -> Result<(), TrySendError> {
        if self.ended.load(Ordering::SeqCst) {
            return Err(TrySendError::Closed(message));
        }
        match (self.handler)(&self.method, &message) {
            Ok(reply) => self.listener.on_message(reply),
            Err(status) => {
                self.end(status);
                return Ok(());
            }
        }
        if last {
            self.half_close();
        }
        Ok(())
    }

    fn half_close(&self) {
        self.end(Status::ok());
    }

    fn cancel(&self) {
        self.end(Status::cancelled("cancelled by the client"));
    }

    fn release(&self, _bytes: usize) {
        // No flow control in-process.
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut handlers: HashMap<String, Handler> = HashMap::new();
    for name in ["10.0.0.1:50051", "10.0.0.2:50051"] {
        let handler: Handler = Arc::new(move |method: &str, message: &[u8]| {
            let said = String::from_utf8_lossy(message);
            Ok(format!("{name} answers {method} ({said})").into_bytes())
        });
        handlers.insert(name.into(), handler);
    }
    let channel = Channel::builder("ipv4:10.0.0.1:50051,10.0.0.2:50051")
        .transport(Arc::new(ClosureTransport { handlers }))
        .default_service_config(r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#)
        .build()?;
    // Connect up front and let both connections come up (the calls would work
    // without this, on whichever backends are READY at the time).
    channel.state(true);
    channel.settle();
    for i in 0..4 {
        let request = format!("call {i}");
        let response = channel.unary("/demo.Greeter/Hello", request, CallOptions::default())?;
        println!("{}", String::from_utf8_lossy(&response.message));
    }
    // A bidi call: every message goes to the backend picked once, at the start.
    let call = channel.bidi_streaming("/demo.Greeter/Chat", CallOptions::default())?;
    for line in ["one", "two"] {
        call.send(line)?;
        let reply = call.recv()?.expect("one reply per message");
        println!("{}", String::from_utf8_lossy(&reply));
    }
    call.close_send();
    assert_eq!(call.recv()?, None);
    println!("channel is {}", channel.state(false));
    channel.close();
    Ok(())
}
