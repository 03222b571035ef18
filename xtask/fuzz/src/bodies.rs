//! The bodies of the lb-transport and lb-core fuzz targets: what each does with its
//! input, as plain functions over public APIs.
//!
//! This one file is compiled twice:
//!
//! - as `lb_fuzz::bodies` in the fuzz project, whose targets in `../fuzz_targets/` are
//!   one line each: `fuzz_target!(|data: &[u8]| lb_fuzz::bodies::<name>(data))`;
//! - as a module of `lb-transport/tests/fuzz_regressions.rs` (through `#[path]`), which
//!   replays `../seeds/<name>/` and `../regressions/<name>/` through [`TARGETS`] under
//!   plain `cargo test`, so a fixed finding stays fixed without the fuzzer.
//!
//! So it may use only lb-transport, lb-core, serde_json and std: never libfuzzer-sys,
//! and no `mod` items of its own.
//!
//! Each body panics when a property the APIs document is broken (round trips, bounded
//! output, `Event::Closed` last), not only when the code under test panics.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use lb_core::LbPolicyRegistry;
use lb_core::config::{format_duration, parse_duration};
use lb_core::health;
use lb_core::orca::{OrcaLoadReport, OrcaLoadReportRequest};
use lb_transport::frame::{FrameReader, HEADER_LEN, Head, Settings, StreamId};
use lb_transport::hpack::{self, Decoder, Encoder, Header};
use lb_transport::proto::{Connection, ConnectionConfig, Event};
use lb_transport::server::channelz::wire as channelz;

/// What a target does with one input.
pub type Body = fn(&[u8]);

/// Every target with its body, by name: the fuzz project's `[[bin]]` names and the
/// directory names under `seeds/` and `regressions/`.
pub const TARGETS: &[(&str, Body)] = &[
    ("hpack_decode", hpack_decode),
    ("frame_decode", frame_decode),
    ("client_connection", client_connection),
    ("server_connection", server_connection),
    ("service_config", service_config),
    ("health_codec", health_codec),
    ("orca_codec", orca_codec),
    ("channelz_codec", channelz_codec),
];

/// The header list limit the HPACK target decodes with (the connection's default
/// SETTINGS_MAX_HEADER_LIST_SIZE).
pub const MAX_HEADER_LIST_SIZE: usize = 16 << 10;

// ----- hpack_decode -----

/// Decodes the input as one header block, then as a sequence of blocks on one decoder
/// so that the dynamic table carries over from block to block: each block is preceded
/// by one length byte (a last block shorter than its length byte says is what is left).
///
/// Whatever decodes is re-encoded with an [`Encoder`] and must decode to the same list.
pub fn hpack_decode(data: &[u8]) {
    let mut round_trip = HpackRoundTrip::default();
    decode_block(
        &mut Decoder::new(hpack::DEFAULT_TABLE_SIZE),
        data,
        &mut round_trip,
    );

    let mut decoder = Decoder::new(hpack::DEFAULT_TABLE_SIZE);
    let mut round_trip = HpackRoundTrip::default();
    for block in length_prefixed(data) {
        if !decode_block(&mut decoder, block, &mut round_trip) {
            // "The decoder must not be used again" after a compression error.
            break;
        }
    }
}

/// An encoder and a decoder kept in step across blocks, for round trips.
#[derive(Default)]
struct HpackRoundTrip {
    encoder: Encoder,
    decoder: Decoder,
}

/// Decodes one block; returns whether the decoder may be used again.
fn decode_block(decoder: &mut Decoder, block: &[u8], round_trip: &mut HpackRoundTrip) -> bool {
    let mut headers = Vec::new();
    let result = decoder.decode(block, MAX_HEADER_LIST_SIZE, |h| headers.push(h));
    let emitted: usize = headers.iter().map(Header::size).sum();
    assert!(
        emitted <= MAX_HEADER_LIST_SIZE,
        "decoder emitted {emitted} octets of headers, over the {MAX_HEADER_LIST_SIZE} limit"
    );
    match result {
        Ok(()) => {
            let mut encoded = Vec::new();
            round_trip.encoder.encode(&headers, &mut encoded);
            let mut again = Vec::new();
            round_trip
                .decoder
                .decode(&encoded, usize::MAX, |h| again.push(h))
                .expect("a block our encoder wrote decodes");
            assert_eq!(
                again, headers,
                "header list changed in an encode/decode round trip"
            );
            true
        }
        Err(e) => !e.is_compression_error(),
    }
}

/// Splits `data` into blocks, each preceded by a length byte.
fn length_prefixed(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (&len, rest) = data.split_first()?;
        let (block, rest) = rest.split_at(usize::from(len).min(rest.len()));
        data = rest;
        Some(block)
    })
}

// ----- frame_decode -----

/// Reads frames from the input until it runs out or a connection error, skipping the
/// frames with stream errors as a connection does. Each frame read must encode back to
/// a frame that reads the same.
pub fn frame_decode(data: &[u8]) {
    let reader = FrameReader::new();
    let mut buf = data;
    loop {
        match reader.read(buf) {
            Ok(None) => break,
            Ok(Some((frame, len))) => {
                assert!(
                    (HEADER_LEN..=buf.len()).contains(&len),
                    "frame length {len} outside 9..={}",
                    buf.len()
                );
                let mut encoded = Vec::new();
                frame.encode(&mut encoded);
                let again = reader.read(&encoded);
                assert_eq!(
                    again,
                    Ok(Some((frame, encoded.len()))),
                    "frame changed in an encode/read round trip"
                );
                buf = &buf[len..];
            }
            Err(e) if e.is_connection_error() => break,
            Err(e) => {
                let len = Head::parse(buf)
                    .map(|h| h.frame_len())
                    .unwrap_or_else(|| panic!("stream error without a frame header: {e}"));
                assert!(
                    len <= buf.len(),
                    "stream error before the frame was complete: {e}"
                );
                buf = &buf[len..];
            }
        }
    }
}

// ----- client_connection and server_connection -----

/// The request the client target opens its stream with.
fn request_headers() -> Vec<Header> {
    vec![
        Header::new(":method", "POST"),
        Header::new(":scheme", "http"),
        Header::new(":path", "/lb.test.Echo/Call"),
        Header::new(":authority", "fuzz.example"),
        Header::new("content-type", "application/grpc"),
        Header::new("te", "trailers"),
    ]
}

/// The request body the client target sends: more than one frame and more than the
/// stream window its server's SETTINGS leave it, so flow control has work to do.
const REQUEST_BODY_LEN: usize = 20_000;

/// The stream window the client target's server grants in its SETTINGS.
const SERVER_INITIAL_WINDOW: u32 = 1024;

/// A client connection with one stream open (request headers, then a body ending the
/// stream), fed a valid server SETTINGS frame and then the input as the server's bytes.
pub fn client_connection(data: &[u8]) {
    let start = Instant::now();
    let mut conn = Connection::client(ConnectionConfig::default(), start);
    let id = conn
        .open_stream(request_headers(), false, start)
        .expect("a new client connection opens a stream");
    conn.send_data(id, &[0x5a; REQUEST_BODY_LEN], true)
        .expect("the stream was just opened");
    let mut settings = Vec::new();
    Settings {
        max_concurrent_streams: Some(100),
        initial_window_size: Some(SERVER_INITIAL_WINDOW),
        ..Settings::default()
    }
    .encode(&mut settings);

    let mut run = ConnectionRun::new(conn, start, REQUEST_BODY_LEN);
    run.feed(&settings);
    assert!(
        run.conn.is_connected(),
        "the server's SETTINGS did not connect"
    );
    run.feed_chunked(data);
    run.finish();
}

/// A server connection fed the client preface and a valid client SETTINGS frame, then
/// the input as the client's bytes. Each request that arrives gets a whole response:
/// headers, a little data and trailers.
pub fn server_connection(data: &[u8]) {
    let start = Instant::now();
    let conn = Connection::server(ConnectionConfig::default(), start);
    let mut hello = lb_transport::frame::PREFACE.to_vec();
    Settings {
        enable_push: Some(0),
        initial_window_size: Some(1 << 20),
        ..Settings::default()
    }
    .encode(&mut hello);

    let mut run = ConnectionRun::new(conn, start, 0);
    run.respond = true;
    run.feed(&hello);
    assert!(
        run.conn.is_connected(),
        "the client's SETTINGS did not connect"
    );
    run.feed_chunked(data);
    run.finish();
}

/// How the input is cut into reads, cycled: single bytes, frame-header-sized pieces,
/// and large reads.
const CHUNKS: &[usize] = &[1, 9, 3, 200, 17, 4096, 2, 64];

/// How far the clock moves between reads: short of every timer in the default
/// config, so the peer's bytes, not the clock, decide what happens.
const TICK: Duration = Duration::from_millis(10);

/// The bytes of output one byte of peer input may cause, beyond the fixed parts: an
/// acknowledgement or RST_STREAM is never larger than twice the frame that caused it.
const OUTPUT_PER_INPUT_BYTE: usize = 4;

/// A connection under test, with the checks made after every read.
struct ConnectionRun {
    conn: Connection,
    now: Instant,
    /// Answer each request with a response (server).
    respond: bool,
    responded: BTreeSet<u32>,
    /// Bytes fed and written so far.
    read: usize,
    written: usize,
    /// Output allowed whatever the peer sends: preface, SETTINGS, our request.
    fixed_output: usize,
    events: usize,
    closed: bool,
}

impl ConnectionRun {
    fn new(conn: Connection, now: Instant, body_len: usize) -> Self {
        Self {
            conn,
            now,
            respond: false,
            responded: BTreeSet::new(),
            read: 0,
            written: 0,
            fixed_output: 4096 + 2 * body_len,
            events: 0,
            closed: false,
        }
    }

    /// Feeds the input in reads of varying sizes, stopping once the connection closed.
    fn feed_chunked(&mut self, data: &[u8]) {
        let mut rest = data;
        for &size in CHUNKS.iter().cycle() {
            if rest.is_empty() || self.conn.is_closed() {
                break;
            }
            let (chunk, tail) = rest.split_at(size.min(rest.len()));
            self.feed(chunk);
            rest = tail;
        }
    }

    /// One read, then everything the application does after it.
    fn feed(&mut self, bytes: &[u8]) {
        self.conn.handle_read(bytes, self.now);
        self.read += bytes.len();
        self.settle();
        self.now += TICK;
        self.conn.handle_timeout(self.now);
        self.settle();
    }

    /// The peer goes silent for an hour, so every timer fires, then hangs up.
    fn finish(&mut self) {
        self.now += Duration::from_secs(3600);
        self.conn.handle_timeout(self.now);
        self.settle();
        self.conn.handle_eof();
        self.settle();
        assert!(self.closed, "no Event::Closed after EOF");
        assert!(self.conn.is_closed(), "connection not closed after EOF");
        assert_eq!(self.conn.stream_count(), 0, "streams left after close");
        assert_eq!(self.conn.poll_timeout(), None, "a timer left after close");
    }

    /// Drains events and output, answering requests, and checks the invariants.
    fn settle(&mut self) {
        for _ in 0..8 {
            let mut progressed = false;
            while let Some(event) = self.conn.poll_event() {
                progressed = true;
                self.on_event(event);
            }
            let mut out = Vec::new();
            for _ in 0..1024 {
                if self.conn.poll_transmit(self.now, &mut out) == 0 {
                    break;
                }
                progressed = true;
            }
            assert_eq!(
                self.conn.poll_transmit(self.now, &mut out),
                0,
                "poll_transmit still had output after 1024 calls"
            );
            self.written += out.len();
            let limit = self.fixed_output + OUTPUT_PER_INPUT_BYTE * self.read;
            assert!(
                self.written <= limit,
                "wrote {} bytes for {} bytes read (limit {limit})",
                self.written,
                self.read
            );
            if !progressed {
                break;
            }
        }
        assert!(
            self.conn.poll_timeout().is_none_or(|t| t > self.now),
            "a timer is due but handle_timeout was just called"
        );
    }

    fn on_event(&mut self, event: Event) {
        assert!(!self.closed, "event after Event::Closed: {event:?}");
        self.events += 1;
        // At most a few events per frame, and a frame takes at least 9 bytes.
        let limit = 16 + self.read / 2;
        assert!(
            self.events <= limit,
            "{} events for {} bytes read",
            self.events,
            self.read
        );
        match event {
            Event::Closed(_) => self.closed = true,
            Event::Headers { stream, .. } if self.respond => self.answer(stream),
            _ => {}
        }
    }

    /// Sends a whole response on a stream the first time its headers arrive.
    fn answer(&mut self, stream: StreamId) {
        if !self.responded.insert(stream.value()) {
            return;
        }
        // The stream may already be gone (reset later in the same read); then there
        // is nothing to answer.
        let _ = self.conn.send_headers(stream, response_headers(), false);
        let _ = self.conn.send_data(stream, b"\0\0\0\0\x05hello", false);
        let _ = self.conn.send_headers(stream, trailers(), true);
        // A response costs about 80 bytes, a request at least 10.
        self.fixed_output += 128;
    }
}

fn response_headers() -> Vec<Header> {
    vec![
        Header::new(":status", "200"),
        Header::new("content-type", "application/grpc"),
    ]
}

fn trailers() -> Vec<Header> {
    vec![
        Header::new("grpc-status", "0"),
        Header::new("grpc-message", "ok"),
    ]
}

// ----- service_config -----

/// Parses the input as a `loadBalancingConfig` list with the built-in policies (when it
/// is JSON), and as a protobuf JSON duration (when it is UTF-8); a duration that parses
/// must format back to itself.
pub fn service_config(data: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = LbPolicyRegistry::with_builtins().parse_load_balancing_config(&value);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(duration) = parse_duration(text) {
            let formatted = format_duration(duration);
            assert_eq!(
                parse_duration(&formatted),
                Ok(duration),
                "{text:?} parsed to {duration:?}, formatted as {formatted:?}"
            );
        }
    }
}

// ----- health_codec -----

/// Decodes the input as a `HealthCheckRequest` and as a `HealthCheckResponse` (the
/// client-side health checks and the health service read these from peers); what
/// decodes must encode and decode back to itself.
pub fn health_codec(data: &[u8]) {
    if let Ok(service) = health::decode_request(data) {
        let again = health::decode_request(&health::encode_request(&service));
        assert_eq!(again.as_ref(), Ok(&service), "request {data:?}");
    }
    if let Ok(status) = health::decode_response(data) {
        let again = health::decode_response(&health::encode_response(status));
        assert_eq!(again, Ok(status), "response {data:?}");
    }
}

// ----- channelz_codec -----

/// Decodes the input as each `grpc.channelz.v1` request (our channelz service reads
/// these from any client): what decodes must encode and decode back to itself. Then
/// as each response our decoders read (a test reading grpcio's channelz servicer):
/// what decodes, once re-encoded, must be a fixed point (one round trip may
/// normalize, an IPv6 address's spelling say; a second must change nothing).
pub fn channelz_codec(data: &[u8]) {
    for method in channelz::Method::ALL {
        if let Ok(request) = channelz::decode_request(method, data) {
            let again = channelz::decode_request(method, &channelz::encode_request(&request));
            assert_eq!(again, Ok(request), "{method:?} {data:?}");
        }
    }
    fn fixed_point<T: PartialEq + std::fmt::Debug>(
        data: &[u8],
        decode: fn(&[u8]) -> Result<T, channelz::DecodeError>,
        encode: fn(&T) -> Vec<u8>,
    ) {
        let Ok(first) = decode(data) else {
            return;
        };
        let second = decode(&encode(&first)).expect("our encoding decodes");
        let third = decode(&encode(&second)).expect("our encoding decodes");
        assert_eq!(second, third, "{data:?}");
    }
    fixed_point(data, channelz::decode_channel, channelz::encode_channel);
    fixed_point(
        data,
        channelz::decode_subchannel,
        channelz::encode_subchannel,
    );
    fixed_point(data, channelz::decode_server, channelz::encode_server);
    fixed_point(data, channelz::decode_socket, channelz::encode_socket);
    if let Ok((refs, end)) = channelz::decode_page(data, channelz::decode_socket_ref) {
        let bytes = channelz::encode_get_server_sockets(&refs, end);
        let again = channelz::decode_page(&bytes, channelz::decode_socket_ref);
        assert_eq!(again, Ok((refs, end)), "{data:?}");
    }
}

// ----- orca_codec -----

/// Decodes the input as an ORCA `OrcaLoadReport` (per-call trailers and out-of-band
/// streams carry these from peers) and as an `OrcaLoadReportRequest` (our server reads
/// these); what decodes must encode to bytes that decode to the same encoding (bytes,
/// not values, because a NaN is never equal to itself).
pub fn orca_codec(data: &[u8]) {
    if let Ok(report) = OrcaLoadReport::decode(data) {
        let bytes = report.encode();
        let again = OrcaLoadReport::decode(&bytes).expect("our encoding decodes");
        assert_eq!(again.encode(), bytes, "report {data:?}");
    }
    if let Ok(request) = OrcaLoadReportRequest::decode(data) {
        let again = OrcaLoadReportRequest::decode(&request.encode());
        assert_eq!(again.as_ref(), Ok(&request), "request {data:?}");
    }
}
