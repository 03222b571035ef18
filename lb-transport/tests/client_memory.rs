//! Bounded memory on our client, both ways, over real sockets against grpcio:
//!
//! - a slow reader: grpcio streams 1 GiB to a `Channel` call whose reader sleeps
//!   now and then; the client only gives credit back as it takes messages, so the
//!   server is held at the stream window and this process's peak RSS barely moves;
//! - a fast sender: our client streams 1 GiB to a grpcio handler that first holds
//!   for two seconds and then reads; `send` blocks while the stream is full instead
//!   of queueing.
//!
//! The only test in its binary, so that no other test's memory shows in the peak.
//! The server runs in its own process, so the peak is the client's alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_core::channel::{CallOptions, Channel};
use lb_testkit::peers::{self, GrpcServer, GrpcServerOptions};
use lb_testkit::process::peak_rss_kib;
use lb_transport::driver::{H2Transport, TransportConfig};

/// Each message's size.
const CHUNK: usize = 64 << 10;

/// What flows each way.
const TOTAL: usize = 1 << 30;

/// The most the client's peak RSS may grow by while 1 GiB flows: a few stream
/// windows and message buffers, far below what the data would take if queued.
const RSS_BOUND_KIB: u64 = 16 << 10;

/// How long each direction may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(240);

#[test]
fn one_gib_each_way_keeps_the_client_memory_bounded() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let server = GrpcServer::start(&env, GrpcServerOptions::default()).unwrap();
    let transport = Arc::new(H2Transport::new(TransportConfig::default()).unwrap());
    let channel = Channel::builder(format!("ipv4:{}", server.target()))
        .transport(transport)
        .max_receive_message_size(4 << 20)
        .build()
        .unwrap();
    let options = || CallOptions::default().with_timeout(CALL_TIMEOUT);
    let read = |count: usize, pause_every: usize| {
        let call = channel
            .server_streaming("/test.Stream/Server", format!("{count} {CHUNK}"), options())
            .unwrap();
        let mut bytes = 0;
        for (i, m) in call.enumerate() {
            bytes += m.unwrap().len();
            if pause_every > 0 && i % pause_every == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        bytes
    };
    let write = |count: usize, hold_ms: u64| {
        let call = channel
            .client_streaming("/test.Stream/Client", options())
            .unwrap();
        call.send(format!("hold {hold_ms}")).unwrap();
        let chunk = vec![0x5a; CHUNK];
        for _ in 0..count {
            call.send(chunk.clone()).unwrap();
        }
        String::from_utf8(call.finish().unwrap().message).unwrap()
    };
    // Warm-up: threads, buffers and allocator arenas exist before the baseline.
    assert_eq!(read(64, 0), 64 * CHUNK);
    assert!(write(64, 0).starts_with("65 "));

    let count = TOTAL / CHUNK;
    let baseline = peak_rss_kib();
    let started = Instant::now();
    assert_eq!(read(count, 16), TOTAL);
    let grew = peak_rss_kib() - baseline;
    println!(
        "slow reader: {} MiB in {:.1} s, client peak RSS +{grew} KiB (bound {RSS_BOUND_KIB} KiB)",
        TOTAL >> 20,
        started.elapsed().as_secs_f64()
    );
    assert!(
        grew < RSS_BOUND_KIB,
        "reading 1 GiB slowly grew the client's peak RSS by {grew} KiB"
    );

    let baseline = peak_rss_kib();
    let started = Instant::now();
    let answer = write(count, 2000);
    let grew = peak_rss_kib() - baseline;
    println!(
        "fast sender: {} MiB in {:.1} s to a handler that held 2 s, client peak RSS +{grew} KiB (bound {RSS_BOUND_KIB} KiB)",
        TOTAL >> 20,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        answer,
        format!("{} {}", count + 1, TOTAL + "hold 2000".len())
    );
    assert!(
        grew < RSS_BOUND_KIB,
        "sending 1 GiB to a slow handler grew the client's peak RSS by {grew} KiB"
    );
    channel.close();
}
