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

#[path = "../../xtask/fuzz/src/rls_bodies.rs"]
pub mod rls_bodies;

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// `xtask/fuzz/<kind>/`.
fn inputs_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("lb-rls lives in the workspace")
        .join("xtask/fuzz")
        .join(kind)
}

/// The files in `dir`, sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// The names of the `rls_*` entries of `xtask/fuzz/<kind>/`, without `.rs`, sorted.
fn rls_names(kind: &str) -> Vec<String> {
    let Ok(entries) = fs::read_dir(inputs_dir(kind)) else {
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

/// Runs every file of `xtask/fuzz/<kind>/<target>/` through its target; returns how
/// many ran and the failures.
fn replay(kind: &str) -> (usize, Vec<String>) {
    let mut ran = 0;
    let mut failures = Vec::new();
    for (target, body) in rls_bodies::TARGETS {
        for file in files(&inputs_dir(kind).join(target)) {
            let data = fs::read(&file).expect("readable input");
            ran += 1;
            if let Err(panic) = panic::catch_unwind(AssertUnwindSafe(|| body(&data))) {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(non-string panic)");
                failures.push(format!("{}: {message}", file.display()));
            }
        }
    }
    (ran, failures)
}

#[test]
fn fuzz_regressions_stay_fixed() {
    let (_, failures) = replay("regressions");
    assert!(
        failures.is_empty(),
        "regressions failing again:\n{}",
        failures.join("\n")
    );
}

#[test]
fn fuzz_seeds_pass() {
    let (ran, failures) = replay("seeds");
    assert!(
        failures.is_empty(),
        "seeds failing:\n{}",
        failures.join("\n")
    );
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
        let file = inputs_dir("fuzz_targets").join(format!("{target}.rs"));
        assert!(file.is_file(), "no fuzz target {}", file.display());
        let dir = inputs_dir("seeds").join(target);
        assert!(!files(&dir).is_empty(), "no seeds in {}", dir.display());
    }
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
