//! Our RLS server (`lb_rls::server::mount` on lb-transport's gRPC server) on
//! loopback, called by a client made of lb-transport's `H2Transport` and our codec:
//! keys to targets and header data, the default route, NOT_FOUND, INVALID_ARGUMENT
//! for malformed requests, and the routing table's faults seen over the wire.
//!
//! Every wait is bounded by [`WAIT`].

#![cfg(feature = "server")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use lb_core::transport::{CallError, CallRequest, CallResponse, ConnectOptions, ConnectionEvent};
use lb_core::{Address, Code, Connection, ConnectionExt, Status, Transport};
use lb_rls::keys::KeyMap;
use lb_rls::proto::{
    ROUTE_LOOKUP_METHOD, Reason, RouteLookupRequest, RouteLookupResponse, TARGET_TYPE_GRPC,
};
use lb_rls::server::{self, RouteLookupHandler, RoutingTable};
use lb_transport::driver::proxy::ProxyMode;
use lb_transport::driver::{H2Transport, TransportConfig};
use lb_transport::server::{Server, ServerBuilder};
use serde_json::{Value, json};

/// The longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(20);

/// A RouteLookup client: one HTTP/2 connection of our transport, our codec.
struct RlsClient {
    conn: Arc<dyn Connection>,
    _transport: H2Transport,
}

impl RlsClient {
    fn connect(server: &Server) -> Self {
        let transport = H2Transport::new(TransportConfig {
            proxy: ProxyMode::Disabled,
            ..TransportConfig::default()
        })
        .expect("transport");
        let target = server.local_addr().to_string();
        let (tx, events) = bounded(16);
        let options = ConnectOptions {
            authority: target.clone(),
            connect_deadline: Instant::now() + WAIT,
            user_agent: "lb-rls-server-test".into(),
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

    /// One RouteLookup call with `message` as the request bytes.
    fn call_raw(
        &self,
        message: Vec<u8>,
        deadline: Option<Instant>,
    ) -> Result<CallResponse, CallError> {
        let (tx, rx) = bounded(1);
        let mut call = CallRequest::new(ROUTE_LOOKUP_METHOD, message);
        call.deadline = deadline;
        self.conn.start_call(
            call,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv_timeout(WAIT).expect("the call completed in time")
    }

    fn lookup(&self, request: &RouteLookupRequest) -> Result<RouteLookupResponse, Status> {
        let response = self
            .call_raw(request.to_bytes(), Some(Instant::now() + WAIT))
            .map_err(|e| e.status)?;
        Ok(RouteLookupResponse::decode(&response.message).expect("a valid response"))
    }
}

fn request(pairs: &[(&str, &str)]) -> RouteLookupRequest {
    RouteLookupRequest {
        target_type: TARGET_TYPE_GRPC.into(),
        reason: Reason::Miss,
        stale_header_data: String::new(),
        key_map: pairs.iter().copied().collect::<KeyMap>(),
    }
}

fn response(targets: &[&str], header_data: &str) -> RouteLookupResponse {
    RouteLookupResponse {
        targets: targets.iter().map(|t| (*t).to_owned()).collect(),
        header_data: header_data.into(),
    }
}

fn builder() -> ServerBuilder {
    Server::builder().workers(2)
}

fn start(table: Value) -> (Server, Arc<RoutingTable>, RlsClient) {
    let table = Arc::new(RoutingTable::from_json(&table).expect("valid table"));
    let server = server::mount(builder(), table.clone())
        .bind("127.0.0.1:0")
        .expect("bind");
    let client = RlsClient::connect(&server);
    (server, table, client)
}

fn alice_and_bob() -> Value {
    json!({"routes": [
        {"keys": {"user": "alice"}, "targets": ["alice-1:443", "alice-2:443"], "headerData": "for-alice"},
        {"keys": {"user": "bob", "method": "Get"}, "targets": ["bob:443"]},
        {"keys": {}, "targets": ["no-keys:443"], "headerData": "empty"},
    ]})
}

#[test]
fn keys_map_to_their_routes_targets_and_header_data() {
    let (_server, table, client) = start(alice_and_bob());
    let alice = request(&[("user", "alice")]);
    assert_eq!(
        client.lookup(&alice),
        Ok(response(&["alice-1:443", "alice-2:443"], "for-alice"))
    );
    let bob = request(&[("method", "Get"), ("user", "bob")]);
    assert_eq!(client.lookup(&bob), Ok(response(&["bob:443"], "")));
    let mut stale = request(&[]);
    stale.reason = Reason::Stale;
    stale.stale_header_data = "old data".into();
    assert_eq!(
        client.lookup(&stale),
        Ok(response(&["no-keys:443"], "empty"))
    );
    // The server decoded exactly what was sent, in order.
    assert_eq!(table.requests(), [alice, bob, stale]);
}

#[test]
fn no_matching_route_is_not_found_and_the_default_answers_it_when_set() {
    let (_server, table, client) = start(alice_and_bob());
    let carol = request(&[("user", "carol")]);
    let err = client.lookup(&carol).unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "no route for keys {user=carol}");
    // A superset of a route's keys is no match either.
    let err = client
        .lookup(&request(&[("user", "alice"), ("method", "Get")]))
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let mut with_default = alice_and_bob();
    with_default["default"] = json!({"targets": ["fallback:443"], "headerData": "fb"});
    table.replace(&with_default).unwrap();
    assert_eq!(client.lookup(&carol), Ok(response(&["fallback:443"], "fb")));
    assert_eq!(table.requests().len(), 3);
}

#[test]
fn malformed_request_bytes_are_invalid_argument_naming_the_decode_error() {
    let (_server, table, client) = start(alice_and_bob());
    let cases: [(&[u8], &str); 3] = [
        // target_type claims 5 bytes; 1 is left.
        (
            b"\x1a\x05a",
            "malformed RouteLookupRequest: field 3 at byte 1: length 5 runs past the end of the input (1 bytes left)",
        ),
        // A key_map entry whose value is not UTF-8.
        (
            b"\x22\x06\x0a\x01k\x12\x01\xff",
            "malformed RouteLookupRequest: field 4.2 at byte 7: string is not valid UTF-8",
        ),
        // Wire type 7 does not exist.
        (
            b"\x1f",
            "malformed RouteLookupRequest: field 3 at byte 0: invalid wire type 7",
        ),
    ];
    for (bytes, want) in cases {
        let err = client
            .call_raw(bytes.to_vec(), Some(Instant::now() + WAIT))
            .unwrap_err();
        assert_eq!(err.status.code(), Code::InvalidArgument, "{bytes:?}");
        assert_eq!(err.status.message(), want, "{bytes:?}");
    }
    // The handler never saw them, and the connection still serves.
    assert!(table.requests().is_empty());
    assert!(client.lookup(&request(&[("user", "alice")])).is_ok());
}

#[test]
fn a_failure_fails_calls_until_cleared() {
    let (_server, table, client) = start(alice_and_bob());
    let alice = request(&[("user", "alice")]);
    table.set_failure(Some(Status::unavailable("rls overloaded")));
    let err = client.lookup(&alice).unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unavailable, "rls overloaded")
    );
    table.set_failure(None);
    assert!(client.lookup(&alice).is_ok());
    assert_eq!(table.requests().len(), 2);
}

#[test]
fn garbage_reaches_the_client_as_the_response_message() {
    let (_server, table, client) = start(alice_and_bob());
    table.set_garbage(Some(b"\x1a\x05a".to_vec()));
    let reply = client
        .call_raw(
            request(&[("user", "alice")]).to_bytes(),
            Some(Instant::now() + WAIT),
        )
        .expect("the call succeeds; its message is garbage");
    assert_eq!(reply.message, b"\x1a\x05a");
    let err = RouteLookupResponse::decode(&reply.message).unwrap_err();
    assert_eq!(err.field_path(), [3]);
}

#[test]
fn a_delay_past_the_client_deadline_is_deadline_exceeded_and_frees_the_worker() {
    let table = Arc::new(RoutingTable::from_json(&alice_and_bob()).unwrap());
    // One worker: a handler still sleeping would hold up the next call.
    let server = server::mount(Server::builder().workers(1), table.clone())
        .bind("127.0.0.1:0")
        .unwrap();
    let client = RlsClient::connect(&server);
    let alice = request(&[("user", "alice")]);
    table.set_delay(Some(Duration::from_secs(3600)));
    let started = Instant::now();
    let err = client
        .call_raw(
            alice.to_bytes(),
            Some(Instant::now() + Duration::from_millis(300)),
        )
        .unwrap_err();
    assert_eq!(err.status.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(started.elapsed() < WAIT);
    assert_eq!(table.wait_for_requests(1, WAIT).map(|r| r.len()), Ok(1));
    table.set_delay(None);
    // The single worker is free again: the delayed handler saw the cancellation.
    assert_eq!(
        client.lookup(&alice),
        Ok(response(&["alice-1:443", "alice-2:443"], "for-alice"))
    );
    let stopping = Instant::now();
    server.shutdown(Duration::from_secs(1));
    assert!(stopping.elapsed() < Duration::from_secs(10));
}

#[test]
fn any_handler_can_be_mounted() {
    let echo_keys = |r: &RouteLookupRequest| {
        if r.target_type != TARGET_TYPE_GRPC {
            return Err(Status::invalid_argument("only grpc targets"));
        }
        Ok(RouteLookupResponse {
            targets: r
                .key_map
                .iter()
                .map(|(k, v)| format!("{k}.{v}:443"))
                .collect(),
            header_data: format!("{:?}", r.reason),
        })
    };
    let handler: Arc<dyn RouteLookupHandler> = Arc::new(echo_keys);
    let server = server::bind("127.0.0.1:0", handler).unwrap();
    let client = RlsClient::connect(&server);
    assert_eq!(
        client.lookup(&request(&[("a", "1"), ("b", "2")])),
        Ok(response(&["a.1:443", "b.2:443"], "Miss"))
    );
    let mut other = request(&[]);
    other.target_type = "http".into();
    assert_eq!(
        client.lookup(&other).unwrap_err().code(),
        Code::InvalidArgument
    );
}

#[test]
fn concurrent_lookups_are_all_answered_and_recorded() {
    let (_server, table, client) = start(json!({
        "routes": [],
        "default": {"targets": ["any:443"]},
    }));
    let client = Arc::new(client);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let r = request(&[("thread", &t.to_string()), ("i", &i.to_string())]);
                    assert_eq!(client.lookup(&r), Ok(response(&["any:443"], "")));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let seen = table.requests();
    assert_eq!(seen.len(), 100);
    for t in 0..4 {
        let mine: Vec<String> = seen
            .iter()
            .filter(|r| r.key_map.get("thread") == Some(&t.to_string()))
            .map(|r| r.key_map.get("i").unwrap().to_owned())
            .collect();
        let want: Vec<String> = (0..25).map(|i| i.to_string()).collect();
        assert_eq!(mine, want, "thread {t}'s requests arrive in its order");
    }
}

#[test]
fn a_large_key_map_arrives_whole_and_its_not_found_message_stays_small() {
    let big: Vec<(String, String)> = (0..200)
        .map(|i| (format!("key-{i:03}"), "v".repeat(i * 10)))
        .collect();
    let keys: serde_json::Map<String, Value> = big
        .iter()
        .take(100)
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let (_server, table, client) =
        start(json!({"routes": [{"keys": keys, "targets": ["big:443"]}]}));
    let mut hundred = request(&[]);
    hundred.key_map = big.iter().take(100).cloned().collect();
    assert_eq!(client.lookup(&hundred), Ok(response(&["big:443"], "")));
    let mut all = request(&[]);
    all.key_map = big.into_iter().collect();
    let err = client.lookup(&all).unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().len() < 600, "{}", err.message().len());
    assert!(err.message().ends_with("...}"), "{}", err.message());
    assert_eq!(table.requests(), [hundred, all]);
}
