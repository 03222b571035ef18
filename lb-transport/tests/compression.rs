//! Compression at its edges, over real sockets: zstd both ways (feature `zstd`),
//! a compressed request to a server that lacks the encoding (grpcio, C-core, has
//! no zstd), and one message of a compressed call sent uncompressed. What a
//! compression bomb costs in memory is measured in `compression_memory.rs`.

use std::sync::Arc;
use std::time::Duration;

use lb_core::channel::{CallOptions, Channel};
use lb_core::transport::SendFlags;
use lb_transport::driver::{H2Transport, TransportConfig};
use lb_transport::server::{Server, ServerCall};

fn options() -> CallOptions {
    CallOptions::default()
        .with_timeout(Duration::from_secs(20))
        .with_wait_for_ready(true)
}

fn open(target: &str, encoding: &str) -> (Arc<H2Transport>, Channel) {
    let transport = Arc::new(H2Transport::new(TransportConfig::default()).unwrap());
    let channel = Channel::builder(format!("ipv4:{target}"))
        .transport(transport.clone())
        .send_compression(encoding)
        .build()
        .unwrap();
    (transport, channel)
}

/// zstd: the peers have none, our client and server have it with the feature.
#[cfg(feature = "zstd")]
mod zstd {
    use super::*;
    use lb_core::Code;
    use lb_testkit::peers::{self, GrpcServer, GrpcServerOptions};
    use lb_transport::grpc::compression::Encoding;
    use lb_transport::server::{Request, Response};

    const ECHO: &str = "/bench.Echo/Unary";

    /// grpcio does not speak zstd: our zstd-compressed request comes back
    /// UNIMPLEMENTED, and the message says which encoding the server refused.
    #[test]
    fn a_zstd_request_to_a_server_without_zstd_is_a_clear_unimplemented() {
        let Some(env) = peers::require_peers() else {
            return;
        };
        let server = GrpcServer::start(&env, GrpcServerOptions::default()).unwrap();
        let (_t, channel) = open(&server.target(), "zstd");
        let err = channel
            .unary(ECHO, vec![7; 4096], options())
            .expect_err("grpcio has no zstd");
        println!("{err}");
        assert_eq!(err.code(), Code::Unimplemented, "{err}");
        // C-core answers INTERNAL "Error parsing 'grpc-encoding' metadata" and lists
        // no encodings; the client says what happened and keeps the server's words.
        assert!(
            err.message()
                .starts_with("the server does not accept requests compressed with zstd"),
            "{err}"
        );
        assert!(err.message().contains("grpc-encoding"), "{err}");
        // gzip, which it has, goes through on another channel.
        let (_t, gzip) = open(&server.target(), "gzip");
        let r = gzip
            .unary(ECHO, vec![7; 4096], options())
            .expect("gzip call");
        assert_eq!(r.message, vec![7; 4096]);
    }

    /// zstd both ways between our client and our server: the request arrives
    /// compressed, the response goes back compressed.
    #[test]
    fn zstd_both_ways_between_our_client_and_server() {
        let server = Server::builder()
            .unary(ECHO, |req: Request| {
                assert!(req.compressed, "the request arrived compressed");
                let mut response = Response::new(req.message);
                response.compression = Some(Encoding::Zstd);
                Ok(response)
            })
            .bind("127.0.0.1:0")
            .unwrap();
        let (_t, channel) = open(&server.local_addr().to_string(), "zstd");
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 7) as u8).collect();
        let r = channel.unary(ECHO, payload.clone(), options()).unwrap();
        assert_eq!(r.message, payload);
        channel.close();
        server.shutdown(Duration::from_secs(1));
    }
}

/// One message of a gzip call sent with `SendFlags::uncompressed()` arrives
/// uncompressed (flag 0); the call's other messages stay compressed.
#[test]
fn a_message_sent_uncompressed_on_a_compressed_call_arrives_uncompressed() {
    let server = Server::builder()
        .client_streaming("/flags.Sink/Take", |call: &mut ServerCall| {
            let mut flags = Vec::new();
            while let Some(m) = call.recv()? {
                assert_eq!(m, vec![9u8; 1000]);
                flags.push(u8::from(call.last_was_compressed()));
            }
            Ok(flags)
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let (_t, channel) = open(&server.local_addr().to_string(), "gzip");
    let call = channel
        .client_streaming("/flags.Sink/Take", options())
        .unwrap();
    call.send(vec![9u8; 1000]).unwrap();
    call.send_with(vec![9u8; 1000], SendFlags::uncompressed())
        .unwrap();
    call.send(vec![9u8; 1000]).unwrap();
    let flags = call.finish().unwrap().message;
    assert_eq!(flags, [1, 0, 1], "compressed, uncompressed, compressed");
    channel.close();
    server.shutdown(Duration::from_secs(1));
}
