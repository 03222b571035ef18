//! xDS: load balancing configured by a control plane (gRFC A27 and its successors).
//!
//! So far this holds the client's foundations, each without I/O:
//!
//! - [`bootstrap`]: which management servers to ask, how this client identifies
//!   itself to them, and how a channel's target names the Listener resource it
//!   subscribes to;
//! - [`wire`]: the ADS request and response messages;
//! - [`ads`]: the protocol of one ADS stream per resource type: requests,
//!   ACK and NACK, the resource cache, deletions and does-not-exist timers;
//! - [`cds`] and [`eds`]: cluster and endpoint resources, decoded and
//!   validated;
//! - [`lds`]: client listeners, naming their routes;
//! - [`lb_policy`]: a cluster's `load_balancing_policy` (gRFC A52);
//! - [`rds`]: route configurations, decoded into [`routing`]'s types;
//! - [`routing`]: choosing a call's virtual host and route;
//! - [`tree`]: a cluster's priority and locality policy tree from its
//!   resources;
//! - [`client`]: the ADS stream over a channel, shared by every watcher;
//! - [`cluster_watch`]: one cluster's watches and the tree they make;
//! - [`csds`]: the clients' resources for CSDS (gRFC A40) and the admin page;
//! - [`cds_policy`]: `cds_experimental`, a cluster named at run time (RLS's
//!   targets);
//! - [`resolver`]: the `xds:` resolver and its per-call config selector, which
//!   give a channel its whole config (`xds_cluster_manager` over each
//!   cluster's tree) and route each call.

pub mod ads;
pub mod bootstrap;
pub mod cds;
pub mod cds_policy;
pub mod client;
pub mod cluster_watch;
pub mod csds;
pub mod eds;
pub mod lb_policy;
pub mod lds;
mod pb;
pub mod rds;
pub mod resolver;
pub mod routing;
pub mod tree;
pub mod wire;

pub use bootstrap::{
    Authority, Bootstrap, BootstrapError, CertificateProvider, ChannelCreds, Locality, Node,
    TlsCreds, XdsServer,
};
