//! DATA frames (RFC 9113 section 6.1): message content on a stream.

use super::head::{END_STREAM, PADDED};
use super::{
    FrameError, Head, Kind, Reason, StreamId, clamp_max_frame_size, encode_padding, padding_len,
    split_pad_len, trim_padding,
};

/// A DATA frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    /// The stream the data belongs to; never zero.
    pub stream_id: StreamId,
    /// The application data, without padding.
    pub data: Vec<u8>,
    /// Whether this is the last frame the sender sends on the stream.
    pub end_stream: bool,
    /// The length of the padding when the PADDED flag is set.
    pub pad_len: Option<u8>,
}

impl Data {
    /// An unpadded DATA frame.
    pub fn new(stream_id: StreamId, data: Vec<u8>, end_stream: bool) -> Self {
        Self {
            stream_id,
            data,
            end_stream,
            pad_len: None,
        }
    }

    /// Parses a DATA frame.
    pub fn load(head: &Head, payload: &[u8]) -> Result<Self, FrameError> {
        debug_assert_eq!(head.kind(), Kind::Data);
        // "If a DATA frame is received whose Stream Identifier field is 0x00, the recipient
        // MUST respond with a connection error (Section 5.4.1) of type PROTOCOL_ERROR."
        if head.stream_id().is_zero() {
            return Err(FrameError::connection(
                Reason::PROTOCOL_ERROR,
                "data frame on stream 0",
            ));
        }
        let (data, pad_len) = if head.has_flag(PADDED) {
            let (pad_len, rest) = split_pad_len(payload)?;
            (trim_padding(rest, pad_len)?, Some(pad_len))
        } else {
            (payload, None)
        };
        Ok(Self {
            stream_id: head.stream_id(),
            data: data.to_vec(),
            end_stream: head.has_flag(END_STREAM),
            pad_len,
        })
    }

    /// The number of bytes the frame counts against flow control: "The entire DATA frame
    /// payload is included in flow control, including the Pad Length and Padding fields if
    /// present."
    pub fn flow_controlled_len(&self) -> usize {
        self.data.len() + padding_len(self.pad_len)
    }

    /// Appends the frame to `dst` as one DATA frame, whatever its length.
    ///
    /// The caller keeps the payload within the peer's maximum frame size, or uses
    /// [`Data::encode_chunked`] to split it.
    ///
    /// # Panics
    ///
    /// Panics if the payload is longer than 2^24-1 bytes; see [`Head::new`].
    pub fn encode(&self, dst: &mut Vec<u8>) {
        let mut flags = 0;
        if self.end_stream {
            flags |= END_STREAM;
        }
        if self.pad_len.is_some() {
            flags |= PADDED;
        }
        let head = Head::new(
            Kind::Data,
            flags,
            self.stream_id,
            self.flow_controlled_len(),
        );
        head.encode(dst);
        if let Some(pad_len) = self.pad_len {
            dst.push(pad_len);
        }
        dst.extend_from_slice(&self.data);
        encode_padding(self.pad_len, dst);
    }

    /// Appends `data` to `dst` as unpadded DATA frames of at most `max_frame_size` payload
    /// bytes each, with END_STREAM (if `end_stream`) on the last one only. Empty `data`
    /// still makes one empty frame.
    ///
    /// `max_frame_size` is the peer's SETTINGS_MAX_FRAME_SIZE and is clamped to the range
    /// that setting allows, 2^14..=2^24-1. Flow control is the caller's job.
    pub fn encode_chunked(
        stream_id: StreamId,
        data: &[u8],
        end_stream: bool,
        max_frame_size: usize,
        dst: &mut Vec<u8>,
    ) {
        let max_frame_size = clamp_max_frame_size(max_frame_size);
        let mut rest = data;
        loop {
            let (chunk, tail) = rest.split_at(rest.len().min(max_frame_size));
            rest = tail;
            let last = rest.is_empty();
            let flags = if last && end_stream { END_STREAM } else { 0 };
            Head::new(Kind::Data, flags, stream_id, chunk.len()).encode(dst);
            dst.extend_from_slice(chunk);
            if last {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Data;
    use crate::frame::tests::{assert_conn_error, raw, read_all, read_one};
    use crate::frame::{DEFAULT_MAX_FRAME_SIZE, Frame, Reason, StreamId};

    #[test]
    fn round_trips() {
        let frames = [
            Data::new(StreamId::new(1), b"hello".to_vec(), false),
            Data::new(StreamId::new(3), Vec::new(), true),
            Data {
                stream_id: StreamId::new(5),
                data: b"padded".to_vec(),
                end_stream: true,
                pad_len: Some(7),
            },
            Data {
                stream_id: StreamId::new(7),
                data: Vec::new(),
                end_stream: false,
                pad_len: Some(0),
            },
        ];
        for frame in frames {
            let mut bytes = Vec::new();
            frame.encode(&mut bytes);
            assert_eq!(read_one(&bytes), Ok(Frame::Data(frame)));
        }
    }

    #[test]
    fn encodes_the_wire_layout() {
        let frame = Data {
            stream_id: StreamId::new(1),
            data: b"ab".to_vec(),
            end_stream: true,
            pad_len: Some(2),
        };
        let mut bytes = Vec::new();
        frame.encode(&mut bytes);
        assert_eq!(bytes, raw(0x0, 0x9, 1, &[2, b'a', b'b', 0, 0]));
        assert_eq!(frame.flow_controlled_len(), 5);
    }

    #[test]
    fn unknown_flags_are_ignored() {
        let frame = read_one(&raw(0x0, 0xf6, 1, b"x")).expect("valid frame");
        assert_eq!(
            frame,
            Frame::Data(Data::new(StreamId::new(1), b"x".to_vec(), false))
        );
    }

    #[test]
    fn stream_zero_is_a_connection_protocol_error() {
        assert_conn_error(read_one(&raw(0x0, 0x0, 0, b"x")), Reason::PROTOCOL_ERROR);
    }

    #[test]
    fn padding_may_fill_the_rest_of_the_payload() {
        // Pad length 3 after the Pad Length byte leaves exactly 3 bytes: no data at all.
        let frame = read_one(&raw(0x0, 0x8, 1, &[3, 0, 0, 0])).expect("valid frame");
        let Frame::Data(data) = frame else {
            panic!("expected DATA, got {frame:?}");
        };
        assert!(data.data.is_empty());
        assert_eq!(data.pad_len, Some(3));
        assert_eq!(data.flow_controlled_len(), 4);
    }

    #[test]
    fn padding_as_long_as_the_payload_is_a_connection_protocol_error() {
        // The payload is 4 bytes and the padding claims 4: "the length of the padding is
        // the length of the frame payload".
        assert_conn_error(
            read_one(&raw(0x0, 0x8, 1, &[4, 0, 0, 0])),
            Reason::PROTOCOL_ERROR,
        );
        assert_conn_error(read_one(&raw(0x0, 0x8, 1, &[255])), Reason::PROTOCOL_ERROR);
    }

    #[test]
    fn padded_without_pad_length_is_a_connection_frame_size_error() {
        assert_conn_error(read_one(&raw(0x0, 0x8, 1, &[])), Reason::FRAME_SIZE_ERROR);
    }

    #[test]
    fn chunked_encoding_respects_max_frame_size() {
        let payload: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        let mut bytes = Vec::new();
        Data::encode_chunked(StreamId::new(1), &payload, true, 16_384, &mut bytes);
        let frames = read_all(&bytes);
        let sizes: Vec<usize> = frames
            .iter()
            .map(|frame| match frame {
                Frame::Data(data) => data.data.len(),
                other => panic!("expected DATA, got {other:?}"),
            })
            .collect();
        assert_eq!(sizes, [16_384, 16_384, 40_000 - 2 * 16_384]);
        let end_flags: Vec<bool> = frames
            .iter()
            .map(|frame| matches!(frame, Frame::Data(data) if data.end_stream))
            .collect();
        assert_eq!(end_flags, [false, false, true]);
        let joined: Vec<u8> = frames
            .into_iter()
            .flat_map(|frame| match frame {
                Frame::Data(data) => data.data,
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(joined, payload);
    }

    #[test]
    fn chunked_encoding_of_exactly_one_frame_and_of_nothing() {
        let max = DEFAULT_MAX_FRAME_SIZE as usize;
        let mut bytes = Vec::new();
        Data::encode_chunked(StreamId::new(1), &vec![1; max], false, max, &mut bytes);
        assert_eq!(read_all(&bytes).len(), 1);

        let mut bytes = Vec::new();
        Data::encode_chunked(StreamId::new(1), &[], true, max, &mut bytes);
        assert_eq!(
            read_all(&bytes),
            [Frame::Data(Data::new(StreamId::new(1), Vec::new(), true))]
        );
    }

    #[test]
    fn chunked_encoding_clamps_a_too_small_max_frame_size() {
        let mut bytes = Vec::new();
        Data::encode_chunked(StreamId::new(1), &[0; 20_000], false, 0, &mut bytes);
        assert_eq!(read_all(&bytes).len(), 2);
    }
}
