//! Our gRPC server against clients we did not write: grpcio (gRPC C-core) running
//! `xtask/peers/grpc_client.py` (unary calls) and `grpc_stream_client.py`
//! (server-streaming, client-streaming and bidirectional calls), nghttp2's `nghttp`
//! and its load generator `h2load`.
//!
//! Each test needs the peers that `cargo xtask test` installs; without them it
//! fails when `LB_REQUIRE_PEERS=1` and otherwise skips loudly (see
//! [`lb_testkit::peers::require_peers`]).

use std::fs;
use std::time::{Duration, Instant};

use lb_core::{Code, Metadata, Status};
use lb_testkit::peers::{self, PeerEnv, h2load_succeeded};
use lb_testkit::services;
use lb_transport::server::{Request, Response, Server, ServerCall};

/// How long one tool run may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

fn our_server(id: &str) -> Server {
    services::mount(Server::builder(), id)
        .bind("127.0.0.1:0")
        .expect("bind")
}

/// Runs one case of the grpcio client against a fresh server of ours.
fn grpcio_case_passes(env: &PeerEnv, case: &str) -> serde_json::Value {
    let server = our_server("ours");
    let target = server.local_addr().to_string();
    let outcome = peers::run_grpc_client(env, &target, case, None).unwrap();
    assert!(outcome.passed, "case {case} failed: {outcome:?}");
    outcome.report
}

#[test]
fn grpcio_client_unary_16b() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    grpcio_case_passes(&env, "unary_16b");
}

#[test]
fn grpcio_client_unary_1mib() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    grpcio_case_passes(&env, "unary_1mib");
}

#[test]
fn grpcio_client_unary_4mib() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    grpcio_case_passes(&env, "unary_4mib");
}

#[test]
fn grpcio_client_metadata() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let report = grpcio_case_passes(&env, "metadata");
    assert_eq!(report["server_id"], "ours", "{report}");
}

#[test]
fn grpcio_client_status() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    grpcio_case_passes(&env, "status");
}

#[test]
fn grpcio_client_deadline() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    grpcio_case_passes(&env, "deadline");
}

#[test]
fn grpcio_client_who() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let report = grpcio_case_passes(&env, "who");
    assert_eq!(report["id"], "ours", "{report}");
}

#[test]
fn grpcio_client_call_in_flight_survives_graceful_shutdown() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let (entered_tx, entered) = crossbeam_channel::unbounded();
    let server = Server::builder()
        .unary("/test.Echo/Sleep", move |req: Request| {
            entered_tx.send(()).unwrap();
            // The client asks for 1000 ms; shutdown must not cut this short.
            let until = Instant::now() + Duration::from_millis(1000);
            assert!(
                !req.wait_cancelled(until),
                "cancelled by a graceful shutdown"
            );
            Ok(Response::new(req.message))
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let target = server.local_addr().to_string();
    let call = peers::spawn_grpc_client(&env, &target, "sleep_1000", None).unwrap();
    entered
        .recv_timeout(TOOL_TIMEOUT)
        .expect("the call reached the handler");
    server.shutdown(Duration::from_secs(10));
    let outcome = call.wait(TOOL_TIMEOUT).unwrap();
    assert!(outcome.passed, "{outcome:?}");
}

#[test]
fn nghttp_get_is_answered_with_text() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let server = our_server("ours");
    let url = format!("http://{}/", server.local_addr());
    let out = peers::run_nghttp(&env, &["-t", "10", &url], TOOL_TIMEOUT).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("gRPC server"), "{out:?}");

    let stat = peers::run_nghttp(&env, &["-t", "10", "-s", &url], TOOL_TIMEOUT).unwrap();
    assert!(stat.stdout.contains("200"), "{stat:?}");
}

#[test]
fn h2load_grpc_posts_all_succeed() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let server = our_server("ours");
    let dir = env.temp_dir("h2load").unwrap();
    // bench.Msg { bytes payload = 1; } with 32 bytes, behind the 5-byte prefix.
    let mut msg = vec![0x0a, 32];
    msg.extend(0..32u8);
    let mut body = vec![0];
    body.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&msg);
    let data = dir.path().join("request.bin");
    fs::write(&data, &body).unwrap();
    let url = format!("http://{}/bench.Echo/Unary", server.local_addr());
    let data = data.to_str().unwrap();
    let out = peers::run_h2load(
        &env,
        &[
            "-n",
            "1000",
            "-c",
            "4",
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "-d",
            data,
            &url,
        ],
        TOOL_TIMEOUT,
    )
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(h2load_succeeded(&out.stdout), Some(1000), "{}", out.stdout);
}

// ----- Streaming calls from grpcio's client -----

/// How long one streaming client run may take.
const STREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs one streaming call of `grpc_stream_client.py` against `server`.
fn stream_client(env: &PeerEnv, server: &Server, args: &[&str]) -> serde_json::Value {
    let target = server.local_addr().to_string();
    peers::run_grpc_stream_client(env, &target, args, STREAM_TIMEOUT).unwrap()
}

/// Whether grpcio's report lists `key` with `value` in the metadata `which`
/// (`initial` or `trailing`).
fn has_metadata(report: &serde_json::Value, which: &str, key: &str, value: &str) -> bool {
    report[which]
        .as_array()
        .is_some_and(|md| md.iter().any(|kv| kv[0] == key && kv[1] == value))
}

fn metadata(pairs: &[(&str, &str)]) -> Metadata {
    let mut md = Metadata::new();
    for (k, v) in pairs {
        md.insert(k, v).unwrap();
    }
    md
}

/// The stream services the grpcio tests call, reporting how their calls ended on
/// `ended` (the code `recv` or `send` failed with, or OK).
fn stream_server(ended: crossbeam_channel::Sender<Code>) -> Server {
    let ended_count = ended.clone();
    let ended_wait = ended.clone();
    Server::builder()
        // "N": N messages `m0`, `m1`, … with metadata in the headers and trailers.
        .server_streaming("/t.S/Count", |request, call: &mut ServerCall| {
            let n: usize = std::str::from_utf8(&request)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| Status::invalid_argument("not a number"))?;
            call.send_headers(metadata(&[("x-head", "h")]))?;
            for i in 0..n {
                call.send(format!("m{i}").as_bytes())?;
            }
            let mut trailers = metadata(&[("x-tail", "t")]);
            trailers.insert_bin("x-tail-bin", &[0, 1, 0xff]).unwrap();
            call.set_trailers(trailers);
            Ok(())
        })
        // Sends until it fails (at most 100 000 messages).
        .server_streaming("/t.S/Forever", move |_request, call: &mut ServerCall| {
            for i in 0..100_000u32 {
                if let Err(status) = call.send(&i.to_be_bytes()) {
                    ended.send(status.code()).unwrap();
                    return Err(status);
                }
            }
            ended.send(Code::Ok).unwrap();
            Ok(())
        })
        // Three messages, then ABORTED with trailers metadata.
        .server_streaming("/t.S/FailLate", |_request, call: &mut ServerCall| {
            for i in 0..3 {
                call.send(format!("m{i}").as_bytes())?;
            }
            call.set_trailers(metadata(&[("x-why", "because")]));
            Err(Status::new(Code::Aborted, "stop é 100%"))
        })
        // The number of messages and their total size.
        .client_streaming("/t.S/Sum", move |call: &mut ServerCall| {
            let (mut count, mut total) = (0, 0);
            loop {
                match call.recv() {
                    Ok(Some(m)) => {
                        count += 1;
                        total += m.len();
                    }
                    Ok(None) => break,
                    Err(status) => {
                        ended_count.send(status.code()).unwrap();
                        return Err(status);
                    }
                }
            }
            ended_count.send(Code::Ok).unwrap();
            Ok(format!("{count} {total}").into_bytes())
        })
        // An echo, the count in the trailers.
        .bidi_streaming("/t.S/Chat", |call: &mut ServerCall| {
            let mut n = 0;
            while let Some(message) = call.recv()? {
                call.send(&message)?;
                n += 1;
            }
            call.set_trailers(metadata(&[("x-count", &n.to_string())]));
            Ok(())
        })
        // Takes messages and never answers.
        .bidi_streaming("/t.S/Silent", move |call: &mut ServerCall| {
            loop {
                if let Err(status) = call.recv() {
                    ended_wait.send(status.code()).unwrap();
                    return Err(status);
                }
            }
        })
        .workers(4)
        .bind("127.0.0.1:0")
        .unwrap()
}

#[test]
fn grpcio_client_server_streaming_with_headers_and_trailers_metadata() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let (ended, _) = crossbeam_channel::unbounded();
    let server = stream_server(ended);
    let args = [
        "--kind",
        "server",
        "--method",
        "/t.S/Count",
        "--request",
        "200",
    ];
    let report = stream_client(&env, &server, &args);
    assert_eq!(report["code"], "OK", "{report}");
    assert_eq!(report["received"], 200, "{report}");
    assert_eq!(report["first"], serde_json::json!(["m0", "m1", "m2"]));
    assert!(has_metadata(&report, "initial", "x-head", "h"), "{report}");
    assert!(has_metadata(&report, "trailing", "x-tail", "t"), "{report}");
    assert!(
        has_metadata(&report, "trailing", "x-tail-bin", "0001ff"),
        "{report}"
    );
}

#[test]
fn grpcio_client_client_streaming() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let (ended, seen) = crossbeam_channel::unbounded();
    let server = stream_server(ended);
    let args = [
        "--kind", "client", "--method", "/t.S/Sum", "--count", "100", "--size", "1000",
    ];
    let report = stream_client(&env, &server, &args);
    assert_eq!(report["code"], "OK", "{report}");
    assert_eq!(report["response"], "100 100000", "{report}");
    assert_eq!(seen.recv_timeout(STREAM_TIMEOUT), Ok(Code::Ok));
}

#[test]
fn grpcio_client_bidi_echo_in_lockstep() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let (ended, _) = crossbeam_channel::unbounded();
    let server = stream_server(ended);
    let args = [
        "--kind",
        "bidi",
        "--method",
        "/t.S/Chat",
        "--count",
        "50",
        "--size",
        "3000",
    ];
    let report = stream_client(&env, &server, &args);
    assert_eq!(report["code"], "OK", "{report}");
    assert_eq!(report["received"], 50, "{report}");
    assert_eq!(report["echo_ok"], true, "{report}");
    assert!(
        has_metadata(&report, "trailing", "x-count", "50"),
        "{report}"
    );
}

#[test]
fn grpcio_client_cancelling_mid_stream_cancels_the_handler() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let (ended, seen) = crossbeam_channel::unbounded();
    let server = stream_server(ended);
    // Server-streaming: the client cancels after five responses; the handler's
    // next send fails.
    let args = [
        "--kind",
        "server",
        "--method",
        "/t.S/Forever",
        "--cancel-after",
        "5",
    ];
    let report = stream_client(&env, &server, &args);
    assert_eq!(report["code"], "CANCELLED", "{report}");
    assert_eq!(report["received"], 5, "{report}");
    assert_eq!(seen.recv_timeout(STREAM_TIMEOUT), Ok(Code::Cancelled));
    // Client-streaming: the client cancels after three messages; the handler's
    // recv fails.
    let args = [
        "--kind",
        "client",
        "--method",
        "/t.S/Sum",
        "--count",
        "10",
        "--cancel-after",
        "3",
    ];
    let report = stream_client(&env, &server, &args);
    assert_eq!(report["code"], "CANCELLED", "{report}");
    assert_eq!(seen.recv_timeout(STREAM_TIMEOUT), Ok(Code::Cancelled));
}

#[test]
fn grpcio_client_deadline_on_a_stream_reaches_the_handler() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let (ended, seen) = crossbeam_channel::unbounded();
    let server = stream_server(ended);
    let args = [
        "--kind",
        "bidi",
        "--method",
        "/t.S/Silent",
        "--count",
        "1",
        "--timeout",
        "0.5",
    ];
    let report = stream_client(&env, &server, &args);
    assert_eq!(report["code"], "DEADLINE_EXCEEDED", "{report}");
    assert!(report["elapsed_ms"].as_u64().unwrap() >= 500, "{report}");
    // Our timer and the client's reset race: the handler sees one or the other.
    let code = seen.recv_timeout(STREAM_TIMEOUT).unwrap();
    assert!(
        matches!(code, Code::DeadlineExceeded | Code::Cancelled),
        "{code:?}"
    );
}

#[test]
fn grpcio_client_sees_a_handler_error_after_messages_with_trailers() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let (ended, _) = crossbeam_channel::unbounded();
    let server = stream_server(ended);
    let args = ["--kind", "server", "--method", "/t.S/FailLate"];
    let report = stream_client(&env, &server, &args);
    assert_eq!(report["received"], 3, "{report}");
    assert_eq!(report["code"], "ABORTED", "{report}");
    assert_eq!(report["details"], "stop é 100%", "{report}");
    assert!(
        has_metadata(&report, "trailing", "x-why", "because"),
        "{report}"
    );
}
