//! The pure parts of gRPC's Route Lookup Service policy (`rls_experimental`): its
//! config, key builders, data cache, adaptive throttler, the protobuf codec of the
//! RouteLookup RPC, and its metrics.
//!
//! None of it starts a thread, opens a socket or reads a clock: time comes in as
//! `now: Instant`, randomness from an injected [`RandomSource`](lb_core::RandomSource),
//! so the balancer that drives these parts from its serializer (and every test) is in
//! full control.
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
//! [`metrics::RlsMetrics`] records gRPC's RLS metrics through a
//! [`metrics::MetricsRecorder`]; [`metrics::InMemoryRecorder`] keeps them for tests.

pub mod cache;
pub mod config;
pub mod keys;
pub mod metrics;
pub mod proto;
pub mod throttler;

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
    }
}
