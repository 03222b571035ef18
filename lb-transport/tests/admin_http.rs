//! The admin server over real loopback sockets, without a browser: its routes, the
//! JSON of a channel with a policy tree, the answers to bad requests (404, 405,
//! 400, 431, 503), keep-alive and its cap, many connections at once, the read
//! timeout, and shutdown. Real time here, every wait bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use lb_core::ConnectivityState;
use lb_core::channelz::{
    self, CallCounts, ChannelSnapshot, Entity, Kind, PolicyView, Snapshot, SubchannelView,
    TraceSnapshot,
};
use lb_transport::admin::{AdminConfig, AdminServer, Reply};

/// The longest any read here waits.
const WAIT: Duration = Duration::from_secs(10);

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn connect(admin: &AdminServer) -> BufReader<TcpStream> {
    let conn = TcpStream::connect(admin.local_addr()).unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    BufReader::new(conn)
}

/// Reads one answer (the body by its content-length; none for a HEAD request).
fn read_answer(conn: &mut BufReader<TcpStream>, head_only: bool) -> Answer {
    let mut line = String::new();
    conn.read_line(&mut line).unwrap();
    let mut parts = line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "status line {line:?}");
    let status = parts.next().unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        conn.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':').unwrap();
        headers.push((n.trim().to_owned(), v.trim().to_owned()));
    }
    let mut answer = Answer {
        status,
        headers,
        body: Vec::new(),
    };
    let len: usize = answer.header("content-length").unwrap().parse().unwrap();
    if !head_only {
        answer.body = vec![0; len];
        conn.read_exact(&mut answer.body).unwrap();
    }
    answer
}

fn request(admin: &AdminServer, raw: &str) -> Answer {
    let mut conn = connect(admin);
    conn.get_mut().write_all(raw.as_bytes()).unwrap();
    read_answer(&mut conn, raw.starts_with("HEAD "))
}

fn get(admin: &AdminServer, path: &str) -> Answer {
    request(
        admin,
        &format!("GET {path} HTTP/1.1\r\nhost: admin\r\n\r\n"),
    )
}

/// Whether the server closed `conn` (EOF, or a reset when it closed with bytes
/// unread or before accepting) within [`WAIT`], sending nothing more.
fn closed(conn: &mut BufReader<TcpStream>) -> bool {
    let mut rest = Vec::new();
    match conn.read_to_end(&mut rest) {
        Ok(_) => rest.is_empty(),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

struct FakeChannel(ChannelSnapshot, PolicyView);

impl Entity for FakeChannel {
    fn snapshot(&self) -> Snapshot {
        Snapshot::Channel(self.0.clone())
    }
    fn policy(&self, _wait: Duration) -> Option<PolicyView> {
        Some(self.1.clone())
    }
}

fn fake_channel(target: &str) -> (Arc<FakeChannel>, channelz::Registration) {
    let id = channelz::next_id();
    let channel = Arc::new(FakeChannel(
        ChannelSnapshot {
            id,
            target: target.into(),
            state: ConnectivityState::Ready,
            calls: CallCounts {
                started: 5,
                succeeded: 4,
                failed: 1,
                last_started: None,
            },
            trace: TraceSnapshot::default(),
            subchannels: vec![],
            channels: vec![],
        },
        PolicyView {
            policy: "pick_first".into(),
            state: Some(ConnectivityState::Ready),
            subchannels: vec![SubchannelView {
                id: 0,
                address: "10.1.2.3:80".into(),
                state: ConnectivityState::Ready,
                details: vec![],
            }],
            ..PolicyView::default()
        },
    ));
    let reg = channelz::registry().register(id, Kind::TopChannel, Arc::downgrade(&channel) as _);
    (channel, reg)
}

#[test]
fn routes_serve_the_page_the_json_and_added_paths() {
    let admin = AdminServer::bind("127.0.0.1:0").unwrap();
    let (channel, _reg) = fake_channel("dns:///admin-http.example");
    let id = channel.0.id;

    let page = get(&admin, "/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.text().starts_with("<!doctype html>"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert!(
        !page.text().contains("http://") && !page.text().contains("https://"),
        "nothing from elsewhere"
    );

    let all = get(&admin, "/api/channels");
    assert_eq!(
        (all.status, all.header("content-type")),
        (200, Some("application/json"))
    );
    let v: serde_json::Value = serde_json::from_slice(&all.body).unwrap();
    let mine = v["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("channel {id} listed: {v}"));
    assert_eq!(mine["target"], "dns:///admin-http.example");
    assert_eq!(mine["calls"]["failed"], 1);
    assert_eq!(mine["policy"]["policy"], "pick_first");
    assert_eq!(mine["policy"]["subchannels"][0]["address"], "10.1.2.3:80");

    let one = get(&admin, &format!("/api/channel/{id}?pretty=no"));
    let v: serde_json::Value = serde_json::from_slice(&one.body).unwrap();
    assert_eq!((one.status, v["id"].as_u64()), (200, Some(id)));
    assert!(v["now"].as_u64().unwrap() > 0);
    assert_eq!(get(&admin, "/api/channel/18446744073709551615").status, 404);
    assert_eq!(get(&admin, "/api/channel/x").status, 404);

    admin.route("/metrics", |req| {
        Reply::new(
            "text/plain; version=0.0.4",
            format!("# {}\nup 1\n", req.query()),
        )
    });
    let metrics = get(&admin, "/metrics?name=x");
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    assert_eq!(metrics.text(), "# name=x\nup 1\n");
    admin.route("/metrics", |_| Reply::new("text/plain", "replaced"));
    assert_eq!(get(&admin, "/metrics").text(), "replaced");
    // A scrape function's (content type, body) pair is a 200 answer.
    let scrape = || ("application/openmetrics-text", String::from("# EOF\n"));
    admin.route("/scrape", move |_| scrape());
    let scraped = get(&admin, "/scrape");
    assert_eq!(scraped.status, 200);
    assert_eq!(
        scraped.header("content-type"),
        Some("application/openmetrics-text")
    );
    assert_eq!(scraped.text(), "# EOF\n");
    admin.route("/panics", |_| -> Reply { panic!("a handler's bug") });
    assert_eq!(get(&admin, "/panics").status, 500);
    assert_eq!(
        get(&admin, "/metrics").status,
        200,
        "the server survives it"
    );

    let head = request(&admin, "HEAD /metrics HTTP/1.1\r\nhost: a\r\n\r\n");
    assert_eq!(
        (head.status, head.header("content-length")),
        (200, Some("8"))
    );

    drop(_reg);
    assert_eq!(
        get(&admin, &format!("/api/channel/{id}")).status,
        404,
        "gone with its registration"
    );
    admin.shutdown();
}

#[test]
fn bad_requests_get_short_answers() {
    let admin = AdminServer::bind("127.0.0.1:0").unwrap();
    let nope = get(&admin, "/nope");
    assert_eq!((nope.status, nope.text().trim()), (404, "nothing at /nope"));

    let post = request(
        &admin,
        "POST /api/channels HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n\r\n{}",
    );
    assert_eq!(
        (post.status, post.header("allow")),
        (405, Some("GET, HEAD"))
    );
    assert_eq!(post.header("connection"), Some("close"));

    let body = request(
        &admin,
        "GET / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\nabc",
    );
    assert_eq!(
        (body.status, body.header("connection")),
        (400, Some("close"))
    );

    let malformed = request(&admin, "GET / HTTP/1.1\r\nno colon here\r\n\r\n");
    assert_eq!(
        (malformed.status, malformed.header("connection")),
        (400, Some("close"))
    );
    assert!(
        malformed.text().starts_with("malformed request"),
        "{}",
        malformed.text()
    );
    let garbage = request(&admin, "\u{1}\u{2}\u{3}\r\n\r\n");
    assert_eq!(garbage.status, 400);

    // A head larger than 8 KiB: answered 431 once 8 KiB are in, without waiting
    // for the rest.
    let mut conn = connect(&admin);
    let big = format!("GET / HTTP/1.1\r\nx-big: {}\r\n", "a".repeat(9 * 1024));
    conn.get_mut().write_all(big.as_bytes()).unwrap();
    let answer = read_answer(&mut conn, false);
    assert_eq!(
        (answer.status, answer.text().trim()),
        (431, "request head too large")
    );
    assert!(closed(&mut conn));

    // A client that goes on sending after the 431 gets it and then an orderly
    // end: the server reads and drops the rest for a while rather than closing
    // with bytes unread, which resets the connection (and a reset can destroy the
    // answer before some clients read it).
    let mut conn = connect(&admin);
    let mut sent = 0;
    for _ in 0..8 {
        match conn.get_mut().write(&[b'a'; 4096]) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(sent > 8 * 1024, "{sent}");
    thread::sleep(Duration::from_millis(50));
    let answer = read_answer(&mut conn, false);
    assert_eq!(answer.status, 431);
    // More after the answer, still read and dropped by the server.
    conn.get_mut().write_all(&[b'b'; 4096]).unwrap();
    thread::sleep(Duration::from_millis(50));
    let mut rest = Vec::new();
    let end = conn.read_to_end(&mut rest);
    assert!(
        matches!(end, Ok(0)),
        "EOF, not a reset: {end:?} after {sent} bytes"
    );

    let many: String = (0..40).map(|i| format!("x-h{i}: v\r\n")).collect();
    let too_many = request(&admin, &format!("GET / HTTP/1.1\r\n{many}\r\n"));
    assert_eq!(too_many.status, 431);
    assert_eq!(get(&admin, "/").status, 200, "still serving");
    admin.shutdown();
}

#[test]
fn keep_alive_carries_requests_until_its_cap() {
    let mut config = AdminConfig::default();
    config.max_requests_per_connection = 3;
    let admin = AdminServer::bind_with("127.0.0.1:0", config).unwrap();
    admin.route("/n", |_| Reply::new("text/plain", "n"));
    let mut conn = connect(&admin);
    // Two requests in one write (pipelined), then a third.
    conn.get_mut()
        .write_all(b"GET /n HTTP/1.1\r\nhost: a\r\n\r\nGET /nope HTTP/1.1\r\nhost: a\r\n\r\n")
        .unwrap();
    let a = read_answer(&mut conn, false);
    let b = read_answer(&mut conn, false);
    assert_eq!(
        (a.status, a.header("connection")),
        (200, Some("keep-alive"))
    );
    assert_eq!(
        (b.status, b.header("connection")),
        (404, Some("keep-alive"))
    );
    conn.get_mut()
        .write_all(b"GET /n HTTP/1.1\r\nhost: a\r\n\r\n")
        .unwrap();
    let c = read_answer(&mut conn, false);
    assert_eq!(
        (c.status, c.header("connection")),
        (200, Some("close")),
        "the third is the last"
    );
    assert!(closed(&mut conn));

    let mut conn = connect(&admin);
    conn.get_mut()
        .write_all(b"GET /n HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(
        read_answer(&mut conn, false).header("connection"),
        Some("close")
    );
    assert!(closed(&mut conn));
    admin.shutdown();
}

#[test]
fn many_connections_at_once_and_the_cap_beyond_them() {
    let admin = Arc::new(AdminServer::bind("127.0.0.1:0").unwrap());
    let (_channel, _reg) = fake_channel("dns:///admin-many.example");
    // 48 clients (the default cap is 64), all connected before any sends.
    let conns: Vec<_> = (0..48).map(|_| connect(&admin)).collect();
    let started = Instant::now();
    let threads: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            thread::spawn(move || {
                for _ in 0..3 {
                    conn.get_mut()
                        .write_all(b"GET /api/channels HTTP/1.1\r\nhost: a\r\n\r\n")
                        .unwrap();
                    let answer = read_answer(&mut conn, false);
                    assert_eq!(answer.status, 200);
                    let v: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
                    assert!(v["channels"].as_array().is_some_and(|c| !c.is_empty()));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    println!(
        "admin server: 48 connections x 3 GET /api/channels answered in {:?}",
        started.elapsed()
    );

    let mut config = AdminConfig::default();
    config.max_connections = 4;
    let capped = AdminServer::bind_with("127.0.0.1:0", config).unwrap();
    let mut held: Vec<_> = (0..4).map(|_| connect(&capped)).collect();
    // The server has taken the four once each has had an answer.
    for conn in &mut held {
        conn.get_mut()
            .write_all(b"GET /nope HTTP/1.1\r\nhost: a\r\n\r\n")
            .unwrap();
        assert_eq!(read_answer(conn, false).status, 404);
    }
    let mut fifth = connect(&capped);
    let answer = read_answer(&mut fifth, false);
    assert_eq!(answer.status, 503);
    assert!(closed(&mut fifth));
    drop(held.pop());
    // Once one of the four is gone, a new connection is served (the server sees the
    // close on its next event; retry briefly).
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = get(&capped, "/nope");
        if answer.status == 404 {
            break;
        }
        assert_eq!(answer.status, 503);
        assert!(Instant::now() < deadline, "a freed slot is reused");
        thread::sleep(Duration::from_millis(20));
    }
    capped.shutdown();
}

#[test]
fn a_slow_head_is_cut_at_the_read_timeout_and_shutdown_closes_everything() {
    let mut config = AdminConfig::default();
    config.read_timeout = Duration::from_millis(300);
    let admin = AdminServer::bind_with("127.0.0.1:0", config).unwrap();
    let addr = admin.local_addr();
    let mut slow = connect(&admin);
    let started = Instant::now();
    slow.get_mut().write_all(b"GET / HTTP/1.1\r\nhost").unwrap();
    thread::sleep(Duration::from_millis(100));
    slow.get_mut().write_all(b": a\r\nx-more: b\r\n").unwrap();
    assert!(closed(&mut slow), "cut without an answer");
    let took = started.elapsed();
    assert!(
        (Duration::from_millis(250)..Duration::from_secs(5)).contains(&took),
        "cut after {took:?}"
    );

    let mut idle = connect(&admin);
    idle.get_mut()
        .write_all(b"GET /nope HTTP/1.1\r\nhost: a\r\n\r\n")
        .unwrap();
    assert_eq!(read_answer(&mut idle, false).status, 404);
    let mut open = connect(&admin);
    open.get_mut().write_all(b"GET /").unwrap();
    admin.shutdown();
    assert!(closed(&mut open), "shutdown closes connections");
    assert!(TcpStream::connect(addr).is_err(), "and the listener");
}
