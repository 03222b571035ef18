//! Calls leave nothing behind: thousands of calls of every kind through one
//! `Channel`, and this process's resident memory after them stays within a small
//! bound of what it was after a warm-up. First against a grpcio server (its own
//! process, so the memory is the client's alone), then against our server in this
//! process (client and server together). A call whose state outlived it (as a
//! cycle between a call and its stream once did, about 1.5 KB a call) shows here
//! as tens of MiB.
//!
//! The only test in its binary, so that no other test's memory shows in the peak.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use lb_core::channel::{CallOptions, Channel};
use lb_testkit::peers::{self, GrpcServer, GrpcServerOptions};
use lb_testkit::process::rss_kib;
use lb_transport::driver::{H2Transport, TransportConfig};
use lb_transport::server::Server;

/// Caller threads.
const THREADS: usize = 4;
/// Unary calls per thread after the warm-up.
const UNARY: usize = 5_000;
/// Streaming calls of each kind per thread after the warm-up.
const STREAMS: usize = 250;
/// How much the peak RSS may grow over the calls after the warm-up.
const RSS_BOUND_KIB: u64 = 6 << 10;

fn round(channel: &Channel, unary: usize, streams: usize) {
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let channel = channel.clone();
            thread::spawn(move || {
                let options = || CallOptions::default().with_timeout(Duration::from_secs(30));
                for _ in 0..unary {
                    channel
                        .unary("/test.Echo/Echo", b"x".to_vec(), options())
                        .unwrap();
                }
                for _ in 0..streams {
                    let got = channel
                        .server_streaming("/test.Stream/Server", "3 16", options())
                        .unwrap()
                        .count();
                    assert_eq!(got, 3);
                    let call = channel
                        .bidi_streaming("/test.Stream/Bidi", options())
                        .unwrap();
                    call.send("a").unwrap();
                    call.send_last("b").unwrap();
                    assert_eq!(call.count(), 2);
                    let call = channel
                        .client_streaming("/test.Stream/Client", options())
                        .unwrap();
                    call.send("abc").unwrap();
                    call.finish().unwrap();
                    // And one dropped half way: cancelled, and freed too.
                    let call = channel
                        .bidi_streaming("/test.Stream/Bidi", options())
                        .unwrap();
                    call.send("a").unwrap();
                    drop(call);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Warms up, runs the calls, and checks the growth of the resident memory.
fn flat_over(what: &str, target: &str) {
    let transport = Arc::new(H2Transport::new(TransportConfig::default()).unwrap());
    let channel = Channel::builder(format!("ipv4:{target}"))
        .transport(transport)
        .build()
        .unwrap();
    round(&channel, 250, 25);
    let warm = rss_kib();
    round(&channel, UNARY, STREAMS);
    let grown = rss_kib().saturating_sub(warm);
    let calls = THREADS * (UNARY + 4 * STREAMS);
    println!(
        "{what}: {calls} calls after warm-up; RSS {warm} KiB after warm-up, grew by \
         {grown} KiB (bound {RSS_BOUND_KIB} KiB)"
    );
    assert!(
        grown <= RSS_BOUND_KIB,
        "{what}: RSS grew by {grown} KiB over {calls} calls"
    );
    channel.close();
}

#[test]
fn many_calls_of_every_kind_leave_the_memory_flat() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let grpcio = GrpcServer::start(&env, GrpcServerOptions::default()).unwrap();
    flat_over("client against grpcio", &grpcio.target());
    drop(grpcio);
    let ours = lb_testkit::services::mount(Server::builder(), "ours")
        .bind("127.0.0.1:0")
        .unwrap();
    flat_over("client and our server", &ours.local_addr().to_string());
    ours.shutdown(Duration::ZERO);
}
