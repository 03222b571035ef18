//! Our RouteLookup codec against Google's protobuf runtime: raw RouteLookup calls,
//! encoded by `lb_rls::proto` and sent over lb-transport's `H2Transport`, answered
//! by `xtask/peers/rls_server.py` (grpcio, messages from a protobuf descriptor).
//! The server prints what protobuf decoded from each request; its responses are
//! decoded by our codec. Also: both servers read the same routing-table file the
//! same way, and refuse the same invalid tables with the same message.
//!
//! (`H2Transport` is an optional dependency, enabled by the `server` feature.)
//!
//! Needs the peers `cargo xtask test` installs; every test starts with
//! `require_peers`, every wait is bounded and every process is killed on drop.

#![cfg(feature = "server")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use lb_core::transport::{CallError, CallRequest, CallResponse, ConnectOptions, ConnectionEvent};
use lb_core::{Address, Code, Connection, ConnectionExt, Transport};
use lb_rls::keys::KeyMap;
use lb_rls::proto::{
    ROUTE_LOOKUP_METHOD, Reason, RouteLookupRequest, RouteLookupResponse, TARGET_TYPE_GRPC,
};
use lb_rls::server::RoutingTable;
use lb_testkit::peers::{self, PeerEnv, ScriptServer, TempDir};
use lb_transport::driver::proxy::ProxyMode;
use lb_transport::driver::{H2Transport, TransportConfig};
use serde_json::{Value, json};

/// The longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(20);

/// A RouteLookup client: one HTTP/2 connection of our transport, our codec.
struct RlsClient {
    conn: Arc<dyn Connection>,
    _transport: H2Transport,
}

impl RlsClient {
    fn connect(target: &str) -> Self {
        let transport = H2Transport::new(TransportConfig {
            proxy: ProxyMode::Disabled,
            ..TransportConfig::default()
        })
        .expect("transport");
        let (tx, events) = bounded(16);
        let options = ConnectOptions {
            authority: target.into(),
            connect_deadline: Instant::now() + WAIT,
            user_agent: "lb-rls-interop-test".into(),
            transport_options: Default::default(),
        };
        let conn = transport
            .connect(
                &Address::new(target),
                &options,
                Arc::new(move |e| {
                    let _ = tx.try_send(e);
                }),
            )
            .expect("connect");
        assert_eq!(events.recv_timeout(WAIT), Ok(ConnectionEvent::Ready));
        Self {
            conn,
            _transport: transport,
        }
    }

    fn call_raw(&self, message: Vec<u8>) -> Result<CallResponse, CallError> {
        let (tx, rx) = bounded(1);
        let mut call = CallRequest::new(ROUTE_LOOKUP_METHOD, message);
        call.deadline = Some(Instant::now() + WAIT);
        self.conn.start_call(
            call,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv_timeout(WAIT).expect("the call completed in time")
    }
}

/// `rls_server.py` with `table` written to a file, and a client connected to it.
struct Peer {
    server: ScriptServer,
    client: RlsClient,
    _dir: TempDir,
}

fn write_table(env: &PeerEnv, table: &Value) -> (TempDir, String) {
    let dir = env.temp_dir("rls-table").expect("temp dir");
    let path = dir.path().join("table.json");
    std::fs::write(&path, serde_json::to_vec_pretty(table).unwrap()).expect("write table");
    (dir, path.display().to_string())
}

fn start_peer(table: &Value) -> Option<Peer> {
    let env = peers::require_peers()?;
    let (dir, path) = write_table(&env, table);
    let server = ScriptServer::start(
        &env,
        "rls_server.py",
        ["--port", "0", "--table", &path, "--watch-stdin"],
    )
    .expect("rls_server.py starts");
    let client = RlsClient::connect(&server.target());
    Some(Peer {
        server,
        client,
        _dir: dir,
    })
}

impl Peer {
    /// The next `REQUEST {...}` line, as JSON.
    fn next_request_line(&self) -> Value {
        let line = self
            .server
            .wait_for_line("REQUEST ", WAIT)
            .unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_str(&line["REQUEST ".len()..]).expect("JSON after REQUEST")
    }
}

/// What rls_server.py prints for a request protobuf decoded as `request`.
fn as_printed(request: &RouteLookupRequest) -> Value {
    let reason = match request.reason {
        Reason::Unknown => json!("REASON_UNKNOWN"),
        Reason::Miss => json!("REASON_MISS"),
        Reason::Stale => json!("REASON_STALE"),
        Reason::Unrecognized(n) => json!(n),
    };
    let key_map: serde_json::Map<String, Value> = request
        .key_map
        .iter()
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect();
    json!({
        "target_type": request.target_type,
        "key_map": key_map,
        "reason": reason,
        "stale_header_data": request.stale_header_data,
    })
}

fn table() -> Value {
    json!({"routes": [
        {"keys": {"user": "alice"}, "targets": ["alice-1:443", "alice-2:443"], "headerData": "for-alice"},
        {"keys": {"user": "bob", "method": "Get"}, "targets": ["bob:443"]},
        {"keys": {}, "targets": ["no-keys:443"], "headerData": "empty"},
        {"keys": {"ключ": "значение ✓", "empty": ""}, "targets": ["ユニコード:443"], "headerData": "données"},
    ]})
}

#[test]
fn protobuf_decodes_our_requests_and_we_decode_its_responses() {
    let table_json = table();
    let Some(peer) = start_peer(&table_json) else {
        return;
    };
    // Our own server's reading of the same table is the expected answer.
    let ours = RoutingTable::from_json(&table_json).unwrap();

    let plain = |pairs: &[(&str, &str)]| RouteLookupRequest {
        target_type: TARGET_TYPE_GRPC.into(),
        reason: Reason::Miss,
        stale_header_data: String::new(),
        key_map: pairs.iter().copied().collect::<KeyMap>(),
    };
    let mut stale = plain(&[("user", "alice")]);
    stale.reason = Reason::Stale;
    stale.stale_header_data = "previous header data, with \u{e9}".into();
    let mut odd_reason = plain(&[("user", "bob"), ("method", "Get")]);
    odd_reason.reason = Reason::Unrecognized(7);
    let mut negative_reason = plain(&[]);
    negative_reason.reason = Reason::Unrecognized(-1);
    negative_reason.target_type = String::new();
    let requests = [
        plain(&[("user", "alice")]),
        stale,
        odd_reason,
        negative_reason,
        plain(&[("ключ", "значение ✓"), ("empty", "")]),
    ];
    for request in &requests {
        let reply = peer
            .client
            .call_raw(request.to_bytes())
            .unwrap_or_else(|e| panic!("{request:?}: {e:?}"));
        let response = RouteLookupResponse::decode(&reply.message).expect("our codec decodes it");
        assert_eq!(
            Some(&response),
            ours.lookup(&request.key_map).as_ref(),
            "{request:?}"
        );
        assert_eq!(peer.next_request_line(), as_printed(request));
    }

    // Many keys, long values.
    let big: KeyMap = (0..200)
        .map(|i| (format!("key-{i:03}"), "v".repeat(i * 10)))
        .collect();
    let mut request = plain(&[]);
    request.key_map = big;
    let err = peer.client.call_raw(request.to_bytes()).unwrap_err();
    assert_eq!(err.status.code(), Code::NotFound);
    assert_eq!(peer.next_request_line(), as_printed(&request));
}

#[test]
fn the_peer_refuses_malformed_requests_and_unknown_keys() {
    let Some(peer) = start_peer(&table()) else {
        return;
    };
    let err = peer.client.call_raw(b"\x1a\x05a".to_vec()).unwrap_err();
    assert_eq!(err.status.code(), Code::InvalidArgument, "{err:?}");
    peer.server
        .wait_for_line("BAD_REQUEST ", WAIT)
        .unwrap_or_else(|e| panic!("{e}"));

    let err = peer
        .client
        .call_raw(
            RouteLookupRequest {
                target_type: TARGET_TYPE_GRPC.into(),
                key_map: [("user", "carol")].into_iter().collect(),
                ..RouteLookupRequest::default()
            }
            .to_bytes(),
        )
        .unwrap_err();
    assert_eq!(err.status.code(), Code::NotFound, "{err:?}");
    assert_eq!(
        err.status.message(),
        r#"no route for keys {"user": "carol"}"#
    );
}

#[test]
fn the_default_route_answers_in_both_servers() {
    let mut table_json = table();
    table_json["default"] = json!({"targets": ["fallback:443"], "headerData": "fb"});
    let Some(peer) = start_peer(&table_json) else {
        return;
    };
    let request = RouteLookupRequest {
        target_type: TARGET_TYPE_GRPC.into(),
        reason: Reason::Miss,
        key_map: [("user", "carol")].into_iter().collect(),
        ..RouteLookupRequest::default()
    };
    let reply = peer.client.call_raw(request.to_bytes()).expect("answered");
    let response = RouteLookupResponse::decode(&reply.message).unwrap();
    assert_eq!(response.targets, ["fallback:443"]);
    assert_eq!(response.header_data, "fb");
    let ours = RoutingTable::from_json(&table_json).unwrap();
    assert_eq!(ours.lookup(&request.key_map), Some(response));
}

#[test]
fn both_servers_refuse_the_same_invalid_tables_with_the_same_message() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let cases = [
        json!([]),
        json!({}),
        json!({"routes": {}}),
        json!({"routes": [], "extra": 1}),
        json!({"routes": [7]}),
        json!({"routes": [{"targets": []}]}),
        json!({"routes": [{"keys": {"user": 1}, "targets": []}]}),
        json!({"routes": [{"keys": {}, "targets": ["t", null]}]}),
        json!({"routes": [{"keys": {}, "targets": [], "headerData": true}]}),
        json!({"routes": [{"keys": {}, "targets": [], "header_data": "x"}]}),
        json!({"routes": [{"keys": {"a": "1"}, "targets": []}, {"keys": {"a": "1"}, "targets": []}]}),
        json!({"routes": [], "default": {"keys": {}, "targets": []}}),
        json!({"routes": [], "default": {"headerData": "x"}}),
    ];
    for table in cases {
        let ours = RoutingTable::from_json(&table).unwrap_err().to_string();
        let (_dir, path) = write_table(&env, &table);
        let out = peers::run_script(
            &env,
            "rls_server.py",
            ["--port", "0", "--table", &path],
            WAIT,
        )
        .expect("rls_server.py runs");
        assert_eq!(out.status.code(), Some(2), "{table}: {}", out.stderr);
        let want = format!("rls_server: invalid table {path}: {ours}");
        assert_eq!(out.stderr.trim(), want, "{table}");
    }
}
