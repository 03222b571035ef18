//! Fuzz target: `loadBalancingConfig` JSON through the policy registry, and protobuf JSON durations.
//!
//! The body is `lb_fuzz::bodies::service_config` in `../src/bodies.rs`, which the regression test
//! `lb-transport/tests/fuzz_regressions.rs` also runs.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb_fuzz::bodies::service_config(data));
