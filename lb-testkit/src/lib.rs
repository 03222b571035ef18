//! Test fakes for load-balancing policies and channels.
//!
//! - [`FakeController`]: a [`ChannelController`](lb_core::ChannelController) that
//!   records everything a policy does as [`Event`]s, with `verify_*` helpers. Its
//!   subchannels are fakes whose state the test sets with
//!   [`FakeController::update_subchannel`].
//! - [`ManualClock`]: time that moves only when the test says so.
//! - [`picks`]: take picks and check that they cycle over an expected multiset.
//! - [`process`]: threads, sockets and peak memory of this process, for leak tests.
//! - [`ManualResolver`]: a resolver (scheme `test`) whose updates the test pushes.
//! - [`InMemoryTransport`]: a [`Transport`](lb_core::Transport) whose servers are
//!   closures, with scriptable failures.
//! - [`services`]: echo and benchmark services for our gRPC server
//!   ([`lb_transport::server`]), answering like the grpcio peer.
//! - [`peers`]: real peers we did not write (grpcio server and client, nghttp2's
//!   `nghttpd`, `nghttp`, `h2load`) for interop tests, installed by
//!   `cargo xtask test`.
//! - [`connect_ready`]: one connection of any transport, waited for until READY.
//!
//! # Examples
//!
//! ```
//! use lb_core::{endpoints, ConnectivityState, LbPolicyBuilder, ResolverUpdate};
//! use lb_core::policies::round_robin::RoundRobinBuilder;
//! use lb_testkit::{picks, FakeController, ManualClock};
//!
//! let clock = ManualClock::new();
//! let mut ctrl = FakeController::new();
//! let mut policy = RoundRobinBuilder.build(ctrl.policy_options());
//! let update = ResolverUpdate::from_endpoints(endpoints(["a:1", "b:1"]));
//! policy.resolver_update(update, None, &mut ctrl, clock.now()).unwrap();
//! for sc in ctrl.verify_new_subchannels(2) {
//!     ctrl.update_subchannel(&mut *policy, &sc, ConnectivityState::Ready, clock.now());
//! }
//! let state = ctrl.latest_state();
//! assert_eq!(state.connectivity_state, ConnectivityState::Ready);
//! picks::verify_round_robin(&*state.picker, &["a:1", "b:1"]);
//! ```

mod clock;
mod controller;
mod memory;
pub mod peers;
pub mod picks;
pub mod process;
mod resolver;
pub mod services;

pub use clock::ManualClock;
pub use controller::{Event, FakeController, FakeWorkScheduler};
pub use memory::{
    DEFAULT_STREAM_WINDOW, InMemoryTransport, ServerHandler, ServerStream, StreamHandler,
};
pub use resolver::ManualResolver;

/// Connects `transport` to `target` (`host:port`) and waits, at most `wait`, for the
/// connection to be READY.
///
/// # Panics
///
/// The connection failed or was not READY in time (a test helper).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use lb_transport::driver::{H2Transport, TransportConfig};
///
/// let transport = H2Transport::new(TransportConfig::default())?;
/// let conn = lb_testkit::connect_ready(&transport, "127.0.0.1:50051", Duration::from_secs(5));
/// conn.close();
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn connect_ready(
    transport: &dyn lb_core::Transport,
    target: &str,
    wait: std::time::Duration,
) -> std::sync::Arc<dyn lb_core::Connection> {
    use lb_core::transport::{ConnectOptions, ConnectionEvent};
    let (tx, events) = crossbeam_channel::unbounded();
    let options = ConnectOptions {
        authority: target.into(),
        connect_deadline: std::time::Instant::now() + wait,
        user_agent: "lb-testkit".into(),
        transport_options: Default::default(),
    };
    let sink = std::sync::Arc::new(move |e| {
        let _ = tx.send(e);
    });
    let conn = transport
        .connect(&lb_core::Address::new(target), &options, sink)
        .expect("connect");
    match events.recv_timeout(wait) {
        Ok(ConnectionEvent::Ready) => conn,
        other => panic!("connection to {target} not READY: {other:?}"),
    }
}
