//! HTTP/2 frames (RFC 9113 section 6).
//!
//! Each frame type lives in its own file with a `load` (parse from a [`Head`] and the payload
//! bytes) and `encode` (append the whole frame to a `Vec<u8>`) pair. The RFC's MUST rules
//! that a single frame can break are checked in `load`, with the rule quoted next to the
//! check. Rules that need connection or stream state, such as the CONTINUATION sequence or
//! which stream states accept which frames, belong to the connection.
//!
//! The frame layer knows nothing about HPACK: HEADERS, PUSH_PROMISE and CONTINUATION carry
//! the raw field block fragment bytes. Frames own their payload bytes.
//!
//! [`FrameReader`] cuts frames out of a byte buffer, and [`FrameError`] says whether a
//! failure is a connection error or a stream error (RFC 9113 section 5.4) and which
//! [`Reason`] to send.

mod continuation;
mod data;
mod go_away;
mod head;
mod headers;
mod ping;
mod priority;
mod push_promise;
mod reason;
mod rst_stream;
mod settings;
mod stream_id;
mod unknown;
mod window_update;

#[cfg(test)]
mod tests;

pub use self::continuation::Continuation;
pub use self::data::Data;
pub use self::go_away::GoAway;
pub use self::head::{HEADER_LEN, Head, Kind};
pub use self::headers::Headers;
pub use self::ping::Ping;
pub use self::priority::{Priority, StreamDependency};
pub use self::push_promise::PushPromise;
pub use self::reason::Reason;
pub use self::rst_stream::RstStream;
pub use self::settings::{
    DEFAULT_HEADER_TABLE_SIZE, DEFAULT_INITIAL_WINDOW_SIZE, DEFAULT_MAX_FRAME_SIZE,
    MAX_MAX_FRAME_SIZE, MAX_WINDOW_SIZE, Settings,
};
pub use self::stream_id::StreamId;
pub use self::unknown::Unknown;
pub use self::window_update::WindowUpdate;

/// The client connection preface (RFC 9113 section 3.4), which a client sends before its
/// first SETTINGS frame.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A parsed HTTP/2 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// DATA.
    Data(Data),
    /// HEADERS.
    Headers(Headers),
    /// PRIORITY.
    Priority(Priority),
    /// RST_STREAM.
    RstStream(RstStream),
    /// SETTINGS.
    Settings(Settings),
    /// PUSH_PROMISE.
    PushPromise(PushPromise),
    /// PING.
    Ping(Ping),
    /// GOAWAY.
    GoAway(GoAway),
    /// WINDOW_UPDATE.
    WindowUpdate(WindowUpdate),
    /// CONTINUATION.
    Continuation(Continuation),
    /// A frame of a type this implementation does not know. "Implementations MUST ignore
    /// and discard frames of unknown types", so the connection drops it (unless it arrives
    /// in the middle of a field block, which is a connection error).
    Unknown(Unknown),
}

impl Frame {
    /// Parses the frame described by `head` from its `payload`, which must be exactly the
    /// `head.length()` bytes that follow the header.
    pub fn load(head: &Head, payload: &[u8]) -> Result<Self, FrameError> {
        debug_assert_eq!(payload.len(), head.length() as usize);
        let frame = match head.kind() {
            Kind::Data => Self::Data(Data::load(head, payload)?),
            Kind::Headers => Self::Headers(Headers::load(head, payload)?),
            Kind::Priority => Self::Priority(Priority::load(head, payload)?),
            Kind::RstStream => Self::RstStream(RstStream::load(head, payload)?),
            Kind::Settings => Self::Settings(Settings::load(head, payload)?),
            Kind::PushPromise => Self::PushPromise(PushPromise::load(head, payload)?),
            Kind::Ping => Self::Ping(Ping::load(head, payload)?),
            Kind::GoAway => Self::GoAway(GoAway::load(head, payload)?),
            Kind::WindowUpdate => Self::WindowUpdate(WindowUpdate::load(head, payload)?),
            Kind::Continuation => Self::Continuation(Continuation::load(head, payload)?),
            Kind::Unknown(_) => Self::Unknown(Unknown::load(head, payload)),
        };
        Ok(frame)
    }

    /// Appends the encoded frame, header included, to `dst`.
    ///
    /// # Panics
    ///
    /// Panics if the payload is longer than 2^24-1 bytes; see [`Head::new`].
    pub fn encode(&self, dst: &mut Vec<u8>) {
        match self {
            Self::Data(frame) => frame.encode(dst),
            Self::Headers(frame) => frame.encode(dst),
            Self::Priority(frame) => frame.encode(dst),
            Self::RstStream(frame) => frame.encode(dst),
            Self::Settings(frame) => frame.encode(dst),
            Self::PushPromise(frame) => frame.encode(dst),
            Self::Ping(frame) => frame.encode(dst),
            Self::GoAway(frame) => frame.encode(dst),
            Self::WindowUpdate(frame) => frame.encode(dst),
            Self::Continuation(frame) => frame.encode(dst),
            Self::Unknown(frame) => frame.encode(dst),
        }
    }

    /// The frame type.
    pub const fn kind(&self) -> Kind {
        match self {
            Self::Data(_) => Kind::Data,
            Self::Headers(_) => Kind::Headers,
            Self::Priority(_) => Kind::Priority,
            Self::RstStream(_) => Kind::RstStream,
            Self::Settings(_) => Kind::Settings,
            Self::PushPromise(_) => Kind::PushPromise,
            Self::Ping(_) => Kind::Ping,
            Self::GoAway(_) => Kind::GoAway,
            Self::WindowUpdate(_) => Kind::WindowUpdate,
            Self::Continuation(_) => Kind::Continuation,
            Self::Unknown(frame) => Kind::from_u8(frame.kind),
        }
    }

    /// The stream the frame belongs to, or [`StreamId::ZERO`] for connection frames.
    pub const fn stream_id(&self) -> StreamId {
        match self {
            Self::Data(frame) => frame.stream_id,
            Self::Headers(frame) => frame.stream_id,
            Self::Priority(frame) => frame.stream_id,
            Self::RstStream(frame) => frame.stream_id,
            Self::PushPromise(frame) => frame.stream_id,
            Self::WindowUpdate(frame) => frame.stream_id,
            Self::Continuation(frame) => frame.stream_id,
            Self::Unknown(frame) => frame.stream_id,
            Self::Settings(_) | Self::Ping(_) | Self::GoAway(_) => StreamId::ZERO,
        }
    }
}

macro_rules! frame_from {
    ($($variant:ident),* $(,)?) => {
        $(
            impl From<$variant> for Frame {
                fn from(frame: $variant) -> Self {
                    Self::$variant(frame)
                }
            }
        )*
    };
}

frame_from!(
    Data,
    Headers,
    Priority,
    RstStream,
    Settings,
    PushPromise,
    Ping,
    GoAway,
    WindowUpdate,
    Continuation,
    Unknown,
);

/// A frame that breaks RFC 9113, classified as in RFC 9113 section 5.4.
///
/// A connection error ends the connection with a GOAWAY carrying [`FrameError::reason`]. A
/// stream error resets only [`FrameError::stream_id`] with a RST_STREAM; the connection
/// goes on with the next frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// An error that makes the whole connection unusable.
    #[error("connection error {reason}: {detail}")]
    Connection {
        /// The error code to send in GOAWAY.
        reason: Reason,
        /// What was wrong, for logs.
        detail: &'static str,
    },
    /// An error confined to one stream.
    #[error("stream error {reason} on stream {stream_id}: {detail}")]
    Stream {
        /// The stream to reset.
        stream_id: StreamId,
        /// The error code to send in RST_STREAM.
        reason: Reason,
        /// What was wrong, for logs.
        detail: &'static str,
    },
}

impl FrameError {
    /// A connection error.
    const fn connection(reason: Reason, detail: &'static str) -> Self {
        Self::Connection { reason, detail }
    }

    /// A stream error on `stream_id`.
    const fn stream(stream_id: StreamId, reason: Reason, detail: &'static str) -> Self {
        Self::Stream {
            stream_id,
            reason,
            detail,
        }
    }

    /// The error code to send to the peer.
    pub const fn reason(&self) -> Reason {
        match self {
            Self::Connection { reason, .. } | Self::Stream { reason, .. } => *reason,
        }
    }

    /// The stream to reset for a stream error, or `None` for a connection error.
    pub const fn stream_id(&self) -> Option<StreamId> {
        match self {
            Self::Connection { .. } => None,
            Self::Stream { stream_id, .. } => Some(*stream_id),
        }
    }

    /// Whether this is a connection error.
    pub const fn is_connection_error(&self) -> bool {
        matches!(self, Self::Connection { .. })
    }
}

/// Splits the Pad Length byte off the front of a padded payload.
fn split_pad_len(payload: &[u8]) -> Result<(u8, &[u8]), FrameError> {
    // RFC 9113 section 4.2: a frame "too small to contain mandatory frame data" is a
    // FRAME_SIZE_ERROR, and only DATA, HEADERS and PUSH_PROMISE are padded. The latter two
    // carry a field block, which makes the error a connection error; DATA counts against
    // the connection flow-control window, so it is a connection error too.
    match payload.split_first() {
        Some((&pad_len, rest)) => Ok((pad_len, rest)),
        None => Err(FrameError::connection(
            Reason::FRAME_SIZE_ERROR,
            "padded frame without pad length",
        )),
    }
}

/// Removes `pad_len` bytes of padding from the end of `body`, what is left of the payload
/// after the Pad Length byte and any fixed fields.
fn trim_padding(body: &[u8], pad_len: u8) -> Result<&[u8], FrameError> {
    // "If the length of the padding is the length of the frame payload or greater, the
    // recipient MUST treat this as a connection error (Section 5.4.1) of type
    // PROTOCOL_ERROR." The payload includes the Pad Length byte, so padding of exactly
    // `body.len()` bytes is allowed and leaves nothing. For HEADERS and PUSH_PROMISE the
    // padding must also leave their fixed fields alone.
    let keep = body.len().checked_sub(usize::from(pad_len));
    match keep.and_then(|keep| body.get(..keep)) {
        Some(rest) => Ok(rest),
        None => Err(FrameError::connection(
            Reason::PROTOCOL_ERROR,
            "padding longer than payload",
        )),
    }
}

/// Appends `pad_len` zero bytes of padding: "Padding octets MUST be set to zero when
/// sending."
fn encode_padding(pad_len: Option<u8>, dst: &mut Vec<u8>) {
    if let Some(pad_len) = pad_len {
        dst.resize(dst.len() + usize::from(pad_len), 0);
    }
}

/// The bytes that padding adds to a payload: the Pad Length byte and the padding itself.
fn padding_len(pad_len: Option<u8>) -> usize {
    pad_len.map_or(0, |pad_len| 1 + usize::from(pad_len))
}

/// Clamps a peer's maximum frame size into the range SETTINGS_MAX_FRAME_SIZE allows.
fn clamp_max_frame_size(max_frame_size: usize) -> usize {
    max_frame_size.clamp(DEFAULT_MAX_FRAME_SIZE as usize, MAX_MAX_FRAME_SIZE as usize)
}

/// Cuts whole frames out of a byte buffer.
///
/// The reader holds no buffer and no state other than our advertised
/// SETTINGS_MAX_FRAME_SIZE: it looks at the start of the caller's buffer and says how many
/// bytes the frame there took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameReader {
    max_frame_size: u32,
}

impl FrameReader {
    /// A reader that accepts payloads up to [`DEFAULT_MAX_FRAME_SIZE`] bytes.
    pub const fn new() -> Self {
        Self {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
        }
    }

    /// The largest payload accepted, which is the SETTINGS_MAX_FRAME_SIZE we advertise.
    pub const fn max_frame_size(&self) -> u32 {
        self.max_frame_size
    }

    /// Sets the largest payload accepted. The value is clamped to the range the setting
    /// allows, 2^14..=2^24-1.
    pub fn set_max_frame_size(&mut self, max_frame_size: u32) {
        self.max_frame_size = max_frame_size.clamp(DEFAULT_MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE);
    }

    /// Reads the frame at the start of `buf`.
    ///
    /// Returns `Ok(None)` while `buf` does not hold the whole frame, and otherwise the frame
    /// and the number of bytes it took, which the caller then drops from its buffer.
    ///
    /// A header announcing a payload above the maximum frame size is a connection error as
    /// soon as the header is in, so the caller never buffers an oversized frame.
    ///
    /// Errors only come once the frame is complete or its header is oversized. After a
    /// stream error the connection goes on: the bad frame is
    /// `Head::parse(buf).map(|head| head.frame_len())` bytes long and must be skipped.
    pub fn read(&self, buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        let Some(head) = Head::parse(buf) else {
            return Ok(None);
        };
        // "An endpoint MUST send an error code of FRAME_SIZE_ERROR if a frame exceeds the
        // size defined in SETTINGS_MAX_FRAME_SIZE."
        if head.length() > self.max_frame_size {
            return Err(FrameError::connection(
                Reason::FRAME_SIZE_ERROR,
                "frame larger than max frame size",
            ));
        }
        let frame_len = head.frame_len();
        let Some(payload) = buf.get(HEADER_LEN..frame_len) else {
            return Ok(None);
        };
        let frame = Frame::load(&head, payload)?;
        Ok(Some((frame, frame_len)))
    }
}

impl Default for FrameReader {
    fn default() -> Self {
        Self::new()
    }
}
