//! The gRPC layer on top of HTTP/2: the wire forms gRPC adds to headers and DATA.
//!
//! - [`timeout`]: `grpc-timeout` values.
//! - [`percent`]: the percent-encoding of `grpc-message`.
//! - [`base64`]: the encoding of binary (`-bin`) metadata values.
//! - [`message`]: length-prefixed messages in DATA frames.
//! - [`compression`]: message compression (`gzip`, `deflate`, `identity`) with a
//!   bounded decompressor.
//! - [`status`]: synthesizing a gRPC status from HTTP/2 error codes.
//! - [`call`]: one call on a stream (unary or streaming), for the client and the
//!   server.

pub mod base64;
pub mod call;
pub mod compression;
pub mod message;
pub mod percent;
pub mod status;
pub mod timeout;
