//! Our server over TLS (the `tls` feature) against grpcio's (gRPC C-core) client,
//! with a self-signed certificate: every client case passes, verified as `localhost`.
#![cfg(feature = "tls")]

use std::time::Duration;

use lb_testkit::peers::{self, ClientTls};
use lb_transport::driver::tls::TlsServerConfig;
use lb_transport::server::Server;

#[test]
fn grpcio_client_cases_pass_against_our_tls_server() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let dir = env.temp_dir("tls-server").unwrap();
    let (cert, key) = peers::self_signed_cert(dir.path()).unwrap();
    let tls = TlsServerConfig::from_pem(
        &std::fs::read(&cert).unwrap(),
        &std::fs::read(&key).unwrap(),
    )
    .unwrap();
    let server = lb_testkit::services::mount(Server::builder(), "ours-tls")
        .tls(tls)
        .bind("127.0.0.1:0")
        .unwrap();
    let client_tls = ClientTls {
        ca: cert,
        authority: Some("localhost".into()),
    };
    let target = server.local_addr().to_string();
    let cases = [
        "unary_16b",
        "unary_1mib",
        "unary_4mib",
        "metadata",
        "status",
        "deadline",
        "who",
    ];
    let runs: Vec<_> = cases
        .iter()
        .map(|case| peers::spawn_grpc_client(&env, &target, case, Some(&client_tls)).unwrap())
        .collect();
    for (case, run) in cases.iter().zip(runs) {
        let outcome = run.wait(Duration::from_secs(60)).unwrap();
        assert!(outcome.passed, "case {case} over TLS failed: {outcome:?}");
    }
    // Plaintext to a TLS server fails; the server stays up.
    let outcome = peers::run_grpc_client(&env, &target, "who", None).unwrap();
    assert!(
        !outcome.passed,
        "plaintext must not work against a TLS server"
    );
    let outcome = peers::run_grpc_client(&env, &target, "who", Some(&client_tls)).unwrap();
    assert!(outcome.passed, "{outcome:?}");
}

#[test]
fn bad_key_material_is_a_clear_error() {
    let err = TlsServerConfig::from_pem(b"", b"").unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
}
