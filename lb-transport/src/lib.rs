//! Sans-IO HTTP/2 and gRPC for synchronous Rust.
//!
//! The protocol is layered as in `h2`, without its async I/O bound:
//!
//! - [`hpack`]: header compression (RFC 7541); knows nothing about frames.
//! - [`frame`]: the ten HTTP/2 frame types (RFC 9113 section 6), one file each, with
//!   `load`/`encode` pairs and the RFC's MUST rules next to the checks.
//! - [`proto`]: the connection and stream state machine for both roles, with the
//!   limits that bound a hostile peer.
//! - [`driver`]: mio event loops around the sans-IO connection.
//! - [`grpc`]: what gRPC adds on top: `grpc-timeout`, percent-encoded `grpc-message`,
//!   base64 binary metadata, length-prefixed messages, status mapping.
//! - [`server`]: a small synchronous gRPC server (unary calls) on a mio thread and
//!   worker threads.

pub mod driver;
pub mod frame;
pub mod grpc;
pub mod hpack;
pub mod proto;
pub mod server;
