//! Header block decoding, RFC 7541 sections 3, 5 and 6.

use bytes::Bytes;

use super::table::{self, DynamicTable};
use super::{DEFAULT_TABLE_SIZE, Header, huffman, integer};

/// Why a header block could not be decoded.
///
/// Every variant except [`DecoderError::HeaderListTooLarge`] means the block
/// is malformed; HTTP/2 treats those as a connection error of type
/// COMPRESSION_ERROR (RFC 9113 section 4.3). See
/// [`DecoderError::is_compression_error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecoderError {
    /// An integer is larger than `u32::MAX` or uses too many octets.
    #[error("integer overflow")]
    IntegerOverflow,
    /// The block ends in the middle of a representation.
    #[error("truncated header block")]
    Truncated,
    /// A string literal claims to be longer than the rest of the block.
    #[error("string longer than remaining input")]
    StringTooLong,
    /// An index is 0 or beyond the end of the dynamic table.
    #[error("invalid table index {0}")]
    InvalidIndex(usize),
    /// A Huffman-encoded string contains the EOS symbol.
    #[error("eos symbol in huffman string")]
    HuffmanEos,
    /// A Huffman-encoded string ends with more than 7 bits of padding or with
    /// padding that is not all 1-bits.
    #[error("invalid huffman padding")]
    HuffmanPadding,
    /// A dynamic table size update asks for more than our
    /// SETTINGS_HEADER_TABLE_SIZE.
    #[error("table size update {size} above limit {limit}")]
    TableSizeTooLarge {
        /// The size the update asked for.
        size: usize,
        /// The largest size allowed.
        limit: usize,
    },
    /// A dynamic table size update follows a header field in the same block.
    #[error("table size update after header field")]
    SizeUpdateAfterField,
    /// We lowered SETTINGS_HEADER_TABLE_SIZE below the size of the table, and
    /// the next block did not start with a size update acknowledging it.
    #[error("missing table size update")]
    MissingSizeUpdate,
    /// The decoded header list is larger than the limit passed to
    /// [`Decoder::decode`]. The block itself was valid and fully processed;
    /// see [`Decoder::decode`] for what the caller should do.
    #[error("header list too large")]
    HeaderListTooLarge,
}

impl DecoderError {
    /// Whether the error means the peer's encoder and our decoder can no
    /// longer agree, so the connection must be closed with COMPRESSION_ERROR.
    ///
    /// Only [`DecoderError::HeaderListTooLarge`] is not: the decoder is still
    /// in sync and only the one request or response has to be refused.
    pub fn is_compression_error(&self) -> bool {
        !matches!(self, Self::HeaderListTooLarge)
    }
}

/// The decoding side of an HPACK context: one per connection, fed every
/// header block the peer sends, in order.
#[derive(Debug)]
pub struct Decoder {
    table: DynamicTable,
    /// Our SETTINGS_HEADER_TABLE_SIZE: the largest size an update may set.
    limit: usize,
    /// Set when `limit` dropped below the table's maximum size: the next block
    /// must start with a size update at or below this value.
    required_update: Option<usize>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DEFAULT_TABLE_SIZE)
    }
}

impl Decoder {
    /// Makes a decoder whose dynamic table starts with `max_table_size`
    /// octets, which is also the largest size a table size update may ask for.
    ///
    /// For HTTP/2 this is 4,096 ([`DEFAULT_TABLE_SIZE`]): the peer starts
    /// with that size whatever we put in our first SETTINGS frame, and
    /// [`Decoder::set_max_table_size`] applies the setting once it is in
    /// force.
    pub fn new(max_table_size: usize) -> Self {
        Self {
            table: DynamicTable::new(max_table_size),
            limit: max_table_size,
            required_update: None,
        }
    }

    /// Applies a new value of our SETTINGS_HEADER_TABLE_SIZE.
    ///
    /// Call this when the peer's encoder is bound by the new value: for a
    /// decrease, when the peer acknowledges the SETTINGS frame; an increase
    /// may be applied as soon as the frame is sent.
    ///
    /// When the value is below the current table size, RFC 7541 section 4.2
    /// requires the peer to start its next header block with a dynamic table
    /// size update that fits; [`Decoder::decode`] enforces that.
    pub fn set_max_table_size(&mut self, max_table_size: usize) {
        self.limit = max_table_size;
        if max_table_size < self.table.max_size() {
            let required = self
                .required_update
                .map_or(max_table_size, |r| r.min(max_table_size));
            self.required_update = Some(required);
        }
    }

    /// Decodes one complete header block, passing the fields to `emit` in
    /// order.
    ///
    /// `max_header_list_size` bounds the sum of [`Header::size`] over the
    /// emitted fields (our SETTINGS_MAX_HEADER_LIST_SIZE). Once the sum would
    /// go over it, the decoder stops emitting but keeps decoding, so that the
    /// dynamic table stays in step with the peer's, and then returns
    /// [`DecoderError::HeaderListTooLarge`]. The fields emitted before that
    /// point are an incomplete list the caller should drop; the decoder itself
    /// remains usable, and the caller can refuse the one request or response
    /// (431 or RST_STREAM) instead of closing the connection.
    ///
    /// Any other error is a COMPRESSION_ERROR: the dynamic table may have been
    /// partly updated and the decoder must not be used again.
    ///
    /// Memory use is bounded by the block and the table size: string lengths
    /// are checked against the remaining input before anything is allocated,
    /// and fields over the list limit are never copied out of the table.
    pub fn decode(
        &mut self,
        block: &[u8],
        max_header_list_size: usize,
        mut emit: impl FnMut(Header),
    ) -> Result<(), DecoderError> {
        let mut input = block;
        self.size_updates(&mut input)?;

        let mut budget = Budget {
            remaining: max_header_list_size,
            exceeded: false,
        };
        while let Some(&first) = input.first() {
            self.field(first, &mut input, &mut budget, &mut emit)?;
        }
        if budget.exceeded {
            return Err(DecoderError::HeaderListTooLarge);
        }
        Ok(())
    }

    /// The dynamic table, for checks in tests.
    #[cfg(test)]
    pub(crate) fn table(&self) -> &DynamicTable {
        &self.table
    }

    /// Reads the dynamic table size updates at the start of a block.
    fn size_updates(&mut self, input: &mut &[u8]) -> Result<(), DecoderError> {
        let mut acknowledged = self.required_update.is_none();
        while let Some(&first) = input.first() {
            if first & 0b1110_0000 != 0b0010_0000 {
                break;
            }
            let size = integer::decode(input, 5)?;
            // RFC 7541 section 6.3: "The new maximum size MUST be lower than
            // or equal to the limit determined by the protocol using HPACK. A
            // value that exceeds this limit MUST be treated as a decoding
            // error."
            if size > self.limit {
                return Err(DecoderError::TableSizeTooLarge {
                    size,
                    limit: self.limit,
                });
            }
            if self
                .required_update
                .is_some_and(|required| size <= required)
            {
                acknowledged = true;
            }
            self.table.set_max_size(size);
        }
        // RFC 7541 section 4.2: "This dynamic table size update MUST occur at
        // the beginning of the first header block following the change to the
        // dynamic table size."
        if !acknowledged {
            return Err(DecoderError::MissingSizeUpdate);
        }
        self.required_update = None;
        Ok(())
    }

    /// Reads one field representation; `first` is its first byte.
    fn field(
        &mut self,
        first: u8,
        input: &mut &[u8],
        budget: &mut Budget,
        emit: &mut impl FnMut(Header),
    ) -> Result<(), DecoderError> {
        if first & 0b1000_0000 != 0 {
            return self.indexed(input, budget, emit);
        }
        if first & 0b1100_0000 == 0b0100_0000 {
            return self.literal(input, Literal::Indexed, budget, emit);
        }
        if first & 0b1110_0000 == 0b0010_0000 {
            // Size updates are only allowed before the first field; see
            // `size_updates`.
            return Err(DecoderError::SizeUpdateAfterField);
        }
        if first & 0b1111_0000 == 0b0001_0000 {
            return self.literal(input, Literal::NeverIndexed, budget, emit);
        }
        self.literal(input, Literal::NotIndexed, budget, emit)
    }

    /// An indexed header field, RFC 7541 section 6.1.
    fn indexed(
        &mut self,
        input: &mut &[u8],
        budget: &mut Budget,
        emit: &mut impl FnMut(Header),
    ) -> Result<(), DecoderError> {
        let index = integer::decode(input, 7)?;
        let (name, value) = self.entry(index)?;
        // The entry is shared, not copied, and counted at its full size: this is
        // what keeps a block of one-byte references to a large entry from
        // passing the list limit.
        if budget.admit(table::entry_size(&name, &value)) {
            emit(Header::new(name, value));
        }
        Ok(())
    }

    /// A literal header field, RFC 7541 section 6.2.
    fn literal(
        &mut self,
        input: &mut &[u8],
        kind: Literal,
        budget: &mut Budget,
        emit: &mut impl FnMut(Header),
    ) -> Result<(), DecoderError> {
        let index = integer::decode(input, kind.prefix_bits())?;
        // A name from the table is shared, not copied. RFC 7541 section 4.4
        // warns that it may come from an entry the insertion below evicts;
        // holding its own reference makes that harmless.
        let name = match index {
            0 => read_string(input)?,
            _ => self.entry(index)?.0,
        };
        let value = read_string(input)?;
        let admitted = budget.admit(table::entry_size(&name, &value));
        if kind == Literal::Indexed {
            if admitted {
                emit(Header::new(name.clone(), value.clone()));
            }
            self.table.insert(name, value);
        } else if admitted {
            emit(Header {
                name,
                value,
                sensitive: kind == Literal::NeverIndexed,
            });
        }
        Ok(())
    }

    fn entry(&self, index: usize) -> Result<(Bytes, Bytes), DecoderError> {
        // RFC 7541 section 6.1: "The index value of 0 is not used. It MUST be
        // treated as a decoding error if found in an indexed header field
        // representation." Section 2.3.3: "Indices strictly greater than the
        // sum of the lengths of both tables MUST be treated as a decoding
        // error."
        self.table
            .get(index)
            .ok_or(DecoderError::InvalidIndex(index))
    }
}

/// The three kinds of literal header field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Literal {
    /// With incremental indexing, RFC 7541 section 6.2.1.
    Indexed,
    /// Without indexing, RFC 7541 section 6.2.2.
    NotIndexed,
    /// Never indexed, RFC 7541 section 6.2.3.
    NeverIndexed,
}

impl Literal {
    fn prefix_bits(self) -> u8 {
        match self {
            Self::Indexed => 6,
            Self::NotIndexed | Self::NeverIndexed => 4,
        }
    }
}

/// What is left of the header list size limit.
struct Budget {
    remaining: usize,
    exceeded: bool,
}

impl Budget {
    /// Whether a field of `size` still fits. Once one field does not, no
    /// later field does either, so the emitted list is always a prefix.
    fn admit(&mut self, size: usize) -> bool {
        if self.exceeded {
            return false;
        }
        match self.remaining.checked_sub(size) {
            Some(remaining) => {
                self.remaining = remaining;
                true
            }
            None => {
                self.exceeded = true;
                false
            }
        }
    }
}

/// Reads a string literal, RFC 7541 section 5.2.
fn read_string(input: &mut &[u8]) -> Result<Bytes, DecoderError> {
    let huffman = input.first().is_some_and(|&b| b & 0x80 != 0);
    let len = integer::decode(input, 7)?;
    // Check the claimed length against what is there before allocating.
    let (raw, rest) = input
        .split_at_checked(len)
        .ok_or(DecoderError::StringTooLong)?;
    *input = rest;
    if !huffman {
        return Ok(Bytes::copy_from_slice(raw));
    }
    let mut decoded = Vec::new();
    huffman::decode(raw, &mut decoded)?;
    Ok(Bytes::from(decoded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hpack::rfc_vectors::hex;

    /// Decodes a block into a list, or the error.
    fn decode(decoder: &mut Decoder, block: &[u8]) -> Result<Vec<Header>, DecoderError> {
        let mut headers = Vec::new();
        decoder.decode(block, usize::MAX, |h| headers.push(h))?;
        Ok(headers)
    }

    fn decode_fresh(block: &[u8]) -> Result<Vec<Header>, DecoderError> {
        decode(&mut Decoder::default(), block)
    }

    /// A literal with incremental indexing, new name, raw strings.
    fn indexed_literal(name: &[u8], value: &[u8]) -> Vec<u8> {
        let mut block = vec![0x40];
        for s in [name, value] {
            integer::encode(s.len(), 7, 0, &mut block);
            block.extend_from_slice(s);
        }
        block
    }

    #[test]
    fn index_zero_is_rejected() {
        assert_eq!(decode_fresh(&[0x80]), Err(DecoderError::InvalidIndex(0)));
    }

    #[test]
    fn index_past_the_tables_is_rejected() {
        // The dynamic table is empty, so 62 is one past the end.
        assert_eq!(decode_fresh(&[0xbe]), Err(DecoderError::InvalidIndex(62)));
        assert_eq!(decode_fresh(&[0xbd]).map(|h| h.len()), Ok(1));
        // A literal whose name index is out of range.
        assert_eq!(
            decode_fresh(&[0x7f, 0x00, 0x01, b'v']),
            Err(DecoderError::InvalidIndex(63))
        );
        // A huge index.
        assert_eq!(
            decode_fresh(&[0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(DecoderError::InvalidIndex(
                0x7f + 0x7f + (0x7f << 7) + (0x7f << 14) + (0x0f << 21)
            ))
        );
    }

    #[test]
    fn size_update_above_the_limit_is_rejected() {
        let mut decoder = Decoder::new(4096);
        let mut block = Vec::new();
        integer::encode(4097, 5, 0x20, &mut block);
        assert_eq!(
            decode(&mut decoder, &block),
            Err(DecoderError::TableSizeTooLarge {
                size: 4097,
                limit: 4096
            })
        );
        // Exactly the limit is fine.
        block.clear();
        integer::encode(4096, 5, 0x20, &mut block);
        assert_eq!(decode(&mut decoder, &block), Ok(Vec::new()));
    }

    #[test]
    fn size_update_after_a_field_is_rejected() {
        // :method GET, then a size update to 0.
        assert_eq!(
            decode_fresh(&[0x82, 0x20]),
            Err(DecoderError::SizeUpdateAfterField)
        );
    }

    #[test]
    fn several_size_updates_at_the_start_are_allowed() {
        let mut decoder = Decoder::default();
        let mut block = indexed_literal(b"a", b"b");
        decode(&mut decoder, &block).unwrap();
        // Shrink to 0 (evicting everything), grow back to 100, then use it.
        block = vec![0x20];
        integer::encode(100, 5, 0x20, &mut block);
        block.extend(indexed_literal(b"c", b"d"));
        assert_eq!(decode(&mut decoder, &block).unwrap().len(), 1);
        assert_eq!(decoder.table().max_size(), 100);
        assert_eq!(decoder.table().size(), 34);
        assert_eq!(
            decode(&mut decoder, &[0xbf]),
            Err(DecoderError::InvalidIndex(63))
        );
    }

    #[test]
    fn lowered_setting_requires_an_update_in_the_next_block() {
        let mut decoder = Decoder::default();
        decoder.set_max_table_size(1024);
        assert_eq!(
            decode(&mut decoder, &[0x82]),
            Err(DecoderError::MissingSizeUpdate)
        );

        // An update that does not go low enough does not count either.
        let mut decoder = Decoder::default();
        decoder.set_max_table_size(1024);
        decoder.set_max_table_size(2048);
        let mut block = Vec::new();
        integer::encode(2048, 5, 0x20, &mut block);
        assert_eq!(
            decode(&mut decoder, &block),
            Err(DecoderError::MissingSizeUpdate)
        );

        // Going down to the smallest value, then up again, does.
        let mut decoder = Decoder::default();
        decoder.set_max_table_size(1024);
        decoder.set_max_table_size(2048);
        let mut block = Vec::new();
        integer::encode(1024, 5, 0x20, &mut block);
        integer::encode(2048, 5, 0x20, &mut block);
        block.push(0x82);
        assert_eq!(decode(&mut decoder, &block).map(|h| h.len()), Ok(1));
        assert_eq!(decoder.table().max_size(), 2048);
        // Only the first block after the change needs it.
        assert_eq!(decode(&mut decoder, &[0x82]).map(|h| h.len()), Ok(1));
    }

    #[test]
    fn raised_setting_needs_no_update() {
        let mut decoder = Decoder::default();
        decoder.set_max_table_size(8192);
        assert_eq!(decode(&mut decoder, &[0x82]).map(|h| h.len()), Ok(1));
        let mut block = Vec::new();
        integer::encode(8192, 5, 0x20, &mut block);
        assert_eq!(decode(&mut decoder, &block), Ok(Vec::new()));
        assert_eq!(decoder.table().max_size(), 8192);
    }

    #[test]
    fn integer_overflow_is_rejected() {
        assert_eq!(
            decode_fresh(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(DecoderError::IntegerOverflow)
        );
        // In a string length.
        assert_eq!(
            decode_fresh(&[0x40, 0x7f, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(DecoderError::IntegerOverflow)
        );
        // In a size update.
        assert_eq!(
            decode_fresh(&[0x3f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
            Err(DecoderError::IntegerOverflow)
        );
    }

    #[test]
    fn truncated_blocks_are_rejected() {
        // An index that needs another byte.
        assert_eq!(decode_fresh(&[0xff]), Err(DecoderError::Truncated));
        // A literal with a new name but no name length.
        assert_eq!(decode_fresh(&[0x40]), Err(DecoderError::Truncated));
        // A literal with a name but no value.
        assert_eq!(
            decode_fresh(&[0x00, 0x01, b'a']),
            Err(DecoderError::Truncated)
        );
    }

    #[test]
    fn string_longer_than_the_block_is_rejected() {
        assert_eq!(
            decode_fresh(&[0x00, 0x05, b'a', b'b']),
            Err(DecoderError::StringTooLong)
        );
        // A claimed length of 4 GiB must not allocate anything.
        assert_eq!(
            decode_fresh(&[0x00, 0x7f, 0x80, 0xff, 0xff, 0xff, 0x0f]),
            Err(DecoderError::StringTooLong)
        );
    }

    #[test]
    fn bad_huffman_strings_are_rejected() {
        // A value of one Huffman byte of all ones: 8 bits of padding.
        assert_eq!(
            decode_fresh(&[0x00, 0x01, b'a', 0x81, 0xff]),
            Err(DecoderError::HuffmanPadding)
        );
        // A name containing EOS.
        assert_eq!(
            decode_fresh(&[0x00, 0x84, 0xff, 0xff, 0xff, 0xff, 0x00]),
            Err(DecoderError::HuffmanEos)
        );
    }

    #[test]
    fn never_indexed_fields_come_back_sensitive() {
        let headers = decode_fresh(&hex("1008 7061 7373 776f 7264 0673 6563 7265 74")).unwrap();
        assert_eq!(headers, [Header::new_sensitive("password", "secret")]);
        // With an indexed name (authorization, 23 = 0x0f + 8).
        let headers = decode_fresh(&[0x1f, 0x08, 0x01, b'x']).unwrap();
        assert_eq!(headers, [Header::new_sensitive("authorization", "x")]);
    }

    #[test]
    fn literal_may_name_an_entry_it_evicts() {
        // A table with room for one 34-octet entry.
        let mut decoder = Decoder::new(40);
        decode(&mut decoder, &indexed_literal(b"a", b"1")).unwrap();
        // Literal with incremental indexing, name index 62 (the entry "a"),
        // value "2"; inserting it evicts the entry its name came from.
        let headers = decode(&mut decoder, &[0x7e, 0x01, b'2']).unwrap();
        assert_eq!(headers, [Header::new("a", "2")]);
        let entries: Vec<_> = decoder.table().entries().cloned().collect();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            (&entries[0].name[..], &entries[0].value[..]),
            (&b"a"[..], &b"2"[..])
        );
    }

    #[test]
    fn header_list_limit_is_exact() {
        // :method GET is 7 + 3 + 32 = 42 octets.
        let block = [0x82, 0x82];
        let mut decoder = Decoder::default();
        assert_eq!(decoder.decode(&block, 84, |_| {}), Ok(()));
        let mut count = 0;
        assert_eq!(
            decoder.decode(&block, 83, |_| count += 1),
            Err(DecoderError::HeaderListTooLarge)
        );
        assert_eq!(count, 1);
        assert_eq!(
            decoder.decode(&block, 0, |_| count += 1),
            Err(DecoderError::HeaderListTooLarge)
        );
        assert_eq!(count, 1);
    }

    #[test]
    fn emitted_list_is_a_prefix() {
        // A 100-octet field that does not fit, then a 42-octet one that would.
        let mut block = indexed_literal(b"big", &[b'v'; 65]);
        block.push(0x82);
        let mut emitted = Vec::new();
        let result = Decoder::default().decode(&block, 50, |h| emitted.push(h));
        assert_eq!(result, Err(DecoderError::HeaderListTooLarge));
        assert!(emitted.is_empty());
    }

    #[test]
    fn hpack_bomb_is_bounded_by_the_list_limit() {
        // One 4,000-octet value inserted once, then referenced 100,000 times
        // at one octet each: 400 MB of header list from 100 KB of block.
        let mut block = indexed_literal(b"bomb", &[b'x'; 4000]);
        block.extend(std::iter::repeat_n(0xbe, 100_000));

        let mut decoder = Decoder::default();
        let mut emitted = 0usize;
        let mut emitted_size = 0usize;
        let result = decoder.decode(&block, 16_384, |h| {
            emitted += 1;
            emitted_size += h.size();
        });
        assert_eq!(result, Err(DecoderError::HeaderListTooLarge));
        assert!(!DecoderError::HeaderListTooLarge.is_compression_error());
        // 4,036 octets per field: four fit under 16 KiB.
        assert_eq!(emitted, 4);
        assert!(emitted_size <= 16_384);

        // The decoder is still in step and usable for the next block.
        let headers = decode(&mut decoder, &[0xbe]).unwrap();
        assert_eq!(headers, [Header::new("bomb", vec![b'x'; 4000])]);
    }

    #[test]
    fn table_stays_in_sync_after_list_too_large() {
        let mut decoder = Decoder::default();
        // Two indexed literals; the limit only admits the first.
        let mut block = indexed_literal(b"first", b"1");
        block.extend(indexed_literal(b"second", b"2"));
        let mut emitted = Vec::new();
        assert_eq!(
            decoder.decode(&block, 40, |h| emitted.push(h)),
            Err(DecoderError::HeaderListTooLarge)
        );
        assert_eq!(emitted, [Header::new("first", "1")]);
        // Both entries were still inserted: 62 is "second", 63 is "first".
        let headers = decode(&mut decoder, &[0xbe, 0xbf]).unwrap();
        assert_eq!(
            headers,
            [Header::new("second", "2"), Header::new("first", "1")]
        );
    }

    #[test]
    fn compression_errors_win_over_list_too_large() {
        let mut decoder = Decoder::default();
        let result = decoder.decode(&[0x82, 0x80], 10, |_| {});
        assert_eq!(result, Err(DecoderError::InvalidIndex(0)));
        assert!(DecoderError::InvalidIndex(0).is_compression_error());
        assert!(DecoderError::Truncated.is_compression_error());
    }

    #[test]
    fn empty_block_is_an_empty_list() {
        assert_eq!(decode_fresh(&[]), Ok(Vec::new()));
    }

    #[test]
    fn error_messages_are_short_and_lowercase() {
        let errors = [
            DecoderError::IntegerOverflow,
            DecoderError::Truncated,
            DecoderError::StringTooLong,
            DecoderError::InvalidIndex(70),
            DecoderError::HuffmanEos,
            DecoderError::HuffmanPadding,
            DecoderError::TableSizeTooLarge { size: 2, limit: 1 },
            DecoderError::SizeUpdateAfterField,
            DecoderError::MissingSizeUpdate,
            DecoderError::HeaderListTooLarge,
        ];
        for error in errors {
            let message = error.to_string();
            assert!(message.len() < 50, "{message}");
            assert_eq!(message, message.to_lowercase());
        }
        assert_eq!(
            DecoderError::InvalidIndex(70).to_string(),
            "invalid table index 70"
        );
    }
}
