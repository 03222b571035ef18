//! The admin server's parts without sockets: request heads, answers by path, and
//! the JSON of a hand-made channel with a policy tree.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lb_core::ConnectivityState;
use lb_core::channelz::{
    self, CallCounts, ChannelSnapshot, Entity, Kind, PolicyView, Severity, Snapshot,
    SubchannelSnapshot, SubchannelView, Table, TraceEvent, TraceSnapshot,
};

use super::http::{self, Parsed};
use super::*;

fn shared() -> Shared {
    Shared {
        config: AdminConfig::default(),
        routes: RwLock::new(HashMap::new()),
    }
}

fn waits() -> json::Waits {
    json::Waits::new(Duration::from_secs(1), Duration::from_secs(1))
}

fn get(path: &str) -> Request {
    Request {
        method: "GET".into(),
        path: path.into(),
        query: String::new(),
    }
}

#[test]
fn heads_parse_with_keep_alive_rules_and_limits() {
    assert!(matches!(
        http::parse(b"GET / HTTP/1.1\r\nhost: x\r\n", 64),
        Parsed::Partial
    ));
    let Parsed::Request {
        request,
        len,
        keep_alive,
        has_body,
    } = http::parse(
        b"GET /api/channels?x=1 HTTP/1.1\r\nhost: x\r\n\r\nGET",
        1024,
    )
    else {
        panic!("a whole head");
    };
    assert_eq!(
        (request.path(), request.query(), request.method()),
        ("/api/channels", "x=1", "GET")
    );
    assert_eq!(
        len,
        b"GET /api/channels?x=1 HTTP/1.1\r\nhost: x\r\n\r\n".len()
    );
    assert!(keep_alive && !has_body);

    let keep = |head: &[u8]| match http::parse(head, 1024) {
        Parsed::Request { keep_alive, .. } => keep_alive,
        other => panic!("{other:?}"),
    };
    assert!(!keep(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"));
    assert!(!keep(b"GET / HTTP/1.0\r\n\r\n"));
    assert!(keep(b"GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n"));

    let body = |head: &[u8]| match http::parse(head, 1024) {
        Parsed::Request { has_body, .. } => has_body,
        other => panic!("{other:?}"),
    };
    assert!(!body(b"GET / HTTP/1.1\r\ncontent-length: 0\r\n\r\n"));
    assert!(body(b"POST / HTTP/1.1\r\ncontent-length: 12\r\n\r\n"));
    assert!(body(
        b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
    ));

    let status = |head: &[u8], max: usize| match http::parse(head, max) {
        Parsed::Error(reply) => reply.status(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        status(b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 32),
        431
    );
    assert_eq!(status(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", 20), 431);
    let many: String = (0..=http::MAX_HEADERS)
        .map(|i| format!("h{i}: v\r\n"))
        .collect();
    assert_eq!(
        status(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes(), 4096),
        431
    );
    assert_eq!(status(b"GET / HTTP/1.1\r\nbad header\r\n\r\n", 1024), 400);
    assert_eq!(status(b"\x01\x02 nonsense\r\n\r\n", 1024), 400);
}

#[test]
fn answers_by_method_and_path() {
    let shared = shared();
    let page = answer(&shared, &get("/"), false);
    assert_eq!(
        (page.status(), page.content_type()),
        (200, "text/html; charset=utf-8")
    );
    assert!(page.body().starts_with(b"<!doctype html>"));
    let post = Request {
        method: "POST".into(),
        ..get("/")
    };
    assert_eq!(answer(&shared, &post, false).status(), 405);
    assert_eq!(answer(&shared, &get("/"), true).status(), 400);
    assert_eq!(answer(&shared, &get("/nope"), false).status(), 404);
    assert_eq!(
        answer(&shared, &get("/api/channel/abc"), false).status(),
        404
    );
    assert_eq!(answer(&shared, &get("/api/channel/0"), false).status(), 404);

    shared.routes.write().insert(
        "/metrics".into(),
        Arc::new(|r: &Request| Reply::new("text/plain", format!("q={}", r.query()))),
    );
    shared
        .routes
        .write()
        .insert("/boom".into(), Arc::new(|_: &Request| panic!("boom")));
    let metrics = answer(
        &shared,
        &Request {
            query: "a".into(),
            ..get("/metrics")
        },
        false,
    );
    assert_eq!((metrics.status(), metrics.body()), (200, &b"q=a"[..]));
    assert_eq!(answer(&shared, &get("/boom"), false).status(), 500);
}

#[test]
fn encoded_answers_carry_length_and_connection() {
    let reply = Reply::text(404, "nothing at /x");
    let bytes = String::from_utf8(http::encode(&reply, false, true)).unwrap();
    assert!(bytes.starts_with("HTTP/1.1 404 Not Found\r\n"), "{bytes}");
    assert!(bytes.contains("\r\ncontent-length: 14\r\n"), "{bytes}");
    assert!(bytes.contains("\r\nconnection: keep-alive\r\n"), "{bytes}");
    assert!(bytes.ends_with("\r\n\r\nnothing at /x\n"), "{bytes}");
    let head = String::from_utf8(http::encode(&reply, true, false)).unwrap();
    assert!(head.ends_with("connection: close\r\n\r\n"), "{head}");
    assert!(
        head.contains("content-length: 14\r\n"),
        "HEAD keeps the length: {head}"
    );
    let not_allowed =
        String::from_utf8(http::encode(&Reply::text(405, "no"), false, false)).unwrap();
    assert!(
        not_allowed.contains("\r\nallow: GET, HEAD\r\n"),
        "{not_allowed}"
    );
    assert_eq!(Reply::text(200, "x").with_status(99).status(), 500);
}

/// A channel that describes itself with a fixed tree.
pub(crate) struct FakeChannel {
    pub(crate) snapshot: ChannelSnapshot,
    pub(crate) policy: PolicyView,
}

impl Entity for FakeChannel {
    fn snapshot(&self) -> Snapshot {
        Snapshot::Channel(self.snapshot.clone())
    }
    fn policy(&self, _wait: Duration) -> Option<PolicyView> {
        Some(self.policy.clone())
    }
}

struct FakeSubchannel(SubchannelSnapshot);

impl Entity for FakeSubchannel {
    fn snapshot(&self) -> Snapshot {
        Snapshot::Subchannel(self.0.clone())
    }
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn a_channel_with_a_policy_tree_as_json() {
    let (ch_id, sc_id) = (channelz::next_id(), channelz::next_id());
    let sub = Arc::new(FakeSubchannel(SubchannelSnapshot {
        id: sc_id,
        target: "10.0.0.1:443".into(),
        state: ConnectivityState::Ready,
        calls: CallCounts {
            started: 3,
            succeeded: 2,
            failed: 1,
            last_started: Some(at(7)),
        },
        trace: TraceSnapshot::default(),
        sockets: vec![],
    }));
    let channel = Arc::new(FakeChannel {
        snapshot: ChannelSnapshot {
            id: ch_id,
            target: "dns:///unit.example".into(),
            state: ConnectivityState::Ready,
            calls: CallCounts::default(),
            trace: TraceSnapshot {
                created: at(1),
                events_logged: 1,
                events: vec![TraceEvent {
                    at: at(2),
                    severity: Severity::Warning,
                    description: "resolver said <b>".into(),
                    child: Some((Kind::Subchannel, sc_id)),
                }],
            },
            subchannels: vec![sc_id],
            channels: vec![],
        },
        policy: PolicyView {
            policy: "weighted_target_experimental".into(),
            state: Some(ConnectivityState::Ready),
            children: vec![PolicyView {
                name: "t0".into(),
                policy: "round_robin".into(),
                details: vec![("weight".into(), "3".into())],
                subchannels: vec![SubchannelView {
                    id: sc_id,
                    address: "10.0.0.1:443".into(),
                    state: ConnectivityState::Ready,
                    details: vec![],
                }],
                ..PolicyView::default()
            }],
            tables: vec![Table {
                title: "cache".into(),
                columns: vec!["key".into()],
                rows: vec![vec!["k=v".into()]],
            }],
            ..PolicyView::default()
        },
    });
    let _reg_s = channelz::registry().register(sc_id, Kind::Subchannel, Arc::downgrade(&sub) as _);
    let _reg_c =
        channelz::registry().register(ch_id, Kind::TopChannel, Arc::downgrade(&channel) as _);

    let v = json::channel_by_id(ch_id, 100, waits()).expect("registered");
    assert_eq!(v["target"], "dns:///unit.example");
    assert_eq!(v["kind"], "top");
    assert_eq!(v["state"], "READY");
    assert_eq!(v["policy"]["policy"], "weighted_target_experimental");
    assert_eq!(v["policy"]["state"], "READY");
    let child = &v["policy"]["children"][0];
    assert_eq!(
        (child["name"].as_str(), child["policy"].as_str()),
        (Some("t0"), Some("round_robin"))
    );
    assert_eq!(child["state"], serde_json::Value::Null);
    assert_eq!(child["details"][0], serde_json::json!(["weight", "3"]));
    assert_eq!(child["subchannels"][0]["address"], "10.0.0.1:443");
    assert_eq!(v["policy"]["tables"][0]["rows"][0][0], "k=v");
    let sc = &v["subchannels"][0];
    assert_eq!(
        (sc["id"].as_u64(), sc["calls"]["failed"].as_u64()),
        (Some(sc_id), Some(1))
    );
    assert_eq!(sc["calls"]["last_started"], 7000);
    let event = &v["trace"]["events"][0];
    assert_eq!(event["severity"], "WARNING");
    assert_eq!(event["description"], "resolver said <b>");
    assert_eq!(
        event["child"],
        serde_json::json!({"kind": "subchannel", "id": sc_id})
    );

    let all = json::overview(1000, waits());
    let listed = all["channels"].as_array().unwrap();
    assert!(listed.iter().any(|c| c["id"] == ch_id), "{all}");
    assert!(
        json::channel_by_id(sc_id, 100, waits()).is_none(),
        "a subchannel is no channel"
    );
}

/// A channel that records the waits it is asked with.
struct Recording(ChannelSnapshot, parking_lot::Mutex<Vec<Duration>>);

impl Entity for Recording {
    fn snapshot(&self) -> Snapshot {
        Snapshot::Channel(self.0.clone())
    }
    fn policy(&self, wait: Duration) -> Option<PolicyView> {
        self.1.lock().push(wait);
        Some(PolicyView {
            policy: "pick_first".into(),
            ..PolicyView::default()
        })
    }
}

#[test]
fn policy_waits_are_bounded_each_and_in_all() {
    let id = channelz::next_id();
    let channel = Arc::new(Recording(
        ChannelSnapshot {
            id,
            target: "dns:///waits.example".into(),
            state: ConnectivityState::Idle,
            calls: CallCounts::default(),
            trace: TraceSnapshot::default(),
            subchannels: vec![],
            channels: vec![],
        },
        parking_lot::Mutex::new(Vec::new()),
    ));
    let _reg = channelz::registry().register(id, Kind::TopChannel, Arc::downgrade(&channel) as _);

    let each = Duration::from_millis(300);
    let v = json::channel_by_id(id, 10, json::Waits::new(each, Duration::from_secs(60))).unwrap();
    assert_eq!(v["policy"]["policy"], "pick_first");
    assert_eq!(
        *channel.1.lock(),
        [each],
        "each channel waits at most `each`"
    );

    let v = json::channel_by_id(id, 10, json::Waits::new(each, Duration::ZERO)).unwrap();
    assert_eq!(
        v["policy"],
        serde_json::Value::Null,
        "no budget left: no tree"
    );
    assert_eq!(channel.1.lock().len(), 1, "and the channel is not asked");
    assert_eq!(v["target"], "dns:///waits.example", "the rest is there");
}
