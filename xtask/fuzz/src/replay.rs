//! Replaying committed fuzz inputs under plain `cargo test`: the replay tests of the
//! crates include this file (`#[path]`) next to the target bodies they replay.
//!
//! Every file in `xtask/fuzz/regressions/<target>/` (inputs that once crashed a
//! target, kept after the fix) and in `xtask/fuzz/seeds/<target>/` (the small valid
//! inputs fuzzing starts from) goes through its target's body; a panic fails the test
//! and names the file.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// A fuzz target: its name and what it does with an input.
pub type Target = (&'static str, fn(&[u8]));

/// `xtask/fuzz/<kind>/`, from a crate one level below the workspace root.
pub fn fuzz_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in the workspace")
        .join("xtask/fuzz")
        .join(kind)
}

/// The files in `dir`, sorted; none if it does not exist.
pub fn files(dir: &Path) -> Vec<PathBuf> {
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

/// Runs every file of `xtask/fuzz/<kind>/<target>/` through its target and panics,
/// naming each failing file, if any failed. Returns how many files ran.
pub fn assert_replays(kind: &str, targets: &[Target]) -> usize {
    let mut ran = 0;
    let mut failures = Vec::new();
    for (target, body) in targets {
        for file in files(&fuzz_dir(kind).join(target)) {
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
    assert!(
        failures.is_empty(),
        "{kind} failing:\n{}",
        failures.join("\n")
    );
    ran
}

/// Panics unless every target has its fuzz target file and at least one seed.
pub fn assert_targets_and_seeds(targets: &[Target]) {
    for (target, _) in targets {
        let file = fuzz_dir("fuzz_targets").join(format!("{target}.rs"));
        assert!(file.is_file(), "no fuzz target {}", file.display());
        let dir = fuzz_dir("seeds").join(target);
        assert!(!files(&dir).is_empty(), "no seeds in {}", dir.display());
    }
}
