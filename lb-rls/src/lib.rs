//! gRPC's Route Lookup Service policy (`rls_experimental`): its config, key
//! builders, data cache, adaptive throttler, the protobuf codec of the RouteLookup
//! RPC, its metrics, and the policy itself — the control channel to the RLS server,
//! the picker, the refcounted child policies and the default target.
//!
//! The pure parts start no thread, open no socket and read no clock: time comes in
//! as `now: Instant`, randomness from an injected [`RandomSource`](lb_core::RandomSource).
//! The policy ([`balancer`]) drives them from the channel's serializer; only its
//! control channel runs threads (see [`control_channel`]).
//!
//! ```text
//!  call /svc/method + metadata
//!     │ keys::KeyBuilderMap            (from config::RlsConfig)
//!     v
//!  KeyMap ──> cache::DataCache ── hit, valid ──────────────> route to entry's targets
//!     │            │ miss / expired / stale
//!     │            v
//!     │       throttler::Throttler ── throttled ──> default target or UNAVAILABLE
//!     │            │ sent
//!     │            v
//!     └──> proto::RouteLookupRequest ══ RLS server ══> proto::RouteLookupResponse
//!                                                          │ on_success / on_failure
//!                                                          v
//!                                                     cache::DataCache
//! ```
//!
//! # Config
//!
//! [`config::RlsConfig::parse`] checks the policy's JSON with every rule grpc-go
//! applies, in grpc-go's order; errors name the field. The cache cap and the known
//! resolver schemes come from the embedding program ([`config::RlsConfigOptions`]).
//!
//! ```
//! use lb_core::LbPolicyRegistry;
//! use lb_rls::config::{RlsConfig, RlsConfigOptions};
//! let json = serde_json::json!({
//!     "routeLookupConfig": {
//!         "grpcKeybuilders": [{"names": [{"service": "pkg.Svc"}]}],
//!         "lookupService": "dns:///rls.example.com",
//!         "maxAge": "500s",
//!         "staleAge": "600s",
//!         "cacheSizeBytes": 100000000,
//!     },
//!     "childPolicy": [{"round_robin": {}}],
//!     "childPolicyConfigTargetFieldName": "target",
//! });
//! let registry = LbPolicyRegistry::with_builtins();
//! let config = RlsConfig::parse(&json, &registry, &RlsConfigOptions::default())?;
//! let rlc = config.route_lookup();
//! // maxAge may pass 5 min because staleAge is set; staleAge is capped at 5 min.
//! assert_eq!((rlc.max_age().as_secs(), rlc.stale_age().as_secs()), (500, 300));
//! // The cache is capped at 5 MiB unless the program allows more.
//! assert_eq!(rlc.cache_size_bytes(), 5 * 1024 * 1024);
//! // Per target, the child policy's config is re-parsed with the target filled in.
//! let child = config.child_config_for_target("backend-a", &registry)?;
//! assert_eq!(child.name(), "round_robin");
//! # Ok::<(), lb_core::ConfigError>(())
//! ```
//!
//! # Keys
//!
//! [`keys::KeyBuilderMap`] turns a call into a [`keys::KeyMap`]: the builder for
//! `/service/method`, else for `/service/`, reads headers, the host, service and
//! method names and constants. No builder means the empty map, which is still a key.
//!
//! ```
//! use lb_core::Metadata;
//! use lb_rls::keys::{GrpcKeyBuilder, KeyBuilderMap};
//! let builder = GrpcKeyBuilder::from_json(&serde_json::json!({
//!     "names": [{"service": "pkg.Svc", "method": "Get"}],
//!     "headers": [{"key": "shard", "names": ["x-shard"]}],
//!     "extraKeys": {"host": "host"},
//! }))?;
//! let map = KeyBuilderMap::new(&[builder])?;
//! let mut md = Metadata::new();
//! md.insert("x-shard", "7").unwrap();
//! md.insert("x-shard", "8").unwrap();
//! let keys = map.build_keys("/pkg.Svc/Get", "example.com", &md).unwrap();
//! assert_eq!(keys.to_string(), "host=example.com,shard=7,8");
//! # Ok::<(), lb_core::ConfigError>(())
//! ```
//!
//! # Cache
//!
//! [`cache::DataCache`] holds responses by `(path, key map)`, least recently used
//! first out, bounded by bytes, with per-key exponential backoff after failures.
//! Whatever it evicts it hands back, so the balancer releases the child policies the
//! evicted targets held.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use lb_core::SplitMix64;
//! use lb_rls::cache::{CacheKey, CacheOptions, DataCache};
//! use lb_rls::keys::KeyMap;
//! let t0 = Instant::now();
//! let ages = (Duration::from_secs(60), Duration::from_secs(30));
//! let mut cache = DataCache::new(20, CacheOptions::default(), SplitMix64::seeded(1));
//! let _ = cache.on_success(CacheKey::new("/s/a", KeyMap::new()), t0, vec!["ta".into()], String::new(), ages);
//! // Ten seconds later the first entry is old enough to be evicted to make room.
//! let t1 = t0 + Duration::from_secs(10);
//! let update = cache.on_success(CacheKey::new("/s/b", KeyMap::new()), t1, vec!["tb".into()], "0123456789abcdef".into(), ages);
//! assert_eq!(update.evicted.targets().collect::<Vec<_>>(), ["ta"]);
//! assert_eq!(cache.len(), 1);
//! ```
//!
//! # Throttler
//!
//! [`throttler::Throttler`] sheds RLS requests client-side when the server has been
//! rejecting them: every response is registered, and `should_throttle` decides per
//! request.
//!
//! ```
//! use std::time::Instant;
//! use lb_core::SplitMix64;
//! use lb_rls::throttler::{Throttler, ThrottlerConfig};
//! let t0 = Instant::now();
//! let mut throttler = Throttler::new(ThrottlerConfig::default(), t0, SplitMix64::seeded(1));
//! if !throttler.should_throttle(t0) {
//!     // Send the request; when the server answers (here: accepted), record it.
//!     throttler.register_backend_response(t0, false);
//! }
//! assert_eq!(throttler.counts(t0), (1, 0));
//! ```
//!
//! # Wire format
//!
//! [`proto`] encodes and decodes `RouteLookupRequest` and `RouteLookupResponse` by
//! hand, rejecting malformed input with an error that names the field.
//!
//! ```
//! use lb_rls::proto::RouteLookupResponse;
//! let response = RouteLookupResponse::decode(b"\x1a\x09backend-a\x12\x02hd")?;
//! assert_eq!(response.targets, ["backend-a"]);
//! assert_eq!(response.header_data, "hd");
//! assert!(RouteLookupResponse::decode(b"\x1a\x09back").is_err());
//! # Ok::<(), lb_rls::proto::DecodeError>(())
//! ```
//!
//! # Metrics
//!
//! [`metrics::RlsMetrics`] records gRPC's RLS metrics through the channel's
//! [`lb_core::metrics::MetricsRecorder`] (given to the policy in
//! `LbPolicyOptions::metrics`); [`metrics::InMemoryRecorder`] keeps them for tests.
//!
//! # The policy
//!
//! [`registry`] has RLS, its [`dial::NAME`] child policy (a child that resolves
//! the RLS target with the channel's resolvers) and every policy of lb-core and lb-group. The policy
//! opens its control channel like the channel it runs in, with the
//! [`ChannelFactory`](lb_core::channel::ChannelFactory) a channel gives its
//! policies ([`LbPolicyOptions::channels`](lb_core::LbPolicyOptions::channels)):
//! the same transport, transport options, resolvers and clock. So a channel needs
//! only `lb_rls::registry()`:
//!
//! ```
//! use std::sync::Arc;
//! use lb_core::channel::Channel;
//! use lb_testkit::InMemoryTransport;
//!
//! let channel = Channel::builder("passthrough:///bigtable.example.com")
//!     .transport(Arc::new(InMemoryTransport::new()))
//!     .lb_policy_registry(lb_rls::registry())
//!     .default_service_config(r#"{"loadBalancingConfig": [{"rls_experimental": {
//!         "routeLookupConfig": {
//!             "grpcKeybuilders": [{"names": [{"service": "google.bigtable.v2.Bigtable"}]}],
//!             "lookupService": "passthrough:///rls.example.com:443",
//!             "cacheSizeBytes": 1000000
//!         },
//!         "childPolicy": [{"rls_dial_target": {"childPolicy": [{"round_robin": {}}]}}],
//!         "childPolicyConfigTargetFieldName": "target"
//!     }}]}"#)
//!     .build()?;
//! channel.close();
//! # Ok::<(), lb_core::channel::ChannelError>(())
//! ```
//!
//! To set options (another transport for the control channel, a clock, metrics,
//! the cache's cap), build the registry with [`register`] and
//! [`balancer::RlsBuilderOptions`]; its builder also counts the policy's threads:
//!
//! ```
//! use std::sync::Arc;
//! use lb_core::channel::Channel;
//! use lb_rls::balancer::RlsBuilderOptions;
//! use lb_testkit::InMemoryTransport;
//!
//! // A transport for the control channel only (here an in-memory one).
//! let transport = Arc::new(InMemoryTransport::new());
//! let mut registry = lb_core::LbPolicyRegistry::with_builtins();
//! let rls = lb_rls::register(&mut registry, RlsBuilderOptions::new(transport.clone()));
//! let channel = Channel::builder("passthrough:///bigtable.example.com")
//!     .transport(transport)
//!     .lb_policy_registry(registry)
//!     .default_service_config(r#"{"loadBalancingConfig": [{"rls_experimental": {
//!         "routeLookupConfig": {
//!             "grpcKeybuilders": [{"names": [{"service": "google.bigtable.v2.Bigtable"}]}],
//!             "lookupService": "passthrough:///rls.example.com:443",
//!             "cacheSizeBytes": 1000000,
//!             "defaultTarget": "passthrough:///fallback.example.com:443"
//!         },
//!         "childPolicy": [{"rls_dial_target": {"childPolicy": [{"round_robin": {}}]}}],
//!         "childPolicyConfigTargetFieldName": "target"
//!     }}]}"#)
//!     .build()?;
//! channel.close();
//! assert_eq!(rls.thread_count(), 0, "closing the channel ends the policy's threads");
//! # Ok::<(), lb_core::channel::ChannelError>(())
//! ```
//!
//! - [`balancer`]: the policy on the serializer: config updates (an equal config
//!   still passes resolver changes to the children), the cache and its purge, the
//!   children, one picker per update.
//! - [`picker`]: grpc-go's decision table. A cache hit takes no lock and writes no
//!   shared memory; a miss records the request and asks the serializer to send it.
//! - [`control_channel`]: a [`Channel`](lb_core::channel::Channel) to the RLS
//!   server with a few lookup threads and a connectivity watcher; only a READY that
//!   follows TRANSIENT_FAILURE resets the cache's backoffs.
//! - [`dial`]: `rls_dial_target`, a child that resolves its target and balances
//!   over its addresses.
//! - [`server`]: the other side of the RouteLookup RPC: a handler trait, a
//!   [`RoutingTable`](server::RoutingTable) answering from JSON (recording every
//!   request, with injectable faults), and with feature `server` `mount`, which
//!   serves a handler on `lb-transport`'s gRPC server.
//!
//! Where this policy deliberately differs from grpc-go: evicted cache entries
//! release their children; the default target holds exactly one reference (pickers
//! hold snapshots of child pickers, no references); every RLS response is recorded
//! in the throttler; a change of any control-channel field (`lookupService`,
//! `lookupServiceTimeout`, `routeLookupChannelServiceConfig`) rebuilds the control
//! channel, and requests pending on the old one are sent again on the new one;
//! `x-google-rls-data` is not sent when the header data is empty.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod balancer;
pub mod cache;
mod child_policy;
pub mod config;
pub mod control_channel;
pub mod dial;
pub mod keys;
pub mod metrics;
pub mod picker;
pub mod proto;
pub mod server;
pub mod throttler;
pub mod xds;

use lb_core::LbPolicyRegistry;

/// A registry with every policy of lb-core, lb-group and lb-rls: service configs
/// given to a channel built with it may name `rls_experimental` (and
/// `rls_dial_target`), `weighted_target_experimental`, `priority_experimental`,
/// `outlier_detection_experimental` and lb-core's built-ins with no `register`
/// call. RLS opens its control channel like the channel it runs in (that channel's
/// transport, transport options, resolvers and clock), so it needs no options;
/// use [`register`] to give it some.
///
/// # Examples
///
/// ```
/// let registry = lb_rls::registry();
/// for name in ["pick_first", "weighted_target_experimental", "priority_experimental",
///              "outlier_detection_experimental", "rls_experimental", "rls_dial_target"] {
///     assert!(registry.get(name).is_some(), "{name}");
/// }
/// ```
pub fn registry() -> LbPolicyRegistry {
    let mut registry = lb_group::registry();
    register(&mut registry, balancer::RlsBuilderOptions::default());
    registry
}

/// Registers `rls_experimental` (built with `options`) and the
/// [`dial::NAME`] child policy in `registry`, and returns the RLS builder (whose
/// [`thread_count`](balancer::RlsBuilder::thread_count) covers both).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use lb_rls::balancer::RlsBuilderOptions;
/// let mut registry = lb_core::LbPolicyRegistry::with_builtins();
/// lb_rls::register(&mut registry, RlsBuilderOptions::new(Arc::new(lb_testkit::InMemoryTransport::new())));
/// assert!(registry.get("rls_experimental").is_some());
/// assert!(registry.get("rls_dial_target").is_some());
/// ```
pub fn register(
    registry: &mut LbPolicyRegistry,
    options: balancer::RlsBuilderOptions,
) -> balancer::RlsBuilder {
    let rls = balancer::RlsBuilder::new(options);
    registry.register(rls.clone());
    registry.register(dial::DialTargetBuilder::with_threads(rls.threads()));
    rls
}

#[cfg(test)]
mod tests {
    fn assert_send<T: Send>() {}
    fn assert_send_sync<T: Send + Sync>() {}

    /// The cache and the throttler move to the serializer (or sit behind a mutex
    /// shared with pickers); configs and key builders are shared read-only.
    #[test]
    fn thread_safety_of_the_public_types() {
        assert_send::<crate::cache::DataCache>();
        assert_send::<crate::throttler::Throttler>();
        assert_send_sync::<parking_lot::Mutex<crate::cache::DataCache>>();
        assert_send_sync::<parking_lot::Mutex<crate::throttler::Throttler>>();
        assert_send_sync::<crate::config::RlsConfig>();
        assert_send_sync::<crate::keys::KeyBuilderMap>();
        assert_send_sync::<crate::keys::KeyMap>();
        assert_send_sync::<crate::proto::DecodeError>();
        assert_send_sync::<crate::metrics::RlsMetrics>();
        assert_send_sync::<crate::metrics::InMemoryRecorder>();
        assert_send_sync::<crate::balancer::RlsBuilder>();
        assert_send_sync::<crate::balancer::RlsBuilderOptions>();
        assert_send_sync::<crate::dial::DialTargetBuilder>();
        assert_send_sync::<crate::picker::RlsPicker>();
        assert_send::<crate::balancer::RlsPolicy>();
        assert_send::<crate::control_channel::ControlChannel>();
    }
}
