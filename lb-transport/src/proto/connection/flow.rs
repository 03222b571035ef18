//! DATA in both directions and flow control (RFC 9113 section 5.2).
//!
//! Sending: each stream queues at most [`ConnectionConfig::stream_send_buffer`] bytes
//! (refusing more with [`StreamError::Blocked`] and owing an [`Event::SendReady`]),
//! and `poll_transmit` writes DATA round-robin within the stream and connection send
//! windows, which the peer's WINDOW_UPDATEs reopen.
//!
//! Receiving: DATA must fit both receive windows. Connection credit goes back as DATA
//! arrives; a stream's goes back only when the application calls
//! [`Connection::release_capacity`]. Either is sent in batches of half the window, and
//! counts only once its WINDOW_UPDATE has been handed to `poll_transmit`.
//!
//! [`ConnectionConfig::stream_send_buffer`]: crate::proto::ConnectionConfig::stream_send_buffer

use std::ops::Bound;

use crate::frame::{self, Data, Head, Reason, StreamId, WindowUpdate};
use crate::proto::connection::{Connection, Event, StreamError};

impl Connection {
    // ----- Sending -----

    /// Queues data on a stream, ending it after the data if `end_stream`. Sent as flow
    /// control allows.
    ///
    /// The queue is bounded by [`ConnectionConfig::stream_send_buffer`]: while the
    /// bytes already queued ([`Connection::send_buffered`]) are below the bound the
    /// whole of `data` is taken, so one message of any size fits into an empty queue;
    /// at or above it nothing is taken. Empty `data` (such as an `end_stream`-only
    /// call) is always taken.
    ///
    /// # Errors
    ///
    /// - [`StreamError::NotOpen`]: the stream is not open.
    /// - [`StreamError::AlreadyEnded`]: the local side already ended it.
    /// - [`StreamError::Blocked`]: the queue is full; nothing was taken. Wait for
    ///   [`Event::SendReady`] for this stream, then send again.
    ///
    /// [`ConnectionConfig::stream_send_buffer`]: crate::proto::ConnectionConfig::stream_send_buffer
    pub fn send_data(
        &mut self,
        id: StreamId,
        data: &[u8],
        end_stream: bool,
    ) -> Result<(), StreamError> {
        let limit = self.config.stream_send_buffer;
        let stream = self.streams.get_mut(&id).ok_or(StreamError::NotOpen(id))?;
        if stream.is_ending_locally() {
            return Err(StreamError::AlreadyEnded(id));
        }
        let queued = stream.send_queued();
        // An empty queue takes anything, even when the bound is 0.
        if !data.is_empty() && queued > 0 && queued >= limit {
            stream.send_blocked = true;
            return Err(StreamError::Blocked(id));
        }
        if queued == 0 {
            stream.send_buf.clear();
            stream.send_pos = 0;
        }
        stream.send_buf.extend_from_slice(data);
        stream.end_after_data = end_stream;
        Ok(())
    }

    /// Bytes of DATA queued on `id` and not yet handed to
    /// [`Connection::poll_transmit`] (framing not counted); 0 for a stream that is
    /// gone. [`Connection::send_data`] refuses more once this reaches
    /// [`ConnectionConfig::stream_send_buffer`]; drivers also use it to give a
    /// sender's bounded buffer its room back as the data leaves.
    ///
    /// [`ConnectionConfig::stream_send_buffer`]: crate::proto::ConnectionConfig::stream_send_buffer
    #[must_use]
    pub fn send_buffered(&self, id: StreamId) -> usize {
        self.streams.get(&id).map_or(0, |s| s.send_queued())
    }

    /// Writes DATA round-robin over the streams, starting after the last one served,
    /// until `buf` reaches `stop_at` bytes or nothing more may be sent.
    pub(super) fn transmit_data(&mut self, buf: &mut Vec<u8>, stop_at: usize) {
        let after = (Bound::Excluded(self.send_cursor), Bound::Unbounded);
        let ids: Vec<StreamId> = self
            .streams
            .range(after)
            .chain(self.streams.range(..=self.send_cursor))
            .filter(|(_, s)| s.opened && s.has_pending_send())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if buf.len() >= stop_at {
                break;
            }
            self.send_cursor = id;
            self.write_stream_data(id, buf, stop_at);
            buf.append(&mut self.out);
        }
    }

    /// Writes `id`'s DATA into `buf` until its data, the windows, or `buf` reaching
    /// `stop_at` bytes runs out; then its trailers if the data is drained. Queues the
    /// [`Event::SendReady`] a blocked stream is owed once its queue is below half the
    /// bound.
    fn write_stream_data(&mut self, id: StreamId, buf: &mut Vec<u8>, stop_at: usize) {
        let max_frame = self.peer.max_frame_size as usize;
        let limit = self.config.stream_send_buffer;
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let mut wrote_any = false;
        loop {
            let left = stream.send_buf.len() - stream.send_pos;
            let window = stream.send_window.min(self.conn_send_window).max(0) as usize;
            let room = stop_at.saturating_sub(buf.len());
            let n = left.min(window).min(max_frame).min(room);
            let last_chunk = n == left;
            let end = last_chunk && stream.end_after_data && stream.trailers.is_none();
            if n == 0 && !(left == 0 && end) {
                break;
            }
            let chunk = &stream.send_buf[stream.send_pos..stream.send_pos + n];
            Head::new(frame::Kind::Data, u8::from(end), id, n).encode(buf);
            buf.extend_from_slice(chunk);
            wrote_any = true;
            stream.send_pos += n;
            stream.send_window -= n as i64;
            self.conn_send_window -= n as i64;
            if end {
                stream.local_closed = true;
                stream.end_after_data = false;
                break;
            }
            if last_chunk || buf.len() >= stop_at {
                break;
            }
        }
        if wrote_any {
            self.ping_strikes = 0;
        }
        if stream.send_blocked {
            let queued = stream.send_queued();
            if stream.is_ending_locally() {
                // The application ended the stream: it will send no more.
                stream.send_blocked = false;
            } else if queued == 0 || queued < limit / 2 {
                stream.send_blocked = false;
                self.events.push_back(Event::SendReady { stream: id });
            }
        }
        let drained = stream.send_pos == stream.send_buf.len();
        if drained {
            stream.send_buf = Vec::new();
            stream.send_pos = 0;
            if let Some(trailers) = stream.trailers.take() {
                stream.local_closed = true;
                stream.end_after_data = false;
                self.write_headers(id, &trailers, true);
            }
        }
        self.maybe_remove(id);
    }

    pub(super) fn handle_window_update(&mut self, w: WindowUpdate) {
        let inc = i64::from(w.increment);
        if w.stream_id.is_zero() {
            self.conn_send_window += inc;
            if self.conn_send_window > i64::from(frame::MAX_WINDOW_SIZE) {
                self.fail(Reason::FLOW_CONTROL_ERROR, "connection window above 2^31-1");
            }
            return;
        }
        let Some(stream) = self.streams.get_mut(&w.stream_id) else {
            if self.is_idle_stream(w.stream_id) {
                self.fail(Reason::PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream");
            }
            return;
        };
        stream.send_window += inc;
        if stream.send_window > i64::from(frame::MAX_WINDOW_SIZE) {
            self.stream_error(
                w.stream_id,
                Reason::FLOW_CONTROL_ERROR,
                "window above 2^31-1",
            );
        }
    }

    // ----- Receiving -----

    pub(super) fn handle_data(&mut self, d: Data) {
        let len = d.flow_controlled_len();
        // Connection flow control applies even to frames on closed streams.
        if len as i64 > self.conn_recv_window {
            return self.fail(
                Reason::FLOW_CONTROL_ERROR,
                "data beyond the connection window",
            );
        }
        self.conn_recv_window -= len as i64;
        self.release_connection_window(len);
        let id = d.stream_id;
        let Some(stream) = self.streams.get_mut(&id) else {
            if self.is_idle_stream(id) {
                return self.fail(Reason::PROTOCOL_ERROR, "DATA on an idle stream");
            }
            return;
        };
        if stream.remote_closed || stream.blocks_received == 0 {
            let reason = if stream.remote_closed {
                Reason::STREAM_CLOSED
            } else {
                Reason::PROTOCOL_ERROR
            };
            return self.stream_error(id, reason, "DATA in the wrong stream state");
        }
        if len as i64 > stream.recv_window {
            return self.stream_error(
                id,
                Reason::FLOW_CONTROL_ERROR,
                "data beyond the stream window",
            );
        }
        stream.recv_window -= len as i64;
        // A declared content-length must match the DATA exactly (RFC 9113 8.1.1).
        if let Some(left) = stream.content_left {
            let data = d.data.len() as u64;
            if data > left || (d.end_stream && data != left) {
                return self.stream_error(
                    id,
                    Reason::PROTOCOL_ERROR,
                    "DATA does not add up to the content-length",
                );
            }
            stream.content_left = Some(left - data);
        }
        stream.remote_closed = d.end_stream;
        // Padding is never the application's: its credit goes back at once. The
        // data's credit comes back through `release_capacity`, when the application
        // has taken it, so a slow reader stops the peer instead of growing a queue.
        let padding = len - d.data.len();
        if padding > 0 {
            self.release_stream_credit(id, padding);
        }
        self.events.push_back(Event::Data {
            stream: id,
            data: d.data,
            end_stream: d.end_stream,
        });
        self.maybe_remove(id);
    }

    /// The application has taken `len` bytes of `id`'s DATA: give the peer that much
    /// stream window back (in batches of half the window). Does nothing for a stream
    /// that is gone or whose peer has finished sending.
    ///
    /// Connection-level credit goes back as DATA arrives (as grpc-go does), so one
    /// stream whose reader is slow never stops the others; each stream's unreleased
    /// data stays within its own window.
    pub fn release_capacity(&mut self, id: StreamId, len: usize) {
        if len > 0 {
            self.release_stream_credit(id, len);
        }
    }

    fn release_stream_credit(&mut self, id: StreamId, len: usize) {
        let half = self.config.stream_window / 2;
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if stream.remote_closed {
            return;
        }
        stream.recv_unacked = stream.recv_unacked.saturating_add(len as u32);
        if stream.recv_unacked >= half {
            WindowUpdate::new(id, stream.recv_unacked).encode(&mut self.out);
            self.pending_credit.push((id, stream.recv_unacked));
            stream.recv_unacked = 0;
        }
    }

    fn release_connection_window(&mut self, len: usize) {
        self.conn_recv_unacked += len as u32;
        if self.conn_recv_unacked >= self.config.connection_window / 2 {
            WindowUpdate::new(StreamId::ZERO, self.conn_recv_unacked).encode(&mut self.out);
            self.pending_credit
                .push((StreamId::ZERO, self.conn_recv_unacked));
            self.conn_recv_unacked = 0;
        }
    }

    /// The queued WINDOW_UPDATEs were handed to `poll_transmit`: their credit now
    /// counts in our receive windows.
    pub(super) fn credit_sent(&mut self) {
        for (id, credit) in std::mem::take(&mut self.pending_credit) {
            if id.is_zero() {
                self.conn_recv_window += i64::from(credit);
            } else if let Some(stream) = self.streams.get_mut(&id) {
                stream.recv_window += i64::from(credit);
            }
        }
    }
}
