//! Huffman coding of string literals, RFC 7541 section 5.2 and Appendix B.
//!
//! Encoding looks codes up in [`CODES`] and packs them into bytes. Decoding
//! walks the code tree four bits at a time using a transition table that is
//! built from [`CODES`] at compile time: for each internal node of the tree
//! and each 4-bit input, the table says which node we end up at and which
//! symbol, if any, was completed on the way. The shortest code is five bits
//! long, so at most one symbol completes per nibble.

use super::DecoderError;
use super::huffman_table::CODES;

/// The symbol number of EOS, the end-of-string code that must never appear
/// inside a string.
const EOS: u16 = 256;

/// The number of internal nodes of the code tree. A complete prefix code for
/// 257 symbols has 256 of them, which conveniently fits node numbers in a
/// `u8`. Node 0 is the root.
const NODES: usize = 256;

/// A child of a node in the code tree.
#[derive(Clone, Copy)]
enum Child {
    Node(u8),
    Symbol(u16),
    Missing,
}

/// The outcome of feeding one nibble to the decoder in a given state.
#[derive(Clone, Copy)]
struct Step {
    /// The node reached after the four bits.
    next: u8,
    /// The symbol completed during the four bits, if any.
    symbol: Option<u8>,
    /// Whether the four bits completed EOS (or left the tree, which cannot
    /// happen with the complete RFC code).
    fail: bool,
}

/// The code tree, built from the RFC table.
const TREE: [[Child; 2]; NODES] = build_tree();

/// `STEPS[node][nibble]` is the transition for one nibble of input.
static STEPS: [[Step; 16]; NODES] = build_steps();

/// Whether decoding may stop at each node.
///
/// RFC 7541 section 5.2: "A padding strictly longer than 7 bits MUST be
/// treated as a decoding error. A padding not corresponding to the most
/// significant bits of the code for the EOS symbol MUST be treated as a
/// decoding error." The EOS code is all ones, so the valid end states are the
/// root and the nodes reached by one to seven 1-bits from the root.
static ACCEPTING: [bool; NODES] = build_accepting();

const fn build_tree() -> [[Child; 2]; NODES] {
    let mut tree = [[Child::Missing; 2]; NODES];
    let mut next_free = 1;
    let mut symbol = 0;
    while symbol < CODES.len() {
        let (code, len) = CODES[symbol];
        let mut node = 0;
        let mut bit = len;
        // Walk (and create) internal nodes for every bit but the last.
        while bit > 1 {
            bit -= 1;
            let side = ((code >> bit) & 1) as usize;
            node = match tree[node][side] {
                Child::Node(n) => n as usize,
                Child::Missing => {
                    assert!(next_free < NODES, "code tree has too many nodes");
                    tree[node][side] = Child::Node(next_free as u8);
                    next_free += 1;
                    next_free - 1
                }
                Child::Symbol(_) => panic!("Huffman code is not prefix-free"),
            };
        }
        let side = (code & 1) as usize;
        assert!(
            matches!(tree[node][side], Child::Missing),
            "Huffman code is not prefix-free"
        );
        tree[node][side] = Child::Symbol(symbol as u16);
        symbol += 1;
    }
    assert!(next_free == NODES, "Huffman code is not complete");
    tree
}

const fn build_steps() -> [[Step; 16]; NODES] {
    let empty = Step {
        next: 0,
        symbol: None,
        fail: false,
    };
    let mut steps = [[empty; 16]; NODES];
    let mut state = 0;
    while state < NODES {
        let mut nibble = 0;
        while nibble < 16 {
            let mut step = empty;
            let mut node = state;
            let mut bit = 4;
            while bit > 0 {
                bit -= 1;
                match TREE[node][(nibble >> bit) & 1] {
                    Child::Node(n) => node = n as usize,
                    Child::Symbol(EOS) | Child::Missing => {
                        step.fail = true;
                        node = 0;
                    }
                    Child::Symbol(symbol) => {
                        assert!(step.symbol.is_none(), "two symbols in one nibble");
                        step.symbol = Some(symbol as u8);
                        node = 0;
                    }
                }
            }
            step.next = node as u8;
            steps[state][nibble] = step;
            nibble += 1;
        }
        state += 1;
    }
    steps
}

const fn build_accepting() -> [bool; NODES] {
    let mut accepting = [false; NODES];
    accepting[0] = true;
    let mut node = 0;
    let mut ones = 0;
    while ones < 7 {
        node = match TREE[node][1] {
            Child::Node(n) => n as usize,
            _ => panic!("the EOS code must be longer than 7 bits"),
        };
        accepting[node] = true;
        ones += 1;
    }
    accepting
}

/// The length in bytes of the Huffman encoding of `src`, padding included.
pub(crate) fn encoded_len(src: &[u8]) -> usize {
    let bits: usize = src
        .iter()
        .map(|&b| usize::from(CODES[usize::from(b)].1))
        .sum();
    bits.div_ceil(8)
}

/// Appends the Huffman encoding of `src` to `dst`.
pub(crate) fn encode(src: &[u8], dst: &mut Vec<u8>) {
    // Pending bits live in the low `pending` bits of `acc`. Codes are at most
    // 30 bits and at most 7 bits are left over between bytes, so 64 bits of
    // accumulator are plenty.
    let mut acc: u64 = 0;
    let mut pending: u32 = 0;
    for &byte in src {
        let (code, len) = CODES[usize::from(byte)];
        acc = (acc << len) | u64::from(code);
        pending += u32::from(len);
        while pending >= 8 {
            pending -= 8;
            dst.push((acc >> pending) as u8);
        }
        acc &= (1 << pending) - 1;
    }
    if pending > 0 {
        // RFC 7541 section 5.2: "the most significant bits of the code
        // corresponding to the EOS symbol are used" as padding, i.e. 1-bits.
        let pad = 8 - pending;
        dst.push(((acc << pad) as u8) | (u8::MAX >> pending));
    }
}

/// Appends the decoding of the Huffman-encoded `src` to `dst`.
pub(crate) fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), DecoderError> {
    // Every symbol takes at least five bits.
    dst.reserve(src.len() / 5 * 8 + 8);
    let mut state = 0u8;
    for &byte in src {
        for nibble in [byte >> 4, byte & 0x0f] {
            let step = STEPS[usize::from(state)][usize::from(nibble)];
            if step.fail {
                // RFC 7541 section 5.2: "A Huffman-encoded string literal
                // containing the EOS symbol MUST be treated as a decoding
                // error."
                return Err(DecoderError::HuffmanEos);
            }
            if let Some(symbol) = step.symbol {
                dst.push(symbol);
            }
            state = step.next;
        }
    }
    if !ACCEPTING[usize::from(state)] {
        return Err(DecoderError::HuffmanPadding);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(src: &[u8]) -> Vec<u8> {
        let mut dst = Vec::new();
        encode(src, &mut dst);
        assert_eq!(dst.len(), encoded_len(src));
        dst
    }

    fn decoded(src: &[u8]) -> Result<Vec<u8>, DecoderError> {
        let mut dst = Vec::new();
        decode(src, &mut dst)?;
        Ok(dst)
    }

    fn hex(s: &str) -> Vec<u8> {
        crate::hpack::rfc_vectors::hex(s)
    }

    #[test]
    fn table_is_a_complete_prefix_code() {
        // Kraft's equality: sum of 2^-len over all codes is exactly one. With
        // 30-bit codes at most, scale everything by 2^30.
        let total: u64 = CODES.iter().map(|&(_, len)| 1u64 << (30 - len)).sum();
        assert_eq!(total, 1 << 30);
        for (symbol, &(code, len)) in CODES.iter().enumerate() {
            assert!((5..=30).contains(&len), "symbol {symbol}");
            assert!(u64::from(code) < 1 << len, "symbol {symbol}");
        }
    }

    #[test]
    fn spot_checks_against_appendix_b() {
        assert_eq!(CODES[usize::from(b'/')], (0x18, 6));
        assert_eq!(CODES[usize::from(b'0')], (0x0, 5));
        assert_eq!(CODES[usize::from(b'a')], (0x3, 5));
        assert_eq!(CODES[0], (0x1ff8, 13));
        assert_eq!(CODES[255], (0x3ffffee, 26));
        assert_eq!(CODES[256], (0x3fff_ffff, 30));
    }

    #[test]
    fn rfc_strings_encode_and_decode() {
        let cases: [(&str, &str); 6] = [
            ("www.example.com", "f1e3 c2e5 f23a 6ba0 ab90 f4ff"),
            ("no-cache", "a8eb 1064 9cbf"),
            ("custom-key", "25a8 49e9 5ba9 7d7f"),
            ("custom-value", "25a8 49e9 5bb8 e8b4 bf"),
            ("302", "6402"),
            (
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
                "94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 \
                 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
            ),
        ];
        for (plain, coded) in cases {
            assert_eq!(encoded(plain.as_bytes()), hex(coded), "{plain}");
            assert_eq!(
                decoded(&hex(coded)),
                Ok(plain.as_bytes().to_vec()),
                "{plain}"
            );
        }
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decoded(&encoded(&all)), Ok(all.clone()));
        for byte in all {
            assert_eq!(decoded(&encoded(&[byte])), Ok(vec![byte]), "{byte}");
        }
    }

    #[test]
    fn empty_string() {
        assert_eq!(encoded(b""), b"");
        assert_eq!(decoded(b""), Ok(Vec::new()));
    }

    #[test]
    fn eos_inside_a_string_is_rejected() {
        // EOS is thirty 1-bits; put it after '0' (00000) and pad.
        // 00000111 11111111 11111111 11111111 1 + 1111111 padding.
        assert_eq!(
            decoded(&[0x07, 0xff, 0xff, 0xff, 0xff]),
            Err(DecoderError::HuffmanEos)
        );
        // EOS on its own, padded with ones.
        assert_eq!(decoded(&[0xff; 4]), Err(DecoderError::HuffmanEos));
    }

    #[test]
    fn padding_longer_than_seven_bits_is_rejected() {
        // A whole byte of padding.
        assert_eq!(decoded(&[0xff]), Err(DecoderError::HuffmanPadding));
        // '0' (00000), then 11 bits of padding.
        assert_eq!(decoded(&[0x07, 0xff]), Err(DecoderError::HuffmanPadding));
        // Seven bits of padding is fine: 'a' (00011) + 111 is 0x1f.
        assert_eq!(decoded(&[0x1f]), Ok(b"a".to_vec()));
    }

    #[test]
    fn padding_with_zero_bits_is_rejected() {
        // 'a' (00011) followed by 000 instead of 111.
        assert_eq!(decoded(&[0x18]), Err(DecoderError::HuffmanPadding));
        // 'a' followed by 110.
        assert_eq!(decoded(&[0x1e]), Err(DecoderError::HuffmanPadding));
        // A code cut short: the first 8 of the 10 bits of '!' (11111110 00).
        assert_eq!(decoded(&[0xfe]), Err(DecoderError::HuffmanPadding));
    }

    #[test]
    fn encoded_len_matches_bit_lengths() {
        // ' ' is 6 bits, '!' is 10 bits: 16 bits, no padding.
        assert_eq!(encoded_len(b" !"), 2);
        // Three 5-bit codes: 15 bits, one bit of padding.
        assert_eq!(encoded_len(b"aaa"), 2);
        assert_eq!(encoded(b"aaa"), [0b0001_1000, 0b1100_0111]);
    }
}
