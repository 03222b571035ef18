//! SETTINGS frames (RFC 9113 section 6.5): configuration for the connection, and their
//! acknowledgement.

use super::head::ACK;
use super::{FrameError, Head, Kind, Reason, StreamId};

/// The initial SETTINGS_HEADER_TABLE_SIZE.
pub const DEFAULT_HEADER_TABLE_SIZE: u32 = 4_096;
/// The initial SETTINGS_INITIAL_WINDOW_SIZE, which is also the initial connection window.
pub const DEFAULT_INITIAL_WINDOW_SIZE: u32 = 65_535;
/// The initial SETTINGS_MAX_FRAME_SIZE, 2^14, and the smallest value it may take.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;
/// The largest SETTINGS_MAX_FRAME_SIZE, 2^24-1, and the largest payload any frame can have.
pub const MAX_MAX_FRAME_SIZE: u32 = 16_777_215;
/// The largest flow-control window, 2^31-1.
pub const MAX_WINDOW_SIZE: u32 = 0x7fff_ffff;

/// The encoded length of one setting: a 16-bit identifier and a 32-bit value.
const SETTING_LEN: usize = 6;

const HEADER_TABLE_SIZE: u16 = 0x1;
const ENABLE_PUSH: u16 = 0x2;
const MAX_CONCURRENT_STREAMS: u16 = 0x3;
const INITIAL_WINDOW_SIZE: u16 = 0x4;
const MAX_FRAME_SIZE: u16 = 0x5;
const MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// A SETTINGS frame: the settings it carries, or an acknowledgement.
///
/// `None` means the frame leaves that setting as it was. Settings this implementation does
/// not know are dropped on load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    /// Whether this frame acknowledges the peer's SETTINGS. An acknowledgement carries no
    /// settings.
    pub ack: bool,
    /// SETTINGS_HEADER_TABLE_SIZE (0x1): the largest HPACK dynamic table the sender's
    /// decoder accepts.
    pub header_table_size: Option<u32>,
    /// SETTINGS_ENABLE_PUSH (0x2): 0 or 1.
    pub enable_push: Option<u32>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS (0x3): how many streams the receiver may open.
    pub max_concurrent_streams: Option<u32>,
    /// SETTINGS_INITIAL_WINDOW_SIZE (0x4): the initial stream flow-control window, at most
    /// 2^31-1.
    pub initial_window_size: Option<u32>,
    /// SETTINGS_MAX_FRAME_SIZE (0x5): the largest payload the sender accepts, in
    /// 2^14..=2^24-1.
    pub max_frame_size: Option<u32>,
    /// SETTINGS_MAX_HEADER_LIST_SIZE (0x6): the advisory largest field section the sender
    /// accepts.
    pub max_header_list_size: Option<u32>,
}

impl Settings {
    /// A SETTINGS frame acknowledging the peer's settings.
    pub fn new_ack() -> Self {
        Self {
            ack: true,
            ..Self::default()
        }
    }

    /// Parses a SETTINGS frame.
    pub fn load(head: &Head, payload: &[u8]) -> Result<Self, FrameError> {
        debug_assert_eq!(head.kind(), Kind::Settings);
        // "If an endpoint receives a SETTINGS frame whose Stream Identifier field is
        // anything other than 0x00, the endpoint MUST respond with a connection error
        // (Section 5.4.1) of type PROTOCOL_ERROR."
        if !head.stream_id().is_zero() {
            return Err(FrameError::connection(
                Reason::PROTOCOL_ERROR,
                "settings frame on a stream",
            ));
        }
        if head.has_flag(ACK) {
            // "Receipt of a SETTINGS frame with the ACK flag set and a length field value
            // other than 0 MUST be treated as a connection error (Section 5.4.1) of type
            // FRAME_SIZE_ERROR."
            if !payload.is_empty() {
                return Err(FrameError::connection(
                    Reason::FRAME_SIZE_ERROR,
                    "settings ack with a payload",
                ));
            }
            return Ok(Self::new_ack());
        }
        // "A SETTINGS frame with a length other than a multiple of 6 octets MUST be treated
        // as a connection error (Section 5.4.1) of type FRAME_SIZE_ERROR."
        if payload.len() % SETTING_LEN != 0 {
            return Err(FrameError::connection(
                Reason::FRAME_SIZE_ERROR,
                "settings length not a multiple of 6",
            ));
        }
        let mut frame = Self::default();
        let mut entries = payload;
        // "Settings are processed in the order in which they appear", so a repeated
        // setting keeps its last value.
        while let Some((entry, rest)) = entries.split_first_chunk::<SETTING_LEN>() {
            entries = rest;
            let [i0, i1, v0, v1, v2, v3] = *entry;
            let value = u32::from_be_bytes([v0, v1, v2, v3]);
            match u16::from_be_bytes([i0, i1]) {
                HEADER_TABLE_SIZE => frame.header_table_size = Some(value),
                ENABLE_PUSH => {
                    // "Any value other than 0 or 1 MUST be treated as a connection error
                    // (Section 5.4.1) of type PROTOCOL_ERROR."
                    if value > 1 {
                        return Err(FrameError::connection(
                            Reason::PROTOCOL_ERROR,
                            "enable_push is not 0 or 1",
                        ));
                    }
                    frame.enable_push = Some(value);
                }
                MAX_CONCURRENT_STREAMS => frame.max_concurrent_streams = Some(value),
                INITIAL_WINDOW_SIZE => {
                    // "Values above the maximum flow-control window size of 2^31-1 MUST be
                    // treated as a connection error (Section 5.4.1) of type
                    // FLOW_CONTROL_ERROR."
                    if value > MAX_WINDOW_SIZE {
                        return Err(FrameError::connection(
                            Reason::FLOW_CONTROL_ERROR,
                            "initial_window_size above 2^31-1",
                        ));
                    }
                    frame.initial_window_size = Some(value);
                }
                MAX_FRAME_SIZE => {
                    // "Values outside this range MUST be treated as a connection error
                    // (Section 5.4.1) of type PROTOCOL_ERROR."
                    if !(DEFAULT_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&value) {
                        return Err(FrameError::connection(
                            Reason::PROTOCOL_ERROR,
                            "max_frame_size out of range",
                        ));
                    }
                    frame.max_frame_size = Some(value);
                }
                MAX_HEADER_LIST_SIZE => frame.max_header_list_size = Some(value),
                // "An endpoint that receives a SETTINGS frame with any unknown or
                // unsupported identifier MUST ignore that setting."
                _ => {}
            }
        }
        Ok(frame)
    }

    /// The settings that are set, as identifier and value, in identifier order.
    fn entries(&self) -> impl Iterator<Item = (u16, u32)> {
        [
            (HEADER_TABLE_SIZE, self.header_table_size),
            (ENABLE_PUSH, self.enable_push),
            (MAX_CONCURRENT_STREAMS, self.max_concurrent_streams),
            (INITIAL_WINDOW_SIZE, self.initial_window_size),
            (MAX_FRAME_SIZE, self.max_frame_size),
            (MAX_HEADER_LIST_SIZE, self.max_header_list_size),
        ]
        .into_iter()
        .filter_map(|(id, value)| Some((id, value?)))
    }

    /// Appends the frame to `dst`, with only the settings that are set.
    ///
    /// An acknowledgement is written with an empty payload, whatever else is set: "When
    /// this bit is set, the frame payload of the SETTINGS frame MUST be empty."
    pub fn encode(&self, dst: &mut Vec<u8>) {
        if self.ack {
            Head::new(Kind::Settings, ACK, StreamId::ZERO, 0).encode(dst);
            return;
        }
        let payload_len = self.entries().count() * SETTING_LEN;
        Head::new(Kind::Settings, 0, StreamId::ZERO, payload_len).encode(dst);
        for (id, value) in self.entries() {
            dst.extend_from_slice(&id.to_be_bytes());
            dst.extend_from_slice(&value.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Settings;
    use crate::frame::tests::{assert_conn_error, raw, read_one};
    use crate::frame::{Frame, Reason};

    /// The payload bytes of one setting.
    fn setting(id: u16, value: u32) -> Vec<u8> {
        let mut bytes = id.to_be_bytes().to_vec();
        bytes.extend_from_slice(&value.to_be_bytes());
        bytes
    }

    fn all_set() -> Settings {
        Settings {
            ack: false,
            header_table_size: Some(0),
            enable_push: Some(1),
            max_concurrent_streams: Some(100),
            initial_window_size: Some(0x7fff_ffff),
            max_frame_size: Some(16_777_215),
            max_header_list_size: Some(u32::MAX),
        }
    }

    #[test]
    fn round_trips() {
        let frames = [
            Settings::default(),
            Settings::new_ack(),
            all_set(),
            Settings {
                initial_window_size: Some(1 << 20),
                max_frame_size: Some(16_384),
                ..Settings::default()
            },
        ];
        for frame in frames {
            let mut bytes = Vec::new();
            frame.encode(&mut bytes);
            assert_eq!(read_one(&bytes), Ok(Frame::Settings(frame)));
        }
    }

    #[test]
    fn encodes_only_the_set_values_in_order() {
        let frame = Settings {
            enable_push: Some(0),
            max_header_list_size: Some(8192),
            ..Settings::default()
        };
        let mut bytes = Vec::new();
        frame.encode(&mut bytes);
        let mut payload = setting(0x2, 0);
        payload.extend(setting(0x6, 8192));
        assert_eq!(bytes, raw(0x4, 0, 0, &payload));

        let mut bytes = Vec::new();
        all_set().encode(&mut bytes);
        assert_eq!(bytes.len(), 9 + 6 * 6);
    }

    #[test]
    fn ack_is_encoded_empty() {
        let frame = Settings {
            ack: true,
            max_frame_size: Some(20_000),
            ..Settings::default()
        };
        let mut bytes = Vec::new();
        frame.encode(&mut bytes);
        assert_eq!(bytes, raw(0x4, 0x1, 0, &[]));
    }

    #[test]
    fn unknown_settings_are_ignored_and_the_last_value_wins() {
        let mut payload = setting(0x3, 10);
        payload.extend(setting(0x8, 1));
        payload.extend(setting(0xffff, 7));
        payload.extend(setting(0x3, 20));
        let frame = read_one(&raw(0x4, 0, 0, &payload)).expect("valid frame");
        let expected = Settings {
            max_concurrent_streams: Some(20),
            ..Settings::default()
        };
        assert_eq!(frame, Frame::Settings(expected));
    }

    #[test]
    fn every_known_setting_keeps_its_last_value() {
        let mut payload = Vec::new();
        for id in 1..=6 {
            let value = if id == 2 { 1 } else { 16_384 + u32::from(id) };
            payload.extend(setting(id, value));
        }
        for id in (1..=6).rev() {
            let value = if id == 2 { 0 } else { 20_000 + u32::from(id) };
            payload.extend(setting(id, value));
        }
        let frame = read_one(&raw(0x4, 0, 0, &payload)).expect("valid frame");
        let expected = Settings {
            ack: false,
            header_table_size: Some(20_001),
            enable_push: Some(0),
            max_concurrent_streams: Some(20_003),
            initial_window_size: Some(20_004),
            max_frame_size: Some(20_005),
            max_header_list_size: Some(20_006),
        };
        assert_eq!(frame, Frame::Settings(expected));
    }

    #[test]
    fn non_zero_stream_is_a_connection_protocol_error() {
        assert_conn_error(read_one(&raw(0x4, 0, 1, &[])), Reason::PROTOCOL_ERROR);
        assert_conn_error(read_one(&raw(0x4, 0x1, 3, &[])), Reason::PROTOCOL_ERROR);
    }

    #[test]
    fn ack_with_payload_is_a_connection_frame_size_error() {
        assert_conn_error(
            read_one(&raw(0x4, 0x1, 0, &setting(0x3, 1))),
            Reason::FRAME_SIZE_ERROR,
        );
    }

    #[test]
    fn length_not_a_multiple_of_six_is_a_connection_frame_size_error() {
        for len in [1, 5, 7, 11, 13] {
            assert_conn_error(
                read_one(&raw(0x4, 0, 0, &vec![0; len])),
                Reason::FRAME_SIZE_ERROR,
            );
        }
    }

    #[test]
    fn enable_push_must_be_zero_or_one() {
        for value in [0, 1] {
            assert!(read_one(&raw(0x4, 0, 0, &setting(0x2, value))).is_ok());
        }
        for value in [2, u32::MAX] {
            assert_conn_error(
                read_one(&raw(0x4, 0, 0, &setting(0x2, value))),
                Reason::PROTOCOL_ERROR,
            );
        }
    }

    #[test]
    fn initial_window_size_above_2_pow_31_minus_1_is_a_flow_control_error() {
        assert!(read_one(&raw(0x4, 0, 0, &setting(0x4, 0x7fff_ffff))).is_ok());
        for value in [0x8000_0000, u32::MAX] {
            assert_conn_error(
                read_one(&raw(0x4, 0, 0, &setting(0x4, value))),
                Reason::FLOW_CONTROL_ERROR,
            );
        }
    }

    #[test]
    fn max_frame_size_must_be_in_range() {
        for value in [16_384, 16_777_215] {
            assert!(read_one(&raw(0x4, 0, 0, &setting(0x5, value))).is_ok());
        }
        for value in [0, 16_383, 16_777_216, u32::MAX] {
            assert_conn_error(
                read_one(&raw(0x4, 0, 0, &setting(0x5, value))),
                Reason::PROTOCOL_ERROR,
            );
        }
    }

    #[test]
    fn a_bad_value_after_good_ones_still_fails_the_frame() {
        let mut payload = setting(0x1, 100);
        payload.extend(setting(0x2, 2));
        assert_conn_error(read_one(&raw(0x4, 0, 0, &payload)), Reason::PROTOCOL_ERROR);
    }
}
