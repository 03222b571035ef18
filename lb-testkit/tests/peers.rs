//! The real-peer harness proven against itself: grpcio client against grpcio
//! server (plaintext and TLS, graceful stop, restart), and nghttp2's client and
//! load generator against `nghttpd`. Our own transport is tested against these
//! same peers elsewhere, so this shows the harness is sound on its own.
//!
//! Each test needs the peers that `cargo xtask test` installs; see
//! [`lb_testkit::peers::require_peers`].

use std::fs;
use std::time::Duration;

use lb_testkit::peers::{
    self, ClientTls, GrpcServer, GrpcServerOptions, Nghttpd, PeerEnv, h2load_succeeded,
};

/// Every case of `grpc_client.py` that needs no argument.
const CASES: &[&str] = &[
    "unary_16b",
    "unary_1mib",
    "unary_4mib",
    "metadata",
    "status",
    "deadline",
    "who",
];

/// Runs every case against `target` at once and checks that each passed.
fn every_case_passes(env: &PeerEnv, target: &str, tls: Option<&ClientTls>, id: &str) {
    let runs: Vec<_> = CASES
        .iter()
        .map(|case| peers::spawn_grpc_client(env, target, case, tls).unwrap())
        .collect();
    for (case, run) in CASES.iter().zip(runs) {
        let outcome = run.wait(Duration::from_secs(60)).unwrap();
        assert!(outcome.passed, "case {case} failed: {outcome:?}");
        if *case == "who" {
            assert_eq!(outcome.report["id"], id, "{outcome:?}");
        }
        if *case == "metadata" {
            assert_eq!(outcome.report["server_id"], id, "{outcome:?}");
        }
    }
}

#[test]
fn grpcio_client_passes_every_case_against_grpcio_server() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let options = GrpcServerOptions {
        id: "plain-1".into(),
        ..GrpcServerOptions::default()
    };
    let server = GrpcServer::start(&env, options).unwrap();
    assert!(server.addr().ip().is_loopback());
    every_case_passes(&env, &server.target(), None, "plain-1");
}

#[test]
fn grpcio_client_passes_every_case_over_tls_with_a_self_signed_cert() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let dir = env.temp_dir("certs").unwrap();
    let (cert, key) = peers::self_signed_cert(dir.path()).unwrap();
    let options = GrpcServerOptions {
        id: "tls-1".into(),
        tls: Some((cert.clone(), key)),
        ..GrpcServerOptions::default()
    };
    let server = GrpcServer::start(&env, options).unwrap();
    // The certificate names 127.0.0.1, so the target alone verifies.
    let by_ip = ClientTls {
        ca: cert.clone(),
        authority: None,
    };
    every_case_passes(&env, &server.target(), Some(&by_ip), "tls-1");
    let by_name = ClientTls {
        ca: cert,
        authority: Some("localhost".into()),
    };
    let outcome = peers::run_grpc_client(&env, &server.target(), "who", Some(&by_name)).unwrap();
    assert!(outcome.passed, "{outcome:?}");
    assert_eq!(outcome.report["tls"], true);
}

#[test]
fn tls_with_the_wrong_name_fails_verification() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let dir = env.temp_dir("certs").unwrap();
    let (cert, key) = peers::self_signed_cert(dir.path()).unwrap();
    let options = GrpcServerOptions {
        tls: Some((cert.clone(), key)),
        ..GrpcServerOptions::default()
    };
    let server = GrpcServer::start(&env, options).unwrap();
    let wrong = ClientTls {
        ca: cert,
        authority: Some("not-localhost.invalid".into()),
    };
    let outcome = peers::run_grpc_client(&env, &server.target(), "who", Some(&wrong)).unwrap();
    assert!(!outcome.passed, "{outcome:?}");
    assert_eq!(outcome.report["code"], "UNAVAILABLE", "{outcome:?}");
}

#[test]
fn graceful_stop_lets_an_in_flight_call_finish() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let options = GrpcServerOptions {
        log_calls: true,
        ..GrpcServerOptions::default()
    };
    let mut server = GrpcServer::start(&env, options).unwrap();
    let call = peers::spawn_grpc_client(&env, &server.target(), "sleep_1000", None).unwrap();
    server
        .wait_for_line("CALL /test.Echo/Sleep", Duration::from_secs(20))
        .unwrap();
    let status = server.stop_graceful().unwrap();
    assert!(status.success(), "server exited with {status}");
    let outcome = call.wait(Duration::from_secs(20)).unwrap();
    assert!(outcome.passed, "{outcome:?}");
    assert!(
        outcome.report["elapsed_ms"].as_u64() >= Some(900),
        "{outcome:?}"
    );
}

#[test]
fn a_restarted_server_serves_again_on_the_same_port() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let options = GrpcServerOptions {
        id: "again".into(),
        ..GrpcServerOptions::default()
    };
    let mut server = GrpcServer::start(&env, options).unwrap();
    let addr = server.addr();
    let before = peers::run_grpc_client(&env, &server.target(), "who", None).unwrap();
    assert!(before.passed, "{before:?}");

    server.kill();
    let down = peers::run_grpc_client(&env, &server.target(), "unary_16b", None).unwrap();
    assert!(!down.passed, "a killed server answered: {down:?}");

    server.restart().unwrap();
    assert_eq!(server.addr(), addr);
    let after = peers::run_grpc_client(&env, &server.target(), "who", None).unwrap();
    assert!(after.passed, "{after:?}");
    assert_eq!(after.report["id"], "again");
}

#[test]
fn nghttp_fetches_a_file_from_nghttpd_over_h2c() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let docroot = env.temp_dir("www").unwrap();
    let body = "hello over HTTP/2\n".repeat(4096);
    fs::write(docroot.path().join("hello.txt"), &body).unwrap();
    let server = Nghttpd::start(&env, docroot.path(), &[]).unwrap();
    assert!(server.addr().ip().is_loopback());

    let out = peers::run_nghttp(
        &env,
        &["-t", "10", &server.url("hello.txt")],
        Duration::from_secs(20),
    )
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout.len(), body.len());
    assert!(out.stdout == body, "nghttp printed something else");

    let missing = peers::run_nghttp(
        &env,
        &["-t", "10", "-s", &server.url("missing.txt")],
        Duration::from_secs(20),
    )
    .unwrap();
    assert!(missing.stdout.contains("404"), "{missing:?}");
}

#[test]
fn h2load_completes_100_requests_against_nghttpd() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let docroot = env.temp_dir("www").unwrap();
    fs::write(docroot.path().join("index.html"), "<p>hi</p>\n").unwrap();
    let server = Nghttpd::start(&env, docroot.path(), &[]).unwrap();

    let out = peers::run_h2load(
        &env,
        &["-n", "100", "-c", "2", &server.url("index.html")],
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(h2load_succeeded(&out.stdout), Some(100), "{}", out.stdout);
}
