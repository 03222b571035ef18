//! Project automation, run as `cargo xtask <command>`.
//!
//! - `test`: everything CI runs (format, lints, tests, docs, the no-async-runtime
//!   dependency check).
//! - `demo`: the end-to-end demos: RLS routing real calls (lb-rls's `demo`), then
//!   backends going bad mid-run while calls keep succeeding (lb-transport's
//!   `resilience`: retries, health checks, outlier detection); `demo xds` a
//!   channel an xDS management server configures (lb-group's `xds_demo`).
//! - `bench`: the benchmarks, with their targets and ratios (never part of `test`).
//! - `peers`: install the real peers for interop tests (grpcio, nghttp2); `test`
//!   does this too.
//! - `soak`: the fault, hostile-peer and stress suites again and again for a while
//!   (not part of `test`).
//! - `fuzz`: run the libFuzzer targets of `xtask/fuzz/` (installing cargo-fuzz if
//!   missing); `test` runs each for a few seconds.

mod bench;
mod deps;
mod fuzz;
mod peers;
mod soak;
mod tidy;
mod util;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <test | demo | bench | peers | fuzz | soak>

  test    format, clippy, the whole test suite, docs, dependency check (what CI runs)
  demo    run the end-to-end demos: demo [rls | resilience] (default both),
          or demo xds [seconds to keep the admin page up]
  bench   run the benchmarks and print figures against their targets
  peers   install the interop peers (grpcio venv, nghttp2 tools) if missing
  fuzz    run the fuzz targets: fuzz [--secs N (default 60)] [--target NAME]
  soak    repeat the fault, hostile-peer and stress suites: soak [--minutes M (default 10)]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("demo") => demo(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("soak") => soak::run(&args[1..]),
        Some("peers") => peers::ensure(&util::project_root()),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn test() -> Result<(), String> {
    let root = util::project_root();
    util::step("format", || {
        util::cargo(&root, &["fmt", "--all", "--", "--check"])
    })?;
    // Twice: the default features, and every feature (lb-transport's `tls` and `prost`).
    for features in [None, Some("--all-features")] {
        util::step("clippy", || {
            let mut args = vec!["clippy", "--workspace", "--all-targets"];
            args.extend(features);
            args.extend(["--", "-D", "warnings"]);
            util::cargo(&root, &args)
        })?;
    }
    util::step("dependency check", || deps::check(&root))?;
    util::step("peers", || peers::ensure(&root))?;
    let peers_env = peers::test_env(&root);
    let peers_env: Vec<(&str, &str)> = peers_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    util::step("tests", || {
        util::cargo_test_env(
            &root,
            &["test", "--workspace", "--all-features", "--no-fail-fast"],
            &peers_env,
        )
    })?;
    // lb-core's OpenTelemetry exporter against the SDK: a project of its own, since
    // the SDK brings an executor (and tokio) that must stay out of the workspace.
    // It shares the workspace's target directory, so crates built alike are reused.
    util::step("opentelemetry check", || {
        let target = std::env::var("CARGO_TARGET_DIR")
            .unwrap_or_else(|_| root.join("target").display().to_string());
        util::cargo_env(
            &root.join("xtask").join("otel-check"),
            &["test"],
            &[("CARGO_TARGET_DIR", target.as_str())],
        )
    })?;
    util::step("docs", || {
        util::cargo_env(
            &root,
            &["doc", "--workspace", "--no-deps", "--all-features"],
            &[("RUSTDOCFLAGS", "-D warnings")],
        )
    })?;
    util::step("fuzz (short)", || fuzz::short(&root))?;
    println!("xtask test: all steps passed");
    Ok(())
}

/// `cargo run --release` of one example.
fn run_example(
    root: &std::path::Path,
    package: &str,
    example: &str,
    extra: &[&str],
) -> Result<(), String> {
    // Not quiet: the first release build takes a minute or two, and cargo's progress
    // shows that something is happening.
    let mut args = vec!["run", "--release", "-p", package];
    args.extend_from_slice(extra);
    args.extend(["--example", example]);
    util::cargo(root, &args)
}

/// The xDS demo: it runs the tests' management server (grpcio with Envoy's
/// protos), so the Python peers come first.
fn demo_xds(root: &std::path::Path, args: &[String]) -> Result<(), String> {
    peers::ensure_python(root)?;
    println!(
        "== demo: a channel configured by an xDS control plane\n\
         A management server (grpcio serving ADS with Envoy's own protos) tells a \n\
         channel to xds:///demo how to route: all calls to one cluster, then 70/30, \n\
         30/70, a new endpoint, and a header route, while four threads call without \n\
         pause. Add a number of seconds to keep the admin page up at the end.\n"
    );
    let env = peers::test_env(root);
    let mut cargo_args = vec![
        "run",
        "--release",
        "-p",
        "lb-group",
        "--example",
        "xds_demo",
        "--",
    ];
    cargo_args.extend(args.iter().map(String::as_str));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    util::cargo_env(root, &cargo_args, &env)
}

fn demo(args: &[String]) -> Result<(), String> {
    let root = util::project_root();
    let which = args.first().map(String::as_str);
    let (rls, resilience) = match which {
        None => (true, true),
        Some("rls") => (true, false),
        Some("resilience") => (false, true),
        Some("xds" | "--xds") => return demo_xds(&root, &args[1..]),
        Some(other) => {
            return Err(format!("unknown demo {other:?}: rls, resilience or xds"));
        }
    };
    if rls {
        println!(
            "== demo 1: routing each user's calls to their own backend\n\
             A client channel asks a routing server (gRPC's Route Lookup Service, RLS) \n\
             which backend serves each user, caches the answer, and keeps routing while \n\
             the routing server goes away for a while and comes back. Everything runs \n\
             on this machine; the first build takes a minute or two.\n"
        );
        run_example(&root, "lb-rls", "demo", &["--features", "server"])?;
    }
    if resilience {
        if rls {
            println!();
        }
        println!(
            "== demo 2: calls that survive bad backends\n\
             Four threads call three backends without pause while one fails half its \n\
             calls, one reports it is not serving and one is shut down; retries, health \n\
             checks and outlier detection keep every call succeeding.\n"
        );
        run_example(&root, "lb-transport", "resilience", &[])?;
    }
    Ok(())
}
