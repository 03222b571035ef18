//! Header blocks on the wire: assembling HEADERS and CONTINUATION frames into one
//! block under the CONTINUATION-flood limits, decoding it with HPACK under
//! `max_header_list_size`, and encoding the blocks we send. What a decoded list does
//! to its stream is in `streams.rs`.

use crate::frame::{Continuation, Headers, Reason, StreamId};
use crate::hpack::Header;
use crate::proto::connection::{Connection, Role};

/// A header block being assembled from HEADERS and CONTINUATION frames.
#[derive(Debug)]
pub(super) struct PartialBlock {
    pub(super) stream: StreamId,
    fragment: Vec<u8>,
    end_stream: bool,
    continuations: usize,
}

impl Connection {
    pub(super) fn handle_headers(&mut self, h: Headers) {
        if h.end_headers {
            return self.handle_header_block(h.stream_id, h.fragment, h.end_stream);
        }
        self.partial = Some(PartialBlock {
            stream: h.stream_id,
            fragment: h.fragment,
            end_stream: h.end_stream,
            continuations: 0,
        });
        self.check_partial_size();
    }

    pub(super) fn handle_continuation(&mut self, c: Continuation) {
        let Some(partial) = &mut self.partial else {
            // "A CONTINUATION frame MUST be preceded by a HEADERS, PUSH_PROMISE or
            // CONTINUATION frame without the END_HEADERS flag set."
            return self.fail(Reason::PROTOCOL_ERROR, "unexpected CONTINUATION");
        };
        partial.fragment.extend_from_slice(&c.fragment);
        partial.continuations += 1;
        if partial.continuations > self.config.max_continuation_frames {
            return self.fail(Reason::ENHANCE_YOUR_CALM, "too many CONTINUATION frames");
        }
        if !self.check_partial_size() {
            return;
        }
        if c.end_headers {
            let partial = self.partial.take().expect("checked above");
            self.handle_header_block(partial.stream, partial.fragment, partial.end_stream);
        }
    }

    /// CONTINUATION flood defence: the compressed block may not grow past twice our
    /// header list limit.
    fn check_partial_size(&mut self) -> bool {
        let limit = 2 * self.config.max_header_list_size as usize + 1024;
        if self
            .partial
            .as_ref()
            .is_some_and(|p| p.fragment.len() > limit)
        {
            self.fail(Reason::ENHANCE_YOUR_CALM, "header block too large");
            return false;
        }
        true
    }

    /// Decodes a complete block. A block that breaks HPACK ends the connection (the
    /// tables are out of sync); one that only decodes past `max_header_list_size`
    /// resets its stream.
    fn handle_header_block(&mut self, id: StreamId, block: Vec<u8>, end_stream: bool) {
        let mut headers = Vec::new();
        let limit = self.config.max_header_list_size as usize;
        let decoded = self.decoder.decode(&block, limit, |h| headers.push(h));
        match decoded {
            Ok(()) => {}
            Err(e) if e.is_compression_error() => {
                return self.fail(Reason::COMPRESSION_ERROR, "invalid header block");
            }
            Err(_) => {
                // The table is still in sync: only this stream is refused.
                if self.role == Role::Server && !self.streams.contains_key(&id) {
                    self.last_peer_stream = self.last_peer_stream.max(id);
                }
                return self.stream_error(id, Reason::PROTOCOL_ERROR, "header list too large");
            }
        }
        match self.role {
            Role::Server => self.server_header_block(id, headers, end_stream),
            Role::Client => self.client_header_block(id, headers, end_stream),
        }
    }

    /// Encodes and queues a header block on `id`, split to the peer's frame size.
    pub(super) fn write_headers(&mut self, id: StreamId, headers: &[Header], end_stream: bool) {
        let mut block = Vec::new();
        self.encoder.encode(headers, &mut block);
        Headers::encode_block(
            id,
            &block,
            end_stream,
            self.peer.max_frame_size as usize,
            &mut self.out,
        );
        // gRFC A8: pings strikes reset whenever the server sends headers or data.
        self.ping_strikes = 0;
    }
}
