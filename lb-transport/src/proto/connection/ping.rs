//! PING both ways: answering the peer's pings, the client keepalive of gRFC A8 (ping
//! after `time` without reads, close if nothing arrives within `timeout`), and the
//! server's ping strikes that end in GOAWAY ENHANCE_YOUR_CALM "too_many_pings".

use std::time::{Duration, Instant};

use crate::frame::{Ping, Reason};
use crate::proto::config::IDLE_PING_INTERVAL;
use crate::proto::connection::goaway::SHUTDOWN_PING;
use crate::proto::connection::{Connection, ConnectionError, Role, Timer};

impl Connection {
    pub(super) fn handle_ping(&mut self, p: Ping, now: Instant) {
        if p.ack && p.payload == SHUTDOWN_PING && self.shutdown_ping_outstanding {
            return self.shutdown_ping_acked();
        }
        if p.ack {
            self.ping_outstanding = false;
            self.timers[Timer::KeepaliveTimeout as usize] = None;
            return;
        }
        if self.role == Role::Server {
            let policy = self.config.ping_policy;
            let interval = if self.open_remote == 0 && !policy.permit_without_calls {
                IDLE_PING_INTERVAL
            } else {
                policy.min_time
            };
            if self
                .last_peer_ping
                .is_some_and(|last| now < last + interval)
            {
                self.ping_strikes += 1;
                if self.ping_strikes > policy.max_strikes {
                    // gRFC A8: the debug data is exactly "too_many_pings".
                    return self.fail(Reason::ENHANCE_YOUR_CALM, "too_many_pings");
                }
            }
            self.last_peer_ping = Some(now);
        }
        if self.queue_control() {
            Ping::pong(p.payload).encode(&mut self.out);
        }
    }

    /// Bytes arrived: any bytes answer a keepalive ping (gRFC A8), and the idle timer
    /// starts again.
    pub(super) fn keepalive_on_read(&mut self, now: Instant) {
        self.ping_outstanding = false;
        self.timers[Timer::KeepaliveTimeout as usize] = None;
        if let Some(ka) = self.config.keepalive {
            self.timers[Timer::KeepaliveIdle as usize] = Some(now + ka.time);
        }
    }

    /// Sends a keepalive ping if none is outstanding and a call is under way (or
    /// pings without calls are permitted), and re-arms the idle timer.
    pub(super) fn keepalive_ping(&mut self, now: Instant) {
        let Some(ka) = self.config.keepalive else {
            return;
        };
        let active = self.open_local > 0;
        if !self.ping_outstanding && (active || ka.permit_without_calls) {
            Ping::new(*b"keepaliv").encode(&mut self.out);
            self.stats.keepalives_sent += 1;
            self.ping_outstanding = true;
            self.timers[Timer::KeepaliveTimeout as usize] = Some(now + ka.timeout);
        }
        self.timers[Timer::KeepaliveIdle as usize] = Some(now + ka.time);
    }

    /// Nothing arrived within the keepalive timeout of our ping: the connection ends.
    pub(super) fn keepalive_timed_out(&mut self) {
        let timeout = self.config.keepalive.map_or(Duration::ZERO, |k| k.timeout);
        self.error = Some(ConnectionError::KeepaliveTimeout(timeout));
        self.finish(self.error.clone());
    }
}
