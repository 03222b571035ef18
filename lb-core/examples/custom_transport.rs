//! Plugging your own transport into a channel: this one serves calls in-process,
//! from one closure per address. Run it with
//! `cargo run -p lb-core --example custom_transport`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use lb_core::channel::{CallOptions, Channel};
use lb_core::transport::{
    CallCompletion, CallError, CallRequest, CallResponse, ConnectOptions, ConnectionEvent,
    ConnectionEvents,
};
use lb_core::{Address, Connection, Status, Transport};

type Handler = Arc<dyn Fn(&CallRequest) -> Result<Vec<u8>, Status> + Send + Sync>;

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
    fn start_call(&self, call: CallRequest, done: CallCompletion) {
        if self.closed.load(Ordering::SeqCst) {
            // The server never saw it: the channel may send it elsewhere.
            return done(Err(CallError::unprocessed(Status::unavailable("closed"))));
        }
        let result = (self.handler)(&call).map(|message| CallResponse {
            message,
            ..Default::default()
        });
        done(result.map_err(CallError::from));
    }

    fn close(&self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            (self.events)(ConnectionEvent::Closed(None));
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut handlers: HashMap<String, Handler> = HashMap::new();
    for name in ["10.0.0.1:50051", "10.0.0.2:50051"] {
        let handler: Handler = Arc::new(move |call: &CallRequest| {
            let said = String::from_utf8_lossy(&call.message);
            Ok(format!("{name} answers {} ({said})", call.method).into_bytes())
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
    println!("channel is {}", channel.state(false));
    channel.close();
    Ok(())
}
