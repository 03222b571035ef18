//! Fuzz target: a client `Connection` with one open stream, fed the input as the server's bytes.
//!
//! The body is `lb_fuzz::bodies::client_connection` in `../src/bodies.rs`, which the regression test
//! `lb-transport/tests/fuzz_regressions.rs` also runs.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb_fuzz::bodies::client_connection(data));
