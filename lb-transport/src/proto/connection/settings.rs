//! The SETTINGS exchange: what we advertise, what the peer told us, the
//! acknowledgement timeout, and the bound on control frames (SETTINGS and PING acks)
//! queued for a peer that does not read.

use std::time::Instant;

use crate::frame::{self, GoAway, Reason, Settings, StreamId, WindowUpdate};
use crate::proto::connection::{Connection, ConnectionError, Event, Role, Timer};

/// What the peer told us in SETTINGS.
#[derive(Clone, Copy, Debug)]
pub(super) struct PeerSettings {
    pub(super) max_concurrent_streams: u32,
    pub(super) initial_window: u32,
    pub(super) max_frame_size: u32,
    pub(super) max_header_list_size: Option<u32>,
}

impl Default for PeerSettings {
    fn default() -> Self {
        Self {
            max_concurrent_streams: u32::MAX,
            initial_window: frame::DEFAULT_INITIAL_WINDOW_SIZE,
            max_frame_size: frame::DEFAULT_MAX_FRAME_SIZE,
            max_header_list_size: None,
        }
    }
}

impl Connection {
    /// Queues our SETTINGS (and the WINDOW_UPDATE that raises the connection window
    /// to the configured size) and starts the acknowledgement timer.
    pub(super) fn send_initial_settings(&mut self, now: Instant) {
        let settings = Settings {
            enable_push: Some(0),
            max_concurrent_streams: Some(self.config.max_concurrent_streams),
            initial_window_size: Some(self.config.stream_window.min(frame::MAX_WINDOW_SIZE)),
            max_header_list_size: Some(self.config.max_header_list_size),
            ..Settings::default()
        };
        settings.encode(&mut self.out);
        self.settings_unacked += 1;
        self.timers[Timer::SettingsAck as usize] = Some(now + self.config.settings_timeout);
        let target = i64::from(self.config.connection_window.min(frame::MAX_WINDOW_SIZE));
        let raise = target - self.conn_recv_window;
        if raise > 0 {
            WindowUpdate::new(StreamId::ZERO, raise as u32).encode(&mut self.out);
            self.pending_credit.push((StreamId::ZERO, raise as u32));
        }
    }

    pub(super) fn handle_settings(&mut self, s: Settings, _now: Instant) {
        if s.ack {
            if self.settings_unacked > 0 {
                self.settings_unacked -= 1;
                if self.settings_unacked == 0 {
                    self.timers[Timer::SettingsAck as usize] = None;
                }
            }
            return;
        }
        if self.role == Role::Client && s.enable_push.is_some_and(|v| v != 0) {
            // "A server MUST NOT explicitly set this value to 1."
            return self.fail(Reason::PROTOCOL_ERROR, "server enabled push");
        }
        if let Some(size) = s.header_table_size {
            self.encoder.set_max_table_size(size as usize);
        }
        if let Some(n) = s.max_concurrent_streams {
            self.peer.max_concurrent_streams = n;
        }
        if let Some(n) = s.max_frame_size {
            self.peer.max_frame_size = n;
        }
        if let Some(n) = s.max_header_list_size {
            self.peer.max_header_list_size = Some(n);
        }
        if let Some(window) = s.initial_window_size {
            let delta = i64::from(window) - i64::from(self.peer.initial_window);
            self.peer.initial_window = window;
            for stream in self.streams.values_mut() {
                stream.send_window += delta;
                if stream.send_window > i64::from(frame::MAX_WINDOW_SIZE) {
                    // "... MUST treat this as a connection error of type
                    // FLOW_CONTROL_ERROR."
                    return self.fail(Reason::FLOW_CONTROL_ERROR, "window above 2^31-1");
                }
            }
        }
        if !self.queue_control() {
            return;
        }
        Settings::new_ack().encode(&mut self.out);
        if !self.peer_settings_seen {
            self.peer_settings_seen = true;
            self.events.push_back(Event::Connected);
        }
        self.open_queued();
    }

    /// The peer did not acknowledge our SETTINGS in time: GOAWAY SETTINGS_TIMEOUT.
    pub(super) fn settings_timed_out(&mut self) {
        GoAway::new(self.last_peer_stream, Reason::SETTINGS_TIMEOUT).encode(&mut self.out);
        self.goaway_sent = Some(self.last_peer_stream);
        let err = ConnectionError::SettingsTimeout(self.config.settings_timeout);
        self.error = Some(err.clone());
        self.finish(Some(err));
    }

    /// Counts one more control frame (a SETTINGS or PING ack) queued but not yet
    /// written. Past `max_pending_control_frames` the peer is flooding: GOAWAY
    /// ENHANCE_YOUR_CALM, and `false`.
    pub(super) fn queue_control(&mut self) -> bool {
        self.pending_control += 1;
        if self.pending_control > self.config.max_pending_control_frames {
            self.fail(Reason::ENHANCE_YOUR_CALM, "too many control frames queued");
            return false;
        }
        true
    }
}
