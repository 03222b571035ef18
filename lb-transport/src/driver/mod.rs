//! The mio drivers: thin loops that move bytes between sockets and sans-IO
//! connections.

pub mod call;
pub mod client;
pub mod proxy;
pub mod socket;
pub(crate) mod stream;
#[cfg(feature = "tls")]
pub mod tls;

pub use client::{H2Transport, TransportConfig};
