//! Fuzz target: ORCA `OrcaLoadReport` and `OrcaLoadReportRequest` decoding (`lb_core::orca`), and the round trip of what decodes.
//!
//! The body is `lb_fuzz::bodies::orca_codec` in `../src/bodies.rs`, which the regression test
//! `lb-transport/tests/fuzz_regressions.rs` also runs.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb_fuzz::bodies::orca_codec(data));
