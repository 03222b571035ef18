//! Fuzz target: every xDS decoder (resources, discovery messages, CSDS requests, `load_balancing_policy`, the RLS plugin's config).
//!
//! The body is `lb_fuzz::rls_bodies::rls_xds` in `../src/rls_bodies.rs`, which the regression test
//! `lb-rls/tests/fuzz_regressions.rs` also runs.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb_fuzz::rls_bodies::rls_xds(data));
