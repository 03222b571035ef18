//! GOAWAY in both directions and how a connection ends: the server's graceful
//! two-phase shutdown (RFC 9113 section 6.8), draining until the last stream is
//! done, connection errors we detect, and the final [`Event::Closed`].

use std::ops::Bound;

use crate::frame::{GoAway, Ping, Reason, StreamId};
use crate::proto::connection::{Connection, ConnectionError, Event, ResetCause, Role, TIMERS};

/// The payload of the PING that ends the first phase of a graceful GOAWAY.
pub(super) const SHUTDOWN_PING: [u8; 8] = *b"shutdown";

impl Connection {
    /// Sends GOAWAY: no new streams are accepted; streams up to the last one the peer
    /// opened finish. With an error `reason` the connection ends at once.
    ///
    /// A server's graceful GOAWAY (NO_ERROR) has two phases, as RFC 9113 section 6.8
    /// suggests: a GOAWAY with the largest stream id and a PING; when the PING is
    /// acknowledged, every stream the client sent before seeing the GOAWAY has
    /// arrived, and the final GOAWAY names the real last stream. So no request in
    /// flight is refused.
    pub fn go_away(&mut self, reason: Reason, debug: &[u8]) {
        if self.closed || self.goaway_sent.is_some() {
            return;
        }
        if self.role == Role::Server && reason == Reason::NO_ERROR {
            GoAway {
                last_stream_id: StreamId::MAX,
                reason,
                debug_data: debug.to_vec(),
            }
            .encode(&mut self.out);
            Ping::new(SHUTDOWN_PING).encode(&mut self.out);
            self.goaway_sent = Some(StreamId::MAX);
            self.shutdown_ping_outstanding = true;
            return;
        }
        let last = self.last_peer_stream;
        GoAway {
            last_stream_id: last,
            reason,
            debug_data: debug.to_vec(),
        }
        .encode(&mut self.out);
        self.goaway_sent = Some(last);
        for id in std::mem::take(&mut self.queued) {
            if let Some(stream) = self.streams.remove(&id) {
                self.stream_gone(id, &stream);
                self.events.push_back(Event::Reset {
                    stream: id,
                    cause: ResetCause::Refused,
                });
            }
        }
        if reason != Reason::NO_ERROR {
            self.error = Some(ConnectionError::Local);
            self.finish(Some(ConnectionError::Local));
        } else {
            self.finish_if_drained();
        }
    }

    /// Ends the connection from the local side: GOAWAY(NO_ERROR) if possible, every
    /// stream reset, [`Event::Closed`] with [`ConnectionError::Local`].
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        if self.goaway_sent.is_none() {
            GoAway::new(self.last_peer_stream, Reason::NO_ERROR).encode(&mut self.out);
            self.goaway_sent = Some(self.last_peer_stream);
        }
        self.finish(Some(ConnectionError::Local));
    }

    /// Phase two of a graceful GOAWAY: the PING came back, so everything the client
    /// sent before the first GOAWAY has arrived; the final one names the real last
    /// stream.
    pub(super) fn shutdown_ping_acked(&mut self) {
        self.shutdown_ping_outstanding = false;
        let last = self.last_peer_stream;
        GoAway::new(last, Reason::NO_ERROR).encode(&mut self.out);
        self.goaway_sent = Some(last);
        self.finish_if_drained();
    }

    pub(super) fn handle_go_away(&mut self, g: GoAway) {
        let last = g.last_stream_id;
        self.goaway_received = Some(self.goaway_received.map_or(last, |prev| prev.min(last)));
        // Our streams above the last id were never processed: refused. (A graceful
        // shutdown often starts with last = 2^31-1, which refuses nothing.)
        let above = (Bound::Excluded(last), Bound::Unbounded);
        let refused: Vec<StreamId> = self
            .streams
            .range(above)
            .map(|(id, _)| *id)
            .filter(|id| self.role == Role::Client || id.is_server_initiated())
            .collect();
        self.events.push_back(Event::GoAway {
            last_stream_id: last,
            reason: g.reason,
            debug: g.debug_data.clone(),
        });
        for id in refused {
            if let Some(stream) = self.streams.remove(&id) {
                self.stream_gone(id, &stream);
                self.events.push_back(Event::Reset {
                    stream: id,
                    cause: ResetCause::Refused,
                });
            }
        }
        self.queued.clear();
        if g.reason != Reason::NO_ERROR {
            let err = ConnectionError::GoAway {
                reason: g.reason,
                debug: String::from_utf8_lossy(&g.debug_data).into_owned(),
            };
            self.error = Some(err.clone());
            self.finish(Some(err));
            return;
        }
        self.finish_if_drained();
    }

    /// Once a GOAWAY went either way (and a graceful one's PING came back), the
    /// connection finishes when its last stream does.
    pub(super) fn finish_if_drained(&mut self) {
        let draining = self.goaway_received.is_some()
            || (self.goaway_sent.is_some() && !self.shutdown_ping_outstanding);
        if draining && self.streams.is_empty() && !self.closed {
            self.finish(None);
        }
    }

    /// A connection error we detected: GOAWAY with `reason`, then finish.
    pub(super) fn fail(&mut self, reason: Reason, detail: &'static str) {
        if self.error.is_some() || self.closed {
            return;
        }
        log::debug!("{:?} connection error {reason}: {detail}", self.role);
        GoAway {
            last_stream_id: self.last_peer_stream,
            reason,
            debug_data: detail.as_bytes().to_vec(),
        }
        .encode(&mut self.out);
        self.goaway_sent = Some(self.last_peer_stream);
        let err = ConnectionError::Protocol {
            reason,
            detail: detail.into(),
        };
        self.error = Some(err.clone());
        self.finish(Some(err));
    }

    /// Ends every stream and queues [`Event::Closed`], once.
    pub(super) fn finish(&mut self, err: Option<ConnectionError>) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.timers = [None; TIMERS];
        let cause_for = |opened: bool| match &err {
            _ if !opened => ResetCause::Refused,
            Some(e) => ResetCause::Connection(e.clone()),
            None => ResetCause::Connection(ConnectionError::Local),
        };
        for (id, stream) in std::mem::take(&mut self.streams) {
            if stream.opened {
                self.count_end(&stream);
            }
            self.events.push_back(Event::Reset {
                stream: id,
                cause: cause_for(stream.opened),
            });
        }
        self.queued.clear();
        self.events.push_back(Event::Closed(err));
    }
}
