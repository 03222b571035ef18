//! Running cargo and reporting steps.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The workspace root (the parent of this crate's directory).
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs one named step and prints how long it took.
pub(crate) fn step(name: &str, f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    println!("\n==> {name}");
    let t = Instant::now();
    let result = f().map_err(|e| format!("{name} failed: {e}"));
    println!(
        "<== {name}: {} in {:.1?}",
        if result.is_ok() { "ok" } else { "FAILED" },
        t.elapsed()
    );
    result
}

/// Runs `cargo args…` in `dir`.
pub(crate) fn cargo(dir: &Path, args: &[&str]) -> Result<(), String> {
    cargo_env(dir, args, &[])
}

/// Runs `cargo args…` in `dir` with extra environment variables.
pub(crate) fn cargo_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    let status = Command::new(cargo_bin())
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` exited with {status}", args.join(" ")))
    }
}

/// Runs a `cargo test` command with extra environment variables, streaming its
/// output, and prints the total of the runner's `test result:` lines as one
/// closing line.
pub(crate) fn cargo_test_env(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<(), String> {
    let mut child = Command::new(cargo_bin())
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    let stdout = child.stdout.take().expect("piped stdout");
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("reading test output: {e}"))?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            passed += count(rest, " passed");
            failed += count(rest, " failed");
            ignored += count(rest, " ignored");
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    println!("\ntests: {passed} passed, {failed} failed, {ignored} skipped");
    if status.success() && failed == 0 {
        Ok(())
    } else {
        Err(format!("`cargo {}` exited with {status}", args.join(" ")))
    }
}

/// The number before `label` in a `test result:` line (`ok. 5 passed; 0 failed; …`).
fn count(line: &str, label: &str) -> u64 {
    line.split(';')
        .find_map(|part| {
            let part = part
                .trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ");
            part.strip_suffix(label.trim_start())
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Runs `cmd`, killing it after `limit`; fails unless it exits successfully.
/// With `capture`, returns its standard output (its errors pass through).
pub(crate) fn bounded(cmd: &mut Command, limit: Duration, capture: bool) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    cmd.stdin(Stdio::null());
    if capture {
        cmd.stdout(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    // Reading on a thread keeps a full pipe from stalling the child.
    let reader = child.stdout.take().map(|mut out| {
        thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        })
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{shown} did not finish within {limit:?}"));
            }
            Err(e) => return Err(format!("waiting for {shown}: {e}")),
        }
    };
    let out = reader
        .map(|r| r.join().unwrap_or_default())
        .unwrap_or_default();
    if status.success() {
        Ok(out)
    } else {
        Err(format!("{shown} exited with {status}"))
    }
}

fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_are_read_from_test_result_lines() {
        let line =
            "ok. 24 passed; 1 failed; 3 ignored; 0 measured; 0 filtered out; finished in 0.00s";
        assert_eq!(count(line, " passed"), 24);
        assert_eq!(count(line, " failed"), 1);
        assert_eq!(count(line, " ignored"), 3);
        assert_eq!(count("FAILED. 2 passed; 7 failed;", " failed"), 7);
    }
}
