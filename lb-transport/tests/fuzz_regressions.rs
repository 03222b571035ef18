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

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// `xtask/fuzz/<kind>/`.
fn inputs_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("lb-transport lives in the workspace")
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

/// Runs every file of `xtask/fuzz/<kind>/<target>/` through its target; returns how
/// many ran and the failures.
fn replay(kind: &str) -> (usize, Vec<String>) {
    let mut ran = 0;
    let mut failures = Vec::new();
    for (target, body) in bodies::TARGETS {
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
    assert!(ran >= bodies::TARGETS.len(), "only {ran} seed files found");
}

#[test]
fn every_body_has_a_fuzz_target_and_seeds() {
    for (target, _) in bodies::TARGETS {
        let file = inputs_dir("fuzz_targets").join(format!("{target}.rs"));
        assert!(file.is_file(), "no fuzz target {}", file.display());
        let dir = inputs_dir("seeds").join(target);
        assert!(!files(&dir).is_empty(), "no seeds in {}", dir.display());
    }
}

#[test]
fn empty_input_is_fine_everywhere() {
    for (_, body) in bodies::TARGETS {
        body(&[]);
    }
}
