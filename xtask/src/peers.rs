//! The real peers that interop tests run against, installed idempotently.
//!
//! - A Python virtual environment at `target/peers/venv` with the pinned packages
//!   of `xtask/peers/requirements.txt` (grpcio, gRPC C-core, and grpcio-tools,
//!   whose protoc the interop peers in `xtask/peers/interop/` and the examples'
//!   tests in `lb-transport/examples-stubs/` generate their stubs with), for the
//!   scripts in `xtask/peers/` and `lb-transport/examples-stubs/peers/`. A stamp
//!   file holding the requirements (and the base interpreter's version) makes a
//!   second run skip pip.
//! - nghttp2's `nghttpd`, `nghttp` and `h2load`, the `openssl` command line
//!   (test certificates) and `chromium` (the admin page's headless browser test,
//!   `lb-transport/tests/admin_browser.rs`), installed with apt-get when missing
//!   from `PATH`.
//!
//! [`ensure`] installs what is missing and prints what it found, with versions;
//! [`test_env`] is the environment that tells `lb-testkit`'s peer harness where
//! everything is and that the peers are required.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util;

/// The command line tools the tests use, with the Debian package providing each.
const TOOLS: &[(&str, &str)] = &[
    ("nghttpd", "nghttp2-server"),
    ("nghttp", "nghttp2-client"),
    ("h2load", "nghttp2-client"),
    ("openssl", "openssl"),
    ("chromium", "chromium"),
];

/// The limit for one package manager command (`apt-get update`, an install, pip).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// The limit for a quick query such as `--version`.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The file in the venv recording what it was built from.
const STAMP: &str = "lb-peers.stamp";

/// The directory holding the peer scripts and `requirements.txt`.
pub(crate) fn scripts_dir(root: &Path) -> PathBuf {
    root.join("xtask").join("peers")
}

/// The peers' virtual environment.
fn venv_dir(root: &Path) -> PathBuf {
    root.join("target").join("peers").join("venv")
}

/// The venv's interpreter, which the tests run the scripts with.
pub(crate) fn venv_python(root: &Path) -> PathBuf {
    venv_dir(root).join("bin").join("python")
}

/// The environment for the test step: where the peers are, and that they are
/// required (so the tests fail rather than skip when something is missing).
pub(crate) fn test_env(root: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("LB_PEERS_PYTHON", venv_python(root).display().to_string()),
        ("LB_PEERS_SCRIPTS", scripts_dir(root).display().to_string()),
        ("LB_REQUIRE_PEERS", "1".into()),
    ]
}

/// Installs whatever is missing (the venv, the nghttp2 tools) and prints what
/// is there, with versions. Quick when everything is already in place.
pub(crate) fn ensure(root: &Path) -> Result<(), String> {
    ensure_venv(root)?;
    ensure_tools()
}

/// Installs the Python peers if missing (not the nghttp2 tools).
pub(crate) fn ensure_python(root: &Path) -> Result<(), String> {
    ensure_venv(root)
}

/// Makes sure the venv exists and matches `requirements.txt`.
fn ensure_venv(root: &Path) -> Result<(), String> {
    let requirements = scripts_dir(root).join("requirements.txt");
    let wanted = fs::read_to_string(&requirements)
        .map_err(|e| format!("cannot read {}: {e}", requirements.display()))?;
    let base = base_python()?;
    let base_version = query(Command::new(&base).arg("--version"))?;
    let stamp = format!("{base_version}\n{wanted}");
    let venv = venv_dir(root);
    let python = venv_python(root);
    let stamp_path = venv.join(STAMP);

    if fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp) {
        if let Ok(version) = grpcio_version(&python) {
            println!("found grpcio {version} in {}", venv.display());
            return Ok(());
        }
    }

    // A fresh venv is the reliable way to drop packages no longer wanted.
    if venv.exists() {
        fs::remove_dir_all(&venv).map_err(|e| format!("cannot remove {}: {e}", venv.display()))?;
    }
    println!("creating {} with {}", venv.display(), base_version.trim());
    run(Command::new(&base).args(["-m", "venv"]).arg(&venv)).map_err(|e| {
        format!("{e} (on Debian, the venv module comes with the python3-venv package)")
    })?;
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "--only-binary=:all:",
            "-r",
        ])
        .arg(&requirements))?;
    let version = grpcio_version(&python)?;
    fs::write(&stamp_path, stamp)
        .map_err(|e| format!("cannot write {}: {e}", stamp_path.display()))?;
    println!("installed grpcio {version} in {}", venv.display());
    Ok(())
}

/// The interpreter the venv is made from.
fn base_python() -> Result<PathBuf, String> {
    which("python3").ok_or_else(|| "python3 is not on PATH".to_string())
}

/// The grpcio version importable by `python`; fails unless grpcio-tools'
/// protoc is importable too.
fn grpcio_version(python: &Path) -> Result<String, String> {
    query(Command::new(python).args([
        "-c",
        "import grpc, grpc_tools.protoc; print(grpc.__version__)",
    ]))
    .map(|v| v.trim().to_string())
}

/// Makes sure the command line tools are on `PATH`, installing their packages
/// with apt-get when some are missing.
fn ensure_tools() -> Result<(), String> {
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(tool, _)| which(tool).is_none())
        .map(|&(tool, _)| tool)
        .collect();
    let mut packages: Vec<&str> = TOOLS
        .iter()
        .filter(|(tool, _)| missing.contains(tool))
        .map(|&(_, package)| package)
        .collect();
    packages.dedup();
    if !packages.is_empty() {
        install_packages(&packages)?;
    }
    for (tool, _) in TOOLS {
        let path = which(tool).ok_or_else(|| format!("{tool} is still missing after install"))?;
        let version = tool_version(tool, &path)?;
        let how = if missing.contains(tool) {
            "installed"
        } else {
            "found"
        };
        println!("{how} {tool}: {version} at {}", path.display());
    }
    Ok(())
}

/// The one-line version of a tool (`nghttpd nghttp2/1.52.0`, `OpenSSL 3.0.x …`,
/// `Chromium 120.0…`).
fn tool_version(tool: &str, path: &Path) -> Result<String, String> {
    let flag = if tool == "openssl" {
        "version"
    } else {
        "--version"
    };
    let out = query(Command::new(path).arg(flag))?;
    Ok(out.lines().next().unwrap_or_default().trim().to_string())
}

/// Installs Debian packages (as root, non-interactively).
fn install_packages(packages: &[&str]) -> Result<(), String> {
    let names = packages.join(" ");
    if which("apt-get").is_none() {
        return Err(format!("missing packages {names} and there is no apt-get"));
    }
    let uid = query(Command::new("id").arg("-u"))?;
    if uid.trim() != "0" {
        return Err(format!(
            "missing packages {names}: run as root, or install them first \
             (apt-get install {names})"
        ));
    }
    println!("installing {names}");
    run(Command::new("apt-get")
        .args(["update", "-q"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// The first file called `name` on `PATH`, or else in the system `sbin`
/// directories (Debian puts `nghttpd` in `/usr/sbin`, which is not on every
/// user's `PATH`).
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Runs a command with its output shown, within [`INSTALL_TIMEOUT`].
fn run(cmd: &mut Command) -> Result<(), String> {
    util::bounded(cmd, INSTALL_TIMEOUT, false).map(drop)
}

/// Runs a command and returns its standard output, within [`QUERY_TIMEOUT`].
fn query(cmd: &mut Command) -> Result<String, String> {
    util::bounded(cmd.stderr(Stdio::null()), QUERY_TIMEOUT, true)
}
