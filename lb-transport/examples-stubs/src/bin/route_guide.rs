//! The gRPC route guide on generated stubs: one call of each kind.
//!
//! ```text
//! route_guide client [TARGET]   GetFeature, ListFeatures, RecordRoute, RouteChat
//!                               (default target 127.0.0.1:10000)
//! route_guide server [ADDR]     serve routeguide.RouteGuide (default 127.0.0.1:10000)
//! ```
//!
//! Either side works against grpcio's (`peers/route_guide_server.py`,
//! `peers/route_guide_client.py`): see "Typed stubs from .proto files" in the
//! workspace README.

use std::process::ExitCode;
use std::time::Duration;

use lb_core::channel::CallOptions;
use lb_examples::route_guide::{self, RouteGuideService};
use lb_examples::routeguide::{RouteGuideClient, RouteGuideServer};
use lb_transport::server::Server;

const USAGE: &str = "usage: route_guide server [ADDR] | route_guide client [TARGET]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).map_or(default, String::as_str).to_owned();
    let result = match args.first().map(String::as_str) {
        Some("server") => serve(&arg(1, "127.0.0.1:10000")),
        Some("client") => call(&arg(1, "127.0.0.1:10000")),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("route_guide: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Serves until standard input closes (Ctrl-D), or the process is killed.
fn serve(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    let server = RouteGuideServer::new(RouteGuideService::new())
        .mount(Server::builder())
        .bind(addr)?;
    println!("LISTENING {}", server.local_addr().port());
    println!("serving routeguide.RouteGuide on {}", server.local_addr());
    std::io::copy(&mut std::io::stdin(), &mut std::io::sink())?;
    server.shutdown(Duration::from_secs(2));
    Ok(())
}

fn call(target: &str) -> Result<(), Box<dyn std::error::Error>> {
    let client = RouteGuideClient::new(lb_examples::connect(target)?)
        .with_default_options(CallOptions::default().with_timeout(Duration::from_secs(10)));
    route_guide::run_demo(&client, true)?;
    Ok(())
}
