//! The gRPC `helloworld` and `route_guide` examples on synchronous stubs generated
//! by `lb-codegen` from `proto/` (see `build.rs`): the generated code in
//! [`helloworld`] and [`routeguide`], service implementations in [`greeter`] and
//! [`route_guide`], and the binaries `helloworld` and `route_guide` that run either
//! side.
//!
//! # A client
//!
//! ```no_run
//! use lb_examples::helloworld::{GreeterClient, HelloRequest};
//!
//! let client = GreeterClient::new(lb_examples::connect("127.0.0.1:50051")?);
//! let reply = client.say_hello(&HelloRequest { name: "world".into() })?;
//! println!("{}", reply.message);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # A server
//!
//! ```no_run
//! use lb_examples::greeter::MyGreeter;
//! use lb_examples::helloworld::GreeterServer;
//! use lb_transport::server::Server;
//!
//! let server = GreeterServer::new(MyGreeter).mount(Server::builder()).bind("127.0.0.1:50051")?;
//! println!("listening on {}", server.local_addr());
//! # Ok::<(), std::io::Error>(())
//! ```

use std::sync::Arc;

use lb_core::channel::{Channel, ChannelError};
use lb_transport::driver::{H2Transport, TransportConfig};

pub mod greeter;
pub mod route_guide;

/// The `helloworld` package: messages, `GreeterClient`, the `Greeter` trait and
/// `GreeterServer`, generated from `proto/helloworld.proto`.
pub mod helloworld {
    lb_transport::include_proto!("helloworld");
}

/// The `routeguide` package: messages, `RouteGuideClient`, the `RouteGuide` trait
/// and `RouteGuideServer`, generated from `proto/route_guide.proto`.
pub mod routeguide {
    lb_transport::include_proto!("routeguide");
}

/// A channel to `target` (`host:port`, `dns:///host:port`, `ipv4:a:p,b:p`, …) over
/// lb-transport's HTTP/2 transport, with the default (pick_first) policy.
///
/// # Errors
///
/// The transport's I/O thread cannot start, or the target does not parse.
///
/// # Examples
///
/// ```no_run
/// let channel = lb_examples::connect("dns:///localhost:50051")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn connect(target: &str) -> Result<Channel, ConnectError> {
    let transport =
        H2Transport::new(TransportConfig::default()).map_err(ConnectError::Transport)?;
    Channel::builder(target)
        .transport(Arc::new(transport))
        .build()
        .map_err(ConnectError::Channel)
}

/// Why [`connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The transport could not start.
    #[error("cannot start the transport: {0}")]
    Transport(#[source] std::io::Error),
    /// The channel could not be built (a bad target, say).
    #[error("cannot build the channel: {0}")]
    Channel(#[source] ChannelError),
}
