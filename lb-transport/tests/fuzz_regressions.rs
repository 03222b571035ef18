//! Replays the fuzz targets' committed inputs under plain `cargo test`.
//!
//! The fuzz targets live in `xtask/fuzz/` (run with `cargo xtask fuzz`); what each does
//! with its input is `xtask/fuzz/src/bodies.rs`, included here as a module so the
//! replay runs the very same code. Every file in `xtask/fuzz/regressions/<target>/`
//! (inputs that once crashed a target, kept after the fix) and in
//! `xtask/fuzz/seeds/<target>/` (the small valid inputs fuzzing starts from) goes through
//! its target's body; a panic fails the test and names the file.
//!
//! Only the targets in `bodies::TARGETS` are replayed here; targets for other crates
//! (RLS) replay in those crates' tests.

#[path = "../../xtask/fuzz/src/bodies.rs"]
pub mod bodies;
#[path = "../../xtask/fuzz/src/replay.rs"]
pub mod replay;

#[test]
fn fuzz_regressions_stay_fixed() {
    replay::assert_replays("regressions", bodies::TARGETS);
}

#[test]
fn fuzz_seeds_pass() {
    let ran = replay::assert_replays("seeds", bodies::TARGETS);
    assert!(ran >= bodies::TARGETS.len(), "only {ran} seed files found");
}

#[test]
fn every_body_has_a_fuzz_target_and_seeds() {
    replay::assert_targets_and_seeds(bodies::TARGETS);
}

#[test]
fn empty_input_is_fine_everywhere() {
    for (_, body) in bodies::TARGETS {
        body(&[]);
    }
}
