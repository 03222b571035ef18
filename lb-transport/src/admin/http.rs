//! The admin page's HTTP/1.1, sans-IO: a request head parsed from bytes with
//! `httparse`, a [`Reply`] written as bytes. No sockets here: `server.rs` moves the
//! bytes.

use super::{Reply, Request};

/// Request headers accepted in one head; more is answered with 431.
pub(crate) const MAX_HEADERS: usize = 32;

/// What the bytes received so far hold.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A request whose head took the first `len` bytes.
    Request {
        /// The request as handlers see it.
        request: Request,
        /// Bytes of the head.
        len: usize,
        /// Whether the connection may carry another request after this one.
        keep_alive: bool,
        /// Whether the request says it has a body (which the admin server never
        /// reads, so the connection closes after the answer).
        has_body: bool,
    },
    /// A request the server cannot take: answer with this and close.
    Error(Reply),
}

/// Parses the head at the start of `buf`, which holds at most `max_head` bytes
/// (a head that does not end within them is answered with 431).
pub(crate) fn parse(buf: &[u8], max_head: usize) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() >= max_head => Parsed::Error(too_large()),
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Ok(httparse::Status::Complete(len)) if len > max_head => Parsed::Error(too_large()),
        Ok(httparse::Status::Complete(len)) => {
            let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version)
            else {
                return Parsed::Error(Reply::text(400, "malformed request line"));
            };
            let mut close = false;
            let mut keep_alive_asked = false;
            let mut has_body = false;
            for h in req.headers.iter() {
                if h.name.eq_ignore_ascii_case("connection") {
                    let value = String::from_utf8_lossy(h.value).to_ascii_lowercase();
                    close |= value.split(',').any(|t| t.trim() == "close");
                    keep_alive_asked |= value.split(',').any(|t| t.trim() == "keep-alive");
                } else if h.name.eq_ignore_ascii_case("content-length") {
                    has_body |= h.value.iter().any(|&b| b != b'0' && b != b' ');
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    has_body = true;
                }
            }
            let keep_alive = !close && (version == 1 || keep_alive_asked);
            let (path, query) = match target.split_once('?') {
                Some((p, q)) => (p, q),
                None => (target, ""),
            };
            Parsed::Request {
                request: Request {
                    method: method.to_owned(),
                    path: path.to_owned(),
                    query: query.to_owned(),
                },
                len,
                keep_alive,
                has_body,
            }
        }
        Err(httparse::Error::TooManyHeaders) => Parsed::Error(Reply::text(
            431,
            &format!("more than {MAX_HEADERS} request headers"),
        )),
        Err(e) => Parsed::Error(Reply::text(400, &format!("malformed request: {e}"))),
    }
}

fn too_large() -> Reply {
    Reply::text(431, "request head too large")
}

/// The reason phrase of the statuses the admin server sends.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// `reply` as HTTP/1.1 bytes; without the body for a HEAD request. The page may
/// load nothing from elsewhere (a content security policy says so), and no answer
/// is cached.
pub(crate) fn encode(reply: &Reply, head_only: bool, keep_alive: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + if head_only { 0 } else { reply.body.len() });
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nx-content-type-options: nosniff\r\n\
         content-security-policy: default-src 'none'; script-src 'unsafe-inline'; \
         style-src 'unsafe-inline'; connect-src 'self'; img-src data:\r\n{}{}\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type,
        reply.body.len(),
        if reply.status == 405 {
            "allow: GET, HEAD\r\n"
        } else {
            ""
        },
        if keep_alive {
            "connection: keep-alive\r\n"
        } else {
            "connection: close\r\n"
        },
    );
    out.extend_from_slice(head.as_bytes());
    if !head_only {
        out.extend_from_slice(&reply.body);
    }
    out
}
