//! Fuzz target: `RouteLookupResponse` and `RouteLookupRequest` protobuf decoding, and the round trip of what decodes.
//!
//! The body is `lb_fuzz::rls_bodies::rls_response` in `../src/rls_bodies.rs`, which the regression test
//! `lb-rls/tests/fuzz_regressions.rs` also runs.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb_fuzz::rls_bodies::rls_response(data));
