//! The admin page on a live channel: three of our servers on loopback, a channel
//! with `weighted_target_experimental` → `round_robin` over them (two backends
//! under `t0`, one under `t1`), a call every 100 ms (every tenth fails), and the
//! admin page at the address printed.
//!
//! ```text
//! cargo run -p lb-transport --example admin -- [seconds (60)] [admin address (127.0.0.1:0)]
//! ```

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use lb_core::channel::{CallOptions, Channel};
use lb_core::{Endpoint, LbPolicyRegistry, Metadata, ResolverUpdate};
use lb_testkit::ManualResolver;
use lb_transport::admin::AdminServer;
use lb_transport::driver::{H2Transport, TransportConfig};
use lb_transport::server::Server;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(Ok(60), |s| s.parse())?;
    let admin_addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());

    let servers = ["s0", "s1", "s2"]
        .map(|id| lb_testkit::services::mount(Server::builder(), id).bind("127.0.0.1:0"));
    let mut running = Vec::new();
    for s in servers {
        running.push(s?);
    }
    let mut registry = LbPolicyRegistry::with_builtins();
    lb_group::register(&mut registry);
    let resolver = ManualResolver::default();
    let channel = Channel::builder("test:///admin-example")
        .transport(Arc::new(H2Transport::new(TransportConfig::default())?))
        .resolver_registry(resolver.registry())
        .lb_policy_registry(registry)
        .default_service_config(
            r#"{"loadBalancingConfig": [{"weighted_target_experimental": {"targets": {
                "t0": {"weight": 2, "childPolicy": [{"round_robin": {}}]},
                "t1": {"weight": 1, "childPolicy": [{"round_robin": {}}]}}}}]}"#,
        )
        .build()?;
    let endpoints = running
        .iter()
        .zip(["t0", "t0", "t1"])
        .map(|(s, child)| {
            let address = s.local_addr().to_string();
            lb_group::hierarchy::with_path(Endpoint::new([address.as_str()]), &[child])
        })
        .collect();
    resolver.push(ResolverUpdate::from_endpoints(endpoints));

    let admin = AdminServer::bind(admin_addr.as_str())?;
    println!("admin page: {} (for {seconds} s)", admin.url());
    let options = CallOptions::default()
        .with_wait_for_ready(true)
        .with_timeout(Duration::from_secs(5));
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut n = 0u64;
    while Instant::now() < end {
        n += 1;
        // Every tenth call asks the status service for a failure.
        let _ = if n % 10 == 0 {
            let mut md = Metadata::new();
            md.insert("x-status-code", "14")?;
            let failing = options.clone().with_metadata(md);
            channel.unary(
                lb_testkit::services::STATUS,
                b"unavailable".to_vec(),
                failing,
            )
        } else {
            channel.unary("/test.Echo/Who", Vec::new(), options.clone())
        };
        thread::sleep(Duration::from_millis(100));
    }
    admin.shutdown();
    channel.close();
    for s in running {
        s.shutdown(Duration::ZERO);
    }
    Ok(())
}
