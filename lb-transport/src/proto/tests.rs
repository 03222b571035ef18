//! Tests of the connection: a client and a server wired together, and scripted raw peers.

use std::time::{Duration, Instant};

use super::*;
use crate::frame::{
    self, Continuation, Data, Frame, FrameReader, GoAway, Headers, Ping, Reason, RstStream,
    Settings, StreamId, WindowUpdate,
};
use crate::hpack::{self, Header};

mod flow;

fn request(path: &str) -> Vec<Header> {
    vec![
        Header::new(":method", "POST"),
        Header::new(":scheme", "http"),
        Header::new(":path", path.to_string()),
        Header::new(":authority", "test"),
        Header::new("te", "trailers"),
    ]
}

fn response() -> Vec<Header> {
    vec![Header::new(":status", "200")]
}

/// A client and a server connected by in-memory pipes, with virtual time.
struct Pair {
    now: Instant,
    client: Connection,
    server: Connection,
    client_events: Vec<Event>,
    server_events: Vec<Event>,
}

impl Pair {
    fn new(client: ConnectionConfig, server: ConnectionConfig) -> Self {
        let now = Instant::now();
        let mut pair = Self {
            now,
            client: Connection::client(client, now),
            server: Connection::server(server, now),
            client_events: Vec::new(),
            server_events: Vec::new(),
        };
        pair.drive();
        assert!(pair.client_events.contains(&Event::Connected));
        assert!(pair.server_events.contains(&Event::Connected));
        pair.client_events.clear();
        pair.server_events.clear();
        pair
    }

    fn default() -> Self {
        Self::new(ConnectionConfig::default(), ConnectionConfig::default())
    }

    /// Moves bytes both ways until neither side has anything to say. Panics on
    /// livelock (more than 10,000 rounds).
    fn drive(&mut self) {
        for _ in 0..10_000 {
            let mut c2s = Vec::new();
            let mut s2c = Vec::new();
            let _ = self.client.poll_transmit(self.now, &mut c2s);
            let _ = self.server.poll_transmit(self.now, &mut s2c);
            if c2s.is_empty() && s2c.is_empty() {
                self.drain_events();
                return;
            }
            self.server.handle_read(&c2s, self.now);
            self.client.handle_read(&s2c, self.now);
            self.drain_events();
        }
        panic!("connection pair did not go idle");
    }

    /// Collects both sides' events. Like an application that takes DATA as it comes,
    /// it gives each side's receive credit back at once.
    fn drain_events(&mut self) {
        for (conn, events) in [
            (&mut self.client, &mut self.client_events),
            (&mut self.server, &mut self.server_events),
        ] {
            while let Some(e) = conn.poll_event() {
                if let Event::Data { stream, data, .. } = &e {
                    conn.release_capacity(*stream, data.len());
                }
                events.push(e);
            }
        }
    }

    /// Advances time and fires both sides' timers.
    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
    }

    /// The server answers every complete request with `body` echoed and OK trailers.
    fn serve_echo(&mut self) {
        let mut bodies: std::collections::HashMap<StreamId, Vec<u8>> = Default::default();
        for e in std::mem::take(&mut self.server_events) {
            let (stream, end) = match e {
                Event::Headers {
                    stream, end_stream, ..
                } => (stream, end_stream),
                Event::Data {
                    stream,
                    data,
                    end_stream,
                } => {
                    bodies.entry(stream).or_default().extend(data);
                    (stream, end_stream)
                }
                _ => continue,
            };
            if end {
                let body = bodies.remove(&stream).unwrap_or_default();
                self.server.send_headers(stream, response(), false).unwrap();
                self.server.send_data(stream, &body, false).unwrap();
                self.server
                    .send_headers(stream, vec![Header::new("grpc-status", "0")], true)
                    .unwrap();
            }
        }
    }
}

/// Everything the client got for `stream`: response headers, body, trailers.
fn client_result(events: &[Event], id: StreamId) -> (Vec<Vec<Header>>, Vec<u8>, bool) {
    let mut blocks = Vec::new();
    let mut body = Vec::new();
    let mut ended = false;
    for e in events {
        match e {
            Event::Headers {
                stream,
                headers,
                end_stream,
            } if *stream == id => {
                blocks.push(headers.clone());
                ended |= *end_stream;
            }
            Event::Data {
                stream,
                data,
                end_stream,
            } if *stream == id => {
                body.extend_from_slice(data);
                ended |= *end_stream;
            }
            _ => {}
        }
    }
    (blocks, body, ended)
}

#[test]
fn request_response_with_trailers_round_trips() {
    let mut p = Pair::default();
    let id = p.client.open_stream(request("/a/b"), false, p.now).unwrap();
    p.client.send_data(id, b"ping", true).unwrap();
    p.drive();
    p.serve_echo();
    p.drive();
    let (blocks, body, ended) = client_result(&p.client_events, id);
    assert_eq!(blocks.len(), 2, "headers and trailers: {blocks:?}");
    assert_eq!(blocks[1], vec![Header::new("grpc-status", "0")]);
    assert_eq!(body, b"ping");
    assert!(ended);
    assert_eq!(p.client.stream_count(), 0);
    assert_eq!(p.server.stream_count(), 0);
}

#[test]
fn four_mebibyte_bodies_flow_both_ways_within_the_windows() {
    let mut p = Pair::default();
    let big: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
    let id = p.client.open_stream(request("/big"), false, p.now).unwrap();
    p.client.send_data(id, &big, true).unwrap();
    p.drive();
    p.serve_echo();
    p.drive();
    let (_, body, ended) = client_result(&p.client_events, id);
    assert!(ended);
    assert_eq!(body.len(), big.len());
    assert!(body == big, "body corrupted");
}

#[test]
fn streams_beyond_max_concurrent_wait_for_a_slot() {
    let server = ConnectionConfig {
        max_concurrent_streams: 2,
        ..ConnectionConfig::default()
    };
    let mut p = Pair::new(ConnectionConfig::default(), server);
    let ids: Vec<StreamId> = (0..5)
        .map(|_| p.client.open_stream(request("/q"), true, p.now).unwrap())
        .collect();
    p.drive();
    let opened = |events: &[Event]| {
        events
            .iter()
            .filter(|e| matches!(e, Event::Headers { .. }))
            .count()
    };
    assert_eq!(opened(&p.server_events), 2, "only two streams on the wire");
    for round in 0..3 {
        p.serve_echo();
        p.drive();
        assert!(
            p.server_events
                .iter()
                .all(|e| !matches!(e, Event::Reset { .. })),
            "round {round}: a queued stream was refused"
        );
    }
    for id in ids {
        assert!(
            client_result(&p.client_events, id).2,
            "{id} never completed"
        );
    }
}

#[test]
fn graceful_go_away_serves_streams_in_flight_and_refuses_later_ones() {
    let mut p = Pair::default();
    let first = p.client.open_stream(request("/1"), true, p.now).unwrap();
    p.drive();
    p.server.go_away(Reason::NO_ERROR, b"");
    // A stream the client sends before it sees the GOAWAY is still served: the first
    // GOAWAY names the largest stream id, and the final one comes after a PING.
    let in_flight = p.client.open_stream(request("/2"), true, p.now).unwrap();
    p.drive();
    let goaways: Vec<StreamId> = p
        .client_events
        .iter()
        .filter_map(|e| match e {
            Event::GoAway { last_stream_id, .. } => Some(*last_stream_id),
            _ => None,
        })
        .collect();
    assert_eq!(goaways, [StreamId::MAX, in_flight]);
    assert_eq!(
        p.client.open_stream(request("/3"), true, p.now),
        Err(OpenError::NotAccepting)
    );
    p.serve_echo();
    p.drive();
    assert!(
        client_result(&p.client_events, first).2,
        "the old stream finished"
    );
    assert!(
        client_result(&p.client_events, in_flight).2,
        "the in-flight stream was served"
    );
    assert_eq!(p.client_events.last(), Some(&Event::Closed(None)));
    assert_eq!(p.server_events.last(), Some(&Event::Closed(None)));
}

#[test]
fn a_stream_opened_after_the_final_go_away_is_refused() {
    let mut c = RawClient::new(ConnectionConfig::default());
    let h = c.headers(1, false);
    let _ = c.send(&h);
    c.server.go_away(Reason::NO_ERROR, b"");
    let out = transmit(&mut c.server, c.now);
    let ping = frames(&out).into_iter().find_map(|f| match f {
        Frame::Ping(p) if !p.ack => Some(p),
        _ => None,
    });
    let mut ack = Vec::new();
    Ping::pong(ping.expect("shutdown ping").payload).encode(&mut ack);
    let out = c.send(&ack);
    assert!(
        frames(&out)
            .iter()
            .any(|f| matches!(f, Frame::GoAway(g) if g.last_stream_id == StreamId::new(1)))
    );
    let late = c.headers(3, true);
    assert_eq!(
        rst_reasons(&c.send(&late)),
        [(StreamId::new(3), Reason::REFUSED_STREAM)]
    );
}

#[test]
fn draining_ends_when_the_last_stream_is_reset_locally() {
    let mut c = RawClient::new(ConnectionConfig::default());
    let h = c.headers(1, false);
    let _ = c.send(&h);
    c.server.go_away(Reason::NO_ERROR, b"");
    let out = transmit(&mut c.server, c.now);
    let mut ack = Vec::new();
    Ping::pong(*b"shutdown").encode(&mut ack);
    assert!(!frames(&out).is_empty());
    let _ = c.send(&ack);
    assert!(!c.server.is_closed(), "stream 1 is still open");
    c.server.reset_stream(StreamId::new(1), Reason::NO_ERROR);
    assert!(c.server.is_closed(), "the drained connection closes");
}

#[test]
fn two_phase_go_away_refuses_nothing_until_the_final_last_stream_id() {
    // Servers such as gRPC C-core first send GOAWAY with the largest stream id, then
    // the real one.
    let (mut client, now, id) = raw_server_client();
    let second = client.open_stream(request("/2"), true, now).unwrap();
    let _ = transmit(&mut client, now);
    let mut bytes = Vec::new();
    GoAway::new(StreamId::MAX, Reason::NO_ERROR).encode(&mut bytes);
    client.handle_read(&bytes, now);
    let events: Vec<_> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(
        !events.iter().any(|e| matches!(e, Event::Reset { .. })),
        "{events:?}"
    );
    let mut bytes = Vec::new();
    GoAway::new(id, Reason::NO_ERROR).encode(&mut bytes);
    client.handle_read(&bytes, now);
    let events: Vec<_> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(events.contains(&Event::Reset {
        stream: second,
        cause: ResetCause::Refused
    }));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Reset { stream, .. } if *stream == id))
    );
}

#[test]
fn requests_above_the_peers_header_list_limit_are_refused_locally() {
    let server = ConnectionConfig {
        max_header_list_size: 1024,
        ..ConnectionConfig::default()
    };
    let mut p = Pair::new(ConnectionConfig::default(), server);
    let mut big = request("/big");
    big.push(Header::new("x-data", vec![b'a'; 2000]));
    let err = p.client.open_stream(big, true, p.now).unwrap_err();
    assert!(
        matches!(err, OpenError::HeaderListTooLarge { limit: 1024, .. }),
        "{err}"
    );
    // Nothing went out, and the connection still works.
    let ok = p
        .client
        .open_stream(request("/small"), true, p.now)
        .unwrap();
    p.drive();
    p.serve_echo();
    p.drive();
    assert!(client_result(&p.client_events, ok).2);
    assert!(!p.client.is_closed() && !p.server.is_closed());
}

#[test]
fn client_reset_reaches_the_server() {
    let mut p = Pair::default();
    let id = p.client.open_stream(request("/slow"), true, p.now).unwrap();
    p.drive();
    p.client.reset_stream(id, Reason::CANCEL);
    p.drive();
    assert!(p.server_events.contains(&Event::Reset {
        stream: id,
        cause: ResetCause::Peer(Reason::CANCEL)
    }));
    assert_eq!(p.server.stream_count(), 0);
}

#[test]
fn stats_count_streams_as_channelz_does() {
    let mut p = Pair::default();
    // One answered stream, one the client resets.
    let ok = p.client.open_stream(request("/a/b"), false, p.now).unwrap();
    p.client.send_data(ok, b"ping", true).unwrap();
    let reset = p
        .client
        .open_stream(request("/slow"), false, p.now)
        .unwrap();
    p.drive();
    assert_eq!(p.client.stats().streams_started, 2);
    assert_eq!(p.server.stats().streams_started, 2);
    p.client.reset_stream(reset, Reason::CANCEL);
    p.drive();
    p.serve_echo();
    p.drive();
    let (client, server) = (p.client.stats(), p.server.stats());
    assert_eq!(
        (client.streams_succeeded, client.streams_failed),
        (1, 1),
        "{client:?}"
    );
    assert_eq!(
        (server.streams_succeeded, server.streams_failed),
        (1, 1),
        "{server:?}"
    );
    // Echo credit went back, so the windows are whole again (within a batch).
    assert!(
        client.recv_window > 0 && client.send_window > 0,
        "{client:?}"
    );
    assert_eq!(client.keepalives_sent, 0);
}

#[test]
fn unacknowledged_settings_time_out() {
    let now = Instant::now();
    let mut client = Connection::client(ConnectionConfig::default(), now);
    let _ = client.poll_transmit(now, &mut Vec::new());
    // The server sends its SETTINGS but never acknowledges ours.
    let mut s = Vec::new();
    Settings::default().encode(&mut s);
    client.handle_read(&s, now);
    assert_eq!(client.poll_timeout(), Some(now + Duration::from_secs(10)));
    client.handle_timeout(now + Duration::from_secs(9));
    assert!(!client.is_closed(), "early timeouts do nothing");
    client.handle_timeout(now + Duration::from_secs(10));
    let events: Vec<_> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(matches!(
        events.last(),
        Some(Event::Closed(Some(ConnectionError::SettingsTimeout(_))))
    ));
    assert_eq!(
        goaway_reason(&transmit(&mut client, now)),
        Some(Reason::SETTINGS_TIMEOUT)
    );
}

fn keepalive_pair(permit_without_calls: bool) -> Pair {
    let mut ka = KeepaliveConfig::new(Duration::from_secs(10));
    ka.permit_without_calls = permit_without_calls;
    let client = ConnectionConfig {
        keepalive: Some(ka),
        ..ConnectionConfig::default()
    };
    let server = ConnectionConfig {
        ping_policy: PingPolicy {
            min_time: Duration::from_secs(5),
            permit_without_calls: true,
            max_strikes: 2,
        },
        ..ConnectionConfig::default()
    };
    Pair::new(client, server)
}

#[test]
fn keepalive_pings_after_idle_time_and_survives_when_answered() {
    let mut p = keepalive_pair(true);
    for _ in 0..5 {
        p.advance(Duration::from_secs(10));
        let mut out = Vec::new();
        let _ = p.client.poll_transmit(p.now, &mut out);
        assert!(
            frames(&out)
                .iter()
                .any(|f| matches!(f, Frame::Ping(ping) if !ping.ack))
        );
        p.server.handle_read(&out, p.now);
        p.drive();
    }
    assert!(!p.client.is_closed());
    assert_eq!(p.client.stats().keepalives_sent, 5);
}

#[test]
fn keepalive_closes_when_the_ping_goes_unanswered() {
    let mut p = keepalive_pair(true);
    p.advance(Duration::from_secs(10));
    let _ = p.client.poll_transmit(p.now, &mut Vec::new()); // the ping is lost
    p.advance(Duration::from_secs(19));
    assert!(!p.client.is_closed());
    p.advance(Duration::from_secs(1));
    p.drain_events();
    assert!(matches!(
        p.client_events.last(),
        Some(Event::Closed(Some(ConnectionError::KeepaliveTimeout(_))))
    ));
}

#[test]
fn keepalive_without_calls_is_off_by_default() {
    let mut p = keepalive_pair(false);
    p.advance(Duration::from_secs(10));
    let out = transmit(&mut p.client, p.now);
    assert!(!frames(&out).iter().any(|f| matches!(f, Frame::Ping(_))));
    // With a call under way it pings.
    let _id = p.client.open_stream(request("/x"), true, p.now).unwrap();
    p.drive();
    p.advance(Duration::from_secs(10));
    let out = transmit(&mut p.client, p.now);
    assert!(
        frames(&out)
            .iter()
            .any(|f| matches!(f, Frame::Ping(ping) if !ping.ack))
    );
}

#[test]
fn server_enforces_ping_strikes_with_too_many_pings() {
    let mut p = keepalive_pair(true);
    // Three pings 1 s apart: the first is free, then two strikes, the third is over.
    for i in 0..4 {
        let mut raw = Vec::new();
        Ping::new([i; 8]).encode(&mut raw);
        p.server.handle_read(&raw, p.now);
        p.now += Duration::from_secs(1);
    }
    let out = transmit(&mut p.server, p.now);
    let goaway = frames(&out).into_iter().find_map(|f| match f {
        Frame::GoAway(g) => Some(g),
        _ => None,
    });
    let goaway = goaway.expect("GOAWAY sent");
    assert_eq!(goaway.reason, Reason::ENHANCE_YOUR_CALM);
    assert_eq!(goaway.debug_data, b"too_many_pings");
    // The client reports it so the channel can double its keepalive time.
    p.client.handle_read(&out, p.now);
    p.drain_events();
    assert!(p.client_events.iter().any(|e| matches!(e, Event::GoAway { reason, debug, .. } if *reason == Reason::ENHANCE_YOUR_CALM && debug == b"too_many_pings")));
}

// ----- Scripted raw peers -----

fn frames(bytes: &[u8]) -> Vec<Frame> {
    let mut reader = FrameReader::new();
    reader.set_max_frame_size(frame::MAX_MAX_FRAME_SIZE);
    let mut rest = bytes;
    if rest.starts_with(frame::PREFACE) {
        rest = &rest[frame::PREFACE.len()..];
    }
    let mut out = Vec::new();
    while let Ok(Some((f, n))) = reader.read(rest) {
        out.push(f);
        rest = &rest[n..];
    }
    out
}

fn transmit(conn: &mut Connection, now: Instant) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = conn.poll_transmit(now, &mut out);
    out
}

fn goaway_reason(bytes: &[u8]) -> Option<Reason> {
    frames(bytes).into_iter().find_map(|f| match f {
        Frame::GoAway(g) => Some(g.reason),
        _ => None,
    })
}

fn rst_reasons(bytes: &[u8]) -> Vec<(StreamId, Reason)> {
    frames(bytes)
        .into_iter()
        .filter_map(|f| match f {
            Frame::RstStream(r) => Some((r.stream_id, r.reason)),
            _ => None,
        })
        .collect()
}

/// A server under test with a scripted client that has finished the handshake.
struct RawClient {
    now: Instant,
    server: Connection,
    encoder: hpack::Encoder,
}

impl RawClient {
    fn new(config: ConnectionConfig) -> Self {
        let now = Instant::now();
        let mut server = Connection::server(config, now);
        let mut hello = frame::PREFACE.to_vec();
        Settings::default().encode(&mut hello);
        Settings::new_ack().encode(&mut hello);
        server.handle_read(&hello, now);
        let _ = transmit(&mut server, now);
        while server.poll_event().is_some() {}
        Self {
            now,
            server,
            encoder: hpack::Encoder::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.server.handle_read(bytes, self.now);
        transmit(&mut self.server, self.now)
    }

    fn headers(&mut self, id: u32, end_stream: bool) -> Vec<u8> {
        let mut block = Vec::new();
        self.encoder.encode(request("/s/m"), &mut block);
        let mut out = Vec::new();
        Headers::new(StreamId::new(id), block, end_stream, true).encode(&mut out);
        out
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.server.poll_event()).collect()
    }
}

#[test]
fn invalid_preface_is_a_protocol_error() {
    let now = Instant::now();
    let mut server = Connection::server(ConnectionConfig::default(), now);
    server.handle_read(b"GET / HTTP/1.1\r\n\r\n", now);
    assert_eq!(
        goaway_reason(&transmit(&mut server, now)),
        Some(Reason::PROTOCOL_ERROR)
    );
    assert!(server.is_closed());
}

#[test]
fn first_frame_must_be_settings() {
    let now = Instant::now();
    let mut server = Connection::server(ConnectionConfig::default(), now);
    let mut hello = frame::PREFACE.to_vec();
    Ping::new([0; 8]).encode(&mut hello);
    server.handle_read(&hello, now);
    assert_eq!(
        goaway_reason(&transmit(&mut server, now)),
        Some(Reason::PROTOCOL_ERROR)
    );
}

#[test]
fn continuation_flood_gets_enhance_your_calm() {
    let mut c = RawClient::new(ConnectionConfig::default());
    let mut flood = Vec::new();
    Headers::new(StreamId::new(1), vec![], false, false).encode(&mut flood);
    for _ in 0..100 {
        Continuation {
            stream_id: StreamId::new(1),
            fragment: vec![],
            end_headers: false,
        }
        .encode(&mut flood);
    }
    let out = c.send(&flood);
    assert_eq!(goaway_reason(&out), Some(Reason::ENHANCE_YOUR_CALM));
    assert!(c.server.is_closed());
}

#[test]
fn huge_header_block_in_continuations_is_capped() {
    let mut c = RawClient::new(ConnectionConfig::default());
    let mut flood = Vec::new();
    Headers::new(StreamId::new(1), vec![b'x'; 16_000], false, false).encode(&mut flood);
    for _ in 0..3 {
        Continuation {
            stream_id: StreamId::new(1),
            fragment: vec![b'x'; 16_000],
            end_headers: false,
        }
        .encode(&mut flood);
    }
    assert_eq!(
        goaway_reason(&c.send(&flood)),
        Some(Reason::ENHANCE_YOUR_CALM)
    );
}

#[test]
fn interrupted_header_block_is_a_protocol_error() {
    let mut c = RawClient::new(ConnectionConfig::default());
    let mut bytes = Vec::new();
    Headers::new(StreamId::new(1), vec![], false, false).encode(&mut bytes);
    Ping::new([1; 8]).encode(&mut bytes);
    assert_eq!(goaway_reason(&c.send(&bytes)), Some(Reason::PROTOCOL_ERROR));
}

#[test]
fn hpack_bomb_resets_the_stream_and_the_connection_survives() {
    let mut c = RawClient::new(ConnectionConfig::default());
    // One 4,000-byte entry inserted, then referenced 1,000 times (4 MB decoded).
    let mut enc = hpack::Encoder::new();
    let mut block = Vec::new();
    let mut headers = request("/s/m");
    headers.push(Header::new("x-big", vec![b'a'; 4000]));
    enc.encode(&headers, &mut block);
    block.extend(std::iter::repeat_n(0xbe, 1000)); // indexed: dynamic entry 62
    let mut bytes = Vec::new();
    Headers::new(StreamId::new(1), block, true, true).encode(&mut bytes);
    let out = c.send(&bytes);
    assert_eq!(
        rst_reasons(&out),
        [(StreamId::new(1), Reason::PROTOCOL_ERROR)]
    );
    assert_eq!(goaway_reason(&out), None);
    assert!(c.events().is_empty(), "no request reaches the application");
    // The next stream works: the HPACK tables stayed in sync (the same encoder that
    // built the bomb builds the next block).
    let mut ok = Vec::new();
    enc.encode(request("/s/m"), &mut ok);
    let mut bytes = Vec::new();
    Headers::new(StreamId::new(3), ok, true, true).encode(&mut bytes);
    let _ = c.send(&bytes);
    assert!(
        matches!(c.events().as_slice(), [Event::Headers { stream, .. }] if *stream == StreamId::new(3))
    );
}

#[test]
fn settings_and_ping_floods_get_enhance_your_calm() {
    for kind in ["settings", "ping"] {
        let mut c = RawClient::new(ConnectionConfig::default());
        let mut flood = Vec::new();
        for i in 0..2000u32 {
            match kind {
                "settings" => Settings::default().encode(&mut flood),
                _ => Ping::new((i as u64).to_be_bytes()).encode(&mut flood),
            }
        }
        let out = c.send(&flood);
        assert_eq!(
            goaway_reason(&out),
            Some(Reason::ENHANCE_YOUR_CALM),
            "{kind}"
        );
        // Bounded memory: the queued acks stop at the limit.
        assert!(
            out.len() < 1001 * 17 + 100,
            "{kind}: {} bytes queued",
            out.len()
        );
    }
}

#[test]
fn window_overflow_is_a_flow_control_error() {
    let mut c = RawClient::new(ConnectionConfig::default());
    let mut bytes = Vec::new();
    WindowUpdate::new(StreamId::ZERO, frame::MAX_WINDOW_SIZE).encode(&mut bytes);
    assert_eq!(
        goaway_reason(&c.send(&bytes)),
        Some(Reason::FLOW_CONTROL_ERROR)
    );

    let mut c = RawClient::new(ConnectionConfig::default());
    let h = c.headers(1, false);
    let _ = c.send(&h);
    let mut bytes = Vec::new();
    WindowUpdate::new(StreamId::new(1), frame::MAX_WINDOW_SIZE).encode(&mut bytes);
    let out = c.send(&bytes);
    assert_eq!(
        rst_reasons(&out),
        [(StreamId::new(1), Reason::FLOW_CONTROL_ERROR)]
    );
    assert_eq!(goaway_reason(&out), None, "a stream error only");
}

#[test]
fn data_beyond_the_window_is_a_flow_control_error() {
    let config = ConnectionConfig {
        stream_window: 16_384,
        ..ConnectionConfig::default()
    };
    let mut c = RawClient::new(config);
    let h = c.headers(1, false);
    let _ = c.send(&h);
    let mut bytes = Vec::new();
    Data::new(StreamId::new(1), vec![0; 16_384], false).encode(&mut bytes);
    Data::new(StreamId::new(1), vec![0; 1], false).encode(&mut bytes);
    let out = c.send(&bytes);
    assert_eq!(
        rst_reasons(&out),
        [(StreamId::new(1), Reason::FLOW_CONTROL_ERROR)]
    );
}

#[test]
fn frames_on_closed_and_idle_streams() {
    let mut c = RawClient::new(ConnectionConfig::default());
    let h = c.headers(1, true);
    let _ = c.send(&h);
    let mut bytes = Vec::new();
    Data::new(StreamId::new(1), b"late".to_vec(), false).encode(&mut bytes);
    assert_eq!(
        rst_reasons(&c.send(&bytes)),
        [(StreamId::new(1), Reason::STREAM_CLOSED)]
    );
    let mut bytes = Vec::new();
    RstStream::new(StreamId::new(9), Reason::CANCEL).encode(&mut bytes);
    assert_eq!(
        goaway_reason(&c.send(&bytes)),
        Some(Reason::PROTOCOL_ERROR),
        "idle stream"
    );
}

#[test]
fn rapid_reset_gets_enhance_your_calm() {
    let config = ConnectionConfig {
        max_resets_per_second: 50,
        ..ConnectionConfig::default()
    };
    let mut c = RawClient::new(config);
    let mut last = Vec::new();
    for i in 0..60u32 {
        let id = 2 * i + 1;
        let mut bytes = c.headers(id, false);
        RstStream::new(StreamId::new(id), Reason::CANCEL).encode(&mut bytes);
        last = c.send(&bytes);
        if c.server.is_closed() {
            break;
        }
    }
    assert_eq!(goaway_reason(&last), Some(Reason::ENHANCE_YOUR_CALM));
    // Resets spread out in time are fine.
    let mut c = RawClient::new(ConnectionConfig {
        max_resets_per_second: 50,
        ..ConnectionConfig::default()
    });
    for i in 0..200u32 {
        let id = 2 * i + 1;
        let mut bytes = c.headers(id, false);
        RstStream::new(StreamId::new(id), Reason::CANCEL).encode(&mut bytes);
        let _ = c.send(&bytes);
        c.now += Duration::from_millis(25);
    }
    assert!(!c.server.is_closed());
}

#[test]
fn streams_beyond_our_limit_are_refused() {
    let mut c = RawClient::new(ConnectionConfig {
        max_concurrent_streams: 1,
        ..ConnectionConfig::default()
    });
    let mut bytes = c.headers(1, true);
    bytes.extend(c.headers(3, true));
    let out = c.send(&bytes);
    assert_eq!(
        rst_reasons(&out),
        [(StreamId::new(3), Reason::REFUSED_STREAM)]
    );
}

#[test]
fn malformed_requests_are_reset_not_delivered() {
    let mut c = RawClient::new(ConnectionConfig::default());
    let mut block = Vec::new();
    c.encoder
        .encode([Header::new(":path", "/only")], &mut block);
    let mut bytes = Vec::new();
    Headers::new(StreamId::new(1), block, true, true).encode(&mut bytes);
    assert_eq!(
        rst_reasons(&c.send(&bytes)),
        [(StreamId::new(1), Reason::PROTOCOL_ERROR)]
    );
    assert!(c.events().is_empty());
}

/// A client under test with a scripted server.
fn raw_server_client() -> (Connection, Instant, StreamId) {
    let now = Instant::now();
    let mut client = Connection::client(ConnectionConfig::default(), now);
    let id = client.open_stream(request("/s/m"), true, now).unwrap();
    let _ = transmit(&mut client, now);
    let mut hello = Vec::new();
    Settings::default().encode(&mut hello);
    Settings::new_ack().encode(&mut hello);
    client.handle_read(&hello, now);
    let _ = transmit(&mut client, now);
    while client.poll_event().is_some() {}
    (client, now, id)
}

#[test]
fn push_promise_to_a_client_is_a_protocol_error() {
    let (mut client, now, id) = raw_server_client();
    let mut bytes = Vec::new();
    frame::PushPromise {
        stream_id: id,
        promised_id: StreamId::new(2),
        fragment: vec![],
        end_headers: true,
        pad_len: None,
    }
    .encode(&mut bytes);
    client.handle_read(&bytes, now);
    assert_eq!(
        goaway_reason(&transmit(&mut client, now)),
        Some(Reason::PROTOCOL_ERROR)
    );
    let events: Vec<_> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(
        matches!(&events[0], Event::Reset { stream, cause: ResetCause::Connection(_) } if *stream == id)
    );
}

#[test]
fn server_goaway_with_error_fails_every_stream() {
    let (mut client, now, id) = raw_server_client();
    let mut bytes = Vec::new();
    GoAway {
        last_stream_id: id,
        reason: Reason::INTERNAL_ERROR,
        debug_data: b"bye".to_vec(),
    }
    .encode(&mut bytes);
    client.handle_read(&bytes, now);
    let events: Vec<_> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(events.iter().any(|e| matches!(e, Event::Reset { stream, cause: ResetCause::Connection(ConnectionError::GoAway { .. }) } if *stream == id)), "{events:?}");
    assert!(client.is_closed());
}

#[test]
fn eof_mid_stream_fails_it_and_queued_streams_are_refused() {
    let now = Instant::now();
    let mut client = Connection::client(ConnectionConfig::default(), now);
    let mut hello = Vec::new();
    Settings {
        max_concurrent_streams: Some(1),
        ..Settings::default()
    }
    .encode(&mut hello);
    client.handle_read(&hello, now);
    let a = client.open_stream(request("/a"), true, now).unwrap();
    let b = client.open_stream(request("/b"), true, now).unwrap();
    client.handle_eof();
    let events: Vec<_> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(events.contains(&Event::Reset {
        stream: a,
        cause: ResetCause::Connection(ConnectionError::Eof)
    }));
    assert!(events.contains(&Event::Reset {
        stream: b,
        cause: ResetCause::Refused
    }));
    assert_eq!(
        events.last(),
        Some(&Event::Closed(Some(ConnectionError::Eof)))
    );
}

#[test]
fn informational_responses_are_skipped() {
    let (mut client, now, id) = raw_server_client();
    let mut enc = hpack::Encoder::new();
    let mut bytes = Vec::new();
    for (status, end) in [("100", false), ("200", false)] {
        let mut block = Vec::new();
        enc.encode([Header::new(":status", status)], &mut block);
        Headers::new(id, block, end, true).encode(&mut bytes);
    }
    client.handle_read(&bytes, now);
    let events: Vec<_> = std::iter::from_fn(|| client.poll_event()).collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(matches!(&events[0], Event::Headers { headers, .. } if headers[0].value == b"200"[..]));
}

/// A response on `id` as a server would send it: headers, DATA frames of many
/// sizes, trailers.
fn response_bytes(id: StreamId) -> Vec<u8> {
    let mut enc = hpack::Encoder::new();
    let mut bytes = Vec::new();
    let mut block = Vec::new();
    enc.encode([Header::new(":status", "200")], &mut block);
    Headers::new(id, block, false, true).encode(&mut bytes);
    for (i, len) in [0usize, 1, 9, 10, 100, 4096, 16_384, 3]
        .into_iter()
        .enumerate()
    {
        frame::Data::new(id, vec![i as u8; len], false).encode(&mut bytes);
    }
    let mut block = Vec::new();
    enc.encode([Header::new("grpc-status", "0")], &mut block);
    Headers::new(id, block, true, true).encode(&mut bytes);
    bytes
}

/// What a client hears from `bytes` read in pieces of `sizes` (cycled).
fn heard_in_pieces(bytes: &[u8], sizes: &[usize]) -> Vec<String> {
    let (mut client, now, _) = raw_server_client();
    let mut rest = bytes;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().expect("cycled")).clamp(1, rest.len());
        client.handle_read(&rest[..n], now);
        rest = &rest[n..];
    }
    std::iter::from_fn(|| client.poll_event())
        .map(|e| format!("{e:?}"))
        .collect()
}

#[test]
fn frames_split_anywhere_read_the_same() {
    let (_, _, id) = raw_server_client();
    let bytes = response_bytes(id);
    let whole = heard_in_pieces(&bytes, &[bytes.len()]);
    assert!(whole.iter().any(|e| e.contains("grpc-status")), "{whole:?}");
    for sizes in [
        &[1][..],
        &[2],
        &[8],
        &[9],
        &[10],
        &[17],
        &[4096],
        &[3, 9, 1, 16_393],
    ] {
        assert_eq!(heard_in_pieces(&bytes, sizes), whole, "pieces of {sizes:?}");
    }
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// However the bytes are cut, the client hears the same.
        #[test]
        fn frames_cut_at_random_read_the_same(sizes in proptest::collection::vec(1usize..20_000, 1..16)) {
            let (_, _, id) = raw_server_client();
            let bytes = response_bytes(id);
            let whole = heard_in_pieces(&bytes, &[bytes.len()]);
            prop_assert_eq!(heard_in_pieces(&bytes, &sizes), whole);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Arbitrary bytes after a valid handshake never panic the server, and what it
        /// writes stays bounded.
        #[test]
        fn server_survives_arbitrary_bytes(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..512), 1..8)) {
            let mut c = RawClient::new(ConnectionConfig::default());
            for chunk in chunks {
                let out = c.send(&chunk);
                prop_assert!(out.len() < 1 << 20);
                let _ = c.events();
            }
        }

        /// Arbitrary server bytes never panic a client with a call under way.
        #[test]
        fn client_survives_arbitrary_bytes(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..512), 1..8)) {
            let (mut client, now, _) = raw_server_client();
            for chunk in chunks {
                client.handle_read(&chunk, now);
                let _ = transmit(&mut client, now);
                while client.poll_event().is_some() {}
            }
        }
    }
}

/// A request with `extra` headers on stream `id`, and whether it ends the stream.
fn request_with(c: &mut RawClient, id: u32, extra: &[(&[u8], &[u8])], end_stream: bool) -> Vec<u8> {
    let mut headers = request("/s/m");
    for (name, value) in extra {
        headers.push(Header::new(name.to_vec(), value.to_vec()));
    }
    let mut block = Vec::new();
    c.encoder.encode(&headers, &mut block);
    let mut out = Vec::new();
    Headers::new(StreamId::new(id), block, end_stream, true).encode(&mut out);
    out
}

#[test]
fn malformed_field_names_and_values_reset_the_stream() {
    // RFC 9113 8.2.1: each of these makes the request malformed.
    let bad: &[(&[u8], &[u8])] = &[
        (b"x y", b"1"),
        (b"x\x01", b"1"),
        (b"caf\xc3\xa9", b"1"),
        (b"a:b", b"1"),
        (b"x", b" leading"),
        (b"x", b"trailing\t"),
        (b"x", b"nul\x00"),
    ];
    let mut c = RawClient::new(ConnectionConfig::default());
    for (i, field) in bad.iter().enumerate() {
        let id = 1 + 2 * i as u32;
        let bytes = request_with(&mut c, id, &[*field], true);
        let out = c.send(&bytes);
        assert_eq!(
            rst_reasons(&out),
            [(StreamId::new(id), Reason::PROTOCOL_ERROR)],
            "{field:?}"
        );
        assert!(c.events().is_empty(), "{field:?} reached the application");
    }
    // A value with inner spaces and tabs is fine.
    let id = 1 + 2 * bad.len() as u32;
    let bytes = request_with(&mut c, id, &[(b"x", b"a b\tc")], true);
    assert!(rst_reasons(&c.send(&bytes)).is_empty());
    assert_eq!(c.events().len(), 1);
}

#[test]
fn data_that_does_not_match_the_content_length_resets_the_stream() {
    let mut c = RawClient::new(ConnectionConfig::default());
    let data = |id: u32, body: &[u8], end: bool| {
        let mut out = Vec::new();
        Data::new(StreamId::new(id), body.to_vec(), end).encode(&mut out);
        out
    };
    // Declared 5, sent 3 and ended: malformed.
    let mut bytes = request_with(&mut c, 1, &[(b"content-length", b"5")], false);
    bytes.extend(data(1, b"abc", true));
    assert_eq!(
        rst_reasons(&c.send(&bytes)),
        [(StreamId::new(1), Reason::PROTOCOL_ERROR)]
    );
    // Declared 2, sent 3: malformed at once.
    let mut bytes = request_with(&mut c, 3, &[(b"content-length", b"2")], false);
    bytes.extend(data(3, b"abc", false));
    assert_eq!(
        rst_reasons(&c.send(&bytes)),
        [(StreamId::new(3), Reason::PROTOCOL_ERROR)]
    );
    // Declared 4 with no DATA at all: malformed.
    let bytes = request_with(&mut c, 5, &[(b"content-length", b"4")], true);
    assert_eq!(
        rst_reasons(&c.send(&bytes)),
        [(StreamId::new(5), Reason::PROTOCOL_ERROR)]
    );
    // Not a number: malformed.
    let bytes = request_with(&mut c, 7, &[(b"content-length", b"x")], true);
    assert_eq!(
        rst_reasons(&c.send(&bytes)),
        [(StreamId::new(7), Reason::PROTOCOL_ERROR)]
    );
    let _ = c.events();
    // Declared 3 and sent 3 in two frames: served.
    let mut bytes = request_with(&mut c, 9, &[(b"content-length", b"3")], false);
    bytes.extend(data(9, b"ab", false));
    bytes.extend(data(9, b"c", true));
    assert!(rst_reasons(&c.send(&bytes)).is_empty());
    let events = c.events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Data { stream, end_stream: true, .. } if *stream == StreamId::new(9))),
        "{events:?}"
    );
}
