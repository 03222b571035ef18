//! Fuzz target: HPACK decoding of one block and of a sequence of blocks on one decoder.
//!
//! The body is `lb_fuzz::bodies::hpack_decode` in `../src/bodies.rs`, which the regression test
//! `lb-transport/tests/fuzz_regressions.rs` also runs.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb_fuzz::bodies::hpack_decode(data));
