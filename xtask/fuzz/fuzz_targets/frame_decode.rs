//! Fuzz target: HTTP/2 frame parsing with `FrameReader`, frame after frame.
//!
//! The body is `lb_fuzz::bodies::frame_decode` in `../src/bodies.rs`, which the regression test
//! `lb-transport/tests/fuzz_regressions.rs` also runs.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb_fuzz::bodies::frame_decode(data));
