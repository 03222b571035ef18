//! Tests of the reader and of whole frames, and helpers shared with the per-frame tests.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use super::{
    Continuation, DEFAULT_MAX_FRAME_SIZE, Data, Frame, FrameError, FrameReader, GoAway, HEADER_LEN,
    Head, Headers, Kind, MAX_MAX_FRAME_SIZE, MAX_WINDOW_SIZE, PREFACE, Ping, Priority, PushPromise,
    Reason, RstStream, Settings, StreamDependency, StreamId, Unknown, WindowUpdate,
};

/// The bytes of a frame with the given header fields and `payload`, built by hand rather
/// than by the encoders under test.
pub(crate) fn raw(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("test payloads are small");
    let mut bytes = length.to_be_bytes()[1..].to_vec();
    bytes.push(kind);
    bytes.push(flags);
    bytes.extend_from_slice(&stream_id.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// Reads `bytes`, which must hold exactly one whole frame, with the largest frame size
/// allowed so that only the frame's own rules apply.
pub(crate) fn read_one(bytes: &[u8]) -> Result<Frame, FrameError> {
    let mut reader = FrameReader::new();
    reader.set_max_frame_size(MAX_MAX_FRAME_SIZE);
    match reader.read(bytes)? {
        Some((frame, used)) => {
            assert_eq!(used, bytes.len(), "the frame must use the whole input");
            Ok(frame)
        }
        None => panic!("incomplete frame in {bytes:?}"),
    }
}

/// Reads every frame in `bytes`, which must hold only whole, valid frames.
pub(crate) fn read_all(bytes: &[u8]) -> Vec<Frame> {
    let reader = FrameReader::new();
    let mut frames = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (frame, used) = reader
            .read(rest)
            .expect("valid frame")
            .expect("whole frame");
        frames.push(frame);
        rest = &rest[used..];
    }
    frames
}

/// Asserts that `result` is a connection error with `reason`.
#[track_caller]
pub(crate) fn assert_conn_error(result: Result<Frame, FrameError>, reason: Reason) {
    let error = result.expect_err("the frame must be rejected");
    assert!(
        error.is_connection_error(),
        "{error} is not a connection error"
    );
    assert_eq!(error.stream_id(), None);
    assert_eq!(error.reason(), reason, "{error}");
}

/// Asserts that `result` is a stream error on `stream_id` with `reason`.
#[track_caller]
pub(crate) fn assert_stream_error(
    result: Result<Frame, FrameError>,
    stream_id: u32,
    reason: Reason,
) {
    let error = result.expect_err("the frame must be rejected");
    assert!(
        !error.is_connection_error(),
        "{error} is not a stream error"
    );
    assert_eq!(error.stream_id(), Some(StreamId::new(stream_id)), "{error}");
    assert_eq!(error.reason(), reason, "{error}");
}

/// Reads frames from the front of `buf` until it holds no whole frame, removing the bytes
/// they used.
fn drain(reader: &FrameReader, buf: &mut Vec<u8>, out: &mut Vec<Frame>) {
    while let Some((frame, used)) = reader.read(buf).expect("valid frames") {
        out.push(frame);
        buf.drain(..used);
    }
}

/// A sample of every frame type, with padding and priority where they exist.
fn sample_frames() -> Vec<Frame> {
    vec![
        Settings {
            max_frame_size: Some(32_768),
            enable_push: Some(0),
            ..Settings::default()
        }
        .into(),
        Settings::new_ack().into(),
        Headers {
            stream_id: StreamId::new(1),
            priority: Some(StreamDependency {
                dependency_id: StreamId::ZERO,
                exclusive: false,
                weight: 15,
            }),
            fragment: b"\x82\x86\x84".to_vec(),
            end_stream: false,
            end_headers: false,
            pad_len: Some(3),
        }
        .into(),
        Continuation {
            stream_id: StreamId::new(1),
            fragment: b"\x41\x8a".to_vec(),
            end_headers: true,
        }
        .into(),
        Data {
            stream_id: StreamId::new(1),
            data: b"hello world".to_vec(),
            end_stream: true,
            pad_len: Some(0),
        }
        .into(),
        Priority {
            stream_id: StreamId::new(3),
            dependency: StreamDependency {
                dependency_id: StreamId::new(1),
                exclusive: true,
                weight: 0,
            },
        }
        .into(),
        PushPromise::new(StreamId::new(1), StreamId::new(2), b"\x82".to_vec(), true).into(),
        Data::new(StreamId::new(3), Vec::new(), false).into(),
        WindowUpdate::new(StreamId::ZERO, 1_000_000).into(),
        RstStream::new(StreamId::new(3), Reason::CANCEL).into(),
        Ping::new(*b"12345678").into(),
        Unknown {
            kind: 0xf0,
            flags: 0x3,
            stream_id: StreamId::new(9),
            payload: b"extension".to_vec(),
        }
        .into(),
        GoAway {
            last_stream_id: StreamId::new(3),
            reason: Reason::NO_ERROR,
            debug_data: b"bye".to_vec(),
        }
        .into(),
    ]
}

/// The concatenated encoding of `frames`, and the offset at which each frame ends.
fn encode_all(frames: &[Frame]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for frame in frames {
        frame.encode(&mut bytes);
        ends.push(bytes.len());
    }
    (bytes, ends)
}

#[test]
fn preface_matches_the_rfc_octets() {
    let hex = "505249202a20485454502f322e300d0a0d0a534d0d0a0d0a";
    let expected: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    assert_eq!(PREFACE, expected.as_slice());
    assert_eq!(PREFACE.len(), 24);
}

#[test]
fn reads_a_sequence_of_frames_in_order() {
    let frames = sample_frames();
    let (bytes, _) = encode_all(&frames);
    assert_eq!(read_all(&bytes), frames);
}

#[test]
fn every_split_point_yields_the_same_frames() {
    let frames = sample_frames();
    let (bytes, ends) = encode_all(&frames);
    let reader = FrameReader::new();
    for split in 0..=bytes.len() {
        let mut buf = bytes[..split].to_vec();
        let mut got = Vec::new();
        drain(&reader, &mut buf, &mut got);
        // Exactly the frames that end within the first `split` bytes come out; the reader
        // says Ok(None) for the partial frame after them.
        let complete = ends.iter().filter(|&&end| end <= split).count();
        assert_eq!(got.as_slice(), &frames[..complete], "split at {split}");

        buf.extend_from_slice(&bytes[split..]);
        drain(&reader, &mut buf, &mut got);
        assert!(buf.is_empty(), "split at {split} left {} bytes", buf.len());
        assert_eq!(got, frames, "split at {split}");
    }
}

#[test]
fn byte_by_byte_input_yields_each_frame_when_its_last_byte_arrives() {
    let frames = sample_frames();
    let (bytes, ends) = encode_all(&frames);
    let reader = FrameReader::new();
    let mut buf = Vec::new();
    let mut got = Vec::new();
    for (index, &byte) in bytes.iter().enumerate() {
        buf.push(byte);
        let before = got.len();
        drain(&reader, &mut buf, &mut got);
        let frame_ended = ends.contains(&(index + 1));
        assert_eq!(got.len() - before, usize::from(frame_ended), "byte {index}");
    }
    assert_eq!(got, frames);
}

#[test]
fn empty_and_partial_headers_need_more_bytes() {
    let reader = FrameReader::new();
    let bytes = raw(0x6, 0, 0, &[0; 8]);
    for len in 0..bytes.len() {
        assert_eq!(reader.read(&bytes[..len]), Ok(None), "{len} bytes");
    }
}

#[test]
fn oversized_length_is_rejected_from_the_header_alone() {
    let reader = FrameReader::new();
    // A DATA header announcing 16385 bytes, with none of the payload present.
    let header = [0x00, 0x40, 0x01, 0x0, 0x0, 0, 0, 0, 1];
    let error = reader.read(&header).expect_err("too large");
    assert!(error.is_connection_error());
    assert_eq!(error.reason(), Reason::FRAME_SIZE_ERROR);

    // Exactly the maximum is fine and waits for its payload.
    let header = [0x00, 0x40, 0x00, 0x0, 0x0, 0, 0, 0, 1];
    assert_eq!(reader.read(&header), Ok(None));

    // The limit applies to every type, unknown ones included.
    let header = [0xff, 0xff, 0xff, 0xee, 0x0, 0, 0, 0, 0];
    assert_eq!(
        reader.read(&header).map_err(|error| error.reason()),
        Err(Reason::FRAME_SIZE_ERROR)
    );
}

#[test]
fn a_larger_max_frame_size_accepts_larger_frames() {
    let mut reader = FrameReader::default();
    assert_eq!(reader.max_frame_size(), DEFAULT_MAX_FRAME_SIZE);
    let frame = Frame::from(Data::new(StreamId::new(1), vec![7; 20_000], false));
    let mut bytes = Vec::new();
    frame.encode(&mut bytes);
    assert!(reader.read(&bytes).is_err());

    reader.set_max_frame_size(20_000);
    assert_eq!(reader.read(&bytes), Ok(Some((frame, bytes.len()))));
}

#[test]
fn max_frame_size_is_clamped_to_the_legal_range() {
    let mut reader = FrameReader::new();
    reader.set_max_frame_size(0);
    assert_eq!(reader.max_frame_size(), 16_384);
    reader.set_max_frame_size(u32::MAX);
    assert_eq!(reader.max_frame_size(), 16_777_215);
}

#[test]
fn a_stream_error_can_be_skipped_and_reading_goes_on() {
    let mut bytes = raw(0x2, 0, 3, &[0; 4]);
    bytes.extend(raw(0x6, 0, 0, b"abcdefgh"));
    let reader = FrameReader::new();

    let error = reader.read(&bytes).expect_err("bad PRIORITY length");
    assert_eq!(error.stream_id(), Some(StreamId::new(3)));
    assert_eq!(error.reason(), Reason::FRAME_SIZE_ERROR);

    let skip = Head::parse(&bytes).map(|head| head.frame_len());
    assert_eq!(skip, Some(HEADER_LEN + 4));
    let rest = &bytes[HEADER_LEN + 4..];
    assert_eq!(
        reader.read(rest),
        Ok(Some((Ping::new(*b"abcdefgh").into(), rest.len())))
    );
}

#[test]
fn frame_reports_its_kind_and_stream() {
    let expected = [
        (Kind::Settings, 0),
        (Kind::Settings, 0),
        (Kind::Headers, 1),
        (Kind::Continuation, 1),
        (Kind::Data, 1),
        (Kind::Priority, 3),
        (Kind::PushPromise, 1),
        (Kind::Data, 3),
        (Kind::WindowUpdate, 0),
        (Kind::RstStream, 3),
        (Kind::Ping, 0),
        (Kind::Unknown(0xf0), 9),
        (Kind::GoAway, 0),
    ];
    let frames = sample_frames();
    assert_eq!(frames.len(), expected.len());
    for (frame, (kind, stream)) in frames.iter().zip(expected) {
        assert_eq!(frame.kind(), kind, "{frame:?}");
        assert_eq!(frame.stream_id(), StreamId::new(stream), "{frame:?}");
    }
}

#[test]
fn errors_display_their_class_and_reason() {
    let error = read_one(&raw(0x0, 0, 0, b"")).expect_err("DATA on stream 0");
    assert_eq!(
        error.to_string(),
        "connection error PROTOCOL_ERROR: data frame on stream 0"
    );
    let error = read_one(&raw(0x8, 0, 7, &[0; 4])).expect_err("zero increment");
    assert_eq!(
        error.to_string(),
        "stream error PROTOCOL_ERROR on stream 7: window_update increment is 0"
    );
}

fn stream_id() -> impl Strategy<Value = StreamId> {
    any::<u32>().prop_map(StreamId::new)
}

fn nonzero_stream_id() -> impl Strategy<Value = StreamId> {
    (1..=StreamId::MAX.value()).prop_map(StreamId::new)
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..64)
}

fn dependency() -> impl Strategy<Value = StreamDependency> {
    (stream_id(), any::<bool>(), any::<u8>()).prop_map(|(dependency_id, exclusive, weight)| {
        StreamDependency {
            dependency_id,
            exclusive,
            weight,
        }
    })
}

fn settings() -> impl Strategy<Value = Settings> {
    let values = (
        option::of(any::<u32>()),
        option::of(0..=1u32),
        option::of(any::<u32>()),
        option::of(0..=MAX_WINDOW_SIZE),
        option::of(DEFAULT_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE),
        option::of(any::<u32>()),
    );
    prop_oneof![
        Just(Settings::new_ack()),
        values.prop_map(
            |(
                header_table_size,
                enable_push,
                max_concurrent_streams,
                initial_window_size,
                max_frame_size,
                max_header_list_size,
            )| Settings {
                ack: false,
                header_table_size,
                enable_push,
                max_concurrent_streams,
                initial_window_size,
                max_frame_size,
                max_header_list_size,
            }
        ),
    ]
}

/// Any valid frame, so that encoding then reading gives it back unchanged.
fn frame() -> impl Strategy<Value = Frame> {
    let data = (
        nonzero_stream_id(),
        bytes(),
        any::<bool>(),
        option::of(any::<u8>()),
    )
        .prop_map(|(stream_id, data, end_stream, pad_len)| {
            Frame::from(Data {
                stream_id,
                data,
                end_stream,
                pad_len,
            })
        });
    let headers = (
        nonzero_stream_id(),
        option::of(dependency()),
        bytes(),
        any::<bool>(),
        any::<bool>(),
        option::of(any::<u8>()),
    )
        .prop_map(
            |(stream_id, priority, fragment, end_stream, end_headers, pad_len)| {
                Frame::from(Headers {
                    stream_id,
                    priority,
                    fragment,
                    end_stream,
                    end_headers,
                    pad_len,
                })
            },
        );
    let priority = (nonzero_stream_id(), dependency()).prop_map(|(stream_id, dependency)| {
        Frame::from(Priority {
            stream_id,
            dependency,
        })
    });
    let rst_stream = (nonzero_stream_id(), any::<u32>())
        .prop_map(|(stream_id, code)| Frame::from(RstStream::new(stream_id, Reason::new(code))));
    let push_promise = (
        nonzero_stream_id(),
        (1..=MAX_WINDOW_SIZE / 2).prop_map(|half| StreamId::new(half * 2)),
        bytes(),
        any::<bool>(),
        option::of(any::<u8>()),
    )
        .prop_map(|(stream_id, promised_id, fragment, end_headers, pad_len)| {
            Frame::from(PushPromise {
                stream_id,
                promised_id,
                fragment,
                end_headers,
                pad_len,
            })
        });
    let ping = (any::<bool>(), any::<[u8; 8]>())
        .prop_map(|(ack, payload)| Frame::from(Ping { ack, payload }));
    let go_away =
        (stream_id(), any::<u32>(), bytes()).prop_map(|(last_stream_id, code, debug_data)| {
            Frame::from(GoAway {
                last_stream_id,
                reason: Reason::new(code),
                debug_data,
            })
        });
    let window_update = (stream_id(), 1..=MAX_WINDOW_SIZE)
        .prop_map(|(stream_id, increment)| Frame::from(WindowUpdate::new(stream_id, increment)));
    let continuation = (nonzero_stream_id(), bytes(), any::<bool>()).prop_map(
        |(stream_id, fragment, end_headers)| {
            Frame::from(Continuation {
                stream_id,
                fragment,
                end_headers,
            })
        },
    );
    let unknown = (0xa..=u8::MAX, any::<u8>(), stream_id(), bytes()).prop_map(
        |(kind, flags, stream_id, payload)| {
            Frame::from(Unknown {
                kind,
                flags,
                stream_id,
                payload,
            })
        },
    );
    prop_oneof![
        data,
        headers,
        priority,
        rst_stream,
        settings().prop_map(Frame::from),
        push_promise,
        ping,
        go_away,
        window_update,
        continuation,
        unknown,
    ]
}

/// Bytes shaped like frames: headers with honest lengths around random payloads, so that
/// the per-type parsers see arbitrary input rather than the reader stopping at a bogus
/// length.
fn frame_shaped_bytes() -> impl Strategy<Value = Vec<u8>> {
    let one = (0..=0xbu8, any::<u8>(), 0..8u32, vec(any::<u8>(), 0..48));
    vec(one, 0..8).prop_map(|frames| {
        frames
            .into_iter()
            .flat_map(|(kind, flags, stream, payload)| raw(kind, flags, stream, &payload))
            .collect()
    })
}

/// Reads `input` the way a connection would, stopping at the first error or at an
/// incomplete frame, and checks what the reader promises on the way.
fn read_until_stuck(input: &[u8]) {
    let reader = FrameReader::new();
    let mut rest = input;
    while let Ok(Some((frame, used))) = reader.read(rest) {
        let head = Head::parse(rest).expect("a frame has a header");
        assert_eq!(used, head.frame_len());
        assert!(used <= rest.len());
        // Whatever was accepted encodes into a frame that reads back the same, even when
        // the input had unused flags set or non-zero padding.
        let mut encoded = Vec::new();
        frame.encode(&mut encoded);
        assert_eq!(reader.read(&encoded), Ok(Some((frame, encoded.len()))));
        rest = &rest[used..];
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(input in vec(any::<u8>(), 0..2048)) {
        read_until_stuck(&input);
    }

    #[test]
    fn random_frame_shaped_bytes_never_panic(input in frame_shaped_bytes()) {
        read_until_stuck(&input);
    }

    #[test]
    fn any_frame_round_trips(frame in frame()) {
        let mut bytes = Vec::new();
        frame.encode(&mut bytes);
        let head = Head::parse(&bytes).expect("encoded frames have a header");
        prop_assert_eq!(head.frame_len(), bytes.len());
        prop_assert_eq!(head.kind(), frame.kind());
        prop_assert_eq!(head.stream_id(), frame.stream_id());
        prop_assert_eq!(FrameReader::new().read(&bytes), Ok(Some((frame, bytes.len()))));
    }

    #[test]
    fn any_frame_sequence_round_trips(frames in vec(frame(), 0..16), split in any::<prop::sample::Index>()) {
        let (bytes, _) = encode_all(&frames);
        let split = split.index(bytes.len() + 1);
        let reader = FrameReader::new();
        let mut buf = bytes[..split].to_vec();
        let mut got = Vec::new();
        drain(&reader, &mut buf, &mut got);
        buf.extend_from_slice(&bytes[split..]);
        drain(&reader, &mut buf, &mut got);
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn header_blocks_split_and_reassemble(
        block in vec(any::<u8>(), 0..50_000),
        end_stream in any::<bool>(),
        max_frame_size in 16_384usize..20_000,
    ) {
        let mut bytes = Vec::new();
        Headers::encode_block(StreamId::new(1), &block, end_stream, max_frame_size, &mut bytes);
        let mut reader = FrameReader::new();
        reader.set_max_frame_size(u32::try_from(max_frame_size).expect("small"));
        let mut rest = bytes.as_slice();
        let mut frames = Vec::new();
        while let Some((frame, used)) = reader.read(rest).expect("valid frames") {
            frames.push(frame);
            rest = &rest[used..];
        }
        prop_assert!(rest.is_empty());
        let mut joined = Vec::new();
        let last = frames.len() - 1;
        for (index, frame) in frames.into_iter().enumerate() {
            match frame {
                Frame::Headers(headers) if index == 0 => {
                    prop_assert_eq!(headers.end_stream, end_stream);
                    prop_assert_eq!(headers.end_headers, index == last);
                    joined.extend(headers.fragment);
                }
                Frame::Continuation(continuation) if index > 0 => {
                    prop_assert_eq!(continuation.end_headers, index == last);
                    joined.extend(continuation.fragment);
                }
                other => prop_assert!(false, "unexpected frame {:?} at {}", other, index),
            }
        }
        prop_assert_eq!(joined, block);
    }
}
