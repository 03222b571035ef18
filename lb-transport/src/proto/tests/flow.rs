//! Tests of the per-stream send bound ([`StreamError::Blocked`] and
//! [`Event::SendReady`]) and of receive credit returned by `release_capacity`.

use super::*;

/// A client whose send queue holds `stream_send_buffer` bytes, talking to the real
/// server.
fn bounded_pair(stream_send_buffer: usize) -> Pair {
    let client = ConnectionConfig {
        stream_send_buffer,
        ..ConnectionConfig::default()
    };
    Pair::new(client, ConnectionConfig::default())
}

/// A client with a `stream_send_buffer` of 10,000 bytes, after the handshake with a
/// scripted server whose initial stream window is `initial_window`.
fn client_with_peer_window(initial_window: u32) -> (Connection, Instant) {
    let now = Instant::now();
    let config = ConnectionConfig {
        stream_send_buffer: 10_000,
        ..ConnectionConfig::default()
    };
    let mut client = Connection::client(config, now);
    let _ = transmit(&mut client, now);
    let mut hello = Vec::new();
    Settings {
        initial_window_size: Some(initial_window),
        ..Settings::default()
    }
    .encode(&mut hello);
    Settings::new_ack().encode(&mut hello);
    client.handle_read(&hello, now);
    let _ = transmit(&mut client, now);
    while client.poll_event().is_some() {}
    (client, now)
}

/// Bytes of DATA payload in `bytes`.
fn data_len(bytes: &[u8]) -> usize {
    frames(bytes)
        .iter()
        .map(|f| match f {
            Frame::Data(d) => d.data.len(),
            _ => 0,
        })
        .sum()
}

/// The WINDOW_UPDATEs in `bytes`.
fn window_updates(bytes: &[u8]) -> Vec<(StreamId, u32)> {
    frames(bytes)
        .into_iter()
        .filter_map(|f| match f {
            Frame::WindowUpdate(w) => Some((w.stream_id, w.increment)),
            _ => None,
        })
        .collect()
}

/// Drains `conn`'s events and returns the streams of its `SendReady`s.
fn send_ready(conn: &mut Connection) -> Vec<StreamId> {
    std::iter::from_fn(|| conn.poll_event())
        .filter_map(|e| match e {
            Event::SendReady { stream } => Some(stream),
            _ => None,
        })
        .collect()
}

fn send_ready_events(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::SendReady { .. }))
        .count()
}

/// Lets the scripted server grant `increment` bytes of `id`'s window, then returns how
/// much DATA the client wrote.
fn grant(client: &mut Connection, now: Instant, id: StreamId, increment: u32) -> usize {
    let mut bytes = Vec::new();
    WindowUpdate::new(id, increment).encode(&mut bytes);
    client.handle_read(&bytes, now);
    data_len(&transmit(client, now))
}

#[test]
fn send_data_is_blocked_when_the_buffer_is_full() {
    let mut p = bounded_pair(1000);
    let id = p.client.open_stream(request("/b"), false, p.now).unwrap();
    // Below the bound the whole message is taken, even past the bound.
    p.client.send_data(id, &[1; 600], false).unwrap();
    p.client.send_data(id, &[2; 600], false).unwrap();
    assert_eq!(p.client.send_buffered(id), 1200);
    assert_eq!(
        p.client.send_data(id, &[3; 10], false),
        Err(StreamError::Blocked(id))
    );
    assert_eq!(p.client.send_buffered(id), 1200, "nothing was taken");
    // One message of any size fits into an empty queue.
    let other = p.client.open_stream(request("/b"), false, p.now).unwrap();
    p.client.send_data(other, &[4; 50_000], false).unwrap();
    assert_eq!(p.client.send_buffered(other), 50_000);
}

#[test]
fn send_data_is_accepted_again_after_transmit() {
    let mut p = bounded_pair(1000);
    let id = p.client.open_stream(request("/b"), false, p.now).unwrap();
    p.client.send_data(id, &[1; 1500], false).unwrap();
    assert_eq!(
        p.client.send_data(id, &[2; 10], false),
        Err(StreamError::Blocked(id))
    );
    p.drive();
    assert_eq!(p.client.send_buffered(id), 0);
    p.client.send_data(id, &[2; 10], true).unwrap();
    p.drive();
    let body: Vec<u8> = p
        .server_events
        .iter()
        .filter_map(|e| match e {
            Event::Data { stream, data, .. } if *stream == id => Some(data.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(body.len(), 1510, "the refused bytes were not sent");
    assert!(body[..1500].iter().all(|&b| b == 1) && body[1500..].iter().all(|&b| b == 2));
}

#[test]
fn send_ready_comes_once_when_the_queue_drains_below_half() {
    let (mut client, now) = client_with_peer_window(3000);
    let id = client.open_stream(request("/r"), false, now).unwrap();
    client.send_data(id, &[7; 12_000], false).unwrap();
    assert_eq!(
        client.send_data(id, &[7; 1], false),
        Err(StreamError::Blocked(id))
    );
    // The peer's stream window lets the data out in steps; the bound is 10,000.
    assert_eq!(data_len(&transmit(&mut client, now)), 3000);
    assert_eq!(client.send_buffered(id), 9000);
    assert_eq!(send_ready(&mut client), []);
    assert_eq!(grant(&mut client, now, id, 3000), 3000);
    assert_eq!(client.send_buffered(id), 6000);
    assert_eq!(send_ready(&mut client), [], "6,000 is not below half");
    assert_eq!(grant(&mut client, now, id, 1500), 1500);
    assert_eq!(client.send_buffered(id), 4500);
    assert_eq!(send_ready(&mut client), [id]);
    assert_eq!(grant(&mut client, now, id, 2000), 2000);
    assert_eq!(send_ready(&mut client), [], "once per Blocked");
    // A second episode gets its own event.
    client.send_data(id, &[8; 10_000], false).unwrap();
    assert_eq!(client.send_buffered(id), 12_500);
    assert_eq!(
        client.send_data(id, &[8; 1], false),
        Err(StreamError::Blocked(id))
    );
    assert_eq!(
        client.send_data(id, &[8; 1], false),
        Err(StreamError::Blocked(id))
    );
    assert_eq!(grant(&mut client, now, id, 12_500), 12_500);
    assert_eq!(send_ready(&mut client), [id]);
}

#[test]
fn no_send_ready_for_streams_never_blocked() {
    let mut p = bounded_pair(1000);
    let ids: Vec<StreamId> = (0..3)
        .map(|_| p.client.open_stream(request("/n"), false, p.now).unwrap())
        .collect();
    for (i, id) in ids.iter().enumerate() {
        // One large message each: taken whole into the empty queue, never refused.
        p.client
            .send_data(*id, &vec![i as u8; 40_000], false)
            .unwrap();
    }
    p.drive();
    p.client.send_data(ids[0], &[9; 999], true).unwrap();
    p.drive();
    assert!(ids.iter().all(|id| p.client.send_buffered(*id) == 0));
    assert_eq!(send_ready_events(&p.client_events), 0);
}

#[test]
fn end_stream_only_is_always_accepted() {
    let mut p = bounded_pair(1000);
    let id = p.client.open_stream(request("/e"), false, p.now).unwrap();
    p.client.send_data(id, &[5; 2000], false).unwrap();
    assert_eq!(
        p.client.send_data(id, &[5; 1], false),
        Err(StreamError::Blocked(id))
    );
    p.client.send_data(id, &[], true).unwrap();
    assert_eq!(p.client.send_buffered(id), 2000);
    assert_eq!(
        p.client.send_data(id, &[], true),
        Err(StreamError::AlreadyEnded(id))
    );
    p.drive();
    let (_, body, _) = client_result(&p.server_events, id);
    assert_eq!(body.len(), 2000);
    assert!(
        p.server_events
            .iter()
            .any(|e| matches!(e, Event::Data { stream, end_stream: true, .. } if *stream == id)),
        "END_STREAM arrived"
    );
    assert_eq!(
        send_ready_events(&p.client_events),
        0,
        "a stream that ended wants no more data"
    );
}

#[test]
fn stream_credit_waits_for_release_capacity_but_connection_credit_does_not() {
    // Stream window 32,768 (updates at 16,384); connection window 65,535 (updates at
    // 32,767).
    let mut c = RawClient::new(ConnectionConfig {
        stream_window: 32_768,
        connection_window: 65_535,
        ..ConnectionConfig::default()
    });
    let h = c.headers(1, false);
    let _ = c.send(&h);
    let id = StreamId::new(1);
    let mut bytes = Vec::new();
    Data::new(id, vec![0; 16_384], false).encode(&mut bytes);
    assert_eq!(window_updates(&c.send(&bytes)), []);
    let out = c.send(&bytes);
    assert_eq!(
        window_updates(&out),
        [(StreamId::ZERO, 32_768)],
        "connection credit returns on arrival, stream credit does not"
    );
    let delivered = c
        .events()
        .iter()
        .filter(|e| matches!(e, Event::Data { .. }))
        .count();
    assert_eq!(delivered, 2, "both DATA frames were delivered");
    // The application takes the data in two steps: the update waits for half the
    // stream window.
    c.server.release_capacity(id, 10_000);
    assert_eq!(window_updates(&transmit(&mut c.server, c.now)), []);
    c.server.release_capacity(id, 6_384);
    assert_eq!(
        window_updates(&transmit(&mut c.server, c.now)),
        [(id, 16_384)]
    );
    // The window really reopened: 16,384 more bytes are within it.
    let mut bytes = Vec::new();
    Data::new(id, vec![0; 16_384], false).encode(&mut bytes);
    assert_eq!(rst_reasons(&c.send(&bytes)), []);
    // And the rest was never released: one byte more is beyond it.
    let mut bytes = Vec::new();
    Data::new(id, vec![0; 1], false).encode(&mut bytes);
    assert_eq!(
        rst_reasons(&c.send(&bytes)),
        [(id, Reason::FLOW_CONTROL_ERROR)]
    );
}
