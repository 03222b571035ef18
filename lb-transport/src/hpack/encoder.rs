//! Header block encoding, RFC 7541 sections 2.4 and 6.
//!
//! The strategy is deliberately simple:
//!
//! - a field that is in a table with the same value is sent as an index;
//! - otherwise it is sent as a literal, reusing the name from a table when
//!   there is one, and added to the dynamic table unless it is sensitive,
//!   larger than the table, or has a name whose values rarely repeat (see
//!   [`UNINDEXED_NAMES`]);
//! - sensitive fields are sent as "never indexed" literals and never use a
//!   table entry for their value;
//! - each string is Huffman-coded when that makes it shorter.

use std::borrow::Borrow;

use super::table::{DynamicTable, Match};
use super::{DEFAULT_TABLE_SIZE, Header, huffman, integer};

/// The largest dynamic table the encoder uses, whatever the peer allows.
///
/// The peer's SETTINGS_HEADER_TABLE_SIZE is only an upper bound (RFC 7541
/// section 4.2: "An encoder can choose to use less capacity than this maximum
/// size"); this keeps the memory of one connection's encoder bounded.
const TABLE_SIZE_CAP: usize = 64 * 1024;

/// Names whose values change from one message to the next, so indexing them
/// would only evict useful entries. `:path` is deliberately not here: for
/// gRPC it is the method name and repeats constantly.
const UNINDEXED_NAMES: [&[u8]; 8] = [
    b"age",
    b"content-length",
    b"date",
    b"etag",
    b"grpc-message",
    b"grpc-status-details-bin",
    b"grpc-timeout",
    b"last-modified",
];

/// The encoding side of an HPACK context: one per connection, used for every
/// header block we send, in the order the blocks go out.
#[derive(Debug)]
pub struct Encoder {
    table: DynamicTable,
    /// Table size changes not yet signalled to the peer.
    pending: Option<PendingUpdate>,
}

/// Table size changes between two header blocks.
#[derive(Debug, Clone, Copy)]
struct PendingUpdate {
    /// The smallest size set since the last block.
    smallest: usize,
    /// The size set last.
    last: usize,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    /// Makes an encoder with the initial HTTP/2 table size of 4,096 octets
    /// ([`DEFAULT_TABLE_SIZE`]).
    pub fn new() -> Self {
        Self {
            table: DynamicTable::new(DEFAULT_TABLE_SIZE),
            pending: None,
        }
    }

    /// Applies a new value of the peer's SETTINGS_HEADER_TABLE_SIZE.
    ///
    /// The encoder uses the smaller of this and 64 KiB. The change is
    /// signalled by dynamic table size updates at the start of the next block
    /// written by [`Encoder::encode`]; if the size went down and up again in
    /// between, both the smallest and the final size are sent, as RFC 7541
    /// section 4.2 requires.
    pub fn set_max_table_size(&mut self, max_table_size: usize) {
        let size = max_table_size.min(TABLE_SIZE_CAP);
        match &mut self.pending {
            Some(pending) => {
                pending.smallest = pending.smallest.min(size);
                pending.last = size;
            }
            None if size != self.table.max_size() => {
                self.pending = Some(PendingUpdate {
                    smallest: size,
                    last: size,
                });
            }
            None => {}
        }
    }

    /// Encodes `headers` as one header block, appended to `dst`.
    ///
    /// The block must be sent, and blocks must reach the peer in the order
    /// they were encoded, because each one may change the dynamic table the
    /// next one refers to.
    pub fn encode<I>(&mut self, headers: I, dst: &mut Vec<u8>)
    where
        I: IntoIterator,
        I::Item: Borrow<Header>,
    {
        self.write_size_updates(dst);
        for header in headers {
            self.write_field(header.borrow(), dst);
        }
    }

    /// The dynamic table, for checks in tests.
    #[cfg(test)]
    pub(crate) fn table(&self) -> &DynamicTable {
        &self.table
    }

    fn write_size_updates(&mut self, dst: &mut Vec<u8>) {
        let Some(update) = self.pending.take() else {
            return;
        };
        // RFC 7541 section 4.2: "If the maximum size has been changed more
        // than once between two header blocks, the smallest maximum table size
        // that occurs in that interval MUST be signaled in a dynamic table
        // size update. The final maximum size is always signaled, resulting in
        // at most two dynamic table size updates."
        if update.smallest < update.last {
            self.write_size_update(update.smallest, dst);
        }
        self.write_size_update(update.last, dst);
    }

    /// A dynamic table size update, RFC 7541 section 6.3.
    fn write_size_update(&mut self, size: usize, dst: &mut Vec<u8>) {
        integer::encode(size, 5, 0b0010_0000, dst);
        self.table.set_max_size(size);
    }

    fn write_field(&mut self, header: &Header, dst: &mut Vec<u8>) {
        let found = self.table.find(&header.name, &header.value);
        if header.sensitive {
            // RFC 7541 section 7.1.3: "An intermediary MUST NOT re-encode a
            // value that uses the never-indexed literal representation with
            // another representation that would index it." We also skip full
            // matches: the size of an index would tell an attacker who put a
            // guess into the table that the guess was right.
            write_literal(Literal::NeverIndexed, found.name_index(), header, dst);
            return;
        }
        if let Match::Full(index) = found {
            // An indexed header field, RFC 7541 section 6.1.
            integer::encode(index, 7, 0b1000_0000, dst);
            return;
        }
        if !self.worth_indexing(header) {
            write_literal(Literal::NotIndexed, found.name_index(), header, dst);
            return;
        }
        write_literal(Literal::Indexed, found.name_index(), header, dst);
        self.table.insert(header.name.clone(), header.value.clone());
    }

    fn worth_indexing(&self, header: &Header) -> bool {
        // An entry larger than the table would only empty it (RFC 7541
        // section 4.4).
        header.size() <= self.table.max_size() && !UNINDEXED_NAMES.contains(&&header.name[..])
    }
}

/// The three literal representations, RFC 7541 section 6.2.
#[derive(Debug, Clone, Copy)]
enum Literal {
    Indexed,
    NotIndexed,
    NeverIndexed,
}

/// Writes a literal header field, taking the name from the table entry at
/// `name_index` if there is one.
fn write_literal(kind: Literal, name_index: Option<usize>, header: &Header, dst: &mut Vec<u8>) {
    let (flags, prefix_bits) = match kind {
        Literal::Indexed => (0b0100_0000, 6),
        Literal::NotIndexed => (0b0000_0000, 4),
        Literal::NeverIndexed => (0b0001_0000, 4),
    };
    // Index 0 means the name follows as a string literal.
    integer::encode(name_index.unwrap_or(0), prefix_bits, flags, dst);
    if name_index.is_none() {
        write_string(&header.name, dst);
    }
    write_string(&header.value, dst);
}

/// Writes a string literal, RFC 7541 section 5.2, Huffman-coded when that is
/// shorter.
fn write_string(s: &[u8], dst: &mut Vec<u8>) {
    let huffman_len = huffman::encoded_len(s);
    if huffman_len < s.len() {
        integer::encode(huffman_len, 7, 0b1000_0000, dst);
        huffman::encode(s, dst);
    } else {
        integer::encode(s.len(), 7, 0, dst);
        dst.extend_from_slice(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hpack::Decoder;
    use crate::hpack::rfc_vectors::hex;

    fn encode(encoder: &mut Encoder, headers: &[Header]) -> Vec<u8> {
        let mut block = Vec::new();
        encoder.encode(headers, &mut block);
        block
    }

    fn decode(decoder: &mut Decoder, block: &[u8]) -> Vec<Header> {
        let mut headers = Vec::new();
        decoder
            .decode(block, usize::MAX, |h| headers.push(h))
            .unwrap();
        headers
    }

    fn table_len(encoder: &Encoder) -> usize {
        encoder.table().entries().count()
    }

    #[test]
    fn static_matches_are_single_bytes() {
        let mut encoder = Encoder::new();
        let block = encode(
            &mut encoder,
            &[Header::new(":method", "GET"), Header::new(":status", "404")],
        );
        assert_eq!(block, [0x82, 0x8d]);
        assert_eq!(table_len(&encoder), 0);
    }

    #[test]
    fn repeated_fields_become_indexes() {
        let mut encoder = Encoder::new();
        let headers = [
            Header::new(":path", "/pkg.Service/Method"),
            Header::new("x-custom", "value"),
        ];
        let first = encode(&mut encoder, &headers);
        // :path reuses the static name (index 4) with incremental indexing.
        assert_eq!(first[0], 0x44);
        assert_eq!(table_len(&encoder), 2);
        let second = encode(&mut encoder, &headers);
        assert_eq!(second, [0xbf, 0xbe]);

        let mut decoder = Decoder::default();
        assert_eq!(decode(&mut decoder, &first), headers);
        assert_eq!(decode(&mut decoder, &second), headers);
    }

    #[test]
    fn sensitive_fields_are_never_indexed() {
        let mut encoder = Encoder::new();
        let secret = Header::new_sensitive("authorization", "Bearer abc");
        let block = encode(&mut encoder, std::slice::from_ref(&secret));
        // Never indexed, name index 23 (15 in the prefix, then 8).
        assert_eq!(&block[..2], [0x1f, 0x08]);
        assert_eq!(table_len(&encoder), 0);
        assert_eq!(decode(&mut Decoder::default(), &block), [secret]);
    }

    #[test]
    fn sensitive_fields_do_not_use_full_matches() {
        let mut encoder = Encoder::new();
        let mut decoder = Decoder::default();
        let plain = Header::new("x-token", "guess");
        let block = encode(&mut encoder, &[plain]);
        decode(&mut decoder, &block);

        let secret = Header::new_sensitive("x-token", "guess");
        let block = encode(&mut encoder, std::slice::from_ref(&secret));
        // The name comes from the dynamic table (62), the value is literal.
        assert_eq!(block[0], 0x1f);
        assert_eq!(block[1], 62 - 15);
        assert!(block.len() > 2);
        assert_eq!(decode(&mut decoder, &block), [secret]);
    }

    #[test]
    fn per_message_values_are_not_indexed() {
        let mut encoder = Encoder::new();
        let headers = [
            Header::new("content-length", "1234"),
            Header::new("grpc-timeout", "100m"),
            Header::new("grpc-message", "oops"),
        ];
        let block = encode(&mut encoder, &headers);
        // Without indexing, name index 28 (15 in the prefix, then 13).
        assert_eq!(&block[..2], [0x0f, 0x0d]);
        assert_eq!(table_len(&encoder), 0);
        assert_eq!(decode(&mut Decoder::default(), &block), headers);
    }

    #[test]
    fn fields_larger_than_the_table_are_not_indexed() {
        let mut encoder = Encoder::new();
        let small = Header::new("x-small", "1");
        let big = Header::new("x-big", vec![b'v'; 5000]);
        let block = encode(&mut encoder, &[small.clone(), big.clone()]);
        assert_eq!(table_len(&encoder), 1);
        assert_eq!(decode(&mut Decoder::default(), &block), [small, big]);
    }

    #[test]
    fn huffman_is_used_only_when_shorter() {
        let mut encoder = Encoder::new();
        let block = encode(
            &mut encoder,
            &[Header::new(":authority", "www.example.com")],
        );
        assert_eq!(block, hex("418c f1e3 c2e5 f23a 6ba0 ab90 f4ff"));

        // Bytes with long codes are sent raw.
        let mut encoder = Encoder::new();
        let block = encode(&mut encoder, &[Header::new(":authority", vec![0xff, 0x00])]);
        assert_eq!(block, [0x41, 0x02, 0xff, 0x00]);
    }

    #[test]
    fn new_names_are_literal_strings() {
        let mut encoder = Encoder::new();
        let block = encode(&mut encoder, &[Header::new(vec![0x01], vec![0x02])]);
        assert_eq!(block, [0x40, 0x01, 0x01, 0x01, 0x02]);
    }

    #[test]
    fn unchanged_table_size_sends_no_update() {
        let mut encoder = Encoder::new();
        encoder.set_max_table_size(DEFAULT_TABLE_SIZE);
        assert_eq!(encode(&mut encoder, &[]), Vec::<u8>::new());
    }

    #[test]
    fn lowered_table_size_is_signalled_once_and_evicts() {
        let mut encoder = Encoder::new();
        let mut decoder = Decoder::default();
        let headers = [Header::new("x-a", "1"), Header::new("x-b", "2")];
        decode(&mut decoder, &encode(&mut encoder, &headers));

        encoder.set_max_table_size(40);
        decoder.set_max_table_size(40);
        let block = encode(&mut encoder, &[]);
        assert_eq!(block, [0x3f, 0x09]);
        assert_eq!(table_len(&encoder), 1);
        decode(&mut decoder, &block);
        assert_eq!(encode(&mut encoder, &[]), Vec::<u8>::new());
        assert_eq!(decode(&mut decoder, &[0xbe]), [Header::new("x-b", "2")]);
    }

    #[test]
    fn decrease_then_increase_sends_both() {
        let mut encoder = Encoder::new();
        let mut decoder = Decoder::default();
        decode(
            &mut decoder,
            &encode(&mut encoder, &[Header::new("x-a", "1")]),
        );

        encoder.set_max_table_size(0);
        encoder.set_max_table_size(4096);
        decoder.set_max_table_size(0);
        decoder.set_max_table_size(4096);
        let block = encode(&mut encoder, &[Header::new("x-a", "1")]);
        // 0, then 4096 (31 + 4065: 0xe1 0x1f), then the field again as a
        // literal because the old entry was evicted.
        assert_eq!(&block[..4], [0x20, 0x3f, 0xe1, 0x1f]);
        assert_eq!(block[4], 0x40);
        assert_eq!(decode(&mut decoder, &block), [Header::new("x-a", "1")]);
        assert_eq!(table_len(&encoder), 1);
    }

    #[test]
    fn increase_then_decrease_sends_only_the_final_size() {
        let mut encoder = Encoder::new();
        encoder.set_max_table_size(8192);
        encoder.set_max_table_size(1024);
        assert_eq!(encode(&mut encoder, &[]), [0x3f, 0xe1, 0x07]);
    }

    #[test]
    fn table_size_is_capped() {
        let mut encoder = Encoder::new();
        encoder.set_max_table_size(1 << 30);
        let block = encode(&mut encoder, &[]);
        let mut decoder = Decoder::new(1 << 30);
        decode(&mut decoder, &block);
        assert_eq!(encoder.table().max_size(), TABLE_SIZE_CAP);
        assert_eq!(decoder.table().max_size(), TABLE_SIZE_CAP);
    }

    #[test]
    fn accepts_owned_and_borrowed_headers() {
        let mut encoder = Encoder::new();
        let mut block = Vec::new();
        encoder.encode(vec![Header::new(":method", "GET")], &mut block);
        encoder.encode([&Header::new(":method", "GET")], &mut block);
        assert_eq!(block, [0x82, 0x82]);
    }
}
