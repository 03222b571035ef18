//! Fuzz target: the `rls_experimental` JSON config through `RlsConfig::parse`, with the built-in policies and `rls_dial_target`.
//!
//! The body is `lb_fuzz::rls_bodies::rls_config` in `../src/rls_bodies.rs`, which the regression test
//! `lb-rls/tests/fuzz_regressions.rs` also runs.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb_fuzz::rls_bodies::rls_config(data));
