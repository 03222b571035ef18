//! Fuzz target: a server `Connection`, fed the input as the client's bytes after its preface and SETTINGS.
//!
//! The body is `lb_fuzz::bodies::server_connection` in `../src/bodies.rs`, which the regression test
//! `lb-transport/tests/fuzz_regressions.rs` also runs.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb_fuzz::bodies::server_connection(data));
