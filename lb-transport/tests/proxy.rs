//! Our client through an HTTP CONNECT proxy (a small one written here) to a grpcio
//! server, and a proxy that refuses.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded, unbounded};
use lb_core::transport::{CallRequest, ConnectOptions, ConnectionEvent};
use lb_core::{Address, Code, Connection, ConnectionExt, Transport};
use lb_testkit::peers::{self, GrpcServer, GrpcServerOptions};
use lb_transport::driver::proxy::ProxyMode;
use lb_transport::driver::{H2Transport, TransportConfig};

const WAIT: Duration = Duration::from_secs(20);

/// A CONNECT proxy serving `conns` connections; reports each CONNECT target. With
/// `refuse`, it answers 407 instead.
fn proxy(conns: usize, refuse: bool) -> (String, Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = unbounded();
    thread::spawn(move || {
        for _ in 0..conns {
            let Ok((mut client, _)) = listener.accept() else {
                return;
            };
            client.set_read_timeout(Some(WAIT)).unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                if client.read(&mut byte).unwrap_or(0) == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut req = httparse::Request::new(&mut headers);
            let target = match req.parse(&head) {
                Ok(httparse::Status::Complete(_)) if req.method == Some("CONNECT") => {
                    req.path.unwrap_or_default().to_string()
                }
                _ => continue,
            };
            let _ = tx.send(target.clone());
            if refuse {
                let _ = client.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n");
                continue;
            }
            let Ok(upstream) = TcpStream::connect(&target) else {
                let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
                continue;
            };
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .unwrap();
            client.set_read_timeout(None).unwrap();
            let pipe = |mut from: TcpStream, mut to: TcpStream| {
                thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(Shutdown::Write);
                })
            };
            pipe(client.try_clone().unwrap(), upstream.try_clone().unwrap());
            pipe(upstream, client);
        }
    });
    (addr, rx)
}

fn connect_via(
    proxy: &str,
    target: &str,
) -> (H2Transport, Arc<dyn Connection>, Receiver<ConnectionEvent>) {
    let transport = H2Transport::new(TransportConfig {
        proxy: ProxyMode::Explicit(proxy.into()),
        ..TransportConfig::default()
    })
    .unwrap();
    let (tx, events) = unbounded();
    let opts = ConnectOptions {
        authority: target.into(),
        connect_deadline: Instant::now() + WAIT,
        user_agent: "proxy-test".into(),
        transport_options: Default::default(),
    };
    let sink = Arc::new(move |e| {
        let _ = tx.send(e);
    });
    let conn = transport
        .connect(&Address::new(target), &opts, sink)
        .unwrap();
    (transport, conn, events)
}

#[test]
fn calls_go_through_an_http_connect_proxy() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let server = GrpcServer::start(&env, GrpcServerOptions::default()).unwrap();
    let (proxy_addr, seen) = proxy(1, false);
    let (_t, conn, events) = connect_via(&proxy_addr, &server.target());
    assert_eq!(events.recv_timeout(WAIT), Ok(ConnectionEvent::Ready));
    assert_eq!(
        seen.recv_timeout(WAIT),
        Ok(server.target()),
        "CONNECT names the target"
    );
    let (tx, rx) = bounded(1);
    conn.start_call(
        CallRequest::new("/bench.Echo/Unary", b"through the tunnel".to_vec()),
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    let r = rx.recv_timeout(WAIT).unwrap().unwrap();
    assert_eq!(r.message, b"through the tunnel");
}

#[test]
fn a_refusing_proxy_fails_the_connection_with_its_status() {
    let (proxy_addr, seen) = proxy(1, true);
    let (_t, _conn, events) = connect_via(&proxy_addr, "10.255.255.1:443");
    assert_eq!(seen.recv_timeout(WAIT), Ok("10.255.255.1:443".to_string()));
    match events.recv_timeout(WAIT) {
        Ok(ConnectionEvent::Closed(Some(s))) => {
            assert_eq!(s.code(), Code::Unavailable);
            assert!(s.message().contains("407"), "{s}");
        }
        other => panic!("{other:?}"),
    }
}
