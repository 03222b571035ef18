//! The examples of RFC 7541 Appendix C.
//!
//! Each example is decoded from the RFC's bytes and checked against the RFC's
//! header list and dynamic table. The same header lists are then encoded by
//! our [`Encoder`] and decoded again; the encoder makes its own choices, so
//! only the round trip and the agreement of both tables are checked, not
//! byte equality. (The integer examples of C.1 are tested in `integer.rs`.)

use super::{Decoder, Encoder, Header};

/// Parses a hex dump like the RFC's, ignoring whitespace.
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .map(|b| match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => panic!("bad hex digit {:?}", b as char),
        })
        .collect();
    assert!(digits.len() % 2 == 0, "odd number of hex digits");
    digits
        .chunks(2)
        .map(|pair| pair[0] << 4 | pair[1])
        .collect()
}

/// One header block of an example sequence.
struct Example {
    /// The "hex dump of encoded data".
    block: &'static str,
    /// The "decoded header list".
    headers: &'static [(&'static str, &'static str)],
    /// The "dynamic table (after decoding)", first entry first.
    table: &'static [(&'static str, &'static str)],
    /// The "table size" after decoding.
    table_size: usize,
}

fn pairs(headers: &[Header]) -> Vec<(&[u8], &[u8])> {
    headers
        .iter()
        .map(|h| (&h.name[..], &h.value[..]))
        .collect()
}

fn expected(list: &[(&'static str, &'static str)]) -> Vec<(&'static [u8], &'static [u8])> {
    list.iter()
        .map(|&(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect()
}

fn table_pairs(decoder: &Decoder) -> Vec<(Vec<u8>, Vec<u8>)> {
    decoder
        .table()
        .entries()
        .map(|e| (e.name.to_vec(), e.value.to_vec()))
        .collect()
}

fn decode(decoder: &mut Decoder, block: &[u8]) -> Vec<Header> {
    let mut headers = Vec::new();
    decoder
        .decode(block, usize::MAX, |h| headers.push(h))
        .unwrap();
    headers
}

/// Decodes a sequence of blocks on one connection with a table of
/// `table_size` octets, checking the headers and the table after each.
fn check_decoding(table_size: usize, examples: &[Example]) {
    let mut decoder = Decoder::new(table_size);
    for (i, example) in examples.iter().enumerate() {
        let headers = decode(&mut decoder, &hex(example.block));
        assert_eq!(pairs(&headers), expected(example.headers), "block {i}");

        let table: Vec<(Vec<u8>, Vec<u8>)> = example
            .table
            .iter()
            .map(|&(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(table_pairs(&decoder), table, "table after block {i}");
        assert_eq!(decoder.table().size(), example.table_size, "block {i}");
    }
}

/// Encodes the same header lists with our encoder, as a peer that advertised
/// `table_size` would see them, and checks that they decode to the same lists
/// with both tables in agreement.
fn check_round_trip(table_size: usize, examples: &[Example]) {
    let mut encoder = Encoder::new();
    let mut decoder = Decoder::default();
    encoder.set_max_table_size(table_size);
    decoder.set_max_table_size(table_size);
    for (i, example) in examples.iter().enumerate() {
        let headers: Vec<Header> = example
            .headers
            .iter()
            .map(|&(n, v)| Header::new(n, v))
            .collect();
        let mut block = Vec::new();
        encoder.encode(&headers, &mut block);
        assert_eq!(decode(&mut decoder, &block), headers, "block {i}");
        let encoder_table: Vec<_> = encoder.table().entries().collect();
        let decoder_table: Vec<_> = decoder.table().entries().collect();
        assert_eq!(encoder_table, decoder_table, "block {i}");
        assert_eq!(decoder.table().max_size(), table_size);
        assert!(decoder.table().size() <= table_size);
    }
}

#[test]
fn c_2_1_literal_with_indexing() {
    check_decoding(
        4096,
        &[Example {
            block: "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
            headers: &[("custom-key", "custom-header")],
            table: &[("custom-key", "custom-header")],
            table_size: 55,
        }],
    );
}

#[test]
fn c_2_2_literal_without_indexing() {
    check_decoding(
        4096,
        &[Example {
            block: "040c 2f73 616d 706c 652f 7061 7468",
            headers: &[(":path", "/sample/path")],
            table: &[],
            table_size: 0,
        }],
    );
}

#[test]
fn c_2_3_literal_never_indexed() {
    let example = Example {
        block: "1008 7061 7373 776f 7264 0673 6563 7265 74",
        headers: &[("password", "secret")],
        table: &[],
        table_size: 0,
    };
    check_decoding(4096, std::slice::from_ref(&example));
    let headers = decode(&mut Decoder::default(), &hex(example.block));
    assert!(headers[0].sensitive);
}

#[test]
fn c_2_4_indexed() {
    check_decoding(
        4096,
        &[Example {
            block: "82",
            headers: &[(":method", "GET")],
            table: &[],
            table_size: 0,
        }],
    );
}

const C3: [Example; 3] = [
    Example {
        block: "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        headers: &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ],
        table: &[(":authority", "www.example.com")],
        table_size: 57,
    },
    Example {
        block: "8286 84be 5808 6e6f 2d63 6163 6865",
        headers: &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
            ("cache-control", "no-cache"),
        ],
        table: &[
            ("cache-control", "no-cache"),
            (":authority", "www.example.com"),
        ],
        table_size: 110,
    },
    Example {
        block: "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        headers: &[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            (":authority", "www.example.com"),
            ("custom-key", "custom-value"),
        ],
        table: &[
            ("custom-key", "custom-value"),
            ("cache-control", "no-cache"),
            (":authority", "www.example.com"),
        ],
        table_size: 164,
    },
];

/// C.4 is C.3 with Huffman-coded strings; the lists and tables are the same.
const C4_BLOCKS: [&str; 3] = [
    "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
    "8286 84be 5886 a8eb 1064 9cbf",
    "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
];

const C5: [Example; 3] = [
    Example {
        block: "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 \
                2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 \
                6c65 2e63 6f6d",
        headers: &[
            (":status", "302"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("location", "https://www.example.com"),
        ],
        table: &[
            ("location", "https://www.example.com"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("cache-control", "private"),
            (":status", "302"),
        ],
        table_size: 222,
    },
    Example {
        block: "4803 3330 37c1 c0bf",
        headers: &[
            (":status", "307"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("location", "https://www.example.com"),
        ],
        table: &[
            (":status", "307"),
            ("location", "https://www.example.com"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("cache-control", "private"),
        ],
        table_size: 222,
    },
    Example {
        block: "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d \
                54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 \
                5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e \
                3d31",
        headers: &[
            (":status", "200"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
            ("location", "https://www.example.com"),
            ("content-encoding", "gzip"),
            (
                "set-cookie",
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
            ),
        ],
        table: &[
            (
                "set-cookie",
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
            ),
            ("content-encoding", "gzip"),
            ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
        ],
        table_size: 215,
    },
];

/// C.6 is C.5 with Huffman-coded strings.
const C6_BLOCKS: [&str; 3] = [
    "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 \
     2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
    "4883 640e ffc1 c0bf",
    "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab \
     77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f \
     9587 3160 65c0 03ed 4ee5 b106 3d50 07",
];

/// The examples of `plain` with the blocks replaced by `blocks`.
fn with_blocks(plain: &[Example; 3], blocks: [&'static str; 3]) -> Vec<Example> {
    plain
        .iter()
        .zip(blocks)
        .map(|(e, block)| Example {
            block,
            headers: e.headers,
            table: e.table,
            table_size: e.table_size,
        })
        .collect()
}

#[test]
fn c_3_requests_without_huffman() {
    check_decoding(4096, &C3);
}

#[test]
fn c_4_requests_with_huffman() {
    check_decoding(4096, &with_blocks(&C3, C4_BLOCKS));
}

#[test]
fn c_5_responses_without_huffman() {
    check_decoding(256, &C5);
}

#[test]
fn c_6_responses_with_huffman() {
    check_decoding(256, &with_blocks(&C5, C6_BLOCKS));
}

#[test]
fn c_3_request_lists_round_trip() {
    check_round_trip(4096, &C3);
}

#[test]
fn c_5_response_lists_round_trip_with_evictions() {
    check_round_trip(256, &C5);
}

#[test]
fn c_4_1_is_what_our_encoder_writes() {
    // Our strategy happens to match the RFC's choices for the first request,
    // which pins down the Huffman and literal paths byte for byte.
    let mut encoder = Encoder::new();
    let headers: Vec<Header> = C3[0]
        .headers
        .iter()
        .map(|&(n, v)| Header::new(n, v))
        .collect();
    let mut block = Vec::new();
    encoder.encode(&headers, &mut block);
    assert_eq!(block, hex(C4_BLOCKS[0]));
}

#[test]
fn hex_helper_parses_rfc_dumps() {
    assert_eq!(hex("8286 84\n be"), [0x82, 0x86, 0x84, 0xbe]);
}
