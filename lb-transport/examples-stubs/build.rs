//! Generates the examples' messages, clients and servers from `proto/` with
//! lb-codegen (no system `protoc` needed).
//!
//! - `helloworld` and `routeguide`: clients and servers, naming
//!   `::lb_transport::stubs` (the default).
//! - `other_path/routeguide.rs`: a second copy of the route guide server only,
//!   naming its runtime `crate::rt` (`Builder::stubs_path`), for
//!   `tests/generated_server.rs`, which serves it on our server.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    lb_codegen::compile_protos(
        &["proto/helloworld.proto", "proto/route_guide.proto"],
        &["proto"],
    )?;

    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let other = out.join("other_path");
    std::fs::create_dir_all(&other)?;
    lb_codegen::Builder::new()
        .build_client(false)
        .stubs_path("crate::rt")
        .out_dir(other)
        .compile_protos(&["proto/route_guide.proto"], &["proto"])
}
