//! Replays the RLS fuzz targets' committed inputs under plain `cargo test`.
//!
//! The fuzz targets live in `xtask/fuzz/` (run with `cargo xtask fuzz`); what the RLS
//! ones do with their input is `xtask/fuzz/src/rls_bodies.rs`, included here as a
//! module so the replay runs the very same code. Every file in
//! `xtask/fuzz/regressions/<target>/` (inputs that once crashed a target, kept after
//! the fix) and in `xtask/fuzz/seeds/<target>/` (the small valid inputs fuzzing starts
//! from) goes through its target's body; a panic fails the test and names the file.
//!
//! Only the targets in `rls_bodies::TARGETS` (`rls_*`) are replayed here; those of
//! lb-transport and lb-core replay in `lb-transport/tests/fuzz_regressions.rs`.

#[path = "../../xtask/fuzz/src/replay.rs"]
pub mod replay;
#[path = "../../xtask/fuzz/src/rls_bodies.rs"]
pub mod rls_bodies;

use std::fs;

/// The names of the `rls_*` entries of `xtask/fuzz/<kind>/`, without `.rs`, sorted.
fn rls_names(kind: &str) -> Vec<String> {
    let Ok(entries) = fs::read_dir(replay::fuzz_dir(kind)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.expect("readable directory entry").file_name())
        .map(|n| n.to_string_lossy().trim_end_matches(".rs").to_owned())
        .filter(|n| n.starts_with("rls_"))
        .collect();
    names.sort();
    names
}

#[test]
fn fuzz_regressions_stay_fixed() {
    replay::assert_replays("regressions", rls_bodies::TARGETS);
}

#[test]
fn fuzz_seeds_pass() {
    let ran = replay::assert_replays("seeds", rls_bodies::TARGETS);
    assert!(
        ran >= rls_bodies::TARGETS.len(),
        "only {ran} seed files found"
    );
}

#[test]
fn every_body_has_a_fuzz_target_and_seeds() {
    for (target, _) in rls_bodies::TARGETS {
        assert!(
            target.starts_with("rls_"),
            "{target}: RLS targets are rls_*"
        );
    }
    replay::assert_targets_and_seeds(rls_bodies::TARGETS);
}

/// An `rls_*` target file, seeds or regressions directory without a body here would
/// be fuzzed (or kept) but never replayed.
#[test]
fn every_rls_target_and_input_directory_has_a_body() {
    let mut bodies: Vec<&str> = rls_bodies::TARGETS.iter().map(|(t, _)| *t).collect();
    bodies.sort_unstable();
    assert_eq!(rls_names("fuzz_targets"), bodies, "fuzz_targets/rls_*.rs");
    for kind in ["seeds", "regressions"] {
        for name in rls_names(kind) {
            assert!(
                bodies.contains(&name.as_str()),
                "xtask/fuzz/{kind}/{name} has no body in rls_bodies::TARGETS"
            );
        }
    }
}

#[test]
fn empty_input_is_fine_everywhere() {
    for (_, body) in rls_bodies::TARGETS {
        body(&[]);
    }
}
