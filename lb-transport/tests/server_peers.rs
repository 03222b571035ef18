//! Our gRPC server against clients we did not write: grpcio (gRPC C-core) running
//! `xtask/peers/grpc_client.py`, nghttp2's `nghttp` and its load generator `h2load`.
//!
//! Each test needs the peers that `cargo xtask test` installs; without them it
//! fails when `LB_REQUIRE_PEERS=1` and otherwise skips loudly (see
//! [`lb_testkit::peers::require_peers`]).

use std::fs;
use std::time::{Duration, Instant};

use lb_testkit::peers::{self, PeerEnv, h2load_succeeded};
use lb_transport::server::{Request, Response, Server};

/// How long one tool run may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

fn our_server(id: &str) -> Server {
    Server::builder()
        .id(id)
        .echo_bench()
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
