//! What compressed requests cost our server in memory, measured as this process's
//! resident set (`lb_testkit::process::rss_kib`) over real loopback sockets. One
//! test per file, so no other test allocates meanwhile.
//!
//! - A client-streaming call whose handler does not read yet receives 200 gzip
//!   messages of 1 MiB of zeros each (about 1 KiB each on the wire: all of them fit
//!   in one 1 MiB stream window). The server decompresses into the handler's queue
//!   only up to one stream window of decompressed bytes; the rest wait compressed.
//!   Before that bound the queue took all 200 MiB.
//! - Then one compression bomb (64 MiB of zeros, about 64 KiB gzip) is refused with
//!   RESOURCE_EXHAUSTED at the 4 MiB message limit without the server holding it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_core::Code;
use lb_core::channel::{CallOptions, Channel};
use lb_testkit::process::rss_kib;
use lb_transport::driver::{H2Transport, TransportConfig};
use lb_transport::server::{Request, Response, Server, ServerCall};

const SINK: &str = "/bomb.Sink/Take";
const ECHO: &str = "/bomb.Sink/Echo";
const MIB: usize = 1 << 20;
const MESSAGES: usize = 200;

#[test]
fn compressed_requests_are_held_within_their_decompressed_bounds() {
    let (go_tx, go_rx) = crossbeam_channel::bounded::<()>(1);
    let server = Server::builder()
        .client_streaming(SINK, move |call: &mut ServerCall| {
            // Read nothing until the test has measured the queue.
            go_rx
                .recv_timeout(Duration::from_secs(60))
                .map_err(|_| lb_core::Status::internal("never told to read"))?;
            let mut n = 0u32;
            while let Some(m) = call.recv()? {
                assert!(m.len() == MIB && m.iter().all(|&b| b == 0));
                n += 1;
            }
            Ok(n.to_be_bytes().to_vec())
        })
        .unary(ECHO, |req: Request| Ok(Response::new(req.message)))
        .bind("127.0.0.1:0")
        .unwrap();
    let transport = Arc::new(H2Transport::new(TransportConfig::default()).unwrap());
    let channel = Channel::builder(format!("ipv4:{}", server.local_addr()))
        .transport(transport)
        .send_compression("gzip")
        .build()
        .unwrap();
    let options = || CallOptions::default().with_timeout(Duration::from_secs(60));
    // Connect, and let the allocator settle, before the baseline.
    channel.unary(ECHO, vec![1; 1000], options()).unwrap();
    let zeros = vec![0u8; MIB];
    let before = rss_kib();

    let call = channel.client_streaming(SINK, options()).unwrap();
    for _ in 0..MESSAGES {
        call.send(zeros.clone()).unwrap();
    }
    let finished = std::thread::spawn(move || call.finish());
    // The messages cross loopback in well under a second; watch the resident set
    // for 2 s of real time (bounded), stopping early once it passes 150 MiB.
    let until = Instant::now() + Duration::from_secs(2);
    let mut held = 0;
    while Instant::now() < until {
        held = held.max(rss_kib().saturating_sub(before));
        if held > 150 * 1024 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "{MESSAGES} gzip messages of 1 MiB unread by the handler: RSS grew {held} KiB \
         ({:.1} MiB)",
        held as f64 / 1024.0
    );
    go_tx.send(()).unwrap();
    let response = finished.join().unwrap().expect("the handler read them all");
    assert_eq!(response.message, (MESSAGES as u32).to_be_bytes());
    assert!(
        held < 32 * 1024,
        "the server held {held} KiB of decompressed requests; its bound is about 2 MiB"
    );

    // One bomb: 64 MiB of zeros, refused at the 4 MiB limit.
    let bomb = vec![0u8; 64 * MIB];
    let before = rss_kib();
    let err = channel.unary(ECHO, bomb, options()).unwrap_err();
    let grown = rss_kib().saturating_sub(before);
    println!(
        "a 64 MiB gzip bomb: {err}; RSS grew {grown} KiB ({:.1} MiB)",
        grown as f64 / 1024.0
    );
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(
        grown < 16 * 1024,
        "a refused bomb left {grown} KiB resident"
    );
    channel.close();
    server.shutdown(Duration::from_secs(1));
}
