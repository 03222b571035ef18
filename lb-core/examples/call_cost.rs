//! The channel's call path alone, for instruction counts: N unary calls through a
//! `round_robin` channel over an in-process transport that answers on the caller's
//! thread (no sockets, no other threads on the call path).
//!
//! ```text
//! cargo build --release -p lb-core --example call_cost
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/call_cost 2000
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/call_cost 4000
//! ```
//!
//! The difference of the two totals over 2,000 is the instructions one call costs;
//! `cargo xtask bench` prints it. Prints `calls=N`.

use std::sync::Arc;

use lb_core::channel::{CallOptions, Channel};
use lb_core::transport::{
    CallHead, CallListener, CallOutcome, CallStream, ConnectOptions, ConnectionEvent,
    ConnectionEvents, TrySendError,
};
use lb_core::{Address, Connection, Metadata, Status, Transport};

struct Echo(Arc<dyn CallListener>);

impl CallStream for Echo {
    fn try_send(&self, message: Vec<u8>, last: bool) -> Result<(), TrySendError> {
        self.0.on_message(message);
        if last {
            self.0.on_close(CallOutcome::processed(Status::ok()));
        }
        Ok(())
    }
    fn half_close(&self) {}
    fn cancel(&self) {}
    fn release(&self, _: usize) {}
}

struct EchoConnection;

impl Connection for EchoConnection {
    fn open_stream(&self, _: CallHead, listener: Arc<dyn CallListener>) -> Arc<dyn CallStream> {
        listener.on_headers(Metadata::new());
        Arc::new(Echo(listener))
    }
    fn close(&self) {}
}

struct EchoTransport;

impl Transport for EchoTransport {
    fn connect(
        &self,
        _: &Address,
        _: &ConnectOptions,
        events: ConnectionEvents,
    ) -> Result<Arc<dyn Connection>, Status> {
        events(ConnectionEvent::Ready);
        Ok(Arc::new(EchoConnection))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let calls: u64 = std::env::args()
        .nth(1)
        .map_or(Ok(1000), |n| n.parse())
        .map_err(|e| format!("calls: {e}"))?;
    let channel = Channel::builder("ipv4:10.0.0.1:50051,10.0.0.2:50051")
        .transport(Arc::new(EchoTransport))
        .default_service_config(r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#)
        .build()?;
    // The first call connects; the rest are the steady state.
    channel.unary("/echo.Echo/Say", b"warm".to_vec(), CallOptions::default())?;
    for _ in 0..calls {
        let response = channel.unary("/echo.Echo/Say", b"hi".to_vec(), CallOptions::default())?;
        assert_eq!(response.message, b"hi");
    }
    channel.close();
    println!("calls={calls}");
    Ok(())
}
