//! The dependency check: no async runtime or executor anywhere in the workspace's
//! dependency graph (peers under `xtask/peers/` are separate Cargo projects).

use std::path::Path;
use std::process::Command;

/// Crates that are, or bring, an async runtime or executor.
const BANNED: &[&str] = &[
    "tokio",
    "async-std",
    "smol",
    "async-executor",
    "futures-executor",
    "futures",
];

/// The crates whose graphs are checked, with every feature on: the libraries, the
/// code generator that build scripts run (`lb-transport/codegen`) and the
/// examples on its stubs (`lb-transport/examples-stubs`).
const LIBRARIES: &[&str] = &[
    "lb-core",
    "lb-group",
    "lb-rls",
    "lb-transport",
    "lb-codegen",
    "lb-examples",
    "lb-testkit",
];

pub(crate) fn check(root: &Path) -> Result<(), String> {
    let mut found = Vec::new();
    for lib in LIBRARIES {
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "tree",
                "-p",
                lib,
                "--all-features",
                "-e",
                "normal,build,dev",
                "--prefix",
                "none",
                "--format",
                "{p}",
            ])
            .current_dir(root)
            .output()
            .map_err(|e| format!("cannot run cargo tree: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cargo tree -p {lib} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        for name in banned_in(&String::from_utf8_lossy(&out.stdout)) {
            found.push(format!("{lib} depends on {name}"));
        }
    }
    if found.is_empty() {
        println!("no async runtime in {}", LIBRARIES.join(", "));
        Ok(())
    } else {
        Err(found.join("; "))
    }
}

/// The banned crate names in `cargo tree --format {p}` output (`name vX.Y.Z …`).
fn banned_in(tree: &str) -> Vec<&'static str> {
    let mut hits: Vec<&'static str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|name| BANNED.iter().copied().find(|b| *b == name))
        .collect();
    hits.sort_unstable();
    hits.dedup();
    hits
}

#[cfg(test)]
mod tests {
    use super::banned_in;

    #[test]
    fn finds_runtimes_by_exact_name_only() {
        let tree = "lb-core v0.1.0 (/x)\ntokio v1.40.0\nfutures-util v0.3.0\nsmol v2.0.0\ntokio v1.40.0 (*)\n";
        assert_eq!(banned_in(tree), ["smol", "tokio"]);
        assert!(banned_in("futures-core v0.3.31\nmio v1.0.0\n").is_empty());
    }
}
