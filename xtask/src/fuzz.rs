//! `cargo xtask fuzz [--secs N] [--target NAME] [--sanitizer NAME]`: the libFuzzer
//! targets of `xtask/fuzz/`, built with cargo-fuzz and run for a fixed time each.
//!
//! - cargo-fuzz is installed with `cargo install` when `cargo fuzz` is missing.
//! - The targets are the `[[bin]]`s of `xtask/fuzz/Cargo.toml`, each with the
//!   `-max_len` of its `[package.metadata.max_len]` entry.
//! - cargo-fuzz passes nightly-only flags (`-Zsanitizer`); with the one stable toolchain
//!   they are accepted because `RUSTC_BOOTSTRAP=1` is set for the cargo-fuzz process
//!   only. AddressSanitizer works that way on x86_64 Linux; `--sanitizer none` builds
//!   without it.
//! - Each target runs its binary directly, with a corpus under
//!   `target/fuzz-corpus/<target>/` (grown across runs, never committed) seeded
//!   read-only from `xtask/fuzz/seeds/<target>/` and `xtask/fuzz/regressions/<target>/`.
//!   Crash files go to `target/fuzz-artifacts/<target>/`, libFuzzer's output to
//!   `target/fuzz-logs/<target>.log`.
//! - One line per target: `fuzz <target>: <execs> execs in <secs> s, <findings>
//!   findings`. Findings are listed with their paths, hex bytes and panic message, and
//!   make the command fail.
//!
//! `cargo xtask test` runs [`short`]: every target for a few seconds.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// The cargo-fuzz installed when `cargo fuzz` is missing.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Seconds per target of `cargo xtask fuzz`.
const DEFAULT_SECS: u64 = 60;

/// Seconds per target in `cargo xtask test`.
const SHORT_SECS: u64 = 5;

/// `-max_len` for a target without a `[package.metadata.max_len]` entry.
const DEFAULT_MAX_LEN: u64 = 4096;

/// The limit for installing cargo-fuzz and for building the targets.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How long a run may overrun its `-max_total_time` (loading the corpus, a last slow
/// input, writing a crash) before it is killed.
const RUN_GRACE: Duration = Duration::from_secs(120);

const USAGE: &str = "usage: cargo xtask fuzz [--secs N] [--target NAME] [--sanitizer address|none]";

/// Options of one fuzzing session.
#[derive(Debug, PartialEq, Eq)]
struct Options {
    secs: u64,
    target: Option<String>,
    sanitizer: String,
}

/// `cargo xtask fuzz …`.
pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let options = parse_args(args)?;
    fuzz(&crate::util::project_root(), &options)
}

/// The step of `cargo xtask test`: every target for [`SHORT_SECS`] seconds.
pub(crate) fn short(root: &Path) -> Result<(), String> {
    let options = Options {
        secs: SHORT_SECS,
        target: None,
        sanitizer: "address".into(),
    };
    fuzz(root, &options)
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        secs: DEFAULT_SECS,
        target: None,
        sanitizer: "address".into(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--secs" => {
                let v = value("--secs")?;
                options.secs = v
                    .parse()
                    .ok()
                    .filter(|&s| s > 0)
                    .ok_or_else(|| format!("--secs {v}: expected a positive number"))?;
            }
            "--target" => options.target = Some(value("--target")?),
            "--sanitizer" => options.sanitizer = value("--sanitizer")?,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(options)
}

/// One fuzz target: its name and `-max_len`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    name: String,
    max_len: u64,
}

fn fuzz(root: &Path, options: &Options) -> Result<(), String> {
    let fuzz_dir = root.join("xtask").join("fuzz");
    ensure_cargo_fuzz()?;
    let all = targets(&fuzz_dir)?;
    let selected: Vec<&Target> = match &options.target {
        None => all.iter().collect(),
        Some(name) => {
            let target = all.iter().find(|t| &t.name == name).ok_or_else(|| {
                let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
                format!(
                    "no fuzz target {name:?}; the targets are {}",
                    names.join(", ")
                )
            })?;
            vec![target]
        }
    };
    let bin_dir = build(&fuzz_dir, options)?;

    let mut failed = Vec::new();
    for target in selected {
        let outcome = match run_target(root, &fuzz_dir, &bin_dir, target, options.secs) {
            Ok(outcome) => outcome,
            Err(e) => {
                println!("fuzz {}: FAILED: {e}", target.name);
                failed.push(target.name.as_str());
                continue;
            }
        };
        println!(
            "fuzz {}: {} execs in {} s, {} findings",
            target.name,
            outcome.execs,
            outcome.secs,
            outcome.findings.len()
        );
        if !outcome.findings.is_empty() {
            for finding in &outcome.findings {
                println!("{}", describe_finding(finding, &outcome.log));
                println!(
                    "  reproduce: {} {}",
                    bin_dir.join(&target.name).display(),
                    finding.display()
                );
            }
            println!("  libFuzzer output: {}", outcome.log_path.display());
            failed.push(target.name.as_str());
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "failures or findings in {}; fix them, then commit each finding's input \
             under xtask/fuzz/regressions/<target>/",
            failed.join(", ")
        ))
    }
}

/// Installs cargo-fuzz unless `cargo fuzz` already works.
fn ensure_cargo_fuzz() -> Result<(), String> {
    if let Ok(version) = cargo_fuzz_version() {
        println!("found {version}");
        return Ok(());
    }
    println!("installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    let started = Instant::now();
    bounded(
        Command::new(cargo_bin()).args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ]),
        BUILD_TIMEOUT,
        None,
    )?;
    let version = cargo_fuzz_version()?;
    println!("installed {version} in {:.0?}", started.elapsed());
    Ok(())
}

fn cargo_fuzz_version() -> Result<String, String> {
    let out = Command::new(cargo_bin())
        .args(["fuzz", "--version"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
    if !out.status.success() {
        return Err("cargo fuzz is not installed".into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The targets, from `cargo metadata` of the fuzz project: its `[[bin]]`s, with
/// `[package.metadata.max_len]`. A file in `fuzz_targets/` without a `[[bin]]` is an
/// error, so a target cannot be silently left out.
fn targets(fuzz_dir: &Path) -> Result<Vec<Target>, String> {
    let out = Command::new(cargo_bin())
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .arg("--manifest-path")
        .arg(fuzz_dir.join("Cargo.toml"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata of the fuzz project failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("cargo metadata printed invalid JSON: {e}"))?;
    let targets = targets_from_metadata(&metadata)?;

    let listed: BTreeSet<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    let dir = fuzz_dir.join("fuzz_targets");
    let entries = fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".rs") {
            if !listed.contains(stem) {
                return Err(format!(
                    "fuzz_targets/{name} has no [[bin]] entry in xtask/fuzz/Cargo.toml"
                ));
            }
        }
    }
    Ok(targets)
}

fn targets_from_metadata(metadata: &serde_json::Value) -> Result<Vec<Target>, String> {
    let package = metadata["packages"]
        .as_array()
        .and_then(|p| p.first())
        .ok_or("cargo metadata lists no package")?;
    let max_len = &package["metadata"]["max_len"];
    let targets: Vec<Target> = package["targets"]
        .as_array()
        .ok_or("cargo metadata lists no targets")?
        .iter()
        .filter(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .filter_map(|t| t["name"].as_str())
        .map(|name| Target {
            name: name.to_string(),
            max_len: max_len[name].as_u64().unwrap_or(DEFAULT_MAX_LEN),
        })
        .collect();
    if targets.is_empty() {
        return Err("the fuzz project has no [[bin]] targets".into());
    }
    Ok(targets)
}

/// Builds every target (or the one asked for); returns the directory of the binaries.
fn build(fuzz_dir: &Path, options: &Options) -> Result<PathBuf, String> {
    let triple = host_triple()?;
    // The fuzz project's own target directory, whatever CARGO_TARGET_DIR says: the
    // binaries are run from there, and its RUSTFLAGS differ from the workspace's.
    let target_dir = fuzz_dir.join("target");
    let mut cmd = Command::new(cargo_bin());
    cmd.args(["fuzz", "build", "--sanitizer", &options.sanitizer])
        .args(["--target", &triple])
        .arg("--fuzz-dir")
        .arg(fuzz_dir)
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(fuzz_dir)
        // cargo-fuzz passes -Zsanitizer and friends; stable rustc takes them only with
        // this, which is set for this process (and the cargo and rustc it runs) only.
        .env("RUSTC_BOOTSTRAP", "1");
    if let Some(target) = &options.target {
        cmd.arg(target);
    }
    let started = Instant::now();
    bounded(&mut cmd, BUILD_TIMEOUT, None)?;
    println!(
        "built the fuzz targets (sanitizer {}) in {:.0?}",
        options.sanitizer,
        started.elapsed()
    );
    Ok(target_dir.join(triple).join("release"))
}

/// The host triple, which cargo-fuzz builds for by default.
fn host_triple() -> Result<String, String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .arg("-vV")
        .output()
        .map_err(|e| format!("cannot run rustc: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|h| h.trim().to_string())
        .ok_or_else(|| "rustc -vV printed no host".into())
}

/// What one run of a target found.
#[derive(Debug)]
struct Outcome {
    execs: u64,
    secs: u64,
    findings: Vec<PathBuf>,
    log: String,
    log_path: PathBuf,
}

fn run_target(
    root: &Path,
    fuzz_dir: &Path,
    bin_dir: &Path,
    target: &Target,
    secs: u64,
) -> Result<Outcome, String> {
    let name = &target.name;
    let out_dir = root.join("target");
    let corpus = out_dir.join("fuzz-corpus").join(name);
    let artifacts = out_dir.join("fuzz-artifacts").join(name);
    let logs = out_dir.join("fuzz-logs");
    for dir in [&corpus, &artifacts, &logs] {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let log_path = logs.join(format!("{name}.log"));
    let log_file = fs::File::create(&log_path)
        .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    // libFuzzer names a crash file after the input's hash, so a crash found again
    // rewrites an existing file: what counts is the modification time.
    let since = SystemTime::now() - Duration::from_secs(1);

    let mut cmd = Command::new(bin_dir.join(name));
    cmd.arg(format!("-max_total_time={secs}"))
        .arg(format!("-max_len={}", target.max_len))
        .args(["-rss_limit_mb=2048", "-timeout=10", "-print_final_stats=1"])
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(&corpus);
    // Read-only inputs: libFuzzer writes new units to the first directory only.
    for kind in ["seeds", "regressions"] {
        let dir = fuzz_dir.join(kind).join(name);
        if dir.is_dir() {
            cmd.arg(dir);
        }
    }
    // cargo-fuzz sets this for its runs too: Rust's statics trip ODR checks.
    let mut asan = std::env::var("ASAN_OPTIONS").unwrap_or_default();
    if !asan.is_empty() {
        asan.push(':');
    }
    asan.push_str("detect_odr_violation=0");
    cmd.env("ASAN_OPTIONS", asan)
        .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
        .stderr(log_file);

    let started = Instant::now();
    let limit = Duration::from_secs(secs) + RUN_GRACE;
    let status = bounded(&mut cmd, limit, Some(&log_path));
    let elapsed = started.elapsed();
    let log = fs::read_to_string(&log_path).unwrap_or_default();
    let findings: Vec<PathBuf> = files_in(&artifacts)
        .into_iter()
        .filter(|f| is_finding(f) && modified(f).is_some_and(|t| t >= since))
        .collect();
    if let Err(e) = status {
        if findings.is_empty() {
            return Err(format!("fuzz {name}: {e}\n{}", tail(&log, 30)));
        }
    }
    let stats = parse_stats(&log);
    // A crash while loading the corpus comes before any count.
    let execs = match stats.execs {
        Some(n) => n,
        None if !findings.is_empty() => 0,
        None => {
            return Err(format!(
                "fuzz {name}: no execution count in the libFuzzer output\n{}",
                tail(&log, 30)
            ));
        }
    };
    Ok(Outcome {
        execs,
        secs: stats.secs.unwrap_or(elapsed.as_secs()),
        findings,
        log,
        log_path,
    })
}

/// The files directly in `dir`, sorted.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn modified(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Whether libFuzzer wrote this file for a failure (crash, leak, timeout, out of memory).
fn is_finding(path: &Path) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    ["crash-", "leak-", "timeout-", "oom-"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// libFuzzer's closing figures.
#[derive(Debug, Default, PartialEq, Eq)]
struct Stats {
    execs: Option<u64>,
    secs: Option<u64>,
}

/// Reads `stat::number_of_executed_units: N` (`-print_final_stats=1`) and `Done N runs
/// in S second(s)`, falling back to the last `#N` status line when the run crashed
/// before its final stats.
fn parse_stats(log: &str) -> Stats {
    let mut stats = Stats::default();
    let mut last_status = None;
    for line in log.lines() {
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            stats.execs = n.trim().parse().ok();
        } else if let Some(rest) = line.strip_prefix("Done ") {
            // "Done 149335 runs in 6 second(s)"
            let mut words = rest.split_whitespace();
            let runs = words.next().and_then(|n| n.parse().ok());
            let secs = words.nth(2).and_then(|n| n.parse().ok());
            stats.execs = stats.execs.or(runs);
            stats.secs = secs;
        } else if let Some(rest) = line.strip_prefix('#') {
            // "#4096\tpulse  cov: 1234 ft: …"
            if let Some(n) = rest.split_whitespace().next().and_then(|n| n.parse().ok()) {
                last_status = Some(n);
            }
        }
    }
    stats.execs = stats.execs.or(last_status);
    stats
}

/// A finding for the report: path, size, hex bytes (when short) and the panic message
/// or sanitizer error from the log.
fn describe_finding(path: &Path, log: &str) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    let mut text = format!("  finding: {} ({} bytes)", path.display(), bytes.len());
    if bytes.len() <= 1024 {
        let hex: String = bytes.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
        let _ = write!(text, "\n  input (hex): {hex}");
    }
    let cause: Vec<&str> = log
        .lines()
        .skip_while(|l| !(l.contains("panicked at") || l.contains("ERROR: AddressSanitizer")))
        .take(2)
        .collect();
    if cause.is_empty() {
        let _ = write!(text, "\n  cause: see the log");
    } else {
        let _ = write!(text, "\n  cause: {}", cause.join("\n         "));
    }
    text
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `cmd`, killing it after `limit`; fails unless it exits successfully. Output goes
/// wherever `cmd` sends it; `log` only names it in errors.
fn bounded(cmd: &mut Command, limit: Duration, log: Option<&Path>) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{shown} did not finish within {limit:?}"));
            }
            Err(e) => return Err(format!("waiting for {shown}: {e}")),
        }
    };
    if status.success() {
        Ok(())
    } else {
        let log = log.map(|l| format!(" (output in {})", l.display()));
        Err(format!(
            "{shown} exited with {status}{}",
            log.unwrap_or_default()
        ))
    }
}

fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments_are_parsed() {
        assert_eq!(
            parse_args(&[]),
            Ok(Options {
                secs: 60,
                target: None,
                sanitizer: "address".into()
            })
        );
        let parsed = parse_args(&args(&["--target", "hpack_decode", "--secs", "5"])).unwrap();
        assert_eq!(parsed.secs, 5);
        assert_eq!(parsed.target.as_deref(), Some("hpack_decode"));
        assert!(parse_args(&args(&["--secs", "0"])).is_err());
        assert!(parse_args(&args(&["--secs"])).is_err());
        assert!(parse_args(&args(&["--frobnicate"])).is_err());
    }

    #[test]
    fn final_stats_are_read() {
        let log = "#2\tINITED cov: 10 ft: 10 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                   #131072\tpulse  cov: 812 ft: 3301 corp: 412/20Kb\n\
                   Done 149335 runs in 6 second(s)\n\
                   stat::number_of_executed_units: 149335\n\
                   stat::average_exec_per_sec:     24889\n";
        assert_eq!(
            parse_stats(log),
            Stats {
                execs: Some(149_335),
                secs: Some(6)
            }
        );
    }

    #[test]
    fn a_crash_before_the_final_stats_counts_the_last_status_line() {
        let log = "#1024\tNEW    cov: 5 ft: 5\n\
                   #1180\tREDUCE cov: 5 ft: 6\n\
                   thread '<unnamed>' panicked at src/x.rs:1:1:\nboom\n\
                   ==1== ERROR: libFuzzer: deadly signal\n";
        assert_eq!(
            parse_stats(log),
            Stats {
                execs: Some(1180),
                secs: None
            }
        );
    }

    #[test]
    fn targets_come_from_bins_with_their_max_len() {
        let metadata = serde_json::json!({"packages": [{
            "metadata": {"cargo-fuzz": true, "max_len": {"a": 100}},
            "targets": [
                {"name": "lb_fuzz", "kind": ["lib"]},
                {"name": "a", "kind": ["bin"]},
                {"name": "b", "kind": ["bin"]},
                {"name": "write_seeds", "kind": ["example"]}
            ]
        }]});
        assert_eq!(
            targets_from_metadata(&metadata).unwrap(),
            [
                Target {
                    name: "a".into(),
                    max_len: 100
                },
                Target {
                    name: "b".into(),
                    max_len: DEFAULT_MAX_LEN
                }
            ]
        );
    }

    #[test]
    fn findings_are_libfuzzer_failure_files() {
        assert!(is_finding(Path::new("/t/crash-0a1b")));
        assert!(is_finding(Path::new("/t/oom-0a1b")));
        assert!(!is_finding(Path::new("/t/slow-unit-0a1b")));
        assert!(!is_finding(Path::new("/t/0a1b")));
    }
}
