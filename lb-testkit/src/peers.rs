//! Real peers that we did not write, for interop tests: grpcio (gRPC C-core) as
//! server and client, and nghttp2's `nghttpd`, `nghttp` and `h2load`.
//!
//! `cargo xtask test` (or `cargo xtask peers`) installs them: a Python venv at
//! `target/peers/venv` with pinned grpcio, and the nghttp2 Debian packages. It
//! then runs the tests with `LB_PEERS_PYTHON`, `LB_PEERS_SCRIPTS` and
//! `LB_REQUIRE_PEERS=1` set.
//!
//! Every test starts with [`require_peers`]: without the peers, it panics when
//! `LB_REQUIRE_PEERS=1` (as in CI) and otherwise prints a "skipped" line and
//! returns `None`.
//!
//! - [`GrpcServer`]: `xtask/peers/grpc_server.py` on 127.0.0.1, with the methods
//!   listed there (`/bench.Echo/Unary`, `/test.Echo/{Echo,Status,Sleep,Who}`,
//!   and the streaming `/test.Stream/{Server,Client,Bidi}`).
//! - [`run_grpc_client`], [`spawn_grpc_client`]: one named case of
//!   `xtask/peers/grpc_client.py` (`unary_4mib`, `metadata`, `status`, …).
//! - [`run_grpc_stream_client`]: one streaming call (server, client or
//!   bidirectional) of `xtask/peers/grpc_stream_client.py`, with its report.
//! - [`Nghttpd`], [`run_nghttp`], [`run_h2load`]: nghttp2 over plaintext HTTP/2
//!   with prior knowledge.
//! - [`self_signed_cert`], [`PeerEnv::temp_dir`]: test certificates.
//! - [`ScriptServer`], [`run_script`]: any other peer script, such as
//!   `rls_server.py` (a server that prints `LISTENING <port>`) and `rls_client.py`;
//!   a script given by an absolute path may live anywhere.
//! - [`run_python`]: the venv's Python with any arguments, such as
//!   `-m grpc_tools.protoc` (grpcio-tools) to make Python stubs.
//!
//! Every wait is bounded, and every process started here is killed when its
//! handle is dropped, also when a test panics.
//!
//! # Examples
//!
//! ```no_run
//! use lb_testkit::peers::{self, GrpcServer, GrpcServerOptions};
//!
//! let Some(env) = peers::require_peers() else { return };
//! let server = GrpcServer::start(&env, GrpcServerOptions::default()).unwrap();
//! let outcome = peers::run_grpc_client(&env, &server.target(), "unary_4mib", None).unwrap();
//! assert!(outcome.passed, "{outcome:?}");
//! ```

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a graceful stop may take (the server's grace is 2 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one client case may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long restarting on the same port keeps retrying while it is still taken.
const REBIND_TIMEOUT: Duration = Duration::from_secs(5);

/// How much of a peer's standard error is kept for error messages.
const STDERR_KEEP: usize = 64 * 1024;

/// The interval of every polling loop here.
const POLL: Duration = Duration::from_millis(10);

/// Where the peers are: the venv's Python, the scripts, and the tools.
#[derive(Clone, Debug)]
pub struct PeerEnv {
    python: PathBuf,
    scripts: PathBuf,
    work_dir: PathBuf,
    nghttpd: PathBuf,
    nghttp: PathBuf,
    h2load: PathBuf,
}

impl PeerEnv {
    /// The venv's Python interpreter (with grpcio).
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// The directory with `grpc_server.py` and `grpc_client.py`.
    pub fn scripts(&self) -> &Path {
        &self.scripts
    }

    /// The `nghttpd` binary.
    pub fn nghttpd(&self) -> &Path {
        &self.nghttpd
    }

    /// The `nghttp` binary.
    pub fn nghttp(&self) -> &Path {
        &self.nghttp
    }

    /// The `h2load` binary.
    pub fn h2load(&self) -> &Path {
        &self.h2load
    }

    /// A fresh, empty directory under `target/peers/<kind>/`, removed when the
    /// returned handle is dropped.
    pub fn temp_dir(&self, kind: &str) -> Result<TempDir, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = self
            .work_dir
            .join(kind)
            .join(format!("{}-{n}", std::process::id()));
        // A directory left by an earlier process with the same id goes first.
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(TempDir { path })
    }
}

/// A directory removed, with its contents, on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// The workspace root, found from this crate's manifest directory.
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Finds the peers: `LB_PEERS_PYTHON` and `LB_PEERS_SCRIPTS` (defaulting to
/// `target/peers/venv/bin/python` and `xtask/peers` in the workspace), and
/// `nghttpd`, `nghttp`, `h2load` and `openssl` on `PATH`. Fails with what is
/// missing.
pub fn peers_available() -> Result<PeerEnv, String> {
    let root = workspace_root();
    let work_dir = root.join("target").join("peers");
    let python = std::env::var_os("LB_PEERS_PYTHON").map_or_else(
        || work_dir.join("venv").join("bin").join("python"),
        PathBuf::from,
    );
    let scripts = std::env::var_os("LB_PEERS_SCRIPTS")
        .map_or_else(|| root.join("xtask").join("peers"), PathBuf::from);
    let mut missing = Vec::new();
    if !python.is_file() {
        missing.push(format!("no Python venv at {}", python.display()));
    }
    for script in ["grpc_server.py", "grpc_client.py", "grpc_stream_client.py"] {
        if !scripts.join(script).is_file() {
            missing.push(format!("no {script} in {}", scripts.display()));
        }
    }
    let mut tool = |name: &str| {
        which(name).unwrap_or_else(|| {
            missing.push(format!("no {name} on PATH"));
            PathBuf::new()
        })
    };
    let (nghttpd, nghttp, h2load) = (tool("nghttpd"), tool("nghttp"), tool("h2load"));
    // The certificates of [`self_signed_cert`] come from the openssl command line.
    tool("openssl");
    if missing.is_empty() {
        Ok(PeerEnv {
            python,
            scripts,
            work_dir,
            nghttpd,
            nghttp,
            h2load,
        })
    } else {
        Err(missing.join(", "))
    }
}

/// The check every peer test starts with:
/// `let Some(env) = lb_testkit::peers::require_peers() else { return };`.
///
/// Returns the peers when they are installed. When they are not, panics if
/// `LB_REQUIRE_PEERS=1` (CI sets it, so these tests cannot silently skip
/// there), and otherwise prints a "skipped" line to standard error (past the
/// test runner's capture) and returns `None`.
pub fn require_peers() -> Option<PeerEnv> {
    match peers_available() {
        Ok(env) => Some(env),
        Err(why) if std::env::var("LB_REQUIRE_PEERS").is_ok_and(|v| v == "1") => panic!(
            "the real peers are required (LB_REQUIRE_PEERS=1) but missing: {why}; \
             run `cargo xtask test` (or `cargo xtask peers`), which installs them"
        ),
        Err(why) => {
            let current = thread::current();
            let test = current.name().unwrap_or("a peer test");
            let _ = writeln!(
                std::io::stderr(),
                "skipped {test}: the real peers are missing ({why}); \
                 run `cargo xtask test` (or `cargo xtask peers`) to install them"
            );
            None
        }
    }
}

/// The first file called `name` on `PATH`, or else in the system `sbin`
/// directories (Debian puts `nghttpd` in `/usr/sbin`).
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Settings for [`GrpcServer::start`].
#[derive(Clone, Debug)]
pub struct GrpcServerOptions {
    /// The server's id: returned by `/test.Echo/Who` and sent as `x-server-id`.
    pub id: String,
    /// Serve TLS with this certificate and key (PEM files), e.g. from
    /// [`self_signed_cert`].
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The port to bind on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Print `CALL <method>` for each call, for [`GrpcServer::wait_for_line`].
    pub log_calls: bool,
    /// Also serve grpc's own health service (`grpc_health.v1`), whose statuses
    /// [`GrpcServer::set_health`] sets.
    pub health: bool,
}

impl Default for GrpcServerOptions {
    fn default() -> Self {
        Self {
            id: "grpcio".into(),
            tls: None,
            port: 0,
            log_calls: false,
            health: false,
        }
    }
}

/// A running grpcio server (`xtask/peers/grpc_server.py`), killed on drop.
#[derive(Debug)]
pub struct GrpcServer {
    env: PeerEnv,
    options: GrpcServerOptions,
    addr: SocketAddr,
    process: Option<ServerProcess>,
}

/// One run of the server script.
#[derive(Debug)]
struct ServerProcess {
    child: Child,
    /// Held open: the script stops when it reaches end of file, so it never
    /// outlives this process. Commands (`HEALTH …`) go through it too.
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl GrpcServer {
    /// Starts the server and waits (bounded) until it is listening.
    pub fn start(env: &PeerEnv, options: GrpcServerOptions) -> Result<Self, String> {
        let (process, port) = spawn_server(env, &options)?;
        Ok(Self {
            env: env.clone(),
            addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)),
            options,
            process: Some(process),
        })
    }

    /// The address it listens on (127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address as a gRPC target, `127.0.0.1:<port>`.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.child.id())
    }

    /// Waits (bounded) for a line of the server's output starting with
    /// `prefix`, such as `CALL /test.Echo/Sleep` (with `log_calls`); lines
    /// before it are consumed.
    pub fn wait_for_line(&self, prefix: &str, timeout: Duration) -> Result<String, String> {
        let process = self.process.as_ref().ok_or("the server is not running")?;
        process.wait_for_line("the server", prefix, timeout)
    }

    /// Sets `service`'s status in grpc's health service (the server was started
    /// with [`GrpcServerOptions::health`]) and waits (bounded) until the server
    /// says it is set: its watchers are being told. `status` is the enum's name,
    /// such as `NOT_SERVING`; `service` "" is the server as a whole. Lines the
    /// server printed before the answer are consumed.
    pub fn set_health(&self, status: &str, service: &str) -> Result<(), String> {
        let process = self.process.as_ref().ok_or("the server is not running")?;
        process.send_line("the server", &format!("HEALTH {status} {service}"))?;
        let want = format!("HEALTH {status} {service}");
        let line = self.wait_for_line("HEALTH ", START_TIMEOUT)?;
        if line.trim_end() == want.trim_end() {
            Ok(())
        } else {
            Err(format!("the server answered {line:?} to {want:?}"))
        }
    }

    /// What the server wrote to standard error so far (the last 64 KiB).
    pub fn stderr(&self) -> String {
        self.process
            .as_ref()
            .map(ServerProcess::stderr)
            .unwrap_or_default()
    }

    /// Sends SIGTERM, so the server drains in-flight calls (2 s grace, clients
    /// see GOAWAY), and waits (bounded) for it to exit. Returns its exit
    /// status; a server that does not exit in time is killed and this fails.
    pub fn stop_graceful(&mut self) -> Result<ExitStatus, String> {
        let mut process = self.process.take().ok_or("the server is not running")?;
        if let Some(status) = process.child.try_wait().map_err(|e| e.to_string())? {
            return Ok(status);
        }
        let pid = process.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run kill: {e}"))?;
        if !sent.success() {
            return Err(format!("kill -TERM {pid} exited with {sent}"));
        }
        match wait_bounded(&mut process.child, STOP_TIMEOUT)? {
            Some(status) => Ok(status),
            None => Err(format!(
                "the server did not stop within {STOP_TIMEOUT:?} of SIGTERM (killed); stderr: {}",
                process.stderr()
            )),
        }
    }

    /// Kills the server (SIGKILL): connections drop without GOAWAY.
    pub fn kill(&mut self) {
        self.process = None;
    }

    /// Stops the server (gracefully, if running) and starts it again on the same
    /// port, retrying (bounded) while the port is still taken.
    pub fn restart(&mut self) -> Result<(), String> {
        if self.process.is_some() {
            self.stop_graceful()?;
        }
        let options = GrpcServerOptions {
            port: self.addr.port(),
            ..self.options.clone()
        };
        let deadline = Instant::now() + REBIND_TIMEOUT;
        loop {
            match spawn_server(&self.env, &options) {
                Ok((process, _)) => {
                    self.process = Some(process);
                    return Ok(());
                }
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Runs `cmd` with piped stdin, stdout and stderr; stdout's lines go to
    /// `lines` from a thread.
    fn spawn(mut cmd: Command, name: &str) -> Result<Self, String> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {name}: {e}"))?;
        let stdin = child.stdin.take();
        let stderr = collect_stderr(&mut child);
        let (tx, lines) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Self {
            child,
            stdin,
            lines,
            stderr,
        })
    }

    /// Waits (bounded by [`START_TIMEOUT`]) for the first line, which must
    /// start with `ready` (`LISTENING `, `READY`); returns the rest of it.
    fn wait_ready(&self, name: &str, ready: &str) -> Result<String, String> {
        let failed = |what: String| format!("{name} {what}; stderr: {}", self.stderr().trim());
        match self.lines.recv_timeout(START_TIMEOUT) {
            Ok(line) => match line.strip_prefix(ready) {
                Some(rest) => Ok(rest.to_owned()),
                None => Err(failed(format!("printed {line:?}, not {ready:?}"))),
            },
            Err(RecvTimeoutError::Timeout) => Err(failed(format!(
                "did not print {ready:?} within {START_TIMEOUT:?}"
            ))),
            Err(RecvTimeoutError::Disconnected) => {
                // Give the stderr reader a moment to take the script's last words.
                thread::sleep(Duration::from_millis(50));
                Err(failed(format!("exited before printing {ready:?}")))
            }
        }
    }

    /// Waits (bounded) for the next line starting with `prefix`; lines before
    /// it are consumed.
    fn wait_for_line(&self, name: &str, prefix: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return Ok(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("no `{prefix}` line from {name} in {timeout:?}"));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!(
                        "{name} exited before printing `{prefix}`; stderr: {}",
                        self.stderr()
                    ));
                }
            }
        }
    }

    /// Writes `line` and a newline to the process's standard input.
    fn send_line(&self, name: &str, line: &str) -> Result<(), String> {
        let stdin = self.stdin.as_ref().ok_or("no stdin")?;
        let mut writer: &ChildStdin = stdin;
        writer
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| writer.flush())
            .map_err(|e| format!("cannot write to {name}: {e}"))
    }
}

/// Runs the server script and waits for its `LISTENING <port>` line.
fn spawn_server(
    env: &PeerEnv,
    options: &GrpcServerOptions,
) -> Result<(ServerProcess, u16), String> {
    let mut cmd = python(env, "grpc_server.py");
    cmd.arg("--port")
        .arg(options.port.to_string())
        .args(["--id", &options.id, "--watch-stdin"]);
    if let Some((cert, key)) = &options.tls {
        cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
    }
    if options.log_calls {
        cmd.arg("--log-calls");
    }
    if options.health {
        cmd.arg("--health");
    }
    let process = ServerProcess::spawn(cmd, "grpc_server.py")?;
    let port = listening_port(&process, "grpc_server.py")?;
    Ok((process, port))
}

/// Waits for a server script's `LISTENING <port>` line.
fn listening_port(process: &ServerProcess, name: &str) -> Result<u16, String> {
    let rest = process.wait_ready(name, "LISTENING ")?;
    rest.parse()
        .map_err(|_| format!("{name} printed LISTENING {rest:?}, not a port"))
}

/// A command running one of the peer scripts with the venv's Python.
fn python(env: &PeerEnv, script: &str) -> Command {
    let mut cmd = Command::new(&env.python);
    cmd.arg(env.scripts.join(script))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1");
    cmd
}

/// Reads the child's standard error on a thread, keeping the last
/// [`STDERR_KEEP`] bytes.
fn collect_stderr(child: &mut Child) -> Arc<Mutex<String>> {
    let kept = Arc::new(Mutex::new(String::new()));
    if let Some(mut err) = child.stderr.take() {
        let kept = Arc::clone(&kept);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = match err.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let Ok(mut s) = kept.lock() else { break };
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
                if s.len() > STDERR_KEEP {
                    let mut cut = s.len() - STDERR_KEEP;
                    while !s.is_char_boundary(cut) {
                        cut += 1;
                    }
                    s.drain(..cut);
                }
            }
        });
    }
    kept
}

/// Waits up to `limit` for the child to exit; kills it and returns `None` if it
/// does not.
fn wait_bounded(child: &mut Child, limit: Duration) -> Result<Option<ExitStatus>, String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("waiting: {e}"))? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        thread::sleep(POLL);
    }
}

/// A running peer script that prints `LISTENING <port>` once it serves (such as
/// `xtask/peers/rls_server.py`), killed on drop.
///
/// Its standard input is a pipe held open for its lifetime: a script started
/// with a flag like `--watch-stdin` stops when it closes, so it never outlives
/// the test process.
#[derive(Debug)]
pub struct ScriptServer {
    script: String,
    addr: SocketAddr,
    process: ServerProcess,
}

impl ScriptServer {
    /// Runs `script` (a file in the scripts directory, with the venv's Python)
    /// with `args` and waits (bounded) for its `LISTENING <port>` line.
    pub fn start<I, S>(env: &PeerEnv, script: &str, args: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = python(env, script);
        cmd.args(args);
        let process = ServerProcess::spawn(cmd, script)?;
        let port = listening_port(&process, script)?;
        Ok(Self {
            script: script.to_string(),
            addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)),
            process,
        })
    }

    /// The address it listens on (127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address as a gRPC target, `127.0.0.1:<port>`.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// Waits (bounded) for the next line of the script's output starting with
    /// `prefix`; lines before it are consumed.
    pub fn wait_for_line(&self, prefix: &str, timeout: Duration) -> Result<String, String> {
        self.process.wait_for_line(&self.script, prefix, timeout)
    }

    /// Writes `line` (and a newline) to the script's standard input, for a
    /// script that takes commands there (`xds_control.py`'s `SCENARIO`).
    pub fn send_line(&self, line: &str) -> Result<(), String> {
        self.process.send_line(&self.script, line)
    }

    /// The lines the script printed that have not been consumed yet, without
    /// waiting.
    pub fn lines_now(&self) -> Vec<String> {
        self.process.lines.try_iter().collect()
    }

    /// What the script wrote to standard error so far (the last 64 KiB).
    pub fn stderr(&self) -> String {
        self.process.stderr()
    }
}

/// A running peer client script that prints `READY` once it can take
/// commands on its standard input (such as `xtask/peers/xds_client.py`), killed
/// on drop; the pipe to its standard input stays open for its lifetime.
#[derive(Debug)]
pub struct ScriptClient {
    script: String,
    process: ServerProcess,
    ready: String,
}

impl ScriptClient {
    /// Runs `script` with `args` and waits (bounded) for its `READY` line.
    pub fn start<I, S>(env: &PeerEnv, script: &str, args: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = python(env, script);
        cmd.args(args);
        let process = ServerProcess::spawn(cmd, script)?;
        let ready = process.wait_ready(script, "READY")?.trim().to_owned();
        Ok(Self {
            script: script.to_owned(),
            process,
            ready,
        })
    }

    /// What the script printed after `READY` on that line (a port, say).
    pub fn ready_line(&self) -> &str {
        &self.ready
    }

    /// Sends one command line and waits (bounded) for the next output line
    /// starting with `answer`, which it returns.
    pub fn command(&self, line: &str, answer: &str, timeout: Duration) -> Result<String, String> {
        self.process.send_line(&self.script, line)?;
        self.process.wait_for_line(&self.script, answer, timeout)
    }

    /// Sends one command line without waiting.
    pub fn send_line(&self, line: &str) -> Result<(), String> {
        self.process.send_line(&self.script, line)
    }

    /// Waits (bounded) for the next output line starting with `prefix`.
    pub fn wait_for_line(&self, prefix: &str, timeout: Duration) -> Result<String, String> {
        self.process.wait_for_line(&self.script, prefix, timeout)
    }

    /// What the script wrote to standard error so far (the last 64 KiB).
    pub fn stderr(&self) -> String {
        self.process.stderr()
    }
}

/// Runs the peer script `script` with `args` to completion, killing it after
/// `timeout` (which is an error), and returns its exit status and output.
pub fn run_script<I, S>(
    env: &PeerEnv,
    script: &str,
    args: I,
    timeout: Duration,
) -> Result<ToolOutput, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = python(env, script);
    cmd.args(args);
    run_bounded(cmd, timeout)
}

/// Runs the venv's Python with `args` (say `-m grpc_tools.protoc …`) to
/// completion, killing it after `timeout` (which is an error), and returns its exit
/// status and output.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use lb_testkit::peers;
///
/// let Some(env) = peers::require_peers() else { return };
/// let out = peers::run_python(&env, ["-c", "import grpc; print(grpc.__version__)"],
///     Duration::from_secs(30)).unwrap();
/// assert!(out.status.success(), "{}", out.stderr);
/// ```
pub fn run_python<I, S>(env: &PeerEnv, args: I, timeout: Duration) -> Result<ToolOutput, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(&env.python);
    cmd.args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1");
    run_bounded(cmd, timeout)
}

/// TLS settings for the Python client.
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// The PEM file of the certificate to trust (for a self-signed server
    /// certificate, the certificate itself).
    pub ca: PathBuf,
    /// The name to verify the certificate against and to send as `:authority`,
    /// when it differs from the target's host.
    pub authority: Option<String>,
}

/// What one client case reported.
#[derive(Clone, Debug)]
pub struct ClientOutcome {
    /// The case passed (exit status 0 and `"ok": true`).
    pub passed: bool,
    /// The JSON line the client printed (`case`, `ok`, and what it saw, such as
    /// `code`, `details`, `id`).
    pub report: serde_json::Value,
    /// What the client wrote to standard error.
    pub stderr: String,
}

/// Runs one case of `grpc_client.py` (`unary_16b`, `unary_1mib`, `unary_4mib`,
/// `metadata`, `status`, `deadline`, `sleep_<ms>`, `who`) against `target`
/// (`host:port`) and waits for it (bounded). Fails only when the client could
/// not run or report; a case that ran and failed is `passed: false`.
pub fn run_grpc_client(
    env: &PeerEnv,
    target: &str,
    case: &str,
    tls: Option<&ClientTls>,
) -> Result<ClientOutcome, String> {
    spawn_grpc_client(env, target, case, tls)?.wait(CLIENT_TIMEOUT)
}

/// Starts one client case in the background; see [`run_grpc_client`].
pub fn spawn_grpc_client(
    env: &PeerEnv,
    target: &str,
    case: &str,
    tls: Option<&ClientTls>,
) -> Result<GrpcClientRun, String> {
    let mut cmd = python(env, "grpc_client.py");
    cmd.args(["--target", target, "--case", case]);
    if let Some(tls) = tls {
        cmd.arg("--tls-ca").arg(&tls.ca);
        if let Some(authority) = &tls.authority {
            cmd.args(["--authority", authority]);
        }
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run grpc_client.py: {e}"))?;
    let output = collect_output(&mut child);
    Ok(GrpcClientRun {
        case: case.to_string(),
        child,
        output,
    })
}

/// A client case running in the background, killed on drop.
#[derive(Debug)]
pub struct GrpcClientRun {
    case: String,
    child: Child,
    output: Output,
}

impl GrpcClientRun {
    /// Waits up to `timeout` for the case to finish and reads its report.
    pub fn wait(mut self, timeout: Duration) -> Result<ClientOutcome, String> {
        let status = wait_bounded(&mut self.child, timeout)?.ok_or_else(|| {
            format!(
                "client case {} did not finish within {timeout:?}",
                self.case
            )
        })?;
        let (stdout, stderr) = self.output.take();
        let line = stdout.lines().rev().find(|l| l.starts_with('{'));
        let report = line
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .ok_or_else(|| {
                format!(
                    "client case {} exited with {status} without a report; stderr: {}",
                    self.case,
                    stderr.trim()
                )
            })?;
        if !matches!(status.code(), Some(0 | 1)) {
            return Err(format!(
                "client case {} exited with {status}; stderr: {}",
                self.case,
                stderr.trim()
            ));
        }
        let passed = status.success() && report["ok"] == serde_json::Value::Bool(true);
        Ok(ClientOutcome {
            passed,
            report,
            stderr,
        })
    }
}

impl Drop for GrpcClientRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child's standard output and error, read to the end on threads.
#[derive(Debug)]
struct Output {
    stdout: Option<thread::JoinHandle<String>>,
    stderr: Option<thread::JoinHandle<String>>,
}

impl Output {
    /// Both streams, once the child has exited (their ends are then closed).
    fn take(&mut self) -> (String, String) {
        let join = |h: Option<thread::JoinHandle<String>>| {
            h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
        };
        (join(self.stdout.take()), join(self.stderr.take()))
    }
}

/// Starts reading the child's piped standard output and error.
fn collect_output(child: &mut Child) -> Output {
    fn read_all(mut r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = r.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    }
    Output {
        stdout: child.stdout.take().map(read_all),
        stderr: child.stderr.take().map(read_all),
    }
}

/// Runs one streaming call of `xtask/peers/grpc_stream_client.py` against
/// `target` (`host:port`, plaintext) with `args` (`--kind`, `--method`, `--count`,
/// `--cancel-after`, …; see the script) and waits for it, for at most `timeout`.
/// Returns the JSON report it printed (`received`, `code`, `details`,
/// `initial`, `trailing`, …), whatever the call's status.
///
/// # Errors
///
/// The client could not run, did not finish in time, or printed no report.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use lb_testkit::peers;
///
/// let Some(env) = peers::require_peers() else { return };
/// let report = peers::run_grpc_stream_client(
///     &env,
///     "127.0.0.1:50051",
///     &["--kind", "bidi", "--method", "/demo.Echo/Chat", "--count", "10"],
///     Duration::from_secs(60),
/// )
/// .unwrap();
/// assert_eq!(report["code"], "OK", "{report}");
/// ```
pub fn run_grpc_stream_client(
    env: &PeerEnv,
    target: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<serde_json::Value, String> {
    let mut cmd = python(env, "grpc_stream_client.py");
    cmd.args(["--target", target]).args(args);
    let out = run_bounded(cmd, timeout)?;
    let line = out.stdout.lines().rev().find(|l| l.starts_with('{'));
    let report = line.and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok());
    match report {
        Some(report) if out.status.success() => Ok(report),
        _ => Err(format!(
            "grpc_stream_client.py {args:?} exited with {} without a report; stderr: {}",
            out.status,
            out.stderr.trim()
        )),
    }
}

/// The result of a command line tool run.
#[derive(Clone, Debug)]
pub struct ToolOutput {
    /// How it exited.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// Runs `cmd` to completion, killing it after `timeout` (which is an error).
fn run_bounded(mut cmd: Command, timeout: Duration) -> Result<ToolOutput, String> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let mut output = collect_output(&mut child);
    let status = wait_bounded(&mut child, timeout)?
        .ok_or_else(|| format!("{shown} did not finish within {timeout:?}"))?;
    let (stdout, stderr) = output.take();
    Ok(ToolOutput {
        status,
        stdout,
        stderr,
    })
}

/// Runs `nghttp args…` (e.g. `["-n", "-s", url]`), bounded by `timeout`. For an
/// `http://` URL, nghttp speaks HTTP/2 with prior knowledge.
pub fn run_nghttp(env: &PeerEnv, args: &[&str], timeout: Duration) -> Result<ToolOutput, String> {
    let mut cmd = Command::new(&env.nghttp);
    cmd.args(args);
    run_bounded(cmd, timeout)
}

/// Runs `h2load args…` (e.g. `["-n", "100", "-c", "2", url]`), bounded by
/// `timeout`. For an `http://` URL, h2load speaks HTTP/2 with prior knowledge.
pub fn run_h2load(env: &PeerEnv, args: &[&str], timeout: Duration) -> Result<ToolOutput, String> {
    let mut cmd = Command::new(&env.h2load);
    cmd.args(args);
    run_bounded(cmd, timeout)
}

/// The number of succeeded requests in h2load's summary
/// (`requests: 100 total, 100 started, 100 done, 100 succeeded, …`).
pub fn h2load_succeeded(stdout: &str) -> Option<u64> {
    let line = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("requests:"))?;
    line.split(',').find_map(|part| {
        part.trim()
            .strip_suffix(" succeeded")
            .and_then(|n| n.trim().parse().ok())
    })
}

/// A running `nghttpd` serving a directory over plaintext HTTP/2 (prior
/// knowledge) on 127.0.0.1, killed on drop.
#[derive(Debug)]
pub struct Nghttpd {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Nghttpd {
    /// Starts `nghttpd --no-tls` serving `docroot`, with `extra_args` (such as
    /// `--echo-upload`) before the port, on a free port, and waits (bounded)
    /// until it accepts connections.
    pub fn start(env: &PeerEnv, docroot: &Path, extra_args: &[&str]) -> Result<Self, String> {
        // nghttpd cannot report a port it picked, so the port is chosen here; if
        // another process takes it first, nghttpd exits and a new port is tried.
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port()?;
            let mut child = Command::new(&env.nghttpd)
                .args(["--no-tls", "-a", "127.0.0.1", "-d"])
                .arg(docroot)
                .args(extra_args)
                .arg(port.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run nghttpd: {e}"))?;
            let stderr = collect_stderr(&mut child);
            let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
            let mut server = Self {
                child,
                addr,
                stderr,
            };
            if server.wait_listening()? {
                return Ok(server);
            }
            last = server.stderr();
        }
        Err(format!("nghttpd did not start: {}", last.trim()))
    }

    /// Waits until a connection succeeds: true, or the process exited: false.
    fn wait_listening(&mut self) -> Result<bool, String> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if self.child.try_wait().map_err(|e| e.to_string())?.is_some() {
                return Ok(false);
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(true);
            }
            thread::sleep(POLL);
        }
        Err(format!(
            "nghttpd was not listening within {START_TIMEOUT:?}"
        ))
    }

    /// The address it listens on (127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `http://127.0.0.1:<port>/<path>` URL of a file it serves.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// What nghttpd wrote to standard error so far (the last 64 KiB).
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Nghttpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("cannot bind 127.0.0.1:0: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// Writes a self-signed certificate for `localhost` and `127.0.0.1` (subject
/// alternative names; an end-entity certificate for server authentication,
/// P-256, valid 30 days) and its key into `dir` as `cert.pem` and `key.pem`,
/// with the `openssl` command line. Returns `(cert, key)`. Clients trust the
/// certificate itself (see [`ClientTls::ca`]).
pub fn self_signed_cert(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let openssl = which("openssl").ok_or("no openssl on PATH")?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let mut cmd = Command::new(openssl);
    cmd.args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "30",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-addext",
        "keyUsage=critical,digitalSignature",
        "-addext",
        "extendedKeyUsage=serverAuth",
        "-keyout",
    ])
    .arg(&key)
    .arg("-out")
    .arg(&cert);
    let out = run_bounded(cmd, Duration::from_secs(30))?;
    if out.status.success() && cert.is_file() && key.is_file() {
        Ok((cert, key))
    } else {
        Err(format!(
            "openssl req exited with {}: {}",
            out.status,
            out.stderr.trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::h2load_succeeded;

    #[test]
    fn h2load_summary_is_parsed() {
        let out = "finished in 5.01ms, 19960.08 req/s, 1.13MB/s\n\
                   requests: 100 total, 100 started, 100 done, 98 succeeded, 2 failed, \
                   0 errored, 0 timeout\n";
        assert_eq!(h2load_succeeded(out), Some(98));
        assert_eq!(h2load_succeeded("nothing"), None);
    }
}
