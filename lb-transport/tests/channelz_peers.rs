//! Our channelz service (`grpc.channelz.v1.Channelz`, gRFC A14) read by grpc's own
//! channelz client stubs (grpcio-channelz, `xtask/peers/channelz_client.py`), over
//! real sockets: three of our servers (the channelz service, a backend a `Channel`
//! calls, another backend an `H2Transport` connection calls directly), calls that
//! succeed and calls that fail, then the Python client lists and reads what they
//! did. Needs the peers that `cargo xtask test` installs (see
//! `lb_testkit::peers::require_peers`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use lb_core::channel::{CallOptions, Channel};
use lb_core::transport::{CallRequest, ConnectOptions, ConnectionEvent};
use lb_core::{Address, Connection, ConnectionExt, Status, Transport};
use lb_testkit::peers::{self, PeerEnv};
use lb_testkit::services;
use lb_transport::driver::{H2Transport, TransportConfig};
use lb_transport::server::channelz::ChannelzService;
use lb_transport::server::{Server, ServerBuilder};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// The backends' failing method.
const FAIL: &str = "/test.Fail/Fail";

/// An id no entity has (ids count up from 1 in one process).
const UNKNOWN_ID: u64 = 1 << 40;

fn start_backend(id: &str) -> Server {
    let builder: ServerBuilder = services::mount(Server::builder(), id)
        .unary(FAIL, |_| Err(Status::unavailable("failing on purpose")));
    builder.workers(2).bind("127.0.0.1:0").unwrap()
}

fn channelz_server() -> Server {
    ChannelzService::new()
        .mount(Server::builder())
        .workers(2)
        .bind("127.0.0.1:0")
        .unwrap()
}

fn options() -> CallOptions {
    CallOptions::default().with_deadline(Instant::now() + WAIT)
}

/// A `Channel` over `H2Transport` to `backend`: `ok` echo calls, `failed` failing ones.
fn channel_calls(backend: &Server, ok: usize, failed: usize) -> Channel {
    let transport = Arc::new(H2Transport::new(TransportConfig::default()).unwrap());
    let channel = Channel::builder(format!("ipv4:{}", backend.local_addr()))
        .transport(transport)
        .build()
        .unwrap();
    for _ in 0..ok {
        let r = channel.unary(services::ECHO, b"hi".to_vec(), options());
        assert_eq!(r.unwrap().message, b"hi");
    }
    for _ in 0..failed {
        let err = channel.unary(FAIL, b"x".to_vec(), options()).unwrap_err();
        assert_eq!(err.code(), lb_core::Code::Unavailable);
    }
    channel
}

/// One connection straight from an `H2Transport` (no channel) to `server`, with
/// `ok` echo calls and `failed` failing ones; returns it (and its transport) open.
fn direct_calls(server: &Server, ok: usize, failed: usize) -> (H2Transport, Arc<dyn Connection>) {
    let transport = H2Transport::new(TransportConfig::default()).unwrap();
    let addr = server.local_addr().to_string();
    let opts = ConnectOptions {
        authority: addr.clone(),
        connect_deadline: Instant::now() + WAIT,
        user_agent: "channelz-test".into(),
        transport_options: Default::default(),
    };
    let (tx, events) = bounded(16);
    let sink = Arc::new(move |e| {
        let _ = tx.try_send(e);
    });
    let conn = transport.connect(&Address::new(addr), &opts, sink).unwrap();
    assert_eq!(events.recv_timeout(WAIT), Ok(ConnectionEvent::Ready));
    let calls = (0..ok)
        .map(|_| (services::ECHO, true))
        .chain((0..failed).map(|_| (FAIL, false)));
    for (method, want_ok) in calls {
        let (tx, rx) = bounded(1);
        conn.start_call(
            CallRequest::new(method, b"hey".to_vec()),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        let result = rx.recv_timeout(WAIT).unwrap();
        assert_eq!(result.is_ok(), want_ok, "{method}: {result:?}");
    }
    (transport, conn)
}

/// Runs channelz_client.py against `target` with `commands`; one JSON value per
/// command.
fn channelz_client(env: &PeerEnv, target: &str, commands: &[String]) -> Vec<Value> {
    let mut args = vec!["--target".to_owned(), target.to_owned()];
    for command in commands {
        args.extend(command.split_whitespace().map(str::to_owned));
    }
    let out = peers::run_script(env, "channelz_client.py", &args, WAIT).unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), commands.len(), "{}", out.stdout);
    lines
}

/// An int64 (or an Int64Value) as json_format prints it: a string, absent when 0.
/// Timestamps print as RFC 3339 strings.
fn int(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap(),
        Value::Number(n) => n.as_u64().unwrap(),
        Value::Null => 0,
        other => panic!("not an int64: {other}"),
    }
}

fn ok(line: &Value) -> &Value {
    assert!(line.get("error").is_none(), "{line}");
    &line["ok"]
}

/// The ids of the items of a paged answer (`server`, `socket_ref`, …).
fn ids(page: &Value, items: &str, reference: &str, id: &str) -> Vec<u64> {
    page[items]
        .as_array()
        .map(|a| a.iter().map(|i| int(&i[reference][id])).collect())
        .unwrap_or_default()
}

fn end(page: &Value) -> bool {
    page["end"].as_bool().unwrap_or(false)
}

#[test]
fn grpcio_channelz_client_reads_our_servers_and_sockets() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let cz = channelz_server();
    let backend = start_backend("backend");
    let other = start_backend("other");
    let _channel = channel_calls(&backend, 5, 3);
    let (_transport, conn) = direct_calls(&other, 2, 1);
    let client_socket = conn.socket_id().expect("H2Transport registers its sockets");

    let (b, o, c) = (backend.channelz_id(), other.channelz_id(), cz.channelz_id());
    let low = b.min(o).min(c);
    let commands = [
        "walk".to_owned(),
        format!("server {b}"),
        format!("server-sockets {b} 0 1"),
        format!("socket {client_socket}"),
        format!("socket {}", backend.channelz_listen_socket_id()),
        format!("servers {low} 1"),
        format!("servers {} 1", low + 1),
        format!("server {UNKNOWN_ID}"),
        format!("socket {UNKNOWN_ID}"),
        format!("channel {b}"),
    ];
    let lines = channelz_client(&env, &cz.local_addr().to_string(), &commands);

    // GetServer: the backend's calls (5 echoed, 3 failed) and its listener.
    let server = &ok(&lines[1])["server"];
    assert_eq!(int(&server["ref"]["server_id"]), b);
    let data = &server["data"];
    assert_eq!(
        (
            int(&data["calls_started"]),
            int(&data["calls_succeeded"]),
            int(&data["calls_failed"])
        ),
        (8, 5, 3),
        "{server}"
    );
    assert!(data["last_call_started_timestamp"].is_string(), "{server}");
    let trace = &data["trace"];
    assert!(int(&trace["num_events_logged"]) >= 1, "{server}");
    assert!(
        trace["events"][0]["description"]
            .as_str()
            .unwrap()
            .contains("server started"),
        "{server}"
    );
    let listen: Vec<u64> = server["listen_socket"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| int(&r["socket_id"]))
        .collect();
    assert_eq!(listen, [backend.channelz_listen_socket_id()]);

    // GetServerSockets with max_results 1: the channel's one connection, and the end.
    let page = ok(&lines[2]);
    let refs: Vec<u64> = page["socket_ref"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| int(&r["socket_id"]))
        .collect();
    assert_eq!(refs.len(), 1, "{page}");
    assert!(end(page), "{page}");

    // The walk read that socket too: the server side of the channel's connection.
    let walk = ok(&lines[0]);
    let server_side = &walk["sockets"][refs[0].to_string()];
    let sd = &server_side["data"];
    assert_eq!(
        (
            int(&sd["streams_started"]),
            int(&sd["streams_succeeded"]),
            int(&sd["streams_failed"]),
            int(&sd["messages_received"]),
            int(&sd["messages_sent"]),
        ),
        (8, 8, 0, 8, 5),
        "{server_side}"
    );
    assert!(
        sd["last_remote_stream_created_timestamp"].is_string(),
        "{server_side}"
    );
    assert!(
        sd["last_message_sent_timestamp"].is_string(),
        "{server_side}"
    );
    assert!(int(&sd["local_flow_control_window"]) > 0, "{server_side}");
    let local = &server_side["local"]["tcpip_address"];
    assert_eq!(
        int(&local["port"]),
        u64::from(backend.local_addr().port()),
        "{server_side}"
    );
    // 127.0.0.1 as base64 bytes.
    assert_eq!(local["ip_address"], "fwAAAQ==", "{server_side}");
    assert!(server_side["remote"]["tcpip_address"].is_object());
    assert!(server_side.get("security").is_none(), "plaintext");

    // The walk found every server, with the channelz server's own connection (this
    // client's): its earlier calls counted.
    let listed: Vec<u64> = walk["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| int(&s["ref"]["server_id"]))
        .collect();
    for id in [b, o, c] {
        assert!(listed.contains(&id), "{id} not in {listed:?}");
    }
    let mine = walk["server_sockets"][c.to_string()].as_array().unwrap();
    assert_eq!(mine.len(), 1, "{walk}");
    let me = &walk["sockets"][int(&mine[0]["socket_id"]).to_string()]["data"];
    assert!(int(&me["streams_started"]) >= 3, "{me}");
    assert!(int(&me["messages_received"]) >= 3, "{me}");
    assert!(int(&me["messages_sent"]) >= 2, "{me}");

    // GetSocket on a client connection of our own (no channel): 2 echoed, 1 failed.
    let socket = &ok(&lines[3])["socket"];
    assert_eq!(int(&socket["ref"]["socket_id"]), client_socket);
    let d = &socket["data"];
    assert_eq!(
        (
            int(&d["streams_started"]),
            int(&d["streams_succeeded"]),
            int(&d["streams_failed"]),
            int(&d["messages_sent"]),
            int(&d["messages_received"]),
        ),
        (3, 3, 0, 3, 2),
        "{socket}"
    );
    assert!(
        d["last_local_stream_created_timestamp"].is_string(),
        "{socket}"
    );
    assert!(
        d.get("last_remote_stream_created_timestamp").is_none(),
        "{socket}"
    );
    assert!(int(&d["remote_flow_control_window"]) > 0, "{socket}");
    assert_eq!(
        int(&socket["remote"]["tcpip_address"]["port"]),
        u64::from(other.local_addr().port())
    );

    // GetSocket on the backend's listener: its address, no peer.
    let listener = &ok(&lines[4])["socket"];
    assert_eq!(
        int(&listener["local"]["tcpip_address"]["port"]),
        u64::from(backend.local_addr().port())
    );
    assert!(listener.get("remote").is_none(), "{listener}");

    // Paging GetServers with max_results 1: one server a page, in id order.
    let first = ok(&lines[5]);
    assert_eq!(ids(first, "server", "ref", "server_id"), [low], "{first}");
    assert!(!end(first), "more servers follow: {first}");
    let second = ids(ok(&lines[6]), "server", "ref", "server_id");
    assert_eq!(second.len(), 1);
    assert!(
        second[0] > low && second[0] <= b.max(o).max(c),
        "{second:?}"
    );

    // NOT_FOUND for ids that name nothing, or something else.
    for line in &lines[7..10] {
        assert_eq!(line["error"]["code"], "NOT_FOUND", "{line}");
    }
    drop(conn);
}

/// Needs czcore's channel and subchannel entities (lb-core's channel registering
/// itself, its subchannels, and `Connection::socket_id` under them). Every
/// assertion here depends on that work.
#[test]
fn grpcio_channelz_client_reads_our_channel_and_subchannels() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let cz = channelz_server();
    let backend = start_backend("backend");
    let _channel = channel_calls(&backend, 5, 3);
    let target = format!("ipv4:{}", backend.local_addr());
    let lines = channelz_client(&env, &cz.local_addr().to_string(), &["walk".to_owned()]);
    let walk = ok(&lines[0]);

    // our channel is a top channel, by its target, with its call counts.
    let channel = walk["top_channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["data"]["target"] == target.as_str())
        .unwrap_or_else(|| panic!("no top channel {target}: {walk}"));
    let data = &channel["data"];
    assert_eq!(
        (
            int(&data["calls_started"]),
            int(&data["calls_succeeded"]),
            int(&data["calls_failed"])
        ),
        (8, 5, 3),
        "{channel}"
    );
    assert_eq!(data["state"]["state"], "READY", "{channel}");

    // its subchannel, READY, with the connection's socket under it.
    let subs = channel["subchannel_ref"]
        .as_array()
        .expect("subchannel refs");
    assert_eq!(subs.len(), 1, "{channel}");
    let sub_id = int(&subs[0]["subchannel_id"]);
    let sub = &walk["subchannels"][sub_id.to_string()];
    assert_eq!(sub["data"]["state"]["state"], "READY", "{sub}");
    let socks = sub["socket_ref"].as_array().expect("socket refs");
    assert_eq!(socks.len(), 1, "{sub}");

    // that socket is our client connection: 8 streams, 8 requests, 5 answers.
    let socket = &walk["sockets"][int(&socks[0]["socket_id"]).to_string()];
    let d = &socket["data"];
    assert_eq!(
        (
            int(&d["streams_started"]),
            int(&d["streams_succeeded"]),
            int(&d["messages_sent"]),
            int(&d["messages_received"]),
        ),
        (8, 8, 8, 5),
        "{socket}"
    );
    assert_eq!(
        int(&socket["remote"]["tcpip_address"]["port"]),
        u64::from(backend.local_addr().port())
    );
}

/// One unary call of raw bytes on `conn`.
fn raw_call(conn: &Arc<dyn Connection>, method: &str, request: Vec<u8>) -> Result<Vec<u8>, Status> {
    let (tx, rx) = bounded(1);
    conn.start_call(
        CallRequest::new(method, request),
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    match rx.recv_timeout(WAIT).unwrap() {
        Ok(response) => Ok(response.message),
        Err(e) => Err(e.status),
    }
}

/// The reverse: grpcio's own channelz servicer (`grpc_server.py --channelz`,
/// C-core's channelz) answers our hand-written requests, and our decoders read its
/// answers; both sides agree on the connection between them.
#[test]
fn our_decoders_read_grpcio_channelz_answers() {
    use lb_core::channelz::{self as cz, Snapshot};
    use lb_transport::server::channelz::wire::{self, Method, Request};

    let Some(env) = peers::require_peers() else {
        return;
    };
    let grpcio = peers::ScriptServer::start(
        &env,
        "grpc_server.py",
        ["--port", "0", "--watch-stdin", "--channelz"],
    )
    .unwrap();
    let transport = H2Transport::new(TransportConfig::default()).unwrap();
    let addr = grpcio.addr().to_string();
    let opts = ConnectOptions {
        authority: addr.clone(),
        connect_deadline: Instant::now() + WAIT,
        user_agent: "channelz-test".into(),
        transport_options: Default::default(),
    };
    let (tx, events) = bounded(16);
    let sink = Arc::new(move |e| {
        let _ = tx.try_send(e);
    });
    let conn = transport
        .connect(&Address::new(&addr), &opts, sink)
        .unwrap();
    assert_eq!(events.recv_timeout(WAIT), Ok(ConnectionEvent::Ready));
    for _ in 0..4 {
        assert_eq!(
            raw_call(&conn, services::ECHO, b"hi".to_vec()).unwrap(),
            b"hi"
        );
    }
    let ask = |method: Method, request: Request| {
        raw_call(&conn, method.path(), wire::encode_request(&request))
    };

    // GetServers: grpcio's one server, with the calls so far, and its listener.
    let page = ask(
        Method::GetServers,
        Request::Servers {
            start_server_id: 0,
            max_results: 0,
        },
    )
    .unwrap();
    let (servers, end) = wire::decode_page(&page, wire::decode_server).unwrap();
    assert!(end);
    assert_eq!(servers.len(), 1, "{servers:?}");
    let server = &servers[0];
    assert!(server.calls.started >= 4, "{server:?}");
    assert!(server.calls.succeeded >= 4, "{server:?}");
    assert!(server.calls.last_started.is_some(), "{server:?}");
    assert_eq!(server.listen_sockets.len(), 1, "{server:?}");

    // Its listen socket: C-core names it after the address it was asked to bind
    // (`127.0.0.1:0`), so only the IP is checked.
    let listen = ask(
        Method::GetSocket,
        Request::Socket {
            socket_id: server.listen_sockets[0] as i64,
            summary: false,
        },
    )
    .unwrap();
    let listen = wire::decode_get_one(&listen, wire::decode_socket)
        .unwrap()
        .unwrap();
    let port = |a: &Option<String>| -> u16 {
        a.as_deref()
            .unwrap()
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .port()
    };
    let local: std::net::SocketAddr = listen.local.as_deref().unwrap().parse().unwrap();
    assert_eq!(local.ip(), grpcio.addr().ip(), "{listen:?}");
    assert_eq!(listen.remote, None, "{listen:?}");
    assert!(listen.name.contains("listener"), "{listen:?}");

    // GetServerSockets: our connection, seen from grpcio's side, is the one whose
    // remote port is our socket's local port (from our own registry).
    let Some(Snapshot::Socket(ours)) = cz::registry().get(conn.socket_id().unwrap()) else {
        panic!("our connection is not registered");
    };
    let page = ask(
        Method::GetServerSockets,
        Request::ServerSockets {
            server_id: server.id as i64,
            start_socket_id: 0,
            max_results: 0,
        },
    )
    .unwrap();
    let (refs, end) = wire::decode_page(&page, wire::decode_socket_ref).unwrap();
    assert!(end);
    let mut theirs = None;
    for (id, _) in &refs {
        let bytes = ask(
            Method::GetSocket,
            Request::Socket {
                socket_id: *id as i64,
                summary: false,
            },
        )
        .unwrap();
        let socket = wire::decode_get_one(&bytes, wire::decode_socket)
            .unwrap()
            .unwrap();
        if socket.remote.is_some() && port(&socket.remote) == port(&ours.local) {
            theirs = Some(socket);
        }
    }
    let theirs = theirs.unwrap_or_else(|| panic!("our connection not among {refs:?}"));
    // 4 echo calls and 3 channelz calls answered, and the GetSocket under way.
    assert!(theirs.streams_started >= 8, "{theirs:?}");
    assert!(theirs.streams_succeeded >= 7, "{theirs:?}");
    assert!(theirs.messages_received >= 8, "{theirs:?}");
    assert!(theirs.messages_sent >= 7, "{theirs:?}");
    assert!(theirs.last_remote_stream_created.is_some(), "{theirs:?}");
    assert_eq!(port(&theirs.local), grpcio.addr().port());

    // Our side of the same connection counts the same finished calls. The I/O
    // thread publishes its counts at the end of the pass that ran our callback, so
    // the last call's may land a moment after it returned: wait for them, bounded.
    let deadline = Instant::now() + WAIT;
    let ours = loop {
        let Some(Snapshot::Socket(ours)) = cz::registry().get(conn.socket_id().unwrap()) else {
            panic!("our connection is not registered");
        };
        if ours.streams_succeeded >= 8 || Instant::now() >= deadline {
            break ours;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    assert!(ours.streams_succeeded >= 8, "{ours:?}");
    assert_eq!(ours.streams_failed, 0, "{ours:?}");
    assert!(
        ours.messages_sent >= 8 && ours.messages_received >= 8,
        "{ours:?}"
    );

    // An id grpcio does not know: NOT_FOUND there too.
    let err = ask(
        Method::GetSubchannel,
        Request::Subchannel {
            subchannel_id: UNKNOWN_ID as i64,
        },
    )
    .unwrap_err();
    assert_eq!(err.code(), lb_core::Code::NotFound, "{err:?}");
}

/// Over TLS, both ends of a connection show channelz's `Security.tls` with the
/// negotiated suite's standard name (read through our codec's decoder, as a
/// channelz client would see it).
#[cfg(feature = "tls")]
#[test]
fn tls_sockets_show_their_cipher_suite() {
    use lb_core::channelz::{self as cz, Snapshot};
    use lb_transport::driver::tls::{TlsConfig, TlsServerConfig};
    use lb_transport::server::channelz::wire::{self, Method, Request};

    let Some(env) = peers::require_peers() else {
        return;
    };
    let dir = env.temp_dir("channelz-tls").unwrap();
    let (cert, key) = peers::self_signed_cert(dir.path()).unwrap();
    let (cert, key) = (std::fs::read(cert).unwrap(), std::fs::read(key).unwrap());
    let server = services::mount(Server::builder(), "tls")
        .tls(TlsServerConfig::from_pem(&cert, &key).unwrap())
        .workers(2)
        .bind("127.0.0.1:0")
        .unwrap();
    let config = TransportConfig {
        tls: Some(
            TlsConfig::with_root_pem(&cert)
                .unwrap()
                .with_server_name("localhost"),
        ),
        ..TransportConfig::default()
    };
    let transport = H2Transport::new(config).unwrap();
    let addr = server.local_addr().to_string();
    let opts = ConnectOptions {
        authority: addr.clone(),
        connect_deadline: Instant::now() + WAIT,
        user_agent: "channelz-test".into(),
        transport_options: Default::default(),
    };
    let (tx, events) = bounded(16);
    let sink = Arc::new(move |e| {
        let _ = tx.try_send(e);
    });
    let conn = transport
        .connect(&Address::new(&addr), &opts, sink)
        .unwrap();
    assert_eq!(events.recv_timeout(WAIT), Ok(ConnectionEvent::Ready));
    assert_eq!(
        raw_call(&conn, services::ECHO, b"hi".to_vec()).unwrap(),
        b"hi"
    );

    let service = ChannelzService::new();
    let socket = |id: u64| {
        let request = Request::Socket {
            socket_id: id as i64,
            summary: false,
        };
        let bytes = service
            .answer(Method::GetSocket, &wire::encode_request(&request))
            .unwrap();
        wire::decode_get_one(&bytes, wire::decode_socket)
            .unwrap()
            .unwrap()
    };
    let client = socket(conn.socket_id().unwrap());
    let Some(Snapshot::Server(s)) = cz::registry().get(server.channelz_id()) else {
        panic!("server not registered");
    };
    assert_eq!(s.sockets.len(), 1, "{s:?}");
    let server_side = socket(s.sockets[0]);
    for side in [&client, &server_side] {
        let security = side.security.as_deref().unwrap_or_default();
        assert!(security.starts_with("tls:TLS_"), "{side:?}");
        assert!(
            !security.starts_with("tls:TLS13_"),
            "standard names: {side:?}"
        );
    }
    assert_eq!(client.security, server_side.security);
    assert_eq!(client.local, server_side.remote);
}
