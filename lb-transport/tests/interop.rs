//! The standard gRPC interop cases on `grpc.testing.TestService`, both ways:
//!
//! 1. our client (a `Channel` over our HTTP/2 transport) against grpcio's
//!    TestService server (`xtask/peers/interop/server.py`, gRPC C-core);
//! 2. grpcio's interop client (`xtask/peers/interop/client.py`) against our
//!    TestService server ([`lb_transport::server`]).
//!
//! The cases and what they assert are those of grpc's
//! `doc/interop-test-descriptions.md`. The two compression cases compress with
//! gzip both ways; grpcio's server cannot tell a handler whether a request was
//! compressed, so against it `client_compressed_unary`'s probe (an uncompressed
//! request that expects compression) is allowed to succeed.
//!
//! The test prints a table of cases × directions (to standard error, past the
//! test runner's capture) and fails if any case failed. Every wait is bounded:
//! each call carries a deadline and each peer process a time limit.

#[path = "interop/client.rs"]
mod client;
#[path = "interop/messages.rs"]
mod messages;
#[path = "interop/service.rs"]
mod service;

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use lb_testkit::peers::{self, PeerEnv, ScriptServer};
use lb_transport::server::Server;

/// The cases, in the order they run and are shown.
const CASES: [&str; 16] = [
    "empty_unary",
    "large_unary",
    "client_compressed_unary",
    "server_compressed_unary",
    "client_streaming",
    "server_streaming",
    "ping_pong",
    "empty_stream",
    "timeout_on_sleeping_server",
    "cancel_after_begin",
    "cancel_after_first_response",
    "custom_metadata",
    "status_code_and_message",
    "special_status_message",
    "unimplemented_method",
    "unimplemented_service",
];

/// How long grpcio's client may take for all the cases together.
const PEER_CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the server gets to finish its calls at the end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What one case reported.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// Every assertion held.
    Pass,
    /// Something went wrong: what.
    Fail(String),
    /// The case cannot run against our stack: why.
    Skipped(String),
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail(_) => "FAIL",
            Self::Skipped(_) => "skipped",
        }
    }
}

/// The results of one direction, in [`CASES`] order.
type Results = Vec<(&'static str, Outcome)>;

#[test]
fn interop_cases_both_ways() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let directions = [
        ("our client -> grpcio server", our_client_to_grpcio(&env)),
        ("grpcio client -> our server", grpcio_client_to_ours(&env)),
    ];
    let table = table(&directions);
    let _ = writeln!(std::io::stderr(), "\n{table}");

    let failures: Vec<String> = directions
        .iter()
        .flat_map(|(direction, results)| {
            results
                .iter()
                .filter_map(move |(case, outcome)| match outcome {
                    Outcome::Fail(why) => Some(format!("{direction}: {case}: {why}")),
                    _ => None,
                })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} interop case(s) failed:\n{}\n\n{table}",
        failures.len(),
        failures.join("\n")
    );
}

/// Direction 1: our client runs every case against grpcio's TestService.
fn our_client_to_grpcio(env: &PeerEnv) -> Results {
    let (server, _stubs) = match start_grpcio_server(env) {
        Ok(started) => started,
        Err(why) => return all_failed(&format!("grpcio server did not start: {why}")),
    };
    let results = client::run_all(&server.target());
    let stderr = server.stderr();
    if results.iter().any(|(_, o)| matches!(o, Outcome::Fail(_))) && !stderr.trim().is_empty() {
        let _ = writeln!(std::io::stderr(), "grpcio interop server stderr:\n{stderr}");
    }
    results
}

/// Starts `xtask/peers/interop/server.py` on a free port.
fn start_grpcio_server(env: &PeerEnv) -> Result<(ScriptServer, peers::TempDir), String> {
    let stubs = env.temp_dir("interop")?;
    let args = [
        "--port".as_ref(),
        "0".as_ref(),
        "--stubs-dir".as_ref(),
        stubs.path().as_os_str(),
        "--watch-stdin".as_ref(),
    ];
    let server = ScriptServer::start(env, "interop/server.py", args)?;
    Ok((server, stubs))
}

/// Direction 2: grpcio's client runs every case against our TestService.
fn grpcio_client_to_ours(env: &PeerEnv) -> Results {
    let server = match service::register(Server::builder())
        .workers(8)
        .bind("127.0.0.1:0")
    {
        Ok(server) => server,
        Err(e) => return all_failed(&format!("our server did not start: {e}")),
    };
    let target = server.local_addr().to_string();
    let results = match run_grpcio_client(env, &target, false) {
        Ok(results) => results,
        Err(why) => all_failed(&why),
    };
    server.shutdown(SHUTDOWN_GRACE);
    results
}

/// The control: grpcio's client against grpcio's server. Every case passes
/// there, so a failure in the table above is ours, not the peers'.
#[test]
fn grpcio_client_and_server_agree() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let (server, _stubs) = start_grpcio_server(&env).unwrap();
    // grpcio's server has no CompressedRequest feature: the probe may succeed.
    let results = run_grpcio_client(&env, &server.target(), true).unwrap();
    let failures: Vec<_> = results
        .iter()
        .filter(|(_, outcome)| matches!(outcome, Outcome::Fail(_)))
        .collect();
    assert!(
        failures.is_empty(),
        "grpcio against grpcio: {failures:?}; server stderr: {}",
        server.stderr()
    );
}

/// Runs `xtask/peers/interop/client.py` and reads its `case NAME: …` lines; a
/// case it did not report fails.
fn run_grpcio_client(env: &PeerEnv, target: &str, lenient: bool) -> Result<Results, String> {
    let stubs = env.temp_dir("interop")?;
    let mut args = vec![
        "--target".as_ref(),
        target.as_ref(),
        "--stubs-dir".as_ref(),
        stubs.path().as_os_str(),
    ];
    if lenient {
        args.push("--lenient-compression-probe".as_ref());
    }
    let out = peers::run_script(env, "interop/client.py", args, PEER_CLIENT_TIMEOUT)?;
    if !matches!(out.status.code(), Some(0 | 1)) {
        return Err(format!(
            "grpcio interop client exited with {}; stderr: {}",
            out.status,
            out.stderr.trim()
        ));
    }
    let reported: Vec<(String, Outcome)> = out.stdout.lines().filter_map(parse_line).collect();
    Ok(CASES
        .iter()
        .map(|&case| {
            let outcome = reported.iter().find(|(name, _)| name == case).map_or_else(
                || {
                    Outcome::Fail(format!(
                        "not reported by the grpcio client; stderr: {}",
                        out.stderr.trim()
                    ))
                },
                |(_, outcome)| outcome.clone(),
            );
            (case, outcome)
        })
        .collect())
}

/// Parses `case NAME: pass`, `case NAME: fail: WHY` or `case NAME: skipped: WHY`.
fn parse_line(line: &str) -> Option<(String, Outcome)> {
    let rest = line.trim().strip_prefix("case ")?;
    let (name, result) = rest.split_once(": ")?;
    let outcome = match result.split_once(": ") {
        None if result == "pass" => Outcome::Pass,
        Some(("fail", why)) => Outcome::Fail(why.to_string()),
        Some(("skipped", why)) => Outcome::Skipped(why.to_string()),
        _ => Outcome::Fail(format!("unreadable report {line:?}")),
    };
    Some((name.to_string(), outcome))
}

/// Every case failed for the same reason.
fn all_failed(why: &str) -> Results {
    CASES
        .iter()
        .map(|&case| (case, Outcome::Fail(why.to_string())))
        .collect()
}

/// The table of cases × directions, then the details of what did not pass.
fn table(directions: &[(&str, Results)]) -> String {
    let width = CASES.iter().map(|c| c.len()).max().unwrap_or(0);
    let mut out = String::from("gRPC interop cases\n");
    let _ = write!(out, "{:width$}", "case");
    for (direction, _) in directions {
        let _ = write!(out, " | {direction:28}");
    }
    out.push('\n');
    let _ = write!(out, "{}", "-".repeat(width));
    for _ in directions {
        let _ = write!(out, "-+-{}", "-".repeat(28));
    }
    out.push('\n');
    for (i, case) in CASES.iter().enumerate() {
        let _ = write!(out, "{case:width$}");
        for (_, results) in directions {
            let label = results.get(i).map_or("?", |(_, outcome)| outcome.label());
            let _ = write!(out, " | {label:28}");
        }
        out.push('\n');
    }
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let mut notes = String::new();
    for (direction, results) in directions {
        for (case, outcome) in results {
            match outcome {
                Outcome::Pass => passed += 1,
                Outcome::Fail(why) => {
                    failed += 1;
                    let _ = writeln!(notes, "  FAIL {direction}: {case}: {why}");
                }
                Outcome::Skipped(why) => {
                    skipped += 1;
                    let _ = writeln!(notes, "  skipped {direction}: {case}: {why}");
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "totals: pass {passed}, fail {failed}, skipped {skipped}"
    );
    out.push_str(&notes);
    out
}

#[test]
fn report_lines_are_parsed() {
    assert_eq!(
        parse_line("case empty_unary: pass"),
        Some(("empty_unary".into(), Outcome::Pass))
    );
    assert_eq!(
        parse_line("case ping_pong: fail: status UNKNOWN: a: b"),
        Some((
            "ping_pong".into(),
            Outcome::Fail("status UNKNOWN: a: b".into())
        ))
    );
    assert_eq!(
        parse_line("case x: skipped: compression not supported"),
        Some((
            "x".into(),
            Outcome::Skipped("compression not supported".into())
        ))
    );
    assert!(matches!(
        parse_line("case x: maybe"),
        Some((_, Outcome::Fail(_)))
    ));
    assert_eq!(parse_line("LISTENING 1"), None);
}
