//! Channelz (gRFC A14) through a real channel on lb-testkit's in-memory transport and
//! a manual clock: the channel's and its subchannels' snapshots, the policy tree
//! asked of the serializer, the registry after close, and the logs that go with the
//! trace.

use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use lb_core::channel::{CallOptions, Channel};
use lb_core::channelz::{self, ChannelSnapshot, Kind, Severity, Snapshot, SubchannelSnapshot};
use lb_core::{Code, ConnectivityState as S, Status};
use parking_lot::Mutex;

mod util;
use util::{Env, WAIT};

fn who(channel: &Channel) -> Result<Vec<u8>, Status> {
    channel
        .unary("/test.Echo/Who", b"hi".to_vec(), CallOptions::default())
        .map(|r| r.message)
}

fn channel_snapshot(id: u64) -> ChannelSnapshot {
    match channelz::registry().get(id) {
        Some(Snapshot::Channel(c)) => c,
        other => panic!("channel {id}: {other:?}"),
    }
}

fn subchannel_snapshot(id: u64) -> SubchannelSnapshot {
    match channelz::registry().get(id) {
        Some(Snapshot::Subchannel(s)) => s,
        other => panic!("subchannel {id}: {other:?}"),
    }
}

fn has_event(snapshot: &ChannelSnapshot, text: &str) -> bool {
    snapshot
        .trace
        .events
        .iter()
        .any(|e| e.description.contains(text))
}

#[test]
fn the_snapshot_counts_calls_and_traces_what_the_channel_did() {
    let env = Env::new();
    let build_time = env.clock.now();
    let channel = env.serving_channel(&["a:1", "b:1"], r#"{"round_robin": {}}"#);
    env.transport
        .fail_next_calls("a:1", 2, Status::internal("boom").into());
    let id = channel.channelz_id();
    assert_eq!(channelz::registry().kind(id), Some(Kind::TopChannel));

    // The first call wakes the channel; then 6 more, two of which a:1 fails.
    let mut results = vec![who(&channel)];
    assert!(channel.settle());
    results.extend((0..6).map(|_| who(&channel)));
    env.advance(&channel, Duration::from_secs(5));
    results.push(who(&channel));
    let failed = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(failed, 2, "{results:?}");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| e.code() == Code::Internal)
    );

    let snap = channel_snapshot(id);
    assert_eq!(snap.target, "test:///svc");
    assert_eq!(snap.state, S::Ready);
    assert_eq!(
        (snap.calls.started, snap.calls.succeeded, snap.calls.failed),
        (8, 6, 2)
    );
    let anchor = channel.wall_anchor();
    assert_eq!(
        snap.calls.last_started,
        Some(anchor.wall(env.clock.now())),
        "the last call started at the manual clock's time"
    );
    assert_eq!(snap.trace.created, anchor.wall(build_time));
    assert!(snap.trace.created > UNIX_EPOCH);
    assert!(
        has_event(&snap, "resolver result: 2 endpoints, 2 addresses"),
        "{snap:#?}"
    );
    assert!(has_event(&snap, "state IDLE -> CONNECTING"), "{snap:#?}");
    assert!(has_event(&snap, "state CONNECTING -> READY"), "{snap:#?}");
    assert!(has_event(&snap, "policy none -> round_robin"), "{snap:#?}");
    // Events carry the channel's clock: the resolver result came at build time.
    let resolved = snap
        .trace
        .events
        .iter()
        .find(|e| e.description.starts_with("resolver result"))
        .unwrap();
    assert_eq!(resolved.at, anchor.wall(build_time));

    assert_eq!(snap.subchannels.len(), 2);
    let created: Vec<u64> = snap
        .trace
        .events
        .iter()
        .filter_map(|e| match e.child {
            Some((Kind::Subchannel, sc)) => Some(sc),
            _ => None,
        })
        .collect();
    assert_eq!(
        created, snap.subchannels,
        "created events name each subchannel"
    );
    let subchannels: Vec<SubchannelSnapshot> = snap
        .subchannels
        .iter()
        .map(|&i| subchannel_snapshot(i))
        .collect();
    let mut addresses: Vec<&str> = subchannels.iter().map(|s| s.target.as_str()).collect();
    addresses.sort_unstable();
    assert_eq!(addresses, ["a:1", "b:1"]);
    for sc in &subchannels {
        assert_eq!(sc.state, S::Ready);
        assert_eq!(channelz::registry().kind(sc.id), Some(Kind::Subchannel));
        assert!(
            sc.trace
                .events
                .iter()
                .any(|e| e.description == "CONNECTING -> READY"),
            "{sc:#?}"
        );
        assert!(
            sc.sockets.is_empty(),
            "the in-memory transport has no sockets"
        );
    }
    let a = subchannels.iter().find(|s| s.target == "a:1").unwrap();
    let b = subchannels.iter().find(|s| s.target == "b:1").unwrap();
    assert_eq!(a.calls.failed, 2);
    assert_eq!(b.calls.failed, 0);
    assert_eq!(a.calls.started + b.calls.started, 8);
    assert_eq!(a.calls.succeeded + b.calls.succeeded, 6);
    assert_eq!(
        a.calls.last_started.max(b.calls.last_started),
        Some(anchor.wall(env.clock.now()))
    );
}

#[test]
fn connection_failures_are_in_the_subchannel_trace() {
    let env = Env::new();
    let channel = env.serving_channel(&["a:1"], r#"{"pick_first": {}}"#);
    env.transport.refuse_connections("a:1", true);
    let options = CallOptions::default().with_deadline(env.clock.now());
    let _ = channel.unary("/test.Echo/Who", b"hi".to_vec(), options);
    assert!(channel.settle());
    let snap = channel_snapshot(channel.channelz_id());
    let sc = subchannel_snapshot(snap.subchannels[0]);
    let failure = sc
        .trace
        .events
        .iter()
        .find(|e| {
            e.description
                .starts_with("CONNECTING -> TRANSIENT_FAILURE: ")
        })
        .unwrap_or_else(|| panic!("{sc:#?}"));
    assert_eq!(failure.severity, Severity::Warning);
    assert!(failure.description.contains("UNAVAILABLE"), "{failure:?}");
}

#[test]
fn the_policy_tree_comes_from_the_serializer() {
    let env = Env::new();
    let channel = env.serving_channel(&["a:1", "b:1"], r#"{"round_robin": {}}"#);
    let id = channel.channelz_id();
    let idle = channelz::registry().policy(id, WAIT).expect("an answer");
    assert_eq!(idle.policy, "", "no policy before the first call");
    assert_eq!(idle.state, Some(S::Idle));

    who(&channel).unwrap();
    assert!(channel.settle());
    let view = channelz::registry().policy(id, WAIT).expect("an answer");
    assert_eq!(view.policy, "round_robin");
    assert_eq!(view.state, Some(S::Ready));
    assert_eq!(view.get_detail("ready"), Some("2 of 2"));
    let mut seen: Vec<(u64, String, S)> = view
        .subchannels
        .iter()
        .map(|s| (s.id, s.address.clone(), s.state))
        .collect();
    seen.sort_by_key(|s| s.0);
    let snap = channel_snapshot(id);
    let mut expected: Vec<(u64, String, S)> = snap
        .subchannels
        .iter()
        .map(|&sc| (sc, subchannel_snapshot(sc).target, S::Ready))
        .collect();
    expected.sort_by_key(|s| s.0);
    assert_eq!(expected.len(), 2);
    assert_eq!(
        seen, expected,
        "the policy's subchannels are the channelz ones"
    );
}

#[test]
fn entities_leave_the_registry_when_the_channel_closes() {
    let env = Env::new();
    let channel = env.serving_channel(&["a:1", "b:1"], r#"{"round_robin": {}}"#);
    who(&channel).unwrap();
    assert!(channel.settle());
    let id = channel.channelz_id();
    let subchannels = channel_snapshot(id).subchannels;
    assert_eq!(subchannels.len(), 2);
    assert!(
        subchannels
            .iter()
            .all(|&sc| channelz::registry().get(sc).is_some())
    );

    channel.close();
    assert!(channelz::registry().get(id).is_none());
    assert!(channelz::registry().kind(id).is_none());
    assert!(channelz::registry().policy(id, WAIT).is_none());
    for sc in subchannels {
        assert!(channelz::registry().kind(sc).is_none(), "subchannel {sc}");
    }
}

#[test]
fn a_nested_channel_is_listed_by_its_parent_until_it_closes() {
    let env = Env::new();
    let parent = env.serving_channel(&["a:1"], r#"{"pick_first": {}}"#);
    let parent_id = parent.channelz_id();
    let parent_ref = channelz::ChannelRef::new(parent_id, "test:///svc");
    let nested = env
        .builder("passthrough:///a:1")
        .channelz_parent(parent_ref.clone())
        .build()
        .unwrap();
    assert_eq!(
        channelz::registry().kind(nested.channelz_id()),
        Some(Kind::NestedChannel)
    );
    assert_eq!(parent_ref.nested(), [nested.channelz_id()]);
    let (top, _) = channelz::registry().list(Kind::TopChannel, parent_id, 1000);
    let top_ids: Vec<u64> = top
        .iter()
        .map(|s| match s {
            Snapshot::Channel(c) => c.id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(top_ids.contains(&parent_id));
    assert!(
        !top_ids.contains(&nested.channelz_id()),
        "not a top channel"
    );
    nested.close();
    assert!(parent_ref.nested().is_empty());
}

/// Keeps every log record of the test binary.
struct Capture(Mutex<Vec<(log::Level, String, String)>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.0.lock().push((
            record.level(),
            record.target().to_owned(),
            record.args().to_string(),
        ));
    }
    fn flush(&self) {}
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        log::set_logger(capture).expect("the only logger of this binary");
        log::set_max_level(log::LevelFilter::Trace);
        capture
    })
}

#[test]
fn state_changes_and_resolver_results_are_logged_with_the_target() {
    let capture = capture();
    let env = Env::new();
    env.transport.serve_address("a:1");
    let resolver = lb_testkit::ManualResolver::default();
    let channel = env
        .builder("test:///logged-channel")
        .resolver_registry(resolver.registry())
        .build()
        .unwrap();
    resolver.push_addresses(&["a:1"]);
    who(&channel).unwrap();
    assert!(channel.settle());
    let records: Vec<_> = capture
        .0
        .lock()
        .iter()
        .filter(|(_, _, m)| m.contains("test:///logged-channel"))
        .cloned()
        .collect();
    let find = |text: &str| {
        records
            .iter()
            .find(|(_, _, m)| m.contains(text))
            .unwrap_or_else(|| panic!("no record with {text:?} in {records:#?}"))
    };
    let (level, target, _) = find("resolver result: 1 endpoints, 1 addresses");
    assert_eq!(*level, log::Level::Info);
    assert_eq!(target, "lb_core::channel::core");
    let (level, _, _) = find("state CONNECTING -> READY");
    assert_eq!(*level, log::Level::Info);
    let (level, target, _) = find("subchannel");
    assert_eq!(*level, log::Level::Info);
    assert!(target.starts_with("lb_core::channel"), "{target}");
    let (level, _, _) = find("picker update: READY");
    assert_eq!(*level, log::Level::Debug);
    // A bad service config is a warning.
    resolver.push(lb_core::ResolverUpdate {
        service_config: Some(Err(lb_core::ConfigError::new("x", "bad"))),
        ..lb_core::ResolverUpdate::from_endpoints(lb_core::endpoints(["a:1"]))
    });
    assert!(channel.settle());
    let warned = capture.0.lock().iter().any(|(l, _, m)| {
        *l == log::Level::Warn
            && m.contains("test:///logged-channel")
            && m.contains("ignoring a bad service config")
    });
    assert!(warned);
}

/// The in-memory transport with a socket id on each connection, as lb-transport's
/// registers its sockets.
struct Socketed(lb_testkit::InMemoryTransport);

struct SocketedConnection(std::sync::Arc<dyn lb_core::Connection>, u64);

impl lb_core::Connection for SocketedConnection {
    fn open_stream(
        &self,
        head: lb_core::transport::CallHead,
        listener: std::sync::Arc<dyn lb_core::transport::CallListener>,
    ) -> std::sync::Arc<dyn lb_core::transport::CallStream> {
        self.0.open_stream(head, listener)
    }
    fn close(&self) {
        self.0.close();
    }
    fn socket_id(&self) -> Option<u64> {
        Some(self.1)
    }
}

impl lb_core::Transport for Socketed {
    fn connect(
        &self,
        address: &lb_core::Address,
        options: &lb_core::transport::ConnectOptions,
        events: lb_core::transport::ConnectionEvents,
    ) -> Result<std::sync::Arc<dyn lb_core::Connection>, Status> {
        let inner = self.0.connect(address, options, events)?;
        Ok(std::sync::Arc::new(SocketedConnection(
            inner,
            1_000_000 + channelz::next_id(),
        )))
    }
}

#[test]
fn a_subchannel_lists_the_socket_of_its_connection() {
    let env = Env::new();
    env.transport.serve_address("a:1");
    let channel = env
        .builder("passthrough:///a:1")
        .transport(std::sync::Arc::new(Socketed(env.transport.clone())))
        .build()
        .unwrap();
    who(&channel).unwrap();
    let snap = channel_snapshot(channel.channelz_id());
    let sc = subchannel_snapshot(snap.subchannels[0]);
    assert_eq!(sc.sockets.len(), 1, "{sc:#?}");
    assert!(sc.sockets[0] > 1_000_000);
    env.transport.close_connections("a:1");
    assert!(channel.settle());
    // The connection is gone (closed and dropped): its socket is no longer listed.
    let sc = subchannel_snapshot(snap.subchannels[0]);
    assert!(sc.sockets.is_empty(), "{sc:#?}");
}
