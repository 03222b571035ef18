//! A client socket that is plaintext or TLS, read and written like one stream.

use std::io::{self, Read, Write};

use mio::net::TcpStream;

/// A TCP socket with an optional TLS session over it.
#[derive(Debug)]
pub(crate) struct Stream {
    pub(crate) tcp: TcpStream,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<Box<rustls::Connection>>,
}

impl Stream {
    pub(crate) fn new(tcp: TcpStream) -> Self {
        Self {
            tcp,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Whether TLS records are waiting for the socket to take them.
    pub(crate) fn wants_write(&self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return tls.wants_write();
        }
        false
    }

    /// Writes pending TLS records until the socket would block.
    pub(crate) fn flush_tls(&mut self) -> io::Result<()> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            return write_records(tls, &mut self.tcp);
        }
        Ok(())
    }

    /// After the TLS handshake: an error unless the server chose `h2`.
    pub(crate) fn check_alpn(&self) -> Result<(), String> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            if !tls.is_handshaking() && tls.alpn_protocol() != Some(b"h2") {
                return Err("TLS server did not negotiate ALPN h2".into());
            }
        }
        Ok(())
    }

    /// Sends TLS close_notify (if TLS) and as much as the socket takes, then closes
    /// the sending side of the socket.
    pub(crate) fn shutdown_write(&mut self) -> io::Result<()> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            write_records(tls, &mut self.tcp)?;
        }
        self.tcp.shutdown(std::net::Shutdown::Write)
    }

    /// The security channelz shows once the TLS handshake is done: `tls:` and the
    /// cipher suite's standard (IANA) name; `None` for plaintext or while
    /// handshaking.
    pub(crate) fn security(&self) -> Option<String> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            if tls.is_handshaking() {
                return None;
            }
            let name = tls
                .negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str())
                // rustls spells TLS 1.3's suites `TLS13_…`; their standard names are `TLS_…`.
                .map(|n| {
                    n.strip_prefix("TLS13_")
                        .map_or_else(|| n.to_owned(), |rest| format!("TLS_{rest}"))
                });
            return Some(name.map_or_else(|| "tls".to_owned(), |n| format!("tls:{n}")));
        }
        None
    }

    /// Whether a short read from this stream means its socket has no more bytes
    /// (see [`read_into`](crate::driver::socket::read_into)): true of plain TCP,
    /// not of TLS.
    pub(crate) fn short_read_drains(&self) -> bool {
        !self.is_tls()
    }

    /// Whether this stream is TLS.
    pub(crate) fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return true;
        }
        false
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            loop {
                match tls.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                // No plaintext yet: pull records from the socket (WouldBlock ends it).
                if tls.read_tls(&mut self.tcp)? == 0 {
                    return Ok(0);
                }
                tls.process_new_packets().map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidData, crate::driver::tls::explain(&e))
                })?;
                write_records(tls, &mut self.tcp)?;
            }
        }
        self.tcp.read(buf)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            let n = tls.writer().write(buf)?;
            write_records(tls, &mut self.tcp)?;
            if n == 0 && !buf.is_empty() {
                // rustls's buffer is full until the socket takes records.
                return Err(io::ErrorKind::WouldBlock.into());
            }
            return Ok(n);
        }
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_tls()
    }
}

/// Writes `tls`'s pending records to `tcp` until it would block.
#[cfg(feature = "tls")]
fn write_records(tls: &mut rustls::Connection, tcp: &mut TcpStream) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(tcp) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
