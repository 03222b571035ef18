//! Fuzz target: `grpc.health.v1` `HealthCheckRequest` and `HealthCheckResponse` decoding (`lb_core::health`), and the round trip of what decodes.
//!
//! The body is `lb_fuzz::bodies::health_codec` in `../src/bodies.rs`, which the regression test
//! `lb-transport/tests/fuzz_regressions.rs` also runs.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb_fuzz::bodies::health_codec(data));
