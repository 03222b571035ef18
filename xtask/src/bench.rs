//! `cargo xtask bench`: the benchmarks, each figure printed against its target.
//!
//! - Pick benchmarks (criterion): single-thread pick cost and two-thread scaling,
//!   measured in the same run (the RLS cache-hit pick: < 100 ns on one thread and
//!   >= 1.8x with two).
//! - Transport benchmarks, all against one grpc C++ echo server (`xtask/peers/cpp`,
//!   built from Debian's `libgrpc++-dev` into `<target dir>/bench-peers/`, with
//!   tonic's own Cargo project `xtask/peers/tonic-client` built there too) that
//!   listens on 127.0.0.1 and on 127.0.0.2..127.0.0.4:
//!   - unary calls, one connection per client: ours is a `round_robin` `Channel`
//!     (`lb-transport`'s `unary_bench --channel`, the path of a user's call), then
//!     the grpc C++ sync client, tonic and `h2load`, one after another; one call in
//!     flight, then 32 (ours twice: 32 threads with a blocking call each, as the
//!     grpc C++ sync client does, and one thread keeping 32 calls in flight with
//!     `--pipeline`, as h2load does);
//!   - I/O threads: one of our channels over four connections (one per loopback
//!     address), 32 calls in flight, with 1, 2 and 4 I/O threads;
//!   - streaming: messages per second on one server-streaming call and the
//!     latency of bidi ping-pong round trips, with 16 B and 64 KiB messages, from
//!     our client (`stream_bench`, a `Channel`), the grpc C++ sync client and
//!     tonic, in alternating rounds;
//!   - the memory of 10,000 idle READY connections on one I/O thread (the
//!     `idle_connections` example; the open-file limit of it and of the server is
//!     raised for them);
//!   - the channel's overhead: our client's sequential calls on a bare connection
//!     and through a `round_robin` channel, alternating runs, median p50 and CPU
//!     per call of each.
//!
//!   Then one list of the targets, each a ratio of ours over another client's
//!   figure from this run (or the overhead, or the bytes per connection), with
//!   met or MISSED.
//! - The channel's call path in instructions per unary call (callgrind over lb-core's
//!   `call_cost` example: an in-process echo transport, so only the channel counts),
//!   a deterministic figure that shows what a change to the call path costs.
//! - Every client run also reports its CPU time (user + system of the client
//!   process: `getrusage(RUSAGE_CHILDREN)` of this process around the run), per
//!   call or per message.
//!
//! Benchmarks are measurements, never pass/fail tests: a missed target is printed,
//! not turned into a failure. Every figure comes from a measurement of this run.
//! The machine's load before and after the transport runs is printed with them.
//!
//! Flags: `--quick` (short smoke run), `--only pick|transport|calls`.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::time::TimeVal;

use crate::util;

/// A pick benchmark: criterion group `<group>` with `1_thread` and `2_threads` arms.
struct PickBench {
    package: &'static str,
    bench: &'static str,
    group: &'static str,
    what: &'static str,
    /// Target single-thread cost, in nanoseconds.
    target_ns: f64,
    /// Target throughput ratio of two threads over one, where an issue sets one.
    target_scaling: Option<f64>,
}

const PICK_BENCHES: &[PickBench] = &[
    PickBench {
        package: "lb-core",
        bench: "pick",
        group: "round_robin_pick_10",
        what: "round_robin pick, 10 READY subchannels",
        target_ns: 25.0,
        target_scaling: Some(1.8),
    },
    PickBench {
        package: "lb-core",
        bench: "pick",
        group: "pick_first_pick",
        what: "pick_first pick",
        target_ns: 25.0,
        target_scaling: None,
    },
    PickBench {
        package: "lb-core",
        bench: "pick",
        group: "weighted_round_robin_pick_10",
        what: "weighted_round_robin pick, 10 weighted subchannels",
        target_ns: 50.0,
        target_scaling: Some(1.8),
    },
    PickBench {
        package: "lb-core",
        bench: "pick",
        group: "weighted_round_robin_pick_10_per_call",
        what: "weighted_round_robin pick with its per-call ORCA callback",
        target_ns: 50.0,
        target_scaling: None,
    },
    PickBench {
        package: "lb-core",
        bench: "pick",
        group: "least_request_pick_10",
        what: "least_request pick, 10 READY subchannels",
        target_ns: 50.0,
        target_scaling: Some(1.8),
    },
    PickBench {
        package: "lb-core",
        bench: "pick",
        group: "ring_hash_pick_1000",
        what: "ring_hash pick, 1,000 READY endpoints",
        target_ns: 100.0,
        target_scaling: Some(1.8),
    },
    PickBench {
        package: "lb-group",
        bench: "weighted_target",
        group: "weighted_target_pick",
        what: "weighted_target pick, 10 READY children",
        target_ns: 50.0,
        target_scaling: None,
    },
    PickBench {
        package: "lb-group",
        bench: "outlier_detection",
        group: "outlier_detection_pick",
        what: "outlier_detection pick (counting), round_robin of 10",
        target_ns: 100.0,
        target_scaling: None,
    },
    PickBench {
        package: "lb-rls",
        bench: "picker",
        group: "rls_pick_hit",
        what: "rls_experimental pick, cache hit",
        target_ns: 100.0,
        target_scaling: Some(1.8),
    },
];

/// The RLS data cache's costs: criterion group, function, what it measures, and how
/// many operations one iteration does.
const RLS_CACHE_FIGURES: &[(&str, &str, &str, f64)] = &[
    (
        "rls_cache_insert",
        "on_success_new_key_x1000",
        "cache insert (new key)",
        1000.0,
    ),
    (
        "rls_cache_hit",
        "get_promote_10000_entries",
        "cache hit with LRU promotion, 10,000 entries",
        1.0,
    ),
    (
        "rls_cache_eviction",
        "on_success_evicts_one_10000_entries",
        "insert that evicts one entry, 10,000 entries",
        1.0,
    ),
];

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let root = util::project_root();
    let mut quick = false;
    let (mut pick, mut transport, mut calls) = (true, true, true);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--only" => match it.next().map(String::as_str) {
                Some("pick") => (transport, calls) = (false, false),
                Some("transport") => (pick, calls) = (false, false),
                Some("calls") => (pick, transport) = (false, false),
                other => return Err(format!("--only pick|transport|calls, not {other:?}")),
            },
            other => {
                return Err(format!(
                    "unknown bench flag {other:?} (flags: --quick, --only pick|transport|calls)"
                ));
            }
        }
    }
    // One failing part does not keep the other from being measured.
    let mut failed = Vec::new();
    if pick {
        if let Err(e) = pick_benches(&root, quick) {
            failed.push(e);
        }
    }
    if calls {
        if let Err(e) = call_path_cost(&root, quick) {
            failed.push(e);
        }
    }
    if transport {
        if let Err(e) = transport_benches(&root, quick) {
            failed.push(e);
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// Runs the criterion pick benchmarks and prints their table.
fn pick_benches(root: &Path, quick: bool) -> Result<(), String> {
    let (warm, measure) = if quick { ("1", "2") } else { ("2", "5") };
    let load_before = machine_load();
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
                root,
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
        "\n{:<58} {:>10} {:>10} {:>8} {:>22}",
        "benchmark", "1 thread", "2 threads", "scaling", "target"
    );
    let dir = criterion_dir(root);
    for b in PICK_BENCHES
        .iter()
        .filter(|b| ran.contains(&(b.package, b.bench)))
    {
        let one = estimate_ns(&dir, b.group, "1_thread")?;
        let two = estimate_ns(&dir, b.group, "2_threads")?;
        let scaling = one / two;
        let met = one < b.target_ns && b.target_scaling.is_none_or(|t| scaling >= t);
        let target = match b.target_scaling {
            Some(t) => format!("<{}ns, >={t}x", b.target_ns),
            None => format!("<{}ns", b.target_ns),
        };
        println!(
            "{:<58} {:>8.2}ns {:>8.2}ns {:>7.2}x   {target}: {}",
            b.what,
            one,
            two,
            scaling,
            if met { "met" } else { "MISSED" }
        );
    }
    println!("\n(2 threads = wall time / total picks; scaling = 1-thread time / 2-thread time)");
    println!(
        "machine: {} CPUs; load before the pick benchmarks (their builds included): \
         {load_before}; after: {}\n(two picking threads need two idle CPUs: a busy machine \
         shows in the scaling)",
        thread::available_parallelism().map_or(0, usize::from),
        machine_load()
    );
    rls_cache_benches(root, warm, measure)
}

/// Counts the instructions of one unary call through a `round_robin` channel over
/// an in-process echo transport (lb-core's `call_cost` example): callgrind's total
/// for 2N calls minus that for N, over N, so start-up and shutdown cancel out.
/// Deterministic, unlike a time, so it shows what a change to the call path
/// costs. Needs valgrind (in [`BENCH_PACKAGES`]; skipped with a note if absent).
fn call_path_cost(root: &Path, quick: bool) -> Result<(), String> {
    if !Path::new(VALGRIND).exists() {
        println!(
            "\n(skipping the call path's instruction count: valgrind is not installed; \
             `cargo xtask bench` installs it with the transport benchmarks)"
        );
        return Ok(());
    }
    util::step("build lb-core example call_cost", || {
        util::cargo(
            root,
            &[
                "build",
                "--release",
                "-p",
                "lb-core",
                "--example",
                "call_cost",
            ],
        )
    })?;
    let program = target_dir(root)
        .join("release")
        .join("examples")
        .join("call_cost");
    let n: u64 = if quick { 500 } else { 2000 };
    let mut totals = Vec::new();
    for calls in [n, 2 * n] {
        let out = target_dir(root).join(format!("call_cost.{calls}.callgrind"));
        let mut cmd = Command::new(VALGRIND);
        cmd.arg("--tool=callgrind")
            .arg("--quiet")
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(&program)
            .arg(calls.to_string());
        util::bounded(&mut cmd, Duration::from_secs(600), true)?;
        let text =
            std::fs::read_to_string(&out).map_err(|e| format!("reading {}: {e}", out.display()))?;
        let _ = std::fs::remove_file(&out);
        let total = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("summary:")
                    .or_else(|| l.strip_prefix("totals:"))
            })
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| format!("no instruction total in {}", out.display()))?;
        totals.push(total);
    }
    let per_call = totals[1].saturating_sub(totals[0]) as f64 / n as f64;
    println!(
        "\nchannel call path: {per_call:.0} instructions per unary call \
         (callgrind; lb-core's call_cost example, {} vs {n} calls, round_robin over an \
         in-process echo transport, channelz counting included)",
        2 * n
    );
    Ok(())
}

/// Runs lb-rls's cache benchmarks (they also print the memory per entry) and
/// prints their figures per operation.
fn rls_cache_benches(root: &Path, warm: &str, measure: &str) -> Result<(), String> {
    util::step("bench lb-rls cache", || {
        util::cargo(
            root,
            &[
                "bench",
                "-p",
                "lb-rls",
                "--bench",
                "cache",
                "--",
                "--warm-up-time",
                warm,
                "--measurement-time",
                measure,
            ],
        )
    })?;
    let dir = criterion_dir(root);
    println!("\nRLS data cache (the memory per entry is printed by the bench above)");
    for (group, function, what, per_iteration) in RLS_CACHE_FIGURES {
        let ns = estimate_ns(&dir, group, function)? / per_iteration;
        println!("  {what:<48} {ns:>9.1} ns per operation");
    }
    Ok(())
}

fn criterion_dir(root: &Path) -> PathBuf {
    target_dir(root).join("criterion")
}

/// The workspace's target directory (`CARGO_TARGET_DIR`, else `target/`).
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| root.join(d))
        .unwrap_or_else(|| root.join("target"))
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

// ---------------------------------------------------------------------------------
// Transport benchmarks
// ---------------------------------------------------------------------------------

/// Debian packages the transport benchmarks need, each with the file that shows it
/// is installed.
const BENCH_PACKAGES: &[(&str, &str)] = &[
    ("g++", "/usr/bin/g++"),
    ("make", "/usr/bin/make"),
    ("pkg-config", "/usr/bin/pkg-config"),
    ("protobuf-compiler", "/usr/bin/protoc"),
    ("protobuf-compiler-grpc", "/usr/bin/grpc_cpp_plugin"),
    ("libprotobuf-dev", "/usr/include/google/protobuf/message.h"),
    ("libgrpc++-dev", "/usr/include/grpcpp/grpcpp.h"),
    ("nghttp2-client", "/usr/bin/h2load"),
    ("valgrind", VALGRIND),
];

/// Callgrind counts the instructions of the channel's call path.
const VALGRIND: &str = "/usr/bin/valgrind";

/// The method every client calls.
const METHOD: &str = "/bench.Echo/Unary";

/// Request payload size, in bytes.
const PAYLOAD_BYTES: usize = 16;

/// Idle connections opened for the memory figure.
const IDLE_CONNECTIONS: usize = 10_000;

/// Open-file limit set (by `sh -c 'ulimit -n …'`) for the server and the idle
/// connection run: room for [`IDLE_CONNECTIONS`] sockets and some more (the hard
/// limit where that is lower).
const NOFILE: u32 = 16_384;

/// The loopback addresses the echo server also listens on, besides 127.0.0.1, so
/// that one channel can have several subchannels (one per address).
const EXTRA_LISTEN: &[&str] = &["127.0.0.2", "127.0.0.3", "127.0.0.4"];

/// I/O thread counts of the I/O threads scenario.
const IO_THREADS: [usize; 3] = [1, 2, 4];

/// Calls in flight in the I/O threads scenario.
const IO_THREADS_CONCURRENCY: usize = 32;

/// The limit for one package manager command.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(900);

/// The most calls one run makes.
const MAX_CALLS: u64 = 20_000_000;

/// The limit for one benchmark client run.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// Target: our sequential p50 at most this times h2load's.
const TARGET_SEQ_P50_VS_H2LOAD: f64 = 1.0;
/// Target: our client CPU time per sequential call at most this times tonic's.
const TARGET_SEQ_CPU_VS_TONIC: f64 = 0.7;
/// Target: our QPS with 32 calls in flight at least this times tonic's.
const TARGET_32_QPS_VS_TONIC: f64 = 1.3;
/// Target: our QPS with 32 calls in flight at least this times h2load's.
const TARGET_32_QPS_VS_H2LOAD: f64 = 1.0;
/// Target: our client CPU time per call with 32 in flight at most this times
/// tonic's.
const TARGET_32_CPU_VS_TONIC: f64 = 0.8;
/// Target: resident memory per idle READY connection, in bytes.
const TARGET_IDLE_BYTES: u64 = 4 << 10;
/// Target: our messages per second on one server-streaming call at least this
/// times tonic's.
const TARGET_STREAM_MSGS_VS_TONIC: f64 = 1.5;
/// Target: our ping-pong p50 at most this times the grpc C++ sync client's.
const TARGET_PINGPONG_P50_VS_CPP: f64 = 1.0;
/// Target: p50 latency a round_robin channel adds to a bare connection's
/// sequential call, in µs.
const TARGET_CHANNEL_OVERHEAD_US: f64 = 1.0;
/// Target: client CPU time a round_robin channel adds to a bare connection's
/// sequential call, in µs per call.
const TARGET_CHANNEL_OVERHEAD_CPU_US: f64 = 1.0;

/// A client under test.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Client {
    Ours,
    /// Ours with one thread keeping every call in flight (`unary_bench
    /// --pipeline`); only where more than one call is in flight.
    OursOneThread,
    CppSync,
    Tonic,
    H2load,
}

impl Client {
    const ALL: [Self; 5] = [
        Self::Ours,
        Self::OursOneThread,
        Self::CppSync,
        Self::Tonic,
        Self::H2load,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Ours => "lb-transport channel (ours)",
            Self::OursOneThread => "ours, 1 thread pipelining",
            Self::CppSync => "grpc C++ sync",
            Self::Tonic => "tonic",
            Self::H2load => "h2load",
        }
    }
}

/// One load shape: how many calls are in flight.
struct Scenario {
    name: &'static str,
    concurrency: usize,
    /// Calls of the calibration run, which also warms up.
    pilot_calls: u64,
}

/// What one run measured. In the streaming modes `calls` counts messages and
/// `qps` is messages per second.
#[derive(Clone, Debug)]
struct Figures {
    calls: u64,
    secs: f64,
    qps: f64,
    p50_us: f64,
    p99_us: f64,
    /// User + system CPU time of the client process, in seconds, when known.
    cpu_secs: Option<f64>,
}

impl Figures {
    /// The table cells calls, secs, qps, p50_us, p99_us and cpu_us/call.
    fn cells(&self) -> String {
        format!(
            "{:>9} {:>7.2} {:>9.0} {:>9.1} {:>9.1} {:>11}",
            self.calls,
            self.secs,
            self.qps,
            self.p50_us,
            self.p99_us,
            cpu_cell(self)
        )
    }

    /// CPU microseconds per call (or message).
    fn cpu_us_per_call(&self) -> Option<f64> {
        self.cpu_secs.map(|s| s * 1e6 / self.calls.max(1) as f64)
    }
}

/// The clients of the streaming benchmarks (h2load makes unary calls only).
const STREAM_CLIENTS: [Client; 3] = [Client::Ours, Client::CppSync, Client::Tonic];

/// What a streaming run does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StreamMode {
    /// One server-streaming call (`/bench.Echo/Stream`) receiving the messages.
    Stream,
    /// One bidi call (`/bench.Echo/PingPong`), one message in flight at a time.
    PingPong,
}

impl StreamMode {
    /// The clients' `--mode` value.
    fn arg(self) -> &'static str {
        match self {
            Self::Stream => "stream",
            Self::PingPong => "pingpong",
        }
    }
}

/// One streaming load shape: one call per run.
struct StreamScenario {
    mode: StreamMode,
    payload_bytes: usize,
    /// Messages received (stream) or round trips (ping-pong) in one run.
    messages: u64,
}

impl StreamScenario {
    fn name(&self) -> String {
        let what = match self.mode {
            StreamMode::Stream => "server-streaming",
            StreamMode::PingPong => "ping-pong",
        };
        format!("{what}, {}", size_name(self.payload_bytes))
    }
}

/// The streaming scenarios: 16 B and 64 KiB messages, each streamed and
/// ping-ponged, sized for runs of about a second (less with `quick`).
fn stream_scenarios(quick: bool) -> [StreamScenario; 4] {
    let n = |full: u64, short: u64| if quick { short } else { full };
    [
        StreamScenario {
            mode: StreamMode::Stream,
            payload_bytes: 16,
            messages: n(200_000, 50_000),
        },
        StreamScenario {
            mode: StreamMode::Stream,
            payload_bytes: 64 << 10,
            messages: n(10_000, 2_000),
        },
        StreamScenario {
            mode: StreamMode::PingPong,
            payload_bytes: 16,
            messages: n(20_000, 2_000),
        },
        StreamScenario {
            mode: StreamMode::PingPong,
            payload_bytes: 64 << 10,
            messages: n(5_000, 1_000),
        },
    ]
}

/// `16 B`, `64 KiB`.
fn size_name(bytes: usize) -> String {
    if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// The programs of the transport benchmarks.
struct Programs {
    server: PathBuf,
    cpp_client: PathBuf,
    /// `Err` says why tonic is missing (its build failed); its rows say so.
    tonic: Result<PathBuf, String>,
    ours: PathBuf,
    ours_stream: PathBuf,
    idle: PathBuf,
    h2load: PathBuf,
    /// `h2load -d` file: the 5-byte gRPC prefix and the encoded request.
    h2load_body: PathBuf,
}

/// Builds and runs the transport benchmarks, then prints their tables and the
/// targets.
fn transport_benches(root: &Path, quick: bool) -> Result<(), String> {
    let started = Instant::now();
    let peers = target_dir(root).join("bench-peers");
    let programs = prepare(root, &peers)?;
    let setup = started.elapsed();

    let run_secs = if quick { 1.0 } else { 5.0 };
    let scenarios = [
        Scenario {
            name: "sequential (1 in flight)",
            concurrency: 1,
            pilot_calls: if quick { 300 } else { 2_000 },
        },
        Scenario {
            name: "32 in flight",
            concurrency: 32,
            pilot_calls: if quick { 2_000 } else { 10_000 },
        },
    ];

    let server = BenchServer::start(&programs.server)?;
    let target = format!("127.0.0.1:{}", server.port);
    println!(
        "\ngrpc C++ echo server listening on {target} and {}",
        server.also.join(", ")
    );
    let load_before = machine_load();
    let measuring = Instant::now();
    let mut results: Vec<Vec<(Client, Result<Figures, String>)>> = Vec::new();
    for scenario in &scenarios {
        let mut rows = Vec::new();
        for client in Client::ALL {
            if client == Client::OursOneThread && scenario.concurrency == 1 {
                continue;
            }
            let mut figures = Err("not run".to_string());
            let _ = util::step(&format!("{}: {}", scenario.name, client.name()), || {
                figures = measure(scenario.pilot_calls, run_secs, |calls| {
                    run_client(&programs, client, &target, scenario.concurrency, calls)
                });
                figures.as_ref().map(drop).map_err(Clone::clone)
            });
            rows.push((client, figures));
        }
        results.push(rows);
    }
    let io_targets: Vec<String> = std::iter::once(target.clone())
        .chain(server.also.iter().cloned())
        .collect();
    let stream_rounds = if quick { 1 } else { 3 };
    // Alternating rounds even when quick: the differences between thread counts
    // are small next to the noise of one short run on a shared machine.
    let io_rounds = if quick { 3 } else { 5 };
    let io_threads = io_threads_scaling(&programs.ours, &io_targets, io_rounds, quick, run_secs);
    let streams = stream_scenarios(quick);
    let stream_results: Vec<_> = streams
        .iter()
        .map(|scenario| measure_stream(&programs, &target, scenario, stream_rounds))
        .collect();
    let mut idle = Err("not run".to_string());
    let _ = util::step(
        &format!("{IDLE_CONNECTIONS} idle connections on one I/O thread"),
        || {
            idle = idle_memory(&programs.idle, &target);
            idle.as_ref().map(drop).map_err(Clone::clone)
        },
    );
    let mut overhead = Err("not run".to_string());
    let _ = util::step(
        "channel overhead (round_robin channel vs bare connection)",
        || {
            overhead = channel_overhead(&programs.ours, &target, quick);
            overhead.as_ref().map(drop).map_err(Clone::clone)
        },
    );
    drop(server);
    let measured = measuring.elapsed();
    let load_after = machine_load();

    print_transport_table(root, &scenarios, &results, run_secs);
    print_io_threads(&io_threads, io_targets.len(), run_secs, io_rounds);
    print_overhead(&overhead);
    print_idle(&idle);
    print_stream_table(&streams, &stream_results, stream_rounds);
    print_targets(
        &results,
        &io_threads,
        &overhead,
        &streams,
        &stream_results,
        &idle,
    );
    println!(
        "\nmachine: {} CPUs; load before the runs: {load_before}; after: {load_after}\n\
         (server and clients share these CPUs with whatever else runs; a busy machine \
         shows in the figures)",
        thread::available_parallelism().map_or(0, usize::from)
    );
    println!(
        "\ntransport benchmarks: setup (packages, builds) {:.1?}, measurements {:.1?}, total {:.1?}",
        setup,
        measured,
        started.elapsed()
    );
    Ok(())
}

/// Our client's runs in the I/O threads scenario: one round_robin channel over
/// one connection to each of `targets`, [`IO_THREADS_CONCURRENCY`] calls in
/// flight, for each count of [`IO_THREADS`], in `rounds` alternating rounds. Each
/// count's median figures, or its first error.
fn io_threads_scaling(
    ours: &Path,
    targets: &[String],
    rounds: usize,
    quick: bool,
    run_secs: f64,
) -> Vec<(usize, Result<Figures, String>)> {
    let list = targets.join(",");
    let pilot_calls = if quick { 2_000 } else { 10_000 };
    alternating_rounds(&IO_THREADS, rounds, |&threads, round| {
        let mut result = Err("not run".to_string());
        let _ = util::step(
            &format!(
                "I/O threads: {threads}, one channel over {} connections, \
                 {IO_THREADS_CONCURRENCY} in flight (round {round}/{rounds})",
                targets.len(),
            ),
            || {
                result = measure(pilot_calls, run_secs, |calls| {
                    let mut run = OursRun::new(ours, &list, IO_THREADS_CONCURRENCY, calls);
                    run.io_threads = Some(threads);
                    run.run()
                });
                result.as_ref().map(drop).map_err(Clone::clone)
            },
        );
        result
    })
}

/// Runs `run(key, round)` for every key in each of `rounds` rounds, the keys'
/// order turning by one each round (so no key always runs first on a warming
/// machine); each key's median figures, or its first error (after which it is not
/// run again).
fn alternating_rounds<K: Copy>(
    keys: &[K],
    rounds: usize,
    mut run: impl FnMut(&K, usize) -> Result<Figures, String>,
) -> Vec<(K, Result<Figures, String>)> {
    let mut runs: Vec<(K, Result<Vec<Figures>, String>)> =
        keys.iter().map(|&k| (k, Ok(Vec::new()))).collect();
    for round in 0..rounds {
        for i in 0..runs.len() {
            let n = runs.len();
            let (key, so_far) = &mut runs[(i + round) % n];
            let Ok(figures) = so_far else { continue };
            match run(key, round + 1) {
                Ok(f) => figures.push(f),
                Err(e) => *so_far = Err(e),
            }
        }
    }
    runs.into_iter()
        .map(|(key, r)| (key, r.map(median_figures)))
        .collect()
}

fn print_io_threads(
    rows: &[(usize, Result<Figures, String>)],
    connections: usize,
    run_secs: f64,
    rounds: usize,
) {
    println!(
        "\nI/O threads: our round_robin channel over {connections} connections (one per \
         loopback address of the server), {IO_THREADS_CONCURRENCY} calls in flight, \
         connections spread over the transport's I/O threads in turn; runs of ~{run_secs} s, \
         median of {rounds} alternating round(s)"
    );
    println!(
        "\n{:<28} {:>9} {:>7} {:>9} {:>9} {:>9} {:>11} {:>10}",
        "io_threads", "calls", "secs", "qps", "p50_us", "p99_us", "cpu_us/call", "qps/1"
    );
    let one = rows
        .iter()
        .find(|(t, _)| *t == 1)
        .and_then(|(_, r)| r.as_ref().ok());
    for (threads, r) in rows {
        match r {
            Ok(f) => println!(
                "  {:<26} {} {:>10}",
                threads,
                f.cells(),
                ratio(f.qps, one.map(|o| o.qps)),
            ),
            Err(e) => println!(
                "  {:<26} FAILED: {}",
                threads,
                e.lines().next().unwrap_or_default()
            ),
        }
    }
    println!(
        "(qps/1: QPS over that with 1 I/O thread. The server and the client share this \
         machine's {} CPUs, so no gain is expected above 2 threads, and little at 2)",
        thread::available_parallelism().map_or(0, usize::from)
    );
}

/// Median sequential p50 and client CPU per call (µs) of our client on a bare
/// connection and through a channel, from runs that alternate so that both see the
/// same machine conditions.
struct Overhead {
    bare_p50_us: f64,
    channel_p50_us: f64,
    /// `None` when a run's CPU time was unknown.
    bare_cpu_us: Option<f64>,
    channel_cpu_us: Option<f64>,
    rounds: usize,
    calls: u64,
}

impl Overhead {
    fn added_p50_us(&self) -> f64 {
        self.channel_p50_us - self.bare_p50_us
    }

    fn added_cpu_us(&self) -> Option<f64> {
        Some(self.channel_cpu_us? - self.bare_cpu_us?)
    }
}

fn channel_overhead(ours: &Path, target: &str, quick: bool) -> Result<Overhead, String> {
    let (rounds, calls) = if quick { (5, 5_000) } else { (7, 20_000) };
    let (mut bare, mut channel) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (with_channel, into) in [(false, &mut bare), (true, &mut channel)] {
            let mut cmd = Command::new(ours);
            cmd.args([
                "--target",
                target,
                "--calls",
                &calls.to_string(),
                "--concurrency",
                "1",
                "--payload-bytes",
                &PAYLOAD_BYTES.to_string(),
            ]);
            if with_channel {
                cmd.arg("--channel");
            }
            let figures = run_measured(&mut cmd)?;
            println!(
                "  {}: {}",
                if with_channel { "channel" } else { "bare   " },
                line_of(&figures)
            );
            into.push(figures);
        }
    }
    let p50 = |runs: &[Figures]| median(runs.iter().map(|f| f.p50_us).collect());
    let cpu = |runs: &[Figures]| {
        runs.iter()
            .map(Figures::cpu_us_per_call)
            .collect::<Option<Vec<f64>>>()
            .map(median)
    };
    Ok(Overhead {
        bare_p50_us: p50(&bare),
        channel_p50_us: p50(&channel),
        bare_cpu_us: cpu(&bare),
        channel_cpu_us: cpu(&channel),
        rounds,
        calls,
    })
}

/// The middle value (the upper middle of an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn print_overhead(overhead: &Result<Overhead, String>) {
    println!(
        "\nchannel overhead: our client, sequential {PAYLOAD_BYTES} B calls on a bare \
         connection and through a round_robin channel, alternating runs; median p50 and \
         median client CPU per call (CPU time of the run, start-up included, over its calls)"
    );
    match overhead {
        Ok(o) => {
            println!(
                "  {} runs of {} calls each\n  p50:          bare connection {:>7.1} us, \
                 channel {:>7.1} us, added {:+.2} us",
                o.rounds,
                o.calls,
                o.bare_p50_us,
                o.channel_p50_us,
                o.added_p50_us()
            );
            match (o.bare_cpu_us, o.channel_cpu_us, o.added_cpu_us()) {
                (Some(bare), Some(channel), Some(added)) => println!(
                    "  CPU per call: bare connection {bare:>7.2} us, channel {channel:>7.2} \
                     us, added {added:+.2} us"
                ),
                _ => println!("  CPU per call: not measured"),
            }
        }
        Err(e) => println!("  FAILED: {e}"),
    }
}

fn print_idle(idle: &Result<IdleFigures, String>) {
    println!(
        "\nidle connections: {IDLE_CONNECTIONS} to the echo server on 127.0.0.1 from one \
         transport (one I/O thread), all READY, then idle"
    );
    match idle {
        Ok(f) => println!(
            "  {} READY{}: resident set grew {} KiB, {} B per connection",
            f.connections,
            f.ready_secs
                .map_or_else(String::new, |s| format!(" within {s:.2} s")),
            f.rss_delta_kib,
            f.per_conn_bytes
        ),
        Err(e) => println!("  FAILED: {e}"),
    }
}

/// Installs the packages, builds the C++ peers, tonic and our examples, and
/// writes the h2load request body. Idempotent: quick when everything is built.
fn prepare(root: &Path, peers: &Path) -> Result<Programs, String> {
    util::step("bench peers: Debian packages", ensure_bench_packages)?;
    std::fs::create_dir_all(peers).map_err(|e| format!("creating {}: {e}", peers.display()))?;
    util::step("bench peers: grpc C++ echo server and sync client", || {
        let out = format!("OUT={}", peers.display());
        let status = Command::new("make")
            .args(["-s", "-j2", "-C"])
            .arg(root.join("xtask").join("peers").join("cpp"))
            .arg(out)
            .status()
            .map_err(|e| format!("cannot run make: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("make exited with {status}"))
        }
    })?;
    let tonic_target = peers.join("tonic");
    let tonic_target_str = tonic_target.display().to_string();
    let tonic_manifest = root
        .join("xtask")
        .join("peers")
        .join("tonic-client")
        .join("Cargo.toml");
    let tonic_manifest_str = tonic_manifest.display().to_string();
    let tonic = util::step("bench peers: tonic client", || {
        util::cargo_env(
            root,
            &[
                "build",
                "--release",
                "--locked",
                "--manifest-path",
                &tonic_manifest_str,
            ],
            &[("CARGO_TARGET_DIR", &tonic_target_str)],
        )
    })
    .map(|()| tonic_target.join("release").join("tonic-bench-client"));
    util::step("bench: lb-transport examples", || {
        util::cargo(
            root,
            &[
                "build",
                "--release",
                "-p",
                "lb-transport",
                "--example",
                "unary_bench",
                "--example",
                "stream_bench",
                "--example",
                "idle_connections",
            ],
        )
    })?;
    let h2load_body = peers.join(format!("unary_{PAYLOAD_BYTES}b.grpc"));
    std::fs::write(
        &h2load_body,
        grpc_frame(&encode_msg(&[b'x'; PAYLOAD_BYTES])),
    )
    .map_err(|e| format!("writing {}: {e}", h2load_body.display()))?;
    let examples = target_dir(root).join("release").join("examples");
    Ok(Programs {
        server: peers.join("bench_server"),
        cpp_client: peers.join("bench_client"),
        tonic,
        ours: examples.join("unary_bench"),
        ours_stream: examples.join("stream_bench"),
        idle: examples.join("idle_connections"),
        h2load: PathBuf::from("/usr/bin/h2load"),
        h2load_body,
    })
}

/// Installs whichever of [`BENCH_PACKAGES`] are missing (`apt-get update` once,
/// then one install).
fn ensure_bench_packages() -> Result<(), String> {
    let missing: Vec<&str> = BENCH_PACKAGES
        .iter()
        .filter(|(_, file)| !Path::new(file).exists())
        .map(|&(package, _)| package)
        .collect();
    if missing.is_empty() {
        println!("all present: {}", package_names());
    } else {
        let names = missing.join(" ");
        if !Path::new("/usr/bin/apt-get").exists() {
            return Err(format!("missing packages {names} and there is no apt-get"));
        }
        println!("installing {names}");
        for args in [
            &["update", "-q"][..],
            &["install", "-y", "-q", "--no-install-recommends"][..],
        ] {
            let mut cmd = Command::new("apt-get");
            cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
            if args[0] == "install" {
                cmd.args(&missing);
            }
            util::bounded(&mut cmd, INSTALL_TIMEOUT, false).map_err(|e| {
                format!("{e} (run as root, or install first: apt-get install {names})")
            })?;
        }
        for (package, file) in BENCH_PACKAGES {
            if !Path::new(file).exists() {
                return Err(format!("{package} installed but {file} is missing"));
            }
        }
    }
    Ok(())
}

fn package_names() -> String {
    BENCH_PACKAGES
        .iter()
        .map(|(p, _)| *p)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `bench.Msg { payload }`: field 1, wire type 2, varint length, bytes.
fn encode_msg(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x0a];
    let mut len = payload.len();
    while len >= 0x80 {
        out.push((len & 0x7f) as u8 | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(payload);
    out
}

/// A gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length.
fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let len = u32::try_from(message.len()).expect("small message");
    let mut out = vec![0];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// The grpc C++ echo server, stopped when dropped (its stdin closes).
struct BenchServer {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Its port on 127.0.0.1.
    port: u16,
    /// `HOST:PORT` of each of [`EXTRA_LISTEN`], where it listens too.
    also: Vec<String>,
}

impl BenchServer {
    fn start(program: &Path) -> Result<Self, String> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(raise_nofile_then_exec())
            .arg(program)
            .args(["--port", "0", "--also-listen", &EXTRA_LISTEN.join(",")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let mut server = Self {
            child,
            stdin,
            port: 0,
            also: Vec::new(),
        };
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(Ok(line))) => line,
            other => return Err(format!("bench_server did not start: {other:?}")),
        };
        (server.port, server.also) =
            parse_listening(&line, EXTRA_LISTEN.len()).ok_or_else(|| {
                format!(
                    "bench_server printed {line:?}, not LISTENING <port> and {} HOST:PORT",
                    EXTRA_LISTEN.len()
                )
            })?;
        Ok(server)
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `LISTENING <port> HOST:PORT…` with `extra` addresses after the port: the port
/// and those addresses.
fn parse_listening(line: &str, extra: usize) -> Option<(u16, Vec<String>)> {
    let mut words = line.strip_prefix("LISTENING ")?.split_whitespace();
    let port = words.next()?.parse().ok()?;
    let also: Vec<String> = words.map(str::to_string).collect();
    (also.len() == extra).then_some((port, also))
}

/// `sh -c` script raising the open-file limit to [`NOFILE`] (when below it; to the
/// hard limit where that is lower) and then running `"$0" "$@"`.
fn raise_nofile_then_exec() -> String {
    format!(
        "n=$(ulimit -n); if [ \"$n\" != unlimited ] && [ \"$n\" -lt {NOFILE} ]; then \
         ulimit -n {NOFILE} 2>/dev/null || ulimit -n \"$(ulimit -H -n)\" || exit 111; fi; \
         exec \"$0\" \"$@\""
    )
}

/// Calibrates a client with a pilot run of `pilot_calls` (also its warm-up), then
/// measures a run of about `run_secs`; `run(calls)` runs it once.
fn measure(
    pilot_calls: u64,
    run_secs: f64,
    run: impl Fn(u64) -> Result<Figures, String>,
) -> Result<Figures, String> {
    // Pilot runs grow until one lasts long enough to estimate the rate from.
    let min_pilot_secs = run_secs / 10.0;
    let mut calls = pilot_calls;
    let pilot = loop {
        let pilot = run(calls)?;
        println!("  pilot: {}", line_of(&pilot));
        if pilot.secs >= min_pilot_secs || calls >= MAX_CALLS {
            break pilot;
        }
        let grow = (min_pilot_secs * 1.5 / pilot.secs.max(1e-3)).clamp(2.0, 20.0);
        calls = ((calls as f64 * grow) as u64).min(MAX_CALLS);
    };
    let calls = ((pilot.qps * run_secs).round() as u64).clamp(pilot_calls, MAX_CALLS);
    let figures = run(calls)?;
    println!("  run:   {}", line_of(&figures));
    Ok(figures)
}

fn line_of(f: &Figures) -> String {
    let cpu = f
        .cpu_secs
        .map_or_else(String::new, |s| format!(" cpu_secs={s:.2}"));
    format!(
        "calls={} secs={:.3} qps={:.0} p50_us={:.1} p99_us={:.1}{cpu}",
        f.calls, f.secs, f.qps, f.p50_us, f.p99_us
    )
}

/// Runs a client that prints a result line; its figures with the CPU time it used.
fn run_measured(cmd: &mut Command) -> Result<Figures, String> {
    let before = children_cpu_secs();
    let out = util::bounded(cmd, RUN_TIMEOUT, true)?;
    let after = children_cpu_secs();
    let mut figures = parse_figures(&out)?;
    figures.cpu_secs = before.zip(after).map(|(b, a)| (a - b).max(0.0));
    Ok(figures)
}

/// User + system CPU seconds of this process's children that have been waited
/// for (`getrusage(RUSAGE_CHILDREN)`, to the microsecond). [`util::bounded`] waits
/// for its child, so the difference around one run is that client's CPU time
/// (grandchildren it waited for included).
fn children_cpu_secs() -> Option<f64> {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).ok()?;
    let secs = |t: TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 * 1e-6;
    Some(secs(usage.user_time()) + secs(usage.system_time()))
}

/// One run of `calls` unary calls, `concurrency` in flight. Ours goes through a
/// round_robin channel (`unary_bench --channel`), the path of a user's call.
fn run_client(
    programs: &Programs,
    client: Client,
    target: &str,
    concurrency: usize,
    calls: u64,
) -> Result<Figures, String> {
    let program = match client {
        Client::Ours => return OursRun::new(&programs.ours, target, concurrency, calls).run(),
        Client::OursOneThread => {
            let mut run = OursRun::new(&programs.ours, target, concurrency, calls);
            run.pipeline = true;
            return run.run();
        }
        Client::CppSync => &programs.cpp_client,
        Client::Tonic => programs
            .tonic
            .as_ref()
            .map_err(|e| format!("tonic client not built: {e}"))?,
        Client::H2load => return run_h2load(programs, target, concurrency, calls),
    };
    run_measured(Command::new(program).args([
        "--target",
        target,
        "--calls",
        &calls.to_string(),
        "--concurrency",
        &concurrency.to_string(),
        "--payload-bytes",
        &PAYLOAD_BYTES.to_string(),
    ]))
}

/// One run of our `unary_bench --channel` to `targets` (one address or several,
/// comma-separated).
struct OursRun<'a> {
    program: &'a Path,
    targets: &'a str,
    concurrency: usize,
    calls: u64,
    /// I/O threads (the transport's default when `None`).
    io_threads: Option<usize>,
    /// One thread keeps every call in flight (`--pipeline`).
    pipeline: bool,
}

impl<'a> OursRun<'a> {
    fn new(program: &'a Path, targets: &'a str, concurrency: usize, calls: u64) -> Self {
        Self {
            program,
            targets,
            concurrency,
            calls,
            io_threads: None,
            pipeline: false,
        }
    }

    fn run(&self) -> Result<Figures, String> {
        let mut cmd = Command::new(self.program);
        cmd.args([
            "--channel",
            "--target",
            self.targets,
            "--calls",
            &self.calls.to_string(),
            "--concurrency",
            &self.concurrency.to_string(),
            "--payload-bytes",
            &PAYLOAD_BYTES.to_string(),
        ]);
        if let Some(n) = self.io_threads {
            cmd.args(["--io-threads", &n.to_string()]);
        }
        if self.pipeline {
            cmd.arg("--pipeline");
        }
        run_measured(&mut cmd)
    }
}

/// Parses `calls=N secs=S qps=Q p50_us=P p99_us=P99`.
fn parse_figures(out: &str) -> Result<Figures, String> {
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with("calls="))
        .ok_or_else(|| format!("no result line in {out:?}"))?;
    let field = |key: &str| -> Result<f64, String> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no {key} in {line:?}"))
    };
    Ok(Figures {
        calls: field("calls")? as u64,
        secs: field("secs")?,
        qps: field("qps")?,
        p50_us: field("p50_us")?,
        p99_us: field("p99_us")?,
        cpu_secs: None,
    })
}

/// h2load over one connection with `concurrency` streams at once (`-c 1 -m C`);
/// QPS from its summary, latencies from its per-request log.
fn run_h2load(
    programs: &Programs,
    target: &str,
    concurrency: usize,
    calls: u64,
) -> Result<Figures, String> {
    let log = programs.h2load_body.with_extension("h2load.log");
    // h2load appends to its log file.
    if log.exists() {
        std::fs::remove_file(&log).map_err(|e| format!("removing {}: {e}", log.display()))?;
    }
    let cpu_before = children_cpu_secs();
    let out = util::bounded(
        Command::new(&programs.h2load)
            .args(["-n", &calls.to_string(), "-c", "1", "-t", "1"])
            .args(["-m", &concurrency.to_string()])
            .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
            .arg("-d")
            .arg(&programs.h2load_body)
            .arg(format!("--log-file={}", log.display()))
            .arg(format!("http://{target}{METHOD}")),
        RUN_TIMEOUT,
        true,
    )?;
    let cpu_secs = cpu_before
        .zip(children_cpu_secs())
        .map(|(b, a)| (a - b).max(0.0));
    // "finished in 1.37s, 14650.13 req/s, 958.71KB/s"
    let finished = out
        .lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .ok_or_else(|| format!("no summary in h2load output {out:?}"))?;
    let mut parts = finished.split(',').map(str::trim);
    let secs = parts.next().and_then(parse_duration_secs);
    let qps = parts
        .next()
        .and_then(|p| p.strip_suffix(" req/s"))
        .and_then(|p| p.parse::<f64>().ok());
    let (Some(secs), Some(qps)) = (secs, qps) else {
        return Err(format!("cannot read h2load summary {finished:?}"));
    };
    // "requests: N total, N started, N done, N succeeded, 0 failed, …"
    let succeeded = out
        .lines()
        .find_map(|l| l.strip_prefix("requests: "))
        .and_then(|l| l.split(", ").find_map(|p| p.strip_suffix(" succeeded")))
        .and_then(|n| n.parse::<u64>().ok());
    if succeeded != Some(calls) {
        return Err(format!(
            "h2load: {succeeded:?} of {calls} requests succeeded\n{out}"
        ));
    }
    let text =
        std::fs::read_to_string(&log).map_err(|e| format!("reading {}: {e}", log.display()))?;
    let mut latencies = Vec::new();
    for row in text.lines() {
        let cols: Vec<&str> = row.split('\t').collect();
        match (cols.get(1), cols.get(2).and_then(|c| c.parse::<u64>().ok())) {
            (Some(&"200"), Some(us)) => latencies.push(us),
            _ => return Err(format!("h2load log row {row:?} is not a 200 with a time")),
        }
    }
    if latencies.len() as u64 != calls {
        return Err(format!(
            "h2load logged {} of {calls} requests",
            latencies.len()
        ));
    }
    latencies.sort_unstable();
    Ok(Figures {
        calls,
        secs,
        qps,
        p50_us: percentile(&latencies, 0.50) as f64,
        p99_us: percentile(&latencies, 0.99) as f64,
        cpu_secs,
    })
}

/// `1.37s`, `950.12ms`, `800us` as seconds.
fn parse_duration_secs(s: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else {
        (s.strip_suffix('s')?, 1.0)
    };
    num.parse::<f64>().ok().map(|n| n * scale)
}

/// The value at rank `p` of sorted `values` (the nearest rank, as the clients do).
fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[(p * (sorted.len() - 1) as f64).round() as usize]
}

/// What the idle connection run measured.
#[derive(Clone, Debug)]
struct IdleFigures {
    connections: u64,
    rss_delta_kib: u64,
    per_conn_bytes: u64,
    /// From the first connect to the last READY, when the example reports it.
    ready_secs: Option<f64>,
}

/// Runs the `idle_connections` example (with a raised open-file limit).
fn idle_memory(program: &Path, target: &str) -> Result<IdleFigures, String> {
    let out = util::bounded(
        Command::new("sh")
            .arg("-c")
            .arg(raise_nofile_then_exec())
            .arg(program)
            .args(["--target", target])
            .args(["--connections", &IDLE_CONNECTIONS.to_string()]),
        RUN_TIMEOUT,
        true,
    )?;
    println!("  {}", out.trim());
    let line = out
        .lines()
        .find(|l| l.starts_with("connections="))
        .ok_or_else(|| format!("no result line in {out:?}"))?;
    let value = |key: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    };
    let field = |key: &str| -> Result<u64, String> {
        value(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no {key} in {line:?}"))
    };
    Ok(IdleFigures {
        connections: field("connections")?,
        rss_delta_kib: field("rss_delta_kib")?,
        per_conn_bytes: field("per_conn_bytes")?,
        ready_secs: value("ready_secs").and_then(|v| v.parse().ok()),
    })
}

/// The load average and CPU pressure (`/proc/loadavg`, `/proc/pressure/cpu`).
fn machine_load() -> String {
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into());
    let pressure = std::fs::read_to_string("/proc/pressure/cpu")
        .ok()
        .and_then(|p| {
            p.lines()
                .find_map(|l| l.strip_prefix("some "))
                .and_then(|l| l.split_whitespace().next().map(str::to_string))
        })
        .unwrap_or_else(|| "avg10=?".into());
    format!("loadavg {loadavg}, cpu pressure {pressure}%")
}

/// Versions of the peers, for the table's header.
fn peer_versions(root: &Path) -> String {
    let grpc = util::bounded(
        Command::new("pkg-config").args(["--modversion", "grpc++"]),
        Duration::from_secs(30),
        true,
    )
    .map(|v| v.trim().to_string())
    .unwrap_or_else(|_| "?".into());
    let h2load = util::bounded(
        Command::new("/usr/bin/h2load").arg("--version"),
        Duration::from_secs(30),
        true,
    )
    .ok()
    .and_then(|v| v.split_whitespace().last().map(str::to_string))
    .unwrap_or_else(|| "?".into());
    let lock = root
        .join("xtask")
        .join("peers")
        .join("tonic-client")
        .join("Cargo.lock");
    let tonic = std::fs::read_to_string(lock)
        .ok()
        .and_then(|text| {
            let at = text.find("name = \"tonic\"\nversion = \"")?;
            let rest = &text[at + "name = \"tonic\"\nversion = \"".len()..];
            Some(rest[..rest.find('"')?].to_string())
        })
        .unwrap_or_else(|| "?".into());
    format!("grpc C++ {grpc}, tonic {tonic}, h2load {h2load}")
}

fn print_transport_table(
    root: &Path,
    scenarios: &[Scenario],
    results: &[Vec<(Client, Result<Figures, String>)>],
    run_secs: f64,
) {
    println!(
        "\nunary {METHOD}, {PAYLOAD_BYTES} B payload, one connection per client, \
         grpc C++ echo server on 127.0.0.1; runs of ~{run_secs} s each\n({})",
        peer_versions(root)
    );
    println!(
        "\n{:<30} {:>9} {:>7} {:>9} {:>9} {:>9} {:>11} {:>10} {:>10}",
        "client", "calls", "secs", "qps", "p50_us", "p99_us", "cpu_us/call", "qps/ours", "p50/ours"
    );
    for (scenario, rows) in scenarios.iter().zip(results) {
        println!("{}", scenario.name);
        let ours = rows
            .iter()
            .find(|(c, _)| *c == Client::Ours)
            .and_then(|(_, r)| r.as_ref().ok());
        for (client, r) in rows {
            match r {
                Ok(f) => {
                    println!(
                        "  {:<28} {} {:>10} {:>10}",
                        client.name(),
                        f.cells(),
                        ratio(f.qps, ours.map(|o| o.qps)),
                        ratio(f.p50_us, ours.map(|o| o.p50_us)),
                    );
                }
                Err(e) => println!(
                    "  {:<28} FAILED: {}",
                    client.name(),
                    e.lines().next().unwrap_or_default()
                ),
            }
        }
    }
    println!(
        "(ours: unary_bench --channel, a round_robin Channel over one connection, the path \
         of a user's call;\n qps/ours and p50/ours: that client's figure divided by ours; \
         cpu_us/call: user + system CPU time of the client process, start-up included, \
         over its calls)"
    );
}

/// Which way a target's ratio (ours over theirs) must go.
#[derive(Clone, Copy)]
enum Bound {
    /// At most this.
    AtMost(f64),
    /// At least this.
    AtLeast(f64),
    /// No target: the ratio is printed only.
    None,
}

impl Bound {
    fn verdict(self, r: f64) -> &'static str {
        match self {
            Self::AtMost(t) if r <= t => "met",
            Self::AtLeast(t) if r >= t => "met",
            Self::None => "(no target)",
            _ => "MISSED",
        }
    }

    fn text(self) -> String {
        match self {
            Self::AtMost(t) => format!("<= {t:.2}x"),
            Self::AtLeast(t) => format!(">= {t:.2}x"),
            Self::None => String::new(),
        }
    }
}

/// Every target of the transport benchmarks, each from figures of this run: the
/// ratio of ours over the other client's (or the difference, or the size) and
/// whether it is met.
fn print_targets(
    results: &[Vec<(Client, Result<Figures, String>)>],
    io_threads: &[(usize, Result<Figures, String>)],
    overhead: &Result<Overhead, String>,
    streams: &[StreamScenario],
    stream_results: &[Vec<(Client, Result<Figures, String>)>],
    idle: &Result<IdleFigures, String>,
) {
    let get = |rows: &[(Client, Result<Figures, String>)], client: Client| {
        rows.iter()
            .find(|(c, _)| *c == client)
            .and_then(|(_, r)| r.as_ref().ok())
            .cloned()
    };
    let unary =
        |scenario: usize, client: Client| results.get(scenario).and_then(|rows| get(rows, client));
    let p50 = |f: Option<Figures>| f.map(|f| f.p50_us);
    let qps = |f: Option<Figures>| f.map(|f| f.qps);
    let cpu = |f: Option<Figures>| f.and_then(|f| f.cpu_us_per_call());
    println!(
        "\ntargets, each from this run: result = ours / theirs (\"ours\" is our round_robin \
         channel);\n for the channel overhead ours = channel, theirs = bare connection, \
         result = the difference; for I/O threads ours = N threads, theirs = 1"
    );
    println!(
        "  {:<54} {:>10} {:>10} {:>9} {:>9}   verdict",
        "target", "ours", "theirs", "result", "target"
    );
    let mut lines = String::new();
    let seq = "sequential";
    let c32 = "32 in flight";
    for (what, unit, ours, theirs, bound) in [
        (
            format!("{seq}: p50 <= h2load's"),
            "us",
            p50(unary(0, Client::Ours)),
            p50(unary(0, Client::H2load)),
            Bound::AtMost(TARGET_SEQ_P50_VS_H2LOAD),
        ),
        (
            format!("{seq}: CPU per call <= {TARGET_SEQ_CPU_VS_TONIC}x tonic's"),
            "us",
            cpu(unary(0, Client::Ours)),
            cpu(unary(0, Client::Tonic)),
            Bound::AtMost(TARGET_SEQ_CPU_VS_TONIC),
        ),
    ]
    .into_iter()
    .chain(
        [
            (Client::Ours, c32.to_string()),
            (Client::OursOneThread, format!("{c32}, 1 thread")),
        ]
        .into_iter()
        .flat_map(|(client, label)| {
            [
                (
                    format!("{label}: QPS >= {TARGET_32_QPS_VS_TONIC}x tonic's"),
                    "/s",
                    qps(unary(1, client)),
                    qps(unary(1, Client::Tonic)),
                    Bound::AtLeast(TARGET_32_QPS_VS_TONIC),
                ),
                (
                    format!("{label}: QPS >= h2load's"),
                    "/s",
                    qps(unary(1, client)),
                    qps(unary(1, Client::H2load)),
                    Bound::AtLeast(TARGET_32_QPS_VS_H2LOAD),
                ),
                (
                    format!("{label}: CPU per call <= {TARGET_32_CPU_VS_TONIC}x tonic's"),
                    "us",
                    cpu(unary(1, client)),
                    cpu(unary(1, Client::Tonic)),
                    Bound::AtMost(TARGET_32_CPU_VS_TONIC),
                ),
            ]
        }),
    ) {
        target_line(&mut lines, &what, unit, ours, theirs, bound);
    }
    for (scenario, rows) in streams.iter().zip(stream_results) {
        let ours = get(rows, Client::Ours);
        match scenario.mode {
            StreamMode::Stream => target_line(
                &mut lines,
                &format!(
                    "{}: msgs/s >= {TARGET_STREAM_MSGS_VS_TONIC}x tonic's",
                    scenario.name()
                ),
                "/s",
                qps(ours),
                qps(get(rows, Client::Tonic)),
                Bound::AtLeast(TARGET_STREAM_MSGS_VS_TONIC),
            ),
            StreamMode::PingPong => {
                target_line(
                    &mut lines,
                    &format!("{}: p50 <= grpc C++ sync's", scenario.name()),
                    "us",
                    p50(ours.clone()),
                    p50(get(rows, Client::CppSync)),
                    Bound::AtMost(TARGET_PINGPONG_P50_VS_CPP),
                );
                target_line(
                    &mut lines,
                    &format!("{}: p50 vs tonic's", scenario.name()),
                    "us",
                    p50(ours),
                    p50(get(rows, Client::Tonic)),
                    Bound::None,
                );
            }
        }
    }
    print!("{lines}");
    match overhead {
        Ok(o) => {
            let verdict = |added: f64, target: f64| if added < target { "met" } else { "MISSED" };
            println!(
                "  {:<54} {:>10} {:>10} {:>9} {:>9}   {}",
                format!(
                    "channel over bare connection: p50 added < {TARGET_CHANNEL_OVERHEAD_US} us"
                ),
                format!("{:.2}us", o.channel_p50_us),
                format!("{:.2}us", o.bare_p50_us),
                format!("{:+.2}us", o.added_p50_us()),
                format!("< {TARGET_CHANNEL_OVERHEAD_US}us"),
                verdict(o.added_p50_us(), TARGET_CHANNEL_OVERHEAD_US)
            );
            let what = format!(
                "channel over bare connection: CPU/call added < {TARGET_CHANNEL_OVERHEAD_CPU_US} us"
            );
            match (o.channel_cpu_us, o.bare_cpu_us, o.added_cpu_us()) {
                (Some(channel), Some(bare), Some(added)) => println!(
                    "  {what:<54} {:>10} {:>10} {:>9} {:>9}   {}",
                    format!("{channel:.2}us"),
                    format!("{bare:.2}us"),
                    format!("{added:+.2}us"),
                    format!("< {TARGET_CHANNEL_OVERHEAD_CPU_US}us"),
                    verdict(added, TARGET_CHANNEL_OVERHEAD_CPU_US)
                ),
                _ => println!("  {what:<54} not measured"),
            }
        }
        Err(e) => println!(
            "  {:<54} FAILED: {}",
            "channel overhead",
            e.lines().next().unwrap_or_default()
        ),
    }
    let what =
        format!("idle memory, {IDLE_CONNECTIONS} READY conns: <= {TARGET_IDLE_BYTES} B/conn");
    match idle {
        Ok(f) => println!(
            "  {what:<54} {:>10} {:>10} {:>9} {:>9}   {}",
            format!("{}B", f.per_conn_bytes),
            "-",
            "-",
            format!("<= {TARGET_IDLE_BYTES}B"),
            if f.per_conn_bytes <= TARGET_IDLE_BYTES && f.connections == IDLE_CONNECTIONS as u64 {
                "met"
            } else {
                "MISSED"
            }
        ),
        Err(e) => println!(
            "  {what:<54} FAILED: {}",
            e.lines().next().unwrap_or_default()
        ),
    }
    let io_qps = |threads: usize| {
        io_threads
            .iter()
            .find(|(t, _)| *t == threads)
            .and_then(|(_, r)| r.as_ref().ok())
            .map(|f| f.qps)
    };
    let mut lines = String::new();
    for threads in IO_THREADS.iter().copied().filter(|&t| t > 1) {
        target_line(
            &mut lines,
            &format!("I/O threads: QPS with {threads} over 1 (4 conns, 32 in flight)"),
            "/s",
            io_qps(threads),
            io_qps(1),
            Bound::None,
        );
    }
    print!("{lines}");
    println!(
        "  (I/O threads: no target; with {} CPUs shared by server and client, no scaling \
         above 2 threads is expected)",
        thread::available_parallelism().map_or(0, usize::from)
    );
}

/// `1.23x`: `x` over `base`, or `-` without a base.
fn ratio(x: f64, base: Option<f64>) -> String {
    base.map_or_else(|| "-".to_string(), |b| format!("{:.2}x", x / b))
}

/// The CPU time per call (or message) in µs, or `-` when unknown.
fn cpu_cell(f: &Figures) -> String {
    f.cpu_us_per_call()
        .map_or_else(|| "-".to_string(), |us| format!("{us:.2}"))
}

/// One line of the targets: ours and theirs (in `unit`), ours over theirs, and
/// whether that ratio is within `bound`.
fn target_line(
    lines: &mut String,
    what: &str,
    unit: &str,
    ours: Option<f64>,
    theirs: Option<f64>,
    bound: Bound,
) {
    let value = |v: f64| {
        if v >= 1000.0 {
            format!("{v:.0}{unit}")
        } else {
            format!("{v:.2}{unit}")
        }
    };
    let _ = match (ours, theirs) {
        (Some(o), Some(t)) => {
            let r = o / t;
            writeln!(
                lines,
                "  {what:<54} {:>10} {:>10} {:>9} {:>9}   {}",
                value(o),
                value(t),
                format!("{r:.2}x"),
                bound.text(),
                bound.verdict(r)
            )
        }
        _ => writeln!(lines, "  {what:<54} not measured"),
    };
}

/// Runs `rounds` rounds of `scenario`, each client once per round (their order
/// turning by one each round); each client's median figures, or its first error.
fn measure_stream(
    programs: &Programs,
    target: &str,
    scenario: &StreamScenario,
    rounds: usize,
) -> Vec<(Client, Result<Figures, String>)> {
    alternating_rounds(&STREAM_CLIENTS, rounds, |client, round| {
        let mut result = Err("not run".to_string());
        let _ = util::step(
            &format!(
                "{} x {}: {} (round {round}/{rounds})",
                scenario.name(),
                scenario.messages,
                client.name(),
            ),
            || {
                result = run_stream_client(programs, *client, target, scenario);
                result
                    .as_ref()
                    .map(|f| println!("  {}", line_of(f)))
                    .map_err(Clone::clone)
            },
        );
        result
    })
}

/// The median of each figure over runs of the same work.
fn median_figures(runs: Vec<Figures>) -> Figures {
    let of = |f: fn(&Figures) -> f64| median(runs.iter().map(f).collect());
    let cpu: Option<Vec<f64>> = runs.iter().map(|r| r.cpu_secs).collect();
    Figures {
        calls: runs[0].calls,
        secs: of(|r| r.secs),
        qps: of(|r| r.qps),
        p50_us: of(|r| r.p50_us),
        p99_us: of(|r| r.p99_us),
        cpu_secs: cpu.map(median),
    }
}

/// One streaming run of `client`: one call of `scenario.messages` messages.
fn run_stream_client(
    programs: &Programs,
    client: Client,
    target: &str,
    scenario: &StreamScenario,
) -> Result<Figures, String> {
    let program = match client {
        Client::Ours => &programs.ours_stream,
        Client::CppSync => &programs.cpp_client,
        Client::Tonic => programs
            .tonic
            .as_ref()
            .map_err(|e| format!("tonic client not built: {e}"))?,
        Client::H2load | Client::OursOneThread => {
            return Err(format!("{} makes no streaming calls", client.name()));
        }
    };
    let figures = run_measured(Command::new(program).args([
        "--target",
        target,
        "--mode",
        scenario.mode.arg(),
        "--calls",
        &scenario.messages.to_string(),
        "--concurrency",
        "1",
        "--payload-bytes",
        &scenario.payload_bytes.to_string(),
    ]))?;
    if figures.calls != scenario.messages {
        return Err(format!(
            "{} reported {} of {} messages",
            client.name(),
            figures.calls,
            scenario.messages
        ));
    }
    Ok(figures)
}

fn print_stream_table(
    scenarios: &[StreamScenario],
    results: &[Vec<(Client, Result<Figures, String>)>],
    rounds: usize,
) {
    println!(
        "\nstreaming, one call per run on the same grpc C++ echo server, one connection \
         per client; median of {rounds} alternating round(s)"
    );
    println!(
        "\n{:<30} {:>9} {:>7} {:>9} {:>8} {:>9} {:>9} {:>10} {:>10} {:>10}",
        "client",
        "messages",
        "secs",
        "msgs/s",
        "MiB/s",
        "p50_us",
        "p99_us",
        "cpu_us/msg",
        "msgs/ours",
        "p50/ours"
    );
    for (scenario, rows) in scenarios.iter().zip(results) {
        println!("{}", scenario.name());
        let ours = rows
            .iter()
            .find(|(c, _)| *c == Client::Ours)
            .and_then(|(_, r)| r.as_ref().ok());
        for (client, r) in rows {
            match r {
                Ok(f) => println!(
                    "  {:<28} {:>9} {:>7.2} {:>9.0} {:>8.1} {:>9.1} {:>9.1} {:>10} {:>10} {:>10}",
                    client.name(),
                    f.calls,
                    f.secs,
                    f.qps,
                    f.qps * scenario.payload_bytes as f64 / f64::from(1 << 20),
                    f.p50_us,
                    f.p99_us,
                    cpu_cell(f),
                    ratio(f.qps, ours.map(|o| o.qps)),
                    // The gaps of a stream say how it batches, not how fast it is.
                    ratio(
                        f.p50_us,
                        ours.filter(|_| scenario.mode == StreamMode::PingPong)
                            .map(|o| o.p50_us)
                    ),
                ),
                Err(e) => println!(
                    "  {:<28} FAILED: {}",
                    client.name(),
                    e.lines().next().unwrap_or_default()
                ),
            }
        }
    }
    println!(
        "(server-streaming: msgs/s over the whole call, p50/p99 of the gaps between \
         consecutive messages;\n ping-pong: one message in flight, msgs/s = round trips \
         per second, p50/p99 per round trip; MiB/s counts payload bytes one way;\n \
         cpu_us/msg: user + system CPU time of the client process, start-up included, \
         over its messages;\n msgs/ours and p50/ours: that client's \
         figure divided by ours, p50 for ping-pong only)"
    );
}

#[cfg(test)]
mod tests {
    use super::{
        Figures, children_cpu_secs, encode_msg, grpc_frame, median, median_figures,
        parse_duration_secs, parse_figures, parse_listening, percentile, size_name,
    };

    #[test]
    fn request_body_is_a_grpc_framed_bench_msg() {
        assert_eq!(
            grpc_frame(&encode_msg(b"ab")),
            [0, 0, 0, 0, 4, 0x0a, 2, b'a', b'b']
        );
        assert_eq!(encode_msg(&[0; 300])[..3], [0x0a, 0xac, 0x02]);
    }

    #[test]
    fn result_lines_and_h2load_durations_parse() {
        let f = parse_figures("noise\ncalls=10 secs=0.5 qps=20 p50_us=3.5 p99_us=9\n").unwrap();
        assert_eq!((f.calls, f.qps, f.p50_us, f.p99_us), (10, 20.0, 3.5, 9.0));
        assert!(parse_figures("calls=10 secs=0.5").is_err());
        assert_eq!(parse_duration_secs("1.5s"), Some(1.5));
        assert_eq!(parse_duration_secs("250ms"), Some(0.25));
        assert_eq!(parse_duration_secs("fast"), None);
        assert_eq!(percentile(&[1, 2, 3, 4, 5], 0.5), 3);
        assert_eq!(percentile(&[1, 2, 3, 4, 5], 0.99), 5);
    }

    #[test]
    fn children_cpu_time_is_read_and_never_goes_back() {
        let before = children_cpu_secs().expect("getrusage");
        std::process::Command::new("true").status().unwrap();
        let after = children_cpu_secs().expect("getrusage");
        assert!(before >= 0.0 && after >= before, "{before} then {after}");
    }

    #[test]
    fn the_server_line_gives_its_port_and_extra_addresses() {
        assert_eq!(parse_listening("LISTENING 4000", 0), Some((4000, vec![])));
        assert_eq!(
            parse_listening("LISTENING 4000 127.0.0.2:4001 127.0.0.3:4002", 2),
            Some((
                4000,
                vec!["127.0.0.2:4001".to_string(), "127.0.0.3:4002".to_string()]
            ))
        );
        assert_eq!(parse_listening("LISTENING 4000", 3), None);
        assert_eq!(parse_listening("LISTENING x", 0), None);
        assert_eq!(parse_listening("READY 4000", 0), None);
    }

    #[test]
    fn streaming_runs_report_each_figure_s_median() {
        let run = |qps: f64, p50_us: f64, cpu: Option<f64>| Figures {
            calls: 100,
            secs: 100.0 / qps,
            qps,
            p50_us,
            p99_us: p50_us * 2.0,
            cpu_secs: cpu,
        };
        let m = median_figures(vec![
            run(300.0, 5.0, Some(0.3)),
            run(100.0, 9.0, Some(0.1)),
            run(200.0, 1.0, Some(0.2)),
        ]);
        assert_eq!(
            (m.calls, m.qps, m.p50_us, m.p99_us),
            (100, 200.0, 5.0, 10.0)
        );
        assert_eq!(m.cpu_secs, Some(0.2));
        assert_eq!(m.cpu_us_per_call(), Some(2000.0));
        let m = median_figures(vec![run(1.0, 1.0, Some(1.0)), run(2.0, 2.0, None)]);
        assert_eq!(
            m.cpu_secs, None,
            "a run without its CPU time leaves it unknown"
        );
        assert_eq!(median(vec![4.0, 1.0]), 4.0);
        assert_eq!(size_name(16), "16 B");
        assert_eq!(size_name(64 << 10), "64 KiB");
        assert_eq!(size_name(1000), "1000 B");
    }
}
