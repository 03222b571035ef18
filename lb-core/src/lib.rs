//! The gRPC load-balancing policy API for synchronous Rust, with `pick_first`,
//! `round_robin`, `weighted_round_robin` (fed by ORCA load reports, [`orca`]),
//! `least_request_experimental` and `ring_hash_experimental`.
//!
//! A channel turns a target into calls in four steps; this crate holds the contracts
//! between them, and nothing in its policy modules starts a thread or reads a clock.
//!
//! ```text
//!  resolver ──ResolverUpdate──> LbPolicy ──LbState{state, picker}──> calls pick()
//!                                  │  ^                                   │
//!                   new_subchannel │  │ subchannel_update                 v
//!                                  v  │                               Transport
//!                               Subchannel ───────connect────────> Connection
//! ```
//!
//! # Connectivity
//!
//! [`ConnectivityState`] is gRPC's five-state machine;
//! [`ConnectivityStateEvaluator`] aggregates children by gRPC's rule (READY >
//! CONNECTING > IDLE > TRANSIENT_FAILURE).
//!
//! ```
//! use lb_core::{aggregate_states, ConnectivityState::*};
//! assert_eq!(aggregate_states([TransientFailure, Connecting]), Connecting);
//! ```
//!
//! # Policies
//!
//! An [`LbPolicy`] runs on the channel's serializer thread. Every method gets the time
//! and a [`ChannelController`], through which it creates subchannels, publishes an
//! [`LbState`], asks for re-resolution or asks to be woken at an [`Instant`] (delivered
//! as [`LbPolicy::work`]). Builders are registered by name in an [`LbPolicyRegistry`],
//! which also parses `loadBalancingConfig` lists:
//!
//! ```
//! use lb_core::LbPolicyRegistry;
//! let registry = LbPolicyRegistry::with_builtins();
//! let json = serde_json::json!([{"pick_first": {"shuffleAddressList": true}}]);
//! assert_eq!(registry.parse_load_balancing_config(&json)?.name(), "pick_first");
//! # Ok::<(), lb_core::ConfigError>(())
//! ```
//!
//! # Pickers
//!
//! A [`Picker`] routes one call on the caller's thread and never blocks. It answers
//! [`PickResult::Pick`] (a subchannel borrowed from the picker, plus metadata and a
//! completion callback), `Queue`, `Fail` or `Drop`.
//!
//! # Transports
//!
//! [`Transport`] is the seam to whatever carries calls: implement it to plug in your
//! own. Backoff between connection attempts ([`Backoff`]) is shared by every
//! transport.
//!
//! # Channels
//!
//! [`channel::Channel`] is what a program holds: a target's resolver, the root policy
//! chosen by the service config, the picker and a transport, with blocking calls of
//! every kind, deadlines, wait-for-ready, retries and hedging, health checks,
//! idleness and a serializer thread that runs every policy method. See the
//! [`channel`] module.
//!
//! # Channelz
//!
//! Every channel and subchannel is in the process-wide [`channelz::registry`] while
//! it exists (gRFC A14): call counts, a bounded trace of what happened to it, and,
//! for a channel, its policy tree on demand ([`channelz::Entity::policy`], answered
//! by the channel's serializer through [`LbPolicy::describe`]). See [`channelz`].
//!
//! # Logs
//!
//! The crates log through the [`log`](https://docs.rs/log) facade; install any
//! logger (`env_logger`, say) to see them. Every event that also goes to a channelz
//! trace is logged by the same call, and every message about a channel starts with
//! `channel <id> (<target>)` or `channel <target>`, so one channel's story can be
//! picked out with a text filter. Levels: `debug` for per-call events (picker
//! updates, retries, hedges, RLS lookups), `info` for state changes (the channel's
//! and each subchannel's, resolver results, policy switches, ejections), `warn` for
//! config errors and bad resolver results, `error` for what should not happen (a
//! thread that cannot start, a policy that panicked).
//!
//! The log target is the module path. Enable:
//!
//! | target | for |
//! |---|---|
//! | `lb_core::channel::core` | the channel: created and closed, resolver results (endpoint and address counts, or the error), service config applied or rejected, policy switches, connectivity state changes (`info`/`warn`); picker updates (`debug`) |
//! | `lb_core::channel::entity` | subchannels created and shut down, and each subchannel's state changes with the connection error of a failure (`info`) |
//! | `lb_core::channel::call` | retries, transparent retries and hedged attempts, with the method and the status that caused them (`debug`) |
//! | `lb_core::channel` | all of the above, and health checks and ORCA streams |
//! | `lb_group::group` | a child policy switching gracefully to another policy, and the new one taking over (`info`) |
//! | `lb_group::priority` | which priority is in use, and failovers (`info`) |
//! | `lb_group::outlier_detection` | ejections with the interval's counts, and returns (`info`) |
//! | `lb_rls::balancer` | the control channel built or rebuilt (`info`), each RouteLookup sent and its targets or error (`debug`) |
//! | `lb_rls::picker` | lookups and stale refreshes the throttler refused (`debug`) |
//! | `lb_rls` | all of RLS, including the control channel's threads |
//!
//! For example `RUST_LOG=lb_core::channel=info,lb_rls=debug` with `env_logger`
//! shows every state change and every RLS lookup.
//! # Metrics
//!
//! [`metrics`] has gRPC's instruments (per-call `grpc.client.*` of gRFC A66,
//! `grpc.lb.pick_first.*` and `grpc.lb.wrr.*` of A78, `grpc.subchannel.*` of A94)
//! and the [`metrics::MetricsRecorder`] a channel records them into
//! ([`channel::ChannelBuilder::metrics_recorder`]); policies get it in
//! [`LbPolicyOptions::metrics`]. Exporters: [`metrics::InMemoryRecorder`], and behind
//! features `metrics::prometheus` (`prometheus`: the `/metrics` text) and
//! `metrics::otel` (`opentelemetry`: into a program's `Meter`). Without a recorder
//! nothing is recorded, at the cost of one branch per event.
//!
//! ```
//! use std::sync::Arc;
//! use lb_core::metrics::InMemoryRecorder;
//! # use lb_core::{Address, Status, transport::*};
//! # struct Nowhere;
//! # impl Transport for Nowhere {
//! #     fn connect(&self, _: &Address, _: &ConnectOptions, _: ConnectionEvents)
//! #         -> Result<Arc<dyn lb_core::Connection>, Status> { Err(Status::unavailable("no")) }
//! # }
//! let recorder = Arc::new(InMemoryRecorder::new());
//! let channel = lb_core::channel::Channel::builder("dns:///localhost:50051")
//!     .transport(Arc::new(Nowhere))
//!     .metrics_recorder(recorder.clone())
//!     .build()?;
//! // ... calls ...
//! assert_eq!(recorder.counter_total("grpc.client.attempt.started"), 0);
//! # drop(channel);
//! # Ok::<(), lb_core::channel::ChannelError>(())
//! ```
//!
//! # A first real call
//!
//! The transport that speaks gRPC over HTTP/2 is `lb_transport::driver::H2Transport`
//! (crate `lb-transport`, which also has a small gRPC server). A channel to a real
//! server needs a target, that transport and, optionally, a service config:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use lb_core::channel::{CallOptions, Channel};
//! use lb_transport::driver::{H2Transport, TransportConfig};
//! use lb_transport::server::{Request, Response, Server};
//!
//! // A server to call (yours runs elsewhere): it echoes each request.
//! let server = Server::builder()
//!     .unary("/echo.Echo/Say", |req: Request| Ok(Response::new(req.message)))
//!     .bind("127.0.0.1:0")?;
//!
//! let channel = Channel::builder(format!("ipv4:{}", server.local_addr()))
//!     .transport(Arc::new(H2Transport::new(TransportConfig::default())?))
//!     .default_service_config(r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#)
//!     .build()?;
//! let options = CallOptions::default().with_timeout(Duration::from_secs(5));
//! let reply = channel.unary("/echo.Echo/Say", b"hello".to_vec(), options)?;
//! assert_eq!(reply.message, b"hello");
//! channel.close();
//! server.shutdown(Duration::ZERO);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`Instant`]: std::time::Instant

mod address;
mod backoff;
pub mod channel;
pub mod channelz;
pub mod config;
pub mod health;
mod metadata;
pub mod metrics;
pub mod orca;
mod picker;
pub mod policies;
mod policy;
pub mod protowire;
mod random;
mod registry;
mod resolver;
mod state;
mod status;
mod subchannel;
pub mod transport;
mod xxh64;

pub use address::{Address, Attributes, Endpoint, endpoints, flatten_addresses};
pub use backoff::{Backoff, BackoffConfig};
pub use config::ConfigError;
pub use metadata::{InvalidMetadata, Metadata};
pub use picker::{
    CallCompletion, CompletionCallback, DropPicker, ExitIdlePicker, FailPicker, Pick, PickInfo,
    PickResult, Picker, PickerRandom, QueuePicker, RoundRobinCounter,
};
pub use policy::{
    ChannelController, LbConfig, LbPolicy, LbPolicyBuilder, LbPolicyOptions, LbState,
    ParsedLbConfig, UpdateError, WorkScheduler,
};
pub use protowire::DecodeError;
pub use random::{RandomSource, SharedRandom, SplitMix64};
pub use registry::LbPolicyRegistry;
pub use resolver::ResolverUpdate;
pub use state::{ConnectivityState, ConnectivityStateEvaluator, aggregate_states};
pub use status::{Code, Status};
pub use subchannel::{Subchannel, SubchannelBackend, SubchannelId, SubchannelState};
pub use transport::{Connection, ConnectionExt, Transport};

pub use metadata::{is_binary_key, validate_ascii_value, validate_key};
