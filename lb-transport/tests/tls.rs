//! Our client over TLS (the `tls` feature) against a grpcio (C-core) TLS server with a
//! self-signed certificate: verification succeeds with the certificate as root and
//! the right name, and fails otherwise.
#![cfg(feature = "tls")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded, unbounded};
use lb_core::transport::{CallRequest, ConnectOptions, ConnectionEvent};
use lb_core::{Address, Code, Connection, ConnectionExt, Transport};
use lb_testkit::peers::{self, GrpcServer, GrpcServerOptions};
use lb_transport::driver::tls::TlsConfig;
use lb_transport::driver::{H2Transport, TransportConfig};

const WAIT: Duration = Duration::from_secs(20);

fn connect(
    tls: TlsConfig,
    address: &str,
    authority: &str,
) -> (H2Transport, Arc<dyn Connection>, Receiver<ConnectionEvent>) {
    let transport = H2Transport::new(TransportConfig {
        tls: Some(tls),
        ..TransportConfig::default()
    })
    .unwrap();
    let (tx, events) = unbounded();
    let opts = ConnectOptions {
        authority: authority.into(),
        connect_deadline: Instant::now() + WAIT,
        user_agent: "tls-test".into(),
        transport_options: Default::default(),
    };
    let sink = Arc::new(move |e| {
        let _ = tx.send(e);
    });
    let conn = transport
        .connect(&Address::new(address), &opts, sink)
        .unwrap();
    (transport, conn, events)
}

#[test]
fn unary_calls_over_tls_with_a_self_signed_certificate() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let dir = env.temp_dir("tls-client").unwrap();
    let (cert, key) = peers::self_signed_cert(dir.path()).unwrap();
    let server = GrpcServer::start(
        &env,
        GrpcServerOptions {
            tls: Some((cert.clone(), key)),
            ..GrpcServerOptions::default()
        },
    )
    .unwrap();
    let pem = std::fs::read(&cert).unwrap();
    let port = server.addr().port();

    // Verified as "localhost", as the certificate names it.
    let tls = TlsConfig::with_root_pem(&pem).unwrap();
    let (_t, conn, events) = connect(tls, &server.target(), &format!("localhost:{port}"));
    assert_eq!(events.recv_timeout(WAIT), Ok(ConnectionEvent::Ready));
    for len in [16, 1 << 20, 4 << 20] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let (tx, rx) = bounded(1);
        conn.start_call(
            CallRequest::new("/bench.Echo/Unary", payload.clone()),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        let r = rx.recv_timeout(WAIT).unwrap().unwrap();
        assert!(r.message == payload, "{len}-byte echo over TLS");
    }
}

#[test]
fn a_certificate_for_another_name_or_an_unknown_root_is_refused() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let dir = env.temp_dir("tls-client-bad").unwrap();
    let (cert, key) = peers::self_signed_cert(dir.path()).unwrap();
    let server = GrpcServer::start(
        &env,
        GrpcServerOptions {
            tls: Some((cert.clone(), key)),
            ..GrpcServerOptions::default()
        },
    )
    .unwrap();
    let pem = std::fs::read(&cert).unwrap();
    let port = server.addr().port();
    let cases = [
        (
            TlsConfig::with_root_pem(&pem).unwrap(),
            format!("wrong.example:{port}"),
            "does not name the host this channel connects to",
        ),
        (
            TlsConfig::with_webpki_roots(),
            format!("localhost:{port}"),
            "not signed by a root this client trusts",
        ),
    ];
    for (tls, authority, advice) in cases {
        let (_t, _conn, events) = connect(tls, &server.target(), &authority);
        match events.recv_timeout(WAIT) {
            Ok(ConnectionEvent::Closed(Some(s))) => {
                assert_eq!(s.code(), Code::Unavailable);
                assert!(s.message().contains("certificate"), "{authority}: {s}");
                // Advice first, rustls's own text only after it.
                assert!(s.message().contains(advice), "{authority}: {s}");
                println!("{authority}: {s}");
            }
            other => panic!("{authority}: {other:?}"),
        }
    }
}
