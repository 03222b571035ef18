//! `cargo xtask soak --minutes M`: the fault, hostile-peer and stress suites again and
//! again (the stress test's chaos runs longer each time) until `M` minutes are up,
//! printing every summary line they print and a total at the end. Not part of
//! `cargo xtask test`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{peers, util};

/// The suites: (package, test target). Missing targets are skipped.
const SUITES: &[(&str, &str)] = &[
    ("lb-core", "channel_stress"),
    ("lb-transport", "faults"),
    ("lb-transport", "hostile_server"),
    ("lb-transport", "hostile_client"),
    ("lb-rls", "faults"),
];

/// Lines the suites print that belong in the soak's log.
fn is_summary(line: &str) -> bool {
    ["fault ", "stress:", "hostile "]
        .iter()
        .any(|p| line.starts_with(p))
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let minutes: f64 = match args {
        [] => 10.0,
        [flag, m] if flag == "--minutes" => m.parse().map_err(|e| format!("--minutes {m}: {e}"))?,
        _ => return Err("usage: cargo xtask soak [--minutes M]".into()),
    };
    let root = util::project_root();
    peers::ensure(&root)?;
    let env = peers::test_env(&root);
    let until = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    let (mut rounds, mut failures, mut summaries) = (0u64, 0u64, 0u64);
    while Instant::now() < until {
        rounds += 1;
        let stress_secs = (10 * rounds).min(120).to_string();
        for (package, test) in SUITES {
            let path = root.join(package).join("tests").join(format!("{test}.rs"));
            if !path.exists() {
                continue;
            }
            let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cmd.current_dir(&root)
                .args([
                    "test",
                    "-q",
                    "--release",
                    "--all-features",
                    "-p",
                    package,
                    "--test",
                    test,
                ])
                .args(["--", "--nocapture", "--test-threads", "1"])
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .env("LB_STRESS_SECS", &stress_secs)
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            let mut child = cmd
                .spawn()
                .map_err(|e| format!("cannot run cargo test: {e}"))?;
            let out = child.stdout.take().expect("piped");
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if is_summary(&line) {
                    summaries += 1;
                    println!("[round {rounds}] {line}");
                }
            }
            let status = child.wait().map_err(|e| e.to_string())?;
            if !status.success() {
                failures += 1;
                println!("[round {rounds}] {package} {test}: FAILED ({status})");
            }
        }
    }
    println!(
        "soak: {rounds} rounds in {minutes} min, {summaries} summary lines, {failures} failed suite runs"
    );
    if failures == 0 {
        Ok(())
    } else {
        Err(format!("{failures} suite runs failed"))
    }
}

#[cfg(test)]
mod tests {
    use super::is_summary;

    #[test]
    fn summary_lines_are_recognised() {
        assert!(is_summary("fault kill: attempted=3 final=3 lost=0"));
        assert!(is_summary("stress: 10 chaos rounds"));
        assert!(!is_summary("test result: ok"));
    }
}
