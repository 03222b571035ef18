//! Writes the committed seed inputs in `seeds/<target>/` from real encoders and a real
//! client/server exchange, so they are valid by construction.
//!
//! `cargo run --manifest-path xtask/fuzz/Cargo.toml --example write_seeds`
//!
//! Rerun it after a wire-visible change; the seeds are small and their bytes are
//! deterministic.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use lb_core::LbPolicyRegistry;
use lb_rls::config::{RlsConfig, RlsConfigOptions};
use lb_rls::dial::DialTargetBuilder;
use lb_rls::keys::KeyMap;
use lb_rls::proto::{Reason as LookupReason, RouteLookupRequest, RouteLookupResponse};
use lb_transport::frame::{
    Continuation, Data, Frame, GoAway, Head, Headers, PREFACE, Ping, Priority, PushPromise, Reason,
    RstStream, Settings, StreamDependency, StreamId, Unknown, WindowUpdate,
};
use lb_transport::hpack::{Encoder, Header};
use lb_transport::proto::{Connection, ConnectionConfig, Event};

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    hpack(&dir.join("hpack_decode"));
    frames(&dir.join("frame_decode"));
    connections(&dir);
    service_config(&dir.join("service_config"));
    health_codec(&dir.join("health_codec"));
    orca_codec(&dir.join("orca_codec"));
    rls_response(&dir.join("rls_response"));
    rls_config(&dir.join("rls_config"));
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).expect("create seeds dir");
    let path: PathBuf = dir.join(name);
    fs::write(&path, bytes).expect("write seed");
    println!("{} ({} bytes)", path.display(), bytes.len());
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Blocks joined with a length byte in front of each, as `hpack_decode` splits them.
fn length_prefixed(blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for block in blocks {
        out.push(u8::try_from(block.len()).expect("block under 256 bytes"));
        out.extend_from_slice(block);
    }
    out
}

fn request(path: &str) -> Vec<Header> {
    vec![
        Header::new(":method", "POST"),
        Header::new(":scheme", "http"),
        Header::new(":path", path.to_string()),
        Header::new(":authority", "fuzz.example"),
        Header::new("content-type", "application/grpc"),
        Header::new("te", "trailers"),
        Header::new("grpc-timeout", "1S"),
        Header::new_sensitive("authorization", "Bearer secret"),
    ]
}

fn hpack(dir: &Path) {
    // RFC 7541 C.4: three requests with Huffman coding, the later ones using the
    // dynamic table the earlier ones filled.
    let c41 = hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff");
    let c42 = hex("8286 84be 5886 a8eb 1064 9cbf");
    let c43 = hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf");
    write(dir, "rfc7541_c4_1", &c41);
    write(
        dir,
        "rfc7541_c4_sequence",
        &length_prefixed(&[c41, c42, c43]),
    );
    // RFC 7541 C.5.1: a response without Huffman coding.
    let c51 = hex(
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 \
         2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 \
         6c65 2e63 6f6d",
    );
    write(dir, "rfc7541_c5_1", &c51);

    // Our encoder: a gRPC request, then a second one that reuses the table, then a
    // table size update followed by a response.
    let mut encoder = Encoder::new();
    let mut first = Vec::new();
    encoder.encode(&request("/lb.test.Echo/Call"), &mut first);
    let mut second = Vec::new();
    encoder.encode(&request("/lb.test.Echo/Other"), &mut second);
    encoder.set_max_table_size(256);
    let mut third = Vec::new();
    encoder.encode(
        &[
            Header::new(":status", "200"),
            Header::new("grpc-status", "0"),
        ],
        &mut third,
    );
    write(dir, "grpc_request", &first);
    write(
        dir,
        "grpc_sequence",
        &length_prefixed(&[first, second, third]),
    );
}

fn encode(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for frame in frames {
        frame.encode(&mut out);
    }
    out
}

fn frames(dir: &Path) {
    let s1 = StreamId::new(1);
    let mut block = Vec::new();
    Encoder::new().encode(&request("/lb.test.Echo/Call"), &mut block);
    let (head, tail) = block.split_at(block.len() / 2);
    let settings = Settings {
        header_table_size: Some(4096),
        enable_push: Some(0),
        max_concurrent_streams: Some(100),
        initial_window_size: Some(65_535),
        max_frame_size: Some(16_384),
        max_header_list_size: Some(16_384),
        ..Settings::default()
    };
    let all = encode(&[
        settings.into(),
        Settings::new_ack().into(),
        WindowUpdate::new(StreamId::ZERO, 1 << 20).into(),
        Headers {
            stream_id: s1,
            priority: Some(StreamDependency {
                dependency_id: StreamId::ZERO,
                weight: 15,
                exclusive: false,
            }),
            fragment: head.to_vec(),
            end_stream: false,
            end_headers: false,
            pad_len: Some(3),
        }
        .into(),
        Continuation {
            stream_id: s1,
            fragment: tail.to_vec(),
            end_headers: true,
        }
        .into(),
        Data {
            stream_id: s1,
            data: b"\0\0\0\0\x05hello".to_vec(),
            end_stream: true,
            pad_len: Some(2),
        }
        .into(),
        Ping::new(*b"12345678").into(),
        Ping::pong(*b"12345678").into(),
        Priority {
            stream_id: StreamId::new(3),
            dependency: StreamDependency {
                dependency_id: s1,
                weight: 200,
                exclusive: true,
            },
        }
        .into(),
        RstStream::new(StreamId::new(3), Reason::CANCEL).into(),
        PushPromise {
            stream_id: s1,
            promised_id: StreamId::new(2),
            fragment: vec![0x82],
            end_headers: true,
            pad_len: None,
        }
        .into(),
        Unknown {
            kind: 0xfa,
            flags: 0x3,
            stream_id: s1,
            payload: b"extension".to_vec(),
        }
        .into(),
        GoAway {
            last_stream_id: s1,
            reason: Reason::NO_ERROR,
            debug_data: b"bye".to_vec(),
        }
        .into(),
    ]);
    write(dir, "all_types", &all);
    write(
        dir,
        "settings_window_update",
        &encode(&[settings.into(), WindowUpdate::new(s1, 1000).into()]),
    );
    write(
        dir,
        "headers_data",
        &encode(&[
            Headers::new(s1, block.clone(), false, true).into(),
            Data::new(s1, b"\0\0\0\0\x02hi".to_vec(), true).into(),
        ]),
    );
}

/// Moves bytes both ways until neither side has anything to write, recording them.
fn pump(
    client: &mut Connection,
    server: &mut Connection,
    now: Instant,
    client_wrote: &mut Vec<u8>,
    server_wrote: &mut Vec<u8>,
) {
    loop {
        let mut to_server = Vec::new();
        let mut to_client = Vec::new();
        let n =
            client.poll_transmit(now, &mut to_server) + server.poll_transmit(now, &mut to_client);
        if n == 0 {
            break;
        }
        client_wrote.extend_from_slice(&to_server);
        server_wrote.extend_from_slice(&to_client);
        server.handle_read(&to_server, now);
        client.handle_read(&to_client, now);
    }
}

fn response(server: &mut Connection, stream: StreamId, message: &[u8]) {
    server
        .send_headers(
            stream,
            vec![
                Header::new(":status", "200"),
                Header::new("content-type", "application/grpc"),
            ],
            false,
        )
        .expect("open stream");
    let mut body = vec![0];
    body.extend_from_slice(&u32::try_from(message.len()).expect("short").to_be_bytes());
    body.extend_from_slice(message);
    server.send_data(stream, &body, false).expect("open stream");
    server
        .send_headers(
            stream,
            vec![
                Header::new("grpc-status", "0"),
                Header::new("grpc-message", "ok%20done"),
            ],
            true,
        )
        .expect("open stream");
}

/// The length of the preface (if any) and first SETTINGS frame at the start of `bytes`.
fn handshake_len(bytes: &[u8]) -> usize {
    let preface = if bytes.starts_with(PREFACE) {
        PREFACE.len()
    } else {
        0
    };
    preface + Head::parse(&bytes[preface..]).expect("a frame").frame_len()
}

/// Records a real exchange: what the server wrote becomes a `client_connection` seed,
/// what the client wrote after its preface and first SETTINGS a `server_connection` seed.
fn connections(dir: &Path) {
    let now = Instant::now();

    // One call: request headers and body, response headers, body and trailers, then
    // a ping and a graceful GOAWAY from the server.
    let mut client = Connection::client(ConnectionConfig::default(), now);
    let mut server = Connection::server(ConnectionConfig::default(), now);
    let (mut client_wrote, mut server_wrote) = (Vec::new(), Vec::new());
    let id = client
        .open_stream(request("/lb.test.Echo/Call"), false, now)
        .expect("open");
    client
        .send_data(id, b"\0\0\0\0\x05hello", true)
        .expect("send");
    pump(
        &mut client,
        &mut server,
        now,
        &mut client_wrote,
        &mut server_wrote,
    );
    while let Some(event) = server.poll_event() {
        if let Event::Headers { stream, .. } = event {
            response(&mut server, stream, b"hello back");
        }
    }
    pump(
        &mut client,
        &mut server,
        now,
        &mut client_wrote,
        &mut server_wrote,
    );
    pump(
        &mut client,
        &mut server,
        now,
        &mut client_wrote,
        &mut server_wrote,
    );
    let one_call_response = server_wrote.clone();
    server.go_away(Reason::NO_ERROR, b"");
    pump(
        &mut client,
        &mut server,
        now,
        &mut client_wrote,
        &mut server_wrote,
    );
    write(
        &dir.join("client_connection"),
        "one_call",
        &one_call_response[handshake_len(&one_call_response)..],
    );
    write(
        &dir.join("client_connection"),
        "one_call_then_goaway",
        &server_wrote[handshake_len(&server_wrote)..],
    );
    write(
        &dir.join("server_connection"),
        "one_call",
        &client_wrote[handshake_len(&client_wrote)..],
    );

    // Two concurrent calls, the second cancelled by the client; a client ping.
    let mut client = Connection::client(ConnectionConfig::default(), now);
    let mut server = Connection::server(ConnectionConfig::default(), now);
    let (mut client_wrote, mut server_wrote) = (Vec::new(), Vec::new());
    let a = client
        .open_stream(request("/lb.test.Echo/A"), false, now)
        .expect("open");
    let b = client
        .open_stream(request("/lb.test.Echo/B"), false, now)
        .expect("open");
    client.send_data(a, b"\0\0\0\0\x01a", true).expect("send");
    client.send_data(b, b"\0\0\0\0\x01b", false).expect("send");
    pump(
        &mut client,
        &mut server,
        now,
        &mut client_wrote,
        &mut server_wrote,
    );
    client.reset_stream(b, Reason::CANCEL);
    pump(
        &mut client,
        &mut server,
        now,
        &mut client_wrote,
        &mut server_wrote,
    );
    while let Some(event) = server.poll_event() {
        if let Event::Headers { stream, .. } = event {
            if stream == a {
                response(&mut server, stream, b"a");
            }
        }
    }
    pump(
        &mut client,
        &mut server,
        now,
        &mut client_wrote,
        &mut server_wrote,
    );
    client.close();
    pump(
        &mut client,
        &mut server,
        now,
        &mut client_wrote,
        &mut server_wrote,
    );
    write(
        &dir.join("server_connection"),
        "two_calls_one_cancelled",
        &client_wrote[handshake_len(&client_wrote)..],
    );
    let mut ping = Vec::new();
    Ping::new(*b"pingpong").encode(&mut ping);
    Settings::new_ack().encode(&mut ping);
    write(&dir.join("server_connection"), "ping_settings_ack", &ping);
    let mut ping = Vec::new();
    Settings::new_ack().encode(&mut ping);
    Ping::new(*b"pingpong").encode(&mut ping);
    WindowUpdate::new(StreamId::new(1), 1 << 16).encode(&mut ping);
    write(&dir.join("client_connection"), "ack_ping_window", &ping);
}

fn service_config(dir: &Path) {
    let seeds: &[(&str, &str)] = &[
        ("round_robin", r#"[{"round_robin":{}}]"#),
        (
            "pick_first_shuffle",
            r#"[{"pick_first":{"shuffleAddressList":true}}]"#,
        ),
        (
            "unknown_then_known",
            r#"[{"grpclb":{"childPolicy":[{"pick_first":{}}]}},{"round_robin":{}}]"#,
        ),
        (
            "bad_field",
            r#"[{"pick_first":{"shuffleAddressList":"yes"}}]"#,
        ),
        ("duration", "1.500000001s"),
        ("duration_max", "315576000000s"),
    ];
    for (name, text) in seeds {
        write(dir, name, text.as_bytes());
    }
}

/// Health-check messages from our encoder, and one response as another
/// implementation may write it (an unknown field, the status twice).
fn health_codec(dir: &Path) {
    use lb_core::health::{self, ServingStatus};
    write(
        dir,
        "request",
        &health::encode_request("grpc.health.v1.Health"),
    );
    write(dir, "request_all", &health::encode_request(""));
    write(
        dir,
        "not_serving",
        &health::encode_response(ServingStatus::NotServing),
    );
    write(
        dir,
        "unknown_field_repeated",
        &[0x12, 0x01, b'x', 0x08, 0x02, 0x08, 0x01],
    );
}

/// ORCA messages from our encoder: a full report, a small one, and a request.
fn orca_codec(dir: &Path) {
    use lb_core::orca::{OrcaLoadReport, OrcaLoadReportRequest};
    let full = OrcaLoadReport {
        cpu_utilization: 0.25,
        mem_utilization: 0.5,
        rps: 7,
        request_cost: [("db".to_string(), 1.5)].into(),
        utilization: [("gpu".to_string(), 0.75)].into(),
        rps_fractional: 12.5,
        eps: 0.5,
        named_metrics: [("queue".to_string(), 3.0)].into(),
        application_utilization: 0.4,
    };
    write(dir, "report_full", &full.encode());
    let small = OrcaLoadReport {
        application_utilization: 0.2,
        rps_fractional: 100.0,
        ..Default::default()
    };
    write(dir, "report_small", &small.encode());
    let request = OrcaLoadReportRequest {
        report_interval: std::time::Duration::from_millis(1500),
        request_cost_names: vec!["db".into()],
    };
    write(dir, "request", &request.encode());
}

/// Encoded RLS messages, from our encoder, and one message as another implementation
/// may write it: fields out of order, repeated, and unknown fields of every wire type.
/// The target decodes each input as both messages.
fn rls_response(dir: &Path) {
    let responses = [
        (
            "response_one_target",
            RouteLookupResponse {
                targets: vec!["backend-a.example.com:443".into()],
                header_data: String::new(),
            },
        ),
        (
            "response_targets_header_data",
            RouteLookupResponse {
                targets: vec![
                    "dns:///backend-a.example.com".into(),
                    String::new(),
                    "ipv4:10.0.0.1:8080".into(),
                ],
                header_data: "shard=7;\u{e9}t\u{e9}".into(),
            },
        ),
    ];
    for (name, response) in responses {
        let bytes = response.to_bytes();
        assert_eq!(RouteLookupResponse::decode(&bytes), Ok(response));
        write(dir, name, &bytes);
    }
    let requests = [
        (
            "request_miss",
            RouteLookupRequest {
                target_type: "grpc".into(),
                reason: LookupReason::Miss,
                stale_header_data: String::new(),
                key_map: [("service", "pkg.Svc"), ("method", "Get"), ("shard", "7,8")]
                    .into_iter()
                    .collect::<KeyMap>(),
            },
        ),
        (
            "request_stale",
            RouteLookupRequest {
                target_type: "grpc".into(),
                reason: LookupReason::Stale,
                stale_header_data: "shard=7".into(),
                key_map: [("host", "example.com"), ("", "empty key")]
                    .into_iter()
                    .collect::<KeyMap>(),
            },
        ),
        (
            "request_unrecognized_reason",
            RouteLookupRequest {
                target_type: String::new(),
                reason: LookupReason::Unrecognized(-3),
                stale_header_data: String::new(),
                key_map: KeyMap::new(),
            },
        ),
    ];
    for (name, request) in requests {
        let bytes = request.to_bytes();
        assert_eq!(RouteLookupRequest::decode(&bytes), Ok(request));
        write(dir, name, &bytes);
    }
    // Response: targets, an unknown varint (field 9), header_data, an unknown fixed64
    // (field 10) and fixed32 (field 11), extensions (field 4, skipped), header_data
    // again (the last wins), a target with a two-byte length. As a request: field 3
    // is target_type (the last wins), field 2 is unknown.
    let mut handwritten =
        hex("1a01 61 4896 01 1202 6864 51 0102 0304 0506 0708 5d01 0203 04 2200 1203 6864 32");
    handwritten.extend_from_slice(&[0x1a, 0x80, 0x01]);
    handwritten.extend_from_slice(&[b'x'; 128]);
    let decoded = RouteLookupResponse::decode(&handwritten).expect("a valid response");
    assert_eq!(decoded.header_data, "hd2");
    assert_eq!(decoded.targets.len(), 2);
    RouteLookupRequest::decode(&handwritten).expect("a valid request too");
    write(dir, "response_unknown_fields", &handwritten);
}

/// `rls_experimental` configs: grpc-go's success cases with the child policies
/// registered without a transport (`pick_first`, `round_robin`, `rls_dial_target`),
/// and configs that each break one rule.
fn rls_config(dir: &Path) {
    let valid: &[(&str, &str)] = &[
        (
            "grpc_go_max_age_kept",
            r#"{"routeLookupConfig": {
  "grpcKeybuilders": [{"names": [{"service": "service", "method": "method"}],
                       "headers": [{"key": "k1", "names": ["v1"]}]}],
  "lookupService": ":///target",
  "maxAge": "500s",
  "staleAge": "600s",
  "cacheSizeBytes": 100000000,
  "defaultTarget": "passthrough:///default"},
 "childPolicy": [
  {"cds_experimental": {"Cluster": "my-fav-cluster"}},
  {"unknown-policy": {"unknown-field": "unknown-value"}},
  {"rls_dial_target": {"childPolicy": [{"pick_first": {}}]}}],
 "childPolicyConfigTargetFieldName": "target"}"#,
        ),
        (
            "every_field",
            r#"{"routeLookupConfig": {
  "grpcKeybuilders": [
   {"names": [{"service": "service", "method": "method"}],
    "headers": [{"key": "k1", "names": ["v1", "v2"]}],
    "extraKeys": {"host": "h", "service": "s", "method": "m"},
    "constantKeys": {"tier": "gold"}},
   {"names": [{"service": "other"}]}],
  "lookupService": "target",
  "lookupServiceTimeout": "100s",
  "maxAge": "60s",
  "staleAge": "50s",
  "cacheSizeBytes": 1000,
  "validTargets": ["ignored"],
  "defaultTarget": "passthrough:///default"},
 "routeLookupChannelServiceConfig": {"loadBalancingConfig": [{"pick_first": {}}]},
 "childPolicy": [{"round_robin": {}}],
 "childPolicyConfigTargetFieldName": "target"}"#,
        ),
        (
            "dial_target_dns",
            r#"{"routeLookupConfig": {
  "grpcKeybuilders": [{"names": [{"service": "google.bigtable.v2.Bigtable"}]}],
  "lookupService": "dns:///rls.example.com",
  "lookupServiceTimeout": "0.5s",
  "maxAge": "500s",
  "cacheSizeBytes": "1000000",
  "defaultTarget": "dns:///fallback.example.com:8443"},
 "childPolicy": [{"rls_dial_target": {"childPolicy": [{"round_robin": {}}]}}],
 "childPolicyConfigTargetFieldName": "target"}"#,
        ),
        (
            "proto_names_pick_first",
            r#"{"routeLookupConfig": {
  "grpc_keybuilders": [{"names": [{"service": "pkg.Svc", "method": "Get"}],
                        "extra_keys": {"host": "host"}}],
  "lookup_service": "ipv4:127.0.0.1:10000",
  "cache_size_bytes": 4096},
 "childPolicy": [{"unknown": {}}, {"pick_first": {"shuffleAddressList": true}}],
 "childPolicyConfigTargetFieldName": "serviceName"}"#,
        ),
    ];
    let invalid: &[(&str, &str, &str)] = &[
        (
            "invalid_cache_size_zero",
            r#"{"routeLookupConfig": {
  "grpcKeybuilders": [{"names": [{"service": "pkg.Svc"}]}],
  "lookupService": "dns:///rls.example.com",
  "cacheSizeBytes": 0},
 "childPolicy": [{"round_robin": {}}],
 "childPolicyConfigTargetFieldName": "target"}"#,
            "routeLookupConfig.cacheSizeBytes: must be greater than 0",
        ),
        (
            "invalid_stale_age_without_max_age",
            r#"{"routeLookupConfig": {
  "grpcKeybuilders": [{"names": [{"service": "pkg.Svc"}],
                       "headers": [{"key": "k", "names": ["n"], "requiredMatch": false}]}],
  "lookupService": "passthrough:///rls",
  "staleAge": "50s",
  "cacheSizeBytes": 1000},
 "childPolicy": [{"pick_first": {}}],
 "childPolicyConfigTargetFieldName": "target"}"#,
            "routeLookupConfig.staleAge: is set, but maxAge is not",
        ),
        (
            "invalid_dial_target_child",
            r#"{"routeLookupConfig": {
  "grpcKeybuilders": [{"names": [{"service": "pkg.Svc"}]}],
  "lookupService": "unix:///tmp/rls.sock",
  "cacheSizeBytes": 1000},
 "childPolicy": [{"rls_dial_target": {"childPolicy": [{"unknown": {}}]}}],
 "childPolicyConfigTargetFieldName": "target"}"#,
            "childPolicy",
        ),
    ];
    let mut registry = LbPolicyRegistry::with_builtins();
    registry.register(DialTargetBuilder::new());
    let options = RlsConfigOptions::default();
    for (name, text) in valid {
        if let Err(e) = RlsConfig::parse_text(text, &registry, &options) {
            panic!("seed {name} does not parse: {e}");
        }
        write(dir, name, text.as_bytes());
    }
    for (name, text, error) in invalid {
        match RlsConfig::parse_text(text, &registry, &options) {
            Ok(_) => panic!("seed {name} parses"),
            Err(e) => assert!(e.to_string().starts_with(error), "seed {name}: {e}"),
        }
        write(dir, name, text.as_bytes());
    }
}
