//! xDS: load balancing configured by a control plane (gRFC A27 and its successors).
//!
//! So far this holds the first piece an xDS client reads: the [`bootstrap`]
//! configuration, which says which management servers to ask, how this client
//! identifies itself to them, and how a channel's target names the Listener
//! resource it subscribes to.

pub mod bootstrap;

pub use bootstrap::{
    Authority, Bootstrap, BootstrapError, CertificateProvider, ChannelCreds, Locality, Node,
    TlsCreds, XdsServer,
};
