//! HPACK header compression (RFC 7541).
//!
//! [`Encoder`] turns header lists into header blocks and [`Decoder`] turns
//! complete header blocks back into header lists. Each side keeps its own
//! dynamic table; one connection needs one of each, and the caller is
//! responsible for feeding blocks to the decoder in the order they arrived
//! (CONTINUATION frames already joined).
//!
//! The module knows nothing about frames. The caller maps the HTTP/2 settings
//! onto it:
//!
//! - the peer's SETTINGS_HEADER_TABLE_SIZE goes to
//!   [`Encoder::set_max_table_size`];
//! - our own SETTINGS_HEADER_TABLE_SIZE goes to [`Decoder::set_max_table_size`];
//! - our SETTINGS_MAX_HEADER_LIST_SIZE is the limit passed to
//!   [`Decoder::decode`].

mod decoder;
mod encoder;
mod huffman;
mod huffman_table;
mod integer;
mod table;

#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod rfc_vectors;

pub use bytes::Bytes;
pub use decoder::{Decoder, DecoderError};
pub use encoder::Encoder;

use std::fmt;

/// The initial dynamic table size of both sides of a connection.
///
/// RFC 9113 section 6.5.2 gives SETTINGS_HEADER_TABLE_SIZE an initial value of
/// 4,096 octets.
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// One header field: a name, a value and whether it must never be indexed.
///
/// Names and values are opaque bytes here; checking that they are valid HTTP
/// field names and values is the caller's job. They are [`Bytes`]: a static
/// string is used in place, and the decoder shares a dynamic-table entry with
/// every header decoded from it. Make one from borrowed bytes with
/// [`Bytes::copy_from_slice`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Header {
    /// The field name, for example `content-type` or `:path`.
    pub name: Bytes,
    /// The field value.
    pub value: Bytes,
    /// Whether the field is sensitive.
    ///
    /// The encoder sends a sensitive field as a "literal header field never
    /// indexed" (RFC 7541 section 6.2.3), so that neither it nor any
    /// intermediary puts the value into a dynamic table. The decoder sets this
    /// flag on fields it received in that representation, so that a proxy
    /// re-encodes them the same way (RFC 7541 section 7.1.3).
    pub sensitive: bool,
}

impl Header {
    /// Makes an ordinary (not sensitive) header field.
    pub fn new(name: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
            sensitive: false,
        }
    }

    /// Makes a sensitive header field, which will never be indexed.
    pub fn new_sensitive(name: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self {
            sensitive: true,
            ..Self::new(name, value)
        }
    }

    /// The size of the field as defined by RFC 7541 section 4.1: the length of
    /// the name plus the length of the value plus 32.
    ///
    /// This is also the unit of SETTINGS_MAX_HEADER_LIST_SIZE (RFC 9113
    /// section 6.5.2).
    pub fn size(&self) -> usize {
        table::entry_size(&self.name, &self.value)
    }
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Header");
        s.field("name", &format_args!("\"{}\"", self.name.escape_ascii()));
        // Sensitive values are typically credentials; keep them out of logs.
        if self.sensitive {
            s.field("value", &format_args!("<redacted>"));
        } else {
            s.field("value", &format_args!("\"{}\"", self.value.escape_ascii()));
        }
        s.field("sensitive", &self.sensitive).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_size_counts_32_octets_of_overhead() {
        assert_eq!(Header::new("", "").size(), 32);
        assert_eq!(Header::new("custom-key", "custom-header").size(), 55);
    }

    #[test]
    fn debug_redacts_sensitive_values() {
        let plain = format!("{:?}", Header::new("a", "secret"));
        let hidden = format!("{:?}", Header::new_sensitive("a", "secret"));
        assert!(plain.contains("secret"), "{plain}");
        assert!(!hidden.contains("secret"), "{hidden}");
        assert!(hidden.contains("<redacted>"), "{hidden}");
    }

    #[test]
    fn debug_escapes_binary_bytes() {
        let text = format!("{:?}", Header::new(&b"x-bin"[..], &b"\x00\xff"[..]));
        assert!(text.contains(r"\x00\xff"), "{text}");
    }
}
