//! Fuzz target: `grpc.channelz.v1` request decoding (`lb_transport::server::channelz::wire`, what our channelz service reads), and the response decoders' round trips.
//!
//! The body is `lb_fuzz::bodies::channelz_codec` in `../src/bodies.rs`, which the regression test
//! `lb-transport/tests/fuzz_regressions.rs` also runs.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb_fuzz::bodies::channelz_codec(data));
