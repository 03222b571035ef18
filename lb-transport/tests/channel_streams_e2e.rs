//! Every kind of call through a `Channel` with round_robin on our HTTP/2 transport,
//! against three grpcio (gRPC C-core) backends and against three of our own
//! servers answering the same methods (`lb_testkit::services`): each call is picked
//! once and served whole by one backend, and six calls of a kind reach each of the
//! three backends twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_core::channel::{CallOptions, Channel};
use lb_core::{Code, Metadata};
use lb_testkit::peers::{self, GrpcServer, GrpcServerOptions};
use lb_testkit::services::{self, STREAM_BIDI, STREAM_CLIENT, STREAM_SERVER, stream_message};
use lb_transport::driver::{H2Transport, TransportConfig};
use lb_transport::server::Server;

const WAIT: Duration = Duration::from_secs(20);

fn options() -> CallOptions {
    CallOptions::default().with_timeout(WAIT)
}

fn channel(targets: &[String]) -> Channel {
    let transport = Arc::new(H2Transport::new(TransportConfig::default()).unwrap());
    Channel::builder(format!("ipv4:{}", targets.join(",")))
        .transport(transport)
        .default_service_config(r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#)
        .build()
        .unwrap()
}

/// Calls until every backend has answered once (bounded), so all are READY and
/// round_robin cycles over all three.
fn warm_up(channel: &Channel, n: usize) {
    let deadline = Instant::now() + WAIT;
    let mut seen = std::collections::HashSet::new();
    while seen.len() < n {
        assert!(Instant::now() < deadline, "only {seen:?} became ready");
        if let Ok(r) = channel.unary(services::WHO, Vec::new(), options()) {
            seen.insert(r.message);
        }
    }
}

fn server_id(headers: &Metadata) -> String {
    headers.get("x-server-id").expect("x-server-id").to_owned()
}

fn assert_spread(kind: &str, ids: &[String]) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in ids {
        *counts.entry(id).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{kind}: {counts:?}");
    assert!(counts.values().all(|&n| n == 2), "{kind}: {counts:?}");
}

/// The scenario, the same for either set of backends.
fn every_kind_of_call(targets: &[String]) {
    let channel = channel(targets);
    warm_up(&channel, targets.len());

    // Server streaming: every message in order from one backend, then trailers.
    let mut ids = Vec::new();
    for _ in 0..6 {
        let mut md = Metadata::new();
        md.insert("x-trace", "t1").unwrap();
        let mut call = channel
            .server_streaming(STREAM_SERVER, "50 100", options().with_metadata(md))
            .unwrap();
        ids.push(server_id(&call.headers().unwrap()));
        for (i, m) in call.by_ref().enumerate() {
            assert_eq!(m.unwrap(), stream_message(i, 100), "message {i}");
        }
        assert_eq!(call.trailers().unwrap().get("x-trace"), Some("t1"));
    }
    assert_spread("server streaming", &ids);

    // Client streaming: many messages, one answer.
    let mut ids = Vec::new();
    for _ in 0..6 {
        let call = channel.client_streaming(STREAM_CLIENT, options()).unwrap();
        for _ in 0..10 {
            call.send(vec![7u8; 1000]).unwrap();
        }
        let response = call.finish().unwrap();
        assert_eq!(response.message, b"10 10000");
        ids.push(server_id(&response.headers));
    }
    assert_spread("client streaming", &ids);

    // Bidi: ping-pong, the halves on two threads.
    let mut ids = Vec::new();
    for _ in 0..6 {
        let call = channel.bidi_streaming(STREAM_BIDI, options()).unwrap();
        let (tx, rx) = call.split();
        let writer = std::thread::spawn(move || {
            for i in 0..20 {
                tx.send(format!("ping {i}")).unwrap();
            }
            tx.close_send();
        });
        ids.push(server_id(&rx.headers().unwrap()));
        let got: Vec<Vec<u8>> = rx.map(Result::unwrap).collect();
        writer.join().unwrap();
        let want: Vec<Vec<u8>> = (0..20).map(|i| format!("ping {i}").into_bytes()).collect();
        assert_eq!(got, want);
    }
    assert_spread("bidi", &ids);

    // A failure after messages carries the trailers.
    let mut md = Metadata::new();
    md.insert("x-status-code", "9").unwrap();
    md.insert("x-why", "on purpose").unwrap();
    let mut call = channel
        .server_streaming(STREAM_SERVER, "3 10", options().with_metadata(md))
        .unwrap();
    for i in 0..3 {
        assert_eq!(call.next().unwrap().unwrap(), stream_message(i, 10));
    }
    let status = call.next().unwrap().unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status}");
    assert_eq!(status.trailers().get("x-why"), Some("on purpose"));

    // Dropping a call mid-stream cancels it; the channel carries on.
    let mut call = channel
        .server_streaming(STREAM_SERVER, "100000 1000", options())
        .unwrap();
    assert_eq!(call.next().unwrap().unwrap(), stream_message(0, 1000));
    drop(call);
    let r = channel.unary(services::WHO, Vec::new(), options()).unwrap();
    assert!(!r.message.is_empty());
    channel.close();
}

#[test]
fn every_kind_of_call_over_three_grpcio_backends() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let backends: Vec<GrpcServer> = (0..3)
        .map(|i| {
            let options = GrpcServerOptions {
                id: format!("grpcio-{i}"),
                ..GrpcServerOptions::default()
            };
            GrpcServer::start(&env, options).unwrap()
        })
        .collect();
    let targets: Vec<String> = backends.iter().map(GrpcServer::target).collect();
    every_kind_of_call(&targets);
}

#[test]
fn every_kind_of_call_over_three_of_our_servers() {
    let servers: Vec<Server> = (0..3)
        .map(|i| {
            services::mount(Server::builder(), &format!("ours-{i}"))
                .workers(4)
                .bind("127.0.0.1:0")
                .unwrap()
        })
        .collect();
    let targets: Vec<String> = servers.iter().map(|s| s.local_addr().to_string()).collect();
    every_kind_of_call(&targets);
    for s in servers {
        s.shutdown(Duration::from_secs(1));
    }
}
