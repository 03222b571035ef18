//! After a channel with live calls on our real transport is closed and dropped, the
//! process's threads and open sockets return to where they were. Alone in its binary:
//! it counts the whole process's threads and sockets.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use lb_core::Code;
use lb_core::channel::{CallOptions, Channel};
use lb_testkit::peers::{self, GrpcServer, GrpcServerOptions};
use lb_transport::driver::{H2Transport, TransportConfig};

const WAIT: Duration = Duration::from_secs(20);

/// Waits (bounded) until threads and sockets are back to `baseline`.
fn wait_for(baseline: (usize, usize)) -> (usize, usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = (
            lb_testkit::process::thread_count(),
            lb_testkit::process::socket_count(),
        );
        if now == baseline || Instant::now() > deadline {
            return now;
        }
        // The OS reaps exited threads and closed sockets asynchronously.
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn closing_a_channel_with_live_calls_leaves_no_thread_or_socket() {
    let Some(env) = peers::require_peers() else {
        return;
    };
    let servers: Vec<GrpcServer> = (0..3)
        .map(|i| {
            let options = GrpcServerOptions {
                id: format!("b{i}"),
                log_calls: true,
                ..GrpcServerOptions::default()
            };
            GrpcServer::start(&env, options).unwrap()
        })
        .collect();
    let baseline = (
        lb_testkit::process::thread_count(),
        lb_testkit::process::socket_count(),
    );

    for round in 0..2 {
        let list: Vec<String> = servers.iter().map(GrpcServer::target).collect();
        let transport = Arc::new(H2Transport::new(TransportConfig::default()).unwrap());
        let channel = Channel::builder(format!("ipv4:{}", list.join(",")))
            .transport(transport)
            .default_service_config(r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#)
            .build()
            .unwrap();
        let callers: Vec<_> = (0..6)
            .map(|_| {
                let channel = channel.clone();
                thread::spawn(move || {
                    let options = CallOptions::default().with_timeout(WAIT);
                    channel
                        .unary("/test.Echo/Sleep", b"5000".to_vec(), options)
                        .map(|_| ())
                })
            })
            .collect();
        // Wait until the calls are live on the servers.
        let mut live = 0;
        let deadline = Instant::now() + WAIT;
        while live < 6 {
            assert!(
                Instant::now() < deadline,
                "round {round}: only {live} calls live"
            );
            for s in &servers {
                if s.wait_for_line("CALL /test.Echo/Sleep", Duration::from_millis(10))
                    .is_ok()
                {
                    live += 1;
                }
            }
        }
        // Not vacuous: the channel's and callers' threads and its sockets exist now.
        assert!(
            lb_testkit::process::thread_count() > baseline.0
                && lb_testkit::process::socket_count() >= baseline.1 + 3,
            "round {round}"
        );
        channel.close();
        drop(channel);
        for c in callers {
            let err = c.join().unwrap().unwrap_err();
            assert_eq!(err.code(), Code::Cancelled, "round {round}: {err}");
        }
        let after = wait_for(baseline);
        assert_eq!(
            after, baseline,
            "round {round}: (threads, sockets) left behind"
        );
    }
}
