//! A slow reader against our server: a server-streaming handler writes 256 MiB as
//! fast as it can to grpcio's client (`xtask/peers/grpc_stream_client.py`), which
//! reads slowly. The handler must block in `send` rather than queue the stream:
//! the server's peak RSS (this process's: the server runs in it, the client in its
//! own) stays within a small bound.
//!
//! The only test in its binary, so that no other test's memory shows in the peak.
//! It needs the peers that `cargo xtask test` installs; without them it fails
//! when `LB_REQUIRE_PEERS=1` and otherwise skips loudly.

use std::time::{Duration, Instant};

use lb_core::Status;
use lb_testkit::peers;
use lb_testkit::process::peak_rss_kib;
use lb_transport::server::{Server, ServerCall};

/// The size of each response message.
const CHUNK: usize = 64 << 10;

/// What the handler streams.
const TOTAL: usize = 256 << 20;

/// The most the server's peak RSS may grow by while streaming [`TOTAL`] bytes.
const RSS_BOUND_KIB: u64 = 32 << 10;

/// How long the client may take (reading slowly on purpose).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(240);

#[test]
fn a_slow_reader_of_256_mib_keeps_the_server_memory_bounded() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let server = Server::builder()
        // The request is the number of bytes to stream.
        .server_streaming("/t.S/Flood", |request, call: &mut ServerCall| {
            let total: usize = std::str::from_utf8(&request)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| Status::invalid_argument("not a number"))?;
            let chunk = vec![0x5a; CHUNK];
            for _ in 0..total.div_ceil(CHUNK) {
                call.send(&chunk)?;
            }
            Ok(())
        })
        .workers(2)
        .bind("127.0.0.1:0")
        .unwrap();
    let target = server.local_addr().to_string();
    let flood = |total: usize, delay_ms: &str| {
        let request = total.to_string();
        let args = [
            "--kind",
            "server",
            "--method",
            "/t.S/Flood",
            "--request",
            &request,
            "--read-delay-ms",
            delay_ms,
        ];
        peers::run_grpc_stream_client(&env, &target, &args, CLIENT_TIMEOUT).unwrap()
    };
    // Warm-up: the threads, buffers and allocator arenas exist.
    let report = flood(4 << 20, "0");
    assert_eq!(report["code"], "OK", "{report}");

    let baseline = peak_rss_kib();
    let started = Instant::now();
    let report = flood(TOTAL, "0.5");
    let grew = peak_rss_kib() - baseline;
    println!(
        "slow reader: {} MiB in {:.1} s, server peak RSS +{grew} KiB (bound {RSS_BOUND_KIB} KiB)",
        TOTAL >> 20,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(report["code"], "OK", "{report}");
    assert_eq!(report["received_bytes"], TOTAL, "{report}");
    assert!(
        grew < RSS_BOUND_KIB,
        "streaming {} MiB to a slow reader grew the server's peak RSS by {grew} KiB (bound {RSS_BOUND_KIB} KiB)",
        TOTAL >> 20
    );
}
