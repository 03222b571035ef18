//! `cargo xtask bench`: runs the criterion benchmarks and prints each figure against
//! its target, with two-thread scaling ratios measured in the same run.
//!
//! Benchmarks are measurements, never pass/fail tests: a missed target is printed,
//! not turned into a failure.

use std::path::{Path, PathBuf};

use crate::util;

/// A pick benchmark: criterion group `<group>` with `1_thread` and `2_threads` arms.
struct PickBench {
    package: &'static str,
    bench: &'static str,
    group: &'static str,
    what: &'static str,
    /// Target single-thread cost, in nanoseconds.
    target_ns: f64,
    /// Target throughput ratio of two threads over one.
    target_scaling: f64,
}

const PICK_BENCHES: &[PickBench] = &[
    PickBench {
        package: "lb-core",
        bench: "pick",
        group: "round_robin_pick_10",
        what: "round_robin pick, 10 READY subchannels",
        target_ns: 25.0,
        target_scaling: 1.8,
    },
    PickBench {
        package: "lb-core",
        bench: "pick",
        group: "pick_first_pick",
        what: "pick_first pick",
        target_ns: 25.0,
        target_scaling: 1.8,
    },
    PickBench {
        package: "lb-group",
        bench: "weighted_target",
        group: "weighted_target_pick",
        what: "weighted_target pick, 10 READY children",
        target_ns: 50.0,
        target_scaling: 1.8,
    },
];

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let root = util::project_root();
    let quick = args.iter().any(|a| a == "--quick");
    let (warm, measure) = if quick { ("1", "2") } else { ("2", "5") };
    let mut ran: Vec<(&'static str, &'static str)> = Vec::new();
    for b in PICK_BENCHES {
        if ran.contains(&(b.package, b.bench)) {
            continue;
        }
        if !root
            .join(b.package)
            .join("benches")
            .join(format!("{}.rs", b.bench))
            .exists()
        {
            println!(
                "(skipping {}: {} has no bench {})",
                b.what, b.package, b.bench
            );
            continue;
        }
        util::step(&format!("bench {} {}", b.package, b.bench), || {
            util::cargo(
                &root,
                &[
                    "bench",
                    "-p",
                    b.package,
                    "--bench",
                    b.bench,
                    "--",
                    "--warm-up-time",
                    warm,
                    "--measurement-time",
                    measure,
                ],
            )
        })?;
        ran.push((b.package, b.bench));
    }
    println!(
        "\n{:<44} {:>10} {:>10} {:>8} {:>22}",
        "benchmark", "1 thread", "2 threads", "scaling", "target"
    );
    let dir = criterion_dir(&root);
    for b in PICK_BENCHES
        .iter()
        .filter(|b| ran.contains(&(b.package, b.bench)))
    {
        let one = estimate_ns(&dir, b.group, "1_thread")?;
        let two = estimate_ns(&dir, b.group, "2_threads")?;
        let scaling = one / two;
        let met = one < b.target_ns && scaling >= b.target_scaling;
        println!(
            "{:<44} {:>8.2}ns {:>8.2}ns {:>7.2}x   <{}ns, >={}x: {}",
            b.what,
            one,
            two,
            scaling,
            b.target_ns,
            b.target_scaling,
            if met { "met" } else { "MISSED" }
        );
    }
    println!("\n(2 threads = wall time / total picks; scaling = 1-thread time / 2-thread time)");
    Ok(())
}

fn criterion_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("criterion")
}

/// Criterion's mean estimate for `group/function`, in nanoseconds.
fn estimate_ns(dir: &Path, group: &str, function: &str) -> Result<f64, String> {
    let path = dir
        .join(group)
        .join(function)
        .join("new")
        .join("estimates.json");
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))?;
    v["mean"]["point_estimate"]
        .as_f64()
        .ok_or_else(|| format!("{} has no mean estimate", path.display()))
}
