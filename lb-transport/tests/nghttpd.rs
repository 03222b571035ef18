//! Our sans-IO HTTP/2 connection (client role) against nghttp2's `nghttpd`, over a
//! blocking loopback socket: large files (flow control), concurrent streams, 404s.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use lb_testkit::peers::{self, Nghttpd};
use lb_transport::frame::StreamId;
use lb_transport::hpack::Header;
use lb_transport::proto::{Connection, ConnectionConfig, Event};

/// Fetches `paths` over one connection at once; returns (status, body) per path.
fn fetch_all(addr: std::net::SocketAddr, paths: &[String]) -> Vec<(String, Vec<u8>)> {
    let mut socket = TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let now = Instant::now();
    let mut conn = Connection::client(ConnectionConfig::default(), now);
    let mut ids = Vec::new();
    for path in paths {
        let headers = vec![
            Header::new(":method", "GET"),
            Header::new(":scheme", "http"),
            Header::new(":path", path.clone()),
            Header::new(":authority", addr.to_string()),
        ];
        ids.push(conn.open_stream(headers, true, now).unwrap());
    }
    let mut results: HashMap<StreamId, (String, Vec<u8>, bool)> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = vec![0u8; 64 << 10];
    while results.values().filter(|r| r.2).count() < ids.len() {
        assert!(Instant::now() < deadline, "nghttpd did not answer in time");
        let mut out = Vec::new();
        let _ = conn.poll_transmit(Instant::now(), &mut out);
        socket.write_all(&out).unwrap();
        match socket.read(&mut buf) {
            Ok(0) => panic!("nghttpd closed the connection"),
            Ok(n) => conn.handle_read(&buf[..n], Instant::now()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("{e}"),
        }
        while let Some(event) = conn.poll_event() {
            match event {
                Event::Headers {
                    stream,
                    headers,
                    end_stream,
                } => {
                    let entry = results.entry(stream).or_default();
                    if let Some(s) = headers.iter().find(|h| h.name == b":status"[..]) {
                        entry.0 = String::from_utf8_lossy(&s.value).into_owned();
                    }
                    entry.2 |= end_stream;
                }
                Event::Data {
                    stream,
                    data,
                    end_stream,
                } => {
                    // This test is the application: it took the data.
                    conn.release_capacity(stream, data.len());
                    let entry = results.entry(stream).or_default();
                    entry.1.extend_from_slice(&data);
                    entry.2 |= end_stream;
                }
                Event::Reset { stream, cause } => panic!("{stream} reset: {cause:?}"),
                Event::Closed(e) => panic!("closed: {e:?}"),
                Event::Connected | Event::GoAway { .. } | Event::SendReady { .. } => {}
            }
        }
    }
    ids.iter()
        .map(|id| {
            let (status, body, _) = results.remove(id).unwrap();
            (status, body)
        })
        .collect()
}

#[test]
fn our_connection_fetches_files_from_nghttpd() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let docroot = env.temp_dir("nghttpd-client").unwrap();
    let big: Vec<u8> = (0..3 << 20).map(|i| (i % 241) as u8).collect();
    std::fs::write(docroot.path().join("big.bin"), &big).unwrap();
    for i in 0..8 {
        std::fs::write(
            docroot.path().join(format!("f{i}.txt")),
            format!("file {i}\n"),
        )
        .unwrap();
    }
    let server = Nghttpd::start(&env, docroot.path(), &[]).unwrap();

    // A 3 MiB file needs many WINDOW_UPDATEs from us.
    let got = fetch_all(server.addr(), &["/big.bin".to_string()]);
    assert_eq!(got[0].0, "200");
    assert!(
        got[0].1 == big,
        "3 MiB body corrupted ({} bytes)",
        got[0].1.len()
    );

    // Nine concurrent streams on one connection, one of them a 404.
    let mut paths: Vec<String> = (0..8).map(|i| format!("/f{i}.txt")).collect();
    paths.push("/missing".into());
    let got = fetch_all(server.addr(), &paths);
    for (i, (status, body)) in got.iter().take(8).enumerate() {
        assert_eq!(status, "200");
        assert_eq!(body, format!("file {i}\n").as_bytes());
    }
    assert_eq!(got[8].0, "404");
}
