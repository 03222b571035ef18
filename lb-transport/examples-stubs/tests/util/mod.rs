//! Shared by the example tests: what the route guide demo must report, and the
//! grpcio example servers and client with Python stubs generated from `proto/`.
//! Each test file uses a part of it.
#![allow(dead_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lb_core::channel::CallOptions;
use lb_examples::route_guide::{
    DemoReport, demo_notes, demo_route, feature_at, features, point, summarize,
};
use lb_examples::routeguide::{Feature, RouteNote, RouteSummary};
use lb_testkit::peers::{self, PeerEnv, ScriptServer, TempDir};

/// The longest any call or wait of these tests takes.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// Call options bounded by [`WAIT`].
pub(crate) fn options() -> CallOptions {
    CallOptions::default().with_timeout(WAIT)
}

/// Checks the route guide demo's report against the built-in map: either server
/// (ours or grpcio's) must answer it alike.
#[track_caller]
pub(crate) fn check_demo(report: &DemoReport) {
    let map = features();
    assert_eq!(
        report.features_got,
        [
            feature_at(&map, &point(400_000_000, -740_000_000)),
            feature_at(&map, &point(0, 0)),
        ]
    );
    assert_eq!(report.features_got[0].name, "Old Mill Bridge");
    assert_eq!(report.features_listed, map[..4]);
    let expected = summarize(&demo_route(), &map, Duration::ZERO);
    assert_eq!(report.summary.point_count, 4);
    assert_eq!(report.summary.feature_count, 3);
    assert!(
        (report.summary.distance - expected.distance).abs() <= 1,
        "{:?} vs {expected:?}",
        report.summary
    );
    assert!(report.summary.elapsed_time <= 1, "{:?}", report.summary);
    assert_eq!(report.notes, demo_notes()[..3]);
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Python stubs for both example protos, made with `python -m grpc_tools.protoc`
/// in a fresh directory. `None` (the test skips) when grpcio-tools is missing and
/// the peers are not required; a panic when they are.
pub(crate) fn python_stubs(env: &PeerEnv) -> Option<TempDir> {
    let dir = env.temp_dir("examples-stubs").unwrap();
    let proto = manifest_dir().join("proto");
    let mut args: Vec<OsString> = ["-m", "grpc_tools.protoc"].map(OsString::from).to_vec();
    args.push(format!("-I{}", proto.display()).into());
    args.push(format!("--python_out={}", dir.path().display()).into());
    args.push(format!("--grpc_python_out={}", dir.path().display()).into());
    for file in ["helloworld.proto", "route_guide.proto"] {
        args.push(proto.join(file).into());
    }
    let out = peers::run_python(env, &args, Duration::from_secs(60)).unwrap();
    if out.status.success() {
        return Some(dir);
    }
    let why = format!(
        "python -m grpc_tools.protoc failed ({}): {} (run `cargo xtask peers` for grpcio-tools)",
        out.status,
        out.stderr.trim()
    );
    assert!(
        !std::env::var("LB_REQUIRE_PEERS").is_ok_and(|v| v == "1"),
        "{why}"
    );
    eprintln!("skipped: {why}");
    None
}

/// Starts one of the example's grpcio servers (`helloworld_server.py` or
/// `route_guide_server.py`) on a free port, with the stubs in `stubs`.
pub(crate) fn start_python_server(env: &PeerEnv, script: &str, stubs: &TempDir) -> ScriptServer {
    let script: PathBuf = manifest_dir().join("peers").join(script);
    let args: [OsString; 4] = [
        "--port".into(),
        "0".into(),
        "--stubs".into(),
        stubs.path().into(),
    ];
    ScriptServer::start(env, &script.display().to_string(), args).unwrap()
}

/// Runs `peers/route_guide_client.py` (grpcio's client, the demo's calls) against
/// `target` and returns what it saw as a [`DemoReport`].
pub(crate) fn run_python_demo(env: &PeerEnv, stubs: &TempDir, target: &str) -> DemoReport {
    let script = manifest_dir().join("peers").join("route_guide_client.py");
    let args: [OsString; 4] = [
        "--target".into(),
        target.into(),
        "--stubs".into(),
        stubs.path().into(),
    ];
    let out = peers::run_script(env, &script.display().to_string(), args, WAIT).unwrap();
    assert!(
        out.status.success(),
        "route_guide_client.py failed ({}): {}",
        out.status,
        out.stderr.trim()
    );
    let report: serde_json::Value =
        serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {:?}", out.stdout));
    let int = |v: &serde_json::Value| i32::try_from(v.as_i64().expect("an integer")).unwrap();
    let at = |v: &serde_json::Value| point(int(&v[0]), int(&v[1]));
    let features = |v: &serde_json::Value| -> Vec<Feature> {
        let list = v.as_array().expect("a list");
        list.iter()
            .map(|f| Feature {
                name: f[0].as_str().expect("a name").to_owned(),
                location: Some(at(&f[1])),
            })
            .collect()
    };
    let summary = &report["summary"];
    DemoReport {
        features_got: features(&report["features_got"]),
        features_listed: features(&report["features_listed"]),
        summary: RouteSummary {
            point_count: int(&summary["point_count"]),
            feature_count: int(&summary["feature_count"]),
            distance: int(&summary["distance"]),
            elapsed_time: int(&summary["elapsed_time"]),
        },
        notes: report["notes"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|n| RouteNote {
                message: n[0].as_str().expect("a message").to_owned(),
                location: Some(at(&n[1])),
            })
            .collect(),
    }
}
