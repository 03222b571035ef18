//! The gRPC hello world on generated stubs.
//!
//! ```text
//! helloworld server [ADDR]            serve helloworld.Greeter (default 127.0.0.1:50051)
//! helloworld client [TARGET] [NAME]   call it once (default 127.0.0.1:50051, "world")
//! ```
//!
//! The client works against grpcio's server too (`peers/helloworld_server.py`):
//! see "Typed stubs from .proto files" in the workspace README.

use std::process::ExitCode;
use std::time::Duration;

use lb_core::channel::CallOptions;
use lb_examples::greeter::MyGreeter;
use lb_examples::helloworld::{GreeterClient, GreeterServer, HelloRequest};
use lb_transport::server::Server;

const USAGE: &str = "usage: helloworld server [ADDR] | helloworld client [TARGET] [NAME]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).map_or(default, String::as_str).to_owned();
    let result = match args.first().map(String::as_str) {
        Some("server") => serve(&arg(1, "127.0.0.1:50051")),
        Some("client") => call(&arg(1, "127.0.0.1:50051"), &arg(2, "world")),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("helloworld: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Serves until standard input closes (Ctrl-D), or the process is killed.
fn serve(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    let server = GreeterServer::new(MyGreeter)
        .mount(Server::builder())
        .bind(addr)?;
    println!("LISTENING {}", server.local_addr().port());
    println!("serving helloworld.Greeter on {}", server.local_addr());
    std::io::copy(&mut std::io::stdin(), &mut std::io::sink())?;
    server.shutdown(Duration::from_secs(2));
    Ok(())
}

fn call(target: &str, name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let client = GreeterClient::new(lb_examples::connect(target)?)
        .with_default_options(CallOptions::default().with_timeout(Duration::from_secs(10)));
    let reply = client.say_hello(&HelloRequest { name: name.into() })?;
    println!("Greeter client received: {}", reply.message);
    Ok(())
}
