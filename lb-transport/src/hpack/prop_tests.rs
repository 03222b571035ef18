//! Property tests: encoder/decoder round trips over many blocks, and hostile
//! input that must never panic.
//!
//! The runs use a fixed seed so that every run is the same and a failure can
//! be replayed; set `PROPTEST_RNG_SEED` to explore other inputs, and
//! `PROPTEST_CASES` to run more of them.

use proptest::prelude::*;
use proptest::test_runner::RngSeed;

use super::{Decoder, DecoderError, Encoder, Header};

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::with_cases(256);
    // Failure files would be written outside this module's directory.
    config.failure_persistence = None;
    if config.rng_seed == RngSeed::Random {
        config.rng_seed = RngSeed::Fixed(0x4850_4143_4b37_3534);
    }
    config
}

/// Names from the static table, names our encoder treats specially, and
/// arbitrary bytes.
fn name() -> impl Strategy<Value = Vec<u8>> {
    const KNOWN: &[&str] = &[
        ":authority",
        ":method",
        ":path",
        ":status",
        "accept-encoding",
        "authorization",
        "content-length",
        "content-type",
        "date",
        "grpc-timeout",
        "x-custom",
        "",
    ];
    prop_oneof![
        3 => prop::sample::select(KNOWN).prop_map(|s| s.as_bytes().to_vec()),
        2 => prop::collection::vec(any::<u8>(), 0..16),
    ]
}

/// Values that repeat (and some that match static entries), arbitrary bytes,
/// and the occasional value too big for small tables.
fn value() -> impl Strategy<Value = Vec<u8>> {
    const KNOWN: &[&str] = &[
        "",
        "GET",
        "POST",
        "/",
        "/index.html",
        "200",
        "gzip, deflate",
        "application/grpc",
        "www.example.com",
    ];
    prop_oneof![
        3 => prop::sample::select(KNOWN).prop_map(|s| s.as_bytes().to_vec()),
        3 => prop::collection::vec(any::<u8>(), 0..48),
        1 => prop::collection::vec(any::<u8>(), 100..400),
    ]
}

fn header() -> impl Strategy<Value = Header> {
    (name(), value(), prop::bool::weighted(0.15)).prop_map(|(name, value, sensitive)| Header {
        name: name.into(),
        value: value.into(),
        sensitive,
    })
}

/// What happens between and in blocks on one connection.
#[derive(Debug, Clone)]
enum Op {
    /// The peer changes SETTINGS_HEADER_TABLE_SIZE.
    SetTableSize(usize),
    /// One header block.
    Block(Vec<Header>),
}

fn op() -> impl Strategy<Value = Op> {
    let size = prop_oneof![
        prop::sample::select(vec![0usize, 32, 64, 100, 256, 4096, 8192]),
        0usize..10_000,
    ];
    prop_oneof![
        1 => size.prop_map(Op::SetTableSize),
        5 => prop::collection::vec(header(), 0..10).prop_map(Op::Block),
    ]
}

fn decode(decoder: &mut Decoder, block: &[u8], limit: usize) -> Result<Vec<Header>, DecoderError> {
    let mut headers = Vec::new();
    decoder.decode(block, limit, |h| headers.push(h))?;
    Ok(headers)
}

proptest! {
    #![proptest_config(config())]

    /// Every block decodes to exactly the list that was encoded, and after
    /// every block both dynamic tables hold the same entries.
    #[test]
    fn encoded_blocks_round_trip(ops in prop::collection::vec(op(), 1..16)) {
        let mut encoder = Encoder::new();
        let mut decoder = Decoder::default();
        // A final empty block flushes any size change made at the end.
        for op in ops.into_iter().chain([Op::Block(Vec::new())]) {
            let headers = match op {
                Op::SetTableSize(size) => {
                    encoder.set_max_table_size(size);
                    decoder.set_max_table_size(size);
                    continue;
                }
                Op::Block(headers) => headers,
            };
            let mut block = Vec::new();
            encoder.encode(&headers, &mut block);
            let decoded = decode(&mut decoder, &block, usize::MAX);
            prop_assert_eq!(decoded, Ok(headers));

            let encoder_entries: Vec<_> = encoder.table().entries().collect();
            let decoder_entries: Vec<_> = decoder.table().entries().collect();
            prop_assert_eq!(encoder_entries, decoder_entries);
            prop_assert_eq!(encoder.table().size(), decoder.table().size());
            prop_assert_eq!(encoder.table().max_size(), decoder.table().max_size());
            prop_assert!(decoder.table().size() <= decoder.table().max_size());
        }
    }

    /// The header list limit admits a list of exactly its size and rejects it
    /// one octet lower, without disturbing the table.
    #[test]
    fn header_list_limit_is_exact(headers in prop::collection::vec(header(), 1..10)) {
        let total: usize = headers.iter().map(Header::size).sum();
        let mut encoder = Encoder::new();
        let mut block = Vec::new();
        encoder.encode(&headers, &mut block);

        let mut decoder = Decoder::default();
        prop_assert_eq!(decode(&mut decoder, &block, total), Ok(headers.clone()));

        let mut decoder = Decoder::default();
        let mut emitted = 0;
        let result = decoder.decode(&block, total - 1, |h| emitted += h.size());
        prop_assert_eq!(result, Err(DecoderError::HeaderListTooLarge));
        prop_assert!(emitted < total);
        let encoder_entries: Vec<_> = encoder.table().entries().collect();
        let decoder_entries: Vec<_> = decoder.table().entries().collect();
        prop_assert_eq!(encoder_entries, decoder_entries);
    }

    /// Arbitrary bytes give a result, never a panic, and never more than the
    /// header list limit.
    #[test]
    fn garbage_never_panics(block in prop::collection::vec(any::<u8>(), 0..512)) {
        let limit = 16_384;
        let mut decoder = Decoder::new(4096);
        let mut total = 0;
        let _ = decoder.decode(&block, limit, |h| total += h.size());
        prop_assert!(total <= limit);
        prop_assert!(decoder.table().size() <= 4096);
    }

    /// Valid blocks with bytes overwritten or cut off: deeper into the format
    /// than pure noise, and still never a panic.
    #[test]
    fn corrupted_blocks_never_panic(
        headers in prop::collection::vec(header(), 1..8),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut encoder = Encoder::new();
        let mut block = Vec::new();
        encoder.encode(&headers, &mut block);
        encoder.encode(&headers, &mut block);
        for (at, byte) in edits {
            let i = at.index(block.len());
            block[i] = byte;
        }
        block.truncate(cut.index(block.len() + 1));

        let mut decoder = Decoder::new(4096);
        let mut total = 0;
        let _ = decoder.decode(&block, 8192, |h| total += h.size());
        prop_assert!(total <= 8192);
        prop_assert!(decoder.table().size() <= 4096);
    }
}
