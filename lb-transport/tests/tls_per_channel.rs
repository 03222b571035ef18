//! TLS is a per-channel choice: one `H2Transport` carries a TLS channel to a grpcio
//! (C-core) TLS server and a plaintext channel to a grpcio plaintext server at the
//! same time, each channel choosing with `ChannelSecurity` (or taking the
//! transport's default).
#![cfg(feature = "tls")]

use std::sync::Arc;
use std::time::Duration;

use lb_core::channel::{CallOptions, Channel};
use lb_core::{Code, ConnectivityState};
use lb_testkit::peers::{self, GrpcServer, GrpcServerOptions};
use lb_transport::driver::tls::TlsConfig;
use lb_transport::driver::{ChannelSecurity, H2Transport, TransportConfig};

const ECHO: &str = "/bench.Echo/Unary";

fn options() -> CallOptions {
    CallOptions::default()
        .with_timeout(Duration::from_secs(20))
        .with_wait_for_ready(true)
}

#[test]
fn one_transport_serves_a_tls_channel_and_a_plaintext_channel_at_once() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let dir = env.temp_dir("tls-per-channel").unwrap();
    let (cert, key) = peers::self_signed_cert(dir.path()).unwrap();
    let tls_server = GrpcServer::start(
        &env,
        GrpcServerOptions {
            tls: Some((cert.clone(), key)),
            ..GrpcServerOptions::default()
        },
    )
    .unwrap();
    let plain_server = GrpcServer::start(&env, GrpcServerOptions::default()).unwrap();
    let tls = TlsConfig::with_root_pem(&std::fs::read(&cert).unwrap()).unwrap();

    // Plaintext unless a channel says otherwise.
    let transport = Arc::new(H2Transport::new(TransportConfig::default()).unwrap());
    let secure = Channel::builder(format!("ipv4:{}", tls_server.target()))
        .transport(transport.clone())
        .authority(format!("localhost:{}", tls_server.addr().port()))
        .transport_option(ChannelSecurity::Tls(tls.clone()))
        .build()
        .unwrap();
    let plain = Channel::builder(format!("ipv4:{}", plain_server.target()))
        .transport(transport.clone())
        .build()
        .unwrap();
    // Interleaved, so both connections are open on the one I/O thread together.
    for i in 0..4u8 {
        let message = vec![i; 1000];
        let r = secure
            .unary(ECHO, message.clone(), options())
            .expect("TLS call");
        assert_eq!(r.message, message);
        let r = plain
            .unary(ECHO, message.clone(), options())
            .expect("plaintext call");
        assert_eq!(r.message, message);
    }
    assert_eq!(secure.state(false), ConnectivityState::Ready);
    assert_eq!(plain.state(false), ConnectivityState::Ready);

    // The choice is the channel's: the same transport speaking TLS to the
    // plaintext server fails, and plaintext to the TLS server fails.
    for (target, security) in [
        (plain_server.target(), ChannelSecurity::Tls(tls)),
        (tls_server.target(), ChannelSecurity::Plaintext),
    ] {
        let wrong = Channel::builder(format!("ipv4:{target}"))
            .transport(transport.clone())
            .authority(format!("localhost:{}", target.rsplit(':').next().unwrap()))
            .transport_option(security.clone())
            .build()
            .unwrap();
        let options = CallOptions::default().with_timeout(Duration::from_secs(10));
        let err = wrong.unary(ECHO, vec![1], options).unwrap_err();
        assert_eq!(
            err.code(),
            Code::Unavailable,
            "{security:?} to {target}: {err}"
        );
        wrong.close();
    }

    // A transport whose default is TLS still serves a channel that asks for
    // plaintext.
    let tls_default = Arc::new(
        H2Transport::new(TransportConfig {
            tls: Some(TlsConfig::with_webpki_roots()),
            ..TransportConfig::default()
        })
        .unwrap(),
    );
    let plain_on_tls_default = Channel::builder(format!("ipv4:{}", plain_server.target()))
        .transport(tls_default)
        .transport_option(ChannelSecurity::Plaintext)
        .build()
        .unwrap();
    let r = plain_on_tls_default
        .unary(ECHO, b"plain".to_vec(), options())
        .expect("plaintext on a TLS-default transport");
    assert_eq!(r.message, b"plain");
    plain_on_tls_default.close();
    secure.close();
    plain.close();
}
