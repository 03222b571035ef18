//! Per-stream state: opening streams (queued beyond the peer's
//! MAX_CONCURRENT_STREAMS), what a received header list does to its stream (RFC 9113
//! section 5.1), sending headers, resets both ways with the rapid-reset bucket, and
//! the bookkeeping when a stream leaves the table.

use std::time::Instant;

use crate::frame::{self, Reason, RstStream, StreamId};
use crate::hpack::Header;
use crate::proto::connection::{Connection, Event, OpenError, ResetCause, Role, StreamError};
use crate::proto::headers::{self, Kind as HeaderKind};

/// One stream, open or queued.
#[derive(Debug, Default)]
pub(super) struct Stream {
    /// Request headers not yet sent (a client stream waiting for a concurrency slot).
    pub(super) queued_headers: Option<(Vec<Header>, bool)>,
    /// HEADERS went on the wire.
    pub(super) opened: bool,
    /// Data waiting for flow-control credit.
    pub(super) send_buf: Vec<u8>,
    pub(super) send_pos: usize,
    /// Send END_STREAM once `send_buf` is drained (with trailers if any).
    pub(super) end_after_data: bool,
    pub(super) trailers: Option<Vec<Header>>,
    /// `send_data` refused data with [`StreamError::Blocked`]: an
    /// [`Event::SendReady`] is owed once the queue drains below half the bound.
    pub(super) send_blocked: bool,
    pub(super) local_closed: bool,
    pub(super) remote_closed: bool,
    /// Header blocks received: 0, 1 (headers) or 2 (trailers).
    pub(super) blocks_received: u8,
    pub(super) send_window: i64,
    pub(super) recv_window: i64,
    pub(super) recv_unacked: u32,
    /// What a received request's `content-length` says is left to come (RFC 9113
    /// section 8.1.1); `None` without one.
    pub(super) content_left: Option<u64>,
}

impl Stream {
    pub(super) fn has_pending_send(&self) -> bool {
        self.send_pos < self.send_buf.len()
            || (self.end_after_data && !self.local_closed)
            || self.trailers.is_some()
    }

    /// Bytes of DATA queued and not yet handed to `poll_transmit`.
    pub(super) fn send_queued(&self) -> usize {
        self.send_buf.len() - self.send_pos
    }

    /// Whether the local side ended the stream or asked for it to end after the
    /// queued data.
    pub(super) fn is_ending_locally(&self) -> bool {
        self.local_closed || self.end_after_data || self.trailers.is_some()
    }
}

impl Connection {
    // ----- Commands -----

    /// Opens a client stream with `headers` (a request), ending it at once if
    /// `end_stream`. Beyond the peer's MAX_CONCURRENT_STREAMS the stream is queued and
    /// opened when another ends; its id is fixed now, so events and commands can use it
    /// at once.
    ///
    /// # Errors
    ///
    /// The connection is going away or closed, stream ids are used up, or this is a
    /// server.
    pub fn open_stream(
        &mut self,
        headers: Vec<Header>,
        end_stream: bool,
        now: Instant,
    ) -> Result<StreamId, OpenError> {
        if self.role != Role::Client {
            return Err(OpenError::NotClient);
        }
        if !self.is_accepting_streams() {
            return Err(OpenError::NotAccepting);
        }
        if self.next_stream_id > frame::StreamId::MAX.value() {
            return Err(OpenError::IdsExhausted);
        }
        if let Some(limit) = self.peer.max_header_list_size {
            let size: usize = headers.iter().map(Header::size).sum();
            if size > limit as usize {
                return Err(OpenError::HeaderListTooLarge { size, limit });
            }
        }
        let id = StreamId::new(self.next_stream_id);
        self.next_stream_id += 2;
        let stream = Stream {
            queued_headers: Some((headers, end_stream)),
            send_window: i64::from(self.peer.initial_window),
            recv_window: i64::from(self.config.stream_window),
            ..Stream::default()
        };
        self.streams.insert(id, stream);
        self.queued.push_back(id);
        // gRFC A8: a stream that starts long after the last read pings first.
        if let Some(ka) = self.config.keepalive {
            if now.saturating_duration_since(self.last_read) >= ka.time && self.open_local == 0 {
                self.keepalive_ping(now);
            }
        }
        self.open_queued();
        Ok(id)
    }

    /// Sends a header block on a stream: a server's response headers, or trailers
    /// (sent after any queued data, ending the stream).
    ///
    /// # Errors
    ///
    /// The stream is not open or already ended locally.
    pub fn send_headers(
        &mut self,
        id: StreamId,
        headers: Vec<Header>,
        end_stream: bool,
    ) -> Result<(), StreamError> {
        let stream = self.streams.get_mut(&id).ok_or(StreamError::NotOpen(id))?;
        if stream.is_ending_locally() {
            return Err(StreamError::AlreadyEnded(id));
        }
        if end_stream && stream.send_pos < stream.send_buf.len() {
            stream.trailers = Some(headers);
            return Ok(());
        }
        stream.local_closed = end_stream;
        self.write_headers(id, &headers, end_stream);
        self.maybe_remove(id);
        Ok(())
    }

    /// Resets a stream (RST_STREAM with `reason`, unless it never went on the wire).
    /// Does nothing for a stream that is not open.
    pub fn reset_stream(&mut self, id: StreamId, reason: Reason) {
        let Some(stream) = self.streams.remove(&id) else {
            return;
        };
        if stream.opened || self.role == Role::Server {
            RstStream::new(id, reason).encode(&mut self.out);
        }
        self.stream_gone(id, &stream);
        self.finish_if_drained();
    }

    /// Sends the HEADERS of queued client streams while the peer's
    /// MAX_CONCURRENT_STREAMS allows.
    pub(super) fn open_queued(&mut self) {
        while self.open_local < self.peer.max_concurrent_streams {
            let Some(id) = self.queued.pop_front() else {
                return;
            };
            let Some(stream) = self.streams.get_mut(&id) else {
                continue;
            };
            let Some((headers, end_stream)) = stream.queued_headers.take() else {
                continue;
            };
            stream.opened = true;
            stream.local_closed = end_stream;
            self.open_local += 1;
            self.stats.streams_started += 1;
            self.write_headers(id, &headers, end_stream);
        }
    }

    // ----- Received header lists -----

    /// A server's decoded header list: a new request, or trailers.
    pub(super) fn server_header_block(
        &mut self,
        id: StreamId,
        headers: Vec<Header>,
        end_stream: bool,
    ) {
        if let Some(stream) = self.streams.get_mut(&id) {
            // Trailers: "… MUST contain END_STREAM"; none after the peer ended.
            if stream.remote_closed || stream.blocks_received >= 2 {
                return self.stream_error(id, Reason::STREAM_CLOSED, "headers after end of stream");
            }
            if !end_stream {
                return self.stream_error(
                    id,
                    Reason::PROTOCOL_ERROR,
                    "trailers without END_STREAM",
                );
            }
            if let Err(why) = headers::validate(&headers, HeaderKind::Trailers) {
                return self.stream_error(id, Reason::PROTOCOL_ERROR, why);
            }
            if stream.content_left.is_some_and(|n| n > 0) {
                return self.stream_error(
                    id,
                    Reason::PROTOCOL_ERROR,
                    "DATA does not add up to the content-length",
                );
            }
            stream.blocks_received = 2;
            stream.remote_closed = true;
            self.events.push_back(Event::Headers {
                stream: id,
                headers,
                end_stream,
            });
            self.maybe_remove(id);
            return;
        }
        if !id.is_client_initiated() {
            return self.fail(Reason::PROTOCOL_ERROR, "client opened an even stream");
        }
        if id <= self.last_peer_stream {
            return self.stream_error(id, Reason::STREAM_CLOSED, "headers on a closed stream");
        }
        self.last_peer_stream = id;
        if self.goaway_sent.is_some_and(|last| id > last) {
            // Above our GOAWAY's last stream id: refuse without processing.
            RstStream::new(id, Reason::REFUSED_STREAM).encode(&mut self.out);
            return;
        }
        if self.open_remote >= self.config.max_concurrent_streams {
            RstStream::new(id, Reason::REFUSED_STREAM).encode(&mut self.out);
            return;
        }
        let content_left = match headers::validate(&headers, HeaderKind::Request)
            .and_then(|()| headers::content_length(&headers))
        {
            Ok(declared) => declared,
            Err(why) => {
                RstStream::new(id, Reason::PROTOCOL_ERROR).encode(&mut self.out);
                log::debug!("stream {id}: malformed request: {why}");
                return;
            }
        };
        if end_stream && content_left.is_some_and(|n| n > 0) {
            RstStream::new(id, Reason::PROTOCOL_ERROR).encode(&mut self.out);
            log::debug!("stream {id}: malformed request: content-length without its DATA");
            return;
        }
        self.open_remote += 1;
        self.stats.streams_started += 1;
        self.streams.insert(
            id,
            Stream {
                opened: true,
                remote_closed: end_stream,
                blocks_received: 1,
                send_window: i64::from(self.peer.initial_window),
                recv_window: i64::from(self.config.stream_window),
                content_left,
                ..Stream::default()
            },
        );
        self.events.push_back(Event::Headers {
            stream: id,
            headers,
            end_stream,
        });
    }

    /// A client's decoded header list: a response (1xx skipped), or trailers.
    pub(super) fn client_header_block(
        &mut self,
        id: StreamId,
        headers: Vec<Header>,
        end_stream: bool,
    ) {
        if !id.is_client_initiated() {
            return self.fail(Reason::PROTOCOL_ERROR, "server opened a stream");
        }
        let Some(stream) = self.streams.get_mut(&id) else {
            if self.is_idle_stream(id) {
                return self.fail(Reason::PROTOCOL_ERROR, "HEADERS on an idle stream");
            }
            // A stream we already reset or finished: ignore what was in flight.
            return;
        };
        if stream.remote_closed {
            return self.stream_error(id, Reason::STREAM_CLOSED, "headers after end of stream");
        }
        let kind = if stream.blocks_received == 0 {
            HeaderKind::Response
        } else {
            HeaderKind::Trailers
        };
        if let Err(why) = headers::validate(&headers, kind) {
            return self.stream_error(id, Reason::PROTOCOL_ERROR, why);
        }
        if kind == HeaderKind::Response && is_informational(&headers) && !end_stream {
            // 1xx: skip and wait for the final response.
            return;
        }
        if kind == HeaderKind::Trailers && !end_stream {
            return self.stream_error(id, Reason::PROTOCOL_ERROR, "trailers without END_STREAM");
        }
        stream.blocks_received += 1;
        stream.remote_closed = end_stream;
        self.events.push_back(Event::Headers {
            stream: id,
            headers,
            end_stream,
        });
        self.maybe_remove(id);
    }

    // ----- Resets -----

    pub(super) fn handle_rst_stream(&mut self, r: RstStream, now: Instant) {
        if self.is_idle_stream(r.stream_id) {
            // "If a RST_STREAM frame identifying an idle stream is received, the
            // recipient MUST treat this as a connection error of type PROTOCOL_ERROR."
            return self.fail(Reason::PROTOCOL_ERROR, "RST_STREAM on an idle stream");
        }
        if self.role == Role::Server && !self.take_reset_token(now) {
            return self.fail(Reason::ENHANCE_YOUR_CALM, "too many stream resets");
        }
        let Some(stream) = self.streams.remove(&r.stream_id) else {
            return;
        };
        self.stream_gone(r.stream_id, &stream);
        let cause = if r.reason == Reason::REFUSED_STREAM && self.role == Role::Client {
            ResetCause::Refused
        } else {
            ResetCause::Peer(r.reason)
        };
        self.events.push_back(Event::Reset {
            stream: r.stream_id,
            cause,
        });
        self.finish_if_drained();
    }

    /// Rapid-reset defence: a token bucket of peer-initiated stream resets.
    fn take_reset_token(&mut self, now: Instant) -> bool {
        let rate = f64::from(self.config.max_resets_per_second);
        let elapsed = now
            .saturating_duration_since(self.reset_tokens_at)
            .as_secs_f64();
        self.reset_tokens = (self.reset_tokens + elapsed * rate).min(rate);
        self.reset_tokens_at = now;
        if self.reset_tokens < 1.0 {
            return false;
        }
        self.reset_tokens -= 1.0;
        true
    }

    /// The peer broke the protocol on one stream: RST_STREAM with `reason`, and the
    /// stream ends with [`ResetCause::Protocol`].
    pub(super) fn stream_error(&mut self, id: StreamId, reason: Reason, detail: &'static str) {
        RstStream::new(id, reason).encode(&mut self.out);
        if let Some(stream) = self.streams.remove(&id) {
            self.stream_gone(id, &stream);
            self.events.push_back(Event::Reset {
                stream: id,
                cause: ResetCause::Protocol(reason, detail),
            });
        }
        self.finish_if_drained();
    }

    // ----- Bookkeeping -----

    /// Removes `id` if both sides ended it and nothing is left to send.
    pub(super) fn maybe_remove(&mut self, id: StreamId) {
        let done = self
            .streams
            .get(&id)
            .is_some_and(|s| s.local_closed && s.remote_closed && !s.has_pending_send());
        if done {
            let stream = self.streams.remove(&id).expect("checked above");
            self.stream_gone(id, &stream);
            self.finish_if_drained();
        }
    }

    /// Bookkeeping for a stream that left the table.
    pub(super) fn stream_gone(&mut self, id: StreamId, stream: &Stream) {
        if !stream.opened {
            self.queued.retain(|q| *q != id);
            return;
        }
        self.count_end(stream);
        match self.role {
            Role::Client => self.open_local = self.open_local.saturating_sub(1),
            Role::Server => self.open_remote = self.open_remote.saturating_sub(1),
        }
        if self.role == Role::Client {
            self.open_queued();
        }
    }

    /// Counts an opened stream's end as channelz does: a client's succeeded if the
    /// peer's END_STREAM arrived, a server's if ours went out.
    pub(super) fn count_end(&mut self, stream: &Stream) {
        let ok = match self.role {
            Role::Client => stream.remote_closed,
            Role::Server => stream.local_closed,
        };
        if ok {
            self.stats.streams_succeeded += 1;
        } else {
            self.stats.streams_failed += 1;
        }
    }

    /// Whether `id` names a stream that was never opened (RFC 9113 section 5.1 "idle").
    pub(super) fn is_idle_stream(&self, id: StreamId) -> bool {
        let ours = match self.role {
            Role::Client => id.is_client_initiated(),
            Role::Server => id.is_server_initiated(),
        };
        if ours {
            id.value() >= self.next_stream_id
        } else {
            id > self.last_peer_stream
        }
    }
}

fn is_informational(headers: &[Header]) -> bool {
    headers
        .iter()
        .find(|h| h.name == b":status"[..])
        .is_some_and(|h| h.value.first() == Some(&b'1'))
}
