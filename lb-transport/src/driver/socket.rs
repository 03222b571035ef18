//! Moving bytes between a non-blocking socket and a sans-IO connection.

use std::io::{self, Read, Write};
use std::time::Instant;

use crate::proto::Connection;

/// How much one read pass takes from a socket before giving other connections a turn.
pub const READ_BUDGET: usize = 256 << 10;

/// What a read pass found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The socket has no more bytes for now.
    WouldBlock,
    /// The budget ran out; more bytes may be waiting.
    Budget,
    /// The peer closed its side.
    Eof,
}

/// Reads until the socket would block, the peer closes, or [`READ_BUDGET`] bytes,
/// feeding everything to `conn`.
///
/// `short_read_drains`: `socket` reads straight from a stream socket registered
/// edge-triggered, so a read that fills less than `scratch` has emptied it (epoll(7)
/// says as much), and bytes that come later raise a new edge: the pass stops there
/// instead of paying one more system call to hear `WouldBlock`. Not for a TLS
/// stream, whose short read of plaintext says nothing about the socket under it.
///
/// # Errors
///
/// The socket failed.
pub fn read_into<S: Read>(
    socket: &mut S,
    conn: &mut Connection,
    scratch: &mut [u8],
    short_read_drains: bool,
    now: Instant,
) -> io::Result<ReadOutcome> {
    let mut total = 0;
    loop {
        match socket.read(scratch) {
            Ok(0) => return Ok(ReadOutcome::Eof),
            Ok(n) => {
                conn.handle_read(&scratch[..n], now);
                total += n;
                if total >= READ_BUDGET {
                    return Ok(ReadOutcome::Budget);
                }
                if short_read_drains && n < scratch.len() {
                    return Ok(ReadOutcome::WouldBlock);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadOutcome::WouldBlock),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Writes as much of `buf[*pos..]` as the socket takes; returns whether all of it
/// went. `buf` and `pos` are reset once everything is written.
///
/// # Errors
///
/// The socket failed.
pub fn flush<S: Write>(socket: &mut S, buf: &mut Vec<u8>, pos: &mut usize) -> io::Result<bool> {
    while *pos < buf.len() {
        match socket.write(&buf[*pos..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    buf.clear();
    *pos = 0;
    Ok(true)
}

/// Fills `out` from `conn` and writes it; returns whether everything was written (if
/// not, wait for the socket to be writable).
///
/// # Errors
///
/// The socket failed.
pub fn transmit<S: Write>(
    socket: &mut S,
    conn: &mut Connection,
    out: &mut Vec<u8>,
    pos: &mut usize,
    now: Instant,
) -> io::Result<bool> {
    loop {
        // Keep at most one budget's worth queued in user space: backpressure.
        if out.len() - *pos < READ_BUDGET && conn.poll_transmit(now, out) == 0 && *pos == out.len()
        {
            return Ok(true);
        }
        if !flush(socket, out, pos)? {
            return Ok(false);
        }
        if !conn.wants_write() {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes at most `chunk` bytes a write and then blocks once.
    struct Choppy {
        written: Vec<u8>,
        chunk: usize,
        block_next: bool,
    }

    impl Write for Choppy {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if std::mem::take(&mut self.block_next) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.block_next = true;
            let n = buf.len().min(self.chunk);
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn flush_resumes_where_it_blocked() {
        let mut s = Choppy {
            written: Vec::new(),
            chunk: 3,
            block_next: false,
        };
        let mut buf = b"abcdefgh".to_vec();
        let mut pos = 0;
        let mut rounds = 0;
        while !flush(&mut s, &mut buf, &mut pos).unwrap() {
            rounds += 1;
            assert!(rounds < 10);
        }
        assert_eq!(s.written, b"abcdefgh");
        assert!(buf.is_empty() && pos == 0);
    }

    #[test]
    fn read_stops_at_would_block_and_eof() {
        struct Script(Vec<io::Result<Vec<u8>>>);
        impl Read for Script {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                match self.0.remove(0) {
                    Ok(b) => {
                        buf[..b.len()].copy_from_slice(&b);
                        Ok(b.len())
                    }
                    Err(e) => Err(e),
                }
            }
        }
        let now = Instant::now();
        let mut conn = Connection::server(Default::default(), now);
        let mut scratch = [0u8; 64];
        let mut s = Script(vec![
            Ok(b"PRI".to_vec()),
            Err(io::ErrorKind::WouldBlock.into()),
        ]);
        assert_eq!(
            read_into(&mut s, &mut conn, &mut scratch, false, now).unwrap(),
            ReadOutcome::WouldBlock
        );
        let mut s = Script(vec![Ok(Vec::new())]);
        assert_eq!(
            read_into(&mut s, &mut conn, &mut scratch, false, now).unwrap(),
            ReadOutcome::Eof
        );
    }

    #[test]
    fn a_short_read_ends_the_pass_only_where_it_drains_the_socket() {
        /// Hands out `chunks` in reads of at most `buf.len()`, then would block;
        /// counts the reads.
        struct Chunks(Vec<u8>, usize);
        impl Read for Chunks {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.1 += 1;
                if self.0.is_empty() {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let n = buf.len().min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0.drain(..n);
                Ok(n)
            }
        }
        let now = Instant::now();
        let mut scratch = [0u8; 16];
        // The client preface and an empty SETTINGS frame, 33 bytes: two full
        // reads and a short one, which ends the pass where it drains the socket.
        let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(preface.len(), 33);
        for (drains, reads) in [(true, 3), (false, 4)] {
            let mut conn = Connection::server(Default::default(), now);
            let mut s = Chunks(preface.clone(), 0);
            assert_eq!(
                read_into(&mut s, &mut conn, &mut scratch, drains, now).unwrap(),
                ReadOutcome::WouldBlock
            );
            assert_eq!(s.1, reads, "short_read_drains = {drains}");
            assert!(s.0.is_empty(), "every byte was read");
        }
    }
}
